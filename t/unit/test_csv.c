/*
 * Unit tests: psd_csv, the RFC 4180 reader and the field escaping.
 */

#include <stdlib.h>

#include "tap.h"
#include "psd_csv.h"


static char              buf[256];
static psd_csv_reader_t  rd;


/* every record of data as "a|b|c;" lines, or "ERR <error> @<line>" */
static const char *
records(const char *data, size_t len)
{
    int            rc;
    size_t         i;
    static char    out[1024];
    size_t         o;

    psd_csv_init(&rd, data, len, buf, sizeof(buf));
    o = 0;
    out[0] = '\0';

    while ((rc = psd_csv_read(&rd)) == 1) {
        for (i = 0; i < rd.nfields; i++) {
            o += snprintf(out + o, sizeof(out) - o, "%s%.*s", i ? "|" : "",
                          (int) rd.field[i].len, rd.field[i].data);
        }

        o += snprintf(out + o, sizeof(out) - o, ";");
    }

    if (rc < 0) {
        snprintf(out + o, sizeof(out) - o, "ERR %s @%zu", rd.error, rd.line);
    }

    return out;
}


#define R(s)  records(s, sizeof(s) - 1)


static const char *
esc(const char *s, unsigned flags)
{
    static char  out[256];
    size_t       n, m;

    n = psd_csv_escape(NULL, s, strlen(s), flags);
    m = psd_csv_escape(out, s, strlen(s), flags);
    out[m] = '\0';

    return n == m ? out : "length mismatch";
}


