/*
 * Copyright (C) ngx_psd_module authors
 */

#include "psd_b64.h"


static const char  b64url_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
static const char  b64_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


static size_t
b64_encode(char *dst, const unsigned char *src, size_t len,
    const char *alphabet, int pad)
{
    char    *d = dst;
    size_t   i;

    for (i = 0; i + 2 < len; i += 3) {
        *d++ = alphabet[src[i] >> 2];
        *d++ = alphabet[((src[i] & 0x03) << 4) | (src[i + 1] >> 4)];
        *d++ = alphabet[((src[i + 1] & 0x0f) << 2) | (src[i + 2] >> 6)];
        *d++ = alphabet[src[i + 2] & 0x3f];
    }

    if (len - i == 1) {
        *d++ = alphabet[src[i] >> 2];
        *d++ = alphabet[(src[i] & 0x03) << 4];
        if (pad) {
            *d++ = '=';
            *d++ = '=';
        }

    } else if (len - i == 2) {
        *d++ = alphabet[src[i] >> 2];
        *d++ = alphabet[((src[i] & 0x03) << 4) | (src[i + 1] >> 4)];
        *d++ = alphabet[(src[i + 1] & 0x0f) << 2];
        if (pad) {
            *d++ = '=';
        }
    }

    return d - dst;
}


static int
b64_value(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == (url ? '-' : '+')) {
        return 62;
    }
    if (c == (url ? '_' : '/')) {
        return 63;
    }
    return -1;
}


static long
b64_decode(unsigned char *dst, const char *src, size_t len, int url)
{
    int             v[4];
    size_t          i, k, rest;
    unsigned char  *d = dst;

    if (len % 4 == 1) {
        return -1;
    }

    for (i = 0; i < len; i += 4) {
        rest = len - i < 4 ? len - i : 4;

        for (k = 0; k < rest; k++) {
            v[k] = b64_value((unsigned char) src[i + k], url);
            if (v[k] < 0) {
                return -1;
            }
        }

        *d++ = (unsigned char) ((v[0] << 2) | (v[1] >> 4));

        if (rest == 2) {
            if (v[1] & 0x0f) {
                return -1;
            }
            break;
        }

        *d++ = (unsigned char) (((v[1] & 0x0f) << 4) | (v[2] >> 2));

        if (rest == 3) {
            if (v[2] & 0x03) {
                return -1;
            }
            break;
        }

        *d++ = (unsigned char) (((v[2] & 0x03) << 6) | v[3]);
    }

    return d - dst;
}


size_t
psd_b64url_encode(char *dst, const unsigned char *src, size_t len)
{
    return b64_encode(dst, src, len, b64url_chars, 0);
}


long
psd_b64url_decode(unsigned char *dst, const char *src, size_t len)
{
    return b64_decode(dst, src, len, 1);
}


size_t
psd_b64_encode(char *dst, const unsigned char *src, size_t len)
{
    return b64_encode(dst, src, len, b64_chars, 1);
}


long
psd_b64_decode(unsigned char *dst, const char *src, size_t len)
{
    size_t  pad = 0;

    if (len % 4 != 0) {
        return -1;
    }

    while (pad < 2 && len > pad && src[len - 1 - pad] == '=') {
        pad++;
    }

    return b64_decode(dst, src, len - pad, 0);
}
