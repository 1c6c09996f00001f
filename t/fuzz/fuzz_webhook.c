/*
 * libFuzzer target: webhook signature verification.
 *
 * Input: one mode byte, then fields separated by '\n'.  Mode bit 0
 * selects the scheme: Stripe (header, body) or Standard Webhooks (id,
 * timestamp, signature, body; the first field also goes through
 * psd_webhook_standard_key()).  Missing fields are absent headers.
 * Besides "no crash", it checks that:
 *   - a status is always one of the enum's, with a name;
 *   - an accepted request is refused once its body changes;
 *   - headers the signing helpers build from the input verify (or are
 *     stale exactly when the timestamp is out of tolerance), and do not
 *     verify with a secret that did not sign them.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psd_webhook.h"


#define NOW  1700000000

/* the corpus signs with these (t/fuzz/corpus/webhook) */
static const psd_webhook_secret_t  stripe_secrets[] = {
    { (const unsigned char *) "whsec_fuzz_one", 14 },
    { (const unsigned char *) "whsec_fuzz_two", 14 }
};

static const unsigned char  key_one[24] = "fuzz standard key one..";
static const unsigned char  key_two[32] = "fuzz standard key two..........";

static const psd_webhook_secret_t  standard_keys[] = {
    { key_one, sizeof(key_one) },
    { key_two, sizeof(key_two) }
};

static const psd_webhook_secret_t  stranger[] = {
    { (const unsigned char *) "whsec_stranger", 14 }
};


typedef struct {
    const char  *p;
    size_t       len;
} field_t;


static size_t
split(const uint8_t *data, size_t size, field_t *f, size_t n)
{
    size_t       i = 0;
    const char  *p = (const char *) data, *end = p + size, *nl;

    while (i < n) {
        f[i].p = p;

        /* the last field takes the rest, newlines and all */
        nl = i + 1 < n ? memchr(p, '\n', (size_t) (end - p)) : NULL;
        f[i].len = nl ? (size_t) (nl - p) : (size_t) (end - p);
        i++;

        if (nl == NULL) {
            break;
        }
        p = nl + 1;
    }

    return i;
}


static void
check(psd_webhook_status_e st)
{
    if (st > PSD_WEBHOOK_ERROR
        || strcmp(psd_webhook_status_name(st), "unknown") == 0)
    {
        abort();
    }
}


/* a copy of body with one more byte, in buf of body_len + 1 bytes */
static unsigned char *
tamper(const char *body, size_t body_len, unsigned char *buf)
{
    memcpy(buf, body, body_len);
    buf[body_len] = 'x';

    return buf;
}


static void
fuzz_stripe(const uint8_t *data, size_t size, int64_t t)
{
    char                  hdr[PSD_WEBHOOK_STRIPE_HEADER_LEN(2)];
    size_t                n, hlen;
    field_t               f[2];
    unsigned char        *copy;
    psd_webhook_status_e  st, want;

    n = split(data, size, f, 2);
    if (n < 2) {
        f[1].p = "";
        f[1].len = 0;
    }

    /* an empty input is an absent header */
    st = psd_webhook_stripe_verify(size ? f[0].p : NULL, f[0].len,
                                   (const unsigned char *) f[1].p, f[1].len,
                                   stripe_secrets, 2, NOW,
                                   PSD_WEBHOOK_TOLERANCE);
    check(st);

    copy = malloc(f[1].len + 1);
    if (copy == NULL) {
        return;
    }

    if (st == PSD_WEBHOOK_OK
        && psd_webhook_stripe_verify(f[0].p, f[0].len,
                                     tamper(f[1].p, f[1].len, copy),
                                     f[1].len + 1, stripe_secrets, 2, NOW,
                                     PSD_WEBHOOK_TOLERANCE)
           == PSD_WEBHOOK_OK)
    {
        abort();
    }

    /* the second secret alone signs; the first and second verify */
    hlen = psd_webhook_stripe_header(stripe_secrets + 1, 1, t,
                                     (const unsigned char *) f[1].p,
                                     f[1].len, hdr, sizeof(hdr));
    if (hlen == 0 || hlen != strlen(hdr)) {
        abort();
    }

    want = (t > NOW ? t - NOW : NOW - t) > PSD_WEBHOOK_TOLERANCE
           ? PSD_WEBHOOK_STALE_TIMESTAMP : PSD_WEBHOOK_OK;

    if (psd_webhook_stripe_verify(hdr, hlen, (const unsigned char *) f[1].p,
                                  f[1].len, stripe_secrets, 2, NOW,
                                  PSD_WEBHOOK_TOLERANCE) != want)
    {
        abort();
    }

    if (want == PSD_WEBHOOK_OK
        && (psd_webhook_stripe_verify(hdr, hlen,
                                      (const unsigned char *) f[1].p,
                                      f[1].len, stranger, 1, NOW,
                                      PSD_WEBHOOK_TOLERANCE)
            != PSD_WEBHOOK_BAD_SIGNATURE
            || psd_webhook_stripe_verify(hdr, hlen,
                                         tamper(f[1].p, f[1].len, copy),
                                         f[1].len + 1, stripe_secrets, 2,
                                         NOW, PSD_WEBHOOK_TOLERANCE)
               != PSD_WEBHOOK_BAD_SIGNATURE))
    {
        abort();
    }

    free(copy);
}


