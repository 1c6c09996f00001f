/*
 * Copyright (C) ngx_psd_module authors
 */

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "psd_crypto.h"


int
psd_hmac_sha256_v(const unsigned char *key, size_t key_len,
    const unsigned char *const *data, const size_t *lens, size_t n,
    unsigned char *out)
{
    int           rc = -1;
    size_t        i, out_len;
    OSSL_PARAM    params[2];
    EVP_MAC_CTX  *ctx = NULL;

    static EVP_MAC  *mac;

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
