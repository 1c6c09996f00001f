# lua-compat (lua-compat/lib/psd/*.lua) against the module, in one nginx
# with both loaded (Debian's libnginx-mod-http-lua, lua-nginx-redis,
# lua-cjson): the shared vectors t/vectors/*.json give the same bytes and
# statuses in Lua; the Redis scripts are the C texts byte for byte; a link
# signed in Lua opens a file behind psd_link and a link issued by
# psd_link_issue opens one behind psd.link, with download limits and
# revocations shared both ways; requests split between psd_limit and
# psd.limit share one limit exactly; fraud counters and payment events are
# shared; webhook vectors verify in Lua.
#
# Skipped when the Lua module or its libraries are not installed
# (util/deps --lua installs them).
use strict;
use warnings;
use lib 't/lib', 'lua-compat/t';
use PsdTest;
no_cluster('lua-compat\'s Redis client talks to one server ($TEST_NGINX_REDIS_PORT)');
use PsdLuaTest;        # skips when the Lua packages are missing
use PsdTest::Link;
use JSON::PP ();
use Digest::SHA qw(sha1_hex sha256 sha256_hex hmac_sha256_hex);
use Time::HiRes qw(time sleep);

write_keys();
write_key_file('vault', sha256('lua-compat test: vault key'));
write_key_file('fp', sha256('lua-compat test: fingerprint key'));

our $WEBHOOKS = do {
    open my $fh, '<:raw', "$ENV{TEST_NGINX_REPO}/t/vectors/webhooks.json" or die $!;
    local $/;
    JSON::PP->new->utf8->decode(scalar <$fh>);
};
our ($STRIPE) = grep { $_->{name} eq 'one secret' } @{ $WEBHOOKS->{stripe} };
our ($STANDARD) = grep { $_->{name} eq 'one key' } @{ $WEBHOOKS->{standard} };
$ENV{TEST_NGINX_STRIPE_SECRET} = $STRIPE->{secrets}[0];
$ENV{TEST_NGINX_STANDARD_SECRET} = $STANDARD->{secrets}[0];

sub get { lua_get(@_) }
sub post { lua_post(@_) }

