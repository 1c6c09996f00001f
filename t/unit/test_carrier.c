/*
 * Unit tests: carrier events (psd_carrier.c): event times, status mapping,
 * the rank that orders states (and that any order of arrival gives the
 * same state), field extraction from two carrier payload shapes with every
 * error code, dedupe ids, and HMAC and shared-secret verification.
 */

#include <stdlib.h>

#include "tap.h"
#include "psd_carrier.h"


#define NSLOTS  64


typedef struct {
    psd_path_t          paths[PSD_CARRIER_NFIELDS];
    psd_carrier_conf_t  conf;
} carrier_t;


static void
carrier_init(carrier_t *c, const char *const *texts,
    const psd_carrier_map_t *map, size_t nmap, const char *name)
{
    size_t  k;

    memset(c, 0, sizeof(carrier_t));

    for (k = 0; k < PSD_CARRIER_NFIELDS; k++) {
        if (texts[k] == NULL) {
            continue;
        }

        if (psd_path_parse(texts[k], strlen(texts[k]), &c->paths[k]) != 0) {
            ok(0, "path \"%s\" parses", texts[k]);
            continue;
        }

        c->conf.paths[k] = &c->paths[k];
    }

    c->conf.map = map;
    c->conf.nmap = nmap;
    c->conf.carrier = name;
    c->conf.carrier_len = strlen(name);
}


static psd_carrier_rc_e
parse(const carrier_t *c, const char *body, psd_carrier_event_t *ev)
{
    size_t               len = strlen(body);
    psd_carrier_rc_e     rc;
    psd_carrier_work_t   w;
    static char          dec[8192];
    static psd_json_slot_t  slots[NSLOTS];

    w.dec = dec;
    w.dec_size = len + PSD_CARRIER_NFIELDS;
    w.slots = slots;
    w.nslots = NSLOTS;

    if (w.dec_size > sizeof(dec)) {
        return PSD_CARRIER_ERROR;
    }

    rc = psd_carrier_parse(&c->conf, (const unsigned char *) body, len, &w,
                           ev);

    return rc;
}


static char *
field(const psd_carrier_event_t *ev, int k)
{
    static char  buf[PSD_CARRIER_NFIELDS][256];

    if (ev->value[k] == NULL) {
        return NULL;
    }

    snprintf(buf[k], sizeof(buf[k]), "%.*s", (int) ev->len[k],
             ev->value[k]);

    return buf[k];
}


static void
test_time(void)
{
    size_t   i;
    int64_t  t;

    static const struct {
        const char  *in;
        int64_t      want;       /* -1: refused */
    } v[] = {
        { "1970-01-01T00:00:00Z", 0 },
        { "2026-03-01T09:30:00Z", 1772357400 },
        { "2026-03-01T10:30:00+01:00", 1772357400 },
        { "2026-03-01T04:00:00-05:30", 1772357400 },
        { "2026-03-01T09:30:00.250Z", 1772357400 },
        { "2026-03-01T09:30:00.999999999+00:00", 1772357400 },
        { "2026-03-01t09:30:00z", 1772357400 },
        { "2026-03-01 09:30:00Z", 1772357400 },
        { "2024-02-29T00:00:00Z", 1709164800 },
        { "2000-02-29T12:00:00Z", 951825600 },
        { "2016-12-31T23:59:60Z", 1483228800 },
        { "1999-12-31T23:59:59Z", 946684799 },
        { "9999-12-31T23:59:59Z", PSD_CARRIER_TIME_MAX },
        { "9999-12-31T23:59:59-00:01", -1 },
        { "1969-12-31T23:59:59Z", -1 },
        { "1970-01-01T00:30:00+01:00", -1 },
        { "2023-02-29T00:00:00Z", -1 },
        { "1900-02-29T00:00:00Z", -1 },
        { "2026-04-31T00:00:00Z", -1 },
        { "2026-13-01T00:00:00Z", -1 },
        { "2026-00-10T00:00:00Z", -1 },
        { "2026-03-00T00:00:00Z", -1 },
        { "2026-03-01T24:00:00Z", -1 },
        { "2026-03-01T09:60:00Z", -1 },
        { "2026-03-01T09:30:61Z", -1 },
        { "2026-03-01T09:30:00", -1 },
        { "2026-03-01T09:30:00+01", -1 },
        { "2026-03-01T09:30:00+0100", -1 },
        { "2026-03-01T09:30:00+24:00", -1 },
        { "2026-03-01T09:30:00+01:60", -1 },
        { "2026-03-01T09:30:00.Z", -1 },
        { "2026-03-01T09:30:00Z ", -1 },
        { "2026-03-01T09:30:00ZZ", -1 },
        { "2026-3-01T09:30:00Z", -1 },
        { "2026-03-01X09:30:00Z", -1 },
        { "+026-03-01T09:30:00Z", -1 },
        { "2026-03-01", -1 },
        { "1767312000", 1767312000 },
        { "1767312000.75", 1767312000 },
        { "0", 0 },
        { "253402300799", PSD_CARRIER_TIME_MAX },
        { "253402300800", -1 },
        { "1767312000000", -1 },
        { "-5", -1 },
        { "17e8", -1 },
        { "1767312000.", -1 },
        { ".5", -1 },
        { " 1767312000", -1 },
        { "1767312000 ", -1 },
        { "", -1 },
    };

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        t = -7;

        if (v[i].want < 0) {
            ok(psd_carrier_time_parse(v[i].in, strlen(v[i].in), &t) == -1
               && t == -7, "time \"%s\" refused", v[i].in);

        } else {
            ok(psd_carrier_time_parse(v[i].in, strlen(v[i].in), &t) == 0,
               "time \"%s\" parses", v[i].in);
            is_int(t, v[i].want, "time \"%s\"", v[i].in);
        }
    }

    ok(psd_carrier_time_parse(NULL, 0, &t) == -1, "time NULL refused");
    ok(psd_carrier_time_parse("2026-03-01T09:30:00Z", 19, &t) == -1,
       "a cut time is refused");
}


