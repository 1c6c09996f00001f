/*
 * Unit tests: PAN normalization, brands, Luhn, tokens, fingerprints, the
 * scanner, CVV and expiry.  Vectors come from t/vectors/cards.json
 * (PSD_VECTORS overrides the directory).
 */

#include <stdlib.h>

#include <jansson.h>

#include "tap.h"
#include "psd_card.h"
#include "psd_crypto.h"


static const char *
vectors_path(char *buf, size_t size, const char *name)
{
    const char  *dir;

    dir = getenv("PSD_VECTORS");
    snprintf(buf, size, "%s/%s", dir ? dir : "t/vectors", name);

    return buf;
}


static const char *
jstr(json_t *o, const char *key)
{
    json_t  *v;

    v = json_object_get(o, key);

    return json_is_string(v) ? json_string_value(v) : NULL;
}


static void
test_vectors(void)
{
    int           good;
    char          path[512];
    size_t        i;
    json_t       *root, *cases, *c;
    psd_card_t    card;
    json_error_t  err;
    const char   *in, *status, *brand, *digits, *note;

    root = json_load_file(vectors_path(path, sizeof(path), "cards.json"), 0,
                          &err);
    ok(root != NULL, "cards.json loads (%s)", root ? "ok" : err.text);
    if (root == NULL) {
        return;
    }

    cases = json_object_get(root, "cases");
    ok(json_array_size(cases) >= 100, "cards.json has %zu cases",
       json_array_size(cases));

    json_array_foreach(cases, i, c) {
        in = jstr(c, "input");
        status = jstr(c, "status");
        brand = jstr(c, "brand");
        note = jstr(c, "note");

        if (in == NULL || status == NULL || brand == NULL || note == NULL) {
            ok(0, "vector %zu is complete", i);
            continue;
        }

        psd_card_parse(in, strlen(in), &card);

        good = strcmp(psd_card_status_name(card.status), status) == 0
               && strcmp(psd_card_brand_name(card.brand), brand) == 0;

        ok(good, "vector %zu (%s): %s %s", i, note, status, brand);
        if (!good) {
            printf("#   got %s %s\n", psd_card_status_name(card.status),
                   psd_card_brand_name(card.brand));
        }

        digits = jstr(c, "digits");

        if (digits != NULL) {
            ok(card.len == strlen(digits)
               && strcmp(card.digits, digits) == 0
               && strcmp(card.first6, jstr(c, "first6")) == 0
               && strcmp(card.last4, jstr(c, "last4")) == 0,
               "vector %zu: digits, first6, last4", i);

        } else {
            ok(card.digits[0] == '\0' && card.first6[0] == '\0'
               && card.last4[0] == '\0',
               "vector %zu: nothing kept on failure", i);
        }

        psd_card_wipe(&card);
    }

    json_decref(root);
}


static void
test_luhn_brand(void)
{
    psd_card_t  card;

    ok(psd_luhn_valid("79927398713", 11), "luhn: classic example");
    ok(!psd_luhn_valid("79927398710", 11), "luhn: wrong check digit");
    ok(psd_luhn_valid("0", 1), "luhn: single zero");
    ok(!psd_luhn_valid("", 0), "luhn: empty is not valid");
    ok(!psd_luhn_valid("4242x42424242424", 16), "luhn: non-digit");

    is_int(psd_card_brand("42424", 5), PSD_BRAND_UNKNOWN,
           "brand needs six digits");
    is_str(psd_card_brand_name(PSD_BRAND_DINERS), "diners", "brand name");
    is_str(psd_card_brand_name((psd_card_brand_t) 99), "unknown",
           "brand name out of range");
    is_str(psd_card_status_name(PSD_CARD_LUHN_FAILED), "luhn_failed",
           "status name");

    ok(psd_card_brand_len_ok(PSD_BRAND_VISA, 13)
       && !psd_card_brand_len_ok(PSD_BRAND_VISA, 14)
       && psd_card_brand_len_ok(PSD_BRAND_VISA, 19), "visa lengths");
    ok(psd_card_brand_len_ok(PSD_BRAND_UNKNOWN, 12)
       && !psd_card_brand_len_ok(PSD_BRAND_UNKNOWN, 20)
       && !psd_card_brand_len_ok(PSD_BRAND_UNKNOWN, 11), "unknown lengths");

    /* a parse that fails keeps the length and brand for the message */
    is_int(psd_card_parse("3782822463100055", 16, &card),
           PSD_CARD_BAD_LENGTH, "amex with 16 digits");
    ok(card.len == 16 && card.brand == PSD_BRAND_AMEX
       && card.digits[0] == '\0', "bad length keeps len and brand only");

    is_int(psd_card_parse("4242424242424242424242", 22, &card),
           PSD_CARD_BAD_LENGTH, "22 digits");
    is_int(card.len, 22, "length counted past the buffer");

    is_int(psd_card_parse("4242 4242 4242 4242", 10, &card),
           PSD_CARD_BAD_LENGTH, "only len bytes are read");
}


