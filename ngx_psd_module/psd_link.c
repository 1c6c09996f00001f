/*
 * Copyright (C) ngx_psd_module authors
 */

#include <string.h>

#include "psd_b64.h"
#include "psd_crypto.h"
#include "psd_link.h"


#define PSD_LINK_V        0x001
#define PSD_LINK_KID      0x002
#define PSD_LINK_EXP      0x004
#define PSD_LINK_ID       0x008
#define PSD_LINK_ORDER    0x010
#define PSD_LINK_SCOPE    0x020
#define PSD_LINK_IP       0x040
#define PSD_LINK_LIMIT    0x080
#define PSD_LINK_SIG      0x100

#define PSD_LINK_REQUIRED                                                    \
    (PSD_LINK_V | PSD_LINK_KID | PSD_LINK_EXP | PSD_LINK_ID | PSD_LINK_SIG)

#define PSD_LINK_EXP_MAX  999999999999LL

/*
 * the canonical string in three pieces, so that a request path of any
 * length is signed from where it lies: "psd-link-v1" and the fields up to
 * "\npath=<len>:" (at most 258 bytes), the path, then ip and limit (at most
 * 66 bytes)
 */
#define PSD_LINK_HEAD_SIZE  320
#define PSD_LINK_TAIL_SIZE  96


typedef struct {
    char           head[PSD_LINK_HEAD_SIZE];
    char           tail[PSD_LINK_TAIL_SIZE];
    size_t         head_len;
    size_t         tail_len;
    const char    *path;
    size_t         path_len;
} psd_link_canon_t;


typedef struct {
    const char    *name;
    size_t         len;
    unsigned int   bit;
} psd_link_arg_t;


static const psd_link_arg_t  psd_link_args[] = {
    { "v",     1, PSD_LINK_V },
    { "kid",   3, PSD_LINK_KID },
    { "exp",   3, PSD_LINK_EXP },
    { "id",    2, PSD_LINK_ID },
    { "order", 5, PSD_LINK_ORDER },
    { "scope", 5, PSD_LINK_SCOPE },
    { "ip",    2, PSD_LINK_IP },
    { "limit", 5, PSD_LINK_LIMIT },
    { "sig",   3, PSD_LINK_SIG }
};


static const char  *psd_link_status_names[] = {
    "ok",
    "malformed",
    "unknown_key",
    "invalid",
    "expired",
    "wrong_path",
    "wrong_client"
};


const char *
psd_link_status_name(psd_link_status_e status)
{
    if ((unsigned int) status
        >= sizeof(psd_link_status_names) / sizeof(psd_link_status_names[0]))
    {
        return "unknown";
    }

    return psd_link_status_names[status];
}


static int
psd_link_unhex(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/*
 * %XX only: '+' is a plus sign, since none of our values is form text and
 * a literal '+' in a path must not turn into a space.  dst holds max + 1.
 */
static long
psd_link_unescape(char *dst, size_t max, const char *src, size_t len)
{
    int            hi, lo;
    size_t         i, n;
    unsigned char  c;

    n = 0;

    for (i = 0; i < len; i++) {
        if (n == max) {
            return -1;
        }

        c = (unsigned char) src[i];

        if (c == '%') {
            if (len - i < 3) {
                return -1;
            }

            hi = psd_link_unhex((unsigned char) src[i + 1]);
            lo = psd_link_unhex((unsigned char) src[i + 2]);

            if (hi < 0 || lo < 0) {
                return -1;
            }

            c = (unsigned char) ((hi << 4) | lo);
            i += 2;
        }

        dst[n++] = (char) c;
    }

    dst[n] = '\0';

    return (long) n;
}


static int
psd_link_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
           || (c >= '0' && c <= '9')
           || c == '-' || c == '.' || c == '_' || c == '~';
}


static size_t
psd_link_escape(char *dst, const char *src, size_t len, int keep_slash)
{
    char           *d = dst;
    size_t          i;
    unsigned char   c;

    static const char  hex[] = "0123456789ABCDEF";

    for (i = 0; i < len; i++) {
        c = (unsigned char) src[i];

        if (psd_link_unreserved(c) || (keep_slash && c == '/')) {
            *d++ = (char) c;

        } else {
            *d++ = '%';
            *d++ = hex[c >> 4];
            *d++ = hex[c & 0x0f];
        }
    }

    return d - dst;
}


