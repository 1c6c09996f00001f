# psd_webhook: Stripe and Standard Webhooks signatures (the fixed vectors of
# t/vectors/webhooks.json replayed through nginx, and signatures made here
# with Digest::SHA), tolerance edges, secret rotation, every rejection with
# its status and error, deduplication of event ids (also under concurrent
# deliveries), the forward-only order state machine, refunds revoking
# download links end to end, psd_webhook_pass, event mappings and order
# paths, Redis failures, the metrics, and configuration errors.
#
# Every block uses its own order ids and Redis is flushed between blocks;
# metrics are compared as deltas (TEST_NGINX_USE_HUP=1 keeps them).
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link;      # write_keys, write_key_file, api_post, json_body, wait_until
use Digest::SHA qw(hmac_sha256_hex hmac_sha256);
use MIME::Base64 qw(encode_base64 decode_base64);
use JSON::PP ();
use Time::HiRes ();
use IO::Socket::IP;
use IO::Select;

# package variables (not lexicals), so that --- check code sees them
use vars qw($VECTORS $STRIPE_NEW $STRIPE_OLD $STD_NEW $STD_OLD $STD_SVIX $SEQ);

$VECTORS = do {
    open my $f, '<', "$ENV{TEST_NGINX_REPO}/t/vectors/webhooks.json" or die "vectors: $!";
    local $/;
    JSON::PP::decode_json(<$f>);
};

# test secrets (the vectors' own)
$STRIPE_NEW = 'whsec_test_new_7a1c3e5b9d2f4a6c8e0b1d3f5a7c9e1b';
$STRIPE_OLD = 'whsec_test_old_2f8c6a1e9b7d4c3a5e0f1b2d3c4a5e6f';
$STD_NEW = 'whsec_pjtVDbJVsR3E9Fte2ihvI1/xISPIqFuxPMVSL6GOWfU=';
$STD_OLD = 'whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=';
$STD_SVIX = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

write_keys();           # link keys k1, k2 and the api key
write_key_file('stripe_new', "$STRIPE_NEW\n");
write_key_file('stripe_old', $STRIPE_OLD);
write_key_file('std_new', "$STD_NEW\n");
write_key_file('std_old', $STD_OLD);
write_key_file('std_svix', $STD_SVIX);
write_key_file('std_invalid', "whsec_this-is-not-base64-at-all!!\n");

$SEQ = 0;

# --- signing ---------------------------------------------------------------------

sub stripe_header {
    my ($t, $body, @secrets) = @_;
    @secrets = ($STRIPE_NEW) unless @secrets;
    return "t=$t," . join ',', map { 'v1=' . hmac_sha256_hex("$t.$body", $_) } @secrets;
}

