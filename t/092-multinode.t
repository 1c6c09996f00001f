# Two nginx nodes (separate prefixes and ports, two workers each) against
# the same Redis Cluster of 3 primaries: the state they share keeps them
# one system.  A psd_limit zone admits no more than its limit in total when
# both nodes are hammered at once; a download link with limit=3 used from
# both nodes at once completes exactly 3 downloads; a webhook delivered to
# both nodes at once is applied exactly once.  Totals are asserted, not
# timings.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link;
use Digest::SHA qw(hmac_sha256_hex);
use JSON::PP ();

no_cluster('starts its own cluster');

our $STRIPE = 'whsec_multinode_test_8b3e5d1a7c9f2046';
write_keys();
write_key_file('stripe', "$STRIPE\n");
# no failover here: a long node timeout keeps a busy machine from flagging
# a slow node failed
cluster_start(primaries => 3, replicas => 0, node_timeout => 15000);

# a value v with psd:{$kind:v} on each primary, in the order of the ports
sub args_on_each {
    my ($kind, $prefix) = @_;
    return map { cluster_key_on($_, "psd:{$kind:$prefix%d}") =~ /^psd:\{\Q$kind\E:(.*)\}$/ }
        cluster_primaries();
}

sub req { "GET $_[0] HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" }

# the raw request $raw $n times to each node, all at once
sub to_both {
    my ($raw, $n, $b) = @_;
    return http_parallel([ map { [ $raw, $_ % 2 ? $b : $ENV{TEST_NGINX_SERVER_PORT} ] } 1 .. 2 * $n ]);
}

sub statuses { my %n; $n{ $_->{status} // 'none' }++ for @_; join ' ', map { "$_=$n{$_}" } sort keys %n }

sub metric {
    my ($port, $row) = @_;
    return http_get('/metrics', undef, port => $port)->{body} =~ /^\Q$row\E (\d+)$/m ? $1 : 0;
}

sub stripe_raw {
    my ($body) = @_;
    my $t = int time;
    return "POST /wh HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\nStripe-Signature: t=$t,v1="
        . hmac_sha256_hex("$t.$body", $STRIPE) . "\r\nContent-Length: "
        . length($body) . "\r\n\r\n$body";
}

run_tests();

__DATA__

=== TEST 1: a shared rate limit (1r/m, burst=4): both nodes hammered at once admit 5 in total
--- workers: 2
--- http_config
    psd_redis main cluster $TEST_NGINX_CLUSTER_SEEDS timeout=2s;
    psd_limit_zone z key=$arg_k rate=1r/m burst=4 nodes=2;
--- config
    location /lim/ { psd_limit z nodelay; }
--- user_files
>>> lim/a.txt
limited
--- check
my $b = nginx_start_extra(name => 'b');
my @keys = map { s/^z://r } args_on_each('lim', 'z:k');
is scalar @keys, 3, 'a key on each primary';
for my $k (@keys) {
    my $rs = to_both(req("/lim/a.txt?k=$k"), 20, $b);
    is statuses(@$rs), '200=5 429=35', "key $k: 40 requests at once over both nodes: 5 pass";
    my %by_node;
    $by_node{ $_ % 2 ? 'b' : 'a' }{ $rs->[$_ - 1]{status} // 'none' }++ for 1 .. 40;
    ok $by_node{a}{429} && $by_node{b}{429}, "key $k: both nodes refused";
    is_deeply [ map { http_get("/lim/a.txt?k=$k", undef, port => $_)->{status} }
                $b, $ENV{TEST_NGINX_SERVER_PORT} ], [429, 429], "key $k: and still do, one by one";
}
--- no_error_log
[error]



=== TEST 2: a download link with limit=3 used from both nodes at once: 3 complete downloads in total
--- workers: 2
--- http_config
    psd_redis main cluster $TEST_NGINX_CLUSTER_SEEDS timeout=2s;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /dl/ { psd_link on; }
--- user_files
>>> dl/big.bin size=512K
multinode
--- check
my $b = nginx_start_extra(name => 'b');
for my $id (args_on_each('link', 'mn')) {
    my $u = sign_link(path => '/dl/big.bin', id => $id, limit => 3);
    my ($done, @all) = (0);
    for my $round (1 .. 20) {
        my $rs = to_both(req($u), 4, $b);
        push @all, @$rs;
        $done += grep { ($_->{status} // 0) == 200 && length $_->{body} == 524288 } @$rs;
        last unless grep { ($_->{status} // 0) != 410 } @$rs;     # all exhausted
        Time::HiRes::sleep(0.1);
    }
    is $done, 3, "link $id: exactly 3 complete downloads over both nodes (" . statuses(@all) . ')';
    is scalar(grep { my $s = $_->{status} // 0; $s != 200 && $s != 410 && $s != 429 } @all), 0,
        "link $id: the others are 429 busy or 410 exhausted";
    is scalar(grep { ($_->{status} // 0) == 200 && length $_->{body} != 524288 } @all), 0,
        "link $id: every 200 is complete";
    ok wait_until(sub { (redis_cmd('HGET', "psd:{link:$id}", 'used') // 0) == 3
                        && redis_cmd('ZCARD', "psd:{link:$id}:leases") == 0 }),
        "link $id: used 3, no lease left";
}
--- no_error_log
[error]



=== TEST 3: a webhook delivered to both nodes at once (same event, 4 deliveries): applied exactly once
--- workers: 2
--- http_config
    psd_redis main cluster $TEST_NGINX_CLUSTER_SEEDS timeout=2s;
--- config
    client_body_buffer_size 64k;
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe;
    }
    location = /metrics { psd_metrics; }
--- check
my $b = nginx_start_extra(name => 'b');
my @ports = ($ENV{TEST_NGINX_SERVER_PORT}, $b);
my $row = 'psd_webhook_requests_total{result="%s"}';
my %m0 = map { my $r = $_; $r => [ map { metric($_, sprintf $row, $r) } @ports ] } qw(applied duplicate);
my @orders = map { args_on_each('order', "mn$_") } 1 .. 2;
my $i = 0;
for my $o (@orders) {
    my $type = ++$i % 2 ? 'payment_intent.payment_failed' : 'payment_intent.succeeded';
    my $body = JSON::PP->new->canonical->encode({ id => "evt_mn_$i", object => 'event',
        type => $type, created => int time, data => { object => { id => "pi_$i",
        object => 'payment_intent', amount => 4900, currency => 'eur',
        metadata => { order_id => $o } } } });
    my $rs = to_both(stripe_raw($body), 2, $b);
    is_deeply [ map { "$_->{status} $_->{body}" } @$rs ], [ (qq(200 {"received":true}\n)) x 4 ],
        "order $o: four deliveries over both nodes, all received";
    my %h = @{ redis_cmd('HGETALL', "psd:{order:$o}") };
    if ($i % 2) { is $h{failed_attempts}, 1, "order $o: one failed attempt" }
    else { is $h{state}, 'paid', "order $o: paid" }
    is redis_cmd('XLEN', "psd:{order:$o}:events"), 1, "order $o: one timeline entry";
}
my %d = map { my $r = $_; $r => 0 } qw(applied duplicate);
for my $r (keys %d) {
    $d{$r} += metric($ports[$_], sprintf $row, $r) - $m0{$r}[$_] for 0, 1;
}
is $d{applied}, scalar @orders, 'applied: once per event, summed over both nodes';
is $d{duplicate}, 3 * @orders, 'duplicates: the other three deliveries';
--- no_error_log
[error]
