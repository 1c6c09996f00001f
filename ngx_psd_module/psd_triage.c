/*
 * Copyright (C) ngx_psd_module authors
 */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "psd_scan.h"
#include "psd_triage.h"


/* indexed by psd_triage_field_e */
static const psd_name_t  fields[] = {
    PSD_NAME(""),
    PSD_NAME("category"),
    PSD_NAME("order_state"),
    PSD_NAME("order_value"),
    PSD_NAME("email_domain"),
    PSD_NAME("keyword")
};

/* indexed by psd_triage_op_e */
static const psd_name_t  ops[] = {
    PSD_NAME(""),
    PSD_NAME("=="),
    PSD_NAME("!="),
    PSD_NAME(">"),
    PSD_NAME(">="),
    PSD_NAME("<"),
    PSD_NAME("<="),
    PSD_NAME("has")
};

/* the values of order_state */
static const psd_name_t  states[] = {
    PSD_NAME(""),
    PSD_NAME("created"),
    PSD_NAME("paid"),
    PSD_NAME("refunded"),
    PSD_NAME("chargeback"),
    PSD_NAME("none")
};

/* code points that end a word besides ASCII ones: punctuation, symbols */
static const uint32_t  separators[][2] = {
    { 0x0080, 0x00bf },         /* C1 controls, NBSP, Latin-1 punctuation */
    { 0x00d7, 0x00d7 },         /* multiplication sign */
    { 0x00f7, 0x00f7 },         /* division sign */
    { 0x2000, 0x2bff },         /* spaces, dashes, quotes ... symbols */
    { 0x3000, 0x303f },         /* CJK punctuation */
    { 0xfe00, 0xfe0f },         /* variation selectors */
    { 0xfeff, 0xfeff },         /* BOM */
    { 0xff01, 0xff0f },         /* fullwidth punctuation */
    { 0xff1a, 0xff20 },
    { 0xff3b, 0xff40 },
    { 0xff5b, 0xff65 },
    { 0x1f000, 0x1faff },       /* emoji, pictographs */
    { 0xe0000, 0xe007f }        /* tags */
};

/* a quoted token in a message is cut here so the message always fits */
#define QUOTE_MAX  32

static unsigned char
lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char) (c - 'A' + 'a') : c;
}


/* the bytes of an unquoted value */
static int
is_bare(char c)
{
    return psd_scan_is_word(c) || c == '.' || c == ':' || c == '-';
}


static int
is_control(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}


/* s[0 .. len) equals name (lowercase) ignoring ASCII case */
static int
same_ci(const char *s, size_t len, const char *name, size_t name_len)
{
    size_t  i;

    if (len != name_len) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (lower((unsigned char) s[i]) != lower((unsigned char) name[i])) {
            return 0;
        }
    }

    return 1;
}


static int
lookup_ci(const psd_name_t *names, size_t n, const char *s, size_t len)
{
    size_t  i;

    for (i = 1; i < n; i++) {
        if (same_ci(s, len, names[i].name, names[i].len)) {
            return (int) i;
        }
    }

    return 0;
}


/*
 * The length of the UTF-8 sequence at s (at most len bytes), with its code
 * point in *cp; 0 if it is not a valid one: overlong, a surrogate, above
 * U+10FFFF, truncated.
 */
static size_t
utf8_char(const unsigned char *s, size_t len, uint32_t *cp)
{
    size_t    n, i;
    uint32_t  c, min;

    c = s[0];

    if (c < 0x80) {
        *cp = c;
        return 1;
    }

    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        c &= 0x1f;
        min = 0x80;

    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        c &= 0x0f;
        min = 0x800;

    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        c &= 0x07;
        min = 0x10000;

    } else {
        return 0;
    }

    if (len < n) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }

        c = (c << 6) | (s[i] & 0x3f);
    }

    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
        return 0;
    }

    *cp = c;

    return n;
}


