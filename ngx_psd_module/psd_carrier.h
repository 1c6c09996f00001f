/*
 * Copyright (C) ngx_psd_module authors
 *
 * Carrier (delivery tracking) webhooks: the pure part.  A carrier event is
 * a JSON body whose fields are found by configured paths (order id,
 * tracking number, carrier status, event time, event id); the carrier's
 * status maps to one of seven delivery states.  Also the event time parser
 * (RFC 3339 or Unix seconds), the order in which states replace each other
 * (psd_carrier_rank), the dedupe id of events without one, and the two
 * ways a carrier proves a delivery: an HMAC-SHA256 of the raw body in a
 * header, or a shared secret in a header.  No allocation.  nginx-free.
 */

#ifndef PSD_CARRIER_H
#define PSD_CARRIER_H

#include <stddef.h>
#include <stdint.h>

#include "psd_json.h"
#include "psd_webhook.h"


/* the fields a configuration names by path */
typedef enum {
    PSD_CARRIER_ORDER = 0,
    PSD_CARRIER_TRACKING,
    PSD_CARRIER_STATUS,
    PSD_CARRIER_TIME,
    PSD_CARRIER_EVENT_ID,
    PSD_CARRIER_NFIELDS
} psd_carrier_field_e;

/*
 * Delivery states, in the order that breaks ties of psd_carrier_rank();
 * the metrics list (ngx_http_psd_metrics.h) follows it too.
 */
typedef enum {
    PSD_CARRIER_LABEL_CREATED = 0,
    PSD_CARRIER_SHIPPED,
    PSD_CARRIER_IN_TRANSIT,
    PSD_CARRIER_OUT_FOR_DELIVERY,
    PSD_CARRIER_EXCEPTION,
    PSD_CARRIER_DELIVERED,
    PSD_CARRIER_RETURNED,
    PSD_CARRIER_NSTATES,
    /* not states: what a carrier status may map to besides */
    PSD_CARRIER_IGNORE = PSD_CARRIER_NSTATES,
    PSD_CARRIER_UNKNOWN
} psd_carrier_state_e;

/* stable error codes: see psd_carrier_strerror() */
typedef enum {
    PSD_CARRIER_OK = 0,
    PSD_CARRIER_EMPTY_BODY,          /* "empty_body" */
    PSD_CARRIER_INVALID_JSON,        /* "invalid_json", also not an object */
    PSD_CARRIER_MISSING_ORDER,       /* "missing_order" */
    PSD_CARRIER_INVALID_ORDER,       /* "invalid_order" */
    PSD_CARRIER_INVALID_TRACKING,    /* "invalid_tracking" */
    PSD_CARRIER_MISSING_STATUS,      /* "missing_status" */
    PSD_CARRIER_INVALID_STATUS,      /* "invalid_status" */
    PSD_CARRIER_MISSING_TIME,        /* "missing_time" */
    PSD_CARRIER_INVALID_TIME,        /* "invalid_time" */
    PSD_CARRIER_MISSING_EVENT_ID,    /* "missing_event_id" */
    PSD_CARRIER_INVALID_EVENT_ID,    /* "invalid_event_id" */
    PSD_CARRIER_ERROR                /* "internal_error": bad arguments */
} psd_carrier_rc_e;

#define PSD_CARRIER_ORDER_MAX      64
#define PSD_CARRIER_TRACKING_MAX   64
#define PSD_CARRIER_STATUS_MAX     64
#define PSD_CARRIER_EVENT_ID_MAX   128
/* "h:" and 22 base64url characters: 16 bytes of SHA-256 */
#define PSD_CARRIER_DIGEST_ID_LEN  24

/* event times from 1970 to the end of 9999, in Unix seconds */
#define PSD_CARRIER_TIME_MAX       INT64_C(253402300799)

/* the longest decimal psd_carrier_rank() returns, without NUL */
#define PSD_CARRIER_RANK_LEN       16


/* a carrier status as the carrier spells it, and what it means */
typedef struct {
    const char  *value;
    size_t       len;
    int          state;        /* a psd_carrier_state_e, or IGNORE */
} psd_carrier_map_t;

typedef struct {
    /* NULL for a field that is not configured (tracking, event id) */
    const psd_path_t         *paths[PSD_CARRIER_NFIELDS];
    const psd_carrier_map_t  *map;
    size_t                    nmap;
    /* part of the digest id of events that carry no id */
    const char               *carrier;
    size_t                    carrier_len;
    /* 16 bytes for psd_json_scan()'s key table; NULL draws at random */
    const unsigned char      *hash_key;
} psd_carrier_conf_t;

/* what psd_carrier_parse() needs besides the body */
typedef struct {
    /* at least body_len + PSD_CARRIER_NFIELDS bytes */
    char             *dec;
    size_t            dec_size;
    /* a power of two: at most nslots / 2 keys in all open objects */
    psd_json_slot_t  *slots;
    size_t            nslots;
} psd_carrier_work_t;

