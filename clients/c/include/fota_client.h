/*
 * fota C client: the native fota device API for microcontrollers.
 *
 * Portable C99. The library never calls malloc: the caller gives it a
 * fota_client_t and a work buffer, and a port (struct fota_port) that does
 * the device's I/O. mbedtls does the cryptography (2.28 and 3.x); its
 * public-key verification allocates bignums on mbedtls's heap, once per
 * offer (see README.md, "Memory").
 *
 * One update, as the fota agent does it (docs/PROTOCOL.md):
 *   check in (signed request) -> verify the manifest signature and the
 *   device's rules (hardware, newer version, security counter, slot size,
 *   not rolled back from) before downloading -> download chunks, each
 *   checked against its session-bound HMAC before a byte reaches flash ->
 *   decrypt AES-256-CBC as a stream into the inactive slot, checkpointing
 *   progress and the CBC state every few chunks -> SHA-256 of the image ->
 *   mark the slot to boot on trial -> reboot -> self-test -> confirm or
 *   roll back. Every report goes through a persisted outbox.
 */
#ifndef FOTA_CLIENT_H
#define FOTA_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mbedtls/aes.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>

/* Delta updates (docs/PROTOCOL.md, "delta"): build the library, the port
 * and the firmware with -DFOTA_DELTA=1 and link src/fota_delta.c. The
 * structs below change with it: everything that includes this header must
 * see the same FOTA_DELTA. Without it the library takes full images only,
 * and is as small as ever. */
#ifndef FOTA_DELTA
#define FOTA_DELTA 0
#endif
#if FOTA_DELTA
#include "fota_delta.h"
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define FOTA_CLIENT_VERSION "0.1.0"

/* Longest strings the library keeps, without the terminating NUL. */
#define FOTA_VERSION_MAX 63    /* a release version (SemVer) */
#define FOTA_SESSION_MAX 64    /* a server session id */
#define FOTA_REASON_MAX 120    /* the reason sent with a failed/refused/rolled-back report */
#define FOTA_OUTBOX_MAX 4      /* reports kept while the server cannot be reached */
#define FOTA_REJECTED_MAX 4    /* versions this device rolled back from, refused if offered again */

/* The smallest work buffer fota_init accepts: request headers (576 bytes),
 * the report outbox being worked on (about 1 KiB), and a check answer
 * (about 1.7 KiB with an RSA-2048 signature and a manifest without notes)
 * or one chunk (1 KiB by default). Larger chunks or long release notes
 * need more: the client says so. A delta build's check-in says more (the
 * running image's SHA-256 and the compressions, 119 bytes), which the
 * answer's room must not lose. */
#if FOTA_DELTA
#define FOTA_WORK_MIN (4096 + 128)
#else
#define FOTA_WORK_MIN 4096
#endif

/* Errors. Each has a fixed text (fota_err_str); the client's log line says
 * more. The comment says what the client does about it. */
typedef enum {
    FOTA_OK = 0,
    FOTA_ERR_ARGUMENT,        /* a bad argument or configuration: fix the caller */
    FOTA_ERR_BUFFER,          /* an answer does not fit the work buffer: give a larger one */
    FOTA_ERR_NETWORK,         /* no answer (connect, reset, timeout): transient, retried */
    FOTA_ERR_SERVER_BUSY,     /* 429, 503, 5xx: transient, retried after Retry-After */
    FOTA_ERR_UNAUTHORIZED,    /* 401 (key or clock): kept for the next check */
    FOTA_ERR_FORBIDDEN,       /* 403: the device's API policy; kept for the next check */
    FOTA_ERR_CONFLICT,        /* 409: kept for the next check */
    FOTA_ERR_REJECTED,        /* 400, 404, 413: the server will never take this request */
    FOTA_ERR_SESSION_CLOSED,  /* 410: the update session ended; check again */
    FOTA_ERR_PROTOCOL,        /* a malformed answer: bad JSON, bad frame, wrong chunk */
    FOTA_ERR_SIGNATURE,       /* the manifest signature does not verify */
    FOTA_ERR_UNTRUSTED_KEY,   /* the manifest names a signing key this device does not trust */
    FOTA_ERR_UNSUPPORTED,     /* an algorithm or format this build cannot check (Ed25519 on mbedtls) */
    FOTA_ERR_MANIFEST,        /* a malformed manifest, or an answer that disagrees with it */
    FOTA_ERR_HARDWARE,        /* the release is for other hardware */
    FOTA_ERR_DOWNGRADE,       /* the release is not newer than the running image */
    FOTA_ERR_ROLLED_BACK,     /* this device rolled back from the release before */
    FOTA_ERR_COUNTER,         /* the release's security counter is below the device's */
    FOTA_ERR_TOO_LARGE,       /* the image does not fit the slot, or a chunk the work buffer */
    FOTA_ERR_CHUNK_MAC,       /* a chunk failed its HMAC too often: the session is abandoned */
    FOTA_ERR_DECRYPT,         /* the ciphertext does not decrypt (padding) */
    FOTA_ERR_HASH,            /* the image's SHA-256 is not the signed one */
    FOTA_ERR_FLASH,           /* the port failed to erase, write, read or mark a slot */
    FOTA_ERR_STORAGE,         /* the port failed to keep a record (key-value store) */
    FOTA_ERR_NOT_FOUND,       /* (ports) no such key-value record */
    FOTA_ERR_CRYPTO,          /* mbedtls failed (out of memory, a bad key) */
    FOTA_ERR_ON_TRIAL,        /* the running image must confirm or reject itself first */
    FOTA_ERR_NOT_ON_TRIAL,    /* confirm/reject called for an image that is not on trial */
    FOTA_ERR_SELF_TEST,       /* the self-test failed: the image is rejected; reboot now */
    FOTA_ERR_POWER,           /* (ports) power failed mid-operation: nothing more may be done */
    FOTA_ERR_TIMEOUT,         /* the download took longer than update_timeout_s: kept for the next check */
#if FOTA_DELTA
    FOTA_ERR_DELTA,           /* a delta patch cannot make the release here: reported failed, and
                                 fota_check asks again at once for the full image */
#endif
    FOTA_ERR__COUNT
} fota_err_t;

