
/*
 * Copyright (C) ngx_psd_module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <openssl/crypto.h>
#include <jansson.h>

#include "ngx_http_psd_module.h"
#include "ngx_http_psd_redis.h"
#include "ngx_http_psd_metrics.h"
#include "psd_crypto.h"


static void *ngx_http_psd_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_psd_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_psd_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_psd_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_psd_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_psd_status_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_psd_init_process(ngx_cycle_t *cycle);
static void ngx_http_psd_exit_process(ngx_cycle_t *cycle);
static void ngx_http_psd_cleanse_secret(void *data);
static void ngx_http_psd_hmac_key_free(void *data);


ngx_conf_enum_t  ngx_http_psd_failure_modes[] = {
    { ngx_string("open"), NGX_HTTP_PSD_FAIL_OPEN },
    { ngx_string("closed"), NGX_HTTP_PSD_FAIL_CLOSED },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_psd_commands[] = {

    { ngx_string("psd_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_psd_redis_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_http_psd_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_loc_conf_t, status),
      NULL },

    { ngx_string("psd_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_psd_metrics_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_psd_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_psd_create_main_conf,         /* create main configuration */
    ngx_http_psd_init_main_conf,           /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_psd_create_loc_conf,          /* create location configuration */
    ngx_http_psd_merge_loc_conf            /* merge location configuration */
};


ngx_module_t  ngx_http_psd_module = {
    NGX_MODULE_V1,
    &ngx_http_psd_module_ctx,              /* module context */
    ngx_http_psd_commands,                 /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_psd_init_process,             /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_psd_exit_process,             /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static void *
ngx_http_psd_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_psd_main_conf_t  *pmcf;

    pmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_main_conf_t));
    if (pmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&pmcf->servers, cf->pool, 2,
                       sizeof(ngx_http_psd_redis_server_t *))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_array_init(&pmcf->scripts, cf->pool, 4,
                       sizeof(ngx_http_psd_redis_script_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return pmcf;
}


static char *
ngx_http_psd_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_psd_main_conf_t  *pmcf = conf;

    /*
     * The metrics zone always exists: every feature counts its outcomes
     * there, and the figures must survive a reload.
     */

    if (ngx_http_psd_metrics_init_zone(cf, pmcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_psd_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_psd_loc_conf_t  *plcf;

    plcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_loc_conf_t));
    if (plcf == NULL) {
        return NULL;
    }

    plcf->status = NGX_CONF_UNSET;
    plcf->metrics = NGX_CONF_UNSET_UINT;

    return plcf;
}


static char *
ngx_http_psd_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_psd_loc_conf_t  *prev = parent;
    ngx_http_psd_loc_conf_t  *conf = child;

    ngx_conf_merge_value(conf->status, prev->status, 0);
    ngx_conf_merge_uint_value(conf->metrics, prev->metrics, 0);

    return NGX_CONF_OK;
}


static char *
ngx_http_psd_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_loc_conf_t  *plcf = conf;

    char                      *rv;
    ngx_http_core_loc_conf_t  *clcf;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    if (plcf->status) {
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
        clcf->handler = ngx_http_psd_status_handler;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_psd_status_handler(ngx_http_request_t *r)
{
    size_t     len;
    u_char    *body, *p;
    ngx_int_t  rc;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_NOT_ALLOWED,
                                            "method_not_allowed", NULL);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    len = sizeof("{\"module\":\"ngx_psd_module\",\"version\":\"\","
                 "\"nginx\":\"\",\"pid\":,\"redis\":[]}\n") - 1
          + sizeof(NGX_HTTP_PSD_VERSION) - 1 + sizeof(NGINX_VERSION) - 1
          + NGX_INT_T_LEN + ngx_http_psd_redis_status_len(r);

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "{\"module\":\"ngx_psd_module\",\"version\":\""
                    NGX_HTTP_PSD_VERSION "\",\"nginx\":\"" NGINX_VERSION
                    "\",\"pid\":%P,\"redis\":[", ngx_pid);
    p = ngx_http_psd_redis_status_write(r, p);
    p = ngx_cpymem(p, "]}\n", 3);

    return ngx_http_psd_send_json(r, NGX_HTTP_OK, body, p - body);
}


