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

#endif
