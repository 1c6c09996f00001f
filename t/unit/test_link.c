/*
 * Unit tests: signed links.  Every case of the shared vectors
 * (t/vectors/links.json, or $PSD_VECTORS), then a forgery battery that
 * only C can run cheaply: every field flipped, cut, extended, doubled and
 * dropped, every one-character signature change, every MAC bit.
 */

#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "tap.h"
#include "psd_b64.h"
#include "psd_link.h"


#define EXP  1767225600
#define NOW  (EXP - 3600)

#define QMAX  8192


static psd_link_key_t  keys[8];
static unsigned char   key_bytes[8][128];
static size_t          nkeys;


static size_t
unhex(unsigned char *out, const char *hex)
{
    size_t        i, n;
    unsigned int  v;

    n = strlen(hex) / 2;

    for (i = 0; i < n; i++) {
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (unsigned char) v;
    }

    return n;
}


static psd_link_status_e
verify_full(const psd_link_key_t *k, size_t nk, const char *q,
    const char *path, const char *client, int64_t now, int64_t skew,
    int64_t max_ttl)
{
    psd_ip_t         ip;
    psd_link_t       link;
    psd_link_conf_t  conf;

    conf.keys = k;
    conf.nkeys = nk;
    conf.now = now;
    conf.skew = skew;
    conf.max_ttl = max_ttl;

    if (client && psd_ip_parse(&ip, client, strlen(client)) != 0) {
        printf("# bad client %s\n", client);
        return (psd_link_status_e) -1;
    }

    return psd_link_verify(&link, &conf, q, strlen(q), path, strlen(path),
                           client ? &ip : NULL);
}


static psd_link_status_e
verify(const char *q, const char *path, const char *client)
{
    return verify_full(keys, nkeys, q, path, client, NOW, 0, 0);
}


/* the value of name=... in q, or NULL */
static const char *
arg(const char *q, const char *name, size_t *len)
{
    size_t       n;
    const char  *p;

    n = strlen(name);

    for (p = q; p; p = strchr(p, '&') ? strchr(p, '&') + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && p[n] == '=') {
            p += n + 1;
            *len = strcspn(p, "&");
            return p;
        }
    }

    return NULL;
}


/* q with the value of name replaced (value NULL: the argument dropped) */
static char *
set_arg(char *out, const char *q, const char *name, const char *value)
{
    char         *o;
    size_t        n, len;
    const char   *p, *end;

    o = out;
    n = strlen(name);

    for (p = q; *p; p = *end ? end + 1 : end) {
        end = p + strcspn(p, "&");
        len = end - p;

        if (strncmp(p, name, n) == 0 && p[n] == '=') {
            if (value == NULL) {
                continue;
            }
            o += sprintf(o, "%s%s=%s", o == out ? "" : "&", name, value);
            continue;
        }

        o += sprintf(o, "%s%.*s", o == out ? "" : "&", (int) len, p);
    }

    *o = '\0';

    return out;
}


static long
sign(char *buf, const char *kid, const char *path, int prefix, int64_t exp,
    const char *id, const char *order, const char *ip, uint32_t limit)
{
    const char             *err;
    const psd_link_key_t   *k;
    psd_link_params_t       p;

    k = psd_link_key_find(keys, nkeys, kid, strlen(kid));

    memset(&p, 0, sizeof(p));
    p.kid = kid;
    p.kid_len = strlen(kid);
    p.key = k->key;
    p.key_len = k->key_len;
    p.hkey = k->hkey;
    p.path = path;
    p.path_len = strlen(path);
    p.prefix = prefix;
    p.exp = exp;
    p.id = id;
    p.id_len = strlen(id);
    p.order = order;
    p.order_len = order ? strlen(order) : 0;
    p.ip = ip;
    p.ip_len = ip ? strlen(ip) : 0;
    p.limit = limit;

    return psd_link_sign(&p, buf, QMAX, &err);
}


static const char *
jstr(json_t *o, const char *name)
{
    json_t  *v;

    v = json_object_get(o, name);

    return json_is_string(v) ? json_string_value(v) : NULL;
}


/* for messages: never NULL */
static const char *
jtext(json_t *o, const char *name)
{
    const char  *s;

    s = jstr(o, name);

    return s ? s : "(none)";
}


