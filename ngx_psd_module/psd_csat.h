/*
 * Copyright (C) ngx_psd_module authors
 *
 * Customer satisfaction: what a rating link brings in from the customer
 * (the score, the optional comment) and the ticket id in its path, each
 * checked before it goes near Redis.  nginx-free.
 */

#ifndef PSD_CSAT_H
#define PSD_CSAT_H

#include <stddef.h>

#define PSD_CSAT_SCORE_MIN    1
#define PSD_CSAT_SCORE_MAX    5

/* bytes of UTF-8; a browser's textarea counts characters, we count bytes */
#define PSD_CSAT_COMMENT_MAX  2000

/* "<queue>.<id>", each part 1 to 32 of [A-Za-z0-9_-] */
#define PSD_CSAT_NAME_MAX     32
#define PSD_CSAT_TICKET_MAX   (2 * PSD_CSAT_NAME_MAX + 1)


typedef enum {
    PSD_CSAT_OK = 0,
    PSD_CSAT_TOO_LONG,
    PSD_CSAT_NOT_UTF8,
    PSD_CSAT_CONTROL,         /* a control character but tab, CR or LF */
    PSD_CSAT_CARD             /* what looks like a card number */
} psd_csat_comment_e;


/* exactly one digit from "1" to "5": the score; 0 for anything else */
int psd_csat_score(const char *s, size_t len);

/*
 * A comment as it may be stored: at most max bytes (0: no limit), valid
 * UTF-8, no control character (C0 but tab, CR and LF; DEL; C1), no card
 * number (psd_card_scan()).  The first problem found, in that order.
 */
psd_csat_comment_e psd_csat_comment_check(const unsigned char *s, size_t len,
    size_t max);

/*
 * "<queue>.<id>" as the ticket intake makes them: the length of the queue
 * part, or 0 if s is no ticket id
 */
size_t psd_csat_ticket_id(const char *s, size_t len);

/*
 * The ticket a rating path names: its last segment, after the last '/'.
 * 0 and *id, *id_len, *queue_len on success; -1 if the path does not end
 * in a ticket id.
 */
int psd_csat_ticket_from_path(const char *path, size_t len, const char **id,
    size_t *id_len, size_t *queue_len);

#endif
