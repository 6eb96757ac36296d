/*
 * The fota C client's cryptography, over mbedtls 2.28 or 3.x: SHA-256,
 * HMAC-SHA256 (on a bare SHA-256 context, so nothing allocates), the chunk
 * and request MACs of docs/PROTOCOL.md, and signature verification.
 */
#include <string.h>

#include <mbedtls/version.h>

#include "fota_internal.h"

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#define SHA256_STARTS(s) mbedtls_sha256_starts(s, 0)
#define SHA256_UPDATE mbedtls_sha256_update
#define SHA256_FINISH mbedtls_sha256_finish
#else
#define SHA256_STARTS(s) mbedtls_sha256_starts_ret(s, 0)
#define SHA256_UPDATE mbedtls_sha256_update_ret
#define SHA256_FINISH mbedtls_sha256_finish_ret
#endif

int fota_sha256_start(mbedtls_sha256_context *s) { return SHA256_STARTS(s); }

int fota_sha256_update(mbedtls_sha256_context *s, const void *p, size_t n)
{
    return n ? SHA256_UPDATE(s, (const unsigned char *)p, n) : 0;
}

int fota_sha256_finish(mbedtls_sha256_context *s, uint8_t out[32]) { return SHA256_FINISH(s, out); }

static int pad_key(mbedtls_sha256_context *s, const uint8_t key[32], uint8_t x)
{
    uint8_t block[64];
    for (int i = 0; i < 64; i++) block[i] = (uint8_t)((i < 32 ? key[i] : 0) ^ x);
    int rc = SHA256_STARTS(s);
    if (!rc) rc = SHA256_UPDATE(s, block, sizeof block);
    memset(block, 0, sizeof block);
    return rc;
}

int fota_hmac_start(mbedtls_sha256_context *s, const uint8_t key[32]) { return pad_key(s, key, 0x36); }

int fota_hmac_finish(mbedtls_sha256_context *s, const uint8_t key[32], uint8_t out[32])
{
    uint8_t inner[32];
    int rc = SHA256_FINISH(s, inner);
    if (!rc) rc = pad_key(s, key, 0x5c);
    if (!rc) rc = SHA256_UPDATE(s, inner, sizeof inner);
    if (!rc) rc = SHA256_FINISH(s, out);
    return rc;
}

bool fota_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    for (size_t i = 0; i < n; i++) d |= (uint8_t)(a[i] ^ b[i]);
    return d == 0;
}

static void be32(uint8_t out[4], uint32_t x)
{
    out[0] = (uint8_t)(x >> 24);
    out[1] = (uint8_t)(x >> 16);
    out[2] = (uint8_t)(x >> 8);
    out[3] = (uint8_t)x;
}

int fota_session_chunk_key(mbedtls_sha256_context *s, const uint8_t psk[32], const char *session, uint8_t out[32])
{
    int rc = fota_hmac_start(s, psk);
    if (!rc) rc = fota_sha256_update(s, "fota-chunk-v2\n", 14);
    if (!rc) rc = fota_sha256_update(s, session, strlen(session));
    if (!rc) rc = fota_hmac_finish(s, psk, out);
    return rc;
}

int fota_chunk_mac_v2(mbedtls_sha256_context *s, const uint8_t session_key[32], uint32_t index, const uint8_t *data,
                      size_t n, uint8_t out[32])
{
    uint8_t msg[36];
    be32(msg, index);
    int rc = fota_sha256_start(s);
    if (!rc) rc = fota_sha256_update(s, data, n);
    if (!rc) rc = fota_sha256_finish(s, msg + 4);
    if (!rc) rc = fota_hmac_start(s, session_key);
    if (!rc) rc = fota_sha256_update(s, msg, sizeof msg);
    if (!rc) rc = fota_hmac_finish(s, session_key, out);
    return rc;
}

