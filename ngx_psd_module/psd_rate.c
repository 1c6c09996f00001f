/*
 * Copyright (C) ngx_psd_module authors
 */

#include <string.h>

#include "psd_rate.h"


#define MS_S   1000
#define MS_M   (60 * MS_S)
#define MS_H   (60 * MS_M)
#define MS_D   (24 * MS_H)
#define MS_W   (7 * (int64_t) MS_D)

#define US_S   ((int64_t) 1000000)

/* the fraud windows keep this many buckets, so one bucket = window / 60 */
#define WINDOW_BUCKETS  60


typedef struct {
    char     name[3];
    int64_t  ms;
} duration_unit_t;


/* in the only order a combination may use them */
static const duration_unit_t  duration_units[] = {
    { "w", MS_W },
    { "d", MS_D },
    { "h", MS_H },
    { "m", MS_M },
    { "s", MS_S },
    { "ms", 1 }
};

#define NUNITS  (sizeof(duration_units) / sizeof(duration_units[0]))
#define UNIT_S  4


/*
 * reads [0-9]+ into *v, refusing values above max; returns the number of
 * digits, 0 when there are none or the value is too large
 */
static size_t
parse_digits(const char *p, const char *end, int64_t max, int64_t *v)
{
    int64_t      n = 0;
    const char  *s = p;

    while (p < end && *p >= '0' && *p <= '9') {
        if (n > (max - (*p - '0')) / 10) {
            return 0;
        }
        n = n * 10 + (*p++ - '0');
    }

    *v = n;

    return (size_t) (p - s);
}


/*
 * the index of the unit at p and its length in *k, or NUNITS when none;
 * "ms" must win over "m", so the longer names are tried first
 */
static size_t
duration_unit(const char *p, const char *end, size_t *k)
{
    size_t  i;

    for (i = NUNITS; i > 0; i--) {
        *k = strlen(duration_units[i - 1].name);
        if ((size_t) (end - p) >= *k
            && memcmp(p, duration_units[i - 1].name, *k) == 0)
        {
            return i - 1;
        }
    }

    return NUNITS;
}


int
psd_rate_parse_duration(const char *s, size_t len, int64_t *ms)
{
    size_t       i, k, next = 0;
    int64_t      n, total = 0;
    const char  *p = s, *end = s + len;

    if (len == 0) {
        return -1;
    }

    while (p < end) {
        k = parse_digits(p, end, PSD_RATE_DURATION_MAX, &n);
        if (k == 0) {
            return -1;
        }
        p += k;

        if (p == end) {
            /* a bare number means seconds, as in nginx, but only alone */
            if (p - k != s) {
                return -1;
            }
            i = UNIT_S;

        } else {
            i = duration_unit(p, end, &k);
            if (i == NUNITS || i < next) {
                return -1;
            }
            p += k;
        }

        if (n > (PSD_RATE_DURATION_MAX - total) / duration_units[i].ms) {
            return -1;
        }

        total += n * duration_units[i].ms;
        next = i + 1;
    }

    *ms = total;

    return 0;
}


size_t
psd_rate_format_duration(int64_t ms, char *buf)
{
    char     *p = buf, digits[24];
    size_t    i, k;
    int64_t   n;

    if (ms <= 0) {
        memcpy(buf, "0s", 3);
        return 2;
    }

    for (i = 0; i < NUNITS; i++) {
        n = ms / duration_units[i].ms;
        if (n == 0) {
            continue;
        }
        ms -= n * duration_units[i].ms;

        k = 0;
        do {
            digits[k++] = (char) ('0' + n % 10);
            n /= 10;
        } while (n);

        while (k) {
            *p++ = digits[--k];
        }

        k = strlen(duration_units[i].name);
        memcpy(p, duration_units[i].name, k);
        p += k;
    }

    *p = '\0';

    return (size_t) (p - buf);
}


