/*
 * Unit tests: psd_reconcile, days, times, amounts and the matching of the
 * order side against a gateway's rows.
 */

#include <stdlib.h>

#include "tap.h"
#include "psd_reconcile.h"


#define NONE  PSD_RECON_NONE


static int64_t
day(const char *s)
{
    int64_t  d;

    return psd_recon_day_parse(s, strlen(s), &d) == 0 ? d : -1;
}


static int64_t
tm(const char *s)
{
    int64_t  t;

    return psd_recon_time_parse(s, strlen(s), &t) == 0 ? t : -1;
}


static int64_t
major(const char *s, int exponent)
{
    int64_t  v;

    return psd_recon_major_parse(s, strlen(s), exponent, &v) == 0
           ? v : 999999999;
}


static int64_t
minor(const char *s)
{
    int64_t  v;

    return psd_recon_minor_parse(s, strlen(s), &v) == 0 ? v : 999999999;
}


static psd_recon_order_t
order(const char *id, const char *pay, int64_t amount, const char *state,
    int64_t paid, int64_t refunded, int64_t chargeback)
{
    psd_recon_order_t  o;

    o.order_id = id;
    o.payment_id = pay;
    o.currency = "eur";
    o.state = state;
    o.amount = amount;
    o.paid_at = paid;
    o.refunded_at = refunded;
    o.chargeback_at = chargeback;
    o.line = 0;

    return o;
}


static psd_recon_txn_t
txn(const char *order_id, const char *pay, int64_t amount, const char *cur,
    psd_recon_type_e type, int64_t at, size_t line)
{
    psd_recon_txn_t  t;

    t.id = "";
    t.order_id = order_id;
    t.payment_id = pay;
    t.currency = cur;
    t.amount = amount;
    t.type = type;
    t.at = at;
    t.line = line;

    return t;
}


/* the mismatches as "kind:key" joined by spaces */
static const char *
summary(psd_recon_result_t *res)
{
    size_t                 i, o;
    static char            out[1024];
    psd_recon_mismatch_t  *m;

    out[0] = '\0';

    for (i = 0, o = 0; i < res->n; i++) {
        m = &res->items[i];
        o += snprintf(out + o, sizeof(out) - o, "%s%s:%s", i ? " " : "",
                      psd_recon_kind_name(m->kind),
                      m->order ? m->order->order_id
                      : m->txn->order_id[0] ? m->txn->order_id
                                            : m->txn->payment_id);
    }

    return out;
}


