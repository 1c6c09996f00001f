
/*
 * Copyright (C) ngx_psd_module authors
 *
 * Pay: card fields of a checkout request become tokens before the request
 * reaches the application; the card is sealed (AES-256-GCM) into a Redis
 * vault and put back only into requests the application sends, through
 * nginx, to the payment gateway.  A body with card data lives in memory
 * only: a body that would outgrow client_body_buffer_size is refused
 * before nginx could spool it to a temporary file, and every buffer that
 * held card data is wiped.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_psd_module.h"
#include "ngx_http_psd_redis.h"
#include "ngx_http_psd_metrics.h"
#include "ngx_http_psd_tokenize.h"
#include "ngx_http_psd_checkout.h"
#include "psd_card.h"
#include "psd_crypto.h"
#include "psd_form.h"
#include "psd_json.h"
#include "psd_vault.h"


#define NGX_HTTP_PSD_FIELD_PAN      1
#define NGX_HTTP_PSD_FIELD_CVV      2
#define NGX_HTTP_PSD_FIELD_EXPIRY   3
#define NGX_HTTP_PSD_FIELD_HOLDER   4

#define NGX_HTTP_PSD_TOK_INBOUND    1
#define NGX_HTTP_PSD_TOK_OUTBOUND   2

#define NGX_HTTP_PSD_TOK_MATCHES    32
#define NGX_HTTP_PSD_HOLDER_MAX     128


typedef struct {
    ngx_array_t                   keys;       /* psd_vault_key_t */
    psd_vault_keyring_t           keyring;
    ngx_str_t                     fingerprint_key;
    psd_hmac_key_t               *fingerprint_hkey;
    time_t                        vault_ttl;
    time_t                        cvv_ttl;
    u_char                        hash_key[16];
    ngx_uint_t                    used;
} ngx_http_psd_tok_main_conf_t;


typedef struct {
    ngx_uint_t                    mode;       /* inbound or outbound */
    ngx_array_t                  *fields;     /* ngx_uint_t kinds */
    psd_path_t                    paths[PSD_PATHS_MAX];
    ngx_uint_t                    preserving;
    ngx_flag_t                    scan;
    ngx_str_t                     reveal_key;
    ngx_str_t                     redis_name;
    ngx_http_psd_redis_server_t  *redis;
} ngx_http_psd_tok_loc_conf_t;


typedef struct {
    ngx_uint_t                    kind;
    ngx_str_t                     token;
    ngx_str_t                     path;
    size_t                        start;
    size_t                        end;
    ngx_uint_t                    json;
} ngx_http_psd_tok_item_t;


typedef struct {
    u_char                       *body;       /* contiguous, ours to wipe */
    size_t                        len;
    u_char                       *out;        /* the rewritten body */
    size_t                        out_len;
    off_t                         received;
    ngx_http_psd_tok_item_t       items[NGX_HTTP_PSD_TOK_MATCHES];
    ngx_uint_t                    nitems;
    ngx_uint_t                    json;
    ngx_uint_t                    status;     /* HTTP status of a refusal */
    const char                   *error;
    ngx_str_t                     field;
    u_char                        brand[16];
    u_char                        last4[5];
    u_char                        fingerprint[PSD_FP_LEN];
    ngx_uint_t                    vault_cmds;
    ngx_uint_t                    uri_changes;
    size_t                        body_wipe;   /* what cleanup wipes */
    size_t                        out_wipe;
    ngx_uint_t                    revealed;
    unsigned                      have_card:1;
    unsigned                      collected:1;
    unsigned                      too_large:1;
    unsigned                      finished:1;
    unsigned                      body_done:1;
    unsigned                      waiting:1;
    unsigned                      done:1;
} ngx_http_psd_tok_ctx_t;


