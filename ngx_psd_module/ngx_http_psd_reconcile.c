
/*
 * Copyright (C) ngx_psd_module authors
 *
 * Reconciliation.  Every verified payment event (paid, refunded,
 * chargeback) also lands in a per-day index, psd:{recon:YYYY-MM-DD}, a
 * sorted set of order ids scored by the event's time, and in the order's
 * own list of indexed days, psd:{order:<id>}:recon.  The psd_reconcile
 * endpoint reads a range of days from the index and answers the order side
 * of each order as CSV or JSON, a page at a time, for util/psd-reconcile
 * to compare with what the gateway settled.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_psd_module.h"
#include "ngx_http_psd_redis.h"
#include "ngx_http_psd_metrics.h"
#include "ngx_http_psd_reconcile.h"
#include "psd_csv.h"
#include "psd_reconcile.h"


/* a quarter: the longest period a shop closes its books on */
#define NGX_HTTP_PSD_RECON_MAX_DAYS    92
#define NGX_HTTP_PSD_RECON_RANK_MAX    1000000000

/* the order fields of a row, in the order of the CSV columns */
#define NGX_HTTP_PSD_RECON_NFIELDS     9


typedef struct {
    ngx_flag_t                    enable;
    ngx_str_t                     api_key;
    ngx_uint_t                    page_size;
    time_t                        index_ttl;
    ngx_str_t                     redis_name;
    ngx_http_psd_redis_server_t  *redis;
} ngx_http_psd_reconcile_loc_conf_t;


typedef struct {
    int64_t                       day;
    ngx_uint_t                    start;
    ngx_uint_t                    stop;
} ngx_http_psd_recon_window_t;


typedef struct {
    ngx_str_t                     id;
    int64_t                       day;        /* of its index entry */
    ngx_uint_t                    pos;        /* on the page */
    ngx_uint_t                    keep;       /* its first entry there */
    ngx_uint_t                    reply;      /* its record's, in orders */
} ngx_http_psd_recon_entry_t;


typedef struct {
    int64_t                       from;       /* days */
    int64_t                       to;
    int64_t                       start_day;  /* where this page starts */
    ngx_uint_t                    start_rank;
    ngx_uint_t                    limit;
    ngx_uint_t                    csv;

    ngx_http_psd_recon_window_t  *windows;
    ngx_uint_t                    nwindows;

    ngx_http_psd_recon_entry_t   *entries;    /* one per order, page order */
    ngx_uint_t                    nentries;
    ngx_http_psd_redis_call_t    *orders;     /* their records */

    int64_t                       next_day;
    ngx_uint_t                    next_rank;
    unsigned                      has_next:1;

    const char                   *error;      /* a bad argument */
    const char                   *field;
} ngx_http_psd_recon_ctx_t;


