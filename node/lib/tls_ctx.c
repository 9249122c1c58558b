#include "lib/tls_ctx.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* TLS 1.2's forward-secret AEAD suites; TLS 1.3's own are all of that kind
 * and stay OpenSSL's defaults. */
#define TLS12_CIPHERS                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

static bool given(const char *path)
{
    return path != NULL && path[0] != '\0';
}

bool qr_tls_enabled(const struct qr_tls_files *f)
{
    return given(f->cert) && given(f->key);
}

bool qr_tls_mutual(const struct qr_tls_files *f)
{
    return qr_tls_enabled(f) && given(f->ca);
}

void qr_tls_errors(char *buf, size_t len)
{
    size_t used = 0;
    unsigned long e;
    buf[0] = '\0';
    while ((e = ERR_get_error()) != 0) {
        char one[256];
        ERR_error_string_n(e, one, sizeof one);
        if (used + 1 >= len) {
            continue; /* full: the queue is still emptied */
        }
        int n =
            snprintf(buf + used, len - used, "%s%s", used > 0 ? "; " : "", one);
        used = n < 0 || (size_t)n >= len - used ? len - 1 : used + (size_t)n;
    }
}

/* Frees ctx (may be NULL), writes "what path: OpenSSL's words" to err and
 * returns -1. */
static int fail(SSL_CTX *ctx,
                char *err,
                size_t err_len,
                const char *what,
                const char *path)
{
    char why[512];
    qr_tls_errors(why, sizeof why);
    snprintf(err, err_len, "%s%s%s: %s", what, path != NULL ? " " : "",
             path != NULL ? path : "", why[0] != '\0' ? why : "failed");
    SSL_CTX_free(ctx);
    return -1;
}

static SSL_CTX *base_ctx(const SSL_METHOD *method)
{
    SSL_CTX *ctx = SSL_CTX_new(method);
    if (ctx == NULL) {
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_NO_TICKET |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    return ctx;
}

/* f's certificate chain and key into ctx, checked to belong together. */
static int load_pair(SSL_CTX *ctx,
                     const struct qr_tls_files *f,
                     char *err,
                     size_t err_len)
{
    if (SSL_CTX_use_certificate_chain_file(ctx, f->cert) != 1) {
        return fail(ctx, err, err_len, "certificate", f->cert);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, f->key, SSL_FILETYPE_PEM) != 1) {
        return fail(ctx, err, err_len, "key", f->key);
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        return fail(ctx, err, err_len, "key", f->key);
    }
    return 0;
}