/* the length of the longest prefix of s made of valid UTF-8 characters */
static size_t
utf8_prefix(const unsigned char *s, size_t len)
{
    size_t    i, n;
    uint32_t  cp;

    i = 0;

    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }

        n = utf8_char(s + i, len - i, &cp);

        if (n == 0) {
            break;
        }

        i += n;
    }

    return i;
}


int
psd_triage_utf8_valid(const unsigned char *s, size_t len)
{
    if (s == NULL) {
        return len == 0;
    }

    return utf8_prefix(s, len) == len;
}


/* 1 if the character at s is a C1 control, U+0080..U+009F */
static int
is_c1(const unsigned char *s, size_t len)
{
    return len >= 2 && s[0] == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f;
}


static int
is_label_byte(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '-';
}


int
psd_triage_order_state_valid(const char *s, size_t len)
{
    return lookup_ci(states, PSD_NELTS(states), s, len) != 0;
}


int
psd_triage_email_valid(const char *s, size_t len)
{
    size_t       i, at, label, dots;
    const char  *d;

    if (s == NULL || len == 0 || len > PSD_TRIAGE_EMAIL_MAX) {
        return 0;
    }

    at = len;

    for (i = 0; i < len; i++) {
        if (s[i] == '@') {
            if (at != len) {
                return 0;
            }

            at = i;
            continue;
        }

        /* before the '@': the local part */
        if (at == len) {
            if (s[i] == ' ' || is_control((unsigned char) s[i])) {
                return 0;
            }
        }
    }

    if (at == len || at == 0 || at > 64) {
        return 0;
    }

    d = s + at + 1;
    len -= at + 1;
    label = 0;
    dots = 0;

    for (i = 0; i < len; i++) {
        if (d[i] == '.') {
            if (label == 0 || d[i - 1] == '-') {
                return 0;
            }

            label = 0;
            dots++;
            continue;
        }

        if (!is_label_byte(d[i])) {
            return 0;
        }

        if (label == 0 && d[i] == '-') {
            return 0;
        }

        if (++label > 63) {
            return 0;
        }
    }

    return dots > 0 && label > 0 && d[len - 1] != '-';
}


/* the length of the whitespace character at s, or 0 */
static size_t
space_len(const unsigned char *s, size_t len)
{
    if (len == 0) {
        return 0;
    }

    switch (s[0]) {
    case ' ': case '\t': case '\n': case '\r': case '\f': case '\v':
        return 1;
    case 0xc2:                                          /* NBSP */
        return (len >= 2 && s[1] == 0xa0) ? 2 : 0;
    case 0xe2:                          /* U+2000..U+200A, U+202F */
        return (len >= 3 && s[1] == 0x80
                && ((s[2] >= 0x80 && s[2] <= 0x8a) || s[2] == 0xaf)) ? 3 : 0;
    case 0xe3:                                          /* U+3000 */
        return (len >= 3 && s[1] == 0x80 && s[2] == 0x80) ? 3 : 0;
    }

    return 0;
}


static int
is_op_byte(char c)
{
    return c == '=' || c == '!' || c == '<' || c == '>';
}


static int
parse_field(psd_scan_t *ps, psd_triage_cond_t *cond)
{
    int          f;
    size_t       len;
    const char  *at;

    psd_scan_skip_space(ps);

    at = ps->p;
    len = psd_scan_word(ps);

    if (len == 0) {
        return psd_scan_fail(ps, at, "expected a field");
    }

    f = lookup_ci(fields, PSD_NELTS(fields), at, len);

    if (f == 0) {
        return psd_scan_fail(ps, at, "unknown field \"%.*s\"",
                             (int) (len < QUOTE_MAX ? len : QUOTE_MAX), at);
    }

    cond->field = (psd_triage_field_e) f;

    return 0;
}