int
psd_rate_parse_size(const char *s, size_t len, int64_t *bytes)
{
    size_t       k;
    int64_t      n, mult;
    const char  *end = s + len;

    k = parse_digits(s, end, INT64_MAX, &n);
    if (k == 0) {
        return -1;
    }

    if (k == len) {
        *bytes = n;
        return 0;
    }

    if (k + 1 != len) {
        return -1;
    }

    switch (s[k]) {
    case 'k':
    case 'K':
        mult = 1024;
        break;

    case 'm':
    case 'M':
        mult = 1024 * 1024;
        break;

    case 'g':
    case 'G':
        mult = 1024 * 1024 * 1024;
        break;

    default:
        return -1;
    }

    if (n > INT64_MAX / mult) {
        return -1;
    }

    *bytes = n * mult;

    return 0;
}


int
psd_rate_parse(const char *s, size_t len, psd_rate_t *rate)
{
    size_t   k;
    int64_t  n, period;

    /* n above the period in µs would round the interval to zero anyway */
    k = parse_digits(s, s + len, 86400 * US_S, &n);
    if (k == 0 || n == 0 || len != k + 3 || s[k] != 'r' || s[k + 1] != '/') {
        return -1;
    }

    switch (s[k + 2]) {
    case 's':
        period = US_S;
        break;

    case 'm':
        period = 60 * US_S;
        break;

    case 'h':
        period = 3600 * US_S;
        break;

    case 'd':
        period = 86400 * US_S;
        break;

    default:
        return -1;
    }

    if (n > period / PSD_RATE_INTERVAL_MIN) {
        return -1;
    }

    rate->n = n;
    rate->period = period;
    rate->interval = (period + n / 2) / n;

    return 0;
}


static int64_t
ceil_ms(int64_t us)
{
    return us / 1000 + (us % 1000 != 0);
}


int
psd_rate_gcra(int64_t tat, int64_t now, int64_t interval, int64_t burst,
    int64_t cost, psd_gcra_t *res)
{
    int64_t  dvt, inc, new_tat, allow_at, ttl, rest;

    if (interval < 1 || burst < 0 || cost < 0
        || now < 0 || now > PSD_RATE_TIME_MAX || tat > PSD_RATE_TIME_MAX
        || burst >= PSD_RATE_SPAN_MAX / interval
        || cost > PSD_RATE_SPAN_MAX / interval)
    {
        return -1;
    }

    /*
     * redis-cell's delay variation tolerance is one interval longer than
     * GCRA's tau = interval * burst because it is compared with the tat
     * after this request, not before it
     */
    dvt = interval * (burst + 1);
    inc = interval * cost;

    /* a tat in the past (or none) means an idle, full bucket */
    if (tat < now) {
        tat = now;
    }

    new_tat = tat + inc;
    allow_at = new_tat - dvt;

    res->limit = burst + 1;

    if (allow_at > now) {
        res->allowed = 0;
        res->tat = tat;
        /* a cost above the limit can never pass: no retry helps */
        res->retry_after = inc <= dvt ? allow_at - now : -1;
        ttl = tat - now;

    } else {
        res->allowed = 1;
        res->tat = new_tat;
        res->retry_after = -1;
        ttl = new_tat - now;
    }

    rest = dvt - ttl;
    res->remaining = rest > 0 ? rest / interval : 0;
    res->reset_after = ttl;
    res->retry_after_ms = res->retry_after < 0
                          ? -1 : ceil_ms(res->retry_after);
    res->reset_after_ms = ceil_ms(ttl);

    return 0;
}


void
psd_rate_window_buckets(int64_t window_s, int64_t *width, int64_t *n)
{
    if (window_s < 1) {
        window_s = 1;
    }

    *width = (window_s + WINDOW_BUCKETS - 1) / WINDOW_BUCKETS;
    *n = (window_s + *width - 1) / *width;
}


/*
 * Runs in Redis so that every nginx node shares one clock (TIME) and one
 * atomic read-modify-write per request; mirrors psd_rate_gcra() exactly.
 */
