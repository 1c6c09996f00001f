/*
 * Copyright (C) ngx_psd_module authors
 */

#include <string.h>

#include "psd_crypto.h"
#include "psd_json.h"


#define PSD_JSON_NO_SLOT  0xffffffffU

#define psd_json_ws(c)  ((c) == ' ' || (c) == '\t' || (c) == '\n'            \
                         || (c) == '\r')


/* one open object or array */
typedef struct {
    size_t       start;         /* offset of the '{' or '[' */
    size_t       match;         /* 1 + the index of its match, or 0 */
    size_t       index;         /* array: the element being read */
    size_t       key;           /* object: the key being read, its content */
    size_t       key_len;
    uint32_t     mask;          /* paths that go on below this container */
    uint32_t     obj;           /* object: serial number, for the table */
    uint32_t     mark;          /* object: the last slot before its keys */
    unsigned     array:1;
    unsigned     has_seg:1;     /* a key or index is being read */
} psd_json_frame_t;


typedef struct {
    const psd_json_conf_t  *conf;
    psd_json_ctx_t         *ctx;
    const unsigned char    *buf;
    const unsigned char    *end;
    psd_json_frame_t       *frames;
    size_t                  depth;
    uint64_t                k0;
    uint64_t                k1;
    uint32_t                last;       /* the slot inserted last */
    uint32_t                nobj;
    size_t                  live;       /* keys of all open objects */
} psd_json_state_t;


/* SipHash-1-3 over a byte stream: the key table must not be floodable */
typedef struct {
    uint64_t  v0;
    uint64_t  v1;
    uint64_t  v2;
    uint64_t  v3;
    uint64_t  m;
    size_t    n;
} psd_sip_t;


static void psd_sip_round(psd_sip_t *s);
static void psd_sip_init(psd_sip_t *s, uint64_t k0, uint64_t k1);
static void psd_sip_byte(psd_sip_t *s, unsigned char b);
static uint64_t psd_sip_final(psd_sip_t *s);
static size_t psd_utf8_len(const unsigned char *p, const unsigned char *end);
static long psd_json_hex4(const unsigned char *p, const unsigned char *end);
static size_t psd_json_unit(const unsigned char **pp, unsigned char *out);
static int psd_json_key_is(const unsigned char *key, size_t key_len,
    const char *s, size_t n);
static int psd_json_keys_equal(const unsigned char *a, size_t alen,
    const unsigned char *b, size_t blen);
static psd_json_rc_t psd_json_fail(psd_json_state_t *st, psd_json_rc_t rc,
    const unsigned char *at);
static size_t psd_json_render(psd_json_state_t *st, size_t depth,
    char *out);
static const unsigned char *psd_json_string(psd_json_state_t *st,
    const unsigned char *p);
static const unsigned char *psd_json_number(const unsigned char *p,
    const unsigned char *end, const unsigned char **bad);
static psd_json_rc_t psd_json_key_insert(psd_json_state_t *st,
    psd_json_frame_t *f, const unsigned char *at);
static void psd_json_keys_drop(psd_json_state_t *st, psd_json_frame_t *f);
static void psd_json_child(psd_json_state_t *st, uint32_t mask, size_t d,
    const unsigned char *key, size_t key_len, size_t index, int is_index,
    uint32_t *descend, long *match);
static psd_json_rc_t psd_json_match(psd_json_state_t *st,
    const unsigned char *start, const unsigned char *end,
    psd_json_type_t type, long path);


static const char  *psd_json_errors[] = {
    "ok",
    "invalid_json",
    "invalid_utf8",
    "not_an_object",
    "too_deep",
    "duplicate_key",
    "too_many_keys",
    "too_many_matches",
    "no_space",
    "too_large",
    "internal_error"
};


static const char  *psd_json_types[] = {
    "string",
    "number",
    "object",
    "array",
    "true",
    "false",
    "null"
};


const char *
psd_json_strerror(psd_json_rc_t rc)
{
    if ((size_t) rc >= sizeof(psd_json_errors) / sizeof(char *)) {
        return "internal_error";
    }

    return psd_json_errors[rc];
}


