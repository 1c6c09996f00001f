/*
 * Copyright (C) ngx_psd_module authors
 */

#include <stdlib.h>
#include <string.h>

#include "psd_reconcile.h"


/*
 * Days and civil dates, proleptic Gregorian (H. Hinnant's algorithms), so
 * that neither timegm() nor the TZ environment is involved.
 */

static int64_t
psd_recon_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    int64_t   era;
    unsigned  yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned) (y - era * 400);
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + (int64_t) doe - 719468;
}


static void
psd_recon_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t   era;
    unsigned  doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned) (z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;

    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t) yoe + era * 400 + (*m <= 2);
}


static int
psd_recon_digits(const char *s, size_t n, unsigned *v)
{
    size_t  i;

    *v = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        *v = *v * 10 + (unsigned) (s[i] - '0');
    }

    return 0;
}


int
psd_recon_day_parse(const char *s, size_t len, int64_t *day)
{
    unsigned  y, m, d, mdays;

    static const unsigned  days[] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    if (len != 10 || s[4] != '-' || s[7] != '-'
        || psd_recon_digits(s, 4, &y) != 0
        || psd_recon_digits(s + 5, 2, &m) != 0
        || psd_recon_digits(s + 8, 2, &d) != 0
        || y < 1970 || m < 1 || m > 12 || d < 1)
    {
        return -1;
    }

    mdays = days[m - 1];

    if (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)) {
        mdays = 29;
    }

    if (d > mdays) {
        return -1;
    }

    *day = psd_recon_days_from_civil(y, m, d);

    return 0;
}


void
psd_recon_day_format(int64_t day, char *out)
{
    int64_t   y;
    unsigned  m, d, i, v;

    if (day < 0 || day > PSD_RECON_DAY_MAX) {
        day = 0;
    }

    psd_recon_civil_from_days(day, &y, &m, &d);

    v = (unsigned) y;
    for (i = 4; i > 0; i--) {
        out[i - 1] = (char) ('0' + v % 10);
        v /= 10;
    }

    out[4] = '-';
    out[5] = (char) ('0' + m / 10);
    out[6] = (char) ('0' + m % 10);
    out[7] = '-';
    out[8] = (char) ('0' + d / 10);
    out[9] = (char) ('0' + d % 10);
    out[10] = '\0';
}


int
psd_recon_time_parse(const char *s, size_t len, int64_t *t)
{
    size_t    i;
    int64_t   day, v;
    unsigned  hh, mm, ss;

    if (len > 0 && s[0] >= '0' && s[0] <= '9' && len <= 12) {
        for (i = 0, v = 0; i < len; i++) {
            if (s[i] < '0' || s[i] > '9') {
                break;
            }

            v = v * 10 + (s[i] - '0');
        }

        if (i == len) {
            if (v > PSD_RECON_TIME_MAX) {
                return -1;
            }

            *t = v;
            return 0;
        }
    }

    if (len < 10 || psd_recon_day_parse(s, 10, &day) != 0) {
        return -1;
    }

    hh = mm = ss = 0;
    i = 10;

    if (i < len && (s[i] == ' ' || s[i] == 'T') && len - i >= 6
        && s[i + 3] == ':'
        && psd_recon_digits(s + i + 1, 2, &hh) == 0
        && psd_recon_digits(s + i + 4, 2, &mm) == 0)
    {
        i += 6;

        if (len - i >= 3 && s[i] == ':'
            && psd_recon_digits(s + i + 1, 2, &ss) == 0)
        {
            i += 3;
        }

        if (hh > 23 || mm > 59 || ss > 59) {
            return -1;
        }

        if (len - i == 1 && s[i] == 'Z') {
            i = len;

        } else if (len - i == 6 && memcmp(s + i, "+00:00", 6) == 0) {
            i = len;

        } else if (len - i == 4 && memcmp(s + i, " UTC", 4) == 0) {
            i = len;
        }
    }

    if (i != len) {
        return -1;
    }

    *t = day * 86400 + hh * 3600 + mm * 60 + ss;

    return 0;
}


void
psd_recon_time_format(int64_t t, char *out)
{
    int64_t  s;

    if (t < 0 || t > PSD_RECON_TIME_MAX) {
        t = 0;
    }

    psd_recon_day_format(t / 86400, out);

    s = t % 86400;

    out[10] = 'T';
    out[11] = (char) ('0' + s / 36000);
    out[12] = (char) ('0' + s / 3600 % 10);
    out[13] = ':';
    out[14] = (char) ('0' + s % 3600 / 600);
    out[15] = (char) ('0' + s % 3600 / 60 % 10);
    out[16] = ':';
    out[17] = (char) ('0' + s % 60 / 10);
    out[18] = (char) ('0' + s % 10);
    out[19] = 'Z';
    out[20] = '\0';
}


