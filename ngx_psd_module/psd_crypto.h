/*
 * Copyright (C) ngx_psd_module authors
 *
 * Thin, nginx-free wrappers over OpenSSL's libcrypto for what every feature
 * signs, compares and generates.
 */

#ifndef PSD_CRYPTO_H
#define PSD_CRYPTO_H

#include <stddef.h>

#define PSD_SHA256_LEN  32
#define PSD_SHA1_HEX_LEN  40

/* returns 0 on success, -1 on failure */
int psd_hmac_sha256(const unsigned char *key, size_t key_len,
    const unsigned char *data, size_t len, unsigned char *out);

/* HMAC over several pieces, as if concatenated; n pieces, NULL-free */
int psd_hmac_sha256_v(const unsigned char *key, size_t key_len,
    const unsigned char *const *data, const size_t *lens, size_t n,
    unsigned char *out);

/*
 * A prepared HMAC-SHA256 key, for a key that signs or verifies many times.
 * psd_hmac_key_new() absorbs the padded key into SHA-256 states once, so
 * that each psd_hmac_sha256_k() costs little more than the hashing of its
 * data (a link: about 0.2 us, against 0.9 us and up for the per-call
 * OpenSSL setup of psd_hmac_sha256_v(), on OpenSSL 3.0).  Same result as
 * psd_hmac_sha256_v() for any key length (RFC 2104: a key longer than 64
 * bytes is hashed first).
 *
 * The object keeps no copy of the key, only the inner and outer hash
 * states, which are as secret as the key; psd_hmac_key_free() has OpenSSL
 * wipe them.  The caller may wipe its own key buffer after
 * psd_hmac_key_new().
 *
 * Not thread-safe: psd_hmac_sha256_k() works in a context inside the
 * object, so one object must be used by one thread at a time (an nginx
 * worker: create it at configuration time, each worker uses its own copy
 * after fork()).
 */
typedef struct psd_hmac_key_s  psd_hmac_key_t;

/* key may be NULL if len is 0; returns NULL on failure */
psd_hmac_key_t *psd_hmac_key_new(const unsigned char *key, size_t len);

/* wipes and frees; NULL is fine */
void psd_hmac_key_free(psd_hmac_key_t *k);

/*
 * psd_hmac_sha256_v() with a prepared key; returns 0 on success, -1 on
 * failure.  The object stays usable after a failure.
 */
int psd_hmac_sha256_k(psd_hmac_key_t *k, const unsigned char *const *data,
    const size_t *lens, size_t n, unsigned char *out);

int psd_sha256(const unsigned char *data, size_t len, unsigned char *out);

/* writes 40 lowercase hex characters (no NUL), as Redis names scripts */
int psd_sha1_hex(const unsigned char *data, size_t len, char *out);

/* constant-time equality: 1 if equal */
int psd_ct_equal(const void *a, const void *b, size_t len);

/* cryptographically strong random bytes; 0 on success */
int psd_random_bytes(unsigned char *buf, size_t len);

/* random string over [0-9A-Za-z] without modulo bias; 0 on success */
int psd_random_base62(char *buf, size_t len);

void psd_cleanse(void *p, size_t len);

/* frees what the functions above cache; call at process exit */
void psd_crypto_cleanup(void);

#endif
