/* qraft-bench: publish throughput and latency, and end-to-end delivery
 * throughput and latency, against a running cluster.
 *
 * `qraft-bench publish` keeps IN_FLIGHT publishes outstanding, pipelined
 * over one or a few connections (one thread and libqraft handle each), until
 * N have been answered. Latency is measured per publish from the moment its
 * frame is handed to the socket to the moment its answer is read; the clock
 * runs from when every connection has found the leader until the last
 * answer. Messages carry a delay (1 h by default) so the node does not
 * deliver them during the run.
 *
 * `qraft-bench deliver` runs the same publishers with delay 0 against a
 * built-in HTTP/1.1 sink (one epoll thread on 127.0.0.1, keep-alive, answers
 * 200) and waits until every acknowledged message has reached the sink and
 * the node counts it delivered. The sink and the publishers share one
 * tracker: a hash table of message ids under one mutex, keeping each id's
 * publish send time and first arrival, and counting later arrivals as
 * duplicates. Every time comes from one monotonic clock.
 *
 * `qraft-bench backlog` measures what a backlog costs: the publish rate on
 * the store as it is, then after filling it with N pending messages (each
 * with the delay), and what the node that answers status (the leader)
 * reports of its loop's stalls, its memory and its store. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "qraft.h"

#define DEFAULT_URL "http://127.0.0.1:9/qraft-bench"
#define DEFAULT_DELAY_MS (3600u * 1000u)
#define DEFAULT_DEADLINE_MS (60u * 1000u)
#define REPLY_TIMEOUT_MS 60000
#define STATUS_POLL_MS 5
#define SINK_PATH "/qraft-bench"

static const char usage[] =
    "usage: qraft-bench publish -n N -c IN_FLIGHT -s BYTES [OPTIONS]\n"
    "\n"
    "Publishes N messages of BYTES bytes each, keeping IN_FLIGHT publishes\n"
    "outstanding (pipelined), and prints msgs/s and latency p50/p90/p99/max\n"
    "in ms, then a one-line summary. Exits 1 if any publish failed.\n"
    "\n"
    "  -n N                   messages to publish (default 10000)\n"
    "  -c IN_FLIGHT           publishes outstanding at once (default 64)\n"
    "  -s BYTES               body size (default 1024)\n"
    "  --connections K        spread IN_FLIGHT over K connections, one\n"
    "                         thread each (default 1)\n"
    "  --endpoints H:P,...    nodes (env QRAFT_ENDPOINTS; default\n"
    "                         127.0.0.1:7100)\n"
    "  --token T              API token (env QRAFT_TOKEN)\n"
    "  --url URL              destination (default " DEFAULT_URL
    ")\n"
    "  --delay DUR            delivery delay (default 1h): long enough that\n"
    "                         nothing is delivered during the run\n"
    "  --ids-out FILE         write each acknowledged message id to FILE,\n"
    "                         one per line (for loss checks; the first\n"
    "                         publish of each connection included)\n"
    "\n"
    "Each connection first makes one blocking publish to find the leader;\n"
    "it is not counted.\n";

static const char usage_deliver[] =
    "usage: qraft-bench deliver -n N -c IN_FLIGHT -s BYTES [OPTIONS]\n"
    "\n"
    "Starts an HTTP sink on 127.0.0.1, publishes N messages of BYTES bytes\n"
    "to it with delay 0 (IN_FLIGHT outstanding, as publish does), and waits\n"
    "until every acknowledged message has reached the sink and the node\n"
    "counts it delivered (its result committed). Prints delivered/s end to\n"
    "end (acknowledged messages / time from the first publish sent to the\n"
    "last result seen committed), the latency from publish sent to first\n"
    "arrival at the sink (p50/p90/p99/max, ms), duplicates seen at the sink,\n"
    "then a one-line summary. Exits 1 if a publish failed, or an\n"
    "acknowledged message did not arrive or was not counted delivered\n"
    "before the deadline.\n"
    "\n"
    "  -n N                   messages to publish (default 10000), the first\n"
    "                         blocking publish of each connection included\n"
    "  -c IN_FLIGHT           publishes outstanding at once (default 64)\n"
    "  -s BYTES               body size (default 1024)\n"
    "  --connections K        as for publish (default 1)\n"
    "  --endpoints H:P,...    nodes (env QRAFT_ENDPOINTS; default\n"
    "                         127.0.0.1:7100)\n"
    "  --token T              API token (env QRAFT_TOKEN)\n"
    "  --sink-port P          the sink's port (default 0: any free one)\n"
    "  --deadline DUR         longest wait after the last publish answer\n"
    "                         (default 60s)\n"
    "  --ids-out FILE         as for publish\n"
    "\n"
    "The node's delivered count is polled every 5 ms and compared with its\n"
    "value before the run, so the node may hold earlier messages; messages\n"
    "of others delivered during the run would be counted as ours.\n";

static const char usage_backlog[] =
    "usage: qraft-bench backlog -n FILL -m MEASURE -c IN_FLIGHT -s BYTES "
    "[OPTIONS]\n"
    "\n"
    "Publishes MEASURE messages and times them (the rate before the\n"
    "backlog), then FILL more (the backlog: every message pending for the\n"
    "delay), then MEASURE again (the rate with the backlog). Prints both\n"
    "rates and their ratio, and what the node answering status (the\n"
    "leader) reports: its pending messages, its loop's stalls of 50 ms or\n"
    "more (count during the run, longest since the node started), its\n"
    "resident memory and its store's size, each also per message\n"
    "published; then a one-line summary. Exits 1 if any publish failed.\n"
    "\n"
    "  -n FILL                messages of the backlog (default 1000000)\n"
    "  -m MEASURE             messages of each measured run (default 50000)\n"
    "  -c, -s, --connections, --endpoints, --token, --url, --delay\n"
    "                         as for publish\n";

enum mode { MODE_PUBLISH, MODE_DELIVER, MODE_BACKLOG };

struct config {
    enum mode mode;
    uint64_t n;
    uint32_t in_flight;
    size_t size_bytes;
    uint32_t connections;
    const char *endpoints;
    const char *token;
    const char *url;
    uint64_t delay_ms;
    const char *ids_out;  /* --ids-out: file of acknowledged ids */
    uint16_t sink_port;   /* deliver: 0 = any */
    uint64_t deadline_ms; /* deliver: wait after the last publish answer */
    uint64_t measure;     /* backlog: publishes of each measured run */
};

/* ----------------------------------------------------------------------
 * Tracker: what the publishers and the sink know about each message id. */

#define TRACK_ID_BYTES 32 /* "msg_" + 24 hex digits and the NUL fit */

struct track_rec {
    char id[TRACK_ID_BYTES]; /* "": free slot */
    double sent_ms;          /* publish handed to the socket; < 0: not acked */
    double arrival_ms;       /* first request at the sink */
    uint32_t n_arrivals;
};

struct tracker {
    pthread_mutex_t lock;
    struct track_rec *recs; /* [mask + 1], open addressing */
    size_t mask;
    size_t n_used;
    size_t max_used_by_sink; /* the sink adds no id past this */
    uint64_t n_acked;
    uint64_t n_acked_arrived; /* acked and arrived at least once */
    uint64_t n_requests;      /* requests the sink answered 200 */
    uint64_t n_duplicates;    /* arrivals of an id after its first */
    uint64_t n_unlabelled;    /* requests without Upstash-Message-Id */
    uint64_t n_untracked;     /* ids not recorded: too long, table full */
    double first_sent_ms;     /* earliest acked publish's send; < 0: none */
};

