# psd_redis at configuration time: every "nginx -t" error of the directive
# (TLS options included) and of the names features give it (psd_counter
# redis=), and that a Redis password, inline or from a file, never reaches
# nginx -t's output or the error log.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
no_cluster('the psd_redis syntax of one server: addresses, unix sockets, db=, AUTH, TLS options');

run_tests();

__DATA__

=== TEST 1: every option with a valid value starts nginx
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT db=0 connect_timeout=500ms
              timeout=1s max_pending=10 max_reply=1k;
    psd_redis other-2_b 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT db=65535
              timeout=200 max_pending=1 max_reply=16m
              user=psd password=x password_file=$TEST_NGINX_HTML_DIR/pw;
--- user_files
>>> pw
from-file
--- config
    location /c { psd_counter $arg_k; }
--- request
GET /c?k=a
--- response_body
{"count":1}
--- check
is redis_cmd('GET', 'psd:{cnt:a}'), 1, 'counted on "main", the first server';
--- no_error_log
from-file



=== TEST 2: duplicate server name
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- must_die
--- error_log
duplicate redis server name "main"



=== TEST 3: invalid server name characters
--- http_config
    psd_redis ma.in 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- must_die
--- error_log
invalid redis server name "ma.in", use up to 63 letters, digits, "_" and "-"



=== TEST 4: server name of 64 characters is too long
--- http_config eval
"psd_redis " . ('n' x 64) . ' 127.0.0.1:$TEST_NGINX_REDIS_PORT;'
--- must_die
--- error_log eval
'invalid redis server name "' . ('n' x 64) . '"'



=== TEST 5: empty server name
--- http_config
    psd_redis "" 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- must_die
--- error_log
invalid redis server name ""



=== TEST 6: invalid port in the address
--- http_config
    psd_redis main 127.0.0.1:notaport;
--- must_die
--- error_log
in redis server "127.0.0.1:notaport"



=== TEST 7: unknown option
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT frobnicate=1;
--- must_die
--- error_log
unknown option "frobnicate" in "psd_redis"



=== TEST 8: option without a value
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT db;
--- must_die
--- error_log
invalid value "db" in "psd_redis"



=== TEST 9: timeout=0
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=0;
--- must_die
--- error_log
invalid value "timeout=0" in "psd_redis"



=== TEST 10: timeout that is no time
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=soon;
--- must_die
--- error_log
invalid value "timeout=soon" in "psd_redis"



=== TEST 11: connect_timeout=0
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT connect_timeout=0ms;
--- must_die
--- error_log
invalid value "connect_timeout=0ms" in "psd_redis"



=== TEST 12: db=x
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT db=x;
--- must_die
--- error_log
invalid value "db=x" in "psd_redis"



=== TEST 13: db=-1
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT db=-1;
--- must_die
--- error_log
invalid value "db=-1" in "psd_redis"



=== TEST 14: db=65536
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT db=65536;
--- must_die
--- error_log
invalid value "db=65536" in "psd_redis"



=== TEST 15: max_pending=0
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT max_pending=0;
--- must_die
--- error_log
invalid value "max_pending=0" in "psd_redis"



=== TEST 16: max_pending=many
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT max_pending=many;
--- must_die
--- error_log
invalid value "max_pending=many" in "psd_redis"



=== TEST 17: max_reply below 1k
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT max_reply=1023;
--- must_die
--- error_log
invalid value "max_reply=1023" in "psd_redis"



=== TEST 18: max_reply that is no size
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT max_reply=big;
--- must_die
--- error_log
invalid value "max_reply=big" in "psd_redis"



=== TEST 19: user= without a password
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT user=psd;
--- must_die
--- error_log
redis server "main" has "user=" without a password



=== TEST 20: empty user=
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT user= password=x;
--- must_die
--- error_log
invalid value "user=" in "psd_redis"



=== TEST 21: empty password=
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT password=;
--- must_die
--- error_log
empty "password=" in "psd_redis"



=== TEST 22: password_file that does not exist names the file
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT
              password_file=$TEST_NGINX_SERVROOT/no/such/redis.pw;
--- must_die
--- error_log eval
qr{cannot open secret file "\Q$ENV{TEST_NGINX_SERVROOT}\E/no/such/redis\.pw" in "psd_redis"}



=== TEST 23: password_file relative to the conf directory names the file
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT password_file=keys/none.pw;
--- must_die
--- error_log
cannot open secret file "keys/none.pw" in "psd_redis"



=== TEST 24: empty password_file
--- user_files
>>> empty.pw
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT
              password_file=$TEST_NGINX_HTML_DIR/empty.pw;
