/* Checks of request fields that every face runs before it proposes: the
 * REST API, the client RPC and the peer requests (delivery results) answer
 * a bad field with a 4xx and propose nothing.
 *
 * These checks guard the faces, not apply: apply never trusts them (see
 * fsm.c, "Apply is total"), so a field one face forgot to check is refused
 * by apply on every replica alike instead of stopping them. Pure: no I/O,
 * no allocation. */
#ifndef QR_CHECK_H
#define QR_CHECK_H

#include <stdbool.h>
#include <stddef.h>

#include "qraft.pb-c.h"
#include "repl/command.h"

/* Longest message id a request may name, in bytes (qraft's own ids are
 * QR_ID_BYTES - 1 long; the bound leaves room for longer ones). */
#define QR_CHECK_MAX_MESSAGE_ID_BYTES (QR_ID_BYTES + 63)

/* Whether id can name a message: 1 to QR_CHECK_MAX_MESSAGE_ID_BYTES bytes
 * of printable ASCII (what every id qraft gives out is). NULL is not. */
bool qr_check_message_id(const char *id);

/* The sentence a face answers when qr_check_message_id refused an id. */
#define QR_CHECK_MESSAGE_ID_RULE                                          \
    "a message id is 1 to 92 bytes of printable ASCII (qraft's ids look " \
    "like msg_...)"

/* Checks a peer's delivery results: each names a message by a valid id
 * and has a known outcome. Returns 0, or QR_EBADREQ with a one-line reason that
 * names the result's position in err (err_len bytes, NUL-terminated). */
int qr_check_delivery_results(Qraft__DeliveryResult *const *results,
                              size_t n,
                              char *err,
                              size_t err_len);

#endif /* QR_CHECK_H */
