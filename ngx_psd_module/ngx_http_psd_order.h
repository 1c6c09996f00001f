
/*
 * Copyright (C) ngx_psd_module authors
 */


#ifndef _NGX_HTTP_PSD_ORDER_H_INCLUDED_
#define _NGX_HTTP_PSD_ORDER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_psd_module.h"


typedef struct {
    ngx_array_t                  *secrets;    /* psd_webhook_secret_t */
    time_t                        dedupe;
    ngx_flag_t                    pass;
    ngx_http_psd_redis_server_t  *redis;
} ngx_http_psd_order_webhook_t;


extern ngx_module_t  ngx_http_psd_order_module;


/* NGX_DECLINED unless the location has "psd_webhook carrier" */
ngx_int_t ngx_http_psd_order_carrier_conf(ngx_conf_t *cf,
    ngx_http_psd_order_webhook_t *wh);


#endif /* _NGX_HTTP_PSD_ORDER_H_INCLUDED_ */
