
/*
 * Copyright (C) ngx_psd_module authors
 *
 * Pay: rate limits shared by every nginx node through Redis.  Each zone's
 * decision is one GCRA script call (exact under concurrency, Redis's clock
 * for every node); a location's limits go out in one write.  When Redis
 * cannot answer, a zone fails open, closed, or to a per-node limiter in
 * shared memory that allows the zone's rate divided by the node count.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_psd_module.h"
#include "ngx_http_psd_redis.h"
#include "ngx_http_psd_metrics.h"
#include "ngx_http_psd_limit.h"
#include "psd_rate.h"


#define NGX_HTTP_PSD_LIMIT_PASSED    1
#define NGX_HTTP_PSD_LIMIT_REJECTED  2
#define NGX_HTTP_PSD_LIMIT_DRY_RUN   3
#define NGX_HTTP_PSD_LIMIT_ERROR     4

#define NGX_HTTP_PSD_LIMIT_MAX       8      /* psd_limit per location */
#define NGX_HTTP_PSD_LIMIT_KEY_MAX   512


typedef struct {
    uint64_t                      hash;
    int64_t                       tat;      /* µs; 0: free */
} ngx_http_psd_limit_slot_t;


typedef struct {
    ngx_uint_t                    nslots;
    ngx_http_psd_limit_slot_t     slots[1];
} ngx_http_psd_limit_shm_t;


typedef struct {
    ngx_str_t                     name;
    ngx_http_complex_value_t      key;
    psd_rate_t                    rate;
    ngx_int_t                     burst;
    ngx_uint_t                    nodes;
    ngx_str_t                     redis_name;
    ngx_http_psd_redis_server_t  *redis;
    ngx_shm_zone_t               *shm_zone;
    ngx_slab_pool_t              *shpool;
    ngx_http_psd_limit_shm_t     *local;
} ngx_http_psd_limit_zone_t;


typedef struct {
    ngx_http_psd_limit_zone_t    *zone;
    ngx_uint_t                    nodelay;
    ngx_uint_t                    dry_run;
} ngx_http_psd_limit_t;


typedef struct {
    ngx_array_t                   zones;    /* ngx_http_psd_limit_zone_t * */
} ngx_http_psd_limit_main_conf_t;


typedef struct {
    ngx_array_t                  *limits;   /* ngx_http_psd_limit_t */
    ngx_uint_t                    status_code;
    ngx_uint_t                    failure_mode;
    ngx_flag_t                    headers;
} ngx_http_psd_limit_loc_conf_t;


typedef struct {
    ngx_uint_t                    status;
    ngx_int_t                     rc;
    ngx_http_psd_limit_t         *limited;  /* the zone that decided */
    int64_t                       remaining;
    int64_t                       reset_ms;
    int64_t                       retry_ms;
    ngx_msec_t                    delay;
    ngx_uint_t                    uri_changes;
    ngx_uint_t                    index[NGX_HTTP_PSD_LIMIT_MAX];
    unsigned                      waiting:1;
    unsigned                      done:1;
    unsigned                      headers_set:1;
    unsigned                      fail_closed:1;
} ngx_http_psd_limit_ctx_t;


