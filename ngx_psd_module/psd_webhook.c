/*
 * Copyright (C) ngx_psd_module authors
 */

#include <stdio.h>
#include <string.h>

#include "psd_b64.h"
#include "psd_crypto.h"
#include "psd_webhook.h"


/* 18 digits cannot overflow int64_t, nor can now - t below */
#define TIMESTAMP_DIGITS  18

#define STANDARD_PREFIX   "whsec_"


typedef struct {
    const char  *key;
    size_t       key_len;
    const char  *value;
    size_t       value_len;
} item_t;


static int
is_visible(char c)
{
    return c > ' ' && c < 0x7f;
}


static int
is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}


static int
parse_timestamp(const char *s, size_t len, int64_t *t)
{
    size_t   i;
    int64_t  n = 0;

    if (len == 0 || len > TIMESTAMP_DIGITS) {
        return -1;
    }

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        n = n * 10 + (s[i] - '0');
    }

    *t = n;

    return 0;
}


static int
stale(int64_t t, int64_t now, int64_t tolerance)
{
    return (t > now ? t - now : now - t) > tolerance;
}


/*
 * The next "<key><sep><value>" item of a list separated by delim, at *p;
 * -1 when it is not one (empty, no separator, empty key or value, a key
 * outside [a-z0-9], a value byte outside visible ASCII), 0 at the end.
 */
static int
next_item(const char **p, const char *end, char delim, char sep,
    item_t *it)
{
    const char  *s = *p, *e;

    if (s == end) {
        return 0;
    }

    for (e = s; e < end && *e != delim; e++) { /* void */ }

    /* a delimiter must be followed by another item */
    *p = e < end ? e + 1 : e;
    if (e < end && *p == end) {
        return -1;
    }

    it->key = s;
    while (s < e && is_lower_alnum(*s)) {
        s++;
    }

    it->key_len = (size_t) (s - it->key);
    if (it->key_len == 0 || s == e || *s != sep) {
        return -1;
    }

    it->value = ++s;
    it->value_len = (size_t) (e - s);
    if (it->value_len == 0) {
        return -1;
    }

    while (s < e) {
        if (!is_visible(*s++)) {
            return -1;
        }
    }

    return 1;
}


static int
is_key(const item_t *it, const char *key)
{
    return it->key_len == strlen(key)
           && memcmp(it->key, key, it->key_len) == 0;
}


static void
hex(char *out, const unsigned char *in, size_t len)
{
    size_t  i;

    static const char  digits[] = "0123456789abcdef";

    for (i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
}


static int
is_hex64(const char *s, size_t len)
{
    size_t  i;

    if (len != PSD_WEBHOOK_STRIPE_SIG_LEN) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }

    return 1;
}


static int
stripe_mac(const unsigned char *secret, size_t secret_len, const char *t,
    size_t t_len, const unsigned char *body, size_t body_len, char *out)
{
    int                   rc;
    size_t                lens[3];
    unsigned char         mac[PSD_SHA256_LEN];
    const unsigned char  *pieces[3];

    pieces[0] = (const unsigned char *) t;
    lens[0] = t_len;
    pieces[1] = (const unsigned char *) ".";
    lens[1] = 1;
    pieces[2] = body;
    lens[2] = body_len;

    rc = psd_hmac_sha256_v(secret, secret_len, pieces, lens, 3, mac);
    if (rc == 0) {
        hex(out, mac, sizeof(mac));
    }

    psd_cleanse(mac, sizeof(mac));

    return rc;
}


