# psd_link state in Redis: download limits (counted when a response
# delivered the file's last byte), ranges, aborted downloads, leases for
# downloads in progress, parallel downloads at the limit, the concurrency
# cap, revocation of links and orders, failure modes, recovery, and the
# reload of the Lua scripts after SCRIPT FLUSH.
#
# Keys: psd:{link:<id>} (hash: used, revoked), psd:{link:<id>}:leases
# (zset of downloads in progress, scored by when they lapse, Redis ms),
# psd:{order:<id>} (hash: revoked).
#
# A download is made slow with "&slow=1" (an application argument, not
# signed): limit_rate then holds it in progress for as long as a test needs.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link;
use Time::HiRes qw(time sleep);

write_keys();

sub used { redis_cmd('HGET', "psd:{link:$_[0]}", 'used') }
sub leases { redis_cmd('ZCARD', "psd:{link:$_[0]}:leases") }
sub noscripts { (redis_cmd('INFO', 'errorstats') =~ /errorstat_NOSCRIPT:count=(\d+)/)[0] // 0 }
sub redis_ms { my $t = redis_cmd('TIME'); $t->[0] * 1000 + int($t->[1] / 1000) }

run_tests();

__DATA__

=== TEST 1: limit 2: two complete downloads, then 410 exhausted; $psd_link_downloads_left
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /dl/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
        add_header X-Left $psd_link_downloads_left always;
    }
--- user_files
>>> dl/a.txt size=10K
0123456789
--- request eval
my $u = sign_link(path => '/dl/a.txt', id => 'lim2', limit => 2);
["GET $u", "GET $u", "GET $u", "HEAD $u", "GET $u&x=1"]
--- error_code eval
[200, 200, 410, 410, 410]
--- response_headers eval
["X-Status: ok\nX-Left: 2", "X-Status: ok\nX-Left: 1",
 "X-Status: exhausted\nX-Left: 0\n!Retry-After", "X-Status: exhausted", "X-Status: exhausted"]
--- response_body eval
[undef, undef, qq{{"error":"link_exhausted"}\n}, "", qq{{"error":"link_exhausted"}\n}]
--- check
is length $_[0]{body}, 10240, 'first download complete';
is used('lim2'), 2, 'used 2';
is leases('lim2'), 0, 'no lease left';
my $ttl = redis_cmd('TTL', 'psd:{link:lim2}');
# expires a day after the link (exp + skew + 86400)
ok $ttl > 86400 && $ttl <= 86400 + 3600, "link state expires with the link ($ttl s)";
--- error_log
psd_link: denied, exhausted, link "lim2"



=== TEST 2: ranges: a middle part spends nothing; the part that ends the file spends one
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /dl/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
        add_header X-Left $psd_link_downloads_left always;
    }
