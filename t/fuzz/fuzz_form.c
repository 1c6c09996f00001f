/*
 * libFuzzer target: psd_form_scan(), psd_form_encode() and psd_rewrite().
 *
 * Invariants checked (abort() on violation):
 *  - matches are in body order, their ranges inside one '&'-separated
 *    pair, and their decoded values equal a naive decoding of the range;
 *  - a body rewritten with no edits comes back byte for byte;
 *  - replacing every value with an encoded awkward string gives a body
 *    that scans with the same matches, each decoding to that string;
 *  - psd_form_encode() output is well-formed and decodes back.
 *
 * Build: see docs/tokenization-internals.md.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psd_form.h"


#define MAX_MATCHES  32
#define AWKWARD      "tok x&=%+[].\xc3\xa9"


static const char  *specs[] = {
    "card.number",
    "card.cvc",
    "cards.*.number",
    "*",
    "a.b.c"
};


static void
die(const char *what)
{
    fprintf(stderr, "fuzz_form: invariant broken: %s\n", what);
    abort();
}


static psd_form_rc_t
scan(const unsigned char *buf, size_t len, psd_form_ctx_t *ctx,
    psd_form_match_t *matches, char *dec, size_t dec_size)
{
    size_t           i;
    psd_form_conf_t  conf;
    psd_path_t       paths[sizeof(specs) / sizeof(specs[0])];

    for (i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        if (psd_path_parse(specs[i], strlen(specs[i]), &paths[i]) != 0) {
            die("path");
        }
    }

    conf.paths = paths;
    conf.npaths = i;

    memset(ctx, 0, sizeof(psd_form_ctx_t));
    ctx->matches = matches;
    ctx->max_matches = MAX_MATCHES;
    ctx->dec = dec;
    ctx->dec_size = dec_size;

    return psd_form_scan(&conf, buf, len, ctx);
}


static int
hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}


/* a second, naive decoder; -1 on bad encoding */
static long
naive_decode(const unsigned char *p, size_t len, char *out)
{
    size_t  i, o;

    for (i = 0, o = 0; i < len; i++) {
        if (p[i] == '%') {
            if (i + 2 >= len || hexval(p[i + 1]) < 0 || hexval(p[i + 2]) < 0)
            {
                return -1;
            }
            out[o++] = (char) (hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
            i += 2;

        } else {
            out[o++] = p[i] == '+' ? ' ' : (char) p[i];
        }
    }

    return (long) o;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char              *dec, *dec2, *naive, enc[3 * sizeof(AWKWARD)];
    long               n;
    size_t             i, k, out_len, enc_len, dec_size;
    unsigned char     *out;
    psd_edit_t         edits[MAX_MATCHES];
    psd_form_rc_t      rc;
    psd_form_ctx_t     ctx, ctx2;
    psd_form_match_t   matches[MAX_MATCHES], matches2[MAX_MATCHES];
    psd_form_match_t  *m;

    dec_size = size + 2 * MAX_MATCHES + 1;
    dec = malloc(dec_size);
    naive = malloc(size + sizeof(AWKWARD));

    rc = scan(data, size, &ctx, matches, dec, dec_size);

    if (rc == PSD_FORM_NO_SPACE) {
        die("dec_size rule");
    }

    if (rc != PSD_FORM_OK) {
        if (ctx.nmatches != 0 || ctx.err_offset > size
            || ctx.err_path_len >= PSD_PATH_TEXT_MAX)
        {
            die("error report");
        }

        /* a bad escape must really be one */
        if (rc == PSD_FORM_BAD_ENCODING
            && (data[ctx.err_offset] != '%'
                || naive_decode(data + ctx.err_offset,
                                size - ctx.err_offset < 3
                                ? size - ctx.err_offset : 3, naive) >= 0))
        {
            die("bad_encoding at a good escape");
        }

        goto done;
    }

    for (i = 0; i < ctx.nmatches; i++) {
        m = &matches[i];

        if (m->name_start > m->name_end || m->name_end > m->start
            || m->start > m->end || m->end > size
            || (i > 0 && m->name_start <= matches[i - 1].end))
        {
            die("ranges");
        }

        if (memchr(data + m->name_start, '&', m->end - m->name_start)) {
            die("a match spans pairs");
        }

        if (m->has_value != (m->name_end < size && data[m->name_end] == '='
                             && m->start == m->name_end + 1))
        {
            die("has_value");
        }

        n = naive_decode(data + m->start, m->end - m->start, naive);
        if (n < 0 || (size_t) n != m->value_len
            || memcmp(naive, m->value, m->value_len) != 0
            || m->value[m->value_len] != '\0')
        {
            die("value decoding");
        }

        n = naive_decode(data + m->name_start, m->name_end - m->name_start,
                         naive);
        if (n < 0 || (size_t) n != m->name_len
            || memcmp(naive, m->name, m->name_len) != 0)
        {
            die("name decoding");
        }

        if (strlen(m->path) != m->path_len
            || m->path_len >= PSD_PATH_TEXT_MAX)
        {
            die("path text");
        }
    }

    /* no edits: the same bytes */
    out = malloc(size + 1);
    if (psd_rewrite(data, size, NULL, 0, out, size, &out_len) != 0
        || out_len != size || memcmp(out, data, size) != 0)
    {
        die("zero edits");
    }
    free(out);

    enc_len = psd_form_encode(enc, AWKWARD, sizeof(AWKWARD) - 1);
    n = naive_decode((unsigned char *) enc, enc_len, naive);
    if (n != (long) sizeof(AWKWARD) - 1 || memcmp(naive, AWKWARD, n) != 0
        || memchr(enc, '&', enc_len) || memchr(enc, '=', enc_len))
    {
        die("encoding");
    }

    for (i = 0, k = 0; i < ctx.nmatches; i++) {
        if (matches[i].has_value) {
            edits[k].start = matches[i].start;
            edits[k].end = matches[i].end;
            edits[k].data = enc;
            edits[k].len = enc_len;
            k++;
        }
    }

    if (psd_rewrite_len(size, edits, k, &out_len) != 0) {
        die("edits refused");
    }

    out = malloc(out_len + 1);
    if (psd_rewrite(data, size, edits, k, out, out_len, &i) != 0
        || i != out_len)
    {
        die("rewrite");
    }

    dec2 = malloc(out_len + 2 * MAX_MATCHES + 1);

    if (scan(out, out_len, &ctx2, matches2, dec2,
             out_len + 2 * MAX_MATCHES + 1)
        != PSD_FORM_OK
        || ctx2.nmatches != ctx.nmatches)
    {
        die("rewritten body scans differently");
    }

    for (i = 0; i < ctx2.nmatches; i++) {
        if (matches2[i].path_index != matches[i].path_index
            || (matches[i].has_value
                && (matches2[i].value_len != sizeof(AWKWARD) - 1
                    || memcmp(matches2[i].value, AWKWARD,
                              sizeof(AWKWARD) - 1) != 0)))
        {
            die("replacement does not decode");
        }
    }

    free(dec2);
    free(out);

done:

    free(naive);
    free(dec);

    return 0;
}
