/* URL groups: changes go through raft like any command; reads come from
 * this node's store. */
#include "ops/ops_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "repl/check.h"
#include "repl/command.h"

int qr_ops_load_group(struct qr_ops *ops,
                      const char *name,
                      Qraft__UrlGroup **out)
{
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_group_get(txn, name, out);
        qr_store_txn_abort(txn);
    }
    return rv;
}

void qr_op_group_change(struct qr_op *op, const Qraft__Request *req)
{
    const Qraft__GroupChangeRequest *gc = req->group_change;
    const struct qr_limits *l = &op->ops->config->limits;
    char err[256];
    int rv = qr_command_check_group_change(gc, l, err, sizeof err);
    if (rv == 0) {
        rv = qr_ops_check_group_destinations(op->ops, gc, err, sizeof err);
    }
    if (rv != 0) {
        qr_op_error(op, req->id, qr_op_status_of(rv), "%s", err);
        return;
    }
    Qraft__GroupAddEndpoints add = QRAFT__GROUP_ADD_ENDPOINTS__INIT;
    Qraft__GroupRemoveEndpoints remove = QRAFT__GROUP_REMOVE_ENDPOINTS__INIT;
    Qraft__GroupDelete del = QRAFT__GROUP_DELETE__INIT;
    Qraft__Command cmd;
    switch (gc->kind) {
        case QRAFT__GROUP_CHANGE_KIND__GROUP_ADD_ENDPOINTS:
            add.group = gc->name;
            add.n_endpoints = gc->n_endpoints;
            add.endpoints = gc->endpoints;
            add.max_endpoints = l->max_group_endpoints;
            qr_command_init_one(&cmd, QRAFT__COMMAND__BODY_GROUP_ADD_ENDPOINTS,
                                &add.base);
            break;
        case QRAFT__GROUP_CHANGE_KIND__GROUP_REMOVE_ENDPOINTS:
            remove.group = gc->name;
            remove.n_endpoints = gc->n_endpoints;
            remove.endpoints = gc->endpoints;
            qr_command_init_one(&cmd,
                                QRAFT__COMMAND__BODY_GROUP_REMOVE_ENDPOINTS,
                                &remove.base);
            break;
        default:
            del.group = gc->name;
            qr_command_init_one(&cmd, QRAFT__COMMAND__BODY_GROUP_DELETE,
                                &del.base);
            break;
    }
    qr_op_propose_ok(op, req, &cmd);
}

void qr_op_group_get(struct qr_op *op, const Qraft__Request *req)
{
    Qraft__UrlGroup *g = NULL;
    int rv = qr_ops_load_group(op->ops, req->group_get->name, &g);
    if (rv == QR_ENOTFOUND || rv == QR_EBADREQ) {
        qr_op_error(op, req->id, QRAFT__STATUS__NOT_FOUND,
                    "url group '%.64s' not found", req->group_get->name);
        return;
    }
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
        return;
    }
    QR_OP_REPLY_BODY(op, req->id, GROUP, group, g);
    qraft__url_group__free_unpacked(g, NULL);
}

static int collect_group(void *arg, const Qraft__UrlGroup *g)
{
    return qr_pb_list_add(arg, &g->base);
}

void qr_op_group_list(struct qr_op *op, const Qraft__Request *req)
{
    struct qr_pb_list l = {0};
    struct qr_store_txn *txn = NULL;
    int rv = qr_store_txn_begin(op->ops->store, false, &txn);
    if (rv == 0) {
        rv = qr_store_group_list(txn, collect_group, &l);
        qr_store_txn_abort(txn);
    }
    rv = qr_pb_list_status(&l, rv);
    if (rv != 0) {
        qr_op_store_error(op, req->id, rv);
    } else {
        Qraft__GroupListResponse gl = QRAFT__GROUP_LIST_RESPONSE__INIT;
        gl.n_groups = l.n;
        gl.groups = (Qraft__UrlGroup **)l.items;
        QR_OP_REPLY_BODY(op, req->id, GROUP_LIST, group_list, &gl);
    }
    qr_pb_list_free(&l);
}
