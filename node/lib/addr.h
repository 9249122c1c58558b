/* Socket addresses from "HOST:PORT" strings: IPv4 dotted quads, and
 * "localhost" as 127.0.0.1 (the node's RPC listener, the peer client and
 * membership checks share this one reading). */
#ifndef QR_ADDR_H
#define QR_ADDR_H

#include <netinet/in.h>

/* Parses "a.b.c.d:port" or "localhost:port" (port 1..65535) into *out.
 * Returns 0 or QR_EBADREQ. */
int qr_addr_parse_ipv4(const char *hostport, struct sockaddr_in *out);

/* Says why a listener on hostport ("HOST:PORT", "[V6]:PORT"; HOST as
 * getaddrinfo reads it) cannot start, for a library that reports only that
 * it failed: binds and listens a throw-away socket there, as a listener
 * would (SO_REUSEADDR), and closes it. Returns 0 when that works now, or
 * -errno (-EADDRINUSE: the port is taken), or -EINVAL when hostport does not
 * resolve. */
int qr_addr_probe_listen(const char *hostport);

#endif /* QR_ADDR_H */
