
/*
 * Copyright (C) ngx_psd_module authors
 *
 * Support: ticket intake at the edge.  A ticket is validated, answered
 * from the shop's answers or the order record when it can be (deflection),
 * triaged by rules into a queue with a priority and SLA times, and handed
 * to the help desk through a Redis Stream per queue.  Staff acknowledge
 * and resolve tickets through an authenticated endpoint; the times feed
 * the SLA figures in the metrics.  A resolved ticket can get a signed,
 * expiring rating link (the download link format under a key of its own):
 * the customer's first score, and one comment, are kept with the ticket.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_psd_module.h"
#include "ngx_http_psd_redis.h"
#include "ngx_http_psd_metrics.h"
#include "ngx_http_psd_link.h"
#include "ngx_http_psd_ticket.h"
#include "psd_card.h"
#include "psd_crypto.h"
#include "psd_csat.h"
#include "psd_form.h"
#include "psd_json.h"
#include "psd_link.h"
#include "psd_triage.h"


#define NGX_HTTP_PSD_TICKET_INTAKE     1
#define NGX_HTTP_PSD_TICKET_ADMIN      2
#define NGX_HTTP_PSD_TICKET_RATING     3

#define NGX_HTTP_PSD_RATING_BODY_MAX   16384
#define NGX_HTTP_PSD_RATING_URL_MAX    512

#define NGX_HTTP_PSD_TICKET_BODY_MAX   65536
#define NGX_HTTP_PSD_TICKET_SUBJECT    200
#define NGX_HTTP_PSD_TICKET_ID_LEN     16


typedef struct {
    ngx_str_t                     name;
    psd_triage_rule_t             rule;
    ngx_str_t                     queue;
    ngx_str_t                     priority;
    time_t                        first_response;
    time_t                        resolution;
} ngx_http_psd_ticket_rule_t;


typedef struct {
    ngx_uint_t                    kind;       /* category, keyword, state */
    ngx_str_t                     match;
    ngx_str_t                     text;
    psd_triage_rule_t             keyword;    /* "keyword has <match>" */
} ngx_http_psd_ticket_answer_t;


#define NGX_HTTP_PSD_ANSWER_CATEGORY   1
#define NGX_HTTP_PSD_ANSWER_KEYWORD    2
#define NGX_HTTP_PSD_ANSWER_STATE      3


/* psd_ticket_rating_link: where rating links point, how long they work */
typedef struct {
    ngx_str_t                     url;        /* the prefix as written */
    ngx_str_t                     path;       /* its path: what is signed */
    time_t                        ttl;
    ngx_str_t                     kid;
    ngx_http_psd_link_keyring_t  *keys;
} ngx_http_psd_rating_link_t;


typedef struct {
    ngx_uint_t                    endpoint;
    ngx_array_t                  *rules;      /* ngx_http_psd_ticket_rule_t */
    ngx_array_t                  *answers;    /* ngx_http_psd_ticket_answer_t */
    size_t                        max_message;
    ngx_uint_t                    maxlen;
    ngx_str_t                     api_key;
    ngx_str_t                     redis_name;
    ngx_http_psd_redis_server_t  *redis;
    ngx_http_psd_rating_link_t   *rating_link;    /* NULL: none */
    ngx_http_psd_link_keyring_t  *rating_keys;    /* psd_ticket_rating */
    ngx_str_t                     order_proof;    /* status path, "": off */
} ngx_http_psd_ticket_loc_conf_t;


typedef struct {
    json_t                       *body;
    const char                   *email;
    const char                   *subject;
    const char                   *message;
    const char                   *category;
    const char                   *order;
    ngx_uint_t                    file_anyway;
    ngx_str_t                     order_state;
    int64_t                       order_value;
    ngx_uint_t                    has_order_value;
    ngx_uint_t                    payment_failed;
    ngx_uint_t                    order_verified;
    ngx_http_psd_ticket_rule_t   *rule;
    u_char                        id[NGX_HTTP_PSD_TICKET_ID_LEN + 80];
    size_t                        id_len;
    time_t                        first_response_by;
    ngx_connection_t             *connection;
} ngx_http_psd_ticket_ctx_t;


/* staff: the ticket updated or viewed, and the rating link it was given */
typedef struct {
    ngx_str_t                     ticket;
    size_t                        queue_len;
    u_char                       *rating;     /* NULL: none */
    size_t                        rating_len;
    time_t                        rating_exp;
} ngx_http_psd_ticket_admin_ctx_t;


/* a customer's rating */
typedef struct {
    ngx_str_t                     ticket;     /* in r->uri */
    size_t                        queue_len;
    ngx_uint_t                    score;
    ngx_uint_t                    comment;    /* one came with it */
    ngx_uint_t                    html;       /* the client takes HTML */
    char                          link[PSD_LINK_ID_MAX + 1];
    size_t                        link_len;
} ngx_http_psd_ticket_rating_ctx_t;


/* the fields a form post may carry, read into the same JSON as a post */
typedef struct {
    const char                  **names;
    psd_path_t                   *paths;
    ngx_uint_t                    n;
    ngx_uint_t                    parsed;
    ngx_uint_t                    boolean;    /* read as true/false; n: none */
    size_t                        max;        /* body size */
} ngx_http_psd_ticket_fields_t;


