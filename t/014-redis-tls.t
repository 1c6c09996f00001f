# The Redis client over TLS (psd_redis ... tls [tls_verify
# tls_trusted_certificate= tls_server_name=]) against a redis-server with
# tls-port, through psd_counter: verified and unverified connections, AUTH
# inside TLS, certificates that do not verify or do not match, a plain-text
# server, a stopped server during the handshake, and no descriptor leak over
# TLS reconnections.
#
# The certificates are below: a test CA, a server certificate it signed for
# "localhost" and 127.0.0.1, and a second CA that signed nothing of the
# server's.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
no_cluster('TLS to a redis-server of its own');
use JSON::PP ();
use IO::Socket::IP;
use POSIX ();
use File::Path qw(make_path);
use Time::HiRes qw(time sleep);

my $SERVROOT = $ENV{TEST_NGINX_SERVROOT};
my $TLS = "$ENV{TEST_NGINX_CONF_DIR}/tls";
my $SLOW = $ENV{TEST_NGINX_USE_VALGRIND} ? 8 : 1;
sub bound { $_[0] * $SLOW }     # time bounds, stretched under valgrind

# Made once with the openssl command: EC P-256 keys, certificates valid from
# 2000 to 2126 (openssl ca -startdate/-enddate), the CAs self-signed with
# CA:TRUE, the server's signed by "psd test ca" for CN=localhost with
# subjectAltName=DNS:localhost,IP:127.0.0.1 and extendedKeyUsage=serverAuth.
my %PEM = (
    'ca.pem' => <<'PEM',
-----BEGIN CERTIFICATE-----
MIIBYDCCAQagAwIBAgICEAAwCgYIKoZIzj0EAwIwFjEUMBIGA1UEAwwLcHNkIHRl
c3QgY2EwIBcNMDAwMTAxMDAwMDAwWhgPMjEyNjAxMDEwMDAwMDBaMBYxFDASBgNV
BAMMC3BzZCB0ZXN0IGNhMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEcoBd8EJU
gn49n+ILulzYj6ZSG+MR4CbxEJuZit/xQaECr/BbKyY0SN2RmojBs+jvm56RMCC4
aiZgJdwWCCB866NCMEAwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8BAf8EBAMCAQYw
HQYDVR0OBBYEFFQcF27KLcAkGAogjKWYzti7TFr9MAoGCCqGSM49BAMCA0gAMEUC
ICkY3Fo7y6fQ4uL/bkuZ2r7y7cH1pteqowYZQBKzZbrxAiEAu8weUtL8yke2n6JQ
MR9VfOUKVnw/dMYTnznQgA2PdG4=
-----END CERTIFICATE-----
PEM
    'other-ca.pem' => <<'PEM',
-----BEGIN CERTIFICATE-----
MIIBazCCARKgAwIBAgICEAEwCgYIKoZIzj0EAwIwHDEaMBgGA1UEAwwRcHNkIHRl
c3Qgb3RoZXItY2EwIBcNMDAwMTAxMDAwMDAwWhgPMjEyNjAxMDEwMDAwMDBaMBwx
GjAYBgNVBAMMEXBzZCB0ZXN0IG90aGVyLWNhMFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEpZdGfoo3d2xUu7ur8PJeeADA7i+YJmSqBw9DqKanhNiSJcLiwn0FSQYZ
nS2dhtbytMXli/tAInASssAVbRFRSaNCMEAwDwYDVR0TAQH/BAUwAwEB/zAOBgNV
HQ8BAf8EBAMCAQYwHQYDVR0OBBYEFH0NSToyas3FFx6wWZHAhHlifNf6MAoGCCqG
SM49BAMCA0cAMEQCIHENeT74VMs8RCrd0uyXIisVpO85HsJbjya2dUmmIj8eAiAq
F6rG6dX+k1u4Jaa/4MW/UzYucJYwXwTuHCke/qJFkw==
-----END CERTIFICATE-----
PEM
    'server.pem' => <<'PEM',
-----BEGIN CERTIFICATE-----
MIIBqTCCAU+gAwIBAgICEAIwCgYIKoZIzj0EAwIwFjEUMBIGA1UEAwwLcHNkIHRl
c3QgY2EwIBcNMDAwMTAxMDAwMDAwWhgPMjEyNjAxMDEwMDAwMDBaMBQxEjAQBgNV
BAMMCWxvY2FsaG9zdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABLIa57m3kF5X
NQkVDjRdO8Z37HcqE83G5K6QKRTU/IC02phyU+q/aQ5sr6+t+4XFRXLlu3d6Mkwr
QNRclGohIFSjgYwwgYkwCQYDVR0TBAIwADALBgNVHQ8EBAMCB4AwEwYDVR0lBAww
CgYIKwYBBQUHAwEwGgYDVR0RBBMwEYIJbG9jYWxob3N0hwR/AAABMB0GA1UdDgQW
BBTDafJKqBnmFre8pbhDjUjFuz/y2TAfBgNVHSMEGDAWgBRUHBduyi3AJBgKIIyl
mM7Yu0xa/TAKBggqhkjOPQQDAgNIADBFAiBpidKC3Pf/Aq243QFzWThCy6Nn7ZN3
7lKl9icX0TzstgIhAL3SNa1qhHRjQi/l1DH91z0M8awwfX5BkuaHT7ZCyO+w
-----END CERTIFICATE-----
PEM
    'server.key' => <<'PEM',
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgltb5xQGEeEmmkFDb
pXXYBp8Gsr6njPRi8rTyl5sqbgehRANCAASyGue5t5BeVzUJFQ40XTvGd+x3KhPN
xuSukCkU1PyAtNqYclPqv2kObK+vrfuFxUVy5bt3ejJMK0DUXJRqISBU
-----END PRIVATE KEY-----
PEM
);

