/*
 * libFuzzer target: psd_card_parse(), tokens, fingerprints, the scanner,
 * CVV and expiry parsing, and psd_vault_open() on hostile envelopes.
 *
 * Invariants checked (abort() on violation):
 *  - a parsed card is 12..19 digits of a length its brand allows, passes
 *    Luhn, and a failed parse keeps no digits;
 *  - format-preserving tokens keep first6/last4, fail Luhn and are
 *    recognized; random tokens are recognized;
 *  - the scanner finds exactly what a plain reference (runs split first,
 *    then every span of up to six groups tried) finds, with and without
 *    PSD_SCAN_FORM, for every find in the buffer;
 *  - no envelope made of fuzz bytes opens.
 *
 * Build: see docs/tokenization-internals.md.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psd_card.h"
#include "psd_vault.h"


static void
die(const char *what)
{
    fprintf(stderr, "fuzz_card: invariant broken: %s\n", what);
    abort();
}


static int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}


static size_t
sep_at(const uint8_t *b, size_t len, size_t i, unsigned flags)
{
    if (i >= len) {
        return 0;
    }
    if (b[i] == ' ' || b[i] == '-') {
        return 1;
    }
    if ((flags & PSD_SCAN_FORM) && b[i] == '+') {
        return 1;
    }
    if ((flags & PSD_SCAN_FORM) && i + 3 <= len && b[i] == '%'
        && b[i + 1] == '2' && b[i + 2] == '0')
    {
        return 3;
    }
    return 0;
}


/* the reference: split runs into groups, then try spans exhaustively */
static int
ref_scan(const uint8_t *b, size_t len, unsigned flags, psd_card_scan_t *m,
    size_t *gs, size_t *ge)
{
    char              d[64];
    size_t            i, j, s, ng, a, z, k, n;
    psd_card_brand_t  brand;

    i = 0;

    while (i < len) {
        if (!is_digit(b[i])) {
            i++;
            continue;
        }

        ng = 0;
        j = i;

        for ( ;; ) {
            gs[ng] = j;
            while (j < len && is_digit(b[j])) {
                j++;
            }
            ge[ng++] = j;

            s = sep_at(b, len, j, flags);
            if (s == 0 || j + s >= len || !is_digit(b[j + s])) {
                break;
            }
            j += s;
        }

        /* the whole run */
        n = 0;
        for (k = 0; k < ng; k++) {
            n += ge[k] - gs[k];
        }

        if (n >= 13 && n <= 19) {
            for (k = 0, n = 0; k < ng; k++) {
                memcpy(d + n, b + gs[k], ge[k] - gs[k]);
                n += ge[k] - gs[k];
            }

            if (psd_luhn_valid(d, n)) {
                m->offset = gs[0];
                m->len = ge[ng - 1] - gs[0];
                m->ndigits = n;
                return 1;
            }
        }

        for (a = 0; a < ng; a++) {
            for (z = a, n = 0; z < ng && z - a < 6; z++) {
                n += ge[z] - gs[z];
                if (n > 19) {
                    break;
                }
                if (n < 13) {
                    continue;
                }
                for (k = a, n = 0; k <= z; k++) {
                    memcpy(d + n, b + gs[k], ge[k] - gs[k]);
                    n += ge[k] - gs[k];
                }
                brand = psd_card_brand(d, n);
                if (brand != PSD_BRAND_UNKNOWN
                    && psd_card_brand_len_ok(brand, n)
                    && psd_luhn_valid(d, n))
                {
                    m->offset = gs[a];
                    m->len = ge[z] - gs[a];
                    m->ndigits = n;
                    return 1;
                }
            }
        }

        i = j;
    }

    return 0;
}


