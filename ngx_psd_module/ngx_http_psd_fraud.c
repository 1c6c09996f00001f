
/*
 * Copyright (C) ngx_psd_module authors
 *
 * Pay: fraud velocity rules and block lists (docs/rules.md), decided in
 * nginx with counters in Redis.  Rules keyed by the same variables share a
 * hash tag and one script call; every group and every block list check of
 * a request goes out in one write: one round trip per request.
 *
 * Key values and distinct members are stored as truncated SHA-256 digests:
 * no e-mail address or card fingerprint stands in a Redis key, and no byte
 * of a value can break a hash tag.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_psd_module.h"
#include "ngx_http_psd_redis.h"
#include "ngx_http_psd_metrics.h"
#include "ngx_http_psd_fraud.h"
#include "psd_b64.h"
#include "psd_cidr.h"
#include "psd_crypto.h"
#include "psd_rate.h"
#include "psd_rule.h"


#define NGX_HTTP_PSD_FRAUD_DIGEST_LEN  22      /* base64url of 16 bytes */
#define NGX_HTTP_PSD_FRAUD_BODY_MAX    16384

#define NGX_HTTP_PSD_BL_IP             1
#define NGX_HTTP_PSD_BL_FINGERPRINT    2
#define NGX_HTTP_PSD_BL_EMAIL          3


typedef struct {
    ngx_str_t                     name;
    ngx_str_t                     suffix;   /* name.<digest of the rule> */
    psd_rule_t                    rule;
    psd_rule_action_e             action;
    ngx_uint_t                    failure_mode;
    ngx_http_complex_value_t     *operand;
    ngx_uint_t                    group;
} ngx_http_psd_fraud_rule_t;


typedef struct {
    ngx_str_t                     spec;     /* "remote_addr,http_x_email" */
    ngx_uint_t                    nkeys;
    ngx_http_complex_value_t      keys[PSD_RULE_KEYS_MAX];
    ngx_str_t                     names[PSD_RULE_KEYS_MAX];
} ngx_http_psd_fraud_group_t;


typedef struct {
    ngx_uint_t                    list;
    ngx_http_complex_value_t      value;
} ngx_http_psd_fraud_blocklist_t;


typedef struct {
    ngx_flag_t                    enable;
    ngx_array_t                  *rules;       /* ngx_http_psd_fraud_rule_t */
    ngx_array_t                  *groups;      /* ngx_http_psd_fraud_group_t */
    ngx_array_t                  *blocklists;
    ngx_uint_t                    failure_mode;
    ngx_uint_t                    block_status;
    ngx_str_t                     redis_name;
    ngx_http_psd_redis_server_t  *redis;
    ngx_str_t                     api_key;
    ngx_flag_t                    admin;
} ngx_http_psd_fraud_loc_conf_t;


typedef struct {
    ngx_uint_t                    decision;
    ngx_str_t                     rule;
    ngx_int_t                     rc;
    ngx_uint_t                    group_call[16];
    ngx_uint_t                    first_blocklist;
    ngx_uint_t                    uri_changes;
    unsigned                      waiting:1;
    unsigned                      done:1;
    unsigned                      header_set:1;
} ngx_http_psd_fraud_ctx_t;


#define NGX_HTTP_PSD_FRAUD_PASS       1
#define NGX_HTTP_PSD_FRAUD_ALLOW      2
#define NGX_HTTP_PSD_FRAUD_REVIEW     3
#define NGX_HTTP_PSD_FRAUD_CHALLENGE  4
#define NGX_HTTP_PSD_FRAUD_BLOCK      5
#define NGX_HTTP_PSD_FRAUD_ERROR      6

#define NGX_HTTP_PSD_FRAUD_GROUPS_MAX 16
#define NGX_HTTP_PSD_FRAUD_402        402


