
/*
 * Copyright (C) ngx_psd_module authors
 *
 * One source of truth per order.  Gateway webhooks are verified at the
 * edge (Stripe, Standard Webhooks) and applied once to the order record in
 * Redis: dedupe by event id, a state machine that only moves forward, a
 * timeline stream; a refund or chargeback revokes every download link of
 * the order.  The order status endpoint answers customers (with a signed
 * link to it, same keys as downloads) and staff (with an API key).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_psd_module.h"
#include "ngx_http_psd_redis.h"
#include "ngx_http_psd_metrics.h"
#include "ngx_http_psd_link.h"
#include "ngx_http_psd_order.h"
#include "ngx_http_psd_carrier.h"
#include "ngx_http_psd_reconcile.h"
#include "psd_cidr.h"
#include "psd_crypto.h"
#include "psd_link.h"
#include "psd_webhook.h"


#define NGX_HTTP_PSD_WEBHOOK_STRIPE    1
#define NGX_HTTP_PSD_WEBHOOK_STANDARD  2
#define NGX_HTTP_PSD_WEBHOOK_CARRIER   3

#define NGX_HTTP_PSD_ORDER_ID_MAX      64

#define NGX_HTTP_PSD_STATUS_CUSTOMER   1
#define NGX_HTTP_PSD_STATUS_STAFF      2


typedef struct {
    ngx_str_t                     type;
    ngx_str_t                     kind;       /* paid, payment_failed, ... */
} ngx_http_psd_webhook_event_t;


typedef struct {
    ngx_uint_t                    webhook;
    ngx_array_t                  *secrets;    /* psd_webhook_secret_t */
    ngx_array_t                  *events;     /* ngx_http_psd_webhook_event_t */
    ngx_array_t                  *order_path; /* ngx_str_t, JSON path parts */
    time_t                        tolerance;
    time_t                        dedupe;
    ngx_flag_t                    pass;
    ngx_uint_t                    status;     /* customer or staff */
    ngx_str_t                     api_key;
    ngx_str_t                     redis_name;
    ngx_http_psd_redis_server_t  *redis;
} ngx_http_psd_order_loc_conf_t;


typedef struct {
    ngx_int_t                     rc;
    ngx_str_t                     error;
    ngx_str_t                     kind;
    ngx_str_t                     order;
    ngx_http_psd_redis_call_t    *call;
    ngx_uint_t                    nticket_cmds;
    ngx_uint_t                    http_status;
    unsigned                      body_done:1;
    unsigned                      waiting:1;
    unsigned                      done:1;
} ngx_http_psd_order_ctx_t;


