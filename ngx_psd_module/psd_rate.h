/*
 * Copyright (C) ngx_psd_module authors
 *
 * Rate limiting math: the values of the rate, duration and size
 * directives, the generic cell rate algorithm (GCRA) the Redis script runs,
 * and the Lua scripts themselves.  nginx-free.
 *
 * Times are integers: microseconds for GCRA (Redis TIME's resolution),
 * milliseconds for durations.  Every value stays below 2^53 so that Lua,
 * whose numbers are doubles, computes the same results exactly.
 */

#ifndef PSD_RATE_H
#define PSD_RATE_H

#include <stddef.h>
#include <stdint.h>

/* largest duration, in milliseconds (about 285,000 years) */
#define PSD_RATE_DURATION_MAX   ((int64_t) 1 << 53)

/* 10000r/s: shorter intervals would round too coarsely to whole µs */
#define PSD_RATE_INTERVAL_MIN   100

/* largest interval * (burst + 1) and interval * cost, µs (35.7 years) */
#define PSD_RATE_SPAN_MAX       ((int64_t) 1 << 50)

/* largest "now" and "tat", µs since the epoch (year 2112) */
#define PSD_RATE_TIME_MAX       ((int64_t) 1 << 52)

/* "1w2d3h4m5s6ms" is the longest spelling of any duration, plus NUL */
#define PSD_RATE_DURATION_LEN   48


typedef struct {
    int64_t  n;             /* requests ... */
    int64_t  period;        /* ... per this many µs */
    int64_t  interval;      /* emission interval T, µs, rounded */
} psd_rate_t;


typedef struct {
    int      allowed;       /* 1 allowed, 0 limited */
    int64_t  tat;           /* theoretical arrival time to store, µs */
    int64_t  limit;         /* burst + 1 */
    int64_t  remaining;     /* requests still allowed right now */
    int64_t  retry_after;   /* µs until allowed, -1 if allowed or never */
    int64_t  reset_after;   /* µs until the bucket is full again */
    int64_t  retry_after_ms;    /* the same rounded up; -1 stays -1 */
    int64_t  reset_after_ms;
} psd_gcra_t;


/*
 * "<n>r/s", "<n>r/m", "<n>r/h" or "<n>r/d", n >= 1, at most one request
 * per PSD_RATE_INTERVAL_MIN µs (10000r/s); the interval is period / n
 * rounded to the nearest µs.  0 on success, -1 on any error.
 */
int psd_rate_parse(const char *s, size_t len, psd_rate_t *rate);

/*
 * nginx-like durations: "30" (seconds), "500ms", "30s", "5m", "1h", "1d",
 * "1w" and combinations in decreasing unit order without spaces ("1h30m",
 * "1d12h", "1s500ms"); at most PSD_RATE_DURATION_MAX ms.  0 or -1.
 */
int psd_rate_parse_duration(const char *s, size_t len, int64_t *ms);

/* the canonical spelling of a duration, "0s" for 0; returns its length */
size_t psd_rate_format_duration(int64_t ms, char *buf);

/* "1024", "16k", "16K", "1m", "1M", "1g", "1G"; at most INT64_MAX */
int psd_rate_parse_size(const char *s, size_t len, int64_t *bytes);

/*
 * One GCRA decision, as CL.THROTTLE of redis-cell documents it: burst + 1
 * requests may arrive at once, then one per interval.  tat is the stored
 * theoretical arrival time, or -1 when there is none.  When allowed and
 * cost > 0 the caller stores res->tat for res->reset_after µs; cost 0
 * only peeks.  0 on success, -1 when an argument is out of range.
 */
int psd_rate_gcra(int64_t tat, int64_t now, int64_t interval, int64_t burst,
    int64_t cost, psd_gcra_t *res);

/*
 * The sliding window of a fraud counter of window_s seconds: buckets of
 * *width seconds, the current one and the *n before it counted.
 */
void psd_rate_window_buckets(int64_t window_s, int64_t *width, int64_t *n);

/*
 * EVAL/EVALSHA psd_rate_gcra_script 1 <key> <interval_us> <burst> <cost>
 *     [<now_us>]
 * returns {allowed 0|1, remaining, retry_after_ms (-1 if allowed),
 *     reset_after_ms}
 */
extern const char  psd_rate_gcra_script[];

/*
 * EVAL/EVALSHA psd_rate_window_script <n> <key1> .. <keyn> <now_us or "">
 *     <distinct_cap> then for each key: <kind c|d|s> <window_s> <arg>
 * arg: c: events to add (0 peeks), s: amount to add (0 peeks),
 *      d: member to add ("" peeks)
 * returns one integer per key: the counter's value after the update
 */
extern const char  psd_rate_window_script[];

#endif
