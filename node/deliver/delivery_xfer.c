/* One transfer of the delivery engine: checking and copying a request,
 * setting its easy handle's options, capturing its response, and naming
 * what curl said. See delivery_xfer.h; the queues and the loop are in
 * delivery.c. */
#include "deliver/delivery_xfer.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "lib/ascii.h"
#include "lib/dest.h"

#define TCP_KEEPIDLE_S 60L
#define TCP_KEEPINTVL_S 30L

/* ------------------------------------------------------------------------ */
/* Validating and copying a request. */

static const char *const METHODS[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};

static const char *canonical_method(const char *m)
{
    if (m == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < sizeof METHODS / sizeof METHODS[0]; i++) {
        if (strcasecmp(m, METHODS[i]) == 0) {
            return METHODS[i];
        }
    }
    return NULL;
}

/* RFC 9110 token characters. */
static bool is_tchar(unsigned char c)
{
    return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool valid_header(const struct qr_delivery_header *h)
{
    if (h->name == NULL || h->value == NULL || h->name[0] == '\0') {
        return false;
    }
    for (const char *p = h->name; *p != '\0'; p++) {
        if (!is_tchar((unsigned char)*p)) {
            return false;
        }
    }
    for (const char *p = h->value; *p != '\0'; p++) {
        if (*p == '\r' || *p == '\n') {
            return false;
        }
    }
    return true;
}

/* Headers the engine owns (framing, connection reuse). */
static bool engine_header(const char *name)
{
    return strcasecmp(name, "Content-Length") == 0 ||
           strcasecmp(name, "Transfer-Encoding") == 0 ||
           strcasecmp(name, "Connection") == 0;
}

static bool has_header(const struct qr_delivery_request *req, const char *name)
{
    for (size_t i = 0; i < req->n_headers; i++) {
        if (strcasecmp(req->headers[i].name, name) == 0) {
            return true;
        }
    }
    return false;
}

static int slist_add(struct curl_slist **list, const char *line)
{
    struct curl_slist *l = curl_slist_append(*list, line);
    if (l == NULL) {
        return -ENOMEM;
    }
    *list = l;
    return 0;
}

/* "Name: value", or "Name;" for an empty value (curl's spelling; "Name:"
 * would remove the header instead). */
static int slist_add_header(struct curl_slist **list,
                            const struct qr_delivery_header *h)
{
    size_t n = strlen(h->name) + strlen(h->value) + 3;
    char *line = malloc(n);
    if (line == NULL) {
        return -ENOMEM;
    }
    if (h->value[0] == '\0') {
        snprintf(line, n, "%s;", h->name);
    } else {
        snprintf(line, n, "%s: %s", h->name, h->value);
    }
    int rv = slist_add(list, line);
    free(line);
    return rv;
}

static int build_headers(const struct qr_delivery_request *req,
                         struct curl_slist **out)
{
    struct curl_slist *list = NULL;
    int rv = 0;
    /* What curl would add unasked: an empty "Name:" removes it. */
    if (!has_header(req, "Expect")) {
        rv = slist_add(&list, "Expect:");
    }
    if (rv == 0 && !has_header(req, "Accept")) {
        rv = slist_add(&list, "Accept:");
    }
    if (rv == 0 && !has_header(req, "Content-Type")) {
        rv = slist_add(&list, "Content-Type:");
    }
    for (size_t i = 0; rv == 0 && i < req->n_headers; i++) {
        if (!engine_header(req->headers[i].name)) {
            rv = slist_add_header(&list, &req->headers[i]);
        }
    }
    if (rv != 0) {
        curl_slist_free_all(list);
        return rv;
    }
    *out = list;
    return 0;
}

static void lower(char *s)
{
    for (; *s != '\0'; s++) {
        *s = (char)tolower((unsigned char)*s);
    }
}

int qr_delivery_xfer_host_key(const char *url, char **key, char *errmsg)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    int rv = -ENOMEM;
    if (u == NULL) {
        goto err;
    }
    CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, CURLU_PATH_AS_IS);
    if (uc == CURLUE_OUT_OF_MEMORY) {
        goto err_after_url;
    }
    rv = QR_EBADREQ;
    if (uc != CURLUE_OK) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "delivery: bad URL: %s",
                 curl_url_strerror(uc));
        goto err_after_url;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) !=
            CURLUE_OK) {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "delivery: bad URL: no scheme, host or port");
        goto err_after_parts;
    }
    lower(scheme);
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        snprintf(errmsg, QR_ERRMSG_BYTES,
                 "delivery: bad URL: scheme %s is not http or https", scheme);
        goto err_after_parts;
    }
    lower(host);
    size_t n = strlen(scheme) + strlen(host) + strlen(port) + 5;
    *key = malloc(n);
    if (*key == NULL) {
        rv = -ENOMEM;
        goto err_after_parts;
    }
    snprintf(*key, n, "%s://%s:%s", scheme, host, port);
    rv = 0;
