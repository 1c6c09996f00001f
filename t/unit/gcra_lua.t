#!/usr/bin/perl
#
# Runs psd_rate_gcra_script and psd_rate_window_script in a real Redis with
# the "now" override and checks that the GCRA results equal those of the C
# function psd_rate_gcra() for every step of t/unit/test_rate.c (which
# prints them with --gcra-vectors), and that the fraud windows count as
# docs/rules.md says.  Starts and stops its own redis-server on a free
# loopback port, without persistence.

use strict;
use warnings;

use File::Temp qw(tempdir);
use FindBin;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Test::More;

# paths are relative to the top of the repository, wherever prove runs
chdir "$FindBin::Bin/../.." or die "chdir: $!";

my $bin = $ENV{PSD_TEST_RATE} // 'build/unit/test_rate';
my ($server, $cli) = ('redis-server', 'redis-cli');

plan skip_all => "$bin not built (make unit)" unless -x $bin;
for my $p ($server, $cli) {
    plan skip_all => "$p not installed"
        unless grep { -x "$_/$p" } split /:/, $ENV{PATH};
}

my $dir = tempdir('psd-redis-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my ($pid, $port);

# a killed or piped test must not leave its server behind
$SIG{$_} = sub { exit 1 } for qw(INT TERM HUP PIPE);

END {
    if ($pid) {
        kill 'TERM', $pid;
        waitpid $pid, 0;
    }
}

sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0, Proto => 'tcp')
        or die "no free port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

sub cli {
    open my $fh, '-|', $cli, '-h', '127.0.0.1', '-p', $port, @_
        or die "$cli: $!";
    my @out = <$fh>;
    close $fh;
    chomp @out;
    return grep { $_ ne '' } @out;
}

# another process may take the port between the probe and the bind: retry
for my $try (1 .. 5) {
    $port = free_port();
    $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        exec $server, '--port', $port, '--bind', '127.0.0.1',
             '--save', '', '--appendonly', 'no', '--dir', $dir,
             '--logfile', "$dir/redis.log", '--daemonize', 'no';
        exit 127;
    }
    for (1 .. 50) {
        last if waitpid($pid, WNOHANG) != 0;
        last if IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port");
        select undef, undef, undef, 0.1;
    }
    last if kill(0, $pid) && ((cli('PING'))[0] // '') eq 'PONG';
    kill 'TERM', $pid;
    waitpid $pid, 0;
    undef $pid;
}

BAIL_OUT('redis-server did not start') unless $pid;

sub script {
    my ($opt) = @_;
    open my $fh, '-|', $bin, $opt or die "$bin: $!";
    my $text = do { local $/; <$fh> };
    close $fh;
    my ($sha) = cli('SCRIPT', 'LOAD', $text);
    return $sha;
}

my $gcra = script('--gcra-script');
my $window = script('--window-script');
like($gcra, qr/^[0-9a-f]{40}$/, 'GCRA script loads');
like($window, qr/^[0-9a-f]{40}$/, 'window script loads');

# GCRA: every step of the C sequences, in order, one key per sequence

open my $vec, '-|', $bin, '--gcra-vectors' or die "$bin: $!";
my $steps = 0;
while (my $line = <$vec>) {
    my ($seq, $interval, $burst, $cost, $now, @want) = split ' ', $line;
    my $key = "psd:{lim:test:$seq}";
    my @got = cli('EVALSHA', $gcra, 1, $key, $interval, $burst, $cost,
                  $now);
    $steps++;
    is("@got", "@want", "sequence $seq step $steps: cost $cost at $now");
}
close $vec;
ok($steps > 30, "replayed $steps GCRA steps");

# the key lives until the bucket is full again
my @r = cli('EVALSHA', $gcra, 1, 'psd:{lim:ttl}', 1000000, 4, 1,
            1000000000);
is("@r", '1 4 -1 1000', 'fresh key');
my ($pttl) = cli('PTTL', 'psd:{lim:ttl}');
ok($pttl > 900 && $pttl <= 1000, "PEXPIRE to the reset time ($pttl ms)");
@r = cli('EVALSHA', $gcra, 1, 'psd:{lim:ttl}', 1000000, 4, 3, 1000000000);
($pttl) = cli('PTTL', 'psd:{lim:ttl}');
ok($pttl > 3900 && $pttl <= 4000, "expiry moves with the tat ($pttl ms)");

# a peek writes nothing
@r = cli('EVALSHA', $gcra, 1, 'psd:{lim:peek}', 1000000, 4, 0, 5);
is("@r", '1 5 -1 0', 'peek at a fresh key');
is((cli('EXISTS', 'psd:{lim:peek}'))[0], 0, 'and creates nothing');