ngx_int_t
ngx_http_psd_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len)
{
    return ngx_http_psd_send_body(r, status, "application/json", body, len);
}


ngx_int_t
ngx_http_psd_send_body(ngx_http_request_t *r, ngx_uint_t status,
    const char *content_type, u_char *body, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    r->headers_out.content_type.data = (u_char *) content_type;
    r->headers_out.content_type.len = ngx_strlen(content_type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.last_modified_time = -1;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = (len != 0);
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/*
 * Error bodies carry a stable machine-readable code; "field" names where in
 * the input the problem is, and never echoes the value (it may be a secret).
 */

ngx_int_t
ngx_http_psd_send_json_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *field)
{
    size_t   len;
    u_char  *body, *p;

    len = sizeof("{\"error\":\"\",\"field\":\"\"}\n") - 1 + ngx_strlen(code);
    if (field) {
        len += ngx_escape_json(NULL, (u_char *) field, ngx_strlen(field));
        len += ngx_strlen(field);
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "{\"error\":\"%s\"", code);

    if (field) {
        p = ngx_cpymem(p, ",\"field\":\"", sizeof(",\"field\":\"") - 1);
        p = (u_char *) ngx_escape_json(p, (u_char *) field,
                                       ngx_strlen(field));
        *p++ = '"';
    }

    *p++ = '}';
    *p++ = '\n';

    if (r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
    }

    ngx_http_discard_request_body(r);

    return ngx_http_psd_send_json(r, status, body, p - body);
}


ngx_int_t
ngx_http_psd_send_unavailable(ngx_http_request_t *r, time_t retry_after)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Retry-After");

    h->value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (h->value.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->value.len = ngx_sprintf(h->value.data, "%T", retry_after)
                   - h->value.data;

    return ngx_http_psd_send_json_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                        "backend_unavailable", NULL);
}


typedef struct {
    ngx_module_t                 *module;
    void                         *ctx;
} ngx_http_psd_ctx_holder_t;


static void
ngx_http_psd_ctx_cleanup(void *data)
{
    /* nothing to free: the holder marks where a context can be found */
}


void *
ngx_http_psd_ctx_create(ngx_http_request_t *r, ngx_module_t *module,
    size_t size)
{
    ngx_pool_cleanup_t         *cln;
    ngx_http_psd_ctx_holder_t  *holder;

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_psd_ctx_holder_t));
    if (cln == NULL) {
        return NULL;
    }

    holder = cln->data;
    holder->module = module;
    holder->ctx = ngx_pcalloc(r->pool, size);

    if (holder->ctx == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_psd_ctx_cleanup;

    ngx_http_set_ctx(r, holder->ctx, (*module));

    return holder->ctx;
}


void *
ngx_http_psd_ctx_get(ngx_http_request_t *r, ngx_module_t *module)
{
    void                       *ctx;
    ngx_pool_cleanup_t         *cln;
    ngx_http_psd_ctx_holder_t  *holder;

    ctx = ngx_http_get_module_ctx(r, (*module));

    if (ctx || !r->internal) {
        return ctx;
    }

    for (cln = r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler != ngx_http_psd_ctx_cleanup) {
            continue;
        }

        holder = cln->data;

        if (holder->module == module) {
            ngx_http_set_ctx(r, holder->ctx, (*module));
            return holder->ctx;
        }
    }

    return NULL;
}


/*
 * A phase handler that sent its own response (a JSON error) finalizes the
 * request itself: returning the output's rc would let the phases go on to
 * the content handler.
 */

