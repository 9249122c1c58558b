/* Keys, hashes and the HS256 JWT that signs each delivery. Everything here is
 * a pure function of its arguments plus OpenSSL's random generator; no state
 * is kept between calls. Tokens are built from jansson-encoded claims, never
 * from hand-written JSON, so any URL is escaped correctly. */
#include "deliver/sign.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/base64.h"
#include "lib/err.h"
#include "lib/random.h"

static const char base58[] =
    "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

int qr_sign_generate_key(char out[QR_SIGN_KEY_BYTES])
{
    enum { N_CHARS = QR_SIGN_KEY_BYTES - 5 };
    uint8_t raw[N_CHARS];
    int rv = qr_random_bytes(raw, sizeof raw);
    if (rv != 0) {
        return rv;
    }
    out[0] = 's';
    out[1] = 'i';
    out[2] = 'g';
    out[3] = '_';
    for (size_t i = 0; i < N_CHARS; i++) {
        /* 58 * 4 = 232: reject-free mapping is not needed for a key drawn
         * from 28 * log2(58) ~ 164 bits; the slight bias costs < 1 bit. */
        out[4 + i] = base58[raw[i] % 58];
    }
    out[QR_SIGN_KEY_BYTES - 1] = '\0';
    return 0;
}

/* ---- JWT -----------------------------------------------------------------
 */

#define JWT_ISSUER "Upstash"
#define SHA256_BYTES 32
/* unpadded base64url of an HMAC-SHA256 (43 characters) + NUL */
#define MAC_SEGMENT_BYTES 44

static const char jwt_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

int qr_sign_body_hash(const uint8_t *body,
                      size_t len,
                      char out[QR_SIGN_BODY_HASH_BYTES])
{
    static const uint8_t empty[1];
    uint8_t digest[SHA256_BYTES];
    unsigned digest_len = 0;
    if (EVP_Digest(body != NULL ? body : empty, len, digest, &digest_len,
                   EVP_sha256(), NULL) != 1) {
        return -ENOMEM;
    }
    qr_base64_encode_into(digest, digest_len, true, true, out);
    return 0;
}

int qr_sign_new_jti(char out[QR_SIGN_JTI_BYTES])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t raw[(QR_SIGN_JTI_BYTES - 5) / 2];
    int rv = qr_random_bytes(raw, sizeof raw);
    if (rv != 0) {
        return rv;
    }
    memcpy(out, "jwt_", 4);
    for (size_t i = 0; i < sizeof raw; i++) {
        out[4 + 2 * i] = hex[raw[i] >> 4];
        out[5 + 2 * i] = hex[raw[i] & 15];
    }
    out[QR_SIGN_JTI_BYTES - 1] = '\0';
    return 0;
}

/* base64url (unpadded) HMAC-SHA256 of input[0..len) keyed by the bytes of
 * key, into out. */
static int mac_segment(const char *key,
                       const char *input,
                       size_t len,
                       char out[MAC_SEGMENT_BYTES])
{
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    size_t key_len = strlen(key);
    if (key_len > INT_MAX) {
        return QR_EBADREQ;
    }
    if (HMAC(EVP_sha256(), key, (int)key_len, (const uint8_t *)input, len, mac,
             &mac_len) == NULL ||
        mac_len != SHA256_BYTES) {
        return -ENOMEM;
    }
    qr_base64_encode_into(mac, mac_len, true, false, out);
    return 0;
}

/* The claims of one token as compact JSON, new in *out (free with free()). */
static int claims_json(const char *url,
                       const char *body_hash,
                       uint64_t now_s,
                       const char *jti,
                       char **out)
{
    json_error_t jerr;
    json_t *claims =
        json_pack_ex(&jerr, 0, "{s:s, s:s, s:I, s:I, s:I, s:s, s:s}", "iss",
                     JWT_ISSUER, "sub", url, "iat", (json_int_t)now_s, "exp",
                     (json_int_t)(now_s + QR_SIGN_JWT_TTL_S), "nbf",
                     (json_int_t)0, "jti", jti, "body", body_hash);
    if (claims == NULL) {
        return json_error_code(&jerr) == json_error_out_of_memory ? -ENOMEM
                                                                  : QR_EBADREQ;
    }
    *out = json_dumps(claims, JSON_COMPACT);
    json_decref(claims);
    return *out != NULL ? 0 : -ENOMEM;
}