static void *ngx_http_psd_ticket_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_psd_ticket_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_psd_ticket_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_psd_ticket_rule(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_psd_ticket_answer(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_psd_ticket_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_psd_ticket_handler(ngx_http_request_t *r);
static void ngx_http_psd_ticket_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_psd_ticket_intake(ngx_http_request_t *r,
    json_t *body);
static ngx_int_t ngx_http_psd_ticket_form(ngx_http_request_t *r,
    ngx_http_psd_ticket_fields_t *fields, json_t **out, const char **error);
static void ngx_http_psd_ticket_order_read(ngx_http_psd_redis_call_t *call);
static ngx_int_t ngx_http_psd_ticket_decide(ngx_http_request_t *r,
    ngx_http_psd_ticket_ctx_t *ctx);
static void ngx_http_psd_ticket_created(ngx_http_psd_redis_call_t *call);
static ngx_int_t ngx_http_psd_ticket_update(ngx_http_request_t *r,
    json_t *body);
static ngx_int_t ngx_http_psd_ticket_update_send(ngx_http_request_t *r,
    const char *id, const char *state);
static void ngx_http_psd_ticket_updated(ngx_http_psd_redis_call_t *call);
static void ngx_http_psd_ticket_finalize(ngx_http_request_t *r,
    ngx_int_t rc);
static void ngx_http_psd_ticket_link_order(ngx_http_request_t *r,
    ngx_http_psd_ticket_ctx_t *ctx);
static char *ngx_http_psd_ticket_order_proof_conf(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_psd_ticket_order_proof(ngx_http_request_t *r,
    ngx_http_psd_ticket_ctx_t *ctx, json_t *body, ngx_uint_t *status,
    const char **error);
static char *ngx_http_psd_ticket_rating_link(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static ngx_int_t ngx_http_psd_ticket_rating_sign(ngx_http_request_t *r,
    ngx_http_psd_rating_link_t *rl, ngx_http_psd_ticket_admin_ctx_t *actx);
static ngx_int_t ngx_http_psd_ticket_view(ngx_http_request_t *r);
static void ngx_http_psd_ticket_viewed(ngx_http_psd_redis_call_t *call);
static ngx_int_t ngx_http_psd_ticket_rate(ngx_http_request_t *r);
static void ngx_http_psd_ticket_rating_body(ngx_http_request_t *r);
static ngx_int_t ngx_http_psd_ticket_rating_send(ngx_http_request_t *r,
    ngx_http_psd_ticket_rating_ctx_t *ctx, const char *comment,
    size_t comment_len);
static void ngx_http_psd_ticket_rated(ngx_http_psd_redis_call_t *call);


static ngx_conf_num_bounds_t  ngx_http_psd_ticket_maxlen_bounds = {
    ngx_http_psd_conf_check_bounds, 100, 10000000
};


static ngx_command_t  ngx_http_psd_ticket_commands[] = {

    { ngx_string("psd_ticket"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_psd_ticket_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_PSD_TICKET_INTAKE,
      NULL },

    { ngx_string("psd_ticket_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_psd_ticket_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_PSD_TICKET_ADMIN,
      NULL },

    { ngx_string("psd_ticket_rating"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_psd_ticket_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      NGX_HTTP_PSD_TICKET_RATING,
      NULL },

    { ngx_string("psd_ticket_rating_link"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE123,
      ngx_http_psd_ticket_rating_link,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_ticket_rule"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_psd_ticket_rule,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_ticket_answer"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE2,
      ngx_http_psd_ticket_answer,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_ticket_order_proof"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_psd_ticket_order_proof_conf,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("psd_ticket_max_message"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_ticket_loc_conf_t, max_message),
      NULL },

    { ngx_string("psd_ticket_stream_maxlen"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_ticket_loc_conf_t, maxlen),
      &ngx_http_psd_ticket_maxlen_bounds },

    { ngx_string("psd_ticket_api_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_psd_conf_set_secret_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_ticket_loc_conf_t, api_key),
      NULL },

    { ngx_string("psd_ticket_redis"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_psd_ticket_loc_conf_t, redis_name),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_psd_ticket_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_psd_ticket_init,              /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_psd_ticket_create_loc_conf,   /* create location configuration */
    ngx_http_psd_ticket_merge_loc_conf     /* merge location configuration */
};


ngx_module_t  ngx_http_psd_ticket_module = {
    NGX_MODULE_V1,
    &ngx_http_psd_ticket_module_ctx,       /* module context */
    ngx_http_psd_ticket_commands,          /* module directives */
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


/*
 * KEYS: the queue's stream, the ticket's hash (one hash tag: the queue).
 * ARGV: id, maxlen, now, then the stream's field/value pairs.  The hash
 * keeps what the SLA needs; the stream carries the ticket to the help desk.
 * One script: a ticket is in both or in neither.
 */

static ngx_http_psd_redis_script_t  ngx_http_psd_ticket_create_script = {
    "ticket_create",
    "local f = {}\n"
    "for i = 4, #ARGV, 2 do f[ARGV[i]] = ARGV[i + 1] end\n"
    "local args = {'XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',\n"
    "              'ticket', ARGV[1], 'created_at', ARGV[3]}\n"
    "for i = 4, #ARGV do args[#args + 1] = ARGV[i] end\n"
    "local id = redis.call(unpack(args))\n"
    "redis.call('HSET', KEYS[2], 'state', 'open', 'created_at', ARGV[3],\n"
    "           'queue', f.queue, 'priority', f.priority,\n"
    "           'first_response_due', f.first_response_due,\n"
    "           'resolution_due', f.resolution_due, 'order', f.order or '',\n"
    "           'order_verified', f.order_verified or 'false')\n"
    "return id\n",
    ""
};


/*
 * KEYS: the ticket's hash, its queue's stream (one hash tag: the queue).
 * ARGV: acknowledged or resolved, now, the ticket id, the stream's maxlen,
 * the rating link ("" for none) and its expiry.
 * Returns {0} unknown, {2} already so, or {1, first response seconds (-1
 * if not now), first response late (0/1), resolution seconds (-1),
 * resolution late (0/1)}.  Times are clamped at zero: a ticket filed by a
 * node whose clock runs ahead is still counted.  With a rating link the
 * help desk gets a "resolved" event carrying it, written first: if that
 * fails, nothing is.
 */

static ngx_http_psd_redis_script_t  ngx_http_psd_ticket_update_script = {
    "ticket_update",
    "local t = redis.call('HMGET', KEYS[1], 'state', 'created_at',\n"
    "  'first_response_due', 'resolution_due', 'acknowledged_at')\n"
    "if not t[1] then return {0} end\n"
    "if t[1] == 'resolved' or (ARGV[1] == 'acknowledged' and t[5]) then\n"
    "  return {2}\n"
    "end\n"
    "if ARGV[1] == 'resolved' and ARGV[5] ~= '' then\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',\n"
    "             'event', 'resolved', 'ticket', ARGV[3],\n"
    "             'resolved_at', ARGV[2], 'rating_url', ARGV[5],\n"
    "             'rating_expires', ARGV[6])\n"
    "end\n"
    "local now = tonumber(ARGV[2])\n"
    "local fr, frl, rs, rsl = -1, 0, -1, 0\n"
    "if not t[5] then\n"
    "  redis.call('HSET', KEYS[1], 'acknowledged_at', ARGV[2])\n"
    "  fr = math.max(0, now - tonumber(t[2]))\n"
    "  if now > tonumber(t[3]) then frl = 1 end\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'state', ARGV[1])\n"
    "if ARGV[1] == 'resolved' then\n"
    "  redis.call('HSET', KEYS[1], 'resolved_at', ARGV[2])\n"
    "  rs = math.max(0, now - tonumber(t[2]))\n"
    "  if now > tonumber(t[4]) then rsl = 1 end\n"
    "end\n"
    "return {1, fr, frl, rs, rsl}\n",
    ""
};


/*
 * KEYS: the ticket's hash.  ARGV: the score, the comment ("" for none),
 * now, the rating link's id.  The first score stays; one comment may come
 * with it or after it, with the same score.  Returns {0} unknown ticket,
 * {3} not resolved, {2} already rated (nothing changed), {1} rated, {4}
 * comment added.
 */

static ngx_http_psd_redis_script_t  ngx_http_psd_ticket_rating_script = {
    "ticket_rating",
    "local t = redis.call('HMGET', KEYS[1], 'state', 'csat_score',\n"
    "                     'csat_comment')\n"
    "if not t[1] then return {0} end\n"
    "if t[1] ~= 'resolved' then return {3} end\n"
    "if t[2] then\n"
    "  if ARGV[2] == '' or t[3] or t[2] ~= ARGV[1] then return {2} end\n"
    "  redis.call('HSET', KEYS[1], 'csat_comment', ARGV[2],\n"
    "             'csat_commented_at', ARGV[3])\n"
    "  return {4}\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'csat_score', ARGV[1], 'rated_at', ARGV[3],\n"
    "           'csat_link', ARGV[4])\n"
    "if ARGV[2] ~= '' then\n"
    "  redis.call('HSET', KEYS[1], 'csat_comment', ARGV[2],\n"
    "             'csat_commented_at', ARGV[3])\n"
    "end\n"
    "return {1}\n",
    ""
};


static ngx_str_t  ngx_http_psd_ticket_default_queue =
    ngx_string("general");
static ngx_str_t  ngx_http_psd_ticket_default_priority =
    ngx_string("normal");

static ngx_uint_t  ngx_http_psd_ticket_used;


static void *
ngx_http_psd_ticket_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_psd_ticket_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_ticket_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->max_message = NGX_CONF_UNSET_SIZE;
    conf->maxlen = NGX_CONF_UNSET_UINT;
    conf->rating_link = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_psd_ticket_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_psd_ticket_loc_conf_t  *prev = parent;
    ngx_http_psd_ticket_loc_conf_t  *conf = child;

    ngx_http_core_loc_conf_t  *clcf;

    if (conf->rules == NULL) {
        conf->rules = prev->rules;
    }

    if (conf->answers == NULL) {
        conf->answers = prev->answers;
    }

    ngx_conf_merge_size_value(conf->max_message, prev->max_message, 10000);
    ngx_conf_merge_uint_value(conf->maxlen, prev->maxlen, 10000);
    ngx_conf_merge_str_value(conf->api_key, prev->api_key, "");
    ngx_conf_merge_str_value(conf->redis_name, prev->redis_name, "");
    ngx_conf_merge_ptr_value(conf->rating_link, prev->rating_link, NULL);
    ngx_conf_merge_str_value(conf->order_proof, prev->order_proof, "");

    if (conf->endpoint == 0) {
        return NGX_CONF_OK;
    }

    /* rating links sign and verify under the link keys' rating keys */

    if (conf->endpoint == NGX_HTTP_PSD_TICKET_ADMIN && conf->rating_link
        && conf->rating_link->keys == NULL)
    {
        conf->rating_link->keys = ngx_http_psd_link_purpose_keys(cf, "rating",
                                                   &conf->rating_link->kid);
        if (conf->rating_link->keys == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (conf->endpoint == NGX_HTTP_PSD_TICKET_RATING) {
        conf->rating_keys = ngx_http_psd_link_purpose_keys(cf, "rating", NULL);
        if (conf->rating_keys == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (conf->endpoint == NGX_HTTP_PSD_TICKET_ADMIN && conf->api_key.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_ticket_admin\" needs \"psd_ticket_api_key\"");
        return NGX_CONF_ERROR;
    }

    if (conf->max_message > 1024 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"psd_ticket_max_message\" is at most 1m");
        return NGX_CONF_ERROR;
    }

    /* the body is read into one buffer, never a file */

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->client_body_buffer_size < NGX_HTTP_PSD_TICKET_BODY_MAX) {
        clcf->client_body_buffer_size = NGX_HTTP_PSD_TICKET_BODY_MAX;
    }

    ngx_http_psd_ticket_used = 1;

    return ngx_http_psd_redis_conf_server(cf, &conf->redis_name,
                                          &conf->redis);
}


static char *
ngx_http_psd_ticket_endpoint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_ticket_loc_conf_t  *tlcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (tlcf->endpoint) {
        return "is duplicate";
    }

    /* "psd_ticket on;" as written in nginx.conf; "off" or nothing else */

    value = cf->args->elts;

    if (cf->args->nelts == 2) {
        if (ngx_strcmp(value[1].data, "off") == 0) {
            return NGX_CONF_OK;
        }

        if (ngx_strcmp(value[1].data, "on") != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid value \"%V\" in \"%V\" directive, "
                               "it must be \"on\" or \"off\"",
                               &value[1], &cmd->name);
            return NGX_CONF_ERROR;
        }
    }

    tlcf->endpoint = cmd->offset;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_psd_ticket_handler;

    if (ngx_http_psd_metrics_queue_add(cf, &ngx_http_psd_ticket_default_queue)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_psd_ticket_name_valid(u_char *p, size_t len)
{
    size_t  i;

    if (len == 0 || len > 32) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!(isalnum(p[i]) || p[i] == '_' || p[i] == '-')) {
            return 0;
        }
    }

    return 1;
}


static char *
ngx_http_psd_ticket_rule(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_ticket_loc_conf_t  *tlcf = conf;

    size_t                       column;
    ngx_str_t                   *value, v;
    ngx_uint_t                   i;
    ngx_http_psd_ticket_rule_t  *rule;
    char                         err[PSD_TRIAGE_ERR_LEN];

    value = cf->args->elts;

    if (tlcf->rules == NULL) {
        tlcf->rules = ngx_array_create(cf->pool, 4,
                                       sizeof(ngx_http_psd_ticket_rule_t));
        if (tlcf->rules == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    rule = ngx_array_push(tlcf->rules);
    if (rule == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(rule, sizeof(ngx_http_psd_ticket_rule_t));

    rule->name = value[1];
    rule->queue = ngx_http_psd_ticket_default_queue;
    rule->priority = ngx_http_psd_ticket_default_priority;
    rule->first_response = 4 * 3600;
    rule->resolution = 48 * 3600;

    if (!ngx_http_psd_ticket_name_valid(value[1].data, value[1].len)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid triage rule name \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (psd_triage_parse(&rule->rule, (char *) value[2].data, value[2].len,
                         err, sizeof(err), &column)
        != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid triage rule \"%V\": %s", &value[1], err);
        return NGX_CONF_ERROR;
    }

    for (i = 3; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "queue=", 6) == 0) {
            rule->queue.data = value[i].data + 6;
            rule->queue.len = value[i].len - 6;

            if (!ngx_http_psd_ticket_name_valid(rule->queue.data,
                                                rule->queue.len))
            {
                goto invalid;
            }

            /* each queue has its row in the support metrics */

            if (ngx_http_psd_metrics_queue_add(cf, &rule->queue) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "priority=", 9) == 0) {
            rule->priority.data = value[i].data + 9;
            rule->priority.len = value[i].len - 9;

            if (ngx_strcmp(rule->priority.data, "low") != 0
                && ngx_strcmp(rule->priority.data, "normal") != 0
                && ngx_strcmp(rule->priority.data, "high") != 0
                && ngx_strcmp(rule->priority.data, "urgent") != 0)
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "first_response=", 15) == 0
            || ngx_strncmp(value[i].data, "resolution=", 11) == 0)
        {
            v.data = (u_char *) ngx_strchr(value[i].data, '=') + 1;
            v.len = value[i].len - (v.data - value[i].data);

            if (ngx_parse_time(&v, 1) == NGX_ERROR
                || ngx_parse_time(&v, 1) == 0)
            {
                goto invalid;
            }

            if (value[i].data[0] == 'f') {
                rule->first_response = ngx_parse_time(&v, 1);
            } else {
                rule->resolution = ngx_parse_time(&v, 1);
            }

            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" in triage rule \"%V\"",
                       &value[i], &value[1]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_psd_ticket_answer(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_psd_ticket_loc_conf_t  *tlcf = conf;

    u_char                        *eq;
    ngx_str_t                     *value;
    ngx_uint_t                     i;
    ngx_http_psd_ticket_answer_t  *answer;
    char                           err[PSD_TRIAGE_ERR_LEN];
    u_char                         text[PSD_TRIAGE_VALUE_MAX + 32];

    value = cf->args->elts;

    if (tlcf->answers == NULL) {
        tlcf->answers = ngx_array_create(cf->pool, 4,
                                     sizeof(ngx_http_psd_ticket_answer_t));
        if (tlcf->answers == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    answer = ngx_array_push(tlcf->answers);
    if (answer == NULL) {
        return NGX_CONF_ERROR;
    }

    eq = ngx_strlchr(value[1].data, value[1].data + value[1].len, '=');

    answer->kind = 0;

    if (eq) {
        answer->match.data = eq + 1;
        answer->match.len = value[1].len - (eq + 1 - value[1].data);

        if (eq - value[1].data == 8
            && ngx_strncmp(value[1].data, "category", 8) == 0)
        {
            answer->kind = NGX_HTTP_PSD_ANSWER_CATEGORY;

        } else if (eq - value[1].data == 7
                   && ngx_strncmp(value[1].data, "keyword", 7) == 0)
        {
            answer->kind = NGX_HTTP_PSD_ANSWER_KEYWORD;

        } else if (eq - value[1].data == 11
                   && ngx_strncmp(value[1].data, "order_state", 11) == 0)
        {
            answer->kind = NGX_HTTP_PSD_ANSWER_STATE;
        }
    }

    /* answers also know payment_failed: unpaid, with failed attempts */

    if (answer->kind == NGX_HTTP_PSD_ANSWER_STATE
        && !psd_triage_order_state_valid((char *) answer->match.data,
                                         answer->match.len)
        && !(answer->match.len == sizeof("payment_failed") - 1
             && ngx_strncmp(answer->match.data, "payment_failed",
                            answer->match.len) == 0))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown order state \"%V\" in "
                           "\"psd_ticket_answer\", use created, paid, "
                           "payment_failed, refunded, chargeback or none",
                           &answer->match);
        return NGX_CONF_ERROR;
    }

    if (answer->kind == 0 || answer->match.len == 0
        || answer->match.len > PSD_TRIAGE_VALUE_MAX
        || value[2].len == 0 || value[2].len > 2048)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid answer \"%V\", use category=<name>, "
                           "keyword=<word> or order_state=<state> and a "
                           "text", &value[1]);
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < answer->match.len; i++) {
        answer->match.data[i] = ngx_tolower(answer->match.data[i]);
    }

    if (answer->kind == NGX_HTTP_PSD_ANSWER_KEYWORD) {
        ngx_sprintf(text, "keyword has \"%V\"%Z", &answer->match);

        if (psd_triage_parse(&answer->keyword, (char *) text,
                             ngx_strlen(text), err, sizeof(err), NULL)
            != 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid answer keyword \"%V\": %s",
                               &answer->match, err);
            return NGX_CONF_ERROR;
        }
    }

    answer->text = value[2];

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_psd_ticket_init(ngx_conf_t *cf)
{
    if (!ngx_http_psd_ticket_used) {
        return NGX_OK;
    }

    ngx_http_psd_ticket_used = 0;

    if (ngx_http_psd_redis_register_script(cf,
                                     &ngx_http_psd_ticket_create_script)
        != NGX_OK
        || ngx_http_psd_redis_register_script(cf,
                                     &ngx_http_psd_ticket_update_script)
           != NGX_OK
        || ngx_http_psd_redis_register_script(cf,
                                     &ngx_http_psd_ticket_rating_script)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_psd_ticket_handler(ngx_http_request_t *r)
{
    ngx_http_psd_ticket_loc_conf_t  *tlcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_ticket_module);

    if (tlcf->endpoint == NGX_HTTP_PSD_TICKET_RATING) {
        return ngx_http_psd_ticket_rate(r);
    }

    if (tlcf->endpoint == NGX_HTTP_PSD_TICKET_ADMIN
        && (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)))
    {
        return ngx_http_psd_ticket_view(r);
    }

    /* customers file tickets without a key; staff updates need one */

    return ngx_http_psd_read_post(r,
                                  tlcf->endpoint == NGX_HTTP_PSD_TICKET_ADMIN
                                  ? &tlcf->api_key : NULL,
                                  NGX_HTTP_PSD_TICKET_BODY_MAX,
                                  ngx_http_psd_ticket_body);
}


static const char  *ngx_http_psd_ticket_intake_names[] = {
    "email", "subject", "message", "category", "order_id", "file_anyway",
    "order_link"
};

static psd_path_t  ngx_http_psd_ticket_intake_paths[7];

static ngx_http_psd_ticket_fields_t  ngx_http_psd_ticket_intake_fields = {
    ngx_http_psd_ticket_intake_names, ngx_http_psd_ticket_intake_paths, 7, 0, 5,
    NGX_HTTP_PSD_TICKET_BODY_MAX
};

static const char  *ngx_http_psd_ticket_rating_names[] = {
    "score", "comment"
};

static psd_path_t  ngx_http_psd_ticket_rating_paths[2];

static ngx_http_psd_ticket_fields_t  ngx_http_psd_ticket_rating_fields = {
    ngx_http_psd_ticket_rating_names, ngx_http_psd_ticket_rating_paths, 2, 0, 2,
    NGX_HTTP_PSD_RATING_BODY_MAX
};


static void
ngx_http_psd_ticket_body(ngx_http_request_t *r)
{
    void                            *body;
    ngx_int_t                        rc;
    const char                      *error;
    ngx_table_elt_t                 *ct;
    ngx_http_psd_ticket_loc_conf_t  *tlcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_ticket_module);

    ct = r->headers_in.content_type;

    if (tlcf->endpoint == NGX_HTTP_PSD_TICKET_INTAKE && ct
        && ct->value.len >= 33
        && ngx_strncasecmp(ct->value.data,
                           (u_char *) "application/x-www-form-urlencoded",
                           33) == 0)
    {
        rc = ngx_http_psd_ticket_form(r, &ngx_http_psd_ticket_intake_fields,
                                      (json_t **) &body, &error);

    } else {
        rc = ngx_http_psd_body_json(r, NGX_HTTP_PSD_TICKET_BODY_MAX, &body,
                                    &error);
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_psd_send_json_error(r, rc,
                                                                  error,
                                                                  NULL));
        return;
    }

    /* both take the JSON: the intake keeps it until the ticket is made */

    if (tlcf->endpoint == NGX_HTTP_PSD_TICKET_ADMIN) {
        rc = ngx_http_psd_ticket_update(r, body);

    } else {
        rc = ngx_http_psd_ticket_intake(r, body);
    }

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


/*
 * A form post becomes the same JSON object as a JSON post: the intake
 * validates one shape.  Values are percent-decoded; jansson refuses those
 * that are not UTF-8.
 */

static ngx_int_t
ngx_http_psd_ticket_form(ngx_http_request_t *r,
    ngx_http_psd_ticket_fields_t *fields, json_t **out, const char **error)
{
    u_char            *buf;
    size_t             len, i, n;
    json_t            *obj, *v;
    ngx_int_t          rc;
    psd_form_ctx_t    *fctx;
    psd_form_conf_t    fconf;
    psd_form_match_t  *m;

    n = fields->n;

    if (!fields->parsed) {
        for (i = 0; i < n; i++) {
            if (psd_path_parse(fields->names[i],
                               ngx_strlen(fields->names[i]),
                               &fields->paths[i])
                != 0)
            {
                *error = "internal_error";
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }

        fields->parsed = 1;
    }

    rc = ngx_http_psd_body_bytes(r, fields->max, &buf, &len, error);
    if (rc != NGX_OK) {
        return rc;
    }

    fctx = ngx_pcalloc(r->pool, sizeof(psd_form_ctx_t));
    if (fctx == NULL) {
        *error = "internal_error";
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    fctx->matches = ngx_pcalloc(r->pool, n * sizeof(psd_form_match_t));
    fctx->max_matches = n;
    fctx->dec_size = len + 2 * n + 1;
    fctx->dec = ngx_pnalloc(r->pool, fctx->dec_size);

    if (fctx->matches == NULL || fctx->dec == NULL) {
        *error = "internal_error";
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    fconf.paths = fields->paths;
    fconf.npaths = n;

    if (psd_form_scan(&fconf, buf, len, fctx) != PSD_FORM_OK) {
        *error = psd_form_strerror(fctx->rc);
        return NGX_HTTP_BAD_REQUEST;
    }

    obj = json_object();
    if (obj == NULL) {
        *error = "internal_error";
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < fctx->nmatches; i++) {
        m = &fctx->matches[i];

        if (m->path_index == fields->boolean) {
            v = json_boolean(m->value_len == 4
                             && ngx_strncmp(m->value, "true", 4) == 0);

        } else {
            v = json_stringn(m->value, m->value_len);
        }

        if (v == NULL) {
            json_decref(obj);
            *error = "invalid_utf8";
            return NGX_HTTP_BAD_REQUEST;
        }

        json_object_set_new(obj, fields->names[m->path_index], v);
    }

    *out = obj;

    return NGX_OK;
}


static void
ngx_http_psd_ticket_cleanup(void *data)
{
    ngx_http_psd_ticket_ctx_t  *ctx = data;

    if (ctx->body) {
        json_decref(ctx->body);
        ctx->body = NULL;
    }
}


static const char *
ngx_http_psd_ticket_str(json_t *body, const char *name, size_t max,
    ngx_uint_t required, ngx_uint_t *bad)
{
    json_t  *v;

    v = json_object_get(body, name);

    if (v == NULL || json_is_null(v)) {
        if (required) {
            *bad = 1;
        }

        return NULL;
    }

    /* jansson refuses invalid UTF-8 in JSON strings already */

    if (!json_is_string(v) || json_string_length(v) > max
        || (required && json_string_length(v) == 0)
        || memchr(json_string_value(v), '\0', json_string_length(v)))
    {
        *bad = 1;
        return NULL;
    }

    return json_string_value(v);
}


static ngx_int_t
ngx_http_psd_ticket_intake(ngx_http_request_t *r, json_t *body)
{
    u_char                          *p;
    size_t                           argvlen[3];
    json_t                          *v;
    ngx_int_t                        rc;
    ngx_uint_t                       bad, i, status;
    const char                      *argv[3], *error;
    psd_card_scan_t                  scan;
    ngx_pool_cleanup_t              *cln;
    ngx_http_psd_ticket_ctx_t       *ctx;
    ngx_http_psd_redis_call_t       *call;
    ngx_http_psd_ticket_loc_conf_t  *tlcf;
    u_char                           key[96];

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_ticket_module);

    cln = ngx_pool_cleanup_add(r->pool, sizeof(ngx_http_psd_ticket_ctx_t));
    if (cln == NULL) {
        json_decref(body);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = cln->data;
    ngx_memzero(ctx, sizeof(ngx_http_psd_ticket_ctx_t));
    cln->handler = ngx_http_psd_ticket_cleanup;

    /* from here the pool cleanup releases the JSON, whatever happens */
    ctx->body = body;

    ngx_http_set_ctx(r, ctx, ngx_http_psd_ticket_module);

    bad = 0;

#define ngx_http_psd_ticket_field(var, name, max, req)                       \
    ctx->var = ngx_http_psd_ticket_str(body, name, max, req, &bad);          \
    if (bad) {                                                               \
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,         \
                                            "invalid_field", name);          \
    }

    ngx_http_psd_ticket_field(email, "email", 254, 1);
    ngx_http_psd_ticket_field(subject, "subject", NGX_HTTP_PSD_TICKET_SUBJECT,
                              1);
    ngx_http_psd_ticket_field(message, "message", tlcf->max_message, 1);
    ngx_http_psd_ticket_field(category, "category", 32, 0);
    ngx_http_psd_ticket_field(order, "order_id", 64, 0);

#undef ngx_http_psd_ticket_field

    /* a ticket is no place for a card number: it would sit in clear */

    if (psd_card_scan((u_char *) ctx->subject, ngx_strlen(ctx->subject), 0,
                      &scan)
        || psd_card_scan((u_char *) ctx->message, ngx_strlen(ctx->message), 0,
                         &scan))
    {
        return ngx_http_psd_send_json_error(r, 422, "card_number_in_ticket",
                                            NULL);
    }

    if (!psd_triage_email_valid(ctx->email, ngx_strlen(ctx->email))) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_email", "email");
    }

    if (ctx->category) {
        for (p = (u_char *) ctx->category; *p; p++) {
            if (!(isalnum(*p) || *p == '_' || *p == '-')) {
                return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                                    "invalid_field",
                                                    "category");
            }
        }
    }

    if (ctx->order) {
        for (i = 0; ctx->order[i]; i++) {
            if (!(isalnum((u_char) ctx->order[i]) || ctx->order[i] == '_'
                  || ctx->order[i] == '-' || ctx->order[i] == '.'
                  || ctx->order[i] == ':'))
            {
                return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                                    "invalid_field",
                                                    "order_id");
            }
        }

        if (i == 0) {
            ctx->order = NULL;
        }
    }

    v = json_object_get(body, "file_anyway");
    ctx->file_anyway = json_is_true(v);

    ngx_str_set(&ctx->order_state, "none");

    if (ctx->order && tlcf->order_proof.len) {
        rc = ngx_http_psd_ticket_order_proof(r, ctx, body, &status, &error);

        if (rc == NGX_DECLINED) {
            /* a claim without proof: filed, but the order is not read */
            return ngx_http_psd_ticket_decide(r, ctx);
        }

        if (rc != NGX_OK) {
            return error ? ngx_http_psd_send_json_error(r, status, error,
                                                        "order_link")
                         : NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    if (ctx->order == NULL) {
        return ngx_http_psd_ticket_decide(r, ctx);
    }

    /* what the order record says, before deciding */

    call = ngx_http_psd_redis_call_create(r, tlcf->redis, 1);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = "HGETALL";
    argvlen[0] = 7;
    argv[1] = (const char *) key;
    argvlen[1] = ngx_sprintf(key, "psd:{order:%s}", ctx->order) - key;

    if (ngx_http_psd_redis_call_add(call, 2, argv, argvlen) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_ticket_order_read, r)
        != NGX_OK)
    {
        return ngx_http_psd_send_unavailable(r, 1);
    }

    ngx_http_psd_redis_wait(r);

    return NGX_DONE;
}


static void
ngx_http_psd_ticket_order_read(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    size_t                      i;
    ngx_int_t                   rc;
    redisReply                 *hash, *k, *v;
    ngx_http_psd_ticket_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_ticket_module);

    hash = call->status == NGX_HTTP_PSD_REDIS_OK ? call->replies[0] : NULL;

    if (hash == NULL || hash->type != REDIS_REPLY_ARRAY) {
        ngx_http_psd_ticket_finalize(r, ngx_http_psd_send_unavailable(r, 1));
        return;
    }

    if (hash->elements == 0) {
        if (ctx->order_verified) {
            /* its signed link names it: saying so tells nothing new */
            ngx_http_psd_ticket_finalize(r, ngx_http_psd_send_json_error(r,
                                         422, "unknown_order", "order_id"));
            return;
        }

        /*
         * An anonymous client must not learn which orders exist: the
         * ticket is filed as it would be for any order, claimed only.
         */

        rc = ngx_http_psd_ticket_decide(r, ctx);

        if (rc != NGX_DONE) {
            ngx_http_psd_ticket_finalize(r, rc);
        }

        return;
    }

    ctx->order_verified = 1;

    for (i = 0; i + 1 < hash->elements; i += 2) {
        k = hash->element[i];
        v = hash->element[i + 1];

        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (ngx_strcmp(k->str, "state") == 0) {
            ctx->order_state.len = v->len;
            ctx->order_state.data = ngx_pnalloc(r->pool, v->len + 1);
            if (ctx->order_state.data == NULL) {
                ngx_str_set(&ctx->order_state, "none");
                continue;
            }

            ngx_memcpy(ctx->order_state.data, v->str, v->len + 1);

        } else if (ngx_strcmp(k->str, "amount") == 0) {
            ctx->order_value = ngx_atoi((u_char *) v->str, v->len);
            ctx->has_order_value = (ctx->order_value >= 0);

        } else if (ngx_strcmp(k->str, "failed_attempts") == 0) {
            ctx->payment_failed = ngx_atoi((u_char *) v->str, v->len) > 0;
        }
    }

    rc = ngx_http_psd_ticket_decide(r, ctx);

    if (rc != NGX_DONE) {
        ngx_http_psd_ticket_finalize(r, rc);
    }
}


/* an answer that fits the question: by category, keyword, order state */

static ngx_http_psd_ticket_answer_t *
ngx_http_psd_ticket_find_answer(ngx_http_psd_ticket_loc_conf_t *tlcf,
    ngx_http_psd_ticket_ctx_t *ctx)
{
    ngx_uint_t                     i;
    psd_triage_ticket_t            t;
    ngx_http_psd_ticket_answer_t  *a;

    if (tlcf->answers == NULL) {
        return NULL;
    }

    ngx_memzero(&t, sizeof(psd_triage_ticket_t));
    t.subject = ctx->subject;
    t.subject_len = ngx_strlen(ctx->subject);
    t.message = ctx->message;
    t.message_len = ngx_strlen(ctx->message);

    a = tlcf->answers->elts;

    for (i = 0; i < tlcf->answers->nelts; i++) {

        switch (a[i].kind) {

        case NGX_HTTP_PSD_ANSWER_CATEGORY:
            if (ctx->category
                && ngx_strlen(ctx->category) == a[i].match.len
                && ngx_strncasecmp((u_char *) ctx->category, a[i].match.data,
                                   a[i].match.len) == 0)
            {
                return &a[i];
            }

            break;

        case NGX_HTTP_PSD_ANSWER_STATE:

            /* "payment_failed": unpaid, with failed attempts */

            if ((ctx->payment_failed && a[i].match.len == 14
                 && ngx_strncmp(a[i].match.data, "payment_failed", 14) == 0
                 && ngx_strcmp(ctx->order_state.data, "created") == 0)
                || (ctx->order_state.len == a[i].match.len
                    && ngx_strncmp(ctx->order_state.data, a[i].match.data,
                                   a[i].match.len) == 0))
            {
                return &a[i];
            }

            break;

        default: /* NGX_HTTP_PSD_ANSWER_KEYWORD */
            if (psd_triage_match(&a[i].keyword, &t)) {
                return &a[i];
            }
        }
    }

    return NULL;
}


static ngx_int_t
ngx_http_psd_ticket_decide(ngx_http_request_t *r,
    ngx_http_psd_ticket_ctx_t *ctx)
{
    u_char                          *p, *out;
    size_t                           len, argvlen[32];
    ngx_uint_t                       i, n;
    const char                      *argv[32];
    psd_triage_ticket_t              t;
    ngx_http_psd_ticket_rule_t      *rules;
    ngx_http_psd_redis_call_t       *call;
    ngx_http_psd_ticket_answer_t    *answer;
    ngx_http_psd_ticket_loc_conf_t  *tlcf;
    u_char                           rnd[NGX_HTTP_PSD_TICKET_ID_LEN];
    u_char                           k1[64], k2[160];
    u_char                           now[NGX_TIME_T_LEN];
    u_char                           maxlen[NGX_INT_T_LEN];
    u_char                           due1[NGX_TIME_T_LEN];
    u_char                           due2[NGX_TIME_T_LEN];

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_ticket_module);

    /* answered before a ticket is opened, unless the client insists */

    answer = ngx_http_psd_ticket_find_answer(tlcf, ctx);

    if (answer && !ctx->file_anyway) {
        len = sizeof("{\"deflected\":true,\"answer\":\"\",\"ticket\":null}\n")
              + ngx_escape_json(NULL, answer->text.data, answer->text.len)
              + answer->text.len;

        out = ngx_pnalloc(r->pool, len);
        if (out == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p = ngx_cpymem(out, "{\"deflected\":true,\"answer\":\"",
                       sizeof("{\"deflected\":true,\"answer\":\"") - 1);
        p = (u_char *) ngx_escape_json(p, answer->text.data,
                                       answer->text.len);
        p = ngx_cpymem(p, "\",\"ticket\":null}\n",
                       sizeof("\",\"ticket\":null}\n") - 1);

        ngx_http_psd_count(TICKETS_DEFLECTED);

        return ngx_http_psd_send_json(r, NGX_HTTP_OK, out, p - out);
    }

    /* triage: the first rule that holds decides */

    ngx_memzero(&t, sizeof(psd_triage_ticket_t));
    t.category = ctx->category ? ctx->category : "";
    t.category_len = ngx_strlen(t.category);
    t.order_state = (char *) ctx->order_state.data;
    t.order_state_len = ctx->order_state.len;
    t.order_value = ctx->order_value;
    t.has_order_value = ctx->has_order_value;
    t.email = ctx->email;
    t.email_len = ngx_strlen(ctx->email);
    t.subject = ctx->subject;
    t.subject_len = ngx_strlen(ctx->subject);
    t.message = ctx->message;
    t.message_len = ngx_strlen(ctx->message);

    rules = tlcf->rules ? tlcf->rules->elts : NULL;
    ctx->rule = NULL;

    for (i = 0; tlcf->rules && i < tlcf->rules->nelts; i++) {
        if (psd_triage_match(&rules[i].rule, &t)) {
            ctx->rule = &rules[i];
            break;
        }
    }

    if (psd_random_base62((char *) rnd, NGX_HTTP_PSD_TICKET_ID_LEN) != 0) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the queue is in the id: staff updates find the ticket by it */

    ctx->id_len = ngx_sprintf(ctx->id, "%V.%*s",
                              ctx->rule ? &ctx->rule->queue
                                        : &ngx_http_psd_ticket_default_queue,
                              (size_t) NGX_HTTP_PSD_TICKET_ID_LEN, rnd)
                  - ctx->id;

    ctx->first_response_by = ngx_time()
                             + (ctx->rule ? ctx->rule->first_response
                                          : 4 * 3600);

    call = ngx_http_psd_redis_call_create(r, tlcf->redis, 1);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    n = 0;
    argv[n] = (const char *) k1;
    argvlen[n++] = ngx_sprintf(k1, "psd:{tq:%V}",
                               ctx->rule ? &ctx->rule->queue
                                         : &ngx_http_psd_ticket_default_queue)
                   - k1;
    argv[n] = (const char *) k2;
    argvlen[n++] = ngx_sprintf(k2, "%*s:t:%*s", argvlen[0], k1,
                               ctx->id_len, ctx->id) - k2;
    argv[n] = (const char *) ctx->id;
    argvlen[n++] = ctx->id_len;
    argv[n] = (const char *) maxlen;
    argvlen[n++] = ngx_sprintf(maxlen, "%ui", tlcf->maxlen) - maxlen;
    argv[n] = (const char *) now;
    argvlen[n++] = ngx_sprintf(now, "%T", ngx_time()) - now;

#define ngx_http_psd_ticket_arg(name, value, len)                            \
    argv[n] = name;                                                          \
    argvlen[n++] = sizeof(name) - 1;                                         \
    argv[n] = (const char *) (value);                                        \
    argvlen[n++] = (len);

    ngx_http_psd_ticket_arg("queue",
                            ctx->rule ? ctx->rule->queue.data
                            : ngx_http_psd_ticket_default_queue.data,
                            ctx->rule ? ctx->rule->queue.len
                            : ngx_http_psd_ticket_default_queue.len);
    ngx_http_psd_ticket_arg("priority",
                            ctx->rule ? ctx->rule->priority.data
                            : ngx_http_psd_ticket_default_priority.data,
                            ctx->rule ? ctx->rule->priority.len
                            : ngx_http_psd_ticket_default_priority.len);
    ngx_http_psd_ticket_arg("rule", ctx->rule ? ctx->rule->name.data
                                              : (u_char *) "",
                            ctx->rule ? ctx->rule->name.len : 0);
    ngx_http_psd_ticket_arg("first_response_due", due1,
                            ngx_sprintf(due1, "%T", ctx->first_response_by)
                            - due1);
    ngx_http_psd_ticket_arg("resolution_due", due2,
                            ngx_sprintf(due2, "%T", ngx_time()
                                        + (ctx->rule ? ctx->rule->resolution
                                                     : 48 * 3600))
                            - due2);
    ngx_http_psd_ticket_arg("email", ctx->email, ngx_strlen(ctx->email));
    ngx_http_psd_ticket_arg("subject", ctx->subject,
                            ngx_strlen(ctx->subject));
    ngx_http_psd_ticket_arg("message", ctx->message,
                            ngx_strlen(ctx->message));
    ngx_http_psd_ticket_arg("category", ctx->category ? ctx->category : "",
                            ctx->category ? ngx_strlen(ctx->category) : 0);
    ngx_http_psd_ticket_arg("order", ctx->order ? ctx->order : "",
                            ctx->order ? ngx_strlen(ctx->order) : 0);
    ngx_http_psd_ticket_arg("order_state", ctx->order_state.data,
                            ctx->order_state.len);
    ngx_http_psd_ticket_arg("order_verified",
                            ctx->order_verified ? "true" : "false",
                            ctx->order_verified ? 4 : 5);
    ngx_http_psd_ticket_arg("answered", answer ? "true" : "false",
                            answer ? 4 : 5);

#undef ngx_http_psd_ticket_arg

    if (ngx_http_psd_redis_call_add_script(call,
                                           &ngx_http_psd_ticket_create_script,
                                           2, n, argv, argvlen)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_ticket_created, r)
        != NGX_OK)
    {
        return ngx_http_psd_send_unavailable(r, 1);
    }

    ngx_http_psd_redis_wait(r);

    return NGX_DONE;
}


static void
ngx_http_psd_ticket_created(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    u_char                     *out, *p;
    redisReply                 *reply;
    ngx_http_psd_ticket_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_ticket_module);

    reply = call->status == NGX_HTTP_PSD_REDIS_OK ? call->replies[0] : NULL;

    if (reply == NULL || reply->type != REDIS_REPLY_STRING) {
        if (reply && reply->type == REDIS_REPLY_ERROR) {
            ngx_http_psd_log(NGX_LOG_ERR, r, 0,
                             "psd_ticket: redis answered \"%*s\"",
                             ngx_min(reply->len, 200), reply->str);
        }

        ngx_http_psd_ticket_finalize(r, ngx_http_psd_send_unavailable(r, 1));
        return;
    }

    ngx_http_psd_count(TICKETS_OPENED);

    /* the order lists the ticket once it exists; without waiting */

    if (ctx->order && ctx->order_verified) {
        ngx_http_psd_ticket_link_order(r, ctx);
    }

    out = ngx_pnalloc(r->pool, 256 + ctx->id_len);
    if (out == NULL) {
        ngx_http_psd_ticket_finalize(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    p = ngx_sprintf(out, "{\"deflected\":false,\"ticket\":\"%*s\","
                    "\"queue\":\"%V\",\"priority\":\"%V\","
                    "\"first_response_by\":%T}\n",
                    ctx->id_len, ctx->id,
                    ctx->rule ? &ctx->rule->queue
                              : &ngx_http_psd_ticket_default_queue,
                    ctx->rule ? &ctx->rule->priority
                              : &ngx_http_psd_ticket_default_priority,
                    ctx->first_response_by);

    ngx_http_psd_ticket_finalize(r, ngx_http_psd_send_json(r,
                                 NGX_HTTP_CREATED, out, p - out));
}


static void
ngx_http_psd_ticket_link_order(ngx_http_request_t *r,
    ngx_http_psd_ticket_ctx_t *ctx)
{
    size_t                           argvlen[3];
    const char                      *argv[3];
    ngx_http_psd_redis_call_t       *call;
    ngx_http_psd_ticket_loc_conf_t  *tlcf;
    u_char                           key[96];

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_ticket_module);

    call = ngx_http_psd_redis_call_create(NULL, tlcf->redis, 1);
    if (call == NULL) {
        return;
    }

    argv[0] = "SADD";
    argvlen[0] = 4;
    argv[1] = (const char *) key;
    argvlen[1] = ngx_sprintf(key, "psd:{order:%s}:tickets", ctx->order)
                 - key;
    argv[2] = (const char *) ctx->id;
    argvlen[2] = ctx->id_len;

    if (ngx_http_psd_redis_call_add(call, 3, argv, argvlen) != NGX_OK) {
        ngx_destroy_pool(call->pool);
        return;
    }

    (void) ngx_http_psd_redis_call_send(call, NULL, NULL);
}


static void
ngx_http_psd_ticket_finalize(ngx_http_request_t *r, ngx_int_t rc)
{
    ngx_connection_t  *c;

    c = r->connection;

    ngx_http_finalize_request(r, rc);
    ngx_http_run_posted_requests(c);
}


/* staff: {"ticket": "<queue>.<id>", "state": "acknowledged"|"resolved"} */

static ngx_int_t
ngx_http_psd_ticket_update(ngx_http_request_t *r, json_t *body)
{
    ngx_int_t    rc;
    const char  *id, *state;

    id = json_string_value(json_object_get(body, "ticket"));
    state = json_string_value(json_object_get(body, "state"));

    /* id and state live in the JSON: it goes once the command is made */

    rc = ngx_http_psd_ticket_update_send(r, id, state);

    json_decref(body);

    return rc;
}


static ngx_int_t
ngx_http_psd_ticket_update_send(ngx_http_request_t *r, const char *id,
    const char *state)
{
    size_t                            argvlen[8], len, qlen;
    const char                       *argv[8];
    ngx_http_psd_redis_call_t        *call;
    ngx_http_psd_ticket_loc_conf_t   *tlcf;
    ngx_http_psd_ticket_admin_ctx_t  *actx;
    u_char                            key[160], stream[64];
    u_char                            now[NGX_TIME_T_LEN];
    u_char                            maxlen[NGX_INT_T_LEN];
    u_char                            exp[NGX_TIME_T_LEN];

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_ticket_module);

    len = id ? ngx_strlen(id) : 0;
    qlen = id ? psd_csat_ticket_id(id, len) : 0;

    if (qlen == 0) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field", "ticket");
    }

    if (state == NULL || (ngx_strcmp(state, "acknowledged") != 0
                          && ngx_strcmp(state, "resolved") != 0))
    {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field", "state");
    }

    /* the id goes with the JSON: the context keeps its own copy */

    actx = ngx_pcalloc(r->pool, sizeof(ngx_http_psd_ticket_admin_ctx_t));
    if (actx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    actx->ticket.data = ngx_pnalloc(r->pool, len);
    if (actx->ticket.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(actx->ticket.data, id, len);
    actx->ticket.len = len;
    actx->queue_len = qlen;

    ngx_http_set_ctx(r, actx, ngx_http_psd_ticket_module);

    /* made before the script, which hands it on only if it resolves now */

    if (tlcf->rating_link && state[0] == 'r'
        && ngx_http_psd_ticket_rating_sign(r, tlcf->rating_link, actx)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    call = ngx_http_psd_redis_call_create(r, tlcf->redis, 1);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = (const char *) key;
    argvlen[0] = ngx_sprintf(key, "psd:{tq:%*s}:t:%s", qlen, id, id) - key;
    argv[1] = (const char *) stream;
    argvlen[1] = ngx_sprintf(stream, "psd:{tq:%*s}", qlen, id) - stream;
    argv[2] = state;
    argvlen[2] = ngx_strlen(state);
    argv[3] = (const char *) now;
    argvlen[3] = ngx_sprintf(now, "%T", ngx_time()) - now;
    argv[4] = id;
    argvlen[4] = len;
    argv[5] = (const char *) maxlen;
    argvlen[5] = ngx_sprintf(maxlen, "%ui", tlcf->maxlen) - maxlen;
    argv[6] = actx->rating ? (const char *) actx->rating : "";
    argvlen[6] = actx->rating_len;
    argv[7] = (const char *) exp;
    argvlen[7] = ngx_sprintf(exp, "%T", actx->rating_exp) - exp;

    if (ngx_http_psd_redis_call_add_script(call,
                                           &ngx_http_psd_ticket_update_script,
                                           2, 8, argv, argvlen)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_ticket_updated, r)
        != NGX_OK)
    {
        return ngx_http_psd_send_unavailable(r, 1);
    }

    ngx_http_psd_redis_wait(r);

    return NGX_DONE;
}


/*
 * {"updated":true,"rating":{"url":"...","scores":["...&score=1", ...],
 * "expires":...}}: the link and the five links of a one-click e-mail.  The
 * URL is made of URL-safe characters and the configured prefix, which
 * holds no '"' or '\\': no JSON escaping.
 */

static ngx_int_t
ngx_http_psd_ticket_rating_answer(ngx_http_request_t *r,
    ngx_http_psd_ticket_admin_ctx_t *actx)
{
    u_char      *out, *p;
    ngx_uint_t   i;

    out = ngx_pnalloc(r->pool, 128 + NGX_TIME_T_LEN
                      + (PSD_CSAT_SCORE_MAX + 1) * (actx->rating_len + 16));
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(out, "{\"updated\":true,\"rating\":{\"url\":\"%*s\","
                    "\"scores\":[", actx->rating_len, actx->rating);

    for (i = PSD_CSAT_SCORE_MIN; i <= PSD_CSAT_SCORE_MAX; i++) {
        p = ngx_sprintf(p, "%s\"%*s&score=%ui\"",
                        i == PSD_CSAT_SCORE_MIN ? "" : ",",
                        actx->rating_len, actx->rating, i);
    }

    p = ngx_sprintf(p, "],\"expires\":%T}}\n", actx->rating_exp);

    return ngx_http_psd_send_json(r, NGX_HTTP_OK, out, p - out);
}


static void
ngx_http_psd_ticket_updated(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    ngx_int_t                         rc;
    redisReply                       *reply, **e;
    ngx_http_psd_metrics_queue_t     *q;
    ngx_http_psd_ticket_admin_ctx_t  *actx;

    actx = ngx_http_get_module_ctx(r, ngx_http_psd_ticket_module);

    reply = call->status == NGX_HTTP_PSD_REDIS_OK ? call->replies[0] : NULL;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        if (reply && reply->type == REDIS_REPLY_ERROR) {
            ngx_http_psd_log(NGX_LOG_ERR, r, 0,
                             "psd_ticket_admin: redis answered \"%*s\"",
                             ngx_min(reply->len, 200), reply->str);
        }

        rc = ngx_http_psd_send_unavailable(r, 1);

    } else if (reply->element[0]->integer == 0) {
        rc = ngx_http_psd_send_json_error(r, NGX_HTTP_NOT_FOUND,
                                          "unknown_ticket", NULL);

    } else if (reply->element[0]->integer == 2) {
        rc = ngx_http_psd_send_json(r, NGX_HTTP_OK,
                                    (u_char *) "{\"updated\":false}\n",
                                    sizeof("{\"updated\":false}\n") - 1);

    } else {
        e = reply->element;

        if (reply->elements == 5 && e[1]->integer >= 0) {
            ngx_http_psd_count(TICKETS_ACKNOWLEDGED);
            ngx_http_psd_count_add(TICKET_FIRST_RESPONSE_SECONDS,
                                   e[1]->integer);

            if (e[2]->integer) {
                ngx_http_psd_count(TICKET_FIRST_RESPONSE_LATE);
            }
        }

        if (reply->elements == 5 && e[3]->integer >= 0) {
            ngx_http_psd_count(TICKETS_RESOLVED);
            ngx_http_psd_count_add(TICKET_RESOLUTION_SECONDS,
                                   e[3]->integer);

            if (e[4]->integer) {
                ngx_http_psd_count(TICKET_RESOLUTION_LATE);
            }

            /* the base of the response rate: resolved tickets per queue */

            q = ngx_http_psd_metrics_queue(actx->ticket.data,
                                           actx->queue_len);
            ngx_http_psd_count_queue(q, resolved, 1);
        }

        if (actx->rating && reply->elements == 5 && e[3]->integer >= 0) {
            rc = ngx_http_psd_ticket_rating_answer(r, actx);

        } else {
            rc = ngx_http_psd_send_json(r, NGX_HTTP_OK,
                                        (u_char *) "{\"updated\":true}\n",
                                        sizeof("{\"updated\":true}\n") - 1);
        }
    }

    ngx_http_psd_ticket_finalize(r, rc);
}


/*
 * psd_ticket_rating_link <prefix> | off [ttl=<time>] [key=<kid>]: the
 * prefix is "/path/" or "http(s)://host/path/"; the ticket id follows it,
 * and its path with the ticket id is what the link signs.
 */

static char *
ngx_http_psd_ticket_rating_link(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_psd_ticket_loc_conf_t  *tlcf = conf;

    u_char                      *p, *last, *host, *seg;
    time_t                       ttl;
    ngx_str_t                   *value, v;
    ngx_uint_t                   i;
    ngx_http_psd_rating_link_t  *rl;

    if (tlcf->rating_link != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        tlcf->rating_link = NULL;
        return NGX_CONF_OK;
    }

    rl = ngx_pcalloc(cf->pool, sizeof(ngx_http_psd_rating_link_t));
    if (rl == NULL) {
        return NGX_CONF_ERROR;
    }

    rl->url = value[1];
    rl->ttl = 30 * 86400;

    p = value[1].data;
    last = p + value[1].len;

    if (value[1].len > NGX_HTTP_PSD_RATING_URL_MAX) {
        goto invalid_url;
    }

    if (value[1].len > 7 && ngx_strncasecmp(p, (u_char *) "http://", 7) == 0)
    {
        p += 7;

    } else if (value[1].len > 8
               && ngx_strncasecmp(p, (u_char *) "https://", 8) == 0)
    {
        p += 8;
    }

    /* a host (and port) after a scheme: what URLs in e-mails may hold */

    if (p != value[1].data) {
        for (host = p; p < last && *p != '/'; p++) {
            if (!(isalnum(*p) || *p == '.' || *p == '-' || *p == ':'
                  || *p == '[' || *p == ']'))
            {
                goto invalid_url;
            }
        }

        if (p == host) {
            goto invalid_url;
        }
    }

    /*
     * The path: unreserved characters only, so that it reads the same
     * encoded and decoded, as nginx sees it; no empty, "." or ".."
     * segment, as the link format wants of a signed path.
     */

    rl->path.data = p;
    rl->path.len = last - p;

    if (rl->path.len == 0 || p[0] != '/' || last[-1] != '/') {
        goto invalid_url;
    }

    for (seg = p + 1, p++; p < last; p++) {
        if (*p == '/') {
            if (p == seg || (p - seg == 1 && seg[0] == '.')
                || (p - seg == 2 && seg[0] == '.' && seg[1] == '.'))
            {
                goto invalid_url;
            }

            seg = p + 1;
            continue;
        }

        if (!(isalnum(*p) || *p == '.' || *p == '_' || *p == '~'
              || *p == '-'))
        {
            goto invalid_url;
        }
    }

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "ttl=", 4) == 0) {
            v.data = value[i].data + 4;
            v.len = value[i].len - 4;

            ttl = ngx_parse_time(&v, 1);

            if (ttl == (time_t) NGX_ERROR || ttl < 60 || ttl > 365 * 86400) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid parameter \"%V\" in \"%V\", "
                                   "it must be from 1m to 365d",
                                   &value[i], &cmd->name);
                return NGX_CONF_ERROR;
            }

            rl->ttl = ttl;
            continue;
        }

        if (ngx_strncmp(value[i].data, "key=", 4) == 0
            && value[i].len > 4)
        {
            /* the key itself is looked for once the keys are all read */
            rl->kid.data = value[i].data + 4;
            rl->kid.len = value[i].len - 4;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid parameter \"%V\" in \"%V\"",
                           &value[i], &cmd->name);
        return NGX_CONF_ERROR;
    }

    tlcf->rating_link = rl;

    return NGX_CONF_OK;

invalid_url:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid rating link prefix \"%V\" in \"%V\", use "
                       "\"/path/\" or \"https://host/path/\" with segments "
                       "of [A-Za-z0-9._~-], ending in \"/\"",
                       &value[1], &cmd->name);
    return NGX_CONF_ERROR;
}


