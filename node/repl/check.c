#include "repl/check.h"

#include <stdio.h>
#include <string.h>

#include "lib/err.h"

_Static_assert(QR_CHECK_MAX_MESSAGE_ID_BYTES == 92,
               "QR_CHECK_MESSAGE_ID_RULE names the bound");

bool qr_check_message_id(const char *id)
{
    if (id == NULL || id[0] == '\0') {
        return false;
    }
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++, n++) {
        if (n == QR_CHECK_MAX_MESSAGE_ID_BYTES || *p <= 0x20 || *p >= 0x7f) {
            return false;
        }
    }
    return true;
}

int qr_check_delivery_results(Qraft__DeliveryResult *const *results,
                              size_t n,
                              char *err,
                              size_t err_len)
{
    for (size_t i = 0; i < n; i++) {
        const Qraft__DeliveryResult *r = results[i];
        if (r == NULL || !qr_check_message_id(r->message_id)) {
            snprintf(err, err_len, "result %zu: invalid message id: %s", i,
                     QR_CHECK_MESSAGE_ID_RULE);
            return QR_EBADREQ;
        }
        if (r->outcome != QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED &&
            r->outcome != QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY &&
            r->outcome != QRAFT__ATTEMPT_OUTCOME__OUTCOME_DEAD) {
            snprintf(err, err_len, "result %zu (%s): unknown outcome %d", i,
                     r->message_id, (int)r->outcome);
            return QR_EBADREQ;
        }
    }
    return 0;
}