/* What the client is doing, as fota_progress_t reports it. */
typedef enum {
    FOTA_STATE_IDLE = 0,
    FOTA_STATE_CHECKING,
    FOTA_STATE_DOWNLOADING,
    FOTA_STATE_VERIFYING,
    FOTA_STATE_APPLYING,
    FOTA_STATE_COMPLETED, /* the new image is marked: reboot into it */
    FOTA_STATE_DEFERRED,  /* verified and kept; installed inside its maintenance window */
    FOTA_STATE_ERROR,
    FOTA_STATE_ROLLBACK,
    FOTA_STATE__COUNT
} fota_state_t;

const char *fota_err_str(fota_err_t err);
const char *fota_state_str(fota_state_t state);

typedef enum { FOTA_LOG_ERROR = 0, FOTA_LOG_WARN, FOTA_LOG_INFO, FOTA_LOG_DEBUG } fota_log_level_t;

/* ---- The port: what the firmware implements ------------------------------
 *
 * Every function is required but log, and gets the port's ctx first. Functions that return
 * fota_err_t return FOTA_OK on success. None is called from two threads at
 * once: the library is single-threaded and keeps no global state. */

/* An HTTP answer's status line and the headers the library uses. */
typedef struct {
    int status;              /* HTTP status code */
    int64_t date;            /* the Date header as Unix seconds, 0 when absent (fota_parse_http_date) */
    uint32_t retry_after;    /* Retry-After in seconds, 0 when absent */
    int64_t content_length;  /* -1 when not given (chunked) */
} fota_http_response_t;

/* What the boot step decided, and what the device is. */
typedef struct {
    char running_version[FOTA_VERSION_MAX + 1]; /* the running image's version */
    uint32_t security_counter;  /* the device's anti-rollback counter (ESP-IDF secure_version) */
    uint32_t slot_size;         /* bytes the inactive slot holds */
    bool trial;                 /* the running image is on trial (ESP_OTA_IMG_PENDING_VERIFY) */
    /* A rollback the boot step performed and the library has not yet
     * acknowledged (boot_ack_rollback): the version rolled back from, and why.
     * Empty when there is none. */
    char rolled_back_version[FOTA_VERSION_MAX + 1];
    char rollback_reason[FOTA_REASON_MAX + 1];
#if FOTA_DELTA
    /* The running image, the base a delta patch is applied onto: its size
     * in bytes and SHA-256 (of the running slot's first running_size
     * bytes, exactly the release's image). running_known false: the port
     * does not know them, and the device asks for full images only. */
    bool running_known;
    uint32_t running_size;
    uint8_t running_sha256[32];
#endif
} fota_boot_info_t;

