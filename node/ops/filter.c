#include "ops/filter.h"

#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------------ */
/* Fields the messages do not carry yet: none left, every MessageFilter field
 * is evaluated. A new filter field whose message field does not exist yet
 * is refused here (its QStash name returned) until it does. */

const char *qr_filter_unsupported(const Qraft__MessageFilter *f)
{
    if (f != NULL && f->source[0] != '\0' &&
        strcmp(f->source, "workflow") != 0 &&
        strcmp(f->source, "message") != 0) {
        return "source (workflow or message)";
    }
    return NULL;
}

bool qr_filter_is_empty(const Qraft__MessageFilter *f)
{
    return f == NULL ||
           (f->n_message_ids == 0 && f->n_urls == 0 && f->n_hosts == 0 &&
            f->n_paths == 0 && f->n_topic_names == 0 && f->n_queue_names == 0 &&
            f->n_schedule_ids == 0 && f->n_labels == 0 &&
            f->n_flow_control_keys == 0 && f->n_caller_ips == 0 &&
            f->n_response_statuses == 0 && f->from_ms == 0 && f->to_ms == 0 &&
            f->url_prefix[0] == '\0' && f->error_category[0] == '\0' &&
            f->n_workflow_run_ids == 0 && f->source[0] == '\0' &&
            f->n_source_message_ids == 0);
}

/* QStash's `source`: a workflow run's messages, or the others. */
static bool source_matches(const Qraft__MessageFilter *f,
                           const Qraft__Message *m)
{
    bool workflow = m->workflow_run_id[0] != '\0';
    return f->source[0] == '\0' ||
           (strcmp(f->source, "workflow") == 0 && workflow) ||
           (strcmp(f->source, "message") == 0 && !workflow);
}

/* True when n is 0 (no condition) or s equals one of values. */
static bool any_equal(char **values, size_t n, const char *s)
{
    if (n == 0) {
        return true;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(values[i], s) == 0) {
            return true;
        }
    }
    return false;
}

/* The host[:port] and path of url (no query, no fragment); path "/" when
 * the URL has none. */
struct url_parts {
    const char *host;
    size_t host_len;
    const char *path;
    size_t path_len;
};

static void split_url(const char *url, struct url_parts *u)
{
    const char *p = strstr(url, "://");
    const char *host = p != NULL ? p + 3 : url;
    size_t host_len = strcspn(host, "/?#");
    const char *path = host + host_len;
    size_t path_len = path[0] == '/' ? strcspn(path, "?#") : 0;

    u->host = host;
    u->host_len = host_len;
    u->path = path_len > 0 ? path : "/";
    u->path_len = path_len > 0 ? path_len : 1;
}

static bool host_matches(const struct url_parts *u, const char *want)
{
    size_t want_len = strlen(want);
    const char *colon = memchr(u->host, ':', u->host_len);
    size_t name_len = colon != NULL ? (size_t)(colon - u->host) : u->host_len;

    /* host:port exactly, or the host name alone. */
    return (want_len == u->host_len &&
            strncasecmp(u->host, want, want_len) == 0) ||
           (want_len == name_len && strncasecmp(u->host, want, want_len) == 0);
}

static bool any_host(const Qraft__MessageFilter *f, const struct url_parts *u)
{
    if (f->n_hosts == 0) {
        return true;
    }
    for (size_t i = 0; i < f->n_hosts; i++) {
        if (host_matches(u, f->hosts[i])) {
            return true;
        }
    }
    return false;
}

static bool any_path(const Qraft__MessageFilter *f, const struct url_parts *u)
{
    if (f->n_paths == 0) {
        return true;
    }
    for (size_t i = 0; i < f->n_paths; i++) {
        if (strlen(f->paths[i]) == u->path_len &&
            memcmp(f->paths[i], u->path, u->path_len) == 0) {
            return true;
        }
    }
    return false;
}

static int32_t response_status(const Qraft__Message *m)
{
    if (m->last_response != NULL && m->last_response->status != 0) {
        return m->last_response->status;
    }
    return m->last_error != NULL ? m->last_error->status : 0;
}

