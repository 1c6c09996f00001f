
/*
 * Copyright (C) ngx_psd_module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_psd_redis.h"
#include "ngx_http_psd_metrics.h"
#include "psd_crypto.h"
#include "psd_slot.h"


/*
 * One connection per worker and server.  Commands of many requests are
 * pipelined on it: Redis answers in order, so a FIFO of slots matches each
 * reply to its command.  A slot outlives its call when the call is done
 * early (deadline, client gone): the reply still arrives in order and is
 * dropped, which keeps the FIFO and the wire in step.
 */


#define NGX_HTTP_PSD_REDIS_DOWN         0
#define NGX_HTTP_PSD_REDIS_CONNECTING   1
#define NGX_HTTP_PSD_REDIS_READY        2

#define NGX_HTTP_PSD_REDIS_BACKOFF_MIN  100
#define NGX_HTTP_PSD_REDIS_BACKOFF_MAX  5000
#define NGX_HTTP_PSD_REDIS_FREE_SLOTS   1024

/* cluster: a slot's node is kept in a byte, as its index + 1 */
#define NGX_HTTP_PSD_REDIS_MAX_NODES    64
#define NGX_HTTP_PSD_REDIS_MAX_REDIRECTS 5
#define NGX_HTTP_PSD_REDIS_REFRESH      30000
#define NGX_HTTP_PSD_REDIS_REFRESH_SOON 200
#define NGX_HTTP_PSD_REDIS_REFRESH_DOWN 1000
#define NGX_HTTP_PSD_REDIS_TRYAGAIN     20


struct ngx_http_psd_redis_slot_s {
    ngx_queue_t                   queue;
    ngx_http_psd_redis_call_t    *call;       /* NULL: nobody waits */
    ngx_uint_t                    index;
    ngx_http_psd_redis_script_t  *script;     /* EVALSHA, may need a load */
    char                         *cmd;        /* kept for a retry elsewhere */
    size_t                        len;
    ngx_uint_t                    redirects;
    ngx_http_psd_redis_conn_t    *node;       /* cluster: where it went */
    unsigned                      handshake:1;
    unsigned                      retried:1;
    unsigned                      asking:1;
};


typedef struct {
    u_char                       *data;
    size_t                        pos;
    size_t                        len;
    size_t                        size;
} ngx_http_psd_redis_buf_t;


struct ngx_http_psd_redis_conn_s {
    ngx_http_psd_redis_server_t  *server;
    ngx_peer_connection_t         peer;
    ngx_uint_t                    state;
    redisReader                  *reader;

    /*
     * "out" is what may go on the wire; requests' commands wait in "held"
     * until the handshake has answered, so that none of them runs as the
     * wrong user or in the wrong database when AUTH or SELECT fails.
     */

    ngx_http_psd_redis_buf_t      out;
    ngx_http_psd_redis_buf_t      held;

    ngx_queue_t                   pending;
    ngx_uint_t                    npending;
    ngx_queue_t                   free;
    ngx_uint_t                    nfree;
    ngx_array_t                  *scripts;

    ngx_event_t                   reconnect;
    ngx_uint_t                    failures;
    ngx_uint_t                    addr;
    ngx_uint_t                    connects;
    time_t                        logged;
    ngx_log_t                     log;

    /*
     * A cluster node, or the primary sentinels name, has an address of
     * its own; otherwise the server's addresses are tried in turn.
     */

    ngx_addr_t                    own;
    ngx_sockaddr_t                sockaddr;
    u_char                        text[NGX_SOCKADDR_STRLEN];

    ngx_uint_t                    owns;       /* cluster slots it serves */
    size_t                        reserve;    /* while a call is queued */

    unsigned                      handshake_done:1;
    unsigned                      counted_up:1;
    unsigned                      fixed:1;
    unsigned                      sentinel:1;
    unsigned                      subscribed:1;
};


/*
 * What a worker knows of a cluster (its nodes and which serves each slot)
 * or of a sentinel-watched primary.  Calls made before it is known wait in
 * "waiting", under their own deadline.
 */

struct ngx_http_psd_redis_topo_s {
    ngx_http_psd_redis_server_t  *server;
    ngx_http_psd_redis_conn_t    *nodes[NGX_HTTP_PSD_REDIS_MAX_NODES];
    ngx_uint_t                    nnodes;
    u_char                        map[PSD_SLOT_COUNT];    /* node + 1 */
    ngx_queue_t                   waiting;
    ngx_queue_t                   retry;      /* slots after TRYAGAIN */
    ngx_event_t                   retry_ev;
    ngx_event_t                   refresh;
    ngx_uint_t                    next;
    ngx_uint_t                    failures;
    ngx_uint_t                    changes;
    ngx_msec_t                    asked;
    ngx_http_psd_redis_conn_t    *sentinel;
    ngx_log_t                     log;

    unsigned                      known:1;
    unsigned                      asking:1;
};


static ngx_int_t ngx_http_psd_redis_is_option(ngx_str_t *arg);
static char *ngx_http_psd_redis_option(ngx_conf_t *cf,
    ngx_http_psd_redis_server_t *server, ngx_str_t *opt);
static void ngx_http_psd_redis_wipe(void *data);
#if (NGX_SSL)
static char *ngx_http_psd_redis_conf_tls(ngx_conf_t *cf,
    ngx_http_psd_redis_server_t *server);
static ngx_int_t ngx_http_psd_redis_tls_start(ngx_http_psd_redis_conn_t *conn);
static void ngx_http_psd_redis_tls_handshaked(ngx_connection_t *c);
#endif
static void ngx_http_psd_redis_connect(ngx_http_psd_redis_conn_t *conn);
static void ngx_http_psd_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_psd_redis_write_handler(ngx_event_t *wev);
static void ngx_http_psd_redis_read_handler(ngx_event_t *rev);
static void ngx_http_psd_redis_fail(ngx_http_psd_redis_conn_t *conn,
    ngx_err_t err, const char *reason);
static void ngx_http_psd_redis_close(ngx_http_psd_redis_conn_t *conn);
static void ngx_http_psd_redis_dispatch(ngx_http_psd_redis_conn_t *conn,
    redisReply *reply);
static ngx_int_t ngx_http_psd_redis_append(ngx_http_psd_redis_conn_t *conn,
    ngx_http_psd_redis_buf_t *buf, const char *cmd, size_t len);
static ngx_http_psd_redis_slot_t *ngx_http_psd_redis_slot_get(
    ngx_http_psd_redis_conn_t *conn);
static void ngx_http_psd_redis_slot_free(ngx_http_psd_redis_conn_t *conn,
    ngx_http_psd_redis_slot_t *slot);
static void ngx_http_psd_redis_fail_slots(ngx_http_psd_redis_conn_t *conn,
    ngx_queue_t *queue);
static ngx_int_t ngx_http_psd_redis_queue_internal(
    ngx_http_psd_redis_conn_t *conn, int argc, const char **argv,
    const size_t *argvlen);
static void ngx_http_psd_redis_flush(ngx_http_psd_redis_conn_t *conn);
static void ngx_http_psd_redis_call_finish(ngx_http_psd_redis_call_t *call,
    ngx_uint_t status);
static void ngx_http_psd_redis_call_timeout(ngx_event_t *ev);
static void ngx_http_psd_redis_call_cleanup(void *data);
static void ngx_http_psd_redis_call_start(ngx_http_psd_redis_call_t *call);
static ngx_int_t ngx_http_psd_redis_keyslot(int argc, const char **argv,
    const size_t *argvlen, ngx_uint_t route);
static ngx_int_t ngx_http_psd_redis_enqueue(ngx_http_psd_redis_call_t *call);
static ngx_int_t ngx_http_psd_redis_enqueue_on(ngx_http_psd_redis_call_t *call,
    ngx_http_psd_redis_conn_t *conn);
static ngx_int_t ngx_http_psd_redis_enqueue_routed(
    ngx_http_psd_redis_call_t *call);
static ngx_int_t ngx_http_psd_redis_reserve(ngx_http_psd_redis_conn_t *conn,
    ngx_http_psd_redis_buf_t *buf, size_t len);

static ngx_http_psd_redis_conn_t *ngx_http_psd_redis_conn_create(
    ngx_cycle_t *cycle, ngx_http_psd_redis_server_t *server);
static void ngx_http_psd_redis_conn_address(ngx_http_psd_redis_conn_t *conn,
    struct sockaddr *sockaddr, socklen_t socklen);
static void ngx_http_psd_redis_conn_free(ngx_http_psd_redis_conn_t *conn);
static ngx_str_t *ngx_http_psd_redis_conn_name(
    ngx_http_psd_redis_conn_t *conn);
static ngx_int_t ngx_http_psd_redis_topo_known(
    ngx_http_psd_redis_topo_t *topo);
static ngx_http_psd_redis_conn_t *ngx_http_psd_redis_route(
    ngx_http_psd_redis_topo_t *topo, ngx_int_t keyslot);
static ngx_http_psd_redis_conn_t *ngx_http_psd_redis_node(
    ngx_http_psd_redis_topo_t *topo, struct sockaddr *sockaddr,
    socklen_t socklen);
static ngx_int_t ngx_http_psd_redis_parse_node(u_char *text, size_t len,
    in_port_t port, ngx_sockaddr_t *sa, socklen_t *socklen);
static void ngx_http_psd_redis_topo_schedule(ngx_http_psd_redis_topo_t *topo,
    ngx_msec_t delay);
static void ngx_http_psd_redis_topo_handler(ngx_event_t *ev);
static void ngx_http_psd_redis_topo_release(ngx_http_psd_redis_topo_t *topo,
    ngx_uint_t known);
static void ngx_http_psd_redis_refresh(ngx_http_psd_redis_topo_t *topo);
static void ngx_http_psd_redis_refresh_failed(
    ngx_http_psd_redis_topo_t *topo);
static void ngx_http_psd_redis_refreshed(ngx_http_psd_redis_call_t *call);
static void ngx_http_psd_redis_count_owned(ngx_http_psd_redis_topo_t *topo);
static ngx_int_t ngx_http_psd_redis_redirect(ngx_http_psd_redis_conn_t *conn,
    ngx_http_psd_redis_slot_t *slot, redisReply *reply);
static ngx_int_t ngx_http_psd_redis_resend(ngx_http_psd_redis_conn_t *target,
    ngx_http_psd_redis_slot_t *slot);
static void ngx_http_psd_redis_retry_handler(ngx_event_t *ev);
static void ngx_http_psd_redis_sentinel_ask(ngx_http_psd_redis_topo_t *topo);
static void ngx_http_psd_redis_sentinel_answered(
    ngx_http_psd_redis_call_t *call);
static void ngx_http_psd_redis_sentinel_message(
    ngx_http_psd_redis_conn_t *sentinel, redisReply *reply);
static ngx_int_t ngx_http_psd_redis_primary(ngx_http_psd_redis_topo_t *topo,
    u_char *ip, size_t len, in_port_t port);

static void *ngx_http_psd_redis_create_string(const redisReadTask *task,
    char *str, size_t len);
static void *ngx_http_psd_redis_create_array(const redisReadTask *task,
    int elements);
static void *ngx_http_psd_redis_create_integer(const redisReadTask *task,
    long long value);
static void *ngx_http_psd_redis_create_nil(const redisReadTask *task);
static void ngx_http_psd_redis_link(const redisReadTask *task,
    redisReply *reply);


/*
 * hiredis' own object functions allocate whatever a multi-bulk header
 * announces (a 16 GiB array for "*2147483647").  Ours build the same
 * redisReply objects, so freeReplyObject() frees them, but refuse arrays
 * larger than the reply size limit could ever fill.
 */

static ngx_str_t  ngx_http_psd_redis_unknown = ngx_string("unknown");


static redisReplyObjectFunctions  ngx_http_psd_redis_reply_functions = {
    ngx_http_psd_redis_create_string,
    ngx_http_psd_redis_create_array,
    ngx_http_psd_redis_create_integer,
    ngx_http_psd_redis_create_nil,
    freeReplyObject
};