static void
vectors(json_t *doc)
{
    char                   q[QMAX], buf[QMAX];
    long                   n;
    size_t                 i, k, len;
    json_t                *c, *chk, *arr;
    psd_link_t             link;
    const char            *err, *path, *status;
    psd_link_params_t      p;
    const psd_link_key_t  *key;

    arr = json_object_get(doc, "sign");
    ok(json_array_size(arr) >= 5, "vectors: %zu sign cases",
       json_array_size(arr));

    json_array_foreach(arr, i, c) {
        memset(&p, 0, sizeof(p));
        p.kid = jstr(c, "kid");
        p.kid_len = strlen(p.kid);
        key = psd_link_key_find(keys, nkeys, p.kid, p.kid_len);
        p.key = key->key;
        p.key_len = key->key_len;
        p.hkey = key->hkey;
        p.path = jstr(c, "path");
        p.path_len = strlen(p.path);
        p.prefix = json_is_true(json_object_get(c, "prefix"));
        p.exp = json_integer_value(json_object_get(c, "exp"));
        p.id = jstr(c, "id");
        p.id_len = strlen(p.id);
        p.order = jstr(c, "order");
        p.order_len = p.order ? strlen(p.order) : 0;
        p.ip = jstr(c, "ip");
        p.ip_len = p.ip ? strlen(p.ip) : 0;
        p.limit = (uint32_t) json_integer_value(json_object_get(c, "limit"));

        n = psd_link_sign(&p, q, sizeof(q), &err);
        ok(n > 0, "sign: %s", jtext(c, "name"));
        is_str(q, jstr(c, "query"), "  query");

        is_int(psd_link_parse(&link, q, n), PSD_LINK_OK, "  parses back");
        n = psd_link_canonical(&link, p.path, p.path_len, buf, sizeof(buf));
        ok(n > 0 && strcmp(buf, jstr(c, "canonical")) == 0,
           "  canonical string");

        n = psd_b64url_encode(buf, link.mac, PSD_LINK_MAC_LEN);
        buf[n] = '\0';
        is_str(buf, jstr(c, "sig"), "  signature");

        psd_link_encode_path(buf, sizeof(buf), p.path, p.path_len);
        is_str(buf, jstr(c, "url_path"), "  url path");

        json_array_foreach(json_object_get(c, "checks"), k, chk) {
            path = jstr(chk, "path");
            status = psd_link_status_name(
                verify_full(keys, nkeys, q, path, jstr(chk, "client"),
                    json_integer_value(json_object_get(chk, "now")),
                    json_integer_value(json_object_get(chk, "skew")),
                    json_integer_value(json_object_get(chk, "max_ttl"))));
            is_str(status, jstr(chk, "status"), "  check %zu: %s %s", k,
                   jtext(chk, "status"),
                   jstr(chk, "note") ? jstr(chk, "note") : "");
        }
    }

    arr = json_object_get(doc, "verify");
    ok(json_array_size(arr) >= 50, "vectors: %zu verify cases",
       json_array_size(arr));

    json_array_foreach(arr, i, c) {
        status = psd_link_status_name(
            verify_full(keys, nkeys, jstr(c, "query"), jstr(c, "path"),
                        jstr(c, "client"),
                        json_integer_value(json_object_get(c, "now")),
                        json_integer_value(json_object_get(c, "skew")),
                        json_integer_value(json_object_get(c, "max_ttl"))));
        is_str(status, jstr(c, "status"), "verify: %s", jtext(c, "name"));
    }

    arr = json_object_get(doc, "cidr");

    json_array_foreach(arr, i, c) {
        psd_cidr_t  cidr;

        path = jstr(c, "text");
        len = strlen(path);
        n = psd_cidr_parse(&cidr, path, len) == 0;
        is_int(n, json_is_true(json_object_get(c, "valid")),
               "cidr \"%s\" %s", path, n ? "valid" : "invalid");

        if (n) {
            len = psd_cidr_format(buf, &cidr);
            buf[len] = '\0';
            is_str(buf, path, "  formats back");
        }
    }

    arr = json_object_get(doc, "cidr_match");

    json_array_foreach(arr, i, c) {
        psd_ip_t    ip;
        psd_cidr_t  cidr;

        path = jstr(c, "cidr");
        n = psd_cidr_parse(&cidr, path, strlen(path)) == 0
            && psd_ip_parse(&ip, jstr(c, "ip"), strlen(jstr(c, "ip"))) == 0
            && psd_cidr_match(&cidr, &ip)
               == json_is_true(json_object_get(c, "match"));
        ok(n, "cidr_match %s %s", jtext(c, "cidr"), jtext(c, "ip"));
    }
}


