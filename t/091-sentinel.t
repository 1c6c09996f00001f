# psd_redis <name> sentinel <master-name> <sentinels>: the module finds the
# primary through Redis Sentinel (a primary, a replica and three sentinels
# started by the harness on loopback, t/lib/PsdTest/Cluster.pm), follows a
# forced failover (SENTINEL FAILOVER) during traffic without a reload,
# starts with the first sentinel unreachable, and nginx -t refuses the
# syntax errors.
use strict;
use warnings;
use lib 't/lib';
use PsdTest qw(:DEFAULT free_port);
use PsdTest::Link;
use Time::HiRes qw(time sleep);

no_cluster('starts its own Sentinel group');

write_keys();
$ENV{TEST_NGINX_DEAD_PORT} = free_port();       # nothing listens there
sentinel_start(master => 'psdmaster', replicas => 1, sentinels => 3);

our $SENTINEL_PW = 'psd-sentinel-pw-3c9e1a7b';
write_key_file('sentinel', "$SENTINEL_PW\n");

# every sentinel asks for a password (sentinels take ACL commands), or not
sub sentinel_auth {
    my ($on) = @_;
    my (undef, $sent) = sentinel_ports();
    for my $port (@$sent) {
        my @cmd = ('ACL', 'SETUSER', 'default', $on ? ('resetpass', ">$SENTINEL_PW") : 'nopass');
        unshift @cmd, '-a', $SENTINEL_PW unless $on;
        system('redis-cli', '-p', $port, '--no-auth-warning', @cmd) == 0 or die "redis-cli: $?\n";
    }
}

