/*
 * Copyright (C) ngx_psd_module authors
 *
 * util/psd-reconcile: compares the module's order export (psd_reconcile,
 * CSV or JSON) with a gateway's settlement or balance export (CSV) and
 * lists what does not agree.  The reading and the matching are the
 * nginx-free psd_csv and psd_reconcile; this file is the files, the
 * columns and the output.
 */

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "psd_csv.h"
#include "psd_reconcile.h"


#define PSD_FILE_MAX    (512 * 1024 * 1024)
#define PSD_RECORD_MAX  (1024 * 1024)
#define NONE            PSD_RECON_NONE


typedef struct {
    const char     *orders;
    const char     *gateway;
    const char     *format;
    const char     *order_column;
    const char     *payment_column;
    const char     *from;
    const char     *to;
    const char     *slack;
    int             json;
} psd_opts_t;


typedef struct {
    char           *data;
    size_t          len;
    const char     *name;
} psd_file_t;


static const char  usage[] =
"usage: psd-reconcile --orders FILE --gateway FILE [--format stripe|generic]\n"
"                     [--order-column NAME] [--payment-column NAME]\n"
"                     [--from YYYY-MM-DD --to YYYY-MM-DD] [--slack SECONDS]\n"
"                     [--json]\n"
"\n"
"--orders   the module's export (psd_reconcile location), CSV or JSON;\n"
"           several pages may follow each other in one file.  A JSON\n"
"           export brings its period (from, to).\n"
"--gateway  the gateway's export, CSV.  --format stripe (the default): a\n"
"           Stripe balance transactions export (id, type, source, amount\n"
"           in major units, currency, created); --format generic:\n"
"           order_id, payment_id, amount (minor units), currency, type\n"
"           (payment, refund, chargeback; other values are ignored),\n"
"           date.  Columns are found by their header, in any order.\n"
"--order-column, --payment-column\n"
"           the gateway's columns that hold the shop's order id and the\n"
"           gateway payment id (stripe: \"order_id (metadata)\" when it\n"
"           exists, and \"source\").  A row is matched by order id when it\n"
"           has one, else by payment id.\n"
"--from, --to  the period both exports cover (UTC days); gateway rows\n"
"           outside it are not compared, and an order's payment or refund\n"
"           is expected only when it happened in it.  --slack (default\n"
"           3600) widens the period for gateway rows that may match.\n"
"--json     JSON on stdout instead of a table.\n"
"\n"
"Mismatches: paid_not_settled, settled_unknown, amount_differs,\n"
"currency_differs, refunded_here_only, refunded_there_only.\n"
"Exit status: 0 none, 1 mismatches, 2 usage or input error.\n";


static int  json_out;


/*
 * Errors: a line on stderr and, with --json, {"error": code, ...} on
 * stdout, so that a script reading stdout always gets JSON.
 */

static void
fail(const char *code, const char *file, size_t line, const char *fmt, ...)
{
    char     msg[512];
    json_t  *j;
    va_list  args;

    va_start(args, fmt);
    vsnprintf(msg, sizeof(msg), fmt, args);
    va_end(args);

    if (file && line) {
        fprintf(stderr, "psd-reconcile: %s:%zu: %s\n", file, line, msg);

    } else if (file) {
        fprintf(stderr, "psd-reconcile: %s: %s\n", file, msg);

    } else {
        fprintf(stderr, "psd-reconcile: %s\n", msg);
    }

    if (json_out) {
        j = json_pack("{s:s, s:s}", "error", code, "detail", msg);

        if (file) {
            json_object_set_new(j, "file", json_string(file));
        }

        if (line) {
            json_object_set_new(j, "line", json_integer((json_int_t) line));
        }

        json_dumpf(j, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(j);
    }

    exit(2);
}


/*
 * A run reads two files, prints, and exits: its memory goes with the
 * process, on purpose.  Under ASan (make asan) the leak check would report
 * that at every exit; ASan reads this hook when it starts.
 */

const char *__asan_default_options(void);

const char *
__asan_default_options(void)
{
    return "detect_leaks=0";
}


static void *
xalloc(size_t n)
{
    void  *p;

    p = calloc(1, n ? n : 1);
    if (p == NULL) {
        fail("out_of_memory", NULL, 0, "out of memory");
    }

    return p;
}


static char *
xstrndup(const char *s, size_t len)
{
    char  *p;

    p = xalloc(len + 1);
    memcpy(p, s, len);

    return p;
}


static void *
grow(void *items, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) {
        return items;
    }

    *cap = *cap ? *cap * 2 : 256;
    items = realloc(items, *cap * size);
    if (items == NULL) {
        fail("out_of_memory", NULL, 0, "out of memory");
    }

    return items;
}


