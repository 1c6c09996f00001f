# psd_detokenize: tokens in the named fields of a request the application
# sends to the gateway (through nginx) are replaced by the card data.  The
# gateway is an echo server (a fake_redis_start handler speaking HTTP) that
# answers with the exact bytes it received, so the tests prove what the
# gateway saw.
#
# The reveal flow end to end (tokenize, then reveal; JSON, forms, wildcard
# paths, the preserving format), one-use CVVs, the reveal key, unknown,
# expired and malformed tokens, tampered envelopes, TTLs, vault key
# rotation with a reload, Redis failures, the metrics, and tokens bound
# to a checkout session.
#
# Blocks compare metrics as deltas, so the file also passes with
# TEST_NGINX_USE_HUP=1.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Echo;    # echo_app, seen
use PsdTest::Link qw(write_key_file json_body wait_until b64url);
use Digest::SHA qw(sha256);
use MIME::Base64 qw(encode_base64 decode_base64);
use Time::HiRes qw(time sleep);

our $VAULT_A = sha256('psd detokenize test: vault key a');
our $VAULT_B = sha256('psd detokenize test: vault key b');
our $FP_KEY = sha256('psd detokenize test: fingerprint key');
our $REVEAL = 'psd-reveal-key-4f9a1c7e2b8d6035';
die "a test key ends in a newline\n" if grep { /[\r\n]\z/ } $VAULT_A, $VAULT_B, $FP_KEY;
write_key_file('vault-a', $VAULT_A);
write_key_file('vault-a-hex', unpack('H*', $VAULT_A) . "\n");
write_key_file('vault-b', $VAULT_B);
write_key_file('fp', $FP_KEY);
write_key_file('reveal', "$REVEAL\n");

