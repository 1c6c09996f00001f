# Fault injection for the Redis client, through psd_counter: a server that
# dies, stops (SIGSTOP), refuses the handshake or is full; fake servers that
# answer garbage, error replies (-OOM, -LOADING, -READONLY), one byte at a
# time, too much, too late, or nothing; clients that leave while their
# command is pending; fail open; no leaked descriptors.  Each block checks
# the answer, that it comes in bounded time (a sanity bound, not a
# benchmark), that the worker survives (same pid) and recovery without a
# reload.
#
# Not here: NOSCRIPT (SCRIPT FLUSH) recovery, which needs a feature that
# runs scripts; the psd_link tests cover it.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
no_cluster('faults of one redis-server (stopped, killed, unix sockets, db=99) and fake servers');
use JSON::PP ();
use IO::Socket::IP;
use IO::Socket::UNIX;
use IO::Select;
use POSIX ();
use Time::HiRes qw(time sleep);

# --- helpers for the blocks ---------------------------------------------------

my $SERVROOT = $ENV{TEST_NGINX_SERVROOT};

# time bounds are sanity bounds, stretched like the harness's under valgrind
my $SLOW = $ENV{TEST_NGINX_USE_VALGRIND} ? 8 : 1;
sub bound { $_[0] * $SLOW }

# A redis-server besides the harness's own, on a unix socket only; runs to
# the end of the file (see t/011-redis-client.t).
my %extra;
sub extra_redis {
    my ($name, @args) = @_;
    my $dir = "$SERVROOT/redis";
    my $sock = "$dir/$name.sock";
    stop_extra_redis($name);
    mkdir $dir;
    unlink $sock;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$SERVROOT/logs/redis-$name.log";
        open STDERR, '>&', \*STDOUT;
        exec($PsdTest::Redis::BINARY, '--port', '0', '--unixsocket', $sock,
            '--save', '', '--appendonly', 'no', '--dir', $dir, @args)
            or POSIX::_exit(127);
    }
    $extra{$name} = $pid;
    for (1 .. 250) {
        return $sock if IO::Socket::UNIX->new(Peer => $sock);
        die "redis-server $name exited\n" if waitpid($pid, POSIX::WNOHANG()) > 0;
        sleep 0.02;
    }
    die "redis-server $name does not listen on $sock\n";
}

sub stop_extra_redis {
    my $pid = delete $extra{ $_[0] } or return;
    kill KILL => $pid;
    waitpid $pid, 0;
}

sub signal_extra_redis { kill $_[1] => $extra{ $_[0] } }

END { local $?; stop_extra_redis($_) for keys %extra }

sub wait_for {      # polls $cond every 20 ms for up to $secs
    my ($secs, $cond) = @_;
    for (my $end = time + bound($secs); ; sleep 0.02) {
        my $v = $cond->();
        return $v if $v || time > $end;
    }
}