static void
test_states(void)
{
    int  s;

    static const psd_carrier_map_t  map[] = {
        { "PU", 2, PSD_CARRIER_SHIPPED },
        { "attempt_fail", 12, PSD_CARRIER_EXCEPTION },
        { "InfoReceived", 12, PSD_CARRIER_IGNORE },
        { "delivered", 9, PSD_CARRIER_RETURNED },
    };

    is_int(psd_carrier_state(map, 4, "PU", 2), PSD_CARRIER_SHIPPED,
           "mapped status");
    is_int(psd_carrier_state(map, 4, "pu", 2), PSD_CARRIER_SHIPPED,
           "mapped status, other case");
    is_int(psd_carrier_state(map, 4, "ATTEMPT_FAIL", 12),
           PSD_CARRIER_EXCEPTION, "mapped status, upper case");
    is_int(psd_carrier_state(map, 4, "attempt-fail", 12),
           PSD_CARRIER_UNKNOWN, "the map compares whole values");
    is_int(psd_carrier_state(map, 4, "PU ", 3), PSD_CARRIER_UNKNOWN,
           "no trimming");
    is_int(psd_carrier_state(map, 4, "inforeceived", 12),
           PSD_CARRIER_IGNORE, "ignore");
    is_int(psd_carrier_state(map, 4, "Delivered", 9), PSD_CARRIER_RETURNED,
           "the map comes before the state names");
    is_int(psd_carrier_state(NULL, 0, "Delivered", 9),
           PSD_CARRIER_DELIVERED, "a state name");
    is_int(psd_carrier_state(NULL, 0, "in_transit", 10),
           PSD_CARRIER_IN_TRANSIT, "in_transit");
    is_int(psd_carrier_state(NULL, 0, "InTransit", 9),
           PSD_CARRIER_IN_TRANSIT, "InTransit");
    is_int(psd_carrier_state(NULL, 0, "IN-TRANSIT", 10),
           PSD_CARRIER_IN_TRANSIT, "IN-TRANSIT");
    is_int(psd_carrier_state(NULL, 0, "Out For Delivery", 16),
           PSD_CARRIER_OUT_FOR_DELIVERY, "Out For Delivery");
    is_int(psd_carrier_state(NULL, 0, "LabelCreated", 12),
           PSD_CARRIER_LABEL_CREATED, "LabelCreated");
    is_int(psd_carrier_state(NULL, 0, "in_transit_", 11),
           PSD_CARRIER_IN_TRANSIT, "a trailing '_' is dropped too");
    is_int(psd_carrier_state(NULL, 0, "in_transi", 9), PSD_CARRIER_UNKNOWN,
           "a prefix is unknown");
    is_int(psd_carrier_state(NULL, 0, "in_transits", 11),
           PSD_CARRIER_UNKNOWN, "a longer word is unknown");
    is_int(psd_carrier_state(NULL, 0, "", 0), PSD_CARRIER_UNKNOWN,
           "empty is unknown");
    is_int(psd_carrier_state(NULL, 0, "___", 3), PSD_CARRIER_UNKNOWN,
           "only separators is unknown");
    is_int(psd_carrier_state(NULL, 0, "ignore", 6), PSD_CARRIER_UNKNOWN,
           "\"ignore\" is no state name");

    for (s = 0; s <= PSD_CARRIER_IGNORE; s++) {
        is_int(psd_carrier_state_by_name(psd_carrier_state_name(s),
                                         strlen(psd_carrier_state_name(s))),
               s, "state %s by name", psd_carrier_state_name(s));
    }

    is_int(psd_carrier_state_by_name("unknown", 7), -1,
           "\"unknown\" is not configurable");
    is_int(psd_carrier_state_by_name("Delivered", 9), -1,
           "names are exact");
    is_str(psd_carrier_state_name(-1), "unknown", "a bad state's name");
    is_str(psd_carrier_state_name(99), "unknown", "a bad state's name");
}


