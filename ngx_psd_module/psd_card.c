/*
 * Copyright (C) ngx_psd_module authors
 */

#include <string.h>
#include <time.h>

#include "psd_b64.h"
#include "psd_card.h"
#include "psd_crypto.h"


#define psd_is_digit(c)  ((unsigned char) ((c) - '0') <= 9)

/*
 * Cards are written in at most five groups (4-4-4-4-3); a span of more
 * groups is no card, and the cap keeps a body of "4 4 4 4 ..." cheap.
 */
#define PSD_SCAN_SPAN_GROUPS  6


static unsigned psd_prefix(const char *digits, size_t n);
static int psd_random_digits(char *out, size_t len);
static size_t psd_scan_sep(const unsigned char *p, const unsigned char *end,
    unsigned flags);
static const unsigned char *psd_scan_next_group(const unsigned char *p,
    const unsigned char *end, unsigned flags);
static int psd_scan_run(const unsigned char *start, const unsigned char *end,
    unsigned flags, psd_card_scan_t *m, const unsigned char *base);


static const char  *psd_brand_names[] = {
    "unknown",
    "visa",
    "mastercard",
    "amex",
    "discover",
    "jcb",
    "unionpay",
    "diners"
};


static const char  *psd_status_names[] = {
    "ok",
    "not_digits",
    "bad_length",
    "luhn_failed",
    "bad_format",
    "bad_month",
    "bad_year",
    "expired"
};


const char *
psd_card_brand_name(psd_card_brand_t brand)
{
    if ((size_t) brand >= sizeof(psd_brand_names) / sizeof(char *)) {
        return "unknown";
    }

    return psd_brand_names[brand];
}


const char *
psd_card_status_name(psd_card_status_t status)
{
    if ((size_t) status >= sizeof(psd_status_names) / sizeof(char *)) {
        return "invalid";
    }

    return psd_status_names[status];
}


int
psd_luhn_valid(const char *digits, size_t len)
{
    size_t    i;
    unsigned  sum, v, dbl;

    if (len == 0) {
        return 0;
    }

    sum = 0;
    dbl = 0;

    for (i = len; i-- > 0; /* void */) {
        if (!psd_is_digit(digits[i])) {
            return 0;
        }

        v = (unsigned) (digits[i] - '0');

        if (dbl) {
            v *= 2;
            if (v > 9) {
                v -= 9;
            }
        }

        sum += v;
        dbl ^= 1;
    }

    return sum % 10 == 0;
}


static unsigned
psd_prefix(const char *digits, size_t n)
{
    size_t    i;
    unsigned  v;

    v = 0;

    for (i = 0; i < n; i++) {
        v = v * 10 + (unsigned) (digits[i] - '0');
    }

    return v;
}


psd_card_brand_t
psd_card_brand(const char *digits, size_t len)
{
    unsigned  p2, p3, p4, p6;

    if (len < 6) {
        return PSD_BRAND_UNKNOWN;
    }

    p2 = psd_prefix(digits, 2);
    p3 = psd_prefix(digits, 3);
    p4 = psd_prefix(digits, 4);
    p6 = psd_prefix(digits, 6);

    /* the order matters where ranges nest: discover's 622126-622925 is
     * carved out of unionpay's 62 */

    if (digits[0] == '4') {
        return PSD_BRAND_VISA;
    }

    if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720)) {
        return PSD_BRAND_MASTERCARD;
    }

    if (p2 == 34 || p2 == 37) {
        return PSD_BRAND_AMEX;
    }

    if (p4 == 6011 || (p3 >= 644 && p3 <= 649) || p2 == 65
        || (p6 >= 622126 && p6 <= 622925))
    {
        return PSD_BRAND_DISCOVER;
    }

    if (p4 >= 3528 && p4 <= 3589) {
        return PSD_BRAND_JCB;
    }

    if (p2 == 62 || p2 == 81) {
        return PSD_BRAND_UNIONPAY;
    }

    if ((p3 >= 300 && p3 <= 305) || p2 == 36 || p2 == 38 || p2 == 39) {
        return PSD_BRAND_DINERS;
    }

    return PSD_BRAND_UNKNOWN;
}


int
psd_card_brand_len_ok(psd_card_brand_t brand, size_t len)
{
    if (len < PSD_PAN_MIN || len > PSD_PAN_MAX) {
        return 0;
    }

    switch (brand) {

    case PSD_BRAND_VISA:
        /* 13 for old cards, 19 for some debit ranges */
        return len == 13 || len == 16 || len == 19;

    case PSD_BRAND_MASTERCARD:
        return len == 16;

    case PSD_BRAND_AMEX:
        return len == 15;

    case PSD_BRAND_DISCOVER:
    case PSD_BRAND_JCB:
    case PSD_BRAND_UNIONPAY:
        return len >= 16;

    case PSD_BRAND_DINERS:
        /* 14 for the classic international cards, up to 19 elsewhere */
        return len >= 14;

    default:
        return 1;
    }
}


