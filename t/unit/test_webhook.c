/*
 * Unit tests: webhook signatures, against the frozen vectors of
 * t/vectors/webhooks.json (run from the repository's top directory, or set
 * PSD_WEBHOOK_VECTORS) and edge cases.
 */

#include <stdlib.h>

#include <jansson.h>

#include "tap.h"
#include "psd_webhook.h"


#define MAX_SECRETS  4


typedef struct {
    psd_webhook_secret_t  s[MAX_SECRETS];
    unsigned char         keys[MAX_SECRETS][PSD_WEBHOOK_KEY_MAX];
    size_t                n;
} secrets_t;


static const char *
str(json_t *v, const char *name, size_t *len)
{
    json_t  *s = json_object_get(v, name);

    if (!json_is_string(s)) {
        *len = 0;
        return NULL;
    }

    *len = json_string_length(s);

    return json_string_value(s);
}


/* Stripe secrets are used as they are; Standard ones are decoded */
static int
secrets(json_t *v, const char *name, int standard, secrets_t *out)
{
    size_t       i, len;
    json_t      *a = json_object_get(v, name), *e;
    const char  *s;

    out->n = 0;

    json_array_foreach(a, i, e) {
        if (i == MAX_SECRETS || !json_is_string(e)) {
            return -1;
        }

        s = json_string_value(e);
        len = json_string_length(e);

        if (standard) {
            if (psd_webhook_standard_key(s, len, out->keys[i],
                                         &out->s[i].len) != 0)
            {
                return -1;
            }
            out->s[i].data = out->keys[i];

        } else {
            out->s[i].data = (const unsigned char *) s;
            out->s[i].len = len;
        }

        out->n++;
    }

    return 0;
}


static void
stripe_vector(json_t *v)
{
    char                  buf[PSD_WEBHOOK_STRIPE_HEADER_LEN(MAX_SECRETS)];
    size_t                hlen, blen;
    int64_t               t, now;
    secrets_t             sec, sig;
    const char           *name, *header, *body, *expect;
    psd_webhook_status_e  rc;

    name = json_string_value(json_object_get(v, "name"));
    header = str(v, "header", &hlen);
    body = str(v, "body", &blen);
    expect = json_string_value(json_object_get(v, "expect"));
    t = json_integer_value(json_object_get(v, "timestamp"));
    now = json_integer_value(json_object_get(v, "now"));

    if (secrets(v, "secrets", 0, &sec) != 0 || body == NULL
        || expect == NULL)
    {
        ok(0, "stripe vector \"%s\" is readable", name);
        return;
    }

    rc = psd_webhook_stripe_verify(header, hlen, (const unsigned char *) body,
                                   blen, sec.s, sec.n, now,
                                   PSD_WEBHOOK_TOLERANCE);
    is_str(psd_webhook_status_name(rc), expect, "stripe: %s", name);

    if (json_object_get(v, "signers") == NULL) {
        return;
    }

    if (secrets(v, "signers", 0, &sig) != 0) {
        ok(0, "stripe vector \"%s\" signers", name);
        return;
    }

    psd_webhook_stripe_header(sig.s, sig.n, t, (const unsigned char *) body,
                              blen, buf, sizeof(buf));
    is_str(buf, header, "stripe: %s: the header is rebuilt", name);
}


static void
standard_vector(json_t *v)
{
    char                  buf[PSD_WEBHOOK_STANDARD_HEADER_LEN(MAX_SECRETS)];
    size_t                idlen, tslen, slen, blen;
    int64_t               now;
    secrets_t             sec, sig;
    const char           *name, *id, *ts, *signature, *body, *expect;
    psd_webhook_status_e  rc;

    name = json_string_value(json_object_get(v, "name"));
    id = str(v, "id", &idlen);
    ts = str(v, "timestamp", &tslen);
    signature = str(v, "signature", &slen);
    body = str(v, "body", &blen);
    expect = json_string_value(json_object_get(v, "expect"));
    now = json_integer_value(json_object_get(v, "now"));

    if (secrets(v, "secrets", 1, &sec) != 0 || body == NULL
        || expect == NULL)
    {
        ok(0, "standard vector \"%s\" is readable", name);
        return;
    }

    rc = psd_webhook_standard_verify(id, idlen, ts, tslen, signature, slen,
                                     (const unsigned char *) body, blen,
                                     sec.s, sec.n, now,
                                     PSD_WEBHOOK_TOLERANCE);
    is_str(psd_webhook_status_name(rc), expect, "standard: %s", name);

    if (json_object_get(v, "signers") == NULL) {
        return;
    }

    if (secrets(v, "signers", 1, &sig) != 0) {
        ok(0, "standard vector \"%s\" signers", name);
        return;
    }

    psd_webhook_standard_header(sig.s, sig.n, id, idlen, atoll(ts),
                                (const unsigned char *) body, blen, buf,
                                sizeof(buf));
    is_str(buf, signature, "standard: %s: the header is rebuilt", name);
}


