# psd_link forgery battery, table-driven: every psd_* argument flipped,
# truncated, extended, duplicated and removed; signatures with padding, a
# foreign alphabet or from another path; unknown psd_ arguments; other
# spellings of a path (case, dot segments, %2e, %2f) on exact and prefix
# links.  Each case is one request; its status, JSON body and
# $psd_link_status are checked.  Only "ok" may serve the file.
use strict;
use warnings;
use lib 't/lib';
use PsdTest;
use PsdTest::Link;

write_keys();

my %CODE = (ok => 200, expired => 410, revoked => 410, exhausted => 410);

# run_cases([name, request target, expected $psd_link_status], ...);
# a status of "400" is nginx's own rejection of the request line, before
# any phase handler.
sub run_cases {
    my $n = 0;
    for my $c (@_) {
        my ($name, $target, $want) = @$c;
        my $r = http_get($target);
        my $code = $want =~ /^\d+$/ ? $want : $CODE{$want} // 403;
        $n++;
        is $r->{status}, $code, "$name: status $code"
            or diag("GET $target\n$r->{raw}");
        next if $want =~ /^\d+$/;
        is $r->{headers}{'x-status'}, $want, "$name: \$psd_link_status $want";
        is $r->{body}, $want eq 'ok' ? "served\n" : qq{{"error":"link_$want"}\n},
            "$name: body";
    }
    return $n;
}

run_tests();

__DATA__

=== TEST 1: exact link: each field flipped, truncated, extended, duplicated, removed
--- http_config
    psd_redis main 127.0.0.1:$TEST_NGINX_REDIS_PORT timeout=500ms;
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
    psd_link_key k2 $TEST_NGINX_CONF_DIR/keys/k2;
