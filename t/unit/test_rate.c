/*
 * Unit tests: rate, duration and size values, the GCRA decision, and the
 * fraud window buckets.
 *
 * "test_rate --gcra-vectors" prints every GCRA step below with this C
 * implementation's results, and "--gcra-script" / "--window-script" print
 * the Lua scripts, so t/unit/gcra_lua.t can replay them in a real Redis.
 */

#include <stdlib.h>

#include "tap.h"
#include "psd_rate.h"


#define S  1000000LL    /* µs */


typedef struct {
    int64_t  now;
    int64_t  cost;
    int      allowed;
    int64_t  remaining;
    int64_t  retry_ms;
    int64_t  reset_ms;
} step_t;


typedef struct {
    const char    *name;
    int64_t        interval;
    int64_t        burst;
    const step_t  *steps;
    size_t         nsteps;
} sequence_t;


/*
 * The table redis-cell's own tests document for 1r/s with max_burst 4
 * (limit 5), starting at 1000 s.
 */
static const step_t  cell[] = {
    /* a request larger than the limit never passes: no retry_after */
    { 1000 * S, 6, 0, 5, -1, 0 },
    { 1000 * S, 1, 1, 4, -1, 1000 },
    { 1000 * S, 1, 1, 3, -1, 2000 },
    { 1000 * S, 1, 1, 2, -1, 3000 },
    { 1000 * S, 1, 1, 1, -1, 4000 },
    { 1000 * S, 1, 1, 0, -1, 5000 },
    { 1000 * S, 1, 0, 0, 1000, 5000 },
    { 1003 * S, 1, 1, 2, -1, 3000 },
    { 1003 * S + 100000, 1, 1, 1, -1, 3900 },
    { 1004 * S, 1, 1, 1, -1, 4000 },
    { 1008 * S, 1, 1, 4, -1, 1000 },
    { 1009 * S + 500000, 1, 1, 4, -1, 1000 },
    /* cost 0 peeks */
    { 1009 * S + 500000, 0, 1, 4, -1, 1000 },
    { 1009 * S + 500000, 2, 1, 2, -1, 3000 },
    { 1009 * S + 500000, 5, 0, 2, 3000, 3000 },
};

/* 10r/s, burst 2: three at once, then one per 100 ms */
static const step_t  burst_then_steady[] = {
    { 50 * S, 1, 1, 2, -1, 100 },
    { 50 * S, 1, 1, 1, -1, 200 },
    { 50 * S, 1, 1, 0, -1, 300 },
    { 50 * S, 1, 0, 0, 100, 300 },
    { 50 * S + 40000, 1, 0, 0, 60, 260 },
    { 50 * S + 100000, 1, 1, 0, -1, 300 },
    { 50 * S + 150000, 1, 0, 0, 50, 250 },
    { 50 * S + 200000, 1, 1, 0, -1, 300 },
    { 50 * S + 300000, 1, 1, 0, -1, 300 },
    { 50 * S + 400000, 1, 1, 0, -1, 300 },
};

/* idle time refills the bucket, never beyond its size */
static const step_t  idle_refill[] = {
    { 7 * S, 1, 1, 2, -1, 100 },
    { 7 * S, 1, 1, 1, -1, 200 },
    { 7 * S, 1, 1, 0, -1, 300 },
    /* 250 ms later two and a half intervals have drained: two fit */
    { 7 * S + 250000, 1, 1, 1, -1, 150 },
    { 7 * S + 250000, 1, 1, 0, -1, 250 },
    { 7 * S + 250000, 1, 0, 0, 50, 250 },
    { 7 * S + 300000, 1, 1, 0, -1, 300 },
    /* an hour later: a fresh, full bucket */
    { 3607 * S, 0, 1, 3, -1, 0 },
    { 3607 * S, 1, 1, 2, -1, 100 },
};

/* 3r/s: the interval 333333 µs is not whole milliseconds: round up */
static const step_t  thirds[] = {
    { 1 * S, 1, 1, 0, -1, 334 },
    { 1 * S + 1, 1, 0, 0, 334, 334 },
    { 1 * S + 333332, 1, 0, 0, 1, 1 },
    { 1 * S + 333333, 1, 1, 0, -1, 334 },
};

