
/*
 * Copyright (C) ngx_psd_module authors
 */


#ifndef _NGX_HTTP_PSD_REDIS_H_INCLUDED_
#define _NGX_HTTP_PSD_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_psd_module.h"


struct ngx_http_psd_redis_server_s {
    ngx_str_t                     name;
};


char *ngx_http_psd_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_psd_redis_init_process(ngx_cycle_t *cycle);
void ngx_http_psd_redis_exit_process(ngx_cycle_t *cycle);
size_t ngx_http_psd_redis_status_len(ngx_http_request_t *r);
u_char *ngx_http_psd_redis_status_write(ngx_http_request_t *r, u_char *p);


#endif /* _NGX_HTTP_PSD_REDIS_H_INCLUDED_ */
