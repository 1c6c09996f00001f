package PsdTest::Cluster;

# Redis Cluster and Sentinel groups on loopback for the tests: processes
# under the test file's servroot (redis/c<port>/, redis/s<port>/), free
# ports, killed when the file ends, and a cluster-aware redis_cmd.  See
# t/lib/README.md, "Redis Cluster and Sentinel".

use strict;
use warnings;
use POSIX ();
use File::Path qw(make_path);
use Time::HiRes qw(time sleep);
use PsdTest::Redis qw(redis_cmd_at redis_pipeline_at);
use Exporter 'import';

our @EXPORT = qw(cluster_start cluster_stop cluster_cmd cluster_slot
    cluster_node_for_key cluster_nodes cluster_primaries cluster_ports
    cluster_seeds cluster_flushall cluster_wait_ok cluster_kill_primary
    cluster_wait_failover cluster_node_start cluster_node_kill
    cluster_migrate_slot cluster_migrate_wait cluster_migrate_running
    cluster_key_on cluster_key_in_slot
    sentinel_start sentinel_stop sentinel_cmd sentinel_query
    sentinel_master_port sentinel_failover sentinel_wait_failover
    sentinel_ports);

our $CLI = $ENV{TEST_NGINX_REDIS_CLI} || '/usr/bin/redis-cli';
our $WAIT = 30;         # seconds for a cluster or a failover to settle

my %proc;               # port => { pid, dir, args }
# data nodes: no persistence, replicas sync at once
my @DATA_ARGS = ('--save', '', '--appendonly', 'no', '--daemonize', 'no',
    '--dir', '.', '--repl-diskless-sync-delay', '0');
my ($cluster, $sentinel);

sub _servroot { $PsdTest::Redis::SERVROOT }
sub _log { "${\ _servroot()}/logs/$_[0]" }

# --- processes ------------------------------------------------------------------

sub _running {      # also in a child of the test (a background migration)
    my $p = $proc{$_[0]};
    return 0 unless $p && $p->{pid};
    my $w = waitpid($p->{pid}, POSIX::WNOHANG());
    return $w == 0 || $w == -1 && kill 0, $p->{pid};
}

# Starts redis-server in redis/<tag><port>/ (where a run killed hard finds
# it: PsdTest kills processes whose cwd is under redis/); args after the
# optional config file name.
sub _spawn {
    my ($port, $tag, @args) = @_;
    my $dir = "${\ _servroot()}/redis/$tag$port";
    make_path($dir, "${\ _servroot()}/logs");
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        chdir $dir or POSIX::_exit(127);
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', _log("redis-$tag$port.log");
        open STDERR, '>&', \*STDOUT;
        exec $PsdTest::Redis::BINARY, @args
            or print STDERR "exec $PsdTest::Redis::BINARY: $!\n";
        POSIX::_exit(127);
    }
    $proc{$port} = { pid => $pid, dir => $dir, tag => $tag, args => \@args };
    _wait_for("redis-server on port $port answers PING", 10, sub {
        die "redis-server on port $port exited, see "
            . _log("redis-$tag$port.log") . "\n" unless _running($port);
        (eval { local $PsdTest::Redis::TIMEOUT = 1;
                redis_cmd_at($port, 'PING') } // '') eq 'PONG';
    });
    return $port;
}

sub _kill_port {
    my ($port) = @_;
    my $p = $proc{$port} or return;
    if ($p->{pid}) { kill KILL => $p->{pid}; waitpid $p->{pid}, 0 }
    $p->{pid} = undef;
}

# Polls $ok every 50 ms until it returns true (its value is returned) or
# $seconds pass (dies naming $what and the last error of $ok, if any).
sub _wait_for {
    my ($what, $seconds, $ok) = @_;
    my $err = '';
    for (my $end = time + $seconds; ; sleep 0.05) {
        my $r = eval { $ok->() };
        return $r if $r;
        $err = $@ if $@;
        die "timed out after $seconds s waiting until $what"
            . ($err ? ": $err" : "\n") if time > $end;
    }
}