void
psd_card_wipe(psd_card_t *card)
{
    psd_cleanse(card, sizeof(psd_card_t));
}


psd_card_status_t
psd_card_parse(const char *in, size_t len, psd_card_t *card)
{
    size_t       i, n;
    const char  *p;

    memset(card, 0, sizeof(psd_card_t));

    n = 0;

    for (i = 0; i < len; i++) {
        p = &in[i];

        if (*p == ' ' || *p == '-') {
            continue;
        }

        if (!psd_is_digit(*p)) {
            card->status = PSD_CARD_NOT_DIGITS;
            goto failed;
        }

        /* keep counting past the buffer so that len tells the real size */
        if (n < PSD_PAN_MAX) {
            card->digits[n] = *p;
        }

        n++;
    }

    card->len = n;

    if (n < PSD_PAN_MIN || n > PSD_PAN_MAX) {
        card->status = PSD_CARD_BAD_LENGTH;
        goto failed;
    }

    card->brand = psd_card_brand(card->digits, n);

    if (!psd_card_brand_len_ok(card->brand, n)) {
        card->status = PSD_CARD_BAD_LENGTH;
        goto failed;
    }

    if (!psd_luhn_valid(card->digits, n)) {
        card->status = PSD_CARD_LUHN_FAILED;
        goto failed;
    }

    memcpy(card->first6, card->digits, 6);
    memcpy(card->last4, card->digits + n - 4, 4);

    card->status = PSD_CARD_OK;

    return PSD_CARD_OK;

failed:

    psd_cleanse(card->digits, sizeof(card->digits));

    return card->status;
}


static int
psd_random_digits(char *out, size_t len)
{
    size_t         i, k;
    unsigned char  rnd[32];

    i = 0;

    while (i < len) {
        if (psd_random_bytes(rnd, sizeof(rnd)) != 0) {
            return -1;
        }

        /* 250 = 25 * 10: rejecting 250..255 keeps every digit equally
         * likely */
        for (k = 0; k < sizeof(rnd) && i < len; k++) {
            if (rnd[k] < 250) {
                out[i++] = (char) ('0' + rnd[k] % 10);
            }
        }
    }

    psd_cleanse(rnd, sizeof(rnd));

    return 0;
}


int
psd_token_random(char *out)
{
    memcpy(out, PSD_TOKEN_PREFIX, PSD_TOKEN_PREFIX_LEN);

    return psd_random_base62(out + PSD_TOKEN_PREFIX_LEN,
                             PSD_TOKEN_RANDOM_CHARS);
}


int
psd_token_format(const psd_card_t *card, char *out)
{
    size_t  n;

    n = card->len;

    if (card->status != PSD_CARD_OK || n < PSD_PAN_MIN || n > PSD_PAN_MAX) {
        return -1;
    }

    memcpy(out, card->digits, 6);
    memcpy(out + n - 4, card->digits + n - 4, 4);

    if (psd_random_digits(out + 6, n - 10) != 0) {
        return -1;
    }

    /*
     * Doubling is a permutation of 0..9, so changing any one digit changes
     * the Luhn sum modulo 10: one step on the first middle digit is enough
     * to make a token that no card number can be.
     */
    if (psd_luhn_valid(out, n)) {
        out[6] = (char) ('0' + (out[6] - '0' + 1) % 10);
    }

    return 0;
}


psd_token_kind_t
psd_token_kind(const char *s, size_t len)
{
    size_t  i;
    char    c;

    if (len == PSD_TOKEN_LEN
        && memcmp(s, PSD_TOKEN_PREFIX, PSD_TOKEN_PREFIX_LEN) == 0)
    {
        for (i = PSD_TOKEN_PREFIX_LEN; i < len; i++) {
            c = s[i];

            if (!psd_is_digit(c)
                && !(c >= 'A' && c <= 'Z')
                && !(c >= 'a' && c <= 'z'))
            {
                return PSD_TOKEN_NONE;
            }
        }

        return PSD_TOKEN_RANDOM;
    }

    if (len < PSD_PAN_MIN || len > PSD_PAN_MAX) {
        return PSD_TOKEN_NONE;
    }

    for (i = 0; i < len; i++) {
        if (!psd_is_digit(s[i])) {
            return PSD_TOKEN_NONE;
        }
    }

    /* a token keeps the card's first six digits and length, so the brand
     * still fits its length */
    if (!psd_card_brand_len_ok(psd_card_brand(s, len), len)
        || psd_luhn_valid(s, len))
    {
        return PSD_TOKEN_NONE;
    }

    return PSD_TOKEN_FORMAT;
}


