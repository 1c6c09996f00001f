# psd_redis <name> cluster <seeds>: the module against a Redis Cluster of 3
# primaries with a replica each, started by the harness on loopback
# (t/lib/PsdTest/Cluster.pm).  The features with keys on every primary
# (counter, download limit, rate limit, webhook, tokenize and reveal), a
# slot migrated while requests for its keys keep coming (ASK while it is
# open, MOVED after; nothing lost or counted twice), a primary killed (its
# keys get the feature's failure mode for a bounded time, the others go on,
# then all work again once its replica is promoted, without a reload), and
# nginx -t errors of the cluster syntax.
#
# Every block also asserts that no command touched keys of two slots (the
# harness's "no cross-slot command"); the whole suite runs against a
# cluster with TEST_NGINX_REDIS_CLUSTER=1 (make test-cluster).
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Echo;
use PsdTest::Link;
use Digest::SHA qw(sha256 hmac_sha256_hex);
use JSON::PP ();
use Time::HiRes qw(time sleep);

no_cluster('starts its own cluster');

our $STRIPE = 'whsec_cluster_test_4d1f7a9c2e6b8035';
our $REVEAL = 'psd-reveal-key-090-7c1e4a9f2b6d8053';
write_keys();
write_key_file('stripe', "$STRIPE\n");
write_key_file('vault', sha256('cluster test: vault key'));
write_key_file('fp', sha256('cluster test: fingerprint key'));
write_key_file('reveal', "$REVEAL\n");

# replicas, so that a killed primary is replaced; a node that lost its slots
# does not take the others down with it
cluster_start(primaries => 3, replicas => 1,
              options => ['--cluster-require-full-coverage', 'no']);

our $SEQ = 0;

# arg_on($port, 'cnt', 'c'): a value v such that the key psd:{cnt:v} lives
# on the primary $port (the part of a key the request names)
sub arg_on {
    my ($port, $kind, $prefix) = @_;
    my $k = cluster_key_on($port, "psd:{$kind:$prefix%d}");
    return $k =~ /^psd:\{\Q$kind\E:(.*)\}$/ ? $1 : die "bad key $k\n";
}

# arg_in_slot($slot, 'link', 'm'): the same for a slot
sub arg_in_slot {
    my ($slot, $kind, $prefix) = @_;
    my $k = cluster_key_in_slot($slot, "psd:{$kind:$prefix%d}");
    return $k =~ /^psd:\{\Q$kind\E:(.*)\}$/ ? $1 : die "bad key $k\n";
}

