/* A fake resolver for integration tests: preloaded into qraftd
 * (LD_PRELOAD), it answers getaddrinfo for the names listed in
 * QRAFT_TEST_FAKE_HOSTS ("name=address,name=address", addresses numeric)
 * with those addresses, and passes every other name to the C library.
 * libcurl's resolver (threaded, getaddrinfo) then hands the delivery
 * engine an address no real DNS or /etc/hosts gave, so a test can show
 * that a name resolving to 169.254.169.254 or 10.x is refused at connect
 * time without touching the machine's resolver. The daemon is not built
 * differently: nothing of this is in qraftd. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ENV_NAME "QRAFT_TEST_FAKE_HOSTS"

typedef int (*getaddrinfo_fn)(const char *node,
                              const char *service,
                              const struct addrinfo *hints,
                              struct addrinfo **res);

/* The address listed for node, into addr; false when none is. */
static bool lookup(const char *node, char *addr, size_t size)
{
    const char *map = getenv(ENV_NAME);
    size_t node_len = strlen(node);
    while (map != NULL && *map != '\0') {
        const char *end = strchr(map, ',');
        size_t len = end != NULL ? (size_t)(end - map) : strlen(map);
        const char *eq = memchr(map, '=', len);
        if (eq != NULL && (size_t)(eq - map) == node_len &&
            strncasecmp(map, node, node_len) == 0) {
            size_t a_len = len - node_len - 1;
            if (a_len >= size) {
                return false;
            }
            memcpy(addr, eq + 1, a_len);
            addr[a_len] = '\0';
            return true;
        }
        map = end != NULL ? end + 1 : NULL;
    }
    return false;
}

int getaddrinfo(const char *node,
                const char *service,
                const struct addrinfo *hints,
                struct addrinfo **res)
{
    getaddrinfo_fn real = (getaddrinfo_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    char addr[64];
    if (real == NULL) {
        return EAI_SYSTEM;
    }
    if (node == NULL || !lookup(node, addr, sizeof addr)) {
        return real(node, service, hints, res);
    }
    struct addrinfo h = {0};
    if (hints != NULL) {
        h = *hints;
    }
    /* A numeric answer: no lookup, and no AI_ADDRCONFIG filter (a test
     * machine may have no address of that family but loopback). */
    h.ai_flags = (h.ai_flags | AI_NUMERICHOST) & ~AI_ADDRCONFIG;
    return real(addr, service, &h, res);
}
