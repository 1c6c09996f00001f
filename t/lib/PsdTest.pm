package PsdTest;

# The project's nginx test harness: Test::Nginx-style data blocks, one real
# redis-server per test file, fake Redis servers, and checks for alerts,
# sanitizer reports and valgrind errors after every block.  See README.md.

use strict;
use warnings;

# Code of --- init / --- check / eval sections is compiled here, before any
# file-scoped lexical of this module exists, so that it cannot see them.
# Arguments: code, a name for messages, true to compile it as a sub.
sub _compile_in_main {
    my @r = eval "package main;\n" . ($_[2] ? 'sub {' : '')
        . "\n#line 1 \"" . ($_[1] =~ tr/"\n//dr) . "\"\n$_[0]\n"
        . ($_[2] ? '}' : '');
    die $@ if $@;
    return $r[-1];
}

use Test::More ();
use IO::Socket::IP;
use POSIX ();
use Time::HiRes qw(time sleep);
use File::Path qw(make_path remove_tree);
use File::Basename qw(basename dirname);
use Cwd qw(abs_path);
use Fcntl qw(:flock);
use Socket qw(PF_UNIX SOCK_STREAM pack_sockaddr_un);
use PsdTest::HTTP qw(http_request http_get http_parallel);
use PsdTest::Redis qw(redis_cmd redis_port redis_pid redis_stop redis_cont
    redis_kill redis_start redis_restart fake_redis_start fake_redis_stop
    fake_redis_read_command redis_cmd_at redis_pipeline_at);
use PsdTest::Cluster;
use Exporter ();

our @ISA = ('Exporter');
our @EXPORT = (qw(run_tests redis_cmd redis_port redis_pid redis_stop
    redis_cont redis_kill redis_start redis_restart fake_redis_start
    fake_redis_stop fake_redis_read_command nginx_pid worker_pids
    error_log_text http_request http_get http_parallel count_fds
    redis_cmd_at redis_pipeline_at no_cluster cluster_mode nginx_start_extra nginx_stop_extra
    nginx_extra_port nginx_extra_log), @PsdTest::Cluster::EXPORT);
our @EXPORT_OK = qw(nginx_t memcheck_reports module_path free_port);

our $REPO = abs_path(dirname(__FILE__) . '/../..');
our $SERVROOT = "$REPO/t/servroot/" . basename($0, '.t');
our $NGINX = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
our $PORT;

my $VALGRIND = $ENV{TEST_NGINX_USE_VALGRIND};
my $ASAN = $ENV{TEST_NGINX_USE_ASAN};
my $HUP = $ENV{TEST_NGINX_USE_HUP} && !$VALGRIND;
my $VERBOSE = $ENV{TEST_NGINX_VERBOSE};
# TEST_NGINX_REDIS_CLUSTER: '' (one redis-server), 'single' (one node with
# --cluster-enabled yes that owns every slot, configs unchanged) or any other
# true value (3 primaries, psd_redis lines rewritten to "cluster <seeds>")
our $CLUSTER = $ENV{TEST_NGINX_REDIS_CLUSTER} // '';
$CLUSTER = '' if $CLUSTER eq '0';
my $SLOW = $VALGRIND ? 8 : 1;           # timeout factor
my $MAIN_PID = $$;
my %SECTION = map { $_ => 1 } qw(main_config http_config config request
    more_headers request_body raw_request error_code response_body
    response_body_like response_headers response_headers_like error_log
    no_error_log must_die ONLY SKIP timeout wait workers user_files init check
    no_cluster);
my ($nginx_pid, $log_off, $stderr_off, $setup_done, @locks);
my %extra;                              # more nginx instances by name
our ($cur_block, %cur_values);          # the block running, its sections

sub import {
    my $caller = caller;
    eval "package $caller; use Test::More; 1" or die $@;
    __PACKAGE__->export_to_level(1, @_);
    _setup() unless $setup_done++;
}

sub module_path {
    my $m = $ENV{PSD_MODULE} || "$REPO/build/modules/ngx_http_psd_module.so";
    return $m =~ m{^/} ? $m : "$REPO/$m";
}

sub _slurp {
    my ($file, $offset) = @_;
    open my $fh, '<:raw', $file or return '';
    seek $fh, $offset, 0 if $offset;
    local $/;
    return scalar(<$fh>) // '';
}

sub _spew {
    my ($file, $data) = @_;
    make_path(dirname $file);
    open my $fh, '>:raw', $file or die "cannot write $file: $!\n";
    print {$fh} $data;
    close $fh or die "cannot write $file: $!\n";
}

sub _fail {
    my ($name, $why) = @_;
    Test::More::fail($name);
    Test::More::diag($why);
    return 0;
}

sub _procs {    # ([pid, ppid], ...) of all processes
    return grep { @$_ } map { [ _slurp($_) =~ /^(\d+) \(.*\) \S+ (\d+)/s ] }
        glob '/proc/[0-9]*/stat';
}

# A free loopback port: random in 20000-29999 (below the ephemeral range),
# bindable now, and reserved against the other test processes for the
# lifetime of this one by an abstract unix socket named after it.
sub free_port {
    for (1 .. 500) {
        my $port = 20000 + int rand 10000;
        socket(my $lock, PF_UNIX, SOCK_STREAM, 0) or die "socket: $!\n";
        bind($lock, pack_sockaddr_un("\0psd-test-port-$port")) or next;
        IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => $port,
                            Proto => 'tcp', Listen => 1) or next;
        push @locks, $lock;
        return $port;
    }
    die "PsdTest: no free port found\n";
}
*_free_port = \&free_port;      # its old name (t/030-limit.t)

