/*
 * libFuzzer target: psd_json_scan() and psd_rewrite().
 *
 * Invariants checked (abort() on violation):
 *  - matches are in start order, inside the buffer, and their ranges hold
 *    what their type says (quotes, brackets, the literal's text);
 *  - a valid document rewritten with no edits comes back byte for byte;
 *  - replacing every scalar match with a string gives a valid document
 *    with the same matches, each decoding to that string;
 *  - a small duplicate key table can only run out (too_many_keys), never
 *    change the outcome otherwise;
 *  - jansson (json_loadb with JSON_REJECT_DUPLICATES) agrees on validity,
 *    and on the type and decoded content of top-level values, except
 *    where this parser is deliberately different: jansson refuses numbers
 *    past the range of a double and a "\u0000" in a key, and accepts a
 *    top-level number followed by a raw NUL byte ("0\0"; so inputs with a
 *    raw NUL byte are not compared); our depth limit is lower.
 *
 * Build: see docs/tokenization-internals.md.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "psd_json.h"


#define MAX_MATCHES  64
#define TOKEN        "\"tok_x\\u00e9\""


static const char  *specs[] = {
    "*",                /* every top-level value: compared with jansson */
    "card.number",
    "cards.*.number",
    "*.*.0",
    "a.b.c.d"
};


static void
die(const char *what)
{
    fprintf(stderr, "fuzz_json: invariant broken: %s\n", what);
    abort();
}


static psd_json_rc_t
scan(const unsigned char *buf, size_t len, psd_json_ctx_t *ctx,
    psd_json_match_t *matches, char *dec, size_t dec_size,
    psd_json_slot_t *slots, size_t nslots)
{
    size_t           i;
    psd_json_conf_t  conf;
    psd_path_t       paths[sizeof(specs) / sizeof(specs[0])];

    for (i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        if (psd_path_parse(specs[i], strlen(specs[i]), &paths[i]) != 0) {
            die("path");
        }
    }

    memset(&conf, 0, sizeof(conf));
    conf.paths = paths;
    conf.npaths = i;
    conf.max_depth = PSD_JSON_DEPTH_MAX;
    conf.hash_key = (const unsigned char *) "fuzz-fuzz-fuzz-!";

    memset(ctx, 0, sizeof(psd_json_ctx_t));
    ctx->matches = matches;
    ctx->max_matches = MAX_MATCHES;
    ctx->dec = dec;
    ctx->dec_size = dec_size;
    ctx->slots = slots;
    ctx->nslots = nslots;

    return psd_json_scan(&conf, buf, len, ctx);
}


static void
check_matches(const unsigned char *buf, size_t len, psd_json_ctx_t *ctx)
{
    size_t             i;
    psd_json_match_t  *m;

    for (i = 0; i < ctx->nmatches; i++) {
        m = &ctx->matches[i];

        if (m->start >= m->end || m->end > len) {
            die("range");
        }

        if (i > 0 && m->start <= ctx->matches[i - 1].start) {
            die("order");
        }

        switch (m->type) {
        case PSD_JSON_STRING:
            if (buf[m->start] != '"' || buf[m->end - 1] != '"'
                || m->value == NULL || m->value[m->value_len] != '\0')
            {
                die("string range");
            }
            break;

        case PSD_JSON_OBJECT:
            if (buf[m->start] != '{' || buf[m->end - 1] != '}'
                || m->value != NULL)
            {
                die("object range");
            }
            break;

        case PSD_JSON_ARRAY:
            if (buf[m->start] != '[' || buf[m->end - 1] != ']') {
                die("array range");
            }
            break;

        default:
            if (m->value_len != m->end - m->start
                || memcmp(m->value, buf + m->start, m->value_len) != 0)
            {
                die("scalar text");
            }
        }

        if (m->path_len >= PSD_PATH_TEXT_MAX
            || strlen(m->path) != m->path_len)
        {
            die("path text");
        }
    }
}


static int
expected_difference(const char *text)
{
    return strstr(text, "real number overflow") != NULL
           || strstr(text, "NUL byte in object key") != NULL;
}


/* top-level values, in document order, against jansson's */
static void
compare_values(json_t *root, psd_json_ctx_t *ctx)
{
    size_t             k;
    json_t            *v;
    const char        *key;
    psd_json_match_t  *m;

    if (json_object_size(root) > MAX_MATCHES) {
        return;
    }

    k = 0;

    json_object_foreach(root, key, v) {
        (void) key;

        while (k < ctx->nmatches && ctx->matches[k].path_index != 0) {
            k++;
        }

        if (k == ctx->nmatches) {
            die("a top-level value was not reported");
        }

        m = &ctx->matches[k++];

        switch (m->type) {
        case PSD_JSON_STRING:
            if (!json_is_string(v) || json_string_length(v) != m->value_len
                || memcmp(json_string_value(v), m->value, m->value_len) != 0)
            {
                die("string decodes as jansson does");
            }
            break;

        case PSD_JSON_NUMBER:
            if (!json_is_number(v)) {
                die("number type");
            }
            break;

        case PSD_JSON_OBJECT:
            if (!json_is_object(v)) {
                die("object type");
            }
            break;

        case PSD_JSON_ARRAY:
            if (!json_is_array(v)) {
                die("array type");
            }
            break;

        case PSD_JSON_TRUE:
            if (!json_is_true(v)) {
                die("true type");
            }
            break;

        case PSD_JSON_FALSE:
            if (!json_is_false(v)) {
                die("false type");
            }
            break;

        case PSD_JSON_NULL:
            if (!json_is_null(v)) {
                die("null type");
            }
            break;
        }
    }
}


