/* libqraft against in-process fake nodes: each fake is a thread with a
 * listening socket on 127.0.0.1 that speaks the frame protocol, records
 * every request and answers what the test's handler scripts (a reply, a
 * dropped connection, silence or raw bytes). Assertions are what a caller
 * of the library sees, plus what the node received. */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "frame.h"
#include "qraft.h"
#include "qraft.pb-c.h"

#define MAX_RECORDED 32

enum action {
    ACT_REPLY,  /* send r->resp */
    ACT_DROP,   /* close the connection without answering */
    ACT_SILENT, /* never answer */
    ACT_RAW     /* send r->raw as is */
};

/* What a handler fills in; the sub-messages live here so a handler needs no
 * allocation. resp starts as OK with the request's id. */
struct reply {
    Qraft__Response resp;
    Qraft__PublishResponse publish;
    Qraft__GetResponse get;
    Qraft__Message message;
    Qraft__LastError last_error;
    Qraft__Header header;
    Qraft__Header *headers[1];
    Qraft__Event events[2];
    Qraft__Event *event_ptrs[2];
    Qraft__ListResponse list;
    Qraft__Message *list_ptrs[1];
    Qraft__BulkResponse bulk;
    Qraft__ItemResult items[2];
    Qraft__ItemResult *item_ptrs[2];
    Qraft__StatusResponse status;
    Qraft__NodeStatus node;
    Qraft__NodeStatus *node_ptrs[1];
    uint64_t counts[QRAFT_N_STATES];
    Qraft__EventsResponse events_resp;
    Qraft__EventEntry entry;
    Qraft__EventEntry *entry_ptrs[1];
    Qraft__Queue queue;
    Qraft__ScheduleListResponse schedules;
    Qraft__Schedule schedule;
    Qraft__Schedule *schedule_ptrs[1];
    Qraft__PublishRequest schedule_request;
    char id_buf[QRAFT_ID_MAX];
    const uint8_t *raw;
    size_t raw_len;
};

struct fake;
typedef enum action (*fake_handler)(struct fake *f,
                                    const Qraft__Request *req,
                                    struct reply *r);

struct fake {
    int lfd;
    int port;
    int wake[2];
    pthread_t thread;
    fake_handler handler;
    const char *leader_rpc; /* for redirecting handlers */
    pthread_mutex_t mu;
    /* Recorded, under mu. */
    int n_requests;
    int n_connections;
    char keys[MAX_RECORDED][QRAFT_KEY_MAX];
    Qraft__Request *last; /* the last request, unpacked */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void write_all(int fd, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return; /* the client went away: its problem */
        }
        buf += n;
        len -= (size_t)n;
    }
}

static void send_response(int fd, const Qraft__Response *resp)
{
    size_t n = qraft__response__get_packed_size(resp);
    uint8_t *buf = malloc(QR_FRAME_HEADER_BYTES + n);
    if (buf == NULL) {
        abort(); /* no cmocka asserts off the test's thread */
    }
    qr_frame_put_header(buf, (uint32_t)n);
    qraft__response__pack(resp, buf + QR_FRAME_HEADER_BYTES);
    write_all(fd, buf, QR_FRAME_HEADER_BYTES + n);
    free(buf);
}

/* Handles one request; returns false when the connection must close. */
static bool serve_request(struct fake *f, int fd, const uint8_t *p, size_t n)
{
    Qraft__Request *req = qraft__request__unpack(NULL, n, p);
    if (req == NULL) {
        return false;
    }
    struct reply *r = calloc(1, sizeof *r);
    if (r == NULL) {
        abort();
    }
    qraft__response__init(&r->resp);
    r->resp.id = req->id;
    pthread_mutex_lock(&f->mu);
    if (f->n_requests < MAX_RECORDED &&
        req->body_case == QRAFT__REQUEST__BODY_PUBLISH) {
        snprintf(f->keys[f->n_requests], QRAFT_KEY_MAX, "%s",
                 req->publish->idempotency_key);
    }
    f->n_requests++;
    if (f->last != NULL) {
        qraft__request__free_unpacked(f->last, NULL);
    }
    f->last = req;
    enum action act = f->handler(f, req, r);
    pthread_mutex_unlock(&f->mu);
    bool keep = true;
    switch (act) {
        case ACT_REPLY:
            send_response(fd, &r->resp);
            break;
        case ACT_RAW:
            write_all(fd, r->raw, r->raw_len);
            break;
        case ACT_DROP:
            keep = false;
            break;
        case ACT_SILENT:
            break;
    }
    free(r);
    return keep;
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    int cfd = -1;
    uint8_t *buf = malloc(1 << 20);
    size_t len = 0;
    if (buf == NULL) {
        abort();
    }
    for (;;) {
        struct pollfd pfd[3] = {
            {.fd = f->wake[0], .events = POLLIN},
            {.fd = f->lfd, .events = POLLIN},
            {.fd = cfd, .events = POLLIN},
        };
        if (poll(pfd, cfd >= 0 ? 3 : 2, -1) < 0) {
            continue;
        }
        if (pfd[0].revents != 0) {
            break;
        }
        if (pfd[1].revents != 0) {
            int nfd = accept(f->lfd, NULL, NULL);
            if (nfd >= 0) {
                if (cfd >= 0) {
                    close(cfd);
                }
                cfd = nfd;
                len = 0;
                pthread_mutex_lock(&f->mu);
                f->n_connections++;
                pthread_mutex_unlock(&f->mu);
            }
            continue;
        }
        if (cfd < 0 || pfd[2].revents == 0) {
            continue;
        }
        ssize_t n = recv(cfd, buf + len, (1 << 20) - len, 0);
        if (n <= 0) {
            close(cfd);
            cfd = -1;
            continue;
        }
        len += (size_t)n;
        for (;;) {
            const uint8_t *payload;
            size_t payload_len;
            size_t consumed;
            enum qr_frame_status st = qr_frame_parse(
                buf, len, (1 << 20) - 4, &payload, &payload_len, &consumed);
            if (st == QR_FRAME_NEED_MORE) {
                break;
            }
            if (st != QR_FRAME_READY ||
                !serve_request(f, cfd, payload, payload_len)) {
                close(cfd);
                cfd = -1;
                len = 0;
                break;
            }
            memmove(buf, buf + consumed, len - consumed);
            len -= consumed;
        }
    }
    if (cfd >= 0) {
        close(cfd);
    }
    free(buf);
    return NULL;
}

