# psd_status and psd_metrics: the status document, the Prometheus text
# (checked by a strict parser below) and its JSON twin, counters that move
# with requests and outages, and figures that survive a reload.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
no_cluster('the exact psd_status and psd_redis_* figures of single servers (db=1, stopped, killed)');
use JSON::PP ();
use Time::HiRes qw(time sleep);

# --- helpers for the blocks ---------------------------------------------------

sub wait_for {      # polls $cond every 20 ms for up to $secs
    my ($secs, $cond) = @_;
    for (my $end = time + $secs * ($ENV{TEST_NGINX_USE_VALGRIND} ? 8 : 1); ; sleep 0.02) {
        my $v = $cond->();
        return $v if $v || time > $end;
    }
}

sub status_json {
    my $r = http_get('/status');
    return ($r->{status} // 0) == 200 ? JSON::PP::decode_json($r->{body}) : {};
}

sub connected { (status_json()->{redis} || [{}])->[0]{connected} }

# A strict reader of the Prometheus text format (0.0.4) as this module
# writes it.  Returns ({ 'name{labels}' => value }, [problems]).  Checks:
# every line is a comment "# HELP name text" / "# TYPE name type" or a
# sample "name{label="value",...} number"; each family has one HELP and
# one TYPE, both before its samples, and its samples stand together;
# counters end in _total; no sample twice; histograms have, per label set,
# cumulative _bucket rows with increasing le ending in le="+Inf", a _sum
# and a _count equal to the +Inf bucket.
sub parse_prometheus {
    my ($text) = @_;
    my (%help, %type, %samples, %done, %hist, @bad);
    my $family = '';
    my $name_re = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
    push @bad, 'does not end with a newline' unless $text =~ /\n\z/;
    for my $line (split /\n/, $text) {
        if (my ($f) = $line =~ /^# HELP ($name_re) \S/) {
            push @bad, "second HELP of $f" if $help{$f}++;
            push @bad, "HELP of $f after its samples" if $done{$f} || $f eq $family;
            next;
        }
        if (my ($f, $t) = $line =~ /^# TYPE ($name_re) (counter|gauge|histogram|summary|untyped)$/) {
            push @bad, "second TYPE of $f" if $type{$f};
            push @bad, "TYPE of $f before its HELP" unless $help{$f};
            push @bad, "TYPE of $f after its samples" if $done{$f} || $f eq $family;
            push @bad, "counter $f does not end in _total"
                if $t eq 'counter' && $f !~ /_total$/;
            $type{$f} = $t;
            next;
        }
        my ($name, $labels, $value) =
            $line =~ /^($name_re)(?:\{([^{}]*)\})? (\S+)$/
            or push(@bad, "bad line '$line'"), next;
        push @bad, "bad value in '$line'"
            unless $value =~ /^(?:-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]Inf|NaN)$/;
        my %l;
        for (split /,/, $labels // '') {
            my ($k, $v) = /^($name_re)="((?:[^"\\\n]|\\["\\n])*)"$/
                or push(@bad, "bad label '$_' in '$line'"), next;
            push @bad, "label $k twice in '$line'" if exists $l{$k};
            $l{$k} = $v;
        }
        my $base = $name;
        $base =~ s/_(?:bucket|sum|count)$//
            if ($type{ $name =~ s/_(?:bucket|sum|count)$//r } // '') eq 'histogram';
        push @bad, "sample '$line' before the TYPE of $base" unless $type{$base};
        push @bad, "sample '$line' before the HELP of $base" unless $help{$base};
        if ($base ne $family) {
            push @bad, "samples of $base do not stand together" if $done{$base};
            $done{$family} = 1 if $family;
            $family = $base;
        }
        my $key = $name . (defined $labels ? "{$labels}" : '');
        push @bad, "sample $key twice" if exists $samples{$key};
        $samples{$key} = $value;
        if (($type{$base} // '') eq 'histogram') {
            my $le = delete $l{le};
            my $set = join ',', map { "$_=$l{$_}" } sort keys %l;
            my $h = $hist{$base}{$set} //= { buckets => [] };
            if ($name eq "${base}_bucket") {
                push @bad, "bucket without le: '$line'" unless defined $le;
                push @{ $h->{buckets} }, [ $le // '', $value ];
            } else {
                $h->{ $name =~ /_sum$/ ? 'sum' : 'count' } = $value;
            }
        }
    }
    push @bad, "family $_ has HELP but no TYPE" for grep { !$type{$_} } keys %help;
    for my $base (sort keys %hist) {
        for my $set (sort keys %{ $hist{$base} }) {
            my $h = $hist{$base}{$set};
            my @b = @{ $h->{buckets} };
            my $what = "histogram $base\{$set}";
            push @bad, "$what has no buckets" unless @b;
            for my $i (1 .. $#b) {
                push @bad, "$what: le $b[$i][0] after $b[$i-1][0]"
                    unless $b[$i][0] eq '+Inf' ? $i == $#b
                        : $b[$i-1][0] ne '+Inf' && $b[$i][0] > $b[$i-1][0];
                push @bad, "$what: bucket le=$b[$i][0] not cumulative"
                    if $b[$i][1] < $b[$i-1][1];
            }
            push @bad, "$what does not end with le=\"+Inf\""
                unless @b && $b[-1][0] eq '+Inf';
            push @bad, "$what has no _sum" unless defined $h->{sum};
            push @bad, "$what: _count is not the +Inf bucket"
                unless @b && defined $h->{count} && $h->{count} == $b[-1][1];
        }
    }
    return (\%samples, \@bad);
}

# the metrics now, parsed; the parser's problems fail a test
sub metrics {
    my $r = http_get('/metrics');
    is $r->{status}, 200, 'metrics: 200';
    my ($m, $bad) = parse_prometheus($r->{body} // '');
    ok !@$bad, 'metrics: strict Prometheus text' or diag join "\n", @$bad;
    return $m;
}

# the same without the tests, for polling
sub metrics_quiet { (parse_prometheus(http_get('/metrics')->{body} // ''))[0] }

sub r { $_[0]{"psd_redis_$_[1]\{server=\"" . ($_[2] // 'main') . "\"}"} }

run_tests();

__DATA__

=== TEST 1: psd_status: the document of this worker
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_redis spare 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT timeout=200ms;
--- config
    location /status { psd_status on; }
--- check
ok wait_for(3, \&connected), 'main connected';
# "spare" refuses and is tried again and again; between two attempts
# nothing waits for it (an attempt takes long under valgrind)
my $r;
ok wait_for(5, sub { $r = http_get('/status');
                     ($r->{body} // '') =~ /"name":"spare","connected":false,"pending":0/ }),
    'a moment between two attempts on spare';
is $r->{headers}{'content-type'}, 'application/json', 'JSON';
like $r->{body}, qr/\n\z/, 'ends with a newline';
my $j = JSON::PP::decode_json($r->{body});
is_deeply [ sort keys %$j ], [qw(module nginx pid redis version)], 'fields';
is $j->{module}, 'ngx_psd_module', 'module';
like $j->{version}, qr/^\d+\.\d+\.\d+$/, 'version';
is $j->{nginx}, (`$PsdTest::NGINX -v 2>&1` =~ m{nginx/(\S+)})[0], 'nginx version';
is_deeply [ worker_pids() ], [ $j->{pid} ], 'pid of the worker';
is_deeply $j->{redis}, [
    { name => 'main', connected => JSON::PP::true, pending => 0 },
    { name => 'spare', connected => JSON::PP::false, pending => 0 } ], 'servers';
--- error_log eval
qr/psd: redis "spare" at /



=== TEST 2: psd_status without servers; HEAD; POST is 405
--- config
    location /status { psd_status on; }
--- request eval
["GET /status", "HEAD /status", "POST /status\nx=1", "DELETE /status"]
--- error_code eval
[200, 200, 405, 405]
--- response_body_like eval
['^\{"module":"ngx_psd_module","version":"[^"]+","nginx":"[^"]+","pid":\d+,"redis":\[\]\}\n\z',
 '^\z', '^\{"error":"method_not_allowed"\}\n\z', '^\{"error":"method_not_allowed"\}\n\z']
--- no_error_log
[error]



=== TEST 3: psd_status off in a nested location, on in its parent
--- config
    location /s {
        psd_status on;
        location /s/off { psd_status off; return 204; }
    }
--- request eval
["GET /s", "GET /s/off"]
--- error_code eval
[200, 204]



=== TEST 4: Prometheus text is strict, with every family of the module
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_redis other 127.0.0.1:$TEST_NGINX_REDIS_PORT db=1;
--- config
    location /metrics { psd_metrics; }
    location /status { psd_status on; }
    location /c { psd_counter $arg_k ttl=60; }
--- check
ok wait_for(3, sub { status_json()->{redis}[1]{connected} }), 'connected';
my ($m0) = parse_prometheus(http_get('/metrics')->{body});
is http_get('/c?k=a')->{status}, 200, 'one counter request';
my $r = http_get('/metrics');
is $r->{headers}{'content-type'}, 'text/plain; version=0.0.4; charset=utf-8',
   'Prometheus content type';
my ($m, $bad) = parse_prometheus($r->{body});
ok !@$bad, 'strict Prometheus text' or diag join "\n", @$bad, $r->{body};
my @fams = $r->{body} =~ /^# TYPE (\S+) /mg;
for (qw(psd_redis_connected psd_redis_reconnects_total psd_redis_commands_total
        psd_redis_errors_total psd_redis_timeouts_total psd_redis_unavailable_total
        psd_redis_pending psd_redis_latency_seconds psd_link_requests_total)) {
    my $f = $_;
    ok((grep { $_ eq $f } @fams), "family $f");
}
for my $s (qw(main other)) {
    is r($m, 'connected', $s), 1, "$s: connected 1";
    ok defined $m->{"psd_redis_latency_seconds_bucket{server=\"$s\",le=\"+Inf\"}"},
       "$s: latency histogram";
}
is r($m, 'commands_total') - r($m0, 'commands_total'), 2, 'main: 2 commands (INCR, EXPIRE)';
is r($m, 'commands_total', 'other'), r($m0, 'commands_total', 'other'), 'other: none';
is r($m, 'pending'), 0, 'main: nothing pending';
my $c = 'psd_redis_latency_seconds_count{server="main"}';
is $m->{$c} - $m0->{$c}, 1, 'main: one call timed';
ok defined $m->{'psd_link_requests_total{result="ok"}'}, 'link counters are there';
ok !grep({ /psd_redis_(?:connected|pending)\b.*_total/ } keys %$m), 'gauges are no _total';
--- no_error_log
[error]



=== TEST 5: the parser of this file rejects what it should
--- config
--- check
my @cases = (
    [ "# HELP a_total x\n# TYPE a_total counter\na_total 1\n", 0, 'good counter' ],
    [ "# TYPE a_total counter\n# HELP a_total x\na_total 1\n", 1, 'TYPE before HELP' ],
    [ "# HELP a x\n# TYPE a counter\na 1\n", 1, 'counter without _total' ],
    [ "a_total 1\n", 1, 'no HELP or TYPE' ],
    [ "# HELP a x\n# TYPE a gauge\na{x=\"1\"} 1\na{x=\"1\"} 2\n", 1, 'sample twice' ],
    [ "# HELP a x\n# TYPE a gauge\na{x=1} 1\n", 1, 'unquoted label' ],
    [ "# HELP a x\n# TYPE a gauge\na 1 2 3\n", 1, 'junk after the value' ],
    [ "# HELP a x\n# TYPE a gauge\na one\n", 1, 'value no number' ],
    [ "# HELP a x\n# TYPE a gauge\n# HELP b x\n# TYPE b gauge\nb 1\na 1\n", 0, 'families may be announced early' ],
    [ "# HELP a x\n# TYPE a gauge\n# HELP b x\n# TYPE b gauge\na 1\nb 1\na{x=\"2\"} 1\n", 1, 'family split' ],
    [ "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n", 0, 'good histogram' ],
    [ "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n", 1, 'not cumulative' ],
    [ "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 2\nh_sum 3\nh_count 2\n", 1, 'no +Inf' ],
    [ "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 3\n", 1, 'count is not +Inf' ],
    [ "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n", 1, 'le not increasing' ],
    [ "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n", 1, 'no _sum' ],
    [ "# HELP a x\n# TYPE a gauge\na 1", 1, 'no final newline' ],
);
for (@cases) {
    my ($text, $want_bad, $name) = @$_;
    my (undef, $bad) = parse_prometheus($text);
    is !!@$bad, !!$want_bad, "parser: $name" or diag join "\n", @$bad;
}



=== TEST 6: counters move: 2 commands per counter request with ttl, 1 without
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /metrics { psd_metrics; }
    location /status { psd_status on; }
    location /ttl { psd_counter $arg_k ttl=60; }
    location /plain { psd_counter $arg_k; }
--- check
ok wait_for(3, \&connected), 'connected';
my $m0 = metrics();
is http_get("/ttl?k=$_")->{status}, 200, "ttl request $_" for 1 .. 5;
is http_get("/plain?k=$_")->{status}, 200, "plain request $_" for 1 .. 3;
my $m1 = metrics();
is r($m1, 'commands_total') - r($m0, 'commands_total'), 5 * 2 + 3, 'commands: +13';
my $c = 'psd_redis_latency_seconds_count{server="main"}';
is $m1->{$c} - $m0->{$c}, 8, 'latency: 8 calls';
is $m1->{'psd_redis_latency_seconds_bucket{server="main",le="+Inf"}'}
   - $m0->{'psd_redis_latency_seconds_bucket{server="main",le="+Inf"}'}, 8, '+Inf bucket: +8';
ok $m1->{'psd_redis_latency_seconds_sum{server="main"}'}
   >= $m0->{'psd_redis_latency_seconds_sum{server="main"}'}, 'latency sum did not shrink';
is r($m1, $_) - r($m0, $_), 0, "$_ unchanged"
    for qw(errors_total timeouts_total unavailable_total reconnects_total);
is r($m1, 'pending'), 0, 'nothing pending';
is r($m1, 'connected'), 1, 'connected: 1';
--- no_error_log
[error]



=== TEST 7: timeouts, errors, unavailable and reconnects move with outages
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms
              connect_timeout=200ms;
--- config
    location /metrics { psd_metrics; }
    location /status { psd_status on; }
    location /c { psd_counter $arg_k; }
--- check
ok wait_for(3, \&connected), 'connected';
my $m0 = metrics();
redis_stop();
my $st = http_get('/c?k=t')->{status};
redis_cont();
is $st, 503, 'timed out while stopped';
my $m1 = metrics();
is r($m1, 'timeouts_total') - r($m0, 'timeouts_total'), 1, 'timeouts: +1';
ok r($m1, 'errors_total') > r($m0, 'errors_total'), 'errors: up (the silent connection was dropped)';
ok wait_for(5, \&connected), 'connected again';
redis_kill();
ok wait_for(3, sub { !connected() }), 'not connected';
is http_get('/c?k=t')->{status}, 503, 'refused while down';
# a request that comes while a reconnection is under way waits for it and
# fails as an error; one that finds the connection down is "unavailable"
ok wait_for(3, sub { http_get('/c?k=t');
                     r(metrics_quiet(), 'unavailable_total') > r($m1, 'unavailable_total') }),
   'unavailable: up';
my $m2 = metrics();
is r($m2, 'connected'), 0, 'connected: 0';
redis_start();
ok wait_for(8, \&connected), 'connected again';
my $m3 = metrics();
ok r($m3, 'reconnects_total') >= r($m0, 'reconnects_total') + 2, 'reconnects: up by 2 or more';
is r($m3, 'connected'), 1, 'connected: 1';
is r($m3, 'pending'), 0, 'pending: 0';
--- error_log
psd: redis "main"



=== TEST 8: JSON format: ?format=json and psd_metrics json agree with Prometheus
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /metrics { psd_metrics prometheus; }
    location /metrics.json { psd_metrics json; }
    location /status { psd_status on; }
    location /c { psd_counter $arg_k ttl=60; }
--- check
ok wait_for(3, \&connected), 'connected';
is http_get("/c?k=$_")->{status}, 200, "request $_" for 1 .. 3;
my $m = metrics();
for my $path ('/metrics?format=json', '/metrics.json') {
    my $r = http_get($path);
    is $r->{headers}{'content-type'}, 'application/json', "$path: JSON";
    my $j = eval { JSON::PP::decode_json($r->{body}) };
    ok $j, "$path: parses" or diag "$@$r->{body}";
    my %c = %{ $j->{counters} };
    ok scalar(keys %c) > 0, "$path: counters";
    is_deeply [ grep { !exists $m->{$_} } sort keys %c ], [],
        "$path: counter names are the Prometheus sample names";
    is $c{$_}, $m->{$_}, "$path: $_" for sort keys %c;
    # (under TEST_NGINX_USE_HUP the zone also keeps servers of earlier blocks)
    my ($s) = grep { $_->{server} eq 'main' } @{ $j->{redis} };
    ok $s, "$path: server main";
    is $s->{$_}, r($m, $_ =~ /^(connected|pending)$/ ? $_ : "${_}_total"), "$path: $_"
        for qw(connected reconnects commands errors timeouts unavailable pending);
    is scalar(@{ $s->{latency_ms_buckets} }), 12, "$path: 12 latency buckets";
    my $sum = 0;
    $sum += $_ for @{ $s->{latency_ms_buckets} };
    is $sum, $s->{latency_count}, "$path: buckets (not cumulative) add up to the count";
    is $s->{latency_count}, $m->{'psd_redis_latency_seconds_count{server="main"}'},
        "$path: latency count";
    ok $s->{latency_count} >= 3, "$path: the 3 calls are counted";
}
--- no_error_log
[error]



=== TEST 9: metrics without any psd_redis; HEAD; POST is 405
--- config
    location /metrics { psd_metrics; }
--- request eval
["GET /metrics", "HEAD /metrics", "POST /metrics\nx", "PUT /metrics?format=json"]
--- error_code eval
[200, 200, 405, 405]
--- response_body eval
[undef, "", "{\"error\":\"method_not_allowed\"}\n", "{\"error\":\"method_not_allowed\"}\n"]
--- check
my ($m, $bad) = parse_prometheus($_[0]{body});
ok !@$bad, 'strict Prometheus text' or diag join "\n", @$bad;
ok !grep({ /^psd_redis_/ } keys %$m), 'no server rows'
    unless $ENV{TEST_NGINX_USE_HUP};    # the zone keeps earlier blocks' servers
is $m->{'psd_link_issued_total'}, 0, 'link counters';
--- no_error_log
[error]



=== TEST 10: counters survive a reload; the new worker counts on
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /metrics { psd_metrics; }
    location /status { psd_status on; }
    location /c { psd_counter $arg_k ttl=60; }
--- check
if ($ENV{TEST_NGINX_USE_VALGRIND}) {
    # one request first: QUIT must not come before nginx handles signals
    is http_get('/status')->{status}, 200, 'up';
    pass 'no reload test with master_process off (valgrind)';
    return;
}
ok wait_for(3, \&connected), 'connected';
is http_get("/c?k=$_")->{status}, 200, "request $_" for 1 .. 4;
my $m0 = metrics();
is r($m0, 'commands_total'), 8, '8 commands before the reload'
    unless $ENV{TEST_NGINX_USE_HUP};
my %old = map { $_ => 1 } worker_pids();
kill HUP => nginx_pid();
ok wait_for(10, sub { my @w = worker_pids(); @w && !grep { $old{$_} } @w }),
   'new worker';
my $stat = do { local (@ARGV, $/) = ('/proc/' . nginx_pid() . '/stat'); <> } // '';
ok $stat =~ /^\d+ \(.*\) [^Z]/s, 'the master survived the reload';
ok wait_for(3, \&connected), 'new worker connected';
ok wait_for(3, sub { !grep { kill 0, $_ } keys %old }), 'old worker gone';
my $m1 = metrics();
is r($m1, 'commands_total'), r($m0, 'commands_total'), 'commands kept';
is $m1->{'psd_redis_latency_seconds_count{server="main"}'},
   $m0->{'psd_redis_latency_seconds_count{server="main"}'}, 'latency count kept';
is r($m1, 'connected'), 1, 'connected: 1 (the new worker; the old one left)';
is r($m1, 'pending'), 0, 'pending: 0';
is $m1->{'psd_link_issued_total'}, $m0->{'psd_link_issued_total'}, 'link counters kept';
is http_get('/c?k=after')->{status}, 200, 'request after the reload';
my $m2 = metrics();
is r($m2, 'commands_total') - r($m1, 'commands_total'), 2, 'the new worker counts on';
--- no_error_log
[error]



=== TEST 11: psd_metrics with a bad format fails nginx -t
--- config
    location /metrics { psd_metrics xml; }
--- must_die
--- error_log
invalid format "xml" in "psd_metrics" directive, it must be "prometheus" or "json"



=== TEST 12: psd_metrics with two arguments fails nginx -t
--- config
    location /metrics { psd_metrics json prometheus; }
--- must_die
--- error_log
invalid number of arguments in "psd_metrics" directive



=== TEST 13: psd_metrics twice in a location fails nginx -t
--- config
    location /metrics { psd_metrics; psd_metrics json; }
--- must_die
--- error_log
"psd_metrics" directive is duplicate



=== TEST 14: psd_metrics outside a location fails nginx -t
--- http_config
    psd_metrics;
--- must_die
--- error_log
"psd_metrics" directive is not allowed here