static ngx_int_t ngx_http_psd_limit_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_psd_limit_init(ngx_conf_t *cf);
static void *ngx_http_psd_limit_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_psd_limit_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_psd_limit_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_psd_limit_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_psd_limit(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_psd_limit_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_psd_limit_handler(ngx_http_request_t *r);
static void ngx_http_psd_limit_checked(ngx_http_psd_redis_call_t *call);
static void ngx_http_psd_limit_local(ngx_http_request_t *r,
    ngx_http_psd_limit_ctx_t *ctx);
static void ngx_http_psd_limit_refund(ngx_http_request_t *r,
    ngx_http_psd_limit_t *limit);
static ngx_int_t ngx_http_psd_limit_finish(ngx_http_request_t *r,
    ngx_http_psd_limit_ctx_t *ctx);
static void ngx_http_psd_limit_delay(ngx_http_request_t *r);
static ngx_int_t ngx_http_psd_limit_set_headers(ngx_http_request_t *r,
    ngx_http_psd_limit_ctx_t *ctx);
static ngx_int_t ngx_http_psd_limit_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_conf_enum_t  ngx_http_psd_limit_failure_modes[] = {
    { ngx_string("open"), NGX_HTTP_PSD_FAIL_OPEN },
    { ngx_string("closed"), NGX_HTTP_PSD_FAIL_CLOSED },
    { ngx_string("local"), NGX_HTTP_PSD_FAIL_LOCAL },
    { ngx_null_string, 0 }
};


static ngx_conf_num_bounds_t  ngx_http_psd_limit_status_bounds = {
    ngx_http_psd_conf_check_bounds, 400, 599
};


static ngx_command_t  ngx_http_psd_limit_commands[] = {

    { ngx_string("psd_limit_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_psd_limit_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE123,
      ngx_http_psd_limit,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_limit_status"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_limit_loc_conf_t, status_code),
      &ngx_http_psd_limit_status_bounds },

    { ngx_string("psd_limit_failure_mode"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_limit_loc_conf_t, failure_mode),
      &ngx_http_psd_limit_failure_modes },

    { ngx_string("psd_limit_headers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_limit_loc_conf_t, headers),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_psd_limit_module_ctx = {
    ngx_http_psd_limit_add_variables,      /* preconfiguration */
    ngx_http_psd_limit_init,               /* postconfiguration */

    ngx_http_psd_limit_create_main_conf,   /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_psd_limit_create_loc_conf,    /* create location configuration */
    ngx_http_psd_limit_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_psd_limit_module = {
    NGX_MODULE_V1,
    &ngx_http_psd_limit_module_ctx,        /* module context */
    ngx_http_psd_limit_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_psd_limit_vars[] = {

    { ngx_string("psd_limit_status"), NULL, ngx_http_psd_limit_variable,
      0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_http_psd_redis_script_t  ngx_http_psd_limit_script = {
    "gcra", psd_rate_gcra_script, ""
};


/*
 * Gives back one request's charge: KEYS[1] the limit's key, ARGV[1] the
 * interval in µs.
 */

static ngx_http_psd_redis_script_t  ngx_http_psd_limit_refund_script = {
    "gcra_refund",
    "local tat = tonumber(redis.call('GET', KEYS[1]))\n"
    "if tat == nil then return 0 end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "tat = tat - tonumber(ARGV[1])\n"
    "if tat <= now then\n"
    "  redis.call('DEL', KEYS[1])\n"
    "else\n"
    "  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',\n"
    "             string.format('%.0f', math.ceil((tat - now) / 1000)))\n"
    "end\n"
    "return 1\n",
    ""
};


static ngx_str_t  ngx_http_psd_limit_status_names[] = {
    ngx_null_string,
    ngx_string("passed"),
    ngx_string("rejected"),
    ngx_string("dry_run"),
    ngx_string("error")
};


static void *
ngx_http_psd_limit_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_psd_limit_main_conf_t  *lmcf;

    lmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_limit_main_conf_t));
    if (lmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&lmcf->zones, cf->pool, 4,
                       sizeof(ngx_http_psd_limit_zone_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return lmcf;
}


static void *
ngx_http_psd_limit_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_psd_limit_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_limit_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     conf->limits = NULL;
     */

    conf->status_code = NGX_CONF_UNSET_UINT;
    conf->failure_mode = NGX_CONF_UNSET_UINT;
    conf->headers = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_psd_limit_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_psd_limit_loc_conf_t  *prev = parent;
    ngx_http_psd_limit_loc_conf_t  *conf = child;

    if (conf->limits == NULL) {
        conf->limits = prev->limits;
    }

    ngx_conf_merge_uint_value(conf->status_code, prev->status_code,
                              NGX_HTTP_TOO_MANY_REQUESTS);
    ngx_conf_merge_uint_value(conf->failure_mode, prev->failure_mode,
                              NGX_HTTP_PSD_FAIL_LOCAL);
    ngx_conf_merge_value(conf->headers, prev->headers, 0);

    return NGX_CONF_OK;
}


static char *
ngx_http_psd_limit_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_limit_main_conf_t  *lmcf = conf;

    u_char                            *p;
    size_t                             size;
    ngx_str_t                         *value, v, shm_name;
    ngx_int_t                          n;
    ngx_uint_t                         i;
    ngx_http_psd_limit_zone_t         *zone, **zones;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    zones = lmcf->zones.elts;

    for (i = 0; i < lmcf->zones.nelts; i++) {
        if (zones[i]->name.len == value[1].len
            && ngx_strncmp(zones[i]->name.data, value[1].data,
                           value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate limit zone \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    for (i = 0; i < value[1].len; i++) {
        if (!(isalnum(value[1].data[i]) || value[1].data[i] == '_'
              || value[1].data[i] == '-')
            || value[1].len > 64)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid limit zone name \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_limit_zone_t));
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->name = value[1];
    zone->burst = 0;
    zone->nodes = 1;
    size = 1024 * 1024;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "key=", 4) == 0) {
            v.data = value[i].data + 4;
            v.len = value[i].len - 4;

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));
            ccv.cf = cf;
            ccv.value = &v;
            ccv.complex_value = &zone->key;

            if (v.len == 0 || ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "rate=", 5) == 0) {
            if (psd_rate_parse((char *) value[i].data + 5, value[i].len - 5,
                               &zone->rate)
                != 0)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid rate \"%V\" in \"%V\", use "
                                   "<n>r/s, r/m, r/h or r/d, at most "
                                   "10000r/s", &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "burst=", 6) == 0) {
            n = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (n == NGX_ERROR || n > 1000000) {
                goto invalid;
            }

            zone->burst = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "nodes=", 6) == 0) {
            n = ngx_atoi(value[i].data + 6, value[i].len - 6);
            if (n == NGX_ERROR || n == 0 || n > 1000) {
                goto invalid;
            }

            zone->nodes = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "redis=", 6) == 0) {
            zone->redis_name.data = value[i].data + 6;
            zone->redis_name.len = value[i].len - 6;
            continue;
        }

        if (ngx_strncmp(value[i].data, "local_size=", 11) == 0) {
            v.data = value[i].data + 11;
            v.len = value[i].len - 11;

            n = ngx_parse_size(&v);
            if (n == NGX_ERROR || n < (ngx_int_t) (8 * ngx_pagesize)) {
                goto invalid;
            }

            size = n;
            continue;
        }

        goto invalid;
    }

    if (zone->key.value.len == 0 || zone->rate.interval == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must have \"key=\" and \"rate=\"",
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    /* the GCRA's arithmetic stays exact below 2^50 µs (35 years) */

    if ((int64_t) (zone->burst + 1)
        > PSD_RATE_SPAN_MAX / (zone->rate.interval * (int64_t) zone->nodes))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "burst=%i is too large for rate and nodes of "
                           "zone \"%V\"", zone->burst, &zone->name);
        return NGX_CONF_ERROR;
    }

    /* the per-node fallback lives in its own zone, like limit_req's */

    shm_name.len = sizeof("psd_limit_") - 1 + zone->name.len;
    shm_name.data = ngx_pnalloc(cf->pool, shm_name.len);
    if (shm_name.data == NULL) {
        return NGX_CONF_ERROR;
    }

    p = ngx_cpymem(shm_name.data, "psd_limit_", sizeof("psd_limit_") - 1);
    ngx_memcpy(p, zone->name.data, zone->name.len);

    zone->shm_zone = ngx_shared_memory_add(cf, &shm_name, size,
                                           &ngx_http_psd_limit_module);
    if (zone->shm_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zone->shm_zone->init = ngx_http_psd_limit_init_zone;
    zone->shm_zone->data = zone;

    zones = ngx_array_push(&lmcf->zones);
    if (zones == NULL) {
        return NGX_CONF_ERROR;
    }

    *zones = zone;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in \"%V\"", &value[i],
                       &cmd->name);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_psd_limit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_limit_loc_conf_t  *llcf = conf;

    ngx_str_t                       *value;
    ngx_uint_t                       i;
    ngx_http_psd_limit_t            *limit, *limits;
    ngx_http_psd_limit_zone_t      **zones, *zone;
    ngx_http_psd_limit_main_conf_t  *lmcf;

    value = cf->args->elts;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_psd_limit_module);
    zones = lmcf->zones.elts;
    zone = NULL;

    for (i = 0; i < lmcf->zones.nelts; i++) {
        if (zones[i]->name.len == value[1].len
            && ngx_strncmp(zones[i]->name.data, value[1].data,
                           value[1].len) == 0)
        {
            zone = zones[i];
            break;
        }
    }

    if (zone == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown limit zone \"%V\" (declare it with "
                           "\"psd_limit_zone\" before use)", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (llcf->limits == NULL) {
        llcf->limits = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_http_psd_limit_t));
        if (llcf->limits == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    limits = llcf->limits->elts;

    for (i = 0; i < llcf->limits->nelts; i++) {
        if (limits[i].zone == zone) {
            return "is duplicate";
        }

        if (limits[i].zone->redis_name.len != zone->redis_name.len
            || (zone->redis_name.len
                && ngx_strncmp(limits[i].zone->redis_name.data,
                               zone->redis_name.data, zone->redis_name.len)
                   != 0))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "limit zones \"%V\" and \"%V\" use different "
                               "redis servers: one location's limits are "
                               "decided in one round trip to one server",
                               &limits[i].zone->name, &zone->name);
            return NGX_CONF_ERROR;
        }
    }

    if (llcf->limits->nelts == NGX_HTTP_PSD_LIMIT_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many \"psd_limit\" in one location, at most "
                           "%d", NGX_HTTP_PSD_LIMIT_MAX);
        return NGX_CONF_ERROR;
    }

    limit = ngx_array_push(llcf->limits);
    if (limit == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(limit, sizeof(ngx_http_psd_limit_t));
    limit->zone = zone;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strcmp(value[i].data, "nodelay") == 0) {
            limit->nodelay = 1;
            continue;
        }

        if (ngx_strcmp(value[i].data, "dry_run") == 0) {
            limit->dry_run = 1;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"%V\"", &value[i],
                           &cmd->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_psd_limit_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_psd_limit_zone_t  *ozone = data;
    ngx_http_psd_limit_zone_t  *zone = shm_zone->data;

    size_t  size;

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (ozone) {
        zone->local = ozone->local;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        zone->local = zone->shpool->data;
        return NGX_OK;
    }

    /* half the zone for the table: the slab allocator keeps the rest */

    size = shm_zone->shm.size / 2;

    zone->local = ngx_slab_calloc(zone->shpool, size);
    if (zone->local == NULL) {
        return NGX_ERROR;
    }

    zone->local->nslots = (size - sizeof(ngx_http_psd_limit_shm_t))
                          / sizeof(ngx_http_psd_limit_slot_t);
    zone->shpool->data = zone->local;

    return NGX_OK;
}


