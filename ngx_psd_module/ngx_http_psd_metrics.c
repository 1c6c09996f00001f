
/*
 * Copyright (C) ngx_psd_module authors
 */


#include "ngx_http_psd_metrics.h"
#include "ngx_http_psd_redis.h"


#define NGX_HTTP_PSD_METRICS_PROMETHEUS  0
#define NGX_HTTP_PSD_METRICS_JSON        1


typedef struct {
    const char                   *name;
    const char                   *labels;
    const char                   *type;
    const char                   *help;
} ngx_http_psd_metric_desc_t;


typedef struct {
    ngx_uint_t                    format;
} ngx_http_psd_metrics_loc_conf_t;


static ngx_int_t ngx_http_psd_metrics_zone_init(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_psd_metrics_handler(ngx_http_request_t *r);
static void ngx_http_psd_metrics_queues_init(ngx_http_psd_main_conf_t *pmcf,
    ngx_http_psd_metrics_shm_t *shm, ngx_log_t *log);
static u_char *ngx_http_psd_metrics_prometheus(u_char *p, u_char *last);
static u_char *ngx_http_psd_metrics_json(u_char *p, u_char *last);


#define NGX_HTTP_PSD_METRIC_DESC(id, name, labels, type, help)               \
    { name, labels, type, help },

static ngx_http_psd_metric_desc_t  ngx_http_psd_metric_descs[] = {
    NGX_HTTP_PSD_METRICS(NGX_HTTP_PSD_METRIC_DESC)
};


/* upper bounds of the Redis latency histogram, in milliseconds */
static ngx_msec_t  ngx_http_psd_latency_bounds[NGX_HTTP_PSD_LATENCY_BUCKETS]
    = { 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, (ngx_msec_t) -1 };


ngx_http_psd_metrics_shm_t  *ngx_http_psd_metrics;

static ngx_str_t  ngx_http_psd_metrics_zone_name = ngx_string("psd_metrics");


char *
ngx_http_psd_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;
    ngx_http_psd_loc_conf_t   *plcf = conf;

    if (plcf->metrics != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    plcf->metrics = NGX_HTTP_PSD_METRICS_PROMETHEUS;

    if (cf->args->nelts == 2) {
        value = cf->args->elts;

        if (ngx_strcmp(value[1].data, "json") == 0) {
            plcf->metrics = NGX_HTTP_PSD_METRICS_JSON;

        } else if (ngx_strcmp(value[1].data, "prometheus") != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid format \"%V\" in \"%V\" directive, "
                               "it must be \"prometheus\" or \"json\"",
                               &value[1], &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_psd_metrics_handler;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_psd_metrics_init_zone(ngx_conf_t *cf, ngx_http_psd_main_conf_t *pmcf)
{
    size_t  size;

    /*
     * A fixed size and tag let nginx hand the same zone to the next
     * configuration on reload, so counters keep counting.
     */

    size = ngx_align(sizeof(ngx_http_psd_metrics_shm_t), ngx_pagesize)
           + ngx_pagesize;

    pmcf->shm_zone = ngx_shared_memory_add(cf,
                                           &ngx_http_psd_metrics_zone_name,
                                           size, &ngx_http_psd_module);
    if (pmcf->shm_zone == NULL) {
        return NGX_ERROR;
    }

    pmcf->shm_zone->init = ngx_http_psd_metrics_zone_init;
    pmcf->shm_zone->data = pmcf;
    pmcf->shm_zone->noreuse = 0;

    if (pmcf->servers.nelts > NGX_HTTP_PSD_MAX_SERVERS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many \"psd_redis\" servers, at most %d",
                           NGX_HTTP_PSD_MAX_SERVERS);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_psd_metrics_zone_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_psd_main_conf_t  *pmcf = shm_zone->data;

    ngx_uint_t                      i, k, n;
    ngx_slab_pool_t                *shpool;
    ngx_http_psd_metrics_shm_t     *shm;
    ngx_http_psd_redis_server_t   **servers;
    ngx_http_psd_metrics_server_t  *ms;

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (data) {
        /* a reload: the old configuration's zone data */
        shm = shpool->data;

    } else if (shm_zone->shm.exists) {
        shm = shpool->data;

    } else {
        shm = ngx_slab_calloc(shpool, sizeof(ngx_http_psd_metrics_shm_t));
        if (shm == NULL) {
            return NGX_ERROR;
        }

        shpool->data = shm;
    }

    /* keep the zone pointer where the next reload will look for it */
    shm_zone->data = pmcf;
    pmcf->shm_zone = shm_zone;
    ngx_http_psd_metrics = shm;

    /* servers keep their figures across reloads by name */

    servers = pmcf->servers.elts;

    for (i = 0; i < pmcf->servers.nelts; i++) {
        n = shm->nservers;

        for (k = 0; k < n; k++) {
            ms = &shm->servers[k];

            if (ms->name_len == servers[i]->name.len
                && ngx_strncmp(ms->name, servers[i]->name.data,
                               ms->name_len) == 0)
            {
                break;
            }
        }

        if (k == n) {
            if (n == NGX_HTTP_PSD_MAX_SERVERS) {
                ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                              "psd: too many Redis server names over "
                              "reloads, restart nginx");
                return NGX_ERROR;
            }

            ms = &shm->servers[n];
            ms->name_len = ngx_min(servers[i]->name.len, sizeof(ms->name));
            ngx_memcpy(ms->name, servers[i]->name.data, ms->name_len);
            shm->nservers = n + 1;
        }

        servers[i]->index = k;
    }

    ngx_http_psd_metrics_queues_init(pmcf, shm, shm_zone->shm.log);

    return NGX_OK;
}


/* a ticket queue that has a row in the metrics (names checked by caller) */

ngx_int_t
ngx_http_psd_metrics_queue_add(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_str_t                 *q;
    ngx_uint_t                 i;
    ngx_http_psd_main_conf_t  *pmcf;

    pmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_psd_module);

    if (pmcf->queues == NULL) {
        pmcf->queues = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
        if (pmcf->queues == NULL) {
            return NGX_ERROR;
        }
    }

    q = pmcf->queues->elts;

    for (i = 0; i < pmcf->queues->nelts; i++) {
        if (q[i].len == name->len
            && ngx_strncmp(q[i].data, name->data, name->len) == 0)
        {
            return NGX_OK;
        }
    }

    q = ngx_array_push(pmcf->queues);
    if (q == NULL) {
        return NGX_ERROR;
    }

    *q = *name;

    return NGX_OK;
}


static ngx_http_psd_metrics_queue_t *
ngx_http_psd_metrics_queue_find(ngx_http_psd_metrics_shm_t *shm,
    u_char *name, size_t len)
{
    ngx_uint_t                     i, n;
    ngx_http_psd_metrics_queue_t  *q;

    n = ngx_min(shm->nqueues, NGX_HTTP_PSD_MAX_QUEUES);

    for (i = 0; i < n; i++) {
        q = &shm->queues[i];

        if (q->name_len == len && ngx_strncmp(q->name, name, len) == 0) {
            return q;
        }
    }

    return NULL;
}


/* queues keep their figures across reloads by name, like servers */

static void
ngx_http_psd_metrics_queues_init(ngx_http_psd_main_conf_t *pmcf,
    ngx_http_psd_metrics_shm_t *shm, ngx_log_t *log)
{
    ngx_str_t                     *names;
    ngx_uint_t                     i;
    ngx_http_psd_metrics_queue_t  *q;

    if (shm->nqueues == 0) {
        q = &shm->queues[0];
        q->name_len = sizeof("_other") - 1;
        ngx_memcpy(q->name, "_other", q->name_len);
        shm->nqueues = 1;
    }

    names = pmcf->queues ? pmcf->queues->elts : NULL;

    for (i = 0; names && i < pmcf->queues->nelts; i++) {
        if (names[i].len > sizeof(q->name)
            || ngx_http_psd_metrics_queue_find(shm, names[i].data,
                                               names[i].len))
        {
            continue;
        }

        if (shm->nqueues == NGX_HTTP_PSD_MAX_QUEUES) {
            ngx_log_error(NGX_LOG_WARN, log, 0,
                          "psd: more than %d ticket queues over reloads, "
                          "\"%V\" is counted as \"_other\"",
                          NGX_HTTP_PSD_MAX_QUEUES - 1, &names[i]);
            continue;
        }

        q = &shm->queues[shm->nqueues];
        q->name_len = names[i].len;
        ngx_memcpy(q->name, names[i].data, names[i].len);

        /* the name first: a worker reading the count sees it whole */
        ngx_memory_barrier();
        shm->nqueues++;
    }
}


ngx_http_psd_metrics_queue_t *
ngx_http_psd_metrics_queue(u_char *name, size_t len)
{
    ngx_http_psd_metrics_queue_t  *q;

    if (ngx_http_psd_metrics == NULL) {
        return NULL;
    }

    q = ngx_http_psd_metrics_queue_find(ngx_http_psd_metrics, name, len);

    return q ? q : &ngx_http_psd_metrics->queues[0];
}


ngx_http_psd_metrics_server_t *
ngx_http_psd_metrics_server(ngx_uint_t index)
{
    return &ngx_http_psd_metrics->servers[index];
}


void
ngx_http_psd_metrics_latency(ngx_http_psd_metrics_server_t *ms,
    ngx_msec_t elapsed)
{
    ngx_uint_t  i;

    for (i = 0; elapsed > ngx_http_psd_latency_bounds[i]; i++) {
        /* the last bound is the largest ngx_msec_t */
    }

    (void) ngx_atomic_fetch_add(&ms->latency[i], 1);
    (void) ngx_atomic_fetch_add(&ms->latency_sum_us, elapsed * 1000);
    (void) ngx_atomic_fetch_add(&ms->latency_count, 1);
}


static ngx_int_t
ngx_http_psd_metrics_handler(ngx_http_request_t *r)
{
    size_t                    size;
    u_char                   *body, *p;
    ngx_int_t                 rc;
    ngx_uint_t                format;
    ngx_http_psd_loc_conf_t  *plcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_NOT_ALLOWED,
                                            "method_not_allowed", NULL);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    plcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_module);
    format = plcf->metrics;

    if (r->args.len
        && ngx_strnstr(r->args.data, "format=json", r->args.len))
    {
        format = NGX_HTTP_PSD_METRICS_JSON;
    }

    /* every row fits in 512 bytes: names and help texts are ours */
    size = (NGX_HTTP_PSD_M_MAX + NGX_HTTP_PSD_MAX_SERVERS
            * (10 + NGX_HTTP_PSD_LATENCY_BUCKETS)
            + 10 + ngx_http_psd_metrics->nqueues
                   * (4 + NGX_HTTP_PSD_CSAT_SCORES)) * 512;

    body = ngx_pnalloc(r->pool, size);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (format == NGX_HTTP_PSD_METRICS_JSON) {
        p = ngx_http_psd_metrics_json(body, body + size);
        return ngx_http_psd_send_json(r, NGX_HTTP_OK, body, p - body);
    }

    p = ngx_http_psd_metrics_prometheus(body, body + size);

    return ngx_http_psd_send_body(r, NGX_HTTP_OK,
                                  "text/plain; version=0.0.4; charset=utf-8",
                                  body, p - body);
}


