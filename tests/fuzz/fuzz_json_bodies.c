/* libFuzzer target: the REST face's request parsing (node/api/rest_*.c),
 * from bytes to the qraft.Request it would submit, and the checks that
 * request meets next (the RPC face's). The parsers are the rooms' own
 * (api/rest_int.h); they take h2o requests, so this file hands them a
 * zeroed h2o_req_t with only its memory pool and body set: nothing of
 * h2o's server runs.
 *
 * The first input byte picks the surface, the rest is its input:
 *   0  POST /v2/batch body: each element through qr_rest_batch_element,
 *      then qr_command_check_publish on what it built;
 *   1  {"messageIds": [...]} bodies (cancel many, DLQ bulk);
 *   2  {"endpoints": [...]} bodies (URL groups), then
 *      qr_command_check_group_change;
 *   3  a query string through qr_rest_parse_filter (logs, DLQ, bulk
 *      filters);
 *   4  a publish: first line "destination?query", then "Name: value"
 *      lines, mapped by what handle_publish calls (qr_rest_pub_begin,
 *      qr_rest_pub_map), then qr_command_check_publish.
 * Invariants: no memory error or undefined behaviour; what the parsers
 * build packs into a Request (protobuf-c would crash on a NULL string); an
 * accepted publish holds only UTF-8 text (a known finding, F2 in
 * docs/fuzzing.md). */
#include <stdlib.h>
#include <string.h>

#include <h2o.h>
#include <jansson.h>

#include "api/rest_int.h"
#include "config.h"
#include "fuzz_util.h"
#include "ops/filter.h"
#include "repl/check.h"
#include "repl/command.h"

#define NOW_MS 1767225600000ull

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct qr_limits limits;

/* The publish the face would submit packs, and meets the RPC's check. */
static void submit_publish(Qraft__PublishRequest *pr, bool group)
{
    char err[256];
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.body_case = QRAFT__REQUEST__BODY_PUBLISH;
    req.publish = pr;
    size_t len = qraft__request__get_packed_size(&req);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    FUZZ_CHECK(buf != NULL, "out of memory");
    FUZZ_CHECK(qraft__request__pack(&req, buf) == len, "packed size");
    free(buf);
    if (!group &&
        qr_command_check_publish(pr, &limits, NOW_MS, err, sizeof err) == 0) {
        /* Issue 10 finding 4 and F2: text that is not UTF-8 is refused. */
        FUZZ_CHECK(fuzz_all_utf8(&pr->base),
                   "an accepted REST publish holds text that is not UTF-8 "
                   "(F2)");
    }
}

static void fuzz_batch(h2o_req_t *req)
{
    json_error_t jerr;
    json_t *in = json_loadb(req->entity.base, req->entity.len, 0, &jerr);
    if (in == NULL) {
        return;
    }
    if (json_is_array(in) && json_array_size(in) <= MAX_BATCH) {
        for (size_t i = 0; i < json_array_size(in); i++) {
            struct rest_pub p;
            char err[ERR_BYTES];
            char caller[] = "127.0.0.1";
            if (qr_rest_batch_element(&req->pool, json_array_get(in, i), &p,
                                      caller, err) == 0) {
                submit_publish(&p.pr, p.pr.topic_name[0] != '\0');
            } else {
                FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL, "err");
            }
        }
    }
    json_decref(in);
}

static void fuzz_message_ids(h2o_req_t *req)
{
    char **ids = NULL;
    size_t n = 0;
    char err[ERR_BYTES];
    if (qr_rest_body_message_ids(req, &ids, &n, err) == 0) {
        for (size_t i = 0; i < n; i++) {
            FUZZ_CHECK(ids[i] != NULL, "NULL id");
        }
        /* Twice, as a query list and a body may both give ids. */
        (void)qr_rest_body_message_ids(req, &ids, &n, err);
    }
}

