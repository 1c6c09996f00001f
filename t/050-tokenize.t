# psd_tokenize: card fields become tokens before the request reaches the
# application.  The application is an echo server (a fake_redis_start
# handler speaking HTTP) that answers every request with the exact bytes it
# received, so each test proves what the application saw: tokens in place of
# the PAN and CVV, every other byte identical, a correct Content-Length and
# the X-PSD-Card-* headers, and never a Luhn-valid card number.
#
# Also: forms, chunked bodies, wildcard and array paths, the preserving
# format, every refusal (400/413/415/422/503) with the application never
# reached and nothing written to the vault, the safety net in the body and
# the query string, the memory-only body (413, no client_body_temp file),
# Redis failures (down, stopped, -OOM, -READONLY), client X-PSD-* headers
# (renamed X-Client-X-PSD-*),
# $psd_card_* in a fraud rule and a log format, internal redirects, bodies
# on other methods, psd_tokenize_redis, and nginx -t errors.
#
# Blocks compare metrics as deltas, so the file also passes with
# TEST_NGINX_USE_HUP=1.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Echo;    # echo_app, seen
use PsdTest::Link qw(write_key_file json_body wait_until b64url);
use Digest::SHA qw(sha256 hmac_sha256);
use MIME::Base64 qw(decode_base64);
use IO::Socket::IP;
use IO::Select;
use Time::HiRes qw(time sleep);

# Key files.  Binary keys never end in "\n" or "\r" (the module strips those).
our $VAULT_A = sha256('psd tokenize test: vault key a');
our $FP_KEY = sha256('psd tokenize test: fingerprint key');
die "a test key ends in a newline\n" if grep { /[\r\n]\z/ } $VAULT_A, $FP_KEY;
write_key_file('vault-a', $VAULT_A);
write_key_file('vault-a-nl', "$VAULT_A\n");                 # an editor's newline
write_key_file('vault-a-hex', unpack('H*', $VAULT_A) . "\n");
write_key_file('vault-31', substr $VAULT_A, 0, 31);
write_key_file('vault-33', "${VAULT_A}x");
write_key_file('vault-hex-bad', ('0123456789abcdeg' x 4) . "\n");
write_key_file('vault-trailing', $VAULT_A . ("\n" x 34) . 'this is not part of a 32-byte key');
write_key_file('fp', $FP_KEY);
write_key_file('fp-15', 'fifteen-bytes!!');
write_key_file('fp-257', 'f' x 257);

our @PANS = qw(4242424242424242 4111111111111111 5555555555554444
    378282246310005 6011111111111117);