err_after_parts:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
err_after_url:
    curl_url_cleanup(u);
err:
    return rv;
}

int qr_delivery_xfer_check(const struct qr_delivery_request *req,
                           const char **method,
                           char **host_key,
                           char *errmsg)
{
    *method = canonical_method(req->method);
    if (*method == NULL) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "delivery: unsupported method %s",
                 req->method != NULL ? req->method : "(none)");
        return QR_EBADREQ;
    }
    if (req->url == NULL) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "delivery: no URL");
        return QR_EBADREQ;
    }
    if (req->body_len > 0 && req->body == NULL) {
        snprintf(errmsg, QR_ERRMSG_BYTES, "delivery: body_len without body");
        return QR_EBADREQ;
    }
    for (size_t i = 0; i < req->n_headers; i++) {
        if (!valid_header(&req->headers[i])) {
            snprintf(
                errmsg, QR_ERRMSG_BYTES, "delivery: bad header %zu (%s)", i,
                req->headers[i].name != NULL ? req->headers[i].name : "(none)");
            return QR_EBADREQ;
        }
    }
    return qr_delivery_xfer_host_key(req->url, host_key, errmsg);
}

void qr_delivery_xfer_free(struct qr_delivery_xfer *x)
{
    if (x->easy != NULL) {
        curl_easy_cleanup(x->easy);
    }
    curl_slist_free_all(x->headers);
    free(x->url);
    free(x->body);
    free(x->resp_body);
    free(x->hdr_buf);
    free(x);
}

