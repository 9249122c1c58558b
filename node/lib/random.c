/* Random bytes from OpenSSL (see random.h). */
#include "lib/random.h"

#include <openssl/rand.h>

#include "lib/err.h"

int qr_random_bytes(void *buf, size_t len)
{
    if (RAND_bytes(buf, (int)len) != 1) {
        return QR_EUNAVAIL;
    }
    return 0;
}
