
/*
 * Copyright (C) ngx_psd_module authors
 */


#ifndef _NGX_HTTP_PSD_METRICS_H_INCLUDED_
#define _NGX_HTTP_PSD_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_psd_module.h"


/*
 * Every counter the module keeps, as one list so that the enum, the
 * Prometheus output and the JSON output cannot disagree.  Rows of one
 * metric family (same name) must stand together.
 *   X(id, name, labels, type, help)
 */

#define NGX_HTTP_PSD_METRICS(X)                                               \
    X(LINK_OK, "psd_link_requests_total", "result=\"ok\"", "counter",         \
      "Download link verifications by result.")                               \
    X(LINK_MALFORMED, "psd_link_requests_total", "result=\"malformed\"",     \
      "", "")                                                                 \
    X(LINK_UNKNOWN_KEY, "psd_link_requests_total",                            \
      "result=\"unknown_key\"", "", "")                                       \
    X(LINK_INVALID, "psd_link_requests_total", "result=\"invalid\"", "", "")  \
    X(LINK_EXPIRED, "psd_link_requests_total", "result=\"expired\"", "", "")  \
    X(LINK_WRONG_PATH, "psd_link_requests_total", "result=\"wrong_path\"",    \
      "", "")                                                                 \
    X(LINK_WRONG_CLIENT, "psd_link_requests_total",                           \
      "result=\"wrong_client\"", "", "")                                      \
    X(LINK_REVOKED, "psd_link_requests_total", "result=\"revoked\"", "", "")  \
    X(LINK_EXHAUSTED, "psd_link_requests_total", "result=\"exhausted\"",      \
      "", "")                                                                 \
    X(LINK_BUSY, "psd_link_requests_total", "result=\"busy\"", "", "")        \
    X(LINK_FAIL_OPEN, "psd_link_requests_total", "result=\"fail_open\"",      \
      "", "")                                                                 \
    X(LINK_FAIL_CLOSED, "psd_link_requests_total",                            \
      "result=\"fail_closed\"", "", "")                                       \
    X(LINK_DOWNLOADS, "psd_link_downloads_completed_total", "", "counter",    \
      "Downloads that sent the whole file, counted once per link use.")       \
    X(LINK_DOWNLOADS_ABORTED, "psd_link_downloads_aborted_total", "",         \
      "counter", "Downloads that ended before the whole file was sent.")      \
    X(LINK_ISSUED, "psd_link_issued_total", "", "counter",                    \
      "Download links issued by the issuing endpoint.")                       \
    X(LINK_REVOCATIONS, "psd_link_revocations_total", "", "counter",          \
      "Links and orders revoked.")                                            \
    X(LIMIT_PASSED, "psd_limit_requests_total", "result=\"passed\"",          \
      "counter", "Rate limit decisions by result.")                           \
    X(LIMIT_REJECTED, "psd_limit_requests_total", "result=\"rejected\"",      \
      "", "")                                                                 \
    X(LIMIT_DRY_RUN, "psd_limit_requests_total", "result=\"dry_run\"",        \
      "", "")                                                                 \
    X(LIMIT_FAIL_OPEN, "psd_limit_requests_total", "result=\"fail_open\"",    \
      "", "")                                                                 \
    X(LIMIT_FAIL_CLOSED, "psd_limit_requests_total",                          \
      "result=\"fail_closed\"", "", "")                                       \
    X(LIMIT_LOCAL, "psd_limit_requests_total", "result=\"local\"", "", "")    \
    X(LIMIT_DELAYED, "psd_limit_delayed_total", "", "counter",                \
      "Requests held back to the zone's rate (burst without nodelay).")      \
    X(FRAUD_PASS, "psd_fraud_decisions_total", "decision=\"pass\"",           \
      "counter", "Fraud rule decisions by outcome.")                          \
    X(FRAUD_ALLOW, "psd_fraud_decisions_total", "decision=\"allow\"", "", "") \
    X(FRAUD_REVIEW, "psd_fraud_decisions_total", "decision=\"review\"",       \
      "", "")                                                                 \
    X(FRAUD_CHALLENGE, "psd_fraud_decisions_total",                           \
      "decision=\"challenge\"", "", "")                                       \
    X(FRAUD_BLOCK, "psd_fraud_decisions_total", "decision=\"block\"", "", "") \
    X(FRAUD_FAIL_OPEN, "psd_fraud_decisions_total",                           \
      "decision=\"fail_open\"", "", "")                                       \
    X(FRAUD_FAIL_CLOSED, "psd_fraud_decisions_total",                         \
      "decision=\"fail_closed\"", "", "")                                     \
    X(FRAUD_FEEDBACK, "psd_fraud_admin_requests_total", "", "counter",        \
      "Payment outcomes and block list changes recorded.")                    \
    X(WEBHOOK_VERIFIED, "psd_webhook_requests_total", "result=\"verified\"",  \
      "counter", "Gateway webhooks by result.")                               \
    X(WEBHOOK_REJECTED, "psd_webhook_requests_total",                         \
      "result=\"bad_signature\"", "", "")                                     \
    X(WEBHOOK_INVALID, "psd_webhook_requests_total", "result=\"invalid\"",    \
      "", "")                                                                 \
    X(WEBHOOK_APPLIED, "psd_webhook_requests_total", "result=\"applied\"",    \
      "", "")                                                                 \
    X(WEBHOOK_DUPLICATE, "psd_webhook_requests_total",                        \
      "result=\"duplicate\"", "", "")                                         \
    X(WEBHOOK_OUTRANKED, "psd_webhook_requests_total",                        \
      "result=\"outranked\"", "", "")                                         \
    X(WEBHOOK_IGNORED, "psd_webhook_requests_total", "result=\"ignored\"",    \
      "", "")                                                                 \
    X(WEBHOOK_FAILED, "psd_webhook_requests_total", "result=\"failed\"",      \
      "", "")                                                                 \
    X(CARRIER_VERIFIED, "psd_carrier_webhooks_total", "result=\"verified\"",  \
      "counter", "Carrier (delivery) webhooks by result.")                    \
    X(CARRIER_REJECTED, "psd_carrier_webhooks_total",                         \
      "result=\"bad_signature\"", "", "")                                     \
    X(CARRIER_INVALID, "psd_carrier_webhooks_total", "result=\"invalid\"",    \
      "", "")                                                                 \
    X(CARRIER_APPLIED, "psd_carrier_webhooks_total", "result=\"applied\"",    \
      "", "")                                                                 \
    X(CARRIER_DUPLICATE, "psd_carrier_webhooks_total",                        \
      "result=\"duplicate\"", "", "")                                         \
    X(CARRIER_OUTRANKED, "psd_carrier_webhooks_total",                        \
      "result=\"outranked\"", "", "")                                         \
    X(CARRIER_IGNORED, "psd_carrier_webhooks_total", "result=\"ignored\"",    \
      "", "")                                                                 \
    X(CARRIER_UNKNOWN_STATUS, "psd_carrier_webhooks_total",                   \
      "result=\"unknown_status\"", "", "")                                    \
    X(CARRIER_FAILED, "psd_carrier_webhooks_total", "result=\"failed\"",      \
      "", "")                                                                 \
    X(DELIVERY_LABEL_CREATED, "psd_delivery_events_total",                    \
      "state=\"label_created\"", "counter",                                   \
      "Carrier events recorded, by the delivery state they report.")          \
    X(DELIVERY_SHIPPED, "psd_delivery_events_total", "state=\"shipped\"",     \
      "", "")                                                                 \
    X(DELIVERY_IN_TRANSIT, "psd_delivery_events_total",                       \
      "state=\"in_transit\"", "", "")                                         \
    X(DELIVERY_OUT_FOR_DELIVERY, "psd_delivery_events_total",                 \
      "state=\"out_for_delivery\"", "", "")                                   \
    X(DELIVERY_EXCEPTION, "psd_delivery_events_total",                        \
      "state=\"exception\"", "", "")                                          \
    X(DELIVERY_DELIVERED, "psd_delivery_events_total",                        \
      "state=\"delivered\"", "", "")                                          \
    X(DELIVERY_RETURNED, "psd_delivery_events_total", "state=\"returned\"",   \
      "", "")                                                                 \
    X(DELIVERIES_DELIVERED, "psd_deliveries_total", "outcome=\"delivered\"",  \
      "counter", "Orders delivered, returned, or with a delivery exception.") \
    X(DELIVERIES_EXCEPTION, "psd_deliveries_total", "outcome=\"exception\"",  \
      "", "")                                                                 \
    X(DELIVERIES_RETURNED, "psd_deliveries_total", "outcome=\"returned\"",    \
      "", "")                                                                 \
    X(ORDERS_PAID, "psd_orders_paid_total", "", "counter",                    \
      "Orders that moved to paid.")                                           \
    X(PAYMENTS_FAILED, "psd_payments_failed_total", "", "counter",            \
      "Failed payment attempts reported by the gateway.")                     \
    X(ORDERS_REFUNDED, "psd_orders_refunded_total", "", "counter",            \
      "Orders refunded (their download links revoked).")                      \
    X(ORDERS_CHARGEBACK, "psd_orders_chargeback_total", "", "counter",        \
      "Orders disputed (their download links revoked).")                      \
    X(TOKENIZE_OK, "psd_tokenize_requests_total", "result=\"ok\"", "counter", \
      "Checkout requests tokenized, by result.")                              \
    X(TOKENIZE_REJECTED, "psd_tokenize_requests_total",                       \
      "result=\"rejected\"", "", "")                                          \
    X(TOKENIZE_FAILED, "psd_tokenize_requests_total", "result=\"failed\"",    \
      "", "")                                                                 \
    X(REVEAL_OK, "psd_reveals_total", "result=\"ok\"", "counter",             \
      "Card reveals toward the gateway, by result.")                          \
    X(REVEAL_DENIED, "psd_reveals_total", "result=\"denied\"", "", "")       \
    X(SESSIONS_CREATED, "psd_checkout_sessions_created_total", "", "counter", \
      "Checkout sessions created (conversion: orders paid / sessions).")      \
    X(IDEMPOTENT_REPLAYS, "psd_idempotent_replays_total", "", "counter",      \
      "Repeated checkout requests answered with the stored response.")        \
    X(IDEMPOTENT_CONFLICTS, "psd_idempotent_conflicts_total", "", "counter",  \
      "Idempotency keys in flight (409) or reused with another payload (422).")\
    X(TICKETS_OPENED, "psd_tickets_opened_total", "", "counter",              \
      "Support tickets handed to the help desk.")                             \
    X(TICKETS_DEFLECTED, "psd_tickets_deflected_total", "", "counter",        \
      "Questions answered before a ticket was opened.")                       \
    X(TICKETS_ACKNOWLEDGED, "psd_tickets_acknowledged_total", "", "counter",  \
      "Tickets that got their first response.")                               \
    X(TICKETS_RESOLVED, "psd_tickets_resolved_total", "", "counter",          \
      "Tickets resolved.")                                                    \
    X(TICKET_FIRST_RESPONSE_SECONDS,                                          \
      "psd_ticket_first_response_seconds_total", "", "counter",               \
      "Seconds from opening to first response, summed.")                      \
    X(TICKET_RESOLUTION_SECONDS, "psd_ticket_resolution_seconds_total", "",   \
      "counter", "Seconds from opening to resolution, summed.")               \
    X(TICKET_FIRST_RESPONSE_LATE, "psd_ticket_sla_breaches_total",            \
      "sla=\"first_response\"", "counter",                                   \
      "Tickets answered or resolved after their SLA time.")                   \
    X(TICKET_RESOLUTION_LATE, "psd_ticket_sla_breaches_total",                \
      "sla=\"resolution\"", "", "")                                           \
    X(RECONCILE_EXPORT_OK, "psd_reconcile_exports_total", "result=\"ok\"",    \
      "counter", "Reconciliation export pages answered, by result.")          \
    X(RECONCILE_EXPORT_INVALID, "psd_reconcile_exports_total",                \
      "result=\"invalid\"", "", "")                                           \
    X(RECONCILE_EXPORT_UNAUTHORIZED, "psd_reconcile_exports_total",           \
      "result=\"unauthorized\"", "", "")                                      \
    X(RECONCILE_EXPORT_FAILED, "psd_reconcile_exports_total",                 \
      "result=\"failed\"", "", "")                                            \
    X(RECONCILE_ROWS, "psd_reconcile_rows_total", "", "counter",              \
      "Orders listed by the reconciliation export.")                          \
    X(RECONCILE_INDEX_WRITTEN, "psd_reconcile_index_writes_total",            \
      "result=\"ok\"", "counter",                                             \
      "Payment events written to the reconciliation index, by result.")       \
    X(RECONCILE_INDEX_FAILED, "psd_reconcile_index_writes_total",             \
      "result=\"failed\"", "", "")


