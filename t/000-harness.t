# Self-tests of t/lib/PsdTest.pm with stock nginx features and psd_status.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use JSON::PP ();

run_tests();

__DATA__

=== TEST 1: return text, exact body, HEAD has no body
--- config
    location /t { return 200 "hello\n"; }
--- request eval
["GET /t", "HEAD /t"]
--- response_body eval
["hello\n", ""]
--- no_error_log
[error]



=== TEST 2: headers, present, absent and like
--- config
    location /h {
        add_header X-Psd "one two" always;
        add_header X-Multi a;
        add_header X-Multi b;
        return 200 "h";
    }
--- request
GET /h
--- response_headers
X-Psd: one two
X-Multi: a, b
Content-Length: 1
!X-Nope
--- response_headers_like
Content-Type: ^text/plain
Server: ^nginx/
--- response_body chomp
h



=== TEST 3: static user file, 1 MiB file via size=, 404 logs an error
--- user_files
>>> a/hello.txt
static hello
>>> big.bin size=1M
0123456789abcdef
--- config
--- request eval
["GET /a/hello.txt", "GET /big.bin", "GET /missing.txt"]
--- error_code eval
[200, 200, 404]
--- response_body eval
["static hello\n", undef, undef]
--- check
my @r = @_;
is length $r[1]{body}, 1048576, 'big.bin is 1 MiB';
is substr($r[1]{body}, -16), '0123456789abcdef', 'big.bin content repeats';
is $r[1]{headers}{'content-length'}, 1048576, 'big.bin content-length';
--- error_log
No such file or directory
--- no_error_log
[crit]



=== TEST 4: must_die on an unknown directive
--- config
    location /x { psd_no_such_directive on; }
--- must_die
--- error_log
unknown directive "psd_no_such_directive"



=== TEST 5: eval sections, $TEST_NGINX_* substitution, more_headers
--- config
    location /v {
        return 200 "port=$TEST_NGINX_SERVER_PORT hdr=$http_x_test len=$content_length\n";
    }
--- more_headers
X-Test: yes
--- request eval
"POST /v\n" . "a" x 5
--- response_body eval
"port=$TEST_NGINX_SERVER_PORT hdr=yes len=5\n"



=== TEST 6: request_body and raw_request
--- config
    location /v { return 200 "len=$content_length proto=$server_protocol"; }
--- raw_request eval
"GET /v HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc"
--- response_body: len=3 proto=HTTP/1.0



=== TEST 7: request_body sets Content-Length
--- config
    location /v { return 200 "len=$content_length"; }
--- request
PUT /v
--- request_body chomp
abcdef
--- response_body: len=6



=== TEST 8: init sets a Redis key, check reads it back
--- init
is redis_cmd('SET', 'psd:test', 'v1'), 'OK', 'SET in init';
--- config
    location /t { return 204; }
--- request
GET /t
--- error_code: 204
--- check
is redis_cmd('GET', 'psd:test'), 'v1', 'key set in init';
is redis_cmd('GET', 'psd:none'), undef, 'nil is undef';
is redis_cmd('INCR', 'n'), 1, 'integer reply';
is_deeply redis_cmd('MGET', 'psd:test', '{psd:test}none'), ['v1', undef],
    'array (keys of one slot, for cluster mode)';
like redis_cmd('NOSUCHCMD'), qr/^-ERR/, 'error reply starts with -ERR';



=== TEST 9: FLUSHALL between blocks; redis stop/cont/kill/start
--- no_cluster: stops, kills and restarts the single redis-server
--- config
--- check
is redis_cmd('GET', 'psd:test'), undef, 'key from TEST 8 is gone';
local $PsdTest::Redis::TIMEOUT = 0.3;
redis_stop();
ok !eval { redis_cmd('PING'); 1 }, 'stopped redis does not answer';
redis_cont();
is redis_cmd('PING'), 'PONG', 'continued redis answers';
my $old = redis_pid();
redis_kill();
ok !eval { redis_cmd('PING'); 1 }, 'killed redis does not answer';
redis_start();
isnt redis_pid(), $old, 'new redis pid';
is redis_cmd('PING'), 'PONG', 'restarted redis answers';



=== TEST 10: http_parallel, worker_pids, count_fds, wait
--- workers: 2
--- config
    location /t { return 200 "p"; }
--- wait: 0.1
--- check
my $rs = http_parallel([ map { "GET /t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" } 1 .. 20 ]);
is scalar(grep { ($_->{status} // 0) == 200 && $_->{body} eq 'p' } @$rs), 20,
   '20 parallel requests answered';
my @w = worker_pids();
# valgrind mode runs nginx with master_process off: one process
is scalar(@w), $ENV{TEST_NGINX_USE_VALGRIND} ? 1 : 2, 'two workers';
ok count_fds($w[0]) > 2, 'count_fds works';
ok nginx_pid() > 0, 'nginx_pid';



=== TEST 11: chunked response (SSI), error_log eval with qr//
--- user_files
>>> s.html
[<!--# echo var="uri" -->]
--- config
    location / { ssi on; }
--- request
GET /s.html
--- response_headers
Transfer-Encoding: chunked
--- response_body
[/s.html]
--- error_log eval
[qr/http ssi filter "\/s\.html\?"/, "http finalize request"]



=== TEST 12: fake redis server
--- config
--- init
fake_redis_start(sub {
    my ($sock) = @_;
    while (my $cmd = fake_redis_read_command($sock)) {
        print $sock $cmd->[0] eq 'PING' ? "+FAKE\r\n" : "\$999999\r\npartial";
        last if $cmd->[0] ne 'PING';
    }
});
--- check
my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', Proto => 'tcp',
                            PeerPort => $ENV{TEST_NGINX_FAKE_REDIS_PORT})
    or die "connect: $@";
print $s "*1\r\n\$4\r\nPING\r\n";
is scalar(<$s>), "+FAKE\r\n", 'fake redis answers RESP PING';
print $s "GET x\r\n";
local $/;
local $SIG{ALRM} = sub { die "fake redis did not close\n" };
alarm 5;
is scalar(<$s>), "\$999999\r\npartial", 'fake redis half reply then close';
alarm 0;



=== TEST 13: psd_status answers JSON
--- config
    location /s { psd_status on; }
--- request
GET /s
--- response_headers
Content-Type: application/json
--- response_body_like: "version":"0\.1\.0"
--- check
my $j = JSON::PP::decode_json($_[0]{body});
is $j->{module}, 'ngx_psd_module', 'module name';
ok((grep { $_ == $j->{pid} } worker_pids()), 'pid is a worker pid');
--- no_error_log
[error]
[warn]



=== TEST 14: psd_status rejects a bad value
--- config
    location /s { psd_status foo; }
--- must_die
--- error_log
invalid value "foo" in "psd_status" directive, it must be "on" or "off"



=== TEST 15: SKIP works
--- SKIP
--- config
    location /s { no_such_thing; }
--- request
GET /s