static u_char *
ngx_http_psd_metrics_family(u_char *p, u_char *last, const char *name,
    const char *type, const char *help)
{
    return ngx_slprintf(p, last, "# HELP %s %s\n# TYPE %s %s\n",
                        name, help, name, type);
}


static u_char *
ngx_http_psd_metrics_queues_prometheus(u_char *p, u_char *last)
{
    ngx_uint_t                     i, k, n;
    ngx_atomic_t                  *v;
    ngx_http_psd_metrics_queue_t  *q;

    static const char  *rows[][2] = {
        { "psd_csat_resolved_total",
          "Tickets resolved, by queue (the base of the CSAT response "
          "rate)." },
        { "psd_csat_responses_total",
          "Ratings recorded through rating links, by queue." },
        { "psd_csat_score_total",
          "Scores of the ratings summed, by queue (average: divide by "
          "the responses)." },
        { "psd_csat_comments_total",
          "Comments left with ratings, by queue." },
    };

    n = ngx_min(ngx_http_psd_metrics->nqueues, NGX_HTTP_PSD_MAX_QUEUES);

    /* the rows follow the order of the fields from "resolved" on */

    for (k = 0; k < sizeof(rows) / sizeof(rows[0]); k++) {
        p = ngx_http_psd_metrics_family(p, last, rows[k][0], "counter",
                                        rows[k][1]);

        for (i = 0; i < n; i++) {
            q = &ngx_http_psd_metrics->queues[i];
            v = &q->resolved + k;
            p = ngx_slprintf(p, last, "%s{queue=\"%*s\"} %uA\n", rows[k][0],
                             q->name_len, q->name, *v);
        }
    }

    p = ngx_http_psd_metrics_family(p, last, "psd_csat_ratings_total",
                                    "counter",
                                    "Ratings recorded, by queue and score "
                                    "(1 to 5).");

    for (i = 0; i < n; i++) {
        q = &ngx_http_psd_metrics->queues[i];

        for (k = 0; k < NGX_HTTP_PSD_CSAT_SCORES; k++) {
            p = ngx_slprintf(p, last, "psd_csat_ratings_total"
                             "{queue=\"%*s\",score=\"%ui\"} %uA\n",
                             q->name_len, q->name, k + 1, q->scores[k]);
        }
    }

    return p;
}


