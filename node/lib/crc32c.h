/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum the
 * store keeps with every value. Pure and thread-safe: its tables (and the
 * choice of the CPU's instruction where there is one) are made once, on
 * first use, under pthread_once. */
#ifndef QR_CRC32C_H
#define QR_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* The CRC-32C of len bytes at buf (borrowed), continuing from crc: start
 * with 0; qr_crc32c(qr_crc32c(0, a, n), b, m) is the CRC of a then b. The
 * CRC of "123456789" is 0xE3069283. */
uint32_t qr_crc32c(uint32_t crc, const void *buf, size_t len);

/* The same CRC by the portable tables whatever the CPU has: for the tests
 * that hold the fast path to it. */
uint32_t qr_crc32c_portable(uint32_t crc, const void *buf, size_t len);

#endif /* QR_CRC32C_H */
