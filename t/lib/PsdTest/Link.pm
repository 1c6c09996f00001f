package PsdTest::Link;

# Helpers for the psd_link tests (t/02*.t): a signer in Perl that builds
# the psd-link-v1 canonical string (docs/link-format.md, checked against
# t/vectors/links.json in t/020-link-verify.t), the test keys and their
# files, and small request helpers.
#
# Load it after PsdTest (which sets $TEST_NGINX_CONF_DIR), then call
# write_keys() once at the top of the test file: it writes
# $TEST_NGINX_CONF_DIR/keys/{k1,k2,api} (mode 0600).

use strict;
use warnings;
use Digest::SHA qw(hmac_sha256 sha256 sha384);
use MIME::Base64 qw(encode_base64);
use File::Path qw(make_path);
use Time::HiRes qw(time sleep);
use IO::Socket::IP;
use IO::Select;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use PsdTest::HTTP qw(http_request http_parallel);
use Exporter 'import';

our @EXPORT = qw(sign_link link_canonical b64url pct_path pct_arg
    write_keys write_key_file key_bytes link_query link_set link_del
    link_arg api_post wait_until json_body start_download
    finish_download %KEY $API_KEY);

# Binary keys: whatever a log might print of them (raw, hex, base64) is
# looked for in t/024-link-secrets.t.  Neither ends in "\n" or "\r",
# which the module strips from key files.
our %KEY = (
    k1 => sha256('psd_link test key one'),          # 32 bytes
    k2 => sha384('psd_link test key two'),          # 48 bytes
);
our $API_KEY = 'psd-test-api-key-Zq8sT3vW1xY5';

my $seq = 0;

