/* Unit tests of node/sign.c: what a receiver of our deliveries relies on.
 * Whole tokens are compared with literals derived outside qraft (Python's
 * hmac/hashlib/base64/json, HMAC cross-checked with `openssl dgst -hmac`), so
 * a change in claims, their order or their escaping shows up here first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "deliver/sign.h"
#include "lib/base64.h"
#include "lib/err.h"
#include "lib/hash.h"

#define KEY "sig_4Rq8mZt2WkXnP7cVb3HjLd9sFgYe"
#define OTHER_KEY "sig_9xWm3Kd7PqLr2TnVb8HcZf5GjYs"
#define JTI "jwt_00112233445566778899aabbccddeeff"
#define IAT 1700000000u

/* Token for KEY, URL_PLAIN, BODY_JSON, IAT, JTI. */
#define URL_PLAIN "https://example.com/hooks/a?x=1&y=two%20words"
#define BODY_JSON "{\"hello\":\"world\"}"
#define TOKEN_PLAIN                                                          \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."                                  \
    "eyJpc3MiOiJVcHN0YXNoIiwic3ViIjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9ob29rcy9hP"  \
    "3g9MSZ5PXR3byUyMHdvcmRzIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjE3MDAwMDAzMD"  \
    "AsIm5iZiI6MCwianRpIjoiand0XzAwMTEyMjMzNDQ1NTY2Nzc4ODk5YWFiYmNjZGRlZWZm" \
    "IiwiYm9keSI6Ims2STVjYWtVNWVyTDhLalNVVlROb3duRHdjY3Z1NWtVMUh4Zzg4dG9GWW" \
    "c9In0."                                                                 \
    "Su7D2stjJ9knDLr7z80qTw8odwnuS_2boF2nIBVvWHI"

/* Token for KEY, URL_ESCAPED, empty body, IAT, JTI: the sub claim needs \",
 * \\, \t and \u0001 escapes and carries a raw UTF-8 'é'. */
#define URL_ESCAPED \
    "https://example.com/p?q=\"quoted\"&b=back\\slash&t=\ttab&u=\xc3\xa9/\x01"
#define TOKEN_ESCAPED                                                        \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."                                  \
    "eyJpc3MiOiJVcHN0YXNoIiwic3ViIjoiaHR0cHM6Ly9leGFtcGxlLmNvbS9wP3E9XCJxd"  \
    "W90ZWRcIiZiPWJhY2tcXHNsYXNoJnQ9XHR0YWImdT3DqS9cdTAwMDEiLCJpYXQiOjE3MD"  \
    "AwMDAwMDAsImV4cCI6MTcwMDAwMDMwMCwibmJmIjowLCJqdGkiOiJqd3RfMDAxMTIyMzM0" \
    "NDU1NjY3Nzg4OTlhYWJiY2NkZGVlZmYiLCJib2R5IjoiNDdERVFwajhIQlNhLV9USW1XLT" \
    "VKQ2V1UWVSa201Tk1wSldaRzNoU3VGVT0ifQ."                                  \
    "iusnpW0HuFeinh4H_luFCqC_sXZyYDXPL8uO7uVEcaA"

/* Signed with KEY by another issuer's style: claims in another order,
 * nbf = iat, body claim ("ping") without '=' padding, sub
 * "http://127.0.0.1:9/x". */
#define TOKEN_FOREIGN                                                        \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."                                  \
    "eyJib2R5IjoiZFkxaDhtcEVSSU9FNWNSR2lnM0xlaXEtUldCbnNQZTFCYndvdVVFZjZURS" \
    "IsImV4cCI6MTcwMDAwMDMwMCwiaWF0IjoxNzAwMDAwMDAwLCJpc3MiOiJVcHN0YXNoIiwi" \
    "anRpIjoiand0X3giLCJuYmYiOjE3MDAwMDAwMDAsInN1YiI6Imh0dHA6Ly8xMjcuMC4wLj" \
    "E6OS94In0."                                                             \
    "KgJienOOqueER-lOTUOnuh1_tn7eXcBSNfqEI8TdTo8"

