/*
 * Unit tests: customer satisfaction.  The score, the comment checks, the
 * ticket id of a rating path, and the purpose key that keeps rating links
 * and download links apart (docs/link-format.md, "Purpose keys"), with
 * the vector printed there.
 */

#include <stdint.h>
#include <stdio.h>

#include "tap.h"
#include "psd_csat.h"
#include "psd_link.h"


#define NOW  1767225600


static void
scores(void)
{
    int          i;
    char         s[2];
    const char  *bad[] = {
        "", "0", "6", "9", "a", "-1", "+1", "01", "10", "1 ", " 1", "1.0",
        "11", "\xd9\xa1" /* ARABIC-INDIC DIGIT ONE */
    };

    for (i = 1; i <= 5; i++) {
        s[0] = (char) ('0' + i);
        s[1] = '\0';
        is_int(psd_csat_score(s, 1), i, "score \"%s\"", s);
    }

    for (i = 0; i < (int) (sizeof(bad) / sizeof(bad[0])); i++) {
        is_int(psd_csat_score(bad[i], strlen(bad[i])), 0, "no score: \"%s\"",
               bad[i]);
    }

    is_int(psd_csat_score(NULL, 0), 0, "no score: NULL");
    is_int(psd_csat_score("3", 0), 0, "no score: empty with a byte behind");
    is_int(psd_csat_score("3\0", 2), 0, "no score: a NUL behind");
}


static psd_csat_comment_e
comment(const char *s)
{
    return psd_csat_comment_check((const unsigned char *) s, strlen(s),
                                  PSD_CSAT_COMMENT_MAX);
}


static void
comments(void)
{
    char  buf[PSD_CSAT_COMMENT_MAX + 2];

    is_int(comment(""), PSD_CSAT_OK, "empty comment");
    is_int(comment("Quick and kind, thanks!"), PSD_CSAT_OK, "plain");
    is_int(comment("Line one\r\nLine two\n\tindented"), PSD_CSAT_OK,
           "CR, LF and tab are fine");
    is_int(comment("Merci \xc3\xa9\xe2\x80\x94 \xf0\x9f\x99\x82"), PSD_CSAT_OK,
           "UTF-8, 2 to 4 bytes");
    is_int(comment("order 12345678901 arrived"), PSD_CSAT_OK,
           "11 digits are no card");
    is_int(comment("call +49 30 1234 5678"), PSD_CSAT_OK,
           "a phone number is no card");

    is_int(comment("a\x01" "b"), PSD_CSAT_CONTROL, "SOH");
    is_int(psd_csat_comment_check((const unsigned char *) "a\0b", 3, 0),
           PSD_CSAT_CONTROL, "NUL");
    is_int(comment("a\x1b[31mred"), PSD_CSAT_CONTROL, "ESC");
    is_int(comment("a\x0b" "b"), PSD_CSAT_CONTROL, "vertical tab");
    is_int(comment("a\x0c" "b"), PSD_CSAT_CONTROL, "form feed");
    is_int(comment("a\x7f"), PSD_CSAT_CONTROL, "DEL");
    is_int(comment("a\xc2\x85" "b"), PSD_CSAT_CONTROL, "C1 NEL (U+0085)");
    is_int(comment("a\xc2\x9f"), PSD_CSAT_CONTROL, "C1 U+009F");
    is_int(comment("a\xc2\xa0" "b"), PSD_CSAT_OK, "U+00A0 is no control");

    is_int(comment("caf\xe9"), PSD_CSAT_NOT_UTF8, "Latin-1");
    is_int(comment("\xc0\xaf"), PSD_CSAT_NOT_UTF8, "overlong");
    is_int(comment("\xed\xa0\x80"), PSD_CSAT_NOT_UTF8, "surrogate");
    is_int(comment("\xe2\x80"), PSD_CSAT_NOT_UTF8, "cut short");

    is_int(comment("my card 4242 4242 4242 4242 was charged twice"),
           PSD_CSAT_CARD, "a card number with spaces");
    is_int(comment("4242-4242-4242-4242"), PSD_CSAT_CARD, "with dashes");
    is_int(comment("378282246310005"), PSD_CSAT_CARD, "amex");
    is_int(comment("4242 4242 4242 4241"), PSD_CSAT_OK, "Luhn fails: no card");

    memset(buf, 'x', sizeof(buf));
    is_int(psd_csat_comment_check((unsigned char *) buf, PSD_CSAT_COMMENT_MAX,
                                  PSD_CSAT_COMMENT_MAX),
           PSD_CSAT_OK, "2000 bytes");
    is_int(psd_csat_comment_check((unsigned char *) buf,
                                  PSD_CSAT_COMMENT_MAX + 1,
                                  PSD_CSAT_COMMENT_MAX),
           PSD_CSAT_TOO_LONG, "2001 bytes");
    buf[0] = '\x01';
    is_int(psd_csat_comment_check((unsigned char *) buf,
                                  PSD_CSAT_COMMENT_MAX + 1,
                                  PSD_CSAT_COMMENT_MAX),
           PSD_CSAT_TOO_LONG, "too long is found first");
    is_int(psd_csat_comment_check((unsigned char *) buf,
                                  PSD_CSAT_COMMENT_MAX + 1, 0),
           PSD_CSAT_CONTROL, "max 0: no limit");
}


