# psd_checkout_session and psd_idempotency, end to end.
#
# The application (and the gateway of the reveal tests) is an echo server
# (a fake_redis_start handler speaking HTTP): it answers with the exact
# bytes it received, so a test sees what the application got; it appends
# one line per request to app.log in the servroot, so a test counts how
# often it was called.  Request headers steer it (they are not part of an
# idempotent payload, which is method, URI and body):
#
#   X-App-Status: N      answer with this status (204: no body)
#   X-App-Type: T        Content-Type (default application/octet-stream)
#   X-App-Size: N        answer N bytes of "x" instead of the echo
#   X-App-Delay: S       sleep S seconds before answering
#   X-App-Encoding: E    add Content-Encoding: E
#
# Metrics are compared as deltas.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Echo;    # echo_app, seen
use PsdTest::Link qw(write_key_file wait_until);
use Digest::SHA qw(sha256);
use IO::Socket::IP;
use Time::HiRes qw(time sleep);

our $VAULT = sha256('psd checkout test: vault key');
our $FP_KEY = sha256('psd checkout test: fingerprint key');
our $REVEAL = 'psd-reveal-key-53c0ffee7a1b9d24e6';
die "a test key ends in a newline\n" if grep { /[\r\n]\z/ } $VAULT, $FP_KEY;
write_key_file('vault', $VAULT);
write_key_file('fp', $FP_KEY);
write_key_file('reveal', "$REVEAL\n");

our $CARD = '4242424242424242';
our $CARD2 = '5555555555554444';
our $LOG = "$ENV{TEST_NGINX_SERVROOT}/app.log";

our $HTTP = <<'EOF';
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
    psd_checkout_session_ttl 10m;
    psd_idempotency_ttl 1h;
EOF

