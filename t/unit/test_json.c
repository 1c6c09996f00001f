/*
 * Unit tests: psd_json validation, path matching and rewriting, and the
 * shared path syntax and rewrite helper.
 */

#include "tap.h"
#include "psd_json.h"


#define MAX_MATCHES  16

static psd_path_t        paths[PSD_PATHS_MAX];
static psd_json_match_t  matches[MAX_MATCHES];
static char              dec[8192];
static psd_json_slot_t   slots[256];
static psd_json_ctx_t    ctx;


static psd_json_rc_t
scan_n(const char *body, size_t len, const char *spec, size_t depth,
    size_t nslots)
{
    size_t           n;
    const char      *p, *e;
    psd_json_conf_t  conf;

    /* spec: paths separated by spaces */
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

    memset(&conf, 0, sizeof(conf));
    conf.paths = paths;
    conf.npaths = n;
    conf.max_depth = depth;
    conf.hash_key = (const unsigned char *) "0123456789abcdef";

    memset(&ctx, 0, sizeof(ctx));
    ctx.matches = matches;
    ctx.max_matches = MAX_MATCHES;
    ctx.dec = dec;
    ctx.dec_size = sizeof(dec);
    ctx.slots = slots;
    ctx.nslots = nslots ? nslots : 256;

    return psd_json_scan(&conf, (const unsigned char *) body, len, &ctx);
}


static psd_json_rc_t
scan(const char *body, const char *spec)
{
    return scan_n(body, strlen(body), spec, 0, 0);
}


/* rc, offset and path of an error in one assertion */
#define is_err(body, spec, want_rc, want_off, want_path, name)               \
    do {                                                                    \
        psd_json_rc_t  rc_ = scan(body, spec);                              \
        ok(rc_ == (want_rc) && ctx.err_offset == (size_t) (want_off)        \
           && strcmp(ctx.err_path, want_path) == 0, "%s", name);            \
        if (rc_ != (want_rc) || ctx.err_offset != (size_t) (want_off)       \
            || strcmp(ctx.err_path, want_path) != 0)                        \
        {                                                                   \
            printf("#   got %s at %zu path \"%s\"\n",                       \
                   psd_json_strerror(rc_), ctx.err_offset, ctx.err_path);   \
        }                                                                   \
    } while (0)


static void
test_paths(void)
{
    psd_path_t  p;

    is_int(psd_path_parse("card.number", 11, &p), 0, "path parses");
    ok(p.nsegs == 2 && p.segs[1].len == 6
       && memcmp(p.segs[1].data, "number", 6) == 0, "path segments");
    is_int(psd_path_parse("", 0, &p), -1, "empty path");
    is_int(psd_path_parse("a..b", 4, &p), -1, "empty segment");
    is_int(psd_path_parse(".a", 2, &p), -1, "leading dot");
    is_int(psd_path_parse("a.", 2, &p), -1, "trailing dot");
    is_int(psd_path_parse("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p", 31, &p), 0,
           "16 segments");
    is_int(psd_path_parse("a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q", 33, &p), -1,
           "17 segments");
    psd_path_parse("items.0.12.012.1a.*", 19, &p);
    ok(p.segs[1].index == 0 && p.segs[2].index == 12
       && p.segs[3].index == -1 && p.segs[4].index == -1
       && p.segs[5].wildcard && !p.segs[0].wildcard, "indexes and wildcard");
}


/* {"a": then k - 1 nested arrays: k containers */
static void
nest(char *out, int k)
{
    int  i;

    strcpy(out, "{\"a\":");
    for (i = 1; i < k; i++) {
        strcat(out, "[");
    }
    for (i = 1; i < k; i++) {
        strcat(out, "]");
    }
    strcat(out, "}");
}