/* refused before the signature could vouch for anything */
static int
forged(psd_link_status_e rc)
{
    return rc == PSD_LINK_MALFORMED || rc == PSD_LINK_UNKNOWN_KEY
           || rc == PSD_LINK_INVALID;
}


static void
forgery(void)
{
    int                 bad, i, k, nargs;
    char                q[QMAX], m[QMAX], v[QMAX], split[QMAX], *args[16];
    char               *s;
    long                n;
    size_t              len;
    const char         *val, *path = "/courses/rust/lesson1.mp4";
    unsigned char       mac[PSD_LINK_MAC_LEN];
    psd_link_status_e   rc;

    static const char  b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    n = sign(q, "2026a", "/courses/rust/", 1, EXP, "Lk3f9a2B7c", "ord_123",
             "203.0.113.0/24", 5);
    ok(n > 0, "battery: prefix link signs");
    is_int(verify(q, path, "203.0.113.7"), PSD_LINK_OK, "battery: it verifies");

    /* split into arguments, for reordering and per-field mutation */
    strcpy(split, q);
    nargs = 0;
    for (s = strtok(split, "&"); s && nargs < 16; s = strtok(NULL, "&")) {
        args[nargs++] = s;
    }
    is_int(nargs, 9, "battery: all nine arguments present");

    /* every rotation and the reversal: the canonical order is fixed */
    bad = 0;
    for (i = 0; i < nargs; i++) {
        v[0] = '\0';
        for (k = 0; k < nargs; k++) {
            strcat(v, k ? "&" : "");
            strcat(v, args[(i + k) % nargs]);
        }
        bad += verify(v, path, "203.0.113.7") != PSD_LINK_OK;
    }
    v[0] = '\0';
    for (k = nargs - 1; k >= 0; k--) {
        strcat(v, k == nargs - 1 ? "" : "&");
        strcat(v, args[k]);
    }
    bad += verify(v, path, "203.0.113.7") != PSD_LINK_OK;
    is_int(bad, 0, "battery: reordered arguments still verify");

    /* per field: flipped, truncated, extended, doubled, dropped */
    for (i = 0; i < nargs; i++) {
        char  name[32];

        len = strcspn(args[i], "=");
        memcpy(name, args[i], len);
        name[len] = '\0';
        val = arg(q, name, &len);

        memcpy(v, val, len);
        v[len] = '\0';
        v[0] = (char) (v[0] == '1' ? '2' : v[0] == 'A' ? 'B' : '1');
        rc = verify(set_arg(m, q, name, v), path, "203.0.113.7");
        ok(forged(rc),
           "battery: %s flipped: %s", name, psd_link_status_name(rc));

        v[0] = val[0];
        v[len - 1] = '\0';
        rc = verify(set_arg(m, q, name, v), path, "203.0.113.7");
        ok(forged(rc),
           "battery: %s truncated: %s", name, psd_link_status_name(rc));

        memcpy(v, val, len);
        v[len] = '0';
        v[len + 1] = '\0';
        rc = verify(set_arg(m, q, name, v), path, "203.0.113.7");
        ok(forged(rc),
           "battery: %s extended: %s", name, psd_link_status_name(rc));

        strcpy(m, q);
        strcat(m, "&");
        strcat(m, args[i]);
        is_int(verify(m, path, "203.0.113.7"), PSD_LINK_MALFORMED,
               "battery: %s doubled", name);

        rc = verify(set_arg(m, q, name, NULL), path, "203.0.113.7");
        ok(forged(rc),
           "battery: %s dropped: %s", name, psd_link_status_name(rc));
    }

    /* every one-character change of the signature, at every position */
    val = arg(q, "psd_sig", &len);
    is_int(len, PSD_LINK_SIG_LEN, "battery: sig is 43 characters");
    bad = 0;
    for (i = 0; i < PSD_LINK_SIG_LEN; i++) {
        for (k = 0; k < 64; k++) {
            memcpy(v, val, len);
            v[len] = '\0';
            if (v[i] == b64[k]) {
                continue;
            }
            v[i] = b64[k];
            rc = verify(set_arg(m, q, "psd_sig", v), path, "203.0.113.7");
            bad += rc == PSD_LINK_OK
                   || (i < PSD_LINK_SIG_LEN - 1 && rc != PSD_LINK_INVALID);
        }
    }
    is_int(bad, 0, "battery: 43 x 63 one-character sig changes all refused");

    /* every single bit of the MAC */
    psd_b64url_decode(mac, val, len);
    bad = 0;
    for (i = 0; i < PSD_LINK_MAC_LEN * 8; i++) {
        mac[i / 8] ^= (unsigned char) (0x80 >> (i % 8));
        n = psd_b64url_encode(v, mac, PSD_LINK_MAC_LEN);
        v[n] = '\0';
        bad += verify(set_arg(m, q, "psd_sig", v), path, "203.0.113.7")
               != PSD_LINK_INVALID;
        mac[i / 8] ^= (unsigned char) (0x80 >> (i % 8));
    }
    is_int(bad, 0, "battery: each of 256 MAC bit flips is invalid");

    /* spare bits: 'k' and 'l' differ only in the last, unused bits */
    memcpy(v, val, len);
    v[len - 1] = b64[(strchr(b64, val[len - 1]) - b64) | 1];
    v[len] = '\0';
    is_int(verify(set_arg(m, q, "psd_sig", v), path, "203.0.113.7"),
           PSD_LINK_MALFORMED, "battery: sig with spare bits set");

    sprintf(v, "%.*s==", (int) len, val);
    is_int(verify(set_arg(m, q, "psd_sig", v), path, "203.0.113.7"),
           PSD_LINK_MALFORMED, "battery: sig with padding");

    memcpy(v, val, len);
    v[len] = '\0';
    for (s = v; *s; s++) {
        *s = *s == '-' ? '+' : *s == '_' ? '/' : *s;
    }
    v[0] = '+';
    is_int(verify(set_arg(m, q, "psd_sig", v), path, "203.0.113.7"),
           PSD_LINK_MALFORMED, "battery: sig in the standard alphabet");

    /* raw NUL bytes: in the query and in the path */
    strcpy(m, q);
    memcpy(strstr(m, "Lk3f"), "Lk\0f", 4);
    {
        psd_link_t       link;
        psd_link_conf_t  conf = { keys, 0, NOW, 0, 0 };

        conf.nkeys = nkeys;
        is_int(psd_link_verify(&link, &conf, m, strlen(q), path,
                               strlen(path), NULL),
               PSD_LINK_MALFORMED, "battery: raw NUL in the query");
    }
    {
        psd_ip_t         ip;
        psd_link_t       link;
        psd_link_conf_t  conf = { keys, 0, NOW, 0, 0 };

        static const char  nul_path[] = "/courses/rust/a\0.mp4";

        conf.nkeys = nkeys;
        psd_ip_parse(&ip, "203.0.113.7", 11);
        is_int(psd_link_verify(&link, &conf, q, strlen(q), nul_path,
                               sizeof(nul_path) - 1, &ip),
               PSD_LINK_WRONG_PATH, "battery: NUL in the request path");
    }
}


