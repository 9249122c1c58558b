/* The REST face's readers of what a request says outside its body: query
 * strings (percent-decoding, one parameter, a repeated or comma-separated
 * list), names ([A-Za-z0-9._-]+), header names in canonical form, and the
 * message filter the DLQ, bulk cancel and the logs share (spec 4, 5, 6 and
 * 14 item 11; multi-value parameters may repeat and may hold
 * comma-separated values). Everything it returns is request pool memory. */
#include "api/rest_int.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/filter.h"
#include "repl/check.h"
#include "repl/command.h"

/* The filter parameters every filtering route takes. */
#define FILTER_PARAMS                                                     \
    "messageId", "messageIds", "url", "host", "path", "topicName",        \
        "queueName", "scheduleId", "label", "flowControlKey", "callerIp", \
        "responseStatus", "fromDate", "toDate", "workflowRunId", "source"

bool qr_rest_prefix_ci(const char *s, size_t len, const char *prefix)
{
    size_t plen = strlen(prefix);
    return len >= plen && strncasecmp(s, prefix, plen) == 0;
}

bool qr_rest_equal_ci(const char *s, size_t len, const char *word)
{
    return len == strlen(word) && strncasecmp(s, word, len) == 0;
}

bool qr_rest_valid_name(const char *s, size_t len)
{
    if (len == 0 || len > 256) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' &&
            s[i] != '-') {
            return false;
        }
    }
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

char *qr_rest_query_decode(h2o_mem_pool_t *pool, const char *s, size_t len)
{
    char *out = h2o_mem_alloc_pool(pool, len + 1);
    size_t n = 0;

    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && hexval(s[i + 1]) >= 0 &&
            hexval(s[i + 2]) >= 0) {
            out[n++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else if (s[i] == '+') {
            out[n++] = ' ';
        } else {
            out[n++] = s[i];
        }
    }
    out[n] = '\0';
    return out;
}

bool qr_rest_next_param(const char *q,
                        size_t len,
                        size_t *pos,
                        struct rest_param *p)
{
    while (*pos < len) {
        const char *start = q + *pos;
        const char *amp = memchr(start, '&', len - *pos);
        size_t plen = amp != NULL ? (size_t)(amp - start) : len - *pos;
        const char *eq = memchr(start, '=', plen);

        *pos += plen + (amp != NULL ? 1 : 0);
        if (plen == 0) {
            continue;
        }
        p->name = start;
        p->name_len = eq != NULL ? (size_t)(eq - start) : plen;
        p->value = eq != NULL ? eq + 1 : start + plen;
        p->value_len = eq != NULL ? plen - p->name_len - 1 : 0;
        return true;
    }
    return false;
}

char *qr_rest_query_get(h2o_mem_pool_t *pool,
                        h2o_iovec_t query,
                        const char *name)
{
    struct rest_param p;
    size_t pos = 0;

    while (qr_rest_next_param(query.base, query.len, &pos, &p)) {
        if (qr_rest_equal_ci(p.name, p.name_len, name)) {
            return qr_rest_query_decode(pool, p.value, p.value_len);
        }
    }
    return NULL;
}

bool qr_rest_query_bool(h2o_mem_pool_t *pool,
                        h2o_iovec_t query,
                        const char *name,
                        bool absent,
                        bool *out)
{
    const char *v = qr_rest_query_get(pool, query, name);
    if (v == NULL) {
        *out = absent;
        return true;
    }
    if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0) {
        return false;
    }
    *out = strcmp(v, "true") == 0;
    return true;
}

/* Every value of parameter name (repeated or comma-separated), decoded,
 * into ids (pool memory; ids NULL: only counts); returns how many, or -1
 * over max. */
