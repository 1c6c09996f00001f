/*
 * Copyright (C) ngx_psd_module authors
 *
 * The vault envelope: AES-256-GCM over card data, bound to the token id it
 * is stored under, as one base64url string (a Redis value).  nginx-free.
 *
 * Binary layout before base64url (no padding):
 *
 *     1 byte   version (1)
 *     1 byte   kid length, 1..32
 *     n bytes  kid, [A-Za-z0-9._-]
 *    12 bytes  nonce, random per seal
 *     m bytes  ciphertext (m = plaintext length)
 *    16 bytes  GCM tag
 *
 * The GCM additional data is the version, kid length and kid bytes, then
 * the caller's aad (the token id): a ciphertext copied under another token
 * id, or relabelled with another kid, fails to open.
 */

#ifndef PSD_VAULT_H
#define PSD_VAULT_H

#include <stddef.h>

#define PSD_VAULT_VERSION        1
#define PSD_VAULT_KEY_LEN        32
#define PSD_VAULT_KID_MAX        32
#define PSD_VAULT_NONCE_LEN      12
#define PSD_VAULT_TAG_LEN        16
#define PSD_VAULT_PLAINTEXT_MAX  2048

#define psd_vault_binary_len(kid_len, pt_len)                                \
    (2 + (kid_len) + PSD_VAULT_NONCE_LEN + (pt_len) + PSD_VAULT_TAG_LEN)

/* characters psd_vault_seal() writes: size the output buffer with it */
#define psd_vault_sealed_len(kid_len, pt_len)                                \
    ((psd_vault_binary_len(kid_len, pt_len) * 4 + 2) / 3)

/* the longest envelope psd_vault_open() accepts */
#define PSD_VAULT_SEALED_MAX                                                 \
    psd_vault_sealed_len(PSD_VAULT_KID_MAX, PSD_VAULT_PLAINTEXT_MAX)

/* errors are negative; psd_vault_strerror() names them */
#define PSD_VAULT_ERR_ARGS        -1     /* "bad_args" */
#define PSD_VAULT_ERR_KEY         -2     /* "bad_key": not 32 bytes */
#define PSD_VAULT_ERR_KID         -3     /* "bad_kid" */
#define PSD_VAULT_ERR_TOO_LARGE   -4     /* "too_large" */
#define PSD_VAULT_ERR_NO_SPACE    -5     /* "no_space": out too small */
#define PSD_VAULT_ERR_ENVELOPE    -6     /* "bad_envelope" */
#define PSD_VAULT_ERR_VERSION     -7     /* "bad_version" */
#define PSD_VAULT_ERR_UNKNOWN_KID -8     /* "unknown_kid" */
#define PSD_VAULT_ERR_AUTH        -9     /* "auth_failed" */
#define PSD_VAULT_ERR_CRYPTO      -10    /* "crypto_error" */


/*
 * Finds the key a kid names: *key points to key material that outlives the
 * call, *key_len must come out 32.  Returns 0, or -1 for an unknown kid.
 */
typedef int (*psd_vault_lookup_pt)(void *data, const char *kid,
    size_t kid_len, const unsigned char **key, size_t *key_len);


/* a plain keyring for psd_vault_keyring_lookup() */
typedef struct {
    const char           *kid;
    size_t                kid_len;
    const unsigned char  *key;
    size_t                key_len;
} psd_vault_key_t;

typedef struct {
    const psd_vault_key_t  *keys;
    size_t                  nkeys;
} psd_vault_keyring_t;


/* a psd_vault_lookup_pt over a psd_vault_keyring_t (data) */
int psd_vault_keyring_lookup(void *data, const char *kid, size_t kid_len,
    const unsigned char **key, size_t *key_len);

/* 1 if kid is 1..32 bytes of [A-Za-z0-9._-] */
int psd_vault_kid_valid(const char *kid, size_t kid_len);

/*
 * Encrypts pt under key (32 bytes), names kid, binds aad (the token id,
 * not empty), with a fresh random nonce.  Writes
 * psd_vault_sealed_len(kid_len, pt_len) characters to out (no NUL) and
 * returns that count, or a negative PSD_VAULT_ERR_*.
 */
long psd_vault_seal(const unsigned char *key, size_t key_len,
    const char *kid, size_t kid_len, const unsigned char *aad, size_t aad_len,
    const unsigned char *pt, size_t pt_len, char *out, size_t out_size);

/*
 * Test vectors only: as psd_vault_seal() with the given 12-byte nonce.
 * Never call it with a nonce that is not fresh and random: a nonce used
 * twice under one key gives away the GCM authentication key.
 */
long psd_vault_seal_nonce(const unsigned char *key, size_t key_len,
    const char *kid, size_t kid_len, const unsigned char *aad, size_t aad_len,
    const unsigned char *pt, size_t pt_len, const unsigned char *nonce,
    char *out, size_t out_size);

/*
 * Decodes env, finds its key with lookup(data, kid), checks the tag over
 * the header, aad and ciphertext, and only then writes the plaintext to
 * out.  Returns the plaintext length or a negative PSD_VAULT_ERR_*; out is
 * not written on failure.  The caller wipes out with psd_cleanse().
 */
long psd_vault_open(psd_vault_lookup_pt lookup, void *data,
    const unsigned char *aad, size_t aad_len, const char *env,
    size_t env_len, unsigned char *out, size_t out_size);

/*
 * The kid an envelope names, without decrypting (to re-seal envelopes of
 * a retired key): copies it to kid (PSD_VAULT_KID_MAX bytes), returns its
 * length, or a negative PSD_VAULT_ERR_*.
 */
long psd_vault_envelope_kid(const char *env, size_t env_len, char *kid);

const char *psd_vault_strerror(long rc);

#endif
