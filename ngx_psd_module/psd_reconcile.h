/*
 * Copyright (C) ngx_psd_module authors
 */

/*
 * Reconciliation: the order side (what the module's export says each order
 * was paid, refunded, disputed) against the gateway side (rows of a
 * settlement or balance export), and the dates, times and amounts both
 * sides are written in.  Used by the nginx export (days, times) and by
 * util/psd-reconcile (everything).
 */

#ifndef PSD_RECONCILE_H_INCLUDED
#define PSD_RECONCILE_H_INCLUDED


#include <stddef.h>
#include <stdint.h>


/* 0001-01-01 .. 9999-12-31 is not needed: Unix days from 1970 to 9999 */
#define PSD_RECON_DAY_MAX     2932896
#define PSD_RECON_TIME_MAX    253402300799LL
#define PSD_RECON_ORDER_MAX   64

#define PSD_RECON_NONE        INT64_MIN       /* an absent amount or time */


/* "YYYY-MM-DD" (a real calendar day, 1970-9999) -> days since 1970-01-01 */
int psd_recon_day_parse(const char *s, size_t len, int64_t *day);
/* writes 10 characters and a '\0' */
void psd_recon_day_format(int64_t day, char *out);

/*
 * A UTC time: Unix seconds (digits only), "YYYY-MM-DD", or "YYYY-MM-DD"
 * then ' ' or 'T', "HH:MM" or "HH:MM:SS", and optionally "Z", "+00:00"
 * or " UTC".  0 or -1.
 */
int psd_recon_time_parse(const char *s, size_t len, int64_t *t);
/* "YYYY-MM-DDTHH:MM:SSZ": 20 characters and a '\0' */
void psd_recon_time_format(int64_t t, char *out);

/* the order ids the module accepts: 1-64 of [A-Za-z0-9_.:-] */
int psd_recon_order_id_valid(const char *s, size_t len);

/* ISO 4217 minor unit digits as gateways count them (JPY 0, KWD 3, ...) */
int psd_recon_currency_exponent(const char *cur, size_t len);

/* "-1234": an integer amount in minor units */
int psd_recon_minor_parse(const char *s, size_t len, int64_t *v);
/* "-12.34": major units of a currency with exponent digits -> minor */
int psd_recon_major_parse(const char *s, size_t len, int exponent,
    int64_t *v);


/* the order side: one row of the module's export */
typedef struct {
    const char                   *order_id;
    const char                   *payment_id;     /* "" when unknown */
    const char                   *currency;
    const char                   *state;
    int64_t                       amount;         /* or PSD_RECON_NONE */
    int64_t                       paid_at;        /* or PSD_RECON_NONE */
    int64_t                       refunded_at;
    int64_t                       chargeback_at;
    size_t                        line;           /* in its file */
} psd_recon_order_t;


typedef enum {
    PSD_RECON_OTHER = 0,          /* fees, payouts, transfers: not compared */
    PSD_RECON_PAYMENT,
    PSD_RECON_REFUND              /* refunds, disputes: money went back */
} psd_recon_type_e;


/* the gateway side: one row of its export */
typedef struct {
    const char                   *id;             /* "" when none */
    const char                   *order_id;       /* "" when none */
    const char                   *payment_id;     /* "" when none */
    const char                   *currency;
    int64_t                       amount;         /* minor units, signed */
    int64_t                       at;             /* or PSD_RECON_NONE */
    psd_recon_type_e              type;
    size_t                        line;
} psd_recon_txn_t;


typedef enum {
    PSD_RECON_PAID_NOT_SETTLED = 0,
    PSD_RECON_SETTLED_UNKNOWN,
    PSD_RECON_AMOUNT_DIFFERS,
    PSD_RECON_CURRENCY_DIFFERS,
    PSD_RECON_REFUNDED_HERE_ONLY,
    PSD_RECON_REFUNDED_THERE_ONLY,
    PSD_RECON_NKINDS
} psd_recon_kind_e;


typedef struct {
    psd_recon_kind_e              kind;
    const psd_recon_order_t      *order;          /* NULL: unknown here */
    const psd_recon_txn_t        *txn;            /* NULL: nothing there */
    int64_t                       there_amount;   /* sum of the payments */
} psd_recon_mismatch_t;


/*
 * The period both exports cover: from_day .. to_day (days, UTC), or -1 for
 * none.  Gateway rows outside the period widened by slack seconds are not
 * looked at; rows in the slack may match but are never "unknown here".
 * An order's payment (refund) is expected on the gateway side only when
 * its paid_at (refunded_at or chargeback_at) lies in the period.
 */
typedef struct {
    int64_t                       from_day;
    int64_t                       to_day;
    int64_t                       slack;
} psd_recon_period_t;


typedef struct {
    psd_recon_mismatch_t         *items;
    size_t                        n;
    size_t                        count[PSD_RECON_NKINDS];
    size_t                        orders;         /* distinct order ids */
    size_t                        duplicates;     /* rows of a repeated id */
    size_t                        txns;           /* payments and refunds */
    size_t                        matched;        /* rows matched to orders */
    size_t                        ignored;        /* other types */
    size_t                        outside;        /* outside the period */
} psd_recon_result_t;


/*
 * Matches gateway rows to orders by order id when the row has one, else
 * by payment id, and lists the mismatches sorted by order (or payment)
 * id, then kind.  A payment's amount is compared with the sum of the
 * gateway's payment rows for the order (a double charge shows); refunds
 * are compared by their presence only (the order record keeps no refunded
 * amount).  When an order id occurs twice, its last row counts.  The
 * inputs must outlive the result.  0, or -1 when out of memory.
 */
int psd_recon_match(const psd_recon_order_t *orders, size_t norders,
    const psd_recon_txn_t *txns, size_t ntxns,
    const psd_recon_period_t *period, psd_recon_result_t *res);
void psd_recon_result_free(psd_recon_result_t *res);

const char *psd_recon_kind_name(psd_recon_kind_e kind);


#endif /* PSD_RECONCILE_H_INCLUDED */
