/* Unit tests of node/lib/tls_ctx.c: contexts from certificate files, and
 * what they let through in a real handshake (two SSL objects joined by
 * memory BIOs): the right CA and name pass; another name, a key that is
 * not the certificate's, a missing file, a client without a certificate
 * where one is required, and TLS 1.1 do not. The certificates are made
 * here with OpenSSL (a CA, a node certificate for 127.0.0.1 and
 * node1.qraft.test, a certificate of another CA). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "lib/tls_ctx.h"
#include "tls_test_certs.h"

/* Runs a handshake between a server and a client SSL in memory; true
 * when both ends complete it. */
static bool handshake(SSL_CTX *server_ctx,
                      SSL_CTX *client_ctx,
                      const char *host)
{
    SSL *server = SSL_new(server_ctx);
    SSL *client = SSL_new(client_ctx);
    assert_non_null(server);
    assert_non_null(client);
    BIO *s_in = BIO_new(BIO_s_mem()), *s_out = BIO_new(BIO_s_mem());
    BIO *c_in = BIO_new(BIO_s_mem()), *c_out = BIO_new(BIO_s_mem());
    SSL_set_bio(server, s_in, s_out);
    SSL_set_bio(client, c_in, c_out);
    SSL_set_accept_state(server);
    SSL_set_connect_state(client);
    if (host != NULL) {
        assert_int_equal(qr_tls_client_expect(client, host), 0);
    }
    bool s_done = false, c_done = false, failed = false;
    for (int round = 0; round < 20 && !failed && !(s_done && c_done); round++) {
        if (!c_done) {
            int r = SSL_do_handshake(client);
            c_done = r == 1;
            failed = r <= 0 && SSL_get_error(client, r) != SSL_ERROR_WANT_READ;
        }
        char buf[16384];
        int n;
        while ((n = BIO_read(c_out, buf, sizeof buf)) > 0) {
            BIO_write(s_in, buf, n);
        }
        if (!s_done && !failed) {
            int r = SSL_do_handshake(server);
            s_done = r == 1;
            failed = r <= 0 && SSL_get_error(server, r) != SSL_ERROR_WANT_READ;
        }
        while ((n = BIO_read(s_out, buf, sizeof buf)) > 0) {
            BIO_write(c_in, buf, n);
        }
    }
    /* TLS 1.3: the server checks a client's certificate after the client
     * has finished; one more read on the server settles it. */
    if (s_done && c_done && !failed) {
        char b;
        int r = SSL_read(server, &b, 1);
        failed = r <= 0 && SSL_get_error(server, r) != SSL_ERROR_WANT_READ;
    }
    SSL_free(server);
    SSL_free(client);
    ERR_clear_error();
    return s_done && c_done && !failed;
}

static SSL_CTX *server_ctx(bool verify_client)
{
    struct qr_tls_files f = {.cert = node_pem, .key = node_key, .ca = ca_pem};
    SSL_CTX *ctx = NULL;
    char err[512];
    assert_int_equal(
        qr_tls_server_ctx(&f, verify_client, &ctx, err, sizeof err), 0);
    return ctx;
}

static SSL_CTX *client_ctx(const char *ca, const char *cert, const char *key)
{
    struct qr_tls_files f = {.cert = cert, .key = key, .ca = ca};
    SSL_CTX *ctx = NULL;
    char err[512];
    assert_int_equal(qr_tls_client_ctx(&f, &ctx, err, sizeof err), 0);
    return ctx;
}

static void test_the_right_ca_and_name_pass_others_do_not(void **state)
{
    (void)state;
    SSL_CTX *s = server_ctx(false);
    SSL_CTX *c = client_ctx(ca_pem, NULL, NULL);
    assert_true(handshake(s, c, "127.0.0.1"));
    assert_true(handshake(s, c, "node1.qraft.test"));
    assert_false(handshake(s, c, "127.0.0.2"));
    assert_false(handshake(s, c, "node2.qraft.test"));
    SSL_CTX *wrong = client_ctx(other_ca_pem, NULL, NULL);
    assert_false(handshake(s, wrong, "127.0.0.1"));
    SSL_CTX_free(wrong);
    SSL_CTX_free(c);
    SSL_CTX_free(s);
}

