# psd_link_issue and psd_link_revoke: issued links work and match the Perl
# signer; every bad input has its status, error code and field; bearer
# authentication; methods; body size limits; Redis down.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link;
use JSON::PP ();

write_keys();

# check_api('/api/issue', [body, status, error, field], ...): one POST per
# case; error and field are compared with the JSON answer (field undef:
# no field member)
sub check_api {
    my ($path, @cases) = @_;
    for my $c (@cases) {
        my ($body, $status, $error, $field) = @$c;
        my $r = api_post($path, $body);
        my $name = "$path " . (length $body > 60 ? substr($body, 0, 60) . '...' : $body);
        is $r->{status}, $status, "$name: $status" or diag $r->{raw};
        is $r->{headers}{'content-type'}, 'application/json', "$name: JSON";
        my $j = json_body($r);
        is $j->{error}, $error, "$name: error $error";
        if (ref $field) { like $j->{field}, $field, "$name: field like $field" }
        else { is $j->{field}, $field, "$name: field " . ($field // 'none') }
    }
}

# valid issue JSON of exactly $n bytes, padded with spaces
sub padded_json {
    my $j = '{"path":"/a","ttl":60}';
    return $j . ' ' x ($_[0] - length $j);
}

sub chunked_issue {
    my ($body) = @_;
    return http_request("POST /api/issue HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        . "Authorization: Bearer $API_KEY\r\nTransfer-Encoding: chunked\r\n\r\n"
        . join('', map { sprintf("%x\r\n%s\r\n", length, $_) } unpack '(a4000)*', $body)
        . "0\r\n\r\n");
}

run_tests();

__DATA__

=== TEST 1: issue an exact link, use it; the Perl signer makes the same link
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    psd_link_key k2 $TEST_NGINX_CONF_DIR/keys/k2;
--- config
    location /dl/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
        add_header X-Id $psd_link_id always;
        add_header X-Order $psd_link_order always;
        add_header X-Expires $psd_link_expires always;
        add_header X-Left $psd_link_downloads_left always;
    }
    location = /api/issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- user_files eval
[ ["dl/a.txt", "A\n"], ["dl/d/b.txt", "B\n"], ["dl/a b+\xc3\xa9.txt", "special\n"] ]
--- check
my $t = time;
my $r = api_post('/api/issue', '{"path":"/dl/a.txt","ttl":60}');
is $r->{status}, 200, 'issue: 200';
is $r->{headers}{'content-type'}, 'application/json', 'issue: JSON';
my $j = json_body($r);
is_deeply [sort keys %$j], [qw(expires id url)], 'issue: url, id, expires';
like $j->{id}, qr/^[A-Za-z0-9]{22}$/, 'id: 22 base62 characters';
like $j->{url}, qr{^/dl/a\.txt\?psd_v=1&psd_kid=k2&psd_exp=\d+&psd_id=\w+&psd_sig=[\w-]{43}$},
    'url: the last key signs by default';
ok $j->{expires} >= int($t) + 59 && $j->{expires} <= int($t) + 61, 'expires: now + ttl';
is $j->{url}, sign_link(path => '/dl/a.txt', kid => 'k2', exp => $j->{expires}, id => $j->{id}),
    'the Perl signer makes the same link';
$r = http_get($j->{url});
is $r->{status}, 200, 'issued link: 200';
is $r->{body}, "A\n", 'issued link: body';
is $r->{headers}{'x-id'}, $j->{id}, '$psd_link_id';
is $r->{headers}{'x-expires'}, $j->{expires}, '$psd_link_expires';
isnt json_body(api_post('/api/issue', '{"path":"/dl/a.txt","ttl":60}'))->{id}, $j->{id},
    'a new id each time';

# prefix, order, limit, ip
$r = api_post('/api/issue', '{"prefix":"/dl/d/","ttl":120,"order":"o-1:x.y","limit":2,"ip":"127.0.0.1"}');
is $r->{status}, 200, 'issue prefix: 200';
$j = json_body($r);
like $j->{url}, qr{^/dl/d/\?psd_v=1&psd_kid=k2&psd_exp=\d+&psd_id=\w+&psd_order=o-1%3Ax\.y&psd_scope=%2Fdl%2Fd%2F&psd_ip=127\.0\.0\.1&psd_limit=2&psd_sig=[\w-]{43}$},
    'prefix url';
is $j->{url}, sign_link(path => '/dl/d/', prefix => 1, kid => 'k2', exp => $j->{expires},
    id => $j->{id}, order => 'o-1:x.y', limit => 2, ip => '127.0.0.1'), 'Perl signer agrees';
my (undef, $q) = split /\?/, $j->{url};
$r = http_get("/dl/d/b.txt?$q");
is $r->{status}, 200, 'prefix link opens a file below';
is $r->{headers}{'x-order'}, 'o-1:x.y', '$psd_link_order';
is $r->{headers}{'x-left'}, 2, '$psd_link_downloads_left';
is http_get("/dl/a.txt?$q")->{status}, 403, 'not outside';

# an encoded path
$r = api_post('/api/issue', '{"path":"/dl/a b+\u00e9.txt","ttl":60}');
is $r->{status}, 200, 'issue special path: 200';
$j = json_body($r);
like $j->{url}, qr{^/dl/a%20b%2B%C3%A9\.txt\?}, 'path percent-encoded';
$r = http_get($j->{url});
is $r->{status}, 200, 'special path link works';
is $r->{body}, "special\n", 'special path body';

# bound to another client
$j = json_body(api_post('/api/issue', '{"path":"/dl/a.txt","ttl":60,"ip":"10.0.0.0/8"}'));
is http_get($j->{url})->{headers}{'x-status'}, 'wrong_client', 'ip binding';
# null members are absent ones
$r = api_post('/api/issue', '{"path":"/dl/a.txt","ttl":60,"prefix":null,"order":null,"limit":null,"ip":null}');
is $r->{status}, 200, 'null members: 200';
unlike json_body($r)->{url}, qr/psd_(order|limit|ip|scope)=/, 'null members: left out';
# the whole default max_ttl (30 days)
$r = api_post('/api/issue', '{"path":"/dl/a.txt","ttl":2592000}');
is $r->{status}, 200, 'ttl = max_ttl: 200';
is http_get(json_body($r)->{url})->{status}, 200, 'and the link verifies';



=== TEST 2: psd_link_sign_key picks the signing key; psd_link_max_ttl bounds the ttl
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    psd_link_key k2 $TEST_NGINX_CONF_DIR/keys/k2;
    psd_link_sign_key k1;
--- config
    psd_link_max_ttl 1h;
    location /dl/ {
        psd_link on;
    }
    location = /api/issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- user_files
>>> dl/a.txt
A
--- check
my $r = api_post('/api/issue', '{"path":"/dl/a.txt","ttl":3600}');
is $r->{status}, 200, 'ttl = max_ttl: 200';
my $j = json_body($r);
like $j->{url}, qr/&psd_kid=k1&/, 'signed with k1';
is $j->{url}, sign_link(path => '/dl/a.txt', kid => 'k1', exp => $j->{expires}, id => $j->{id}),
    'Perl signer agrees';
is http_get($j->{url})->{status}, 200, 'link works';
check_api('/api/issue', ['{"path":"/dl/a.txt","ttl":3601}', 400, 'ttl_too_long', 'ttl']);
--- no_error_log
[error]



=== TEST 3: issue: bad input
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    psd_link_max_ttl 1h;
    location = /api/issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- check
check_api('/api/issue',
    [ 'not json', 400, 'invalid_json' ],
    [ '', 400, 'invalid_json' ],
    [ '[1,2]', 400, 'invalid_json' ],
    [ '"/dl/a.txt"', 400, 'invalid_json' ],
    [ '{"path":"/a","ttl":60', 400, 'invalid_json' ],
    [ '{"path":"/a","ttl":60}x', 400, 'invalid_json' ],
    [ '{"path":"/a","ttl":60,"ttl":61}', 400, 'invalid_json' ],
    [ qq{{"path":"/a\xff","ttl":60}}, 400, 'invalid_json' ],
    [ '{"path":5,"ttl":60}', 400, 'invalid_field', 'path' ],
    [ '{"path":["/a"],"ttl":60}', 400, 'invalid_field', 'path' ],
    [ '{"ttl":60}', 400, 'invalid_field', 'path|prefix' ],
    [ '{"path":"/a","prefix":"/b/","ttl":60}', 400, 'invalid_field', 'path|prefix' ],
    [ '{"prefix":true,"ttl":60}', 400, 'invalid_field', 'path|prefix' ],
    [ '{"path":"/a"}', 400, 'invalid_field', 'ttl' ],
    [ '{"path":"/a","ttl":null}', 400, 'invalid_field', 'ttl' ],
    [ '{"path":"/a","ttl":0}', 400, 'invalid_field', 'ttl' ],
    [ '{"path":"/a","ttl":-5}', 400, 'invalid_field', 'ttl' ],
    [ '{"path":"/a","ttl":"60"}', 400, 'invalid_field', 'ttl' ],
    [ '{"path":"/a","ttl":1.5}', 400, 'invalid_field', 'ttl' ],
    [ '{"path":"/a","ttl":true}', 400, 'invalid_field', 'ttl' ],
    [ '{"path":"/a","ttl":3601}', 400, 'ttl_too_long', 'ttl' ],
    [ '{"path":"/a","ttl":99999999999999999}', 400, 'ttl_too_long', 'ttl' ],
    [ '{"path":"/a","ttl":60,"limit":0}', 400, 'invalid_field', 'limit' ],
    [ '{"path":"/a","ttl":60,"limit":-1}', 400, 'invalid_field', 'limit' ],
    [ '{"path":"/a","ttl":60,"limit":1000001}', 400, 'invalid_field', 'limit' ],
    [ '{"path":"/a","ttl":60,"limit":"2"}', 400, 'invalid_field', 'limit' ],
    [ '{"path":"/a","ttl":60,"limit":2.0}', 400, 'invalid_field', 'limit' ],
    [ '{"path":"/a","ttl":60,"order":5}', 400, 'invalid_field', 'order' ],
    [ '{"path":"/a","ttl":60,"order":"a b"}', 400, 'invalid_field', qr/^invalid order id/ ],
    [ '{"path":"/a","ttl":60,"order":"' . 'o' x 65 . '"}', 400, 'invalid_field', qr/^invalid order id/ ],
    [ '{"path":"/a","ttl":60,"ip":5}', 400, 'invalid_field', 'ip' ],
    [ '{"path":"/a","ttl":60,"ip":"nope"}', 400, 'invalid_field', qr/^invalid ip/ ],
    [ '{"path":"/a","ttl":60,"ip":"127.0.0.1/32"}', 400, 'invalid_field', qr/^invalid ip/ ],
    [ '{"path":"/a","ttl":60,"ip":"10.0.0.1/8"}', 400, 'invalid_field', qr/^invalid ip/ ],
    [ '{"path":"","ttl":60}', 400, 'invalid_field', qr/^invalid path/ ],
    [ '{"path":"a.txt","ttl":60}', 400, 'invalid_field', qr/^invalid path/ ],
    [ '{"path":"/a/../b","ttl":60}', 400, 'invalid_field', qr/^invalid path/ ],
    [ '{"path":"/a/./b","ttl":60}', 400, 'invalid_field', qr/^invalid path/ ],
    [ '{"path":"/a//b","ttl":60}', 400, 'invalid_field', qr/^invalid path/ ],
    [ '{"path":"/a\u0001b","ttl":60}', 400, 'invalid_field', qr/^invalid path/ ],
    # jansson refuses \u0000 in strings: never a value at all
    [ '{"path":"/a\u0000b","ttl":60}', 400, 'invalid_json' ],
    [ '{"prefix":"/dir","ttl":60}', 400, 'invalid_field', qr/^invalid prefix/ ],
    [ '{"prefix":"dir/","ttl":60}', 400, 'invalid_field', qr/^invalid prefix/ ],
    [ '{"prefix":"/a/../","ttl":60}', 400, 'invalid_field', qr/^invalid prefix/ ],
    [ '{"prefix":"/' . 'p' x 1024 . '/","ttl":60}', 400, 'invalid_field', qr/^invalid prefix/ ],
    [ '{"path":"/' . 'p' x 1100 . '","ttl":60}', 400, 'invalid_field', qr/path/ ],
);
# what did pass: a path of 1024 bytes
my $r = api_post('/api/issue', '{"path":"/' . 'p' x 1023 . '","ttl":60}');
is $r->{status}, 200, 'a 1024-byte path: 200';
--- no_error_log
[error]



=== TEST 4: revoke: bad input, and good input of both kinds
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /api/revoke {
        psd_link_revoke;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- check
check_api('/api/revoke',
    [ 'nope', 400, 'invalid_json' ],
    [ '', 400, 'invalid_json' ],
    [ '["x"]', 400, 'invalid_json' ],
    [ '{"link":"a","link":"b"}', 400, 'invalid_json' ],
    [ '{}', 400, 'invalid_field', 'link|order' ],
    [ '{"link":5}', 400, 'invalid_field', 'link|order' ],
    [ '{"link":""}', 400, 'invalid_field', 'link|order' ],
    [ '{"link":null}', 400, 'invalid_field', 'link|order' ],
    [ '{"order":""}', 400, 'invalid_field', 'link|order' ],
    [ '{"order":["o"]}', 400, 'invalid_field', 'link|order' ],
    [ '{"link":"' . 'l' x 65 . '"}', 400, 'invalid_field', 'link|order' ],
    [ '{"link":"a b"}', 400, 'invalid_field', 'link' ],
    [ '{"link":"a.b"}', 400, 'invalid_field', 'link' ],
    [ '{"link":"a}b"}', 400, 'invalid_field', 'link' ],
    [ '{"order":"o/1"}', 400, 'invalid_field', 'order' ],
    [ '{"order":"o\u0000"}', 400, 'invalid_json' ],
    [ '{"order":"o}:{x"}', 400, 'invalid_field', 'order' ],
);
is redis_cmd('DBSIZE'), 0, 'nothing written for bad input';
for my $body ('{"link":"Ab_-9"}', '{"order":"ord.1:x-y_Z"}', '{"link":null,"order":"o2"}',
              '{"link":"' . 'l' x 64 . '"}') {
    my $r = api_post('/api/revoke', $body);
    is $r->{status}, 200, "$body: 200";
    is $r->{body}, qq{{"revoked":true}\n}, "$body: revoked";
}
ok redis_cmd('HGET', 'psd:{link:Ab_-9}', 'revoked'), 'link key written';
ok redis_cmd('HGET', 'psd:{order:ord.1:x-y_Z}', 'revoked'), 'order key written';
ok redis_cmd('HGET', 'psd:{order:o2}', 'revoked'), 'order o2 written';



=== TEST 5: authentication and methods, both endpoints
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /api/issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
    location = /api/revoke {
        psd_link_revoke;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- check
my %body = ('/api/issue' => '{"path":"/a","ttl":60}', '/api/revoke' => '{"link":"x1"}');
for my $ep (sort keys %body) {
    my $b = $body{$ep};
    my @bad = (
        [ 'no Authorization', token => undef ],
        [ 'wrong key', token => 'psd-test-api-key-Zq8sT3vW1xY6' ],
        [ 'key with one more byte', token => "${API_KEY}x" ],
        [ 'key one byte short', token => substr $API_KEY, 0, -1 ],
        [ 'empty bearer', auth => 'Bearer ' ],
        [ 'Basic scheme', auth => "Basic $API_KEY" ],
        [ 'no scheme', auth => $API_KEY ],
        [ 'two spaces', auth => "Bearer  $API_KEY" ],
    );
    for my $c (@bad) {
        my ($name, %o) = @$c;
        my $r = api_post($ep, $b, %o);
        is $r->{status}, 401, "$ep $name: 401";
        is $r->{body}, qq{{"error":"unauthorized"}\n}, "$ep $name: unauthorized";
    }
    my $r = api_post($ep, $b, auth => "bearer $API_KEY");
    is $r->{status}, 200, "$ep: scheme is case-insensitive";
    $r = api_post($ep, $b);
    is $r->{status}, 200, "$ep: the key: 200";
    for my $m (qw(GET HEAD PUT DELETE)) {
        $r = http_request("$m $ep HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            . "Authorization: Bearer $API_KEY\r\n\r\n");
        is $r->{status}, 405, "$ep $m: 405";
        is $r->{body}, $m eq 'HEAD' ? '' : qq{{"error":"method_not_allowed"}\n},
            "$ep $m: method_not_allowed";
    }
}
--- no_error_log
[error]



=== TEST 6: body size: small bodies accepted, over 16 KiB is 413, with Content-Length or chunked
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /api/issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- check
for my $n (100, 8000) {
    is api_post('/api/issue', ::padded_json($n))->{status}, 200, "$n bytes with Content-Length: 200";
    is ::chunked_issue(::padded_json($n))->{status}, 200, "$n bytes chunked: 200";
}
for my $n (16385, 100000) {
    my $r = api_post('/api/issue', ::padded_json($n));
    is $r->{status}, 413, "$n bytes with Content-Length: 413";
    is $r->{body}, qq{{"error":"body_too_large"}\n}, "$n bytes: body_too_large";
    $r = ::chunked_issue(::padded_json($n));
    is $r->{status}, 413, "$n bytes chunked: 413";
    is $r->{body}, qq{{"error":"body_too_large"}\n}, "$n bytes chunked: body_too_large";
}
my $r = api_post('/api/issue', ::padded_json(100000), token => 'wrong-key-wrong-key');
is $r->{status}, 401, 'unauthorized before the size';



=== TEST 7: body size: bodies between client_body_buffer_size (8k default) and 16 KiB are accepted
# BUG: the endpoints promise 16 KiB (NGX_HTTP_PSD_LINK_BODY_MAX) but with
# nginx's default client_body_buffer_size (two pages, 8 KiB on x86-64) a
# body over 8 KiB (chunked) or 10 KiB (Content-Length) goes to a temporary
# file, which ngx_http_psd_link_body_handler() answers with 413.
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /api/issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- check
for my $n (9000, 12000, 16384) {
    my $r = api_post('/api/issue', ::padded_json($n));
    is $r->{status}, 200, "$n bytes with Content-Length: 200" or diag $r->{raw};
    $r = ::chunked_issue(::padded_json($n));
    is $r->{status}, 200, "$n bytes chunked: 200" or diag $r->{raw};
}
--- no_error_log
buffered to a temporary file



=== TEST 8: psd_link_max_ttl 0 (no limit): any ttl, and one past the largest time is refused
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    psd_link_max_ttl 0;
    location /dl/ {
        psd_link on;
    }
    location = /api/issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- user_files
>>> dl/a.txt
A
--- check
my $r = api_post('/api/issue', '{"path":"/dl/a.txt","ttl":315360000}');
is $r->{status}, 200, 'ten years: 200';
is http_get(json_body($r)->{url})->{status}, 200, 'and the link verifies';
# now + ttl must not overflow (under make asan, UBSan reports it)
for my $ttl ('999999999999', '9223372036854775807') {
    $r = api_post('/api/issue', qq{{"path":"/dl/a.txt","ttl":$ttl}});
    is $r->{status}, 400, "ttl $ttl: 400";
    like json_body($r)->{error}, qr/^(invalid_field|ttl_too_long)$/, "ttl $ttl: refused";
}



=== TEST 9: Redis down: revoke answers 503, issue needs no Redis
--- no_cluster: stops and kills the single redis-server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /api/issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
    location = /api/revoke {
        psd_link_revoke;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- check
redis_stop();
my $r = api_post('/api/revoke', '{"link":"down1"}');
is $r->{status}, 503, 'revoke, Redis stopped: 503';
is $r->{headers}{'retry-after'}, 1, 'Retry-After';
is $r->{body}, qq{{"error":"backend_unavailable"}\n}, 'backend_unavailable';
$r = api_post('/api/issue', '{"path":"/a","ttl":60}');
is $r->{status}, 200, 'issue, Redis stopped: 200';
redis_kill();
$r = api_post('/api/revoke', '{"link":"down1"}');
is $r->{status}, 503, 'revoke, Redis killed: 503';
redis_start();
ok wait_until(sub { api_post('/api/revoke', '{"link":"down1"}')->{status} == 200 }, 8),
    'revoke recovers';
ok redis_cmd('HGET', 'psd:{link:down1}', 'revoked'), 'revocation stored';
