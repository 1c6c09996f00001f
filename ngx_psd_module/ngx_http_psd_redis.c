
/*
 * Copyright (C) ngx_psd_module authors
 */


#include "ngx_http_psd_redis.h"


char *
ngx_http_psd_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_psd_redis_init_process(ngx_cycle_t *cycle)
{
    return NGX_OK;
}


void
ngx_http_psd_redis_exit_process(ngx_cycle_t *cycle)
{
}


size_t
ngx_http_psd_redis_status_len(ngx_http_request_t *r)
{
    return 0;
}


u_char *
ngx_http_psd_redis_status_write(ngx_http_request_t *r, u_char *p)
{
    return p;
}
