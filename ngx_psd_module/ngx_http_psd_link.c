
/*
 * Copyright (C) ngx_psd_module authors
 *
 * Deliver: signed, expiring download links (docs/link-format.md).  The
 * signature, expiry, scope and client binding are checked without Redis;
 * revocation, download limits and the simultaneous-download cap are kept
 * in Redis, in one round trip, only for links that need them.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_psd_module.h"
#include "ngx_http_psd_redis.h"
#include "ngx_http_psd_metrics.h"
#include "ngx_http_psd_link.h"
#include "psd_crypto.h"
#include "psd_link.h"


#define NGX_HTTP_PSD_LINK_REVOKED    (PSD_LINK_WRONG_CLIENT + 1)
#define NGX_HTTP_PSD_LINK_EXHAUSTED  (PSD_LINK_WRONG_CLIENT + 2)
#define NGX_HTTP_PSD_LINK_BUSY       (PSD_LINK_WRONG_CLIENT + 3)
#define NGX_HTTP_PSD_LINK_NONE       (PSD_LINK_WRONG_CLIENT + 4)

#define NGX_HTTP_PSD_LINK_BODY_MAX   16384



typedef struct {
    ngx_array_t                   keys;       /* psd_link_key_t */
    ngx_str_t                     sign_kid;
    psd_link_key_t               *sign_key;
    ngx_uint_t                    log_phase;
    const char                   *purpose;    /* of purpose_keys */
    psd_link_key_t               *purpose_keys;
} ngx_http_psd_link_main_conf_t;


typedef struct {
    ngx_flag_t                    enable;
    ngx_flag_t                    revocation;
    ngx_uint_t                    failure_mode;
    time_t                        skew;
    time_t                        max_ttl;
    ngx_uint_t                    concurrency;
    ngx_msec_t                    lease_ttl;
    ngx_str_t                     redis_name;
    ngx_http_psd_redis_server_t  *redis;
    ngx_str_t                     api_key;
    ngx_uint_t                    endpoint;   /* issue or revoke */
    ngx_flag_t                    require_paid;
} ngx_http_psd_link_loc_conf_t;


typedef struct {
    ngx_http_request_t           *r;
    char                          id[23];
    ngx_str_t                     path;
    ngx_str_t                     order;
    ngx_str_t                     ip;
    ngx_uint_t                    prefix;
    time_t                        exp;
    uint32_t                      limit;
} ngx_http_psd_link_issue_t;


typedef struct {
    psd_link_t                    link;
    ngx_uint_t                    status;     /* psd_link_status_e and ours */
    ngx_int_t                     rc;
    ngx_int_t                     downloads_left;   /* -1: no limit */
    ngx_str_t                     lease;
    ngx_http_psd_redis_server_t  *redis;
    time_t                        expire_at;
    unsigned                      waiting:1;
    unsigned                      done:1;
    unsigned                      stateful:1;
} ngx_http_psd_link_ctx_t;


#define NGX_HTTP_PSD_LINK_ISSUE   1
#define NGX_HTTP_PSD_LINK_REVOKE  2


static ngx_int_t ngx_http_psd_link_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_psd_link_init(ngx_conf_t *cf);
static void *ngx_http_psd_link_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_psd_link_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_psd_link_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_psd_link_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_psd_link_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_psd_link_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

static ngx_int_t ngx_http_psd_link_access_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_psd_link_log_handler(ngx_http_request_t *r);
static void ngx_http_psd_link_checked(ngx_http_psd_redis_call_t *call);
static ngx_int_t ngx_http_psd_link_deny(ngx_http_request_t *r,
    ngx_http_psd_link_ctx_t *ctx);
static ngx_http_psd_link_ctx_t *ngx_http_psd_link_get_ctx(
    ngx_http_request_t *r);
static void ngx_http_psd_link_release(ngx_http_psd_link_ctx_t *ctx,
    ngx_uint_t completed, ngx_http_request_t *r);
static ngx_int_t ngx_http_psd_link_endpoint_handler(ngx_http_request_t *r);
static void ngx_http_psd_link_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_psd_link_issue(ngx_http_request_t *r,
    json_t *body);
static ngx_int_t ngx_http_psd_link_revoke(ngx_http_request_t *r,
    json_t *body);
static void ngx_http_psd_link_issue_paid(ngx_http_psd_redis_call_t *call);
static ngx_int_t ngx_http_psd_link_issue_finish(ngx_http_request_t *r,
    ngx_http_psd_link_issue_t *ictx);
static void ngx_http_psd_link_revoked(ngx_http_psd_redis_call_t *call);

static ngx_int_t ngx_http_psd_link_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static char  ngx_http_psd_link_node[9];


static ngx_conf_num_bounds_t  ngx_http_psd_link_concurrency_bounds = {
    ngx_http_psd_conf_check_bounds, 0, 1000
};