static void
parse_opts(psd_opts_t *o, int argc, char **argv)
{
    int          i, k;
    size_t       n;
    const char  *arg, *eq, *val;

    static const struct {
        const char  *name;
        size_t       off;
    } names[] = {
        { "orders",         offsetof(psd_opts_t, orders) },
        { "gateway",        offsetof(psd_opts_t, gateway) },
        { "format",         offsetof(psd_opts_t, format) },
        { "order-column",   offsetof(psd_opts_t, order_column) },
        { "payment-column", offsetof(psd_opts_t, payment_column) },
        { "from",           offsetof(psd_opts_t, from) },
        { "to",             offsetof(psd_opts_t, to) },
        { "slack",          offsetof(psd_opts_t, slack) }
    };

    memset(o, 0, sizeof(psd_opts_t));

    for (i = 1; i < argc; i++) {
        arg = argv[i];

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(usage, stdout);
            exit(0);
        }

        if (strcmp(arg, "--json") == 0) {
            o->json = 1;
            json_out = 1;
            continue;
        }

        if (strncmp(arg, "--", 2) != 0) {
            fail("usage", NULL, 0, "unexpected argument \"%s\" (see --help)",
                 arg);
        }

        arg += 2;
        eq = strchr(arg, '=');
        n = eq ? (size_t) (eq - arg) : strlen(arg);

        for (k = 0; k < (int) (sizeof(names) / sizeof(names[0])); k++) {
            if (strlen(names[k].name) == n
                && strncmp(names[k].name, arg, n) == 0)
            {
                break;
            }
        }

        if (k == (int) (sizeof(names) / sizeof(names[0]))) {
            fail("usage", NULL, 0, "unknown option \"%s\" (see --help)",
                 argv[i]);
        }

        if (eq) {
            val = eq + 1;

        } else if (i + 1 < argc) {
            val = argv[++i];

        } else {
            fail("usage", NULL, 0, "--%s needs a value", names[k].name);
        }

        *(const char **) ((char *) o + names[k].off) = val;
    }
}


static void
read_file(psd_file_t *f, const char *name)
{
    FILE    *fp;
    size_t   n, cap;

    f->name = name;

    if (strcmp(name, "-") == 0) {
        fp = stdin;
        f->name = "(stdin)";

    } else {
        fp = fopen(name, "rb");
        if (fp == NULL) {
            fail("cannot_read", name, 0, "%s", strerror(errno));
        }
    }

    cap = 65536;
    f->data = xalloc(cap + 1);
    f->len = 0;

    for ( ;; ) {
        n = fread(f->data + f->len, 1, cap - f->len, fp);
        f->len += n;

        if (f->len < cap) {
            if (ferror(fp)) {
                fail("cannot_read", f->name, 0, "%s", strerror(errno));
            }

            break;
        }

        if (cap >= PSD_FILE_MAX) {
            fail("cannot_read", f->name, 0, "larger than %d MiB",
                 PSD_FILE_MAX / 1024 / 1024);
        }

        cap *= 2;
        f->data = realloc(f->data, cap + 1);
        if (f->data == NULL) {
            fail("out_of_memory", NULL, 0, "out of memory");
        }
    }

    f->data[f->len] = '\0';

    if (fp != stdin) {
        fclose(fp);
    }
}


/* the module's export */

typedef struct {
    psd_recon_order_t  *items;
    size_t              n;
    size_t              cap;
    int64_t             from_day;
    int64_t             to_day;
} psd_orders_t;