static void
paths_and_time(void)
{
    char               q[QMAX], q2[QMAX];
    long               n;
    psd_link_status_e  rc;

    /* traversal spellings against the prefix /a/ */
    sign(q, "2026a", "/a/", 1, EXP, "t1", NULL, NULL, 0);
    is_int(verify(q, "/a/x", NULL), PSD_LINK_OK, "/a/ opens /a/x");
    is_int(verify(q, "/a/", NULL), PSD_LINK_OK, "/a/ opens /a/");
    is_int(verify(q, "/ab/x", NULL), PSD_LINK_WRONG_PATH,
           "/a/ does not open /ab/x");
    is_int(verify(q, "/b", NULL), PSD_LINK_WRONG_PATH, "/a/ does not open /b");
    is_int(verify(q, "/a", NULL), PSD_LINK_WRONG_PATH, "/a/ does not open /a");
    is_int(verify(q, "/A/x", NULL), PSD_LINK_WRONG_PATH, "case-sensitive");
    is_int(verify(q, "/a/../b", NULL), PSD_LINK_WRONG_PATH,
           "unnormalized /a/../b refused");
    is_int(verify(q, "/a/./b", NULL), PSD_LINK_WRONG_PATH,
           "unnormalized /a/./b refused");
    is_int(verify(q, "/a/b/..", NULL), PSD_LINK_WRONG_PATH,
           "trailing /.. refused");
    is_int(verify(q, "/a/..b", NULL), PSD_LINK_OK, "/a/..b is a file name");
    is_int(verify(q, "/a/b..", NULL), PSD_LINK_OK, "/a/b.. is a file name");
    is_int(verify(q, "/a/.well-known", NULL), PSD_LINK_OK, "dot file");
    is_int(verify(q, "/a//b", NULL), PSD_LINK_OK,
           "/a//b (merge_slashes off) stays under /a/");
    is_int(verify(q, "", NULL), PSD_LINK_WRONG_PATH, "empty path");
    is_int(verify(q, "a/x", NULL), PSD_LINK_WRONG_PATH, "relative path");
    is_int(verify(q, "/a/\x1b", NULL), PSD_LINK_WRONG_PATH, "ESC in path");
    is_int(verify(q, "/a/\xc3\xa9", NULL), PSD_LINK_OK, "UTF-8 in path");

    /* expiry boundaries, skew, max_ttl, odd clocks */
    is_int(verify_full(keys, nkeys, q, "/a/x", NULL, EXP, 0, 0),
           PSD_LINK_OK, "valid at exp");
    is_int(verify_full(keys, nkeys, q, "/a/x", NULL, EXP + 1, 0, 0),
           PSD_LINK_EXPIRED, "expired one second after exp");
    is_int(verify_full(keys, nkeys, q, "/a/x", NULL, EXP + 30, 30, 0),
           PSD_LINK_OK, "valid within skew");
    is_int(verify_full(keys, nkeys, q, "/a/x", NULL, EXP + 31, 30, 0),
           PSD_LINK_EXPIRED, "expired past skew");
    is_int(verify_full(keys, nkeys, q, "/a/x", NULL, EXP + 1, -5, 0),
           PSD_LINK_EXPIRED, "negative skew counts as 0");
    is_int(verify_full(keys, nkeys, q, "/a/x", NULL, INT64_MAX, INT64_MAX,
                       0),
           PSD_LINK_OK, "huge skew does not overflow");
    is_int(verify_full(keys, nkeys, q, "/a/x", NULL, INT64_MAX, 0, 0),
           PSD_LINK_EXPIRED, "huge now");
    is_int(verify_full(keys, nkeys, q, "/a/x", NULL, -1, 0, 1),
           PSD_LINK_INVALID, "negative now counts as 0 (max_ttl)");
    is_int(verify_full(keys, nkeys, q, "/a/x", NULL, NOW, 0, 3600),
           PSD_LINK_OK, "exp - now == max_ttl");
    is_int(verify_full(keys, nkeys, q, "/a/x", NULL, NOW, 0, 3599),
           PSD_LINK_INVALID, "exp - now > max_ttl");
    is_int(verify_full(keys, nkeys, q, "/a/x", NULL, NOW, 0, -1),
           PSD_LINK_OK, "negative max_ttl means no limit");

    /* exact links: the path is signed, so another path is a forgery */
    sign(q, "2026a", "/a/b.mp4", 0, EXP, "t2", NULL, NULL, 0);
    is_int(verify(q, "/a/b.mp4", NULL), PSD_LINK_OK, "exact path verifies");
    is_int(verify(q, "/a/c.mp4", NULL), PSD_LINK_INVALID,
           "exact link on another path is invalid");
    {
        psd_link_t       link;
        psd_link_conf_t  conf = { keys, 0, NOW, 0, 0 };

        conf.nkeys = nkeys;
        is_int(psd_link_verify(&link, &conf, q, strlen(q), NULL, 0, NULL),
               PSD_LINK_INVALID, "NULL path");
        is_int(psd_link_verify(&link, &conf, q, strlen(q), "/a/b.mp4x", 8,
                               NULL),
               PSD_LINK_OK, "path_len is honoured");
    }

    /* key rotation: both keys open their own links, not each other's */
    n = sign(q, "2026a", "/r/", 1, EXP, "rot", NULL, NULL, 0);
    ok(n > 0, "rotation: link under 2026a");
    n = sign(q2, "2025b", "/r/", 1, EXP, "rot", NULL, NULL, 0);
    ok(n > 0, "rotation: link under 2025b");
    is_int(verify(q, "/r/x", NULL), PSD_LINK_OK, "rotation: old key verifies");
    is_int(verify(q2, "/r/x", NULL), PSD_LINK_OK, "rotation: new key verifies");
    ok(strcmp(strstr(q, "psd_sig="), strstr(q2, "psd_sig=")) != 0,
       "rotation: different keys, different signatures");
    is_int(verify_full(keys + 1, 1, q, "/r/x", NULL, NOW, 0, 0),
           PSD_LINK_UNKNOWN_KEY, "rotation: retired key is unknown");
    {
        psd_link_key_t  swapped = keys[1];

        swapped.kid = "2026a";
        swapped.kid_len = 5;
        is_int(verify_full(&swapped, 1, q, "/r/x", NULL, NOW, 0, 0),
               PSD_LINK_INVALID, "rotation: same kid, other key bytes");
    }

    /* client binding */
    sign(q, "2026a", "/c/", 1, EXP, "cl", NULL, "198.51.100.0/22", 0);
    is_int(verify(q, "/c/x", "198.51.103.255"), PSD_LINK_OK, "v4 /22 in");
    is_int(verify(q, "/c/x", "198.51.104.0"), PSD_LINK_WRONG_CLIENT,
           "v4 /22 out");
    is_int(verify(q, "/c/x", NULL), PSD_LINK_WRONG_CLIENT, "no client");
    {
        psd_ip_t         ip;
        psd_link_t       link;
        psd_link_conf_t  conf = { keys, 0, NOW, 0, 0 };
        unsigned char    mapped[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                        0xff, 0xff, 198, 51, 101, 1 };

        conf.nkeys = nkeys;
        psd_ip_set(&ip, mapped, 16);
        is_int(psd_link_verify(&link, &conf, q, strlen(q), "/c/x", 4, &ip),
               PSD_LINK_OK, "v4-mapped client of a dual-stack listener");
    }
    sign(q, "2026a", "/c/", 1, EXP, "cl", NULL, "2001:db8:1234::/48", 0);
    is_int(verify(q, "/c/x", "2001:db8:1234:ffff::1"), PSD_LINK_OK,
           "v6 /48 in");
    is_int(verify(q, "/c/x", "2001:db8:1235::1"), PSD_LINK_WRONG_CLIENT,
           "v6 /48 out");
    is_int(verify(q, "/c/x", "198.51.100.1"), PSD_LINK_WRONG_CLIENT,
           "v4 client, v6 binding");

    /* many unrelated arguments around a link */
    {
        char  *big;
        int    i;

        big = malloc(200000);
        n = 0;
        for (i = 0; i < 10000; i++) {
            n += sprintf(big + n, "x%d=%d&", i, i);
        }
        strcpy(big + n, q);
        rc = verify(big, "/c/x", "2001:db8:1234::1");
        is_int(rc, PSD_LINK_OK, "10000 application arguments are skipped");
        free(big);
    }
}