char *
ngx_http_psd_redis_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_main_conf_t  *pmcf = conf;

    char                          *rv;
    ngx_str_t                     *value, target;
    ngx_url_t                      u;
    ngx_uint_t                     i, first;
    ngx_addr_t                    *addr;
    ngx_array_t                    addrs;
    ngx_http_psd_redis_server_t   *server, **servers;

    value = cf->args->elts;

    servers = pmcf->servers.elts;

    for (i = 0; i < pmcf->servers.nelts; i++) {
        if (servers[i]->name.len == value[1].len
            && ngx_strncmp(servers[i]->name.data, value[1].data,
                           value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate redis server name \"%V\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    for (i = 0; i == 0 || i < value[1].len; i++) {
        if (value[1].len == 0 || value[1].len > 63
            || !(isalnum(value[1].data[i]) || value[1].data[i] == '_'
                 || value[1].data[i] == '-'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid redis server name \"%V\", use up to "
                               "63 letters, digits, \"_\" and \"-\"",
                               &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    server = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_redis_server_t));
    if (server == NULL) {
        return NGX_CONF_ERROR;
    }

    server->name = value[1];
    server->db = 0;
    server->connect_timeout = 1000;
    server->timeout = 1000;
    server->max_pending = 4096;
    server->max_reply = 1024 * 1024;

    first = 2;

    if (value[2].len == 7 && ngx_strncmp(value[2].data, "cluster", 7) == 0) {
        server->mode = NGX_HTTP_PSD_REDIS_CLUSTER;
        first = 3;

    } else if (value[2].len == 8
               && ngx_strncmp(value[2].data, "sentinel", 8) == 0)
    {
        server->mode = NGX_HTTP_PSD_REDIS_SENTINEL;

        if (cf->args->nelts < 4
            || ngx_http_psd_redis_is_option(&value[3]))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" \"%V\" needs the primary's name "
                               "after \"sentinel\"", &value[0],
                               &server->name);
            return NGX_CONF_ERROR;
        }

        server->master = value[3];
        first = 4;
    }

    /*
     * Names are resolved here, while reading the configuration, so that
     * workers never make a blocking DNS query.  Cluster nodes and the
     * primaries sentinels name are addresses, never names.
     */

    if (ngx_array_init(&addrs, cf->pool, 4, sizeof(ngx_addr_t)) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = first; i < cf->args->nelts; i++) {
        target = value[i];

        if (ngx_http_psd_redis_is_option(&target)) {
            break;
        }

        if (i > first && server->mode == NGX_HTTP_PSD_REDIS_SINGLE) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\" in \"%V\" (several "
                               "addresses need \"cluster\" or "
                               "\"sentinel\")", &target, &value[0]);
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&u, sizeof(ngx_url_t));
        u.url = target;
        u.default_port = (server->mode == NGX_HTTP_PSD_REDIS_SENTINEL)
                         ? 26379 : 6379;

        if (server->mode != NGX_HTTP_PSD_REDIS_SINGLE
            && (target.len < 5 || ngx_strncmp(target.data, "unix:", 5) == 0
                || ngx_strlchr(target.data, target.data + target.len, ':')
                   == NULL))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid %s address \"%V\" in \"%V\", use "
                               "host:port",
                               server->mode == NGX_HTTP_PSD_REDIS_CLUSTER
                               ? "cluster node" : "sentinel",
                               &target, &value[0]);
            return NGX_CONF_ERROR;
        }

        if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
            if (u.err) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%s in redis server \"%V\" of \"%V\"",
                                   u.err, &target, &value[0]);
            }

            return NGX_CONF_ERROR;
        }

        if (u.naddrs == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "redis server \"%V\" of \"%V\" has no "
                               "address", &target, &value[0]);
            return NGX_CONF_ERROR;
        }

        addr = ngx_array_push_n(&addrs, u.naddrs);
        if (addr == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(addr, u.addrs, u.naddrs * sizeof(ngx_addr_t));

        if (i == first) {
            server->target = target;
            server->host = u.host;
        }
    }

    if (addrs.nelts == 0) {
        if (server->mode == NGX_HTTP_PSD_REDIS_SENTINEL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" \"%V\" sentinel \"%V\" has no "
                               "sentinel address", &value[0], &server->name,
                               &server->master);

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"%V\" \"%V\" %shas no %s", &value[0],
                               &server->name,
                               server->mode == NGX_HTTP_PSD_REDIS_CLUSTER
                               ? "cluster " : "",
                               server->mode == NGX_HTTP_PSD_REDIS_CLUSTER
                               ? "seed node" : "address");
        }

        return NGX_CONF_ERROR;
    }

    server->addrs = addrs.elts;
    server->naddrs = addrs.nelts;

    if (server->mode == NGX_HTTP_PSD_REDIS_CLUSTER
        && addrs.nelts > NGX_HTTP_PSD_REDIS_MAX_NODES)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis server \"%V\" has more than %d seed "
                           "addresses", &server->name,
                           NGX_HTTP_PSD_REDIS_MAX_NODES);
        return NGX_CONF_ERROR;
    }

    for ( /* void */ ; i < cf->args->nelts; i++) {
        rv = ngx_http_psd_redis_option(cf, server, &value[i]);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

#if (NGX_SSL)
    if (ngx_http_psd_redis_conf_tls(cf, server) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }
#endif

    if (server->mode == NGX_HTTP_PSD_REDIS_CLUSTER && server->db) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid option \"db=%i\" in \"%V\": a cluster "
                           "has database 0 only", server->db, &value[0]);
        return NGX_CONF_ERROR;
    }

    if (server->user.len && server->password.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis server \"%V\" has \"user=\" without a "
                           "password", &server->name);
        return NGX_CONF_ERROR;
    }

    servers = ngx_array_push(&pmcf->servers);
    if (servers == NULL) {
        return NGX_CONF_ERROR;
    }

    *servers = server;

    return NGX_CONF_OK;
}


/* options are "name=value" or one of the bare flags */

static ngx_int_t
ngx_http_psd_redis_is_option(ngx_str_t *arg)
{
    if (ngx_strlchr(arg->data, arg->data + arg->len, '=')) {
        return 1;
    }

    return (arg->len == 3 && ngx_strncmp(arg->data, "tls", 3) == 0)
           || (arg->len == 10 && ngx_strncmp(arg->data, "tls_verify", 10) == 0);
}


static char *
ngx_http_psd_redis_option(ngx_conf_t *cf, ngx_http_psd_redis_server_t *server,
    ngx_str_t *opt)
{
    u_char              *eq;
    ssize_t              size;
    ngx_int_t            n;
    ngx_str_t            name, val, *value;
    ngx_pool_cleanup_t  *cln;

    value = cf->args->elts;

    eq = ngx_strlchr(opt->data, opt->data + opt->len, '=');

    name.data = opt->data;
    name.len = eq ? (size_t) (eq - opt->data) : opt->len;
    val.data = eq ? eq + 1 : NULL;
    val.len = eq ? opt->len - name.len - 1 : 0;

#if (NGX_SSL)

    if (eq == NULL && name.len == 3 && ngx_strncmp(name.data, "tls", 3) == 0)
    {
        server->ssl = (ngx_ssl_t *) -1;     /* made once all options are in */
        return NGX_CONF_OK;
    }

    if (eq == NULL && name.len == 10
        && ngx_strncmp(name.data, "tls_verify", 10) == 0)
    {
        server->tls_verify = 1;
        return NGX_CONF_OK;
    }

    if (eq && name.len == 23
        && ngx_strncmp(name.data, "tls_trusted_certificate", 23) == 0)
    {
        server->tls_trusted_certificate = val;
        return NGX_CONF_OK;
    }

    if (eq && name.len == 15
        && ngx_strncmp(name.data, "tls_server_name", 15) == 0)
    {
        server->tls_server_name = val;
        return NGX_CONF_OK;
    }

#else

    if (name.len >= 3 && ngx_strncmp(name.data, "tls", 3) == 0) {
        goto unsupported;
    }

#endif

    if (eq == NULL) {
        goto invalid;
    }

    if (ngx_strncmp(name.data, "password", name.len) == 0
        && name.len == 8)
    {
        /* the value is a secret: never repeat it in a message */
        if (val.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "empty \"password=\" in \"%V\"", &value[0]);
            return NGX_CONF_ERROR;
        }

        server->password = val;

        /* the configuration's copy is wiped when the configuration goes */

        cln = ngx_pool_cleanup_add(cf->pool, sizeof(ngx_str_t));
        if (cln == NULL) {
            return NGX_CONF_ERROR;
        }

        *(ngx_str_t *) cln->data = val;
        cln->handler = ngx_http_psd_redis_wipe;

        return NGX_CONF_OK;
    }

    if (name.len == 13 && ngx_strncmp(name.data, "password_file", 13) == 0) {
        if (ngx_http_psd_secret_file(cf, &val, 1, 512, &server->password)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if ((name.len == 17
         && ngx_strncmp(name.data, "sentinel_password", 17) == 0)
        || (name.len == 22
            && ngx_strncmp(name.data, "sentinel_password_file", 22) == 0))
    {
        if (server->mode != NGX_HTTP_PSD_REDIS_SENTINEL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "option \"%V\" in \"%V\" needs "
                               "\"sentinel\"", &name, &value[0]);
            return NGX_CONF_ERROR;
        }

        if (name.len == 22) {
            return ngx_http_psd_secret_file(cf, &val, 1, 512,
                                            &server->sentinel_password)
                   == NGX_OK ? NGX_CONF_OK : NGX_CONF_ERROR;
        }

        if (val.len == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "empty \"sentinel_password=\" in \"%V\"",
                               &value[0]);
            return NGX_CONF_ERROR;
        }

        server->sentinel_password = val;

        cln = ngx_pool_cleanup_add(cf->pool, sizeof(ngx_str_t));
        if (cln == NULL) {
            return NGX_CONF_ERROR;
        }

        *(ngx_str_t *) cln->data = val;
        cln->handler = ngx_http_psd_redis_wipe;

        return NGX_CONF_OK;
    }

    if (name.len == 4 && ngx_strncmp(name.data, "user", 4) == 0) {
        if (val.len == 0) {
            goto invalid;
        }

        server->user = val;
        return NGX_CONF_OK;
    }

    if (name.len == 2 && ngx_strncmp(name.data, "db", 2) == 0) {
        n = ngx_atoi(val.data, val.len);
        if (n == NGX_ERROR || n > 65535) {
            goto invalid;
        }

        server->db = n;
        return NGX_CONF_OK;
    }

    if ((name.len == 15
         && ngx_strncmp(name.data, "connect_timeout", 15) == 0)
        || (name.len == 7 && ngx_strncmp(name.data, "timeout", 7) == 0))
    {
        n = ngx_parse_time(&val, 0);
        if (n == NGX_ERROR || n == 0) {
            goto invalid;
        }

        if (name.len == 7) {
            server->timeout = n;
        } else {
            server->connect_timeout = n;
        }

        return NGX_CONF_OK;
    }

    if (name.len == 11 && ngx_strncmp(name.data, "max_pending", 11) == 0) {
        n = ngx_atoi(val.data, val.len);
        if (n == NGX_ERROR || n == 0) {
            goto invalid;
        }

        server->max_pending = n;
        return NGX_CONF_OK;
    }

    if (name.len == 9 && ngx_strncmp(name.data, "max_reply", 9) == 0) {
        size = ngx_parse_size(&val);
        if (size == NGX_ERROR || size < 1024) {
            goto invalid;
        }

        server->max_reply = size;
        return NGX_CONF_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "unknown option \"%V\" in \"%V\"", &name, &value[0]);
    return NGX_CONF_ERROR;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid value \"%V\" in \"%V\"", opt, &value[0]);
    return NGX_CONF_ERROR;

#if !(NGX_SSL)

unsupported:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"%V\" in \"%V\" needs nginx built with SSL",
                       &name, &value[0]);
    return NGX_CONF_ERROR;

#endif
}


#if (NGX_SSL)

static char *
ngx_http_psd_redis_conf_tls(ngx_conf_t *cf,
    ngx_http_psd_redis_server_t *server)
{
    ngx_pool_cleanup_t  *cln;

    if (server->ssl == NULL) {
        if (server->tls_verify || server->tls_trusted_certificate.len
            || server->tls_server_name.len)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "redis server \"%V\" has tls_* options "
                               "without \"tls\"", &server->name);
            return NGX_CONF_ERROR;
        }

        return NGX_CONF_OK;
    }

    if (server->tls_verify && server->tls_trusted_certificate.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "redis server \"%V\" has \"tls_verify\" without "
                           "\"tls_trusted_certificate=\"", &server->name);
        return NGX_CONF_ERROR;
    }

    server->ssl = ngx_pcalloc(cf->pool, sizeof(ngx_ssl_t));
    if (server->ssl == NULL) {
        return NGX_CONF_ERROR;
    }

    server->ssl->log = cf->log;

    if (ngx_ssl_create(server->ssl, NGX_SSL_TLSv1_2|NGX_SSL_TLSv1_3, NULL)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_ssl_cleanup_ctx(server->ssl);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_ssl_cleanup_ctx;
    cln->data = server->ssl;

    /*
     * ngx_http_psd_redis_flush() retries an SSL_write() that wanted to
     * write with the same bytes, but a command queued meanwhile may have
     * grown the output buffer, that is moved it: without this mode OpenSSL
     * refuses the retry ("bad write retry") and the connection fails with
     * every command on it.
     */

    SSL_CTX_set_mode(server->ssl->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

    if (server->tls_trusted_certificate.len
        && ngx_ssl_trusted_certificate(cf, server->ssl,
                                       &server->tls_trusted_certificate, 2)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}

#endif


static void
ngx_http_psd_redis_wipe(void *data)
{
    ngx_str_t  *s = data;

    psd_cleanse(s->data, s->len);
}


/*
 * Features name the server they use ("redis=main"); an empty name means
 * the first one.  Call it once all of http{} is read (merge or init).
 */

char *
ngx_http_psd_redis_conf_server(ngx_conf_t *cf, ngx_str_t *name,
    ngx_http_psd_redis_server_t **server)
{
    ngx_uint_t                     i;
    ngx_http_psd_main_conf_t      *pmcf;
    ngx_http_psd_redis_server_t  **servers;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_psd_module);
    servers = pmcf->servers.elts;

    if (pmcf->servers.nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "no \"psd_redis\" server is configured in http{}");
        return NGX_CONF_ERROR;
    }

    if (name->len == 0) {
        *server = servers[0];
        return NGX_CONF_OK;
    }

    for (i = 0; i < pmcf->servers.nelts; i++) {
        if (servers[i]->name.len == name->len
            && ngx_strncmp(servers[i]->name.data, name->data, name->len) == 0)
        {
            *server = servers[i];
            return NGX_CONF_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "unknown redis server \"%V\"", name);

    return NGX_CONF_ERROR;
}


/* the first server if there is one; for features that may do without */

ngx_int_t
ngx_http_psd_redis_conf_server_optional(ngx_conf_t *cf,
    ngx_http_psd_redis_server_t **server)
{
    ngx_http_psd_main_conf_t      *pmcf;
    ngx_http_psd_redis_server_t  **servers;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_psd_module);
    servers = pmcf->servers.elts;

    *server = pmcf->servers.nelts ? servers[0] : NULL;

    return *server ? NGX_OK : NGX_DECLINED;
}


ngx_int_t
ngx_http_psd_redis_register_script(ngx_conf_t *cf,
    ngx_http_psd_redis_script_t *script)
{
    ngx_uint_t                     i;
    ngx_http_psd_main_conf_t      *pmcf;
    ngx_http_psd_redis_script_t  **scripts;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_psd_module);
    scripts = pmcf->scripts.elts;

    for (i = 0; i < pmcf->scripts.nelts; i++) {
        if (scripts[i] == script) {
            return NGX_OK;
        }
    }

    if (script->sha1[0] == '\0') {
        if (psd_sha1_hex((const unsigned char *) script->body,
                         ngx_strlen(script->body), script->sha1)
            != 0)
        {
            return NGX_ERROR;
        }

        script->sha1[40] = '\0';
    }

    scripts = ngx_array_push(&pmcf->scripts);
    if (scripts == NULL) {
        return NGX_ERROR;
    }

    *scripts = script;

    return NGX_OK;
}


