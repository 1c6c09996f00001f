
/*
 * Copyright (C) ngx_psd_module authors
 *
 * Physical delivery tracking: "psd_webhook carrier" takes a carrier's (or
 * a tracking aggregator's) webhooks, proven by an HMAC of the raw body or
 * a shared secret in a header, finds the order, tracking number, status
 * and time by configured JSON paths (psd_carrier.c), maps the carrier's
 * status to a delivery state and applies the event once, by one script on
 * the order's hash tag, to the order record and its timeline.  Carriers
 * deliver out of order: the state is the highest rank of all events seen
 * (psd_carrier_rank), the timeline keeps every one.  The order status
 * views show the delivery through ngx_http_psd_carrier_status().
 *
 * The secrets, dedupe time, psd_webhook_pass and Redis server are the
 * payment webhooks' (ngx_http_psd_order.c), read at merge time.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_psd_module.h"
#include "ngx_http_psd_redis.h"
#include "ngx_http_psd_metrics.h"
#include "ngx_http_psd_order.h"
#include "ngx_http_psd_carrier.h"
#include "psd_carrier.h"
#include "psd_crypto.h"


#define NGX_HTTP_PSD_CARRIER_HMAC     1
#define NGX_HTTP_PSD_CARRIER_SHARED   2

#define NGX_HTTP_PSD_CARRIER_NAME_MAX    32
#define NGX_HTTP_PSD_CARRIER_HEADER_MAX  64
#define NGX_HTTP_PSD_CARRIER_PREFIX_MAX  32


typedef struct {
    ngx_str_t                     text;       /* as written, for messages */
    psd_path_t                    path;       /* points into text */
} ngx_http_psd_carrier_path_t;


typedef struct {
    ngx_http_psd_carrier_path_t  *paths[PSD_CARRIER_NFIELDS];
    ngx_array_t                  *statuses;   /* psd_carrier_map_t */
    ngx_str_t                     name;

    ngx_uint_t                    signature;
    ngx_str_t                     header;     /* NUL-terminated */
    ngx_uint_t                    encoding;
    ngx_str_t                     prefix;

    /* a "psd_webhook carrier" location, from the merge on */
    ngx_flag_t                    enabled;
    psd_carrier_conf_t            event;
    ngx_http_psd_order_webhook_t  webhook;
} ngx_http_psd_carrier_loc_conf_t;


typedef struct {
    ngx_str_t                     error;
    ngx_uint_t                    http_status;
    ngx_int_t                     state;
    unsigned                      body_done:1;
    unsigned                      waiting:1;
    unsigned                      done:1;
    unsigned                      unknown:1;
} ngx_http_psd_carrier_ctx_t;


