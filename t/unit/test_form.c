/*
 * Unit tests: psd_form on application/x-www-form-urlencoded bodies.
 */

#include "tap.h"
#include "psd_form.h"


#define MAX_MATCHES  8

static psd_path_t        paths[PSD_PATHS_MAX];
static psd_form_match_t  matches[MAX_MATCHES];
static char              dec[4096];
static psd_form_ctx_t    ctx;
static psd_form_conf_t   conf;


static psd_form_rc_t
scan(const char *body, const char *spec)
{
    size_t       n;
    const char  *p, *e;

    n = 0;

    for (p = spec; *p; p = e) {
        while (*p == ' ') {
            p++;
        }

        for (e = p; *e && *e != ' '; e++) {
            /* void */
        }

        if (e > p && psd_path_parse(p, (size_t) (e - p), &paths[n++]) != 0) {
            printf("# bad test path\n");
        }
    }

    conf.paths = paths;
    conf.npaths = n;

    memset(&ctx, 0, sizeof(ctx));
    ctx.matches = matches;
    ctx.max_matches = MAX_MATCHES;
    ctx.dec = dec;
    ctx.dec_size = sizeof(dec);

    return psd_form_scan(&conf, (const unsigned char *) body, strlen(body),
                         &ctx);
}


#define is_err(body, spec, want_rc, want_off, want_path, name)               \
    do {                                                                    \
        psd_form_rc_t  rc_ = scan(body, spec);                              \
        ok(rc_ == (want_rc) && ctx.err_offset == (size_t) (want_off)        \
           && strcmp(ctx.err_path, want_path) == 0, "%s", name);            \
        if (rc_ != (want_rc) || ctx.err_offset != (size_t) (want_off)       \
            || strcmp(ctx.err_path, want_path) != 0)                        \
        {                                                                   \
            printf("#   got %s at %zu path \"%s\"\n",                       \
                   psd_form_strerror(rc_), ctx.err_offset, ctx.err_path);   \
        }                                                                   \
    } while (0)


