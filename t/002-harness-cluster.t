# Self-tests of t/lib's Redis Cluster and Sentinel helpers
# (t/lib/PsdTest/Cluster.pm), the cluster-mode rewriting of psd_redis and
# the extra nginx instances, with stock nginx features only: a 3-primary
# cluster with one replica each, slot migrations (in steps and in the
# background), a primary killed and replaced, a Sentinel group with a
# forced failover.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use Time::HiRes qw(time sleep);

no_cluster('starts a cluster and a Sentinel group of its own');
cluster_start(primaries => 3, replicas => 1);

run_tests();

__DATA__

=== TEST 1: the cluster: slots, routing, fan-out, psd_redis rewriting, refusals
--- config
    location /t { return 204; }
--- request
GET /t
--- error_code: 204
--- check
my @seeds = split ' ', $ENV{TEST_NGINX_CLUSTER_SEEDS};
is scalar @seeds, 3, 'three seeds';
is_deeply [ map { "127.0.0.1:$_" } cluster_primaries() ], \@seeds, 'the seeds are the primaries';
is scalar(cluster_ports()), 6, 'six nodes';
is scalar(grep { $_->{role} eq 'slave' } cluster_nodes()), 3, 'three replicas' or diag explain [cluster_nodes()];
for my $k ('psd:{cnt:a}', 'psd:{link:L1}:leases', 'plain', '{}x{y}', 'a{b}c{d}', "\x{e9}") {
    is cluster_slot($k), redis_cmd('CLUSTER', 'KEYSLOT', $k), "slot of '$k' as Redis computes it";
}
my %on;
for my $i (1 .. 30) {
    is redis_cmd('SET', "psd:{t:$i}", $i), 'OK', "SET psd:{t:$i}" if $i == 1;
    redis_cmd('SET', "psd:{t:$i}", $i) if $i > 1;
    $on{ cluster_node_for_key("psd:{t:$i}") }++;
}
is scalar keys %on, 3, 'keys land on all three primaries';
is redis_cmd('GET', 'psd:{t:17}'), 17, 'GET routed to the owner';
is redis_cmd('EVAL', 'return redis.call("GET", KEYS[1])', 1, 'psd:{t:5}'), 5, 'EVAL routed by its key';
is redis_cmd('DBSIZE'), 30, 'DBSIZE sums the primaries';
is scalar @{ redis_cmd('KEYS', 'psd:*') }, 30, 'KEYS merges the primaries';
is_deeply redis_cmd('SCAN', 0, 'MATCH', 'psd:{t:1*', 'COUNT', 5),
    [ 0, [ sort map { "psd:{t:$_}" } 1, 10 .. 19 ] ], 'SCAN: one complete pass over every primary';
like redis_cmd('INFO', 'commandstats'), qr/^cmdstat_set:calls=30,/m, 'INFO sums the primaries';
my $p = cluster_node_for_key('psd:{t:1}');
like redis_cmd_at((grep { $_ != $p } cluster_primaries())[0], 'GET', 'psd:{t:1}'),
    qr/^-MOVED \d+ 127\.0\.0\.1:$p$/, 'another primary answers MOVED';
is cluster_key_on($p, 'psd:{cnt:x%d}') =~ /^psd:\{cnt:x\d+\}$/ && cluster_node_for_key(cluster_key_on($p, 'psd:{cnt:x%d}')), $p,
    'cluster_key_on finds a key on a node';