static void
api(void)
{
    int                    i;
    char                   q[QMAX], buf[QMAX];
    long                   n;
    const char            *err;
    psd_link_t             link;
    psd_link_params_t      p, good;
    const psd_link_key_t  *k;

    is_str(psd_link_status_name(PSD_LINK_OK), "ok", "status name ok");
    is_str(psd_link_status_name(PSD_LINK_MALFORMED), "malformed",
           "status name malformed");
    is_str(psd_link_status_name(PSD_LINK_UNKNOWN_KEY), "unknown_key",
           "status name unknown_key");
    is_str(psd_link_status_name(PSD_LINK_INVALID), "invalid",
           "status name invalid");
    is_str(psd_link_status_name(PSD_LINK_EXPIRED), "expired",
           "status name expired");
    is_str(psd_link_status_name(PSD_LINK_WRONG_PATH), "wrong_path",
           "status name wrong_path");
    is_str(psd_link_status_name(PSD_LINK_WRONG_CLIENT), "wrong_client",
           "status name wrong_client");
    is_str(psd_link_status_name((psd_link_status_e) 99), "unknown",
           "status name out of range");

    /* the parsed fields the nginx side hands to Redis */
    n = sign(q, "2026a", "/p/", 1, EXP, "fields_1", "o:1.x", "10.1.0.0/16",
             42);
    is_int(psd_link_parse(&link, q, n), PSD_LINK_OK, "parse for fields");
    ok(link.kid_len == 5 && strcmp(link.kid, "2026a") == 0, "field kid");
    ok(link.id_len == 8 && strcmp(link.id, "fields_1") == 0, "field id");
    ok(link.order_len == 5 && strcmp(link.order, "o:1.x") == 0,
       "field order");
    ok(link.scope_len == 3 && strcmp(link.scope, "/p/") == 0, "field scope");
    ok(link.ip_len == 11 && strcmp(link.ip, "10.1.0.0/16") == 0
       && link.cidr.prefix == 16, "field ip");
    is_int(link.exp, EXP, "field exp");
    is_int(link.limit, 42, "field limit");

    n = sign(q, "2026a", "/p/x", 0, 0, "z", NULL, NULL, 0);
    is_int(psd_link_parse(&link, q, n), PSD_LINK_OK, "minimal link parses");
    ok(link.order_len == 0 && link.scope_len == 0 && link.ip_len == 0
       && link.limit == 0 && link.exp == 0 && link.order[0] == '\0',
       "absent fields are empty");

    /* a bad link's fields are safe to log: empty or validated */
    is_int(psd_link_parse(&link, "psd_id=good_1&psd_kid=a%ZZ", 26),
           PSD_LINK_MALFORMED, "bad escape in kid");
    ok(link.kid[0] == '\0' && link.kid_len == 0, "  refused kid is empty");
    ok(strcmp(link.id, "good_1") == 0 && link.id_len == 6,
       "  id parsed before it is kept");
    is_int(psd_link_parse(&link, "psd_id=a%0Ab", 12), PSD_LINK_MALFORMED,
           "newline in id");
    ok(link.id[0] == '\0' && link.id_len == 0, "  refused id is empty");
    is_int(psd_link_parse(&link, "psd_order=x%00y", 15), PSD_LINK_MALFORMED,
           "NUL in order");
    ok(link.order[0] == '\0' && link.order_len == 0,
       "  refused order is empty");
    is_int(psd_link_parse(&link, "psd_scope=%2Fa%2F..%2F", 22),
           PSD_LINK_MALFORMED, "dot segment in scope");
    ok(link.scope[0] == '\0' && link.scope_len == 0,
       "  refused scope is empty");
    is_int(psd_link_parse(&link, "psd_ip=10.0.0.1%2F8", 19),
           PSD_LINK_MALFORMED, "host bits in ip");
    ok(link.ip[0] == '\0' && link.ip_len == 0, "  refused ip is empty");

    /* canonical and encode: buffer sizes */
    n = psd_link_canonical(&link, "/p/x", 4, buf, sizeof(buf));
    ok(n > 0, "canonical");
    is_int(psd_link_canonical(&link, "/p/x", 4, buf, n), n,
           "canonical fits exactly without NUL");
    is_int(psd_link_canonical(&link, "/p/x", 4, buf, n - 1), -1,
           "canonical refuses a short buffer");
    is_int(psd_link_encode_path(buf, 8, "/a b", 4), 6, "encode_path fits");
    is_str(buf, "/a%20b", "encode_path output");
    is_int(psd_link_encode_path(buf, 6, "/a b", 4), -1,
           "encode_path needs room for the NUL");
    psd_link_encode_path(buf, sizeof(buf), "/-._~!$&'()*+,;=:@?#[]%\x01\xff",
                         25);
    is_str(buf, "/-._~%21%24%26%27%28%29%2A%2B%2C%3B%3D%3A%40%3F%23%5B%5D"
           "%25%01%FF", "encode_path keeps only unreserved and '/'");

    /* sign refuses what parse would refuse, and says why */
    k = psd_link_key_find(keys, nkeys, "2026a", 5);
    memset(&good, 0, sizeof(good));
    good.kid = "2026a";
    good.kid_len = 5;
    good.key = k->key;
    good.key_len = k->key_len;
    good.path = "/s/";
    good.path_len = 3;
    good.exp = EXP;
    good.id = "sid";
    good.id_len = 3;

    n = psd_link_sign(&good, q, sizeof(q), &err);
    ok(n > 0, "sign baseline");
    is_int(psd_link_sign(&good, q, n, &err), -1, "sign: no room for NUL");
    is_int(psd_link_sign(&good, q, n + 1, &err), n, "sign: exact room");

    for (i = 0; i < 13; i++) {
        p = good;
        switch (i) {
        case 0: p.key_len = 31; break;
        case 1: p.kid = "bad kid"; p.kid_len = 7; break;
        case 2: p.kid_len = 0; break;
        case 3: p.exp = -1; break;
        case 4: p.exp = 1000000000000LL; break;
        case 5: p.id = "x.y"; break;
        case 6: p.order = "a b"; p.order_len = 3; break;
        case 7: p.path = "s/"; p.path_len = 2; break;
        case 8: p.path = "/s//t"; p.path_len = 5; break;
        case 9: p.prefix = 1; p.path = "/s"; p.path_len = 2; break;
        case 10: p.ip = "10.0.0.1/8"; p.ip_len = 10; break;
        case 11: p.limit = PSD_LINK_LIMIT_MAX + 1; break;
        default: p.path = "/s/../t"; p.path_len = 7; break;
        }
        err = NULL;
        n = psd_link_sign(&p, q, sizeof(q), &err);
        ok(n == -1 && err != NULL, "sign refuses bad input %d: %s", i,
           err ? err : "(no error)");
    }

    p = good;
    p.exp = 999999999999LL;
    p.limit = PSD_LINK_LIMIT_MAX;
    p.prefix = 1;
    ok(psd_link_sign(&p, q, sizeof(q), NULL) > 0,
       "sign accepts the largest exp and limit, err NULL");
}