static void test_mutual_tls_needs_a_certificate_the_ca_signed(void **state)
{
    (void)state;
    SSL_CTX *s = server_ctx(true);
    SSL_CTX *anonymous = client_ctx(ca_pem, NULL, NULL);
    SSL_CTX *member = client_ctx(ca_pem, client_pem, client_key);
    assert_false(handshake(s, anonymous, "127.0.0.1"));
    assert_true(handshake(s, member, "127.0.0.1"));
    SSL_CTX_free(member);
    SSL_CTX_free(anonymous);
    SSL_CTX_free(s);

    struct qr_tls_files no_ca = {.cert = node_pem, .key = node_key};
    SSL_CTX *ctx = NULL;
    char err[512];
    assert_int_equal(qr_tls_server_ctx(&no_ca, true, &ctx, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "CA"));
}

static void test_tls_1_1_is_refused(void **state)
{
    (void)state;
    SSL_CTX *s = server_ctx(false);
    SSL_CTX *old = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(old, TLS1_VERSION);
    SSL_CTX_set_max_proto_version(old, TLS1_1_VERSION);
    SSL_CTX_set_security_level(old, 0);
    assert_false(handshake(s, old, NULL));
    SSL_CTX_free(old);
    SSL_CTX_free(s);
}

static void test_bad_files_are_named(void **state)
{
    (void)state;
    SSL_CTX *ctx = NULL;
    char err[512];
    struct qr_tls_files mismatched = {.cert = node_pem, .key = other_key};
    assert_int_equal(
        qr_tls_server_ctx(&mismatched, false, &ctx, err, sizeof err), -1);
    assert_null(ctx);
    assert_non_null(strstr(err, other_key));

    char missing[300];
    snprintf(missing, sizeof missing, "%s/none.pem", dir);
    struct qr_tls_files absent = {.cert = missing, .key = node_key};
    assert_int_equal(qr_tls_server_ctx(&absent, false, &ctx, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, missing));

    struct qr_tls_files half = {.cert = client_pem, .ca = ca_pem};
    assert_int_equal(qr_tls_client_ctx(&half, &ctx, err, sizeof err), -1);
    assert_false(qr_tls_enabled(&half));
    struct qr_tls_files none = {0};
    assert_int_equal(qr_tls_server_ctx(&none, false, &ctx, err, sizeof err),
                     -1);
}

/* The node id of a certificate with san, or 0 when it names none. */
static uint64_t node_id_of(const char *san)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    assert_non_null(key);
    X509 *cert = make_cert("n", key, NULL, key, san);
    uint64_t id = 0;
    if (qr_tls_cert_node_id(cert, &id) != 0) {
        id = 0;
    }
    X509_free(cert);
    EVP_PKEY_free(key);
    return id;
}

static void test_node_id_from_the_subject_alt_name(void **state)
{
    (void)state;
    assert_int_equal(node_id_of("IP:127.0.0.1,URI:qraft:node:7"), 7);
    assert_true(node_id_of("URI:qraft:node:18446744073709551615") ==
                UINT64_MAX);
    assert_int_equal(node_id_of("IP:127.0.0.1"), 0);
    assert_int_equal(node_id_of("URI:qraft:node:0"), 0);
    assert_int_equal(node_id_of("URI:qraft:node:18446744073709551616"), 0);
    assert_int_equal(node_id_of("URI:qraft:node:12x"), 0);
    assert_int_equal(node_id_of("URI:qraft:node:"), 0);
    assert_int_equal(node_id_of("URI:https://qraft:node:3"), 0);
    /* Two ids: which one would be a guess. */
    assert_int_equal(node_id_of("URI:qraft:node:1,URI:qraft:node:2"), 0);
    assert_int_equal(qr_tls_cert_node_id(NULL, &(uint64_t){0}), -1);
}

static void test_not_after_of_a_file(void **state)
{
    (void)state;
    int64_t not_after = 0;
    char err[512];
    assert_int_equal(
        qr_tls_file_not_after(node_pem, &not_after, err, sizeof err), 0);
    int64_t now = (int64_t)time(NULL);
    assert_true(not_after > now + 3000 && not_after <= now + 3600);
    assert_int_equal(
        qr_tls_file_not_after(node_key, &not_after, err, sizeof err), -1);
    assert_non_null(strstr(err, "no certificate"));
    assert_int_equal(
        qr_tls_file_not_after("/nonexistent.pem", &not_after, err, sizeof err),
        -1);
    assert_non_null(strstr(err, "/nonexistent.pem"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_right_ca_and_name_pass_others_do_not),
        cmocka_unit_test(test_mutual_tls_needs_a_certificate_the_ca_signed),
        cmocka_unit_test(test_tls_1_1_is_refused),
        cmocka_unit_test(test_bad_files_are_named),
        cmocka_unit_test(test_node_id_from_the_subject_alt_name),
        cmocka_unit_test(test_not_after_of_a_file),
    };
    return cmocka_run_group_tests(tests, tls_certs_setup, tls_certs_teardown);
}