static void
test_matching(void)
{
    psd_form_match_t  *m;
    const char        *body;

    body = "a=1&card%5Bnumber%5D=4242424242424242&b=2";
    is_int(scan(body, "card.number"), PSD_FORM_OK, "form scans");
    is_int(ctx.nmatches, 1, "one match");
    m = &matches[0];
    ok(m->name_start == 4 && m->name_end == 20 && m->start == 21
       && m->end == 37 && m->has_value, "name and value ranges");
    is_str(m->name, "card[number]", "decoded name");
    is_str(m->value, "4242424242424242", "decoded value");
    is_str(m->path, "card.number", "canonical path");
    is_int(m->path_index, 0, "path index");

    scan("card.number=1", "card.number");
    ok(ctx.nmatches == 1 && strcmp(matches[0].value, "1") == 0,
       "dotted name matches");
    scan("card[number]=1", "card.number");
    is_int(ctx.nmatches, 1, "raw brackets match");
    scan("card%5bnumber%5d=1", "card.number");
    is_int(ctx.nmatches, 1, "lowercase hex");
    scan("card.details[number]=1&card[details][cvc]=2",
         "card.details.number card.details.cvc");
    ok(ctx.nmatches == 2 && matches[1].path_index == 1
       && strcmp(matches[1].path, "card.details.cvc") == 0,
       "dots and brackets mix");

    scan("card[number]=4242+4242%204242+4242", "card.number");
    is_str(matches[0].value, "4242 4242 4242 4242", "'+' and %%20 are spaces");
    scan("card[number]=%34%32%34%32", "card.number");
    is_str(matches[0].value, "4242", "percent-encoded digits decode");
    scan("card[number]=a%00b", "card.number");
    ok(matches[0].value_len == 3 && matches[0].value[1] == '\0',
       "NUL bytes kept with their length");

    scan("card[number]&x=1", "card.number");
    ok(ctx.nmatches == 1 && !matches[0].has_value
       && matches[0].value_len == 0 && matches[0].start == 12
       && matches[0].end == 12, "a field without '='");
    scan("card[number]=&x=1", "card.number");
    ok(ctx.nmatches == 1 && matches[0].has_value
       && matches[0].start == 13 && matches[0].end == 13,
       "a field with an empty value");

    is_int(scan("&&a=1&&card[number]=2&&", "card.number"), PSD_FORM_OK,
           "empty pairs skipped");
    ok(ctx.nmatches == 1 && matches[0].start == 20, "after empty pairs");
    is_int(scan("", "card.number"), PSD_FORM_OK, "empty body");
    is_int(psd_form_scan(&conf, NULL, 0, &ctx), PSD_FORM_OK, "NULL body");
    is_int(ctx.nmatches, 0, "no matches in an empty body");

    scan("card+number=1&card%20number=2", "card.number");
    is_int(ctx.nmatches, 0, "spaces in names are not dots");
    scan("a=1;card[number]=2", "card.number");
    is_int(ctx.nmatches, 0, "';' separates nothing");

    body = "cards[0][number]=1&cards[1][cvc]=x&cards[1][number]=2";
    scan(body, "cards.*.number");
    ok(ctx.nmatches == 2 && strcmp(matches[0].path, "cards.0.number") == 0
       && strcmp(matches[1].path, "cards.1.number") == 0
       && strcmp(matches[1].value, "2") == 0, "wildcard");

    is_int(scan("cards[][number]=1&cards[][number]=2", "cards.*.number"),
           PSD_FORM_OK, "\"[]\" appends: no duplicate");
    is_int(ctx.nmatches, 2, "both appended fields match");
    scan("cards[][number]=1", "cards.0.number");
    is_int(ctx.nmatches, 0, "only \"*\" matches \"[]\"");

    scan("items[0][pan]=a&items[00][pan]=b", "items.0.pan");
    ok(ctx.nmatches == 1 && strcmp(matches[0].value, "a") == 0,
       "index segments compare as text");

    scan("card[number]x=1", "card.number");
    is_int(ctx.nmatches, 1, "text after ']' is ignored, as PHP does");
    scan("card[number=1", "card.number");
    is_int(ctx.nmatches, 0, "an unclosed '[' does not split");
    scan("card[number=1", "card[number");
    is_int(ctx.nmatches, 1, "an unclosed '[' is part of the name");
    scan("[number]=1", "*.number");
    is_int(ctx.nmatches, 1, "empty base segment");

    scan("%0Acard%22[n]=1", "*.n");
    is_str(matches[0].path, "?card?.n", "path text escapes nothing");
    scan("caf%C3%A9[n]=1", "*.n");
    is_str(matches[0].path, "caf??.n", "path text is plain ASCII");

    scan("x=1&card[number]=2&card[cvc]=3", "card.cvc card.number");
    ok(ctx.nmatches == 2 && matches[0].path_index == 1
       && matches[1].path_index == 0, "matches in body order");
    ok(ctx.dec_used == strlen("card[number]") + 1 + 2
                       + strlen("card[cvc]") + 1 + 2,
       "only matched fields use the decode buffer");
}


