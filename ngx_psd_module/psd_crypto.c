/*
 * Copyright (C) ngx_psd_module authors
 */

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "psd_crypto.h"


/* the one process-wide cache: released by psd_crypto_cleanup() */
static EVP_MAC  *mac;


int
psd_hmac_sha256_v(const unsigned char *key, size_t key_len,
    const unsigned char *const *data, const size_t *lens, size_t n,
    unsigned char *out)
{
    int           rc = -1;
    size_t        i, out_len;
    OSSL_PARAM    params[2];
    EVP_MAC_CTX  *ctx = NULL;

    /* fetching walks OpenSSL's provider tables: do it once per process */
    if (mac == NULL) {
        mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        if (mac == NULL) {
            return -1;
        }
    }

    ctx = EVP_MAC_CTX_new(mac);
    if (ctx == NULL) {
        goto done;
    }

    params[0] = OSSL_PARAM_construct_utf8_string("digest", (char *) "SHA256",
                                                 0);
    params[1] = OSSL_PARAM_construct_end();

    if (EVP_MAC_init(ctx, key, key_len, params) != 1) {
        goto done;
    }

    for (i = 0; i < n; i++) {
        if (lens[i] && EVP_MAC_update(ctx, data[i], lens[i]) != 1) {
            goto done;
        }
    }

    if (EVP_MAC_final(ctx, out, &out_len, PSD_SHA256_LEN) == 1
        && out_len == PSD_SHA256_LEN)
    {
        rc = 0;
    }

done:

    EVP_MAC_CTX_free(ctx);

    return rc;
}


#define PSD_SHA256_BLOCK  64


/*
 * HMAC(K, m) = H((K0 ^ opad) || H((K0 ^ ipad) || m)), RFC 2104.  Both
 * prefixes are exactly one block, so the states after absorbing them are
 * all a key needs: each MAC copies them instead of keying an EVP_MAC from
 * scratch.  Plain EVP_MD_CTX copies were measured as the fastest way that
 * OpenSSL 3.0 does not deprecate; EVP_MAC_init(ctx, NULL, 0, NULL) is a
 * little slower and silently reused no key before OpenSSL 3.0.3.
 */
struct psd_hmac_key_s {
    EVP_MD_CTX  *inner;      /* after K0 ^ ipad; never finalized */
    EVP_MD_CTX  *outer;      /* after K0 ^ opad; never finalized */
    EVP_MD_CTX  *work;       /* a copy of either, for one MAC */
};


psd_hmac_key_t *
psd_hmac_key_new(const unsigned char *key, size_t len)
{
    size_t           i;
    unsigned int     md_len;
    unsigned char    k0[PSD_SHA256_BLOCK], pad[PSD_SHA256_BLOCK];
    psd_hmac_key_t  *k;

    if (key == NULL && len != 0) {
        return NULL;
    }

    k = OPENSSL_zalloc(sizeof(psd_hmac_key_t));
    if (k == NULL) {
        return NULL;
    }

    memset(k0, 0, sizeof(k0));

    if (len > PSD_SHA256_BLOCK) {
        if (EVP_Digest(key, len, k0, &md_len, EVP_sha256(), NULL) != 1
            || md_len != PSD_SHA256_LEN)
        {
            goto failed;
        }

    } else if (len) {
        memcpy(k0, key, len);
    }

    k->inner = EVP_MD_CTX_new();
    k->outer = EVP_MD_CTX_new();
    k->work = EVP_MD_CTX_new();

    if (k->inner == NULL || k->outer == NULL || k->work == NULL) {
        goto failed;
    }

    for (i = 0; i < PSD_SHA256_BLOCK; i++) {
        pad[i] = k0[i] ^ 0x36;
    }

    if (EVP_DigestInit_ex(k->inner, EVP_sha256(), NULL) != 1
        || EVP_DigestUpdate(k->inner, pad, PSD_SHA256_BLOCK) != 1)
    {
        goto failed;
    }

    for (i = 0; i < PSD_SHA256_BLOCK; i++) {
        pad[i] = k0[i] ^ 0x5c;
    }

    if (EVP_DigestInit_ex(k->outer, EVP_sha256(), NULL) != 1
        || EVP_DigestUpdate(k->outer, pad, PSD_SHA256_BLOCK) != 1)
    {
        goto failed;
    }

    OPENSSL_cleanse(k0, sizeof(k0));
    OPENSSL_cleanse(pad, sizeof(pad));

    return k;

failed:

    OPENSSL_cleanse(k0, sizeof(k0));
    OPENSSL_cleanse(pad, sizeof(pad));
    psd_hmac_key_free(k);

    return NULL;
}