const char  psd_rate_gcra_script[] =
    "-- psd GCRA, as redis-cell's CL.THROTTLE.  KEYS[1]: the limit's key.\n"
    "-- ARGV: interval_us, burst, cost [, now_us for tests].\n"
    "-- Returns {allowed, remaining, retry_after_ms, reset_after_ms}.\n"
    "-- decimal digits only: tonumber() would take '0x1f', '1e3', ' 7'\n"
    "local function int(v, lo, hi)\n"
    "  if type(v) ~= 'string' or not string.find(v, '^%d+$') then\n"
    "    return nil\n"
    "  end\n"
    "  local n = tonumber(v)\n"
    "  if n < lo or n > hi then\n"
    "    return nil\n"
    "  end\n"
    "  return n\n"
    "end\n"
    "-- values stay below 2^53, so fmod keeps the integer division exact\n"
    "local function ceil_ms(us)\n"
    "  local r = math.fmod(us, 1000)\n"
    "  if r == 0 then\n"
    "    return us / 1000\n"
    "  end\n"
    "  return (us - r) / 1000 + 1\n"
    "end\n"
    "local span = 1125899906842624\n"
    "local interval = int(ARGV[1], 1, span)\n"
    "local burst = int(ARGV[2], 0, span)\n"
    "local cost = int(ARGV[3], 0, span)\n"
    "if interval == nil or burst == nil or cost == nil\n"
    "  or interval * (burst + 1) > span or interval * cost > span then\n"
    "  return redis.error_reply('ERR psd gcra: bad arguments')\n"
    "end\n"
    "local now\n"
    "if ARGV[4] ~= nil and ARGV[4] ~= '' then\n"
    "  now = int(ARGV[4], 0, 4503599627370496)\n"
    "  if now == nil then\n"
    "    return redis.error_reply('ERR psd gcra: bad now')\n"
    "  end\n"
    "else\n"
    "  if redis.replicate_commands then\n"
    "    redis.replicate_commands()\n"
    "  end\n"
    "  local t = redis.call('TIME')\n"
    "  now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "end\n"
    "local dvt = interval * (burst + 1)\n"
    "local inc = interval * cost\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]))\n"
    "if tat == nil or tat < now then\n"
    "  tat = now\n"
    "end\n"
    "local new_tat = tat + inc\n"
    "local allow_at = new_tat - dvt\n"
    "local allowed, retry, ttl = 1, -1, 0\n"
    "if allow_at > now then\n"
    "  allowed = 0\n"
    "  if inc <= dvt then\n"
    "    retry = ceil_ms(allow_at - now)\n"
    "  end\n"
    "  ttl = tat - now\n"
    "else\n"
    "  ttl = new_tat - now\n"
    "  if inc > 0 then\n"
    "    redis.call('SET', KEYS[1], string.format('%.0f', new_tat),\n"
    "               'PX', string.format('%.0f', ceil_ms(ttl)))\n"
    "  end\n"
    "end\n"
    "local rest = dvt - ttl\n"
    "local remaining = 0\n"
    "if rest > 0 then\n"
    "  remaining = (rest - math.fmod(rest, interval)) / interval\n"
    "end\n"
    "return {allowed, remaining, retry, ceil_ms(ttl)}\n";


/*
 * Counts: ~60 buckets in a hash per key, a field per bucket, so memory
 * stays bounded whatever the request rate, and the window never misses an
 * event younger than window_s (it may count one up to a bucket older).
 * Distinct: a sorted set of members scored by last sight, trimmed to the
 * window and capped to the most recent members, so it is exact below the
 * cap.  See docs/rules.md.
 */