int
main(void)
{
    char                 out[32], id[65];
    int64_t              t0, d0;
    psd_recon_order_t    o[16];
    psd_recon_txn_t      x[16];
    psd_recon_result_t   res;
    psd_recon_period_t   p;

    /* days */
    is_int(day("1970-01-01"), 0, "the epoch");
    is_int(day("2026-01-05"), 20458, "2026-01-05");
    is_int(day("2024-02-29"), 19782, "a leap day");
    is_int(day("2023-02-29"), -1, "not a leap year");
    is_int(day("2100-02-29"), -1, "2100 is not a leap year");
    is_int(day("2000-02-29"), 11016, "2000 is");
    is_int(day("9999-12-31"), PSD_RECON_DAY_MAX, "the last day");
    is_int(day("1969-12-31"), -1, "before 1970");
    is_int(day("2026-13-01"), -1, "month 13");
    is_int(day("2026-04-31"), -1, "April 31");
    is_int(day("2026-1-05"), -1, "one-digit month");
    is_int(day("2026-01-05 "), -1, "trailing space");
    is_int(day("2026/01/05"), -1, "slashes");
    is_int(day("+026-01-05"), -1, "a sign");
    psd_recon_day_format(20458, out);
    is_str(out, "2026-01-05", "format 2026-01-05");
    psd_recon_day_format(PSD_RECON_DAY_MAX, out);
    is_str(out, "9999-12-31", "format the last day");
    psd_recon_day_format(19782, out);
    is_str(out, "2024-02-29", "format a leap day");

    /* times */
    t0 = 20458LL * 86400;
    is_int(tm("2026-01-05"), t0, "a day is its midnight");
    is_int(tm("2026-01-05 10:20:30"), t0 + 37230, "Stripe's form");
    is_int(tm("2026-01-05T10:20:30Z"), t0 + 37230, "ISO 8601 Z");
    is_int(tm("2026-01-05T10:20:30+00:00"), t0 + 37230, "ISO +00:00");
    is_int(tm("2026-01-05 10:20:30 UTC"), t0 + 37230, "with UTC");
    is_int(tm("2026-01-05 10:20"), t0 + 37200, "without seconds");
    is_int(tm("1767607230"), 1767607230, "Unix seconds");
    is_int(tm("0"), 0, "0");
    is_int(tm("2026-01-05 24:00:00"), -1, "hour 24");
    is_int(tm("2026-01-05 10:60"), -1, "minute 60");
    is_int(tm("2026-01-05T10:20:30+01:00"), -1, "another zone");
    is_int(tm("2026-01-05 10"), -1, "hour only");
    is_int(tm("999999999999"), -1, "Unix seconds beyond 9999");
    is_int(tm(""), -1, "empty");
    is_int(tm("-5"), -1, "negative");
    psd_recon_time_format(t0 + 37230, out);
    is_str(out, "2026-01-05T10:20:30Z", "format a time");
    psd_recon_time_format(0, out);
    is_str(out, "1970-01-01T00:00:00Z", "format the epoch");
    psd_recon_time_format(PSD_RECON_TIME_MAX, out);
    is_str(out, "9999-12-31T23:59:59Z", "format the last second");

    /* order ids */
    ok(psd_recon_order_id_valid("ord:with.dots-ok_1", 18), "order id ok");
    ok(!psd_recon_order_id_valid("ord 1", 5), "space");
    ok(!psd_recon_order_id_valid("", 0), "empty");
    ok(!psd_recon_order_id_valid("a,b", 3), "comma");
    memset(id, 'x', sizeof(id));
    ok(psd_recon_order_id_valid(id, 64), "64 characters");
    ok(!psd_recon_order_id_valid(id, 65), "65 characters");

    /* currencies and amounts */
    is_int(psd_recon_currency_exponent("eur", 3), 2, "eur 2");
    is_int(psd_recon_currency_exponent("JPY", 3), 0, "JPY 0");
    is_int(psd_recon_currency_exponent("kwd", 3), 3, "kwd 3");
    is_int(psd_recon_currency_exponent("xpf", 3), 0, "xpf 0 (last)");
    is_int(psd_recon_currency_exponent("bif", 3), 0, "bif 0 (first)");
    is_int(psd_recon_currency_exponent("eu", 2), -1, "two letters");
    is_int(psd_recon_currency_exponent("e1r", 3), -1, "a digit");
    is_int(major("12.34", 2), 1234, "12.34");
    is_int(major("-12.34", 2), -1234, "-12.34");
    is_int(major("12", 2), 1200, "12");
    is_int(major("12.3", 2), 1230, "12.3");
    is_int(major("12.340", 2), 1234, "12.340");
    is_int(major("0.05", 2), 5, "0.05");
    is_int(major("12.345", 2), 999999999, "12.345 is not cents");
    is_int(major("1000", 0), 1000, "JPY 1000");
    is_int(major("1000.00", 0), 1000, "JPY 1000.00");
    is_int(major("1000.5", 0), 999999999, "JPY 1000.5");
    is_int(major("1.234", 3), 1234, "KWD 1.234");
    is_int(major("12.", 2), 999999999, "12.");
    is_int(major(".5", 2), 999999999, ".5");
    is_int(major("1,234.00", 2), 999999999, "thousands separator");
    is_int(major("1e3", 2), 999999999, "exponent");
    is_int(major("", 2), 999999999, "empty");
    is_int(major("-", 2), 999999999, "a lone minus");
    is_int(major("12.3.4", 2), 999999999, "two dots");
    is_int(major("9999999999999999.99", 2), 999999999999999999LL,
           "18 digits");
    is_int(major("99999999999999999.99", 2), 999999999, "19 digits");
    is_int(major("999999999999999999", 2), 999999999, "overflow by cents");
    is_int(minor("2500"), 2500, "minor 2500");
    is_int(minor("-2500"), -2500, "minor -2500");
    is_int(minor("25.00"), 999999999, "minor units have no dot");
    is_int(minor(""), 999999999, "minor empty");
    is_int(minor("-"), 999999999, "minor minus");
    is_int(minor("1234567890123456789"), 999999999, "minor 19 digits");

    /* matching: each kind once, and orders that match */
    d0 = day("2026-01-05");
    t0 = d0 * 86400 + 3600;

    o[0] = order("ord_ok", "pi_ok", 2500, "paid", t0, NONE, NONE);
    o[1] = order("ord_unsettled", "pi_un", 1000, "paid", t0, NONE, NONE);
    o[2] = order("ord_amount", "pi_am", 2500, "paid", t0, NONE, NONE);
    o[3] = order("ord_cur", "pi_cur", 2500, "paid", t0, NONE, NONE);
    o[4] = order("ord_rhere", "pi_rh", 900, "refunded", t0, t0 + 60, NONE);
    o[5] = order("ord_rthere", "pi_rt", 900, "paid", t0, NONE, NONE);
    o[6] = order("ord_byid", "pi_byid", 700, "paid", t0, NONE, NONE);
    o[7] = order("ord_dispute", "pi_dp", 500, "chargeback", t0, NONE,
                 t0 + 99);

    x[0] = txn("ord_ok", "ch_ok", 2500, "eur", PSD_RECON_PAYMENT, t0, 2);
    x[1] = txn("ord_amount", "ch_am", 2400, "eur", PSD_RECON_PAYMENT, t0, 3);
    x[2] = txn("ord_cur", "ch_cur", 2500, "usd", PSD_RECON_PAYMENT, t0, 4);
    x[3] = txn("ord_rhere", "ch_rh", 900, "EUR", PSD_RECON_PAYMENT, t0, 5);
    x[4] = txn("ord_rthere", "ch_rt", 900, "eur", PSD_RECON_PAYMENT, t0, 6);
    x[5] = txn("ord_rthere", "re_rt", -900, "eur", PSD_RECON_REFUND, t0, 7);
    x[6] = txn("ord_ghost", "ch_gh", 300, "eur", PSD_RECON_PAYMENT, t0, 8);
    x[7] = txn("", "pi_byid", 700, "eur", PSD_RECON_PAYMENT, t0, 9);
    x[8] = txn("", "po_1", -9000, "eur", PSD_RECON_OTHER, t0, 10);
    x[9] = txn("ord_dispute", "ch_dp", 500, "eur", PSD_RECON_PAYMENT, t0, 11);
    x[10] = txn("ord_dispute", "dp_dp", -500, "eur", PSD_RECON_REFUND, t0,
                12);

    ok(psd_recon_match(o, 8, x, 11, NULL, &res) == 0, "match");
    is_str(summary(&res),
           "amount_differs:ord_amount currency_differs:ord_cur "
           "settled_unknown:ord_ghost refunded_here_only:ord_rhere "
           "refunded_there_only:ord_rthere paid_not_settled:ord_unsettled",
           "one of each kind, sorted by order id");
    is_int(res.orders, 8, "8 orders");
    is_int(res.txns, 10, "10 payments and refunds");
    is_int(res.matched, 9, "9 matched");
    is_int(res.ignored, 1, "the payout ignored");
    is_int(res.count[PSD_RECON_AMOUNT_DIFFERS], 1, "counted by kind");
    is_int(res.items[0].there_amount, 2400, "their amount");
    is_int(res.items[0].txn->line, 3, "their line");
    ok(res.items[5].txn == NULL, "paid_not_settled has no gateway row");
    psd_recon_result_free(&res);

    /* a double charge: the sum differs */
    o[0] = order("ord_double", "pi_d", 2500, "paid", t0, NONE, NONE);
    x[0] = txn("ord_double", "ch_d1", 2500, "eur", PSD_RECON_PAYMENT, t0, 2);
    x[1] = txn("ord_double", "ch_d2", 2500, "eur", PSD_RECON_PAYMENT, t0, 3);
    psd_recon_match(o, 1, x, 2, NULL, &res);
    is_str(summary(&res), "amount_differs:ord_double", "double charge");
    is_int(res.items[0].there_amount, 5000, "summed");
    psd_recon_result_free(&res);

    /* a payment for an order that is not paid here */
    o[0] = order("ord_unpaid", "", NONE, "created", NONE, NONE, NONE);
    x[0] = txn("ord_unpaid", "ch_u", 2500, "eur", PSD_RECON_PAYMENT, t0, 2);
    psd_recon_match(o, 1, x, 1, NULL, &res);
    is_str(summary(&res), "settled_unknown:ord_unpaid",
           "settled for an order not paid here");
    ok(res.items[0].order != NULL, "with the order");
    psd_recon_result_free(&res);

    /* duplicates: the last row counts */
    o[0] = order("ord_dup", "pi_1", 100, "paid", t0, NONE, NONE);
    o[1] = order("ord_dup", "pi_1", 100, "refunded", t0, t0 + 5, NONE);
    x[0] = txn("ord_dup", "", 100, "eur", PSD_RECON_PAYMENT, t0, 2);
    psd_recon_match(o, 2, x, 1, NULL, &res);
    is_int(res.duplicates, 1, "one duplicate");
    is_int(res.orders, 1, "one order");
    is_str(summary(&res), "refunded_here_only:ord_dup", "the later row");
    psd_recon_result_free(&res);

    /* periods: what is expected where */
    p.from_day = d0;
    p.to_day = d0 + 30;
    p.slack = 3600;

    /* paid before the period, refunded in it: the payment is not expected */
    o[0] = order("ord_old", "pi_o", 100, "refunded", (d0 - 3) * 86400,
                 t0, NONE);
    x[0] = txn("ord_old", "re_o", -100, "eur", PSD_RECON_REFUND, t0, 2);
    /* paid in it, no payment there */
    o[1] = order("ord_new", "pi_n", 100, "paid", t0, NONE, NONE);
    /* gateway rows: before the period, in the slack, after */
    x[1] = txn("ord_x1", "", 100, "eur", PSD_RECON_PAYMENT,
               d0 * 86400 - 7200, 3);
    x[2] = txn("ord_x2", "", 100, "eur", PSD_RECON_PAYMENT,
               d0 * 86400 - 60, 4);
    x[3] = txn("ord_x3", "", 100, "eur", PSD_RECON_PAYMENT,
               (d0 + 31) * 86400 + 7200, 5);
    /* at the edge and matching: counts */
    o[2] = order("ord_edge", "pi_e", 100, "paid", d0 * 86400 + 10, NONE,
                 NONE);
    x[4] = txn("ord_edge", "", 100, "eur", PSD_RECON_PAYMENT,
               d0 * 86400 - 10, 6);
    /* no time: in the period */
    x[5] = txn("ord_x4", "", 100, "eur", PSD_RECON_PAYMENT, NONE, 7);
    psd_recon_match(o, 3, x, 6, &p, &res);
    is_str(summary(&res), "paid_not_settled:ord_new settled_unknown:ord_x4",
           "period: old payment not expected, slack rows not unknown");
    is_int(res.outside, 2, "two rows outside the period and slack");
    is_int(res.matched, 2, "the refund and the edge payment matched");
    psd_recon_result_free(&res);

    /* refunded after the period: not expected there */
    o[0] = order("ord_late", "pi_l", 100, "refunded", t0,
                 (d0 + 40) * 86400, NONE);
    x[0] = txn("ord_late", "", 100, "eur", PSD_RECON_PAYMENT, t0, 2);
    psd_recon_match(o, 1, x, 1, &p, &res);
    is_int(res.n, 0, "a refund after the period is not expected");
    psd_recon_result_free(&res);

    /* nothing at all */
    ok(psd_recon_match(NULL, 0, NULL, 0, NULL, &res) == 0 && res.n == 0,
       "empty inputs");
    psd_recon_result_free(&res);

    is_str(psd_recon_kind_name(PSD_RECON_REFUNDED_THERE_ONLY),
           "refunded_there_only", "kind names");
    is_str(psd_recon_kind_name(PSD_RECON_NKINDS), "unknown", "out of range");

    return done_testing();
}
