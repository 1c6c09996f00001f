/* Unit tests: base64url / base64 strictness and the crypto wrappers. */

#include "tap.h"
#include "psd_b64.h"
#include "psd_crypto.h"


static void
hex(char *out, const unsigned char *in, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        sprintf(out + 2 * i, "%02x", in[i]);
    }
}


/* xorshift64*: reproducible "random" inputs */
static unsigned long long  rng_state = 0x9e3779b97f4a7c15ULL;

static unsigned long long
rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;

    return rng_state * 0x2545f4914f6cdd1dULL;
}


static void
rng_fill(unsigned char *p, size_t n)
{
    while (n--) {
        *p++ = (unsigned char) (rng() >> 56);
    }
}


/* RFC 4231, all seven HMAC-SHA-256 cases, through a prepared key */
static void
rfc4231(void)
{
    char             hx[65];
    size_t           i, len;
    unsigned char    key[131], data[152], mac[32];
    psd_hmac_key_t  *k;
    const unsigned char  *piece;

    static const struct {
        int          fill;       /* -1: 0x01, 0x02, ... */
        size_t       key_len;
        const char  *data;       /* NULL: data_fill * data_len */
        int          data_fill;
        size_t       data_len;
        size_t       mac_len;    /* case 5 is truncated to 128 bits */
        const char  *mac;
    } c[] = {
        { 0x0b, 20, "Hi There", 0, 8, 32,
          "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
        { 0, 4, "what do ya want for nothing?", 0, 28, 32,
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
        { 0xaa, 20, NULL, 0xdd, 50, 32,
          "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe" },
        { -1, 25, NULL, 0xcd, 50, 32,
          "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b" },
        { 0x0c, 20, "Test With Truncation", 0, 20, 16,
          "a3b6167473100ee06e0c796c2955552b" },
        { 0xaa, 131, "Test Using Larger Than Block-Size Key - Hash Key First",
          0, 54, 32,
          "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54" },
        { 0xaa, 131, "This is a test using a larger than block-size key and a"
          " larger than block-size data. The key needs to be hashed before"
          " being used by the HMAC algorithm.", 0, 152, 32,
          "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2" },
    };

    for (i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        if (c[i].fill == 0) {
            memcpy(key, "Jefe", 4);

        } else if (c[i].fill == -1) {
            for (len = 0; len < c[i].key_len; len++) {
                key[len] = (unsigned char) (len + 1);
            }

        } else {
            memset(key, c[i].fill, c[i].key_len);
        }

        if (c[i].data) {
            memcpy(data, c[i].data, c[i].data_len);
        } else {
            memset(data, c[i].data_fill, c[i].data_len);
        }

        k = psd_hmac_key_new(key, c[i].key_len);
        ok(k != NULL, "RFC 4231 case %zu: key prepared", i + 1);
        if (k == NULL) {
            continue;
        }

        /* twice: the second MAC must not see the first */
        piece = data;
        len = c[i].data_len;
        memset(mac, 0, sizeof(mac));
        psd_hmac_sha256_k(k, &piece, &len, 1, mac);
        memset(mac, 0, sizeof(mac));
        ok(psd_hmac_sha256_k(k, &piece, &len, 1, mac) == 0,
           "  computes");
        hex(hx, mac, c[i].mac_len);
        hx[2 * c[i].mac_len] = '\0';
        is_str(hx, c[i].mac, "  RFC 4231 case %zu", i + 1);

        psd_hmac_key_free(k);
    }
}


/* the prepared path equals the per-call one for any key, pieces and data */
static void
prepared_equals_plain(void)
{
    int              bad, fails;
    size_t           i, j, n, key_len, total, lens[6];
    unsigned char    key[200], data[6][300], all[1800];
    unsigned char    mac_k[32], mac_v[32], mac_1[32];
    psd_hmac_key_t  *k;
    const unsigned char  *pieces[6];

    static const size_t  edges[] = { 0, 1, 31, 32, 33, 63, 64, 65, 128, 200 };

    bad = 0;
    fails = 0;

    for (i = 0; i < 3000; i++) {
        key_len = i < 10 * 4 ? edges[i % 10] : rng() % 201;
        rng_fill(key, key_len);

        n = rng() % 6;
        total = 0;

        for (j = 0; j < n; j++) {
            /* a quarter of the pieces empty, some across block ends */
            lens[j] = (rng() & 3) ? rng() % 300 : 0;
            rng_fill(data[j], lens[j]);
            pieces[j] = data[j];
            memcpy(all + total, data[j], lens[j]);
            total += lens[j];
        }

        k = psd_hmac_key_new(key, key_len);
        if (k == NULL
            || psd_hmac_sha256_k(k, pieces, lens, n, mac_k) != 0
            || psd_hmac_sha256_v(key, key_len, pieces, lens, n, mac_v) != 0
            || psd_hmac_sha256(key, key_len, all, total, mac_1) != 0)
        {
            fails++;

        } else if (memcmp(mac_k, mac_v, 32) != 0
                   || memcmp(mac_k, mac_1, 32) != 0)
        {
            if (bad++ < 5) {
                printf("# differs: key %zu bytes, %zu pieces, %zu bytes\n",
                       key_len, n, total);
            }
        }

        psd_hmac_key_free(k);
    }

    is_int(fails, 0, "prepared vs plain: no failure in 3000 random cases");
    is_int(bad, 0, "prepared vs plain: 3000 random keys, pieces and data, "
           "equal to psd_hmac_sha256_v and one-shot HMAC");
}


/* one key for many MACs, two keys interleaved, the caller's key wiped */
static void
prepared_reuse(void)
{
    int              bad, fails;
    size_t           i, lens[2];
    unsigned char    key1[40], key2[100], msg[16][2][96];
    unsigned char    want1[16][32], want2[16][32], mac[32];
    psd_hmac_key_t  *k1, *k2;
    const unsigned char  *pieces[16][2];

    rng_fill(key1, sizeof(key1));
    rng_fill(key2, sizeof(key2));

    for (i = 0; i < 16; i++) {
        rng_fill(msg[i][0], 96);
        rng_fill(msg[i][1], 96);
        pieces[i][0] = msg[i][0];
        pieces[i][1] = msg[i][1];
    }

    for (i = 0; i < 16; i++) {
        lens[0] = i * 6;
        lens[1] = 96 - i * 5;
        psd_hmac_sha256_v(key1, sizeof(key1), pieces[i], lens, 2, want1[i]);
        psd_hmac_sha256_v(key2, sizeof(key2), pieces[i], lens, 2, want2[i]);
    }

    k1 = psd_hmac_key_new(key1, sizeof(key1));
    k2 = psd_hmac_key_new(key2, sizeof(key2));
    ok(k1 != NULL && k2 != NULL, "reuse: two keys prepared");

    if (k1 == NULL || k2 == NULL) {
        psd_hmac_key_free(k1);
        psd_hmac_key_free(k2);
        return;
    }

    /* the object keeps no pointer to, nor need of, the caller's bytes */
    psd_cleanse(key1, sizeof(key1));
    psd_cleanse(key2, sizeof(key2));

    bad = 0;
    fails = 0;

    for (i = 0; i < 100000; i++) {
        lens[0] = (i % 16) * 6;
        lens[1] = 96 - (i % 16) * 5;

        if (psd_hmac_sha256_k((i & 1) ? k2 : k1, pieces[i % 16], lens, 2,
                              mac)
            != 0)
        {
            fails++;
            continue;
        }

        if (memcmp(mac, (i & 1) ? want2[i % 16] : want1[i % 16], 32) != 0) {
            bad++;
        }
    }

    is_int(fails, 0, "reuse: 100000 MACs, none failed");
    is_int(bad, 0, "reuse: 100000 MACs over two interleaved keys, all right "
           "after the caller wiped its key");

    psd_hmac_key_free(k1);
    psd_hmac_key_free(k2);
}


static void
prepared_edges(void)
{
    char             hx[65];
    unsigned char    mac[32];
    psd_hmac_key_t  *k;

    ok(psd_hmac_key_new(NULL, 1) == NULL, "key_new refuses NULL with a length");

    psd_hmac_key_free(NULL);
    ok(1, "key_free(NULL) is a no-op");

    /* the empty key over the empty message: no pieces at all */
    k = psd_hmac_key_new(NULL, 0);
    ok(k != NULL, "empty key prepared");
    if (k) {
        ok(psd_hmac_sha256_k(k, NULL, NULL, 0, mac) == 0,
           "zero pieces compute");
        hex(hx, mac, 32);
        is_str(hx, "b613679a0814d9ec772f95d778c35fc5"
               "ff1697c493715653c6c712144292c5ad", "HMAC(\"\", \"\")");
        psd_hmac_key_free(k);
    }
}


int
main(void)
{
    long           n;
    char           enc[128], hx[128];
    unsigned char  dec[128], mac[32];
    const unsigned char  *parts[2];
    size_t         lens[2];

    /* RFC 4648 test vectors, url alphabet, no padding */
    n = (long) psd_b64url_encode(enc, (const unsigned char *) "foobar", 6);
    enc[n] = '\0';
    is_str(enc, "Zm9vYmFy", "b64url foobar");
    n = (long) psd_b64url_encode(enc, (const unsigned char *) "fo", 2);
    enc[n] = '\0';
    is_str(enc, "Zm8", "b64url fo has no padding");
    n = (long) psd_b64url_encode(enc, (const unsigned char *) "\xfb\xff", 2);
    enc[n] = '\0';
    is_str(enc, "-_8", "b64url uses - and _");

    is_int(psd_b64url_decode(dec, "Zm9vYmFy", 8), 6, "decode foobar");
    ok(memcmp(dec, "foobar", 6) == 0, "decoded bytes");
    is_int(psd_b64url_decode(dec, "Zm8", 3), 2, "decode without padding");
    is_int(psd_b64url_decode(dec, "Zm8=", 4), -1, "padding refused");
    is_int(psd_b64url_decode(dec, "Zm9", 3), -1, "non-zero spare bits refused");
    is_int(psd_b64url_decode(dec, "Z", 1), -1, "impossible length refused");
    is_int(psd_b64url_decode(dec, "+/8", 3), -1, "standard alphabet refused");
    is_int(psd_b64url_decode(dec, "", 0), 0, "empty decodes to empty");

    n = (long) psd_b64_encode(enc, (const unsigned char *) "fo", 2);
    enc[n] = '\0';
    is_str(enc, "Zm8=", "b64 pads");
    is_int(psd_b64_decode(dec, "Zm8=", 4), 2, "b64 decode with padding");
    is_int(psd_b64_decode(dec, "Zm8", 3), -1, "b64 requires padding");
    is_int(psd_b64_decode(dec, "Zg==", 4), 1, "b64 two pads");
    is_int(psd_b64_decode(dec, "Zh==", 4), -1, "b64 spare bits refused");
    is_int(psd_b64_decode(dec, "Z===", 4), -1, "b64 three pads refused");

    /* RFC 4231 test case 2 */
    ok(psd_hmac_sha256((const unsigned char *) "Jefe", 4,
                       (const unsigned char *)
                       "what do ya want for nothing?", 28, mac) == 0,
       "hmac computes");
    hex(hx, mac, 32);
    is_str(hx, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
           "hmac-sha256 RFC 4231 case 2");

    parts[0] = (const unsigned char *) "what do ya ";
    parts[1] = (const unsigned char *) "want for nothing?";
    lens[0] = 11;
    lens[1] = 17;
    memset(mac, 0, sizeof(mac));
    ok(psd_hmac_sha256_v((const unsigned char *) "Jefe", 4, parts, lens, 2,
                         mac) == 0, "hmac over pieces computes");
    hex(hx, mac, 32);
    is_str(hx, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
           "hmac over pieces equals one-shot");

    memset(enc, 0, sizeof(enc));
    ok(psd_sha1_hex((const unsigned char *) "abc", 3, enc) == 0, "sha1");
    is_str(enc, "a9993e364706816aba3e25717850c26c9cd0d89d", "sha1 of abc");

    ok(psd_ct_equal("abc", "abc", 3), "ct_equal equal");
    ok(!psd_ct_equal("abc", "abd", 3), "ct_equal differs");

    memset(enc, 0, sizeof(enc));
    ok(psd_random_base62(enc, 40) == 0 && strlen(enc) == 40,
       "random base62 fills");
    ok(strspn(enc, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
       == 40, "random base62 alphabet");

    rfc4231();
    prepared_equals_plain();
    prepared_reuse();
    prepared_edges();

    return done_testing();
}