static u_char *
ngx_http_psd_metrics_prometheus(u_char *p, u_char *last)
{
    ngx_uint_t                      i, k, n;
    ngx_atomic_uint_t               cumulative;
    ngx_http_psd_metric_desc_t     *d;
    ngx_http_psd_metrics_server_t  *ms;

    static const char  *server_rows[][3] = {
        { "psd_redis_connected", "gauge",
          "Worker connections to the Redis server (or its cluster "
          "nodes) that are up." },
        { "psd_redis_reconnects_total", "counter",
          "Connections made to the Redis server after the first." },
        { "psd_redis_commands_total", "counter",
          "Commands sent to the Redis server." },
        { "psd_redis_errors_total", "counter",
          "Connection failures, protocol errors and failed handshakes." },
        { "psd_redis_timeouts_total", "counter",
          "Calls that passed their deadline." },
        { "psd_redis_unavailable_total", "counter",
          "Calls refused at once: server down or too many pending." },
        { "psd_redis_pending", "gauge",
          "Commands sent and waiting for their reply." },
    };

    for (i = 0; i < NGX_HTTP_PSD_M_MAX; i++) {
        d = &ngx_http_psd_metric_descs[i];

        if (d->type[0]) {
            p = ngx_http_psd_metrics_family(p, last, d->name, d->type,
                                            d->help);
        }

        p = ngx_slprintf(p, last, "%s%s%s%s %uA\n", d->name,
                         d->labels[0] ? "{" : "", d->labels,
                         d->labels[0] ? "}" : "",
                         ngx_http_psd_metrics->counters[i]);
    }

    p = ngx_http_psd_metrics_queues_prometheus(p, last);

    n = ngx_http_psd_metrics->nservers;

    /* the rows follow the order of the fields from "connected" on */

    for (k = 0; k < sizeof(server_rows) / sizeof(server_rows[0]); k++) {
        p = ngx_http_psd_metrics_family(p, last, server_rows[k][0],
                                        server_rows[k][1], server_rows[k][2]);

        for (i = 0; i < n; i++) {
            ms = &ngx_http_psd_metrics->servers[i];
            p = ngx_slprintf(p, last, "%s{server=\"%*s\"} %uA\n",
                             server_rows[k][0], ms->name_len, ms->name,
                             (&ms->connected)[k]);
        }
    }

    p = ngx_http_psd_metrics_family(p, last, "psd_redis_latency_seconds",
                                    "histogram",
                                    "Time from sending a call to its last "
                                    "reply.");

    for (i = 0; i < n; i++) {
        ms = &ngx_http_psd_metrics->servers[i];
        cumulative = 0;

        for (k = 0; k < NGX_HTTP_PSD_LATENCY_BUCKETS; k++) {
            cumulative += ms->latency[k];

            if (k == NGX_HTTP_PSD_LATENCY_BUCKETS - 1) {
                p = ngx_slprintf(p, last, "psd_redis_latency_seconds_bucket"
                                 "{server=\"%*s\",le=\"+Inf\"} %uA\n",
                                 ms->name_len, ms->name, cumulative);
            } else {
                p = ngx_slprintf(p, last, "psd_redis_latency_seconds_bucket"
                                 "{server=\"%*s\",le=\"%ui.%03ui\"} %uA\n",
                                 ms->name_len, ms->name,
                                 ngx_http_psd_latency_bounds[k] / 1000,
                                 ngx_http_psd_latency_bounds[k] % 1000,
                                 cumulative);
            }
        }

        p = ngx_slprintf(p, last, "psd_redis_latency_seconds_sum"
                         "{server=\"%*s\"} %uA.%06uA\n",
                         ms->name_len, ms->name,
                         ms->latency_sum_us / 1000000,
                         ms->latency_sum_us % 1000000);
        p = ngx_slprintf(p, last, "psd_redis_latency_seconds_count"
                         "{server=\"%*s\"} %uA\n",
                         ms->name_len, ms->name, ms->latency_count);
    }

    return p;
}