/* 5r/m, burst 0: the retry is the rest of the 12 s interval */
static const step_t  per_minute[] = {
    { 100 * S, 1, 1, 0, -1, 12000 },
    { 101 * S, 1, 0, 0, 11000, 11000 },
    { 111 * S + 999999, 1, 0, 0, 1, 1 },
    { 112 * S, 1, 1, 0, -1, 12000 },
    { 112 * S, 2, 0, 0, -1, 12000 },
};

static const sequence_t  sequences[] = {
    { "redis-cell", 1 * S, 4, cell, sizeof(cell) / sizeof(step_t) },
    { "burst then steady", 100000, 2, burst_then_steady,
      sizeof(burst_then_steady) / sizeof(step_t) },
    { "idle refill", 100000, 2, idle_refill,
      sizeof(idle_refill) / sizeof(step_t) },
    { "3r/s", 333333, 0, thirds, sizeof(thirds) / sizeof(step_t) },
    { "5r/m", 12 * S, 0, per_minute, sizeof(per_minute) / sizeof(step_t) },
};

#define NSEQ  (sizeof(sequences) / sizeof(sequences[0]))


static void
run_sequences(int print)
{
    size_t            i, k;
    int64_t           tat;
    psd_gcra_t        r;
    const step_t     *st;
    const sequence_t  *sq;

    for (i = 0; i < NSEQ; i++) {
        sq = &sequences[i];
        tat = -1;

        for (k = 0; k < sq->nsteps; k++) {
            st = &sq->steps[k];

            if (psd_rate_gcra(tat, st->now, sq->interval, sq->burst,
                              st->cost, &r) != 0)
            {
                ok(0, "%s step %zu: arguments refused", sq->name, k + 1);
                continue;
            }

            if (r.allowed && st->cost > 0) {
                tat = r.tat;
            }

            if (print) {
                /* seq interval burst cost now -> what Lua must return */
                printf("%zu %lld %lld %lld %lld %d %lld %lld %lld\n", i,
                       (long long) sq->interval, (long long) sq->burst,
                       (long long) st->cost, (long long) st->now,
                       r.allowed, (long long) r.remaining,
                       (long long) r.retry_after_ms,
                       (long long) r.reset_after_ms);
                continue;
            }

            ok(r.allowed == st->allowed
               && r.remaining == st->remaining
               && r.retry_after_ms == st->retry_ms
               && r.reset_after_ms == st->reset_ms
               && r.limit == sq->burst + 1,
               "%s step %zu: %s, remaining %lld, retry %lld, reset %lld",
               sq->name, k + 1, st->allowed ? "allowed" : "limited",
               (long long) st->remaining, (long long) st->retry_ms,
               (long long) st->reset_ms);

            if (r.allowed != st->allowed || r.remaining != st->remaining
                || r.retry_after_ms != st->retry_ms
                || r.reset_after_ms != st->reset_ms)
            {
                printf("#   got %s, remaining %lld, retry %lld, "
                       "reset %lld\n", r.allowed ? "allowed" : "limited",
                       (long long) r.remaining,
                       (long long) r.retry_after_ms,
                       (long long) r.reset_after_ms);
            }
        }
    }
}


static int64_t
duration(const char *s)
{
    int64_t  ms;

    return psd_rate_parse_duration(s, strlen(s), &ms) == 0 ? ms : -1;
}


static int64_t
size(const char *s)
{
    int64_t  n;

    return psd_rate_parse_size(s, strlen(s), &n) == 0 ? n : -1;
}


static int64_t
interval(const char *s)
{
    psd_rate_t  r;

    return psd_rate_parse(s, strlen(s), &r) == 0 ? r.interval : -1;
}