# without the override Redis's clock is used
@r = cli('EVALSHA', $gcra, 1, 'psd:{lim:time}', 100000, 9, 1);
is("@r", '1 9 -1 100', 'TIME as now');
my ($tat) = cli('GET', 'psd:{lim:time}');
my ($sec, $usec) = cli('TIME');
my $now = $sec * 1000000 + $usec;
ok($tat =~ /^\d+$/ && $tat > $now && $tat <= $now + 100000,
   'the tat is stored as an integer of µs');

for my $bad ([0, 1, 1], [1, -1, 1], [1, 1, -1], ['x', 1, 1], [1.5, 1, 1],
             ['0x10', 1, 1], ['1e3', 1, 1], [' 7', 1, 1], ['', 1, 1],
             [1 << 25, 1 << 25, 1], [1, 1, 1, 'now'],
             [1, 1, 1, 4503599627370497])
{
    @r = cli('EVALSHA', $gcra, 1, 'psd:{lim:bad}', @$bad);
    like("@r", qr/^ERR psd gcra: bad/, "refused: @$bad");
}

# fraud windows: 1h = 60 buckets of 60 s; t0 starts a bucket

my $t0 = 1699999980 * 1000000;
my $s = 1000000;
my @keys = map { "psd:{fr:test}:$_" } qw(count sum distinct);

sub win {
    my ($now, $cap, @rules) = @_;
    my $n = @rules / 3;
    return join ' ', cli('EVALSHA', $window, $n, @keys[0 .. $n - 1], $now,
                         $cap, @rules);
}

sub all3 {
    my ($now, $c, $amount, $member) = @_;
    return win($now, 1000, c => 3600, $c, s => 3600, $amount,
               d => 3600, $member);
}

is(all3($t0, 1, 500, 'alice'), '1 500 1', 'first event');
is(all3($t0 + 10 * $s, 1, 700, 'bob'), '2 1200 2', 'second event');

($pttl) = cli('PTTL', $keys[1]);
ok($pttl > 3600000 && $pttl <= 3660000, "counter expiry ($pttl ms)");
($pttl) = cli('PTTL', $keys[2]);
ok($pttl > 3500000 && $pttl <= 3600000, "distinct expiry ($pttl ms)");

is(all3($t0 + 20 * $s, 1, 0, 'alice'), '3 1200 2',
   'a member seen again counts once; amount 0 adds nothing');
is(all3($t0 + 1800 * $s, 0, 0, 'carol'), '3 1200 3',
   'count 0 peeks, a new member counts');
is(all3($t0 + 3599 * $s, 0, 0, ''), '3 1200 3', 'all peek inside the hour');
is(all3($t0 + 3610 * $s, 0, 0, ''), '3 1200 2',
   'bob left the distinct window at exactly 1h, counts stay a bucket');
is(all3($t0 + 3659 * $s, 0, 0, ''), '3 1200 1',
   'the oldest bucket still counts, alice (seen at 20 s) left');
is(all3($t0 + 3660 * $s, 0, 0, ''), '0 0 1', 'then the bucket leaves');
is((cli('EXISTS', $keys[0]))[0], 0, 'and its field is deleted');

cli('DEL', @keys);
for my $i (1 .. 5) {
    is(win($t0 + $i * $s, 3, d => 60, "m$i"), $i < 3 ? $i : 3,
       "distinct capped at 3 after m$i");
}
is(join(' ', cli('ZRANGE', $keys[0], 0, -1)), 'm3 m4 m5',
   'the most recent members stay');

cli('DEL', @keys);
is(win($t0, 1000, s => 86400, '9007199254740991'), '9007199254740991',
   'the largest amount is exact');
like(win($t0, 1000, s => 86400, '9007199254740992'), qr/^ERR/,
     'a larger one is refused');
like(win($t0, 1000, s => 86400, '-5'), qr/^ERR/, 'negative amount');
like(win($t0, 1000, s => 86400, '1e3'), qr/^ERR/, 'amount 1e3');
like(win($t0, 1000, d => 31622401, 'm'), qr/^ERR psd window: bad window/,
     'window above 366 days');
like(win($t0, 1000, x => 60, 1), qr/^ERR psd window: bad kind/,
     'unknown kind');
like(win($t0, 1000, c => 0, 1), qr/^ERR psd window: bad window/,
     'zero window');
like(win($t0, 0, c => 60, 1), qr/^ERR psd window: bad arguments/,
     'zero cap');
like(join(' ', cli('EVALSHA', $window, 1, $keys[0], $t0, 1000, 'c', 60)),
     qr/^ERR psd window: bad arguments/, 'missing argument');

# without the override: Redis's clock
is(join(' ', cli('EVALSHA', $window, 1, $keys[1], '', 1000, 'c', 60, 2)),
   '2', 'TIME as now');

done_testing();