static int query_list(h2o_mem_pool_t *pool,
                      h2o_iovec_t query,
                      const char *name,
                      char **ids,
                      size_t max)
{
    struct rest_param p;
    size_t pos = 0;
    size_t n = 0;

    while (qr_rest_next_param(query.base, query.len, &pos, &p)) {
        char *v;
        char *save = NULL;
        if (!qr_rest_equal_ci(p.name, p.name_len, name)) {
            continue;
        }
        v = qr_rest_query_decode(pool, p.value, p.value_len);
        for (char *tok = strtok_r(v, ",", &save); tok != NULL;
             tok = strtok_r(NULL, ",", &save)) {
            if (n == max) {
                return -1;
            }
            if (ids != NULL) {
                ids[n] = tok;
            }
            n++;
        }
    }
    return (int)n;
}

/* Writes name in Go's qr_rest_canonical form into pool memory. */
char *qr_rest_canonical(h2o_mem_pool_t *pool, const char *name, size_t len)
{
    char *out = h2o_mem_alloc_pool(pool, len + 1);
    bool upper = true;

    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        out[i] = (char)(upper ? toupper(ch) : tolower(ch));
        upper = ch == '-';
    }
    out[len] = '\0';
    return out;
}

char *qr_rest_pool_str(h2o_mem_pool_t *pool, const char *s, size_t len)
{
    return h2o_strdup(pool, s, len).base;
}

/* True when the query has parameter name at all (even with no value). */
static bool query_has(h2o_iovec_t query, const char *name)
{
    struct rest_param p;
    size_t pos = 0;

    while (qr_rest_next_param(query.base, query.len, &pos, &p)) {
        if (qr_rest_equal_ci(p.name, p.name_len, name)) {
            return true;
        }
    }
    return false;
}

/* Appends every value of parameter name to *list (pool memory). */
int qr_rest_take_list(h2o_mem_pool_t *pool,
                      h2o_iovec_t query,
                      const char *name,
                      char ***list,
                      size_t *n,
                      char *err)
{
    int count = query_list(pool, query, name, NULL, MAX_IDS);
    char **grown;

    if (count < 0) {
        snprintf(err, ERR_BYTES, "at most %d values for %s", MAX_IDS, name);
        return -EINVAL;
    }
    if (count == 0) {
        if (query_has(query, name)) {
            snprintf(err, ERR_BYTES, "%s has no value", name);
            return -EINVAL;
        }
        return 0;
    }
    grown = h2o_mem_alloc_pool(pool, sizeof(*grown) * (*n + (size_t)count));
    if (*n > 0) {
        memcpy(grown, *list, sizeof(*grown) * *n);
    }
    query_list(pool, query, name, grown + *n, (size_t)count);
    *list = grown;
    *n += (size_t)count;
    return 0;
}

static int take_ms(h2o_mem_pool_t *pool,
                   h2o_iovec_t query,
                   const char *name,
                   uint64_t *out,
                   char *err)
{
    const char *v = qr_rest_query_get(pool, query, name);

    if (v == NULL) {
        return 0;
    }
    if (qr_command_parse_uint(v, strlen(v), UINT64_MAX, out) != 0) {
        snprintf(err, ERR_BYTES, "invalid %s '%.64s': want unix milliseconds",
                 name, v);
        return -EINVAL;
    }
    return 0;
}

/* Parses the filter parameters of query into f (pool memory), refusing
 * parameters other than the filters and `extra` (NULL-terminated), bad
 * values, and filters this build cannot evaluate. On bad input writes why
 * into err and returns -EINVAL. */
