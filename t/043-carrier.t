# psd_webhook carrier: delivery tracking webhooks of two carrier payload
# shapes (an EasyPost-like nested event with an id and RFC 3339 times,
# and a flat one with Unix times and no id), proven by an HMAC-SHA256
# header (hex with a prefix, base64) or a shared secret, with secret
# rotation; every refusal; dedupe by event id and by the event's digest
# (also under concurrent deliveries); out-of-order events; unknown and
# ignored statuses; the customer and staff status views; psd_webhook_pass;
# the metrics; Redis failures; and configuration errors.
#
# Every block uses its own order ids and Redis is flushed between blocks;
# metrics are compared as deltas (TEST_NGINX_USE_HUP=1 keeps them).
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link;      # write_keys, write_key_file, sign_link, json_body, wait_until
use Digest::SHA qw(hmac_sha256_hex hmac_sha256_base64 hmac_sha256);
use JSON::PP ();

use vars qw($EP_NEW $EP_OLD $FLAT $SHARED $STRIPE $SEQ);

$EP_NEW = 'carrier-easypost-secret-2026-b-4f1c9e';
$EP_OLD = 'carrier-easypost-secret-2025-a-77d02b';
$FLAT = 'carrier-flat-hmac-secret-0a9b8c7d6e5f';
$SHARED = 'carrier-shared-token-5e4d3c2b1a09f8e7';
$STRIPE = 'whsec_test_new_7a1c3e5b9d2f4a6c8e0b1d3f5a7c9e1b';

write_keys();           # link keys k1, k2 and keys/api
write_key_file('ep_new', "$EP_NEW\n");
write_key_file('ep_old', $EP_OLD);
write_key_file('flat', $FLAT);
write_key_file('shared', "$SHARED\n");
write_key_file('stripe', $STRIPE);

$SEQ = 0;

sub canonical_json { JSON::PP->new->canonical->encode($_[0]) }

sub iso { my @t = gmtime $_[0]; sprintf '%04d-%02d-%02dT%02d:%02d:%02dZ', $t[5] + 1900, $t[4] + 1, @t[3, 2, 1, 0] }

# ep_event(order => ..., status => ..., t => ..., tracking => ..., id => ...):
# an EasyPost-like tracker event, times in RFC 3339
sub ep_event {
    my (%o) = @_;
    return canonical_json({ id => $o{id} // sprintf('evt_%d_%d', $$, ++$SEQ), object => 'Event',
        description => 'tracker.updated', mode => 'test',
        result => { id => 'trk_1', object => 'Tracker', carrier => 'USPS',
                    exists $o{order} ? (reference => $o{order}) : (reference => 'o-none'),
                    tracking_code => $o{tracking} // 'EZ1000000001',
                    status => $o{status} // 'in_transit',
                    updated_at => $o{iso} // iso($o{t} // time),
                    tracking_details => [ { status => 'pre_transit', message => 'Label created' } ] } });
}

# flat_event(order => ..., event => ..., t => ..., tracking => ...): a flat
# event, Unix time, no id
sub flat_event {
    my (%o) = @_;
    return canonical_json({ order_ref => $o{order}, event => $o{event} // 'IN_TRANSIT',
        occurred_at => $o{t} // time, exists $o{tracking} ? (tracking_number => $o{tracking})
                                                          : (tracking_number => '00340434161094042557'),
        location => { city => 'Leipzig', country => 'DE' } });
}

sub raw_post {
    my ($path, $body, @headers) = @_;
    return "POST $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\n" . join('', map { "$_\r\n" } @headers)
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
}