sub post {
    my ($path, $body, %o) = @_;
    my $ct = exists $o{type} ? $o{type} : 'application/json';
    return http_request("POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . (defined $ct ? "Content-Type: $ct\r\n" : '') . ($o{headers} // '')
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body");
}
sub post_form { post($_[0], $_[1], type => 'application/x-www-form-urlencoded', @_[2 .. $#_]) }

sub luhn {
    my ($sum, $alt) = (0, 0);
    for my $d (reverse split //, $_[0]) {
        if ($alt) { $d *= 2; $d -= 9 if $d > 9 }
        $sum += $d;
        $alt = !$alt;
    }
    return $sum % 10 == 0;
}

# Card numbers in $text: a span of consecutive digit groups (joined by one
# space, dash, '+' or "%20") with 13 to 19 digits that passes Luhn.
sub card_runs {
    my ($text) = @_;
    my @found;
    while ($text =~ /(\d+(?:(?:[ +-]|%20)\d+)*)/g) {
        my @g = map { s/\D//gr } split /[ +-]|%20/, $1;
        for my $i (0 .. $#g) {
            my $d = '';
            for my $j ($i .. $#g) {
                $d .= $g[$j];
                last if length $d > 19;
                push @found, $d if length $d >= 13 && luhn($d);
            }
        }
    }
    return @found;
}

# the test PANs in every spelling a body could hold
sub pan_spellings {
    return map { my $p = $_; ($p, join(' ', $p =~ /(\d{1,4})/g), join('-', $p =~ /(\d{1,4})/g)) } @PANS;
}
sub test_pans { @PANS }

# ok() that $text holds no card number and none of the test PANs
sub no_card {
    my ($text, $name) = @_;
    my @hits = (card_runs($text), grep { index($text, $_) >= 0 } pan_spellings());
    ok !@hits, "$name: no card number" or diag "found: @hits";
}

sub fp_of { 'fp_' . b64url(hmac_sha256($_[0] =~ s/\D//gr, $FP_KEY)) }

# the parts of a vault envelope: version, kid, ciphertext length (without
# nonce and tag); undef when it is not one
sub envelope {
    my ($v) = @_;
    return undef unless defined $v && $v =~ /^[A-Za-z0-9_-]+$/;
    (my $b = $v) =~ tr{-_}{+/};
    my $bin = decode_base64($b . '=' x ((4 - length($b) % 4) % 4));
    my ($ver, $n) = unpack 'CC', $bin;
    return undef unless $n && length($bin) >= 2 + $n + 28;
    return { version => $ver, kid => substr($bin, 2, $n), ct_len => length($bin) - 2 - $n - 28 };
}

sub metric {
    my ($row) = @_;
    return http_get('/metrics')->{body} =~ /^\Q$row\E (\d+)$/m ? $1 : 0;
}
sub tok_metric { metric(qq{psd_tokenize_requests_total{result="$_[0]"}}) }

sub vault_keys { sort @{ redis_cmd('KEYS', 'psd:{*') } }
sub vault_count { my @k = vault_keys(); scalar @k }

# an HTTP request whose bytes go out in pieces, $pause seconds apart;
# returns the response (error => 'timeout' when nginx never closes)
sub slow_request {
    my ($pieces, $pause, $timeout) = @_;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', Proto => 'tcp',
        PeerPort => $ENV{TEST_NGINX_SERVER_PORT}) or die "connect: $@";
    for my $i (0 .. $#$pieces) {
        sleep $pause if $i;
        syswrite $s, $pieces->[$i];
    }
    my ($raw, $sel, $closed) = ('', IO::Select->new($s), 0);
    for (my $end = time + $timeout; time < $end; ) {
        last unless $sel->can_read($end - time);
        my $n = sysread $s, $raw, 65536, length $raw;
        if (!$n) { $closed = 1; last }
    }
    my ($r) = PsdTest::HTTP::parse_response($raw);
    $r->{error} = 'timeout' unless $closed;
    return $r;
}

sub temp_files { my @f = glob "$ENV{TEST_NGINX_SERVROOT}/tmp/client_body/*"; scalar @f }

run_tests();

__DATA__

=== TEST 1: JSON: PAN and CVV become tokens, every other byte passes, headers and variables for the application
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        psd_tokenize_field card.exp expiry;
        psd_tokenize_field card.holder holder;
        add_header X-Brand $psd_card_brand;
        add_header X-Last4 $psd_card_last4;
        add_header X-Fp $psd_card_fingerprint;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
    location = /metrics { psd_metrics; }
--- init
echo_app();
--- check
my $ok0 = tok_metric('ok');
my $tpl = qq({"order":"o-1", "amount" : 4900,\n "card":{"number":"%s","cvc":"%s","exp":"12/2099","holder":"Zo\\u00eb \\"Z\\" Doe"},\n "memo":"2 items, ref 12345", "tags":[1,2.5e3,true,null]});
my $body = sprintf $tpl, '4242424242424242', '123';
my $r = post('/checkout', $body);
is $r->{status}, 200, 'tokenized request reached the application';
my $s = seen($r) or return fail 'no echo';
my ($pan_tok, $cvv_tok) = $s->{body} =~ /"number":"([^"]*)","cvc":"([^"]*)"/;
like $pan_tok, qr/^tok_[0-9A-Za-z]{24}$/, 'PAN token: tok_ + 24 base62';
like $cvv_tok, qr/^tok_[0-9A-Za-z]{24}$/, 'CVV token: tok_ + 24 base62';
isnt $pan_tok, $cvv_tok, 'two different tokens';
is $s->{body}, sprintf($tpl, $pan_tok, $cvv_tok), 'every other byte is identical';
no_card($s->{body}, 'application body');
unlike $s->{body}, qr/"cvc":"123"/, 'the CVV is gone';
is $s->{h}{'content-length'}, length $s->{body}, 'Content-Length of the rewritten body';
is $s->{h}{'x-psd-card-brand'}, 'visa', 'X-PSD-Card-Brand';
is $s->{h}{'x-psd-card-last4'}, '4242', 'X-PSD-Card-Last4';
is $s->{h}{'x-psd-card-fingerprint'}, fp_of('4242424242424242'),
    'X-PSD-Card-Fingerprint = fp_ + base64url(HMAC-SHA256(fingerprint key, PAN))';
is $r->{headers}{'x-brand'}, 'visa', '$psd_card_brand';
is $r->{headers}{'x-last4'}, '4242', '$psd_card_last4';
is $r->{headers}{'x-fp'}, fp_of('4242424242424242'), '$psd_card_fingerprint';
is_deeply [vault_keys()], [sort "psd:{tok:$pan_tok}", "psd:{cvv:$cvv_tok}"],
    'the vault holds the PAN under psd:{tok:<token>} and the CVV under psd:{cvv:<token>}';
my $pttl = redis_cmd('TTL', "psd:{tok:$pan_tok}");
my $cttl = redis_cmd('TTL', "psd:{cvv:$cvv_tok}");
ok $pttl > 3590 && $pttl <= 3600, "PAN kept for psd_vault_ttl (1h by default): $pttl";
ok $cttl > 590 && $cttl <= 600, "CVV kept for psd_vault_cvv_ttl (10m by default): $cttl";
my $pe = envelope(redis_cmd('GET', "psd:{tok:$pan_tok}"));
my $ce = envelope(redis_cmd('GET', "psd:{cvv:$cvv_tok}"));
is_deeply $pe, { version => 1, kid => 'a', ct_len => 16 }, 'PAN: a sealed envelope (v1, kid a, 16 bytes)';
is_deeply $ce, { version => 1, kid => 'a', ct_len => 3 }, 'CVV: a sealed envelope (v1, kid a, 3 bytes)';

# the same card again: a new token, the same fingerprint
$r = post('/checkout', sprintf $tpl, '4242 4242 4242 4242', '123');
$s = seen($r) or return fail 'no echo (2)';
my ($pan_tok2) = $s->{body} =~ /"number":"([^"]*)"/;
isnt $pan_tok2, $pan_tok, 'a new token for every tokenization';
is $s->{h}{'x-psd-card-fingerprint'}, fp_of('4242424242424242'), 'the fingerprint is stable across spellings';
no_card($s->{body}, 'spaced PAN');
is tok_metric('ok') - $ok0, 2, 'psd_tokenize_requests_total{result="ok"} +2';
--- no_error_log
[error]
[warn]



=== TEST 2: forms: card[number] and card.number, spaces, dashes and %-escapes; other bytes identical
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        psd_tokenize_field card.exp expiry;
        psd_tokenize_field card.holder holder;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
--- init
echo_app();
--- check
my @cases = (
    [ 'amount=4900&card[number]=%s&card[cvc]=%s&card[exp]=12%%2F2099&card[holder]=Jane+O%%27Doe&note=a%%26b+c',
      '4111+1111+1111+1111', '123', '4111111111111111', 'visa' ],
    [ 'card.number=%s&card.cvc=%s&card.exp=1299&x=1', '5555-5555-5555-4444', '123', '5555555555554444', 'mastercard' ],
    [ 'card%%5Bnumber%%5D=%s&card%%5Bcvc%%5D=%s', '3782%%208224%%206310005', '1234', '378282246310005', 'amex' ],
    [ 'card[number]=%s&card[cvc]=%s', '6011111111111117', '123', '6011111111111117', 'discover' ],
);
for my $c (@cases) {
    my ($tpl, $pan_raw, $cvv, $pan, $brand) = @$c;
    my $body = sprintf $tpl, $pan_raw, $cvv;
    $body =~ s/%%/%/g;
    my $r = post_form('/checkout', $body);
    is $r->{status}, 200, "$brand form: reached the application";
    my $s = seen($r) or next;
    my ($t1, $t2) = $s->{body} =~ /(tok_[0-9A-Za-z]{24}).*?(tok_[0-9A-Za-z]{24})/;
    ok $t1 && $t2 && $t1 ne $t2, "$brand form: two tokens";
    (my $want = sprintf $tpl, $t1 // '', $t2 // '') =~ s/%%/%/g;
    is $s->{body}, $want, "$brand form: tokens in place, every other byte identical";
    no_card($s->{body}, "$brand form");
    is $s->{h}{'content-length'}, length $s->{body}, "$brand form: Content-Length";
    is $s->{h}{'x-psd-card-brand'}, $brand, "$brand form: brand";
    is $s->{h}{'x-psd-card-last4'}, substr($pan, -4), "$brand form: last4";
    is $s->{h}{'x-psd-card-fingerprint'}, fp_of($pan), "$brand form: fingerprint";
    is envelope(redis_cmd('GET', "psd:{tok:$t1}"))->{ct_len}, length $pan,
        "$brand form: the vault holds the normalized digits";
    is envelope(redis_cmd('GET', "psd:{cvv:$t2}"))->{ct_len}, length $cvv, "$brand form: CVV sealed";
}
--- no_error_log
[error]



=== TEST 3: chunked request bodies (JSON and form, the PAN split across chunks)
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
--- init
echo_app();
--- check
my $chunked = sub {
    my ($type, @chunks) = @_;
    return "POST /checkout HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . "Content-Type: $type\r\nTransfer-Encoding: chunked\r\n\r\n"
        . join('', map { sprintf("%x\r\n", length) . "$_\r\n" } @chunks) . "0\r\n\r\n";
};
my $r = http_request($chunked->('application/json', '{"card":{"number":"4242', '42424242', '4242","cvc":"1',
                                '23"},"memo":"chunked"}'));
is $r->{status}, 200, 'chunked JSON: reached the application';
my $s = seen($r) or return fail 'no echo';
like $s->{body}, qr/^\{"card":\{"number":"tok_[0-9A-Za-z]{24}","cvc":"tok_[0-9A-Za-z]{24}"\},"memo":"chunked"\}$/,
    'chunked JSON: tokenized';
no_card($s->{body}, 'chunked JSON');
is $s->{h}{'content-length'}, length $s->{body}, 'chunked JSON: the application gets a Content-Length';
ok !exists $s->{h}{'transfer-encoding'}, 'chunked JSON: and no Transfer-Encoding';
is $s->{h}{'x-psd-card-last4'}, '4242', 'chunked JSON: last4';

$r = http_request($chunked->('application/x-www-form-urlencoded', 'card[number]=5555+55', '55+5555+4444&card[cvc]=123'));
is $r->{status}, 200, 'chunked form: reached the application';
$s = seen($r) or return fail 'no echo (form)';
like $s->{body}, qr/^card\[number\]=tok_[0-9A-Za-z]{24}&card\[cvc\]=tok_[0-9A-Za-z]{24}$/, 'chunked form: tokenized';
is $s->{h}{'content-length'}, length $s->{body}, 'chunked form: Content-Length';
is $s->{h}{'x-psd-card-brand'}, 'mastercard', 'chunked form: brand';

# a card outside the fields, split across chunks, is still found
$r = http_request($chunked->('application/json', '{"memo":"4242 4242 ', '4242 4242"}'));
is $r->{status}, 422, 'chunked: the safety net sees the whole body';
is $r->{body}, qq({"error":"unexpected_card_number"}\n), 'chunked: unexpected_card_number';
--- no_error_log
[error]



=== TEST 4: wildcard and array paths, several cards, JSON keys written with escapes
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field cards.*.number pan;
        psd_tokenize_field cards.*.cvc cvv;
        psd_tokenize_field items.0.pan pan;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
--- init
echo_app();
--- check
my $tpl = '{"cards":[{"number":"%s","cvc":"%s"},{"number":"%s","name":"b","cvc":"%s"}],'
    . '"items":[{"pan":"%s"},{"pan":"sku-2"}],"total":1}';
my $r = post('/checkout', sprintf $tpl, '5555555555554444', '123', '378282246310005', '1234', '6011111111111117');
is $r->{status}, 200, 'three cards: reached the application';
my $s = seen($r) or return fail 'no echo';
my @t = $s->{body} =~ /"(tok_[0-9A-Za-z]{24})"/g;
is scalar @t, 5, 'five tokens (three PANs, two CVVs)';
is $s->{body}, sprintf($tpl, @t), 'tokens in place, every other byte identical (items.1.pan untouched)';
no_card($s->{body}, 'three cards');
is $s->{h}{'x-psd-card-brand'}, 'mastercard', 'headers describe the first card';
is $s->{h}{'x-psd-card-last4'}, '4444', 'last4 of the first card';
is_deeply [vault_keys()], [sort map({ "psd:{tok:$_}" } @t[0, 2, 4]), map({ "psd:{cvv:$_}" } @t[1, 3])],
    'three PANs and two CVVs in the vault';
is envelope(redis_cmd('GET', "psd:{tok:$t[2]}"))->{ct_len}, 15, 'the amex card: 15 digits';
is envelope(redis_cmd('GET', "psd:{cvv:$t[3]}"))->{ct_len}, 4, 'the amex CVV: 4 digits';

# an object key "0" matches items.0 too; escaped keys are decoded
$r = post('/checkout', '{"items":{"0":{"pan":"4111111111111111"}},"c\u0061rds":[{"n\u0075mber":"4242424242424242"}]}');
$s = seen($r) or return fail 'no echo (2)';
like $s->{body}, qr/^\{"items":\{"0":\{"pan":"tok_\w{24}"\}\},"c\\u0061rds":\[\{"n\\u0075mber":"tok_\w{24}"\}\]\}$/,
    'key "0" and escaped key names: tokenized';
is $s->{h}{'x-psd-card-last4'}, '1111', 'the first card in the body is items.0.pan';

# forms: cards[0][number], cards[1][number], items[0][pan]
$r = post_form('/checkout', 'cards[0][number]=4242424242424242&cards[0][cvc]=123&cards[1][number]=4111111111111111'
    . '&items[0][pan]=5555555555554444&items[1][sku]=2');
$s = seen($r) or return fail 'no echo (form)';
like $s->{body}, qr/^cards\[0\]\[number\]=tok_\w{24}&cards\[0\]\[cvc\]=tok_\w{24}&cards\[1\]\[number\]=tok_\w{24}&items\[0\]\[pan\]=tok_\w{24}&items\[1\]\[sku\]=2$/,
    'form with indexes: every card tokenized';
--- no_error_log
[error]



=== TEST 5: psd_tokenize_format preserving: first six and last four kept, Luhn fails, the safety net stays quiet
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_format preserving;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
--- init
echo_app();
--- check
for my $pan (test_pans()) {
    my $cvv = length $pan == 15 ? '1234' : '123';
    my $r = post('/checkout', qq({"card":{"number":"$pan","cvc":"$cvv"}}));
    is $r->{status}, 200, "$pan: reached the application";
    my $s = seen($r) or next;
    my ($tok, $ctok) = $s->{body} =~ /^\{"card":\{"number":"(\d+)","cvc":"(tok_[0-9A-Za-z]{24})"\}\}$/;
    ok defined $tok, "$pan: a digit token in a JSON string, the CVV a random token" or next;
    is length $tok, length $pan, "$pan: same length";
    is substr($tok, 0, 6), substr($pan, 0, 6), "$pan: first six kept";
    is substr($tok, -4), substr($pan, -4), "$pan: last four kept";
    isnt $tok, $pan, "$pan: not the card";
    ok !luhn($tok), "$pan: the token fails Luhn";
    ok redis_cmd('EXISTS', "psd:{tok:$tok}"), "$pan: vault key psd:{tok:<digits>}";
}
my $r = post_form('/checkout', 'card[number]=4242+4242+4242+4242&memo=x');
my $s = seen($r);
like $s && $s->{body}, qr/^card\[number\]=424242\d{6}4242&memo=x$/, 'form: a preserving token';
--- no_error_log
[error]



=== TEST 6: bad JSON is refused with 400 and a field; nothing reaches the application or the vault
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
    location = /metrics { psd_metrics; }
--- init
echo_app();
--- check
my $rej0 = tok_metric('rejected');
my $deep = '{"a":' . ('[' x 40) . (']' x 40) . '}';
my @cases = (
    [ '{"card":{"number":"4242424242424242"', 'invalid_json', 'card.number' ],
    [ '{"card":{"number":"4242424242424242"}} x', 'invalid_json' ],
    [ "{\"card\":{\"number\":\"4242424242424242\",\n\"cvc\":'123'}}", 'invalid_json', 'card.cvc' ],
    [ '{"card":{"number":"4242424242424242","number":"4111111111111111"}}', 'duplicate_key', 'card.number' ],
    [ '{"card":{"number":"4242424242424242","n\u0075mber":"4111111111111111"}}', 'duplicate_key', 'card.number' ],
    [ $deep, 'too_deep', 'a' . '.0' x 31 ],
    [ '[{"card":{"number":"4242424242424242"}}]', 'not_an_object' ],
    [ '"4242424242424242"', 'not_an_object' ],
    [ qq({"card":{"number":"4242424242424242"},"memo":"\xff"}), 'invalid_utf8', 'memo' ],
    [ qq({"card":{"number":"4242424242424242"},"memo":"\xc0\xaf"}), 'invalid_utf8', 'memo' ],
    [ '{"card":{"number":{"digits":"4242424242424242"}}}', 'invalid_field_type', 'card.number' ],
    [ '{"card":{"number":["4242424242424242"]}}', 'invalid_field_type', 'card.number' ],
    [ '{"card":{"number":true}}', 'invalid_field_type', 'card.number' ],
    [ '{"card":{"number":null}}', 'invalid_field_type', 'card.number' ],
    [ '{"card":{"number":"4242424242424242","cvc":{"v":"123"}}}', 'invalid_field_type', 'card.cvc' ],
);
for my $c (@cases) {
    my ($body, $err, $field) = @$c;
    my $r = post('/checkout', $body);
    my $name = "$err: " . substr($body =~ s/[^\x20-\x7e]/?/gr, 0, 50);
    is $r->{status}, 400, "$name: 400";
    is $r->{body}, '{"error":"' . $err . '"' . (defined $field ? qq(,"field":"$field") : '') . "}\n",
        "$name: body";
    is $r->{headers}{'content-type'}, 'application/json', "$name: JSON";
    ok !$r->{headers}{'x-echo'}, "$name: the application was not reached";
}
is vault_count(), 0, 'nothing was written to the vault';
is tok_metric('rejected') - $rej0, scalar @cases, 'psd_tokenize_requests_total{result="rejected"} counts them';
--- no_error_log
[error]



=== TEST 7: bad card data is refused with 422 and the field, never echoed
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        psd_tokenize_field card.exp expiry;
        psd_tokenize_field card.holder holder;
        psd_tokenize_field cards.*.number pan;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
--- init
echo_app();
--- check
my $card = sub { '{"card":{' . join(',', map { qq("$_->[0]":$_->[1]) } @_) . '}}' };
my $pan = [ 'number', '"4242424242424242"' ];
my @cases = (
    [ $card->(['number', '"4242424242424241"']), 'luhn_failed', 'card.number' ],
    [ $card->(['number', '"4242 4242 4242 4241"']), 'luhn_failed', 'card.number' ],
    [ $card->(['number', '4242424242424241']), 'luhn_failed', 'card.number' ],
    [ $card->(['number', '"4242-4242-abcd-4242"']), 'invalid_card_number', 'card.number' ],
    [ $card->(['number', '"4242.4242.4242.4242"']), 'invalid_card_number', 'card.number' ],
    [ $card->(['number', '"4242"']), 'invalid_card_number', 'card.number' ],
    [ $card->(['number', '""']), 'invalid_card_number', 'card.number' ],
    [ $card->(['number', '"42424242424242424242"']), 'invalid_card_number', 'card.number' ],
    [ $card->(['number', '"424242424242424"']), 'invalid_card_number', 'card.number' ],    # visa: 13, 16, 19
    [ $card->(['number', '"37828224631000"']), 'invalid_card_number', 'card.number' ],     # amex: 15
    [ '{"cards":[{"number":"4242424242424242"},{"number":"4111111111111112"}]}', 'luhn_failed', 'cards.1.number' ],
    [ $card->($pan, ['cvc', '"12"']), 'invalid_cvv', 'card.cvc' ],
    [ $card->($pan, ['cvc', '"12a"']), 'invalid_cvv', 'card.cvc' ],
    [ $card->($pan, ['cvc', '""']), 'invalid_cvv', 'card.cvc' ],
    [ $card->($pan, ['cvc', '"12345"']), 'invalid_cvv', 'card.cvc' ],
    [ $card->($pan, ['cvc', '"1234"']), 'invalid_cvv', 'card.cvc' ],                     # visa: 3
    [ $card->(['number', '"378282246310005"'], ['cvc', '"123"']), 'invalid_cvv', 'card.cvc' ],  # amex: 4
    [ $card->($pan, ['exp', '"13/30"']), 'invalid_expiry', 'card.exp' ],
    [ $card->($pan, ['exp', '"00/30"']), 'invalid_expiry', 'card.exp' ],
    [ $card->($pan, ['exp', '"12-30"']), 'invalid_expiry', 'card.exp' ],
    [ $card->($pan, ['exp', '"12/1999"']), 'invalid_expiry', 'card.exp' ],
    [ $card->($pan, ['exp', '"soon"']), 'invalid_expiry', 'card.exp' ],
    [ $card->($pan, ['exp', '"01/20"']), 'card_expired', 'card.exp' ],
    [ $card->($pan, ['exp', '"12/2021"']), 'card_expired', 'card.exp' ],
    [ $card->($pan, ['holder', '""']), 'invalid_holder', 'card.holder' ],
    [ $card->($pan, ['holder', '"' . ('x' x 129) . '"']), 'invalid_holder', 'card.holder' ],
);
for my $c (@cases) {
    my ($body, $err, $field) = @$c;
    my $r = post('/checkout', $body);
    my $name = "$err: " . substr($body, 0, 60);
    is $r->{status}, 422, "$name: 422";
    is $r->{body}, qq({"error":"$err","field":"$field"}\n), "$name: body";
    ok !$r->{headers}{'x-echo'}, "$name: the application was not reached";
}
is vault_count(), 0, 'nothing was written to the vault';

# the limits that pass
for my $ok ($card->($pan, ['exp', '"1299"'], ['holder', '"' . ('x' x 128) . '"']),
            $card->($pan, ['exp', '"12/99"']), $card->(['number', '"4222222222222"']),
            $card->(['number', '4242424242424242'], ['cvc', '123'])) {
    my $r = post('/checkout', $ok);
    is $r->{status}, 200, 'accepted: ' . substr($ok, 0, 60);
    my $s = seen($r);
    no_card($s ? $s->{body} : '', 'accepted: ' . substr($ok, 0, 40));
}
--- no_error_log
[error]



=== TEST 8: forms: bad encoding, duplicate fields, bad cards; content types; empty body
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
--- init
echo_app();
--- check
my @forms = (
    [ 'card[number]=4242424242424242&x=%zz', 400, 'bad_encoding' ],
    [ 'card[number]=4242424242424242&x=%4', 400, 'bad_encoding' ],
    [ 'card[number]=4242424242424242&card.number=4111111111111111', 400, 'duplicate_field', 'card.number' ],
    [ 'card[number]=4242424242424242&card[number]=4242424242424242', 400, 'duplicate_field', 'card.number' ],
    [ 'card[number]=4242424242424241', 422, 'luhn_failed', 'card.number' ],
    [ 'card[number]=4242424242424242&card[cvc]=12', 422, 'invalid_cvv', 'card.cvc' ],
);
for my $c (@forms) {
    my ($body, $status, $err, $field) = @$c;
    my $r = post_form('/checkout', $body);
    is $r->{status}, $status, "form $body: $status";
    is $r->{body}, qq({"error":"$err") . (defined $field ? qq(,"field":"$field") : '') . "}\n",
        "form $body: $err";
}
my $card = '{"card":{"number":"4242424242424242"}}';
for my $t ('text/plain', undef, 'multipart/form-data; boundary=x', 'application/xml', 'text/json') {
    my $r = post('/checkout', $card, type => $t);
    my $name = 'Content-Type ' . ($t // 'absent');
    is $r->{status}, 415, "$name: 415";
    is $r->{body}, qq({"error":"unsupported_media_type"}\n), "$name: unsupported_media_type";
}
for my $t ('application/json; charset=utf-8', 'Application/JSON', 'application/x-www-form-urlencoded; charset=UTF-8') {
    my $body = $t =~ /form/ ? 'card[number]=4242424242424242' : $card;
    my $r = post('/checkout', $body, type => $t);
    is $r->{status}, 200, "Content-Type $t: accepted";
    my $s = seen($r);
    like $s && $s->{body}, qr/tok_\w{24}/, "Content-Type $t: tokenized";
}
my $r = post('/checkout', '');
is $r->{status}, 400, 'empty body: 400';
is $r->{body}, qq({"error":"empty_body"}\n), 'empty body: empty_body';
$r = http_get('/checkout');
ok $r->{headers}{'x-echo'}, 'GET without a body goes on to the application';
is vault_count(), 3, 'only the three accepted requests wrote to the vault';
--- no_error_log
[error]



=== TEST 9: the safety net: a card outside the named fields, in the body or the query string, is refused
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT;
    }
    location = /metrics { psd_metrics; }
--- init
echo_app();
--- check
my $rej0 = tok_metric('rejected');
my $n = 0;
for my $b ('{"memo":"my card is 4242424242424242"}',
           '{"memo":"4242 4242 4242 4242"}',
           '{"memo":"4242-4242-4242-4242 123"}',
           '{"card":{"number":"4111111111111111"},"backup":"5555555555554444"}',
           '{"card":{"number":"4111111111111111"},"backup":5555555555554444}',
           '{"4242424242424242":"as a key"}',
           '{"items":[{"pan":"378282246310005"}]}',
           '{"n":"6011 1111 1111 1117"}') {
    my $r = post('/checkout', $b);
    is $r->{status}, 422, "422: $b";
    is $r->{body}, qq({"error":"unexpected_card_number"}\n), "unexpected_card_number: $b";
    $n++;
}
for my $b ('card[number]=4111111111111111&note=4242+4242+4242+4242',
           'note=4242%204242%204242%204242', 'pan=5555555555554444') {
    my $r = post_form('/checkout', $b);
    is $r->{status}, 422, "422: form $b";
    is $r->{body}, qq({"error":"unexpected_card_number"}\n), "unexpected_card_number: form $b";
    $n++;
}
# in the query string, with or without a body
my $r = post('/checkout?pan=4242424242424242', '{"card":{"number":"4111111111111111"}}');
is $r->{status}, 422, 'POST with a card in the query: 422';
like $r->{body}, qr/^\{"error":"unexpected_card_number"/, 'POST query: unexpected_card_number';
for my $q ('card=4242424242424242', 'c=4242+4242+4242+4242', 'c=4242%204242%204242%204242', 'a=1&b=5555-5555-5555-4444') {
    $r = http_get("/checkout?$q");
    is $r->{status}, 422, "GET ?$q: 422";
    is $r->{body}, qq({"error":"unexpected_card_number","field":"query"}\n), "GET ?$q: field query";
}
$n += 5;
is vault_count(), 0, 'nothing was written to the vault';
is tok_metric('rejected') - $rej0, $n, 'every refusal counted as rejected';

# numbers that are not cards pass
for my $b ('{"order":"12345678901234567890","phone":"+1 415 555 2671","ref":"4242424242424241"}',
           '{"card":{"number":"4242424242424242"},"ids":[1234567890123,20240101]}') {
    $r = post('/checkout', $b);
    is $r->{status}, 200, "not a card: $b";
}
$r = http_get('/checkout?order=12345678901234567890&n=4242424242424241');
is $r->{status}, 200, 'GET with long numbers that are no cards: 200';
--- no_error_log
[error]



=== TEST 10: psd_tokenize_scan off: a card in a memo or the query passes, the named fields are still tokenized
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location /checkout {
        psd_tokenize on;
        psd_tokenize_scan off;
        psd_tokenize_field card.number pan;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT;
    }
--- init
echo_app();
--- check
my $r = post('/checkout?ref=4111111111111111', '{"card":{"number":"4242424242424242"},"memo":"old card 5555 5555 5555 4444"}');
is $r->{status}, 200, 'scan off: passes';
my $s = seen($r) or return fail 'no echo';
like $s->{body}, qr/^\{"card":\{"number":"tok_\w{24}"\},"memo":"old card 5555 5555 5555 4444"\}$/,
    'the named field is tokenized, the memo passes as it is';
like $s->{line}, qr{^POST /checkout\?ref=4111111111111111 }, 'the query passes';
$r = http_get('/checkout?ref=4111111111111111');
is $r->{status}, 200, 'scan off: GET with a card in the query passes';
--- no_error_log
[error]



=== TEST 11: a body reaching client_body_buffer_size: 413 body_too_large, never written to client_body_temp
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    client_body_buffer_size 2k;
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
    location = /plain {
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
    location = /metrics { psd_metrics; }
--- init
echo_app();
--- check
my $rej0 = tok_metric('rejected');
my $body = sub { '{"card":{"number":"4242424242424242"},"memo":"' . ('m' x ($_[0] - 48)) . '"}' };
is length $body->(100), 100, 'body helper';
my $r = post('/checkout', $body->(2000));
is $r->{status}, 200, '2000 bytes: tokenized';
$r = post('/checkout', $body->(2048));
is $r->{status}, 413, '2048 bytes (client_body_buffer_size): 413';
is $r->{body}, qq({"error":"body_too_large"}\n), '413: body_too_large';
$r = post('/checkout', $body->(5000));
is $r->{status}, 413, '5000 bytes: 413';
is $r->{body}, qq({"error":"body_too_large"}\n), '5000 bytes: body_too_large';
my $chunks = join '', map { sprintf("%x\r\n", length) . "$_\r\n" } ($body->(3000) =~ /(.{1,700})/gs);
$r = http_request("POST /checkout HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
    . "Transfer-Encoding: chunked\r\n\r\n${chunks}0\r\n\r\n");
is $r->{status}, 413, 'chunked, 3000 bytes in 700-byte chunks: 413';
is tok_metric('rejected') - $rej0, 3, 'counted as rejected';
is temp_files(), 0, 'no file in client_body_temp';
unlike error_log_text(), qr/buffered to a temporary file/, 'nginx never spooled a body to a file';
# control: without psd_tokenize, nginx does spool such a body to a file
my $tmp = "$ENV{TEST_NGINX_SERVROOT}/tmp/client_body";
ok -d $tmp, 'client_body_temp_path exists';
$r = post('/plain', $body->(5000));
is $r->{status}, 200, 'control: a big body in a location without psd_tokenize';
like error_log_text(), qr/a client request body is buffered to a temporary file/,
    'control: nginx spools it to client_body_temp there';
--- no_error_log
[error]



=== TEST 12: a too-large body arriving in several reads: 413 body_too_large too, and the connection is closed
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    client_body_buffer_size 1k;
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
--- init
echo_app();
--- check
my $b = '{"card":{"number":"4242424242424242"},"memo":"' . ('m' x 3000) . '"}';
my $head = "POST /checkout HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
    . 'Content-Length: ' . length($b) . "\r\n\r\n";
# the header first, then the body in two parts: nginx reads it in its read handler
my $r = slow_request([$head, substr($b, 0, 500), substr($b, 500)], 0.2, 3);
is $r->{status}, 413, 'body in pieces: 413';
is $r->{body}, qq({"error":"body_too_large"}\n), 'body in pieces: the JSON body_too_large (not nginx\'s HTML page)';
ok !$r->{error}, 'body in pieces: nginx closes the connection (no hang)';
is temp_files(), 0, 'no file in client_body_temp';
--- no_error_log
[error]



=== TEST 13: Redis stopped (timeout) or down: 503 + Retry-After, the card never passes
--- no_cluster: stops and kills the single redis-server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=200ms connect_timeout=200ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
    location = /metrics { psd_metrics; }
--- init
echo_app();
--- check
my $card = '{"card":{"number":"4242424242424242","cvc":"123"}}';
is post('/checkout', $card)->{status}, 200, 'Redis up: 200';
my $f0 = tok_metric('failed');
redis_stop();
my $t0 = time;
my $r = post('/checkout', $card);
my $took = time - $t0;
redis_cont();
is $r->{status}, 503, 'Redis stopped: 503';
is $r->{headers}{'retry-after'}, '1', 'Retry-After: 1';
is $r->{body}, qq({"error":"backend_unavailable"}\n), 'backend_unavailable';
ok !$r->{headers}{'x-echo'}, 'the application was not reached';
ok $took < 2, sprintf 'answered after the 200ms timeout (%.2fs)', $took;
is tok_metric('failed') - $f0, 1, 'psd_tokenize_requests_total{result="failed"} +1';
ok wait_until(sub { post('/checkout', $card)->{status} == 200 }, 5), 'Redis continued: 200 again';

redis_kill();
$r = post('/checkout', $card);
is $r->{status}, 503, 'Redis killed: 503';
is $r->{headers}{'retry-after'}, '1', 'Redis killed: Retry-After';
ok !$r->{headers}{'x-echo'}, 'Redis killed: the application was not reached';
redis_start();
ok wait_until(sub { post('/checkout', $card)->{status} == 200 }, 8), 'Redis restarted: 200 again';
--- error_log
psd_tokenize: vault write failed
--- no_error_log
[alert]



=== TEST 14: client headers named X-PSD-* reach the application only as X-Client-X-PSD-*; every header line keeps a name
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
--- init
echo_app();
--- check
my $h = "X-PSD-Card-Fingerprint: fp_spoofed_spoofed_spoofed\r\nx-psd-card-brand: spoofedbrand\r\n"
    . "X-Psd-Review: spoofed-review\r\nX-Other: kept\r\n";
for my $c (['{"card":{"number":"4242424242424242"}}', 'with a card'], ['{"memo":"no card"}', 'without a card']) {
    my $r = post('/checkout', $c->[0], headers => $h);
    is $r->{status}, 200, "$c->[1]: reached the application";
    my $s = seen($r) or next;
    my @bad = grep { !defined $_->[0] || $_->[0] !~ /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/ } @{ $s->{pairs} };
    ok !@bad, "$c->[1]: every header line the application gets has a valid name"
        or diag 'bad header lines: ' . join ' | ', map { ($_->[0] // '(none)') . ": $_->[1]" } @bad;
    my @spoofed = grep { $_->[1] =~ /spoofed/ } @{ $s->{pairs} };
    # each feature renames the X-PSD-* names it sets itself (tokenization:
    # X-PSD-Card-*); a name no feature of this location sets passes as sent
    is_deeply [ map { "$_->[0]: $_->[1]" } @spoofed ],
        [ 'X-Client-X-PSD-Card-Fingerprint: fp_spoofed_spoofed_spoofed', 'X-Client-x-psd-card-brand: spoofedbrand',
          'X-Psd-Review: spoofed-review' ],
        "$c->[1]: the client's X-PSD-Card-* headers arrive renamed X-Client-X-PSD-Card-*, and only so";
    is $s->{h}{'x-other'}, 'kept', "$c->[1]: other headers pass";
    if ($c->[1] eq 'with a card') {
        is $s->{h}{'x-psd-card-fingerprint'}, fp_of('4242424242424242'), 'one fingerprint header, the real one';
        is $s->{h}{'x-psd-card-brand'}, 'visa', 'one brand header, the real one';
    } else {
        ok !exists $s->{h}{'x-psd-card-fingerprint'} && !exists $s->{h}{'x-psd-card-brand'},
            'no card: no X-PSD-Card-* header at all';
    }
}
--- no_error_log
[error]



=== TEST 15: $psd_card_fingerprint in a fraud rule (the 4th card from one address is blocked) and in a log format
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
    log_format cards '$request_uri $status $psd_card_brand $psd_card_last4 $psd_card_fingerprint';
--- config
    psd_fraud_rule cards_per_ip "distinct($psd_card_fingerprint) by $remote_addr over 1h > 3" block;
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_fraud on;
        add_header X-Rule $psd_fraud_rule always;
        access_log logs/cards.log cards;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
--- init
echo_app();
--- check
my $card = sub { post('/checkout', qq({"card":{"number":"$_[0]"}})) };
my @st = map { $card->($_)->{status} } qw(4242424242424242 4111111111111111 4242-4242-4242-4242
    5555555555554444 4111111111111111 378282246310005);
is_deeply \@st, [200, 200, 200, 200, 200, 403],
    'three distinct cards (a card again, in any spelling, counts once) pass; the fourth is blocked';
my $r = $card->('6011111111111117');
is $r->{status}, 403, 'a fifth card: blocked';
is $r->{body}, qq({"error":"payment_blocked"}\n), 'payment_blocked';
ok !$r->{headers}{'x-echo'}, 'blocked: the application was not reached';
is $r->{headers}{'x-rule'}, 'cards_per_ip', 'by cards_per_ip';
is $card->('4242424242424242')->{status}, 403, 'then even a card seen before: the address has too many cards';
# a request is logged when nginx frees it, which may be just after the response
my @log;
wait_until(sub { @log = do { local @ARGV = ("$ENV{TEST_NGINX_SERVROOT}/logs/cards.log"); <> }; @log >= 8 }, 3);
is scalar @log, 8, 'eight access log lines';
is $log[0], '/checkout 200 visa 4242 ' . fp_of('4242424242424242') . "\n", 'the log has brand, last4 and fingerprint';
is $log[5], '/checkout 403 amex 0005 ' . fp_of('378282246310005') . "\n", 'also for a blocked request';
no_card(join('', @log), 'access log');
--- error_log
psd_fraud: blocked by rule "cards_per_ip"
--- no_error_log
[error]



=== TEST 16: a tokenizing location reached by an internal redirect or as a named location still tokenizes
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /pay {
        try_files /no-such-file @app;
    }
    location = /pay2 {
        error_page 418 = /checkout;
        return 418;
    }
    location @app {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT;
    }
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT;
    }
--- init
echo_app();
--- check
# try_files to a named location: a POST with its body
my $r = post('/pay', '{"card":{"number":"4242424242424242"}}');
my $s = seen($r);
no_card($s ? $s->{body} : '', '/pay -> @app: what the application saw');
like $s && $s->{body}, qr/^\{"card":\{"number":"tok_\w{24}"\}\}$/, '/pay -> @app: tokenized';
# error_page to a URI (nginx makes the request a GET, the body still goes on)
$r = post('/pay2', '{"card":{"number":"4242424242424242"}}');
$s = seen($r);
no_card($s ? $s->{body} : '', '/pay2 -> /checkout: what the application saw');
--- no_error_log
[error]



=== TEST 17: a body on another method (DELETE, GET, OPTIONS) never reaches the application with a card in it
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT;
    }
--- init
echo_app();
--- check
for my $m (qw(DELETE GET OPTIONS)) {
    my $b = '{"card":{"number":"4242424242424242"}}';
    my $r = http_request("$m /checkout HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\nContent-Length: " . length($b) . "\r\n\r\n$b");
    my $s = seen($r);
    no_card($s ? $s->{body} : '', "$m with a card in the body: what the application saw");
}
--- no_error_log
[error]



=== TEST 18: the CVV check does not depend on the order of the keys
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        psd_tokenize_field cards.*.number pan;
        psd_tokenize_field cards.*.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT;
    }
--- init
echo_app();
--- check
# control: number first
is post('/checkout', '{"card":{"number":"4242424242424242","cvc":"1234"}}')->{status}, 422,
    'control: a 4-digit CVV after a Visa number: 422';
for my $c (['{"card":{"cvc":"1234","number":"4242424242424242"}}', 'a 4-digit CVV before a Visa number'],
           ['{"card":{"cvc":"123","number":"378282246310005"}}', 'a 3-digit CVV before an Amex number']) {
    my $r = post('/checkout', $c->[0]);
    is $r->{status}, 422, "$c->[1]: 422";
    is $r->{body}, qq({"error":"invalid_cvv","field":"card.cvc"}\n), "$c->[1]: invalid_cvv";
}
# the second card's CVV is checked against the first card's brand
my $r = post('/checkout', '{"cards":[{"number":"5555555555554444","cvc":"123"},{"cvc":"1234","number":"378282246310005"}]}');
is $r->{status}, 200, 'a valid Amex CVV written before its number, after a Mastercard: accepted'
    or diag $r->{body};
--- no_error_log
[error]



=== TEST 19: a vault key given as 64 hex digits, or with a trailing newline, works
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key hex $TEST_NGINX_CONF_DIR/keys/vault-a-hex;
    psd_vault_key nl $TEST_NGINX_CONF_DIR/keys/vault-a-nl;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT;
    }
--- init
echo_app();
--- check
my $r = post('/checkout', '{"card":{"number":"4242424242424242"}}');
is $r->{status}, 200, 'tokenized';
my ($tok) = ($r->{body} // '') =~ /"number":"(tok_\w{24})"/;
is envelope(redis_cmd('GET', "psd:{tok:$tok}"))->{kid}, 'nl', 'sealed under the last key';
--- no_error_log
[error]



=== TEST 20: psd_tokenize_redis: the vault on another psd_redis server than the first
--- http_config
    psd_redis main 127.0.0.1:1 timeout=200ms connect_timeout=200ms;
    psd_redis vault 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_redis vault;
        psd_tokenize_field card.number pan;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT;
    }
    location = /first {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT;
    }
--- init
echo_app();
--- check
my $r = post('/checkout', '{"card":{"number":"4242424242424242"}}');
is $r->{status}, 200, 'psd_tokenize_redis vault: tokenized';
my ($tok) = ($r->{body} // '') =~ /"number":"(tok_\w{24})"/;
ok $tok && redis_cmd('EXISTS', "psd:{tok:$tok}"), 'the card is in the "vault" server';
$r = post('/first', '{"card":{"number":"4242424242424242"}}');
is $r->{status}, 503, 'without psd_tokenize_redis: the first server (down): 503';
--- no_error_log
[alert]



=== TEST 21: nginx -t: a vault key file of 31 bytes
--- http_config
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-31;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- must_die
--- error_log
must hold 32



=== TEST 22: nginx -t: a vault key file of 33 bytes
--- http_config
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-33;
--- must_die
--- error_log
must hold 32 bytes or 64 hexadecimal digits



=== TEST 23: nginx -t: 64 characters that are not all hex digits
--- http_config
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-hex-bad;
--- must_die
--- error_log
must hold 32 bytes or 64 hexadecimal digits



=== TEST 24: nginx -t: a vault key file with more after its newlines is not a 32-byte key
--- http_config
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-trailing;
--- must_die
--- error_log
vault-trailing



=== TEST 25: nginx -t: a missing vault key file
--- http_config
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/no-such-key;
--- must_die
--- error_log
cannot open secret file



=== TEST 26: nginx -t: a bad vault key id
--- http_config
    psd_vault_key a/b $TEST_NGINX_CONF_DIR/keys/vault-a;
--- must_die
--- error_log
invalid vault key id "a/b"



=== TEST 27: nginx -t: psd_tokenize without psd_fingerprint_key
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
--- config
    location /c { psd_tokenize on; psd_tokenize_field card.number pan; }
--- must_die
--- error_log
"psd_tokenize" needs a "psd_fingerprint_key" in http{}



=== TEST 28: nginx -t: psd_tokenize without psd_vault_key
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location /c { psd_tokenize on; psd_tokenize_field card.number pan; }
--- must_die
--- error_log
card tokenization needs a "psd_vault_key" in http{}



=== TEST 29: nginx -t: fingerprint key of 15 bytes
--- http_config
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp-15;
--- must_die
--- error_log
must hold 16 to 256 bytes



=== TEST 30: nginx -t: fingerprint key of 257 bytes
--- http_config
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp-257;
--- must_die
--- error_log
must hold 16 to 256 bytes



=== TEST 31: nginx -t: psd_tokenize without a field
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location /c { psd_tokenize on; }
--- must_die
--- error_log
"psd_tokenize" needs at least one "psd_tokenize_field"



=== TEST 32: nginx -t: psd_detokenize without a field
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
--- config
    location /c { psd_detokenize on; }
--- must_die
--- error_log
"psd_detokenize" needs at least one "psd_detokenize_field"



=== TEST 33: nginx -t: a bad field kind
--- http_config
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location /c { psd_tokenize on; psd_tokenize_field card.number iban; }
--- must_die
--- error_log
invalid field kind "iban" in "psd_tokenize_field", it must be "pan", "cvv", "expiry" or "holder"



=== TEST 34: nginx -t: psd_detokenize_field takes pan or cvv only
--- http_config
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
--- config
    location /c { psd_detokenize on; psd_detokenize_field card.exp expiry; }
--- must_die
--- error_log
invalid field kind "expiry" in "psd_detokenize_field", it must be "pan" or "cvv"



=== TEST 35: nginx -t: a path with an empty segment
--- http_config
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location /c { psd_tokenize on; psd_tokenize_field card..number pan; }
--- must_die
--- error_log
invalid field path "card..number" in "psd_tokenize_field"



=== TEST 36: nginx -t: a path starting with a dot
--- http_config
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location /c { psd_tokenize on; psd_tokenize_field .card pan; }
--- must_die
--- error_log
invalid field path ".card" in "psd_tokenize_field"



=== TEST 37: nginx -t: a path with 17 segments
--- http_config
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location /d { psd_tokenize on; psd_tokenize_field a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q pan; }
--- must_die
--- error_log
invalid field path "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q" in "psd_tokenize_field"



=== TEST 38: nginx -t: psd_tokenize and psd_detokenize in one location
--- http_config
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location /c {
        psd_tokenize on;
        psd_detokenize on;
        psd_tokenize_field card.number pan;
    }
--- must_die
--- error_log
cannot be used with the other of "psd_tokenize" and "psd_detokenize" in one location



=== TEST 39: nginx -t: a bad psd_tokenize_format
--- http_config
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location /c { psd_tokenize on; psd_tokenize_format fpe; psd_tokenize_field card.number pan; }
--- must_die
--- error_log
invalid value "fpe"



=== TEST 40: nginx -t: psd_tokenize_redis names an unknown server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location /c { psd_tokenize on; psd_tokenize_redis vault; psd_tokenize_field card.number pan; }
--- must_die
--- error_log
unknown redis server "vault"



=== TEST 41: nginx -t: psd_vault_key in a location
--- config
    location /c { psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a; }
--- must_die
--- error_log
"psd_vault_key" directive is not allowed here



=== TEST 42: Redis refuses writes (-OOM at maxmemory, -READONLY as a replica): 503 + Retry-After, nothing stored, the card never passes, back without a reload
--- no_cluster: REPLICAOF (no replicas of one node in a cluster)
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
--- init
echo_app();
--- check
my $card = '{"card":{"number":"4242424242424242","cvc":"123"}}';
redis_cmd('FLUSHALL');
is post('/checkout', $card)->{status}, 200, 'writable: 200';
redis_cmd('FLUSHALL');

my $refused = sub {
    my ($what) = @_;
    my $r = post('/checkout', $card);
    is $r->{status}, 503, "$what: 503";
    is $r->{headers}{'retry-after'}, '1', "$what: Retry-After: 1";
    is $r->{body}, qq({"error":"backend_unavailable"}\n), "$what: backend_unavailable";
    ok !$r->{headers}{'x-echo'}, "$what: the application was not reached";
    is vault_count(), 0, "$what: nothing stored (no PAN without its CVV or the reverse)";
};

# maxmemory with noeviction: every write is -OOM
is redis_cmd(qw(CONFIG SET maxmemory-policy noeviction)), 'OK', 'noeviction';
is redis_cmd(qw(CONFIG SET maxmemory 1)), 'OK', 'maxmemory 1 byte';
$refused->('-OOM');
is redis_cmd(qw(CONFIG SET maxmemory 0)), 'OK', 'maxmemory lifted';
is post('/checkout', $card)->{status}, 200, 'after -OOM: 200 without a reload';
redis_cmd('FLUSHALL');

# a primary demoted to a replica (of nothing that answers): -READONLY
is redis_cmd(qw(REPLICAOF 127.0.0.1 1)), 'OK', 'REPLICAOF a dead primary';
$refused->('-READONLY');
is redis_cmd(qw(REPLICAOF NO ONE)), 'OK', 'promoted again';
ok wait_until(sub { post('/checkout', $card)->{status} == 200 }, 5),
    'after -READONLY: 200 without a reload';
--- no_error_log
4242424242424242
[alert]
[crit]
