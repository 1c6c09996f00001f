# The Redis client on a healthy server, through psd_counter: the counter's
# answers and keys, several servers (redis=, db=), AUTH with requirepass
# and with an ACL user, unix sockets, and pipelining: many requests of each
# worker share its one connection and every reply reaches its own request.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
no_cluster('the single-server client: its connections (CLIENT LIST, INFO), db=, AUTH, unix sockets');
use JSON::PP ();
use IO::Socket::UNIX;
use POSIX ();
use Time::HiRes qw(time sleep);

# --- helpers for the blocks ---------------------------------------------------

# A redis-server of this file besides the harness's own, listening on a unix
# socket only (extra arguments: --requirepass, --user ...); returns the
# socket's path.  It runs until the end of the file (stopping it in a block's
# check would log errors of nginx, which still runs then).  Its cwd is the
# harness's redis directory, so a later run finds and kills it if this one
# is killed hard.
my %extra;
sub extra_redis {
    my ($name, @args) = @_;
    my $dir = "$ENV{TEST_NGINX_SERVROOT}/redis";
    my $sock = "$dir/$name.sock";
    stop_extra_redis($name);
    mkdir $dir;
    unlink $sock;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$ENV{TEST_NGINX_SERVROOT}/logs/redis-$name.log";
        open STDERR, '>&', \*STDOUT;
        exec($PsdTest::Redis::BINARY, '--port', '0', '--unixsocket', $sock,
            '--save', '', '--appendonly', 'no', '--dir', $dir, @args)
            or POSIX::_exit(127);
    }
    $extra{$name} = $pid;
    for (1 .. 250) {
        return $sock if IO::Socket::UNIX->new(Peer => $sock);
        die "redis-server $name exited\n" if waitpid($pid, POSIX::WNOHANG()) > 0;
        sleep 0.02;
    }
    die "redis-server $name does not listen on $sock\n";
}

sub stop_extra_redis {
    my $pid = delete $extra{ $_[0] } or return;
    kill KILL => $pid;
    waitpid $pid, 0;
}

END { local $?; stop_extra_redis($_) for keys %extra }

# redis_cmd for a unix socket; with auth => [user?, password] AUTH first.
sub xredis_cmd {
    my ($sock, @args) = @_;
    my $auth = ref $args[0] ? shift @args : undef;
    my $s = IO::Socket::UNIX->new(Peer => $sock) or die "connect $sock: $!\n";
    my @cmds = ($auth ? [ 'AUTH', @$auth ] : (), \@args);
    print {$s} map { ('*' . @$_ . "\r\n",
        map { '$' . length($_) . "\r\n$_\r\n" } @$_) } @cmds;
    my @r = map { PsdTest::Redis::_reply($s, time + 5) } @cmds;
    return $r[-1];
}

# polls $cond every 20 ms for up to $secs; returns its first true value
sub wait_for {
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

# true once this worker's connections to every server are up
sub wait_connected {
    return wait_for($_[0] // 3, sub {
        my $s = status_json()->{redis} or return 0;
        return @$s && !grep { !$_->{connected} } @$s;
    });
}