static void
test_tokens(void)
{
    int          i, good, differ;
    char         t1[PSD_TOKEN_LEN + 1], t2[PSD_TOKEN_LEN + 1];
    char         f1[PSD_PAN_MAX + 1], f2[PSD_PAN_MAX + 1];
    size_t       k;
    psd_card_t   card;
    static const char  *pans[] = {
        "4242424242424242", "4222222222222", "4000000000000000006",
        "5555555555554444", "378282246310005", "6011111111111117",
        "3530111333300000", "30569309025904", "6200000000000005",
        "100000000008", "1000000000000000009"
    };

    memset(t1, 0, sizeof(t1));
    memset(t2, 0, sizeof(t2));

    is_int(psd_token_random(t1), 0, "random token");
    is_int(strlen(t1), 28, "random token length");
    ok(strncmp(t1, "tok_", 4) == 0, "random token prefix");
    ok(strspn(t1 + 4, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "abcdefghijklmnopqrstuvwxyz") == 24,
       "random token alphabet");
    is_int(psd_token_kind(t1, 28), PSD_TOKEN_RANDOM, "random token kind");
    psd_token_random(t2);
    ok(strcmp(t1, t2) != 0, "random tokens differ");

    is_int(psd_token_kind(t1, 27), PSD_TOKEN_NONE, "short token");
    t2[10] = '-';
    is_int(psd_token_kind(t2, 28), PSD_TOKEN_NONE, "token with '-'");
    is_int(psd_token_kind("TOK_abcdefghijklmnopqrstuvwx", 28),
           PSD_TOKEN_NONE, "prefix is case-sensitive");
    is_int(psd_token_kind("tok_abcdefghijklmnopqrstuvwx", 28),
           PSD_TOKEN_RANDOM, "any base62 body");
    is_int(psd_token_kind("4242424242424242", 16), PSD_TOKEN_NONE,
           "a card number is no token");
    is_int(psd_token_kind("4242424242424241", 16), PSD_TOKEN_FORMAT,
           "Luhn failure looks like a format token");
    is_int(psd_token_kind("3782822463100051", 16), PSD_TOKEN_NONE,
           "amex-looking 16 digits are no token");
    is_int(psd_token_kind("42424242421", 11), PSD_TOKEN_NONE, "11 digits");
    is_int(psd_token_kind("4242 4242 4242 4241", 19), PSD_TOKEN_NONE,
           "format tokens have no separators");

    for (k = 0; k < sizeof(pans) / sizeof(pans[0]); k++) {
        if (psd_card_parse(pans[k], strlen(pans[k]), &card) != PSD_CARD_OK) {
            ok(0, "format token test card %zu parses", k);
            continue;
        }

        good = 1;
        differ = 0;

        /* the middle is random: many draws, every one must hold */
        for (i = 0; i < 200; i++) {
            memset(f1, 0, sizeof(f1));

            if (psd_token_format(&card, f1) != 0
                || strlen(f1) != card.len
                || memcmp(f1, card.digits, 6) != 0
                || memcmp(f1 + card.len - 4, card.last4, 4) != 0
                || strspn(f1, "0123456789") != card.len
                || psd_luhn_valid(f1, card.len)
                || psd_token_kind(f1, card.len) != PSD_TOKEN_FORMAT)
            {
                good = 0;
                break;
            }

            if (i == 0) {
                memcpy(f2, f1, sizeof(f2));

            } else if (strcmp(f1, f2) != 0) {
                differ = 1;
            }
        }

        ok(good, "format token for %zu digits keeps first6/last4, fails "
           "Luhn", card.len);
        ok(differ, "format tokens for %zu digits are random", card.len);

        psd_card_wipe(&card);
    }

    psd_card_parse("4242424242424241", 16, &card);
    is_int(psd_token_format(&card, f1), -1, "no token for a bad card");
}