/*
 * LINK_MALFORMED to LINK_BUSY follow the order of the link statuses,
 * DELIVERY_LABEL_CREATED to DELIVERY_RETURNED psd_carrier_state_e
 */

#define NGX_HTTP_PSD_METRIC_ENUM(id, name, labels, type, help)               \
    NGX_HTTP_PSD_M_##id,

enum {
    NGX_HTTP_PSD_METRICS(NGX_HTTP_PSD_METRIC_ENUM)
    NGX_HTTP_PSD_M_MAX
};


#define NGX_HTTP_PSD_MAX_SERVERS       32
#define NGX_HTTP_PSD_LATENCY_BUCKETS   12


typedef struct {
    u_char                        name[64];
    size_t                        name_len;
    ngx_atomic_t                  connected;
    ngx_atomic_t                  reconnects;
    ngx_atomic_t                  commands;
    ngx_atomic_t                  errors;
    ngx_atomic_t                  timeouts;
    ngx_atomic_t                  unavailable;
    ngx_atomic_t                  pending;
    ngx_atomic_t                  latency[NGX_HTTP_PSD_LATENCY_BUCKETS];
    ngx_atomic_t                  latency_sum_us;
    ngx_atomic_t                  latency_count;
} ngx_http_psd_metrics_server_t;


