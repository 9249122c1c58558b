/* The operator console's static files (console/ in the source tree), built
 * into the binary by tools/embed_assets.c, and how they are answered: no
 * token is needed to load them (every data call the console makes carries
 * one), each answer has its content type, an ETag (a matching If-None-Match
 * gets 304), Cache-Control: no-cache (always revalidated, so a new binary
 * is picked up at once) and a Content-Security-Policy that lets a page load
 * and call nothing but this node. The table is read-only and sorted by
 * nothing: lookups scan it (a few dozen files). */
#ifndef QR_CONSOLE_H
#define QR_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>

#include <h2o.h>

#define QR_CONSOLE_PREFIX "/console"

/* One embedded file; every pointer is static data. */
struct qr_console_asset {
    const char *path;         /* "/console/js/main.js" */
    const char *content_type; /* "text/javascript; charset=utf-8" */
    const char *etag;         /* "\"<16 hex>\"", quotes included */
    const unsigned char *data;
    size_t len;
};

/* The generated table (the build writes it; n may be 0). */
extern const struct qr_console_asset qr_console_assets[];
extern const size_t qr_console_n_assets;

/* The asset at path (len bytes, no query), or NULL. "/console" and
 * "/console/" are index.html. */
const struct qr_console_asset *qr_console_find(const char *path, size_t len);

/* Answers req (a GET or HEAD of "/", "/console" or under it): "/" redirects
 * (302) to /console/, a known file is sent (304 when If-None-Match matches),
 * anything else is 404. req is borrowed; answered before this returns. */
void qr_console_serve(h2o_req_t *req);

#endif
