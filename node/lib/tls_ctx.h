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
#include <stdint.h>

/* Paths of PEM files; "" (or NULL) for none. */
struct qr_tls_files {
    const char *cert; /* the certificate, then its chain */
    const char *key;  /* its private key */
    const char *ca;   /* CA certificates to verify the other side against */
};

/* True when cert and key are both given: the node serves TLS. */
bool qr_tls_enabled(const struct qr_tls_files *f);

/* True when cert, key and CA are all given: the node speaks mutual TLS with
 * the other nodes (the raft transport and peer RPC ask for, and verify, a
 * certificate from the CA). */
bool qr_tls_mutual(const struct qr_tls_files *f);

/* What a server context asks of the other side's certificate. */
enum qr_tls_client_cert {
    QR_TLS_CLIENT_CERT_NONE = 0,     /* none is asked for */
    QR_TLS_CLIENT_CERT_REQUIRED = 1, /* one from f->ca, or no handshake */
    /* Asked for; a connection without one goes on (the caller decides
     * what it may do), one that f->ca does not verify fails. */
    QR_TLS_CLIENT_CERT_OPTIONAL = 2,
};

/* How a node's id is bound to its certificate: a subjectAltName URI
 * "qraft:node:<id>" (decimal, 1..2^64-1). */
#define QR_TLS_NODE_URI_PREFIX "qraft:node:"

/* A server context: TLS 1.2 and later, forward-secret AEAD ciphers only,
 * no renegotiation, no compression, no session tickets; f's certificate
 * and key, checked to belong together. verify_client says what is asked of
 * the other side's certificate (REQUIRED, OPTIONAL: f->ca is needed and
 * verifies it; mutual TLS). Returns 0 with a new context in
 * *out (free with SSL_CTX_free), or -1 with the reason in err (naming the
 * file and OpenSSL's words). */
int qr_tls_server_ctx(const struct qr_tls_files *f,
                      enum qr_tls_client_cert verify_client,
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

/* The node id the other side's certificate is bound to: 0 and *id when the
 * handshake verified a certificate (against the context's CA) that carries
 * one "qraft:node:<id>" subjectAltName URI; -1 when it presented none,
 * failed verification, or names no id (or several). */
int qr_tls_peer_node_id(SSL *ssl, uint64_t *id);

/* The node id a certificate is bound to, as qr_tls_peer_node_id, without
 * verifying it: 0 or -1. */
int qr_tls_cert_node_id(X509 *cert, uint64_t *id);

/* notAfter of the first certificate in the PEM file at path, as Unix time,
 * into *not_after: 0, or -1 with the reason in err. */
int qr_tls_file_not_after(const char *path,
                          int64_t *not_after,
                          char *err,
                          size_t err_len);

/* OpenSSL's error queue as one line ("" when empty) into buf, emptying
 * it: for the caller's own messages. */
void qr_tls_errors(char *buf, size_t len);

#endif /* QR_TLS_CTX_H */