static ngx_command_t  ngx_http_psd_link_commands[] = {

    { ngx_string("psd_link_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_psd_link_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_link_sign_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_psd_link_main_conf_t, sign_kid),
      NULL },

    { ngx_string("psd_link"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_link_loc_conf_t, enable),
      NULL },

    { ngx_string("psd_link_revocation"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_link_loc_conf_t, revocation),
      NULL },

    { ngx_string("psd_link_failure_mode"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_link_loc_conf_t, failure_mode),
      &ngx_http_psd_failure_modes },

    { ngx_string("psd_link_skew"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_link_loc_conf_t, skew),
      NULL },

    { ngx_string("psd_link_max_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_link_loc_conf_t, max_ttl),
      NULL },

    { ngx_string("psd_link_concurrency"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_link_loc_conf_t, concurrency),
      &ngx_http_psd_link_concurrency_bounds },

    { ngx_string("psd_link_lease_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_link_loc_conf_t, lease_ttl),
      NULL },

    { ngx_string("psd_link_redis"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_link_loc_conf_t, redis_name),
      NULL },

    { ngx_string("psd_link_api_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_psd_conf_set_secret_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_link_loc_conf_t, api_key),
      NULL },

    { ngx_string("psd_link_issue_require_paid"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_link_loc_conf_t, require_paid),
      NULL },

    { ngx_string("psd_link_issue"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_psd_link_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_PSD_LINK_ISSUE,
      NULL },

    { ngx_string("psd_link_revoke"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_psd_link_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_PSD_LINK_REVOKE,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_psd_link_module_ctx = {
    ngx_http_psd_link_add_variables,       /* preconfiguration */
    ngx_http_psd_link_init,                /* postconfiguration */

    ngx_http_psd_link_create_main_conf,    /* create main configuration */
    ngx_http_psd_link_init_main_conf,      /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_psd_link_create_loc_conf,     /* create location configuration */
    ngx_http_psd_link_merge_loc_conf       /* merge location configuration */
};


ngx_module_t  ngx_http_psd_link_module = {
    NGX_MODULE_V1,
    &ngx_http_psd_link_module_ctx,         /* module context */
    ngx_http_psd_link_commands,            /* module directives */
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


#define NGX_HTTP_PSD_LINK_VAR_STATUS   0
#define NGX_HTTP_PSD_LINK_VAR_ID       1
#define NGX_HTTP_PSD_LINK_VAR_ORDER    2
#define NGX_HTTP_PSD_LINK_VAR_EXPIRES  3
#define NGX_HTTP_PSD_LINK_VAR_LEFT     4

static ngx_http_variable_t  ngx_http_psd_link_vars[] = {

    { ngx_string("psd_link_status"), NULL, ngx_http_psd_link_variable,
      NGX_HTTP_PSD_LINK_VAR_STATUS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("psd_link_id"), NULL, ngx_http_psd_link_variable,
      NGX_HTTP_PSD_LINK_VAR_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("psd_link_order"), NULL, ngx_http_psd_link_variable,
      NGX_HTTP_PSD_LINK_VAR_ORDER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("psd_link_expires"), NULL, ngx_http_psd_link_variable,
      NGX_HTTP_PSD_LINK_VAR_EXPIRES, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("psd_link_downloads_left"), NULL,
      ngx_http_psd_link_variable, NGX_HTTP_PSD_LINK_VAR_LEFT,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/*
 * KEYS[1] the link's hash (used, revoked), KEYS[2] its leases: downloads
 * in progress that could complete one, scored by when they lapse.
 * ARGV: limit (0: none), concurrency (0: none), lease id ("": take none),
 * lease ttl in ms, expire-at (Unix seconds).
 * Returns {code, used, active}: 0 ok, 1 revoked, 2 exhausted, 3 busy.
 * Redis's clock scores the leases, so every node agrees when they lapse.
 */

static ngx_http_psd_redis_script_t  ngx_http_psd_link_check_script = {
    "link_check",
    "local limit = tonumber(ARGV[1])\n"
    "local conc = tonumber(ARGV[2])\n"
    "if redis.call('HEXISTS', KEYS[1], 'revoked') == 1 then\n"
    "  return {1, 0, 0}\n"
    "end\n"
    "local used = tonumber(redis.call('HGET', KEYS[1], 'used') or '0')\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
    "local active = redis.call('ZCARD', KEYS[2])\n"
    "if limit > 0 and used >= limit then\n"
    "  return {2, used, active}\n"
    "end\n"
    "if ARGV[3] ~= '' then\n"
    "  if (limit > 0 and used + active >= limit)\n"
    "     or (conc > 0 and active >= conc) then\n"
    "    return {3, used, active}\n"
    "  end\n"
    "  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])\n"
    "  redis.call('PEXPIREAT', KEYS[2], now + tonumber(ARGV[4]))\n"
    "end\n"
    "return {0, used, active}\n",
    ""
};


/*
 * KEYS as above; ARGV: lease id ("": none), completed (0/1), expire-at.
 * A completed download spends one use even without a lease (a ranged
 * download's last part), so limits never undercount.
 */

static ngx_http_psd_redis_script_t  ngx_http_psd_link_done_script = {
    "link_done",
    "if ARGV[1] ~= '' then redis.call('ZREM', KEYS[2], ARGV[1]) end\n"
    "if ARGV[2] == '1' then\n"
    "  redis.call('HINCRBY', KEYS[1], 'used', 1)\n"
    "  redis.call('EXPIREAT', KEYS[1], ARGV[3])\n"
    "end\n"
    "return 0\n",
    ""
};


static void *
ngx_http_psd_link_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_psd_link_main_conf_t  *lmcf;

    lmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_link_main_conf_t));
    if (lmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&lmcf->keys, cf->pool, 2, sizeof(psd_link_key_t))
        != NGX_OK)
    {
        return NULL;
    }

    return lmcf;
}


static char *
ngx_http_psd_link_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_psd_link_main_conf_t  *lmcf = conf;

    psd_link_key_t  *keys;

    keys = lmcf->keys.elts;

    if (lmcf->sign_kid.len == 0) {
        /* the newest key signs: rotation is "add a key below the others" */
        if (lmcf->keys.nelts) {
            lmcf->sign_key = &keys[lmcf->keys.nelts - 1];
        }

        return NGX_CONF_OK;
    }

    lmcf->sign_key = (psd_link_key_t *) psd_link_key_find(keys,
                                                  lmcf->keys.nelts,
                                                  (char *) lmcf->sign_kid.data,
                                                  lmcf->sign_kid.len);
    if (lmcf->sign_key == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_link_sign_key\" names unknown key \"%V\"",
                           &lmcf->sign_kid);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_psd_link_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_psd_link_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_link_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->redis_name = { 0, NULL };
     *     conf->redis = NULL;
     *     conf->api_key = { 0, NULL };
     *     conf->endpoint = 0;
     */

    conf->enable = NGX_CONF_UNSET;
    conf->revocation = NGX_CONF_UNSET;
    conf->failure_mode = NGX_CONF_UNSET_UINT;
    conf->skew = NGX_CONF_UNSET;
    conf->max_ttl = NGX_CONF_UNSET;
    conf->concurrency = NGX_CONF_UNSET_UINT;
    conf->lease_ttl = NGX_CONF_UNSET_MSEC;
    conf->require_paid = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_psd_link_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_psd_link_loc_conf_t  *prev = parent;
    ngx_http_psd_link_loc_conf_t  *conf = child;

    ngx_http_core_loc_conf_t       *clcf;
    ngx_http_psd_link_main_conf_t  *lmcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_value(conf->revocation, prev->revocation, 0);
    ngx_conf_merge_uint_value(conf->failure_mode, prev->failure_mode,
                              NGX_HTTP_PSD_FAIL_OPEN);
    ngx_conf_merge_sec_value(conf->skew, prev->skew, 0);
    ngx_conf_merge_sec_value(conf->max_ttl, prev->max_ttl, 30 * 86400);
    ngx_conf_merge_uint_value(conf->concurrency, prev->concurrency, 0);
    ngx_conf_merge_msec_value(conf->lease_ttl, prev->lease_ttl, 3600000);
    ngx_conf_merge_str_value(conf->redis_name, prev->redis_name, "");
    ngx_conf_merge_str_value(conf->api_key, prev->api_key, "");
    ngx_conf_merge_value(conf->require_paid, prev->require_paid, 0);

    if (!conf->enable && conf->endpoint == 0) {
        return NGX_CONF_OK;
    }

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_psd_link_module);

    if (lmcf->keys.nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_link\" needs at least one \"psd_link_key\" "
                           "in http{}");
        return NGX_CONF_ERROR;
    }

    if (conf->endpoint) {
        /* the body is read into one buffer of up to 16 KiB, never a file */
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

        if (clcf->client_body_buffer_size < NGX_HTTP_PSD_LINK_BODY_MAX) {
            clcf->client_body_buffer_size = NGX_HTTP_PSD_LINK_BODY_MAX;
        }
    }

    if (conf->endpoint && conf->api_key.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_link_%s\" needs \"psd_link_api_key\"",
                           conf->endpoint == NGX_HTTP_PSD_LINK_ISSUE
                           ? "issue" : "revoke");
        return NGX_CONF_ERROR;
    }

    if (conf->enable) {
        lmcf->log_phase = 1;
    }

    /* only what may need Redis asks for a server, so stateless sites need
     * no psd_redis at all */

    if (conf->endpoint == NGX_HTTP_PSD_LINK_REVOKE || conf->revocation
        || conf->concurrency || conf->redis_name.len || conf->require_paid)
    {
        return ngx_http_psd_redis_conf_server(cf, &conf->redis_name,
                                              &conf->redis);
    }

    if (conf->enable || conf->endpoint) {
        /* a link with psd_limit (or its order list) needs Redis then */
        (void) ngx_http_psd_redis_conf_server_optional(cf, &conf->redis);
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_psd_link_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_link_main_conf_t  *lmcf = conf;

    ngx_str_t       *value, secret;
    ngx_uint_t       i;
    psd_link_key_t  *key;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > PSD_LINK_KID_MAX) {
        goto invalid;
    }

    for (i = 0; i < value[1].len; i++) {
        if (!(isalnum(value[1].data[i]) || value[1].data[i] == '_'
              || value[1].data[i] == '-'))
        {
            goto invalid;
        }
    }

    key = lmcf->keys.elts;

    for (i = 0; i < lmcf->keys.nelts; i++) {
        if (key[i].kid_len == value[1].len
            && ngx_strncmp(key[i].kid, value[1].data, value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate link key id \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_http_psd_secret_file(cf, &value[2], PSD_LINK_KEY_MIN, 1024,
                                 &secret)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    key = ngx_array_push(&lmcf->keys);
    if (key == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(key, sizeof(psd_link_key_t));

    key->kid = (const char *) value[1].data;
    key->kid_len = value[1].len;
    key->key = secret.data;
    key->key_len = secret.len;

    /* the key hashed into HMAC state once: a verification costs half */

    key->hkey = ngx_http_psd_hmac_key(cf, &secret);
    if (key->hkey == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cannot prepare link key \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid key id \"%V\" in \"%V\", use 1 to %d "
                       "letters, digits, \"_\" or \"-\"",
                       &value[1], &cmd->name, PSD_LINK_KID_MAX);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_psd_link_endpoint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_link_loc_conf_t  *llcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (llcf->endpoint) {
        return "is duplicate";
    }

    llcf->endpoint = cmd->offset;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_psd_link_endpoint_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_psd_link_add_variables(ngx_conf_t *cf)
{
    return ngx_http_psd_add_variables(cf, ngx_http_psd_link_vars);
}


static ngx_int_t
ngx_http_psd_link_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt            *h;
    ngx_http_core_main_conf_t      *cmcf;
    ngx_http_psd_link_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_psd_link_module);

    /* the phase handlers cost nothing where no location uses psd_link */

    if (!lmcf->log_phase) {
        return NGX_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_psd_link_access_handler;

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_psd_link_log_handler;

    if (ngx_http_psd_redis_register_script(cf,
                                           &ngx_http_psd_link_check_script)
        != NGX_OK
        || ngx_http_psd_redis_register_script(cf,
                                              &ngx_http_psd_link_done_script)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * The link keys and the location's time limits, for other features that
 * verify tokens in the link format (order status).
 */

ngx_int_t
ngx_http_psd_link_keys(ngx_http_request_t *r, psd_link_conf_t *lconf)
{
    ngx_http_psd_link_loc_conf_t   *llcf;
    ngx_http_psd_link_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_psd_link_module);
    llcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_link_module);

    if (lmcf->keys.nelts == 0) {
        return NGX_DECLINED;
    }

    lconf->keys = lmcf->keys.elts;
    lconf->nkeys = lmcf->keys.nelts;
    lconf->now = ngx_time();
    lconf->skew = llcf->skew;
    lconf->max_ttl = llcf->max_ttl;

    return NGX_OK;
}


/*
 * Keys of their own for links of another purpose (rating links), derived
 * from the link keys at configuration time, so that the same keys, ids
 * and rotation serve them and yet a download link never opens a rating
 * and the reverse.  Derived once per configuration; sign_kid (empty:
 * psd_link_sign_key's) picks the one that signs.
 */

static void
ngx_http_psd_link_wipe(void *data)
{
    psd_link_key_t  *k = data;

    psd_cleanse((void *) k->key, k->key_len);
}


ngx_http_psd_link_keyring_t *
ngx_http_psd_link_purpose_keys(ngx_conf_t *cf, const char *purpose,
    ngx_str_t *sign_kid)
{
    u_char                         *bytes;
    ngx_str_t                       secret;
    ngx_uint_t                      i;
    psd_link_key_t                 *keys, *k;
    ngx_pool_cleanup_t             *cln;
    ngx_http_psd_link_keyring_t    *ring;
    ngx_http_psd_link_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_psd_link_module);

    if (lmcf->keys.nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s links need at least one \"psd_link_key\" "
                           "in http{}", purpose);
        return NULL;
    }

    keys = lmcf->keys.elts;

    if (lmcf->purpose_keys == NULL
        || ngx_strcmp(lmcf->purpose, purpose) != 0)
    {
        lmcf->purpose_keys = ngx_pcalloc(cf->pool,
                                     lmcf->keys.nelts * sizeof(psd_link_key_t));
        if (lmcf->purpose_keys == NULL) {
            return NULL;
        }

        for (i = 0; i < lmcf->keys.nelts; i++) {
            k = &lmcf->purpose_keys[i];

            cln = ngx_pool_cleanup_add(cf->pool, 0);
            bytes = ngx_pnalloc(cf->pool, PSD_LINK_MAC_LEN);

            if (cln == NULL || bytes == NULL) {
                return NULL;
            }

            k->kid = keys[i].kid;
            k->kid_len = keys[i].kid_len;
            k->key = bytes;
            k->key_len = PSD_LINK_MAC_LEN;

            cln->handler = ngx_http_psd_link_wipe;
            cln->data = k;

            if (psd_link_purpose_key(keys[i].key, keys[i].key_len, purpose,
                                     ngx_strlen(purpose), bytes)
                != 0)
            {
                return NULL;
            }

            secret.data = bytes;
            secret.len = PSD_LINK_MAC_LEN;

            k->hkey = ngx_http_psd_hmac_key(cf, &secret);
            if (k->hkey == NULL) {
                return NULL;
            }
        }

        lmcf->purpose = purpose;
    }

    ring = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_link_keyring_t));
    if (ring == NULL) {
        return NULL;
    }

    ring->keys = lmcf->purpose_keys;
    ring->nkeys = lmcf->keys.nelts;

    if (sign_kid == NULL || sign_kid->len == 0) {
        k = lmcf->sign_key ? lmcf->sign_key : &keys[lmcf->keys.nelts - 1];
        ring->sign = &ring->keys[k - keys];
        return ring;
    }

    ring->sign = (psd_link_key_t *) psd_link_key_find(ring->keys, ring->nkeys,
                                                  (char *) sign_kid->data,
                                                  sign_kid->len);
    if (ring->sign == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown link key \"%V\" for %s links",
                           sign_kid, purpose);
        return NULL;
    }

    return ring;
}


/*
 * The context must survive internal redirects (X-Accel-Redirect, error
 * pages), which clear module contexts: the log phase settles the lease
 * of the request as the client saw it.  So it also hangs off a pool
 * cleanup, where it can be found again.
 */

static void
ngx_http_psd_link_ctx_cleanup(void *data)
{
}


static ngx_http_psd_link_ctx_t *
ngx_http_psd_link_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t       *cln;
    ngx_http_psd_link_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_link_module);

    if (ctx || !r->internal) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_psd_link_ctx_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_psd_link_module);
            return ctx;
        }
    }

    return NULL;
}


