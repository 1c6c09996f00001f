# util/psd-reconcile against the fixtures in t/fixtures/reconcile/: one
# directory per mismatch kind (orders.csv or orders.json: the module's
# export; gateway.csv: the gateway's; args: extra arguments, one a line;
# expected: "<kind> <order or payment id>" per mismatch), and bad inputs
# answered with exit status 2 and a stable JSON error.
use strict;
use warnings;
use Test::More;
use JSON::PP ();

my $top = $ENV{TEST_NGINX_REPO} // '.';
my $cli = "$top/util/psd-reconcile";
my $fx = "$top/t/fixtures/reconcile";

plan skip_all => "$cli is not built (make cli)" unless -x $cli;

# run(@args): exit status, stdout, stderr
sub run {
    my (@args) = @_;
    my $err = "/tmp/psd-reconcile-$$.err";
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if (!$pid) {
        open STDERR, '>', $err or die;
        exec $cli, @args or die "exec: $!";
    }
    my $out = do { local $/; <$fh> } // '';
    close $fh;
    my $rc = $? >> 8;
    my $stderr = do { local $/; open my $e, '<', $err or die; <$e> };
    unlink $err;
    return ($rc, $out, $stderr);
}

sub lines {
    my ($file) = @_;
    open my $fh, '<', $file or return ();
    return grep { length } map { chomp; $_ } <$fh>;
}

# each kind, and the cases that must agree
for my $dir (sort grep { -d && !m{/bad$} } glob "$fx/*") {
    my $case = (split m{/}, $dir)[-1];
    my ($orders) = grep { -e } map { "$dir/orders.$_" } qw(csv json);
    my @args = lines("$dir/args");
    my @want = lines("$dir/expected");

    my ($rc, $out, $err) = run('--json', '--orders', $orders, '--gateway', "$dir/gateway.csv", @args);
    is $rc, @want ? 1 : 0, "$case: exit status " . (@want ? 1 : 0) or diag $err;
    my $j = eval { JSON::PP->new->decode($out) } or do { fail "$case: JSON output"; diag $out; next };
    my @got = map { "$_->{kind} " . ($_->{order_id} ne '' ? $_->{order_id} : $_->{payment_id}) }
              @{ $j->{mismatches} };
    is_deeply \@got, \@want, "$case: " . (@want ? join(', ', @want) : 'no mismatch');
    is $j->{summary}{mismatches}, scalar @want, "$case: summary counts them";
    is $err, '', "$case: nothing on stderr";

    # the table says the same
    ($rc, $out) = run('--orders', $orders, '--gateway', "$dir/gateway.csv", @args);
    is $rc, @want ? 1 : 0, "$case: table, same exit status";
    like $out, qr/^$_\s/m, "$case: table row $_" for map { (split ' ')[0] } @want;
    like $out, qr/^\d+ mismatch/m, "$case: table summary line";
}

# details of one mismatch
{
    my ($rc, $out) = run('--json', '--orders', "$fx/amount_differs/orders.csv",
                         '--gateway', "$fx/amount_differs/gateway.csv");
    my $m = JSON::PP->new->decode($out)->{mismatches};
    is_deeply $m->[1]{here}, { state => 'paid', amount => 1500, currency => 'eur' }, 'here: state, amount, currency';
    is $m->[1]{there}{amount}, 3000, 'there: the double charge summed, in minor units';
    is $m->[1]{there}{line}, 3, 'there: the first gateway line of the order';
    is $m->[1]{there}{id}, 'txn_2', 'there: the balance transaction id';
    ($rc, $out) = run('--json', '--orders', "$fx/match/orders.json", '--gateway', "$fx/match/gateway.csv");
    my $j = JSON::PP->new->decode($out);
    is_deeply $j->{period}, { from => '2026-01-01', to => '2026-01-31', slack => 3600 },
        'the JSON export brings its period';
    is $j->{summary}{ignored}, 2, 'payout and fee ignored';
    is $j->{summary}{matched}, 5, 'charges, refund and dispute matched';
}

