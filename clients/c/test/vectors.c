/*
 * fota-vectors: checks the C client's pieces against the test vectors the
 * Go packages check theirs against (protocol/testdata/vectors, bundle/
 * testdata/vectors), so the two implementations cannot drift apart.
 *
 *   fota-vectors PROTOCOL_VECTOR_DIR BUNDLE_VECTOR_DIR
 *
 * Prints one line per case and "ok N cases" at the end; exits 1 on the
 * first mismatch.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fota_internal.h"

static int cases, v1_cases;

static void fail(const char *file, const char *name, const char *what)
{
    fprintf(stderr, "FAIL %s %s: %s\n", file, name, what);
    exit(1);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    buf[n] = 0;
    if (len) *len = (size_t)n;
    return buf;
}

/* One case: "key: value" lines. */
#define MAX_FIELDS 32
typedef struct {
    int n;
    char *key[MAX_FIELDS], *val[MAX_FIELDS];
} vcase_t;

static const char *get(const vcase_t *vc, const char *key)
{
    for (int i = 0; i < vc->n; i++)
        if (!strcmp(vc->key[i], key)) return vc->val[i];
    return NULL;
}

static const char *need(const vcase_t *vc, const char *file, const char *key)
{
    const char *v = get(vc, key);
    if (!v) fail(file, get(vc, "name") ? get(vc, "name") : "?", key);
    return v;
}

/* Splits text into cases at blank lines; calls fn for each. */
static void each_case(char *text, const char *file, void (*fn)(const char *file, const vcase_t *vc))
{
    vcase_t vc = {0, {0}, {0}};
    for (char *line = text; line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        size_t len = strlen(line);
        if (len && line[len - 1] == '\r') line[--len] = 0;
        if (len == 0) {
            if (vc.n) fn(file, &vc);
            vc.n = 0;
        } else if (line[0] != '#') {
            char *colon = strchr(line, ':');
            if (!colon) fail(file, "?", line);
            *colon = 0;
            char *val = colon + 1;
            while (*val == ' ') val++;
            if (vc.n == MAX_FIELDS) fail(file, "?", "too many fields");
            vc.key[vc.n] = line;
            vc.val[vc.n++] = val;
        }
        line = nl ? nl + 1 : NULL;
    }
    if (vc.n) fn(file, &vc);
}

static size_t unhex_any(uint8_t *out, size_t cap, const char *hex, const char *file, const char *name)
{
    size_t n = strlen(hex) / 2;
    if (n > cap || !fota_unhex(out, n, hex, strlen(hex))) fail(file, name, "bad hex");
    return n;
}

static void check_mac(const char *file, const char *name, const uint8_t got[32], const char *want_hex)
{
    uint8_t want[32];
    if (!fota_unhex(want, 32, want_hex, strlen(want_hex))) fail(file, name, "bad expected MAC");
    if (memcmp(got, want, 32)) fail(file, name, "MAC differs");
}

static uint8_t big[1 << 20];

static void request_case(const char *file, const vcase_t *vc)
{
    const char *name = need(vc, file, "name");
    uint8_t psk[32], mac[32];
    mbedtls_sha256_context s;
    mbedtls_sha256_init(&s);
    unhex_any(psk, 32, need(vc, file, "psk"), file, name);
    size_t body = unhex_any(big, sizeof big, need(vc, file, "body"), file, name);
    if (fota_request_mac(&s, psk, need(vc, file, "method"), need(vc, file, "uri"), need(vc, file, "device"),
                         need(vc, file, "timestamp"), need(vc, file, "nonce"), big, body, mac))
        fail(file, name, "mbedtls");
    check_mac(file, name, mac, need(vc, file, "signature"));
    mbedtls_sha256_free(&s);
    cases++;
}

static void mqtt_case(const char *file, const vcase_t *vc)
{
    const char *name = need(vc, file, "name");
    char got[65];
    if (fota_mqtt_password(need(vc, file, "psk"), need(vc, file, "device"), got) != FOTA_OK) fail(file, name, "refused");
    if (strcmp(got, need(vc, file, "password"))) fail(file, name, "password differs");
    cases++;
}

