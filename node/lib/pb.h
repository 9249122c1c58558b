/* Helpers over protobuf-c messages that every face may use. Pure: no I/O.
 *
 * qr_pb_drop_unknown exists because protobuf-c 1.4 keeps the fields it does
 * not know and packs them again, and one of them (field 0 written as a
 * two-byte tag, 85 00) packs to bytes it then refuses to decode: a request
 * copied into a command would have made an entry no replica can decode,
 * which stops every replica (docs/fuzzing.md, finding F1). A face drops
 * what it does not know as it decodes a request, so nothing it proposes
 * carries bytes this version did not check. */
#ifndef QR_PB_H
#define QR_PB_H

#include <protobuf-c/protobuf-c.h>

/* Drops the unknown fields of m and of every message m holds (in set oneof
 * members and repeated fields), in place, freeing them. m (may be NULL)
 * must come from an unpack with the default allocator. */
void qr_pb_drop_unknown(ProtobufCMessage *m);

#endif /* QR_PB_H */