sub post {
    my ($path, $body, %o) = @_;
    my $ct = exists $o{type} ? $o{type} : 'application/json';
    my $key = exists $o{key} ? $o{key} : $REVEAL;
    return http_request("POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . (defined $ct ? "Content-Type: $ct\r\n" : '')
        . (defined $key ? "X-PSD-Reveal-Key: $key\r\n" : '') . ($o{headers} // '')
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body");
}
sub post_form { post($_[0], $_[1], type => 'application/x-www-form-urlencoded', @_[2 .. $#_]) }

# tokenize(pan, cvv): POSTs the card to /checkout, returns (pan token, cvv token)
sub tokenize {
    my ($pan, $cvv) = @_;
    my $r = post('/checkout', qq({"card":{"number":"$pan","cvc":"$cvv"}}), key => undef);
    my $s = seen($r) or die "tokenize: $r->{status} $r->{body}\n";
    my ($t, $c) = $s->{body} =~ /"number":"([^"]+)","cvc":"([^"]+)"/ or die "tokenize: $s->{body}\n";
    return ($t, $c);
}

sub source { my ($n, $c) = @_; qq({"amount":4900,"source":{"number":"$n","cvc":"$c","exp":"12/2099"},"description":"order o-1 \\u00e9"}) }

sub envelope {
    my ($v) = @_;
    return undef unless defined $v && $v =~ /^[A-Za-z0-9_-]+$/;
    (my $b = $v) =~ tr{-_}{+/};
    my $bin = decode_base64($b . '=' x ((4 - length($b) % 4) % 4));
    my ($ver, $n) = unpack 'CC', $bin;
    return undef unless $n && length($bin) >= 2 + $n + 28;
    return { version => $ver, kid => substr($bin, 2, $n), ct_len => length($bin) - 2 - $n - 28, bin => $bin };
}

sub metric {
    my ($row) = @_;
    return http_get('/metrics')->{body} =~ /^\Q$row\E (\d+)$/m ? $1 : 0;
}
sub reveal_metric { metric(qq{psd_reveals_total{result="$_[0]"}}) }
sub tok_metric { metric(qq{psd_tokenize_requests_total{result="$_[0]"}}) }

# rewrite conf/nginx.conf with $edit (a sub on $_) and reload; true once
# only new workers run
sub reload_with {
    my ($edit) = @_;
    my $f = "$ENV{TEST_NGINX_SERVROOT}/conf/nginx.conf";
    local $_ = do { local (@ARGV, $/) = ($f); <> };
    $edit->();
    open my $fh, '>', $f or die "$f: $!";
    print {$fh} $_;
    close $fh;
    my %old = map { $_ => 1 } worker_pids();
    kill HUP => nginx_pid();
    return wait_until(sub { my @w = worker_pids(); @w && !grep { $old{$_} } @w }, 10);
}

run_tests();

__DATA__

=== TEST 1: the reveal flow: tokenize, then the gateway gets the card back in the named fields, every other byte as sent
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
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_field source.cvc cvv;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
    location = /metrics { psd_metrics; }
--- init
echo_app();
--- check
my $ok0 = reveal_metric('ok');
my ($t, $c) = tokenize('4242424242424242', '123');
like $t, qr/^tok_\w{24}$/, 'tokenized';
my $r = post('/gateway', source($t, $c));
is $r->{status}, 200, 'reveal: the gateway answered';
my $s = seen($r) or return fail 'no echo';
like $s->{line}, qr{^POST /v1/charges }, 'the gateway got the request';
is $s->{body}, source('4242424242424242', '123'), 'the gateway got the card and CVV, every other byte as sent';
is $s->{h}{'content-length'}, length $s->{body}, 'Content-Length of the revealed body';
ok !($s->{h}{'x-psd-reveal-key'} // ''), 'the gateway gets no reveal key';
ok index($s->{head}, $main::REVEAL) < 0, 'the reveal key is nowhere in what the gateway received';
is redis_cmd('EXISTS', "psd:{cvv:$c}"), 0, 'the CVV left the vault when revealed';
is redis_cmd('EXISTS', "psd:{tok:$t}"), 1, 'the card stays';
is reveal_metric('ok') - $ok0, 1, 'psd_reveals_total{result="ok"} +1';

# the CVV reveals once; the card as often as needed
my $d0 = reveal_metric('denied');
$r = post('/gateway', source($t, $c));
is $r->{status}, 422, 'the CVV again: 422';
is $r->{body}, qq({"error":"cvv_unavailable","field":"source.cvc"}\n), 'cvv_unavailable';
ok !$r->{headers}{'x-echo'}, 'the gateway was not reached';
is reveal_metric('denied') - $d0, 1, 'psd_reveals_total{result="denied"} +1';
for (1 .. 2) {
    $r = post('/gateway', qq({"source":{"number":"$t"}}));
    my $s2 = seen($r);
    is $s2 && $s2->{body}, '{"source":{"number":"4242424242424242"}}', "the card alone, reveal $_";
}
is reveal_metric('ok') - $ok0, 3, 'three reveals in all';
--- error_log
psd_detokenize: 2 field(s) revealed toward the gateway
psd_detokenize: 1 field(s) revealed toward the gateway
--- no_error_log
[error]



=== TEST 2: the reveal key is not forwarded to the gateway, under any name; header lines keep their names
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
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
--- init
echo_app();
--- check
my ($t) = tokenize('4111111111111111', '123');
my $r = post('/gateway', qq({"source":{"number":"$t"}}), headers => "X-Request-Id: r-1\r\n");
my $s = seen($r) or return fail 'no echo';
is $s->{body}, '{"source":{"number":"4111111111111111"}}', 'revealed';
is $s->{h}{'x-request-id'}, 'r-1', 'other headers pass';
ok index($s->{head}, $main::REVEAL) < 0, 'the reveal key is not in what the gateway received'
    or diag $s->{head};
my @bad = grep { !defined $_->[0] || $_->[0] !~ /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/ } @{ $s->{pairs} };
ok !@bad, 'every header line the gateway gets has a valid name'
    or diag 'bad header lines: ' . join ' | ', map { ($_->[0] // '(none)') . ": $_->[1]" } @bad;
--- no_error_log
[error]



=== TEST 3: forms, wildcard paths and the preserving format reveal too
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
    location = /checkout-fp {
        psd_tokenize on;
        psd_tokenize_format preserving;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_field source.cvc cvv;
        psd_detokenize_field cards.*.number pan;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
--- init
echo_app();
--- check
my ($t1, $c1) = tokenize('5555555555554444', '123');
my $r = post_form('/gateway', "amount=4900&source[number]=$t1&source%5Bcvc%5D=$c1&currency=eur");
my $s = seen($r) or return fail 'no echo (form)';
is $s->{body}, 'amount=4900&source[number]=5555555555554444&source%5Bcvc%5D=123&currency=eur',
    'form: card and CVV revealed, every other byte as sent';
is $s->{h}{'content-length'}, length $s->{body}, 'form: Content-Length';

my ($t2) = tokenize('378282246310005', '1234');
my ($t3) = tokenize('6011111111111117', '123');
$r = post('/gateway', qq({"cards":[{"number":"$t2"},{"number":"$t3","note":"x"}]}));
$s = seen($r) or return fail 'no echo (wildcard)';
is $s->{body}, '{"cards":[{"number":"378282246310005"},{"number":"6011111111111117","note":"x"}]}',
    'cards.*.number: both revealed';

# format-preserving tokens
my $fr = post('/checkout-fp', '{"card":{"number":"4111111111111111","cvc":"123"}}', key => undef);
my ($ft, $fc) = (seen($fr) // { body => '' })->{body} =~ /"number":"(\d+)","cvc":"([^"]+)"/;
like $ft, qr/^411111\d{6}1111$/, 'a preserving token';
$r = post('/gateway', qq({"source":{"number":"$ft","cvc":"$fc"}}));
$s = seen($r) or return fail 'no echo (preserving)';
is $s->{body}, '{"source":{"number":"4111111111111111","cvc":"123"}}', 'preserving token revealed';
$r = post_form('/gateway', "source[number]=$ft");
$s = seen($r) or return fail 'no echo (preserving form)';
is $s->{body}, 'source[number]=4111111111111111', 'preserving token revealed in a form';
# a number of the token's shape that is no token (a mistyped card)
$r = post('/gateway', '{"source":{"number":"4111111111111112"}}');
is $r->{status}, 422, 'a mistyped card: 422';
is $r->{body}, qq({"error":"token_expired","field":"source.number"}\n), 'a mistyped card: token_expired (no such token)';
--- no_error_log
[error]



=== TEST 4: the reveal key: missing or wrong is 403 reveal_denied, nothing revealed, nothing consumed
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
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_field source.cvc cvv;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
    location = /metrics { psd_metrics; }
--- init
echo_app();
--- check
my ($t, $c) = tokenize('4242424242424242', '123');
my $d0 = reveal_metric('denied');
my @keys = (undef, '', substr($main::REVEAL, 0, -1) . 'X', substr($main::REVEAL, 0, -1), "${main::REVEAL}0",
            lc($main::REVEAL) eq $main::REVEAL ? uc $main::REVEAL : lc $main::REVEAL, "Bearer $main::REVEAL");
for my $k (@keys) {
    my $name = defined $k ? "key '$k'" : 'no key';
    my $r = post('/gateway', source($t, $c), key => $k);
    is $r->{status}, 403, "$name: 403";
    is $r->{body}, qq({"error":"reveal_denied"}\n), "$name: reveal_denied";
    ok !$r->{headers}{'x-echo'}, "$name: the gateway was not reached";
}
is reveal_metric('denied') - $d0, scalar @keys, 'psd_reveals_total{result="denied"} counts them';
is redis_cmd('EXISTS', "psd:{cvv:$c}"), 1, 'the CVV is still in the vault';
# the right key, in a lower-case header name
my $r = post('/gateway', source($t, $c), key => undef, headers => "x-psd-reveal-key: $main::REVEAL\r\n");
my $s = seen($r);
is $s && $s->{body}, source('4242424242424242', '123'), 'the right key (any case of the header name): revealed';
--- error_log
psd_detokenize: reveal refused, no valid X-PSD-Reveal-Key
--- no_error_log
[error]



=== TEST 5: psd_detokenize_secret is required (a reveal is never open to any client); no fingerprint key needed; a body without the fields passes
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
--- config
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
--- init
echo_app();
--- check
my $r = post('/gateway', '{"source":{"number":"tok_AAAAAAAAAAAAAAAAAAAAAAAA"}}');
is $r->{status}, 422, 'the token is looked up (and unknown)';
is $r->{body}, qq({"error":"token_expired","field":"source.number"}\n), 'token_expired';
$r = post('/gateway', '{"amount":1,"source":{"id":"src_1"}}');
is $r->{status}, 200, 'a body without the named fields goes on to the gateway' or diag $r->{body};
my $s = seen($r);
is $s && $s->{body}, '{"amount":1,"source":{"id":"src_1"}}', 'a body without the named fields passes as it is';
$r = post('/gateway', 'amount=1', type => 'application/x-www-form-urlencoded');
is $r->{status}, 200, 'a form without the named fields goes on to the gateway';
--- no_error_log
[error]



=== TEST 5b: psd_detokenize without psd_detokenize_secret fails nginx -t
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
--- config
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        proxy_pass http://127.0.0.1:1/;
    }
--- must_die
--- error_log
"psd_detokenize" needs "psd_detokenize_secret"



=== TEST 6: unknown, expired and malformed tokens; bad bodies; nothing reaches the gateway
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
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_field source.cvc cvv;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
--- init
echo_app();
--- check
my ($t, $c) = tokenize('4242424242424242', '123');
redis_cmd('PEXPIRE', "psd:{tok:$t}", 1);
sleep 0.05;
my $unknown = 'tok_' . ('Z' x 24);
my @cases = (
    [ qq({"source":{"number":"$t"}}), 422, 'token_expired', 'source.number' ],
    [ qq({"source":{"number":"$unknown"}}), 422, 'token_expired', 'source.number' ],
    [ qq({"source":{"cvc":"$unknown"}}), 422, 'cvv_unavailable', 'source.cvc' ],
    [ '{"source":{"number":"4242424242424242"}}', 422, 'not_a_token', 'source.number' ],
    [ '{"source":{"number":"hello"}}', 422, 'not_a_token', 'source.number' ],
    [ '{"source":{"number":""}}', 422, 'not_a_token', 'source.number' ],
    [ '{"source":{"number":"tok_short"}}', 422, 'not_a_token', 'source.number' ],
    [ '{"source":{"number":"tok_AAAAAAAAAAAAAAAAAAAAAAAA!"}}', 422, 'not_a_token', 'source.number' ],
    [ '{"source":{"number":4242424242424242}}', 422, 'not_a_token', 'source.number' ],
    [ '{"source":{"cvc":"123"}}', 422, 'not_a_token', 'source.cvc' ],
    [ qq({"source":{"number":{"t":"$unknown"}}}), 400, 'invalid_field_type', 'source.number' ],
    [ qq({"source":{"number":"$unknown"}), 400, 'invalid_json', 'source' ],
    [ qq({"source":{"number":"$unknown","number":"$unknown"}}), 400, 'duplicate_key', 'source.number' ],
);
for my $k (@cases) {
    my ($body, $status, $err, $field) = @$k;
    my $r = post('/gateway', $body);
    is $r->{status}, $status, "$err: $body: $status";
    is $r->{body}, qq({"error":"$err") . (defined $field ? qq(,"field":"$field") : '') . "}\n",
        "$err: $body: body";
    ok !$r->{headers}{'x-echo'}, "$err: $body: the gateway was not reached";
}
my $r = post('/gateway', qq({"source":{"number":"$unknown"}}), type => 'text/plain');
is $r->{status}, 415, 'text/plain: 415';
$r = post('/gateway', '');
is $r->{status}, 400, 'empty body: 400';
is $r->{body}, qq({"error":"empty_body"}\n), 'empty_body';
# the CVV of the expired card was not touched by the refusals
is redis_cmd('EXISTS', "psd:{cvv:$c}"), 1, 'the CVV is still there';
--- no_error_log
[error]



=== TEST 7: psd_vault_ttl and psd_vault_cvv_ttl: the CVV expires first
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
    psd_vault_ttl 5m;
    psd_vault_cvv_ttl 1s;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_field source.cvc cvv;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
--- init
echo_app();
--- check
my ($t, $c) = tokenize('4242424242424242', '123');
my $pttl = redis_cmd('TTL', "psd:{tok:$t}");
ok $pttl > 290 && $pttl <= 300, "card TTL from psd_vault_ttl 5m: $pttl";
my $cpttl = redis_cmd('PTTL', "psd:{cvv:$c}");
ok $cpttl > 0 && $cpttl <= 1000, "CVV TTL from psd_vault_cvv_ttl 1s: ${cpttl}ms";
sleep 1.2;
my $r = post('/gateway', source($t, $c));
is $r->{status}, 422, 'after 1.2 s: the CVV is gone';
is $r->{body}, qq({"error":"cvv_unavailable","field":"source.cvc"}\n), 'cvv_unavailable';
$r = post('/gateway', qq({"source":{"number":"$t"}}));
my $s = seen($r);
is $s && $s->{body}, '{"source":{"number":"4242424242424242"}}', 'the card is still there';
--- no_error_log
[error]



=== TEST 8: tampered envelopes: moved to another token, altered, unknown key id
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
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_field source.cvc cvv;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
--- init
echo_app();
--- check
my ($t1) = tokenize('4242424242424242', '123');
my ($t2) = tokenize('5555555555554444', '123');
my $e1 = redis_cmd('GET', "psd:{tok:$t1}");
my $reveal = sub { post('/gateway', qq({"source":{"number":"$_[0]"}})) };
my $invalid = qq({"error":"token_invalid","field":"source.number"}\n);

redis_cmd('SET', "psd:{tok:$t2}", $e1);
my $r = $reveal->($t2);
is $r->{status}, 422, 'an envelope moved to another token: 422';
is $r->{body}, $invalid, 'token_invalid';
like error_log_text(), qr/psd_detokenize: vault entry refused: auth_failed/, 'logged: auth_failed';

my $bin = envelope($e1)->{bin};
substr($bin, -20, 1) = chr(ord(substr($bin, -20, 1)) ^ 1);
redis_cmd('SET', "psd:{tok:$t1}", b64url($bin));
$r = $reveal->($t1);
is $r->{body}, $invalid, 'one bit flipped in the ciphertext: token_invalid';

my $b2 = envelope($e1)->{bin};
substr($b2, 2, 1) = 'z';        # kid "a" becomes "z"
redis_cmd('SET', "psd:{tok:$t1}", b64url($b2));
$r = $reveal->($t1);
is $r->{body}, $invalid, 'an unknown key id: token_invalid';
like error_log_text(), qr/vault entry refused: unknown_kid/, 'logged: unknown_kid';

redis_cmd('SET', "psd:{tok:$t1}", '4242424242424242');
$r = $reveal->($t1);
is $r->{body}, $invalid, 'not an envelope: token_invalid';
ok !$r->{headers}{'x-echo'}, 'the gateway was never reached';
--- error_log eval
[qr/\[error\].*psd_detokenize: vault entry refused: auth_failed/]



=== TEST 9: vault key rotation: tokens sealed under key a still reveal after a reload with keys a and b, new ones use b
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
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_field source.cvc cvv;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
--- init
echo_app();
--- check
if ($ENV{TEST_NGINX_USE_VALGRIND}) {
    ok http_get('/gateway')->{status}, 'up';
    pass 'no reload test with master_process off (valgrind)';
    return;
}
my $kid = sub { envelope(redis_cmd('GET', "psd:{$_[0]:$_[1]}"))->{kid} };
my ($t1, $c1) = tokenize('4242424242424242', '123');
my ($t1b, $c1b) = tokenize('4111111111111111', '123');
is $kid->('tok', $t1), 'a', 'before: sealed under a';
is $kid->('cvv', $c1), 'a', 'before: the CVV too';

# key a now from its hex file (the same 32 bytes), then key b: b encrypts
my $dir = $ENV{TEST_NGINX_CONF_DIR};
ok reload_with(sub { s{(psd_vault_key a )\S+;}{${1}$dir/keys/vault-a-hex;\n    psd_vault_key b $dir/keys/vault-b;} }),
    'reloaded with keys a and b';
my ($t2, $c2) = tokenize('5555555555554444', '123');
is $kid->('tok', $t2), 'b', 'after: new cards sealed under b';
is $kid->('cvv', $c2), 'b', 'after: new CVVs sealed under b';
my $r = post('/gateway', source($t1, $c1));
my $s = seen($r);
is $s && $s->{body}, source('4242424242424242', '123'), 'an old token (key a) still reveals, CVV too';
$r = post('/gateway', source($t2, $c2));
$s = seen($r);
is $s && $s->{body}, source('5555555555554444', '123'), 'a new token (key b) reveals';

# key a retired: its envelopes no longer open
ok reload_with(sub { s{\s*psd_vault_key a \S+;}{} }), 'reloaded with key b only';
$r = post('/gateway', qq({"source":{"number":"$t1b","cvc":"$c1b"}}));
is $r->{status}, 422, 'a token of the retired key: 422';
is $r->{body}, qq({"error":"token_invalid","field":"source.number"}\n), 'token_invalid';
$r = post('/gateway', qq({"source":{"number":"$t2"}}));
$s = seen($r);
is $s && $s->{body}, '{"source":{"number":"5555555555554444"}}', 'key b tokens still reveal';
like error_log_text(), qr/\[error\].*psd_detokenize: vault entry refused: unknown_kid/, 'logged: unknown_kid';



=== TEST 10: Redis stopped or down while revealing: 503 + Retry-After, nothing reaches the gateway
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
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_field source.cvc cvv;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
--- init
echo_app();
--- check
my ($t, $c) = tokenize('4242424242424242', '123');
redis_stop();
my $r = post('/gateway', source($t, $c));
redis_cont();
is $r->{status}, 503, 'Redis stopped: 503';
is $r->{headers}{'retry-after'}, '1', 'Retry-After: 1';
is $r->{body}, qq({"error":"backend_unavailable"}\n), 'backend_unavailable';
ok !$r->{headers}{'x-echo'}, 'the gateway was not reached';
redis_kill();
$r = post('/gateway', qq({"source":{"number":"$t"}}));
is $r->{status}, 503, 'Redis killed: 503';
ok !$r->{headers}{'x-echo'}, 'Redis killed: the gateway was not reached';
redis_start();
# redis_start() starts an empty Redis: tokenize anew
ok wait_until(sub { my $x = post('/checkout', '{"card":{"number":"4242424242424242"}}', key => undef);
                    ($x->{status} // 0) == 200 }, 8), 'Redis back: tokenizing works';
my ($t2) = tokenize('4111111111111111', '123');
$r = post('/gateway', qq({"source":{"number":"$t2"}}));
my $s = seen($r);
is $s && $s->{body}, '{"source":{"number":"4111111111111111"}}', 'Redis back: revealing works';
--- no_error_log
[alert]



=== TEST 11: reveals are counted in psd_reveals_total, not in psd_tokenize_requests_total
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
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_field source.cvc cvv;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
    location = /metrics { psd_metrics; }
--- init
echo_app();
--- check
my ($t, $c) = tokenize('4242424242424242', '123');
my %m0 = map { $_ => tok_metric($_) } qw(ok rejected failed);
my ($ok0, $d0) = (reveal_metric('ok'), reveal_metric('denied'));
is seen(post('/gateway', source($t, $c))) ? 1 : 0, 1, 'a reveal';
is post('/gateway', source($t, $c))->{status}, 422, 'the CVV again';
is post('/gateway', source($t, $c), key => 'wrong')->{status}, 403, 'a wrong key';
is post('/gateway', '{"source":{"number":"tok_ZZZZZZZZZZZZZZZZZZZZZZZZ"}}')->{status}, 422, 'an unknown token';
is reveal_metric('ok') - $ok0, 1, 'psd_reveals_total{result="ok"} +1';
is reveal_metric('denied') - $d0, 3, 'psd_reveals_total{result="denied"} +3';
is tok_metric($_) - $m0{$_}, 0, "psd_tokenize_requests_total{result=\"$_\"} unchanged by reveals"
    for qw(ok rejected failed);
--- no_error_log
[error]



=== TEST 12: tokens of a checkout session reveal only with that session; a refused reveal consumes no CVV
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_checkout_session on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_field source.cvc cvv;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
--- init
echo_app();
--- check
my $r = post('/checkout', '{"card":{"number":"4242424242424242","cvc":"123"}}', key => undef);
my $s = seen($r) or return fail 'no echo';
my $session = $s->{h}{'x-psd-checkout-session'};
like $session, qr/^[A-Za-z0-9_-]{22}$/, 'the application got the checkout session';
my ($t, $c) = $s->{body} =~ /"number":"([^"]+)","cvc":"([^"]+)"/;
my $mismatch = qq({"error":"token_session_mismatch","field":"source.number"}\n);
$r = post('/gateway', source($t, $c));
is $r->{body}, $mismatch, 'no session: token_session_mismatch';
my $other = 'A' x 22;
$r = post('/gateway', source($t, $c), headers => "X-PSD-Checkout-Session: $other\r\n");
is $r->{body}, $mismatch, 'another session: token_session_mismatch';
ok !$r->{headers}{'x-echo'}, 'the gateway was not reached';
is redis_cmd('EXISTS', "psd:{cvv:$c}"), 1, 'the refused reveals did not consume the CVV';
$r = post('/gateway', source($t, $c), headers => "X-PSD-Checkout-Session: $session\r\n");
$s = seen($r);
is $s && $s->{body}, source('4242424242424242', '123'), 'its own session: card and CVV revealed';
--- no_error_log
[error]



=== TEST 13: a client that allow/deny refuses never reaches the vault (reveals run after the access phase)
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
    location = /gateway {
        deny all;
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_field source.cvc cvv;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
--- init
echo_app();
--- check
my ($pan, $cvv) = tokenize('4242424242424242', '123');
my $r = post('/gateway', qq({"source":{"number":"$pan","cvc":"$cvv"}}));
is $r->{status}, 403, 'refused by deny';
is redis_cmd('EXISTS', "psd:{cvv:$cvv}"), 1, 'the CVV is still in the vault';
is redis_cmd('XLEN', 'psd:{audit:reveals}'), 0, 'no reveal was attempted';


=== TEST 14: a reveal whose audit record cannot be written is withdrawn: 503, the gateway never sees the card
--- no_cluster: an ACL user on one redis-server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_redis noaudit 127.0.0.1:$TEST_NGINX_REDIS_PORT user=psd-noaudit password=noaudit-pw timeout=300ms;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault-a;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_field source.cvc cvv;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        psd_tokenize_redis noaudit;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
    location = /gateway-audited {
        psd_detokenize on;
        psd_detokenize_field source.number pan;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/v1/charges;
    }
    location = /metrics { psd_metrics; }
    location = /status { psd_status on; }
--- init
echo_app();
# everything but XADD: the vault reads work, the audit write is refused
redis_cmd('ACL', 'SETUSER', 'psd-noaudit', 'reset', 'on', '>noaudit-pw', '~*', '+@all', '-xadd');
--- check
ok wait_until(sub { http_get('/status')->{body} =~ /"name":"noaudit","connected":true/ }, 10),
    'the restricted user is connected';
my ($pan, $cvv) = tokenize('4242424242424242', '123');
my ($ok0, $d0) = (reveal_metric('ok'), reveal_metric('denied'));
my $x0 = redis_cmd('XLEN', 'psd:{audit:reveals}');
my $r = post('/gateway', source($pan, $cvv));
is $r->{status}, 503, 'audit write refused: 503';
is $r->{body}, qq({"error":"backend_unavailable"}\n), 'backend_unavailable';
ok $r->{headers}{'retry-after'}, 'with Retry-After';
ok !$r->{headers}{'x-echo'}, 'the gateway was not reached';
unlike $r->{raw}, qr/4242424242424242/, 'the card is in no part of the answer';
is reveal_metric('ok') - $ok0, 0, 'no reveal counted as ok';
is reveal_metric('denied') - $d0, 1, 'counted as denied';
is redis_cmd('XLEN', 'psd:{audit:reveals}'), $x0, 'no audit record (the write was refused)';
is redis_cmd('EXISTS', "psd:{cvv:$cvv}"), 0, 'the CVV the withdrawn reveal read is spent';
$r = post('/gateway-audited', qq({"source":{"number":"$pan"}}));
my $s = seen($r);
is $s && $s->{body}, '{"source":{"number":"4242424242424242"}}', 'the card still reveals where its record can be written';
is redis_cmd('XLEN', 'psd:{audit:reveals}'), $x0 + 1, 'and that reveal is on record';
--- error_log
psd_detokenize: reveal withdrawn, its audit record could not be written
--- no_error_log
4242424242424242
