#include "repl/transport.h"

#include <stdlib.h>
#include <string.h>

#include "lib/addr.h"
#include "lib/logger.h"

struct nodelay_connect {
    struct raft_uv_connect inner;
    struct raft_uv_connect *outer;
};

static void set_nodelay(struct uv_stream_s *stream)
{
    int rv = uv_tcp_nodelay((uv_tcp_t *)stream, 1);
    if (rv != 0) {
        QR_WARN("cluster", "TCP_NODELAY: %s", uv_strerror(rv));
    }
}

static int nodelay_init(struct raft_uv_transport *t,
                        raft_id id,
                        const char *address)
{
    struct qr_nodelay_transport *n = t->impl;
    int rv = n->inner.init(&n->inner, id, address);
    n->address = address;
    if (rv != 0) {
        snprintf(t->errmsg, sizeof t->errmsg, "%s", n->inner.errmsg);
    }
    return rv;
}

static void on_nodelay_accept(struct raft_uv_transport *inner,
                              raft_id id,
                              const char *address,
                              struct uv_stream_s *stream)
{
    struct qr_nodelay_transport *n = inner->data;
    set_nodelay(stream);
    n->accept_cb(&n->outer, id, address, stream);
}

static int nodelay_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
    struct qr_nodelay_transport *n = t->impl;
    n->accept_cb = cb;
    int rv = n->inner.listen(&n->inner, on_nodelay_accept);
    if (rv != 0) {
        /* The stock transport says neither where nor why: look. */
        const char *where =
            n->bind_address != NULL ? n->bind_address : n->address;
        int why = qr_addr_probe_listen(where);
        n->listen_failed = true;
        if (why != 0) {
            snprintf(t->errmsg, sizeof t->errmsg, "raft listen on %s: %s",
                     where, uv_strerror(why));
        } else {
            snprintf(t->errmsg, sizeof t->errmsg, "raft listen on %s: %s%s%s",
                     where, raft_strerror(rv),
                     n->inner.errmsg[0] != '\0' ? ": " : "", n->inner.errmsg);
        }
    }
    return rv;
}

static void on_nodelay_connect(struct raft_uv_connect *req,
                               struct uv_stream_s *stream,
                               int status)
{
    struct nodelay_connect *nc = req->data;
    struct raft_uv_connect *outer = nc->outer;
    free(nc);
    if (status == 0) {
        set_nodelay(stream);
    }
    outer->cb(outer, stream, status);
}

static int nodelay_connect(struct raft_uv_transport *t,
                           struct raft_uv_connect *req,
                           raft_id id,
                           const char *address,
                           raft_uv_connect_cb cb)
{
    struct qr_nodelay_transport *n = t->impl;
    struct nodelay_connect *nc = malloc(sizeof *nc);
    if (nc == NULL) {
        return RAFT_NOMEM;
    }
    req->cb = cb;
    nc->outer = req;
    nc->inner.data = nc;
    int rv = n->inner.connect(&n->inner, &nc->inner, id, address,
                              on_nodelay_connect);
    if (rv != 0) {
        free(nc);
    }
    return rv;
}

static void on_nodelay_inner_close(struct raft_uv_transport *inner)
{
    struct qr_nodelay_transport *n = inner->data;
    n->close_cb(&n->outer);
}

static void nodelay_close(struct raft_uv_transport *t,
                          raft_uv_transport_close_cb cb)
{
    struct qr_nodelay_transport *n = t->impl;
    n->close_cb = cb;
    n->inner.close(&n->inner, on_nodelay_inner_close);
}

int qr_nodelay_transport_init(struct qr_nodelay_transport *n, uv_loop_t *loop)
{
    memset(n, 0, sizeof *n);
    n->inner.version = 1; /* else RAFT_INVALID "Invalid version" */
    int rv = raft_uv_tcp_init(&n->inner, loop);
    if (rv != 0) {
        return rv;
    }
    n->inner.data = n;
    n->outer.version = 1;
    n->outer.impl = n;
    n->outer.init = nodelay_init;
    n->outer.listen = nodelay_listen;
    n->outer.connect = nodelay_connect;
    n->outer.close = nodelay_close;
    return 0;
}

static struct qr_tls_files tls_files_of(const struct qr_config *cfg)
{
    struct qr_tls_files f = {cfg->tls_cert, cfg->tls_key, cfg->tls_ca};
    return f;
}

int qr_transport_init(struct qr_transport *t,
                      uv_loop_t *loop,
                      const struct qr_config *cfg,
                      char *errmsg,
                      size_t len)
{
    memset(t, 0, sizeof *t);
    struct qr_tls_files files = tls_files_of(cfg);
    if (qr_tls_mutual(&files)) {
        char why[256];
        if (qr_tls_transport_init(&t->tls, loop, &files,
                                  cfg->tls_handshake_timeout_ms, why,
                                  sizeof why) != 0) {
            snprintf(errmsg, len, "raft transport: TLS: %s", why);
            return RAFT_INVALID;
        }
        t->use_tls = true;
        if (cfg->raft_bind_addr[0] != '\0') {
            t->tls.bind_address = cfg->raft_bind_addr;
        }
        return 0;
    }
    int rv = qr_nodelay_transport_init(&t->plain, loop);
    if (rv != 0) {
        snprintf(errmsg, len, "raft transport: %s", raft_strerror(rv));
        return rv;
    }
    if (cfg->raft_bind_addr[0] != '\0') {
        t->plain.bind_address = cfg->raft_bind_addr;
        rv = raft_uv_tcp_set_bind_address(&t->plain.inner, cfg->raft_bind_addr);
        if (rv != 0) {
            snprintf(errmsg, len, "--raft-bind %s: %s", cfg->raft_bind_addr,
                     raft_strerror(rv));
            qr_transport_free(t);
        }
    }
    return rv;
}

struct raft_uv_transport *qr_transport_raft(struct qr_transport *t)
{
    return t->use_tls ? &t->tls.outer : &t->plain.outer;
}

const char *qr_transport_listen_error(const struct qr_transport *t)
{
    if (t->use_tls) {
        return t->tls.listen_failed ? t->tls.outer.errmsg : NULL;
    }
    return t->plain.listen_failed ? t->plain.outer.errmsg : NULL;
}

int qr_transport_reload_tls(struct qr_transport *t,
                            const struct qr_config *cfg,
                            char *err,
                            size_t err_len)
{
    if (!t->use_tls) {
        return 0;
    }
    struct qr_tls_files files = tls_files_of(cfg);
    return qr_tls_transport_reload(&t->tls, &files, err, err_len);
}

uint64_t qr_transport_refused(const struct qr_transport *t)
{
    return t->use_tls ? t->tls.n_refused : 0;
}

void qr_transport_free(struct qr_transport *t)
{
    if (t->use_tls) {
        qr_tls_transport_free(&t->tls);
    } else {
        raft_uv_tcp_close(&t->plain.inner);
    }
}