sub std_key { decode_base64($_[0] =~ s/^whsec_//r) }

sub std_signature {
    my ($id, $t, $body, @secrets) = @_;
    @secrets = ($STD_NEW) unless @secrets;
    return join ' ', map { 'v1,' . encode_base64(hmac_sha256("$id.$t.$body", std_key($_)), '') }
        @secrets;
}

# --- events ----------------------------------------------------------------------

sub canonical_json { JSON::PP->new->canonical->encode($_[0]) }

# stripe_event(type => ..., order => ..., id => ..., created => ..., amount
# => ..., currency => ..., pi => ...): a Stripe event body
sub stripe_event {
    my (%o) = @_;
    my $obj = { id => $o{pi} // 'pi_test', object => 'payment_intent',
                amount => $o{amount} // 2000, currency => $o{currency} // 'eur',
                metadata => { defined $o{order} ? (order_id => $o{order}) : () } };
    return canonical_json({ id => $o{id} // sprintf('evt_%d_%d', $$, ++$SEQ),
        object => 'event', type => $o{type} // 'payment_intent.succeeded',
        created => $o{created} // time, data => { object => $obj } });
}

# a Standard Webhooks body: {"type", "timestamp", "data": {"order_id", ...}}
sub std_event {
    my (%o) = @_;
    return canonical_json({ type => $o{type} // 'payment.succeeded',
        timestamp => '2026-01-01T00:00:00Z', created => $o{created} // time,
        data => { defined $o{order} ? (order_id => $o{order}) : (),
                  id => $o{pi} // 'pay_1', amount => $o{amount} // 1500,
                  currency => $o{currency} // 'usd' } });
}

# --- requests --------------------------------------------------------------------

sub raw_post {
    my ($path, $body, @headers) = @_;
    return "POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\n" . join('', map { "$_\r\n" } @headers)
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
}

# stripe_raw($path, $body, t => ..., secrets => [...], header => ...): the request
sub stripe_raw {
    my ($path, $body, %o) = @_;
    my $h = exists $o{header} ? $o{header}
        : stripe_header($o{t} // time, $body, @{ $o{secrets} || [] });
    return raw_post($path, $body, defined $h ? ("Stripe-Signature: $h") : ());
}

sub stripe_post { http_request(stripe_raw(@_)) }

# std_raw($path, $body, id => ..., t => ..., secrets => [...], signature =>
# ...): the request; id, t or signature => undef leaves that header out
sub std_raw {
    my ($path, $body, %o) = @_;
    my $id = exists $o{id} ? $o{id} : sprintf 'msg_%d_%d', $$, ++$SEQ;
    my $t = exists $o{t} ? $o{t} : time;
    my $sig = exists $o{signature} ? $o{signature}
        : std_signature($id // '', $t // '', $body, @{ $o{secrets} || [] });
    return raw_post($path, $body, (defined $id ? "webhook-id: $id" : ()),
        (defined $t ? "webhook-timestamp: $t" : ()),
        (defined $sig ? "webhook-signature: $sig" : ()));
}

sub std_post { http_request(std_raw(@_)) }

# sends $raw in pieces: everything up to $at bytes into the body, then
# after $delay seconds the rest; returns the parsed response
sub slow_request {
    my ($raw, $at, $delay) = @_;
    my $cut = index($raw, "\r\n\r\n") + 4 + $at;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $ENV{TEST_NGINX_SERVER_PORT},
                                Proto => 'tcp', Timeout => 5) or die "connect: $@";
    $s->autoflush(1);
    print {$s} substr($raw, 0, $cut);
    Time::HiRes::sleep($delay);
    print {$s} substr($raw, $cut);
    my $in = '';
    my $sel = IO::Select->new($s);
    while ($sel->can_read(10)) { sysread($s, $in, 65536, length $in) or last }
    close $s;
    return (PsdTest::HTTP::parse_response($in))[0];
}

# the same request with a chunked body of pieces of $n bytes
sub chunked {
    my ($raw, $n) = @_;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    $head =~ s/\r\nContent-Length: \d+//;
    return "$head\r\nTransfer-Encoding: chunked\r\n\r\n"
        . join('', map { sprintf("%x\r\n%s\r\n", length, $_) } unpack "(a$n)*", $body) . "0\r\n\r\n";
}

# is_answer($r, 400, 'invalid_json', 'name'): status and JSON error
sub is_answer {
    my ($r, $status, $error, $name) = @_;
    is $r->{status}, $status, "$name: $status" or diag $r->{raw};
    if (defined $error) {
        is json_body($r)->{error}, $error, "$name: $error";
    } else {
        is $r->{body}, qq({"received":true}\n), "$name: received";
    }
}

sub order { my $h = redis_cmd('HGETALL', "psd:{order:$_[0]}"); return { @$h } }
sub timeline_len { redis_cmd('XLEN', "psd:{order:$_[0]}:events") }

# the value of one Prometheus row, "name{labels}" as printed; 0 if absent
sub metric {
    my ($row) = @_;
    my $r = http_get('/metrics');
    return $r->{body} =~ /^\Q$row\E (\d+)$/m ? $1 : 0;
}

sub wh_metric { metric("psd_webhook_requests_total{result=\"$_[0]\"}") }

# all webhook and order metrics, to compare before and after
sub all_metrics {
    my $b = http_get('/metrics')->{body};
    my %m;
    $m{$1} = $2 while $b =~ /^(psd_(?:webhook|orders|payments)_\S+) (\d+)$/mg;
    return \%m;
}

sub metric_delta {
    my ($before, $after) = @_;
    my %d;
    for (keys %$after) {
        my $v = $after->{$_} - ($before->{$_} // 0);
        $d{$_} = $v if $v;
    }
    return \%d;
}

run_tests();

__DATA__

=== TEST 1: the fixed vectors: Perl signs them alike, and nginx decides each as the vector says
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    # the vectors are from 2017 to 2023: an old clock through a wide tolerance
    psd_webhook_tolerance 20y;
    location = /stripe/new { psd_webhook stripe; psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new; }
    location = /stripe/both {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_old;
    }
    location = /stripe/now {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
        psd_webhook_tolerance 300;
    }
    location = /std/new { psd_webhook standard; psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/std_new; }
    location = /std/both {
        psd_webhook standard;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/std_new;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/std_old;
    }
    location = /std/svix { psd_webhook standard; psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/std_svix; }
    location = /std/now {
        psd_webhook standard;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/std_new;
        psd_webhook_tolerance 5m;
    }
    location = /metrics { psd_metrics; }
--- check
my %loc = ($STRIPE_NEW => 'new', "$STRIPE_NEW $STRIPE_OLD" => 'both', $STD_NEW => 'new',
           "$STD_NEW $STD_OLD" => 'both', $STD_SVIX => 'svix');
my $v0 = wh_metric('verified');
my $nok = 0;
for my $v (@{ $VECTORS->{stripe} }) {
    my $n = "stripe vector '$v->{name}'";
    if ($v->{signers}) {
        is stripe_header($v->{timestamp}, $v->{body}, @{ $v->{signers} }), $v->{header},
            "$n: the Perl signer makes the header";
    }
    # nginx's clock is now: the tolerance vectors are for the unit tests;
    # an empty body is answered empty_body whatever its signature (TEST 3)
    next if $v->{name} =~ /tolerance/ || $v->{body} eq '';
    my $loc = $loc{ join ' ', @{ $v->{secrets} } } or next;
    my $r = stripe_post("/stripe/$loc", $v->{body}, header => $v->{header});
    my ($status, $error) = $v->{expect} eq 'ok' ? (400, 'missing_order')  # vectors carry no order
        : $v->{expect} =~ /bad_signature|stale/ ? (401, $v->{expect}) : (400, $v->{expect});
    $nok++ if $v->{expect} eq 'ok';
    is_answer($r, $status, $error, $n);
}
for my $v (@{ $VECTORS->{standard} }) {
    my $n = "standard vector '$v->{name}'";
    if ($v->{signers}) {
        is std_signature($v->{id}, $v->{timestamp}, $v->{body}, @{ $v->{signers} }),
            $v->{signature}, "$n: the Perl signer makes the signature";
    }
    next if $v->{name} =~ /tolerance/ || $v->{body} eq '';
    my $loc = $loc{ join ' ', @{ $v->{secrets} } } or next;
    my $r = std_post("/std/$loc", $v->{body}, id => $v->{id}, t => $v->{timestamp},
                     signature => $v->{signature});
    my ($status, $error) = $v->{expect} eq 'ok' ? (400, 'unknown_event')  # no payment events
        : $v->{expect} =~ /bad_signature|stale/ ? (401, $v->{expect}) : (400, $v->{expect});
    $nok++ if $v->{expect} eq 'ok';
    is_answer($r, $status, $error, $n);
}
is wh_metric('verified') - $v0, $nok, "$nok vectors verified";
# with the default tolerance of a few minutes the vectors are stale
my ($v) = grep { $_->{name} eq 'one secret' } @{ $VECTORS->{stripe} };
is_answer(stripe_post('/stripe/now', $v->{body}, header => $v->{header}), 401,
          'stale_timestamp', 'stripe vector now');
($v) = grep { $_->{name} eq 'one key' } @{ $VECTORS->{standard} };
is_answer(std_post('/std/now', $v->{body}, id => $v->{id}, t => $v->{timestamp},
                   signature => $v->{signature}), 401, 'stale_timestamp', 'standard vector now');
--- no_error_log
[error]



=== TEST 2: a Stripe payment: applied to the order record, a replay changes nothing
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
    }
    location = /metrics { psd_metrics; }
--- check
my $m0 = all_metrics();
my $t = time - 60;
my $body = stripe_event(id => 'evt_pay_1', order => 'o-100', created => $t, amount => 4200,
                        currency => 'eur', pi => 'pi_100');
my $r = stripe_post('/wh', $body);
is_answer($r, 200, undef, 'payment_intent.succeeded');
is $r->{headers}{'content-type'}, 'application/json', 'JSON';
my $o = order('o-100');
is $o->{state}, 'paid', 'state paid';
is $o->{paid_at}, $t, 'paid_at: the event time';
is $o->{amount}, 4200, 'amount';
is $o->{currency}, 'eur', 'currency';
is $o->{payment_id}, 'pi_100', 'payment_id';
ok abs($o->{created_at} - time) < 5, 'created_at: now';
ok abs($o->{updated_at} - time) < 5, 'updated_at: now';
ok !exists $o->{revoked}, 'not revoked';
is timeline_len('o-100'), 1, 'one timeline entry';
my $e = redis_cmd('XRANGE', 'psd:{order:o-100}:events', '-', '+');
is_deeply { @{ $e->[0][1] } }, { event => 'evt_pay_1', kind => 'paid', at => $t, applied => 1 },
    'timeline entry';
my $ttl = redis_cmd('TTL', 'psd:{order:o-100}:evt:evt_pay_1');
ok $ttl > 7 * 86400 - 10 && $ttl <= 7 * 86400, "dedupe key kept 7 days by default (TTL $ttl)";
my $m1 = all_metrics();
is_deeply metric_delta($m0, $m1), { 'psd_webhook_requests_total{result="verified"}' => 1,
    'psd_webhook_requests_total{result="applied"}' => 1, 'psd_orders_paid_total' => 1 },
    'metrics: verified, applied, paid';

# the same delivery again (the gateway retries): 200, nothing changes
my $before = redis_cmd('HGETALL', 'psd:{order:o-100}');
sleep 1;
is_answer(stripe_post('/wh', $body), 200, undef, 'replay');
is_deeply redis_cmd('HGETALL', 'psd:{order:o-100}'), $before, 'replay: order unchanged';
is timeline_len('o-100'), 1, 'replay: no timeline entry';
is_deeply metric_delta($m1, all_metrics()), { 'psd_webhook_requests_total{result="verified"}' => 1,
    'psd_webhook_requests_total{result="duplicate"}' => 1 }, 'metrics: verified, duplicate';
# a new event id of the same kind: recorded, the state stays
is_answer(stripe_post('/wh', stripe_event(id => 'evt_pay_2', order => 'o-100', type => 'charge.succeeded')),
          200, undef, 'charge.succeeded for a paid order');
is order('o-100')->{paid_at}, $t, 'paid_at unchanged';
is timeline_len('o-100'), 2, 'but in the timeline';
is_deeply { @{ redis_cmd('XRANGE', 'psd:{order:o-100}:events', '-', '+')->[1][1] } }->{applied}, 2,
    'marked as outranked (applied 2)';
--- no_error_log
[error]



=== TEST 3: Stripe rejections: headers, signature, tolerance edges, body and event errors
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
    }
    location = /metrics { psd_metrics; }
--- check
my $m0 = all_metrics();
my $ok = stripe_event(order => 'o-300');
is_answer(stripe_post('/wh', $ok, header => undef), 400, 'missing_header', 'no Stripe-Signature');
is_answer(stripe_post('/wh', $ok, header => 'hello'), 400, 'malformed_header', 'garbage header');
is_answer(stripe_post('/wh', $ok, header => 't=' . time), 401, 'bad_signature', 'no v1');
is_answer(stripe_post('/wh', $ok, secrets => [$STRIPE_OLD]), 401, 'bad_signature', 'another secret');
is_answer(stripe_post('/wh', $ok, header => stripe_header(time, $ok . ' ')), 401, 'bad_signature',
          'signature of another body');
is_answer(stripe_post('/wh', $ok . ' ', header => stripe_header(time, $ok)), 401, 'bad_signature',
          'body changed after signing');
is_answer(stripe_post('/wh', $ok, t => time - 301), 401, 'stale_timestamp', 't = now - 301');
is_answer(stripe_post('/wh', $ok, t => time + 301), 401, 'stale_timestamp', 't = now + 301');
is_answer(stripe_post('/wh', $ok, t => time - 298), 200, undef, 't = now - 298');
is_answer(stripe_post('/wh', stripe_event(order => 'o-300'), t => time + 298), 200, undef, 't = now + 298');
is_answer(stripe_post('/wh', 'not json'), 400, 'invalid_json', 'signed, not JSON');
is_answer(stripe_post('/wh', '[1,2,3]'), 400, 'invalid_json', 'signed JSON array');
is_answer(stripe_post('/wh', '{"id":"evt_x","id":"evt_y"}'), 400, 'invalid_json', 'duplicate member');
is_answer(stripe_post('/wh', stripe_event(order => 'o-300', type => 'customer.created')), 400,
          'unknown_event', 'unknown event type');
is_answer(stripe_post('/wh', '{"id":"evt_nt","data":{"object":{"metadata":{"order_id":"o-300"}}}}'),
          400, 'unknown_event', 'no type');
is_answer(stripe_post('/wh', stripe_event()), 400, 'missing_order', 'no order id');
is_answer(stripe_post('/wh', '{"id":"evt_n","type":"charge.refunded","data":{"object":{"metadata":{"order_id":42}}}}'),
          400, 'missing_order', 'order id not a string');
for my $bad ('o 1', 'o/1', '', 'o{1}', 'x' x 65, "o\x{e9}") {
    my $n = 'order id ' . JSON::PP->new->ascii->encode([$bad]);
    is_answer(stripe_post('/wh', JSON::PP->new->ascii->canonical->encode({ id => "evt_$SEQ", type => 'charge.refunded',
        data => { object => { metadata => { order_id => $bad } } } })), 400, 'invalid_order', $n);
}
is_answer(stripe_post('/wh', stripe_event(order => 'o-' . ('x' x 62))), 200, undef, '64-character order id');
is_answer(stripe_post('/wh', '{"type":"charge.refunded","data":{"object":{"metadata":{"order_id":"o-300"}}}}'),
          400, 'missing_event_id', 'no event id');
# (a signed empty body must not reach the JSON parser: empty_body, not invalid_json)
is_answer(stripe_post('/wh', ''), 400, 'empty_body', 'empty body');
my $r = http_get('/wh');
is_answer($r, 405, 'method_not_allowed', 'GET');
# nginx keeps a body of up to 1.25 x client_body_buffer_size in one buffer
is_answer(stripe_post('/wh', ' ' x 100000 . $ok), 413, 'body_too_large', 'body above client_body_buffer_size');
is_answer(stripe_post('/wh', ' ' x 60000 . stripe_event(order => 'o-300')), 200, undef, 'body of 60 KB');
is timeline_len('o-300'), 3, 'only the three good events reached the order';
my $d = metric_delta($m0, all_metrics());
is $d->{'psd_webhook_requests_total{result="bad_signature"}'}, 6, 'bad_signature and stale: 6';
is $d->{'psd_webhook_requests_total{result="applied"}'}, 2, 'applied: 2 (o-300 paid, the long order id)';
is $d->{'psd_webhook_requests_total{result="outranked"}'}, 2, 'outranked: 2 (o-300 was paid already)';
is $d->{'psd_webhook_requests_total{result="ignored"}'}, 5, 'ignored (unknown event, no order, no id): 5';
--- no_error_log
[error]



=== TEST 4: bodies that arrive late or chunked are verified whole
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
    }
    location = /pass {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
        psd_webhook_pass on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/echo;
    }
    location = /echo {
        return 200 "len=$content_length";
    }
--- check
my $body = stripe_event(id => 'evt_slow', order => 'o-450', type => 'charge.failed');
my $r = slow_request(stripe_raw('/wh', $body), 40, 0.3);
is_answer($r, 200, undef, 'body in two pieces, 0.3 s apart');
is order('o-450')->{failed_attempts}, 1, 'applied';
$r = slow_request(stripe_raw('/wh', stripe_event(order => 'o-450'), secrets => [$STRIPE_OLD]), 40, 0.3);
is_answer($r, 401, 'bad_signature', 'late body, bad signature');
$r = http_request(chunked(stripe_raw('/wh', stripe_event(id => 'evt_chunked', order => 'o-450')), 50));
is_answer($r, 200, undef, 'chunked body in pieces of 50 bytes');
is order('o-450')->{state}, 'paid', 'applied';
$r = http_request(chunked(stripe_raw('/wh', stripe_event(order => 'o-451') . ' '), 50)
                  =~ s/ \r\n0\r\n/!\r\n0\r\n/r);
is_answer($r, 401, 'bad_signature', 'chunked body changed in its last chunk');
my $big = stripe_event(id => 'evt_big', order => 'o-452') . ' ' x 50000;
$r = slow_request(chunked(stripe_raw('/wh', $big), 8000), 20000, 0.2);
is_answer($r, 200, undef, 'a 50 KB chunked body, late');
is order('o-452')->{state}, 'paid', 'applied';
my $pb = stripe_event(id => 'evt_slow_pass', order => 'o-453');
$r = slow_request(stripe_raw('/pass', $pb), 40, 0.3);
is $r->{status}, 200, 'psd_webhook_pass, late body: 200';
is $r->{body}, 'len=' . length($pb), 'the application got the whole body';
is order('o-453')->{state}, 'paid', 'applied';
--- no_error_log
[error]



=== TEST 5: rotation: two secret files, either verifies; several v1 values in one header
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_old;
    psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
    location = /wh { psd_webhook stripe; }
    location = /wh/new {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
    }
--- check
my $t = time;
for my $c ([[$STRIPE_OLD], 200, '/wh', 'old secret'], [[$STRIPE_NEW], 200, '/wh', 'new secret'],
           [[$STRIPE_OLD, $STRIPE_NEW], 200, '/wh', 'signed with both'],
           [['whsec_unknown_0000000000000000'], 401, '/wh', 'unknown secret'],
           [[$STRIPE_OLD], 401, '/wh/new', 'old secret where only the new one is configured'],
           [['whsec_unknown_0000000000000000', $STRIPE_NEW], 200, '/wh/new', 'a bad v1, then a good one'],
           [[$STRIPE_NEW, 'whsec_unknown_0000000000000000'], 200, '/wh/new', 'a good v1, then a bad one'])
{
    my ($secrets, $status, $path, $name) = @$c;
    is_answer(stripe_post($path, stripe_event(order => 'o-400'), secrets => $secrets),
              $status, $status == 200 ? undef : 'bad_signature', $name);
}
my $body = stripe_event(order => 'o-400');
my $h = "t=$t,v0=" . hmac_sha256_hex("$t.$body", $STRIPE_NEW) . ',v1=' . hmac_sha256_hex("$t.$body", $STRIPE_NEW);
is_answer(stripe_post('/wh/new', $body, header => $h), 200, undef, 'v0 before v1 is ignored');
$body = stripe_event(order => 'o-400');
$h = "v1=" . hmac_sha256_hex("$t.$body", $STRIPE_NEW) . ",t=$t";
is_answer(stripe_post('/wh/new', $body, header => $h), 200, undef, 't after v1');
is_answer(stripe_post('/wh/new', stripe_event(order => 'o-400'), header => $h), 401, 'bad_signature',
          'that header on another body');
is timeline_len('o-400'), 7, 'seven events recorded';
--- no_error_log
[error]



=== TEST 6: Standard Webhooks: webhook-id dedupes, rotation, several signatures, data.order_id
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /wh {
        psd_webhook standard;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/std_new;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/std_old;
    }
    location = /metrics { psd_metrics; }
--- check
my $m0 = all_metrics();
my $body = std_event(order => 'o-500', amount => 990, currency => 'usd', pi => 'pay_500');
my $r = std_post('/wh', $body, id => 'msg_500a');
is_answer($r, 200, undef, 'payment.succeeded');
my $o = order('o-500');
is $o->{state}, 'paid', 'paid';
is $o->{amount}, 990, 'amount from data';
is $o->{payment_id}, 'pay_500', 'payment id from data.id';
ok redis_cmd('EXISTS', 'psd:{order:o-500}:evt:msg_500a'), 'dedupe by the webhook-id header';
is_answer(std_post('/wh', $body, id => 'msg_500a'), 200, undef, 'same webhook-id again');
is timeline_len('o-500'), 1, 'applied once';
is_answer(std_post('/wh', std_event(order => 'o-500', type => 'payment.failed'), id => 'msg_500b',
                   secrets => [$STD_OLD]), 200, undef, 'old key');
is order('o-500')->{failed_attempts}, 1, 'payment.failed counted';
is_answer(std_post('/wh', std_event(order => 'o-500', type => 'payment.refunded'), id => 'msg_500c',
                   secrets => ['whsec_' . encode_base64('x' x 32, ''), $STD_NEW]), 200, undef,
          'a bad signature, then a good one');
is order('o-500')->{state}, 'refunded', 'refunded';
is_answer(std_post('/wh', std_event(order => 'o-500', type => 'dispute.created'), id => 'msg_500d'),
          200, undef, 'dispute.created');
is order('o-500')->{state}, 'chargeback', 'chargeback';
my $ok = std_event(order => 'o-501');
is_answer(std_post('/wh', $ok, secrets => ['whsec_' . encode_base64('y' x 32, '')]), 401,
          'bad_signature', 'unknown key');
is_answer(std_post('/wh', $ok, t => time - 301), 401, 'stale_timestamp', 'webhook-timestamp now - 301');
is_answer(std_post('/wh', $ok, t => time + 301), 401, 'stale_timestamp', 'webhook-timestamp now + 301');
is_answer(std_post('/wh', $ok, id => undef), 400, 'missing_header', 'no webhook-id');
is_answer(std_post('/wh', $ok, t => undef), 400, 'missing_header', 'no webhook-timestamp');
is_answer(std_post('/wh', $ok, signature => undef), 400, 'missing_header', 'no webhook-signature');
is_answer(std_post('/wh', $ok, id => 'msg.1'), 400, 'malformed_header', 'id with a dot');
is_answer(std_post('/wh', $ok, t => 'yesterday'), 400, 'malformed_header', 'timestamp not decimal');
is_answer(std_post('/wh', $ok, signature => 'v1,abc'), 400, 'malformed_header', 'short signature');
is_answer(std_post('/wh', std_event()), 400, 'missing_order', 'no data.order_id');
is_answer(std_post('/wh', std_event(order => 'o-501', type => 'payment_intent.succeeded')), 400,
          'unknown_event', 'a Stripe type is unknown here');
ok !redis_cmd('EXISTS', 'psd:{order:o-501}'), 'no record for o-501';
my $d = metric_delta($m0, all_metrics());
is $d->{'psd_webhook_requests_total{result="applied"}'}, 4, 'applied 4';
is $d->{'psd_webhook_requests_total{result="duplicate"}'}, 1, 'duplicate 1';
is $d->{'psd_payments_failed_total'}, 1, 'payments_failed_total 1';
is $d->{'psd_orders_refunded_total'}, 1, 'orders_refunded_total 1';
is $d->{'psd_orders_chargeback_total'}, 1, 'orders_chargeback_total 1';
--- no_error_log
[error]



=== TEST 7: two concurrent deliveries of one event: both 200, applied once
--- workers: 2
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=1s;
--- config
    client_body_buffer_size 64k;
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
    }
    location = /metrics { psd_metrics; }
--- check
my $m0 = all_metrics();
for my $i (1 .. 5) {
    my $raw = stripe_raw('/wh', stripe_event(id => "evt_par_$i", order => "o-60$i",
                                             type => 'payment_intent.payment_failed'));
    my @r = @{ http_parallel([($raw) x 4]) };
    is_deeply [map { $_->{status} } @r], [200, 200, 200, 200], "event $i: four deliveries, all 200";
    is_deeply [map { $_->{body} } @r], [(qq({"received":true}\n)) x 4], "event $i: all received";
    is order("o-60$i")->{failed_attempts}, 1, "event $i: failed_attempts 1";
    is timeline_len("o-60$i"), 1, "event $i: one timeline entry";
}
my $d = metric_delta($m0, all_metrics());
is $d->{'psd_webhook_requests_total{result="applied"}'}, 5, 'applied 5';
is $d->{'psd_webhook_requests_total{result="duplicate"}'}, 15, 'duplicate 15';
is $d->{'psd_payments_failed_total'}, 5, 'payments_failed_total 5';
--- no_error_log
[error]



=== TEST 8: orders only move forward: refund before an older paid, chargeback, failures after payment
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
    }
    location = /metrics { psd_metrics; }
--- check
my $m0 = all_metrics();
my $t = time - 1000;
is_answer(stripe_post('/wh', stripe_event(id => 'evt_r', order => 'o-700', type => 'charge.refunded',
                                          created => $t + 100)), 200, undef, 'refund arrives first');
my $o = order('o-700');
is $o->{state}, 'refunded', 'refunded';
is $o->{refunded_at}, $t + 100, 'refunded_at';
ok $o->{revoked} && abs($o->{revoked} - time) < 5, 'revoked: now';
is_answer(stripe_post('/wh', stripe_event(id => 'evt_p', order => 'o-700', created => $t)), 200, undef,
          'the older paid event');
$o = order('o-700');
is $o->{state}, 'refunded', 'still refunded';
ok !exists $o->{paid_at}, 'no paid_at';
is_answer(stripe_post('/wh', stripe_event(id => 'evt_c', order => 'o-700', type => 'charge.dispute.created',
                                          created => $t + 200)), 200, undef, 'dispute');
is order('o-700')->{state}, 'chargeback', 'chargeback';
is_answer(stripe_post('/wh', stripe_event(id => 'evt_r2', order => 'o-700', type => 'charge.refunded')),
          200, undef, 'a refund after the chargeback');
is order('o-700')->{state}, 'chargeback', 'still chargeback';
my $tl = redis_cmd('XRANGE', 'psd:{order:o-700}:events', '-', '+');
is_deeply [map { my %e = @{ $_->[1] }; "$e{event}:$e{kind}:$e{applied}" } @$tl],
    ['evt_r:refunded:1', 'evt_p:paid:2', 'evt_c:chargeback:1', 'evt_r2:refunded:2'], 'timeline';

# failures count whatever the state
is_answer(stripe_post('/wh', stripe_event(id => 'evt_p8', order => 'o-800')), 200, undef, 'o-800 paid');
for (1 .. 3) {
    is_answer(stripe_post('/wh', stripe_event(id => "evt_f8_$_", order => 'o-800', type => 'charge.failed',
                                              created => $t + $_)), 200, undef, "failure $_");
}
$o = order('o-800');
is $o->{state}, 'paid', 'still paid';
is $o->{failed_attempts}, 3, 'failed_attempts 3';
is $o->{last_failure_at}, $t + 3, 'last_failure_at';
my $d = metric_delta($m0, all_metrics());
is $d->{'psd_webhook_requests_total{result="outranked"}'}, 2, 'outranked 2';
is $d->{'psd_orders_paid_total'}, 1, 'paid_total counts the one paid that applied';
is $d->{'psd_orders_refunded_total'}, 1, 'refunded_total 1';
is $d->{'psd_orders_chargeback_total'}, 1, 'chargeback_total 1';
is $d->{'psd_payments_failed_total'}, 3, 'payments_failed_total 3';
--- no_error_log
[error]



=== TEST 9: the refund story: issue a link, pay, download, refund: the same link is revoked
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    client_body_buffer_size 64k;
    location /dl/ {
        psd_link on;
        psd_link_revocation on;
        add_header X-Link $psd_link_status always;
    }
    location = /api/issue {
        psd_link_issue;
        psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
    }
    location = /metrics { psd_metrics; }
--- user_files
>>> dl/course.zip
the course
--- check
my $m0 = all_metrics();
my $r = api_post('/api/issue', '{"path":"/dl/course.zip","ttl":3600,"order":"ord_42"}');
is $r->{status}, 200, 'link issued';
my $url = json_body($r)->{url};
my $other = json_body(api_post('/api/issue', '{"path":"/dl/course.zip","ttl":3600,"order":"ord_43"}'))->{url};
is_answer(stripe_post('/wh', stripe_event(id => 'evt_42p', order => 'ord_42')), 200, undef, 'pay webhook');
$r = http_get($url);
is $r->{status}, 200, 'download: 200';
is $r->{body}, "the course\n", 'download: the file';
is_answer(stripe_post('/wh', stripe_event(id => 'evt_42r', order => 'ord_42', type => 'charge.refunded')),
          200, undef, 'refund webhook');
$r = http_get($url);
is $r->{status}, 410, 'the same link: 410';
is json_body($r)->{error}, 'link_revoked', 'link_revoked';
is $r->{headers}{'x-link'}, 'revoked', '$psd_link_status revoked';
is http_get($other)->{status}, 200, "another order's link still works";
my $d = metric_delta($m0, all_metrics());
is $d->{'psd_orders_paid_total'}, 1, 'paid_total 1';
is $d->{'psd_orders_refunded_total'}, 1, 'refunded_total 1';
--- no_error_log
[error]



=== TEST 10: psd_webhook_pass: the verified body goes on to the application
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
        psd_webhook_pass on;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/app;
    }
    location = /app {
        client_body_buffer_size 64k;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/echo;
    }
    location = /echo {
        # echoes what the application got: its body and signature header
        return 200 "sig=$http_stripe_signature len=$content_length";
    }
    location = /metrics { psd_metrics; }
--- check
my $m0 = all_metrics();
my $body = stripe_event(id => 'evt_pass', order => 'o-900');
my $raw = stripe_raw('/wh', $body);
my ($sig) = $raw =~ /^Stripe-Signature: (.*?)\r$/m;
my $r = http_request($raw);
is $r->{status}, 200, 'passed: 200 from the application';
is $r->{body}, "sig=$sig len=" . length($body), 'the application got the body and the header';
is order('o-900')->{state}, 'paid', 'and the order was applied';
# an event nginx does not know is passed too
my $unknown = stripe_event(order => 'o-900', type => 'customer.updated');
$r = stripe_post('/wh', $unknown);
is $r->{status}, 200, 'unknown event: passed';
like $r->{body}, qr/^sig=t=\d+,v1=\w+ len=\d+$/, 'unknown event: the application got it';
# a bad signature never reaches it
$r = stripe_post('/wh', $body, secrets => [$STRIPE_OLD]);
is_answer($r, 401, 'bad_signature', 'bad signature: not passed');
$r = stripe_post('/wh', $body, header => undef);
is_answer($r, 400, 'missing_header', 'no header: not passed');
my $d = metric_delta($m0, all_metrics());
is $d->{'psd_webhook_requests_total{result="ignored"}'}, 1, 'ignored 1';
is $d->{'psd_webhook_requests_total{result="applied"}'}, 1, 'applied 1';
--- no_error_log
[error]



=== TEST 11: psd_webhook_event maps types, psd_webhook_order_path finds the order elsewhere
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
        psd_webhook_event invoice.paid paid;
        psd_webhook_event charge.refund.updated refunded;
        psd_webhook_order_path data.object.client_reference_id;
    }
    location = /std {
        psd_webhook standard;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/std_new;
        psd_webhook_event order.completed paid;
        psd_webhook_order_path order;
    }
--- check
my $b = canonical_json({ id => 'evt_inv', type => 'invoice.paid', created => time,
    data => { object => { id => 'in_1', amount => 700, client_reference_id => 'o-1000',
                          metadata => { order_id => 'wrong' } } } });
is_answer(stripe_post('/wh', $b), 200, undef, 'invoice.paid mapped to paid');
is order('o-1000')->{state}, 'paid', 'paid, order from client_reference_id';
ok !redis_cmd('EXISTS', 'psd:{order:wrong}'), 'metadata.order_id not used';
is_answer(stripe_post('/wh', stripe_event(order => 'o-1000')), 400, 'missing_order',
          'the default path is not looked at');
$b = canonical_json({ id => 'evt_ru', type => 'charge.refund.updated',
    data => { object => { client_reference_id => 'o-1000' } } });
is_answer(stripe_post('/wh', $b), 200, undef, 'custom refunded');
is order('o-1000')->{state}, 'refunded', 'refunded';
# built-in types still work
$b = canonical_json({ id => 'evt_cs', type => 'checkout.session.completed',
    data => { object => { client_reference_id => 'o-1001' } } });
is_answer(stripe_post('/wh', $b), 200, undef, 'built-in checkout.session.completed');
is order('o-1001')->{state}, 'paid', 'paid';
$b = canonical_json({ type => 'order.completed', order => 'o-1002', data => {} });
is_answer(std_post('/std', $b), 200, undef, 'standard: custom type, top-level order');
is order('o-1002')->{state}, 'paid', 'paid';
--- no_error_log
[error]



=== TEST 12: psd_webhook_event ignore: the event is acknowledged, not applied
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
        psd_webhook_event charge.succeeded ignore;
    }
    location = /metrics { psd_metrics; }
--- check
my $i0 = wh_metric('ignored');
# a gateway retries every delivery that is not answered 2xx, for days
is_answer(stripe_post('/wh', stripe_event(order => 'o-1100', type => 'charge.succeeded')), 200, undef,
          'ignored type: acknowledged');
ok !redis_cmd('EXISTS', 'psd:{order:o-1100}'), 'not applied';
is wh_metric('ignored') - $i0, 1, 'counted as ignored';
is_answer(stripe_post('/wh', stripe_event(order => 'o-1100')), 200, undef, 'other types still apply');
is order('o-1100')->{state}, 'paid', 'paid';
--- no_error_log
[error]



=== TEST 13: psd_webhook_dedupe sets how long event ids are remembered
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
        psd_webhook_dedupe 2s;
    }