typedef struct fota_port {
    void *ctx;

    /* HTTP, one exchange at a time. http_begin sends METHOD to uri (the
     * path and query to request from the server given in fota_config_t
     * server_url, exactly as the library signed it), with the extra header
     * lines in headers ("Name: value\r\n" each; the port adds Host,
     * Content-Length and Connection), and body (body_len bytes, none when
     * 0); then it reads the status line and headers into resp. FOTA_ERR_NETWORK
     * when there is no answer. */
    fota_err_t (*http_begin)(void *ctx, const char *method, const char *uri, const char *headers,
                             const uint8_t *body, size_t body_len, fota_http_response_t *resp);
    /* Reads up to len bytes of the answer's body (de-chunked): returns the
     * number read (>0), 0 at the end of the body, or -1 when the connection
     * failed before it. */
    int32_t (*http_read)(void *ctx, uint8_t *buf, size_t len);
    /* Ends the exchange. complete: the whole body was read, so the
     * connection may be kept for the next request. */
    void (*http_end)(void *ctx, bool complete);

    /* The boot step's decision (fota_boot_info_t): read at fota_init. */
    fota_err_t (*boot_info)(void *ctx, fota_boot_info_t *out);
    /* Forget the rollback boot_info reported, once its report is queued. */
    fota_err_t (*boot_ack_rollback)(void *ctx);

    /* The inactive slot. slot_begin readies it for a new image of size
     * bytes (erases it); slot_write writes at off (writes come in order,
     * but after a power cut the library writes again from its last
     * checkpoint, the same bytes as before); slot_read reads back what was
     * written; slot_sync makes the writes durable. */
    fota_err_t (*slot_begin)(void *ctx, uint32_t size);
    fota_err_t (*slot_write)(void *ctx, uint32_t off, const uint8_t *data, size_t len);
    fota_err_t (*slot_read)(void *ctx, uint32_t off, uint8_t *data, size_t len);
    fota_err_t (*slot_sync)(void *ctx);
    /* Marks the inactive slot, holding a verified image of size bytes and
     * this version and security counter, to boot next on trial. */
    fota_err_t (*slot_set_pending)(void *ctx, const char *version, uint32_t security_counter, uint32_t size,
                                   const uint8_t sha256[32]);
#if FOTA_DELTA
    /* Reads the running slot (the base of a delta patch): len bytes at off,
     * inside the running image (boot_info's running_size). The library
     * never writes that slot. */
    fota_err_t (*running_read)(void *ctx, uint32_t off, uint8_t *data, size_t len);
#endif

    /* The running image on trial passed its self-test: mark it valid and
     * raise the stored security counter to its own. */
    fota_err_t (*boot_confirm)(void *ctx);
    /* The running image on trial failed: mark it invalid so that the next
     * boot runs the previous image, and remember why (boot_info reports it
     * as rolled back). The caller reboots. */
    fota_err_t (*boot_reject)(void *ctx, const char *reason);

    /* A persistent key-value store for the library's records (a few
     * hundred bytes each; keys are short ASCII). kv_set replaces a record
     * atomically: after a power cut the old or the new value is there,
     * never a mix. kv_get returns FOTA_ERR_NOT_FOUND for an absent key and
     * FOTA_ERR_BUFFER when the value is longer than cap. */
    fota_err_t (*kv_get)(void *ctx, const char *key, uint8_t *buf, size_t cap, size_t *len);
    fota_err_t (*kv_set)(void *ctx, const char *key, const uint8_t *val, size_t len);
    fota_err_t (*kv_delete)(void *ctx, const char *key);

    /* Unix time in seconds by the device's clock (it may be wrong: the
     * library corrects it by the server's Date). */
    int64_t (*now)(void *ctx);
    /* Waits ms milliseconds (between retries). */
    void (*sleep_ms)(void *ctx, uint32_t ms);
    /* Fills buf with len random bytes from a cryptographic source (nonces). */
    fota_err_t (*random)(void *ctx, uint8_t *buf, size_t len);
    /* One log line, without a newline. May be NULL. The library never
     * logs a key. */
    void (*log)(void *ctx, fota_log_level_t level, const char *line);
} fota_port_t;

/* ---- Configuration ---------------------------------------------------- */

typedef struct {
    fota_state_t state;
    const char *version;   /* the release being installed, or "" */
    uint32_t chunk, chunks; /* chunks done, of chunks */
    uint32_t bytes, total_bytes;
    fota_err_t err;         /* in FOTA_STATE_ERROR */
} fota_progress_t;