static int tracker_init(struct tracker *t, uint64_t n)
{
    /* Acked ids are at most n; the sink may add as many again (ids that
     * arrive before their ack, or strangers): load stays under 3/4. */
    uint64_t want = (2 * n + 1024) * 4 / 3 + 1;
    size_t cap = 1024;
    while (cap < want) {
        cap *= 2;
    }
    memset(t, 0, sizeof *t);
    t->recs = calloc(cap, sizeof *t->recs);
    if (t->recs == NULL) {
        return -ENOMEM;
    }
    t->mask = cap - 1;
    t->max_used_by_sink = (size_t)n + 1024;
    t->first_sent_ms = -1;
    pthread_mutex_init(&t->lock, NULL);
    return 0;
}

static void tracker_close(struct tracker *t)
{
    if (t->recs == NULL) {
        return;
    }
    pthread_mutex_destroy(&t->lock);
    free(t->recs);
    t->recs = NULL;
}

/* FNV-1a. */
static size_t hash_id(const char *id)
{
    uint64_t h = 14695981039346656037u;
    for (; *id != '\0'; id++) {
        h = (h ^ (uint8_t)*id) * 1099511628211u;
    }
    return (size_t)h;
}

/* Finds id, or adds it when `may_add`. Returns NULL when absent and not
 * added, or when id is too long to track. Call with the lock held. */
static struct track_rec *tracker_find(struct tracker *t,
                                      const char *id,
                                      bool may_add)
{
    if (strlen(id) >= TRACK_ID_BYTES || id[0] == '\0') {
        return NULL;
    }
    size_t i = hash_id(id) & t->mask;
    while (t->recs[i].id[0] != '\0') {
        if (strcmp(t->recs[i].id, id) == 0) {
            return &t->recs[i];
        }
        i = (i + 1) & t->mask;
    }
    if (!may_add || t->n_used >= t->mask - t->mask / 4) {
        return NULL;
    }
    struct track_rec *r = &t->recs[i];
    snprintf(r->id, sizeof r->id, "%s", id);
    r->sent_ms = -1;
    r->arrival_ms = -1;
    t->n_used++;
    return r;
}

/* A publish of id, sent at sent_ms, was acknowledged. */
static void tracker_ack(struct tracker *t, const char *id, double sent_ms)
{
    pthread_mutex_lock(&t->lock);
    struct track_rec *r = tracker_find(t, id, true);
    if (r == NULL) {
        t->n_untracked++;
    } else if (r->sent_ms < 0) {
        r->sent_ms = sent_ms;
        t->n_acked++;
        if (r->n_arrivals > 0) {
            t->n_acked_arrived++;
        }
        if (t->first_sent_ms < 0 || sent_ms < t->first_sent_ms) {
            t->first_sent_ms = sent_ms;
        }
    }
    pthread_mutex_unlock(&t->lock);
}

/* The sink answered a request for id (NULL: the request named none). */
static void tracker_arrive(struct tracker *t, const char *id, double at_ms)
{
    pthread_mutex_lock(&t->lock);
    t->n_requests++;
    if (id == NULL) {
        t->n_unlabelled++;
        pthread_mutex_unlock(&t->lock);
        return;
    }
    struct track_rec *r = tracker_find(t, id, t->n_used < t->max_used_by_sink);
    if (r == NULL) {
        t->n_untracked++;
    } else if (r->n_arrivals++ == 0) {
        r->arrival_ms = at_ms;
        if (r->sent_ms >= 0) {
            t->n_acked_arrived++;
        }
    } else {
        t->n_duplicates++;
    }
    pthread_mutex_unlock(&t->lock);
}

static uint64_t tracker_missing(struct tracker *t)
{
    pthread_mutex_lock(&t->lock);
    uint64_t missing = t->n_acked - t->n_acked_arrived;
    pthread_mutex_unlock(&t->lock);
    return missing;
}

/* ----------------------------------------------------------------------
 * Sink: HTTP/1.1 on 127.0.0.1, one thread, level-triggered epoll. Reads a
 * request line, headers (Content-Length, Connection, Upstash-Message-Id)
 * and skips the body; answers 200 with an empty body and keeps the
 * connection. Pipelined requests are answered in order. A malformed request
 * (or Transfer-Encoding, which the node never sends) gets 400 and a close.
 */

#define SINK_HEAD_MAX (64u * 1024)   /* request line + headers */
#define SINK_READ_BYTES (16u * 1024) /* free space per read */
#define SINK_BODY_MAX ((uint64_t)1 << 40)
#define SINK_EVENTS 256
#define SINK_BACKLOG 1024

static const char sink_ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
static const char sink_bad[] =
    "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
    "Connection: close\r\n\r\n";

enum sink_kind { SINK_LISTENER, SINK_WAKER, SINK_HTTP };

struct sink_conn {
    enum sink_kind kind;
    int fd;
    uint32_t interest; /* EPOLLIN or EPOLLOUT */
    char *buf;         /* bytes read and not consumed: buf[0..len) */
    size_t len;
    size_t cap;
    bool in_body; /* the head is parsed; skipping body_left bytes */
    uint64_t body_left;
    bool req_close;   /* this request asked to close after the answer */
    bool close_after; /* answered the last request; close once sent */
    bool has_id;
    char id[TRACK_ID_BYTES];
    bool id_too_long;
    const char *out; /* answer bytes not yet sent (static strings) */
    size_t out_left;
    struct sink_conn *prev; /* every open HTTP connection, for the close */
    struct sink_conn *next;
};