static int64_t
json_time(psd_file_t *f, json_t *o, const char *name, size_t index)
{
    json_t  *v;

    v = json_object_get(o, name);

    if (v == NULL || json_is_null(v)) {
        return NONE;
    }

    if (!json_is_integer(v) || json_integer_value(v) < 0
        || json_integer_value(v) > PSD_RECON_TIME_MAX)
    {
        fail("invalid_export", f->name, 0,
             "order %zu: \"%s\" is not a Unix time", index, name);
    }

    return json_integer_value(v);
}


static const char *
json_text(psd_file_t *f, json_t *o, const char *name, size_t index)
{
    json_t  *v;

    v = json_object_get(o, name);

    if (v == NULL || json_is_null(v)) {
        return "";
    }

    if (!json_is_string(v)) {
        fail("invalid_export", f->name, 0,
             "order %zu: \"%s\" is not a string", index, name);
    }

    return xstrndup(json_string_value(v), json_string_length(v));
}


static void
period_widen(psd_orders_t *os, psd_file_t *f, json_t *doc)
{
    json_t   *from, *to;
    int64_t   d1, d2;

    from = json_object_get(doc, "from");
    to = json_object_get(doc, "to");

    if (from == NULL && to == NULL) {
        return;
    }

    if (!json_is_string(from) || !json_is_string(to)
        || psd_recon_day_parse(json_string_value(from),
                               json_string_length(from), &d1) != 0
        || psd_recon_day_parse(json_string_value(to),
                               json_string_length(to), &d2) != 0
        || d2 < d1)
    {
        fail("invalid_export", f->name, 0,
             "\"from\" and \"to\" are not a period of YYYY-MM-DD days");
    }

    if (os->from_day < 0 || d1 < os->from_day) {
        os->from_day = d1;
    }

    if (d2 > os->to_day) {
        os->to_day = d2;
    }
}


static void
orders_json(psd_orders_t *os, psd_file_t *f)
{
    json_t             *doc, *list, *o, *v;
    size_t              pos, i;
    json_error_t        err;
    psd_recon_order_t  *r;

    pos = 0;

    /* several documents: pages fetched one after the other */

    while (pos < f->len) {
        while (pos < f->len && strchr(" \t\r\n", f->data[pos])) {
            pos++;
        }

        if (pos == f->len) {
            break;
        }

        doc = json_loadb(f->data + pos, f->len - pos,
                         JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES,
                         &err);
        if (doc == NULL) {
            fail("invalid_json", f->name, (size_t) err.line, "%s", err.text);
        }

        pos += err.position;

        if (json_is_array(doc)) {
            list = doc;

        } else {
            list = json_object_get(doc, "orders");

            if (!json_is_array(list)) {
                fail("invalid_export", f->name, 0,
                     "neither an array of orders nor {\"orders\": [...]}");
            }

            period_widen(os, f, doc);
        }

        json_array_foreach(list, i, o) {
            if (!json_is_object(o)) {
                fail("invalid_export", f->name, 0,
                     "order %zu is not an object", os->n + 1);
            }

            os->items = grow(os->items, &os->cap, os->n,
                             sizeof(psd_recon_order_t));
            r = &os->items[os->n++];

            r->line = 0;
            r->order_id = json_text(f, o, "order_id", os->n);
            r->payment_id = json_text(f, o, "payment_id", os->n);
            r->currency = json_text(f, o, "currency", os->n);
            r->state = json_text(f, o, "state", os->n);

            if (!psd_recon_order_id_valid(r->order_id, strlen(r->order_id))) {
                fail("invalid_export", f->name, 0,
                     "order %zu: no valid \"order_id\"", os->n);
            }

            v = json_object_get(o, "amount");
            r->amount = json_is_integer(v) ? json_integer_value(v) : NONE;

            if (v && !json_is_null(v) && !json_is_integer(v)) {
                fail("invalid_export", f->name, 0,
                     "order %zu: \"amount\" is not an integer", os->n);
            }

            r->paid_at = json_time(f, o, "paid_at", os->n);
            r->refunded_at = json_time(f, o, "refunded_at", os->n);
            r->chargeback_at = json_time(f, o, "chargeback_at", os->n);
        }

        json_decref(doc);
    }
}