ngx_int_t
ngx_http_psd_finalize_in_phase(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_http_finalize_request(r, rc);

    return NGX_DONE;
}


/*
 * Reads key material from a file at configuration time.  Trailing newlines
 * are not part of the secret (editors add them).  The copy is wiped when
 * the configuration that holds it is freed.
 */

ngx_int_t
ngx_http_psd_secret_file(ngx_conf_t *cf, ngx_str_t *name, size_t min_len,
    size_t max_len, ngx_str_t *secret)
{
    u_char              *buf;
    ssize_t              n;
    ngx_fd_t             fd;
    ngx_str_t            path, *wipe, *value;
    ngx_file_info_t      fi;
    ngx_pool_cleanup_t  *cln;

    value = cf->args->elts;
    path = *name;

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    fd = ngx_open_file(path.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot open secret file \"%V\" in \"%V\"",
                           name, &value[0]);
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot stat secret file \"%V\"", name);
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    if (ngx_file_size(&fi) > (off_t) (max_len + 2)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "secret file \"%V\" must hold %uz to %uz bytes",
                           name, min_len, max_len);
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    if (fi.st_mode & S_IROTH) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "secret file \"%V\" is readable by every user",
                           name);
    }

    buf = ngx_pnalloc(cf->pool, max_len + 2);
    if (buf == NULL) {
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, sizeof(ngx_str_t));
    if (cln == NULL) {
        ngx_close_file(fd);
        return NGX_ERROR;
    }

    wipe = cln->data;
    wipe->data = buf;
    wipe->len = max_len + 2;
    cln->handler = ngx_http_psd_cleanse_secret;

    n = ngx_read_fd(fd, buf, max_len + 2);
    ngx_close_file(fd);

    if (n == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "cannot read secret file \"%V\"", name);
        return NGX_ERROR;
    }

    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) {
        n--;
    }

    if ((size_t) n < min_len || (size_t) n > max_len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "secret file \"%V\" must hold %uz to %uz bytes",
                           name, min_len, max_len);
        return NGX_ERROR;
    }

    secret->data = buf;
    secret->len = n;

    return NGX_OK;
}


/*
 * ngx_conf_check_num_bounds() names neither the directive nor the value;
 * these do, for numbers and for times (high -1: no upper bound).
 */

static char *
ngx_http_psd_conf_bounds(ngx_conf_t *cf, ngx_conf_num_bounds_t *b,
    ngx_int_t n)
{
    ngx_str_t  *value = cf->args->elts;

    if (n >= b->low && (b->high == -1 || n <= b->high)) {
        return NGX_CONF_OK;
    }

    if (b->high == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\", it must be at "
                           "least %i", &value[1], &value[0], b->low);

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in \"%V\", it must be "
                           "between %i and %i", &value[1], &value[0],
                           b->low, b->high);
    }

    return NGX_CONF_ERROR;
}


char *
ngx_http_psd_conf_check_bounds(ngx_conf_t *cf, void *post, void *data)
{
    return ngx_http_psd_conf_bounds(cf, post, *(ngx_int_t *) data);
}


char *
ngx_http_psd_conf_check_sec_bounds(ngx_conf_t *cf, void *post, void *data)
{
    return ngx_http_psd_conf_bounds(cf, post, (ngx_int_t) *(time_t *) data);
}


/*
 * An HMAC key hashed into its SHA-256 states once, at configuration time,
 * so that a request does not pay for it; freed (wiped) with the cycle.
 */

psd_hmac_key_t *
ngx_http_psd_hmac_key(ngx_conf_t *cf, ngx_str_t *secret)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->data = psd_hmac_key_new(secret->data, secret->len);
    if (cln->data == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_psd_hmac_key_free;

    return cln->data;
}


static void
ngx_http_psd_hmac_key_free(void *data)
{
    psd_hmac_key_free(data);
}


/* an API key or reveal key from a file, into the ngx_str_t at cmd->offset */

