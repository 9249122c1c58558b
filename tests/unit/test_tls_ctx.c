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
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "lib/tls_ctx.h"

static char dir[] = "/tmp/qraft-tls-ctx-XXXXXX";
static char ca_pem[256], node_pem[256], node_key[256], other_key[256];
static char other_ca_pem[256], client_pem[256], client_key[256];

static void path(char *out, const char *name)
{
    snprintf(out, 256, "%s/%s", dir, name);
}

static void write_key(const char *file, EVP_PKEY *key)
{
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL),
                     1);
    fclose(f);
}

static void write_cert(const char *file, X509 *cert)
{
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, cert), 1);
    fclose(f);
}

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    assert_non_null(ext);
    assert_int_equal(X509_add_ext(cert, ext, -1), 1);
    X509_EXTENSION_free(ext);
}

/* A certificate for cn with key, signed by issuer (NULL: itself) with
 * issuer_key; a CA when san is NULL. */
static X509 *make_cert(const char *cn,
                       EVP_PKEY *key,
                       X509 *issuer,
                       EVP_PKEY *issuer_key,
                       const char *san)
{
    static long serial = 1;
    X509 *cert = X509_new();
    assert_non_null(cert);
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
    X509_gmtime_adj(X509_getm_notBefore(cert), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(cert,
                         issuer != NULL ? X509_get_subject_name(issuer) : name);
    X509 *signer = issuer != NULL ? issuer : cert;
    if (san == NULL) {
        add_ext(cert, signer, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(cert, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(cert, signer, NID_basic_constraints, "critical,CA:FALSE");
        add_ext(cert, signer, NID_subject_alt_name, san);
    }
    assert_true(X509_sign(cert, issuer_key != NULL ? issuer_key : key,
                          EVP_sha256()) > 0);
    return cert;
}

static int setup(void **state)
{
    (void)state;
    if (mkdtemp(dir) == NULL) {
        return -1;
    }
    path(ca_pem, "ca.pem");
    path(node_pem, "node.pem");
    path(node_key, "node.key");
    path(other_key, "other.key");
    path(other_ca_pem, "other-ca.pem");
    path(client_pem, "client.pem");
    path(client_key, "client.key");

    EVP_PKEY *ca_k = EVP_EC_gen("P-256");
    EVP_PKEY *node_k = EVP_EC_gen("P-256");
    EVP_PKEY *other_k = EVP_EC_gen("P-256");
    EVP_PKEY *client_k = EVP_EC_gen("P-256");
    X509 *ca = make_cert("qraft test CA", ca_k, NULL, NULL, NULL);
    X509 *node = make_cert("node1", node_k, ca, ca_k,
                           "IP:127.0.0.1,DNS:node1.qraft.test");
    X509 *other_ca = make_cert("another CA", other_k, NULL, NULL, NULL);
    X509 *client = make_cert("client", client_k, ca, ca_k, "DNS:client");
    write_cert(ca_pem, ca);
    write_cert(node_pem, node);
    write_key(node_key, node_k);
    write_key(other_key, other_k);
    write_cert(other_ca_pem, other_ca);
    write_cert(client_pem, client);
    write_key(client_key, client_k);
    X509_free(ca);
    X509_free(node);
    X509_free(other_ca);
    X509_free(client);
    EVP_PKEY_free(ca_k);
    EVP_PKEY_free(node_k);
    EVP_PKEY_free(other_k);
    EVP_PKEY_free(client_k);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    const char *files[] = {ca_pem,       node_pem,   node_key,  other_key,
                           other_ca_pem, client_pem, client_key};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        unlink(files[i]);
    }
    rmdir(dir);
    return 0;
}

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_right_ca_and_name_pass_others_do_not),
        cmocka_unit_test(test_mutual_tls_needs_a_certificate_the_ca_signed),
        cmocka_unit_test(test_tls_1_1_is_refused),
        cmocka_unit_test(test_bad_files_are_named),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
