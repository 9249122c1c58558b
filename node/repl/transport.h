/* The transports raft talks over. Without mutual TLS configured, the stock
 * TCP transport with TCP_NODELAY set on every connection: it forwards to
 * raft's and sets the option on every stream it hands to raft (raft-notes
 * rule 4: without it Nagle and delayed ACKs hold small entries back). With
 * --tls-cert, --tls-key and --tls-ca, raft's messages go over mutual TLS
 * (transport_tls.c): both sides present a certificate from the cluster CA
 * bound to their node id ("qraft:node:<id>"), and a connection whose
 * certificate does not name the node raft expects, or claims, never
 * reaches raft. struct qr_transport picks one. */
#ifndef QR_TRANSPORT_H
#define QR_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>
#include <sys/queue.h>
#include <uv.h>

#include "config.h"
#include "lib/tls_ctx.h"

/* The TCP transport with TCP_NODELAY set on every connection: the stock one
 * never sets it, and Nagle plus delayed ACKs hold small entries back. */
struct qr_nodelay_transport {
    struct raft_uv_transport outer; /* handed to raft_uv_init; its data
                                       field belongs to raft's uv I/O */
    struct raft_uv_transport inner; /* the stock TCP transport */
    raft_uv_accept_cb accept_cb;
    raft_uv_transport_close_cb close_cb;
    const char *address; /* this node's raft address (borrowed from raft) */
    /* where it listens instead (--raft-bind, borrowed), or NULL */
    const char *bind_address;
    /* Set when listening failed; outer.errmsg then names the address and
     * the cause (libraft returns only RAFT_IOERR, with no message). */
    bool listen_failed;
};

/* Initialises n on loop: hand &n->outer to raft_uv_init. Returns 0 or a
 * raft error code. */
int qr_nodelay_transport_init(struct qr_nodelay_transport *n, uv_loop_t *loop);

struct tls_link;

#define QR_TLS_TRANSPORT_CAUSES 8

/* The transport over mutual TLS (transport_tls.c). */
struct qr_tls_transport {
    struct raft_uv_transport outer; /* handed to raft_uv_init */
    uv_loop_t *loop;
    raft_id id;
    const char *address; /* this node's raft address (borrowed from raft) */
    /* where it listens instead (--raft-bind, borrowed), or NULL */
    const char *bind_address;
    SSL_CTX *server_ctx; /* owned: asks for and verifies a certificate */
    SSL_CTX *client_ctx; /* owned: presents ours, verifies theirs */
    uint64_t handshake_timeout_ms;
    uv_tcp_t listener;
    bool listener_open;
    bool listen_failed; /* outer.errmsg says where and why */
    bool closing;
    raft_uv_accept_cb accept_cb;
    raft_uv_transport_close_cb close_cb;
    LIST_HEAD(, tls_link) links; /* every connection, until freed */
    unsigned n_handshaking;      /* incoming ones not handed to raft yet */
    uint64_t n_refused;          /* connections refused (certificate, id) */
    /* The last few causes of refusal, each logged at most every 5 s. */
    struct qr_tls_refusal {
        uint64_t key; /* hash of the cause's text */
        uint64_t warned_mono_ms;
        uint64_t n_unlogged;
    } refusals[QR_TLS_TRANSPORT_CAUSES];
};

/* Initialises t on loop with contexts from files (cert, key and CA all
 * needed): hand &t->outer to raft_uv_init. Returns 0, or -1 with err
 * naming the file and OpenSSL's words. */
int qr_tls_transport_init(struct qr_tls_transport *t,
                          uv_loop_t *loop,
                          const struct qr_tls_files *files,
                          uint64_t handshake_timeout_ms,
                          char *err,
                          size_t err_len);

/* New contexts from files for the connections to come (SIGHUP); on
 * failure (-1, err set) the ones in use stay. */
int qr_tls_transport_reload(struct qr_tls_transport *t,
                            const struct qr_tls_files *files,
                            char *err,
                            size_t err_len);

/* Frees the contexts, once raft closed the transport (or never used it). */
void qr_tls_transport_free(struct qr_tls_transport *t);

/* The node's raft transport: plain (with TCP_NODELAY) or mutual TLS. */
struct qr_transport {
    struct qr_nodelay_transport plain;
    struct qr_tls_transport tls;
    bool use_tls;
};

/* Picks and initialises the transport for cfg (mutual TLS when cfg has a
 * certificate, key and CA), listening on cfg's --raft-bind when given
 * (cfg must outlive t). Returns 0, or nonzero with errmsg set. */
int qr_transport_init(struct qr_transport *t,
                      uv_loop_t *loop,
                      const struct qr_config *cfg,
                      char *errmsg,
                      size_t len);

/* What to hand raft_uv_init. */
struct raft_uv_transport *qr_transport_raft(struct qr_transport *t);

/* Why listening failed (names the address), or NULL when it did not. */
const char *qr_transport_listen_error(const struct qr_transport *t);

/* SIGHUP: the TLS transport's contexts from cfg's files again (0 without
 * TLS); -1 with err set keeps the ones in use. */
int qr_transport_reload_tls(struct qr_transport *t,
                            const struct qr_config *cfg,
                            char *err,
                            size_t err_len);

/* Connections the TLS transport refused (0 without TLS). */
uint64_t qr_transport_refused(const struct qr_transport *t);

/* Frees what init allocated, after raft closed the transport. */
void qr_transport_free(struct qr_transport *t);

#endif /* QR_TRANSPORT_H */