void
psd_hmac_key_free(psd_hmac_key_t *k)
{
    if (k == NULL) {
        return;
    }

    /* OpenSSL's digests clear their state when freed */
    EVP_MD_CTX_free(k->inner);
    EVP_MD_CTX_free(k->outer);
    EVP_MD_CTX_free(k->work);

    OPENSSL_clear_free(k, sizeof(psd_hmac_key_t));
}


int
psd_hmac_sha256_k(psd_hmac_key_t *k, const unsigned char *const *data,
    const size_t *lens, size_t n, unsigned char *out)
{
    int            rc = -1;
    size_t         i;
    unsigned int   len;
    unsigned char  inner[PSD_SHA256_LEN];

    /* each MAC starts from a fresh copy: a failed one leaves nothing */
    if (EVP_MD_CTX_copy_ex(k->work, k->inner) != 1) {
        return -1;
    }

    for (i = 0; i < n; i++) {
        if (lens[i] && EVP_DigestUpdate(k->work, data[i], lens[i]) != 1) {
            goto done;
        }
    }

    if (EVP_DigestFinal_ex(k->work, inner, &len) != 1
        || len != PSD_SHA256_LEN
        || EVP_MD_CTX_copy_ex(k->work, k->outer) != 1
        || EVP_DigestUpdate(k->work, inner, PSD_SHA256_LEN) != 1
        || EVP_DigestFinal_ex(k->work, out, &len) != 1
        || len != PSD_SHA256_LEN)
    {
        goto done;
    }

    rc = 0;

done:

    OPENSSL_cleanse(inner, sizeof(inner));

    return rc;
}


int
psd_hmac_sha256(const unsigned char *key, size_t key_len,
    const unsigned char *data, size_t len, unsigned char *out)
{
    unsigned int  out_len = 0;

    /* one-shot HMAC() is the cheapest path in OpenSSL 3 for a single piece */
    if (HMAC(EVP_sha256(), key, (int) key_len, data, len, out, &out_len)
        == NULL || out_len != PSD_SHA256_LEN)
    {
        return -1;
    }

    return 0;
}


int
psd_sha256(const unsigned char *data, size_t len, unsigned char *out)
{
    unsigned int  out_len = 0;

    if (EVP_Digest(data, len, out, &out_len, EVP_sha256(), NULL) != 1) {
        return -1;
    }

    return out_len == PSD_SHA256_LEN ? 0 : -1;
}


int
psd_sha1_hex(const unsigned char *data, size_t len, char *out)
{
    size_t          i;
    unsigned int    out_len = 0;
    unsigned char   md[EVP_MAX_MD_SIZE];
    static const char  hex[] = "0123456789abcdef";

    if (EVP_Digest(data, len, md, &out_len, EVP_sha1(), NULL) != 1
        || out_len != 20)
    {
        return -1;
    }

    for (i = 0; i < 20; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 0x0f];
    }

    return 0;
}


int
psd_ct_equal(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}


int
psd_random_bytes(unsigned char *buf, size_t len)
{
    return RAND_bytes(buf, (int) len) == 1 ? 0 : -1;
}


int
psd_random_base62(char *buf, size_t len)
{
    size_t          i = 0, k;
    unsigned char   rnd[64];
    static const char  alphabet[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    while (i < len) {
        if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
            return -1;
        }

        /* 62 * 4 = 248: rejecting 248..255 keeps every symbol equally likely */
        for (k = 0; k < sizeof(rnd) && i < len; k++) {
            if (rnd[k] < 248) {
                buf[i++] = alphabet[rnd[k] % 62];
            }
        }
    }

    OPENSSL_cleanse(rnd, sizeof(rnd));

    return 0;
}


void
psd_cleanse(void *p, size_t len)
{
    OPENSSL_cleanse(p, len);
}


void
psd_crypto_cleanup(void)
{
    EVP_MAC_free(mac);
    mac = NULL;
}
