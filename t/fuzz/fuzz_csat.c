/*
 * libFuzzer target: what a rating link brings in from the customer.  The
 * input is read as a score, a comment and a rating path.  Besides "no
 * crash":
 *   - the score is 1 to 5 exactly for the one-byte inputs "1" to "5";
 *   - the ticket id check agrees with a reference written here, and the
 *     path's ticket is its last segment;
 *   - an accepted comment is within its bound, holds no control byte but
 *     tab, CR and LF, and no C1 control; a refused one names a problem
 *     the reference finds too (for TOO_LONG, CONTROL).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "psd_csat.h"


static size_t
ref_name(const uint8_t *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
        {
            return 0;
        }
    }

    return len >= 1 && len <= 32;
}


static size_t
ref_ticket(const uint8_t *s, size_t len)
{
    const uint8_t  *dot;

    dot = memchr(s, '.', len);

    if (dot == NULL || !ref_name(s, dot - s)
        || !ref_name(dot + 1, len - (dot + 1 - s)))
    {
        return 0;
    }

    return dot - s;
}


static int
ref_control(const uint8_t *s, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if ((s[i] < 0x20 && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            || s[i] == 0x7f
            || (s[i] == 0xc2 && i + 1 < len && s[i + 1] >= 0x80
                && s[i + 1] <= 0x9f))
        {
            return 1;
        }
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                 score;
    size_t              q, n, qlen, max;
    const char         *id;
    psd_csat_comment_e  rc;

    score = psd_csat_score((const char *) data, size);

    if (score != ((size == 1 && data[0] >= '1' && data[0] <= '5')
                  ? data[0] - '0' : 0))
    {
        abort();
    }

    q = psd_csat_ticket_id((const char *) data, size);

    if (q != ref_ticket(data, size)) {
        abort();
    }

    if (psd_csat_ticket_from_path((const char *) data, size, &id, &n, &qlen)
        == 0)
    {
        if (n == 0 || id < (const char *) data + 1 || id[-1] != '/'
            || id + n != (const char *) data + size
            || memchr(id, '/', n) != NULL
            || qlen != ref_ticket((const uint8_t *) id, n) || qlen == 0)
        {
            abort();
        }
    }

    /* the first byte picks the bound: 0 (none) or up to 255 bytes */

    max = size ? data[0] : 0;
    rc = psd_csat_comment_check(data, size, max);

    switch (rc) {

    case PSD_CSAT_OK:
        if ((max && size > max) || ref_control(data, size)) {
            abort();
        }
        break;

    case PSD_CSAT_TOO_LONG:
        if (!max || size <= max) {
            abort();
        }
        break;

    case PSD_CSAT_CONTROL:
        if (!ref_control(data, size)) {
            abort();
        }
        break;

    case PSD_CSAT_NOT_UTF8:
    case PSD_CSAT_CARD:
        break;

    default:
        abort();
    }

    return 0;
}