ngx_int_t
ngx_http_psd_redis_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                     i, j;
    ngx_http_psd_main_conf_t      *pmcf;
    ngx_http_psd_redis_conn_t     *conn;
    ngx_http_psd_redis_topo_t     *topo;
    ngx_http_psd_redis_server_t   *server, **servers;

    if (ngx_process == NGX_PROCESS_HELPER) {
        return NGX_OK;
    }

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_psd_module);
    if (pmcf == NULL) {
        return NGX_OK;
    }

    servers = pmcf->servers.elts;

    for (i = 0; i < pmcf->servers.nelts; i++) {
        server = servers[i];

        if (server->mode == NGX_HTTP_PSD_REDIS_SINGLE) {
            conn = ngx_http_psd_redis_conn_create(cycle, server);
            if (conn == NULL) {
                return NGX_ERROR;
            }

            /* a worker spread over several addresses starts at its own one */
            conn->addr = ngx_worker % server->naddrs;
            server->conn = conn;

            ngx_http_psd_redis_connect(conn);
            continue;
        }

        topo = ngx_pcalloc(cycle->pool, sizeof(ngx_http_psd_redis_topo_t));
        if (topo == NULL) {
            return NGX_ERROR;
        }

        topo->server = server;
        topo->log = *cycle->log;
        ngx_queue_init(&topo->waiting);

        topo->refresh.handler = ngx_http_psd_redis_topo_handler;
        topo->refresh.data = topo;
        topo->refresh.log = &topo->log;
        topo->refresh.cancelable = 1;

        ngx_queue_init(&topo->retry);
        topo->retry_ev.handler = ngx_http_psd_redis_retry_handler;
        topo->retry_ev.data = topo;
        topo->retry_ev.log = &topo->log;
        topo->retry_ev.cancelable = 1;

        server->topo = topo;

        if (server->mode == NGX_HTTP_PSD_REDIS_CLUSTER) {
            for (j = 0; j < server->naddrs; j++) {
                if (ngx_http_psd_redis_node(topo, server->addrs[j].sockaddr,
                                            server->addrs[j].socklen)
                    == NULL)
                {
                    return NGX_ERROR;
                }
            }

            topo->next = ngx_worker;
            ngx_http_psd_redis_refresh(topo);
            continue;
        }

        /* sentinel: the primary's connection waits for its address */

        server->conn = ngx_http_psd_redis_conn_create(cycle, server);
        topo->sentinel = ngx_http_psd_redis_conn_create(cycle, server);

        if (server->conn == NULL || topo->sentinel == NULL) {
            return NGX_ERROR;
        }

        topo->sentinel->sentinel = 1;
        topo->sentinel->addr = ngx_worker % server->naddrs;

        ngx_http_psd_redis_sentinel_ask(topo);
    }

    return NGX_OK;
}


static ngx_http_psd_redis_conn_t *
ngx_http_psd_redis_conn_create(ngx_cycle_t *cycle,
    ngx_http_psd_redis_server_t *server)
{
    ngx_http_psd_main_conf_t   *pmcf;
    ngx_http_psd_redis_conn_t  *conn;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_psd_module);

    conn = ngx_pcalloc(cycle->pool, sizeof(ngx_http_psd_redis_conn_t));
    if (conn == NULL) {
        return NULL;
    }

    conn->server = server;
    conn->scripts = &pmcf->scripts;
    conn->log = *cycle->log;
    ngx_queue_init(&conn->pending);
    ngx_queue_init(&conn->free);

    conn->reconnect.handler = ngx_http_psd_redis_reconnect_handler;
    conn->reconnect.data = conn;
    conn->reconnect.log = &conn->log;
    conn->reconnect.cancelable = 1;

    return conn;
}


/* gives a connection an address of its own: a cluster node, a primary */

static void
ngx_http_psd_redis_conn_address(ngx_http_psd_redis_conn_t *conn,
    struct sockaddr *sockaddr, socklen_t socklen)
{
    ngx_memcpy(&conn->sockaddr, sockaddr, socklen);

    conn->own.sockaddr = &conn->sockaddr.sockaddr;
    conn->own.socklen = socklen;
    conn->own.name.data = conn->text;
    conn->own.name.len = ngx_sock_ntop(&conn->sockaddr.sockaddr, socklen,
                                       conn->text, NGX_SOCKADDR_STRLEN, 1);
    conn->fixed = 1;
}


void
ngx_http_psd_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                     i, j;
    ngx_queue_t                   *q;
    ngx_http_psd_main_conf_t      *pmcf;
    ngx_http_psd_redis_slot_t     *slot;
    ngx_http_psd_redis_topo_t     *topo;
    ngx_http_psd_redis_server_t  **servers;

    pmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_psd_module);
    if (pmcf == NULL) {
        return;
    }

    servers = pmcf->servers.elts;

    for (i = 0; i < pmcf->servers.nelts; i++) {
        topo = servers[i]->topo;

        if (topo) {
            if (topo->refresh.timer_set) {
                ngx_del_timer(&topo->refresh);
            }

            if (topo->retry_ev.timer_set) {
                ngx_del_timer(&topo->retry_ev);
            }

            while (!ngx_queue_empty(&topo->retry)) {
                q = ngx_queue_head(&topo->retry);
                ngx_queue_remove(q);
                slot = ngx_queue_data(q, ngx_http_psd_redis_slot_t, queue);
                slot->call = NULL;
                ngx_http_psd_redis_slot_free(slot->node, slot);
            }

            for (j = 0; j < topo->nnodes; j++) {
                ngx_http_psd_redis_conn_free(topo->nodes[j]);
            }

            if (topo->sentinel) {
                ngx_http_psd_redis_conn_free(topo->sentinel);
            }

            servers[i]->topo = NULL;
        }

        if (servers[i]->conn) {
            ngx_http_psd_redis_conn_free(servers[i]->conn);
            servers[i]->conn = NULL;
        }
    }
}


static void
ngx_http_psd_redis_conn_free(ngx_http_psd_redis_conn_t *conn)
{
    ngx_queue_t  *q;

    if (conn->reconnect.timer_set) {
        ngx_del_timer(&conn->reconnect);
    }

    ngx_http_psd_redis_close(conn);

    while (!ngx_queue_empty(&conn->free)) {
        q = ngx_queue_head(&conn->free);
        ngx_queue_remove(q);
        ngx_free(ngx_queue_data(q, ngx_http_psd_redis_slot_t, queue));
    }
}


static void
ngx_http_psd_redis_connect(ngx_http_psd_redis_conn_t *conn)
{
    int                            argc;
    char                           db[NGX_INT_T_LEN];
    size_t                         argvlen[3];
    ngx_int_t                      rc;
    ngx_uint_t                     i;
    const char                    *argv[3];
    ngx_addr_t                    *addr;
    ngx_connection_t              *c;
    ngx_http_psd_redis_server_t   *server;
    ngx_http_psd_redis_script_t  **scripts;

    server = conn->server;
    addr = conn->fixed ? &conn->own
                       : &server->addrs[conn->addr % server->naddrs];

    ngx_memzero(&conn->peer, sizeof(ngx_peer_connection_t));
    conn->peer.sockaddr = addr->sockaddr;
    conn->peer.socklen = addr->socklen;
    conn->peer.name = &addr->name;
    conn->peer.get = ngx_event_get_peer;
    conn->peer.log = &conn->log;
    conn->peer.log_error = NGX_ERROR_ERR;

    conn->reader = redisReaderCreateWithFunctions(
                                          &ngx_http_psd_redis_reply_functions);
    if (conn->reader == NULL) {
        ngx_http_psd_redis_fail(conn, 0, "out of memory");
        return;
    }

    conn->reader->privdata = conn;
    conn->handshake_done = 0;
    conn->connects++;

    if (conn->connects > 1 && !conn->sentinel && ngx_http_psd_metrics) {
        (void) ngx_atomic_fetch_add(
                  &ngx_http_psd_metrics_server(server->index)->reconnects, 1);
    }

    /*
     * The handshake goes first in the pipeline, so requests may queue their
     * commands behind it while the connection is still being made.
     */

    if (conn->sentinel) {
        /* sentinels have their own password, and no data or scripts */

        if (server->sentinel_password.len) {
            argv[0] = "AUTH";
            argvlen[0] = 4;
            argv[1] = (const char *) server->sentinel_password.data;
            argvlen[1] = server->sentinel_password.len;

            if (ngx_http_psd_redis_queue_internal(conn, 2, argv, argvlen)
                != NGX_OK)
            {
                ngx_http_psd_redis_fail(conn, 0, "out of memory");
                return;
            }
        }

        goto ping;
    }

    if (server->password.len) {
        argc = 0;
        argv[argc] = "AUTH";
        argvlen[argc++] = 4;

        if (server->user.len) {
            argv[argc] = (const char *) server->user.data;
            argvlen[argc++] = server->user.len;
        }

        argv[argc] = (const char *) server->password.data;
        argvlen[argc++] = server->password.len;

        if (ngx_http_psd_redis_queue_internal(conn, argc, argv, argvlen)
            != NGX_OK)
        {
            ngx_http_psd_redis_fail(conn, 0, "out of memory");
            return;
        }
    }

    if (server->db) {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = db;
        argvlen[1] = ngx_sprintf((u_char *) db, "%i", server->db)
                     - (u_char *) db;

        if (ngx_http_psd_redis_queue_internal(conn, 2, argv, argvlen)
            != NGX_OK)
        {
            ngx_http_psd_redis_fail(conn, 0, "out of memory");
            return;
        }
    }

    scripts = conn->scripts->elts;

    for (i = 0; i < conn->scripts->nelts; i++) {
        argv[0] = "SCRIPT";
        argvlen[0] = 6;
        argv[1] = "LOAD";
        argvlen[1] = 4;
        argv[2] = scripts[i]->body;
        argvlen[2] = ngx_strlen(scripts[i]->body);

        if (ngx_http_psd_redis_queue_internal(conn, 3, argv, argvlen)
            != NGX_OK)
        {
            ngx_http_psd_redis_fail(conn, 0, "out of memory");
            return;
        }
    }

ping:

    if (ngx_queue_empty(&conn->pending)) {
        /* no handshake: "PING" proves the server speaks before we count it */
        argv[0] = "PING";
        argvlen[0] = 4;

        if (ngx_http_psd_redis_queue_internal(conn, 1, argv, argvlen)
            != NGX_OK)
        {
            ngx_http_psd_redis_fail(conn, 0, "out of memory");
            return;
        }
    }

    rc = ngx_event_connect_peer(&conn->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        ngx_http_psd_redis_fail(conn, 0, "connect() failed");
        return;
    }

    c = conn->peer.connection;
    c->data = conn;
    c->log = &conn->log;
    c->read->log = &conn->log;
    c->write->log = &conn->log;
    c->read->handler = ngx_http_psd_redis_read_handler;
    c->write->handler = ngx_http_psd_redis_write_handler;

    conn->state = NGX_HTTP_PSD_REDIS_CONNECTING;

    if (rc == NGX_AGAIN) {
        ngx_add_timer(c->write, server->connect_timeout);
        return;
    }

    ngx_http_psd_redis_write_handler(c->write);
}


static void
ngx_http_psd_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_http_psd_redis_conn_t  *conn = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (conn->sentinel) {
        ngx_http_psd_redis_sentinel_ask(conn->server->topo);
        return;
    }

    ngx_http_psd_redis_connect(conn);
}


static void
ngx_http_psd_redis_write_handler(ngx_event_t *wev)
{
    int                         err;
    socklen_t                   len;
    ngx_connection_t           *c;
    ngx_http_psd_redis_conn_t  *conn;

    c = wev->data;
    conn = c->data;

    if (conn->state == NGX_HTTP_PSD_REDIS_CONNECTING) {

        if (wev->timedout) {
            ngx_http_psd_redis_fail(conn, NGX_ETIMEDOUT,
                                    "connect timed out");
            return;
        }

        if (wev->timer_set) {
            ngx_del_timer(wev);
        }

        err = 0;
        len = sizeof(int);

        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len)
            == -1)
        {
            err = ngx_socket_errno;
        }

        if (err) {
            ngx_http_psd_redis_fail(conn, err, "connect() failed");
            return;
        }

#if (NGX_SSL)
        if (conn->server->ssl && c->ssl == NULL) {
            (void) ngx_http_psd_redis_tls_start(conn);
            return;
        }
#endif

        conn->state = NGX_HTTP_PSD_REDIS_READY;
    }

    ngx_http_psd_redis_flush(conn);
}


#if (NGX_SSL)

static ngx_int_t
ngx_http_psd_redis_tls_start(ngx_http_psd_redis_conn_t *conn)
{
    ngx_int_t                     rc;
    ngx_connection_t             *c;
    ngx_http_psd_redis_server_t  *server;

    c = conn->peer.connection;
    server = conn->server;

    /* nginx's TLS layer keeps its connection state in c->pool */

    c->pool = ngx_create_pool(1024, &conn->log);
    if (c->pool == NULL) {
        ngx_http_psd_redis_fail(conn, 0, "out of memory");
        return NGX_ERROR;
    }

    if (ngx_ssl_create_connection(server->ssl, c, NGX_SSL_BUFFER|NGX_SSL_CLIENT)
        != NGX_OK)
    {
        ngx_http_psd_redis_fail(conn, 0, "TLS setup failed");
        return NGX_ERROR;
    }

    /* the value ends its configuration argument, so it ends with a NUL */

    if (server->tls_server_name.len
        && SSL_set_tlsext_host_name(c->ssl->connection,
                                    (char *) server->tls_server_name.data)
           == 0)
    {
        ngx_http_psd_redis_fail(conn, 0, "TLS server name failed");
        return NGX_ERROR;
    }

    if (!c->write->timer_set) {
        ngx_add_timer(c->write, server->connect_timeout);
    }

    rc = ngx_ssl_handshake(c);

    if (rc == NGX_AGAIN) {
        c->ssl->handler = ngx_http_psd_redis_tls_handshaked;
        return NGX_AGAIN;
    }

    ngx_http_psd_redis_tls_handshaked(c);

    return NGX_OK;
}


static void
ngx_http_psd_redis_tls_handshaked(ngx_connection_t *c)
{
    long                          verify;
    ngx_str_t                    *name;
    ngx_http_psd_redis_conn_t    *conn;
    ngx_http_psd_redis_server_t  *server;

    conn = c->data;
    server = conn->server;

    if (c->write->timer_set) {
        ngx_del_timer(c->write);
    }

    if (!c->ssl->handshaked) {
        ngx_http_psd_redis_fail(conn, 0, c->write->timedout
                                         ? "TLS handshake timed out"
                                         : "TLS handshake failed");
        return;
    }

    if (server->tls_verify) {
        verify = SSL_get_verify_result(c->ssl->connection);

        if (verify != X509_V_OK) {
            ngx_log_error(NGX_LOG_ERR, &conn->log, 0,
                          "psd: redis \"%V\" certificate does not verify: "
                          "(%l:%s)", &server->name, verify,
                          X509_verify_cert_error_string(verify));
            ngx_http_psd_redis_fail(conn, 0, NULL);
            return;
        }

        name = server->tls_server_name.len ? &server->tls_server_name
                                           : &server->host;

        if (ngx_ssl_check_host(c, name) != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, &conn->log, 0,
                          "psd: redis \"%V\" certificate does not match "
                          "\"%V\"", &server->name, name);
            ngx_http_psd_redis_fail(conn, 0, NULL);
            return;
        }
    }

    c->read->handler = ngx_http_psd_redis_read_handler;
    c->write->handler = ngx_http_psd_redis_write_handler;

    conn->state = NGX_HTTP_PSD_REDIS_READY;

    ngx_http_psd_redis_flush(conn);

    /* replies may already wait in the TLS buffer */
    if (c->read->ready) {
        ngx_post_event(c->read, &ngx_posted_events);
    }
}