typedef struct {
    const char  *name;
    int          index;
    int          required;
    int          guarded;     /* the module's text: undo the formula guard */
} psd_column_t;


static void
columns_find(psd_csv_reader_t *c, psd_file_t *f, psd_column_t *cols,
    size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        cols[i].index = cols[i].name ? psd_csv_find(c, cols[i].name) : -1;

        if (cols[i].index < 0 && cols[i].required) {
            fail("missing_column", f->name, c->line, "no column \"%s\"",
                 cols[i].name);
        }
    }
}


/* a column's field of the current record, "" when the column is absent */
static psd_csv_field_t
field(psd_csv_reader_t *c, psd_column_t *col)
{
    psd_csv_field_t  v;

    if (col->index < 0 || (size_t) col->index >= c->nfields) {
        v.data = "";
        v.len = 0;
        return v;
    }

    v = c->field[col->index];

    if (col->guarded) {
        psd_csv_unguard(&v);
    }

    return v;
}


static int64_t
csv_time(psd_csv_reader_t *c, psd_file_t *f, psd_column_t *col)
{
    int64_t          t;
    psd_csv_field_t  v;

    v = field(c, col);

    if (v.len == 0) {
        return NONE;
    }

    if (psd_recon_time_parse(v.data, v.len, &t) != 0) {
        fail("invalid_row", f->name, c->line, "%s: not a time: \"%.*s\"",
             col->name, (int) (v.len > 40 ? 40 : v.len), v.data);
    }

    return t;
}


enum {
    OC_ORDER = 0, OC_PAYMENT, OC_AMOUNT, OC_CURRENCY, OC_STATE, OC_PAID,
    OC_REFUNDED, OC_CHARGEBACK, OC_N
};


static void
orders_csv(psd_orders_t *os, psd_file_t *f)
{
    int                 rc;
    char               *buf;
    psd_csv_field_t     v;
    psd_csv_reader_t    c;
    psd_recon_order_t  *r;

    psd_column_t  cols[OC_N] = {
        { "order_id", -1, 1, 1 },
        { "payment_id", -1, 0, 1 },
        { "amount", -1, 0, 0 },
        { "currency", -1, 0, 1 },
        { "state", -1, 1, 1 },
        { "paid_at", -1, 0, 0 },
        { "refunded_at", -1, 0, 0 },
        { "chargeback_at", -1, 0, 0 }
    };

    buf = xalloc(PSD_RECORD_MAX);
    psd_csv_init(&c, f->data, f->len, buf, PSD_RECORD_MAX);

    rc = psd_csv_read(&c);
    if (rc == 0) {
        fail("invalid_export", f->name, 0, "empty");
    }

    if (rc < 0) {
        fail("invalid_csv", f->name, c.line, "%s", c.error);
    }

    columns_find(&c, f, cols, OC_N);

    while ((rc = psd_csv_read(&c)) == 1) {
        /* the header of the next page */
        if (c.field[0].len == 8 && memcmp(c.field[0].data, "order_id", 8) == 0)
        {
            continue;
        }

        os->items = grow(os->items, &os->cap, os->n,
                         sizeof(psd_recon_order_t));
        r = &os->items[os->n++];
        r->line = c.line;

        v = field(&c, &cols[OC_ORDER]);

        if (!psd_recon_order_id_valid(v.data, v.len)) {
            fail("invalid_row", f->name, c.line, "order_id: not an order id");
        }

        r->order_id = xstrndup(v.data, v.len);
        v = field(&c, &cols[OC_PAYMENT]);
        r->payment_id = xstrndup(v.data, v.len);
        v = field(&c, &cols[OC_CURRENCY]);
        r->currency = xstrndup(v.data, v.len);
        v = field(&c, &cols[OC_STATE]);
        r->state = xstrndup(v.data, v.len);

        v = field(&c, &cols[OC_AMOUNT]);
        r->amount = NONE;

        if (v.len && psd_recon_minor_parse(v.data, v.len, &r->amount) != 0) {
            fail("invalid_row", f->name, c.line,
                 "amount: not an integer in minor units");
        }

        r->paid_at = csv_time(&c, f, &cols[OC_PAID]);
        r->refunded_at = csv_time(&c, f, &cols[OC_REFUNDED]);
        r->chargeback_at = csv_time(&c, f, &cols[OC_CHARGEBACK]);
    }

    if (rc < 0) {
        fail("invalid_csv", f->name, c.line, "%s", c.error);
    }

    free(buf);
}


