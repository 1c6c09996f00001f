/*
 * Copyright (C) ngx_psd_module authors
 */

#include <string.h>

#include "psd_form.h"


typedef struct {
    const char  *data;
    size_t       len;
} psd_form_seg_t;


static int psd_form_hex(unsigned char c);
static const unsigned char *psd_form_check(const unsigned char *p,
    const unsigned char *end);
static size_t psd_form_decode(char *out, const unsigned char *p,
    const unsigned char *end);
static size_t psd_form_split(const char *name, size_t len,
    psd_form_seg_t *segs);
static long psd_form_path(const psd_form_conf_t *conf,
    const psd_form_seg_t *segs, size_t n);
static size_t psd_form_render(const psd_form_seg_t *segs, size_t n,
    char *out);
static int psd_form_same(const psd_form_seg_t *a, size_t an,
    const psd_form_seg_t *b, size_t bn);
static psd_form_rc_t psd_form_fail(psd_form_ctx_t *ctx, psd_form_rc_t rc,
    size_t offset, const psd_form_seg_t *segs, size_t n);


static const char  *psd_form_errors[] = {
    "ok",
    "bad_encoding",
    "duplicate_field",
    "too_many_matches",
    "no_space",
    "internal_error"
};


const char *
psd_form_strerror(psd_form_rc_t rc)
{
    if ((size_t) rc >= sizeof(psd_form_errors) / sizeof(char *)) {
        return "internal_error";
    }

    return psd_form_errors[rc];
}


size_t
psd_form_encode(char *out, const void *data, size_t len)
{
    size_t                i, o;
    unsigned char         c;
    const unsigned char  *p;
    static const char     hex[] = "0123456789ABCDEF";

    p = data;
    o = 0;

    for (i = 0; i < len; i++) {
        c = p[i];

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
            || (c >= '0' && c <= '9')
            || c == '*' || c == '-' || c == '.' || c == '_')
        {
            out[o++] = (char) c;

        } else if (c == ' ') {
            out[o++] = '+';

        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 0x0f];
        }
    }

    return o;
}


static int
psd_form_hex(unsigned char c)
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


/* NULL if [p, end) is well encoded, else the offending '%' */
static const unsigned char *
psd_form_check(const unsigned char *p, const unsigned char *end)
{
    for ( ;; ) {
        p = memchr(p, '%', (size_t) (end - p));

        if (p == NULL) {
            return NULL;
        }

        if (end - p < 3 || psd_form_hex(p[1]) < 0 || psd_form_hex(p[2]) < 0)
        {
            return p;
        }

        p += 3;
    }
}


/* [p, end) is known to be well encoded */
static size_t
psd_form_decode(char *out, const unsigned char *p, const unsigned char *end)
{
    size_t  o;

    o = 0;

    while (p < end) {
        if (*p == '%') {
            out[o++] = (char) (psd_form_hex(p[1]) * 16 + psd_form_hex(p[2]));
            p += 3;

        } else {
            out[o++] = *p == '+' ? ' ' : (char) *p;
            p++;
        }
    }

    return o;
}


/*
 * Splits a decoded name into at most PSD_PATH_SEGS_MAX segments; returns
 * their number, or PSD_PATH_SEGS_MAX + 1 for a name with more, which no
 * path can match.
 */