static void
test_values(void)
{
    char        buf[PSD_RATE_DURATION_LEN];
    psd_rate_t  r;

    is_int(duration("500ms"), 500, "500ms");
    is_int(duration("30s"), 30000, "30s");
    is_int(duration("30"), 30000, "a bare number is seconds");
    is_int(duration("5m"), 300000, "5m");
    is_int(duration("1h"), 3600000, "1h");
    is_int(duration("1d"), 86400000, "1d");
    is_int(duration("1w"), 604800000, "1w");
    is_int(duration("1h30m"), 5400000, "1h30m");
    is_int(duration("1w1d1h1m1s1ms"), 694861001, "every unit once");
    is_int(duration("1s500ms"), 1500, "1s500ms");
    is_int(duration("0s"), 0, "0s");
    is_int(duration("0"), 0, "0");
    is_int(duration("007s"), 7000, "leading zeros");
    is_int(duration("90m"), 5400000, "a unit may exceed the next one");
    is_int(duration("9007199254740992ms"), PSD_RATE_DURATION_MAX,
           "the largest duration");
    is_int(duration("9007199254740993ms"), -1, "one more is refused");
    is_int(duration("9007199254741s"), -1, "overflow through the unit");
    is_int(duration("14892855w6d8h59m993ms"), -1,
           "overflow through the sum");
    is_int(duration("14892855w6d8h58m59s"), 9007199254739000,
           "sum just below the largest");
    is_int(duration("99999999999999999999999s"), -1, "digits overflow");
    is_int(duration(""), -1, "empty");
    is_int(duration("s"), -1, "unit without number");
    is_int(duration("1"), 1000, "one second");
    is_int(duration("-1s"), -1, "negative");
    is_int(duration("+1s"), -1, "sign");
    is_int(duration("1x"), -1, "unknown unit");
    is_int(duration("1S"), -1, "units are lowercase");
    is_int(duration("1M"), -1, "no months");
    is_int(duration("1y"), -1, "no years");
    is_int(duration("30m1h"), -1, "units out of order");
    is_int(duration("1h1h"), -1, "unit repeated");
    is_int(duration("1ms1s"), -1, "ms before s");
    is_int(duration("1h30"), -1, "bare number after a unit");
    is_int(duration("1h 30m"), -1, "no spaces");
    is_int(duration(" 1h"), -1, "no leading space");
    is_int(duration("1h "), -1, "no trailing space");
    is_int(duration("1.5h"), -1, "no fractions");
    is_int(duration("1hh"), -1, "garbage after a unit");
    ok(psd_rate_parse_duration("1h", 1, &r.n) == 0 && r.n == 1000,
       "the length is honoured");

    psd_rate_format_duration(0, buf);
    is_str(buf, "0s", "format 0");
    psd_rate_format_duration(5400000, buf);
    is_str(buf, "1h30m", "format 1h30m");
    psd_rate_format_duration(604800000, buf);
    is_str(buf, "1w", "format 7d as 1w");
    psd_rate_format_duration(1500, buf);
    is_str(buf, "1s500ms", "format 1500 ms");
    is_int(psd_rate_format_duration(PSD_RATE_DURATION_MAX, buf),
           strlen("14892855w6d8h59m992ms"), "format the largest");
    is_str(buf, "14892855w6d8h59m992ms", "the largest spelled");
    is_int(duration(buf), PSD_RATE_DURATION_MAX, "and parsed back");

    is_int(size("1024"), 1024, "bare bytes");
    is_int(size("16k"), 16384, "16k");
    is_int(size("16K"), 16384, "16K");
    is_int(size("1m"), 1048576, "1m");
    is_int(size("1M"), 1048576, "1M");
    is_int(size("2g"), 2147483648LL, "2g");
    is_int(size("0"), 0, "0");
    is_int(size("9223372036854775807"), INT64_MAX, "largest bytes");
    is_int(size("9223372036854775808"), -1, "one more");
    is_int(size("8589934591g"), 9223372035781033984LL, "largest in g");
    is_int(size("8589934592g"), -1, "overflow through the unit");
    is_int(size(""), -1, "empty size");
    is_int(size("k"), -1, "unit without number");
    is_int(size("1kb"), -1, "trailing garbage");
    is_int(size("-1k"), -1, "negative size");
    is_int(size("1t"), -1, "no terabytes");
    is_int(size("1 k"), -1, "no space");

    is_int(interval("10r/s"), 100000, "10r/s");
    is_int(interval("1r/s"), 1000000, "1r/s");
    is_int(interval("600r/m"), 100000, "600r/m");
    is_int(interval("5r/m"), 12000000, "5r/m");
    is_int(interval("5r/h"), 720000000, "5r/h");
    is_int(interval("1r/d"), 86400000000LL, "1r/d");
    is_int(interval("3r/s"), 333333, "3r/s rounds down");
    is_int(interval("6r/s"), 166667, "6r/s rounds up");
    is_int(interval("10000r/s"), 100, "the fastest rate");
    is_int(interval("10001r/s"), -1, "faster is refused");
    is_int(interval("0r/s"), -1, "zero rate");
    is_int(interval("r/s"), -1, "no number");
    is_int(interval("10r/"), -1, "no unit");
    is_int(interval("10r/w"), -1, "unknown unit");
    is_int(interval("10r/sec"), -1, "trailing garbage");
    is_int(interval("10/s"), -1, "no r");
    is_int(interval("-1r/s"), -1, "negative");
    is_int(interval("99999999999999999999r/s"), -1, "digits overflow");
    ok(psd_rate_parse("600r/m", 6, &r) == 0 && r.n == 600
       && r.period == 60000000, "count and period kept");
}


