/* OpenSSL contexts from the node's certificate files: one place that says
 * which TLS versions, ciphers and verification every listener and every
 * outgoing connection of the node uses (issue 15; docs/operations.md,
 * "TLS").
 *
 * Files are PEM. The node has one certificate (with its chain) and key for
 * every listener, and one CA bundle: the CA that signed the cluster's node
 * certificates and, where clients present certificates, theirs. A context
 * is built whole from the files or not at all, so a reload (SIGHUP) that
 * meets a bad file keeps the context in use and says why. */
#ifndef QR_TLS_CTX_H
#define QR_TLS_CTX_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

/* Paths of PEM files; "" (or NULL) for none. */
struct qr_tls_files {
    const char *cert; /* the certificate, then its chain */
    const char *key;  /* its private key */
    const char *ca;   /* CA certificates to verify the other side against */
};

/* True when cert and key are both given: the node serves TLS. */
bool qr_tls_enabled(const struct qr_tls_files *f);

/* A server context: TLS 1.2 and later, forward-secret AEAD ciphers only,
 * no renegotiation, no compression, no session tickets; f's certificate
 * and key, checked to belong together. With verify_client the other side
 * must present a certificate that f->ca (required then) verifies (mutual
 * TLS); without it, none is asked for. Returns 0 with a new context in
 * *out (free with SSL_CTX_free), or -1 with the reason in err (naming the
 * file and OpenSSL's words). */
int qr_tls_server_ctx(const struct qr_tls_files *f,
                      bool verify_client,
                      SSL_CTX **out,
                      char *err,
                      size_t err_len);

/* A client context: TLS 1.2 and later, the same ciphers; the server's
 * certificate is verified against f->ca (or, when none is given, the
 * system's CA store), and the caller names the host to check it against
 * per connection (qr_tls_client_expect). f's certificate and key, when
 * given, are presented to servers that ask (mutual TLS). Returns 0 or -1
 * as qr_tls_server_ctx. */
int qr_tls_client_ctx(const struct qr_tls_files *f,
                      SSL_CTX **out,
                      char *err,
                      size_t err_len);

/* Makes ssl (a client connection of a qr_tls_client_ctx context) send
 * host as SNI and accept only a certificate naming it (a DNS name or an
 * IP address, as the certificate's subjectAltName says). Returns 0 or
 * -1. */
int qr_tls_client_expect(SSL *ssl, const char *host);

/* OpenSSL's error queue as one line ("" when empty) into buf, emptying
 * it: for the caller's own messages. */
void qr_tls_errors(char *buf, size_t len);

#endif /* QR_TLS_CTX_H */
