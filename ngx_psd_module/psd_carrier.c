/*
 * Copyright (C) ngx_psd_module authors
 */

#include <stdio.h>
#include <string.h>

#include "psd_b64.h"
#include "psd_carrier.h"
#include "psd_crypto.h"


/* 2^38 > PSD_CARRIER_TIME_MAX: a time fits 38 bits of a rank */
#define RANK_TIME_SPAN   (INT64_C(1) << 38)
#define RANK_CLASS_UNIT  (INT64_C(1) << 42)

/* Unix seconds: 12 digits reach PSD_CARRIER_TIME_MAX */
#define UNIX_DIGITS_MAX  12


static const char  *state_names[] = {
    "label_created",
    "shipped",
    "in_transit",
    "out_for_delivery",
    "exception",
    "delivered",
    "returned",
    "ignore",
    "unknown"
};


static const char  *errors[] = {
    "ok",
    "empty_body",
    "invalid_json",
    "missing_order",
    "invalid_order",
    "invalid_tracking",
    "missing_status",
    "invalid_status",
    "missing_time",
    "invalid_time",
    "missing_event_id",
    "invalid_event_id",
    "internal_error"
};


const char *
psd_carrier_strerror(psd_carrier_rc_e rc)
{
    return (size_t) rc < sizeof(errors) / sizeof(errors[0])
           ? errors[rc] : "internal_error";
}


const char *
psd_carrier_state_name(int state)
{
    return state >= 0 && state <= PSD_CARRIER_UNKNOWN
           ? state_names[state] : "unknown";
}


int
psd_carrier_state_by_name(const char *name, size_t len)
{
    int  i;

    for (i = 0; i <= PSD_CARRIER_IGNORE; i++) {
        if (strlen(state_names[i]) == len
            && memcmp(state_names[i], name, len) == 0)
        {
            return i;
        }
    }

    return -1;
}


static char
lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char) (c - 'A' + 'a') : c;
}


static int
caseless_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t  i;

    if (alen != blen) {
        return 0;
    }

    for (i = 0; i < alen; i++) {
        if (lower(a[i]) != lower(b[i])) {
            return 0;
        }
    }

    return 1;
}


/* "In Transit", "in-transit", "InTransit" against "in_transit" */
static int
loose_equal(const char *value, size_t len, const char *name)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (value[i] == '_' || value[i] == '-' || value[i] == ' ') {
            continue;
        }

        while (*name == '_') {
            name++;
        }

        if (*name == '\0' || lower(value[i]) != *name) {
            return 0;
        }

        name++;
    }

    while (*name == '_') {
        name++;
    }

    return *name == '\0';
}


int
psd_carrier_state(const psd_carrier_map_t *map, size_t nmap,
    const char *value, size_t len)
{
    int     i;
    size_t  k;

    for (k = 0; k < nmap; k++) {
        if (caseless_equal(map[k].value, map[k].len, value, len)) {
            return map[k].state;
        }
    }

    for (i = 0; i < PSD_CARRIER_NSTATES; i++) {
        if (loose_equal(value, len, state_names[i])) {
            return i;
        }
    }

    return PSD_CARRIER_UNKNOWN;
}


/* time */

static int
digits(const char *s, size_t n, int *out)
{
    size_t  i;
    int     v = 0;

    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }

    *out = v;

    return 0;
}


/* days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant) */
static int64_t
days_from_civil(int64_t y, int64_t m, int64_t d)
{
    int64_t  era, yoe, doy, doe;

    y -= (m <= 2);
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}


static int
days_in_month(int y, int m)
{
    static const int  days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31,
                                 30, 31 };

    if (m == 2 && (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))) {
        return 29;
    }

    return days[m - 1];
}