/*
 * Support figures by ticket queue (label queue="..."): the queues that
 * psd_ticket_rule names, and "general", are given a row when the zone is
 * made; queue 0, "_other", counts tickets of queues no longer configured.
 */

#define NGX_HTTP_PSD_MAX_QUEUES        64
#define NGX_HTTP_PSD_CSAT_SCORES       5

typedef struct {
    u_char                        name[32];
    size_t                        name_len;
    ngx_atomic_t                  resolved;
    ngx_atomic_t                  responses;
    ngx_atomic_t                  score_total;
    ngx_atomic_t                  comments;
    ngx_atomic_t                  scores[NGX_HTTP_PSD_CSAT_SCORES];
} ngx_http_psd_metrics_queue_t;


typedef struct {
    ngx_atomic_t                  counters[NGX_HTTP_PSD_M_MAX];
    ngx_atomic_t                  nservers;
    ngx_http_psd_metrics_server_t servers[NGX_HTTP_PSD_MAX_SERVERS];
    ngx_atomic_t                  nqueues;
    ngx_http_psd_metrics_queue_t  queues[NGX_HTTP_PSD_MAX_QUEUES];
} ngx_http_psd_metrics_shm_t;


extern ngx_http_psd_metrics_shm_t  *ngx_http_psd_metrics;