static void
orders_read(psd_orders_t *os, psd_file_t *f)
{
    size_t  i;

    os->from_day = -1;
    os->to_day = -1;

    i = (f->len >= 3 && memcmp(f->data, "\xef\xbb\xbf", 3) == 0) ? 3 : 0;

    while (i < f->len && strchr(" \t\r\n", f->data[i])) {
        i++;
    }

    if (i < f->len && (f->data[i] == '{' || f->data[i] == '[')) {
        orders_json(os, f);

    } else {
        orders_csv(os, f);
    }
}


/* the gateway's export */

typedef struct {
    psd_recon_txn_t    *items;
    size_t              n;
    size_t              cap;
} psd_txns_t;


enum {
    GC_ID = 0, GC_TYPE, GC_PAYMENT, GC_ORDER, GC_AMOUNT, GC_CURRENCY,
    GC_TIME, GC_N
};


/* the first of several names a column goes by in a header */
static const char *
alias(psd_csv_reader_t *c, const char *names[])
{
    size_t  i;

    for (i = 0; names[i]; i++) {
        if (psd_csv_find(c, names[i]) >= 0) {
            return names[i];
        }
    }

    return names[0];
}


static psd_recon_type_e
stripe_type(psd_csv_field_t *v, int64_t amount)
{
    static const char  *pay[] = { "charge", "payment", NULL };
    static const char  *back[] = { "refund", "payment_refund", "dispute",
                                   NULL };
    size_t              i;

    for (i = 0; pay[i]; i++) {
        if (strcmp(v->data, pay[i]) == 0) {
            return PSD_RECON_PAYMENT;
        }
    }

    for (i = 0; back[i]; i++) {
        if (strcmp(v->data, back[i]) == 0) {
            return PSD_RECON_REFUND;
        }
    }

    /* a dispute's withdrawal is an adjustment that takes money back */
    if (strcmp(v->data, "adjustment") == 0 && amount < 0) {
        return PSD_RECON_REFUND;
    }

    return PSD_RECON_OTHER;
}


static psd_recon_type_e
generic_type(psd_csv_field_t *v)
{
    if (strcmp(v->data, "payment") == 0) {
        return PSD_RECON_PAYMENT;
    }

    if (strcmp(v->data, "refund") == 0 || strcmp(v->data, "chargeback") == 0)
    {
        return PSD_RECON_REFUND;
    }

    return PSD_RECON_OTHER;
}