static int
rfc3339(const char *s, size_t len, int64_t *t)
{
    int      y, mo, d, h, mi, sec, oh, om, sign;
    size_t   i;
    int64_t  v;

    /* "YYYY-MM-DDTHH:MM:SS" and at least "Z" */
    if (len < 20 || s[4] != '-' || s[7] != '-'
        || (s[10] != 'T' && s[10] != 't' && s[10] != ' ')
        || s[13] != ':' || s[16] != ':'
        || digits(s, 4, &y) != 0 || digits(s + 5, 2, &mo) != 0
        || digits(s + 8, 2, &d) != 0 || digits(s + 11, 2, &h) != 0
        || digits(s + 14, 2, &mi) != 0 || digits(s + 17, 2, &sec) != 0)
    {
        return -1;
    }

    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23
        || mi > 59 || sec > 60)
    {
        return -1;
    }

    i = 19;

    /* a fraction of a second counts for nothing */
    if (s[i] == '.') {
        i++;

        if (i == len || s[i] < '0' || s[i] > '9') {
            return -1;
        }

        while (i < len && s[i] >= '0' && s[i] <= '9') {
            i++;
        }
    }

    if (i == len) {
        return -1;
    }

    if (s[i] == 'Z' || s[i] == 'z') {
        if (i + 1 != len) {
            return -1;
        }

        sign = 0;
        oh = 0;
        om = 0;

    } else if (s[i] == '+' || s[i] == '-') {
        if (len - i != 6 || s[i + 3] != ':'
            || digits(s + i + 1, 2, &oh) != 0
            || digits(s + i + 4, 2, &om) != 0 || oh > 23 || om > 59)
        {
            return -1;
        }

        sign = (s[i] == '+') ? 1 : -1;

    } else {
        return -1;
    }

    v = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec
        - sign * (oh * 3600 + om * 60);

    if (v < 0 || v > PSD_CARRIER_TIME_MAX) {
        return -1;
    }

    *t = v;

    return 0;
}


int
psd_carrier_time_parse(const char *s, size_t len, int64_t *t)
{
    size_t   i;
    int64_t  v;

    if (s == NULL || len == 0) {
        return -1;
    }

    if (len >= 20 && s[4] == '-') {
        return rfc3339(s, len, t);
    }

    v = 0;

    for (i = 0; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        if (i == UNIX_DIGITS_MAX) {
            return -1;
        }

        v = v * 10 + (s[i] - '0');
    }

    if (i == 0) {
        return -1;
    }

    if (i < len) {
        if (s[i] != '.' || i + 1 == len) {
            return -1;
        }

        for (i++; i < len; i++) {
            if (s[i] < '0' || s[i] > '9') {
                return -1;
            }
        }
    }

    if (v > PSD_CARRIER_TIME_MAX) {
        return -1;
    }

    *t = v;

    return 0;
}


size_t
psd_carrier_rank(int state, int64_t t, char *out)
{
    int      n;
    int64_t  cls, r;
    char     buf[32];

    if (state < 0 || state >= PSD_CARRIER_NSTATES || t < 0
        || t > PSD_CARRIER_TIME_MAX)
    {
        return 0;
    }

    cls = (state == PSD_CARRIER_RETURNED) ? 2
          : (state == PSD_CARRIER_DELIVERED) ? 1 : 0;

    /* the journey's end: its first report counts */
    r = cls * RANK_CLASS_UNIT
        + (cls ? RANK_TIME_SPAN - 1 - t : t) * PSD_CARRIER_NSTATES + state;

    n = snprintf(buf, sizeof(buf), "%lld", (long long) r);
    if (n <= 0 || n > PSD_CARRIER_RANK_LEN) {
        return 0;
    }

    memcpy(out, buf, (size_t) n);

    return (size_t) n;
}


/* fields */

static int
all_in(const char *s, size_t len, unsigned char lo, unsigned char hi)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if ((unsigned char) s[i] < lo || (unsigned char) s[i] > hi) {
            return 0;
        }
    }

    return 1;
}


/* a JSON number that is a non-negative integer: "0", "42", not "4.2" */
static int
is_natural(const char *s, size_t len)
{
    return len > 0 && all_in(s, len, '0', '9') && (len == 1 || s[0] != '0');
}


static int
is_order_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'
           || c == ':';
}


static psd_carrier_rc_e
check_order(const psd_json_match_t *m)
{
    size_t  i;

    if (m == NULL || m->type == PSD_JSON_NULL) {
        return PSD_CARRIER_MISSING_ORDER;
    }

    if (m->type == PSD_JSON_NUMBER) {
        return is_natural(m->value, m->value_len)
               && m->value_len <= PSD_CARRIER_ORDER_MAX
               ? PSD_CARRIER_OK : PSD_CARRIER_INVALID_ORDER;
    }

    if (m->type != PSD_JSON_STRING || m->value_len == 0
        || m->value_len > PSD_CARRIER_ORDER_MAX)
    {
        return PSD_CARRIER_INVALID_ORDER;
    }

    for (i = 0; i < m->value_len; i++) {
        if (!is_order_char(m->value[i])) {
            return PSD_CARRIER_INVALID_ORDER;
        }
    }

    return PSD_CARRIER_OK;
}


/*
 * A string of printable ASCII (lo ' ', or '!' for no spaces) or a number
 * (natural: a non-negative integer only).  1 ok, 0 absent, -1 invalid.
 */
