package PsdTest::Redis;

# The test file's own redis-server (a child process on a loopback port), a
# small RESP client for it, and fake Redis servers for fault injection.

use strict;
use warnings;
use IO::Socket::IP;
use IO::Select;
use Socket qw(SOL_SOCKET SO_RCVBUF IPPROTO_TCP TCP_MAXSEG);
use POSIX ();
use File::Path qw(make_path);
use Time::HiRes qw(time sleep);
use Exporter 'import';

our @EXPORT_OK = qw(redis_cmd redis_port redis_pid redis_stop redis_cont
    redis_kill redis_start redis_restart fake_redis_start fake_redis_stop
    fake_redis_read_command redis_cmd_at redis_pipeline_at);

our ($PORT, $FAKE_PORT, $SERVROOT);     # set by PsdTest
our $BINARY = $ENV{TEST_NGINX_REDIS_BINARY} || '/usr/bin/redis-server';
our $TIMEOUT = 5;       # seconds for one redis_cmd
our $OWNER;             # tag of the fake servers started now (PsdTest: block)
our @CLOSE_IN_CHILD;    # handles a fake server must not keep (PsdTest's locks)
# When a cluster or a Sentinel group is the test's Redis (PsdTest::Cluster),
# { name => ..., cmd => sub { reply } }: redis_cmd goes there, and the
# functions that act on the single redis-server refuse to run.
our $ROUTER;
my ($pid, $stopped, @fakes);

sub redis_port { $PORT }
sub redis_pid  { $pid }

# --- RESP ---------------------------------------------------------------------

# Reads from $sock (buffer kept in the socket's glob) until $len->($buffer)
# says how many bytes to take; returns them.  Dies on timeout or EOF.
sub _take {
    my ($sock, $deadline, $len) = @_;
    my $buf = \(${*$sock}{psd_buf} //= '');
    my $n;
    until (defined($n = $len->($$buf))) {
        my $left = $deadline - time;
        die "timeout\n" if $left <= 0
            || !IO::Select->new($sock)->can_read($left);
        sysread($sock, $$buf, 65536, length $$buf) or die "connection closed\n";
    }
    return substr $$buf, 0, $n, '';
}

sub _line {
    my $l = _take(@_, sub { my $i = index $_[0], "\r\n"; $i < 0 ? undef : $i + 2 });
    return substr $l, 0, -2;
}

sub _bulk {
    my ($sock, $deadline, $n) = @_;
    return substr _take($sock, $deadline,
        sub { length $_[0] >= $n + 2 ? $n + 2 : undef }), 0, $n;
}

sub _reply {
    my ($sock, $deadline) = @_;
    my $line = _line($sock, $deadline);
    my ($t, $v) = (substr($line, 0, 1), substr($line, 1));
    return $t eq '-' ? $line : $v if $t eq '+' || $t eq ':' || $t eq '-';
    die "bad RESP line '$line'\n" unless $t eq '$' || $t eq '*';
    return undef if $v < 0;
    return _bulk($sock, $deadline, $v) if $t eq '$';
    return [ map { _reply($sock, $deadline) } 1 .. $v ];
}

# redis_cmd('SET', 'k', 'v') sends one command to the test redis-server on a
# new connection and returns the reply: status and integer replies and bulk
# strings as plain scalars ("OK", 1, "value"), nil as undef, arrays as array
# refs, and errors as a string starting with "-" ("-ERR unknown command...").
# Dies when Redis cannot be reached or does not answer in $TIMEOUT seconds.
# When the test's Redis is a cluster, the command goes through the cluster.
sub redis_cmd {
    return $ROUTER->{cmd}->(@_) if $ROUTER;
    return redis_cmd_at($PORT, @_);
}

# redis_cmd_at($port, @args): one command to 127.0.0.1:$port.
sub redis_cmd_at {
    my ($port, @args) = @_;
    return (redis_pipeline_at($port, \@args))[0];
}

# redis_pipeline_at($port, [@cmd1], [@cmd2], ...): the commands in one write
# on one new connection (ASKING before a command, for example); returns the
# replies in order.
sub redis_pipeline_at {
    my ($port, @cmds) = @_;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port,
                                Proto => 'tcp', Timeout => $TIMEOUT)
        or die "redis_cmd: cannot connect to 127.0.0.1:$port: $@\n";
    print {$s} map { my $c = $_; '*' . @$c . "\r\n",
        map { '$' . length($_) . "\r\n$_\r\n" } @$c } @cmds;
    my $deadline = time + $TIMEOUT;
    my @r = eval { map { _reply($s, $deadline) } @cmds };
    die "redis_cmd(@{ $cmds[-1] }) on port $port: $@" if $@;
    return @r;
}

# For fake server handlers: reads one command (RESP array or inline line);
# returns it as an array ref of strings, or undef at EOF or after 60 s.
sub fake_redis_read_command {
    my ($sock) = @_;
    my $deadline = time + 60;
    return eval {
        my $line = _line($sock, $deadline);
        return [ split ' ', $line ] unless $line =~ /^\*(\d+)$/;
        [ map { _line($sock, $deadline) =~ /^\$(\d+)$/ or die "bad bulk\n";
                _bulk($sock, $deadline, $1) } 1 .. $1 ];
    };
}