int qr_tls_server_ctx(const struct qr_tls_files *f,
                      enum qr_tls_client_cert verify_client,
                      SSL_CTX **out,
                      char *err,
                      size_t err_len)
{
    *out = NULL;
    if (!qr_tls_enabled(f)) {
        snprintf(err, err_len, "TLS needs a certificate and its key");
        return -1;
    }
    if (verify_client != QR_TLS_CLIENT_CERT_NONE && !given(f->ca)) {
        snprintf(err, err_len,
                 "verifying the other side's certificate needs a CA file");
        return -1;
    }
    ERR_clear_error();
    SSL_CTX *ctx = base_ctx(TLS_server_method());
    if (ctx == NULL) {
        return fail(NULL, err, err_len, "TLS context", NULL);
    }
    if (load_pair(ctx, f, err, err_len) != 0) {
        return -1;
    }
    if (verify_client != QR_TLS_CLIENT_CERT_NONE) {
        if (SSL_CTX_load_verify_locations(ctx, f->ca, NULL) != 1) {
            return fail(ctx, err, err_len, "CA", f->ca);
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(f->ca);
        if (names == NULL) {
            return fail(ctx, err, err_len, "CA", f->ca);
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(
            ctx,
            SSL_VERIFY_PEER | (verify_client == QR_TLS_CLIENT_CERT_REQUIRED
                                   ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                   : 0),
            NULL);
    }
    *out = ctx;
    return 0;
}

int qr_tls_client_ctx(const struct qr_tls_files *f,
                      SSL_CTX **out,
                      char *err,
                      size_t err_len)
{
    *out = NULL;
    if (given(f->cert) != given(f->key)) {
        snprintf(err, err_len,
                 "a client certificate needs its key, and a key its "
                 "certificate");
        return -1;
    }
    ERR_clear_error();
    SSL_CTX *ctx = base_ctx(TLS_client_method());
    if (ctx == NULL) {
        return fail(NULL, err, err_len, "TLS context", NULL);
    }
    if (given(f->ca) ? SSL_CTX_load_verify_locations(ctx, f->ca, NULL) != 1
                     : SSL_CTX_set_default_verify_paths(ctx) != 1) {
        return fail(ctx, err, err_len, "CA", given(f->ca) ? f->ca : NULL);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (qr_tls_enabled(f) && load_pair(ctx, f, err, err_len) != 0) {
        return -1;
    }
    *out = ctx;
    return 0;
}

int qr_tls_client_expect(SSL *ssl, const char *host)
{
    unsigned char addr[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, host, addr) == 1 ||
        inet_pton(AF_INET6, host, addr) == 1) {
        /* No SNI for an address (RFC 6066); its certificate names it in an
         * iPAddress subjectAltName. */
        X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
        return X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1 ? 0 : -1;
    }
    if (SSL_set_tlsext_host_name(ssl, host) != 1 ||
        SSL_set1_host(ssl, host) != 1) {
        return -1;
    }
    return 0;
}

/* "qraft:node:<id>" → id: 0, or -1 when uri is not one (or the id is 0 or
 * does not fit). */
static int parse_node_uri(const unsigned char *uri, int len, uint64_t *id)
{
    const size_t plen = sizeof QR_TLS_NODE_URI_PREFIX - 1;
    if (len <= (int)plen || (size_t)len > plen + 20 ||
        memcmp(uri, QR_TLS_NODE_URI_PREFIX, plen) != 0) {
        return -1;
    }
    uint64_t v = 0;
    for (size_t i = plen; i < (size_t)len; i++) {
        if (uri[i] < '0' || uri[i] > '9') {
            return -1;
        }
        uint64_t digit = (uint64_t)(uri[i] - '0');
        if (v > (UINT64_MAX - digit) / 10) {
            return -1;
        }
        v = v * 10 + digit;
    }
    if (v == 0) {
        return -1;
    }
    *id = v;
    return 0;
}

int qr_tls_cert_node_id(X509 *cert, uint64_t *id)
{
    if (cert == NULL) {
        return -1;
    }
    GENERAL_NAMES *names =
        X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (names == NULL) {
        return -1;
    }
    int found = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
        uint64_t one;
        if (name->type == GEN_URI &&
            parse_node_uri(
                ASN1_STRING_get0_data(name->d.uniformResourceIdentifier),
                ASN1_STRING_length(name->d.uniformResourceIdentifier),
                &one) == 0) {
            found++;
            *id = one;
        }
    }
    GENERAL_NAMES_free(names);
    return found == 1 ? 0 : -1;
}

int qr_tls_peer_node_id(SSL *ssl, uint64_t *id)
{
    X509 *cert = SSL_get0_peer_certificate(ssl);
    if (cert == NULL || SSL_get_verify_result(ssl) != X509_V_OK) {
        return -1;
    }
    return qr_tls_cert_node_id(cert, id);
}

int qr_tls_file_not_after(const char *path,
                          int64_t *not_after,
                          char *err,
                          size_t err_len)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return -1;
    }
    ERR_clear_error();
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (cert == NULL) {
        char why[256];
        qr_tls_errors(why, sizeof why);
        snprintf(err, err_len, "%s: no certificate: %s", path, why);
        return -1;
    }
    struct tm tm;
    int rv = ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm);
    X509_free(cert);
    if (rv != 1) {
        snprintf(err, err_len, "%s: unreadable notAfter", path);
        return -1;
    }
    *not_after = (int64_t)timegm(&tm);
    return 0;
}
