# psd_link configuration: what "nginx -t" refuses, with its message, and
# the edge cases it accepts (a key of exactly 32 bytes plus a newline, no
# psd_redis for stateless links, several keys).
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link;

write_keys();
write_key_file('short31', 'x' x 31);
write_key_file('short31nl', 'x' x 31 . "\n");
write_key_file('exact32nl', 'y' x 32 . "\r\n");
write_key_file('long1025', 'z' x 1025);
write_key_file('empty', '');
write_key_file('api15', 'a' x 15);

run_tests();

__DATA__

=== TEST 1: key file missing
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/nope;
--- must_die
--- error_log
cannot open secret file "$TEST_NGINX_CONF_DIR/keys/nope" in "psd_link_key"



=== TEST 2: key file of 31 bytes
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/short31;
--- must_die
--- error_log
must hold 32 to 1024 bytes



=== TEST 3: key file of 31 bytes and a newline (newlines are not key bytes)
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/short31nl;
--- must_die
--- error_log
must hold 32 to 1024 bytes



=== TEST 4: key file over 1024 bytes
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/long1025;
--- must_die
--- error_log
must hold 32 to 1024 bytes



=== TEST 5: empty key file
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/empty;
--- must_die
--- error_log
must hold 32 to 1024 bytes



=== TEST 6: key id with a space
--- http_config
    psd_link_key "k 1" $TEST_NGINX_CONF_DIR/keys/k1;
--- must_die
--- error_log
invalid key id "k 1" in "psd_link_key", use 1 to 32 letters, digits, "_" or "-"



=== TEST 7: key id of 33 characters
--- http_config
    psd_link_key kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk $TEST_NGINX_CONF_DIR/keys/k1;
--- must_die
--- error_log
invalid key id "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"



=== TEST 8: empty key id
--- http_config
    psd_link_key "" $TEST_NGINX_CONF_DIR/keys/k1;
--- must_die
--- error_log
invalid key id ""



=== TEST 9: key id with a dot (the link format allows only [A-Za-z0-9_-])
--- http_config
    psd_link_key k.1 $TEST_NGINX_CONF_DIR/keys/k1;
--- must_die
--- error_log
invalid key id "k.1"



=== TEST 10: duplicate key id
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k2;
--- must_die
--- error_log
duplicate link key id "k1"



=== TEST 11: psd_link_key outside http{}
--- config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- must_die
--- error_log
"psd_link_key" directive is not allowed here



=== TEST 12: psd_link on without any key
--- config
    location / { psd_link on; }
--- must_die
--- error_log
"psd_link" needs at least one "psd_link_key" in http{}



=== TEST 13: psd_link on at http level without any key
--- http_config
    psd_link on;
--- must_die
--- error_log
"psd_link" needs at least one "psd_link_key" in http{}



=== TEST 14: psd_link_sign_key names an unknown key
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    psd_link_sign_key k2;
--- must_die
--- error_log
"psd_link_sign_key" names unknown key "k2"



=== TEST 15: psd_link_issue without psd_link_api_key
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /issue { psd_link_issue; }
--- must_die
--- error_log
"psd_link_issue" needs "psd_link_api_key"



=== TEST 16: psd_link_revoke without psd_link_api_key
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /revoke { psd_link_revoke; }
--- must_die
--- error_log
"psd_link_revoke" needs "psd_link_api_key"



=== TEST 17: psd_link_issue without any key
--- config
    location = /issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- must_die
--- error_log
needs at least one "psd_link_key"



=== TEST 18: API key file shorter than 16 bytes
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api15;
    }
--- must_die
--- error_log
must hold 16 to 512 bytes



=== TEST 19: psd_link_api_key twice
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- must_die
--- error_log
"psd_link_api_key" directive is duplicate



=== TEST 20: psd_link_issue and psd_link_revoke in one location
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /issue {
        psd_link_issue;
        psd_link_revoke;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- must_die
--- error_log
"psd_link_revoke" directive is duplicate



=== TEST 21: psd_link_concurrency above 1000
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location / {
        psd_link on;
        psd_link_concurrency 1001;
    }
--- must_die
--- error_log
invalid value "1001" in "psd_link_concurrency", it must be between 0 and 1000



=== TEST 22: psd_link_concurrency negative
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location / {
        psd_link on;
        psd_link_concurrency -1;
    }
--- must_die
--- error_log
invalid number



=== TEST 23: psd_link_revocation on without psd_redis
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location / {
        psd_link on;
        psd_link_revocation on;
    }
--- must_die
--- error_log
no "psd_redis" server is configured in http{}



=== TEST 24: psd_link_revoke without psd_redis
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /revoke {
        psd_link_revoke;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- must_die
--- error_log
no "psd_redis" server is configured in http{}



=== TEST 25: psd_link_redis names an unknown server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location / {
        psd_link on;
        psd_link_redis other;
    }
--- must_die
--- error_log
unknown redis server "other"



=== TEST 26: psd_link_failure_mode with an unknown mode
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location / {
        psd_link on;
        psd_link_failure_mode local;
    }
--- must_die
--- error_log
invalid value "local"



=== TEST 27: psd_link with a bad flag
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location / {
        psd_link yes;
    }
--- must_die
--- error_log
invalid value "yes" in "psd_link" directive, it must be "on" or "off"



=== TEST 28: accepted: a 32-byte key with CR LF, several keys, no psd_redis for stateless links
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/exact32nl;
    psd_link_key k-2_B $TEST_NGINX_CONF_DIR/keys/k2;
    psd_link_key kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk $TEST_NGINX_CONF_DIR/keys/k1;
    psd_link_sign_key k1;
--- config
    location /dl/ {
        psd_link on;
        psd_link_skew 5s;
        psd_link_max_ttl 2d;
        psd_link_concurrency 0;
        psd_link_lease_ttl 10m;
        psd_link_failure_mode closed;
    }
    location = /issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- user_files
>>> dl/a.txt
A
--- check
# the newline is not part of the key: a link signed with the 32 bytes works
my $r = http_get(sign_link(path => '/dl/a.txt', kid => 'k1', key => 'y' x 32));
is $r->{status}, 200, 'key without its CR LF';
is http_get(sign_link(path => '/dl/a.txt', kid => 'k-2_B', key => key_bytes('k2')))->{status},
    200, 'second key';
is http_get(sign_link(path => '/dl/a.txt', kid => 'k' x 32, key => key_bytes('k1')))->{status},
    200, 'key id of 32 characters';
$r = api_post('/issue', '{"path":"/dl/a.txt","ttl":60}');
is $r->{status}, 200, 'issue';
like json_body($r)->{url}, qr/&psd_kid=k1&/, 'psd_link_sign_key k1';
is http_get(json_body($r)->{url})->{status}, 200, 'issued link works';
--- no_error_log
[warn]
[error]



=== TEST 29: psd_link_skew with a bad time
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location / {
        psd_link on;
        psd_link_skew soon;
    }
--- must_die
--- error_log
"psd_link_skew" directive invalid value