static void
test_vectors(void)
{
    size_t        i;
    json_t       *root, *v;
    const char   *path;
    json_error_t  err;

    path = getenv("PSD_WEBHOOK_VECTORS");
    if (path == NULL) {
        path = "t/vectors/webhooks.json";
    }

    root = json_load_file(path, 0, &err);
    ok(root != NULL, "%s loads", path);
    if (root == NULL) {
        printf("#   %s line %d: %s\n", path, err.line, err.text);
        return;
    }

    ok(json_array_size(json_object_get(root, "stripe")) >= 20,
       "stripe vectors");
    ok(json_array_size(json_object_get(root, "standard")) >= 20,
       "standard vectors");

    json_array_foreach(json_object_get(root, "stripe"), i, v) {
        stripe_vector(v);
    }

    json_array_foreach(json_object_get(root, "standard"), i, v) {
        standard_vector(v);
    }

    json_decref(root);
}


#define SECRET  "whsec_unit_test_secret"
#define BODY    "{\"amount\":100}"


static psd_webhook_status_e
stripe(const char *header, int64_t now, int64_t tolerance)
{
    psd_webhook_secret_t  s = { (const unsigned char *) SECRET,
                                sizeof(SECRET) - 1 };

    return psd_webhook_stripe_verify(header, header ? strlen(header) : 0,
                                     (const unsigned char *) BODY,
                                     sizeof(BODY) - 1, &s, 1, now,
                                     tolerance);
}