static int
fingerprint(const unsigned char *key, size_t key_len, psd_hmac_key_t *hkey,
    const psd_card_t *card, char *out)
{
    int                   rc;
    size_t                len;
    unsigned char         mac[PSD_SHA256_LEN];
    const unsigned char  *digits;

    if (card->status != PSD_CARD_OK
        || card->len < PSD_PAN_MIN || card->len > PSD_PAN_MAX)
    {
        return -1;
    }

    digits = (const unsigned char *) card->digits;
    len = card->len;

    rc = hkey ? psd_hmac_sha256_k(hkey, &digits, &len, 1, mac)
              : psd_hmac_sha256(key, key_len, digits, len, mac);

    if (rc == 0) {
        memcpy(out, PSD_FP_PREFIX, 3);
        (void) psd_b64url_encode(out + 3, mac, sizeof(mac));
    }

    psd_cleanse(mac, sizeof(mac));

    return rc == 0 ? 0 : -1;
}


int
psd_card_fingerprint(const unsigned char *key, size_t key_len,
    const psd_card_t *card, char *out)
{
    if (key_len < PSD_FP_KEY_MIN) {
        return -1;
    }

    return fingerprint(key, key_len, NULL, card, out);
}


int
psd_card_fingerprint_k(psd_hmac_key_t *key, const psd_card_t *card,
    char *out)
{
    return key ? fingerprint(NULL, 0, key, card, out) : -1;
}


static size_t
psd_scan_sep(const unsigned char *p, const unsigned char *end, unsigned flags)
{
    if (p >= end) {
        return 0;
    }

    if (*p == ' ' || *p == '-') {
        return 1;
    }

    if (flags & PSD_SCAN_FORM) {
        if (*p == '+') {
            return 1;
        }

        if (end - p >= 3 && p[0] == '%' && p[1] == '2' && p[2] == '0') {
            return 3;
        }
    }

    return 0;
}


/* p is just past a digit group: the next group of the same run, or NULL */
static const unsigned char *
psd_scan_next_group(const unsigned char *p, const unsigned char *end,
    unsigned flags)
{
    size_t  sep;

    sep = psd_scan_sep(p, end, flags);

    if (sep == 0 || (size_t) (end - p) <= sep || !psd_is_digit(p[sep])) {
        return NULL;
    }

    return p + sep;
}


/*
 * One run [start, end): digit groups joined by single separators.  The
 * whole run counts when it has 13..19 digits and passes Luhn.  Otherwise a
 * span of up to six whole consecutive groups counts when, besides Luhn,
 * its digits have a known brand and a length valid for it: that finds a
 * card followed by its CVV in one run but keeps false positives rare.
 * Each group starts at most one walk of at most six groups: linear time.
 */
static int
psd_scan_run(const unsigned char *start, const unsigned char *end,
    unsigned flags, psd_card_scan_t *m, const unsigned char *base)
{
    int                   found;
    char                  d[PSD_SCAN_MAX];
    size_t                n, k, glen;
    psd_card_brand_t      brand;
    const unsigned char  *g, *p, *q;

    found = 0;
    n = 0;

    /* group by group: the "%20" separator has digits of its own */
    for (p = start; p != NULL; p = psd_scan_next_group(q, end, flags)) {
        for (q = p; q < end && psd_is_digit(*q); q++) {
            if (n == PSD_SCAN_MAX) {
                n++;
                goto whole;
            }

            d[n++] = (char) *q;
        }
    }

whole:

    if (n >= PSD_SCAN_MIN && n <= PSD_SCAN_MAX && psd_luhn_valid(d, n)) {
        m->offset = (size_t) (start - base);
        m->len = (size_t) (end - start);
        m->ndigits = n;
        found = 1;
        goto done;
    }

    for (g = start; g != NULL; g = psd_scan_next_group(q, end, flags)) {

        /* no brand starts with 0, 1, 7 or 9: no walk from such a group */
        if (*g != '0' && *g != '1' && *g != '7' && *g != '9') {
            n = 0;
            p = g;
            brand = PSD_BRAND_UNKNOWN;

            for (k = 0; k < PSD_SCAN_SPAN_GROUPS; k++) {
                for (q = p; q < end && psd_is_digit(*q); q++) {
                    /* void */
                }

                glen = (size_t) (q - p);

                if (n + glen > PSD_SCAN_MAX) {
                    break;
                }

                memcpy(d + n, p, glen);
                n += glen;

                /* six digits fix the brand for every longer span */
                if (brand == PSD_BRAND_UNKNOWN && n >= 6) {
                    brand = psd_card_brand(d, n);

                    if (brand == PSD_BRAND_UNKNOWN) {
                        break;
                    }
                }

                if (n >= PSD_SCAN_MIN && psd_card_brand_len_ok(brand, n)
                    && psd_luhn_valid(d, n))
                {
                    m->offset = (size_t) (g - base);
                    m->len = (size_t) (q - g);
                    m->ndigits = n;
                    found = 1;
                    goto done;
                }

                p = psd_scan_next_group(q, end, flags);
                if (p == NULL) {
                    break;
                }
            }
        }

        /* the walk may have gone past the group at g: find its end */
        for (q = g; q < end && psd_is_digit(*q); q++) {
            /* void */
        }
    }

done:

    psd_cleanse(d, sizeof(d));

    return found;
}