static ngx_int_t ngx_http_psd_order_init(ngx_conf_t *cf);
static void *ngx_http_psd_order_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_psd_order_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_psd_webhook(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_psd_webhook_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_psd_webhook_event(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_psd_webhook_order_path(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_psd_order_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_psd_webhook_handler(ngx_http_request_t *r);
static void ngx_http_psd_webhook_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_psd_webhook_process(ngx_http_request_t *r,
    ngx_http_psd_order_ctx_t *ctx);
static void ngx_http_psd_webhook_applied(ngx_http_psd_redis_call_t *call);
static ngx_int_t ngx_http_psd_webhook_finish(ngx_http_request_t *r,
    ngx_http_psd_order_ctx_t *ctx);
static ngx_int_t ngx_http_psd_order_status_handler(ngx_http_request_t *r);
static void ngx_http_psd_order_status_done(ngx_http_psd_redis_call_t *call);
static ngx_uint_t ngx_http_psd_order_link_revoked(ngx_http_request_t *r,
    ngx_http_psd_redis_call_t *call);
static void ngx_http_psd_order_tickets_done(ngx_http_psd_redis_call_t *call);
static void ngx_http_psd_order_status_respond(ngx_http_request_t *r,
    ngx_http_psd_redis_call_t *call2);


static ngx_conf_enum_t  ngx_http_psd_webhook_kinds[] = {
    { ngx_string("stripe"), NGX_HTTP_PSD_WEBHOOK_STRIPE },
    { ngx_string("standard"), NGX_HTTP_PSD_WEBHOOK_STANDARD },
    { ngx_string("carrier"), NGX_HTTP_PSD_WEBHOOK_CARRIER },
    { ngx_null_string, 0 }
};


static ngx_conf_enum_t  ngx_http_psd_order_views[] = {
    { ngx_string("customer"), NGX_HTTP_PSD_STATUS_CUSTOMER },
    { ngx_string("staff"), NGX_HTTP_PSD_STATUS_STAFF },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_psd_order_commands[] = {

    { ngx_string("psd_webhook"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_psd_webhook,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_order_loc_conf_t, webhook),
      &ngx_http_psd_webhook_kinds },

    { ngx_string("psd_webhook_secret"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_psd_webhook_secret,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_webhook_tolerance"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_order_loc_conf_t, tolerance),
      NULL },

    { ngx_string("psd_webhook_dedupe"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_order_loc_conf_t, dedupe),
      NULL },

    { ngx_string("psd_webhook_pass"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_order_loc_conf_t, pass),
      NULL },

    { ngx_string("psd_webhook_event"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_psd_webhook_event,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_webhook_order_path"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_psd_webhook_order_path,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_order_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_psd_order_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_order_loc_conf_t, status),
      &ngx_http_psd_order_views },

    { ngx_string("psd_order_api_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_psd_conf_set_secret_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_order_loc_conf_t, api_key),
      NULL },

    { ngx_string("psd_order_redis"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_order_loc_conf_t, redis_name),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_psd_order_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_psd_order_init,               /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_psd_order_create_loc_conf,    /* create location configuration */
    ngx_http_psd_order_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_psd_order_module = {
    NGX_MODULE_V1,
    &ngx_http_psd_order_module_ctx,        /* module context */
    ngx_http_psd_order_commands,           /* module directives */
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
 * hash tag).  ARGV: event id, kind, event time, dedupe ttl, amount,
 * currency, payment id, now.  Returns {applied: 0 duplicate, 1 applied,
 * 2 recorded but outranked, state}.
 */

static ngx_http_psd_redis_script_t  ngx_http_psd_order_apply_script = {
    "order_apply",
    "if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then\n"
    "  return {0, redis.call('HGET', KEYS[1], 'state') or 'created'}\n"
    "end\n"
    "local rank = {created = 0, paid = 1, refunded = 2, chargeback = 3}\n"
    "local state = redis.call('HGET', KEYS[1], 'state') or 'created'\n"
    "local kind = ARGV[2]\n"
    "local applied = 2\n"
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  redis.call('HSET', KEYS[1], 'state', 'created', 'created_at', ARGV[8])\n"
    "end\n"
    "if kind == 'payment_failed' then\n"
    "  redis.call('HINCRBY', KEYS[1], 'failed_attempts', 1)\n"
    "  redis.call('HSET', KEYS[1], 'last_failure_at', ARGV[3])\n"
    "  applied = 1\n"
    "elseif rank[kind] and rank[kind] > rank[state] then\n"
    "  state = kind\n"
    "  redis.call('HSET', KEYS[1], 'state', kind, kind .. '_at', ARGV[3])\n"
    "  if ARGV[5] ~= '' then\n"
    "    redis.call('HSET', KEYS[1], 'amount', ARGV[5])\n"
    "  end\n"
    "  if ARGV[6] ~= '' then\n"
    "    redis.call('HSET', KEYS[1], 'currency', ARGV[6])\n"
    "  end\n"
    "  if ARGV[7] ~= '' then\n"
    "    redis.call('HSET', KEYS[1], 'payment_id', ARGV[7])\n"
    "  end\n"
    "  if kind == 'refunded' or kind == 'chargeback' then\n"
    "    redis.call('HSET', KEYS[1], 'revoked', ARGV[8])\n"
    "  end\n"
    "  applied = 1\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'updated_at', ARGV[8])\n"
    "redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000', '*', 'event',\n"
    "           ARGV[1], 'kind', kind, 'at', ARGV[3], 'applied',\n"
    "           tostring(applied))\n"
    "return {applied, state}\n",
    ""
};


static ngx_str_t  ngx_http_psd_stripe_events[][2] = {
    { ngx_string("payment_intent.succeeded"), ngx_string("paid") },
    { ngx_string("checkout.session.completed"), ngx_string("paid") },
    { ngx_string("charge.succeeded"), ngx_string("paid") },
    { ngx_string("payment_intent.payment_failed"),
      ngx_string("payment_failed") },
    { ngx_string("charge.failed"), ngx_string("payment_failed") },
    { ngx_string("charge.refunded"), ngx_string("refunded") },
    { ngx_string("charge.dispute.created"), ngx_string("chargeback") },
    { ngx_null_string, ngx_null_string }
};


static ngx_str_t  ngx_http_psd_standard_events[][2] = {
    { ngx_string("payment.succeeded"), ngx_string("paid") },
    { ngx_string("payment.failed"), ngx_string("payment_failed") },
    { ngx_string("payment.refunded"), ngx_string("refunded") },
    { ngx_string("dispute.created"), ngx_string("chargeback") },
    { ngx_null_string, ngx_null_string }
};


static ngx_uint_t  ngx_http_psd_order_used;


static void *
ngx_http_psd_order_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_psd_order_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_order_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->secrets = NULL;
     *     conf->events = NULL;
     *     conf->order_path = NULL;
     *     conf->api_key = { 0, NULL };
     *     conf->redis_name = { 0, NULL };
     */

    conf->webhook = NGX_CONF_UNSET_UINT;
    conf->status = NGX_CONF_UNSET_UINT;
    conf->tolerance = NGX_CONF_UNSET;
    conf->dedupe = NGX_CONF_UNSET;
    conf->pass = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_psd_order_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_psd_order_loc_conf_t  *prev = parent;
    ngx_http_psd_order_loc_conf_t  *conf = child;

    size_t                 klen;
    ngx_uint_t             i;
    psd_webhook_secret_t  *secrets;
    unsigned char          key[PSD_WEBHOOK_KEY_MAX];

    if (conf->secrets == NULL) {
        conf->secrets = prev->secrets;
    }

    if (conf->events == NULL) {
        conf->events = prev->events;
    }

    if (conf->order_path == NULL) {
        conf->order_path = prev->order_path;
    }

    ngx_conf_merge_sec_value(conf->tolerance, prev->tolerance, 300);
    ngx_conf_merge_sec_value(conf->dedupe, prev->dedupe, 7 * 86400);
    ngx_conf_merge_value(conf->pass, prev->pass, 0);
    ngx_conf_merge_str_value(conf->api_key, prev->api_key, "");
    ngx_conf_merge_str_value(conf->redis_name, prev->redis_name, "");

    if (conf->webhook == NGX_CONF_UNSET_UINT
        && conf->status == NGX_CONF_UNSET_UINT)
    {
        return NGX_CONF_OK;
    }

    if (conf->webhook != NGX_CONF_UNSET_UINT
        && (conf->secrets == NULL || conf->secrets->nelts == 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_webhook\" needs \"psd_webhook_secret\"");
        return NGX_CONF_ERROR;
    }

    if (conf->webhook != NGX_CONF_UNSET_UINT && conf->dedupe < 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_webhook_dedupe\" must be at least 1s");
        return NGX_CONF_ERROR;
    }

    if (conf->webhook == NGX_HTTP_PSD_WEBHOOK_STANDARD) {
        secrets = conf->secrets->elts;

        if (conf->secrets->nelts > 8) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "at most 8 \"psd_webhook_secret\" for "
                               "\"psd_webhook standard\"");
            return NGX_CONF_ERROR;
        }

        for (i = 0; i < conf->secrets->nelts; i++) {
            klen = sizeof(key);

            if (psd_webhook_standard_key((char *) secrets[i].data,
                                         secrets[i].len, key, &klen)
                != 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "webhook secret %ui is not a Standard "
                                   "Webhooks secret (\"whsec_\" and base64 "
                                   "of %d to %d bytes)", i + 1,
                                   PSD_WEBHOOK_KEY_MIN, PSD_WEBHOOK_KEY_MAX);
                return NGX_CONF_ERROR;
            }

            psd_cleanse(key, sizeof(key));
        }
    }

    if (conf->status == NGX_HTTP_PSD_STATUS_STAFF && conf->api_key.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_order_status staff\" needs "
                           "\"psd_order_api_key\"");
        return NGX_CONF_ERROR;
    }

    ngx_http_psd_order_used = 1;

    return ngx_http_psd_redis_conf_server(cf, &conf->redis_name,
                                          &conf->redis);
}


/*
 * psd_webhook carrier is served by ngx_http_psd_carrier.c, with the
 * secrets, dedupe time, psd_webhook_pass and Redis server set here; it
 * asks while merging its own configuration, after this module merged
 * (it comes later in PSD_MODULES).
 */

ngx_int_t
ngx_http_psd_order_carrier_conf(ngx_conf_t *cf,
    ngx_http_psd_order_webhook_t *wh)
{
    ngx_http_psd_order_loc_conf_t  *olcf;

    olcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_psd_order_module);

    if (olcf->webhook != NGX_HTTP_PSD_WEBHOOK_CARRIER) {
        return NGX_DECLINED;
    }

    wh->secrets = olcf->secrets;
    wh->dedupe = olcf->dedupe;
    wh->pass = olcf->pass;
    wh->redis = olcf->redis;

    return NGX_OK;
}


static char *
ngx_http_psd_webhook(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_order_loc_conf_t  *olcf = conf;

    char       *rv;
    ngx_str_t  *part;

    rv = ngx_conf_set_enum_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    /* Stripe puts the shop's order id in the payment's metadata */

    if (olcf->order_path == NULL) {
        olcf->order_path = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
        if (olcf->order_path == NULL) {
            return NGX_CONF_ERROR;
        }

        part = ngx_array_push_n(olcf->order_path, 4);
        if (part == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_str_set(&part[0], "data");

        if (olcf->webhook == NGX_HTTP_PSD_WEBHOOK_STRIPE) {
            ngx_str_set(&part[1], "object");
            ngx_str_set(&part[2], "metadata");
            ngx_str_set(&part[3], "order_id");

        } else {
            ngx_str_set(&part[1], "order_id");
            olcf->order_path->nelts = 2;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_psd_webhook_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_order_loc_conf_t  *olcf = conf;

    ngx_str_t              *value, secret;
    psd_webhook_secret_t   *s;

    value = cf->args->elts;

    if (olcf->secrets == NULL) {
        olcf->secrets = ngx_array_create(cf->pool, 2,
                                         sizeof(psd_webhook_secret_t));
        if (olcf->secrets == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_psd_secret_file(cf, &value[1], 16, 512, &secret)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    s = ngx_array_push(olcf->secrets);
    if (s == NULL) {
        return NGX_CONF_ERROR;
    }

    s->data = secret.data;
    s->len = secret.len;

    return NGX_CONF_OK;
}


static char *
ngx_http_psd_webhook_event(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_order_loc_conf_t  *olcf = conf;

    ngx_str_t                     *value;
    ngx_http_psd_webhook_event_t  *ev;

    value = cf->args->elts;

    if (ngx_strcmp(value[2].data, "paid") != 0
        && ngx_strcmp(value[2].data, "payment_failed") != 0
        && ngx_strcmp(value[2].data, "refunded") != 0
        && ngx_strcmp(value[2].data, "chargeback") != 0
        && ngx_strcmp(value[2].data, "ignore") != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid event kind \"%V\" in \"%V\", it must be "
                           "\"paid\", \"payment_failed\", \"refunded\", "
                           "\"chargeback\" or \"ignore\"",
                           &value[2], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (olcf->events == NULL) {
        olcf->events = ngx_array_create(cf->pool, 4,
                                        sizeof(ngx_http_psd_webhook_event_t));
        if (olcf->events == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    ev = ngx_array_push(olcf->events);
    if (ev == NULL) {
        return NGX_CONF_ERROR;
    }

    ev->type = value[1];
    ev->kind = value[2];

    return NGX_CONF_OK;
}


static char *
ngx_http_psd_webhook_order_path(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_psd_order_loc_conf_t  *olcf = conf;

    u_char     *p, *last, *dot;
    ngx_str_t  *value, *part;

    value = cf->args->elts;

    olcf->order_path = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
    if (olcf->order_path == NULL) {
        return NGX_CONF_ERROR;
    }

    p = value[1].data;
    last = p + value[1].len;

    while (p < last) {
        dot = ngx_strlchr(p, last, '.');
        if (dot == NULL) {
            dot = last;
        }

        if (dot == p) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid JSON path \"%V\" in \"%V\"",
                               &value[1], &cmd->name);
            return NGX_CONF_ERROR;
        }

        part = ngx_array_push(olcf->order_path);
        if (part == NULL) {
            return NGX_CONF_ERROR;
        }

        part->len = dot - p;
        part->data = ngx_pnalloc(cf->pool, part->len + 1);
        if (part->data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(part->data, p, part->len);
        part->data[part->len] = '\0';

        p = dot + 1;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_psd_order_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char                      *rv;
    ngx_http_core_loc_conf_t  *clcf;

    rv = ngx_conf_set_enum_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_psd_order_status_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_psd_order_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    if (!ngx_http_psd_order_used) {
        return NGX_OK;
    }

    ngx_http_psd_order_used = 0;

    if (ngx_http_psd_redis_register_script(cf,
                                           &ngx_http_psd_order_apply_script)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    /* after the access phase: allow/deny and auth apply to webhooks too */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_psd_webhook_handler;

    return NGX_OK;
}


/*
 * The webhook is verified in the access phase, so that with
 * psd_webhook_pass the location's own handler (proxy_pass) forwards the
 * verified body to the application; without it we answer ourselves.
 */

static ngx_int_t
ngx_http_psd_webhook_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_http_psd_order_ctx_t       *ctx;
    ngx_http_psd_order_loc_conf_t  *olcf;

    olcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_order_module);

    if (olcf->webhook == NGX_CONF_UNSET_UINT
        || olcf->webhook == NGX_HTTP_PSD_WEBHOOK_CARRIER || r != r->main)
    {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_order_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_psd_order_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_http_set_ctx(r, ctx, ngx_http_psd_order_module);

        return ngx_http_psd_read_signed_body(r, ngx_http_psd_webhook_body);
    }

    if (ctx->waiting || !ctx->body_done) {
        return NGX_DONE;
    }

    if (!ctx->done) {
        rc = ngx_http_psd_webhook_process(r, ctx);
        if (rc != NGX_OK) {
            return rc;
        }

        if (ctx->waiting) {
            return NGX_AGAIN;
        }
    }

    return ngx_http_psd_webhook_finish(r, ctx);
}


static void
ngx_http_psd_webhook_body(ngx_http_request_t *r)
{
    ngx_http_psd_order_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_order_module);

    ctx->body_done = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


static ngx_int_t
ngx_http_psd_webhook_reject(ngx_http_request_t *r,
    ngx_http_psd_order_ctx_t *ctx, ngx_uint_t status, const char *code)
{
    ctx->done = 1;
    ctx->http_status = status;
    ctx->error.data = (u_char *) code;
    ctx->error.len = ngx_strlen(code);

    if (status == NGX_HTTP_UNAUTHORIZED) {
        ngx_http_psd_count(WEBHOOK_REJECTED);

    } else if (status == NGX_HTTP_BAD_REQUEST) {
        ngx_http_psd_count(WEBHOOK_INVALID);
    }

    ngx_http_psd_log(NGX_LOG_INFO, r, 0, "psd_webhook: refused, %s", code);

    return NGX_OK;
}


static ngx_str_t *
ngx_http_psd_webhook_header(ngx_http_request_t *r, const char *name)
{
    ngx_table_elt_t  *h;

    h = ngx_http_psd_header_in(r, name);

    return h ? &h->value : NULL;
}


static ngx_str_t *
ngx_http_psd_webhook_kind(ngx_http_psd_order_loc_conf_t *olcf,
    const char *type)
{
    size_t                         len;
    ngx_uint_t                     i;
    ngx_str_t                    (*builtin)[2];
    ngx_http_psd_webhook_event_t  *ev;

    len = ngx_strlen(type);

    if (olcf->events) {
        ev = olcf->events->elts;

        for (i = 0; i < olcf->events->nelts; i++) {
            if (ev[i].type.len == len
                && ngx_strncmp(ev[i].type.data, type, len) == 0)
            {
                return &ev[i].kind;
            }
        }
    }

    builtin = (olcf->webhook == NGX_HTTP_PSD_WEBHOOK_STRIPE)
              ? ngx_http_psd_stripe_events : ngx_http_psd_standard_events;

    for (i = 0; builtin[i][0].len; i++) {
        if (builtin[i][0].len == len
            && ngx_strncmp(builtin[i][0].data, type, len) == 0)
        {
            return &builtin[i][1];
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_psd_order_valid_id(const char *id, size_t len)
{
    size_t  i;

    if (len == 0 || len > NGX_HTTP_PSD_ORDER_ID_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!(isalnum((u_char) id[i]) || id[i] == '_' || id[i] == '-'
              || id[i] == '.' || id[i] == ':'))
        {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_psd_webhook_process(ngx_http_request_t *r,
    ngx_http_psd_order_ctx_t *ctx)
{
    u_char                         *body, *p;
    size_t                          len, argvlen[11];
    json_t                         *json, *v, *obj;
    ngx_str_t                      *kind, *h1, *h2, *h3, *part, event_id;
    ngx_uint_t                      i, n;
    ngx_buf_t                      *b;
    ngx_chain_t                    *cl;
    json_int_t                      created;
    const char                     *type, *order, *argv[11];
    json_error_t                    err;
    psd_webhook_status_e            st;
    ngx_http_psd_redis_call_t      *call;
    ngx_http_psd_order_loc_conf_t  *olcf;
    psd_webhook_secret_t           *secrets, keys[8];
    u_char                          k1[NGX_HTTP_PSD_ORDER_ID_MAX + 16];
    u_char                          k2[NGX_HTTP_PSD_ORDER_ID_MAX + 160];
    u_char                          k3[NGX_HTTP_PSD_ORDER_ID_MAX + 24];
    u_char                          nums[4][NGX_INT64_LEN];
    unsigned char                   keybuf[8][PSD_WEBHOOK_KEY_MAX];

    olcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_order_module);

    if (r->request_body == NULL || r->request_body->temp_file
        || r->request_body->bufs == NULL)
    {
        if (r->headers_in.content_length_n > 0
            || (r->request_body && r->request_body->temp_file))
        {
            /* bigger than client_body_buffer_size: never spooled to disk */
            return ngx_http_psd_webhook_reject(r, ctx,
                                        NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                        "body_too_large");
        }

        return ngx_http_psd_webhook_reject(r, ctx, NGX_HTTP_BAD_REQUEST,
                                           "empty_body");
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        if (cl->buf->in_file) {
            return ngx_http_psd_webhook_reject(r, ctx,
                                        NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                        "body_too_large");
        }

        len += cl->buf->last - cl->buf->pos;
    }

    if (len == 0) {
        return ngx_http_psd_webhook_reject(r, ctx, NGX_HTTP_BAD_REQUEST,
                                           "empty_body");
    }

    if (r->request_body->bufs->next == NULL) {
        body = r->request_body->bufs->buf->pos;

    } else {
        body = ngx_pnalloc(r->pool, len);
        if (body == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = body;
        for (cl = r->request_body->bufs; cl; cl = cl->next) {
            b = cl->buf;

            /* the last buffer of a chunked body may be empty, pos NULL */
            if (b->last != b->pos) {
                p = ngx_cpymem(p, b->pos, b->last - b->pos);
            }
        }
    }

    secrets = olcf->secrets->elts;
    n = olcf->secrets->nelts;

    event_id.len = 0;

    if (olcf->webhook == NGX_HTTP_PSD_WEBHOOK_STRIPE) {
        h1 = ngx_http_psd_webhook_header(r, "Stripe-Signature");

        st = h1 ? psd_webhook_stripe_verify((char *) h1->data, h1->len,
                                            body, len, secrets, n,
                                            ngx_time(), olcf->tolerance)
                : PSD_WEBHOOK_MISSING_HEADER;

    } else {
        h1 = ngx_http_psd_webhook_header(r, "webhook-id");
        h2 = ngx_http_psd_webhook_header(r, "webhook-timestamp");
        h3 = ngx_http_psd_webhook_header(r, "webhook-signature");

        /* "whsec_<base64>" secrets hold the key in their base64 part */

        for (i = 0; i < n && i < 8; i++) {
            keys[i].data = keybuf[i];
            keys[i].len = sizeof(keybuf[i]);

            if (psd_webhook_standard_key((char *) secrets[i].data,
                                         secrets[i].len, keybuf[i],
                                         &keys[i].len)
                != 0)
            {
                keys[i].len = 0;
            }
        }

        st = (h1 && h2 && h3)
             ? psd_webhook_standard_verify((char *) h1->data, h1->len,
                                           (char *) h2->data, h2->len,
                                           (char *) h3->data, h3->len,
                                           body, len, keys, ngx_min(n, 8),
                                           ngx_time(), olcf->tolerance)
             : PSD_WEBHOOK_MISSING_HEADER;

        psd_cleanse(keybuf, sizeof(keybuf));

        if (h1) {
            event_id = *h1;
        }
    }

    if (st != PSD_WEBHOOK_OK) {
        return ngx_http_psd_webhook_reject(r, ctx,
                   (st == PSD_WEBHOOK_BAD_SIGNATURE
                    || st == PSD_WEBHOOK_STALE_TIMESTAMP)
                   ? NGX_HTTP_UNAUTHORIZED : NGX_HTTP_BAD_REQUEST,
                   psd_webhook_status_name(st));
    }

    ngx_http_psd_count(WEBHOOK_VERIFIED);

    json = json_loadb((char *) body, len, JSON_REJECT_DUPLICATES, &err);

    if (json == NULL || !json_is_object(json)) {
        if (json) {
            json_decref(json);
        }

        return ngx_http_psd_webhook_reject(r, ctx, NGX_HTTP_BAD_REQUEST,
                                           "invalid_json");
    }

    type = json_string_value(json_object_get(json, "type"));

    if (olcf->webhook == NGX_HTTP_PSD_WEBHOOK_STRIPE) {
        v = json_object_get(json, "id");
        if (json_is_string(v)) {
            event_id.data = (u_char *) json_string_value(v);
            event_id.len = json_string_length(v);
        }
    }

    created = ngx_time();
    v = json_object_get(json, "created");
    if (json_is_integer(v)) {
        created = json_integer_value(v);
    }

    obj = json;
    part = olcf->order_path->elts;

    for (i = 0; obj && i < olcf->order_path->nelts; i++) {
        obj = json_object_getn(obj, (char *) part[i].data, part[i].len);
    }

    order = json_string_value(obj);

    kind = type ? ngx_http_psd_webhook_kind(olcf, type) : NULL;

    if (kind == NULL || event_id.len == 0 || event_id.len > 128
        || order == NULL || (kind->len == 6
                             && ngx_strncmp(kind->data, "ignore", 6) == 0))
    {
        /* nothing to apply; the application may still want the event */

        ngx_http_psd_count(WEBHOOK_IGNORED);
        json_decref(json);

        /* a gateway retries what is not acknowledged: say we have it */

        if (olcf->pass || (kind && kind->len == 6
                           && ngx_strncmp(kind->data, "ignore", 6) == 0))
        {
            ctx->done = 1;
            ctx->rc = NGX_DECLINED;
            return NGX_OK;
        }

        return ngx_http_psd_webhook_reject(r, ctx, NGX_HTTP_BAD_REQUEST,
                                           kind == NULL ? "unknown_event"
                                           : order == NULL ? "missing_order"
                                           : event_id.len == 0
                                             ? "missing_event_id"
                                             : "ignored_event");
    }

    if (!ngx_http_psd_order_valid_id(order, json_string_length(obj))) {
        json_decref(json);
        return ngx_http_psd_webhook_reject(r, ctx, NGX_HTTP_BAD_REQUEST,
                                           "invalid_order");
    }

    call = ngx_http_psd_redis_call_create(r, olcf->redis,
                                    1 + NGX_HTTP_PSD_RECONCILE_INDEX_CMDS);
    if (call == NULL) {
        json_decref(json);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = (const char *) k1;
    argvlen[0] = ngx_sprintf(k1, "psd:{order:%s}", order) - k1;
    argv[1] = (const char *) k2;
    argvlen[1] = ngx_sprintf(k2, "psd:{order:%s}:evt:%V", order, &event_id)
                 - k2;
    argv[2] = (const char *) k3;
    argvlen[2] = ngx_sprintf(k3, "psd:{order:%s}:events", order) - k3;

    argv[3] = (const char *) event_id.data;
    argvlen[3] = event_id.len;
    argv[4] = (const char *) kind->data;
    argvlen[4] = kind->len;
    argv[5] = (const char *) nums[0];
    argvlen[5] = ngx_sprintf(nums[0], "%L", (int64_t) created) - nums[0];
    argv[6] = (const char *) nums[1];
    argvlen[6] = ngx_sprintf(nums[1], "%T", olcf->dedupe) - nums[1];

    /* amount, currency and the gateway's payment id, when the event has */

    obj = json_object_get(json_object_get(json, "data"), "object");
    if (obj == NULL) {
        obj = json_object_get(json, "data");
    }

    v = json_object_get(obj, "amount");
    argv[7] = (const char *) nums[2];
    argvlen[7] = json_is_integer(v)
                 ? (size_t) (ngx_sprintf(nums[2], "%L",
                                         (int64_t) json_integer_value(v))
                             - nums[2])
                 : 0;

    v = json_object_get(obj, "currency");
    argv[8] = json_is_string(v) && json_string_length(v) <= 8
              ? json_string_value(v) : "";
    argvlen[8] = ngx_strlen(argv[8]);

    v = json_object_get(obj, "id");
    argv[9] = json_is_string(v) && json_string_length(v) <= 128
              ? json_string_value(v) : "";
    argvlen[9] = ngx_strlen(argv[9]);

    argv[10] = (const char *) nums[3];
    argvlen[10] = ngx_sprintf(nums[3], "%T", ngx_time()) - nums[3];

    if (ngx_http_psd_redis_call_add_script(call,
                                           &ngx_http_psd_order_apply_script,
                                           3, 11, argv, argvlen)
        != NGX_OK
        || ngx_http_psd_reconcile_index(r, call, order, kind, created)
           != NGX_OK)
    {
        json_decref(json);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    json_decref(json);

    ctx->kind = *kind;

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_webhook_applied, r)
        != NGX_OK)
    {
        ngx_http_psd_webhook_applied(call);
        return NGX_OK;
    }

    ctx->waiting = 1;
    ngx_http_psd_redis_wait(r);

    return NGX_OK;
}


static void
ngx_http_psd_webhook_applied(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    redisReply                *reply;
    ngx_http_psd_order_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_order_module);

    ctx->done = 1;
    ctx->rc = NGX_DECLINED;

    reply = call->status == NGX_HTTP_PSD_REDIS_OK ? call->replies[0] : NULL;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        if (reply && reply->type == REDIS_REPLY_ERROR) {
            ngx_http_psd_log(NGX_LOG_ERR, r, 0,
                             "psd_webhook: redis answered \"%*s\"",
                             ngx_min(reply->len, 200), reply->str);
        }

        /* the gateway retries a webhook that was not acknowledged */
        ctx->http_status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ngx_http_psd_count(WEBHOOK_FAILED);

    } else {
        switch (reply->element[0]->integer) {

        case 0:
            ngx_http_psd_count(WEBHOOK_DUPLICATE);
            break;

        case 1:
            ngx_http_psd_count(WEBHOOK_APPLIED);

            /* what happened, not where the order stands */

            switch (ctx->kind.data[0]) {
            case 'p':
                if (ctx->kind.len == 4) {
                    ngx_http_psd_count(ORDERS_PAID);
                } else {
                    ngx_http_psd_count(PAYMENTS_FAILED);
                }
                break;
            case 'r':
                ngx_http_psd_count(ORDERS_REFUNDED);
                break;
            default:
                ngx_http_psd_count(ORDERS_CHARGEBACK);
            }

            break;

        default:
            ngx_http_psd_count(WEBHOOK_OUTRANKED);
        }

        /* applied once and for all; the gateway's retry writes the index */
        if (ngx_http_psd_reconcile_indexed(r, call, 1) != NGX_OK) {
            ctx->http_status = NGX_HTTP_SERVICE_UNAVAILABLE;
        }
    }

    if (ctx->waiting) {
        ctx->waiting = 0;
        ngx_http_psd_redis_resume(r);
    }
}


static ngx_int_t
ngx_http_psd_webhook_finish(ngx_http_request_t *r,
    ngx_http_psd_order_ctx_t *ctx)
{
    ngx_http_psd_order_loc_conf_t  *olcf;

    olcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_order_module);

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

    if (olcf->pass) {
        return NGX_DECLINED;
    }

    return ngx_http_psd_finalize_in_phase(r,
               ngx_http_psd_send_json(r, NGX_HTTP_OK,
                                      (u_char *) "{\"received\":true}\n",
                                      sizeof("{\"received\":true}\n") - 1));
}


/*
 * Order status.  Customers come with a signed link to this location that
 * names their order (psd_link_issue with "order"); staff with the API key
 * and ?order=<id>, and also see the timeline.
 */

static ngx_int_t
ngx_http_psd_order_status_handler(ngx_http_request_t *r)
{
    u_char                         *p;
    size_t                          argvlen[6], olen;
    ngx_str_t                       order;
    ngx_int_t                       rc;
    psd_link_t                     *link;
    psd_link_conf_t                 lconf;
    psd_link_status_e               st;
    const char                     *argv[6];
    ngx_http_psd_order_ctx_t       *ctx;
    ngx_http_psd_redis_call_t      *call;
    ngx_http_psd_order_loc_conf_t  *olcf;
    u_char                          key[NGX_HTTP_PSD_ORDER_ID_MAX + 32];
    u_char                          lkey[PSD_LINK_ID_MAX + 16];

    olcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_order_module);
    link = NULL;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_NOT_ALLOWED,
                                            "method_not_allowed", NULL);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (olcf->status == NGX_HTTP_PSD_STATUS_STAFF) {
        if (!ngx_http_psd_bearer_ok(r, &olcf->api_key)) {
            return ngx_http_psd_send_json_error(r, NGX_HTTP_UNAUTHORIZED,
                                                "unauthorized", NULL);
        }

        if (ngx_http_arg(r, (u_char *) "order", 5, &order) != NGX_OK) {
            return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                                "invalid_field", "order");
        }

    } else {
        link = ngx_palloc(r->pool, sizeof(psd_link_t));
        if (link == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memzero(&lconf, sizeof(psd_link_conf_t));

        if (ngx_http_psd_link_keys(r, &lconf) != NGX_OK) {
            return ngx_http_psd_send_json_error(r, NGX_HTTP_FORBIDDEN,
                                                "link_unknown_key", NULL);
        }

        st = psd_link_verify(link, &lconf, (char *) r->args.data,
                             r->args.len, (char *) r->uri.data, r->uri.len,
                             NULL);

        if (st != PSD_LINK_OK || link->order_len == 0) {
            ngx_http_psd_log(NGX_LOG_INFO, r, 0,
                             "psd_order_status: denied, %s",
                             st == PSD_LINK_OK ? "no order"
                                               : psd_link_status_name(st));
            return ngx_http_psd_send_json_error(r,
                        st == PSD_LINK_EXPIRED ? NGX_HTTP_GONE
                                               : NGX_HTTP_FORBIDDEN,
                        st == PSD_LINK_EXPIRED ? "link_expired"
                                               : "link_invalid", NULL);
        }

        order.data = (u_char *) link->order;
        order.len = link->order_len;
    }

    if (!ngx_http_psd_order_valid_id((char *) order.data, order.len)) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field", "order");
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_psd_order_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->order = order;
    ngx_http_set_ctx(r, ctx, ngx_http_psd_order_module);

    call = ngx_http_psd_redis_call_create(r, olcf->redis, 4);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    olen = ngx_sprintf(key, "psd:{order:%V}", &order) - key;

    argv[0] = "HGETALL";
    argvlen[0] = 7;
    argv[1] = (const char *) key;
    argvlen[1] = olen;

    if (ngx_http_psd_redis_call_add(call, 2, argv, argvlen) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the order's tickets share its hash tag: the same round trip */

    argv[0] = "SMEMBERS";
    argvlen[0] = 8;
    argvlen[1] = ngx_cpymem(key + olen, ":tickets", 8) - key;

    if (ngx_http_psd_redis_call_add(call, 2, argv, argvlen) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argvlen[1] = ngx_cpymem(key + olen, ":links", 6) - key;

    if (ngx_http_psd_redis_call_add(call, 2, argv, argvlen) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * The status link's own revocation, not its order's: the customer of
     * a refunded order must still see the refund.
     */

    if (link) {
        argv[0] = "HEXISTS";
        argvlen[0] = 7;
        argv[1] = (const char *) lkey;
        argvlen[1] = ngx_sprintf(lkey, "psd:{link:%*s}", link->id_len,
                                 link->id)
                     - lkey;
        argv[2] = "revoked";
        argvlen[2] = 7;

        if (ngx_http_psd_redis_call_add(call, 3, argv, argvlen) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (olcf->status == NGX_HTTP_PSD_STATUS_STAFF) {
        p = ngx_cpymem(key + olen, ":events", 7);

        argv[0] = "XREVRANGE";
        argvlen[0] = 9;
        argvlen[1] = p - key;
        argv[2] = "+";
        argvlen[2] = 1;
        argv[3] = "-";
        argvlen[3] = 1;
        argv[4] = "COUNT";
        argvlen[4] = 5;
        argv[5] = "100";
        argvlen[5] = 3;

        if (ngx_http_psd_redis_call_add(call, 6, argv, argvlen) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_order_status_done, r)
        != NGX_OK)
    {
        return ngx_http_psd_send_unavailable(r, 1);
    }

    r->main->count++;
    ngx_http_psd_redis_wait(r);

    return NGX_DONE;
}


static void
ngx_http_psd_order_status_done(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    u_char                         *dot;
    size_t                          i, argvlen[7], largvlen[7];
    redisReply                     *tickets, *links, *t;
    const char                     *argv[7], *largv[7];
    ngx_http_psd_order_ctx_t       *ctx;
    ngx_http_psd_redis_call_t      *call2;
    ngx_http_psd_order_loc_conf_t  *olcf;
    u_char                          key[160];

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_order_module);
    olcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_order_module);

    ctx->call = call;

    if (ngx_http_psd_order_link_revoked(r, call)) {
        ngx_http_psd_order_status_respond(r, NULL);
        return;
    }

    tickets = (call->status == NGX_HTTP_PSD_REDIS_OK && call->ncmds >= 3)
              ? call->replies[1] : NULL;
    links = (call->status == NGX_HTTP_PSD_REDIS_OK && call->ncmds >= 3)
            ? call->replies[2] : NULL;

    if (tickets && tickets->type != REDIS_REPLY_ARRAY) {
        tickets = NULL;
    }

    if (links && links->type != REDIS_REPLY_ARRAY) {
        links = NULL;
    }

    if ((tickets == NULL || tickets->elements == 0)
        && (links == NULL || links->elements == 0))
    {
        ngx_http_psd_order_status_respond(r, NULL);
        return;
    }

    /*
     * Each ticket's state lives under its queue's hash tag: a second
     * round trip, one pipelined write, bounded to the newest 50.
     */

    call2 = ngx_http_psd_redis_call_create(r, olcf->redis, 100);
    if (call2 == NULL) {
        ngx_http_psd_order_status_respond(r, NULL);
        return;
    }

    for (i = 0; tickets && i < tickets->elements && i < 50; i++) {
        t = tickets->element[i];

        dot = (t->type == REDIS_REPLY_STRING && t->len < 100)
              ? (u_char *) ngx_strchr(t->str, '.') : NULL;

        if (dot == NULL) {
            continue;
        }

        argv[0] = "HMGET";
        argvlen[0] = 5;
        argv[1] = (const char *) key;
        argvlen[1] = ngx_sprintf(key, "psd:{tq:%*s}:t:%*s",
                                 (size_t) (dot - (u_char *) t->str), t->str,
                                 t->len, t->str) - key;
        argv[2] = "state";
        argvlen[2] = 5;
        argv[3] = "created_at";
        argvlen[3] = 10;
        argv[4] = "csat_score";
        argvlen[4] = 10;
        argv[5] = "csat_comment";
        argvlen[5] = 12;
        argv[6] = "rated_at";
        argvlen[6] = 8;

        if (ngx_http_psd_redis_call_add(call2, 7, argv, argvlen) != NGX_OK) {
            break;
        }
    }

    ctx->nticket_cmds = call2->ncmds;

    /* each link: what it opens, until when, how many uses, how many used */

    for (i = 0; links && i < links->elements && i < 50; i++) {
        t = links->element[i];

        if (t->type != REDIS_REPLY_STRING || t->len > 64) {
            continue;
        }

        argv[0] = "HMGET";
        argvlen[0] = 5;
        argv[1] = (const char *) key;
        argvlen[1] = ngx_sprintf(key, "psd:{link:%*s}", t->len, t->str) - key;

        largv[0] = "HMGET";
        largv[1] = argv[1];
        largv[2] = "path";
        largv[3] = "exp";
        largv[4] = "limit";
        largv[5] = "used";
        largv[6] = "revoked";

        largvlen[0] = 5;
        largvlen[1] = argvlen[1];
        largvlen[2] = 4;
        largvlen[3] = 3;
        largvlen[4] = 5;
        largvlen[5] = 4;
        largvlen[6] = 7;

        if (ngx_http_psd_redis_call_add(call2, 7, largv, largvlen)
            != NGX_OK)
        {
            break;
        }
    }

    if (call2->ncmds == 0
        || ngx_http_psd_redis_call_send(call2,
                                        ngx_http_psd_order_tickets_done, r)
           != NGX_OK)
    {
        ngx_http_psd_order_status_respond(r, NULL);
    }
}


/* a customer's status link that was revoked by its id */

static ngx_uint_t
ngx_http_psd_order_link_revoked(ngx_http_request_t *r,
    ngx_http_psd_redis_call_t *call)
{
    redisReply                     *revoked;
    ngx_http_psd_order_loc_conf_t  *olcf;

    olcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_order_module);

    if (olcf->status != NGX_HTTP_PSD_STATUS_CUSTOMER
        || call->status != NGX_HTTP_PSD_REDIS_OK || call->ncmds != 4)
    {
        return 0;
    }

    revoked = call->replies[3];

    return revoked && revoked->type == REDIS_REPLY_INTEGER
           && revoked->integer == 1;
}


static void
ngx_http_psd_order_tickets_done(ngx_http_psd_redis_call_t *call)
{
    ngx_http_psd_order_status_respond(call->data,
                                      call->status == NGX_HTTP_PSD_REDIS_OK
                                      ? call : NULL);
}


static void
ngx_http_psd_order_status_respond(ngx_http_request_t *r,
    ngx_http_psd_redis_call_t *call2)
{
    ngx_http_psd_redis_call_t  *call;

    char                           *text;
    ngx_connection_t               *c;
    u_char                         *body;
    size_t                          i, k, len;
    json_t                         *out, *payment, *timeline, *ev, *list;
    json_t                         *csat;
    ngx_int_t                       rc, limit, used;
    redisReply                     *hash, *events, *tickets, *links, *e, *f;
    const char                     *state;
    ngx_http_psd_order_ctx_t       *ctx;
    ngx_http_psd_order_loc_conf_t  *olcf;

    c = r->connection;

    olcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_order_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_order_module);
    call = ctx->call;

    hash = call->status == NGX_HTTP_PSD_REDIS_OK ? call->replies[0] : NULL;

    if (hash == NULL || hash->type != REDIS_REPLY_ARRAY) {
        rc = ngx_http_psd_send_unavailable(r, 1);
        goto done;
    }

    if (ngx_http_psd_order_link_revoked(r, call)) {
        ngx_http_psd_log(NGX_LOG_INFO, r, 0,
                         "psd_order_status: denied, %s", "revoked");
        rc = ngx_http_psd_send_json_error(r, NGX_HTTP_GONE, "link_revoked",
                                          NULL);
        goto done;
    }

    if (hash->elements == 0) {
        rc = ngx_http_psd_send_json_error(r, NGX_HTTP_NOT_FOUND,
                                          "unknown_order", NULL);
        goto done;
    }

    out = json_object();
    payment = json_object();
    state = "created";

    for (i = 0; i + 1 < hash->elements; i += 2) {
        e = hash->element[i];
        f = hash->element[i + 1];

        if (e->type != REDIS_REPLY_STRING || f->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (ngx_strcmp(e->str, "state") == 0) {
            state = f->str;
            json_object_set_new(payment, "state", json_string(f->str));

        } else if (ngx_strcmp(e->str, "currency") == 0
                   || ngx_strcmp(e->str, "payment_id") == 0)
        {
            if (olcf->status == NGX_HTTP_PSD_STATUS_STAFF
                || e->str[0] == 'c')
            {
                json_object_set_new(payment, e->str, json_string(f->str));
            }

        } else if (ngx_strcmp(e->str, "revoked") == 0) {
            json_object_set_new(out, "downloads_revoked_at",
                                json_integer(ngx_atotm((u_char *) f->str,
                                                       f->len)));

        } else if (ngx_strncmp(e->str, "delivery_", 9) == 0) {
            /* ngx_http_psd_carrier_status(), below */
            continue;

        } else {
            /* times and counts are integers */
            json_object_set_new(payment, e->str,
                                json_integer(ngx_atotm((u_char *) f->str,
                                                       f->len)));
        }
    }

    json_object_set_new(out, "order", json_stringn((char *) ctx->order.data,
                                                   ctx->order.len));

    /* the order's tickets, with their state when it could be read */

    tickets = (call->ncmds >= 2) ? call->replies[1] : NULL;

    if (tickets && tickets->type == REDIS_REPLY_ARRAY) {
        list = json_array();

        for (i = 0, k = 0; i < tickets->elements && i < 50; i++) {
            e = tickets->element[i];

            if (e->type != REDIS_REPLY_STRING
                || ngx_strchr(e->str, '.') == NULL || e->len >= 100)
            {
                continue;
            }

            ev = json_object();
            json_object_set_new(ev, "ticket", json_string(e->str));

            f = (call2 && k < ctx->nticket_cmds) ? call2->replies[k] : NULL;
            k++;

            if (f && f->type == REDIS_REPLY_ARRAY && f->elements == 5
                && f->element[0]->type == REDIS_REPLY_STRING)
            {
                json_object_set_new(ev, "state",
                                    json_string(f->element[0]->str));
            }

            /* staff see the customer's rating (psd_ticket_rating) */

            if (olcf->status == NGX_HTTP_PSD_STATUS_STAFF && f
                && f->type == REDIS_REPLY_ARRAY && f->elements == 5
                && f->element[2]->type == REDIS_REPLY_STRING)
            {
                csat = json_object();
                json_object_set_new(csat, "score",
                    json_integer(ngx_atoi((u_char *) f->element[2]->str,
                                          f->element[2]->len)));

                if (f->element[3]->type == REDIS_REPLY_STRING) {
                    json_object_set_new(csat, "comment",
                                        json_string(f->element[3]->str));
                }

                if (f->element[4]->type == REDIS_REPLY_STRING) {
                    json_object_set_new(csat, "rated_at",
                        json_integer(ngx_atotm((u_char *) f->element[4]->str,
                                               f->element[4]->len)));
                }

                json_object_set_new(ev, "csat", csat);
            }

            json_array_append_new(list, ev);
        }

        json_object_set_new(out, "tickets", list);
    }

    /* the links issued for the order, with the uses left */

    links = (call->ncmds >= 3) ? call->replies[2] : NULL;

    if (links && links->type == REDIS_REPLY_ARRAY) {
        list = json_array();

        for (i = 0, k = ctx->nticket_cmds;
             i < links->elements && i < 50;
             i++)
        {
            e = links->element[i];

            if (e->type != REDIS_REPLY_STRING || e->len > 64) {
                continue;
            }

            f = (call2 && k < call2->ncmds) ? call2->replies[k] : NULL;
            k++;

            if (f == NULL || f->type != REDIS_REPLY_ARRAY
                || f->elements != 5
                || f->element[0]->type != REDIS_REPLY_STRING)
            {
                /* the link has lapsed and its record with it */
                continue;
            }

            ev = json_object();
            json_object_set_new(ev, "link", json_string(e->str));
            json_object_set_new(ev, "path", json_string(f->element[0]->str));

            if (f->element[1]->type == REDIS_REPLY_STRING) {
                json_object_set_new(ev, "expires",
                             json_integer(ngx_atotm((u_char *)
                                                    f->element[1]->str,
                                                    f->element[1]->len)));
            }

            limit = (f->element[2]->type == REDIS_REPLY_STRING)
                    ? ngx_atoi((u_char *) f->element[2]->str,
                               f->element[2]->len) : 0;
            used = (f->element[3]->type == REDIS_REPLY_STRING)
                   ? ngx_atoi((u_char *) f->element[3]->str,
                              f->element[3]->len) : 0;

            if (limit > 0) {
                json_object_set_new(ev, "downloads_left",
                                    json_integer(ngx_max(limit
                                                 - ngx_max(used, 0), 0)));
            }

            json_object_set_new(ev, "revoked",
                      json_boolean(f->element[4]->type
                                   == REDIS_REPLY_STRING));

            json_array_append_new(list, ev);
        }

        json_object_set_new(out, "links", list);
    }
    json_object_set_new(out, "payment", payment);
    json_object_set_new(out, "downloads_allowed",
                        json_boolean(ngx_strcmp(state, "paid") == 0
                                     && !json_object_get(out,
                                                "downloads_revoked_at")));

    events = (olcf->status == NGX_HTTP_PSD_STATUS_STAFF && call->ncmds == 4)
             ? call->replies[3] : NULL;

    if (events && events->type == REDIS_REPLY_ARRAY) {
        timeline = json_array();

        for (i = 0; i < events->elements; i++) {
            e = events->element[i];

            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
                || e->element[1]->type != REDIS_REPLY_ARRAY)
            {
                continue;
            }

            ev = json_object();
            f = e->element[1];

            for (k = 0; k + 1 < f->elements; k += 2) {
                if (f->element[k]->type == REDIS_REPLY_STRING
                    && f->element[k + 1]->type == REDIS_REPLY_STRING)
                {
                    json_object_set_new(ev, f->element[k]->str,
                                        json_string(f->element[k + 1]->str));
                }
            }

            json_array_append_new(timeline, ev);
        }

        json_object_set_new(out, "timeline", timeline);
    }

    ngx_http_psd_carrier_status(out, hash, events,
                                olcf->status == NGX_HTTP_PSD_STATUS_STAFF);

    text = json_dumps(out, JSON_COMPACT);
    json_decref(out);

    if (text == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
    len = ngx_strlen(text);
    body = ngx_pnalloc(r->pool, len + 1);

    if (body) {
        ngx_memcpy(body, text, len);
        body[len] = '\n';
        rc = ngx_http_psd_send_json(r, NGX_HTTP_OK, body, len + 1);
    }

    free(text);

done:

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}