/* the rating link of a ticket being resolved: <prefix><ticket>?<link> */

static ngx_int_t
ngx_http_psd_ticket_rating_sign(ngx_http_request_t *r,
    ngx_http_psd_rating_link_t *rl, ngx_http_psd_ticket_admin_ctx_t *actx)
{
    u_char             *p, *path;
    long                qlen;
    const char         *err;
    psd_link_key_t     *key;
    psd_link_params_t   lp;
    char                id[23];
    char                query[PSD_LINK_QUERY_MAX];

    path = ngx_pnalloc(r->pool, rl->path.len + actx->ticket.len);
    if (path == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(path, rl->path.data, rl->path.len);
    p = ngx_cpymem(p, actx->ticket.data, actx->ticket.len);

    if (psd_random_base62(id, 22) != 0) {
        return NGX_ERROR;
    }

    key = rl->keys->sign;

    ngx_memzero(&lp, sizeof(psd_link_params_t));
    lp.kid = key->kid;
    lp.kid_len = key->kid_len;
    lp.key = key->key;
    lp.key_len = key->key_len;
    lp.hkey = key->hkey;
    lp.path = (char *) path;
    lp.path_len = p - path;
    lp.exp = ngx_time() + rl->ttl;
    lp.id = id;
    lp.id_len = 22;

    err = NULL;
    qlen = psd_link_sign(&lp, query, sizeof(query), &err);

    if (qlen < 0) {
        ngx_http_psd_log(NGX_LOG_ERR, r, 0,
                         "psd_ticket_admin: no rating link: %s",
                         err ? err : "-");
        return NGX_ERROR;
    }

    actx->rating = ngx_pnalloc(r->pool, rl->url.len + actx->ticket.len + 1
                                        + qlen);
    if (actx->rating == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(actx->rating, rl->url.data, rl->url.len);
    p = ngx_cpymem(p, actx->ticket.data, actx->ticket.len);
    *p++ = '?';
    p = ngx_cpymem(p, query, qlen);

    actx->rating_len = p - actx->rating;
    actx->rating_exp = lp.exp;

    return NGX_OK;
}


/* staff: GET ?ticket=<queue>.<id>, the ticket's record with its rating */

static ngx_int_t
ngx_http_psd_ticket_view(ngx_http_request_t *r)
{
    size_t                            argvlen[2], qlen;
    ngx_str_t                         id;
    ngx_int_t                         rc;
    const char                       *argv[2];
    ngx_http_psd_redis_call_t        *call;
    ngx_http_psd_ticket_loc_conf_t   *tlcf;
    ngx_http_psd_ticket_admin_ctx_t  *actx;
    u_char                            key[160];

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_ticket_module);

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!ngx_http_psd_bearer_ok(r, &tlcf->api_key)) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_UNAUTHORIZED,
                                            "unauthorized", NULL);
    }

    if (ngx_http_arg(r, (u_char *) "ticket", 6, &id) != NGX_OK
        || (qlen = psd_csat_ticket_id((char *) id.data, id.len)) == 0)
    {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field", "ticket");
    }

    actx = ngx_pcalloc(r->pool, sizeof(ngx_http_psd_ticket_admin_ctx_t));
    if (actx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    actx->ticket = id;
    actx->queue_len = qlen;

    ngx_http_set_ctx(r, actx, ngx_http_psd_ticket_module);

    call = ngx_http_psd_redis_call_create(r, tlcf->redis, 1);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = "HGETALL";
    argvlen[0] = 7;
    argv[1] = (const char *) key;
    argvlen[1] = ngx_sprintf(key, "psd:{tq:%*s}:t:%V", qlen, id.data, &id)
                 - key;

    if (ngx_http_psd_redis_call_add(call, 2, argv, argvlen) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_ticket_viewed, r)
        != NGX_OK)
    {
        return ngx_http_psd_send_unavailable(r, 1);
    }

    r->main->count++;
    ngx_http_psd_redis_wait(r);

    return NGX_DONE;
}