struct sink {
    int epoll_fd;
    struct sink_conn listener;
    struct sink_conn waker; /* an eventfd: written once to stop the thread */
    uint16_t port;
    pthread_t thread;
    bool running;       /* between sink_start and sink_stop */
    struct tracker *tr; /* borrowed */
    struct sink_conn *conns;
    /* Written by the sink thread, read after the join. */
    uint64_t n_accepted;
    uint64_t n_bad;
    int accept_errno; /* the first accept failure other than EAGAIN */
    char errmsg[256];
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void close_conn(struct sink *s, struct sink_conn *c)
{
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        s->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    close(c->fd); /* also leaves the epoll set */
    free(c->buf);
    free(c);
}

static void accept_all(struct sink *s)
{
    for (;;) {
        int fd =
            accept4(s->listener.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED &&
                s->accept_errno == 0) {
                s->accept_errno = errno;
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct sink_conn *c = calloc(1, sizeof *c);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (c == NULL || epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            free(c);
            close(fd);
            continue;
        }
        c->kind = SINK_HTTP;
        c->fd = fd;
        c->interest = EPOLLIN;
        c->next = s->conns;
        if (s->conns != NULL) {
            s->conns->prev = c;
        }
        s->conns = c;
        s->n_accepted++;
    }
}

/* Sends what is left of the answer. Returns 0 (maybe still pending) or -1
 * when the connection is broken. */
static int flush_out(struct sink_conn *c)
{
    while (c->out_left > 0) {
        ssize_t n = send(c->fd, c->out, c->out_left, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN ? 0 : -1;
        }
        c->out += n;
        c->out_left -= (size_t)n;
    }
    return 0;
}

static int answer(struct sink_conn *c, const char *text, size_t len)
{
    c->out = text;
    c->out_left = len;
    return flush_out(c);
}

/* Reads once. Returns 0, or -1 on EOF or error. */
static int read_in(struct sink_conn *c)
{
    if (c->cap - c->len < SINK_READ_BYTES) {
        size_t cap = c->cap == 0 ? 2 * SINK_READ_BYTES : 2 * c->cap;
        char *buf = realloc(c->buf, cap);
        if (buf == NULL) {
            return -1;
        }
        c->buf = buf;
        c->cap = cap;
    }
    ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
    if (n < 0) {
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    }
    if (n == 0) {
        return -1;
    }
    c->len += (size_t)n;
    return 0;
}

static bool name_is(const char *p, size_t len, const char *name)
{
    return strlen(name) == len && strncasecmp(p, name, len) == 0;
}

static int parse_content_length(const char *v, size_t len, uint64_t *out)
{
    uint64_t n = 0;
    if (len == 0) {
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9' || n > SINK_BODY_MAX) {
            return -1;
        }
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    if (n > SINK_BODY_MAX) {
        return -1;
    }
    *out = n;
    return 0;
}

/* Parses a request head, p[0..len) ending in CRLF CRLF, into c. Returns 0
 * or -1 when the request is malformed or not supported. */
static int parse_head(struct sink_conn *c, const char *p, size_t len)
{
    if (p == NULL || len < 4) {
        return -1;
    }
    const char *end = p + len - 2; /* the final empty line's CRLF */
    const char *eol = memmem(p, len, "\r\n", 2);
    if (eol == NULL) {
        return -1;
    }
    const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    const char *sp2 =
        sp1 == NULL ? NULL : memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (sp1 == NULL || sp2 == NULL || sp1 == p || sp2 == sp1 + 1) {
        return -1;
    }
    size_t vlen = (size_t)(eol - sp2 - 1);
    if (name_is(sp2 + 1, vlen, "HTTP/1.1")) {
        c->req_close = false;
    } else if (name_is(sp2 + 1, vlen, "HTTP/1.0")) {
        c->req_close = true;
    } else {
        return -1;
    }
    c->body_left = 0;
    c->has_id = false;
    c->id_too_long = false;
    bool have_length = false;
    for (const char *line = eol + 2; line < end; line = eol + 2) {
        eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        if (colon == NULL || colon == line) {
            return -1;
        }
        size_t nlen = (size_t)(colon - line);
        const char *v = colon + 1;
        const char *vend = eol;
        while (v < vend && (*v == ' ' || *v == '\t')) {
            v++;
        }
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t')) {
            vend--;
        }
        size_t n = (size_t)(vend - v);
        if (name_is(line, nlen, "Content-Length")) {
            uint64_t cl;
            if (parse_content_length(v, n, &cl) != 0 ||
                (have_length && cl != c->body_left)) {
                return -1;
            }
            c->body_left = cl;
            have_length = true;
        } else if (name_is(line, nlen, "Transfer-Encoding")) {
            return -1;
        } else if (name_is(line, nlen, "Connection")) {
            if (name_is(v, n, "close")) {
                c->req_close = true;
            } else if (name_is(v, n, "keep-alive")) {
                c->req_close = false;
            }
        } else if (name_is(line, nlen, "Upstash-Message-Id")) {
            if (n >= sizeof c->id) {
                c->id_too_long = true;
            } else {
                memcpy(c->id, v, n);
                c->id[n] = '\0';
                c->has_id = true;
            }
        }
    }
    return 0;
}

/* Handles every complete request in c->buf. Returns 0, or -1 to close. */
static int process(struct sink *s, struct sink_conn *c)
{
    size_t off = 0;
    int rv = 0;
    while (rv == 0 && c->out_left == 0 && !c->close_after) {
        if (c->in_body) {
            size_t take = c->len - off;
            if (take > c->body_left) {
                take = (size_t)c->body_left;
            }
            off += take;
            c->body_left -= take;
            if (c->body_left > 0) {
                break;
            }
            c->in_body = false;
            if (c->id_too_long) {
                tracker_arrive(s->tr, "", now_ms()); /* counted untracked */
            } else {
                tracker_arrive(s->tr, c->has_id ? c->id : NULL, now_ms());
            }
            c->close_after = c->req_close;
            rv = answer(c, sink_ok, sizeof sink_ok - 1);
            continue;
        }
        const char *head = c->buf + off;
        const char *crlf2 = memmem(head, c->len - off, "\r\n\r\n", 4);
        if (crlf2 == NULL) {
            if (c->len - off > SINK_HEAD_MAX) {
                s->n_bad++;
                c->close_after = true;
                rv = answer(c, sink_bad, sizeof sink_bad - 1);
            }
            break;
        }
        size_t head_len = (size_t)(crlf2 + 4 - head);
        if (parse_head(c, head, head_len) != 0) {
            s->n_bad++;
            c->close_after = true;
            rv = answer(c, sink_bad, sizeof sink_bad - 1);
            break;
        }
        off += head_len;
        c->in_body = true;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    if (rv == 0 && c->out_left == 0 && c->close_after) {
        rv = -1;
    }
    return rv;
}

static void on_conn_event(struct sink *s, struct sink_conn *c, uint32_t ev)
{
    int rv = 0;
    if (c->out_left > 0) {
        rv = flush_out(c);
    } else if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0) {
        rv = read_in(c);
    }
    if (rv == 0) {
        rv = process(s, c);
    }
    uint32_t want = c->out_left > 0 ? EPOLLOUT : EPOLLIN;
    if (rv == 0 && want != c->interest) {
        struct epoll_event e = {.events = want, .data.ptr = c};
        rv = epoll_ctl(s->epoll_fd, EPOLL_CTL_MOD, c->fd, &e);
        c->interest = want;
    }
    if (rv != 0) {
        close_conn(s, c);
    }
}

static void *run_sink(void *arg)
{
    struct sink *s = arg;
    struct epoll_event evs[SINK_EVENTS];
    pthread_setname_np(pthread_self(), "qb-sink");
    bool stopping = false;
    while (!stopping) {
        int n = epoll_wait(s->epoll_fd, evs, SINK_EVENTS, -1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            snprintf(s->errmsg, sizeof s->errmsg, "sink: epoll_wait: %s",
                     strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            struct sink_conn *c = evs[i].data.ptr;
            if (c->kind == SINK_WAKER) {
                stopping = true;
            } else if (c->kind == SINK_LISTENER) {
                accept_all(s);
            } else {
                on_conn_event(s, c, evs[i].events);
            }
        }
    }
    while (s->conns != NULL) {
        close_conn(s, s->conns);
    }
    return NULL;
}

static int add_fd(struct sink *s, struct sink_conn *c)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    return epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Listens on 127.0.0.1:port (0: any) and starts the sink's thread. tr is
 * borrowed until sink_stop. Returns 0, or -errno with s->errmsg set; then
 * nothing is left open. */
static int sink_start(struct sink *s, uint16_t port, struct tracker *tr)
{
    memset(s, 0, sizeof *s);
    s->tr = tr;
    s->listener.kind = SINK_LISTENER;
    s->waker.kind = SINK_WAKER;
    const char *step = "socket";
    int rv;
    s->listener.fd =
        socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->listener.fd < 0) {
        rv = -errno;
        goto err;
    }
    int one = 1;
    setsockopt(s->listener.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {
        .sin_family = AF_INET,
        .sin_port = htons(port),
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
    };
    socklen_t addr_len = sizeof addr;
    step = "bind";
    if (bind(s->listener.fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        rv = -errno;
        goto err_after_socket;
    }
    step = "listen";
    if (listen(s->listener.fd, SINK_BACKLOG) != 0 ||
        getsockname(s->listener.fd, (struct sockaddr *)&addr, &addr_len) != 0) {
        rv = -errno;
        goto err_after_socket;
    }
    s->port = ntohs(addr.sin_port);
    step = "epoll";
    s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epoll_fd < 0) {
        rv = -errno;
        goto err_after_socket;
    }
    s->waker.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->waker.fd < 0) {
        rv = -errno;
        goto err_after_epoll;
    }
    if (add_fd(s, &s->listener) != 0 || add_fd(s, &s->waker) != 0) {
        rv = -errno;
        goto err_after_waker;
    }
    step = "thread";
    rv = pthread_create(&s->thread, NULL, run_sink, s);
    if (rv != 0) {
        rv = -rv;
        goto err_after_waker;
    }
    s->running = true;
    return 0;

err_after_waker:
    close(s->waker.fd);
err_after_epoll:
    close(s->epoll_fd);
err_after_socket:
    close(s->listener.fd);
err:
    snprintf(s->errmsg, sizeof s->errmsg, "sink: %s 127.0.0.1:%u: %s", step,
             (unsigned)port, strerror(-rv));
    return rv;
}

/* Stops the thread, closes every connection and socket. Safe to call
 * twice. */
static void sink_stop(struct sink *s)
{
    if (!s->running) {
        return;
    }
    s->running = false;
    uint64_t one = 1;
    while (write(s->waker.fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
    pthread_join(s->thread, NULL);
    close(s->waker.fd);
    close(s->epoll_fd);
    close(s->listener.fd);
}

/* ----------------------------------------------------------------------
 * Publishers */

/* One connection's share of the run. */
struct worker {
    const struct qraft_publish *pub;
    pthread_barrier_t *start;
    struct qraft_client *c;
    uint64_t quota;
    uint32_t slots;
    uint64_t *sent_ticket; /* [slots]: ticket of an outstanding publish */
    double *sent_ms;       /* [slots]: when it was sent; < 0: free slot */
    double *latency_ms;    /* [quota] */
    uint64_t n_ok;
    uint64_t n_failed;
    char first_error[QRAFT_ERRMSG_MAX];
    FILE *ids_out; /* shared by every worker; NULL: not asked for */
    /* deliver: every acked id goes here, and the first blocking publish is
     * one of the quota. NULL for publish. */
    struct tracker *tracker;
};

static pthread_mutex_t ids_lock = PTHREAD_MUTEX_INITIALIZER;

/* One acknowledged id per line, for tests that check none was lost. */
static void write_id(struct worker *w, const char *id)
{
    if (w->ids_out == NULL) {
        return;
    }
    pthread_mutex_lock(&ids_lock);
    fprintf(w->ids_out, "%s\n", id);
    pthread_mutex_unlock(&ids_lock);
}

static int parse_duration_ms(const char *s, uint64_t *out)
{
    uint64_t total = 0;
    if (*s == '\0') {
        return -1;
    }
    while (*s != '\0') {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(s, &end, 10);
        if (end == s || errno != 0 || *s < '0' || *s > '9') {
            return -1;
        }
        s = end;
        uint64_t unit;
        if (strncmp(s, "ms", 2) == 0) {
            unit = 1;
            s += 2;
        } else if (*s == 's' || *s == 'm' || *s == 'h' || *s == 'd') {
            unit = *s == 's'   ? 1000
                   : *s == 'm' ? 60000
                   : *s == 'h' ? 3600000
                               : 86400000;
            s++;
        } else {
            return -1;
        }
        if (n > (UINT64_MAX - total) / unit) {
            return -1;
        }
        total += n * unit;
    }
    *out = total;
    return 0;
}

static int parse_count(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s < '0' || *s > '9' || *end != '\0' || errno != 0 || v == 0 ||
        v > max) {
        return -1;
    }
    *out = v;
    return 0;
}

static void record_failure(struct worker *w, const char *why)
{
    w->n_failed++;
    if (w->first_error[0] == '\0') {
        snprintf(w->first_error, sizeof w->first_error, "%s", why);
    }
}

/* Fills free slots with new publishes. */
static void send_more(struct worker *w, uint64_t *n_started)
{
    for (uint32_t i = 0; i < w->slots && *n_started < w->quota; i++) {
        if (w->sent_ms[i] >= 0) {
            continue;
        }
        (*n_started)++;
        double t0 = now_ms();
        uint64_t ticket;
        int rc = qraft_publish_send(w->c, w->pub, &ticket);
        if (rc != 0) {
            record_failure(w, qraft_client_errmsg(w->c));
            continue;
        }
        w->sent_ticket[i] = ticket;
        w->sent_ms[i] = t0;
    }
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    char id[QRAFT_ID_MAX];
    pthread_setname_np(pthread_self(), "qb-publish");
    double t_first = now_ms();
    int rc = qraft_publish(w->c, w->pub, id, NULL);
    if (rc != 0) {
        record_failure(w, qraft_client_errmsg(w->c));
    } else {
        write_id(w, id); /* not timed, but acknowledged all the same */
    }
    if (rc == 0 && w->tracker != NULL) {
        tracker_ack(w->tracker, id, t_first);
        w->quota--; /* the first publish was one of the quota */
    }
    pthread_barrier_wait(w->start);
    if (rc != 0) {
        w->n_failed = w->quota;
        return NULL;
    }
    uint64_t n_started = 0;
    send_more(w, &n_started);
    while (qraft_publish_outstanding(w->c) > 0) {
        struct qraft_publish_reply reply;
        rc = qraft_publish_recv(w->c, REPLY_TIMEOUT_MS, &reply);
        if (rc != 0) {
            /* No answer for a minute: count the rest as failed. */
            record_failure(w, qraft_client_errmsg(w->c));
            w->n_failed += w->quota - w->n_ok - w->n_failed;
            return NULL;
        }
        double t1 = now_ms();
        uint32_t slot = 0;
        while (slot < w->slots &&
               (w->sent_ms[slot] < 0 || w->sent_ticket[slot] != reply.ticket)) {
            slot++;
        }
        if (slot == w->slots) {
            record_failure(w, "a reply for an unknown ticket");
            continue;
        }
        if (reply.rc == 0) {
            w->latency_ms[w->n_ok++] = t1 - w->sent_ms[slot];
            write_id(w, reply.id);
            if (w->tracker != NULL) {
                tracker_ack(w->tracker, reply.id, w->sent_ms[slot]);
            }
        } else {
            record_failure(w, qraft_client_errmsg(w->c));
        }
        w->sent_ms[slot] = -1;
        send_more(w, &n_started);
    }
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n). */
static double percentile(const double *v, size_t n, double p)
{
    if (n == 0) {
        return 0;
    }
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1) {
        rank = 1;
    }
    return v[(rank > n ? n : rank) - 1];
}

/* What the publishers did. */
struct pub_result {
    uint64_t n_ok; /* pipelined publishes acknowledged */
    uint64_t n_failed;
    char first_error[QRAFT_ERRMSG_MAX]; /* "" when none */
    double elapsed_ms;  /* from every connection ready to the last answer */
    double *latency_ms; /* [n_latency] sorted; free with free() */
    size_t n_latency;
};

/* Runs cfg->connections publishers of pub; with `tracker` (deliver) each
 * acked id goes there. Returns 0 with *res filled, or an exit status after
 * printing why. */
static int run_publishers(const struct config *cfg,
                          const struct qraft_publish *pub,
                          FILE *ids_out,
                          struct tracker *tracker,
                          struct pub_result *res)
{
    memset(res, 0, sizeof *res);
    struct worker *workers = calloc(cfg->connections, sizeof *workers);
    pthread_t *threads = calloc(cfg->connections, sizeof *threads);
    if (workers == NULL || threads == NULL) {
        fprintf(stderr, "qraft-bench: out of memory\n");
        return 1;
    }
    struct qraft_options opts = {.call_timeout_ms = 30000};
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, cfg->connections + 1);