sub status_json {
    my $r = http_get('/status');
    return ($r->{status} // 0) == 200 ? JSON::PP::decode_json($r->{body}) : {};
}

sub connected { (status_json()->{redis} || [{}])->[0]{connected} }

# the worker's pid (the harness waits for the port, the worker may come later)
sub worker { wait_for(3, sub { (worker_pids())[0] }) }

sub rss_kb { (do { local (@ARGV, $/) = ("/proc/$_[0]/status"); <> } // '') =~ /^VmRSS:\s+(\d+)/m ? $1 : 0 }

# one request; returns (response, seconds it took)
sub timed_get {
    my $t0 = time;
    my $r = http_get(@_);
    return ($r, time - $t0);
}

sub count_of { ($_[0]{body} // '') =~ /^\{"count":(\d+|null)\}\n\z/ ? $1 : undef }

# a request written on a socket of its own, its response read later
sub start_request {
    my ($path) = @_;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', Proto => 'tcp',
        PeerPort => $ENV{TEST_NGINX_SERVER_PORT}) or die "connect: $@";
    print {$s} "GET $path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    return $s;
}

sub finish_request {
    my ($s, $secs) = @_;
    my $raw = '';
    my $sel = IO::Select->new($s);
    for (my $end = time + $secs; time < $end; ) {
        last unless $sel->can_read($end - time);
        sysread($s, $raw, 65536, length $raw) or last;
    }
    return (PsdTest::HTTP::parse_response($raw))[0];
}

sub is_unavailable {
    my ($r, $name) = @_;
    is $r->{status}, 503, "$name: 503";
    is $r->{headers}{'retry-after'}, 1, "$name: Retry-After: 1";
    is $r->{body}, qq({"error":"backend_unavailable"}\n), "$name: error body";
}

# A fake server for one fault: it answers PING (the handshake) and EXPIRE
# like Redis and hands each INCR to $on_incr->($sock, $cmd), which returns
# false to end the connection (shut down, so that nginx sees the close).
# Every connection is noted in logs/fake-conns.  Returns the psd_redis line
# for it.
sub fake_fault {
    my ($on_incr, $opts) = @_;
    unlink "$SERVROOT/logs/fake-conns";
    fake_redis_start(sub {
        my ($s) = @_;
        open my $fh, '>>', "$SERVROOT/logs/fake-conns";
        print {$fh} "$$\n";
        close $fh;
        while (my $c = fake_redis_read_command($s)) {
            my $cmd = uc $c->[0];
            if ($cmd eq 'PING') { print $s "+PONG\r\n"; next }
            if ($cmd eq 'EXPIRE') { print $s ":1\r\n"; next }
            last unless $on_incr->($s, $c);
        }
        shutdown $s, 2;     # the FIN goes out even if another process has $s open
    }, owner => 'block');
    return "psd_redis main 127.0.0.1:$ENV{TEST_NGINX_FAKE_REDIS_PORT} "
        . "timeout=300ms connect_timeout=300ms " . ($opts // 'max_reply=64k') . ';';
}

sub fake_conns {
    open my $fh, '<', "$SERVROOT/logs/fake-conns" or return 0;
    my @l = <$fh>;
    return scalar @l;
}

# the common check of the fake server blocks: three requests in a row each
# get 503 promptly, nginx still serves, the worker is the same process and
# did not grow
sub check_fault {
    ok wait_for(3, \&connected), 'connected to the fake server';
    my $w = worker();
    my $rss = rss_kb($w);
    for my $i (1 .. 3) {
        my ($r, $t) = timed_get("/c?k=f$i");
        is_unavailable($r, "request $i");
        ok $t < bound(2), sprintf 'request %d answered in %.2f s', $i, $t;
    }
    is http_get('/plain')->{status}, 200, 'nginx still serves';
    is_deeply [ worker_pids() ], [$w], 'the worker did not die';
    my $grew = rss_kb($w) - $rss;
    ok $grew < 16384, "the worker grew by $grew KiB only";
}

run_tests();

__DATA__

=== TEST 1: Redis killed: 503 at once; restarted: back without reload, count from 1
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms
              connect_timeout=200ms;
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- check
my $w = worker();
is count_of(http_get('/c?k=k')), 1, 'counted before the kill';
is count_of(http_get('/c?k=k')), 2, 'counted again';
redis_kill();
for my $i (1 .. 3) {
    my ($r, $t) = timed_get('/c?k=k');
    is_unavailable($r, "down $i");
    ok $t < bound(1), sprintf 'down %d answered in %.2f s', $i, $t;
}
ok wait_for(2, sub { !connected() }), 'status: not connected';
redis_start();
my $t0 = time;
my $r = wait_for(8, sub { my $r = http_get('/c?k=k'); ($r->{status} // 0) == 200 && $r });
ok $r, sprintf 'back after %.2f s', time - $t0;
is count_of($r), 1, 'count starts again at 1 (the new server is empty)';
ok connected(), 'status: connected';
is_deeply [ worker_pids() ], [$w], 'same worker, no reload';
--- error_log eval
[qr/psd: redis "main" at 127\.0\.0\.1:\d+: (server closed the connection|recv\(\) failed)/,
 qr/psd: redis "main" at 127\.0\.0\.1:\d+ is back/]



=== TEST 2: SIGSTOP: 503 after the timeout, other locations unaffected, SIGCONT recovers
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
--- config
    location /c { psd_counter $arg_k; }
    location /plain { return 200 "plain\n"; }
    location /status { psd_status on; }
--- check
my $w = worker();
is count_of(http_get('/c?k=s')), 1, 'counted before the stop';
redis_stop();
my $ok = eval {
    my $t0 = time;
    my $pending = start_request('/c?k=s');
    my ($plain, $tp) = timed_get('/plain');
    is $plain->{body}, "plain\n", 'plain location answers meanwhile';
    ok $tp < bound(0.25), sprintf 'plain location answered in %.3f s', $tp;
    my $r = finish_request($pending, 5);
    my $t = time - $t0;
    is_unavailable($r, 'stopped');
    ok $t >= 0.25 && $t < bound(2), sprintf 'counter answered after %.2f s (timeout 300ms)', $t;
    for my $i (1 .. 2) {
        my ($r, $t) = timed_get('/c?k=s');
        is_unavailable($r, "stopped $i");
        ok $t < bound(2), sprintf 'stopped %d answered in %.2f s', $i, $t;
    }
    1;
};
redis_cont();
die $@ unless $ok;
my $t0 = time;
my $r = wait_for(8, sub { my $r = http_get('/c?k=s'); ($r->{status} // 0) == 200 && $r });
ok $r, sprintf 'back after %.2f s', time - $t0;
# the INCRs sent while Redis was stopped were queued in its socket buffers:
# Redis may still run them, so the count is at least 2
ok count_of($r) >= 2, 'counting again';
ok wait_for(2, \&connected), 'status: connected';
is_deeply [ worker_pids() ], [$w], 'same worker';
--- error_log eval
qr/psd: redis "main" (did not answer within 300 ms|at \S+: server timed out)/



=== TEST 3: wrong password: 503, refusals logged without flooding, no password in the log
--- http_config eval
my $sock = extra_redis('auth', '--requirepass', 'R1ght-Pw-0c44');
"psd_redis main unix:$sock password=Wr0ng-S3cret-a81d timeout=300ms;"
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- check
my ($r, $t) = timed_get('/c?k=w');
is_unavailable($r, 'wrong password');
ok $t < bound(1), sprintf 'answered in %.2f s', $t;
my $refused = qr/\[error\] .*psd: redis "main" refused the handshake: WRONGPASS/;
ok wait_for(2, sub { error_log_text() =~ $refused }), 'refusal logged';
# nginx keeps retrying, but says so at most about once a second (the log
# has whole seconds, so 2 lines may fall in one second)
sleep 0.95;
my @lines = grep { /refused the handshake/ } split /\n/, error_log_text();
ok @lines <= 2, scalar(@lines) . ' refusal lines in the first second (at most 2)'
    or diag join "\n", @lines;
ok !connected(), 'status: not connected';
is http_get('/c?k=w')->{status}, 503, 'still 503';
--- error_log eval
qr/\[error\] .*psd: redis "main" refused the handshake: WRONGPASS/
--- no_error_log
Wr0ng-S3cret
R1ght-Pw



=== TEST 4: SELECT of a database Redis does not have: 503, logged
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT db=99 timeout=300ms;
--- config
    location /c { psd_counter $arg_k; }
--- check
my ($r, $t) = timed_get('/c?k=d');
is_unavailable($r, 'db=99');
ok $t < bound(1), sprintf 'answered in %.2f s', $t;
--- error_log
psd: redis "main" refused the handshake: ERR DB index is out of range



=== TEST 5: commands queued behind a refused SELECT must not run in db 0
--- http_config eval
# Redis is stopped while nginx connects, so the request's INCR is queued
# behind the handshake's SELECT on the same connection
my $sock = extra_redis('select');
signal_extra_redis('select', 'STOP');
"psd_redis main unix:$sock db=99 timeout=3s connect_timeout=3s;"
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- init
my $pending = start_request('/c?k=wrongdb');
ok wait_for(2, sub { status_json()->{redis}[0]{pending} >= 2 }),
   'SELECT and INCR pending';
signal_extra_redis('select', 'CONT');
is finish_request($pending, 5)->{status}, 503, 'the request failed';
--- check
my $sock = "$ENV{TEST_NGINX_SERVROOT}/redis/select.sock";
my $s = IO::Socket::UNIX->new(Peer => $sock) or die $!;
print {$s} "KEYS *\r\n";
is_deeply PsdTest::Redis::_reply($s, time + 5), [],
   'nothing was written to db 0 (INCR ran after SELECT 99 failed)';
--- error_log
psd: redis "main" refused the handshake: ERR DB index is out of range



=== TEST 6: commands queued behind a refused AUTH must not run as the default user
--- http_config eval
# the default user needs no password here; nginx logs in as "psd" with a
# wrong password while Redis is stopped, and a request queues its INCR
my $sock = extra_redis('acl', '--user', 'psd', 'on', '>R1ght-Pw-77b1', '~*', '+@all');
signal_extra_redis('acl', 'STOP');
"psd_redis main unix:$sock user=psd password=Wr0ng-S3cret-3c0d timeout=3s;"
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- init
my $pending = start_request('/c?k=anon');
ok wait_for(2, sub { status_json()->{redis}[0]{pending} >= 2 }),
   'AUTH and INCR pending';
signal_extra_redis('acl', 'CONT');
is finish_request($pending, 5)->{status}, 503, 'the request failed';
--- check
my $sock = "$ENV{TEST_NGINX_SERVROOT}/redis/acl.sock";
my $s = IO::Socket::UNIX->new(Peer => $sock) or die $!;
print {$s} "KEYS *\r\n";
is_deeply PsdTest::Redis::_reply($s, time + 5), [],
   'nothing was written (INCR ran as the default user after AUTH failed)';
--- error_log
psd: redis "main" refused the handshake: WRONGPASS
--- no_error_log
S3cret
R1ght-Pw



=== TEST 7: fake server answers garbage
--- http_config eval
fake_fault(sub { print {$_[0]} "!garbage\r\n"; 1 })
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /plain { return 200; }
    location /status { psd_status on; }
--- check
check_fault();
ok fake_conns() >= 3, 'nginx reconnected after each protocol error';
--- error_log eval
qr/\[error\] .*psd: redis "main" at 127\.0\.0\.1:\d+: protocol error/



=== TEST 8: fake server sends half a reply, then closes
--- http_config eval
fake_fault(sub { print {$_[0]} ":12"; 0 })
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /plain { return 200; }
    location /status { psd_status on; }
--- check
check_fault();
--- error_log eval
qr/\[error\] .*psd: redis "main" at \S+: server closed the connection/



=== TEST 9: fake server closes in the middle of the second reply of a call
--- http_config eval
fake_fault(sub { print {$_[0]} ":1\r\n:"; 0 })
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /plain { return 200; }
    location /status { psd_status on; }
--- check
check_fault();
--- error_log eval
qr/\[error\] .*psd: redis "main" at \S+: server closed the connection/



=== TEST 10: fake server closes without a reply
--- http_config eval
fake_fault(sub { 0 })
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /plain { return 200; }
    location /status { psd_status on; }
--- check
check_fault();
--- error_log eval
qr/\[error\] .*psd: redis "main" at \S+: server closed the connection/



=== TEST 11: fake server announces a 2^63 byte bulk string, then is silent
--- http_config eval
fake_fault(sub {
    my ($s) = @_;
    print $s "\$9223372036854775807\r\n";
    1 while sysread $s, my $buf, 4096;      # until nginx gives up
    0;
})
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /plain { return 200; }
    location /status { psd_status on; }
--- check
check_fault();
--- error_log eval
qr/\[error\] .*psd: redis "main" (did not answer within 300 ms|at \S+: server timed out)/



=== TEST 12: fake server announces a 2^31 element array
--- http_config eval
fake_fault(sub { print {$_[0]} "*2147483647\r\n"; 1 })
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /plain { return 200; }
    location /status { psd_status on; }
--- check
check_fault();
--- error_log eval
qr/\[error\] .*psd: redis "main" at \S+: protocol error/



=== TEST 13: fake server announces an array just over max_reply/3 elements
--- http_config eval
fake_fault(sub { print {$_[0]} "*21846\r\n"; 1 }, 'max_reply=64k')
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /plain { return 200; }
    location /status { psd_status on; }
--- check
check_fault();
--- error_log eval
qr/\[error\] .*psd: redis "main" at \S+: protocol error/



=== TEST 14: fake server streams a 100 MB bulk string: cut at max_reply
--- http_config eval
fake_fault(sub {
    my ($s) = @_;
    print $s '$' . 100 * 1024 * 1024 . "\r\n";
    my $chunk = 'x' x 65536;
    for (1 .. 1600) { print $s $chunk or last }
    0;
})
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /plain { return 200; }
    location /status { psd_status on; }
--- check
check_fault();
--- error_log eval
qr/\[error\] .*psd: redis "main" at \S+: reply too large/



=== TEST 15: fake server nests arrays deeper than the reader allows
--- http_config eval
fake_fault(sub { print {$_[0]} "*1\r\n" x 12 . ":1\r\n"; 1 })
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /plain { return 200; }
    location /status { psd_status on; }
--- check
check_fault();
--- error_log eval
qr/\[error\] .*psd: redis "main" at \S+: protocol error/



=== TEST 16: fake server answers -OOM: 503, logged, the connection stays
--- http_config eval
fake_fault(sub {
    print {$_[0]} "-OOM command not allowed when used memory > 'maxmemory'.\r\n";
    1;
})
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /plain { return 200; }
    location /status { psd_status on; }
--- check
check_fault();
is fake_conns(), 1, 'an error reply does not cost the connection';
--- error_log eval
qr/\[error\] .*psd_counter: redis answered "OOM command not allowed when used memory/
--- no_error_log
[warn]



=== TEST 16b: fake server answers -LOADING and -READONLY: 503, logged, the connection stays
--- http_config eval
fake_fault(sub {
    my ($s, $c) = @_;
    print {$s} $c->[1] =~ /f1/
        ? "-LOADING Redis is loading the dataset in memory\r\n"
        : "-READONLY You can't write against a read only replica.\r\n";
    1;
})
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /plain { return 200; }
    location /status { psd_status on; }
--- check
check_fault();
is fake_conns(), 1, 'error replies do not cost the connection';
--- error_log eval
[qr/psd_counter: redis answered "LOADING Redis is loading/,
 qr/psd_counter: redis answered "READONLY You can't write/]
--- no_error_log
[warn]



=== TEST 16c: fake server sends each reply one byte at a time: assembled, 200
--- http_config eval
fake_fault(sub {
    my ($s) = @_;
    for my $byte (split //, ":7\r\n") {
        print {$s} $byte;
        sleep 0.02;
    }
    1;
})
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /status { psd_status on; }
--- check
ok wait_for(3, \&connected), 'connected to the fake server';
for my $i (1 .. 3) {
    my $r = http_get("/c?k=b$i");
    is $r->{status}, 200, "request $i: 200";
    is count_of($r), 7, "request $i: the count from a reply read byte by byte";
}
is fake_conns(), 1, 'one connection throughout';
--- no_error_log
[error]
[warn]



=== TEST 17: fake server sends a reply nobody asked for: dropped and remade
--- http_config eval
my $flag = "$ENV{TEST_NGINX_SERVROOT}/logs/unsolicited-sent";
unlink $flag, "$ENV{TEST_NGINX_SERVROOT}/logs/fake-conns";
fake_redis_start(sub {
    my ($s) = @_;
    open my $fh, '>>', "$ENV{TEST_NGINX_SERVROOT}/logs/fake-conns";
    print {$fh} "$$\n";
    close $fh;
    my $first = !-e $flag;
    while (my $c = fake_redis_read_command($s)) {
        my $cmd = uc $c->[0];
        print $s $cmd eq 'PING' ? "+PONG\r\n" : $cmd eq 'INCR' ? ":7\r\n" : ":1\r\n";
        if ($first && $cmd eq 'PING') {     # once: a reply to nothing
            open my $f, '>', $flag;
            select undef, undef, undef, 0.2;
            print $s ":666\r\n";
        }
    }
}, owner => 'block');
"psd_redis main 127.0.0.1:$ENV{TEST_NGINX_FAKE_REDIS_PORT} timeout=300ms;"
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- check
my $w = worker();
ok wait_for(3, sub { error_log_text() =~ /unexpected reply/ }), 'unexpected reply noticed';
my $r = wait_for(3, sub { my $r = http_get('/c?k=u'); ($r->{status} // 0) == 200 && $r });
is count_of($r), 7, 'counting again on a new connection';
is fake_conns(), 2, 'one new connection';
is_deeply [ worker_pids() ], [$w], 'same worker';
--- error_log eval
qr/\[error\] .*psd: redis "main" at \S+: unexpected reply/



=== TEST 18: reply arrives after the deadline: 503, the late reply is dropped, the connection stays
--- http_config eval
fake_fault(sub {
    my ($s, $c) = @_;
    if ($c->[1] =~ /slow/) {    # ":100\r\n" in 150 ms steps, done after 600 ms:
        for (':', '1', '0', "0\r\n") {  # each step resets nginx's read timer,
            select undef, undef, undef, 0.15;   # not the call's deadline
            print $s $_;
        }
    } else {
        print $s ":200\r\n";
    }
    1;
})
--- config
    location /c { psd_counter $arg_k; }
    location /plain { return 200; }
    location /status { psd_status on; }
--- check
ok wait_for(3, \&connected), 'connected';
my $w = worker();
my ($r, $t) = timed_get('/c?k=slow');
is_unavailable($r, 'late reply');
ok $t >= 0.25 && $t < bound(2), sprintf 'answered after %.2f s (timeout 300ms)', $t;
sleep 0.45;     # the late ":100" arrives meanwhile
($r) = timed_get('/c?k=fast');
is $r->{status}, 200, 'next call on the same connection';
is count_of($r), 200, 'it gets its own reply, not the late one';
is fake_conns(), 1, 'still the first connection';
is_deeply [ worker_pids() ], [$w], 'same worker';
--- error_log
psd: redis "main" did not answer within 300 ms
--- no_error_log
unexpected reply
server timed out



=== TEST 19: Redis at maxclients refuses nginx: 503; room again: back
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- check
ok wait_for(3, \&connected), 'connected';
is count_of(http_get('/c?k=m')), 1, 'counted';
# this connection takes the only slot; everything is done through it
my $hold = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => redis_port(),
                               Proto => 'tcp') or die "connect: $@";
my $cmd = sub {
    print {$hold} '*' . @_ . "\r\n", map { '$' . length($_) . "\r\n$_\r\n" } @_;
    return PsdTest::Redis::_reply($hold, time + 5);
};
my $ok = eval {
    is $cmd->(qw(CONFIG SET maxclients 1)), 'OK', 'maxclients 1';
    ok $cmd->(qw(CLIENT KILL TYPE normal SKIPME yes)) >= 1, "nginx's connection killed";
    ok wait_for(3, sub { error_log_text() =~ /max number of clients reached/ }),
        'nginx is refused';
    for my $i (1 .. 3) {
        my ($r, $t) = timed_get('/c?k=m');
        is_unavailable($r, "full $i");
        ok $t < bound(1), sprintf 'full %d answered in %.2f s', $i, $t;
    }
    1;
};
eval { $cmd->(qw(CONFIG SET maxclients 10000)) };
close $hold;
die $@ unless $ok;
my $t0 = time;
my $r = wait_for(8, sub { my $r = http_get('/c?k=m'); ($r->{status} // 0) == 200 && $r });
ok $r, sprintf 'back after %.2f s', time - $t0;
is count_of($r), 2, 'counting on';
--- error_log eval
qr/\[error\] .*psd: redis "main" (refused the handshake: ERR max number of clients reached|at \S+: server closed the connection)/



=== TEST 20: client leaves while its command is pending: late reply dropped safely
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=3s;
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- check
ok wait_for(3, \&connected), 'connected';
my $w = worker();
redis_stop();
my $ok = eval {
    my @gone = map { start_request('/c?k=gone') } 1 .. 3;
    sleep 0.1;
    ok status_json()->{redis}[0]{pending} >= 3, 'commands pending';
    close $_ for @gone;
    ok wait_for(2, sub { my $l = do { local (@ARGV, $/) = ("$ENV{TEST_NGINX_SERVROOT}/logs/access.log"); <> };
                         3 <= (() = $l =~ m{"GET /c\?k=gone HTTP/1\.1" 499 }g) }),
       'nginx finished the 3 requests as 499';
    1;
};
redis_cont();
die $@ unless $ok;
ok wait_for(2, sub { status_json()->{redis}[0]{pending} == 0 }), 'late replies arrived';
is redis_cmd('GET', 'psd:{cnt:gone}'), 3, 'the commands ran';
my ($r, $t) = timed_get('/c?k=gone');
is count_of($r), 4, 'the next request gets its own reply';
ok $t < bound(1), sprintf 'promptly (%.2f s)', $t;
ok connected(), 'the connection stayed up';
is_deeply [ worker_pids() ], [$w], 'same worker';
--- no_error_log
[error]



=== TEST 21: max_pending: with Redis stopped, a call over the limit fails at once
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=2s max_pending=2;
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /status { psd_status on; }
--- check
ok wait_for(3, \&connected), 'connected';
redis_stop();
my $ok = eval {
    my $first = start_request('/c?k=p');
    sleep 0.1;
    my ($r, $t) = timed_get('/c?k=p');
    is_unavailable($r, 'over max_pending');
    ok $t < bound(0.5), sprintf 'answered in %.2f s, well before the timeout', $t;
    redis_cont();
    $r = finish_request($first, 5);
    is $r->{status}, 200, 'the first call completes';
    is count_of($r), 1, 'with its count';
    1;
};
redis_cont();
die $@ unless $ok;
is count_of(http_get('/c?k=p')), 2, 'room again';
--- no_error_log
[error]



=== TEST 22: failure_mode=open answers 200 {"count":null} and warns, closed answers 503
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT timeout=200ms
              connect_timeout=200ms;
--- config
    location /open { psd_counter $arg_k failure_mode=open; }
    location /closed { psd_counter $arg_k failure_mode=closed; }
--- request eval
["GET /open?k=o", "GET /closed?k=o", "GET /open?k=o"]
--- error_code eval
[200, 503, 200]
--- response_body eval
["{\"count\":null}\n", "{\"error\":\"backend_unavailable\"}\n", "{\"count\":null}\n"]
--- response_headers eval
["!Retry-After", "Retry-After: 1", "!Retry-After"]
--- check
my @warn = grep { /failing open/ } split /\n/, error_log_text();
is scalar(@warn), 2, 'one warning per request failed open';
ok !grep({ /request:|k=o/ } @warn), 'the warning does not show the request line';
--- error_log eval
qr/\[warn\] .*psd_counter: redis (unavailable|error|timeout), failing open, client: 127\.0\.0\.1$/m



=== TEST 23: no descriptor leak over requests, an outage and a restart
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms
              connect_timeout=200ms;
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /status { psd_status on; }
--- check
ok wait_for(3, \&connected), 'connected';
my $w = worker();
my $fds = count_fds($w);
my $req = "GET /c?k=fd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
my $n = sub { my $st = shift; scalar grep { ($_->{status} // 0) == $st } @{ $_[0] } };
is $n->(200, http_parallel([ ($req) x 25 ])), 25, '25 counted';
redis_kill();
is $n->(503, http_parallel([ ($req) x 10 ])), 10, '10 refused';
redis_start();
ok wait_for(8, sub { (http_get('/c?k=fd')->{status} // 0) == 200 }), 'back';
is $n->(200, http_parallel([ ($req) x 25 ])), 25, '25 counted';
ok wait_for(2, sub { (count_fds($w) // 1e9) <= $fds }), 'descriptors back to ' . $fds
    or diag 'now ' . count_fds($w) . ': ' . join ' ', map { readlink($_) // '' } glob "/proc/$w/fd/*";
is_deeply [ worker_pids() ], [$w], 'same worker';