struct qr_delivery_xfer *qr_delivery_xfer_new(
    const struct qr_delivery_request *req,
    const char *method)
{
    struct qr_delivery_xfer *x = calloc(1, sizeof *x);
    if (x == NULL) {
        return NULL;
    }
    snprintf(x->method, sizeof x->method, "%s", method);
    x->url = strdup(req->url);
    if (x->url == NULL || build_headers(req, &x->headers) != 0) {
        goto err;
    }
    if (req->body_len > 0) {
        x->body = malloc(req->body_len);
        if (x->body == NULL) {
            goto err;
        }
        memcpy(x->body, req->body, req->body_len);
    }
    x->body_len = req->body_len;
    /* GET and DELETE carry a body only when there is one; the others always
     * say how long theirs is, even when it is 0. */
    x->send_body = req->body_len > 0 || (strcmp(method, "GET") != 0 &&
                                         strcmp(method, "DELETE") != 0);
    x->timeout_ms = req->timeout_ms;
    x->resp_body_max = req->max_response_body_bytes;
    return x;
err:
    qr_delivery_xfer_free(x);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Response capture (curl callbacks: no user code, no curl calls). */

/* The capacity a capture buffer of cap bytes grows to for want bytes
 * (want <= max): doubled (from first when empty) until want fits, at most
 * max. */
static size_t grown_cap(size_t cap, size_t first, size_t want, size_t max)
{
    size_t grown = cap == 0 ? first : cap;
    while (grown < want) {
        grown *= 2;
    }
    return grown < max ? grown : max;
}

static size_t on_curl_body(char *ptr, size_t size, size_t nmemb, void *userp)
{
    struct qr_delivery_xfer *x = userp;
    const struct qr_delivery_limits *lim = &x->d->limits;
    size_t n = size * nmemb;
    size_t max =
        x->resp_body_max != 0 ? x->resp_body_max : lim->max_response_body_bytes;
    x->resp_body_total += n;
    size_t room = max - x->resp_body_len;
    size_t take = n < room ? n : room;
    if (take > 0) {
        if (x->resp_body_len + take > x->resp_body_cap) {
            size_t cap =
                grown_cap(x->resp_body_cap, 1024, x->resp_body_len + take, max);
            uint8_t *b = realloc(x->resp_body, cap);
            if (b == NULL) {
                return 0; /* WRITE_ERROR -> OTHER */
            }
            x->resp_body = b;
            x->resp_body_cap = cap;
        }
        memcpy(x->resp_body + x->resp_body_len, ptr, take);
        x->resp_body_len += take;
    }
    uint64_t limit = (uint64_t)max + (uint64_t)lim->max_drain_bytes;
    if (limit < (uint64_t)lim->max_drain_bytes) {
        limit = UINT64_MAX; /* overflowed: no limit but the timeout */
    }
    if (x->resp_body_total > limit) {
        x->drained = true;
        return 0; /* stop reading: curl ends the transfer, WRITE_ERROR */
    }
    return n;
}

static void hdr_reset(struct qr_delivery_xfer *x)
{
    x->hdr_len = 0;
    x->n_hdrs = 0;
    x->hdr_truncated = false;
}

static void hdr_add(struct qr_delivery_xfer *x,
                    const char *name,
                    size_t name_len,
                    const char *value,
                    size_t value_len)
{
    size_t max = x->d->limits.max_response_header_bytes;
    size_t need = name_len + value_len + 2;
    if (x->hdr_len + need > max) {
        x->hdr_truncated = true;
        return;
    }
    if (x->hdr_len + need > x->hdr_cap) {
        size_t cap = grown_cap(x->hdr_cap, 512, x->hdr_len + need, max);
        char *b = realloc(x->hdr_buf, cap);
        if (b == NULL) {
            x->hdr_truncated = true;
            return;
        }
        x->hdr_buf = b;
        x->hdr_cap = cap;
    }
    char *p = x->hdr_buf + x->hdr_len;
    memcpy(p, name, name_len);
    p[name_len] = '\0';
    memcpy(p + name_len + 1, value, value_len);
    p[name_len + 1 + value_len] = '\0';
    x->hdr_len += need;
    x->n_hdrs++;
}

/* One header line at a time, CRLF included. A status line starts a new
 * response (after a 1xx, or a followed redirect): only the last is kept. */
static size_t on_curl_header(char *line, size_t size, size_t nmemb, void *userp)
{
    struct qr_delivery_xfer *x = userp;
    size_t n = size * nmemb;
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        hdr_reset(x);
        return n;
    }
    if (n == 0 || line[0] == ' ' || line[0] == '\t') {
        return n; /* obsolete line folding: ignored */
    }
    const char *colon = memchr(line, ':', n);
    if (colon == NULL || colon == line) {
        return n; /* the blank line that ends the section, or junk */
    }
    const char *v = colon + 1;
    size_t v_len = (size_t)(line + n - v);
    qr_ascii_trim(&v, &v_len);
    hdr_add(x, line, (size_t)(colon - line), v, v_len);
    return n;
}

/* ------------------------------------------------------------------------ */
/* The destination policy (the SSRF guard). */

/* "169.254.169.254 is link-local" (with the name that led there, when
 * there is one) and what opens it. */
static void describe_refusal(const struct qr_dest_addr *a,
                             enum qr_dest_class cls,
                             const char *name,
                             char *buf,
                             size_t size)
{
    char text[QR_DEST_ADDR_TEXT_BYTES];
    qr_dest_addr_format(a, text, sizeof text);
    if (name != NULL) {
        snprintf(buf, size,
                 "%.40s resolves to %s, which is %s; this node does not "
                 "deliver there (--allow-destinations)",
                 name, text, qr_dest_class_name(cls));
    } else {
        snprintf(buf, size,
                 "%s is %s; this node does not deliver there "
                 "(--allow-destinations)",
                 text, qr_dest_class_name(cls));
    }
}

/* url's host (new; free with curl_free) when it is a name, not a literal
 * address; else NULL. */
static char *host_name(const char *url)
{
    CURLU *u = curl_url();
    char *host = NULL;
    struct qr_dest_addr a;
    if (u == NULL) {
        return NULL;
    }
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_PATH_AS_IS) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        qr_dest_parse_addr(host, &a) == 0) {
        curl_free(host);
        host = NULL;
    }
    curl_url_cleanup(u);
    return host;
}