/*
 * {"ticket":...,"state":...,"created_at":...,...,"csat":{"score":4,
 * "comment":...,"rated_at":...,"commented_at":...,"link":...}}: times and the
 * score as numbers, the rating in its own object, the rest as strings
 */

static void
ngx_http_psd_ticket_viewed(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    char                             *text, *name;
    size_t                            i, len;
    u_char                           *body;
    json_t                           *out, *csat, *to, *v;
    ngx_int_t                         rc;
    redisReply                       *hash, *k, *f;
    ngx_http_psd_ticket_admin_ctx_t  *actx;

    actx = ngx_http_get_module_ctx(r, ngx_http_psd_ticket_module);

    hash = call->status == NGX_HTTP_PSD_REDIS_OK ? call->replies[0] : NULL;

    if (hash == NULL || hash->type != REDIS_REPLY_ARRAY) {
        ngx_http_psd_ticket_finalize(r, ngx_http_psd_send_unavailable(r, 1));
        return;
    }

    if (hash->elements == 0) {
        ngx_http_psd_ticket_finalize(r, ngx_http_psd_send_json_error(r,
                                     NGX_HTTP_NOT_FOUND, "unknown_ticket",
                                     NULL));
        return;
    }

    out = json_object();
    csat = json_object();

    json_object_set_new(out, "ticket", json_stringn((char *) actx->ticket.data,
                                                    actx->ticket.len));

    for (i = 0; i + 1 < hash->elements; i += 2) {
        k = hash->element[i];
        f = hash->element[i + 1];

        if (k->type != REDIS_REPLY_STRING || f->type != REDIS_REPLY_STRING) {
            continue;
        }

        name = k->str;
        to = out;

        if (ngx_strncmp(name, "csat_", 5) == 0) {
            name += 5;
            to = csat;

        } else if (ngx_strcmp(name, "rated_at") == 0) {
            to = csat;
        }

        len = ngx_strlen(name);

        if (ngx_strcmp(name, "score") == 0
            || (len > 3 && ngx_strcmp(name + len - 3, "_at") == 0)
            || (len > 4 && ngx_strcmp(name + len - 4, "_due") == 0))
        {
            v = json_integer(ngx_atotm((u_char *) f->str, f->len));

        } else {
            v = json_stringn(f->str, f->len);
        }

        json_object_set_new(to, name, v);
    }

    if (json_object_size(csat)) {
        json_object_set_new(out, "csat", csat);

    } else {
        json_decref(csat);
    }

    text = json_dumps(out, JSON_COMPACT);
    json_decref(out);

    rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

    if (text) {
        len = ngx_strlen(text);
        body = ngx_pnalloc(r->pool, len + 1);

        if (body) {
            ngx_memcpy(body, text, len);
            body[len] = '\n';
            rc = ngx_http_psd_send_json(r, NGX_HTTP_OK, body, len + 1);
        }

        free(text);
    }

    ngx_http_psd_ticket_finalize(r, rc);
}