typedef struct {
    /* values point into work->dec or, for an event id computed from the
     * event, into digest_id; tracking has length 0 when absent */
    const char         *value[PSD_CARRIER_NFIELDS];
    size_t              len[PSD_CARRIER_NFIELDS];
    int64_t             time;
    int                 state;       /* a psd_carrier_state_e */
    /* on PSD_CARRIER_INVALID_JSON: what psd_json_scan() said */
    psd_json_rc_t       json_rc;
    char                digest_id[PSD_CARRIER_DIGEST_ID_LEN + 1];
} psd_carrier_event_t;


/*
 * Finds and checks the configured fields of a carrier event:
 *   order: a string of 1 to 64 of [A-Za-z0-9_.:-], or a non-negative
 *     integer (written as it is);
 *   tracking: absent or null, or a string of 1 to 64 printable ASCII
 *     characters, or a non-negative integer;
 *   status: a string of 1 to 64 printable ASCII characters or an integer;
 *     mapped with psd_carrier_state();
 *   time: psd_carrier_time_parse() of a string, or a JSON number of
 *     seconds (a fraction is dropped);
 *   event id: when configured, a string of 1 to 128 visible ASCII
 *     characters or a non-negative integer; otherwise "h:" and a digest of
 *     the carrier, tracking number, status and time (the same event sent
 *     twice gets the same id).
 * Checks go in the order of the codes; the first failing one is returned.
 */
psd_carrier_rc_e psd_carrier_parse(const psd_carrier_conf_t *conf,
    const unsigned char *body, size_t len, psd_carrier_work_t *work,
    psd_carrier_event_t *ev);

/*
 * A carrier's status: the configured map first (ASCII case-insensitive,
 * whole value), then the state names themselves compared without case
 * and without '_', '-' and ' ' ("In Transit", "InTransit", "IN-TRANSIT"
 * are in_transit).  PSD_CARRIER_UNKNOWN when neither knows it.
 */
int psd_carrier_state(const psd_carrier_map_t *map, size_t nmap,
    const char *value, size_t len);

/* "label_created", ..., "returned", "ignore", "unknown" */
const char *psd_carrier_state_name(int state);

/* a state or "ignore" by its exact name; -1 if none */
int psd_carrier_state_by_name(const char *name, size_t len);

/*
 * An event time: RFC 3339 ("2026-03-01T09:30:00Z", "...T09:30:00.250+01:00";
 * 't', 'z' and a space for 'T' accepted, a leap second counts as the next
 * second) or Unix seconds as decimal digits with an optional fraction,
 * dropped.  0, or -1 for anything else or a time outside 1970 to 9999.
 */
int psd_carrier_time_parse(const char *s, size_t len, int64_t *t);

/*
 * Where an event's state stands against others: a bigger rank replaces a
 * smaller one.  delivered beats every state before it and returned beats
 * delivered, whatever their times (a parcel delivered or sent back does
 * not go back on the road; a later scan is noise); among the states
 * before delivered the newest event time wins, and among delivered (or
 * returned) events the oldest.  Ties go to the later state in the enum.
 * A maximum, so the same events give the same state in any order of
 * arrival.  Writes the rank in decimal (at most PSD_CARRIER_RANK_LEN
 * characters, no NUL) and returns its length; 0 for a bad state or time.
 */
size_t psd_carrier_rank(int state, int64_t t, char *out);

const char *psd_carrier_strerror(psd_carrier_rc_e rc);


/* signatures */

typedef enum {
    PSD_CARRIER_HEX = 0,
    PSD_CARRIER_BASE64
} psd_carrier_encoding_e;

/* room for a signature psd_carrier_hmac_sign() writes */
#define PSD_CARRIER_SIG_MAX  64

/*
 * header: "<prefix><signature>", NULL when absent.  The prefix is
 * compared without case; the signature is HMAC-SHA256 of the body under
 * any of the secrets (rotation), in hex (either case) or padded base64,
 * compared in constant time.  MISSING_HEADER, MALFORMED_HEADER (no
 * prefix, not a signature), BAD_SIGNATURE or OK.
 */
psd_webhook_status_e psd_carrier_hmac_verify(const char *header,
    size_t header_len, const char *prefix, size_t prefix_len,
    psd_carrier_encoding_e encoding, const unsigned char *body,
    size_t body_len, const psd_webhook_secret_t *secrets, size_t nsecrets);

/*
 * header: a secret the carrier sends as it is, NULL when absent.  Compared
 * with each secret through their SHA-256, so that neither the time nor
 * the result tells a length.  MISSING_HEADER, BAD_SIGNATURE or OK.
 */
psd_webhook_status_e psd_carrier_shared_verify(const char *header,
    size_t header_len, const psd_webhook_secret_t *secrets, size_t nsecrets);

/* the signature (lowercase hex or base64), no prefix, no NUL; its length */
size_t psd_carrier_hmac_sign(const unsigned char *secret, size_t secret_len,
    const unsigned char *body, size_t body_len,
    psd_carrier_encoding_e encoding, char *out);

#endif
