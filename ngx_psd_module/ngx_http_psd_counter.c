
/*
 * Copyright (C) ngx_psd_module authors
 *
 * psd_counter: a location that counts hits per key in Redis, shared by all
 * nodes (INCR and EXPIRE in one write), and answers the count as JSON.
 * The smallest feature on the Redis client: it shows the failure modes and
 * is what util/bench measures against lua-resty-redis.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_psd_module.h"
#include "ngx_http_psd_redis.h"
#include "ngx_http_psd_counter.h"


typedef struct {
    ngx_http_complex_value_t     *key;
    time_t                        ttl;
    ngx_str_t                     redis_name;
    ngx_http_psd_redis_server_t  *redis;
    ngx_uint_t                    failure_mode;
} ngx_http_psd_counter_loc_conf_t;


static void *ngx_http_psd_counter_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_psd_counter_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_psd_counter(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_psd_counter_handler(ngx_http_request_t *r);
static void ngx_http_psd_counter_done(ngx_http_psd_redis_call_t *call);
static ngx_int_t ngx_http_psd_counter_respond(ngx_http_request_t *r,
    ngx_http_psd_redis_call_t *call);


static ngx_command_t  ngx_http_psd_counter_commands[] = {

    { ngx_string("psd_counter"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_psd_counter,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_psd_counter_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_psd_counter_create_loc_conf,  /* create location configuration */
    ngx_http_psd_counter_merge_loc_conf    /* merge location configuration */
};


ngx_module_t  ngx_http_psd_counter_module = {
    NGX_MODULE_V1,
    &ngx_http_psd_counter_module_ctx,      /* module context */
    ngx_http_psd_counter_commands,         /* module directives */
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


static void *
ngx_http_psd_counter_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_psd_counter_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_counter_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->key = NULL;
     *     conf->redis_name = { 0, NULL };
     *     conf->redis = NULL;
     */

    conf->ttl = NGX_CONF_UNSET;
    conf->failure_mode = NGX_CONF_UNSET_UINT;

    return conf;
}


static char *
ngx_http_psd_counter_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_psd_counter_loc_conf_t  *conf = child;

    if (conf->key == NULL) {
        return NGX_CONF_OK;
    }

    ngx_conf_merge_value(conf->ttl, NGX_CONF_UNSET, 0);
    ngx_conf_merge_uint_value(conf->failure_mode, NGX_CONF_UNSET_UINT,
                              NGX_HTTP_PSD_FAIL_CLOSED);

    return ngx_http_psd_redis_conf_server(cf, &conf->redis_name,
                                          &conf->redis);
}


static char *
ngx_http_psd_counter(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_counter_loc_conf_t  *pclcf = conf;

    ngx_str_t                         *value, v;
    ngx_uint_t                         i;
    ngx_conf_enum_t                   *e;
    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_compile_complex_value_t   ccv;

    if (pclcf->key) {
        return "is duplicate";
    }

    value = cf->args->elts;

    pclcf->key = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (pclcf->key == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = pclcf->key;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "ttl=", 4) == 0) {
            v.data = value[i].data + 4;
            v.len = value[i].len - 4;

            pclcf->ttl = ngx_parse_time(&v, 1);
            if (pclcf->ttl == (time_t) NGX_ERROR || pclcf->ttl == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "redis=", 6) == 0) {
            pclcf->redis_name.data = value[i].data + 6;
            pclcf->redis_name.len = value[i].len - 6;
            continue;
        }

        if (ngx_strncmp(value[i].data, "failure_mode=", 13) == 0) {
            v.data = value[i].data + 13;
            v.len = value[i].len - 13;

            for (e = ngx_http_psd_failure_modes; e->name.len; e++) {
                if (e->name.len == v.len
                    && ngx_strncmp(e->name.data, v.data, v.len) == 0)
                {
                    pclcf->failure_mode = e->value;
                    break;
                }
            }

            if (e->name.len == 0) {
                goto invalid;
            }

            continue;
        }

        goto invalid;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_psd_counter_handler;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"%V\"", &value[i],
                       &cmd->name);
    return NGX_CONF_ERROR;
}


