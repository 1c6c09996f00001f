/*
 * libFuzzer target: the values of the rate, duration and size directives,
 * GCRA decisions, and the Redis Cluster slot hash.
 *
 * Invariants checked (abort() on violation):
 *  - a parsed rate has n >= 1 and an interval of at least
 *    PSD_RATE_INTERVAL_MIN µs;
 *  - a parsed duration is within 0..PSD_RATE_DURATION_MAX, its canonical
 *    spelling fits PSD_RATE_DURATION_LEN and parses back to the same value;
 *  - a parsed size is not negative;
 *  - GCRA on in-range arguments never admits more than burst + 1 requests
 *    at one instant, and its retry/reset times are within the span;
 *  - a slot is below PSD_SLOT_COUNT, the hashed part lies inside the key,
 *    and two keys with the same non-empty hash tag share their slot.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psd_rate.h"
#include "psd_slot.h"


static void
die(const char *what)
{
    fprintf(stderr, "fuzz_rate: invariant broken: %s\n", what);
    abort();
}


static void
check_duration(const char *s, size_t len)
{
    int64_t  ms, again;
    size_t   n;
    char     buf[PSD_RATE_DURATION_LEN];

    if (psd_rate_parse_duration(s, len, &ms) != 0) {
        return;
    }

    if (ms < 0 || ms > PSD_RATE_DURATION_MAX) {
        die("duration out of range");
    }

    n = psd_rate_format_duration(ms, buf);

    if (n == 0 || n >= sizeof(buf)) {
        die("canonical duration does not fit");
    }

    if (psd_rate_parse_duration(buf, n, &again) != 0 || again != ms) {
        die("canonical duration does not parse back");
    }
}


static void
check_gcra(const uint8_t *data, size_t size)
{
    int64_t     v[4], now, span, tat, admitted;
    size_t      i;
    psd_gcra_t  res;

    if (size < sizeof(v)) {
        return;
    }

    memcpy(v, data, sizeof(v));

    /* interval, burst, now and a starting tat within the documented range */
    v[0] = PSD_RATE_INTERVAL_MIN + (int64_t) ((uint64_t) v[0] % 1000000000);
    v[1] = (int64_t) ((uint64_t) v[1] % 1000);
    now = (int64_t) ((uint64_t) v[2] % (PSD_RATE_TIME_MAX / 2));
    span = v[0] * (v[1] + 1);

    if (span > PSD_RATE_SPAN_MAX) {
        return;
    }

    /*
     * no stored state, or one that GCRA itself could have stored: at most
     * one span ahead of now (a tat further ahead, from a clock stepped
     * back, legitimately asks for a longer wait)
     */
    tat = (int64_t) ((uint64_t) v[3] % (uint64_t) (2 * span + 1)) - span;
    tat = (v[3] & 1) ? -1 : now + tat;
    if (tat < -1) {
        tat = 0;
    }

    /* a burst at one instant: at most burst + 1 are admitted */

    admitted = 0;

    for (i = 0; i < (size_t) v[1] + 3; i++) {
        if (psd_rate_gcra(i ? res.tat : tat, now, v[0], v[1], 1, &res)
            != 0)
        {
            die("in-range GCRA call refused");
        }

        if (res.allowed) {
            admitted++;

        } else {
            if (res.retry_after < 0 || res.retry_after > span) {
                die("retry_after out of range");
            }
        }

        if (res.remaining < 0 || res.remaining > v[1] + 1) {
            die("remaining out of range");
        }

        if (res.reset_after < 0 || res.reset_after > span) {
            die("reset_after out of range");
        }

        if (!res.allowed) {
            break;
        }
    }

    if (admitted > v[1] + 1) {
        die("more than burst + 1 admitted at one instant");
    }
}


static void
check_slot(const char *s, size_t len)
{
    char         other[64];
    size_t       hashed_len, n;
    unsigned     slot;
    const char  *hashed;

    slot = psd_slot(s, len);

    if (slot >= PSD_SLOT_COUNT) {
        die("slot out of range");
    }

    hashed = psd_slot_hashed(s, len, &hashed_len);

    if (hashed < s || hashed + hashed_len > s + len) {
        die("hashed part outside the key");
    }

    if (hashed_len == len || hashed_len + 2 + 8 > sizeof(other)) {
        return;
    }

    /* the same tag with another suffix lands in the same slot */

    other[0] = '{';
    memcpy(other + 1, hashed, hashed_len);
    n = hashed_len + 1;
    other[n++] = '}';
    memcpy(other + n, ":suffix", 7);
    n += 7;

    if (psd_slot(other, n) != slot) {
        die("same hash tag, different slot");
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t      bytes;
    psd_rate_t   rate;
    const char  *s = (const char *) data;

    if (psd_rate_parse(s, size, &rate) == 0) {
        if (rate.n < 1 || rate.interval < PSD_RATE_INTERVAL_MIN
            || rate.period < 1)
        {
            die("parsed rate out of range");
        }
    }

    check_duration(s, size);

    if (psd_rate_parse_size(s, size, &bytes) == 0 && bytes < 0) {
        die("negative size");
    }

    check_gcra(data, size);
    check_slot(s, size);

    return 0;
}
