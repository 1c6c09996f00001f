# psd_order_status: the customer view (a signed link to the status location
# that names the order, issued by psd_link_issue or signed here with the
# same keys) and the staff view (API key, ?order=, with the timeline), on
# orders written by verified webhooks; every refusal; Redis failures; and
# configuration errors.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link;      # write_keys, sign_link, api_post, json_body
use Digest::SHA qw(hmac_sha256_hex);
use JSON::PP ();

use vars qw($STRIPE_SECRET $SEQ);
$STRIPE_SECRET = 'whsec_test_new_7a1c3e5b9d2f4a6c8e0b1d3f5a7c9e1b';
$SEQ = 0;

write_keys();           # link keys k1, k2 and keys/api
write_key_file('stripe', $STRIPE_SECRET);

# deliver(type => ..., order => ..., created => ..., id => ...): a signed
# Stripe event to /wh; returns the response
sub deliver {
    my (%o) = @_;
    my $body = JSON::PP->new->canonical->encode({
        id => $o{id} // sprintf('evt_%d_%d', $$, ++$SEQ), object => 'event',
        type => $o{type} // 'payment_intent.succeeded', created => $o{created} // time,
        data => { object => { id => $o{pi} // 'pi_secret_1', amount => $o{amount} // 2500,
                  currency => 'eur', metadata => { order_id => $o{order} } } } });
    my $t = time;
    my $sig = "t=$t,v1=" . hmac_sha256_hex("$t.$body", $STRIPE_SECRET);
    return http_request("POST /wh HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . "Stripe-Signature: $sig\r\nContent-Length: " . length($body) . "\r\n\r\n$body");
}

# a customer's status link issued by the shop through psd_link_issue
sub status_link {
    my ($order, %o) = @_;
    my $r = api_post('/api/issue', JSON::PP->new->canonical->encode(
        { path => '/orders/status', ttl => $o{ttl} // 3600, defined $order ? (order => $order) : () }));
    die "issue: $r->{raw}" unless $r->{status} == 200;
    return json_body($r)->{url};
}

sub staff_get {
    my ($query, $token) = @_;
    return http_get("/staff/orders$query",
        { defined $token ? (Authorization => "Bearer $token") : () });
}

# is_error($r, 403, 'link_invalid', 'name')
sub is_error {
    my ($r, $status, $error, $name) = @_;
    is $r->{status}, $status, "$name: $status" or diag $r->{raw};
    is json_body($r)->{error}, $error, "$name: $error";
}

run_tests();

__DATA__

=== TEST 1: customer view of a paid order, by a link from psd_link_issue
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    client_body_buffer_size 64k;
    location = /wh { psd_webhook stripe; psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe; }
    location = /orders/status { psd_order_status customer; }
    location = /api/issue { psd_link_issue; psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api; }
--- check
my $t = time - 100;
is deliver(order => 'ord_1', created => $t, amount => 2500)->{status}, 200, 'paid webhook';
my $url = status_link('ord_1');
like $url, qr{^/orders/status\?psd_v=1&.*psd_order=ord_1&}, 'status link names the order';
my $r = http_get($url);
is $r->{status}, 200, 'status: 200';
is $r->{headers}{'content-type'}, 'application/json', 'JSON';
like $r->{body}, qr/\n\z/, 'ends in a newline';
my $j = json_body($r);
is_deeply [sort keys %$j], [qw(downloads_allowed links order payment tickets)], 'order, payment, downloads_allowed, links, tickets';
is_deeply $j->{tickets}, [], 'no tickets yet';
is $j->{order}, 'ord_1', 'order';
is $j->{payment}{state}, 'paid', 'state paid';
is $j->{payment}{paid_at}, $t, 'paid_at, an integer';
is $j->{payment}{amount}, 2500, 'amount';
is $j->{payment}{currency}, 'eur', 'currency';
ok abs($j->{payment}{created_at} - time) < 5, 'created_at';
ok !exists $j->{payment}{payment_id}, 'no payment id for customers';
ok !exists $j->{timeline}, 'no timeline for customers';
ok $j->{downloads_allowed}, 'downloads allowed';
is ref $j->{downloads_allowed}, 'JSON::PP::Boolean', 'a JSON boolean';
like $r->{body}, qr/"paid_at":\d+/, 'times are JSON numbers';
# the Perl signer's link with the same key works the same
$r = http_get(sign_link(path => '/orders/status', order => 'ord_1'));
is $r->{status}, 200, 'a link signed with the same key';
is json_body($r)->{payment}{state}, 'paid', 'same answer';
# HEAD
$r = http_request("HEAD $url HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
is $r->{status}, 200, 'HEAD: 200';
--- no_error_log
[error]



=== TEST 2: customer refusals: no token, bad token, expired, no order, wrong path; unknown order 404
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    client_body_buffer_size 64k;
    location = /wh { psd_webhook stripe; psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe; }
    location = /orders/status { psd_order_status customer; }
    location = /api/issue { psd_link_issue; psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api; }
--- check
is deliver(order => 'ord_2')->{status}, 200, 'paid webhook';
my $good = status_link('ord_2');
is http_get($good)->{status}, 200, 'the good link: 200';
is_error(http_get('/orders/status'), 403, 'link_invalid', 'no token');
is_error(http_get('/orders/status?order=ord_2'), 403, 'link_invalid', 'only ?order=');
is_error(http_get(link_set($good, 'psd_sig', 'A' x 43)), 403, 'link_invalid', 'bad signature');
is_error(http_get(link_set($good, 'psd_order', 'ord_3')), 403, 'link_invalid', 'order changed');
is_error(http_get(link_del($good, 'psd_order')), 403, 'link_invalid', 'order removed');
is_error(http_get(sign_link(path => '/orders/status', order => 'ord_2', exp => time - 10)), 410,
         'link_expired', 'expired link');
is_error(http_get(status_link(undef)), 403, 'link_invalid', 'a valid link without an order');
my $dl = sign_link(path => '/dl/a.zip', order => 'ord_2');
my (undef, $q) = split /\?/, $dl, 2;
is_error(http_get("/orders/status?$q"), 403, 'link_invalid', 'a download link used for the status');
is_error(http_get(sign_link(path => '/orders/status', order => 'ord_2', key => 'x' x 32)), 403,
         'link_invalid', 'signed with another key');
is_error(http_get(sign_link(path => '/orders/status', order => 'ord_2', kid => 'k9', key => 'x' x 32)),
         403, 'link_invalid', 'unknown key id');
is_error(http_get(status_link('ord_unknown')), 404, 'unknown_order', 'valid link, unknown order');
is_error(http_get(status_link('ord:with.dots-ok_1')), 404, 'unknown_order', 'order id with : and .');
my $r = http_request("POST $good HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}");
is_error($r, 405, 'method_not_allowed', 'POST');
--- error_log
psd_order_status: denied, expired
psd_order_status: denied, no order
--- no_error_log
[error]



=== TEST 3: what customers see as the order moves: failures, payment, refund, revoked links
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    client_body_buffer_size 64k;
    location = /wh { psd_webhook stripe; psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe; }
    location = /orders/status { psd_order_status customer; }
    location = /api/issue { psd_link_issue; psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api; }
    location = /api/revoke { psd_link_revoke; psd_link_api_key $TEST_NGINX_CONF_DIR/keys/api; }
--- check
my $url = status_link('ord_3');
my $t = time - 50;
is deliver(order => 'ord_3', type => 'charge.failed', created => $t)->{status}, 200, 'failure 1';
is deliver(order => 'ord_3', type => 'charge.failed', created => $t + 1)->{status}, 200, 'failure 2';
my $j = json_body(http_get($url));
is $j->{payment}{state}, 'created', 'created';
is $j->{payment}{failed_attempts}, 2, 'failed_attempts 2';
is $j->{payment}{last_failure_at}, $t + 1, 'last_failure_at';
ok !$j->{downloads_allowed}, 'no downloads before payment';
is deliver(order => 'ord_3', created => $t + 2)->{status}, 200, 'paid';
$j = json_body(http_get($url));
is $j->{payment}{state}, 'paid', 'paid';
ok $j->{downloads_allowed}, 'downloads allowed';
ok !exists $j->{downloads_revoked_at}, 'not revoked';
is deliver(order => 'ord_3', type => 'charge.refunded', created => $t + 3)->{status}, 200, 'refunded';
$j = json_body(http_get($url));
is $j->{payment}{state}, 'refunded', 'refunded';
is $j->{payment}{refunded_at}, $t + 3, 'refunded_at';
ok !$j->{downloads_allowed}, 'no downloads after a refund';
ok abs($j->{downloads_revoked_at} - time) < 5, 'downloads_revoked_at';
# the shop revokes the links of a paid order
is deliver(order => 'ord_3b')->{status}, 200, 'ord_3b paid';
$url = status_link('ord_3b');
ok json_body(http_get($url))->{downloads_allowed}, 'ord_3b: downloads allowed';
is api_post('/api/revoke', '{"order":"ord_3b"}')->{status}, 200, 'psd_link_revoke of ord_3b';
$j = json_body(http_get($url));
is $j->{payment}{state}, 'paid', 'ord_3b: still paid';
ok !$j->{downloads_allowed}, 'ord_3b: downloads no longer allowed';
ok $j->{downloads_revoked_at}, 'ord_3b: downloads_revoked_at';
# the status link itself revoked by its id (not by its order): 410
my ($sid) = $url =~ /psd_id=([^&]+)/;
is api_post('/api/revoke', qq({"link":"$sid"}))->{status}, 200, 'the status link revoked by its id';
is_error(http_get($url), 410, 'link_revoked', 'a revoked status link');
ok json_body(http_get(status_link('ord_3b')))->{payment}, 'a new status link for the order works';
--- no_error_log
[error]



=== TEST 4: staff view: bearer key, ?order=, payment id and the timeline, newest first
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /wh { psd_webhook stripe; psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe; }
    location = /staff/orders {
        psd_order_status staff;
        psd_order_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- check
my $t = time - 100;
is deliver(order => 'ord_4', id => 'evt_4a', type => 'charge.failed', created => $t)->{status}, 200, 'failure';
is deliver(order => 'ord_4', id => 'evt_4b', created => $t + 1, pi => 'pi_4')->{status}, 200, 'paid';
is deliver(order => 'ord_4', id => 'evt_4b', created => $t + 1, pi => 'pi_4')->{status}, 200, 'replay';
is deliver(order => 'ord_4', id => 'evt_4c', type => 'charge.succeeded', created => $t + 2)->{status}, 200,
    'paid again';
my $r = staff_get('?order=ord_4', $API_KEY);
is $r->{status}, 200, 'staff: 200';
is $r->{headers}{'content-type'}, 'application/json', 'JSON';
my $j = json_body($r);
is_deeply [sort keys %$j], [qw(downloads_allowed links order payment tickets timeline)], 'with the links, the tickets and the timeline';
is $j->{payment}{payment_id}, 'pi_4', 'payment_id for staff';
is $j->{payment}{state}, 'paid', 'paid';
is $j->{payment}{failed_attempts}, 1, 'failed_attempts';
is_deeply $j->{timeline}, [
    { event => 'evt_4c', kind => 'paid', at => $t + 2, applied => '2' },
    { event => 'evt_4b', kind => 'paid', at => $t + 1, applied => '1' },
    { event => 'evt_4a', kind => 'payment_failed', at => $t, applied => '1' },
], 'timeline, newest first, the replay not in it';
is_error(staff_get('?order=ord_4'), 401, 'unauthorized', 'no bearer');
is_error(staff_get('?order=ord_4', 'psd-test-api-key-Zq8sT3vW1xY6'), 401, 'unauthorized', 'wrong key');
is_error(http_get('/staff/orders?order=ord_4', { Authorization => "Basic $API_KEY" }), 401,
         'unauthorized', 'not Bearer');
is_error(staff_get('', $API_KEY), 400, 'invalid_field', 'no order');
is json_body(staff_get('', $API_KEY))->{field}, 'order', 'field order';
is_error(staff_get('?order=', $API_KEY), 400, 'invalid_field', 'empty order');
is_error(staff_get('?order=a/b', $API_KEY), 400, 'invalid_field', 'order with /');
is_error(staff_get('?order=' . 'x' x 65, $API_KEY), 400, 'invalid_field', 'order of 65 characters');
is_error(staff_get('?order=ord_none', $API_KEY), 404, 'unknown_order', 'unknown order');
is_error(http_request("POST /staff/orders?order=ord_4 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    . "Authorization: Bearer $API_KEY\r\nContent-Length: 0\r\n\r\n"), 405, 'method_not_allowed', 'POST');
--- no_error_log
[error]



=== TEST 5: Redis unreachable: both views answer 503 with Retry-After
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT connect_timeout=200ms timeout=200ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /orders/status { psd_order_status customer; }
    location = /staff/orders {
        psd_order_status staff;
        psd_order_api_key $TEST_NGINX_CONF_DIR/keys/api;
    }
--- check
my $r = http_get(sign_link(path => '/orders/status', order => 'ord_5'));
is_error($r, 503, 'backend_unavailable', 'customer');
is $r->{headers}{'retry-after'}, 1, 'Retry-After: 1';
$r = staff_get('?order=ord_5', $API_KEY);
is_error($r, 503, 'backend_unavailable', 'staff');
is $r->{headers}{'retry-after'}, 1, 'Retry-After: 1';
# refusals need no Redis
is_error(http_get('/orders/status'), 403, 'link_invalid', 'no token, Redis down');
is_error(staff_get('?order=ord_5'), 401, 'unauthorized', 'no bearer, Redis down');



=== TEST 6: Redis stops answering: 503 after the deadline
--- no_cluster: stops the single redis-server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /orders/status { psd_order_status customer; }
--- check
redis_cmd('HSET', 'psd:{order:ord_6}', 'state', 'paid');
my $url = sign_link(path => '/orders/status', order => 'ord_6');
is http_get($url)->{status}, 200, 'healthy: 200';
redis_stop();
my $r = http_get($url);
redis_cont();
is_error($r, 503, 'backend_unavailable', 'stopped Redis');
ok wait_until(sub { http_get($url)->{status} == 200 }, 8), 'Redis back: 200';



=== TEST 7: psd_order_status staff without psd_order_api_key
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /staff/orders { psd_order_status staff; }
--- must_die
--- error_log
"psd_order_status staff" needs "psd_order_api_key"



=== TEST 8: psd_order_status with an unknown view
--- config
    location = /o { psd_order_status admin; }
--- must_die
--- error_log
invalid value "admin"



=== TEST 9: psd_order_status only in a location
--- config
    psd_order_status customer;
--- must_die
--- error_log
"psd_order_status" directive is not allowed here
