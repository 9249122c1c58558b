#include "lib/tls_ctx.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

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
                      bool verify_client,
                      SSL_CTX **out,
                      char *err,
                      size_t err_len)
{
    *out = NULL;
    if (!qr_tls_enabled(f)) {
        snprintf(err, err_len, "TLS needs a certificate and its key");
        return -1;
    }
    if (verify_client && !given(f->ca)) {
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
    if (verify_client) {
        if (SSL_CTX_load_verify_locations(ctx, f->ca, NULL) != 1) {
            return fail(ctx, err, err_len, "CA", f->ca);
        }
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(f->ca);
        if (names == NULL) {
            return fail(ctx, err, err_len, "CA", f->ca);
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(
            ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
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