/* with keys[].hkey set: the prepared key is the one that signs and checks */
static void
prepared(void)
{
    char             q[QMAX], q2[QMAX];
    long             n, n2;
    const char      *err;
    psd_link_key_t   mixed;
    psd_link_params_t  p;

    /* the same link, byte for byte, with and without the prepared key */
    memset(&p, 0, sizeof(p));
    p.kid = keys[0].kid;
    p.kid_len = keys[0].kid_len;
    p.key = keys[0].key;
    p.key_len = keys[0].key_len;
    p.path = "/prep/a.bin";
    p.path_len = strlen(p.path);
    p.exp = EXP;
    p.id = "prep";
    p.id_len = 4;

    p.hkey = NULL;
    n = psd_link_sign(&p, q, sizeof(q), &err);
    p.hkey = keys[0].hkey;
    n2 = psd_link_sign(&p, q2, sizeof(q2), &err);
    ok(n > 0 && n == n2 && strcmp(q, q2) == 0,
       "prepared: sign gives the same link as the plain key");

    /*
     * hkey wins over key: key bytes of keys[1] with the prepared keys[0]
     * open what keys[0] signed (a misuse, shown only to prove the path)
     */
    mixed = keys[1];
    mixed.kid = keys[0].kid;
    mixed.kid_len = keys[0].kid_len;
    mixed.hkey = keys[0].hkey;
    is_int(verify_full(&mixed, 1, q, "/prep/a.bin", NULL, NOW, 0, 0),
           PSD_LINK_OK, "prepared: verify uses hkey when present");
    mixed.hkey = NULL;
    is_int(verify_full(&mixed, 1, q, "/prep/a.bin", NULL, NOW, 0, 0),
           PSD_LINK_INVALID, "prepared: and key bytes when it is NULL");

    p.hkey = keys[1].hkey;
    n2 = psd_link_sign(&p, q2, sizeof(q2), &err);
    ok(n2 > 0 && strcmp(q, q2) != 0,
       "prepared: sign uses hkey when present");
}