static void fuzz_endpoints(h2o_req_t *req)
{
    char err[ERR_BYTES];
    Qraft__GroupChangeRequest change = QRAFT__GROUP_CHANGE_REQUEST__INIT;
    change.kind = QRAFT__GROUP_CHANGE_KIND__GROUP_ADD_ENDPOINTS;
    change.name = "group";
    if (qr_rest_parse_endpoints(req, &change, err) != 0) {
        return;
    }
    Qraft__Request r = QRAFT__REQUEST__INIT;
    r.body_case = QRAFT__REQUEST__BODY_GROUP_CHANGE;
    r.group_change = &change;
    size_t len = qraft__request__get_packed_size(&r);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    FUZZ_CHECK(buf != NULL, "out of memory");
    qraft__request__pack(&r, buf);
    free(buf);
    (void)qr_command_check_group_change(&change, &limits, err, sizeof err);
}

static void fuzz_filter_query(h2o_req_t *req)
{
    static const char *const extra[] = {"cursor", "count", "order", NULL};
    Qraft__MessageFilter f;
    char err[ERR_BYTES];
    h2o_iovec_t query = h2o_iovec_init(req->entity.base, req->entity.len);
    if (qr_rest_parse_filter(&req->pool, query, extra, &f, err) == 0) {
        FUZZ_CHECK(qr_filter_unsupported(&f) == NULL,
                   "an accepted filter has an unsupported field");
        size_t len = qraft__message_filter__get_packed_size(&f);
        uint8_t *buf = malloc(len > 0 ? len : 1);
        FUZZ_CHECK(buf != NULL, "out of memory");
        qraft__message_filter__pack(&f, buf);
        free(buf);
    }
}

static void fuzz_publish(h2o_req_t *req)
{
    const char *s = req->entity.base;
    size_t len = req->entity.len;
    const char *nl = memchr(s, '\n', len);
    size_t line_len = nl != NULL ? (size_t)(nl - s) : len;
    const char *q = memchr(s, '?', line_len);
    size_t dest_len = q != NULL ? (size_t)(q - s) : line_len;
    h2o_iovec_t query = q != NULL
                            ? h2o_iovec_init(q + 1, line_len - dest_len - 1)
                            : h2o_iovec_init(NULL, 0);
    h2o_headers_t headers = {NULL, 0, 0};
    char err[ERR_BYTES];
    struct rest_pub p;
    size_t off = nl != NULL ? line_len + 1 : len;

    /* The header lines as h2o would hand them over. */
    while (off < len) {
        const char *line = s + off;
        const char *end = memchr(line, '\n', len - off);
        size_t ll = end != NULL ? (size_t)(end - line) : len - off;
        off += ll + 1;
        const char *colon = memchr(line, ':', ll);
        if (colon == NULL || colon == line) {
            continue; /* h2o refuses such a header line */
        }
        size_t nlen = (size_t)(colon - line);
        const char *val = colon + 1;
        size_t vlen = ll - nlen - 1;
        while (vlen > 0 && *val == ' ') {
            val++;
            vlen--;
        }
        h2o_add_header_by_str(&req->pool, &headers, line, nlen, 0, NULL, val,
                              vlen);
    }
    if (qr_rest_pub_begin(&p, &req->pool, h2o_iovec_init(s, dest_len), query,
                          headers.size + qr_rest_query_count(query),
                          err) != 0 ||
        qr_rest_pub_map(&p, &req->pool, query, &headers, err) != 0) {
        return;
    }
    submit_publish(&p.pr, p.pr.topic_name[0] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        struct qr_config cfg;
        qr_config_defaults(&cfg);
        limits = cfg.limits;
        fuzz_quiet_logs();
        ready = 1;
    }
    if (size < 1) {
        return 0;
    }
    h2o_req_t *req = calloc(1, sizeof *req);
    FUZZ_CHECK(req != NULL, "out of memory");
    h2o_mem_init_pool(&req->pool);
    /* An exact copy, so a read past the body is an ASan report. */
    char *body = malloc(size - 1 > 0 ? size - 1 : 1);
    FUZZ_CHECK(body != NULL, "out of memory");
    memcpy(body, data + 1, size - 1);
    req->entity = h2o_iovec_init(body, size - 1);
    switch (data[0] % 5) {
        case 0:
            fuzz_batch(req);
            break;
        case 1:
            fuzz_message_ids(req);
            break;
        case 2:
            fuzz_endpoints(req);
            break;
        case 3:
            fuzz_filter_query(req);
            break;
        default:
            fuzz_publish(req);
            break;
    }
    h2o_mem_clear_pool(&req->pool);
    free(body);
    free(req);
    return 0;
}