/*
 * The link is a credential in its URL: answers are not cached, and the
 * page does not hand it on as a referrer.
 */

static ngx_int_t
ngx_http_psd_ticket_rating_headers(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    static ngx_str_t  headers[][2] = {
        { ngx_string("Cache-Control"), ngx_string("no-store") },
        { ngx_string("Referrer-Policy"), ngx_string("no-referrer") },
    };

    for (i = 0; i < 2; i++) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        h->key = headers[i][0];
        h->value = headers[i][1];
    }

    return NGX_OK;
}


/*
 * The customer's click: GET <rating path>/<ticket>?<link>&score=N records
 * the score; POST to the same link with score and comment (form or JSON)
 * records both, or the comment after the score.  The link is checked
 * first, with the rating keys: a forger learns nothing about tickets.
 */

static ngx_int_t
ngx_http_psd_ticket_rate(ngx_http_request_t *r)
{
    size_t                             qlen, len;
    ngx_str_t                          arg;
    ngx_int_t                          rc;
    psd_link_t                        *link;
    const char                        *id;
    ngx_table_elt_t                   *accept;
    psd_link_conf_t                    lconf;
    psd_link_status_e                  st;
    ngx_http_psd_ticket_loc_conf_t    *tlcf;
    ngx_http_psd_ticket_rating_ctx_t  *ctx;

    static const char  *codes[] = {
        "", "link_malformed", "link_unknown_key", "link_invalid",
        "link_expired", "link_wrong_path", "link_wrong_client"
    };

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_ticket_module);

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_POST))) {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_NOT_ALLOWED,
                                            "method_not_allowed", NULL);
    }

    if (ngx_http_psd_ticket_rating_headers(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    link = ngx_palloc(r->pool, sizeof(psd_link_t));
    if (link == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the location's psd_link_skew and psd_link_max_ttl; the rating keys */

    ngx_memzero(&lconf, sizeof(psd_link_conf_t));

    if (ngx_http_psd_link_keys(r, &lconf) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    lconf.keys = tlcf->rating_keys->keys;
    lconf.nkeys = tlcf->rating_keys->nkeys;

    st = psd_link_verify(link, &lconf, (char *) r->args.data, r->args.len,
                         (char *) r->uri.data, r->uri.len, NULL);

    /* a prefix link would rate every ticket under it: never issued */

    if (st == PSD_LINK_OK && link->scope_len) {
        st = PSD_LINK_INVALID;
    }

    if (st != PSD_LINK_OK) {
        if ((ngx_uint_t) st >= sizeof(codes) / sizeof(codes[0])) {
            st = PSD_LINK_INVALID;
        }

        ngx_http_psd_log(NGX_LOG_INFO, r, 0,
                         "psd_ticket_rating: denied, %s, link \"%s\"",
                         codes[st] + 5, link->id_len ? link->id : "-");

        return ngx_http_psd_send_json_error(r,
                                            st == PSD_LINK_EXPIRED
                                            ? NGX_HTTP_GONE
                                            : NGX_HTTP_FORBIDDEN,
                                            codes[st], NULL);
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_psd_ticket_rating_ctx_t));
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (psd_csat_ticket_from_path((char *) r->uri.data, r->uri.len, &id,
                                  &len, &qlen)
        != 0)
    {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_NOT_FOUND,
                                            "unknown_ticket", NULL);
    }

    ctx->ticket.data = (u_char *) id;
    ctx->ticket.len = len;
    ctx->queue_len = qlen;
    ctx->link_len = link->id_len;
    ngx_memcpy(ctx->link, link->id, link->id_len + 1);

    accept = ngx_http_psd_header_in(r, "Accept");
    ctx->html = accept
                && ngx_strlcasestrn(accept->value.data,
                                    accept->value.data + accept->value.len,
                                    (u_char *) "text/html", 9 - 1)
                   != NULL;

    ngx_http_set_ctx(r, ctx, ngx_http_psd_ticket_module);

    if (r->method == NGX_HTTP_POST) {
        return ngx_http_psd_read_post(r, NULL, NGX_HTTP_PSD_RATING_BODY_MAX,
                                      ngx_http_psd_ticket_rating_body);
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_arg(r, (u_char *) "score", 5, &arg) != NGX_OK
        || (ctx->score = psd_csat_score((char *) arg.data, arg.len)) == 0)
    {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field", "score");
    }

    rc = ngx_http_psd_ticket_rating_send(r, ctx, NULL, 0);

    if (rc == NGX_DONE) {
        r->main->count++;
    }

    return rc;
}


/* POST: {"score": 1-5, "comment": "..."} or score=...&comment=... */

static void
ngx_http_psd_ticket_rating_body(ngx_http_request_t *r)
{
    void                              *body;
    size_t                             len;
    json_t                            *v;
    ngx_str_t                          arg;
    ngx_int_t                          rc;
    const char                        *error, *comment, *field;
    ngx_table_elt_t                   *ct;
    psd_csat_comment_e                 cc;
    ngx_http_psd_ticket_rating_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_ticket_module);

    ct = r->headers_in.content_type;

    if (ct && ct->value.len >= 33
        && ngx_strncasecmp(ct->value.data,
                           (u_char *) "application/x-www-form-urlencoded",
                           33) == 0)
    {
        rc = ngx_http_psd_ticket_form(r, &ngx_http_psd_ticket_rating_fields,
                                      (json_t **) &body, &error);

    } else {
        rc = ngx_http_psd_body_json(r, NGX_HTTP_PSD_RATING_BODY_MAX, &body,
                                    &error);
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, ngx_http_psd_send_json_error(r, rc,
                                                                  error,
                                                                  NULL));
        return;
    }

    /* the score in the body (a number, or a form's text), else the link's */

    field = NULL;
    v = json_object_get(body, "score");

    if (v == NULL) {
        if (ngx_http_arg(r, (u_char *) "score", 5, &arg) == NGX_OK) {
            ctx->score = psd_csat_score((char *) arg.data, arg.len);
        }

    } else if (json_is_integer(v)) {
        ctx->score = (json_integer_value(v) >= PSD_CSAT_SCORE_MIN
                      && json_integer_value(v) <= PSD_CSAT_SCORE_MAX)
                     ? (ngx_uint_t) json_integer_value(v) : 0;

    } else if (json_is_string(v)) {
        ctx->score = psd_csat_score(json_string_value(v),
                                    json_string_length(v));
    }

    if (ctx->score == 0) {
        field = "score";
    }

    comment = NULL;
    len = 0;
    v = json_object_get(body, "comment");

    if (field == NULL && v && !json_is_null(v)) {
        if (!json_is_string(v)) {
            field = "comment";

        } else {
            comment = json_string_value(v);
            len = json_string_length(v);
        }
    }

    cc = PSD_CSAT_OK;

    if (field == NULL && comment) {
        cc = psd_csat_comment_check((u_char *) comment, len,
                                    PSD_CSAT_COMMENT_MAX);
    }

    if (field || cc != PSD_CSAT_OK) {
        json_decref(body);

        rc = (cc == PSD_CSAT_CARD)
             ? ngx_http_psd_send_json_error(r, 422, "card_number_in_comment",
                                            "comment")
             : ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field",
                                            field ? field : "comment");

        ngx_http_finalize_request(r, rc);
        return;
    }

    /* the comment lives in the JSON: it goes once the command is made */

    rc = ngx_http_psd_ticket_rating_send(r, ctx, comment, len);

    json_decref(body);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


