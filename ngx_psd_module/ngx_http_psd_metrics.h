
/*
 * Copyright (C) ngx_psd_module authors
 */


#ifndef _NGX_HTTP_PSD_METRICS_H_INCLUDED_
#define _NGX_HTTP_PSD_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_psd_module.h"


char *ngx_http_psd_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_psd_metrics_init_zone(ngx_conf_t *cf,
    ngx_http_psd_main_conf_t *pmcf);


#endif /* _NGX_HTTP_PSD_METRICS_H_INCLUDED_ */