static void
gateway_read(psd_txns_t *ts, psd_file_t *f, psd_opts_t *o)
{
    int               rc, stripe, exponent;
    char             *buf;
    psd_csv_field_t   v;
    psd_csv_reader_t  c;
    psd_recon_txn_t  *t;

    static const char  *s_id[] = { "id", "balance_transaction_id", NULL };
    static const char  *s_type[] = { "type", "reporting_category", NULL };
    static const char  *s_source[] = { "source", "source_id", NULL };
    static const char  *s_amount[] = { "amount", "gross", NULL };
    static const char  *s_created[] = { "created", "created (utc)",
                                        "created_utc", NULL };
    static const char  *s_order[] = { "order_id (metadata)",
                                      "payment_metadata[order_id]", NULL };

    psd_column_t  cols[GC_N] = {
        { NULL, -1, 0, 0 },
        { "type", -1, 1, 0 },
        { NULL, -1, 0, 0 },
        { NULL, -1, 0, 0 },
        { "amount", -1, 1, 0 },
        { "currency", -1, 1, 0 },
        { NULL, -1, 0, 0 }
    };

    stripe = o->format == NULL || strcmp(o->format, "stripe") == 0;

    if (!stripe && strcmp(o->format, "generic") != 0) {
        fail("usage", NULL, 0, "--format must be stripe or generic, not "
             "\"%s\"", o->format);
    }

    buf = xalloc(PSD_RECORD_MAX);
    psd_csv_init(&c, f->data, f->len, buf, PSD_RECORD_MAX);

    rc = psd_csv_read(&c);
    if (rc == 0) {
        fail("invalid_csv", f->name, 0, "empty, not even a header");
    }

    if (rc < 0) {
        fail("invalid_csv", f->name, c.line, "%s", c.error);
    }

    if (stripe) {
        cols[GC_ID].name = alias(&c, s_id);
        cols[GC_TYPE].name = alias(&c, s_type);
        cols[GC_PAYMENT].name = o->payment_column ? o->payment_column
                                                  : alias(&c, s_source);
        cols[GC_AMOUNT].name = alias(&c, s_amount);
        cols[GC_TIME].name = alias(&c, s_created);
        cols[GC_ORDER].name = o->order_column ? o->order_column
                                              : alias(&c, s_order);

    } else {
        cols[GC_PAYMENT].name = o->payment_column ? o->payment_column
                                                  : "payment_id";
        cols[GC_ORDER].name = o->order_column ? o->order_column : "order_id";
        cols[GC_TIME].name = "date";
    }

    /* a column named on the command line must be there */
    cols[GC_ORDER].required = o->order_column != NULL;
    cols[GC_PAYMENT].required = o->payment_column != NULL;

    columns_find(&c, f, cols, GC_N);

    if (cols[GC_ORDER].index < 0 && cols[GC_PAYMENT].index < 0) {
        fail("missing_column", f->name, c.line,
             "no column \"%s\" or \"%s\" to match orders by",
             cols[GC_ORDER].name, cols[GC_PAYMENT].name);
    }

    while ((rc = psd_csv_read(&c)) == 1) {
        ts->items = grow(ts->items, &ts->cap, ts->n, sizeof(psd_recon_txn_t));
        t = &ts->items[ts->n];

        t->line = c.line;

        v = field(&c, &cols[GC_CURRENCY]);
        exponent = psd_recon_currency_exponent(v.data, v.len);

        if (exponent < 0) {
            fail("invalid_row", f->name, c.line,
                 "currency: not a three-letter code");
        }

        t->currency = xstrndup(v.data, v.len);

        v = field(&c, &cols[GC_AMOUNT]);

        if ((stripe ? psd_recon_major_parse(v.data, v.len, exponent,
                                            &t->amount)
                    : psd_recon_minor_parse(v.data, v.len, &t->amount))
            != 0)
        {
            fail("invalid_row", f->name, c.line, "amount: not %s",
                 stripe ? "a decimal amount in the currency's major units"
                        : "an integer in minor units");
        }

        v = field(&c, &cols[GC_TYPE]);
        t->type = stripe ? stripe_type(&v, t->amount) : generic_type(&v);

        t->at = csv_time(&c, f, &cols[GC_TIME]);

        v = field(&c, &cols[GC_ID]);
        t->id = xstrndup(v.data, v.len);
        v = field(&c, &cols[GC_ORDER]);
        t->order_id = xstrndup(v.data, v.len);
        v = field(&c, &cols[GC_PAYMENT]);
        t->payment_id = xstrndup(v.data, v.len);

        if (t->type != PSD_RECON_OTHER && t->order_id[0] == '\0'
            && t->payment_id[0] == '\0')
        {
            fail("invalid_row", f->name, c.line,
                 "neither an order id nor a payment id");
        }

        ts->n++;
    }

    if (rc < 0) {
        fail("invalid_csv", f->name, c.line, "%s", c.error);
    }

    free(buf);
}


/* output */

static const char *
type_name(psd_recon_type_e type)
{
    return type == PSD_RECON_PAYMENT ? "payment"
           : type == PSD_RECON_REFUND ? "refund" : "other";
}


