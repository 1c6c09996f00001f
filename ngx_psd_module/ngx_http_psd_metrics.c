
/*
 * Copyright (C) ngx_psd_module authors
 */


#include "ngx_http_psd_metrics.h"


char *
ngx_http_psd_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_psd_metrics_init_zone(ngx_conf_t *cf, ngx_http_psd_main_conf_t *pmcf)
{
    return NGX_OK;
}