static void fake_start(struct fake *f, fake_handler handler)
{
    memset(f, 0, sizeof *f);
    f->handler = handler;
    pthread_mutex_init(&f->mu, NULL);
    assert_int_equal(pipe(f->wake), 0);
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->lfd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(f->lfd, 16), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &sl), 0);
    f->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
    assert_int_equal(write(f->wake[1], "x", 1), 1);
    pthread_join(f->thread, NULL);
    close(f->lfd);
    close(f->wake[0]);
    close(f->wake[1]);
    if (f->last != NULL) {
        qraft__request__free_unpacked(f->last, NULL);
    }
    pthread_mutex_destroy(&f->mu);
}

static int fake_requests(struct fake *f)
{
    pthread_mutex_lock(&f->mu);
    int n = f->n_requests;
    pthread_mutex_unlock(&f->mu);
    return n;
}

static void endpoint_of(const struct fake *f, char *buf, size_t size)
{
    snprintf(buf, size, "127.0.0.1:%d", f->port);
}

static struct qraft_client *client_for(const char *endpoints,
                                       const struct qraft_options *opts)
{
    struct qraft_options o = {
        .call_timeout_ms = 5000, .backoff_initial_ms = 5, .backoff_max_ms = 20};
    if (opts != NULL) {
        o = *opts;
    }
    struct qraft_client *c = NULL;
    assert_int_equal(qraft_client_new(endpoints, "secret", &o, &c), 0);
    return c;
}

static struct qraft_client *client_for_fake(const struct fake *f)
{
    char ep[64];
    endpoint_of(f, ep, sizeof ep);
    return client_for(ep, NULL);
}

/* A port nothing listens on. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void reply_published(const Qraft__Request *req,
                            struct reply *r,
                            bool deduplicated)
{
    qraft__publish_response__init(&r->publish);
    snprintf(r->id_buf, sizeof r->id_buf, "msg_%024" PRIu64, req->id);
    r->publish.message_id = r->id_buf;
    r->publish.deduplicated = deduplicated;
    r->resp.body_case = QRAFT__RESPONSE__BODY_PUBLISH;
    r->resp.publish = &r->publish;
}

static const struct qraft_publish simple_publish = {
    .url = "http://127.0.0.1:9/hook",
    .body = "hello",
    .body_len = 5,
};

/* ----------------------------------------------------------------------
 * Handlers */

static enum action h_publish_ok(struct fake *f,
                                const Qraft__Request *req,
                                struct reply *r)
{
    (void)f;
    reply_published(req, r, false);
    return ACT_REPLY;
}

static enum action h_not_leader(struct fake *f,
                                const Qraft__Request *req,
                                struct reply *r)
{
    (void)req;
    r->resp.status = QRAFT__STATUS__NOT_LEADER;
    r->resp.error = "not the leader";
    r->resp.leader_id = 2;
    r->resp.leader_rpc = (char *)f->leader_rpc;
    return ACT_REPLY;
}

static enum action h_drop_first(struct fake *f,
                                const Qraft__Request *req,
                                struct reply *r)
{
    if (f->n_requests == 1) {
        return ACT_DROP;
    }
    /* The first attempt was applied: the key matches it. */
    reply_published(req, r, true);
    return ACT_REPLY;
}

static enum action h_unauthorized(struct fake *f,
                                  const Qraft__Request *req,
                                  struct reply *r)
{
    (void)f;
    (void)req;
    r->resp.status = QRAFT__STATUS__UNAUTHORIZED;
    r->resp.error = "wrong token";
    return ACT_REPLY;
}

static enum action h_too_large(struct fake *f,
                               const Qraft__Request *req,
                               struct reply *r)
{
    (void)f;
    (void)req;
    r->resp.status = QRAFT__STATUS__TOO_LARGE;
    r->resp.error = "body is 2097152 bytes; the limit is 1048576";
    return ACT_REPLY;
}

static enum action h_silent(struct fake *f,
                            const Qraft__Request *req,
                            struct reply *r)
{
    (void)f;
    (void)req;
    (void)r;
    return ACT_SILENT;
}