is cluster_slot(cluster_key_in_slot(42, 'psd:{k%d}')), 42, 'cluster_key_in_slot';
ok !eval { redis_stop(); 1 }, 'redis_stop refuses';
like $@, qr/redis_stop: the test's Redis is a cluster.*no_cluster/, 'and says why';
ok !eval { redis_kill(); 1 }, 'redis_kill refuses';
# the suite's cluster mode rewrites psd_redis lines naming the test redis
{
    local $PsdTest::CLUSTER = '1';
    my $r = $ENV{TEST_NGINX_REDIS_PORT};
    is PsdTest::_cluster_rewrite("    psd_redis main 127.0.0.1:$r timeout=1s db=0;\n"
        . "    psd_redis other 127.0.0.1:${r}1;\n    psd_redis fake 127.0.0.1:$ENV{TEST_NGINX_FAKE_REDIS_PORT};"),
        "    psd_redis main cluster $ENV{TEST_NGINX_CLUSTER_SEEDS} timeout=1s;\n"
        . "    psd_redis other 127.0.0.1:${r}1;\n    psd_redis fake 127.0.0.1:$ENV{TEST_NGINX_FAKE_REDIS_PORT};",
        'rewritten: the test redis only, db=0 dropped';
    ok !eval { PsdTest::_cluster_rewrite("psd_redis m 127.0.0.1:$r db=2;"); 1 }, 'db=2 refused';
    like $@, qr/db=2.*no_cluster/, 'and says why';
}



=== TEST 2: FLUSHALL between blocks; a slot migration in steps, and one in the background
--- config
--- check
is redis_cmd('DBSIZE'), 0, 'keys of TEST 1 are gone';
my $key = 'psd:{cnt:mig}';
my $slot = cluster_slot($key);
my $from = cluster_node_for_key($key);
my $other = cluster_key_in_slot($slot, 'psd:{cnt:other%d}');
redis_cmd('SET', $key, 0);
my @phases;
my $to = cluster_migrate_slot($slot, $from, undef, batch => 1, step => sub {
    my ($phase, @keys) = @_;
    push @phases, $phase;
    is redis_cmd('INCR', $key), scalar(@phases), "INCR of an existing key during '$phase'";
    is redis_cmd('INCR', $other), scalar(@phases), "INCR of a new key during '$phase' (ASK)"
        if $phase eq 'migrating';
    redis_cmd('INCR', $other) if $phase ne 'migrating';
});
# the new key was made on the importing node (ASK): one key to move
is "@phases", 'migrating batch moved done', 'steps';
isnt $to, $from, 'moved to another primary';
is cluster_node_for_key($key), $to, 'the slot map says so';
is redis_cmd_at($to, 'GET', $key), 4, 'the key lives on the new owner';
is redis_cmd_at($to, 'GET', $other), 4, 'and the new one';
like redis_cmd_at($from, 'GET', $key), qr/^-MOVED $slot 127\.0\.0\.1:$to$/, 'the old owner redirects';
# back, in the background, with traffic meanwhile
my $h = cluster_migrate_slot($slot, $to, $from, background => 1, batch => 1, pause => 0.3);
my ($n, @t) = (4);
while (cluster_migrate_running($h)) {
    is redis_cmd('INCR', $key), ++$n, "INCR $n during the background migration" if $n < 8;
    redis_cmd('INCR', $key) if $n >= 8 && ++$n;
    push @t, time;
    sleep 0.05;
}
my $m = cluster_migrate_wait($h);
is $m->{to}, $from, 'background migration: back to the first owner';
is scalar @{ $m->{phases}{batch} }, 2, 'two batches (a key each)';
ok $m->{phases}{migrating} < $m->{phases}{moved} && $m->{phases}{moved} < $m->{phases}{done},
    'phases in order';
ok scalar(grep { $_ > $m->{phases}{migrating} && $_ < $m->{phases}{done} } @t) >= 3,
    'commands were sent while the slot was open';
is redis_cmd('GET', $key), $n, "no INCR lost ($n)";
is cluster_node_for_key($key), $from, 'the slot map agrees';



=== TEST 3: extra nginx instances: the block's config, another config, parallel requests to both
--- config
    location /t { return 200 "port $server_port\n"; }
--- check
my $p = nginx_start_extra(name => 'b');
is $p, $ENV{TEST_NGINX_EXTRA_PORT_B}, 'TEST_NGINX_EXTRA_PORT_B';
is nginx_extra_port('b'), $p, 'nginx_extra_port';
isnt $p, $ENV{TEST_NGINX_SERVER_PORT}, 'its own port';
my $req = "GET /t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
my $rs = http_parallel([ map { $_ % 2 ? [$req, $p] : $req } 1 .. 10 ]);
is_deeply [ map { $_->{body} } @$rs ],
    [ map { $_ % 2 ? "port $p\n" : "port $ENV{TEST_NGINX_SERVER_PORT}\n" } 1 .. 10 ],
    'http_parallel: each request to its port';
