/* Certificates for the TLS unit tests (test_tls_ctx.c, test_tls_stream.c),
 * made with OpenSSL in a temporary directory by tls_certs_setup (a cmocka
 * group setup) and removed by tls_certs_teardown: a CA; a node certificate
 * for IP 127.0.0.1 and DNS node1.qraft.test with its key; a key that is not
 * the node's; another CA; a client certificate the CA signed, with its
 * key. Test support only: a header of static functions, included by one
 * test file each. */
#ifndef QR_TEST_TLS_CERTS_H
#define QR_TEST_TLS_CERTS_H

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char dir[] = "/tmp/qraft-tls-test-XXXXXX";
static char ca_pem[256], node_pem[256], node_key[256], other_key[256];
static char other_ca_pem[256], client_pem[256], client_key[256];

static inline void path(char *out, const char *name)
{
    snprintf(out, 256, "%s/%s", dir, name);
}

static inline void write_key(const char *file, EVP_PKEY *key)
{
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL),
                     1);
    fclose(f);
}

static inline void write_cert(const char *file, X509 *cert)
{
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, cert), 1);
    fclose(f);
}

static inline void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
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

static inline int tls_certs_setup(void **state)
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

static inline int tls_certs_teardown(void **state)
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

#endif /* QR_TEST_TLS_CERTS_H */
