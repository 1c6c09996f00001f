/*
 * Copyright (C) ngx_psd_module authors
 */

#include <string.h>

#include "psd_card.h"
#include "psd_csat.h"
#include "psd_triage.h"


int
psd_csat_score(const char *s, size_t len)
{
    if (s == NULL || len != 1
        || s[0] < '0' + PSD_CSAT_SCORE_MIN || s[0] > '0' + PSD_CSAT_SCORE_MAX)
    {
        return 0;
    }

    return s[0] - '0';
}


psd_csat_comment_e
psd_csat_comment_check(const unsigned char *s, size_t len, size_t max)
{
    size_t           i;
    psd_card_scan_t  m;

    if (max && len > max) {
        return PSD_CSAT_TOO_LONG;
    }

    if (!psd_triage_utf8_valid(s, len)) {
        return PSD_CSAT_NOT_UTF8;
    }

    for (i = 0; i < len; i++) {
        if ((s[i] < 0x20 && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            || s[i] == 0x7f)
        {
            return PSD_CSAT_CONTROL;
        }

        /* C1 controls, U+0080 to U+009F: 0xc2 0x80 to 0xc2 0x9f */

        if (s[i] == 0xc2 && i + 1 < len && s[i + 1] >= 0x80
            && s[i + 1] <= 0x9f)
        {
            return PSD_CSAT_CONTROL;
        }
    }

    /* a comment is stored in clear, like a ticket: no card numbers */

    if (psd_card_scan(s, len, 0, &m)) {
        return PSD_CSAT_CARD;
    }

    return PSD_CSAT_OK;
}


static size_t
psd_csat_name(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len && i <= PSD_CSAT_NAME_MAX; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
        {
            break;
        }
    }

    return (i >= 1 && i <= PSD_CSAT_NAME_MAX) ? i : 0;
}


size_t
psd_csat_ticket_id(const char *s, size_t len)
{
    size_t  q;

    if (s == NULL || len < 3 || len > PSD_CSAT_TICKET_MAX) {
        return 0;
    }

    q = psd_csat_name(s, len);

    if (q == 0 || q + 1 >= len || s[q] != '.'
        || psd_csat_name(s + q + 1, len - q - 1) != len - q - 1)
    {
        return 0;
    }

    return q;
}


int
psd_csat_ticket_from_path(const char *path, size_t len, const char **id,
    size_t *id_len, size_t *queue_len)
{
    size_t  i, q;

    for (i = len; i > 0 && path[i - 1] != '/'; i--) {
        /* void */
    }

    if (i == 0) {
        return -1;
    }

    q = psd_csat_ticket_id(path + i, len - i);

    if (q == 0) {
        return -1;
    }

    *id = path + i;
    *id_len = len - i;
    *queue_len = q;

    return 0;
}