static int
parse_op(psd_scan_t *ps, psd_triage_cond_t *cond)
{
    int          op;
    size_t       len;
    const char  *at;

    psd_scan_skip_space(ps);

    at = ps->p;
    len = 0;

    if (ps->p < ps->end && is_op_byte(*ps->p)) {
        while (ps->p < ps->end && len < 2 && is_op_byte(*ps->p)) {
            ps->p++;
            len++;
        }

        op = lookup_ci(ops, PSD_NELTS(ops), at, len);

        /* "<<" is "<" then a bad value, not a bad operator */
        if (op == 0 && len == 2) {
            ps->p--;
            op = lookup_ci(ops, PSD_NELTS(ops), at, 1);
        }

    } else {
        len = psd_scan_word(ps);
        op = same_ci(at, len, "has", 3) ? PSD_TRIAGE_HAS : 0;
    }

    if (op == 0) {
        return psd_scan_fail(ps, at, "expected an operator");
    }

    cond->op = (psd_triage_op_e) op;

    if (cond->op == PSD_TRIAGE_HAS) {
        if (cond->field != PSD_TRIAGE_KEYWORD) {
            return psd_scan_fail(ps, at, "\"has\" only applies to keyword");
        }

        return 0;
    }

    if (cond->field == PSD_TRIAGE_KEYWORD) {
        return psd_scan_fail(ps, at, "keyword only takes \"has\"");
    }

    if (cond->op != PSD_TRIAGE_EQ && cond->op != PSD_TRIAGE_NE
        && cond->field != PSD_TRIAGE_ORDER_VALUE)
    {
        return psd_scan_fail(ps, at, "\"%s\" only applies to order_value",
                             ops[cond->op].name);
    }

    return 0;
}


static int
parse_number(psd_scan_t *ps, psd_triage_cond_t *cond, const char *at,
    const char *s, size_t n, int quoted)
{
    size_t   i;
    int64_t  v;

    if (quoted) {
        return psd_scan_fail(ps, at, "expected a number");
    }

    v = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return psd_scan_fail(ps, at, "expected a number");
        }

        if (v > (PSD_TRIAGE_NUMBER_MAX - (s[i] - '0')) / 10) {
            return psd_scan_fail(ps, at, "number larger than %lld",
                                 (long long) PSD_TRIAGE_NUMBER_MAX);
        }

        v = v * 10 + (s[i] - '0');
    }

    cond->number = v;
    cond->value_len = (size_t) snprintf(cond->value, sizeof(cond->value),
                                        "%lld", (long long) v);

    return 0;
}


static int
parse_value(psd_scan_t *ps, psd_triage_cond_t *cond)
{
    int                   quoted;
    size_t                n, i, ok;
    const char           *at, *s;
    const unsigned char  *u;

    psd_scan_skip_space(ps);

    at = ps->p;

    if (ps->p == ps->end) {
        return psd_scan_fail(ps, at, "expected a value");
    }

    if (*ps->p == '"') {
        quoted = 1;
        s = ++ps->p;

        while (ps->p < ps->end && *ps->p != '"') {
            u = (const unsigned char *) ps->p;

            if (is_control(*u) || is_c1(u, (size_t) (ps->end - ps->p))) {
                return psd_scan_fail(ps, ps->p, "control character in a value");
            }

            ps->p++;
        }

        if (ps->p == ps->end) {
            return psd_scan_fail(ps, at, "unterminated string");
        }

        n = (size_t) (ps->p - s);
        ps->p++;

    } else {
        quoted = 0;
        s = ps->p;

        while (ps->p < ps->end && is_bare(*ps->p)) {
            ps->p++;
        }

        n = (size_t) (ps->p - s);

        if (n == 0) {
            return psd_scan_fail(ps, at, "expected a value");
        }
    }

    if (n == 0) {
        return psd_scan_fail(ps, at, "empty value");
    }

    if (n > PSD_TRIAGE_VALUE_MAX) {
        return psd_scan_fail(ps, at, "value longer than %d bytes",
                             PSD_TRIAGE_VALUE_MAX);
    }

    if (quoted) {
        u = (const unsigned char *) s;
        ok = utf8_prefix(u, n);

        if (ok != n) {
            return psd_scan_fail(ps, s + ok, "invalid UTF-8 in a value");
        }

        if (space_len(u, n)) {
            return psd_scan_fail(ps, s, "value starts with a space");
        }

        for (i = 1; i <= 3 && i <= n; i++) {
            if (space_len(u + n - i, i) == i) {
                return psd_scan_fail(ps, s + n - i, "value ends with a space");
            }
        }
    }

    if (cond->field == PSD_TRIAGE_ORDER_VALUE) {
        return parse_number(ps, cond, at, s, n, quoted);
    }

    for (i = 0; i < n; i++) {
        cond->value[i] = (char) lower((unsigned char) s[i]);
    }

    cond->value[n] = '\0';
    cond->value_len = n;

    if (cond->field == PSD_TRIAGE_ORDER_STATE
        && !psd_triage_order_state_valid(s, n))
    {
        return psd_scan_fail(ps, at, "unknown order state \"%.*s\"",
                             (int) (n < QUOTE_MAX ? n : QUOTE_MAX), s);
    }

    return 0;
}