static void
print_json(psd_recon_result_t *res, psd_recon_period_t *p)
{
    char                   day[16];
    size_t                 i;
    json_t                *out, *list, *m, *here, *there, *by;
    psd_recon_mismatch_t  *x;

    out = json_object();

    if (p->from_day >= 0) {
        m = json_object();
        psd_recon_day_format(p->from_day, day);
        json_object_set_new(m, "from", json_string(day));
        psd_recon_day_format(p->to_day, day);
        json_object_set_new(m, "to", json_string(day));
        json_object_set_new(m, "slack", json_integer(p->slack));
        json_object_set_new(out, "period", m);

    } else {
        json_object_set_new(out, "period", json_null());
    }

    by = json_object();

    for (i = 0; i < PSD_RECON_NKINDS; i++) {
        json_object_set_new(by, psd_recon_kind_name(i),
                            json_integer((json_int_t) res->count[i]));
    }

    json_object_set_new(out, "summary", json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}",
        "orders", (json_int_t) res->orders,
        "duplicate_rows", (json_int_t) res->duplicates,
        "gateway_rows", (json_int_t) res->txns,
        "matched", (json_int_t) res->matched,
        "ignored", (json_int_t) res->ignored,
        "outside_period", (json_int_t) res->outside,
        "mismatches", (json_int_t) res->n,
        "by_kind", by));

    list = json_array();

    for (i = 0; i < res->n; i++) {
        x = &res->items[i];
        m = json_object();

        json_object_set_new(m, "kind",
                            json_string(psd_recon_kind_name(x->kind)));

        if (x->order) {
            json_object_set_new(m, "order_id",
                                json_string(x->order->order_id));
            json_object_set_new(m, "payment_id",
                                json_string(x->order->payment_id));

            here = json_object();
            json_object_set_new(here, "state",
                                json_string(x->order->state));
            json_object_set_new(here, "amount",
                                x->order->amount == NONE ? json_null()
                                : json_integer(x->order->amount));
            json_object_set_new(here, "currency",
                                json_string(x->order->currency));
            json_object_set_new(m, "here", here);

        } else {
            json_object_set_new(m, "order_id",
                                json_string(x->txn->order_id));
            json_object_set_new(m, "payment_id",
                                json_string(x->txn->payment_id));
            json_object_set_new(m, "here", json_null());
        }

        if (x->txn) {
            there = json_object();
            json_object_set_new(there, "line",
                                json_integer((json_int_t) x->txn->line));
            json_object_set_new(there, "id", json_string(x->txn->id));
            json_object_set_new(there, "type",
                                json_string(type_name(x->txn->type)));
            json_object_set_new(there, "order_id",
                                json_string(x->txn->order_id));
            json_object_set_new(there, "payment_id",
                                json_string(x->txn->payment_id));
            json_object_set_new(there, "amount",
                                json_integer(x->there_amount));
            json_object_set_new(there, "currency",
                                json_string(x->txn->currency));
            json_object_set_new(m, "there", there);

        } else {
            json_object_set_new(m, "there", json_null());
        }

        json_array_append_new(list, m);
    }

    json_object_set_new(out, "mismatches", list);

    json_dumpf(out, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', stdout);
    json_decref(out);
}