char *
ngx_http_psd_conf_set_secret_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_str_t  *value, *secret;

    secret = (ngx_str_t *) ((char *) conf + cmd->offset);

    if (secret->data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_http_psd_secret_file(cf, &value[1], 16, 512, secret) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_psd_add_variables(ngx_conf_t *cf, ngx_http_variable_t *vars)
{
    ngx_http_variable_t  *var, *v;

    for (v = vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


ngx_table_elt_t *
ngx_http_psd_header_in(ngx_http_request_t *r, const char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/*
 * Renames request headers named "name" (or starting with it, with prefix
 * set) to "X-Client-<name>": what the application reads under X-PSD-* then
 * comes from us alone.  Elements are renamed, not removed: upstream
 * modules write every element of the list, and nginx points into it for
 * the headers it knows, so elements must not move.
 */

ngx_int_t
ngx_http_psd_headers_in_remove(ngx_http_request_t *r, const char *name,
    ngx_uint_t prefix)
{
    u_char           *key, *lowcase;
    size_t            len;
    ngx_uint_t        i, k;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);

    for (part = &r->headers_in.headers.part; part; part = part->next) {
        h = part->elts;

        for (i = 0; i < part->nelts; i++) {
            if (!(prefix ? h[i].key.len >= len : h[i].key.len == len)
                || ngx_strncasecmp(h[i].key.data, (u_char *) name, len) != 0)
            {
                continue;
            }

            key = ngx_pnalloc(r->pool, 2 * (h[i].key.len + 9));
            if (key == NULL) {
                return NGX_ERROR;
            }

            lowcase = key + h[i].key.len + 9;

            ngx_memcpy(key, "X-Client-", 9);
            ngx_memcpy(key + 9, h[i].key.data, h[i].key.len);

            h[i].key.data = key;
            h[i].key.len += 9;
            h[i].hash = 0;

            for (k = 0; k < h[i].key.len; k++) {
                lowcase[k] = ngx_tolower(key[k]);
                h[i].hash = ngx_hash(h[i].hash, lowcase[k]);
            }

            h[i].lowcase_key = lowcase;
        }
    }

    return NGX_OK;
}


/* "Authorization: Bearer <key>", compared in constant time */

ngx_uint_t
ngx_http_psd_bearer_ok(ngx_http_request_t *r, ngx_str_t *key)
{
    ngx_str_t  *auth;

    if (r->headers_in.authorization == NULL || key->len == 0) {
        return 0;
    }

    auth = &r->headers_in.authorization->value;

    if (auth->len != sizeof("Bearer ") - 1 + key->len
        || ngx_strncasecmp(auth->data, (u_char *) "Bearer ", 7) != 0)
    {
        return 0;
    }

    return psd_ct_equal(auth->data + 7, key->data, key->len);
}


/*
 * The start of every JSON endpoint: POST only, the bearer key when one is
 * given, and a small body read into memory (never spooled to a temporary
 * file: it may hold secrets).  Returns what the content handler returns.
 */

ngx_int_t
ngx_http_psd_read_post(ngx_http_request_t *r, ngx_str_t *api_key, off_t max,
    ngx_http_client_body_handler_pt post_handler)
{
    ngx_int_t  rc;

    if (r->method != NGX_HTTP_POST) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_NOT_ALLOWED,
                                            "method_not_allowed", NULL);
    }

    if (api_key && !ngx_http_psd_bearer_ok(r, api_key)) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_UNAUTHORIZED,
                                            "unauthorized", NULL);
    }

    if (r->headers_in.content_length_n > max) {
        return ngx_http_psd_send_json_error(r,
                                            NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                            "body_too_large", NULL);
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, post_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/*
 * A request body that was read into memory, in one buffer.  NGX_OK, or an
 * HTTP status with a stable error code in *error.
 */

ngx_int_t
ngx_http_psd_body_bytes(ngx_http_request_t *r, size_t max, u_char **data,
    size_t *len, const char **error)
{
    u_char       *buf, *p;
    size_t        n;
    ngx_chain_t  *cl;

    n = 0;

    if (r->request_body && r->request_body->temp_file) {
        *error = "body_too_large";
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    for (cl = r->request_body ? r->request_body->bufs : NULL;
         cl;
         cl = cl->next)
    {
        if (cl->buf->in_file) {
            *error = "body_too_large";
            return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
        }

        n += cl->buf->last - cl->buf->pos;
    }

    if (n > max) {
        *error = "body_too_large";
        return NGX_HTTP_REQUEST_ENTITY_TOO_LARGE;
    }

    buf = ngx_pnalloc(r->pool, n + 1);
    if (buf == NULL) {
        *error = "internal_error";
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = buf;

    for (cl = r->request_body ? r->request_body->bufs : NULL;
         cl;
         cl = cl->next)
    {
        if (cl->buf->last > cl->buf->pos) {
            p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
        }
    }

    *p = '\0';
    *data = buf;
    *len = n;

    return NGX_OK;
}


/*
 * Starts reading a signed body (webhooks) from a phase handler: POST only,
 * one memory buffer, never a temporary file.  The post handler runs the
 * phases again once the body is in.
 */

ngx_int_t
ngx_http_psd_read_signed_body(ngx_http_request_t *r,
    ngx_http_client_body_handler_pt post_handler)
{
    ngx_int_t                  rc;
    ngx_http_core_loc_conf_t  *clcf;

    if (r->method != NGX_HTTP_POST) {
        return ngx_http_psd_finalize_in_phase(r,
                   ngx_http_psd_send_json_error(r, NGX_HTTP_NOT_ALLOWED,
                                                "method_not_allowed", NULL));
    }

    /* what would not fit the memory buffer is never read to a file */

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (r->headers_in.content_length_n
        >= (off_t) clcf->client_body_buffer_size)
    {
        return ngx_http_psd_finalize_in_phase(r,
                   ngx_http_psd_send_json_error(r,
                                          NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                          "body_too_large", NULL));
    }

    /* the raw body must stay in memory: it is what was signed */

    r->request_body_in_single_buf = 1;
    r->request_body_in_persistent_file = 0;

    rc = ngx_http_read_client_request_body(r, post_handler);

    if (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    /*
     * The read's reference is given back at once, as the mirror module
     * does: a read that fails later closes the request as nginx expects.
     */

    ngx_http_finalize_request(r, NGX_DONE);

    return NGX_DONE;
}


/*
 * A small JSON object from a request body that was read into memory.
 * NGX_OK with *json (the caller decrefs it), or an HTTP status with a
 * stable error code in *error.
 */

ngx_int_t
ngx_http_psd_body_json(ngx_http_request_t *r, size_t max, void **json,
    const char **error)
{
    u_char        *buf;
    size_t         len;
    json_t        *j;
    ngx_int_t      rc;
    json_error_t   err;

    *json = NULL;

    rc = ngx_http_psd_body_bytes(r, max, &buf, &len, error);
    if (rc != NGX_OK) {
        return rc;
    }

    j = json_loadb((const char *) buf, len, JSON_REJECT_DUPLICATES, &err);

    if (j == NULL || !json_is_object(j)) {
        if (j) {
            json_decref(j);
        }

        *error = "invalid_json";
        return NGX_HTTP_BAD_REQUEST;
    }

    *json = j;

    return NGX_OK;
}


static void
ngx_http_psd_cleanse_secret(void *data)
{
    ngx_str_t  *wipe = data;

    OPENSSL_cleanse(wipe->data, wipe->len);
}


static ngx_int_t
ngx_http_psd_init_process(ngx_cycle_t *cycle)
{
    return ngx_http_psd_redis_init_process(cycle);
}


static void
ngx_http_psd_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_psd_redis_exit_process(cycle);
    psd_crypto_cleanup();
}
