# Customer satisfaction: a ticket resolved through psd_ticket_admin gets a
# signed rating link (in the answer and in a "resolved" stream event); the
# link records one score 1-5 and one comment (psd_ticket_rating), with
# stable JSON codes for every refusal: twice, forged, expired, a download
# link presented (and a rating link at a download location), unknown and
# unresolved tickets, bad scores and comments.  Key rotation and key=, the
# HTML page, the staff ticket view and the order's staff view, the metrics
# by queue, Redis down (503 + Retry-After, nothing recorded), a failed
# stream write leaving the ticket unresolved, and nginx -t errors.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link;      # write_keys, sign_link, key_bytes, link_set, ...
use Digest::SHA qw(hmac_sha256);
use JSON::PP ();
use Time::HiRes qw(time sleep);

write_keys();           # link keys k1, k2 and keys/api ($API_KEY)

# (--- init and --- check code cannot see this file's lexicals: functions)

sub enc { JSON::PP->new->utf8->canonical->encode($_[0]) }

sub jbody { eval { JSON::PP->new->utf8->decode($_[0]{body} // '') } // {} }

sub post {          # post('/t', $bytes, 'Name: value', ...)
    my ($path, $body, @h) = @_;
    my $ct = (grep { /^Content-Type:/i } @h) ? '' : "Content-Type: application/json\r\n";
    return http_request("POST $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Connection: close\r\n" . join('', map { "$_\r\n" } @h) . $ct
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body");
}

sub get { my ($path, @h) = @_; http_get($path, { map { split /: /, $_, 2 } @h }) }

# the rating key of a link key (docs/link-format.md, "Purpose keys")
sub rating_key { hmac_sha256("psd-link-purpose-v1\nrating", key_bytes($_[0] // 'k1')) }

# a rating link made here, as the module makes them: path, kid, ttl, ...
sub rating_link {
    my ($ticket, %o) = @_;
    my $kid = $o{kid} // 'k1';
    return sign_link(path => ($o{prefix_path} // '/support/rate/') . $ticket,
                     kid => $kid, key => $o{key} // rating_key($kid), %o);
}

sub open_ticket {   # open_ticket(category => ...): the ticket id
    my $r = post('/t', enc({ email => 'ann@example.org', subject => 'Hello',
                             message => 'Where is my download?', @_ }));
    die "ticket: $r->{raw}" unless ($r->{status} // 0) == 201;
    return jbody($r)->{ticket};
}

sub staff {         # staff({ticket => ..., state => ...}): the response
    return post('/staff', enc($_[0]), "Authorization: Bearer $API_KEY");
}

sub resolve {       # resolve($ticket): the rating link the answer carries
    my $r = staff({ ticket => $_[0], state => 'resolved' });
    die "resolve: $r->{raw}" unless ($r->{status} // 0) == 200;
    return jbody($r)->{rating};
}

sub rel {           # the link without https://host, to send it here
    (my $u = $_[0]) =~ s{^https?://[^/]+}{};
    return $u;
}

sub queue_of { (split /\./, $_[0])[0] }

sub record { my %h = @{ redis_cmd('HGETALL', "psd:{tq:" . queue_of($_[0]) . "}:t:$_[0]") }; \%h }

sub dbdump {        # every key and its content, to see that nothing changed
    my %d;
    for my $k (sort @{ redis_cmd('KEYS', '*') }) {
        my $t = redis_cmd('TYPE', $k);
        $d{$k} = $t eq 'hash' ? { @{ redis_cmd('HGETALL', $k) } }
               : $t eq 'stream' ? redis_cmd('XLEN', $k) : redis_cmd('TYPE', $k);
    }
    return \%d;
}

sub events {        # the "resolved" events of a queue's stream, as hashes
    return grep { ($_->{event} // '') eq 'resolved' }
        map { my %h = @{ $_->[1] }; \%h }
        @{ redis_cmd('XRANGE', "psd:{tq:$_[0]}", '-', '+') || [] };
}

sub metrics {       # { 'name{labels}' => value }
    my $r = http_get('/m');
    die "metrics: $r->{raw}" unless ($r->{status} // 0) == 200;
    return { map { /^(\w+(?:\{[^}]*\})?) (\S+)$/ ? ($1 => $2) : () }
             split /\n/, $r->{body} };
}

# is_error($r, 409, 'already_rated', $name[, $field])
sub is_error {
    my ($r, $status, $code, $name, $field) = @_;
    is $r->{status}, $status, "$name: $status" or diag $r->{raw};
    my $j = jbody($r);
    is $j->{error}, $code, "$name: $code";
    is $j->{field}, $field, "$name: field $field" if defined $field;
    like $r->{headers}{'content-type'} // '', qr{^application/json}, "$name: JSON";
}

run_tests();

__DATA__

=== TEST 1: resolve gives a rating link (answer and stream); one score, a comment after it, then nothing changes
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /t { psd_ticket; psd_ticket_rule b "category == billing" queue=billing; }
    location = /staff {
        psd_ticket_admin;
        psd_ticket_api_key $TEST_NGINX_CONF_DIR/keys/api;
        psd_ticket_rating_link https://shop.example/support/rate/;
    }
    location /support/rate/ { psd_ticket_rating on; }
--- check
my $id = open_ticket(category => 'billing');
like $id, qr/^billing\./, 'a billing ticket';

# acknowledging gives no link
my $r = staff({ ticket => $id, state => 'acknowledged' });
is $r->{body}, qq({"updated":true}\n), 'acknowledged: no rating link';
is scalar(events('billing')), 0, 'no event for an acknowledgement';

my $t0 = time;
$r = staff({ ticket => $id, state => 'resolved' });
is $r->{status}, 200, 'resolved: 200' or diag $r->{raw};
my $j = jbody($r);
is_deeply [sort keys %$j], [qw(rating updated)], 'updated and rating';
ok $j->{updated}, 'updated: true';
my $rt = $j->{rating};
is_deeply [sort keys %$rt], [qw(expires scores url)], 'rating: url, scores, expires';
like $rt->{url}, qr{^https://shop\.example/support/rate/\Q$id\E\?psd_v=1&psd_kid=k1&psd_exp=\d+&psd_id=[A-Za-z0-9]{22}&psd_sig=[A-Za-z0-9_-]{43}\z},
     'url: the prefix, the ticket, a link signed by k1, no order, scope or limit';
ok abs($rt->{expires} - ($t0 + 30 * 86400)) <= 2, 'expires in 30 days (the default)';
is link_arg($rt->{url}, 'psd_exp'), $rt->{expires}, 'psd_exp is expires';
is_deeply $rt->{scores}, [ map { "$rt->{url}&score=$_" } 1 .. 5 ], 'five links, score=1 to 5';

# the help desk's event carries it, in the queue's own stream
my @ev = events('billing');
is scalar @ev, 1, 'one resolved event';
is $ev[0]{ticket}, $id, 'event: ticket';
is $ev[0]{rating_url}, $rt->{url}, 'event: rating_url';
is $ev[0]{rating_expires}, $rt->{expires}, 'event: rating_expires';
is $ev[0]{resolved_at}, record($id)->{resolved_at}, 'event: resolved_at';
my @f = @{ redis_cmd('XRANGE', 'psd:{tq:billing}', '-', '+')->[-1][1] };
is_deeply [ @f[grep { !($_ % 2) } 0 .. $#f] ],
    [qw(event ticket resolved_at rating_url rating_expires)], 'event fields, in order';

# resolving again: no new link, no new event
is staff({ ticket => $id, state => 'resolved' })->{body}, qq({"updated":false}\n), 'resolve again: false, no link';
is scalar(events('billing')), 1, 'still one event';

# one click
my $url = rel($rt->{scores}[3]);
$r = get($url);
is $r->{status}, 200, 'score 4: 200' or diag $r->{raw};
is $r->{headers}{'content-type'}, 'application/json', 'JSON';
is $r->{body}, qq({"rated":true,"ticket":"$id","score":4,"comment":false}\n), 'rated, score 4, no comment';
is $r->{headers}{'cache-control'}, 'no-store', 'Cache-Control: no-store';
is $r->{headers}{'referrer-policy'}, 'no-referrer', 'Referrer-Policy: no-referrer';
my $rec = record($id);
is $rec->{csat_score}, 4, 'record: csat_score 4';
ok abs($rec->{rated_at} - time) <= 2, 'record: rated_at';
is $rec->{csat_link}, link_arg($rt->{url}, 'psd_id'), 'record: csat_link, the link id';
ok !exists $rec->{csat_comment}, 'no comment';
is $rec->{state}, 'resolved', 'still resolved';

# a second click, the same or another score: nothing changes
my $before = dbdump();
is_error(get($url), 409, 'already_rated', 'the same link again');
is_error(get(rel($rt->{scores}[0])), 409, 'already_rated', 'another score');
is_error(post(rel($rt->{url}), enc({ score => 1, comment => 'Changed my mind' })), 409,
         'already_rated', 'another score with a comment');
is_error(post(rel($rt->{url}), enc({ score => 4 })), 409, 'already_rated', 'POST without a comment');
is_error(post(rel($rt->{url}), enc({ score => 4, comment => '' })), 409, 'already_rated',
         'POST with an empty comment');
is_deeply dbdump(), $before, 'nothing changed';

# the comment after the score, with that score: once
$r = post(rel($rt->{scores}[3]), enc({ comment => "Quick and kind.\nThank you \x{e9}!" }));
is $r->{status}, 200, 'comment after the score: 200' or diag $r->{raw};
is $r->{body}, qq({"rated":true,"ticket":"$id","score":4,"comment":true}\n), 'comment: true';
$rec = record($id);
is $rec->{csat_comment}, "Quick and kind.\nThank you \xc3\xa9!", 'record: csat_comment, UTF-8 bytes';
ok abs($rec->{csat_commented_at} - time) <= 2, 'record: csat_commented_at';
is $rec->{csat_score}, 4, 'score kept';
$before = dbdump();
is_error(post(rel($rt->{url}), enc({ score => 4, comment => 'Again' })), 409, 'already_rated',
         'a second comment');
is_error(get($url), 409, 'already_rated', 'and a click');
is_deeply dbdump(), $before, 'nothing changed';

# score and comment in one go, as a form; the HTML page for a browser
my $id2 = open_ticket(category => 'billing');
my $rt2 = resolve($id2);
$r = post(rel($rt2->{url}), 'score=2&comment=Slow+but+fine%21',
          'Content-Type: application/x-www-form-urlencoded', 'Accept: text/html,application/xhtml+xml');
is $r->{status}, 200, 'form with score and comment: 200' or diag $r->{raw};
is $r->{headers}{'content-type'}, 'text/html; charset=utf-8', 'HTML for a browser';
like $r->{body}, qr{<p>Your rating \(2 of 5\) and your comment were recorded\.</p>}, 'the page says so';
unlike $r->{body}, qr{<form}, 'no form after a comment';
like $r->{headers}{'content-security-policy'} // '', qr/default-src 'none'/, 'a CSP';
$rec = record($id2);
is $rec->{csat_score}, 2, 'score 2';
is $rec->{csat_comment}, 'Slow but fine!', 'the comment, decoded';

my $id3 = open_ticket();
my $rt3 = resolve($id3);
like $rt3->{url}, qr{/support/rate/general\.}, 'a general ticket';
$r = get(rel($rt3->{scores}[4]), 'Accept: text/html');
is $r->{status}, 200, 'click from a browser: 200';
is $r->{headers}{'content-type'}, 'text/html; charset=utf-8', 'HTML';
like $r->{body}, qr{<p>Your rating \(5 of 5\) was recorded\.</p>}, 'thanks for the 5';
like $r->{body}, qr{<form method="post"><input type="hidden" name="score" value="5">.*<textarea[^>]* name="comment"[^>]*maxlength="2000"}s,
     'a comment form that posts to the same link with the score';
unlike $r->{body}, qr{psd_sig|$id3}, 'the page repeats neither the link nor the ticket';
# what the form posts
$r = post(rel($rt3->{scores}[4]), 'score=5&comment=Great', 'Content-Type: application/x-www-form-urlencoded',
          'Accept: text/html');
is $r->{status}, 200, 'the form posted: 200';
like $r->{body}, qr{your comment were recorded}, 'comment recorded';
is record($id3)->{csat_comment}, 'Great', 'record: comment';
--- no_error_log
[error]
[warn]



=== TEST 2: refusals: forged, expired, wrong scope either way, malformed, unknown key, prefix, unknown and unresolved tickets, bad scores; nothing written
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    psd_link_max_ttl 60d;
    location = /t { psd_ticket; }
    location = /staff {
        psd_ticket_admin;
        psd_ticket_api_key $TEST_NGINX_CONF_DIR/keys/api;
        psd_ticket_rating_link /support/rate/;
    }
    location /support/rate/ { psd_ticket_rating on; }
    location /dl/ { psd_link on; }
--- user_files
>>> dl/a.txt
A
--- check
my $id = open_ticket();
my $open = open_ticket();
my $rt = resolve($id);
like $rt->{url}, qr{^/support/rate/\Q$id\E\?}, 'a path-only prefix gives a path-only link';
my $good = "$rt->{url}&score=3";
my $before = dbdump();

my $sig = link_arg($rt->{url}, 'psd_sig');
my $flip = substr($sig, 0, 5) . (substr($sig, 5, 1) eq 'A' ? 'B' : 'A') . substr($sig, 6);
is_error(get(link_set($good, 'psd_sig', $flip)), 403, 'link_invalid', 'forged signature');
is_error(get(link_set($good, 'psd_exp', link_arg($good, 'psd_exp') + 1)), 403, 'link_invalid',
         'expiry moved');
is_error(get(link_set($good, 'psd_id', 'another')), 403, 'link_invalid', 'another link id');
my ($path, $q) = split /\?/, $good, 2;
is_error(get("/support/rate/$open?$q"), 403, 'link_invalid', 'the link on another ticket');
is_error(get(rating_link($id, ttl => -10) . '&score=3'), 410, 'link_expired', 'expired');
is_error(get(rating_link($id, ttl => 61 * 86400) . '&score=3'), 403, 'link_invalid',
         'expiry beyond psd_link_max_ttl');
is_error(get(rating_link($id, key => key_bytes('k1')) . '&score=3'), 403, 'link_invalid',
         'a download link for the rating path (the link key, not the rating key)');
my $pre = sign_link(path => '/', prefix => 1);
(my $pq = $pre) =~ s{^[^?]*\?}{};
is_error(get("/support/rate/$id?$pq&score=3"), 403, 'link_invalid', 'a download prefix link over "/"');
my $rpre = sign_link(path => '/support/rate/', prefix => 1, key => rating_key());
(my $rpq = $rpre) =~ s{^[^?]*\?}{};
is_error(get("/support/rate/$id?$rpq&score=3"), 403, 'link_invalid',
         'a rating prefix link (never issued)');
is_error(get('/support/rate/' . $id . '?score=3'), 403, 'link_malformed', 'no link');
is_error(get(link_set($good, 'psd_v', 2)), 403, 'link_malformed', 'psd_v=2');
is_error(get("$good&psd_id=x"), 403, 'link_malformed', 'psd_id twice');
is_error(get(rating_link($id, kid => 'k9', key => 'x' x 32) . '&score=3'), 403, 'link_unknown_key',
         'unknown key id');
is_error(get(rating_link('general.AAAAAAAAAAAAAAAA') . '&score=3'), 404, 'unknown_ticket',
         'a valid link for an unknown ticket');
is_error(get(rating_link('nope.' . substr($id, 8)) . '&score=3'), 404, 'unknown_ticket',
         'a valid link for an unknown queue');
is_error(get(rating_link('not-a-ticket') . '&score=3'), 404, 'unknown_ticket',
         'a valid link for a path that names no ticket');
is_error(get(rating_link($open) . '&score=3'), 409, 'ticket_not_resolved', 'an open ticket');
for (['0', 'score 0'], ['6', 'score 6'], ['x', 'score x'], ['04', 'score 04'], ['4.0', 'score 4.0'],
     ['', 'empty score'], ['%34', 'score %34']) {
    is_error(get("$rt->{url}&score=$_->[0]"), 400, 'invalid_field', $_->[1], 'score');
}
is_error(get($rt->{url}), 400, 'invalid_field', 'no score', 'score');
is_error(post($rt->{url}, enc({ score => 6 })), 400, 'invalid_field', 'POST score 6', 'score');
is_error(post($rt->{url}, enc({ score => 4.5 })), 400, 'invalid_field', 'POST score 4.5', 'score');
is_error(post($rt->{url}, enc({ score => JSON::PP::true })), 400, 'invalid_field', 'POST score true',
         'score');
is_error(post($rt->{url}, enc({ comment => 'no score anywhere' })), 400, 'invalid_field',
         'POST without a score', 'score');
is_deeply dbdump(), $before, 'refusals: nothing written';

# the rating link is no download link either
my ($rp, $rq) = split /\?/, $rt->{url}, 2;
is_error(get("/dl/a.txt?$rq"), 403, 'link_invalid', 'the rating link at a download location');
is_error(get(rating_link('', prefix_path => '/dl/a.txt')), 403, 'link_invalid',
         'a rating link signed for a download path');
is get(sign_link(path => '/dl/a.txt'))->{body}, "A\n", 'a download link still downloads';

for my $m (qw(HEAD PUT DELETE)) {
    my $r = http_request("$m $good HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    is $r->{status}, 405, "$m: 405";
}
is_deeply dbdump(), $before, 'still nothing written';
--- error_log
psd_ticket_rating: denied, invalid, link "
psd_ticket_rating: denied, expired, link "
psd_ticket_rating: denied, malformed
--- no_error_log
[error]



=== TEST 3: comments: size, control characters, card numbers, types, encodings, body size; nothing written
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /t { psd_ticket; }
    location = /staff {
        psd_ticket_admin;
        psd_ticket_api_key $TEST_NGINX_CONF_DIR/keys/api;
        psd_ticket_rating_link /support/rate/;
    }
    location /support/rate/ { psd_ticket_rating on; }
--- check
my $id = open_ticket();
my $url = resolve($id)->{url};
my $before = dbdump();
my $form = 'Content-Type: application/x-www-form-urlencoded';
for (['x' x 2001, 'comment of 2001 bytes'], ["a\x01b", 'SOH'], ["a\x1b[31m", 'ESC'],
     ["a\x{85}b", 'C1 control (U+0085)'], ["a\x7f", 'DEL']) {
    is_error(post($url, enc({ score => 3, comment => $_->[0] })), 400, 'invalid_field', $_->[1],
             'comment');
}
is_error(post($url, enc({ score => 3, comment => 'card 4242 4242 4242 4242 charged twice' })), 422,
         'card_number_in_comment', 'a card number', 'comment');
is_error(post($url, 'score=3&comment=card+4242-4242-4242-4242', $form), 422,
         'card_number_in_comment', 'a card number in a form', 'comment');
is_error(post($url, 'score=3&comment=%01', $form), 400, 'invalid_field', 'form: a control character',
         'comment');
is_error(post($url, 'score=3&comment=a%00b', $form), 400, 'invalid_field', 'form: NUL', 'comment');
is_error(post($url, '{"score":3,"comment":"a\u0000b"}'), 400, 'invalid_json', 'JSON: NUL');
is_error(post($url, 'score=3&comment=caf%E9', $form), 400, 'invalid_utf8', 'form: not UTF-8');
is_error(post($url, 'score=3&comment=%zz', $form), 400, 'bad_encoding', 'form: bad encoding');
is_error(post($url, 'score=3&comment=a&comment=b', $form), 400, 'duplicate_field', 'form: two comments');
is_error(post($url, enc({ score => 3, comment => 42 })), 400, 'invalid_field', 'comment a number',
         'comment');
is_error(post($url, enc({ score => 3, comment => ['x'] })), 400, 'invalid_field', 'comment an array',
         'comment');
is_error(post($url, "{\"score\":3,\"comment\":\"caf\xe9\"}"), 400, 'invalid_json', 'JSON not UTF-8');
is_error(post($url, '{"score":3,'), 400, 'invalid_json', 'invalid JSON');
is_error(post($url, '[3]'), 400, 'invalid_json', 'a JSON array');
is_error(post($url, '{"score":3,"score":4}'), 400, 'invalid_json', 'duplicate key');
is_error(post($url, enc({ score => 3, comment => 'x' x 17000 })), 413, 'body_too_large', 'body over 16 KiB');
my $big = 'score=3&comment=' . ('c' x 17000);
is_error(http_request("POST $url HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    . "$form\r\nTransfer-Encoding: chunked\r\n\r\n"
    . join('', map { sprintf("%x\r\n%s\r\n", length, $_) } unpack '(a1000)*', $big) . "0\r\n\r\n"),
    413, 'body_too_large', 'a chunked form over 16 KiB');
is_deeply dbdump(), $before, 'nothing written';

# at the bound: 2000 bytes, tabs and newlines
my $c = ("\t" . ('x' x 98) . "\n") x 20;
is length $c, 2000, '2000 bytes';
my $r = post($url, enc({ score => 3, comment => $c }));
is $r->{status}, 200, '2000 bytes with tabs and newlines: 200' or diag $r->{raw};
is record($id)->{csat_comment}, $c, 'stored as sent';
--- no_error_log
[error]



=== TEST 4: staff views: the ticket (GET ?ticket=) and the order's tickets show score, comment, rated_at
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /t { psd_ticket; }
    location = /staff {
        psd_ticket_admin;
        psd_ticket_api_key $TEST_NGINX_CONF_DIR/keys/api;
        psd_ticket_rating_link /support/rate/;
    }
    location /support/rate/ { psd_ticket_rating on; }
    location = /staff/orders { psd_order_status staff; psd_order_api_key $TEST_NGINX_CONF_DIR/keys/api; }
    location = /orders/status { psd_order_status customer; }
--- check
redis_cmd('HSET', 'psd:{order:ord_c1}', 'state', 'paid', 'amount', 900);
my $id = open_ticket(order_id => 'ord_c1');
my $id2 = open_ticket(order_id => 'ord_c1');
my $auth = "Authorization: Bearer $API_KEY";

my $r = get("/staff?ticket=$id", $auth);
is $r->{status}, 200, 'staff ticket view: 200' or diag $r->{raw};
my $j = jbody($r);
is $j->{ticket}, $id, 'ticket';
is $j->{state}, 'open', 'state open';
is $j->{order}, 'ord_c1', 'order';
is $j->{queue}, 'general', 'queue';
like $r->{body}, qr/"created_at":\d+[,}]/, 'times are numbers';
ok !exists $j->{csat}, 'no csat yet';

my $rt = resolve($id);
is get(rel($rt->{url}) . '&score=5')->{status}, 200, 'rated 5';
is post(rel($rt->{url}), enc({ score => 5, comment => 'Lovely' }))->{status}, 200, 'and a comment';
my $rec = record($id);
$j = jbody(get("/staff?ticket=$id", $auth));
is_deeply $j->{csat}, { score => 5, comment => 'Lovely', rated_at => $rec->{rated_at},
                        commented_at => $rec->{csat_commented_at}, link => $rec->{csat_link} },
    'csat: score, comment, rated_at, commented_at, link';
is $j->{state}, 'resolved', 'resolved';
like get("/staff?ticket=$id", $auth)->{body}, qr/"score":5[,}]/, 'score is a number';

is_error(get("/staff?ticket=$id"), 401, 'unauthorized', 'no key');
is_error(get('/staff', $auth), 400, 'invalid_field', 'no ticket', 'ticket');
is_error(get('/staff?ticket=a/b', $auth), 400, 'invalid_field', 'bad ticket', 'ticket');
is_error(get('/staff?ticket=general.AAAA', $auth), 404, 'unknown_ticket', 'unknown ticket');

# the order's staff view lists the rating with the ticket; customers do not see it
$r = get('/staff/orders?order=ord_c1', $auth);
is $r->{status}, 200, 'order staff view: 200' or diag $r->{raw};
my %t = map { $_->{ticket} => $_ } @{ jbody($r)->{tickets} };
is_deeply $t{$id}{csat}, { score => 5, comment => 'Lovely', rated_at => $rec->{rated_at} },
    'the rated ticket: csat score, comment, rated_at';
is $t{$id}{state}, 'resolved', 'and its state';
ok !exists $t{$id2}{csat}, 'the other ticket: no csat';
is $t{$id2}{state}, 'open', 'open';
my $status = sign_link(path => '/orders/status', order => 'ord_c1');
$r = get($status);
is $r->{status}, 200, 'customer view: 200' or diag $r->{raw};
ok !(grep { exists $_->{csat} } @{ jbody($r)->{tickets} }), 'customers do not see ratings';
--- no_error_log
[error]



=== TEST 5: metrics by queue: resolved, responses, score total, ratings by score, comments; queues no longer configured count as _other
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    psd_ticket_rule b "category == billing" queue=billing;
--- config
    location = /t { psd_ticket; }
    location = /staff {
        psd_ticket_admin;
        psd_ticket_api_key $TEST_NGINX_CONF_DIR/keys/api;
        psd_ticket_rating_link /support/rate/;
    }
    location /support/rate/ { psd_ticket_rating on; }
    location = /m { psd_metrics; }
    location = /mj { psd_metrics json; }
--- check
my $m0 = metrics();
my $r = http_get('/m');
for my $f (qw(psd_csat_resolved_total psd_csat_responses_total psd_csat_score_total
              psd_csat_comments_total psd_csat_ratings_total)) {
    like $r->{body}, qr/^# TYPE $f counter$/m, "TYPE $f";
}
for my $q (qw(general billing _other)) {
    ok exists $m0->{"psd_csat_resolved_total{queue=\"$q\"}"}, "a row for queue $q";
    ok exists $m0->{"psd_csat_ratings_total{queue=\"$q\",score=\"$_\"}"}, "queue $q score $_" for 1 .. 5;
}
my $d = sub {
    my ($name) = @_;
    my $m = metrics();
    return $m->{$name} - ($m0->{$name} // 0);
};

my @b = map { open_ticket(category => 'billing') } 1 .. 3;
my $g = open_ticket();
my @links = map { resolve($_) } @b, $g;
is $d->('psd_csat_resolved_total{queue="billing"}'), 3, 'billing: 3 resolved';
is $d->('psd_csat_resolved_total{queue="general"}'), 1, 'general: 1 resolved';
is $d->('psd_tickets_resolved_total'), 4, 'all queues: 4 resolved';

is get(rel($links[0]{url}) . '&score=5')->{status}, 200, 'b1: 5';
is post(rel($links[1]{url}), enc({ score => 2, comment => 'meh' }))->{status}, 200, 'b2: 2 with a comment';
is get(rel($links[3]{url}) . '&score=4')->{status}, 200, 'g: 4';
is get(rel($links[0]{url}) . '&score=1')->{status}, 409, 'b1 again: 409, not counted';
is post(rel($links[3]{url}), enc({ score => 4, comment => 'ok' }))->{status}, 200, 'g: a comment later';

is $d->('psd_csat_responses_total{queue="billing"}'), 2, 'billing: 2 responses';
is $d->('psd_csat_score_total{queue="billing"}'), 7, 'billing: scores sum to 7';
is $d->('psd_csat_ratings_total{queue="billing",score="5"}'), 1, 'billing: one 5';
is $d->('psd_csat_ratings_total{queue="billing",score="2"}'), 1, 'billing: one 2';
is $d->('psd_csat_ratings_total{queue="billing",score="1"}'), 0, 'billing: no 1 (the second click)';
is $d->('psd_csat_comments_total{queue="billing"}'), 1, 'billing: one comment';
is $d->('psd_csat_responses_total{queue="general"}'), 1, 'general: 1 response';
is $d->('psd_csat_comments_total{queue="general"}'), 1, 'general: the later comment counts';
is $d->('psd_csat_score_total{queue="general"}'), 4, 'general: 4';

# a ticket of a queue this configuration does not know (filed before a reload)
redis_cmd('HSET', 'psd:{tq:oldq}:t:oldq.AbC', 'state', 'open', 'created_at', time - 10,
          'first_response_due', time + 3600, 'resolution_due', time + 7200, 'queue', 'oldq');
my $old = resolve('oldq.AbC');
is $d->('psd_csat_resolved_total{queue="_other"}'), 1, '_other: resolved';
is get(rel($old->{url}) . '&score=3')->{status}, 200, 'rated';
is $d->('psd_csat_responses_total{queue="_other"}'), 1, '_other: response';
ok !exists metrics()->{'psd_csat_resolved_total{queue="oldq"}'}, 'no row for the old queue';

my $jm = jbody(http_get('/mj'));
my ($jb) = grep { $_->{queue} eq 'billing' } @{ $jm->{queues} };
ok $jb, 'JSON: billing';
is $jb->{responses} - ($m0->{'psd_csat_responses_total{queue="billing"}'} // 0), 2, 'JSON: responses';
is scalar @{ $jb->{scores} }, 5, 'JSON: five score counts';
is_deeply [sort keys %$jb], [qw(comments queue resolved responses score_total scores)], 'JSON: fields';
--- no_error_log
[error]



=== TEST 6: key rotation: links of the old key keep working; key= picks the signer; a removed key's links stop
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    psd_link_key k2 $TEST_NGINX_CONF_DIR/keys/k2;
--- config
    location = /t { psd_ticket; }
    location = /staff {
        psd_ticket_admin;
        psd_ticket_api_key $TEST_NGINX_CONF_DIR/keys/api;
        psd_ticket_rating_link /support/rate/ ttl=2d;
    }
    location = /staff1 {
        psd_ticket_admin;
        psd_ticket_api_key $TEST_NGINX_CONF_DIR/keys/api;
        psd_ticket_rating_link /support/rate/ key=k1 ttl=1h;
    }
    location = /staff_off {
        psd_ticket_admin;
        psd_ticket_api_key $TEST_NGINX_CONF_DIR/keys/api;
        psd_ticket_rating_link off;
    }
    location /support/rate/ { psd_ticket_rating on; }
--- check
my $a = open_ticket();
my $t0 = time;
my $ra = resolve($a);
is link_arg($ra->{url}, 'psd_kid'), 'k2', 'the last key signs';
ok abs($ra->{expires} - ($t0 + 2 * 86400)) <= 2, 'ttl=2d';
my $b = open_ticket();
my $r = post('/staff1', enc({ ticket => $b, state => 'resolved' }), "Authorization: Bearer $API_KEY");
my $rb = jbody($r)->{rating};
is link_arg($rb->{url}, 'psd_kid'), 'k1', 'key=k1 signs';
ok abs($rb->{expires} - ($t0 + 3600)) <= 2, 'ttl=1h';
is get("$ra->{url}&score=4")->{status}, 200, 'k2 link: rated';
is get("$rb->{url}&score=3")->{status}, 200, 'k1 link: rated';
is get(rating_link(open_ticket(), kid => 'k2') . '&score=3')->{status}, 409,
   'a k2 rating link made here: verified (open ticket)';

my $c = open_ticket();
$r = post('/staff_off', enc({ ticket => $c, state => 'resolved' }), "Authorization: Bearer $API_KEY");
is $r->{body}, qq({"updated":true}\n), 'psd_ticket_rating_link off: no link';
is scalar(events('general')), 2, 'and no event';
--- no_error_log
[error]



=== TEST 7: Redis stopped: rating and resolve answer 503 + Retry-After, nothing recorded; back after
--- no_cluster: stops the single redis-server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT connect_timeout=300ms timeout=300ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /t { psd_ticket; }
    location = /staff {
        psd_ticket_admin;
        psd_ticket_api_key $TEST_NGINX_CONF_DIR/keys/api;
        psd_ticket_rating_link /support/rate/;
    }
    location /support/rate/ { psd_ticket_rating on; }
--- timeout: 20
--- check
my $id = open_ticket();
my $url = resolve($id)->{url};
my $id2 = open_ticket();
redis_stop();
my $r = get("$url&score=4");
is_error($r, 503, 'backend_unavailable', 'stopped Redis: click');
is $r->{headers}{'retry-after'}, '1', 'Retry-After: 1';
$r = post($url, enc({ score => 4, comment => 'hello' }));
is_error($r, 503, 'backend_unavailable', 'stopped Redis: comment');
is $r->{headers}{'retry-after'}, '1', 'Retry-After: 1 (comment)';
$r = staff({ ticket => $id2, state => 'resolved' });
is_error($r, 503, 'backend_unavailable', 'stopped Redis: resolve');
$r = get("/staff?ticket=$id", "Authorization: Bearer $API_KEY");
is_error($r, 503, 'backend_unavailable', 'stopped Redis: staff view');
is_error(get(link_set("$url&score=4", 'psd_sig', 'A' x 43)), 403, 'link_invalid',
         'stopped Redis: a forged link is refused without Redis');
redis_cont();
sleep 0.5;
my $rec = record($id);
# a timed-out command may still have been applied once Redis woke up
ok !exists $rec->{csat_score} || $rec->{csat_score} == 4, 'no other score';
my $r2;
ok wait_until(sub { $r2 = get("$url&score=4"); ($r2->{status} // 0) =~ /^(?:200|409)$/ }, 10),
   'Redis back: the click is answered';
is record($id)->{csat_score}, 4, 'recorded once';
--- error_log eval
["psd: redis \"main\" did not answer within 300 ms"]
--- no_error_log
[alert]



=== TEST 8: Redis killed: 503 with Retry-After; a stream that cannot be written leaves the ticket unresolved
--- no_cluster: kills the single redis-server
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT connect_timeout=300ms timeout=300ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /t { psd_ticket; psd_ticket_rule x "category == x" queue=xq; }
    location = /staff {
        psd_ticket_admin;
        psd_ticket_api_key $TEST_NGINX_CONF_DIR/keys/api;
        psd_ticket_rating_link /support/rate/;
    }
    location /support/rate/ { psd_ticket_rating on; }
--- timeout: 20
--- check
my $id = open_ticket(category => 'x');
# the queue's stream replaced by a string: XADD fails inside the script
redis_cmd('DEL', 'psd:{tq:xq}');
redis_cmd('SET', 'psd:{tq:xq}', 'not a stream');
my $before = record($id);
my $r = staff({ ticket => $id, state => 'resolved' });
is_error($r, 503, 'backend_unavailable', 'the event cannot be written');
is_deeply record($id), $before, 'the ticket is not resolved without its event';
redis_cmd('DEL', 'psd:{tq:xq}');
my $url = resolve($id)->{url};
ok $url, 'with the stream back: resolved, a link';
redis_kill();
$r = get("$url&score=2");
is_error($r, 503, 'backend_unavailable', 'killed Redis');
is $r->{headers}{'retry-after'}, '1', 'Retry-After: 1';
redis_start();
ok wait_until(sub { (get("$url&score=2")->{status} // 0) == 404 }, 10),
   'a new, empty Redis: the ticket is unknown';
--- error_log
psd_ticket_admin: redis answered
--- no_error_log
[alert]



=== TEST 9: nginx -t: a bad prefix
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /staff { psd_ticket_admin; psd_ticket_api_key $TEST_NGINX_CONF_DIR/keys/api; psd_ticket_rating_link /support/rate; }
--- must_die
--- error_log
invalid rating link prefix "/support/rate" in "psd_ticket_rating_link"



=== TEST 10: nginx -t: a dot segment
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    psd_ticket_rating_link https://shop.example/a/../rate/;
--- must_die
--- error_log
invalid rating link prefix "https://shop.example/a/../rate/"



=== TEST 11: nginx -t: a character that needs encoding
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    psd_ticket_rating_link "/rate me/";
--- must_die
--- error_log
invalid rating link prefix "/rate me/"



=== TEST 12: nginx -t: no host
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    psd_ticket_rating_link https:///rate/;
--- must_die
--- error_log
invalid rating link prefix "https:///rate/"



=== TEST 13: nginx -t: ttl out of range
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    psd_ticket_rating_link /rate/ ttl=366d;
--- must_die
--- error_log
invalid parameter "ttl=366d" in "psd_ticket_rating_link", it must be from 1m to 365d



=== TEST 14: nginx -t: ttl no time
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    psd_ticket_rating_link /rate/ ttl=soon;
--- must_die
--- error_log
invalid parameter "ttl=soon" in "psd_ticket_rating_link"



=== TEST 15: nginx -t: unknown parameter
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    psd_ticket_rating_link /rate/ scores=5;
--- must_die
--- error_log
invalid parameter "scores=5" in "psd_ticket_rating_link"



=== TEST 16: nginx -t: unknown key
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location = /staff { psd_ticket_admin; psd_ticket_api_key $TEST_NGINX_CONF_DIR/keys/api; psd_ticket_rating_link /rate/ key=k9; }
--- must_die
--- error_log
unknown link key "k9" for rating links



=== TEST 17: nginx -t: rating links without a link key
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location = /staff { psd_ticket_admin; psd_ticket_api_key $TEST_NGINX_CONF_DIR/keys/api; psd_ticket_rating_link /rate/; }
--- must_die
--- error_log
rating links need at least one "psd_link_key" in http{}



=== TEST 18: nginx -t: psd_ticket_rating without a link key
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
--- config
    location /rate/ { psd_ticket_rating on; }
--- must_die
--- error_log
rating links need at least one "psd_link_key" in http{}



=== TEST 19: nginx -t: psd_ticket_rating takes on or off; twice is a duplicate
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location /rate/ { psd_ticket_rating yes; }
--- must_die
--- error_log
invalid value "yes" in "psd_ticket_rating" directive, it must be "on" or "off"



=== TEST 20: nginx -t: psd_ticket_rating_link twice
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    psd_ticket_rating_link /rate/;
    psd_ticket_rating_link /rate2/;
--- must_die
--- error_log
"psd_ticket_rating_link" directive is duplicate
