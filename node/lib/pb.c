#include "lib/pb.h"

#include <stdint.h>
#include <stdlib.h>

/* The message a singular message field of m points at, or NULL (unset, or
 * a oneof member other than the set one). */
static ProtobufCMessage *field_message(ProtobufCMessage *m,
                                       const ProtobufCFieldDescriptor *f)
{
    char *base = (char *)m;
    if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0) {
        uint32_t set_case = *(uint32_t *)(base + f->quantifier_offset);
        if (set_case != f->id) {
            return NULL;
        }
    }
    return *(ProtobufCMessage **)(base + f->offset);
}

void qr_pb_drop_unknown(ProtobufCMessage *m)
{
    if (m == NULL) {
        return;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) {
            continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            char *base = (char *)m;
            size_t n = *(size_t *)(base + f->quantifier_offset);
            ProtobufCMessage **items =
                *(ProtobufCMessage ***)(base + f->offset);
            for (size_t k = 0; k < n; k++) {
                qr_pb_drop_unknown(items[k]);
            }
        } else {
            qr_pb_drop_unknown(field_message(m, f));
        }
    }
    for (unsigned k = 0; k < m->n_unknown_fields; k++) {
        free(m->unknown_fields[k].data);
    }
    free(m->unknown_fields);
    m->unknown_fields = NULL;
    m->n_unknown_fields = 0;
}
