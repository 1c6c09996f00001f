# Reconciliation: the index that verified payment webhooks write
# (psd:{recon:<day>}, psd:{order:<id>}:recon), the psd_reconcile export
# (auth, ranges, CSV and JSON, pages, escaping), a webhook answered 503
# when its index entry cannot be written, Redis failures, the metrics,
# and the export fed to util/psd-reconcile.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link;      # write_keys, write_key_file, json_body, $API_KEY
use Digest::SHA qw(hmac_sha256_hex);
use JSON::PP ();

use vars qw($STRIPE $SEQ $D0);
$STRIPE = 'whsec_test_reconcile_5b7d9f1a3c5e7a9b1d3f5a7c9e1b3d5f';
$SEQ = 0;
$D0 = 1767571200;       # 2026-01-05 00:00:00 UTC

write_keys();           # keys/api
write_key_file('stripe', $STRIPE);

# deliver(order => ..., type => ..., at => <seconds after 2026-01-05>, ...):
# a signed Stripe event to /wh; returns the response
sub deliver {
    my (%o) = @_;
    my $body = JSON::PP->new->canonical->encode({
        id => $o{id} // sprintf('evt_%d_%d', $$, ++$SEQ), object => 'event',
        type => $o{type} // 'charge.succeeded', created => $D0 + ($o{at} // 0),
        data => { object => { id => $o{pi} // "ch_$o{order}", amount => $o{amount} // 2500,
                  currency => $o{currency} // 'eur', metadata => { order_id => $o{order} } } } });
    my $t = time;
    my $sig = "t=$t,v1=" . hmac_sha256_hex("$t.$body", $STRIPE);
    return http_request("POST /wh HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . "Stripe-Signature: $sig\r\nContent-Length: " . length($body) . "\r\n\r\n$body");
}

sub export {
    my ($query, %h) = @_;
    return http_get("/recon?$query", { Authorization => "Bearer $API_KEY", %h });
}

sub is_error {
    my ($r, $status, $error, $name, $field) = @_;
    is $r->{status}, $status, "$name: $status" or diag $r->{raw};
    my $j = eval { json_body($r) } // {};
    is $j->{error}, $error, "$name: $error";
    is $j->{field}, $field, "$name: field $field" if defined $field;
}

sub ids { [ map { $_->{order_id} } @{ json_body($_[0])->{orders} } ] }

sub metric {
    my ($row) = @_;
    return http_get('/metrics')->{body} =~ /^\Q$row\E (\d+)$/m ? $1 : 0;
}

# every page from ?from..to, following the cursors: (ids, pages)
sub all_pages {
    my ($range, $limit) = @_;
    my (@ids, $cursor);
    my $pages = 0;
    do {
        my $r = export("$range&limit=$limit" . ($cursor ? "&cursor=$cursor" : ''));
        die "page: $r->{raw}" unless $r->{status} == 200;
        my $j = json_body($r);
        push @ids, map { $_->{order_id} } @{ $j->{orders} };
        is $r->{headers}{'x-psd-next-cursor'}, $j->{next_cursor}, "page $pages: header and body agree"
            if defined $j->{next_cursor};
        ok !exists $r->{headers}{'x-psd-next-cursor'}, 'last page: no cursor header'
            unless defined $j->{next_cursor};
        $cursor = $j->{next_cursor};
        $pages++;
    } while ($cursor && $pages < 50);
    return (\@ids, $pages);
}

# a file under the servroot
sub spew {
    my ($name, $data) = @_;
    my $f = "$ENV{TEST_NGINX_SERVROOT}/$name";
    open my $fh, '>', $f or die "$f: $!";
    print $fh $data;
    close $fh;
    return $f;
}

sub cli {
    my (@args) = @_;
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        exec "$ENV{TEST_NGINX_REPO}/util/psd-reconcile", @args or die "exec: $!";
    }
    my $out = do { local $/; <$fh> } // '';
    close $fh;
    return ($? >> 8, $out);
}

run_tests();

__DATA__

=== TEST 1: verified payment webhooks write the day's index and the order's days; replays repair it
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /wh { psd_webhook stripe; psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe; }
    location = /metrics { psd_metrics; }
--- check
my $ok0 = metric('psd_reconcile_index_writes_total{result="ok"}');
is deliver(order => 'ord_1', at => 3600, id => 'evt_1')->{status}, 200, 'paid';
is redis_cmd('ZSCORE', 'psd:{recon:2026-01-05}', 'ord_1'), $D0 + 3600, 'indexed on its day, scored by the event time';
my $ttl = redis_cmd('TTL', 'psd:{recon:2026-01-05}');
ok $ttl > 400 * 86400 - 60 && $ttl <= 400 * 86400, "the day's index lives 400 days ($ttl)";
is_deeply redis_cmd('ZRANGE', 'psd:{order:ord_1}:recon', 0, -1, 'WITHSCORES'), ['2026-01-05', 20458],
    "the order's days";
ok redis_cmd('TTL', 'psd:{order:ord_1}:recon') > 399 * 86400, "the order's days expire too";
# a refund two days later: a second day
is deliver(order => 'ord_1', type => 'charge.refunded', at => 2 * 86400 + 60)->{status}, 200, 'refunded';
is redis_cmd('ZSCORE', 'psd:{recon:2026-01-07}', 'ord_1'), $D0 + 2 * 86400 + 60, 'the refund on its own day';
is_deeply redis_cmd('ZRANGE', 'psd:{order:ord_1}:recon', 0, -1), ['2026-01-05', '2026-01-07'], 'two days';
# a dispute, a third
is deliver(order => 'ord_1', type => 'charge.dispute.created', at => 3 * 86400)->{status}, 200, 'chargeback';
is redis_cmd('ZCARD', 'psd:{recon:2026-01-08}'), 1, 'the dispute on its day';
# a failed payment moves no money: not indexed
is deliver(order => 'ord_2', type => 'charge.failed', at => 100)->{status}, 200, 'payment failed';
is redis_cmd('ZSCORE', 'psd:{recon:2026-01-05}', 'ord_2'), undef, 'a failure is not indexed';
is redis_cmd('EXISTS', 'psd:{order:ord_2}:recon'), 0, 'nor its days';
# the index lost: the gateway's replay (a duplicate for the order) writes it again
redis_cmd('DEL', $_) for 'psd:{recon:2026-01-05}', 'psd:{order:ord_1}:recon';
is deliver(order => 'ord_1', at => 3600, id => 'evt_1')->{status}, 200, 'the replay';
is redis_cmd('HGET', 'psd:{order:ord_1}', 'state'), 'chargeback', 'the order did not move';
is redis_cmd('ZSCORE', 'psd:{recon:2026-01-05}', 'ord_1'), $D0 + 3600, 'the index is back';
is_deeply redis_cmd('ZRANGE', 'psd:{order:ord_1}:recon', 0, -1), ['2026-01-05'], "the order's day is back";
# a later replay keeps the first time of the day (ranks do not move)
is deliver(order => 'ord_1', at => 7200)->{status}, 200, 'another paid event, later that day';
is redis_cmd('ZSCORE', 'psd:{recon:2026-01-05}', 'ord_1'), $D0 + 3600, 'first time kept';
is metric('psd_reconcile_index_writes_total{result="ok"}') - $ok0, 5, 'five index writes counted';
--- no_error_log
[error]



=== TEST 2: psd_reconcile_index_ttl
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_reconcile_index_ttl 2d;
--- config
    client_body_buffer_size 64k;
    location = /wh { psd_webhook stripe; psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe; }
--- check
is deliver(order => 'ord_t')->{status}, 200, 'paid';
my $ttl = redis_cmd('TTL', 'psd:{recon:2026-01-05}');
ok $ttl > 2 * 86400 - 60 && $ttl <= 2 * 86400, "2 days ($ttl)";
$ttl = redis_cmd('TTL', 'psd:{order:ord_t}:recon');
ok $ttl > 2 * 86400 - 60 && $ttl <= 2 * 86400, "the order's days too ($ttl)";



=== TEST 3: the index cannot be written: 503 with Retry-After, the order applied once, the gateway's retry repairs it
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /wh { psd_webhook stripe; psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe; }
    location = /metrics { psd_metrics; }
--- check
my $f0 = metric('psd_reconcile_index_writes_total{result="failed"}');
my $a0 = metric('psd_webhook_requests_total{result="applied"}');
redis_cmd('SET', 'psd:{recon:2026-01-05}', 'not a sorted set');
my $r = deliver(order => 'ord_3', id => 'evt_3');
is $r->{status}, 503, 'index not written: 503';
is $r->{headers}{'retry-after'}, 5, 'Retry-After: 5, as a webhook Redis could not record';
is json_body($r)->{error}, 'backend_unavailable', 'backend_unavailable';
is redis_cmd('HGET', 'psd:{order:ord_3}', 'state'), 'paid', 'the order is paid all the same';
is metric('psd_reconcile_index_writes_total{result="failed"}') - $f0, 1, 'failure counted';
redis_cmd('DEL', 'psd:{recon:2026-01-05}');
$r = deliver(order => 'ord_3', id => 'evt_3');
is $r->{status}, 200, "the gateway's retry: 200";
is redis_cmd('ZSCORE', 'psd:{recon:2026-01-05}', 'ord_3'), $D0, 'indexed now';
is metric('psd_webhook_requests_total{result="applied"}') - $a0, 1, 'applied once';
is redis_cmd('XLEN', 'psd:{order:ord_3}:events'), 1, 'one timeline entry';
--- error_log
reconciliation index not written, redis answered "WRONGTYPE



=== TEST 4: the export as JSON: one row per order with its payment fields, times as Unix seconds
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /wh { psd_webhook stripe; psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe; }
    location = /recon { psd_reconcile on; psd_reconcile_api_key $TEST_NGINX_CONF_DIR/keys/api; }
    location = /metrics { psd_metrics; }
--- check
my $rows0 = metric('psd_reconcile_rows_total');
my $ok0 = metric('psd_reconcile_exports_total{result="ok"}');
deliver(order => 'ord_a', at => 36000, pi => 'ch_a', amount => 2500);
deliver(order => 'ord_b', at => 36100, pi => 'ch_b', amount => 4900, currency => 'usd');
deliver(order => 'ord_b', type => 'charge.refunded', at => 86400 + 50, pi => 'ch_b', amount => 4900, currency => 'usd');
deliver(order => 'ord_c', at => 10 * 86400);                   # 2026-01-15: outside
my $r = export('from=2026-01-05&to=2026-01-06');
is $r->{status}, 200, 'status 200';
is $r->{headers}{'content-type'}, 'application/json', 'JSON by default';
like $r->{body}, qr/\n\z/, 'ends in a newline';
my $j = json_body($r);
is_deeply [sort keys %$j], [qw(from next_cursor orders to)], 'from, to, orders, next_cursor';
is $j->{from}, '2026-01-05', 'from';
is $j->{to}, '2026-01-06', 'to';
is $j->{next_cursor}, undef, 'one page';
is_deeply ids($r), ['ord_a', 'ord_b'], 'the orders of the range, once each, in index order';
my $b = $j->{orders}[1];
ok abs($b->{created_at} - time) < 60, 'created_at: when the module first saw it';
ok abs($b->{updated_at} - time) < 60, 'updated_at';
delete @$b{qw(created_at updated_at)};
is_deeply $b, { order_id => 'ord_b', payment_id => 'ch_b', amount => 4900, currency => 'usd',
    state => 'refunded', paid_at => $D0 + 36100, refunded_at => $D0 + 86400 + 50, chargeback_at => undef },
    'the order side of ord_b';
like $r->{body}, qr/^\{"from":"2026-01-05","to":"2026-01-06","orders":\[\{"order_id":"ord_a","payment_id":"ch_a","amount":2500,"currency":"eur","state":"paid","created_at":\d+,"paid_at":\d+,"refunded_at":null,"chargeback_at":null,"updated_at":\d+\}/,
    'keys in the documented order, absent times null';
# a range that holds only the refund day still lists ord_b
is_deeply ids(export('from=2026-01-06&to=2026-01-06')), ['ord_b'], 'the refund day alone';
is_deeply ids(export('from=2026-01-01&to=2026-01-31')), ['ord_a', 'ord_b', 'ord_c'], 'the month';
is_deeply ids(export('from=2025-01-01&to=2025-01-31')), [], 'an empty range';
$r = export('from=2026-01-05&to=2026-01-05', Accept => 'application/json');
is $r->{headers}{'content-type'}, 'application/json', 'Accept: application/json';
is metric('psd_reconcile_exports_total{result="ok"}') - $ok0, 5, 'exports counted';
is metric('psd_reconcile_rows_total') - $rows0, 2 + 1 + 3 + 0 + 2, 'rows counted';
# the JSON export, with its period, against a Stripe export of the same days
my $f = spew('export.json', export('from=2026-01-05&to=2026-01-06')->{body});
my $g = spew('stripe.csv', join "\r\n",
    'id,Type,Source,Amount,Fee,Net,Currency,Created (UTC),order_id (metadata)',
    'txn_1,charge,ch_a,25.00,-0.98,24.02,eur,2026-01-05 10:00:01,ord_a',
    'txn_2,charge,ch_b,49.00,-1.50,47.50,usd,2026-01-05 10:01:41,ord_b',
    'txn_3,refund,re_b,-49.00,0.00,-49.00,usd,2026-01-06 00:00:51,ord_b',
    'txn_4,charge,ch_c,9.00,-0.50,8.50,eur,2026-01-15 10:00:00,ord_c', '');
my ($rc, $out) = cli('--orders', $f, '--gateway', $g);
is $rc, 0, 'psd-reconcile: the JSON export agrees with the Stripe export' or diag $out;
like $out, qr/outside the period 1\)/, 'the row of 2026-01-15 is outside the export\'s period';
# HEAD
$r = http_request("HEAD /recon?from=2026-01-05&to=2026-01-06 HTTP/1.1\r\nHost: localhost\r\n"
    . "Connection: close\r\nAuthorization: Bearer $API_KEY\r\n\r\n");
is $r->{status}, 200, 'HEAD: 200';
is $r->{body}, '', 'HEAD: no body';
--- no_error_log
[error]



=== TEST 5: the export as CSV: RFC 4180, stable columns, ISO 8601 times, escaped and guarded fields
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /wh { psd_webhook stripe; psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe; }
    location = /recon { psd_reconcile on; psd_reconcile_api_key $TEST_NGINX_CONF_DIR/keys/api; }
--- check
deliver(order => 'ord_a', at => 36000, pi => 'ch_a', amount => 2500);
deliver(order => 'ord:b.2', at => 36001, pi => 'ch_"b",2', amount => 990);
deliver(order => '-ord_c', at => 36002, pi => '=HYPERLINK("http://x")', amount => 1);
deliver(order => 'ord_d', at => 36003, pi => "ch_d\r\nx", amount => 7, currency => '@eu');
my $r = export('from=2026-01-05&to=2026-01-05&format=csv');
is $r->{status}, 200, 'status 200';
is $r->{headers}{'content-type'}, 'text/csv; charset=utf-8', 'text/csv';
my $t = sub { my @t = gmtime($D0 + $_[0]); sprintf '2026-01-05T%02d:%02d:%02dZ', @t[2, 1, 0] };
my @lines = split /\r\n/, $r->{body}, -1;
is $lines[0], 'order_id,payment_id,amount,currency,state,created_at,paid_at,refunded_at,chargeback_at,updated_at',
    'the header';
like $lines[1], qr/^ord_a,ch_a,2500,eur,paid,\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ,\Q${\ $t->(36000)}\E,,,\d{4}-/,
    'a plain row: ISO times, empty when absent';
like $lines[2], qr/^ord:b\.2,"ch_""b"",2",990,eur,paid,/, 'quotes doubled, comma quoted';
like $lines[3], qr/^"'-ord_c","'=HYPERLINK\(""http:\/\/x""\)",1,eur,paid,/, 'formulas guarded';
like $r->{body}, qr/\r\nord_d,"ch_d\r\nx",7,"'\@eu",paid,/, 'a line break inside a quoted field';
like $r->{body}, qr/\r\n\z/, 'CRLF after the last row';
$r = export('from=2026-01-05&to=2026-01-05', Accept => 'text/csv');
is $r->{headers}{'content-type'}, 'text/csv; charset=utf-8', 'Accept: text/csv';
$r = export('from=2026-01-05&to=2026-01-05&format=json', Accept => 'text/csv');
is $r->{headers}{'content-type'}, 'application/json', 'format= wins over Accept';
# the CSV reads back as written
my $f = spew('export.csv', export('from=2026-01-05&to=2026-01-05&format=csv')->{body});
my $g = spew('gateway.csv', "order_id,payment_id,amount,currency,type,date\n"
    . "ord_a,,2500,EUR,payment,2026-01-05\n\"ord:b.2\",,990,eur,payment,2026-01-05\n"
    . "-ord_c,,1,eur,payment,2026-01-05\n");
my ($rc, $out) = cli('--json', '--orders', $f, '--gateway', $g, '--format', 'generic');
is $rc, 1, 'psd-reconcile: one mismatch';
my $j = JSON::PP->new->decode($out);
is_deeply [map { "$_->{kind} $_->{order_id}" } @{ $j->{mismatches} }],
    ['paid_not_settled ord_d'], 'guarded ids match, the one missing there is ord_d';
is $j->{mismatches}[0]{payment_id}, "ch_d\r\nx", 'the payment id read back whole';
is $j->{summary}{orders}, 4, 'four orders read';
--- no_error_log
[error]



=== TEST 6: pages: limit and cursor; every order once, on the page of its first day in the range
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    client_body_buffer_size 64k;
    location = /wh { psd_webhook stripe; psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe; }
    location = /recon { psd_reconcile on; psd_reconcile_api_key $TEST_NGINX_CONF_DIR/keys/api; }
--- check
# day 0: o1 o2 o3; day 1: o4, o1 refunded; day 2: (nothing); day 3: o5 o6, o2 refunded
deliver(order => "o$_", at => 100 * $_) for 1 .. 3;
deliver(order => 'o4', at => 86400 + 10);
deliver(order => 'o1', type => 'charge.refunded', at => 86400 + 20);
deliver(order => 'o5', at => 3 * 86400 + 10);
deliver(order => 'o6', at => 3 * 86400 + 20);
deliver(order => 'o2', type => 'charge.refunded', at => 3 * 86400 + 30);
my $range = 'from=2026-01-05&to=2026-01-08';
is_deeply ids(export($range)), [qw(o1 o2 o3 o4 o5 o6)], 'one page: each order once';
for my $limit (1, 2, 3, 4, 5) {
    my ($ids, $pages) = all_pages($range, $limit);
    is_deeply $ids, [qw(o1 o2 o3 o4 o5 o6)], "limit $limit: each order once, in order, over $pages pages";
}
my $r = export("$range&limit=2");
is json_body($r)->{next_cursor}, '2026-01-05.2', 'the cursor: a day and a rank';
is $r->{headers}{'x-psd-next-cursor'}, '2026-01-05.2', 'also in X-PSD-Next-Cursor';
$r = export("$range&limit=3&format=csv");
is $r->{headers}{'x-psd-next-cursor'}, '2026-01-06.0', 'CSV: the cursor in the header';
is scalar(split /\r\n/, $r->{body}), 4, 'CSV: a header and three rows';
# a page whose entries are all listed earlier: empty, with a cursor on
$r = export('from=2026-01-05&to=2026-01-08&limit=1&cursor=2026-01-06.1');
is_deeply ids($r), [], 'o1 refunded on day 1 is listed on day 0';
is json_body($r)->{next_cursor}, '2026-01-08.0', 'the empty day 2 skipped';
# the cursor may point anywhere in the range
is_deeply ids(export('from=2026-01-05&to=2026-01-08&cursor=2026-01-08.1')), ['o6'],
    'o2 refunded on day 3 was listed on day 0';
is_deeply ids(export('from=2026-01-08&to=2026-01-08')), [qw(o5 o6 o2)], 'but day 3 alone lists it';
is_deeply ids(export('from=2026-01-05&to=2026-01-08&cursor=2026-01-08.9')), [], 'a rank past the end';
# the order's days lost: it is listed rather than lost (here: twice)
redis_cmd('DEL', 'psd:{order:o1}:recon');
my ($ids) = all_pages($range, 3);
is_deeply $ids, [qw(o1 o2 o3 o4 o1 o5 o6)], "without its days, o1 is listed on both pages";
--- no_error_log
[error]



=== TEST 7: auth and bad requests: stable JSON errors, nothing read from Redis
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location = /recon { psd_reconcile on; psd_reconcile_api_key $TEST_NGINX_CONF_DIR/keys/api; psd_reconcile_page_size 100; }
    location = /metrics { psd_metrics; }
--- check
my $u0 = metric('psd_reconcile_exports_total{result="unauthorized"}');
my $i0 = metric('psd_reconcile_exports_total{result="invalid"}');
my $q = 'from=2026-01-01&to=2026-01-31';
is_error(http_get("/recon?$q"), 401, 'unauthorized', 'no Authorization');
is_error(http_get("/recon?$q", { Authorization => 'Bearer psd-test-api-key-Zq8sT3vW1xY6' }), 401, 'unauthorized', 'wrong key');
is_error(http_get("/recon?$q", { Authorization => "Basic $API_KEY" }), 401, 'unauthorized', 'not Bearer');
is_error(http_request("POST /recon?$q HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    . "Authorization: Bearer $API_KEY\r\nContent-Length: 2\r\n\r\n{}"), 405, 'method_not_allowed', 'POST');
is_error(export('to=2026-01-31'), 400, 'invalid_field', 'no from', 'from');
is_error(export('from=2026-01-01'), 400, 'invalid_field', 'no to', 'to');
is_error(export('from=2026-02-30&to=2026-03-01'), 400, 'invalid_field', 'February 30', 'from');
is_error(export('from=2026-1-1&to=2026-01-31'), 400, 'invalid_field', 'not YYYY-MM-DD', 'from');
is_error(export('from=2026-01-01&to=2026-01-31x'), 400, 'invalid_field', 'trailing garbage', 'to');
is_error(export('from=1969-12-31&to=2026-01-31'), 400, 'invalid_field', 'before 1970', 'from');
is_error(export('from=2026-02-01&to=2026-01-31'), 400, 'invalid_range', 'to before from');
is export('from=2026-01-01&to=2026-04-02')->{status}, 200, '92 days: 200';
is_error(export('from=2026-01-01&to=2026-04-03'), 400, 'range_too_long', '93 days');
is_error(export("$q&format=xml"), 400, 'invalid_field', 'format=xml', 'format');
is_error(export("$q&limit=0"), 400, 'invalid_field', 'limit=0', 'limit');
is_error(export("$q&limit=101"), 400, 'invalid_field', 'limit over psd_reconcile_page_size', 'limit');
is_error(export("$q&limit=ten"), 400, 'invalid_field', 'limit=ten', 'limit');
is export("$q&limit=100")->{status}, 200, 'limit=100: 200';
is_error(export("$q&cursor=2026-02-01.0"), 400, 'invalid_field', 'cursor after the range', 'cursor');
is_error(export("$q&cursor=2025-12-31.0"), 400, 'invalid_field', 'cursor before the range', 'cursor');
is_error(export("$q&cursor=2026-01-05"), 400, 'invalid_field', 'cursor without a rank', 'cursor');
is_error(export("$q&cursor=2026-01-05.-1"), 400, 'invalid_field', 'negative rank', 'cursor');
is_error(export("$q&cursor=2026-01-05.x"), 400, 'invalid_field', 'rank not a number', 'cursor');
is_error(export("$q&cursor=2026-01-05.1000000001"), 400, 'invalid_field', 'rank too big', 'cursor');
is export("$q&cursor=2026-01-05.0")->{status}, 200, 'a good cursor: 200';
is metric('psd_reconcile_exports_total{result="unauthorized"}') - $u0, 3, 'unauthorized counted';
is metric('psd_reconcile_exports_total{result="invalid"}') - $i0, 19, 'invalid counted (405 included)';
--- no_error_log
[error]



=== TEST 8: Redis unreachable: 503 with Retry-After; refusals need no Redis
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT connect_timeout=200ms timeout=200ms;
--- config
    location = /recon { psd_reconcile on; psd_reconcile_api_key $TEST_NGINX_CONF_DIR/keys/api; }
    location = /metrics { psd_metrics; }
--- check
my $f0 = metric('psd_reconcile_exports_total{result="failed"}');
my $r = export('from=2026-01-01&to=2026-01-31');
is_error($r, 503, 'backend_unavailable', 'Redis down');
is $r->{headers}{'retry-after'}, 1, 'Retry-After: 1';
is_error(export('from=2026-01-01&to=2026-01-31&format=csv'), 503, 'backend_unavailable', 'CSV asked, JSON error');
is metric('psd_reconcile_exports_total{result="failed"}') - $f0, 2, 'failures counted';
is_error(http_get('/recon?from=2026-01-01&to=2026-01-31'), 401, 'unauthorized', 'no bearer, Redis down');
is_error(export('from=2026-01-01'), 400, 'invalid_field', 'bad range, Redis down', 'to');



=== TEST 9: Redis stops answering in the middle of a page: 503 after the deadline, then back
--- no_cluster: stops the single redis-server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=300ms;
--- config
    client_body_buffer_size 64k;
    location = /wh { psd_webhook stripe; psd_webhook_secret $TEST_NGINX_CONF_DIR/keys/stripe; }
    location = /recon { psd_reconcile on; psd_reconcile_api_key $TEST_NGINX_CONF_DIR/keys/api; }
--- check
is deliver(order => 'ord_9')->{status}, 200, 'paid';
is export('from=2026-01-05&to=2026-01-05')->{status}, 200, 'healthy: 200';
redis_stop();
my $r = export('from=2026-01-05&to=2026-01-05');
redis_cont();
is_error($r, 503, 'backend_unavailable', 'stopped Redis');
ok wait_until(sub { export('from=2026-01-05&to=2026-01-05')->{status} == 200 }, 8), 'Redis back: 200';
is_deeply ids(export('from=2026-01-05&to=2026-01-05')), ['ord_9'], 'the same answer';



=== TEST 10: a stray member in a day's index (not an order id) is skipped
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location = /recon { psd_reconcile on; psd_reconcile_api_key $TEST_NGINX_CONF_DIR/keys/api; }
--- check
redis_cmd('ZADD', 'psd:{recon:2026-01-05}', $D0, 'ord_ok', $D0 + 1, "bad id\n,x", $D0 + 2, 'ord_gone');
redis_cmd('HSET', 'psd:{order:ord_ok}', 'state', 'paid', 'amount', 'not a number', 'paid_at', '-5');
my $r = export('from=2026-01-05&to=2026-01-05');
is_deeply ids($r), ['ord_ok', 'ord_gone'], 'the bad member skipped; an order without its record listed';
my $o = json_body($r)->{orders};
is $o->[0]{amount}, undef, 'an amount that is not a number: null';
is $o->[0]{paid_at}, undef, 'a time out of range: null';
is $o->[1]{state}, undef, 'no record: null fields';
$r = export('from=2026-01-05&to=2026-01-05&format=csv');
like $r->{body}, qr/\r\nord_ok,,,,paid,,,,,\r\nord_gone,,,,,,,,,\r\n\z/, 'CSV: empty fields';
--- no_error_log
[error]



=== TEST 11: configuration: psd_reconcile needs its API key; page size within max_pending
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /recon { psd_reconcile on; }
--- must_die
--- error_log
"psd_reconcile" needs "psd_reconcile_api_key"



=== TEST 12: psd_reconcile_page_size larger than the server's max_pending allows
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT max_pending=101;
--- config
    location = /recon { psd_reconcile on; psd_reconcile_api_key $TEST_NGINX_CONF_DIR/keys/api; psd_reconcile_page_size 51; }
--- must_die
--- error_log
"psd_reconcile_page_size" 51 needs "max_pending=" of at least 102 on redis server "main"



=== TEST 13: a range's days in one call: max_pending below 92
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT max_pending=91;
--- config
    location = /recon { psd_reconcile on; psd_reconcile_api_key $TEST_NGINX_CONF_DIR/keys/api; psd_reconcile_page_size 10; }
--- must_die
--- error_log
"psd_reconcile_page_size" 10 needs "max_pending=" of at least 92 on redis server "main"



=== TEST 14: psd_reconcile off in a location inside one that has it
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT max_pending=100;
--- config
    psd_reconcile_api_key $TEST_NGINX_CONF_DIR/keys/api;
    psd_reconcile_page_size 50;
    location /recon { psd_reconcile on; }
    location = /plain { psd_reconcile off; return 200 "plain\n"; }
--- request
GET /plain
--- response_body
plain