static void
test_errors(void)
{
    size_t  n;

    is_err("a=%zz", "", PSD_FORM_BAD_ENCODING, 2, "", "bad hex");
    is_err("a=1&b=%4", "", PSD_FORM_BAD_ENCODING, 6, "", "short escape");
    is_err("a=1&b=%", "card.number", PSD_FORM_BAD_ENCODING, 6, "",
           "'%' at the end");
    is_err("%G0=1", "", PSD_FORM_BAD_ENCODING, 0, "", "bad escape in a name");
    is_err("a=%%41", "", PSD_FORM_BAD_ENCODING, 2, "", "'%%' escaped twice");
    is_int(scan("a=%e2%82%ac&b=%C3%A9", ""), PSD_FORM_OK, "good escapes");

    is_err("card[number]=1&card.number=2", "card.number",
           PSD_FORM_DUPLICATE, 15, "card.number",
           "card[number] and card.number are one field");
    is_err("card[number]=1&x=0&card[number]=2", "card.number",
           PSD_FORM_DUPLICATE, 19, "card.number", "repeated field");
    is_err("card[number]=1&card%5Bnumber%5D=2", "card.number",
           PSD_FORM_DUPLICATE, 15, "card.number",
           "repeated field, spelled otherwise");
    is_int(scan("x=1&x=2", "card.number"), PSD_FORM_OK,
           "unconfigured repeats are fine");
    is_int(scan("card[number]=1&card[cvc]=2", "card.*"), PSD_FORM_OK,
           "one wildcard, two fields");

    scan("a=1", "a");
    ctx.max_matches = 1;
    n = (size_t) psd_form_scan(&conf, (const unsigned char *) "a=1&b=2&a=3",
                               11, &ctx);
    is_int(n, PSD_FORM_DUPLICATE, "duplicate before too many");
    scan("a=1", "a b");
    ctx.max_matches = 1;
    is_int(psd_form_scan(&conf, (const unsigned char *) "a=1&b=2", 7, &ctx),
           PSD_FORM_TOO_MANY_MATCHES, "too many matches");
    ok(ctx.err_offset == 4 && strcmp(ctx.err_path, "b") == 0
       && ctx.nmatches == 0, "too_many_matches where and no matches");

    ctx.max_matches = MAX_MATCHES;
    ctx.dec_size = 5;
    is_int(psd_form_scan(&conf, (const unsigned char *) "a=1&b=2", 7, &ctx),
           PSD_FORM_NO_SPACE, "decode buffer too small");
    ctx.dec_size = 7 + 2 * MAX_MATCHES + 1;
    is_int(psd_form_scan(&conf, (const unsigned char *) "a=1&b=2", 7, &ctx),
           PSD_FORM_OK, "len + 2 * max_matches + 1 is enough");

    is_str(psd_form_strerror(PSD_FORM_BAD_ENCODING), "bad_encoding",
           "bad_encoding name");
    is_str(psd_form_strerror(PSD_FORM_DUPLICATE), "duplicate_field",
           "duplicate_field name");
    is_str(psd_form_strerror((psd_form_rc_t) 42), "internal_error",
           "unknown code name");
}


static void
test_rewrite(void)
{
    char             enc[64], tok[64];
    size_t           n, len;
    psd_edit_t       e[2];
    unsigned char    out[256];
    const char      *body, *want;

    n = psd_form_encode(enc, "a b&c=d/\xc3\xa9~*-._Z9", 17);
    enc[n] = '\0';
    is_str(enc, "a+b%26c%3Dd%2F%C3%A9%7E*-._Z9", "form encoding");
    is_int(psd_form_encode(enc, "", 0), 0, "empty encodes to nothing");

    body = "amount=10.00&card%5Bnumber%5D=4242+4242+4242+4242"
           "&card%5Bcvc%5D=123&note=caf%C3%A9";
    len = strlen(body);
    is_int(scan(body, "card.number card.cvc"), PSD_FORM_OK, "body scans");

    n = psd_form_encode(tok, "tok_AbCdEfGhIjKlMnOpQrStUvWx", 28);
    e[0].start = matches[0].start;
    e[0].end = matches[0].end;
    e[0].data = tok;
    e[0].len = n;
    n = psd_form_encode(enc, "x y", 3);
    e[1].start = matches[1].start;
    e[1].end = matches[1].end;
    e[1].data = enc;
    e[1].len = n;

    is_int(psd_rewrite_len(len, e, 2, &n), 0, "rewrite length");
    is_int(n, len - 19 + 28 - 3 + 3, "new Content-Length");
    is_int(psd_rewrite((const unsigned char *) body, len, e, 2, out,
                       sizeof(out), &n), 0, "rewrite");
    want = "amount=10.00&card%5Bnumber%5D=tok_AbCdEfGhIjKlMnOpQrStUvWx"
           "&card%5Bcvc%5D=x+y&note=caf%C3%A9";
    ok(n == strlen(want) && memcmp(out, want, n) == 0,
       "every other byte unchanged");

    out[n] = '\0';
    ok(scan((char *) out, "card.number card.cvc") == PSD_FORM_OK
       && ctx.nmatches == 2
       && strcmp(matches[0].value, "tok_AbCdEfGhIjKlMnOpQrStUvWx") == 0
       && strcmp(matches[1].value, "x y") == 0,
       "the result decodes to the replacements");
}


int
main(void)
{
    test_matching();
    test_errors();
    test_rewrite();

    return done_testing();
}