/* kid and id: [A-Za-z0-9_-]; order also allows '.' and ':' */
static int
psd_link_token(const char *s, size_t len, size_t max, int order)
{
    size_t         i;
    unsigned char  c;

    if (len == 0 || len > max) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = (unsigned char) s[i];

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
            || (c >= '0' && c <= '9') || c == '_' || c == '-'
            || (order && (c == '.' || c == ':')))
        {
            continue;
        }

        return 0;
    }

    return 1;
}


/* decimal, no sign, no leading zero, so that each value has one spelling */
static int
psd_link_number(const char *s, size_t len, size_t digits, int64_t *out)
{
    size_t   i;
    int64_t  v;

    if (len == 0 || len > digits || (len > 1 && s[0] == '0')) {
        return 0;
    }

    v = 0;

    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        v = v * 10 + (s[i] - '0');
    }

    *out = v;

    return 1;
}


/*
 * A path starts with '/' and holds no control byte and no "." or ".."
 * segment; strict (what a signer accepts, and psd_scope) also refuses
 * empty segments ("//").  nginx resolves all of these in r->uri already;
 * refusing them here keeps a prefix from ever reaching outside itself
 * should a caller pass an unnormalized path.
 */
static int
psd_link_path_valid(const char *p, size_t len, int strict)
{
    size_t         i, seg, n;
    unsigned char  c;

    if (len == 0 || p[0] != '/') {
        return 0;
    }

    seg = 1;

    for (i = 1; i <= len; i++) {
        if (i < len) {
            c = (unsigned char) p[i];

            if (c < 0x20 || c == 0x7f) {
                return 0;
            }

            if (c != '/') {
                continue;
            }
        }

        n = i - seg;

        if (n == 0 && i < len && strict) {
            return 0;
        }

        if (n > 0 && n <= 2 && p[seg] == '.' && (n == 1 || p[seg + 1] == '.'))
        {
            return 0;
        }

        seg = i + 1;
    }

    return 1;
}


static int
psd_link_scope_valid(const char *p, size_t len)
{
    return len <= PSD_LINK_SCOPE_MAX && len > 0 && p[len - 1] == '/'
           && psd_link_path_valid(p, len, 1);
}


static char *
psd_link_uint(char *p, uint64_t v)
{
    char    tmp[20];
    size_t  n;

    n = 0;

    do {
        tmp[n++] = (char) ('0' + v % 10);
        v /= 10;
    } while (v);

    while (n) {
        *p++ = tmp[--n];
    }

    return p;
}


/* "\n" name "=" length ":" value */
static char *
psd_link_field(char *p, const char *name, const char *value, size_t len)
{
    size_t  n;

    n = strlen(name);

    *p++ = '\n';
    memcpy(p, name, n);
    p += n;
    *p++ = '=';
    p = psd_link_uint(p, len);
    *p++ = ':';

    if (len) {
        memcpy(p, value, len);
        p += len;
    }

    return p;
}


static void
psd_link_canon_build(psd_link_canon_t *c, const psd_link_t *link,
    const char *path, size_t path_len)
{
    char  *p, num[20];

    if (link->scope_len) {
        path = link->scope;
        path_len = link->scope_len;
    }

    p = c->head;

    memcpy(p, "psd-link-v1", sizeof("psd-link-v1") - 1);
    p += sizeof("psd-link-v1") - 1;

    p = psd_link_field(p, "kid", link->kid, link->kid_len);
    p = psd_link_field(p, "exp", num,
                       psd_link_uint(num, (uint64_t) link->exp) - num);
    p = psd_link_field(p, "id", link->id, link->id_len);
    p = psd_link_field(p, "order", link->order, link->order_len);

    if (link->scope_len) {
        p = psd_link_field(p, "scope", "prefix", sizeof("prefix") - 1);
    } else {
        p = psd_link_field(p, "scope", "exact", sizeof("exact") - 1);
    }

    /* the path's own bytes are the second piece */
    memcpy(p, "\npath=", sizeof("\npath=") - 1);
    p += sizeof("\npath=") - 1;
    p = psd_link_uint(p, path_len);
    *p++ = ':';

    c->head_len = p - c->head;
    c->path = path ? path : "";
    c->path_len = path_len;

    p = c->tail;
    p = psd_link_field(p, "ip", link->ip, link->ip_len);

    if (link->limit) {
        p = psd_link_field(p, "limit", num,
                           psd_link_uint(num, link->limit) - num);
    } else {
        p = psd_link_field(p, "limit", NULL, 0);
    }

    c->tail_len = p - c->tail;
}


