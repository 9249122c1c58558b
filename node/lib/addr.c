#include "lib/addr.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "lib/err.h"

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

int qr_addr_probe_listen(const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    const char *start = hostport;
    size_t len;
    struct addrinfo hints;
    struct addrinfo *res;
    int one = 1;
    int fd;
    int rv = 0;

    if (colon == NULL) {
        return -EINVAL;
    }
    len = (size_t)(colon - hostport);
    if (len >= 2 && hostport[0] == '[' && hostport[len - 1] == ']') {
        start++;
        len -= 2;
    }
    if (len >= sizeof host) {
        return -EINVAL;
    }
    memcpy(host, start, len);
    host[len] = '\0';
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if (getaddrinfo(len > 0 ? host : NULL, colon + 1, &hints, &res) != 0) {
        return -EINVAL;
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rv = -errno;
        goto out;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1) != 0) {
        rv = -errno;
    }
    close(fd);
out:
    freeaddrinfo(res);
    return rv;
}
