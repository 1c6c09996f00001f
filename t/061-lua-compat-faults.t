# lua-compat when Redis cannot answer, and the timing of psd.limit:
# psd.limit's failure modes (open, closed, local from a lua_shared_dict at
# rate / nodes), psd.link's (open, closed), psd.fraud's (open, closed per
# rule), all within the Redis timeout and with the module's answers; the
# delay of a request inside the burst without nodelay, the same for a
# module location and a Lua location of one zone; recovery without a
# reload.
#
# Skipped when the Lua module or its libraries are not installed
# (util/deps --lua installs them).
use strict;
use warnings;
use lib 't/lib', 'lua-compat/t';
use PsdTest;
no_cluster('lua-compat\'s Redis client talks to one server; the single redis-server is stopped');
use PsdLuaTest;        # skips when the Lua packages are missing
use PsdTest::Link;
use Time::HiRes qw(time sleep);

write_keys();

my $SLOW = $ENV{TEST_NGINX_USE_VALGRIND} ? 8 : 1;
sub slow { $SLOW }

sub timed_get {     # (response, seconds it took)
    my $t0 = time;
    my $r = lua_get($_[0]);
    return ($r, time - $t0);
}

run_tests();

__DATA__

=== TEST 1: Redis stopped: open, closed and local failure modes answer within the timeout, as the module's do
--- http_config
    lua_package_path "$TEST_NGINX_LUA_PATH";
    lua_shared_dict psd_limit 1m;
    init_by_lua_block {
        local limit = require "psd.limit"
        local link = require "psd.link"
        local fraud = require "psd.fraud"
        local site = require "psd_site"
        local redis = { port = $TEST_NGINX_REDIS_PORT, timeout = 200 }
        local keys = { key_files = { { kid = "k1",
                                       file = "$TEST_NGINX_CONF_DIR/keys/k1" } } }

        site.lim_open = assert(limit.new("fo", { rate = "1r/m",
            redis = redis, failure_mode = "open" }))
        site.lim_closed = assert(limit.new("fc", { rate = "1r/m",
            redis = redis, failure_mode = "closed" }))
        site.lim_local = assert(limit.new("fl", { rate = "1r/m", burst = 1,
            nodes = 2, redis = redis, dict = "psd_limit" }))

        keys.redis = redis
        keys.failure_mode = "open"
        site.links_open = assert(link.new(keys))
        keys.failure_mode = "closed"
        site.links_closed = assert(link.new(keys))

        local rules = { { "r1", "count() by $arg_u over 1h > 100", "block" } }
        site.fraud_open = assert(fraud.new{ rules = rules, redis = redis })
        site.fraud_closed = assert(fraud.new{ redis = redis, rules = {
            { "r1", "count() by $arg_u over 1h > 100", "block", "closed" } } })
    }
--- config
    location = /lo { access_by_lua_block { require("psd_site").lim_open:access(ngx.var.arg_k) } }
    location = /lc { access_by_lua_block { require("psd_site").lim_closed:access(ngx.var.arg_k) } }
    location = /ll {
        access_by_lua_block {
            require("psd_site").lim_local:access(ngx.var.arg_k, { nodelay = true })
        }
    }
    location /open/ {
        access_by_lua_block { require("psd_site").links_open:access() }
        log_by_lua_block { require("psd_site").links_open:log() }
    }
    location /closed/ {
        access_by_lua_block { require("psd_site").links_closed:access() }
    }
    location = /fo { access_by_lua_block { require("psd_site").fraud_open:access() } }
    location = /fc { access_by_lua_block { require("psd_site").fraud_closed:access() } }
--- user_files
>>> lo
lo
>>> lc
lc
>>> ll
ll
>>> open/a.txt
open
>>> closed/a.txt
closed
>>> fo
fo
>>> fc
fc
--- init
redis_stop();
--- check
my ($r, $t) = timed_get('/lo?k=a');
is($r->{status}, 200, 'limit, open: let through');
cmp_ok($t, '<', 1.5 * slow(), "within the timeout ($t s)");

($r, $t) = timed_get('/lc?k=a');
is($r->{status}, 503, 'limit, closed: 503');
is($r->{body}, qq{{"error":"backend_unavailable"}\n}, 'backend_unavailable');
is($r->{headers}{'retry-after'}, 1, 'Retry-After: 1');

my @l = map { (timed_get('/ll?k=a'))[0]->{status} } 1 .. 3;
is("@l", '200 200 429', 'limit, local: burst 1 at 1r/m over 2 nodes: two pass, then 429');
like((timed_get('/ll?k=a'))[0]->{headers}{'ratelimit-policy'} // '',
     qr/^"fl";q=2;w=120$/, 'with the zone\'s RateLimit-Policy');

my $u = sign_link(path => '/open/a.txt', limit => 3);
($r, $t) = timed_get($u);
is($r->{status}, 200, 'link, open: a limited link is served');
is($r->{body}, "open\n", 'the file');

$u = sign_link(path => '/closed/a.txt', limit => 3);
$r = lua_get($u);
is($r->{status}, 503, 'link, closed: 503');
is($r->{body}, qq{{"error":"backend_unavailable"}\n}, 'backend_unavailable');
$u = sign_link(path => '/closed/a.txt');
is(lua_get($u)->{status}, 200, 'link, closed: a link without state needs no Redis');