static void
check_scanner(const uint8_t *data, size_t size, unsigned flags)
{
    int              f1, f2;
    char             d[PSD_SCAN_MAX];
    size_t           pos, i, k, n, *gs, *ge;
    psd_card_scan_t  m1, m2;

    gs = malloc((size + 1) * sizeof(size_t));
    ge = malloc((size + 1) * sizeof(size_t));

    pos = 0;

    for ( ;; ) {
        f1 = psd_card_scan(data + pos, size - pos, flags, &m1);
        f2 = ref_scan(data + pos, size - pos, flags, &m2, gs, ge);

        if (f1 != f2) {
            die("scanner and reference disagree on a find");
        }

        if (!f1) {
            break;
        }

        if (m1.offset != m2.offset || m1.len != m2.len
            || m1.ndigits != m2.ndigits)
        {
            die("scanner and reference disagree on where");
        }

        if (m1.len == 0 || m1.offset + m1.len > size - pos
            || m1.ndigits < PSD_SCAN_MIN || m1.ndigits > PSD_SCAN_MAX)
        {
            die("scan range");
        }

        /* "%20" holds digits: step over separators, not into them */
        for (i = 0, n = 0; i < m1.len; /* void */) {
            if (is_digit(data[pos + m1.offset + i])) {
                if (n == PSD_SCAN_MAX) {
                    die("scan digits");
                }
                d[n++] = (char) data[pos + m1.offset + i++];
                continue;
            }

            k = sep_at(data + pos + m1.offset, m1.len, i, flags);
            if (k == 0) {
                die("scan range holds a non-separator");
            }
            i += k;
        }

        if (n != m1.ndigits || !psd_luhn_valid(d, n)) {
            die("scan find is no card");
        }

        pos += m1.offset + m1.len;
    }

    free(gs);
    free(ge);
}


static int
vault_lookup(void *data, const char *kid, size_t kid_len,
    const unsigned char **key, size_t *key_len)
{
    *key = data;
    *key_len = 32;

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                 mo, yr;
    char                tok[PSD_TOKEN_LEN], fmt[PSD_PAN_MAX], fp[PSD_FP_LEN];
    long                n;
    size_t              i;
    psd_card_t          card;
    unsigned char       out[64];
    psd_card_status_t   st;

    st = psd_card_parse((const char *) data, size, &card);

    if (st != card.status) {
        die("status");
    }

    if (st == PSD_CARD_OK) {
        if (card.len < PSD_PAN_MIN || card.len > PSD_PAN_MAX
            || strlen(card.digits) != card.len
            || strspn(card.digits, "0123456789") != card.len
            || !psd_luhn_valid(card.digits, card.len)
            || !psd_card_brand_len_ok(card.brand, card.len)
            || card.brand != psd_card_brand(card.digits, card.len)
            || memcmp(card.first6, card.digits, 6) != 0
            || memcmp(card.last4, card.digits + card.len - 4, 4) != 0
            || psd_token_kind(card.digits, card.len) != PSD_TOKEN_NONE)
        {
            die("parsed card");
        }

        if (psd_token_format(&card, fmt) != 0
            || memcmp(fmt, card.digits, 6) != 0
            || memcmp(fmt + card.len - 4, card.last4, 4) != 0
            || psd_luhn_valid(fmt, card.len)
            || psd_token_kind(fmt, card.len) != PSD_TOKEN_FORMAT)
        {
            die("format token");
        }

        if (psd_card_fingerprint((const unsigned char *) "fuzz key, 16+ b",
                                 16, &card, fp)
            != 0 || memcmp(fp, "fp_", 3) != 0)
        {
            die("fingerprint");
        }

    } else {
        for (i = 0; i < sizeof(card.digits); i++) {
            if (card.digits[i] != '\0') {
                die("digits kept after a failed parse");
            }
        }
    }

    psd_card_wipe(&card);

    if (psd_token_random(tok) != 0
        || psd_token_kind(tok, PSD_TOKEN_LEN) != PSD_TOKEN_RANDOM)
    {
        die("random token");
    }

    (void) psd_token_kind((const char *) data, size);

    if (size <= 4096) {
        check_scanner(data, size, 0);
        check_scanner(data, size, PSD_SCAN_FORM);
    }

    (void) psd_cvv_check((const char *) data, size, PSD_BRAND_AMEX);

    mo = yr = 0;
    if (psd_expiry_parse((const char *) data, size, &mo, &yr) == PSD_CARD_OK
        && (mo < 1 || mo > 12 || yr < 2000 || yr > 2099))
    {
        die("expiry");
    }

    (void) psd_expiry_check(mo, yr, (time_t) size * 86400 * 31);

    n = psd_vault_open(vault_lookup,
                       (void *) "0123456789abcdef0123456789abcdef",
                       (const unsigned char *) "tok", 3, (const char *) data,
                       size, out, sizeof(out));
    if (n >= 0) {
        die("a fuzzed envelope opened");
    }

    n = psd_vault_envelope_kid((const char *) data, size, (char *) out);
    if (n > PSD_VAULT_KID_MAX) {
        die("kid length");
    }

    return 0;
}
