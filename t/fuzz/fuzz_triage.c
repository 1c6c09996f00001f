/*
 * libFuzzer target: the ticket triage rules and the e-mail and UTF-8
 * checks.  The input is up to seven fields separated by NUL bytes:
 *
 *     rule \0 category \0 order_state \0 order_value \0 email \0 subject
 *     \0 message
 *
 * (the message takes the rest; an order_value that is not "-"? and 1 to
 * 18 digits means no value).  Besides "no crash":
 *   - the whole input and the rule go through the parser: a refused text
 *     has a NUL-terminated message ending in "at column N", N within the
 *     text (or just after it); an accepted rule has sane fields and prints
 *     to text that parses back and prints the same again;
 *   - the rule matches the ticket exactly when each of its conditions
 *     does; each condition agrees with a reference written here, == and
 *     != never agree, and an order_value condition never holds without a
 *     value; a keyword always matches a subject that holds it between
 *     spaces;
 *   - the input, read as a rule struct, never crashes match or format;
 *   - the UTF-8 and e-mail checks agree with references written here.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psd_triage.h"


#define FIELDS   7
#define REF_MAX  1024               /* ASCII texts the reference reads */


static unsigned char
low(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char) (c | 0x20) : c;
}


/* UTF-8 by the number of leading one bits, not the lead byte ranges */
static int
ref_utf8(const unsigned char *s, size_t len)
{
    size_t    i, n, k;
    uint32_t  cp;

    for (i = 0; i < len; i += n) {
        if ((s[i] & 0x80) == 0) {
            n = 1;
            continue;
        }

        for (n = 0; n < 8 && (s[i] & (0x80 >> n)); n++) { /* void */ }

        if (n < 2 || n > 4 || len - i < n) {
            return 0;
        }

        cp = s[i] & (0xff >> (n + 1));

        for (k = 1; k < n; k++) {
            if ((s[i + k] >> 6) != 2) {
                return 0;
            }

            cp = (cp << 6) | (s[i + k] & 0x3f);
        }

        if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800)
            || (n == 4 && cp < 0x10000) || cp > 0x10ffff
            || (cp >> 11) == 0x1b)
        {
            return 0;
        }
    }

    return 1;
}


static int
ref_label_byte(unsigned char c)
{
    return (c >= '0' && c <= '9') || (low(c) >= 'a' && low(c) <= 'z')
           || c == '-';
}


static int
ref_email(const unsigned char *s, size_t len)
{
    size_t  i, at, ats, start, dots;

    if (len == 0 || len > 254) {
        return 0;
    }

    ats = 0;
    at = 0;

    for (i = 0; i < len; i++) {
        if (s[i] == '@') {
            ats++;
            at = i;
        }
    }

    if (ats != 1 || at == 0 || at > 64 || at == len - 1) {
        return 0;
    }

    for (i = 0; i < at; i++) {
        if (s[i] <= ' ' || s[i] == 0x7f) {
            return 0;
        }
    }

    dots = 0;
    start = at + 1;

    for (i = at + 1; i <= len; i++) {
        if (i < len && s[i] != '.') {
            if (!ref_label_byte(s[i])) {
                return 0;
            }
            continue;
        }

        /* a label is s[start .. i) */
        if (i == start || i - start > 63 || s[start] == '-'
            || s[i - 1] == '-')
        {
            return 0;
        }

        if (i < len) {
            dots++;
        }

        start = i + 1;
    }

    return dots > 0;
}


static int
ref_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}


static int
ref_word(const unsigned char *s, size_t len, size_t i)
{
    return i < len && ((low(s[i]) >= 'a' && low(s[i]) <= 'z')
                       || (s[i] >= '0' && s[i] <= '9') || s[i] == '_');
}


/*
 * the text lowercased with every whitespace run made one space, and where
 * each byte of that came from (the start and the end of a run)
 */
static size_t
ref_squeeze(const unsigned char *s, size_t len, unsigned char *out,
    size_t *from, size_t *to)
{
    size_t  i, n;

    n = 0;

    for (i = 0; i < len; n++) {
        from[n] = i;

        if (ref_space(s[i])) {
            while (i < len && ref_space(s[i])) {
                i++;
            }
            out[n] = ' ';

        } else {
            out[n] = low(s[i++]);
        }

        to[n] = i;
    }

    return n;
}


