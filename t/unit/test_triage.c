/*
 * Unit tests: the ticket triage rules, their messages and their columns,
 * printing rules back, matching tickets, and the e-mail and UTF-8 checks.
 */

#include "tap.h"
#include "psd_triage.h"


#define A16   "aaaaaaaaaaaaaaaa"
#define A64   A16 A16 A16 A16
#define A128  A64 A64
#define COND  "category == a and "


static psd_triage_rule_t    rule;
static psd_triage_ticket_t  tk;


static int
parse(const char *text)
{
    char    err[PSD_TRIAGE_ERR_LEN];
    size_t  col;

    return psd_triage_parse(&rule, text, strlen(text), err, sizeof(err),
                            &col);
}


static void
bad(const char *text, size_t want_col, const char *want)
{
    char    err[PSD_TRIAGE_ERR_LEN];
    size_t  col = 0;
    int     rc;

    rc = psd_triage_parse(&rule, text, strlen(text), err, sizeof(err), &col);

    ok(rc == -1 && col == want_col && strcmp(err, want) == 0,
       "refused: %s", text);

    if (rc != -1 || col != want_col || strcmp(err, want) != 0) {
        printf("#   got rc %d, column %zu, \"%s\"\n", rc, col, err);
        printf("#   expected column %zu, \"%s\"\n", want_col, want);
    }
}


/* parses and prints in canonical form, which parses back the same */
static void
canon(const char *text, const char *want)
{
    char               buf[PSD_TRIAGE_TEXT_LEN], again[PSD_TRIAGE_TEXT_LEN];
    size_t             n;
    psd_triage_rule_t  first;

    if (parse(text) != 0) {
        ok(0, "parse %s", text);
        return;
    }

    first = rule;
    n = psd_triage_format(&rule, buf, sizeof(buf));
    is_str(buf, want, "format of %s", text);

    ok(n == strlen(want) && parse(buf) == 0
       && psd_triage_format(&rule, again, sizeof(again)) == n
       && strcmp(buf, again) == 0 && rule.nconds == first.nconds,
       "%s reads back the same", buf);
}


static void
ticket(const char *category, const char *state, const char *email,
    const char *subject, const char *message)
{
    memset(&tk, 0, sizeof(tk));

    tk.category = category;
    tk.category_len = category ? strlen(category) : 0;
    tk.order_state = state;
    tk.order_state_len = state ? strlen(state) : 0;
    tk.email = email;
    tk.email_len = email ? strlen(email) : 0;
    tk.subject = subject;
    tk.subject_len = subject ? strlen(subject) : 0;
    tk.message = message;
    tk.message_len = message ? strlen(message) : 0;
}


static void
value(int64_t v)
{
    tk.order_value = v;
    tk.has_order_value = 1;
}


/* the rule text matched against the current ticket; -1 if it is refused */
static int
m(const char *text)
{
    if (parse(text) != 0) {
        return -1;
    }

    return psd_triage_match(&rule, &tk);
}


/* one keyword against a subject */
static int
kw(const char *phrase, const char *subject)
{
    char  text[PSD_TRIAGE_VALUE_MAX + 32];

    snprintf(text, sizeof(text), "keyword has \"%s\"", phrase);
    ticket(NULL, NULL, NULL, subject, NULL);

    return m(text);
}


