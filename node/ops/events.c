/* Events (the logs API): a cursor-paged scan of the events db, each event
 * seen as the QStash states it stands for (filter.h), with its message. */
#include "ops/ops_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/filter.h"
#include "repl/redact.h"

#define EVENTS_DEFAULT_LIMIT 100u
#define EVENTS_MAX_LIMIT 1000u
/* Cursor: decimal digits, the event key then which of its entries came
 * last: <time ms><index, 20 digits><position, 10><entry, 1>. A bare
 * number of at most 20 digits is a time: newest first, the events at or
 * before it; oldest first, at or after it. */
#define CURSOR_TAIL_DIGITS 31u

struct events_page {
    struct qr_store_txn *txn;
    const Qraft__EventsRequest *r;
    bool desc;
    uint32_t state_mask; /* bit per LogState; 0: all */
    size_t limit;
    /* Resume: the entries of the event at skip_pos up to skip_entry (in
     * scan order) were on the previous page. */
    bool have_skip;
    struct qr_store_event_pos skip_pos;
    uint32_t skip_entry;
    /* Built page. */
    Qraft__EventEntry *entries;
    Qraft__EventEntry **entry_ptrs;
    Qraft__Event **events; /* owned copies, one per event used */
    size_t n_events;
    Qraft__Message **messages; /* owned, one per distinct message loaded */
    size_t n_messages;
    size_t n, bytes;
    bool more;
    struct qr_store_event_pos last_pos;
    uint32_t last_entry;
    int rv;
};

static Qraft__Event *copy_event(const Qraft__Event *e)
{
    return (Qraft__Event *)qr_ops_copy_pb(&e->base);
}

/* The message of e: the last one loaded when it is the same, else from the
 * store (NULL when it was pruned). Returns 0 or an error. */
static int event_message(struct events_page *p,
                         const Qraft__Event *e,
                         Qraft__Message **out)
{
    *out = NULL;
    if (p->n_messages > 0 &&
        strcmp(p->messages[p->n_messages - 1]->id, e->message_id) == 0) {
        *out = p->messages[p->n_messages - 1];
        return 0;
    }
    Qraft__Message *m = NULL;
    int rv = qr_store_msg_get(p->txn, e->message_id, &m);
    if (rv == QR_ENOTFOUND) {
        return 0;
    }
    if (rv == 0) {
        rv = qr_redact_view(m); /* shown, never written back */
    }
    if (rv != 0) {
        qraft__message__free_unpacked(m, NULL);
        return rv;
    }
    p->messages[p->n_messages++] = m;
    p->bytes += qraft__message__get_packed_size(m);
    *out = m;
    return 0;
}

/* True when f sets nothing but message ids and time bounds. */
static bool ids_and_time_only(const Qraft__MessageFilter *f)
{
    if (f == NULL) {
        return true;
    }
    Qraft__MessageFilter rest = *f;
    rest.n_message_ids = 0;
    rest.from_ms = 0;
    rest.to_ms = 0;
    return qr_filter_is_empty(&rest);
}

static int collect_entries(void *arg,
                           const struct qr_store_event_pos *pos,
                           const Qraft__Event *e)
{
    struct events_page *p = arg;
    const Qraft__MessageFilter *f = p->r->filter;
    Qraft__LogState states[QR_FILTER_MAX_LOG_STATES];
    size_t n_states = qr_filter_log_states(e, states);
    bool resumed = p->have_skip && pos->time_ms == p->skip_pos.time_ms &&
                   pos->index == p->skip_pos.index &&
                   pos->position == p->skip_pos.position;

    if (f != NULL && ((p->desc && f->from_ms != 0 && e->time_ms < f->from_ms) ||
                      (!p->desc && f->to_ms != 0 && e->time_ms > f->to_ms))) {
        return 1; /* past the time bound: nothing further matches */
    }
    if (n_states == 0 || !qr_filter_match_time(f, e->time_ms) ||
        (f != NULL && f->n_message_ids > 0 &&
         !qr_op_id_listed(f->message_ids, f->n_message_ids, e->message_id))) {
        return 0;
    }
    Qraft__Message *m = NULL;
    bool loaded = false;
    for (size_t k = 0; k < n_states; k++) {
        /* Scan order: oldest first within the event, or reversed. */
        uint32_t entry = (uint32_t)k;
        size_t i = p->desc ? n_states - 1 - k : k;
        if (resumed && entry <= p->skip_entry) {
            continue;
        }
        if (p->state_mask != 0 && !(p->state_mask & (1u << states[i]))) {
            continue;
        }
        if (!loaded) {
            /* Before the first entry of this event is taken: its message
             * (for the answer and the other filter fields). */
            size_t n_loaded = p->n_messages;
            int rv = event_message(p, e, &m);
            if (rv != 0) {
                p->rv = rv;
                return 1;
            }
            loaded = true;
            /* A pruned message matches no condition on its fields. */
            if (m != NULL ? !qr_filter_match_fields(f, m)
                          : !ids_and_time_only(f)) {
                if (p->n_messages > n_loaded) {
                    p->n_messages--;
                    p->bytes -= qraft__message__get_packed_size(m);
                    qraft__message__free_unpacked(m, NULL);
                }
                return 0;
            }
            Qraft__Event *copy = copy_event(e);
            if (copy == NULL) {
                p->rv = -ENOMEM;
                return 1;
            }
            p->events[p->n_events++] = copy;
        }
        if (p->n == p->limit || p->bytes >= LIST_MAX_PAGE_BYTES) {
            p->more = true;
            return 1;
        }
        Qraft__EventEntry *out = &p->entries[p->n];
        qraft__event_entry__init(out);
        out->event = p->events[p->n_events - 1];
        out->state = states[i];
        out->message = m;
        p->entry_ptrs[p->n++] = out;
        p->last_pos = *pos;
        p->last_entry = entry;
    }
    return 0;
}