sub _setup {
    # Two runs of one test file in one checkout would share the servroot.
    make_path("$REPO/t/servroot");
    open my $lock, '>', "$SERVROOT.lock" or die "$SERVROOT.lock: $!\n";
    print STDERR "# waiting for another run of $0 to finish\n"
        unless flock $lock, LOCK_EX | LOCK_NB;
    flock $lock, LOCK_EX or die "flock $SERVROOT.lock: $!\n";
    push @locks, $lock;
    *PsdTest::Redis::CLOSE_IN_CHILD = \@locks;
    $PORT = $PsdTest::HTTP::PORT = free_port();
    $PsdTest::Redis::PORT = free_port();
    $PsdTest::Redis::FAKE_PORT = free_port();
    $PsdTest::Redis::SERVROOT = $SERVROOT;
    @ENV{map { "TEST_NGINX_$_" } qw(SERVER_PORT REDIS_PORT FAKE_REDIS_PORT
        SERVROOT HTML_DIR CONF_DIR REPO)} = ($PORT, $PsdTest::Redis::PORT,
        $PsdTest::Redis::FAKE_PORT, $SERVROOT, "$SERVROOT/html",
        "$SERVROOT/conf", $REPO);
    # nginx (also extra instances), redis-server, cluster nodes, sentinels
    # and fake servers left running by an earlier run killed hard
    my %old;
    for (glob("$SERVROOT/logs/nginx.pid $SERVROOT/nginx-*/logs/nginx.pid")) {
        my ($old) = _slurp($_) =~ /(\d+)/;
        $old{$old} = 1 if $old && _slurp("/proc/$old/cmdline") =~ /\Q$SERVROOT/;
    }
    for (_procs()) {
        my ($pid, $ppid) = @$_;
        kill KILL => $pid if $old{$pid} || $old{$ppid}
            || (readlink("/proc/$pid/cwd") // '') =~ m{^\Q$SERVROOT\E/redis(/|$)};
    }
    remove_tree($SERVROOT);
    make_path(map { "$SERVROOT/$_" } qw(conf html logs tmp));
    $SIG{PIPE} = 'IGNORE';
    $SIG{$_} = sub { exit 1 } for qw(INT TERM HUP);
    # In cluster mode the cluster starts when first used (a file may opt out
    # with no_cluster first); the single redis-server's functions refuse.
    $PsdTest::Redis::ROUTER = { name => 'a cluster (TEST_NGINX_REDIS_CLUSTER)',
        cmd => sub { _suite_cluster(); redis_cmd(@_) },
        flush => sub { _suite_cluster(); cluster_flushall() } } if $CLUSTER;
}

# cluster_mode(): the suite runs against a cluster (TEST_NGINX_REDIS_CLUSTER):
# 'single' or 'cluster'; '' otherwise.
sub cluster_mode { $CLUSTER eq '' ? '' : $CLUSTER eq 'single' ? 'single' : 'cluster' }

# no_cluster('why'): the whole file is skipped in cluster mode (call it
# before any test runs).
sub no_cluster {
    my ($why) = @_;
    Test::More::plan(skip_all => "not in cluster mode: $why") if $CLUSTER;
}

sub _suite_cluster {
    return if PsdTest::Cluster::cluster_seeds();
    if (cluster_mode() eq 'single') {   # on the port configs name
        cluster_start(primaries => 1, ports => [$PsdTest::Redis::PORT]);
    } else {
        # no replicas, so no failover: a long node timeout keeps a busy
        # machine from flagging a slow node failed (CLUSTERDOWN)
        cluster_start(primaries => 3, replicas => 0, node_timeout => 15000);
    }
}

# In cluster mode, "psd_redis <name> 127.0.0.1:<the test redis's port>
# [options];" becomes "psd_redis <name> cluster <seeds> [options];"; db=0 is
# dropped, another db= is an error (the block must be marked no_cluster).
sub _cluster_rewrite {
    my ($text) = @_;
    return $text unless cluster_mode() eq 'cluster' && defined $text && !ref $text;
    _suite_cluster();
    my $seeds = cluster_seeds();
    $text =~ s{(\bpsd_redis\s+\S+\s+)(?:127\.0\.0\.1|localhost):$PsdTest::Redis::PORT(?!\d)([^;]*)}{
        my ($head, $opts) = ($1, $2);
        $opts =~ s/\s+db=0(?=\s|$)//g;
        die "psd_redis with $1 on the test redis cannot run on a cluster:"
            . " mark the block --- no_cluster\n" if $opts =~ /\b(db=\S+)/;
        "${head}cluster $seeds$opts";
    }ge;
    return $text;
}

END {
    if ($setup_done && $$ == $MAIN_PID) {
        local $?;
        _stop_nginx();
        _stop_extra();
        fake_redis_stop();
        PsdTest::Redis::_kill();
        PsdTest::Cluster::_stop_all();
        my $tb = Test::More->builder;
        if ($ENV{TEST_NGINX_NO_CLEAN} || !$tb->is_passing) {
            print STDERR "# servroot kept: $SERVROOT\n";
        } else {
            remove_tree($SERVROOT);
        }
    }
}

# --- nginx processes -----------------------------------------------------------

sub _nginx_cmd {
    my ($prefix, $conf, @args) = @_;
    my @cmd = ($NGINX, '-p', "$prefix/", '-c', $conf, @args);
    return @cmd unless $VALGRIND;
    return ('valgrind', '--leak-check=full', '--show-possibly-lost=no',
        '--errors-for-leak-kinds=definite', '--num-callers=30',
        "--suppressions=$REPO/t/lib/valgrind.supp",
        "--log-file=$prefix/logs/valgrind.%p.log", @cmd);
}

# fork + exec with stdout and stderr appended to $out; returns the pid.  In
# ASan mode the sanitizer runtimes are preloaded (nginx is not built with
# them, the module is) and write their reports to logs/asan.* / ubsan.*.
sub _spawn {
    my ($out, $logs, @cmd) = @_;
    my $pid = fork // die "fork: $!\n";
    return $pid if $pid;
    open STDIN, '<', '/dev/null';
    open STDOUT, '>>', $out;
    open STDERR, '>&', \*STDOUT;
    if ($ASAN) {
        chomp(my @libs = map { `gcc -print-file-name=$_` } qw(libasan.so libubsan.so));
        $ENV{LD_PRELOAD} = join ' ', grep { m{^/} } @libs;
        $ENV{ASAN_OPTIONS} = "detect_leaks=0:log_path=$logs/asan";
        $ENV{UBSAN_OPTIONS} = "print_stacktrace=1:log_path=$logs/ubsan";
    }
    exec @cmd or print STDERR "exec $cmd[0]: $!\n";
    POSIX::_exit(127);
}

sub _exited { waitpid($_[0], POSIX::WNOHANG()) != 0 }   # sets $?
sub _gone { !kill(0, $_[0]) || _slurp("/proc/$_[0]/stat") =~ /^\d+ \(.*\) Z/s }
sub _status { sprintf 'exit code %d, signal %d', $_[0] >> 8, $_[0] & 127 }

# nginx_t(prefix => dir, conf => 'conf/x.conf', args => [...]) runs
# "nginx -t" (under valgrind or with the ASan runtime in those modes) and
# returns ($wait_status, $output), $wait_status being the process's $?.
sub nginx_t {
    my (%o) = @_;
    my $prefix = $o{prefix} // $SERVROOT;
    my $out = "$prefix/logs/nginx-t.out";
    unlink $out;
    waitpid _spawn($out, "$prefix/logs", _nginx_cmd($prefix,
        $o{conf} // 'conf/nginx.conf', '-t', @{ $o{args} || [] })), 0;
    return ($?, _slurp($out));
}

sub nginx_pid { $nginx_pid }

sub worker_pids { _workers_of($nginx_pid) }     # in scalar context: how many

sub _workers_of {
    my ($master) = @_;
    return () unless $master;
    return ($master) if $VALGRIND;          # master_process off
    my @w = sort { $a <=> $b } grep {
        _slurp("/proc/$_/cmdline") =~ /^nginx: worker process(?! is shutting)/
    } map { $_->[0] } grep { $_->[1] == $master } _procs();
    return @w;
}

sub count_fds {
    opendir my $d, "/proc/$_[0]/fd" or return undef;
    return scalar grep { !/^\./ } readdir $d;
}

sub error_log_text { _slurp("$SERVROOT/logs/error.log", $log_off) }

# Starts nginx, waits until its port accepts connections and all its
# workers run (so that worker_pids() is complete in --- init and --- check).
sub _start_nginx {
    my ($want) = @_;
    (my $err, $nginx_pid) = _start_nginx_at($SERVROOT, $PORT, $want);
    return $err;
}

# Starts the nginx of a prefix; returns (problem or undef, its pid).
sub _start_nginx_at {
    my ($prefix, $port, $want) = @_;
    my $pid = _spawn("$prefix/logs/stderr.log", "$prefix/logs",
                     _nginx_cmd($prefix, 'conf/nginx.conf'));
    my $limit = $VALGRIND ? 60 : 5;
    for (my $end = time + $limit; time < $end; sleep 0.02) {
        return ('nginx exited at startup: ' . _status($?), undef)
            if _exited($pid);
        # nginx listens before it installs its signal handlers and writes
        # the pid file after: a QUIT in between would kill it outright
        # (slow enough to hit under valgrind)
        my ($written) = _slurp("$prefix/logs/nginx.pid") =~ /(\d+)/;
        return (undef, $pid) if _workers_of($pid) >= ($VALGRIND ? 1 : $want)
            && ($written // 0) == $pid
            && IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port,
                                   Proto => 'tcp');
    }
    return ("nginx did not accept connections on port $port or did not start"
        . " $want workers in $limit s", $pid);
}

# HUP, then wait until only new workers (as many as wanted) are running.
sub _reload_nginx {
    my ($want) = @_;
    my %old = map { $_ => 1 } worker_pids();
    kill HUP => $nginx_pid;
    for (my $end = time + 10; time < $end; sleep 0.02) {
        if (_exited($nginx_pid)) {
            $nginx_pid = undef;
            return 'nginx exited on reload: ' . _status($?);
        }
        return 'reload failed: [emerg] in error.log'
            if error_log_text() =~ /\[emerg\]/;
        my @w = worker_pids();
        return undef if @w >= $want && !grep { $old{$_} } @w;
    }
    return 'reload did not replace the worker processes in 10 s';
}

# Stops nginx with QUIT (KILL after a timeout); returns a problem or undef.
sub _stop_nginx {
    my $pid = $nginx_pid;
    $nginx_pid = undef;
    return _stop_nginx_pid($pid);
}

sub _stop_nginx_pid {
    my ($pid) = @_;
    return undef unless $pid;
    my @workers = _workers_of($pid);
    my ($problem, $exited, $end) = (undef, 0, time + 10 * $SLOW);
    kill QUIT => $pid;
    sleep 0.01 until ($exited = _exited($pid)) || time > $end;
    if (!$exited) {
        $problem = 'nginx did not exit on QUIT in ' . 10 * $SLOW . ' s, killed';
        kill KILL => $pid;
        waitpid $pid, 0;
    } elsif ($?) {
        $problem = 'nginx exited with ' . _status($?);
    }
    for my $w (@workers) {
        $end = time + 5;
        sleep 0.01 until _gone($w) || time > $end;
        next if _gone($w);
        kill KILL => $w;
        $problem = ($problem // '') . " worker $w left running, killed";
    }
    return $problem;
}

# Reports by ASan/UBSan (their log files) and valgrind in $dir; each report
# is returned once (the file is then renamed to *.seen).
sub memcheck_reports {
    my ($dir) = @_;
    my @r;
    for my $f (grep { !/\.seen$/ } glob "$dir/asan.* $dir/ubsan.* $dir/valgrind.*.log") {
        my $t = _slurp($f);
        rename $f, "$f.seen";
        my @bad = $f !~ /valgrind/ ? ($t =~ /\S/ ? ('report') : ()) : grep { $_ }
            ($t =~ /(definitely lost: ([\d,]+) bytes)/ && $2 ne '0' && $1),
            ($t =~ /(Invalid (?:read|write|free)[^\n]*)/ && $1),
            ($t =~ /([^\n]*uninitialised[^\n]*)/ && $1);
        push @r, "$f: @bad\n$t" if @bad;
    }
    return @r;
}

# --- blocks --------------------------------------------------------------------

sub _parse_blocks {
    my @parts = split /^===[ \t]*(.*?)[ \t]*\r?\n/m, "$_[0]\n";
    shift @parts;
    my @blocks;
    while (my ($name, $body) = splice @parts, 0, 2) {
        my $b = { name => $name, sec => {}, mods => {} };
        my @s = split /^---[ \t]+(\w+)([^\n]*)\n/m, $body;
        shift @s;
        while (my ($sec, $rest, $content) = splice @s, 0, 3) {
            if ($rest =~ /^\s*:\s?(.*?)\s*$/) {         # --- name: value
                $content = $1;
            } else {                                    # --- name mods...
                $b->{mods}{$sec} = [ split ' ', $rest ];
                $content =~ s/\A([ \t]*\n)+//;
                $content =~ s/(?<=\n)\s*\z//;
            }
            $b->{sec}{$sec} = $content;
        }
        push @blocks, $b;
    }
    return @blocks;
}

sub _subst {
    my ($s) = @_;
    $s =~ s/\$(\{)?(TEST_NGINX_\w+)(?(1)\})/$ENV{$2} \/\/ $&/ge;
    return $s;
}

# The block's section values with $TEST_NGINX_* replaced and the eval and
# chomp modifiers applied.
sub _values {
    my ($b) = @_;
    my %v;
    for my $sec (sort keys %{ $b->{sec} }) {
        die "unknown section '--- $sec'\n" unless $SECTION{$sec};
        my $v = _subst($b->{sec}{$sec});
        for my $m (@{ $b->{mods}{$sec} || [] }) {
            if ($m eq 'eval') {
                $v = _compile_in_main($v, "$b->{name} --- $sec");
                $v = _subst($v) if defined $v && !ref $v;
            } elsif ($m eq 'chomp') { chomp $v unless ref $v }
            else { die "unknown modifier '$m' of --- $sec\n" }
        }
        $v{$sec} = $v;
    }
    return %v;
}

sub _build_request {
    my ($req, $more, $body) = @_;
    my ($line, $rest) = split /\r?\n/, $req =~ s/\A\s+//r, 2;
    $line =~ s/\s+\z//;
    $line .= ' HTTP/1.1' unless $line =~ m{\sHTTP/\d\.\d$};
    $body //= $rest =~ s/\n\z//r if defined $rest && $rest ne '';
    my @h = grep { length } split /\r?\n/, $more // '';
    my %has = map { /^([^:]+):/ ? (lc $1 => 1) : () } @h;
    unshift @h, 'Host: localhost' unless $has{host};
    push @h, 'Connection: close' unless $has{connection};
    push @h, 'Content-Length: ' . length $body if defined $body
        && !$has{'content-length'} && !$has{'transfer-encoding'};
    return join('', map { "$_\r\n" } $line, @h) . "\r\n" . ($body // '');
}

# user_files: ">>> name [size=N[K|M]]" lines each followed by the content,
# or (eval) an array ref of [name, content] pairs.
sub _write_user_files {
    my ($v) = @_;
    my @files = ref $v ? @$v : ();
    for my $chunk (ref $v ? () : grep { /\S/ } split /^>>>[ \t]*/m, $v) {
        my ($head, $content) = split /\n/, $chunk, 2;
        my ($name, @opts) = split ' ', $head;
        $content //= '';
        for (@opts) {
            my ($n, $unit) = /^size=(\d+)([KkMm]?)$/
                or die "bad user_files option '$_'\n";
            $n *= { '' => 1, k => 1024, m => 1048576 }->{lc $unit};
            my $unit_text = length $content ? $content : 'x';
            $content = substr $unit_text x (1 + $n / length $unit_text), 0, $n;
        }
        push @files, [ $name, $content ];
    }
    for (@files) {
        die "bad user file name '$_->[0]'\n" if $_->[0] =~ m{^/|(^|/)\.\.(/|$)};
        _spew("$SERVROOT/html/$_->[0]", $_->[1]);
    }
}

sub _conf {
    my ($name, $v, $port) = @_;
    my ($main, $http, $config) = map { $v->{$_} // '' }
        qw(main_config http_config config);
    my $user = $> == 0 && $main !~ /^\s*user\s/m ? 'user root;' : '';
    my $master = $VALGRIND ? 'off' : 'on';
    my ($module, $workers) = (module_path(), $v->{workers} // 1);
    my $temp = join "\n", map { "    ${_}_temp_path tmp/$_;" }
        qw(client_body proxy fastcgi uwsgi scgi);
    return <<"EOF";
# generated by t/lib/PsdTest.pm for $name
load_module $module;
worker_processes $workers;
daemon off;
master_process $master;
error_log logs/error.log debug;
pid logs/nginx.pid;
$user
$main
events { worker_connections 1024; }
http {
    access_log logs/access.log;
$temp
    default_type text/plain;
$http
    server {
        listen 127.0.0.1:$port;
        server_name localhost;
        root html;
$config
    }
}
EOF
}

sub _patterns {     # error_log / no_error_log values as a list
    my ($v) = @_;
    return !defined $v ? () : ref $v eq 'ARRAY' ? @$v : ref $v ? ($v)
        : grep { length } split /\n/, $v;
}

sub _match { ref $_[1] ? $_[0] =~ $_[1] : index($_[0], $_[1]) >= 0 }
sub _nth { ref $_[0] eq 'ARRAY' ? $_[0][$_[1]] : $_[0] }   # per request

sub _check_response {
    my ($tn, $r, $i, $v, $sfx) = @_;
    my $code = exists $v->{error_code} ? _nth($v->{error_code}, $i) : 200;
    Test::More::is($r->{status}, $code, "$tn - status code ok$sfx")
        or Test::More::diag('error: ' . ($r->{error} // 'none')
                            . "\nraw response:\n$r->{raw}") if defined $code;
    for my $kind (qw(response_headers response_headers_like)) {
        for (grep { /\S/ } split /\n/, _nth($v->{$kind}, $i) // '') {
            my ($not, $name, $want) = /^\s*(!?)\s*([\w-]+)\s*(?::\s?(.*?))?\s*$/;
            die "bad $kind line '$_'\n" unless $name && ($not xor defined $want);
            my $got = $r->{headers}{lc $name};
            $got = join ', ', @$got if ref $got;
            if ($not) { Test::More::ok(!defined $got, "$tn - header $name absent$sfx") }
            elsif ($kind eq 'response_headers') {
                Test::More::is($got, $want, "$tn - header $name ok$sfx");
            } else {
                Test::More::like($got // '', qr/$want/, "$tn - header $name like ok$sfx");
            }
        }
    }
    my $body = _nth($v->{response_body}, $i);
    Test::More::is($r->{body}, $body,
        "$tn - response_body - response is expected$sfx") if defined $body;
    my $like = _nth($v->{response_body_like}, $i);
    Test::More::like($r->{body} // '', ref $like ? $like : qr/$like/s,
        "$tn - response_body_like - response is expected$sfx")
        if defined $like;
}

# error_log / no_error_log, then no unexpected [alert] [crit] [emerg] lines
# and no sanitizer or valgrind reports.
sub _check_logs {
    my ($tn, $v, $log, $stderr, $must_die) = @_;
    my @want = _patterns($v->{error_log});
    Test::More::ok(_match($log, $_),
        "$tn - pattern \"$_\" matches a line in error.log") for @want;
    for my $p (_patterns($v->{no_error_log})) {
        my @hits = grep { _match($_, $p) } split /\n/, $log;
        Test::More::ok(!@hits,
            "$tn - pattern \"$p\" should not match any line in error.log")
            or Test::More::diag(join "\n", grep { defined } @hits[0 .. 4]);
    }
    my $levels = $must_die ? 'alert|crit' : 'alert|crit|emerg';
    my @bad = grep { my $l = $_; !grep { _match($l, $_) } @want }
        grep { /\[(?:$levels)\]/ } split /\n/, $log;
    Test::More::ok(!@bad, "$tn - no unexpected [alert]/[crit]/[emerg]")
        or Test::More::diag(join "\n", @bad);
    my @mem = (memcheck_reports("$SERVROOT/logs"),
        grep { /ERROR: \w*Sanitizer|\bruntime error: / } split /\n/, "$log\n$stderr");
    Test::More::ok(!@mem, "$tn - no sanitizer or valgrind reports")
        or Test::More::diag(join "\n", @mem);
}

sub _stderr_text { _slurp("$SERVROOT/logs/stderr.log", $stderr_off) }
sub _mark_logs {    # the next block's logs start here
    ($log_off, $stderr_off) = map { -s "$SERVROOT/logs/$_" // 0 } qw(error.log stderr.log);
}

sub _run_block {
    my ($b) = @_;
    my $tn = $b->{name};
    return Test::More->builder->skip("$tn - SKIP") if exists $b->{sec}{SKIP};
    return Test::More->builder->skip("$tn - not in cluster mode: "
        . ($b->{sec}{no_cluster} =~ s/\s+/ /gr)) if $CLUSTER && exists $b->{sec}{no_cluster};
    local $PsdTest::Redis::OWNER = 'block';     # also for eval sections
    local $cur_block = $tn;
    eval { _redis_ready() } or return _fail("$tn - redis is ready", $@);
    my $crossslot = _crossslot_count();
    my %v = eval { my %v = _values($b);
        $v{$_} = _cluster_rewrite($v{$_}) for qw(main_config http_config config);
        %v };
    return _fail("$tn - sections are valid", $@) if $@;
    local %cur_values = %v;
    local $PsdTest::HTTP::TIMEOUT = ($v{timeout} // 10) * $SLOW;

    eval { _write_user_files($v{user_files}) if defined $v{user_files}; 1 }
        or return _fail("$tn - user_files are written", $@);
    my $conf = _conf($tn, \%v, $PORT);
    _spew("$SERVROOT/conf/nginx.conf", $conf);
    Test::More::diag("nginx.conf:\n$conf") if $VERBOSE;
    _mark_logs();

    if (exists $v{must_die}) {
        my ($st, $out) = nginx_t();
        Test::More::ok($st >> 8 && !($st & 127), "$tn - nginx -t fails as expected")
            or Test::More::diag(_status($st) . ", output:\n$out");
        return _check_logs($tn, \%v, $out . error_log_text(), '', 1);
    }

    my $workers = $v{workers} // 1;
    my $err = $HUP && $nginx_pid ? _reload_nginx($workers) : _start_nginx($workers);
    if ($err) {
        _fail("$tn - nginx started", "$err\n" . _stderr_text() . error_log_text());
        return _stop_nginx();
    }

    my $init_ok = !defined $v{init}
        || eval { _compile_in_main($v{init}, "$tn --- init", 1)->(); 1 }
        || _fail("$tn - init code ran", $@);

    my @raw = map { ref eq 'ARRAY' ? @$_ : $_ } grep { defined }
        $v{raw_request} // $v{request};
    @raw = map { _build_request($_, $v{more_headers}, $v{request_body}) } @raw
        unless defined $v{raw_request};
    my @responses;
    for my $i (0 .. $#raw) {
        push @responses, my $r = http_request($raw[$i]);
        Test::More::diag("request:\n$raw[$i]\nresponse:\n$r->{raw}") if $VERBOSE;
        _check_response($tn, $r, $i, \%v, @raw > 1 ? " (req $i)" : '');
    }
    sleep $v{wait} if $v{wait};

    if (defined $v{check} && $init_ok) {
        eval { _compile_in_main($v{check}, "$tn --- check", 1)->(@responses); 1 }
            or _fail("$tn - check code ran", $@);
    }
    unless ($HUP) {
        my $problem = _stop_nginx();
        Test::More::ok(!$problem, "$tn - nginx exited cleanly")
            or Test::More::diag($problem);
    }
    _stop_extra('block', \%v);
    _check_crossslot($tn, $crossslot) if defined $crossslot;
    _check_logs($tn, \%v, error_log_text(), _stderr_text());
    _mark_logs();
}

# With a cluster as the test's Redis, every block asserts that no command
# touched keys of several slots: Redis's errorstat_CROSSSLOT did not grow,
# and no error.log line carries Redis's cross-slot errors (CROSSSLOT, and
# those of scripts: "do not hash to the same slot", "non local key").
sub _crossslot_count {
    return undef unless PsdTest::Cluster::cluster_seeds();
    my $info = eval { PsdTest::Cluster::cluster_cmd('INFO', 'errorstats') } // '';
    return $info =~ /^errorstat_CROSSSLOT:count=(\d+)/m ? $1 : 0;
}

sub _check_crossslot {
    my ($tn, $before) = @_;
    my @lines = grep { /CROSSSLOT|hash to the same slot|non local key/ }
        split /\n/, error_log_text() . join '', map { nginx_extra_log($_) } keys %extra;
    my $after = _crossslot_count() // $before;
    Test::More::ok(!@lines && $after <= $before, "$tn - no cross-slot command")
        or Test::More::diag(($after - $before) . " CROSSSLOT errors in Redis\n"
                            . join "\n", @lines);
}

# Before a block: the test's Redis runs and is empty.
sub _redis_ready {
    if (my $r = $PsdTest::Redis::ROUTER) {
        my $ok = $r->{flush}->();
        die "FLUSHALL: $ok\n" unless $ok eq 'OK';
    } else {
        PsdTest::Redis::_start();
        redis_cmd('FLUSHALL') eq 'OK' or die "no OK\n";
    }
    return 1;
}

# --- more nginx instances ------------------------------------------------------

# nginx_start_extra(name => 'b', config => ..., http_config => ...,
# main_config => ..., workers => n): another nginx with its own prefix
# servroot/nginx-<name>/ (html/ is the test's html/) and port; the config
# sections not given are the running block's (after $TEST_NGINX_* and eval;
# rewritten in cluster mode like the block's).  Started in a block, it is
# stopped (and its logs checked) when the block ends; in file-level code, at
# the end of the file.  Returns its port, which stays the same for the name
# during the file ($TEST_NGINX_EXTRA_PORT_<NAME> too).
sub nginx_start_extra {
    my (%o) = @_;
    my $name = $o{name} // 'b';
    die "nginx_start_extra: bad name '$name'\n" unless $name =~ /^\w+$/;
    my $x = $extra{$name} //= { port => free_port() };
    die "nginx_start_extra: nginx $name runs already\n" if $x->{pid};
    my $prefix = $x->{prefix} = "$SERVROOT/nginx-$name";
    $ENV{'TEST_NGINX_EXTRA_PORT_' . uc $name} = $x->{port};
    make_path(map { "$prefix/$_" } qw(conf logs tmp));
    symlink "$SERVROOT/html", "$prefix/html" unless -e "$prefix/html";
    my %v = (%cur_values, map { exists $o{$_} ? ($_ => $o{$_}) : () }
        qw(main_config http_config config workers));
    $v{$_} = _cluster_rewrite(_subst($v{$_} // '')) for qw(main_config http_config config);
    _spew("$prefix/conf/nginx.conf", _conf("nginx $name", \%v, $x->{port}));
    $x->{log_off} = -s "$prefix/logs/error.log" // 0;
    $x->{stderr_off} = -s "$prefix/logs/stderr.log" // 0;
    $x->{owner} = $cur_block ? 'block' : 'file';
    (my $err, $x->{pid}) = _start_nginx_at($prefix, $x->{port}, $v{workers} // 1);
    if ($err) {
        _stop_nginx_pid(delete $x->{pid});
        die "nginx $name: $err\n" . _slurp("$prefix/logs/stderr.log", $x->{stderr_off})
            . _slurp("$prefix/logs/error.log", $x->{log_off});
    }
    return $x->{port};
}

sub nginx_extra_port { ($extra{$_[0] // 'b'} // {})->{port} }

# nginx_extra_log('b'): the instance's error.log since it was started.
sub nginx_extra_log {
    my $x = $extra{$_[0] // 'b'} or return '';
    return _slurp("$x->{prefix}/logs/error.log", $x->{log_off});
}

# nginx_stop_extra('b'): stops it now (QUIT); returns a problem or undef
# (a block that started it still checks that it exited cleanly).
sub nginx_stop_extra {
    my $x = $extra{$_[0] // 'b'} or return undef;
    return undef unless $x->{pid};
    return $x->{problem} = _stop_nginx_pid(delete $x->{pid});
}

# Stops the extra instances of an owner (all without one) and, for a
# block's (also those the block stopped itself), checks that they exited
# cleanly and that their logs have no unexpected alert (the block's
# error_log patterns allow them, as in its own log) or sanitizer report.
sub _stop_extra {
    my ($owner, $v) = @_;
    for my $name (sort keys %extra) {
        my $x = $extra{$name};
        next unless $x->{owner} && (!$owner || $x->{owner} eq $owner);
        my $problem = nginx_stop_extra($name);
        $problem //= delete $x->{problem};
        delete $x->{owner};
        next unless $v;
        Test::More::ok(!$problem, "$cur_block - nginx $name exited cleanly")
            or Test::More::diag($problem);
        my $log = nginx_extra_log($name);
        my @bad = grep { my $l = $_; !grep { _match($l, $_) } _patterns($v->{error_log}) }
            grep { /\[(?:alert|crit|emerg)\]/ } split /\n/, $log;
        Test::More::ok(!@bad, "$cur_block - nginx $name: no unexpected [alert]/[crit]/[emerg]")
            or Test::More::diag(join "\n", @bad);
        my @mem = (memcheck_reports("$x->{prefix}/logs"),
            grep { /ERROR: \w*Sanitizer|\bruntime error: / } split /\n/,
            $log . _slurp("$x->{prefix}/logs/stderr.log", $x->{stderr_off}));
        Test::More::ok(!@mem, "$cur_block - nginx $name: no sanitizer or valgrind reports")
            or Test::More::diag(join "\n", @mem);
    }
}

sub run_tests {
    my ($module, $data) = (module_path(), do { local $/; readline \*main::DATA });
    Test::More::BAIL_OUT("$module not found: run make build first") unless -f $module;
    Test::More::BAIL_OUT("$NGINX is not executable") unless -x $NGINX;
    Test::More::BAIL_OUT("$0 has no __DATA__ blocks") unless defined $data;
    my @blocks = _parse_blocks($data);
    my @only = grep { exists $_->{sec}{ONLY} } @blocks;
    Test::More::diag("only running: $_->{name}") for @only;
    @blocks = @only if @only;
    eval { _redis_ready() } or Test::More::BAIL_OUT("redis: $@");
    my $tb = Test::More->builder;
    for my $b (@blocks) {
        my $failed = grep { !$_ } $tb->summary;
        _run_block($b);
        fake_redis_stop('block');
        Test::More::diag("$b->{name} failed; see $SERVROOT/logs/")
            if $failed < grep { !$_ } $tb->summary;
    }
    if ($nginx_pid) {       # HUP mode: the final shutdown is checked here
        my $problem = _stop_nginx();
        Test::More::ok(!$problem, 'nginx exited cleanly at the end')
            or Test::More::diag($problem);
        _check_logs('end of file', {}, error_log_text(), _stderr_text());
    }
    _stop_extra();
    fake_redis_stop();
    PsdTest::Redis::_kill();
    Test::More::done_testing();
}

1;
