/*
 * Copyright (C) ngx_psd_module authors
 */

#include <string.h>

#include <openssl/evp.h>

#include "psd_b64.h"
#include "psd_crypto.h"
#include "psd_vault.h"


#define PSD_VAULT_BINARY_MAX                                                 \
    psd_vault_binary_len(PSD_VAULT_KID_MAX, PSD_VAULT_PLAINTEXT_MAX)

/* 48 characters decode to 36 bytes: enough for any header */
#define PSD_VAULT_HEAD_CHARS  48


static int psd_vault_gcm(int enc, const unsigned char *key,
    const unsigned char *nonce, const unsigned char *head, size_t head_len,
    const unsigned char *aad, size_t aad_len, const unsigned char *in,
    size_t len, unsigned char *out, unsigned char *tag);
static long psd_vault_header(const unsigned char *bin, size_t len);


static const char  *psd_vault_errors[] = {
    "ok",
    "bad_args",
    "bad_key",
    "bad_kid",
    "too_large",
    "no_space",
    "bad_envelope",
    "bad_version",
    "unknown_kid",
    "auth_failed",
    "crypto_error"
};


const char *
psd_vault_strerror(long rc)
{
    if (rc >= 0) {
        return "ok";
    }

    if ((size_t) -rc >= sizeof(psd_vault_errors) / sizeof(char *)) {
        return "unknown_error";
    }

    return psd_vault_errors[-rc];
}


int
psd_vault_kid_valid(const char *kid, size_t kid_len)
{
    size_t  i;
    char    c;

    if (kid_len == 0 || kid_len > PSD_VAULT_KID_MAX) {
        return 0;
    }

    /* a kid ends up in logs and metrics labels: keep it plain */
    for (i = 0; i < kid_len; i++) {
        c = kid[i];

        if (!(c >= '0' && c <= '9') && !(c >= 'A' && c <= 'Z')
            && !(c >= 'a' && c <= 'z') && c != '.' && c != '_' && c != '-')
        {
            return 0;
        }
    }

    return 1;
}


int
psd_vault_keyring_lookup(void *data, const char *kid, size_t kid_len,
    const unsigned char **key, size_t *key_len)
{
    size_t                  i;
    psd_vault_keyring_t    *ring;
    const psd_vault_key_t  *k;

    ring = data;

    for (i = 0; i < ring->nkeys; i++) {
        k = &ring->keys[i];

        if (k->kid_len == kid_len && memcmp(k->kid, kid, kid_len) == 0) {
            *key = k->key;
            *key_len = k->key_len;
            return 0;
        }
    }

    return -1;
}


/*
 * One AES-256-GCM pass.  Encrypting, tag is written; decrypting, tag is
 * checked by the final call, and a mismatch returns PSD_VAULT_ERR_AUTH with
 * out holding unauthenticated bytes that the caller must wipe.
 */
static int
psd_vault_gcm(int enc, const unsigned char *key, const unsigned char *nonce,
    const unsigned char *head, size_t head_len, const unsigned char *aad,
    size_t aad_len, const unsigned char *in, size_t len, unsigned char *out,
    unsigned char *tag)
{
    int              rc, n, fin;
    EVP_CIPHER_CTX  *ctx;

    rc = PSD_VAULT_ERR_CRYPTO;

    ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) {
        return rc;
    }

    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) != 1
        || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN,
                               PSD_VAULT_NONCE_LEN, NULL)
           != 1
        || EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc) != 1
        || EVP_CipherUpdate(ctx, NULL, &n, head, (int) head_len) != 1
        || EVP_CipherUpdate(ctx, NULL, &n, aad, (int) aad_len) != 1)
    {
        goto done;
    }

    n = 0;

    if (len > 0) {
        if (EVP_CipherUpdate(ctx, out, &n, in, (int) len) != 1) {
            goto done;
        }
    }

    if (!enc) {
        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, PSD_VAULT_TAG_LEN,
                                (void *) tag)
            != 1)
        {
            goto done;
        }
    }

    fin = 0;

    if (EVP_CipherFinal_ex(ctx, out + n, &fin) != 1) {
        rc = enc ? PSD_VAULT_ERR_CRYPTO : PSD_VAULT_ERR_AUTH;
        goto done;
    }

    /* GCM is a stream mode: anything else means a broken library */
    if ((size_t) n + (size_t) fin != len) {
        goto done;
    }

    if (enc) {
        if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, PSD_VAULT_TAG_LEN,
                                tag)
            != 1)
        {
            goto done;
        }
    }

    rc = 0;

done:

    EVP_CIPHER_CTX_free(ctx);

    return rc;
}


long
psd_vault_seal_nonce(const unsigned char *key, size_t key_len,
    const char *kid, size_t kid_len, const unsigned char *aad, size_t aad_len,
    const unsigned char *pt, size_t pt_len, const unsigned char *nonce,
    char *out, size_t out_size)
{
    int            rc;
    size_t         head_len, bin_len, enc_len;
    unsigned char  bin[PSD_VAULT_BINARY_MAX];

    if (key == NULL || aad == NULL || aad_len == 0 || nonce == NULL
        || (pt == NULL && pt_len > 0) || aad_len > PSD_VAULT_PLAINTEXT_MAX)
    {
        return PSD_VAULT_ERR_ARGS;
    }

    if (key_len != PSD_VAULT_KEY_LEN) {
        return PSD_VAULT_ERR_KEY;
    }

    if (!psd_vault_kid_valid(kid, kid_len)) {
        return PSD_VAULT_ERR_KID;
    }

    if (pt_len > PSD_VAULT_PLAINTEXT_MAX) {
        return PSD_VAULT_ERR_TOO_LARGE;
    }

    bin_len = psd_vault_binary_len(kid_len, pt_len);
    enc_len = psd_b64url_encoded_len(bin_len);

    if (out_size < enc_len) {
        return PSD_VAULT_ERR_NO_SPACE;
    }

    head_len = 2 + kid_len;

    bin[0] = PSD_VAULT_VERSION;
    bin[1] = (unsigned char) kid_len;
    memcpy(bin + 2, kid, kid_len);
    memcpy(bin + head_len, nonce, PSD_VAULT_NONCE_LEN);

    rc = psd_vault_gcm(1, key, nonce, bin, head_len, aad, aad_len, pt, pt_len,
                       bin + head_len + PSD_VAULT_NONCE_LEN,
                       bin + bin_len - PSD_VAULT_TAG_LEN);
    if (rc != 0) {
        psd_cleanse(bin, sizeof(bin));
        return rc;
    }

    (void) psd_b64url_encode(out, bin, bin_len);

    return (long) enc_len;
}


