/*
 * Copyright (C) ngx_psd_module authors
 *
 * Webhook signature verification for payment gateways: Stripe's
 * "Stripe-Signature" header and Standard Webhooks ("webhook-id",
 * "webhook-timestamp", "webhook-signature").  Both are HMAC-SHA256 with a
 * shared secret; several secrets may be configured while one is rotated.
 * Header values and the raw body come as (pointer, length), NULL for an
 * absent header; "now" is passed in.  No allocation.  nginx-free.
 */

#ifndef PSD_WEBHOOK_H
#define PSD_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

/* seconds a timestamp may differ from now, either way, by default */
#define PSD_WEBHOOK_TOLERANCE           300

/* Stripe: lowercase hex; Standard Webhooks: padded base64 */
#define PSD_WEBHOOK_STRIPE_SIG_LEN      64
#define PSD_WEBHOOK_STANDARD_SIG_LEN    44

/* Standard Webhooks keys: 24 to 64 bytes, as its specification asks */
#define PSD_WEBHOOK_KEY_MIN             24
#define PSD_WEBHOOK_KEY_MAX             64

/* room for a header psd_webhook_*_header() builds for n secrets */
#define PSD_WEBHOOK_STRIPE_HEADER_LEN(n)    (24 + (n) * 68)
#define PSD_WEBHOOK_STANDARD_HEADER_LEN(n)  ((n) * 48)


typedef enum {
    PSD_WEBHOOK_OK = 0,
    PSD_WEBHOOK_MISSING_HEADER,
    PSD_WEBHOOK_MALFORMED_HEADER,
    PSD_WEBHOOK_STALE_TIMESTAMP,
    PSD_WEBHOOK_BAD_SIGNATURE,
    PSD_WEBHOOK_ERROR               /* bad arguments or libcrypto failed */
} psd_webhook_status_e;


typedef struct {
    const unsigned char  *data;
    size_t                len;
} psd_webhook_secret_t;


/*
 * Stripe-Signature: "t=<unix time>,v1=<hex>[,v1=<hex>...]", other schemes
 * (v0) ignored.  Each secret is the whole "whsec_..." string.  Checks, in
 * this order: syntax, |now - t| <= tolerance, then any v1 against any
 * secret in constant time.  A header without v1 is a bad signature.
 */
psd_webhook_status_e psd_webhook_stripe_verify(const char *header,
    size_t header_len, const unsigned char *body, size_t body_len,
    const psd_webhook_secret_t *secrets, size_t nsecrets, int64_t now,
    int64_t tolerance);

/*
 * Standard Webhooks: id (visible ASCII, no '.'), timestamp (decimal),
 * signature "v1,<base64> [v1,<base64>...]" (single spaces, other versions
 * such as v1a ignored); keys are decoded with psd_webhook_standard_key().
 * Same checks and order as Stripe's.
 */
psd_webhook_status_e psd_webhook_standard_verify(const char *id,
    size_t id_len, const char *timestamp, size_t timestamp_len,
    const char *signature, size_t signature_len, const unsigned char *body,
    size_t body_len, const psd_webhook_secret_t *keys, size_t nkeys,
    int64_t now, int64_t tolerance);

/*
 * A Standard Webhooks secret, "whsec_<base64>" or the bare base64, into
 * its key (room for PSD_WEBHOOK_KEY_MAX bytes).  0, or -1 if it is not
 * strict padded base64 of PSD_WEBHOOK_KEY_MIN to _MAX bytes.
 */
int psd_webhook_standard_key(const char *secret, size_t len,
    unsigned char *key, size_t *key_len);

/* "ok", "missing_header", "malformed_header", ... */
const char *psd_webhook_status_name(psd_webhook_status_e status);

/* one v1 signature, PSD_WEBHOOK_STRIPE_SIG_LEN hex digits, no NUL */
int psd_webhook_stripe_sign(const unsigned char *secret, size_t secret_len,
    int64_t t, const unsigned char *body, size_t body_len, char *out);

/* one v1 signature, PSD_WEBHOOK_STANDARD_SIG_LEN characters, no NUL */
int psd_webhook_standard_sign(const unsigned char *key, size_t key_len,
    const char *id, size_t id_len, int64_t timestamp,
    const unsigned char *body, size_t body_len, char *out);

/*
 * A whole header value signed with every secret, NUL-terminated: Stripe's
 * "t=...,v1=...,v1=..." or Standard's "v1,... v1,...".  Returns its
 * length, 0 on error or when size is smaller than
 * PSD_WEBHOOK_*_HEADER_LEN(n).
 */
size_t psd_webhook_stripe_header(const psd_webhook_secret_t *secrets,
    size_t n, int64_t t, const unsigned char *body, size_t body_len,
    char *buf, size_t size);
size_t psd_webhook_standard_header(const psd_webhook_secret_t *keys,
    size_t n, const char *id, size_t id_len, int64_t timestamp,
    const unsigned char *body, size_t body_len, char *buf, size_t size);

#endif
