# psd_fraud with a real Redis: every aggregate (count of requests, count of
# payment outcomes fed through psd_fraud_admin, distinct, sum), every
# action and their precedence, the review header for the application, the
# block lists (IP with CIDRs, e-mail, fingerprint), sliding windows and key
# lifetimes, one pipelined write per request, failure modes, the admin
# endpoint, the variables and metrics, and configuration errors.
#
# Every block uses its own keys (and Redis is flushed between blocks);
# metrics are compared as deltas, so the file also passes with
# TEST_NGINX_USE_HUP=1.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link;      # write_keys, api_post, json_body, wait_until
use Time::HiRes qw(time sleep);
use IO::Socket::IP;
use IO::Select;
use Digest::SHA ();

write_keys();           # keys/api: the admin endpoint's bearer key

# GET with extra headers: get('/pay/ok.txt', 'X-User' => 'u1')
sub get {
    my ($path, %h) = @_;
    return http_get($path, \%h);
}

# POST to the admin endpoint (bearer key of keys/api unless token => ...)
sub admin { api_post('/fraud/admin', @_) }

# the value of one Prometheus row, "name{labels}" as printed; 0 if absent
sub metric {
    my ($row) = @_;
    my $r = http_get('/metrics');
    return $r->{body} =~ /^\Q$row\E (\d+)$/m ? $1 : 0;
}

sub decision_metric { metric("psd_fraud_decisions_total{decision=\"$_[0]\"}") }

# the keys of the rule named $rule (psd:{fr:<digest>}:<rule>.<8 hex digits
# of the rule text>, so that one name in two locations keeps two counters)
sub rule_keys {
    my ($rule) = @_;
    return sort @{ redis_cmd('KEYS', "psd:{fr:*}:$rule.*") };
}

# MONITOR on a connection of its own: monitor_start() returns the socket,
# monitor_commands($sock) the client commands seen since, as [client
# address, lower-case command name] pairs (commands that scripts run, shown
# as "[0 lua]", are left out).
sub monitor_start {
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => redis_port(),
                                Proto => 'tcp', Timeout => 5) or die "monitor: $@";
    print {$s} "MONITOR\r\n";
    my ($ok, $sel) = ('', IO::Select->new($s));
    until ($ok =~ /\r\n/) {
        $sel->can_read(5) && sysread($s, $ok, 64, length $ok) or die "MONITOR: no answer\n";
    }
    $ok =~ /^\+OK\r\n/ or die "MONITOR: $ok";
    return $s;
}

sub monitor_commands {
    my ($s) = @_;
    my $buf = '';
    my $sel = IO::Select->new($s);
    while ($sel->can_read(0.3)) {
        sysread($s, $buf, 65536, length $buf) or last;
    }
    my @c;
    push @c, [$1, lc $2] while $buf =~ /^\+[\d.]+ \[\d+ ([\d.:]+)\] "(\w+)"/mg;
    return @c;
}

sub file_lines { open my $f, '<', $_[0] or return (); return <$f> }

# one RESP command off the front of $$buf: an array ref, or undef if it
# is not complete yet
sub take_command {
    my ($buf) = @_;
    $$buf =~ /\A\*(\d+)\r\n/ or return undef;
    my ($n, $pos, @a) = ($1, length $&);
    for (1 .. $n) {
        substr($$buf, $pos) =~ /\A\$(\d+)\r\n/ or return undef;
        my $l = $1;
        $pos += length $&;
        return undef if length($$buf) < $pos + $l + 2;
        push @a, substr $$buf, $pos, $l;
        $pos += $l + 2;
    }
    substr $$buf, 0, $pos, '';
    return \@a;
}

# A fake Redis that answers the fraud commands with zeros and writes
# "<read number> <command>" lines to $file: commands that arrive in one
# read of the socket share the number.
sub fake_fraud_redis {
    my ($file) = @_;
    fake_redis_start(sub {
        my ($sock) = @_;
        open my $log, '>>', $file or die "$file: $!";
        $log->autoflush(1);
        my ($buf, $nread) = ('', 0);
        while (sysread $sock, $buf, 65536, length $buf) {
            $nread++;
            while (my $cmd = take_command(\$buf)) {
                my $c = uc $cmd->[0];
                print {$log} "$nread $c\n";
                if ($c eq 'SCRIPT') {
                    print {$sock} '$40' . "\r\n" . Digest::SHA::sha1_hex($cmd->[2]) . "\r\n";
                } elsif ($c eq 'EVALSHA') {
                    print {$sock} "*$cmd->[2]\r\n" . ":0\r\n" x $cmd->[2];
                } elsif ($c eq 'SMISMEMBER') {
                    my $n = @$cmd - 2;
                    print {$sock} "*$n\r\n" . ":0\r\n" x $n;
                } elsif ($c eq 'SISMEMBER') {
                    print {$sock} ":0\r\n";
                } else {
                    print {$sock} "+PONG\r\n";
                }
            }
        }
    });
}

run_tests();

__DATA__

=== TEST 1: count() of requests, block: 403 payment_blocked, rule only in the log, variables, per-key counters
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    psd_fraud_rule burst "count() by $http_x_user over 1h > 2" block;
    location /pay/ {
        psd_fraud on;
        add_header X-Decision $psd_fraud_decision always;
        add_header X-Rule $psd_fraud_rule always;
    }
    location = /metrics { psd_metrics; }