static size_t
psd_form_split(const char *name, size_t len, psd_form_seg_t *segs)
{
    size_t       n, i, start, base;
    const char  *close;

    /* brackets count only when every one that opens also closes */
    base = len;

    for (i = 0; i < len; i++) {
        if (name[i] == '[') {
            base = i;
            break;
        }
    }

    for (i = base; i < len; /* void */) {
        if (name[i] != '[') {
            break;
        }

        close = memchr(name + i, ']', len - i);
        if (close == NULL) {
            base = len;
            break;
        }

        i = (size_t) (close - name) + 1;
    }

    n = 0;
    start = 0;

    for (i = 0; i <= base; i++) {
        if (i < base && name[i] != '.') {
            continue;
        }

        if (n == PSD_PATH_SEGS_MAX) {
            return PSD_PATH_SEGS_MAX + 1;
        }

        segs[n].data = name + start;
        segs[n].len = i - start;
        n++;
        start = i + 1;
    }

    for (i = base; i < len && name[i] == '['; /* void */) {
        close = memchr(name + i, ']', len - i);

        if (n == PSD_PATH_SEGS_MAX) {
            return PSD_PATH_SEGS_MAX + 1;
        }

        segs[n].data = name + i + 1;
        segs[n].len = (size_t) (close - name) - i - 1;
        n++;
        i = (size_t) (close - name) + 1;
    }

    return n;
}


static long
psd_form_path(const psd_form_conf_t *conf, const psd_form_seg_t *segs,
    size_t n)
{
    size_t                 i, k;
    const psd_path_t      *path;
    const psd_path_seg_t  *seg;

    for (i = 0; i < conf->npaths; i++) {
        path = &conf->paths[i];

        if (path->nsegs != n) {
            continue;
        }

        for (k = 0; k < n; k++) {
            seg = &path->segs[k];

            if (!seg->wildcard
                && (seg->len != segs[k].len
                    || memcmp(seg->data, segs[k].data, seg->len) != 0))
            {
                break;
            }
        }

        if (k == n) {
            return (long) i;
        }
    }

    return -1;
}