#endif


static void
ngx_http_psd_redis_flush(ngx_http_psd_redis_conn_t *conn)
{
    ssize_t            n;
    ngx_connection_t  *c;

    c = conn->peer.connection;

    if (c == NULL || conn->state != NGX_HTTP_PSD_REDIS_READY) {
        return;
    }

    while (conn->out.pos < conn->out.len) {
        n = c->send(c, conn->out.data + conn->out.pos,
                    conn->out.len - conn->out.pos);

        if (n == NGX_ERROR) {
            ngx_http_psd_redis_fail(conn, 0, "send() failed");
            return;
        }

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                ngx_http_psd_redis_fail(conn, 0, "write event failed");
            }

            break;
        }

        conn->out.pos += n;
    }

    if (conn->out.pos == conn->out.len) {
        conn->out.pos = 0;
        conn->out.len = 0;
    }

    /*
     * The read timer bounds how long the server may stay silent while
     * something waits for it: a stopped or wedged server is dropped and
     * reconnected, whatever each call's own deadline is.
     */

    if (conn->npending && !c->read->timer_set) {
        ngx_add_timer(c->read, conn->server->timeout);
    }
}


static void
ngx_http_psd_redis_read_handler(ngx_event_t *rev)
{
    void                       *reply;
    ssize_t                     n;
    ngx_connection_t           *c;
    ngx_http_psd_redis_conn_t  *conn;
    u_char                      buf[16384];

    c = rev->data;
    conn = c->data;

    if (rev->timedout) {
        ngx_http_psd_redis_fail(conn, NGX_ETIMEDOUT, "server timed out");
        return;
    }

    /*
     * worker_shutdown_timeout: nginx asks every connection to close; ours
     * must not keep the exiting worker alive until Redis answers
     */

    if (c->close) {
        ngx_http_psd_redis_fail(conn, 0, NULL);
        return;
    }

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0) {
            ngx_http_psd_redis_fail(conn, 0, "server closed the connection");
            return;
        }

        if (n == NGX_ERROR) {
            ngx_http_psd_redis_fail(conn, 0, "recv() failed");
            return;
        }

        if (redisReaderFeed(conn->reader, (const char *) buf, n)
            != REDIS_OK)
        {
            ngx_http_psd_redis_fail(conn, 0, "out of memory");
            return;
        }

        for ( ;; ) {
            reply = NULL;

            if (redisReaderGetReply(conn->reader, &reply) != REDIS_OK) {
                ngx_http_psd_redis_fail(conn, 0, "protocol error");
                return;
            }

            if (reply == NULL) {
                break;
            }

            if (conn->npending == 0) {
                if (conn->subscribed) {
                    ngx_http_psd_redis_sentinel_message(conn, reply);
                    freeReplyObject(reply);
                    continue;
                }

                freeReplyObject(reply);
                ngx_http_psd_redis_fail(conn, 0, "unexpected reply");
                return;
            }

            ngx_http_psd_redis_dispatch(conn, reply);

            if (conn->peer.connection == NULL) {
                /* a handshake reply failed the connection */
                return;
            }
        }

        /*
         * hiredis waits for as many bytes as a bulk header announces; cap
         * what one reply may buffer so "$9223372036854775807" cannot make
         * us wait, or grow, for ever.
         */

        if (conn->reader->len - conn->reader->pos > conn->server->max_reply) {
            ngx_http_psd_redis_fail(conn, 0, "reply too large");
            return;
        }

        if (!rev->ready) {
            break;
        }
    }

    if (rev->timer_set) {
        ngx_del_timer(rev);
    }

    if (conn->npending) {
        ngx_add_timer(rev, conn->server->timeout);
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_psd_redis_fail(conn, 0, "read event failed");
    }
}


static void
ngx_http_psd_redis_dispatch(ngx_http_psd_redis_conn_t *conn,
    redisReply *reply)
{
    size_t                          len;
    ngx_queue_t                    *q;
    const char                     *argv[3];
    size_t                          argvlen[3];
    ngx_http_psd_redis_call_t      *call;
    ngx_http_psd_redis_slot_t      *slot, *next;
    ngx_http_psd_metrics_server_t  *ms;

    q = ngx_queue_head(&conn->pending);
    ngx_queue_remove(q);
    conn->npending--;

    slot = ngx_queue_data(q, ngx_http_psd_redis_slot_t, queue);

    if (ngx_http_psd_metrics) {
        ms = ngx_http_psd_metrics_server(conn->server->index);
        (void) ngx_atomic_fetch_add(&ms->pending, -1);
    }

    if (slot->handshake) {

        if (reply->type == REDIS_REPLY_ERROR) {
            /* AUTH or SELECT refused: say so once per backoff period */
            len = ngx_min(reply->len, 200);
            ngx_log_error(NGX_LOG_ERR, &conn->log, 0,
                          "psd: redis \"%V\" refused the handshake: %*s",
                          &conn->server->name, len, reply->str);
            freeReplyObject(reply);
            ngx_http_psd_redis_slot_free(conn, slot);
            conn->logged = ngx_time();

            /* a wrong password does not mend in 100 ms: start at ~1 s */
            conn->failures = ngx_max(conn->failures, 4);

            ngx_http_psd_redis_fail(conn, 0, NULL);
            return;
        }

        freeReplyObject(reply);
        ngx_http_psd_redis_slot_free(conn, slot);

        next = ngx_queue_empty(&conn->pending)
               ? NULL
               : ngx_queue_data(ngx_queue_head(&conn->pending),
                                ngx_http_psd_redis_slot_t, queue);

        if (!conn->handshake_done && (next == NULL || !next->handshake)) {
            conn->handshake_done = 1;
            conn->failures = 0;

            if (conn->held.len) {
                if (ngx_http_psd_redis_append(conn, &conn->out,
                                              (char *) conn->held.data,
                                              conn->held.len)
                    != NGX_OK)
                {
                    ngx_http_psd_redis_fail(conn, 0, "out of memory");
                    return;
                }

                conn->held.len = 0;
                ngx_http_psd_redis_flush(conn);
            }

            if (!conn->counted_up && !conn->sentinel
                && ngx_http_psd_metrics)
            {
                conn->counted_up = 1;
                ms = ngx_http_psd_metrics_server(conn->server->index);
                (void) ngx_atomic_fetch_add(&ms->connected, 1);
            }

            if (conn->connects > 1 && !conn->sentinel) {
                ngx_log_error(NGX_LOG_NOTICE, &conn->log, 0,
                              "psd: redis \"%V\" at %V is back",
                              &conn->server->name,
                              ngx_http_psd_redis_conn_name(conn));
            }
        }

        return;
    }

    if (reply->type == REDIS_REPLY_ERROR && conn->server->topo
        && ngx_http_psd_redis_redirect(conn, slot, reply) == NGX_OK)
    {
        freeReplyObject(reply);
        return;
    }

    /*
     * After a restart or failover the server has forgotten our scripts:
     * load the script and send the same EVALSHA again, once, at the tail.
     */

    if (slot->script && !slot->retried
        && reply->type == REDIS_REPLY_ERROR
        && reply->len >= 8 && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0)
    {
        freeReplyObject(reply);

        argv[0] = "SCRIPT";
        argvlen[0] = 6;
        argv[1] = "LOAD";
        argvlen[1] = 4;
        argv[2] = slot->script->body;
        argvlen[2] = ngx_strlen(slot->script->body);

        if (ngx_http_psd_redis_queue_internal(conn, 3, argv, argvlen)
            != NGX_OK
            || ngx_http_psd_redis_append(conn, &conn->out, slot->cmd,
                                         slot->len)
               != NGX_OK)
        {
            ngx_http_psd_redis_slot_free(conn, slot);
            ngx_http_psd_redis_fail(conn, 0, "out of memory");
            return;
        }

        slot->retried = 1;
        ngx_queue_insert_tail(&conn->pending, &slot->queue);
        conn->npending++;

        if (ngx_http_psd_metrics) {
            ms = ngx_http_psd_metrics_server(conn->server->index);
            (void) ngx_atomic_fetch_add(&ms->pending, 1);
        }

        ngx_http_psd_redis_flush(conn);
        return;
    }

    call = slot->call;
    ngx_http_psd_redis_slot_free(conn, slot);

    if (call == NULL) {
        /* its call is gone or done: the reply only keeps the FIFO in step */
        freeReplyObject(reply);
        return;
    }

    call->replies[slot->index] = reply;
    call->slots[slot->index] = NULL;

    if (++call->nreplies == call->ncmds) {
        ngx_http_psd_redis_call_finish(call, NGX_HTTP_PSD_REDIS_OK);
    }
}


static void
ngx_http_psd_redis_fail(ngx_http_psd_redis_conn_t *conn, ngx_err_t err,
    const char *reason)
{
    ngx_msec_t                  delay;
    ngx_queue_t                 failed;
    ngx_http_psd_redis_topo_t  *topo;

    if (reason && ngx_time() - conn->logged >= 1) {
        conn->logged = ngx_time();
        ngx_log_error(NGX_LOG_ERR, &conn->log, err,
                      "psd: redis \"%V\" %sat %V: %s",
                      &conn->server->name,
                      conn->sentinel ? "sentinel " : "",
                      ngx_http_psd_redis_conn_name(conn), reason);
    }

    if (ngx_http_psd_metrics) {
        (void) ngx_atomic_fetch_add(
                  &ngx_http_psd_metrics_server(conn->server->index)->errors,
                  1);
    }

    /*
     * Take the waiting slots out before any handler runs: a handler may
     * try to send again, and must find the connection down, not half torn.
     */

    ngx_queue_init(&failed);

    if (!ngx_queue_empty(&conn->pending)) {
        failed = conn->pending;
        failed.next->prev = &failed;
        failed.prev->next = &failed;
        ngx_queue_init(&conn->pending);
    }

    ngx_http_psd_redis_close(conn);
    ngx_http_psd_redis_fail_slots(conn, &failed);

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    topo = conn->server->topo;

    if (topo && !conn->sentinel) {
        /*
         * A node or primary that fails may have been replaced: ask the
         * cluster or the sentinels again soon.  A cluster node that
         * serves no slot is connected again only when it is needed.
         */

        ngx_http_psd_redis_topo_schedule(topo,
                                         NGX_HTTP_PSD_REDIS_REFRESH_SOON);

        if (conn->server->mode == NGX_HTTP_PSD_REDIS_CLUSTER
            && conn->owns == 0)
        {
            conn->failures = 0;
            return;
        }
    }

    /*
     * A connection that worked is remade at once (an idle close by the
     * server is no outage); after that, exponential backoff with jitter so
     * that many workers do not knock on a recovering server together.
     */

    if (conn->failures == 0 && conn->handshake_done) {
        delay = 1;

    } else if (conn->sentinel
               && conn->server->topo->failures < conn->server->naddrs)
    {
        /* one round over the sentinels goes at once */
        delay = 1;

    } else {
        delay = NGX_HTTP_PSD_REDIS_BACKOFF_MIN
                << ngx_min(conn->failures, 6);
        delay = ngx_min(delay, NGX_HTTP_PSD_REDIS_BACKOFF_MAX);
        delay = delay / 2 + ngx_random() % (delay / 2 + 1);
    }

    conn->failures++;
    conn->addr++;

    if (!conn->reconnect.timer_set) {
        ngx_add_timer(&conn->reconnect, delay);
    }
}


static void
ngx_http_psd_redis_close(ngx_http_psd_redis_conn_t *conn)
{
    ngx_pool_t                     *pool;
    ngx_http_psd_metrics_server_t  *ms;

    conn->state = NGX_HTTP_PSD_REDIS_DOWN;

    if (conn->peer.connection) {
        pool = conn->peer.connection->pool;

#if (NGX_SSL)
        if (conn->peer.connection->ssl) {
            conn->peer.connection->ssl->no_wait_shutdown = 1;
            (void) ngx_ssl_shutdown(conn->peer.connection);
        }
#endif
        ngx_close_connection(conn->peer.connection);
        conn->peer.connection = NULL;

        if (pool) {
            ngx_destroy_pool(pool);
        }
    }

    if (conn->reader) {
        redisReaderFree(conn->reader);
        conn->reader = NULL;
    }

    /* the buffers held AUTH with the password once */

    if (conn->out.data) {
        psd_cleanse(conn->out.data, conn->out.size);
    }

    if (conn->held.data) {
        psd_cleanse(conn->held.data, conn->held.size);
    }

    ngx_free(conn->out.data);
    ngx_free(conn->held.data);
    ngx_memzero(&conn->out, sizeof(ngx_http_psd_redis_buf_t));
    ngx_memzero(&conn->held, sizeof(ngx_http_psd_redis_buf_t));

    conn->subscribed = 0;

    ms = ngx_http_psd_metrics
         ? ngx_http_psd_metrics_server(conn->server->index) : NULL;

    if (ms && conn->npending) {
        (void) ngx_atomic_fetch_add(&ms->pending, -conn->npending);
    }

    if (ms && conn->counted_up) {
        (void) ngx_atomic_fetch_add(&ms->connected, -1);
    }

    conn->counted_up = 0;

    /* only at exit: fail() moved its slots out before */

    ngx_http_psd_redis_fail_slots(conn, &conn->pending);
    conn->npending = 0;
}


static void
ngx_http_psd_redis_fail_slots(ngx_http_psd_redis_conn_t *conn,
    ngx_queue_t *queue)
{
    ngx_queue_t                *q;
    ngx_http_psd_redis_call_t  *call;
    ngx_http_psd_redis_slot_t  *slot;

    while (!ngx_queue_empty(queue)) {
        q = ngx_queue_head(queue);
        ngx_queue_remove(q);
        slot = ngx_queue_data(q, ngx_http_psd_redis_slot_t, queue);
        call = slot->call;

        if (call) {
            call->slots[slot->index] = NULL;
        }

        ngx_http_psd_redis_slot_free(conn, slot);

        if (call) {
            ngx_http_psd_redis_call_finish(call, NGX_HTTP_PSD_REDIS_ERROR);
        }
    }
}


