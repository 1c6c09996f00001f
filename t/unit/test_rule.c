/*
 * Unit tests: the fraud rule language, its messages and their columns,
 * printing rules back, and matching counter values.
 */

#include "tap.h"
#include "psd_rule.h"


#define A16  "aaaaaaaaaaaaaaaa"
#define A64  A16 A16 A16 A16


static psd_rule_t  rule;


static int
parse(const char *text)
{
    char    err[PSD_RULE_ERR_LEN];
    size_t  col;

    return psd_rule_parse(&rule, text, strlen(text), err, sizeof(err), &col);
}


static void
bad(const char *text, size_t want_col, const char *want)
{
    char    err[PSD_RULE_ERR_LEN];
    size_t  col = 0;
    int     rc;

    rc = psd_rule_parse(&rule, text, strlen(text), err, sizeof(err), &col);

    ok(rc == -1 && col == want_col && strcmp(err, want) == 0,
       "refused: %s", text);

    if (rc != -1 || col != want_col || strcmp(err, want) != 0) {
        printf("#   got rc %d, column %zu, \"%s\"\n", rc, col, err);
        printf("#   expected column %zu, \"%s\"\n", want_col, want);
    }
}


/* parses, prints, and parses the printed text back into an equal rule */
static void
canon(const char *text, const char *want)
{
    char        buf[PSD_RULE_TEXT_LEN];
    size_t      n;
    psd_rule_t  again;

    if (parse(text) != 0) {
        ok(0, "parse %s", text);
        return;
    }

    n = psd_rule_format(&rule, buf, sizeof(buf));
    is_str(buf, want, "format of %s", text);
    is_int(n, strlen(want), "its length");

    again = rule;
    ok(parse(buf) == 0 && psd_rule_equal(&rule, &again),
       "%s reads back equal", buf);
}


static void
test_elements(void)
{
    ok(parse("distinct($psd_card_fingerprint) by $remote_addr over 1h > 3")
       == 0, "cards per ip");
    ok(rule.agg == PSD_RULE_DISTINCT && rule.event == PSD_RULE_EVENT_NONE
       && strcmp(rule.var, "psd_card_fingerprint") == 0
       && rule.nkeys == 1 && strcmp(rule.keys[0], "remote_addr") == 0
       && rule.window == 3600 && rule.cmp == PSD_RULE_GT
       && rule.threshold == 3, "its fields");
    is_int(psd_rule_kind(&rule), 'd', "distinct kind");

    ok(parse("count(payment_failed) by $psd_card_fingerprint over 1d > 3")
       == 0, "failed per card");
    ok(rule.agg == PSD_RULE_COUNT
       && rule.event == PSD_RULE_EVENT_PAYMENT_FAILED && rule.var[0] == '\0'
       && rule.window == 86400, "its fields");
    is_int(psd_rule_kind(&rule), 'c', "count kind");

    ok(parse("sum($arg_amount) by $http_x_email over 24h >= 100000") == 0,
       "amount per email");
    ok(rule.agg == PSD_RULE_SUM && strcmp(rule.var, "arg_amount") == 0
       && rule.cmp == PSD_RULE_GE && rule.threshold == 100000
       && rule.window == 86400, "its fields");
    is_int(psd_rule_kind(&rule), 's', "sum kind");

    ok(parse("distinct($http_x_email) by $psd_card_fingerprint over 7d > 2")
       == 0, "emails per card");
    is_int(rule.window, 604800, "7d");

    ok(parse("count() by $remote_addr over 1m > 100") == 0, "count()");
    is_int(rule.event, PSD_RULE_EVENT_REQUESTS, "counts requests");
    ok(parse("count(requests) by $remote_addr over 1m > 100") == 0,
       "count(requests)");
    is_int(rule.event, PSD_RULE_EVENT_REQUESTS, "the same");
    ok(parse("count(payment_succeeded) by $remote_addr over 1m > 1") == 0,
       "payment_succeeded");
    is_int(rule.event, PSD_RULE_EVENT_PAYMENT_SUCCEEDED, "its event");
    ok(parse("count($http_x_coupon) by $remote_addr over 1m > 1") == 0,
       "count of a variable");
    ok(rule.event == PSD_RULE_EVENT_NONE
       && strcmp(rule.var, "http_x_coupon") == 0, "its variable");

    ok(parse("count() by $a, $b,$c ,$d over 1s > 0") == 0, "four keys");
    ok(rule.nkeys == 4 && strcmp(rule.keys[3], "d") == 0, "kept in order");

    ok(parse("count() by $a over 1h < 5") == 0 && rule.cmp == PSD_RULE_LT,
       "<");
    ok(parse("count() by $a over 1h <= 5") == 0 && rule.cmp == PSD_RULE_LE,
       "<=");
    ok(parse("count() by $a over 1h == 5") == 0 && rule.cmp == PSD_RULE_EQ,
       "==");
    ok(parse("count() by $a over 1h>5") == 0 && rule.cmp == PSD_RULE_GT
       && rule.threshold == 5, "no space around the comparison");

    ok(parse("  \tcount ( ) by\n$a   over 90m   >=  0007 \r\n ") == 0
       && rule.window == 5400 && rule.threshold == 7,
       "any whitespace, leading zeros");
    ok(parse("count()by$a over 1h>1") == 0, "punctuation needs no space");
    ok(parse("count() by $_1 over 1h > 1") == 0
       && strcmp(rule.keys[0], "_1") == 0, "digits and underscores");
    ok(parse("count() by $1 over 1h > 1") == 0, "capture-like names");

    ok(parse("count() by $a over 1s > 0") == 0 && rule.window == 1,
       "the shortest window");
    ok(parse("count() by $a over 30d > 0") == 0 && rule.window == 2592000,
       "the longest window");
    ok(parse("count() by $a over 1w2d23h59m59s > 0") == 0
       && rule.window == 863999, "a combined window");
    ok(parse("count() by $a over 1s1000ms > 0") == 0 && rule.window == 2,
       "milliseconds making whole seconds");
    ok(parse("count() by $a over 3600 > 0") == 0 && rule.window == 3600,
       "a bare number of seconds");

    ok(parse("sum($x) by $a over 1h > 9007199254740991") == 0
       && rule.threshold == 9007199254740991LL, "the largest number");
    ok(parse("distinct($x) by $a over 1h > 999") == 0,
       "the largest distinct threshold");
    ok(parse("count() by $a over 1h > 0") == 0 && rule.threshold == 0,
       "zero");

    ok(parse("count() by $" A64 " over 1h > 1") == 0
       && strlen(rule.keys[0]) == 64, "a 64-character name");
}