static int
psd_link_mac(const psd_link_t *link, const unsigned char *key,
    size_t key_len, psd_hmac_key_t *hkey, const char *path, size_t path_len,
    unsigned char *out)
{
    size_t                lens[3];
    psd_link_canon_t      c;
    const unsigned char  *pieces[3];

    psd_link_canon_build(&c, link, path, path_len);

    pieces[0] = (const unsigned char *) c.head;
    lens[0] = c.head_len;
    pieces[1] = (const unsigned char *) c.path;
    lens[1] = c.path_len;
    pieces[2] = (const unsigned char *) c.tail;
    lens[2] = c.tail_len;

    if (hkey) {
        return psd_hmac_sha256_k(hkey, pieces, lens, 3, out);
    }

    return psd_hmac_sha256_v(key, key_len, pieces, lens, 3, out);
}


long
psd_link_canonical(const psd_link_t *link, const char *path,
    size_t path_len, char *buf, size_t size)
{
    size_t            len;
    psd_link_canon_t  c;

    psd_link_canon_build(&c, link, path, path_len);

    len = c.head_len + c.path_len + c.tail_len;

    if (len > size || len > (size_t) 0x7fffffff) {
        return -1;
    }

    memcpy(buf, c.head, c.head_len);
    if (c.path_len) {
        memcpy(buf + c.head_len, c.path, c.path_len);
    }
    memcpy(buf + c.head_len + c.path_len, c.tail, c.tail_len);

    if (len < size) {
        buf[len] = '\0';
    }

    return (long) len;
}


static psd_link_status_e
psd_link_parse_arg(psd_link_t *link, unsigned int bit, const char *v,
    size_t len)
{
    long     n;
    char     tmp[PSD_LINK_EXP_DIGITS + 1];
    int64_t  num;

    switch (bit) {

    case PSD_LINK_V:
        n = psd_link_unescape(tmp, 1, v, len);
        if (n != 1 || tmp[0] != '1') {
            return PSD_LINK_MALFORMED;
        }
        break;

    case PSD_LINK_KID:
        n = psd_link_unescape(link->kid, PSD_LINK_KID_MAX, v, len);
        if (n < 0 || !psd_link_token(link->kid, n, PSD_LINK_KID_MAX, 0)) {
            return PSD_LINK_MALFORMED;
        }
        link->kid_len = n;
        break;

    case PSD_LINK_EXP:
        n = psd_link_unescape(tmp, PSD_LINK_EXP_DIGITS, v, len);
        if (n < 0 || !psd_link_number(tmp, n, PSD_LINK_EXP_DIGITS, &num)) {
            return PSD_LINK_MALFORMED;
        }
        link->exp = num;
        break;

    case PSD_LINK_ID:
        n = psd_link_unescape(link->id, PSD_LINK_ID_MAX, v, len);
        if (n < 0 || !psd_link_token(link->id, n, PSD_LINK_ID_MAX, 0)) {
            return PSD_LINK_MALFORMED;
        }
        link->id_len = n;
        break;

    case PSD_LINK_ORDER:
        n = psd_link_unescape(link->order, PSD_LINK_ORDER_MAX, v, len);
        if (n < 0 || !psd_link_token(link->order, n, PSD_LINK_ORDER_MAX, 1))
        {
            return PSD_LINK_MALFORMED;
        }
        link->order_len = n;
        break;

    case PSD_LINK_SCOPE:
        n = psd_link_unescape(link->scope, PSD_LINK_SCOPE_MAX, v, len);
        if (n < 0 || !psd_link_scope_valid(link->scope, n)) {
            return PSD_LINK_MALFORMED;
        }
        link->scope_len = n;
        break;

    case PSD_LINK_IP:
        n = psd_link_unescape(link->ip, PSD_CIDR_TEXT_MAX, v, len);
        if (n <= 0 || psd_cidr_parse(&link->cidr, link->ip, n) != 0) {
            return PSD_LINK_MALFORMED;
        }
        link->ip_len = n;
        break;

    case PSD_LINK_LIMIT:
        n = psd_link_unescape(tmp, 7, v, len);
        if (n < 0 || !psd_link_number(tmp, n, 7, &num)
            || num < 1 || num > PSD_LINK_LIMIT_MAX)
        {
            return PSD_LINK_MALFORMED;
        }
        link->limit = (uint32_t) num;
        break;

    default: /* PSD_LINK_SIG */

        /* the one spelling: 43 characters, no escapes, no padding */
        if (len != PSD_LINK_SIG_LEN
            || psd_b64url_decode(link->mac, v, len) != PSD_LINK_MAC_LEN)
        {
            return PSD_LINK_MALFORMED;
        }
        break;
    }

    return PSD_LINK_OK;
}