static void
test_errors(void)
{
    int   i;
    char  deep[300], want[100];

    is_err("", "", PSD_JSON_INVALID, 0, "", "empty body");
    is_err("  \n", "", PSD_JSON_INVALID, 3, "", "only whitespace");
    is_err("{\"a\":}", "", PSD_JSON_INVALID, 5, "a", "missing value");
    is_err("{\"a\":1,}", "", PSD_JSON_INVALID, 7, "a", "trailing comma");
    is_err("{\"a\" 1}", "", PSD_JSON_INVALID, 5, "a", "missing colon");
    is_err("{'a':1}", "", PSD_JSON_INVALID, 1, "", "single quotes");
    is_err("{\"a\":01}", "", PSD_JSON_INVALID, 6, "a", "leading zero");
    is_err("{\"a\":1.}", "", PSD_JSON_INVALID, 7, "a", "bare decimal point");
    is_err("{\"a\":-}", "", PSD_JSON_INVALID, 6, "a", "bare minus");
    is_err("{\"a\":1e}", "", PSD_JSON_INVALID, 7, "a", "bare exponent");
    is_err("{\"a\":+1}", "", PSD_JSON_INVALID, 5, "a", "plus sign");
    is_err("{\"a\":.5}", "", PSD_JSON_INVALID, 5, "a", "no integer part");
    is_err("{\"a\":tru}", "", PSD_JSON_INVALID, 5, "a", "short literal");
    is_err("{\"a\":NaN}", "", PSD_JSON_INVALID, 5, "a", "NaN");
    is_err("{\"a\":\"\\x\"}", "", PSD_JSON_INVALID, 6, "a", "bad escape");
    is_err("{\"a\":\"\\u12\"}", "", PSD_JSON_INVALID, 6, "a",
           "short \\u escape");
    is_err("{\"a\":\"\\ud800\"}", "", PSD_JSON_INVALID, 6, "a",
           "lone high surrogate");
    is_err("{\"a\":\"\\udc00\"}", "", PSD_JSON_INVALID, 6, "a",
           "lone low surrogate");
    is_err("{\"a\":\"\\ud800\\u0041\"}", "", PSD_JSON_INVALID, 6, "a",
           "high surrogate without a low one");
    is_err("{\"a\":\"x\ty\"}", "", PSD_JSON_INVALID, 7, "a",
           "raw tab in a string");
    is_err("{\"a\":\"abc", "", PSD_JSON_INVALID, 9, "a",
           "unterminated string");
    is_err("{\"a\":1}x", "", PSD_JSON_INVALID, 7, "", "trailing garbage");
    is_err("{\"a\":1} {}", "", PSD_JSON_INVALID, 8, "",
           "two documents");
    is_err("{\"a\":[1,2}", "", PSD_JSON_INVALID, 9, "a.1",
           "mismatched bracket");
    is_err("{\"a\":{\"b\":1]}", "", PSD_JSON_INVALID, 11, "a.b",
           "mismatched brace");
    is_err("{\"a\":1", "", PSD_JSON_INVALID, 6, "a", "unterminated object");
    is_err("{,}", "", PSD_JSON_INVALID, 1, "", "lone comma");
    is_err("\xef\xbb\xbf{}", "", PSD_JSON_INVALID, 0, "", "BOM refused");
    is_err("{\"card\":{\"number\":}}", "card.number", PSD_JSON_INVALID, 18,
           "card.number", "error path in a nested object");
    is_err("{\"a\":[1,[2,x]]}", "", PSD_JSON_INVALID, 11, "a.1.1",
           "error path in arrays");

    is_err("{\"a\":\"\xff\"}", "", PSD_JSON_INVALID_UTF8, 6, "a",
           "invalid UTF-8 byte");
    is_err("{\"a\":\"\xc0\xaf\"}", "", PSD_JSON_INVALID_UTF8, 6, "a",
           "overlong UTF-8");
    is_err("{\"a\":\"\xe0\x80\xaf\"}", "", PSD_JSON_INVALID_UTF8, 6, "a",
           "overlong three-byte UTF-8");
    is_err("{\"a\":\"\xed\xa0\x80\"}", "", PSD_JSON_INVALID_UTF8, 6, "a",
           "UTF-8 surrogate");
    is_err("{\"a\":\"\xf4\x90\x80\x80\"}", "", PSD_JSON_INVALID_UTF8, 6, "a",
           "past U+10FFFF");
    is_err("{\"a\":\"x\xe2\x82\"}", "", PSD_JSON_INVALID_UTF8, 7, "a",
           "truncated sequence");
    is_err("{\"\x80\":1}", "", PSD_JSON_INVALID_UTF8, 2, "",
           "invalid UTF-8 in a key");
    is_err("{\"a\":1,\xc3\xa9:1}", "", PSD_JSON_INVALID, 7, "a",
           "UTF-8 outside strings is no JSON");

    is_err("[1,2]", "", PSD_JSON_NOT_OBJECT, 0, "", "array at top");
    is_err(" \"str\"", "", PSD_JSON_NOT_OBJECT, 1, "", "string at top");
    is_err("42", "", PSD_JSON_NOT_OBJECT, 0, "", "number at top");
    is_err("null", "", PSD_JSON_NOT_OBJECT, 0, "", "null at top");
    is_err("[1,", "", PSD_JSON_INVALID, 3, "1",
           "invalid beats not_an_object");
    is_int(scan("[{\"card\":{\"number\":\"1\"}}]", "*.card.number"),
           PSD_JSON_NOT_OBJECT, "no matching in a top-level array");

    /* depth: 32 open containers are fine, the 33rd is not */
    nest(deep, 32);
    is_int(scan(deep, ""), PSD_JSON_OK, "depth 32 is fine");
    nest(deep, 33);
    memcpy(want, "a", 2);
    for (i = 0; i < 31; i++) {
        strcat(want, ".0");
    }
    is_err(deep, "", PSD_JSON_TOO_DEEP, 36, want, "depth 33 is too deep");
    nest(deep, 128);
    is_int(scan_n(deep, strlen(deep), "", PSD_JSON_DEPTH_MAX, 0), PSD_JSON_OK,
           "depth 128 with max_depth 128");
    nest(deep, 129);
    is_int(scan_n(deep, strlen(deep), "", PSD_JSON_DEPTH_MAX, 0),
           PSD_JSON_TOO_DEEP, "depth 129 with max_depth 128");
    is_int(scan_n("{\"a\":{\"b\":1}}", 13, "", 2, 0), PSD_JSON_OK,
           "max_depth 2 allows two");
    is_int(scan_n("{\"a\":{\"b\":[]}}", 14, "", 2, 0), PSD_JSON_TOO_DEEP,
           "max_depth 2 refuses three");
    is_int(scan_n("{}", 2, "", PSD_JSON_DEPTH_MAX + 1, 0), PSD_JSON_ERROR,
           "max_depth above the limit is an argument error");

    is_err("{\"a\":1,\"a\":2}", "", PSD_JSON_DUPLICATE_KEY, 7, "a",
           "duplicate key");
    is_err("{\"a\":1,\"\\u0061\":2}", "", PSD_JSON_DUPLICATE_KEY, 7, "a",
           "duplicate key spelled with an escape");
    is_err("{\"\xc3\xa9\":1,\"\\u00e9\":2}", "", PSD_JSON_DUPLICATE_KEY, 8,
           "\xc3\xa9", "duplicate non-ASCII key");
    is_err("{\"\\ud83d\\udcb3\":1,\"\xf0\x9f\x92\xb3\":2}", "",
           PSD_JSON_DUPLICATE_KEY, 18, "\xf0\x9f\x92\xb3",
           "duplicate astral key");
    is_err("{\"card\":{\"number\":\"1\",\"cvc\":\"2\",\"number\":\"3\"}}",
           "card.number", PSD_JSON_DUPLICATE_KEY, 32, "card.number",
           "duplicate card number");
    is_int(scan("{\"a\":{\"a\":{\"a\":1}},\"b\":{\"a\":2}}", ""), PSD_JSON_OK,
           "same key in other objects");
    is_int(scan("{\"x\":[{\"a\":1,\"b\":2},{\"a\":1,\"b\":2}]}", ""),
           PSD_JSON_OK, "same keys in sibling objects");
    is_int(scan("{\"a\":1,\"A\":2,\"a \":3,\"\\u0000\":4,\"\":5}", ""),
           PSD_JSON_OK, "near keys are not duplicates");
    is_err("{\"\":1,\"\":2}", "", PSD_JSON_DUPLICATE_KEY, 6, "",
           "duplicate empty key");

    is_int(scan_n("{\"a\":1,\"b\":2}", 13, "", 0, 4), PSD_JSON_OK,
           "two keys fit four slots");
    is_int(scan_n("{\"a\":1,\"b\":2,\"c\":3}", 19, "", 0, 4),
           PSD_JSON_TOO_MANY_KEYS, "three keys do not");
    is_int(scan_n("{\"x\":[{\"a\":1},{\"b\":2},{\"c\":3}]}", 31, "", 0, 4),
           PSD_JSON_OK, "closed objects give their slots back");
    is_int(scan_n("{}", 2, "", 0, 6), PSD_JSON_ERROR,
           "slots must be a power of two");

    is_str(psd_json_strerror(PSD_JSON_INVALID), "invalid_json",
           "invalid_json name");
    is_str(psd_json_strerror(PSD_JSON_NOT_OBJECT), "not_an_object",
           "not_an_object name");
    is_str(psd_json_strerror(PSD_JSON_TOO_DEEP), "too_deep",
           "too_deep name");
    is_str(psd_json_strerror(PSD_JSON_DUPLICATE_KEY), "duplicate_key",
           "duplicate_key name");
    is_str(psd_json_strerror(PSD_JSON_INVALID_UTF8), "invalid_utf8",
           "invalid_utf8 name");
    is_str(psd_json_strerror((psd_json_rc_t) 77), "internal_error",
           "unknown code name");
}