int
psd_triage_parse(psd_triage_rule_t *rule, const char *text, size_t len,
    char *err, size_t err_len, size_t *column)
{
    size_t              n;
    const char         *at;
    psd_scan_t          ps;
    psd_triage_cond_t  *cond;

    if (text == NULL) {
        text = "";
        len = 0;
    }

    ps.start = text;
    ps.p = text;
    ps.end = text + len;
    ps.err = err;
    ps.err_len = err_len;
    ps.column = column;

    memset(rule, 0, sizeof(psd_triage_rule_t));

    if (err != NULL && err_len) {
        err[0] = '\0';
    }

    psd_scan_skip_space(&ps);

    if (ps.p == ps.end) {
        return psd_scan_fail(&ps, ps.p, "expected a condition or \"*\"");
    }

    if (*ps.p == '*') {
        ps.p++;
        psd_scan_skip_space(&ps);

        if (ps.p != ps.end) {
            return psd_scan_fail(&ps, ps.p, "\"*\" must be the whole rule");
        }

        return 0;
    }

    for ( ;; ) {
        psd_scan_skip_space(&ps);

        if (rule->nconds == PSD_TRIAGE_CONDS_MAX) {
            return psd_scan_fail(&ps, ps.p, "too many conditions");
        }

        cond = &rule->conds[rule->nconds];

        if (parse_field(&ps, cond) != 0
            || parse_op(&ps, cond) != 0
            || parse_value(&ps, cond) != 0)
        {
            return -1;
        }

        rule->nconds++;

        psd_scan_skip_space(&ps);

        if (ps.p == ps.end) {
            return 0;
        }

        at = ps.p;
        n = psd_scan_word(&ps);

        if (!same_ci(at, n, "and", 3)) {
            return psd_scan_fail(&ps, at, "expected \"and\"");
        }
    }
}


/* matching */


static const unsigned char *
bytes(const char *s, size_t *len)
{
    if (s == NULL) {
        *len = 0;
        return (const unsigned char *) "";
    }

    return (const unsigned char *) s;
}


static int
cp_is_word(uint32_t cp)
{
    size_t  i;

    if (cp < 0x80) {
        return psd_scan_is_word((char) cp);
    }

    for (i = 0; i < PSD_NELTS(separators); i++) {
        if (cp >= separators[i][0] && cp <= separators[i][1]) {
            return 0;
        }
    }

    return 1;
}


/* 1 if the character starting at s[i] is part of a word */
static int
word_at(const unsigned char *s, size_t len, size_t i)
{
    uint32_t  cp;

    if (i >= len) {
        return 0;
    }

    /* a byte that is not valid UTF-8 counts as a letter */
    if (utf8_char(s + i, len - i, &cp) == 0) {
        return 1;
    }

    return cp_is_word(cp);
}


/* 1 if the character ending just before s[i] is part of a word */
static int
word_before(const unsigned char *s, size_t len, size_t i)
{
    size_t    j;
    uint32_t  cp;

    if (i == 0) {
        return 0;
    }

    if (s[i - 1] < 0x80) {
        return psd_scan_is_word((char) s[i - 1]);
    }

    /* back over continuation bytes to the lead byte, at most 3 */
    for (j = i - 1; j > 0 && i - j < 4 && (s[j] & 0xc0) == 0x80; j--) {
        /* void */
    }

    if (utf8_char(s + j, len - j, &cp) != i - j) {
        return 1;
    }

    return cp_is_word(cp);
}