static ngx_int_t
ngx_http_psd_ticket_rating_send(ngx_http_request_t *r,
    ngx_http_psd_ticket_rating_ctx_t *ctx, const char *comment,
    size_t comment_len)
{
    size_t                           argvlen[5];
    const char                      *argv[5];
    ngx_http_psd_redis_call_t       *call;
    ngx_http_psd_ticket_loc_conf_t  *tlcf;
    u_char                           key[160], score[2];
    u_char                           now[NGX_TIME_T_LEN];

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_ticket_module);

    ctx->comment = (comment_len != 0);

    call = ngx_http_psd_redis_call_create(r, tlcf->redis, 1);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    score[0] = (u_char) ('0' + ctx->score);

    argv[0] = (const char *) key;
    argvlen[0] = ngx_sprintf(key, "psd:{tq:%*s}:t:%V", ctx->queue_len,
                             ctx->ticket.data, &ctx->ticket)
                 - key;
    argv[1] = (const char *) score;
    argvlen[1] = 1;
    argv[2] = comment_len ? comment : "";
    argvlen[2] = comment_len;
    argv[3] = (const char *) now;
    argvlen[3] = ngx_sprintf(now, "%T", ngx_time()) - now;
    argv[4] = ctx->link;
    argvlen[4] = ctx->link_len;

    if (ngx_http_psd_redis_call_add_script(call,
                                           &ngx_http_psd_ticket_rating_script,
                                           1, 5, argv, argvlen)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* closed: a rating that cannot be recorded must not look recorded */

    if (ngx_http_psd_redis_call_send(call, ngx_http_psd_ticket_rated, r)
        != NGX_OK)
    {
        return ngx_http_psd_send_unavailable(r, 1);
    }

    ngx_http_psd_redis_wait(r);

    return NGX_DONE;
}