static ngx_int_t
ngx_http_psd_limit_add_variables(ngx_conf_t *cf)
{
    return ngx_http_psd_add_variables(cf, ngx_http_psd_limit_vars);
}


static ngx_int_t
ngx_http_psd_limit_init(ngx_conf_t *cf)
{
    ngx_uint_t                        i;
    ngx_http_handler_pt              *h;
    ngx_http_core_main_conf_t        *cmcf;
    ngx_http_psd_limit_zone_t       **zones;
    ngx_http_psd_limit_main_conf_t   *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_psd_limit_module);

    if (lmcf->zones.nelts == 0) {
        return NGX_OK;
    }

    zones = lmcf->zones.elts;

    for (i = 0; i < lmcf->zones.nelts; i++) {
        if (ngx_http_psd_redis_conf_server(cf, &zones[i]->redis_name,
                                           &zones[i]->redis)
            != NGX_CONF_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ngx_http_psd_redis_register_script(cf, &ngx_http_psd_limit_script)
        != NGX_OK
        || ngx_http_psd_redis_register_script(cf,
                                          &ngx_http_psd_limit_refund_script)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    /* before access checks, like limit_req: a flood never reaches auth */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_psd_limit_handler;

    return NGX_OK;
}


static ngx_int_t
ngx_http_psd_limit_handler(ngx_http_request_t *r)
{
    u_char                         *p;
    size_t                          argvlen[4];
    ngx_str_t                       key;
    ngx_uint_t                      i, n;
    const char                     *argv[4];
    ngx_http_psd_limit_t           *limits;
    ngx_http_psd_limit_ctx_t       *ctx;
    ngx_http_psd_limit_zone_t      *zone;
    ngx_http_psd_redis_call_t      *call;
    ngx_http_psd_limit_loc_conf_t  *llcf;
    u_char                          interval[NGX_INT64_LEN];
    u_char                          burst[NGX_INT64_LEN];
    u_char                          rkey[NGX_HTTP_PSD_LIMIT_KEY_MAX + 80];

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_limit_module);

    if (llcf->limits == NULL || r != r->main) {
        return NGX_DECLINED;
    }

    /*
     * A client request is limited once: an internal redirect to a limited
     * location (try_files to @app, X-Accel-Redirect) is limited if the
     * request was not yet, and not again if it was.
     */

    ctx = ngx_http_psd_ctx_get(r, &ngx_http_psd_limit_module);

    if (ctx) {
        if (ctx->waiting) {
            return NGX_AGAIN;
        }

        /* every internal redirect counts r->uri_changes down */

        if (ctx->done && r->uri_changes != ctx->uri_changes) {
            return NGX_DECLINED;
        }

        return ngx_http_psd_limit_finish(r, ctx);
    }

    ctx = ngx_http_psd_ctx_create(r, &ngx_http_psd_limit_module,
                                  sizeof(ngx_http_psd_limit_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->uri_changes = r->uri_changes;

    limits = llcf->limits->elts;
    call = NULL;
    n = 0;

    for (i = 0; i < llcf->limits->nelts; i++) {
        zone = limits[i].zone;

        if (ngx_http_complex_value(r, &zone->key, &key) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* an empty key is not limited, as in limit_req */

        if (key.len == 0) {
            ctx->index[i] = NGX_CONF_UNSET_UINT;
            continue;
        }

        if (key.len > NGX_HTTP_PSD_LIMIT_KEY_MAX) {
            key.len = NGX_HTTP_PSD_LIMIT_KEY_MAX;
        }

        if (call == NULL) {
            /* all zones of a location share one server: one round trip */
            call = ngx_http_psd_redis_call_create(r, zone->redis,
                                                  llcf->limits->nelts);
            if (call == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }

        p = ngx_sprintf(rkey, "psd:{lim:%V:%V}", &zone->name, &key);

        argv[0] = (const char *) rkey;
        argvlen[0] = p - rkey;
        argv[1] = (const char *) interval;
        argvlen[1] = ngx_sprintf(interval, "%L", zone->rate.interval)
                     - interval;
        argv[2] = (const char *) burst;
        argvlen[2] = ngx_sprintf(burst, "%i", zone->burst) - burst;
        argv[3] = "1";
        argvlen[3] = 1;

        if (ngx_http_psd_redis_call_add_script(call,
                                               &ngx_http_psd_limit_script,
                                               1, 4, argv, argvlen)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ctx->index[i] = n++;
    }

    if (call == NULL) {
        ctx->done = 1;
        return NGX_DECLINED;
    }

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_limit_checked, r)
        != NGX_OK)
    {
        ngx_http_psd_limit_checked(call);
        return ngx_http_psd_limit_finish(r, ctx);
    }

    ctx->waiting = 1;
    ngx_http_psd_redis_wait(r);

    return NGX_AGAIN;
}


static void
ngx_http_psd_limit_checked(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    int64_t                         reset, delay, interval_ms;
    ngx_uint_t                      i, failed, allowed;
    redisReply                     *reply, **e;
    ngx_http_psd_limit_t           *limits;
    ngx_http_psd_limit_ctx_t       *ctx;
    ngx_http_psd_limit_loc_conf_t  *llcf;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_limit_module);
    llcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_limit_module);
    limits = llcf->limits->elts;

    ctx->done = 1;
    allowed = 0;
    ctx->status = NGX_HTTP_PSD_LIMIT_PASSED;
    ctx->rc = NGX_DECLINED;
    ctx->remaining = -1;
    failed = 0;

    for (i = 0; i < llcf->limits->nelts; i++) {
        if (ctx->index[i] == NGX_CONF_UNSET_UINT) {
            continue;
        }

        reply = call->status == NGX_HTTP_PSD_REDIS_OK
                ? call->replies[ctx->index[i]] : NULL;

        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
            || reply->elements != 4)
        {
            if (reply && reply->type == REDIS_REPLY_ERROR) {
                ngx_http_psd_log(NGX_LOG_ERR, r, 0,
                                 "psd_limit: redis answered \"%*s\"",
                                 ngx_min(reply->len, 200), reply->str);
            }

            failed = 1;
            break;
        }

        e = reply->element;

        if (e[0]->type != REDIS_REPLY_INTEGER
            || e[1]->type != REDIS_REPLY_INTEGER
            || e[2]->type != REDIS_REPLY_INTEGER
            || e[3]->type != REDIS_REPLY_INTEGER)
        {
            failed = 1;
            break;
        }

        reset = e[3]->integer;

        /* the tightest limit speaks for the headers */

        if (ctx->remaining < 0 || e[1]->integer < ctx->remaining) {
            ctx->remaining = e[1]->integer;
            ctx->reset_ms = reset;
            ctx->limited = &limits[i];
        }

        if (e[0]->integer == 0) {
            if (limits[i].dry_run) {
                if (ctx->status != NGX_HTTP_PSD_LIMIT_REJECTED) {
                    ctx->status = NGX_HTTP_PSD_LIMIT_DRY_RUN;
                }

                ngx_http_psd_count(LIMIT_DRY_RUN);
                ngx_http_psd_log(NGX_LOG_INFO, r, 0,
                                 "psd_limit: zone \"%V\" would reject "
                                 "(dry run)", &limits[i].zone->name);
                continue;
            }

            ctx->status = NGX_HTTP_PSD_LIMIT_REJECTED;
            ctx->limited = &limits[i];
            ctx->retry_ms = e[2]->integer;
            ctx->reset_ms = reset;
            ctx->remaining = 0;
            continue;
        }

        /* charged: given back below if another zone rejects */
        allowed |= (ngx_uint_t) 1 << i;

        /*
         * Without nodelay, a request inside the burst waits until the rate
         * admits it, as limit_req does: the part of the bucket that was
         * already full when it came.
         */

        if (!limits[i].nodelay && !limits[i].dry_run) {
            interval_ms = (limits[i].zone->rate.interval + 999) / 1000;
            delay = reset - interval_ms;

            if (delay > (int64_t) ctx->delay) {
                ctx->delay = (ngx_msec_t) delay;
            }
        }
    }

    if (failed) {
        ctx->delay = 0;

        switch (llcf->failure_mode) {

        case NGX_HTTP_PSD_FAIL_OPEN:
            ctx->status = NGX_HTTP_PSD_LIMIT_ERROR;
            ngx_http_psd_count(LIMIT_FAIL_OPEN);
            ngx_http_psd_log(NGX_LOG_WARN, r, 0,
                             "psd_limit: redis %s, request let through "
                             "unlimited",
                             call->status == NGX_HTTP_PSD_REDIS_OK
                             ? "error"
                             : ngx_http_psd_redis_status_name(call->status));
            break;

        case NGX_HTTP_PSD_FAIL_CLOSED:
            ctx->status = NGX_HTTP_PSD_LIMIT_ERROR;
            ctx->fail_closed = 1;
            ngx_http_psd_count(LIMIT_FAIL_CLOSED);
            break;

        default:
            ngx_http_psd_limit_local(r, ctx);
        }

    } else if (ctx->status == NGX_HTTP_PSD_LIMIT_REJECTED) {
        ctx->rc = llcf->status_code;
        ctx->delay = 0;
        ngx_http_psd_count(LIMIT_REJECTED);
        ngx_http_psd_log(NGX_LOG_INFO, r, 0,
                         "psd_limit: rejected by zone \"%V\"",
                         &ctx->limited->zone->name);

        /*
         * As limit_req: a request counts against its zones only if all of
         * them let it pass.  The zones stand under different hash tags, so
         * the charges are given back rather than decided in one script.
         */

        for (i = 0; i < llcf->limits->nelts; i++) {
            if (allowed & ((ngx_uint_t) 1 << i)) {
                ngx_http_psd_limit_refund(r, &limits[i]);
            }
        }

    } else if (ctx->status == NGX_HTTP_PSD_LIMIT_PASSED) {
        ngx_http_psd_count(LIMIT_PASSED);
    }

    if (ctx->delay) {
        ngx_http_psd_count(LIMIT_DELAYED);
    }

    if (ctx->waiting) {
        ctx->waiting = 0;
        ngx_http_psd_redis_resume(r);
    }
}