mkdir $TLS;
for my $name (sort keys %PEM) {
    open my $fh, '>', "$TLS/$name" or die "$TLS/$name: $!";
    print {$fh} $PEM{$name};
    close $fh or die "$TLS/$name: $!";
}
chmod 0600, "$TLS/server.key";

# One redis-server with TLS only (on 127.0.0.1, and ::1 if there is one), on
# the port the harness keeps for fake servers (this file starts none), for
# the whole file; requirepass is set per block with CONFIG SET where needed.
my $PORT = $ENV{TEST_NGINX_FAKE_REDIS_PORT};
my $tls_pid;

sub tls_redis_start {
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$SERVROOT/logs/redis-tls.log";
        open STDERR, '>&', \*STDOUT;
        exec($PsdTest::Redis::BINARY, '--port', '0', '--tls-port', $PORT,
            '--bind', '127.0.0.1', '-::1', '--tls-cert-file', "$TLS/server.pem",
            '--tls-key-file', "$TLS/server.key", '--tls-auth-clients', 'no',
            '--save', '', '--appendonly', 'no', '--dir', "$SERVROOT/redis")
            or POSIX::_exit(127);
    }
    $tls_pid = $pid;
    for (1 .. 250) {
        return if IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $PORT);
        die "redis-server (TLS) exited, see logs/redis-tls.log\n"
            if waitpid($pid, POSIX::WNOHANG()) > 0;
        sleep 0.02;
    }
    die "redis-server (TLS) does not listen on $PORT\n";
}

sub tls_redis_kill {
    return unless $tls_pid;
    kill KILL => $tls_pid;
    waitpid $tls_pid, 0;
    undef $tls_pid;
}

sub tls_redis_signal { kill $_[0] => $tls_pid }

# a command to the TLS server, with redis-cli
sub tls_cmd {
    my @cmd = ('redis-cli', '--tls', '--cacert', "$TLS/ca.pem", '-h', '127.0.0.1',
               '-p', $PORT, '--no-auth-warning', @_);
    open my $fh, '-|', @cmd or die "redis-cli: $!";
    my $out = do { local $/; <$fh> } // '';
    close $fh;
    $out =~ s/\n\z//;
    return $out;
}

END { local $?; tls_redis_kill() }

sub wait_for {      # polls $cond every 20 ms for up to $secs
    my ($secs, $cond) = @_;
    for (my $end = time + $secs * $SLOW; ; sleep 0.02) {
        my $v = $cond->();
        return $v if $v || time > $end;
    }
}

