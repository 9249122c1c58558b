/* Serving the embedded console files (console.h). */
#include "api/console.h"

#include <string.h>

#define INDEX_PATH QR_CONSOLE_PREFIX "/index.html"

/* Self only: the console's own scripts, styles and images, and calls to this
 * node; no inline script or style, no frames, no plugins. */
#define CSP                                                       \
    "default-src 'none'; script-src 'self'; style-src 'self'; "   \
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; " \
    "form-action 'none'; frame-ancestors 'none'"

static bool path_is(const char *path, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(path, want, len) == 0;
}

const struct qr_console_asset *qr_console_find(const char *path, size_t len)
{
    if (path_is(path, len, QR_CONSOLE_PREFIX) ||
        path_is(path, len, QR_CONSOLE_PREFIX "/")) {
        path = INDEX_PATH;
        len = strlen(INDEX_PATH);
    }
    for (size_t i = 0; i < qr_console_n_assets; i++) {
        if (path_is(path, len, qr_console_assets[i].path)) {
            return &qr_console_assets[i];
        }
    }
    return NULL;
}

static void add_header(h2o_req_t *req,
                       const h2o_token_t *token,
                       const char *value)
{
    h2o_add_header(&req->pool, &req->res.headers, token, NULL, value,
                   strlen(value));
}

/* A header h2o has no token for; name lower-case, both static. */
static void add_named_header(h2o_req_t *req,
                             const char *name,
                             const char *value)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 0,
                          NULL, value, strlen(value));
}

static void send_plain(h2o_req_t *req,
                       int status,
                       const char *reason,
                       const char *body)
{
    req->res.status = status;
    req->res.reason = reason;
    req->res.content_length = strlen(body);
    add_header(req, H2O_TOKEN_CONTENT_TYPE, "text/plain; charset=utf-8");
    add_header(req, H2O_TOKEN_CACHE_CONTROL, "no-store");
    h2o_send_inline(req, body, strlen(body));
}

/* Whether the request's If-None-Match names etag (or is "*"). */
static bool not_modified(h2o_req_t *req, const char *etag)
{
    ssize_t at = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1);

    if (at < 0) {
        return false;
    }
    h2o_iovec_t v = req->headers.entries[at].value;
    return h2o_memis(v.base, v.len, H2O_STRLIT("*")) ||
           h2o_strstr(v.base, v.len, etag, strlen(etag)) != SIZE_MAX;
}

void qr_console_serve(h2o_req_t *req)
{
    const char *path = req->path_normalized.base;
    size_t len = req->path_normalized.len;
    const struct qr_console_asset *a;

    if (path_is(path, len, "/")) {
        add_header(req, H2O_TOKEN_LOCATION, QR_CONSOLE_PREFIX "/");
        send_plain(req, 302, "Found", "the console is at /console/\n");
        return;
    }
    a = qr_console_find(path, len);
    if (a == NULL) {
        send_plain(req, 404, "Not Found", "not found\n");
        return;
    }
    add_header(req, H2O_TOKEN_ETAG, a->etag);
    add_header(req, H2O_TOKEN_CACHE_CONTROL, "no-cache");
    add_named_header(req, "content-security-policy", CSP);
    add_named_header(req, "x-content-type-options", "nosniff");
    add_named_header(req, "referrer-policy", "no-referrer");
    if (not_modified(req, a->etag)) {
        req->res.status = 304;
        req->res.reason = "Not Modified";
        h2o_send_inline(req, "", 0);
        return;
    }
    req->res.status = 200;
    req->res.reason = "OK";
    req->res.content_length = a->len;
    add_header(req, H2O_TOKEN_CONTENT_TYPE, a->content_type);
    h2o_send_inline(req, (const char *)a->data, a->len);
}
