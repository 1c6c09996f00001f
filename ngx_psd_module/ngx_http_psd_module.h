
/*
 * Copyright (C) ngx_psd_module authors
 */


#ifndef _NGX_HTTP_PSD_MODULE_H_INCLUDED_
#define _NGX_HTTP_PSD_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#define NGX_HTTP_PSD_VERSION  "0.1.0"


#ifndef NGX_HTTP_GONE
#define NGX_HTTP_GONE             410
#endif


/* failure modes shared by every feature that needs Redis */
#define NGX_HTTP_PSD_FAIL_OPEN    1
#define NGX_HTTP_PSD_FAIL_CLOSED  2
#define NGX_HTTP_PSD_FAIL_LOCAL   3


typedef struct ngx_http_psd_redis_server_s  ngx_http_psd_redis_server_t;


typedef struct {
    ngx_array_t                   servers;  /* ngx_http_psd_redis_server_t * */
    ngx_array_t                   scripts;  /* ngx_http_psd_redis_script_t * */
    ngx_shm_zone_t               *shm_zone;
    ngx_uint_t                    status_used;
    ngx_array_t                  *queues;   /* ngx_str_t: ticket queues */
} ngx_http_psd_main_conf_t;


typedef struct {
    ngx_flag_t                    status;
    ngx_uint_t                    metrics;
} ngx_http_psd_loc_conf_t;


extern ngx_module_t  ngx_http_psd_module;
extern ngx_conf_enum_t  ngx_http_psd_failure_modes[];


ngx_int_t ngx_http_psd_send_json_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *field);
ngx_int_t ngx_http_psd_send_json(ngx_http_request_t *r, ngx_uint_t status,
    u_char *body, size_t len);
ngx_int_t ngx_http_psd_send_body(ngx_http_request_t *r, ngx_uint_t status,
    const char *content_type, u_char *body, size_t len);
ngx_int_t ngx_http_psd_send_unavailable(ngx_http_request_t *r,
    time_t retry_after);
ngx_int_t ngx_http_psd_finalize_in_phase(ngx_http_request_t *r,
    ngx_int_t rc);
/*
 * Logs about a request without nginx's usual context: the request line may
 * carry a link signature or a token, which must not reach the logs.
 */
#define ngx_http_psd_log(level, r, err, fmt, ...)                            \
    if ((r)->connection->log->log_level >= level) {                          \
        ngx_log_handler_pt  psd_handler_ = (r)->connection->log->handler;    \
        (r)->connection->log->handler = NULL;                                \
        ngx_log_error(level, (r)->connection->log, err,                      \
                      fmt ", client: %V", __VA_ARGS__,                       \
                      &(r)->connection->addr_text);                          \
        (r)->connection->log->handler = psd_handler_;                        \
    }

/*
 * Module contexts that survive internal redirects (error_page, try_files,
 * X-Accel-Redirect), which clear ordinary ones: a feature decides once per
 * client request and its variables still read right in the log phase.
 */
void *ngx_http_psd_ctx_create(ngx_http_request_t *r, ngx_module_t *module,
    size_t size);
void *ngx_http_psd_ctx_get(ngx_http_request_t *r, ngx_module_t *module);

ngx_int_t ngx_http_psd_add_variables(ngx_conf_t *cf,
    ngx_http_variable_t *vars);
char *ngx_http_psd_conf_check_bounds(ngx_conf_t *cf, void *post, void *data);
char *ngx_http_psd_conf_check_sec_bounds(ngx_conf_t *cf, void *post,
    void *data);
char *ngx_http_psd_conf_set_secret_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_table_elt_t *ngx_http_psd_header_in(ngx_http_request_t *r,
    const char *name);
ngx_int_t ngx_http_psd_headers_in_remove(ngx_http_request_t *r,
    const char *name, ngx_uint_t prefix);
ngx_uint_t ngx_http_psd_bearer_ok(ngx_http_request_t *r, ngx_str_t *key);
ngx_int_t ngx_http_psd_read_signed_body(ngx_http_request_t *r,
    ngx_http_client_body_handler_pt post_handler);
ngx_int_t ngx_http_psd_read_post(ngx_http_request_t *r, ngx_str_t *api_key,
    off_t max, ngx_http_client_body_handler_pt post_handler);
ngx_int_t ngx_http_psd_body_bytes(ngx_http_request_t *r, size_t max,
    u_char **data, size_t *len, const char **error);
ngx_int_t ngx_http_psd_body_json(ngx_http_request_t *r, size_t max,
    void **json, const char **error);

ngx_int_t ngx_http_psd_secret_file(ngx_conf_t *cf, ngx_str_t *name,
    size_t min_len, size_t max_len, ngx_str_t *secret);
struct psd_hmac_key_s *ngx_http_psd_hmac_key(ngx_conf_t *cf,
    ngx_str_t *secret);


#endif /* _NGX_HTTP_PSD_MODULE_H_INCLUDED_ */
