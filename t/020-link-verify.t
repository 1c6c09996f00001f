# psd_link: verification of signed links in nginx: every stateless outcome
# with its status, JSON body and $psd_link_status; the Perl signer of
# t/lib/PsdTest/Link.pm against t/vectors/links.json and util/psd-link;
# prefix scopes, percent-encoding, client binding, key rotation, expiry,
# skew, max_ttl, error_page, and that stateless links never touch Redis.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link;
use JSON::PP ();

write_keys();

# one clock for all blocks: expiry times are computed from it
our $NOW = int time;

# the keys of t/vectors/links.json, for nginx
our $VECTORS = do {
    open my $fh, '<:raw', "$ENV{TEST_NGINX_REPO}/t/vectors/links.json" or die $!;
    local $/;
    JSON::PP->new->utf8->decode(scalar <$fh>);
};
write_key_file("v-$_->{kid}", pack 'H*', $_->{key_hex}) for @{ $::VECTORS->{keys} };

# Redis commands run so far, but for those of a connection handshake (on a
# cluster also the slot map's) and of the test itself: a stateless link
# must not change this sum
sub redis_work {
    my $info = redis_cmd('INFO', 'commandstats');
    my $n = 0;
    while ($info =~ /^cmdstat_([\w|]+):calls=(\d+)/mg) {
        $n += $2 unless $1 =~ /^(info|script|ping|select|auth|hello|client|flushall|cluster|readonly)/;
    }
    return $n;
}

run_tests();

__DATA__

=== TEST 1: the Perl signer reproduces t/vectors/links.json; nginx verifies the vectors
--- http_config
    psd_link_key 2026a $TEST_NGINX_CONF_DIR/keys/v-2026a;
    psd_link_key 2025b $TEST_NGINX_CONF_DIR/keys/v-2025b;
    psd_link_key long_key-1 $TEST_NGINX_CONF_DIR/keys/v-long_key-1;
