/* The one table of what each face's request needs: the scope (lib/tokens.h)
 * of every REST route and method (by the route table's pattern, rest.c) and
 * of every RPC request kind (by its field in Request.body, qraft.proto).
 * docs/api.md shows it; `qraftd --print-scopes` prints it as the node
 * enforces it, read from the route table and the protocol itself.
 *
 * Invariants: every REST route method and every RPC kind has exactly one
 * row (rest.c and rpc.c assert it when they start); a row's scope is one
 * bit, QR_SCOPE_PEER (node to node only), or 0 (no token: workflow hooks). */
#ifndef QR_SCOPES_H
#define QR_SCOPES_H

#include <stdbool.h>
#include <stdio.h>

#include "lib/tokens.h"

/* What qr_scopes_rest and qr_scopes_rpc return for a request without a
 * row (a programming error for REST; a kind from a newer client for RPC). */
#define QR_SCOPES_UNKNOWN (~0u)

/* The scope a REST request needs: method as h2o gives it ("GET"), pattern
 * the route's, exactly as in rest.c. */
unsigned qr_scopes_rest(const char *method, const char *pattern);

/* The scope an RPC request of this kind (a Qraft__Request__BodyCase)
 * needs. */
unsigned qr_scopes_rpc(int kind);

/* The name of an RPC kind: its field in Request.body ("dlq_delete"), or
 * "unknown". */
const char *qr_scopes_rpc_name(int kind);

/* Prints the RPC half, one line per kind the protocol defines: "rpc KIND
 * SCOPE FIELD" (SCOPE "missing" when the table has no row; FIELD the
 * kind's field number in Request.body). Returns how many kinds have no
 * row. */
int qr_scopes_print_rpc(FILE *out);

#endif /* QR_SCOPES_H */
