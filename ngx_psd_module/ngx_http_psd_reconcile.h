
/*
 * Copyright (C) ngx_psd_module authors
 */


#ifndef _NGX_HTTP_PSD_RECONCILE_H_INCLUDED_
#define _NGX_HTTP_PSD_RECONCILE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_psd_redis.h"


/* commands ngx_http_psd_reconcile_index() may add to a webhook's call */
#define NGX_HTTP_PSD_RECONCILE_INDEX_CMDS  4


extern ngx_module_t  ngx_http_psd_reconcile_module;


/*
 * The webhook's side: adds the reconciliation index writes of a payment
 * event (paid, refunded, chargeback; nothing for other kinds) to the
 * webhook's call, after the order's script; and tells, once the call is
 * done, whether they were written (NGX_OK) or the delivery must be
 * answered 503 so that the gateway retries it (NGX_ERROR).
 */
ngx_int_t ngx_http_psd_reconcile_index(ngx_http_request_t *r,
    ngx_http_psd_redis_call_t *call, const char *order, ngx_str_t *kind,
    int64_t at);
ngx_int_t ngx_http_psd_reconcile_indexed(ngx_http_request_t *r,
    ngx_http_psd_redis_call_t *call, ngx_uint_t first);


#endif /* _NGX_HTTP_PSD_RECONCILE_H_INCLUDED_ */