int
psd_recon_order_id_valid(const char *s, size_t len)
{
    size_t  i;
    char    c;

    if (len == 0 || len > PSD_RECON_ORDER_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = s[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'
              || c == ':'))
        {
            return 0;
        }
    }

    return 1;
}


static int
psd_recon_casecmp(const char *a, const char *b)
{
    char  x, y;

    for ( ;; ) {
        x = *a++;
        y = *b++;

        if (x >= 'A' && x <= 'Z') {
            x = (char) (x - 'A' + 'a');
        }

        if (y >= 'A' && y <= 'Z') {
            y = (char) (y - 'A' + 'a');
        }

        if (x != y) {
            return (unsigned char) x - (unsigned char) y;
        }

        if (x == '\0') {
            return 0;
        }
    }
}


int
psd_recon_currency_exponent(const char *cur, size_t len)
{
    size_t  i;
    char    c[4];

    /* as Stripe and most gateways count them */
    static const char  zero[] = "bif clp djf gnf jpy kmf krw mga pyg rwf "
                                "ugx vnd vuv xaf xof xpf ";
    static const char  three[] = "bhd jod kwd omr tnd ";

    if (len != 3) {
        return -1;
    }

    for (i = 0; i < 3; i++) {
        c[i] = cur[i];

        if (c[i] >= 'A' && c[i] <= 'Z') {
            c[i] = (char) (c[i] - 'A' + 'a');
        }

        if (c[i] < 'a' || c[i] > 'z') {
            return -1;
        }
    }

    c[3] = ' ';

    for (i = 0; zero[i]; i += 4) {
        if (memcmp(zero + i, c, 4) == 0) {
            return 0;
        }
    }

    for (i = 0; three[i]; i += 4) {
        if (memcmp(three + i, c, 4) == 0) {
            return 3;
        }
    }

    return 2;
}


int
psd_recon_minor_parse(const char *s, size_t len, int64_t *v)
{
    size_t   i;
    int64_t  n;

    i = (len > 0 && s[0] == '-') ? 1 : 0;

    if (len == i || len - i > 18) {
        return -1;
    }

    for (n = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        n = n * 10 + (s[i] - '0');
    }

    *v = (s[0] == '-') ? -n : n;

    return 0;
}


int
psd_recon_major_parse(const char *s, size_t len, int exponent, int64_t *v)
{
    int      dot, frac, digits;
    size_t   i;
    int64_t  n;

    i = (len > 0 && s[0] == '-') ? 1 : 0;

    n = 0;
    dot = 0;
    frac = 0;           /* digits after the dot that count */
    digits = 0;

    for ( /* void */ ; i < len; i++) {
        if (s[i] == '.' && !dot && digits > 0) {
            dot = 1;
            continue;
        }

        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }

        if (dot) {
            dot++;

            if (frac == exponent) {
                /* "12.340" is 12.34; "12.345" is not */
                if (s[i] != '0') {
                    return -1;
                }

                continue;
            }

            frac++;
        }

        digits++;

        if (n > (INT64_MAX - (s[i] - '0')) / 10) {
            return -1;
        }

        n = n * 10 + (s[i] - '0');
    }

    /* "12." is a mistake, "12" and "12.3" are amounts */
    if (digits == 0 || dot == 1) {
        return -1;
    }

    for ( /* void */ ; frac < exponent; frac++) {
        if (n > INT64_MAX / 10) {
            return -1;
        }

        n *= 10;
    }

    *v = (s[0] == '-') ? -n : n;

    return 0;
}


/* matching */

typedef struct {
    const psd_recon_order_t      *o;
    size_t                        index;
    int64_t                       pay_sum;
    size_t                        pays;
    size_t                        refunds;
    const psd_recon_txn_t        *first_pay;
    const psd_recon_txn_t        *first_refund;
    unsigned                      mixed_currency:1;
} psd_recon_live_t;


static int
psd_recon_cmp_order(const void *a, const void *b)
{
    const psd_recon_live_t  *x = a, *y = b;
    int                      rc;

    rc = strcmp(x->o->order_id, y->o->order_id);
    if (rc != 0) {
        return rc;
    }

    return x->index < y->index ? -1 : x->index > y->index;
}


static int
psd_recon_cmp_payment(const void *a, const void *b)
{
    const psd_recon_live_t  *const *x = a, *const *y = b;

    return strcmp((*x)->o->payment_id, (*y)->o->payment_id);
}


