
/*
 * Copyright (C) ngx_psd_module authors
 *
 * Pay: checkout sessions and Idempotency-Key.  A session is a random id in
 * a cookie and a Redis record; the tokens a checkout makes are bound to
 * it.  An Idempotency-Key makes a checkout request happen once: a request
 * in flight answers 409, a repeat with the same payload gets the stored
 * response from nginx, a repeat with another payload 422 (the IETF
 * httpapi idempotency draft).
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_psd_module.h"
#include "ngx_http_psd_redis.h"
#include "ngx_http_psd_metrics.h"
#include "ngx_http_psd_checkout.h"
#include "psd_b64.h"
#include "psd_crypto.h"


#define NGX_HTTP_PSD_SESSION_LEN     22
#define NGX_HTTP_PSD_IDEM_KEY_MAX    255
#define NGX_HTTP_PSD_IDEM_BODY_MAX   65536


typedef struct {
    ngx_flag_t                    session;
    time_t                        session_ttl;
    ngx_flag_t                    idempotency;
    time_t                        idem_ttl;
    time_t                        idem_lock;
    ngx_str_t                     redis_name;
    ngx_http_psd_redis_server_t  *redis;
} ngx_http_psd_checkout_loc_conf_t;


typedef struct {
    u_char                        session[NGX_HTTP_PSD_SESSION_LEN];
    ngx_uint_t                    has_session;

    u_char                        key[48];
    size_t                        key_len;
    u_char                        hash[64];
    ngx_http_psd_redis_server_t  *redis;
    ngx_int_t                     rc;          /* what the check decided */
    ngx_str_t                     replay;      /* a stored response */
    ngx_uint_t                    status;
    ngx_str_t                     content_type;
    u_char                       *resp;
    size_t                        resp_len;
    unsigned                      checked:1;
    unsigned                      waiting:1;
    unsigned                      record:1;
    unsigned                      abandoned:1;
} ngx_http_psd_checkout_ctx_t;


static ngx_int_t ngx_http_psd_checkout_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_psd_checkout_init(ngx_conf_t *cf);
static void *ngx_http_psd_checkout_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_psd_checkout_time_error(ngx_conf_t *cf,
    const char *directive);
static char *ngx_http_psd_checkout_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_psd_checkout_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_psd_checkout_header(ngx_http_request_t *r,
    ngx_http_psd_checkout_ctx_t *ctx);
static void ngx_http_psd_idem_checked(ngx_http_psd_redis_call_t *call);
static void ngx_http_psd_idem_store(ngx_http_request_t *r,
    ngx_http_psd_checkout_ctx_t *ctx, ngx_uint_t keep);
static ngx_int_t ngx_http_psd_checkout_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_psd_checkout_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_psd_checkout_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