# --- the real redis-server ----------------------------------------------------

sub _alive { $pid && waitpid($pid, POSIX::WNOHANG()) == 0 }

sub _single {       # the functions below act on the single redis-server
    return unless $ROUTER;
    my $f = (caller 1)[3] =~ s/.*:://r;
    die "$f: the test's Redis is $ROUTER->{name}, not one redis-server;"
        . " mark the block --- no_cluster (see t/lib/README.md)\n";
}

sub redis_start { _single(); _start() }

sub _start {
    if (_alive()) { _cont() if $stopped; return $pid }
    make_path("$SERVROOT/redis", "$SERVROOT/logs");
    $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$SERVROOT/logs/redis.log";
        open STDERR, '>&', \*STDOUT;
        exec $BINARY, '--port', $PORT, '--bind', '127.0.0.1', '--save', '',
            '--appendonly', 'no', '--daemonize', 'no',
            '--dir', "$SERVROOT/redis" or print STDERR "exec $BINARY: $!\n";
        POSIX::_exit(127);
    }
    $stopped = 0;
    for (1 .. 500) {
        die "redis-server exited, see $SERVROOT/logs/redis.log\n" unless _alive();
        my $pong = eval { local $TIMEOUT = 1; redis_cmd_at($PORT, 'PING') };
        return $pid if ($pong // '') eq 'PONG';
        sleep 0.02;
    }
    die "redis-server does not answer PING on port $PORT\n";
}

sub redis_stop { _single(); kill STOP => $pid if _alive(); $stopped = 1 }
sub redis_cont { _single(); _cont() }
sub _cont { kill CONT => $pid if _alive(); $stopped = 0 }

sub redis_kill { _single(); _kill() }

# Stops the single redis-server if it runs (also in cluster mode: PsdTest's
# END and run_tests use it).
sub _kill {
    return unless $pid;
    kill KILL => $pid;
    waitpid $pid, 0;
    ($pid, $stopped) = (undef, 0);
}

sub redis_restart { _single(); _kill(); _start() }

# --- fake Redis servers -------------------------------------------------------

# fake_redis_start(sub { my ($sock) = @_; ... }, port => P) forks a server on
# 127.0.0.1:P (default $TEST_NGINX_FAKE_REDIS_PORT) that runs the handler in
# a new process for each connection; returns the port.
# rcvbuf => bytes, mss => bytes: a small receive buffer and a small maximum
# segment size for the connections, so that a client's writes back up: both
# are set on the listening socket, before any SYN, because the window and the
# MSS are announced in the SYN-ACK.  Both are needed on loopback, where an
# MSS of 64 KiB makes the client's send buffer grow to about 4 MB.
sub fake_redis_start {
    my ($handler, %o) = @_;
    my $port = $o{port} // $FAKE_PORT;
    my $l = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => $port,
                                Listen => 128, ReuseAddr => 1, Proto => 'tcp')
        or die "fake_redis_start: cannot listen on $port: $@\n";
    setsockopt($l, SOL_SOCKET, SO_RCVBUF, pack 'i', $o{rcvbuf})
        or die "fake_redis_start: SO_RCVBUF: $!\n" if $o{rcvbuf};
    setsockopt($l, IPPROTO_TCP, TCP_MAXSEG, pack 'i', $o{mss})
        or die "fake_redis_start: TCP_MAXSEG: $!\n" if $o{mss};
    make_path("$SERVROOT/redis");
    my $spid = fork // die "fork: $!";
    if (!$spid) {
        POSIX::setpgid(0, 0);   # fake_redis_stop kills the process group
        # Not holding the test's locks, and findable (like redis-server, by
        # its cwd) by the next run if this one is killed hard.
        close $_ for @CLOSE_IN_CHILD;
        chdir "$SERVROOT/redis";
        @SIG{qw(CHLD PIPE INT TERM HUP)} = qw(IGNORE DEFAULT DEFAULT DEFAULT DEFAULT);
        while (1) {
            my $c = $l->accept or next;
            my $h = fork;
            if (defined $h && !$h) {
                close $l;
                $c->autoflush(1);
                eval { $handler->($c) };
                POSIX::_exit(0);
            }
            close $c;
        }
    }
    POSIX::setpgid($spid, $spid);
    close $l;
    push @fakes, [ $spid, $port, $o{owner} // $OWNER // '' ];
    return $port;
}

# fake_redis_stop(): stops every fake server (PsdTest passes "block" to stop
# those started during a block when the block ends).
sub fake_redis_stop {
    my ($owner) = @_;
    for my $f (grep { !defined $owner || $_->[2] eq $owner } @fakes) {
        kill KILL => -$f->[0], $f->[0];
        waitpid $f->[0], 0;
    }
    @fakes = grep { defined $owner && $_->[2] ne $owner } @fakes;
}

1;