static u_char *
ngx_http_psd_metrics_json(u_char *p, u_char *last)
{
    ngx_uint_t                      i, k, n;
    ngx_http_psd_metric_desc_t     *d;
    ngx_http_psd_metrics_queue_t   *q;
    ngx_http_psd_metrics_server_t  *ms;

    /* a flat object: "name{labels}": value, the same keys as Prometheus */

    p = ngx_slprintf(p, last, "{\"counters\":{");

    for (i = 0; i < NGX_HTTP_PSD_M_MAX; i++) {
        d = &ngx_http_psd_metric_descs[i];

        p = ngx_slprintf(p, last, "%s\"%s", i ? "," : "", d->name);

        if (d->labels[0]) {
            p = ngx_slprintf(p, last, "{");
            p = (u_char *) ngx_escape_json(p, (u_char *) d->labels,
                                           ngx_strlen(d->labels));
            p = ngx_slprintf(p, last, "}");
        }

        p = ngx_slprintf(p, last, "\":%uA",
                         ngx_http_psd_metrics->counters[i]);
    }

    p = ngx_slprintf(p, last, "},\"redis\":[");

    n = ngx_http_psd_metrics->nservers;

    for (i = 0; i < n; i++) {
        ms = &ngx_http_psd_metrics->servers[i];

        p = ngx_slprintf(p, last, "%s{\"server\":\"%*s\",\"connected\":%uA,"
                         "\"reconnects\":%uA,\"commands\":%uA,"
                         "\"errors\":%uA,\"timeouts\":%uA,"
                         "\"unavailable\":%uA,\"pending\":%uA,"
                         "\"latency_ms_buckets\":[",
                         i ? "," : "", ms->name_len, ms->name,
                         ms->connected, ms->reconnects, ms->commands,
                         ms->errors, ms->timeouts, ms->unavailable,
                         ms->pending);

        for (k = 0; k < NGX_HTTP_PSD_LATENCY_BUCKETS; k++) {
            p = ngx_slprintf(p, last, "%s%uA", k ? "," : "", ms->latency[k]);
        }

        p = ngx_slprintf(p, last, "],\"latency_count\":%uA}",
                         ms->latency_count);
    }

    p = ngx_slprintf(p, last, "],\"queues\":[");

    n = ngx_min(ngx_http_psd_metrics->nqueues, NGX_HTTP_PSD_MAX_QUEUES);

    for (i = 0; i < n; i++) {
        q = &ngx_http_psd_metrics->queues[i];

        p = ngx_slprintf(p, last, "%s{\"queue\":\"%*s\",\"resolved\":%uA,"
                         "\"responses\":%uA,\"score_total\":%uA,"
                         "\"comments\":%uA,\"scores\":[%uA,%uA,%uA,%uA,%uA]}",
                         i ? "," : "", q->name_len, q->name, q->resolved,
                         q->responses, q->score_total, q->comments,
                         q->scores[0], q->scores[1], q->scores[2],
                         q->scores[3], q->scores[4]);
    }

    return ngx_slprintf(p, last, "]}\n");
}