is(lua_get('/fo?u=1')->{status}, 200, 'fraud, open: passes');
$r = lua_get('/fc?u=1');
is($r->{status}, 503, 'fraud, a closed rule: 503');
is($r->{body}, qq{{"error":"backend_unavailable"}\n}, 'backend_unavailable');

# recovery: the next call of each works again, no reload
redis_cont();
$r = lua_get('/lc?k=b');
is($r->{status}, 200, 'limit, closed: Redis back, allowed');
cmp_ok(redis_cmd('PTTL', 'psd:{lim:fc:b}'), '>', 0, 'and counted in Redis');
is(lua_get('/fc?u=1')->{status}, 200, 'fraud, closed: back');
--- error_log
psd_limit: redis
psd_link: redis
psd_fraud: redis
--- no_error_log
writing a global Lua variable



=== TEST 2: without nodelay a request inside the burst waits as long at a Lua location as at a module location
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone slow key=$arg_k rate=2r/s burst=2;
    lua_package_path "$TEST_NGINX_LUA_PATH";
    init_by_lua_block {
        require("psd_site").slow = assert(require("psd.limit").new("slow", {
            rate = "2r/s", burst = 2,
            redis = { port = $TEST_NGINX_REDIS_PORT } }))
    }
--- config
    location = /m { psd_limit slow; }
    location = /l {
        access_by_lua_block { require("psd_site").slow:access(ngx.var.arg_k) }
    }
--- user_files
>>> m
m
>>> l
l
--- check
my (@t, @s);
for my $p ('/m?k=a', '/l?k=a', '/l?k=b', '/m?k=b') {
    my ($r, $t) = timed_get($p);
    push @s, $r->{status};
    push @t, $t;
}
is("@s", '200 200 200 200', 'all pass');
cmp_ok($t[0], '<', 0.3 * slow(), "module, first request at once ($t[0] s)");
cmp_ok($t[1], '>', 0.35, "Lua, second request of the same key waits ($t[1] s)");
cmp_ok($t[1], '<', 1.2 * slow(), 'about half a second');
cmp_ok($t[2], '<', 0.3 * slow(), "Lua, first request of another key at once ($t[2] s)");
cmp_ok($t[3], '>', 0.35, "module, second request after Lua's waits too ($t[3] s)");
--- no_error_log
[error]
writing a global Lua variable



=== TEST 3: lim:incoming() and lim:check() report what the script decided; decide() with two zones gives the charge back
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone two_a key=$arg_k rate=1r/m burst=2;
    psd_limit_zone two_b key=$arg_k rate=1r/m;
    lua_package_path "$TEST_NGINX_LUA_PATH";
    init_by_lua_block {
        local limit = require "psd.limit"
        local site = require "psd_site"
        local redis = { port = $TEST_NGINX_REDIS_PORT }
        site.a = assert(limit.new("two_a", { rate = "1r/m", burst = 2, redis = redis }))
        site.b = assert(limit.new("two_b", { rate = "1r/m", redis = redis }))
    }
--- config
    location = /incoming {
        content_by_lua_block {
            local site = require "psd_site"
            local delay, info = site.a:incoming(ngx.var.arg_k)
            if delay then
                -- inside the burst a request waits, as with limit_req
                ngx.say("delay ", math.floor(delay + 0.5), " remaining ",
                        info.remaining)
            else
                ngx.say(info, " retry ", select(3, site.a:incoming(ngx.var.arg_k)).retry_after_ms > 0)
            end
        }
    }
    location = /both {
        content_by_lua_block {
            local site = require "psd_site"
            local limit = require "psd.limit"
            local d = limit.decide({ { site.a, ngx.var.arg_k, nodelay = true },
                                     { site.b, ngx.var.arg_k, nodelay = true } })
            ngx.say(d.status, " ", d.limited and d.limited[1].name or "-")
        }
    }
    location = /m {
        psd_limit two_a nodelay;
        psd_limit two_b nodelay;
    }
--- user_files
>>> m
m
--- request eval
[ "GET /incoming?k=x", "GET /incoming?k=x", "GET /incoming?k=x",
  "GET /incoming?k=x",
  "GET /both?k=y", "GET /both?k=y", "GET /m?k=y", "GET /both?k=y" ]
--- response_body eval
[ "delay 0 remaining 2\n", "delay 60 remaining 1\n", "delay 120 remaining 0\n",
  "rejected retry true\n",
  "passed two_b\n", "rejected two_b\n", qq{{"error":"rate_limited"}\n},
  "rejected two_b\n" ]
--- error_code eval
[ 200, 200, 200, 200, 200, 200, 429, 200 ]
--- check
# two_a (burst 2) was charged once: the rejections by two_b gave theirs back
my $tat = redis_cmd('GET', 'psd:{lim:two_a:y}');
my $now = redis_cmd('TIME');
my $left = $tat - ($now->[0] * 1e6 + $now->[1]);
ok($left > 55e6 && $left <= 60e6, "two_a holds one request's charge ($left µs)");
--- no_error_log
[error]
writing a global Lua variable