int
main(void)
{
    int               i;
    psd_csv_field_t   f;
    char              big[600];

    /* RFC 4180 */
    is_str(R("a,b,c\r\nd,e,f\r\n"), "a|b|c;d|e|f;", "CRLF records");
    is_str(R("a,b,c\nd,e,f"), "a|b|c;d|e|f;", "LF, no final line break");
    is_str(R("a,,c\n,\n"), "a||c;|;", "empty fields");
    is_str(R("\"a,b\",\"c\"\"d\",\"\"\n"), "a,b|c\"d|;",
           "quoted comma, doubled quote, empty quoted");
    is_str(R("\"line1\r\nline2\",x\n"), "line1\r\nline2|x;",
           "a quoted field keeps its line break");
    is_str(R("a\n\n\r\nb\n"), "a;b;", "empty lines hold no record");
    is_str(R("\xef\xbb\xbfid,type\n1,charge\n"), "id|type;1|charge;",
           "byte order mark skipped");
    is_str(R(""), "", "empty input");
    is_str(R("a,\n"), "a|;", "trailing comma: an empty last field");
    is_str(R(" a , b \n"), " a | b ;", "spaces are data");
    is_str(R("caf\xc3\xa9,\xe2\x82\xac\n"), "caf\xc3\xa9|\xe2\x82\xac;",
           "UTF-8 passes");

    /* what the RFC does not allow */
    is_str(R("a,b\"c\n"), "ERR quote in an unquoted field @1",
           "quote inside an unquoted field");
    is_str(R("x\n\"ab\"c,d\n"), "x;ERR text after a closing quote @2",
           "text after the closing quote");
    is_str(R("x\n\"abc\n\ndef\n"), "x;ERR unterminated quoted field @2",
           "unterminated quote: the record's first line");
    is_str(R("a\rb\n"), "ERR CR without LF @1", "a lone CR");
    is_str(records("a,b\0c\n", 6), "ERR NUL byte @1", "NUL byte");
    is_str(records("\"a\0\"\n", 5), "ERR NUL byte @1", "NUL in quotes");

    /* lines are counted across quoted line breaks */
    psd_csv_init(&rd, "h\n\"a\nb\"\nc\n", 10, buf, sizeof(buf));
    psd_csv_read(&rd);
    psd_csv_read(&rd);
    is_int(rd.line, 2, "the quoted record starts on line 2");
    psd_csv_read(&rd);
    is_int(rd.line, 4, "the next on line 4");
    is_int(psd_csv_read(&rd), 0, "then the end");
    is_int(psd_csv_read(&rd), 0, "and it stays at the end");

    /* limits: a field needs room for its NUL */
    memset(big, 'x', sizeof(big));
    is_str(records(big, 256), "ERR record too long @1", "256 bytes in 256");
    is_int(psd_csv_read(&rd), -1, "an error stays");
    psd_csv_init(&rd, big, 255, buf, sizeof(buf));
    is_int(psd_csv_read(&rd), 1, "255 bytes and the NUL fit 256");
    is_int(rd.field[0].len, 255, "all of them");
    psd_csv_init(&rd, big, 255, buf, sizeof(buf) - 1);
    is_int(psd_csv_read(&rd), -1, "255 bytes in 255: no room for the NUL");

    for (i = 0; i < 257; i++) {
        big[i] = ',';
    }
    is_str(records(big, 256), "ERR too many fields @1", "257 fields");
    psd_csv_init(&rd, big, 255, buf, sizeof(buf));
    ok(psd_csv_read(&rd) == 1 && rd.nfields == PSD_CSV_MAX_FIELDS,
       "256 empty fields fit");

    /* header lookup */
    psd_csv_init(&rd, "id,Type,Created (UTC),type\n", 27, buf, sizeof(buf));
    psd_csv_read(&rd);
    is_int(psd_csv_find(&rd, "type"), 1, "find ignores case, first wins");
    is_int(psd_csv_find(&rd, "created (utc)"), 2, "with spaces");
    is_int(psd_csv_find(&rd, "amount"), -1, "absent");

    /* escaping */
    is_str(esc("plain", 0), "plain", "plain");
    is_str(esc("", 0), "", "empty");
    is_str(esc("a,b", 0), "\"a,b\"", "comma quoted");
    is_str(esc("say \"hi\"", 0), "\"say \"\"hi\"\"\"", "quotes doubled");
    is_str(esc("a\nb", 0), "\"a\nb\"", "LF quoted");
    is_str(esc("a\rb", 0), "\"a\rb\"", "CR quoted");
    is_str(esc("=1+2", 0), "=1+2", "no guard without the flag");
    is_str(esc("=1+2", PSD_CSV_GUARD), "\"'=1+2\"", "formula guarded");
    is_str(esc("+1", PSD_CSV_GUARD), "\"'+1\"", "+ guarded");
    is_str(esc("-1", PSD_CSV_GUARD), "\"'-1\"", "- guarded");
    is_str(esc("@x", PSD_CSV_GUARD), "\"'@x\"", "@ guarded");
    is_str(esc("\tx", PSD_CSV_GUARD), "\"'\tx\"", "TAB guarded");
    is_str(esc("'x", PSD_CSV_GUARD), "\"''x\"", "the guard's mark guarded");
    is_str(esc("a=b", PSD_CSV_GUARD), "a=b", "= inside is fine");
    is_str(esc("=\"x\",1", PSD_CSV_GUARD), "\"'=\"\"x\"\",1\"",
           "guard and quotes");

    /* escape then read gives the value back */
    {
        const char  *vals[] = { "=cmd|' /C calc'!A0", "'=x", "'", "-",
                                "a\"b,c\r\nd", "pi_3Mtw", "" };
        char         line[512];
        size_t       k, n;

        for (k = 0; k < sizeof(vals) / sizeof(vals[0]); k++) {
            n = psd_csv_escape(line, vals[k], strlen(vals[k]),
                               PSD_CSV_GUARD);
            line[n++] = ',';
            line[n++] = 'z';
            line[n++] = '\n';
            psd_csv_init(&rd, line, n, buf, sizeof(buf));

            if (vals[k][0] == '\0') {
                /* a lone empty field then z */
                ok(psd_csv_read(&rd) == 1 && rd.nfields == 2
                   && rd.field[0].len == 0, "round trip of \"\"");
                continue;
            }

            ok(psd_csv_read(&rd) == 1 && rd.nfields == 2,
               "round trip %zu reads", k);
            f = rd.field[0];
            psd_csv_unguard(&f);
            ok(f.len == strlen(vals[k]) && memcmp(f.data, vals[k], f.len) == 0,
               "round trip %zu gives the value back", k);
        }
    }

    f.data = "'a";
    f.len = 2;
    psd_csv_unguard(&f);
    is_int(f.len, 2, "\"'a\" is not a guard");

    return done_testing();
}