/*
 * 1 if the phrase v matches s at i, ignoring ASCII case, a whitespace run
 * in v matching a whitespace run in s; the end of the match in *end
 */
static int
phrase_at(const unsigned char *s, size_t len, size_t i,
    const unsigned char *v, size_t vlen, size_t *end)
{
    size_t  k, n;

    k = 0;

    while (k < vlen) {
        n = space_len(v + k, vlen - k);

        if (n) {
            if (space_len(s + i, len - i) == 0) {
                return 0;
            }

            while ((n = space_len(s + i, len - i)) != 0) {
                i += n;
            }

            while ((n = space_len(v + k, vlen - k)) != 0) {
                k += n;
            }

            continue;
        }

        if (i == len || lower(s[i]) != lower(v[k])) {
            return 0;
        }

        i++;
        k++;
    }

    *end = i;

    return 1;
}


/* 1 if the phrase v occurs in s, neither beginning nor ending in a word */
static int
has_phrase(const unsigned char *s, size_t len, const unsigned char *v,
    size_t vlen)
{
    int            lead_space;
    size_t         i, end;
    unsigned char  first;

    if (vlen == 0) {
        return 0;
    }

    first = lower(v[0]);
    lead_space = space_len(v, vlen) != 0;

    for (i = 0; i < len; i++) {
        if (!lead_space && lower(s[i]) != first) {
            continue;
        }

        if (word_before(s, len, i) && word_at(s, len, i)) {
            continue;
        }

        if (!phrase_at(s, len, i, v, vlen, &end)) {
            continue;
        }

        if (end > i && word_before(s, len, end) && word_at(s, len, end)) {
            continue;
        }

        return 1;
    }

    return 0;
}


/* ASCII case-insensitive equality of a ticket's string and a value */
static int
equal_value(const unsigned char *s, size_t len, const char *v, size_t vlen)
{
    return same_ci((const char *) s, len, v, vlen);
}


static int
match_cond(const psd_triage_cond_t *c, const psd_triage_ticket_t *t)
{
    int                   eq;
    size_t                len, vlen, i;
    const unsigned char  *s, *v;

    vlen = c->value_len < PSD_TRIAGE_VALUE_MAX
           ? c->value_len : PSD_TRIAGE_VALUE_MAX;
    v = (const unsigned char *) c->value;

    switch (c->field) {

    case PSD_TRIAGE_ORDER_VALUE:
        if (!t->has_order_value) {
            return 0;
        }

        switch (c->op) {
        case PSD_TRIAGE_EQ:
            return t->order_value == c->number;
        case PSD_TRIAGE_NE:
            return t->order_value != c->number;
        case PSD_TRIAGE_GT:
            return t->order_value > c->number;
        case PSD_TRIAGE_GE:
            return t->order_value >= c->number;
        case PSD_TRIAGE_LT:
            return t->order_value < c->number;
        case PSD_TRIAGE_LE:
            return t->order_value <= c->number;
        default:
            return 0;
        }

    case PSD_TRIAGE_KEYWORD:
        if (c->op != PSD_TRIAGE_HAS) {
            return 0;
        }

        len = t->subject_len;
        s = bytes(t->subject, &len);

        if (has_phrase(s, len, v, vlen)) {
            return 1;
        }

        len = t->message_len;
        s = bytes(t->message, &len);

        return has_phrase(s, len, v, vlen);

    case PSD_TRIAGE_CATEGORY:
        len = t->category_len;
        s = bytes(t->category, &len);
        break;

    case PSD_TRIAGE_ORDER_STATE:
        len = t->order_state_len;
        s = bytes(t->order_state, &len);

        if (len == 0) {
            s = (const unsigned char *) "none";
            len = 4;
        }

        break;

    case PSD_TRIAGE_EMAIL_DOMAIN:
        len = t->email_len;
        s = bytes(t->email, &len);

        /* after the last '@'; empty without one */
        for (i = len; i > 0 && s[i - 1] != '@'; i--) { /* void */ }

        s += i;
        len = i ? len - i : 0;
        break;

    default:
        return 0;
    }

    eq = equal_value(s, len, (const char *) v, vlen);

    switch (c->op) {
    case PSD_TRIAGE_EQ:
        return eq;
    case PSD_TRIAGE_NE:
        return !eq;
    default:
        return 0;
    }
}