static void
ngx_http_psd_limit_refund(ngx_http_request_t *r, ngx_http_psd_limit_t *limit)
{
    u_char                     *p;
    size_t                      argvlen[2];
    ngx_str_t                   key;
    const char                 *argv[2];
    ngx_http_psd_redis_call_t  *call;
    u_char                      interval[NGX_INT64_LEN];
    u_char                      rkey[NGX_HTTP_PSD_LIMIT_KEY_MAX + 80];

    if (ngx_http_complex_value(r, &limit->zone->key, &key) != NGX_OK
        || key.len == 0)
    {
        return;
    }

    if (key.len > NGX_HTTP_PSD_LIMIT_KEY_MAX) {
        key.len = NGX_HTTP_PSD_LIMIT_KEY_MAX;
    }

    call = ngx_http_psd_redis_call_create(NULL, limit->zone->redis, 1);
    if (call == NULL) {
        return;
    }

    p = ngx_sprintf(rkey, "psd:{lim:%V:%V}", &limit->zone->name, &key);

    argv[0] = (const char *) rkey;
    argvlen[0] = p - rkey;
    argv[1] = (const char *) interval;
    argvlen[1] = ngx_sprintf(interval, "%L", limit->zone->rate.interval)
                 - interval;

    if (ngx_http_psd_redis_call_add_script(call,
                                           &ngx_http_psd_limit_refund_script,
                                           1, 2, argv, argvlen)
        != NGX_OK)
    {
        ngx_destroy_pool(call->pool);
        return;
    }

    (void) ngx_http_psd_redis_call_send(call, NULL, NULL);
}


