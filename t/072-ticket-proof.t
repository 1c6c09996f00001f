# psd_ticket_order_proof: ticket intake is public, so a ticket names an
# order only with the customer's signed status link for that order.  With
# the link the order is read (its state triages the ticket, the order lists
# it); without it the ticket is filed as a claim and the client learns
# nothing about the order, whether it exists or what state it is in.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link;      # write_keys, sign_link
use JSON::PP ();
use Time::HiRes qw(sleep);

write_keys();

sub enc { JSON::PP->new->utf8->canonical->encode($_[0]) }
sub jbody { my ($r) = @_; eval { JSON::PP->new->utf8->decode($r->{body} // '') } }

sub ticket {
    my (%f) = (email => 'ann@example.org', subject => 'Refund?', message => 'Where is my money?', @_);
    delete $f{$_} for grep { !defined $f{$_} } keys %f;
    my $b = enc(\%f);
    return http_request("POST /t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\nContent-Length: " . length($b) . "\r\n\r\n$b");
}

sub entry {         # the stream entry of a ticket id, as a hash
    my ($queue, $id) = @_;
    for my $e (@{ redis_cmd('XRANGE', "psd:{tq:$queue}", '-', '+') || [] }) {
        my %f = @{ $e->[1] };
        return \%f if $f{ticket} eq $id;
    }
    return {};
}

run_tests();

__DATA__

=== TEST 1: with the status link the order triages and lists the ticket; without it, a claim that reveals nothing
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /t {
        psd_ticket;
        psd_ticket_order_proof /orders/status;
        psd_ticket_rule refunds "order_state == refunded" queue=refunds;
        psd_ticket_answer order_state=refunded "Your refund is on its way.";
    }
--- check
redis_cmd('HSET', 'psd:{order:ord_1}', state => 'refunded', amount => 4900);
my $proof = sign_link(path => '/orders/status', order => 'ord_1');

# the whole URL or only its query: both prove
my $r = ticket(order_id => 'ord_1', order_link => "https://shop.example/orders/status$proof",
               file_anyway => JSON::PP::true);
is $r->{status}, 201, 'proven: filed' or diag $r->{raw};
my $j = jbody($r) // {};
is $j->{queue}, 'refunds', 'proven: triaged by the order state';
my $e = entry('refunds', $j->{ticket});
is $e->{order_verified}, 'true', 'proven: order_verified';
is $e->{order_state}, 'refunded', 'proven: the state is carried';
ok wait_until(sub { redis_cmd('SISMEMBER', 'psd:{order:ord_1}:tickets', $j->{ticket}) }, 3),
    'proven: the order lists the ticket';

(my $query = $proof) =~ s/^[^?]*\?//;
$r = ticket(order_id => 'ord_1', order_link => $query);
is $r->{status}, 200, 'proven by the query alone: the answer for its state';
like $r->{body}, qr/refund is on its way/, 'deflected by the order state';

# no proof: the same ticket for an existing and for an unknown order
my %seen;
for my $order ('ord_1', 'ord_nope') {
    $r = ticket(order_id => $order);
    is $r->{status}, 201, "$order without proof: 201";
    $j = jbody($r) // {};
    is $j->{queue}, 'general', "$order without proof: not triaged by the order";
    $e = entry('general', $j->{ticket});
    is $e->{order}, $order, "$order without proof: the claim is kept";
    is $e->{order_verified}, 'false', "$order without proof: not verified";
    is $e->{order_state}, 'none', "$order without proof: no state";
    $seen{$order} = join ' ', $r->{status}, map { "$_=" . ($j->{$_} // '') } qw(deflected queue priority);
}
is $seen{ord_1}, $seen{ord_nope}, 'an existing and an unknown order answer alike';
sleep 0.3;
is redis_cmd('SCARD', 'psd:{order:ord_1}:tickets'), 1, 'claims are not listed on the order';
ok !redis_cmd('EXISTS', 'psd:{order:ord_nope}:tickets'), 'nor on an unknown one';

# a link of another order, forged, expired, for another path
$r = ticket(order_id => 'ord_1', order_link => sign_link(path => '/orders/status', order => 'ord_2'));
is $r->{status}, 403, 'another order\'s link: 403';
is((jbody($r) // {})->{error}, 'link_invalid', 'link_invalid');
is((jbody($r) // {})->{field}, 'order_link', 'field order_link');
$r = ticket(order_id => 'ord_1', order_link => sign_link(path => '/orders/status', order => 'ord_1',
                                                          key => 'x' x 32));
is $r->{status}, 403, 'forged: 403';
$r = ticket(order_id => 'ord_1', order_link => sign_link(path => '/orders/status', order => 'ord_1',
                                                          exp => time - 10));
is $r->{status}, 410, 'expired: 410';
is((jbody($r) // {})->{error}, 'link_expired', 'link_expired');
$r = ticket(order_id => 'ord_1', order_link => sign_link(path => '/downloads/a.zip', order => 'ord_1'));
is $r->{status}, 403, 'a download link is no status link: 403';
$r = ticket(order_id => 'ord_1', order_link => 42);
is $r->{status}, 400, 'order_link not a string: 400';
is((jbody($r) // {})->{error}, 'invalid_field', 'invalid_field');
--- no_error_log
[error]



=== TEST 2: nginx -t: an order status path that is no path
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_order_proof orders/status; }
--- must_die
--- error_log
invalid order status path "orders/status" in "psd_ticket_order_proof"