static ngx_int_t ngx_http_psd_fraud_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_psd_fraud_init(ngx_conf_t *cf);
static void *ngx_http_psd_fraud_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_psd_fraud_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_psd_fraud_rule(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_psd_fraud_blocklist(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_psd_fraud_admin(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_psd_fraud_handler(ngx_http_request_t *r);
static void ngx_http_psd_fraud_checked(ngx_http_psd_redis_call_t *call);
static ngx_int_t ngx_http_psd_fraud_finish(ngx_http_request_t *r,
    ngx_http_psd_fraud_ctx_t *ctx);
static ngx_int_t ngx_http_psd_fraud_admin_handler(ngx_http_request_t *r);
static void ngx_http_psd_fraud_admin_body(ngx_http_request_t *r);
static void ngx_http_psd_fraud_admin_done(ngx_http_psd_redis_call_t *call);
static ngx_int_t ngx_http_psd_fraud_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_conf_enum_t  ngx_http_psd_fraud_status_codes[] = {
    { ngx_string("402"), NGX_HTTP_PSD_FRAUD_402 },
    { ngx_string("403"), NGX_HTTP_FORBIDDEN },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_psd_fraud_commands[] = {

    { ngx_string("psd_fraud"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_fraud_loc_conf_t, enable),
      NULL },

    { ngx_string("psd_fraud_rule"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE3
                        |NGX_CONF_TAKE4,
      ngx_http_psd_fraud_rule,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_fraud_blocklist"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_psd_fraud_blocklist,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_fraud_failure_mode"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_fraud_loc_conf_t, failure_mode),
      &ngx_http_psd_failure_modes },

    { ngx_string("psd_fraud_block_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_fraud_loc_conf_t, block_status),
      &ngx_http_psd_fraud_status_codes },

    { ngx_string("psd_fraud_redis"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_fraud_loc_conf_t, redis_name),
      NULL },

    { ngx_string("psd_fraud_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_psd_fraud_admin,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_fraud_api_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_psd_conf_set_secret_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_fraud_loc_conf_t, api_key),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_psd_fraud_module_ctx = {
    ngx_http_psd_fraud_add_variables,      /* preconfiguration */
    ngx_http_psd_fraud_init,               /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_psd_fraud_create_loc_conf,    /* create location configuration */
    ngx_http_psd_fraud_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_psd_fraud_module = {
    NGX_MODULE_V1,
    &ngx_http_psd_fraud_module_ctx,        /* module context */
    ngx_http_psd_fraud_commands,           /* module directives */
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


static ngx_http_variable_t  ngx_http_psd_fraud_vars[] = {

    { ngx_string("psd_fraud_decision"), NULL, ngx_http_psd_fraud_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("psd_fraud_rule"), NULL, ngx_http_psd_fraud_variable,
      1, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_psd_fraud_decisions[] = {
    ngx_null_string,
    ngx_string("pass"),
    ngx_string("allow"),
    ngx_string("review"),
    ngx_string("challenge"),
    ngx_string("block"),
    ngx_string("error")
};


static ngx_str_t  ngx_http_psd_fraud_lists[] = {
    ngx_null_string,
    ngx_string("ip"),
    ngx_string("fingerprint"),
    ngx_string("email")
};


static ngx_http_psd_redis_script_t  ngx_http_psd_fraud_script = {
    "window", psd_rate_window_script, ""
};


static ngx_uint_t  ngx_http_psd_fraud_used;


static void *
ngx_http_psd_fraud_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_psd_fraud_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_fraud_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->rules = NULL;
     *     conf->groups = NULL;
     *     conf->blocklists = NULL;
     *     conf->redis_name = { 0, NULL };
     *     conf->api_key = { 0, NULL };
     *     conf->admin = 0;
     */

    conf->enable = NGX_CONF_UNSET;
    conf->failure_mode = NGX_CONF_UNSET_UINT;
    conf->block_status = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_psd_fraud_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_psd_fraud_loc_conf_t  *prev = parent;
    ngx_http_psd_fraud_loc_conf_t  *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    if (conf->rules == NULL) {
        conf->rules = prev->rules;
        conf->groups = prev->groups;
    }

    if (conf->blocklists == NULL) {
        conf->blocklists = prev->blocklists;
    }

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_uint_value(conf->failure_mode, prev->failure_mode,
                              NGX_HTTP_PSD_FAIL_OPEN);
    ngx_conf_merge_uint_value(conf->block_status, prev->block_status,
                              NGX_HTTP_FORBIDDEN);
    ngx_conf_merge_str_value(conf->redis_name, prev->redis_name, "");
    ngx_conf_merge_str_value(conf->api_key, prev->api_key, "");

    if (!conf->enable && !conf->admin) {
        return NGX_CONF_OK;
    }

    if (conf->enable && conf->rules == NULL && conf->blocklists == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_fraud on\" without any \"psd_fraud_rule\" "
                           "or \"psd_fraud_blocklist\"");
        return NGX_CONF_ERROR;
    }

    if (conf->admin) {
        /* the body is read into one buffer, never a file */
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

        if (clcf->client_body_buffer_size < NGX_HTTP_PSD_FRAUD_BODY_MAX) {
            clcf->client_body_buffer_size = NGX_HTTP_PSD_FRAUD_BODY_MAX;
        }
    }

    if (conf->admin && conf->api_key.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_fraud_admin\" needs \"psd_fraud_api_key\"");
        return NGX_CONF_ERROR;
    }

    ngx_http_psd_fraud_used = 1;

    return ngx_http_psd_redis_conf_server(cf, &conf->redis_name,
                                          &conf->redis);
}


static ngx_int_t
ngx_http_psd_fraud_compile_var(ngx_conf_t *cf, const char *name,
    ngx_http_complex_value_t *cv)
{
    ngx_str_t                          value;
    ngx_http_compile_complex_value_t   ccv;

    value.len = ngx_strlen(name) + 1;
    value.data = ngx_pnalloc(cf->pool, value.len);
    if (value.data == NULL) {
        return NGX_ERROR;
    }

    value.data[0] = '$';
    ngx_memcpy(value.data + 1, name, value.len - 1);

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
    ccv.cf = cf;
    ccv.value = &value;
    ccv.complex_value = cv;

    return ngx_http_compile_complex_value(&ccv);
}


static char *
ngx_http_psd_fraud_rule(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_fraud_loc_conf_t  *flcf = conf;

    u_char                      *p;
    size_t                       column, len;
    ngx_str_t                   *value, spec;
    ngx_uint_t                   i, k;
    ngx_http_psd_fraud_rule_t   *rule, *rules;
    ngx_http_psd_fraud_group_t  *group, *groups;
    u_char                       md[PSD_SHA256_LEN];
    char                         err[PSD_RULE_TEXT_LEN];

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > 64) {
        goto invalid_name;
    }

    for (i = 0; i < value[1].len; i++) {
        if (!(isalnum(value[1].data[i]) || value[1].data[i] == '_'
              || value[1].data[i] == '-'))
        {
            goto invalid_name;
        }
    }

    if (flcf->rules == NULL) {
        flcf->rules = ngx_array_create(cf->pool, 4,
                                       sizeof(ngx_http_psd_fraud_rule_t));
        flcf->groups = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_http_psd_fraud_group_t));
        if (flcf->rules == NULL || flcf->groups == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    rules = flcf->rules->elts;

    for (i = 0; i < flcf->rules->nelts; i++) {
        if (rules[i].name.len == value[1].len
            && ngx_strncmp(rules[i].name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate fraud rule \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    rule = ngx_array_push(flcf->rules);
    if (rule == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(rule, sizeof(ngx_http_psd_fraud_rule_t));
    rule->name = value[1];
    rule->failure_mode = NGX_CONF_UNSET_UINT;

    if (psd_rule_parse(&rule->rule, (char *) value[2].data, value[2].len,
                       err, sizeof(err), &column)
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid fraud rule \"%V\": %s", &value[1], err);
        return NGX_CONF_ERROR;
    }

    rule->action = psd_rule_action((char *) value[3].data, value[3].len);

    if (rule->action == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid action \"%V\" in fraud rule \"%V\", it "
                           "must be \"block\", \"review\", \"challenge\" or "
                           "\"allow\"", &value[3], &value[1]);
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 5) {
        if (ngx_strcmp(value[4].data, "failure_mode=open") == 0) {
            rule->failure_mode = NGX_HTTP_PSD_FAIL_OPEN;

        } else if (ngx_strcmp(value[4].data, "failure_mode=closed") == 0) {
            rule->failure_mode = NGX_HTTP_PSD_FAIL_CLOSED;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\" in fraud rule "
                               "\"%V\"", &value[4], &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    /*
     * Counters are named after what the rule counts, not only its name:
     * two locations may give one name to different rules.
     */

    len = psd_rule_format(&rule->rule, err, sizeof(err));
    (void) psd_sha256((u_char *) err, ngx_min(len, sizeof(err) - 1), md);

    rule->suffix.data = ngx_pnalloc(cf->pool, value[1].len + 1 + 8);
    if (rule->suffix.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_sprintf(rule->suffix.data, "%V.", &value[1]);
    p = ngx_hex_dump(p, md, 4);
    rule->suffix.len = p - rule->suffix.data;

    if (rule->rule.var[0]) {
        rule->operand = ngx_palloc(cf->pool,
                                   sizeof(ngx_http_complex_value_t));
        if (rule->operand == NULL) {
            return NGX_CONF_ERROR;
        }

        if (ngx_http_psd_fraud_compile_var(cf, rule->rule.var,
                                           rule->operand)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    /* rules keyed by the same variables share a hash tag and a script call */

    len = 0;
    for (k = 0; k < rule->rule.nkeys; k++) {
        len += ngx_strlen(rule->rule.keys[k]) + 1;
    }

    spec.data = ngx_pnalloc(cf->pool, len);
    if (spec.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = spec.data;
    for (k = 0; k < rule->rule.nkeys; k++) {
        p = ngx_sprintf(p, "%s%s", k ? "," : "", rule->rule.keys[k]);
    }

    spec.len = p - spec.data;

    groups = flcf->groups->elts;

    for (i = 0; i < flcf->groups->nelts; i++) {
        if (groups[i].spec.len == spec.len
            && ngx_strncmp(groups[i].spec.data, spec.data, spec.len) == 0)
        {
            rule->group = i;
            return NGX_CONF_OK;
        }
    }

    if (flcf->groups->nelts == NGX_HTTP_PSD_FRAUD_GROUPS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "fraud rules use more than %d different keys",
                           NGX_HTTP_PSD_FRAUD_GROUPS_MAX);
        return NGX_CONF_ERROR;
    }

    group = ngx_array_push(flcf->groups);
    if (group == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(group, sizeof(ngx_http_psd_fraud_group_t));
    group->spec = spec;
    group->nkeys = rule->rule.nkeys;

    for (k = 0; k < group->nkeys; k++) {
        group->names[k].data = (u_char *) rule->rule.keys[k];
        group->names[k].len = ngx_strlen(rule->rule.keys[k]);

        if (ngx_http_psd_fraud_compile_var(cf, rule->rule.keys[k],
                                           &group->keys[k])
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    rule->group = flcf->groups->nelts - 1;

    return NGX_CONF_OK;

invalid_name:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid fraud rule name \"%V\", use up to 64 "
                       "letters, digits, \"_\" or \"-\"", &value[1]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_psd_fraud_blocklist(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_fraud_loc_conf_t  *flcf = conf;

    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_psd_fraud_blocklist_t    *bl;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    if (flcf->blocklists == NULL) {
        flcf->blocklists = ngx_array_create(cf->pool, 3,
                                      sizeof(ngx_http_psd_fraud_blocklist_t));
        if (flcf->blocklists == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    bl = ngx_array_push(flcf->blocklists);
    if (bl == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(bl, sizeof(ngx_http_psd_fraud_blocklist_t));

    for (i = 1; i < 4; i++) {
        if (ngx_http_psd_fraud_lists[i].len == value[1].len
            && ngx_strncmp(ngx_http_psd_fraud_lists[i].data, value[1].data,
                           value[1].len) == 0)
        {
            bl->list = i;
        }
    }

    if (bl->list == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid block list \"%V\", it must be \"ip\", "
                           "\"fingerprint\" or \"email\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
    ccv.cf = cf;
    ccv.value = &value[2];
    ccv.complex_value = &bl->value;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_psd_fraud_admin(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_fraud_loc_conf_t  *flcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (flcf->admin) {
        return "is duplicate";
    }

    flcf->admin = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_psd_fraud_admin_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_psd_fraud_add_variables(ngx_conf_t *cf)
{
    return ngx_http_psd_add_variables(cf, ngx_http_psd_fraud_vars);
}


static ngx_int_t
ngx_http_psd_fraud_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    if (!ngx_http_psd_fraud_used) {
        return NGX_OK;
    }

    ngx_http_psd_fraud_used = 0;

    if (ngx_http_psd_redis_register_script(cf, &ngx_http_psd_fraud_script)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_psd_fraud_handler;

    return NGX_OK;
}


/* 16 bytes of SHA-256, base64url: 22 characters */

static void
ngx_http_psd_fraud_digest(u_char *out, u_char *data, size_t len)
{
    unsigned char  md[PSD_SHA256_LEN];

    (void) psd_sha256(data, len, md);
    (void) psd_b64url_encode((char *) out, md, 16);
}


/*
 * The hash tag of a group for one request: the digest of its key values,
 * each preceded by its length so that no two value lists collide.  NGX_
 * DECLINED when a key is empty: such a request is not counted, as with
 * limit_req.
 */

static ngx_int_t
ngx_http_psd_fraud_tag(ngx_http_request_t *r,
    ngx_http_psd_fraud_group_t *group, u_char *tag)
{
    u_char     *buf, *p;
    size_t      len;
    ngx_str_t   values[PSD_RULE_KEYS_MAX];
    ngx_uint_t  k;

    len = group->spec.len;

    for (k = 0; k < group->nkeys; k++) {
        if (ngx_http_complex_value(r, &group->keys[k], &values[k])
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (values[k].len == 0) {
            return NGX_DECLINED;
        }

        len += NGX_SIZE_T_LEN + 2 + values[k].len;
    }

    buf = ngx_pnalloc(r->pool, len);
    if (buf == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(buf, group->spec.data, group->spec.len);

    for (k = 0; k < group->nkeys; k++) {
        p = ngx_sprintf(p, "\n%uz:%V", values[k].len, &values[k]);
    }

    ngx_http_psd_fraud_digest(tag, buf, p - buf);

    return NGX_OK;
}


/* every prefix of an address as canonical CIDR text: one SMISMEMBER */

static ngx_int_t
ngx_http_psd_fraud_add_ip_check(ngx_http_request_t *r,
    ngx_http_psd_redis_call_t *call, ngx_str_t *value)
{
    int          argc, bits, n;
    size_t      *argvlen;
    psd_ip_t     ip;
    psd_cidr_t   cidr;
    const char **argv;
    u_char      *text;

    if (psd_ip_parse(&ip, (char *) value->data, value->len) != 0) {
        return NGX_DECLINED;
    }

    bits = (ip.family == PSD_IP_V4) ? 32 : 128;

    argv = ngx_palloc(r->pool, (bits + 3) * sizeof(char *));
    argvlen = ngx_palloc(r->pool, (bits + 3) * sizeof(size_t));
    text = ngx_pnalloc(r->pool, (bits + 1) * PSD_CIDR_TEXT_MAX);

    if (argv == NULL || argvlen == NULL || text == NULL) {
        return NGX_ERROR;
    }

    argv[0] = "SMISMEMBER";
    argvlen[0] = 10;
    argv[1] = "psd:{bl:ip}";
    argvlen[1] = sizeof("psd:{bl:ip}") - 1;
    argc = 2;

    for (n = bits; n >= 0; n--) {
        cidr.net = ip;
        cidr.prefix = (unsigned char) n;

        if (n % 8) {
            cidr.net.addr[n / 8] &= (u_char) (0xff << (8 - n % 8));
        }

        if (n < bits) {
            ngx_memzero(cidr.net.addr + (n + 7) / 8,
                        bits / 8 - (n + 7) / 8);
        }

        argv[argc] = (const char *) text;
        argvlen[argc] = psd_cidr_format((char *) text, &cidr);
        text += PSD_CIDR_TEXT_MAX;
        argc++;
    }

    return ngx_http_psd_redis_call_add(call, argc, argv, argvlen);
}


static ngx_int_t
ngx_http_psd_fraud_handler(ngx_http_request_t *r)
{
    int                              argc;
    u_char                          *p, *keys, *members;
    size_t                          *argvlen;
    ngx_str_t                        val;
    ngx_int_t                        rc;
    ngx_uint_t                       g, i, n, nrules;
    const char                     **argv;
    ngx_http_psd_fraud_ctx_t        *ctx;
    ngx_http_psd_fraud_rule_t       *rules;
    ngx_http_psd_fraud_group_t      *groups;
    ngx_http_psd_redis_call_t       *call;
    ngx_http_psd_fraud_loc_conf_t   *flcf;
    ngx_http_psd_fraud_blocklist_t  *bls;
    u_char                           tag[NGX_HTTP_PSD_FRAUD_DIGEST_LEN];
    u_char                           cap[NGX_INT_T_LEN];

    flcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_fraud_module);

    if (!flcf->enable || r != r->main) {
        return NGX_DECLINED;
    }

    /* a client request is judged once, also when it arrives by redirect */

    ctx = ngx_http_psd_ctx_get(r, &ngx_http_psd_fraud_module);

    if (ctx) {
        if (ctx->waiting) {
            return NGX_AGAIN;
        }

        if (ctx->done && r->uri_changes != ctx->uri_changes) {
            return NGX_DECLINED;
        }

        return ngx_http_psd_fraud_finish(r, ctx);
    }

    ctx = ngx_http_psd_ctx_create(r, &ngx_http_psd_fraud_module,
                                  sizeof(ngx_http_psd_fraud_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->uri_changes = r->uri_changes;

    /* only our decision may reach the application under this name */
    if (ngx_http_psd_headers_in_remove(r, "X-PSD-Fraud", 0) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->decision = NGX_HTTP_PSD_FRAUD_PASS;
    ctx->rc = NGX_DECLINED;

    n = (flcf->groups ? flcf->groups->nelts : 0)
        + (flcf->blocklists ? flcf->blocklists->nelts : 0);

    call = ngx_http_psd_redis_call_create(r, flcf->redis, n);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    nrules = flcf->rules ? flcf->rules->nelts : 0;
    rules = nrules ? flcf->rules->elts : NULL;
    groups = flcf->groups ? flcf->groups->elts : NULL;

    argv = ngx_palloc(r->pool, (4 + 4 * nrules) * sizeof(char *));
    argvlen = ngx_palloc(r->pool, (4 + 4 * nrules) * sizeof(size_t));
    keys = ngx_pnalloc(r->pool, (nrules + n) * 160 + 1);
    members = ngx_pnalloc(r->pool, nrules * 32 + 1);

    if (argv == NULL || argvlen == NULL || keys == NULL || members == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (g = 0; flcf->groups && g < flcf->groups->nelts; g++) {
        ctx->group_call[g] = NGX_CONF_UNSET_UINT;

        rc = ngx_http_psd_fraud_tag(r, &groups[g], tag);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_DECLINED) {
            continue;
        }

        /* keys first, then "" (Redis's clock), the cap, and the triples */

        argc = 0;

        for (i = 0; i < nrules; i++) {
            if (rules[i].group != g) {
                continue;
            }

            p = ngx_sprintf(keys, "psd:{fr:%*s}:%V",
                            (size_t) NGX_HTTP_PSD_FRAUD_DIGEST_LEN, tag,
                            &rules[i].suffix);
            argv[argc] = (const char *) keys;
            argvlen[argc++] = p - keys;
            keys = p;
        }

        n = argc;

        argv[argc] = "";
        argvlen[argc++] = 0;
        argv[argc] = (const char *) cap;
        argvlen[argc++] = ngx_sprintf(cap, "%d", PSD_RULE_DISTINCT_CAP) - cap;

        for (i = 0; i < nrules; i++) {
            if (rules[i].group != g) {
                continue;
            }

            argv[argc] = (rules[i].rule.agg == PSD_RULE_DISTINCT) ? "d"
                         : (rules[i].rule.agg == PSD_RULE_SUM) ? "s" : "c";
            argvlen[argc++] = 1;

            p = ngx_sprintf(keys, "%L", rules[i].rule.window);
            argv[argc] = (const char *) keys;
            argvlen[argc++] = p - keys;
            keys = p;

            val.len = 0;

            if (rules[i].operand
                && ngx_http_complex_value(r, rules[i].operand, &val)
                   != NGX_OK)
            {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            switch (rules[i].rule.agg) {

            case PSD_RULE_DISTINCT:
                if (val.len) {
                    ngx_http_psd_fraud_digest(members, val.data, val.len);
                    argv[argc] = (const char *) members;
                    argvlen[argc++] = NGX_HTTP_PSD_FRAUD_DIGEST_LEN;
                    members += NGX_HTTP_PSD_FRAUD_DIGEST_LEN;

                } else {
                    argv[argc] = "";
                    argvlen[argc++] = 0;
                }

                break;

            case PSD_RULE_SUM:
                /* amounts in minor units; anything else adds nothing */
                if (val.len == 0 || val.len > 15
                    || ngx_atoi(val.data, val.len) == NGX_ERROR)
                {
                    argv[argc] = "0";
                    argvlen[argc++] = 1;

                } else {
                    argv[argc] = (const char *) val.data;
                    argvlen[argc++] = val.len;
                }

                break;

            default:
                /*
                 * requests count here, and count($v) counts requests where
                 * $v is not empty; payment events come from the admin
                 * endpoint
                 */
                argv[argc] = (rules[i].rule.event == PSD_RULE_EVENT_REQUESTS
                              || (rules[i].rule.event == PSD_RULE_EVENT_NONE
                                  && val.len))
                             ? "1" : "0";
                argvlen[argc++] = 1;
            }
        }

        ctx->group_call[g] = call->ncmds;

        if (ngx_http_psd_redis_call_add_script(call,
                                               &ngx_http_psd_fraud_script,
                                               (int) n, argc, argv, argvlen)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ctx->first_blocklist = call->ncmds;

    bls = flcf->blocklists ? flcf->blocklists->elts : NULL;

    for (i = 0; flcf->blocklists && i < flcf->blocklists->nelts; i++) {

        if (ngx_http_complex_value(r, &bls[i].value, &val) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (val.len == 0) {
            rc = NGX_DECLINED;

        } else if (bls[i].list == NGX_HTTP_PSD_BL_IP) {
            rc = ngx_http_psd_fraud_add_ip_check(r, call, &val);

        } else {
            ngx_http_psd_fraud_digest(tag, val.data, val.len);
            p = ngx_sprintf(keys, "psd:{bl:%V}",
                            &ngx_http_psd_fraud_lists[bls[i].list]);

            argv[0] = "SISMEMBER";
            argvlen[0] = 9;
            argv[1] = (const char *) keys;
            argvlen[1] = p - keys;
            argv[2] = (const char *) tag;
            argvlen[2] = NGX_HTTP_PSD_FRAUD_DIGEST_LEN;

            rc = ngx_http_psd_redis_call_add(call, 3, argv, argvlen);
        }

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_DECLINED) {
            /* keep the reply positions: a PING stands in for the check */
            argv[0] = "PING";
            argvlen[0] = 4;

            if (ngx_http_psd_redis_call_add(call, 1, argv, argvlen)
                != NGX_OK)
            {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }
    }

    if (call->ncmds == 0) {
        ctx->done = 1;
        return NGX_DECLINED;
    }

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_fraud_checked, r)
        != NGX_OK)
    {
        ngx_http_psd_fraud_checked(call);
        return ngx_http_psd_fraud_finish(r, ctx);
    }

    ctx->waiting = 1;
    ngx_http_psd_redis_wait(r);

    return NGX_AGAIN;
}


static void
ngx_http_psd_fraud_decide(ngx_http_psd_fraud_ctx_t *ctx, ngx_uint_t decision,
    ngx_str_t *rule)
{
    /* allow wins over everything; otherwise the most severe action */

    if (ctx->decision == NGX_HTTP_PSD_FRAUD_ALLOW) {
        return;
    }

    if (decision == NGX_HTTP_PSD_FRAUD_ALLOW || decision > ctx->decision) {
        ctx->decision = decision;
        ctx->rule = *rule;
    }
}


static void
ngx_http_psd_fraud_checked(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    ngx_str_t                        name;
    ngx_uint_t                       g, i, k, closed, failed, nrules;
    redisReply                      *reply, *e;
    ngx_http_psd_fraud_ctx_t        *ctx;
    ngx_http_psd_fraud_rule_t       *rules;
    ngx_http_psd_fraud_loc_conf_t   *flcf;
    ngx_http_psd_fraud_blocklist_t  *bls;

    static ngx_uint_t  decisions[] = {
        0, NGX_HTTP_PSD_FRAUD_ALLOW, NGX_HTTP_PSD_FRAUD_REVIEW,
        NGX_HTTP_PSD_FRAUD_CHALLENGE, NGX_HTTP_PSD_FRAUD_BLOCK
    };

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_fraud_module);
    flcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_fraud_module);

    ctx->done = 1;

    nrules = flcf->rules ? flcf->rules->nelts : 0;
    rules = nrules ? flcf->rules->elts : NULL;
    closed = 0;
    failed = 0;

    for (g = 0; flcf->groups && g < flcf->groups->nelts; g++) {
        if (ctx->group_call[g] == NGX_CONF_UNSET_UINT) {
            continue;
        }

        reply = call->status == NGX_HTTP_PSD_REDIS_OK
                ? call->replies[ctx->group_call[g]] : NULL;

        k = 0;

        for (i = 0; i < nrules; i++) {
            if (rules[i].group != g) {
                continue;
            }

            e = (reply && reply->type == REDIS_REPLY_ARRAY
                 && k < reply->elements) ? reply->element[k] : NULL;
            k++;

            if (e == NULL || e->type != REDIS_REPLY_INTEGER) {
                failed = 1;

                if ((rules[i].failure_mode == NGX_CONF_UNSET_UINT
                     ? flcf->failure_mode : rules[i].failure_mode)
                    == NGX_HTTP_PSD_FAIL_CLOSED)
                {
                    closed = 1;
                }

                continue;
            }

            if (psd_rule_matches(&rules[i].rule, e->integer)) {
                ngx_http_psd_fraud_decide(ctx, decisions[rules[i].action],
                                          &rules[i].name);
            }
        }

        if (reply && reply->type == REDIS_REPLY_ERROR) {
            ngx_http_psd_log(NGX_LOG_ERR, r, 0,
                             "psd_fraud: redis answered \"%*s\"",
                             ngx_min(reply->len, 200), reply->str);
        }
    }

    bls = flcf->blocklists ? flcf->blocklists->elts : NULL;

    for (i = 0; flcf->blocklists && i < flcf->blocklists->nelts; i++) {
        reply = call->status == NGX_HTTP_PSD_REDIS_OK
                ? call->replies[ctx->first_blocklist + i] : NULL;

        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            failed = 1;
            closed |= (flcf->failure_mode == NGX_HTTP_PSD_FAIL_CLOSED);
            continue;
        }

        name.len = sizeof("blocklist_") - 1
                   + ngx_http_psd_fraud_lists[bls[i].list].len;
        name.data = ngx_pnalloc(r->pool, name.len);
        if (name.data == NULL) {
            continue;
        }

        ngx_sprintf(name.data, "blocklist_%V",
                    &ngx_http_psd_fraud_lists[bls[i].list]);

        if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) {
            ngx_http_psd_fraud_decide(ctx, NGX_HTTP_PSD_FRAUD_BLOCK, &name);
        }

        if (reply->type == REDIS_REPLY_ARRAY) {
            for (k = 0; k < reply->elements; k++) {
                if (reply->element[k]->type == REDIS_REPLY_INTEGER
                    && reply->element[k]->integer == 1)
                {
                    ngx_http_psd_fraud_decide(ctx, NGX_HTTP_PSD_FRAUD_BLOCK,
                                              &name);
                    break;
                }
            }
        }
    }

    if (failed && ctx->decision != NGX_HTTP_PSD_FRAUD_ALLOW
        && ctx->decision != NGX_HTTP_PSD_FRAUD_BLOCK)
    {
        if (closed) {
            ctx->decision = NGX_HTTP_PSD_FRAUD_ERROR;
            ctx->rc = NGX_HTTP_SERVICE_UNAVAILABLE;
            ngx_http_psd_count(FRAUD_FAIL_CLOSED);

        } else {
            ngx_http_psd_count(FRAUD_FAIL_OPEN);
            ngx_http_psd_log(NGX_LOG_WARN, r, 0,
                             "psd_fraud: redis %s, rules not evaluated "
                             "let the request through",
                             ngx_http_psd_redis_status_name(call->status));
        }
    }

    switch (ctx->decision) {

    case NGX_HTTP_PSD_FRAUD_ALLOW:
        ngx_http_psd_count(FRAUD_ALLOW);
        break;

    case NGX_HTTP_PSD_FRAUD_REVIEW:
        ngx_http_psd_count(FRAUD_REVIEW);
        break;

    case NGX_HTTP_PSD_FRAUD_CHALLENGE:
        ngx_http_psd_count(FRAUD_CHALLENGE);
        break;

    case NGX_HTTP_PSD_FRAUD_BLOCK:
        ngx_http_psd_count(FRAUD_BLOCK);
        ctx->rc = flcf->block_status;
        ngx_http_psd_log(NGX_LOG_INFO, r, 0,
                         "psd_fraud: blocked by rule \"%V\"", &ctx->rule);
        break;

    case NGX_HTTP_PSD_FRAUD_PASS:
        ngx_http_psd_count(FRAUD_PASS);
        break;
    }

    if (ctx->waiting) {
        ctx->waiting = 0;
        ngx_http_psd_redis_resume(r);
    }
}


static ngx_int_t
ngx_http_psd_fraud_finish(ngx_http_request_t *r, ngx_http_psd_fraud_ctx_t *ctx)
{
    u_char           *p;
    ngx_table_elt_t  *h;

    if (ctx->rc == NGX_HTTP_SERVICE_UNAVAILABLE) {
        return ngx_http_psd_finalize_in_phase(r,
                                        ngx_http_psd_send_unavailable(r, 1));
    }

    if (ctx->decision == NGX_HTTP_PSD_FRAUD_BLOCK) {
        /* the client learns no rule name: that would teach an attacker */
        return ngx_http_psd_finalize_in_phase(r,
                        ngx_http_psd_send_json_error(r, ctx->rc,
                                                     "payment_blocked",
                                                     NULL));
    }

    if ((ctx->decision == NGX_HTTP_PSD_FRAUD_REVIEW
         || ctx->decision == NGX_HTTP_PSD_FRAUD_CHALLENGE)
        && !ctx->header_set)
    {
        ctx->header_set = 1;

        /* for the application behind: it sees the header, the client not */

        h = ngx_list_push(&r->headers_in.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_pnalloc(r->pool, sizeof("challenge; rule=") + ctx->rule.len);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "X-PSD-Fraud");
        h->lowcase_key = (u_char *) "x-psd-fraud";
        h->value.data = p;
        h->value.len = ngx_sprintf(p, "%V; rule=%V",
                                &ngx_http_psd_fraud_decisions[ctx->decision],
                                &ctx->rule) - p;
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_psd_fraud_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_psd_fraud_ctx_t  *ctx;

    ctx = ngx_http_psd_ctx_get(r->main, &ngx_http_psd_fraud_module);

    if (ctx == NULL || ctx->decision == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    if (data == 0) {
        v->len = ngx_http_psd_fraud_decisions[ctx->decision].len;
        v->data = ngx_http_psd_fraud_decisions[ctx->decision].data;
        return NGX_OK;
    }

    if (ctx->rule.len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = ctx->rule.len;
    v->data = ctx->rule.data;

    return NGX_OK;
}


/*
 * The admin endpoint: payment outcomes feed the event counters, and the
 * block lists are kept.
 *   {"event": "payment_failed", "keys": {"remote_addr": "192.0.2.1", ...}}
 *   {"blocklist": "ip", "add": "192.0.2.0/24"}   (or "remove")
 */

static ngx_int_t
ngx_http_psd_fraud_admin_handler(ngx_http_request_t *r)
{
    ngx_http_psd_fraud_loc_conf_t  *flcf;

    flcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_fraud_module);

    return ngx_http_psd_read_post(r, &flcf->api_key,
                                  NGX_HTTP_PSD_FRAUD_BODY_MAX,
                                  ngx_http_psd_fraud_admin_body);
}


static ngx_int_t
ngx_http_psd_fraud_admin_event(ngx_http_request_t *r,
    ngx_http_psd_fraud_loc_conf_t *flcf, json_t *body,
    ngx_http_psd_redis_call_t *call)
{
    u_char                      *p, *buf;
    size_t                       len, argvlen[6];
    json_t                      *keys, *v;
    ngx_uint_t                   i, k, ok;
    const char                  *event, *argv[6];
    ngx_http_psd_fraud_rule_t   *rules;
    ngx_http_psd_fraud_group_t  *groups, *group;
    u_char                       tag[NGX_HTTP_PSD_FRAUD_DIGEST_LEN];
    u_char                       key[160];
    u_char                       window[NGX_INT64_LEN];
    u_char                       cap[NGX_INT_T_LEN];

    event = json_string_value(json_object_get(body, "event"));
    keys = json_object_get(body, "keys");

    if (event == NULL
        || (ngx_strcmp(event, "payment_failed") != 0
            && ngx_strcmp(event, "payment_succeeded") != 0))
    {
        return NGX_DECLINED;
    }

    if (!json_is_object(keys) || flcf->rules == NULL) {
        return NGX_DECLINED;
    }

    rules = flcf->rules->elts;
    groups = flcf->groups->elts;

    for (i = 0; i < flcf->rules->nelts; i++) {
        if (rules[i].rule.event == PSD_RULE_EVENT_NONE
            || ngx_strcmp(psd_rule_event_name(rules[i].rule.event), event)
               != 0)
        {
            continue;
        }

        /* the same tag a request with these variable values would get */

        group = &groups[rules[i].group];
        len = group->spec.len;
        ok = 1;

        for (k = 0; k < group->nkeys; k++) {
            v = json_object_get(keys, rules[i].rule.keys[k]);
            if (!json_is_string(v) || json_string_length(v) == 0) {
                ok = 0;
                break;
            }

            len += NGX_SIZE_T_LEN + 2 + json_string_length(v);
        }

        if (!ok) {
            continue;
        }

        buf = ngx_pnalloc(r->pool, len);
        if (buf == NULL) {
            return NGX_ERROR;
        }

        p = ngx_cpymem(buf, group->spec.data, group->spec.len);

        for (k = 0; k < group->nkeys; k++) {
            v = json_object_get(keys, rules[i].rule.keys[k]);
            p = ngx_sprintf(p, "\n%uz:%*s", json_string_length(v),
                            json_string_length(v), json_string_value(v));
        }

        ngx_http_psd_fraud_digest(tag, buf, p - buf);

        p = ngx_sprintf(key, "psd:{fr:%*s}:%V",
                        (size_t) NGX_HTTP_PSD_FRAUD_DIGEST_LEN, tag,
                        &rules[i].suffix);

        argv[0] = (const char *) key;
        argvlen[0] = p - key;
        argv[1] = "";
        argvlen[1] = 0;
        argv[2] = (const char *) cap;
        argvlen[2] = ngx_sprintf(cap, "%d", PSD_RULE_DISTINCT_CAP) - cap;
        argv[3] = "c";
        argvlen[3] = 1;
        argv[4] = (const char *) window;
        argvlen[4] = ngx_sprintf(window, "%L", rules[i].rule.window) - window;
        argv[5] = "1";
        argvlen[5] = 1;

        if (call->ncmds == call->nalloc
            || ngx_http_psd_redis_call_add_script(call,
                                                  &ngx_http_psd_fraud_script,
                                                  1, 6, argv, argvlen)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_psd_fraud_admin_blocklist(ngx_http_request_t *r, json_t *body,
    ngx_http_psd_redis_call_t *call)
{
    u_char       *p;
    size_t        argvlen[3], len;
    json_t       *v;
    psd_cidr_t    cidr;
    ngx_uint_t    i, list;
    const char   *name, *value, *argv[3];
    u_char        key[32];
    u_char        member[PSD_CIDR_TEXT_MAX + NGX_HTTP_PSD_FRAUD_DIGEST_LEN];

    name = json_string_value(json_object_get(body, "blocklist"));
    if (name == NULL) {
        return NGX_DECLINED;
    }

    list = 0;

    for (i = 1; i < 4; i++) {
        if (ngx_strcmp(name, ngx_http_psd_fraud_lists[i].data) == 0
            && ngx_strlen(name) == ngx_http_psd_fraud_lists[i].len)
        {
            list = i;
        }
    }

    argv[0] = "SADD";
    v = json_object_get(body, "add");

    if (v == NULL) {
        argv[0] = "SREM";
        v = json_object_get(body, "remove");
    }

    if (list == 0 || !json_is_string(v) || json_string_length(v) == 0
        || json_string_length(v) > 512)
    {
        return NGX_DECLINED;
    }

    value = json_string_value(v);
    len = json_string_length(v);

    if (list == NGX_HTTP_PSD_BL_IP) {
        /* a bare address is its own /32 or /128 */
        if (psd_cidr_parse(&cidr, value, len) != 0) {
            if (psd_ip_parse(&cidr.net, value, len) != 0) {
                return NGX_DECLINED;
            }

            cidr.prefix = (cidr.net.family == PSD_IP_V4) ? 32 : 128;
        }

        argvlen[2] = psd_cidr_format((char *) member, &cidr);

    } else {
        ngx_http_psd_fraud_digest(member, (u_char *) value, len);
        argvlen[2] = NGX_HTTP_PSD_FRAUD_DIGEST_LEN;
    }

    p = ngx_sprintf(key, "psd:{bl:%V}", &ngx_http_psd_fraud_lists[list]);

    argvlen[0] = 4;
    argv[1] = (const char *) key;
    argvlen[1] = p - key;
    argv[2] = (const char *) member;

    if (ngx_http_psd_redis_call_add(call, 3, argv, argvlen) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_psd_fraud_admin_body(ngx_http_request_t *r)
{
    json_t                         *body;
    ngx_int_t                       rc;
    const char                     *error;
    ngx_http_psd_redis_call_t      *call;
    ngx_http_psd_fraud_loc_conf_t  *flcf;

    flcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_fraud_module);

    rc = ngx_http_psd_body_json(r, NGX_HTTP_PSD_FRAUD_BODY_MAX,
                                (void **) &body, &error);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_psd_send_json_error(r, rc,
                                                                  error,
                                                                  NULL));
        return;
    }

    call = ngx_http_psd_redis_call_create(r, flcf->redis,
                                          flcf->rules
                                          ? flcf->rules->nelts + 1 : 1);
    if (call == NULL) {
        json_decref(body);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (json_object_get(body, "event")) {
        rc = ngx_http_psd_fraud_admin_event(r, flcf, body, call);

    } else {
        rc = ngx_http_psd_fraud_admin_blocklist(r, body, call);
    }

    json_decref(body);

    if (rc == NGX_ERROR) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (rc == NGX_DECLINED) {
        ngx_http_finalize_request(r, ngx_http_psd_send_json_error(r,
                                  NGX_HTTP_BAD_REQUEST, "invalid_field",
                                  "event|blocklist"));
        return;
    }

    if (call->ncmds == 0) {
        ngx_http_finalize_request(r, ngx_http_psd_send_json(r, NGX_HTTP_OK,
                                  (u_char *) "{\"recorded\":0}\n",
                                  sizeof("{\"recorded\":0}\n") - 1));
        return;
    }

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_fraud_admin_done, r)
        != NGX_OK)
    {
        ngx_http_finalize_request(r, ngx_http_psd_send_unavailable(r, 1));
        return;
    }

    ngx_http_psd_redis_wait(r);
}


static void
ngx_http_psd_fraud_admin_done(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    u_char            *body;
    size_t             len;
    ngx_int_t          rc;
    ngx_uint_t         i;
    ngx_connection_t  *c;

    c = r->connection;

    for (i = 0; i < call->ncmds; i++) {
        if (call->status != NGX_HTTP_PSD_REDIS_OK
            || call->replies[i]->type == REDIS_REPLY_ERROR)
        {
            rc = ngx_http_psd_send_unavailable(r, 1);
            goto done;
        }
    }

    ngx_http_psd_count(FRAUD_FEEDBACK);

    body = ngx_pnalloc(r->pool, sizeof("{\"recorded\":}\n") + NGX_INT_T_LEN);
    if (body == NULL) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;
        goto done;
    }

    len = ngx_sprintf(body, "{\"recorded\":%ui}\n", call->ncmds) - body;
    rc = ngx_http_psd_send_json(r, NGX_HTTP_OK, body, len);

done:

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}