const char *
psd_json_type_name(psd_json_type_t type)
{
    if ((size_t) type >= sizeof(psd_json_types) / sizeof(char *)) {
        return "unknown";
    }

    return psd_json_types[type];
}


/* paths */

int
psd_path_parse(const char *text, size_t len, psd_path_t *path)
{
    size_t           i, j, start, n;
    psd_path_seg_t  *seg;

    n = 0;
    start = 0;

    for (i = 0; i <= len; i++) {
        if (i < len && text[i] != '.') {
            continue;
        }

        if (i == start || n == PSD_PATH_SEGS_MAX) {
            return -1;
        }

        seg = &path->segs[n++];
        seg->data = text + start;
        seg->len = i - start;
        seg->wildcard = (seg->len == 1 && seg->data[0] == '*');
        seg->index = -1;

        /* canonical decimals only: "01" is a key, never index 1 */
        if (seg->len <= 9 && (seg->len == 1 || seg->data[0] != '0')) {
            seg->index = 0;

            for (j = 0; j < seg->len; j++) {
                if (seg->data[j] < '0' || seg->data[j] > '9') {
                    seg->index = -1;
                    break;
                }

                seg->index = seg->index * 10 + (seg->data[j] - '0');
            }
        }

        start = i + 1;
    }

    path->nsegs = n;

    return 0;
}


/* rewriting */

int
psd_rewrite_len(size_t len, const psd_edit_t *edits, size_t n,
    size_t *out_len)
{
    size_t  i, pos, total;

    pos = 0;
    total = len;

    for (i = 0; i < n; i++) {
        if (edits[i].start < pos || edits[i].end < edits[i].start
            || edits[i].end > len
            || (edits[i].data == NULL && edits[i].len > 0))
        {
            return -1;
        }

        total -= edits[i].end - edits[i].start;

        if (edits[i].len > (size_t) -1 - total) {
            return -1;
        }

        total += edits[i].len;
        pos = edits[i].end;
    }

    *out_len = total;

    return 0;
}


int
psd_rewrite(const unsigned char *buf, size_t len, const psd_edit_t *edits,
    size_t n, unsigned char *out, size_t out_size, size_t *out_len)
{
    size_t          i, pos, total;
    unsigned char  *o;

    if (psd_rewrite_len(len, edits, n, &total) != 0 || total > out_size) {
        return -1;
    }

    o = out;
    pos = 0;

    /* no memcpy() of zero bytes: buf and data may then be NULL */
    for (i = 0; i < n; i++) {
        if (edits[i].start > pos) {
            memcpy(o, buf + pos, edits[i].start - pos);
            o += edits[i].start - pos;
        }

        if (edits[i].len) {
            memcpy(o, edits[i].data, edits[i].len);
            o += edits[i].len;
        }

        pos = edits[i].end;
    }

    if (len > pos) {
        memcpy(o, buf + pos, len - pos);
    }

    *out_len = total;

    return 0;
}


size_t
psd_json_quote(char *out, size_t out_size, const void *data, size_t len)
{
    size_t                i, o, n;
    unsigned char         c;
    char                  esc[6];
    const unsigned char  *p;
    static const char     hex[] = "0123456789abcdef";

    p = data;
    o = 0;

    if (out_size < 2) {
        return 0;
    }

    out[o++] = '"';

    for (i = 0; i < len; i++) {
        c = p[i];
        n = 2;
        esc[0] = '\\';

        switch (c) {
        case '"':  esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;

        default:
            if (c < 0x20) {
                esc[1] = 'u';
                esc[2] = '0';
                esc[3] = '0';
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 0x0f];
                n = 6;

            } else {
                esc[0] = (char) c;
                n = 1;
            }
        }

        /* one byte is kept for the closing quote */
        if (out_size - o < n + 1) {
            return 0;
        }

        memcpy(out + o, esc, n);
        o += n;
    }

    out[o++] = '"';

    return o;
}


/* SipHash-1-3 */

#define psd_rotl(x, b)  (uint64_t) (((x) << (b)) | ((x) >> (64 - (b))))


