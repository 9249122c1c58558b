/* Unit tests of node/lib/addr.c: reading HOST:PORT, and the probe that
 * names why a listener cannot start. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lib/addr.h"
#include "lib/err.h"

/* A socket listening on 127.0.0.1 at a port the kernel picked. */
static int listen_any(int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 1), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void test_parse_ipv4(void **state)
{
    struct sockaddr_in a;

    (void)state;
    assert_int_equal(qr_addr_parse_ipv4("127.0.0.1:7100", &a), 0);
    assert_int_equal(ntohs(a.sin_port), 7100);
    assert_int_equal(qr_addr_parse_ipv4("localhost:1", &a), 0);
    assert_int_equal(qr_addr_parse_ipv4("127.0.0.1:0", &a), QR_EBADREQ);
    assert_int_equal(qr_addr_parse_ipv4("127.0.0.1", &a), QR_EBADREQ);
    assert_int_equal(qr_addr_parse_ipv4("nowhere:80", &a), QR_EBADREQ);
}

static void test_probe_names_a_taken_port(void **state)
{
    char hostport[64];
    int port;
    int fd = listen_any(&port);

    (void)state;
    snprintf(hostport, sizeof hostport, "127.0.0.1:%d", port);
    assert_int_equal(qr_addr_probe_listen(hostport), -EADDRINUSE);
    snprintf(hostport, sizeof hostport, "localhost:%d", port);
    assert_int_equal(qr_addr_probe_listen(hostport), -EADDRINUSE);
    close(fd);
    /* Free again (SO_REUSEADDR, as listeners bind). */
    snprintf(hostport, sizeof hostport, "127.0.0.1:%d", port);
    assert_int_equal(qr_addr_probe_listen(hostport), 0);
}

static void test_probe_refuses_what_does_not_resolve(void **state)
{
    (void)state;
    assert_int_equal(qr_addr_probe_listen("127.0.0.1"), -EINVAL);
    assert_int_equal(qr_addr_probe_listen("127.0.0.1:http"), -EINVAL);
    /* An address this host does not have. */
    assert_int_equal(qr_addr_probe_listen("192.0.2.1:7200"), -EADDRNOTAVAIL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ipv4),
        cmocka_unit_test(test_probe_names_a_taken_port),
        cmocka_unit_test(test_probe_refuses_what_does_not_resolve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