static ngx_int_t
ngx_http_psd_redis_append(ngx_http_psd_redis_conn_t *conn,
    ngx_http_psd_redis_buf_t *buf, const char *cmd, size_t len)
{
    if (ngx_http_psd_redis_reserve(conn, buf, len) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memcpy(buf->data + buf->len, cmd, len);
    buf->len += len;

    return NGX_OK;
}


static ngx_int_t
ngx_http_psd_redis_reserve(ngx_http_psd_redis_conn_t *conn,
    ngx_http_psd_redis_buf_t *buf, size_t len)
{
    u_char  *data;
    size_t   size, unsent;

    if (buf->len + len > buf->size) {

        /*
         * Only what is not sent yet moves: a server that reads slowly
         * does not make the buffer grow by what it has read already.  The
         * old buffer is wiped, as it may hold AUTH.
         */

        unsent = buf->len - buf->pos;
        size = ngx_max(buf->size * 2, 4096);

        while (size < unsent + len) {
            size *= 2;
        }

        data = ngx_alloc(size, &conn->log);
        if (data == NULL) {
            return NGX_ERROR;
        }

        if (buf->data) {
            ngx_memcpy(data, buf->data + buf->pos, unsent);
            psd_cleanse(buf->data, buf->size);
            ngx_free(buf->data);
        }

        buf->data = data;
        buf->size = size;
        buf->len = unsent;
        buf->pos = 0;
    }

    return NGX_OK;
}


static ngx_http_psd_redis_slot_t *
ngx_http_psd_redis_slot_get(ngx_http_psd_redis_conn_t *conn)
{
    ngx_queue_t                *q;
    ngx_http_psd_redis_slot_t  *slot;

    if (!ngx_queue_empty(&conn->free)) {
        q = ngx_queue_head(&conn->free);
        ngx_queue_remove(q);
        conn->nfree--;
        slot = ngx_queue_data(q, ngx_http_psd_redis_slot_t, queue);

    } else {
        slot = ngx_alloc(sizeof(ngx_http_psd_redis_slot_t), &conn->log);
        if (slot == NULL) {
            return NULL;
        }
    }

    ngx_memzero(slot, sizeof(ngx_http_psd_redis_slot_t));

    return slot;
}


static void
ngx_http_psd_redis_slot_free(ngx_http_psd_redis_conn_t *conn,
    ngx_http_psd_redis_slot_t *slot)
{
    if (slot->cmd) {
        free(slot->cmd);        /* formatted by hiredis with malloc() */
        slot->cmd = NULL;
    }

    if (conn->nfree < NGX_HTTP_PSD_REDIS_FREE_SLOTS) {
        ngx_queue_insert_head(&conn->free, &slot->queue);
        conn->nfree++;
        return;
    }

    ngx_free(slot);
}


static ngx_int_t
ngx_http_psd_redis_queue_internal(ngx_http_psd_redis_conn_t *conn, int argc,
    const char **argv, const size_t *argvlen)
{
    int                             len;
    char                           *cmd;
    ngx_int_t                       rc;
    ngx_http_psd_redis_slot_t      *slot;

    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0) {
        return NGX_ERROR;
    }

    rc = ngx_http_psd_redis_append(conn, &conn->out, cmd, len);

    /* the command may hold the password */
    psd_cleanse(cmd, len);
    free(cmd);

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    slot = ngx_http_psd_redis_slot_get(conn);
    if (slot == NULL) {
        return NGX_ERROR;
    }

    slot->handshake = 1;
    ngx_queue_insert_tail(&conn->pending, &slot->queue);
    conn->npending++;

    if (ngx_http_psd_metrics) {
        (void) ngx_atomic_fetch_add(
                  &ngx_http_psd_metrics_server(conn->server->index)->pending,
                  1);
    }

    return NGX_OK;
}


ngx_http_psd_redis_call_t *
ngx_http_psd_redis_call_create(ngx_http_request_t *r,
    ngx_http_psd_redis_server_t *server, ngx_uint_t ncmds)
{
    ngx_pool_t                 *pool;
    ngx_pool_cleanup_t         *cln;
    ngx_http_psd_redis_call_t  *call;

    if (r) {
        pool = r->pool;

    } else {
        pool = ngx_create_pool(1024, ngx_cycle->log);
        if (pool == NULL) {
            return NULL;
        }
    }

    /* the call and its per-command arrays: one allocation on a hot path */

    call = ngx_pcalloc(pool, sizeof(ngx_http_psd_redis_call_t)
                             + ncmds * (sizeof(redisReply *) + sizeof(void *)
                                        + sizeof(void *) + sizeof(void *)
                                        + sizeof(ngx_int_t) + sizeof(char *)
                                        + sizeof(size_t)));
    if (call == NULL) {
        goto failed;
    }

    /* every element is pointer-sized, so each array stays aligned */

    call->replies = (redisReply **) (call + 1);
    call->slots = (ngx_http_psd_redis_slot_t **) (call->replies + ncmds);
    call->scripts = (ngx_http_psd_redis_script_t **) (call->slots + ncmds);
    call->conns = (ngx_http_psd_redis_conn_t **) (call->scripts + ncmds);
    call->keyslots = (ngx_int_t *) (call->conns + ncmds);
    call->cmds = (char **) (call->keyslots + ncmds);
    call->lens = (size_t *) (call->cmds + ncmds);

    cln = ngx_pool_cleanup_add(pool, 0);
    if (cln == NULL) {
        goto failed;
    }

    cln->handler = ngx_http_psd_redis_call_cleanup;
    cln->data = call;

    call->request = r;
    call->pool = pool;
    call->server = server;
    call->nalloc = ncmds;

    return call;

failed:

    if (r == NULL) {
        ngx_destroy_pool(pool);
    }

    return NULL;
}


ngx_int_t
ngx_http_psd_redis_call_add(ngx_http_psd_redis_call_t *call, int argc,
    const char **argv, const size_t *argvlen)
{
    int    len;
    char  *cmd;

    ngx_int_t   keyslot;

    if (call->ncmds == call->nalloc || call->sent || argc < 1) {
        return NGX_ERROR;
    }

    /*
     * Checked on every server, clustered or not, so that the whole test
     * suite proves each command would run on a cluster.
     */

    keyslot = ngx_http_psd_redis_keyslot(argc, argv, argvlen,
                                         call->server->mode
                                         == NGX_HTTP_PSD_REDIS_CLUSTER);

    if (keyslot == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "psd: redis command \"%*s\" touches keys of several "
                      "cluster slots", ngx_min(argvlen[0], 32), argv[0]);
        return NGX_ERROR;
    }

    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0) {
        return NGX_ERROR;
    }

    call->cmds[call->ncmds] = cmd;
    call->lens[call->ncmds] = len;
    call->keyslots[call->ncmds] = keyslot;
    call->ncmds++;

    return NGX_OK;
}


/*
 * The slot a command's keys live in (for routing), NGX_DECLINED for a
 * command without keys or when no route is wanted, or NGX_ERROR when its
 * keys live in several slots (Redis Cluster would answer CROSSSLOT).
 * Multi-key commands are checked whatever "route" says.
 */

static ngx_int_t
ngx_http_psd_redis_keyslot(int argc, const char **argv,
    const size_t *argvlen, ngx_uint_t route)
{
    int          i, first, last;
    ngx_int_t    n;
    unsigned     slot, other;
    const char  *name;
    size_t       len;

    static ngx_str_t  keyless[] = {
        ngx_string("PING"), ngx_string("SCRIPT"), ngx_string("INFO"),
        ngx_string("TIME"), ngx_string("CLUSTER"), ngx_string("ASKING"),
        ngx_string("SENTINEL"), ngx_string("SUBSCRIBE"),
        ngx_string("CLIENT"), ngx_string("ECHO"), ngx_string("AUTH"),
        ngx_string("SELECT"), ngx_string("HELLO"), ngx_string("ROLE"),
        ngx_null_string
    };

    static ngx_str_t  allkeys[] = {
        ngx_string("DEL"), ngx_string("UNLINK"), ngx_string("EXISTS"),
        ngx_string("MGET"), ngx_string("TOUCH"), ngx_null_string
    };

    name = argv[0];
    len = argvlen[0];
    first = 1;
    last = 1;

    if ((len == 4 || len == 7) && (name[0] == 'E' || name[0] == 'e')
        && ngx_strncasecmp((u_char *) name, (u_char *) "EVALSHA", len) == 0)
    {
        /* EVAL or EVALSHA: the keys follow their count */

        if (argc < 3) {
            return NGX_DECLINED;
        }

        n = ngx_atoi((u_char *) argv[2], argvlen[2]);
        if (n == NGX_ERROR || n > argc - 3) {
            return NGX_ERROR;
        }

        if (n == 0) {
            return NGX_DECLINED;
        }

        first = 3;
        last = 2 + n;

    } else {
        for (i = 0; allkeys[i].len; i++) {
            if (len == allkeys[i].len
                && ngx_strncasecmp((u_char *) name, allkeys[i].data, len)
                   == 0)
            {
                last = argc - 1;
                break;
            }
        }

        if (last == 1) {
            if (!route) {
                return NGX_DECLINED;        /* one key: nothing to check */
            }

            for (i = 0; keyless[i].len; i++) {
                if (len == keyless[i].len
                    && ngx_strncasecmp((u_char *) name, keyless[i].data, len)
                       == 0)
                {
                    return NGX_DECLINED;
                }
            }
        }
    }

    if (argc <= first || (!route && last == first)) {
        return NGX_DECLINED;
    }

    slot = psd_slot(argv[first], argvlen[first]);

    for (i = first + 1; i <= last; i++) {
        other = psd_slot(argv[i], argvlen[i]);

        if (other != slot) {
            return NGX_ERROR;
        }
    }

    return slot;
}


ngx_int_t
ngx_http_psd_redis_call_add_script(ngx_http_psd_redis_call_t *call,
    ngx_http_psd_redis_script_t *script, int nkeys, int argc,
    const char **argv, const size_t *argvlen)
{
    int          i;
    char         nk[NGX_INT_T_LEN];
    size_t      *lens;
    ngx_int_t    rc;
    const char **args;

    args = ngx_palloc(call->pool, (argc + 3) * sizeof(char *));
    lens = ngx_palloc(call->pool, (argc + 3) * sizeof(size_t));
    if (args == NULL || lens == NULL) {
        return NGX_ERROR;
    }

    args[0] = "EVALSHA";
    lens[0] = 7;
    args[1] = script->sha1;
    lens[1] = 40;
    args[2] = nk;
    lens[2] = ngx_sprintf((u_char *) nk, "%d", nkeys) - (u_char *) nk;

    for (i = 0; i < argc; i++) {
        args[i + 3] = argv[i];
        lens[i + 3] = argvlen[i];
    }

    rc = ngx_http_psd_redis_call_add(call, argc + 3, args, lens);

    if (rc == NGX_OK) {
        /* the script travels with the command, for a NOSCRIPT retry */
        call->scripts[call->ncmds - 1] = script;
    }

    return rc;
}


ngx_int_t
ngx_http_psd_redis_call_send(ngx_http_psd_redis_call_t *call,
    ngx_http_psd_redis_handler_pt handler, void *data)
{
    ngx_http_psd_redis_topo_t      *topo;
    ngx_http_psd_metrics_server_t  *ms;

    call->handler = handler;
    call->data = data;

    topo = call->server->topo;

    if (call->ncmds && topo && topo->asking
        && !ngx_http_psd_redis_topo_known(topo))
    {
        /* the first moments of a worker: the cluster or sentinels answer */

        ngx_queue_insert_tail(&topo->waiting, &call->wait);
        call->waiting = 1;
        ngx_http_psd_redis_call_start(call);

        return NGX_OK;
    }

    if (call->ncmds == 0 || ngx_http_psd_redis_enqueue(call) != NGX_OK) {
        call->status = NGX_HTTP_PSD_REDIS_UNAVAILABLE;
        call->done = 1;

        if (ngx_http_psd_metrics) {
            ms = ngx_http_psd_metrics_server(call->server->index);
            (void) ngx_atomic_fetch_add(&ms->unavailable, 1);
        }

        if (call->request == NULL) {
            /* nobody holds a fire-and-forget call but us */
            ngx_destroy_pool(call->pool);
        }

        return NGX_DECLINED;
    }

    ngx_http_psd_redis_call_start(call);

    return NGX_OK;
}


static void
ngx_http_psd_redis_call_start(ngx_http_psd_redis_call_t *call)
{
    call->sent = 1;
    call->started = ngx_current_msec;

    call->timer.handler = ngx_http_psd_redis_call_timeout;
    call->timer.data = call;
    /* not the request's log: its context would print the request line */
    call->timer.log = ngx_cycle->log;
    ngx_add_timer(&call->timer, call->server->timeout);
}


/*
 * Puts every command of a call on its connection's pipeline, or none of
 * them: a call half sent would leave half-written state behind.
 */

static ngx_int_t
ngx_http_psd_redis_enqueue(ngx_http_psd_redis_call_t *call)
{
    ngx_uint_t                      i;
    ngx_http_psd_redis_conn_t      *conn, *hint;
    ngx_http_psd_redis_topo_t      *topo;
    ngx_http_psd_redis_server_t    *server;

    server = call->server;
    topo = server->topo;
    hint = NULL;

    for (i = 0; i < call->ncmds; i++) {
        if (server->mode != NGX_HTTP_PSD_REDIS_CLUSTER) {
            conn = server->conn;

        } else if (call->keyslots[i] >= 0) {
            conn = ngx_http_psd_redis_route(topo, call->keyslots[i]);
            hint = hint ? hint : conn;

        } else {
            conn = NULL;        /* placed below, next to the others */
        }

        call->conns[i] = conn;
    }

    for (i = 0; i < call->ncmds; i++) {
        if (call->conns[i] == NULL && call->keyslots[i] < 0
            && server->mode == NGX_HTTP_PSD_REDIS_CLUSTER)
        {
            call->conns[i] = hint ? hint : ngx_http_psd_redis_route(topo, -1);
        }

        if (call->conns[i] == NULL) {
            return NGX_DECLINED;
        }
    }

    return ngx_http_psd_redis_enqueue_routed(call);
}


/* a call of the module's own, to one connection: a node, a sentinel */

