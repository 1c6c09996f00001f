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
    fake_redis_read_command);
use Exporter ();

our @ISA = ('Exporter');
our @EXPORT = qw(run_tests redis_cmd redis_port redis_pid redis_stop
    redis_cont redis_kill redis_start redis_restart fake_redis_start
    fake_redis_stop fake_redis_read_command nginx_pid worker_pids
    error_log_text http_request http_get http_parallel count_fds);
our @EXPORT_OK = qw(nginx_t memcheck_reports module_path);

our $REPO = abs_path(dirname(__FILE__) . '/../..');
our $SERVROOT = "$REPO/t/servroot/" . basename($0, '.t');
our $NGINX = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
our $PORT;

my $VALGRIND = $ENV{TEST_NGINX_USE_VALGRIND};
my $ASAN = $ENV{TEST_NGINX_USE_ASAN};
my $HUP = $ENV{TEST_NGINX_USE_HUP} && !$VALGRIND;
my $VERBOSE = $ENV{TEST_NGINX_VERBOSE};
my $SLOW = $VALGRIND ? 8 : 1;           # timeout factor
my $MAIN_PID = $$;
my %SECTION = map { $_ => 1 } qw(main_config http_config config request
    more_headers request_body raw_request error_code response_body
    response_body_like response_headers response_headers_like error_log
    no_error_log must_die ONLY SKIP timeout wait workers user_files init check);
my ($nginx_pid, $log_off, $stderr_off, $setup_done, @locks);

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
sub _free_port {
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

sub _setup {
    # Two runs of one test file in one checkout would share the servroot.
    make_path("$REPO/t/servroot");
    open my $lock, '>', "$SERVROOT.lock" or die "$SERVROOT.lock: $!\n";
    print STDERR "# waiting for another run of $0 to finish\n"
        unless flock $lock, LOCK_EX | LOCK_NB;
    flock $lock, LOCK_EX or die "flock $SERVROOT.lock: $!\n";
    push @locks, $lock;
    *PsdTest::Redis::CLOSE_IN_CHILD = \@locks;
    $PORT = $PsdTest::HTTP::PORT = _free_port();
    $PsdTest::Redis::PORT = _free_port();
    $PsdTest::Redis::FAKE_PORT = _free_port();
    $PsdTest::Redis::SERVROOT = $SERVROOT;
    @ENV{map { "TEST_NGINX_$_" } qw(SERVER_PORT REDIS_PORT FAKE_REDIS_PORT
        SERVROOT HTML_DIR CONF_DIR REPO)} = ($PORT, $PsdTest::Redis::PORT,
        $PsdTest::Redis::FAKE_PORT, $SERVROOT, "$SERVROOT/html",
        "$SERVROOT/conf", $REPO);
    # nginx and redis-server left running by an earlier run killed hard
    my ($old) = _slurp("$SERVROOT/logs/nginx.pid") =~ /(\d+)/;
    $old = 0 unless $old && _slurp("/proc/$old/cmdline") =~ /\Q$SERVROOT/;
    for (_procs()) {
        my ($pid, $ppid) = @$_;
        kill KILL => $pid if $old && ($pid == $old || $ppid == $old)
            || (readlink("/proc/$pid/cwd") // '') eq "$SERVROOT/redis";
    }
    remove_tree($SERVROOT);
    make_path(map { "$SERVROOT/$_" } qw(conf html logs tmp));
    $SIG{PIPE} = 'IGNORE';
    $SIG{$_} = sub { exit 1 } for qw(INT TERM HUP);
}

END {
    if ($setup_done && $$ == $MAIN_PID) {
        local $?;
        _stop_nginx();
        fake_redis_stop();
        redis_kill();
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

sub worker_pids {     # in scalar context: how many
    return () unless $nginx_pid;
    return ($nginx_pid) if $VALGRIND;       # master_process off
    my @w = sort { $a <=> $b } grep {
        _slurp("/proc/$_/cmdline") =~ /^nginx: worker process(?! is shutting)/
    } map { $_->[0] } grep { $_->[1] == $nginx_pid } _procs();
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
    $nginx_pid = _spawn("$SERVROOT/logs/stderr.log", "$SERVROOT/logs",
                        _nginx_cmd($SERVROOT, 'conf/nginx.conf'));
    my $limit = $VALGRIND ? 60 : 5;
    for (my $end = time + $limit; time < $end; sleep 0.02) {
        if (_exited($nginx_pid)) {
            $nginx_pid = undef;
            return 'nginx exited at startup: ' . _status($?);
        }
        # nginx listens before it installs its signal handlers and writes
        # the pid file after: a QUIT in between would kill it outright
        # (slow enough to hit under valgrind)
        my ($written) = _slurp("$SERVROOT/logs/nginx.pid") =~ /(\d+)/;
        return undef if worker_pids() >= ($VALGRIND ? 1 : $want)
            && ($written // 0) == $nginx_pid
            && IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $PORT,
                                   Proto => 'tcp');
    }
    return "nginx did not accept connections on port $PORT or did not start"
        . " $want workers in $limit s";
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
    return undef unless $nginx_pid;
    my ($pid, @workers) = ($nginx_pid, worker_pids());
    my ($problem, $exited, $end) = (undef, 0, time + 10 * $SLOW);
    $nginx_pid = undef;
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
    my ($b, $v) = @_;
    my ($main, $http, $config) = map { $v->{$_} // '' }
        qw(main_config http_config config);
    my $user = $> == 0 && $main !~ /^\s*user\s/m ? 'user root;' : '';
    my $master = $VALGRIND ? 'off' : 'on';
    my ($module, $workers) = (module_path(), $v->{workers} // 1);
    my $temp = join "\n", map { "    ${_}_temp_path tmp/$_;" }
        qw(client_body proxy fastcgi uwsgi scgi);
    return <<"EOF";
# generated by t/lib/PsdTest.pm for $b->{name}
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
        listen 127.0.0.1:$PORT;
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
    local $PsdTest::Redis::OWNER = 'block';     # also for eval sections
    my %v = eval { _values($b) };
    return _fail("$tn - sections are valid", $@) if $@;
    local $PsdTest::HTTP::TIMEOUT = ($v{timeout} // 10) * $SLOW;

    eval { redis_start(); redis_cmd('FLUSHALL') eq 'OK' or die "no OK\n" }
        or return _fail("$tn - redis is ready", $@);
    eval { _write_user_files($v{user_files}) if defined $v{user_files}; 1 }
        or return _fail("$tn - user_files are written", $@);
    my $conf = _conf($b, \%v);
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
    _check_logs($tn, \%v, error_log_text(), _stderr_text());
    _mark_logs();
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
    eval { redis_start(); 1 } or Test::More::BAIL_OUT("redis-server: $@");
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
    fake_redis_stop();
    redis_kill();
    Test::More::done_testing();
}

1;