static void
fuzz_standard(const uint8_t *data, size_t size, int64_t t)
{
    char                  sig[PSD_WEBHOOK_STANDARD_HEADER_LEN(2)];
    char                  ts[24];
    size_t                n, slen, klen;
    field_t               f[4];
    unsigned char         key[PSD_WEBHOOK_KEY_MAX], *copy;
    psd_webhook_status_e  st, want;

    /* fields the input lacks are absent headers; the body is then empty */
    n = split(data, size, f, 4);
    while (n < 4) {
        f[n].p = n == 3 ? "" : NULL;
        f[n].len = 0;
        n++;
    }

    if (f[0].p == NULL || f[1].p == NULL || f[2].p == NULL) {
        check(psd_webhook_standard_verify(f[0].p, f[0].len, f[1].p,
                                          f[1].len, f[2].p, f[2].len, NULL,
                                          0, standard_keys, 2, NOW,
                                          PSD_WEBHOOK_TOLERANCE));
        return;
    }

    if (psd_webhook_standard_key(f[0].p, f[0].len, key, &klen) == 0
        && (klen < PSD_WEBHOOK_KEY_MIN || klen > PSD_WEBHOOK_KEY_MAX))
    {
        abort();
    }

    st = psd_webhook_standard_verify(f[0].p, f[0].len, f[1].p, f[1].len,
                                     f[2].p, f[2].len,
                                     (const unsigned char *) f[3].p,
                                     f[3].len, standard_keys, 2, NOW,
                                     PSD_WEBHOOK_TOLERANCE);
    check(st);

    copy = malloc(f[3].len + 1);
    if (copy == NULL) {
        return;
    }

    if (st == PSD_WEBHOOK_OK
        && psd_webhook_standard_verify(f[0].p, f[0].len, f[1].p, f[1].len,
                                       f[2].p, f[2].len,
                                       tamper(f[3].p, f[3].len, copy),
                                       f[3].len + 1, standard_keys, 2, NOW,
                                       PSD_WEBHOOK_TOLERANCE)
           == PSD_WEBHOOK_OK)
    {
        abort();
    }

    /* sign the input's id and body; ids with '.' or blanks are refused */
    slen = psd_webhook_standard_header(standard_keys, 2, f[0].p, f[0].len,
                                       t, (const unsigned char *) f[3].p,
                                       f[3].len, sig, sizeof(sig));
    if (slen == 0) {
        free(copy);
        return;
    }

    snprintf(ts, sizeof(ts), "%lld", (long long) t);

    want = (t > NOW ? t - NOW : NOW - t) > PSD_WEBHOOK_TOLERANCE
           ? PSD_WEBHOOK_STALE_TIMESTAMP : PSD_WEBHOOK_OK;

    if (psd_webhook_standard_verify(f[0].p, f[0].len, ts, strlen(ts), sig,
                                    slen, (const unsigned char *) f[3].p,
                                    f[3].len, standard_keys + 1, 1, NOW,
                                    PSD_WEBHOOK_TOLERANCE) != want)
    {
        abort();
    }

    if (want == PSD_WEBHOOK_OK
        && psd_webhook_standard_verify(f[0].p, f[0].len, ts, strlen(ts),
                                       sig, slen,
                                       (const unsigned char *) f[3].p,
                                       f[3].len, stranger, 1, NOW,
                                       PSD_WEBHOOK_TOLERANCE)
           != PSD_WEBHOOK_BAD_SIGNATURE)
    {
        abort();
    }

    free(copy);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t  t;

    if (size < 1) {
        return 0;
    }

    /* the mode byte also picks a timestamp around the tolerance edges */
    t = NOW + ((int64_t) (data[0] >> 1) - 64) * 5;

    if (data[0] & 1) {
        fuzz_standard(data + 1, size - 1, t);

    } else {
        fuzz_stripe(data + 1, size - 1, t);
    }

    return 0;
}
