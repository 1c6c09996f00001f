/*
 * Copyright (C) ngx_psd_module authors
 */

#include <string.h>

#include "psd_cidr.h"


static const unsigned char  psd_cidr_mapped_prefix[12] =
    { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };


static int
psd_cidr_hex(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}


/*
 * a decimal number without sign or leading zero ("0" itself is fine) of at
 * most 3 digits and at most max; returns it, or -1
 */
static int
psd_cidr_dec(const char *p, const char *end, int max)
{
    int     v = 0;
    size_t  n = end - p;

    if (n == 0 || n > 3 || (n > 1 && p[0] == '0')) {
        return -1;
    }

    for ( /* void */ ; p < end; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }
        v = v * 10 + (*p - '0');
    }

    return v <= max ? v : -1;
}


static int
psd_cidr_parse_v4(unsigned char *addr, const char *p, const char *end)
{
    int          i, v;
    const char  *dot;

    for (i = 0; i < 4; i++) {
        dot = p;
        while (dot < end && *dot != '.') {
            dot++;
        }

        if ((i < 3) != (dot < end)) {
            return -1;
        }

        v = psd_cidr_dec(p, dot, 255);
        if (v < 0) {
            return -1;
        }

        addr[i] = (unsigned char) v;
        p = dot + 1;
    }

    return 0;
}


/*
 * accepts a superset of the canonical form (upper case, leading zeros, "::"
 * for a single group); the caller formats the result and compares, which
 * is simpler to get right than encoding every RFC 5952 rule in a parser
 */
static int
psd_cidr_parse_v6(unsigned char *addr, const char *p, const char *end)
{
    int           d;
    unsigned int  groups[8], n, gap, digits, v, i, k;

    n = 0;
    gap = 8;

    if (end - p >= 2 && p[0] == ':' && p[1] == ':') {
        gap = 0;
        p += 2;
        if (p == end) {
            goto done;
        }
    }

    for ( ;; ) {
        if (n == 8) {
            return -1;
        }

        v = 0;
        for (digits = 0; p < end && digits < 5; digits++, p++) {
            d = psd_cidr_hex((unsigned char) *p);
            if (d < 0) {
                break;
            }
            v = (v << 4) | (unsigned int) d;
        }

        if (digits == 0 || digits > 4) {
            return -1;
        }

        groups[n++] = v;

        if (p == end) {
            break;
        }

        if (*p++ != ':' || p == end) {
            return -1;
        }

        if (*p == ':') {
            if (gap != 8) {
                return -1;
            }
            gap = n;
            p++;
            if (p == end) {
                break;
            }
        }
    }

done:

    if (gap == 8 ? n != 8 : n > 7) {
        return -1;
    }

    memset(addr, 0, 16);

    for (i = 0; i < n; i++) {
        k = i < gap ? i : 8 - n + i;
        addr[2 * k] = (unsigned char) (groups[i] >> 8);
        addr[2 * k + 1] = (unsigned char) (groups[i] & 0xff);
    }

    return 0;
}


static size_t
psd_cidr_format_v6(char *buf, const unsigned char *addr)
{
    char          *p = buf;
    int            started, shift;
    unsigned int   g[8], i, start, best, best_len, d;

    static const char  hex[] = "0123456789abcdef";

    for (i = 0; i < 8; i++) {
        g[i] = ((unsigned int) addr[2 * i] << 8) | addr[2 * i + 1];
    }

    best = 8;
    best_len = 0;

    for (i = 0; i < 8; /* void */ ) {
        if (g[i] != 0) {
            i++;
            continue;
        }

        start = i;
        while (i < 8 && g[i] == 0) {
            i++;
        }

        if (i - start > best_len) {
            best = start;
            best_len = i - start;
        }
    }

    /* RFC 5952 4.2.2: "::" never stands for a single zero group */
    if (best_len < 2) {
        best = 8;
        best_len = 0;
    }

    for (i = 0; i < 8; i++) {
        if (i == best) {
            *p++ = ':';
            *p++ = ':';
            i += best_len - 1;
            continue;
        }

        if (i != 0 && i != best + best_len) {
            *p++ = ':';
        }

        started = 0;
        for (shift = 12; shift > 0; shift -= 4) {
            d = (g[i] >> shift) & 0x0f;
            if (d || started) {
                *p++ = hex[d];
                started = 1;
            }
        }
        *p++ = hex[g[i] & 0x0f];
    }

    return p - buf;
}


static int
psd_cidr_parse_addr(psd_ip_t *ip, const char *text, const char *end)
{
    char    canon[PSD_IP_TEXT_MAX];
    size_t  n;

    if (memchr(text, ':', end - text) == NULL) {
        ip->family = PSD_IP_V4;
        memset(ip->addr, 0, sizeof(ip->addr));
        return psd_cidr_parse_v4(ip->addr, text, end);
    }

    if (end - text > PSD_IP_TEXT_MAX) {
        return -1;
    }

    ip->family = PSD_IP_V6;

    if (psd_cidr_parse_v6(ip->addr, text, end) != 0) {
        return -1;
    }

    n = psd_cidr_format_v6(canon, ip->addr);

    if (n != (size_t) (end - text) || memcmp(canon, text, n) != 0) {
        return -1;
    }

    return 0;
}