int fota_request_mac(mbedtls_sha256_context *s, const uint8_t psk[32], const char *method, const char *uri,
                     const char *device, const char *timestamp, const char *nonce, const uint8_t *body,
                     size_t body_len, uint8_t out[32])
{
    uint8_t digest[32];
    char hex[65];
    int rc = fota_sha256_start(s);
    if (!rc) rc = fota_sha256_update(s, body, body_len);
    if (!rc) rc = fota_sha256_finish(s, digest);
    if (rc) return rc;
    fota_hex(hex, digest, 32);
    const char *parts[] = {"fota-request-v1", method, uri, device, timestamp, nonce, hex};
    rc = fota_hmac_start(s, psk);
    for (size_t i = 0; !rc && i < sizeof parts / sizeof parts[0]; i++) {
        if (i) rc = fota_sha256_update(s, "\n", 1);
        if (!rc) rc = fota_sha256_update(s, parts[i], strlen(parts[i]));
    }
    if (!rc) rc = fota_hmac_finish(s, psk, out);
    return rc;
}

/* A P-256 key's SubjectPublicKeyInfo (91 bytes) up to its point's X and Y:
 * SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING { 04 ... } }.
 * The curve is read from this DER, which mbedtls 2.28 and 3.x write alike,
 * and not from the key's group id: 3.x keeps that field private, with a
 * public getter only from 3.6 and only under MBEDTLS_ECP_C. */
static const uint8_t p256_spki[] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                                    0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04};

fota_err_t fota_key_load(mbedtls_pk_context *pk, const char *pem, size_t pem_len, uint8_t *scratch,
                         size_t scratch_len, int *alg, uint8_t key_id[8])
{
    int rc = mbedtls_pk_parse_public_key(pk, (const unsigned char *)pem, pem_len);
    if (rc == MBEDTLS_ERR_PK_UNKNOWN_PK_ALG) return FOTA_ERR_UNSUPPORTED; /* Ed25519: mbedtls has none */
    if (rc) return FOTA_ERR_ARGUMENT;
    *alg = FOTA_ALG_NONE;
    if (mbedtls_pk_get_type(pk) == MBEDTLS_PK_RSA) {
        size_t bits = mbedtls_pk_get_bitlen(pk);
        if (bits >= 2048 && bits <= 4096) *alg = FOTA_ALG_RSA;
    } else if (mbedtls_pk_get_type(pk) == MBEDTLS_PK_ECKEY) {
        *alg = FOTA_ALG_ECDSA_P256; /* if its curve is P-256: below */
    }
    if (*alg == FOTA_ALG_NONE) return FOTA_ERR_UNSUPPORTED;
    /* The DER is written at the end of the buffer. */
    int n = mbedtls_pk_write_pubkey_der(pk, scratch, scratch_len);
    if (n <= 0) return FOTA_ERR_CRYPTO;
    if (*alg == FOTA_ALG_ECDSA_P256 &&
        ((size_t)n != 91 || memcmp(scratch + scratch_len - (size_t)n, p256_spki, sizeof p256_spki) != 0)) {
        *alg = FOTA_ALG_NONE;
        return FOTA_ERR_UNSUPPORTED;
    }
    mbedtls_sha256_context s;
    uint8_t digest[32];
    mbedtls_sha256_init(&s);
    rc = fota_sha256_start(&s);
    if (!rc) rc = fota_sha256_update(&s, scratch + scratch_len - (size_t)n, (size_t)n);
    if (!rc) rc = fota_sha256_finish(&s, digest);
    mbedtls_sha256_free(&s);
    if (rc) return FOTA_ERR_CRYPTO;
    memcpy(key_id, digest, 8);
    return FOTA_OK;
}

fota_err_t fota_verify(mbedtls_pk_context *pk, mbedtls_sha256_context *s, const uint8_t *msg, size_t n,
                       const uint8_t *sig, size_t sig_len)
{
    uint8_t digest[32];
    int rc = fota_sha256_start(s);
    if (!rc) rc = fota_sha256_update(s, msg, n);
    if (!rc) rc = fota_sha256_finish(s, digest);
    if (rc) return FOTA_ERR_CRYPTO;
    if (sig_len == 0) return FOTA_ERR_SIGNATURE;
    rc = mbedtls_pk_verify(pk, MBEDTLS_MD_SHA256, digest, sizeof digest, sig, sig_len);
#if defined(MBEDTLS_ERR_MPI_ALLOC_FAILED)
    if (rc == MBEDTLS_ERR_MPI_ALLOC_FAILED) return FOTA_ERR_CRYPTO;
#endif
    return rc == 0 ? FOTA_OK : FOTA_ERR_SIGNATURE;
}
