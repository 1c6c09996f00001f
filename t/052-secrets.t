# Secret hygiene of card tokenization: after tokenizing (JSON, forms,
# chunked, the preserving format, a checkout session with an
# Idempotency-Key replayed), revealing, refusing (every kind of bad
# input, the safety net, 413, 415, Redis stopped), a fraud rule on the card
# fingerprint, a download link issued and used, and a verified webhook, the
# test card numbers (also written with spaces and dashes), the CVVs, the
# bytes of every key file (raw, hex, base64), the reveal key, the API key
# and the webhook secret appear in none of:
#
#   * logs/error.log, every level (the harness runs nginx with
#     "error_log ... debug"), and nginx's stderr;
#   * the access logs: the default one, and one with $request_body and the
#     $psd_card_* variables;
#   * any response the clients got (the application's echo included, which
#     proves the application never saw them);
#   * any value in Redis (SCAN, then GET/HGETALL/SMEMBERS/ZRANGE/LRANGE/
#     XRANGE by type): the vault holds only sealed envelopes.
#
# What nginx core itself writes at debug level, outside the module, is
# excluded line by line, and only for the secret that nginx core has to see:
#   * "http header: "X-PSD-Reveal-Key: ..."" and "http header:
#     "Authorization: Bearer ..."" (ngx_http_process_request_headers logs
#     every request header line): the reveal key and the API key;
#   * "http request line: "GET /checkout?card=... HTTP/1.1"" and "http args:
#     "card=..."" (ngx_http_process_request_line): a card number that a
#     client puts in the query string, which the safety net then refuses;
#     the access log's "$request" holds that request line too.  One card
#     number (6011111111111117) is used for that request only, so that the
#     exclusion cannot hide anything else.
# The request body itself is never logged by nginx core (sizes and
# pointers only; "http chunked byte: XX" shows the first byte of each chunk
# in hex, asserted below to stay a single byte).
#
# CVVs (3 or 4 digits) occur by chance in timestamps, pointers and sizes,
# so they are looked for in the spellings a body has ("cvc":"123",
# cvc]=123, ...), and in Redis as whole values.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
no_cluster('both blocks stop the single redis-server (fail-open log lines)');
use PsdTest::Link;      # write_keys, write_key_file, key_bytes, $API_KEY, api_post, json_body, b64url, sign_link
use Digest::SHA qw(sha256 hmac_sha256_hex);
use MIME::Base64 qw(encode_base64 decode_base64);
use JSON::PP ();
use Time::HiRes qw(time sleep);

our $VAULT_1 = sha256('psd secrets test: vault key 1');
our $VAULT_2 = sha256('psd secrets test: vault key 2');
our $FP_KEY = sha256('psd secrets test: fingerprint key') . 'extra-fingerprint-key-bytes';
our $REVEAL = 'psd-secrets-reveal-key-8d3f0a6b1c';
our $STRIPE = 'whsec_secrets_test_5c1e7a9b3d2f4e6a8c0b';
our $CARRIER = 'carrier-secrets-test-7e21c9d04b3a5f68';
die "a test key ends in a newline\n" if grep { /[\r\n]\z/ } $VAULT_1, $VAULT_2, $FP_KEY;
write_keys();                                          # link keys k1, k2 and the API key
write_key_file('vault-1', $VAULT_1);
write_key_file('vault-2-hex', unpack('H*', $VAULT_2) . "\n");
write_key_file('fp', $FP_KEY);
write_key_file('reveal', "$REVEAL\n");
write_key_file('stripe', "$STRIPE\n");
write_key_file('carrier', "$CARRIER\n");

our @PANS = qw(4242424242424242 4111111111111111 5555555555554444 378282246310005);
our $QUERY_PAN = '6011111111111117';        # sent only in a query string
our @CVVS = qw(123 1234);