--- must_die
--- error_log eval
qr{secret file "[^"]*/empty\.pw" must hold 1 to 512 bytes}



=== TEST 25: password_file over 512 bytes, its content is not shown
--- user_files
>>> long.pw size=600
Lng-Secret-7e1d
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT
              password_file=$TEST_NGINX_HTML_DIR/long.pw;
--- must_die
--- error_log eval
qr{secret file "[^"]*/long\.pw" must hold 1 to 512 bytes}
--- no_error_log
Lng-Secret



=== TEST 26: tls_verify without tls
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT tls_verify;
--- must_die
--- error_log
redis server "main" has tls_* options without "tls"



=== TEST 27: tls_server_name= without tls
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT tls_server_name=redis.example;
--- must_die
--- error_log
redis server "main" has tls_* options without "tls"



=== TEST 28: tls_verify without tls_trusted_certificate=
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT tls tls_verify;
--- must_die
--- error_log
redis server "main" has "tls_verify" without "tls_trusted_certificate="



=== TEST 29: tls_trusted_certificate= that does not exist names the file
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT tls tls_verify
              tls_trusted_certificate=$TEST_NGINX_SERVROOT/no/such/ca.pem;
--- must_die
--- error_log eval
qr{"\Q$ENV{TEST_NGINX_SERVROOT}\E/no/such/ca\.pem"}



=== TEST 30: an unknown tls_ option
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT tls tls_ca=/etc/ssl/ca.pem;
--- must_die
--- error_log
unknown option "tls_ca" in "psd_redis"



=== TEST 31: an inline password is not repeated by a later error
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT user=psd
              password=Inl1ne-S3cret-5b2f timeout=0;
--- must_die
--- error_log
invalid value "timeout=0" in "psd_redis"
--- no_error_log
Inl1ne-S3cret



=== TEST 32: a misspelt password option does not show its value
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT pasword=Typo-S3cret-91c0;
--- must_die
--- error_log
unknown option "pasword" in "psd_redis"
--- no_error_log
Typo-S3cret



=== TEST 33: a password on a duplicate server is not shown
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT password=Dup-S3cret-0d4e;
--- must_die
--- error_log
duplicate redis server name "main"
--- no_error_log
Dup-S3cret



=== TEST 34: a password from a file is not shown by a later error
--- user_files
>>> redis.pw
F1le-S3cret-c3a8
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT
              password_file=$TEST_NGINX_HTML_DIR/redis.pw max_pending=0;
--- must_die
--- error_log
invalid value "max_pending=0" in "psd_redis"
--- no_error_log
F1le-S3cret



=== TEST 35: passwords are not in the log of a running nginx (debug level)
--- user_files
>>> redis.pw
F1le-S3cret-77aa
--- http_config
    psd_redis a 127.0.0.1:$TEST_NGINX_REDIS_PORT password=Inl1ne-S3cret-2c9e
              timeout=200ms;
    psd_redis b 127.0.0.1:$TEST_NGINX_REDIS_PORT user=psd
              password_file=$TEST_NGINX_HTML_DIR/redis.pw timeout=200ms;
--- config
    location /a { psd_counter $arg_k redis=a; }
    location /b { psd_counter $arg_k redis=b; }
--- request eval
["GET /a?k=x", "GET /b?k=x"]
--- error_code eval
[503, 503]
--- error_log
refused the handshake
--- no_error_log
S3cret



=== TEST 36: psd_counter names an unknown server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /c { psd_counter $arg_k redis=nosuch; }
--- must_die
--- error_log
unknown redis server "nosuch"



=== TEST 37: psd_counter without any psd_redis
--- config
    location /c { psd_counter $arg_k; }
--- must_die
--- error_log
no "psd_redis" server is configured in http{}



=== TEST 38: psd_redis outside http{}
--- main_config
    psd_redis main 127.0.0.1:6379;
--- must_die
--- error_log
"psd_redis" directive is not allowed here



=== TEST 39: psd_counter ttl=0
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /c { psd_counter $arg_k ttl=0; }
--- must_die
--- error_log
invalid parameter "ttl=0" in "psd_counter"



=== TEST 40: psd_counter failure_mode=maybe
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /c { psd_counter $arg_k failure_mode=maybe; }
--- must_die
--- error_log
invalid parameter "failure_mode=maybe" in "psd_counter"



=== TEST 41: psd_counter unknown parameter
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /c { psd_counter $arg_k bogus=1; }
--- must_die
--- error_log
invalid parameter "bogus=1" in "psd_counter"



=== TEST 42: psd_counter twice in one location
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /c { psd_counter $arg_k; psd_counter $arg_j; }
--- must_die
--- error_log
"psd_counter" directive is duplicate