    for (uint32_t i = 0; i < cfg->connections; i++) {
        struct worker *w = &workers[i];
        w->pub = pub;
        w->ids_out = ids_out;
        w->tracker = tracker;
        w->start = &start;
        w->quota = cfg->n / cfg->connections + (i < cfg->n % cfg->connections);
        w->slots = cfg->in_flight / cfg->connections +
                   (i < cfg->in_flight % cfg->connections);
        w->sent_ticket = calloc(w->slots, sizeof *w->sent_ticket);
        w->sent_ms = malloc(w->slots * sizeof *w->sent_ms);
        w->latency_ms = malloc((w->quota + 1) * sizeof *w->latency_ms);
        if (w->sent_ticket == NULL || w->sent_ms == NULL ||
            w->latency_ms == NULL) {
            fprintf(stderr, "qraft-bench: out of memory\n");
            return 1;
        }
        for (uint32_t s = 0; s < w->slots; s++) {
            w->sent_ms[s] = -1;
        }
        int rc = qraft_client_new(cfg->endpoints, cfg->token, &opts, &w->c);
        if (rc != 0) {
            fprintf(stderr, "qraft-bench: bad endpoints '%s': %s\n",
                    cfg->endpoints, qraft_strerror(rc));
            return 2;
        }
        if (pthread_create(&threads[i], NULL, run_worker, w) != 0) {
            fprintf(stderr, "qraft-bench: cannot start a thread\n");
            return 1;
        }
    }
    pthread_barrier_wait(&start);
    double t0 = now_ms();
    for (uint32_t i = 0; i < cfg->connections; i++) {
        pthread_join(threads[i], NULL);
    }
    res->elapsed_ms = now_ms() - t0;