/* {"alg":"none"} with a valid HMAC by KEY: must still be refused. */
#define TOKEN_ALG_NONE                                                       \
    "eyJhbGciOiJub25lIn0."                                                   \
    "eyJpc3MiOiJVcHN0YXNoIiwic3ViIjoiaHR0cDovLzEyNy4wLjAuMTo5L3giLCJib2R5Ij" \
    "oiIn0."                                                                 \
    "IGMqWkxYdyGWtkeim2oH448vFmo9ZYT8GH4JA10xaAM"

static const uint8_t *bytes(const char *s)
{
    return (const uint8_t *)s;
}

static void test_jwt_known_vector(void **state)
{
    (void)state;
    char *token = NULL;
    assert_int_equal(qr_sign_jwt_with_jti(KEY, URL_PLAIN, bytes(BODY_JSON),
                                          strlen(BODY_JSON), IAT, JTI, &token),
                     0);
    assert_string_equal(token, TOKEN_PLAIN);
    free(token);
}

static void test_jwt_escapes_url_in_sub(void **state)
{
    (void)state;
    char *token = NULL;
    assert_int_equal(
        qr_sign_jwt_with_jti(KEY, URL_ESCAPED, NULL, 0, IAT, JTI, &token), 0);
    assert_string_equal(token, TOKEN_ESCAPED);
    assert_int_equal(qr_sign_jwt_verify(KEY, token, URL_ESCAPED, NULL, 0, IAT),
                     0);
    free(token);
}

static void test_body_hash_claims(void **state)
{
    (void)state;
    char hash[QR_SIGN_BODY_HASH_BYTES];
    assert_int_equal(qr_sign_body_hash(NULL, 0, hash), 0);
    assert_string_equal(hash, "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=");
    assert_int_equal(qr_sign_body_hash(bytes("abc"), 3, hash), 0);
    assert_string_equal(hash, "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=");
    assert_int_equal(
        qr_sign_body_hash(bytes(BODY_JSON), strlen(BODY_JSON), hash), 0);
    assert_string_equal(hash, "k6I5cakU5erL8KjSUVTNownDwccvu5kU1Hxg88toFYg=");
}

