package PsdTest::HTTP;

# A tiny HTTP/1.x client: raw requests in, parsed responses out (hashrefs
# { status, headers, body, raw, error }, see t/lib/README.md).

use strict;
use warnings;
use IO::Socket::IP;
use IO::Select;
use Time::HiRes qw(time);
use Errno qw(EAGAIN EINTR);
use Exporter 'import';

our @EXPORT_OK = qw(http_request http_get http_parallel parse_response);
our $PORT;              # nginx's port, set by PsdTest
our $TIMEOUT = 10;      # seconds for one request (or one parallel batch)

# Returns ($response, $complete): complete once the bytes hold the whole
# response by Content-Length, the last chunk, or a bodiless status.
sub parse_response {
    my ($raw, $head_only) = @_;
    my $r = { status => undef, headers => {}, body => undef, raw => $raw };
    my $end = index $raw, "\r\n\r\n";
    return ($r, 0) if $end < 0;
    my ($status_line, @lines) = split /\r\n/, substr($raw, 0, $end);
    ($r->{status}) = $status_line =~ m{^HTTP/\d\.\d\s+(\d{3})};
    my $h = $r->{headers};
    for (@lines) {
        my ($name, $value) = /^([^:\s]+)\s*:\s*(.*?)\s*$/ or next;
        $name = lc $name;
        $h->{$name} = !exists $h->{$name} ? $value
            : [ ref $h->{$name} ? @{ $h->{$name} } : $h->{$name}, $value ];
    }
    my $rest = substr $raw, $end + 4;
    my $st = $r->{status} // 0;
    return ({ %$r, body => '' }, 1)
        if $head_only || $st == 204 || $st == 304 || $st < 200;
    if (lc($h->{'transfer-encoding'} // '') eq 'chunked') {
        $r->{body} = '';
        while ($rest =~ /\G([0-9a-fA-F]+)[^\r\n]*\r\n/gc) {
            my ($size, $pos) = (hex $1, pos $rest);
            return ($r, 1) if $size == 0;
            last if length($rest) < $pos + $size + 2;
            $r->{body} .= substr $rest, $pos, $size;
            pos($rest) = $pos + $size + 2;
        }
        return ($r, 0);
    }
    my $cl = $h->{'content-length'};
    if (defined $cl && $cl =~ /^\d+$/) {
        $r->{body} = substr $rest, 0, $cl;
        return ($r, length($rest) >= $cl);
    }
    $r->{body} = $rest;
    return ($r, 0);     # complete only at EOF
}

# http_parallel(\@raw_requests, timeout => s, port => p): one connection per
# request, all written and read at once with IO::Select; returns the
# responses in request order.  A request may be [$raw, $port] to go to
# another port than the others (another nginx).
sub http_parallel {
    my ($reqs, %o) = @_;
    my $deadline = time + ($o{timeout} // $TIMEOUT);
    my (@c, %by_fd);
    for my $req (@$reqs) {
        my ($raw, $port) = ref $req ? @$req : ($req);
        $port //= $o{port} // $PORT;
        my $c = { out => $raw, in => '', head => scalar $raw =~ /^HEAD\s/ };
        $c->{sock} = IO::Socket::IP->new(PeerHost => '127.0.0.1',
            PeerPort => $port, Proto => 'tcp', Timeout => $o{timeout} // $TIMEOUT)
            or $c->{error} = "connect to 127.0.0.1:$port: $@";
        if ($c->{sock}) { $c->{sock}->blocking(0); $by_fd{fileno $c->{sock}} = $c }
        push @c, $c;
    }
    while (%by_fd) {
        my ($rd, $wr) = (IO::Select->new, IO::Select->new);
        (length $_->{out} ? $wr : $rd)->add($_->{sock}) for values %by_fd;
        my $left = $deadline - time;
        my ($r, $w) = $left > 0 ? IO::Select->select($rd, $wr, undef, $left) : ();
        if (!$r && !$w) {
            next if $left > 0 && $! == EINTR;
            $_->{error} //= 'timeout' for values %by_fd;
            last;
        }
        for my $c (map { $by_fd{fileno $_} } @$w) {
            my $n = syswrite $c->{sock}, $c->{out};
            if ($n) { substr($c->{out}, 0, $n) = '' }
            elsif ($! != EAGAIN && $! != EINTR) {
                ($c->{error}, $c->{out}) = ("write: $!", '');  # read anyway
            }
        }
        for my $c (map { $by_fd{fileno $_} } @$r) {
            my $n = sysread $c->{sock}, $c->{in}, 65536, length $c->{in};
            next if !defined $n && ($! == EAGAIN || $! == EINTR);
            $c->{error} //= "read: $!" unless defined $n;
            next if $n && !(parse_response($c->{in}, $c->{head}))[1];
            delete $by_fd{fileno $c->{sock}};
            close delete $c->{sock};
        }
    }
    close $_->{sock} for grep { $_->{sock} } @c;
    return [ map {
        my ($r) = parse_response($_->{in}, $_->{head});
        $r->{error} = $_->{error};
        $r->{body} //= '' if defined $r->{status};
        $r;
    } @c ];
}

# http_request($raw, timeout => s, port => p): one request, one response.
sub http_request { my ($raw, %o) = @_; return http_parallel([$raw], %o)->[0] }

# http_get('/path', { Header => 'value' }, timeout => s)
sub http_get {
    my ($path, $headers, %o) = @_;
    my %h = (Host => 'localhost', Connection => 'close', %{ $headers || {} });
    return http_request("GET $path HTTP/1.1\r\n"
        . join('', map { "$_: $h{$_}\r\n" } sort keys %h) . "\r\n", %o);
}

1;
