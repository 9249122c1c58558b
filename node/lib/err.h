/* Error codes of the node. Functions return 0 on success and a negative code
 * on failure: -errno passes through unchanged, qraft's own codes start at
 * -1000 and are listed once, in QR_ERRORS. qr_strerror names either kind. */
#ifndef QR_ERR_H
#define QR_ERR_H

/* X(name, value, text) */
#define QR_ERRORS(X)                          \
    X(QR_ENOTFOUND, -1000, "not found")       \
    X(QR_ENOTLEADER, -1001, "not the leader") \
    X(QR_ETOOLARGE, -1002, "too large")       \
    X(QR_EBADREQ, -1003, "bad request")       \
    X(QR_ESTORE, -1004, "store failed")       \
    X(QR_ECORRUPT, -1005, "corrupt data")     \
    X(QR_EUNAVAIL, -1006, "unavailable")      \
    X(QR_ETIMEOUT, -1007, "timed out")        \
    X(QR_ECANCELED, -1008, "canceled")        \
    X(QR_EAUTH, -1009, "unauthorized")        \
    X(QR_EPROTO, -1010, "protocol error")     \
    X(QR_ECONFLICT, -1011, "conflict")        \
    X(QR_EUNKNOWN, -1012, "outcome unknown")  \
    X(QR_ERAFT, -1013, "raft error")          \
    X(QR_ENOTSENT, -1014, "not sent")         \
    X(QR_ENOSPACE, -1015, "insufficient storage")

enum {
#define QR_ERR_ENUM(name, value, text) name = value,
    QR_ERRORS(QR_ERR_ENUM)
#undef QR_ERR_ENUM
};

/* Returns a static description of rv (a QR_E* code or a negative errno). */
const char *qr_strerror(int rv);

/* Size of the `errmsg` buffers that objects keep for context. */
#define QR_ERRMSG_BYTES 256

#endif /* QR_ERR_H */
