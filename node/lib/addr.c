#include "addr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "err.h"

int qr_addr_parse_ipv4(const char *hostport, struct sockaddr_in *out)
{
    char host[64];
    const char *colon = strrchr(hostport, ':');
    if (colon == NULL || (size_t)(colon - hostport) >= sizeof host) {
        return QR_EBADREQ;
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || port <= 0 || port > 65535) {
        return QR_EBADREQ;
    }
    if (strcmp(host, "localhost") == 0) {
        snprintf(host, sizeof host, "127.0.0.1");
    }
    if (uv_ip4_addr(host, (int)port, out) != 0) {
        return QR_EBADREQ;
    }
    return 0;
}