static ngx_http_psd_link_ctx_t *
ngx_http_psd_link_create_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t       *cln;
    ngx_http_psd_link_ctx_t  *ctx;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_psd_link_ctx_t));
    if (cln == NULL) {
        return NULL;
    }

    ctx = cln->data;
    ngx_memzero(ctx, sizeof(ngx_http_psd_link_ctx_t));
    ctx->status = NGX_HTTP_PSD_LINK_NONE;
    ctx->downloads_left = -1;

    cln->handler = ngx_http_psd_link_ctx_cleanup;

    ngx_http_set_ctx(r, ctx, ngx_http_psd_link_module);

    return ctx;
}


/* a download that could deliver the file's last byte, and so finish one */

static ngx_uint_t
ngx_http_psd_link_may_complete(ngx_http_request_t *r)
{
    ngx_str_t  *range;

    if (r->method != NGX_HTTP_GET) {
        return 0;
    }

    if (r->headers_in.range == NULL) {
        return 1;
    }

    /*
     * Any single range may hold the file's last byte ("bytes=0-99999",
     * "bytes=-N"): the size is not known yet.  Several ranges (multipart)
     * never count as a download.
     */

    range = &r->headers_in.range->value;

    return ngx_strlchr(range->data, range->data + range->len, ',') == NULL;
}


