/*
 * Copyright (C) ngx_psd_module authors
 *
 * The fraud rule language of psd_fraud_rule, e.g.
 *
 *     distinct($psd_card_fingerprint) by $remote_addr over 1h > 3
 *
 * parsed into a self-contained struct, printed back, and compared with a
 * counter's current value.  The grammar is in docs/rules.md.  nginx-free.
 */

#ifndef PSD_RULE_H
#define PSD_RULE_H

#include <stddef.h>
#include <stdint.h>

#define PSD_RULE_VAR_MAX        64      /* variable name, without '$' */
#define PSD_RULE_KEYS_MAX       4       /* "by $a, $b, $c, $d" */
#define PSD_RULE_WINDOW_MAX     (30 * 86400)        /* seconds */
#define PSD_RULE_THRESHOLD_MAX  9007199254740991LL  /* 2^53 - 1, as Lua */

/*
 * distinct counters keep at most this many members (the most recent):
 * thresholds of distinct rules must stay below it to mean what they say
 */
#define PSD_RULE_DISTINCT_CAP   1000

/* room for any message psd_rule_parse() writes, with its NUL */
#define PSD_RULE_ERR_LEN        128

/* room for psd_rule_format() of any rule, with its NUL */
#define PSD_RULE_TEXT_LEN                                                     \
    (32 + (PSD_RULE_KEYS_MAX + 1) * (PSD_RULE_VAR_MAX + 3) + 32 + 24)


typedef enum {
    PSD_RULE_COUNT = 1,
    PSD_RULE_DISTINCT,
    PSD_RULE_SUM
} psd_rule_agg_e;


typedef enum {
    PSD_RULE_GT = 1,
    PSD_RULE_GE,
    PSD_RULE_LT,
    PSD_RULE_LE,
    PSD_RULE_EQ
} psd_rule_cmp_e;


/* what count() counts when its operand is not a variable */
typedef enum {
    PSD_RULE_EVENT_NONE = 0,            /* the operand is a variable */
    PSD_RULE_EVENT_REQUESTS,            /* also count() */
    PSD_RULE_EVENT_PAYMENT_FAILED,
    PSD_RULE_EVENT_PAYMENT_SUCCEEDED
} psd_rule_event_e;


/* the action directive argument after the rule */
typedef enum {
    PSD_RULE_ALLOW = 1,
    PSD_RULE_REVIEW,
    PSD_RULE_CHALLENGE,
    PSD_RULE_BLOCK
} psd_rule_action_e;


typedef struct {
    psd_rule_agg_e     agg;
    psd_rule_event_e   event;
    char               var[PSD_RULE_VAR_MAX + 1];   /* "" for an event */
    size_t             nkeys;
    char               keys[PSD_RULE_KEYS_MAX][PSD_RULE_VAR_MAX + 1];
    int64_t            window;                       /* seconds */
    psd_rule_cmp_e     cmp;
    int64_t            threshold;
} psd_rule_t;


/*
 * 0 on success; -1 with a message in err (at most err_len bytes with its
 * NUL, PSD_RULE_ERR_LEN always suffices) ending in "at column N", and N,
 * the 1-based byte offset of the failure in text, in *column (err and
 * column may be NULL).  Names are stored without '$'.  text need not be
 * NUL-terminated.
 */
int psd_rule_parse(psd_rule_t *rule, const char *text, size_t len,
    char *err, size_t err_len, size_t *column);

/*
 * the canonical text of a rule, which psd_rule_parse() reads back into an
 * equal struct; returns the length it needs (without NUL) like snprintf()
 */
size_t psd_rule_format(const psd_rule_t *rule, char *buf, size_t size);

/* 1 if the two rules mean the same */
int psd_rule_equal(const psd_rule_t *a, const psd_rule_t *b);

/* 1 if a counter at value makes the rule fire */
int psd_rule_matches(const psd_rule_t *rule, int64_t value);

/*
 * the kind argument of psd_rate_window_script: 'c' for count, 's' for
 * sum, 'd' for distinct
 */
char psd_rule_kind(const psd_rule_t *rule);

/* "requests", "payment_failed", ...; NULL for PSD_RULE_EVENT_NONE */
const char *psd_rule_event_name(psd_rule_event_e event);

/* "block", "review", "challenge", "allow"; 0 when none of them */
psd_rule_action_e psd_rule_action(const char *s, size_t len);
const char *psd_rule_action_name(psd_rule_action_e action);

#endif