static ngx_int_t ngx_http_psd_carrier_init(ngx_conf_t *cf);
static void *ngx_http_psd_carrier_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_psd_carrier_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_psd_carrier_path(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_psd_carrier_status_map(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_psd_carrier_name(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_psd_carrier_signature(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_psd_carrier_handler(ngx_http_request_t *r);
static void ngx_http_psd_carrier_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_psd_carrier_process(ngx_http_request_t *r,
    ngx_http_psd_carrier_ctx_t *ctx);
static void ngx_http_psd_carrier_applied(ngx_http_psd_redis_call_t *call);
static ngx_int_t ngx_http_psd_carrier_finish(ngx_http_request_t *r,
    ngx_http_psd_carrier_ctx_t *ctx);


static const char  *ngx_http_psd_carrier_fields[] = {
    "order", "tracking", "status", "time", "event_id"
};


static ngx_command_t  ngx_http_psd_carrier_commands[] = {

    { ngx_string("psd_webhook_carrier_path"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_psd_carrier_path,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_webhook_carrier_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_psd_carrier_status_map,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_webhook_carrier_name"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_psd_carrier_name,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_carrier_loc_conf_t, name),
      NULL },

    { ngx_string("psd_webhook_signature"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF
      |NGX_CONF_TAKE2|NGX_CONF_TAKE3|NGX_CONF_TAKE4,
      ngx_http_psd_carrier_signature,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_psd_carrier_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_psd_carrier_init,             /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_psd_carrier_create_loc_conf,  /* create location configuration */
    ngx_http_psd_carrier_merge_loc_conf    /* merge location configuration */
};


ngx_module_t  ngx_http_psd_carrier_module = {
    NGX_MODULE_V1,
    &ngx_http_psd_carrier_module_ctx,      /* module context */
    ngx_http_psd_carrier_commands,         /* module directives */
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


/*
 * KEYS: the order's hash, the event's dedupe key, the order's timeline (one
 * hash tag).  ARGV: event id, state, event time, dedupe ttl, rank,
 * tracking number, carrier, carrier status, now.  The highest rank holds
 * the delivery state (psd_carrier_rank); a tracking number sticks once
 * known.  Returns {applied: 0 duplicate, 1 applied, 2 recorded but
 * outranked, delivery state, the state before, 1 for the order's first
 * exception}.
 */

static ngx_http_psd_redis_script_t  ngx_http_psd_carrier_apply_script = {
    "carrier_apply",
    "if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then\n"
    "  return {0, redis.call('HGET', KEYS[1], 'delivery_state') or '',\n"
    "          '', 0}\n"
    "end\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  redis.call('HSET', KEYS[1], 'state', 'created', 'created_at', ARGV[9])\n"
    "end\n"
    "local prev = redis.call('HGET', KEYS[1], 'delivery_state') or ''\n"
    "local rank = tonumber(redis.call('HGET', KEYS[1], 'delivery_rank')\n"
    "                      or '-1')\n"
    "local applied = 2\n"
    "local first = 0\n"
    "if ARGV[2] == 'exception' and\n"
    "   redis.call('HINCRBY', KEYS[1], 'delivery_exceptions', 1) == 1 then\n"
    "  first = 1\n"
    "end\n"
    "if tonumber(ARGV[5]) > rank then\n"
    "  applied = 1\n"
    "  redis.call('HSET', KEYS[1], 'delivery_state', ARGV[2],\n"
    "             'delivery_at', ARGV[3], 'delivery_rank', ARGV[5],\n"
    "             'delivery_status', ARGV[8], 'delivery_carrier', ARGV[7])\n"
    "  if ARGV[6] ~= '' then\n"
    "    redis.call('HSET', KEYS[1], 'delivery_tracking', ARGV[6])\n"
    "  end\n"
    "elseif ARGV[6] ~= '' then\n"
    "  redis.call('HSETNX', KEYS[1], 'delivery_tracking', ARGV[6])\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'delivery_updated_at', ARGV[9],\n"
    "           'updated_at', ARGV[9])\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000', '*', 'event',\n"
    "           ARGV[1], 'kind', ARGV[2], 'at', ARGV[3], 'applied',\n"
    "           tostring(applied), 'source', 'carrier', 'carrier', ARGV[7],\n"
    "           'tracking', ARGV[6], 'status', ARGV[8])\n"
    "return {applied, redis.call('HGET', KEYS[1], 'delivery_state'), prev,\n"
    "        first}\n",
    ""
};


static ngx_uint_t  ngx_http_psd_carrier_used;

/* keys psd_json_scan()'s duplicate key table: one per configuration */
static u_char      ngx_http_psd_carrier_hash_key[16];


static void *
ngx_http_psd_carrier_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_psd_carrier_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_carrier_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->paths[] = NULL;
     *     conf->statuses = NULL;
     *     conf->name = { 0, NULL };
     *     conf->header = { 0, NULL };
     *     conf->prefix = { 0, NULL };
     *     conf->event = { 0 };
     *     conf->webhook = { 0 };
     */

    conf->signature = NGX_CONF_UNSET_UINT;
    conf->encoding = NGX_CONF_UNSET_UINT;
    conf->enabled = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_psd_carrier_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_psd_carrier_loc_conf_t  *prev = parent;
    ngx_http_psd_carrier_loc_conf_t  *conf = child;

    ngx_uint_t  k;

    static const ngx_uint_t  required[] = {
        PSD_CARRIER_ORDER, PSD_CARRIER_STATUS, PSD_CARRIER_TIME
    };

    for (k = 0; k < PSD_CARRIER_NFIELDS; k++) {
        if (conf->paths[k] == NULL) {
            conf->paths[k] = prev->paths[k];
        }
    }

    if (conf->statuses == NULL) {
        conf->statuses = prev->statuses;
    }

    ngx_conf_merge_str_value(conf->name, prev->name, "carrier");

    /* a signature is one setting: header, encoding and prefix together */

    if (conf->signature == NGX_CONF_UNSET_UINT) {
        conf->signature = prev->signature;
        conf->header = prev->header;
        conf->encoding = prev->encoding;
        conf->prefix = prev->prefix;
    }

    conf->enabled = 0;

    if (ngx_http_psd_order_carrier_conf(cf, &conf->webhook) != NGX_OK) {
        return NGX_CONF_OK;
    }

    /* nobody may write to an order's delivery without proof */

    if (conf->signature == NGX_CONF_UNSET_UINT) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_webhook carrier\" needs "
                           "\"psd_webhook_signature\"");
        return NGX_CONF_ERROR;
    }

    for (k = 0; k < sizeof(required) / sizeof(required[0]); k++) {
        if (conf->paths[required[k]] == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"psd_webhook carrier\" needs "
                               "\"psd_webhook_carrier_path %s\"",
                               ngx_http_psd_carrier_fields[required[k]]);
            return NGX_CONF_ERROR;
        }
    }

    for (k = 0; k < PSD_CARRIER_NFIELDS; k++) {
        conf->event.paths[k] = conf->paths[k] ? &conf->paths[k]->path : NULL;
    }

    if (conf->statuses) {
        conf->event.map = conf->statuses->elts;
        conf->event.nmap = conf->statuses->nelts;
    }

    conf->event.carrier = (const char *) conf->name.data;
    conf->event.carrier_len = conf->name.len;
    conf->event.hash_key = ngx_http_psd_carrier_hash_key;

    conf->enabled = 1;
    ngx_http_psd_carrier_used = 1;

    return NGX_CONF_OK;
}


static char *
ngx_http_psd_carrier_path(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_carrier_loc_conf_t  *pcf = conf;

    ngx_str_t                    *value;
    ngx_uint_t                    k, i;
    ngx_http_psd_carrier_path_t  *p;

    value = cf->args->elts;

    for (k = 0; k < PSD_CARRIER_NFIELDS; k++) {
        if (ngx_strcmp(value[1].data, ngx_http_psd_carrier_fields[k]) == 0) {
            break;
        }
    }

    if (k == PSD_CARRIER_NFIELDS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid field \"%V\" in \"%V\", it must be "
                           "\"order\", \"tracking\", \"status\", \"time\" or "
                           "\"event_id\"", &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (pcf->paths[k]) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate field \"%V\" in \"%V\"", &value[1],
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    p = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_carrier_path_t));
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    /* the arguments live as long as the configuration */
    p->text = value[2];

    if (psd_path_parse((char *) p->text.data, p->text.len, &p->path) != 0) {
        goto invalid;
    }

    for (i = 0; i < p->path.nsegs; i++) {
        /* a field is one value: no "*" */
        if (p->path.segs[i].wildcard) {
            goto invalid;
        }
    }

    pcf->paths[k] = p;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid JSON path \"%V\" in \"%V\"", &value[2],
                       &cmd->name);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_psd_carrier_status_map(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_psd_carrier_loc_conf_t  *pcf = conf;

    ngx_int_t           state;
    ngx_str_t          *value;
    ngx_uint_t          i;
    psd_carrier_map_t  *m;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > PSD_CARRIER_STATUS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid carrier status \"%V\" in \"%V\", it "
                           "must be 1 to %d bytes", &value[1], &cmd->name,
                           PSD_CARRIER_STATUS_MAX);
        return NGX_CONF_ERROR;
    }

    state = psd_carrier_state_by_name((char *) value[2].data, value[2].len);

    if (state < 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid delivery state \"%V\" in \"%V\", it must "
                           "be \"label_created\", \"shipped\", "
                           "\"in_transit\", \"out_for_delivery\", "
                           "\"delivered\", \"exception\", \"returned\" or "
                           "\"ignore\"", &value[2], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (pcf->statuses == NULL) {
        pcf->statuses = ngx_array_create(cf->pool, 8,
                                         sizeof(psd_carrier_map_t));
        if (pcf->statuses == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    m = pcf->statuses->elts;

    for (i = 0; i < pcf->statuses->nelts; i++) {
        if (m[i].len == value[1].len
            && ngx_strncasecmp((u_char *) m[i].value, value[1].data,
                               value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate carrier status \"%V\" in \"%V\"",
                               &value[1], &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    m = ngx_array_push(pcf->statuses);
    if (m == NULL) {
        return NGX_CONF_ERROR;
    }

    m->value = (const char *) value[1].data;
    m->len = value[1].len;
    m->state = (int) state;

    return NGX_CONF_OK;
}


static ngx_uint_t
ngx_http_psd_carrier_token(ngx_str_t *s, size_t max, ngx_uint_t dot)
{
    size_t  i;

    if (s->len == 0 || s->len > max) {
        return 0;
    }

    for (i = 0; i < s->len; i++) {
        if (!(isalnum(s->data[i]) || s->data[i] == '-' || s->data[i] == '_'
              || (dot && s->data[i] == '.')))
        {
            return 0;
        }
    }

    return 1;
}


static char *
ngx_http_psd_carrier_name(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t  *value;

    value = cf->args->elts;

    /* it stands in dedupe keys and in every delivery the views show */

    if (!ngx_http_psd_carrier_token(&value[1], NGX_HTTP_PSD_CARRIER_NAME_MAX,
                                    1))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid carrier name \"%V\" in \"%V\", it must "
                           "be 1 to %d of [A-Za-z0-9._-]", &value[1],
                           &cmd->name, NGX_HTTP_PSD_CARRIER_NAME_MAX);
        return NGX_CONF_ERROR;
    }

    return ngx_conf_set_str_slot(cf, cmd, conf);
}


/* a signature prefix: "sha256=", "v1," */

static ngx_uint_t
ngx_http_psd_carrier_visible(u_char *p, size_t len)
{
    size_t  i;

    if (len == 0 || len > NGX_HTTP_PSD_CARRIER_PREFIX_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (p[i] <= ' ' || p[i] >= 0x7f) {
            return 0;
        }
    }

    return 1;
}


/*
 * psd_webhook_signature hmac-sha256 <header> [hex|base64] [prefix=<p>];
 * psd_webhook_signature shared <header>;
 */

static char *
ngx_http_psd_carrier_signature(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_psd_carrier_loc_conf_t  *pcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i;

    value = cf->args->elts;

    if (pcf->signature != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    if (ngx_strcmp(value[1].data, "hmac-sha256") == 0) {
        pcf->signature = NGX_HTTP_PSD_CARRIER_HMAC;

    } else if (ngx_strcmp(value[1].data, "shared") == 0
               && cf->args->nelts == 3)
    {
        pcf->signature = NGX_HTTP_PSD_CARRIER_SHARED;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\", it must be "
                           "\"hmac-sha256 <header> [hex|base64] "
                           "[prefix=<text>]\" or \"shared <header>\"",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (!ngx_http_psd_carrier_token(&value[2],
                                    NGX_HTTP_PSD_CARRIER_HEADER_MAX, 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid header name \"%V\" in \"%V\"", &value[2],
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    pcf->header = value[2];

    for (i = 3; i < cf->args->nelts; i++) {

        if (pcf->encoding == NGX_CONF_UNSET_UINT
            && ngx_strcmp(value[i].data, "hex") == 0)
        {
            pcf->encoding = PSD_CARRIER_HEX;
            continue;
        }

        if (pcf->encoding == NGX_CONF_UNSET_UINT
            && ngx_strcmp(value[i].data, "base64") == 0)
        {
            pcf->encoding = PSD_CARRIER_BASE64;
            continue;
        }

        if (pcf->prefix.data == NULL
            && ngx_strncmp(value[i].data, "prefix=", 7) == 0
            && ngx_http_psd_carrier_visible(value[i].data + 7,
                                            value[i].len - 7))
        {
            pcf->prefix.data = value[i].data + 7;
            pcf->prefix.len = value[i].len - 7;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"%V\"", &value[i],
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (pcf->encoding == NGX_CONF_UNSET_UINT) {
        pcf->encoding = PSD_CARRIER_HEX;
    }

    if (pcf->prefix.data == NULL) {
        ngx_str_set(&pcf->prefix, "");
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_psd_carrier_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    if (!ngx_http_psd_carrier_used) {
        return NGX_OK;
    }

    ngx_http_psd_carrier_used = 0;

    if (psd_random_bytes(ngx_http_psd_carrier_hash_key,
                         sizeof(ngx_http_psd_carrier_hash_key))
        != 0)
    {
        return NGX_ERROR;
    }

    if (ngx_http_psd_redis_register_script(cf,
                                           &ngx_http_psd_carrier_apply_script)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    /* after the access phase, like the payment webhooks */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_psd_carrier_handler;

    return NGX_OK;
}


/*
 * The body is read and the event applied in the precontent phase, as for
 * payment webhooks (ngx_http_psd_webhook_handler): with psd_webhook_pass
 * the location's own handler then forwards the verified body.
 */

static ngx_int_t
ngx_http_psd_carrier_handler(ngx_http_request_t *r)
{
    ngx_int_t                         rc;
    ngx_http_psd_carrier_ctx_t       *ctx;
    ngx_http_psd_carrier_loc_conf_t  *pcf;

    pcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_carrier_module);

    if (pcf->enabled != 1 || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_carrier_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_psd_carrier_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_http_set_ctx(r, ctx, ngx_http_psd_carrier_module);

        return ngx_http_psd_read_signed_body(r, ngx_http_psd_carrier_body);
    }

    if (ctx->waiting || !ctx->body_done) {
        return NGX_DONE;
    }

    if (!ctx->done) {
        rc = ngx_http_psd_carrier_process(r, ctx);
        if (rc != NGX_OK) {
            return rc;
        }

        if (ctx->waiting) {
            return NGX_AGAIN;
        }
    }

    return ngx_http_psd_carrier_finish(r, ctx);
}


static void
ngx_http_psd_carrier_body(ngx_http_request_t *r)
{
    ngx_http_psd_carrier_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_carrier_module);

    ctx->body_done = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


static ngx_int_t
ngx_http_psd_carrier_reject(ngx_http_request_t *r,
    ngx_http_psd_carrier_ctx_t *ctx, ngx_uint_t status, const char *code)
{
    ctx->done = 1;
    ctx->http_status = status;
    ctx->error.data = (u_char *) code;
    ctx->error.len = ngx_strlen(code);

    if (status == NGX_HTTP_UNAUTHORIZED) {
        ngx_http_psd_count(CARRIER_REJECTED);

    } else {
        ngx_http_psd_count(CARRIER_INVALID);
    }

    ngx_http_psd_log(NGX_LOG_INFO, r, 0,
                     "psd_webhook carrier: refused, %s", code);

    return NGX_OK;
}


static ngx_int_t
ngx_http_psd_carrier_process(ngx_http_request_t *r,
    ngx_http_psd_carrier_ctx_t *ctx)
{
    u_char                           *body;
    size_t                            len, argvlen[12], hlen, rlen;
    ngx_int_t                         rc;
    ngx_uint_t                        k;
    ngx_str_t                        *order, *id;
    const char                       *error, *argv[12], *state;
    ngx_table_elt_t                  *h;
    psd_carrier_rc_e                  crc;
    psd_carrier_work_t                work;
    psd_carrier_event_t               ev;
    psd_webhook_status_e              st;
    ngx_http_psd_redis_call_t        *call;
    ngx_http_psd_carrier_loc_conf_t  *pcf;
    ngx_str_t                         field[PSD_CARRIER_NFIELDS];
    u_char                            k1[PSD_CARRIER_ORDER_MAX + 16];
    u_char                            k2[PSD_CARRIER_ORDER_MAX
                                         + NGX_HTTP_PSD_CARRIER_NAME_MAX
                                         + PSD_CARRIER_EVENT_ID_MAX + 24];
    u_char                            k3[PSD_CARRIER_ORDER_MAX + 24];
    u_char                            nums[3][NGX_INT64_LEN];
    char                              rank[PSD_CARRIER_RANK_LEN];

    pcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_carrier_module);

    rc = ngx_http_psd_body_bytes(r, NGX_MAX_SIZE_T_VALUE, &body, &len,
                                 &error);

    if (rc == NGX_HTTP_INTERNAL_SERVER_ERROR) {
        return rc;
    }

    if (rc != NGX_OK) {
        return ngx_http_psd_carrier_reject(r, ctx, rc, error);
    }

    if (len == 0) {
        return ngx_http_psd_carrier_reject(r, ctx, NGX_HTTP_BAD_REQUEST,
                                           "empty_body");
    }

    /* the proof first: nothing of an unproven body is looked at */

    h = ngx_http_psd_header_in(r, (char *) pcf->header.data);
    hlen = h ? h->value.len : 0;

    if (pcf->signature == NGX_HTTP_PSD_CARRIER_HMAC) {
        st = psd_carrier_hmac_verify(h ? (char *) h->value.data : NULL, hlen,
                                     (char *) pcf->prefix.data,
                                     pcf->prefix.len, pcf->encoding, body,
                                     len, pcf->webhook.secrets->elts,
                                     pcf->webhook.secrets->nelts);

    } else {
        st = psd_carrier_shared_verify(h ? (char *) h->value.data : NULL,
                                       hlen, pcf->webhook.secrets->elts,
                                       pcf->webhook.secrets->nelts);
    }

    if (st == PSD_WEBHOOK_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (st != PSD_WEBHOOK_OK) {
        return ngx_http_psd_carrier_reject(r, ctx,
                   st == PSD_WEBHOOK_BAD_SIGNATURE ? NGX_HTTP_UNAUTHORIZED
                                                   : NGX_HTTP_BAD_REQUEST,
                   psd_webhook_status_name(st));
    }

    ngx_http_psd_count(CARRIER_VERIFIED);

    work.dec_size = len + PSD_CARRIER_NFIELDS;
    work.dec = ngx_pnalloc(r->pool, work.dec_size);
    work.nslots = PSD_JSON_SLOTS_DEFAULT;
    work.slots = ngx_palloc(r->pool,
                            PSD_JSON_SLOTS_DEFAULT * sizeof(psd_json_slot_t));

    if (work.dec == NULL || work.slots == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    crc = psd_carrier_parse(&pcf->event, body, len, &work, &ev);

    if (crc == PSD_CARRIER_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (crc != PSD_CARRIER_OK) {
        return ngx_http_psd_carrier_reject(r, ctx, NGX_HTTP_BAD_REQUEST,
                                           psd_carrier_strerror(crc));
    }

    for (k = 0; k < PSD_CARRIER_NFIELDS; k++) {
        field[k].data = (u_char *) ev.value[k];
        field[k].len = ev.len[k];
    }

    if (ev.state == PSD_CARRIER_UNKNOWN || ev.state == PSD_CARRIER_IGNORE) {

        /*
         * Carriers know more statuses than anyone maps, and retry what is
         * not acknowledged: an unknown one is taken, counted and logged
         * so that a mapping can be added, never applied.
         */

        if (ev.state == PSD_CARRIER_UNKNOWN) {
            ngx_http_psd_count(CARRIER_UNKNOWN_STATUS);
            ngx_http_psd_log(NGX_LOG_NOTICE, r, 0,
                             "psd_webhook carrier: unknown status \"%V\" "
                             "from \"%V\"", &field[PSD_CARRIER_STATUS],
                             &pcf->name);
            ctx->unknown = 1;

        } else {
            ngx_http_psd_count(CARRIER_IGNORED);
        }

        ctx->done = 1;
        return NGX_OK;
    }

    ctx->state = ev.state;

    rlen = psd_carrier_rank(ev.state, ev.time, rank);
    if (rlen == 0) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    call = ngx_http_psd_redis_call_create(r, pcf->webhook.redis, 1);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    order = &field[PSD_CARRIER_ORDER];
    id = &field[PSD_CARRIER_EVENT_ID];
    state = psd_carrier_state_name(ev.state);

    argv[0] = (const char *) k1;
    argvlen[0] = ngx_sprintf(k1, "psd:{order:%V}", order) - k1;
    argv[1] = (const char *) k2;
    argvlen[1] = ngx_sprintf(k2, "psd:{order:%V}:dlv:%V:%V", order,
                             &pcf->name, id)
                 - k2;
    argv[2] = (const char *) k3;
    argvlen[2] = ngx_sprintf(k3, "psd:{order:%V}:events", order) - k3;

    argv[3] = (const char *) id->data;
    argvlen[3] = id->len;
    argv[4] = state;
    argvlen[4] = ngx_strlen(state);
    argv[5] = (const char *) nums[0];
    argvlen[5] = ngx_sprintf(nums[0], "%L", ev.time) - nums[0];
    argv[6] = (const char *) nums[1];
    argvlen[6] = ngx_sprintf(nums[1], "%T", pcf->webhook.dedupe) - nums[1];
    argv[7] = rank;
    argvlen[7] = rlen;
    argv[8] = field[PSD_CARRIER_TRACKING].len
              ? (const char *) field[PSD_CARRIER_TRACKING].data : "";
    argvlen[8] = field[PSD_CARRIER_TRACKING].len;
    argv[9] = (const char *) pcf->name.data;
    argvlen[9] = pcf->name.len;
    argv[10] = (const char *) field[PSD_CARRIER_STATUS].data;
    argvlen[10] = field[PSD_CARRIER_STATUS].len;
    argv[11] = (const char *) nums[2];
    argvlen[11] = ngx_sprintf(nums[2], "%T", ngx_time()) - nums[2];

    if (ngx_http_psd_redis_call_add_script(call,
                                           &ngx_http_psd_carrier_apply_script,
                                           3, 12, argv, argvlen)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_carrier_applied, r)
        != NGX_OK)
    {
        ngx_http_psd_carrier_applied(call);
        return NGX_OK;
    }

    ctx->waiting = 1;
    ngx_http_psd_redis_wait(r);

    return NGX_OK;
}


static void
ngx_http_psd_carrier_applied(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    redisReply                  *reply, *now, *prev;
    ngx_http_psd_carrier_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_carrier_module);

    ctx->done = 1;

    reply = call->status == NGX_HTTP_PSD_REDIS_OK ? call->replies[0] : NULL;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 4
        || reply->element[0]->type != REDIS_REPLY_INTEGER
        || reply->element[1]->type != REDIS_REPLY_STRING
        || reply->element[2]->type != REDIS_REPLY_STRING
        || reply->element[3]->type != REDIS_REPLY_INTEGER)
    {
        if (reply && reply->type == REDIS_REPLY_ERROR) {
            ngx_http_psd_log(NGX_LOG_ERR, r, 0,
                             "psd_webhook carrier: redis answered \"%*s\"",
                             ngx_min(reply->len, 200), reply->str);
        }

        /* the carrier retries a webhook that was not acknowledged */
        ctx->http_status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ngx_http_psd_count(CARRIER_FAILED);

        goto done;
    }

    if (reply->element[0]->integer == 0) {
        ngx_http_psd_count(CARRIER_DUPLICATE);
        goto done;
    }

    ngx_http_psd_count_n(NGX_HTTP_PSD_M_DELIVERY_LABEL_CREATED + ctx->state);

    if (reply->element[3]->integer == 1) {
        ngx_http_psd_count(DELIVERIES_EXCEPTION);
    }

    if (reply->element[0]->integer != 1) {
        ngx_http_psd_count(CARRIER_OUTRANKED);
        goto done;
    }

    ngx_http_psd_count(CARRIER_APPLIED);

    /* an order reaches delivered, and returned, at most once: see the rank */

    now = reply->element[1];
    prev = reply->element[2];

    if (now->len != prev->len
        || ngx_strncmp(now->str, prev->str, now->len) != 0)
    {
        if (ctx->state == PSD_CARRIER_DELIVERED) {
            ngx_http_psd_count(DELIVERIES_DELIVERED);

        } else if (ctx->state == PSD_CARRIER_RETURNED) {
            ngx_http_psd_count(DELIVERIES_RETURNED);
        }
    }

done:

    if (ctx->waiting) {
        ctx->waiting = 0;
        ngx_http_psd_redis_resume(r);
    }
}


static ngx_int_t
ngx_http_psd_carrier_finish(ngx_http_request_t *r,
    ngx_http_psd_carrier_ctx_t *ctx)
{
    ngx_http_psd_carrier_loc_conf_t  *pcf;

    static u_char  received[] = "{\"received\":true}\n";
    static u_char  unknown[] =
        "{\"received\":true,\"ignored\":\"unknown_status\"}\n";

    pcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_carrier_module);

    if (ctx->http_status == NGX_HTTP_SERVICE_UNAVAILABLE) {
        return ngx_http_psd_finalize_in_phase(r,
                                        ngx_http_psd_send_unavailable(r, 5));
    }

    if (ctx->http_status) {
        return ngx_http_psd_finalize_in_phase(r,
                   ngx_http_psd_send_json_error(r, ctx->http_status,
                                                (char *) ctx->error.data,
                                                NULL));
    }

    if (pcf->webhook.pass) {
        return NGX_DECLINED;
    }

    if (ctx->unknown) {
        return ngx_http_psd_finalize_in_phase(r,
                   ngx_http_psd_send_json(r, NGX_HTTP_ACCEPTED, unknown,
                                          sizeof(unknown) - 1));
    }

    return ngx_http_psd_finalize_in_phase(r,
               ngx_http_psd_send_json(r, NGX_HTTP_OK, received,
                                      sizeof(received) - 1));
}


/* the order status views */

static ngx_uint_t
ngx_http_psd_carrier_is(redisReply *e, const char *name)
{
    return e->type == REDIS_REPLY_STRING && ngx_strcmp(e->str, name) == 0;
}


static json_t *
ngx_http_psd_carrier_time(redisReply *f)
{
    return json_integer(ngx_atotm((u_char *) f->str, f->len));
}


void
ngx_http_psd_carrier_status(void *out, redisReply *hash, redisReply *events,
    ngx_uint_t staff)
{
    size_t       i, k;
    json_t      *delivery, *history, *ev;
    redisReply  *e, *f, *entry;

    delivery = NULL;

    for (i = 0; hash && i + 1 < hash->elements; i += 2) {
        e = hash->element[i];
        f = hash->element[i + 1];

        if (e->type != REDIS_REPLY_STRING || f->type != REDIS_REPLY_STRING
            || ngx_strncmp(e->str, "delivery_", 9) != 0)
        {
            continue;
        }

        if (delivery == NULL) {
            delivery = json_object();
            if (delivery == NULL) {
                return;
            }
        }

        if (ngx_http_psd_carrier_is(e, "delivery_state")
            || ngx_http_psd_carrier_is(e, "delivery_carrier")
            || ngx_http_psd_carrier_is(e, "delivery_tracking")
            || (staff && ngx_http_psd_carrier_is(e, "delivery_status")))
        {
            json_object_set_new(delivery, e->str + 9, json_string(f->str));

        } else if (ngx_http_psd_carrier_is(e, "delivery_at")
                   || ngx_http_psd_carrier_is(e, "delivery_updated_at")
                   || (staff
                       && ngx_http_psd_carrier_is(e, "delivery_exceptions")))
        {
            json_object_set_new(delivery, e->str + 9,
                                ngx_http_psd_carrier_time(f));
        }
    }

    if (delivery == NULL) {
        return;
    }

    /* only the rank and fields of a newer release are left: nothing */

    if (json_object_get(delivery, "state") == NULL) {
        json_decref(delivery);
        return;
    }

    /* staff: the carrier's events of the timeline, newest first */

    if (staff && events && events->type == REDIS_REPLY_ARRAY) {
        history = json_array();

        for (i = 0; history && i < events->elements; i++) {
            entry = events->element[i];

            if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2
                || entry->element[1]->type != REDIS_REPLY_ARRAY)
            {
                continue;
            }

            f = entry->element[1];
            ev = NULL;

            for (k = 0; k + 1 < f->elements; k += 2) {
                if (ngx_http_psd_carrier_is(f->element[k], "source")
                    && ngx_http_psd_carrier_is(f->element[k + 1], "carrier"))
                {
                    ev = json_object();
                    break;
                }
            }

            if (ev == NULL) {
                continue;
            }

            for (k = 0; k + 1 < f->elements; k += 2) {
                e = f->element[k];

                if (f->element[k + 1]->type != REDIS_REPLY_STRING
                    || f->element[k + 1]->len == 0)
                {
                    continue;
                }

                if (ngx_http_psd_carrier_is(e, "kind")) {
                    json_object_set_new(ev, "state",
                                  json_string(f->element[k + 1]->str));

                } else if (ngx_http_psd_carrier_is(e, "at")
                           || ngx_http_psd_carrier_is(e, "applied"))
                {
                    json_object_set_new(ev, e->str,
                                  ngx_http_psd_carrier_time(f->element[k + 1]));

                } else if (ngx_http_psd_carrier_is(e, "event")
                           || ngx_http_psd_carrier_is(e, "status")
                           || ngx_http_psd_carrier_is(e, "carrier")
                           || ngx_http_psd_carrier_is(e, "tracking"))
                {
                    json_object_set_new(ev, e->str,
                                  json_string(f->element[k + 1]->str));
                }
            }

            json_array_append_new(history, ev);
        }

        if (history) {
            json_object_set_new(delivery, "history", history);
        }
    }

    json_object_set_new(out, "delivery", delivery);
}
