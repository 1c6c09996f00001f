/*
 * libFuzzer target: carrier events (psd_carrier.c).
 *
 * Input: one mode byte, then the rest.  Mode % 4:
 *   0: an event time; an accepted one lies in range, has a rank, and its
 *      RFC 3339 spelling parses back to the same second;
 *   1, 2: a body against two configurations (nested paths with an event
 *      id; flat paths with a status map and digest ids); an accepted event
 *      keeps every bound its fields promise, and a second parse (another
 *      key table seed) gives the same event;
 *   3: "header\nbody": HMAC (hex, base64, with and without a prefix) and
 *      shared-secret verification never crash, and a signature made here
 *      verifies, also for a secret after another, and fails on another
 *      body.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "psd_carrier.h"


#define NSLOTS  256


static const psd_webhook_secret_t  secrets[] = {
    { (const unsigned char *) "fuzz carrier secret one", 23 },
    { (const unsigned char *) "fuzz carrier secret two!", 24 }
};


static void
fuzz_time(const uint8_t *data, size_t size)
{
    char       buf[32], rank[PSD_CARRIER_RANK_LEN];
    time_t     tt;
    int64_t    t, back;
    struct tm  tm;

    if (psd_carrier_time_parse((const char *) data, size, &t) != 0) {
        return;
    }

    if (t < 0 || t > PSD_CARRIER_TIME_MAX
        || psd_carrier_rank(PSD_CARRIER_IN_TRANSIT, t, rank) == 0
        || psd_carrier_rank(PSD_CARRIER_RETURNED, t, rank) == 0)
    {
        abort();
    }

    tt = (time_t) t;

    if (gmtime_r(&tt, &tm) == NULL
        || strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) != 20
        || psd_carrier_time_parse(buf, 20, &back) != 0 || back != t)
    {
        abort();
    }
}


static void
check_text(const psd_carrier_event_t *ev, int k, size_t min, size_t max,
    unsigned char lo)
{
    size_t  i;

    if (ev->value[k] == NULL || ev->len[k] < min || ev->len[k] > max) {
        abort();
    }

    for (i = 0; i < ev->len[k]; i++) {
        if ((unsigned char) ev->value[k][i] < lo
            || (unsigned char) ev->value[k][i] > '~')
        {
            abort();
        }
    }
}


static void
fuzz_event(const uint8_t *data, size_t size, int flat)
{
    size_t               k;
    char                *dec;
    psd_path_t           paths[PSD_CARRIER_NFIELDS];
    psd_carrier_rc_e     rc, rc2;
    psd_carrier_conf_t   conf;
    psd_carrier_work_t   w;
    psd_carrier_event_t  ev, ev2;
    psd_json_slot_t      slots[NSLOTS];

    static const char *const  nested[] = {
        "result.reference", "result.tracking_code", "result.status",
        "result.updated_at", "id"
    };
    static const char *const  shallow[] = {
        "order_ref", "tracking_number", "event", "occurred_at", NULL
    };
    static const psd_carrier_map_t  map[] = {
        { "OUT_FOR_DELIVERY", 16, PSD_CARRIER_OUT_FOR_DELIVERY },
        { "NOTIFIED", 8, PSD_CARRIER_IGNORE },
    };
    static const unsigned char  key1[16] = "carrier fuzz k1";
    static const unsigned char  key2[16] = "carrier fuzz k2";

    memset(&conf, 0, sizeof(conf));

    for (k = 0; k < PSD_CARRIER_NFIELDS; k++) {
        const char  *text = flat ? shallow[k] : nested[k];

        if (text == NULL) {
            continue;
        }

        if (psd_path_parse(text, strlen(text), &paths[k]) != 0) {
            abort();
        }

        conf.paths[k] = &paths[k];
    }

    conf.map = flat ? map : NULL;
    conf.nmap = flat ? 2 : 0;
    conf.carrier = "fuzz";
    conf.carrier_len = 4;
    conf.hash_key = key1;

    dec = malloc(size + PSD_CARRIER_NFIELDS);
    if (dec == NULL) {
        return;
    }

    w.dec = dec;
    w.dec_size = size + PSD_CARRIER_NFIELDS;
    w.slots = slots;
    w.nslots = NSLOTS;

    rc = psd_carrier_parse(&conf, data, size, &w, &ev);

    if (rc == PSD_CARRIER_ERROR
        || strcmp(psd_carrier_strerror(rc), "internal_error") == 0)
    {
        abort();
    }

    if (rc == PSD_CARRIER_OK) {
        check_text(&ev, PSD_CARRIER_ORDER, 1, PSD_CARRIER_ORDER_MAX, '!');
        check_text(&ev, PSD_CARRIER_STATUS, 1, PSD_CARRIER_STATUS_MAX, ' ');
        check_text(&ev, PSD_CARRIER_EVENT_ID, 1, PSD_CARRIER_EVENT_ID_MAX,
                   '!');

        if (ev.value[PSD_CARRIER_TRACKING]) {
            check_text(&ev, PSD_CARRIER_TRACKING, 1,
                       PSD_CARRIER_TRACKING_MAX, ' ');
        }

        if (ev.time < 0 || ev.time > PSD_CARRIER_TIME_MAX
            || ev.state < 0 || ev.state > PSD_CARRIER_UNKNOWN
            || (!flat && ev.state == PSD_CARRIER_IGNORE)
            || (flat && ev.len[PSD_CARRIER_EVENT_ID]
                        != PSD_CARRIER_DIGEST_ID_LEN))
        {
            abort();
        }
    }

    /* the same bytes, another table seed: the same answer */

    conf.hash_key = key2;
    rc2 = psd_carrier_parse(&conf, data, size, &w, &ev2);

    if (rc2 != rc
        || (rc == PSD_CARRIER_OK
            && (ev2.time != ev.time || ev2.state != ev.state
                || ev2.len[PSD_CARRIER_EVENT_ID]
                   != ev.len[PSD_CARRIER_EVENT_ID]
                || (flat && strcmp(ev2.digest_id, ev.digest_id) != 0))))
    {
        abort();
    }

    free(dec);
}