static ngx_int_t
ngx_http_psd_redis_enqueue_on(ngx_http_psd_redis_call_t *call,
    ngx_http_psd_redis_conn_t *conn)
{
    ngx_uint_t  i;

    for (i = 0; i < call->ncmds; i++) {
        call->conns[i] = conn;
    }

    return ngx_http_psd_redis_enqueue_routed(call);
}


static ngx_int_t
ngx_http_psd_redis_enqueue_routed(ngx_http_psd_redis_call_t *call)
{
    ngx_uint_t                      i;
    ngx_http_psd_redis_buf_t       *buf;
    ngx_http_psd_redis_conn_t      *conn;
    ngx_http_psd_redis_slot_t      *slot;
    ngx_http_psd_redis_server_t    *server;
    ngx_http_psd_metrics_server_t  *ms;

    server = call->server;

    for (i = 0; i < call->ncmds; i++) {
        conn = call->conns[i];

        if (conn->state == NGX_HTTP_PSD_REDIS_DOWN) {
            if (conn->reconnect.timer_set && server->topo
                && server->mode == NGX_HTTP_PSD_REDIS_CLUSTER)
            {
                /* traffic for a failed node: is a replica serving yet? */
                ngx_http_psd_redis_topo_schedule(server->topo,
                                               NGX_HTTP_PSD_REDIS_REFRESH_SOON);
            }

            if (conn->reconnect.timer_set || !conn->fixed) {
                return NGX_DECLINED;
            }

            /* a cluster node connected on demand */
            ngx_http_psd_redis_connect(conn);

            if (conn->state == NGX_HTTP_PSD_REDIS_DOWN) {
                return NGX_DECLINED;
            }
        }

        if (conn->npending + call->ncmds > server->max_pending) {
            return NGX_DECLINED;
        }

        conn->reserve = 0;
    }

    for (i = 0; i < call->ncmds; i++) {
        call->conns[i]->reserve += call->lens[i];
    }

    for (i = 0; i < call->ncmds; i++) {
        conn = call->conns[i];

        if (conn->reserve == 0) {
            continue;
        }

        buf = conn->handshake_done ? &conn->out : &conn->held;

        if (ngx_http_psd_redis_reserve(conn, buf, conn->reserve) != NGX_OK) {
            return NGX_DECLINED;
        }

        conn->reserve = 0;
    }

    for (i = 0; i < call->ncmds; i++) {
        call->slots[i] = ngx_http_psd_redis_slot_get(call->conns[i]);

        if (call->slots[i] == NULL) {
            while (i--) {
                ngx_http_psd_redis_slot_free(call->conns[i], call->slots[i]);
                call->slots[i] = NULL;
            }

            return NGX_DECLINED;
        }
    }

    /* nothing below fails */

    for (i = 0; i < call->ncmds; i++) {
        conn = call->conns[i];
        slot = call->slots[i];
        buf = conn->handshake_done ? &conn->out : &conn->held;

        (void) ngx_http_psd_redis_append(conn, buf, call->cmds[i],
                                         call->lens[i]);

        slot->call = call;
        slot->index = i;
        slot->script = call->scripts[i];

        if (slot->script || server->mode == NGX_HTTP_PSD_REDIS_CLUSTER) {
            /* a NOSCRIPT, MOVED or ASK answer sends it again */
            slot->cmd = call->cmds[i];
            slot->len = call->lens[i];

        } else {
            free(call->cmds[i]);
        }

        call->cmds[i] = NULL;

        ngx_queue_insert_tail(&conn->pending, &slot->queue);
        conn->npending++;

        /*
         * Writing from a posted event lets every request handled in this
         * turn of the event loop share one write.
         */

        if (conn->state == NGX_HTTP_PSD_REDIS_READY
            && !conn->peer.connection->write->posted)
        {
            ngx_post_event(conn->peer.connection->write, &ngx_posted_events);
        }
    }

    if (ngx_http_psd_metrics) {
        ms = ngx_http_psd_metrics_server(server->index);
        (void) ngx_atomic_fetch_add(&ms->commands, call->ncmds);
        (void) ngx_atomic_fetch_add(&ms->pending, call->ncmds);
    }

    return NGX_OK;
}


static void
ngx_http_psd_redis_call_finish(ngx_http_psd_redis_call_t *call,
    ngx_uint_t status)
{
    ngx_uint_t                      i;
    ngx_pool_t                     *pool;
    ngx_http_psd_metrics_server_t  *ms;

    if (call->done) {
        return;
    }

    call->done = 1;
    call->status = status;

    if (call->timer.timer_set) {
        ngx_del_timer(&call->timer);
    }

    if (call->waiting) {
        ngx_queue_remove(&call->wait);
        call->waiting = 0;
    }

    for (i = 0; i < call->ncmds; i++) {
        if (call->slots[i]) {
            call->slots[i]->call = NULL;
            call->slots[i] = NULL;
        }
    }

    if (status == NGX_HTTP_PSD_REDIS_OK && ngx_http_psd_metrics) {
        ms = ngx_http_psd_metrics_server(call->server->index);
        ngx_http_psd_metrics_latency(ms, ngx_current_msec - call->started);
    }

    /* the handler may free the request, and the call with its pool */

    pool = (call->request == NULL) ? call->pool : NULL;

    if (call->handler) {
        call->handler(call);
    }

    if (pool) {
        ngx_destroy_pool(pool);
    }
}


static void
ngx_http_psd_redis_call_timeout(ngx_event_t *ev)
{
    ngx_http_psd_redis_call_t   *call = ev->data;

    if (ngx_http_psd_metrics) {
        (void) ngx_atomic_fetch_add(
                  &ngx_http_psd_metrics_server(call->server->index)->timeouts,
                  1);
    }

    if (ngx_time() - call->server->logged >= 1) {
        call->server->logged = ngx_time();
        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "psd: redis \"%V\" did not answer within %M ms",
                      &call->server->name, call->server->timeout);
    }

    ngx_http_psd_redis_call_finish(call, NGX_HTTP_PSD_REDIS_TIMEOUT);
}


static void
ngx_http_psd_redis_call_cleanup(void *data)
{
    ngx_http_psd_redis_call_t  *call = data;

    ngx_uint_t  i;

    /* the request is going away: nothing may reach it from now on */

    call->handler = NULL;

    if (!call->done) {
        call->done = 1;

        if (call->timer.timer_set) {
            ngx_del_timer(&call->timer);
        }
    }

    if (call->waiting) {
        ngx_queue_remove(&call->wait);
        call->waiting = 0;
    }

    for (i = 0; i < call->ncmds; i++) {
        if (call->sent && call->slots[i]) {
            call->slots[i]->call = NULL;
            call->slots[i] = NULL;
        }

        if (call->replies[i]) {
            freeReplyObject(call->replies[i]);
            call->replies[i] = NULL;
        }

        if (call->cmds[i]) {
            free(call->cmds[i]);
            call->cmds[i] = NULL;
        }
    }
}


/*
 * Suspends a handler until its call is done: a phase handler returns
 * NGX_AGAIN and its call's handler runs ngx_http_psd_redis_resume(); a
 * content handler takes a reference (r->main->count++), returns NGX_DONE,
 * and its call's handler finalizes the request.
 * Meanwhile a client that goes away finalizes the request, which detaches
 * the call through the pool cleanup above.
 */

void
ngx_http_psd_redis_wait(ngx_http_request_t *r)
{
    /* a body being discarded keeps its own read handler */
    if (!r->discard_body) {
        r->read_event_handler = ngx_http_test_reading;
    }

    r->write_event_handler = ngx_http_request_empty_handler;
}


void
ngx_http_psd_redis_resume(ngx_http_request_t *r)
{
    ngx_connection_t  *c;

    c = r->connection;

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


const char *
ngx_http_psd_redis_status_name(ngx_uint_t status)
{
    static const char  *names[] = { "ok", "timeout", "error", "unavailable" };

    return status < 4 ? names[status] : "unknown";
}


size_t
ngx_http_psd_redis_status_len(ngx_http_request_t *r)
{
    ngx_http_psd_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_psd_module);

    return pmcf->servers.nelts
           * (sizeof("{\"name\":\"\",\"mode\":\"sentinel\","
                     "\"connected\":false,\"pending\":,\"nodes\":,"
                     "\"primary\":\"\",\"changes\":},") - 1
              + 64 + 3 * NGX_INT_T_LEN + NGX_SOCKADDR_STRLEN);
}


/*
 * "connected": every node that serves slots (or the primary) has its
 * connection up; "changes": how often this worker saw slots or the
 * primary move.
 */

u_char *
ngx_http_psd_redis_status_write(ngx_http_request_t *r, u_char *p)
{
    ngx_uint_t                     i, j, up, pending, nodes;
    ngx_http_psd_main_conf_t      *pmcf;
    ngx_http_psd_redis_conn_t     *conn;
    ngx_http_psd_redis_topo_t     *topo;
    ngx_http_psd_redis_server_t  **servers;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_psd_module);
    servers = pmcf->servers.elts;

    for (i = 0; i < pmcf->servers.nelts; i++) {
        topo = servers[i]->topo;
        conn = servers[i]->conn;

        if (servers[i]->mode == NGX_HTTP_PSD_REDIS_CLUSTER && topo) {
            up = topo->known;
            pending = 0;
            nodes = 0;

            for (j = 0; j < topo->nnodes; j++) {
                pending += topo->nodes[j]->npending;

                if (topo->nodes[j]->owns == 0) {
                    continue;
                }

                nodes++;

                if (!topo->nodes[j]->handshake_done
                    || topo->nodes[j]->state != NGX_HTTP_PSD_REDIS_READY)
                {
                    up = 0;
                }
            }

            p = ngx_sprintf(p, "%s{\"name\":\"%V\",\"mode\":\"cluster\","
                            "\"connected\":%s,\"pending\":%ui,"
                            "\"nodes\":%ui,\"changes\":%ui}",
                            i ? "," : "", &servers[i]->name,
                            up ? "true" : "false", pending, nodes,
                            topo->changes);
            continue;
        }

        p = ngx_sprintf(p, "%s{\"name\":\"%V\",", i ? "," : "",
                        &servers[i]->name);

        if (topo) {
            p = ngx_sprintf(p, "\"mode\":\"sentinel\",");
        }

        p = ngx_sprintf(p, "\"connected\":%s,\"pending\":%ui",
                        (conn && conn->handshake_done
                         && conn->state == NGX_HTTP_PSD_REDIS_READY)
                        ? "true" : "false",
                        conn ? conn->npending : 0);

        if (topo && conn) {
            p = ngx_sprintf(p, ",\"primary\":\"%V\",\"changes\":%ui",
                            conn->fixed ? &conn->own.name
                                        : &ngx_http_psd_redis_unknown,
                            topo->changes);
        }

        *p++ = '}';
    }

    return p;
}


static ngx_str_t *
ngx_http_psd_redis_conn_name(ngx_http_psd_redis_conn_t *conn)
{
    ngx_http_psd_redis_server_t  *server;

    server = conn->server;

    if (conn->fixed) {
        return &conn->own.name;
    }

    if (server->mode == NGX_HTTP_PSD_REDIS_SINGLE) {
        return &server->target;
    }

    return &server->addrs[conn->addr % server->naddrs].name;
}


/*
 * Redis Cluster: which node serves a slot.  The map is learned from
 * CLUSTER SLOTS when the worker starts, after a node fails, after a MOVED
 * answer and every 30 s; a MOVED answer also fixes its own slot at once.
 */

static ngx_int_t
ngx_http_psd_redis_topo_known(ngx_http_psd_redis_topo_t *topo)
{
    if (topo->server->mode == NGX_HTTP_PSD_REDIS_CLUSTER) {
        return topo->known;
    }

    return topo->server->conn->fixed;
}


static ngx_http_psd_redis_conn_t *
ngx_http_psd_redis_route(ngx_http_psd_redis_topo_t *topo, ngx_int_t keyslot)
{
    ngx_uint_t                  i, n;
    ngx_http_psd_redis_conn_t  *conn;

    if (!topo->known) {
        return NULL;
    }

    if (keyslot >= 0) {
        n = topo->map[keyslot];
        return n ? topo->nodes[n - 1] : NULL;
    }

    /* a command without keys: any node that serves slots and is up */

    for (i = 0; i < topo->nnodes; i++) {
        conn = topo->nodes[(topo->next + i) % topo->nnodes];

        if (conn->owns && conn->state == NGX_HTTP_PSD_REDIS_READY) {
            return conn;
        }
    }

    n = topo->map[0];

    return n ? topo->nodes[n - 1] : NULL;
}


/* the node at an address, made on first sight */

static ngx_http_psd_redis_conn_t *
ngx_http_psd_redis_node(ngx_http_psd_redis_topo_t *topo,
    struct sockaddr *sockaddr, socklen_t socklen)
{
    ngx_uint_t                  i;
    ngx_http_psd_redis_conn_t  *conn;

    for (i = 0; i < topo->nnodes; i++) {
        conn = topo->nodes[i];

        if (ngx_cmp_sockaddr(&conn->sockaddr.sockaddr, conn->own.socklen,
                             sockaddr, socklen, 1)
            == NGX_OK)
        {
            return conn;
        }
    }

    if (topo->nnodes == NGX_HTTP_PSD_REDIS_MAX_NODES) {
        ngx_log_error(NGX_LOG_ERR, &topo->log, 0,
                      "psd: redis \"%V\" has more than %d cluster nodes",
                      &topo->server->name, NGX_HTTP_PSD_REDIS_MAX_NODES);
        return NULL;
    }

    conn = ngx_http_psd_redis_conn_create((ngx_cycle_t *) ngx_cycle,
                                          topo->server);
    if (conn == NULL) {
        return NULL;
    }

    ngx_http_psd_redis_conn_address(conn, sockaddr, socklen);

    topo->nodes[topo->nnodes++] = conn;

    return conn;
}


/* "127.0.0.1:7001" or "::1:7001", as Redis writes node addresses */

