/*
 * libFuzzer target: the fraud rule parser, and the rate, duration and
 * size parsers it shares with the directives.  Besides "no crash":
 *   - an accepted rule prints to text that parses back to an equal rule
 *     and prints the same again;
 *   - a refused one has a NUL-terminated message ending in
 *     "at column N", N within the text (or just after it);
 *   - an accepted duration prints and parses back to itself;
 *   - GCRA, fed numbers from the input, keeps its invariants, and a
 *     limited request retried exactly retry_after later is allowed.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psd_rate.h"
#include "psd_rule.h"
#include "psd_slot.h"


static void
fuzz_rule(const char *text, size_t len)
{
    int         rc;
    char        err[PSD_RULE_ERR_LEN], buf[PSD_RULE_TEXT_LEN];
    char        again[PSD_RULE_TEXT_LEN], tail[32];
    size_t      col, n, m, tl;
    psd_rule_t  r, r2;

    col = 0;
    rc = psd_rule_parse(&r, text, len, err, sizeof(err), &col);

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

    n = psd_rule_format(&r, buf, sizeof(buf));
    if (n == 0 || n >= sizeof(buf) || n != strlen(buf)) {
        abort();
    }

    if (psd_rule_parse(&r2, buf, n, err, sizeof(err), &col) != 0
        || !psd_rule_equal(&r, &r2))
    {
        abort();
    }

    m = psd_rule_format(&r2, again, sizeof(again));
    if (m != n || memcmp(buf, again, n) != 0) {
        abort();
    }

    if (r.window < 1 || r.window > PSD_RULE_WINDOW_MAX || r.threshold < 0
        || r.threshold > PSD_RULE_THRESHOLD_MAX || r.nkeys < 1
        || r.nkeys > PSD_RULE_KEYS_MAX
        || (r.agg == PSD_RULE_DISTINCT
            && r.threshold >= PSD_RULE_DISTINCT_CAP)
        || (r.agg != PSD_RULE_COUNT && r.event != PSD_RULE_EVENT_NONE)
        || (r.event == PSD_RULE_EVENT_NONE) != (r.var[0] != '\0'))
    {
        abort();
    }

    if (psd_rule_matches(&r, r.threshold)
        != (r.cmp == PSD_RULE_GE || r.cmp == PSD_RULE_LE
            || r.cmp == PSD_RULE_EQ))
    {
        abort();
    }
}


static void
fuzz_values(const char *text, size_t len)
{
    char        buf[PSD_RATE_DURATION_LEN];
    size_t      n;
    int64_t     ms, ms2, bytes;
    psd_rate_t  rate;

    if (psd_rate_parse_duration(text, len, &ms) == 0) {
        n = psd_rate_format_duration(ms, buf);

        if (ms < 0 || ms > PSD_RATE_DURATION_MAX || n >= sizeof(buf)
            || psd_rate_parse_duration(buf, n, &ms2) != 0 || ms2 != ms)
        {
            abort();
        }
    }

    if (psd_rate_parse_size(text, len, &bytes) == 0 && bytes < 0) {
        abort();
    }

    if (psd_rate_parse(text, len, &rate) == 0
        && (rate.interval < PSD_RATE_INTERVAL_MIN || rate.n < 1
            || rate.interval > rate.period))
    {
        abort();
    }

    if (psd_slot(text, len) >= PSD_SLOT_COUNT) {
        abort();
    }
}


static int64_t
take(const uint8_t **p, const uint8_t *end, int64_t mod)
{
    uint64_t  v = 0;
    int       i;

    for (i = 0; i < 8 && *p < end; i++) {
        v = (v << 8) | *(*p)++;
    }

    return (int64_t) (v % (uint64_t) mod);
}


static void
fuzz_gcra(const uint8_t *data, size_t size)
{
    int64_t         tat, now, interval, burst, cost;
    psd_gcra_t      r, r2;
    const uint8_t  *p = data, *end = data + size;

    interval = 1 + take(&p, end, 100000000);
    burst = take(&p, end, 1000);
    cost = take(&p, end, 1002);
    now = take(&p, end, PSD_RATE_TIME_MAX / 2);
    tat = now - interval * 500 + take(&p, end, interval * 1500 + 1);

    if (psd_rate_gcra(tat, now, interval, burst, cost, &r) != 0) {
        if (interval * (burst + 1) <= PSD_RATE_SPAN_MAX
            && interval * cost <= PSD_RATE_SPAN_MAX && tat >= 0)
        {
            abort();
        }
        return;
    }

    /* a tat beyond now + tolerance only comes from a lowered burst */
    if (r.limit != burst + 1 || r.remaining < 0 || r.remaining > r.limit
        || r.reset_after < 0
        || (r.allowed && r.reset_after > interval * (burst + 1))
        || (!r.allowed && r.reset_after > interval * (burst + 1)
            && r.reset_after != tat - now)
        || (r.allowed && r.retry_after != -1)
        || (!r.allowed && r.retry_after == 0)
        || (r.allowed && r.tat != (tat > now ? tat : now) + interval * cost))
    {
        abort();
    }

    if (!r.allowed && r.retry_after > 0) {
        if (psd_rate_gcra(tat, now + r.retry_after, interval, burst, cost,
                          &r2) != 0
            || !r2.allowed)
        {
            abort();
        }

        if (r.retry_after > 1
            && (psd_rate_gcra(tat, now + r.retry_after - 1, interval, burst,
                              cost, &r2) != 0
                || r2.allowed))
        {
            abort();
        }
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_rule((const char *) data, size);
    fuzz_values((const char *) data, size);
    fuzz_gcra(data, size);

    return 0;
}