static void
test_valid(void)
{
    is_int(scan("{}", ""), PSD_JSON_OK, "empty object");
    is_int(scan(" \t\r\n{ \"a\" : [ ] , \"b\" : { } } \n", ""), PSD_JSON_OK,
           "whitespace everywhere");
    is_int(scan("{\"n\":[0,-0,1.5,-1.5e10,2E+3,3e-7,1234567890123456789012]}",
                ""), PSD_JSON_OK, "numbers");
    is_int(scan("{\"l\":[true,false,null]}", ""), PSD_JSON_OK, "literals");
    is_int(scan("{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\udcb3"
                "\\u0000\"}", ""), PSD_JSON_OK, "every escape");
    is_int(scan("{\"\xe2\x82\xac\":\"\xf0\x9f\x92\xb3 \xc3\xa9\x7f\"}", ""),
           PSD_JSON_OK, "raw UTF-8 and DEL");
}


static void
test_matching(void)
{
    psd_json_match_t  *m;
    const char        *body;

    body = "{\"amount\":100,\"card\":{\"number\":\"4242424242424242\","
           "\"cvc\":\"123\"}}";
    is_int(scan(body, "card.number card.cvc"), PSD_JSON_OK, "scan card");
    is_int(ctx.nmatches, 2, "two matches");
    m = &matches[0];
    ok(m->start == 31 && m->end == 49 && body[m->start] == '"'
       && body[m->end - 1] == '"', "string range includes the quotes");
    is_int(m->type, PSD_JSON_STRING, "string type");
    is_str(m->value, "4242424242424242", "decoded value");
    is_int(m->value_len, 16, "decoded length");
    is_str(m->path, "card.number", "concrete path");
    is_int(m->path_index, 0, "first path");
    is_int(matches[1].path_index, 1, "second path");
    is_str(matches[1].value, "123", "cvc value");

    body = "{\"payment\":{\"card\":{\"cvc\":\"1234\"}},\"card\":{\"cvc\":1}}";
    is_int(scan(body, "payment.card.cvc"), PSD_JSON_OK, "three levels");
    ok(ctx.nmatches == 1 && strcmp(matches[0].path, "payment.card.cvc") == 0,
       "only the full path matches");

    body = "{\"items\":[{\"pan\":\"a\"},{\"pan\":\"b\"}]}";
    scan(body, "items.0.pan");
    ok(ctx.nmatches == 1 && strcmp(matches[0].value, "a") == 0
       && strcmp(matches[0].path, "items.0.pan") == 0, "array index");
    scan(body, "items.1.pan");
    ok(ctx.nmatches == 1 && strcmp(matches[0].value, "b") == 0,
       "second index");
    scan(body, "items.01.pan items.2.pan");
    is_int(ctx.nmatches, 0, "\"01\" and out-of-range index match nothing");

    body = "{\"cards\":[{\"number\":\"1\"},{\"cvc\":\"x\"},"
           "{\"number\":\"3\"}]}";
    scan(body, "cards.*.number");
    ok(ctx.nmatches == 2 && strcmp(matches[0].path, "cards.0.number") == 0
       && strcmp(matches[1].path, "cards.2.number") == 0
       && strcmp(matches[1].value, "3") == 0, "wildcard over an array");

    body = "{\"wallet\":{\"visa\":{\"pan\":\"v\"},\"mc\":{\"pan\":\"m\"},"
           "\"x\":1}}";
    scan(body, "wallet.*.pan");
    ok(ctx.nmatches == 2 && strcmp(matches[0].path, "wallet.visa.pan") == 0
       && strcmp(matches[1].path, "wallet.mc.pan") == 0,
       "wildcard over object keys");

    body = "{\"a\":{\"0\":\"obj\"},\"b\":[\"arr\"]}";
    scan(body, "a.0 b.0");
    ok(ctx.nmatches == 2 && strcmp(matches[0].value, "obj") == 0
       && strcmp(matches[1].value, "arr") == 0,
       "a digit segment names a key or an index");

    body = "{\"card\":{\"number\":\"\\u0034242 4242-4242 424\\u0032\"}}";
    scan(body, "card.number");
    ok(ctx.nmatches == 1
       && strcmp(matches[0].value, "4242 4242-4242 4242") == 0
       && matches[0].value_len == 19, "escapes decoded in the value");

    body = "{\"c\\u0061rd\":{\"numb\\u0065r\":\"x\"}}";
    scan(body, "card.number");
    ok(ctx.nmatches == 1 && strcmp(matches[0].path, "card.number") == 0,
       "escaped keys match");

    body = "{\"card\":{\"number\":4242424242424242}}";
    scan(body, "card.number");
    ok(ctx.nmatches == 1 && matches[0].type == PSD_JSON_NUMBER
       && strcmp(matches[0].value, "4242424242424242") == 0
       && matches[0].end - matches[0].start == 16, "number value");

    body = "{\"card\":{\"number\":null,\"exp\":true}}";
    scan(body, "card.number card.exp");
    ok(ctx.nmatches == 2 && matches[0].type == PSD_JSON_NULL
       && matches[1].type == PSD_JSON_TRUE
       && strcmp(matches[1].value, "true") == 0, "literal values");
    is_str(psd_json_type_name(matches[0].type), "null", "type name");

    body = "{\"card\":{\"number\":[\"1\"]},\"x\":0}";
    scan(body, "card card.number card.number.0");
    ok(ctx.nmatches == 3 && matches[0].type == PSD_JSON_OBJECT
       && matches[0].start == 8 && matches[0].end == 24
       && matches[0].value == NULL && matches[1].type == PSD_JSON_ARRAY
       && matches[1].start == 18 && matches[1].end == 23
       && strcmp(matches[2].path, "card.number.0") == 0,
       "containers match, nested matches in start order");

    body = "{\"card\":{\"number\":\"1\"}}";
    scan(body, "card.* card.number");
    ok(ctx.nmatches == 1 && matches[0].path_index == 0,
       "a value is reported once, for the first path");

    body = "{\"a\":{\"b\":{\"c\":1}}}";
    scan(body, "a.b");
    ok(ctx.nmatches == 1 && matches[0].type == PSD_JSON_OBJECT,
       "nothing below the path matches");

    body = "{\"q\\\"x\\n\":{\"n\":\"v\"}}";
    scan(body, "*.n");
    is_str(matches[0].path, "q?x?.n", "path text escapes nothing");

    {
        char  big[700];

        memset(big, 'k', sizeof(big));
        memcpy(big, "{\"", 2);
        memcpy(big + 602, "\":{\"n\":\"v\"}}", 12);
        big[614] = '\0';
        scan(big, "*.n");
        ok(ctx.nmatches == 1 && matches[0].path_len == PSD_PATH_TEXT_MAX - 1
           && strlen(matches[0].path) == matches[0].path_len
           && memcmp(matches[0].path + matches[0].path_len - 3, "...", 3)
              == 0, "a long path is cut with \"...\"");
    }

    body = "{\"a\":\"x\",\"b\":\"y\",\"c\":\"z\"}";
    scan_n(body, strlen(body), "a b c", 0, 0);
    ctx.max_matches = 2;
    {
        psd_json_conf_t  conf = { paths, 3, 0,
                                  (const unsigned char *) "0123456789abcdef" };
        ctx.max_matches = 2;
        is_int(psd_json_scan(&conf, (const unsigned char *) body,
                             strlen(body), &ctx),
               PSD_JSON_TOO_MANY_MATCHES, "too many matches");
        ok(ctx.err_offset == 21 && strcmp(ctx.err_path, "c") == 0
           && ctx.nmatches == 0, "too_many_matches where and no matches");

        ctx.max_matches = MAX_MATCHES;
        ctx.dec_size = 4;
        is_int(psd_json_scan(&conf, (const unsigned char *) body,
                             strlen(body), &ctx),
               PSD_JSON_NO_SPACE, "decode buffer too small");
        ctx.dec_size = strlen(body) + MAX_MATCHES;
        is_int(psd_json_scan(&conf, (const unsigned char *) body,
                             strlen(body), &ctx),
               PSD_JSON_OK, "len + max_matches is enough");

        conf.hash_key = NULL;
        is_int(psd_json_scan(&conf, (const unsigned char *) body,
                             strlen(body), &ctx),
               PSD_JSON_OK, "random hash key");
    }
}


