
/*
 * Copyright (C) ngx_psd_module authors
 */


#ifndef _NGX_HTTP_PSD_CARRIER_H_INCLUDED_
#define _NGX_HTTP_PSD_CARRIER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <hiredis/hiredis.h>


extern ngx_module_t  ngx_http_psd_carrier_module;


/*
 * The order status views' "delivery" member (a jansson object added to
 * out), from the order's hash (HGETALL) and, for staff, its timeline
 * (XREVRANGE, NULL otherwise); nothing when no carrier event arrived.
 */
void ngx_http_psd_carrier_status(void *out, redisReply *hash,
    redisReply *events, ngx_uint_t staff);


#endif /* _NGX_HTTP_PSD_CARRIER_H_INCLUDED_ */