int
main(void)
{
    char           *text;
    size_t          i;
    json_t         *doc, *arr, *k;
    const char     *file;
    json_error_t    jerr;

    file = getenv("PSD_VECTORS");
    if (file == NULL) {
        file = "t/vectors/links.json";
    }

    doc = json_load_file(file, 0, &jerr);
    if (doc == NULL) {
        printf("Bail out! cannot read %s: %s (run from the repository "
               "root or set PSD_VECTORS)\n", file, jerr.text);
        return 1;
    }

    arr = json_object_get(doc, "keys");
    json_array_foreach(arr, i, k) {
        if (i == 8) {
            break;
        }
        text = (char *) json_string_value(json_object_get(k, "kid"));
        keys[i].kid = text;
        keys[i].kid_len = strlen(text);
        keys[i].key_len = unhex(key_bytes[i],
                                json_string_value(json_object_get(k,
                                                                  "key_hex")));
        keys[i].key = key_bytes[i];
        nkeys++;
    }
    is_int(nkeys, 3, "vectors: three keys");

    vectors(doc);
    forgery();
    paths_and_time();
    api();

    /* all of it again with prepared keys: the same answers */
    for (i = 0; i < nkeys; i++) {
        keys[i].hkey = psd_hmac_key_new(keys[i].key, keys[i].key_len);
        ok(keys[i].hkey != NULL, "prepared key %s", keys[i].kid);
    }

    vectors(doc);
    forgery();
    paths_and_time();
    api();
    prepared();

    for (i = 0; i < nkeys; i++) {
        psd_hmac_key_free(keys[i].hkey);
        keys[i].hkey = NULL;
    }

    json_decref(doc);

    return done_testing();
}