/* Notes why x's first refused connection was refused: a (NULL when the
 * address was not IP) and its class. The rare path: the URL's parse that
 * names the host is affordable. */
static void note_refusal(struct qr_delivery_xfer *x,
                         const struct qr_dest_addr *a,
                         enum qr_dest_class cls)
{
    if (a == NULL) {
        snprintf(x->refused_why, sizeof x->refused_why,
                 "not an IP address; this node delivers over TCP/IP only");
        return;
    }
    char *name = host_name(x->url);
    describe_refusal(a, cls, name, x->refused_why, sizeof x->refused_why);
    curl_free(name);
}

/* curl asks for each address it is about to connect to, after resolving
 * the name: the one place every connection passes. Runs inside curl:
 * only looks at the policy and notes what it refused. */
static curl_socket_t on_curl_open_socket(void *userp,
                                         curlsocktype purpose,
                                         struct curl_sockaddr *address)
{
    struct qr_delivery_xfer *x = userp;
    const struct qr_dest_policy *policy = x->d->destinations;
    struct qr_dest_addr a;
    enum qr_dest_class cls = QR_DEST_RESERVED;
    bool ip = purpose == CURLSOCKTYPE_IPCXN &&
              qr_dest_from_sockaddr(&address->addr, address->addrlen, &a) == 0;
    if (policy != NULL && !(ip && qr_dest_allowed(policy, &a, &cls))) {
        if (x->n_refused++ == 0) {
            note_refusal(x, ip ? &a : NULL, cls);
        }
        return CURL_SOCKET_BAD;
    }
    curl_socket_t fd = socket(address->family, address->socktype | SOCK_CLOEXEC,
                              address->protocol);
    if (fd != CURL_SOCKET_BAD) {
        x->n_opened++;
    }
    return fd;
}

int qr_delivery_check_url(const struct qr_dest_policy *policy,
                          const char *field,
                          const char *url,
                          char *err,
                          size_t err_len)
{
    if (policy == NULL) {
        return 0;
    }
    CURLU *u = curl_url();
    char *host = NULL;
    int rv = 0;
    if (u == NULL) {
        return 0; /* out of memory: the delivery will check */
    }
    /* Read as the transfer will read it: curl turns "2130706433",
     * "0x7f.1" or "%31%32%37.0.0.1" into 127.0.0.1. */
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_PATH_AS_IS) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        struct qr_dest_addr a;
        enum qr_dest_class cls;
        if (qr_dest_parse_addr(host, &a) == 0 &&
            !qr_dest_allowed(policy, &a, &cls)) {
            char why[QR_DELIVERY_ERROR_BYTES];
            describe_refusal(&a, cls, NULL, why, sizeof why);
            snprintf(err, err_len, "%s '%.64s': %s", field, url, why);
            rv = QR_EBADREQ;
        }
    }
    curl_free(host);
    curl_url_cleanup(u);
    return rv;
}

/* ------------------------------------------------------------------------ */
/* The easy handle's options. */

#define SETOPT(e, opt, val) QR_CURL_TRY(curl_easy_setopt(e, opt, val))

