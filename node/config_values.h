/* Values of qraftd's settings, parsed strictly whatever their source (a
 * flag, a config file key, an environment variable): durations, integers,
 * byte counts and HOST:PORT addresses. No partial results: an output is
 * written only when its input is taken whole. */
#ifndef QR_CONFIG_VALUES_H
#define QR_CONFIG_VALUES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parses a duration: one or more <number><unit> with unit ms, s, m, h or d
 * ("1d10h30m", "1.5s", "500ms"); a number is digits with an optional
 * decimal part. A bare number on its own is seconds. Returns 0 or
 * QR_EBADREQ; rejects signs, exponents, hex, overflow and trailing
 * garbage. */
int qr_config_parse_duration_ms(const char *s, uint64_t *out);

/* Digits only, in min..max. Returns 0 or QR_EBADREQ. */
int qr_config_parse_u64(const char *s,
                        uint64_t min,
                        uint64_t max,
                        uint64_t *out);

/* A byte count: digits, then optionally one of k, m, g, t (binary
 * multiples, either case); in min..max. Returns 0 or QR_EBADREQ. */
int qr_config_parse_bytes(const char *s,
                          uint64_t min,
                          uint64_t max,
                          uint64_t *out);

/* "HOST:PORT" with a non-empty host and a port in 1..65535, shorter than
 * QR_ADDR_MAX. Returns 0 or QR_EBADREQ. */
int qr_config_check_hostport(const char *s);

/* Rewrites hostport (a checked HOST:PORT in a buffer of size bytes) with
 * HOST resolved to its first IPv4 address, as the raft library needs.
 * Returns 0, or QR_EBADREQ with errmsg (QR_ERRMSG_BYTES) naming flag. */
int qr_config_resolve_ipv4(char *hostport,
                           size_t size,
                           char *errmsg,
                           const char *flag);

/* "IPV4:PORT" with a dotted-quad address (an address to bind, no name to
 * resolve). Returns 0, or QR_EBADREQ with errmsg (QR_ERRMSG_BYTES) naming
 * flag. */
int qr_config_check_ipv4_port(const char *s, char *errmsg, const char *flag);

/* Whether a listener on hostport ("HOST:PORT", "[V6]:PORT") takes
 * connections from this machine only. */
bool qr_config_on_loopback(const char *hostport);

#endif /* QR_CONFIG_VALUES_H */
