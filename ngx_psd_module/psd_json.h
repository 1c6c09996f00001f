/*
 * Copyright (C) ngx_psd_module authors
 *
 * Finds configured fields in a JSON body and rewrites their values in
 * place, every other byte passing through unchanged.  A strict RFC 8259
 * validator with an explicit stack (no recursion, no allocation), duplicate
 * key detection in constant time per key, and dotted path matching.
 * Also the path syntax and the rewrite helper that psd_form shares.
 * nginx-free.
 */

#ifndef PSD_JSON_H
#define PSD_JSON_H

#include <stddef.h>
#include <stdint.h>


/*
 * Paths: segments joined by '.', like "card.number", "items.0.pan",
 * "cards.*.number".  A segment matches an object key equal to it (after
 * escapes are decoded), or an array index when it is a canonical decimal
 * ("0", "12"; not "012").  "*" matches any key or index.  Keys that
 * contain '.' cannot be named, and no segment matches a key "*" but "*".
 */

#define PSD_PATHS_MAX        32
#define PSD_PATH_SEGS_MAX    16
/* rendered concrete paths (for messages) are cut to fit, "..." marks it */
#define PSD_PATH_TEXT_MAX    256

typedef struct {
    const char  *data;
    size_t       len;
    long         index;        /* canonical decimal value, else -1 */
    int          wildcard;
} psd_path_seg_t;

typedef struct {
    psd_path_seg_t  segs[PSD_PATH_SEGS_MAX];
    size_t          nsegs;
} psd_path_t;

/*
 * 0, or -1 for an empty path or segment, or more than PSD_PATH_SEGS_MAX
 * segments.  path points into text, which must outlive it.
 */
int psd_path_parse(const char *text, size_t len, psd_path_t *path);


/*
 * Rewriting: edits replace [start, end) of the original with data; they
 * must be sorted by start and must not overlap (-1 otherwise).
 */

typedef struct {
    size_t       start;
    size_t       end;
    const void  *data;
    size_t       len;
} psd_edit_t;

/* the length of the result, for Content-Length and the output buffer */
int psd_rewrite_len(size_t len, const psd_edit_t *edits, size_t n,
    size_t *out_len);

/* writes the result; -1 on bad edits or when out_size is too small */
int psd_rewrite(const unsigned char *buf, size_t len,
    const psd_edit_t *edits, size_t n, unsigned char *out, size_t out_size,
    size_t *out_len);


/* JSON */

#define PSD_JSON_DEPTH_DEFAULT  32
#define PSD_JSON_DEPTH_MAX      128
#define PSD_JSON_SLOTS_DEFAULT  1024

/* stable names: see psd_json_strerror() */
typedef enum {
    PSD_JSON_OK = 0,
    PSD_JSON_INVALID,           /* "invalid_json" */
    PSD_JSON_INVALID_UTF8,      /* "invalid_utf8": in a string */
    PSD_JSON_NOT_OBJECT,        /* "not_an_object": valid, but not {...} */
    PSD_JSON_TOO_DEEP,          /* "too_deep" */
    PSD_JSON_DUPLICATE_KEY,     /* "duplicate_key" */
    PSD_JSON_TOO_MANY_KEYS,     /* "too_many_keys": slots too few */
    PSD_JSON_TOO_MANY_MATCHES,  /* "too_many_matches" */
    PSD_JSON_NO_SPACE,          /* "no_space": dec too small */
    PSD_JSON_TOO_LARGE,         /* "too_large": 4 GiB or more */
    PSD_JSON_ERROR              /* "internal_error": bad arguments */
} psd_json_rc_t;

typedef enum {
    PSD_JSON_STRING = 0,
    PSD_JSON_NUMBER,
    PSD_JSON_OBJECT,
    PSD_JSON_ARRAY,
    PSD_JSON_TRUE,
    PSD_JSON_FALSE,
    PSD_JSON_NULL
} psd_json_type_t;

typedef struct {
    /* the value's bytes [start, end): a string's include its quotes */
    size_t           start;
    size_t           end;
    psd_json_type_t  type;
    /* the first configured path (in order) that matches */
    size_t           path_index;
    /*
     * in ctx->dec, NUL-terminated: a string's content with escapes
     * decoded (it may hold NUL bytes), a number's or literal's text; NULL
     * for objects and arrays
     */
    const char      *value;
    size_t           value_len;
    /* the concrete path, like "cards.1.number"; bytes that would need
     * escaping in JSON or a log line show as '?' */
    char             path[PSD_PATH_TEXT_MAX];
    size_t           path_len;
} psd_json_match_t;

/* the duplicate key table, caller-provided (see nslots) */
typedef struct {
    uint32_t  hash;
    uint32_t  obj;
    uint32_t  key;
    uint32_t  key_len;
    uint32_t  prev;
} psd_json_slot_t;

typedef struct {
    const psd_path_t     *paths;
    size_t                npaths;           /* <= PSD_PATHS_MAX */
    size_t                max_depth;        /* 0: PSD_JSON_DEPTH_DEFAULT */
    /* 16 bytes keying the table's hash; NULL draws random per call */
    const unsigned char  *hash_key;
} psd_json_conf_t;

typedef struct {
    /* in */
    psd_json_match_t  *matches;
    size_t             max_matches;
    char              *dec;
    size_t             dec_size;
    /* a power of two; at most nslots / 2 keys in all open objects */
    psd_json_slot_t   *slots;
    size_t             nslots;

    /* out */
    size_t             nmatches;
    size_t             dec_used;
    psd_json_rc_t      rc;
    size_t             err_offset;
    char               err_path[PSD_PATH_TEXT_MAX];
    size_t             err_path_len;
} psd_json_ctx_t;

/*
 * Validates buf and reports the values at configured paths, in order of
 * start.  A value that several paths match is reported once.  Nested
 * matches ("card" and "card.number") are both reported, and overlap.
 * dec_size >= len + max_matches always suffices.  On error, ctx->rc,
 * err_offset (the byte at fault, or len at an unexpected end) and
 * err_path tell what and where; the matches are then meaningless.
 */
psd_json_rc_t psd_json_scan(const psd_json_conf_t *conf,
    const unsigned char *buf, size_t len, psd_json_ctx_t *ctx);

const char *psd_json_strerror(psd_json_rc_t rc);
const char *psd_json_type_name(psd_json_type_t type);

/* the most psd_json_quote() writes for len bytes */
#define psd_json_quoted_max(len)  ((len) * 6 + 2)

/*
 * Writes data as a JSON string, quotes included, escaping '"', '\\' and
 * control bytes; other bytes pass as they are.  Returns the length, or 0
 * if out_size is too small.
 */
size_t psd_json_quote(char *out, size_t out_size, const void *data,
    size_t len);

#endif