static int
standard_mac(const unsigned char *key, size_t key_len, const char *id,
    size_t id_len, const char *ts, size_t ts_len, const unsigned char *body,
    size_t body_len, char *out)
{
    int                   rc;
    size_t                lens[5];
    unsigned char         mac[PSD_SHA256_LEN];
    const unsigned char  *pieces[5];

    pieces[0] = (const unsigned char *) id;
    lens[0] = id_len;
    pieces[1] = (const unsigned char *) ".";
    lens[1] = 1;
    pieces[2] = (const unsigned char *) ts;
    lens[2] = ts_len;
    pieces[3] = (const unsigned char *) ".";
    lens[3] = 1;
    pieces[4] = body;
    lens[4] = body_len;

    rc = psd_hmac_sha256_v(key, key_len, pieces, lens, 5, mac);
    if (rc == 0) {
        psd_b64_encode(out, mac, sizeof(mac));
    }

    psd_cleanse(mac, sizeof(mac));

    return rc;
}


static int
bad_arguments(const psd_webhook_secret_t *secrets, size_t n, int64_t now,
    int64_t tolerance)
{
    size_t  i;

    if (n == 0 || now < 0 || tolerance < 0) {
        return 1;
    }

    for (i = 0; i < n; i++) {
        if (secrets[i].data == NULL || secrets[i].len == 0) {
            return 1;
        }
    }

    return 0;
}


psd_webhook_status_e
psd_webhook_stripe_verify(const char *header, size_t header_len,
    const unsigned char *body, size_t body_len,
    const psd_webhook_secret_t *secrets, size_t nsecrets, int64_t now,
    int64_t tolerance)
{
    int                    rc;
    char                   expected[PSD_WEBHOOK_STRIPE_SIG_LEN];
    size_t                 i, nv1 = 0;
    int64_t                t = -1;
    item_t                 it, ts;
    const char            *p, *end;
    psd_webhook_status_e   status;

    if (bad_arguments(secrets, nsecrets, now, tolerance)) {
        return PSD_WEBHOOK_ERROR;
    }

    if (header == NULL) {
        return PSD_WEBHOOK_MISSING_HEADER;
    }

    p = header;
    end = header + header_len;

    if (p == end) {
        return PSD_WEBHOOK_MALFORMED_HEADER;
    }

    ts.value = NULL;
    ts.value_len = 0;

    while ((rc = next_item(&p, end, ',', '=', &it)) == 1) {

        if (is_key(&it, "t")) {
            if (t != -1
                || parse_timestamp(it.value, it.value_len, &t) != 0)
            {
                return PSD_WEBHOOK_MALFORMED_HEADER;
            }
            ts = it;

        } else if (is_key(&it, "v1")) {
            if (!is_hex64(it.value, it.value_len)) {
                return PSD_WEBHOOK_MALFORMED_HEADER;
            }
            nv1++;
        }
    }

    if (rc == -1 || t == -1) {
        return PSD_WEBHOOK_MALFORMED_HEADER;
    }

    /* cheap first: a replayed request costs no HMAC */
    if (stale(t, now, tolerance)) {
        return PSD_WEBHOOK_STALE_TIMESTAMP;
    }

    if (nv1 == 0) {
        return PSD_WEBHOOK_BAD_SIGNATURE;
    }

    status = PSD_WEBHOOK_BAD_SIGNATURE;

    for (i = 0; i < nsecrets && status == PSD_WEBHOOK_BAD_SIGNATURE; i++) {

        if (stripe_mac(secrets[i].data, secrets[i].len, ts.value,
                       ts.value_len, body, body_len, expected) != 0)
        {
            status = PSD_WEBHOOK_ERROR;
            break;
        }

        p = header;

        while (next_item(&p, end, ',', '=', &it) == 1) {
            if (is_key(&it, "v1")
                && psd_ct_equal(it.value, expected, sizeof(expected)))
            {
                status = PSD_WEBHOOK_OK;
                break;
            }
        }
    }

    /* the expected MAC of a forged body is itself a forgery: wipe it */
    psd_cleanse(expected, sizeof(expected));

    return status;
}


static int
valid_id(const char *id, size_t len)
{
    size_t  i;

    if (len == 0) {
        return 0;
    }

    /*
     * a '.' would let "a.1", "2", body sign the same content as "a", "1",
     * "2." body: the specification forbids it for that reason
     */
    for (i = 0; i < len; i++) {
        if (!is_visible(id[i]) || id[i] == '.') {
            return 0;
        }
    }

    return 1;
}