/* keyword matching in an ASCII text, by search in the squeezed text */
static int
ref_has(const unsigned char *s, size_t len, const char *value, size_t vlen)
{
    size_t         i, n, vn, b, e;
    size_t         from[REF_MAX], to[REF_MAX], vfrom[REF_MAX], vto[REF_MAX];
    unsigned char  t[REF_MAX], v[REF_MAX];

    n = ref_squeeze(s, len, t, from, to);
    vn = ref_squeeze((const unsigned char *) value, vlen, v, vfrom, vto);

    for (i = 0; vn && i + vn <= n; i++) {
        if (memcmp(t + i, v, vn) != 0) {
            continue;
        }

        b = from[i];
        e = to[i + vn - 1];

        if (b > 0 && ref_word(s, len, b - 1) && ref_word(s, len, b)) {
            continue;
        }

        if (ref_word(s, len, e - 1) && ref_word(s, len, e)) {
            continue;
        }

        return 1;
    }

    return 0;
}


static int
ascii(const unsigned char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (s[i] >= 0x80) {
            return 0;
        }
    }

    return 1;
}


static int
ref_equal(const char *s, size_t len, const char *v, size_t vlen)
{
    size_t  i;

    if (len != vlen) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (low((unsigned char) s[i]) != (unsigned char) v[i]) {
            return 0;
        }
    }

    return 1;
}


/* what one condition of a parsed rule should say of the ticket */
static int
ref_cond(const psd_triage_cond_t *c, const psd_triage_ticket_t *t)
{
    int          eq;
    size_t       len, i;
    const char  *s;

    switch (c->field) {

    case PSD_TRIAGE_ORDER_VALUE:
        if (!t->has_order_value) {
            return 0;
        }

        switch (c->op) {
        case PSD_TRIAGE_EQ: return t->order_value == c->number;
        case PSD_TRIAGE_NE: return t->order_value != c->number;
        case PSD_TRIAGE_GT: return t->order_value > c->number;
        case PSD_TRIAGE_GE: return t->order_value >= c->number;
        case PSD_TRIAGE_LT: return t->order_value < c->number;
        case PSD_TRIAGE_LE: return t->order_value <= c->number;
        default: abort();
        }

    case PSD_TRIAGE_KEYWORD:
        /* only ASCII has a reference here; -1: take the module's word */
        if (!ascii((const unsigned char *) c->value, c->value_len)
            || !ascii((const unsigned char *) t->subject, t->subject_len)
            || !ascii((const unsigned char *) t->message, t->message_len)
            || t->subject_len > REF_MAX || t->message_len > REF_MAX)
        {
            return -1;
        }

        return ref_has((const unsigned char *) t->subject, t->subject_len,
                       c->value, c->value_len)
               || ref_has((const unsigned char *) t->message, t->message_len,
                          c->value, c->value_len);

    case PSD_TRIAGE_CATEGORY:
        s = t->category;
        len = t->category_len;
        break;

    case PSD_TRIAGE_ORDER_STATE:
        s = t->order_state;
        len = t->order_state_len;

        if (len == 0) {
            s = "none";
            len = 4;
        }

        break;

    case PSD_TRIAGE_EMAIL_DOMAIN:
        s = "";
        len = 0;

        for (i = 0; i < t->email_len; i++) {
            if (t->email[i] == '@') {
                s = t->email + i + 1;
                len = t->email_len - i - 1;
            }
        }

        break;

    default:
        abort();
    }

    eq = ref_equal(s, len, c->value, c->value_len);

    return c->op == PSD_TRIAGE_EQ ? eq : !eq;
}


