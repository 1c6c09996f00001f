# nginx -s reload and graceful shutdown while Redis commands are in flight,
# and descriptor leaks across a Redis restart.
#
# Reload (HUP to the master) while Redis is stopped (SIGSTOP) and psd_counter
# and psd_limit requests wait for it: every in-flight request still gets an
# answer (200 once Redis runs again, or the documented 503 + Retry-After),
# requests after the reload work, the old workers exit (the number of worker
# processes, shutting down or not, returns to the configured one) and the
# log shows no alert/crit/emerg nor a worker killed by a signal.
#
# Graceful shutdown (QUIT to the master) with commands pending on a stopped
# Redis, and with a reconnect pending after Redis was killed: nginx exits
# within the Redis timeout plus a margin, with exit code 0 (the harness reaps
# the master and checks its exit code; our check only watches it become a
# zombie, so that the harness still sees its status).
#
# Reload and shutdown with worker_shutdown_timeout shorter than the Redis
# timeout (TEST 4, TEST 10): the shutdown timeout closes the Redis
# connection too, so pending commands do not keep the worker alive.
#
# No descriptor leak: the worker's open fds before and after 200 requests
# across a Redis restart and a stop that drops and remakes the connection.
#
# Time bounds are sanity bounds against hangs, not benchmarks.  Blocks that
# signal the master themselves do nothing under valgrind (no master) or with
# TEST_NGINX_USE_HUP=1 (nginx is shared by the blocks there).
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
no_cluster('reload and exit with the single redis-server stopped, killed or paused');
use JSON::PP ();
use IO::Socket::IP;
use IO::Select;
use Time::HiRes qw(time sleep);

# --- helpers for the blocks (functions: --- check cannot see lexicals) --------

my $SLOW = $ENV{TEST_NGINX_USE_VALGRIND} ? 8 : 1;
sub bound { $_[0] * $SLOW }

# true when this block cannot signal the master itself
sub own_master_unavailable {
    return 'valgrind runs nginx without a master' if $ENV{TEST_NGINX_USE_VALGRIND};
    return 'nginx is shared by the blocks in HUP mode' if $ENV{TEST_NGINX_USE_HUP};
    return undef;
}

sub wait_for {      # polls $cond every 20 ms for up to $secs; its last value
    my ($secs, $cond) = @_;
    for (my $end = time + bound($secs); ; sleep 0.02) {
        my $v = $cond->();
        return $v if $v || time > $end;
    }
}