static int parse_events_cursor(const char *c,
                               bool desc,
                               struct events_page *p,
                               struct qr_store_event_pos *from)
{
    size_t len = strlen(c);
    if (len == 0 || strspn(c, "0123456789") != len) {
        return QR_EBADREQ;
    }
    if (len <= 20) {
        unsigned long long t = strtoull(c, NULL, 10);
        from->time_ms = t;
        from->index = desc ? UINT64_MAX : 0;
        from->position = desc ? UINT32_MAX : 0;
        return errno == ERANGE ? QR_EBADREQ : 0;
    }
    if (len <= CURSOR_TAIL_DIGITS || len > CURSOR_TAIL_DIGITS + 20) {
        return QR_EBADREQ;
    }
    char head[21];
    char index[21];
    char position[11];
    size_t hl = len - CURSOR_TAIL_DIGITS;
    memcpy(head, c, hl);
    head[hl] = '\0';
    memcpy(index, c + hl, 20);
    index[20] = '\0';
    memcpy(position, c + hl + 20, 10);
    position[10] = '\0';
    errno = 0;
    from->time_ms = strtoull(head, NULL, 10);
    from->index = strtoull(index, NULL, 10);
    unsigned long long pos = strtoull(position, NULL, 10);
    if (errno != 0 || pos > UINT32_MAX) {
        return QR_EBADREQ;
    }
    from->position = (uint32_t)pos;
    p->have_skip = true;
    p->skip_pos = *from;
    p->skip_entry = (uint32_t)(c[len - 1] - '0');
    return 0;
}

static void events_page_free(struct events_page *p)
{
    for (size_t i = 0; i < p->n_events; i++) {
        qraft__event__free_unpacked(p->events[i], NULL);
    }
    for (size_t i = 0; i < p->n_messages; i++) {
        qraft__message__free_unpacked(p->messages[i], NULL);
    }
    free(p->events);
    free(p->messages);
    free(p->entries);
    free(p->entry_ptrs);
}

void qr_op_events(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__EventsRequest *r = req->events;
    struct events_page p = {.r = r, .desc = !r->oldest_first};
    struct qr_store_event_pos from;
    bool have_from = false;

    if (qr_op_refuse_unsupported(op, req, r->filter)) {
        return;
    }
    for (size_t i = 0; i < r->n_states; i++) {
        if (r->states[i] <= QRAFT__LOG_STATE__LOG_STATE_UNSPECIFIED ||
            r->states[i] > QRAFT__LOG_STATE__LOG_CANCELLED) {
            qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                        "unknown log state %d", (int)r->states[i]);
            return;
        }
        p.state_mask |= 1u << r->states[i];
    }
    if (r->cursor[0] != '\0') {
        errno = 0;
        if (parse_events_cursor(r->cursor, p.desc, &p, &from) != 0) {
            qr_op_error(op, req->id, QRAFT__STATUS__BAD_REQUEST,
                        "invalid cursor '%.64s'", r->cursor);
            return;
        }
        have_from = true;
    }
    p.limit = r->limit == 0                 ? EVENTS_DEFAULT_LIMIT
              : r->limit > EVENTS_MAX_LIMIT ? EVENTS_MAX_LIMIT
                                            : r->limit;
    /* At most one event and one message per entry. */
    p.entries = calloc(p.limit, sizeof *p.entries);
    p.entry_ptrs = calloc(p.limit, sizeof *p.entry_ptrs);
    p.events = calloc(p.limit + 1, sizeof *p.events);
    p.messages = calloc(p.limit + 1, sizeof *p.messages);
    int rv = p.entries == NULL || p.entry_ptrs == NULL || p.events == NULL ||
                     p.messages == NULL
                 ? -ENOMEM
                 : qr_store_txn_begin(op->ops->store, false, &p.txn);
    if (rv == 0) {
        rv = qr_store_event_scan(p.txn, have_from ? &from : NULL, true, p.desc,
                                 collect_entries, &p);
        rv = rv == 1 ? p.rv : rv;
        qr_store_txn_abort(p.txn);
    }
    if (rv != 0) {
        qr_op_error(op, req->id, QRAFT__STATUS__INTERNAL,
                    "reading the events: %s", qr_strerror(rv));
        events_page_free(&p);
        return;
    }
    char next[64] = "";
    if (p.more && p.n > 0) {
        snprintf(next, sizeof next, "%" PRIu64 "%020" PRIu64 "%010" PRIu32 "%u",
                 p.last_pos.time_ms, p.last_pos.index, p.last_pos.position,
                 p.last_entry);
    }
    Qraft__EventsResponse er = QRAFT__EVENTS_RESPONSE__INIT;
    er.n_entries = p.n;
    er.entries = p.entry_ptrs;
    er.cursor = next;
    QR_OP_REPLY_BODY(op, req->id, EVENTS, events, &er);
    events_page_free(&p);
}