    for (uint32_t i = 0; i < cfg->connections; i++) {
        res->n_ok += workers[i].n_ok;
        res->n_failed += workers[i].n_failed;
        if (res->first_error[0] == '\0' && workers[i].first_error[0] != '\0') {
            snprintf(res->first_error, sizeof res->first_error, "%s",
                     workers[i].first_error);
        }
    }
    res->latency_ms = malloc((res->n_ok + 1) * sizeof *res->latency_ms);
    if (res->latency_ms == NULL) {
        fprintf(stderr, "qraft-bench: out of memory\n");
        return 1;
    }
    size_t k = 0;
    for (uint32_t i = 0; i < cfg->connections; i++) {
        memcpy(res->latency_ms + k, workers[i].latency_ms,
               workers[i].n_ok * sizeof *res->latency_ms);
        k += workers[i].n_ok;
    }
    qsort(res->latency_ms, k, sizeof *res->latency_ms, cmp_double);
    res->n_latency = k;

    for (uint32_t i = 0; i < cfg->connections; i++) {
        qraft_client_free(workers[i].c);
        free(workers[i].sent_ticket);
        free(workers[i].sent_ms);
        free(workers[i].latency_ms);
    }
    pthread_barrier_destroy(&start);
    free(threads);
    free(workers);
    return 0;
}

/* ----------------------------------------------------------------------
 * publish */

static int run_publish(const struct config *cfg,
                       const struct qraft_publish *pub)
{
    FILE *ids_out = NULL;
    if (cfg->ids_out != NULL) {
        ids_out = fopen(cfg->ids_out, "w");
        if (ids_out == NULL) {
            fprintf(stderr, "qraft-bench: --ids-out %s: %s\n", cfg->ids_out,
                    strerror(errno));
            return 2;
        }
    }
    struct pub_result res;
    int ex = run_publishers(cfg, pub, ids_out, NULL, &res);
    if (ex != 0) {
        return ex;
    }
    size_t k = res.n_latency;
    double rate =
        res.elapsed_ms > 0 ? (double)res.n_ok * 1000.0 / res.elapsed_ms : 0;
    double p50 = percentile(res.latency_ms, k, 50);
    double p90 = percentile(res.latency_ms, k, 90);
    double p99 = percentile(res.latency_ms, k, 99);
    double max = k > 0 ? res.latency_ms[k - 1] : 0;

    printf("qraft-bench publish: n=%" PRIu64 " in_flight=%" PRIu32
           " size=%zu connections=%" PRIu32 " endpoints=%s\n",
           cfg->n, cfg->in_flight, cfg->size_bytes, cfg->connections,
           cfg->endpoints);
    printf("throughput: %.1f msgs/s (%" PRIu64 " ok, %" PRIu64
           " failed in %.3f s)\n",
           rate, res.n_ok, res.n_failed, res.elapsed_ms / 1000.0);
    printf("latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", p50, p90,
           p99, max);
    printf("summary: n=%" PRIu64 " c=%" PRIu32 " s=%zu conns=%" PRIu32
           " ok=%" PRIu64 " failed=%" PRIu64
           " elapsed_s=%.3f msgs_per_s=%.1f p50_ms=%.2f p90_ms=%.2f "
           "p99_ms=%.2f max_ms=%.2f\n",
           cfg->n, cfg->in_flight, cfg->size_bytes, cfg->connections, res.n_ok,
           res.n_failed, res.elapsed_ms / 1000.0, rate, p50, p90, p99, max);
    if (res.n_failed > 0) {
        fprintf(
            stderr, "qraft-bench: %" PRIu64 " publishes failed; first: %s\n",
            res.n_failed, res.first_error[0] != '\0' ? res.first_error : "?");
        ex = 1;
    }
    if (ids_out != NULL && fclose(ids_out) != 0) {
        fprintf(stderr, "qraft-bench: --ids-out %s: %s\n", cfg->ids_out,
                strerror(errno));
        ex = 1;
    }
    free(res.latency_ms);
    return ex;
}

/* ----------------------------------------------------------------------
 * deliver */

/* The node's per-state message counts now. */
static int read_counts(struct qraft_client *c, uint64_t counts[QRAFT_N_STATES])
{
    struct qraft_status *st;
    int rc = qraft_status(c, &st);
    if (rc != 0) {
        return rc;
    }
    memcpy(counts, st->state_counts, sizeof st->state_counts);
    qraft_status_free(st);
    return 0;
}

/* Polls until every acked message has reached the sink and the node counts
 * as many more delivered as were acked; or until the node has as many more
 * delivered and dead-lettered (nothing left to wait for); or deadline_ms.
 * On return *done_ms is when success was first seen (< 0: never) and
 * grown[s] how much the node's count of state s grew (0 if it shrank).
 * Returns 0 or a QRAFT_E* code of the status call. */