our $LOCS = <<'EOF';
    location = /checkout {
        psd_checkout_session on;
        psd_idempotency on;
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        add_header X-CS $psd_checkout_session always;
        proxy_buffers 64 4k;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
    location = /checkout2 {
        psd_idempotency on;
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app2;
    }
    location /pay/ {
        psd_idempotency on;
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/pay/;
    }
    location = /checkout-nosess {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app3;
    }
    location = /shop {
        psd_checkout_session on;
        add_header X-CS $psd_checkout_session always;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/shop;
    }
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_field source.cvc cvv;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
    location = /shop-try {
        psd_checkout_session on;
        try_files /nonexistent /shop;
    }
    location = /metrics { psd_metrics; }
EOF

# --- the application ------------------------------------------------------------

sub app_handler {
    my ($sock) = @_;
    my $buf = '';
    while (index($buf, "\r\n\r\n") < 0) {
        sysread($sock, $buf, 65536, length $buf) or return;
    }
    my $hlen = index($buf, "\r\n\r\n") + 4;
    my $head = substr $buf, 0, $hlen;
    my $len = $head =~ /^content-length:[ \t]*(\d+)\r$/mi ? $1 : 0;
    while (length($buf) < $hlen + $len) {
        sysread($sock, $buf, 65536, length $buf) or last;
    }
    my ($line) = $buf =~ /^([^\r\n]*)/;
    if (open my $fh, '>>', $main::LOG) { print {$fh} "$line\n"; close $fh }
    my (%c, @kv);
    @kv = $head =~ /^(X-App-[\w-]+):[ \t]*(.*?)\r$/mig;
    while (my ($k, $v) = splice @kv, 0, 2) { $c{lc $k} = $v }
    sleep $c{'x-app-delay'} if $c{'x-app-delay'};
    my $status = $c{'x-app-status'} // 200;
    my $body = $status == 204 ? '' : $c{'x-app-size'} ? 'x' x $c{'x-app-size'} : $buf;
    print {$sock} "HTTP/1.1 $status Whatever\r\n"
        . 'Content-Type: ' . ($c{'x-app-type'} // 'application/octet-stream') . "\r\n"
        . ($c{'x-app-encoding'} ? "Content-Encoding: $c{'x-app-encoding'}\r\n" : '')
        . "X-Echo: 1\r\n"
        . ($status == 204 ? '' : 'Content-Length: ' . length($body) . "\r\n")
        . "Connection: close\r\n\r\n$body";
}

sub app_start { unlink $LOG; fake_redis_start(\&app_handler) }

sub app_calls {
    open my $fh, '<', $LOG or return 0;
    my @l = <$fh>;
    return scalar @l;
}

# --- requests ---------------------------------------------------------------

sub card_body {
    my ($pan, $cvv, $extra) = @_;
    return qq({"amount":4900,"card":{"number":"$pan","cvc":"$cvv"}) . ($extra // '') . '}';
}

# req(method => , path => , body => , key => , cookie => , headers => "A: b\r\n")
sub req {
    my (%o) = @_;
    my $body = $o{body} // card_body($CARD, '123');
    return ($o{method} // 'POST') . ' ' . ($o{path} // '/checkout') . " HTTP/1.1\r\n"
        . "Host: localhost\r\nConnection: close\r\n"
        . 'Content-Type: ' . ($o{type} // 'application/json') . "\r\n"
        . (defined $o{key} ? "Idempotency-Key: $o{key}\r\n" : '')
        . (defined $o{cookie} ? "Cookie: $o{cookie}\r\n" : '')
        . ($o{headers} // '')
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
}
sub post { http_request(req(@_), timeout => 8) }

sub metric {
    my ($row) = @_;
    return http_get('/metrics')->{body} =~ /^\Q$row\E (\d+)$/m ? $1 : 0;
}
sub m_created   { metric('psd_checkout_sessions_created_total') }
sub m_replays   { metric('psd_idempotent_replays_total') }
sub m_conflicts { metric('psd_idempotent_conflicts_total') }

sub keys_of { my $k = redis_cmd('KEYS', $_[0]); ref $k ? @$k : () }
sub tok_keys { scalar keys_of('psd:{tok:*') }
sub idem_keys { keys_of('psd:{idem:*') }

# the session id of a Set-Cookie: psd_cs=...; or undef
sub cookie_id {
    my ($r) = @_;
    my $c = $r->{headers}{'set-cookie'} // return undef;
    return undef if ref $c;
    return $c =~ /^psd_cs=([A-Za-z0-9]{22});/ ? $1 : undef;
}

# tokens of the card the application saw
sub tokens_of {
    my ($r) = @_;
    my $s = seen($r) or return ();
    return $s->{body} =~ /"number":"([^"]+)","cvc":"([^"]+)"/;
}

sub reveal {
    my ($pan_tok, $cvv_tok, $session) = @_;
    my $body = defined $cvv_tok
        ? qq({"amount":4900,"source":{"number":"$pan_tok","cvc":"$cvv_tok"}})
        : qq({"amount":4900,"source":{"number":"$pan_tok"}});
    return post(path => '/gateway', body => $body,
                headers => "X-PSD-Reveal-Key: $REVEAL\r\n"
                    . (defined $session ? "X-PSD-Checkout-Session: $session\r\n" : ''));
}

run_tests();

__DATA__

=== TEST 1: a new session: cookie, Redis record with its TTL, variable, metric; the cookie is reused, the record moves to tokenized keeping its TTL
--- http_config eval
$main::HTTP
--- config eval
$main::LOCS
--- init
app_start();
--- check
my $c0 = m_created();
my $r = http_get('/shop');
is $r->{status}, 200, 'GET /shop';
like $r->{headers}{'set-cookie'} // '',
    qr/^psd_cs=[A-Za-z0-9]{22}; Path=\/; Max-Age=600; HttpOnly; Secure; SameSite=Lax$/,
    'Set-Cookie: psd_cs=<22 alnum>; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax';
my $id = cookie_id($r) or return fail 'no session id';
is $r->{headers}{'x-cs'}, $id, '$psd_checkout_session is the new id';
ok wait_until(sub { defined redis_cmd('GET', "psd:{cs:$id}") }, 2), 'the record is written';
is redis_cmd('GET', "psd:{cs:$id}"), 'created', 'psd:{cs:<id>} = created';
my $ttl = redis_cmd('TTL', "psd:{cs:$id}");
ok $ttl > 590 && $ttl <= 600, "its TTL is psd_checkout_session_ttl ($ttl)";
is m_created() - $c0, 1, 'psd_checkout_sessions_created_total +1';

# the cookie is reused: no new cookie, no new session
$r = http_get('/shop', { Cookie => "a=1; psd_cs=$id; b=2" });
is $r->{status}, 200, 'GET /shop with the cookie';
ok !exists $r->{headers}{'set-cookie'}, 'no new cookie';
is $r->{headers}{'x-cs'}, $id, 'the same session';
is m_created() - $c0, 1, 'no new session counted';

# a tokenized request in the session
redis_cmd('EXPIRE', "psd:{cs:$id}", 500);
$r = post(cookie => "psd_cs=$id", headers => "X-PSD-Checkout-Session: forged\r\n");
is $r->{status}, 200, 'POST /checkout in the session';
ok !exists $r->{headers}{'set-cookie'}, 'no new cookie';
is $r->{headers}{'x-cs'}, $id, '$psd_checkout_session';
my $s = seen($r) or return fail 'no echo';
is $s->{h}{'x-psd-checkout-session'}, $id, 'the application gets X-PSD-Checkout-Session: <id>, only ours';
is $s->{h}{'x-client-x-psd-checkout-session'}, 'forged', "the client's is renamed";
my ($t, $c) = tokens_of($r);
like $t, qr/^tok_\w{24}$/, 'the card was tokenized';
is redis_cmd('GET', "psd:{cs:$id}"), 'tokenized', 'the record is tokenized';
$ttl = redis_cmd('TTL', "psd:{cs:$id}");
ok $ttl > 490 && $ttl <= 500, "SET XX KEEPTTL: the TTL is kept ($ttl)";
like redis_cmd('GET', "psd:{tok:$t}"), qr/^\Q$id\E\|/, 'the card token is bound to the session';
like redis_cmd('GET', "psd:{cvv:$c}"), qr/^\Q$id\E\|/, 'the CVV token is bound to the session';
is m_created() - $c0, 1, 'no new session counted';

# a session that Redis no longer knows: tokenized does not create it (XX)
my $gone = 'Z' x 22;
$r = post(cookie => "psd_cs=$gone");
is $r->{status}, 200, 'a well-formed cookie unknown to Redis';
ok !exists $r->{headers}{'set-cookie'}, 'is taken as it is';
is redis_cmd('EXISTS', "psd:{cs:$gone}"), 0, 'and not recorded by the tokenized update (XX)';

# a first tokenized request without a cookie: created, then tokenized
$r = post();
my $id2 = cookie_id($r);
ok $id2 && $id2 ne $id, 'a tokenized request without a cookie gets a new session';
is seen($r) && seen($r)->{h}{'x-psd-checkout-session'}, $id2, 'the application gets it';
is redis_cmd('GET', "psd:{cs:$id2}"), 'tokenized', 'its record is tokenized (created, then updated)';
is m_created() - $c0, 2, 'psd_checkout_sessions_created_total +2 in all';
--- no_error_log
[error]



=== TEST 2: malformed psd_cs values get a new session
--- http_config eval
$main::HTTP
--- config eval
$main::LOCS
--- init
app_start();
--- check
my $c0 = m_created();
my @bad = ('', 'short', 'A' x 21, 'A' x 23, 'AAAAAAAAAA-AAAAAAAAAAA', 'AAAAAAAAAA_AAAAAAAAAAA',
           'AAAAAAAAAA%20AAAAAAAAA', '"AAAAAAAAAAAAAAAAAAAA"');
my %ids;
for my $v (@bad) {
    my $r = http_get('/shop', { Cookie => "psd_cs=$v" });
    my $id = cookie_id($r);
    ok $id && $id ne $v, "psd_cs=$v: a new session";
    is $r->{headers}{'x-cs'}, $id, "psd_cs=$v: \$psd_checkout_session is the new one";
    $ids{$id}++ if $id;
}
is scalar(keys %ids), scalar @bad, 'every new session is another id';
is m_created() - $c0, scalar @bad, 'each is counted';
my $r = http_get('/shop', { Cookie => 'other=' . ('B' x 22) });
ok cookie_id($r), 'another cookie of 22 characters is not a session';

# an internal redirect to another session location: still one session
my $c1 = m_created();
$r = http_get('/shop-try');
is $r->{status}, 200, 'try_files to /shop';
ok !ref $r->{headers}{'set-cookie'} && cookie_id($r), 'one Set-Cookie';
is $r->{headers}{'x-cs'}, cookie_id($r), '$psd_checkout_session is that session';
is seen($r) && seen($r)->{line}, 'GET /shop HTTP/1.0', 'the application got the redirected request';
is m_created() - $c1, 1, 'one session counted';
--- no_error_log
[error]



=== TEST 3: a location with psd_checkout_session but no tokenization passes X-PSD-Checkout-Session too, and never the client's
--- http_config eval
$main::HTTP
--- config eval
$main::LOCS
--- init
app_start();
--- check
my $r = http_get('/shop');
my $id = cookie_id($r) or return fail 'no session';
my $s = seen($r) or return fail 'no echo';
is $s->{h}{'x-psd-checkout-session'}, $id, 'a new session: the application gets X-PSD-Checkout-Session';
$r = http_get('/shop', { Cookie => "psd_cs=$id", 'X-PSD-Checkout-Session' => 'forged' });
$s = seen($r) or return fail 'no echo';
is $s->{h}{'x-psd-checkout-session'}, $id, 'an existing session: only ours, not the forged one';
--- no_error_log
[error]



=== TEST 4: tokens made in a session reveal only with its X-PSD-Checkout-Session; tokens made without one reveal without it
--- http_config eval
$main::HTTP
--- config eval
$main::LOCS
--- init
app_start();
--- check
my $id = 'Sess' . ('s' x 14) . '0001';
my ($t, $c) = tokens_of(post(cookie => "psd_cs=$id"));
ok $t && $c, 'tokenized in the session' or return;

my $r = reveal($t, undef, undef);
is $r->{status}, 422, 'no X-PSD-Checkout-Session: 422';
is $r->{body}, qq({"error":"token_session_mismatch","field":"source.number"}\n),
    'token_session_mismatch with the field';
ok !$r->{headers}{'x-echo'}, 'the gateway was not reached';
$r = reveal($t, undef, 'Other' . ('o' x 17));
is $r->{status}, 422, 'another session: 422';
like $r->{body}, qr/"token_session_mismatch"/, 'token_session_mismatch';
$r = reveal($t, undef, substr($id, 0, 21));
is $r->{status}, 422, 'a prefix of the session: 422';

$r = reveal($t, $c, $id);
my $s = seen($r);
is $r->{status}, 200, 'the session: revealed';
is $s && $s->{body}, qq({"amount":4900,"source":{"number":"$main::CARD","cvc":"123"}}),
    'the gateway gets the card and the CVV';

# without a session
my $r0 = post(path => '/checkout-nosess', body => card_body($main::CARD2, '456'));
ok !exists $r0->{headers}{'set-cookie'}, 'no session where it is off';
my ($t2, $c2) = tokens_of($r0);
ok $t2, 'tokenized without a session' or return;
unlike redis_cmd('GET', "psd:{tok:$t2}"), qr/\|/, 'the token is not bound';
$r = reveal($t2, undef, undef);
is seen($r) && seen($r)->{body}, qq({"amount":4900,"source":{"number":"$main::CARD2"}}),
    'revealed without X-PSD-Checkout-Session';
$r = reveal($t2, $c2, $id);
is seen($r) && seen($r)->{body}, qq({"amount":4900,"source":{"number":"$main::CARD2","cvc":"456"}}),
    'and with any';
--- no_error_log
[error]



=== TEST 5: a reveal refused for the session does not use up the CVV
--- http_config eval
$main::HTTP
--- config eval
$main::LOCS
--- init
app_start();
--- check
my $id = 'Sess' . ('c' x 14) . '0002';
my ($t, $c) = tokens_of(post(cookie => "psd_cs=$id"));
ok $t && $c, 'tokenized in the session' or return;
my $r = reveal($t, $c, 'Other' . ('o' x 17));
is $r->{status}, 422, 'another session: 422';
is redis_cmd('EXISTS', "psd:{cvv:$c}"), 1, 'the CVV is still in the vault';
$r = reveal($t, $c, $id);
is $r->{status}, 200, 'the right session then reveals card and CVV';
--- no_error_log
[error]



=== TEST 6: Idempotency-Key: the first request proceeds, a repeat gets the stored response (status, type, body) from nginx, no new vault keys
--- http_config eval
$main::HTTP
--- config eval
$main::LOCS
--- init
app_start();
--- check
my ($rp0, $cf0) = (m_replays(), m_conflicts());
my %o = (key => 'order-7-attempt-1', cookie => 'psd_cs=' . ('K' x 22),
         headers => "X-App-Status: 201\r\nX-App-Type: application/json; charset=utf-8\r\n");
my $r1 = post(%o);
is $r1->{status}, 201, 'the first request: the application answers 201';
ok !exists $r1->{headers}{'idempotent-replayed'}, 'not a replay';
is app_calls(), 1, 'the application was called once';
my ($t) = tokens_of($r1);
like $t, qr/^tok_/, 'tokenized';
is tok_keys(), 1, 'one card in the vault';

my @idem = idem_keys();
is scalar @idem, 1, 'one idempotency record';
like $idem[0], qr/^psd:\{idem:[A-Za-z0-9_-]{22}\}$/, 'its key: psd:{idem:<digest>}';
ok wait_until(sub { (redis_cmd('GET', $idem[0]) // '') =~ /^d:/ }, 2), 'the record is done';
my $rec = redis_cmd('GET', $idem[0]);
like $rec, qr/^d:[0-9a-f]{64}:201\napplication\/json; charset=utf-8\n/, 'd:<hmac>:<status>\n<type>\n<body>';
is substr($rec, index($rec, "\n", index($rec, "\n") + 1) + 1), $r1->{body}, 'the stored body is the response';
my $ttl = redis_cmd('TTL', $idem[0]);
ok $ttl > 3500 && $ttl <= 3600, "kept for psd_idempotency_ttl ($ttl)";

for my $n (1 .. 2) {
    my $r = post(%o, headers => '');
    is $r->{status}, 201, "repeat $n: the stored status";
    is $r->{headers}{'content-type'}, 'application/json; charset=utf-8', "repeat $n: the stored type";
    is $r->{body}, $r1->{body}, "repeat $n: the stored body";
    is $r->{headers}{'idempotent-replayed'}, 'true', "repeat $n: Idempotent-Replayed: true";
}
is app_calls(), 1, 'the application was not called again';
is tok_keys(), 1, 'no new vault keys';
is scalar(keys_of('psd:{cvv:*')), 1, 'no new CVV keys';
is m_replays() - $rp0, 2, 'psd_idempotent_replays_total +2';
is m_conflicts() - $cf0, 0, 'no conflicts counted';
--- no_error_log
[error]



=== TEST 7: the stored records never hold the card number; an application 4xx is stored too
--- http_config eval
$main::HTTP
--- config eval
$main::LOCS
--- init
app_start();
--- check
my $r = post(key => 'k-4xx', headers => "X-App-Status: 402\r\n");
is $r->{status}, 402, 'the application answers 402';
$r = post(key => 'k-4xx');
is $r->{status}, 402, 'the repeat: 402 stored';
is $r->{headers}{'idempotent-replayed'}, 'true', 'replayed';
$r = post(key => 'k-ok', body => card_body($main::CARD2, '999', ',"note":"x"'));
is $r->{status}, 200, 'another key';
# a card the module refuses: the refusal is the stored response
$r = post(key => 'k-luhn', body => card_body('4242424242424241', '123'));
is $r->{status}, 422, 'a Luhn failure';
$r = post(key => 'k-luhn', body => card_body('4242424242424241', '123'));
is $r->{status}, 422, 'its repeat';
is $r->{headers}{'idempotent-replayed'}, 'true', 'is the stored refusal';
is app_calls(), 2, 'the application was called twice';
my @k = idem_keys();
is scalar @k, 3, 'three records';
for (@k) {
    my $v = redis_cmd('GET', $_) // '';
    ok index($v, $main::CARD) < 0 && index($v, $main::CARD2) < 0
        && index($v, '4242424242424241') < 0, "$_ holds no card number";
    unlike $v, qr/\d{13,19}/, "$_ holds no long digit run";
}
--- no_error_log
[error]



=== TEST 8: a repeat with another body or method gets 422 idempotency_key_reused, the application is not called
--- http_config eval
$main::HTTP
--- config eval
$main::LOCS
--- init
app_start();
--- check
my $cf0 = m_conflicts();
my $r = post(key => 'k-reuse');
is $r->{status}, 200, 'the first request';
$r = post(key => 'k-reuse', body => card_body($main::CARD, '124'));
is $r->{status}, 422, 'another body: 422';
is $r->{body}, qq({"error":"idempotency_key_reused"}\n), 'idempotency_key_reused';
ok !exists $r->{headers}{'idempotent-replayed'}, 'not a replay';
$r = post(key => 'k-reuse', body => card_body($main::CARD, '123') . ' ');
is $r->{status}, 422, 'one more byte: 422';
$r = post(key => 'k-reuse', method => 'PUT');
is $r->{status}, 422, 'another method: 422';
is $r->{body}, qq({"error":"idempotency_key_reused"}\n), 'idempotency_key_reused';
$r = post(key => 'k-reuse', method => 'PATCH');
is $r->{status}, 422, 'PATCH: 422';
is app_calls(), 1, 'the application was called once';
is tok_keys(), 1, 'no vault keys for the refused repeats';
is m_conflicts() - $cf0, 4, 'psd_idempotent_conflicts_total +4';
$r = post(key => 'k-reuse');
is $r->{headers}{'idempotent-replayed'}, 'true', 'the original payload still replays';
--- no_error_log
[error]



=== TEST 9: another URI in the same location is another payload: 422 idempotency_key_reused
--- http_config eval
$main::HTTP
--- config eval
$main::LOCS
--- init
app_start();
--- check
my $r = post(path => '/pay/a', key => 'k-uri');
is $r->{status}, 200, 'POST /pay/a';
$r = post(path => '/pay/b', key => 'k-uri');
is $r->{status}, 422, 'POST /pay/b with the same key and body: 422';
is $r->{body}, qq({"error":"idempotency_key_reused"}\n), 'idempotency_key_reused';
is app_calls(), 1, 'the application was called once';
--- no_error_log
[error]



=== TEST 10: a repeat while the first is in flight gets 409 idempotency_key_in_use
--- http_config eval
$main::HTTP
--- config eval
$main::LOCS
--- init
app_start();
--- check
my $cf0 = m_conflicts();
my $raw = req(key => 'k-flight', headers => "X-App-Delay: 1\r\n");
my $rs = http_parallel([$raw, $raw, $raw], timeout => 8);
my @st = sort map { $_->{status} // 0 } @$rs;
is "@st", '200 409 409', 'one goes through, the others get 409';
my ($c) = grep { ($_->{status} // 0) == 409 } @$rs;
is $c->{body}, qq({"error":"idempotency_key_in_use"}\n), 'idempotency_key_in_use';
is app_calls(), 1, 'the application was called once';
is tok_keys(), 1, 'one card in the vault';
is m_conflicts() - $cf0, 2, 'psd_idempotent_conflicts_total +2';
my $r = post(key => 'k-flight');
is $r->{status}, 200, 'once done: the repeat';
is $r->{headers}{'idempotent-replayed'}, 'true', 'is replayed';
is $r->{body}, (grep { ($_->{status} // 0) == 200 } @$rs)[0]{body}, 'with the first body';
is app_calls(), 1, 'still one call';
--- no_error_log
[error]



=== TEST 11: a 5xx, a compressed or a too large response is not stored and the key is released; 64 KiB is stored
--- http_config eval
$main::HTTP
--- config eval
$main::LOCS
--- init
app_start();
--- check
my $released = sub { my ($what) = @_;
    ok wait_until(sub { !idem_keys() }, 2), "$what: the key is released" };
my $r = post(key => 'k-5xx', headers => "X-App-Status: 500\r\n");
is $r->{status}, 500, 'the application answers 500';
$released->('500');
$r = post(key => 'k-5xx', headers => "X-App-Status: 503\r\n");
is $r->{status}, 503, 'the retry reaches the application (503)';
ok !exists $r->{headers}{'idempotent-replayed'}, 'not a replay';
$released->('503');
$r = post(key => 'k-5xx');
is $r->{status}, 200, 'the next retry reaches the application (200)';
is app_calls(), 3, 'three calls';
$r = post(key => 'k-5xx');
is $r->{headers}{'idempotent-replayed'}, 'true', 'the 200 is stored';
is app_calls(), 3, 'and replayed';
redis_cmd('FLUSHALL');

$r = post(key => 'k-big', headers => "X-App-Size: 70000\r\n");
is length($r->{body}), 70000, '70000 bytes answered';
$released->('> 64 KiB');
$r = post(key => 'k-big', headers => "X-App-Size: 70000\r\n");
is length($r->{body}), 70000, 'the repeat reaches the application again';
ok !exists $r->{headers}{'idempotent-replayed'}, 'not a replay';
is app_calls(), 5, 'five calls';
$released->('> 64 KiB again');

$r = post(key => 'k-gzip', headers => "X-App-Encoding: gzip\r\nX-App-Size: 10\r\n");
is $r->{headers}{'content-encoding'}, 'gzip', 'a compressed response';
$released->('compressed');
$r = post(key => 'k-gzip', headers => "X-App-Size: 10\r\n");
ok !exists $r->{headers}{'idempotent-replayed'}, 'its repeat reaches the application';
is app_calls(), 7, 'seven calls';

$r = post(key => 'k-64k', headers => "X-App-Size: 65536\r\n");
is length($r->{body}), 65536, '64 KiB answered';
$r = post(key => 'k-64k');
is $r->{headers}{'idempotent-replayed'}, 'true', '64 KiB is stored and replayed';
is $r->{body}, 'x' x 65536, 'all of it';
is app_calls(), 8, 'eight calls';
--- no_error_log
[error]



=== TEST 12: a bodiless 204 from the application is stored (the key is not left locked)
--- http_config eval
$main::HTTP
--- config eval
$main::LOCS
--- init
app_start();
--- check
my $r = post(key => 'k-204', headers => "X-App-Status: 204\r\n");
is $r->{status}, 204, 'the application answers 204';
ok wait_until(sub { my ($k) = idem_keys(); !$k || (redis_cmd('GET', $k) // '') !~ /^p:/ }, 2),
    'the key is not left in flight';
$r = post(key => 'k-204');
is $r->{status}, 204, 'the repeat gets 204';
is $r->{headers}{'idempotent-replayed'}, 'true', 'replayed';
is app_calls(), 1, 'the application was called once';
--- no_error_log
[error]



=== TEST 13: invalid Idempotency-Key values get 400 invalid_idempotency_key
--- http_config eval
$main::HTTP
--- config eval
$main::LOCS
--- init
app_start();
--- check
my @bad = ('', 'k' x 256, "a\x01b", "a b", "a\tb", "a\x7fb", "caf\xc3\xa9");
for my $k (@bad) {
    my $name = length $k > 20 ? length($k) . ' characters' : join '', map { sprintf '\\x%02x', ord } split //, $k;
    my $r = post(key => $k);
    is $r->{status}, 400, "'$name': 400";
    is $r->{body}, qq({"error":"invalid_idempotency_key"}\n), "'$name': invalid_idempotency_key";
}
is app_calls(), 0, 'the application was not called';
is tok_keys(), 0, 'no card stored';
is scalar(idem_keys()), 0, 'no record';
my $r = post(key => 'k' x 255);
is $r->{status}, 200, '255 characters are fine';
$r = post(key => '!~#$%&*+-./:;<=>?@[]^_`{|}');
is $r->{status}, 200, 'visible ASCII is fine';
is app_calls(), 2, 'both reached the application';
--- no_error_log
[error]



=== TEST 14: the same key in two locations is independent
--- http_config eval
$main::HTTP
--- config eval
$main::LOCS
--- init
app_start();
--- check
my $r1 = post(path => '/checkout', key => 'k-shared');
my $r2 = post(path => '/checkout2', key => 'k-shared');
is $r1->{status}, 200, '/checkout';
is $r2->{status}, 200, '/checkout2 with the same key and body';
ok !exists $r2->{headers}{'idempotent-replayed'}, 'is not a replay';
like seen($r2) && seen($r2)->{line}, qr{^POST /app2 }, 'it reached its application';
my $r3 = post(path => '/checkout2', key => 'k-shared-2', body => card_body($main::CARD2, '321'));
my $r4 = post(path => '/checkout', key => 'k-shared-2');
is $r4->{status}, 200, 'another body in another location is not a reuse';
is app_calls(), 4, 'four calls';
is scalar(idem_keys()), 4, 'four records';
is post(path => '/checkout', key => 'k-shared')->{body}, $r1->{body}, '/checkout replays its own';
is post(path => '/checkout2', key => 'k-shared')->{body}, $r2->{body}, '/checkout2 replays its own';
is app_calls(), 4, 'still four calls';
--- no_error_log
[error]



=== TEST 15: Redis down: 503 with Retry-After, the application is not called; the session stays open
--- no_cluster: stops and kills the single redis-server
--- http_config eval
$main::HTTP
--- config eval
$main::LOCS
--- init
app_start();
--- check
redis_kill();
my $r = post(key => 'k-down');
is $r->{status}, 503, 'Redis dead: 503';
is $r->{headers}{'retry-after'}, '1', 'Retry-After: 1';
is app_calls(), 0, 'the application was not called';
$r = http_get('/shop');
is $r->{status}, 200, 'a session location still answers';
ok cookie_id($r), 'and sets the cookie';
redis_start();
redis_stop();
my $t0 = time;
$r = post(key => 'k-down');
is $r->{status}, 503, 'Redis not answering: 503';
ok time - $t0 < 2, 'within the timeout';
redis_cont();
is app_calls(), 1, 'only the session page reached the application';
--- error_log eval
[qr/redis/i]



=== TEST 16: the lock expires after psd_idempotency_lock when the client goes away before the response
--- http_config eval
$main::HTTP . "    psd_idempotency_lock 1s;\n"
--- config eval
$main::LOCS
--- init
app_start();
--- check
my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $ENV{TEST_NGINX_SERVER_PORT},
                            Proto => 'tcp') or die "connect: $@";
print {$s} req(key => 'k-lock', headers => "X-App-Delay: 5\r\n");
ok wait_until(sub { app_calls() == 1 }, 2), 'the application got the request';
my ($k) = idem_keys();
like redis_cmd('GET', $k // 'none') // '', qr/^p:[0-9a-f]{64}$/, 'in flight: p:<hmac>';
my $pttl = redis_cmd('PTTL', $k // 'none');
my $expires = time + ($pttl > 0 ? $pttl : 1000) / 1000;
ok $pttl > 0 && $pttl <= 1000, "locked for psd_idempotency_lock ($pttl ms)";
close $s;
ok wait_until(sub { (do { local (@ARGV, $/) = ("$ENV{TEST_NGINX_SERVROOT}/logs/access.log"); <> } // '') =~ /"POST \/checkout HTTP\/1\.1" 499 / }, 2),
    'nginx saw the client go (499)';
my $r = post(key => 'k-lock');
is $r->{status}, 409, 'while the lock holds: 409';
sleep 0.05 while time < $expires + 0.15;
$r = post(key => 'k-lock');
is $r->{status}, 200, 'after the lock: the retry reaches the application';
is app_calls(), 2, 'two calls';
# stored once the response has gone out: the client may be faster
ok wait_until(sub { (redis_cmd('GET', $k // 'none') // '') =~ /^d:/ }, 2),
    'its response is stored';
--- no_error_log
[error]



=== TEST 17: psd_idempotency_ttl 0 is refused
--- http_config eval
$main::HTTP =~ s{psd_idempotency_ttl 1h}{psd_idempotency_ttl 0}r
--- config eval
$main::LOCS
--- must_die
--- error_log
"psd_idempotency_ttl" must be at least 1s



=== TEST 18: psd_checkout_session_ttl 0 is refused
--- http_config eval
$main::HTTP =~ s{psd_checkout_session_ttl 10m}{psd_checkout_session_ttl 0}r
--- config eval
$main::LOCS
--- must_die
--- error_log
"psd_checkout_session_ttl" must be at least 1s



=== TEST 19: psd_idempotency_lock 0 is refused
--- http_config eval
$main::HTTP . "    psd_idempotency_lock 0s;\n"
--- config eval
$main::LOCS
--- must_die
--- error_log
"psd_idempotency_lock" must be at least 1s
