/* Cryptographically random bytes (OpenSSL's generator): message-id seeds,
 * signing keys, JWT ids, retry jitter. */
#ifndef QR_LIB_RANDOM_H
#define QR_LIB_RANDOM_H

#include <stddef.h>

/* Fills buf with len random bytes. Returns 0, or QR_EUNAVAIL when the
 * system has no randomness to give. */
int qr_random_bytes(void *buf, size_t len);

#endif /* QR_LIB_RANDOM_H */