static void
test_stripe(void)
{
    char                  sig[PSD_WEBHOOK_STRIPE_SIG_LEN + 1];
    char                  h[4096], *p;
    size_t                i;
    psd_webhook_secret_t  s[2];

    ok(psd_webhook_stripe_sign((const unsigned char *) SECRET,
                               sizeof(SECRET) - 1, 1000,
                               (const unsigned char *) BODY,
                               sizeof(BODY) - 1, sig) == 0, "sign");
    sig[PSD_WEBHOOK_STRIPE_SIG_LEN] = '\0';

    snprintf(h, sizeof(h), "t=1000,v1=%s", sig);
    is_int(stripe(h, 1000, 300), PSD_WEBHOOK_OK, "signed header");
    is_int(stripe(h, 1000, 0), PSD_WEBHOOK_OK, "tolerance 0, same second");
    is_int(stripe(h, 1001, 0), PSD_WEBHOOK_STALE_TIMESTAMP,
           "tolerance 0, a second later");
    is_int(stripe(h, 1000, -1), PSD_WEBHOOK_ERROR, "negative tolerance");
    is_int(stripe(h, -1, 300), PSD_WEBHOOK_ERROR, "negative now");
    ok(psd_webhook_stripe_verify(h, strlen(h), (const unsigned char *) BODY,
                                 sizeof(BODY) - 1, s, 0, 1000, 300)
       == PSD_WEBHOOK_ERROR, "no secrets");
    s[0].data = (const unsigned char *) "";
    s[0].len = 0;
    ok(psd_webhook_stripe_verify(h, strlen(h), (const unsigned char *) BODY,
                                 sizeof(BODY) - 1, s, 1, 1000, 300)
       == PSD_WEBHOOK_ERROR, "an empty secret");

    snprintf(h, sizeof(h), "v1=%s,t=1000,foo=bar,v2=x", sig);
    is_int(stripe(h, 1000, 300), PSD_WEBHOOK_OK,
           "any order, unknown schemes ignored");
    snprintf(h, sizeof(h), "t=1000,v1=%s,foo=", sig);
    is_int(stripe(h, 1000, 300), PSD_WEBHOOK_MALFORMED_HEADER,
           "empty value");
    snprintf(h, sizeof(h), "t=1000,v1=%s,=x", sig);
    is_int(stripe(h, 1000, 300), PSD_WEBHOOK_MALFORMED_HEADER, "empty key");
    snprintf(h, sizeof(h), "t=1000,v1=%s,foo", sig);
    is_int(stripe(h, 1000, 300), PSD_WEBHOOK_MALFORMED_HEADER, "no '='");
    snprintf(h, sizeof(h), "T=1000,v1=%s", sig);
    is_int(stripe(h, 1000, 300), PSD_WEBHOOK_MALFORMED_HEADER,
           "uppercase key");
    snprintf(h, sizeof(h), "t=,v1=%s", sig);
    is_int(stripe(h, 1000, 300), PSD_WEBHOOK_MALFORMED_HEADER, "empty t");
    snprintf(h, sizeof(h), "t=1000,v1=%s\x01", sig);
    is_int(stripe(h, 1000, 300), PSD_WEBHOOK_MALFORMED_HEADER,
           "control byte");
    snprintf(h, sizeof(h), "t=1000,v1=%sa", sig);
    is_int(stripe(h, 1000, 300), PSD_WEBHOOK_MALFORMED_HEADER, "65 digits");
    snprintf(h, sizeof(h), "t=1000,v1=%.63sg", sig);
    is_int(stripe(h, 1000, 300), PSD_WEBHOOK_MALFORMED_HEADER, "not hex");
    is_int(stripe("t=1000", 1000, 300), PSD_WEBHOOK_BAD_SIGNATURE,
           "no signature");
    is_int(stripe("t=1000", 5000, 300), PSD_WEBHOOK_STALE_TIMESTAMP,
           "stale is checked first");
    is_int(stripe("t=1000,v1=x", 5000, 300), PSD_WEBHOOK_MALFORMED_HEADER,
           "syntax before that");
    is_int(stripe(NULL, 1000, 300), PSD_WEBHOOK_MISSING_HEADER, "absent");
    is_int(stripe("t=999999999999999999", 1000, 300),
           PSD_WEBHOOK_STALE_TIMESTAMP, "18 digits");
    is_int(stripe("t=9999999999999999999", 1000, 300),
           PSD_WEBHOOK_MALFORMED_HEADER, "19 digits");
    is_int(stripe("t=1000", 999999999999999999LL, 300),
           PSD_WEBHOOK_STALE_TIMESTAMP, "far future now");

    /* a hundred wrong signatures before the right one */
    p = h + snprintf(h, sizeof(h), "t=1000");
    for (i = 0; i < 50; i++) {
        p += sprintf(p, ",v1=%064d,v0=1", 0);
    }
    sprintf(p, ",v1=%s", sig);
    is_int(stripe(h, 1000, 300), PSD_WEBHOOK_OK, "many v1 values");

    /* the header's length rules, not a NUL */
    snprintf(h, sizeof(h), "t=1000,v1=%s,garbage", sig);
    s[0].data = (const unsigned char *) SECRET;
    s[0].len = sizeof(SECRET) - 1;
    ok(psd_webhook_stripe_verify(h, 6 + 4 + 64, (const unsigned char *) BODY,
                                 sizeof(BODY) - 1, s, 1, 1000, 300)
       == PSD_WEBHOOK_OK, "the length is honoured");

    ok(psd_webhook_stripe_verify("t=1000", 6, NULL, 0, s, 1, 1000, 300)
       == PSD_WEBHOOK_BAD_SIGNATURE, "a NULL empty body");

    s[1] = s[0];
    is_int(psd_webhook_stripe_header(s, 2, 1000, NULL, 0, h,
                                     PSD_WEBHOOK_STRIPE_HEADER_LEN(2) - 1),
           0, "header buffer too small");
    is_int(psd_webhook_stripe_header(s, 2, 1000, NULL, 0, h,
                                     PSD_WEBHOOK_STRIPE_HEADER_LEN(2)),
           6 + 2 * 68, "header for two secrets");
    ok(psd_webhook_stripe_verify(h, strlen(h), NULL, 0, s, 1, 1000, 300)
       == PSD_WEBHOOK_OK, "verifies with an empty body");
    is_int(psd_webhook_stripe_sign(s[0].data, s[0].len, -1, NULL, 0, sig),
           -1, "negative t");
}