static ngx_command_t  ngx_http_psd_checkout_commands[] = {

    { ngx_string("psd_checkout_session"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_checkout_loc_conf_t, session),
      NULL },

    { ngx_string("psd_checkout_session_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_checkout_loc_conf_t, session_ttl),
      NULL },

    { ngx_string("psd_idempotency"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_checkout_loc_conf_t, idempotency),
      NULL },

    { ngx_string("psd_idempotency_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_checkout_loc_conf_t, idem_ttl),
      NULL },

    { ngx_string("psd_idempotency_lock"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_checkout_loc_conf_t, idem_lock),
      NULL },

    { ngx_string("psd_checkout_redis"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_checkout_loc_conf_t, redis_name),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_psd_checkout_module_ctx = {
    ngx_http_psd_checkout_add_variables,   /* preconfiguration */
    ngx_http_psd_checkout_init,            /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_psd_checkout_create_loc_conf, /* create location configuration */
    ngx_http_psd_checkout_merge_loc_conf   /* merge location configuration */
};


ngx_module_t  ngx_http_psd_checkout_module = {
    NGX_MODULE_V1,
    &ngx_http_psd_checkout_module_ctx,     /* module context */
    ngx_http_psd_checkout_commands,        /* module directives */
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


static ngx_http_variable_t  ngx_http_psd_checkout_vars[] = {

    { ngx_string("psd_checkout_session"), NULL,
      ngx_http_psd_checkout_variable, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/*
 * KEYS[1] the key's record; ARGV: the payload's hash, the lock's ttl.
 * "p:<hash>" while a request is in flight, "d:<hash>:<response>" once done.
 * Returns {0} new (locked for us), {1} in flight, {2, response} done,
 * {3} the key was used with another payload.
 */

static ngx_http_psd_redis_script_t  ngx_http_psd_idem_script = {
    "idempotency",
    "local v = redis.call('GET', KEYS[1])\n"
    "if not v then\n"
    "  redis.call('SET', KEYS[1], 'p:' .. ARGV[1], 'EX', ARGV[2])\n"
    "  return {0}\n"
    "end\n"
    "if string.sub(v, 3, 2 + #ARGV[1]) ~= ARGV[1] then\n"
    "  return {3}\n"
    "end\n"
    "if string.sub(v, 1, 1) == 'p' then\n"
    "  return {1}\n"
    "end\n"
    "return {2, string.sub(v, 4 + #ARGV[1])}\n",
    ""
};


static ngx_uint_t  ngx_http_psd_checkout_used;
static ngx_uint_t  ngx_http_psd_checkout_filters;


static void *
ngx_http_psd_checkout_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_psd_checkout_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_checkout_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->session = NGX_CONF_UNSET;
    conf->session_ttl = NGX_CONF_UNSET;
    conf->idempotency = NGX_CONF_UNSET;
    conf->idem_ttl = NGX_CONF_UNSET;
    conf->idem_lock = NGX_CONF_UNSET;

    return conf;
}


/* a time that is merged from outer levels is named, not only its value */

static char *
ngx_http_psd_checkout_time_error(ngx_conf_t *cf, const char *directive)
{
    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%s\" must be at least 1s", directive);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_psd_checkout_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_psd_checkout_loc_conf_t  *prev = parent;
    ngx_http_psd_checkout_loc_conf_t  *conf = child;

    ngx_conf_merge_value(conf->session, prev->session, 0);
    ngx_conf_merge_sec_value(conf->session_ttl, prev->session_ttl, 1800);
    ngx_conf_merge_value(conf->idempotency, prev->idempotency, 0);
    ngx_conf_merge_sec_value(conf->idem_ttl, prev->idem_ttl, 86400);
    ngx_conf_merge_sec_value(conf->idem_lock, prev->idem_lock, 60);
    ngx_conf_merge_str_value(conf->redis_name, prev->redis_name, "");

    if (!conf->session && !conf->idempotency) {
        return NGX_CONF_OK;
    }

    if (conf->session_ttl < 1) {
        return ngx_http_psd_checkout_time_error(cf, "psd_checkout_session_ttl");
    }

    if (conf->idem_ttl < 1) {
        return ngx_http_psd_checkout_time_error(cf, "psd_idempotency_ttl");
    }

    if (conf->idem_lock < 1) {
        return ngx_http_psd_checkout_time_error(cf, "psd_idempotency_lock");
    }

    ngx_http_psd_checkout_used = 1;
    ngx_http_psd_checkout_filters |= conf->idempotency;

    return ngx_http_psd_redis_conf_server(cf, &conf->redis_name,
                                          &conf->redis);
}


static ngx_int_t
ngx_http_psd_checkout_add_variables(ngx_conf_t *cf)
{
    return ngx_http_psd_add_variables(cf, ngx_http_psd_checkout_vars);
}


static ngx_int_t
ngx_http_psd_checkout_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    if (!ngx_http_psd_checkout_used) {
        return NGX_OK;
    }

    ngx_http_psd_checkout_used = 0;

    if (ngx_http_psd_redis_register_script(cf, &ngx_http_psd_idem_script)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* preaccess, after psd_limit and before tokenization (module order) */

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_psd_checkout_handler;

    if (ngx_http_psd_checkout_filters) {
        ngx_http_psd_checkout_filters = 0;

        ngx_http_next_header_filter = ngx_http_top_header_filter;
        ngx_http_top_header_filter = ngx_http_psd_checkout_header_filter;

        ngx_http_next_body_filter = ngx_http_top_body_filter;
        ngx_http_top_body_filter = ngx_http_psd_checkout_body_filter;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_psd_session_valid(u_char *p, size_t len)
{
    size_t  i;

    if (len != NGX_HTTP_PSD_SESSION_LEN) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!isalnum(p[i])) {
            return 0;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_psd_checkout_header(ngx_http_request_t *r,
    ngx_http_psd_checkout_ctx_t *ctx)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_in.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "X-PSD-Checkout-Session");
    h->lowcase_key = (u_char *) "x-psd-checkout-session";
    h->value.data = ctx->session;
    h->value.len = NGX_HTTP_PSD_SESSION_LEN;

    return NGX_DECLINED;
}


/*
 * The session: the cookie's when it has one, a new one otherwise (created
 * in Redis without waiting: the cookie is the proof the client holds).
 */

static ngx_int_t
ngx_http_psd_checkout_handler(ngx_http_request_t *r)
{
    u_char                            *p;
    size_t                             argvlen[5];
    ngx_str_t                          name, cookie;
    const char                        *argv[5];
    ngx_table_elt_t                   *h;
    ngx_http_psd_redis_call_t         *call;
    ngx_http_psd_checkout_ctx_t       *ctx;
    ngx_http_psd_checkout_loc_conf_t  *clcf;
    u_char                             key[64];
    u_char                             ttl[NGX_TIME_T_LEN];

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_checkout_module);

    if (!clcf->session || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_psd_ctx_get(r, &ngx_http_psd_checkout_module);

    if (ctx && ctx->has_session) {
        return NGX_DECLINED;
    }

    if (ctx == NULL) {
        ctx = ngx_http_psd_ctx_create(r, &ngx_http_psd_checkout_module,
                                      sizeof(ngx_http_psd_checkout_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ngx_str_set(&name, "psd_cs");

    /* the application reads the session from us, never from the client */

    if (ngx_http_psd_headers_in_remove(r, "X-PSD-Checkout-Session", 0)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_parse_multi_header_lines(&r->headers_in.cookies, &name,
                                          &cookie)
        != NGX_DECLINED
        && ngx_http_psd_session_valid(cookie.data, cookie.len))
    {
        ngx_memcpy(ctx->session, cookie.data, NGX_HTTP_PSD_SESSION_LEN);
        ctx->has_session = 1;

        return ngx_http_psd_checkout_header(r, ctx);
    }

    if (psd_random_base62((char *) ctx->session, NGX_HTTP_PSD_SESSION_LEN)
        != 0)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->has_session = 1;

    if (ngx_http_psd_checkout_header(r, ctx) != NGX_DECLINED) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h = ngx_list_push(&r->headers_out.headers);
    p = ngx_pnalloc(r->pool, 128 + NGX_TIME_T_LEN);
    if (h == NULL || p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Set-Cookie");
    h->value.data = p;
    h->value.len = ngx_sprintf(p, "psd_cs=%*s; Path=/; Max-Age=%T; HttpOnly; "
                               "Secure; SameSite=Lax",
                               (size_t) NGX_HTTP_PSD_SESSION_LEN,
                               ctx->session, clcf->session_ttl) - p;

    ngx_http_psd_count(SESSIONS_CREATED);

    call = ngx_http_psd_redis_call_create(NULL, clcf->redis, 1);
    if (call == NULL) {
        return NGX_DECLINED;
    }

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = (const char *) key;
    argvlen[1] = ngx_sprintf(key, "psd:{cs:%*s}",
                             (size_t) NGX_HTTP_PSD_SESSION_LEN, ctx->session)
                 - key;
    argv[2] = "created";
    argvlen[2] = 7;
    argv[3] = "EX";
    argvlen[3] = 2;
    argv[4] = (const char *) ttl;
    argvlen[4] = ngx_sprintf(ttl, "%T", clcf->session_ttl) - ttl;

    if (ngx_http_psd_redis_call_add(call, 5, argv, argvlen) != NGX_OK) {
        ngx_destroy_pool(call->pool);
        return NGX_DECLINED;
    }

    (void) ngx_http_psd_redis_call_send(call, NULL, NULL);

    return NGX_DECLINED;
}


u_char *
ngx_http_psd_checkout_session(ngx_http_request_t *r)
{
    ngx_http_psd_checkout_ctx_t  *ctx;

    ctx = ngx_http_psd_ctx_get(r->main, &ngx_http_psd_checkout_module);

    return (ctx && ctx->has_session) ? ctx->session : NULL;
}


/* adds "SET psd:{cs:<id>} tokenized XX KEEPTTL" to a tokenizing call */

ngx_int_t
ngx_http_psd_checkout_tokenized(ngx_http_request_t *r,
    ngx_http_psd_redis_call_t *call)
{
    u_char      *session;
    size_t       argvlen[5];
    const char  *argv[5];
    u_char       key[64];

    session = ngx_http_psd_checkout_session(r);
    if (session == NULL) {
        return NGX_DECLINED;
    }

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = (const char *) key;
    argvlen[1] = ngx_sprintf(key, "psd:{cs:%*s}",
                             (size_t) NGX_HTTP_PSD_SESSION_LEN, session)
                 - key;
    argv[2] = "tokenized";
    argvlen[2] = 9;
    argv[3] = "XX";
    argvlen[3] = 2;
    argv[4] = "KEEPTTL";
    argvlen[4] = 7;

    return ngx_http_psd_redis_call_add(call, 5, argv, argvlen);
}


/*
 * Called by tokenization once the raw body is in memory.  NGX_DECLINED:
 * go on (no Idempotency-Key, or the first request with it); NGX_AGAIN:
 * waiting for Redis, the phases resume; NGX_DONE: answered (in flight,
 * reused, replayed); an HTTP status: failed.
 */

ngx_int_t
ngx_http_psd_checkout_idempotency(ngx_http_request_t *r, u_char *body,
    size_t len, ngx_str_t *hmac_key)
{
    u_char                             *p, *q, *end;
    size_t                              argvlen[3], n;
    ngx_str_t                          *value;
    ngx_uint_t                          i;
    const char                         *argv[3];
    ngx_table_elt_t                    *h;
    ngx_http_psd_redis_call_t          *call;
    ngx_http_core_loc_conf_t           *core;
    ngx_http_psd_checkout_ctx_t        *ctx;
    ngx_http_psd_checkout_loc_conf_t   *clcf;
    const unsigned char                *parts[5];
    size_t                              lens[5];
    u_char                              md[PSD_SHA256_LEN];
    u_char                              lock[NGX_TIME_T_LEN];

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_checkout_module);

    if (!clcf->idempotency) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_psd_ctx_get(r, &ngx_http_psd_checkout_module);

    if (ctx && ctx->checked) {
        if (ctx->waiting) {
            return NGX_AGAIN;
        }

        goto decided;
    }

    h = ngx_http_psd_header_in(r, "Idempotency-Key");
    if (h == NULL) {
        return NGX_DECLINED;
    }

    value = &h->value;

    for (i = 0; i < value->len; i++) {
        if (value->data[i] < 0x21 || value->data[i] > 0x7e) {
            break;
        }
    }

    if (value->len == 0 || value->len > NGX_HTTP_PSD_IDEM_KEY_MAX
        || i < value->len)
    {
        return ngx_http_psd_finalize_in_phase(r,
                   ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                                "invalid_idempotency_key",
                                                NULL));
    }

    if (ctx == NULL) {
        ctx = ngx_http_psd_ctx_create(r, &ngx_http_psd_checkout_module,
                                      sizeof(ngx_http_psd_checkout_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ctx->checked = 1;
    ctx->redis = clcf->redis;

    /* one key space per location: the same key elsewhere is another one */

    core = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    parts[0] = core->name.data;
    lens[0] = core->name.len;
    parts[1] = (u_char *) "\n";
    lens[1] = 1;
    parts[2] = value->data;
    lens[2] = value->len;

    if (psd_hmac_sha256_v(hmac_key->data, hmac_key->len, parts, lens, 3, md)
        != 0)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(ctx->key, "psd:{idem:", 10);
    p += psd_b64url_encode((char *) p, md, 16);
    *p++ = '}';
    ctx->key_len = p - ctx->key;

    /*
     * The payload's identity, keyed: a hash of a body that held a card
     * number must not be guessable offline.
     */

    parts[0] = r->method_name.data;
    lens[0] = r->method_name.len;
    parts[1] = (u_char *) "\n";
    lens[1] = 1;
    parts[2] = r->uri.data;
    lens[2] = r->uri.len;
    parts[3] = (u_char *) "\n";
    lens[3] = 1;
    parts[4] = body;
    lens[4] = len;

    if (psd_hmac_sha256_v(hmac_key->data, hmac_key->len, parts, lens, 5, md)
        != 0)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_hex_dump(ctx->hash, md, 32);

    call = ngx_http_psd_redis_call_create(r, clcf->redis, 1);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = (const char *) ctx->key;
    argvlen[0] = ctx->key_len;
    argv[1] = (const char *) ctx->hash;
    argvlen[1] = 64;
    argv[2] = (const char *) lock;
    argvlen[2] = ngx_sprintf(lock, "%T", clcf->idem_lock) - lock;

    if (ngx_http_psd_redis_call_add_script(call, &ngx_http_psd_idem_script,
                                           1, 3, argv, argvlen)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_idem_checked, r)
        != NGX_OK)
    {
        ngx_http_psd_idem_checked(call);
        goto decided;
    }

    ctx->waiting = 1;
    ngx_http_psd_redis_wait(r);

    return NGX_AGAIN;

decided:

    switch (ctx->rc) {

    case NGX_OK:
        return NGX_DECLINED;

    case NGX_HTTP_SERVICE_UNAVAILABLE:
        return ngx_http_psd_finalize_in_phase(r,
                                        ngx_http_psd_send_unavailable(r, 1));

    case NGX_HTTP_CONFLICT:
        return ngx_http_psd_finalize_in_phase(r,
                   ngx_http_psd_send_json_error(r, NGX_HTTP_CONFLICT,
                                                "idempotency_key_in_use",
                                                NULL));

    case 422:
        return ngx_http_psd_finalize_in_phase(r,
                   ngx_http_psd_send_json_error(r, 422,
                                                "idempotency_key_reused",
                                                NULL));
    }

    /* the stored response: "<status>\n<content type>\n<body>" */

    p = ctx->replay.data;
    end = p + ctx->replay.len;

    q = ngx_strlchr(p, end, '\n');
    n = q ? (size_t) ngx_atoi(p, q - p) : 0;

    if (q == NULL || n < 200 || n > 499) {
        return ngx_http_psd_finalize_in_phase(r,
                                        ngx_http_psd_send_unavailable(r, 1));
    }

    p = q + 1;
    q = ngx_strlchr(p, end, '\n');

    if (q == NULL) {
        return ngx_http_psd_finalize_in_phase(r,
                                        ngx_http_psd_send_unavailable(r, 1));
    }

    *q = '\0';

    ngx_http_psd_count(IDEMPOTENT_REPLAYS);

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Idempotent-Replayed");
    ngx_str_set(&h->value, "true");

    return ngx_http_psd_finalize_in_phase(r,
               ngx_http_psd_send_body(r, n, q > p ? (char *) p
                                                 : "application/octet-stream",
                                      q + 1, end - q - 1));
}


static void
ngx_http_psd_idem_checked(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    redisReply                   *reply;
    ngx_http_psd_checkout_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_checkout_module);

    reply = call->status == NGX_HTTP_PSD_REDIS_OK ? call->replies[0] : NULL;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        /* like tokenization itself: closed */
        ctx->rc = NGX_HTTP_SERVICE_UNAVAILABLE;

    } else {
        switch (reply->element[0]->integer) {

        case 0:
            ctx->rc = NGX_OK;
            ctx->record = 1;
            break;

        case 1:
            ctx->rc = NGX_HTTP_CONFLICT;
            ngx_http_psd_count(IDEMPOTENT_CONFLICTS);
            break;

        case 2:
            if (reply->elements == 2
                && reply->element[1]->type == REDIS_REPLY_STRING)
            {
                ctx->rc = NGX_DONE;
                ctx->replay.data = ngx_pnalloc(r->pool,
                                               reply->element[1]->len + 1);
                if (ctx->replay.data == NULL) {
                    ctx->rc = NGX_HTTP_SERVICE_UNAVAILABLE;
                    break;
                }

                ngx_memcpy(ctx->replay.data, reply->element[1]->str,
                           reply->element[1]->len);
                ctx->replay.len = reply->element[1]->len;

            } else {
                ctx->rc = NGX_HTTP_SERVICE_UNAVAILABLE;
            }

            break;

        default:
            ctx->rc = 422;
            ngx_http_psd_count(IDEMPOTENT_CONFLICTS);
        }
    }

    if (ctx->waiting) {
        ctx->waiting = 0;
        ngx_http_psd_redis_resume(r);
    }
}


/*
 * The response of a first request is stored as it leaves: status and
 * content type from the header filter, the body (up to 64 KiB) from the
 * body filter.  A 5xx, a compressed or too large response is not stored
 * and the key is released, so that the client may simply try again.
 */

static ngx_int_t
ngx_http_psd_checkout_header_filter(ngx_http_request_t *r)
{
    ngx_http_psd_checkout_ctx_t  *ctx;

    ctx = (r == r->main)
          ? ngx_http_psd_ctx_get(r, &ngx_http_psd_checkout_module) : NULL;

    if (ctx == NULL || !ctx->record) {
        return ngx_http_next_header_filter(r);
    }

    ctx->status = r->headers_out.status;
    ctx->content_type = r->headers_out.content_type;

    if (ctx->status >= NGX_HTTP_INTERNAL_SERVER_ERROR
        || ctx->status < NGX_HTTP_OK
        || r->headers_out.content_encoding
        || r->header_only)
    {
        ngx_http_psd_idem_store(r, ctx, 0);
    }

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_psd_checkout_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    u_char                       *p;
    size_t                        size;
    ngx_chain_t                  *cl;
    ngx_http_psd_checkout_ctx_t  *ctx;

    ctx = (r == r->main)
          ? ngx_http_get_module_ctx(r, ngx_http_psd_checkout_module) : NULL;

    if (ctx == NULL || !ctx->record) {
        return ngx_http_next_body_filter(r, in);
    }

    if (ctx->resp == NULL) {
        ctx->resp = ngx_pnalloc(r->pool, NGX_HTTP_PSD_IDEM_BODY_MAX);
        if (ctx->resp == NULL) {
            ngx_http_psd_idem_store(r, ctx, 0);
            return ngx_http_next_body_filter(r, in);
        }
    }

    for (cl = in; cl && ctx->record; cl = cl->next) {

        if (ngx_buf_in_memory(cl->buf)) {
            size = cl->buf->last - cl->buf->pos;

            if (ctx->resp_len + size > NGX_HTTP_PSD_IDEM_BODY_MAX) {
                ngx_http_psd_idem_store(r, ctx, 0);
                break;
            }

            p = ngx_cpymem(ctx->resp + ctx->resp_len, cl->buf->pos, size);
            ctx->resp_len = p - ctx->resp;

        } else if (ngx_buf_size(cl->buf)) {
            /* a file: no copy of it is kept */
            ngx_http_psd_idem_store(r, ctx, 0);
            break;
        }

        if (cl->buf->last_buf) {
            ngx_http_psd_idem_store(r, ctx, 1);
        }
    }

    return ngx_http_next_body_filter(r, in);
}


static void
ngx_http_psd_idem_store(ngx_http_request_t *r,
    ngx_http_psd_checkout_ctx_t *ctx, ngx_uint_t keep)
{
    u_char                            *rec, *p;
    size_t                             argvlen[5];
    const char                        *argv[5];
    ngx_http_psd_redis_call_t         *call;
    ngx_http_psd_checkout_loc_conf_t  *clcf;
    u_char                             ttl[NGX_TIME_T_LEN];

    ctx->record = 0;

    call = ngx_http_psd_redis_call_create(NULL, ctx->redis, 1);
    if (call == NULL) {
        return;
    }

    argv[0] = keep ? "SET" : "DEL";
    argvlen[0] = 3;
    argv[1] = (const char *) ctx->key;
    argvlen[1] = ctx->key_len;

    if (keep) {
        clcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_checkout_module);

        rec = ngx_pnalloc(call->pool, 2 + 64 + 1 + NGX_INT_T_LEN
                                      + ctx->content_type.len + 2
                                      + ctx->resp_len);
        if (rec == NULL) {
            ngx_destroy_pool(call->pool);
            return;
        }

        p = ngx_sprintf(rec, "d:%*s:%ui\n%V\n", (size_t) 64, ctx->hash,
                        ctx->status, &ctx->content_type);
        p = ngx_cpymem(p, ctx->resp, ctx->resp_len);

        argv[2] = (const char *) rec;
        argvlen[2] = p - rec;
        argv[3] = "EX";
        argvlen[3] = 2;
        argv[4] = (const char *) ttl;
        argvlen[4] = ngx_sprintf(ttl, "%T", clcf->idem_ttl) - ttl;
    }

    if (ngx_http_psd_redis_call_add(call, keep ? 5 : 2, argv, argvlen)
        != NGX_OK)
    {
        ngx_destroy_pool(call->pool);
        return;
    }

    (void) ngx_http_psd_redis_call_send(call, NULL, NULL);
}


static ngx_int_t
ngx_http_psd_checkout_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char  *session;

    session = ngx_http_psd_checkout_session(r);

    if (session == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = session;
    v->len = NGX_HTTP_PSD_SESSION_LEN;

    return NGX_OK;
}