static psd_recon_live_t *
psd_recon_by_order(psd_recon_live_t *live, size_t n, const char *id)
{
    int     rc;
    size_t  lo, hi, mid;

    lo = 0;
    hi = n;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        rc = strcmp(live[mid].o->order_id, id);

        if (rc == 0) {
            return &live[mid];
        }

        if (rc < 0) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return NULL;
}


static psd_recon_live_t *
psd_recon_by_payment(psd_recon_live_t **pay, size_t n, const char *id)
{
    int     rc;
    size_t  lo, hi, mid;

    lo = 0;
    hi = n;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        rc = strcmp(pay[mid]->o->payment_id, id);

        if (rc == 0) {
            return pay[mid];
        }

        if (rc < 0) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return NULL;
}


static const char *
psd_recon_key(const psd_recon_mismatch_t *m)
{
    if (m->order) {
        return m->order->order_id;
    }

    return m->txn->order_id[0] ? m->txn->order_id : m->txn->payment_id;
}


static int
psd_recon_cmp_mismatch(const void *a, const void *b)
{
    const psd_recon_mismatch_t  *x = a, *y = b;
    int                          rc;
    size_t                       lx, ly;

    rc = strcmp(psd_recon_key(x), psd_recon_key(y));
    if (rc != 0) {
        return rc;
    }

    if (x->kind != y->kind) {
        return x->kind < y->kind ? -1 : 1;
    }

    lx = x->txn ? x->txn->line : 0;
    ly = y->txn ? y->txn->line : 0;

    return lx < ly ? -1 : lx > ly;
}


static int
psd_recon_add(psd_recon_result_t *res, size_t *cap, psd_recon_kind_e kind,
    const psd_recon_order_t *o, const psd_recon_txn_t *t, int64_t there)
{
    size_t                 ncap;
    psd_recon_mismatch_t  *items;

    if (res->n == *cap) {
        ncap = *cap ? *cap * 2 : 16;
        items = realloc(res->items, ncap * sizeof(psd_recon_mismatch_t));
        if (items == NULL) {
            return -1;
        }

        res->items = items;
        *cap = ncap;
    }

    res->items[res->n].kind = kind;
    res->items[res->n].order = o;
    res->items[res->n].txn = t;
    res->items[res->n].there_amount = there;
    res->n++;
    res->count[kind]++;

    return 0;
}


static int
psd_recon_in_period(const psd_recon_period_t *p, int64_t t)
{
    if (p == NULL || p->from_day < 0) {
        return 1;
    }

    return t != PSD_RECON_NONE && t >= p->from_day * 86400
           && t < (p->to_day + 1) * 86400;
}


static int
psd_recon_state(const psd_recon_order_t *o, const char *name)
{
    return o->state && strcmp(o->state, name) == 0;
}