static void
test_fingerprint(void)
{
    char                  a[PSD_FP_LEN + 1], b[PSD_FP_LEN + 1];
    psd_card_t            c1, c2;
    const unsigned char  *k1, *k2;

    k1 = (const unsigned char *) "fingerprint-key-0123456789abcdef";
    k2 = (const unsigned char *) "fingerprint-key-0123456789abcdeF";

    memset(a, 0, sizeof(a));
    memset(b, 0, sizeof(b));

    psd_card_parse("4242424242424242", 16, &c1);
    psd_card_parse("4242 4242-4242 4242", 19, &c2);

    is_int(psd_card_fingerprint(k1, 32, &c1, a), 0, "fingerprint");
    is_str(a, "fp_h0dIt0XNvYut5RHpZndQ_eg7hL_kSSulNNNDWe5m4Ps",
           "fingerprint matches an independent HMAC-SHA256");
    is_int(strlen(a), PSD_FP_LEN, "fingerprint length");
    psd_card_fingerprint(k1, 32, &c2, b);
    is_str(b, a, "fingerprint is stable across spellings");
    psd_card_fingerprint(k1, 32, &c1, b);
    is_str(b, a, "fingerprint is stable across calls");
    psd_card_fingerprint(k2, 32, &c1, b);
    ok(strcmp(a, b) != 0, "another key, another fingerprint");

    {
        psd_hmac_key_t  *hk = psd_hmac_key_new(k1, 32);

        memset(b, 0, sizeof(b));
        is_int(psd_card_fingerprint_k(hk, &c1, b), 0, "prepared key");
        is_str(b, a, "a prepared key gives the same fingerprint");
        is_int(psd_card_fingerprint_k(NULL, &c1, b), -1, "no prepared key");
        psd_hmac_key_free(hk);
    }

    psd_card_parse("4111111111111111", 16, &c2);
    psd_card_fingerprint(k1, 32, &c2, b);
    is_str(b, "fp_Rr_zYzTFc_VVKRil_qqyhJHWny2S-mKc5buTnpZ2CkI",
           "another card, its own fingerprint");

    is_int(psd_card_fingerprint(k1, 15, &c1, b), -1, "short key refused");

    psd_card_parse("4242424242424241", 16, &c2);
    is_int(psd_card_fingerprint(k1, 32, &c2, b), -1,
           "no fingerprint for a bad card");

    psd_card_wipe(&c1);
    psd_card_wipe(&c2);
}


static int
scan(const char *s, unsigned flags, psd_card_scan_t *m)
{
    memset(m, 0, sizeof(psd_card_scan_t));

    return psd_card_scan((const unsigned char *) s, strlen(s), flags, m);
}


