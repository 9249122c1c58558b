/* Unit tests of node/lib/dest.c: the SSRF guard's address classifier (a
 * table of literal spellings: IPv4 in every form curl takes, IPv6, the
 * IPv6 forms that carry an IPv4 address), the policy and the parser of
 * --allow-destinations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "lib/dest.h"

#define NOT_AN_ADDRESS (-1)

static const struct {
    const char *text;
    int cls; /* enum qr_dest_class, or NOT_AN_ADDRESS */
} CASES[] = {
    /* IPv4, dotted quads */
    {"8.8.8.8", QR_DEST_PUBLIC},
    {"127.0.0.1", QR_DEST_LOOPBACK},
    {"127.255.255.254", QR_DEST_LOOPBACK},
    {"169.254.169.254", QR_DEST_LINK_LOCAL},
    {"10.1.2.3", QR_DEST_PRIVATE},
    {"172.16.0.1", QR_DEST_PRIVATE},
    {"172.31.255.255", QR_DEST_PRIVATE},
    {"172.32.0.1", QR_DEST_PUBLIC},
    {"172.15.255.255", QR_DEST_PUBLIC},
    {"192.168.1.1", QR_DEST_PRIVATE},
    {"100.100.100.200", QR_DEST_PRIVATE},
    {"100.128.0.1", QR_DEST_PUBLIC},
    {"224.0.0.1", QR_DEST_MULTICAST},
    {"239.255.255.250", QR_DEST_MULTICAST},
    {"0.0.0.0", QR_DEST_UNSPECIFIED},
    {"0.1.2.3", QR_DEST_UNSPECIFIED},
    {"255.255.255.255", QR_DEST_RESERVED},
    {"240.0.0.1", QR_DEST_RESERVED},
    {"127.0.0.1.", QR_DEST_LOOPBACK},
    /* IPv4 as inet_aton and curl read it */
    {"2130706433", QR_DEST_LOOPBACK},   /* decimal 127.0.0.1 */
    {"0x7f000001", QR_DEST_LOOPBACK},   /* hex */
    {"0177.0.0.1", QR_DEST_LOOPBACK},   /* octal first part */
    {"017700000001", QR_DEST_LOOPBACK}, /* octal whole */
    {"0x7f.1", QR_DEST_LOOPBACK},
    {"127.1", QR_DEST_LOOPBACK},
    {"0XA9.0xFE.0251.0376", QR_DEST_LINK_LOCAL}, /* 169.254.169.254 */
    {"2852039166", QR_DEST_LINK_LOCAL},
    {"0", QR_DEST_UNSPECIFIED},
    {"012.0.0.1", QR_DEST_PRIVATE}, /* octal 10 */
    {"134744072", QR_DEST_PUBLIC},  /* 8.8.8.8 */
    /* IPv6 */
    {"::1", QR_DEST_LOOPBACK},
    {"[::1]", QR_DEST_LOOPBACK},
    {"[0:0:0:0:0:0:0:1]", QR_DEST_LOOPBACK},
    {"::", QR_DEST_UNSPECIFIED},
    {"[::]", QR_DEST_UNSPECIFIED},
    {"fe80::1", QR_DEST_LINK_LOCAL},
    {"[fe80::1%eth0]", QR_DEST_LINK_LOCAL},
    {"[fe80::1%25eth0]", QR_DEST_LINK_LOCAL},
    {"febf::1", QR_DEST_LINK_LOCAL},
    {"fc00::1", QR_DEST_PRIVATE},
    {"fd12:3456::1", QR_DEST_PRIVATE},
    {"fec0::1", QR_DEST_PRIVATE},
    {"ff02::1", QR_DEST_MULTICAST},
    {"2001:4860:4860::8888", QR_DEST_PUBLIC},
    {"fe00::1", QR_DEST_PUBLIC},
    /* IPv6 carrying IPv4 */
    {"[::ffff:127.0.0.1]", QR_DEST_LOOPBACK}, /* mapped */
    {"::ffff:7f00:1", QR_DEST_LOOPBACK},
    {"[::ffff:169.254.169.254]", QR_DEST_LINK_LOCAL},
    {"::ffff:a9fe:a9fe", QR_DEST_LINK_LOCAL},
    {"::ffff:10.0.0.1", QR_DEST_PRIVATE},
    {"::ffff:8.8.8.8", QR_DEST_PUBLIC},
    {"::127.0.0.1", QR_DEST_LOOPBACK}, /* compatible */
    {"::10.0.0.1", QR_DEST_PRIVATE},
    {"::2", QR_DEST_UNSPECIFIED},                     /* ::0.0.0.2 */
    {"::ffff:0:127.0.0.1", QR_DEST_LOOPBACK},         /* SIIT */
    {"64:ff9b::169.254.169.254", QR_DEST_LINK_LOCAL}, /* NAT64 */
    {"64:ff9b::808:808", QR_DEST_PUBLIC},
    /* names and garbage */
    {"localhost", NOT_AN_ADDRESS},
    {"example.com", NOT_AN_ADDRESS},
    {"1.2.3.4.5", NOT_AN_ADDRESS},
    {"127.0.0.1 junk", NOT_AN_ADDRESS},
    {"999999999999", NOT_AN_ADDRESS},
    {"deadbeef", NOT_AN_ADDRESS},
    {"[::1", NOT_AN_ADDRESS},
    {"::1]", NOT_AN_ADDRESS},
    {"", NOT_AN_ADDRESS},
    {":::", NOT_AN_ADDRESS},
};