sub count_of { ($_[0]{body} // '') =~ /^\{"count":(\d+)\}$/ ? $1 : undef }
sub statuses { my %n; $n{ $_->{status} // 'none' }++ for @_; join ' ', map { "$_=$n{$_}" } sort keys %n }

run_tests();

__DATA__

=== TEST 1: the primary is found through the sentinels: counter and download limit
--- http_config
    psd_redis main sentinel $TEST_NGINX_SENTINEL_MASTER $TEST_NGINX_SENTINELS timeout=1s;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /c { psd_counter $arg_k; }
    location /dl/ { psd_link on; }
--- user_files
>>> dl/s.bin size=16K
sentinel
--- check
is_deeply [ map { count_of(http_get('/c?k=s1')) } 1 .. 3 ], [1, 2, 3], 'counter 1, 2, 3';
my $m = sentinel_master_port();
is redis_cmd_at($m, 'GET', 'psd:{cnt:s1}'), 3, 'on the primary the sentinels name';
my $u = sign_link(path => '/dl/s.bin', id => 'sent1', limit => 2);
is_deeply [ map { http_get($u)->{status} } 1 .. 3 ], [200, 200, 410], 'link limit 2: 200, 200, 410';
ok wait_until(sub { (redis_cmd_at($m, 'HGET', 'psd:{link:sent1}', 'used') // 0) == 2 }),
    'used 2 on the primary';
--- no_error_log
[error]



=== TEST 2: SENTINEL FAILOVER during traffic: requests go on to the new primary, no reload
--- workers: 2
--- http_config
    psd_redis main sentinel $TEST_NGINX_SENTINEL_MASTER $TEST_NGINX_SENTINELS timeout=1s;
--- config
    location = /c { psd_counter $arg_k; }
--- check
is count_of(http_get('/c?k=f')), 1, 'counter 1 on the first primary';
my @workers = worker_pids();
my $old = sentinel_failover(wait => 0);
my (@r, $new, $t_new, $landed);
# Until the sentinels name the new primary, and then until a count the
# module answers is the one on the new primary: it followed +switch-master
# (the old primary stays writable until Sentinel reconfigures it, up to
# 10 s later, so a client that does not follow would go on writing there).
for (my $end = time + 30; time < $end; sleep 0.1) {
    my $r = http_get('/c?k=f');
    push @r, $r;
    $new //= eval { my $p = sentinel_master_port(); $p != $old ? $p : undef };
    $t_new //= time if $new;
    next unless $new && ($r->{status} // 0) == 200;
    if (count_of($r) == (redis_cmd_at($new, 'GET', 'psd:{cnt:f}') // 0)) { $landed = time; last }
    last if time > $t_new + 8;
}
ok $new, "the sentinels name a new primary ($old -> " . ($new // 'none') . ')';
ok $landed, 'the counts land on the new primary, within 8 s of the switch';
is scalar(grep { ($_->{status} // 0) != 200 && !(($_->{status} // 0) == 503
                 && ($_->{headers}{'retry-after'} // '') eq '1') } @r), 0,
    'meanwhile: counted, or 503 with Retry-After: 1 (' . statuses(@r) . ')';
my $n = redis_cmd_at($new, 'GET', 'psd:{cnt:f}');
is_deeply [ map { count_of(http_get('/c?k=f')) } 1 .. 3 ], [ $n + 1 .. $n + 3 ], 'and on, on the new primary';
is redis_cmd_at($new, 'GET', 'psd:{cnt:f}'), $n + 3, 'the new primary holds the count';
is_deeply [ worker_pids() ], \@workers, 'the same workers: no reload, no crash';
sentinel_wait_failover($old, rejoin => 0);



=== TEST 3: the first sentinel is unreachable at start: the next one answers
--- http_config
    psd_redis main sentinel $TEST_NGINX_SENTINEL_MASTER 127.0.0.1:$TEST_NGINX_DEAD_PORT $TEST_NGINX_SENTINELS timeout=1s;
--- config
    location = /c { psd_counter $arg_k; }
--- request eval
["GET /c?k=d", "GET /c?k=d"]
--- response_body eval
[qq({"count":1}\n), qq({"count":2}\n)]
--- check
is redis_cmd_at(sentinel_master_port(), 'GET', 'psd:{cnt:d}'), 2, 'on the primary';



=== TEST 4: nginx -t: sentinel without a master name
--- http_config
    psd_redis r sentinel;
--- config
--- must_die
--- error_log eval
[qr/psd_redis/, qr/sentinel/]



=== TEST 5: nginx -t: sentinel without sentinels
--- http_config
    psd_redis r sentinel psdmaster;
--- config
--- must_die
--- error_log eval
[qr/psd_redis/, qr/psdmaster|sentinel/]



=== TEST 6: nginx -t: a sentinel without a port
--- http_config
    psd_redis r sentinel psdmaster 127.0.0.1;
--- config
--- must_die
--- error_log eval
[qr/psd_redis/, qr/"127\.0\.0\.1"/]



=== TEST 7: sentinels with a password: sentinel_password_file= authenticates, and the password appears nowhere
--- http_config
    psd_redis main sentinel $TEST_NGINX_SENTINEL_MASTER $TEST_NGINX_SENTINELS sentinel_password_file=$TEST_NGINX_CONF_DIR/keys/sentinel timeout=1s;
--- config
    location = /c { psd_counter $arg_k; }
    location = /s { psd_status on; }
--- init
main::sentinel_auth(1);
--- check
my $r = eval { redis_cmd_at((sentinel_ports())[1][0], 'PING') } // $@;
like $r, qr/NOAUTH/, 'the sentinels want a password';
ok wait_until(sub { (http_get('/c?k=pw')->{status} // 0) == 200 }, 15),
    'the primary is found through sentinels that want a password';
like http_get('/s')->{body}, qr/"mode":"sentinel","connected":true/, 'status: connected';
main::sentinel_auth(0);
my $log = do { local (@ARGV, $/) = ("$ENV{TEST_NGINX_SERVROOT}/logs/error.log"); <> };
unlike $log, qr/\Q$main::SENTINEL_PW\E/, 'the password is in no log line';