--- config
    psd_link_max_ttl 0;
    location / {
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> v.txt
vector root prefix
--- check
my $n = 0;
my %key = map { $_->{kid} => pack 'H*', $_->{key_hex} } @{ $::VECTORS->{keys} };
for my $v (@{ $::VECTORS->{sign} }) {
    my %o = map { my $x = $v->{$_}; utf8::encode($x) if defined $x; ($_ => $x) }
        qw(kid path exp id order ip limit);
    $o{prefix} = $v->{prefix} ? 1 : 0;
    my $canon = $v->{canonical};
    utf8::encode($canon);
    is link_canonical(%o), $canon, "$v->{name}: canonical";
    my $url = sign_link(%o, key => $key{$o{kid}});
    is link_arg($url, 'psd_sig'), $v->{sig}, "$v->{name}: sig";
    is $url, "$v->{url_path}?$v->{query}", "$v->{name}: url";
    # nginx: the signature of each vector is good.  Those with the fixed
    # exp of 2026-01-01 are then expired, which is only checked after the
    # signature (a forged one would be "invalid"); the 12-digit one opens
    # everything under its prefix "/".
    my $path = $v->{prefix} ? "$v->{url_path}v.txt" : $v->{url_path};
    my $r = http_get("$path?$v->{query}");
    if ($o{exp} > time + 60) {
        is $r->{status}, 200, "$v->{name}: nginx serves it";
        is $r->{body}, "vector root prefix\n", "$v->{name}: body";
    } else {
        is $r->{status}, 410, "$v->{name}: nginx says expired (signature good)";
        is $r->{headers}{'x-status'}, 'expired', "$v->{name}: status expired";
    }
    $n++;
}
is $n, 7, 'all sign vectors checked';



=== TEST 2: util/psd-link and the Perl signer agree, nginx serves both
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /files/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> files/a.txt
A
>>> files/d/b.txt
B
--- check
my $cli = "$ENV{TEST_NGINX_REPO}/util/psd-link";
my $key = "$ENV{TEST_NGINX_CONF_DIR}/keys/k1";
my $now = int(time) - 100;
for my $c ([ ['--path', '/files/a.txt'], [ path => '/files/a.txt' ], '/files/a.txt', "A\n" ],
           [ ['--path', '/files/d/', '--prefix', '--order', 'o-1', '--limit', '3',
              '--ip', '127.0.0.1'],
             [ path => '/files/d/', prefix => 1, order => 'o-1', limit => 3,
               ip => '127.0.0.1' ], '/files/d/b.txt', "B\n" ]) {
    my ($args, $perl, $path, $body) = @$c;
    open my $p, '-|', $cli, 'sign', '--key', $key, '--kid', 'k1', '--ttl', 3700,
        '--id', 'cli_1', '--now', $now, @$args or die "$cli: $!";
    my @out = <$p>;
    close $p;
    is $?, 0, "psd-link @$args: exit 0";
    chomp(my $url = $out[-1] // '');
    is $url, sign_link(@$perl, id => 'cli_1', exp => $now + 3700),
        "psd-link @$args: same link as the Perl signer";
    my (undef, $q) = split /\?/, $url, 2;
    my $r = http_get("$path?$q");
    is $r->{status}, 200, "psd-link @$args: served";
    is $r->{body}, $body, "psd-link @$args: body";
}



=== TEST 3: every stateless outcome: status, JSON body, $psd_link_status, one info line each
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    psd_link_key k2 $TEST_NGINX_CONF_DIR/keys/k2;
--- config
    location /files/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
        add_header X-Id $psd_link_id always;
        add_header X-Order $psd_link_order always;
        add_header X-Expires $psd_link_expires always;
        add_header X-Left $psd_link_downloads_left always;
    }
--- user_files
>>> files/a.txt
A
--- request eval
my $t = $::NOW;
[ "GET " . sign_link(path => '/files/a.txt', id => 'ok1', order => 'ord.7:x',
                     exp => $t + 600),
  "GET /files/a.txt",
  "GET /files/a.txt?psd_v=1",
  "GET " . sign_link(path => '/files/a.txt', id => 'unk1', kid => 'k9',
                     key => key_bytes('k1')),
  "GET " . sign_link(path => '/files/a.txt', id => 'inv1', kid => 'k1',
                     key => key_bytes('k2')),
  "GET " . sign_link(path => '/files/a.txt', id => 'exp1', exp => $t - 1),
  "GET " . sign_link(path => '/files/d/', prefix => 1, id => 'wp1') =~ s{^/files/d/}{/files/a.txt}r,
  "GET " . sign_link(path => '/files/a.txt', id => 'wc1', ip => '10.1.2.3'),
  "HEAD " . sign_link(path => '/files/a.txt', id => 'head1'),
]
--- error_code eval
[200, 403, 403, 403, 403, 410, 403, 403, 200]
--- response_body eval
[ "A\n",
  qq{{"error":"link_malformed"}\n},
  qq{{"error":"link_malformed"}\n},
  qq{{"error":"link_unknown_key"}\n},
  qq{{"error":"link_invalid"}\n},
  qq{{"error":"link_expired"}\n},
  qq{{"error":"link_wrong_path"}\n},
  qq{{"error":"link_wrong_client"}\n},
  "" ]
--- response_headers eval
my $t = $::NOW;
[ "X-Status: ok\nX-Id: ok1\nX-Order: ord.7:x\n!X-Left\nContent-Type: text/plain",
  "X-Status: malformed\n!X-Id\nContent-Type: application/json",
  "X-Status: malformed\n!X-Id",
  "X-Status: unknown_key\nX-Id: unk1\nContent-Type: application/json",
  "X-Status: invalid\nX-Id: inv1",
  "X-Status: expired\nX-Id: exp1\nX-Expires: " . ($t - 1),
  "X-Status: wrong_path\nX-Id: wp1",
  "X-Status: wrong_client\nX-Id: wc1",
  "X-Status: ok\nX-Id: head1\nContent-Length: 2" ]
--- response_headers_like eval
[ "X-Expires: ^" . ($::NOW + 600) . "\$", "", "", "", "", "", "", "", "" ]
--- error_log eval
[ qr/\[info\] .*psd_link: denied, malformed, link "-", client: 127\.0\.0\.1$/m,
  qr/psd_link: denied, unknown_key, link "unk1", client: 127\.0\.0\.1$/m,
  qr/psd_link: denied, invalid, link "inv1", client: 127\.0\.0\.1$/m,
  qr/psd_link: denied, expired, link "exp1", client: 127\.0\.0\.1$/m,
  qr/psd_link: denied, wrong_path, link "wp1", client: 127\.0\.0\.1$/m,
  qr/psd_link: denied, wrong_client, link "wc1", client: 127\.0\.0\.1$/m ]
--- check
my @denied = grep { /psd_link: denied/ } split /\n/, error_log_text();
is scalar(@denied), 7, 'one log line per denial';
ok !(grep { /request:|psd_sig|psd_v=/ } @denied), 'denial lines carry no request line';



=== TEST 4: prefix scope: under the prefix yes; /prefixX, the bare prefix dir and siblings no
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /files/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> files/d/a.txt
DA
>>> files/d/sub/deep/b.txt
DB
>>> files/dX/a.txt
DXA
>>> files/e/a.txt
EA
>>> files/d.txt
DTXT
--- request eval
my (undef, $q) = split /\?/, sign_link(path => '/files/d/', prefix => 1, id => 'pre1');
[ map { "GET $_?$q" } qw(/files/d/a.txt /files/d/sub/deep/b.txt /files/dX/a.txt
                          /files/e/a.txt /files/d.txt /files/d /files/a.txt) ]
--- error_code eval
[200, 200, 403, 403, 403, 403, 403]
--- response_body eval
["DA\n", "DB\n", map { qq{{"error":"link_wrong_path"}\n} } 1 .. 5]
--- response_headers eval
["X-Status: ok", "X-Status: ok", map { "X-Status: wrong_path" } 1 .. 5]



=== TEST 5: percent-encoded and plain spellings of a path both verify, exact and prefix
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /files/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
--- user_files eval
[ ["files/abc.txt", "abc\n"], ["files/caf\xc3\xa9 1+2.txt", "cafe\n"],
  ["files/p q/x.txt", "pqx\n"] ]
--- request eval
my $e = sign_link(path => '/files/abc.txt');
my (undef, $qe) = split /\?/, $e;
my $u = sign_link(path => "/files/caf\xc3\xa9 1+2.txt");
my (undef, $qu) = split /\?/, $u;
my (undef, $qp) = split /\?/, sign_link(path => '/files/p q/', prefix => 1);
[ "GET $e", "GET /files/%61%62c.txt?$qe", "GET /fil%65s/abc.txt?$qe",
  "GET $u", "GET /files/caf\xc3\xa9%201%2B2.txt?$qu",
  "GET /files/caf%c3%a9%201+2.txt?$qu",
  "GET /files/p%20q/x.txt?$qp", "GET /files/p%20q/%78.txt?$qp",
  "GET /files/abc.txt?$qu" ]
--- error_code eval
[200, 200, 200, 200, 200, 200, 200, 200, 403]
--- response_body eval
["abc\n", "abc\n", "abc\n", "cafe\n", "cafe\n", "cafe\n", "pqx\n", "pqx\n",
 qq{{"error":"link_invalid"}\n}]



=== TEST 6: client binding: 127.0.0.1, 127.0.0.0/8 yes; another address or net, IPv6 no; non-canonical spellings malformed
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /files/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> files/a.txt
A
--- request eval
[ map { "GET " . sign_link(path => '/files/a.txt', ip => $_) }
  qw(127.0.0.1 127.0.0.0/8 0.0.0.0/0 127.0.0.2 10.0.0.0/8 ::1 ::/0
     127.0.0.1/32 127.0.0.1/8 ::ffff:127.0.0.1) ]
--- error_code eval
[200, 200, 200, 403, 403, 403, 403, 403, 403, 403]
--- response_headers eval
# one spelling per address (t/vectors, psd_cidr.h): no "/32", no host
# bits, no IPv4-mapped IPv6 text; those are malformed, not a mismatch
[ "X-Status: ok", "X-Status: ok", "X-Status: ok",
  map({ "X-Status: wrong_client" } 1 .. 4), map { "X-Status: malformed" } 1 .. 3 ]



=== TEST 7: key rotation: links of both keys verify
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    psd_link_key k2 $TEST_NGINX_CONF_DIR/keys/k2;
--- config
    location /files/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> files/a.txt
A
--- request eval
[ "GET " . sign_link(path => '/files/a.txt', kid => 'k1'),
  "GET " . sign_link(path => '/files/a.txt', kid => 'k2'),
  "GET " . sign_link(path => '/files/a.txt', kid => 'k2', key => key_bytes('k1')) ]
--- error_code eval
[200, 200, 403]
--- response_headers eval
["X-Status: ok", "X-Status: ok", "X-Status: invalid"]



=== TEST 8: key rotation: k1 removed, its links are unknown_key; k2 links still verify
--- http_config
    psd_link_key k2 $TEST_NGINX_CONF_DIR/keys/k2;
--- config
    location /files/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> files/a.txt
A
--- request eval
[ "GET " . sign_link(path => '/files/a.txt', kid => 'k1'),
  "GET " . sign_link(path => '/files/a.txt', kid => 'k2') ]
--- error_code eval
[403, 200]
--- response_body eval
[qq{{"error":"link_unknown_key"}\n}, "A\n"]
--- response_headers eval
["X-Status: unknown_key", "X-Status: ok"]



=== TEST 9: expiry: by one second is expired; psd_link_skew lets it through, but not beyond
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /files/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
    location /skew/ {
        alias html/files/;
        psd_link on;
        psd_link_skew 30s;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> files/a.txt
A
--- request eval
my $t = int time;
[ "GET " . sign_link(path => '/files/a.txt', exp => $t - 1),
  "GET " . sign_link(path => '/files/a.txt', exp => $t + 5),
  "GET " . sign_link(path => '/skew/a.txt', exp => $t - 1),
  "GET " . sign_link(path => '/skew/a.txt', exp => $t - 20),
  "GET " . sign_link(path => '/skew/a.txt', exp => $t - 35),
  "GET " . sign_link(path => '/files/a.txt', exp => 0),
  "GET " . sign_link(path => '/files/a.txt', exp => 0) =~ s/psd_exp=0/psd_exp=00/r ]
--- error_code eval
[410, 200, 200, 200, 410, 410, 403]
--- response_headers eval
["X-Status: expired", "X-Status: ok", "X-Status: ok", "X-Status: ok",
 "X-Status: expired", "X-Status: expired", "X-Status: malformed"]



=== TEST 10: expiry via util/psd-link --now in the past
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /files/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> files/a.txt
A
--- request eval
my @l;
for my $ttl (99, 200) {
    my @out = `$ENV{TEST_NGINX_REPO}/util/psd-link sign --key $ENV{TEST_NGINX_CONF_DIR}/keys/k1 --kid k1 --path /files/a.txt --ttl $ttl --now @{[ int(time) - 100 ]}`;
    die "psd-link failed: $?" if $?;
    chomp(my $u = $out[-1]);
    push @l, "GET $u";
}
\@l
--- error_code eval
[410, 200]
--- response_headers eval
["X-Status: expired", "X-Status: ok"]



=== TEST 11: psd_link_max_ttl: an expiry further away than max_ttl is invalid (default 30d)
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /files/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
    location /short/ {
        alias html/files/;
        psd_link on;
        psd_link_max_ttl 1h;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> files/a.txt
A
--- request eval
[ "GET " . sign_link(path => '/files/a.txt', ttl => 29 * 86400),
  "GET " . sign_link(path => '/files/a.txt', ttl => 31 * 86400),
  "GET " . sign_link(path => '/short/a.txt', ttl => 3000),
  "GET " . sign_link(path => '/short/a.txt', ttl => 3700),
  "GET " . sign_link(path => '/short/a.txt', exp => 999999999999) ]
--- error_code eval
[200, 403, 200, 403, 403]
--- response_body eval
["A\n", qq{{"error":"link_invalid"}\n}, "A\n", qq{{"error":"link_invalid"}\n},
 qq{{"error":"link_invalid"}\n}]
--- response_headers eval
["X-Status: ok", "X-Status: invalid", "X-Status: ok", "X-Status: invalid",
 "X-Status: invalid"]



=== TEST 12: stateless links make no Redis call, and work with Redis stopped
--- no_cluster: stops the single redis-server
--- http_config
    # a long timeout: a request that waited for Redis would show
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=2s;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /files/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
        add_header X-Left $psd_link_downloads_left always;
    }
--- user_files
>>> files/a.txt
A
--- check
# let the worker's connection handshake (SCRIPT LOAD) finish first
wait_until(sub { my $a = redis_work(); Time::HiRes::sleep(0.1); $a == redis_work() }, 3);
my $before = redis_work();
my @urls = (sign_link(path => '/files/a.txt'),
            sign_link(path => '/files/d/', prefix => 1, order => 'o1', ip => '127.0.0.1')
                =~ s{^/files/d/}{/files/a.txt}r,
            sign_link(path => '/files/a.txt', exp => int(time) - 5));
my $forged = $urls[0] =~ s/psd_sig=(.)/'psd_sig=' . ($1 eq 'A' ? 'B' : 'A')/er;
my @st = map { http_get($_)->{status} } @urls, $forged;
is "@st", '200 403 410 403', 'ok, wrong_path, expired, invalid';
is redis_work(), $before, 'no Redis command for stateless links';
# the measure works: a limited link runs the script
my $r = http_get(sign_link(path => '/files/a.txt', limit => 3));
is $r->{status}, 200, 'limited link served';
is $r->{headers}{'x-left'}, 3, 'downloads left 3';
ok wait_until(sub { redis_work() > $before }, 2), 'a limited link calls Redis';
redis_stop();
my $t0 = Time::HiRes::time();
@st = map { http_get($_)->{status} } @urls;
redis_cont();
is "@st", '200 403 410', 'same answers with Redis stopped';
ok Time::HiRes::time() - $t0 < 1.5, 'and without waiting for Redis (timeout 2s)';
--- no_error_log
let through
[warn]



=== TEST 13: error_page: the status goes to the site's error page, variables survive
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /files/ {
        psd_link on;
        error_page 403 410 /denied.html;
    }
    location = /denied.html {
        add_header X-Status $psd_link_status always;
        add_header X-Id $psd_link_id always;
    }
--- user_files
>>> files/a.txt
A
>>> denied.html
custom denied page
--- request eval
[ "GET " . sign_link(path => '/files/a.txt', id => 'ep1', exp => int(time) - 9),
  "GET " . sign_link(path => '/files/a.txt', id => 'ep2', ip => '10.9.9.9'),
  "GET " . sign_link(path => '/files/a.txt', id => 'ep3') ]
--- error_code eval
[410, 403, 200]
--- response_body eval
["custom denied page\n", "custom denied page\n", "A\n"]
--- response_headers eval
["X-Status: expired\nX-Id: ep1\nContent-Type: text/html",
 "X-Status: wrong_client\nX-Id: ep2", "!X-Status"]
--- error_log
psd_link: denied, expired, link "ep1"



=== TEST 14: psd_link off in a nested location, and outside psd_link locations no variables
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /files/ {
        psd_link on;
        location /files/public/ {
            psd_link off;
            add_header X-Status "[$psd_link_status]" always;
        }
    }
--- user_files
>>> files/a.txt
A
>>> files/public/p.txt
P
--- request eval
["GET /files/public/p.txt", "GET /files/public/p.txt?psd_v=garbage", "GET /files/a.txt"]
--- error_code eval
[200, 200, 403]
--- response_headers eval
["X-Status: []", "X-Status: []", ""]



=== TEST 15: a limited link without any psd_redis is a 500; stateless ones still work
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /files/ {
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> files/a.txt
A
--- request eval
[ "GET " . sign_link(path => '/files/a.txt', id => 'lim500', limit => 1),
  "GET " . sign_link(path => '/files/a.txt') ]
--- error_code eval
[500, 200]
--- error_log
psd_link: link "lim500" has a download limit and no "psd_redis" is configured



=== TEST 16: the variables in the access log, for served and denied requests
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    log_format psd '$status st=$psd_link_status id=$psd_link_id order=$psd_link_order exp=$psd_link_expires';
--- config
    access_log logs/psd.log psd;
    location /files/ {
        psd_link on;
    }
--- user_files
>>> files/a.txt
A
--- request eval
[ "GET " . sign_link(path => '/files/a.txt', id => 'al1', order => 'o1', exp => $::NOW + 900),
  "GET " . sign_link(path => '/files/a.txt', id => 'al2', exp => $::NOW - 1),
  "GET /files/a.txt",
  "GET /other" ]
--- error_code eval
[200, 410, 403, 404]
--- check
# the log phase may run just after the client has read the response
my @l;
wait_until(sub {
    open my $fh, '<', "$ENV{TEST_NGINX_SERVROOT}/logs/psd.log" or die $!;
    @l = <$fh>;
    @l >= 4;
}, 3);
chomp @l;
is_deeply \@l, [ "200 st=ok id=al1 order=o1 exp=" . ($::NOW + 900),
                 "410 st=expired id=al2 order=- exp=" . ($::NOW - 1),
                 "403 st=malformed id=- order=- exp=-",
                 "404 st=- id=- order=- exp=-" ], 'access log lines';