static ngx_int_t
ngx_http_psd_link_access_handler(ngx_http_request_t *r)
{
    u_char                         *p;
    size_t                          argvlen[7], nlen, klen;
    ngx_int_t                       n;
    ngx_uint_t                      i;
    psd_ip_t                        client, *cp;
    const char                     *argv[7];
    psd_link_conf_t                 lconf;
    struct sockaddr_in             *sin;
    ngx_http_psd_link_ctx_t        *ctx;
    ngx_http_psd_redis_call_t      *call;
    ngx_http_psd_link_loc_conf_t   *llcf;
    ngx_http_psd_link_main_conf_t  *lmcf;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6            *sin6;
#endif
    u_char                          num[4][NGX_INT64_LEN];
    u_char                          key1[PSD_LINK_ID_MAX + 16];
    u_char                          key2[PSD_LINK_ID_MAX + 24];
    u_char                          okey[PSD_LINK_ORDER_MAX + 16];

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_link_module);

    if (!llcf->enable) {
        return NGX_DECLINED;
    }

    /* internal redirects keep the verdict on the request the client made */
    ctx = ngx_http_psd_link_get_ctx(r);

    if (ctx) {
        if (ctx->waiting) {
            return NGX_AGAIN;
        }

        if (ctx->done) {
            return ctx->rc == NGX_OK ? NGX_OK : ngx_http_psd_link_deny(r, ctx);
        }
    }

    ctx = ngx_http_psd_link_create_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_psd_link_module);

    ngx_memzero(&lconf, sizeof(psd_link_conf_t));
    lconf.keys = lmcf->keys.elts;
    lconf.nkeys = lmcf->keys.nelts;
    lconf.now = ngx_time();
    lconf.skew = llcf->skew;
    lconf.max_ttl = llcf->max_ttl;

    cp = NULL;

    switch (r->connection->sockaddr->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) r->connection->sockaddr;
        if (psd_ip_set(&client, (u_char *) &sin->sin_addr, 4) == 0) {
            cp = &client;
        }
        break;

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) r->connection->sockaddr;
        if (psd_ip_set(&client, (u_char *) &sin6->sin6_addr, 16) == 0) {
            cp = &client;
        }
        break;