--- check
my $body = stripe_event(id => 'evt_d', order => 'o-1200', type => 'charge.failed');
is_answer(stripe_post('/wh', $body), 200, undef, 'first delivery');
my $pttl = redis_cmd('PTTL', 'psd:{order:o-1200}:evt:evt_d');
ok $pttl > 0 && $pttl <= 2000, "dedupe key lives 2 s (PTTL $pttl)";
is_answer(stripe_post('/wh', $body), 200, undef, 'replay inside 2 s');
is order('o-1200')->{failed_attempts}, 1, 'applied once';
ok wait_until(sub { !redis_cmd('EXISTS', 'psd:{order:o-1200}:evt:evt_d') }, 4), 'forgotten after 2 s';
is_answer(stripe_post('/wh', $body), 200, undef, 'a late replay');
is order('o-1200')->{failed_attempts}, 2, 'is applied again';
--- no_error_log
[error]



=== TEST 14: Redis unreachable: 503 with Retry-After, the gateway retries
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT connect_timeout=200ms timeout=200ms;
--- config
    client_body_buffer_size 64k;
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
    }
    location = /metrics { psd_metrics; }
--- check
my $f0 = wh_metric('failed');
my $r = stripe_post('/wh', stripe_event(order => 'o-1300'));
is_answer($r, 503, 'backend_unavailable', 'Redis down');
like $r->{headers}{'retry-after'}, qr/^\d+$/, 'Retry-After';
is wh_metric('failed') - $f0, 1, 'counted as failed';
is_answer(stripe_post('/wh', stripe_event(order => 'o-1300'), secrets => [$STRIPE_OLD]), 401,
          'bad_signature', 'signatures are still checked first');



