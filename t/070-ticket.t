# Support tickets: psd_ticket intake (201 JSON, the queue's stream and the
# ticket's record, consumer groups), triage rules of every kind and their
# order, the default queue, deflection by psd_ticket_answer (category,
# keyword, order state) and file_anyway, order linking, every refused input
# with its status and code and nothing written to Redis, body limits,
# psd_limit in front of the intake, the staff endpoint (psd_ticket_admin),
# the metrics with SLA breaches, stream trimming, Redis failures (503,
# nothing half-written), and nginx -t errors.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use JSON::PP ();
use Time::HiRes qw(time sleep);
use IO::Socket::IP;
use IO::Select;

use vars qw($API_KEY);
$API_KEY = 'psd-ticket-staff-key-9Qw2Er4Ty6';

# the staff key file (mode 0600, 16 bytes or more)
{
    my $f = "$ENV{TEST_NGINX_CONF_DIR}/ticket.key";
    open my $fh, '>:raw', $f or die "$f: $!\n";
    print {$fh} "$API_KEY\n";
    close $fh or die "$f: $!\n";
    chmod 0600, $f;
}

# (--- init and --- check code cannot see this file's lexicals: functions)

sub enc { JSON::PP->new->utf8->canonical->encode($_[0]) }

sub jbody {         # the decoded JSON body, or undef
    my ($r) = @_;
    return eval { JSON::PP->new->utf8->decode($r->{body} // '') };
}

sub post {          # post('/t', $bytes, 'Name: value', ...)
    my ($path, $body, @h) = @_;
    return http_request("POST $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Connection: close\r\n" . join('', map { "$_\r\n" } @h)
        . "Content-Type: application/json\r\n"
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body");
}

sub base { (email => 'ann@example.org', subject => 'Hello',
            message => 'Where is my download?') }

# ticket(field => value, ...): the base ticket with these fields changed
# (undef removes one); a plain string is sent as it is
sub ticket {
    return post('/t', $_[0]) if @_ == 1 && !ref $_[0];
    my %f = (base(), @_);
    delete $f{$_} for grep { !defined $f{$_} } keys %f;
    return post('/t', enc(\%f));
}

# open_ok($name, field => value, ...): a ticket that must be filed; its JSON
sub open_ok {
    my ($name, @f) = @_;
    my $r = ticket(@f);
    is $r->{status}, 201, "$name: 201" or diag $r->{raw};
    return jbody($r) // {};
}

# is_error($r, 400, 'invalid_field', 'email', $name); field undef: none
sub is_error {
    my ($r, $status, $code, $field, $name) = @_;
    is $r->{status}, $status, "$name: $status" or diag $r->{raw};
    my $j = jbody($r) // {};
    is $j->{error}, $code, "$name: error $code";
    is $j->{field}, $field, "$name: field " . ($field // 'none');
    like $r->{headers}{'content-type'} // '', qr{^application/json}, "$name: JSON";
}

sub pairs_to_hash { my %h = @{ $_[0] }; return \%h }

# the entries of a queue's stream: ([id, [field, value, ...]], ...)
sub xrange { @{ redis_cmd('XRANGE', "psd:{tq:$_[0]}", '-', '+') || [] } }

# entry($queue, $ticket): the stream entry of a ticket, as a hash
sub entry {
    my ($queue, $id) = @_;
    for my $e (xrange($queue)) {
        my $h = pairs_to_hash($e->[1]);
        return $h if ($h->{ticket} // '') eq $id;
    }
    return undef;
}

sub record { pairs_to_hash(redis_cmd('HGETALL', "psd:{tq:$_[0]}:t:$_[1]")) }

sub dbkeys { join ' ', sort @{ redis_cmd('KEYS', '*') } }

sub order {         # order('ord_1', state => 'paid', amount => 2500)
    my ($id, %f) = @_;
    is redis_cmd('HSET', "psd:{order:$id}", %f), scalar keys %f, "order $id set";
}

sub metrics {       # { 'name{labels}' => value }
    my $r = http_get('/m');
    die "metrics: $r->{raw}" unless ($r->{status} // 0) == 200;
    return { map { /^(\w+(?:\{[^}]*\})?) (\S+)$/ ? ($1 => $2) : () }
             split /\n/, $r->{body} };
}

sub staff {         # staff($json_or_bytes, $bearer)
    my ($body, $key) = @_;
    return post('/staff', ref $body ? enc($body) : $body,
                defined $key ? ("Authorization: Bearer $key") : ());
}

# several requests on one connection, written at once; the raw bytes that
# come back until the server closes
sub pipelined {
    my (@reqs) = @_;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1',
        PeerPort => $ENV{TEST_NGINX_SERVER_PORT}, Proto => 'tcp', Timeout => 5)
        or die "connect: $@";
    print {$s} join '', @reqs;
    my ($all, $buf) = ('');
    my $sel = IO::Select->new($s);
    my $end = time + 10;
    while (time < $end && $sel->can_read(1)) {
        last unless sysread $s, $buf, 65536;
        $all .= $buf;
    }
    return $all;
}

sub ticket_req {    # a raw intake request; $conn: the Connection header
    my ($conn, @f) = @_;
    my $body = enc({ base(), @f });
    return "POST /t HTTP/1.1\r\nHost: localhost\r\nConnection: $conn\r\n"
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
}

sub wait_until {
    my ($cond, $timeout) = @_;
    my $end = time + ($timeout // 5);
    my $v;
    until (($v = $cond->()) || time > $end) { sleep 0.05 }
    return $v;
}

run_tests();

__DATA__

=== TEST 1: intake happy path: 201 JSON, the stream entry, the record, a consumer group
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location = /t { psd_ticket; }
--- check
my $t0 = time;
my $r = ticket(subject => 'Download broken',
               message => "The link says \"expired\".\nWhat now? \x{2014} Ann \x{e9}");
is $r->{status}, 201, '201 Created' or diag $r->{raw};
is $r->{headers}{'content-type'}, 'application/json', 'application/json';
like $r->{body}, qr/\n\z/, 'ends in a newline';
my $j = jbody($r);
is_deeply [sort keys %$j], [qw(deflected first_response_by priority queue ticket)], 'answer fields';
ok $j->{deflected} eq '0' && ref $j->{deflected}, 'deflected: false';
like $j->{ticket}, qr/^general\.[A-Za-z0-9]{16}\z/, 'ticket id "general.<16 alnum>"';
is $j->{queue}, 'general', 'queue general';
is $j->{priority}, 'normal', 'priority normal';
like $r->{body}, qr/"first_response_by":\d+[,}]/, 'first_response_by is a JSON number';
ok abs($j->{first_response_by} - ($t0 + 4 * 3600)) <= 2, 'first_response_by = now + 4h';
my $id = $j->{ticket};

# exactly the stream and the record
is dbkeys(), "psd:{tq:general} psd:{tq:general}:t:$id", 'two keys: stream and record';
is redis_cmd('TYPE', 'psd:{tq:general}'), 'stream', 'the queue is a stream';

my @x = xrange('general');
is scalar @x, 1, 'one stream entry';
my @f = @{ $x[0][1] };
is_deeply [ @f[grep { !($_ % 2) } 0 .. $#f] ],
    [qw(ticket created_at queue priority rule first_response_due resolution_due
        email subject message category order order_state order_verified answered)],
    'stream fields, in order';
my $e = pairs_to_hash(\@f);
is $e->{ticket}, $id, 'entry: ticket';
ok abs($e->{created_at} - $t0) <= 2, 'entry: created_at is now';
is $e->{queue}, 'general', 'entry: queue';
is $e->{priority}, 'normal', 'entry: priority';
is $e->{rule}, '', 'entry: no rule';
is $e->{first_response_due}, $j->{first_response_by}, 'entry: first_response_due = first_response_by';
is $e->{first_response_due}, $e->{created_at} + 4 * 3600, 'entry: first response due in 4h';
is $e->{resolution_due}, $e->{created_at} + 48 * 3600, 'entry: resolution due in 48h';
is $e->{email}, 'ann@example.org', 'entry: email';
is $e->{subject}, 'Download broken', 'entry: subject';
is $e->{message}, "The link says \"expired\".\nWhat now? \xe2\x80\x94 Ann \xc3\xa9",
    'entry: message, UTF-8 bytes intact';
is $e->{category}, '', 'entry: no category';
is $e->{order}, '', 'entry: no order';
is $e->{order_state}, 'none', 'entry: order_state none';
is $e->{answered}, 'false', 'entry: answered false';

my $rec = record('general', $id);
is_deeply [sort keys %$rec],
    [qw(created_at first_response_due order order_verified priority queue resolution_due
        state)],
    'record fields';
is $rec->{state}, 'open', 'record: state open';
is $rec->{created_at}, $e->{created_at}, 'record: created_at';
is $rec->{first_response_due}, $e->{first_response_due}, 'record: first response due';
is $rec->{resolution_due}, $e->{resolution_due}, 'record: resolution due';
is $rec->{queue}, 'general', 'record: queue';
is $rec->{priority}, 'normal', 'record: priority';
is $rec->{order}, '', 'record: no order';

# the help desk reads with a consumer group
is redis_cmd('XGROUP', 'CREATE', 'psd:{tq:general}', 'desk', '0'), 'OK', 'XGROUP CREATE';
my $g = redis_cmd('XREADGROUP', 'GROUP', 'desk', 'agent1', 'COUNT', '10',
                  'STREAMS', 'psd:{tq:general}', '>');
is $g->[0][0], 'psd:{tq:general}', 'XREADGROUP: the stream';
is scalar @{ $g->[0][1] }, 1, 'XREADGROUP: one entry';
is pairs_to_hash($g->[0][1][0][1])->{ticket}, $id, 'XREADGROUP: the ticket';
my $j2 = open_ok('second ticket', category => 'downloads');
$g = redis_cmd('XREADGROUP', 'GROUP', 'desk', 'agent1', 'COUNT', '10',
               'STREAMS', 'psd:{tq:general}', '>');
is scalar @{ $g->[0][1] }, 1, 'XREADGROUP: only the new entry';
my $e2 = pairs_to_hash($g->[0][1][0][1]);
is $e2->{ticket}, $j2->{ticket}, 'XREADGROUP: the second ticket';
is $e2->{category}, 'downloads', 'second entry: category';
isnt $j2->{ticket}, $id, 'ids differ';
is redis_cmd('XACK', 'psd:{tq:general}', 'desk', $g->[0][1][0][0]), 1, 'XACK';
is redis_cmd('XLEN', 'psd:{tq:general}'), 2, 'two entries';

# keep-alive: three tickets pipelined on one connection, answered in order
my $raw = pipelined(ticket_req('keep-alive', subject => 'p1'),
                    ticket_req('keep-alive', subject => 'p2'),
                    ticket_req('close', subject => 'p3'));
my @st = $raw =~ m{^HTTP/1\.1 (\d{3})}mg;
is "@st", '201 201 201', 'pipelined: three 201';
my @ids = $raw =~ /"ticket":"(general\.\w+)"/g;
is scalar @ids, 3, 'pipelined: three ids';
is_deeply [ map { entry('general', $_)->{subject} } @ids ], [qw(p1 p2 p3)],
    'pipelined: in order';
--- no_error_log
[error]
[warn]



=== TEST 2: order_value with each comparison, first match wins; no value matches no order_value rule
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location = /t {
        psd_ticket;
        psd_ticket_rule eq 'order_value == 1234' queue=veq;
        psd_ticket_rule ge 'order_value >= 100000' queue=vge priority=urgent;
        psd_ticket_rule gt 'order_value > 50000' queue=vgt priority=high;
        psd_ticket_rule le 'order_value <= 10' queue=vle priority=low;
        psd_ticket_rule lt 'order_value < 100' queue=vlt;
        psd_ticket_rule ne 'order_value != 5000' queue=vne;
    }
--- check
my @cases = (
    [1234, 'veq', 'eq'], [100000, 'vge', 'ge'], [9007199254740991, 'vge', 'ge'],
    [99999, 'vgt', 'gt'], [50001, 'vgt', 'gt'], [50000, 'vne', 'ne'],
    [10, 'vle', 'le'], [0, 'vle', 'le'], [11, 'vlt', 'lt'], [99, 'vlt', 'lt'],
    [100, 'vne', 'ne'], [1233, 'vne', 'ne'], [5000, 'general', ''],
);
for my $c (@cases) {
    my ($amount, $queue, $rule) = @$c;
    order("o$amount", state => 'paid', amount => $amount);
    my $j = open_ok("amount $amount", order_id => "o$amount");
    is $j->{queue}, $queue, "amount $amount: queue $queue";
    my $e = entry($queue, $j->{ticket}) // {};
    is $e->{rule}, $rule, "amount $amount: rule '$rule'";
    is $e->{order_state}, 'paid', "amount $amount: order_state paid";
}
is open_ok('ge is urgent', order_id => 'o100000')->{priority}, 'urgent', 'priority urgent';
is open_ok('gt is high', order_id => 'o99999')->{priority}, 'high', 'priority high';
is open_ok('le is low', order_id => 'o10')->{priority}, 'low', 'priority low';
# an order without an amount, or with one that is no number
order('noamount', state => 'paid');
is open_ok('no amount', order_id => 'noamount')->{queue}, 'general', 'no amount: not even !=';
order('badamount', state => 'paid', amount => '12abc');
is open_ok('bad amount', order_id => 'badamount')->{queue}, 'general', 'amount 12abc: no value';
order('negamount', state => 'paid', amount => '-5');
is open_ok('negative amount', order_id => 'negamount')->{queue}, 'general', 'amount -5: no value';
is open_ok('no order')->{queue}, 'general', 'no order: no value';
--- no_error_log
[error]



=== TEST 3: category, order_state, email_domain, keyword (words, phrases), "*"; rule order
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location = /t {
        psd_ticket;
        psd_ticket_rule disputes "order_state == chargeback" queue=disputes priority=urgent first_response=1h resolution=24h;
        psd_ticket_rule billing "category == billing" queue=billing priority=high;
        psd_ticket_rule corp "email_domain == example.com" queue=corp priority=low;
        psd_ticket_rule money 'keyword has "money back"' queue=refunds priority=high;
        psd_ticket_rule refund "keyword has refund" queue=refunds;
        psd_ticket_rule orders "order_state != none and category == orders" queue=orders;
        psd_ticket_rule nocat "category != general and order_state == refunded" queue=refunded;
        psd_ticket_rule all "*" queue=triage priority=low first_response=2h resolution=3d;
    }
--- check
# [name, fields, queue, priority, rule]
order('cb', state => 'chargeback', amount => 100);
order('paid', state => 'paid', amount => 100);
order('rf', state => 'refunded', amount => 100);
my @cases = (
    ['category billing', [category => 'billing'], 'billing', 'high', 'billing'],
    ['category Billing (case)', [category => 'Billing'], 'billing', 'high', 'billing'],
    ['category billing2', [category => 'billing2'], 'triage', 'low', 'all'],
    ['chargeback before billing', [category => 'billing', order_id => 'cb'],
        'disputes', 'urgent', 'disputes'],
    ['billing before corp', [category => 'billing', email => 'bo@example.com'],
        'billing', 'high', 'billing'],
    ['email_domain', [email => 'bob@example.com'], 'corp', 'low', 'corp'],
    ['email_domain case', [email => 'bob@EXAMPLE.Com'], 'corp', 'low', 'corp'],
    ['email subdomain', [email => 'bob@mail.example.com'], 'triage', 'low', 'all'],
    ['email other domain', [email => 'bob@example.com.evil.org'], 'triage', 'low', 'all'],
    ['corp before keyword', [email => 'bob@example.com', subject => 'refund'],
        'corp', 'low', 'corp'],
    ['phrase', [subject => 'I want my money back'], 'refunds', 'high', 'money'],
    ['phrase, runs of spaces, case', [message => "MONEY  \r\n\tBack, now!"],
        'refunds', 'high', 'money'],
    ['phrase, no-break space', [message => "money\x{a0}back"], 'refunds', 'high', 'money'],
    ['phrase run together', [message => 'moneyback please'], 'triage', 'low', 'all'],
    ['phrase with a dash', [message => 'money-back guarantee'], 'triage', 'low', 'all'],
    ['phrase across subject and message', [subject => 'my money', message => 'back please'],
        'triage', 'low', 'all'],
    ['phrase before word', [subject => 'refund', message => 'money back'],
        'refunds', 'high', 'money'],
    ['word', [subject => 'Refund please'], 'refunds', 'normal', 'refund'],
    ['word in punctuation', [message => 'I want a (REFUND)!'], 'refunds', 'normal', 'refund'],
    ['word at the end', [message => 'please refund'], 'refunds', 'normal', 'refund'],
    ['word in quotes', [message => "\x{201e}refund\x{201c}"], 'refunds', 'normal', 'refund'],
    ['not a prefix', [message => 'it was refunded'], 'triage', 'low', 'all'],
    ['not inside', [message => 'nonrefundable'], 'triage', 'low', 'all'],
    ['not before _', [message => 'refund_now'], 'triage', 'low', 'all'],
    ['not before a digit', [message => 'refund2'], 'triage', 'low', 'all'],
    ['not before a letter', [message => "refund\x{e9}"], 'triage', 'low', 'all'],
    ['order_state != none', [category => 'orders', order_id => 'paid'],
        'orders', 'normal', 'orders'],
    ['order_state != none without order', [category => 'orders'], 'triage', 'low', 'all'],
    ['!= on a missing category', [order_id => 'rf'], 'refunded', 'normal', 'nocat'],
    ['!= on the category', [order_id => 'rf', category => 'GENERAL'], 'triage', 'low', 'all'],
    ['nothing else: *', [], 'triage', 'low', 'all'],
);
my %sla = (disputes => [3600, 86400], all => [7200, 3 * 86400]);
for my $c (@cases) {
    my ($name, $f, $queue, $prio, $rule) = @$c;
    my $t0 = time;
    my $j = open_ok($name, @$f);
    is $j->{queue}, $queue, "$name: queue $queue";
    is $j->{priority}, $prio, "$name: priority $prio";
    like $j->{ticket}, qr/^\Q$queue\E\.[A-Za-z0-9]{16}\z/, "$name: id in the queue";
    my $e = entry($queue, $j->{ticket}) // {};
    is $e->{rule}, $rule, "$name: rule $rule";
    is $e->{priority}, $prio, "$name: entry priority";
    my ($fr, $rs) = @{ $sla{$rule} // [4 * 3600, 48 * 3600] };
    is $e->{first_response_due} - $e->{created_at}, $fr, "$name: first response in $fr s";
    is $e->{resolution_due} - $e->{created_at}, $rs, "$name: resolution in $rs s";
    ok abs($j->{first_response_by} - $t0 - $fr) <= 2, "$name: first_response_by";
    my $rec = record($queue, $j->{ticket});
    is $rec->{state}, 'open', "$name: record open";
    is $rec->{first_response_due}, $e->{first_response_due}, "$name: record due";
}
is entry('disputes', (map { pairs_to_hash($_->[1])->{ticket} } xrange('disputes'))[0])->{order_state},
    'chargeback', 'order_state carried into the entry';
--- no_error_log
[error]



=== TEST 4: rules, none matches: general/normal/4h/48h; server rules inherited, location rules replace them; psd_ticket on/off
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    psd_ticket_rule srv "category == srv" queue=server priority=high first_response=30m resolution=1d;
    location = /t {
        psd_ticket;
        psd_ticket_rule never "category == nothing_like_this" queue=never;
        psd_ticket_rule vip "email_domain == vip.example" queue=vip priority=urgent first_response=15m resolution=4h;
    }
    location = /t2 { psd_ticket on; }
    location = /off.txt { psd_ticket off; }
--- user_files
>>> off.txt
static
--- check
is http_get('/off.txt')->{body}, "static\n", 'psd_ticket off: not an intake';
is post('/off.txt', enc({ base() }))->{status}, 405, 'psd_ticket off: POST to a static file';
my $t0 = time;
my $j = open_ok('no rule matches', category => 'srv');
is $j->{queue}, 'general', 'queue general';
is $j->{priority}, 'normal', 'priority normal';
ok abs($j->{first_response_by} - $t0 - 4 * 3600) <= 2, 'first response 4h';
my $e = entry('general', $j->{ticket});
is $e->{rule}, '', 'no rule';
is $e->{resolution_due} - $e->{created_at}, 48 * 3600, 'resolution 48h';
$j = open_ok('vip', email => 'boss@VIP.example');
is $j->{queue}, 'vip', 'queue vip';
is $j->{priority}, 'urgent', 'priority urgent';
$e = entry('vip', $j->{ticket});
is $e->{first_response_due} - $e->{created_at}, 900, 'first response 15m';
is $e->{resolution_due} - $e->{created_at}, 4 * 3600, 'resolution 4h';
# /t2 inherits the server's rule
my $r = post('/t2', enc({ base(), category => 'srv' }));
is $r->{status}, 201, '/t2: 201';
$j = jbody($r);
is $j->{queue}, 'server', '/t2: server rule';
is $j->{priority}, 'high', '/t2: priority high';
$e = entry('server', $j->{ticket});
is $e->{rule}, 'srv', '/t2: rule srv';
is $e->{first_response_due} - $e->{created_at}, 1800, '/t2: first response 30m';
is $e->{resolution_due} - $e->{created_at}, 86400, '/t2: resolution 1d';
--- no_error_log
[error]



=== TEST 5: deflection by category, keyword, phrase and order state; file_anyway; the first answer wins
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location = /t {
        psd_ticket;
        psd_ticket_answer category=Shipping "Parcels ship within 2 days.";
        psd_ticket_answer keyword=invoice "Invoices: see \"My account\" \\ Rechnungen — ok";
        psd_ticket_answer "keyword=password reset" "Use the reset link.";
        psd_ticket_answer order_state=payment_failed "Your payment failed; please retry.";
        psd_ticket_answer order_state=refunded "Your refund is on its way.";
        psd_ticket_answer order_state=paid "Your order is paid: downloads are in your account.";
        psd_ticket_rule billing "category == shipping" queue=shipping;
    }
    location = /m { psd_metrics; }
--- check
my $m0 = metrics();
order('failed', state => 'created', failed_attempts => 2, amount => 900);
order('unpaid', state => 'created', failed_attempts => 0, amount => 900);
order('unpaid2', state => 'created', amount => 900);
order('refunded', state => 'refunded', amount => 900);
order('paid', state => 'paid', amount => 900);
order('paidfail', state => 'paid', failed_attempts => 1, amount => 900);
order('cb', state => 'chargeback', amount => 900);
my $before = dbkeys();
my $deflected = 0;
my $answered = sub {
    my ($name, $text, @f) = @_;
    my $r = ticket(@f);
    is $r->{status}, 200, "$name: 200" or diag $r->{raw};
    is $r->{headers}{'content-type'}, 'application/json', "$name: JSON";
    my $j = jbody($r) // {};
    is_deeply [sort keys %$j], [qw(answer deflected ticket)], "$name: fields";
    ok $j->{deflected} && ref $j->{deflected}, "$name: deflected true";
    is $j->{answer}, $text, "$name: the answer";
    ok exists $j->{ticket} && !defined $j->{ticket}, "$name: ticket null";
    $deflected++;
};
$answered->('category', 'Parcels ship within 2 days.', category => 'shipping');
$answered->('category, case', 'Parcels ship within 2 days.', category => 'SHIPPING');
$answered->('keyword', "Invoices: see \"My account\" \\ Rechnungen \x{2014} ok",
            subject => 'Invoice?');
$answered->('keyword in the message', "Invoices: see \"My account\" \\ Rechnungen \x{2014} ok",
            message => 'where is the INVOICE');
$answered->('phrase', 'Use the reset link.', message => "Password \t Reset does not work");
$answered->('payment_failed', 'Your payment failed; please retry.', order_id => 'failed');
$answered->('refunded', 'Your refund is on its way.', order_id => 'refunded');
$answered->('paid', 'Your order is paid: downloads are in your account.', order_id => 'paid');
$answered->('paid with failed attempts is paid',
            'Your order is paid: downloads are in your account.', order_id => 'paidfail');
$answered->('first answer wins', 'Parcels ship within 2 days.',
            category => 'shipping', subject => 'invoice', order_id => 'refunded');
$answered->('file_anyway false', 'Parcels ship within 2 days.',
            category => 'shipping', file_anyway => JSON::PP::false);
$answered->('file_anyway "true" is no true', 'Parcels ship within 2 days.',
            category => 'shipping', file_anyway => 'true');
$answered->('file_anyway 1 is no true', 'Parcels ship within 2 days.',
            category => 'shipping', file_anyway => 1);
is dbkeys(), $before, 'deflections write nothing';

# no answer fits
for (['invoices', subject => 'invoices'], ['password only', message => 'my password'],
     ['created without failed attempts', order_id => 'unpaid'],
     ['created, no attempts field', order_id => 'unpaid2'],
     ['chargeback', order_id => 'cb'], ['other category', category => 'shipping2']) {
    my ($name, @f) = @$_;
    my $j = open_ok($name, @f);
    ok !$j->{deflected}, "$name: not deflected";
    is +(entry($j->{queue}, $j->{ticket}) // {})->{answered}, 'false', "$name: answered false";
}
my ($unpaid) = grep { $_->{order} eq 'unpaid' } map { pairs_to_hash($_->[1]) } xrange('general');
is $unpaid->{order_state}, 'created', 'unpaid order: order_state created';

# file_anyway: true files despite an answer
my $t0 = time;
my $j = open_ok('file_anyway', category => 'shipping', file_anyway => JSON::PP::true);
ok !$j->{deflected}, 'file_anyway: deflected false';
is $j->{queue}, 'shipping', 'file_anyway: triaged';
my $e = entry('shipping', $j->{ticket}) // {};
is $e->{answered}, 'true', 'file_anyway: answered true in the entry';
is $e->{rule}, 'billing', 'file_anyway: the rule';
is record('shipping', $j->{ticket})->{state}, 'open', 'file_anyway: record';
$j = open_ok('file_anyway by order state', order_id => 'failed', file_anyway => JSON::PP::true);
$e = entry('general', $j->{ticket}) // {};
is $e->{answered}, 'true', 'payment_failed filed anyway: answered true';
is $e->{order_state}, 'created', 'payment_failed filed anyway: order_state created';

my $m1 = metrics();
is $m1->{psd_tickets_deflected_total} - $m0->{psd_tickets_deflected_total}, $deflected,
   "psd_tickets_deflected_total +$deflected";
is $m1->{psd_tickets_opened_total} - $m0->{psd_tickets_opened_total}, 8,
   'psd_tickets_opened_total +8';
--- no_error_log
[error]



=== TEST 6: order linking: the order's ticket set, order and order_state carried; an unknown order is a claim, not a 422
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location = /t { psd_ticket; psd_ticket_rule r "order_state == refunded" queue=refunds; }
--- check
order('ord_1', state => 'paid', amount => 2500, currency => 'eur');
my $j1 = open_ok('first', order_id => 'ord_1');
my $j2 = open_ok('second', order_id => 'ord_1', category => 'billing');
# the order's set is written once the ticket exists, without holding the answer
ok wait_until(sub { redis_cmd('SCARD', 'psd:{order:ord_1}:tickets') == 2 }, 3), 'two in the set';
is_deeply [sort @{ redis_cmd('SMEMBERS', 'psd:{order:ord_1}:tickets') }],
    [sort $j1->{ticket}, $j2->{ticket}], 'SMEMBERS psd:{order:ord_1}:tickets';
my $e = entry('general', $j1->{ticket});
is $e->{order}, 'ord_1', 'entry: order';
is $e->{order_state}, 'paid', 'entry: order_state';
is $e->{order_verified}, 'true', 'entry: the order exists';
is record('general', $j1->{ticket})->{order}, 'ord_1', 'record: order';
is redis_cmd('HGET', 'psd:{order:ord_1}', 'state'), 'paid', 'the order record is untouched';
is redis_cmd('HLEN', 'psd:{order:ord_1}'), 3, 'no field added to the order';

order('ord:2.x-y_z', state => 'refunded', amount => 1);
my $j3 = open_ok('order id with : . - _', order_id => 'ord:2.x-y_z');
is $j3->{queue}, 'refunds', 'triaged by its state';
ok wait_until(sub { redis_cmd('SCARD', 'psd:{order:ord:2.x-y_z}:tickets') == 1 }, 3), 'linked';
is_deeply redis_cmd('SMEMBERS', 'psd:{order:ord:2.x-y_z}:tickets'), [$j3->{ticket}], 'the ticket';
is entry('refunds', $j3->{ticket})->{order_state}, 'refunded', 'order_state refunded';

my $j4 = open_ok('empty order_id is no order', order_id => '');
$e = entry('general', $j4->{ticket});
is $e->{order}, '', 'empty order_id: no order';
is $e->{order_state}, 'none', 'empty order_id: none';
my $j5 = open_ok('null order_id is no order', order_id => undef);

ok !redis_cmd('EXISTS', 'psd:{order:}:tickets'), 'no set for an empty order id';
# an anonymous client must not learn which orders exist: an unknown order
# is filed like any ticket, as a claim the order does not list
my $j6 = open_ok('unknown order: filed all the same', order_id => 'ord_404');
$e = entry('general', $j6->{ticket});
is $e->{order}, 'ord_404', 'unknown order: the claim is kept for the help desk';
is $e->{order_verified}, 'false', 'unknown order: order_verified false';
is $e->{order_state}, 'none', 'unknown order: no state';
is record('general', $j6->{ticket})->{order_verified}, 'false', 'record: order_verified false';
sleep 0.3;
ok !redis_cmd('EXISTS', 'psd:{order:ord_404}:tickets'), 'no ticket set for it';
ok !redis_cmd('EXISTS', 'psd:{order:ord_404}'), 'no order record made';
--- no_error_log
[error]



=== TEST 7: refused inputs: status, stable code, nothing written
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location = /t { psd_ticket; psd_ticket_max_message 100; psd_ticket_answer category=x "a"; }
    location = /m { psd_metrics; }
--- check
my $m0 = metrics();
is dbkeys(), '', 'empty Redis';
my @cases = (
    # [name, ticket args or a string, status, code, field]
    ['no fields', '{}', 400, 'invalid_field', 'email'],
    ['no email', [email => undef], 400, 'invalid_field', 'email'],
    ['no subject', [subject => undef], 400, 'invalid_field', 'subject'],
    ['no message', [message => undef], 400, 'invalid_field', 'message'],
    ['email null', '{"email":null,"subject":"s","message":"m"}', 400, 'invalid_field', 'email'],
    ['empty email', [email => ''], 400, 'invalid_field', 'email'],
    ['empty subject', [subject => ''], 400, 'invalid_field', 'subject'],
    ['empty message', [message => ''], 400, 'invalid_field', 'message'],
    (map { ["email '$_'", [email => $_], 400, 'invalid_email', 'email'] }
        'plain', 'a@b', 'a@@b.com', 'a@b@c.com', 'a b@x.com', "a\tb\@x.com", '@x.com',
        'a@-x.com', 'a@x-.com', 'a@x.com.', 'a@.x.com', 'a@x..com', 'a@[127.0.0.1]',
        "a\@b\x{e4}r.com", 'a@x_y.com', ('l' x 65) . '@x.com', 'a@' . ('d' x 64) . '.com'),
    ['email of 255 bytes', [email => ('a' x 60) . '@' . join('.', ('b' x 60) x 3) . '.' . 'c' x 11],
        400, 'invalid_field', 'email'],
    ['subject of 201 bytes', [subject => 's' x 201], 400, 'invalid_field', 'subject'],
    ['subject of 101 x U+00E9 (202 bytes)', [subject => "\x{e9}" x 101], 400, 'invalid_field',
        'subject'],
    ['message over psd_ticket_max_message', [message => 'm' x 101], 400, 'invalid_field',
        'message'],
    ['message over max, in bytes', [message => "\x{20ac}" x 34], 400, 'invalid_field', 'message'],
    ['email a number', [email => 5], 400, 'invalid_field', 'email'],
    ['subject true', [subject => JSON::PP::true], 400, 'invalid_field', 'subject'],
    ['message an array', [message => ['m']], 400, 'invalid_field', 'message'],
    ['message an object', [message => { text => 'm' }], 400, 'invalid_field', 'message'],
    ['category a number', [category => 7], 400, 'invalid_field', 'category'],
    ['category an array', [category => ['x']], 400, 'invalid_field', 'category'],
    ['order_id a number', [order_id => 12], 400, 'invalid_field', 'order_id'],
    ['order_id false', [order_id => JSON::PP::false], 400, 'invalid_field', 'order_id'],
    (map { ["category '$_'", [category => $_], 400, 'invalid_field', 'category'] }
        'bill ing', 'billing!', 'bil/ling', 'a.b', "caf\x{e9}", 'x' x 33, "a\nb", '{x}'),
    (map { ["order_id '$_'", [order_id => $_], 400, 'invalid_field', 'order_id'] }
        'ord 1', 'ord/1', 'ord}x', '{ord}', 'ord*', "ord\x{e9}", 'o' x 65, "o\r\n"),
    ['invalid JSON', '{"email":', 400, 'invalid_json', undef],
    ['not JSON', 'email=a@b.com', 400, 'invalid_json', undef],
    ['empty body', '', 400, 'invalid_json', undef],
    ['trailing garbage', enc({ base() }) . 'x', 400, 'invalid_json', undef],
    ['an array', '[' . enc({ base() }) . ']', 400, 'invalid_json', undef],
    ['a string', '"hello"', 400, 'invalid_json', undef],
    ['a number', '42', 400, 'invalid_json', undef],
    ['null', 'null', 400, 'invalid_json', undef],
    ['duplicate keys',
        '{"email":"a@example.org","email":"b@example.org","subject":"s","message":"m"}',
        400, 'invalid_json', undef],
    ['\u0000 in the subject', '{"email":"a@example.org","subject":"a\u0000b","message":"m"}',
        400, 'invalid_json', undef],
    ['\u0000 in the email', '{"email":"a@example.org\u0000x","subject":"s","message":"m"}',
        400, 'invalid_json', undef],
    ['lone surrogate escape', '{"email":"a@example.org","subject":"\ud800","message":"m"}',
        400, 'invalid_json', undef],
    (map { my $b = $_; ["invalid UTF-8 " . unpack('H*', $b),
        qq({"email":"a\@example.org","subject":"s","message":"x${b}y"}), 400, 'invalid_json',
        undef] } "\xc3\x28", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
        "\xff", "\x80", "\xe2\x82"),
    ['invalid UTF-8 in a key', qq({"email":"a\@example.org","subject":"s","message":"m","\xff":1}),
        400, 'invalid_json', undef],
    ['a raw control character', qq({"email":"a\@example.org","subject":"s\x01","message":"m"}),
        400, 'invalid_json', undef],
);
for my $c (@cases) {
    my ($name, $f, $status, $code, $field) = @$c;
    is_error(ref $f ? ticket(@$f) : ticket($f), $status, $code, $field, $name);
}
for my $m (qw(GET PUT DELETE PATCH)) {
    my $r = http_request("$m /t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    is_error($r, 405, 'method_not_allowed', undef, $m);
}
my $r = http_request("HEAD /t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
is $r->{status}, 405, 'HEAD: 405';
is $r->{body}, '', 'HEAD: no body';
is dbkeys(), '', 'nothing written by any of them';
my $m1 = metrics();
is $m1->{psd_tickets_opened_total}, $m0->{psd_tickets_opened_total}, 'none opened';
is $m1->{psd_tickets_deflected_total}, $m0->{psd_tickets_deflected_total}, 'none deflected';
# the limits themselves are fine
open_ok('subject of 200 bytes', subject => 's' x 200);
open_ok('subject of 100 x U+00E9', subject => "\x{e9}" x 100);
open_ok('message of 100 bytes', message => 'm' x 100);
open_ok('email of 254 bytes', email => ('a' x 60) . '@' . join('.', ('b' x 60) x 3) . '.' . 'c' x 10);
open_ok('email with a 64-byte local part and punycode', email => ('l' x 64) . '@xn--bcher-kva.example');
open_ok('email with UTF-8 local part', email => "j\x{f6}rg\@example.org");
open_ok('category of 32 bytes, _ and -', category => 'A-b_' x 8);
order('o' x 64, state => 'paid');
open_ok('order_id of 64 bytes', order_id => 'o' x 64);
open_ok('unknown fields are ignored', extra => { a => [1] }, file_anyway => 'x');
--- no_error_log
[error]



=== TEST 8: body size: 64 KiB is fine, more is 413 body_too_large (length or chunked); psd_ticket_max_message 1m
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location = /t { psd_ticket; psd_ticket_max_message 1m; }
--- check
my $body = enc({ base(), message => 'm' x 60000 });
$body .= ' ' x (65536 - length $body);
is length $body, 65536, '65536 bytes';
my $r = ticket($body);
is $r->{status}, 201, '64 KiB body: 201' or diag $r->{raw};
my $j = jbody($r);
is length(entry('general', $j->{ticket})->{message}), 60000, 'a 60000-byte message';
my $keys = dbkeys();
is_error(ticket($body . ' '), 413, 'body_too_large', undef, '65537 bytes');
my $big = $body . (' ' x 10000);
my $chunked = "POST /t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    . "Transfer-Encoding: chunked\r\n\r\n"
    . join('', map { sprintf("%x\r\n%s\r\n", length $_, $_) } unpack '(a8000)*', $big)
    . "0\r\n\r\n";
is_error(http_request($chunked), 413, 'body_too_large', undef, 'chunked, 75536 bytes');
$chunked = "POST /t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    . "Transfer-Encoding: chunked\r\n\r\n"
    . join('', map { sprintf("%x\r\n%s\r\n", length $_, $_) } unpack '(a8000)*', $body)
    . "0\r\n\r\n";
is http_request($chunked)->{status}, 201, 'chunked, 64 KiB: 201';
$r = http_request("POST /t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                  . "Content-Length: 200000\r\n\r\n" . ('x' x 1000));
is_error($r, 413, 'body_too_large', undef, 'Content-Length 200000, refused before the body');
is redis_cmd('XLEN', 'psd:{tq:general}'), 2, 'only the two good tickets';
--- no_error_log
[error]



=== TEST 9: psd_limit in front of the intake: a flood from one client gets 429
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_limit_zone tickets key=$binary_remote_addr rate=1r/m burst=2;
--- config
    location = /t { psd_limit tickets nodelay; psd_ticket; }
--- check
my $body = enc({ base() });
my $req = "POST /t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
my @r = @{ http_parallel([ ($req) x 20 ]) };
my %n;
$n{ $_->{status} // 'none' }++ for @r;
is $n{201}, 3, 'burst+1 tickets filed';
is $n{429}, 17, 'the rest: 429';
my ($rej) = grep { ($_->{status} // 0) == 429 } @r;
like $rej->{body}, qr/"error":"rate_limited"/, '429: rate_limited';
ok $rej->{headers}{'retry-after'}, '429: Retry-After';
is redis_cmd('XLEN', 'psd:{tq:general}'), 3, 'three tickets in the stream';
is scalar(grep { /:t:/ } split / /, dbkeys()), 3, 'three records';
--- no_error_log
[error]



=== TEST 10: staff endpoint: 401, acknowledge, resolve, repeat, 404, 400
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location = /t { psd_ticket; psd_ticket_rule b "category == billing" queue=billing; }
    location = /staff { psd_ticket_admin; psd_ticket_api_key $TEST_NGINX_CONF_DIR/ticket.key; }
--- check
my $j = open_ok('ticket', category => 'billing');
my $id = $j->{ticket};
like $id, qr/^billing\./, 'billing ticket';
my $ack = { ticket => $id, state => 'acknowledged' };
my $keys = dbkeys();
my $rec = record('billing', $id);

is_error(staff($ack), 401, 'unauthorized', undef, 'no Authorization');
is_error(staff($ack, 'wrong-key-wrong-key-wrong'), 401, 'unauthorized', undef, 'wrong key');
is_error(staff($ack, "${main::API_KEY}x"), 401, 'unauthorized', undef, 'key with a byte more');
is_error(staff($ack, substr($main::API_KEY, 0, -1)), 401, 'unauthorized', undef, 'key cut short');
is_error(post('/staff', enc($ack), "Authorization: Basic $main::API_KEY"), 401, 'unauthorized',
         undef, 'Basic');
is_error(staff('{not json', 'bad'), 401, 'unauthorized', undef, 'bad key before bad JSON');
is_deeply record('billing', $id), $rec, 'refusals change nothing';

my $t0 = time;
my $r = staff($ack, $main::API_KEY);
is $r->{status}, 200, 'acknowledge: 200' or diag $r->{raw};
is $r->{body}, qq({"updated":true}\n), 'acknowledge: {"updated":true}';
is $r->{headers}{'content-type'}, 'application/json', 'JSON';
$rec = record('billing', $id);
is $rec->{state}, 'acknowledged', 'record: acknowledged';
ok abs($rec->{acknowledged_at} - $t0) <= 2, 'record: acknowledged_at';
ok !exists $rec->{resolved_at}, 'not resolved';
is staff($ack, $main::API_KEY)->{body}, qq({"updated":false}\n), 'acknowledge again: false';
is record('billing', $id)->{acknowledged_at}, $rec->{acknowledged_at}, 'acknowledged_at kept';

my $res = { ticket => $id, state => 'resolved' };
$r = staff($res, $main::API_KEY);
is $r->{status}, 200, 'resolve: 200';
is $r->{body}, qq({"updated":true}\n), 'resolve: {"updated":true}';
$rec = record('billing', $id);
is $rec->{state}, 'resolved', 'record: resolved';
ok abs($rec->{resolved_at} - $t0) <= 2, 'record: resolved_at';
is staff($res, $main::API_KEY)->{body}, qq({"updated":false}\n), 'resolve again: false';
is staff($ack, $main::API_KEY)->{body}, qq({"updated":false}\n), 'acknowledge after resolve: false';
is record('billing', $id)->{state}, 'resolved', 'still resolved';

# resolved straight away: acknowledged then too
my $id2 = open_ok('second')->{ticket};
is staff({ ticket => $id2, state => 'resolved' }, $main::API_KEY)->{body},
   qq({"updated":true}\n), 'resolve an open ticket';
$rec = record('general', $id2);
is $rec->{state}, 'resolved', 'resolved';
ok $rec->{acknowledged_at} && $rec->{resolved_at}, 'acknowledged_at and resolved_at';

$keys = dbkeys();
is_error(staff({ ticket => 'general.AAAAAAAAAAAAAAAA', state => 'resolved' }, $main::API_KEY),
         404, 'unknown_ticket', undef, 'unknown ticket');
is_error(staff({ ticket => 'nope.' . substr($id, 8), state => 'acknowledged' }, $main::API_KEY),
         404, 'unknown_ticket', undef, 'unknown queue');
is dbkeys(), $keys, 'unknown tickets: nothing written';

for (['general', 'no dot'], ['.abc', 'no queue'], ['general.', 'no id'],
     ['gen eral.abc', 'space'], ['general.a/b', 'slash'], ['general.a.b', 'two dots'],
     ['general.a}b', 'brace'], ['q' x 33 . '.abc', 'queue of 33'],
     ['general.' . 'a' x 33, 'id of 33'], [12, 'a number'], [undef, 'missing'],
     [['general.abc'], 'an array']) {
    my ($t, $name) = @$_;
    is_error(staff({ defined $t ? (ticket => $t) : (), state => 'resolved' }, $main::API_KEY),
             400, 'invalid_field', 'ticket', "ticket: $name");
}
for (['open', 'open'], ['Acknowledged', 'case'], ['resolved ', 'a space'], [1, 'a number'],
     [undef, 'missing'], [JSON::PP::true, 'true']) {
    my ($s, $name) = @$_;
    is_error(staff({ ticket => $id2, defined $s ? (state => $s) : () }, $main::API_KEY),
             400, 'invalid_field', 'state', "state: $name");
}
is_error(staff('{"ticket":', $main::API_KEY), 400, 'invalid_json', undef, 'invalid JSON');
is_error(staff('[]', $main::API_KEY), 400, 'invalid_json', undef, 'JSON array');
$r = http_request("PUT /staff HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                  . "Authorization: Bearer $main::API_KEY\r\nContent-Length: 0\r\n\r\n");
is_error($r, 405, 'method_not_allowed', undef, 'PUT');
# GET is the staff ticket view (t/071-csat.t): without ?ticket= a 400
$r = http_request("GET /staff HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                  . "Authorization: Bearer $main::API_KEY\r\n\r\n");
is_error($r, 400, 'invalid_field', 'ticket', 'GET without ?ticket=');
is dbkeys(), $keys, 'refusals: nothing written';
--- no_error_log
[error]



=== TEST 11: metrics: opened, deflected, acknowledged, resolved, times, SLA breaches
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location = /t {
        psd_ticket;
        psd_ticket_answer category=faq "See the FAQ.";
        psd_ticket_rule fast "category == fast" queue=fast priority=urgent first_response=1s resolution=1s;
    }
    location = /staff { psd_ticket_admin; psd_ticket_api_key $TEST_NGINX_CONF_DIR/ticket.key; }
    location = /m { psd_metrics; }
--- check
my @names = qw(psd_tickets_opened_total psd_tickets_deflected_total
    psd_tickets_acknowledged_total psd_tickets_resolved_total
    psd_ticket_first_response_seconds_total psd_ticket_resolution_seconds_total
    psd_ticket_sla_breaches_total{sla="first_response"}
    psd_ticket_sla_breaches_total{sla="resolution"});
my $m0 = metrics();
ok exists $m0->{$_}, "metric $_" for @names;
my $r = http_get('/m');
like $r->{body}, qr/^# TYPE psd_ticket_sla_breaches_total counter$/m, 'TYPE of the breaches';
my $delta = sub { my $m = metrics(); return { map { $_ => $m->{$_} - $m0->{$_} } @names } };

# on time: acknowledged and resolved at once
my $a = open_ok('a')->{ticket};
is ticket(category => 'faq')->{status}, 200, 'deflected';
is staff({ ticket => $a, state => 'acknowledged' }, $main::API_KEY)->{body},
   qq({"updated":true}\n), 'a acknowledged';
is staff({ ticket => $a, state => 'resolved' }, $main::API_KEY)->{body},
   qq({"updated":true}\n), 'a resolved';
my $ra = record('general', $a);
my $d = $delta->();
is $d->{psd_tickets_opened_total}, 1, 'opened +1';
is $d->{psd_tickets_deflected_total}, 1, 'deflected +1';
is $d->{psd_tickets_acknowledged_total}, 1, 'acknowledged +1';
is $d->{psd_tickets_resolved_total}, 1, 'resolved +1';
is $d->{psd_ticket_first_response_seconds_total}, $ra->{acknowledged_at} - $ra->{created_at},
   'first response seconds: acknowledged_at - created_at';
is $d->{psd_ticket_resolution_seconds_total}, $ra->{resolved_at} - $ra->{created_at},
   'resolution seconds: resolved_at - created_at';
is $d->{'psd_ticket_sla_breaches_total{sla="first_response"}'}, 0, 'no first response breach';
is $d->{'psd_ticket_sla_breaches_total{sla="resolution"}'}, 0, 'no resolution breach';
# repeats count nothing
staff({ ticket => $a, state => 'resolved' }, $main::API_KEY);
staff({ ticket => $a, state => 'acknowledged' }, $main::API_KEY);
is_deeply $delta->(), $d, 'repeated updates count nothing';

# late: SLA of 1 s.  Times are whole seconds and late means now > due, so
# wait until created_at + 2 s (a little more than 1 s to at most 2 s).
my $jb = open_ok('fast', category => 'fast');
my $b = $jb->{ticket};
like $b, qr/^fast\./, 'fast queue';
my $created = record('fast', $b)->{created_at};
is $jb->{first_response_by}, $created + 1, 'first_response_by = created_at + 1';
sleep 0.05 while time < $created + 2.05;
is staff({ ticket => $b, state => 'acknowledged' }, $main::API_KEY)->{body},
   qq({"updated":true}\n), 'b acknowledged late';
is staff({ ticket => $b, state => 'resolved' }, $main::API_KEY)->{body},
   qq({"updated":true}\n), 'b resolved late';
my $rb = record('fast', $b);
ok $rb->{acknowledged_at} > $rb->{first_response_due}, 'acknowledged after the due time';
$d = $delta->();
is $d->{psd_tickets_opened_total}, 2, 'opened +2';
is $d->{psd_tickets_acknowledged_total}, 2, 'acknowledged +2';
is $d->{psd_tickets_resolved_total}, 2, 'resolved +2';
is $d->{'psd_ticket_sla_breaches_total{sla="first_response"}'}, 1, 'first response breach +1';
is $d->{'psd_ticket_sla_breaches_total{sla="resolution"}'}, 1, 'resolution breach +1';
is $d->{psd_ticket_first_response_seconds_total},
   $ra->{acknowledged_at} - $ra->{created_at} + $rb->{acknowledged_at} - $rb->{created_at},
   'first response seconds summed';
ok $d->{psd_ticket_first_response_seconds_total} >= 2, 'at least 2 s';
is $d->{psd_ticket_resolution_seconds_total},
   $ra->{resolved_at} - $ra->{created_at} + $rb->{resolved_at} - $rb->{created_at},
   'resolution seconds summed';

# resolved late in one step: both figures from one update
my $c = open_ok('fast 2', category => 'fast')->{ticket};
my $cc = record('fast', $c)->{created_at};
sleep 0.05 while time < $cc + 2.05;
is staff({ ticket => $c, state => 'resolved' }, $main::API_KEY)->{body},
   qq({"updated":true}\n), 'c resolved late, never acknowledged';
my $d2 = $delta->();
is $d2->{psd_tickets_acknowledged_total}, 3, 'resolving counts the first response too';
is $d2->{psd_tickets_resolved_total}, 3, 'resolved +3';
is $d2->{'psd_ticket_sla_breaches_total{sla="first_response"}'}, 2, 'first response breach +2';
is $d2->{'psd_ticket_sla_breaches_total{sla="resolution"}'}, 2, 'resolution breach +2';
--- no_error_log
[error]



=== TEST 12: a ticket created by a node whose clock runs ahead is still counted when acknowledged and resolved
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location = /t { psd_ticket; }
    location = /staff { psd_ticket_admin; psd_ticket_api_key $TEST_NGINX_CONF_DIR/ticket.key; }
    location = /m { psd_metrics; }
--- check
my $m0 = metrics();
my $id = open_ok('ticket')->{ticket};
my $rec = record('general', $id);
# as if another nginx node, its clock 30 s ahead of this one, had filed it
is redis_cmd('HSET', "psd:{tq:general}:t:$id", 'created_at', $rec->{created_at} + 30), 0,
   'created_at 30 s ahead';
is staff({ ticket => $id, state => 'acknowledged' }, $main::API_KEY)->{body},
   qq({"updated":true}\n), 'acknowledged';
is staff({ ticket => $id, state => 'resolved' }, $main::API_KEY)->{body},
   qq({"updated":true}\n), 'resolved';
my $m1 = metrics();
is $m1->{psd_tickets_acknowledged_total} - $m0->{psd_tickets_acknowledged_total}, 1,
   'psd_tickets_acknowledged_total +1';
is $m1->{psd_tickets_resolved_total} - $m0->{psd_tickets_resolved_total}, 1,
   'psd_tickets_resolved_total +1';
for (qw(psd_ticket_first_response_seconds_total psd_ticket_resolution_seconds_total)) {
    my $d = $m1->{$_} - $m0->{$_};
    ok $d >= 0 && $d < 1000, "$_ did not go backwards or wrap ($d)";
}
--- no_error_log
[error]



=== TEST 13: psd_ticket_stream_maxlen trims the stream (approximately), records stay
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location = /t { psd_ticket; psd_ticket_stream_maxlen 100; }
--- timeout: 30
--- check
my $body = enc({ base() });
my $req = "POST /t HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
my $ok = 0;
for (1 .. 26) {
    $ok += grep { ($_->{status} // 0) == 201 } @{ http_parallel([ ($req) x 10 ]) };
}
is $ok, 260, '260 tickets';
my $len = redis_cmd('XLEN', 'psd:{tq:general}');
ok $len >= 100 && $len < 260, "stream trimmed to about 100 ($len)";
is scalar(grep { /:t:/ } split / /, dbkeys()), 260, 'all 260 records kept';
--- no_error_log
[error]



=== TEST 14: Redis stopped: 503 with Retry-After, ticket in both or neither; an order read that timed out writes nothing
--- no_cluster: stops the single redis-server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT connect_timeout=300ms timeout=300ms;
--- config
    location = /t { psd_ticket; }
    location = /staff { psd_ticket_admin; psd_ticket_api_key $TEST_NGINX_CONF_DIR/ticket.key; }
--- timeout: 20
--- check
my $id = open_ok('healthy')->{ticket};
order('ord_s', state => 'paid');

redis_stop();
my $t0 = time;
my $r = ticket();
my $r2 = ticket(order_id => 'ord_s');
my $r3 = staff({ ticket => $id, state => 'acknowledged' }, $main::API_KEY);
my $took = time - $t0;
is_error($r, 503, 'backend_unavailable', undef, 'stopped Redis');
is $r->{headers}{'retry-after'}, '1', 'Retry-After: 1';
is_error($r2, 503, 'backend_unavailable', undef, 'stopped Redis, with an order');
is $r2->{headers}{'retry-after'}, '1', 'Retry-After: 1 (order)';
is_error($r3, 503, 'backend_unavailable', undef, 'stopped Redis, staff');
is $r3->{headers}{'retry-after'}, '1', 'Retry-After: 1 (staff)';
ok $took < 5, "bounded by timeout= ($took s)";

# a client that goes away while its ticket waits for Redis
for my $f ([], [order_id => 'ord_s']) {
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1',
        PeerPort => $ENV{TEST_NGINX_SERVER_PORT}, Proto => 'tcp') or die "connect: $@";
    print {$s} ticket_req('close', @$f);
    sleep 0.1;
    close $s;
}
sleep 0.5;
redis_cont();

ok wait_until(sub { ticket()->{status} == 201 }, 10), 'Redis back: 201';
sleep 0.3;
# whatever Redis applied late: every entry has its record and the reverse
my %in_stream = map { pairs_to_hash($_->[1])->{ticket} => 1 } xrange('general');
my %records = map { /:t:(.*)$/ ? ($1 => 1) : () } split / /, dbkeys();
is_deeply \%records, \%in_stream, 'records and stream entries match';
ok !redis_cmd('EXISTS', 'psd:{order:ord_s}:tickets'), 'the timed-out order read filed nothing';
is scalar(grep { pairs_to_hash($_->[1])->{order} eq 'ord_s' } xrange('general')), 0,
   'no entry for the order';
--- error_log eval
["psd: redis \"main\" did not answer within 300 ms"]
--- no_error_log
[alert]



=== TEST 15: Redis killed: 503 with Retry-After; deflection needs no Redis; back after a restart
--- no_cluster: kills and restarts the single redis-server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT connect_timeout=300ms timeout=300ms;
--- config
    location = /t { psd_ticket; psd_ticket_answer category=faq "See the FAQ."; }
    location = /staff { psd_ticket_admin; psd_ticket_api_key $TEST_NGINX_CONF_DIR/ticket.key; }
--- timeout: 20
--- check
my $id = open_ok('healthy')->{ticket};
redis_kill();
my $r = ticket();
is_error($r, 503, 'backend_unavailable', undef, 'killed Redis');
is $r->{headers}{'retry-after'}, '1', 'Retry-After: 1';
$r = ticket(order_id => 'x');
is_error($r, 503, 'backend_unavailable', undef, 'killed Redis, with an order');
$r = staff({ ticket => $id, state => 'resolved' }, $main::API_KEY);
is_error($r, 503, 'backend_unavailable', undef, 'killed Redis, staff');
is $r->{headers}{'retry-after'}, '1', 'Retry-After: 1 (staff)';
$r = ticket(category => 'faq');
is $r->{status}, 200, 'killed Redis: a deflection still answers';
is +(jbody($r) // {})->{answer}, 'See the FAQ.', 'the answer';
is_error(ticket(category => 'faq', order_id => 'x'), 503, 'backend_unavailable', undef,
         'killed Redis: no answer by category before the order is known');
redis_start();
is dbkeys(), '', 'a new, empty Redis';
ok wait_until(sub { ticket()->{status} == 201 }, 10), 'Redis back: 201';
my %in_stream = map { pairs_to_hash($_->[1])->{ticket} => 1 } xrange('general');
my %records = map { /:t:(.*)$/ ? ($1 => 1) : () } split / /, dbkeys();
is_deeply \%records, \%in_stream, 'records and stream entries match';
is scalar keys %records, 1, 'one ticket';
--- no_error_log
[alert]



=== TEST 16: a failed script leaves nothing half-written, and the order lists no ticket (stream key of the wrong type)
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
--- config
    location = /t { psd_ticket; }
--- check
is redis_cmd('SET', 'psd:{tq:general}', 'not a stream'), 'OK', 'the queue key is a string';
order('ord_w', state => 'paid');
my $before = dbkeys();
my $r = ticket();
is_error($r, 503, 'backend_unavailable', undef, 'XADD fails');
is $r->{headers}{'retry-after'}, '1', 'Retry-After: 1';
is dbkeys(), $before, 'no ticket record without its stream entry';
$r = ticket(order_id => 'ord_w');
is_error($r, 503, 'backend_unavailable', undef, 'XADD fails, with an order');
ok !redis_cmd('EXISTS', 'psd:{order:ord_w}:tickets'), 'the order lists no ticket that was not filed';
--- error_log
psd_ticket: redis answered
--- no_error_log
[alert]



=== TEST 17: nginx -t: a bad rule names the rule and the column
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_rule billing "category == billing and catgory == x"; }
--- must_die
--- error_log
invalid triage rule "billing": unknown field "catgory" at column 25



=== TEST 18: nginx -t: a rule that ends too early
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_ticket_rule late "category == billing and";
--- config
    location = /t { psd_ticket; }
--- must_die
--- error_log
invalid triage rule "late": expected a field at column 24



=== TEST 19: nginx -t: an unknown order state in a rule
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    psd_ticket_rule st "order_state == payed";
    location = /t { psd_ticket; }
--- must_die
--- error_log
invalid triage rule "st": unknown order state "payed" at column 16



=== TEST 20: nginx -t: a bad rule name
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_rule "bad name" "*"; }
--- must_die
--- error_log
invalid triage rule name "bad name"



=== TEST 21: nginx -t: bad queue
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_rule r "*" queue=bad/queue; }
--- must_die
--- error_log
invalid parameter "queue=bad/queue" in triage rule "r"



=== TEST 22: nginx -t: empty queue
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_rule r "*" queue=; }
--- must_die
--- error_log
invalid parameter "queue=" in triage rule "r"



=== TEST 23: nginx -t: queue longer than 32
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_rule r "*" queue=qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq; }
--- must_die
--- error_log
invalid parameter "queue=qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq" in triage rule "r"



=== TEST 24: nginx -t: bad priority
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_rule r "*" priority=critical; }
--- must_die
--- error_log
invalid parameter "priority=critical" in triage rule "r"



=== TEST 25: nginx -t: priority with a suffix
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_rule r "*" priority=highest; }
--- must_die
--- error_log
invalid parameter "priority=highest" in triage rule "r"



=== TEST 26: nginx -t: first_response of 0
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_rule r "*" first_response=0; }
--- must_die
--- error_log
invalid parameter "first_response=0" in triage rule "r"



=== TEST 27: nginx -t: a time that is no time
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_rule r "*" resolution=soon; }
--- must_die
--- error_log
invalid parameter "resolution=soon" in triage rule "r"



=== TEST 28: nginx -t: an unknown rule parameter
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_rule r "*" owner=ann; }
--- must_die
--- error_log
invalid parameter "owner=ann" in triage rule "r"



=== TEST 29: nginx -t: a rule without conditions
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_rule r; }
--- must_die
--- error_log
invalid number of arguments in "psd_ticket_rule" directive



=== TEST 30: nginx -t: bad answer kind
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_answer topic=refunds "See the FAQ."; }
--- must_die
--- error_log
invalid answer "topic=refunds", use category=<name>, keyword=<word> or order_state=<state> and a text



=== TEST 31: nginx -t: answer without a value
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_answer category= "See the FAQ."; }
--- must_die
--- error_log
invalid answer "category="



=== TEST 32: nginx -t: answer without "="
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_answer category "See the FAQ."; }
--- must_die
--- error_log
invalid answer "category"



=== TEST 33: nginx -t: answer with an empty text
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_answer category=x ""; }
--- must_die
--- error_log
invalid answer "category=x"



=== TEST 34: nginx -t: answer keyword that is no value
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_answer 'keyword= refund' "t"; }
--- must_die
--- error_log
invalid answer keyword " refund": value starts with a space



=== TEST 35: nginx -t: psd_ticket_admin without psd_ticket_api_key
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /staff { psd_ticket_admin; }
--- must_die
--- error_log
"psd_ticket_admin" needs "psd_ticket_api_key"



=== TEST 36: nginx -t: psd_ticket_max_message over 1m
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_ticket_max_message 1025k;
--- config
    location = /t { psd_ticket; }
--- must_die
--- error_log
"psd_ticket_max_message" is at most 1m



=== TEST 37: nginx -t: psd_ticket_stream_maxlen below 100
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_stream_maxlen 99; }
--- must_die
--- error_log
invalid value "99" in "psd_ticket_stream_maxlen", it must be between 100 and 10000000



=== TEST 38: nginx -t: psd_ticket without psd_redis
--- config
    location = /t { psd_ticket; }
--- must_die
--- error_log
no "psd_redis" server is configured in http{}



=== TEST 39: nginx -t: unknown psd_ticket_redis
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket_redis other; }
--- must_die
--- error_log
unknown redis server "other"



=== TEST 40: nginx -t: psd_ticket twice in a location
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket; psd_ticket; }
--- must_die
--- error_log
"psd_ticket" directive is duplicate



=== TEST 41: nginx -t: psd_ticket takes on or off
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /t { psd_ticket yes; }
--- must_die
--- error_log
invalid value "yes" in "psd_ticket" directive, it must be "on" or "off"
