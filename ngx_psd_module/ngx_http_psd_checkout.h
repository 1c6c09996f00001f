
/*
 * Copyright (C) ngx_psd_module authors
 */


#ifndef _NGX_HTTP_PSD_CHECKOUT_H_INCLUDED_
#define _NGX_HTTP_PSD_CHECKOUT_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_psd_redis.h"


#define NGX_HTTP_PSD_CHECKOUT_SESSION_LEN  22


extern ngx_module_t  ngx_http_psd_checkout_module;


/* the request's checkout session (22 characters), or NULL */
u_char *ngx_http_psd_checkout_session(ngx_http_request_t *r);

ngx_int_t ngx_http_psd_checkout_tokenized(ngx_http_request_t *r,
    ngx_http_psd_redis_call_t *call);
ngx_int_t ngx_http_psd_checkout_idempotency(ngx_http_request_t *r,
    u_char *body, size_t len, ngx_str_t *hmac_key);


#endif /* _NGX_HTTP_PSD_CHECKOUT_H_INCLUDED_ */