static size_t
psd_form_render(const psd_form_seg_t *segs, size_t n, char *out)
{
    size_t         i, k, o, cap;
    unsigned char  c;

    /* room for "..." and the NUL */
    cap = PSD_PATH_TEXT_MAX - 4;
    o = 0;

    for (i = 0; i < n; i++) {
        if (i > 0) {
            if (o == cap) {
                goto cut;
            }

            out[o++] = '.';
        }

        for (k = 0; k < segs[i].len; k++) {
            if (o == cap) {
                goto cut;
            }

            /* decoded names need not be UTF-8: plain ASCII only */
            c = (unsigned char) segs[i].data[k];
            out[o++] = (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
                       ? '?' : (char) c;
        }
    }

    out[o] = '\0';

    return o;

cut:

    memcpy(out + o, "...", 4);

    return o + 3;
}


static int
psd_form_same(const psd_form_seg_t *a, size_t an, const psd_form_seg_t *b,
    size_t bn)
{
    size_t  i;

    if (an != bn) {
        return 0;
    }

    for (i = 0; i < an; i++) {
        if (a[i].len != b[i].len || memcmp(a[i].data, b[i].data, a[i].len))
        {
            return 0;
        }
    }

    return 1;
}


static psd_form_rc_t
psd_form_fail(psd_form_ctx_t *ctx, psd_form_rc_t rc, size_t offset,
    const psd_form_seg_t *segs, size_t n)
{
    ctx->rc = rc;
    ctx->err_offset = offset;
    ctx->err_path_len = psd_form_render(segs, n, ctx->err_path);
    ctx->nmatches = 0;

    return rc;
}


psd_form_rc_t
psd_form_scan(const psd_form_conf_t *conf, const unsigned char *buf,
    size_t len, psd_form_ctx_t *ctx)
{
    int                   empty;
    char                 *name;
    long                  path;
    size_t                i, k, n, on, name_len;
    psd_form_match_t     *m;
    psd_form_seg_t        segs[PSD_PATH_SEGS_MAX];
    psd_form_seg_t        other[PSD_PATH_SEGS_MAX];
    const unsigned char  *p, *end, *pe, *eq, *bad, *next;

    ctx->nmatches = 0;
    ctx->dec_used = 0;
    ctx->rc = PSD_FORM_ERROR;
    ctx->err_offset = 0;
    ctx->err_path[0] = '\0';
    ctx->err_path_len = 0;

    if ((conf->paths == NULL && conf->npaths > 0)
        || (ctx->matches == NULL && ctx->max_matches > 0)
        || (ctx->dec == NULL && ctx->dec_size > 0)
        || (buf == NULL && len > 0))
    {
        return PSD_FORM_ERROR;
    }

    /* an empty body may come as NULL, and NULL + 0 is undefined */
    if (len == 0) {
        ctx->rc = PSD_FORM_OK;
        return PSD_FORM_OK;
    }

    end = buf + len;

    for (p = buf; p < end; p = next) {

        pe = memchr(p, '&', (size_t) (end - p));
        if (pe == NULL) {
            pe = end;
        }

        next = pe < end ? pe + 1 : end;

        if (pe == p) {
            continue;
        }

        bad = psd_form_check(p, pe);
        if (bad != NULL) {
            return psd_form_fail(ctx, PSD_FORM_BAD_ENCODING,
                                 (size_t) (bad - buf), NULL, 0);
        }

        eq = memchr(p, '=', (size_t) (pe - p));
        if (eq == NULL) {
            eq = pe;
        }

        if (conf->npaths == 0) {
            continue;
        }

        /* the name is decoded in place of the next value, and only kept
         * if it matches: decoding never grows */
        if ((size_t) (eq - p) >= ctx->dec_size - ctx->dec_used) {
            return psd_form_fail(ctx, PSD_FORM_NO_SPACE, (size_t) (p - buf),
                                 NULL, 0);
        }

        name = ctx->dec + ctx->dec_used;
        name_len = psd_form_decode(name, p, eq);
        name[name_len] = '\0';

        n = psd_form_split(name, name_len, segs);
        if (n > PSD_PATH_SEGS_MAX) {
            continue;
        }

        path = psd_form_path(conf, segs, n);
        if (path < 0) {
            continue;
        }

        empty = 0;

        for (k = 0; k < n; k++) {
            if (segs[k].len == 0) {
                empty = 1;
            }
        }

        for (i = 0; !empty && i < ctx->nmatches; i++) {
            m = &ctx->matches[i];
            on = psd_form_split(m->name, m->name_len, other);

            if (psd_form_same(segs, n, other, on)) {
                return psd_form_fail(ctx, PSD_FORM_DUPLICATE,
                                     (size_t) (p - buf), segs, n);
            }
        }

        if (ctx->nmatches == ctx->max_matches) {
            return psd_form_fail(ctx, PSD_FORM_TOO_MANY_MATCHES,
                                 (size_t) (p - buf), segs, n);
        }

        ctx->dec_used += name_len + 1;

        if (eq < pe && (size_t) (pe - eq - 1) >= ctx->dec_size - ctx->dec_used)
        {
            return psd_form_fail(ctx, PSD_FORM_NO_SPACE, (size_t) (p - buf),
                                 segs, n);
        }

        m = &ctx->matches[ctx->nmatches++];

        m->name_start = (size_t) (p - buf);
        m->name_end = (size_t) (eq - buf);
        m->has_value = eq < pe;
        m->start = (size_t) ((eq < pe ? eq + 1 : pe) - buf);
        m->end = (size_t) (pe - buf);
        m->path_index = (size_t) path;
        m->name = name;
        m->name_len = name_len;
        m->path_len = psd_form_render(segs, n, m->path);

        if (m->has_value) {
            m->value = ctx->dec + ctx->dec_used;
            m->value_len = psd_form_decode(ctx->dec + ctx->dec_used, eq + 1,
                                           pe);
            ctx->dec[ctx->dec_used + m->value_len] = '\0';
            ctx->dec_used += m->value_len + 1;

        } else {
            /* the name's NUL doubles as an empty value */
            m->value = name + name_len;
            m->value_len = 0;
        }
    }

    ctx->rc = PSD_FORM_OK;

    return PSD_FORM_OK;
}