# The application and the gateway on one port: /v1/charges (the gateway)
# writes what it received to gateway.seen and answers {"ok":true}; any
# other path (the application) answers with the bytes it received.
sub apps {
    my $seen = "$ENV{TEST_NGINX_SERVROOT}/gateway.seen";
    fake_redis_start(sub {
        my ($sock) = @_;
        my $buf = '';
        while (index($buf, "\r\n\r\n") < 0) {
            sysread($sock, $buf, 65536, length $buf) or return;
        }
        my $hlen = index($buf, "\r\n\r\n") + 4;
        my $len = substr($buf, 0, $hlen) =~ /^content-length:[ \t]*(\d+)\r$/mi ? $1 : 0;
        while (length($buf) < $hlen + $len) {
            sysread($sock, $buf, 65536, length $buf) or last;
        }
        my $out = $buf;
        if ($buf =~ m{^POST /v1/charges }) {
            open my $fh, '>>', $seen or die;
            print {$fh} $buf, "\n";
            close $fh;
            $out = qq({"ok":true}\n);
        }
        print {$sock} "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            . 'Content-Length: ' . length($out) . "\r\nConnection: close\r\n\r\n$out";
    });
}

our @RESPONSES;
sub send_raw { my $r = http_request($_[0]); push @RESPONSES, $r; return $r }
sub post {
    my ($path, $body, %o) = @_;
    my $ct = exists $o{type} ? $o{type} : 'application/json';
    return send_raw("POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . (defined $ct ? "Content-Type: $ct\r\n" : '') . ($o{headers} // '')
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body");
}
sub get { send_raw("GET $_[0] HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" . ($_[1] // '') . "\r\n") }
sub responses { @RESPONSES }

sub spaced { join ' ', $_[0] =~ /(\d{1,4})/g }
sub dashed { join '-', $_[0] =~ /(\d{1,4})/g }

# [name, string] of everything that must not leak
sub secrets {
    my @s;
    for my $p (@PANS, $QUERY_PAN) {
        push @s, ["PAN $p", $p], ["PAN $p spaced", spaced($p)], ["PAN $p dashed", dashed($p)],
            ["PAN $p form-spaced", spaced($p) =~ tr/ /+/r], ["PAN $p %20", spaced($p) =~ s/ /%20/gr];
    }
    for my $c (@CVVS) {
        push @s, map { ["CVV $c as $_", sprintf $_, $c] }
            '"cvc":"%s"', '"cvc": "%s"', '"cvc":%s,', '"cvc":%s}', 'cvc]=%s', 'cvc%%5D=%s', 'cvc=%s', '"%s"',
            '\x22cvc\x22:\x22%s\x22', '\x22%s\x22';
    }
    my %keys = (vault1 => $VAULT_1, vault2 => $VAULT_2, fingerprint => $FP_KEY,
                link_k1 => key_bytes('k1'), link_k2 => key_bytes('k2'));
    for my $k (sort keys %keys) {
        my $b = $keys{$k};
        push @s, ["$k raw", $b], ["$k hex", unpack('H*', $b)], ["$k HEX", uc unpack('H*', $b)],
            ["$k base64", encode_base64($b, '')], ["$k base64url", b64url($b)],
            ["$k hex (first 16 bytes)", unpack('H*', substr $b, 0, 16)],
            ["$k hex (last 16 bytes)", unpack('H*', substr $b, -16)];
    }
    push @s, ['reveal key', $REVEAL], ['API key', $API_KEY], ['webhook secret', $STRIPE],
        ['webhook secret without prefix', $STRIPE =~ s/^whsec_//r], ['carrier secret', $CARRIER];
    return @s;
}

sub slurp { my ($f) = @_; open my $fh, '<:raw', $f or return ''; local $/; <$fh> // '' }

# occurrences of a secret in $text, as "name: line" strings (the line
# around the occurrence; a raw key may hold "\n" and span lines), except
# where $allow->(name, line) says so
sub leaks {
    my ($text, $allow) = @_;
    my @hits;
    for my $s (secrets()) {
        my $pos = 0;
        while (($pos = index $text, $s->[1], $pos) >= 0) {
            my $from = rindex($text, "\n", $pos) + 1;
            my $to = index $text, "\n", $pos + length $s->[1];
            $to = length $text if $to < 0;
            my $line = substr $text, $from, $to - $from;
            push @hits, "$s->[0]: " . substr($line =~ s/[^\x20-\x7e]/?/gr, 0, 300)
                unless $allow && $allow->($s->[0], $line);
            $pos = $to;
        }
    }
    return @hits;
}

sub keep { push @RESPONSES, $_[0]; $_[0] }

# every Redis key and value: (key, type, [values])
sub redis_dump {
    my @out;
    my $cursor = 0;
    do {
        my $r = redis_cmd('SCAN', $cursor, 'COUNT', 1000);
        $cursor = $r->[0];
        for my $k (@{ $r->[1] }) {
            my $t = redis_cmd('TYPE', $k);
            my $v = $t eq 'string' ? [ redis_cmd('GET', $k) ]
                : $t eq 'hash' ? redis_cmd('HGETALL', $k)
                : $t eq 'set' ? redis_cmd('SMEMBERS', $k)
                : $t eq 'zset' ? redis_cmd('ZRANGE', $k, 0, -1, 'WITHSCORES')
                : $t eq 'list' ? redis_cmd('LRANGE', $k, 0, -1)
                : $t eq 'stream' ? redis_cmd('XRANGE', $k, '-', '+')
                : [ "unknown type $t" ];
            push @out, [ $k, $t, $v ];
        }
    } while ($cursor ne '0');
    return @out;
}

sub flat { map { ref $_ ? flat(@$_) : defined $_ ? $_ : () } @_ }

sub envelope {
    my ($v) = @_;
    return undef unless defined $v && $v =~ /^[A-Za-z0-9_-]+$/;
    (my $b = $v) =~ tr{-_}{+/};
    my $bin = decode_base64($b . '=' x ((4 - length($b) % 4) % 4));
    return undef unless b64url($bin) eq $v;
    my ($ver, $n) = unpack 'CC', $bin;
    return undef unless $n && length($bin) >= 2 + $n + 28;
    return { version => $ver, kid => substr($bin, 2, $n), ct_len => length($bin) - 2 - $n - 28 };
}

run_tests();

__DATA__

=== TEST 1: tokenize, reveal, refuse, links, payment and carrier webhooks, the reconciliation export: no card data or key in the logs, the responses or Redis
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_vault_key v1 $TEST_NGINX_CONF_DIR/keys/vault-1;
    psd_vault_key v2 $TEST_NGINX_CONF_DIR/keys/vault-2-hex;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    psd_link_key k2 $TEST_NGINX_CONF_DIR/keys/k2;
    log_format cards '$remote_addr "$request" $status $request_length "$request_body" $psd_card_brand $psd_card_last4 $psd_card_fingerprint "$http_user_agent"';
--- config
    client_body_buffer_size 4k;
    psd_fraud_rule cards_per_ip "distinct($psd_card_fingerprint) by $remote_addr over 1h > 10" block;
    location /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        psd_tokenize_field card.exp expiry;
        psd_tokenize_field card.holder holder;
        psd_fraud on;
        access_log logs/access.log;
        access_log logs/cards.log cards;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT;
    }
    location = /checkout-form {
        psd_tokenize on;
        psd_tokenize_format preserving;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        access_log logs/access.log;
        access_log logs/cards.log cards;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT;
    }
    location = /checkout-idem {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        psd_checkout_session on;
        psd_idempotency on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT;
    }
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_field source.cvc cvv;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
    location /dl/ { psd_link on; psd_link_revocation on; }
    location = /api/issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
    location = /stripe {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe;
    }
    location = /carrier {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/carrier;
        psd_webhook_signature hmac-sha256 X-Carrier-Signature hex;
        psd_webhook_carrier_path order order;
        psd_webhook_carrier_path tracking tracking;
        psd_webhook_carrier_path status status;
        psd_webhook_carrier_path time at;
    }
    location = /recon {
        psd_reconcile on;
        psd_reconcile_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
    location = /metrics { psd_metrics; }
--- user_files
>>> dl/file.txt
the download
--- init
apps();
--- check
my %tok;            # card => [pan token, cvv token]
my $token_of = sub {
    my ($r) = @_;
    my ($t, $c) = ($r->{body} // '') =~ /(?:"number":"|number\]=)([^"&]+)["&].*?(?:"cvc":"|cvc\]=)([^"&]+)/s;
    return ($t, $c);
};

# --- tokenization: JSON, form, chunked
my $r = post('/checkout', qq({"card":{"number":"@{[ spaced('4242424242424242') ]}","cvc":"123","exp":"12/2099","holder":"J Doe"}}));
is $r->{status}, 200, 'JSON, spaced PAN: tokenized';
$tok{4242} = [ $token_of->($r) ];
$r = post('/checkout', '{"card":{"number":"378282246310005","cvc":"1234"}}');
is $r->{status}, 200, 'JSON, amex: tokenized';
$tok{3782} = [ $token_of->($r) ];
$r = post('/checkout-form', 'card[number]=' . dashed('5555555555554444') . '&card[cvc]=123',
          type => 'application/x-www-form-urlencoded');
is $r->{status}, 200, 'form, dashed PAN, preserving: tokenized';
$tok{5555} = [ $token_of->($r) ];
like $tok{5555}[0], qr/^555555\d{6}4444$/, 'a preserving token';
my @chunks = ('{"card":{"number":"41', '111111111111', '11","cvc":"', '123"}}');
$r = send_raw("POST /checkout HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n"
    . "Transfer-Encoding: chunked\r\n\r\n" . join('', map { sprintf("%x\r\n", length) . "$_\r\n" } @chunks) . "0\r\n\r\n");
is $r->{status}, 200, 'chunked JSON: tokenized';
$tok{4111} = [ $token_of->($r) ];
ok 4 == grep({ $_->[0] && $_->[1] } values %tok), 'four cards tokenized, with their CVVs';

# --- a checkout session and an Idempotency-Key: replayed, reused
my $idem = '{"card":{"number":"4242424242424242","cvc":"123"}}';
$r = post('/checkout-idem', $idem, headers => "Idempotency-Key: idem-s1\r\n");
is $r->{status}, 200, 'idempotent checkout: tokenized';
my ($session) = ($r->{body} // '') =~ /^X-PSD-Checkout-Session: (\S+)\r$/mi;
ok $session, 'the application got the checkout session';
$tok{idem} = [ $token_of->($r) ];
$r = post('/checkout-idem', $idem, headers => "Idempotency-Key: idem-s1\r\n");
is $r->{headers}{'idempotent-replayed'}, 'true', 'the same checkout again: replayed';
$r = post('/checkout-idem', '{"card":{"number":"4111111111111111","cvc":"123"}}', headers => "Idempotency-Key: idem-s1\r\n");
is $r->{status}, 422, 'another card under the same Idempotency-Key: 422';
$r = post('/gateway', qq({"source":{"number":"$tok{idem}[0]","cvc":"$tok{idem}[1]"}}),
          headers => "X-PSD-Reveal-Key: $main::REVEAL\r\nX-PSD-Checkout-Session: " . ($session // '') . "\r\n");
is $r->{body}, qq({"ok":true}\n), 'a session-bound token with its session: revealed';
$r = post('/gateway', qq({"source":{"number":"$tok{idem}[0]"}}), headers => "X-PSD-Reveal-Key: $main::REVEAL\r\n");
is $r->{status}, 422, 'a session-bound token without its session: 422';

# --- reveal
$r = post('/gateway', qq({"amount":4900,"source":{"number":"$tok{4242}[0]","cvc":"$tok{4242}[1]"}}),
          headers => "X-PSD-Reveal-Key: $main::REVEAL\r\n");
is $r->{body}, qq({"ok":true}\n), 'reveal: the gateway answered';
$r = post('/gateway', qq({"source":{"number":"$tok{3782}[0]","cvc":"$tok{3782}[1]"}}),
          headers => "X-PSD-Reveal-Key: $main::REVEAL\r\n");
is $r->{body}, qq({"ok":true}\n), 'reveal amex';
$r = post('/gateway', "source[number]=$tok{5555}[0]&source[cvc]=$tok{5555}[1]", type => 'application/x-www-form-urlencoded',
          headers => "X-PSD-Reveal-Key: $main::REVEAL\r\n");
is $r->{body}, qq({"ok":true}\n), 'reveal form';
my $gw = slurp("$ENV{TEST_NGINX_SERVROOT}/gateway.seen");
ok index($gw, '"number":"4242424242424242","cvc":"123"') >= 0
    && index($gw, 'source[number]=5555555555554444&source[cvc]=123') >= 0,
    'control: the gateway did get the cards (and only the gateway)';
$r = post('/gateway', qq({"source":{"number":"$tok{4242}[0]","cvc":"$tok{4242}[1]"}}), headers => "X-PSD-Reveal-Key: $main::REVEAL\r\n");
is $r->{status}, 422, 'the CVV again: cvv_unavailable';
$r = post('/gateway', qq({"source":{"number":"$tok{4111}[0]"}}), headers => "X-PSD-Reveal-Key: not-$main::REVEAL\r\n");
is $r->{status}, 403, 'a wrong reveal key';
$r = post('/gateway', qq({"source":{"number":"$tok{4111}[0]"}}));
is $r->{status}, 403, 'no reveal key';
$r = post('/gateway', '{"source":{"number":"4242424242424242","cvc":"123"}}', headers => "X-PSD-Reveal-Key: $main::REVEAL\r\n");
is $r->{status}, 422, 'a card where a token belongs: not_a_token';
$r = post('/gateway', '{"source":{"number":"tok_AAAAAAAAAAAAAAAAAAAAAAAA","cvc":"123"}}', headers => "X-PSD-Reveal-Key: $main::REVEAL\r\n");
is $r->{status}, 422, 'an unknown token';

# --- refusals, each with card data in the body
my @bad = (
    [ '{"card":{"number":"4242424242424242","cvc":"123"', 400 ],
    [ '{"card":{"number":"4242424242424242","number":"4111111111111111","cvc":"123"}}', 400 ],
    [ '{"card":{"number":"4242424242424242","cvc":"123"},"deep":' . ('[' x 40) . (']' x 40) . '}', 400 ],
    [ qq({"card":{"number":"4242424242424242","cvc":"123"},"memo":"\xff"}), 400 ],
    [ '{"card":{"number":["4242424242424242"],"cvc":"123"}}', 400 ],
    [ '{"card":{"number":"4242424242424241","cvc":"123"}}', 422 ],
    [ '{"card":{"number":"4242424242424242","cvc":"12"}}', 422 ],
    [ '{"card":{"number":"378282246310005","cvc":"123"}}', 422 ],
    [ '{"card":{"number":"4242424242424242","cvc":"123","exp":"01/20"}}', 422 ],
    [ '{"card":{"number":"4242424242424242","cvc":"123","holder":""}}', 422 ],
    [ '{"card":{"number":"4111111111111111","cvc":"123"},"memo":"' . spaced('5555555555554444') . '"}', 422 ],
    [ '{"card":{"number":"4111111111111111","cvc":"123"},"memo":"' . ('m' x 5000) . '"}', 413 ],
);
for my $b (@bad) {
    $r = post('/checkout', $b->[0]);
    is $r->{status}, $b->[1], "refused with $b->[1]: " . substr($b->[0] =~ s/[^\x20-\x7e]/?/gr, 0, 60);
}
$r = post('/checkout', '{"card":{"number":"4242424242424242","cvc":"123"}}', type => 'text/plain');
is $r->{status}, 415, 'text/plain: 415';
$r = post('/checkout-form', 'card[number]=4242424242424242&card[cvc]=123&x=%zz', type => 'application/x-www-form-urlencoded');
is $r->{status}, 400, 'form: bad_encoding';
$r = post('/checkout-form', 'card[number]=4242424242424242&card.number=4242424242424242&card[cvc]=123', type => 'application/x-www-form-urlencoded');
is $r->{status}, 400, 'form: duplicate_field';
$r = get("/checkout?card=$main::QUERY_PAN");
is $r->{status}, 422, 'a card in the query: 422';

# --- Redis stopped: 503 while tokenizing and revealing
redis_stop();
$r = post('/checkout', '{"card":{"number":"4242424242424242","cvc":"123"}}');
my $r2 = post('/gateway', qq({"source":{"number":"$tok{4111}[0]","cvc":"$tok{4111}[1]"}}), headers => "X-PSD-Reveal-Key: $main::REVEAL\r\n");
redis_cont();
is $r->{status}, 503, 'Redis stopped: tokenizing 503';
is $r2->{status}, 503, 'Redis stopped: revealing 503';
ok wait_until(sub { post('/checkout', '{"card":{"number":"4242424242424242","cvc":"123"}}')->{status} == 200 }, 5),
    'Redis back';

# --- a download link, issued and used; a webhook
$r = api_post('/api/issue', '{"path":"/dl/file.txt","ttl":600,"order":"ord-s1","limit":2}');
keep($r);
is $r->{status}, 200, 'link issued';
my $url = json_body($r)->{url} // '';
$r = get($url);
is $r->{body}, "the download\n", 'link used';
$r = get(sign_link(path => '/dl/file.txt', kid => 'k2'));
is $r->{status}, 200, 'a k2 link';
my $ev = JSON::PP->new->canonical->encode({ id => 'evt_s1', object => 'event', type => 'payment_intent.succeeded',
    created => int(time), data => { object => { id => 'pi_s1', object => 'payment_intent', amount => 4900,
    currency => 'eur', metadata => { order_id => 'ord-s1' } } } });
my $t = int time;
$r = post('/stripe', $ev, headers => "Stripe-Signature: t=$t,v1=" . hmac_sha256_hex("$t.$ev", $main::STRIPE) . "\r\n");
is $r->{status}, 200, 'webhook verified';
$r = post('/stripe', $ev, headers => "Stripe-Signature: t=$t,v1=" . ('0' x 64) . "\r\n");
is $r->{status}, 401, 'webhook with a bad signature';
my $cev = qq({"order":"ord-s1","tracking":"TRK1","status":"delivered","at":) . int(time) . '}';
$r = post('/carrier', $cev, headers => 'X-Carrier-Signature: ' . hmac_sha256_hex($cev, $main::CARRIER) . "\r\n");
is $r->{status}, 200, 'carrier webhook verified';
$r = post('/carrier', $cev, headers => 'X-Carrier-Signature: ' . ('0' x 64) . "\r\n");
is $r->{status}, 401, 'carrier webhook with a bad signature';
my $day = do { my @t = gmtime; sprintf '%04d-%02d-%02d', $t[5] + 1900, $t[4] + 1, $t[3] };
$r = get("/recon?from=$day&to=$day&format=csv", "Authorization: Bearer $API_KEY\r\n");
keep($r);
like $r->{body}, qr/^ord-s1,pi_s1,4900,eur,paid,/m, 'the reconciliation export lists the order';
$r = get("/recon?from=$day&to=$day", "Authorization: Bearer not-the-key-000000000000\r\n");
is $r->{status}, 401, 'the export with a wrong key';
is get('/metrics')->{status}, 200, 'metrics';

# ================= the assertions =================
# a request is logged when nginx frees it, which may be just after the response
ok wait_until(sub { slurp("$ENV{TEST_NGINX_SERVROOT}/logs/access.log") =~ m{"GET /metrics HTTP/1\.1" 200 } }, 3),
    'the last request is in the access log';
my @secrets = secrets();
ok scalar(@secrets) > 50, scalar(@secrets) . ' secret spellings';

# --- error.log and stderr
my $log = error_log_text();
my %kinds;          # the excluded nginx core lines, by kind
my $allow_log = sub {
    my ($name, $line) = @_;
    my $core = qr/\[debug\] \d+#\d+: \*\d+ /;
    my $ok = $name eq 'reveal key' && $line =~ /$core(http header: "X-PSD-Reveal-Key): /i
        || $name eq 'API key' && $line =~ /$core(http header: "Authorization): Bearer /
        # nginx core prints the request line, the arguments, and "uri?args"
        # in its filter and finalize lines
        || $name =~ /^PAN \Q$main::QUERY_PAN\E/
           && $line =~ /$core(http (?:request line|args|output filter|copy filter|postpone filter|finalize request))(?::? "GET \/checkout\?card=\Q$main::QUERY_PAN\E HTTP\/1\.1"|: "card=\Q$main::QUERY_PAN\E"|:? (?:0 |-?\d+, )?"\/checkout\?card=\Q$main::QUERY_PAN\E"(?: [0-9A-F]+| a:\d+, c:\d+)?)$/;
    $kinds{$1 =~ s/"//r}++ if $ok;
    return $ok;
};
my @leaks = leaks($log, $allow_log);
ok !@leaks, 'error.log (debug level): no card data, CVV or key outside the excluded nginx core lines'
    or diag join "\n", @leaks[0 .. ($#leaks < 19 ? $#leaks : 19)];
diag "nginx core debug lines excluded: " . join ', ', map { "\"$_\" x$kinds{$_}" } sort keys %kinds;
ok $kinds{'http header: X-PSD-Reveal-Key'}, 'control: nginx core logs the reveal key header at debug level';
ok $kinds{'http request line'} && $kinds{'http args'}, 'control: and a query string with a card';
ok index($log, 'psd_detokenize: 2 field(s) revealed toward the gateway') >= 0, 'control: the reveals are logged';
ok $log =~ /\[error\].*psd_tokenize: vault write failed/, 'control: the 503 is logged';
# nginx core's chunked parser logs every byte it parses as "http chunked
# byte: XX s:N": the chunk-size lines, and (state 4, sw_chunk_data) the
# first data byte of each chunk
my @data_bytes = $log =~ /http chunked byte: ([0-9A-F]{2}) s:4$/mg;
is scalar @data_bytes, 4, 'nginx core logged one data byte of each of the 4 chunks ("http chunked byte: XX s:4")';
my $chunked = join '', map { chr hex } $log =~ /http chunked byte: ([0-9A-F]{2}) s:/g;
ok !grep({ index($chunked, $_) >= 0 } @main::PANS), 'the bytes of "http chunked byte" lines hold no card number';
# nginx core logs no request or response body: unique bytes of bodies
# (the holder's name, a memo, a token the application echoed) are absent
ok index($log, 'J Doe') < 0 && index($log, 'm' x 64) < 0 && index($log, $tok{4242}[0] // 'none') < 0,
    'nginx core logs no body bytes at debug level (sizes and pointers only)';
my $stderr = slurp("$ENV{TEST_NGINX_SERVROOT}/logs/stderr.log");
@leaks = leaks($stderr);
ok !@leaks, 'stderr: nothing' or diag join "\n", @leaks;

# --- access logs
my $access = slurp("$ENV{TEST_NGINX_SERVROOT}/logs/access.log");
my $cards = slurp("$ENV{TEST_NGINX_SERVROOT}/logs/cards.log");
ok $cards =~ /"\{\\x22card\\x22:\{\\x22number\\x22:\\x22tok_\w{24}\\x22/, 'control: cards.log has the tokenized $request_body';
my $allow_access = sub {
    my ($name, $line) = @_;
    return $name =~ /^PAN \Q$main::QUERY_PAN\E/ && $line =~ /"GET \/checkout\?card=\Q$main::QUERY_PAN\E HTTP\/1\.1" 422 /;
};
for my $f (['access.log', $access], ['cards.log', $cards]) {
    my @l = leaks($f->[1], $allow_access);
    ok !@l, "$f->[0]: no card data, CVV or key (but a card in a query string)" or diag join "\n", @l[0 .. ($#l < 9 ? $#l : 9)];
}
ok $access =~ /"GET \/checkout\?card=\Q$main::QUERY_PAN\E HTTP\/1\.1" 422 /,
    'control: nginx core logs a card sent in the query string in the access log ($request)';

# --- every response
my @resp_leaks;
for my $x (responses()) {
    push @resp_leaks, leaks($x->{raw} // '');
}
ok !@resp_leaks, 'no response (application echoes included) holds card data, a CVV or a key'
    or diag join "\n", @resp_leaks[0 .. ($#resp_leaks < 9 ? $#resp_leaks : 9)];

# --- Redis
my @dump = redis_dump();
ok scalar(@dump) > 5, scalar(@dump) . ' Redis keys';
my (@redis_leaks, @not_sealed, %vault);
for my $e (@dump) {
    my ($k, $type, $v) = @$e;
    my @vals = flat($v);
    for my $s (@secrets) {
        push @redis_leaks, "$s->[0] in key name $k" if index($k, $s->[1]) >= 0;
        push @redis_leaks, "$s->[0] in $type $k" if grep { index($_, $s->[1]) >= 0 } @vals;
    }
    for my $c (@main::CVVS) {
        push @redis_leaks, "CVV $c as a value of $type $k" if grep { $_ eq $c } @vals;
    }
    if (my ($kind) = $k =~ /^psd:\{(tok|cvv):[^}]*\}$/) {
        # a token of a checkout session: "<session>|<envelope>"
        my $env = $type eq 'string' ? envelope(($v->[0] // '') =~ s/^[A-Za-z0-9_-]{22}\|//r) : undef;
        my $ok = $env && $env->{version} == 1 && $env->{kid} eq 'v2'
            && ($kind eq 'tok' ? $env->{ct_len} >= 15 && $env->{ct_len} <= 16 : $env->{ct_len} >= 3 && $env->{ct_len} <= 4);
        push @not_sealed, "$k: " . ($v->[0] // 'undef') unless $ok;
        $vault{$kind}++;
    }
}
ok !@redis_leaks, 'Redis: no card data, CVV or key in any key or value'
    or diag join "\n", @redis_leaks[0 .. ($#redis_leaks < 9 ? $#redis_leaks : 9)];
ok !@not_sealed, 'Redis: every vault entry is a sealed envelope (v1, kid v2, the card\'s length)'
    or diag join "\n", @not_sealed;
ok $vault{tok} >= 5 && $vault{cvv} >= 2, "control: the vault has cards ($vault{tok}) and CVVs ($vault{cvv})";
ok scalar(grep { $_->[0] =~ /^psd:\{order:ord-s1\}/ } @dump), 'control: the webhook wrote the order';
ok scalar(grep { $_->[0] =~ /^psd:\{fr:/ } @dump), 'control: the fraud rule wrote its counters';
ok scalar(grep { $_->[0] =~ /^psd:\{idem:/ } @dump), 'control: the stored idempotent response is in Redis';
ok scalar(grep { $_->[0] =~ /^psd:\{cs:/ } @dump), 'control: the checkout session is in Redis';
--- no_error_log
[crit]



=== TEST 2: a refused request leaves no card data behind: $request_body in the access log holds none
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_vault_key v1 $TEST_NGINX_CONF_DIR/keys/vault-1;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
    log_format body '$status "$request_body"';
--- config
    client_body_buffer_size 4k;
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        access_log logs/body.log body;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT;
    }
--- init
apps();
--- check
my $card = '{"card":{"number":"4242424242424242","cvc":"123"}';
my @cases = ([ "$card}", 200, 'accepted' ], [ $card, 400, 'invalid JSON' ],
             [ '{"card":{"number":"4242424242424242","cvc":"12"}}', 422, 'a bad CVV' ],
             [ "$card,\"memo\":\"" . ('m' x 5000) . '"}', 413, 'too large' ]);
for my $c (@cases) {
    is post('/checkout', $c->[0])->{status}, $c->[1], "$c->[2]: $c->[1]";
}
is post('/checkout', "$card}", type => 'text/plain')->{status}, 415, 'text/plain: 415';
redis_stop();
is post('/checkout', "$card}")->{status}, 503, 'Redis stopped: 503';
redis_cont();
# a request is logged when nginx frees it, which may be just after the response
my @lines;
wait_until(sub { @lines = split /\n/, slurp("$ENV{TEST_NGINX_SERVROOT}/logs/body.log"); @lines >= 6 }, 3);
is scalar @lines, 6, 'six requests logged';
for my $l (@lines) {
    my ($status) = $l =~ /^(\d+)/;
    my @hits = grep { index($l, $_) >= 0 } '4242424242424242', '\x22cvc\x22:\x22123\x22', '\x22cvc\x22:\x2212\x22';
    ok !@hits, "status $status: \$request_body holds no card data" or diag substr($l, 0, 200);
}
--- no_error_log
[crit]