#endif
    }

    ctx->status = psd_link_verify(&ctx->link, &lconf,
                                  (const char *) r->args.data, r->args.len,
                                  (const char *) r->uri.data, r->uri.len, cp);

    if (ctx->status != PSD_LINK_OK) {
        ctx->done = 1;
        ctx->rc = NGX_ERROR;
        return ngx_http_psd_link_deny(r, ctx);
    }

    if (ctx->link.limit) {
        ctx->downloads_left = ctx->link.limit;
    }

    ctx->stateful = (ctx->link.limit || llcf->concurrency
                     || llcf->revocation);

    if (!ctx->stateful) {
        ngx_http_psd_count(LINK_OK);
        ctx->done = 1;
        ctx->rc = NGX_OK;
        return NGX_OK;
    }

    if (llcf->redis == NULL) {
        ngx_http_psd_log(NGX_LOG_ERR, r, 0,
                         "psd_link: link \"%s\" has a download limit and no "
                         "\"psd_redis\" is configured", ctx->link.id);
        ctx->status = NGX_HTTP_PSD_LINK_NONE;
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->redis = llcf->redis;
    ctx->expire_at = ctx->link.exp + llcf->skew + 86400;

    call = ngx_http_psd_redis_call_create(r, llcf->redis, 2);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* revoking an order revokes every link that names it */

    if (llcf->revocation && ctx->link.order_len) {
        p = ngx_sprintf(okey, "psd:{order:%*s}", ctx->link.order_len,
                        ctx->link.order);
        argv[0] = "HGET";
        argvlen[0] = 4;
        argv[1] = (const char *) okey;
        argvlen[1] = p - okey;
        argv[2] = "revoked";
        argvlen[2] = 7;

        if (ngx_http_psd_redis_call_add(call, 3, argv, argvlen) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if ((ctx->link.limit || llcf->concurrency)
        && ngx_http_psd_link_may_complete(r))
    {
        ctx->lease.data = ngx_pnalloc(r->pool, 3 * NGX_INT64_LEN + 12);
        if (ctx->lease.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* a random per-process prefix: pids repeat across nodes */

        if (ngx_http_psd_link_node[0] == '\0'
            && psd_random_base62(ngx_http_psd_link_node, 8) != 0)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->lease.len = ngx_sprintf(ctx->lease.data, "%*s:%P:%uA:%ui",
                                     (size_t) 8, ngx_http_psd_link_node,
                                     ngx_pid, r->connection->number,
                                     r->connection->requests)
                         - ctx->lease.data;
    }

    klen = ngx_sprintf(key1, "psd:{link:%*s}", ctx->link.id_len,
                       ctx->link.id) - key1;
    ngx_sprintf(key2, "psd:{link:%*s}:leases", ctx->link.id_len,
                ctx->link.id);

    argv[0] = (const char *) key1;
    argvlen[0] = klen;
    argv[1] = (const char *) key2;
    argvlen[1] = klen + sizeof(":leases") - 1;

    for (i = 0; i < 4; i++) {
        n = (i == 0) ? (ngx_int_t) ctx->link.limit
            : (i == 1) ? (ngx_int_t) llcf->concurrency
            : (i == 2) ? (ngx_int_t) llcf->lease_ttl
            : (ngx_int_t) ctx->expire_at;
        nlen = ngx_sprintf(num[i], "%i", n) - num[i];
        argv[i < 2 ? i + 2 : i + 3] = (const char *) num[i];
        argvlen[i < 2 ? i + 2 : i + 3] = nlen;
    }

    argv[4] = (const char *) ctx->lease.data;
    argvlen[4] = ctx->lease.len;

    if (ngx_http_psd_redis_call_add_script(call,
                                           &ngx_http_psd_link_check_script,
                                           2, 7, argv, argvlen)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_link_checked, r)
        != NGX_OK)
    {
        ngx_http_psd_link_checked(call);
        return ctx->rc == NGX_OK ? NGX_OK : ngx_http_psd_link_deny(r, ctx);
    }

    ctx->waiting = 1;
    ngx_http_psd_redis_wait(r);

    return NGX_AGAIN;
}


static void
ngx_http_psd_link_checked(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    redisReply                    *order, *check;
    ngx_http_psd_link_ctx_t       *ctx;
    ngx_http_psd_link_loc_conf_t  *llcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_link_module);
    llcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_link_module);

    ctx->done = 1;
    ctx->rc = NGX_ERROR;

    order = (call->ncmds == 2) ? call->replies[0] : NULL;
    check = call->status == NGX_HTTP_PSD_REDIS_OK
            ? call->replies[call->ncmds - 1] : NULL;

    if (check == NULL || check->type != REDIS_REPLY_ARRAY
        || check->elements != 3
        || check->element[0]->type != REDIS_REPLY_INTEGER
        || check->element[1]->type != REDIS_REPLY_INTEGER)
    {
        if (check && check->type == REDIS_REPLY_ERROR) {
            ngx_http_psd_log(NGX_LOG_ERR, r, 0,
                             "psd_link: redis answered \"%*s\"",
                             ngx_min(check->len, 200), check->str);
        }

        /* a lease we may hold is released when it lapses */
        ctx->lease.len = 0;
        ctx->stateful = 0;

        if (llcf->failure_mode == NGX_HTTP_PSD_FAIL_OPEN) {
            ngx_http_psd_count(LINK_FAIL_OPEN);
            ngx_http_psd_log(NGX_LOG_WARN, r, 0,
                             "psd_link: redis %s, link \"%s\" let through "
                             "without its revocation and limit checks",
                             ngx_http_psd_redis_status_name(call->status),
                             ctx->link.id);
            ctx->rc = NGX_OK;

        } else {
            ngx_http_psd_count(LINK_FAIL_CLOSED);
            ctx->rc = NGX_HTTP_SERVICE_UNAVAILABLE;
        }

        goto resume;
    }

    if (order && order->type == REDIS_REPLY_STRING) {
        /* the script may have taken a lease for a revoked order's link */
        ctx->status = NGX_HTTP_PSD_LINK_REVOKED;
        ctx->rc = NGX_ERROR;

        if (check->element[0]->integer == 0 && ctx->lease.len) {
            ngx_http_psd_link_release(ctx, 0, r);
        }

        ctx->lease.len = 0;
        ctx->stateful = 0;
        goto resume;
    }

    switch (check->element[0]->integer) {

    case 0:
        ctx->rc = NGX_OK;
        ngx_http_psd_count(LINK_OK);

        if (ctx->link.limit) {
            ctx->downloads_left = ctx->link.limit
                                  - check->element[1]->integer;
        }

        break;

    case 1:
        ctx->status = NGX_HTTP_PSD_LINK_REVOKED;
        break;

    case 2:
        ctx->status = NGX_HTTP_PSD_LINK_EXHAUSTED;
        ctx->downloads_left = 0;
        break;

    default:
        ctx->status = NGX_HTTP_PSD_LINK_BUSY;
        break;
    }

    if (ctx->rc != NGX_OK) {
        ctx->rc = NGX_ERROR;
        ctx->lease.len = 0;
        ctx->stateful = 0;
    }

resume:

    if (ctx->waiting) {
        ctx->waiting = 0;
        ngx_http_psd_redis_resume(r);
    }
}


static ngx_int_t
ngx_http_psd_link_deny(ngx_http_request_t *r, ngx_http_psd_link_ctx_t *ctx)
{
    ngx_uint_t                 status, n;
    ngx_table_elt_t           *h;
    ngx_http_core_loc_conf_t  *clcf;

    static const char  *codes[] = {
        "", "link_malformed", "link_unknown_key", "link_invalid",
        "link_expired", "link_wrong_path", "link_wrong_client",
        "link_revoked", "link_exhausted", "link_busy"
    };

    if (ctx->rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        return ngx_http_psd_finalize_in_phase(r,
                                     ngx_http_psd_send_unavailable(r, 1));
    }

    if (ctx->status == PSD_LINK_OK || ctx->status >= NGX_HTTP_PSD_LINK_NONE) {
        return NGX_HTTP_FORBIDDEN;
    }

    switch (ctx->status) {

    case PSD_LINK_EXPIRED:
    case NGX_HTTP_PSD_LINK_REVOKED:
    case NGX_HTTP_PSD_LINK_EXHAUSTED:
        /* the link will never work again */
        status = NGX_HTTP_GONE;
        break;

    case NGX_HTTP_PSD_LINK_BUSY:
        /* a download in progress may finish or fail: try again later */
        status = NGX_HTTP_TOO_MANY_REQUESTS;
        break;

    default:
        status = NGX_HTTP_FORBIDDEN;
    }

    n = NGX_HTTP_PSD_M_LINK_MALFORMED + ctx->status - PSD_LINK_MALFORMED;
    ngx_http_psd_count_n(n);

    ngx_http_psd_log(NGX_LOG_INFO, r, 0,
                     "psd_link: denied, %s, link \"%s\"",
                     codes[ctx->status] + 5,
                     ctx->link.id_len ? ctx->link.id : "-");

    if (status == NGX_HTTP_TOO_MANY_REQUESTS) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Retry-After");
        ngx_str_set(&h->value, "30");
    }

    /* a site's own error_page wins over our JSON */

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (clcf->error_pages) {
        return status;
    }

    return ngx_http_psd_finalize_in_phase(r,
                  ngx_http_psd_send_json_error(r, status, codes[ctx->status],
                                               NULL));
}