static void
psd_sip_round(psd_sip_t *s)
{
    s->v0 += s->v1;
    s->v1 = psd_rotl(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = psd_rotl(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = psd_rotl(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = psd_rotl(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = psd_rotl(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = psd_rotl(s->v2, 32);
}


static void
psd_sip_init(psd_sip_t *s, uint64_t k0, uint64_t k1)
{
    s->v0 = k0 ^ 0x736f6d6570736575ULL;
    s->v1 = k1 ^ 0x646f72616e646f6dULL;
    s->v2 = k0 ^ 0x6c7967656e657261ULL;
    s->v3 = k1 ^ 0x7465646279746573ULL;
    s->m = 0;
    s->n = 0;
}


static void
psd_sip_byte(psd_sip_t *s, unsigned char b)
{
    s->m |= (uint64_t) b << (8 * (s->n & 7));

    if ((++s->n & 7) == 0) {
        s->v3 ^= s->m;
        psd_sip_round(s);
        s->v0 ^= s->m;
        s->m = 0;
    }
}


static uint64_t
psd_sip_final(psd_sip_t *s)
{
    uint64_t  b;

    b = s->m | ((uint64_t) (s->n & 0xff) << 56);

    s->v3 ^= b;
    psd_sip_round(s);
    s->v0 ^= b;

    s->v2 ^= 0xff;
    psd_sip_round(s);
    psd_sip_round(s);
    psd_sip_round(s);

    return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}


/* strings */

/* the length of a well-formed UTF-8 sequence at p, or 0 (RFC 3629) */
static size_t
psd_utf8_len(const unsigned char *p, const unsigned char *end)
{
    size_t         i, n;
    unsigned char  c, lo, hi;

    c = p[0];
    lo = 0x80;
    hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;

    } else if (c == 0xe0) {
        n = 3;
        lo = 0xa0;              /* overlong */

    } else if (c == 0xed) {
        n = 3;
        hi = 0x9f;              /* surrogates */

    } else if (c >= 0xe1 && c <= 0xef) {
        n = 3;

    } else if (c == 0xf0) {
        n = 4;
        lo = 0x90;              /* overlong */

    } else if (c >= 0xf1 && c <= 0xf3) {
        n = 4;

    } else if (c == 0xf4) {
        n = 4;
        hi = 0x8f;              /* past U+10FFFF */

    } else {
        return 0;
    }

    if ((size_t) (end - p) < n || p[1] < lo || p[1] > hi) {
        return 0;
    }

    for (i = 2; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
    }

    return n;
}


static long
psd_json_hex4(const unsigned char *p, const unsigned char *end)
{
    long           v;
    size_t         i;
    unsigned char  c;

    if (end - p < 4) {
        return -1;
    }

    v = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];

        if (c >= '0' && c <= '9') {
            v = v * 16 + (c - '0');

        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            v = v * 16 + ((c | 0x20) - 'a' + 10);

        } else {
            return -1;
        }
    }

    return v;
}


/*
 * Decodes one code point of validated string content at *pp into its
 * UTF-8 bytes.  Every unit is one code point, so two strings decode alike
 * exactly when their units are equal one by one.
 */
static size_t
psd_json_unit(const unsigned char **pp, unsigned char *out)
{
    long                  cp, lo;
    size_t                n;
    unsigned char         c;
    const unsigned char  *p;

    p = *pp;
    c = *p;

    if (c != '\\') {
        n = 1;

        if (c >= 0xf0) {
            n = 4;

        } else if (c >= 0xe0) {
            n = 3;

        } else if (c >= 0x80) {
            n = 2;
        }

        memcpy(out, p, n);
        *pp = p + n;

        return n;
    }

    *pp = p + 2;

    switch (p[1]) {
    case 'b': out[0] = '\b'; return 1;
    case 'f': out[0] = '\f'; return 1;
    case 'n': out[0] = '\n'; return 1;
    case 'r': out[0] = '\r'; return 1;
    case 't': out[0] = '\t'; return 1;
    case 'u': break;
    default:  out[0] = p[1]; return 1;
    }

    cp = psd_json_hex4(p + 2, p + 6);
    p += 6;

    if (cp >= 0xd800 && cp <= 0xdbff) {
        lo = psd_json_hex4(p + 2, p + 6);
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        p += 6;
    }

    *pp = p;

    if (cp < 0x80) {
        out[0] = (unsigned char) cp;
        return 1;
    }

    if (cp < 0x800) {
        out[0] = (unsigned char) (0xc0 | (cp >> 6));
        out[1] = (unsigned char) (0x80 | (cp & 0x3f));
        return 2;
    }

    if (cp < 0x10000) {
        out[0] = (unsigned char) (0xe0 | (cp >> 12));
        out[1] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
        out[2] = (unsigned char) (0x80 | (cp & 0x3f));
        return 3;
    }

    out[0] = (unsigned char) (0xf0 | (cp >> 18));
    out[1] = (unsigned char) (0x80 | ((cp >> 12) & 0x3f));
    out[2] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
    out[3] = (unsigned char) (0x80 | (cp & 0x3f));
    return 4;
}


/* does the raw key content decode to the n bytes at s? */
static int
psd_json_key_is(const unsigned char *key, size_t key_len, const char *s,
    size_t n)
{
    size_t                i, un;
    unsigned char         u[4];
    const unsigned char  *end;

    if (key_len == n && memcmp(key, s, n) == 0) {
        return 1;
    }

    if (memchr(key, '\\', key_len) == NULL) {
        return 0;
    }

    end = key + key_len;
    i = 0;

    while (key < end) {
        un = psd_json_unit(&key, u);

        if (un > n - i || memcmp(u, s + i, un) != 0) {
            return 0;
        }

        i += un;
    }

    return i == n;
}


static int
psd_json_keys_equal(const unsigned char *a, size_t alen,
    const unsigned char *b, size_t blen)
{
    size_t                an, bn;
    unsigned char         au[4], bu[4];
    const unsigned char  *ae, *be;

    if (alen == blen && memcmp(a, b, alen) == 0) {
        return 1;
    }

    ae = a + alen;
    be = b + blen;

    while (a < ae && b < be) {
        an = psd_json_unit(&a, au);
        bn = psd_json_unit(&b, bu);

        if (an != bn || memcmp(au, bu, an) != 0) {
            return 0;
        }
    }

    return a == ae && b == be;
}


/*
 * Validates string content from p (just past the opening quote) and
 * returns the closing quote, or NULL after psd_json_fail().
 */
static const unsigned char *
psd_json_string(psd_json_state_t *st, const unsigned char *p)
{
    long                  cp;
    size_t                n;
    const unsigned char  *end;

    end = st->end;

    while (p < end) {

        if (*p == '"') {
            return p;
        }

        if (*p == '\\') {
            if (end - p < 2) {
                break;
            }

            switch (p[1]) {
            case '"': case '\\': case '/': case 'b':
            case 'f': case 'n': case 'r': case 't':
                p += 2;
                continue;

            case 'u':
                break;

            default:
                psd_json_fail(st, PSD_JSON_INVALID, p);
                return NULL;
            }

            cp = psd_json_hex4(p + 2, end);

            /* a lone surrogate has no UTF-8 form */
            if (cp < 0 || (cp >= 0xdc00 && cp <= 0xdfff)) {
                psd_json_fail(st, PSD_JSON_INVALID, p);
                return NULL;
            }

            if (cp >= 0xd800 && cp <= 0xdbff) {
                cp = -1;

                if (end - p >= 12 && p[6] == '\\' && p[7] == 'u') {
                    cp = psd_json_hex4(p + 8, end);
                }

                if (cp < 0xdc00 || cp > 0xdfff) {
                    psd_json_fail(st, PSD_JSON_INVALID, p);
                    return NULL;
                }

                p += 6;
            }

            p += 6;
            continue;
        }

        if (*p < 0x20) {
            psd_json_fail(st, PSD_JSON_INVALID, p);
            return NULL;
        }

        if (*p < 0x80) {
            p++;
            continue;
        }

        n = psd_utf8_len(p, end);
        if (n == 0) {
            psd_json_fail(st, PSD_JSON_INVALID_UTF8, p);
            return NULL;
        }

        p += n;
    }

    psd_json_fail(st, PSD_JSON_INVALID, end);

    return NULL;
}


/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static const unsigned char *
psd_json_number(const unsigned char *p, const unsigned char *end,
    const unsigned char **bad)
{
    if (p < end && *p == '-') {
        p++;
    }

    if (p < end && *p == '0') {
        p++;

    } else if (p < end && *p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }

    } else {
        goto failed;
    }

    if (p < end && *p == '.') {
        p++;

        if (p == end || *p < '0' || *p > '9') {
            goto failed;
        }

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < end && (*p == '+' || *p == '-')) {
            p++;
        }

        if (p == end || *p < '0' || *p > '9') {
            goto failed;
        }

        while (p < end && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    return p;

failed:

    *bad = p;

    return NULL;
}


/* errors and paths */

static psd_json_rc_t
psd_json_fail(psd_json_state_t *st, psd_json_rc_t rc, const unsigned char *at)
{
    psd_json_ctx_t  *ctx;

    ctx = st->ctx;

    ctx->rc = rc;
    ctx->err_offset = (size_t) (at - st->buf);
    ctx->err_path_len = psd_json_render(st, st->depth, ctx->err_path);
    ctx->nmatches = 0;

    return rc;
}


/*
 * The concrete path of the first depth frames, for messages: cut with
 * "..." at PSD_PATH_TEXT_MAX, and '?' for the bytes a JSON string or a
 * log line would need escaped.
 */
static size_t
psd_json_render(psd_json_state_t *st, size_t depth, char *out)
{
    int                   first;
    char                  num[24];
    size_t                i, o, k, n, idx, cap;
    unsigned char         u[4];
    psd_json_frame_t     *f;
    const unsigned char  *p, *end;

    /* room for "..." and the NUL */
    cap = PSD_PATH_TEXT_MAX - 4;
    o = 0;
    first = 1;

    for (i = 0; i < depth; i++) {
        f = &st->frames[i];

        if (!f->has_seg) {
            continue;
        }

        if (!first) {
            if (o == cap) {
                goto cut;
            }

            out[o++] = '.';
        }

        first = 0;

        if (f->array) {
            k = sizeof(num);
            idx = f->index;

            do {
                num[--k] = (char) ('0' + idx % 10);
                idx /= 10;
            } while (idx);

            n = sizeof(num) - k;

            if (n > cap - o) {
                goto cut;
            }

            memcpy(out + o, num + k, n);
            o += n;

            continue;
        }

        p = st->buf + f->key;
        end = p + f->key_len;

        while (p < end) {
            n = psd_json_unit(&p, u);

            if (n == 1 && (u[0] < 0x20 || u[0] == 0x7f || u[0] == '"'
                           || u[0] == '\\'))
            {
                u[0] = '?';
            }

            if (n > cap - o) {
                goto cut;
            }

            memcpy(out + o, u, n);
            o += n;
        }
    }

    out[o] = '\0';

    return o;

cut:

    memcpy(out + o, "...", 4);

    return o + 3;
}


/* the duplicate key table */

static psd_json_rc_t
psd_json_key_insert(psd_json_state_t *st, psd_json_frame_t *f,
    const unsigned char *at)
{
    size_t                mask, i, n;
    uint32_t              h;
    psd_sip_t             sip;
    unsigned char         u[4];
    psd_json_slot_t      *s, *slots;
    const unsigned char  *key, *p, *end;

    slots = st->ctx->slots;
    mask = st->ctx->nslots - 1;

    if (st->live >= st->ctx->nslots / 2) {
        return psd_json_fail(st, PSD_JSON_TOO_MANY_KEYS, at);
    }

    key = st->buf + f->key;
    end = key + f->key_len;

    /* the hash covers the object and the decoded key, so that "a" and
     * "\u0061" meet in one chain */
    psd_sip_init(&sip, st->k0, st->k1);

    for (i = 0; i < 4; i++) {
        psd_sip_byte(&sip, (unsigned char) (f->obj >> (8 * i)));
    }

    for (p = key; p < end; /* void */) {
        n = psd_json_unit(&p, u);

        for (i = 0; i < n; i++) {
            psd_sip_byte(&sip, u[i]);
        }
    }

    h = (uint32_t) psd_sip_final(&sip);

    for (i = h & mask; slots[i].obj != 0; i = (i + 1) & mask) {
        s = &slots[i];

        if (s->obj == f->obj && s->hash == h
            && psd_json_keys_equal(st->buf + s->key, s->key_len, key,
                                   f->key_len))
        {
            return psd_json_fail(st, PSD_JSON_DUPLICATE_KEY, at);
        }
    }

    s = &slots[i];
    s->hash = h;
    s->obj = f->obj;
    s->key = (uint32_t) f->key;
    s->key_len = (uint32_t) f->key_len;
    s->prev = st->last;

    st->last = (uint32_t) i;
    st->live++;

    return PSD_JSON_OK;
}


/*
 * Linear probing never moves an entry, so undoing insertions newest first
 * restores the table exactly: a closed object just clears its slots.
 */
static void
psd_json_keys_drop(psd_json_state_t *st, psd_json_frame_t *f)
{
    psd_json_slot_t  *s;

    while (st->last != f->mark) {
        s = &st->ctx->slots[st->last];
        s->obj = 0;
        st->last = s->prev;
        st->live--;
    }
}


/* matching */

/*
 * From the paths going on below a container (mask) and the key or index
 * of one of its values, at segment d: which of them go on below the value
 * (descend), and the first that ends at it (match).
 */
static void
psd_json_child(psd_json_state_t *st, uint32_t mask, size_t d,
    const unsigned char *key, size_t key_len, size_t index, int is_index,
    uint32_t *descend, long *match)
{
    size_t                i;
    const psd_path_t     *path;
    const psd_path_seg_t  *seg;

    *descend = 0;
    *match = -1;

    for (i = 0; mask != 0; i++, mask >>= 1) {
        if (!(mask & 1)) {
            continue;
        }

        path = &st->conf->paths[i];
        seg = &path->segs[d];

        if (!seg->wildcard) {
            if (is_index) {
                if (seg->index < 0 || (size_t) seg->index != index) {
                    continue;
                }

            } else if (!psd_json_key_is(key, key_len, seg->data, seg->len)) {
                continue;
            }
        }

        if (path->nsegs == d + 1) {
            if (*match < 0) {
                *match = (long) i;
            }

        } else {
            *descend |= (uint32_t) 1 << i;
        }
    }
}


static psd_json_rc_t
psd_json_match(psd_json_state_t *st, const unsigned char *start,
    const unsigned char *end, psd_json_type_t type, long path)
{
    char                  *d;
    size_t                 n;
    psd_json_ctx_t        *ctx;
    psd_json_match_t      *m;
    const unsigned char   *p, *e;

    ctx = st->ctx;

    if (ctx->nmatches == ctx->max_matches) {
        return psd_json_fail(st, PSD_JSON_TOO_MANY_MATCHES, start);
    }

    m = &ctx->matches[ctx->nmatches];

    m->start = (size_t) (start - st->buf);
    m->end = (size_t) (end - st->buf);
    m->type = type;
    m->path_index = (size_t) path;
    m->value = NULL;
    m->value_len = 0;

    if (type != PSD_JSON_OBJECT && type != PSD_JSON_ARRAY) {

        p = start;
        e = end;

        if (type == PSD_JSON_STRING) {
            p++;
            e--;
        }

        /* decoding never grows a string */
        if ((size_t) (e - p) >= ctx->dec_size - ctx->dec_used) {
            return psd_json_fail(st, PSD_JSON_NO_SPACE, start);
        }

        d = ctx->dec + ctx->dec_used;
        m->value = d;

        if (type == PSD_JSON_STRING) {
            while (p < e) {
                d += psd_json_unit(&p, (unsigned char *) d);
            }

        } else {
            memcpy(d, p, (size_t) (e - p));
            d += e - p;
        }

        *d = '\0';
        n = (size_t) (d - m->value);
        m->value_len = n;
        ctx->dec_used += n + 1;
    }

    m->path_len = psd_json_render(st, st->depth, m->path);

    ctx->nmatches++;

    return PSD_JSON_OK;
}


psd_json_rc_t
psd_json_scan(const psd_json_conf_t *conf, const unsigned char *buf,
    size_t len, psd_json_ctx_t *ctx)
{
    long                  c_match;
    size_t                i, max_depth;
    uint32_t              c_mask, all;
    unsigned char         seed[16];
    psd_json_rc_t         rc;
    psd_json_type_t       type, root;
    psd_json_frame_t     *f;
    psd_json_state_t      st;
    const unsigned char  *p, *q, *end, *bad, *root_at;
    psd_json_frame_t      frames[PSD_JSON_DEPTH_MAX];

    ctx->nmatches = 0;
    ctx->dec_used = 0;
    ctx->rc = PSD_JSON_ERROR;
    ctx->err_offset = 0;
    ctx->err_path[0] = '\0';
    ctx->err_path_len = 0;

    max_depth = conf->max_depth ? conf->max_depth : PSD_JSON_DEPTH_DEFAULT;

    if (max_depth > PSD_JSON_DEPTH_MAX || conf->npaths > PSD_PATHS_MAX
        || (conf->paths == NULL && conf->npaths > 0)
        || (ctx->matches == NULL && ctx->max_matches > 0)
        || (ctx->dec == NULL && ctx->dec_size > 0)
        || ctx->slots == NULL || ctx->nslots < 2
        || (ctx->nslots & (ctx->nslots - 1)) != 0
        || ctx->nslots > 0x80000000U
        || (buf == NULL && len > 0))
    {
        return PSD_JSON_ERROR;
    }

    /* offsets live in 32 bits in the key table */
    if (len >= 0xffffffffU) {
        ctx->rc = PSD_JSON_TOO_LARGE;
        return PSD_JSON_TOO_LARGE;
    }

    /* an empty body may come as NULL, and NULL + 0 is undefined */
    if (buf == NULL) {
        buf = (const unsigned char *) "";
    }

    if (conf->hash_key) {
        memcpy(seed, conf->hash_key, sizeof(seed));

    } else if (psd_random_bytes(seed, sizeof(seed)) != 0) {
        return PSD_JSON_ERROR;
    }

    memset(&st, 0, sizeof(st));
    memcpy(&st.k0, seed, 8);
    memcpy(&st.k1, seed + 8, 8);
    psd_cleanse(seed, sizeof(seed));

    st.conf = conf;
    st.ctx = ctx;
    st.buf = buf;
    st.end = buf + len;
    st.frames = frames;
    st.last = PSD_JSON_NO_SLOT;

    memset(ctx->slots, 0, ctx->nslots * sizeof(psd_json_slot_t));

    /* a path that psd_path_parse() did not make never matches */
    all = 0;

    for (i = 0; i < conf->npaths; i++) {
        if (conf->paths[i].nsegs >= 1
            && conf->paths[i].nsegs <= PSD_PATH_SEGS_MAX)
        {
            all |= (uint32_t) 1 << i;
        }
    }

    p = buf;
    end = buf + len;

    while (p < end && psd_json_ws(*p)) {
        p++;
    }

    /* matching only makes sense in an object; anything else is refused
     * once known to be valid */
    root = (p < end && *p == '{') ? PSD_JSON_OBJECT : PSD_JSON_NULL;
    c_mask = root == PSD_JSON_OBJECT ? all : 0;
    c_match = -1;
    root_at = p;

value:

    if (p == end) {
        return psd_json_fail(&st, PSD_JSON_INVALID, p);
    }

    switch (*p) {

    case '{':
    case '[':
        if (st.depth == max_depth) {
            return psd_json_fail(&st, PSD_JSON_TOO_DEEP, p);
        }

        type = *p == '{' ? PSD_JSON_OBJECT : PSD_JSON_ARRAY;

        if (c_match >= 0) {
            rc = psd_json_match(&st, p, p, type, c_match);
            if (rc != PSD_JSON_OK) {
                return rc;
            }
        }

        f = &frames[st.depth++];
        f->start = (size_t) (p - buf);
        f->match = c_match >= 0 ? ctx->nmatches : 0;
        f->index = 0;
        f->key = 0;
        f->key_len = 0;
        f->mask = c_mask;
        f->array = type == PSD_JSON_ARRAY;
        f->has_seg = 0;

        do {
            p++;
        } while (p < end && psd_json_ws(*p));

        if (f->array) {
            if (p < end && *p == ']') {
                p++;
                goto close;
            }

            f->has_seg = 1;
            psd_json_child(&st, f->mask, st.depth - 1, NULL, 0, 0, 1,
                           &c_mask, &c_match);
            goto value;
        }

        f->obj = ++st.nobj;
        f->mark = st.last;

        if (p < end && *p == '}') {
            p++;
            goto close;
        }

        goto key;

    case '"':
        q = psd_json_string(&st, p + 1);
        if (q == NULL) {
            return ctx->rc;
        }

        q++;
        type = PSD_JSON_STRING;
        break;

    case 't':
    case 'f':
    case 'n':
        if (*p == 't' && end - p >= 4 && memcmp(p, "true", 4) == 0) {
            q = p + 4;
            type = PSD_JSON_TRUE;

        } else if (*p == 'f' && end - p >= 5 && memcmp(p, "false", 5) == 0) {
            q = p + 5;
            type = PSD_JSON_FALSE;

        } else if (*p == 'n' && end - p >= 4 && memcmp(p, "null", 4) == 0) {
            q = p + 4;
            type = PSD_JSON_NULL;

        } else {
            return psd_json_fail(&st, PSD_JSON_INVALID, p);
        }

        break;

    default:
        if (*p != '-' && (*p < '0' || *p > '9')) {
            return psd_json_fail(&st, PSD_JSON_INVALID, p);
        }

        bad = p;
        q = psd_json_number(p, end, &bad);
        if (q == NULL) {
            return psd_json_fail(&st, PSD_JSON_INVALID, bad);
        }

        type = PSD_JSON_NUMBER;
        break;
    }

    /* a scalar [p, q) */

    if (c_match >= 0) {
        rc = psd_json_match(&st, p, q, type, c_match);
        if (rc != PSD_JSON_OK) {
            return rc;
        }
    }

    p = q;

    goto after;

key:

    if (p == end || *p != '"') {
        return psd_json_fail(&st, PSD_JSON_INVALID, p);
    }

    f = &frames[st.depth - 1];

    q = psd_json_string(&st, p + 1);
    if (q == NULL) {
        return ctx->rc;
    }

    f->key = (size_t) (p + 1 - buf);
    f->key_len = (size_t) (q - p - 1);
    f->has_seg = 1;

    rc = psd_json_key_insert(&st, f, p);
    if (rc != PSD_JSON_OK) {
        return rc;
    }

    psd_json_child(&st, f->mask, st.depth - 1, buf + f->key, f->key_len, 0,
                   0, &c_mask, &c_match);

    p = q + 1;

    while (p < end && psd_json_ws(*p)) {
        p++;
    }

    if (p == end || *p != ':') {
        return psd_json_fail(&st, PSD_JSON_INVALID, p);
    }

    do {
        p++;
    } while (p < end && psd_json_ws(*p));

    goto value;

close:

    f = &frames[st.depth - 1];

    if (f->match) {
        ctx->matches[f->match - 1].end = (size_t) (p - buf);
    }

    if (!f->array) {
        psd_json_keys_drop(&st, f);
    }

    st.depth--;

after:

    while (p < end && psd_json_ws(*p)) {
        p++;
    }

    if (st.depth == 0) {
        if (p != end) {
            return psd_json_fail(&st, PSD_JSON_INVALID, p);
        }

        if (root != PSD_JSON_OBJECT) {
            return psd_json_fail(&st, PSD_JSON_NOT_OBJECT, root_at);
        }

        ctx->rc = PSD_JSON_OK;

        return PSD_JSON_OK;
    }

    if (p == end) {
        return psd_json_fail(&st, PSD_JSON_INVALID, p);
    }

    f = &frames[st.depth - 1];

    if (*p == ',') {
        do {
            p++;
        } while (p < end && psd_json_ws(*p));

        if (!f->array) {
            goto key;
        }

        f->index++;
        psd_json_child(&st, f->mask, st.depth - 1, NULL, 0, f->index, 1,
                       &c_mask, &c_match);
        goto value;
    }

    if (*p == (f->array ? ']' : '}')) {
        p++;
        goto close;
    }

    return psd_json_fail(&st, PSD_JSON_INVALID, p);
}