static void *ngx_http_psd_reconcile_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_psd_reconcile_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_psd_reconcile(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_psd_reconcile_handler(ngx_http_request_t *r);
static void ngx_http_psd_reconcile_cards(ngx_http_psd_redis_call_t *call);
static void ngx_http_psd_reconcile_ranges(ngx_http_psd_redis_call_t *call);
static void ngx_http_psd_reconcile_orders(ngx_http_psd_redis_call_t *call);
static void ngx_http_psd_reconcile_finish(ngx_http_request_t *r,
    ngx_int_t rc);


static ngx_conf_num_bounds_t  ngx_http_psd_reconcile_page_bounds = {
    ngx_http_psd_conf_check_bounds, 1, 5000
};


static ngx_conf_num_bounds_t  ngx_http_psd_reconcile_ttl_bounds = {
    ngx_http_psd_conf_check_sec_bounds, 86400, 3650 * 86400
};


static ngx_command_t  ngx_http_psd_reconcile_commands[] = {

    { ngx_string("psd_reconcile"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_psd_reconcile,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_reconcile_loc_conf_t, enable),
      NULL },

    { ngx_string("psd_reconcile_api_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_psd_conf_set_secret_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_reconcile_loc_conf_t, api_key),
      NULL },

    { ngx_string("psd_reconcile_page_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_reconcile_loc_conf_t, page_size),
      &ngx_http_psd_reconcile_page_bounds },

    { ngx_string("psd_reconcile_index_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_reconcile_loc_conf_t, index_ttl),
      &ngx_http_psd_reconcile_ttl_bounds },

    { ngx_string("psd_reconcile_redis"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_reconcile_loc_conf_t, redis_name),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_psd_reconcile_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_psd_reconcile_create_loc_conf, /* create location configuration */
    ngx_http_psd_reconcile_merge_loc_conf  /* merge location configuration */
};


ngx_module_t  ngx_http_psd_reconcile_module = {
    NGX_MODULE_V1,
    &ngx_http_psd_reconcile_module_ctx,    /* module context */
    ngx_http_psd_reconcile_commands,       /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* HMGET fields, in the order of the CSV columns after order_id */
static const char  *ngx_http_psd_recon_fields[NGX_HTTP_PSD_RECON_NFIELDS] = {
    "payment_id", "amount", "currency", "state", "created_at", "paid_at",
    "refunded_at", "chargeback_at", "updated_at"
};

#define NGX_HTTP_PSD_RECON_F_AMOUNT    1
#define NGX_HTTP_PSD_RECON_F_TIMES     4       /* and the fields after it */


static void *
ngx_http_psd_reconcile_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_psd_reconcile_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_reconcile_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->api_key = { 0, NULL };
     *     conf->redis_name = { 0, NULL };
     *     conf->redis = NULL;
     */

    conf->enable = NGX_CONF_UNSET;
    conf->page_size = NGX_CONF_UNSET_UINT;
    conf->index_ttl = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_psd_reconcile_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_psd_reconcile_loc_conf_t  *prev = parent;
    ngx_http_psd_reconcile_loc_conf_t  *conf = child;

    ngx_uint_t  need;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_str_value(conf->api_key, prev->api_key, "");
    ngx_conf_merge_uint_value(conf->page_size, prev->page_size, 1000);
    ngx_conf_merge_sec_value(conf->index_ttl, prev->index_ttl,
                             400 * 86400);
    ngx_conf_merge_str_value(conf->redis_name, prev->redis_name, "");

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    if (conf->api_key.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_reconcile\" needs \"psd_reconcile_api_key\"");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_psd_redis_conf_server(cf, &conf->redis_name, &conf->redis)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* a page reads two commands per order, or one per day, in one call */

    need = ngx_max(2 * conf->page_size, NGX_HTTP_PSD_RECON_MAX_DAYS);

    if (need > conf->redis->max_pending) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_reconcile_page_size\" %ui needs "
                           "\"max_pending=\" of at least %ui on redis "
                           "server \"%V\"", conf->page_size, need,
                           &conf->redis->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_psd_reconcile(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_reconcile_loc_conf_t  *rlcf = conf;

    char                      *rv;
    ngx_http_core_loc_conf_t  *clcf;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (rlcf->enable) {
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
        clcf->handler = ngx_http_psd_reconcile_handler;
    }

    return NGX_CONF_OK;
}


/*
 * The index: written with every verified delivery of a payment event,
 * replays included, so that a retry repairs an entry an earlier delivery
 * could not write.  The day key has its own hash tag and is only ever
 * touched by single-key commands; the order's list of days shares the
 * order's tag.  ZADD NX keeps the first time of the day, so that an
 * entry's rank (the export's cursor) does not move with replays.
 */

ngx_int_t
ngx_http_psd_reconcile_index(ngx_http_request_t *r,
    ngx_http_psd_redis_call_t *call, const char *order, ngx_str_t *kind,
    int64_t at)
{
    size_t                              argvlen[5], olen, tlen;
    int64_t                             day;
    const char                         *argv[5];
    ngx_http_psd_reconcile_loc_conf_t  *rlcf;
    u_char                              dkey[32];
    u_char                              okey[PSD_RECON_ORDER_MAX + 24];
    u_char                              ttl[NGX_TIME_T_LEN];
    u_char                              score[NGX_INT64_LEN];
    u_char                              dayn[NGX_INT64_LEN];
    char                                date[16];

    if (!((kind->len == 4 && ngx_strncmp(kind->data, "paid", 4) == 0)
          || (kind->len == 8 && ngx_strncmp(kind->data, "refunded", 8) == 0)
          || (kind->len == 10
              && ngx_strncmp(kind->data, "chargeback", 10) == 0)))
    {
        return NGX_OK;
    }

    olen = ngx_strlen(order);

    if (!psd_recon_order_id_valid(order, olen)) {
        return NGX_ERROR;
    }

    /* a gateway's time, but signed: still, keep it to real days */
    if (at < 0 || at > PSD_RECON_TIME_MAX) {
        at = ngx_time();
    }

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_reconcile_module);

    day = at / 86400;
    psd_recon_day_format(day, date);
    tlen = ngx_sprintf(ttl, "%T", rlcf->index_ttl) - ttl;

    argv[0] = "ZADD";
    argvlen[0] = 4;
    argv[1] = (const char *) dkey;
    argvlen[1] = ngx_sprintf(dkey, "psd:{recon:%s}", date) - dkey;
    argv[2] = "NX";
    argvlen[2] = 2;
    argv[3] = (const char *) score;
    argvlen[3] = ngx_sprintf(score, "%L", at) - score;
    argv[4] = order;
    argvlen[4] = olen;

    if (ngx_http_psd_redis_call_add(call, 5, argv, argvlen) != NGX_OK) {
        return NGX_ERROR;
    }

    argv[0] = "EXPIRE";
    argvlen[0] = 6;
    argv[2] = (const char *) ttl;
    argvlen[2] = tlen;

    if (ngx_http_psd_redis_call_add(call, 3, argv, argvlen) != NGX_OK) {
        return NGX_ERROR;
    }

    argv[0] = "ZADD";
    argvlen[0] = 4;
    argv[1] = (const char *) okey;
    argvlen[1] = ngx_sprintf(okey, "psd:{order:%s}:recon", order) - okey;
    argv[2] = (const char *) dayn;
    argvlen[2] = ngx_sprintf(dayn, "%L", day) - dayn;
    argv[3] = date;
    argvlen[3] = 10;

    if (ngx_http_psd_redis_call_add(call, 4, argv, argvlen) != NGX_OK) {
        return NGX_ERROR;
    }

    argv[0] = "EXPIRE";
    argvlen[0] = 6;
    argv[2] = (const char *) ttl;
    argvlen[2] = tlen;

    return ngx_http_psd_redis_call_add(call, 3, argv, argvlen);
}


ngx_int_t
ngx_http_psd_reconcile_indexed(ngx_http_request_t *r,
    ngx_http_psd_redis_call_t *call, ngx_uint_t first)
{
    ngx_uint_t   i;
    redisReply  *reply;

    if (call->ncmds <= first) {
        return NGX_OK;
    }

    for (i = first; i < call->ncmds; i++) {
        reply = call->status == NGX_HTTP_PSD_REDIS_OK ? call->replies[i]
                                                      : NULL;

        if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
            if (reply && reply->type == REDIS_REPLY_ERROR) {
                ngx_http_psd_log(NGX_LOG_ERR, r, 0,
                                 "psd_webhook: reconciliation index not "
                                 "written, redis answered \"%*s\"",
                                 ngx_min(reply->len, 200), reply->str);
            }

            ngx_http_psd_count(RECONCILE_INDEX_FAILED);
            return NGX_ERROR;
        }
    }

    ngx_http_psd_count(RECONCILE_INDEX_WRITTEN);

    return NGX_OK;
}


/*
 * The export.  GET ?from=YYYY-MM-DD&to=YYYY-MM-DD[&format=csv|json]
 * [&limit=N][&cursor=YYYY-MM-DD.N].  Three round trips, each one pipelined
 * write of single-key commands: the size of each day's index (ZCARD), the
 * page's ranks of those indexes (ZRANGE), then each order's record and its
 * first indexed day in the range.  An order is listed once: on the page
 * that holds its first day in the range.
 */

static ngx_int_t
ngx_http_psd_reconcile_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *field)
{
    if (status == NGX_HTTP_UNAUTHORIZED) {
        ngx_http_psd_count(RECONCILE_EXPORT_UNAUTHORIZED);

    } else {
        ngx_http_psd_count(RECONCILE_EXPORT_INVALID);
    }

    return ngx_http_psd_send_json_error(r, status, code, field);
}


static ngx_int_t
ngx_http_psd_reconcile_day_arg(ngx_http_request_t *r, const char *name,
    int64_t *day)
{
    ngx_str_t  v;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &v) != NGX_OK
        || psd_recon_day_parse((char *) v.data, v.len, day) != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a bad argument: the code and the field for the handler to answer */

static ngx_int_t
ngx_http_psd_reconcile_bad(ngx_http_psd_recon_ctx_t *ctx, const char *code,
    const char *field)
{
    ctx->error = code;
    ctx->field = field;

    return NGX_ERROR;
}


static ngx_int_t
ngx_http_psd_reconcile_args(ngx_http_request_t *r,
    ngx_http_psd_recon_ctx_t *ctx, ngx_http_psd_reconcile_loc_conf_t *rlcf)
{
    u_char            *dot;
    ngx_int_t          n;
    ngx_str_t          v;
    ngx_table_elt_t   *accept;

    if (ngx_http_psd_reconcile_day_arg(r, "from", &ctx->from) != NGX_OK) {
        return ngx_http_psd_reconcile_bad(ctx, "invalid_field", "from");
    }

    if (ngx_http_psd_reconcile_day_arg(r, "to", &ctx->to) != NGX_OK) {
        return ngx_http_psd_reconcile_bad(ctx, "invalid_field", "to");
    }

    if (ctx->to < ctx->from) {
        return ngx_http_psd_reconcile_bad(ctx, "invalid_range", NULL);
    }

    if (ctx->to - ctx->from >= NGX_HTTP_PSD_RECON_MAX_DAYS) {
        return ngx_http_psd_reconcile_bad(ctx, "range_too_long", NULL);
    }

    if (ngx_http_arg(r, (u_char *) "format", 6, &v) == NGX_OK) {
        if (v.len == 3 && ngx_strncmp(v.data, "csv", 3) == 0) {
            ctx->csv = 1;

        } else if (!(v.len == 4 && ngx_strncmp(v.data, "json", 4) == 0)) {
            return ngx_http_psd_reconcile_bad(ctx, "invalid_field", "format");
        }

    } else {
        accept = ngx_http_psd_header_in(r, "Accept");

        ctx->csv = accept
                   && ngx_strlcasestrn(accept->value.data,
                                       accept->value.data + accept->value.len,
                                       (u_char *) "text/csv", 8 - 1)
                      != NULL;
    }

    ctx->limit = rlcf->page_size;

    if (ngx_http_arg(r, (u_char *) "limit", 5, &v) == NGX_OK) {
        n = ngx_atoi(v.data, v.len);

        if (n < 1 || (ngx_uint_t) n > rlcf->page_size) {
            return ngx_http_psd_reconcile_bad(ctx, "invalid_field", "limit");
        }

        ctx->limit = n;
    }

    ctx->start_day = ctx->from;
    ctx->start_rank = 0;

    if (ngx_http_arg(r, (u_char *) "cursor", 6, &v) == NGX_OK) {
        dot = v.len > 11 ? v.data + 10 : NULL;
        n = dot && *dot == '.' ? ngx_atoi(dot + 1, v.data + v.len - dot - 1)
                               : NGX_ERROR;

        if (n == NGX_ERROR || n > NGX_HTTP_PSD_RECON_RANK_MAX
            || psd_recon_day_parse((char *) v.data, 10, &ctx->start_day) != 0
            || ctx->start_day < ctx->from || ctx->start_day > ctx->to)
        {
            return ngx_http_psd_reconcile_bad(ctx, "invalid_field", "cursor");
        }

        ctx->start_rank = n;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_psd_reconcile_handler(ngx_http_request_t *r)
{
    size_t                              argvlen[2];
    int64_t                             day;
    ngx_int_t                           rc;
    const char                         *argv[2];
    ngx_http_psd_recon_ctx_t           *ctx;
    ngx_http_psd_redis_call_t          *call;
    ngx_http_psd_reconcile_loc_conf_t  *rlcf;
    u_char                              key[32];
    char                                date[16];

    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_reconcile_module);

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_psd_reconcile_error(r, NGX_HTTP_NOT_ALLOWED,
                                            "method_not_allowed", NULL);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!ngx_http_psd_bearer_ok(r, &rlcf->api_key)) {
        return ngx_http_psd_reconcile_error(r, NGX_HTTP_UNAUTHORIZED,
                                            "unauthorized", NULL);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_psd_recon_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_psd_reconcile_args(r, ctx, rlcf) != NGX_OK) {
        return ngx_http_psd_reconcile_error(r, NGX_HTTP_BAD_REQUEST,
                                            ctx->error, ctx->field);
    }

    ngx_http_set_ctx(r, ctx, ngx_http_psd_reconcile_module);

    call = ngx_http_psd_redis_call_create(r, rlcf->redis,
                                          ctx->to - ctx->start_day + 1);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = "ZCARD";
    argvlen[0] = 5;
    argv[1] = (const char *) key;

    for (day = ctx->start_day; day <= ctx->to; day++) {
        psd_recon_day_format(day, date);
        argvlen[1] = ngx_sprintf(key, "psd:{recon:%s}", date) - key;

        if (ngx_http_psd_redis_call_add(call, 2, argv, argvlen) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_reconcile_cards, r)
        != NGX_OK)
    {
        ngx_http_psd_count(RECONCILE_EXPORT_FAILED);
        return ngx_http_psd_send_unavailable(r, 1);
    }

    r->main->count++;
    ngx_http_psd_redis_wait(r);

    return NGX_DONE;
}


/* the page: ranks of each day's index from the cursor, up to the limit */

static void
ngx_http_psd_reconcile_cards(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    size_t                              argvlen[4];
    ngx_uint_t                          i, rank, take, left;
    long long                           card;
    redisReply                         *reply;
    const char                         *argv[4];
    ngx_http_psd_recon_ctx_t           *ctx;
    ngx_http_psd_redis_call_t          *call2;
    ngx_http_psd_recon_window_t        *w;
    ngx_http_psd_reconcile_loc_conf_t  *rlcf;
    u_char                              key[32];
    u_char                              start[NGX_INT_T_LEN];
    u_char                              stop[NGX_INT_T_LEN];
    char                                date[16];

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_reconcile_module);
    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_reconcile_module);

    if (call->status != NGX_HTTP_PSD_REDIS_OK) {
        ngx_http_psd_reconcile_finish(r, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    ctx->windows = ngx_palloc(r->pool, call->ncmds
                                       * sizeof(ngx_http_psd_recon_window_t));
    if (ctx->windows == NULL) {
        ngx_http_psd_reconcile_finish(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    left = ctx->limit;

    for (i = 0; i < call->ncmds; i++) {
        reply = call->replies[i];

        if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
            ngx_http_psd_reconcile_finish(r, NGX_HTTP_SERVICE_UNAVAILABLE);
            return;
        }

        card = reply->integer;
        rank = (i == 0) ? ctx->start_rank : 0;

        if (card <= (long long) rank) {
            continue;
        }

        if (left == 0) {
            ctx->has_next = 1;
            ctx->next_day = ctx->start_day + i;
            ctx->next_rank = rank;
            break;
        }

        take = ngx_min((ngx_uint_t) (card - rank), left);

        w = &ctx->windows[ctx->nwindows++];
        w->day = ctx->start_day + i;
        w->start = rank;
        w->stop = rank + take - 1;

        left -= take;

        if (rank + take < (ngx_uint_t) card) {
            ctx->has_next = 1;
            ctx->next_day = w->day;
            ctx->next_rank = rank + take;
            break;
        }
    }

    if (ctx->nwindows == 0) {
        ngx_http_psd_reconcile_finish(r, NGX_OK);
        return;
    }

    call2 = ngx_http_psd_redis_call_create(r, rlcf->redis, ctx->nwindows);
    if (call2 == NULL) {
        ngx_http_psd_reconcile_finish(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    argv[0] = "ZRANGE";
    argvlen[0] = 6;
    argv[1] = (const char *) key;
    argv[2] = (const char *) start;
    argv[3] = (const char *) stop;

    for (i = 0; i < ctx->nwindows; i++) {
        w = &ctx->windows[i];

        psd_recon_day_format(w->day, date);
        argvlen[1] = ngx_sprintf(key, "psd:{recon:%s}", date) - key;
        argvlen[2] = ngx_sprintf(start, "%ui", w->start) - start;
        argvlen[3] = ngx_sprintf(stop, "%ui", w->stop) - stop;

        if (ngx_http_psd_redis_call_add(call2, 4, argv, argvlen) != NGX_OK) {
            ngx_http_psd_reconcile_finish(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
    }

    if (ngx_http_psd_redis_call_send(call2, ngx_http_psd_reconcile_ranges, r)
        != NGX_OK)
    {
        ngx_http_psd_reconcile_finish(r, NGX_HTTP_SERVICE_UNAVAILABLE);
    }
}


static int ngx_libc_cdecl
ngx_http_psd_reconcile_cmp(const void *one, const void *two)
{
    const ngx_http_psd_recon_entry_t  *a = one, *b = two;

    ngx_int_t  rc;

    rc = ngx_memn2cmp(a->id.data, b->id.data, a->id.len, b->id.len);
    if (rc != 0) {
        return rc;
    }

    return (a->pos > b->pos) - (a->pos < b->pos);
}


static void
ngx_http_psd_reconcile_ranges(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    size_t                              argvlen[11];
    ngx_uint_t                          i, k, n, total;
    redisReply                         *reply, *e;
    const char                         *argv[11];
    ngx_http_psd_recon_ctx_t           *ctx;
    ngx_http_psd_recon_entry_t         *en, *sorted;
    ngx_http_psd_redis_call_t          *call3;
    ngx_http_psd_reconcile_loc_conf_t  *rlcf;
    u_char                              key[PSD_RECON_ORDER_MAX + 24];
    u_char                              from[NGX_INT64_LEN];
    u_char                              to[NGX_INT64_LEN];

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_reconcile_module);
    rlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_reconcile_module);

    if (call->status != NGX_HTTP_PSD_REDIS_OK) {
        ngx_http_psd_reconcile_finish(r, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    total = 0;

    for (i = 0; i < call->ncmds; i++) {
        reply = call->replies[i];

        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
            ngx_http_psd_reconcile_finish(r, NGX_HTTP_SERVICE_UNAVAILABLE);
            return;
        }

        total += reply->elements;
    }

    en = ngx_palloc(r->pool, (total + 1) * sizeof(ngx_http_psd_recon_entry_t));
    sorted = ngx_palloc(r->pool,
                        (total + 1) * sizeof(ngx_http_psd_recon_entry_t));
    if (en == NULL || sorted == NULL) {
        ngx_http_psd_reconcile_finish(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    n = 0;

    for (i = 0; i < call->ncmds; i++) {
        reply = call->replies[i];

        for (k = 0; k < reply->elements; k++) {
            e = reply->element[k];

            /* what the webhooks write; anything else is not ours */
            if (e->type != REDIS_REPLY_STRING
                || !psd_recon_order_id_valid(e->str, e->len))
            {
                continue;
            }

            en[n].id.data = (u_char *) e->str;
            en[n].id.len = e->len;
            en[n].day = ctx->windows[i].day;
            en[n].pos = n;
            en[n].keep = 0;
            n++;
        }
    }

    /* an order indexed on several days of the page: its first entry */

    ngx_memcpy(sorted, en, n * sizeof(ngx_http_psd_recon_entry_t));
    ngx_qsort(sorted, n, sizeof(ngx_http_psd_recon_entry_t),
              ngx_http_psd_reconcile_cmp);

    for (i = 0; i < n; i++) {
        if (i == 0 || ngx_memn2cmp(sorted[i].id.data, sorted[i - 1].id.data,
                                   sorted[i].id.len, sorted[i - 1].id.len)
                      != 0)
        {
            en[sorted[i].pos].keep = 1;
        }
    }

    for (i = 0, k = 0; i < n; i++) {
        if (en[i].keep) {
            en[k++] = en[i];
        }
    }

    ctx->entries = en;
    ctx->nentries = k;

    if (ctx->nentries == 0) {
        ngx_http_psd_reconcile_finish(r, NGX_OK);
        return;
    }

    /* each order's record, and its first indexed day in the range */

    call3 = ngx_http_psd_redis_call_create(r, rlcf->redis,
                                           2 * ctx->nentries);
    if (call3 == NULL) {
        ngx_http_psd_reconcile_finish(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    for (i = 0; i < ctx->nentries; i++) {
        argv[0] = "HMGET";
        argvlen[0] = 5;
        argv[1] = (const char *) key;
        argvlen[1] = ngx_sprintf(key, "psd:{order:%V}", &en[i].id) - key;

        for (k = 0; k < NGX_HTTP_PSD_RECON_NFIELDS; k++) {
            argv[2 + k] = ngx_http_psd_recon_fields[k];
            argvlen[2 + k] = ngx_strlen(ngx_http_psd_recon_fields[k]);
        }

        if (ngx_http_psd_redis_call_add(call3, 2 + NGX_HTTP_PSD_RECON_NFIELDS,
                                        argv, argvlen)
            != NGX_OK)
        {
            ngx_http_psd_reconcile_finish(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        argv[0] = "ZRANGEBYSCORE";
        argvlen[0] = 13;
        argvlen[1] = ngx_sprintf(key, "psd:{order:%V}:recon", &en[i].id)
                     - key;
        argv[2] = (const char *) from;
        argvlen[2] = ngx_sprintf(from, "%L", ctx->from) - from;
        argv[3] = (const char *) to;
        argvlen[3] = ngx_sprintf(to, "%L", ctx->to) - to;
        argv[4] = "WITHSCORES";
        argvlen[4] = 10;
        argv[5] = "LIMIT";
        argvlen[5] = 5;
        argv[6] = "0";
        argvlen[6] = 1;
        argv[7] = "1";
        argvlen[7] = 1;

        if (ngx_http_psd_redis_call_add(call3, 8, argv, argvlen) != NGX_OK) {
            ngx_http_psd_reconcile_finish(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }
    }

    if (ngx_http_psd_redis_call_send(call3, ngx_http_psd_reconcile_orders, r)
        != NGX_OK)
    {
        ngx_http_psd_reconcile_finish(r, NGX_HTTP_SERVICE_UNAVAILABLE);
    }
}


static void
ngx_http_psd_reconcile_orders(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    ngx_int_t                  day;
    ngx_uint_t                 i, k;
    redisReply                *hash, *first;
    ngx_http_psd_recon_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_reconcile_module);

    if (call->status != NGX_HTTP_PSD_REDIS_OK) {
        ngx_http_psd_reconcile_finish(r, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    for (i = 0, k = 0; i < ctx->nentries; i++) {
        hash = call->replies[2 * i];
        first = call->replies[2 * i + 1];

        if (hash == NULL || hash->type != REDIS_REPLY_ARRAY
            || hash->elements != NGX_HTTP_PSD_RECON_NFIELDS
            || first == NULL || first->type != REDIS_REPLY_ARRAY)
        {
            ngx_http_psd_reconcile_finish(r, NGX_HTTP_SERVICE_UNAVAILABLE);
            return;
        }

        /*
         * Listed on an earlier day of the range, so on an earlier page.
         * Without its list of days (written with the index, so only lost
         * with it) the order is listed rather than lost.
         */

        day = (first->elements == 2
               && first->element[1]->type == REDIS_REPLY_STRING)
              ? ngx_atoi((u_char *) first->element[1]->str,
                         first->element[1]->len)
              : NGX_ERROR;

        if (day != NGX_ERROR && day < ctx->entries[i].day) {
            continue;
        }

        ctx->entries[i].reply = 2 * i;
        ctx->entries[k++] = ctx->entries[i];
    }

    ctx->nentries = k;
    ctx->orders = call;

    ngx_http_psd_reconcile_finish(r, NGX_OK);
}


/* a field of entry i's record: a string, or NULL when absent */

static redisReply *
ngx_http_psd_reconcile_field(ngx_http_psd_recon_ctx_t *ctx, ngx_uint_t i,
    ngx_uint_t f)
{
    redisReply  *v;

    v = ctx->orders->replies[ctx->entries[i].reply]->element[f];

    /* the webhook bounds what it stores; a bigger value is not its */
    return (v->type == REDIS_REPLY_STRING && v->len <= 256) ? v : NULL;
}


/* an amount or a time (f >= NGX_HTTP_PSD_RECON_F_TIMES), or none */

static int64_t
ngx_http_psd_reconcile_number(redisReply *v, ngx_uint_t f)
{
    int64_t  n;

    if (v == NULL || psd_recon_minor_parse(v->str, v->len, &n) != 0) {
        return PSD_RECON_NONE;
    }

    if (f >= NGX_HTTP_PSD_RECON_F_TIMES
        && (n < 0 || n > PSD_RECON_TIME_MAX))
    {
        return PSD_RECON_NONE;
    }

    return n;
}


static ngx_int_t
ngx_http_psd_reconcile_csv(ngx_http_request_t *r,
    ngx_http_psd_recon_ctx_t *ctx, ngx_str_t *body)
{
    u_char      *p;
    size_t       len;
    int64_t      n;
    ngx_uint_t   i, f;
    redisReply  *v;

    static const char  header[] = "order_id,payment_id,amount,currency,"
                                  "state,created_at,paid_at,refunded_at,"
                                  "chargeback_at,updated_at\r\n";

    len = sizeof(header) - 1;

    for (i = 0; i < ctx->nentries; i++) {
        len += psd_csv_escape(NULL, (char *) ctx->entries[i].id.data,
                              ctx->entries[i].id.len, PSD_CSV_GUARD);

        for (f = 0; f < NGX_HTTP_PSD_RECON_NFIELDS; f++) {
            v = ngx_http_psd_reconcile_field(ctx, i, f);
            len += 1 + ((v == NULL) ? 0
                        : (f == NGX_HTTP_PSD_RECON_F_AMOUNT) ? NGX_INT64_LEN
                        : (f >= NGX_HTTP_PSD_RECON_F_TIMES) ? 20
                        : psd_csv_escape(NULL, v->str, v->len,
                                         PSD_CSV_GUARD));
        }

        len += 2;
    }

    body->data = ngx_pnalloc(r->pool, len);
    if (body->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(body->data, header, sizeof(header) - 1);

    /* ids and gateway strings come from webhook bodies: escaped, guarded */

    for (i = 0; i < ctx->nentries; i++) {
        p += psd_csv_escape((char *) p, (char *) ctx->entries[i].id.data,
                            ctx->entries[i].id.len, PSD_CSV_GUARD);

        for (f = 0; f < NGX_HTTP_PSD_RECON_NFIELDS; f++) {
            *p++ = ',';
            v = ngx_http_psd_reconcile_field(ctx, i, f);

            if (v == NULL) {
                continue;
            }

            if (f < NGX_HTTP_PSD_RECON_F_TIMES
                && f != NGX_HTTP_PSD_RECON_F_AMOUNT)
            {
                p += psd_csv_escape((char *) p, v->str, v->len,
                                    PSD_CSV_GUARD);
                continue;
            }

            n = ngx_http_psd_reconcile_number(v, f);

            if (n == PSD_RECON_NONE) {
                continue;
            }

            if (f == NGX_HTTP_PSD_RECON_F_AMOUNT) {
                p = ngx_sprintf(p, "%L", n);

            } else {
                psd_recon_time_format(n, (char *) p);
                p += 20;
            }
        }

        *p++ = CR;
        *p++ = LF;
    }

    body->len = p - body->data;

    return NGX_OK;
}


static ngx_int_t
ngx_http_psd_reconcile_json(ngx_http_request_t *r,
    ngx_http_psd_recon_ctx_t *ctx, ngx_str_t *cursor, ngx_str_t *body)
{
    char        *text;
    json_t      *out, *list, *o, *j;
    int64_t      n;
    ngx_uint_t   i, f;
    redisReply  *v;
    char         date[16];

    out = json_object();
    list = json_array();

    psd_recon_day_format(ctx->from, date);
    json_object_set_new(out, "from", json_string(date));
    psd_recon_day_format(ctx->to, date);
    json_object_set_new(out, "to", json_string(date));

    for (i = 0; i < ctx->nentries; i++) {
        o = json_object();

        json_object_set_new(o, "order_id",
                            json_stringn((char *) ctx->entries[i].id.data,
                                         ctx->entries[i].id.len));

        for (f = 0; f < NGX_HTTP_PSD_RECON_NFIELDS; f++) {
            v = ngx_http_psd_reconcile_field(ctx, i, f);

            if (f < NGX_HTTP_PSD_RECON_F_TIMES
                && f != NGX_HTTP_PSD_RECON_F_AMOUNT)
            {
                j = v ? json_stringn(v->str, v->len) : NULL;

            } else {
                n = ngx_http_psd_reconcile_number(v, f);
                j = (n == PSD_RECON_NONE) ? NULL : json_integer(n);
            }

            json_object_set_new(o, ngx_http_psd_recon_fields[f],
                                j ? j : json_null());
        }

        json_array_append_new(list, o);
    }

    json_object_set_new(out, "orders", list);
    json_object_set_new(out, "next_cursor",
                        cursor->len ? json_stringn((char *) cursor->data,
                                                   cursor->len)
                                    : json_null());

    text = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(out);

    if (text == NULL) {
        return NGX_ERROR;
    }

    body->len = ngx_strlen(text);
    body->data = ngx_pnalloc(r->pool, body->len + 1);

    if (body->data == NULL) {
        free(text);
        return NGX_ERROR;
    }

    ngx_memcpy(body->data, text, body->len);
    body->data[body->len++] = LF;

    free(text);

    return NGX_OK;
}


static ngx_int_t
ngx_http_psd_reconcile_send(ngx_http_request_t *r,
    ngx_http_psd_recon_ctx_t *ctx)
{
    ngx_str_t         body, cursor;
    ngx_table_elt_t  *h;
    char              date[16];

    cursor.len = 0;

    if (ctx->has_next) {
        cursor.data = ngx_pnalloc(r->pool, 16 + NGX_INT_T_LEN);
        if (cursor.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        psd_recon_day_format(ctx->next_day, date);
        cursor.len = ngx_sprintf(cursor.data, "%s.%ui", date, ctx->next_rank)
                     - cursor.data;

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "X-PSD-Next-Cursor");
        h->value = cursor;
    }

    if ((ctx->csv ? ngx_http_psd_reconcile_csv(r, ctx, &body)
                  : ngx_http_psd_reconcile_json(r, ctx, &cursor, &body))
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_psd_count(RECONCILE_EXPORT_OK);
    ngx_http_psd_count_add(RECONCILE_ROWS, ctx->nentries);

    return ngx_http_psd_send_body(r, NGX_HTTP_OK,
                                  ctx->csv ? "text/csv; charset=utf-8"
                                           : "application/json",
                                  body.data, body.len);
}


static void
ngx_http_psd_reconcile_finish(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t          *c;
    ngx_http_psd_recon_ctx_t  *ctx;

    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_reconcile_module);

    if (rc == NGX_OK) {
        rc = ngx_http_psd_reconcile_send(r, ctx);

    } else if (rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        ngx_http_psd_count(RECONCILE_EXPORT_FAILED);
        rc = ngx_http_psd_send_unavailable(r, 1);
    }

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}
