/*
 * Copyright (C) ngx_psd_module authors
 *
 * Support ticket triage rules, e.g.
 *
 *     category == billing and order_state == paid and order_value >= 10000
 *     keyword has "money back" and email_domain == example.com
 *
 * parsed into a self-contained struct, printed back, and matched against
 * a ticket; plus the e-mail and UTF-8 checks of ticket fields.  The
 * grammar is in docs/triage.md.  nginx-free; no allocation, no globals.
 */

#ifndef PSD_TRIAGE_H
#define PSD_TRIAGE_H

#include <stddef.h>
#include <stdint.h>

#define PSD_TRIAGE_CONDS_MAX    8
#define PSD_TRIAGE_VALUE_MAX    128     /* bytes of a value */

/* room for any message psd_triage_parse() writes, with its NUL */
#define PSD_TRIAGE_ERR_LEN      128

#define PSD_TRIAGE_NUMBER_MAX   9007199254740991LL  /* 2^53 - 1 */
#define PSD_TRIAGE_EMAIL_MAX    254

/* room for psd_triage_format() of any rule, with its NUL */
#define PSD_TRIAGE_TEXT_LEN                                                   \
    (PSD_TRIAGE_CONDS_MAX * (PSD_TRIAGE_VALUE_MAX + 24) + 2)


typedef enum {                          /* what a condition looks at */
    PSD_TRIAGE_CATEGORY = 1,            /* the ticket's category */
    PSD_TRIAGE_ORDER_STATE,             /* created, paid, refunded,
                                           chargeback, none */
    PSD_TRIAGE_ORDER_VALUE,             /* amount in minor units, integer */
    PSD_TRIAGE_EMAIL_DOMAIN,            /* the part after '@', lowercased */
    PSD_TRIAGE_KEYWORD                  /* a word in subject or message */
} psd_triage_field_e;


typedef enum {
    PSD_TRIAGE_EQ = 1,
    PSD_TRIAGE_NE,
    PSD_TRIAGE_GT,
    PSD_TRIAGE_GE,
    PSD_TRIAGE_LT,
    PSD_TRIAGE_LE,
    PSD_TRIAGE_HAS
} psd_triage_op_e;


typedef struct {
    psd_triage_field_e  field;
    psd_triage_op_e     op;
    char                value[PSD_TRIAGE_VALUE_MAX + 1];  /* lowercased for
                                                             strings, NUL */
    size_t              value_len;
    int64_t             number;                           /* order_value */
} psd_triage_cond_t;


typedef struct {
    size_t              nconds;         /* all must hold ("and") */
    psd_triage_cond_t   conds[PSD_TRIAGE_CONDS_MAX];
} psd_triage_rule_t;


typedef struct {                        /* what a ticket looks like */
    const char         *category;
    size_t              category_len;
    const char         *order_state;    /* "none" if no order; empty too */
    size_t              order_state_len;
    int64_t             order_value;
    int                 has_order_value;
    const char         *email;
    size_t              email_len;
    const char         *subject;
    size_t              subject_len;
    const char         *message;
    size_t              message_len;
} psd_triage_ticket_t;


/*
 * 0 on success; -1 with a message in err (at most err_len bytes with its
 * NUL, PSD_TRIAGE_ERR_LEN always suffices) ending in "at column N", and N,
 * the 1-based byte offset of the failure in text, in *column (err and
 * column may be NULL).  text need not be NUL-terminated.
 */
int psd_triage_parse(psd_triage_rule_t *rule, const char *text, size_t len,
    char *err, size_t err_len, size_t *column);

/* 1 if every condition holds (always for nconds 0), else 0 */
int psd_triage_match(const psd_triage_rule_t *rule,
    const psd_triage_ticket_t *t);

/*
 * 1 if s is a plausible e-mail address: one '@'; a local part of 1 to 64
 * bytes without spaces or control characters; a domain with a dot, of
 * labels of 1 to 63 [A-Za-z0-9-] not beginning or ending with '-'; at
 * most 254 bytes in all
 */
/* 1 if s is an order state that rules may name ("paid", ...), any case */
int psd_triage_order_state_valid(const char *s, size_t len);

int psd_triage_email_valid(const char *s, size_t len);

/* 1 if the bytes are valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF) */
int psd_triage_utf8_valid(const unsigned char *s, size_t len);

/*
 * the canonical text of a rule, which psd_triage_parse() reads back into
 * the same struct; returns the length it needs (without NUL) like
 * snprintf(), 0 for a struct that no parse could have produced
 */
size_t psd_triage_format(const psd_triage_rule_t *rule, char *buf,
    size_t size);

/* "category", ...; "==", ..., "has"; NULL when out of range */
const char *psd_triage_field_name(psd_triage_field_e field);
const char *psd_triage_op_name(psd_triage_op_e op);

#endif