static void
test_scanner(void)
{
    char             *big;
    size_t            i, n;
    psd_card_scan_t   m;
    const char       *s;

    ok(scan("{\"note\":\"4242424242424242\"}", 0, &m)
       && m.offset == 9 && m.len == 16 && m.ndigits == 16,
       "scan: card in JSON");
    ok(scan("card 4242 4242 4242 4242 end", 0, &m)
       && m.offset == 5 && m.len == 19 && m.ndigits == 16,
       "scan: card split by spaces");
    ok(scan("x=4242-4242-4242-4242", 0, &m) && m.offset == 2 && m.len == 19,
       "scan: card split by dashes");
    ok(scan("amex 3782 822463 10005.", 0, &m) && m.ndigits == 15,
       "scan: amex grouping");
    ok(scan("pan4242424242424242x", 0, &m) && m.offset == 3,
       "scan: letters bound a run");
    ok(scan("-4242424242424242-", 0, &m) && m.offset == 1 && m.len == 16,
       "scan: outer separators are not part of the run");
    ok(scan("1234567812345670", 0, &m), "scan: unknown brand, whole run");
    ok(scan("4242424242424242 123", 0, &m) && m.offset == 0 && m.len == 16,
       "scan: card followed by a CVV in the same run");
    ok(scan("ref 12 4242 4242 4242 4242", 0, &m) && m.offset == 7
       && m.ndigits == 16, "scan: card preceded by a group");
    ok(scan("4222222222222", 0, &m) && m.ndigits == 13, "scan: 13 digits");
    ok(!scan("42 42 42 42 42 42 42 42 5", 0, &m),
       "scan: spans of more than six groups are no cards");
    ok(scan("4242 42 42 42 42 4242 5", 0, &m) && m.ndigits == 16,
       "scan: a span of six groups is");

    ok(!scan("4242424242424241", 0, &m), "scan: Luhn failure");
    ok(!scan("100000000008", 0, &m), "scan: 12 digits are too few");
    ok(!scan("order 12345678901234567890", 0, &m),
       "scan: 20-digit order number");
    ok(!scan("42424242424242420000", 0, &m),
       "scan: a card inside a longer run does not count");
    ok(!scan("4242424242424242424242424", 0, &m), "scan: 25 digits");
    ok(!scan("id 12345678-1234-1234-1234-123456789012", 0, &m),
       "scan: digit-only UUID");
    ok(!scan("id 550e8400-e29b-41d4-a716-446655440000", 0, &m),
       "scan: UUID");
    ok(!scan("tel +1 415-555-0100, +44 20 7946 0958", 0, &m),
       "scan: phone numbers");
    ok(!scan("4242  4242 4242 4242", 0, &m),
       "scan: a double space splits the run");
    ok(!scan("4242/4242/4242/4242", 0, &m), "scan: slashes split");
    ok(!scan("", 0, &m), "scan: empty");
    ok(!psd_card_scan(NULL, 0, 0, &m), "scan: NULL");
    ok(!scan("at 2024-06-15 12:30:00, 1 200.00 EUR", 0, &m),
       "scan: dates, times and amounts");

    ok(!scan("number=4242+4242+4242+4242", 0, &m),
       "scan: '+' is no separator by default");
    ok(scan("number=4242+4242+4242+4242", PSD_SCAN_FORM, &m)
       && m.offset == 7 && m.len == 19, "scan: form '+' separator");
    ok(scan("n=4242%204242%204242%204242&x", PSD_SCAN_FORM, &m)
       && m.offset == 2 && m.len == 25, "scan: form %%20 separator");
    ok(scan("n=12345678%2012345670", PSD_SCAN_FORM, &m) && m.ndigits == 16
       && m.len == 19, "scan: the digits of %%20 are no digits of the run");
    ok(!scan("n=4242%2B4242%2B4242%2B4242", PSD_SCAN_FORM, &m),
       "scan: other escapes split");

    s = "a=4242424242424242&b=5555555555554444";
    ok(scan(s, 0, &m) && m.offset == 2, "scan: first of two");
    n = m.offset + m.len;
    ok(psd_card_scan((const unsigned char *) s + n, strlen(s) - n, 0, &m)
       && n + m.offset == 21, "scan: the second, going on");

    /* linear time: long runs of groups and of digits, and no find */
    n = 1 << 20;
    big = malloc(n);
    if (big != NULL) {
        for (i = 0; i < n; i++) {
            big[i] = (i & 1) ? ' ' : '1';
        }
        ok(!psd_card_scan((unsigned char *) big, n, 0, &m),
           "scan: 1 MiB of one-digit groups");

        for (i = 0; i < n; i++) {
            big[i] = (char) ('0' + i % 10);
        }
        ok(!psd_card_scan((unsigned char *) big, n, 0, &m),
           "scan: 1 MiB of digits");

        memcpy(big + n - 17, " 4242424242424242", 17);
        big[n - 18] = 'x';
        ok(psd_card_scan((unsigned char *) big, n, 0, &m)
           && m.offset == n - 16, "scan: a card at the end of 1 MiB");
        free(big);
    }
}