static int
check_text(const psd_json_match_t *m, size_t max, unsigned char lo,
    int natural)
{
    if (m == NULL || m->type == PSD_JSON_NULL) {
        return 0;
    }

    if (m->type == PSD_JSON_NUMBER) {
        return (!natural || is_natural(m->value, m->value_len))
               && m->value_len <= max ? 1 : -1;
    }

    return m->type == PSD_JSON_STRING && m->value_len >= 1
           && m->value_len <= max && all_in(m->value, m->value_len, lo, '~')
           ? 1 : -1;
}


static int
check_time(const psd_json_match_t *m, int64_t *t)
{
    if (m == NULL || m->type == PSD_JSON_NULL) {
        return 0;
    }

    if (m->type != PSD_JSON_STRING && m->type != PSD_JSON_NUMBER) {
        return -1;
    }

    return psd_carrier_time_parse(m->value, m->value_len, t) == 0 ? 1 : -1;
}


static int
same_path(const psd_path_t *a, const psd_path_t *b)
{
    size_t  i;

    if (a->nsegs != b->nsegs) {
        return 0;
    }

    for (i = 0; i < a->nsegs; i++) {
        if (a->segs[i].len != b->segs[i].len
            || memcmp(a->segs[i].data, b->segs[i].data, a->segs[i].len) != 0)
        {
            return 0;
        }
    }

    return 1;
}


/* "h:" and 16 bytes of SHA-256 over the length-prefixed parts, base64url */
static int
digest_id(const psd_carrier_conf_t *conf, psd_carrier_event_t *ev)
{
    int            n;
    size_t         i, len;
    const char    *part[4];
    size_t         plen[4];
    char           buf[512], num[24];
    unsigned char  md[PSD_SHA256_LEN];

    n = snprintf(num, sizeof(num), "%lld", (long long) ev->time);
    if (n <= 0) {
        return -1;
    }

    part[0] = conf->carrier ? conf->carrier : "";
    plen[0] = conf->carrier ? conf->carrier_len : 0;
    part[1] = ev->value[PSD_CARRIER_TRACKING];
    plen[1] = ev->len[PSD_CARRIER_TRACKING];
    part[2] = ev->value[PSD_CARRIER_STATUS];
    plen[2] = ev->len[PSD_CARRIER_STATUS];
    part[3] = num;
    plen[3] = (size_t) n;

    len = 0;

    for (i = 0; i < 4; i++) {
        if (plen[i] > 100 || len + plen[i] + 8 > sizeof(buf)) {
            return -1;
        }

        len += (size_t) snprintf(buf + len, sizeof(buf) - len, "%zu:",
                                 plen[i]);
        if (plen[i]) {
            memcpy(buf + len, part[i], plen[i]);
        }
        len += plen[i];
    }

    if (psd_sha256((unsigned char *) buf, len, md) != 0) {
        return -1;
    }

    ev->digest_id[0] = 'h';
    ev->digest_id[1] = ':';
    psd_b64url_encode(ev->digest_id + 2, md, 16);
    ev->digest_id[PSD_CARRIER_DIGEST_ID_LEN] = '\0';

    return 0;
}