static void
fuzz_signature(const uint8_t *data, size_t size)
{
    char                  sig[8 + PSD_CARRIER_SIG_MAX];
    size_t                hlen, blen, n;
    const char           *header, *nl;
    const unsigned char  *body;
    psd_webhook_status_e  st;

    header = (const char *) data;
    nl = memchr(data, '\n', size);
    hlen = nl ? (size_t) (nl - header) : size;
    body = nl ? (const unsigned char *) nl + 1 : data + size;
    blen = nl ? size - hlen - 1 : 0;

    psd_carrier_hmac_verify(header, hlen, "", 0, PSD_CARRIER_HEX, body, blen,
                            secrets, 2);
    psd_carrier_hmac_verify(header, hlen, "sha256=", 7, PSD_CARRIER_BASE64,
                            body, blen, secrets, 2);
    psd_carrier_shared_verify(header, hlen, secrets, 2);

    if (psd_carrier_shared_verify(header, hlen, secrets, 2) == PSD_WEBHOOK_OK
        && !(hlen == secrets[0].len
             && memcmp(header, secrets[0].data, hlen) == 0)
        && !(hlen == secrets[1].len
             && memcmp(header, secrets[1].data, hlen) == 0))
    {
        abort();
    }

    /* signed here with the second secret */

    memcpy(sig, "sha256=", 7);
    n = psd_carrier_hmac_sign(secrets[1].data, secrets[1].len, body, blen,
                              (size & 1) ? PSD_CARRIER_BASE64
                                         : PSD_CARRIER_HEX, sig + 7);
    if (n == 0 || n > PSD_CARRIER_SIG_MAX) {
        abort();
    }

    st = psd_carrier_hmac_verify(sig, n + 7, "SHA256=", 7,
                                 (size & 1) ? PSD_CARRIER_BASE64
                                            : PSD_CARRIER_HEX,
                                 body, blen, secrets, 2);
    if (st != PSD_WEBHOOK_OK) {
        abort();
    }

    st = psd_carrier_hmac_verify(sig, n + 7, "sha256=", 7,
                                 (size & 1) ? PSD_CARRIER_BASE64
                                            : PSD_CARRIER_HEX,
                                 body, blen ? blen - 1 : 0, secrets, 2);
    if (blen && st != PSD_WEBHOOK_BAD_SIGNATURE) {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }

    switch (data[0] % 4) {
    case 0:
        fuzz_time(data + 1, size - 1);
        break;
    case 1:
        fuzz_event(data + 1, size - 1, 0);
        break;
    case 2:
        fuzz_event(data + 1, size - 1, 1);
        break;
    default:
        fuzz_signature(data + 1, size - 1);
    }

    return 0;
}