static bool any_status(const Qraft__MessageFilter *f, const Qraft__Message *m)
{
    int32_t status = response_status(m);

    if (f->n_response_statuses == 0) {
        return true;
    }
    for (size_t i = 0; i < f->n_response_statuses; i++) {
        if (f->response_statuses[i] == status) {
            return true;
        }
    }
    return false;
}

/* True when f names no label, or m carries one of them. */
static bool any_label(const Qraft__MessageFilter *f, const Qraft__Message *m)
{
    if (f->n_labels == 0) {
        return true;
    }
    for (size_t i = 0; i < m->n_labels; i++) {
        if (any_equal(f->labels, f->n_labels, m->labels[i])) {
            return true;
        }
    }
    return false;
}

static bool category_matches(const Qraft__MessageFilter *f,
                             const Qraft__Message *m)
{
    const Qraft__LastError *e = m->last_error;

    return f->error_category[0] == '\0' ||
           (e != NULL && (strcmp(e->category, f->error_category) == 0 ||
                          strcmp(e->cause, f->error_category) == 0));
}

bool qr_filter_match_fields(const Qraft__MessageFilter *f,
                            const Qraft__Message *m)
{
    struct url_parts u;

    if (f == NULL) {
        return true;
    }
    if (qr_filter_unsupported(f) != NULL) {
        return false; /* never "matches" on a condition it cannot test */
    }
    split_url(m->url, &u);
    return any_equal(f->message_ids, f->n_message_ids, m->id) &&
           any_equal(f->urls, f->n_urls, m->url) && any_host(f, &u) &&
           any_path(f, &u) &&
           any_equal(f->queue_names, f->n_queue_names, m->queue) &&
           any_equal(f->topic_names, f->n_topic_names, m->topic_name) &&
           any_label(f, m) &&
           any_equal(f->caller_ips, f->n_caller_ips, m->caller_ip) &&
           any_equal(f->flow_control_keys, f->n_flow_control_keys,
                     m->flow_control_key) &&
           any_equal(f->schedule_ids, f->n_schedule_ids, m->schedule_id) &&
           any_status(f, m) &&
           strncmp(m->url, f->url_prefix, strlen(f->url_prefix)) == 0 &&
           category_matches(f, m) &&
           any_equal(f->workflow_run_ids, f->n_workflow_run_ids,
                     m->workflow_run_id) &&
           source_matches(f, m) &&
           (f->n_source_message_ids == 0 ||
            (m->source_message_id[0] != '\0' &&
             any_equal(f->source_message_ids, f->n_source_message_ids,
                       m->source_message_id)));
}

bool qr_filter_match_time(const Qraft__MessageFilter *f, uint64_t time_ms)
{
    return f == NULL || ((f->from_ms == 0 || time_ms >= f->from_ms) &&
                         (f->to_ms == 0 || time_ms <= f->to_ms));
}

bool qr_filter_match(const Qraft__MessageFilter *f, const Qraft__Message *m)
{
    uint64_t t = m->state == QRAFT__MESSAGE_STATE__DEAD_LETTERED
                     ? m->dead_lettered_ms
                     : m->created_ms;
    return qr_filter_match_time(f, t) && qr_filter_match_fields(f, m);
}

/* ------------------------------------------------------------------------ */
/* Log states. fsm.c records one event per change (append_event): its state
 * is the message's new state, its detail what happened. */

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

#define LOG(state) QRAFT__LOG_STATE__LOG_##state

/* The QStash log states an event's message state stands for, oldest first
 * (LOG_STATE_UNSPECIFIED ends a shorter list; the states not listed stand
 * for none). */
