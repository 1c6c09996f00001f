
/*
 * Copyright (C) ngx_psd_module authors
 */


#ifndef _NGX_HTTP_PSD_REDIS_H_INCLUDED_
#define _NGX_HTTP_PSD_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <hiredis/hiredis.h>

#include "ngx_http_psd_module.h"


/* outcome of a call, in call->status */
#define NGX_HTTP_PSD_REDIS_OK           0
#define NGX_HTTP_PSD_REDIS_TIMEOUT      1
#define NGX_HTTP_PSD_REDIS_ERROR        2    /* connection lost mid-call */
#define NGX_HTTP_PSD_REDIS_UNAVAILABLE  3    /* down or overloaded: not sent */

/* what a server name stands for, in server->mode */
#define NGX_HTTP_PSD_REDIS_SINGLE       0
#define NGX_HTTP_PSD_REDIS_CLUSTER      1
#define NGX_HTTP_PSD_REDIS_SENTINEL     2


typedef struct ngx_http_psd_redis_conn_s  ngx_http_psd_redis_conn_t;
typedef struct ngx_http_psd_redis_call_s  ngx_http_psd_redis_call_t;
typedef struct ngx_http_psd_redis_slot_s  ngx_http_psd_redis_slot_t;
typedef struct ngx_http_psd_redis_topo_s  ngx_http_psd_redis_topo_t;

typedef void (*ngx_http_psd_redis_handler_pt)(ngx_http_psd_redis_call_t *call);


struct ngx_http_psd_redis_server_s {
    ngx_str_t                     name;
    ngx_str_t                     target;     /* as written, for logs */
    ngx_str_t                     host;       /* what a certificate names */
    ngx_addr_t                   *addrs;      /* cluster seeds, sentinels */
    ngx_uint_t                    naddrs;

    ngx_uint_t                    mode;
    ngx_str_t                     master;     /* the name sentinels know */
    ngx_str_t                     sentinel_password;

    ngx_str_t                     user;
    ngx_str_t                     password;
    ngx_int_t                     db;

    ngx_msec_t                    connect_timeout;
    ngx_msec_t                    timeout;
    ngx_uint_t                    max_pending;
    size_t                        max_reply;

    ngx_uint_t                    index;      /* in the metrics zone */

#if (NGX_SSL)
    ngx_ssl_t                    *ssl;
    ngx_flag_t                    tls_verify;
    ngx_str_t                     tls_trusted_certificate;
    ngx_str_t                     tls_server_name;
#endif

    ngx_http_psd_redis_conn_t    *conn;       /* this worker's connection */
    ngx_http_psd_redis_topo_t    *topo;       /* cluster nodes, sentinels */
    time_t                        logged;
};


/*
 * A Lua script the module runs with EVALSHA.  Features declare them as
 * static data and register them at configuration time; every connection
 * loads them right after its handshake and again after NOSCRIPT.
 */

typedef struct {
    const char                   *name;
    const char                   *body;
    char                          sha1[41];
} ngx_http_psd_redis_script_t;


/*
 * A call is one request's batch of commands: they go out in one write,
 * pipelined with other requests' commands on the worker's connection, and
 * the handler runs once every reply has arrived, or the deadline passed,
 * or the connection failed.  A call belongs to its request's pool; when the
 * pool goes away first, the call is detached and late replies are dropped.
 */

struct ngx_http_psd_redis_call_s {
    ngx_http_request_t           *request;    /* NULL: fire and forget */
    ngx_pool_t                   *pool;
    ngx_http_psd_redis_server_t  *server;

    ngx_http_psd_redis_handler_pt handler;
    void                         *data;

    ngx_uint_t                    status;
    ngx_uint_t                    ncmds;
    ngx_uint_t                    nalloc;
    ngx_uint_t                    nreplies;
    redisReply                  **replies;
    ngx_http_psd_redis_slot_t   **slots;
    ngx_http_psd_redis_script_t **scripts;
    ngx_http_psd_redis_conn_t   **conns;      /* where each command goes */
    ngx_int_t                    *keyslots;   /* < 0: the command has no key */

    char                        **cmds;       /* formatted, until sent */
    size_t                       *lens;

    ngx_event_t                   timer;
    ngx_msec_t                    started;
    ngx_queue_t                   wait;       /* until the topology is known */

    unsigned                      sent:1;
    unsigned                      done:1;
    unsigned                      waiting:1;
};


char *ngx_http_psd_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_psd_redis_conf_server(ngx_conf_t *cf, ngx_str_t *name,
    ngx_http_psd_redis_server_t **server);
ngx_int_t ngx_http_psd_redis_conf_server_optional(ngx_conf_t *cf,
    ngx_http_psd_redis_server_t **server);
ngx_int_t ngx_http_psd_redis_register_script(ngx_conf_t *cf,
    ngx_http_psd_redis_script_t *script);

ngx_http_psd_redis_call_t *ngx_http_psd_redis_call_create(
    ngx_http_request_t *r, ngx_http_psd_redis_server_t *server,
    ngx_uint_t ncmds);
ngx_int_t ngx_http_psd_redis_call_add(ngx_http_psd_redis_call_t *call,
    int argc, const char **argv, const size_t *argvlen);
ngx_int_t ngx_http_psd_redis_call_add_script(ngx_http_psd_redis_call_t *call,
    ngx_http_psd_redis_script_t *script, int nkeys, int argc,
    const char **argv, const size_t *argvlen);
ngx_int_t ngx_http_psd_redis_call_send(ngx_http_psd_redis_call_t *call,
    ngx_http_psd_redis_handler_pt handler, void *data);

void ngx_http_psd_redis_wait(ngx_http_request_t *r);
void ngx_http_psd_redis_resume(ngx_http_request_t *r);

ngx_int_t ngx_http_psd_redis_init_process(ngx_cycle_t *cycle);
void ngx_http_psd_redis_exit_process(ngx_cycle_t *cycle);
size_t ngx_http_psd_redis_status_len(ngx_http_request_t *r);
u_char *ngx_http_psd_redis_status_write(ngx_http_request_t *r, u_char *p);

const char *ngx_http_psd_redis_status_name(ngx_uint_t status);


#endif /* _NGX_HTTP_PSD_REDIS_H_INCLUDED_ */
