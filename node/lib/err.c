#include "lib/err.h"

#include <string.h>

const char *qr_strerror(int rv)
{
    switch (rv) {
#define QR_ERR_CASE(name, value, text) \
    case name:                         \
        return text;
        QR_ERRORS(QR_ERR_CASE)
#undef QR_ERR_CASE
        default:
            break;
    }
    if (rv < 0 && rv > -4096) {
        return strerror(-rv);
    }
    return "unknown error";
}