static void
check_rewrite(const unsigned char *buf, size_t len, psd_json_ctx_t *ctx)
{
    char              *dec2;
    size_t             i, n, k, out_len, last;
    unsigned char     *out;
    psd_edit_t         edits[MAX_MATCHES];
    psd_json_ctx_t     ctx2;
    psd_json_slot_t   *slots;
    psd_json_match_t  *m, matches2[MAX_MATCHES];

    /* no edits: the same bytes */
    out = malloc(len + 1);
    if (psd_rewrite(buf, len, NULL, 0, out, len, &out_len) != 0
        || out_len != len || memcmp(out, buf, len) != 0)
    {
        die("zero edits");
    }
    free(out);

    /* every scalar outside other matches becomes a string */
    n = 0;
    last = 0;

    for (i = 0; i < ctx->nmatches; i++) {
        m = &ctx->matches[i];

        if (m->type == PSD_JSON_OBJECT || m->type == PSD_JSON_ARRAY
            || m->start < last)
        {
            continue;
        }

        edits[n].start = m->start;
        edits[n].end = m->end;
        edits[n].data = TOKEN;
        edits[n].len = sizeof(TOKEN) - 1;
        n++;
        last = m->end;
    }

    if (psd_rewrite_len(len, edits, n, &out_len) != 0) {
        die("edits refused");
    }

    out = malloc(out_len + 1);
    if (psd_rewrite(buf, len, edits, n, out, out_len, &k) != 0
        || k != out_len)
    {
        die("rewrite");
    }

    dec2 = malloc(out_len + MAX_MATCHES + 1);
    slots = calloc(4096, sizeof(psd_json_slot_t));

    if (scan(out, out_len, &ctx2, matches2, dec2, out_len + MAX_MATCHES + 1,
             slots, 4096)
        != PSD_JSON_OK)
    {
        die("rewritten document is invalid");
    }

    if (ctx2.nmatches != ctx->nmatches) {
        die("rewritten document matches differently");
    }

    for (i = 0, k = 0; i < ctx2.nmatches; i++) {
        if (k < n && ctx->matches[i].start == edits[k].start) {
            if (matches2[i].type != PSD_JSON_STRING
                || strcmp(matches2[i].value, "tok_x\xc3\xa9") != 0)
            {
                die("replacement does not decode");
            }
            k++;
        }
    }

    free(slots);
    free(dec2);
    free(out);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char              *dec;
    json_t            *root;
    json_error_t       err;
    psd_json_rc_t      rc, rc2;
    psd_json_ctx_t     ctx, ctx2;
    psd_json_slot_t   *slots;
    psd_json_match_t   matches[MAX_MATCHES], matches2[MAX_MATCHES];

    dec = malloc(size + MAX_MATCHES + 1);
    slots = calloc(4096, sizeof(psd_json_slot_t));

    rc = scan(data, size, &ctx, matches, dec, size + MAX_MATCHES + 1, slots,
              4096);

    /* a small key table may only run out, never decide otherwise */
    rc2 = scan(data, size, &ctx2, matches2, dec, size + MAX_MATCHES + 1,
               slots, 8);
    if (rc2 != rc && rc2 != PSD_JSON_TOO_MANY_KEYS) {
        die("the key table's size changes the outcome");
    }
    if (rc2 == PSD_JSON_OK && ctx2.nmatches != ctx.nmatches) {
        die("the key table's size changes the matches");
    }

    rc = scan(data, size, &ctx, matches, dec, size + MAX_MATCHES + 1, slots,
              4096);

    if (rc != PSD_JSON_OK && ctx.nmatches != 0) {
        die("matches after an error");
    }

    if (rc != PSD_JSON_OK
        && (ctx.err_offset > size || ctx.err_path_len >= PSD_PATH_TEXT_MAX))
    {
        die("error offset or path");
    }

    if (rc == PSD_JSON_OK) {
        check_matches(data, size, &ctx);
        check_rewrite(data, size, &ctx);
    }

    /* jansson accepts "0\0": leave raw NUL bytes out of the comparison */
    if ((rc == PSD_JSON_OK || rc == PSD_JSON_NOT_OBJECT
         || rc == PSD_JSON_INVALID || rc == PSD_JSON_INVALID_UTF8
         || rc == PSD_JSON_DUPLICATE_KEY)
        && memchr(data, '\0', size) == NULL)
    {
        root = json_loadb((const char *) data, size,
                          JSON_REJECT_DUPLICATES | JSON_DECODE_ANY
                          | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &err);

        if (root == NULL) {
            if ((rc == PSD_JSON_OK || rc == PSD_JSON_NOT_OBJECT)
                && !expected_difference(err.text))
            {
                fprintf(stderr, "jansson: %s at %d\n", err.text,
                        err.position);
                die("jansson refuses what we accept");
            }

        } else {
            if (rc != PSD_JSON_OK && rc != PSD_JSON_NOT_OBJECT) {
                fprintf(stderr, "ours: %s at %zu\n", psd_json_strerror(rc),
                        ctx.err_offset);
                die("jansson accepts what we refuse");
            }

            if ((rc == PSD_JSON_OK) != (json_is_object(root) != 0)) {
                die("not_an_object disagrees");
            }

            if (rc == PSD_JSON_OK) {
                compare_values(root, &ctx);
            }

            json_decref(root);
        }
    }

    free(slots);
    free(dec);

    return 0;
}