int
psd_ip_parse(psd_ip_t *ip, const char *text, size_t len)
{
    if (psd_cidr_parse_addr(ip, text, text + len) != 0) {
        return -1;
    }

    if (ip->family == PSD_IP_V6
        && memcmp(ip->addr, psd_cidr_mapped_prefix, 12) == 0)
    {
        return -1;
    }

    return 0;
}


int
psd_cidr_parse(psd_cidr_t *cidr, const char *text, size_t len)
{
    int          prefix, max, i;
    const char  *slash, *end;

    end = text + len;
    slash = memchr(text, '/', len);

    if (psd_cidr_parse_addr(&cidr->net, text, slash ? slash : end) != 0) {
        return -1;
    }

    max = cidr->net.family == PSD_IP_V4 ? 32 : 128;

    if (slash == NULL) {
        prefix = max;

    } else {
        prefix = psd_cidr_dec(slash + 1, end, max);

        /* one spelling per block: the bare address is the full length */
        if (prefix < 0 || prefix == max) {
            return -1;
        }
    }

    cidr->prefix = (unsigned char) prefix;

    if (max == 128 && prefix >= 96
        && memcmp(cidr->net.addr, psd_cidr_mapped_prefix, 12) == 0)
    {
        return -1;
    }

    /* host bits set would make "10.0.0.1/8" and "10.0.0.0/8" both valid */
    for (i = prefix; i < max; i++) {
        if (cidr->net.addr[i / 8] & (0x80 >> (i % 8))) {
            return -1;
        }
    }

    return 0;
}


int
psd_ip_set(psd_ip_t *ip, const unsigned char *addr, size_t len)
{
    memset(ip->addr, 0, sizeof(ip->addr));

    if (len == 4) {
        ip->family = PSD_IP_V4;
        memcpy(ip->addr, addr, 4);
        return 0;
    }

    if (len != 16) {
        return -1;
    }

    /* a dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d */
    if (memcmp(addr, psd_cidr_mapped_prefix, 12) == 0) {
        ip->family = PSD_IP_V4;
        memcpy(ip->addr, addr + 12, 4);
        return 0;
    }

    ip->family = PSD_IP_V6;
    memcpy(ip->addr, addr, 16);

    return 0;
}


int
psd_cidr_match(const psd_cidr_t *cidr, const psd_ip_t *ip)
{
    unsigned int          bytes, bits, max, mask, family;
    const unsigned char  *a;

    a = ip->addr;
    family = ip->family;

    /* as psd_ip_set() would have it, for callers that filled ip themselves */
    if (family == PSD_IP_V6 && memcmp(a, psd_cidr_mapped_prefix, 12) == 0) {
        family = PSD_IP_V4;
        a += 12;
    }

    if (family != cidr->net.family) {
        return 0;
    }

    max = cidr->net.family == PSD_IP_V4 ? 32 : 128;
    bytes = cidr->prefix < max ? cidr->prefix : max;
    bits = bytes % 8;
    bytes /= 8;

    if (memcmp(a, cidr->net.addr, bytes) != 0) {
        return 0;
    }

    if (bits) {
        mask = (0xff00u >> bits) & 0xff;
        if (((a[bytes] ^ cidr->net.addr[bytes]) & mask) != 0) {
            return 0;
        }
    }

    return 1;
}


size_t
psd_ip_format(char *buf, const psd_ip_t *ip)
{
    int          i;
    char        *p = buf;
    unsigned     v;

    if (ip->family == PSD_IP_V6) {
        return psd_cidr_format_v6(buf, ip->addr);
    }

    for (i = 0; i < 4; i++) {
        if (i) {
            *p++ = '.';
        }

        v = ip->addr[i];
        if (v >= 100) {
            *p++ = (char) ('0' + v / 100);
        }
        if (v >= 10) {
            *p++ = (char) ('0' + v / 10 % 10);
        }
        *p++ = (char) ('0' + v % 10);
    }

    return p - buf;
}


size_t
psd_cidr_format(char *buf, const psd_cidr_t *cidr)
{
    char      *p;
    unsigned   v, max;

    p = buf + psd_ip_format(buf, &cidr->net);

    max = cidr->net.family == PSD_IP_V4 ? 32 : 128;
    v = cidr->prefix;

    if (v < max) {
        *p++ = '/';
        if (v >= 100) {
            *p++ = (char) ('0' + v / 100);
        }
        if (v >= 10) {
            *p++ = (char) ('0' + v / 10 % 10);
        }
        *p++ = (char) ('0' + v % 10);
    }

    return p - buf;
}