typedef struct {
    const char *server_url;     /* "http://host:port[/prefix]" or https (OTA_SERVER_URL of keys.h) */
    const char *device_id;      /* DEVICE_ID */
    const char *psk_hex;        /* HMAC_PSK: the device key, 64 hex digits */
    const char *hardware;       /* the hardware releases must name ("esp32") */
    const char *chip;           /* told to the server in the check-in's inventory; may be NULL */
    const char *public_key_pem; /* SERVER_PUBLIC_KEY: the release signing key, PKIX PEM */
    const uint8_t *firmware_key; /* AES_FIRMWARE_KEY: 32 bytes */

    uint16_t chunks_per_request; /* chunks asked for in one request; 0: 16 */
    uint16_t checkpoint_every;   /* chunks between persisted checkpoints; 0: 8 */
    uint8_t chunk_retries;       /* fetches of a chunk that fails its HMAC before giving up; 0: 3 */
    uint8_t retry_attempts;      /* tries of a request failing transiently; 0: 5 */
    uint32_t retry_base_ms;      /* first backoff; 0: 1000 */
    uint32_t retry_max_ms;       /* backoff cap; 0: 60000 */
    uint32_t update_timeout_s;   /* a download running longer stops (a server feeding it slowly); 0: 3600 */
    /* Push (fota_client_notify): the least time from one check to a check a
     * notification asks for. Notifications are unauthenticated, so this
     * bounds how often a forger can make the device check; 0: 60. */
    uint32_t push_min_interval_s; /* at most 86400 */

    /* Runs on the first boot of a new image (fota_startup): FOTA_OK confirms
     * it, anything else rolls it back. NULL: the firmware calls
     * fota_confirm or fota_reject itself. */
    fota_err_t (*self_test)(void *user);
    /* Told every change of state and every chunk. May be NULL. */
    void (*on_progress)(void *user, const fota_progress_t *progress);
    void *user;
} fota_config_t;

/* ---- The client ---------------------------------------------------------- */

/* What a check found and did. */
typedef struct {
    bool update;     /* an update was offered */
    bool installed;  /* the new image is marked to boot on trial: reboot now */
    bool deferred;   /* downloaded and verified, kept for its install window */
    int64_t install_after; /* deferred: when to check again (server time, 0 if unbounded) */
    char version[FOTA_VERSION_MAX + 1];
} fota_result_t;

/* An offer being worked on (internal; in the struct so it needs no heap).
 * The numbers come first, at offsets RV32's short loads reach. */
typedef struct {
    /* From the signed manifest, as the library's manifest type lays them out
     * (copied at once). */
    uint32_t security_counter;
    uint32_t plaintext_size, ciphertext_size, chunk_size, chunks;
    uint8_t plaintext_sha256[32];
    uint8_t iv[16];
    int64_t install_after, install_until;
    char session[FOTA_SESSION_MAX + 1];
    char version[FOTA_VERSION_MAX + 1];
#if FOTA_DELTA
    uint32_t patch_size; /* a delta offer: the patch's size (the download is the patch); 0: the full image */
#endif
} fota_offer_t;

/* The client (internal). The fields used most come first, at offsets
 * RV32's short loads reach. */
typedef struct {
    const fota_config_t *cfg;
    const fota_port_t *port;
    uint8_t *work;
    size_t work_size;
    int key_alg;            /* 1 rsa-2048, 2 ecdsa-p256 */
    uint32_t retry_after;   /* the last refusal's Retry-After, seconds */
    int64_t clock_offset;   /* server time minus device time, seconds */
    fota_progress_t progress;
    fota_offer_t offer;
    int64_t started;        /* when the download began, for update_timeout_s */
    bool slot_ready;        /* the update slot was erased for this download */
    fota_boot_info_t boot;
    char prefix[64];        /* the server URL's path prefix */
    uint8_t psk[32];
    uint8_t key_id[8];      /* SHA-256 of the signing key's DER, first 8 bytes */
    mbedtls_pk_context pk;
    mbedtls_aes_context aes;
    mbedtls_sha256_context sha;   /* the image's SHA-256 */
    mbedtls_sha256_context sha2;  /* HMACs, chunk digests */
    char why[FOTA_REASON_MAX + 1]; /* why the update failed: the error's text and what the device found */
    /* Push: written by fota_client_notify from any task, read by the
     * client's own task. */
    volatile uint32_t push; /* 0 no notification pending, else 1 + spread_ms */
    uint32_t push_last;     /* the last signed request's time, server clock (32 bits: differences only) */
} fota_client_t;

/* Sets c up. work (work_size bytes, at least FOTA_WORK_MIN) belongs to the
 * client from now on. Reads the boot step's decision from the port. The
 * port and config must outlive c. */
fota_err_t fota_init(fota_client_t *c, const fota_config_t *cfg, const fota_port_t *port, uint8_t *work,
                     size_t work_size);
/* Frees what mbedtls allocated for the signing key. */
void fota_deinit(fota_client_t *c);