#define ngx_http_psd_count(id)                                               \
    if (ngx_http_psd_metrics) {                                              \
        (void) ngx_atomic_fetch_add(                                         \
                    &ngx_http_psd_metrics->counters[NGX_HTTP_PSD_M_##id], 1);  \
    }

#define ngx_http_psd_count_add(id, n)                                        \
    if (ngx_http_psd_metrics) {                                              \
        (void) ngx_atomic_fetch_add(                                         \
             &ngx_http_psd_metrics->counters[NGX_HTTP_PSD_M_##id],           \
             (ngx_atomic_uint_t) (n));                                       \
    }

#define ngx_http_psd_count_n(n)                                              \
    if (ngx_http_psd_metrics) {                                              \
        (void) ngx_atomic_fetch_add(&ngx_http_psd_metrics->counters[n], 1);  \
    }


char *ngx_http_psd_metrics_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_psd_metrics_init_zone(ngx_conf_t *cf,
    ngx_http_psd_main_conf_t *pmcf);
ngx_http_psd_metrics_server_t *ngx_http_psd_metrics_server(ngx_uint_t index);
void ngx_http_psd_metrics_latency(ngx_http_psd_metrics_server_t *ms,
    ngx_msec_t ms_elapsed);
ngx_int_t ngx_http_psd_metrics_queue_add(ngx_conf_t *cf, ngx_str_t *name);
ngx_http_psd_metrics_queue_t *ngx_http_psd_metrics_queue(u_char *name,
    size_t len);

#define ngx_http_psd_count_queue(q, field, n)                                \
    if (q) {                                                                 \
        (void) ngx_atomic_fetch_add(&(q)->field, (ngx_atomic_uint_t) (n));   \
    }


#endif /* _NGX_HTTP_PSD_METRICS_H_INCLUDED_ */