psd_carrier_rc_e
psd_carrier_parse(const psd_carrier_conf_t *conf, const unsigned char *body,
    size_t len, psd_carrier_work_t *work, psd_carrier_event_t *ev)
{
    int                       rc;
    size_t                    i, k, npaths;
    psd_json_ctx_t            jctx;
    psd_json_conf_t           jconf;
    psd_carrier_rc_e          crc;
    const psd_json_match_t   *m[PSD_CARRIER_NFIELDS];
    psd_path_t                paths[PSD_CARRIER_NFIELDS];
    size_t                    path_of[PSD_CARRIER_NFIELDS];
    psd_json_match_t          matches[PSD_CARRIER_NFIELDS];

    memset(ev, 0, sizeof(psd_carrier_event_t));
    ev->state = PSD_CARRIER_UNKNOWN;
    ev->json_rc = PSD_JSON_OK;

    if (conf == NULL || work == NULL
        || conf->paths[PSD_CARRIER_ORDER] == NULL
        || conf->paths[PSD_CARRIER_STATUS] == NULL
        || conf->paths[PSD_CARRIER_TIME] == NULL
        || work->dec_size < len + PSD_CARRIER_NFIELDS
        || (conf->map == NULL && conf->nmap > 0))
    {
        return PSD_CARRIER_ERROR;
    }

    if (len == 0) {
        return PSD_CARRIER_EMPTY_BODY;
    }

    /* one scan for all fields; fields that share a path share its match */

    npaths = 0;

    for (k = 0; k < PSD_CARRIER_NFIELDS; k++) {
        path_of[k] = (size_t) -1;

        if (conf->paths[k] == NULL) {
            continue;
        }

        if (conf->paths[k]->nsegs == 0
            || conf->paths[k]->nsegs > PSD_PATH_SEGS_MAX)
        {
            return PSD_CARRIER_ERROR;
        }

        for (i = 0; i < conf->paths[k]->nsegs; i++) {
            /* one value per field */
            if (conf->paths[k]->segs[i].wildcard) {
                return PSD_CARRIER_ERROR;
            }
        }

        for (i = 0; i < npaths; i++) {
            if (same_path(&paths[i], conf->paths[k])) {
                break;
            }
        }

        if (i == npaths) {
            paths[npaths++] = *conf->paths[k];
        }

        path_of[k] = i;
    }

    memset(&jconf, 0, sizeof(psd_json_conf_t));
    jconf.paths = paths;
    jconf.npaths = npaths;
    jconf.hash_key = conf->hash_key;

    memset(&jctx, 0, sizeof(psd_json_ctx_t));
    jctx.matches = matches;
    jctx.max_matches = PSD_CARRIER_NFIELDS;
    jctx.dec = work->dec;
    jctx.dec_size = work->dec_size;
    jctx.slots = work->slots;
    jctx.nslots = work->nslots;

    ev->json_rc = psd_json_scan(&jconf, body, len, &jctx);

    if (ev->json_rc == PSD_JSON_ERROR) {
        return PSD_CARRIER_ERROR;
    }

    if (ev->json_rc != PSD_JSON_OK) {
        return PSD_CARRIER_INVALID_JSON;
    }

    for (k = 0; k < PSD_CARRIER_NFIELDS; k++) {
        m[k] = NULL;

        for (i = 0; path_of[k] != (size_t) -1 && i < jctx.nmatches; i++) {
            if (matches[i].path_index == path_of[k]) {
                m[k] = &matches[i];
                break;
            }
        }

        if (m[k] && m[k]->value) {
            ev->value[k] = m[k]->value;
            ev->len[k] = m[k]->value_len;
        }
    }

    crc = check_order(m[PSD_CARRIER_ORDER]);
    if (crc != PSD_CARRIER_OK) {
        return crc;
    }

    rc = check_text(m[PSD_CARRIER_TRACKING], PSD_CARRIER_TRACKING_MAX, ' ',
                    1);
    if (rc < 0) {
        return PSD_CARRIER_INVALID_TRACKING;
    }

    if (rc == 0) {
        ev->value[PSD_CARRIER_TRACKING] = NULL;
        ev->len[PSD_CARRIER_TRACKING] = 0;
    }

    rc = check_text(m[PSD_CARRIER_STATUS], PSD_CARRIER_STATUS_MAX, ' ', 0);
    if (rc <= 0) {
        return rc == 0 ? PSD_CARRIER_MISSING_STATUS
                       : PSD_CARRIER_INVALID_STATUS;
    }

    rc = check_time(m[PSD_CARRIER_TIME], &ev->time);
    if (rc <= 0) {
        return rc == 0 ? PSD_CARRIER_MISSING_TIME : PSD_CARRIER_INVALID_TIME;
    }

    if (conf->paths[PSD_CARRIER_EVENT_ID]) {
        rc = check_text(m[PSD_CARRIER_EVENT_ID], PSD_CARRIER_EVENT_ID_MAX,
                        '!', 1);
        if (rc <= 0) {
            return rc == 0 ? PSD_CARRIER_MISSING_EVENT_ID
                           : PSD_CARRIER_INVALID_EVENT_ID;
        }

    } else {
        if (digest_id(conf, ev) != 0) {
            return PSD_CARRIER_ERROR;
        }

        ev->value[PSD_CARRIER_EVENT_ID] = ev->digest_id;
        ev->len[PSD_CARRIER_EVENT_ID] = PSD_CARRIER_DIGEST_ID_LEN;
    }

    ev->state = psd_carrier_state(conf->map, conf->nmap,
                                  ev->value[PSD_CARRIER_STATUS],
                                  ev->len[PSD_CARRIER_STATUS]);

    return PSD_CARRIER_OK;
}


/* signatures */

static int
unhex(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c = lower(c);

    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}