/*
 * A refused value must not be left behind: the caller may log the fields
 * of a bad link, and an unchecked one could hold any byte, or no NUL.
 */
static void
psd_link_clear_arg(psd_link_t *link, unsigned int bit)
{
    switch (bit) {

    case PSD_LINK_KID:
        link->kid[0] = '\0';
        link->kid_len = 0;
        break;

    case PSD_LINK_ID:
        link->id[0] = '\0';
        link->id_len = 0;
        break;

    case PSD_LINK_ORDER:
        link->order[0] = '\0';
        link->order_len = 0;
        break;

    case PSD_LINK_SCOPE:
        link->scope[0] = '\0';
        link->scope_len = 0;
        break;

    case PSD_LINK_IP:
        link->ip[0] = '\0';
        link->ip_len = 0;
        break;

    default:
        break;
    }
}


psd_link_status_e
psd_link_parse(psd_link_t *link, const char *query, size_t len)
{
    size_t              i, arg_len, name_len;
    unsigned int        seen;
    const char         *p, *end, *amp, *eq, *name;
    psd_link_status_e   rc;

    link->kid[0] = '\0';
    link->id[0] = '\0';
    link->order[0] = '\0';
    link->scope[0] = '\0';
    link->ip[0] = '\0';
    link->kid_len = 0;
    link->id_len = 0;
    link->order_len = 0;
    link->scope_len = 0;
    link->ip_len = 0;
    link->exp = 0;
    link->limit = 0;
    memset(&link->cidr, 0, sizeof(link->cidr));

    seen = 0;
    p = query;
    end = query + len;

    while (p < end) {
        amp = memchr(p, '&', end - p);
        if (amp == NULL) {
            amp = end;
        }

        arg_len = amp - p;

        /* other arguments belong to the application, unsigned */
        if (arg_len < 4 || memcmp(p, "psd_", 4) != 0) {
            p = amp + 1;
            continue;
        }

        eq = memchr(p, '=', arg_len);
        if (eq == NULL) {
            return PSD_LINK_MALFORMED;
        }

        name = p + 4;
        name_len = eq - name;

        for (i = 0; i < sizeof(psd_link_args) / sizeof(psd_link_args[0]); i++) {
            if (psd_link_args[i].len == name_len
                && memcmp(psd_link_args[i].name, name, name_len) == 0)
            {
                break;
            }
        }

        if (i == sizeof(psd_link_args) / sizeof(psd_link_args[0])
            || (seen & psd_link_args[i].bit))
        {
            return PSD_LINK_MALFORMED;
        }

        seen |= psd_link_args[i].bit;

        rc = psd_link_parse_arg(link, psd_link_args[i].bit, eq + 1,
                                amp - eq - 1);
        if (rc != PSD_LINK_OK) {
            psd_link_clear_arg(link, psd_link_args[i].bit);
            return rc;
        }

        p = amp + 1;
    }

    if ((seen & PSD_LINK_REQUIRED) != PSD_LINK_REQUIRED) {
        return PSD_LINK_MALFORMED;
    }

    return PSD_LINK_OK;
}


const psd_link_key_t *
psd_link_key_find(const psd_link_key_t *keys, size_t nkeys, const char *kid,
    size_t kid_len)
{
    size_t  i;

    for (i = 0; i < nkeys; i++) {
        if (keys[i].kid_len == kid_len
            && memcmp(keys[i].kid, kid, kid_len) == 0)
        {
            return &keys[i];
        }
    }

    return NULL;
}