CURLcode qr_delivery_xfer_configure(struct qr_delivery *d,
                                    struct qr_delivery_xfer *x,
                                    CURL *e)
{
    const struct qr_delivery_limits *lim = &d->limits;
    uint64_t timeout_ms =
        x->timeout_ms != 0 ? x->timeout_ms : lim->default_timeout_ms;
    SETOPT(e, CURLOPT_PRIVATE, x);
    SETOPT(e, CURLOPT_ERRORBUFFER, x->errbuf);
    SETOPT(e, CURLOPT_NOSIGNAL, 1L);
    SETOPT(e, CURLOPT_URL, x->url);
    SETOPT(e, CURLOPT_PATH_AS_IS, 1L);
    /* Straight to the destination: http_proxy and friends are not read. */
    SETOPT(e, CURLOPT_PROXY, "");
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    SETOPT(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    SETOPT(e, CURLOPT_REDIR_PROTOCOLS,
           (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
#if LIBCURL_VERSION_NUM >= 0x075700
    /* Cancelling during a threaded DNS lookup must not wait for it. */
    SETOPT(e, CURLOPT_QUICK_EXIT, 1L);
#endif
    SETOPT(e, CURLOPT_CUSTOMREQUEST, x->method);
    if (x->send_body) {
        SETOPT(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
        SETOPT(e, CURLOPT_POSTFIELDS, x->body != NULL ? (char *)x->body : "");
    }
    SETOPT(e, CURLOPT_HTTPHEADER, x->headers);
    SETOPT(e, CURLOPT_FOLLOWLOCATION, lim->max_redirects > 0 ? 1L : 0L);
    SETOPT(e, CURLOPT_MAXREDIRS, (long)lim->max_redirects);
    SETOPT(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS, (long)lim->connect_timeout_ms);
    SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(e, CURLOPT_TCP_KEEPIDLE, TCP_KEEPIDLE_S);
    SETOPT(e, CURLOPT_TCP_KEEPINTVL, TCP_KEEPINTVL_S);
    /* The body is kept as the destination sent it. */
    SETOPT(e, CURLOPT_HTTP_CONTENT_DECODING, 0L);
    SETOPT(e, CURLOPT_WRITEFUNCTION, on_curl_body);
    SETOPT(e, CURLOPT_WRITEDATA, x);
    SETOPT(e, CURLOPT_HEADERFUNCTION, on_curl_header);
    SETOPT(e, CURLOPT_HEADERDATA, x);
    if (d->destinations != NULL) {
        SETOPT(e, CURLOPT_OPENSOCKETFUNCTION, on_curl_open_socket);
        SETOPT(e, CURLOPT_OPENSOCKETDATA, x);
    }
    return CURLE_OK;
}

#undef SETOPT

/* ------------------------------------------------------------------------ */
/* What curl said. */

const char *qr_delivery_transport_name(enum qr_delivery_transport t)
{
    switch (t) {
        case QR_DELIVERY_OK:
            return "ok";
        case QR_DELIVERY_CONNECT:
            return "connect";
        case QR_DELIVERY_DNS:
            return "dns";
        case QR_DELIVERY_TLS:
            return "tls";
        case QR_DELIVERY_TIMEOUT:
            return "timeout";
        case QR_DELIVERY_PROTOCOL:
            return "protocol";
        case QR_DELIVERY_TOO_MANY_REDIRECTS:
            return "too_many_redirects";
        case QR_DELIVERY_CANCELLED:
            return "cancelled";
        case QR_DELIVERY_REFUSED:
            return "refused";
        case QR_DELIVERY_OTHER:
            return "other";
    }
    return "other";
}

enum qr_delivery_transport qr_delivery_xfer_transport(CURLcode code, bool sent)
{
    switch (code) {
        case CURLE_OK:
            return QR_DELIVERY_OK;
        case CURLE_COULDNT_CONNECT:
            return QR_DELIVERY_CONNECT;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
            return QR_DELIVERY_DNS;
        case CURLE_OPERATION_TIMEDOUT:
            return sent ? QR_DELIVERY_TIMEOUT : QR_DELIVERY_CONNECT;
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_SSL_ENGINE_NOTFOUND:
        case CURLE_SSL_ENGINE_SETFAILED:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_ENGINE_INITFAILED:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_SHUTDOWN_FAILED:
        case CURLE_SSL_CRL_BADFILE:
        case CURLE_SSL_ISSUER_ERROR:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        case CURLE_SSL_INVALIDCERTSTATUS:
        case CURLE_SSL_CLIENTCERT:
        case CURLE_USE_SSL_FAILED:
            return QR_DELIVERY_TLS;
        case CURLE_WEIRD_SERVER_REPLY:
        case CURLE_GOT_NOTHING:
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
        case CURLE_PARTIAL_FILE:
        case CURLE_HTTP2:
        case CURLE_HTTP2_STREAM:
        case CURLE_HTTP3:
        case CURLE_BAD_CONTENT_ENCODING:
        case CURLE_UNSUPPORTED_PROTOCOL:
        case CURLE_RANGE_ERROR:
            return QR_DELIVERY_PROTOCOL;
        case CURLE_TOO_MANY_REDIRECTS:
            return QR_DELIVERY_TOO_MANY_REDIRECTS;
        default:
            return QR_DELIVERY_OTHER;
    }
}