sub count_of { ($_[0]{body} // '') =~ /^\{"count":(\d+)\}$/ ? $1 : undef }

sub stripe_event {
    my (%o) = @_;
    return JSON::PP->new->canonical->encode({
        id => $o{id} // sprintf('evt_%d_%d', $$, ++$SEQ), object => 'event',
        type => $o{type} // 'payment_intent.succeeded', created => int time,
        data => { object => { id => 'pi_1', object => 'payment_intent',
            amount => 4900, currency => 'eur',
            metadata => { order_id => $o{order} } } } });
}

sub stripe_raw {
    my ($body) = @_;
    my $t = int time;
    return "POST /wh HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\nStripe-Signature: t=$t,v1="
        . hmac_sha256_hex("$t.$body", $STRIPE) . "\r\nContent-Length: "
        . length($body) . "\r\n\r\n$body";
}

sub post_json {
    my ($path, $body, @h) = @_;
    return http_request("POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\n" . join('', map { "$_\r\n" } @h)
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body");
}

sub order { my $h = redis_cmd('HGETALL', "psd:{order:$_[0]}"); ref $h ? { @$h } : {} }

sub statuses { my %n; $n{ $_->{status} // 'none' }++ for @_; join ' ', map { "$_=$n{$_}" } sort keys %n }

run_tests();

__DATA__

=== TEST 1: every feature with keys on each of the three primaries
--- workers: 2
--- http_config
    psd_redis main cluster $TEST_NGINX_CLUSTER_SEEDS timeout=2s;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    psd_limit_zone z key=$arg_k rate=1r/m burst=2;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /c { psd_counter $arg_k; }
    location /dl/ { psd_link on; psd_link_revocation on; }
    location /lim/ { psd_limit z nodelay; }
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe;
    }
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_field source.cvc cvv;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
--- user_files
>>> dl/a.bin size=64K
cluster
>>> lim/a.txt
limited
--- init
echo_app();
--- check
my @p = cluster_primaries();
is scalar @p, 3, 'three primaries';
for my $i (0 .. 2) {
    my $p = $p[$i];
    # psd_counter
    my $k = arg_on($p, 'cnt', 'c');
    is_deeply [ map { count_of(http_get("/c?k=$k")) } 1 .. 3 ], [1, 2, 3], "node $i: counter 1, 2, 3";
    is redis_cmd_at($p, 'GET', "psd:{cnt:$k}"), 3, "node $i: the counter lives on its primary";
    # a download link with limit 2
    my $id = arg_on($p, 'link', 'l');
    my $u = sign_link(path => '/dl/a.bin', id => $id, limit => 2);
    my @r = map { http_get($u) } 1 .. 3;
    is_deeply [ map { $_->{status} } @r ], [200, 200, 410], "node $i: link limit 2: 200, 200, 410";
    is length $r[0]{body}, 65536, "node $i: the download is complete";
    ok wait_until(sub { (redis_cmd('HGET', "psd:{link:$id}", 'used') // 0) == 2 }),
        "node $i: used 2";
    is redis_cmd_at($p, 'HGET', "psd:{link:$id}", 'used'), 2, "node $i: on its primary";
    # psd_limit burst=2
    my $lk = arg_on($p, 'lim', 'z:k') =~ s/^z://r;
    is_deeply [ map { http_get("/lim/a.txt?k=$lk")->{status} } 1 .. 4 ], [200, 200, 200, 429],
        "node $i: limit burst=2: 3 pass, then 429";
    is redis_cmd_at($p, 'EXISTS', "psd:{lim:z:$lk}"), 1, "node $i: the bucket lives on its primary";
    # a webhook, and its replay
    my $o = arg_on($p, 'order', 'o');
    my $ev = stripe_event(order => $o);
    is http_request(stripe_raw($ev))->{status}, 200, "node $i: webhook 200";
    is http_request(stripe_raw($ev))->{status}, 200, "node $i: replay 200";
    is order($o)->{state}, 'paid', "node $i: order paid";
    is redis_cmd('XLEN', "psd:{order:$o}:events"), 1, "node $i: applied once";
    is redis_cmd_at($p, 'HGET', "psd:{order:$o}", 'state'), 'paid', "node $i: on its primary";
}
# tokenize and reveal: random tokens land on every primary
my (%on, @bad);
for my $n (1 .. 12) {
    my $r = post_json('/checkout', qq({"card":{"number":"4242424242424242","cvc":"123"}}));
    my $s = seen($r);
    my ($t, $c) = $s ? $s->{body} =~ /"number":"([^"]+)","cvc":"([^"]+)"/ : ();
    unless ($t) { push @bad, "tokenize $n: $r->{status}"; next }
    $on{ cluster_node_for_key("psd:{tok:$t}") }++;
    my $g = post_json('/gateway', qq({"source":{"number":"$t","cvc":"$c"}}), "X-PSD-Reveal-Key: $::REVEAL");
    my $gs = seen($g);
    push @bad, "reveal $n: $g->{status}" unless $gs
        && $gs->{body} eq '{"source":{"number":"4242424242424242","cvc":"123"}}';
}
is "@bad", '', 'twelve cards tokenized and revealed';
ok keys %on >= 2, 'the vault keys are spread over the primaries: ' . join ' ', values %on;
--- no_error_log
[error]



=== TEST 2: a slot migrated during traffic: counter, download limit and webhook keys of that slot; ASK, then MOVED; nothing lost
--- workers: 2
--- http_config
    psd_redis main cluster $TEST_NGINX_CLUSTER_SEEDS timeout=6s;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /c { psd_counter $arg_k failure_mode=closed; }
    location /dl/ { psd_link on; psd_link_failure_mode closed; }
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe;
    }
--- user_files
>>> dl/m.bin size=32K
migrate
--- check
my ($from) = cluster_primaries();
my $k = arg_on($from, 'cnt', 'mig');
my $slot = cluster_slot("psd:{cnt:$k}");
my $id = arg_in_slot($slot, 'link', 'm');
my $o = arg_in_slot($slot, 'order', 'm');
my $u = sign_link(path => '/dl/m.bin', id => $id, limit => 100000);
my %send = (
    counter => sub { http_get("/c?k=$k") },
    download => sub { http_get($u) },
    webhook => sub { http_request(stripe_raw(stripe_event(order => $o,
                                  type => 'payment_intent.payment_failed'))) },
);
my %ok = (
    counter => sub { $_[0]{status} == 200 && defined count_of($_[0]) },
    download => sub { $_[0]{status} == 200 && length $_[0]{body} == 32768 },
    webhook => sub { $_[0]{status} == 200 },
);
# every key of the slot exists on the source before the migration
is $send{$_}->()->{status}, 200, "before: $_" for qw(counter download webhook);
ok wait_until(sub { (redis_cmd('HGET', "psd:{link:$id}", 'used') // 0) == 1 }), 'before: download counted';
ok @{ redis_cmd_at($from, 'CLUSTER', 'GETKEYSINSLOT', $slot, 100) } >= 4,
    'the slot holds the counter, the link and the order keys';
my $h = cluster_migrate_slot($slot, $from, undef, background => 1, batch => 1, pause => 0.4);
my (@log, $end);
for (my $i = 0; ; $i++) {
    if (!cluster_migrate_running($h)) { $end //= time + 1 }   # and on, for MOVED
    last if $end && time > $end;
    my $kind = (qw(counter download webhook))[$i % 3];
    my $t0 = time;
    my $r = $send{$kind}->();
    push @log, { kind => $kind, t0 => $t0, t1 => time, r => $r, ok => $ok{$kind}->($r) };
}
my $m = cluster_migrate_wait($h);
isnt $m->{to}, $from, "slot $slot moved from $from to $m->{to}";
my @open = grep { $_->{t1} > $m->{phases}{migrating} && $_->{t0} < $m->{phases}{done} } @log;
# a script whose keys are half moved (a new webhook event, a new download
# lease) is answered TRYAGAIN until the slot is closed: the module retries
# it every 20 ms within its timeout, so such a request waits for the end
# of the migration, and the loop sends little while the slot is open (one
# such request may even span the whole migration)
ok @open >= 1, scalar(@open) . ' request(s) in flight while the slot was open (ASK, TRYAGAIN)';
ok scalar(grep { $_->{t0} > $m->{phases}{done} } @log) >= 3, 'requests after it closed (MOVED)';
for my $kind (qw(counter download webhook)) {
    my @k = grep { $_->{kind} eq $kind } @log;
    is scalar(grep { !$_->{ok} } @k), 0, "$kind: all " . @k . ' answered as without a migration'
        or diag statuses(map { $_->{r} } @k);
}
my @c = grep { $_->{kind} eq 'counter' } @log;
is_deeply [ map { count_of($_->{r}) } @c ], [ 2 .. @c + 1 ], 'counter: every hit counted once, in order';
is redis_cmd('GET', "psd:{cnt:$k}"), @c + 1, 'counter in Redis';
my $dl = grep { $_->{kind} eq 'download' } @log;
ok wait_until(sub { (redis_cmd('HGET', "psd:{link:$id}", 'used') // 0) == $dl + 1 }),
    'download limit: every completed download spent once: ' . ($dl + 1);
my $wh = grep { $_->{kind} eq 'webhook' } @log;
is order($o)->{failed_attempts}, $wh + 1, 'webhook: every event applied once';
is redis_cmd('XLEN', "psd:{order:$o}:events"), $wh + 1, 'webhook: one timeline entry each';
is cluster_node_for_key("psd:{cnt:$k}"), $m->{to}, 'the slot map says where it went';
is redis_cmd_at($m->{to}, 'EXISTS', "psd:{cnt:$k}", "psd:{link:$id}", "psd:{order:$o}"), 3,
    'the keys are on the new owner';
--- no_error_log
[error]



=== TEST 3: a primary killed: its keys get the failure mode for a bounded time, the others go on; its replica takes over, no reload
--- workers: 2
--- http_config
    psd_redis main cluster $TEST_NGINX_CLUSTER_SEEDS timeout=1s connect_timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    psd_limit_zone z key=$arg_k rate=10r/s burst=1000;
--- config
    location = /c { psd_counter $arg_k; }
    location /dl/ { psd_link on; psd_link_failure_mode closed; }
    location /lim/ { psd_limit z nodelay; }
--- user_files
>>> dl/k.bin size=8K
kill
>>> lim/a.txt
limited
--- check
my ($p, $q) = cluster_primaries();
my $k = arg_on($p, 'cnt', 'dead');
my $k2 = arg_on($q, 'cnt', 'alive');
my $lk = arg_on($p, 'lim', 'z:dead') =~ s/^z://r;
my $id = arg_on($p, 'link', 'dead');
my $u = sign_link(path => '/dl/k.bin', id => $id, limit => 1000);
is count_of(http_get("/c?k=$k")), 1, 'counter on the doomed primary: 1';
is count_of(http_get("/c?k=$k2")), 1, 'counter on another primary: 1';
is http_get($u)->{status}, 200, 'download on the doomed primary';
ok wait_until(sub { (redis_cmd('HGET', "psd:{link:$id}", 'used') // 0) == 1 }), 'counted';
is http_get("/lim/a.txt?k=$lk")->{status}, 200, 'limit on the doomed primary';
is redis_cmd_at($p, 'WAIT', 1, 2000), 1, 'the replica has it all';
my @workers = worker_pids();
cluster_kill_primary($p);
my $t_kill = time;
my (@dead, @alive, @dl, @lim, $t_back);
while (time < $t_kill + 30) {
    push @dead, http_get("/c?k=$k");
    push @alive, http_get("/c?k=$k2");
    push @dl, http_get($u);
    push @lim, http_get("/lim/a.txt?k=$lk");
    if (($dead[-1]{status} // 0) == 200 && ($dl[-1]{status} // 0) == 200) { $t_back = time; last }
    sleep 0.1;
}
ok $t_back, sprintf('its keys work again %.1f s after the kill', ($t_back // time) - $t_kill);
my @failed = grep { ($_->{status} // 0) != 200 } @dead;
ok @failed >= 1, scalar(@failed) . ' counter requests got the failure mode meanwhile';
is scalar(grep { !(($_->{status} // 0) == 503 && ($_->{headers}{'retry-after'} // '') eq '1'
                 && $_->{body} eq qq({"error":"backend_unavailable"}\n)) } @failed), 0,
    'counter (closed): 503 backend_unavailable with Retry-After: 1, nothing else ('
    . statuses(@dead) . ')';
my @counts = map { count_of($_) } grep { ($_->{status} // 0) == 200 } @dead;
is_deeply \@counts, [ 2 .. @counts + 1 ],
    'the counts after the failover go on from the replica\'s 1, each hit once';
is scalar(grep { ($_->{status} // 0) != 200 && !(($_->{status} // 0) == 503
                 && ($_->{headers}{'retry-after'} // '') eq '1') } @dl), 0,
    'download (closed): 200 or 503 with Retry-After: 1 (' . statuses(@dl) . ')';
is scalar(grep { ($_->{status} // 0) != 200 } @lim), 0,
    'limit (local): decided on this node meanwhile, never refused (' . statuses(@lim) . ')';
is_deeply [ map { count_of($_) } @alive ], [ 2 .. @alive + 1 ],
    'the counter on another primary: counted throughout (' . statuses(@alive) . ')';
# each worker learns the new map on its own: the other one may need a few
# hundred milliseconds more
my $n = @counts + 1;
my (@after, $streak);
for (my $until = time + 3; time < $until && ($streak // 0) < 3; ) {
    push @after, http_get("/c?k=$k");
    $streak = ($after[-1]{status} // 0) == 200 ? ($streak // 0) + 1 : 0;
}
is $streak, 3, 'and on: both workers serve its keys within 3 s (' . statuses(@after) . ')';
my @later = map { count_of($_) } grep { ($_->{status} // 0) == 200 } @after;
is_deeply \@later, [ $n + 1 .. $n + @later ], 'and on: each hit counted once';
my $new = cluster_wait_failover($p);
is cluster_node_for_key("psd:{cnt:$k}"), $new, "replica $new serves the slots";
is redis_cmd_at($new, 'GET', "psd:{cnt:$k}"), $n + @later, 'the counter lives there';
is_deeply [ worker_pids() ], \@workers, 'the same workers: no reload, no crash';
cluster_node_start($p);      # back, as a replica, for the blocks after this one



=== TEST 4: nginx -t: cluster without seeds
--- http_config
    psd_redis r cluster;
--- config
--- must_die
--- error_log eval
[qr/psd_redis/, qr/cluster/]



=== TEST 5: nginx -t: a cluster seed without a port
--- http_config
    psd_redis r cluster 127.0.0.1;
--- config
--- must_die
--- error_log eval
[qr/psd_redis/, qr/"127\.0\.0\.1"/]



=== TEST 6: nginx -t: db= with a cluster
--- http_config
    psd_redis r cluster $TEST_NGINX_CLUSTER_SEEDS db=1;
--- config
--- must_die
--- error_log eval
[qr/psd_redis/, qr/"db=1"/]



=== TEST 7: nginx -t: a cluster seed that is no address
--- http_config
    psd_redis r cluster $TEST_NGINX_CLUSTER_SEEDS 127.0.0.1:notaport;
--- config
--- must_die
--- error_log eval
[qr/psd_redis/, qr/"127\.0\.0\.1:notaport"/]
