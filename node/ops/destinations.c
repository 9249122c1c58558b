/* The publish-time side of the SSRF guard: every URL a request names is
 * checked against this node's destination policy (ops.h). */
#include "ops/ops.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "deliver/delivery.h"
#include "repl/check.h"

static int check(const struct qr_ops *ops,
                 const char *field,
                 const char *url,
                 char *err,
                 size_t err_len)
{
    if (url == NULL || url[0] == '\0') {
        return 0;
    }
    return qr_delivery_check_url(&ops->config->destinations, field, url, err,
                                 err_len);
}

int qr_ops_check_publish_destinations(const struct qr_ops *ops,
                                      const Qraft__PublishRequest *p,
                                      char *err,
                                      size_t err_len)
{
    int rv = check(ops, "url", p->url, err, err_len);
    if (rv == 0) {
        rv = check(ops, "callback", p->callback, err, err_len);
    }
    if (rv == 0) {
        rv = check(ops, "failure callback", p->failure_callback, err, err_len);
    }
    for (size_t i = 0; rv == 0 && i < p->n_callback_headers; i++) {
        const Qraft__Header *h = p->callback_headers[i];
        if (strcasecmp(h->name, "Failure-Callback") == 0) {
            rv = check(ops, "Upstash-Callback-Failure-Callback", h->value, err,
                       err_len);
        }
    }
    const Qraft__WorkflowPublish *wf = p->workflow;
    if (rv == 0 && wf != NULL) {
        rv = check(ops, "Upstash-Workflow-Url", wf->url, err, err_len);
    }
    struct qr_invoke inv;
    if (rv == 0 && wf != NULL && wf->invoke &&
        qr_command_parse_invoke(p->body.data, p->body.len, &inv) == 0) {
        rv = check(ops, "invoke workflowUrl", inv.url, err, err_len);
        qr_command_invoke_free(&inv);
    }
    return rv;
}

int qr_ops_check_wait_destinations(const struct qr_ops *ops,
                                   const Qraft__Waiter *w,
                                   char *err,
                                   size_t err_len)
{
    int rv = check(ops, "url", w->url, err, err_len);
    if (rv == 0) {
        rv = check(ops, "timeoutUrl", w->timeout_url, err, err_len);
    }
    return rv;
}

int qr_ops_check_group_destinations(const struct qr_ops *ops,
                                    const Qraft__GroupChangeRequest *gc,
                                    char *err,
                                    size_t err_len)
{
    if (gc->kind != QRAFT__GROUP_CHANGE_KIND__GROUP_ADD_ENDPOINTS) {
        return 0;
    }
    int rv = 0;
    for (size_t i = 0; rv == 0 && i < gc->n_endpoints; i++) {
        char field[48];
        snprintf(field, sizeof field, "endpoint %zu url", i + 1);
        rv = check(ops, field, gc->endpoints[i]->url, err, err_len);
    }
    return rv;
}
