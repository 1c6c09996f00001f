# psd_limit when Redis fails: stopped (SIGSTOP: every call runs into the
# 200 ms timeout), killed (refused at once), answering errors or replies of
# the wrong shape.  psd_limit_failure_mode open lets requests through with
# a warning, closed answers 503 {"error":"backend_unavailable"} with
# Retry-After: 1, local (the default) falls back to a per-node GCRA in
# shared memory at rate/nodes.  Every block also checks the recovery
# without a reload and the metrics.
#
# Timing bounds are sanity checks, not benchmarks.  Every block uses its
# own keys, so that it also passes with TEST_NGINX_USE_HUP=1 (the local
# limiter's shared memory then lives on from block to block).
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
no_cluster('the failure modes with the single redis-server stopped or killed, and fake servers');
use Time::HiRes qw(time sleep);

# --- helpers for the blocks (functions: --- check cannot see lexicals) --------

my $SLOW = $ENV{TEST_NGINX_USE_VALGRIND} ? 8 : 1;
sub slow { $SLOW }
sub nworkers { $ENV{TEST_NGINX_USE_VALGRIND} ? 1 : $_[0] }  # valgrind: one process

sub get { http_get($_[0]) }

sub timed_get {     # (response, seconds it took)
    my $t0 = time;
    my $r = http_get($_[0]);
    return ($r, time - $t0);
}

sub req { "GET $_[0] HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" }

sub wait_for {      # polls $cond every 20 ms for up to $secs; its last value
    my ($secs, $cond) = @_;
    for (my $end = time + $secs * $SLOW; ; sleep 0.02) {
        my $v = $cond->();
        return $v if $v || time > $end;
    }
}

