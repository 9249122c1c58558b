#include "repl/snapsend.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/logger.h"

/* raft hands our wrappers only the raft_io: find its snapsend here (one per
 * cluster in the process). An entry stays after close, so that loads and
 * sends still in flight find their callers; init reuses its slot. */
#define MAX_IOS 8
static struct qr_snapsend *registry[MAX_IOS];

/* What a registered snapsend is found by: its raft_io, or its one real
 * load or send in flight. */
enum key { BY_IO, BY_LOAD, BY_SEND };

static struct qr_snapsend *find(enum key k, const void *p)
{
    for (size_t i = 0; i < MAX_IOS; i++) {
        const struct qr_snapsend *s = registry[i];
        if (s != NULL && p == (k == BY_IO     ? (const void *)s->io
                               : k == BY_LOAD ? (const void *)s->load_req
                                              : (const void *)s->send_req)) {
            return registry[i];
        }
    }
    return NULL;
}

static bool holding(const struct qr_snapsend *s)
{
    return s->load_req != NULL || s->send_req != NULL ||
           qr_clock_mono_ms() < s->hold_until_ms;
}

static int copy_conf(struct raft_configuration *dst,
                     const struct raft_configuration *src)
{
    raft_configuration_init(dst);
    for (unsigned i = 0; i < src->n; i++) {
        int rv = raft_configuration_add(dst, src->servers[i].id,
                                        src->servers[i].address,
                                        src->servers[i].role);
        if (rv != 0) {
            raft_configuration_close(dst);
            return rv;
        }
    }
    return 0;
}

/* A stand-in snapshot, or NULL when out of memory. */
static struct raft_snapshot *standin(const struct qr_snapsend *s)
{
    struct raft_snapshot *snap = raft_calloc(1, sizeof *snap);
    struct raft_buffer *bufs = raft_calloc(1, sizeof *bufs);
    void *body = raft_malloc(1);
    if (snap == NULL || bufs == NULL || body == NULL ||
        copy_conf(&snap->configuration, &s->conf) != 0) {
        raft_free(snap);
        raft_free(bufs);
        raft_free(body);
        return NULL;
    }
    snap->index = s->index;
    snap->term = s->term;
    snap->configuration_index = s->conf_index;
    bufs[0].base = body;
    bufs[0].len = 0; /* empty: a stand-in (a real body never is) */
    snap->bufs = bufs;
    snap->n_bufs = 1;
    return snap;
}

static void on_timer(uv_timer_t *t);

/* Answers every waiting snapshot_get with a stand-in. */
static void answer_waits(struct qr_snapsend *s)
{
    if (!s->have_meta) {
        return; /* the real load in flight brings the metadata */
    }
    while (s->n_waits > 0) {
        struct qr_snapsend_wait w = s->waits[--s->n_waits];
        struct raft_snapshot *snap = standin(s);
        if (snap == NULL) {
            /* raft's error path would free fields it never set: keep
             * the request for the next round instead. */
            s->n_waits++;
            QR_WARN("cluster", "snapshot stand-in: out of memory");
            uv_timer_start(&s->timer, on_timer, 100, 0);
            return;
        }
        s->n_standins++;
        w.cb(w.req, snap, 0);
    }
}

static void on_timer(uv_timer_t *t)
{
    answer_waits(t->data);
}

static void on_loaded(struct raft_io_snapshot_get *req,
                      struct raft_snapshot *snap,
                      int status)
{
    struct qr_snapsend *s = find(BY_LOAD, req);
    if (s == NULL) { /* cannot be: every real load is registered */
        QR_ERROR("cluster", "a snapshot load finished that was not ours");
        return;
    }
    raft_io_snapshot_get_cb cb = s->load_cb;
    s->load_req = NULL;
    s->load_cb = NULL;
    if (status == 0) {
        struct raft_configuration conf;
        if (copy_conf(&conf, &snap->configuration) == 0) {
            if (s->have_meta) {
                raft_configuration_close(&s->conf);
            }
            s->conf = conf;
            s->have_meta = true;
            s->index = snap->index;
            s->term = snap->term;
            s->conf_index = snap->configuration_index;
        }
    }
    cb(req, snap, status);
    if (s->n_waits > 0) {
        uv_timer_start(&s->timer, on_timer, 0, 0);
    }
}