int qr_sign_jwt_with_jti(const char *key,
                         const char *url,
                         const uint8_t *body,
                         size_t body_len,
                         uint64_t now_s,
                         const char *jti,
                         char **out)
{
    char body_hash[QR_SIGN_BODY_HASH_BYTES];
    char sig[MAC_SEGMENT_BYTES];
    char *payload = NULL;
    char *header_seg = NULL;
    char *payload_seg = NULL;
    int rv;

    *out = NULL;
    if (key == NULL || key[0] == '\0' || url == NULL || jti == NULL ||
        (body == NULL && body_len != 0)) {
        return QR_EBADREQ;
    }
    if (now_s > (uint64_t)LLONG_MAX - QR_SIGN_JWT_TTL_S) {
        return QR_EBADREQ;
    }
    rv = qr_sign_body_hash(body, body_len, body_hash);
    if (rv != 0) {
        return rv;
    }
    rv = claims_json(url, body_hash, now_s, jti, &payload);
    if (rv != 0) {
        return rv;
    }
    rv = qr_base64url((const uint8_t *)jwt_header, strlen(jwt_header), false,
                      &header_seg);
    if (rv != 0) {
        goto err_after_payload;
    }
    rv = qr_base64url((const uint8_t *)payload, strlen(payload), false,
                      &payload_seg);
    if (rv != 0) {
        goto err_after_header_seg;
    }
    size_t header_len = strlen(header_seg);
    size_t payload_len = strlen(payload_seg);
    char *token = malloc(header_len + 1 + payload_len + 1 + sizeof sig);
    if (token == NULL) {
        rv = -ENOMEM;
        goto err_after_payload_seg;
    }
    memcpy(token, header_seg, header_len);
    token[header_len] = '.';
    memcpy(token + header_len + 1, payload_seg, payload_len);
    size_t input_len = header_len + 1 + payload_len;
    rv = mac_segment(key, token, input_len, sig);
    if (rv != 0) {
        free(token);
        goto err_after_payload_seg;
    }
    token[input_len] = '.';
    memcpy(token + input_len + 1, sig, strlen(sig) + 1);
    *out = token;
    rv = 0;

err_after_payload_seg:
    free(payload_seg);
err_after_header_seg:
    free(header_seg);
err_after_payload:
    free(payload);
    return rv;
}

int qr_sign_jwt(const char *key,
                const char *url,
                const uint8_t *body,
                size_t body_len,
                uint64_t now_s,
                char **out)
{
    char jti[QR_SIGN_JTI_BYTES];
    *out = NULL;
    int rv = qr_sign_new_jti(jti);
    if (rv != 0) {
        return rv;
    }
    return qr_sign_jwt_with_jti(key, url, body, body_len, now_s, jti, out);
}

/* Decodes a base64url JSON segment into a new JSON object (json_decref). */
static int decode_object(const char *seg, size_t n, json_t **out)
{
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    *out = NULL;
    int rv = qr_base64url_decode(seg, n, &raw, &raw_len);
    if (rv != 0) {
        return rv;
    }
    json_error_t jerr;
    json_t *obj = json_loadb((const char *)raw, raw_len, 0, &jerr);
    free(raw);
    if (obj == NULL) {
        return json_error_code(&jerr) == json_error_out_of_memory ? -ENOMEM
                                                                  : QR_EBADREQ;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        return QR_EBADREQ;
    }
    *out = obj;
    return 0;
}