sub slurp { my $f = shift; open my $h, '<', $f or return ''; local $/; <$h> // '' }

# pids of all worker processes of the master, those shutting down included
sub all_workers {
    my $m = nginx_pid() or return ();
    my @w;
    opendir my $d, '/proc' or return ();
    for my $p (grep { /^\d+$/ } readdir $d) {
        my $st = slurp("/proc/$p/stat");
        next unless $st =~ /^\d+ \(.*\) (\S) (\d+)/s && $2 == $m && $1 ne 'Z';
        push @w, $p if slurp("/proc/$p/cmdline") =~ /^nginx: worker process/;
    }
    @w = sort { $a <=> $b } @w;
    return @w;
}

sub alive { my $st = slurp("/proc/$_[0]/stat"); $st ne '' && $st !~ /^\d+ \(.*\) Z/s }
sub zombie_or_gone { !alive($_[0]) }

sub status_json {
    my $r = http_get('/status');
    return ($r->{status} // 0) == 200 ? JSON::PP::decode_json($r->{body}) : {};
}
sub connected { (status_json()->{redis} || [{}])->[0]{connected} }

sub count_of { ($_[0]{body} // '') =~ /^\{"count":(\d+)\}\n\z/ ? $1 : undef }

# a request written on a socket of its own, its response read later
sub start_request {
    my ($path) = @_;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', Proto => 'tcp',
        PeerPort => $ENV{TEST_NGINX_SERVER_PORT}) or die "connect: $@";
    print {$s} "GET $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    return $s;
}

sub finish_request {    # the response (status undef if none) within $secs
    my ($s, $secs) = @_;
    my $raw = '';
    my $sel = IO::Select->new($s);
    for (my $end = time + $secs; time < $end; ) {
        last unless $sel->can_read($end - time);
        sysread($s, $raw, 65536, length $raw) or last;
    }
    close $s;
    return (PsdTest::HTTP::parse_response($raw))[0] // {};
}

# 200, or the documented failure outcome (503, Retry-After: 1, backend_unavailable)
sub answered_ok {
    my ($r, $name) = @_;
    my $st = $r->{status} // 'none';
    if ($st eq '503') {
        ok +($r->{headers}{'retry-after'} // '') eq '1'
            && ($r->{body} // '') =~ /"error":"backend_unavailable"/,
            "$name: 503 with Retry-After: 1 and backend_unavailable";
    } else {
        is $st, 200, "$name: answered 200 (or 503)";
    }
}

sub status_counts {     # "200=2 503=1"
    my %n;
    $n{ $_->{status} // 'none' }++ for @_;
    return join ' ', map { "$_=$n{$_}" } sort keys %n;
}

# sends QUIT to the master, checks it exits (becomes a zombie: the harness
# reaps it and checks its exit code) within $limit seconds; returns the time
sub shutdown_within {
    my ($limit) = @_;
    my $m = nginx_pid();
    my $t0 = time;
    kill QUIT => $m;
    my $gone = wait_for($limit, sub { zombie_or_gone($m) });
    my $t = time - $t0;
    ok $gone, sprintf 'master exited on QUIT in %.2f s (bound %d s)', $t, bound($limit);
    return $t;
}

# the log lines that mean something went wrong
sub bad_log_lines {
    my $log = error_log_text();
    return grep { /\[(alert|crit|emerg)\]|segfault|exited on signal|core dumped/ }
        split /\n/, $log;
}

run_tests();

__DATA__

=== TEST 1: reload with counter and limit requests pending on a stopped Redis: all answered, old workers exit, new ones work
--- workers: 2
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=10s;
    psd_limit_zone z key=$arg_k rate=100r/s burst=100;
--- config
    location /c { psd_counter $arg_k; }
    location /l/ { psd_limit z nodelay; psd_limit_failure_mode closed; }
    location /status { psd_status on; }
    location /plain { return 200 "plain\n"; }
--- user_files
>>> l/a.txt
ok
--- check
if (my $why = own_master_unavailable()) { pass "skipped: $why"; return }
my $m = nginx_pid();
ok wait_for(3, sub { all_workers() == 2 && connected() }), '2 workers, Redis connected';
is count_of(http_get('/c?k=r')), 1, 'counter works before the reload';
is http_get('/l/a.txt?k=r')->{status}, 200, 'limit works before the reload';
my @old = all_workers();
redis_stop();
my (@pending, @names, $t0);
my $ok = eval {
    for my $i (1 .. 4) {
        push @pending, start_request("/c?k=r"); push @names, "counter $i";
        push @pending, start_request("/l/a.txt?k=r"); push @names, "limit $i";
    }
    sleep 0.3;      # the requests reach the workers, their commands are sent
    $t0 = time;
    kill HUP => $m;
    ok wait_for(5, sub { my @w = worker_pids(); @w == 2 && !grep { my $w = $_; grep { $_ == $w } @old } @w }),
        'reload: 2 new workers run';
    my $s = http_get('/status');
    is $s->{status}, 200, 'a new worker answers while Redis is stopped';
    sleep 0.2;
    my @busy = grep { alive($_) } @old;
    ok @busy >= 1, 'old workers still run for their pending requests ('
        . scalar(@busy) . ' of ' . scalar(@old) . ')';
    like slurp("/proc/$busy[0]/cmdline"), qr/^nginx: worker process is shutting down/,
        'and are shutting down' if @busy;
    1;
};
redis_cont();
die $@ unless $ok;
my @r = map { finish_request($_, bound(8)) } @pending;
my $t = time - $t0;
ok $t < bound(8), sprintf 'all in-flight requests answered %.2f s after the reload', $t;
answered_ok($r[$_], $names[$_]) for 0 .. $#r;
note 'in-flight statuses: ' . status_counts(@r);
# the old workers exit once their requests are done
ok wait_for(5, sub { !grep { alive($_) } @old }), 'the old workers exited'
    or diag 'still running: ' . join ' ', grep { alive($_) } @old;
ok wait_for(5, sub { all_workers() == 2 }), 'worker processes back to 2'
    or diag 'workers: ' . join ' ', all_workers();
ok wait_for(5, \&connected), 'new workers connected to Redis';
my $r = wait_for(5, sub { my $r = http_get('/c?k=r'); ($r->{status} // 0) == 200 && $r });
ok $r && count_of($r) >= 2, 'counter works after the reload (count ' . (count_of($r || {}) // 'none') . ')';
is http_get('/l/a.txt?k=r2')->{status}, 200, 'limit works after the reload';
is http_get('/plain')->{body}, "plain\n", 'plain location after the reload';
my @bad = bad_log_lines();
ok !@bad, 'no alert/crit/emerg/crash in error.log' or diag join "\n", @bad;
like error_log_text(), qr/\[notice\] \d+#\d+: signal 17 \(SIGCHLD\) received from \d+/,
    'the master reaped the old workers';
unlike error_log_text(), qr/worker process \d+ exited with code [^0]/, 'old workers exited with code 0';
--- no_error_log
[alert]
[crit]
[emerg]
segfault
exited on signal



=== TEST 2: reload while Redis is dead (reconnect backoff pending) and again while it is stopped with a request pending
--- workers: 2
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=1s connect_timeout=1s;
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- check
if (my $why = own_master_unavailable()) { pass "skipped: $why"; return }
my $m = nginx_pid();
ok wait_for(3, sub { all_workers() == 2 && connected() }), '2 workers, Redis connected';
redis_kill();
my $ok = eval {
    my $r = http_get('/c?k=d');
    is $r->{status}, 503, 'Redis dead: 503';
    sleep 0.3;      # reconnect attempts with backoff
    my @old = all_workers();
    kill HUP => $m;
    ok wait_for(5, sub { !grep { alive($_) } @old }), 'reload 1: old workers exited (reconnect timer pending)'
        or diag 'still running: ' . join ' ', grep { alive($_) } @old;
    ok wait_for(5, sub { all_workers() == 2 }), 'reload 1: 2 workers';
    redis_start();
    ok wait_for(8, \&connected), 'connected again after Redis restarted';
    ok wait_for(5, sub { (http_get('/c?k=d')->{status} // 0) == 200 }), 'counter works';

    @old = all_workers();
    redis_stop();
    my $p = start_request('/c?k=d');
    sleep 0.2;
    kill HUP => $m;
    ok wait_for(5, sub { worker_pids() == 2 && !grep { my $w = $_; grep { $_ == $w } @old } worker_pids() }),
        'reload 2: new workers';
    my $r2 = finish_request($p, bound(5));      # the 1 s timeout passes
    answered_ok($r2, 'reload 2: in-flight request');
    ok wait_for(5, sub { !grep { alive($_) } @old }), 'reload 2: old workers exited'
        or diag 'still running: ' . join ' ', grep { alive($_) } @old;
    1;
};
redis_cont();
die $@ unless $ok;
ok wait_for(5, sub { all_workers() == 2 }), 'worker processes back to 2';
ok wait_for(8, \&connected), 'connected';
ok wait_for(5, sub { (http_get('/c?k=d')->{status} // 0) == 200 }), 'counter works after both reloads';
my @bad = bad_log_lines();
ok !@bad, 'no alert/crit/emerg/crash in error.log' or diag join "\n", @bad;
--- no_error_log
[alert]
[crit]
[emerg]
segfault
exited on signal



=== TEST 3: reload while Redis holds the commands with CLIENT PAUSE: in-flight requests answered 200 after the pause
--- workers: 2
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=5s;
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- check
if (my $why = own_master_unavailable()) { pass "skipped: $why"; return }
my $m = nginx_pid();
ok wait_for(3, sub { all_workers() == 2 && connected() }), '2 workers, Redis connected';
my @old = all_workers();
is redis_cmd('CLIENT', 'PAUSE', 1500, 'ALL'), 'OK', 'CLIENT PAUSE 1500 ALL';
my $t0 = time;
my @p = map { start_request('/c?k=p') } 1 .. 6;
sleep 0.2;
kill HUP => $m;
ok wait_for(5, sub { worker_pids() == 2 && !grep { my $w = $_; grep { $_ == $w } @old } worker_pids() }),
    'reload: new workers';
my @r = map { finish_request($_, bound(8)) } @p;
my $t = time - $t0;
ok $t < bound(8), sprintf 'in-flight requests answered after %.2f s', $t;
is $_->{status}, 200, 'in-flight request answered 200 after the pause' for @r;
is join(',', sort { $a <=> $b } map { count_of($_) // 'none' } @r), '1,2,3,4,5,6',
    'each got its own count';
ok wait_for(5, sub { !grep { alive($_) } @old }), 'old workers exited'
    or diag 'still running: ' . join ' ', grep { alive($_) } @old;
ok wait_for(5, sub { all_workers() == 2 }), 'worker processes back to 2';
ok wait_for(5, sub { (count_of(http_get('/c?k=p')) // 0) == 7 }), 'new workers count on';
my @bad = bad_log_lines();
ok !@bad, 'no alert/crit/emerg/crash in error.log' or diag join "\n", @bad;
--- no_error_log
[alert]
[crit]
[emerg]
segfault
exited on signal



=== TEST 4: reload with worker_shutdown_timeout 1s shorter than the Redis timeout (10s): old worker closes its pending requests and exits
--- main_config
    worker_shutdown_timeout 1s;
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=10s;
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- check
# ngx_shutdown_timer_handler (worker_shutdown_timeout) sets c->close on
# every connection and calls its read handler; the Redis connection must
# close then rather than re-arm its timer for the terminated requests.
if (my $why = own_master_unavailable()) { pass "skipped: $why"; return }
my $m = nginx_pid();
ok wait_for(3, \&connected), 'connected';
my @old = all_workers();
redis_stop();
my (@r, $t);
my $ok = eval {
    my @p = map { start_request("/c?k=w$_") } 1 .. 4;
    sleep 0.3;
    my $t0 = time;
    kill HUP => $m;
    ok wait_for(6, sub { !grep { alive($_) } @old }), 'the old worker exited'
        or diag 'still running: ' . join ' ', grep { alive($_) } @old;
    $t = time - $t0;
    ok $t < bound(6), sprintf 'in %.2f s (worker_shutdown_timeout 1s, Redis timeout 10s)', $t;
    @r = map { finish_request($_, 1) } @p;
    ok alive($m), 'the master still runs';
    ok wait_for(5, sub { all_workers() == 1 }), 'one worker';
    1;
};
redis_cont();
die $@ unless $ok;
# the connections were closed by the shutdown timeout: no response, or a 503
ok !grep({ defined $_->{status} && $_->{status} != 503 } @r),
    'in-flight requests closed without an answer (or 503): ' . status_counts(@r);
ok wait_for(8, \&connected), 'new worker connected';
ok wait_for(5, sub { (http_get('/c?k=w9')->{status} // 0) == 200 }), 'counter works after the reload';
my @bad = bad_log_lines();
ok !@bad, 'no alert/crit/emerg/crash in error.log' or diag join "\n", @bad;
--- no_error_log
[alert]
[crit]
[emerg]
segfault
exited on signal



=== TEST 5: no descriptor leak: 200 requests across a Redis restart
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=1s connect_timeout=1s;
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- check
my ($w) = wait_for(3, sub { (worker_pids())[0] });
ok wait_for(3, \&connected), 'connected';
http_get('/c?k=f') for 1 .. 20;         # warm up (log files, caches)
my $fd0 = count_fds($w);
ok defined $fd0, "worker fds readable ($fd0)";
my %st;
$st{ http_get('/c?k=f')->{status} // 'none' }++ for 1 .. 100;
redis_restart();
$st{ http_get('/c?k=f')->{status} // 'none' }++ for 1 .. 100;
ok wait_for(8, \&connected), 'connected after the restart';
# 20 calls run into the deadline on a stopped Redis: the connection is
# dropped and remade
redis_stop();
my $rs = eval { http_parallel([ map { "GET /c?k=f HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" } 1 .. 20 ], timeout => bound(8)) };
redis_cont();
die $@ unless $rs;
$st{ $_->{status} // 'none' }++ for @$rs;
is scalar(grep { ($_->{status} // 0) == 503 } @$rs), 20, 'Redis stopped: 20 x 503';
ok wait_for(8, \&connected), 'connected after the stop';
ok wait_for(5, sub { (http_get('/c?k=f')->{status} // 0) == 200 }), 'counter works';
note 'statuses: ' . join ' ', map { "$_=$st{$_}" } sort keys %st;
ok !grep({ !/^(200|503)$/ } keys %st), 'every request got 200 or 503';
sleep 0.2;
my $fd1 = count_fds($w);
ok $fd1 <= $fd0 + 3, "worker fds: $fd0 before, $fd1 after";
is_deeply [ worker_pids() ], [$w], 'same worker';
--- no_error_log
[alert]
[crit]
[emerg]



=== TEST 6: graceful shutdown with commands pending on a stopped Redis: exits within timeout + margin, requests answered
--- workers: 2
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=2s;
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- check
if (my $why = own_master_unavailable()) { pass "skipped: $why"; return }
ok wait_for(3, sub { all_workers() == 2 && connected() }), '2 workers, Redis connected';
my @workers = all_workers();
redis_stop();
my @r;
my $ok = eval {
    my @p = map { start_request("/c?k=q$_") } 1 .. 6;
    sleep 0.3;
    my $t = shutdown_within(7);
    ok $t >= 1, sprintf 'the workers waited for the pending requests (%.2f s)', $t;
    @r = map { finish_request($_, 1) } @p;
    1;
};
redis_cont();
die $@ unless $ok;
is $_->{status}, 503, 'in-flight request answered 503 (Redis stopped past the timeout)' for @r;
ok wait_for(2, sub { !grep { alive($_) } @workers }), 'no worker left';
my @bad = bad_log_lines();
ok !@bad, 'no alert/crit/emerg/crash in error.log' or diag join "\n", @bad;
like error_log_text(), qr/\[notice\] \d+#\d+: exit\b/, 'the master logged its exit';
--- no_error_log
[alert]
[crit]
[emerg]
segfault
exited on signal



=== TEST 7: graceful shutdown with Redis stopped and no request (connection idle, nothing pending): exits promptly
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=2s;
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- check
if (my $why = own_master_unavailable()) { pass "skipped: $why"; return }
ok wait_for(3, \&connected), 'connected';
redis_stop();
my $ok = eval { shutdown_within(5); 1 };
redis_cont();
die $@ unless $ok;
my @bad = bad_log_lines();
ok !@bad, 'no alert/crit/emerg/crash in error.log' or diag join "\n", @bad;
--- no_error_log
[alert]
[crit]
[emerg]
segfault
exited on signal



=== TEST 8: graceful shutdown with Redis killed (reconnect backoff timer pending): exits promptly
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=2s connect_timeout=2s;
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- check
if (my $why = own_master_unavailable()) { pass "skipped: $why"; return }
ok wait_for(3, \&connected), 'connected';
redis_kill();
is http_get('/c?k=k')->{status}, 503, 'Redis dead: 503';
sleep 0.5;
shutdown_within(5);
my @bad = bad_log_lines();
ok !@bad, 'no alert/crit/emerg/crash in error.log' or diag join "\n", @bad;
--- no_error_log
[alert]
[crit]
[emerg]
segfault
exited on signal



=== TEST 9: graceful shutdown after the clients of pending commands went away (detached commands, Redis stopped)
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=2s;
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- check
if (my $why = own_master_unavailable()) { pass "skipped: $why"; return }
ok wait_for(3, \&connected), 'connected';
redis_stop();
my $ok = eval {
    my @p = map { start_request("/c?k=g$_") } 1 .. 3;
    sleep 0.3;
    close $_ for @p;
    sleep 0.2;      # nginx notices the clients left (499)
    shutdown_within(7);
    1;
};
redis_cont();
die $@ unless $ok;
my @bad = bad_log_lines();
ok !@bad, 'no alert/crit/emerg/crash in error.log' or diag join "\n", @bad;
--- no_error_log
[alert]
[crit]
[emerg]
segfault
exited on signal



=== TEST 10: graceful shutdown with worker_shutdown_timeout 1s shorter than the Redis timeout (10s): exits after the shutdown timeout
--- main_config
    worker_shutdown_timeout 1s;
--- workers: 2
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=10s;
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- check
# ngx_shutdown_timer_handler (worker_shutdown_timeout) sets c->close on
# every connection and calls its read handler; the Redis connection must
# close then rather than re-arm its timer for the terminated requests.
if (my $why = own_master_unavailable()) { pass "skipped: $why"; return }
ok wait_for(3, sub { all_workers() == 2 && connected() }), '2 workers, Redis connected';
redis_stop();
my @r;
my $ok = eval {
    my @p = map { start_request("/c?k=s$_") } 1 .. 6;
    sleep 0.3;
    my $t = shutdown_within(6);
    @r = map { finish_request($_, 1) } @p;
    1;
};
redis_cont();
die $@ unless $ok;
ok !grep({ defined $_->{status} && $_->{status} != 503 } @r),
    'in-flight requests closed without an answer (or 503): ' . status_counts(@r);
my @bad = bad_log_lines();
ok !@bad, 'no alert/crit/emerg/crash in error.log' or diag join "\n", @bad;
--- no_error_log
[alert]
[crit]
[emerg]
segfault
exited on signal