sub key_bytes { $KEY{ $_[0] } // die "no test key '$_[0]'\n" }

sub write_key_file {
    my ($name, $bytes) = @_;
    my $dir = "$ENV{TEST_NGINX_CONF_DIR}/keys";
    make_path($dir);
    open my $fh, '>:raw', "$dir/$name" or die "$dir/$name: $!\n";
    print {$fh} $bytes;
    close $fh or die "$dir/$name: $!\n";
    chmod 0600, "$dir/$name";
    return "$dir/$name";
}

sub write_keys {
    for (sort keys %KEY) {
        die "key $_ ends in a newline\n" if $KEY{$_} =~ /[\r\n]\z/;
        write_key_file($_, $KEY{$_});
    }
    write_key_file('api', "$API_KEY\n");
}

sub b64url {
    my $s = encode_base64($_[0], '');
    $s =~ tr{+/}{-_};
    $s =~ s/=+\z//;
    return $s;
}

# what psd_link_encode_path / psd_link_escape do: unreserved characters
# (and '/' in a path) stay, every other byte is %XX, upper case
sub pct_path { join '', map { m{[A-Za-z0-9._~/-]} ? $_ : sprintf '%%%02X', ord }
    split //, $_[0] }
sub pct_arg { join '', map { m{[A-Za-z0-9._~-]} ? $_ : sprintf '%%%02X', ord }
    split //, $_[0] }

# link_canonical(kid => ..., exp => ..., id => ..., order => ..., path =>
# ..., prefix => 0|1, ip => ..., limit => ...): the signed string.  All
# values are byte strings (path: decoded, UTF-8 bytes).
sub link_canonical {
    my (%o) = @_;
    my $f = sub { "\n$_[0]=" . length($_[1] // '') . ':' . ($_[1] // '') };
    return 'psd-link-v1'
        . $f->(kid => $o{kid}) . $f->(exp => $o{exp}) . $f->(id => $o{id})
        . $f->(order => $o{order})
        . $f->(scope => $o{prefix} ? 'prefix' : 'exact')
        . $f->(path => $o{path}) . $f->(ip => $o{ip})
        . $f->(limit => $o{limit});
}

# sign_link(path => '/x', ...) returns the link "encoded-path?query" as
# psd_link_sign() writes it.  Options: kid (default k1), key (default the
# test key of kid), exp or ttl (default 3600 from now), id (default
# unique), order, prefix, ip, limit, extra (an argument string appended,
# unsigned).  Always a scalar: link_arg() takes values back out.
sub sign_link {
    my (%o) = @_;
    $o{kid} //= 'k1';
    $o{key} //= key_bytes($o{kid});
    $o{exp} //= int(time) + ($o{ttl} // 3600);
    $o{id} //= sprintf 'T%d_%d', $$, ++$seq;
    my $sig = b64url(hmac_sha256(link_canonical(%o), $o{key}));
    my @q = ([v => 1], [kid => $o{kid}], [exp => $o{exp}], [id => $o{id}]);
    push @q, [order => $o{order}] if defined $o{order};
    push @q, [scope => $o{path}] if $o{prefix};
    push @q, [ip => $o{ip}] if defined $o{ip};
    push @q, [limit => $o{limit}] if defined $o{limit};
    push @q, [sig => $sig];
    my $url = pct_path($o{path}) . '?'
        . join '&', map { "psd_$_->[0]=" . pct_arg($_->[1]) } @q;
    $url .= "&$o{extra}" if defined $o{extra};
    return $url;
}

# the query of a link as [name, value] pairs, raw (not decoded)
sub link_query {
    my ($url) = @_;
    my (undef, $q) = split /\?/, $url, 2;
    return map { [ split /=/, $_, 2 ] } split /&/, $q // '';
}

sub _join {
    my ($url, @q) = @_;
    my ($path) = split /\?/, $url, 2;
    return "$path?" . join '&', map { defined $_->[1] ? "$_->[0]=$_->[1]"
        : $_->[0] } @q;
}

# link_set($url, 'psd_exp', 123): the value of an argument replaced (raw)
sub link_set {
    my ($url, $name, $value) = @_;
    return _join($url, map { $_->[0] eq $name ? [ $name, $value ] : $_ }
        link_query($url));
}

# link_del($url, 'psd_order'): the argument removed
sub link_del {
    my ($url, $name) = @_;
    return _join($url, grep { $_->[0] ne $name } link_query($url));
}

# link_arg($url, 'psd_sig'): the raw value of an argument (the first)
sub link_arg {
    my ($url, $name) = @_;
    my ($v) = map { $_->[1] } grep { $_->[0] eq $name } link_query($url);
    return $v;
}

# api_post('/api/issue', '{"path":...}', token => $API_KEY): a response;
# token => undef sends no Authorization header
sub api_post {
    my ($path, $body, %o) = @_;
    my $token = exists $o{token} ? $o{token} : $API_KEY;
    my $auth = defined $o{auth} ? "Authorization: $o{auth}\r\n"
        : defined $token ? "Authorization: Bearer $token\r\n" : '';
    return http_request("POST $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Connection: close\r\nContent-Type: application/json\r\n$auth"
        . 'Content-Length: ' . length($body) . "\r\n\r\n$body");
}

sub json_body {
    my ($r) = @_;
    my $j = eval { JSON::PP::decode_json($r->{body} // '') };
    return $j // {};
}

# polls $cond every 20 ms until true or $timeout seconds passed; returns
# its last value
sub wait_until {
    my ($cond, $timeout) = @_;
    my $end = time + ($timeout // 5);
    my $v;
    until (($v = $cond->()) || time > $end) { sleep 0.02 }
    return $v;
}

# start_download('/x?...', 'Range: bytes=0-') sends a GET on a new
# connection and reads until the response header is in; returns
# (socket, header text).  The caller reads on (finish_download) or closes
# the socket to abort.
sub start_download {
    my ($target, @headers) = @_;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', Proto => 'tcp',
        PeerPort => $PsdTest::HTTP::PORT, Timeout => 5)
        or die "connect: $@\n";
    # a small receive buffer, so that an abort leaves most bytes unread
    setsockopt $s, SOL_SOCKET, SO_RCVBUF, 4096;
    print {$s} "GET $target HTTP/1.1\r\nHost: localhost\r\n"
        . join('', map { "$_\r\n" } @headers) . "Connection: close\r\n\r\n";
    my $buf = '';
    my $end = time + 5;
    while (index($buf, "\r\n\r\n") < 0) {
        die "no response header in 5 s\n" if time > $end
            || !IO::Select->new($s)->can_read($end - time);
        sysread($s, $buf, 4096, length $buf) or die "connection closed\n";
    }
    my $head = substr $buf, 0, index($buf, "\r\n\r\n") + 4, '';
    ${*$s}{psd_body_read} = length $buf;     # for finish_download
    return ($s, $head);
}

# reads the rest of a download to EOF; returns the number of body bytes
# (those read with the header included)
sub finish_download {
    my ($s) = @_;
    my ($n, $buf) = (${*$s}{psd_body_read} // 0, '');
    while (1) {
        my $r = sysread $s, $buf, 65536;
        last unless $r;
        $n += $r;
    }
    close $s;
    return $n;
}

require JSON::PP;

1;