static void
test_standard(void)
{
    char                  b64[PSD_WEBHOOK_STANDARD_SIG_LEN + 1], h[512];
    size_t                len;
    unsigned char         key[PSD_WEBHOOK_KEY_MAX];
    psd_webhook_secret_t  k;

    /* the example of the specification's reference implementation */
    ok(psd_webhook_standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 38,
                                key, &len) == 0 && len == 24,
       "whsec_ key");
    ok(psd_webhook_standard_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 32,
                                key, &len) == 0 && len == 24,
       "bare key");
    is_int(psd_webhook_standard_key("whsec_", 6, key, &len), -1, "empty");
    is_int(psd_webhook_standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",
                                    37, key, &len), -1, "bad length");
    is_int(psd_webhook_standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS-",
                                    38, key, &len), -1, "url alphabet");
    is_int(psd_webhook_standard_key("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
                                    38, key, &len), -1, "22 bytes");
    is_int(psd_webhook_standard_key("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                                    38, key, &len), -1, "23 bytes");
    is_int(psd_webhook_standard_key(
               "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
               "AAAAAAAAAAAAAAAAAAAAAAAAAA==", 88, key, &len), 0, "64 bytes");
    is_int(len, 64, "its length");
    is_int(psd_webhook_standard_key(
               "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
               "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", 88, key, &len), -1, "65 bytes");
    is_int(psd_webhook_standard_key(
               "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
               "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 92, key, &len), -1,
           "69 bytes");

    psd_webhook_standard_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 32, key,
                             &len);
    k.data = key;
    k.len = len;

    ok(psd_webhook_standard_sign(key, len, "msg_p5jXN8AQM9LWM0D4loKWxJek",
                                 28, 1614265330,
                                 (const unsigned char *)
                                 "{\"test\": 2432232314}", 20, b64) == 0,
       "sign");
    b64[PSD_WEBHOOK_STANDARD_SIG_LEN] = '\0';
    is_str(b64, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
           "the documented signature");
    is_int(psd_webhook_standard_sign(key, len, "a.b", 3, 1, NULL, 0, b64),
           -1, "no '.' in ids");

    snprintf(h, sizeof(h), "v1,%s", b64);
    ok(psd_webhook_standard_verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 28,
                                   "1614265330", 10, h, strlen(h),
                                   (const unsigned char *)
                                   "{\"test\": 2432232314}", 20, &k, 1,
                                   1614265330, 300) == PSD_WEBHOOK_OK,
       "verify");
    ok(psd_webhook_standard_verify("msg_p5jXN8AQM9LWM0D4loKWxJek", 28,
                                   NULL, 0, h, strlen(h), NULL, 0, &k, 1,
                                   1614265330, 300)
       == PSD_WEBHOOK_MISSING_HEADER, "absent timestamp");
    ok(psd_webhook_standard_verify("msg\x7f", 4, "1614265330", 10, h,
                                   strlen(h), NULL, 0, &k, 1, 1614265330,
                                   300) == PSD_WEBHOOK_MALFORMED_HEADER,
       "DEL in the id");
    ok(psd_webhook_standard_verify("msg", 3, "1614265330", 10, "v1a,x", 5,
                                   NULL, 0, &k, 1, 1614265330, 300)
       == PSD_WEBHOOK_BAD_SIGNATURE, "no v1 at all");
    ok(psd_webhook_standard_verify("msg", 3, "1614265330", 10, " v1a,x", 6,
                                   NULL, 0, &k, 1, 1614265330, 300)
       == PSD_WEBHOOK_MALFORMED_HEADER, "leading space");
    ok(psd_webhook_standard_verify("msg", 3, "1614265330", 10, "v1a,x ", 6,
                                   NULL, 0, &k, 1, 1614265330, 300)
       == PSD_WEBHOOK_MALFORMED_HEADER, "trailing space");
    ok(psd_webhook_standard_verify("msg", 3, "1614265330", 10, h,
                                   strlen(h), NULL, 0, &k, 0, 1614265330,
                                   300) == PSD_WEBHOOK_ERROR, "no keys");

    is_int(psd_webhook_standard_header(&k, 1, "id", 2, 5, NULL, 0, h,
                                       PSD_WEBHOOK_STANDARD_HEADER_LEN(1) - 1),
           0, "header buffer too small");
    is_int(psd_webhook_standard_header(&k, 1, "id", 2, 5, NULL, 0, h,
                                       PSD_WEBHOOK_STANDARD_HEADER_LEN(1)),
           47, "header for one key");

    is_str(psd_webhook_status_name(PSD_WEBHOOK_OK), "ok", "name ok");
    is_str(psd_webhook_status_name(PSD_WEBHOOK_MISSING_HEADER),
           "missing_header", "name missing_header");
    is_str(psd_webhook_status_name(PSD_WEBHOOK_MALFORMED_HEADER),
           "malformed_header", "name malformed_header");
    is_str(psd_webhook_status_name(PSD_WEBHOOK_STALE_TIMESTAMP),
           "stale_timestamp", "name stale_timestamp");
    is_str(psd_webhook_status_name(PSD_WEBHOOK_BAD_SIGNATURE),
           "bad_signature", "name bad_signature");
    is_str(psd_webhook_status_name(PSD_WEBHOOK_ERROR), "error",
           "name error");
}


int
main(void)
{
    test_vectors();
    test_stripe();
    test_standard();

    return done_testing();
}