--- user_files
>>> dl/r.bin size=1000
abcdefghij
--- check
my $u = sign_link(path => '/dl/r.bin', id => 'rng1', limit => 1);
my $r = http_request("HEAD $u HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
is $r->{status}, 200, 'HEAD: 200';
$r = http_get($u, { Range => 'bytes=0-99' });
is $r->{status}, 206, 'bytes=0-99: 206';
is length $r->{body}, 100, 'bytes=0-99: 100 bytes';
is $r->{headers}{'x-left'}, 1, 'bytes=0-99: one left';
$r = http_get($u, { Range => 'bytes=500-599' });
is $r->{status}, 206, 'bytes=500-599: 206';
$r = http_get($u, { Range => 'bytes=0-99' });
is $r->{status}, 206, 'bytes=0-99 again: 206, still not spent';
is used('rng1'), undef, 'middle parts spend nothing';
$r = http_get($u, { Range => 'bytes=100-' });
is $r->{status}, 206, 'bytes=100-: 206';
is length $r->{body}, 900, 'bytes=100-: 900 bytes';
is $r->{headers}{'content-range'}, 'bytes 100-999/1000', 'content-range';
ok wait_until(sub { (used('rng1') // 0) == 1 }, 2), 'the last part spent one use';
$r = http_get($u);
is $r->{status}, 410, 'then exhausted';
is $r->{headers}{'x-status'}, 'exhausted', 'status exhausted';
$r = http_get($u, { Range => 'bytes=0-99' });
is $r->{status}, 410, 'a middle part of an exhausted link: 410';

# the other spellings of a last part: suffix, explicit end, full range
for my $range ('bytes=-10', 'bytes=990-999', 'bytes=0-999', 'bytes=0-5000') {
    my $id = 'rng' . ($range =~ tr/-=/xy/r);
    my $l = sign_link(path => '/dl/r.bin', id => $id, limit => 1);
    $r = http_get($l, { Range => $range });
    is $r->{status}, 206, "$range: 206";
    ok wait_until(sub { (used($id) // 0) == 1 }, 2), "$range: spent one use";
    is http_get($l)->{status}, 410, "$range: then exhausted";
}

# two ranges (multipart) never count as the file's end
my $l = sign_link(path => '/dl/r.bin', id => 'rngmulti', limit => 1);
$r = http_get($l, { Range => 'bytes=0-9,990-' });
is $r->{status}, 206, 'multipart: 206';
like $r->{headers}{'content-type'}, qr{^multipart/byteranges}, 'multipart body';
is http_get($l, { Range => 'bytes=10-19' })->{status}, 206, 'still usable';
is used('rngmulti'), undef, 'multipart spends nothing';



=== TEST 3: downloads in progress at the limit are busy; an aborted one spends nothing and frees its lease
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    map $arg_slow $psd_rate { default 0; 1 16k; }
--- config
    location /dl/ {
        psd_link on;
        limit_rate $psd_rate;
        add_header X-Status $psd_link_status always;
        add_header X-Left $psd_link_downloads_left always;
    }
--- user_files
>>> dl/big.bin size=1M
0123456789abcdef
--- check
my $u = sign_link(path => '/dl/big.bin', id => 'abrt1', limit => 1);
my ($s, $head) = start_download("$u&slow=1");
like $head, qr{^HTTP/1\.1 200 }, 'slow download started';
like $head, qr/^X-Left: 1\r$/m, 'one download left';
is leases('abrt1'), 1, 'it holds a lease';
my $r = http_get($u);
is $r->{status}, 429, 'a second download at the limit: 429';
is $r->{headers}{'retry-after'}, 30, 'Retry-After';
is $r->{headers}{'x-status'}, 'busy', 'status busy';
is $r->{body}, qq{{"error":"link_busy"}\n}, 'body link_busy';
close $s;
ok wait_until(sub { leases('abrt1') == 0 }, 5), 'abort released the lease';
is used('abrt1'), undef, 'abort spent nothing';
$r = http_get($u);
is $r->{status}, 200, 'the next download works';
is length $r->{body}, 1048576, 'complete';
ok wait_until(sub { (used('abrt1') // 0) == 1 }, 2), 'and spends the use';
is http_get($u)->{status}, 410, 'then exhausted';
my @busy = grep { /psd_link: denied, busy, link "abrt1"/ } split /\n/, error_log_text();
is scalar(@busy), 1, 'a denial after a Redis round trip is logged once';
--- error_log
psd_link: denied, busy, link "abrt1"



=== TEST 4: ten parallel downloads at limit 1 (two workers): one 200, the rest busy or exhausted; used exactly 1
--- workers: 2
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=1s;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /dl/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> dl/p.bin size=512K
parallel
--- check
for my $round (1 .. 3) {
    my $u = sign_link(path => '/dl/p.bin', id => "par$round", limit => 1);
    my $rs = http_parallel([ map { "GET $u HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" } 1 .. 10 ]);
    my %n;
    $n{ $_->{status} // 'none' }++ for @$rs;
    is $n{200}, 1, "round $round: exactly one 200";
    is(($n{429} // 0) + ($n{410} // 0), 9, "round $round: the others 429 or 410")
        or diag explain \%n;
    my ($ok) = grep { ($_->{status} // 0) == 200 } @$rs;
    is length($ok->{body} // ''), 524288, "round $round: the 200 is complete";
    ok !(grep { ($_->{status} // 0) == 429 && ($_->{headers}{'x-status'} ne 'busy'
        || $_->{body} ne qq{{"error":"link_busy"}\n}) } @$rs), "round $round: 429s are link_busy";
    ok wait_until(sub { (used("par$round") // 0) == 1 && leases("par$round") == 0 }, 3),
        "round $round: used 1, no lease left";
    Time::HiRes::sleep(0.2);
    is used("par$round"), 1, "round $round: used stays exactly 1";
}



=== TEST 5: psd_link_concurrency 1 without a limit: one download at a time, per link
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    map $arg_slow $psd_rate { default 0; 1 16k; }
--- config
    location /dl/ {
        psd_link on;
        psd_link_concurrency 1;
        limit_rate $psd_rate;
        add_header X-Status $psd_link_status always;
        add_header X-Left $psd_link_downloads_left always;
    }
--- user_files
>>> dl/big.bin size=1M
0123456789abcdef
>>> dl/small.txt
small
--- check
my $u = sign_link(path => '/dl/big.bin', id => 'conc1');
my ($s, $head) = start_download("$u&slow=1");
like $head, qr{^HTTP/1\.1 200 }, 'first download in progress';
unlike $head, qr/^X-Left:/m, 'no limit: no downloads left';
my $r = http_get($u);
is $r->{status}, 429, 'second simultaneous download: 429';
is $r->{headers}{'retry-after'}, 30, 'Retry-After: 30';
is $r->{body}, qq{{"error":"link_busy"}\n}, 'link_busy';
is http_get(sign_link(path => '/dl/big.bin', id => 'conc2'))->{status}, 200,
    'another link is not capped';
close $s;
ok wait_until(sub { leases('conc1') == 0 }, 5), 'lease released on abort';
is http_get($u)->{status}, 200, 'then the link downloads again';
is http_get($u)->{status}, 200, 'and again: no limit';



=== TEST 6: leases lapse on Redis's clock after psd_link_lease_ttl
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    map $arg_slow $psd_rate { default 0; 1 16k; }
--- config
    location /dl/ {
        psd_link on;
        psd_link_concurrency 1;
        psd_link_lease_ttl 3s;
        limit_rate $psd_rate;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> dl/big.bin size=1M
0123456789abcdef
--- check
my $u = sign_link(path => '/dl/big.bin', id => 'lease1');
my ($s) = start_download("$u&slow=1");
my $now = redis_ms();
my $lease = redis_cmd('ZRANGE', 'psd:{link:lease1}:leases', 0, -1, 'WITHSCORES');
is scalar(@$lease), 2, 'one lease';
my $left = $lease->[1] - $now;
ok $left > 2000 && $left <= 3000, "lease lapses in psd_link_lease_ttl ($left ms)";
my $pttl = redis_cmd('PTTL', 'psd:{link:lease1}:leases');
ok $pttl > 2000 && $pttl <= 3000, "the lease set expires with it ($pttl ms)";
close $s;
ok wait_until(sub { leases('lease1') == 0 }, 5), 'released';
# a lease left by a worker that died: it blocks until it lapses
redis_cmd('ZADD', 'psd:{link:lease1}:leases', redis_ms() + 500, 'dead:1:1');
is http_get($u)->{status}, 429, 'a live lease of another worker: busy';
sleep 0.6;
is http_get($u)->{status}, 200, 'lapsed: served';



=== TEST 7: revocation through psd_link_revoke: a link, then an order; only where psd_link_revocation is on
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /dl/ {
        psd_link on;
        psd_link_revocation on;
        add_header X-Status $psd_link_status always;
        add_header X-Order $psd_link_order always;
    }
    location /norev/ {
        alias html/dl/;
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
    location = /api/revoke {
        psd_link_revoke;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- user_files
>>> dl/a.txt
A
--- check
my $A = sign_link(path => '/dl/a.txt', id => 'revA', order => 'o-7');
my $B = sign_link(path => '/dl/a.txt', id => 'revB', order => 'o-7');
my $C = sign_link(path => '/dl/a.txt', id => 'revC', order => 'o-8');
my $D = sign_link(path => '/norev/a.txt', id => 'revA', order => 'o-7');
my $E = sign_link(path => '/dl/a.txt', id => 'revE', order => 'o-7', limit => 5);
my $F = sign_link(path => '/dl/a.txt', id => 'revF');
is http_get($_)->{status}, 200, "before: $_" for $A, $B, $C, $D, $E, $F;
my $r = api_post('/api/revoke', '{"link":"revA"}');
is $r->{status}, 200, 'revoke link: 200';
is $r->{body}, qq{{"revoked":true}\n}, 'revoke link: body';
$r = http_get($A);
is $r->{status}, 410, 'revoked link: 410';
is $r->{body}, qq{{"error":"link_revoked"}\n}, 'revoked link: body';
is $r->{headers}{'x-status'}, 'revoked', 'revoked link: status';
is http_get($B)->{status}, 200, 'another link of the order still works';
is http_get($D)->{status}, 200, 'no psd_link_revocation: not checked';
ok redis_cmd('HGET', 'psd:{link:revA}', 'revoked') =~ /^\d{10}$/, 'revoked at, Unix time';
my $ttl = redis_cmd('TTL', 'psd:{link:revA}');
ok $ttl > 30 * 86400 && $ttl <= 31 * 86400, "revocation kept for max_ttl + 1 day ($ttl)";

$r = api_post('/api/revoke', '{"order":"o-7"}');
is $r->{status}, 200, 'revoke order: 200';
for ([B => $B], [E => $E]) {
    $r = http_get($_->[1]);
    is $r->{status}, 410, "order revoked: link $_->[0] 410";
    is $r->{headers}{'x-status'}, 'revoked', "order revoked: link $_->[0] revoked";
}
ok wait_until(sub { leases('revE') == 0 }, 2), 'a limited link of a revoked order keeps no lease';
is used('revE'), 1, 'its earlier download counted';
is http_get($C)->{status}, 200, 'a link of another order works';
is http_get($F)->{status}, 200, 'a link without order works';
# an order's record is the order's history (webhooks write it too): kept
is redis_cmd('TTL', 'psd:{order:o-7}'), -1, 'order record does not expire';
# revoking twice is fine
is api_post('/api/revoke', '{"order":"o-7"}')->{status}, 200, 'revoke again: 200';
--- error_log
psd_link: denied, revoked, link "revA"
psd_link: denied, revoked, link "revE"



=== TEST 8: Redis stopped: failure_mode open serves with a warning, closed answers 503; recovery
--- no_cluster: stops the single redis-server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /open/ {
        alias html/dl/;
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
    location /closed/ {
        alias html/dl/;
        psd_link on;
        psd_link_failure_mode closed;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> dl/a.txt
A
--- check
my $open = sign_link(path => '/open/a.txt', id => 'fo1', limit => 5);
my $closed = sign_link(path => '/closed/a.txt', id => 'fc1', limit => 5);
is http_get($closed)->{status}, 200, 'closed, Redis up: 200';
redis_stop();
my $r = http_get($open);
is $r->{status}, 200, 'open, Redis stopped: served';
is $r->{body}, "A\n", 'open: body';
like error_log_text(), qr/\[warn\] .*psd_link: redis \w+, link "fo1" let through without its revocation and limit checks, client: 127\.0\.0\.1/,
    'open: warn line';
$r = http_get($closed);
is $r->{status}, 503, 'closed, Redis stopped: 503';
is $r->{headers}{'retry-after'}, 1, 'closed: Retry-After';
is $r->{body}, qq{{"error":"backend_unavailable"}\n}, 'closed: body';
is http_get(sign_link(path => '/closed/a.txt'))->{status}, 200,
    'closed: a stateless link needs no Redis';
redis_cont();
ok wait_until(sub { http_get($closed)->{status} == 200 }, 8), 'closed: recovers';
ok wait_until(sub { (used('fc1') // 0) == 2 }, 2), 'closed: counting again';
is used('fo1'), undef, 'the download let through was not counted';
--- error_log
let through



=== TEST 9: Redis killed and restarted empty (no scripts loaded): fail open, fail closed, recovery
--- no_cluster: kills and restarts the single redis-server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /open/ {
        alias html/dl/;
        psd_link on;
        psd_link_revocation on;
    }
    location /closed/ {
        alias html/dl/;
        psd_link on;
        psd_link_revocation on;
        psd_link_failure_mode closed;
    }
--- user_files
>>> dl/a.txt
A
--- check
my $open = sign_link(path => '/open/a.txt', id => 'ko1');
my $closed = sign_link(path => '/closed/a.txt', id => 'kc1', limit => 3);
is http_get($closed)->{status}, 200, 'closed, Redis up: 200';
redis_kill();
my $t0 = time;
is http_get($open)->{status}, 200, 'open, Redis killed: served';
is http_get($closed)->{status}, 503, 'closed, Redis killed: 503';
ok time - $t0 < 1, 'no waiting for a dead Redis';
redis_start();
ok wait_until(sub { http_get($closed)->{status} == 200 }, 8), 'closed: recovers';
ok wait_until(sub { (used('kc1') // 0) == 1 }, 2), 'counting in the new Redis';
is http_get($closed)->{status}, 200, 'second';
is http_get($closed)->{status}, 200, 'third';
ok wait_until(sub { (used('kc1') // 0) == 3 }, 2), 'used 3';
is http_get($closed)->{status}, 410, 'exhausted';
--- error_log
let through



=== TEST 10: SCRIPT FLUSH: the check and the completion scripts are reloaded on NOSCRIPT
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    map $arg_slow $psd_rate { default 0; 1 64k; }
--- config
    location /dl/ {
        psd_link on;
        limit_rate $psd_rate;
        add_header X-Left $psd_link_downloads_left always;
    }
--- user_files
>>> dl/a.txt size=48K
0123456789abcdef
--- check
my $u = sign_link(path => '/dl/a.txt', id => 'flush1', limit => 3);
my $r = http_get($u);
is $r->{status}, 200, 'first download';
ok wait_until(sub { (used('flush1') // 0) == 1 }, 2), 'used 1';
is redis_cmd('SCRIPT', 'FLUSH'), 'OK', 'SCRIPT FLUSH';
my $nos = noscripts();
$r = http_get($u);
is $r->{status}, 200, 'after SCRIPT FLUSH: the check script reloaded';
is $r->{headers}{'x-left'}, 2, 'two left';
ok wait_until(sub { (used('flush1') // 0) == 2 }, 2), 'used 2';
# one NOSCRIPT each: the check, then the completion (only the script that
# met NOSCRIPT is loaded again)
ok wait_until(sub { noscripts() == $nos + 2 }, 2), 'the check and the completion met NOSCRIPT';
Time::HiRes::sleep(0.1);
is noscripts(), $nos + 2, 'once each';
# flushed while a download is in progress: the completion script is the
# first EVALSHA to meet NOSCRIPT
my ($s, $head) = start_download("$u&slow=1");
like $head, qr/^X-Left: 1\r$/m, 'slow download started, one left';
is redis_cmd('SCRIPT', 'FLUSH'), 'OK', 'SCRIPT FLUSH during the download';
$nos = noscripts();
is finish_download($s), 49152, 'slow download complete';
ok wait_until(sub { (used('flush1') // 0) == 3 }, 3), 'completion recorded: used 3';
is noscripts(), $nos + 1, 'the completion script met NOSCRIPT once';
is leases('flush1'), 0, 'lease released';
is http_get($u)->{status}, 410, 'exhausted';
--- no_error_log
redis answered
let through



=== TEST 11: keep-alive: a download aborted on a reused connection spends nothing
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    map $arg_slow $psd_rate { default 0; 1 16k; }
--- config
    location /pub/ { }
    location /dl/ {
        psd_link on;
        limit_rate $psd_rate;
    }
--- user_files
>>> pub/big.bin size=1M
0123456789abcdef
>>> dl/mid.bin size=200K
0123456789abcdef
--- check
my $u = sign_link(path => '/dl/mid.bin', id => 'ka1', limit => 1);
my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $ENV{TEST_NGINX_SERVER_PORT},
                            Proto => 'tcp') or die $!;
# 1 MiB on the connection first, read completely
print $s "GET /pub/big.bin HTTP/1.1\r\nHost: x\r\n\r\n";
my ($buf, $want) = ('', undef);
while (1) {
    sysread($s, $buf, 65536, length $buf) or die 'closed';
    if (!defined $want && $buf =~ /\r\n\r\n/) {
        my ($cl) = $buf =~ /Content-Length: (\d+)/;
        $want = index($buf, "\r\n\r\n") + 4 + $cl;
    }
    last if defined $want && length $buf >= $want;
}
is length($buf) - index($buf, "\r\n\r\n") - 4, 1048576, 'first response read whole';
# then the limited download, slow, aborted after its header
print $s "GET $u&slow=1 HTTP/1.1\r\nHost: x\r\n\r\n";
$buf = '';
sysread($s, $buf, 4096, length $buf) until $buf =~ /\r\n\r\n/;
like $buf, qr{^HTTP/1\.1 200 }, 'second response started';
is leases('ka1'), 1, 'lease taken';
close $s;
ok wait_until(sub { leases('ka1') == 0 }, 5), 'lease released';
is used('ka1'), undef, 'the aborted download spent nothing';
is http_get($u)->{status}, 200, 'the link still works';



=== TEST 12: parallel ranged downloads that reach the file's end can't overspend the limit either
# BUG: ngx_http_psd_link_may_complete() takes a lease only for "bytes=N-";
# "bytes=0-99999999", "bytes=0-<last>" or "bytes=-N" also deliver the last
# byte, so each completes a download and spends a use in the log phase,
# but none is held back by a lease: parallel such requests all pass a
# limit of 1 (and "used" ends above the limit).
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=1s;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /dl/ {
        psd_link on;
        # 8 KiB at once, then 8 KiB/s: each download takes 2 s
        limit_rate 8k;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> dl/p.bin size=24K
parallel
--- check
my @ranges = ('bytes=0-99999999', 'bytes=0-24575', 'bytes=-24576', 'bytes=0-');
my (@reqs, %id);
for my $range (@ranges) {
    $id{$range} = 'prng' . ($range =~ tr/-=/xy/r);
    my $u = sign_link(path => '/dl/p.bin', id => $id{$range}, limit => 1);
    push @reqs, map { "GET $u HTTP/1.1\r\nHost: x\r\nRange: $range\r\nConnection: close\r\n\r\n" } 1 .. 4;
}
my $rs = http_parallel(\@reqs);
for my $i (0 .. $#ranges) {
    my $range = $ranges[$i];
    my %n;
    $n{ $_->{status} // 'none' }++ for @$rs[4 * $i .. 4 * $i + 3];
    is $n{206} // 0, 1, "$range: exactly one download of the whole file"
        or diag explain \%n;
    wait_until(sub { leases($id{$range}) == 0 && (used($id{$range}) // 0) >= 1 }, 3);
    is used($id{$range}), 1, "$range: used exactly 1";
}



=== TEST 13: internal redirects (index, try_files) verify once and take one lease
# BUG: ngx_http_psd_link_access_handler() looks up its context with
# ngx_http_get_module_ctx(), which internal redirects clear, so after
# "index" or "try_files" the link is verified again, against the new URI,
# and checked in Redis again: with "index" a second lease is taken (the
# first is never released, it lapses after psd_link_lease_ttl) and a link
# with limit 1 (or psd_link_concurrency 1) answers 429 to itself; with a
# try_files fallback outside the prefix it answers 403 wrong_path.
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /dl/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
    location /tf/ {
        psd_link on;
        try_files $uri /dl/d/f.txt;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> dl/d/index.html
index
>>> dl/d/f.txt
fallback
--- check
# stateless: verified twice, but works
my $u = sign_link(path => '/dl/d/', prefix => 1, id => 'idx0');
is http_get($u)->{status}, 200, 'stateless prefix link, directory index: 200';
for my $c ([ 'idx1', '/dl/d/', '/dl/d/' ], [ 'tf1', '/tf/', '/tf/x.txt' ]) {
    my ($id, $prefix, $path) = @$c;
    $u = sign_link(path => $prefix, prefix => 1, id => $id, limit => 1) =~ s{^\Q$prefix\E\?}{$path?}r;
    my $r = http_get($u);
    is $r->{status}, 200, "$id: limit 1, internal redirect: 200";
    ok wait_until(sub { leases($id) == 0 }, 2), "$id: no lease left behind";
    is used($id), 1, "$id: used 1";
}



=== TEST 14: with psd_link_max_ttl 0 (no limit) a revocation does not lapse
# BUG: ngx_http_psd_link_revoke() sets EXPIRE max_ttl + skew + 86400 on a
# link's revocation; with max_ttl 0 that is one day, after which a revoked
# link (whose expiry may be years away, nothing bounds it) works again.
# (An order's record never expires.)
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    psd_link_max_ttl 0;
    location /dl/ {
        psd_link on;
        psd_link_revocation on;
    }
    location = /api/revoke {
        psd_link_revoke;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- user_files
>>> dl/a.txt
A
--- check
my $u = sign_link(path => '/dl/a.txt', id => 'forever', order => 'o-f', ttl => 3 * 365 * 86400);
is http_get($u)->{status}, 200, 'a link valid for three years';
is api_post('/api/revoke', '{"link":"forever"}')->{status}, 200, 'revoke link';
is api_post('/api/revoke', '{"order":"o-f"}')->{status}, 200, 'revoke order';
is http_get($u)->{status}, 410, 'revoked';
my $ttl = redis_cmd('TTL', 'psd:{link:forever}');
ok $ttl == -1 || $ttl > 3 * 365 * 86400, "link revocation outlives the link (TTL $ttl)";
$ttl = redis_cmd('TTL', 'psd:{order:o-f}');
ok $ttl == -1 || $ttl > 3 * 365 * 86400, "order revocation outlives the link (TTL $ttl)";



=== TEST 15: psd_link_redis picks the server; the first one is the default
--- http_config
    # "dead" is first: nothing listens on the fake port
    psd_redis dead 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_redis real 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /real/ {
        alias html/dl/;
        psd_link on;
        psd_link_redis real;
        psd_link_failure_mode closed;
    }
    location /default/ {
        alias html/dl/;
        psd_link on;
        psd_link_failure_mode closed;
    }
--- user_files
>>> dl/a.txt
A
--- check
my $u = sign_link(path => '/real/a.txt', id => 'named1', limit => 1);
is http_get($u)->{status}, 200, 'psd_link_redis real: served';
ok wait_until(sub { (used('named1') // 0) == 1 }, 2), 'counted in the real Redis';
is http_get($u)->{status}, 410, 'then exhausted';
my $r = http_get(sign_link(path => '/default/a.txt', id => 'named2', limit => 1));
is $r->{status}, 503, 'default server (the first, dead): 503';