/*
 * Redis is out of reach: each node allows the zone's rate divided by the
 * number of nodes, from a table in shared memory.  A slot taken by another
 * key is simply reused (a collision forgets the older key's state), which
 * keeps the table bounded; it only decides during an outage.
 */

static void
ngx_http_psd_limit_local(ngx_http_request_t *r, ngx_http_psd_limit_ctx_t *ctx)
{
    uint64_t                        hash;
    ngx_str_t                       key;
    ngx_uint_t                      i;
    psd_gcra_t                      res;
    ngx_time_t                     *tp;
    int64_t                         now;
    ngx_http_psd_limit_t           *limits;
    ngx_http_psd_limit_zone_t      *zone;
    ngx_http_psd_limit_slot_t      *slot;
    ngx_http_psd_limit_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_limit_module);
    limits = llcf->limits->elts;

    ngx_http_psd_count(LIMIT_LOCAL);

    tp = ngx_timeofday();
    now = (int64_t) tp->sec * 1000000 + (int64_t) tp->msec * 1000;

    ctx->status = NGX_HTTP_PSD_LIMIT_PASSED;
    ctx->remaining = -1;

    for (i = 0; i < llcf->limits->nelts; i++) {
        zone = limits[i].zone;

        if (ctx->index[i] == NGX_CONF_UNSET_UINT || zone->local == NULL
            || ngx_http_complex_value(r, &zone->key, &key) != NGX_OK)
        {
            continue;
        }

        hash = ngx_hash_key(key.data, key.len) | 1;

        ngx_memzero(&res, sizeof(psd_gcra_t));
        res.allowed = 1;

        ngx_shmtx_lock(&zone->shpool->mutex);

        slot = &zone->local->slots[hash % zone->local->nslots];

        if (psd_rate_gcra(slot->hash == hash ? slot->tat : -1, now,
                          zone->rate.interval * zone->nodes, zone->burst, 1,
                          &res)
            == 0
            && res.allowed)
        {
            slot->hash = hash;
            slot->tat = res.tat;
        }

        ngx_shmtx_unlock(&zone->shpool->mutex);

        if (ctx->remaining < 0 || res.remaining < ctx->remaining) {
            ctx->remaining = res.remaining;
            ctx->reset_ms = res.reset_after_ms;
            ctx->limited = &limits[i];
        }

        if (!res.allowed && !limits[i].dry_run) {
            ctx->status = NGX_HTTP_PSD_LIMIT_REJECTED;
            ctx->rc = llcf->status_code;
            ctx->limited = &limits[i];
            ctx->retry_ms = res.retry_after_ms;
            ctx->remaining = 0;
        }
    }

    if (ctx->status == NGX_HTTP_PSD_LIMIT_REJECTED) {
        ngx_http_psd_count(LIMIT_REJECTED);
    }
}