static void chunk_case(const char *file, const vcase_t *vc)
{
    const char *name = need(vc, file, "name"), *scheme = need(vc, file, "scheme");
    uint8_t psk[32], key[32], mac[32];
    mbedtls_sha256_context s;
    mbedtls_sha256_init(&s);
    unhex_any(psk, 32, need(vc, file, "psk"), file, name);
    size_t n = unhex_any(big, sizeof big, need(vc, file, "data"), file, name);
    const char *session = need(vc, file, "session");
    uint32_t index = (uint32_t)strtoul(need(vc, file, "index"), NULL, 10);
    if (!strcmp(scheme, "v1")) {
        /* The client speaks v2 only (every server since before it offers v2). */
        mbedtls_sha256_free(&s);
        v1_cases++;
        return;
    } else if (!strcmp(scheme, "v2")) {
        fota_session_chunk_key(&s, psk, session, key);
        check_mac(file, name, key, need(vc, file, "session_key"));
        fota_chunk_mac_v2(&s, key, index, big, n, mac);
    } else {
        fail(file, name, "unknown scheme");
    }
    check_mac(file, name, mac, need(vc, file, "mac"));
    mbedtls_sha256_free(&s);
    cases++;
}

static void semver_case(const char *file, const vcase_t *vc)
{
    const char *name = need(vc, file, "name");
    const char *version = get(vc, "version");
    if (version) {
        /* The client keeps versions of at most FOTA_VERSION_MAX characters
         * in its fixed records; a longer one is refused as invalid. */
        bool want = !strcmp(need(vc, file, "valid"), "true") && strlen(version) <= FOTA_VERSION_MAX;
        if (fota_semver_valid(version) != want) fail(file, name, "validity differs");
    } else {
        const char *a = need(vc, file, "a"), *b = need(vc, file, "b");
        int want = atoi(need(vc, file, "cmp"));
        if (fota_semver_cmp(a, b) != want) fail(file, name, "precedence differs");
        if (fota_semver_cmp(b, a) != -want) fail(file, name, "precedence not symmetric");
    }
    cases++;
}

static void time_case(const char *file, const vcase_t *vc)
{
    const char *name = need(vc, file, "name");
    bool valid = !strcmp(need(vc, file, "valid"), "true");
    const char *s;
    int64_t got = 0;
    bool ok;
    if ((s = get(vc, "date"))) {
        got = fota_parse_http_date(s);
        ok = got != 0;
    } else {
        s = need(vc, file, "time");
        ok = fota_parse_rfc3339(s, strlen(s), &got);
    }
    if (ok != valid) fail(file, name, valid ? "refused a valid time" : "accepted an invalid time");
    if (valid && got != atoll(need(vc, file, "unix"))) fail(file, name, "time differs");
    cases++;
}

/* ---- Bundles ---- */

static const char *bundle_dir;

static char *load_rel(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", bundle_dir, name);
    return read_file(path, len);
}

static uint32_t be(const uint8_t *p, int n)
{
    uint32_t x = 0;
    for (int i = 0; i < n; i++) x = x << 8 | p[i];
    return x;
}

/* What the native client concludes about a bundle: the container checks
 * (which the server does for it) here, the rest with the client's code. */