/* Once per boot, after fota_init: queues the report of a rollback the boot
 * step did, forgets a download whose slot now runs, and, when the running
 * image is on trial, runs the self-test hook and confirms or rejects it.
 * Then sends queued reports (best effort). FOTA_ERR_SELF_TEST: the image
 * was rejected; reboot now. */
fota_err_t fota_startup(fota_client_t *c);

/* Whether the running image is on trial (must confirm or reject itself). */
bool fota_on_trial(const fota_client_t *c);
/* The running image passed its self-test: queue the confirm report, mark
 * the image valid (raising the security counter), send the report. */
fota_err_t fota_confirm(fota_client_t *c);
/* The running image failed its self-test: mark it invalid; reboot next. */
fota_err_t fota_reject(fota_client_t *c, const char *reason);

/* Checks for an update and, when one is offered and checks out, downloads,
 * verifies and installs it. res->installed: reboot now. A deferred install
 * (outside the rollout's maintenance window) returns FOTA_OK with
 * res->deferred. Errors: fota_err_t, with the detail logged. */
fota_err_t fota_check(fota_client_t *c, fota_result_t *res);

/* Sends queued reports, oldest first. */
fota_err_t fota_flush(fota_client_t *c);

/* ---- Push: the server asks for a check now (MQTT) ----------------------
 *
 * The server publishes a notification on "fota/v1/devices/{id}/notify"
 * when the device should check now (a rollout wave opened, its rollout was
 * paused, halted or aborted, it was pinned). The firmware's own MQTT client
 * calls fota_client_notify on every message on that topic (the payload's
 * spread_ms from fota_notify_spread_ms); the task that calls fota_check asks
 * fota_push_wait_ms when it wakes, waits that long and checks, and keeps its
 * timer (6 hours) as the fallback. A notification is unauthenticated, so it
 * can only cause a check (over the signed API), no sooner than
 * push_min_interval_s after the client's last request; fota_mqtt_password
 * derives the broker password. */

/* Records that a check is wanted. Safe to call from another task (the MQTT
 * client's event handler) or a signal handler while the client's task runs
 * it: it only writes one volatile aligned word (spread_ms + 1), which is
 * whole on 32-bit MCUs; nothing is sent or allocated. spread_ms: the
 * payload's (fota_notify_spread_ms) or 0; any value but UINT32_MAX (which
 * would read as no notification: the word's 0).
 * Notifications before fota_push_wait_ms takes them coalesce into one.
 * Call it after fota_init (which clears it). */
void fota_client_notify(fota_client_t *c, uint32_t spread_ms);

/* No notification is pending (fota_push_wait_ms). */
#define FOTA_PUSH_NONE UINT32_MAX

/* The rest is in src/fota_push.c, which only firmware with push links. */

/* From the client's task: FOTA_PUSH_NONE when no notification came since
 * the last call, else it takes the notification and returns the
 * milliseconds to wait before calling fota_check for it: what remains of
 * push_min_interval_s (at most 86400) since the client's last request to
 * the server, plus a random part of the notification's spread, so that a
 * fleet woken together does not arrive together. Keep the earliest such
 * moment: a notification that comes while waiting is answered by that
 * check (or costs one more, no sooner than the interval after it). */
uint32_t fota_push_wait_ms(fota_client_t *c);

/* The spread_ms of a notification's payload ({"v":1,"reason":"rollout",
 * "spread_ms":2500}), capped at 60000; 0 when it has none or the payload is
 * not such a JSON object of at most 256 bytes. Touches nothing but its
 * arguments: call it in the MQTT task, then fota_client_notify. */
uint32_t fota_notify_spread_ms(const void *payload, size_t len);

/* The MQTT password the broker knows the device by (its user name and client
 * id are device_id): the lowercase hex of HMAC-SHA256(PSK, "fota-mqtt-v1\n"
 * || device_id), 64 digits and a NUL into out. Derived from the device key
 * (HMAC_PSK of keys.h, psk_hex) so there is nothing new to provision, and
 * one-way, so the broker learns nothing of the key. FOTA_ERR_ARGUMENT for a
 * key that is not 64 hex digits. */
fota_err_t fota_mqtt_password(const char *psk_hex, const char *device_id, char out[65]);

/* The latest progress. */
const fota_progress_t *fota_progress(const fota_client_t *c);

/* Helpers for ports. */
/* Parses an HTTP-date ("Sun, 06 Nov 1994 08:49:37 GMT") to Unix seconds; 0 when malformed. */
int64_t fota_parse_http_date(const char *s);

#ifdef __cplusplus
}
#endif

#endif /* FOTA_CLIENT_H */