static ngx_int_t ngx_http_psd_tok_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_psd_tok_init(ngx_conf_t *cf);
static void *ngx_http_psd_tok_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_psd_tok_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_psd_tok_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_psd_tok_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_psd_tok_mode(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_psd_tok_field(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_psd_vault_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_psd_fingerprint_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_psd_tok_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_psd_tok_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_psd_tok_reveal_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_psd_tok_handler_mode(ngx_http_request_t *r,
    ngx_uint_t mode);
static void ngx_http_psd_tok_body(ngx_http_request_t *r);
static ngx_http_psd_tok_ctx_t *ngx_http_psd_tok_get_ctx(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_psd_tok_refuse(ngx_http_request_t *r,
    ngx_http_psd_tok_ctx_t *ctx, ngx_uint_t status, const char *error,
    const char *field, size_t len);
static ngx_int_t ngx_http_psd_tok_collect(ngx_http_request_t *r,
    ngx_http_psd_tok_ctx_t *ctx);
static ngx_int_t ngx_http_psd_tok_process(ngx_http_request_t *r,
    ngx_http_psd_tok_ctx_t *ctx);
static void ngx_http_psd_tok_stored(ngx_http_psd_redis_call_t *call);
static void ngx_http_psd_tok_revealed(ngx_http_psd_redis_call_t *call);
static ngx_int_t ngx_http_psd_tok_audit(ngx_http_request_t *r,
    ngx_http_psd_tok_ctx_t *ctx, ngx_http_psd_redis_handler_pt handler);
static void ngx_http_psd_tok_audited(ngx_http_psd_redis_call_t *call);
static void ngx_http_psd_tok_unaudited(ngx_http_request_t *r,
    ngx_http_psd_tok_ctx_t *ctx);
static ngx_int_t ngx_http_psd_tok_finish(ngx_http_request_t *r,
    ngx_http_psd_tok_ctx_t *ctx);
static void ngx_http_psd_tok_cleanup(void *data);
static ngx_int_t ngx_http_psd_tok_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_http_request_body_filter_pt  ngx_http_next_request_body_filter;


static ngx_conf_enum_t  ngx_http_psd_tok_formats[] = {
    { ngx_string("random"), 0 },
    { ngx_string("preserving"), 1 },
    { ngx_null_string, 0 }
};


/* a vault entry must outlive the request that stores it (Redis: EX >= 1) */
static ngx_conf_num_bounds_t  ngx_http_psd_tok_ttl_bounds = {
    ngx_http_psd_conf_check_sec_bounds, 1, -1
};


static ngx_command_t  ngx_http_psd_tok_commands[] = {

    { ngx_string("psd_vault_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_psd_vault_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_fingerprint_key"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_psd_fingerprint_key,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_vault_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_psd_tok_main_conf_t, vault_ttl),
      &ngx_http_psd_tok_ttl_bounds },

    { ngx_string("psd_vault_cvv_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_psd_tok_main_conf_t, cvv_ttl),
      &ngx_http_psd_tok_ttl_bounds },

    { ngx_string("psd_tokenize"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_psd_tok_mode,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_PSD_TOK_INBOUND,
      NULL },

    { ngx_string("psd_detokenize"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_psd_tok_mode,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_PSD_TOK_OUTBOUND,
      NULL },

    { ngx_string("psd_tokenize_field"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_psd_tok_field,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_detokenize_field"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_psd_tok_field,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_tokenize_format"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_tok_loc_conf_t, preserving),
      &ngx_http_psd_tok_formats },

    { ngx_string("psd_tokenize_scan"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_tok_loc_conf_t, scan),
      NULL },

    { ngx_string("psd_detokenize_secret"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_psd_conf_set_secret_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_tok_loc_conf_t, reveal_key),
      NULL },

    { ngx_string("psd_tokenize_redis"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_tok_loc_conf_t, redis_name),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_psd_tok_module_ctx = {
    ngx_http_psd_tok_add_variables,        /* preconfiguration */
    ngx_http_psd_tok_init,                 /* postconfiguration */

    ngx_http_psd_tok_create_main_conf,     /* create main configuration */
    ngx_http_psd_tok_init_main_conf,       /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_psd_tok_create_loc_conf,      /* create location configuration */
    ngx_http_psd_tok_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_psd_tokenize_module = {
    NGX_MODULE_V1,
    &ngx_http_psd_tok_module_ctx,          /* module context */
    ngx_http_psd_tok_commands,             /* module directives */
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


static ngx_http_variable_t  ngx_http_psd_tok_vars[] = {

    { ngx_string("psd_card_fingerprint"), NULL, ngx_http_psd_tok_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("psd_card_brand"), NULL, ngx_http_psd_tok_variable,
      1, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("psd_card_last4"), NULL, ngx_http_psd_tok_variable,
      2, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/*
 * KEYS[1] a CVV's vault key; ARGV[1] the reveal's checkout session ("" for
 * none).  Returns the envelope and deletes it, nil when gone, or an error
 * PSD_SESSION when the CVV belongs to another session (and stays).
 */

static ngx_http_psd_redis_script_t  ngx_http_psd_cvv_take_script = {
    "cvv_take",
    "local v = redis.call('GET', KEYS[1])\n"
    "if not v then return false end\n"
    "if string.sub(v, 23, 23) == '|'\n"
    "   and string.sub(v, 1, 22) ~= ARGV[1] then\n"
    "  return redis.error_reply('PSD_SESSION')\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return v\n",
    ""
};


static ngx_str_t  ngx_http_psd_field_kinds[] = {
    ngx_null_string,
    ngx_string("pan"),
    ngx_string("cvv"),
    ngx_string("expiry"),
    ngx_string("holder")
};


static void *
ngx_http_psd_tok_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_psd_tok_main_conf_t  *tmcf;

    tmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_tok_main_conf_t));
    if (tmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&tmcf->keys, cf->pool, 2, sizeof(psd_vault_key_t))
        != NGX_OK)
    {
        return NULL;
    }

    tmcf->vault_ttl = NGX_CONF_UNSET;
    tmcf->cvv_ttl = NGX_CONF_UNSET;

    return tmcf;
}


static char *
ngx_http_psd_tok_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_psd_tok_main_conf_t  *tmcf = conf;

    ngx_conf_init_value(tmcf->vault_ttl, 3600);
    ngx_conf_init_value(tmcf->cvv_ttl, 600);

    tmcf->keyring.keys = tmcf->keys.elts;
    tmcf->keyring.nkeys = tmcf->keys.nelts;

    /* keys the JSON scanner's hash table once, not per request */
    if (psd_random_bytes(tmcf->hash_key, sizeof(tmcf->hash_key)) != 0) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_psd_tok_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_psd_tok_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_tok_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->preserving = NGX_CONF_UNSET_UINT;
    conf->scan = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_psd_tok_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_psd_tok_loc_conf_t  *prev = parent;
    ngx_http_psd_tok_loc_conf_t  *conf = child;

    ngx_http_psd_tok_main_conf_t  *tmcf;

    ngx_conf_merge_uint_value(conf->preserving, prev->preserving, 0);
    ngx_conf_merge_value(conf->scan, prev->scan, 1);
    ngx_conf_merge_str_value(conf->reveal_key, prev->reveal_key, "");
    ngx_conf_merge_str_value(conf->redis_name, prev->redis_name, "");

    if (conf->mode == 0) {
        return NGX_CONF_OK;
    }

    tmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_psd_tokenize_module);

    if (conf->fields == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_%stokenize\" needs at least one "
                           "\"psd_%stokenize_field\"",
                           conf->mode == NGX_HTTP_PSD_TOK_INBOUND ? "" : "de",
                           conf->mode == NGX_HTTP_PSD_TOK_INBOUND ? "" : "de");
        return NGX_CONF_ERROR;
    }

    if (tmcf->keys.nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "card tokenization needs a \"psd_vault_key\" in "
                           "http{}");
        return NGX_CONF_ERROR;
    }

    if (conf->mode == NGX_HTTP_PSD_TOK_OUTBOUND && conf->reveal_key.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_detokenize\" needs "
                           "\"psd_detokenize_secret\"");
        return NGX_CONF_ERROR;
    }

    if (conf->mode == NGX_HTTP_PSD_TOK_INBOUND
        && tmcf->fingerprint_key.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_tokenize\" needs a \"psd_fingerprint_key\" "
                           "in http{}");
        return NGX_CONF_ERROR;
    }

    tmcf->used = 1;

    return ngx_http_psd_redis_conf_server(cf, &conf->redis_name,
                                          &conf->redis);
}


static char *
ngx_http_psd_tok_mode(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_tok_loc_conf_t  *tlcf = conf;

    ngx_str_t  *value;

    value = cf->args->elts;

    if (tlcf->mode && tlcf->mode != cmd->offset) {
        return "cannot be used with the other of \"psd_tokenize\" and "
               "\"psd_detokenize\" in one location";
    }

    if (ngx_strcmp(value[1].data, "on") == 0) {
        tlcf->mode = cmd->offset;

    } else if (ngx_strcmp(value[1].data, "off") != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\" directive, it "
                           "must be \"on\" or \"off\"", &value[1],
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_psd_tok_field(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_tok_loc_conf_t  *tlcf = conf;

    ngx_str_t   *value;
    ngx_uint_t   i, *kind, n;

    value = cf->args->elts;

    if (tlcf->fields == NULL) {
        tlcf->fields = ngx_array_create(cf->pool, 4, sizeof(ngx_uint_t));
        if (tlcf->fields == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    n = tlcf->fields->nelts;

    if (n == PSD_PATHS_MAX) {
        return "has too many fields";
    }

    if (psd_path_parse((char *) value[1].data, value[1].len, &tlcf->paths[n])
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid field path \"%V\" in \"%V\"",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    kind = ngx_array_push(tlcf->fields);
    if (kind == NULL) {
        return NGX_CONF_ERROR;
    }

    *kind = 0;

    for (i = 1; i < 5; i++) {
        if (ngx_http_psd_field_kinds[i].len == value[2].len
            && ngx_strncmp(ngx_http_psd_field_kinds[i].data, value[2].data,
                           value[2].len) == 0)
        {
            *kind = i;
        }
    }

    if (*kind == 0
        || (cmd->name.data[4] == 'd' && *kind > NGX_HTTP_PSD_FIELD_CVV))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid field kind \"%V\" in \"%V\", it must be "
                           "%s", &value[2], &cmd->name,
                           cmd->name.data[4] == 'd'
                           ? "\"pan\" or \"cvv\""
                           : "\"pan\", \"cvv\", \"expiry\" or \"holder\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_psd_vault_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_tok_main_conf_t  *tmcf = conf;

    ngx_int_t         hi, lo;
    ngx_str_t        *value, secret;
    ngx_uint_t        i;
    psd_vault_key_t  *key;

    value = cf->args->elts;

    if (!psd_vault_kid_valid((char *) value[1].data, value[1].len)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid vault key id \"%V\", use 1 to 32 of "
                           "[A-Za-z0-9._-]", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_psd_secret_file(cf, &value[2], PSD_VAULT_KEY_LEN,
                                 2 * PSD_VAULT_KEY_LEN, &secret)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* 32 raw bytes, or the 64 hex digits of "openssl rand -hex 32" */

    if (secret.len == 2 * PSD_VAULT_KEY_LEN) {
        for (i = 0; i < PSD_VAULT_KEY_LEN; i++) {
            hi = ngx_hextoi(secret.data + 2 * i, 1);
            lo = ngx_hextoi(secret.data + 2 * i + 1, 1);

            if (hi == NGX_ERROR || lo == NGX_ERROR) {
                break;
            }

            secret.data[i] = (u_char) (hi * 16 + lo);
        }

        if (i < PSD_VAULT_KEY_LEN) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "vault key file \"%V\" must hold 32 bytes or "
                               "64 hexadecimal digits", &value[2]);
            return NGX_CONF_ERROR;
        }

        psd_cleanse(secret.data + PSD_VAULT_KEY_LEN, PSD_VAULT_KEY_LEN);
        secret.len = PSD_VAULT_KEY_LEN;

    } else if (secret.len != PSD_VAULT_KEY_LEN) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "vault key file \"%V\" must hold 32 bytes or 64 "
                           "hexadecimal digits", &value[2]);
        return NGX_CONF_ERROR;
    }

    key = tmcf->keys.elts;

    for (i = 0; i < tmcf->keys.nelts; i++) {
        if (key[i].kid_len == value[1].len
            && ngx_strncmp(key[i].kid, value[1].data, value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate vault key id \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    key = ngx_array_push(&tmcf->keys);
    if (key == NULL) {
        return NGX_CONF_ERROR;
    }

    key->kid = (char *) value[1].data;
    key->kid_len = value[1].len;
    key->key = secret.data;
    key->key_len = secret.len;

    return NGX_CONF_OK;
}


static char *
ngx_http_psd_fingerprint_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_tok_main_conf_t  *tmcf = conf;

    ngx_str_t  *value;

    if (tmcf->fingerprint_key.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_psd_secret_file(cf, &value[1], 16, 256,
                                 &tmcf->fingerprint_key)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    /* one fingerprint per tokenized request: the key is hashed in once */

    tmcf->fingerprint_hkey = ngx_http_psd_hmac_key(cf, &tmcf->fingerprint_key);
    if (tmcf->fingerprint_hkey == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_psd_tok_add_variables(ngx_conf_t *cf)
{
    return ngx_http_psd_add_variables(cf, ngx_http_psd_tok_vars);
}


static ngx_int_t
ngx_http_psd_tok_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt           *h;
    ngx_http_core_main_conf_t     *cmcf;
    ngx_http_psd_tok_main_conf_t  *tmcf;

    tmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_psd_tokenize_module);

    if (!tmcf->used) {
        return NGX_OK;
    }

    ngx_http_next_request_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_http_psd_tok_body_filter;

    if (ngx_http_psd_redis_register_script(cf, &ngx_http_psd_cvv_take_script)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    /*
     * Preaccess, after psd_limit (handlers of one phase run in the reverse
     * order of their modules): the card fingerprint is then known to the
     * fraud rules of the access phase.
     */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_psd_tok_handler;

    /*
     * Reveals run after the access phase: a client that allow/deny (or
     * auth) refuses never reaches the vault.
     */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PRECONTENT_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_psd_tok_reveal_handler;

    return NGX_OK;
}


/*
 * Before nginx's own save filter: once a card body would outgrow the
 * memory buffer, it is refused rather than written to a temporary file.
 */

static void
ngx_http_psd_tok_wipe_chain(ngx_chain_t *cl)
{
    for ( /* void */ ; cl; cl = cl->next) {
        if (ngx_buf_in_memory(cl->buf) && cl->buf->last > cl->buf->pos) {
            psd_cleanse(cl->buf->pos, cl->buf->last - cl->buf->pos);
        }
    }
}


static ngx_int_t
ngx_http_psd_tok_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_buf_t                    *b, *last;
    ngx_chain_t                  *cl, end;
    ngx_http_psd_tok_ctx_t       *ctx;
    ngx_http_core_loc_conf_t     *clcf;
    ngx_http_psd_tok_loc_conf_t  *tlcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_tokenize_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_tokenize_module);

    if (tlcf->mode == 0 || ctx == NULL) {
        return ngx_http_next_request_body_filter(r, in);
    }

    if (!ctx->too_large) {
        clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

        for (cl = in; cl; cl = cl->next) {
            ctx->received += ngx_buf_size(cl->buf);
        }

        if (ctx->received < (off_t) clcf->client_body_buffer_size) {
            return ngx_http_next_request_body_filter(r, in);
        }

        ngx_http_psd_log(NGX_LOG_INFO, r, 0,
                         "psd_tokenize: body larger than %s refused",
                         "client_body_buffer_size");

        /* what was kept of it goes too: nothing of a card stays behind */

        ctx->too_large = 1;

        if (r->request_body) {
            ngx_http_psd_tok_wipe_chain(r->request_body->bufs);

            /* saved buffers count as busy until consumed */
            for (cl = r->request_body->bufs; cl; cl = cl->next) {
                cl->buf->pos = cl->buf->last;
            }

            r->request_body->bufs = NULL;

            b = r->request_body->buf;
            if (b && b->start && b->end > b->start) {
                psd_cleanse(b->start, b->end - b->start);
            }
        }
    }

    /*
     * The rest is read and dropped, never saved, so that the request ends
     * with our JSON answer rather than a half-read body.
     */

    ngx_http_psd_tok_wipe_chain(in);

    last = NULL;

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;

        if (cl->buf->last_buf) {
            last = cl->buf;
        }
    }

    /* the save filter must see the end (emptied) for the read to finish */

    if (last) {
        end.buf = last;
        end.next = NULL;
        return ngx_http_next_request_body_filter(r, &end);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_psd_tok_add_header(ngx_http_request_t *r, const char *name,
    const char *lowcase, u_char *value, size_t len)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_in.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) name;
    h->key.len = ngx_strlen(name);
    h->lowcase_key = (u_char *) lowcase;
    h->value.data = value;
    h->value.len = len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_psd_tok_reveal_handler(ngx_http_request_t *r)
{
    ngx_http_psd_tok_loc_conf_t  *tlcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_tokenize_module);

    if (tlcf->mode != NGX_HTTP_PSD_TOK_OUTBOUND) {
        return NGX_DECLINED;
    }

    return ngx_http_psd_tok_handler_mode(r, NGX_HTTP_PSD_TOK_OUTBOUND);
}


static ngx_int_t
ngx_http_psd_tok_handler(ngx_http_request_t *r)
{
    return ngx_http_psd_tok_handler_mode(r, NGX_HTTP_PSD_TOK_INBOUND);
}


static ngx_int_t
ngx_http_psd_tok_handler_mode(ngx_http_request_t *r, ngx_uint_t mode)
{
    ngx_int_t                     rc;
    ngx_str_t                    *key;
    ngx_table_elt_t              *h, *reveal;
    ngx_pool_cleanup_t           *cln;
    ngx_http_psd_tok_ctx_t        *ctx, denied;
    ngx_http_psd_tok_loc_conf_t   *tlcf;
    ngx_http_psd_tok_main_conf_t  *tmcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_tokenize_module);

    if (tlcf->mode != mode || r != r->main) {
        return NGX_DECLINED;
    }

    /*
     * Once per client request: a redirect after tokenization (error_page,
     * X-Accel-Redirect) carries tokens already; a request that reaches a
     * tokenizing location only by a redirect (try_files to @app) is
     * tokenized there.
     */

    ctx = ngx_http_psd_tok_get_ctx(r);
    reveal = NULL;

    if (ctx && ctx->finished && r->uri_changes != ctx->uri_changes) {
        return NGX_DECLINED;
    }

    if (ctx == NULL) {

        if (tlcf->mode == NGX_HTTP_PSD_TOK_OUTBOUND && tlcf->reveal_key.len) {

            /* only the shop's own servers may reveal a card */

            h = ngx_http_psd_header_in(r, "X-PSD-Reveal-Key");
            key = h ? &h->value : NULL;
            reveal = h;

            if (key == NULL || key->len != tlcf->reveal_key.len
                || !psd_ct_equal(key->data, tlcf->reveal_key.data,
                                 key->len))
            {
                ngx_http_psd_count(REVEAL_DENIED);
                ngx_http_psd_log(NGX_LOG_WARN, r, 0,
                                 "psd_detokenize: reveal refused, no valid "
                                 "%s", "X-PSD-Reveal-Key");

                ngx_memzero(&denied, sizeof(ngx_http_psd_tok_ctx_t));
                denied.status = NGX_HTTP_FORBIDDEN;
                denied.error = "reveal_denied";
                (void) ngx_http_psd_tok_audit(r, &denied, NULL);
                return ngx_http_psd_finalize_in_phase(r,
                           ngx_http_psd_send_json_error(r,
                                   NGX_HTTP_FORBIDDEN, "reveal_denied",
                                   NULL));
            }
        }

        if (r->headers_in.content_length_n < 0 && !r->headers_in.chunked) {
            /* no body, no card; the query string is still looked at */
            if (tlcf->mode == NGX_HTTP_PSD_TOK_INBOUND && tlcf->scan
                && r->args.len)
            {
                psd_card_scan_t  m;

                if (psd_card_scan(r->args.data, r->args.len, PSD_SCAN_FORM,
                                  &m))
                {
                    ngx_http_psd_count(TOKENIZE_REJECTED);
                    return ngx_http_psd_finalize_in_phase(r,
                               ngx_http_psd_send_json_error(r, 422,
                                       "unexpected_card_number", "query"));
                }
            }

            return NGX_DECLINED;
        }

        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_psd_tok_ctx_t));
        if (ctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        cln->handler = ngx_http_psd_tok_cleanup;
        cln->data = ctx;

        ngx_http_set_ctx(r, ctx, ngx_http_psd_tokenize_module);
        ctx->uri_changes = r->uri_changes;

        /* from a client, X-PSD-Card-* headers are never taken for ours */

        if (tlcf->mode == NGX_HTTP_PSD_TOK_INBOUND
            && ngx_http_psd_headers_in_remove(r, "X-PSD-Card-", 1) != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* the reveal key stops here: the gateway never sees it */

        if (reveal) {
            reveal->value.len = 0;
        }

        r->request_body_in_single_buf = 1;

        rc = ngx_http_read_client_request_body(r, ngx_http_psd_tok_body);

        if (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            return rc;
        }

        /*
         * The read took a reference; give it back now, as the mirror
         * module does, so that a read that fails later (a bad chunk)
         * closes the request as nginx expects.  The body handler runs the
         * phases again, possibly before this returns.
         */

        ngx_http_finalize_request(r, NGX_DONE);
        return NGX_DONE;
    }

    if (ctx->waiting || !ctx->body_done) {
        return NGX_DONE;
    }

    if (ctx->too_large && !ctx->done) {
        (void) ngx_http_psd_tok_refuse(r, ctx,
                                       NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                       "body_too_large", NULL, 0);
    }

    if (!ctx->done && tlcf->mode == NGX_HTTP_PSD_TOK_INBOUND) {

        /* a repeated checkout is answered before any card is stored */

        rc = ngx_http_psd_tok_collect(r, ctx);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_OK) {
            tmcf = ngx_http_get_module_main_conf(r,
                                                 ngx_http_psd_tokenize_module);

            rc = ngx_http_psd_checkout_idempotency(r, ctx->body, ctx->len,
                                                   &tmcf->fingerprint_key);
            if (rc != NGX_DECLINED) {
                return rc;
            }
        }
    }

    if (!ctx->done) {
        rc = ngx_http_psd_tok_process(r, ctx);
        if (rc != NGX_OK) {
            return rc;
        }

        if (ctx->waiting) {
            return NGX_AGAIN;
        }
    }

    return ngx_http_psd_tok_finish(r, ctx);
}


static ngx_http_psd_tok_ctx_t *
ngx_http_psd_tok_get_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t      *cln;
    ngx_http_psd_tok_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_tokenize_module);

    if (ctx || !r->internal) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_psd_tok_cleanup) {
            ctx = cln->data;
            ngx_http_set_ctx(r, ctx, ngx_http_psd_tokenize_module);
            return ctx;
        }
    }

    return NULL;
}