int
psd_card_scan(const unsigned char *buf, size_t len, unsigned flags,
    psd_card_scan_t *m)
{
    const unsigned char  *p, *end, *start, *next;

    if (len == 0) {
        return 0;
    }

    p = buf;
    end = buf + len;

    while (p < end) {
        if (!psd_is_digit(*p)) {
            p++;
            continue;
        }

        start = p;

        for ( ;; ) {
            while (p < end && psd_is_digit(*p)) {
                p++;
            }

            next = psd_scan_next_group(p, end, flags);
            if (next == NULL) {
                break;
            }

            p = next;
        }

        if (psd_scan_run(start, p, flags, m, buf)) {
            return 1;
        }
    }

    return 0;
}


psd_card_status_t
psd_cvv_check(const char *s, size_t len, psd_card_brand_t brand)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (!psd_is_digit(s[i])) {
            return PSD_CARD_NOT_DIGITS;
        }
    }

    switch (brand) {

    case PSD_BRAND_UNKNOWN:
        return (len == 3 || len == 4) ? PSD_CARD_OK : PSD_CARD_BAD_LENGTH;

    case PSD_BRAND_AMEX:
        return len == 4 ? PSD_CARD_OK : PSD_CARD_BAD_LENGTH;

    default:
        return len == 3 ? PSD_CARD_OK : PSD_CARD_BAD_LENGTH;
    }
}


psd_card_status_t
psd_expiry_parse(const char *s, size_t len, int *month, int *year)
{
    size_t  i, ylen;
    int     m, y;

    /* MM, then "/" before YY or YYYY, or YY right after */
    if (len == 5 || len == 7) {
        if (s[2] != '/') {
            return PSD_CARD_BAD_FORMAT;
        }

        ylen = len - 3;

    } else if (len == 4) {
        ylen = 2;

    } else {
        return PSD_CARD_BAD_FORMAT;
    }

    for (i = 0; i < len; i++) {
        if (i == 2 && len != 4) {
            continue;
        }

        if (!psd_is_digit(s[i])) {
            return PSD_CARD_BAD_FORMAT;
        }
    }

    m = (s[0] - '0') * 10 + (s[1] - '0');
    y = (int) psd_prefix(s + len - ylen, ylen);

    if (m < 1 || m > 12) {
        return PSD_CARD_BAD_MONTH;
    }

    /* checked here: psd_expiry_check() would read "0030" as 2030 */
    if (ylen == 4 && (y < 2000 || y > 2099)) {
        return PSD_CARD_BAD_YEAR;
    }

    *month = m;
    *year = ylen == 2 ? 2000 + y : y;

    return PSD_CARD_OK;
}


psd_card_status_t
psd_expiry_check(int month, int year, time_t now)
{
    struct tm  tm;

    if (month < 1 || month > 12) {
        return PSD_CARD_BAD_MONTH;
    }

    if (year >= 0 && year <= 99) {
        year += 2000;
    }

    if (year < 2000 || year > 2099) {
        return PSD_CARD_BAD_YEAR;
    }

    /* fail closed: a time gmtime_r() cannot express expires everything */
    if (gmtime_r(&now, &tm) == NULL) {
        return PSD_CARD_EXPIRED;
    }

    if (year * 12 + month < (tm.tm_year + 1900) * 12 + tm.tm_mon + 1) {
        return PSD_CARD_EXPIRED;
    }

    return PSD_CARD_OK;
}