static const char http_garbage[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
static const uint8_t bad_payload[] = {0,    0,    0,    6,    0xff,
                                      0xff, 0xff, 0xff, 0xff, 0xff};

static enum action h_http_garbage(struct fake *f,
                                  const Qraft__Request *req,
                                  struct reply *r)
{
    (void)req;
    if (f->n_requests == 1) {
        r->raw = (const uint8_t *)http_garbage;
        r->raw_len = sizeof http_garbage - 1;
    } else {
        r->raw = bad_payload;
        r->raw_len = sizeof bad_payload;
    }
    if (f->n_requests <= 2) {
        return ACT_RAW;
    }
    reply_published(req, r, false);
    return ACT_REPLY;
}

static enum action h_unavailable_first(struct fake *f,
                                       const Qraft__Request *req,
                                       struct reply *r)
{
    if (f->n_requests == 1) {
        r->resp.status = QRAFT__STATUS__UNAVAILABLE;
        r->resp.error = "no leader";
        return ACT_REPLY;
    }
    reply_published(req, r, false);
    return ACT_REPLY;
}

static enum action h_drop(struct fake *f,
                          const Qraft__Request *req,
                          struct reply *r)
{
    (void)f;
    (void)req;
    (void)r;
    return ACT_DROP;
}

static enum action h_get(struct fake *f,
                         const Qraft__Request *req,
                         struct reply *r)
{
    (void)f;
    if (strcmp(req->get->message_id, "msg_known") != 0) {
        r->resp.status = QRAFT__STATUS__NOT_FOUND;
        r->resp.error = "no message msg_unknown";
        return ACT_REPLY;
    }
    Qraft__Message *m = &r->message;
    qraft__message__init(m);
    m->id = "msg_known";
    m->url = "http://example.test/x";
    m->method = "PUT";
    qraft__header__init(&r->header);
    r->header.name = "X-A";
    r->header.value = "b";
    r->headers[0] = &r->header;
    m->n_headers = 1;
    m->headers = r->headers;
    m->body.data = (uint8_t *)"abc";
    m->body.len = 3;
    m->state = QRAFT__MESSAGE_STATE__RETRYING;
    m->max_retries = 3;
    m->attempts = 2;
    m->next_attempt_ms = 1700000000123;
    qraft__last_error__init(&r->last_error);
    r->last_error.category = "server_error";
    r->last_error.status = 503;
    r->last_error.message = "Service Unavailable";
    m->last_error = &r->last_error;
    for (int i = 0; i < 2; i++) {
        qraft__event__init(&r->events[i]);
        r->events[i].message_id = "msg_known";
        r->events[i].time_ms = 1700000000000 + (uint64_t)i;
        r->events[i].attempt = (uint32_t)i;
        r->event_ptrs[i] = &r->events[i];
    }
    r->events[0].state = QRAFT__MESSAGE_STATE__PENDING;
    r->events[1].state = QRAFT__MESSAGE_STATE__RETRYING;
    r->events[1].detail = "503";
    qraft__get_response__init(&r->get);
    r->get.message = m;
    r->get.n_events = 2;
    r->get.events = r->event_ptrs;
    r->resp.body_case = QRAFT__RESPONSE__BODY_GET;
    r->resp.get = &r->get;
    return ACT_REPLY;
}

static enum action h_list(struct fake *f,
                          const Qraft__Request *req,
                          struct reply *r)
{
    (void)f;
    (void)req;
    qraft__message__init(&r->message);
    r->message.id = "msg_a";
    r->message.state = QRAFT__MESSAGE_STATE__PENDING;
    r->list_ptrs[0] = &r->message;
    qraft__list_response__init(&r->list);
    r->list.n_messages = 1;
    r->list.messages = r->list_ptrs;
    r->list.cursor = "next-page";
    r->resp.body_case = QRAFT__RESPONSE__BODY_LIST;
    r->resp.list = &r->list;
    return ACT_REPLY;
}

static enum action h_bulk(struct fake *f,
                          const Qraft__Request *req,
                          struct reply *r)
{
    (void)f;
    (void)req;
    for (int i = 0; i < 2; i++) {
        qraft__item_result__init(&r->items[i]);
        r->item_ptrs[i] = &r->items[i];
    }
    /* Out of order on purpose: results are matched by id. */
    r->items[0].message_id = "msg_2";
    r->items[0].status = QRAFT__STATUS__NOT_FOUND;
    r->items[0].error = "msg_2 is not in the DLQ";
    r->items[1].message_id = "msg_1";
    qraft__bulk_response__init(&r->bulk);
    r->bulk.n_results = 2;
    r->bulk.results = r->item_ptrs;
    r->resp.body_case = QRAFT__RESPONSE__BODY_BULK;
    r->resp.bulk = &r->bulk;
    return ACT_REPLY;
}

/* The events RPC: one log entry (ERROR of attempt 2 of msg_e). */
static enum action h_events(struct fake *f,
                            const Qraft__Request *req,
                            struct reply *r)
{
    (void)f;
    (void)req;
    qraft__event__init(&r->events[0]);
    r->events[0].message_id = "msg_e";
    r->events[0].time_ms = 1700000000999;
    r->events[0].attempt = 2;
    r->events[0].detail = "HTTP 503";
    qraft__message__init(&r->message);
    r->message.url = "https://e.example/hook";
    qraft__event_entry__init(&r->entry);
    r->entry.event = &r->events[0];
    r->entry.state = QRAFT__LOG_STATE__LOG_ERROR;
    r->entry.message = &r->message;
    r->entry_ptrs[0] = &r->entry;
    qraft__events_response__init(&r->events_resp);
    r->events_resp.n_entries = 1;
    r->events_resp.entries = r->entry_ptrs;
    r->events_resp.cursor = "c2";
    r->resp.body_case = QRAFT__RESPONSE__BODY_EVENTS;
    r->resp.events = &r->events_resp;
    return ACT_REPLY;
}

/* queue_get and schedule_get: one of each. */
static enum action h_sched(struct fake *f,
                           const Qraft__Request *req,
                           struct reply *r)
{
    (void)f;
    if (req->body_case == QRAFT__REQUEST__BODY_QUEUE_GET) {
        qraft__queue__init(&r->queue);
        r->queue.name = "orders";
        r->queue.parallelism = 3;
        r->queue.paused = true;
        r->queue.waiting = 7;
        r->resp.body_case = QRAFT__RESPONSE__BODY_QUEUE;
        r->resp.queue = &r->queue;
        return ACT_REPLY;
    }
    qraft__publish_request__init(&r->schedule_request);
    r->schedule_request.url = "https://s.example/tick";
    r->schedule_request.body.data = (uint8_t *)"tick";
    r->schedule_request.body.len = 4;
    qraft__schedule__init(&r->schedule);
    r->schedule.id = "scd_1";
    r->schedule.cron = "*/5 * * * *";
    r->schedule.request = &r->schedule_request;
    r->schedule.next_slot_ms = 1700000100000;
    r->schedule_ptrs[0] = &r->schedule;
    qraft__schedule_list_response__init(&r->schedules);
    r->schedules.n_schedules = 1;
    r->schedules.schedules = r->schedule_ptrs;
    r->resp.body_case = QRAFT__RESPONSE__BODY_SCHEDULES;
    r->resp.schedules = &r->schedules;
    return ACT_REPLY;
}

static enum action h_status(struct fake *f,
                            const Qraft__Request *req,
                            struct reply *r)
{
    (void)f;
    (void)req;
    Qraft__StatusResponse *s = &r->status;
    qraft__status_response__init(s);
    s->node_id = 1;
    s->state = "leader";
    s->leader_id = 1;
    s->leader_rpc = "127.0.0.1:7100";
    s->term = 4;
    s->commit_index = 10;
    s->applied_index = 9;
    s->last_index = 11;
    r->counts[QRAFT_STATE_PENDING] = 5;
    r->counts[QRAFT_STATE_CANCELLED] = 2;
    s->n_state_counts = QRAFT_N_STATES;
    s->state_counts = r->counts;
    qraft__node_status__init(&r->node);
    r->node.id = 1;
    r->node.role = "voter";
    r->node.alive = true;
    r->node.rpc = "127.0.0.1:7100";
    r->node_ptrs[0] = &r->node;
    s->n_nodes = 1;
    s->nodes = r->node_ptrs;
    r->resp.body_case = QRAFT__RESPONSE__BODY_CLUSTER_STATUS;
    r->resp.cluster_status = s;
    return ACT_REPLY;
}

/* Loses the first cancel's answer, then refuses the repeat as a node does
 * for a message that is cancelled already. */
static enum action h_cancel_lost(struct fake *f,
                                 const Qraft__Request *req,
                                 struct reply *r)
{
    if (req->body_case == QRAFT__REQUEST__BODY_CANCEL) {
        if (f->n_requests == 1) {
            return ACT_DROP;
        }
        r->resp.status = QRAFT__STATUS__CONFLICT;
        r->resp.error = "message msg_c is already cancelled";
        return ACT_REPLY;
    }
    qraft__message__init(&r->message);
    r->message.id = "msg_c";
    r->message.state = QRAFT__MESSAGE_STATE__CANCELLED;
    qraft__get_response__init(&r->get);
    r->get.message = &r->message;
    r->resp.body_case = QRAFT__RESPONSE__BODY_GET;
    r->resp.get = &r->get;
    return ACT_REPLY;
}

static enum action h_conflict(struct fake *f,
                              const Qraft__Request *req,
                              struct reply *r)
{
    (void)f;
    (void)req;
    r->resp.status = QRAFT__STATUS__CONFLICT;
    r->resp.error = "message msg_c is already delivered";
    return ACT_REPLY;
}

/* ----------------------------------------------------------------------
 * Tests */

static void test_publish_returns_id(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_publish_ok);
    struct qraft_client *c = client_for_fake(&f);
    struct qraft_header h = {"Content-Type", "text/plain"};
    struct qraft_publish p = simple_publish;
    p.headers = &h;
    p.n_headers = 1;
    p.has_retries = true;
    p.retries = 0;
    p.delay_ms = 3600000;
    char id[QRAFT_ID_MAX];
    bool dedup = true;
    assert_int_equal(qraft_publish(c, &p, id, &dedup), 0);
    assert_string_equal(id, "msg_000000000000000000000001");
    assert_false(dedup);

    pthread_mutex_lock(&f.mu);
    assert_int_equal(f.n_requests, 1);
    const Qraft__Request *req = f.last;
    assert_string_equal(req->token, "secret");
    assert_int_equal(req->body_case, QRAFT__REQUEST__BODY_PUBLISH);
    const Qraft__PublishRequest *pr = req->publish;
    assert_string_equal(pr->url, "http://127.0.0.1:9/hook");
    assert_int_equal(pr->body.len, 5);
    assert_memory_equal(pr->body.data, "hello", 5);
    assert_int_equal(pr->n_headers, 1);
    assert_string_equal(pr->headers[0]->name, "Content-Type");
    assert_int_equal(pr->delay_ms, 3600000);
    /* "retries 0" is sent as present, unlike "server default". */
    assert_true(pr->retries_set);
    assert_int_equal(pr->retries, 0);
    assert_int_equal(strlen(pr->idempotency_key), 32);
    assert_int_equal(strspn(pr->idempotency_key, "0123456789abcdef"), 32);
    pthread_mutex_unlock(&f.mu);

    /* A second publish draws a different key, one that sorts after the
     * first (the time in ms leads it: the server's dedup index grows at
     * its end). */
    char id2[QRAFT_ID_MAX];
    assert_int_equal(qraft_publish(c, &simple_publish, id2, NULL), 0);
    pthread_mutex_lock(&f.mu);
    assert_string_not_equal(f.keys[0], f.keys[1]);
    assert_true(strncmp(f.keys[0], f.keys[1], 12) <= 0);
    char lead[13];
    memcpy(lead, f.keys[1], 12);
    lead[12] = '\0';
    uint64_t key_ms = strtoull(lead, NULL, 16);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t now_ms = (uint64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    assert_true(key_ms <= now_ms && key_ms + 60000 > now_ms);
    assert_false(f.last->publish->retries_set);
    assert_int_equal(f.n_connections, 1);
    pthread_mutex_unlock(&f.mu);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_follows_not_leader(void **state)
{
    (void)state;
    struct fake leader;
    struct fake follower;
    fake_start(&leader, h_publish_ok);
    fake_start(&follower, h_not_leader);
    char leader_ep[64];
    endpoint_of(&leader, leader_ep, sizeof leader_ep);
    follower.leader_rpc = leader_ep;
    struct qraft_client *c = client_for_fake(&follower);
    char id[QRAFT_ID_MAX];
    assert_int_equal(qraft_publish(c, &simple_publish, id, NULL), 0);
    assert_int_equal(fake_requests(&follower), 1);
    assert_int_equal(fake_requests(&leader), 1);
    /* The client stays with the leader. */
    assert_int_equal(qraft_publish(c, &simple_publish, id, NULL), 0);
    assert_int_equal(fake_requests(&follower), 1);
    assert_int_equal(fake_requests(&leader), 2);
    qraft_client_free(c);
    fake_stop(&follower);
    fake_stop(&leader);
}

static void test_retry_after_drop_keeps_key(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_drop_first);
    struct qraft_client *c = client_for_fake(&f);
    char id[QRAFT_ID_MAX];
    bool dedup = true;
    assert_int_equal(qraft_publish(c, &simple_publish, id, &dedup), 0);
    /* The match was this call's own first attempt. */
    assert_false(dedup);
    pthread_mutex_lock(&f.mu);
    assert_int_equal(f.n_requests, 2);
    assert_int_equal(f.n_connections, 2);
    assert_int_equal(strlen(f.keys[0]), 32);
    assert_string_equal(f.keys[0], f.keys[1]);
    pthread_mutex_unlock(&f.mu);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_dedup_id_without_key(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_publish_ok);
    struct qraft_client *c = client_for_fake(&f);
    struct qraft_publish p = simple_publish;
    p.dedup_id = "order-17";
    char id[QRAFT_ID_MAX];
    assert_int_equal(qraft_publish(c, &p, id, NULL), 0);
    pthread_mutex_lock(&f.mu);
    assert_string_equal(f.last->publish->dedup_id, "order-17");
    assert_string_equal(f.last->publish->idempotency_key, "");
    pthread_mutex_unlock(&f.mu);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_unauthorized(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_unauthorized);
    struct qraft_client *c = client_for_fake(&f);
    char id[QRAFT_ID_MAX];
    assert_int_equal(qraft_publish(c, &simple_publish, id, NULL),
                     QRAFT_EUNAUTHORIZED);
    assert_string_equal(qraft_client_errmsg(c), "wrong token");
    assert_int_equal(fake_requests(&f), 1);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_server_message_kept(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_too_large);
    struct qraft_client *c = client_for_fake(&f);
    char id[QRAFT_ID_MAX];
    assert_int_equal(qraft_publish(c, &simple_publish, id, NULL),
                     QRAFT_ETOOLARGE);
    assert_string_equal(qraft_client_errmsg(c),
                        "body is 2097152 bytes; the limit is 1048576");
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_timeout_when_silent(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_silent);
    char ep[64];
    endpoint_of(&f, ep, sizeof ep);
    struct qraft_options o = {.call_timeout_ms = 300};
    struct qraft_client *c = client_for(ep, &o);
    int64_t t0 = mono_ms();
    char id[QRAFT_ID_MAX];
    assert_int_equal(qraft_publish(c, &simple_publish, id, NULL),
                     QRAFT_ETIMEDOUT);
    int64_t took = mono_ms() - t0;
    assert_true(took >= 250);
    assert_true(took < 3000);
    assert_int_equal(fake_requests(&f), 1);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_garbage_is_an_error(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_http_garbage);
    struct qraft_client *c = client_for_fake(&f);
    char id[QRAFT_ID_MAX];
    /* An HTTP answer announces a huge frame. */
    assert_int_equal(qraft_publish(c, &simple_publish, id, NULL), QRAFT_EPROTO);
    assert_non_null(strstr(qraft_client_errmsg(c), "frame"));
    /* A frame whose payload does not parse. */
    assert_int_equal(qraft_publish(c, &simple_publish, id, NULL), QRAFT_EPROTO);
    assert_non_null(strstr(qraft_client_errmsg(c), "does not parse"));
    /* The handle recovers on a new connection. */
    assert_int_equal(qraft_publish(c, &simple_publish, id, NULL), 0);
    pthread_mutex_lock(&f.mu);
    assert_int_equal(f.n_requests, 3);
    assert_int_equal(f.n_connections, 3);
    pthread_mutex_unlock(&f.mu);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_next_endpoint_when_refused(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_publish_ok);
    char eps[128];
    snprintf(eps, sizeof eps, "127.0.0.1:%d, 127.0.0.1:%d", dead_port(),
             f.port);
    struct qraft_client *c = client_for(eps, NULL);
    char id[QRAFT_ID_MAX];
    assert_int_equal(qraft_publish(c, &simple_publish, id, NULL), 0);
    assert_int_equal(fake_requests(&f), 1);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_nothing_reachable(void **state)
{
    (void)state;
    char eps[64];
    snprintf(eps, sizeof eps, "127.0.0.1:%d", dead_port());
    struct qraft_options o = {
        .call_timeout_ms = 200, .backoff_initial_ms = 5, .backoff_max_ms = 20};
    struct qraft_client *c = client_for(eps, &o);
    char id[QRAFT_ID_MAX];
    assert_int_equal(qraft_publish(c, &simple_publish, id, NULL),
                     QRAFT_ECONNECT);
    assert_non_null(strstr(qraft_client_errmsg(c), "cannot connect"));
    qraft_client_free(c);
}

static void test_unavailable_is_retried(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_unavailable_first);
    struct qraft_client *c = client_for_fake(&f);
    char id[QRAFT_ID_MAX];
    assert_int_equal(qraft_publish(c, &simple_publish, id, NULL), 0);
    pthread_mutex_lock(&f.mu);
    assert_int_equal(f.n_requests, 2);
    assert_string_equal(f.keys[0], f.keys[1]);
    pthread_mutex_unlock(&f.mu);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_replay_not_repeated_when_ambiguous(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_drop);
    struct qraft_client *c = client_for_fake(&f);
    const char *ids[] = {"msg_1"};
    struct qraft_item_result res[1];
    assert_int_equal(qraft_dlq_replay(c, ids, 1, res), QRAFT_EUNKNOWN);
    assert_int_equal(fake_requests(&f), 1);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_cancel_after_lost_answer(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_cancel_lost);
    struct qraft_client *c = client_for_fake(&f);
    assert_int_equal(qraft_cancel(c, "msg_c"), 0);
    pthread_mutex_lock(&f.mu);
    assert_int_equal(f.n_requests, 3); /* cancel, cancel, get */
    assert_int_equal(f.last->body_case, QRAFT__REQUEST__BODY_GET);
    pthread_mutex_unlock(&f.mu);
    qraft_client_free(c);
    fake_stop(&f);

    /* Without a lost answer, a conflict is the caller's to see. */
    fake_start(&f, h_conflict);
    c = client_for_fake(&f);
    assert_int_equal(qraft_cancel(c, "msg_c"), QRAFT_ECONFLICT);
    assert_string_equal(qraft_client_errmsg(c),
                        "message msg_c is already delivered");
    assert_int_equal(fake_requests(&f), 1);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_get_message(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_get);
    struct qraft_client *c = client_for_fake(&f);
    struct qraft_message *m = NULL;
    assert_int_equal(qraft_get(c, "msg_known", &m), 0);
    assert_string_equal(m->id, "msg_known");
    assert_string_equal(m->method, "PUT");
    assert_int_equal(m->state, QRAFT_STATE_RETRYING);
    assert_string_equal(qraft_state_name(m->state), "retrying");
    assert_int_equal(m->attempts, 2);
    assert_int_equal(m->next_attempt_ms, 1700000000123);
    assert_string_equal(m->last_error.category, "server_error");
    assert_int_equal(m->last_error.status, 503);
    assert_int_equal(m->n_headers, 1);
    assert_string_equal(m->headers[0].name, "X-A");
    assert_int_equal(m->body_len, 3);
    assert_memory_equal(m->body, "abc", 3);
    assert_string_equal(m->queue, "");
    assert_int_equal(m->n_events, 2);
    assert_int_equal(m->events[1].state, QRAFT_STATE_RETRYING);
    assert_string_equal(m->events[1].detail, "503");
    qraft_message_free(m);

    m = NULL;
    assert_int_equal(qraft_get(c, "msg_unknown", &m), QRAFT_ENOTFOUND);
    assert_null(m);
    assert_string_equal(qraft_client_errmsg(c), "no message msg_unknown");
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_list(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_list);
    struct qraft_client *c = client_for_fake(&f);
    struct qraft_message_list *l = NULL;
    assert_int_equal(qraft_list(c, QRAFT_STATE_PENDING, "page-1", 50, &l), 0);
    assert_int_equal(l->n_messages, 1);
    assert_string_equal(l->messages[0].id, "msg_a");
    assert_string_equal(l->cursor, "next-page");
    pthread_mutex_lock(&f.mu);
    assert_int_equal(f.last->list->state, QRAFT__MESSAGE_STATE__PENDING);
    assert_string_equal(f.last->list->cursor, "page-1");
    assert_int_equal(f.last->list->limit, 50);
    pthread_mutex_unlock(&f.mu);
    qraft_message_list_free(l);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_bulk_results(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_bulk);
    struct qraft_client *c = client_for_fake(&f);
    const char *ids[] = {"msg_1", "msg_2"};
    struct qraft_item_result res[2];
    assert_int_equal(qraft_dlq_delete(c, ids, 2, res), 0);
    assert_int_equal(res[0].rc, 0);
    assert_int_equal(res[1].rc, QRAFT_ENOTFOUND);
    assert_string_equal(res[1].error, "msg_2 is not in the DLQ");
    pthread_mutex_lock(&f.mu);
    assert_int_equal(f.last->body_case, QRAFT__REQUEST__BODY_DLQ_DELETE);
    assert_int_equal(f.last->dlq_delete->n_message_ids, 2);
    pthread_mutex_unlock(&f.mu);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_status(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_status);
    struct qraft_client *c = client_for_fake(&f);
    struct qraft_status *s = NULL;
    assert_int_equal(qraft_status(c, &s), 0);
    assert_string_equal(s->state, "leader");
    assert_int_equal(s->term, 4);
    assert_int_equal(s->last_index, 11);
    assert_int_equal(s->state_counts[QRAFT_STATE_PENDING], 5);
    assert_int_equal(s->state_counts[QRAFT_STATE_CANCELLED], 2);
    assert_int_equal(s->n_nodes, 1);
    assert_string_equal(s->nodes[0].role, "voter");
    assert_true(s->nodes[0].alive);
    assert_string_equal(s->nodes[0].raft, "");
    qraft_status_free(s);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_logs_filter_and_entries(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_events);
    struct qraft_client *c = client_for_fake(&f);
    struct qraft_filter flt = {.url = "https://e.example/hook",
                               .queue = "orders",
                               .response_status = 503,
                               .from_ms = 1000};
    const char *states[] = {"error", "FAILED"};
    struct qraft_log_page *p = NULL;
    assert_int_equal(qraft_logs(c, &flt, states, 2, "c1", 10, true, &p), 0);
    assert_int_equal(p->n_entries, 1);
    assert_string_equal(p->entries[0].message_id, "msg_e");
    assert_string_equal(p->entries[0].state, "ERROR");
    assert_int_equal(p->entries[0].attempt, 2);
    assert_string_equal(p->entries[0].url, "https://e.example/hook");
    assert_string_equal(p->cursor, "c2");
    pthread_mutex_lock(&f.mu);
    const Qraft__EventsRequest *ev = f.last->events;
    assert_int_equal(ev->n_states, 2);
    assert_int_equal(ev->states[0], QRAFT__LOG_STATE__LOG_ERROR);
    assert_int_equal(ev->states[1], QRAFT__LOG_STATE__LOG_FAILED);
    assert_string_equal(ev->cursor, "c1");
    assert_true(ev->oldest_first);
    assert_int_equal(ev->filter->n_urls, 1);
    assert_string_equal(ev->filter->urls[0], "https://e.example/hook");
    assert_int_equal(ev->filter->n_queue_names, 1);
    assert_int_equal(ev->filter->n_hosts, 0);
    assert_int_equal(ev->filter->response_statuses[0], 503);
    assert_int_equal(ev->filter->from_ms, 1000);
    pthread_mutex_unlock(&f.mu);
    qraft_log_page_free(p);

    /* An unknown state never reaches the node; nor does an empty cancel. */
    const char *bad[] = {"LOST"};
    assert_int_equal(qraft_logs(c, NULL, bad, 1, NULL, 0, false, &p),
                     QRAFT_EINVAL);
    struct qraft_bulk *b = NULL;
    struct qraft_filter none = {0};
    assert_int_equal(qraft_cancel_matching(c, &none, 0, &b), QRAFT_EINVAL);
    assert_int_equal(fake_requests(&f), 1);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_queue_and_schedule_reads(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_sched);
    struct qraft_client *c = client_for_fake(&f);
    struct qraft_queue *q = NULL;
    assert_int_equal(qraft_queue_get(c, "orders", &q), 0);
    assert_string_equal(q->name, "orders");
    assert_int_equal(q->parallelism, 3);
    assert_true(q->paused);
    assert_int_equal(q->waiting, 7);
    qraft_queues_free(q, 1);
    struct qraft_schedule *s = NULL;
    assert_int_equal(qraft_schedule_get(c, "scd_1", &s), 0);
    assert_string_equal(s->id, "scd_1");
    assert_string_equal(s->url, "https://s.example/tick");
    assert_string_equal(s->method, "POST");
    assert_int_equal(s->body_len, 4);
    assert_memory_equal(s->body, "tick", 4);
    assert_int_equal(s->next_slot_ms, 1700000100000);
    qraft_schedules_free(s, 1);
    pthread_mutex_lock(&f.mu);
    assert_string_equal(f.last->schedule_get->schedule_id, "scd_1");
    pthread_mutex_unlock(&f.mu);
    assert_int_equal(qraft_queue_get(c, "", &q), QRAFT_EINVAL);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_pipelined_publishes(void **state)
{
    (void)state;
    enum { N = 50 };
    struct fake f;
    fake_start(&f, h_publish_ok);
    struct qraft_client *c = client_for_fake(&f);
    uint64_t tickets[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(qraft_publish_send(c, &simple_publish, &tickets[i]),
                         0);
    }
    assert_int_equal(qraft_publish_outstanding(c), N);
    /* Blocking calls wait until the pipeline is drained. */
    char id[QRAFT_ID_MAX];
    assert_int_equal(qraft_publish(c, &simple_publish, id, NULL), QRAFT_EINVAL);
    bool seen[N] = {false};
    for (int i = 0; i < N; i++) {
        struct qraft_publish_reply r;
        assert_int_equal(qraft_publish_recv(c, 5000, &r), 0);
        assert_int_equal(r.rc, 0);
        int k = 0;
        while (k < N && tickets[k] != r.ticket) {
            k++;
        }
        assert_true(k < N);
        assert_false(seen[k]);
        seen[k] = true;
        char want[QRAFT_ID_MAX];
        snprintf(want, sizeof want, "msg_%024" PRIu64, r.ticket);
        assert_string_equal(r.id, want);
        assert_int_equal(strlen(r.idempotency_key), 32);
    }
    assert_int_equal(qraft_publish_outstanding(c), 0);
    struct qraft_publish_reply r;
    assert_int_equal(qraft_publish_recv(c, 0, &r), QRAFT_EINVAL);
    assert_int_equal(fake_requests(&f), N);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_pipeline_lost_connection(void **state)
{
    (void)state;
    struct fake f;
    fake_start(&f, h_drop);
    struct qraft_client *c = client_for_fake(&f);
    uint64_t t;
    assert_int_equal(qraft_publish_send(c, &simple_publish, &t), 0);
    struct qraft_publish_reply r;
    assert_int_equal(qraft_publish_recv(c, 5000, &r), 0);
    assert_int_equal(r.ticket, t);
    assert_int_equal(r.rc, QRAFT_EUNKNOWN);
    assert_int_equal(qraft_publish_outstanding(c), 0);
    qraft_client_free(c);
    fake_stop(&f);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    struct qraft_client *c = NULL;
    assert_int_equal(qraft_client_new("localhost", NULL, NULL, &c),
                     QRAFT_EINVAL);
    assert_int_equal(qraft_client_new("h:1,", NULL, NULL, &c), QRAFT_EINVAL);
    assert_int_equal(qraft_client_new("h:70000", NULL, NULL, &c), QRAFT_EINVAL);
    assert_int_equal(qraft_client_new("[::1]:7100,a:1", NULL, NULL, &c), 0);
    char id[QRAFT_ID_MAX];
    struct qraft_publish p = {.url = NULL};
    assert_int_equal(qraft_publish(c, &p, id, NULL), QRAFT_EINVAL);
    assert_non_null(strstr(qraft_client_errmsg(c), "url"));
    /* Larger than a frame: refused before anything is sent. */
    p.url = "http://x/";
    p.body_len = QR_FRAME_DEFAULT_MAX_BYTES + 1;
    p.body = calloc(1, p.body_len);
    assert_non_null(p.body);
    assert_int_equal(qraft_publish(c, &p, id, NULL), QRAFT_ETOOLARGE);
    free((void *)p.body);
    qraft_client_free(c);

    enum qraft_state st;
    assert_int_equal(qraft_state_parse("dead_lettered", &st), 0);
    assert_int_equal(st, QRAFT_STATE_DEAD_LETTERED);
    assert_int_equal(qraft_state_parse("dead", &st), QRAFT_EINVAL);
    assert_string_equal(qraft_strerror(QRAFT_ENOTFOUND), "not found");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publish_returns_id),
        cmocka_unit_test(test_follows_not_leader),
        cmocka_unit_test(test_retry_after_drop_keeps_key),
        cmocka_unit_test(test_dedup_id_without_key),
        cmocka_unit_test(test_unauthorized),
        cmocka_unit_test(test_server_message_kept),
        cmocka_unit_test(test_timeout_when_silent),
        cmocka_unit_test(test_garbage_is_an_error),
        cmocka_unit_test(test_next_endpoint_when_refused),
        cmocka_unit_test(test_nothing_reachable),
        cmocka_unit_test(test_unavailable_is_retried),
        cmocka_unit_test(test_replay_not_repeated_when_ambiguous),
        cmocka_unit_test(test_cancel_after_lost_answer),
        cmocka_unit_test(test_get_message),
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_bulk_results),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_logs_filter_and_entries),
        cmocka_unit_test(test_queue_and_schedule_reads),
        cmocka_unit_test(test_pipelined_publishes),
        cmocka_unit_test(test_pipeline_lost_connection),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