psd_link_status_e
psd_link_check(const psd_link_t *link, const psd_link_conf_t *conf,
    const char *path, size_t path_len, const psd_ip_t *client)
{
    int                    equal;
    int64_t                now, skew;
    unsigned char          mac[PSD_LINK_MAC_LEN];
    const psd_link_key_t  *key;

    if (path == NULL) {
        path = "";
        path_len = 0;
    }

    key = psd_link_key_find(conf->keys, conf->nkeys, link->kid,
                            link->kid_len);
    if (key == NULL) {
        return PSD_LINK_UNKNOWN_KEY;
    }

    /* a failing HMAC fails closed, like a forged link */
    if (psd_link_mac(link, key->key, key->key_len, key->hkey, path,
                     path_len, mac)
        != 0)
    {
        psd_cleanse(mac, sizeof(mac));
        return PSD_LINK_INVALID;
    }

    equal = psd_ct_equal(mac, link->mac, PSD_LINK_MAC_LEN);

    /* the expected MAC is a valid signature for whatever was asked */
    psd_cleanse(mac, sizeof(mac));

    if (!equal) {
        return PSD_LINK_INVALID;
    }

    /* subtractions, not exp + skew: no overflow for any skew or now */
    now = conf->now > 0 ? conf->now : 0;
    skew = conf->skew > 0 ? conf->skew : 0;

    if (now > link->exp && now - link->exp > skew) {
        return PSD_LINK_EXPIRED;
    }

    /* a leaked key must not mint links that outlive its rotation */
    if (conf->max_ttl > 0 && link->exp > now
        && link->exp - now > conf->max_ttl)
    {
        return PSD_LINK_INVALID;
    }

    if (!psd_link_path_valid(path, path_len, 0)) {
        return PSD_LINK_WRONG_PATH;
    }

    /* an exact link's path is in the MAC: it matched already */
    if (link->scope_len
        && (path_len < link->scope_len
            || memcmp(path, link->scope, link->scope_len) != 0))
    {
        return PSD_LINK_WRONG_PATH;
    }

    if (link->ip_len
        && (client == NULL || !psd_cidr_match(&link->cidr, client)))
    {
        return PSD_LINK_WRONG_CLIENT;
    }

    return PSD_LINK_OK;
}


psd_link_status_e
psd_link_verify(psd_link_t *link, const psd_link_conf_t *conf,
    const char *query, size_t query_len, const char *path, size_t path_len,
    const psd_ip_t *client)
{
    psd_link_status_e  rc;

    rc = psd_link_parse(link, query, query_len);
    if (rc != PSD_LINK_OK) {
        return rc;
    }

    return psd_link_check(link, conf, path, path_len, client);
}


long
psd_link_encode_path(char *buf, size_t size, const char *path, size_t len)
{
    size_t  i, n;

    n = 0;

    for (i = 0; i < len; i++) {
        n += (psd_link_unreserved((unsigned char) path[i]) || path[i] == '/')
             ? 1 : 3;
    }

    if (n >= size || n > (size_t) 0x7fffffff) {
        return -1;
    }

    n = psd_link_escape(buf, path, len, 1);
    buf[n] = '\0';

    return (long) n;
}


static char *
psd_link_put_arg(char *p, const char *name, const char *value, size_t len)
{
    size_t  n;

    n = strlen(name);

    memcpy(p, name, n);
    p += n;
    *p++ = '=';

    return p + psd_link_escape(p, value, len, 0);
}