/* "bytes START-END/TOTAL" with END + 1 == TOTAL */

static ngx_uint_t
ngx_http_psd_link_range_ends_file(ngx_str_t *value)
{
    off_t    end, total;
    u_char  *p, *dash, *slash, *last;

    p = value->data;
    last = p + value->len;

    if (value->len < 6 || ngx_strncmp(p, "bytes ", 6) != 0) {
        return 0;
    }

    dash = ngx_strlchr(p + 6, last, '-');
    slash = dash ? ngx_strlchr(dash, last, '/') : NULL;

    if (slash == NULL) {
        return 0;
    }

    end = ngx_atoof(dash + 1, slash - dash - 1);
    total = ngx_atoof(slash + 1, last - slash - 1);

    return end != NGX_ERROR && total != NGX_ERROR && end + 1 == total;
}


static ngx_int_t
ngx_http_psd_link_log_handler(ngx_http_request_t *r)
{
    off_t                     sent;
    ngx_uint_t                completed;
    ngx_http_psd_link_ctx_t  *ctx;

    ctx = ngx_http_psd_link_get_ctx(r);

    if (ctx == NULL || ctx->rc != NGX_OK || !ctx->stateful) {
        return NGX_OK;
    }

    ctx->stateful = 0;

    /*
     * A download is complete when the response carried the file's last
     * byte and all of its body reached the socket: a 200, or a 206 whose
     * single range ends the file.  A resumed download completes once.
     */

    completed = 0;
    sent = r->connection->sent - r->header_size;

    if (r->header_only || r->method != NGX_HTTP_GET
        || r->headers_out.content_length_n < 0
        || sent < r->headers_out.content_length_n)
    {
        completed = 0;

    } else if (r->headers_out.status == NGX_HTTP_OK) {
        completed = 1;

    } else if (r->headers_out.status == NGX_HTTP_PARTIAL_CONTENT
               && r->headers_out.content_range
               && r->headers_out.content_range->hash)
    {
        completed = ngx_http_psd_link_range_ends_file(
                                        &r->headers_out.content_range->value);
    }

    if (completed) {
        ngx_http_psd_count(LINK_DOWNLOADS);

    } else if (ctx->lease.len) {
        ngx_http_psd_count(LINK_DOWNLOADS_ABORTED);
    }

    if (completed || ctx->lease.len) {
        ngx_http_psd_link_release(ctx, completed, r);
    }

    return NGX_OK;
}


/* settles a lease, and spends a use for a completed download */

static void
ngx_http_psd_link_release(ngx_http_psd_link_ctx_t *ctx, ngx_uint_t completed,
    ngx_http_request_t *r)
{
    size_t                      argvlen[5], klen;
    const char                 *argv[5];
    ngx_http_psd_redis_call_t  *call;
    u_char                      key1[PSD_LINK_ID_MAX + 16];
    u_char                      key2[PSD_LINK_ID_MAX + 24];
    u_char                      exp[NGX_INT64_LEN];

    if (ctx->redis == NULL) {
        return;
    }

    /* the request is ending: nobody waits for this call */

    call = ngx_http_psd_redis_call_create(NULL, ctx->redis, 1);
    if (call == NULL) {
        return;
    }

    klen = ngx_sprintf(key1, "psd:{link:%*s}", ctx->link.id_len,
                       ctx->link.id) - key1;
    ngx_sprintf(key2, "psd:{link:%*s}:leases", ctx->link.id_len,
                ctx->link.id);

    argv[0] = (const char *) key1;
    argvlen[0] = klen;
    argv[1] = (const char *) key2;
    argvlen[1] = klen + sizeof(":leases") - 1;
    argv[2] = (const char *) ctx->lease.data;
    argvlen[2] = ctx->lease.len;
    argv[3] = completed ? "1" : "0";
    argvlen[3] = 1;
    argv[4] = (const char *) exp;
    argvlen[4] = ngx_sprintf(exp, "%T", ctx->expire_at) - exp;

    if (ngx_http_psd_redis_call_add_script(call,
                                           &ngx_http_psd_link_done_script,
                                           2, 5, argv, argvlen)
        != NGX_OK)
    {
        ngx_destroy_pool(call->pool);
        return;
    }

    if (ngx_http_psd_redis_call_send(call, NULL, NULL) != NGX_OK) {
        ngx_http_psd_log(NGX_LOG_WARN, r, 0,
                         "psd_link: redis unavailable, download of link "
                         "\"%s\" not recorded", ctx->link.id);
    }
}


static ngx_int_t
ngx_http_psd_link_endpoint_handler(ngx_http_request_t *r)
{
    ngx_http_psd_link_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_link_module);

    return ngx_http_psd_read_post(r, &llcf->api_key,
                                  NGX_HTTP_PSD_LINK_BODY_MAX,
                                  ngx_http_psd_link_body_handler);
}


static void
ngx_http_psd_link_body_handler(ngx_http_request_t *r)
{
    void                          *body;
    ngx_int_t                      rc;
    const char                    *error;
    ngx_http_psd_link_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_link_module);

    rc = ngx_http_psd_body_json(r, NGX_HTTP_PSD_LINK_BODY_MAX, &body, &error);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_psd_send_json_error(r, rc,
                                                                  error,
                                                                  NULL));
        return;
    }

    if (llcf->endpoint == NGX_HTTP_PSD_LINK_ISSUE) {
        rc = ngx_http_psd_link_issue(r, body);

    } else {
        rc = ngx_http_psd_link_revoke(r, body);
    }

    json_decref(body);

    if (rc == NGX_DONE) {
        return;
    }

    ngx_http_finalize_request(r, rc);
}


/* a string member, NULL when absent; *bad when present but not a string */

static const char *
ngx_http_psd_link_json_str(json_t *body, const char *name, size_t *len,
    ngx_uint_t *bad)
{
    json_t  *v;

    v = json_object_get(body, name);

    if (v == NULL || json_is_null(v)) {
        return NULL;
    }

    if (!json_is_string(v)) {
        *bad = 1;
        return NULL;
    }

    *len = json_string_length(v);

    return json_string_value(v);
}