long
psd_vault_seal(const unsigned char *key, size_t key_len, const char *kid,
    size_t kid_len, const unsigned char *aad, size_t aad_len,
    const unsigned char *pt, size_t pt_len, char *out, size_t out_size)
{
    unsigned char  nonce[PSD_VAULT_NONCE_LEN];

    /* 96-bit random nonces: a key must seal well under 2^32 envelopes */
    if (psd_random_bytes(nonce, sizeof(nonce)) != 0) {
        return PSD_VAULT_ERR_CRYPTO;
    }

    return psd_vault_seal_nonce(key, key_len, kid, kid_len, aad, aad_len,
                                pt, pt_len, nonce, out, out_size);
}


/* checks the fixed part; returns the header length (2 + kid) or an error */
static long
psd_vault_header(const unsigned char *bin, size_t len)
{
    size_t  kid_len;

    if (len < 2) {
        return PSD_VAULT_ERR_ENVELOPE;
    }

    if (bin[0] != PSD_VAULT_VERSION) {
        return PSD_VAULT_ERR_VERSION;
    }

    kid_len = bin[1];

    if (len < 2 + kid_len
        || !psd_vault_kid_valid((const char *) bin + 2, kid_len))
    {
        return PSD_VAULT_ERR_ENVELOPE;
    }

    return (long) (2 + kid_len);
}


long
psd_vault_envelope_kid(const char *env, size_t env_len, char *kid)
{
    long           n, head_len;
    unsigned char  bin[PSD_VAULT_HEAD_CHARS / 4 * 3];

    if (env_len > PSD_VAULT_HEAD_CHARS) {
        env_len = PSD_VAULT_HEAD_CHARS;
    }

    n = psd_b64url_decode(bin, env, env_len);
    if (n < 0) {
        return PSD_VAULT_ERR_ENVELOPE;
    }

    head_len = psd_vault_header(bin, (size_t) n);
    if (head_len < 0) {
        return head_len;
    }

    memcpy(kid, bin + 2, (size_t) head_len - 2);

    return head_len - 2;
}


long
psd_vault_open(psd_vault_lookup_pt lookup, void *data,
    const unsigned char *aad, size_t aad_len, const char *env,
    size_t env_len, unsigned char *out, size_t out_size)
{
    int                   rc;
    long                  n, head_len;
    size_t                key_len, ct_len;
    const unsigned char  *key, *nonce, *ct;
    unsigned char         bin[psd_b64url_decoded_max(PSD_VAULT_SEALED_MAX)];
    unsigned char         pt[PSD_VAULT_PLAINTEXT_MAX];

    if (lookup == NULL || aad == NULL || aad_len == 0 || env == NULL
        || aad_len > PSD_VAULT_PLAINTEXT_MAX)
    {
        return PSD_VAULT_ERR_ARGS;
    }

    if (env_len > PSD_VAULT_SEALED_MAX) {
        return PSD_VAULT_ERR_TOO_LARGE;
    }

    n = psd_b64url_decode(bin, env, env_len);
    if (n < 0) {
        return PSD_VAULT_ERR_ENVELOPE;
    }

    head_len = psd_vault_header(bin, (size_t) n);
    if (head_len < 0) {
        return head_len;
    }

    if ((size_t) n < (size_t) head_len + PSD_VAULT_NONCE_LEN
                     + PSD_VAULT_TAG_LEN)
    {
        return PSD_VAULT_ERR_ENVELOPE;
    }

    ct_len = (size_t) n - (size_t) head_len - PSD_VAULT_NONCE_LEN
             - PSD_VAULT_TAG_LEN;

    if (ct_len > PSD_VAULT_PLAINTEXT_MAX) {
        return PSD_VAULT_ERR_TOO_LARGE;
    }

    if (out_size < ct_len) {
        return PSD_VAULT_ERR_NO_SPACE;
    }

    key = NULL;
    key_len = 0;

    if (lookup(data, (const char *) bin + 2, (size_t) head_len - 2, &key,
               &key_len)
        != 0
        || key == NULL)
    {
        return PSD_VAULT_ERR_UNKNOWN_KID;
    }

    if (key_len != PSD_VAULT_KEY_LEN) {
        return PSD_VAULT_ERR_KEY;
    }

    nonce = bin + head_len;
    ct = nonce + PSD_VAULT_NONCE_LEN;

    /* decrypt aside, so that out never sees unauthenticated plaintext */
    rc = psd_vault_gcm(0, key, nonce, bin, (size_t) head_len, aad, aad_len,
                       ct, ct_len, pt, bin + n - PSD_VAULT_TAG_LEN);

    if (rc == 0) {
        memcpy(out, pt, ct_len);
    }

    psd_cleanse(pt, ct_len);

    return rc == 0 ? (long) ct_len : rc;
}
