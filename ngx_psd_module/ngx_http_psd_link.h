
/*
 * Copyright (C) ngx_psd_module authors
 */


#ifndef _NGX_HTTP_PSD_LINK_H_INCLUDED_
#define _NGX_HTTP_PSD_LINK_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


#include "psd_link.h"


extern ngx_module_t  ngx_http_psd_link_module;


ngx_int_t ngx_http_psd_link_keys(ngx_http_request_t *r,
    psd_link_conf_t *lconf);


/* the link keys' purpose keys (psd_link_purpose_key()), under their ids */
typedef struct {
    psd_link_key_t               *keys;
    size_t                        nkeys;
    psd_link_key_t               *sign;       /* sign_kid's, or the signer */
} ngx_http_psd_link_keyring_t;

ngx_http_psd_link_keyring_t *ngx_http_psd_link_purpose_keys(ngx_conf_t *cf,
    const char *purpose, ngx_str_t *sign_kid);


#endif /* _NGX_HTTP_PSD_LINK_H_INCLUDED_ */