sub wait_workers {  # the worker pids once $n run
    my ($n) = @_;
    my @w;
    for (my $end = time + 5 * $SLOW; time < $end; sleep 0.02) {
        @w = worker_pids();
        last if @w >= ($n // 1);
    }
    return @w;
}

sub status_counts {     # "200=2 429=8"
    my %n;
    $n{ $_->{status} // 'none' }++ for @_;
    return join ' ', map { "$_=$n{$_}" } sort keys %n;
}

sub metrics {       # { "name{labels}" => value } of the psd_limit rows
    my $r = http_get('/metrics');
    my %m;
    $m{$1} = $2 while ($r->{body} // '') =~ /^(psd_limit_\S+) (\d+)$/mg;
    return \%m;
}

sub metric_delta {  # what moved since $m0: { result => n }
    my ($m0) = @_;
    my $m1 = metrics();
    my %d;
    for (keys %$m1) {
        my ($k) = /result="(\w+)"/ ? $1 : /^psd_limit_(\w+)_total$/ ? $1 : ($_);
        $d{$k} = $m1->{$_} - ($m0->{$_} // 0);
    }
    return \%d;
}

sub is_unavailable {
    my ($r, $name) = @_;
    is $r->{status}, 503, "$name: 503";
    is $r->{headers}{'retry-after'}, 1, "$name: Retry-After: 1";
    is $r->{body}, qq({"error":"backend_unavailable"}\n), "$name: body";
}

# A fake Redis: PING and SCRIPT LOAD answered like Redis, every EVALSHA
# answered with $reply (raw RESP).
sub fake_gcra {
    my ($reply) = @_;
    fake_redis_start(sub {
        my ($s) = @_;
        while (my $c = fake_redis_read_command($s)) {
            my $cmd = uc $c->[0];
            if ($cmd eq 'PING') { print $s "+PONG\r\n" }
            elsif ($cmd eq 'SCRIPT') { print $s "\$40\r\n" . ('0' x 40) . "\r\n" }
            elsif ($cmd eq 'EVALSHA' || $cmd eq 'EVAL') { print $s $reply }
            else { print $s "-ERR unknown command '$cmd'\r\n" }
        }
    });
}

sub redis_connected {    # worker connections up, from the metrics
    my $r = http_get('/metrics');
    return ($r->{body} // '') =~ /^psd_redis_connected\{server="main"\} (\d+)$/m ? $1 : -1;
}

sub connected {
    my $r = http_get('/status');
    return ($r->{body} // '') =~ /"connected":true/;
}

run_tests();

__DATA__

=== TEST 1: open: Redis stopped, requests pass after the timeout with a warning and status "error"; SIGCONT recovers without reload
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_limit_zone z key=$arg_k rate=1r/m burst=1;
--- config
    location /t/ {
        psd_limit z nodelay;
        psd_limit_failure_mode open;
        add_header X-Limit $psd_limit_status always;
    }
    location /metrics { psd_metrics; }
--- user_files
>>> t/a.txt
ok
--- check
my ($w) = wait_workers();
my $r = get('/t/a.txt?k=t1');
is "$r->{status} $r->{headers}{'x-limit'}", '200 passed', 'Redis up: passed';
my $m0 = metrics();
redis_stop();
for my $i (1 .. 4) {
    my ($r, $t) = timed_get('/t/a.txt?k=t1');
    is $r->{status}, 200, "stopped $i: let through";
    is $r->{body}, "ok\n", "stopped $i: the file";
    is $r->{headers}{'x-limit'}, 'error', "stopped $i: status error";
    ok !defined $r->{headers}{'ratelimit'}, "stopped $i: no RateLimit header";
    # the first waits for the timeout; the client then knows Redis is down
    ok $t < 1 * slow(), sprintf 'stopped %d: answered in %.3f s', $i, $t;
    ok $t >= 0.15, sprintf 'stopped 1: after the 200 ms timeout (%.3f s)', $t if $i == 1;
}
my $d = metric_delta($m0);
is $d->{fail_open}, 4, 'fail_open +4';
is $d->{$_}, 0, "$_ +0" for qw(passed rejected local fail_closed);
like error_log_text(), qr/\[warn\] .*psd_limit: redis timeout, request let through unlimited, client: 127\.0\.0\.1/,
    'warn line names the cause';
redis_cont();
my $back = wait_for(8, sub {
    my $r = get('/t/a.txt?k=t1b');
    ($r->{headers}{'x-limit'} // '') eq 'passed' && $r });
ok $back, 'limiting again after SIGCONT';
is get('/t/a.txt?k=t1b')->{status}, 200, 'recovered: second within the burst';
is get('/t/a.txt?k=t1b')->{status}, 429, 'recovered: third rejected';
is_deeply [ worker_pids() ], [$w], 'same worker, no reload';
--- error_log
let through unlimited



=== TEST 2: closed: Redis stopped, 503 backend_unavailable with Retry-After: 1; inherited from server{}, a location may say open
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_limit_zone z key=$arg_k rate=1r/m burst=1;
--- config
    psd_limit_failure_mode closed;
    location /t/ {
        psd_limit z nodelay;
        add_header X-Limit $psd_limit_status always;
    }
    location /o/ {
        alias html/t/;
        psd_limit z nodelay;
        psd_limit_failure_mode open;
    }
    location /free/ { alias html/t/; }
    location /metrics { psd_metrics; }
--- user_files
>>> t/a.txt
ok
--- check
my ($w) = wait_workers();
is get('/t/a.txt?k=t2')->{status}, 200, 'Redis up: passed';
my $m0 = metrics();
redis_stop();
for my $i (1 .. 3) {
    my ($r, $t) = timed_get('/t/a.txt?k=t2');
    is_unavailable($r, "stopped $i");
    is $r->{headers}{'x-limit'}, 'error', "stopped $i: status error";
    ok $t < 1 * slow(), sprintf 'stopped %d: answered in %.3f s', $i, $t;
    ok $t >= 0.15, sprintf 'stopped 1: after the 200 ms timeout (%.3f s)', $t if $i == 1;
}
is get('/o/a.txt?k=t2o')->{status}, 200, 'the open location lets through';
is get('/free/a.txt')->{status}, 200, 'an unlimited location is not affected';
my $d = metric_delta($m0);
is $d->{fail_closed}, 3, 'fail_closed +3';
is $d->{fail_open}, 1, 'fail_open +1';
is $d->{rejected}, 0, 'rejected +0';
redis_cont();
ok wait_for(8, sub { get('/t/a.txt?k=t2b')->{status} == 200 }), 'SIGCONT: serving again';
is get('/t/a.txt?k=t2b')->{status}, 200, 'second within the burst';
my $r = get('/t/a.txt?k=t2b');
is $r->{status}, 429, 'third rejected by Redis again';
is $r->{headers}{'x-limit'}, 'rejected', 'status rejected';
is_deeply [ worker_pids() ], [$w], 'same worker, no reload';



=== TEST 3: open and closed, Redis killed: answered at once; redis_start recovers without reload
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_limit_zone z key=$arg_k rate=1r/m;
--- config
    location /open/ {
        alias html/t/;
        psd_limit z nodelay;
        psd_limit_failure_mode open;
        add_header X-Limit $psd_limit_status always;
    }
    location /closed/ {
        alias html/t/;
        psd_limit z nodelay;
        psd_limit_failure_mode closed;
    }
    location /metrics { psd_metrics; }
--- user_files
>>> t/a.txt
ok
--- check
my ($w) = wait_workers();
is get('/closed/a.txt?k=t2kc')->{status}, 200, 'closed, Redis up: 200';
is get('/closed/a.txt?k=t2kc')->{status}, 429, 'closed, Redis up: limited';
my $m0 = metrics();
redis_kill();
my $t0 = time;
for my $i (1 .. 3) {
    my $r = get('/open/a.txt?k=t2ko');
    is "$r->{status} " . ($r->{headers}{'x-limit'} // ''), '200 error', "killed, open $i: 200, status error";
    is_unavailable(get('/closed/a.txt?k=t2kc'), "killed, closed $i");
}
my $t = time - $t0;
ok $t < 1 * slow(), sprintf 'no waiting for a dead Redis (%.3f s for 6)', $t;
my $d = metric_delta($m0);
is "$d->{fail_open} $d->{fail_closed}", '3 3', 'fail_open +3, fail_closed +3';
redis_start();
ok wait_for(8, sub { get('/closed/a.txt?k=t2kc2')->{status} == 200 }), 'restarted: closed serves again';
is get('/closed/a.txt?k=t2kc2')->{status}, 429, 'and limits again';
my $r = get('/open/a.txt?k=t2ko2');
is $r->{headers}{'x-limit'}, 'passed', 'open: decided by Redis again';
is_deeply [ worker_pids() ], [$w], 'same worker, no reload';
--- error_log eval
[qr/\[warn\] .*psd_limit: redis (error|unavailable), request let through unlimited/]



=== TEST 4: local (the default), Redis stopped, nodes=2 burst=1 1r/s: the node allows half the rate: 2 at once, then 429
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_limit_zone z key=$arg_k rate=1r/s burst=1 nodes=2;
--- config
    location /t/ {
        psd_limit z nodelay;
        add_header X-Limit $psd_limit_status always;
    }
    location /metrics { psd_metrics; }
--- user_files
>>> t/a.txt
ok
--- check
my ($w) = wait_workers();
my $m0 = metrics();
redis_stop();
my @r = map { [ timed_get('/t/a.txt?k=t3') ] } 1 .. 3;
is_deeply [ map { $_->[0]{status} } @r ], [200, 200, 429], 'local: 2 pass, the third is rejected';
is_deeply [ map { $_->[0]{headers}{'x-limit'} } @r ], [qw(passed passed rejected)], '$psd_limit_status';
ok $_->[1] < 1 * slow(), sprintf 'answered in %.3f s', $_->[1] for @r;
my $rej = $r[2][0];
is $rej->{body}, qq({"error":"rate_limited"}\n), '429 body';
is $rej->{headers}{'ratelimit-policy'}, '"z";q=2;w=2', 'the zone policy';
like $rej->{headers}{'ratelimit'} // '', qr/^"z";r=0;t=[34]$/, 'RateLimit from the local bucket (2 s per request)';
like $rej->{headers}{'retry-after'} // '', qr/^[12]$/, 'Retry-After from the local bucket';
is get('/t/a.txt?k=t3other')->{status}, 200, 'another key has its own local bucket';
my $d = metric_delta($m0);
is $d->{local}, 4, 'local +4';
is $d->{rejected}, 1, 'rejected +1';
is $d->{$_}, 0, "$_ +0" for qw(fail_open fail_closed);
redis_cont();
ok wait_for(8, sub { (get('/t/a.txt?k=t3b')->{headers}{'x-limit'} // '') eq 'passed'
                     && metric_delta($m0)->{passed} > 0 }), 'SIGCONT: Redis decides again';
my $m1 = metrics();
my @b = map { get('/t/a.txt?k=t3c') } 1 .. 3;
is_deeply [ map { $_->{status} } @b ], [200, 200, 429], 'Redis: burst+1 = 2, then 429';
is metric_delta($m1)->{local}, 0, 'no local decisions after the recovery';
is_deeply [ worker_pids() ], [$w], 'same worker, no reload';



=== TEST 5: local, Redis killed: refused at once; the local bucket is shared by the workers: exactly 2 of 10 parallel requests pass; redis_start recovers
--- workers: 2
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_limit_zone z key=$arg_k rate=1r/s burst=1 nodes=2;
--- config
    location /t/ {
        psd_limit z nodelay;
        psd_limit_failure_mode local;
        add_header X-Limit $psd_limit_status always;
    }
    location /metrics { psd_metrics; }
--- user_files
>>> t/a.txt
ok
--- check
my @w = wait_workers(nworkers(2));
is scalar @w, nworkers(2), 'two workers';
is get('/t/a.txt?k=t4warm')->{status}, 200, 'Redis up';
redis_kill();
# let both workers notice (a dead server is refused at once, then backoff)
get('/t/a.txt?k=t4warm') for 1 .. 4;
my $t0 = time;
my $rs = http_parallel([ map { req('/t/a.txt?k=t4') } 1 .. 10 ]);
my $t = time - $t0;
is status_counts(@$rs), '200=2 429=8', 'local limiter over 2 workers: exactly 2 pass';
ok $t < 1 * slow(), sprintf 'no waiting for a dead Redis (%.3f s for 10)', $t;
redis_start();
ok wait_for(8, sub { redis_connected() == nworkers(2) }), 'restarted: both workers connected again';
# the new Redis is empty: the key starts afresh there
my $rs2 = http_parallel([ map { req('/t/a.txt?k=t4') } 1 .. 10 ]);
is status_counts(@$rs2), '200=2 429=8', 'after the restart: exactly burst+1 again';
is_deeply [ sort { $a <=> $b } worker_pids() ], [ sort { $a <=> $b } @w ], 'same workers, no reload';
ok redis_cmd('EXISTS', 'psd:{lim:z:t4}'), 'state in the new Redis';



=== TEST 6: local: the bucket refills at rate/nodes (2r/s over 2 nodes: one per second); nodes=1 allows the full rate
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_limit_zone half key=$arg_k rate=2r/s nodes=2;
    psd_limit_zone full key=$arg_k rate=1r/m burst=2;
--- config
    location /half/ { alias html/t/; psd_limit half nodelay; }
    location /full/ { alias html/t/; psd_limit full nodelay; }
--- user_files
>>> t/a.txt
ok
--- check
redis_kill();
get('/half/a.txt?k=warm');
is get('/half/a.txt?k=t5')->{status}, 200, 'half: first';
is get('/half/a.txt?k=t5')->{status}, 429, 'half: second within 0.5 s rejected';
sleep 0.55;
is get('/half/a.txt?k=t5')->{status}, 429, 'half: still rejected after 0.55 s (the zone interval)';
sleep 0.5;
is get('/half/a.txt?k=t5')->{status}, 200, 'half: back after 1 s (the local interval)';
is_deeply [ map { get('/full/a.txt?k=t5')->{status} } 1 .. 4 ], [200, 200, 200, 429],
    'nodes=1: burst+1 = 3, then 429';



=== TEST 7: Redis answers an error (WRONGTYPE): logged; open lets through, closed 503, local decides
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms;
    psd_limit_zone z key=$arg_k rate=1r/m;
--- config
    location /open/ { alias html/t/; psd_limit z nodelay; psd_limit_failure_mode open; }
    location /closed/ { alias html/t/; psd_limit z nodelay; psd_limit_failure_mode closed; }
    location /local/ {
        alias html/t/;
        psd_limit z nodelay;
        add_header X-Limit $psd_limit_status always;
    }
--- user_files
>>> t/a.txt
ok
--- check
is redis_cmd('LPUSH', 'psd:{lim:z:t6}', 'not a tat'), 1, 'a list where the TAT should be';
is get('/open/a.txt?k=t6')->{status}, 200, 'open: let through';
is get('/open/a.txt?k=t6')->{status}, 200, 'open: again';
is_unavailable(get('/closed/a.txt?k=t6'), 'closed');
my @l = map { get('/local/a.txt?k=t6') } 1 .. 2;
is_deeply [ map { $_->{status} } @l ], [200, 429], 'local: burst=0, the second is rejected';
is $l[1]{headers}{'x-limit'}, 'rejected', 'local: rejected';
is get('/local/a.txt?k=t6ok')->{status}, 200, 'other keys are limited in Redis';
is redis_cmd('TYPE', 'psd:{lim:z:t6}'), 'list', 'the foreign key is left alone';
--- error_log eval
[qr/\[error\] .*psd_limit: redis answered "WRONGTYPE/,
 qr/\[warn\] .*psd_limit: redis \w+, request let through unlimited/]



=== TEST 8: a Redis reply that decides: allowed=0 with retry 1500 ms and reset 30 s gives Retry-After: 2 and RateLimit t=30
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT timeout=300ms connect_timeout=300ms;
    psd_limit_zone z key=$arg_k rate=1r/s burst=4;
--- config
    location /t/ { psd_limit z nodelay; psd_limit_failure_mode closed; }
    location /status { psd_status on; }
--- init
fake_gcra("*4\r\n:0\r\n:0\r\n:1500\r\n:30000\r\n");
--- user_files
>>> t/a.txt
ok
--- check
ok wait_for(3, \&connected), 'connected to the fake server';
my $r = get('/t/a.txt?k=t7');
is $r->{status}, 429, 'rejected as Redis says';
is $r->{headers}{'retry-after'}, 2, 'Retry-After: 1500 ms rounded up';
is $r->{headers}{'ratelimit'}, '"z";r=0;t=30', 'RateLimit: reset 30 s';
is $r->{headers}{'ratelimit-policy'}, '"z";q=5;w=5', 'policy from the configuration';



=== TEST 9: allowed=0 with retry -1 (never): Retry-After: 1
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT timeout=300ms connect_timeout=300ms;
    psd_limit_zone z key=$arg_k rate=1r/s;
--- config
    location /t/ { psd_limit z nodelay; psd_limit_failure_mode closed; }
    location /status { psd_status on; }
--- init
fake_gcra("*4\r\n:0\r\n:0\r\n:-1\r\n:1000\r\n");
--- user_files
>>> t/a.txt
ok
--- check
ok wait_for(3, \&connected), 'connected to the fake server';
my $r = get('/t/a.txt?k=t8');
is $r->{status}, 429, 'rejected';
is $r->{headers}{'retry-after'}, 1, 'Retry-After: 1';



=== TEST 10: replies of the wrong shape fail like an outage (closed: 503), nginx unharmed
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT timeout=300ms connect_timeout=300ms;
    psd_limit_zone z key=$arg_k rate=1r/s;
--- config
    location /t/ { psd_limit z nodelay; psd_limit_failure_mode closed; }
    location /free/ { alias html/t/; }
    location /status { psd_status on; }
--- user_files
>>> t/a.txt
ok
--- check
my ($w) = wait_workers();
my @bad = (
    "*4\r\n\$1\r\n1\r\n:0\r\n:-1\r\n:1000\r\n",     # a string where an integer goes
    "*3\r\n:1\r\n:0\r\n:-1\r\n",                    # three elements
    "*5\r\n:1\r\n:0\r\n:-1\r\n:1000\r\n:0\r\n",     # five
    ":1\r\n",                                       # not an array
    "\$-1\r\n",                                     # nil
    "*-1\r\n",                                      # nil array
    "*4\r\n*0\r\n:0\r\n:-1\r\n:1000\r\n",           # a nested array
    "-ERR psd gcra: bad arguments\r\n",             # an error
);
for my $i (0 .. $#bad) {
    fake_redis_stop();
    fake_gcra($bad[$i]);
    ok wait_for(3, \&connected), "reply $i: connected";
    my $r = get("/t/a.txt?k=t9$i");
    is_unavailable($r, "reply $i");
}
is get('/free/a.txt')->{status}, 200, 'nginx still serves';
is_deeply [ worker_pids() ], [$w], 'the worker did not die';
--- error_log
psd_limit: redis answered "ERR psd gcra: bad arguments"



=== TEST 11: local with psd_limit_status 503: a rejection by the local limiter is a rate limit, not an outage
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
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
--- check
redis_kill();
my @r = map { get('/t/a.txt?k=t10') } 1 .. 2;
is_deeply [ map { $_->{status} } @r ], [200, 503], 'local: 200 then 503';
is $r[1]{headers}{'x-limit'}, 'rejected', 'status rejected';
is $r[1]{headers}{'ratelimit-policy'}, '"z";q=1;w=60', 'RateLimit-Policy on the rejection';
like $r[1]{headers}{'retry-after'} // '', qr/^(59|60)$/, 'Retry-After from the bucket, not 1';
unlike $r[1]{body}, qr/backend_unavailable/, 'not the outage body';



=== TEST 12: dry_run when Redis is down with local: passes, never rejects
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_limit_zone z key=$arg_k rate=1r/m;
--- config
    location /t/ { psd_limit z dry_run; }
--- user_files
>>> t/a.txt
ok
--- check
redis_kill();
is_deeply [ map { get('/t/a.txt?k=t11')->{status} } 1 .. 3 ], [200, 200, 200], 'dry run: all pass';



=== TEST 13: without nodelay, Redis down (local): nothing is delayed
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_limit_zone z key=$arg_k rate=2r/s burst=2;
--- config
    location /t/ { psd_limit z; }
--- user_files
>>> t/a.txt
ok
--- check
redis_kill();
get('/t/a.txt?k=warm');
my $t0 = time;
my @r = map { get('/t/a.txt?k=t12') } 1 .. 4;
my $t = time - $t0;
is_deeply [ map { $_->{status} } @r ], [200, 200, 200, 429], 'local, nodes=1: burst+1 = 3 at once, then 429';
ok $t < 0.5 * slow(), sprintf 'answered at once (%.3f s)', $t;
