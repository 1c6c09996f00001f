/*
 * Unit tests: strict IP / CIDR parsing, formatting and matching.  The
 * shared cases live in t/vectors/links.json (checked by test_link.c); here
 * is what only the C API has, and a differential test against libc.
 */

#include <arpa/inet.h>
#include <stdlib.h>

#include "tap.h"
#include "psd_cidr.h"


static int
cidr_ok(const char *text)
{
    psd_cidr_t  c;

    return psd_cidr_parse(&c, text, strlen(text)) == 0;
}


static int
ip_ok(const char *text)
{
    psd_ip_t  ip;

    return psd_ip_parse(&ip, text, strlen(text)) == 0;
}


static int
match(const char *cidr, const char *ip)
{
    psd_ip_t    a;
    psd_cidr_t  c;

    if (psd_cidr_parse(&c, cidr, strlen(cidr)) != 0
        || psd_ip_parse(&a, ip, strlen(ip)) != 0)
    {
        return -1;
    }

    return psd_cidr_match(&c, &a);
}


/* glibc writes these in dotted form, which we never do */
static int
libc_dotted(const unsigned char *a)
{
    static const unsigned char  zero[12];

    return memcmp(a, zero, 10) == 0
           && ((a[10] == 0xff && a[11] == 0xff)
               || (a[10] == 0 && a[11] == 0
                   && (a[12] || a[13] || a[14] || a[15] > 1)));
}