psd_webhook_status_e
psd_carrier_hmac_verify(const char *header, size_t header_len,
    const char *prefix, size_t prefix_len, psd_carrier_encoding_e encoding,
    const unsigned char *body, size_t body_len,
    const psd_webhook_secret_t *secrets, size_t nsecrets)
{
    int            hi, lo, match;
    long           n;
    size_t         i, len;
    const char    *sig;
    unsigned char  want[PSD_SHA256_LEN], mac[PSD_SHA256_LEN];
    unsigned char  dec[PSD_SHA256_LEN + 3];

    if (header == NULL) {
        return PSD_WEBHOOK_MISSING_HEADER;
    }

    if ((prefix == NULL && prefix_len > 0) || (secrets == NULL && nsecrets)
        || (body == NULL && body_len > 0))
    {
        return PSD_WEBHOOK_ERROR;
    }

    if (header_len < prefix_len
        || !caseless_equal(header, prefix_len, prefix, prefix_len))
    {
        return PSD_WEBHOOK_MALFORMED_HEADER;
    }

    sig = header + prefix_len;
    len = header_len - prefix_len;

    if (encoding == PSD_CARRIER_HEX) {
        if (len != 2 * PSD_SHA256_LEN) {
            return PSD_WEBHOOK_MALFORMED_HEADER;
        }

        for (i = 0; i < PSD_SHA256_LEN; i++) {
            hi = unhex(sig[2 * i]);
            lo = unhex(sig[2 * i + 1]);

            if (hi < 0 || lo < 0) {
                return PSD_WEBHOOK_MALFORMED_HEADER;
            }

            want[i] = (unsigned char) (hi << 4 | lo);
        }

    } else {
        /* padded base64 of 32 bytes */
        if (len != 44) {
            return PSD_WEBHOOK_MALFORMED_HEADER;
        }

        n = psd_b64_decode(dec, sig, len);
        if (n != PSD_SHA256_LEN) {
            return PSD_WEBHOOK_MALFORMED_HEADER;
        }

        memcpy(want, dec, PSD_SHA256_LEN);
    }

    match = 0;

    for (i = 0; i < nsecrets; i++) {
        if (psd_hmac_sha256(secrets[i].data, secrets[i].len, body, body_len,
                            mac)
            != 0)
        {
            psd_cleanse(mac, sizeof(mac));
            return PSD_WEBHOOK_ERROR;
        }

        match |= psd_ct_equal(mac, want, PSD_SHA256_LEN);
    }

    psd_cleanse(mac, sizeof(mac));

    return match ? PSD_WEBHOOK_OK : PSD_WEBHOOK_BAD_SIGNATURE;
}


psd_webhook_status_e
psd_carrier_shared_verify(const char *header, size_t header_len,
    const psd_webhook_secret_t *secrets, size_t nsecrets)
{
    int            match;
    size_t         i;
    unsigned char  got[PSD_SHA256_LEN], want[PSD_SHA256_LEN];

    if (header == NULL) {
        return PSD_WEBHOOK_MISSING_HEADER;
    }

    if (secrets == NULL && nsecrets) {
        return PSD_WEBHOOK_ERROR;
    }

    if (psd_sha256((const unsigned char *) header, header_len, got) != 0) {
        return PSD_WEBHOOK_ERROR;
    }

    match = 0;

    for (i = 0; i < nsecrets; i++) {
        if (psd_sha256(secrets[i].data, secrets[i].len, want) != 0) {
            psd_cleanse(want, sizeof(want));
            return PSD_WEBHOOK_ERROR;
        }

        match |= psd_ct_equal(got, want, PSD_SHA256_LEN);
    }

    psd_cleanse(want, sizeof(want));

    return match ? PSD_WEBHOOK_OK : PSD_WEBHOOK_BAD_SIGNATURE;
}


size_t
psd_carrier_hmac_sign(const unsigned char *secret, size_t secret_len,
    const unsigned char *body, size_t body_len,
    psd_carrier_encoding_e encoding, char *out)
{
    size_t         i;
    unsigned char  mac[PSD_SHA256_LEN];

    static const char  hexdigits[] = "0123456789abcdef";

    if (psd_hmac_sha256(secret, secret_len, body, body_len, mac) != 0) {
        return 0;
    }

    if (encoding == PSD_CARRIER_BASE64) {
        i = psd_b64_encode(out, mac, PSD_SHA256_LEN);

    } else {
        for (i = 0; i < PSD_SHA256_LEN; i++) {
            out[2 * i] = hexdigits[mac[i] >> 4];
            out[2 * i + 1] = hexdigits[mac[i] & 0x0f];
        }

        i = 2 * PSD_SHA256_LEN;
    }

    psd_cleanse(mac, sizeof(mac));

    return i;
}