static int wait_delivered(struct qraft_client *c,
                          struct tracker *tr,
                          const uint64_t baseline[QRAFT_N_STATES],
                          uint64_t n_acked,
                          double deadline_ms,
                          double *done_ms,
                          uint64_t grown[QRAFT_N_STATES])
{
    *done_ms = -1;
    for (;;) {
        uint64_t counts[QRAFT_N_STATES];
        int rc = read_counts(c, counts);
        if (rc != 0) {
            return rc;
        }
        double t = now_ms();
        for (int s = 0; s < QRAFT_N_STATES; s++) {
            grown[s] = counts[s] > baseline[s] ? counts[s] - baseline[s] : 0;
        }
        uint64_t delivered = grown[QRAFT_STATE_DELIVERED];
        if (delivered >= n_acked && tracker_missing(tr) == 0) {
            *done_ms = t;
            return 0;
        }
        if (delivered + grown[QRAFT_STATE_DEAD_LETTERED] >= n_acked ||
            t >= deadline_ms) {
            return 0;
        }
        struct timespec ts = {0, STATUS_POLL_MS * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Sorted latencies (publish sent → first arrival) of the acked ids that
 * arrived; prints up to 3 that did not. Call after the sink stopped.
 * Returns new (free with free()) or NULL when out of memory. */
static double *collect_latencies(const struct tracker *tr,
                                 size_t *n_out,
                                 uint64_t *n_missing,
                                 uint64_t *n_strangers)
{
    double *v = malloc((tr->n_acked + 1) * sizeof *v);
    size_t n = 0;
    *n_missing = 0;
    *n_strangers = 0;
    if (v == NULL) {
        return NULL;
    }
    for (size_t i = 0; i <= tr->mask; i++) {
        const struct track_rec *r = &tr->recs[i];
        if (r->id[0] == '\0') {
            continue;
        }
        if (r->sent_ms < 0) {
            *n_strangers += 1;
        } else if (r->n_arrivals == 0) {
            if ((*n_missing)++ < 3) {
                fprintf(stderr, "qraft-bench: %s never reached the sink\n",
                        r->id);
            }
        } else {
            v[n++] = r->arrival_ms - r->sent_ms;
        }
    }
    qsort(v, n, sizeof *v, cmp_double);
    *n_out = n;
    return v;
}

/* Publishes, waits, stops the sink and prints the report. Returns the exit
 * status. */
static int measure_delivery(const struct config *cfg,
                            const struct qraft_publish *pub,
                            struct tracker *tr,
                            struct sink *sink,
                            struct qraft_client *poller,
                            const uint64_t baseline[QRAFT_N_STATES],
                            FILE *ids_out)
{
    struct pub_result res;
    int ex = run_publishers(cfg, pub, ids_out, tr, &res);
    if (ex != 0) {
        return ex;
    }
    pthread_mutex_lock(&tr->lock);
    uint64_t n_acked = tr->n_acked;
    double first_sent_ms = tr->first_sent_ms;
    pthread_mutex_unlock(&tr->lock);
    double done_ms;
    uint64_t grown[QRAFT_N_STATES] = {0};
    int rc =
        wait_delivered(poller, tr, baseline, n_acked,
                       now_ms() + (double)cfg->deadline_ms, &done_ms, grown);
    if (rc != 0) {
        fprintf(stderr, "qraft-bench: status: %s\n",
                qraft_client_errmsg(poller));
    }
    sink_stop(sink);

    size_t k;
    uint64_t n_missing;
    uint64_t n_strangers;
    double *lat = collect_latencies(tr, &k, &n_missing, &n_strangers);
    if (lat == NULL) {
        fprintf(stderr, "qraft-bench: out of memory\n");
        free(res.latency_ms);
        return 1;
    }
    double elapsed_ms = done_ms >= 0 ? done_ms - first_sent_ms : 0;
    double rate = elapsed_ms > 0 ? (double)n_acked * 1000.0 / elapsed_ms : 0;
    double pub_rate =
        res.elapsed_ms > 0 ? (double)res.n_ok * 1000.0 / res.elapsed_ms : 0;
    double p50 = percentile(lat, k, 50);
    double p90 = percentile(lat, k, 90);
    double p99 = percentile(lat, k, 99);
    double max = k > 0 ? lat[k - 1] : 0;
    size_t nl = res.n_latency;

    printf("qraft-bench deliver: n=%" PRIu64 " in_flight=%" PRIu32
           " size=%zu connections=%" PRIu32 " endpoints=%s sink=%s\n",
           cfg->n, cfg->in_flight, cfg->size_bytes, cfg->connections,
           cfg->endpoints, pub->url);
    printf("publish: %.1f msgs/s (%" PRIu64 " acked, %" PRIu64
           " failed); ack latency ms p50 %.2f  p99 %.2f  max %.2f\n",
           pub_rate, n_acked, res.n_failed, percentile(res.latency_ms, nl, 50),
           percentile(res.latency_ms, nl, 99),
           nl > 0 ? res.latency_ms[nl - 1] : 0);
    printf("delivered: %.1f msgs/s end to end (%" PRIu64
           " in %.3f s, from the first publish sent to the last result seen "
           "committed)\n",
           rate, done_ms >= 0 ? n_acked : 0, elapsed_ms / 1000.0);
    printf(
        "latency ms (publish sent -> first arrival at the sink): p50 %.2f"
        "  p90 %.2f  p99 %.2f  max %.2f\n",
        p50, p90, p99, max);
    printf("sink: %" PRIu64 " requests on %" PRIu64 " connections, %" PRIu64
           " duplicates, %" PRIu64 " acked ids missing, %" PRIu64
           " other ids, %" PRIu64 " without an id, %" PRIu64 " malformed\n",
           tr->n_requests, sink->n_accepted, tr->n_duplicates, n_missing,
           n_strangers + tr->n_untracked, tr->n_unlabelled, sink->n_bad);
    printf("node: +%" PRIu64 " delivered, +%" PRIu64 " dead-lettered, +%" PRIu64
           " retrying during the run\n",
           grown[QRAFT_STATE_DELIVERED], grown[QRAFT_STATE_DEAD_LETTERED],
           grown[QRAFT_STATE_RETRYING]);
    printf("summary: n=%" PRIu64 " c=%" PRIu32 " s=%zu conns=%" PRIu32
           " ok=%" PRIu64 " failed=%" PRIu64 " missing=%" PRIu64
           " duplicates=%" PRIu64
           " elapsed_s=%.3f delivered_per_s=%.1f p50_ms=%.2f p90_ms=%.2f "
           "p99_ms=%.2f max_ms=%.2f\n",
           cfg->n, cfg->in_flight, cfg->size_bytes, cfg->connections, n_acked,
           res.n_failed, n_missing, tr->n_duplicates, elapsed_ms / 1000.0, rate,
           p50, p90, p99, max);

    if (res.n_failed > 0) {
        fprintf(
            stderr, "qraft-bench: %" PRIu64 " publishes failed; first: %s\n",
            res.n_failed, res.first_error[0] != '\0' ? res.first_error : "?");
        ex = 1;
    }
    if (done_ms < 0) {
        fprintf(stderr,
                "qraft-bench: not done: %" PRIu64
                " acknowledged messages never reached the sink; the node "
                "counts %" PRIu64 " of %" PRIu64 " delivered\n",
                n_missing, grown[QRAFT_STATE_DELIVERED], n_acked);
        ex = 1;
    }
    if (tr->n_duplicates > 0) {
        fprintf(stderr, "qraft-bench: %" PRIu64 " duplicate deliveries\n",
                tr->n_duplicates);
    }
    if (sink->errmsg[0] != '\0') {
        fprintf(stderr, "qraft-bench: %s\n", sink->errmsg);
    }
    if (sink->accept_errno != 0) {
        fprintf(stderr, "qraft-bench: sink: accept: %s\n",
                strerror(sink->accept_errno));
    }
    free(lat);
    free(res.latency_ms);
    return ex;
}

static int run_deliver(const struct config *cfg, struct qraft_publish *pub)
{
    struct tracker tr;
    struct sink sink;
    struct qraft_client *poller = NULL;
    struct qraft_options opts = {.call_timeout_ms = 30000};
    char url[64];
    uint64_t baseline[QRAFT_N_STATES];
    int ex = 1;

    if (tracker_init(&tr, cfg->n) != 0) {
        fprintf(stderr, "qraft-bench: out of memory\n");
        return 1;
    }
    if (sink_start(&sink, cfg->sink_port, &tr) != 0) {
        fprintf(stderr, "qraft-bench: %s\n", sink.errmsg);
        goto err_after_tracker;
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%u" SINK_PATH,
             (unsigned)sink.port);
    pub->url = url;
    pub->delay_ms = 0;
    int rc = qraft_client_new(cfg->endpoints, cfg->token, &opts, &poller);
    if (rc != 0) {
        fprintf(stderr, "qraft-bench: bad endpoints '%s': %s\n", cfg->endpoints,
                qraft_strerror(rc));
        ex = 2;
        goto err_after_sink;
    }
    rc = read_counts(poller, baseline);
    if (rc != 0) {
        fprintf(stderr, "qraft-bench: status: %s\n",
                qraft_client_errmsg(poller));
        goto err_after_poller;
    }
    FILE *ids_out = NULL;
    if (cfg->ids_out != NULL) {
        ids_out = fopen(cfg->ids_out, "w");
        if (ids_out == NULL) {
            fprintf(stderr, "qraft-bench: --ids-out %s: %s\n", cfg->ids_out,
                    strerror(errno));
            ex = 2;
            goto err_after_poller;
        }
    }
    ex = measure_delivery(cfg, pub, &tr, &sink, poller, baseline, ids_out);
    if (ids_out != NULL && fclose(ids_out) != 0) {
        fprintf(stderr, "qraft-bench: --ids-out %s: %s\n", cfg->ids_out,
                strerror(errno));
        ex = 1;
    }

err_after_poller:
    qraft_client_free(poller);
err_after_sink:
    sink_stop(&sink);
err_after_tracker:
    tracker_close(&tr);
    return ex;
}

/* ----------------------------------------------------------------------
 * backlog */

#define BACKLOG_FILL_CHUNK 100000
#define MIB (1024.0 * 1024.0)

/* Publishes n messages as cfg says; *rate is msgs/s; with `what` prints a
 * line of rate and latencies. Returns 0 or an exit status; a failed
 * publish is an exit status after printing why. */
static int backlog_run(const struct config *cfg,
                       const struct qraft_publish *pub,
                       uint64_t n,
                       const char *what,
                       double *rate)
{
    struct config run = *cfg;
    run.n = n;
    if (run.connections > n) {
        run.connections = (uint32_t)n;
    }
    struct pub_result res;
    int ex = run_publishers(&run, pub, NULL, NULL, &res);
    if (ex != 0) {
        return ex;
    }
    size_t k = res.n_latency;
    *rate = res.elapsed_ms > 0 ? (double)res.n_ok * 1000.0 / res.elapsed_ms : 0;
    if (what != NULL) {
        printf("%-8s %.1f msgs/s (%" PRIu64
               " in %.3f s); latency ms: p50 %.2f  p99 %.2f  max %.2f\n",
               what, *rate, res.n_ok, res.elapsed_ms / 1000.0,
               percentile(res.latency_ms, k, 50),
               percentile(res.latency_ms, k, 99),
               k > 0 ? res.latency_ms[k - 1] : 0);
    }
    free(res.latency_ms);
    if (res.n_failed > 0) {
        fprintf(
            stderr, "qraft-bench: %" PRIu64 " publishes failed; first: %s\n",
            res.n_failed, res.first_error[0] != '\0' ? res.first_error : "?");
        return 1;
    }
    return 0;
}

static int backlog_status(struct qraft_client *c, struct qraft_status **out)
{
    int rc = qraft_status(c, out);
    if (rc != 0) {
        fprintf(stderr, "qraft-bench: status: %s\n", qraft_client_errmsg(c));
        return 1;
    }
    return 0;
}

static double per_message(uint64_t before, uint64_t after, uint64_t n)
{
    return after > before && n > 0 ? (double)(after - before) / (double)n : 0;
}

static int run_backlog(const struct config *cfg,
                       const struct qraft_publish *pub)
{
    struct qraft_client *poller = NULL;
    struct qraft_options opts = {.call_timeout_ms = 30000};
    struct qraft_status *before = NULL, *after = NULL;
    int rc = qraft_client_new(cfg->endpoints, cfg->token, &opts, &poller);
    if (rc != 0) {
        fprintf(stderr, "qraft-bench: bad endpoints '%s': %s\n", cfg->endpoints,
                qraft_strerror(rc));
        return 2;
    }
    printf("qraft-bench backlog: fill=%" PRIu64 " measure=%" PRIu64
           " in_flight=%" PRIu32 " size=%zu connections=%" PRIu32
           " endpoints=%s\n",
           cfg->n, cfg->measure, cfg->in_flight, cfg->size_bytes,
           cfg->connections, cfg->endpoints);
    double empty_rate = 0, backlog_rate = 0, chunk_rate = 0;
    int ex = backlog_status(poller, &before);
    if (ex == 0) {
        ex = backlog_run(cfg, pub, cfg->measure, "before:", &empty_rate);
    }
    double t0 = now_ms();
    for (uint64_t done = 0; ex == 0 && done < cfg->n;) {
        uint64_t chunk = cfg->n - done < BACKLOG_FILL_CHUNK
                             ? cfg->n - done
                             : BACKLOG_FILL_CHUNK;
        ex = backlog_run(cfg, pub, chunk, NULL, &chunk_rate);
        done += chunk;
        printf("fill:    %" PRIu64 " of %" PRIu64 " (%.1f msgs/s)\n", done,
               cfg->n, chunk_rate);
        fflush(stdout);
    }
    double fill_s = (now_ms() - t0) / 1000.0;
    if (ex == 0) {
        ex = backlog_run(cfg, pub, cfg->measure, "after:", &backlog_rate);
    }
    if (ex == 0) {
        ex = backlog_status(poller, &after);
    }
    if (ex == 0) {
        uint64_t published = cfg->n + 2 * cfg->measure;
        uint64_t pending = after->state_counts[QRAFT_STATE_PENDING];
        double ratio = empty_rate > 0 ? backlog_rate / empty_rate : 0;
        double rss_per =
            per_message(before->rss_bytes, after->rss_bytes, published);
        double store_per = per_message(before->store_used_bytes,
                                       after->store_used_bytes, published);
        printf("ratio:   %.2f (after / before); fill took %.1f s\n", ratio,
               fill_s);
        printf("node %" PRIu64 ": pending %" PRIu64 ", loop stalls %" PRIu64
               " during the run, the longest %" PRIu64 " ms since it started\n",
               after->node_id, pending,
               after->loop_stalls - before->loop_stalls,
               after->loop_stall_max_ms);
        printf(
            "         rss %.1f MiB (%.0f B per message published), store "
            "%.1f MiB used (%.0f B per message), file %.1f MiB\n",
            (double)after->rss_bytes / MIB, rss_per,
            (double)after->store_used_bytes / MIB, store_per,
            (double)after->store_file_bytes / MIB);
        printf("summary: fill=%" PRIu64 " measure=%" PRIu64 " c=%" PRIu32
               " s=%zu before_msgs_per_s=%.1f after_msgs_per_s=%.1f "
               "ratio=%.3f pending=%" PRIu64 " loop_stalls=%" PRIu64
               " loop_stall_max_ms=%" PRIu64 " rss_bytes=%" PRIu64
               " store_used_bytes=%" PRIu64 " store_file_bytes=%" PRIu64
               " rss_per_msg=%.0f store_per_msg=%.0f\n",
               cfg->n, cfg->measure, cfg->in_flight, cfg->size_bytes,
               empty_rate, backlog_rate, ratio, pending,
               after->loop_stalls - before->loop_stalls,
               after->loop_stall_max_ms, after->rss_bytes,
               after->store_used_bytes, after->store_file_bytes, rss_per,
               store_per);
    }
    if (before != NULL) {
        qraft_status_free(before);
    }
    if (after != NULL) {
        qraft_status_free(after);
    }
    qraft_client_free(poller);
    return ex;
}

/* ----------------------------------------------------------------------
 * main */

static int parse_args(int argc, char **argv, struct config *cfg)
{
    enum {
        OPT_ENDPOINTS = 1000,
        OPT_TOKEN,
        OPT_URL,
        OPT_DELAY,
        OPT_CONNECTIONS,
        OPT_IDS_OUT,
        OPT_SINK_PORT,
        OPT_DEADLINE,
        OPT_HELP
    };
    static const struct option opts[] = {
        {"endpoints", required_argument, NULL, OPT_ENDPOINTS},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"url", required_argument, NULL, OPT_URL},
        {"delay", required_argument, NULL, OPT_DELAY},
        {"connections", required_argument, NULL, OPT_CONNECTIONS},
        {"ids-out", required_argument, NULL, OPT_IDS_OUT},
        {"sink-port", required_argument, NULL, OPT_SINK_PORT},
        {"deadline", required_argument, NULL, OPT_DEADLINE},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *text = cfg->mode == MODE_DELIVER   ? usage_deliver
                       : cfg->mode == MODE_BACKLOG ? usage_backlog
                                                   : usage;
    bool deliver = cfg->mode == MODE_DELIVER;
    int opt;
    uint64_t v;
    while ((opt = getopt_long(argc, argv, "n:m:c:s:h", opts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
            case 'n':
                bad = parse_count(optarg, UINT64_MAX / 2, &cfg->n);
                break;
            case 'm':
                bad = cfg->mode != MODE_BACKLOG
                          ? -1
                          : parse_count(optarg, UINT64_MAX / 4, &cfg->measure);
                break;
            case 'c':
                bad = parse_count(optarg, 100000, &v);
                cfg->in_flight = (uint32_t)v;
                break;
            case 's':
                bad = parse_count(optarg, 64u * 1024 * 1024, &v);
                cfg->size_bytes = (size_t)v;
                break;
            case OPT_CONNECTIONS:
                bad = parse_count(optarg, 1024, &v);
                cfg->connections = (uint32_t)v;
                break;
            case OPT_ENDPOINTS:
                cfg->endpoints = optarg;
                break;
            case OPT_TOKEN:
                cfg->token = optarg;
                break;
            case OPT_URL:
                bad = deliver ? -1 : 0;
                cfg->url = optarg;
                break;
            case OPT_DELAY:
                bad = deliver ? -1 : parse_duration_ms(optarg, &cfg->delay_ms);
                break;
            case OPT_IDS_OUT:
                cfg->ids_out = optarg;
                break;
            case OPT_SINK_PORT:
                v = 0;
                bad = !deliver ? -1
                      : strcmp(optarg, "0") == 0
                          ? 0
                          : parse_count(optarg, 65535, &v);
                cfg->sink_port = (uint16_t)v;
                break;
            case OPT_DEADLINE:
                bad = !deliver ? -1
                               : parse_duration_ms(optarg, &cfg->deadline_ms);
                break;
            case 'h':
            case OPT_HELP:
                fputs(text, stdout);
                return 0;
            default:
                bad = -1;
                break;
        }
        if (bad != 0) {
            fprintf(stderr, "qraft-bench: bad value for an option\n%s", text);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "qraft-bench: unexpected argument '%s'\n",
                argv[optind]);
        return 2;
    }
    if (cfg->connections > cfg->in_flight) {
        cfg->connections = cfg->in_flight;
    }
    if (deliver && cfg->connections > cfg->n) {
        cfg->connections = (uint32_t)cfg->n; /* each needs one message */
    }
    return -1;
}

int main(int argc, char **argv)
{
    enum mode mode = MODE_PUBLISH;
    if (argc >= 2 && strcmp(argv[1], "deliver") == 0) {
        mode = MODE_DELIVER;
    } else if (argc >= 2 && strcmp(argv[1], "backlog") == 0) {
        mode = MODE_BACKLOG;
    } else if (argc < 2 || strcmp(argv[1], "publish") != 0) {
        bool help = argc >= 2 && (strcmp(argv[1], "--help") == 0 ||
                                  strcmp(argv[1], "-h") == 0);
        FILE *out = help ? stdout : stderr;
        fprintf(out, "%s\n%s\n%s", usage, usage_deliver, usage_backlog);
        return help ? 0 : 2;
    }
    struct config cfg = {
        .mode = mode,
        .n = 10000,
        .in_flight = 64,
        .size_bytes = 1024,
        .connections = 1,
        .endpoints = getenv("QRAFT_ENDPOINTS"),
        .token = getenv("QRAFT_TOKEN"),
        .url = DEFAULT_URL,
        .delay_ms = DEFAULT_DELAY_MS,
        .deadline_ms = DEFAULT_DEADLINE_MS,
        .measure = 50000,
    };
    if (mode == MODE_BACKLOG) {
        cfg.n = 1000000;
    }
    int ex = parse_args(argc - 1, argv + 1, &cfg);
    if (ex != -1) {
        return ex;
    }
    if (cfg.endpoints == NULL || cfg.endpoints[0] == '\0') {
        cfg.endpoints = QRAFT_DEFAULT_ENDPOINTS;
    }

    char *body = malloc(cfg.size_bytes + 1);
    if (body == NULL) {
        fprintf(stderr, "qraft-bench: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < cfg.size_bytes; i++) {
        body[i] = (char)('a' + i % 26);
    }
    struct qraft_header header = {"Content-Type", "text/plain"};
    struct qraft_publish pub = {
        .url = cfg.url,
        .headers = &header,
        .n_headers = 1,
        .body = body,
        .body_len = cfg.size_bytes,
        .delay_ms = cfg.delay_ms,
    };
    ex = mode == MODE_DELIVER   ? run_deliver(&cfg, &pub)
         : mode == MODE_BACKLOG ? run_backlog(&cfg, &pub)
                                : run_publish(&cfg, &pub);
    free(body);
    return ex;
}