int
psd_triage_match(const psd_triage_rule_t *rule, const psd_triage_ticket_t *t)
{
    size_t  i;

    if (rule->nconds > PSD_TRIAGE_CONDS_MAX) {
        return 0;
    }

    for (i = 0; i < rule->nconds; i++) {
        if (!match_cond(&rule->conds[i], t)) {
            return 0;
        }
    }

    return 1;
}


/* printing */


/* 1 if a condition is one that psd_triage_format() can print */
static int
printable(const psd_triage_cond_t *c)
{
    size_t  i;

    if (c->field < PSD_TRIAGE_CATEGORY || c->field > PSD_TRIAGE_KEYWORD
        || c->op < PSD_TRIAGE_EQ || c->op > PSD_TRIAGE_HAS
        || (c->op == PSD_TRIAGE_HAS) != (c->field == PSD_TRIAGE_KEYWORD)
        || (c->op > PSD_TRIAGE_NE && c->op != PSD_TRIAGE_HAS
            && c->field != PSD_TRIAGE_ORDER_VALUE))
    {
        return 0;
    }

    if (c->field == PSD_TRIAGE_ORDER_VALUE) {
        return c->number >= 0 && c->number <= PSD_TRIAGE_NUMBER_MAX;
    }

    if (c->value_len == 0 || c->value_len > PSD_TRIAGE_VALUE_MAX) {
        return 0;
    }

    for (i = 0; i < c->value_len; i++) {
        if (c->value[i] == '"' || is_control((unsigned char) c->value[i])) {
            return 0;
        }
    }

    return utf8_prefix((const unsigned char *) c->value, c->value_len)
           == c->value_len;
}


size_t
psd_triage_format(const psd_triage_rule_t *rule, char *buf, size_t size)
{
    size_t                    i, j;
    psd_print_t               w;
    const char               *q;
    const psd_triage_cond_t  *c;

    w.buf = buf;
    w.size = size;
    w.len = 0;

    if (size) {
        buf[0] = '\0';
    }

    if (rule->nconds > PSD_TRIAGE_CONDS_MAX) {
        return 0;
    }

    for (i = 0; i < rule->nconds; i++) {
        if (!printable(&rule->conds[i])) {
            return 0;
        }
    }

    if (rule->nconds == 0) {
        psd_print(&w, "*");
        return w.len;
    }

    for (i = 0; i < rule->nconds; i++) {
        c = &rule->conds[i];

        psd_print(&w, "%s%s %s ", i ? " and " : "", fields[c->field].name,
                  ops[c->op].name);

        if (c->field == PSD_TRIAGE_ORDER_VALUE) {
            psd_print(&w, "%lld", (long long) c->number);
            continue;
        }

        q = "";

        for (j = 0; j < c->value_len; j++) {
            if (!is_bare(c->value[j])) {
                q = "\"";
                break;
            }
        }

        psd_print(&w, "%s%.*s%s", q, (int) c->value_len, c->value, q);
    }

    return w.len;
}


const char *
psd_triage_field_name(psd_triage_field_e field)
{
    if (field < PSD_TRIAGE_CATEGORY || (size_t) field >= PSD_NELTS(fields)) {
        return NULL;
    }

    return fields[field].name;
}


const char *
psd_triage_op_name(psd_triage_op_e op)
{
    if (op < PSD_TRIAGE_EQ || (size_t) op >= PSD_NELTS(ops)) {
        return NULL;
    }

    return ops[op].name;
}