static int
is_b64_sig(const char *s, size_t len)
{
    unsigned char  raw[PSD_SHA256_LEN + 2];

    /* strict decoding: the one canonical spelling, so strings compare */
    return len == PSD_WEBHOOK_STANDARD_SIG_LEN
           && psd_b64_decode(raw, s, len) == PSD_SHA256_LEN;
}


psd_webhook_status_e
psd_webhook_standard_verify(const char *id, size_t id_len,
    const char *timestamp, size_t timestamp_len, const char *signature,
    size_t signature_len, const unsigned char *body, size_t body_len,
    const psd_webhook_secret_t *keys, size_t nkeys, int64_t now,
    int64_t tolerance)
{
    int                    rc;
    char                   expected[PSD_WEBHOOK_STANDARD_SIG_LEN];
    size_t                 i, nv1 = 0;
    int64_t                t;
    item_t                 it;
    const char            *p, *end;
    psd_webhook_status_e   status;

    if (bad_arguments(keys, nkeys, now, tolerance)) {
        return PSD_WEBHOOK_ERROR;
    }

    if (id == NULL || timestamp == NULL || signature == NULL) {
        return PSD_WEBHOOK_MISSING_HEADER;
    }

    if (!valid_id(id, id_len)
        || parse_timestamp(timestamp, timestamp_len, &t) != 0
        || signature_len == 0)
    {
        return PSD_WEBHOOK_MALFORMED_HEADER;
    }

    p = signature;
    end = signature + signature_len;

    while ((rc = next_item(&p, end, ' ', ',', &it)) == 1) {
        if (is_key(&it, "v1")) {
            if (!is_b64_sig(it.value, it.value_len)) {
                return PSD_WEBHOOK_MALFORMED_HEADER;
            }
            nv1++;
        }
    }

    if (rc == -1) {
        return PSD_WEBHOOK_MALFORMED_HEADER;
    }

    if (stale(t, now, tolerance)) {
        return PSD_WEBHOOK_STALE_TIMESTAMP;
    }

    if (nv1 == 0) {
        return PSD_WEBHOOK_BAD_SIGNATURE;
    }

    status = PSD_WEBHOOK_BAD_SIGNATURE;

    for (i = 0; i < nkeys && status == PSD_WEBHOOK_BAD_SIGNATURE; i++) {

        if (standard_mac(keys[i].data, keys[i].len, id, id_len,
                         timestamp, timestamp_len, body, body_len,
                         expected) != 0)
        {
            status = PSD_WEBHOOK_ERROR;
            break;
        }

        p = signature;

        while (next_item(&p, end, ' ', ',', &it) == 1) {
            if (is_key(&it, "v1")
                && psd_ct_equal(it.value, expected, sizeof(expected)))
            {
                status = PSD_WEBHOOK_OK;
                break;
            }
        }
    }

    psd_cleanse(expected, sizeof(expected));

    return status;
}


int
psd_webhook_standard_key(const char *secret, size_t len, unsigned char *key,
    size_t *key_len)
{
    long           n;
    size_t         plen = sizeof(STANDARD_PREFIX) - 1;
    unsigned char  raw[PSD_WEBHOOK_KEY_MAX + 2];

    if (len >= plen && memcmp(secret, STANDARD_PREFIX, plen) == 0) {
        secret += plen;
        len -= plen;
    }

    /* 88 characters decode to at most 66 bytes: raw has room for them */
    if (len == 0 || len > 4 * ((PSD_WEBHOOK_KEY_MAX + 2) / 3)) {
        return -1;
    }

    n = psd_b64_decode(raw, secret, len);

    if (n < PSD_WEBHOOK_KEY_MIN || n > PSD_WEBHOOK_KEY_MAX) {
        psd_cleanse(raw, sizeof(raw));
        return -1;
    }

    memcpy(key, raw, (size_t) n);
    *key_len = (size_t) n;

    psd_cleanse(raw, sizeof(raw));

    return 0;
}


