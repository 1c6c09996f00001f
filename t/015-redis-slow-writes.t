# Fault injection on the module's writes to Redis (issue 13, "1-byte reads
# and writes"; t/012-redis-faults.t has the replies read one byte at a time).
# A fake Redis with a tiny receive window and MSS (fake_redis_start rcvbuf=
# and mss=) reads its connection one byte per read(2): nginx's send() to it
# returns partial writes and then NGX_AGAIN while ~60 KB EVALSHAs of ticket
# intake (psd_ticket_max_message 60000) are on their way, so the rest goes
# out from the connection's write event (ngx_http_psd_redis_flush), with the
# commands of other requests (psd_counter: INCR + EXPIRE) queued behind.
#
# Every reply must reach its own request: the fake answers each counter key
# with its own number, refuses some tickets by their subject, and notes what
# it received (each ticket's id and a digest of its message) so that the
# test can check that every byte arrived once and in order.  Also: a fake
# that stops reading in the middle of a command (the call timeout answers,
# the connection is remade); the same slow writes over TLS, through a slow
# relay to a redis-server with TLS (SSL_write() retried after the output
# buffer grew: "bad write retry" before SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
# no leaked descriptors, no reload.
use strict;
use warnings;
use lib 't/lib';
use PsdTest qw(:DEFAULT free_port);
no_cluster('fake Redis servers and a TLS redis-server of its own; nothing here uses the cluster');
use JSON::PP ();
use IO::Socket::IP;
use IO::Select;
use POSIX ();
use Errno qw(EAGAIN EINTR EWOULDBLOCK);
use Digest::SHA qw(sha1_hex);
use File::Path qw(make_path);
use Time::HiRes qw(time sleep);

my $SERVROOT = $ENV{TEST_NGINX_SERVROOT};

# time bounds are sanity bounds, stretched like the harness's under valgrind
my $SLOW = $ENV{TEST_NGINX_USE_VALGRIND} ? 8 : 1;
sub bound { $_[0] * $SLOW }

sub wait_for {      # polls $cond every 20 ms for up to $secs
    my ($secs, $cond) = @_;
    for (my $end = time + bound($secs); ; sleep 0.02) {
        my $v = $cond->();
        return $v if $v || time > $end;
    }
}

sub slurp {
    open my $fh, '<:raw', $_[0] or return '';
    local $/;
    return scalar(<$fh>) // '';
}

sub note_line {     # appends a line to logs/<name> (from the fake servers)
    my ($name, $line) = @_;
    open my $fh, '>>', "$SERVROOT/logs/$name" or die "$name: $!";
    print {$fh} "$line\n";
    close $fh;
}

