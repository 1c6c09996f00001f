/*
 * libFuzzer target: psd_csv_read() and the parsers psd-reconcile runs on
 * each field (times, days, amounts).
 *
 * Invariants checked (abort() on violation):
 *  - every field lies in the record buffer, ends in '\0' and holds no
 *    NUL; an error has a reason and a line no further than the input's;
 *  - the records, escaped again (with and without the formula guard) and
 *    read back, are the same records: what the module writes, the reader
 *    reads;
 *  - a time, day or amount that parses formats back to itself.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "psd_csv.h"
#include "psd_reconcile.h"


#define BUF_SIZE  4096


static void
die(const char *what)
{
    fprintf(stderr, "fuzz_csv: invariant broken: %s\n", what);
    abort();
}


static void
fields(const char *f, size_t len)
{
    int64_t  t, t2, v, v2, d;
    char     out[32];

    if (psd_recon_time_parse(f, len, &t) == 0) {
        if (t < 0 || t > PSD_RECON_TIME_MAX) {
            die("time out of range");
        }

        psd_recon_time_format(t, out);

        if (psd_recon_time_parse(out, strlen(out), &t2) != 0 || t2 != t) {
            die("time round trip");
        }
    }

    if (psd_recon_day_parse(f, len, &d) == 0) {
        if (d < 0 || d > PSD_RECON_DAY_MAX) {
            die("day out of range");
        }

        psd_recon_day_format(d, out);

        if (len != 10 || memcmp(out, f, 10) != 0) {
            die("day round trip");
        }
    }

    if (psd_recon_major_parse(f, len, 2, &v) == 0) {
        snprintf(out, sizeof(out), "%s%lld.%02lld", v < 0 ? "-" : "",
                 (long long) (v < 0 ? -v : v) / 100,
                 (long long) (v < 0 ? -v : v) % 100);

        if (psd_recon_major_parse(out, strlen(out), 2, &v2) != 0 || v2 != v)
        {
            die("amount round trip");
        }
    }

    if (psd_recon_minor_parse(f, len, &v) == 0) {
        snprintf(out, sizeof(out), "%lld", (long long) v);

        if (psd_recon_minor_parse(out, strlen(out), &v2) != 0 || v2 != v) {
            die("minor amount round trip");
        }
    }

    (void) psd_recon_order_id_valid(f, len);
    (void) psd_recon_currency_exponent(f, len);
}


/* all records of data, escaped again with flags, into out */
static size_t
rewrite(const uint8_t *data, size_t size, unsigned flags, char *out,
    size_t *nrecords)
{
    int               rc;
    size_t            i, o, lines;
    char             *buf;
    psd_csv_reader_t  rd;

    buf = malloc(BUF_SIZE);
    psd_csv_init(&rd, (const char *) data, size, buf, BUF_SIZE);

    /* a first field that starts like a byte order mark must stay data */
    memcpy(out, "\xef\xbb\xbf", 3);
    o = 3;
    *nrecords = 0;
    lines = 1;

    for (i = 0; i < size; i++) {
        lines += data[i] == '\n';
    }

    while ((rc = psd_csv_read(&rd)) == 1) {
        (*nrecords)++;

        if (rd.nfields == 0 || rd.nfields > PSD_CSV_MAX_FIELDS) {
            die("field count");
        }

        for (i = 0; i < rd.nfields; i++) {
            if (rd.field[i].data < buf
                || rd.field[i].data + rd.field[i].len >= buf + BUF_SIZE
                || rd.field[i].data[rd.field[i].len] != '\0'
                || memchr(rd.field[i].data, '\0', rd.field[i].len))
            {
                die("field bounds");
            }

            if (flags == 0) {
                fields(rd.field[i].data, rd.field[i].len);
            }

            if (i > 0) {
                out[o++] = ',';
            }

            /* a record of one empty field would be an empty line */
            if (rd.nfields == 1 && rd.field[0].len == 0) {
                out[o++] = '"';
                out[o++] = '"';
            }

            o += psd_csv_escape(out + o, rd.field[i].data, rd.field[i].len,
                                flags);
        }

        out[o++] = '\r';
        out[o++] = '\n';
    }

    if (rc < 0 && (rd.error == NULL || rd.line == 0 || rd.line > lines)) {
        die("error report");
    }

    free(buf);

    return rc < 0 ? (size_t) -1 : o;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int               rc1, rc2;
    char             *out, *b1, *b2;
    size_t            len, i, n1, n2;
    unsigned          flags;
    psd_csv_field_t   f;
    psd_csv_reader_t  r1, r2;

    /* per field at most a guard, two quotes, "\"\"" and a comma; CRLF */
    out = malloc(10 * size + 64);
    b1 = malloc(BUF_SIZE);
    b2 = malloc(2 * BUF_SIZE);

    for (flags = 0; flags <= PSD_CSV_GUARD; flags++) {
        len = rewrite(data, size, flags, out, &n1);

        if (len == (size_t) -1) {
            break;
        }

        /* the rewrite reads as the same records */

        psd_csv_init(&r1, (const char *) data, size, b1, BUF_SIZE);
        psd_csv_init(&r2, out, len, b2, 2 * BUF_SIZE);
        n2 = 0;

        for ( ;; ) {
            rc1 = psd_csv_read(&r1);
            rc2 = psd_csv_read(&r2);

            if (rc1 != rc2) {
                die("rewrite reads differently");
            }

            if (rc1 != 1) {
                break;
            }

            n2++;

            if (r1.nfields != r2.nfields) {
                die("rewrite has other fields");
            }

            for (i = 0; i < r1.nfields; i++) {
                f = r2.field[i];

                if (flags & PSD_CSV_GUARD) {
                    psd_csv_unguard(&f);
                }

                if (f.len != r1.field[i].len
                    || memcmp(f.data, r1.field[i].data, f.len) != 0)
                {
                    die("rewrite changes a field");
                }
            }
        }

        if (n2 != n1) {
            die("record count");
        }
    }

    free(b2);
    free(b1);
    free(out);

    return 0;
}
