# psd_link keeps its secrets out of the error log: the API key, the link
# keys (raw bytes, hex, base64) and link signatures (those sent, and the
# genuine ones of forged requests, which the module computes) never appear
# in what the module logs.
#
# The harness runs nginx with "error_log ... debug", and nginx core itself
# logs request lines, arguments and headers at debug level ("http request
# line", "http args", "http header: Authorization: ..."): those lines do
# hold signatures and the bearer key, and are not the module's doing.  So
# the assertion covers the module's own lines (messages starting "psd: " or
# "psd_<feature>: ") and every line that is not [debug]; the genuine
# signatures of forged requests, which nginx core never sees, must be
# absent from every line.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link;
use MIME::Base64 qw(encode_base64);

write_keys();

run_tests();

__DATA__

=== TEST 1: issue, download, denials, fail-open, revoke: no secret in the module's log lines
--- no_cluster: stops the single redis-server for the fail-open lines
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    psd_link_key k2 $TEST_NGINX_CONF_DIR/keys/k2;
--- config
    location /dl/ {
        psd_link on;
        psd_link_revocation on;
    }
    location = /api/issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
    location = /api/revoke {
        psd_link_revoke;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- user_files
>>> dl/a.txt
A
>>> dl/b.txt
B
--- check
my (@sent, @genuine);       # signatures in requests; ones never sent
my $get = sub {
    my ($url, $want, $name) = @_;
    push @sent, link_arg($url, 'psd_sig');
    is http_get($url)->{status}, $want, "$name: $want";
};

# issue and download
my $r = api_post('/api/issue', '{"path":"/dl/a.txt","ttl":600,"order":"ord-s","limit":3}');
is $r->{status}, 200, 'issue';
my $issued = json_body($r)->{url};
$get->($issued, 200, 'issued link');
$r = api_post('/api/issue', '{"path":"/dl/a.txt","ttl":600}', token => 'not-the-key-not-the-key');
is $r->{status}, 401, 'issue with a wrong key';
$get->(sign_link(path => '/dl/a.txt', kid => 'k2', limit => 2), 200, 'k2 link with limit');

# denials; the genuine signature of each forged request is computed by
# the module during verification
my %p = (path => '/dl/a.txt', id => 'forged1', exp => int(time) + 600);
my $real = sign_link(%p);
push @genuine, link_arg($real, 'psd_sig');
my $other = link_arg(sign_link(%p, path => '/dl/b.txt'), 'psd_sig');
$get->(link_set($real, psd_sig => $other), 403, 'forged: sig of another path');
my $k2real = sign_link(%p, kid => 'k2');
push @genuine, link_arg($k2real, 'psd_sig');
$get->(link_set($k2real, psd_sig => $other), 403, 'forged: a k1 signature under kid k2');
push @genuine, link_arg(sign_link(%p, path => '/dl/b.txt', id => 'forged2'), 'psd_sig');
$get->(sign_link(%p, id => 'forged2') =~ s{^/dl/a\.txt}{/dl/b.txt}r, 403, 'forged: other path');
$get->(sign_link(%p, exp => int(time) - 5), 410, 'expired');
$get->(sign_link(%p, ip => '10.0.0.1'), 403, 'wrong client');
$get->(sign_link(%p, kid => 'k9', key => key_bytes('k1')), 403, 'unknown key');
$get->(link_set($real, psd_sig => substr($other, 0, 40)), 403, 'malformed');

# Redis stopped: a limited link is let through with a warning
redis_stop();
$get->(sign_link(path => '/dl/a.txt', id => 'failopen', limit => 1), 200, 'fail open');
redis_cont();

# revoke the issued link's order, then use it again
ok wait_until(sub { api_post('/api/revoke', '{"order":"ord-s"}')->{status} == 200 }, 8),
    'revoke order';
$get->($issued, 410, 'revoked');
is api_post('/api/revoke', '{"link":"x"}', token => undef)->{status}, 401, 'revoke unauthenticated';

# the secrets in every spelling a log could use
my @secrets = ($API_KEY);
for my $k (map { key_bytes($_) } qw(k1 k2)) {
    push @secrets, $k, unpack('H*', $k), uc unpack('H*', $k),
        encode_base64($k, ''), b64url($k);
}
for my $s (@sent, @genuine) {
    (my $std = $s) =~ tr{-_}{+/};
    push @secrets, $s, $std;
}
push @secrets, map { my $m = $_; $m =~ tr{-_}{+/}; unpack 'H*', MIME::Base64::decode_base64($m) }
    @sent, @genuine;

my $log = error_log_text();
my @lines = split /\n/, $log;
my @checked = grep { /^\S+ \S+ \[(?!debug\])\w+\]/
    || /^\S+ \S+ \[\w+\] \d+#\d+: (?:\*\d+ )?psd(?:_\w+)?: / } @lines;
# the log is the real one: the module's lines are there, and nginx core's
# debug lines hold signatures (which is why they are not checked)
ok scalar(grep { /psd_link: denied, / } @checked) >= 7, 'denial lines checked';
ok scalar(grep { /let through/ } @checked) == 1, 'the fail-open warning is checked';
ok index($log, $sent[0]) >= 0, 'control: nginx core debug lines do hold a sent signature';
my @leaks;
for my $s (@secrets) {
    push @leaks, grep { index($_, $s) >= 0 } @checked;
}
ok !@leaks, 'no secret in the module\'s lines or any non-debug line'
    or diag join "\n", @leaks[0 .. ($#leaks < 9 ? $#leaks : 9)];
for my $s (@genuine) {
    my @hit = grep { index($_, $s) >= 0 || index($_, $s =~ tr{-_}{+/}r) >= 0 } @lines;
    ok !@hit, "genuine signature of a forged request nowhere in the log"
        or diag join "\n", @hit[0 .. 2];
}
# key bytes nowhere at all, in any form
my @forms = ('raw', 'hex', 'HEX', 'base64', 'base64url');
for my $i (0 .. 9) {
    ok index($log, $secrets[1 + $i]) < 0, 'key k' . (1 + int($i / 5))
        . " ($forms[$i % 5]) nowhere in the log";
}
--- error_log
psd_link: denied, invalid, link "forged1"
let through