const char *
psd_webhook_status_name(psd_webhook_status_e status)
{
    switch (status) {
    case PSD_WEBHOOK_OK:
        return "ok";
    case PSD_WEBHOOK_MISSING_HEADER:
        return "missing_header";
    case PSD_WEBHOOK_MALFORMED_HEADER:
        return "malformed_header";
    case PSD_WEBHOOK_STALE_TIMESTAMP:
        return "stale_timestamp";
    case PSD_WEBHOOK_BAD_SIGNATURE:
        return "bad_signature";
    case PSD_WEBHOOK_ERROR:
        return "error";
    }

    return "unknown";
}


/* the decimal digits of t >= 0, NUL-terminated; returns their number */
static size_t
decimal(int64_t t, char *buf)
{
    return (size_t) snprintf(buf, TIMESTAMP_DIGITS + 2, "%lld",
                             (long long) t);
}


int
psd_webhook_stripe_sign(const unsigned char *secret, size_t secret_len,
    int64_t t, const unsigned char *body, size_t body_len, char *out)
{
    char    ts[TIMESTAMP_DIGITS + 2];
    size_t  n;

    if (t < 0 || secret == NULL || secret_len == 0) {
        return -1;
    }

    n = decimal(t, ts);
    if (n > TIMESTAMP_DIGITS) {
        return -1;
    }

    return stripe_mac(secret, secret_len, ts, n, body, body_len, out);
}


int
psd_webhook_standard_sign(const unsigned char *key, size_t key_len,
    const char *id, size_t id_len, int64_t t, const unsigned char *body,
    size_t body_len, char *out)
{
    char    ts[TIMESTAMP_DIGITS + 2];
    size_t  n;

    if (t < 0 || key == NULL || key_len == 0 || !valid_id(id, id_len)) {
        return -1;
    }

    n = decimal(t, ts);
    if (n > TIMESTAMP_DIGITS) {
        return -1;
    }

    return standard_mac(key, key_len, id, id_len, ts, n, body, body_len,
                        out);
}


size_t
psd_webhook_stripe_header(const psd_webhook_secret_t *secrets, size_t n,
    int64_t t, const unsigned char *body, size_t body_len, char *buf,
    size_t size)
{
    char    *p;
    size_t   i;

    if (n == 0 || size < PSD_WEBHOOK_STRIPE_HEADER_LEN(n)) {
        return 0;
    }

    p = buf + snprintf(buf, size, "t=%lld", (long long) t);

    for (i = 0; i < n; i++) {
        memcpy(p, ",v1=", 4);
        p += 4;

        if (psd_webhook_stripe_sign(secrets[i].data, secrets[i].len, t, body,
                                    body_len, p) != 0)
        {
            buf[0] = '\0';
            return 0;
        }

        p += PSD_WEBHOOK_STRIPE_SIG_LEN;
    }

    *p = '\0';

    return (size_t) (p - buf);
}


size_t
psd_webhook_standard_header(const psd_webhook_secret_t *keys, size_t n,
    const char *id, size_t id_len, int64_t t, const unsigned char *body,
    size_t body_len, char *buf, size_t size)
{
    char    *p = buf;
    size_t   i;

    if (n == 0 || size < PSD_WEBHOOK_STANDARD_HEADER_LEN(n)) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (i) {
            *p++ = ' ';
        }

        memcpy(p, "v1,", 3);
        p += 3;

        if (psd_webhook_standard_sign(keys[i].data, keys[i].len, id, id_len,
                                      t, body, body_len, p) != 0)
        {
            buf[0] = '\0';
            return 0;
        }

        p += PSD_WEBHOOK_STANDARD_SIG_LEN;
    }

    *p = '\0';

    return (size_t) (p - buf);
}