static int64_t
rank(int state, int64_t t)
{
    char    buf[PSD_CARRIER_RANK_LEN + 1];
    size_t  n;

    n = psd_carrier_rank(state, t, buf);
    if (n == 0) {
        return -1;
    }

    buf[n] = '\0';

    return strtoll(buf, NULL, 10);
}


/* the state the same events leave, applied in the order given */
static int
apply_all(const int (*ev)[2], const size_t *order, size_t n)
{
    size_t   i;
    int      state = -1;
    int64_t  best = -1, r;

    for (i = 0; i < n; i++) {
        r = rank(ev[order[i]][0], ev[order[i]][1]);

        if (r > best) {
            best = r;
            state = ev[order[i]][0];
        }
    }

    return state;
}


static void
shuffle(size_t *order, size_t n, unsigned *seed)
{
    size_t  i, j, tmp;

    for (i = 0; i < n; i++) {
        order[i] = i;
    }

    for (i = n - 1; i > 0; i--) {
        *seed = *seed * 1103515245 + 12345;
        j = (*seed >> 16) % (i + 1);
        tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
}


static void
test_rank(void)
{
    char      buf[PSD_CARRIER_RANK_LEN + 1];
    size_t    k, order[6], same;
    int64_t   t = 1772357400;
    unsigned  seed = 7;

    static const int  journey[][2] = {
        { PSD_CARRIER_LABEL_CREATED, 1000 },
        { PSD_CARRIER_SHIPPED, 2000 },
        { PSD_CARRIER_IN_TRANSIT, 3000 },
        { PSD_CARRIER_EXCEPTION, 4000 },
        { PSD_CARRIER_OUT_FOR_DELIVERY, 5000 },
        { PSD_CARRIER_DELIVERED, 6000 },
    };

    static const int  returned[][2] = {
        { PSD_CARRIER_IN_TRANSIT, 3000 },
        { PSD_CARRIER_DELIVERED, 9000 },
        { PSD_CARRIER_RETURNED, 7000 },
        { PSD_CARRIER_EXCEPTION, 9500 },
    };

    ok(rank(PSD_CARRIER_IN_TRANSIT, t + 1) > rank(PSD_CARRIER_IN_TRANSIT, t),
       "in transit: the newer scan wins");
    ok(rank(PSD_CARRIER_IN_TRANSIT, t + 1)
       > rank(PSD_CARRIER_OUT_FOR_DELIVERY, t),
       "a newer in_transit beats an older out_for_delivery");
    ok(rank(PSD_CARRIER_OUT_FOR_DELIVERY, t) > rank(PSD_CARRIER_IN_TRANSIT, t),
       "same second: the later state wins");
    ok(rank(PSD_CARRIER_EXCEPTION, t + 10) > rank(PSD_CARRIER_IN_TRANSIT, t),
       "an exception is a state like others");
    ok(rank(PSD_CARRIER_DELIVERED, t) > rank(PSD_CARRIER_IN_TRANSIT, t + 999),
       "delivered beats any later scan");
    ok(rank(PSD_CARRIER_DELIVERED, t)
       > rank(PSD_CARRIER_EXCEPTION, PSD_CARRIER_TIME_MAX),
       "delivered beats an exception at the end of time");
    ok(rank(PSD_CARRIER_DELIVERED, t) > rank(PSD_CARRIER_DELIVERED, t + 1),
       "of two deliveries the first counts");
    ok(rank(PSD_CARRIER_RETURNED, t + 100) > rank(PSD_CARRIER_DELIVERED, t),
       "returned beats delivered");
    ok(rank(PSD_CARRIER_RETURNED, t) > rank(PSD_CARRIER_DELIVERED, t + 100),
       "returned beats a later delivered (back at the shop)");
    ok(rank(PSD_CARRIER_RETURNED, t) > rank(PSD_CARRIER_RETURNED, t + 1),
       "of two returns the first counts");
    ok(rank(PSD_CARRIER_LABEL_CREATED, 0) >= 0, "time 0 has a rank");
    ok(rank(PSD_CARRIER_RETURNED, 0) > 0, "returned at time 0");
    ok(rank(PSD_CARRIER_RETURNED, 0) < (INT64_C(1) << 53),
       "ranks are exact in a Lua number");
    ok(psd_carrier_rank(PSD_CARRIER_RETURNED, 0, buf)
       <= PSD_CARRIER_RANK_LEN, "within PSD_CARRIER_RANK_LEN");
    is_int(psd_carrier_rank(PSD_CARRIER_IGNORE, t, buf), 0, "ignore: none");
    is_int(psd_carrier_rank(-1, t, buf), 0, "-1: none");
    is_int(psd_carrier_rank(PSD_CARRIER_SHIPPED, -1, buf), 0,
           "negative time: none");
    is_int(psd_carrier_rank(PSD_CARRIER_SHIPPED, PSD_CARRIER_TIME_MAX + 1,
                            buf), 0, "time past 9999: none");

    /* any order of arrival, the same end */

    same = 1;

    for (k = 0; k < 200; k++) {
        shuffle(order, 6, &seed);
        same &= apply_all(journey, order, 6) == PSD_CARRIER_DELIVERED;
        shuffle(order, 4, &seed);
        same &= apply_all(returned, order, 4) == PSD_CARRIER_RETURNED;
    }

    ok(same, "200 shuffles of two journeys end in the same state");
}


/* an EasyPost-like nested event and a flat one with Unix times */

static const char *const  nested_paths[] = {
    "result.reference", "result.tracking_code", "result.status",
    "result.updated_at", "id"
};

static const char *const  flat_paths[] = {
    "order_ref", "tracking_number", "event", "occurred_at", NULL
};


static void
test_parse(void)
{
    carrier_t            nested, flat, arr;
    psd_carrier_event_t  ev, ev2;
    psd_carrier_rc_e     rc;
    char                 big[300];

    static const psd_carrier_map_t  flat_map[] = {
        { "OUT_FOR_DELIVERY", 16, PSD_CARRIER_OUT_FOR_DELIVERY },
        { "HANDED_OVER", 11, PSD_CARRIER_SHIPPED },
        { "NOTIFIED", 8, PSD_CARRIER_IGNORE },
    };

    static const char *const  arr_paths[] = {
        "meta.order", "tracking", "checkpoints.0.tag", "checkpoints.0.at",
        "tracking"
    };

    carrier_init(&nested, nested_paths, NULL, 0, "easypost");
    carrier_init(&flat, flat_paths, flat_map, 3, "dhl");
    carrier_init(&arr, arr_paths, NULL, 0, "arr");

    rc = parse(&nested, "{\"id\":\"evt_1\",\"description\":\"tracker.updated"
               "\",\"result\":{\"id\":\"trk_1\",\"reference\":\"ord_1\","
               "\"tracking_code\":\"EZ1000000001\",\"status\":\"in_transit\","
               "\"updated_at\":\"2026-03-01T09:30:00Z\",\"tracking_details\":"
               "[{\"status\":\"pre_transit\"}]}}", &ev);
    is_str(psd_carrier_strerror(rc), "ok", "nested: ok");
    is_str(field(&ev, PSD_CARRIER_ORDER), "ord_1", "nested: order");
    is_str(field(&ev, PSD_CARRIER_TRACKING), "EZ1000000001",
           "nested: tracking");
    is_str(field(&ev, PSD_CARRIER_STATUS), "in_transit", "nested: status");
    is_str(field(&ev, PSD_CARRIER_EVENT_ID), "evt_1", "nested: event id");
    is_int(ev.time, 1772357400, "nested: time");
    is_int(ev.state, PSD_CARRIER_IN_TRANSIT, "nested: state");

    rc = parse(&flat, "{\"order_ref\":\"A-1001\",\"tracking_number\":"
               "\"00340434161094042557\",\"event\":\"OUT_FOR_DELIVERY\","
               "\"occurred_at\":1767312000}", &ev);
    is_str(psd_carrier_strerror(rc), "ok", "flat: ok");
    is_str(field(&ev, PSD_CARRIER_ORDER), "A-1001", "flat: order");
    is_int(ev.time, 1767312000, "flat: Unix time");
    is_int(ev.state, PSD_CARRIER_OUT_FOR_DELIVERY, "flat: mapped state");
    is_int(ev.len[PSD_CARRIER_EVENT_ID], PSD_CARRIER_DIGEST_ID_LEN,
           "flat: a digest id");
    ok(strncmp(ev.value[PSD_CARRIER_EVENT_ID], "h:", 2) == 0,
       "flat: the digest id starts with h:");

    rc = parse(&flat, "{\"occurred_at\":1767312000,\"event\":"
               "\"OUT_FOR_DELIVERY\",\"tracking_number\":"
               "\"00340434161094042557\",\"order_ref\":\"A-1001\","
               "\"extra\":[1,2,3]}", &ev2);
    is_str(psd_carrier_strerror(rc), "ok", "flat, reordered: ok");
    is_str(ev2.digest_id, ev.digest_id,
           "the same event in another layout: the same digest id");

    rc = parse(&flat, "{\"order_ref\":\"A-1001\",\"tracking_number\":"
               "\"00340434161094042557\",\"event\":\"OUT_FOR_DELIVERY\","
               "\"occurred_at\":1767312001}", &ev2);
    ok(rc == PSD_CARRIER_OK && strcmp(ev2.digest_id, ev.digest_id) != 0,
       "another second: another digest id");

    carrier_init(&flat, flat_paths, flat_map, 3, "ups");
    rc = parse(&flat, "{\"order_ref\":\"A-1001\",\"tracking_number\":"
               "\"00340434161094042557\",\"event\":\"OUT_FOR_DELIVERY\","
               "\"occurred_at\":1767312000}", &ev2);
    ok(rc == PSD_CARRIER_OK && strcmp(ev2.digest_id, ev.digest_id) != 0,
       "another carrier: another digest id");
    carrier_init(&flat, flat_paths, flat_map, 3, "dhl");

    rc = parse(&flat, "{\"order_ref\":1001,\"tracking_number\":42,\"event\":"
               "\"handed_over\",\"occurred_at\":\"1767312000.5\"}", &ev);
    is_str(psd_carrier_strerror(rc), "ok", "numbers: ok");
    is_str(field(&ev, PSD_CARRIER_ORDER), "1001", "an integer order id");
    is_str(field(&ev, PSD_CARRIER_TRACKING), "42", "an integer tracking");
    is_int(ev.time, 1767312000, "a Unix time in a string, with fraction");
    is_int(ev.state, PSD_CARRIER_SHIPPED, "mapped case-insensitively");

    rc = parse(&flat, "{\"order_ref\":\"A-1\",\"event\":\"notified\","
               "\"occurred_at\":1767312000.25}", &ev);
    is_str(psd_carrier_strerror(rc), "ok", "no tracking: ok");
    ok(ev.value[PSD_CARRIER_TRACKING] == NULL
       && ev.len[PSD_CARRIER_TRACKING] == 0, "no tracking");
    is_int(ev.time, 1767312000, "a JSON number with a fraction");
    is_int(ev.state, PSD_CARRIER_IGNORE, "ignore");

    rc = parse(&flat, "{\"order_ref\":\"A-1\",\"tracking_number\":null,"
               "\"event\":\"PickedUp\",\"occurred_at\":1767312000}", &ev);
    is_str(psd_carrier_strerror(rc), "ok", "tracking null: ok");
    ok(ev.value[PSD_CARRIER_TRACKING] == NULL, "tracking null: none");
    is_int(ev.state, PSD_CARRIER_UNKNOWN, "an unknown status");

    rc = parse(&arr, "{\"meta\":{\"order\":\"o:9\"},\"tracking\":\"T9\","
               "\"checkpoints\":[{\"tag\":\"Delivered\",\"at\":"
               "\"2026-03-01T10:30:00+01:00\"},{\"tag\":\"InTransit\"}]}",
               &ev);
    is_str(psd_carrier_strerror(rc), "ok", "array index and a shared path");
    is_str(field(&ev, PSD_CARRIER_STATUS), "Delivered", "checkpoints.0.tag");
    is_str(field(&ev, PSD_CARRIER_EVENT_ID), "T9",
           "tracking and event id on one path");
    is_str(field(&ev, PSD_CARRIER_TRACKING), "T9", "tracking too");
    is_int(ev.state, PSD_CARRIER_DELIVERED, "Delivered");

    /* errors, each on its own */

#define bad(c, body, code, name)                                             \
    rc = parse(c, body, &ev);                                                 \
    is_str(psd_carrier_strerror(rc), code, name)

    bad(&flat, "", "empty_body", "empty body");
    bad(&flat, "{\"order_ref\":", "invalid_json", "cut JSON");
    ok(ev.json_rc == PSD_JSON_INVALID, "cut JSON: json_rc invalid");
    bad(&flat, "[1]", "invalid_json", "an array");
    ok(ev.json_rc == PSD_JSON_NOT_OBJECT, "an array: json_rc not_an_object");
    bad(&flat, "{\"order_ref\":\"a\",\"order_ref\":\"b\"}", "invalid_json",
        "duplicate key");
    ok(ev.json_rc == PSD_JSON_DUPLICATE_KEY, "duplicate key: json_rc");
    bad(&flat, "{\"a\":\"\xff\"}", "invalid_json", "invalid UTF-8");
    bad(&flat, "{\"event\":\"x\",\"occurred_at\":1}", "missing_order",
        "no order");
    bad(&flat, "{\"order_ref\":null,\"event\":\"x\",\"occurred_at\":1}",
        "missing_order", "order null");
    bad(&flat, "{\"order_ref\":\"a b\",\"event\":\"x\",\"occurred_at\":1}",
        "invalid_order", "order with a space");
    bad(&flat, "{\"order_ref\":\"o{1}\",\"event\":\"x\",\"occurred_at\":1}",
        "invalid_order", "order with braces");
    bad(&flat, "{\"order_ref\":\"\",\"event\":\"x\",\"occurred_at\":1}",
        "invalid_order", "empty order");
    bad(&flat, "{\"order_ref\":-1,\"event\":\"x\",\"occurred_at\":1}",
        "invalid_order", "negative order");
    bad(&flat, "{\"order_ref\":1.5,\"event\":\"x\",\"occurred_at\":1}",
        "invalid_order", "order 1.5");
    bad(&flat, "{\"order_ref\":{\"id\":1},\"event\":\"x\",\"occurred_at\":1}",
        "invalid_order", "order an object");
    bad(&flat, "{\"order_ref\":true,\"event\":\"x\",\"occurred_at\":1}",
        "invalid_order", "order true");
    memset(big, 'x', 65);
    big[65] = '\0';
    {
        char  body[400];

        snprintf(body, sizeof(body), "{\"order_ref\":\"%s\",\"event\":\"x\","
                 "\"occurred_at\":1}", big);
        bad(&flat, body, "invalid_order", "order of 65 characters");
        big[64] = '\0';
        snprintf(body, sizeof(body), "{\"order_ref\":\"%s\",\"event\":\"x\","
                 "\"occurred_at\":1}", big);
        bad(&flat, body, "ok", "order of 64 characters");
        big[64] = 'x';
        snprintf(body, sizeof(body), "{\"order_ref\":\"o\",\"tracking_number"
                 "\":\"%s\",\"event\":\"x\",\"occurred_at\":1}", big);
        bad(&flat, body, "invalid_tracking", "tracking of 65 characters");
        snprintf(body, sizeof(body), "{\"order_ref\":\"o\",\"event\":\"%s\","
                 "\"occurred_at\":1}", big);
        bad(&flat, body, "invalid_status", "status of 65 characters");
    }
    bad(&flat, "{\"order_ref\":\"o\",\"tracking_number\":\"\",\"event\":\"x\","
        "\"occurred_at\":1}", "invalid_tracking", "empty tracking");
    bad(&flat, "{\"order_ref\":\"o\",\"tracking_number\":\"a\\nb\","
        "\"event\":\"x\",\"occurred_at\":1}", "invalid_tracking",
        "tracking with a newline");
    bad(&flat, "{\"order_ref\":\"o\",\"tracking_number\":[\"1\"],"
        "\"event\":\"x\",\"occurred_at\":1}", "invalid_tracking",
        "tracking an array");
    bad(&flat, "{\"order_ref\":\"o\",\"occurred_at\":1}", "missing_status",
        "no status");
    bad(&flat, "{\"order_ref\":\"o\",\"event\":\"\",\"occurred_at\":1}",
        "invalid_status", "empty status");
    bad(&flat, "{\"order_ref\":\"o\",\"event\":\"caf\xc3\xa9\","
        "\"occurred_at\":1}", "invalid_status", "status not ASCII");
    bad(&flat, "{\"order_ref\":\"o\",\"event\":\"a\\u0000b\","
        "\"occurred_at\":1}", "invalid_status", "status with a NUL");
    bad(&flat, "{\"order_ref\":\"o\",\"event\":false,\"occurred_at\":1}",
        "invalid_status", "status false");
    bad(&flat, "{\"order_ref\":\"o\",\"event\":7,\"occurred_at\":1}", "ok",
        "status a number");
    bad(&flat, "{\"order_ref\":\"o\",\"event\":\"x\"}", "missing_time",
        "no time");
    bad(&flat, "{\"order_ref\":\"o\",\"event\":\"x\",\"occurred_at\":null}",
        "missing_time", "time null");
    bad(&flat, "{\"order_ref\":\"o\",\"event\":\"x\",\"occurred_at\":"
        "\"yesterday\"}", "invalid_time", "time a word");
    bad(&flat, "{\"order_ref\":\"o\",\"event\":\"x\",\"occurred_at\":"
        "1767312000000}", "invalid_time", "time in milliseconds");
    bad(&flat, "{\"order_ref\":\"o\",\"event\":\"x\",\"occurred_at\":-1}",
        "invalid_time", "negative time");
    bad(&flat, "{\"order_ref\":\"o\",\"event\":\"x\",\"occurred_at\":1e9}",
        "invalid_time", "time with an exponent");
    bad(&flat, "{\"order_ref\":\"o\",\"event\":\"x\",\"occurred_at\":"
        "{\"s\":1}}", "invalid_time", "time an object");
    bad(&nested, "{\"result\":{\"reference\":\"o\",\"status\":\"x\","
        "\"updated_at\":\"2026-03-01T09:30:00Z\"}}", "missing_event_id",
        "no event id");
    bad(&nested, "{\"id\":\"evt 1\",\"result\":{\"reference\":\"o\","
        "\"status\":\"x\",\"updated_at\":\"2026-03-01T09:30:00Z\"}}",
        "invalid_event_id", "event id with a space");
    bad(&nested, "{\"id\":\"\",\"result\":{\"reference\":\"o\","
        "\"status\":\"x\",\"updated_at\":\"2026-03-01T09:30:00Z\"}}",
        "invalid_event_id", "empty event id");
    bad(&nested, "{\"id\":12345,\"result\":{\"reference\":\"o\","
        "\"status\":\"x\",\"updated_at\":\"2026-03-01T09:30:00Z\"}}",
        "ok", "an integer event id");
    bad(&nested, "{\"id\":\"e\",\"result\":[]}", "missing_order",
        "result an array: nothing found");

    /* the first failing check in the order of the codes */
    bad(&flat, "{\"order_ref\":\"a b\",\"tracking_number\":\"\"}",
        "invalid_order", "order before tracking");
    bad(&flat, "{\"order_ref\":\"o\",\"tracking_number\":\"\"}",
        "invalid_tracking", "tracking before status");
    bad(&flat, "{\"order_ref\":\"o\",\"event\":\"x\",\"occurred_at\":\"x\"}",
        "invalid_time", "status before time");

#undef bad
}


static void
test_parse_args(void)
{
    carrier_t            c;
    psd_carrier_work_t   w;
    psd_carrier_event_t  ev;
    psd_json_slot_t      slots[8];
    char                 dec[64];
    psd_path_t           star;

    static const char *const  no_time[] = {
        "o", NULL, "s", NULL, NULL
    };

    w.dec = dec;
    w.dec_size = sizeof(dec);
    w.slots = slots;
    w.nslots = 8;

    carrier_init(&c, no_time, NULL, 0, "x");
    is_int(psd_carrier_parse(&c.conf, (const unsigned char *) "{}", 2, &w,
                             &ev), PSD_CARRIER_ERROR, "no time path: error");

    carrier_init(&c, flat_paths, NULL, 0, "x");
    w.dec_size = 4;
    is_int(psd_carrier_parse(&c.conf, (const unsigned char *) "{}", 2, &w,
                             &ev), PSD_CARRIER_ERROR, "dec too small: error");
    w.dec_size = sizeof(dec);
    w.nslots = 6;
    is_int(psd_carrier_parse(&c.conf, (const unsigned char *) "{}", 2, &w,
                             &ev), PSD_CARRIER_ERROR,
           "slots not a power of two: error");
    w.nslots = 8;

    psd_path_parse("a.*", 3, &star);
    c.conf.paths[PSD_CARRIER_TRACKING] = &star;
    is_int(psd_carrier_parse(&c.conf, (const unsigned char *) "{}", 2, &w,
                             &ev), PSD_CARRIER_ERROR, "a wildcard: error");
    is_int(psd_carrier_parse(NULL, (const unsigned char *) "{}", 2, &w, &ev),
           PSD_CARRIER_ERROR, "no conf: error");
    is_str(psd_carrier_strerror((psd_carrier_rc_e) 99), "internal_error",
           "a bad code's name");
}


/* a header's length, 0 when absent */
static size_t
hlen(const char *h)
{
    return h ? strlen(h) : 0;
}


static void
test_signatures(void)
{
    char                   sig[PSD_CARRIER_SIG_MAX + 1], hdr[128];
    size_t                 n;
    const char            *body = "The quick brown fox jumps over the lazy dog";
    psd_webhook_secret_t   s[2];
    psd_webhook_status_e   st;

    static const char  hex[] =
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
    static const char  b64[] = "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg=";

#define hmac(h, p, enc, ns)                                                  \
    psd_carrier_hmac_verify(h, hlen(h), p, strlen(p), enc,                   \
                            (const unsigned char *) body, strlen(body), s, ns)

    s[0].data = (const unsigned char *) "other secret, rotated out";
    s[0].len = strlen((const char *) s[0].data);
    s[1].data = (const unsigned char *) "key";
    s[1].len = 3;

    n = psd_carrier_hmac_sign(s[1].data, s[1].len,
                              (const unsigned char *) body, strlen(body),
                              PSD_CARRIER_HEX, sig);
    sig[n] = '\0';
    is_str(sig, hex, "hex signature (the Wikipedia HMAC-SHA256 example)");
    n = psd_carrier_hmac_sign(s[1].data, s[1].len,
                              (const unsigned char *) body, strlen(body),
                              PSD_CARRIER_BASE64, sig);
    sig[n] = '\0';
    is_str(sig, b64, "base64 signature");

    is_int(hmac(hex, "", PSD_CARRIER_HEX, 2), PSD_WEBHOOK_OK, "hex: ok");
    is_int(hmac(hex, "", PSD_CARRIER_HEX, 1), PSD_WEBHOOK_BAD_SIGNATURE,
           "hex: only the other secret");
    snprintf(hdr, sizeof(hdr), "%s", hex);
    for (n = 0; hdr[n]; n++) {
        hdr[n] = (hdr[n] >= 'a' && hdr[n] <= 'f') ? hdr[n] - 32 : hdr[n];
    }
    is_int(hmac(hdr, "", PSD_CARRIER_HEX, 2), PSD_WEBHOOK_OK,
           "hex: upper case digits");
    hdr[63] = hdr[63] == '8' ? '9' : '8';
    is_int(hmac(hdr, "", PSD_CARRIER_HEX, 2), PSD_WEBHOOK_BAD_SIGNATURE,
           "hex: one digit changed");
    snprintf(hdr, sizeof(hdr), "sha256=%s", hex);
    is_int(hmac(hdr, "sha256=", PSD_CARRIER_HEX, 2), PSD_WEBHOOK_OK,
           "prefix sha256=");
    snprintf(hdr, sizeof(hdr), "SHA256=%s", hex);
    is_int(hmac(hdr, "sha256=", PSD_CARRIER_HEX, 2), PSD_WEBHOOK_OK,
           "prefix in another case");
    is_int(hmac(hex, "sha256=", PSD_CARRIER_HEX, 2),
           PSD_WEBHOOK_MALFORMED_HEADER, "prefix missing");
    is_int(hmac("sha256=", "sha256=", PSD_CARRIER_HEX, 2),
           PSD_WEBHOOK_MALFORMED_HEADER, "only the prefix");
    is_int(hmac("sha", "sha256=", PSD_CARRIER_HEX, 2),
           PSD_WEBHOOK_MALFORMED_HEADER, "shorter than the prefix");
    snprintf(hdr, sizeof(hdr), "%.63s", hex);
    is_int(hmac(hdr, "", PSD_CARRIER_HEX, 2), PSD_WEBHOOK_MALFORMED_HEADER,
           "hex: 63 digits");
    snprintf(hdr, sizeof(hdr), "%s0", hex);
    is_int(hmac(hdr, "", PSD_CARRIER_HEX, 2), PSD_WEBHOOK_MALFORMED_HEADER,
           "hex: 65 digits");
    snprintf(hdr, sizeof(hdr), "%s", hex);
    hdr[10] = 'g';
    is_int(hmac(hdr, "", PSD_CARRIER_HEX, 2), PSD_WEBHOOK_MALFORMED_HEADER,
           "hex: not a digit");
    is_int(hmac(b64, "", PSD_CARRIER_HEX, 2), PSD_WEBHOOK_MALFORMED_HEADER,
           "base64 where hex is configured");
    is_int(hmac(NULL, "", PSD_CARRIER_HEX, 2), PSD_WEBHOOK_MISSING_HEADER,
           "no header");

    is_int(hmac(b64, "", PSD_CARRIER_BASE64, 2), PSD_WEBHOOK_OK, "base64: ok");
    is_int(hmac(hex, "", PSD_CARRIER_BASE64, 2), PSD_WEBHOOK_MALFORMED_HEADER,
           "hex where base64 is configured");
    snprintf(hdr, sizeof(hdr), "%.43s", b64);
    is_int(hmac(hdr, "", PSD_CARRIER_BASE64, 2),
           PSD_WEBHOOK_MALFORMED_HEADER, "base64 without padding");
    snprintf(hdr, sizeof(hdr), "%s", b64);
    hdr[2] = '-';
    is_int(hmac(hdr, "", PSD_CARRIER_BASE64, 2),
           PSD_WEBHOOK_MALFORMED_HEADER, "base64url character");
    hdr[2] = 'x';
    is_int(hmac(hdr, "", PSD_CARRIER_BASE64, 2), PSD_WEBHOOK_BAD_SIGNATURE,
           "base64: one character changed");
    snprintf(hdr, sizeof(hdr), "v1=%s", b64);
    is_int(hmac(hdr, "v1=", PSD_CARRIER_BASE64, 2), PSD_WEBHOOK_OK,
           "base64 with a prefix");

    st = psd_carrier_hmac_verify(hex, 64, "", 0, PSD_CARRIER_HEX,
                                 (const unsigned char *) body,
                                 strlen(body) - 1, s, 2);
    is_int(st, PSD_WEBHOOK_BAD_SIGNATURE, "another body");
    st = psd_carrier_hmac_verify(hex, 64, "", 0, PSD_CARRIER_HEX,
                                 (const unsigned char *) body, strlen(body),
                                 s, 0);
    is_int(st, PSD_WEBHOOK_BAD_SIGNATURE, "no secrets: never ok");

    /* shared secrets */
    is_int(psd_carrier_shared_verify("key", 3, s, 2), PSD_WEBHOOK_OK,
           "shared: the second secret");
    is_int(psd_carrier_shared_verify("other secret, rotated out", 25, s, 2),
           PSD_WEBHOOK_OK, "shared: the first secret");
    is_int(psd_carrier_shared_verify("key", 3, s, 1),
           PSD_WEBHOOK_BAD_SIGNATURE, "shared: not configured");
    is_int(psd_carrier_shared_verify("ke", 2, s, 2),
           PSD_WEBHOOK_BAD_SIGNATURE, "shared: a prefix of it");
    is_int(psd_carrier_shared_verify("keyy", 4, s, 2),
           PSD_WEBHOOK_BAD_SIGNATURE, "shared: longer");
    is_int(psd_carrier_shared_verify("KEY", 3, s, 2),
           PSD_WEBHOOK_BAD_SIGNATURE, "shared: case matters");
    is_int(psd_carrier_shared_verify("", 0, s, 2), PSD_WEBHOOK_BAD_SIGNATURE,
           "shared: empty");
    is_int(psd_carrier_shared_verify(NULL, 0, s, 2),
           PSD_WEBHOOK_MISSING_HEADER, "shared: no header");

#undef hmac
}


int
main(void)
{
    test_time();
    test_states();
    test_rank();
    test_parse();
    test_parse_args();
    test_signatures();

    return done_testing();
}