static ngx_int_t
ngx_http_psd_link_issue(ngx_http_request_t *r, json_t *body)
{
    size_t                          plen, olen, iplen, argvlen[3];
    json_t                         *v;
    json_int_t                      ttl, limit;
    ngx_uint_t                      bad;
    const char                     *path, *prefix, *order, *ip, *argv[3];
    ngx_http_psd_link_issue_t      *ictx;
    ngx_http_psd_redis_call_t      *call;
    ngx_http_psd_link_loc_conf_t   *llcf;
    u_char                          key[PSD_LINK_ORDER_MAX + 24];

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_link_module);

    bad = 0;
    plen = olen = iplen = 0;

    path = ngx_http_psd_link_json_str(body, "path", &plen, &bad);
    if (bad) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field", "path");
    }

    prefix = ngx_http_psd_link_json_str(body, "prefix", &plen, &bad);
    if (bad || (prefix && path) || (prefix == NULL && path == NULL)) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field",
                                            "path|prefix");
    }

    if (prefix) {
        path = prefix;
    }

    order = ngx_http_psd_link_json_str(body, "order", &olen, &bad);
    if (bad) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field", "order");
    }

    ip = ngx_http_psd_link_json_str(body, "ip", &iplen, &bad);
    if (bad) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field", "ip");
    }

    v = json_object_get(body, "ttl");
    if (!json_is_integer(v) || json_integer_value(v) <= 0) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field", "ttl");
    }

    ttl = json_integer_value(v);

    if ((llcf->max_ttl && ttl > llcf->max_ttl)
        || ttl > 999999999999LL - ngx_time())
    {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "ttl_too_long", "ttl");
    }

    limit = 0;
    v = json_object_get(body, "limit");

    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1
            || json_integer_value(v) > PSD_LINK_LIMIT_MAX)
        {
            return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                                "invalid_field", "limit");
        }

        limit = json_integer_value(v);
    }

    ictx = ngx_pcalloc(r->pool, sizeof(ngx_http_psd_link_issue_t));
    if (ictx == NULL || psd_random_base62(ictx->id, 22) != 0) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the JSON goes when this returns: what the link says is copied */

    ictx->r = r;
    ictx->path.data = ngx_pnalloc(r->pool, plen + olen + iplen + 3);
    if (ictx->path.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ictx->path.len = plen;
    ngx_memcpy(ictx->path.data, path, plen);
    ictx->order.data = ictx->path.data + plen + 1;
    ictx->order.len = olen;
    ngx_memcpy(ictx->order.data, order ? order : "", olen);
    ictx->ip.data = ictx->order.data + olen + 1;
    ictx->ip.len = iplen;
    ngx_memcpy(ictx->ip.data, ip ? ip : "", iplen);

    ictx->prefix = (prefix != NULL);
    ictx->exp = ngx_time() + ttl;
    ictx->limit = (uint32_t) limit;

    if (!llcf->require_paid) {
        return ngx_http_psd_link_issue_finish(r, ictx);
    }

    /* links only for paid orders: ask the order record first */

    if (olen == 0 || olen > PSD_LINK_ORDER_MAX) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field", "order");
    }

    call = ngx_http_psd_redis_call_create(r, llcf->redis, 1);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = "HGET";
    argvlen[0] = 4;
    argv[1] = (const char *) key;
    argvlen[1] = ngx_sprintf(key, "psd:{order:%V}", &ictx->order) - key;
    argv[2] = "state";
    argvlen[2] = 5;

    if (ngx_http_psd_redis_call_add(call, 3, argv, argvlen) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_link_issue_paid,
                                     ictx)
        != NGX_OK)
    {
        return ngx_http_psd_send_unavailable(r, 1);
    }

    ngx_http_psd_redis_wait(r);

    return NGX_DONE;
}


static void
ngx_http_psd_link_issue_paid(ngx_http_psd_redis_call_t *call)
{
    ngx_http_psd_link_issue_t  *ictx = call->data;

    ngx_int_t            rc;
    redisReply          *reply;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = ictx->r;
    c = r->connection;

    reply = call->status == NGX_HTTP_PSD_REDIS_OK ? call->replies[0] : NULL;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        rc = ngx_http_psd_send_unavailable(r, 1);

    } else if (reply->type != REDIS_REPLY_STRING
               || ngx_strcmp(reply->str, "paid") != 0)
    {
        rc = ngx_http_psd_send_json_error(r, NGX_HTTP_CONFLICT,
                                          "order_not_paid", "order");

    } else {
        rc = ngx_http_psd_link_issue_finish(r, ictx);
    }

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_psd_link_issue_finish(ngx_http_request_t *r,
    ngx_http_psd_link_issue_t *ictx)
{
    u_char                         *out, *p;
    long                            qlen;
    size_t                          elen, argvlen[10];
    const char                     *err, *argv[10];
    psd_link_params_t               lp;
    ngx_http_psd_redis_call_t      *call;
    ngx_http_psd_link_loc_conf_t   *llcf;
    ngx_http_psd_link_main_conf_t  *lmcf;
    u_char                          key[PSD_LINK_ID_MAX + 24];
    u_char                          okey[PSD_LINK_ORDER_MAX + 24];
    u_char                          num[3][NGX_INT64_LEN];
    char                            query[PSD_LINK_QUERY_MAX];
    char                            epath[3 * PSD_LINK_SCOPE_MAX + 1];

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_link_module);
    lmcf = ngx_http_get_module_main_conf(r, ngx_http_psd_link_module);

    ngx_memzero(&lp, sizeof(psd_link_params_t));
    lp.kid = lmcf->sign_key->kid;
    lp.kid_len = lmcf->sign_key->kid_len;
    lp.key = lmcf->sign_key->key;
    lp.key_len = lmcf->sign_key->key_len;
    lp.hkey = lmcf->sign_key->hkey;
    lp.path = (char *) ictx->path.data;
    lp.path_len = ictx->path.len;
    lp.prefix = ictx->prefix;
    lp.exp = ictx->exp;
    lp.id = ictx->id;
    lp.id_len = 22;
    lp.order = ictx->order.len ? (char *) ictx->order.data : NULL;
    lp.order_len = ictx->order.len;
    lp.ip = ictx->ip.len ? (char *) ictx->ip.data : NULL;
    lp.ip_len = ictx->ip.len;
    lp.limit = ictx->limit;

    err = NULL;
    qlen = psd_link_sign(&lp, query, sizeof(query), &err);

    if (qlen < 0) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field",
                                            err ? err : "path");
    }

    elen = psd_link_encode_path(epath, sizeof(epath), lp.path, lp.path_len)
           < 0 ? 0 : ngx_strlen(epath);

    if (elen == 0 || lp.path_len > PSD_LINK_SCOPE_MAX) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field", "path");
    }

    /*
     * The order keeps a list of its links, and each link what it opens,
     * for the status views ("what can I download, how many times").
     * Written without waiting: the link works without it.
     */

    if (lp.order_len && llcf->redis) {
        call = ngx_http_psd_redis_call_create(NULL, llcf->redis, 3);

        if (call) {
            argv[0] = "SADD";
            argvlen[0] = 4;
            argv[1] = (const char *) okey;
            argvlen[1] = ngx_sprintf(okey, "psd:{order:%V}:links",
                                     &ictx->order) - okey;
            argv[2] = ictx->id;
            argvlen[2] = 22;

            (void) ngx_http_psd_redis_call_add(call, 3, argv, argvlen);

            argv[0] = "HSET";
            argvlen[0] = 4;
            argv[1] = (const char *) key;
            argvlen[1] = ngx_sprintf(key, "psd:{link:%s}", ictx->id) - key;
            argv[2] = "path";
            argvlen[2] = 4;
            argv[3] = lp.path;
            argvlen[3] = lp.path_len;
            argv[4] = "exp";
            argvlen[4] = 3;
            argv[5] = (const char *) num[0];
            argvlen[5] = ngx_sprintf(num[0], "%L", (int64_t) lp.exp) - num[0];
            argv[6] = "limit";
            argvlen[6] = 5;
            argv[7] = (const char *) num[1];
            argvlen[7] = ngx_sprintf(num[1], "%uD", lp.limit) - num[1];

            (void) ngx_http_psd_redis_call_add(call, 8, argv, argvlen);

            argv[0] = "EXPIREAT";
            argvlen[0] = 8;
            argv[2] = (const char *) num[2];
            argvlen[2] = ngx_sprintf(num[2], "%L",
                                     (int64_t) lp.exp + llcf->skew + 86400)
                         - num[2];

            (void) ngx_http_psd_redis_call_add(call, 3, argv, argvlen);

            if (ngx_http_psd_redis_call_send(call, NULL, NULL) != NGX_OK) {
                ngx_http_psd_log(NGX_LOG_WARN, r, 0,
                                 "psd_link: link \"%s\" issued, not listed "
                                 "under its order (redis unavailable)",
                                 ictx->id);
            }
        }
    }

    out = ngx_pnalloc(r->pool, elen + qlen + 128 + 23);
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the URL and id are made of URL-safe characters: no JSON escaping */

    p = ngx_sprintf(out, "{\"url\":\"%*s?%*s\",\"id\":\"%*s\","
                    "\"expires\":%T}\n",
                    elen, epath, (size_t) qlen, query, (size_t) 22,
                    ictx->id, (time_t) lp.exp);

    ngx_http_psd_count(LINK_ISSUED);

    return ngx_http_psd_send_json(r, NGX_HTTP_OK, out, p - out);
}