static void
test_gcra(void)
{
    int64_t     w, n;
    psd_gcra_t  r;

    run_sequences(0);

    is_int(psd_rate_gcra(-1, 0, 0, 1, 1, &r), -1, "interval 0 refused");
    is_int(psd_rate_gcra(-1, 0, 1, -1, 1, &r), -1, "negative burst");
    is_int(psd_rate_gcra(-1, 0, 1, 1, -1, &r), -1, "negative cost");
    is_int(psd_rate_gcra(-1, -1, 1, 1, 1, &r), -1, "negative now");
    is_int(psd_rate_gcra(-1, PSD_RATE_TIME_MAX + 1, 1, 1, 1, &r), -1,
           "now too large");
    is_int(psd_rate_gcra(PSD_RATE_TIME_MAX + 1, 0, 1, 1, 1, &r), -1,
           "tat too large");
    is_int(psd_rate_gcra(-1, 0, 1 << 25, (1 << 25) - 1, 1, &r), 0,
           "the longest tolerance");
    is_int(psd_rate_gcra(-1, 0, 1 << 25, 1 << 25, 1, &r), -1,
           "longer is refused");
    is_int(psd_rate_gcra(-1, 0, 1 << 25, 0, 1 << 25, &r), 0,
           "the largest increment");
    is_int(psd_rate_gcra(-1, 0, 1 << 25, 0, (1 << 25) + 1, &r), -1,
           "larger is refused");
    is_int(psd_rate_gcra(-1, 0, INT64_MAX, 0, 1, &r), -1,
           "huge interval refused");
    is_int(psd_rate_gcra(-1, 0, 1, INT64_MAX, 1, &r), -1,
           "huge burst refused without overflow");

    ok(psd_rate_gcra(PSD_RATE_TIME_MAX, PSD_RATE_TIME_MAX, 1 << 25,
                     (1 << 25) - 1, 1 << 25, &r) == 0
       && r.allowed && r.tat == PSD_RATE_TIME_MAX + ((int64_t) 1 << 50),
       "extremes stay exact");

    ok(psd_rate_gcra(-1, 5 * S, S, 0, 0, &r) == 0 && r.allowed
       && r.remaining == 1 && r.reset_after == 0 && r.tat == 5 * S,
       "peek at a fresh key");

    /* a tat in the past is an idle bucket: remaining never exceeds limit */
    ok(psd_rate_gcra(1 * S, 5 * S, S, 2, 9, &r) == 0 && !r.allowed
       && r.remaining == 3 && r.reset_after == 0 && r.retry_after == -1,
       "an old tat counts as now");

    psd_rate_window_buckets(3600, &w, &n);
    ok(w == 60 && n == 60, "1h: 60 buckets of 60 s");
    psd_rate_window_buckets(86400, &w, &n);
    ok(w == 1440 && n == 60, "1d: 60 buckets of 24 min");
    psd_rate_window_buckets(90, &w, &n);
    ok(w == 2 && n == 45, "90 s: 45 buckets of 2 s");
    psd_rate_window_buckets(59, &w, &n);
    ok(w == 1 && n == 59, "59 s: one-second buckets");
    psd_rate_window_buckets(1, &w, &n);
    ok(w == 1 && n == 1, "1 s");
    psd_rate_window_buckets(0, &w, &n);
    ok(w == 1 && n == 1, "0 s counts as 1 s");
    psd_rate_window_buckets(30 * 86400 + 1, &w, &n);
    ok(w == 43201 && n == 60 && w * n >= 30 * 86400 + 1,
       "buckets always cover the window");
    psd_rate_window_buckets(61, &w, &n);
    ok(w == 2 && n == 31, "61 s: 31 buckets of 2 s");
}


int
main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--gcra-vectors") == 0) {
        run_sequences(1);
        return 0;
    }

    if (argc > 1 && strcmp(argv[1], "--gcra-script") == 0) {
        fputs(psd_rate_gcra_script, stdout);
        return 0;
    }

    if (argc > 1 && strcmp(argv[1], "--window-script") == 0) {
        fputs(psd_rate_window_script, stdout);
        return 0;
    }

    test_values();
    test_gcra();

    return done_testing();
}