int
main(void)
{
    int             i, k, bad_fmt, bad_parse, bad_pton, bad_match, n6;
    char            buf[64], ref[INET6_ADDRSTRLEN];
    size_t          n;
    psd_ip_t        ip, ip2;
    psd_cidr_t      c;
    unsigned char   a[16], b[16];

    /* parse and format agree on a few shapes */
    ok(psd_cidr_parse(&c, "203.0.113.0/24", 14) == 0, "v4 cidr parses");
    is_int(c.net.family, PSD_IP_V4, "v4 family");
    is_int(c.prefix, 24, "v4 prefix");
    ok(c.net.addr[0] == 203 && c.net.addr[1] == 0 && c.net.addr[2] == 113
       && c.net.addr[3] == 0, "v4 bytes");
    n = psd_cidr_format(buf, &c);
    buf[n] = '\0';
    is_str(buf, "203.0.113.0/24", "v4 cidr formats back");

    ok(psd_cidr_parse(&c, "2001:db8::", 10) == 0, "bare v6 parses");
    is_int(c.prefix, 128, "bare v6 is a /128");
    n = psd_cidr_format(buf, &c);
    buf[n] = '\0';
    is_str(buf, "2001:db8::", "a /128 formats bare");

    ok(psd_cidr_parse(&c, "192.0.2.1", 9) == 0 && c.prefix == 32,
       "bare v4 is a /32");
    ok(!cidr_ok("192.0.2.1/32"), "/32 spelled out refused");
    ok(!cidr_ok("2001:db8::/128"), "/128 spelled out refused");

    /* length is honoured: no reading past len, no NUL needed */
    ok(psd_cidr_parse(&c, "10.0.0.0/8XYZ", 10) == 0 && c.prefix == 8,
       "parse stops at len");
    ok(psd_cidr_parse(&c, "10.0.0.0/8", 0) != 0, "empty refused");
    ok(!cidr_ok("1.2.3.4\n"), "trailing newline refused");
    ok(psd_cidr_parse(&c, "1.2.3.4\0", 8) != 0, "embedded NUL refused");

    ok(ip_ok("2001:db8::1"), "ip_parse v6");
    ok(ip_ok("198.51.100.7"), "ip_parse v4");
    ok(!ip_ok("198.51.100.0/24"), "ip_parse refuses a prefix");
    ok(!ip_ok("::ffff:c633:6407"), "ip_parse refuses mapped v6");

    /* a dual-stack socket's mapped client matches IPv4 blocks */
    memset(a, 0, sizeof(a));
    a[10] = 0xff;
    a[11] = 0xff;
    a[12] = 203;
    a[13] = 0;
    a[14] = 113;
    a[15] = 7;
    is_int(psd_ip_set(&ip, a, 16), 0, "ip_set 16 bytes");
    is_int(ip.family, PSD_IP_V4, "ip_set turns mapped into v4");
    ok(memcmp(ip.addr, a + 12, 4) == 0, "ip_set keeps the v4 bytes");
    psd_cidr_parse(&c, "203.0.113.0/24", 14);
    is_int(psd_cidr_match(&c, &ip), 1, "mapped client inside v4 cidr");

    /* a caller that fills psd_ip_t by hand gets the same answer */
    ip2.family = PSD_IP_V6;
    memcpy(ip2.addr, a, 16);
    is_int(psd_cidr_match(&c, &ip2), 1, "hand-filled mapped ip matches");
    psd_cidr_parse(&c, "::/0", 4);
    is_int(psd_cidr_match(&c, &ip2), 0, "mapped ip is not in ::/0");

    is_int(psd_ip_set(&ip, a, 4), 0, "ip_set 4 bytes");
    is_int(ip.family, PSD_IP_V4, "ip_set 4 bytes is v4");
    is_int(psd_ip_set(&ip, a, 5), -1, "ip_set refuses 5 bytes");
    is_int(psd_ip_set(&ip, a, 0), -1, "ip_set refuses 0 bytes");

    is_int(match("0.0.0.0/0", "255.255.255.255"), 1, "/0 matches all v4");
    is_int(match("::/0", "ffff::"), 1, "::/0 matches all v6");
    is_int(match("10.0.0.0/7", "11.0.0.1"), 1, "odd prefix inside");
    is_int(match("10.0.0.0/7", "12.0.0.1"), 0, "odd prefix outside");
    is_int(match("2001:db8:8000::/33", "2001:db8:8000::1"), 1,
           "v6 /33 inside");
    is_int(match("2001:db8:8000::/33", "2001:db8:7fff::1"), 0,
           "v6 /33 outside");

    /*
     * Differential: random addresses, biased towards zero groups so that
     * every compression case comes up, against glibc's inet_ntop/pton.
     */
    srand(20260101);
    bad_fmt = bad_parse = bad_pton = bad_match = n6 = 0;

    for (i = 0; i < 20000; i++) {
        for (k = 0; k < 8; k++) {
            if (rand() % 2) {
                a[2 * k] = 0;
                a[2 * k + 1] = 0;
            } else {
                a[2 * k] = (unsigned char) (rand() % 3 ? 0 : rand());
                a[2 * k + 1] = (unsigned char) rand();
            }
        }

        psd_ip_set(&ip, a, 16);
        if (ip.family != PSD_IP_V6 || libc_dotted(a)) {
            continue;
        }
        n6++;

        n = psd_ip_format(buf, &ip);
        buf[n] = '\0';
        inet_ntop(AF_INET6, a, ref, sizeof(ref));

        if (strcmp(buf, ref) != 0) {
            if (bad_fmt++ == 0) {
                printf("# format %s, libc %s\n", buf, ref);
            }
        }

        if (psd_ip_parse(&ip2, buf, n) != 0
            || memcmp(ip2.addr, a, 16) != 0)
        {
            bad_parse++;
        }

        if (inet_pton(AF_INET6, buf, b) != 1 || memcmp(a, b, 16) != 0) {
            bad_pton++;
        }

        /* a random prefix: match must equal a bitwise comparison */
        c.net = ip;
        c.prefix = (unsigned char) (rand() % 129);
        memcpy(b, a, 16);
        k = rand() % 128;
        b[k / 8] ^= (unsigned char) (0x80 >> (k % 8));
        psd_ip_set(&ip2, b, 16);
        if (ip2.family == PSD_IP_V6
            && psd_cidr_match(&c, &ip2) != (k >= c.prefix))
        {
            bad_match++;
        }
    }

    ok(n6 > 10000, "differential: %d v6 addresses", n6);
    is_int(bad_fmt, 0, "v6 format equals inet_ntop (RFC 5952)");
    is_int(bad_parse, 0, "v6 format parses back to the same bytes");
    is_int(bad_pton, 0, "inet_pton reads our text as the same bytes");
    is_int(bad_match, 0, "match of a one-bit change obeys the prefix");

    bad_fmt = 0;

    for (i = 0; i < 5000; i++) {
        for (k = 0; k < 4; k++) {
            a[k] = (unsigned char) (rand() % 4 ? rand() : 0);
        }

        psd_ip_set(&ip, a, 4);
        n = psd_ip_format(buf, &ip);
        buf[n] = '\0';
        inet_ntop(AF_INET, a, ref, sizeof(ref));

        if (strcmp(buf, ref) != 0 || psd_ip_parse(&ip2, buf, n) != 0
            || memcmp(ip2.addr, a, 4) != 0)
        {
            bad_fmt++;
        }
    }

    is_int(bad_fmt, 0, "v4 format equals inet_ntop and parses back");

    /* every prefix length, both families: only host-bit-free blocks */
    bad_parse = 0;

    for (i = 0; i <= 128; i++) {
        memset(&c, 0, sizeof(c));
        c.net.family = PSD_IP_V6;
        c.net.addr[0] = 0x20;
        c.net.addr[1] = 0x01;
        for (k = 16; k < i; k++) {
            c.net.addr[k / 8] |= (unsigned char) (0x80 >> (k % 8));
        }
        c.prefix = (unsigned char) i;
        n = psd_cidr_format(buf, &c);
        buf[n] = '\0';
        if (!cidr_ok(buf) != (i < 16)) {
            bad_parse++;
            printf("# %s\n", buf);
        }
    }

    is_int(bad_parse, 0, "v6 prefixes 0..128 accept exactly host-bit-free");

    return done_testing();
}