static const char *judge_bundle(const uint8_t *b, size_t n, const char *pub_name, const char *key_name)
{
    if (n < 16) return "truncated";
    if (memcmp(b, "FOTA", 4)) return "malformed";
    if (be(b + 4, 2) != 1) return "unsupported format";
    if (be(b + 6, 2) != 0) return "malformed";
    uint32_t m = be(b + 8, 4), s = be(b + 12, 2), l = be(b + 14, 2);
    if (m < 1 || m > 65536 || s < 1 || s > 1024 || l > 1024) return "too large";
    if (n < 16 + m + s + l) return "truncated";
    size_t pem_len;
    char *pem = load_rel(pub_name, &pem_len);
    uint8_t fw[64];
    size_t fw_len;
    char *fwkey = load_rel(key_name, &fw_len);
    if (!pem || !fwkey) return "missing key file";
    if (fw_len == 64 && fota_unhex(fw, 32, fwkey, 64)) fw_len = 32;
    else memcpy(fw, fwkey, 32);
    free(fwkey);
    mbedtls_pk_context pk;
    mbedtls_sha256_context sha;
    mbedtls_pk_init(&pk);
    mbedtls_sha256_init(&sha);
    int alg;
    uint8_t key_id[8], scratch[1024];
    char ours[17], theirs[17] = "";
    const char *verdict = "success";
    fota_err_t err = fota_key_load(&pk, pem, pem_len + 1, scratch, sizeof scratch, &alg, key_id);
    free(pem);
    if (err) {
        verdict = err == FOTA_ERR_UNSUPPORTED ? "unsupported key" : "bad key";
        goto out;
    }
    const char *manifest = (const char *)b + 16;
    const char *k = strstr(manifest, "\"key_id\": \"");
    if (k && k < manifest + m) memcpy(theirs, k + 11, 16), theirs[16] = 0;
    fota_hex(ours, key_id, 8);
    if (strcmp(ours, theirs)) {
        verdict = "untrusted key";
        goto out;
    }
    if (fota_verify(&pk, &sha, b + 16, m, b + 16 + m, s)) {
        verdict = "signature failure";
        goto out;
    }
    fota_manifest_t man;
    if (fota_manifest_parse(manifest, m, &man)) {
        verdict = man.plaintext_size == 0 ? "too large" : "malformed";
        goto out;
    }
    size_t off = 16 + m + s + l, ct = n - off;
    if (ct < man.ciphertext_size) {
        verdict = "truncated";
        goto out;
    }
    if (ct > man.ciphertext_size) {
        verdict = "trailing data";
        goto out;
    }
    uint8_t digest[32];
    fota_sha256_start(&sha);
    fota_sha256_update(&sha, b + off, ct);
    fota_sha256_finish(&sha, digest);
    if (memcmp(digest, man.ciphertext_sha256, 32)) {
        verdict = "ciphertext hash mismatch";
        goto out;
    }
    /* Decrypt as the client does: chunk by chunk, in place, unpadding the last block. */
    mbedtls_aes_context aes;
    mbedtls_aes_init(&aes);
    mbedtls_aes_setkey_dec(&aes, fw, 256);
    uint8_t iv[16];
    memcpy(iv, man.iv, 16);
    memcpy(big, b + off, ct);
    fota_sha256_start(&sha);
    for (size_t at = 0; at < ct; at += man.chunk_size) {
        size_t len = ct - at < man.chunk_size ? ct - at : man.chunk_size;
        mbedtls_aes_crypt_cbc(&aes, MBEDTLS_AES_DECRYPT, len, iv, big + at, big + at);
        if (at + len == ct) {
            int tail = fota_unpad(big + ct - 16);
            if (tail < 0) {
                verdict = "decryption failure";
                break;
            }
            len = len - 16 + (size_t)tail;
        }
        fota_sha256_update(&sha, big + at, len);
    }
    mbedtls_aes_free(&aes);
    fota_sha256_finish(&sha, digest);
    if (!strcmp(verdict, "success") && memcmp(digest, man.plaintext_sha256, 32)) verdict = "plaintext hash mismatch";
out:
    mbedtls_pk_free(&pk);
    mbedtls_sha256_free(&sha);
    return verdict;
}

/* Where the native client rightly differs from the Go bundle reader. */
static const char *client_expectation(const char *file, const char *expect)
{
    /* The legacy signature is for the EcoWatt API; the native client never sees it. */
    if (!strcmp(file, "legacy-bit-flipped.vector")) return "success";
    /* Its manifest was re-signed with another plaintext digest, which the
     * Go reader catches at the legacy signature and the client at the end. */
    if (!strcmp(file, "resigned-legacy-mismatch.vector")) return "plaintext hash mismatch";
    /* mbedtls has no Ed25519: the client refuses such a key, plainly. */
    if (!strcmp(file, "good-ed25519.vector")) return "unsupported key";
    return expect;
}