static void
ticket_ids(void)
{
    size_t       i, q, n;
    const char  *id;
    char         buf[128];

    static const struct {
        const char  *s;
        size_t       queue;
    } ids[] = {
        { "general.AbCdEfGh12345678", 7 },
        { "b.c", 1 },
        { "vip_2-x.A_b-C", 7 },
        { "general", 0 },
        { ".abc", 0 },
        { "general.", 0 },
        { "gen eral.abc", 0 },
        { "general.a/b", 0 },
        { "general.a.b", 0 },
        { "general.a}b", 0 },
        { "general.a%2Eb", 0 },
        { "general.\xc3\xa9", 0 },
        { "", 0 },
        { ".", 0 },
    };

    for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        is_int(psd_csat_ticket_id(ids[i].s, strlen(ids[i].s)), ids[i].queue,
               "ticket id \"%s\"", ids[i].s);
    }

    memset(buf, 'q', 32);
    buf[32] = '.';
    memset(buf + 33, 'i', 32);
    is_int(psd_csat_ticket_id(buf, 65), 32, "queue and id of 32");

    memset(buf, 'q', 33);
    buf[33] = '.';
    buf[34] = 'i';
    is_int(psd_csat_ticket_id(buf, 35), 0, "queue of 33");

    memset(buf, 'q', 3);
    buf[3] = '.';
    memset(buf + 4, 'i', 33);
    is_int(psd_csat_ticket_id(buf, 37), 0, "id of 33");

    ok(psd_csat_ticket_from_path("/support/rate/billing.Ab12", 26, &id, &n,
                                 &q) == 0
       && n == 12 && q == 7 && strncmp(id, "billing.Ab12", n) == 0,
       "the path's last segment");
    ok(psd_csat_ticket_from_path("/r/general.x", 12, &id, &n, &q) == 0
       && q == 7, "a short prefix");
    ok(psd_csat_ticket_from_path("/support/rate/", 14, &id, &n, &q) == -1,
       "no ticket");
    ok(psd_csat_ticket_from_path("general.x", 9, &id, &n, &q) == -1,
       "no slash");
    ok(psd_csat_ticket_from_path("/support/rate/general.x/", 24, &id, &n, &q)
       == -1, "a slash at the end");
    ok(psd_csat_ticket_from_path("/a/general.x/../b.c", 19, &id, &n, &q) == 0
       && n == 3, "only the last segment counts");
}


