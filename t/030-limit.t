# psd_limit with a healthy Redis: exactness under concurrency (one nginx with
# two workers, and two nginx instances sharing one redis-server), burst with
# and without nodelay, dry_run, empty keys, several zones in one location,
# psd_limit_status, the RateLimit headers, internal redirects and
# subrequests, $psd_limit_status, the metrics, and configuration errors.
#
# Rates are slow (1r/m) where a block counts admissions, so that no token
# comes back while it runs; 2r/s where a block measures the delay.  Timing
# bounds are sanity checks, not benchmarks.  Every block uses its own keys,
# so that it also passes with TEST_NGINX_USE_HUP=1.
#
# Redis failures (open, closed, local) are in t/031-limit-faults.t.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use IO::Socket::IP;
use IO::Select;
use POSIX ();
use Time::HiRes qw(time sleep);

# (--- init and --- check code cannot see this file's lexicals: functions)
my $SERVROOT = $ENV{TEST_NGINX_SERVROOT};
my $SLOW = $ENV{TEST_NGINX_USE_VALGRIND} ? 8 : 1;
sub slow { $SLOW }          # timeout factor under valgrind
sub nworkers { $ENV{TEST_NGINX_USE_VALGRIND} ? 1 : $_[0] }  # valgrind: one process
sub slurp { my $f = shift; open my $fh, '<', $f or return ''; local $/; <$fh> // '' }

# --- helpers for the blocks ---------------------------------------------------

# the worker pids once $n workers run (nginx accepts before it forks them)
sub wait_workers {
    my ($n) = @_;
    my @w;
    for (my $end = time + 5 * $SLOW; time < $end; sleep 0.02) {
        @w = worker_pids();
        last if @w >= ($n // 1);
    }
    return @w;
}

sub get {           # GET on nginx's port with a fresh connection
    my ($path, %o) = @_;
    return http_get($path, undef, %o);
}

sub timed_get {     # (response, seconds it took)
    my $t0 = time;
    my $r = http_get(@_);
    return ($r, time - $t0);
}

sub req { "GET $_[0] HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" }

sub status_counts {     # "200=10 429=40"
    my %n;
    $n{ $_->{status} // 'none' }++ for @_;
    return join ' ', map { "$_=$n{$_}" } sort keys %n;
}

sub header_counts {     # counts of one header's values
    my ($name, @r) = @_;
    my %n;
    $n{ $_->{headers}{$name} // '' }++ for @r;
    return \%n;
}

# Requests to several ports at once: every connection is made and every
# request written before any response is read.  [[port, raw], ...] in,
# responses in the same order out.
sub parallel_to_ports {
    my ($reqs, $timeout) = @_;
    $timeout //= 10 * $SLOW;
    my @c = map {
        my ($port, $raw) = @$_;
        my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port,
                                    Proto => 'tcp', Timeout => 5)
            or die "connect to $port: $@";
        { sock => $s, raw => $raw, in => '' };
    } @$reqs;
    syswrite $_->{sock}, $_->{raw} for @c;
    my $sel = IO::Select->new(map { $_->{sock} } @c);
    my %by = map { fileno($_->{sock}) => $_ } @c;
    for (my $end = time + $timeout; $sel->count && time < $end; ) {
        for my $s ($sel->can_read($end - time)) {
            my $c = $by{ fileno $s };
            my $n = sysread $s, $c->{in}, 65536, length $c->{in};
            next if !defined $n && $!{EAGAIN};
            if (!$n) { $sel->remove($s); close $s; }
        }
    }
    close $_->{sock} for @c;
    return [ map { (PsdTest::HTTP::parse_response($_->{in}))[0] } @c ];
}

sub metrics {       # { "name{labels}" => value } of the psd_limit rows
    my $r = get('/metrics');
    my %m;
    $m{$1} = $2 while ($r->{body} // '') =~ /^(psd_limit_\S+) (\d+)$/mg;
    return \%m;
}

# --- a second nginx, for the block with two nodes -------------------------------

my ($NGINX2, $PORT2);
sub port2 { $PORT2 }

# A copy of the generated nginx.conf on another port, with its own pid and
# logs, started as a child of this test; returns its port.
sub start_second_nginx {
    stop_second_nginx();
    kill_stray_second_nginx();
    $PORT2 //= PsdTest::_free_port();
    my $conf = do { local (@ARGV, $/) = ("$SERVROOT/conf/nginx.conf"); <> };
    my $port = $ENV{TEST_NGINX_SERVER_PORT};
    $conf =~ s/listen 127\.0\.0\.1:$port;/listen 127.0.0.1:$PORT2;/ or die "no listen line\n";
    $conf =~ s{pid logs/nginx\.pid;}{pid logs/nginx2.pid;} or die "no pid line\n";
    $conf =~ s{error_log logs/error\.log}{error_log logs/error2.log} or die "no error_log line\n";
    $conf =~ s{access_log logs/access\.log;}{access_log logs/access2.log;};
    open my $fh, '>', "$SERVROOT/conf/nginx2.conf" or die "nginx2.conf: $!";
    print {$fh} $conf;
    close $fh;
    # started like the harness starts nginx (with the ASan runtime or
    # under valgrind in those modes), its reports in the same logs/
    my @cmd = PsdTest::_nginx_cmd($SERVROOT, 'conf/nginx2.conf');
    my $pid = PsdTest::_spawn("$SERVROOT/logs/stderr2.log", "$SERVROOT/logs", @cmd);
    $NGINX2 = $pid;
    for (my $end = time + 5 * $SLOW; time < $end; sleep 0.02) {
        if (waitpid($pid, POSIX::WNOHANG()) > 0) {
            $NGINX2 = undef;
            die "second nginx exited at startup ($?), see logs/stderr2.log\n";
        }
        return $PORT2 if IO::Socket::IP->new(PeerHost => '127.0.0.1',
            PeerPort => $PORT2, Proto => 'tcp');
    }
    die "second nginx does not listen on $PORT2\n";
}

# QUIT, KILL after 10 s; returns the exit status (-1: it had to be killed)
sub stop_second_nginx {
    my $pid = $NGINX2 or return undef;
    $NGINX2 = undef;
    kill QUIT => $pid;
    for (my $end = time + 10 * $SLOW; time < $end; sleep 0.02) {
        return $? if waitpid($pid, POSIX::WNOHANG()) > 0;
    }
    kill KILL => $pid;
    waitpid $pid, 0;
    return -1;
}

# a second nginx left behind by a run of this file that was killed hard
sub kill_stray_second_nginx {
    for my $stat (glob '/proc/[0-9]*/stat') {
        my ($pid) = $stat =~ m{/proc/(\d+)/};
        my $cmd = do { local (@ARGV, $/) = ("/proc/$pid/cmdline"); eval { <> } } // '';
        next unless $cmd =~ /\Q$SERVROOT\E.*conf\/nginx2\.conf/s;
        kill KILL => $pid;      # its workers exit when their master is gone
    }
}

END { local $?; stop_second_nginx() }

run_tests();

__DATA__

=== TEST 1: exact under concurrency: burst=9 nodelay, 50 parallel requests over 2 workers: 10 pass, 40 are rejected
--- workers: 2
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/m burst=9;
--- config
    location /t/ {
        psd_limit z nodelay;
        add_header X-Limit $psd_limit_status always;
    }
--- user_files
>>> t/a.txt
ok
--- check
my @w = wait_workers(nworkers(2));
is scalar @w, nworkers(2), 'two workers';
my $rs = http_parallel([ map { req('/t/a.txt?k=t1') } 1 .. 50 ]);
is status_counts(@$rs), '200=10 429=40', '10 passed, 40 rejected';
is_deeply header_counts('x-limit', @$rs), { passed => 10, rejected => 40 },
    '$psd_limit_status: passed and rejected';
my @ok = grep { ($_->{status} // 0) == 200 } @$rs;
is_deeply [ map { $_->{body} } @ok ], [ ("ok\n") x 10 ], 'passed requests get the file';
my ($rej) = grep { ($_->{status} // 0) == 429 } @$rs;
is $rej->{body}, qq({"error":"rate_limited"}\n), '429 body';
like $rej->{headers}{'content-type'}, qr{^application/json}, '429 is JSON';
# the shared state: one key, a TAT ten intervals ahead
my $pttl = redis_cmd('PTTL', 'psd:{lim:z:t1}');
ok $pttl > 590_000 && $pttl <= 600_000, "state expires with the bucket ($pttl ms)";
like redis_cmd('GET', 'psd:{lim:z:t1}'), qr/^\d{16}$/, 'TAT in µs';
is_deeply redis_cmd('KEYS', 'psd:*'), ['psd:{lim:z:t1}'], 'one key in Redis';
# another key has its own bucket
$rs = http_parallel([ map { req('/t/a.txt?k=t1b') } 1 .. 12 ]);
is status_counts(@$rs), '200=10 429=2', 'another key: its own 10';
--- error_log
psd_limit: rejected by zone "z"
--- no_error_log
[error]



=== TEST 2: two nginx instances sharing one redis-server admit burst+1 in total
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/m burst=9;
--- config
    location /t/ {
        psd_limit z nodelay;
    }
--- user_files
>>> t/a.txt
ok
--- init
start_second_nginx();
--- check
my $p1 = $ENV{TEST_NGINX_SERVER_PORT};
is get('/t/a.txt?k=warm1')->{status}, 200, 'first nginx serves';
is http_get('/t/a.txt?k=warm2', undef, port => port2())->{status}, 200,
    'second nginx serves';
# 30 requests to each, interleaved, all in flight together
my @reqs = map { [ $_ % 2 ? $p1 : port2(), req('/t/a.txt?k=t2') ] } 1 .. 60;
my $rs = parallel_to_ports(\@reqs);
is status_counts(@$rs), '200=10 429=50', 'two nodes: 10 pass in total';
my @by = map { my $p = $_; [ grep { $reqs[$_][0] == $p } 0 .. $#reqs ] } $p1, port2();
for my $i (0, 1) {
    my @st = map { $rs->[$_]{status} // 0 } @{ $by[$i] };
    ok scalar(grep { $_ == 429 } @st) >= 20,
        'node ' . ($i + 1) . ' rejected its share: ' . status_counts(map { $rs->[$_] } @{ $by[$i] });
}
# one after another, alternating: each node admits its turn, 10 in all
my @alt = map { http_get('/t/a.txt?k=t2s', undef, port => $_ % 2 ? $p1 : port2()) } 1 .. 12;
is_deeply [ map { $_->{status} } @alt ], [ (200) x 10, 429, 429 ],
    'alternating between the nodes: 10 pass, then both reject';
# a bucket emptied on one node is empty on the other
my $r = http_get('/t/a.txt?k=t2', undef, port => port2());
is $r->{status}, 429, 'second node: still limited';
is get('/t/a.txt?k=t2')->{status}, 429, 'first node: still limited';
like $r->{headers}{'retry-after'} // '', qr/^(59|60)$/, 'Retry-After from the shared TAT';
my $st = stop_second_nginx();
is $st, 0, 'second nginx exited cleanly';
my $log2 = slurp("$ENV{TEST_NGINX_SERVROOT}/logs/error2.log");
unlike $log2, qr/\[(alert|crit|emerg)\]/, 'second nginx: no alerts';
like $log2, qr/psd_limit: rejected by zone "z"/, 'second nginx rejected too';



=== TEST 3: nodelay: burst+1 at once, then 429 with RateLimit headers and Retry-After
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/m burst=2;
--- config
    location /t/ {
        psd_limit z nodelay;
        add_header X-Limit $psd_limit_status always;
    }
--- user_files
>>> t/a.txt
ok
--- request eval
[ map { "GET /t/a.txt?k=t3" } 1 .. 5 ]
--- error_code eval
[200, 200, 200, 429, 429]
--- response_headers eval
[ ("X-Limit: passed\n!RateLimit\n!RateLimit-Policy\n!Retry-After") x 3,
  (qq{X-Limit: rejected\nRateLimit-Policy: "z";q=3;w=180}) x 2 ]
--- response_headers_like eval
[ undef, undef, undef,
  (qq{RateLimit: ^"z";r=0;t=(179|180)\$\nRetry-After: ^(59|60)\$}) x 2 ]
--- response_body eval
[ ("ok\n") x 3, (qq({"error":"rate_limited"}\n)) x 2 ]



=== TEST 4: burst=0: one request, then 429
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/m;
--- config
    location /t/ {
        psd_limit z;
    }
--- user_files
>>> t/a.txt
ok
--- request eval
[ "GET /t/a.txt?k=t4", "GET /t/a.txt?k=t4", "HEAD /t/a.txt?k=t4" ]
--- error_code eval
[200, 429, 429]
--- response_headers eval
[ "!RateLimit", qq{RateLimit-Policy: "z";q=1;w=60}, qq{RateLimit-Policy: "z";q=1;w=60} ]
--- response_body eval
[ "ok\n", qq({"error":"rate_limited"}\n), "" ]



=== TEST 5: keep-alive: a rejected request's body is discarded, the next request on the connection is served
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/m;
--- config
    location /t/ { psd_limit z nodelay; }
--- user_files
>>> t/a.txt
ok
--- check
is get('/t/a.txt?k=t4k')->{status}, 200, 'the key is used up';
my $body = 'x' x 5000;
my $raw = "POST /t/a.txt?k=t4k HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n$body"
        . "HEAD /t/a.txt?k=t4k HTTP/1.1\r\nHost: localhost\r\n\r\n"
        . "GET /t/a.txt?k=t4other HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', Proto => 'tcp',
    PeerPort => $ENV{TEST_NGINX_SERVER_PORT}) or die "connect: $@";
print {$s} $raw;
my $in = '';
my $sel = IO::Select->new($s);
for (my $end = time + 5 * slow(); time < $end && $sel->can_read($end - time); ) {
    sysread($s, $in, 65536, length $in) or last;
}
close $s;
my @st = $in =~ m{^HTTP/1\.1 (\d{3})}mg;
is "@st", '429 429 200', 'POST rejected, HEAD rejected, then served on the same connection';
like $in, qr/\{"error":"rate_limited"\}\n.*HTTP\/1\.1 429/s, 'the JSON body, then the next response';
like $in, qr/\r\n\r\nok\n\z/, 'the last response is the file';
--- no_error_log
[error]



=== TEST 6: without nodelay a request inside the burst waits for the rate (2r/s: 500 ms); beyond the burst: 429 at once
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=2r/s burst=2;
--- config
    location /t/ {
        psd_limit z;
        add_header X-Limit $psd_limit_status always;
    }
--- user_files
>>> t/a.txt
ok
--- check
# one after another: the first at once, the next ones one interval apart
my ($r1, $t1) = timed_get('/t/a.txt?k=t5');
my ($r2, $t2) = timed_get('/t/a.txt?k=t5');
my ($r3, $t3) = timed_get('/t/a.txt?k=t5');
is "$r1->{status} $r2->{status} $r3->{status}", '200 200 200', 'all pass';
is $r2->{headers}{'x-limit'}, 'passed', 'a delayed request is "passed"';
ok $t1 < 0.3 * slow(), sprintf 'first at once (%.3f s)', $t1;
ok $t2 >= 0.4 && $t2 < 1.5 * slow(), sprintf 'second delayed ~0.5 s (%.3f s)', $t2;
ok $t3 >= 0.4 && $t3 < 1.5 * slow(), sprintf 'third delayed ~0.5 s (%.3f s)', $t3;
# four at once on a fresh key: 1 now, 2 delayed (0.5 s, 1 s), 1 rejected
my $t0 = time;
my $rs = http_parallel([ map { req('/t/a.txt?k=t5b') } 1 .. 4 ]);
my $t = time - $t0;
is status_counts(@$rs), '200=3 429=1', 'burst+1 pass, the fourth is rejected';
ok $t >= 0.8 && $t < 2.5 * slow(), sprintf 'the last waited ~1 s (%.3f s)', $t;
--- error_log eval
[qr/psd_limit: delaying request for (4\d\d|500) ms/, qr/psd_limit: delaying request for (9\d\d|1000) ms/]
--- no_error_log
[error]



=== TEST 7: a client that leaves while its request is delayed: 499, nginx unharmed
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/s burst=5;
--- config
    location /t/ {
        psd_limit z;
    }
--- user_files
>>> t/a.txt
ok
--- check
my ($w) = wait_workers();
is get('/t/a.txt?k=t6')->{status}, 200, 'first passes';
my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', Proto => 'tcp',
    PeerPort => $ENV{TEST_NGINX_SERVER_PORT}) or die "connect: $@";
print {$s} req('/t/a.txt?k=t6&leaver=1');
sleep 0.2;
close $s;
sleep 0.3;
my $log = slurp("$ENV{TEST_NGINX_SERVROOT}/logs/access.log");
like $log, qr{"GET /t/a\.txt\?k=t6&leaver=1 HTTP/1\.1" 499 }, 'logged as 499 when it left';
my ($r, $t) = timed_get('/t/a.txt?k=t6x');
is $r->{status}, 200, 'nginx still serves';
is_deeply [ worker_pids() ], [$w], 'same worker';
--- no_error_log
[error]



=== TEST 8: dry_run: never rejects nor delays, $psd_limit_status dry_run, info log; a real zone beside it still rejects
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone d key=$arg_k rate=1r/m;
    psd_limit_zone slow key=$arg_k rate=2r/s burst=3;
    psd_limit_zone r key=$arg_k rate=1r/m burst=2;
--- config
    location /dry/ {
        alias html/t/;
        psd_limit d dry_run;
        add_header X-Limit $psd_limit_status always;
    }
    location /dryslow/ {
        alias html/t/;
        psd_limit slow dry_run;
        add_header X-Limit $psd_limit_status always;
    }
    location /both/ {
        alias html/t/;
        psd_limit d dry_run;
        psd_limit r nodelay;
        add_header X-Limit $psd_limit_status always;
    }
--- user_files
>>> t/a.txt
ok
--- check
my @r = map { get('/dry/a.txt?k=t7') } 1 .. 4;
is status_counts(@r), '200=4', 'dry_run: all pass';
is_deeply [ map { $_->{headers}{'x-limit'} } @r ],
    [qw(passed dry_run dry_run dry_run)], '$psd_limit_status';
ok !defined $r[1]{headers}{'ratelimit'}, 'no RateLimit header on a dry-run pass';
# dry_run without nodelay: the burst is not delayed either
my $t0 = time;
my @s = map { get('/dryslow/a.txt?k=t7s') } 1 .. 5;
my $t = time - $t0;
is status_counts(@s), '200=5', 'dry_run slow zone: all pass';
is $s[4]{headers}{'x-limit'}, 'dry_run', 'the fifth would be rejected';
ok $t < 0.4 * slow(), sprintf 'and none waited (%.3f s for 5)', $t;
# a dry-run zone beside a real one: the real one decides
my @b = map { get('/both/a.txt?k=t7b') } 1 .. 4;
is_deeply [ map { $_->{status} } @b ], [200, 200, 200, 429], 'real zone rejects the 4th';
is_deeply [ map { $_->{headers}{'x-limit'} } @b ],
    [qw(passed dry_run dry_run rejected)], 'rejected beats dry_run';
is $b[3]{headers}{'ratelimit-policy'}, '"r";q=3;w=180', 'the real zone speaks';
--- error_log
psd_limit: zone "d" would reject (dry run)
psd_limit: zone "slow" would reject (dry run)
psd_limit: rejected by zone "r"
--- no_error_log
[error]
rejected by zone "d"



=== TEST 9: an empty key is not limited and makes no Redis key; a long key is limited
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/m;
--- config
    location /t/ {
        psd_limit z nodelay;
        add_header X-Limit $psd_limit_status always;
    }
--- user_files
>>> t/a.txt
ok
--- check
my @r = map { get('/t/a.txt') } 1 .. 5;
is status_counts(@r), '200=5', 'no key: never limited';
unlike $r[4]{headers}{'x-limit'} // '', qr/rejected/, 'status is not rejected';
is_deeply redis_cmd('KEYS', '*'), [], 'no state in Redis for an empty key';
is get('/t/a.txt?k=')->{status}, 200, 'empty k= is not limited';
is get('/t/a.txt?k=')->{status}, 200, 'empty k= again';
is get('/t/a.txt?k=t8')->{status}, 200, 'a key: first';
is get('/t/a.txt?k=t8')->{status}, 429, 'a key: limited';
my $long = 'L' x 2000;
is get("/t/a.txt?k=$long")->{status}, 200, 'long key: first';
is get("/t/a.txt?k=$long")->{status}, 429, 'long key: limited';
--- no_error_log
[error]



=== TEST 10: two zones in one location: the tightest decides, one rejection rejects
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone loose key=$arg_u rate=1r/m burst=4;
    psd_limit_zone tight key=$arg_u rate=1r/m burst=1;
    psd_limit_zone perip key=$binary_remote_addr rate=1r/m burst=2;
--- config
    location /t/ {
        psd_limit loose nodelay;
        psd_limit tight nodelay;
        psd_limit_headers on;
    }
    location /ip/ {
        alias html/t/;
        psd_limit loose nodelay;
        psd_limit perip nodelay;
    }
--- user_files
>>> t/a.txt
ok
--- check
my @r = map { get('/t/a.txt?u=t9') } 1 .. 4;
is_deeply [ map { $_->{status} } @r ], [200, 200, 429, 429], 'tight (burst=1) decides';
is $r[0]{headers}{'ratelimit-policy'}, '"tight";q=2;w=120', 'the tightest speaks on a pass';
like $r[0]{headers}{'ratelimit'}, qr/^"tight";r=1;t=\d+$/, 'remaining of the tightest';
is $r[2]{headers}{'ratelimit-policy'}, '"tight";q=2;w=120', 'the rejecting zone speaks';
like $r[2]{headers}{'ratelimit'}, qr/^"tight";r=0;t=(119|120)$/, 'RateLimit on 429';
# per-IP limit under a per-user one: different users, one address
my @s = map { get("/ip/a.txt?u=t9u$_") } 1 .. 4;
is_deeply [ map { $_->{status} } @s ], [200, 200, 200, 429],
    'one address: 3 pass, though each user has room';
is $s[3]{headers}{'ratelimit-policy'}, '"perip";q=3;w=180', 'perip rejected';
--- no_error_log
[error]



=== TEST 11: a rejection by one zone does not use up the other zones of the location
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone account key=$arg_u rate=1r/m burst=4;
    psd_limit_zone perip key=$arg_ip rate=1r/m;
--- config
    location /t/ {
        psd_limit account nodelay;
        psd_limit perip nodelay;
    }
--- user_files
>>> t/a.txt
ok
--- check
# One account (burst=4: 5 requests) used from several addresses, one
# request per minute each.  A flood from one address is rejected by
# "perip"; as with limit_req, those rejected requests must not consume the
# account's quota, or a single abusive address locks the account out for
# every other address.
is get('/t/a.txt?u=acct&ip=a')->{status}, 200, 'address a: first';
is get('/t/a.txt?u=acct&ip=a')->{status}, 429, "address a: $_ rejected" for 1 .. 6;
my @others = map { get("/t/a.txt?u=acct&ip=o$_")->{status} } 1 .. 4;
is_deeply \@others, [200, 200, 200, 200],
    'four other addresses still get the 4 requests left of the account';



=== TEST 12: psd_limit_status 503: nginx's error page, RateLimit headers and Retry-After, not the JSON body
# (limit_req's own default is 503: a rejection must not be taken for the
# fail-closed outage answer, {"error":"backend_unavailable"} + Retry-After: 1)
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/m;
--- config
    location /t/ {
        psd_limit z nodelay;
        psd_limit_status 503;
        add_header X-Limit $psd_limit_status always;
    }
--- user_files
>>> t/a.txt
ok
--- request eval
[ "GET /t/a.txt?k=t11", "GET /t/a.txt?k=t11" ]
--- error_code eval
[200, 503]
--- response_headers eval
[ "X-Limit: passed", qq{X-Limit: rejected\nRateLimit-Policy: "z";q=1;w=60} ]
--- response_headers_like eval
[ undef, "Retry-After: ^(59|60)\$\nContent-Type: ^text/html" ]
--- response_body_like eval
[ qr/^ok$/, qr{<title>503 Service Temporarily Unavailable</title>} ]



=== TEST 13: psd_limit_status 403 with an error_page in a limited location: the internal redirect is not limited again
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/m;
--- config
    psd_limit z nodelay;
    psd_limit_status 403;
    error_page 403 /errors/limited.txt;
    location /t/ { }
    location /errors/ { add_header X-Limit "[$psd_limit_status]" always; }
--- user_files
>>> t/a.txt
ok
>>> errors/limited.txt
slow down
--- request eval
[ "GET /t/a.txt?k=t12", "GET /t/a.txt?k=t12", "GET /t/a.txt?k=t12" ]
--- error_code eval
[200, 403, 403]
--- response_body eval
[ "ok\n", "slow down\n", "slow down\n" ]
--- response_headers eval
[ "!Retry-After", qq{RateLimit-Policy: "z";q=1;w=60}, qq{RateLimit-Policy: "z";q=1;w=60} ]



=== TEST 14: $psd_limit_status survives an internal redirect (error_page, try_files), in headers and in the access log
# (like $limit_req_status, which lives in the request, not in the module
# context that an internal redirect clears)
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/m;
    log_format lim '$request_uri limit=[$psd_limit_status]';
    access_log logs/limit.log lim;
--- config
    psd_limit_status 403;
    error_page 403 /errors/limited.txt;
    location /t/ { psd_limit z nodelay; try_files $uri /errors/fallback.txt; }
    location /errors/ { add_header X-Limit "[$psd_limit_status]" always; }
--- user_files
>>> t/a.txt
ok
>>> errors/limited.txt
slow down
>>> errors/fallback.txt
fallback
--- check
my $r1 = get('/t/missing?k=t13');
is $r1->{body}, "fallback\n", 'try_files fallback served';
is $r1->{headers}{'x-limit'}, '[passed]', 'passed, seen after the try_files redirect';
my $r2 = get('/t/a.txt?k=t13');
is $r2->{status}, 403, 'rejected, error_page';
is $r2->{body}, "slow down\n", 'error page body';
is $r2->{headers}{'x-limit'}, '[rejected]', 'rejected, seen after the error_page redirect';
my $log = '';
for (my $end = time + 2; time < $end && $log !~ /k=t13 limit.*k=t13 limit/s; sleep 0.05) {
    $log = slurp("$ENV{TEST_NGINX_SERVROOT}/logs/limit.log");
}
like $log, qr{^/t/missing\?k=t13 limit=\[passed\]$}m, 'access log: passed';
like $log, qr{^/t/a\.txt\?k=t13 limit=\[rejected\]$}m, 'access log: rejected';



=== TEST 15: a limited location reached only through an internal redirect is limited once (try_files to a named location)
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone app key=$arg_k rate=1r/m burst=1;
--- config
    location /t/ { try_files $uri @app; }
    location @app {
        psd_limit app nodelay;
        add_header X-Limit "[$psd_limit_status]" always;
        try_files /app.txt =404;
    }
--- user_files
>>> app.txt
app
--- check
# try_files $uri @backend is the usual front of an application: its limit
# must hold for requests that reach it this way (as limit_req does: a
# request is limited once, by the first location with limits it meets)
my @r = map { get('/t/route?k=t14') } 1 .. 3;
is $r[0]{body}, "app\n", 'the named location serves';
is_deeply [ map { $_->{status} } @r ], [200, 200, 429], 'burst=1: the third is rejected';
is $r[0]{headers}{'x-limit'}, '[passed]', '$psd_limit_status passed';
is redis_cmd('EXISTS', 'psd:{lim:app:t14}'), 1, 'state in Redis';



=== TEST 16: try_files redirects and SSI subrequests are limited once, as the client request
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/m burst=1;
--- config
    psd_limit z nodelay;
    location /try/ { try_files $uri /fallback.txt; }
    location /ssi/ { ssi on; }
    location / { }
--- user_files
>>> fallback.txt
fallback
>>> ssi/page.html
[<!--# include virtual="/inc.txt?k=t13s" -->|<!--# include virtual="/inc.txt?k=t13s" -->|<!--# include virtual="/inc.txt?k=t13s" -->]
>>> inc.txt
inc
--- check
# try_files: /try/x is limited, /fallback.txt after the redirect is not
my @r = map { get('/try/missing?k=t13') } 1 .. 3;
is_deeply [ map { $_->{status} } @r ], [200, 200, 429], 'limited once per client request';
is $r[0]{body}, "fallback\n", 'fallback served';
# SSI: three subrequests in one page, burst=1 allows two requests
my @s = map { get('/ssi/page.html?k=t13s') } 1 .. 3;
is_deeply [ map { $_->{status} } @s ], [200, 200, 429], 'the page is limited once';
is $s[0]{body}, "[inc\n|inc\n|inc\n]\n", 'every include served';
is $s[1]{body}, "[inc\n|inc\n|inc\n]\n", 'again';
--- no_error_log
[error]



=== TEST 17: psd_limit_headers on: RateLimit-Policy and RateLimit on every pass, exact q, w, r, t
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone h key=$arg_k rate=60r/m burst=4;
--- config
    location /t/ {
        psd_limit h nodelay;
        psd_limit_headers on;
    }
--- user_files
>>> t/a.txt
ok
--- check
# interval 1 s, burst+1 = 5, window 5 s; request n leaves 5-n, full in n s
my @r = map { get('/t/a.txt?k=t14') } 1 .. 6;
for my $n (1 .. 5) {
    my $h = $r[$n - 1]{headers};
    is $r[$n - 1]{status}, 200, "request $n passes";
    is $h->{'ratelimit-policy'}, '"h";q=5;w=5', "request $n: policy";
    my ($rem, $t) = ($h->{ratelimit} // '') =~ /^"h";r=(\d+);t=(\d+)$/;
    is $rem, 5 - $n, "request $n: r=" . (5 - $n);
    ok defined $t && $t >= $n - 1 && $t <= $n, "request $n: t=$n (" . ($t // 'none') . ')';
    ok !defined $h->{'retry-after'}, "request $n: no Retry-After";
}
is $r[5]{status}, 429, 'sixth rejected';
is $r[5]{headers}{'ratelimit-policy'}, '"h";q=5;w=5', 'policy on 429';
like $r[5]{headers}{'ratelimit'}, qr/^"h";r=0;t=[45]$/, 'RateLimit on 429';
is $r[5]{headers}{'retry-after'}, 1, 'Retry-After: 1 (one interval)';
# one header each, not doubled
ok !ref $r[0]{headers}{'ratelimit'} && !ref $r[5]{headers}{'ratelimit-policy'},
    'each header once';
# after one interval one request is back
sleep 1.05;
my $b = get('/t/a.txt?k=t14');
is $b->{status}, 200, 'one interval later: one more';
like $b->{headers}{ratelimit}, qr/^"h";r=0;t=[45]$/, 'and none left';



=== TEST 18: headers on with a delayed request: set once, before the delay
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone h key=$arg_k rate=2r/s burst=2;
--- config
    location /t/ {
        psd_limit h;
        psd_limit_headers on;
    }
--- user_files
>>> t/a.txt
ok
--- request eval
[ "GET /t/a.txt?k=t15", "GET /t/a.txt?k=t15" ]
--- response_headers eval
[ qq{RateLimit-Policy: "h";q=3;w=2}, qq{RateLimit-Policy: "h";q=3;w=2} ]
--- response_headers_like eval
[ qq{RateLimit: ^"h";r=2;t=1\$}, qq{RateLimit: ^"h";r=1;t=1\$} ]



=== TEST 19: limits inherit from server{} unless a location has its own
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone srv key=$arg_k rate=1r/m;
    psd_limit_zone loc key=$arg_k rate=1r/m burst=2;
--- config
    psd_limit srv nodelay;
    location /inh/ { alias html/t/; }
    location /own/ { alias html/t/; psd_limit loc nodelay; }
    location /off/ { alias html/t/; psd_limit_headers on; }
--- user_files
>>> t/a.txt
ok
--- check
is_deeply [ map { get('/inh/a.txt?k=t16a')->{status} } 1 .. 2 ], [200, 429], 'inherited srv';
is_deeply [ map { get('/own/a.txt?k=t16b')->{status} } 1 .. 4 ], [200, 200, 200, 429],
    'own limit replaces the inherited one';
is redis_cmd('EXISTS', 'psd:{lim:srv:t16b}'), 0, 'srv not consulted for /own/';
my $r = get('/off/a.txt?k=t16c');
is $r->{headers}{'ratelimit-policy'}, '"srv";q=1;w=60', 'headers on in a location that inherits';



=== TEST 20: 8 limits in one location work together
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z1 key=$arg_k rate=1r/m burst=8;
    psd_limit_zone z2 key=$arg_k rate=1r/m burst=7;
    psd_limit_zone z3 key=$arg_k rate=1r/m burst=6;
    psd_limit_zone z4 key=$arg_k rate=1r/m burst=5;
    psd_limit_zone z5 key=$arg_k rate=1r/m burst=4;
    psd_limit_zone z6 key=$arg_k rate=1r/m burst=3;
    psd_limit_zone z7 key=$arg_k rate=1r/m burst=2;
    psd_limit_zone z8 key=$arg_j rate=1r/m burst=9;
--- config
    location /t/ {
        psd_limit z1 nodelay; psd_limit z2 nodelay; psd_limit z3 nodelay;
        psd_limit z4 nodelay; psd_limit z5 nodelay; psd_limit z6 nodelay;
        psd_limit z7 nodelay; psd_limit z8 nodelay;
    }
--- user_files
>>> t/a.txt
ok
--- check
my @r = map { get('/t/a.txt?k=t17&j=t17') } 1 .. 4;
is_deeply [ map { $_->{status} } @r ], [200, 200, 200, 429], 'z7 decides';
is $r[3]{headers}{'ratelimit-policy'}, '"z7";q=3;w=180', 'z7 rejected';
is scalar @{ redis_cmd('KEYS', 'psd:*') }, 8, 'eight keys';
my $r = get('/t/a.txt?j=t17b');
is $r->{status}, 200, 'only z8 has a key: passes';



=== TEST 21: metrics: passed, rejected, dry_run, delayed
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/m burst=1;
    psd_limit_zone d key=$arg_k rate=1r/m;
    psd_limit_zone s key=$arg_k rate=10r/s burst=3;
--- config
    location /t/ { psd_limit z nodelay; }
    location /dry/ { alias html/t/; psd_limit d dry_run; }
    location /slow/ { alias html/t/; psd_limit s; }
    location /metrics { psd_metrics; }
--- user_files
>>> t/a.txt
ok
--- check
my $m0 = metrics();
ok exists $m0->{$_}, "row $_" for
    'psd_limit_requests_total{result="passed"}',
    'psd_limit_requests_total{result="rejected"}',
    'psd_limit_requests_total{result="dry_run"}',
    'psd_limit_requests_total{result="fail_open"}',
    'psd_limit_requests_total{result="fail_closed"}',
    'psd_limit_requests_total{result="local"}',
    'psd_limit_delayed_total';
get('/t/a.txt?k=t18') for 1 .. 5;       # 2 passed, 3 rejected
get('/dry/a.txt?k=t18') for 1 .. 3;     # 3 passed, 2 of them dry_run
get('/slow/a.txt?k=t18') for 1 .. 2;    # 2 passed, the second delayed
get('/t/a.txt') for 1 .. 2;             # no key: not a decision
my $m1 = metrics();
my %d = map { $_ => $m1->{$_} - ($m0->{$_} // 0) } keys %$m1;
is $d{'psd_limit_requests_total{result="rejected"}'}, 3, 'rejected +3';
is $d{'psd_limit_requests_total{result="dry_run"}'}, 2, 'dry_run +2';
is $d{'psd_limit_delayed_total'}, 1, 'delayed +1';
# 5 passed outright; the 2 dry-run passes may count as passed too
my $passed = $d{'psd_limit_requests_total{result="passed"}'};
like $passed, qr/^(5|7)$/, "passed +$passed (5, or 7 with the dry-run passes)";
is $d{"psd_limit_requests_total{result=\"$_\"}"}, 0, "$_ +0"
    for qw(fail_open fail_closed local);



=== TEST 22: psd_limit_zone with all parameters, redis= naming a second server, local_size
--- http_config
    psd_redis main 127.0.0.1:1 timeout=100ms;
    psd_redis other 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/m burst=1 nodes=3 redis=other local_size=64k;
--- config
    location /t/ { psd_limit z nodelay; psd_limit_failure_mode closed; }
--- user_files
>>> t/a.txt
ok
--- request eval
[ map { "GET /t/a.txt?k=t19" } 1 .. 3 ]
--- error_code eval
[200, 200, 429]
--- check
is redis_cmd('EXISTS', 'psd:{lim:z:t19}'), 1, 'state in the "other" server';



=== TEST 23: rates per second, minute, hour, day: w and Retry-After follow
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone s key=$arg_k rate=1r/s;
    psd_limit_zone m key=$arg_k rate=2r/m;
    psd_limit_zone h key=$arg_k rate=1r/h burst=1;
    psd_limit_zone d key=$arg_k rate=24r/d;
    psd_limit_zone max key=$arg_k rate=10000r/s burst=100;
--- config
    location /s/ { alias html/t/; psd_limit s nodelay; }
    location /m/ { alias html/t/; psd_limit m nodelay; }
    location /h/ { alias html/t/; psd_limit h nodelay; }
    location /d/ { alias html/t/; psd_limit d nodelay; }
    location /max/ { alias html/t/; psd_limit max nodelay; psd_limit_headers on; }
--- user_files
>>> t/a.txt
ok
--- check
my %want = (s => ['"s";q=1;w=1', 1], m => ['"m";q=1;w=30', 30],
            h => ['"h";q=2;w=7200', 3600], d => ['"d";q=1;w=3600', 3600]);
for my $z (sort keys %want) {
    my $n = $z eq 'h' ? 2 : 1;
    get("/$z/a.txt?k=t20") for 1 .. $n;
    my $r = get("/$z/a.txt?k=t20");
    is $r->{status}, 429, "$z: limited";
    is $r->{headers}{'ratelimit-policy'}, $want{$z}[0], "$z: policy";
    my $ra = $r->{headers}{'retry-after'} // -1;
    ok $ra >= $want{$z}[1] - 1 && $ra <= $want{$z}[1], "$z: Retry-After $ra";
}
my $rs = http_parallel([ map { req('/max/a.txt?k=t20') } 1 .. 120 ]);
my $ok = grep { ($_->{status} // 0) == 200 } @$rs;
ok $ok >= 101, "10000r/s burst=100: $ok of 120 pass";
is $rs->[0]{headers}{'ratelimit-policy'}, '"max";q=101;w=1', '10000r/s: policy';



=== TEST 24: bad rate 10r/x
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=10r/x;
--- must_die
--- error_log
invalid rate "rate=10r/x" in "psd_limit_zone"



=== TEST 25: bad rate 0r/s
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=0r/s;
--- must_die
--- error_log
invalid rate "rate=0r/s"



=== TEST 26: bad rate 100000r/s (above 10000r/s)
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=100000r/s;
--- must_die
--- error_log
invalid rate "rate=100000r/s"



=== TEST 27: bad rate 10 (no unit)
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone a key=$arg_k rate=10;
--- must_die
--- error_log
invalid rate "rate=10"



=== TEST 28: bad rate -1r/s
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone a key=$arg_k rate=-1r/s;
--- must_die
--- error_log
invalid rate "rate=-1r/s"



=== TEST 29: bad rate 1r/ss
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone a key=$arg_k rate=1r/ss;
--- must_die
--- error_log
invalid rate "rate=1r/ss"



=== TEST 30: missing key=
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z rate=1r/s;
--- must_die
--- error_log
"psd_limit_zone" must have "key=" and "rate="



=== TEST 31: missing rate=
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k burst=5;
--- must_die
--- error_log
"psd_limit_zone" must have "key=" and "rate="



=== TEST 32: empty key=
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key= rate=1r/s;
--- must_die
--- error_log
invalid parameter "key=" in "psd_limit_zone"



=== TEST 33: unknown zone in psd_limit
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/s;
--- config
    location /t/ { psd_limit nosuch; }
--- must_die
--- error_log
unknown limit zone "nosuch"



=== TEST 34: psd_limit before its psd_limit_zone
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit z;
    psd_limit_zone z key=$arg_k rate=1r/s;
--- must_die
--- error_log
unknown limit zone "z"



=== TEST 35: duplicate zone name
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/s;
    psd_limit_zone z key=$arg_j rate=2r/s;
--- must_die
--- error_log
duplicate limit zone "z"



=== TEST 36: duplicate psd_limit of one zone in a location
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/s;
--- config
    location /t/ { psd_limit z; psd_limit z nodelay; }
--- must_die
--- error_log
"psd_limit" directive is duplicate



=== TEST 37: bad parameter of psd_limit
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/s;
--- config
    location /t/ { psd_limit z nodelya; }
--- must_die
--- error_log
invalid parameter "nodelya" in "psd_limit"



=== TEST 38: bad parameter of psd_limit_zone
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/s brust=5;
--- must_die
--- error_log
invalid parameter "brust=5" in "psd_limit_zone"



=== TEST 39: burst=-1
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone a key=$arg_k rate=1r/s burst=-1;
--- must_die
--- error_log
invalid parameter "burst=-1" in "psd_limit_zone"



=== TEST 40: a burst the GCRA script refuses at run time (interval x (burst+1) above 2^50 us) is refused by nginx -t
# (accepted now: then every request fails with "ERR psd gcra: bad arguments"
# and the failure mode decides, so the zone never limits through Redis)
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone a key=$arg_k rate=1r/d burst=20000;
--- must_die
--- error_log eval
qr/burst/



=== TEST 41: nodes=0
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone a key=$arg_k rate=1r/s nodes=0;
--- must_die
--- error_log
invalid parameter "nodes=0" in "psd_limit_zone"



=== TEST 42: local_size too small
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone a key=$arg_k rate=1r/s local_size=1k;
--- must_die
--- error_log
invalid parameter "local_size=1k" in "psd_limit_zone"



=== TEST 43: invalid zone name
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone a:b key=$arg_k rate=1r/s;
--- must_die
--- error_log
invalid limit zone name "a:b"



=== TEST 44: psd_limit_status 600
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/s;
--- config
    location /t/ { psd_limit z; psd_limit_status 600; }
--- must_die
--- error_log
invalid value "600" in "psd_limit_status", it must be between 400 and 599



=== TEST 45: psd_limit_status 399
--- config
    location /t/ { psd_limit_status 399; }
--- must_die
--- error_log
invalid value "399" in "psd_limit_status", it must be between 400 and 599



=== TEST 46: zones on two different redis servers in one location
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_redis other 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone a key=$arg_k rate=1r/s;
    psd_limit_zone b key=$arg_k rate=1r/s redis=other;
--- config
    location /t/ { psd_limit a; psd_limit b; }
--- must_die
--- error_log
limit zones "a" and "b" use different redis servers



=== TEST 47: bad failure mode
--- config
    location /t/ { psd_limit_failure_mode maybe; }
--- must_die
--- error_log
invalid value "maybe"



=== TEST 48: a zone without any psd_redis
--- http_config
    psd_limit_zone z key=$arg_k rate=1r/s;
--- must_die
--- error_log
no "psd_redis" server is configured in http{}



=== TEST 49: a zone naming an unknown redis server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z key=$arg_k rate=1r/s redis=nosuch;
--- must_die
--- error_log
unknown redis server "nosuch"



=== TEST 50: nine psd_limit in one location
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone z1 key=$arg_k rate=1r/s;
    psd_limit_zone z2 key=$arg_k rate=1r/s;
    psd_limit_zone z3 key=$arg_k rate=1r/s;
    psd_limit_zone z4 key=$arg_k rate=1r/s;
    psd_limit_zone z5 key=$arg_k rate=1r/s;
    psd_limit_zone z6 key=$arg_k rate=1r/s;
    psd_limit_zone z7 key=$arg_k rate=1r/s;
    psd_limit_zone z8 key=$arg_k rate=1r/s;
    psd_limit_zone z9 key=$arg_k rate=1r/s;
--- config
    location /t/ {
        psd_limit z1; psd_limit z2; psd_limit z3; psd_limit z4; psd_limit z5;
        psd_limit z6; psd_limit z7; psd_limit z8; psd_limit z9;
    }
--- must_die
--- error_log
too many "psd_limit" in one location, at most 8



=== TEST 51: psd_limit_zone outside http{} level (in a server)
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    psd_limit_zone z key=$arg_k rate=1r/s;
--- must_die
--- error_log
"psd_limit_zone" directive is not allowed here



=== TEST 52: psd_limit_headers takes on or off
--- config
    location /t/ { psd_limit_headers yes; }
--- must_die
--- error_log
invalid value "yes"