int
psd_recon_match(const psd_recon_order_t *orders, size_t norders,
    const psd_recon_txn_t *txns, size_t ntxns,
    const psd_recon_period_t *period, psd_recon_result_t *res)
{
    int                       here_paid, here_back, edge;
    size_t                    i, n, npay, cap;
    int64_t                   amount;
    psd_recon_live_t         *live, **pay, *l;
    const psd_recon_txn_t    *t;
    const psd_recon_order_t  *o;

    memset(res, 0, sizeof(psd_recon_result_t));
    cap = 0;

    live = calloc(norders ? norders : 1, sizeof(psd_recon_live_t));
    pay = calloc(norders ? norders : 1, sizeof(psd_recon_live_t *));

    if (live == NULL || pay == NULL) {
        goto failed;
    }

    for (i = 0; i < norders; i++) {
        live[i].o = &orders[i];
        live[i].index = i;
    }

    qsort(live, norders, sizeof(psd_recon_live_t), psd_recon_cmp_order);

    /* an order id seen twice (pages fetched twice): the last row counts */

    for (i = 0, n = 0; i < norders; i++) {
        if (i + 1 < norders
            && strcmp(live[i].o->order_id, live[i + 1].o->order_id) == 0)
        {
            res->duplicates++;
            continue;
        }

        live[n++] = live[i];
    }

    res->orders = n;

    for (i = 0, npay = 0; i < n; i++) {
        if (live[i].o->payment_id && live[i].o->payment_id[0]) {
            pay[npay++] = &live[i];
        }
    }

    qsort(pay, npay, sizeof(psd_recon_live_t *), psd_recon_cmp_payment);

    for (i = 0; i < ntxns; i++) {
        t = &txns[i];

        if (t->type == PSD_RECON_OTHER) {
            res->ignored++;
            continue;
        }

        edge = 0;

        if (period && period->from_day >= 0 && t->at != PSD_RECON_NONE) {
            if (t->at < period->from_day * 86400 - period->slack
                || t->at >= (period->to_day + 1) * 86400 + period->slack)
            {
                res->outside++;
                continue;
            }

            edge = !psd_recon_in_period(period, t->at);
        }

        res->txns++;

        l = NULL;

        if (t->order_id[0]) {
            l = psd_recon_by_order(live, n, t->order_id);
        }

        if (l == NULL && t->payment_id[0]) {
            l = psd_recon_by_payment(pay, npay, t->payment_id);
        }

        if (l == NULL) {
            if (!edge
                && psd_recon_add(res, &cap, PSD_RECON_SETTLED_UNKNOWN, NULL,
                                 t, t->amount)
                   != 0)
            {
                goto failed;
            }

            continue;
        }

        res->matched++;

        if (t->type == PSD_RECON_PAYMENT) {
            amount = t->amount < 0 ? -t->amount : t->amount;

            if (l->first_pay == NULL) {
                l->first_pay = t;

            } else if (psd_recon_casecmp(l->first_pay->currency, t->currency)
                       != 0)
            {
                l->mixed_currency = 1;
            }

            l->pay_sum += amount;
            l->pays++;

        } else {
            if (l->first_refund == NULL) {
                l->first_refund = t;
            }

            l->refunds++;
        }
    }

    for (i = 0; i < n; i++) {
        l = &live[i];
        o = l->o;

        here_paid = psd_recon_state(o, "paid")
                    || psd_recon_state(o, "refunded")
                    || psd_recon_state(o, "chargeback")
                    || o->paid_at != PSD_RECON_NONE;

        here_back = psd_recon_state(o, "refunded")
                    || psd_recon_state(o, "chargeback")
                    || o->refunded_at != PSD_RECON_NONE
                    || o->chargeback_at != PSD_RECON_NONE;

        if (l->pays == 0) {
            if (here_paid && psd_recon_in_period(period, o->paid_at)
                && psd_recon_add(res, &cap, PSD_RECON_PAID_NOT_SETTLED, o,
                                 NULL, 0)
                   != 0)
            {
                goto failed;
            }

        } else if (!here_paid) {
            if (psd_recon_add(res, &cap, PSD_RECON_SETTLED_UNKNOWN, o,
                              l->first_pay, l->pay_sum)
                != 0)
            {
                goto failed;
            }

        } else if (l->mixed_currency
                   || (o->currency && o->currency[0]
                       && psd_recon_casecmp(o->currency,
                                            l->first_pay->currency) != 0))
        {
            if (psd_recon_add(res, &cap, PSD_RECON_CURRENCY_DIFFERS, o,
                              l->first_pay, l->pay_sum)
                != 0)
            {
                goto failed;
            }

        } else if (o->amount != PSD_RECON_NONE && o->amount != l->pay_sum) {
            if (psd_recon_add(res, &cap, PSD_RECON_AMOUNT_DIFFERS, o,
                              l->first_pay, l->pay_sum)
                != 0)
            {
                goto failed;
            }
        }

        if (here_back && l->refunds == 0
            && (psd_recon_in_period(period, o->refunded_at)
                || psd_recon_in_period(period, o->chargeback_at)))
        {
            if (psd_recon_add(res, &cap, PSD_RECON_REFUNDED_HERE_ONLY, o,
                              NULL, 0)
                != 0)
            {
                goto failed;
            }
        }

        if (!here_back && l->refunds > 0) {
            if (psd_recon_add(res, &cap, PSD_RECON_REFUNDED_THERE_ONLY, o,
                              l->first_refund, l->first_refund->amount)
                != 0)
            {
                goto failed;
            }
        }
    }

    if (res->n > 1) {
        qsort(res->items, res->n, sizeof(psd_recon_mismatch_t),
              psd_recon_cmp_mismatch);
    }

    free(live);
    free(pay);

    return 0;

failed:

    free(live);
    free(pay);
    psd_recon_result_free(res);

    return -1;
}


void
psd_recon_result_free(psd_recon_result_t *res)
{
    free(res->items);
    res->items = NULL;
    res->n = 0;
}


const char *
psd_recon_kind_name(psd_recon_kind_e kind)
{
    static const char  *names[] = {
        "paid_not_settled",
        "settled_unknown",
        "amount_differs",
        "currency_differs",
        "refunded_here_only",
        "refunded_there_only"
    };

    return (unsigned) kind < PSD_RECON_NKINDS ? names[kind] : "unknown";
}