sub connected {
    my $r = http_get('/status');
    return ($r->{status} // 0) == 200
        && JSON::PP::decode_json($r->{body})->{redis}[0]{connected};
}

sub count_of { ($_[0]{body} // '') =~ /^\{"count":(\d+)\}\n\z/ ? $1 : undef }

make_path("$SERVROOT/redis");
tls_redis_start();

run_tests();

__DATA__

=== TEST 1: tls with tls_verify, a trusted CA and the server name: counts
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT tls tls_verify
              tls_trusted_certificate=tls/ca.pem tls_server_name=localhost;
--- config
    location /c { psd_counter $arg_k ttl=60; }
    location /status { psd_status on; }
--- request eval
["GET /c?k=t1", "GET /c?k=t1"]
--- response_body eval
["{\"count\":1}\n", "{\"count\":2}\n"]
--- check
is tls_cmd('GET', 'psd:{cnt:t1}'), 2, 'counted on the TLS server';
ok connected(), 'status: connected';
--- no_error_log
[error]



=== TEST 2: without tls_server_name, tls_verify checks the host name of the address
--- http_config
    # (localhost may also be ::1: the server listens there too if it can)
    psd_redis main localhost:$TEST_NGINX_FAKE_REDIS_PORT tls tls_verify
              tls_trusted_certificate=tls/ca.pem;
--- config
    location /c { psd_counter $arg_k; }
--- request eval
["GET /c?k=t2", "GET /c?k=t2"]
--- response_body eval
["{\"count\":1}\n", "{\"count\":2}\n"]
--- no_error_log
[error]



=== TEST 3: tls without tls_verify accepts a certificate nobody vouches for
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT tls;
--- config
    location /c { psd_counter $arg_k; }
--- request
GET /c?k=t3
--- response_body
{"count":1}
--- no_error_log
[error]



=== TEST 4: a certificate signed by another CA does not verify: 503
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT tls tls_verify
              tls_trusted_certificate=tls/other-ca.pem tls_server_name=localhost
              timeout=300ms connect_timeout=300ms;
--- config
    location /c { psd_counter $arg_k; }
--- request
GET /c?k=t5
--- error_code: 503
--- response_headers
Retry-After: 1
--- check
is tls_cmd('EXISTS', 'psd:{cnt:t5}'), 0, 'nothing counted';
--- error_log
psd: redis "main" certificate does not verify



=== TEST 5: a certificate for another name does not match: 503
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT tls tls_verify
              tls_trusted_certificate=tls/ca.pem tls_server_name=redis.example
              timeout=300ms connect_timeout=300ms;
--- config
    location /c { psd_counter $arg_k; }
--- request
GET /c?k=t6
--- error_code: 503
--- check
is tls_cmd('EXISTS', 'psd:{cnt:t6}'), 0, 'nothing counted';
--- error_log
psd: redis "main" certificate does not match "redis.example"



=== TEST 6: tls to a plain-text server: no handshake, 503 in time, an [error]
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT tls timeout=300ms
              connect_timeout=300ms;
--- config
    location /c { psd_counter $arg_k; }
--- request
GET /c?k=t7
--- error_code: 503
--- check
is redis_cmd('EXISTS', 'psd:{cnt:t7}'), 0, 'nothing counted';
--- error_log eval
qr/\[error\] .*psd: redis "main" at \S+: TLS handshake (failed|timed out)/



=== TEST 7: server stopped during the TLS handshake: 503 in time; continued: back; no descriptor leak
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT tls tls_verify
              tls_trusted_certificate=tls/ca.pem tls_server_name=localhost
              timeout=300ms connect_timeout=300ms;
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- check
ok wait_for(3, \&connected), 'connected';
my ($w) = worker_pids();
my $fds = count_fds($w);
tls_redis_kill();
tls_redis_start();
tls_redis_signal('STOP');
my $ok = eval {
    ok wait_for(3, sub { error_log_text() =~ /TLS handshake timed out/ }),
       'handshake timed out';
    my $t0 = time;
    my $r = http_get('/c?k=t8');
    is $r->{status}, 503, 'stopped: 503';
    ok time - $t0 < bound(2), sprintf 'answered in %.2f s', time - $t0;
    1;
};
tls_redis_signal('CONT');
die $@ unless $ok;
my $r = wait_for(8, sub { my $r = http_get('/c?k=t8'); ($r->{status} // 0) == 200 && $r });
ok $r, 'back';
is count_of($r), 1, 'counting on the new server';
ok wait_for(2, sub { count_fds($w) <= $fds }), "descriptors back to $fds";
is_deeply [ worker_pids() ], [$w], 'same worker';
--- error_log eval
qr/\[error\] .*psd: redis "main" at \S+: TLS handshake timed out/



=== TEST 8: AUTH inside TLS
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT tls tls_verify
              tls_trusted_certificate=tls/ca.pem tls_server_name=localhost
              password=Tls-Pass-5d1e timeout=500ms;
--- config
    location /c { psd_counter $arg_k; }
    location /status { psd_status on; }
--- init
is tls_cmd(qw(CONFIG SET requirepass Tls-Pass-5d1e)), 'OK', 'requirepass set';
--- check
my $r = wait_for(5, sub { my $r = http_get('/c?k=t4'); ($r->{status} // 0) == 200 && $r });
ok $r, 'counted with AUTH over TLS';
is tls_cmd('-a', 'Tls-Pass-5d1e', 'GET', 'psd:{cnt:t4}'), count_of($r), 'the count is in Redis';
is tls_cmd('-a', 'Tls-Pass-5d1e', qw(CONFIG SET requirepass), ''), 'OK', 'requirepass reset';
--- no_error_log
Tls-Pass
