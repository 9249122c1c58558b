/* CRC-32C with the CPU's own instruction where it has one (x86-64's
 * SSE4.2 `crc32`, which computes exactly this CRC: about 3x the speed of the
 * tables), else in software, eight bytes a step ("slicing by 8"): table[0]
 * is the classic byte-at-a-time table; table[k][b] is the CRC of byte b
 * followed by k zero bytes, so eight lookups fold in eight bytes at once.
 * Which one runs is decided once, on first use; both give the same CRC
 * (tests/unit/test_crc32c.c compares them). */
#include "lib/crc32c.h"

#include <pthread.h>
#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;
static uint32_t (*crc_impl)(uint32_t crc, const uint8_t *p, size_t len);

static uint32_t crc_tables(uint32_t crc, const uint8_t *p, size_t len);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_HW_CRC 1
/* crc is the running (inverted) CRC, as in crc_tables. */
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t crc,
                                                            const uint8_t *p,
                                                            size_t len)
{
    uint64_t c = crc;
    while (len >= 8) {
        uint64_t word;
        memcpy(&word, p, sizeof word); /* unaligned, little-endian */
        c = __builtin_ia32_crc32di(c, word);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len > 0) {
        c32 = __builtin_ia32_crc32qi(c32, *p);
        p++;
        len--;
    }
    return c32;
}
#endif

static void build_table(void)
{
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int i = 0; i < 8; i++) {
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        }
        table[0][b] = c;
    }
    for (uint32_t b = 0; b < 256; b++) {
        for (int k = 1; k < 8; k++) {
            uint32_t c = table[k - 1][b];
            table[k][b] = (c >> 8) ^ table[0][c & 0xff];
        }
    }
    crc_impl = crc_tables;
#ifdef HAVE_HW_CRC
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        crc_impl = crc_sse42;
    }
#endif
}

static uint32_t load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint32_t crc_tables(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len >= 8) {
        uint32_t lo = load_le32(p) ^ crc;
        uint32_t hi = load_le32(p + 4);
        crc = table[7][lo & 0xff] ^ table[6][(lo >> 8) & 0xff] ^
              table[5][(lo >> 16) & 0xff] ^ table[4][lo >> 24] ^
              table[3][hi & 0xff] ^ table[2][(hi >> 8) & 0xff] ^
              table[1][(hi >> 16) & 0xff] ^ table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len > 0) {
        crc = (crc >> 8) ^ table[0][(crc ^ *p) & 0xff];
        p++;
        len--;
    }
    return crc;
}

uint32_t qr_crc32c(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&table_once, build_table);
    return ~crc_impl(~crc, buf, len);
}

uint32_t qr_crc32c_portable(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&table_once, build_table);
    return ~crc_tables(~crc, buf, len);
}