static ngx_int_t
ngx_http_psd_counter_handler(ngx_http_request_t *r)
{
    u_char                           *p;
    size_t                            argvlen[3];
    ngx_int_t                         rc;
    ngx_str_t                         key, rkey;
    const char                       *argv[3];
    u_char                            ttl[NGX_TIME_T_LEN];
    ngx_http_psd_redis_call_t        *call;
    ngx_http_psd_counter_loc_conf_t  *pclcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD|NGX_HTTP_POST))) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_NOT_ALLOWED,
                                            "method_not_allowed", NULL);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    pclcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_counter_module);

    if (ngx_http_complex_value(r, pclcf->key, &key) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (key.len == 0 || key.len > 512) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_key", NULL);
    }

    /* one hash tag per counter: both commands land on one cluster node */

    rkey.len = sizeof("psd:{cnt:}") - 1 + key.len;
    rkey.data = ngx_pnalloc(r->pool, rkey.len);
    if (rkey.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_cpymem(rkey.data, "psd:{cnt:", sizeof("psd:{cnt:") - 1);
    p = ngx_cpymem(p, key.data, key.len);
    *p = '}';

    call = ngx_http_psd_redis_call_create(r, pclcf->redis, 2);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = "INCR";
    argvlen[0] = 4;
    argv[1] = (const char *) rkey.data;
    argvlen[1] = rkey.len;

    if (ngx_http_psd_redis_call_add(call, 2, argv, argvlen) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (pclcf->ttl) {
        argv[0] = "EXPIRE";
        argvlen[0] = 6;
        argv[2] = (const char *) ttl;
        argvlen[2] = ngx_sprintf(ttl, "%T", pclcf->ttl) - ttl;

        if (ngx_http_psd_redis_call_add(call, 3, argv, argvlen) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_counter_done, r)
        != NGX_OK)
    {
        return ngx_http_psd_counter_respond(r, call);
    }

    r->main->count++;

    ngx_http_psd_redis_wait(r);

    return NGX_DONE;
}


static void
ngx_http_psd_counter_done(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    ngx_connection_t  *c;

    /* finalizing may free the request: keep its connection at hand */
    c = r->connection;

    ngx_http_finalize_request(r, ngx_http_psd_counter_respond(r, call));
    ngx_http_run_posted_requests(c);
}


static ngx_int_t
ngx_http_psd_counter_respond(ngx_http_request_t *r,
    ngx_http_psd_redis_call_t *call)
{
    u_char                           *body;
    size_t                            len;
    redisReply                       *reply;
    ngx_http_psd_counter_loc_conf_t  *pclcf;

    pclcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_counter_module);

    reply = call->status == NGX_HTTP_PSD_REDIS_OK ? call->replies[0] : NULL;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {

        if (reply && reply->type == REDIS_REPLY_ERROR) {
            ngx_http_psd_log(NGX_LOG_ERR, r, 0,
                             "psd_counter: redis answered \"%*s\"",
                             ngx_min(reply->len, 200), reply->str);
        }

        if (pclcf->failure_mode == NGX_HTTP_PSD_FAIL_OPEN) {
            ngx_http_psd_log(NGX_LOG_WARN, r, 0,
                             "psd_counter: redis %s, failing open",
                             ngx_http_psd_redis_status_name(call->status));
            body = (u_char *) "{\"count\":null}\n";
            return ngx_http_psd_send_json(r, NGX_HTTP_OK, body,
                                          sizeof("{\"count\":null}\n") - 1);
        }

        return ngx_http_psd_send_unavailable(r, 1);
    }

    body = ngx_pnalloc(r->pool, sizeof("{\"count\":}\n") + NGX_INT64_LEN);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_sprintf(body, "{\"count\":%L}\n", reply->integer) - body;

    return ngx_http_psd_send_json(r, NGX_HTTP_OK, body, len);
}
