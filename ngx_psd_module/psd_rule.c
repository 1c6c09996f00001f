/*
 * Copyright (C) ngx_psd_module authors
 */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "psd_scan.h"
#include "psd_rate.h"
#include "psd_rule.h"


/* indexed by psd_rule_agg_e */
static const psd_name_t  aggs[] = {
    PSD_NAME(""),
    PSD_NAME("count"),
    PSD_NAME("distinct"),
    PSD_NAME("sum")
};

/* indexed by psd_rule_event_e */
static const psd_name_t  events[] = {
    PSD_NAME(""),
    PSD_NAME("requests"),
    PSD_NAME("payment_failed"),
    PSD_NAME("payment_succeeded")
};

/* indexed by psd_rule_cmp_e */
static const psd_name_t  cmps[] = {
    PSD_NAME(""),
    PSD_NAME(">"),
    PSD_NAME(">="),
    PSD_NAME("<"),
    PSD_NAME("<="),
    PSD_NAME("==")
};

/* indexed by psd_rule_action_e */
static const psd_name_t  actions[] = {
    PSD_NAME(""),
    PSD_NAME("allow"),
    PSD_NAME("review"),
    PSD_NAME("challenge"),
    PSD_NAME("block")
};

/* a quoted name in a message is cut here so the message always fits */
#define QUOTE_MAX  32

/* ASCII only, as nginx lowercases variable names */
static int
same_name(const char *a, const char *b)
{
    char  ca, cb;

    do {
        ca = *a++;
        cb = *b++;

        if (ca >= 'A' && ca <= 'Z') {
            ca = (char) (ca - 'A' + 'a');
        }

        if (cb >= 'A' && cb <= 'Z') {
            cb = (char) (cb - 'A' + 'a');
        }

        if (ca != cb) {
            return 0;
        }

    } while (ca);

    return 1;
}


static int
lookup(const psd_name_t *names, size_t n, const char *s, size_t len)
{
    size_t  i;

    for (i = 1; i < n; i++) {
        if (names[i].len == len && memcmp(names[i].name, s, len) == 0) {
            return (int) i;
        }
    }

    return 0;
}


static int
keyword(psd_scan_t *ps, const char *kw)
{
    size_t       len;
    const char  *at;

    psd_scan_skip_space(ps);

    at = ps->p;
    len = psd_scan_word(ps);

    if (len != strlen(kw) || memcmp(at, kw, len) != 0) {
        return psd_scan_fail(ps, at, "expected \"%s\"", kw);
    }

    return 0;
}


static int
punct(psd_scan_t *ps, char c)
{
    psd_scan_skip_space(ps);

    if (ps->p == ps->end || *ps->p != c) {
        return psd_scan_fail(ps, ps->p, "expected \"%c\"", c);
    }

    ps->p++;

    return 0;
}


/* "$name" into out, the cursor at the '$' */
static int
variable(psd_scan_t *ps, char *out)
{
    size_t       len;
    const char  *at;

    if (ps->p == ps->end || *ps->p != '$') {
        return psd_scan_fail(ps, ps->p, "expected a $variable");
    }

    ps->p++;
    at = ps->p;
    len = psd_scan_word(ps);

    if (len == 0) {
        return psd_scan_fail(ps, at, "expected a variable name after \"$\"");
    }

    if (len > PSD_RULE_VAR_MAX) {
        return psd_scan_fail(ps, at, "variable name longer than %d characters",
                             PSD_RULE_VAR_MAX);
    }

    memcpy(out, at, len);
    out[len] = '\0';

    return 0;
}


static int
operand(psd_scan_t *ps, psd_rule_t *rule)
{
    int          ev;
    size_t       len;
    const char  *at, *agg;

    psd_scan_skip_space(ps);

    at = ps->p;
    agg = aggs[rule->agg].name;

    if (at < ps->end && *at == '$') {
        return variable(ps, rule->var);
    }

    if (rule->agg != PSD_RULE_COUNT) {
        return psd_scan_fail(ps, at, "\"%s\" needs a $variable", agg);
    }

    if (at < ps->end && *at == ')') {
        rule->event = PSD_RULE_EVENT_REQUESTS;
        return 0;
    }

    len = psd_scan_word(ps);

    if (len == 0) {
        return psd_scan_fail(ps, at, "expected an event, a $variable or \")\"");
    }

    ev = lookup(events, PSD_NELTS(events), at, len);

    if (ev == 0) {
        return psd_scan_fail(ps, at, "unknown event \"%.*s\"",
                             (int) (len < QUOTE_MAX ? len : QUOTE_MAX), at);
    }

    rule->event = (psd_rule_event_e) ev;

    return 0;
}