static void
check_cond(const psd_triage_cond_t *c)
{
    size_t  i;
    char    num[32];

    if (c->field < PSD_TRIAGE_CATEGORY || c->field > PSD_TRIAGE_KEYWORD
        || c->op < PSD_TRIAGE_EQ || c->op > PSD_TRIAGE_HAS
        || (c->op == PSD_TRIAGE_HAS) != (c->field == PSD_TRIAGE_KEYWORD)
        || (c->op != PSD_TRIAGE_EQ && c->op != PSD_TRIAGE_NE
            && c->op != PSD_TRIAGE_HAS
            && c->field != PSD_TRIAGE_ORDER_VALUE)
        || c->value_len < 1 || c->value_len > PSD_TRIAGE_VALUE_MAX
        || c->value[c->value_len] != '\0'
        || strlen(c->value) != c->value_len
        || !ref_utf8((const unsigned char *) c->value, c->value_len)
        || c->value[0] == ' ' || c->value[c->value_len - 1] == ' ')
    {
        abort();
    }

    for (i = 0; i < c->value_len; i++) {
        if ((c->value[i] >= 'A' && c->value[i] <= 'Z') || c->value[i] == '"'
            || (unsigned char) c->value[i] < 0x20 || c->value[i] == 0x7f)
        {
            abort();
        }
    }

    if (c->field == PSD_TRIAGE_ORDER_VALUE) {
        snprintf(num, sizeof(num), "%lld", (long long) c->number);

        if (c->number < 0 || c->number > PSD_TRIAGE_NUMBER_MAX
            || strcmp(num, c->value) != 0)
        {
            abort();
        }
    }

    if (c->field == PSD_TRIAGE_ORDER_STATE
        && strcmp(c->value, "created") != 0 && strcmp(c->value, "paid") != 0
        && strcmp(c->value, "refunded") != 0
        && strcmp(c->value, "chargeback") != 0
        && strcmp(c->value, "none") != 0)
    {
        abort();
    }
}


/* the rule with its condition i alone, its operator op */
static int
match_one(const psd_triage_rule_t *r, size_t i, psd_triage_op_e op,
    const psd_triage_ticket_t *t)
{
    psd_triage_rule_t  one;

    one.nconds = 1;
    one.conds[0] = r->conds[i];
    one.conds[0].op = op;

    return psd_triage_match(&one, t);
}


static void
check_match(const psd_triage_rule_t *r, const psd_triage_ticket_t *t)
{
    int                       all, each, got, ref, n;
    size_t                    i;
    char                      subject[PSD_TRIAGE_VALUE_MAX + 4];
    psd_triage_ticket_t       t2;
    const psd_triage_cond_t  *c;

    all = psd_triage_match(r, t);
    each = 1;

    for (i = 0; i < r->nconds; i++) {
        c = &r->conds[i];
        got = match_one(r, i, c->op, t);
        ref = ref_cond(c, t);

        if (got != 0 && got != 1) {
            abort();
        }

        if (ref != -1 && got != ref) {
            abort();
        }

        each &= got;

        if (c->op == PSD_TRIAGE_EQ || c->op == PSD_TRIAGE_NE) {
            n = match_one(r, i, PSD_TRIAGE_EQ, t)
                + match_one(r, i, PSD_TRIAGE_NE, t);

            if (n != (c->field == PSD_TRIAGE_ORDER_VALUE
                      && !t->has_order_value ? 0 : 1))
            {
                abort();
            }
        }

        if (c->field == PSD_TRIAGE_ORDER_VALUE && t->has_order_value
            && (match_one(r, i, PSD_TRIAGE_GT, t)
                == match_one(r, i, PSD_TRIAGE_LE, t)
                || match_one(r, i, PSD_TRIAGE_GE, t)
                   == match_one(r, i, PSD_TRIAGE_LT, t)))
        {
            abort();
        }

        if (c->field == PSD_TRIAGE_KEYWORD) {
            n = snprintf(subject, sizeof(subject), "x %s y", c->value);
            t2 = *t;
            t2.subject = subject;
            t2.subject_len = (size_t) n;

            if (!match_one(r, i, PSD_TRIAGE_HAS, &t2)) {
                abort();
            }
        }
    }

    if (all != each) {
        abort();
    }
}


static void
check_parse(const char *text, size_t len, const psd_triage_ticket_t *t)
{
    int                rc;
    char               err[PSD_TRIAGE_ERR_LEN], tail[32];
    char               buf[PSD_TRIAGE_TEXT_LEN], again[PSD_TRIAGE_TEXT_LEN];
    size_t             col, n, m, tl, i;
    psd_triage_rule_t  r, r2;

    col = 0;
    rc = psd_triage_parse(&r, text, len, err, sizeof(err), &col);

    if (rc != 0) {
        tl = (size_t) snprintf(tail, sizeof(tail), " at column %zu", col);
        n = strnlen(err, sizeof(err));

        if (rc != -1 || col < 1 || col > len + 1 || n == sizeof(err)
            || n <= tl || strcmp(err + n - tl, tail) != 0)
        {
            abort();
        }

        return;
    }

    if (r.nconds > PSD_TRIAGE_CONDS_MAX
        || (r.nconds == 0 && memchr(text, '*', len) == NULL))
    {
        abort();
    }

    for (i = 0; i < r.nconds; i++) {
        check_cond(&r.conds[i]);
    }

    n = psd_triage_format(&r, buf, sizeof(buf));
    if (n == 0 || n >= sizeof(buf) || n != strlen(buf)) {
        abort();
    }

    if (psd_triage_parse(&r2, buf, n, err, sizeof(err), &col) != 0
        || r2.nconds != r.nconds)
    {
        abort();
    }

    for (i = 0; i < r.nconds; i++) {
        if (r.conds[i].field != r2.conds[i].field
            || r.conds[i].op != r2.conds[i].op
            || r.conds[i].number != r2.conds[i].number
            || r.conds[i].value_len != r2.conds[i].value_len
            || strcmp(r.conds[i].value, r2.conds[i].value) != 0)
        {
            abort();
        }
    }

    m = psd_triage_format(&r2, again, sizeof(again));
    if (m != n || memcmp(buf, again, n) != 0) {
        abort();
    }

    check_match(&r, t);
}


