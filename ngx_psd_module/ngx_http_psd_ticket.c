
/*
 * Copyright (C) ngx_psd_module authors
 *
 * Support: ticket intake at the edge.  A ticket is validated, answered
 * from the shop's answers or the order record when it can be (deflection),
 * triaged by rules into a queue with a priority and SLA times, and handed
 * to the help desk through a Redis Stream per queue.  Staff acknowledge
 * and resolve tickets through an authenticated endpoint; the times feed
 * the SLA figures in the metrics.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_psd_module.h"
#include "ngx_http_psd_redis.h"
#include "ngx_http_psd_metrics.h"
#include "ngx_http_psd_ticket.h"
#include "psd_card.h"
#include "psd_crypto.h"
#include "psd_form.h"
#include "psd_json.h"
#include "psd_triage.h"


#define NGX_HTTP_PSD_TICKET_INTAKE     1
#define NGX_HTTP_PSD_TICKET_ADMIN      2

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


typedef struct {
    ngx_uint_t                    endpoint;
    ngx_array_t                  *rules;      /* ngx_http_psd_ticket_rule_t */
    ngx_array_t                  *answers;    /* ngx_http_psd_ticket_answer_t */
    size_t                        max_message;
    ngx_uint_t                    maxlen;
    ngx_str_t                     api_key;
    ngx_str_t                     redis_name;
    ngx_http_psd_redis_server_t  *redis;
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
    ngx_http_psd_ticket_rule_t   *rule;
    u_char                        id[NGX_HTTP_PSD_TICKET_ID_LEN + 80];
    size_t                        id_len;
    time_t                        first_response_by;
    ngx_connection_t             *connection;
} ngx_http_psd_ticket_ctx_t;


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
    json_t **out, const char **error);
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
    "           'resolution_due', f.resolution_due, 'order', f.order or '')\n"
    "return id\n",
    ""
};


/*
 * KEYS: the ticket's hash.  ARGV: acknowledged or resolved, now.
 * Returns {0} unknown, {2} already so, or {1, first response seconds (-1
 * if not now), first response late (0/1), resolution seconds (-1),
 * resolution late (0/1)}.  Times are clamped at zero: a ticket filed by a
 * node whose clock runs ahead is still counted.
 */

static ngx_http_psd_redis_script_t  ngx_http_psd_ticket_update_script = {
    "ticket_update",
    "local t = redis.call('HMGET', KEYS[1], 'state', 'created_at',\n"
    "  'first_response_due', 'resolution_due', 'acknowledged_at')\n"
    "if not t[1] then return {0} end\n"
    "if t[1] == 'resolved' or (ARGV[1] == 'acknowledged' and t[5]) then\n"
    "  return {2}\n"
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

    if (conf->endpoint == 0) {
        return NGX_CONF_OK;
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

    /* customers file tickets without a key; staff updates need one */

    return ngx_http_psd_read_post(r,
                                  tlcf->endpoint == NGX_HTTP_PSD_TICKET_ADMIN
                                  ? &tlcf->api_key : NULL,
                                  NGX_HTTP_PSD_TICKET_BODY_MAX,
                                  ngx_http_psd_ticket_body);
}


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
        rc = ngx_http_psd_ticket_form(r, (json_t **) &body, &error);

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
ngx_http_psd_ticket_form(ngx_http_request_t *r, json_t **out,
    const char **error)
{
    u_char            *buf;
    size_t             len, i;
    json_t            *obj, *v;
    ngx_int_t          rc;
    psd_form_ctx_t    *fctx;
    psd_form_conf_t    fconf;
    psd_form_match_t  *m;

    static const char  *names[] = {
        "email", "subject", "message", "category", "order_id", "file_anyway"
    };
    static psd_path_t   paths[6];
    static ngx_uint_t   parsed;

    if (!parsed) {
        for (i = 0; i < 6; i++) {
            if (psd_path_parse(names[i], ngx_strlen(names[i]), &paths[i])
                != 0)
            {
                *error = "internal_error";
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }
        }

        parsed = 1;
    }

    rc = ngx_http_psd_body_bytes(r, NGX_HTTP_PSD_TICKET_BODY_MAX, &buf, &len,
                                 error);
    if (rc != NGX_OK) {
        return rc;
    }

    fctx = ngx_pcalloc(r->pool, sizeof(psd_form_ctx_t));
    if (fctx == NULL) {
        *error = "internal_error";
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    fctx->matches = ngx_pcalloc(r->pool, 6 * sizeof(psd_form_match_t));
    fctx->max_matches = 6;
    fctx->dec_size = len + 2 * 6 + 1;
    fctx->dec = ngx_pnalloc(r->pool, fctx->dec_size);

    if (fctx->matches == NULL || fctx->dec == NULL) {
        *error = "internal_error";
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    fconf.paths = paths;
    fconf.npaths = 6;

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

        if (m->path_index == 5) {
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

        json_object_set_new(obj, names[m->path_index], v);
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
    ngx_uint_t                       bad, i;
    const char                      *argv[3];
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
        ngx_http_psd_ticket_finalize(r, ngx_http_psd_send_json_error(r, 422,
                                     "unknown_order", "order_id"));
        return;
    }

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

    if (ctx->order) {
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
    u_char                          *dot;
    size_t                           argvlen[3], len;
    const char                      *argv[3];
    ngx_http_psd_redis_call_t       *call;
    ngx_http_psd_ticket_loc_conf_t  *tlcf;
    u_char                           key[160];
    u_char                           now[NGX_TIME_T_LEN];

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_psd_ticket_module);

    len = id ? ngx_strlen(id) : 0;
    dot = id ? (u_char *) ngx_strchr(id, '.') : NULL;

    if (id == NULL || len > 64 || dot == NULL
        || !ngx_http_psd_ticket_name_valid((u_char *) id, dot - (u_char *) id)
        || !ngx_http_psd_ticket_name_valid(dot + 1,
                                           len - (dot + 1 - (u_char *) id)))
    {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field", "ticket");
    }

    if (state == NULL || (ngx_strcmp(state, "acknowledged") != 0
                          && ngx_strcmp(state, "resolved") != 0))
    {
        return ngx_http_psd_send_json_error(r, NGX_HTTP_BAD_REQUEST,
                                            "invalid_field", "state");
    }

    call = ngx_http_psd_redis_call_create(r, tlcf->redis, 1);
    if (call == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[0] = (const char *) key;
    argvlen[0] = ngx_sprintf(key, "psd:{tq:%*s}:t:%s",
                             (size_t) (dot - (u_char *) id), id, id) - key;
    argv[1] = state;
    argvlen[1] = ngx_strlen(state);
    argv[2] = (const char *) now;
    argvlen[2] = ngx_sprintf(now, "%T", ngx_time()) - now;

    if (ngx_http_psd_redis_call_add_script(call,
                                           &ngx_http_psd_ticket_update_script,
                                           1, 3, argv, argvlen)
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


static void
ngx_http_psd_ticket_updated(ngx_http_psd_redis_call_t *call)
{
    ngx_http_request_t  *r = call->data;

    ngx_int_t    rc;
    redisReply  *reply, **e;

    reply = call->status == NGX_HTTP_PSD_REDIS_OK ? call->replies[0] : NULL;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
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
        }

        rc = ngx_http_psd_send_json(r, NGX_HTTP_OK,
                                    (u_char *) "{\"updated\":true}\n",
                                    sizeof("{\"updated\":true}\n") - 1);
    }

    ngx_http_psd_ticket_finalize(r, rc);
}