static void test_jwt_random_jti_each_call(void **state)
{
    (void)state;
    char *a = NULL;
    char *b = NULL;
    assert_int_equal(qr_sign_jwt(KEY, URL_PLAIN, NULL, 0, IAT, &a), 0);
    assert_int_equal(qr_sign_jwt(KEY, URL_PLAIN, NULL, 0, IAT, &b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(qr_sign_jwt_verify(KEY, a, URL_PLAIN, NULL, 0, IAT), 0);
    assert_int_equal(qr_sign_jwt_verify(KEY, b, URL_PLAIN, NULL, 0, IAT), 0);
    free(a);
    free(b);
}

static void test_new_jti_format(void **state)
{
    (void)state;
    char a[QR_SIGN_JTI_BYTES];
    char b[QR_SIGN_JTI_BYTES];
    assert_int_equal(qr_sign_new_jti(a), 0);
    assert_int_equal(qr_sign_new_jti(b), 0);
    assert_int_equal(strlen(a), QR_SIGN_JTI_BYTES - 1);
    assert_memory_equal(a, "jwt_", 4);
    assert_int_equal(strspn(a + 4, "0123456789abcdef"), 32);
    assert_string_not_equal(a, b);
}

static void test_verify_time_window(void **state)
{
    (void)state;
    const uint8_t *body = bytes(BODY_JSON);
    size_t n = strlen(BODY_JSON);
    const char *t = TOKEN_PLAIN;
    assert_int_equal(qr_sign_jwt_verify(KEY, t, URL_PLAIN, body, n, IAT), 0);
    /* nbf is 0: a receiver whose clock lags still accepts. */
    assert_int_equal(qr_sign_jwt_verify(KEY, t, URL_PLAIN, body, n, 1000), 0);
    assert_int_equal(qr_sign_jwt_verify(KEY, t, URL_PLAIN, body, n, IAT + 299),
                     0);
    assert_int_equal(qr_sign_jwt_verify(KEY, t, URL_PLAIN, body, n, IAT + 300),
                     QR_EAUTH);
}

static void test_verify_rejects_mismatch(void **state)
{
    (void)state;
    const uint8_t *body = bytes(BODY_JSON);
    size_t n = strlen(BODY_JSON);
    const char *t = TOKEN_PLAIN;
    assert_int_equal(qr_sign_jwt_verify(OTHER_KEY, t, URL_PLAIN, body, n, IAT),
                     QR_EAUTH);
    assert_int_equal(qr_sign_jwt_verify(KEY, t, URL_PLAIN "&z=1", body, n, IAT),
                     QR_EAUTH);
    assert_int_equal(qr_sign_jwt_verify(KEY, t, URL_PLAIN, body, n - 1, IAT),
                     QR_EAUTH);
    assert_int_equal(qr_sign_jwt_verify(KEY, t, URL_PLAIN, NULL, 0, IAT),
                     QR_EAUTH);
    /* Without a url the subject is not checked. */
    assert_int_equal(qr_sign_jwt_verify(KEY, t, NULL, body, n, IAT), 0);
}

static void test_verify_rejects_tampering(void **state)
{
    (void)state;
    char *t = strdup(TOKEN_PLAIN);
    assert_non_null(t);
    /* Flip one character of the payload segment. */
    char *payload = strchr(t, '.') + 1;
    payload[10] = payload[10] == 'A' ? 'B' : 'A';
    assert_int_equal(qr_sign_jwt_verify(KEY, t, URL_PLAIN, bytes(BODY_JSON),
                                        strlen(BODY_JSON), IAT),
                     QR_EAUTH);
    /* Cut the signature short. */
    strcpy(t, TOKEN_PLAIN);
    t[strlen(t) - 1] = '\0';
    assert_int_equal(qr_sign_jwt_verify(KEY, t, URL_PLAIN, bytes(BODY_JSON),
                                        strlen(BODY_JSON), IAT),
                     QR_EAUTH);
    free(t);
}

static void test_verify_accepts_foreign_layout(void **state)
{
    (void)state;
    const char *url = "http://127.0.0.1:9/x";
    assert_int_equal(
        qr_sign_jwt_verify(KEY, TOKEN_FOREIGN, url, bytes("ping"), 4, IAT), 0);
    /* Its nbf is iat: not valid a second before. */
    assert_int_equal(
        qr_sign_jwt_verify(KEY, TOKEN_FOREIGN, url, bytes("ping"), 4, IAT - 1),
        QR_EAUTH);
}

static void test_verify_rejects_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!.e30.x",
        /* header "[]": not an object */
        "W10.e30.x",
        /* header {} without alg */
        "e30.e30.x",
        TOKEN_ALG_NONE,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(qr_sign_jwt_verify(KEY, bad[i], NULL, NULL, 0, IAT),
                         QR_EBADREQ);
    }
}

static void test_jwt_refuses_bad_input(void **state)
{
    (void)state;
    char *token = (char *)1;
    assert_int_equal(qr_sign_jwt(KEY, "http://x/\xff", NULL, 0, IAT, &token),
                     QR_EBADREQ);
    assert_null(token);
    assert_int_equal(qr_sign_jwt("", URL_PLAIN, NULL, 0, IAT, &token),
                     QR_EBADREQ);
    assert_null(token);
    assert_int_equal(qr_sign_jwt(KEY, URL_PLAIN, NULL, 3, IAT, &token),
                     QR_EBADREQ);
    assert_null(token);
    assert_int_equal(qr_sign_jwt(KEY, URL_PLAIN, NULL, 0, UINT64_MAX, &token),
                     QR_EBADREQ);
    assert_null(token);
}

