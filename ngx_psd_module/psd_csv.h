/*
 * Copyright (C) ngx_psd_module authors
 */

/*
 * CSV as RFC 4180 writes it: a reader over a whole buffer that hands out
 * one record at a time (quoted fields with "" escapes and line breaks,
 * CRLF or LF), strict about what the RFC does not allow, and the escaping
 * the module's export writes with.  Gateway exports and the module's own
 * export are read by the same code.
 */

#ifndef PSD_CSV_H_INCLUDED
#define PSD_CSV_H_INCLUDED


#include <stddef.h>


#define PSD_CSV_MAX_FIELDS  256


typedef struct {
    const char  *data;      /* unescaped, followed by a '\0' */
    size_t       len;
} psd_csv_field_t;


typedef struct {
    const char       *p;
    const char       *end;
    char             *buf;      /* the record's unescaped fields */
    size_t            size;
    size_t            line;     /* where the record read last starts */
    size_t            next_line;
    psd_csv_field_t   field[PSD_CSV_MAX_FIELDS];
    size_t            nfields;
    const char       *error;    /* why psd_csv_read() returned -1 */
} psd_csv_reader_t;


/*
 * buf holds one record's fields, each with a '\0' after it: a record
 * longer than size - (fields) is an error, never a truncation.  A UTF-8
 * byte order mark at the start is skipped.
 */
void psd_csv_init(psd_csv_reader_t *c, const char *data, size_t len,
    char *buf, size_t size);

/*
 * 1: a record is in c->field[0 .. nfields-1]; 0: end of input; -1: bad
 * input, c->error says why and c->line where.  Empty lines are skipped;
 * NUL bytes, a quote inside an unquoted field, text after a closing
 * quote, a lone CR and an unterminated quoted field are errors.
 */
int psd_csv_read(psd_csv_reader_t *c);

/* the index of the first field equal to name, ignoring ASCII case; -1 */
int psd_csv_find(const psd_csv_reader_t *c, const char *name);


/*
 * Writes src as one CSV field into dst (which may be NULL to measure) and
 * returns its length.  A field holding a comma, quote, CR or LF is quoted
 * with quotes doubled.  With PSD_CSV_GUARD a field starting with '=', '+',
 * '-', '@', TAB or CR (a formula to a spreadsheet), or with "'" itself,
 * gets a leading "'" and is quoted; psd_csv_unguard() takes it off again,
 * so that every value comes back as it was.
 */
#define PSD_CSV_GUARD  1

size_t psd_csv_escape(char *dst, const char *src, size_t len,
    unsigned flags);

/* f without the "'" that PSD_CSV_GUARD added, if it has one */
void psd_csv_unguard(psd_csv_field_t *f);


#endif /* PSD_CSV_H_INCLUDED */