sub status_json {
    my $r = http_get('/status');
    return ($r->{status} // 0) == 200 ? JSON::PP::decode_json($r->{body}) : {};
}

sub connected { (status_json()->{redis} || [{}])->[0]{connected} }

# the worker's pid (the harness waits for the port, the worker may come later)
sub worker { wait_for(3, sub { (worker_pids())[0] }) }

# connections the fake servers of the block accepted (with TEST_NGINX_USE_HUP
# the workers of the block before may connect too: blocks count from a start)
sub fake_conns { scalar(() = slurp("$SERVROOT/logs/fake-conns") =~ /\n/g) }

# what the fake servers received, one line per command:
# "ticket <id> <subject> <message length> <sha1 of the message>", "incr <key>"
sub seen { [ split /\n/, slurp("$SERVROOT/logs/fake-seen") ] }

# --- the fake Redis -------------------------------------------------------------

# A reader of $sock that returns one byte at a time, undef at EOF.  Slow:
# one read(2) per byte, and with $pause a 1 ms sleep every 512 bytes, so that
# nginx's writes keep overtaking it.  Fast (without $slow): reads of 64 KiB.
sub byte_reader {
    my ($sock, $slow, $pause) = @_;
    my ($n, $buf) = (0, '');
    return sub {
        if (!$slow) {
            sysread $sock, $buf, 65536 or return undef if $buf eq '';
            return substr $buf, 0, 1, '';
        }
        my $got = sysread $sock, my $b, 1;
        return undef unless $got;
        sleep 0.001 if $pause && ++$n % 512 == 0;
        return $b;
    };
}

sub resp_line {     # a line without its CRLF, undef at EOF
    my ($byte) = @_;
    my $l = '';
    while (defined(my $b = $byte->())) {
        $l .= $b;
        return substr $l, 0, -2 if substr($l, -2) eq "\r\n";
    }
    return undef;
}

# one command (RESP array of bulk strings) read byte by byte, or undef
sub resp_command {
    my ($byte, $on_name) = @_;
    my $head = resp_line($byte) // return undef;
    $head =~ /^\*(\d+)$/ or die "fake: not a RESP array: $head\n";
    my @args;
    for (1 .. $1) {
        my $len = resp_line($byte) // return undef;
        $len =~ /^\$(\d+)$/ or die "fake: not a bulk string: $len\n";
        my $arg = '';
        for (1 .. $1 + 2) { $arg .= $byte->() // return undef }
        substr($arg, -2) eq "\r\n" or die "fake: bulk string not ended by CRLF\n";
        push @args, substr $arg, 0, -2;
        $on_name->($args[0]) if $on_name && @args == 1;
    }
    return \@args;
}

# The fake's answers, as Redis with the ticket scripts would give them:
# SCRIPT LOAD: the SHA1; EVALSHA of a loaded script: a stream id, or an
# error for tickets whose subject starts with "refuse"; INCR psd:{cnt:cN}:
# 1000 + N (each counter key its own number); EXPIRE: 1; PING: PONG.
sub answer {
    my ($cmd, $scripts, $next_id) = @_;
    my $name = uc $cmd->[0];
    return "+PONG\r\n" if $name eq 'PING';
    if ($name eq 'SCRIPT' && uc($cmd->[1] // '') eq 'LOAD') {
        my $sha = sha1_hex($cmd->[2]);
        $scripts->{$sha} = 1;
        return "\$40\r\n$sha\r\n";
    }
    if ($name eq 'EVALSHA') {
        return "-NOSCRIPT No matching script.\r\n" unless $scripts->{ $cmd->[1] };
        my @argv = @$cmd[ 3 + $cmd->[2] .. $#$cmd ];
        my ($id, %f) = ($argv[0], @argv[3 .. $#argv]);
        note_line('fake-seen', join ' ', 'ticket', $id, $f{subject} // '-',
                  length($f{message} // ''), sha1_hex($f{message} // ''));
        return "-ERR fake refuses ticket $id\r\n" if ($f{subject} // '') =~ /^refuse/;
        my $sid = sprintf '1700000000000-%d', $$next_id++;
        return '$' . length($sid) . "\r\n$sid\r\n";
    }
    if ($name eq 'INCR') {
        note_line('fake-seen', "incr $cmd->[1]");
        return $cmd->[1] =~ /^psd:\{cnt:c(\d+)\}$/ ? ':' . (1000 + $1) . "\r\n"
                                                  : "-ERR fake: unexpected key\r\n";
    }
    return ":1\r\n" if $name eq 'EXPIRE';
    return "-ERR fake: unknown command '$cmd->[0]'\r\n";
}

# slow_redis(stall => 1): the fake server of the blocks.  Every connection is
# noted in logs/fake-conns; commands are read one byte per read(2), with a
# pause every 512 bytes.  With stall, the first connection stops reading for
# good once it has read 1000 bytes into the first EVALSHA (flag file
# logs/stalled); later connections read normally.  Returns the psd_redis
# line.
sub slow_redis {
    my (%o) = @_;
    unlink map { "$SERVROOT/logs/$_" } qw(fake-conns fake-seen stalled);
    fake_redis_start(sub {
        my ($s) = @_;
        note_line('fake-conns', $$);
        my $first = $o{stall} && !-e "$SERVROOT/logs/stalled";
        my $read = byte_reader($s, !$o{stall} || $first, 1);
        my ($count, $eval_at) = (0, undef);
        my $byte = sub {
            if ($first && defined $eval_at && $count - $eval_at >= 1000) {
                note_line('stalled', $$);
                sleep 60 while 1;   # killed when the block ends
            }
            my $b = $read->();
            $count++ if defined $b;
            return $b;
        };
        my $on_name = sub { $eval_at //= $count if uc $_[0] eq 'EVALSHA' };
        my ($scripts, $next_id) = ({}, 1);
        while (my $cmd = resp_command($byte, $on_name)) {
            print {$s} answer($cmd, $scripts, \$next_id);
        }
        shutdown $s, 2;
    }, owner => 'block', rcvbuf => 1024, mss => 536);
    return "psd_redis main 127.0.0.1:$ENV{TEST_NGINX_FAKE_REDIS_PORT} "
        . ($o{opts} // 'timeout=10s') . ';';
}

# --- requests -------------------------------------------------------------------

# a ticket with a 60000-byte message of its own; subject "refuse ..." makes
# the fake answer an error
sub message {
    my ($i) = @_;
    my $m = "ticket $i:";
    $m .= sprintf ' %d.%05d', $i, length $m while length $m < 60000;
    return substr $m, 0, 60000;
}

sub ticket_req {
    my ($i, $subject) = @_;
    my $body = JSON::PP->new->canonical->encode({ email => 'ann@example.org',
        subject => $subject // "slow $i", message => message($i) });
    return "POST /t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\n"
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
}

sub counter_req { "GET /c?k=c$_[0] HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" }

# a request written on a socket of its own, its response read later
sub start_request {
    my ($raw) = @_;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', Proto => 'tcp',
        PeerPort => $ENV{TEST_NGINX_SERVER_PORT}) or die "connect: $@";
    print {$s} $raw;
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
    close $s;
    return (PsdTest::HTTP::parse_response($raw))[0];
}

sub count_of { ($_[0]{body} // '') =~ /^\{"count":(\d+)\}\n\z/ ? $1 : undef }

sub ticket_of {
    my ($r) = @_;
    my $j = eval { JSON::PP::decode_json($r->{body} // '') } || {};
    return $j->{ticket};
}

# checks the answer to ticket $i (refused: 503 + Retry-After) and that the
# fake received its message whole, once
sub check_ticket {
    my ($r, $i, $refused, $name) = @_;
    my @seen = grep { /^ticket / } @{ seen() };
    if ($refused) {
        is $r->{status}, 503, "$name: 503 (the fake refused it)" or diag $r->{raw};
        is $r->{headers}{'retry-after'}, 1, "$name: Retry-After: 1";
        is $r->{body}, qq({"error":"backend_unavailable"}\n), "$name: error body";
        my @mine = grep { / refuse-$i / } @seen;
        is scalar @mine, 1, "$name: the fake got it once";
        like $mine[0] // '', qr/ 60000 \Q${\ sha1_hex(message($i))}\E$/,
             "$name: the whole message, intact";
        return;
    }
    is $r->{status}, 201, "$name: 201" or diag $r->{raw};
    my $id = ticket_of($r) // '?';
    like $id, qr/^general\.[A-Za-z0-9]{16}\z/, "$name: a ticket id";
    my @mine = grep { /^ticket \Q$id\E / } @seen;
    is scalar @mine, 1, "$name: the fake got its EVALSHA once";
    is $mine[0] // '', "ticket $id slow $i 60000 " . sha1_hex(message($i)),
       "$name: with its own subject and the whole message, intact";
}

sub check_counter {
    my ($r, $i, $name) = @_;
    is $r->{status}, 200, "$name: 200" or diag $r->{raw};
    is count_of($r), 1000 + $i, "$name: the count the fake gave its key";
}

# lines of worker $w in the block's error.log at [warn] or worse that match
# none of @ok (only $w's: with TEST_NGINX_USE_HUP the workers of the block
# before log their connection's end here)
sub bad_log_lines {
    my ($w, @ok) = @_;
    return grep { my $l = $_; !grep { $l =~ $_ } @ok }
           grep { /\[(warn|error|crit|alert|emerg)\] $w#/ } split /\n/, error_log_text();
}

# the descriptors of the worker come back to $fds
sub fds_back {
    my ($w, $fds) = @_;
    ok wait_for(3, sub { (count_fds($w) // 1e9) <= $fds }), "descriptors back to $fds"
        or diag 'now ' . count_fds($w) . ': ' . join ' ',
                map { readlink($_) // '' } glob "/proc/$w/fd/*";
}

# --- a redis-server with TLS (only for TEST 4), behind a slow relay -------------

my $TLS = "$ENV{TEST_NGINX_CONF_DIR}/tls";
my $TLS_PORT = free_port();
my $tls_pid;

# The server certificate of t/014-redis-tls.t (EC P-256, CN=localhost, signed
# by that file's test CA, valid to 2126); nginx does not verify it here.
my %PEM = (
    'server.pem' => <<'PEM',
-----BEGIN CERTIFICATE-----
MIIBqTCCAU+gAwIBAgICEAIwCgYIKoZIzj0EAwIwFjEUMBIGA1UEAwwLcHNkIHRl
c3QgY2EwIBcNMDAwMTAxMDAwMDAwWhgPMjEyNjAxMDEwMDAwMDBaMBQxEjAQBgNV
BAMMCWxvY2FsaG9zdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABLIa57m3kF5X
NQkVDjRdO8Z37HcqE83G5K6QKRTU/IC02phyU+q/aQ5sr6+t+4XFRXLlu3d6Mkwr
QNRclGohIFSjgYwwgYkwCQYDVR0TBAIwADALBgNVHQ8EBAMCB4AwEwYDVR0lBAww
CgYIKwYBBQUHAwEwGgYDVR0RBBMwEYIJbG9jYWxob3N0hwR/AAABMB0GA1UdDgQW
BBTDafJKqBnmFre8pbhDjUjFuz/y2TAfBgNVHSMEGDAWgBRUHBduyi3AJBgKIIyl
mM7Yu0xa/TAKBggqhkjOPQQDAgNIADBFAiBpidKC3Pf/Aq243QFzWThCy6Nn7ZN3
7lKl9icX0TzstgIhAL3SNa1qhHRjQi/l1DH91z0M8awwfX5BkuaHT7ZCyO+w
-----END CERTIFICATE-----
PEM
    'server.key' => <<'PEM',
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgltb5xQGEeEmmkFDb
pXXYBp8Gsr6njPRi8rTyl5sqbgehRANCAASyGue5t5BeVzUJFQ40XTvGd+x3KhPN
xuSukCkU1PyAtNqYclPqv2kObK+vrfuFxUVy5bt3ejJMK0DUXJRqISBU
-----END PRIVATE KEY-----
PEM
);

sub tls_redis_start {
    make_path($TLS, "$SERVROOT/redis");
    for my $name (sort keys %PEM) {
        open my $fh, '>', "$TLS/$name" or die "$TLS/$name: $!";
        print {$fh} $PEM{$name};
        close $fh or die "$TLS/$name: $!";
    }
    chmod 0600, "$TLS/server.key";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$SERVROOT/logs/redis-tls.log";
        open STDERR, '>&', \*STDOUT;
        exec($PsdTest::Redis::BINARY, '--port', '0', '--tls-port', $TLS_PORT,
            '--bind', '127.0.0.1', '--tls-cert-file', "$TLS/server.pem",
            '--tls-key-file', "$TLS/server.key", '--tls-auth-clients', 'no',
            '--save', '', '--appendonly', 'no', '--dir', "$SERVROOT/redis")
            or POSIX::_exit(127);
    }
    $tls_pid = $pid;
    for (1 .. 250) {
        return if IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $TLS_PORT);
        die "redis-server (TLS) exited, see logs/redis-tls.log\n"
            if waitpid($pid, POSIX::WNOHANG()) > 0;
        sleep 0.02;
    }
    die "redis-server (TLS) does not listen on $TLS_PORT\n";
}

END {
    local $?;
    if ($tls_pid) { kill KILL => $tls_pid; waitpid $tls_pid, 0 }
}

# A relay from the fake server's port to the TLS redis-server: what nginx
# sends is read one byte at a time (a pause every 512 bytes) and passed on,
# the server's answers go back at once.  Returns the psd_redis line.
sub slow_relay {
    unlink "$SERVROOT/logs/fake-conns";
    fake_redis_start(sub {
        my ($s) = @_;
        note_line('fake-conns', $$);
        my $up = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $TLS_PORT,
                                     Proto => 'tcp') or die "relay: $@";
        $up->autoflush(1);
        $s->blocking(0);
        my $sel = IO::Select->new($s, $up);
        while (1) {
            for my $h ($sel->can_read(1)) {
                if ($h == $up) {
                    sysread($up, my $buf, 65536) or return;
                    $s->blocking(1);
                    print {$s} $buf;
                    $s->blocking(0);
                    next;
                }
                my $buf = '';
                while (length $buf < 512) {
                    my $got = sysread $s, $buf, 1, length $buf;
                    next if $got;
                    return if defined $got;         # EOF
                    last if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
                    return;
                }
                print {$up} $buf;
                sleep 0.001 if length $buf == 512;
            }
        }
    }, owner => 'block', rcvbuf => 1024, mss => 536);
    return "psd_redis main 127.0.0.1:$ENV{TEST_NGINX_FAKE_REDIS_PORT} tls timeout=10s;";
}

sub tls_cmd {       # a command to the TLS server, with redis-cli
    open my $fh, '-|', 'redis-cli', '--tls', '--insecure', '-h', '127.0.0.1',
         '-p', $TLS_PORT, @_ or die "redis-cli: $!";
    my $out = do { local $/; <$fh> } // '';
    close $fh;
    $out =~ s/\n\z//;
    return $out;
}

tls_redis_start();

run_tests();

__DATA__

=== TEST 1: the fake reads byte by byte: the handshake and a counter go through, one connection
--- http_config eval
slow_redis()
--- config
    location = /t { psd_ticket; psd_ticket_max_message 60000; }
    location /c { psd_counter $arg_k ttl=60; }
    location /status { psd_status on; }
--- check
ok wait_for(5, \&connected), 'connected (3 SCRIPT LOADs answered)';
my $w = worker();
my $conns = fake_conns();
check_counter(http_get('/c?k=c7'), 7, 'counter');
is fake_conns(), $conns, 'on the same connection';
is_deeply [ bad_log_lines($w) ], [], 'no [warn] or [error] lines';



=== TEST 2: big EVALSHAs written in pieces with counters queued behind: every reply to its own request
--- http_config eval
slow_redis()
--- config
    location = /t { psd_ticket; psd_ticket_max_message 60000; }
    location /c { psd_counter $arg_k ttl=60; }
    location /status { psd_status on; }
--- check
ok wait_for(5, \&connected), 'connected';
my $w = worker();
my $fds = count_fds($w);
my $conns = fake_conns();
my $t0 = time;

# five tickets (one refused by the fake), each on a socket of its own:
# 300 KB, where nginx's socket takes less than 100 KB
my %refused = (2 => 1, 6 => 1);
my @first = map { start_request(ticket_req($_, $refused{$_} ? "refuse-$_" : undef)) } 1 .. 5;

# nginx had to wait for the socket: the rest goes out from the write event
ok wait_for(10, sub { error_log_text() =~ /send\(\) not ready/ }),
   "nginx's send() to the fake would block (NGX_AGAIN)";

# meanwhile counters and two more tickets, all at once, queued behind
my @reqs = ((map { counter_req($_) } 1 .. 6), ticket_req(6, 'refuse-6'),
            (map { counter_req($_) } 7 .. 12), ticket_req(7),
            (map { counter_req($_) } 13 .. 16));
my $rs = http_parallel(\@reqs, timeout => bound(40));
my @later = @$rs;
check_counter(shift @later, $_, "counter $_") for 1 .. 6;
check_ticket(shift @later, 6, 1, 'ticket 6');
check_counter(shift @later, $_, "counter $_") for 7 .. 12;
check_ticket(shift @later, 7, 0, 'ticket 7');
check_counter(shift @later, $_, "counter $_") for 13 .. 16;
check_ticket(finish_request($first[$_ - 1], bound(40)), $_, $refused{$_}, "ticket $_")
    for 1 .. 5;
my $took = time - $t0;
ok $took < bound(20), sprintf 'all answered in %.1f s (a sanity bound; timeout=10s)', $took;

my @seen = @{ seen() };
is scalar(grep { /^ticket / } @seen), 7, 'the fake got 7 EVALSHAs';
is scalar(grep { /^incr / } @seen), 16, 'and 16 INCRs';
my $log = error_log_text();
my @sends = $log =~ /send: fd:\d+ (\d+) of (\d+)/g;
my @partial = grep { $sends[2 * $_] < $sends[2 * $_ + 1] } 0 .. @sends / 2 - 1;
ok scalar @partial, scalar(@partial) . ' partial send()s to the fake'
    or diag 'the sends: ' . join ', ', $log =~ /send: fd:\d+ (\d+ of \d+)/g;
my $not_ready = () = $log =~ /send\(\) not ready/g;
ok $not_ready >= 1, "send() not ready $not_ready times";
is scalar(() = $log =~ /psd_ticket: redis answered "ERR fake refuses ticket/g), 2,
   'the two refusals logged';
is_deeply [ bad_log_lines($w, qr/psd_ticket: redis answered "ERR fake refuses ticket general\.\w+"/) ],
    [], 'no other [warn] or [error] lines';

# afterwards, on the same connection: still right, without a reload
check_counter(http_get('/c?k=c' . (100 + $_)), 100 + $_, "afterwards: counter $_") for 1 .. 3;
check_ticket(http_request(ticket_req(8)), 8, 0, 'afterwards: ticket 8');
is fake_conns(), $conns, 'one connection throughout';
is_deeply [ worker_pids() ], [$w], 'same worker';
fds_back($w, $fds);
--- no_error_log
unexpected reply
protocol error
send() failed
server timed out
did not answer



=== TEST 3: the fake stops reading in the middle of an EVALSHA: 503 after timeout=, the connection is remade
--- http_config eval
slow_redis(stall => 1, opts => 'timeout=1s')
--- config
    location = /t { psd_ticket; psd_ticket_max_message 60000; }
    location /c { psd_counter $arg_k ttl=60; }
    location /status { psd_status on; }
--- check
ok wait_for(5, \&connected), 'connected';
my $w = worker();
my $fds = count_fds($w);
my $conns = fake_conns();

my @stuck = map { start_request(ticket_req($_)) } 1 .. 3;
ok wait_for(5, sub { -e "$ENV{TEST_NGINX_SERVROOT}/logs/stalled" }),
   'the fake stopped reading 1000 bytes into the first EVALSHA';
ok wait_for(5, sub { error_log_text() =~ /send\(\) not ready/ }),
   "nginx's send() would block";
my $rs = http_parallel([ map { counter_req($_) } 1 .. 4 ], timeout => bound(10));
for my $i (1 .. 4) {
    is $rs->[$i - 1]{status}, 503, "counter $i behind it: 503";
    is $rs->[$i - 1]{headers}{'retry-after'}, 1, "counter $i: Retry-After: 1";
}
for my $i (1 .. 3) {
    my $r = finish_request($stuck[$i - 1], bound(10));
    is $r->{status}, 503, "ticket $i: 503" or diag $r->{raw};
    is $r->{headers}{'retry-after'}, 1, "ticket $i: Retry-After: 1";
    is $r->{body}, qq({"error":"backend_unavailable"}\n), "ticket $i: error body";
}

# the connection is dropped and remade; the fake's next connection answers
ok wait_for(10, sub { fake_conns() > $conns && connected() }), 'a new connection';
my $r = wait_for(10, sub { my $r = http_get('/c?k=c9'); ($r->{status} // 0) == 200 && $r });
check_counter($r || {}, 9, 'counter on the new connection');
check_ticket(http_request(ticket_req(4)), 4, 0, 'ticket on the new connection');
is fake_conns(), $conns + 1, 'one new connection';
is_deeply [ worker_pids() ], [$w], 'same worker, no reload';
fds_back($w, $fds);
is_deeply [ bad_log_lines($w, qr/psd: redis "main" did not answer within 1000 ms/,
                          qr/psd: redis "main" at 127\.0\.0\.1:\d+: server timed out/) ],
    [], 'no other [warn] or [error] lines';
--- error_log eval
qr/psd: redis "main" (did not answer within 1000 ms|at 127\.0\.0\.1:\d+: server timed out)/



=== TEST 4: the same over TLS: SSL_write() retried from the write event after the buffer grew (no "bad write retry")
--- http_config eval
slow_relay()
--- config
    location = /t { psd_ticket; psd_ticket_max_message 60000; }
    location /c { psd_counter $arg_k ttl=60; }
    location /status { psd_status on; }
--- check
ok wait_for(10, \&connected), 'connected over TLS, through the relay';
my $w = worker();
my $fds = count_fds($w);
my $conns = fake_conns();
tls_cmd('FLUSHALL');
my $t0 = time;
my @first = map { start_request(ticket_req($_)) } 1 .. 4;
ok wait_for(10, sub { error_log_text() =~ /SSL_get_error: 3\b/ }),
   'SSL_write() wanted to write (SSL_ERROR_WANT_WRITE)';
my @reqs = ((map { counter_req($_) } 1 .. 6), ticket_req(5),
            (map { counter_req($_) } 7 .. 12));
my @later = @{ http_parallel(\@reqs, timeout => bound(40)) };
for my $i (1 .. 6, 7 .. 12) {
    my $r = $i <= 6 ? $later[$i - 1] : $later[$i];
    is $r->{status}, 200, "counter $i: 200" or diag $r->{raw};
    is count_of($r), 1, "counter $i: 1";
}
is $later[6]{status}, 201, 'ticket 5: 201' or diag $later[6]{raw};
for my $i (1 .. 4) {
    my $r = finish_request($first[$i - 1], bound(40));
    is $r->{status}, 201, "ticket $i: 201" or diag $r->{raw};
}
my $took = time - $t0;
ok $took < bound(20), sprintf 'all answered in %.1f s (a sanity bound; timeout=10s)', $took;
is tls_cmd('XLEN', 'psd:{tq:general}'), 5, 'five tickets in the stream';
is tls_cmd('GET', 'psd:{cnt:c12}'), 1, 'the counters counted';
is count_of(http_get('/c?k=c1')), 2, 'afterwards: counting on';
is fake_conns(), $conns, 'one connection throughout';
is_deeply [ worker_pids() ], [$w], 'same worker';
fds_back($w, $fds);
is_deeply [ bad_log_lines($w) ], [], 'no [warn] or [error] lines';
--- no_error_log
bad write retry
send() failed