static ngx_int_t
ngx_http_psd_limit_finish(ngx_http_request_t *r,
    ngx_http_psd_limit_ctx_t *ctx)
{
    ngx_http_psd_limit_loc_conf_t  *llcf;

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_limit_module);

    if (ctx->fail_closed) {
        return ngx_http_psd_finalize_in_phase(r,
                                        ngx_http_psd_send_unavailable(r, 1));
    }

    if ((ctx->status == NGX_HTTP_PSD_LIMIT_REJECTED || llcf->headers)
        && ctx->limited && !ctx->headers_set)
    {
        ctx->headers_set = 1;

        if (ngx_http_psd_limit_set_headers(r, ctx) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ctx->status == NGX_HTTP_PSD_LIMIT_REJECTED) {
        if (ctx->rc == NGX_HTTP_TOO_MANY_REQUESTS) {
            return ngx_http_psd_finalize_in_phase(r,
                        ngx_http_psd_send_json_error(r, ctx->rc,
                                                     "rate_limited", NULL));
        }

        return ctx->rc;
    }

    if (ctx->delay) {
        ngx_http_psd_log(NGX_LOG_DEBUG, r, 0,
                         "psd_limit: delaying request for %M ms",
                         ctx->delay);

        if (ngx_handle_read_event(r->connection->read, 0) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        r->read_event_handler = ngx_http_test_reading;
        r->write_event_handler = ngx_http_psd_limit_delay;

        r->connection->write->delayed = 1;
        ngx_add_timer(r->connection->write, ctx->delay);
        ctx->delay = 0;

        return NGX_AGAIN;
    }

    return NGX_DECLINED;
}


static void
ngx_http_psd_limit_delay(ngx_http_request_t *r)
{
    ngx_event_t  *wev;

    wev = r->connection->write;

    if (wev->delayed) {
        if (ngx_handle_write_event(wev, 0) != NGX_OK) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        }

        return;
    }

    if (ngx_handle_read_event(r->connection->read, 0) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_http_core_run_phases;

    ngx_http_core_run_phases(r);
}


/*
 * draft-ietf-httpapi-ratelimit-headers: the policy as quota and window,
 * and what is left of it; Retry-After on a rejection.
 */

static ngx_int_t
ngx_http_psd_limit_set_headers(ngx_http_request_t *r,
    ngx_http_psd_limit_ctx_t *ctx)
{
    u_char                     *p;
    int64_t                     window;
    ngx_table_elt_t            *h;
    ngx_http_psd_limit_zone_t  *zone;

    zone = ctx->limited->zone;

    window = (zone->rate.interval * (zone->burst + 1) + 999999) / 1000000;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(r->pool, zone->name.len + 2 * NGX_INT64_LEN + 16);
    if (p == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "RateLimit-Policy");
    h->value.data = p;
    h->value.len = ngx_sprintf(p, "\"%V\";q=%i;w=%L", &zone->name,
                               zone->burst + 1, window) - p;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(r->pool, zone->name.len + 2 * NGX_INT64_LEN + 16);
    if (p == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "RateLimit");
    h->value.data = p;
    h->value.len = ngx_sprintf(p, "\"%V\";r=%L;t=%L", &zone->name,
                               ctx->remaining,
                               (ctx->reset_ms + 999) / 1000) - p;

    if (ctx->status != NGX_HTTP_PSD_LIMIT_REJECTED) {
        return NGX_OK;
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Retry-After");
    h->value.data = p;
    h->value.len = ngx_sprintf(p, "%L", ctx->retry_ms < 0
                               ? (int64_t) 1 : (ctx->retry_ms + 999) / 1000)
                   - p;

    return NGX_OK;
}


static ngx_int_t
ngx_http_psd_limit_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_psd_limit_ctx_t  *ctx;

    ctx = ngx_http_psd_ctx_get(r->main, &ngx_http_psd_limit_module);

    if (ctx == NULL || ctx->status == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->len = ngx_http_psd_limit_status_names[ctx->status].len;
    v->data = ngx_http_psd_limit_status_names[ctx->status].data;

    return NGX_OK;
}