# local ports of the established TCP connections of process $pid to
# 127.0.0.1:$port (from /proc: the sockets among its file descriptors)
sub tcp_peers {
    my ($pid, $port) = @_;
    my %mine = map { (readlink($_) // '') =~ /^socket:\[(\d+)\]$/ ? ($1 => 1) : () }
        glob "/proc/$pid/fd/*";
    my @ports;
    open my $fh, '<', "/proc/$pid/net/tcp" or return;
    <$fh>;
    while (my $line = <$fh>) {
        my @f = split ' ', $line;
        my ($lport, $rport) = map { /:([0-9A-F]{4})$/ ? hex $1 : -1 } @f[1, 2];
        push @ports, $lport if $rport == $port && $f[3] eq '01' && $mine{ $f[9] };
    }
    return @ports;
}

sub counter_get {
    my ($path) = @_;
    my $r = http_get($path);
    my ($n) = ($r->{body} // '') =~ /^\{"count":(\d+)\}\n\z/;
    return ($r->{status} // 0, $n);
}

run_tests();

__DATA__

=== TEST 1: counter counts per key and sets the TTL
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /c { psd_counter $arg_k ttl=1h; }
--- request eval
["GET /c?k=a", "GET /c?k=a", "GET /c?k=b", "POST /c?k=a\nbody"]
--- response_body eval
["{\"count\":1}\n", "{\"count\":2}\n", "{\"count\":1}\n", "{\"count\":3}\n"]
--- response_headers
Content-Type: application/json
!Retry-After
--- check
is redis_cmd('GET', 'psd:{cnt:a}'), 3, 'key psd:{cnt:a} holds the count';
is redis_cmd('GET', 'psd:{cnt:b}'), 1, 'key psd:{cnt:b} holds the count';
my $ttl = redis_cmd('TTL', 'psd:{cnt:a}');
ok $ttl > 3500 && $ttl <= 3600, "TTL set from ttl=1h ($ttl)";
is_deeply [ sort @{ redis_cmd('KEYS', '*') } ], ['psd:{cnt:a}', 'psd:{cnt:b}'],
    'no other keys';
--- no_error_log
[error]
[warn]



=== TEST 2: without ttl= the key does not expire
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /c { psd_counter "user-$arg_k"; }
--- request
GET /c?k=7
--- response_body
{"count":1}
--- check
is redis_cmd('TTL', 'psd:{cnt:user-7}'), -1, 'no TTL';
--- no_error_log
[error]



=== TEST 3: HEAD counts and sends no body
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /c { psd_counter $arg_k; }
--- request
HEAD /c?k=h
--- response_body:
--- response_headers
Content-Type: application/json
--- check
is redis_cmd('GET', 'psd:{cnt:h}'), 1, 'HEAD was counted';
--- no_error_log
[error]



=== TEST 4: wrong method is 405, empty or long key 400, Redis untouched
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /c { psd_counter $arg_k; }
--- request eval
["PUT /c?k=a", "DELETE /c?k=a", "GET /c", "GET /c?k=", "GET /c?k=" . 'x' x 513,
 "GET /c?k=" . 'x' x 512]
--- error_code eval
[405, 405, 400, 400, 400, 200]
--- response_body eval
["{\"error\":\"method_not_allowed\"}\n", "{\"error\":\"method_not_allowed\"}\n",
 "{\"error\":\"invalid_key\"}\n", "{\"error\":\"invalid_key\"}\n",
 "{\"error\":\"invalid_key\"}\n", "{\"count\":1}\n"]
--- check
is_deeply redis_cmd('KEYS', '*'), ['psd:{cnt:' . 'x' x 512 . '}'],
    'only the valid request reached Redis';
--- no_error_log
[error]



=== TEST 5: three servers, redis= picks one, db=3 lands in database 3
--- http_config eval
fake_redis_start(sub {      # a second "server" with its own figures
    my ($s) = @_;
    while (my $c = fake_redis_read_command($s)) {
        my $cmd = uc $c->[0];
        print $s $cmd eq 'PING' ? "+PONG\r\n" : $cmd eq 'INCR' ? ":4242\r\n"
            : $cmd eq 'EXPIRE' ? ":1\r\n" : "-ERR fake does not know $cmd\r\n";
    }
}, owner => 'block');
'psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
 psd_redis fake 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT;
 psd_redis three 127.0.0.1:$TEST_NGINX_REDIS_PORT db=3;'
--- config
    location /main  { psd_counter $arg_k ttl=60; }
    location /fake  { psd_counter $arg_k ttl=60 redis=fake; }
    location /three { psd_counter $arg_k ttl=60 redis=three; }
--- request eval
["GET /main?k=m", "GET /fake?k=f", "GET /three?k=t", "GET /three?k=t",
 "GET /main?k=m"]
--- response_body eval
["{\"count\":1}\n", "{\"count\":4242}\n", "{\"count\":1}\n", "{\"count\":2}\n",
 "{\"count\":2}\n"]
--- check
my $p = redis_port();
is redis_cmd('GET', 'psd:{cnt:m}'), 2, 'main counts in db 0';
is redis_cmd('GET', 'psd:{cnt:t}'), undef, 'three did not count in db 0';
is redis_cmd('GET', 'psd:{cnt:f}'), undef, 'fake did not count in db 0';
chomp(my $db3 = `redis-cli -p $p -n 3 GET 'psd:{cnt:t}'`);
is $db3, 2, 'three counts in db 3';
chomp(my $ttl = `redis-cli -p $p -n 3 TTL 'psd:{cnt:t}'`);
ok $ttl > 0 && $ttl <= 60, "TTL in db 3 ($ttl)";
chomp(my $m3 = `redis-cli -p $p -n 3 EXISTS 'psd:{cnt:m}'`);
is $m3, 0, 'main did not count in db 3';
--- no_error_log
[error]



=== TEST 6: unix socket
--- http_config eval
my $sock = extra_redis('plain');
"psd_redis main unix:$sock;"
--- config
    location /c { psd_counter $arg_k; }
--- request eval
["GET /c?k=u", "GET /c?k=u"]
--- response_body eval
["{\"count\":1}\n", "{\"count\":2}\n"]
--- check
my $sock = "$ENV{TEST_NGINX_SERVROOT}/redis/plain.sock";
is xredis_cmd($sock, 'GET', 'psd:{cnt:u}'), 2, 'counted on the unix socket server';
is redis_cmd('GET', 'psd:{cnt:u}'), undef, 'not on the TCP server';
--- no_error_log
[error]



=== TEST 7: AUTH with requirepass, password inline
--- http_config eval
my $sock = extra_redis('auth', '--requirepass', 'Req-Pass-4e21');
"psd_redis main unix:$sock password=Req-Pass-4e21;"
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- request eval
["GET /c?k=p", "GET /c?k=p"]
--- response_body eval
["{\"count\":1}\n", "{\"count\":2}\n"]
--- check
my $sock = "$ENV{TEST_NGINX_SERVROOT}/redis/auth.sock";
like xredis_cmd($sock, 'GET', 'psd:{cnt:p}'), qr/^-NOAUTH/, 'server wants AUTH';
is xredis_cmd($sock, ['Req-Pass-4e21'], 'GET', 'psd:{cnt:p}'), 2,
   'counted on the server with requirepass';
ok wait_connected(), 'status: connected';
--- no_error_log
[error]
Req-Pass



=== TEST 8: AUTH as an ACL user, password from a file with a newline
--- user_files
>>> redis.pw
Acl-Pass-93b0
--- http_config eval
my $sock = extra_redis('acl', '--user', 'psd', 'on', '>Acl-Pass-93b0',
    '~psd:*', '+incr', '+expire', '+ping', '+auth', '--requirepass', 'other');
"psd_redis main unix:$sock user=psd password_file=$ENV{TEST_NGINX_HTML_DIR}/redis.pw;"
--- config
    location /c { psd_counter $arg_k ttl=10; }
--- request eval
["GET /c?k=acl", "GET /c?k=acl", "GET /c?k=acl"]
--- response_body eval
["{\"count\":1}\n", "{\"count\":2}\n", "{\"count\":3}\n"]
--- check
my $sock = "$ENV{TEST_NGINX_SERVROOT}/redis/acl.sock";
is xredis_cmd($sock, ['other'], 'GET', 'psd:{cnt:acl}'), 3, 'counted as user psd';
my $clients = xredis_cmd($sock, ['other'], 'CLIENT', 'LIST');
like $clients, qr/\buser=psd\b/, 'nginx is logged in as psd';
--- no_error_log
[error]
Acl-Pass



=== TEST 9: AUTH and SELECT in one handshake
--- http_config eval
my $sock = extra_redis('authdb', '--requirepass', 'Db-Pass-11f7');
"psd_redis main unix:$sock password=Db-Pass-11f7 db=5;"
--- config
    location /c { psd_counter $arg_k; }
--- request
GET /c?k=d
--- response_body
{"count":1}
--- check
my $sock = "$ENV{TEST_NGINX_SERVROOT}/redis/authdb.sock";
is xredis_cmd($sock, ['Db-Pass-11f7'], 'EXISTS', 'psd:{cnt:d}'), 0, 'not in db 0';
my $s = IO::Socket::UNIX->new(Peer => $sock) or die $!;
print {$s} "AUTH Db-Pass-11f7\r\nSELECT 5\r\nGET psd:{cnt:d}\r\n";
my @r = map { PsdTest::Redis::_reply($s, time + 5) } 1 .. 3;
is $r[2], 1, 'counted in db 5';
--- no_error_log
[error]



=== TEST 10: psd_status shows each server, up and down
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_redis gone 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT timeout=200ms;
--- config
    location /status { psd_status on; }
--- check
# the refused connect to "gone" may still be settling, and it is tried
# again and again (slow under valgrind): one answer between two attempts
my $j;
my $up = wait_for(3, sub { $j = status_json(); my $r = $j->{redis};
                           $r->[0]{connected} && !$r->[1]{pending} });
ok $up, 'main connected';
is_deeply $j->{redis}, [ { name => 'main', connected => JSON::PP::true, pending => 0 },
                         { name => 'gone', connected => JSON::PP::false, pending => 0 } ],
    'status lists both servers';
--- error_log eval
qr/psd: redis "gone" at 127\.0\.0\.1:\d+: /



=== TEST 11: 200 parallel requests on 2 workers: exact counts, one connection per worker
--- workers: 2
--- timeout: 20
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /status { psd_status on; }
--- check
my @w = worker_pids();
# valgrind mode runs nginx with master_process off: one process
is scalar(@w), $ENV{TEST_NGINX_USE_VALGRIND} ? 1 : 2, 'two workers';
my $port = redis_port();
ok wait_for(3, sub { @w == grep { tcp_peers($_, $port) == 1 } @w }),
   'each worker has one connection to Redis';
my %before = map { ($_, [ tcp_peers($_, $port) ]) } @w;
is redis_cmd('CONFIG', 'RESETSTAT'), 'OK', 'command statistics reset';
my ($received) = redis_cmd('INFO', 'stats') =~ /total_connections_received:(\d+)/;

my $req = "GET /c?k=par HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
my $rs = http_parallel([ ($req) x 200 ], timeout => 15);
my @ok = grep { ($_->{status} // 0) == 200 } @$rs;
is scalar(@ok), 200, '200 answers with 200'
    or diag join "\n", map { $_->{error} // $_->{raw} } grep { ($_->{status} // 0) != 200 } @$rs;
my @counts = sort { $a <=> $b } map { $_->{body} =~ /^\{"count":(\d+)\}\n\z/ ? $1 : -1 } @ok;
is_deeply \@counts, [ 1 .. 200 ], 'each request got its own reply: counts 1..200';
my ($after) = redis_cmd('INFO', 'stats') =~ /total_connections_received:(\d+)/;
is $after - $received, 1, 'no connection made meanwhile but this INFO';
is redis_cmd('GET', 'psd:{cnt:par}'), 200, 'final count is exact';
is_deeply +{ map { ($_, [ tcp_peers($_, $port) ]) } @w }, \%before,
    'the workers kept their connections';
my @addrs = redis_cmd('CLIENT', 'LIST') =~ /\baddr=127\.0\.0\.1:(\d+)\b/g;
my %nginx = map { $_ => 1 } map { @$_ } values %before;
is scalar(grep { $nginx{$_} } @addrs), scalar(@w), 'CLIENT LIST shows the nginx connections';
my ($stats) = redis_cmd('INFO', 'commandstats') =~ /cmdstat_incr:calls=(\d+)/;
is $stats, 200, '200 INCR calls';
--- no_error_log
[error]



=== TEST 12: requests sent while the connection is being made wait for it
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /c { psd_counter $arg_k; }
--- init
# nginx has just started: the first batch races the handshake
my $rs = http_parallel([ ("GET /c?k=early HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") x 20 ]);
is scalar(grep { ($_->{status} // 0) == 200 } @$rs), 20, 'all 20 answered 200';
--- check
is redis_cmd('GET', 'psd:{cnt:early}'), 20, 'all 20 counted';
--- no_error_log
[error]



=== TEST 13: nothing touches a request after its pool is freed (pool in its own mmap)
--- http_config
    # 256k is over malloc's mmap threshold: a freed pool is unmapped at
    # once, so a use after free crashes the worker instead of going unseen
    request_pool_size 256k;
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /c { psd_counter $arg_k ttl=60; }
--- request eval
["GET /c?k=pool", "GET /c?k=pool", "GET /c?k=pool"]
--- response_body eval
["{\"count\":1}\n", "{\"count\":2}\n", "{\"count\":3}\n"]
--- init
our @W = worker_pids();
--- check
is_deeply [ worker_pids() ], \@main::W, 'the worker is alive, the same process';
--- no_error_log
[error]