static void
print_table(psd_recon_result_t *res)
{
    int                    w1, w2;
    char                   here[64], there[64], line[32];
    size_t                 i, k, n;
    const char            *order, *pay;
    psd_recon_mismatch_t  *x;

    w1 = sizeof("order_id") - 1;
    w2 = sizeof("payment_id") - 1;

    for (i = 0; i < res->n; i++) {
        x = &res->items[i];
        order = x->order ? x->order->order_id : x->txn->order_id;
        pay = x->order ? x->order->payment_id : x->txn->payment_id;

        w1 = (int) strlen(order) > w1 ? (int) strlen(order) : w1;
        w2 = (int) strlen(pay) > w2 ? (int) strlen(pay) : w2;
    }

    if (res->n) {
        printf("%-19s  %-*s  %-*s  %-22s  %-22s  %s\n", "mismatch", w1,
               "order_id", w2, "payment_id", "here", "there", "line");
    }

    for (i = 0; i < res->n; i++) {
        x = &res->items[i];
        order = x->order ? x->order->order_id : x->txn->order_id;
        pay = x->order ? x->order->payment_id : x->txn->payment_id;

        if (x->order == NULL) {
            snprintf(here, sizeof(here), "-");

        } else if (x->order->amount == NONE) {
            snprintf(here, sizeof(here), "%s", x->order->state);

        } else {
            snprintf(here, sizeof(here), "%s %lld %s", x->order->state,
                     (long long) x->order->amount, x->order->currency);
        }

        if (x->txn == NULL) {
            snprintf(there, sizeof(there), "-");
            snprintf(line, sizeof(line), "-");

        } else {
            snprintf(there, sizeof(there), "%s %lld %s",
                     type_name(x->txn->type), (long long) x->there_amount,
                     x->txn->currency);
            snprintf(line, sizeof(line), "%zu", x->txn->line);
        }

        printf("%-19s  %-*s  %-*s  %-22s  %-22s  %s\n",
               psd_recon_kind_name(x->kind), w1, order[0] ? order : "-",
               w2, pay[0] ? pay : "-", here, there, line);
    }

    printf("%s%zu mismatch%s", res->n ? "\n" : "", res->n,
           res->n == 1 ? "" : "es");

    for (k = 0, n = 0; k < PSD_RECON_NKINDS; k++) {
        if (res->count[k]) {
            printf("%s%zu %s", n++ ? ", " : ": ", res->count[k],
                   psd_recon_kind_name(k));
        }
    }

    printf(" (orders %zu, gateway rows compared %zu, matched %zu, "
           "ignored %zu, outside the period %zu", res->orders, res->txns,
           res->matched, res->ignored, res->outside);

    if (res->duplicates) {
        printf(", repeated order rows %zu", res->duplicates);
    }

    printf(")\n");
}


int
main(int argc, char **argv)
{
    int                  rc;
    char                *end;
    long long            slack;
    psd_opts_t           o;
    psd_file_t           of, gf;
    psd_txns_t           ts;
    psd_orders_t         os;
    psd_recon_result_t   res;
    psd_recon_period_t   p;

    parse_opts(&o, argc, argv);

    if (o.orders == NULL || o.gateway == NULL) {
        fail("usage", NULL, 0, "--orders and --gateway are required "
             "(see --help)");
    }

    if (strcmp(o.orders, "-") == 0 && strcmp(o.gateway, "-") == 0) {
        fail("usage", NULL, 0, "only one of the files may be stdin");
    }

    if ((o.from == NULL) != (o.to == NULL)) {
        fail("usage", NULL, 0, "--from and --to go together");
    }

    p.from_day = -1;
    p.to_day = -1;
    p.slack = 3600;

    if (o.from) {
        if (psd_recon_day_parse(o.from, strlen(o.from), &p.from_day) != 0
            || psd_recon_day_parse(o.to, strlen(o.to), &p.to_day) != 0
            || p.to_day < p.from_day)
        {
            fail("usage", NULL, 0, "--from and --to must be YYYY-MM-DD days, "
                 "--from not after --to");
        }
    }

    if (o.slack) {
        errno = 0;
        slack = strtoll(o.slack, &end, 10);

        if (errno || *end || end == o.slack || slack < 0 || slack > 604800
            || o.slack[0] == '+' || o.slack[0] == ' ')
        {
            fail("usage", NULL, 0, "--slack must be 0 to 604800 seconds");
        }

        p.slack = slack;
    }

    memset(&os, 0, sizeof(psd_orders_t));
    memset(&ts, 0, sizeof(psd_txns_t));

    read_file(&of, o.orders);
    read_file(&gf, o.gateway);

    orders_read(&os, &of);
    gateway_read(&ts, &gf, &o);

    /* the export's own period, unless the command line names one */
    if (p.from_day < 0 && os.from_day >= 0) {
        p.from_day = os.from_day;
        p.to_day = os.to_day;
    }

    if (psd_recon_match(os.items, os.n, ts.items, ts.n, &p, &res) != 0) {
        fail("out_of_memory", NULL, 0, "out of memory");
    }

    if (o.json) {
        print_json(&res, &p);

    } else {
        print_table(&res);
    }

    rc = res.n ? 1 : 0;

    /* the strings and the files go with the process */
    psd_recon_result_free(&res);

    return rc;
}