static int
keys(psd_scan_t *ps, psd_rule_t *rule)
{
    size_t       i;
    const char  *at;

    for ( ;; ) {
        psd_scan_skip_space(ps);

        at = ps->p;

        if (rule->nkeys == PSD_RULE_KEYS_MAX) {
            return psd_scan_fail(ps, at, "more than %d keys",
                                 PSD_RULE_KEYS_MAX);
        }

        if (variable(ps, rule->keys[rule->nkeys]) != 0) {
            return -1;
        }

        /* nginx variable names ignore case */
        for (i = 0; i < rule->nkeys; i++) {
            if (same_name(rule->keys[i], rule->keys[rule->nkeys])) {
                return psd_scan_fail(ps, at, "duplicate key \"$%s\"",
                                     rule->keys[i]);
            }
        }

        rule->nkeys++;

        psd_scan_skip_space(ps);

        if (ps->p == ps->end || *ps->p != ',') {
            return 0;
        }

        ps->p++;
    }
}


static int
window(psd_scan_t *ps, psd_rule_t *rule)
{
    size_t       len;
    int64_t      ms;
    const char  *at;

    psd_scan_skip_space(ps);

    at = ps->p;
    len = psd_scan_word(ps);

    if (len == 0) {
        return psd_scan_fail(ps, at, "expected a duration like 1h");
    }

    if (psd_rate_parse_duration(at, len, &ms) != 0) {
        return psd_scan_fail(ps, at, "invalid duration \"%.*s\"",
                             (int) (len < QUOTE_MAX ? len : QUOTE_MAX), at);
    }

    if (ms % 1000 != 0) {
        return psd_scan_fail(ps, at, "window must be whole seconds");
    }

    if (ms < 1000 || ms > (int64_t) PSD_RULE_WINDOW_MAX * 1000) {
        return psd_scan_fail(ps, at, "window must be from 1s to 30d");
    }

    rule->window = ms / 1000;

    return 0;
}


static int
comparison(psd_scan_t *ps, psd_rule_t *rule)
{
    size_t       len;
    const char  *at;

    psd_scan_skip_space(ps);

    at = ps->p;
    len = 0;

    while (ps->p < ps->end && len < 2
           && (*ps->p == '<' || *ps->p == '>' || *ps->p == '='))
    {
        ps->p++;
        len++;
    }

    rule->cmp = (psd_rule_cmp_e) lookup(cmps, PSD_NELTS(cmps), at, len);

    /* ">>" is ">" then a bad number, not a bad comparison */
    if (rule->cmp == 0 && len == 2) {
        ps->p--;
        rule->cmp = (psd_rule_cmp_e) lookup(cmps, PSD_NELTS(cmps), at, 1);
    }

    if (rule->cmp == 0) {
        return psd_scan_fail(ps, at, "expected >, >=, <, <= or ==");
    }

    return 0;
}


static int
threshold(psd_scan_t *ps, psd_rule_t *rule)
{
    int64_t      n = 0;
    const char  *at;

    psd_scan_skip_space(ps);

    at = ps->p;

    if (ps->p == ps->end || *ps->p < '0' || *ps->p > '9') {
        return psd_scan_fail(ps, at, "expected a number");
    }

    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        if (n > (PSD_RULE_THRESHOLD_MAX - (*ps->p - '0')) / 10) {
            return psd_scan_fail(ps, at, "number larger than %lld",
                                 (long long) PSD_RULE_THRESHOLD_MAX);
        }
        n = n * 10 + (*ps->p++ - '0');
    }

    if (rule->agg == PSD_RULE_DISTINCT && n >= PSD_RULE_DISTINCT_CAP) {
        return psd_scan_fail(ps, at, "distinct threshold must be below %d",
                             PSD_RULE_DISTINCT_CAP);
    }

    rule->threshold = n;

    return 0;
}