static int snapshot_get(struct raft_io *io,
                        struct raft_io_snapshot_get *req,
                        raft_io_snapshot_get_cb cb)
{
    struct qr_snapsend *s = find(BY_IO, io);
    if (s == NULL) {
        return RAFT_INVALID;
    }
    if (s->closed) {
        return s->io_get(io, req, cb);
    }
    if (!holding(s)) {
        s->load_req = req;
        s->load_cb = cb;
        int rv = s->io_get(io, req, on_loaded);
        if (rv != 0) {
            s->load_req = NULL;
            s->load_cb = NULL;
        }
        return rv;
    }
    if (s->n_waits == s->cap_waits) {
        size_t cap = s->cap_waits == 0 ? 4 : 2 * s->cap_waits;
        struct qr_snapsend_wait *w = realloc(s->waits, cap * sizeof *w);
        if (w == NULL) {
            return RAFT_NOMEM;
        }
        s->waits = w;
        s->cap_waits = cap;
    }
    s->waits[s->n_waits++] = (struct qr_snapsend_wait){req, cb};
    if (s->have_meta && s->load_req == NULL) {
        uv_timer_start(&s->timer, on_timer, 0, 0);
    }
    return 0;
}

static void on_sent(struct raft_io_send *req, int status)
{
    struct qr_snapsend *s = find(BY_SEND, req);
    if (s == NULL) { /* cannot be: every real send is registered */
        QR_ERROR("cluster", "a snapshot send finished that was not ours");
        return;
    }
    raft_io_send_cb cb = s->send_cb;
    s->send_req = NULL;
    s->send_cb = NULL;
    if (status == 0) {
        uint64_t hold = QR_SNAPSEND_HOLD_MS +
                        (uint64_t)((double)s->send_bytes *
                                   QR_SNAPSEND_HOLD_MS_PER_GIB / (1 << 30));
        s->hold_until_ms = qr_clock_mono_ms() + hold;
        QR_INFO("cluster",
                "sent a snapshot of %zu bytes at index %llu to node %" PRIu64
                "; no other for %" PRIu64 " ms while it installs",
                s->send_bytes, (unsigned long long)s->index, s->send_to, hold);
    } else {
        QR_WARN("cluster",
                "sending a snapshot of %zu bytes to node %" PRIu64 ": %s",
                s->send_bytes, s->send_to, raft_strerror(status));
    }
    cb(req, status);
}

static int send_message(struct raft_io *io,
                        struct raft_io_send *req,
                        const struct raft_message *m,
                        raft_io_send_cb cb)
{
    struct qr_snapsend *s = find(BY_IO, io);
    if (s == NULL) {
        return RAFT_INVALID;
    }
    if (m->type != RAFT_INSTALL_SNAPSHOT) {
        return s->io_send(io, req, m, cb);
    }
    if (m->install_snapshot.data.len == 0) {
        return RAFT_CANCELED; /* a stand-in: never goes out */
    }
    if (s->closed) {
        return s->io_send(io, req, m, cb);
    }
    if (s->send_req != NULL) {
        return RAFT_BUSY; /* one install in flight at a time */
    }
    s->send_req = req;
    s->send_cb = cb;
    s->send_to = m->server_id;
    s->send_bytes = m->install_snapshot.data.len;
    if (s->n_standins > 0) {
        QR_INFO("cluster",
                "%" PRIu64 " snapshot request(s) answered by stand-ins",
                s->n_standins);
        s->n_standins = 0;
    }
    int rv = s->io_send(io, req, m, on_sent);
    if (rv != 0) {
        s->send_req = NULL;
        s->send_cb = NULL;
    }
    return rv;
}

int qr_snapsend_init(struct qr_snapsend *s, uv_loop_t *loop, struct raft_io *io)
{
    memset(s, 0, sizeof *s);
    size_t slot = 0;
    while (slot < MAX_IOS && registry[slot] != NULL && registry[slot] != s) {
        slot++;
    }
    if (slot == MAX_IOS) {
        return UV_ENOMEM;
    }
    int rv = uv_timer_init(loop, &s->timer);
    if (rv != 0) {
        return rv;
    }
    s->timer.data = s;
    s->io = io;
    s->io_get = io->snapshot_get;
    s->io_send = io->send;
    io->snapshot_get = snapshot_get;
    io->send = send_message;
    registry[slot] = s;
    return 0;
}

void qr_snapsend_close(struct qr_snapsend *s, uv_close_cb close_cb)
{
    answer_waits(s);
    s->closed = true;
    /* Still waiting (no metadata yet): the raft_io answers them. */
    while (s->n_waits > 0) {
        struct qr_snapsend_wait w = s->waits[--s->n_waits];
        if (s->io_get(s->io, w.req, w.cb) != 0) {
            QR_WARN("cluster", "a snapshot request dropped while closing");
        }
    }
    free(s->waits);
    s->waits = NULL;
    if (s->have_meta) {
        raft_configuration_close(&s->conf);
        s->have_meta = false;
    }
    uv_close((uv_handle_t *)&s->timer, close_cb);
}