static void
purpose_keys(void)
{
    int              i;
    long             n;
    char             q[PSD_LINK_QUERY_MAX], hex[65];
    psd_link_t       link;
    const char      *err, *path;
    unsigned char    key[32], rk[32], rk2[32];
    psd_link_key_t   base, rating;
    psd_link_conf_t  conf;
    psd_link_params_t  p;

    for (i = 0; i < 32; i++) {
        key[i] = (unsigned char) i;
    }

    ok(psd_link_purpose_key(key, 32, "rating", 6, rk) == 0, "rating key");

    for (i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", rk[i]);
    }

    /* printf 'psd-link-purpose-v1\nrating' | openssl dgst -sha256 -mac HMAC
     *   -macopt hexkey:000102...1f */
    is_str(hex,
           "42379c6dc4bc1ab57e904302533af281dce7a9726876b808b20c9dde4bafbdfd",
           "rating key of the worked example's key (docs/link-format.md)");

    ok(psd_link_purpose_key(key, 32, "ratinh", 6, rk2) == 0
       && memcmp(rk, rk2, 32) != 0, "another purpose, another key");
    ok(psd_link_purpose_key(key, 32, "", 0, rk2) == -1, "empty purpose");
    ok(psd_link_purpose_key(key, 32, NULL, 0, rk2) == -1, "NULL purpose");
    ok(psd_link_purpose_key(key, 32, "Rating", 6, rk2) == -1, "upper case");
    ok(psd_link_purpose_key(key, 32, "rat\ning", 7, rk2) == -1, "newline");
    ok(psd_link_purpose_key(key, 32, "abcdefghijklmnopqrstuvwxyzabcdefg", 33,
                            rk2) == -1, "33 letters");

    /* a rating link signs with the rating key under the same kid */

    memset(&p, 0, sizeof(p));
    p.kid = "2026a";
    p.kid_len = 5;
    p.key = rk;
    p.key_len = 32;
    path = "/support/rate/general.AbCdEfGh12345678";
    p.path = path;
    p.path_len = strlen(path);
    p.exp = NOW + 30 * 86400;
    p.id = "Lk3f9a2B7c";
    p.id_len = 10;

    /* the worked example of docs/link-format.md, "Purpose keys" */

    p.exp = NOW;
    n = psd_link_sign(&p, q, sizeof(q), &err);
    is_str(q, "psd_v=1&psd_kid=2026a&psd_exp=1767225600&psd_id=Lk3f9a2B7c"
           "&psd_sig=ODESi7EcHmh5rpyWcFOlPtkgdB0fUuaAVXu7s9i7LfM",
           "the documented rating link");

    p.exp = NOW + 30 * 86400;
    n = psd_link_sign(&p, q, sizeof(q), &err);
    ok(n > 0, "rating link signed");

    base.kid = "2026a";
    base.kid_len = 5;
    base.key = key;
    base.key_len = 32;
    base.hkey = NULL;
    rating = base;
    rating.key = rk;

    conf.now = NOW;
    conf.skew = 0;
    conf.max_ttl = 30 * 86400;
    conf.nkeys = 1;

    conf.keys = &rating;
    is_int(psd_link_verify(&link, &conf, q, n, path, strlen(path), NULL),
           PSD_LINK_OK, "a rating link verifies under the rating key");

    conf.keys = &base;
    is_int(psd_link_verify(&link, &conf, q, n, path, strlen(path), NULL),
           PSD_LINK_INVALID, "... never under the download key");

    /* and a download link for the same path never as a rating link */

    p.key = key;
    n = psd_link_sign(&p, q, sizeof(q), &err);
    ok(n > 0, "download link for the rating path signed");
    is_int(psd_link_verify(&link, &conf, q, n, path, strlen(path), NULL),
           PSD_LINK_OK, "it verifies as a download link");
    conf.keys = &rating;
    is_int(psd_link_verify(&link, &conf, q, n, path, strlen(path), NULL),
           PSD_LINK_INVALID, "... never as a rating link");

    /* a download prefix link over "/" neither */

    p.path = "/";
    p.path_len = 1;
    p.prefix = 1;
    n = psd_link_sign(&p, q, sizeof(q), &err);
    ok(n > 0, "prefix download link for \"/\"");
    is_int(psd_link_verify(&link, &conf, q, n, path, strlen(path), NULL),
           PSD_LINK_INVALID, "... is no rating link");
}


int
main(void)
{
    scores();
    comments();
    ticket_ids();
    purpose_keys();

    return done_testing();
}