sub _stop_all {     # PsdTest's END and cluster_stop / sentinel_stop
    my (@tags) = @_;
    for my $port (keys %proc) {
        next if @tags && !grep { $_ eq $proc{$port}{tag} } @tags;
        _kill_port($port);
        delete $proc{$port};
    }
}

# --- slots ---------------------------------------------------------------------

my @CRC = map {
    my $c = $_ << 8;
    $c = $c & 0x8000 ? ($c << 1) ^ 0x1021 : $c << 1 for 1 .. 8;
    $c & 0xffff;
} 0 .. 255;

# cluster_slot($key): the key's hash slot (CRC16/XMODEM of the hash tag, the
# first {...} with something inside, or of the whole key, mod 16384).
sub cluster_slot {
    my ($key) = @_;
    $key = $1 if $key =~ /^[^{]*\{([^}]+)\}/s;
    my $crc = 0;
    $crc = (($crc << 8) & 0xffff) ^ $CRC[(($crc >> 8) ^ $_) & 0xff]
        for unpack 'C*', $key;
    return $crc & 16383;
}

# --- cluster -------------------------------------------------------------------

# The cluster's view from the first live node that answers: a list of
# { id, port, role => 'master' | 'slave', master => id, flags, slots =>
# [[from, to], ...], link }, primaries first, by port.
sub cluster_nodes {
    die "no cluster\n" unless $cluster;
    for my $port (sort { $a <=> $b } grep { _running($_) } @{ $cluster->{ports} }) {
        my $text = eval { redis_cmd_at($port, 'CLUSTER', 'NODES') };
        next unless defined $text && !ref $text && $text !~ /^-/;
        my @n;
        for (split /\n/, $text) {
            my ($id, $addr, $flags, $master, undef, undef, undef, $link, @slots)
                = split ' ';
            my ($p) = $addr =~ /:(\d+)/ or next;
            push @n, { id => $id, port => $p, flags => $flags,
                role => $flags =~ /master/ ? 'master' : 'slave',
                master => $master eq '-' ? undef : $master, link => $link,
                slots => [ map { /^(\d+)(?:-(\d+))?$/ ? [$1, $2 // $1] : () }
                           @slots ] };
        }
        return sort { $a->{role} cmp $b->{role} || $a->{port} <=> $b->{port} } @n;
    }
    die "no cluster node answers CLUSTER NODES\n";
}

# The ports of the primaries that serve slots (live ones, as the cluster
# sees it); in scalar context how many.
sub cluster_primaries {
    return map { $_->{port} } grep { $_->{role} eq 'master' && @{ $_->{slots} }
        && $_->{flags} !~ /fail/ } cluster_nodes();
}

sub cluster_ports { $cluster ? @{ $cluster->{ports} } : () }   # all nodes
sub cluster_seeds { $cluster ? $cluster->{seeds} : undef }

sub _id_of {
    my ($port) = @_;
    my ($n) = grep { $_->{port} == $port } cluster_nodes();
    return $n ? $n->{id} : die "port $port is no cluster node\n";
}

sub _slot_owner {
    my ($slot, $nodes) = @_;
    for my $n (grep { $_->{role} eq 'master' } @$nodes) {
        return $n->{port} if grep { $slot >= $_->[0] && $slot <= $_->[1] } @{ $n->{slots} };
    }
    return undef;
}

# cluster_node_for_key($key): the port of the primary that owns the key's
# slot now.
sub cluster_node_for_key { _slot_owner(cluster_slot($_[0]), [cluster_nodes()]) }

# cluster_key_on($port, $format): the first sprintf($format, 0, 1, ...)
# whose slot $port owns, e.g. cluster_key_on($p, 'psd:{cnt:k%d}').
sub cluster_key_on {
    my ($port, $format) = @_;
    my @n = cluster_nodes();
    for my $i (0 .. 100000) {
        my $k = sprintf $format, $i;
        return $k if (_slot_owner(cluster_slot($k), \@n) // 0) == $port;
    }
    die "no key of '$format' on port $port\n";
}

# cluster_key_in_slot($slot, $format): the first sprintf($format, 0, 1, ...)
# in that slot, e.g. another counter beside one: cluster_key_in_slot(
# cluster_slot('psd:{cnt:a}'), 'psd:{cnt:b%d}').
sub cluster_key_in_slot {
    my ($slot, $format) = @_;
    for my $i (0 .. 1000000) {
        my $k = sprintf $format, $i;
        return $k if cluster_slot($k) == $slot;
    }
    die "no key of '$format' in slot $slot\n";
}

# cluster_start(primaries => 3, replicas => 0, node_timeout => 2000, options
# => [redis-server arguments]): starts the nodes with --cluster-enabled yes
# (and the options, e.g. ['--cluster-require-full-coverage', 'no']), joins
# them with redis-cli --cluster create (one primary: CLUSTER ADDSLOTSRANGE),
# and waits until cluster_wait_ok.  The cluster then is the
# test's Redis (redis_cmd goes through cluster_cmd, every block starts with
# cluster_flushall).  Sets TEST_NGINX_CLUSTER_SEEDS ("127.0.0.1:p1 ...", the
# primaries) and TEST_NGINX_CLUSTER_PORTS (every node).  Returns the seeds.
sub cluster_start {
    my (%o) = @_;
    die "cluster_start: a cluster runs already\n" if $cluster;
    my ($np, $nr) = ($o{primaries} // 3, $o{replicas} // 0);
    die "cluster_start: redis-cli --cluster create needs 3 primaries for replicas\n"
        if $nr && $np < 3;
    my @ports = map { $o{ports} ? $o{ports}[$_] : PsdTest::free_port() }
        0 .. $np * (1 + $nr) - 1;
    $cluster = { ports => \@ports, node_timeout => $o{node_timeout} // 2000 };
    for my $port (@ports) {
        _spawn($port, 'c', '--port', $port, '--bind', '127.0.0.1',
            '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf',
            '--cluster-node-timeout', $cluster->{node_timeout},
            '--cluster-port', PsdTest::free_port(), @DATA_ARGS,
            @{ $o{options} || [] });
    }
    if ($np == 1) {
        my $r = redis_cmd_at($ports[0], qw(CLUSTER ADDSLOTSRANGE 0 16383));
        die "CLUSTER ADDSLOTSRANGE: $r\n" unless $r eq 'OK';
    } else {
        my $out = _log('cluster-create.log');
        system("$CLI --cluster create " . join(' ', map { "127.0.0.1:$_" } @ports)
            . " --cluster-replicas $nr --cluster-yes >$out 2>&1") == 0
            or die "redis-cli --cluster create failed, see $out\n";
    }
    cluster_wait_ok(nodes => scalar @ports);
    $cluster->{seeds} = join ' ', map { "127.0.0.1:$_" } cluster_primaries();
    $ENV{TEST_NGINX_CLUSTER_SEEDS} = $cluster->{seeds};
    $ENV{TEST_NGINX_CLUSTER_PORTS} = join ' ', @ports;
    $PsdTest::Redis::ROUTER = { name => 'a cluster', cmd => \&cluster_cmd,
                                flush => \&cluster_flushall };
    return $cluster->{seeds};
}

sub cluster_stop {
    _stop_all('c');
    $PsdTest::Redis::ROUTER = undef
        if $PsdTest::Redis::ROUTER && $PsdTest::Redis::ROUTER->{cmd} == \&cluster_cmd;
    $cluster = undef;
    delete @ENV{qw(TEST_NGINX_CLUSTER_SEEDS TEST_NGINX_CLUSTER_PORTS)};
}

# cluster_wait_ok(nodes => n): until every live node says cluster_state:ok
# and cluster_slots_ok:16384, they agree on roles and on who owns which
# slots, no live node is in handshake or flagged failed, and replicas'
# links to their primaries are up; nodes => n: each knows n nodes.
sub cluster_wait_ok {
    my (%o) = @_;
    my @live = grep { _running($_) } @{ $cluster->{ports} };
    _wait_for('the cluster is ok', $o{timeout} // $WAIT, sub {
        my %map;
        for my $port (@live) {
            my $info = redis_cmd_at($port, 'CLUSTER', 'INFO');
            die "port $port: $info\n" unless $info =~ /cluster_state:ok/
                && $info =~ /cluster_slots_ok:16384\b/;
            my $nodes = redis_cmd_at($port, 'CLUSTER', 'NODES');
            my @lines = split /\n/, $nodes;
            die "port $port knows " . @lines . " nodes\n"
                if $o{nodes} && @lines != $o{nodes};
            for (@lines) {
                my ($id, $addr, $flags, $master, undef, undef, undef, $link, @s)
                    = split ' ';
                my ($p) = $addr =~ /:(\d+)/;
                die "port $port sees $addr as $flags $link\n"
                    if $flags =~ /handshake|noaddr/ || ($flags =~ /fail/
                        || $link ne 'connected') && _running($p);
                my $role = $flags =~ /master/ ? 'm' : "s<$master>";
                $map{$port} .= "$p $id $role @s;";
            }
            my $repl = redis_cmd_at($port, 'INFO', 'replication');
            die "replica $port: link to its primary is down\n"
                if $repl =~ /role:slave/ && $repl !~ /master_link_status:up/;
        }
        my %views = map { join(',', sort split /;/, $_) => 1 } values %map;
        die "nodes disagree about roles and slots\n" if keys %views > 1;
        1;
    });
}

# cluster_flushall(): FLUSHALL on every primary.
sub cluster_flushall {
    for (cluster_primaries()) {
        my $r = redis_cmd_at($_, 'FLUSHALL');
        return "port $_: $r" unless $r eq 'OK';
    }
    return 'OK';
}

my %KEYLESS = map { $_ => 1 } qw(PING ECHO TIME COMMAND CLUSTER ROLE LASTSAVE
    HELLO AUTH READONLY READWRITE LOLWUT DEBUG MEMORY SLOWLOG LATENCY ACL
    PUBLISH MONITOR SAVE BGSAVE WAIT);

# The key a command (name, then its arguments) is routed by (undef: any
# node); a wrong guess costs a MOVED.
sub _route_key {
    my ($name, @args) = @_;
    return undef if $KEYLESS{$name};
    return $args[1] > 0 ? $args[2] : undef
        if $name =~ /^(EVAL|EVALSHA|EVAL_RO|EVALSHA_RO|FCALL|FCALL_RO)$/;
    if ($name =~ /^XREAD/) {
        my ($i) = grep { uc $args[$_] eq 'STREAMS' } 0 .. $#args;
        return defined $i ? $args[$i + 1] : undef;
    }
    return $args[0];
}

# INFO of several nodes as one text: integer fields (total_connections_
# received:5, cmdstat_incr:calls=3,...) summed, others from the first node.
sub _info_sum {
    my (@texts) = @_;
    my (@order, %val);
    for my $t (@texts) {
        for my $line (split /\r?\n/, $t) {
            my ($k, $v) = $line =~ /^([^#:][^:]*):(.*)$/ or do {
                push @order, $line unless $line ne '' && grep { $_ eq $line } @order;
                next;
            };
            if (!exists $val{$k}) { push @order, $k; $val{$k} = $v; next }
            if ($v =~ /^-?\d+$/ && $val{$k} =~ /^-?\d+$/) { $val{$k} += $v; next }
            my %add = $v =~ /(\w+)=(-?\d+)(?=,|$)/g;
            $val{$k} =~ s/(\w+)=(-?\d+)(?=,|$)/"$1=" . ($2 + ($add{$1} \/\/ 0))/ge;
        }
    }
    return join '', map { exists $val{$_} ? "$_:$val{$_}\r\n" : "$_\r\n" } @order;
}

# cluster_cmd(@cmd): one command to the cluster.  Keyed commands go to the
# node that owns the key's slot and follow MOVED and ASK (ASKING first) and
# TRYAGAIN; FLUSHALL, FLUSHDB, DBSIZE, KEYS, SCAN (one complete iteration of
# every primary, cursor "0"), INFO (integer fields summed), CONFIG SET and
# RESETSTAT, SCRIPT and CLIENT LIST/PAUSE/UNPAUSE go to every primary and
# are merged.  Replies as redis_cmd's.
sub cluster_cmd {
    my (@cmd) = @_;
    my $name = uc($cmd[0] // '');
    my $sub = uc($cmd[1] // '');
    my @all = ($name =~ /^(FLUSHALL|FLUSHDB|DBSIZE|KEYS|SCAN|INFO|SCRIPT)$/
        || $name eq 'CONFIG' && $sub =~ /^(SET|RESETSTAT)$/
        || $name eq 'CLIENT' && $sub =~ /^(LIST|PAUSE|UNPAUSE)$/)
        ? cluster_primaries() : ();
    if (@all) {
        my @r;
        for my $port (@all) {
            if ($name eq 'SCAN') {
                my ($cursor, @keys) = (0);
                do {
                    my $r = redis_cmd_at($port, 'SCAN', $cursor, @cmd[2 .. $#cmd]);
                    return $r unless ref $r;
                    ($cursor, my $k) = @$r;
                    push @keys, @$k;
                } while ($cursor ne '0');
                push @r, \@keys;
            } else {
                push @r, redis_cmd_at($port, @cmd);
            }
            return $r[-1] if !ref $r[-1] && defined $r[-1] && $r[-1] =~ /^-/;
        }
        return [ '0', [ sort map { @$_ } @r ] ] if $name eq 'SCAN';
        return [ sort map { @$_ } @r ] if $name eq 'KEYS';
        my $n = 0;
        return do { $n += $_ for @r; $n } if $name eq 'DBSIZE';
        return _info_sum(@r) if $name eq 'INFO';
        return join '', @r if $name eq 'CLIENT' && $sub eq 'LIST';
        if ($name eq 'SCRIPT' && $sub eq 'EXISTS') {     # on every primary
            return [ map { my $i = $_; (grep { !$_->[$i] } @r) ? 0 : 1 }
                     0 .. $#{ $r[0] } ];
        }
        return $r[0];
    }
    my $key = _route_key($name, @cmd[1 .. $#cmd]);
    my ($port) = defined $key ? _slot_owner(cluster_slot($key), [cluster_nodes()])
        : cluster_primaries();
    my ($asking, $redirects, $end) = (0, 0, time + $PsdTest::Redis::TIMEOUT);
    while (1) {
        die "cluster_cmd(@cmd): no node to send it to\n" unless $port;
        my @r = redis_pipeline_at($port, $asking ? (['ASKING']) : (), \@cmd);
        my $r = $r[-1];
        return $r if ref $r || !defined $r;
        if ($r =~ /^-(MOVED|ASK) \d+ [^:]*:(\d+)/ && ++$redirects < 16) {
            ($port, $asking) = ($2, $1 eq 'ASK');
        } elsif ($r =~ /^-TRYAGAIN/ && time < $end) {   # keys of a slot in transit
            sleep 0.05;
        } else {
            return $r;
        }
    }
}

# cluster_node_kill($port): SIGKILL one node.
sub cluster_node_kill { _kill_port($_[0]) }

# cluster_node_start($port): starts a node killed before again (it keeps its
# nodes.conf, so it rejoins: a former primary whose slots a replica took
# becomes that replica's replica) and waits until the cluster is ok.
sub cluster_node_start {
    my ($port) = @_;
    my $p = $proc{$port} or die "cluster_node_start: $port is no node\n";
    _spawn($port, 'c', @{ $p->{args} }) unless _running($port);
    cluster_wait_ok(nodes => scalar @{ $cluster->{ports} });
}

# cluster_kill_primary($port): SIGKILL a primary; returns its slot ranges.
sub cluster_kill_primary {
    my ($port) = @_;
    my ($n) = grep { $_->{port} == $port && $_->{role} eq 'master' }
        cluster_nodes() or die "cluster_kill_primary: $port is no primary\n";
    $cluster->{killed}{$port} = $n->{slots};
    _kill_port($port);
    return $n->{slots};
}

# cluster_wait_failover($port): after cluster_kill_primary($port), until a
# replica serves all of its slots and the cluster is ok; returns the new
# primary's port.
sub cluster_wait_failover {
    my ($port, %o) = @_;
    my $slots = $cluster->{killed}{$port}
        or die "cluster_wait_failover: $port was not killed\n";
    my $new = _wait_for("a replica took the slots of $port", $o{timeout} // $WAIT, sub {
        my @n = cluster_nodes();
        my %owner = map { ($_ // 0) => 1 } map { _slot_owner($_->[0], \@n),
            _slot_owner($_->[1], \@n) } @$slots;
        my ($o) = keys %owner;
        return keys %owner == 1 && $o && $o != $port && _running($o) ? $o : 0;
    });
    cluster_wait_ok(%o);
    return $new;
}

# cluster_migrate_slot($slot, $from, $to, step => sub { my ($phase, @keys) =
# @_; ... }, batch => n): moves a slot the documented way: SETSLOT IMPORTING
# on $to, SETSLOT MIGRATING on $from, MIGRATE the keys (n per call, default
# 100), SETSLOT NODE on $to, $from and the other primaries.  step is called
# with 'migrating' (both SETSLOTs done, no key moved: the ASK phase),
# 'batch' after each MIGRATE with its keys, 'moved' (all keys on $to, slot
# still open), 'done'.  $from defaults to the owner, $to to the next primary.
# Returns $to.
#
# With background => 1 the migration runs in a child process, pausing
# `pause` seconds (default 0.5) after each step, while the test sends
# traffic; it returns a handle for cluster_migrate_wait.
sub cluster_migrate_slot {
    my ($slot, $from, $to, %o) = @_;
    return _migrate_background(@_) if $o{background};
    my @n = cluster_nodes();
    $from //= _slot_owner($slot, \@n);
    my @p = cluster_primaries();
    $to //= (grep { $_ != $from } @p)[0];
    my ($fid, $tid) = map { _id_of($_) } $from, $to;
    my $step = $o{step} || sub {};
    my $ok = sub { my ($port, @c) = @_; my $r = redis_cmd_at($port, @c);
        die "port $port: @c: $r\n" unless ($r // '') eq 'OK'; };
    $ok->($to, 'CLUSTER', 'SETSLOT', $slot, 'IMPORTING', $fid);
    $ok->($from, 'CLUSTER', 'SETSLOT', $slot, 'MIGRATING', $tid);
    $step->('migrating');
    while (1) {
        my $keys = redis_cmd_at($from, 'CLUSTER', 'GETKEYSINSLOT', $slot,
                                $o{batch} // 100);
        die "GETKEYSINSLOT: $keys\n" unless ref $keys;
        last unless @$keys;
        my $r = redis_cmd_at($from, 'MIGRATE', '127.0.0.1', $to, '', 0, 5000,
                             'KEYS', @$keys);
        die "MIGRATE: $r\n" unless $r eq 'OK' || $r eq 'NOKEY';
        $step->('batch', @$keys);
    }
    $step->('moved');
    $ok->($_, 'CLUSTER', 'SETSLOT', $slot, 'NODE', $tid)
        for $to, $from, grep { $_ != $to && $_ != $from } @p;
    cluster_wait_ok();
    $step->('done');
    return $to;
}

sub _migrate_background {
    my ($slot, $from, $to, %o) = @_;
    my $pause = $o{pause} // 0.5;
    pipe(my $r, my $w) or die "pipe: $!\n";
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {        # no END blocks here: they would stop the test's servers
        close $r;
        $w->autoflush(1);
        my $ok = eval {
            my $t = cluster_migrate_slot($slot, $from, $to, %o, background => 0,
                step => sub {
                    my ($phase) = @_;
                    printf {$w} "%s %.6f\n", $phase, time;
                    $o{step}->(@_) if $o{step};
                    sleep $pause unless $phase eq 'done';
                });
            print {$w} "to $t\n";
            1;
        };
        print {$w} 'error ' . ($@ =~ s/\n/ /gr) . "\n" unless $ok;
        POSIX::_exit($ok ? 0 : 1);
    }
    close $w;
    return { pid => $pid, fh => $r };
}

# cluster_migrate_wait($handle): waits for a background migration; returns
# { to => port, phases => { migrating => time, moved => time, done =>
# time, batch => [times] } } or dies with the child's error.
sub cluster_migrate_wait {
    my ($h) = @_;
    my $fh = $h->{fh};
    my %r = (phases => { batch => [] });
    my $err;
    while (my $line = <$fh>) {
        chomp $line;
        my ($k, $v) = split ' ', $line, 2;
        if ($k eq 'to') { $r{to} = $v }
        elsif ($k eq 'error') { $err = $v }
        elsif ($k eq 'batch') { push @{ $r{phases}{batch} }, $v }
        else { $r{phases}{$k} = $v }
    }
    close $fh;
    waitpid $h->{pid}, 0 unless defined $h->{status};
    $h->{status} //= $?;
    die "background migration: " . ($err // "exit status $h->{status}") . "\n"
        if $h->{status} || $err;
    return \%r;
}

# cluster_migrate_running($handle): the background migration still runs.
sub cluster_migrate_running {
    my ($h) = @_;
    return 0 if defined $h->{status};
    return 1 if waitpid($h->{pid}, POSIX::WNOHANG()) == 0;
    $h->{status} = $?;
    return 0;
}

# --- Sentinel ------------------------------------------------------------------

# sentinel_start(master => 'psdmaster', replicas => 1, sentinels => 3,
# down_after => 1000, failover_timeout => 5000): a primary, its replicas
# (replicaof) and sentinels (redis-server <conf> --sentinel, quorum 2);
# waits until the replicas are in sync and SENTINEL CKQUORUM passes on every
# sentinel.  The primary then is the test's Redis (redis_cmd goes to the
# current primary).  Sets TEST_NGINX_SENTINELS ("127.0.0.1:s1 ...") and
# TEST_NGINX_SENTINEL_MASTER.  Returns the primary's port.
sub sentinel_start {
    my (%o) = @_;
    die "sentinel_start: a Sentinel group runs already\n" if $sentinel;
    my $name = $o{master} // 'psdmaster';
    my @data = map { PsdTest::free_port() } 0 .. ($o{replicas} // 1);
    my @sent = map { PsdTest::free_port() } 1 .. ($o{sentinels} // 3);
    $sentinel = { name => $name, data => \@data, sentinels => \@sent,
                  master => $data[0] };
    for my $port (@data) {
        _spawn($port, 'm', '--port', $port, '--bind', '127.0.0.1', @DATA_ARGS,
            $port == $data[0] ? () : ('--replicaof', '127.0.0.1', $data[0]));
    }
    _wait_for('the replicas are in sync', $WAIT, sub {
        my $i = redis_cmd_at($data[0], 'INFO', 'replication');
        my $n = () = $i =~ /^slave\d+:.*state=online/mg;
        $n == @data - 1;
    });
    my $quorum = $o{quorum} // (int(@sent / 2) + 1);
    for my $port (@sent) {
        my $dir = "${\ _servroot()}/redis/s$port";
        make_path($dir);
        open my $fh, '>', "$dir/sentinel.conf" or die "$dir/sentinel.conf: $!\n";
        print {$fh} "port $port\nbind 127.0.0.1\ndaemonize no\ndir $dir\n"
            . "sentinel monitor $name 127.0.0.1 $data[0] $quorum\n"
            . "sentinel down-after-milliseconds $name " . ($o{down_after} // 1000) . "\n"
            . "sentinel failover-timeout $name " . ($o{failover_timeout} // 5000) . "\n"
            . "sentinel parallel-syncs $name 1\n";
        close $fh;
        _spawn($port, 's', 'sentinel.conf', '--sentinel');
    }
    _wait_for('every sentinel reaches quorum', $WAIT, sub {
        for my $port (@sent) {
            my $r = redis_cmd_at($port, 'SENTINEL', 'CKQUORUM', $name);
            die "sentinel $port: $r\n" unless $r =~ /^OK/;
            my $s = redis_cmd_at($port, 'SENTINEL', 'SENTINELS', $name);
            die "sentinel $port knows " . @$s . " others\n" unless @$s == @sent - 1;
            my $r2 = redis_cmd_at($port, 'SENTINEL', 'REPLICAS', $name);
            die "sentinel $port knows " . @$r2 . " replicas\n" unless @$r2 == @data - 1;
        }
        1;
    });
    $ENV{TEST_NGINX_SENTINELS} = join ' ', map { "127.0.0.1:$_" } @sent;
    $ENV{TEST_NGINX_SENTINEL_MASTER} = $name;
    $PsdTest::Redis::ROUTER = { name => 'a Sentinel group', cmd => \&sentinel_cmd,
        flush => sub { sentinel_cmd('FLUSHALL') } };
    return $data[0];
}

sub sentinel_stop {
    _stop_all('m', 's');
    $PsdTest::Redis::ROUTER = undef
        if $PsdTest::Redis::ROUTER && $PsdTest::Redis::ROUTER->{cmd} == \&sentinel_cmd;
    $sentinel = undef;
    delete @ENV{qw(TEST_NGINX_SENTINELS TEST_NGINX_SENTINEL_MASTER)};
}

# sentinel_ports(): (primary and replica ports, sentinel ports) as two
# array refs, in the order they were started.
sub sentinel_ports { $sentinel ? ($sentinel->{data}, $sentinel->{sentinels}) : () }

# sentinel_query($sentinel_port, @cmd): a command to one sentinel.
sub sentinel_query { redis_cmd_at(@_) }

# sentinel_master_port(): the primary's port as the first live sentinel
# that answers says.
sub sentinel_master_port {
    die "no Sentinel group\n" unless $sentinel;
    for my $port (grep { _running($_) } @{ $sentinel->{sentinels} }) {
        my $r = eval { redis_cmd_at($port, 'SENTINEL',
                                    'GET-MASTER-ADDR-BY-NAME', $sentinel->{name}) };
        return $r->[1] if ref $r && @$r == 2;
    }
    die "no sentinel answers GET-MASTER-ADDR-BY-NAME\n";
}

# sentinel_cmd(@cmd): a command to the current primary.
sub sentinel_cmd { redis_cmd_at(sentinel_master_port(), @_) }

# sentinel_failover(rejoin => 1, wait => 1): SENTINEL FAILOVER, then
# sentinel_wait_failover.  With wait => 0 it returns the old primary's port
# at once, for sentinel_wait_failover($old) after traffic.
sub sentinel_failover {
    my (%o) = @_;
    my $old = sentinel_master_port();
    my ($s) = grep { _running($_) } @{ $sentinel->{sentinels} };
    my $r = redis_cmd_at($s, 'SENTINEL', 'FAILOVER', $sentinel->{name});
    die "SENTINEL FAILOVER: $r\n" unless $r eq 'OK';
    return $old if defined $o{wait} && !$o{wait};
    return sentinel_wait_failover($old, %o);
}

# sentinel_wait_failover($old, rejoin => 1): waits until every live
# sentinel names a new primary that says role:master and (rejoin, the
# default) the old primary replicates from it: Sentinel reconfigures it at
# its next INFO, up to 10 s later; until then both say role:master.
# Returns the new primary's port.
sub sentinel_wait_failover {
    my ($old, %o) = @_;
    my $new = _wait_for("the sentinels name a new primary", $o{timeout} // $WAIT, sub {
        my %p = map { (redis_cmd_at($_, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME',
                                    $sentinel->{name})->[1]) => 1 }
            grep { _running($_) } @{ $sentinel->{sentinels} };
        my ($p) = keys %p;
        return 0 unless keys %p == 1 && $p != $old;
        return redis_cmd_at($p, 'ROLE')->[0] eq 'master' ? $p : 0;
    });
    _wait_for("the old primary $old replicates from $new", $o{timeout} // $WAIT, sub {
        return 1 unless _running($old) && ($o{rejoin} // 1);
        my $i = redis_cmd_at($old, 'INFO', 'replication');
        $i =~ /master_port:$new\b/ && $i =~ /master_link_status:up/;
    });
    $sentinel->{master} = $new;
    return $new;
}

1;
