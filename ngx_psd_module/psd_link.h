/*
 * Copyright (C) ngx_psd_module authors
 *
 * Signed, expiring download links (format v1, docs/link-format.md): query
 * parsing, the canonical string, signing and verification.  nginx-free; the
 * verify path allocates nothing and keeps no state between calls.
 */

#ifndef PSD_LINK_H
#define PSD_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "psd_cidr.h"
#include "psd_crypto.h"

#define PSD_LINK_KID_MAX       32
#define PSD_LINK_ID_MAX        64
#define PSD_LINK_ORDER_MAX     64
#define PSD_LINK_SCOPE_MAX     1024
#define PSD_LINK_EXP_DIGITS    12
#define PSD_LINK_LIMIT_MAX     1000000
#define PSD_LINK_MAC_LEN       32
#define PSD_LINK_SIG_LEN       43
#define PSD_LINK_KEY_MIN       32
#define PSD_LINK_PURPOSE_MAX   32

/* room for any query psd_link_sign() writes, NUL included */
#define PSD_LINK_QUERY_MAX     4096


typedef enum {
    PSD_LINK_OK = 0,
    PSD_LINK_MALFORMED,
    PSD_LINK_UNKNOWN_KEY,
    PSD_LINK_INVALID,
    PSD_LINK_EXPIRED,
    PSD_LINK_WRONG_PATH,
    PSD_LINK_WRONG_CLIENT
} psd_link_status_e;


/*
 * A parsed link: percent-decoded, validated values in fixed arrays, each
 * NUL-terminated for logging.  About 1.3 KB; fine on the stack.  After a
 * failed parse every string is still NUL-terminated and either empty or
 * validated (kid, id and order hold only [A-Za-z0-9_.:-]), so the fields
 * of a bad link are safe to log; the signature vouches for none of them
 * unless psd_link_check() returned PSD_LINK_OK.
 */
typedef struct {
    char           kid[PSD_LINK_KID_MAX + 1];
    char           id[PSD_LINK_ID_MAX + 1];
    char           order[PSD_LINK_ORDER_MAX + 1];
    char           scope[PSD_LINK_SCOPE_MAX + 1];
    char           ip[PSD_CIDR_TEXT_MAX + 1];
    size_t         kid_len;
    size_t         id_len;
    size_t         order_len;    /* 0: no psd_order */
    size_t         scope_len;    /* 0: an exact-path link */
    size_t         ip_len;       /* 0: no psd_ip */
    int64_t        exp;
    uint32_t       limit;        /* 0: no psd_limit */
    psd_cidr_t     cidr;         /* valid when ip_len != 0 */
    unsigned char  mac[PSD_LINK_MAC_LEN];
} psd_link_t;


/*
 * hkey, optional: psd_hmac_key_new(key, key_len), made once per key (at
 * configuration time) so that each MAC skips OpenSSL's keying; NULL keys
 * the MAC from key and key_len per call.  It must be made from these very
 * bytes, and zero it (or the whole struct) when there is none.  Used
 * through a const pointer, but each MAC changes it: one thread at a time
 * (psd_crypto.h).
 */
typedef struct {
    const char           *kid;
    size_t                kid_len;
    const unsigned char  *key;
    size_t                key_len;
    psd_hmac_key_t       *hkey;
} psd_link_key_t;


/* what a verification needs besides the link; build it per request */
typedef struct {
    const psd_link_key_t  *keys;
    size_t                 nkeys;
    int64_t                now;
    int64_t                skew;       /* valid this long past exp */
    int64_t                max_ttl;    /* exp - now beyond it: invalid;
                                          0: no limit */
} psd_link_conf_t;


/* what a new link says; NULL or 0 leaves an optional field out */
typedef struct {
    const char           *kid;
    size_t                kid_len;
    const unsigned char  *key;
    size_t                key_len;     /* at least PSD_LINK_KEY_MIN */
    psd_hmac_key_t       *hkey;        /* optional, as in psd_link_key_t */
    const char           *path;        /* decoded; the prefix if prefix */
    size_t                path_len;
    int                   prefix;
    int64_t               exp;
    const char           *id;
    size_t                id_len;
    const char           *order;
    size_t                order_len;
    const char           *ip;          /* canonical address or CIDR */
    size_t                ip_len;
    uint32_t              limit;
} psd_link_params_t;


/* "ok", "malformed", ...; "unknown" for a value outside the enum */
const char *psd_link_status_name(psd_link_status_e status);

/* query: the raw query string without '?' (nginx: r->args) */
psd_link_status_e psd_link_parse(psd_link_t *link, const char *query,
    size_t len);

/*
 * path: the normalized, percent-decoded request path (nginx: r->uri);
 * client: the client address, or NULL if there is none (a link bound to an
 * address then fails with PSD_LINK_WRONG_CLIENT)
 */
psd_link_status_e psd_link_check(const psd_link_t *link,
    const psd_link_conf_t *conf, const char *path, size_t path_len,
    const psd_ip_t *client);

/* psd_link_parse() and psd_link_check(); link receives the fields */
psd_link_status_e psd_link_verify(psd_link_t *link,
    const psd_link_conf_t *conf, const char *query, size_t query_len,
    const char *path, size_t path_len, const psd_ip_t *client);

const psd_link_key_t *psd_link_key_find(const psd_link_key_t *keys,
    size_t nkeys, const char *kid, size_t kid_len);

/*
 * the string that is signed; path is ignored for a prefix link.  returns
 * its length (a NUL follows if it fits), or -1 if buf is too small
 */
long psd_link_canonical(const psd_link_t *link, const char *path,
    size_t path_len, char *buf, size_t size);

/*
 * writes the query string of a new link (no '?', NUL-terminated) and
 * returns its length; -1 if a parameter is invalid or buf too small, with
 * *err (if err is not NULL) saying which
 */
long psd_link_sign(const psd_link_params_t *params, char *buf, size_t size,
    const char **err);

/*
 * percent-encodes path for a URL: every byte but the RFC 3986 unreserved
 * characters and '/'; returns the length (a NUL follows if it fits), or -1
 * if buf is too small (3 * len + 1 always suffices)
 */
long psd_link_encode_path(char *buf, size_t size, const char *path,
    size_t len);

/*
 * The key that signs links of another purpose than downloads (rating
 * links): HMAC-SHA256(key, "psd-link-purpose-v1\n" purpose), 32 bytes into
 * out (docs/link-format.md, "Purpose keys").  A link signed under it never
 * verifies under the key itself, nor the reverse.  purpose: 1 to
 * PSD_LINK_PURPOSE_MAX of [a-z]; 0 on success, -1 otherwise.
 */
int psd_link_purpose_key(const unsigned char *key, size_t key_len,
    const char *purpose, size_t purpose_len, unsigned char *out);

#endif