/* RFC 4648 §10 test vectors, padded and (for base64url) unpadded. */
static void test_base64_rfc4648_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *padded;
        const char *unpadded;
    } vec[] = {
        {"", "", ""},
        {"f", "Zg==", "Zg"},
        {"fo", "Zm8=", "Zm8"},
        {"foo", "Zm9v", "Zm9v"},
        {"foob", "Zm9vYg==", "Zm9vYg"},
        {"fooba", "Zm9vYmE=", "Zm9vYmE"},
        {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
    };
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        size_t n = strlen(vec[i].in);
        char *s = NULL;
        assert_int_equal(qr_base64(bytes(vec[i].in), n, &s), 0);
        assert_string_equal(s, vec[i].padded);
        free(s);
        assert_int_equal(qr_base64url(bytes(vec[i].in), n, true, &s), 0);
        assert_string_equal(s, vec[i].padded);
        free(s);
        assert_int_equal(qr_base64url(bytes(vec[i].in), n, false, &s), 0);
        assert_string_equal(s, vec[i].unpadded);
        free(s);
    }
}

/* The two alphabets differ in exactly characters 62 and 63. */
static void test_base64_alphabets(void **state)
{
    (void)state;
    static const uint8_t in[] = {0xfb, 0xef, 0xff, 0xfb, 0xff};
    char *s = NULL;
    assert_int_equal(qr_base64(in, sizeof in, &s), 0);
    assert_string_equal(s, "++//+/8=");
    free(s);
    assert_int_equal(qr_base64url(in, sizeof in, true, &s), 0);
    assert_string_equal(s, "--__-_8=");
    free(s);
    assert_int_equal(qr_base64url(in, sizeof in, false, &s), 0);
    assert_string_equal(s, "--__-_8");
    free(s);
    assert_int_equal(qr_base64(NULL, 0, &s), 0);
    assert_string_equal(s, "");
    free(s);
}

static void test_generate_key_format(void **state)
{
    (void)state;
    char a[QR_SIGN_KEY_BYTES];
    char b[QR_SIGN_KEY_BYTES];
    assert_int_equal(qr_sign_generate_key(a), 0);
    assert_int_equal(qr_sign_generate_key(b), 0);
    assert_int_equal(strlen(a), 32);
    assert_memory_equal(a, "sig_", 4);
    assert_int_equal(
        strspn(a + 4,
               "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"),
        28);
    assert_string_not_equal(a, b);
}

/* Values from Python: sha256(b"".join(u64be(len(p)) + p for p in parts)). */
static void test_sha256_parts_hex(void **state)
{
    (void)state;
    char hex[QR_SHA256_HEX_BYTES];
    struct qr_hash_part ab_c[] = {{"ab", 2}, {"c", 1}};
    struct qr_hash_part a_bc[] = {{"a", 1}, {"bc", 2}};
    assert_int_equal(qr_hash_sha256_parts_hex(ab_c, 2, hex), 0);
    assert_string_equal(
        hex,
        "601d5476e2ccfe2c87a2bba7a322659734a05749d5b5aa781f513e4912db0d5f");
    assert_int_equal(qr_hash_sha256_parts_hex(a_bc, 2, hex), 0);
    assert_string_equal(
        hex,
        "3fafa1cf2f19a7c1129beb20cf0983f73a489a221fc0dd2f16d1be292d089205");
    assert_int_equal(qr_hash_sha256_parts_hex(NULL, 0, hex), 0);
    assert_string_equal(
        hex,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jwt_known_vector),
        cmocka_unit_test(test_jwt_escapes_url_in_sub),
        cmocka_unit_test(test_body_hash_claims),
        cmocka_unit_test(test_jwt_random_jti_each_call),
        cmocka_unit_test(test_new_jti_format),
        cmocka_unit_test(test_verify_time_window),
        cmocka_unit_test(test_verify_rejects_mismatch),
        cmocka_unit_test(test_verify_rejects_tampering),
        cmocka_unit_test(test_verify_accepts_foreign_layout),
        cmocka_unit_test(test_verify_rejects_malformed),
        cmocka_unit_test(test_jwt_refuses_bad_input),
        cmocka_unit_test(test_base64_rfc4648_vectors),
        cmocka_unit_test(test_base64_alphabets),
        cmocka_unit_test(test_generate_key_format),
        cmocka_unit_test(test_sha256_parts_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
