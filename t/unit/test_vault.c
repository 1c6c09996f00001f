/*
 * Unit tests: the AES-256-GCM vault envelope.  Fixed vectors come from
 * t/vectors/vault.json, written by an independent Python implementation
 * (PSD_VECTORS overrides the directory).
 */

#include <stdlib.h>

#include <jansson.h>

#include "tap.h"
#include "psd_b64.h"
#include "psd_vault.h"


#define AAD(s)  (const unsigned char *) (s), strlen(s)


static const unsigned char  key1[32] = "0123456789abcdef0123456789abcde1";
static const unsigned char  key2[32] = "0123456789abcdef0123456789abcde2";


static size_t
unhex(unsigned char *out, const char *hex)
{
    size_t        i, n;
    unsigned int  b;

    n = strlen(hex) / 2;

    for (i = 0; i < n; i++) {
        if (sscanf(hex + 2 * i, "%2x", &b) != 1) {
            return 0;
        }
        out[i] = (unsigned char) b;
    }

    return n;
}


static const char *
jstr(json_t *o, const char *key)
{
    json_t  *v;

    v = json_object_get(o, key);

    return json_is_string(v) ? json_string_value(v) : "";
}


static void
test_vectors(void)
{
    long                  n;
    char                  path[512], env[1024], kid[PSD_VAULT_KID_MAX];
    size_t                i, key_len, aad_len, pt_len, nonce_len;
    json_t               *root, *vecs, *v;
    json_error_t          err;
    unsigned char         key[64], nonce[32], aad[256], pt[512], out[512];
    const char           *dir, *want;
    psd_vault_key_t       k;
    psd_vault_keyring_t   ring;

    dir = getenv("PSD_VECTORS");
    snprintf(path, sizeof(path), "%s/vault.json", dir ? dir : "t/vectors");

    root = json_load_file(path, 0, &err);
    ok(root != NULL, "vault.json loads (%s)", root ? "ok" : err.text);
    if (root == NULL) {
        return;
    }

    vecs = json_object_get(root, "vectors");
    ok(json_array_size(vecs) >= 4, "vault.json has vectors");

    json_array_foreach(vecs, i, v) {
        key_len = unhex(key, jstr(v, "key_hex"));
        nonce_len = unhex(nonce, jstr(v, "nonce_hex"));
        aad_len = unhex(aad, jstr(v, "aad_hex"));
        pt_len = unhex(pt, jstr(v, "plaintext_hex"));
        want = jstr(v, "envelope");

        ok(key_len == 32 && nonce_len == 12, "vector %zu: sizes", i);

        memset(env, 0, sizeof(env));
        n = psd_vault_seal_nonce(key, key_len, jstr(v, "kid"),
                                 strlen(jstr(v, "kid")), aad, aad_len,
                                 pt, pt_len, nonce, env, sizeof(env));
        is_int(n, (long) strlen(want), "vector %zu: sealed length", i);
        is_str(env, want, "vector %zu (%s): envelope matches", i,
               jstr(v, "name"));
        is_int(n, (long) psd_vault_sealed_len(strlen(jstr(v, "kid")),
                                              pt_len),
               "vector %zu: psd_vault_sealed_len", i);

        k.kid = jstr(v, "kid");
        k.kid_len = strlen(k.kid);
        k.key = key;
        k.key_len = key_len;
        ring.keys = &k;
        ring.nkeys = 1;

        n = psd_vault_open(psd_vault_keyring_lookup, &ring, aad, aad_len,
                           want, strlen(want), out, sizeof(out));
        ok(n == (long) pt_len && memcmp(out, pt, pt_len) == 0,
           "vector %zu: opens to the plaintext", i);

        n = psd_vault_envelope_kid(want, strlen(want), kid);
        ok(n == (long) k.kid_len && memcmp(kid, k.kid, k.kid_len) == 0,
           "vector %zu: envelope names its kid", i);
    }

    json_decref(root);
}


/* flips one bit of the decoded envelope at byte pos and encodes again */
static size_t
tamper(char *out, const char *env, size_t pos, unsigned char bit)
{
    long           n;
    unsigned char  bin[1024];

    n = psd_b64url_decode(bin, env, strlen(env));
    if (n < 0 || (size_t) n <= pos) {
        return 0;
    }

    bin[pos] ^= bit;
    n = (long) psd_b64url_encode(out, bin, (size_t) n);
    out[n] = '\0';

    return (size_t) n;
}