static void
test_elements(void)
{
    psd_triage_cond_t  *c;

    ok(parse("category == billing and order_state == paid"
             " and order_value >= 10000") == 0, "three conditions");
    c = rule.conds;
    ok(rule.nconds == 3
       && c[0].field == PSD_TRIAGE_CATEGORY && c[0].op == PSD_TRIAGE_EQ
       && strcmp(c[0].value, "billing") == 0 && c[0].value_len == 7
       && c[1].field == PSD_TRIAGE_ORDER_STATE && c[1].op == PSD_TRIAGE_EQ
       && strcmp(c[1].value, "paid") == 0 && c[1].value_len == 4
       && c[2].field == PSD_TRIAGE_ORDER_VALUE && c[2].op == PSD_TRIAGE_GE
       && c[2].number == 10000 && strcmp(c[2].value, "10000") == 0,
       "their fields");

    ok(parse("keyword has \"refund\" and email_domain == example.com") == 0,
       "keyword and domain");
    ok(rule.nconds == 2 && c[0].field == PSD_TRIAGE_KEYWORD
       && c[0].op == PSD_TRIAGE_HAS && strcmp(c[0].value, "refund") == 0
       && c[1].field == PSD_TRIAGE_EMAIL_DOMAIN
       && strcmp(c[1].value, "example.com") == 0, "their fields");

    ok(parse("order_state != none") == 0 && rule.nconds == 1
       && c[0].op == PSD_TRIAGE_NE && strcmp(c[0].value, "none") == 0,
       "order_state != none");

    ok(parse("*") == 0 && rule.nconds == 0, "* is always");
    ok(parse(" \t*\n ") == 0 && rule.nconds == 0, "* with spaces");

    ok(parse("order_value == 1") == 0 && c[0].op == PSD_TRIAGE_EQ, "==");
    ok(parse("order_value != 1") == 0 && c[0].op == PSD_TRIAGE_NE, "!=");
    ok(parse("order_value > 1") == 0 && c[0].op == PSD_TRIAGE_GT, ">");
    ok(parse("order_value >= 1") == 0 && c[0].op == PSD_TRIAGE_GE, ">=");
    ok(parse("order_value < 1") == 0 && c[0].op == PSD_TRIAGE_LT, "<");
    ok(parse("order_value <= 1") == 0 && c[0].op == PSD_TRIAGE_LE, "<=");

    ok(parse("CATEGORY == Billing AND Keyword HAS \"Money Back\"") == 0
       && rule.nconds == 2 && strcmp(c[0].value, "billing") == 0
       && strcmp(c[1].value, "money back") == 0 && c[1].value_len == 10,
       "keywords and values fold case");
    ok(parse("category == \"R\xc3\x9c" "ckerstattung\"") == 0
       && strcmp(c[0].value, "r\xc3\x9c" "ckerstattung") == 0,
       "only ASCII is lowercased");
    ok(parse("category == a.B:c-D_9") == 0
       && strcmp(c[0].value, "a.b:c-d_9") == 0, "bare token bytes");
    ok(parse("category == \"a b, c! (d)\"") == 0
       && strcmp(c[0].value, "a b, c! (d)") == 0, "quoted value");
    ok(parse("order_value>=5 and keyword has\"x\"and category==a") == 0
       && rule.nconds == 3, "no spaces where none are needed");
    ok(parse("\tcategory\n==\r\nbilling\tand\norder_value\t<\t3 ") == 0
       && rule.nconds == 2, "tabs and newlines are spaces");
    ok(parse("order_value == 007") == 0 && c[0].number == 7
       && strcmp(c[0].value, "7") == 0 && c[0].value_len == 1,
       "leading zeros");
    ok(parse("order_value <= 9007199254740991") == 0
       && c[0].number == 9007199254740991LL, "2^53 - 1");
    ok(parse("order_value > 0") == 0 && c[0].number == 0, "zero");
    ok(parse("category == " A128) == 0 && c[0].value_len == 128,
       "128 bytes");
    ok(parse(COND COND COND COND COND COND COND "category == a") == 0
       && rule.nconds == 8, "8 conditions");
    ok(parse("order_state == CHARGEBACK and order_state != created"
             " and order_state != refunded") == 0
       && strcmp(c[0].value, "chargeback") == 0, "order states");
    ok(psd_triage_parse(&rule, "category == billing and x", 19, NULL, 0,
                        NULL) == 0 && rule.nconds == 1,
       "the length counts, not a NUL");

    is_str(psd_triage_field_name(PSD_TRIAGE_EMAIL_DOMAIN), "email_domain",
           "field name");
    is_str(psd_triage_op_name(PSD_TRIAGE_HAS), "has", "op name");
    ok(psd_triage_field_name((psd_triage_field_e) 0) == NULL
       && psd_triage_op_name((psd_triage_op_e) 8) == NULL,
       "names out of range");
}


