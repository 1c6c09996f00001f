/*
 * Copyright (C) ngx_psd_module authors
 */

/*
 * The scanner and printer shared by the module's small rule languages
 * (fraud rules, ticket triage): a cursor over a text that reports errors
 * with their column, and a printer that counts what did not fit.
 */

#ifndef PSD_SCAN_H_INCLUDED
#define PSD_SCAN_H_INCLUDED


#include <stddef.h>


typedef struct {
    const char  *start;
    const char  *p;
    const char  *end;
    char        *err;
    size_t       err_len;
    size_t      *column;
} psd_scan_t;


typedef struct {
    char        *buf;
    size_t       size;
    size_t       len;       /* what was wanted, may exceed size */
} psd_print_t;


typedef struct {
    const char  *name;
    size_t       len;
} psd_name_t;

#define PSD_NAME(s)  { s, sizeof(s) - 1 }

#define PSD_NELTS(a)  (sizeof(a) / sizeof(a[0]))


#if defined(__GNUC__)
#define PSD_PRINTF_LIKE(f, a)  __attribute__((format(printf, f, a)))
#else
#define PSD_PRINTF_LIKE(f, a)
#endif


/* writes "<message> at column N" to the error buffer; returns -1 */
int psd_scan_fail(psd_scan_t *ps, const char *at, const char *fmt, ...)
    PSD_PRINTF_LIKE(3, 4);

int psd_scan_is_space(char c);
int psd_scan_is_word(char c);
void psd_scan_skip_space(psd_scan_t *ps);

/* [A-Za-z0-9_]* at the cursor; returns its length and moves past it */
size_t psd_scan_word(psd_scan_t *ps);

void psd_print(psd_print_t *w, const char *fmt, ...) PSD_PRINTF_LIKE(2, 3);


#endif /* PSD_SCAN_H_INCLUDED */