--- user_files
>>> pay/ok.txt
paid
--- check
my $block0 = decision_metric('block');
my $pass0 = decision_metric('pass');
my @r = map { get('/pay/ok.txt', 'X-User' => 'u1') } 1 .. 4;
is_deeply [map { $_->{status} } @r], [200, 200, 403, 403], 'u1: two pass, the third is blocked';
is $r[0]{body}, "paid\n", 'passed: the file';
is $r[0]{headers}{'x-decision'}, 'pass', '$psd_fraud_decision pass';
ok !defined $r[0]{headers}{'x-rule'}, '$psd_fraud_rule empty on pass';
is $r[2]{body}, qq({"error":"payment_blocked"}\n), 'blocked: payment_blocked';
is $r[2]{headers}{'content-type'}, 'application/json', 'blocked: JSON';
unlike join('', $r[2]{body}, map { "$_: $r[2]{headers}{$_}\n" } grep { $_ ne 'x-rule' }
    keys %{ $r[2]{headers} }), qr/burst/, 'the client never learns the rule name';
is $r[2]{headers}{'x-decision'}, 'block', '$psd_fraud_decision block';
is $r[2]{headers}{'x-rule'}, 'burst', '$psd_fraud_rule burst';
is get('/pay/ok.txt', 'X-User' => 'u2')->{status}, 200, 'another key has its own counter';
is decision_metric('block') - $block0, 2, 'decisions_total{block} +2';
is decision_metric('pass') - $pass0, 3, 'decisions_total{pass} +3';
my $r = get('/pay/ok.txt');
is $r->{status}, 200, 'empty key: not evaluated';
is $r->{headers}{'x-decision'}, 'pass', 'empty key: pass';
my @k = rule_keys('burst');
is scalar @k, 2, 'one key per user (u1, u2), none for the empty key';
like $_, qr/^psd:\{fr:[A-Za-z0-9_-]{22}\}:burst\.[0-9a-f]{8}$/, "key name $_" for @k;
is redis_cmd('TYPE', $k[0]), 'hash', 'count(): a hash of buckets';
my $sum = 0;
for my $k (@k) { $sum += $_ for @{ redis_cmd('HVALS', $k) } }
is $sum, 5, 'blocked requests keep counting (4 + 1)';
--- error_log
psd_fraud: blocked by rule "burst"
--- no_error_log
[error]
[warn]



=== TEST 2: count(payment_failed) fed through psd_fraud_admin; payment_succeeded; several keys
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    psd_fraud_rule failed_per_card "count(payment_failed) by $http_x_card over 1h >= 2" block;
    psd_fraud_rule failed_per_card_ip "count(payment_failed) by $http_x_card, $remote_addr over 1h >= 5" block;
    psd_fraud_rule good_customer "count(payment_succeeded) by $http_x_card over 1d >= 1" allow;
    psd_fraud_api_key $TEST_NGINX_CONF_DIR/keys/api;
    location /pay/ {
        psd_fraud on;
        add_header X-Rule $psd_fraud_rule always;
    }
    location = /fraud/admin { psd_fraud_admin; }
    location = /metrics { psd_metrics; }
--- user_files
>>> pay/ok.txt
paid
--- check
my $fb0 = metric('psd_fraud_admin_requests_total');
my $fail = '{"event":"payment_failed","keys":{"http_x_card":"c1"}}';
for (1 .. 3) {
    is get('/pay/ok.txt', 'X-Card' => 'c1')->{status}, 200, "request $_: a request only peeks";
}
my $r = admin($fail);
is $r->{status}, 200, 'payment_failed: 200';
is $r->{headers}{'content-type'}, 'application/json', 'admin: JSON';
is $r->{body}, qq({"recorded":1}\n), 'recorded for the one rule with all its keys';
is get('/pay/ok.txt', 'X-Card' => 'c1')->{status}, 200, 'one failure: passes';
is admin($fail)->{body}, qq({"recorded":1}\n), 'second failure recorded';
$r = get('/pay/ok.txt', 'X-Card' => 'c1');
is $r->{status}, 403, 'two failures: blocked';
is $r->{headers}{'x-rule'}, 'failed_per_card', 'by failed_per_card';
is get('/pay/ok.txt', 'X-Card' => 'c2')->{status}, 200, 'another card passes';

# both keys of the second rule: "remote_addr" as the variable is named
$r = admin('{"event":"payment_failed","keys":{"http_x_card":"c3","remote_addr":"127.0.0.1"}}');
is $r->{body}, qq({"recorded":2}\n), 'both failure rules recorded';
is get('/pay/ok.txt', 'X-Card' => 'c3')->{status}, 200, 'c3: one failure';
admin($_) for ('{"event":"payment_failed","keys":{"http_x_card":"c4","remote_addr":"127.0.0.1"}}') x 5;
$r = get('/pay/ok.txt', 'X-Card' => 'c4');
is $r->{status}, 403, 'c4 from this address: blocked';
is admin('{"event":"payment_failed","keys":{"remote_addr":"127.0.0.1"}}')->{body},
    qq({"recorded":0}\n), 'no rule has all its keys: recorded 0';