static ngx_int_t
ngx_http_psd_redis_parse_node(u_char *text, size_t len, in_port_t port,
    ngx_sockaddr_t *sa, socklen_t *socklen)
{
    u_char     *colon;
    ngx_int_t   n;
    ngx_addr_t  addr;
    ngx_pool_t *pool;

    if (port == 0) {
        colon = NULL;

        for (n = len - 1; n > 0; n--) {
            if (text[n] == ':') {
                colon = &text[n];
                break;
            }
        }

        if (colon == NULL) {
            return NGX_ERROR;
        }

        n = ngx_atoi(colon + 1, text + len - colon - 1);
        if (n < 1 || n > 65535) {
            return NGX_ERROR;
        }

        port = (in_port_t) n;
        len = colon - text;
    }

    /* ngx_parse_addr() wants a pool for the address it makes */

    pool = ngx_create_pool(512, ngx_cycle->log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    if (len == 0 || ngx_parse_addr(pool, &addr, text, len) != NGX_OK) {
        ngx_destroy_pool(pool);
        return NGX_ERROR;
    }

    ngx_memcpy(sa, addr.sockaddr, addr.socklen);
    *socklen = addr.socklen;
    ngx_inet_set_port(&sa->sockaddr, port);

    ngx_destroy_pool(pool);

    return NGX_OK;
}


/* asks again after "delay" ms, unless it is asked sooner already */

static void
ngx_http_psd_redis_topo_schedule(ngx_http_psd_redis_topo_t *topo,
    ngx_msec_t delay)
{
    ngx_msec_t  when;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    when = ngx_current_msec + delay;

    if (topo->refresh.timer_set
        && (ngx_msec_int_t) (topo->refresh.timer.key - when) <= 0)
    {
        return;
    }

    ngx_add_timer(&topo->refresh, delay);
}


static void
ngx_http_psd_redis_topo_handler(ngx_event_t *ev)
{
    ngx_http_psd_redis_topo_t  *topo = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (topo->server->mode == NGX_HTTP_PSD_REDIS_CLUSTER) {
        ngx_http_psd_redis_refresh(topo);
        return;
    }

    /*
     * The primary failed or answered READONLY: ask the sentinels again,
     * at most once a second, unless a failover message is on its way.
     */

    if (topo->asking) {
        return;
    }

    if (ngx_current_msec - topo->asked < NGX_HTTP_PSD_REDIS_REFRESH_DOWN) {
        ngx_http_psd_redis_topo_schedule(topo,
                                         NGX_HTTP_PSD_REDIS_REFRESH_DOWN
                                         - (ngx_current_msec - topo->asked));
        return;
    }

    if (topo->sentinel->reconnect.timer_set) {
        return;
    }

    ngx_http_psd_redis_close(topo->sentinel);
    ngx_http_psd_redis_sentinel_ask(topo);
}


/* calls that waited for the topology go out now, or fail */

static void
ngx_http_psd_redis_topo_release(ngx_http_psd_redis_topo_t *topo,
    ngx_uint_t known)
{
    ngx_queue_t                 waiting, *q;
    ngx_http_psd_redis_call_t  *call;

    if (ngx_queue_empty(&topo->waiting)) {
        return;
    }

    /* a handler may make new calls: they must not join this round */

    waiting = topo->waiting;
    waiting.next->prev = &waiting;
    waiting.prev->next = &waiting;
    ngx_queue_init(&topo->waiting);

    while (!ngx_queue_empty(&waiting)) {
        q = ngx_queue_head(&waiting);
        ngx_queue_remove(q);
        call = ngx_queue_data(q, ngx_http_psd_redis_call_t, wait);
        call->waiting = 0;

        if (known && ngx_http_psd_redis_enqueue(call) == NGX_OK) {
            continue;
        }

        ngx_http_psd_redis_call_finish(call, NGX_HTTP_PSD_REDIS_UNAVAILABLE);
    }
}


static void
ngx_http_psd_redis_refresh(ngx_http_psd_redis_topo_t *topo)
{
    ngx_uint_t                   i;
    const char                  *argv[2];
    size_t                       argvlen[2];
    ngx_http_psd_redis_call_t   *call;
    ngx_http_psd_redis_conn_t   *conn, *pick;

    if (topo->asking) {
        return;
    }

    /* a node that answers already, else the next one that may connect */

    pick = NULL;

    for (i = 0; i < topo->nnodes && pick == NULL; i++) {
        conn = topo->nodes[(topo->next + i) % topo->nnodes];

        if (conn->state == NGX_HTTP_PSD_REDIS_READY && conn->handshake_done) {
            pick = conn;
        }
    }

    for (i = 0; i < topo->nnodes && pick == NULL; i++) {
        conn = topo->nodes[(topo->next + i) % topo->nnodes];

        if (conn->state == NGX_HTTP_PSD_REDIS_DOWN
            && !conn->reconnect.timer_set)
        {
            ngx_http_psd_redis_connect(conn);
        }

        if (conn->state != NGX_HTTP_PSD_REDIS_DOWN) {
            pick = conn;
        }
    }

    if (pick == NULL) {
        goto failed;
    }

    call = ngx_http_psd_redis_call_create(NULL, topo->server, 1);
    if (call == NULL) {
        goto failed;
    }

    argv[0] = "CLUSTER";
    argvlen[0] = 7;
    argv[1] = "SLOTS";
    argvlen[1] = 5;

    if (ngx_http_psd_redis_call_add(call, 2, argv, argvlen) != NGX_OK) {
        ngx_destroy_pool(call->pool);
        goto failed;
    }

    call->handler = ngx_http_psd_redis_refreshed;
    call->data = topo;
    call->conns[0] = pick;
    call->keyslots[0] = -1;

    if (ngx_http_psd_redis_enqueue_on(call, pick) != NGX_OK) {
        ngx_destroy_pool(call->pool);
        goto failed;
    }

    topo->asking = 1;
    topo->asked = ngx_current_msec;
    ngx_http_psd_redis_call_start(call);

    return;

failed:

    ngx_http_psd_redis_refresh_failed(topo);
}


static void
ngx_http_psd_redis_refresh_failed(ngx_http_psd_redis_topo_t *topo)
{
    ngx_msec_t  delay;

    topo->asking = 0;
    topo->next++;
    topo->failures++;

    delay = NGX_HTTP_PSD_REDIS_BACKOFF_MIN << ngx_min(topo->failures, 4);
    delay = ngx_min(delay, NGX_HTTP_PSD_REDIS_REFRESH_DOWN);

    ngx_http_psd_redis_topo_schedule(topo, delay);

    if (!topo->known) {
        /* nobody can say where keys live: fail now, not at the deadline */
        ngx_http_psd_redis_topo_release(topo, 0);
    }
}


static void
ngx_http_psd_redis_refreshed(ngx_http_psd_redis_call_t *call)
{
    ngx_http_psd_redis_topo_t  *topo = call->data;

    size_t                      i, j;
    u_char                      map[PSD_SLOT_COUNT];
    in_port_t                   port;
    ngx_uint_t                  down, changed;
    socklen_t                   socklen;
    redisReply                 *reply, *range, *node;
    ngx_sockaddr_t              sa;
    ngx_http_psd_redis_conn_t  *asked, *conn;

    topo->asking = 0;
    reply = call->replies[0];
    asked = call->conns[0];

    if (call->status != NGX_HTTP_PSD_REDIS_OK
        || reply->type != REDIS_REPLY_ARRAY || reply->elements == 0)
    {
        if (call->status == NGX_HTTP_PSD_REDIS_OK) {
            ngx_log_error(NGX_LOG_ERR, &topo->log, 0,
                          "psd: redis \"%V\" at %V gave no cluster slots%s%*s",
                          &topo->server->name,
                          ngx_http_psd_redis_conn_name(asked),
                          reply->type == REDIS_REPLY_ERROR ? ": " : "",
                          reply->type == REDIS_REPLY_ERROR
                          ? ngx_min(reply->len, 200) : 0,
                          reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        }

        ngx_http_psd_redis_refresh_failed(topo);
        return;
    }

    ngx_memzero(map, sizeof(map));

    for (i = 0; i < reply->elements; i++) {
        range = reply->element[i];

        if (range->type != REDIS_REPLY_ARRAY || range->elements < 3
            || range->element[0]->type != REDIS_REPLY_INTEGER
            || range->element[1]->type != REDIS_REPLY_INTEGER
            || range->element[0]->integer < 0
            || range->element[1]->integer >= PSD_SLOT_COUNT
            || range->element[0]->integer > range->element[1]->integer)
        {
            goto invalid;
        }

        node = range->element[2];

        if (node->type != REDIS_REPLY_ARRAY || node->elements < 2
            || node->element[0]->type != REDIS_REPLY_STRING
            || node->element[1]->type != REDIS_REPLY_INTEGER
            || node->element[1]->integer < 1
            || node->element[1]->integer > 65535)
        {
            goto invalid;
        }

        port = (in_port_t) node->element[1]->integer;

        /* "" or "?": the node does not know its address; we do */

        if (node->element[0]->len == 0
            || (node->element[0]->len == 1 && node->element[0]->str[0] == '?'))
        {
            ngx_memcpy(&sa, asked->own.sockaddr, asked->own.socklen);
            socklen = asked->own.socklen;
            ngx_inet_set_port(&sa.sockaddr, port);

        } else if (ngx_http_psd_redis_parse_node(
                       (u_char *) node->element[0]->str,
                       node->element[0]->len, port, &sa, &socklen)
                   != NGX_OK)
        {
            /* a host name: resolving it here would block the worker */
            goto invalid;
        }

        conn = ngx_http_psd_redis_node(topo, &sa.sockaddr, socklen);
        if (conn == NULL) {
            ngx_http_psd_redis_refresh_failed(topo);
            return;
        }

        for (j = 0; j < topo->nnodes; j++) {
            if (topo->nodes[j] == conn) {
                break;
            }
        }

        ngx_memset(&map[range->element[0]->integer], (u_char) (j + 1),
                   range->element[1]->integer - range->element[0]->integer
                   + 1);
    }

    changed = topo->known
              && ngx_memcmp(map, topo->map, PSD_SLOT_COUNT) != 0;

    ngx_memcpy(topo->map, map, PSD_SLOT_COUNT);
    ngx_http_psd_redis_count_owned(topo);

    if (changed) {
        topo->changes++;
        ngx_log_error(NGX_LOG_NOTICE, &topo->log, 0,
                      "psd: redis \"%V\" cluster slots moved",
                      &topo->server->name);
    }

    topo->known = 1;
    topo->failures = 0;

    /* nodes that serve slots are connected now; the others let go */

    down = 0;

    for (j = 0; j < topo->nnodes; j++) {
        conn = topo->nodes[j];

        if (conn->owns == 0) {
            if (conn->state == NGX_HTTP_PSD_REDIS_DOWN
                && conn->reconnect.timer_set)
            {
                ngx_del_timer(&conn->reconnect);
            }

            continue;
        }

        if (conn->state == NGX_HTTP_PSD_REDIS_DOWN) {
            if (!conn->reconnect.timer_set) {
                ngx_http_psd_redis_connect(conn);
            }

            down = 1;
        }
    }

    ngx_http_psd_redis_topo_schedule(topo,
                                     down ? NGX_HTTP_PSD_REDIS_REFRESH_DOWN
                                          : NGX_HTTP_PSD_REDIS_REFRESH);

    ngx_http_psd_redis_topo_release(topo, 1);

    return;

invalid:

    ngx_log_error(NGX_LOG_ERR, &topo->log, 0,
                  "psd: redis \"%V\" at %V gave cluster slots that name no "
                  "IP address and port", &topo->server->name,
                  ngx_http_psd_redis_conn_name(asked));

    ngx_http_psd_redis_refresh_failed(topo);
}


static void
ngx_http_psd_redis_count_owned(ngx_http_psd_redis_topo_t *topo)
{
    ngx_uint_t  i;

    for (i = 0; i < topo->nnodes; i++) {
        topo->nodes[i]->owns = 0;
    }

    for (i = 0; i < PSD_SLOT_COUNT; i++) {
        if (topo->map[i]) {
            topo->nodes[topo->map[i] - 1]->owns++;
        }
    }
}


/*
 * "MOVED <slot> <ip>:<port>": the slot lives elsewhere now; "ASK ...": it
 * is being migrated and this key is there already, for this command only.
 * Either way the command goes again, to that node, keeping its place in
 * its call.
 */

static ngx_int_t
ngx_http_psd_redis_redirect(ngx_http_psd_redis_conn_t *conn,
    ngx_http_psd_redis_slot_t *slot, redisReply *reply)
{
    u_char                         *p, *last, *space;
    ngx_int_t                       keyslot;
    ngx_uint_t                      asking, j;
    socklen_t                       socklen;
    ngx_sockaddr_t                  sa;
    ngx_http_psd_redis_topo_t      *topo;
    ngx_http_psd_redis_conn_t      *target;

    topo = conn->server->topo;

    if (conn->server->mode == NGX_HTTP_PSD_REDIS_SENTINEL) {
        /* a primary turned replica: the sentinels know the new one */
        if (reply->len >= 8 && ngx_strncmp(reply->str, "READONLY", 8) == 0) {
            ngx_http_psd_redis_topo_schedule(topo, 0);
        }

        return NGX_DECLINED;
    }

    if (slot->call == NULL || slot->cmd == NULL
        || slot->redirects >= NGX_HTTP_PSD_REDIS_MAX_REDIRECTS)
    {
        return NGX_DECLINED;
    }

    p = (u_char *) reply->str;
    last = p + reply->len;

    if (reply->len >= 8 && ngx_strncmp(p, "TRYAGAIN", 8) == 0) {
        slot->node = conn;
        ngx_queue_insert_tail(&topo->retry, &slot->queue);

        if (!topo->retry_ev.timer_set) {
            ngx_add_timer(&topo->retry_ev, NGX_HTTP_PSD_REDIS_TRYAGAIN);
        }

        return NGX_OK;
    }

    if (reply->len > 6 && ngx_strncmp(p, "MOVED ", 6) == 0) {
        asking = 0;
        p += 6;

    } else if (reply->len > 4 && ngx_strncmp(p, "ASK ", 4) == 0) {
        asking = 1;
        p += 4;

    } else {
        return NGX_DECLINED;
    }

    space = ngx_strlchr(p, last, ' ');
    if (space == NULL) {
        return NGX_DECLINED;
    }

    keyslot = ngx_atoi(p, space - p);

    if (keyslot == NGX_ERROR || keyslot >= PSD_SLOT_COUNT
        || ngx_http_psd_redis_parse_node(space + 1, last - space - 1, 0, &sa,
                                         &socklen)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    target = ngx_http_psd_redis_node(topo, &sa.sockaddr, socklen);
    if (target == NULL) {
        return NGX_DECLINED;
    }

    if (!asking) {
        for (j = 0; j < topo->nnodes; j++) {
            if (topo->nodes[j] == target) {
                break;
            }
        }

        if (topo->map[keyslot]) {
            topo->nodes[topo->map[keyslot] - 1]->owns--;
        }

        if (topo->map[keyslot] != j + 1) {
            topo->changes++;
        }

        topo->map[keyslot] = (u_char) (j + 1);
        target->owns++;

        /* one MOVED seldom comes alone: learn the whole map soon */
        ngx_http_psd_redis_topo_schedule(topo, 0);
    }

    slot->asking = asking;
    slot->redirects++;

    return ngx_http_psd_redis_resend(target, slot);
}


/* a command sent again, to "target", keeping its place in its call */

static ngx_int_t
ngx_http_psd_redis_resend(ngx_http_psd_redis_conn_t *target,
    ngx_http_psd_redis_slot_t *slot)
{
    int                             len;
    char                           *cmd;
    size_t                          argvlen[1];
    const char                     *argv[1];
    ngx_http_psd_redis_buf_t       *buf;
    ngx_http_psd_redis_slot_t      *ask;
    ngx_http_psd_metrics_server_t  *ms;

    if (target->state == NGX_HTTP_PSD_REDIS_DOWN) {
        if (target->reconnect.timer_set) {
            return NGX_DECLINED;
        }

        ngx_http_psd_redis_connect(target);

        if (target->state == NGX_HTTP_PSD_REDIS_DOWN) {
            return NGX_DECLINED;
        }
    }

    buf = target->handshake_done ? &target->out : &target->held;

    if (slot->asking) {
        argv[0] = "ASKING";
        argvlen[0] = 6;

        len = redisFormatCommandArgv(&cmd, 1, argv, argvlen);
        if (len < 0) {
            return NGX_DECLINED;
        }

        ask = ngx_http_psd_redis_slot_get(target);

        if (ask == NULL
            || ngx_http_psd_redis_reserve(target, buf, len + slot->len)
               != NGX_OK)
        {
            if (ask) {
                ngx_http_psd_redis_slot_free(target, ask);
            }

            free(cmd);
            return NGX_DECLINED;
        }

        /* nobody waits for its "+OK": it is dropped in turn */

        (void) ngx_http_psd_redis_append(target, buf, cmd, len);
        free(cmd);

        ngx_queue_insert_tail(&target->pending, &ask->queue);
        target->npending++;

    } else if (ngx_http_psd_redis_reserve(target, buf, slot->len) != NGX_OK) {
        return NGX_DECLINED;
    }

    (void) ngx_http_psd_redis_append(target, buf, slot->cmd, slot->len);

    slot->node = target;
    ngx_queue_insert_tail(&target->pending, &slot->queue);
    target->npending++;

    if (ngx_http_psd_metrics) {
        ms = ngx_http_psd_metrics_server(target->server->index);
        (void) ngx_atomic_fetch_add(&ms->pending, 1 + slot->asking);
    }

    if (target->state == NGX_HTTP_PSD_REDIS_READY
        && !target->peer.connection->write->posted)
    {
        ngx_post_event(target->peer.connection->write, &ngx_posted_events);
    }

    return NGX_OK;
}


/*
 * "TRYAGAIN": a multi-key script on a slot being migrated found some of
 * its keys gone already.  The command waits a little and goes to the same
 * node again (with ASKING if it was asked there), until it succeeds, is
 * redirected, or its call's deadline passes.
 */

static void
ngx_http_psd_redis_retry_handler(ngx_event_t *ev)
{
    ngx_http_psd_redis_topo_t  *topo = ev->data;

    ngx_queue_t                 retry, *q;
    ngx_http_psd_redis_call_t  *call;
    ngx_http_psd_redis_slot_t  *slot;

    if (ngx_queue_empty(&topo->retry)) {
        return;
    }

    retry = topo->retry;
    retry.next->prev = &retry;
    retry.prev->next = &retry;
    ngx_queue_init(&topo->retry);

    while (!ngx_queue_empty(&retry)) {
        q = ngx_queue_head(&retry);
        ngx_queue_remove(q);
        slot = ngx_queue_data(q, ngx_http_psd_redis_slot_t, queue);
        call = slot->call;

        if (call && ngx_http_psd_redis_resend(slot->node, slot) == NGX_OK) {
            continue;
        }

        if (call) {
            call->slots[slot->index] = NULL;
        }

        ngx_http_psd_redis_slot_free(slot->node, slot);

        if (call) {
            ngx_http_psd_redis_call_finish(call, NGX_HTTP_PSD_REDIS_ERROR);
        }
    }
}


/*
 * Sentinel: one connection per worker asks where the primary is, then
 * subscribes to "+switch-master" on the same connection to hear of the
 * next failover at once.  When it fails, the next sentinel is asked.
 */

static void
ngx_http_psd_redis_sentinel_ask(ngx_http_psd_redis_topo_t *topo)
{
    const char                 *argv[3];
    size_t                      argvlen[3];
    ngx_http_psd_redis_call_t  *call;
    ngx_http_psd_redis_conn_t  *sentinel;

    sentinel = topo->sentinel;

    topo->asking = 1;
    topo->asked = ngx_current_msec;

    ngx_http_psd_redis_connect(sentinel);

    if (sentinel->state == NGX_HTTP_PSD_REDIS_DOWN) {
        goto failed;
    }

    call = ngx_http_psd_redis_call_create(NULL, topo->server, 2);
    if (call == NULL) {
        goto failed;
    }

    argv[0] = "SENTINEL";
    argvlen[0] = 8;
    argv[1] = "get-master-addr-by-name";
    argvlen[1] = 23;
    argv[2] = (const char *) topo->server->master.data;
    argvlen[2] = topo->server->master.len;

    if (ngx_http_psd_redis_call_add(call, 3, argv, argvlen) != NGX_OK) {
        ngx_destroy_pool(call->pool);
        goto failed;
    }

    argv[0] = "SUBSCRIBE";
    argvlen[0] = 9;
    argv[1] = "+switch-master";
    argvlen[1] = 14;

    if (ngx_http_psd_redis_call_add(call, 2, argv, argvlen) != NGX_OK) {
        ngx_destroy_pool(call->pool);
        goto failed;
    }

    call->handler = ngx_http_psd_redis_sentinel_answered;
    call->data = topo;

    if (ngx_http_psd_redis_enqueue_on(call, sentinel) != NGX_OK) {
        ngx_destroy_pool(call->pool);
        goto failed;
    }

    ngx_http_psd_redis_call_start(call);

    return;

failed:

    /* the sentinel connection's own backoff brings us back */

    topo->failures++;
    topo->asking = (topo->failures < topo->server->naddrs
                    && sentinel->reconnect.timer_set);

    if (!topo->asking && !ngx_http_psd_redis_topo_known(topo)) {
        ngx_http_psd_redis_topo_release(topo, 0);
    }
}


static void
ngx_http_psd_redis_sentinel_answered(ngx_http_psd_redis_call_t *call)
{
    ngx_http_psd_redis_topo_t  *topo = call->data;

    ngx_int_t                   port;
    redisReply                 *addr, *sub;
    ngx_http_psd_redis_conn_t  *sentinel;

    topo->asking = 0;
    sentinel = topo->sentinel;

    if (call->status != NGX_HTTP_PSD_REDIS_OK) {
        goto failed;
    }

    addr = call->replies[0];
    sub = call->replies[1];

    if (addr->type != REDIS_REPLY_ARRAY || addr->elements != 2
        || addr->element[0]->type != REDIS_REPLY_STRING
        || addr->element[1]->type != REDIS_REPLY_STRING)
    {
        ngx_log_error(NGX_LOG_ERR, &topo->log, 0,
                      "psd: redis \"%V\": sentinel at %V does not know "
                      "primary \"%V\"", &topo->server->name,
                      ngx_http_psd_redis_conn_name(sentinel),
                      &topo->server->master);
        goto failed;
    }

    port = ngx_atoi((u_char *) addr->element[1]->str, addr->element[1]->len);

    if (port < 1 || port > 65535
        || ngx_http_psd_redis_primary(topo,
                                      (u_char *) addr->element[0]->str,
                                      addr->element[0]->len,
                                      (in_port_t) port)
           != NGX_OK)
    {
        goto failed;
    }

    topo->failures = 0;

    if (sub->type == REDIS_REPLY_ARRAY && sentinel->npending == 0
        && sentinel->state == NGX_HTTP_PSD_REDIS_READY)
    {
        sentinel->subscribed = 1;
    }

    return;

failed:

    /*
     * On to the next sentinel, at once; calls made meanwhile wait for it,
     * until every sentinel of the round has failed.
     */

    topo->failures++;

    if (sentinel->state != NGX_HTTP_PSD_REDIS_DOWN) {
        ngx_http_psd_redis_fail(sentinel, 0, NULL);
    }

    if (topo->failures < topo->server->naddrs) {
        topo->asking = 1;

    } else if (!ngx_http_psd_redis_topo_known(topo)) {
        ngx_http_psd_redis_topo_release(topo, 0);
    }
}


/* "<master> <old ip> <old port> <new ip> <new port>" */

static void
ngx_http_psd_redis_sentinel_message(ngx_http_psd_redis_conn_t *sentinel,
    redisReply *reply)
{
    u_char                     *p, *last, *field[5];
    size_t                      len[5];
    ngx_int_t                   port;
    ngx_uint_t                  n;
    redisReply                 *msg;
    ngx_http_psd_redis_topo_t  *topo;

    topo = sentinel->server->topo;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3
        || reply->element[2]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    msg = reply->element[2];
    p = (u_char *) msg->str;
    last = p + msg->len;

    for (n = 0; n < 5 && p < last; n++) {
        field[n] = p;

        while (p < last && *p != ' ') {
            p++;
        }

        len[n] = p - field[n];
        p++;
    }

    if (n != 5 || len[0] != topo->server->master.len
        || ngx_strncmp(field[0], topo->server->master.data, len[0]) != 0)
    {
        return;
    }

    port = ngx_atoi(field[4], len[4]);

    if (port < 1 || port > 65535) {
        return;
    }

    (void) ngx_http_psd_redis_primary(topo, field[3], len[3],
                                      (in_port_t) port);
}


/* the primary is at this address: go there, at once if it changed */

static ngx_int_t
ngx_http_psd_redis_primary(ngx_http_psd_redis_topo_t *topo, u_char *ip,
    size_t len, in_port_t port)
{
    socklen_t                   socklen;
    ngx_sockaddr_t              sa;
    ngx_http_psd_redis_conn_t  *conn;

    conn = topo->server->conn;

    if (ngx_http_psd_redis_parse_node(ip, len, port, &sa, &socklen)
        != NGX_OK)
    {
        ngx_log_error(NGX_LOG_ERR, &topo->log, 0,
                      "psd: redis \"%V\": sentinels name primary \"%*s\", "
                      "which is no IP address", &topo->server->name,
                      ngx_min(len, 64), ip);
        return NGX_ERROR;
    }

    if (conn->fixed
        && ngx_cmp_sockaddr(&conn->sockaddr.sockaddr, conn->own.socklen,
                            &sa.sockaddr, socklen, 1)
           == NGX_OK)
    {
        /* the same primary: only a connection in backoff hurries */

        if (conn->state == NGX_HTTP_PSD_REDIS_DOWN
            && conn->reconnect.timer_set)
        {
            ngx_del_timer(&conn->reconnect);
            ngx_http_psd_redis_connect(conn);
        }

        return NGX_OK;
    }

    if (conn->fixed) {
        ngx_log_error(NGX_LOG_NOTICE, &topo->log, 0,
                      "psd: redis \"%V\": primary \"%V\" moved from %V",
                      &topo->server->name, &topo->server->master,
                      &conn->own.name);
        topo->changes++;
    }

    if (conn->state != NGX_HTTP_PSD_REDIS_DOWN) {
        /* what it still waits for was asked of the old primary: failed */
        ngx_http_psd_redis_fail(conn, 0, NULL);
    }

    if (conn->reconnect.timer_set) {
        ngx_del_timer(&conn->reconnect);
    }

    /* the failure just caused needs no second opinion from the sentinels */

    if (topo->refresh.timer_set) {
        ngx_del_timer(&topo->refresh);
    }

    ngx_http_psd_redis_conn_address(conn, &sa.sockaddr, socklen);
    conn->failures = 0;

    ngx_http_psd_redis_connect(conn);

    ngx_http_psd_redis_topo_release(topo, 1);

    return NGX_OK;
}

static void
ngx_http_psd_redis_link(const redisReadTask *task, redisReply *reply)
{
    redisReply  *parent;

    if (task->parent) {
        parent = task->parent->obj;
        parent->element[task->idx] = reply;
    }
}


static redisReply *
ngx_http_psd_redis_reply(int type)
{
    redisReply  *reply;

    reply = calloc(1, sizeof(redisReply));
    if (reply) {
        reply->type = type;
    }

    return reply;
}


static void *
ngx_http_psd_redis_create_string(const redisReadTask *task, char *str,
    size_t len)
{
    redisReply  *reply;

    reply = ngx_http_psd_redis_reply(task->type);
    if (reply == NULL) {
        return NULL;
    }

    reply->str = malloc(len + 1);
    if (reply->str == NULL) {
        free(reply);
        return NULL;
    }

    memcpy(reply->str, str, len);
    reply->str[len] = '\0';
    reply->len = len;

    ngx_http_psd_redis_link(task, reply);

    return reply;
}


static void *
ngx_http_psd_redis_create_array(const redisReadTask *task, int elements)
{
    redisReply                 *reply;
    ngx_http_psd_redis_conn_t  *conn = task->privdata;

    /* every element takes at least 3 bytes on the wire ("$-1" is 5) */

    if (elements < 0
        || (conn && (size_t) elements > conn->server->max_reply / 3))
    {
        return NULL;
    }

    reply = ngx_http_psd_redis_reply(REDIS_REPLY_ARRAY);
    if (reply == NULL) {
        return NULL;
    }

    if (elements > 0) {
        reply->element = calloc(elements, sizeof(redisReply *));
        if (reply->element == NULL) {
            free(reply);
            return NULL;
        }
    }

    reply->elements = elements;

    ngx_http_psd_redis_link(task, reply);

    return reply;
}


static void *
ngx_http_psd_redis_create_integer(const redisReadTask *task, long long value)
{
    redisReply  *reply;

    reply = ngx_http_psd_redis_reply(REDIS_REPLY_INTEGER);
    if (reply == NULL) {
        return NULL;
    }

    reply->integer = value;

    ngx_http_psd_redis_link(task, reply);

    return reply;
}


static void *
ngx_http_psd_redis_create_nil(const redisReadTask *task)
{
    redisReply  *reply;

    reply = ngx_http_psd_redis_reply(REDIS_REPLY_NIL);
    if (reply == NULL) {
        return NULL;
    }

    ngx_http_psd_redis_link(task, reply);

    return reply;
}
