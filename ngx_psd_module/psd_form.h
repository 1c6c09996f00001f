/*
 * Copyright (C) ngx_psd_module authors
 *
 * Finds configured fields in an application/x-www-form-urlencoded body
 * (or a query string) and reports their byte ranges and decoded values,
 * for psd_rewrite() (psd_json.h) to replace.  nginx-free.
 *
 * Pairs are separated by '&' only; empty pairs are skipped; a pair without
 * '=' has an empty value.  Names and values are percent-decoded, '+' being
 * a space.  A decoded name splits into path segments like PHP and Rails
 * read it: "card[number]", "card.number" and "card.details[number]" are
 * ["card", "number"], ["card", "number"], ["card", "details", "number"];
 * text after the last ']' is ignored, as PHP does; with an unclosed '['
 * the name only splits on '.'.  "[]" is an empty segment that only "*"
 * matches.  Paths use psd_path_parse() syntax; array indexes are plain
 * segments here ("items.0.pan" matches "items[0][pan]").
 */

#ifndef PSD_FORM_H
#define PSD_FORM_H

#include <stddef.h>

#include "psd_json.h"


/* stable names: see psd_form_strerror() */
typedef enum {
    PSD_FORM_OK = 0,
    PSD_FORM_BAD_ENCODING,      /* "bad_encoding": '%' without two hex */
    PSD_FORM_DUPLICATE,         /* "duplicate_field" */
    PSD_FORM_TOO_MANY_MATCHES,  /* "too_many_matches" */
    PSD_FORM_NO_SPACE,          /* "no_space": dec too small */
    PSD_FORM_ERROR              /* "internal_error": bad arguments */
} psd_form_rc_t;

typedef struct {
    /* raw byte ranges: the name, and the value after '=' (empty when
     * there is no '=': then start == end == name_end) */
    size_t       name_start;
    size_t       name_end;
    size_t       start;
    size_t       end;
    int          has_value;
    size_t       path_index;
    /* decoded, in ctx->dec, NUL-terminated (they may hold NUL bytes) */
    const char  *name;
    size_t       name_len;
    const char  *value;
    size_t       value_len;
    /* segments joined by '.', like "card.number"; bytes outside printable
     * ASCII and '"', '\\' show as '?' */
    char         path[PSD_PATH_TEXT_MAX];
    size_t       path_len;
} psd_form_match_t;

typedef struct {
    const psd_path_t  *paths;
    size_t             npaths;
} psd_form_conf_t;

typedef struct {
    /* in */
    psd_form_match_t  *matches;
    size_t             max_matches;
    char              *dec;
    size_t             dec_size;

    /* out */
    size_t             nmatches;
    size_t             dec_used;
    psd_form_rc_t      rc;
    size_t             err_offset;
    char               err_path[PSD_PATH_TEXT_MAX];
    size_t             err_path_len;
} psd_form_ctx_t;

/*
 * Checks the encoding of the whole body and reports the fields configured
 * paths match, in order.  Two matches with the same segments are
 * "duplicate_field" ("card[number]" and "card.number" too), unless one has
 * an empty "[]" segment, which PHP and Rails read as appending.
 * dec_size >= len + 2 * max_matches + 1 always suffices.
 */
psd_form_rc_t psd_form_scan(const psd_form_conf_t *conf,
    const unsigned char *buf, size_t len, psd_form_ctx_t *ctx);

const char *psd_form_strerror(psd_form_rc_t rc);

#define psd_form_encoded_max(len)  ((len) * 3)

/*
 * Encodes for a form value: [A-Za-z0-9*-._] stay, space becomes '+',
 * anything else %XX.  out holds psd_form_encoded_max(len); returns the
 * length written.
 */
size_t psd_form_encode(char *out, const void *data, size_t len);

#endif
