/* The TCP transport raft talks over, with TCP_NODELAY set on every
 * connection: it forwards to the stock TCP transport and sets the option on
 * every stream it hands to raft (raft-notes rule 4: without it Nagle and
 * delayed ACKs hold small entries back). */
#ifndef QR_TRANSPORT_H
#define QR_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>
#include <stdbool.h>
#include <uv.h>

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

#endif /* QR_TRANSPORT_H */