sub api_issue {
    my ($path, $body) = @_;
    my $r = post($path, $body, Authorization => "Bearer $API_KEY",
                 'Content-Type' => 'application/json');
    return ($r, eval { JSON::PP->new->decode($r->{body}) } // {});
}

sub tamper {        # the link with the last but one signature character changed
    my ($url) = @_;
    $url =~ s/(psd_sig=[^&]{41})(.)/$1 . ($2 eq 'A' ? 'B' : 'A')/e;
    return $url;
}

run_tests();

__DATA__

=== TEST 1: t/vectors/*.json (links, CIDRs, webhooks, cards) and the rule language give the same results in Lua
--- http_config
    lua_package_path "$TEST_NGINX_LUA_PATH";
--- config
    location = /vectors {
        content_by_lua_block {
            -- every module, so that the _G write guard sees their top level
            for _, m in ipairs({ "psd.crypto", "psd.cidr", "psd.rate",
                                 "psd.scripts", "psd.redis", "psd.link",
                                 "psd.issuer", "psd.limit", "psd.fraud",
                                 "psd.webhook", "psd.card" }) do
                require(m)
            end
            require("psd_vectors").run("$TEST_NGINX_REPO/t/vectors",
                                       function(line) ngx.say(line) end)
        }
    }
--- request
GET /vectors
--- check
my ($r) = @_;
my @lines = split /\n/, $r->{body} // '';
my $n = 0;
for (@lines) {
    my ($not, $name, $why) = /^(not )?ok - (.*?)(?: # (.*))?$/ or next;
    $n++;
    ok(!$not, "lua: $name") or diag($why);
}
cmp_ok($n, '>', 400, "lua ran all the vectors ($n)");
--- no_error_log
[error]
writing a global Lua variable



=== TEST 2: the Redis scripts of psd.scripts are the C texts, with the same SHA-1
--- http_config
    lua_package_path "$TEST_NGINX_LUA_PATH";
--- config
    location = /scripts {
        content_by_lua_block {
            local scripts = require "psd.scripts"
            local redis = require "psd.redis"
            for _, name in ipairs({ "gcra", "window", "gcra_refund",
                                    "link_check", "link_done" }) do
                ngx.say(name, " ", redis.sha1(scripts[name]))
            end
        }
    }
--- request
GET /scripts
--- check
my ($r) = @_;
my $gen = "$ENV{TEST_NGINX_REPO}/lua-compat/util/gen-scripts";
is(system("$^X $gen --check >/dev/null"), 0, 'lua-compat/util/gen-scripts --check');
my $json = `$^X $gen --json`;
my $c = JSON::PP->new->decode($json);
my %lua = map { split / / } split /\n/, $r->{body};
is($lua{$_}, sha1_hex($c->{$_}), "script $_: Lua's SHA-1 is that of the C text")
    for sort keys %$c;
is(scalar keys %lua, 5, 'five scripts');
# Redis agrees: SCRIPT LOAD of the C text gives the SHA-1 Lua calls
is(redis_cmd('SCRIPT', 'LOAD', $c->{gcra}), $lua{gcra}, 'Redis computes the same SHA-1');
--- no_error_log
[error]
writing a global Lua variable



=== TEST 3: links signed in Lua open files behind psd_link; forgeries, limits and client binding as the module says
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    lua_package_path "$TEST_NGINX_LUA_PATH";
    init_by_lua_block {
        require("psd_site").init{ key_dir = "$TEST_NGINX_CONF_DIR/keys",
                                  redis_port = $TEST_NGINX_REDIS_PORT,
                                  stripe_secrets = { "$TEST_NGINX_STRIPE_SECRET" },
                                  standard_secrets = { "$TEST_NGINX_STANDARD_SECRET" } }
    }
--- config
    location /files/ {
        psd_link on;
        psd_link_revocation on;
        add_header X-Status $psd_link_status always;
    }
    location = /sign {
        content_by_lua_block {
            local a = ngx.req.get_uri_args()
            local url, err = require("psd_site").links:sign_link{
                path = a.path, prefix = a.prefix, ttl = 3600, id = a.id,
                order = a.order, ip = a.ip, limit = tonumber(a.limit),
            }
            ngx.say(url or err)
        }
    }
--- user_files
>>> files/a.txt
A
>>> files/dir/b.txt
B
--- check
my $u = get('/sign?path=/files/a.txt&id=lua1')->{body};
chomp $u;
like($u, qr{^/files/a\.txt\?psd_v=1&psd_kid=k1&psd_exp=\d+&psd_id=lua1&psd_sig=[\w-]{43}$}, 'Lua signs the link format');
my $r = get($u);
is($r->{status}, 200, 'the module serves a Lua-signed link');
is($r->{body}, "A\n", 'the file');
is($r->{headers}{'x-status'}, 'ok', '$psd_link_status ok');

$r = get(tamper($u));
is($r->{status}, 403, 'a changed signature is refused');
is($r->{body}, qq{{"error":"link_invalid"}\n}, 'link_invalid');

my $p = get('/sign?prefix=/files/dir/&id=lua2&ip=127.0.0.0/8&order=ord_lua')->{body};
chomp $p;
(my $q = $p) =~ s/^[^?]*//;
is(get("/files/dir/b.txt$q")->{body}, "B\n", 'a Lua prefix link bound to 127.0.0.0/8');
is(get("/files/a.txt$q")->{headers}{'x-status'}, 'wrong_path', 'outside its prefix: wrong_path');

my $w = get('/sign?path=/files/a.txt&id=lua3&ip=192.0.2.0/24')->{body};
chomp $w;
is(get($w)->{headers}{'x-status'}, 'wrong_client', 'bound elsewhere: wrong_client');

my $l = get('/sign?path=/files/a.txt&id=lua4&limit=1')->{body};
chomp $l;
is(get($l)->{status}, 200, 'a Lua link with psd_limit=1: first download');
$r = get($l);
is($r->{status}, 410, 'second download');
is($r->{body}, qq{{"error":"link_exhausted"}\n}, 'link_exhausted');
is(redis_cmd('HGET', 'psd:{link:lua4}', 'used'), 1, 'the module counted in psd:{link:lua4}');

is(get('/sign?path=/files//a.txt&id=x')->{body},
   qq{invalid path: must start with '/', no "//", "." or ".." segment, no control byte\n},
   'the signer refuses what psd_link_sign refuses, with its message');
--- no_error_log
[error]
writing a global Lua variable



=== TEST 4: links issued by psd_link_issue verify in Lua; limits and revocations are shared both ways
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    lua_package_path "$TEST_NGINX_LUA_PATH";
    init_by_lua_block {
        require("psd_site").init{ key_dir = "$TEST_NGINX_CONF_DIR/keys",
                                  redis_port = $TEST_NGINX_REDIS_PORT,
                                  stripe_secrets = { "$TEST_NGINX_STRIPE_SECRET" },
                                  standard_secrets = { "$TEST_NGINX_STANDARD_SECRET" } }
    }
--- config
    location = /internal/links/issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
    location = /internal/links/revoke {
        psd_link_revoke;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
        psd_link_revocation on;
    }
    location = /lua/issue {
        content_by_lua_block { require("psd_site").issuer:serve_issue() }
    }
    location = /lua/revoke {
        content_by_lua_block { require("psd_site").issuer:serve_revoke() }
    }
    location /files/ {
        psd_link on;
        psd_link_revocation on;
        add_header X-Status $psd_link_status always;
    }
    location /lua-files/ {
        access_by_lua_block { require("psd_site").links:access() }
        log_by_lua_block { require("psd_site").links:log() }
        header_filter_by_lua_block {
            local res = ngx.ctx.psd_link
            ngx.header["X-Status"] = res and res.status
            ngx.header["X-Left"] = res and res.downloads_left
        }
    }
--- user_files
>>> files/a.txt
A
>>> lua-files/a.txt
LA
--- check
my ($r, $j) = api_issue('/internal/links/issue', '{"path":"/lua-files/a.txt","ttl":3600}');
is($r->{status}, 200, 'the module issues a link');
$r = get($j->{url});
is($r->{status}, 200, 'psd.link accepts a link of psd_link_issue');
is($r->{body}, "LA\n", 'the file');
is($r->{headers}{'x-status'}, 'ok', 'status ok');

$r = get(tamper($j->{url}));
is($r->{status}, 403, 'psd.link refuses a changed signature');
is($r->{body}, qq{{"error":"link_invalid"}\n}, 'with the module\'s body');
is($r->{headers}{'content-type'}, 'application/json', 'as JSON');
(my $u = $j->{url}) =~ s/psd_exp=/psd_exp=0/;
is(get($u)->{body}, qq{{"error":"link_malformed"}\n}, 'a leading zero is malformed');
(my $v = $j->{url}) =~ s{^/lua-files/a\.txt}{/lua-files/b.txt};
is(get($v)->{body}, qq{{"error":"link_invalid"}\n}, 'an exact link on another path');

# one download limit, spent on either side
($r, $j) = api_issue('/internal/links/issue', '{"prefix":"/","ttl":3600,"limit":2}');
(my $q = $j->{url}) =~ s/^[^?]*//;
$r = get("/files/a.txt$q");
is($r->{status}, 200, 'limit 2: download 1 through the module');
$r = get("/lua-files/a.txt$q");
is($r->{status}, 200, 'download 2 through Lua');
is($r->{headers}{'x-left'}, 1, 'Lua saw the module\'s download');
sleep 0.3;      # Lua counts the download in a timer after the log phase
is(redis_cmd('HGET', "psd:{link:$j->{id}}", 'used'), 2, 'both counted in one hash');
$r = get("/files/a.txt$q");
is($r->{status}, 410, 'the module: exhausted');
is($r->{headers}{'x-status'}, 'exhausted', '$psd_link_status exhausted');
$r = get("/lua-files/a.txt$q");
is($r->{status}, 410, 'Lua: exhausted');
is($r->{body}, qq{{"error":"link_exhausted"}\n}, 'link_exhausted');

# revoking an order with the module revokes it on Lua nodes
($r, $j) = api_issue('/internal/links/issue', '{"prefix":"/","ttl":3600,"order":"ord_7"}');
($q = $j->{url}) =~ s/^[^?]*//;
is(get("/lua-files/a.txt$q")->{status}, 200, 'order link: served before');
($r) = api_issue('/internal/links/revoke', '{"order":"ord_7"}');
is($r->{body}, qq{{"revoked":true}\n}, 'the module revokes the order');
$r = get("/lua-files/a.txt$q");
is($r->{status}, 410, 'Lua refuses the link of a revoked order');
is($r->{body}, qq{{"error":"link_revoked"}\n}, 'link_revoked');

# and the other way: a link issued and revoked by psd.issuer
($r, $j) = api_issue('/lua/issue', '{"path":"/files/a.txt","ttl":600,"limit":5}');
is($r->{status}, 200, 'psd.issuer issues');
like($r->{body}, qr/^\{"url":"\/files\/a\.txt\?psd_v=1&psd_kid=k1&psd_exp=\d+&psd_id=[A-Za-z0-9]{22}&psd_limit=5&psd_sig=[\w-]{43}","id":"[A-Za-z0-9]{22}","expires":\d+\}\n$/,
     'the answer of psd_link_issue');
is(get($j->{url})->{body}, "A\n", 'the module serves a link of psd.issuer');
is(get($j->{url})->{headers}{'x-status'}, 'ok', 'twice');
($r) = api_issue('/lua/revoke', qq{{"link":"$j->{id}"}});
is($r->{body}, qq{{"revoked":true}\n}, 'psd.issuer revokes the link');
cmp_ok(redis_cmd('TTL', "psd:{link:$j->{id}}"), '>', 30 * 86400, 'kept max_ttl + 1 day');
$r = get($j->{url});
is($r->{status}, 410, 'the module refuses the link revoked in Lua');
is($r->{headers}{'x-status'}, 'revoked', '$psd_link_status revoked');

($r) = api_issue('/lua/issue', '{"path":"/files/a.txt","ttl":99999999}');
is($r->{body}, qq{{"error":"ttl_too_long","field":"ttl"}\n}, 'ttl beyond max_ttl');
$r = post('/lua/issue', '{"path":"/a","ttl":60}', Authorization => 'Bearer nope');
is($r->{status}, 401, 'a wrong API key');
--- no_error_log
[error]
writing a global Lua variable



=== TEST 5: requests split between psd_limit and psd.limit share one limit exactly
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_limit_zone shared key=$arg_k rate=1r/m burst=4;
    lua_package_path "$TEST_NGINX_LUA_PATH";
    init_by_lua_block {
        require("psd_site").init{ key_dir = "$TEST_NGINX_CONF_DIR/keys",
                                  redis_port = $TEST_NGINX_REDIS_PORT,
                                  stripe_secrets = { "$TEST_NGINX_STRIPE_SECRET" },
                                  standard_secrets = { "$TEST_NGINX_STANDARD_SECRET" } }
    }
--- config
    location = /m {
        psd_limit shared nodelay;
    }
    location = /l {
        access_by_lua_block {
            require("psd_site").limit:access(ngx.var.arg_k, { nodelay = true })
        }
    }
--- user_files
>>> m
module
>>> l
lua
--- request eval
[ map { ($_ % 2 ? "GET /l?k=a" : "GET /m?k=a") } 0 .. 11 ]
--- error_code eval
[ (200) x 5, (429) x 7 ]
--- response_body eval
[ "module\n", "lua\n", "module\n", "lua\n", "module\n",
  (qq{{"error":"rate_limited"}\n}) x 7 ]
--- check
my @r = @_;
my ($m, $l) = @r[10, 11];       # the module's 429 and Lua's
is($l->{headers}{'ratelimit-policy'}, $m->{headers}{'ratelimit-policy'},
   'RateLimit-Policy as the module\'s');
is($l->{headers}{'ratelimit-policy'}, '"shared";q=5;w=300', 'q=5 w=300');
is($l->{headers}{'content-type'}, 'application/json', 'JSON');
for my $h (qw(ratelimit retry-after)) {
    my ($x) = ($m->{headers}{$h} // '') =~ /(\d+)$/;
    my ($y) = ($l->{headers}{$h} // '') =~ /(\d+)$/;
    ok(defined $x && defined $y && abs($x - $y) <= 1,
       "$h: module " . ($x // 'none') . ', Lua ' . ($y // 'none'));
}
like($l->{headers}{ratelimit}, qr/^"shared";r=0;t=\d+$/, 'RateLimit r=0');
cmp_ok(redis_cmd('PTTL', 'psd:{lim:shared:a}'), '>', 0, 'one key: psd:{lim:shared:a}');
is(scalar @{ redis_cmd('KEYS', 'psd:{lim:*') }, 1, 'and no other');
--- no_error_log
[error]
writing a global Lua variable



=== TEST 6: fraud counters and payment events are shared between psd_fraud and psd.fraud
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    lua_package_path "$TEST_NGINX_LUA_PATH";
    init_by_lua_block {
        require("psd_site").init{ key_dir = "$TEST_NGINX_CONF_DIR/keys",
                                  redis_port = $TEST_NGINX_REDIS_PORT,
                                  stripe_secrets = { "$TEST_NGINX_STRIPE_SECRET" },
                                  standard_secrets = { "$TEST_NGINX_STANDARD_SECRET" } }
    }
--- config
    psd_fraud_rule per_user "count() by $arg_u over 1h > 3" block;
    psd_fraud_rule failed "count(payment_failed) by $arg_u over 1d >= 1" review;
    location = /mf {
        psd_fraud on;
        add_header X-Decision $psd_fraud_decision always;
    }
    location = /lf {
        access_by_lua_block {
            local res = require("psd_site").fraud:access()
            ngx.header["X-Decision"] = res.decision
        }
    }
    location = /admin {
        psd_fraud_admin;
        psd_fraud_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
    location = /lua/record {
        content_by_lua_block {
            local n, err = require("psd_site").fraud:record("payment_failed",
                                                  { arg_u = ngx.var.arg_u })
            ngx.say(n or err)
        }
    }
--- user_files
>>> mf
module
>>> lf
lua
--- check
my @seq = map { get($_ % 2 ? '/lf?u=x' : '/mf?u=x') } 0 .. 4;
is(join(' ', map { $_->{status} } @seq), '200 200 200 403 403',
   'module, Lua, module pass; the 4th request (Lua) and the 5th (module) are blocked');
is($seq[3]{body}, qq{{"error":"payment_blocked"}\n}, 'Lua blocks as the module does');
is($seq[4]{body}, qq{{"error":"payment_blocked"}\n}, 'the module blocks on the count Lua raised');

# the key layout of docs/rules.md, computed here from the specification
my $tag = b64url(substr(sha256("arg_u\n1:x"), 0, 16));
my $sfx = 'per_user.' . substr(sha256_hex('count(requests) by $arg_u over 1h > 3'), 0, 8);
is(redis_cmd('EXISTS', "psd:{fr:$tag}:$sfx"), 1, "the counter psd:{fr:$tag}:$sfx");

# payment_failed recorded by the module's admin endpoint, seen by Lua
my $r = post('/admin', '{"event":"payment_failed","keys":{"arg_u":"y"}}',
             Authorization => "Bearer $API_KEY");
is($r->{body}, qq{{"recorded":1}\n}, 'the module records payment_failed for u=y');
is(get('/lf?u=y')->{headers}{'x-decision'}, 'review', 'Lua reviews u=y');

# and recorded by Lua, seen by the module
is(get('/lua/record?u=z')->{body}, "1\n", 'Lua records payment_failed for u=z');
is(get('/mf?u=z')->{headers}{'x-decision'}, 'review', 'the module reviews u=z');
is(get('/mf?u=w')->{headers}{'x-decision'}, 'pass', 'and passes u=w');
--- no_error_log
[error]
writing a global Lua variable



=== TEST 7: webhook vectors verify in Lua inside nginx; fresh signatures too
--- http_config
    lua_package_path "$TEST_NGINX_LUA_PATH";
    init_by_lua_block {
        require("psd_site").init{ key_dir = "$TEST_NGINX_CONF_DIR/keys",
                                  redis_port = $TEST_NGINX_REDIS_PORT,
                                  stripe_secrets = { "$TEST_NGINX_STRIPE_SECRET" },
                                  standard_secrets = { "$TEST_NGINX_STANDARD_SECRET" } }
    }
--- config
    location = /stripe {
        client_body_buffer_size 64k;
        content_by_lua_block {
            local site = require "psd_site"
            local ok, status = site.stripe:verify_request(tonumber(ngx.var.arg_now))
            ngx.say(status)
        }
    }
    location = /standard {
        client_body_buffer_size 64k;
        content_by_lua_block {
            local site = require "psd_site"
            local ok, status = site.standard:verify_request(tonumber(ngx.var.arg_now))
            ngx.say(status)
        }
    }
--- check
my ($s, $t) = ($::STRIPE, $::STANDARD);
my $r = post("/stripe?now=$s->{now}", $s->{body}, 'Stripe-Signature' => $s->{header});
is($r->{body}, "ok\n", "Stripe vector '$s->{name}' verifies");
$r = post("/stripe?now=$s->{now}", $s->{body} . ' ', 'Stripe-Signature' => $s->{header});
is($r->{body}, "bad_signature\n", 'one more byte of body: bad_signature');
$r = post("/stripe", $s->{body}, 'Stripe-Signature' => $s->{header});
is($r->{body}, "stale_timestamp\n", 'with the real clock: stale_timestamp');
$r = post("/stripe", $s->{body});
is($r->{body}, "missing_header\n", 'no header: missing_header');

my $now = int time;
my $sig = hmac_sha256_hex("$now.$s->{body}", $s->{secrets}[0]);
$r = post("/stripe", $s->{body}, 'Stripe-Signature' => "t=$now,v1=$sig");
is($r->{body}, "ok\n", 'a fresh Stripe signature verifies with the clock');

$r = post("/standard?now=$t->{now}", $t->{body}, 'webhook-id' => $t->{id},
          'webhook-timestamp' => $t->{timestamp}, 'webhook-signature' => $t->{signature});
is($r->{body}, "ok\n", "Standard Webhooks vector '$t->{name}' verifies");
$r = post("/standard?now=$t->{now}", $t->{body}, 'webhook-id' => "$t->{id}x",
          'webhook-timestamp' => $t->{timestamp}, 'webhook-signature' => $t->{signature});
is($r->{body}, "bad_signature\n", 'another id: bad_signature');
--- no_error_log
[error]
writing a global Lua variable



=== TEST 8: psd.card gives the brand, last four digits and fingerprint that psd_tokenize passes on
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
    lua_package_path "$TEST_NGINX_LUA_PATH";
    init_by_lua_block {
        local f = assert(io.open("$TEST_NGINX_CONF_DIR/keys/fp", "rb"))
        require("psd_site").fp_key = f:read("*a")
        f:close()
    }
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/app;
    }
    location = /app {
        content_by_lua_block {
            local card = require "psd.card"
            local h = ngx.req.get_headers()
            local c = assert(card.parse(h["X-Test-Pan"]))
            local fp = card.fingerprint(require("psd_site").fp_key, c)
            ngx.say(c.brand == h["X-PSD-Card-Brand"] and "brand ok" or "brand differs",
                    " ", c.last4 == h["X-PSD-Card-Last4"] and "last4 ok" or "last4 differs",
                    " ", fp == h["X-PSD-Card-Fingerprint"] and "fp ok" or
                         ("fp differs: " .. tostring(fp) .. " " .. tostring(h["X-PSD-Card-Fingerprint"])))
        }
    }
--- raw_request eval
[ map {
    my ($pan, $shown) = @$_;
    my $body = qq{{"card":{"number":"$pan"}}};
    "POST /checkout HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    . "Content-Type: application/json\r\nX-Test-Pan: $shown\r\n"
    . "Content-Length: " . length($body) . "\r\n\r\n$body"
  } ([ '4242424242424242', '4242 4242 4242 4242' ],
     [ '378282246310005', '378282246310005' ],
     [ '5555-5555-5555-4444', '5555555555554444' ],
     [ '6011111111111117', '6011-1111-1111-1117' ]) ]
--- response_body eval
[ ("brand ok last4 ok fp ok\n") x 4 ]
--- no_error_log
[error]
writing a global Lua variable
