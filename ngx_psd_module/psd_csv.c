/*
 * Copyright (C) ngx_psd_module authors
 */

#include <string.h>

#include "psd_csv.h"


/* what a spreadsheet takes for a formula, and the guard's own mark */
static const char  psd_csv_formula[] = "=+-@\t\r'";


void
psd_csv_init(psd_csv_reader_t *c, const char *data, size_t len, char *buf,
    size_t size)
{
    c->p = data;
    c->end = data + len;
    c->buf = buf;
    c->size = size;
    c->line = 0;
    c->next_line = 1;
    c->nfields = 0;
    c->error = NULL;

    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0) {
        c->p += 3;
    }
}


static int
psd_csv_fail(psd_csv_reader_t *c, const char *error, size_t line)
{
    c->error = error;
    c->line = line;
    c->nfields = 0;
    c->p = c->end;

    return -1;
}


int
psd_csv_read(psd_csv_reader_t *c)
{
    char        *o, *oend, *start;
    const char  *p, *end;

    if (c->error) {
        return -1;
    }

    p = c->p;
    end = c->end;

    /* empty lines hold no record */

    for ( ;; ) {
        if (p == end) {
            c->p = p;
            c->nfields = 0;
            return 0;
        }

        if (*p == '\n') {
            p++;
            c->next_line++;
            continue;
        }

        if (*p == '\r' && p + 1 < end && p[1] == '\n') {
            p += 2;
            c->next_line++;
            continue;
        }

        break;
    }

    c->line = c->next_line;
    c->nfields = 0;

    o = c->buf;
    oend = c->buf + c->size;

    for ( ;; ) {
        if (c->nfields == PSD_CSV_MAX_FIELDS) {
            return psd_csv_fail(c, "too many fields", c->next_line);
        }

        start = o;

        if (p < end && *p == '"') {
            p++;

            for ( ;; ) {
                if (p == end) {
                    return psd_csv_fail(c, "unterminated quoted field",
                                        c->line);
                }

                if (*p == '"') {
                    if (p + 1 < end && p[1] == '"') {
                        p++;

                    } else {
                        p++;
                        break;
                    }

                } else if (*p == '\0') {
                    return psd_csv_fail(c, "NUL byte", c->next_line);

                } else if (*p == '\n') {
                    c->next_line++;
                }

                if (o == oend) {
                    return psd_csv_fail(c, "record too long", c->line);
                }

                *o++ = *p++;
            }

            if (p < end && *p != ',' && *p != '\n' && *p != '\r') {
                return psd_csv_fail(c, "text after a closing quote",
                                    c->next_line);
            }

        } else {
            while (p < end && *p != ',' && *p != '\n' && *p != '\r') {
                if (*p == '"') {
                    return psd_csv_fail(c, "quote in an unquoted field",
                                        c->next_line);
                }

                if (*p == '\0') {
                    return psd_csv_fail(c, "NUL byte", c->next_line);
                }

                if (o == oend) {
                    return psd_csv_fail(c, "record too long", c->line);
                }

                *o++ = *p++;
            }
        }

        if (o == oend) {
            return psd_csv_fail(c, "record too long", c->line);
        }

        *o++ = '\0';

        c->field[c->nfields].data = start;
        c->field[c->nfields].len = (size_t) (o - start) - 1;
        c->nfields++;

        if (p == end) {
            c->p = p;
            return 1;
        }

        if (*p == ',') {
            p++;
            continue;
        }

        if (*p == '\n') {
            c->p = p + 1;
            c->next_line++;
            return 1;
        }

        /* '\r' */

        if (p + 1 < end && p[1] == '\n') {
            c->p = p + 2;
            c->next_line++;
            return 1;
        }

        return psd_csv_fail(c, "CR without LF", c->next_line);
    }
}


int
psd_csv_find(const psd_csv_reader_t *c, const char *name)
{
    size_t  i, k, len;
    char    a, b;

    len = strlen(name);

    for (i = 0; i < c->nfields; i++) {
        if (c->field[i].len != len) {
            continue;
        }

        for (k = 0; k < len; k++) {
            a = c->field[i].data[k];
            b = name[k];

            if (a >= 'A' && a <= 'Z') {
                a = (char) (a - 'A' + 'a');
            }

            if (b >= 'A' && b <= 'Z') {
                b = (char) (b - 'A' + 'a');
            }

            if (a != b) {
                break;
            }
        }

        if (k == len) {
            return (int) i;
        }
    }

    return -1;
}


size_t
psd_csv_escape(char *dst, const char *src, size_t len, unsigned flags)
{
    size_t  i, n, quotes;
    int     guard, quote;

    guard = (flags & PSD_CSV_GUARD) && len > 0
            && memchr(psd_csv_formula, src[0], sizeof(psd_csv_formula) - 1)
               != NULL;
    quote = guard;
    quotes = 0;

    for (i = 0; i < len; i++) {
        switch (src[i]) {
        case '"':
            quotes++;
            /* fall through */
        case ',':
        case '\r':
        case '\n':
            quote = 1;
            break;
        default:
            break;
        }
    }

    n = len + (size_t) guard + (quote ? 2 + quotes : 0);

    if (dst == NULL) {
        return n;
    }

    if (quote) {
        *dst++ = '"';
    }

    if (guard) {
        *dst++ = '\'';
    }

    for (i = 0; i < len; i++) {
        if (src[i] == '"') {
            *dst++ = '"';
        }

        *dst++ = src[i];
    }

    if (quote) {
        *dst = '"';
    }

    return n;
}


void
psd_csv_unguard(psd_csv_field_t *f)
{
    if (f->len >= 2 && f->data[0] == '\''
        && memchr(psd_csv_formula, f->data[1], sizeof(psd_csv_formula) - 1)
           != NULL)
    {
        f->data++;
        f->len--;
    }
}
