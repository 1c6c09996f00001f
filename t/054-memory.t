# No card number stays in a worker's memory once its request is done:
# after tokenizations and reveals of every body shape nginx reads in its
# own way (one read, the body split from the headers, chunked, one byte at a
# time, two requests pipelined in one write, a body refused for its size),
# the worker's readable memory (/proc/<pid>/mem: heap, pools, buffers) is
# searched for every card number used.  Each shape has its own card, so a
# hit names the shape that left it.
#
# Reading another process's memory needs ptrace rights (root, as in CI, or
# a Yama ptrace_scope of 0); without them the file skips.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link qw(write_key_file);
use Digest::SHA qw(sha256);
use IO::Socket::INET;
no warnings "portable";
use Time::HiRes qw(sleep);

write_key_file('vault', sha256('psd memory test: vault key'));
write_key_file('fp', sha256('psd memory test: fingerprint key'));
write_key_file('reveal', "psd-memory-reveal-key-0b1c2d3e\n");

our %CARD = (
    plain     => '4242424242424242',
    split     => '4000056655665556',
    chunked   => '5555555555554444',
    bytewise  => '4012888888881881',
    pipelined => '4111111111111111',
    too_large => '6011111111111117',
    revealed  => '5105105105105100',
);

sub raw {
    my ($bytes, $pieces) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $ENV{TEST_NGINX_SERVER_PORT}, Timeout => 5) or die "connect: $!";
    for my $p ($pieces ? @$pieces : ($bytes)) {
        print {$s} $p;
        sleep 0.001 if $pieces;
    }
    local $/;
    my $answer = <$s> // '';
    close $s;
    return $answer;
}

sub body_of { qq({"card":{"number":"$_[0]","cvc":"123"},"note":") . ('n' x ($_[1] // 40)) . '"}' }

sub post_head {
    my ($len, %h) = @_;
    return "POST /checkout HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        . ($h{keep} ? '' : "Connection: close\r\n")
        . (defined $len ? "Content-Length: $len\r\n" : "Transfer-Encoding: chunked\r\n") . "\r\n";
}

# every place in the worker's readable memory where one of the cards is
sub card_hits {
    my ($pid) = @_;
    my @hits;
    open my $maps, '<', "/proc/$pid/maps" or return undef;
    open my $mem, '<:raw', "/proc/$pid/mem" or return undef;
    while (<$maps>) {
        my ($from, $to, $perm, $name) = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/ or next;
        next unless $perm =~ /^r/;
        next if $name =~ m{^/} && $perm !~ /w/;       # read-only file mappings
        my ($a, $b) = (hex $from, hex $to);
        next if $b - $a > 1 << 30;
        sysseek($mem, $a, 0) or next;
        my $data = '';
        sysread($mem, $data, $b - $a) or next;
        for my $shape (sort keys %CARD) {
            my $at = -1;
            while (($at = index($data, $CARD{$shape}, $at + 1)) >= 0) {
                push @hits, sprintf '%s at %s+%#x: ...%s...', $shape, $name || '[anon]',
                    $at, substr($data, $at > 40 ? $at - 40 : 0, 80) =~ s/[^\x20-\x7e]/./gr;
            }
        }
    }
    return \@hits;
}

run_tests();

__DATA__

=== TEST 1: after tokenizations and reveals of every body shape, no card number is left in the worker's memory
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT;
    psd_vault_key a $TEST_NGINX_CONF_DIR/keys/vault;
    psd_fingerprint_key $TEST_NGINX_CONF_DIR/keys/fp;
--- config
    client_body_buffer_size 8k;
    location = /checkout {
        psd_tokenize on;
        psd_tokenize_field card.number pan;
        psd_tokenize_field card.cvc cvv;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/app;
    }
    location = /gateway {
        psd_detokenize on;
        psd_detokenize_field card.number pan;
        psd_detokenize_secret $TEST_NGINX_CONF_DIR/keys/reveal;
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAKE_REDIS_PORT/charge;
    }
--- init
# The application answers with the token it got; the gateway answers
# whether it got the card, without repeating it: a response that held the
# card would sit in nginx's proxy buffers, which are not the module's.
fake_redis_start(sub {
    my ($sock) = @_;
    my $buf = '';
    while (index($buf, "\r\n\r\n") < 0) { sysread($sock, $buf, 65536, length $buf) or return }
    my $hlen = index($buf, "\r\n\r\n") + 4;
    my $len = substr($buf, 0, $hlen) =~ /^content-length:[ \t]*(\d+)\r$/mi ? $1 : 0;
    while (length($buf) < $hlen + $len) { sysread($sock, $buf, 65536, length $buf) or last }
    my $got = $buf =~ m{^POST /charge} ? ($buf =~ /"number":"$main::CARD{revealed}"/ ? 'card' : 'no card')
            : $buf =~ /"number":"(tok_\w+)"/ ? $1 : 'no token';
    print {$sock} "HTTP/1.1 200 OK\r\nContent-Length: " . length($got)
        . "\r\nConnection: close\r\n\r\n$got";
});
--- check
my ($w) = worker_pids();
my $probe = card_hits($w);
return Test::More::plan(skip_all => 'no ptrace rights on the worker') unless $probe;
is scalar @$probe, 0, 'no card in memory before any request';

my %C = %main::CARD;
my $b;

$b = main::body_of($C{plain});
like main::raw(main::post_head(length $b) . $b), qr/^HTTP\/1\.1 200/, 'plain: tokenized';

# headers and the first bytes in one read, the rest later: the body starts
# in nginx's header buffer
$b = main::body_of($C{split}, 3000);
like main::raw(undef, [main::post_head(length $b) . substr($b, 0, 30), substr($b, 30)]),
    qr/^HTTP\/1\.1 200/, 'split from the headers: tokenized';

$b = main::body_of($C{chunked});
my $chunks = join('', map { sprintf("%x\r\n%s\r\n", length $_, $_) } unpack '(a7)*', $b) . "0\r\n\r\n";
like main::raw(main::post_head(undef) . $chunks), qr/^HTTP\/1\.1 200/, 'chunked: tokenized';

$b = main::body_of($C{bytewise});
like main::raw(undef, [main::post_head(length $b), split //, $b]), qr/^HTTP\/1\.1 200/,
    'one byte at a time: tokenized';

$b = main::body_of($C{pipelined});
my $two = main::raw(main::post_head(length $b, keep => 1) . $b . main::post_head(length $b) . $b);
is scalar(() = $two =~ /HTTP\/1\.1 200 /g), 2, "two pipelined requests: both tokenized" or diag $two;

$b = main::body_of($C{too_large}, 20000);
like main::raw(main::post_head(length $b) . $b), qr/^HTTP\/1\.1 413/, 'too large: 413';

my $r = http_request("POST /checkout HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    . "Content-Type: application/json\r\nContent-Length: " . length(main::body_of($C{revealed}))
    . "\r\n\r\n" . main::body_of($C{revealed}));
my ($tok) = $r->{body} =~ /^(tok_\w+)$/;
ok $tok, 'a card to reveal is tokenized';
my $g = qq({"card":{"number":"$tok"}});
$r = http_request("POST /gateway HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    . "Content-Type: application/json\r\nX-PSD-Reveal-Key: psd-memory-reveal-key-0b1c2d3e\r\n"
    . 'Content-Length: ' . length($g) . "\r\n\r\n$g");
is $r->{body}, 'card', 'revealed toward the gateway';

sleep 0.3;    # the requests' pools are freed once their connections close
my $hits = card_hits($w);
is scalar @$hits, 0, 'no card number left in the worker\'s memory'
    or diag join "\n", @$hits;