static void test_classify_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        struct qr_dest_addr a;
        int rv = qr_dest_parse_addr(CASES[i].text, &a);
        int got = rv != 0 ? NOT_AN_ADDRESS : (int)qr_dest_classify(&a);
        if (got != CASES[i].cls) {
            fail_msg("'%s': class %d (%s), want %d", CASES[i].text, got,
                     got >= 0 ? qr_dest_class_name(got) : "not an address",
                     CASES[i].cls);
        }
    }
}

static void test_from_sockaddr(void **state)
{
    (void)state;
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    struct qr_dest_addr a;
    assert_int_equal(inet_pton(AF_INET6, "::ffff:127.0.0.1", &in6.sin6_addr),
                     1);
    assert_int_equal(
        qr_dest_from_sockaddr((struct sockaddr *)&in6, sizeof in6, &a), 0);
    assert_int_equal(a.family, AF_INET);
    assert_int_equal(qr_dest_classify(&a), QR_DEST_LOOPBACK);

    struct sockaddr_in in = {.sin_family = AF_INET};
    in.sin_addr.s_addr = htonl(0xa9fea9fe);
    assert_int_equal(
        qr_dest_from_sockaddr((struct sockaddr *)&in, sizeof in, &a), 0);
    assert_int_equal(qr_dest_classify(&a), QR_DEST_LINK_LOCAL);

    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_int_equal(qr_dest_from_sockaddr(&un, sizeof un, &a), -EAFNOSUPPORT);
}

static bool allowed(const struct qr_dest_policy *p, const char *text)
{
    struct qr_dest_addr a;
    assert_int_equal(qr_dest_parse_addr(text, &a), 0);
    return qr_dest_allowed(p, &a, NULL);
}

static void test_policy(void **state)
{
    (void)state;
    struct qr_dest_policy p = {0};
    char err[256];
    /* Nothing open: public addresses only. */
    assert_true(allowed(&p, "8.8.8.8"));
    assert_true(allowed(&p, "2001:db8::1"));
    assert_false(allowed(&p, "127.0.0.1"));
    assert_false(allowed(&p, "::ffff:127.0.0.1"));
    assert_false(allowed(&p, "::1"));
    assert_false(allowed(&p, "169.254.169.254"));
    assert_false(allowed(&p, "10.0.0.1"));

    /* Loopback opens loopback only. */
    p.allow_loopback = true;
    assert_true(allowed(&p, "127.0.0.2"));
    assert_true(allowed(&p, "[::ffff:127.0.0.1]"));
    assert_true(allowed(&p, "::1"));
    assert_false(allowed(&p, "169.254.169.254"));
    assert_false(allowed(&p, "0.0.0.0"));
    assert_false(allowed(&p, "fd00::1"));

    /* Networks open what they contain, in any spelling. */
    p.allow_loopback = false;
    assert_int_equal(
        qr_dest_parse_nets("10.0.0.0/8,fd00::/8,192.168.1.5,127.0.0.2/32", &p,
                           err, sizeof err),
        0);
    assert_int_equal(p.n_nets, 4);
    assert_true(allowed(&p, "10.200.0.1"));
    assert_true(allowed(&p, "::ffff:10.0.0.1"));
    assert_true(allowed(&p, "012.0.0.1"));
    assert_false(allowed(&p, "172.16.0.1"));
    assert_true(allowed(&p, "fd12::1"));
    assert_false(allowed(&p, "fc00::1"));
    assert_true(allowed(&p, "192.168.1.5"));
    assert_false(allowed(&p, "192.168.1.6"));
    assert_true(allowed(&p, "127.0.0.2"));
    assert_false(allowed(&p, "127.0.0.1"));
    assert_false(allowed(&p, "169.254.169.254"));

    /* A mapped network is the IPv4 one. */
    assert_int_equal(
        qr_dest_parse_nets("::ffff:169.254.169.0/120", &p, err, sizeof err), 0);
    assert_true(allowed(&p, "169.254.169.254"));
    assert_false(allowed(&p, "169.254.0.1"));

    assert_int_equal(qr_dest_parse_nets("none", &p, err, sizeof err), 0);
    assert_int_equal(p.n_nets, 0);
}

static void test_parse_nets_refuses(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        ",",
        "10.0.0.1/8",        /* host bits */
        "10.0.0.0/33",       /* prefix */
        "fd00::/129",        /* prefix */
        "10.0.0.0/",         /* no prefix */
        "10.0.0.0/-1",       /* sign */
        "10.0.0.0/8x",       /* junk */
        "example.com",       /* a name */
        "2130706433",        /* operators spell networks plainly */
        "[::1]",             /* no brackets */
        "10.0.0.0/8,bad",    /* one bad entry */
        "::ffff:10.0.0.0/8", /* a mapped network under /96 */
        "none,10.0.0.0/8",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct qr_dest_policy p = {0};
        char err[256] = "";
        if (qr_dest_parse_nets(bad[i], &p, err, sizeof err) != -EINVAL) {
            fail_msg("'%s' was taken", bad[i]);
        }
        assert_int_equal(p.n_nets, 0);
        assert_true(err[0] != '\0');
    }
}

static void test_policy_format(void **state)
{
    (void)state;
    struct qr_dest_policy p = {0};
    char err[256], buf[QR_DEST_POLICY_TEXT_BYTES];
    qr_dest_policy_format(&p, buf, sizeof buf);
    assert_string_equal(buf, "nothing");
    p.allow_loopback = true;
    assert_int_equal(
        qr_dest_parse_nets("10.0.0.0/8,fd00::/8", &p, err, sizeof err), 0);
    qr_dest_policy_format(&p, buf, sizeof buf);
    assert_string_equal(buf, "loopback, 10.0.0.0/8, fd00::/8");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_table),
        cmocka_unit_test(test_from_sockaddr),
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_parse_nets_refuses),
        cmocka_unit_test(test_policy_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
