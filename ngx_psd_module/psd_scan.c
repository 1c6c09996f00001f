/*
 * Copyright (C) ngx_psd_module authors
 */

#include <stdarg.h>
#include <stdio.h>

#include "psd_scan.h"


int
psd_scan_fail(psd_scan_t *ps, const char *at, const char *fmt, ...)
{
    int      n;
    size_t   len, column;
    va_list  args;

    column = (size_t) (at - ps->start) + 1;

    if (ps->column) {
        *ps->column = column;
    }

    if (ps->err == NULL || ps->err_len == 0) {
        return -1;
    }

    va_start(args, fmt);
    n = vsnprintf(ps->err, ps->err_len, fmt, args);
    va_end(args);

    len = n < 0 ? 0 : (size_t) n;
    if (len >= ps->err_len) {
        len = ps->err_len - 1;
    }

    snprintf(ps->err + len, ps->err_len - len, " at column %zu", column);

    return -1;
}


int
psd_scan_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}


int
psd_scan_is_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '_';
}


void
psd_scan_skip_space(psd_scan_t *ps)
{
    while (ps->p < ps->end && psd_scan_is_space(*ps->p)) {
        ps->p++;
    }
}


size_t
psd_scan_word(psd_scan_t *ps)
{
    const char  *s = ps->p;

    while (ps->p < ps->end && psd_scan_is_word(*ps->p)) {
        ps->p++;
    }

    return (size_t) (ps->p - s);
}


void
psd_print(psd_print_t *w, const char *fmt, ...)
{
    int      n;
    va_list  args;

    va_start(args, fmt);
    n = vsnprintf(w->len < w->size ? w->buf + w->len : NULL,
                  w->len < w->size ? w->size - w->len : 0, fmt, args);
    va_end(args);

    if (n > 0) {
        w->len += (size_t) n;
    }
}