/* any bytes as a rule struct: match and format must cope */
static void
check_struct(const uint8_t *p, size_t size, const psd_triage_ticket_t *t)
{
    char               buf[PSD_TRIAGE_TEXT_LEN];
    size_t             i, n;
    psd_triage_rule_t  r;

    if (size < 2) {
        return;
    }

    memset(&r, 0, sizeof(r));
    r.nconds = p[0] % (PSD_TRIAGE_CONDS_MAX + 2);
    p++;
    size--;

    for (i = 0; i < PSD_TRIAGE_CONDS_MAX && size >= 3; i++) {
        r.conds[i].field = (psd_triage_field_e) (p[0] % 7);
        r.conds[i].op = (psd_triage_op_e) (p[1] % 9);
        r.conds[i].value_len = p[2];
        r.conds[i].number = (int64_t) p[2] * 77777777777LL - 3;
        p += 3;
        size -= 3;

        n = size < PSD_TRIAGE_VALUE_MAX + 1 ? size : PSD_TRIAGE_VALUE_MAX + 1;
        n = n < 16 ? n : 16;
        memcpy(r.conds[i].value, p, n);
        p += n;
        size -= n;
    }

    psd_triage_match(&r, t);

    n = psd_triage_format(&r, buf, sizeof(buf));
    if (n >= sizeof(buf) || (n && strlen(buf) != n)) {
        abort();
    }
}


static void
ticket(const uint8_t *data, size_t size, const char **f, size_t *len,
    psd_triage_ticket_t *t)
{
    size_t          i, k, n;
    int64_t         v;
    const uint8_t  *p, *end, *nul;

    p = data;
    end = data + size;

    for (i = 0; i < FIELDS; i++) {
        nul = (i < FIELDS - 1 && p < end) ? memchr(p, '\0', end - p) : NULL;
        f[i] = (const char *) p;
        len[i] = (size_t) ((nul ? nul : end) - p);
        p = nul ? nul + 1 : end;
    }

    memset(t, 0, sizeof(psd_triage_ticket_t));

    t->category = f[1];
    t->category_len = len[1];
    t->order_state = f[2];
    t->order_state_len = len[2];
    t->email = f[4];
    t->email_len = len[4];
    t->subject = f[5];
    t->subject_len = len[5];
    t->message = f[6];
    t->message_len = len[6];

    k = (len[3] && f[3][0] == '-') ? 1 : 0;
    n = len[3] - k;

    if (n < 1 || n > 18) {
        return;
    }

    v = 0;

    for (i = k; i < len[3]; i++) {
        if (f[3][i] < '0' || f[3][i] > '9') {
            return;
        }

        v = v * 10 + (f[3][i] - '0');
    }

    t->order_value = k ? -v : v;
    t->has_order_value = 1;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t               len[FIELDS];
    const char          *f[FIELDS];
    psd_triage_ticket_t  t;

    ticket(data, size, f, len, &t);

    check_parse(f[0], len[0], &t);
    check_parse((const char *) data, size, &t);
    check_struct(data, size, &t);

    if (psd_triage_utf8_valid(data, size) != ref_utf8(data, size)) {
        abort();
    }

    if (psd_triage_email_valid((const char *) data, size)
        != ref_email(data, size)
        || psd_triage_email_valid(f[4], len[4])
           != ref_email((const unsigned char *) f[4], len[4]))
    {
        abort();
    }

    return 0;
}