int
psd_rule_parse(psd_rule_t *rule, const char *text, size_t len,
    char *err, size_t err_len, size_t *column)
{
    int          agg;
    size_t       n;
    const char  *at;
    psd_scan_t   ps;

    ps.start = text;
    ps.p = text;
    ps.end = text + len;
    ps.err = err;
    ps.err_len = err_len;
    ps.column = column;

    memset(rule, 0, sizeof(psd_rule_t));

    if (err != NULL && err_len) {
        err[0] = '\0';
    }

    psd_scan_skip_space(&ps);

    at = ps.p;
    n = psd_scan_word(&ps);
    agg = lookup(aggs, PSD_NELTS(aggs), at, n);

    if (agg == 0) {
        return psd_scan_fail(&ps, at,
                             "expected \"count\", \"distinct\" or \"sum\"");
    }

    rule->agg = (psd_rule_agg_e) agg;

    if (punct(&ps, '(') != 0
        || operand(&ps, rule) != 0
        || punct(&ps, ')') != 0
        || keyword(&ps, "by") != 0
        || keys(&ps, rule) != 0
        || keyword(&ps, "over") != 0
        || window(&ps, rule) != 0
        || comparison(&ps, rule) != 0
        || threshold(&ps, rule) != 0)
    {
        return -1;
    }

    psd_scan_skip_space(&ps);

    if (ps.p != ps.end) {
        return psd_scan_fail(&ps, ps.p, "unexpected text after the number");
    }

    return 0;
}


static int
name_len(const char *s)
{
    size_t  n;

    /* a struct from elsewhere may lack its NUL: never read past it */
    for (n = 0; n < PSD_RULE_VAR_MAX && s[n]; n++) { /* void */ }

    return (int) n;
}


size_t
psd_rule_format(const psd_rule_t *rule, char *buf, size_t size)
{
    size_t       i;
    char         window[PSD_RATE_DURATION_LEN];
    psd_print_t  w;

    w.buf = buf;
    w.size = size;
    w.len = 0;

    if (size) {
        buf[0] = '\0';
    }

    if (rule->agg < 1 || (size_t) rule->agg >= PSD_NELTS(aggs)
        || rule->cmp < 1 || (size_t) rule->cmp >= PSD_NELTS(cmps)
        || (size_t) rule->event >= PSD_NELTS(events)
        || rule->nkeys > PSD_RULE_KEYS_MAX
        || rule->window < 0 || rule->window > PSD_RULE_WINDOW_MAX
        || rule->threshold < 0)
    {
        return 0;
    }

    psd_print(&w, "%s(", aggs[rule->agg].name);

    if (rule->event != PSD_RULE_EVENT_NONE) {
        psd_print(&w, "%s", events[rule->event].name);

    } else {
        psd_print(&w, "$%.*s", name_len(rule->var), rule->var);
    }

    psd_print(&w, ") by");

    for (i = 0; i < rule->nkeys; i++) {
        psd_print(&w, "%s $%.*s", i ? "," : "", name_len(rule->keys[i]),
                  rule->keys[i]);
    }

    psd_rate_format_duration(rule->window * 1000, window);

    psd_print(&w, " over %s %s %lld", window, cmps[rule->cmp].name,
              (long long) rule->threshold);

    return w.len;
}


int
psd_rule_equal(const psd_rule_t *a, const psd_rule_t *b)
{
    size_t  i;

    if (a->agg != b->agg || a->event != b->event || a->nkeys != b->nkeys
        || a->window != b->window || a->cmp != b->cmp
        || a->threshold != b->threshold
        || strncmp(a->var, b->var, sizeof(a->var)) != 0)
    {
        return 0;
    }

    for (i = 0; i < a->nkeys && i < PSD_RULE_KEYS_MAX; i++) {
        if (strncmp(a->keys[i], b->keys[i], sizeof(a->keys[i])) != 0) {
            return 0;
        }
    }

    return 1;
}


int
psd_rule_matches(const psd_rule_t *rule, int64_t value)
{
    switch (rule->cmp) {
    case PSD_RULE_GT:
        return value > rule->threshold;
    case PSD_RULE_GE:
        return value >= rule->threshold;
    case PSD_RULE_LT:
        return value < rule->threshold;
    case PSD_RULE_LE:
        return value <= rule->threshold;
    case PSD_RULE_EQ:
        return value == rule->threshold;
    }

    return 0;
}


char
psd_rule_kind(const psd_rule_t *rule)
{
    switch (rule->agg) {
    case PSD_RULE_DISTINCT:
        return 'd';
    case PSD_RULE_SUM:
        return 's';
    default:
        return 'c';
    }
}


const char *
psd_rule_event_name(psd_rule_event_e event)
{
    if (event == PSD_RULE_EVENT_NONE || (size_t) event >= PSD_NELTS(events)) {
        return NULL;
    }

    return events[event].name;
}


psd_rule_action_e
psd_rule_action(const char *s, size_t len)
{
    return (psd_rule_action_e) lookup(actions, PSD_NELTS(actions), s, len);
}


const char *
psd_rule_action_name(psd_rule_action_e action)
{
    if (action < 1 || (size_t) action >= PSD_NELTS(actions)) {
        return NULL;
    }

    return actions[action].name;
}