static u_char  ngx_http_psd_ticket_page_head[] =
    "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width\">"
    "<meta name=\"robots\" content=\"noindex\">"
    "<title>Thank you</title></head>\n<body><h1>Thank you!</h1>\n";

static u_char  ngx_http_psd_ticket_page_form[] =
    "<form method=\"post\"><input type=\"hidden\" name=\"score\" "
    "value=\"%ui\"><p><label for=\"comment\">Anything you would like to "
    "tell us?</label></p><p><textarea id=\"comment\" name=\"comment\" "
    "rows=\"5\" cols=\"50\" maxlength=\"2000\" required></textarea></p>"
    "<p><button type=\"submit\">Send</button></p></form>\n";


/*
 * A page for a browser, JSON for the rest.  The form posts to the page's
 * own URL, the link included; nothing of the request is written into it
 * but the score, a digit.
 */

static ngx_int_t
ngx_http_psd_ticket_rating_page(ngx_http_request_t *r,
    ngx_http_psd_ticket_rating_ctx_t *ctx)
{
    u_char           *out, *p;
    ngx_table_elt_t  *h;

    out = ngx_pnalloc(r->pool, 1024 + ctx->ticket.len);
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!ctx->html) {
        p = ngx_sprintf(out, "{\"rated\":true,\"ticket\":\"%V\","
                        "\"score\":%ui,\"comment\":%s}\n", &ctx->ticket,
                        ctx->score, ctx->comment ? "true" : "false");

        return ngx_http_psd_send_json(r, NGX_HTTP_OK, out, p - out);
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Content-Security-Policy");
    ngx_str_set(&h->value, "default-src 'none'; form-action 'self'; "
                           "frame-ancestors 'none'");

    p = ngx_cpymem(out, ngx_http_psd_ticket_page_head,
                   sizeof(ngx_http_psd_ticket_page_head) - 1);

    if (ctx->comment) {
        p = ngx_sprintf(p, "<p>Your rating (%ui of 5) and your comment "
                        "were recorded.</p>\n", ctx->score);

    } else {
        p = ngx_sprintf(p, "<p>Your rating (%ui of 5) was recorded.</p>\n",
                        ctx->score);
        p = ngx_sprintf(p, (char *) ngx_http_psd_ticket_page_form,
                        ctx->score);
    }

    p = ngx_cpymem(p, "</body></html>\n", sizeof("</body></html>\n") - 1);

    return ngx_http_psd_send_body(r, NGX_HTTP_OK, "text/html; charset=utf-8",
                                  out, p - out);
}