static const Qraft__LogState log_states_of[][QR_FILTER_MAX_LOG_STATES] = {
    /* published, replayed from the DLQ, (failure) callback created */
    [QRAFT__MESSAGE_STATE__PENDING] = {LOG(CREATED)},
    /* published or replayed into a queue: accepted, waiting */
    [QRAFT__MESSAGE_STATE__QUEUED] = {LOG(CREATED)},
    /* an attempt failed and another is scheduled */
    [QRAFT__MESSAGE_STATE__RETRYING] = {LOG(ACTIVE), LOG(ERROR), LOG(RETRY)},
    [QRAFT__MESSAGE_STATE__DELIVERED] = {LOG(ACTIVE), LOG(DELIVERED)},
    [QRAFT__MESSAGE_STATE__DEAD_LETTERED] = {LOG(ACTIVE), LOG(FAILED)},
    /* qraft cancels at once: the request and its effect */
    [QRAFT__MESSAGE_STATE__CANCELLED] = {LOG(CANCEL_REQUESTED), LOG(CANCELLED)},
};

#undef LOG

#define N_STATES_OF (sizeof log_states_of / sizeof log_states_of[0])

size_t qr_filter_log_states(const Qraft__Event *e,
                            Qraft__LogState out[QR_FILTER_MAX_LOG_STATES])
{
    if (e->state == QRAFT__MESSAGE_STATE__PENDING &&
        starts_with(e->detail, "activated")) {
        return 0; /* its turn in its queue: CREATED came before */
    }
    if (e->state == QRAFT__MESSAGE_STATE__DEAD_LETTERED &&
        !starts_with(e->detail, "dead-lettered")) {
        return 0; /* deleted from the DLQ: no QStash state */
    }
    if ((unsigned)e->state >= N_STATES_OF) {
        return 0;
    }
    const Qraft__LogState *states = log_states_of[e->state];
    size_t n = 0;
    while (n < QR_FILTER_MAX_LOG_STATES &&
           states[n] != QRAFT__LOG_STATE__LOG_STATE_UNSPECIFIED) {
        out[n] = states[n];
        n++;
    }
    return n;
}

static const char *const log_names[] = {
    [QRAFT__LOG_STATE__LOG_CREATED] = "CREATED",
    [QRAFT__LOG_STATE__LOG_ACTIVE] = "ACTIVE",
    [QRAFT__LOG_STATE__LOG_DELIVERED] = "DELIVERED",
    [QRAFT__LOG_STATE__LOG_ERROR] = "ERROR",
    [QRAFT__LOG_STATE__LOG_RETRY] = "RETRY",
    [QRAFT__LOG_STATE__LOG_FAILED] = "FAILED",
    [QRAFT__LOG_STATE__LOG_CANCEL_REQUESTED] = "CANCEL_REQUESTED",
    [QRAFT__LOG_STATE__LOG_CANCELLED] = "CANCELLED",
};

#define N_LOG_NAMES (sizeof log_names / sizeof log_names[0])

const char *qr_filter_log_state_name(Qraft__LogState s)
{
    if ((unsigned)s >= N_LOG_NAMES || log_names[s] == NULL) {
        return "UNKNOWN";
    }
    return log_names[s];
}

static bool word_is(const char *s, size_t len, const char *word)
{
    return len == strlen(word) && strncasecmp(s, word, len) == 0;
}

int qr_filter_parse_log_state(const char *name,
                              size_t len,
                              Qraft__LogState out[QR_FILTER_MAX_LOG_STATES])
{
    if (word_is(name, len, "CANCELED")) {
        out[0] = QRAFT__LOG_STATE__LOG_CANCELLED;
        return 1;
    }
    if (word_is(name, len, "IN_PROGRESS")) {
        out[0] = QRAFT__LOG_STATE__LOG_ACTIVE;
        out[1] = QRAFT__LOG_STATE__LOG_RETRY;
        out[2] = QRAFT__LOG_STATE__LOG_ERROR;
        return 3;
    }
    for (unsigned i = 1; i < N_LOG_NAMES; i++) {
        if (log_names[i] != NULL && word_is(name, len, log_names[i])) {
            out[0] = (Qraft__LogState)i;
            return 1;
        }
    }
    return -1;
}