# ep_raw($body, secret => ..., header => ...): the EasyPost-like request to
# /ep, "X-Hmac-Signature: hmac-sha256-hex=<hex>"; header => undef: none
sub ep_raw {
    my ($body, %o) = @_;
    my $h = exists $o{header} ? $o{header}
        : 'hmac-sha256-hex=' . hmac_sha256_hex($body, $o{secret} // $EP_NEW);
    return raw_post($o{path} // '/ep', $body, defined $h ? ("X-Hmac-Signature: $h") : ());
}

sub ep_post { http_request(ep_raw(@_)) }

# flat_post($body, token => ...): the flat event to /flat, "X-Carrier-Token"
sub flat_post {
    my ($body, %o) = @_;
    my $t = exists $o{token} ? $o{token} : $SHARED;
    return http_request(raw_post($o{path} // '/flat', $body, defined $t ? ("X-Carrier-Token: $t") : ()));
}

# b64_post($body, secret => ...): the flat event to /flat64, base64 HMAC
sub b64_post {
    my ($body, %o) = @_;
    my $s = exists $o{sig} ? $o{sig} : hmac_sha256_base64($body, $o{secret} // $FLAT) . '=';
    return http_request(raw_post('/flat64', $body, defined $s ? ("Carrier-Signature: $s") : ()));
}

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
sub timeline {
    my $e = redis_cmd('XRANGE', "psd:{order:$_[0]}:events", '-', '+');
    return [ map { { @{ $_->[1] } } } @$e ];
}

sub all_metrics {
    my $b = http_get('/metrics')->{body};
    my %m;
    $m{$1} = $2 while $b =~ /^(psd_(?:carrier|deliver|webhook)\S+) (\d+)$/mg;
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

sub c { "psd_carrier_webhooks_total{result=\"$_[0]\"}" }
sub e { "psd_delivery_events_total{state=\"$_[0]\"}" }
sub o { "psd_deliveries_total{outcome=\"$_[0]\"}" }

run_tests();

__DATA__

=== TEST 1: the nested shape: a journey applied to the order, HMAC hex with a prefix, rotation, replays
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /ep {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/ep_new;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/ep_old;
        psd_webhook_signature hmac-sha256 X-Hmac-Signature hex prefix=hmac-sha256-hex=;
        psd_webhook_carrier_name easypost;
        psd_webhook_carrier_path order result.reference;
        psd_webhook_carrier_path tracking result.tracking_code;
        psd_webhook_carrier_path status result.status;
        psd_webhook_carrier_path time result.updated_at;
        psd_webhook_carrier_path event_id id;
        psd_webhook_carrier_status pre_transit label_created;
        psd_webhook_carrier_status return_to_sender returned;
        psd_webhook_carrier_status failure exception;
    }
    location = /metrics { psd_metrics; }
--- check
my $m0 = all_metrics();
my $t = time - 3600;
my $r = ep_post(ep_event(id => 'evt_a1', order => 'o-100', status => 'pre_transit', t => $t));
is_answer($r, 200, undef, 'pre_transit');
is $r->{headers}{'content-type'}, 'application/json', 'JSON';
my $o = order('o-100');
is $o->{delivery_state}, 'label_created', 'mapped to label_created';
is $o->{delivery_at}, $t, 'delivery_at: the event time';
is $o->{delivery_carrier}, 'easypost', 'carrier';
is $o->{delivery_tracking}, 'EZ1000000001', 'tracking';
is $o->{delivery_status}, 'pre_transit', "the carrier's status";
is $o->{state}, 'created', 'a new order record: created';
ok abs($o->{created_at} - time) < 5, 'created_at: now';
ok abs($o->{delivery_updated_at} - time) < 5, 'delivery_updated_at: now';
is_answer(ep_post(ep_event(id => 'evt_a2', order => 'o-100', status => 'in_transit', t => $t + 60)),
          200, undef, 'in_transit (a state name as the carrier spells it)');
is_answer(ep_post(ep_event(id => 'evt_a3', order => 'o-100', status => 'out_for_delivery',
                           iso => substr(iso($t + 120), 0, 19) . '.250+00:00'), secret => $EP_OLD),
          200, undef, 'out_for_delivery, signed with the old secret, a fractional time');
is order('o-100')->{delivery_state}, 'out_for_delivery', 'out_for_delivery';
is order('o-100')->{delivery_at}, $t + 120, 'the fraction dropped';
my $last = ep_event(id => 'evt_a4', order => 'o-100', status => 'delivered', t => $t + 180);
is_answer(ep_post($last), 200, undef, 'delivered');
$o = order('o-100');
is $o->{delivery_state}, 'delivered', 'delivered';
is $o->{delivery_at}, $t + 180, 'delivered at';
is_deeply [map { "$_->{event}:$_->{kind}:$_->{applied}:$_->{source}:$_->{status}" } @{ timeline('o-100') }],
    ['evt_a1:label_created:1:carrier:pre_transit', 'evt_a2:in_transit:1:carrier:in_transit',
     'evt_a3:out_for_delivery:1:carrier:out_for_delivery', 'evt_a4:delivered:1:carrier:delivered'],
    'the timeline: every event, applied';
is_deeply { map { $_ => timeline('o-100')->[0]{$_} } qw(at carrier tracking) },
    { at => $t, carrier => 'easypost', tracking => 'EZ1000000001' }, 'a timeline entry';
my $ttl = redis_cmd('TTL', 'psd:{order:o-100}:dlv:easypost:evt_a4');
ok $ttl > 7 * 86400 - 10 && $ttl <= 7 * 86400, "dedupe key kept psd_webhook_dedupe (TTL $ttl)";
my $m1 = all_metrics();
is_deeply metric_delta($m0, $m1), { c('verified') => 4, c('applied') => 4, e('label_created') => 1,
    e('in_transit') => 1, e('out_for_delivery') => 1, e('delivered') => 1, o('delivered') => 1 },
    'metrics: four verified and applied, one delivery';

# the carrier sends the last event again: 200, nothing changes
my $before = order('o-100');
sleep 1;
is_answer(ep_post($last), 200, undef, 'replay');
my $after = order('o-100');
is_deeply $after, $before, 'replay: the order unchanged';
is scalar @{ timeline('o-100') }, 4, 'replay: no timeline entry';
is_deeply metric_delta($m1, all_metrics()), { c('verified') => 1, c('duplicate') => 1 },
    'metrics: verified, duplicate';
# the payment side of another order is not touched
ok !redis_cmd('EXISTS', 'psd:{order:o-none}'), 'no other order written';
--- no_error_log
[error]



=== TEST 2: the flat shape: Unix times, a shared secret or a base64 HMAC, dedupe by the event's digest
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    psd_webhook_carrier_name dhl;
    psd_webhook_carrier_path order order_ref;
    psd_webhook_carrier_path tracking tracking_number;
    psd_webhook_carrier_path status event;
    psd_webhook_carrier_path time occurred_at;
    psd_webhook_carrier_status HANDED_OVER shipped;
    psd_webhook_carrier_status DELIVERY_FAILED exception;
    psd_webhook_carrier_status NOTIFIED ignore;
    location = /flat {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/shared;
        psd_webhook_signature shared X-Carrier-Token;
    }
    location = /flat64 {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/flat;
        psd_webhook_signature hmac-sha256 Carrier-Signature base64;
        psd_webhook_carrier_name dhl-express;
    }
    location = /metrics { psd_metrics; }
--- check
my $m0 = all_metrics();
my $t = time - 7200;
my $b1 = flat_event(order => 'A-1001', event => 'HANDED_OVER', t => $t);
is_answer(flat_post($b1), 200, undef, 'handed over (shared secret)');
my $o = order('A-1001');
is $o->{delivery_state}, 'shipped', 'mapped to shipped';
is $o->{delivery_at}, $t, 'delivery_at: the Unix time';
is $o->{delivery_carrier}, 'dhl', 'the carrier named at server level';
is $o->{delivery_tracking}, '00340434161094042557', 'tracking';
# no event id: the same event again (the keys in another order) is a duplicate
my $b1b = JSON::PP->new->encode({ occurred_at => $t, event => 'HANDED_OVER', order_ref => 'A-1001',
                                  tracking_number => '00340434161094042557', note => 'resent' });
is_answer(flat_post($b1b), 200, undef, 'the same event, another layout');
is scalar @{ timeline('A-1001') }, 1, 'deduplicated by the digest of carrier, tracking, status and time';
my ($key) = grep { /:dlv:dhl:h:/ } @{ redis_cmd('KEYS', 'psd:{order:A-1001}:*') };
ok $key, "dedupe key psd:{order:A-1001}:dlv:dhl:h:... ($key)";
is_answer(flat_post(flat_event(order => 'A-1001', event => 'HANDED_OVER', t => $t + 1)), 200, undef,
          'the same status a second later: a new event');
is scalar @{ timeline('A-1001') }, 2, 'recorded';
is_answer(flat_post(flat_event(order => 'A-1001', event => 'delivery_failed', t => $t + 100)), 200, undef,
          'delivery_failed (map compared without case)');
is order('A-1001')->{delivery_state}, 'exception', 'exception';
is order('A-1001')->{delivery_exceptions}, 1, 'one exception';
is_answer(flat_post(flat_event(order => 'A-1001', event => 'Out For Delivery', t => $t + 200)), 200, undef,
          '"Out For Delivery" is out_for_delivery');
is order('A-1001')->{delivery_state}, 'out_for_delivery', 'out_for_delivery';
# the base64 location, another carrier name: the same event is another carrier's
my $b2 = flat_event(order => 'A-1001', event => 'Delivered', t => $t + 300, tracking => 'JD0002');
is_answer(b64_post($b2), 200, undef, 'delivered (base64 HMAC)');
$o = order('A-1001');
is $o->{delivery_state}, 'delivered', 'delivered';
is $o->{delivery_carrier}, 'dhl-express', 'by the carrier that delivered';
is $o->{delivery_tracking}, 'JD0002', "and its tracking number";
# integer order ids and tracking numbers, a time with a fraction
is_answer(flat_post(canonical_json({ order_ref => 1002, event => 'IN_TRANSIT', occurred_at => "$t.5",
                                     tracking_number => 4711 })), 200, undef, 'numbers');
$o = order('1002');
is $o->{delivery_state}, 'in_transit', 'order 1002: in_transit';
is $o->{delivery_tracking}, '4711', 'tracking 4711';
is $o->{delivery_at}, $t, 'the fraction dropped';
# no tracking number: the state moves, the number stays unknown; a later one sets it
is_answer(flat_post(canonical_json({ order_ref => 'A-1003', event => 'IN_TRANSIT', occurred_at => $t })),
          200, undef, 'no tracking number');
ok !exists order('A-1003')->{delivery_tracking}, 'none recorded';
is_answer(flat_post(flat_event(order => 'A-1003', event => 'HANDED_OVER', t => $t - 10, tracking => 'LATE1')),
          200, undef, 'an older event with a tracking number');
is order('A-1003')->{delivery_state}, 'in_transit', 'the state stays';
is order('A-1003')->{delivery_tracking}, 'LATE1', 'the tracking number is taken';
is_deeply metric_delta($m0, all_metrics()), { c('verified') => 9, c('applied') => 7, c('duplicate') => 1,
    c('outranked') => 1, e('shipped') => 3, e('exception') => 1, e('out_for_delivery') => 1,
    e('delivered') => 1, e('in_transit') => 2, o('exception') => 1, o('delivered') => 1 },
    'metrics';
--- no_error_log
[error]



=== TEST 3: proofs: missing, malformed and wrong signatures, wrong shared secrets; nothing written
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    psd_webhook_carrier_path order order_ref;
    psd_webhook_carrier_path tracking tracking_number;
    psd_webhook_carrier_path status event;
    psd_webhook_carrier_path time occurred_at;
    location = /ep {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/ep_new;
        psd_webhook_signature hmac-sha256 X-Hmac-Signature hex prefix=hmac-sha256-hex=;
    }
    location = /flat {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/shared;
        psd_webhook_signature shared X-Carrier-Token;
    }
    location = /flat64 {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/flat;
        psd_webhook_signature hmac-sha256 Carrier-Signature base64;
    }
    location = /metrics { psd_metrics; }
--- check
my $m0 = all_metrics();
my $b = flat_event(order => 'o-300', event => 'delivered');
my $hex = hmac_sha256_hex($b, $EP_NEW);
is_answer(ep_post($b, header => undef), 400, 'missing_header', 'hmac: no header');
is_answer(ep_post($b, header => $hex), 400, 'malformed_header', 'hmac: no prefix');
is_answer(ep_post($b, header => 'hmac-sha256-hex=' . substr($hex, 0, 63)), 400, 'malformed_header',
          'hmac: 63 digits');
is_answer(ep_post($b, header => 'hmac-sha256-hex=' . ('z' x 64)), 400, 'malformed_header', 'hmac: not hex');
is_answer(ep_post($b, header => 'HMAC-SHA256-HEX=' . uc $hex), 200, undef, 'prefix and digits in upper case');
is_answer(ep_post($b, secret => $EP_OLD), 401, 'bad_signature', 'hmac: a secret not configured');
is_answer(ep_post($b, header => 'hmac-sha256-hex=' . hmac_sha256_hex("$b ", $EP_NEW)), 401, 'bad_signature',
          'hmac: signature of another body');
is_answer(http_request(ep_raw($b) =~ s/delivered/Delivered/r), 401, 'bad_signature', 'hmac: body changed');
is_answer(flat_post($b, token => undef), 400, 'missing_header', 'shared: no header');
is_answer(flat_post($b, token => 'wrong'), 401, 'bad_signature', 'shared: wrong');
is_answer(flat_post($b, token => substr($SHARED, 0, -1)), 401, 'bad_signature', 'shared: one byte short');
is_answer(flat_post($b, token => "${SHARED}x"), 401, 'bad_signature', 'shared: one byte more');
is_answer(flat_post($b, token => $EP_NEW), 401, 'bad_signature', "shared: another location's secret");
is_answer(b64_post($b, sig => undef), 400, 'missing_header', 'base64: no header');
is_answer(b64_post($b, sig => $hex), 400, 'malformed_header', 'base64: hex');
is_answer(b64_post($b, sig => hmac_sha256_base64($b, $FLAT)), 400, 'malformed_header', 'base64: no padding');
is_answer(b64_post($b, secret => $SHARED), 401, 'bad_signature', 'base64: wrong secret');
is_answer(b64_post($b), 200, undef, 'base64: good');
my @keys = @{ redis_cmd('KEYS', '*') };
is scalar(grep { !/^psd:\{order:o-300\}/ } @keys), 0, 'only o-300 written';
is scalar @{ timeline('o-300') }, 1, 'only by the good requests (the two are one event)';
my $d = metric_delta($m0, all_metrics());
is $d->{c('bad_signature')}, 8, 'bad_signature: 8';
is $d->{c('invalid')}, 8, 'invalid (missing and malformed headers): 8';
is $d->{c('verified')}, 2, 'verified: 2';
# nginx core logs request header lines at debug level; nothing else may
my @leak = grep { /\Q$SHARED\E|\Q$hex\E|\Q$EP_NEW\E/i && !/http header: "(X-Carrier-Token|X-Hmac-Signature|Carrier-Signature):/ }
    split /\n/, error_log_text();
is scalar @leak, 0, 'no secret or signature in the error log but in the header lines of nginx core'
    or diag join "\n", @leak;
--- error_log
psd_webhook carrier: refused, bad_signature
--- no_error_log
[error]



=== TEST 4: bodies: JSON, every field, sizes, methods; unknown statuses 202, ignored ones 200; nothing half-written
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 4k;
    location = /ep {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/ep_new;
        psd_webhook_signature hmac-sha256 X-Hmac-Signature hex prefix=hmac-sha256-hex=;
        psd_webhook_carrier_name easypost;
        psd_webhook_carrier_path order result.reference;
        psd_webhook_carrier_path tracking result.tracking_code;
        psd_webhook_carrier_path status result.status;
        psd_webhook_carrier_path time result.updated_at;
        psd_webhook_carrier_path event_id id;
        psd_webhook_carrier_status unknown ignore;
    }
    location = /metrics { psd_metrics; }
--- check
my $m0 = all_metrics();
my $ev = sub { my %f = @_; canonical_json({ id => $f{id} // 'evt_x', result => { map { defined $f{$_} ? ($_ => $f{$_}) : () }
    qw(reference tracking_code status updated_at) } }) };
my %ok = (reference => 'o-400', tracking_code => 'T1', status => 'in_transit', updated_at => iso(time));
for my $c (
    ['not JSON', 'hello', 'invalid_json'],
    ['a JSON array', '[1,2]', 'invalid_json'],
    ['a duplicate key', '{"id":"a","id":"b"}', 'invalid_json'],
    ['cut JSON', '{"id":"evt_1","result":{', 'invalid_json'],
    ['invalid UTF-8', qq({"id":"\xff"}), 'invalid_json'],
    ['no order', $ev->(%ok, reference => undef), 'missing_order'],
    ['order null', canonical_json({ id => 'e', result => { %ok, reference => undef } }), 'missing_order'],
    ['order with a slash', $ev->(%ok, reference => 'o/1'), 'invalid_order'],
    ['order with braces', $ev->(%ok, reference => 'o{1}'), 'invalid_order'],
    ['order of 65 characters', $ev->(%ok, reference => 'o' x 65), 'invalid_order'],
    ['order an object', canonical_json({ id => 'e', result => { %ok, reference => { id => 1 } } }), 'invalid_order'],
    ['tracking empty', $ev->(%ok, tracking_code => ''), 'invalid_tracking'],
    ['tracking of 65 characters', $ev->(%ok, tracking_code => 'T' x 65), 'invalid_tracking'],
    ['no status', $ev->(%ok, status => undef), 'missing_status'],
    ['status empty', $ev->(%ok, status => ''), 'invalid_status'],
    ['status with a control character', $ev->(%ok, status => "in\ttransit"), 'invalid_status'],
    ['status an array', canonical_json({ id => 'e', result => { %ok, status => ['x'] } }), 'invalid_status'],
    ['no time', $ev->(%ok, updated_at => undef), 'missing_time'],
    ['time without a zone', $ev->(%ok, updated_at => '2026-03-01T09:30:00'), 'invalid_time'],
    ['time 2026-02-30', $ev->(%ok, updated_at => '2026-02-30T09:30:00Z'), 'invalid_time'],
    ['time in milliseconds', canonical_json({ id => 'e', result => { %ok, updated_at => 1767312000000 } }),
        'invalid_time'],
    ['time before 1970', $ev->(%ok, updated_at => '1969-12-31T23:59:59Z'), 'invalid_time'],
    ['no event id', canonical_json({ result => \%ok }), 'missing_event_id'],
    ['event id with a space', $ev->(%ok, id => 'evt 1'), 'invalid_event_id'],
    ['event id of 129 characters', $ev->(%ok, id => 'e' x 129), 'invalid_event_id'],
    ['empty body', '', 'empty_body'],
) {
    my ($name, $body, $error) = @$c;
    is_answer(ep_post($body), 400, $error, $name);
}
is_answer(ep_post($ev->(%ok, id => 'e' x 128)), 200, undef, 'event id of 128 characters');
is_answer(ep_post($ev->(%ok, id => 'evt_64', reference => 'o' x 64)), 200, undef, 'order of 64 characters');
is_answer(http_get('/ep'), 405, 'method_not_allowed', 'GET');
is_answer(ep_post('{"pad":"' . ('p' x 5000) . '"}'), 413, 'body_too_large', 'body over client_body_buffer_size');
my $r = http_request(ep_raw('{"pad":"' . ('p' x 5000) . '"}') =~ s/Content-Length: \d+\r\n/Transfer-Encoding: chunked\r\n/r
    =~ s/\r\n\r\n(.*)\z/sprintf "\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", length $1, $1/sre);
is_answer($r, 413, 'body_too_large', 'chunked body over client_body_buffer_size');
# statuses nobody mapped are taken (the carrier would retry forever) and logged
$r = ep_post($ev->(%ok, id => 'evt_u', status => 'available_for_pickup'));
is $r->{status}, 202, 'unknown status: 202';
is $r->{body}, qq({"received":true,"ignored":"unknown_status"}\n), 'unknown status: the body';
$r = ep_post($ev->(%ok, id => 'evt_i', status => 'UNKNOWN'));
is_answer($r, 200, undef, 'a status mapped to ignore');
is_deeply [map { $_->{event} } @{ timeline('o-400') }], ['e' x 128],
    'o-400: only the good event wrote (not the refused, unknown and ignored ones)';
is scalar(grep { /evt_[ui]$/ } @{ redis_cmd('KEYS', '*') }), 0, 'no dedupe key for unknown and ignored';
my $d = metric_delta($m0, all_metrics());
is $d->{c('invalid')}, 27, 'invalid: 26 bodies and the chunked one';
is $d->{c('unknown_status')}, 1, 'unknown_status: 1';
is $d->{c('ignored')}, 1, 'ignored: 1';
is $d->{c('applied')}, 2, 'applied: 2';
--- error_log
psd_webhook carrier: unknown status "available_for_pickup" from "easypost"
psd_webhook carrier: refused, invalid_time
--- no_error_log
[error]



=== TEST 5: out of order: the newest scan wins, delivered and returned end the journey whatever comes after; every event in the timeline
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /flat {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/shared;
        psd_webhook_signature shared X-Carrier-Token;
        psd_webhook_carrier_name dhl;
        psd_webhook_carrier_path order order_ref;
        psd_webhook_carrier_path tracking tracking_number;
        psd_webhook_carrier_path status event;
        psd_webhook_carrier_path time occurred_at;
        psd_webhook_carrier_status RTS returned;
    }
    location = /metrics { psd_metrics; }
--- check
my $m0 = all_metrics();
my $t = time - 86400;
my @journey = (['label_created', 0], ['shipped', 100], ['in_transit', 200], ['exception', 300],
               ['out_for_delivery', 400], ['delivered', 500], ['in_transit', 600]);
# delivered first, then the rest, newest first
for my $i (5, 6, 4, 3, 2, 1, 0) {
    my ($s, $dt) = @{ $journey[$i] };
    is_answer(flat_post(flat_event(order => 'o-500', event => $s, t => $t + $dt)), 200, undef, "$s at +$dt");
}
my $o = order('o-500');
is $o->{delivery_state}, 'delivered', 'delivered, though a later in_transit scan came';
is $o->{delivery_at}, $t + 500, 'delivered at';
is $o->{delivery_status}, 'delivered', "the carrier's status of that event";
is $o->{delivery_exceptions}, 1, 'the late exception counted';
is_deeply [map { "$_->{kind}:$_->{applied}" } @{ timeline('o-500') }],
    ['delivered:1', 'in_transit:2', 'out_for_delivery:2', 'exception:2', 'in_transit:2', 'shipped:2',
     'label_created:2'], 'the timeline keeps every event in the order of arrival';
# the same journey in order lands on the same state
for my $i (0 .. 6) {
    my ($s, $dt) = @{ $journey[$i] };
    flat_post(flat_event(order => 'o-501', event => $s, t => $t + $dt));
}
is order('o-501')->{delivery_state}, 'delivered', 'in order: delivered too';
is order('o-501')->{delivery_at}, $t + 500, 'at the same time';
# among states before delivered the newest time wins, whatever arrives last
flat_post(flat_event(order => 'o-502', event => 'out_for_delivery', t => $t + 400));
flat_post(flat_event(order => 'o-502', event => 'in_transit', t => $t + 200));
is order('o-502')->{delivery_state}, 'out_for_delivery', 'an older in_transit does not move it back';
flat_post(flat_event(order => 'o-502', event => 'in_transit', t => $t + 450));
is order('o-502')->{delivery_state}, 'in_transit', 'a newer in_transit does (another attempt tomorrow)';
flat_post(flat_event(order => 'o-502', event => 'exception', t => $t + 450));
is order('o-502')->{delivery_state}, 'exception', 'the same second: the later state of the list';
# returned beats delivered; two deliveries: the first counts
flat_post(flat_event(order => 'o-503', event => 'delivered', t => $t + 500));
flat_post(flat_event(order => 'o-503', event => 'delivered', t => $t + 400));
is order('o-503')->{delivery_at}, $t + 400, 'of two delivered events the older one counts';
flat_post(flat_event(order => 'o-503', event => 'RTS', t => $t + 300));
is order('o-503')->{delivery_state}, 'returned', 'returned (mapped from RTS), though older';
flat_post(flat_event(order => 'o-503', event => 'delivered', t => $t + 900));
is order('o-503')->{delivery_state}, 'returned', 'a delivered after the return (back at the shop) stays returned';
my $d = metric_delta($m0, all_metrics());
is $d->{o('delivered')}, 3, 'deliveries delivered: 3 orders (o-503 counts, then its return)';
is $d->{o('returned')}, 1, 'deliveries returned: 1';
is $d->{o('exception')}, 3, 'deliveries with an exception: 3 orders';
is $d->{e('delivered')}, 5, 'delivered events: 5';
is $d->{e('in_transit')}, 6, 'in_transit events: 6';
is $d->{c('outranked')}, 9, 'outranked: 9';
--- no_error_log
[error]



=== TEST 6: the status views: customers see the delivery, staff also the carrier's status, exceptions and the history
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    client_body_buffer_size 64k;
    location = /wh { psd_webhook stripe; psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe; }
    location = /ep {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/ep_new;
        psd_webhook_signature hmac-sha256 X-Hmac-Signature hex prefix=hmac-sha256-hex=;
        psd_webhook_carrier_name easypost;
        psd_webhook_carrier_path order result.reference;
        psd_webhook_carrier_path tracking result.tracking_code;
        psd_webhook_carrier_path status result.status;
        psd_webhook_carrier_path time result.updated_at;
        psd_webhook_carrier_path event_id id;
        psd_webhook_carrier_status failure exception;
    }
    location = /orders/status { psd_order_status customer; }
    location = /staff/orders { psd_order_status staff; psd_order_api_key $TEST_NGINX_CONF_DIR/keys/api; }
--- check
my $t = time - 600;
my $body = canonical_json({ id => 'evt_pay_600', object => 'event', type => 'payment_intent.succeeded',
    created => $t, data => { object => { id => 'pi_600', amount => 4900, currency => 'eur',
                                         metadata => { order_id => 'o-600' } } } });
my $ts = time;
is http_request(raw_post('/wh', $body, "Stripe-Signature: t=$ts,v1=" . hmac_sha256_hex("$ts.$body", $STRIPE)))->{status},
    200, 'paid (Stripe)';
my $url = sign_link(path => '/orders/status', order => 'o-600');
my $j = json_body(http_get($url));
ok !exists $j->{delivery}, 'no delivery before a carrier event';
is_deeply [sort keys %{ $j->{payment} }], [qw(amount created_at currency paid_at state updated_at)],
    'the payment as before';
ep_post(ep_event(id => 'evt_d1', order => 'o-600', status => 'in_transit', t => $t + 60));
ep_post(ep_event(id => 'evt_d2', order => 'o-600', status => 'failure', t => $t + 120));
ep_post(ep_event(id => 'evt_d3', order => 'o-600', status => 'delivered', t => $t + 180));
ep_post(ep_event(id => 'evt_d4', order => 'o-600', status => 'in_transit', t => $t + 240));
my $r = http_get($url);
is $r->{status}, 200, 'customer: 200';
$j = json_body($r);
is $j->{payment}{state}, 'paid', 'still paid';
is_deeply [sort keys %{ $j->{payment} }], [qw(amount created_at currency paid_at state updated_at)],
    'no delivery field among the payment';
my $dl = $j->{delivery};
is_deeply [sort keys %$dl], [qw(at carrier state tracking updated_at)], 'customer: state, carrier, tracking, times';
is $dl->{state}, 'delivered', 'delivered';
is $dl->{carrier}, 'easypost', 'carrier';
is $dl->{tracking}, 'EZ1000000001', 'the tracking number, as the carrier gave it';
is $dl->{at}, $t + 180, 'at: the delivery time';
ok abs($dl->{updated_at} - time) < 5, 'updated_at: the last carrier event';
like $r->{body}, qr/"at":\d+/, 'times are JSON numbers';
$r = http_get('/staff/orders?order=o-600', { Authorization => "Bearer $API_KEY" });
is $r->{status}, 200, 'staff: 200';
$j = json_body($r);
$dl = $j->{delivery};
is_deeply [sort keys %$dl], [qw(at carrier exceptions history state status tracking updated_at)],
    'staff: also status, exceptions, history';
is $dl->{status}, 'delivered', "the carrier's status";
is $dl->{exceptions}, 1, 'one exception';
is_deeply [map { "$_->{event}:$_->{state}:$_->{status}:$_->{applied}:$_->{at}" } @{ $dl->{history} }],
    ["evt_d4:in_transit:in_transit:2:" . ($t + 240), "evt_d3:delivered:delivered:1:" . ($t + 180),
     "evt_d2:exception:failure:1:" . ($t + 120), "evt_d1:in_transit:in_transit:1:" . ($t + 60)],
    'history: the carrier events, newest first, without the payment';
is $dl->{history}[0]{carrier}, 'easypost', 'with the carrier';
is $dl->{history}[0]{tracking}, 'EZ1000000001', 'and the tracking number';
is scalar @{ $j->{timeline} }, 5, 'the timeline has the payment and the four carrier events';
is $j->{timeline}[4]{kind}, 'paid', 'the payment first';
# an order known only from its carrier
ep_post(ep_event(id => 'evt_d5', order => 'o-601', status => 'in_transit', t => $t));
$j = json_body(http_get(sign_link(path => '/orders/status', order => 'o-601')));
is $j->{payment}{state}, 'created', 'an order known from its carrier: created';
ok !$j->{downloads_allowed}, 'no downloads';
is $j->{delivery}{state}, 'in_transit', 'in transit';
--- no_error_log
[error]



=== TEST 7: concurrent deliveries of one event apply once
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /flat {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/shared;
        psd_webhook_signature shared X-Carrier-Token;
        psd_webhook_carrier_path order order_ref;
        psd_webhook_carrier_path tracking tracking_number;
        psd_webhook_carrier_path status event;
        psd_webhook_carrier_path time occurred_at;
    }
    location = /metrics { psd_metrics; }
--- workers: 2
--- check
my $m0 = all_metrics();
for my $i (1 .. 4) {
    my $raw = raw_post('/flat', flat_event(order => "o-70$i", event => 'delivered'), "X-Carrier-Token: $SHARED");
    my @r = @{ http_parallel([($raw) x 5]) };
    is_deeply [map { $_->{status} } @r], [(200) x 5], "event $i: all acknowledged";
    is scalar @{ timeline("o-70$i") }, 1, "event $i: one timeline entry";
}
my $d = metric_delta($m0, all_metrics());
is $d->{c('applied')}, 4, 'applied 4';
is $d->{c('duplicate')}, 16, 'duplicate 16';
is $d->{o('delivered')}, 4, 'four deliveries';
--- no_error_log
[error]



=== TEST 8: psd_webhook_pass: a verified carrier event goes on to the application, a refused one not
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /flat {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/shared;
        psd_webhook_signature shared X-Carrier-Token;
        psd_webhook_pass on;
        psd_webhook_carrier_path order order_ref;
        psd_webhook_carrier_path status event;
        psd_webhook_carrier_path time occurred_at;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/app;
    }
    location = /app { return 200 "app len=$content_length"; }
--- check
my $b = flat_event(order => 'o-800', event => 'shipped');
my $r = flat_post($b);
is $r->{status}, 200, 'passed: 200';
is $r->{body}, 'app len=' . length($b), 'the application got the body';
is order('o-800')->{delivery_state}, 'shipped', 'and it was applied';
$r = flat_post(flat_event(order => 'o-800', event => 'teleported'));
is $r->{body}, 'app len=' . length(flat_event(order => 'o-800', event => 'teleported')),
    'an unknown status is passed too';
is_answer(flat_post($b, token => 'nope'), 401, 'bad_signature', 'a bad secret is not passed');
is_answer(flat_post('{"order_ref":', token => $SHARED), 400, 'invalid_json', 'a bad body is not passed');
--- no_error_log
[error]



=== TEST 9: Redis unreachable: 503 with Retry-After, the carrier retries; proofs are checked first
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT connect_timeout=200ms timeout=200ms;
--- config
    client_body_buffer_size 64k;
    location = /flat {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/shared;
        psd_webhook_signature shared X-Carrier-Token;
        psd_webhook_carrier_path order order_ref;
        psd_webhook_carrier_path status event;
        psd_webhook_carrier_path time occurred_at;
    }
    location = /metrics { psd_metrics; }
--- check
my $m0 = all_metrics();
my $r = flat_post(flat_event(order => 'o-900', event => 'delivered'));
is_answer($r, 503, 'backend_unavailable', 'Redis down');
is $r->{headers}{'retry-after'}, 5, 'Retry-After: 5';
is_answer(flat_post(flat_event(order => 'o-900'), token => 'x'), 401, 'bad_signature', 'the proof first');
is_answer(flat_post('[]'), 400, 'invalid_json', 'then the body');
$r = flat_post(flat_event(order => 'o-900', event => 'never-heard-of'));
is $r->{status}, 202, 'an unknown status needs no Redis';
is_deeply metric_delta($m0, all_metrics()), { c('verified') => 3, c('failed') => 1, c('bad_signature') => 1,
    c('invalid') => 1, c('unknown_status') => 1 }, 'metrics: failed 1';



=== TEST 10: Redis stops answering: 503 after the deadline; the retry is applied once
--- no_cluster: stops the single redis-server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
--- config
    client_body_buffer_size 64k;
    location = /flat {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/shared;
        psd_webhook_signature shared X-Carrier-Token;
        psd_webhook_carrier_path order order_ref;
        psd_webhook_carrier_path status event;
        psd_webhook_carrier_path time occurred_at;
    }
--- check
my $b = flat_event(order => 'o-1000', event => 'delivered');
is_answer(flat_post(flat_event(order => 'o-1001')), 200, undef, 'healthy');
redis_stop();
my $r = flat_post($b);
redis_cont();
is_answer($r, 503, 'backend_unavailable', 'stopped Redis');
ok wait_until(sub { flat_post($b)->{status} == 200 }, 8), 'the retry is acknowledged';
is order('o-1000')->{delivery_state}, 'delivered', 'delivered';
is scalar @{ timeline('o-1000') }, 1, 'applied once';



=== TEST 11: psd_webhook carrier without psd_webhook_signature
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /c {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/shared;
        psd_webhook_carrier_path order o;
        psd_webhook_carrier_path status s;
        psd_webhook_carrier_path time t;
    }
--- must_die
--- error_log
"psd_webhook carrier" needs "psd_webhook_signature"



=== TEST 12: psd_webhook carrier without psd_webhook_secret
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /c {
        psd_webhook carrier;
        psd_webhook_signature shared X-Token;
        psd_webhook_carrier_path order o;
        psd_webhook_carrier_path status s;
        psd_webhook_carrier_path time t;
    }
--- must_die
--- error_log
"psd_webhook" needs "psd_webhook_secret"



=== TEST 13: psd_webhook carrier without a time path
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /c {
        psd_webhook carrier;
        psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/shared;
        psd_webhook_signature shared X-Token;
        psd_webhook_carrier_path order o;
        psd_webhook_carrier_path status s;
    }
--- must_die
--- error_log
"psd_webhook carrier" needs "psd_webhook_carrier_path time"



=== TEST 14: a mapping at http level serves two carrier locations; a location without psd_webhook ignores it
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/shared;
    psd_webhook_signature shared X-Carrier-Token;
    psd_webhook_carrier_path order order_ref;
    psd_webhook_carrier_path status event;
    psd_webhook_carrier_path time occurred_at;
--- config
    location = /a { psd_webhook carrier; psd_webhook_carrier_name ups; }
    location = /b { psd_webhook carrier; psd_webhook_carrier_name fedex; }
    location = /plain { return 200 "plain"; }
--- check
is_answer(flat_post(flat_event(order => 'o-1400', event => 'shipped'), path => '/a'), 200, undef, 'ups');
is order('o-1400')->{delivery_carrier}, 'ups', 'ups';
is_answer(flat_post(flat_event(order => 'o-1400', event => 'delivered'), path => '/b'), 200, undef, 'fedex');
is order('o-1400')->{delivery_carrier}, 'fedex', 'fedex';
is flat_post(flat_event(order => 'o-1400'), path => '/plain')->{body}, 'plain', 'other locations untouched';
--- no_error_log
[error]