static void
ngx_http_psd_ticket_rated(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    ngx_int_t                          rc;
    redisReply                        *reply;
    ngx_http_psd_metrics_queue_t      *q;
    ngx_http_psd_ticket_rating_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_psd_ticket_module);

    reply = call->status == NGX_HTTP_PSD_REDIS_OK ? call->replies[0] : NULL;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        if (reply && reply->type == REDIS_REPLY_ERROR) {
            ngx_http_psd_log(NGX_LOG_ERR, r, 0,
                             "psd_ticket_rating: redis answered \"%*s\"",
                             ngx_min(reply->len, 200), reply->str);
        }

        ngx_http_psd_ticket_finalize(r, ngx_http_psd_send_unavailable(r, 1));
        return;
    }

    q = ngx_http_psd_metrics_queue(ctx->ticket.data, ctx->queue_len);

    switch (reply->element[0]->integer) {

    case 0:
        rc = ngx_http_psd_send_json_error(r, NGX_HTTP_NOT_FOUND,
                                          "unknown_ticket", NULL);
        break;

    case 3:
        rc = ngx_http_psd_send_json_error(r, NGX_HTTP_CONFLICT,
                                          "ticket_not_resolved", NULL);
        break;

    case 1:
        ngx_http_psd_count_queue(q, responses, 1);
        ngx_http_psd_count_queue(q, score_total, ctx->score);
        ngx_http_psd_count_queue(q, scores[ctx->score - 1], 1);

        if (ctx->comment) {
            ngx_http_psd_count_queue(q, comments, 1);
        }

        rc = ngx_http_psd_ticket_rating_page(r, ctx);
        break;

    case 4:
        ngx_http_psd_count_queue(q, comments, 1);
        rc = ngx_http_psd_ticket_rating_page(r, ctx);
        break;

    default: /* 2 */
        rc = ngx_http_psd_send_json_error(r, NGX_HTTP_CONFLICT,
                                          "already_rated", NULL);
    }

    ngx_http_psd_ticket_finalize(r, rc);
}


static char *
ngx_http_psd_ticket_order_proof_conf(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_psd_ticket_loc_conf_t  *tlcf = conf;

    ngx_str_t  *value;

    if (tlcf->order_proof.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        ngx_str_set(&tlcf->order_proof, "");
        return NGX_CONF_OK;
    }

    if (value[1].len < 2 || value[1].data[0] != '/'
        || ngx_strlchr(value[1].data, value[1].data + value[1].len, '?')
        || ngx_strlchr(value[1].data, value[1].data + value[1].len, '#'))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid order status path \"%V\" in \"%V\", "
                           "use the path of the customer status location "
                           "or \"off\"", &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    tlcf->order_proof = value[1];

    return NGX_CONF_OK;
}


/*
 * A ticket names an order only with the customer's signed status link
 * for it (the query string, or the whole URL, in "order_link"): then the
 * order is read, its state and value triage the ticket, and the order
 * lists it.  Without one the ticket is filed as a claim, and the client
 * learns nothing about the order.  NGX_OK: proven; NGX_DECLINED: no proof;
 * otherwise the answer to send.
 */

static ngx_int_t
ngx_http_psd_ticket_order_proof(ngx_http_request_t *r,
    ngx_http_psd_ticket_ctx_t *ctx, json_t *body, ngx_uint_t *status,
    const char **error)
{
    size_t                           len;
    json_t                          *v;
    const char                      *query, *q;
    psd_link_t                      *link;
    psd_link_conf_t                  lconf;
    psd_link_status_e                st;
    ngx_http_psd_ticket_loc_conf_t  *tlcf;

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_ticket_module);
    *error = NULL;

    v = json_object_get(body, "order_link");

    if (v == NULL || json_is_null(v)) {
        return NGX_DECLINED;
    }

    if (!json_is_string(v) || json_string_length(v) == 0
        || json_string_length(v) > 2048)
    {
        *status = NGX_HTTP_BAD_REQUEST;
        *error = "invalid_field";
        return NGX_ERROR;
    }

    query = json_string_value(v);
    len = json_string_length(v);

    q = (const char *) ngx_strlchr((u_char *) query, (u_char *) query + len,
                                   '?');
    if (q) {
        len -= q + 1 - query;
        query = q + 1;
    }

    link = ngx_palloc(r->pool, sizeof(psd_link_t));
    if (link == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(&lconf, sizeof(psd_link_conf_t));

    if (ngx_http_psd_link_keys(r, &lconf) != NGX_OK) {
        *status = NGX_HTTP_FORBIDDEN;
        *error = "link_unknown_key";
        return NGX_ERROR;
    }

    st = psd_link_verify(link, &lconf, query, len,
                         (char *) tlcf->order_proof.data,
                         tlcf->order_proof.len, NULL);

    if (st != PSD_LINK_OK || link->order_len != ngx_strlen(ctx->order)
        || ngx_strncmp(link->order, ctx->order, link->order_len) != 0)
    {
        ngx_http_psd_log(NGX_LOG_INFO, r, 0,
                         "psd_ticket: order link refused, %s",
                         st == PSD_LINK_OK ? "another order"
                                           : psd_link_status_name(st));

        *status = (st == PSD_LINK_EXPIRED) ? NGX_HTTP_GONE
                                           : NGX_HTTP_FORBIDDEN;
        *error = (st == PSD_LINK_EXPIRED) ? "link_expired" : "link_invalid";
        return NGX_ERROR;
    }

    ctx->order_verified = 1;

    return NGX_OK;
}