static void bundle_vector(const char *file)
{
    size_t len;
    char *text = load_rel(file, &len);
    if (!text) fail(file, "", "unreadable");
    char *body = strstr(text, "\n\n");
    if (!body) fail(file, "", "no blank line before the bundle");
    *body = 0;
    body += 2;
    char expect[64] = "", pub[64] = "signing.pub", key[64] = "firmware.key";
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strncmp(line, "expect: ", 8)) snprintf(expect, sizeof expect, "%s", line + 8);
        if (!strncmp(line, "pub: ", 5)) snprintf(pub, sizeof pub, "%s", line + 5);
        if (!strncmp(line, "firmware-key: ", 14)) snprintf(key, sizeof key, "%s", line + 14);
    }
    /* The base64 body in lines: join, then decode. */
    size_t j = 0;
    for (size_t i = 0; body[i]; i++)
        if (body[i] != '\n' && body[i] != '\r') body[j++] = body[i];
    int32_t n = fota_base64_decode((uint8_t *)body, body, j);
    if (n < 0) fail(file, "", "bad base64");
    const char *want = client_expectation(file, expect);
    const char *got = judge_bundle((const uint8_t *)body, (size_t)n, pub, key);
    printf("bundle %-34s %s\n", file, got);
    if (strcmp(got, want)) {
        fprintf(stderr, "FAIL %s: the client says %s, want %s\n", file, got, want);
        exit(1);
    }
    free(text);
    cases++;
}

/* fota_notify_spread_ms on payloads as protocol.Notification.Marshal
 * writes them, and on what it must not trust. */
static void notify_cases(void)
{
    static char longest[300];
    static const struct {
        const char *payload;
        uint32_t want;
    } t[] = {
        {"{\"v\":1,\"reason\":\"rollout\",\"rollout\":12,\"spread_ms\":2500}", 2500},
        {"{\"v\":1,\"reason\":\"pinned\"}", 0},
        {"{\"v\":1,\"reason\":\"rollout\",\"spread_ms\":120000}", 60000}, /* capped, as Notification.Spread */
        {"{\"spread_ms\":-5}", 0},
        {"{\"spread_ms\":\"2500\"}", 0},
        {"{\"spread_ms\":2500", 0}, /* not JSON */
        {"", 0},
        {longest, 0}, /* over MaxNotificationSize */
    };
    memset(longest, ' ', sizeof longest - 1);
    memcpy(longest, "{\"spread_ms\":2500", 17);
    longest[sizeof longest - 2] = '}';
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        uint32_t got = fota_notify_spread_ms(t[i].payload, strlen(t[i].payload));
        if (got != t[i].want) {
            fprintf(stderr, "FAIL notify payload %zu: spread %lu, want %lu\n", i, (unsigned long)got, (unsigned long)t[i].want);
            exit(1);
        }
        cases++;
    }
    printf("notify payloads %d cases\n", (int)(sizeof t / sizeof t[0]));
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: fota-vectors PROTOCOL_VECTOR_DIR BUNDLE_VECTOR_DIR\n");
        return 2;
    }
    static const struct {
        const char *file;
        void (*fn)(const char *, const vcase_t *);
    } sets[] = {{"request-signing.vectors", request_case}, {"chunk-mac.vectors", chunk_case},
                {"semver.vectors", semver_case},           {"http-date.vectors", time_case},
                {"rfc3339.vectors", time_case},           {"mqtt-password.vectors", mqtt_case}};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", argv[1], sets[i].file);
        char *text = read_file(path, NULL);
        if (!text) fail(sets[i].file, "", "unreadable");
        int before = cases;
        each_case(text, sets[i].file, sets[i].fn);
        printf("protocol %-26s %d cases\n", sets[i].file, cases - before);
        if (cases == before) fail(sets[i].file, "", "no cases");
        free(text);
    }
    notify_cases();
    bundle_dir = argv[2];
    DIR *d = opendir(bundle_dir);
    if (!d) fail(bundle_dir, "", "unreadable");
    struct dirent *e;
    int bundles = 0;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 7 && !strcmp(e->d_name + n - 7, ".vector")) {
            bundle_vector(e->d_name);
            bundles++;
        }
    }
    closedir(d);
    if (bundles == 0) fail(bundle_dir, "", "no bundle vectors");
    printf("ok %d cases (%d chunk-MAC v1 cases are for servers' other clients: the C client speaks v2 only)\n", cases, v1_cases);
    return 0;
}