static void
test_envelopes(void)
{
    long                  n, m;
    char                  env[1024], env2[1024], bad[1024], kid[64];
    size_t                i, len;
    unsigned char         pt[PSD_VAULT_PLAINTEXT_MAX + 1], out[64];
    psd_vault_key_t       keys[2];
    psd_vault_keyring_t   ring, old;
    const char           *tok = "tok_AbCdEfGhIjKlMnOpQrStUvWx";

    keys[0].kid = "k2";
    keys[0].kid_len = 2;
    keys[0].key = key2;
    keys[0].key_len = 32;
    keys[1].kid = "k1";
    keys[1].kid_len = 2;
    keys[1].key = key1;
    keys[1].key_len = 32;
    ring.keys = keys;
    ring.nkeys = 2;
    old.keys = &keys[1];
    old.nkeys = 1;

    memset(env, 0, sizeof(env));
    n = psd_vault_seal(key1, 32, "k1", 2, AAD(tok),
                       (const unsigned char *) "4242424242424242", 16,
                       env, sizeof(env));
    is_int(n, psd_vault_sealed_len(2, 16), "seal writes sealed_len chars");
    is_int(strlen(env), (size_t) n, "no NUL, no more");
    ok(strspn(env, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789-_") == (size_t) n, "envelope is base64url");

    memset(env2, 0, sizeof(env2));
    psd_vault_seal(key1, 32, "k1", 2, AAD(tok),
                   (const unsigned char *) "4242424242424242", 16,
                   env2, sizeof(env2));
    ok(strcmp(env, env2) != 0, "fresh nonce per seal");

    memset(out, 0, sizeof(out));
    n = psd_vault_open(psd_vault_keyring_lookup, &old, AAD(tok), env,
                       strlen(env), out, sizeof(out));
    ok(n == 16 && memcmp(out, "4242424242424242", 16) == 0, "round trip");

    /* rotation: the new ring still opens what the old key sealed */
    n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), env,
                       strlen(env), out, sizeof(out));
    is_int(n, 16, "rotation: old kid opens with the new keyring");
    n = psd_vault_envelope_kid(env, strlen(env), kid);
    ok(n == 2 && memcmp(kid, "k1", 2) == 0, "rotation: envelope names k1");

    psd_vault_seal(key2, 32, "k2", 2, AAD(tok),
                   (const unsigned char *) "4242424242424242", 16,
                   env2, sizeof(env2));
    n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), env2,
                       strlen(env2), out, sizeof(out));
    is_int(n, 16, "rotation: new kid opens");
    n = psd_vault_open(psd_vault_keyring_lookup, &old, AAD(tok), env2,
                       strlen(env2), out, sizeof(out));
    is_int(n, PSD_VAULT_ERR_UNKNOWN_KID, "wrong kid: unknown to the ring");
    is_str(psd_vault_strerror(n), "unknown_kid", "unknown_kid name");

    /* the token id binds: a ciphertext moved elsewhere fails */
    memset(out, 0xaa, sizeof(out));
    n = psd_vault_open(psd_vault_keyring_lookup, &ring,
                       AAD("tok_AbCdEfGhIjKlMnOpQrStUvWy"), env,
                       strlen(env), out, sizeof(out));
    is_int(n, PSD_VAULT_ERR_AUTH, "wrong aad: auth_failed");
    is_str(psd_vault_strerror(n), "auth_failed", "auth_failed name");
    for (i = 0; i < sizeof(out) && out[i] == 0xaa; i++) {
        /* void */
    }
    is_int(i, sizeof(out), "nothing written on failure");

    /* every byte of nonce, ciphertext and tag is covered */
    len = 2 + 2 + 12 + 16 + 16;
    m = 0;
    for (i = 4; i < len; i++) {
        tamper(bad, env, i, 0x01);
        n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), bad,
                           strlen(bad), out, sizeof(out));
        m += n == PSD_VAULT_ERR_AUTH;
    }
    is_int(m, (long) (len - 4), "tampered nonce, ciphertext or tag fails");

    tamper(bad, env, 0, 0x02);
    n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), bad,
                       strlen(bad), out, sizeof(out));
    is_int(n, PSD_VAULT_ERR_VERSION, "other version");

    tamper(bad, env, 1, 0x40);
    n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), bad,
                       strlen(bad), out, sizeof(out));
    is_int(n, PSD_VAULT_ERR_ENVELOPE, "kid length past the limit");

    /* relabelled k1 -> k2: the header is authenticated too */
    tamper(bad, env, 3, 0x03);
    n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), bad,
                       strlen(bad), out, sizeof(out));
    is_int(n, PSD_VAULT_ERR_AUTH, "relabelled kid fails");

    keys[0].key = key1;
    n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), bad,
                       strlen(bad), out, sizeof(out));
    is_int(n, PSD_VAULT_ERR_AUTH, "relabelled kid fails with the same key");
    keys[0].key = key2;

    tamper(bad, env, 2, 0x40);
    n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), bad,
                       strlen(bad), out, sizeof(out));
    is_int(n, PSD_VAULT_ERR_ENVELOPE, "kid outside its alphabet");

    n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), env,
                       strlen(env) - 1, out, sizeof(out));
    ok(n == PSD_VAULT_ERR_ENVELOPE || n == PSD_VAULT_ERR_AUTH,
       "truncated envelope");
    n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), env, 40,
                       out, sizeof(out));
    is_int(n, PSD_VAULT_ERR_ENVELOPE, "too short for nonce and tag");
    n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), "", 0,
                       out, sizeof(out));
    is_int(n, PSD_VAULT_ERR_ENVELOPE, "empty envelope");
    snprintf(bad, sizeof(bad), "%s=", env);
    n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), bad,
                       strlen(bad), out, sizeof(out));
    is_int(n, PSD_VAULT_ERR_ENVELOPE, "padding refused");
    memcpy(bad, env, strlen(env) + 1);
    bad[5] = '+';
    n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), bad,
                       strlen(bad), out, sizeof(out));
    is_int(n, PSD_VAULT_ERR_ENVELOPE, "standard base64 alphabet refused");

    n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), env,
                       strlen(env), out, 15);
    is_int(n, PSD_VAULT_ERR_NO_SPACE, "open: out too small");
    n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(""), env,
                       strlen(env), out, sizeof(out));
    is_int(n, PSD_VAULT_ERR_ARGS, "open: empty aad");

    keys[1].key_len = 16;
    n = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), env,
                       strlen(env), out, sizeof(out));
    is_int(n, PSD_VAULT_ERR_KEY, "open: a 16-byte key is refused");
    keys[1].key_len = 32;

    /* seal's arguments */
    is_int(psd_vault_seal(key1, 31, "k1", 2, AAD(tok), pt, 1, env,
                          sizeof(env)),
           PSD_VAULT_ERR_KEY, "seal: 31-byte key");
    is_int(psd_vault_seal(key1, 32, "", 0, AAD(tok), pt, 1, env,
                          sizeof(env)),
           PSD_VAULT_ERR_KID, "seal: empty kid");
    is_int(psd_vault_seal(key1, 32, "k 1", 3, AAD(tok), pt, 1, env,
                          sizeof(env)),
           PSD_VAULT_ERR_KID, "seal: kid with a space");
    is_int(psd_vault_seal(key1, 32, "KKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKK", 33,
                          AAD(tok), pt, 1, env, sizeof(env)),
           PSD_VAULT_ERR_KID, "seal: 33-byte kid");
    is_int(psd_vault_seal(key1, 32, "k1", 2, AAD(""), pt, 1, env,
                          sizeof(env)),
           PSD_VAULT_ERR_ARGS, "seal: empty aad");
    memset(pt, '7', sizeof(pt));
    is_int(psd_vault_seal(key1, 32, "k1", 2, AAD(tok), pt,
                          PSD_VAULT_PLAINTEXT_MAX + 1, env, sizeof(env)),
           PSD_VAULT_ERR_TOO_LARGE, "seal: plaintext too large");
    is_int(psd_vault_seal(key1, 32, "k1", 2, AAD(tok), pt, 16, env,
                          psd_vault_sealed_len(2, 16) - 1),
           PSD_VAULT_ERR_NO_SPACE, "seal: out one short");
    is_int(psd_vault_seal(key1, 32, "k1", 2, AAD(tok), pt, 16, env,
                          psd_vault_sealed_len(2, 16)),
           psd_vault_sealed_len(2, 16), "seal: out just right");

    /* the largest envelope opens */
    {
        static char           big[PSD_VAULT_SEALED_MAX + 1];
        static unsigned char  back[PSD_VAULT_PLAINTEXT_MAX];

        n = psd_vault_seal(key1, 32, "KKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKK", 32,
                           AAD(tok), pt, PSD_VAULT_PLAINTEXT_MAX, big,
                           sizeof(big));
        is_int(n, PSD_VAULT_SEALED_MAX, "largest envelope");
        keys[1].kid = "KKKKKKKKKKKKKKKKKKKKKKKKKKKKKKKK";
        keys[1].kid_len = 32;
        m = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), big,
                           (size_t) n, back, sizeof(back));
        ok(m == PSD_VAULT_PLAINTEXT_MAX
           && memcmp(back, pt, PSD_VAULT_PLAINTEXT_MAX) == 0,
           "largest envelope opens");
        big[n] = 'A';
        m = psd_vault_open(psd_vault_keyring_lookup, &ring, AAD(tok), big,
                           (size_t) n + 1, back, sizeof(back));
        is_int(m, PSD_VAULT_ERR_TOO_LARGE, "longer than the largest");
    }

    is_str(psd_vault_strerror(PSD_VAULT_ERR_ENVELOPE), "bad_envelope",
           "bad_envelope name");
    is_str(psd_vault_strerror(-99), "unknown_error", "unknown error name");
    ok(psd_vault_kid_valid("2025-01.primary_k", 17), "kid alphabet");
}


int
main(void)
{
    test_vectors();
    test_envelopes();

    return done_testing();
}