static void
ngx_http_psd_tok_body(ngx_http_request_t *r)
{
    ngx_http_psd_tok_ctx_t  *ctx;

    ctx = ngx_http_psd_tok_get_ctx(r);

    ctx->body_done = 1;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
}


static ngx_int_t
ngx_http_psd_tok_refuse(ngx_http_request_t *r, ngx_http_psd_tok_ctx_t *ctx,
    ngx_uint_t status, const char *error, const char *field, size_t len)
{
    ctx->done = 1;
    ctx->status = status;
    ctx->error = error;

    if (field) {
        ctx->field.data = ngx_pnalloc(r->pool, len + 1);
        if (ctx->field.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(ctx->field.data, field, len);
        ctx->field.data[len] = '\0';
        ctx->field.len = len;
    }

    if (ngx_http_get_module_loc_conf(r, ngx_http_psd_tokenize_module)
        && ((ngx_http_psd_tok_loc_conf_t *)
            ngx_http_get_module_loc_conf(r, ngx_http_psd_tokenize_module))
           ->mode == NGX_HTTP_PSD_TOK_INBOUND)
    {
        ngx_http_psd_count_n(status == NGX_HTTP_SERVICE_UNAVAILABLE
                             ? NGX_HTTP_PSD_M_TOKENIZE_FAILED
                             : NGX_HTTP_PSD_M_TOKENIZE_REJECTED);
    }

    return NGX_OK;
}


/* the body in one buffer we own (and wipe); nginx's stays for the wipe too */

static ngx_int_t
ngx_http_psd_tok_collect(ngx_http_request_t *r, ngx_http_psd_tok_ctx_t *ctx)
{
    u_char       *p;
    size_t        len;
    ngx_chain_t  *cl;

    if (ctx->collected) {
        return ctx->body ? NGX_OK : NGX_DECLINED;
    }

    ctx->collected = 1;

    if (r->request_body == NULL || r->request_body->temp_file) {
        return NGX_DECLINED;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        if (cl->buf->in_file) {
            return NGX_DECLINED;
        }

        len += cl->buf->last - cl->buf->pos;
    }

    ctx->body = ngx_pnalloc(r->pool, len + 1);
    if (ctx->body == NULL) {
        return NGX_ERROR;
    }

    p = ctx->body;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {

        /* the last buffer of a chunked body may be empty, pos NULL */
        if (cl->buf->last == cl->buf->pos) {
            continue;
        }

        p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);

        /* the card leaves nginx's buffers as soon as it is copied */
        psd_cleanse(cl->buf->pos, cl->buf->last - cl->buf->pos);
    }

    ctx->len = len;
    ctx->body_wipe = len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_psd_tok_process(ngx_http_request_t *r, ngx_http_psd_tok_ctx_t *ctx)
{
    u_char                        *p;
    size_t                         i, n, npan, vlen, edits_len, argvlen[6];
    ngx_int_t                      rc;
    ngx_uint_t                     kind, *kinds;
    psd_card_t                     card;
    psd_edit_t                    *edits;
    const char                    *value, *path, *argv[6];
    psd_card_brand_t               brand;
    psd_card_scan_t                scan;
    psd_json_ctx_t                *jctx;
    psd_json_conf_t                jconf;
    psd_form_ctx_t                *fctx;
    psd_form_conf_t                fconf;
    psd_json_match_t              *jm;
    psd_form_match_t              *fm;
    ngx_http_psd_tok_item_t       *item;
    ngx_http_psd_redis_call_t     *call;
    ngx_http_psd_tok_loc_conf_t   *tlcf;
    ngx_http_psd_tok_main_conf_t  *tmcf;
    int                            month, year;
    u_char                         key[64];
    u_char                         ttl[NGX_TIME_T_LEN];
    u_char                         env[PSD_VAULT_SEALED_MAX + 24];
    u_char                        *session;
    ngx_table_elt_t               *sh;
    long                           elen;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_tokenize_module);
    tmcf = ngx_http_get_module_main_conf(r, ngx_http_psd_tokenize_module);
    kinds = tlcf->fields->elts;

    rc = ngx_http_psd_tok_collect(r, ctx);

    if (rc == NGX_ERROR) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (rc == NGX_DECLINED || ctx->len == 0) {
        return ngx_http_psd_tok_refuse(r, ctx, NGX_HTTP_BAD_REQUEST,
                                       ctx->len ? "body_too_large"
                                                : "empty_body", NULL, 0);
    }

    if (r->headers_in.content_type == NULL) {
        return ngx_http_psd_tok_refuse(r, ctx, 415, "unsupported_media_type",
                                       NULL, 0);
    }

    value = (char *) r->headers_in.content_type->value.data;
    vlen = r->headers_in.content_type->value.len;

    if (vlen >= 16 && ngx_strncasecmp((u_char *) value,
                                      (u_char *) "application/json", 16)
                      == 0)
    {
        ctx->json = 1;

    } else if (vlen >= 33
               && ngx_strncasecmp((u_char *) value,
                           (u_char *) "application/x-www-form-urlencoded",
                           33) == 0)
    {
        ctx->json = 0;

    } else {
        /* a body we cannot read is refused, never passed untouched */
        return ngx_http_psd_tok_refuse(r, ctx, 415, "unsupported_media_type",
                                       NULL, 0);
    }

    n = tlcf->fields->nelts;

    /* every match becomes an item: kind, value, where it stands */

    jctx = NULL;
    fctx = NULL;

    if (ctx->json) {
        jctx = ngx_pcalloc(r->pool, sizeof(psd_json_ctx_t));
        if (jctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        jctx->matches = ngx_pcalloc(r->pool, NGX_HTTP_PSD_TOK_MATCHES
                                             * sizeof(psd_json_match_t));
        jctx->max_matches = NGX_HTTP_PSD_TOK_MATCHES;
        jctx->dec_size = ctx->len + NGX_HTTP_PSD_TOK_MATCHES + 1;
        jctx->dec = ngx_pnalloc(r->pool, jctx->dec_size);
        jctx->nslots = PSD_JSON_SLOTS_DEFAULT;
        jctx->slots = ngx_palloc(r->pool, PSD_JSON_SLOTS_DEFAULT
                                          * sizeof(psd_json_slot_t));

        if (jctx->matches == NULL || jctx->dec == NULL
            || jctx->slots == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memzero(&jconf, sizeof(psd_json_conf_t));
        jconf.paths = tlcf->paths;
        jconf.npaths = n;
        jconf.hash_key = tmcf->hash_key;

        if (psd_json_scan(&jconf, ctx->body, ctx->len, jctx) != PSD_JSON_OK) {
            rc = ngx_http_psd_tok_refuse(r, ctx, NGX_HTTP_BAD_REQUEST,
                                         psd_json_strerror(jctx->rc),
                                         jctx->err_path_len
                                         ? jctx->err_path : NULL,
                                         jctx->err_path_len);
            psd_cleanse(jctx->dec, jctx->dec_size);
            return rc;
        }

        ctx->nitems = jctx->nmatches;

    } else {
        fctx = ngx_pcalloc(r->pool, sizeof(psd_form_ctx_t));
        if (fctx == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        fctx->matches = ngx_pcalloc(r->pool, NGX_HTTP_PSD_TOK_MATCHES
                                             * sizeof(psd_form_match_t));
        fctx->max_matches = NGX_HTTP_PSD_TOK_MATCHES;
        fctx->dec_size = ctx->len + 2 * NGX_HTTP_PSD_TOK_MATCHES + 1;
        fctx->dec = ngx_pnalloc(r->pool, fctx->dec_size);

        if (fctx->matches == NULL || fctx->dec == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        fconf.paths = tlcf->paths;
        fconf.npaths = n;

        if (psd_form_scan(&fconf, ctx->body, ctx->len, fctx) != PSD_FORM_OK) {
            rc = ngx_http_psd_tok_refuse(r, ctx, NGX_HTTP_BAD_REQUEST,
                                         psd_form_strerror(fctx->rc),
                                         fctx->err_path_len
                                         ? fctx->err_path : NULL,
                                         fctx->err_path_len);
            psd_cleanse(fctx->dec, fctx->dec_size);
            return rc;
        }

        ctx->nitems = fctx->nmatches;
    }

    edits = ngx_pcalloc(r->pool, (ctx->nitems + 1) * sizeof(psd_edit_t));
    call = ngx_http_psd_redis_call_create(r, tlcf->redis, ctx->nitems + 1);

    if (edits == NULL || call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    edits_len = 0;
    rc = NGX_OK;

    /*
     * A CVV's length depends on its card's brand, wherever the card
     * stands in the body: the brands are known before any CVV is checked.
     * With several cards, only what fits every brand is asked of a CVV.
     */

    brand = PSD_BRAND_UNKNOWN;
    npan = 0;

    for (i = 0; i < ctx->nitems; i++) {
        if (kinds[ctx->json ? jctx->matches[i].path_index
                            : fctx->matches[i].path_index]
            != NGX_HTTP_PSD_FIELD_PAN)
        {
            continue;
        }

        value = ctx->json ? jctx->matches[i].value : fctx->matches[i].value;
        vlen = ctx->json ? jctx->matches[i].value_len
                         : fctx->matches[i].value_len;

        if (psd_card_parse(value, vlen, &card) == PSD_CARD_OK) {
            brand = (npan++ == 0) ? card.brand : PSD_BRAND_UNKNOWN;
        }

        psd_card_wipe(&card);
    }

    for (i = 0; i < ctx->nitems && rc == NGX_OK; i++) {
        item = &ctx->items[i];

        if (ctx->json) {
            jm = &jctx->matches[i];
            kind = kinds[jm->path_index];
            value = jm->value;
            vlen = jm->value_len;
            path = jm->path;
            item->start = jm->start;
            item->end = jm->end;
            item->path.len = jm->path_len;

            if (jm->type != PSD_JSON_STRING && jm->type != PSD_JSON_NUMBER) {
                rc = ngx_http_psd_tok_refuse(r, ctx, NGX_HTTP_BAD_REQUEST,
                                             "invalid_field_type", path,
                                             jm->path_len);
                break;
            }

        } else {
            fm = &fctx->matches[i];
            kind = kinds[fm->path_index];
            value = fm->value;
            vlen = fm->value_len;
            path = fm->path;
            item->start = fm->start;
            item->end = fm->end;
            item->path.len = fm->path_len;
        }

        item->kind = kind;
        item->json = ctx->json;

        switch (kind) {

        case NGX_HTTP_PSD_FIELD_PAN:
        case NGX_HTTP_PSD_FIELD_CVV:

            if (tlcf->mode == NGX_HTTP_PSD_TOK_OUTBOUND) {
                /* a token to reveal; the vault has the rest */

                if (psd_token_kind(value, vlen) == PSD_TOKEN_NONE
                    || vlen > 40)
                {
                    rc = ngx_http_psd_tok_refuse(r, ctx, 422, "not_a_token",
                                                 path, item->path.len);
                    break;
                }

                item->token.data = ngx_pnalloc(r->pool, vlen);
                if (item->token.data == NULL) {
                    rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
                    break;
                }

                item->token.len = vlen;
                ngx_memcpy(item->token.data, value, vlen);

                argv[0] = (const char *) key;
                argvlen[0] = ngx_sprintf(key, "psd:{%s:%V}",
                                         kind == NGX_HTTP_PSD_FIELD_PAN
                                         ? "tok" : "cvv", &item->token)
                             - key;

                if (kind == NGX_HTTP_PSD_FIELD_PAN) {
                    argv[1] = argv[0];
                    argvlen[1] = argvlen[0];
                    argv[0] = "GET";
                    argvlen[0] = 3;

                    if (ngx_http_psd_redis_call_add(call, 2, argv, argvlen)
                        != NGX_OK)
                    {
                        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
                    }

                    break;
                }

                /*
                 * A CVV is taken (read and deleted) only by its own
                 * checkout session: a refused reveal leaves it in place.
                 */

                sh = ngx_http_psd_header_in(r, "X-PSD-Checkout-Session");
                argv[1] = sh ? (const char *) sh->value.data : "";
                argvlen[1] = sh ? sh->value.len : 0;

                if (ngx_http_psd_redis_call_add_script(call,
                                               &ngx_http_psd_cvv_take_script,
                                               1, 2, argv, argvlen)
                    != NGX_OK)
                {
                    rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
                }

                break;
            }

            if (kind == NGX_HTTP_PSD_FIELD_PAN) {
                if (psd_card_parse(value, vlen, &card) != PSD_CARD_OK) {
                    rc = ngx_http_psd_tok_refuse(r, ctx, 422,
                                 card.status == PSD_CARD_LUHN_FAILED
                                 ? "luhn_failed" : "invalid_card_number",
                                 path, item->path.len);
                    psd_card_wipe(&card);
                    break;
                }

                if (!ctx->have_card) {
                    ctx->have_card = 1;
                    ngx_cpystrn(ctx->brand,
                                (u_char *) psd_card_brand_name(card.brand),
                                sizeof(ctx->brand));
                    ngx_memcpy(ctx->last4, card.last4, 5);

                    if (psd_card_fingerprint_k(tmcf->fingerprint_hkey, &card,
                                               (char *) ctx->fingerprint)
                        != 0)
                    {
                        psd_card_wipe(&card);
                        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
                        break;
                    }
                }

                item->token.len = (tlcf->preserving) ? card.len
                                                     : PSD_TOKEN_LEN;
                item->token.data = ngx_pnalloc(r->pool, item->token.len);

                if (item->token.data == NULL
                    || (tlcf->preserving
                        ? psd_token_format(&card, (char *) item->token.data)
                        : psd_token_random((char *) item->token.data))
                       != 0)
                {
                    psd_card_wipe(&card);
                    rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
                    break;
                }

                value = card.digits;
                vlen = card.len;

            } else {
                if (psd_cvv_check(value, vlen, brand) != PSD_CARD_OK) {
                    rc = ngx_http_psd_tok_refuse(r, ctx, 422, "invalid_cvv",
                                                 path, item->path.len);
                    break;
                }

                item->token.len = PSD_TOKEN_LEN;
                item->token.data = ngx_pnalloc(r->pool, PSD_TOKEN_LEN);

                if (item->token.data == NULL
                    || psd_token_random((char *) item->token.data) != 0)
                {
                    rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
                    break;
                }
            }

            /* sealed under the newest key, bound to its token */

            elen = psd_vault_seal(
                     tmcf->keyring.keys[tmcf->keyring.nkeys - 1].key,
                     PSD_VAULT_KEY_LEN,
                     tmcf->keyring.keys[tmcf->keyring.nkeys - 1].kid,
                     tmcf->keyring.keys[tmcf->keyring.nkeys - 1].kid_len,
                     item->token.data, item->token.len,
                     (const unsigned char *) value, vlen,
                     (char *) env, sizeof(env));

            if (kind == NGX_HTTP_PSD_FIELD_PAN) {
                psd_card_wipe(&card);
            }

            if (elen < 0) {
                rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
                break;
            }

            /*
             * A token made in a checkout session is bound to it:
             * "<session>|<envelope>" (an envelope is base64url, no '|').
             */

            session = ngx_http_psd_checkout_session(r);

            if (session) {
                ngx_memmove(env + NGX_HTTP_PSD_CHECKOUT_SESSION_LEN + 1, env,
                            elen);
                ngx_memcpy(env, session, NGX_HTTP_PSD_CHECKOUT_SESSION_LEN);
                env[NGX_HTTP_PSD_CHECKOUT_SESSION_LEN] = '|';
                elen += NGX_HTTP_PSD_CHECKOUT_SESSION_LEN + 1;
            }

            argv[0] = "SET";
            argvlen[0] = 3;
            argv[1] = (const char *) key;
            argvlen[1] = ngx_sprintf(key, "psd:{%s:%V}",
                                     kind == NGX_HTTP_PSD_FIELD_PAN
                                     ? "tok" : "cvv", &item->token) - key;
            argv[2] = (const char *) env;
            argvlen[2] = elen;
            argv[3] = "EX";
            argvlen[3] = 2;
            argv[4] = (const char *) ttl;
            argvlen[4] = ngx_sprintf(ttl, "%T",
                                     kind == NGX_HTTP_PSD_FIELD_PAN
                                     ? tmcf->vault_ttl : tmcf->cvv_ttl)
                         - ttl;

            /* a token that exists already (a collision) is never reused */
            argv[5] = "NX";
            argvlen[5] = 2;

            if (ngx_http_psd_redis_call_add(call, 6, argv, argvlen)
                != NGX_OK)
            {
                rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            break;

        case NGX_HTTP_PSD_FIELD_EXPIRY:
            if (psd_expiry_parse(value, vlen, &month, &year) != PSD_CARD_OK) {
                rc = ngx_http_psd_tok_refuse(r, ctx, 422, "invalid_expiry",
                                             path, item->path.len);
                break;
            }

            if (psd_expiry_check(month, year, ngx_time()) != PSD_CARD_OK) {
                rc = ngx_http_psd_tok_refuse(r, ctx, 422, "card_expired",
                                             path, item->path.len);
            }

            break;

        default: /* NGX_HTTP_PSD_FIELD_HOLDER */
            if (vlen == 0 || vlen > NGX_HTTP_PSD_HOLDER_MAX) {
                rc = ngx_http_psd_tok_refuse(r, ctx, 422, "invalid_holder",
                                             path, item->path.len);
            }
        }

        if (item->path.len) {
            item->path.data = ngx_pnalloc(r->pool, item->path.len);
            if (item->path.data) {
                ngx_memcpy(item->path.data, path, item->path.len);
            }
        }
    }

    /* the decoded values held card numbers */

    if (jctx) {
        psd_cleanse(jctx->dec, jctx->dec_size);
    }

    if (fctx) {
        psd_cleanse(fctx->dec, fctx->dec_size);
    }

    psd_cleanse(env, sizeof(env));

    if (rc != NGX_OK || ctx->done) {
        return rc;
    }

    if (tlcf->mode == NGX_HTTP_PSD_TOK_INBOUND) {

        /* the body as the application will see it */

        for (i = 0; i < ctx->nitems; i++) {
            item = &ctx->items[i];

            if (item->kind != NGX_HTTP_PSD_FIELD_PAN
                && item->kind != NGX_HTTP_PSD_FIELD_CVV)
            {
                continue;
            }

            p = ngx_pnalloc(r->pool, item->token.len + 2);
            if (p == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            /* tokens are [A-Za-z0-9_] or digits: no escaping either way */

            if (ctx->json) {
                p[0] = '"';
                ngx_memcpy(p + 1, item->token.data, item->token.len);
                p[item->token.len + 1] = '"';
                edits[edits_len].len = item->token.len + 2;

            } else {
                ngx_memcpy(p, item->token.data, item->token.len);
                edits[edits_len].len = item->token.len;
            }

            edits[edits_len].start = item->start;
            edits[edits_len].end = item->end;
            edits[edits_len].data = p;
            edits_len++;
        }

        if (psd_rewrite_len(ctx->len, edits, edits_len, &ctx->out_len) != 0) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->out = ngx_pnalloc(r->pool, ctx->out_len + 1);
        if (ctx->out == NULL
            || psd_rewrite(ctx->body, ctx->len, edits, edits_len, ctx->out,
                           ctx->out_len, &ctx->out_len) != 0)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /*
         * The safety net: a card number outside the named fields never
         * reaches the application.  Tokens cannot trigger it: random ones
         * hold no long digit runs, preserving ones fail Luhn.
         */

        if (tlcf->scan
            && (psd_card_scan(ctx->out, ctx->out_len,
                              ctx->json ? 0 : PSD_SCAN_FORM, &scan)
                || (r->args.len
                    && psd_card_scan(r->args.data, r->args.len,
                                     PSD_SCAN_FORM, &scan))))
        {
            return ngx_http_psd_tok_refuse(r, ctx, 422,
                                           "unexpected_card_number",
                                           NULL, 0);
        }

        if (call->ncmds == 0) {
            ctx->done = 1;
            ngx_http_psd_count(TOKENIZE_OK);
            return NGX_OK;
        }

        /* the session moves on with the vault writes, in the same write */

        ctx->vault_cmds = call->ncmds;

        if (ngx_http_psd_checkout_tokenized(r, call) == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (ngx_http_psd_redis_call_send(call, ngx_http_psd_tok_stored, r)
            != NGX_OK)
        {
            ngx_http_psd_tok_stored(call);
            return NGX_OK;
        }

    } else {
        if (call->ncmds == 0) {
            /* nothing to reveal: the body goes on as it came */
            ctx->out = ctx->body;
            ctx->out_len = ctx->len;
            ctx->done = 1;
            return NGX_OK;
        }

        if (ngx_http_psd_redis_call_send(call, ngx_http_psd_tok_revealed, r)
            != NGX_OK)
        {
            ngx_http_psd_tok_revealed(call);
            return NGX_OK;
        }
    }

    ctx->waiting = 1;
    ngx_http_psd_redis_wait(r);

    return NGX_OK;
}


static void
ngx_http_psd_tok_stored(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    ngx_uint_t               i;
    ngx_http_psd_tok_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_tokenize_module);

    ctx->done = 1;

    for (i = 0; i < ctx->vault_cmds; i++) {
        if (call->status != NGX_HTTP_PSD_REDIS_OK
            || call->replies[i]->type != REDIS_REPLY_STATUS)
        {
            /* the card never passes untokenized: closed, always */
            (void) ngx_http_psd_tok_refuse(r, ctx,
                                           NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "backend_unavailable", NULL, 0);
            ngx_http_psd_log(NGX_LOG_ERR, r, 0,
                             "psd_tokenize: vault write failed (redis %s)",
                             ngx_http_psd_redis_status_name(call->status));
            break;
        }
    }

    if (ctx->status == 0) {
        ngx_http_psd_count(TOKENIZE_OK);
    }

    if (ctx->waiting) {
        ctx->waiting = 0;
        ngx_http_psd_redis_resume(r);
    }
}


static void
ngx_http_psd_tok_revealed(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    u_char                        *p;
    long                           n;
    char                          *env;
    size_t                         i, k, edits_len, elen;
    redisReply                    *reply;
    ngx_table_elt_t               *h;
    psd_edit_t                    *edits;
    ngx_http_psd_tok_ctx_t        *ctx;
    ngx_http_psd_tok_item_t       *item;
    ngx_http_psd_tok_main_conf_t  *tmcf;
    u_char                         pt[PSD_VAULT_PLAINTEXT_MAX];

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_tokenize_module);
    tmcf = ngx_http_get_module_main_conf(r, ngx_http_psd_tokenize_module);

    ctx->done = 1;

    edits = ngx_pcalloc(r->pool, (ctx->nitems + 1) * sizeof(psd_edit_t));
    if (edits == NULL) {
        (void) ngx_http_psd_tok_refuse(r, ctx,
                                       NGX_HTTP_INTERNAL_SERVER_ERROR,
                                       "internal_error", NULL, 0);
        goto done;
    }

    edits_len = 0;
    k = 0;

    for (i = 0; i < ctx->nitems; i++) {
        item = &ctx->items[i];

        if (item->kind != NGX_HTTP_PSD_FIELD_PAN
            && item->kind != NGX_HTTP_PSD_FIELD_CVV)
        {
            continue;
        }

        reply = call->status == NGX_HTTP_PSD_REDIS_OK ? call->replies[k]
                                                      : NULL;
        k++;

        if (reply && reply->type == REDIS_REPLY_ERROR && reply->len >= 11
            && ngx_strncmp(reply->str, "PSD_SESSION", 11) == 0)
        {
            (void) ngx_http_psd_tok_refuse(r, ctx, 422,
                                           "token_session_mismatch",
                                           (char *) item->path.data,
                                           item->path.len);
            ngx_http_psd_count(REVEAL_DENIED);
            goto done;
        }

        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            (void) ngx_http_psd_tok_refuse(r, ctx,
                                           NGX_HTTP_SERVICE_UNAVAILABLE,
                                           "backend_unavailable", NULL, 0);
            goto done;
        }

        if (reply->type != REDIS_REPLY_STRING) {
            /* unknown, expired, or a CVV that was already used */
            (void) ngx_http_psd_tok_refuse(r, ctx, 422,
                                 item->kind == NGX_HTTP_PSD_FIELD_CVV
                                 ? "cvv_unavailable" : "token_expired",
                                 (char *) item->path.data, item->path.len);
            ngx_http_psd_count(REVEAL_DENIED);
            goto done;
        }

        env = reply->str;
        elen = reply->len;

        if (elen > NGX_HTTP_PSD_CHECKOUT_SESSION_LEN
            && env[NGX_HTTP_PSD_CHECKOUT_SESSION_LEN] == '|')
        {
            /* a token of a checkout session is revealed for that one only */

            h = ngx_http_psd_header_in(r, "X-PSD-Checkout-Session");

            if (h == NULL
                || h->value.len != NGX_HTTP_PSD_CHECKOUT_SESSION_LEN
                || ngx_strncmp(h->value.data, env,
                               NGX_HTTP_PSD_CHECKOUT_SESSION_LEN) != 0)
            {
                (void) ngx_http_psd_tok_refuse(r, ctx, 422,
                                     "token_session_mismatch",
                                     (char *) item->path.data,
                                     item->path.len);
                ngx_http_psd_count(REVEAL_DENIED);
                goto done;
            }

            env += NGX_HTTP_PSD_CHECKOUT_SESSION_LEN + 1;
            elen -= NGX_HTTP_PSD_CHECKOUT_SESSION_LEN + 1;
        }

        n = psd_vault_open(psd_vault_keyring_lookup, &tmcf->keyring,
                           item->token.data, item->token.len, env, elen,
                           pt, sizeof(pt));

        if (n < 0) {
            ngx_http_psd_log(NGX_LOG_ERR, r, 0,
                             "psd_detokenize: vault entry refused: %s",
                             psd_vault_strerror(n));
            (void) ngx_http_psd_tok_refuse(r, ctx, 422, "token_invalid",
                                           (char *) item->path.data,
                                           item->path.len);
            ngx_http_psd_count(REVEAL_DENIED);
            goto done;
        }

        p = ngx_pnalloc(r->pool, n + 2);
        if (p == NULL) {
            psd_cleanse(pt, sizeof(pt));
            goto done;
        }

        if (item->json) {
            p[0] = '"';
            ngx_memcpy(p + 1, pt, n);
            p[n + 1] = '"';
            edits[edits_len].len = n + 2;

        } else {
            ngx_memcpy(p, pt, n);
            edits[edits_len].len = n;
        }

        psd_cleanse(pt, sizeof(pt));

        edits[edits_len].start = item->start;
        edits[edits_len].end = item->end;
        edits[edits_len].data = p;
        edits_len++;
    }

    if (psd_rewrite_len(ctx->len, edits, edits_len, &ctx->out_len) != 0) {
        goto done;
    }

    ctx->out = ngx_pnalloc(r->pool, ctx->out_len + 1);
    if (ctx->out == NULL
        || psd_rewrite(ctx->body, ctx->len, edits, edits_len, ctx->out,
                       ctx->out_len, &ctx->out_len) != 0)
    {
        ctx->out = NULL;
        goto done;
    }

    ctx->out_wipe = ctx->out_len;

    for (i = 0; i < edits_len; i++) {
        psd_cleanse((void *) edits[i].data, edits[i].len);
    }

    ctx->revealed = edits_len;

done:

    if (ctx->status == 0 && ctx->out && ctx->waiting) {
        /* the card goes on only once its reveal is on record */

        if (ngx_http_psd_tok_audit(r, ctx, ngx_http_psd_tok_audited)
            == NGX_OK)
        {
            return;
        }

        ngx_http_psd_tok_unaudited(r, ctx);

    } else {
        (void) ngx_http_psd_tok_audit(r, ctx, NULL);
    }

    if (ctx->waiting) {
        ctx->waiting = 0;
        ngx_http_psd_redis_resume(r);
    }
}


static void
ngx_http_psd_tok_audited(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    ngx_uint_t               i;
    ngx_http_psd_tok_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_tokenize_module);

    for (i = 0; i < call->ncmds; i++) {
        if (call->status != NGX_HTTP_PSD_REDIS_OK
            || call->replies[i]->type != REDIS_REPLY_STRING)
        {
            ngx_http_psd_tok_unaudited(r, ctx);
            break;
        }
    }

    if (ctx->out) {
        ngx_http_psd_count(REVEAL_OK);
        ngx_http_psd_log(NGX_LOG_NOTICE, r, 0,
                         "psd_detokenize: %ui field(s) revealed toward the "
                         "gateway", ctx->revealed);
    }

    ctx->waiting = 0;
    ngx_http_psd_redis_resume(r);
}


/*
 * A reveal whose audit record cannot be written does not happen (PCI DSS
 * 10.2): the revealed body is wiped and the gateway is not called.  A
 * one-use CVV it read is spent all the same.
 */

static void
ngx_http_psd_tok_unaudited(ngx_http_request_t *r, ngx_http_psd_tok_ctx_t *ctx)
{
    psd_cleanse(ctx->out, ctx->out_wipe);
    ctx->out = NULL;
    ctx->out_wipe = 0;

    ngx_http_psd_count(REVEAL_DENIED);
    ngx_http_psd_log(NGX_LOG_ERR, r, 0,
                     "psd_detokenize: reveal withdrawn, its %s could not "
                     "be written", "audit record");

    (void) ngx_http_psd_tok_refuse(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "backend_unavailable", NULL, 0);
}


/*
 * Every reveal is recorded: which token, of what kind, for which client,
 * with what outcome, when — never the card.  A reveal waits for its record
 * ("handler"); a refusal's record is written without waiting.
 */

static ngx_int_t
ngx_http_psd_tok_audit(ngx_http_request_t *r, ngx_http_psd_tok_ctx_t *ctx,
    ngx_http_psd_redis_handler_pt handler)
{
    size_t                        argvlen[17];
    ngx_uint_t                    i;
    const char                   *argv[17];
    ngx_http_psd_tok_item_t      *item;
    ngx_http_psd_redis_call_t    *call;
    ngx_http_psd_tok_loc_conf_t  *tlcf;
    u_char                        now[NGX_TIME_T_LEN];

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_tokenize_module);

    call = ngx_http_psd_redis_call_create(handler ? r : NULL, tlcf->redis,
                                          ngx_max(ctx->nitems, 1));
    if (call == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < ngx_max(ctx->nitems, 1); i++) {
        item = (i < ctx->nitems) ? &ctx->items[i] : NULL;

        if (item && item->kind != NGX_HTTP_PSD_FIELD_PAN
            && item->kind != NGX_HTTP_PSD_FIELD_CVV)
        {
            continue;
        }

        argv[0] = "XADD";
        argvlen[0] = 4;
        argv[1] = "psd:{audit:reveals}";
        argvlen[1] = sizeof("psd:{audit:reveals}") - 1;
        argv[2] = "MAXLEN";
        argvlen[2] = 6;
        argv[3] = "~";
        argvlen[3] = 1;
        argv[4] = "100000";
        argvlen[4] = 6;
        argv[5] = "*";
        argvlen[5] = 1;
        argv[6] = "token";
        argvlen[6] = 5;
        argv[7] = item ? (const char *) item->token.data : "-";
        argvlen[7] = item ? item->token.len : 1;
        argv[8] = "kind";
        argvlen[8] = 4;
        argv[9] = !item ? "-"
                  : (item->kind == NGX_HTTP_PSD_FIELD_PAN) ? "pan" : "cvv";
        argvlen[9] = ngx_strlen(argv[9]);
        argv[10] = "client";
        argvlen[10] = 6;
        argv[11] = (const char *) r->connection->addr_text.data;
        argvlen[11] = r->connection->addr_text.len;
        argv[12] = "outcome";
        argvlen[12] = 7;
        argv[13] = ctx->status ? ctx->error : "ok";
        argvlen[13] = ngx_strlen(argv[13]);
        argv[14] = "at";
        argvlen[14] = 2;
        argv[15] = (const char *) now;
        argvlen[15] = ngx_sprintf(now, "%T", ngx_time()) - now;

        if (ngx_http_psd_redis_call_add(call, 16, argv, argvlen) != NGX_OK) {
            if (handler) {
                return NGX_ERROR;
            }

            break;
        }
    }

    if (call->ncmds == 0) {
        if (handler == NULL) {
            ngx_destroy_pool(call->pool);
        }

        return NGX_ERROR;
    }

    return ngx_http_psd_redis_call_send(call, handler, r) == NGX_OK
           ? NGX_OK : NGX_ERROR;
}


static ngx_int_t
ngx_http_psd_tok_finish(ngx_http_request_t *r, ngx_http_psd_tok_ctx_t *ctx)
{
    u_char        *p;
    ngx_buf_t     *b;
    ngx_chain_t   *cl;

    if (ctx->status) {
        if (ctx->status == NGX_HTTP_SERVICE_UNAVAILABLE) {
            return ngx_http_psd_finalize_in_phase(r,
                                        ngx_http_psd_send_unavailable(r, 1));
        }

        return ngx_http_psd_finalize_in_phase(r,
                   ngx_http_psd_send_json_error(r, ctx->status, ctx->error,
                                                ctx->field.len
                                                ? (char *) ctx->field.data
                                                : NULL));
    }

    if (ctx->finished) {
        return NGX_DECLINED;
    }

    if (ctx->out == NULL) {
        if (ctx->len) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->finished = 1;
        return NGX_DECLINED;
    }

    /* the rewritten body replaces what was read, with its length */

    b = ngx_calloc_buf(r->pool);
    cl = ngx_alloc_chain_link(r->pool);
    if (b == NULL || cl == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = ctx->out;
    b->last = ctx->out + ctx->out_len;
    b->start = b->pos;
    b->end = b->last;
    b->memory = 1;
    b->last_buf = 1;

    cl->buf = b;
    cl->next = NULL;

    r->request_body->bufs = cl;
    r->request_body->buf = b;
    r->headers_in.content_length_n = ctx->out_len;

    if (r->headers_in.content_length) {
        p = ngx_pnalloc(r->pool, NGX_OFF_T_LEN);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        r->headers_in.content_length->value.data = p;
        r->headers_in.content_length->value.len =
                                  ngx_sprintf(p, "%uz", ctx->out_len) - p;
    }

    if (ctx->have_card) {
        if (ngx_http_psd_tok_add_header(r, "X-PSD-Card-Brand",
                                        "x-psd-card-brand", ctx->brand,
                                        ngx_strlen(ctx->brand)) != NGX_OK
            || ngx_http_psd_tok_add_header(r, "X-PSD-Card-Last4",
                                           "x-psd-card-last4", ctx->last4,
                                           4) != NGX_OK
            || ngx_http_psd_tok_add_header(r, "X-PSD-Card-Fingerprint",
                                           "x-psd-card-fingerprint",
                                           ctx->fingerprint, PSD_FP_LEN)
               != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->have_card = 1;
    }

    ctx->status = 0;
    ctx->done = 1;
    ctx->finished = 1;

    return NGX_DECLINED;
}


static void
ngx_http_psd_tok_cleanup(void *data)
{
    ngx_http_psd_tok_ctx_t  *ctx = data;

    /* the raw body held card numbers; a revealed body holds them again */

    if (ctx->body && ctx->body_wipe) {
        psd_cleanse(ctx->body, ctx->body_wipe);
    }

    if (ctx->out && ctx->out_wipe) {
        psd_cleanse(ctx->out, ctx->out_wipe);
    }
}


static ngx_int_t
ngx_http_psd_tok_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_psd_tok_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_psd_tokenize_module);

    if (ctx == NULL || !ctx->have_card) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    switch (data) {

    case 0:
        v->data = ctx->fingerprint;
        v->len = PSD_FP_LEN;
        break;

    case 1:
        v->data = ctx->brand;
        v->len = ngx_strlen(ctx->brand);
        break;

    default:
        v->data = ctx->last4;
        v->len = 4;
    }

    return NGX_OK;
}