long
psd_link_sign(const psd_link_params_t *params, char *buf, size_t size,
    const char **err)
{
    char         q[PSD_LINK_QUERY_MAX], num[20], *p;
    size_t       n;
    const char  *e;
    psd_link_t   link;

    memset(&link, 0, sizeof(psd_link_t));
    e = NULL;

    if (params->kid == NULL
        || !psd_link_token(params->kid, params->kid_len, PSD_LINK_KID_MAX, 0))
    {
        e = "invalid kid: 1 to 32 of [A-Za-z0-9_-]";
        goto failed;
    }

    if (params->key == NULL || params->key_len < PSD_LINK_KEY_MIN) {
        e = "key shorter than 32 bytes";
        goto failed;
    }

    if (params->exp < 0 || params->exp > PSD_LINK_EXP_MAX) {
        e = "invalid expiry time";
        goto failed;
    }

    if (params->id == NULL
        || !psd_link_token(params->id, params->id_len, PSD_LINK_ID_MAX, 0))
    {
        e = "invalid link id: 1 to 64 of [A-Za-z0-9_-]";
        goto failed;
    }

    if (params->order_len
        && (params->order == NULL
            || !psd_link_token(params->order, params->order_len,
                               PSD_LINK_ORDER_MAX, 1)))
    {
        e = "invalid order id: 1 to 64 of [A-Za-z0-9_.:-]";
        goto failed;
    }

    if (params->path == NULL
        || (params->prefix
            ? !psd_link_scope_valid(params->path, params->path_len)
            : !psd_link_path_valid(params->path, params->path_len, 1)))
    {
        e = params->prefix
            ? "invalid prefix: must start and end with '/', at most 1024"
              " bytes, no \"//\", \".\" or \"..\" segment, no control byte"
            : "invalid path: must start with '/', no \"//\", \".\" or \"..\""
              " segment, no control byte";
        goto failed;
    }

    if (params->ip_len
        && (params->ip == NULL || params->ip_len > PSD_CIDR_TEXT_MAX
            || psd_cidr_parse(&link.cidr, params->ip, params->ip_len) != 0))
    {
        e = "invalid ip: not a canonical IPv4/IPv6 address or CIDR";
        goto failed;
    }

    if (params->limit > PSD_LINK_LIMIT_MAX) {
        e = "invalid limit: 1 to 1000000";
        goto failed;
    }

    memcpy(link.kid, params->kid, params->kid_len);
    link.kid_len = params->kid_len;
    memcpy(link.id, params->id, params->id_len);
    link.id_len = params->id_len;

    if (params->order_len) {
        memcpy(link.order, params->order, params->order_len);
        link.order_len = params->order_len;
    }

    if (params->prefix) {
        memcpy(link.scope, params->path, params->path_len);
        link.scope_len = params->path_len;
    }

    if (params->ip_len) {
        memcpy(link.ip, params->ip, params->ip_len);
        link.ip_len = params->ip_len;
    }

    link.exp = params->exp;
    link.limit = params->limit;

    if (psd_link_mac(&link, params->key, params->key_len, params->hkey,
                     params->path, params->path_len, link.mac)
        != 0)
    {
        e = "HMAC-SHA256 failed";
        goto failed;
    }

    /* the validated lengths keep all of this within PSD_LINK_QUERY_MAX */
    p = q;
    p = psd_link_put_arg(p, "psd_v", "1", 1);
    *p++ = '&';
    p = psd_link_put_arg(p, "psd_kid", link.kid, link.kid_len);
    *p++ = '&';
    p = psd_link_put_arg(p, "psd_exp", num,
                         psd_link_uint(num, (uint64_t) link.exp) - num);
    *p++ = '&';
    p = psd_link_put_arg(p, "psd_id", link.id, link.id_len);

    if (link.order_len) {
        *p++ = '&';
        p = psd_link_put_arg(p, "psd_order", link.order, link.order_len);
    }

    if (link.scope_len) {
        *p++ = '&';
        p = psd_link_put_arg(p, "psd_scope", link.scope, link.scope_len);
    }

    if (link.ip_len) {
        *p++ = '&';
        p = psd_link_put_arg(p, "psd_ip", link.ip, link.ip_len);
    }

    if (link.limit) {
        *p++ = '&';
        p = psd_link_put_arg(p, "psd_limit", num,
                             psd_link_uint(num, link.limit) - num);
    }

    memcpy(p, "&psd_sig=", sizeof("&psd_sig=") - 1);
    p += sizeof("&psd_sig=") - 1;
    p += psd_b64url_encode(p, link.mac, PSD_LINK_MAC_LEN);

    n = p - q;

    if (n >= size) {
        e = "buffer too small";
        goto failed;
    }

    memcpy(buf, q, n);
    buf[n] = '\0';

    return (long) n;

failed:

    if (err) {
        *err = e;
    }

    return -1;
}


int
psd_link_purpose_key(const unsigned char *key, size_t key_len,
    const char *purpose, size_t purpose_len, unsigned char *out)
{
    int                   rc;
    size_t                i, lens[2];
    psd_hmac_key_t       *k;
    const unsigned char  *pieces[2];

    if (purpose == NULL || purpose_len == 0
        || purpose_len > PSD_LINK_PURPOSE_MAX)
    {
        return -1;
    }

    for (i = 0; i < purpose_len; i++) {
        if (purpose[i] < 'a' || purpose[i] > 'z') {
            return -1;
        }
    }

    pieces[0] = (const unsigned char *) "psd-link-purpose-v1\n";
    lens[0] = sizeof("psd-link-purpose-v1\n") - 1;
    pieces[1] = (const unsigned char *) purpose;
    lens[1] = purpose_len;

    /*
     * Derived at configuration time: a key object of its own, so that the
     * process-wide EVP_MAC cache is not made in a process (nginx -t, the
     * master) that never releases it.
     */

    k = psd_hmac_key_new(key, key_len);
    if (k == NULL) {
        return -1;
    }

    rc = psd_hmac_sha256_k(k, pieces, lens, 2, out);

    psd_hmac_key_free(k);

    return rc;
}