is http_get('/t', undef, port => $p)->{body}, "port $p\n", 'http_get with port';
is nginx_stop_extra('b'), undef, 'stopped cleanly';
ok !http_get('/t', undef, port => $p, timeout => 1)->{status}, 'gone';
nginx_start_extra(name => 'b', config => '    location /t { return 200 "other\n"; }', workers => 2);
is http_get('/t', undef, port => $p)->{body}, "other\n", 'restarted with another config, same port';
my $c = nginx_start_extra(name => 'c');
is http_get('/nothing', undef, port => $c)->{status}, 404, 'a third one';
like nginx_extra_log('c'), qr/No such file or directory/, 'nginx_extra_log';
--- error_log
port
--- no_error_log
[error]



=== TEST 4: a primary killed: a replica takes its slots, the data stays; the old primary comes back as a replica
--- config
--- check
my $key = 'psd:{cnt:fail}';
my $p = cluster_node_for_key($key);
is redis_cmd('SET', $key, 'kept'), 'OK', 'SET on the primary';
is redis_cmd_at($p, 'WAIT', 1, 2000), 1, 'replicated';
my $slots = cluster_kill_primary($p);
ok @$slots, 'killed a primary with slots';
ok !eval { redis_cmd_at($p, 'PING'); 1 }, 'it is gone';
my $new = cluster_wait_failover($p);
isnt $new, $p, "replica $new promoted";
is cluster_node_for_key($key), $new, 'it owns the slot';
is redis_cmd('GET', $key), 'kept', 'the data is there';
is scalar(cluster_primaries()), 3, 'three primaries again';
cluster_node_start($p);
my ($n) = grep { $_->{port} == $p } cluster_nodes();
is $n->{role}, 'slave', 'the old primary rejoined as a replica';
ok wait_for_value(sub { (redis_pipeline_at($p, ['READONLY'], ['GET', $key]))[1] }, 'kept'),
    'and replicates (READONLY GET)';

sub wait_for_value {
    my ($get, $want) = @_;
    for (1 .. 100) { return 1 if (eval { $get->() } // '') eq $want; sleep 0.05 }
    return 0;
}



=== TEST 5: a Sentinel group: redis_cmd goes to the primary; SENTINEL FAILOVER and its wait
--- config
--- init
cluster_stop();
sentinel_start(master => 'psdmaster', replicas => 1, sentinels => 3);
--- check
my ($data, $sent) = sentinel_ports();
is scalar @$sent, 3, 'three sentinels';
is $ENV{TEST_NGINX_SENTINELS}, join(' ', map { "127.0.0.1:$_" } @$sent), 'TEST_NGINX_SENTINELS';
is $ENV{TEST_NGINX_SENTINEL_MASTER}, 'psdmaster', 'TEST_NGINX_SENTINEL_MASTER';
my $old = sentinel_master_port();
is $old, $data->[0], 'the first data node is the primary';
is redis_cmd('SET', 'psd:{cnt:s}', 1), 'OK', 'redis_cmd writes to the primary';
is sentinel_query($sent->[1], 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'psdmaster')->[1], $old,
    'sentinel_query';
is sentinel_failover(wait => 0), $old, 'SENTINEL FAILOVER sent';
my $new = sentinel_wait_failover($old, rejoin => 0);
isnt $new, $old, "new primary $new";
is sentinel_master_port(), $new, 'the sentinels name it';
is redis_cmd('GET', 'psd:{cnt:s}'), 1, 'redis_cmd reads from the new primary';
is redis_cmd('INCR', 'psd:{cnt:s}'), 2, 'and writes there';
is redis_cmd_at($new, 'ROLE')->[0], 'master', 'its role';