const char  psd_rate_window_script[] =
    "-- psd fraud counters of one hash-tag group.  KEYS[i]: rule i's counter.\n"
    "-- ARGV[1]: now_us, '' for TIME; ARGV[2]: distinct cap; then per key:\n"
    "-- kind (c count, s sum, d distinct), window_s, arg (c, s: what to add,\n"
    "-- 0 peeks; d: the member, '' peeks).  Returns each counter's value.\n"
    "-- decimal digits only: tonumber() would take '0x1f', '1e3', ' 7'\n"
    "local function int(v, lo, hi)\n"
    "  if type(v) ~= 'string' or not string.find(v, '^%d+$') then\n"
    "    return nil\n"
    "  end\n"
    "  local n = tonumber(v)\n"
    "  if n < lo or n > hi then\n"
    "    return nil\n"
    "  end\n"
    "  return n\n"
    "end\n"
    "local function str(n)\n"
    "  return string.format('%.0f', n)\n"
    "end\n"
    "local cap = int(ARGV[2], 1, 1000000)\n"
    "if cap == nil or #ARGV ~= 2 + 3 * #KEYS then\n"
    "  return redis.error_reply('ERR psd window: bad arguments')\n"
    "end\n"
    "local now\n"
    "if ARGV[1] ~= '' then\n"
    "  now = int(ARGV[1], 0, 4503599627370496)\n"
    "  if now == nil then\n"
    "    return redis.error_reply('ERR psd window: bad now')\n"
    "  end\n"
    "else\n"
    "  if redis.replicate_commands then\n"
    "    redis.replicate_commands()\n"
    "  end\n"
    "  local t = redis.call('TIME')\n"
    "  now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "end\n"
    "local out = {}\n"
    "for i = 1, #KEYS do\n"
    "  local key, kind, arg = KEYS[i], ARGV[3 * i], ARGV[3 * i + 2]\n"
    "  local window = int(ARGV[3 * i + 1], 1, 31622400)\n"
    "  if window == nil then\n"
    "    return redis.error_reply('ERR psd window: bad window')\n"
    "  end\n"
    "  if kind == 'd' then\n"
    "    -- members scored by when they were last seen: exact over the window\n"
    "    local from = now - window * 1000000\n"
    "    redis.call('ZREMRANGEBYSCORE', key, '-inf', str(from))\n"
    "    if arg ~= '' then\n"
    "      redis.call('ZADD', key, str(now), arg)\n"
    "      local n = redis.call('ZCARD', key)\n"
    "      if n > cap then\n"
    "        redis.call('ZREMRANGEBYRANK', key, 0, n - cap - 1)\n"
    "      end\n"
    "      redis.call('PEXPIRE', key, window * 1000)\n"
    "    end\n"
    "    out[i] = redis.call('ZCARD', key)\n"
    "  elseif kind == 'c' or kind == 's' then\n"
    "    local add = int(arg, 0, 9007199254740991)\n"
    "    if add == nil then\n"
    "      return redis.error_reply('ERR psd window: bad amount')\n"
    "    end\n"
    "    -- about 60 buckets per window; see psd_rate_window_buckets()\n"
    "    local width = math.floor((window + 59) / 60)\n"
    "    local n = math.floor((window + width - 1) / width)\n"
    "    local wus = width * 1000000\n"
    "    local cur = (now - math.fmod(now, wus)) / wus\n"
    "    if add > 0 then\n"
    "      redis.call('HINCRBY', key, str(cur), str(add))\n"
    "      redis.call('PEXPIRE', key, (n + 1) * width * 1000)\n"
    "    end\n"
    "    local h = redis.call('HGETALL', key)\n"
    "    local total, old = 0, {}\n"
    "    for j = 1, #h, 2 do\n"
    "      local b = tonumber(h[j])\n"
    "      if b == nil or b < cur - n then\n"
    "        old[#old + 1] = h[j]\n"
    "      else\n"
    "        total = total + tonumber(h[j + 1])\n"
    "      end\n"
    "    end\n"
    "    if #old > 0 then\n"
    "      redis.call('HDEL', key, unpack(old))\n"
    "    end\n"
    "    out[i] = total\n"
    "  else\n"
    "    return redis.error_reply('ERR psd window: bad kind')\n"
    "  end\n"
    "end\n"
    "return out\n";