# the period decides what is expected: without it, the January payment of
# ord_8001 and the other months' rows show up
{
    my ($rc, $out) = run('--json', '--orders', "$fx/period/orders.csv", '--gateway', "$fx/period/gateway.csv");
    is $rc, 1, 'period: without --from/--to, mismatches';
    my @k = sort map { "$_->{kind} $_->{order_id}" } @{ JSON::PP->new->decode($out)->{mismatches} };
    is_deeply \@k, ['settled_unknown ord_7000', 'settled_unknown ord_9000'], 'period: the other months are unknown';
    ($rc) = run('--orders', "$fx/period/orders.csv", '--gateway', "$fx/period/gateway.csv",
                '--from', '2026-02-01', '--to', '2026-02-28', '--slack', '0');
    is $rc, 1, 'period: --slack 0, the charge two seconds before midnight is outside';
}

# bad input: exit 2, one line on stderr, {"error": ...} on stdout with --json
my $G = "$fx/match/gateway.csv";
my $O = "$fx/match/orders.json";
my @bad = (
    ['gateway: unterminated quote', 'invalid_csv', 2, '--orders', $O, '--gateway', "$fx/bad/unterminated.csv"],
    ['gateway: no amount column', 'missing_column', 1, '--orders', $O, '--gateway', "$fx/bad/no_amount.csv"],
    ['gateway: amount 1,234.00', 'invalid_row', 3, '--orders', $O, '--gateway', "$fx/bad/bad_amount.csv"],
    ['gateway: currency euro', 'invalid_row', 2, '--orders', $O, '--gateway', "$fx/bad/bad_currency.csv"],
    ['gateway: date 05/01/2026', 'invalid_row', 2, '--orders', $O, '--gateway', "$fx/bad/bad_date.csv"],
    ['gateway: nothing to match by', 'missing_column', 1, '--orders', $O, '--gateway', "$fx/bad/no_match_column.csv"],
    ['gateway: --order-column absent', 'missing_column', 1, '--orders', $O, '--gateway', $G, '--order-column', 'cart (metadata)'],
    ['orders: bad order id', 'invalid_export', undef, '--orders', "$fx/bad/orders_bad_id.json", '--gateway', $G],
    ['orders: truncated JSON', 'invalid_json', 1, '--orders', "$fx/bad/orders_truncated.json", '--gateway', $G],
    ['orders: no state column', 'missing_column', 1, '--orders', "$fx/bad/orders_no_state.csv", '--gateway', $G],
    ['orders: missing file', 'cannot_read', undef, '--orders', "$fx/bad/none.csv", '--gateway', $G],
    ['usage: no --gateway', 'usage', undef, '--orders', $O],
    ['usage: --format paypal', 'usage', undef, '--orders', $O, '--gateway', $G, '--format', 'paypal'],
    ['usage: --from without --to', 'usage', undef, '--orders', $O, '--gateway', $G, '--from', '2026-01-01'],
    ['usage: --from 2026-02-30', 'usage', undef, '--orders', $O, '--gateway', $G, '--from', '2026-02-30', '--to', '2026-03-01'],
    ['usage: --to before --from', 'usage', undef, '--orders', $O, '--gateway', $G, '--from', '2026-02-02', '--to', '2026-02-01'],
    ['usage: --slack -1', 'usage', undef, '--orders', $O, '--gateway', $G, '--slack', '-1'],
    ['usage: unknown option', 'usage', undef, '--orders', $O, '--gateway', $G, '--fast'],
);
for my $b (@bad) {
    my ($name, $code, $line, @args) = @$b;
    my ($rc, $out, $err) = run('--json', @args);
    is $rc, 2, "$name: exit status 2";
    my $j = eval { JSON::PP->new->decode($out) } // {};
    is $j->{error}, $code, "$name: error $code";
    is $j->{line}, $line, "$name: line " . ($line // 'none') if defined $line;
    like $err, qr/^psd-reconcile: .+\n\z/, "$name: one line on stderr";
    ($rc, $out) = run(@args);
    is $out, '', "$name: nothing on stdout without --json";
}

my ($rc, $out) = run('--help');
is $rc, 0, '--help: exit 0';
like $out, qr/paid_not_settled/, '--help lists the kinds';

done_testing();