static void
test_cvv_expiry(void)
{
    int  mo, yr;

    is_int(psd_cvv_check("123", 3, PSD_BRAND_VISA), PSD_CARD_OK, "cvv visa");
    is_int(psd_cvv_check("1234", 4, PSD_BRAND_VISA), PSD_CARD_BAD_LENGTH,
           "cvv visa 4 digits");
    is_int(psd_cvv_check("1234", 4, PSD_BRAND_AMEX), PSD_CARD_OK,
           "cvv amex 4 digits");
    is_int(psd_cvv_check("123", 3, PSD_BRAND_AMEX), PSD_CARD_BAD_LENGTH,
           "cvv amex 3 digits");
    is_int(psd_cvv_check("123", 3, PSD_BRAND_UNKNOWN), PSD_CARD_OK,
           "cvv unknown brand 3");
    is_int(psd_cvv_check("1234", 4, PSD_BRAND_UNKNOWN), PSD_CARD_OK,
           "cvv unknown brand 4");
    is_int(psd_cvv_check("12", 2, PSD_BRAND_UNKNOWN), PSD_CARD_BAD_LENGTH,
           "cvv 2 digits");
    is_int(psd_cvv_check("12345", 5, PSD_BRAND_UNKNOWN), PSD_CARD_BAD_LENGTH,
           "cvv 5 digits");
    is_int(psd_cvv_check("12a", 3, PSD_BRAND_VISA), PSD_CARD_NOT_DIGITS,
           "cvv letters");
    is_int(psd_cvv_check("", 0, PSD_BRAND_VISA), PSD_CARD_BAD_LENGTH,
           "cvv empty");

    mo = yr = 0;
    ok(psd_expiry_parse("12/30", 5, &mo, &yr) == PSD_CARD_OK
       && mo == 12 && yr == 2030, "expiry MM/YY");
    ok(psd_expiry_parse("01/2031", 7, &mo, &yr) == PSD_CARD_OK
       && mo == 1 && yr == 2031, "expiry MM/YYYY");
    ok(psd_expiry_parse("0930", 4, &mo, &yr) == PSD_CARD_OK
       && mo == 9 && yr == 2030, "expiry MMYY");
    is_int(psd_expiry_parse("13/30", 5, &mo, &yr), PSD_CARD_BAD_MONTH,
           "expiry month 13");
    is_int(psd_expiry_parse("00/30", 5, &mo, &yr), PSD_CARD_BAD_MONTH,
           "expiry month 0");
    is_int(psd_expiry_parse("1/30", 4, &mo, &yr), PSD_CARD_BAD_FORMAT,
           "expiry M/YY");
    is_int(psd_expiry_parse("12-30", 5, &mo, &yr), PSD_CARD_BAD_FORMAT,
           "expiry with a dash");
    is_int(psd_expiry_parse("12/300", 6, &mo, &yr), PSD_CARD_BAD_FORMAT,
           "expiry three-digit year");
    is_int(psd_expiry_parse("ab/cd", 5, &mo, &yr), PSD_CARD_BAD_FORMAT,
           "expiry letters");
    is_int(psd_expiry_parse("1230/", 5, &mo, &yr), PSD_CARD_BAD_FORMAT,
           "expiry slash misplaced");
    is_int(psd_expiry_parse("", 0, &mo, &yr), PSD_CARD_BAD_FORMAT,
           "expiry empty");
    is_int(psd_expiry_parse("12/0030", 7, &mo, &yr), PSD_CARD_BAD_YEAR,
           "expiry year 0030 is not 2030");
    is_int(psd_expiry_parse("12/2100", 7, &mo, &yr), PSD_CARD_BAD_YEAR,
           "expiry year 2100");

    /* 2025-06-15T00:00:00Z, 2025-06-30T23:59:59Z, 2025-07-01T00:00:00Z */
    is_int(psd_expiry_check(6, 2025, 1749945600), PSD_CARD_OK,
           "expiry this month");
    is_int(psd_expiry_check(6, 25, 1751327999), PSD_CARD_OK,
           "expiry last second of its month");
    is_int(psd_expiry_check(6, 25, 1751328000), PSD_CARD_EXPIRED,
           "expiry first second after");
    is_int(psd_expiry_check(5, 2025, 1749945600), PSD_CARD_EXPIRED,
           "expiry last month");
    is_int(psd_expiry_check(12, 24, 1749945600), PSD_CARD_EXPIRED,
           "expiry last year");
    is_int(psd_expiry_check(1, 2026, 1749945600), PSD_CARD_OK,
           "expiry next year");
    is_int(psd_expiry_check(13, 2026, 1749945600), PSD_CARD_BAD_MONTH,
           "expiry check month 13");
    is_int(psd_expiry_check(0, 2026, 1749945600), PSD_CARD_BAD_MONTH,
           "expiry check month 0");
    is_int(psd_expiry_check(6, 1999, 1749945600), PSD_CARD_BAD_YEAR,
           "expiry year 1999");
    is_int(psd_expiry_check(6, 2100, 1749945600), PSD_CARD_BAD_YEAR,
           "expiry year 2100");
    is_int(psd_expiry_check(6, 100, 1749945600), PSD_CARD_BAD_YEAR,
           "expiry year 100");
}


int
main(void)
{
    test_vectors();
    test_luhn_brand();
    test_tokens();
    test_fingerprint();
    test_scanner();
    test_cvv_expiry();

    return done_testing();
}
