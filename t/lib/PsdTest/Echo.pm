package PsdTest::Echo;

# An application (or payment gateway) that answers every request with the
# exact bytes it received, so that a test sees what nginx passed on: the
# tokenization tests prove with it that no card number got through.
#
#   echo_app();                      # in --- init; listens on
#                                    # $TEST_NGINX_FAKE_REDIS_PORT
#   my $s = seen($response);         # { line, head, body, pairs, h }

use strict;
use warnings;
use PsdTest qw(fake_redis_start);
use Exporter 'import';

our @EXPORT = qw(echo_app seen);

sub echo_app {
    fake_redis_start(sub {
        my ($sock) = @_;
        my $buf = '';
        while (index($buf, "\r\n\r\n") < 0) {
            sysread($sock, $buf, 65536, length $buf) or return;
        }
        my $hlen = index($buf, "\r\n\r\n") + 4;
        my $len = substr($buf, 0, $hlen) =~ /^content-length:[ \t]*(\d+)\r$/mi ? $1 : 0;
        while (length($buf) < $hlen + $len) {
            sysread($sock, $buf, 65536, length $buf) or last;
        }
        print {$sock} "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            . "X-Echo: 1\r\nContent-Length: " . length($buf) . "\r\nConnection: close\r\n\r\n$buf";
    });
}

# What the application saw, from a response that came from it:
# { line, head, body, pairs => [[name, value], ...] (name undef for a line
# without a colon), h => { lower-case name => values joined with ", " } };
# undef when the response does not come from the application.
sub seen {
    my ($r) = @_;
    return undef unless ($r->{status} // 0) >= 200 && $r->{headers}{'x-echo'};
    my $raw = $r->{body};
    my $end = index $raw, "\r\n\r\n";
    return undef if $end < 0;
    my ($line, @lines) = split /\r\n/, substr($raw, 0, $end);
    my (@pairs, %h);
    for (@lines) {
        my ($n, $v) = /^([^:]*):[ \t]*(.*?)[ \t]*$/ ? ($1, $2) : (undef, $_);
        push @pairs, [$n, $v];
        push @{ $h{lc $n} }, $v if defined $n;
    }
    return { line => $line, head => substr($raw, 0, $end), pairs => \@pairs,
             h => { map { $_ => join ', ', @{ $h{$_} } } keys %h },
             body => substr($raw, $end + 4) };
}

1;