static void
test_errors(void)
{
    bad("", 1, "expected \"count\", \"distinct\" or \"sum\" at column 1");
    bad("   ", 4, "expected \"count\", \"distinct\" or \"sum\" at column 4");
    bad("avg($x) by $a over 1h > 1", 1,
        "expected \"count\", \"distinct\" or \"sum\" at column 1");
    bad("Count() by $a over 1h > 1", 1,
        "expected \"count\", \"distinct\" or \"sum\" at column 1");
    bad("counts() by $a over 1h > 1", 1,
        "expected \"count\", \"distinct\" or \"sum\" at column 1");
    bad("count by $a over 1h > 1", 7, "expected \"(\" at column 7");
    bad("count", 6, "expected \"(\" at column 6");
    bad("count(", 7, "expected an event, a $variable or \")\" at column 7");
    bad("count(-) by $a over 1h > 1", 7,
        "expected an event, a $variable or \")\" at column 7");
    bad("count(refunds) by $a over 1h > 1", 7,
        "unknown event \"refunds\" at column 7");
    bad("count(aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaa) by $a over 1h > 1", 7,
        "unknown event \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" at column 7");
    bad("sum() by $a over 1h > 1", 5,
        "\"sum\" needs a $variable at column 5");
    bad("distinct(requests) by $a over 1h > 1", 10,
        "\"distinct\" needs a $variable at column 10");
    bad("sum(amount) by $a over 1h > 1", 5,
        "\"sum\" needs a $variable at column 5");
    bad("sum($) by $a over 1h > 1", 6,
        "expected a variable name after \"$\" at column 6");
    bad("sum($x by $a over 1h > 1", 8, "expected \")\" at column 8");
    bad("sum($x-y) by $a over 1h > 1", 7, "expected \")\" at column 7");
    bad("sum($x) $a over 1h > 1", 9, "expected \"by\" at column 9");
    bad("sum($x) bye $a over 1h > 1", 9, "expected \"by\" at column 9");
    bad("sum($x) by", 11, "expected a $variable at column 11");
    bad("sum($x) by a over 1h > 1", 12, "expected a $variable at column 12");
    bad("sum($x) by $a, over 1h > 1", 16,
        "expected a $variable at column 16");
    bad("sum($x) by $a $b over 1h > 1", 15,
        "expected \"over\" at column 15");
    bad("count(payment_failed) by $card over 1d > 3 block", 44,
        "unexpected text after the number at column 44");
    bad("count(payment_failed) by $card ovr 1d > 3", 32,
        "expected \"over\" at column 32");
    bad("count() by $a, $b, $c, $d, $e over 1h > 1", 28,
        "more than 4 keys at column 28");
    bad("count() by $a, $A over 1h > 1", 16,
        "duplicate key \"$a\" at column 16");
    bad("count() by $" A64 "a over 1h > 1", 13,
        "variable name longer than 64 characters at column 13");
    bad("count() by $a over", 19, "expected a duration like 1h at column 19");
    bad("count() by $a over > 1", 20,
        "expected a duration like 1h at column 20");
    bad("count() by $a over 1x > 1", 20,
        "invalid duration \"1x\" at column 20");
    bad("count() by $a over 1h 30m > 1", 23,
        "expected >, >=, <, <= or == at column 23");
    bad("count() by $a over 30m1h > 1", 20,
        "invalid duration \"30m1h\" at column 20");
    bad("count() by $a over 1500ms > 1", 20,
        "window must be whole seconds at column 20");
    bad("count() by $a over 0s > 1", 20,
        "window must be from 1s to 30d at column 20");
    bad("count() by $a over 30d1s > 1", 20,
        "window must be from 1s to 30d at column 20");
    bad("count() by $a over 5w > 1", 20,
        "window must be from 1s to 30d at column 20");
    bad("count() by $a over 1h", 22,
        "expected >, >=, <, <= or == at column 22");
    bad("count() by $a over 1h = 1", 23,
        "expected >, >=, <, <= or == at column 23");
    bad("count() by $a over 1h => 1", 23,
        "expected >, >=, <, <= or == at column 23");
    bad("count() by $a over 1h != 1", 23,
        "expected >, >=, <, <= or == at column 23");
    bad("count() by $a over 1h >> 1", 24, "expected a number at column 24");
    bad("count() by $a over 1h >", 24, "expected a number at column 24");
    bad("count() by $a over 1h > -1", 25, "expected a number at column 25");
    bad("count() by $a over 1h > x", 25, "expected a number at column 25");
    bad("count() by $a over 1h > 1.5", 26,
        "unexpected text after the number at column 26");
    bad("count() by $a over 1h > 3k", 26,
        "unexpected text after the number at column 26");
    bad("sum($x) by $a over 1h > 9007199254740992", 25,
        "number larger than 9007199254740991 at column 25");
    bad("sum($x) by $a over 1h > 99999999999999999999999", 25,
        "number larger than 9007199254740991 at column 25");
    bad("distinct($x) by $a over 1h >= 1000", 31,
        "distinct threshold must be below 1000 at column 31");
}


static void
test_api(void)
{
    int         i;
    char        err[PSD_RULE_ERR_LEN], small[16], buf[PSD_RULE_TEXT_LEN];
    size_t      col, n;
    psd_rule_t  a, b;

    canon("distinct($psd_card_fingerprint) by $remote_addr over 1h > 3",
          "distinct($psd_card_fingerprint) by $remote_addr over 1h > 3");
    canon("count() by $a,$b over 7d >= 1",
          "count(requests) by $a, $b over 1w >= 1");
    canon("  sum( $x )  by  $a  over  5400 == 01 ",
          "sum($x) by $a over 1h30m == 1");
    canon("count(payment_failed) by $c over 30d <= 9007199254740991",
          "count(payment_failed) by $c over 4w2d <= 9007199254740991");
    canon("count($v) by $k over 86399 < 0",
          "count($v) by $k over 23h59m59s < 0");

    /* the text is not NUL-terminated: the length rules */
    ok(psd_rule_parse(&rule, "count() by $a over 1h > 12345", 26, err,
                      sizeof(err), &col) == 0 && rule.threshold == 12,
       "the length is honoured");
    ok(psd_rule_parse(&rule, "count() by $a\0 over 1h > 1", 27, err,
                      sizeof(err), &col) == -1 && col == 14,
       "a NUL byte is an error, not an end");

    /* a short buffer still gets a NUL-terminated message */
    ok(psd_rule_parse(&rule, "avg", 3, small, sizeof(small), &col) == -1
       && strlen(small) == sizeof(small) - 1 && col == 1,
       "messages are cut to the buffer");
    ok(psd_rule_parse(&rule, "avg", 3, NULL, 0, &col) == -1 && col == 1,
       "no buffer at all");
    ok(psd_rule_parse(&rule, "avg", 3, NULL, 0, NULL) == -1,
       "nor a column");
    ok(psd_rule_parse(&rule, "count() by $a over 1h > 1", 25, NULL, 0, NULL)
       == 0, "neither is needed on success");

    ok(parse("sum($x) by $a, $b over 1h > 5") == 0, "a rule");
    a = rule;
    n = psd_rule_format(&a, small, sizeof(small));
    ok(n == strlen("sum($x) by $a, $b over 1h > 5")
       && strlen(small) == sizeof(small) - 1
       && strncmp(small, "sum($x) by $a, $b over", sizeof(small) - 1) == 0,
       "format truncates like snprintf");
    is_int(psd_rule_format(&a, NULL, 0), n, "and measures without a buffer");

    b = a;
    ok(psd_rule_equal(&a, &b), "equal");
    b.threshold++;
    ok(!psd_rule_equal(&a, &b), "threshold differs");
    b = a;
    strcpy(b.keys[1], "c");
    ok(!psd_rule_equal(&a, &b), "a key differs");
    b = a;
    b.nkeys = 1;
    ok(!psd_rule_equal(&a, &b), "key count differs");

    b = a;
    b.cmp = 0;
    is_int(psd_rule_format(&b, buf, sizeof(buf)), 0, "no format of garbage");
    is_str(buf, "", "and an empty string");

    /* matching: the edges of every comparison */
    static const struct {
        psd_rule_cmp_e  cmp;
        int             below, at, above;
    } m[] = {
        { PSD_RULE_GT, 0, 0, 1 },
        { PSD_RULE_GE, 0, 1, 1 },
        { PSD_RULE_LT, 1, 0, 0 },
        { PSD_RULE_LE, 1, 1, 0 },
        { PSD_RULE_EQ, 0, 1, 0 },
    };

    a.threshold = 3;
    for (i = 0; i < 5; i++) {
        a.cmp = m[i].cmp;
        ok(psd_rule_matches(&a, 2) == m[i].below
           && psd_rule_matches(&a, 3) == m[i].at
           && psd_rule_matches(&a, 4) == m[i].above,
           "matches with cmp %d", (int) m[i].cmp);
    }
    a.cmp = PSD_RULE_GT;
    a.threshold = PSD_RULE_THRESHOLD_MAX;
    ok(!psd_rule_matches(&a, PSD_RULE_THRESHOLD_MAX)
       && psd_rule_matches(&a, PSD_RULE_THRESHOLD_MAX + 1), "large values");

    is_str(psd_rule_event_name(PSD_RULE_EVENT_PAYMENT_FAILED),
           "payment_failed", "event name");
    ok(psd_rule_event_name(PSD_RULE_EVENT_NONE) == NULL, "no event name");
    is_int(psd_rule_action("block", 5), PSD_RULE_BLOCK, "block");
    is_int(psd_rule_action("review", 6), PSD_RULE_REVIEW, "review");
    is_int(psd_rule_action("challenge", 9), PSD_RULE_CHALLENGE, "challenge");
    is_int(psd_rule_action("allow", 5), PSD_RULE_ALLOW, "allow");
    is_int(psd_rule_action("Block", 5), 0, "actions are lowercase");
    is_int(psd_rule_action("blocks", 5), PSD_RULE_BLOCK,
           "the length is honoured");
    is_int(psd_rule_action("", 0), 0, "empty action");
    is_str(psd_rule_action_name(PSD_RULE_CHALLENGE), "challenge",
           "action name");
    ok(psd_rule_action_name(0) == NULL, "no action name");
    ok(PSD_RULE_ALLOW < PSD_RULE_REVIEW && PSD_RULE_REVIEW < PSD_RULE_CHALLENGE
       && PSD_RULE_CHALLENGE < PSD_RULE_BLOCK, "actions grow in severity");
}


int
main(void)
{
    test_elements();
    test_errors();
    test_api();

    return done_testing();
}