=== TEST 15: Redis stops answering: 503 after the deadline; recovery
--- no_cluster: stops the single redis-server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
--- config
    client_body_buffer_size 64k;
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
    }
--- check
my $body = stripe_event(id => 'evt_stop', order => 'o-1400');
is_answer(stripe_post('/wh', stripe_event(order => 'o-1401')), 200, undef, 'healthy');
redis_stop();
my $r = stripe_post('/wh', $body);
redis_cont();
is_answer($r, 503, 'backend_unavailable', 'stopped Redis');
# the command may still be applied once Redis runs again; a retry is then a duplicate
ok wait_until(sub { stripe_post('/wh', $body)->{status} == 200 }, 8), 'the retry is acknowledged';
is order('o-1400')->{state}, 'paid', 'paid';
is timeline_len('o-1400'), 1, 'applied once';



=== TEST 16: psd_webhook without psd_webhook_secret
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /wh { psd_webhook stripe; }
--- must_die
--- error_log
"psd_webhook" needs "psd_webhook_secret"



=== TEST 17: psd_webhook with an unknown kind
--- config
    location = /wh {
        psd_webhook paypal;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
    }
--- must_die
--- error_log
invalid value "paypal"



=== TEST 18: psd_webhook_event with an unknown kind
--- config
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
        psd_webhook_event charge.succeeded shipped;
    }
--- must_die
--- error_log
invalid event kind "shipped" in "psd_webhook_event"



=== TEST 19: psd_webhook_order_path with an empty part
--- config
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
        psd_webhook_order_path data..order_id;
    }
--- must_die
--- error_log
invalid JSON path "data..order_id" in "psd_webhook_order_path"



=== TEST 20: a secret file that does not exist
--- config
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/no_such_secret;
    }
--- must_die
--- error_log
cannot open secret file



=== TEST 21: a Standard Webhooks secret that is not a key is refused by nginx -t
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /wh {
        psd_webhook standard;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/std_new;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/std_invalid;
    }
--- must_die
--- error_log eval
[qr/std_invalid|Standard Webhooks|psd_webhook_secret/]



=== TEST 22: psd_webhook_dedupe 0 is refused by nginx -t
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /wh {
        psd_webhook stripe;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe_new;
        psd_webhook_dedupe 0;
    }
--- must_die
--- error_log eval
[qr/psd_webhook_dedupe/]