static ngx_int_t
ngx_http_psd_link_revoke(ngx_http_request_t *r, json_t *body)
{
    u_char                        *p;
    size_t                         len, argvlen[4];
    ngx_uint_t                     bad, i;
    const char                    *argv[4], *id, *kind;
    ngx_http_psd_redis_call_t     *call;
    ngx_http_psd_link_loc_conf_t  *llcf;
    u_char                         ttl[NGX_INT64_LEN];
    u_char                         now[NGX_INT64_LEN];
    u_char                         key[PSD_LINK_ORDER_MAX + 16];

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_link_module);

    bad = 0;
    len = 0;
    kind = "link";

    id = ngx_http_psd_link_json_str(body, "link", &len, &bad);

    if (id == NULL && !bad) {
        kind = "order";
        id = ngx_http_psd_link_json_str(body, "order", &len, &bad);
    }

    if (bad || id == NULL || len == 0 || len > PSD_LINK_ORDER_MAX) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field", "link|order");
    }

    for (i = 0; i < len; i++) {
        if (!(isalnum((u_char) id[i]) || id[i] == '_' || id[i] == '-'
              || (kind[0] == 'o' && (id[i] == '.' || id[i] == ':'))))
        {
            return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                                "invalid_field", kind);
        }
    }

    call = ngx_http_psd_redis_call_create(r, llcf->redis, 2);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(key, "psd:{%s:%*s}", kind, len, id);

    argv[0] = "HSET";
    argvlen[0] = 4;
    argv[1] = (const char *) key;
    argvlen[1] = p - key;
    argv[2] = "revoked";
    argvlen[2] = 7;
    argv[3] = (const char *) now;
    argvlen[3] = ngx_sprintf(now, "%T", ngx_time()) - now;

    if (ngx_http_psd_redis_call_add(call, 4, argv, argvlen) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * No link outlives max_ttl, so a link's revocation need not either; an
     * order's record is the order's history (webhooks write it) and stays.
     */

    if (kind[0] == 'o' || llcf->max_ttl == 0) {
        goto send;
    }

    argv[0] = "EXPIRE";
    argvlen[0] = 6;
    argv[2] = (const char *) ttl;
    argvlen[2] = ngx_sprintf(ttl, "%T", llcf->max_ttl + llcf->skew + 86400)
                 - ttl;

    if (ngx_http_psd_redis_call_add(call, 3, argv, argvlen) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

send:

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_link_revoked, r)
        != NGX_OK)
    {
        return ngx_http_psd_send_unavailable(r, 1);
    }

    ngx_http_psd_redis_wait(r);

    return NGX_DONE;
}


static void
ngx_http_psd_link_revoked(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    ngx_int_t          rc;
    redisReply        *reply;
    ngx_connection_t  *c;

    c = r->connection;

    reply = call->status == NGX_HTTP_PSD_REDIS_OK ? call->replies[0] : NULL;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        rc = ngx_http_psd_send_unavailable(r, 1);

    } else {
        ngx_http_psd_count(LINK_REVOCATIONS);
        rc = ngx_http_psd_send_json(r, NGX_HTTP_OK,
                                    (u_char *) "{\"revoked\":true}\n",
                                    sizeof("{\"revoked\":true}\n") - 1);
    }

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_psd_link_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                   *p;
    ngx_http_psd_link_ctx_t  *ctx;

    static const char  *names[] = {
        "ok", "malformed", "unknown_key", "invalid", "expired",
        "wrong_path", "wrong_client", "revoked", "exhausted", "busy"
    };

    ctx = ngx_http_psd_link_get_ctx(r);

    if (ctx == NULL || ctx->status == NGX_HTTP_PSD_LINK_NONE) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    switch (data) {

    case NGX_HTTP_PSD_LINK_VAR_STATUS:
        v->data = (u_char *) names[ctx->status];
        v->len = ngx_strlen(names[ctx->status]);
        return NGX_OK;

    case NGX_HTTP_PSD_LINK_VAR_ID:
        v->data = (u_char *) ctx->link.id;
        v->len = ctx->link.id_len;
        break;

    case NGX_HTTP_PSD_LINK_VAR_ORDER:
        v->data = (u_char *) ctx->link.order;
        v->len = ctx->link.order_len;
        break;

    case NGX_HTTP_PSD_LINK_VAR_EXPIRES:
        if (ctx->link.exp == 0) {
            v->len = 0;
            break;
        }

        p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = ngx_sprintf(p, "%L", (int64_t) ctx->link.exp) - p;
        break;

    default: /* NGX_HTTP_PSD_LINK_VAR_LEFT */
        if (ctx->downloads_left < 0) {
            v->len = 0;
            break;
        }

        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->data = p;
        v->len = ngx_sprintf(p, "%i", ctx->downloads_left) - p;
    }

    if (v->len == 0) {
        v->not_found = 1;
    }

    return NGX_OK;
}