/* True when string claim `name` of claims is exactly want[0..want_len). */
static bool claim_equals(const json_t *claims,
                         const char *name,
                         const char *want,
                         size_t want_len)
{
    const json_t *v = json_object_get(claims, name);
    return json_is_string(v) && json_string_length(v) == want_len &&
           memcmp(json_string_value(v), want, want_len) == 0;
}

/* Length of s without its trailing '=' characters. */
static size_t unpadded_len(const char *s, size_t len)
{
    while (len > 0 && s[len - 1] == '=') {
        len--;
    }
    return len;
}

/* The checks on the verified claims: issuer, time window, subject, body. */
static int check_claims(const json_t *claims,
                        const char *url,
                        const uint8_t *body,
                        size_t body_len,
                        uint64_t now_s)
{
    char body_hash[QR_SIGN_BODY_HASH_BYTES];
    double now = (double)now_s;
    if (!claim_equals(claims, "iss", JWT_ISSUER, strlen(JWT_ISSUER))) {
        return QR_EAUTH;
    }
    const json_t *exp = json_object_get(claims, "exp");
    if (exp != NULL &&
        (!json_is_number(exp) || json_number_value(exp) <= now)) {
        return QR_EAUTH;
    }
    const json_t *nbf = json_object_get(claims, "nbf");
    if (nbf != NULL && (!json_is_number(nbf) || json_number_value(nbf) > now)) {
        return QR_EAUTH;
    }
    if (url != NULL && !claim_equals(claims, "sub", url, strlen(url))) {
        return QR_EAUTH;
    }
    const json_t *got = json_object_get(claims, "body");
    if (!json_is_string(got)) {
        return QR_EAUTH;
    }
    int rv = qr_sign_body_hash(body, body_len, body_hash);
    if (rv != 0) {
        return rv;
    }
    size_t want_len = unpadded_len(body_hash, strlen(body_hash));
    size_t got_len =
        unpadded_len(json_string_value(got), json_string_length(got));
    if (got_len != want_len ||
        CRYPTO_memcmp(json_string_value(got), body_hash, want_len) != 0) {
        return QR_EAUTH;
    }
    return 0;
}

int qr_sign_jwt_verify(const char *key,
                       const char *token,
                       const char *url,
                       const uint8_t *body,
                       size_t body_len,
                       uint64_t now_s)
{
    char want_sig[MAC_SEGMENT_BYTES];
    json_t *header = NULL;
    json_t *claims = NULL;
    int rv;

    if (key == NULL || key[0] == '\0' || token == NULL ||
        (body == NULL && body_len != 0)) {
        return QR_EBADREQ;
    }
    const char *dot1 = strchr(token, '.');
    const char *dot2 = dot1 != NULL ? strchr(dot1 + 1, '.') : NULL;
    if (dot2 == NULL || strchr(dot2 + 1, '.') != NULL) {
        return QR_EBADREQ;
    }
    rv = decode_object(token, (size_t)(dot1 - token), &header);
    if (rv != 0) {
        return rv;
    }
    if (!claim_equals(header, "alg", "HS256", 5)) {
        rv = QR_EBADREQ;
        goto err_after_header;
    }
    rv = mac_segment(key, token, (size_t)(dot2 - token), want_sig);
    if (rv != 0) {
        goto err_after_header;
    }
    const char *got_sig = dot2 + 1;
    if (strlen(got_sig) != strlen(want_sig) ||
        CRYPTO_memcmp(got_sig, want_sig, strlen(want_sig)) != 0) {
        rv = QR_EAUTH;
        goto err_after_header;
    }
    rv = decode_object(dot1 + 1, (size_t)(dot2 - dot1 - 1), &claims);
    if (rv != 0) {
        goto err_after_header;
    }
    rv = check_claims(claims, url, body, body_len, now_s);
    json_decref(claims);
err_after_header:
    json_decref(header);
    return rv;
}