is admin('{"event":"payment_failed","keys":{"http_x_card":""}}')->{body},
    qq({"recorded":0}\n), 'empty value: recorded 0';

# payment_succeeded feeds only the rules that count it: allow wins over block
is admin('{"event":"payment_succeeded","keys":{"http_x_card":"c1"}}')->{body},
    qq({"recorded":1}\n), 'payment_succeeded recorded once';
$r = get('/pay/ok.txt', 'X-Card' => 'c1');
is $r->{status}, 200, 'c1 has paid before: allow wins over the block';
is $r->{headers}{'x-rule'}, 'good_customer', 'decided by good_customer';
is metric('psd_fraud_admin_requests_total') - $fb0, 9,
    'admin_requests_total counts the calls that recorded something';
my @k = rule_keys('failed_per_card');
is scalar @k, 3, 'failed_per_card: keys of c1, c3, c4';
--- no_error_log
[error]



=== TEST 3: the admin endpoint: method, bearer, JSON and field errors
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    psd_fraud_rule f "count(payment_failed) by $http_x_card over 1h >= 2" block;
    location = /fraud/admin {
        psd_fraud_admin;
        psd_fraud_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- check
my $ok = '{"event":"payment_failed","keys":{"http_x_card":"c1"}}';
my $r = http_get('/fraud/admin');
is $r->{status}, 405, 'GET: 405';
is json_body($r)->{error}, 'method_not_allowed', 'GET: method_not_allowed';
$r = admin($ok, token => undef);
is $r->{status}, 401, 'no bearer: 401';
is json_body($r)->{error}, 'unauthorized', 'no bearer: unauthorized';
is admin($ok, token => 'psd-test-api-key-Zq8sT3vW1xY6')->{status}, 401, 'wrong key: 401';
is admin($ok, auth => "Basic $API_KEY")->{status}, 401, 'not Bearer: 401';
is admin($ok, auth => "bearer $API_KEY")->{status}, 200, 'the scheme is case-insensitive';
for my $c (['{"event":', 'invalid_json'], ['[1,2]', 'invalid_json'], ['', 'invalid_json'],
           ['{"event":"payment_failed","event":"x"}', 'invalid_json'],
           ['{"event":"refund","keys":{"http_x_card":"c1"}}', 'invalid_field'],
           ['{"event":7,"keys":{}}', 'invalid_field'],
           ['{"event":"payment_failed","keys":["c1"]}', 'invalid_field'],
           ['{"event":"payment_failed"}', 'invalid_field'],
           ['{"blocklist":"phone","add":"1"}', 'invalid_field'],
           ['{"blocklist":"ip","add":"not-an-address"}', 'invalid_field'],
           ['{"blocklist":"ip","add":"10.0.0.0/33"}', 'invalid_field'],
           ['{"blocklist":"email","add":""}', 'invalid_field'],
           ['{"blocklist":"email"}', 'invalid_field'],
           ['{"blocklist":"email","add":' . JSON::PP::encode_json(['x' x 513]) =~ s/^\[|\]$//gr . '}', 'invalid_field'],
           ['{}', 'invalid_field'])
{
    $r = admin($c->[0]);
    is $r->{status}, 400, "$c->[0]: 400";
    is json_body($r)->{error}, $c->[1], "$c->[0]: $c->[1]";
}
is json_body(admin('{}'))->{field}, 'event|blocklist', 'invalid_field names the field';
is redis_cmd('DBSIZE'), 1, 'only the one good event was recorded';
# bodies up to 16 KiB are read (into memory, whatever client_body_buffer_size)
my $r14 = admin($ok . ' ' x (14000 - length $ok));
is $r14->{status}, 200, 'a body of 14000 bytes: 200';
is $r14->{body}, qq({"recorded":1}\n), 'a body of 14000 bytes: recorded';
is admin($ok . ' ' x (16384 - length $ok))->{status}, 200, 'a body of 16384 bytes: 200';
$r = admin($ok . ' ' x (16385 - length $ok));
is $r->{status}, 413, 'a body of 16385 bytes: 413';
is json_body($r)->{error}, 'body_too_large', 'body_too_large';
--- no_error_log
[error]



=== TEST 4: distinct() counts different values; members are digests
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location /pay/ {
        psd_fraud_rule cards_per_user "distinct($http_x_card) by $http_x_user over 1h > 2" block;
        psd_fraud on;
    }
--- user_files
>>> pay/ok.txt
paid
--- check
my @seq = (['c1', 200], ['c2', 200], ['c1', 200], ['c2', 200], ['c3', 403], ['c1', 403]);
for (@seq) {
    is get('/pay/ok.txt', 'X-User' => 'u1', 'X-Card' => $_->[0])->{status}, $_->[1],
        "u1 with card $_->[0]: $_->[1]";
}
is get('/pay/ok.txt', 'X-User' => 'u2', 'X-Card' => 'c3')->{status}, 200, 'u2: its own set';
my ($k) = grep { @{ redis_cmd('ZRANGE', $_, 0, -1) } == 3 } rule_keys('cards_per_user');
ok $k, 'u1: a sorted set of three members';
is redis_cmd('TYPE', $k), 'zset', 'distinct: a sorted set';
my $m = redis_cmd('ZRANGE', $k, 0, -1);
is scalar(grep { /^[A-Za-z0-9_-]{22}$/ } @$m), 3, 'members are 22-character digests';
ok !(grep { /c\d/ } @$m), 'no raw value among the members';
my $ttl = redis_cmd('TTL', $k);
ok $ttl > 3500 && $ttl <= 3600, "a distinct key expires one window after its last write (TTL $ttl)";
--- no_error_log
[error]



=== TEST 5: sum() of an amount argument: non-integer amounts add nothing; review reaches the upstream; no raw e-mail in Redis
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location /pay/ {
        psd_fraud_rule big_spender "sum($arg_amount) by $http_x_email over 1h > 1000" review;
        psd_fraud on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/echo/;
        add_header X-Decision $psd_fraud_decision always;
        add_header X-Rule $psd_fraud_rule always;
    }
    location /echo/ {
        return 200 "fraud=$http_x_psd_fraud";
    }
--- check
my $email = 'alice@example.com';
my @seq = (['600', ''], ['12.50', ''], ['abc', ''], ['-5', ''], ['', ''], ['1e3', ''],
           ['99999999999999999999', ''], ['300', ''], ['200', 'review; rule=big_spender'],
           ['0', 'review; rule=big_spender']);
for (@seq) {
    my $r = get("/pay/x?amount=$_->[0]", 'X-Email' => $email);
    is $r->{status}, 200, "amount '$_->[0]': 200";
    is $r->{body}, "fraud=$_->[1]", "amount '$_->[0]': upstream sees '$_->[1]'";
}
my $r = get('/pay/x?amount=200', 'X-Email' => $email);
is $r->{headers}{'x-decision'}, 'review', '$psd_fraud_decision review';
is $r->{headers}{'x-rule'}, 'big_spender', '$psd_fraud_rule big_spender';
ok !defined $r->{headers}{'x-psd-fraud'}, 'the client does not get the header';
is get('/pay/x?amount=999', 'X-Email' => 'bob@example.com')->{body}, 'fraud=',
    'another e-mail: its own sum';
my @k = rule_keys('big_spender');
is scalar @k, 2, 'one key per e-mail';
my %sums;
for my $k (@k) { my $s = 0; $s += $_ for @{ redis_cmd('HVALS', $k) }; $sums{$s} = 1 }
is_deeply [sort { $a <=> $b } keys %sums], [999, 1300], 'sums: 600 + 300 + 200 + 200, and 999';
my @all = @{ redis_cmd('KEYS', '*') };
ok !(grep { /alice|bob|example|@/ } @all), 'no key name holds an e-mail address'
    or diag "@all";
--- no_error_log
[error]



=== TEST 6: actions: review < challenge < block, allow wins over all; psd_fraud_block_status 402; metrics
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    psd_fraud_rule r_review "count() by $http_x_user over 1h >= 1" review;
    psd_fraud_rule r_challenge "count() by $http_x_ch over 1h >= 1" challenge;
    psd_fraud_rule r_block "count() by $http_x_bl over 1h >= 1" block;
    psd_fraud_rule staff "count() by $http_x_staff over 1h >= 0" allow;
    location /pay/ {
        psd_fraud on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/echo/;
        add_header X-Decision $psd_fraud_decision always;
        add_header X-Rule $psd_fraud_rule always;
    }
    location /pay402/ {
        psd_fraud on;
        psd_fraud_block_status 402;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/echo/;
    }
    location /echo/ {
        return 200 "fraud=$http_x_psd_fraud";
    }
    location = /metrics { psd_metrics; }
--- check
my @cases = (
    [{}, 200, 'pass', undef, 'fraud='],
    [{'X-User' => 'u'}, 200, 'review', 'r_review', 'fraud=review; rule=r_review'],
    [{'X-User' => 'u', 'X-Ch' => 'c'}, 200, 'challenge', 'r_challenge', 'fraud=challenge; rule=r_challenge'],
    [{'X-Ch' => 'c', 'X-User' => 'u'}, 200, 'challenge', 'r_challenge', 'fraud=challenge; rule=r_challenge'],
    [{'X-User' => 'u', 'X-Ch' => 'c', 'X-Bl' => 'b'}, 403, 'block', 'r_block', qq({"error":"payment_blocked"}\n)],
    [{'X-User' => 'u', 'X-Ch' => 'c', 'X-Bl' => 'b', 'X-Staff' => 's'}, 200, 'allow', 'staff', 'fraud='],
    [{'X-Staff' => 's'}, 200, 'allow', 'staff', 'fraud='],
);
my %m0;
for my $c (@cases) {
    # (counted from the second case on: the first has no key at all)
    %m0 = map { $_ => decision_metric($_) } qw(pass allow review challenge block) if $c == $cases[1];
    my ($h, $status, $decision, $rule, $body) = @$c;
    my $name = join(',', sort keys %$h) || 'no header';
    my $r = get('/pay/x', %$h);
    is $r->{status}, $status, "$name: $status";
    is $r->{headers}{'x-decision'}, $decision, "$name: decision $decision";
    is $r->{headers}{'x-rule'}, $rule, "$name: rule " . ($rule // 'none');
    is $r->{body}, $body, "$name: body";
}
my $r = get('/pay402/x', 'X-Bl' => 'b');
is $r->{status}, 402, 'psd_fraud_block_status 402';
is $r->{body}, qq({"error":"payment_blocked"}\n), '402: payment_blocked';
is get('/pay402/x', 'X-User' => 'u')->{body}, 'fraud=review; rule=r_review', '402 location: review passes';
my %d = map { $_ => decision_metric($_) - $m0{$_} } keys %m0;
is_deeply \%d, { pass => 0, allow => 2, review => 2, challenge => 2, block => 2 },
    'decisions_total by decision';
--- error_log
psd_fraud: blocked by rule "r_block"
--- no_error_log
[error]



=== TEST 7: a client cannot forge X-PSD-Fraud for the application
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    psd_fraud_rule r_review "count() by $http_x_user over 1h >= 2" review;
    location /pay/ {
        psd_fraud on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/echo/;
    }
    location /echo/ {
        return 200 "fraud=$http_x_psd_fraud";
    }
--- request eval
["GET /pay/x", "GET /pay/x", "GET /pay/x"]
--- more_headers
X-User: mallory
X-PSD-Fraud: allow; rule=none
--- response_body eval
["fraud=", "fraud=review; rule=r_review", "fraud=review; rule=r_review"]
--- no_error_log
[error]



=== TEST 8: IP block list: a CIDR covering 127.0.0.1, a bare address, removal, IPv6
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    psd_fraud_api_key $TEST_NGINX_CONF_DIR/keys/api;
    location /pay/ {
        psd_fraud_blocklist ip $remote_addr;
        psd_fraud on;
        add_header X-Rule $psd_fraud_rule always;
    }
    location /pay6/ {
        psd_fraud_blocklist ip $http_x_ip;
        psd_fraud on;
        add_header X-Rule $psd_fraud_rule always;
    }
    location = /fraud/admin { psd_fraud_admin; }
--- user_files
>>> pay/ok.txt
paid
>>> pay6/ok.txt
paid
--- check
is get('/pay/ok.txt')->{status}, 200, 'empty list: passes';
my $r = admin('{"blocklist":"ip","add":"10.0.0.0/8"}');
is $r->{status}, 200, 'add 10.0.0.0/8';
is $r->{body}, qq({"recorded":1}\n), 'add: recorded 1';
is get('/pay/ok.txt')->{status}, 200, 'another network: passes';
is admin('{"blocklist":"ip","add":"127.0.0.0/8"}')->{status}, 200, 'add 127.0.0.0/8';
$r = get('/pay/ok.txt');
is $r->{status}, 403, '127.0.0.1 inside 127.0.0.0/8: blocked';
is $r->{headers}{'x-rule'}, 'blocklist_ip', '$psd_fraud_rule blocklist_ip';
is $r->{body}, qq({"error":"payment_blocked"}\n), 'payment_blocked';
is admin('{"blocklist":"ip","remove":"127.0.0.0/8"}')->{status}, 200, 'remove 127.0.0.0/8';
is get('/pay/ok.txt')->{status}, 200, 'removed: passes again';
is admin('{"blocklist":"ip","add":"127.0.0.1"}')->{status}, 200, 'add a bare address';
is get('/pay/ok.txt')->{status}, 403, 'bare address: blocked';
is_deeply [sort @{ redis_cmd('SMEMBERS', 'psd:{bl:ip}') }], ['10.0.0.0/8', '127.0.0.1'],
    'stored in canonical form (a host without /32)';
for my $v ('127.0.0.1/32', '127.1.2.3/8', '010.0.0.0/8') {
    is admin(qq({"blocklist":"ip","remove":"$v"}))->{status}, 400, "non-canonical $v: 400";
}
is admin('{"blocklist":"ip","remove":"127.0.0.1"}')->{status}, 200, 'remove the address';
is get('/pay/ok.txt')->{status}, 200, 'passes again';
# IPv6, from a header
is admin('{"blocklist":"ip","add":"2001:db8::/32"}')->{status}, 200, 'add 2001:db8::/32';
is get('/pay6/ok.txt', 'X-Ip' => '2001:db8:1::7')->{status}, 403, 'IPv6 inside: blocked';
is get('/pay6/ok.txt', 'X-Ip' => '2001:db9::7')->{status}, 200, 'IPv6 outside: passes';
is get('/pay6/ok.txt', 'X-Ip' => '10.1.2.3')->{status}, 403, 'IPv4 in 10/8: blocked';
is get('/pay6/ok.txt', 'X-Ip' => 'garbage')->{status}, 200, 'not an address: not checked';
is get('/pay6/ok.txt')->{status}, 200, 'empty value: not checked';
--- no_error_log
[error]



=== TEST 9: e-mail and fingerprint block lists compare exact values, stored as digests
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    psd_fraud_api_key $TEST_NGINX_CONF_DIR/keys/api;
    location /pay/ {
        psd_fraud_blocklist email $http_x_email;
        psd_fraud_blocklist fingerprint $http_x_card;
        psd_fraud on;
        add_header X-Rule $psd_fraud_rule always;
    }
    location = /fraud/admin { psd_fraud_admin; }
--- user_files
>>> pay/ok.txt
paid
--- check
is admin('{"blocklist":"email","add":"mallory@example.com"}')->{status}, 200, 'add an e-mail';
is admin('{"blocklist":"fingerprint","add":"fp_bad"}')->{status}, 200, 'add a fingerprint';
my $r = get('/pay/ok.txt', 'X-Email' => 'mallory@example.com');
is $r->{status}, 403, 'listed e-mail: blocked';
is $r->{headers}{'x-rule'}, 'blocklist_email', 'rule blocklist_email';
is get('/pay/ok.txt', 'X-Email' => 'Mallory@example.com')->{status}, 200, 'exact comparison';
is get('/pay/ok.txt', 'X-Email' => 'alice@example.com')->{status}, 200, 'other e-mail passes';
$r = get('/pay/ok.txt', 'X-Card' => 'fp_bad', 'X-Email' => 'alice@example.com');
is $r->{status}, 403, 'listed fingerprint: blocked';
is $r->{headers}{'x-rule'}, 'blocklist_fingerprint', 'rule blocklist_fingerprint';
is get('/pay/ok.txt')->{status}, 200, 'no values: passes';
my $m = redis_cmd('SMEMBERS', 'psd:{bl:email}');
is scalar @$m, 1, 'one e-mail in the list';
like $m->[0], qr/^[A-Za-z0-9_-]{22}$/, 'stored as a digest';
my @all = (@{ redis_cmd('KEYS', '*') }, @$m, @{ redis_cmd('SMEMBERS', 'psd:{bl:fingerprint}') });
ok !(grep { /mallory|example|@|fp_bad/ } @all), 'no raw value in Redis';
is admin('{"blocklist":"email","remove":"mallory@example.com"}')->{status}, 200, 'remove';
is get('/pay/ok.txt', 'X-Email' => 'mallory@example.com')->{status}, 200, 'removed: passes';
--- no_error_log
[error]



=== TEST 10: windows slide: a 2 s window forgets, key lifetimes follow the window
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location /pay/ {
        psd_fraud_rule short "count() by $http_x_user over 2s >= 3" block;
        psd_fraud_rule hourly "count() by $http_x_user over 1h > 1000" block;
        psd_fraud_rule daily_sum "sum($arg_amount) by $http_x_user over 1d > 1000000" review;
        psd_fraud on;
    }
--- user_files
>>> pay/ok.txt
paid
--- check
my @s = map { get('/pay/ok.txt?amount=5', 'X-User' => 'w')->{status} } 1 .. 3;
is_deeply \@s, [200, 200, 403], 'third request inside 2 s: blocked';
my ($short) = rule_keys('short');
my $pttl = redis_cmd('PTTL', $short);
ok $pttl > 0 && $pttl <= 3000, "2 s window: key lives (60 + 1) buckets of 1 s at most: 3 s (PTTL $pttl)";
my ($hourly) = rule_keys('hourly');
my $ttl = redis_cmd('TTL', $hourly);
ok $ttl > 3600 && $ttl <= 3660, "1 h window: 61 buckets of 60 s (TTL $ttl)";
my ($daily) = rule_keys('daily_sum');
$ttl = redis_cmd('TTL', $daily);
ok $ttl > 86400 && $ttl <= 87840, "1 d window: 61 buckets of 1440 s (TTL $ttl)";
ok scalar(@{ redis_cmd('HKEYS', $hourly) }) <= 2, 'one bucket field (two at a boundary)';
# wait for the window (and the extra bucket) to pass
my $gone = wait_until(sub { !redis_cmd('EXISTS', $short) }, 5);
ok $gone, 'the short key expired';
is get('/pay/ok.txt', 'X-User' => 'w')->{status}, 200, 'after the window: passes again';
--- no_error_log
[error]



=== TEST 11: rules of one name in two locations keep their own counters
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location /hourly/ {
        psd_fraud_rule velocity "count() by $http_x_user over 1h > 100" block;
        psd_fraud on;
    }
    location /daily/ {
        psd_fraud_rule velocity "count() by $http_x_user over 1d >= 3" block;
        psd_fraud on;
    }
--- user_files
>>> hourly/ok.txt
ok
>>> daily/ok.txt
ok
--- check
# the hourly rule must neither drop the daily rule's counts (its buckets
# look too old to it) nor add its own requests to them
my @s = map { get("/$_/ok.txt", 'X-User' => 'u')->{status} } qw(daily daily hourly daily);
is_deeply \@s, [200, 200, 200, 403], 'the third daily request is blocked';
@s = map { get("/$_/ok.txt", 'X-User' => 'v')->{status} } qw(hourly hourly hourly daily daily);
is_deeply \@s, [200, 200, 200, 200, 200], 'hourly requests do not count for the daily rule';
--- no_error_log
[error]



=== TEST 12: one round trip per request: one EVALSHA per key group, one check per block list, nothing else
--- no_cluster: MONITOR of the single redis-server (redis_port())
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location /pay/ {
        psd_fraud_rule a "count() by $remote_addr over 1h > 100" block;
        psd_fraud_rule b "distinct($http_x_card) by $remote_addr over 1h > 100" block;
        psd_fraud_rule c "count(payment_failed) by $http_x_card over 1d >= 3" block;
        psd_fraud_rule d "distinct($http_x_email) by $http_x_card over 7d > 50" challenge;
        psd_fraud_rule e "sum($arg_amount) by $http_x_email over 24h > 100000" review;
        psd_fraud_blocklist ip $remote_addr;
        psd_fraud_blocklist email $http_x_email;
        psd_fraud on;
    }
--- user_files
>>> pay/ok.txt
paid
--- check
my %h = ('X-Card' => 'fp1', 'X-Email' => 'a@example.com');
is get('/pay/ok.txt?amount=10', %h)->{status}, 200, 'warm up (connection and scripts)';
my $mon = monitor_start();
is get('/pay/ok.txt?amount=10', %h)->{status}, 200, 'five rules: 200';
my @c = monitor_commands($mon);
my %n;
$n{ $_->[1] }++ for @c;
is_deeply \%n, { evalsha => 3, smismember => 1, sismember => 1 },
    'three key groups ($remote_addr, $http_x_card, $http_x_email): 3 EVALSHA, one check per list'
    or diag explain \@c;
my %from = map { $_->[0] => 1 } @c;
is scalar keys %from, 1, 'all on one connection';
# an empty key skips its group; the list check is replaced by a PING
is get('/pay/ok.txt?amount=10', 'X-Card' => 'fp1')->{status}, 200, 'no e-mail: 200';
%n = ();
$n{ $_->[1] }++ for monitor_commands($mon);
is_deeply \%n, { evalsha => 2, smismember => 1, ping => 1 },
    'no e-mail: 2 EVALSHA, a PING keeps the reply positions';
close $mon;
--- no_error_log
[error]



=== TEST 13: one write per request: all of a request's commands arrive in one read
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT timeout=2s;
--- config
    location /pay/ {
        psd_fraud_rule a "count() by $remote_addr over 1h > 100" block;
        psd_fraud_rule b "distinct($http_x_card) by $remote_addr over 1h > 100" block;
        psd_fraud_rule c "count(payment_failed) by $http_x_card over 1d >= 3" block;
        psd_fraud_rule d "distinct($http_x_email) by $http_x_card over 7d > 50" challenge;
        psd_fraud_rule e "sum($arg_amount) by $http_x_email over 24h > 100000" review;
        psd_fraud_blocklist ip $remote_addr;
        psd_fraud_blocklist email $http_x_email;
        psd_fraud on;
    }
--- user_files
>>> pay/ok.txt
paid
--- init
# (started after nginx: the worker's first connection attempts are refused)
fake_fraud_redis("$ENV{TEST_NGINX_SERVROOT}/redis/commands.log");
--- check
my $log = "$ENV{TEST_NGINX_SERVROOT}/redis/commands.log";
ok wait_until(sub { grep { /SCRIPT/ } file_lines($log) }, 8), 'the worker connected and loaded its script';
my $before = () = file_lines($log);
my %h = ('X-Card' => 'fp1', 'X-Email' => 'a@example.com');
is get('/pay/ok.txt?amount=10', %h)->{status}, 200, 'five rules: 200';
my @l = (file_lines($log))[$before .. $before + 10];
@l = grep { defined } @l;
chomp @l;
is scalar @l, 5, 'five commands' or diag "@l";
my %reads = map { (split ' ')[0] => 1 } @l;
is scalar keys %reads, 1, 'all in one read: one write, one round trip' or diag join ', ', @l;
--- no_error_log
psd_fraud: redis answered



=== TEST 14: failure mode open (default): Redis unreachable, the request passes with a warning
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT connect_timeout=200ms timeout=200ms;
--- config
    location /pay/ {
        psd_fraud_rule r "count() by $remote_addr over 1h >= 1" block;
        psd_fraud_blocklist ip $remote_addr;
        psd_fraud on;
        add_header X-Decision $psd_fraud_decision always;
    }
    location = /metrics { psd_metrics; }
--- user_files
>>> pay/ok.txt
paid
--- check
my $m0 = decision_metric('fail_open');
my $r = get('/pay/ok.txt');
is $r->{status}, 200, 'Redis down, open: 200';
is $r->{body}, "paid\n", 'the file';
is decision_metric('fail_open') - $m0, 1, 'decisions_total{fail_open} +1';
--- error_log
rules not evaluated
--- no_error_log
psd_fraud: blocked



=== TEST 15: failure mode closed, for the location and per rule: 503 and Retry-After
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT connect_timeout=200ms timeout=200ms;
--- config
    location /closed/ {
        psd_fraud_rule r "count() by $remote_addr over 1h >= 100" block;
        psd_fraud on;
        psd_fraud_failure_mode closed;
        add_header X-Decision $psd_fraud_decision always;
    }
    location /rule_closed/ {
        psd_fraud_rule r1 "count() by $remote_addr over 1h >= 100" block;
        psd_fraud_rule r2 "count() by $http_x_card over 1h >= 100" block failure_mode=closed;
        psd_fraud on;
    }
    location /rule_open/ {
        psd_fraud_rule r3 "count() by $remote_addr over 1h >= 100" block failure_mode=open;
        psd_fraud on;
        psd_fraud_failure_mode closed;
    }
    location /list_closed/ {
        psd_fraud_blocklist ip $remote_addr;
        psd_fraud on;
        psd_fraud_failure_mode closed;
    }
    location = /metrics { psd_metrics; }
--- user_files
>>> closed/ok.txt
paid
>>> rule_closed/ok.txt
paid
>>> rule_open/ok.txt
paid
>>> list_closed/ok.txt
paid
--- check
my $m0 = decision_metric('fail_closed');
my $r = get('/closed/ok.txt');
is $r->{status}, 503, 'location closed: 503';
is $r->{headers}{'retry-after'}, 1, 'Retry-After: 1';
is json_body($r)->{error}, 'backend_unavailable', 'backend_unavailable';
is $r->{headers}{'x-decision'}, 'error', '$psd_fraud_decision error';
is get('/rule_closed/ok.txt')->{status}, 200, 'the closed rule is not evaluated (empty key): open';
is get('/rule_closed/ok.txt', 'X-Card' => 'c')->{status}, 503, 'rule failure_mode=closed: 503';
is get('/rule_open/ok.txt')->{status}, 200, 'rule failure_mode=open in a closed location: 200';
is get('/list_closed/ok.txt')->{status}, 503, 'block list, closed: 503';
is decision_metric('fail_closed') - $m0, 3, 'decisions_total{fail_closed} +3';
--- no_error_log
psd_fraud: blocked



=== TEST 16: Redis stops answering: the deadline applies, open passes, closed answers 503; recovery
--- no_cluster: stops the single redis-server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
--- config
    location /open/ {
        psd_fraud_rule r "count() by $remote_addr over 1h >= 100" block;
        psd_fraud on;
    }
    location /closed/ {
        psd_fraud_rule r "count() by $remote_addr over 1h >= 100" block;
        psd_fraud on;
        psd_fraud_failure_mode closed;
    }
--- user_files
>>> open/ok.txt
paid
>>> closed/ok.txt
paid
--- check
is get('/open/ok.txt')->{status}, 200, 'healthy: 200';
redis_stop();
my $t0 = time;
my $r = get('/open/ok.txt');
my $dt = time - $t0;
is $r->{status}, 200, 'stopped Redis, open: 200';
ok $dt >= 0.25 && $dt < 2, sprintf 'after the deadline (%.2f s)', $dt;
is get('/closed/ok.txt')->{status}, 503, 'stopped Redis, closed: 503';
redis_cont();
ok wait_until(sub { get('/closed/ok.txt')->{status} == 200 }, 8), 'Redis back: closed passes again';
--- error_log
rules not evaluated
--- no_error_log
[alert]



=== TEST 17: invalid rule: nginx -t names the rule and the column
--- config
    psd_fraud_rule too_fast "count() by $a over 1h = 1" block;
--- must_die
--- error_log
invalid fraud rule "too_fast": expected >, >=, <, <= or == at column 23



=== TEST 18: invalid rule: unknown aggregate at column 1
--- config
    psd_fraud_rule avg_rule "avg($x) by $a over 1h > 1" block;
--- must_die
--- error_log eval
[qr/invalid fraud rule "avg_rule": expected "count", "distinct" or "sum" at column 1\b/]



=== TEST 19: invalid rule: window out of range
--- config
    psd_fraud_rule long "count() by $a over 31d > 1" block;
--- must_die
--- error_log eval
[qr/invalid fraud rule "long": window must be from 1s to 30d at column \d+/]



=== TEST 20: invalid action
--- config
    psd_fraud_rule r "count() by $a over 1h > 1" deny;
--- must_die
--- error_log
invalid action "deny" in fraud rule "r"



=== TEST 21: invalid failure_mode parameter
--- config
    psd_fraud_rule r "count() by $a over 1h > 1" block failure_mode=local;
--- must_die
--- error_log
invalid parameter "failure_mode=local" in fraud rule "r"



=== TEST 22: duplicate rule names
--- config
    psd_fraud_rule r "count() by $a over 1h > 1" block;
    psd_fraud_rule r "count() by $b over 1h > 1" review;
--- must_die
--- error_log
duplicate fraud rule "r"



=== TEST 23: invalid rule name
--- config
    psd_fraud_rule "bad name" "count() by $a over 1h > 1" block;
--- must_die
--- error_log
invalid fraud rule name "bad name"



=== TEST 24: psd_fraud on without rules or block lists
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location / { psd_fraud on; }
--- must_die
--- error_log
"psd_fraud on" without any "psd_fraud_rule" or "psd_fraud_blocklist"



=== TEST 25: psd_fraud_admin without psd_fraud_api_key
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /fraud/admin { psd_fraud_admin; }
--- must_die
--- error_log
"psd_fraud_admin" needs "psd_fraud_api_key"



=== TEST 26: invalid block list kind
--- config
    psd_fraud_blocklist phone $http_x_phone;
--- must_die
--- error_log
invalid block list "phone"



=== TEST 27: psd_fraud_block_status takes 402 or 403 only
--- config
    psd_fraud_block_status 429;
--- must_die
--- error_log
invalid value "429"
