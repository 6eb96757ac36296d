/*
 * Internals of the fota C client, shared by its source files and by the
 * vector tests (test/vectors.c), which check each piece against the same
 * vectors the Go packages use.
 */
#ifndef FOTA_INTERNAL_H
#define FOTA_INTERNAL_H

#include "fota_client.h"

/* ---- Text: hex, base64, JSON, SemVer, times (fota_util.c) ---- */

/* Writes 2*n lowercase hex digits and a NUL to out. */
void fota_hex(char *out, const uint8_t *in, size_t n);
/* Decodes exactly 2*n hex digits from s (len chars); false when malformed. */
bool fota_unhex(uint8_t *out, size_t n, const char *s, size_t len);
/* Decodes standard base64 (with padding) in place or into out (out may be
 * in); returns the decoded length, or -1 when malformed. */
int32_t fota_base64_decode(uint8_t *out, const char *in, size_t len);

/* A JSON value: its type and its text (for a string, without the quotes
 * and with escapes left as they are). */
enum { FOTA_J_NONE = 0, FOTA_J_STRING, FOTA_J_NUMBER, FOTA_J_TRUE, FOTA_J_FALSE, FOTA_J_NULL, FOTA_J_OBJECT, FOTA_J_ARRAY };
typedef struct {
    int type;
    const char *p;
    size_t n;
} fota_json_t;

/* Walks the members of the JSON object in js (len bytes): for each, calls
 * fn(user, key, key_len, value); fn returns false to stop with an error.
 * Returns false for malformed JSON (anything after the object but white
 * space included), a duplicate key, a key with escapes, or fn's false. */
typedef bool (*fota_json_member_fn)(void *user, const char *key, size_t key_len, const fota_json_t *value);
bool fota_json_object(const char *js, size_t len, fota_json_member_fn fn, void *user);
/* An unsigned integer value without sign, fraction or exponent, in
 * [min, max], into *out (left alone otherwise). */
bool fota_json_uint(const fota_json_t *v, uint32_t min, uint32_t max, uint32_t *out);
/* Copies a string value without escapes into out (cap bytes with the NUL). */
bool fota_json_str(const fota_json_t *v, char *out, size_t cap);

/* SemVer 2.0.0: valid, and precedence (-1, 0, 1; -2 when either is invalid). */
bool fota_semver_valid(const char *v);
int fota_semver_cmp(const char *a, const char *b);

/* RFC 3339 UTC times as the server writes them ("2026-05-02T01:00:00Z",
 * fractions allowed) to Unix seconds; false if malformed or not UTC ("Z"). */
bool fota_parse_rfc3339(const char *s, size_t len, int64_t *out);

/* ---- Crypto over mbedtls 2.28 / 3.x (fota_crypto.c) ---- */

int fota_sha256_start(mbedtls_sha256_context *s);
int fota_sha256_update(mbedtls_sha256_context *s, const void *p, size_t n);
int fota_sha256_finish(mbedtls_sha256_context *s, uint8_t out[32]);

/* HMAC-SHA256 over a 32-byte key, built on one SHA-256 context (mbedtls's
 * md layer would allocate). */
int fota_hmac_start(mbedtls_sha256_context *s, const uint8_t key[32]);
int fota_hmac_finish(mbedtls_sha256_context *s, const uint8_t key[32], uint8_t out[32]);
/* Constant-time comparison. */
bool fota_equal(const uint8_t *a, const uint8_t *b, size_t n);

/* Chunk MACs (docs/PROTOCOL.md): v2, over the chunk's SHA-256 under the
 * session chunk key (the client speaks v2 only). */
int fota_session_chunk_key(mbedtls_sha256_context *s, const uint8_t psk[32], const char *session, uint8_t out[32]);
int fota_chunk_mac_v2(mbedtls_sha256_context *s, const uint8_t session_key[32], uint32_t index, const uint8_t *data,
                      size_t n, uint8_t out[32]);
/* The request signature over the canonical request. */
int fota_request_mac(mbedtls_sha256_context *s, const uint8_t psk[32], const char *method, const char *uri,
                     const char *device, const char *timestamp, const char *nonce, const uint8_t *body,
                     size_t body_len, uint8_t out[32]);

/* Signing key algorithms. */
enum { FOTA_ALG_NONE = 0, FOTA_ALG_RSA = 1, FOTA_ALG_ECDSA_P256 = 2 };
/* Parses a PKIX PEM (pem_len counts the NUL) into pk, says its algorithm and
 * its key id (the first 8 bytes of SHA-256 over its DER), using scratch
 * (scratch_len bytes) for the DER. */
fota_err_t fota_key_load(mbedtls_pk_context *pk, const char *pem, size_t pem_len, uint8_t *scratch,
                         size_t scratch_len, int *alg, uint8_t key_id[8]);
/* Verifies sig over SHA-256(msg) with pk: RSA PKCS#1 v1.5 or ECDSA (DER). */
fota_err_t fota_verify(mbedtls_pk_context *pk, mbedtls_sha256_context *s, const uint8_t *msg, size_t n,
                       const uint8_t *sig, size_t sig_len);

/* ---- The manifest (fota_client.c) ---- */

typedef struct {
    /* First as fota_offer_t has them, format where it has chunks: the
     * client copies them at once. */
    uint32_t security_counter, plaintext_size, ciphertext_size, chunk_size, format;
    uint8_t plaintext_sha256[32], iv[16], ciphertext_sha256[32];
    char hardware[33];
    char version[FOTA_VERSION_MAX + 1];
    char key_id[17];
    char alg[16];
#if FOTA_DELTA
    /* A delta manifest (docs/FORMAT.md, "Delta records"): delta is set when
     * it has all six delta fields (kind "delta"); compression is 1 none,
     * 2 crle, 3 heatshrink. */
    uint8_t delta, compression;
    uint32_t base_size, patch_size;
    uint8_t base_sha256[32];
    char base_version[FOTA_VERSION_MAX + 1];
#endif
} fota_manifest_t;

/* Parses and checks a manifest's fields by docs/FORMAT.md (not the
 * device's rules). FOTA_ERR_MANIFEST when anything is wrong. The delta
 * fields are known only to FOTA_DELTA builds: others refuse them as
 * unknown fields. */
fota_err_t fota_manifest_parse(const char *js, size_t len, fota_manifest_t *m);

/* PKCS#7: the plaintext length of the final 16-byte block, or -1. */
int fota_unpad(const uint8_t block[16]);

#endif /* FOTA_INTERNAL_H */