--- config
    location / {
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> files/a.txt
served
--- check
my $exp = int(time) + 3600;
# every optional field present; limit 1000 makes it stateful (Redis)
my $B = sign_link(path => '/files/a.txt', id => 'base1', order => 'ord-1',
                  ip => '127.0.0.0/8', limit => 1000, exp => $exp);
my $sig = link_arg($B, 'psd_sig');
my %val = map { @$_ } link_query($B);
my $b64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
my $idx = index $b64, substr($sig, -1);
# the 43rd character carries 4 bits and 2 zero bits
my $last_ok = substr $b64, ($idx + 4) % 64, 1;
my $last_bits = substr $b64, $idx + 1, 1;     # $idx % 4 == 0
my $first = substr $b64, (index($b64, substr $sig, 0, 1) + 1) % 64, 1;
my @cases = (
    [ 'reference', $B, 'ok' ],
    # flipped
    [ 'v 2', link_set($B, psd_v => 2), 'malformed' ],
    [ 'kid of the other known key', link_set($B, psd_kid => 'k2'), 'invalid' ],
    [ 'kid unknown', link_set($B, psd_kid => 'k3'), 'unknown_key' ],
    [ 'exp + 1', link_set($B, psd_exp => $exp + 1), 'invalid' ],
    [ 'exp - 1', link_set($B, psd_exp => $exp - 1), 'invalid' ],
    [ 'id one character', link_set($B, psd_id => 'base2'), 'invalid' ],
    [ 'order one character', link_set($B, psd_order => 'ord-2'), 'invalid' ],
    [ 'ip another net', link_set($B, psd_ip => '127.0.0.0%2F9'), 'invalid' ],
    [ 'limit + 1', link_set($B, psd_limit => 1001), 'invalid' ],
    [ 'sig first character', link_set($B, psd_sig => $first . substr $sig, 1), 'invalid' ],
    [ 'sig last character, data bits', link_set($B, psd_sig => substr($sig, 0, 42) . $last_ok), 'invalid' ],
    [ 'sig last character, non-zero pad bits', link_set($B, psd_sig => substr($sig, 0, 42) . $last_bits), 'malformed' ],
    [ 'scope added', "$B&psd_scope=%2Ffiles%2F", 'invalid' ],
    # truncated
    [ 'v empty', link_set($B, psd_v => ''), 'malformed' ],
    [ 'kid truncated', link_set($B, psd_kid => 'k'), 'unknown_key' ],
    [ 'kid empty', link_set($B, psd_kid => ''), 'malformed' ],
    [ 'exp truncated', link_set($B, psd_exp => substr $exp, 0, -1), 'invalid' ],
    [ 'exp empty', link_set($B, psd_exp => ''), 'malformed' ],
    [ 'id truncated', link_set($B, psd_id => 'base'), 'invalid' ],
    [ 'id empty', link_set($B, psd_id => ''), 'malformed' ],
    [ 'order truncated', link_set($B, psd_order => 'ord-'), 'invalid' ],
    [ 'order empty', link_set($B, psd_order => ''), 'malformed' ],
    [ 'ip truncated', link_set($B, psd_ip => '127.0.0.0%2F'), 'malformed' ],
    [ 'ip empty', link_set($B, psd_ip => ''), 'malformed' ],
    [ 'limit truncated', link_set($B, psd_limit => 100), 'invalid' ],
    [ 'limit empty', link_set($B, psd_limit => ''), 'malformed' ],
    [ 'sig truncated', link_set($B, psd_sig => substr $sig, 0, 42), 'malformed' ],
    [ 'sig empty', link_set($B, psd_sig => ''), 'malformed' ],
    # extended
    [ 'v 11', link_set($B, psd_v => 11), 'malformed' ],
    [ 'kid extended', link_set($B, psd_kid => 'k1x'), 'unknown_key' ],
    [ 'kid 33 characters', link_set($B, psd_kid => 'k' x 33), 'malformed' ],
    [ 'exp one more digit', link_set($B, psd_exp => $exp . '0'), 'invalid' ],
    [ 'exp 13 digits', link_set($B, psd_exp => '1' . '0' x 12), 'malformed' ],
    [ 'id extended', link_set($B, psd_id => 'base1x'), 'invalid' ],
    [ 'id 65 characters', link_set($B, psd_id => 'i' x 65), 'malformed' ],
    [ 'order extended', link_set($B, psd_order => 'ord-1x'), 'invalid' ],
    [ 'order 65 characters', link_set($B, psd_order => 'o' x 65), 'malformed' ],
    [ 'ip longer prefix', link_set($B, psd_ip => '127.0.0.0%2F16'), 'invalid' ],
    [ 'limit one more digit', link_set($B, psd_limit => 10000), 'invalid' ],
    [ 'limit above 1000000', link_set($B, psd_limit => 1000001), 'malformed' ],
    [ 'limit 0', link_set($B, psd_limit => 0), 'malformed' ],
    [ 'sig one more character', link_set($B, psd_sig => "${sig}A"), 'malformed' ],
    [ 'sig with "=" padding', link_set($B, psd_sig => "$sig="), 'malformed' ],
    [ 'sig with "%3D" padding', link_set($B, psd_sig => "$sig%3D"), 'malformed' ],
    # duplicated, with the same value
    (map { [ "$_ duplicated", "$B&$_=$val{$_}", 'malformed' ] }
        qw(psd_v psd_kid psd_exp psd_id psd_order psd_ip psd_limit psd_sig)),
    [ 'sig duplicated first', "/files/a.txt?psd_sig=$sig&" . (split /\?/, $B)[1], 'malformed' ],
    # removed
    (map { [ "$_ removed", link_del($B, $_), 'malformed' ] }
        qw(psd_v psd_kid psd_exp psd_id psd_sig)),
    (map { [ "$_ removed", link_del($B, $_), 'invalid' ] }
        qw(psd_order psd_ip psd_limit)),
    # other spellings of the values
    [ 'kid percent-encoded (values are decoded)', link_set($B, psd_kid => '%6B1'), 'ok' ],
    [ 'order percent-encoded', link_set($B, psd_order => 'ord%2D1'), 'ok' ],
    [ 'exp leading zero', link_set($B, psd_exp => "0$exp"), 'malformed' ],
    [ 'exp with sign', link_set($B, psd_exp => "%2B$exp"), 'malformed' ],
    [ 'exp negative', link_set($B, psd_exp => '-1'), 'malformed' ],
    [ 'limit leading zero', link_set($B, psd_limit => '01000'), 'malformed' ],
    [ 'v 01', link_set($B, psd_v => '01'), 'malformed' ],
    [ 'kid with a space', link_set($B, psd_kid => 'k%201'), 'malformed' ],
    [ 'id with NUL', link_set($B, psd_id => 'base1%00'), 'malformed' ],
    [ 'id broken escape', link_set($B, psd_id => 'base%1'), 'malformed' ],
    [ 'order with /', link_set($B, psd_order => 'ord%2F1'), 'malformed' ],
    [ 'ip with host bits', link_set($B, psd_ip => '127.0.0.1%2F8'), 'malformed' ],
    [ 'ip upper-case IPv6', link_set($B, psd_ip => '%3A%3AFFFF'), 'malformed' ],
    # the signature's alphabet
    [ 'sig with +', link_set($B, psd_sig => '+' . substr $sig, 1), 'malformed' ],
    [ 'sig with /', link_set($B, psd_sig => '/' . substr $sig, 1), 'malformed' ],
    [ 'sig with .', link_set($B, psd_sig => '.' . substr $sig, 1), 'malformed' ],
    [ 'sig with a space', link_set($B, psd_sig => '%20' . substr $sig, 3), 'malformed' ],
    [ 'sig percent-encoded character', link_set($B, psd_sig => sprintf('%%%02X', ord $sig) . substr $sig, 1), 'malformed' ],
    [ 'sig in standard base64 with padding',
      link_set($B, psd_sig => do { my $s = $sig; $s =~ tr{-_}{+/}; "$s=" }), 'malformed' ],
    # a genuine signature of something else
    [ 'sig of another path',
      link_set($B, psd_sig => link_arg(sign_link(path => '/files/b.txt', id => 'base1',
          order => 'ord-1', ip => '127.0.0.0/8', limit => 1000, exp => $exp), 'psd_sig')),
      'invalid' ],
    [ 'link of another path', sign_link(path => '/files/b.txt') =~ s{^/files/b\.txt}{/files/a.txt}r,
      'invalid' ],
    [ 'sig of another key, same kid', sign_link(path => '/files/a.txt', key => key_bytes('k2')), 'invalid' ],
    [ 'forged and expired: the signature is checked first',
      link_set(sign_link(path => '/files/a.txt', exp => int(time) - 60), psd_sig => $sig), 'invalid' ],
    # unknown and odd arguments
    [ 'unknown psd_ argument', "$B&psd_foo=1", 'malformed' ],
    [ 'psd_ with an empty name', "$B&psd_=1", 'malformed' ],
    [ 'psd_ argument without =', "$B&psd_v", 'malformed' ],
    [ 'bare psd_x without =', "$B&psd_x", 'malformed' ],
    [ 'psd_SIG, case matters', "$B&psd_SIG=$sig", 'malformed' ],
    [ 'PSD_SIG only: not ours, sig missing', link_del($B, 'psd_sig') . "&PSD_sig=$sig", 'malformed' ],
    [ 'application arguments ignored', "$B&PSD_x=1&page=2&x", 'ok' ],
    [ 'psd%5Fsig is an application argument', "$B&psd%5Fsig=AAAA&psd%5Fv=2", 'ok' ],
    [ 'application arguments first', '/files/a.txt?a=1&&' . (split /\?/, $B)[1] . '&&', 'ok' ],
    [ 'reordered, reversed', '/files/a.txt?' . join('&', reverse map { "$_->[0]=$_->[1]" } link_query($B)), 'ok' ],
    [ 'reordered, sig first', '/files/a.txt?psd_sig=' . $sig . '&' . (split /\?/, link_del($B, 'psd_sig'))[1], 'ok' ],
    [ 'no arguments at all', '/files/a.txt', 'malformed' ],
    [ 'only application arguments', '/files/a.txt?x=1', 'malformed' ],
);
is run_cases(@cases), scalar(@cases), 'all cases ran';



=== TEST 2: exact and prefix links: other spellings of the path
--- http_config
    psd_link_key k1 $TEST_NGINX_CONF_DIR/keys/k1;
--- config
    location / {
        psd_link on;
        add_header X-Status $psd_link_status always;
    }
--- user_files
>>> files/a.txt
served
>>> files/A.txt
served
>>> files/secret.txt
secret
>>> files/pub/x.txt
served
>>> files/pub/sub/y.txt
served
>>> files/pubX/x.txt
served
>>> files/pub/..b
served
>>> files/pub/.well-known/x
served
--- check
my $E = sign_link(path => '/files/a.txt');
my (undef, $qe) = split /\?/, $E;
my $P = sign_link(path => '/files/pub/', prefix => 1);
my (undef, $qp) = split /\?/, $P;
my @cases = (
    # exact: the signed path is r->uri, nginx's decoded, normalized path
    [ 'exact: reference', $E, 'ok' ],
    [ 'exact: upper-case file name', "/files/A.txt?$qe", 'invalid' ],
    [ 'exact: upper-case directory', "/FILES/a.txt?$qe", 'invalid' ],
    [ 'exact: upper-case escape %2E', "/files/a%2Etxt?$qe", 'ok' ],
    [ 'exact: trailing slash', "/files/a.txt/?$qe", 'invalid' ],
    [ 'exact: encoded letter', "/files/a.tx%74?$qe", 'ok' ],
    [ 'exact: dot segment', "/files/./a.txt?$qe", 'ok' ],
    [ 'exact: dot-dot back into the path', "/files/pub/../a.txt?$qe", 'ok' ],
    [ 'exact: %2e%2e back into the path', "/files/pub/%2e%2e/a.txt?$qe", 'ok' ],
    [ 'exact: double slashes merged', "//files//a.txt?$qe", 'ok' ],
    [ 'exact: another file via ..', "/files/a.txt/../secret.txt?$qe", 'invalid' ],
    [ 'exact: %2f instead of /', "/files%2fa.txt?$qe", 'ok' ],
    [ 'exact: above the root', "/files/../../a.txt?$qe", 400 ],
    [ 'exact: NUL byte', "/files/a.txt%00?$qe", 400 ],
    # prefix /files/pub/
    [ 'prefix: file below', "/files/pub/x.txt?$qp", 'ok' ],
    [ 'prefix: deeper file', "/files/pub/sub/y.txt?$qp", 'ok' ],
    [ 'prefix: .. inside the prefix', "/files/pub/sub/../x.txt?$qp", 'ok' ],
    [ 'prefix: sibling with the prefix as its start', "/files/pubX/x.txt?$qp", 'wrong_path' ],
    [ 'prefix: the prefix without its slash', "/files/pub?$qp", 'wrong_path' ],
    [ 'prefix: upper case', "/files/PUB/x.txt?$qp", 'wrong_path' ],
    [ 'prefix: raw ../', "/files/pub/../secret.txt?$qp", 'wrong_path' ],
    [ 'prefix: %2e%2e/', "/files/pub/%2e%2e/secret.txt?$qp", 'wrong_path' ],
    [ 'prefix: %2E%2E/', "/files/pub/%2E%2E/secret.txt?$qp", 'wrong_path' ],
    [ 'prefix: .%2e/', "/files/pub/.%2e/secret.txt?$qp", 'wrong_path' ],
    [ 'prefix: ..%2f', "/files/pub/..%2fsecret.txt?$qp", 'wrong_path' ],
    [ 'prefix: %2e%2e%2f', "/files/pub/%2e%2e%2fsecret.txt?$qp", 'wrong_path' ],
    [ 'prefix: %2f..%2f', "/files/pub%2f..%2fsecret.txt?$qp", 'wrong_path' ],
    [ 'prefix: sub/../../', "/files/pub/sub/../../secret.txt?$qp", 'wrong_path' ],
    [ 'prefix: above the root', "/files/pub/../../../etc/passwd?$qp", 400 ],
    [ 'prefix: control byte in the path', "/files/pub/a%01b.txt?$qp", 'wrong_path' ],
    [ 'prefix: DEL in the path', "/files/pub/a%7Fb.txt?$qp", 'wrong_path' ],
    [ 'prefix: "..b" is an ordinary name', "/files/pub/..b?$qp", 'ok' ],
    [ 'prefix: ".well-known" is an ordinary name', "/files/pub/.well-known/x?$qp", 'ok' ],
    [ 'exact: control byte in the path', "/files/a%01.txt?$qe", 'invalid' ],
    # the scope argument itself
    [ 'prefix: scope widened', link_set($P, psd_scope => '%2Ffiles%2F') =~ s{^/files/pub/}{/files/pub/x.txt}r, 'invalid' ],
    [ 'prefix: scope without its slash', link_set($P, psd_scope => '%2Ffiles%2Fpub') =~ s{^/files/pub/}{/files/pub/x.txt}r, 'malformed' ],
    [ 'prefix: scope with ..', link_set($P, psd_scope => '%2Ffiles%2Fpub%2F..%2F') =~ s{^/files/pub/}{/files/pub/x.txt}r, 'malformed' ],
    [ 'prefix: scope with //', link_set($P, psd_scope => '%2Ffiles%2F%2Fpub%2F') =~ s{^/files/pub/}{/files/pub/x.txt}r, 'malformed' ],
    [ 'prefix: scope raw, not encoded', "/files/pub/x.txt?" . ($qp =~ s/%2F/\//gr), 'ok' ],
    [ 'prefix: scope removed', link_del($P, 'psd_scope') =~ s{^/files/pub/}{/files/pub/x.txt}r, 'invalid' ],
    [ 'prefix: scope duplicated', "/files/pub/x.txt?$qp&psd_scope=%2Ffiles%2Fpub%2F", 'malformed' ],
);
is run_cases(@cases), scalar(@cases), 'all cases ran';
--- no_error_log
[crit]