static void
test_rewrite(void)
{
    size_t          n, len, i;
    psd_edit_t      e[4];
    unsigned char   out[512];
    const char     *body, *want;

    body = "{\"note\":\"caf\xc3\xa9 \xf0\x9f\x92\xb3\",\"card\":{\"number\":"
           "\"4242 4242 4242 4242\",\"cvc\":\"123\"},\"n\":  1.5e3 }";
    len = strlen(body);

    is_int(scan(body, "card.number card.cvc"), PSD_JSON_OK,
           "unicode body scans");
    is_int(ctx.nmatches, 2, "two fields");

    e[0].start = matches[0].start;
    e[0].end = matches[0].end;
    e[0].data = "\"tok_AbCdEfGhIjKlMnOpQrStUvWx\"";
    e[0].len = 30;
    e[1].start = matches[1].start;
    e[1].end = matches[1].end;
    e[1].data = "null";
    e[1].len = 4;

    is_int(psd_rewrite_len(len, e, 2, &n), 0, "rewrite length");
    is_int(n, len - 21 + 30 - 5 + 4, "new Content-Length");
    is_int(psd_rewrite((const unsigned char *) body, len, e, 2, out,
                       sizeof(out), &n), 0, "rewrite");
    want = "{\"note\":\"caf\xc3\xa9 \xf0\x9f\x92\xb3\",\"card\":{\"number\":"
           "\"tok_AbCdEfGhIjKlMnOpQrStUvWx\",\"cvc\":null},\"n\":  1.5e3 }";
    ok(n == strlen(want) && memcmp(out, want, n) == 0,
       "every other byte unchanged");

    out[n] = '\0';
    ok(scan((const char *) out, "card.number") == PSD_JSON_OK
       && ctx.nmatches == 1
       && strcmp(matches[0].value, "tok_AbCdEfGhIjKlMnOpQrStUvWx") == 0,
       "the result is valid and holds the token");

    is_int(psd_rewrite((const unsigned char *) body, len, NULL, 0, out,
                       sizeof(out), &n), 0, "no edits");
    ok(n == len && memcmp(out, body, len) == 0, "no edits, same bytes");

    is_int(psd_rewrite((const unsigned char *) body, len, e, 2, out,
                       len - 21 + 30 - 5 + 4 - 1, &n), -1,
           "output one byte short");

    e[2] = e[0];
    e[0] = e[1];
    e[1] = e[2];
    is_int(psd_rewrite_len(len, e, 2, &n), -1, "unsorted edits refused");

    e[0].start = 5;
    e[0].end = 10;
    e[1].start = 9;
    e[1].end = 12;
    is_int(psd_rewrite_len(len, e, 2, &n), -1, "overlapping edits refused");
    e[1].start = 10;
    is_int(psd_rewrite_len(len, e, 2, &n), 0, "adjacent edits are fine");
    e[1].end = len + 1;
    is_int(psd_rewrite_len(len, e, 2, &n), -1, "edit past the end refused");
    e[1].start = 11;
    e[1].end = 10;
    is_int(psd_rewrite_len(len, e, 2, &n), -1, "backwards edit refused");

    /* pure insertions and deletions */
    e[0].start = e[0].end = 0;
    e[0].data = "ab";
    e[0].len = 2;
    e[1].start = 1;
    e[1].end = 3;
    e[1].data = NULL;
    e[1].len = 0;
    psd_rewrite((const unsigned char *) "xyzw", 4, e, 2, out, sizeof(out),
                &n);
    ok(n == 4 && memcmp(out, "abxw", 4) == 0, "insert and delete");

    n = psd_json_quote((char *) out, sizeof(out), "a\"b\\\n\x01\x7f\xc3\xa9",
                       9);
    out[n] = '\0';
    is_str((char *) out, "\"a\\\"b\\\\\\n\\u0001\x7f\xc3\xa9\"",
           "quote escapes what JSON needs");
    is_int(psd_json_quote((char *) out, 4, "abc", 3), 0,
           "quote into too small a buffer");
    is_int(psd_json_quote((char *) out, 5, "abc", 3), 5,
           "quote into just enough");

    is_int(psd_rewrite(NULL, 0, NULL, 0, out, 0, &n), 0,
           "rewrite of nothing");
    is_int(n, 0, "rewrite of nothing is empty");
    is_int(scan_n(NULL, 0, "a", 0, 0), PSD_JSON_INVALID,
           "a NULL body is an empty one");

    for (i = 0; i < 4; i++) {
        e[i].data = NULL;
    }
}


int
main(void)
{
    test_paths();
    test_errors();
    test_valid();
    test_matching();
    test_rewrite();

    return done_testing();
}