static void
test_errors(void)
{
    char    err[PSD_TRIAGE_ERR_LEN], small[12];
    size_t  col;

    bad("", 1, "expected a condition or \"*\" at column 1");
    bad("   ", 4, "expected a condition or \"*\" at column 4");
    bad("catgory == billing", 1, "unknown field \"catgory\" at column 1");
    bad("category == a and " A64, 19,
        "unknown field \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" at column 19");
    bad("\"category\" == x", 1, "expected a field at column 1");
    bad("category billing", 10, "expected an operator at column 10");
    bad("category = billing", 10, "expected an operator at column 10");
    bad("category", 9, "expected an operator at column 9");
    bad("category has x", 10, "\"has\" only applies to keyword at column 10");
    bad("order_value has 5", 13,
        "\"has\" only applies to keyword at column 13");
    bad("keyword == refund", 9, "keyword only takes \"has\" at column 9");
    bad("category > 5", 10, "\">\" only applies to order_value at column 10");
    bad("email_domain <= a", 14,
        "\"<=\" only applies to order_value at column 14");
    bad("category == ", 13, "expected a value at column 13");
    bad("category == ,", 13, "expected a value at column 13");
    bad("order_value << 5", 14, "expected a value at column 14");
    bad("category == billing or x", 21, "expected \"and\" at column 21");
    bad("category == billing,", 20, "expected \"and\" at column 20");
    bad("category == billing andcategory == x", 21,
        "expected \"and\" at column 21");
    bad("category == billing and", 24, "expected a field at column 24");
    bad("order_value >= ten", 16, "expected a number at column 16");
    bad("order_value >= \"10\"", 16, "expected a number at column 16");
    bad("order_value >= -1", 16, "expected a number at column 16");
    bad("order_value >= 1.5", 16, "expected a number at column 16");
    bad("order_value > 9007199254740992", 15,
        "number larger than 9007199254740991 at column 15");
    bad("order_state == payed", 16,
        "unknown order state \"payed\" at column 16");
    bad("category == \"\"", 13, "empty value at column 13");
    bad("category == \"abc", 13, "unterminated string at column 13");
    bad("category == \"a\tb\"", 15,
        "control character in a value at column 15");
    bad("category == \"a\xc2\x85\"", 15,
        "control character in a value at column 15");
    bad("category == \" a\"", 14, "value starts with a space at column 14");
    bad("category == \"a \"", 15, "value ends with a space at column 15");
    bad("category == \"\xc2\xa0" "a\"", 14,
        "value starts with a space at column 14");
    bad("category == \"a\xe3\x80\x80\"", 15,
        "value ends with a space at column 15");
    bad("category == \"a\xff\"", 15, "invalid UTF-8 in a value at column 15");
    bad("category == \"\xed\xa0\x80\"", 14,
        "invalid UTF-8 in a value at column 14");
    bad("category == " A128 "a", 13,
        "value longer than 128 bytes at column 13");
    bad("category == \"" A128 "a\"", 13,
        "value longer than 128 bytes at column 13");
    bad("* and category == x", 3, "\"*\" must be the whole rule at column 3");
    bad("category == *", 13, "expected a value at column 13");
    bad(COND COND COND COND COND COND COND COND "category == a", 145,
        "too many conditions at column 145");

    col = 0;
    ok(psd_triage_parse(&rule, "catgory", 7, NULL, 0, &col) == -1
       && col == 1, "no message buffer");
    ok(psd_triage_parse(&rule, "catgory", 7, small, sizeof(small), NULL)
       == -1 && strlen(small) == sizeof(small) - 1, "a short buffer");
    ok(psd_triage_parse(&rule, NULL, 0, err, sizeof(err), &col) == -1
       && col == 1, "no text");
}


static void
test_format(void)
{
    char  buf[PSD_TRIAGE_TEXT_LEN];

    canon("category == billing and order_state == paid"
          " and order_value >= 10000",
          "category == billing and order_state == paid"
          " and order_value >= 10000");
    canon("  *  ", "*");
    canon("KEYWORD has \"Money Back\" AND email_domain==\"Example.COM\"",
          "keyword has \"money back\" and email_domain == example.com");
    canon("order_value<007", "order_value < 7");

    rule.nconds = 1;
    rule.conds[0].field = PSD_TRIAGE_CATEGORY;
    rule.conds[0].op = PSD_TRIAGE_HAS;
    ok(psd_triage_format(&rule, buf, sizeof(buf)) == 0 && buf[0] == '\0',
       "a struct no parse makes is not printed");
}


static void
test_match(void)
{
    ticket("Billing", "PAID", "Jane@Example.COM", "Refund please", "");
    value(10000);

    is_int(m("category == billing"), 1, "category, any case");
    is_int(m("category != billing"), 0, "category !=");
    is_int(m("category == bill"), 0, "category is whole");
    is_int(m("order_state == paid"), 1, "order_state, any case");
    is_int(m("order_state != none"), 1, "an order");
    is_int(m("email_domain == example.com"), 1, "domain, any case");
    is_int(m("email_domain != example.com"), 0, "domain !=");
    is_int(m("email_domain == com"), 0, "domain is whole");
    is_int(m("*"), 1, "*");
    is_int(m("category == billing and order_state == paid"
             " and order_value >= 10000 and keyword has refund"
             " and email_domain == example.com"), 1, "all hold");
    is_int(m("category == billing and order_state == paid"
             " and order_value > 10000"), 0, "one fails");

    is_int(m("order_value == 10000"), 1, "== equal");
    is_int(m("order_value != 10000"), 0, "!= equal");
    is_int(m("order_value > 10000"), 0, "> equal");
    is_int(m("order_value >= 10000"), 1, ">= equal");
    is_int(m("order_value < 10000"), 0, "< equal");
    is_int(m("order_value <= 10000"), 1, "<= equal");
    is_int(m("order_value > 9999 and order_value < 10001"), 1, "between");
    is_int(m("order_value < 9999 or"), -1, "refused rule");
    value(9999);
    is_int(m("order_value < 10000 and order_value != 10000"), 1, "below");
    value(-5);
    is_int(m("order_value < 0"), 1, "a negative ticket value");

    tk.has_order_value = 0;
    is_int(m("order_value == 0"), 0, "no value: ==");
    is_int(m("order_value != 0"), 0, "no value: !=");
    is_int(m("order_value >= 0"), 0, "no value: >=");
    is_int(m("order_value < 1"), 0, "no value: <");

    ticket(NULL, NULL, NULL, NULL, NULL);
    is_int(m("order_state == none"), 1, "no state is none");
    is_int(m("order_state != none"), 0, "no state: != none");
    is_int(m("email_domain != example.com"), 1, "no e-mail: !=");
    is_int(m("email_domain == example.com"), 0, "no e-mail: ==");
    is_int(m("keyword has refund"), 0, "no text");
    is_int(m("category != billing"), 1, "no category: !=");
    is_int(m("*"), 1, "an empty ticket and *");

    ticket(NULL, "none", "user.example.com", NULL, NULL);
    is_int(m("order_state == none"), 1, "state none");
    is_int(m("email_domain == example.com"), 0, "no '@'");
    ticket(NULL, NULL, "a@b@Example.com", NULL, NULL);
    is_int(m("email_domain == example.com"), 1, "after the last '@'");
    ticket(NULL, NULL, "a@example.com.evil", NULL, NULL);
    is_int(m("email_domain == example.com"), 0, "a longer domain");
}


static void
test_keyword(void)
{
    is_int(kw("refund", "Refund please"), 1, "refund in Refund please");
    is_int(kw("refund", "refunded"), 0, "refund not in refunded");
    is_int(kw("refund", "nonrefundable"), 0, "not inside a word");
    is_int(kw("refund", "REFUND!"), 1, "before punctuation");
    is_int(kw("refund", "(refund)"), 1, "in parentheses");
    is_int(kw("refund", "refund_now"), 0, "_ is a word byte");
    is_int(kw("refund", "refund2"), 0, "digits are word bytes");
    is_int(kw("refund", "refunded, then refund"), 1, "a later occurrence");
    is_int(kw("refund", "I want a refund"), 1, "at the end");
    is_int(kw("money back", "I want my Money Back now"), 1, "a phrase");
    is_int(kw("money back", "money  \t back"), 1, "any run of spaces");
    is_int(kw("money back", "money\r\nback"), 1, "a line break");
    is_int(kw("money back", "money\xc2\xa0" "back"), 1, "a no-break space");
    is_int(kw("money back", "moneyback"), 0, "spaces are needed");
    is_int(kw("money back", "money-back"), 0, "a dash is not a space");
    is_int(kw("money back", "money backing"), 0, "the phrase ends a word");
    is_int(kw("money back", "easymoney back"), 0, "and begins one");
    is_int(kw("money back", "money money back"), 1, "a second try");
    is_int(kw("refund", "refund\xe2\x80\xa6 please"), 1, "before an ellipsis");
    is_int(kw("refund", "\xe2\x80\x9erefund\xe2\x80\x9c"), 1, "in quotes");
    is_int(kw("refund", "refund\xf0\x9f\x99\x8f"), 1, "before an emoji");
    is_int(kw("refund", "refund\xc3\xa9"), 0, "before a letter");
    is_int(kw("refund", "\xc3\xa9refund"), 0, "after a letter");
    is_int(kw("refund", "refund\xff"), 0, "bad UTF-8 is a letter");
    is_int(kw("caf\xc3\xa9", "Caf\xc3\xa9 au lait"), 1, "a UTF-8 value");
    is_int(kw("c++", "I like c++."), 1, "a value ending in punctuation");
    is_int(kw("#123", "order#123"), 1, "beginning in punctuation");

    ticket(NULL, NULL, NULL, "money", "back");
    is_int(m("keyword has \"money back\""), 0, "not across subject, message");
    ticket(NULL, NULL, NULL, "hello", "where is my REFUND?");
    is_int(m("keyword has refund"), 1, "in the message");
}


static int
email(const char *s)
{
    return psd_triage_email_valid(s, strlen(s));
}


static void
test_email(void)
{
    char  buf[300];

    ok(email("a@b.co"), "a@b.co");
    ok(email("user.name+tag@example.com"), "plus and dot");
    ok(email("x@sub-domain.Example.ORG"), "hyphen, case");
    ok(email("\xc3\xbc@example.com"), "a UTF-8 local part");
    ok(email("a@1.2"), "digits");
    ok(email(A64 "@example.com"), "64 bytes local part");

    ok(!email(""), "empty");
    ok(!email("plainaddress"), "no @");
    ok(!email("@example.com"), "empty local part");
    ok(!email("a@"), "empty domain");
    ok(!email("a@localhost"), "a domain without a dot");
    ok(!email("a@@b.com"), "two @ together");
    ok(!email("a@b@c.com"), "two @");
    ok(!email("a b@c.com"), "a space in the local part");
    ok(!email("a\x01@c.com"), "a control character");
    ok(!email("a\x7f@c.com"), "DEL");
    ok(!email("a@-b.com"), "a label beginning with -");
    ok(!email("a@b-.com"), "a label ending with -");
    ok(!email("a@b.com-"), "the last label ending with -");
    ok(!email("a@b..com"), "an empty label");
    ok(!email("a@.b.com"), "a leading dot");
    ok(!email("a@b.com."), "a trailing dot");
    ok(!email("a@b_c.com"), "_ in a label");
    ok(!email("a@b.c om"), "a space in the domain");
    ok(!email(A64 "a@example.com"), "65 bytes local part");
    ok(!email("a@" A64 ".com"), "a 64 bytes label");
    ok(email("a@" A16 A16 A16 "aaaaaaaaaaaaaaa.com"), "a 63 bytes label");
    ok(!psd_triage_email_valid(NULL, 0), "NULL");
    ok(!psd_triage_email_valid("a@b.co", 0), "no length");
    ok(!psd_triage_email_valid("a@b.co\0m", 8), "a NUL");

    /* 254 bytes is the most */
    memset(buf, 'a', sizeof(buf));
    memcpy(buf, "x@", 2);
    buf[62] = '.';
    buf[124] = '.';
    buf[186] = '.';
    buf[248] = '.';
    ok(psd_triage_email_valid(buf, 254), "254 bytes");
    buf[254] = 'a';
    ok(!psd_triage_email_valid(buf, 255), "255 bytes");
}


static int
utf8(const char *s)
{
    return psd_triage_utf8_valid((const unsigned char *) s, strlen(s));
}


static void
test_utf8(void)
{
    ok(utf8(""), "empty");
    ok(utf8("plain ASCII"), "ASCII");
    ok(psd_triage_utf8_valid((const unsigned char *) "a\0b", 3), "NUL");
    ok(utf8("caf\xc3\xa9"), "2 bytes");
    ok(utf8("\xc2\x80"), "U+0080");
    ok(utf8("\xdf\xbf"), "U+07FF");
    ok(utf8("\xe2\x82\xac"), "3 bytes");
    ok(utf8("\xe0\xa0\x80"), "U+0800");
    ok(utf8("\xed\x9f\xbf"), "U+D7FF");
    ok(utf8("\xee\x80\x80"), "U+E000");
    ok(utf8("\xef\xbf\xbf"), "U+FFFF");
    ok(utf8("\xf0\x9d\x84\x9e"), "4 bytes");
    ok(utf8("\xf0\x90\x80\x80"), "U+10000");
    ok(utf8("\xf4\x8f\xbf\xbf"), "U+10FFFF");

    ok(!utf8("\xc0\xaf"), "overlong 2 bytes");
    ok(!utf8("\xc1\xbf"), "overlong U+007F");
    ok(!utf8("\xe0\x80\xaf"), "overlong 3 bytes");
    ok(!utf8("\xe0\x9f\xbf"), "overlong U+07FF");
    ok(!utf8("\xf0\x80\x80\xaf"), "overlong 4 bytes");
    ok(!utf8("\xf0\x8f\xbf\xbf"), "overlong U+FFFF");
    ok(!utf8("\xed\xa0\x80"), "surrogate U+D800");
    ok(!utf8("\xed\xbf\xbf"), "surrogate U+DFFF");
    ok(!utf8("\xf4\x90\x80\x80"), "U+110000");
    ok(!utf8("\xf5\x80\x80\x80"), "F5");
    ok(!utf8("\xff"), "FF");
    ok(!utf8("\xfe"), "FE");
    ok(!utf8("\x80"), "a lone continuation byte");
    ok(!utf8("caf\xc3"), "truncated 2 bytes");
    ok(!utf8("\xe2\x82"), "truncated 3 bytes");
    ok(!utf8("\xf0\x9d\x84"), "truncated 4 bytes");
    ok(!utf8("\xe2\x82" "a"), "a continuation byte missing");
    ok(!utf8("\xc3\xa9\xa9"), "one continuation byte too many");
    ok(psd_triage_utf8_valid(NULL, 0), "NULL, empty");
}


int
main(void)
{
    test_elements();
    test_errors();
    test_format();
    test_match();
    test_keyword();
    test_email();
    test_utf8();

    return done_testing();
}
