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

    return done_testing();
}