int qr_rest_parse_filter(h2o_mem_pool_t *pool,
                         h2o_iovec_t query,
                         const char *const *extra,
                         Qraft__MessageFilter *f,
                         char *err)
{
    static const char *const filters[] = {FILTER_PARAMS, NULL};
    struct rest_param p;
    size_t pos = 0;
    char **statuses = NULL;
    size_t n_statuses = 0;
    const char *unsupported;

    qraft__message_filter__init(f);
    while (qr_rest_next_param(query.base, query.len, &pos, &p)) {
        bool known = qr_rest_equal_ci(p.name, p.name_len, "qstash_token");
        for (size_t i = 0; !known && filters[i] != NULL; i++) {
            known = qr_rest_equal_ci(p.name, p.name_len, filters[i]);
        }
        for (size_t i = 0; !known && extra[i] != NULL; i++) {
            known = qr_rest_equal_ci(p.name, p.name_len, extra[i]);
        }
        if (!known) {
            snprintf(err, ERR_BYTES, "unknown parameter '%.*s'",
                     (int)(p.name_len > 64 ? 64 : p.name_len), p.name);
            return -EINVAL;
        }
    }
    if (qr_rest_take_list(pool, query, "messageId", &f->message_ids,
                          &f->n_message_ids, err) != 0 ||
        qr_rest_take_list(pool, query, "messageIds", &f->message_ids,
                          &f->n_message_ids, err) != 0 ||
        qr_rest_take_list(pool, query, "url", &f->urls, &f->n_urls, err) != 0 ||
        qr_rest_take_list(pool, query, "host", &f->hosts, &f->n_hosts, err) !=
            0 ||
        qr_rest_take_list(pool, query, "path", &f->paths, &f->n_paths, err) !=
            0 ||
        qr_rest_take_list(pool, query, "topicName", &f->topic_names,
                          &f->n_topic_names, err) != 0 ||
        qr_rest_take_list(pool, query, "queueName", &f->queue_names,
                          &f->n_queue_names, err) != 0 ||
        qr_rest_take_list(pool, query, "scheduleId", &f->schedule_ids,
                          &f->n_schedule_ids, err) != 0 ||
        qr_rest_take_list(pool, query, "label", &f->labels, &f->n_labels,
                          err) != 0 ||
        qr_rest_take_list(pool, query, "flowControlKey", &f->flow_control_keys,
                          &f->n_flow_control_keys, err) != 0 ||
        qr_rest_take_list(pool, query, "callerIp", &f->caller_ips,
                          &f->n_caller_ips, err) != 0 ||
        qr_rest_take_list(pool, query, "responseStatus", &statuses, &n_statuses,
                          err) != 0 ||
        qr_rest_take_list(pool, query, "workflowRunId", &f->workflow_run_ids,
                          &f->n_workflow_run_ids, err) != 0 ||
        take_ms(pool, query, "fromDate", &f->from_ms, err) != 0 ||
        take_ms(pool, query, "toDate", &f->to_ms, err) != 0) {
        return -EINVAL;
    }
    const char *source = qr_rest_query_get(pool, query, "source");
    if (source != NULL) {
        f->source = (char *)source;
    }
    if (n_statuses > 0) {
        f->response_statuses =
            h2o_mem_alloc_pool(pool, sizeof(int32_t) * n_statuses);
        f->n_response_statuses = n_statuses;
        for (size_t i = 0; i < n_statuses; i++) {
            uint64_t v;
            if (qr_command_parse_uint(statuses[i], strlen(statuses[i]), 999,
                                      &v) != 0 ||
                v < 100) {
                snprintf(err, ERR_BYTES,
                         "invalid responseStatus '%.64s': want an HTTP status",
                         statuses[i]);
                return -EINVAL;
            }
            f->response_statuses[i] = (int32_t)v;
        }
    }
    if (f->from_ms != 0 && f->to_ms != 0 && f->from_ms > f->to_ms) {
        snprintf(err, ERR_BYTES, "fromDate is after toDate");
        return -EINVAL;
    }
    unsupported = qr_filter_unsupported(f);
    if (unsupported != NULL) {
        snprintf(err, ERR_BYTES, "filter %s is not supported yet", unsupported);
        return -EINVAL;
    }
    return 0;
}

/* `count` in 1..max (absent: dflt). */
int qr_rest_take_count(h2o_mem_pool_t *pool,
                       h2o_iovec_t query,
                       uint64_t max,
                       uint64_t dflt,
                       uint32_t *out,
                       char *err)
{
    const char *count = qr_rest_query_get(pool, query, "count");
    uint64_t n = dflt;

    if (count != NULL &&
        (qr_command_parse_uint(count, strlen(count), max, &n) != 0 || n == 0)) {
        snprintf(err, ERR_BYTES, "count must be an integer from 1 to %" PRIu64,
                 max);
        return -EINVAL;
    }
    *out = (uint32_t)n;
    return 0;
}
