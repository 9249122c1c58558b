/* /v2/keys and /v2/keys/rotate (also /v2/rotate): the signing keys. */
#include "api/rest_int.h"

#include "lib/json_text.h"

static json_t *keys_json(struct rest_call *c, const Qraft__Response *resp)
{
    (void)c;
    return json_pack("{s:o,s:o}", "current", qr_json_text(resp->keys->current),
                     "next", qr_json_text(resp->keys->next));
}

/* GET /v2/keys; POST /v2/keys/rotate and /v2/rotate (REST_ROTATE). */
void qr_rest_keys(struct qr_rest *r, h2o_req_t *req, const struct rest_match *m)
{
    Qraft__KeysRequest keys = QRAFT__KEYS_REQUEST__INIT;

    keys.rotate = m->op == REST_ROTATE;
    QR_REST_RUN(r, req, KEYS, keys, &keys,
                &(struct rest_answer){.want = QRAFT__RESPONSE__BODY_KEYS,
                                      .build = keys_json});
}
