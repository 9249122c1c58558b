/* The QStash-dialect REST routes (/v2/...), served by the HTTP server in
 * http_api.c. Every route checks the API token first, turns the HTTP request
 * into a Qraft__Request and runs it with qr_ops_submit (so it gets the same
 * checks, leader routing and follower forwarding), and answers JSON built
 * with jansson; errors are always {"error": "..."}. A request whose client
 * went away before the answer came is dropped safely: each waiting request
 * holds a small refcounted context that the h2o request pool and the RPC
 * callback share. */
#ifndef QR_REST_H
#define QR_REST_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/queue.h>

struct st_h2o_req_t;
struct qr_ops;
struct qr_tokens;
struct rest_call;

/* Allocated by the caller (inside the HTTP server); its fields are private.
 */
struct qr_rest {
    struct qr_ops *ops; /* borrowed; NULL: every /v2 route answers 503 */
    /* borrowed: the API tokens, which may change between requests (a
     * reload) but not during one */
    const struct qr_tokens *tokens;
    LIST_HEAD(, rest_call) calls; /* requests waiting for an RPC answer */
};

/* ops and tokens are borrowed and must outlive every request served. A
 * request needs a token with the scope its route and method have in the
 * scope table (api/scopes.h): 401 without a known token, 403 without the
 * scope. */
void qr_rest_init(struct qr_rest *r,
                  struct qr_ops *ops,
                  const struct qr_tokens *tokens);

/* Prints one line per route and method of the route table: "rest METHOD
 * PATTERN SCOPE" ("*" for any method; SCOPE "missing" when the scope table
 * has no row). Returns how many have no row. */
int qr_rest_print_scopes(FILE *out);

/* Answers req (borrowed) now or later, if its raw path is under /v2/ (or is
 * /v2), and returns true; returns false, answering nothing, otherwise. */
bool qr_rest_handle(struct qr_rest *r, struct st_h2o_req_t *req);

/* The pattern of the route req's path takes ("/v2/messages/{id}": a label
 * for the metrics, static), "/v2/(other)" for a /v2 path no route takes,
 * NULL for a path outside /v2. */
const char *qr_rest_route_pattern(const struct st_h2o_req_t *req);

/* Answers 503 to every request still waiting for the RPC (the server is
 * closing); their RPC answers are dropped when they come. */
void qr_rest_abort(struct qr_rest *r);

#endif /* QR_REST_H */
