/*
 * The fota C client's update flow: check-in, offer checks, download with
 * checkpoints, install, first-boot confirm or rollback, and the report
 * outbox. docs/PROTOCOL.md is the protocol; agent/agent.go is the Go agent
 * this mirrors.
 *
 * Written for size (scripts/size.sh: 16 KiB of code on an ESP32-C3, where
 * each call or address of a text costs 8 bytes): name tables are
 * NUL-separated strings rather than arrays of pointers, records are named
 * by a number, log and report texts are short, and repeated steps are
 * shared helpers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "fota_internal.h"

/* The work buffer: the request URI, the request's header lines, then data
 * (request and answer bodies, one chunk, records being encoded). */
#define URI_OFF 0
#define URI_CAP 256
#define HDR_OFF (URI_OFF + URI_CAP)
#define HDR_CAP 320
#define DATA_OFF (HDR_OFF + HDR_CAP)
#define DATA(c) ((c)->work + DATA_OFF)
/* The report outbox, being worked on, takes the end of the buffer. */
#define DATA_CAP(c) ((c)->work_size - DATA_OFF - sizeof(outbox_t))
#define URI(c) ((char *)(c)->work + URI_OFF)
#define HDR(c) ((char *)(c)->work + HDR_OFF)

/* ---- Name lists ---- */

/* The i-th name of a list of NUL-terminated names (i within it). */
static const char *nth(const char *list, unsigned i)
{
    while (i--)
        while (*list++) continue;
    return list;
}

/* The index of key (n bytes, no NUL in it) in a list of names ending in an
 * empty one; -1 when it is not there. */
static int name_index(const char *list, const char *key, size_t n)
{
    for (int i = 0; *list; i++) {
        size_t k = 0;
        while (k < n && list[k] == key[k]) k++;
        if (k == n && !list[n]) return i;
        while (*list++) continue;
    }
    return -1;
}

/* ---- Reports: a persisted outbox ---- */

enum { REPORT_DOWNLOADED = 0, REPORT_VERIFIED, REPORT_APPLIED, REPORT_CONFIRMED, REPORT_ROLLED_BACK,
       REPORT_FAILED, REPORT_REFUSED,
#if FOTA_DELTA
       REPORT_DELTA_FAILED, /* failed, and the failure is the delta's ("artifact":"delta") */
#endif
       REPORT__COUNT };
static const char report_names[] = "downloaded\0verified\0applied\0confirmed\0rolled-back\0failed\0refused"
#if FOTA_DELTA
                                   "\0failed"
#endif
    ;

/* Records are fixed-layout structs of bytes and 32-bit words, stored as
 * they are: each starts with a header naming its kind, layout version and
 * size, so a record from another layout is ignored, never misread. */
typedef struct {
    uint8_t kind, version, size_lo, size_hi;
} record_header_t;

typedef struct {
    uint8_t status;
    char session[FOTA_SESSION_MAX + 1];
    char version[FOTA_VERSION_MAX + 1];
    char reason[FOTA_REASON_MAX + 1];
} report_t;

typedef struct {
    record_header_t h;
    uint8_t count;
    report_t r[FOTA_OUTBOX_MAX];
} outbox_t;

/* The download record: where a download stands, so a power cut resumes it. */
typedef struct {
    record_header_t h;
    char version[FOTA_VERSION_MAX + 1];
    char base[FOTA_VERSION_MAX + 1]; /* the running version it was made under */
    char session[FOTA_SESSION_MAX + 1];
    uint8_t sha256[32];              /* the release's plaintext SHA-256: which release */
    uint8_t cbc[16];                 /* the CBC chaining value at next_chunk */
    uint8_t verified;                /* the whole image is in the slot and matched */
#if FOTA_DELTA
    uint8_t delta;                   /* the download is a delta patch (patch below) */
#endif
    uint32_t next_chunk, written;    /* written: bytes decrypted (of the patch, for a delta) */
#if FOTA_DELTA
    /* The patcher's state at next_chunk, saved with the rest in one record
     * so that a power cut resumes the patch where the decrypter resumes. */
    fota_delta_t patch;
#endif
} download_t;

/* The install record: which session installed the image on trial. */
typedef struct {
    record_header_t h;
    char version[FOTA_VERSION_MAX + 1];
    char session[FOTA_SESSION_MAX + 1];
} install_t;

/* The versions this device rolled back from, newest last. */
typedef struct {
    record_header_t h;
    uint8_t count;
    char v[FOTA_REJECTED_MAX][FOTA_VERSION_MAX + 1];
} rejected_t;

/* The records, by number: their keys in the port's key-value store and
 * their headers. */
enum { REC_DOWNLOAD, REC_INSTALL, REC_OUTBOX, REC_REJECTED };
static const char record_keys[] = "fota.dl\0fota.inst\0fota.outbox\0fota.rejected";
#define RECORD_VERSION 1
#define HEADER(kind, type) {kind, RECORD_VERSION, sizeof(type) & 255, sizeof(type) >> 8}
static const record_header_t record_headers[] = {HEADER('D', download_t), HEADER('I', install_t),
                                                 HEADER('O', outbox_t), HEADER('R', rejected_t)};
#define RECORD_SIZE(r) (size_t)(record_headers[r].size_lo | record_headers[r].size_hi << 8)
/* The last bytes of the download and install records' strings (the lists
 * check their own): zero when the record is the library's (TERMINATED). */
#define LAST(type, field) (uint8_t)(offsetof(type, field) + sizeof(((type *)0)->field) - 1)
static const uint8_t record_string_ends[][4] = {
    {LAST(download_t, version), LAST(download_t, base), LAST(download_t, session)},
    {LAST(install_t, version), LAST(install_t, session)}, {0}, {0}};

/* Half the server's 5-minute limit: a Date further off than this means the
 * device clock, not latency, made a request stale. */
#define CLOCK_SLACK 150

/* fota_err_t's texts, in its order. */
static const char err_names[] =
    "ok\0bad argument\0buffer too small\0network failure\0server busy\0unauthorized\0forbidden\0"
    "conflict\0rejected\0session closed\0malformed answer\0bad signature\0"
    "untrusted key\0unsupported\0bad manifest\0wrong hardware\0downgrade\0"
    "rolled back before\0counter too low\0too large\0bad chunk HMAC\0decryption failed\0"
    "hash mismatch\0flash failure\0storage failure\0not found\0crypto failure\0on trial\0"
    "not on trial\0self-test failed\0power failure\0timed out"
#if FOTA_DELTA
    "\0delta patch failed"
#endif
    ;

static const char state_names[] = "idle\0checking\0downloading\0verifying\0applying\0completed\0deferred\0error\0"
                                  "rollback";

const char *fota_err_str(fota_err_t err)
{
    return (unsigned)err < FOTA_ERR__COUNT ? nth(err_names, err) : "unknown";
}

const char *fota_state_str(fota_state_t state)
{
    return (unsigned)state < FOTA_STATE__COUNT ? nth(state_names, state) : "unknown";
}

/* ---- Log lines and reasons ---- */

/* The texts of log lines and reasons, by number: passing a number costs a
 * call 2 bytes of code, passing a text's address 8 (RV32). Errors first,
 * then warnings, then information (a log line's level is where its text
 * is), then reasons (fail). */
#define MESSAGES(X)                                                 \
    X(MSG_SAVE, "%s: saving %s")                                    \
    X(MSG_CONFIG, "bad device id/hardware/chip/key/URL")      \
    X(MSG_KEY, "%s: release key: RSA or P-256 PEM (no Ed25519)")   \
    X(MSG_BOOT_INFO, "%s: boot_info")                               \
    X(MSG_BOOT_CONFIRM, "%s: boot_confirm")                         \
    X(MSG_SET_PENDING, "%s: slot_set_pending")                      \
    X(MSG_FAILED, "update failed: %s")                              \
    X(MSG_IGNORING, "%s: ignoring %s")                              \
    X(MSG_DELETE, "%s: deleting %s")                                \
    X(MSG_HTTP, "%s: HTTP %d: %.*s")                                \
    X(MSG_NO_ANSWER, "%s: no answer to %s")                         \
    X(MSG_CLOCK, "clock corrected by %+lld s")               \
    X(MSG_DROP_CONFIRM, "dropping stale confirm of %s")             \
    X(MSG_DROP_REPORT, "dropping report %s of %s: %s")              \
    X(MSG_ROLLED_BACK, "rolled back from %s (%s); running %s")      \
    X(MSG_REJECTED, "image %s rejected: %s")                        \
    X(MSG_REFETCH, "chunk %lu: bad HMAC, again")                    \
    X(MSG_KEPT_CHANGED, "kept image changed")                       \
    X(MSG_RETRY, "retrying in %lu ms")                              \
    X(MSG_REPORTED, "reported %s of %s")                            \
    X(MSG_CONFIRMED, "update %s confirmed")                         \
    X(MSG_DEFERRED, "update %s waits for its window")               \
    X(MSG_INSTALLED, "update %s installed; reboot")                 \
    X(MSG_VERIFIED_BEFORE, "update %s verified before")             \
    X(MSG_RESUMING, "resuming %s at chunk %lu of %lu")              \
    X(MSG_DOWNLOADING, "downloading %s: chunk %lu of %lu")          \
    X(MSG_NO_UPDATE, "no update: %.*s")                             \
    X(MSG_BAD_OFFER, "no session/version/manifest/signature") \
    X(MSG_TEXT_ARG, "%s")                                           \
    X(MSG_KEY_ID, "key_id %s, trusted %s")                          \
    X(MSG_ALG, "signature_alg %s, key %s")                          \
    X(MSG_DISAGREE, "answer %s, %lu chunks; signed %s, %lu")        \
    X(MSG_HARDWARE, "for %s, this is %s")                           \
    X(MSG_RUNNING, "running %s")                                    \
    X(MSG_COUNTER, "%lu < %lu")                                     \
    X(MSG_TOO_LARGE, "image %lu, slot %lu; chunk %lu, work %lu")    \
    X(MSG_WINDOW, "bad install window")                             \
    X(MSG_ANSWER_SIZE, "answer over %lu B: give a larger work buffer") \
    X(MSG_FRAME, "chunk %lu (%lu B), want %lu (%lu B)")             \
    X(MSG_PADDING, "bad padding (wrong firmware key?)")             \
    X(MSG_OVERSIZE, "over the signed %lu bytes")                    \
    X(MSG_WRITE, "slot_write at %lu")                               \
    X(MSG_CHECKPOINT, "checkpoint")                                 \
    X(MSG_EMPTY, "no chunk from %lu")                               \
    X(MSG_TIMEOUT, "over %lu s")                                    \
    X(MSG_MAC_TIMES, "chunk %lu, %u times")                         \
    X(MSG_SLOT_BEGIN, "slot_begin")                                 \
    X(MSG_NO_V2, "server has no v2 chunk MACs: update it")         \
    DELTA_MESSAGES(X)
#if FOTA_DELTA
/* Delta failures' reasons (after "delta patch failed: "), and the log line
 * of the check made again for the full image. */
#define DELTA_MESSAGES(X)                                                   \
    X(MSG_PATCH, "%s at patch byte %lu")                                   \
    X(MSG_PATCH_SIZE, "patch %lu B (signed %lu), image %lu B (signed %lu)") \
    X(MSG_PATCH_HASH, "the image made does not match the signed sha256 (another base?)") \
    X(MSG_ARTIFACT, "the check answer offers artifact \"%.*s\", the signed manifest is of kind \"%s\"") \
    X(MSG_BASE, "the patch is for %s (%lu B), this device runs %s (%lu B)") \
    X(MSG_NOT_ASKED, "a delta offered, not asked for")                     \
    X(MSG_OTHER_ARTIFACT, "chunks end at %lu of %lu signed: the session serves another artifact") \
    X(MSG_FULL_AGAIN, "checking again for the full image")
#else
#define DELTA_MESSAGES(X)
#endif
#define MSG_ID(id, text) id,
#define MSG_TEXT(id, text) text "\0"
/* Numbered from -32: RV32's short load-immediate takes -32..31. */
enum { MSG_BEFORE_FIRST = -33, MESSAGES(MSG_ID) MSG__END };
#define MSG_TEXT_OF(msg) nth(messages, (unsigned)((msg) + 32))
static const char messages[] = MESSAGES(MSG_TEXT);

static void logf_(fota_client_t *c, int msg, ...)
{
    char line[160];
    va_list ap;
    if (!c->port->log) return;
    va_start(ap, msg);
    vsnprintf(line, sizeof line, MSG_TEXT_OF(msg), ap);
    va_end(ap);
    c->port->log(c->port->ctx, msg < MSG_IGNORING ? FOTA_LOG_ERROR : msg < MSG_RETRY ? FOTA_LOG_WARN : FOTA_LOG_INFO,
                 line);
}

/* A failure line: the error's text, then what failed (msg's "%s: ..."),
 * and arg for a second "%s" in it. */
static void log_err(fota_client_t *c, int msg, fota_err_t err, const char *arg)
{
    logf_(c, msg, fota_err_str(err), arg);
}

/* A failure's reason, logged and reported to the server: the error's text,
 * then what the device found (msg with its arguments), in c->why; returns
 * err. */
static fota_err_t fail(fota_client_t *c, fota_err_t err, int msg, ...)
{
    va_list ap;
    int n = snprintf(c->why, sizeof c->why, "%s: ", fota_err_str(err));
    va_start(ap, msg);
    vsnprintf(c->why + n, sizeof c->why - (size_t)n, MSG_TEXT_OF(msg), ap);
    va_end(ap);
    return err;
}

/* A port's failure as the library reports it: a power failure stays one
 * (nothing more may be done), anything else becomes as. */
static fota_err_t port_err(fota_err_t err, fota_err_t as)
{
    return err && err != FOTA_ERR_POWER ? as : err;
}

static void progress_err(fota_client_t *c, fota_state_t state, fota_err_t err)
{
    c->progress.state = state;
    c->progress.err = err;
    if (c->cfg->on_progress) c->cfg->on_progress(c->cfg->user, &c->progress);
}
#define progress(c, state) progress_err(c, state, FOTA_OK)

/* Whether s is 1 to max letters, digits, '_' and '-' (and '.' with dots);
 * false for NULL. */
static bool plain_id(const char *s, size_t max, bool dots)
{
    size_t n = 0;
    for (; s && s[n]; n++) {
        char ch = s[n];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
              ch == '-' || (dots && ch == '.')))
            return false;
    }
    return n > 0 && n <= max;
}

/* Copies src (none for NULL) into the char array dst (cap bytes), cut
 * short if need be and zero-padded: records keep no stale bytes, and end in
 * a zero. */
static void copy_str(char *dst, size_t cap, const char *src)
{
    /* src's bytes up to its end or cap - 1 of them, then zeros */
    for (size_t i = 0; i < cap; i++) dst[i] = src && i + 1 < cap && *src ? *src++ : 0;
}

/* ---- Records ---- */

static fota_err_t record_save(fota_client_t *c, int r, void *rec)
{
    const char *key = nth(record_keys, (unsigned)r);
    memcpy(rec, &record_headers[r], sizeof(record_header_t));
    fota_err_t err = c->port->kv_set(c->port->ctx, key, rec, RECORD_SIZE(r));
    if (err) log_err(c, MSG_SAVE, err, key);
    return port_err(err, FOTA_ERR_STORAGE);
}

/* Loads a record; false when absent, unreadable or of another layout. The
 * caller checks the strings in it. */
static bool record_load(fota_client_t *c, int r, void *rec)
{
    const char *key = nth(record_keys, (unsigned)r);
    size_t n = 0;
    fota_err_t err = c->port->kv_get(c->port->ctx, key, rec, RECORD_SIZE(r), &n);
    if (err) {
        if (err != FOTA_ERR_NOT_FOUND) log_err(c, MSG_IGNORING, err, key);
        return false;
    }
    if (n != RECORD_SIZE(r) || memcmp(rec, &record_headers[r], sizeof(record_header_t))) return false;
    for (const uint8_t *e = record_string_ends[r]; *e; e++)
        if (((const char *)rec)[*e]) return false;
    return true;
}

/* Whether the char array s of a loaded record holds a string: the library
 * writes them with copy_str, so the last byte of each is zero. */
#define TERMINATED(s) (!(s)[sizeof(s) - 1])

static fota_err_t record_delete(fota_client_t *c, int r)
{
    const char *key = nth(record_keys, (unsigned)r);
    fota_err_t err = c->port->kv_delete(c->port->ctx, key);
    if (err == FOTA_ERR_NOT_FOUND) return FOTA_OK;
    if (err) log_err(c, MSG_DELETE, err, key);
    return err;
}



/* Loads the outbox into the end of the work buffer (empty when there is
 * none or it does not check out). */
static outbox_t *load_outbox(fota_client_t *c)
{
    outbox_t *box = (outbox_t *)(void *)(c->work + c->work_size - sizeof(outbox_t));
    bool ok = record_load(c, REC_OUTBOX, box) && box->count <= FOTA_OUTBOX_MAX;
    for (unsigned i = 0; ok && i < box->count; i++) {
        report_t *q = &box->r[i];
        ok = q->status < REPORT__COUNT && TERMINATED(q->session) && TERMINATED(q->version) && TERMINATED(q->reason);
        /* What a JSON string cannot hold as it is becomes ' (quotes,
         * backslashes) or ? (control characters, bytes past ASCII), so a
         * reason goes into the report as it is (send_report). */
        for (char *s = q->reason; ok && *s; s++)
            if (*s == '"' || *s == '\\') *s = '\'';
            else if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f) *s = '?';
    }
    if (!ok) box->count = 0;
    return box;
}

static fota_err_t save_outbox(fota_client_t *c, outbox_t *box)
{
    return box->count ? record_save(c, REC_OUTBOX, box) : record_delete(c, REC_OUTBOX);
}

/* Adds reports of statuses first..last to the outbox, each once; a full
 * outbox drops its oldest. reason: NULL for none. */
static fota_err_t queue_reports(fota_client_t *c, int first, int last, const char *session, const char *version,
                                const char *reason)
{
    outbox_t *box = load_outbox(c);
    for (int status = first; status <= last; status++) {
        unsigned i = 0;
        while (i < box->count && !(box->r[i].status == status && !strcmp(box->r[i].session, session) &&
                                   !strcmp(box->r[i].version, version)))
            i++;
        if (i < box->count) continue; /* queued already */
        if (box->count == FOTA_OUTBOX_MAX) {
            memmove(&box->r[0], &box->r[1], sizeof box->r[0] * (FOTA_OUTBOX_MAX - 1));
            box->count--;
        }
        report_t *q = &box->r[box->count++];
        q->status = (uint8_t)status;
        copy_str(q->session, sizeof q->session, session);
        copy_str(q->version, sizeof q->version, version);
        copy_str(q->reason, sizeof q->reason, reason);
    }
    return save_outbox(c, box);
}
#define queue_report(c, status, session, version, reason) queue_reports(c, status, status, session, version, reason)
/* ---- HTTP: signed requests, error answers, retries ---- */

static int64_t server_now(fota_client_t *c) { return c->port->now(c->port->ctx) + c->clock_offset; }

/* Reads up to n bytes of the body into buf; *got short of n: the body ended. */
static fota_err_t read_full(fota_client_t *c, uint8_t *buf, size_t n, size_t *got)
{
    *got = 0;
    while (*got < n) {
        int32_t r = c->port->http_read(c->port->ctx, buf + *got, n - *got);
        if (r < 0) return FOTA_ERR_NETWORK;
        if (r == 0) break;
        *got += (size_t)r;
    }
    return FOTA_OK;
}

/* Reads the whole body into buf; FOTA_ERR_BUFFER when it does not fit (a
 * byte more, probed when buf is full). */
static fota_err_t read_body(fota_client_t *c, uint8_t *buf, size_t cap, size_t *len)
{
    size_t n = 0;
    for (;;) {
        uint8_t probe;
        int32_t r = c->port->http_read(c->port->ctx, n < cap ? buf + n : &probe, n < cap ? cap - n : 1);
        if (r < 0) return FOTA_ERR_NETWORK;
        if (r == 0) break;
        if (n == cap) return FOTA_ERR_BUFFER;
        n += (size_t)r;
    }
    *len = n;
    return FOTA_OK;
}

/* Walks the JSON object js, keeping the values of the members named in
 * names in v, by index (FOTA_J_NONE when absent). */
typedef struct {
    const char *names;
    fota_json_t *v;
} pick_t;

static bool pick_member(void *user, const char *key, size_t n, const fota_json_t *value)
{
    const pick_t *p = user;
    int i = name_index(p->names, key, n);
    if (i >= 0) p->v[i] = *value;
    return true; /* newer servers may say more */
}

static bool pick(const void *js, size_t len, const char *names, fota_json_t *v, size_t count)
{
    pick_t p = {names, v};
    /* Absent: no type, and no text (at a valid address, for "%.*s"). */
    for (size_t i = 0; i < count; i++) v[i] = (fota_json_t){FOTA_J_NONE, js, 0};
    return fota_json_object(js, len, pick_member, &p);
}

/* The server's error codes (docs/PROTOCOL.md, "Errors") and what each means here. */
static const char error_codes[] =
    "too_many\0unavailable\0internal\0unauthorized\0forbidden\0conflict\0invalid\0not_found\0too_large\0session_closed";
static const uint8_t error_code_errs[] = {
    FOTA_ERR_SERVER_BUSY, FOTA_ERR_SERVER_BUSY, FOTA_ERR_SERVER_BUSY, FOTA_ERR_UNAUTHORIZED, FOTA_ERR_FORBIDDEN,
    FOTA_ERR_CONFLICT,    FOTA_ERR_REJECTED,    FOTA_ERR_REJECTED,    FOTA_ERR_REJECTED,     FOTA_ERR_SESSION_CLOSED};

/* Sorts a refusal by its fota code, else by its status (docs/PROTOCOL.md,
 * "Errors"), and logs the server's word on it. Ends the exchange. */
static fota_err_t refusal(fota_client_t *c, const fota_http_response_t *resp, uint8_t *buf,
                          size_t cap)
{
    size_t n = 0;
    fota_json_t e[2]; /* code, error; none from a body cut short */
    bool whole = read_body(c, buf, cap, &n) == FOTA_OK;
    c->port->http_end(c->port->ctx, whole);
    pick(buf, whole ? n : 0, "code\0error\0", e, 2);
    int s = resp->status;
    fota_err_t err = s >= 500 || s == 408 || s == 429 ? FOTA_ERR_SERVER_BUSY
                     : s == 401                        ? FOTA_ERR_UNAUTHORIZED
                     : s == 403                        ? FOTA_ERR_FORBIDDEN
                     : s == 410                        ? FOTA_ERR_SESSION_CLOSED
                     : s == 400 || s == 404 || s == 413 ? FOTA_ERR_REJECTED
                                                        : FOTA_ERR_CONFLICT;
    int i = e[0].type == FOTA_J_STRING ? name_index(error_codes, e[0].p, e[0].n) : -1;
    if (i >= 0) err = (fota_err_t)error_code_errs[i];
    logf_(c, MSG_HTTP, URI(c), s, (int)e[1].n, e[1].p); /* a string's text, or what else it is */
    c->retry_after = resp->retry_after;
    return err;
}

/* Sends one signed request, its body (len bytes) at the start of the data
 * area. On FOTA_OK the answer was 2xx and its body is to be read (then
 * http_end). A 401 whose Date shows the device clock off corrects the clock
 * and signs once more (docs/PROTOCOL.md, "The device clock"). */
static fota_err_t request(fota_client_t *c, size_t len, fota_http_response_t *resp)
{
    const uint8_t *body = len ? DATA(c) : NULL;
    /* The method and the header lines' end: a POST's (with a body), or a
     * GET's, further on in the same texts. */
    static const char texts[] = "POST\0GET\0\r\nContent-Type: application/json\r\n";
    const char *method = texts + (len ? 0 : 5), *tail = texts + (len ? 9 : sizeof texts - 3);
    for (int attempt = 0;; attempt++) {
        uint8_t raw[32]; /* the nonce's random bytes, then the signature */
        char nonce[33], ts[21];
        int64_t now = server_now(c);
        c->push_last = (uint32_t)now; /* push checks keep their distance from any request */
        snprintf(ts, sizeof ts, "%lld", (long long)now);
        if (c->port->random(c->port->ctx, raw, 16)) return FOTA_ERR_CRYPTO;
        fota_hex(nonce, raw, 16);
        if (fota_request_mac(&c->sha2, c->psk, method, URI(c), c->cfg->device_id, ts, nonce, body, len, raw))
            return FOTA_ERR_CRYPTO;
        /* The signature's hex goes straight into the header lines, then the rest. */
        char *h = HDR(c);
        unsigned n = (unsigned)snprintf(h, HDR_CAP, "X-Fota-Device: %s\r\nX-Fota-Timestamp: %s\r\nX-Fota-Nonce: %s\r\nX-Fota-Signature: ",
                                        c->cfg->device_id, ts, nonce);
        if (n > HDR_CAP - 100) return FOTA_ERR_BUFFER; /* the signature, the Content-Type line, the NUL */
        fota_hex(h + n, raw, 32);
        strcpy(h + n + 64, tail);
        memset(resp, 0, sizeof *resp);
        fota_err_t err = c->port->http_begin(c->port->ctx, method, URI(c), HDR(c), body, len, resp);
        if (err) {
            log_err(c, MSG_NO_ANSWER, err, URI(c));
            return port_err(err, FOTA_ERR_NETWORK);
        }
        if (resp->status >= 200 && resp->status < 300) return FOTA_OK;
        int64_t skew = resp->date ? resp->date - now : 0;
        if (resp->status == 401 && attempt == 0 && (uint64_t)(skew + CLOCK_SLACK) > 2 * CLOCK_SLACK) {
            c->port->http_end(c->port->ctx, false);
            c->clock_offset += skew;
            logf_(c, MSG_CLOCK, (long long)skew);
            continue;
        }
        /* The error body goes after the request body, which a retry sends again. */
        return refusal(c, resp, DATA(c) + len, DATA_CAP(c) - len);
    }
}

static bool transient(fota_err_t err) { return err == FOTA_ERR_NETWORK || err == FOTA_ERR_SERVER_BUSY; }

/* Waits before retry attempt+1 of a transient failure; false when the
 * attempts are spent or the server asks for longer than a retry waits. */
static bool backoff(fota_client_t *c, int attempt, fota_err_t err)
{
    const fota_config_t *cfg = c->cfg;
    uint32_t attempts = cfg->retry_attempts ? cfg->retry_attempts : 5;
    uint32_t base = cfg->retry_base_ms ? cfg->retry_base_ms : 1000, cap = cfg->retry_max_ms ? cfg->retry_max_ms : 60000;
    if (!transient(err) || (uint32_t)attempt + 1 >= attempts) return false;
    uint32_t delay = attempt < 16 ? base << attempt : cap;
    if (delay > cap || delay < base) delay = cap;
    uint16_t r = 0; /* random bits in whatever byte order */
    c->port->random(c->port->ctx, (uint8_t *)&r, sizeof r);
    delay = delay / 2 + (uint32_t)((uint64_t)(delay / 2) * r >> 16);
    if (err == FOTA_ERR_SERVER_BUSY && c->retry_after) {
        if (c->retry_after > cap / 1000) return false; /* the next timed check tries again */
        if (c->retry_after * 1000 > delay) delay = c->retry_after * 1000;
    }
    c->retry_after = 0;
    logf_(c, MSG_RETRY, (unsigned long)delay);
    c->port->sleep_ms(c->port->ctx, delay);
    return true;
}

/* POSTs the n-byte body at the start of the data area, retrying transient
 * failures, and reads the answer after it (*len bytes). */
/* Posts the n-byte body in the data area and reads the answer after it,
 * into at most cap bytes. */
static fota_err_t post(fota_client_t *c, size_t n, size_t cap, size_t *len)
{
    fota_http_response_t resp;
    fota_err_t err;
    for (int attempt = 0;; attempt++) {
        err = request(c, n, &resp);
        if (err == FOTA_OK) {
            err = read_body(c, DATA(c) + n, cap, len);
            c->port->http_end(c->port->ctx, err == FOTA_OK);
        }
        if (!backoff(c, attempt, err)) return err;
    }
}


/* Sends one report; a JSON body with the reason escaped. */
static fota_err_t send_report(fota_client_t *c, const report_t *q)
{
    char *body = (char *)DATA(c);
    size_t cap = DATA_CAP(c), n, len;
    if ((unsigned)snprintf(URI(c), URI_CAP, "%s/v1/device/sessions/%s/report", c->prefix, q->session) >= URI_CAP)
        return FOTA_ERR_BUFFER;
    /* The reason, when there is one; copy_str made it fit a JSON string. */
    /* The version names the release the report is about, as the signed
     * manifest said: the server refuses a report about another release
     * than the session's (an altered check answer). */
    /* load_outbox made the reason fit a JSON string; "" is none. */
#if FOTA_DELTA
    /* A delta's failure says so: the server then counts nothing against
     * the release and offers the full image next. */
    n = (size_t)snprintf(body, cap, "{\"status\":\"%s\",\"version\":\"%s\",\"reason\":\"%s\"%s}",
                         nth(report_names, q->status), q->version, q->reason,
                         q->status == REPORT_DELTA_FAILED ? ",\"artifact\":\"delta\"" : "");
#else
    n = (size_t)snprintf(body, cap, "{\"status\":\"%s\",\"version\":\"%s\",\"reason\":\"%s\"}",
                         nth(report_names, q->status), q->version, q->reason);
#endif
    /* The answer is small; its content does not matter, only that it came. */
    fota_err_t err = post(c, n, DATA_CAP(c) - n, &len);
    return err == FOTA_ERR_BUFFER ? FOTA_OK : err;
}

fota_err_t fota_flush(fota_client_t *c)
{
    outbox_t *box = load_outbox(c);
    fota_err_t first = FOTA_OK, err;
    unsigned kept = 0;
    bool down = false;
    if (box->count == 0) return FOTA_OK;
    for (unsigned i = 0; i < box->count; i++) {
        report_t *q = &box->r[i];
        const char *status = nth(report_names, q->status);
        bool confirm = q->status == REPORT_CONFIRMED;
        if (confirm && strcmp(q->version, c->boot.running_version) != 0) {
            /* Queued before a confirm that never completed: no longer true. */
            logf_(c, MSG_DROP_CONFIRM, q->version);
            continue;
        }
        /* Sent unless the server proved unreachable (the rest would fail the
         * same way, and out of order), the image is not yet confirmed on this
         * boot, or there is no session to send it on yet. */
        if (!down && !(confirm && c->boot.trial) && q->session[0]) {
            err = send_report(c, q);
            if (err == FOTA_ERR_POWER) return err;
            if (err == FOTA_OK) {
                logf_(c, MSG_REPORTED, status, q->version);
                continue;
            }
            if (err == FOTA_ERR_REJECTED || err == FOTA_ERR_SESSION_CLOSED || err == FOTA_ERR_BUFFER) {
                logf_(c, MSG_DROP_REPORT, status, q->version, fota_err_str(err));
                continue;
            }
            if (!first) first = err;
            down = transient(err);
        }
        if (kept != i) box->r[kept] = *q;
        kept++;
    }
    box->count = (uint8_t)kept;
    err = save_outbox(c, box);
    return err ? err : first;
}

/* Sends what is queued after a step that queued a report; only a power
 * failure matters to the caller, the rest waits for the next flush (the
 * failed requests logged why). */
static fota_err_t flush_queued(fota_client_t *c)
{
    fota_err_t err = fota_flush(c);
    return err == FOTA_ERR_POWER ? err : FOTA_OK;
}

/* ---- Init, boot, confirm ---- */

fota_err_t fota_init(fota_client_t *c, const fota_config_t *cfg, const fota_port_t *port, uint8_t *work,
                     size_t work_size)
{
    if (!c || !cfg || !port || !work) return FOTA_ERR_ARGUMENT;
    memset(c, 0, sizeof *c);
    c->cfg = cfg;
    c->port = port;
    c->work = work;
    c->work_size = work_size;
    mbedtls_pk_init(&c->pk);
    mbedtls_aes_init(&c->aes);
    mbedtls_sha256_init(&c->sha);
    mbedtls_sha256_init(&c->sha2);
    if (work_size < FOTA_WORK_MIN) return FOTA_ERR_ARGUMENT;
    if (!plain_id(cfg->device_id, 64, true) || !plain_id(cfg->hardware, 32, true) ||
        (cfg->chip && !plain_id(cfg->chip, 32, true)) || !cfg->psk_hex ||
        !fota_unhex(c->psk, 32, cfg->psk_hex, strlen(cfg->psk_hex)) || !cfg->firmware_key || !cfg->public_key_pem ||
        !cfg->server_url) {
        logf_(c, MSG_CONFIG);
        return FOTA_ERR_ARGUMENT;
    }
    /* The path prefix of the server URL, without trailing slashes, goes in
     * front of every request URI. */
    const char *u = strstr(cfg->server_url, "://");
    if (!u) return FOTA_ERR_ARGUMENT;
    const char *path = strchr(u + 3, '/');
    size_t pn = path ? strlen(path) : 0;
    if (pn >= sizeof c->prefix) return FOTA_ERR_ARGUMENT;
    while (pn > 0 && path[pn - 1] == '/') pn--;
    if (pn) memcpy(c->prefix, path, pn); /* c is zeroed: the NUL is there */

    fota_err_t err = fota_key_load(&c->pk, cfg->public_key_pem, strlen(cfg->public_key_pem) + 1, DATA(c),
                                   DATA_CAP(c), &c->key_alg, c->key_id);
    if (err) {
        /* mbedtls cannot check Ed25519: such a key is FOTA_ERR_UNSUPPORTED. */
        log_err(c, MSG_KEY, err, NULL);
        return err;
    }
    if (mbedtls_aes_setkey_dec(&c->aes, cfg->firmware_key, 256)) return FOTA_ERR_CRYPTO;
    err = port->boot_info(port->ctx, &c->boot);
    if (err) {
        log_err(c, MSG_BOOT_INFO, err, NULL);
        return err;
    }
    c->boot.running_version[FOTA_VERSION_MAX] = 0;
    c->boot.rolled_back_version[FOTA_VERSION_MAX] = 0;
    c->boot.rollback_reason[FOTA_REASON_MAX] = 0;
    c->progress.version = "";
    c->progress.state = c->boot.trial ? FOTA_STATE_APPLYING : FOTA_STATE_IDLE;
    return FOTA_OK;
}

void fota_deinit(fota_client_t *c)
{
    mbedtls_pk_free(&c->pk);
    mbedtls_aes_free(&c->aes);
    mbedtls_sha256_free(&c->sha);
    mbedtls_sha256_free(&c->sha2);
}

bool fota_on_trial(const fota_client_t *c) { return c->boot.trial; }

const fota_progress_t *fota_progress(const fota_client_t *c) { return &c->progress; }

/* Loads the list into r; whether version is in it. */
static bool rejected(fota_client_t *c, rejected_t *r, const char *version)
{
    bool ok = record_load(c, REC_REJECTED, r) && r->count <= FOTA_REJECTED_MAX;
    for (unsigned i = 0; ok && i < r->count; i++) ok = TERMINATED(r->v[i]);
    if (!ok) r->count = 0;
    for (unsigned i = 0; i < r->count; i++)
        if (!strcmp(r->v[i], version)) return true;
    return false;
}

fota_err_t fota_startup(fota_client_t *c)
{
    fota_err_t err;
    char *rb = c->boot.rolled_back_version;
    if (rb[0]) {
        install_t in;
        rejected_t r;
        c->progress.version = rb;
        progress(c, FOTA_STATE_ROLLBACK);
        bool ours = record_load(c, REC_INSTALL, &in) && !strcmp(in.version, rb);
        /* Without the install record there is no session to name; the
         * device's next check-in tells the server the version it runs. */
        if (ours && (err = queue_report(c, REPORT_ROLLED_BACK, in.session, rb, c->boot.rollback_reason))) return err;
        /* Remembered, so the device refuses it if offered again. */
        if (!rejected(c, &r, rb)) {
            if (r.count == FOTA_REJECTED_MAX) {
                memmove(r.v[0], r.v[1], sizeof r.v[0] * (FOTA_REJECTED_MAX - 1));
                r.count--;
            }
            copy_str(r.v[r.count++], sizeof r.v[0], rb);
            if ((err = record_save(c, REC_REJECTED, &r))) return err;
        }
        if ((err = c->port->boot_ack_rollback(c->port->ctx))) return err;
        if (ours) record_delete(c, REC_INSTALL);
        logf_(c, MSG_ROLLED_BACK, rb, c->boot.rollback_reason, c->boot.running_version);
        rb[0] = 0;
    }
    {
        /* A download made under another image: its slot may be the one running. */
        download_t d;
        if (record_load(c, REC_DOWNLOAD, &d) && strcmp(d.base, c->boot.running_version) != 0) record_delete(c, REC_DOWNLOAD);
    }
    if (c->boot.trial && c->cfg->self_test) {
        fota_err_t result = c->cfg->self_test(c->cfg->user);
        if (result != FOTA_OK) {
            /* The hook's own error says more than "self-test failed" twice. */
            if (result == FOTA_ERR_SELF_TEST)
                copy_str(c->why, sizeof c->why, fota_err_str(result));
            else
                fail(c, FOTA_ERR_SELF_TEST, MSG_TEXT_ARG, fota_err_str(result));
            err = fota_reject(c, c->why);
            return err ? err : FOTA_ERR_SELF_TEST;
        }
        if ((err = fota_confirm(c))) return err;
    }
    if ((err = flush_queued(c))) return err;
    if (!c->boot.trial) progress(c, FOTA_STATE_IDLE);
    return FOTA_OK;
}

fota_err_t fota_confirm(fota_client_t *c)
{
    install_t in;
    fota_err_t err;
    if (!c->boot.trial) return FOTA_ERR_NOT_ON_TRIAL;
    /* Queued before confirming: a power cut in between repeats the report, never loses it. */
    if (record_load(c, REC_INSTALL, &in) && !strcmp(in.version, c->boot.running_version) &&
        (err = queue_report(c, REPORT_CONFIRMED, in.session, in.version, NULL)))
        return err;
    if ((err = c->port->boot_confirm(c->port->ctx))) {
        log_err(c, MSG_BOOT_CONFIRM, err, NULL);
        return port_err(err, FOTA_ERR_FLASH);
    }
    c->boot.trial = false;
    record_delete(c, REC_INSTALL);
    logf_(c, MSG_CONFIRMED, c->boot.running_version);
    c->progress.version = c->boot.running_version;
    progress(c, FOTA_STATE_IDLE);
    return flush_queued(c);
}

fota_err_t fota_reject(fota_client_t *c, const char *reason)
{
    if (!c->boot.trial) return FOTA_ERR_NOT_ON_TRIAL;
    if (!reason) reason = "rejected";
    fota_err_t err = c->port->boot_reject(c->port->ctx, reason);
    if (err) return port_err(err, FOTA_ERR_FLASH);
    logf_(c, MSG_REJECTED, c->boot.running_version, reason);
    c->progress.version = c->boot.running_version;
    progress_err(c, FOTA_STATE_ROLLBACK, FOTA_ERR_SELF_TEST);
    return FOTA_OK;
}

/* ---- The manifest ---- */

/* judge copies the manifest's numbers, SHA-256 and IV into the offer at
 * once: the two layouts must agree (a negative array size if not). */
#define SAME_AT(f) (offsetof(fota_manifest_t, f) == offsetof(fota_offer_t, f))
typedef char offer_layout_check[SAME_AT(security_counter) && SAME_AT(plaintext_size) && SAME_AT(ciphertext_size) &&
                                        SAME_AT(chunk_size) && SAME_AT(plaintext_sha256) && SAME_AT(iv) &&
                                        offsetof(fota_manifest_t, format) == offsetof(fota_offer_t, chunks) &&
                                        offsetof(fota_offer_t, iv) == offsetof(fota_offer_t, plaintext_sha256) + 32 &&
                                        offsetof(download_t, cbc) == offsetof(download_t, sha256) + 32
                                    ? 1
                                    : -1];

typedef struct {
    fota_manifest_t *m;
    uint32_t seen;
} manifest_walk_t;

/* The fields, numbers first, then hex strings, each as docs/FORMAT.md has it. */
/* The fields: numbers, hex strings and strings kept (each where
 * manifest_off says, with the bound or length manifest_len says), then the
 * rest; each as docs/FORMAT.md has it. */
enum { M_COUNTER, M_PSIZE, M_CSIZE, M_CHUNK, M_FORMAT, M_PSHA, M_CSHA, M_IV, M_HARDWARE, M_VERSION, M_KEY, M_ALG,
       M_PRODUCT, M_CIPHER, M_CREATED, M_NOTES,
#if FOTA_DELTA
       M_KIND, M_BASE_VERSION, M_BASE_SIZE, M_BASE_SHA, M_COMPRESSION, M_PATCH_SIZE,
#endif
       M__COUNT };
static const char manifest_fields[] =
    "security_counter\0plaintext_size\0ciphertext_size\0chunk_size\0format\0plaintext_sha256\0ciphertext_sha256\0"
    "iv\0hardware\0version\0key_id\0signature_alg\0product\0cipher\0created\0notes\0"
#if FOTA_DELTA
    "kind\0base_version\0base_size\0base_sha256\0compression\0patch_size\0"
#endif
    ;
/* Every field before notes; the delta fields come all together or not at all. */
#define M_REQUIRED ((1u << M_NOTES) - 1)
#define M_OFF(field) offsetof(fota_manifest_t, field)
static const uint8_t manifest_off[] = {
    M_OFF(security_counter), M_OFF(plaintext_size), M_OFF(ciphertext_size), M_OFF(chunk_size), M_OFF(format),
    M_OFF(plaintext_sha256), M_OFF(ciphertext_sha256), M_OFF(iv), M_OFF(hardware), M_OFF(version), M_OFF(key_id),
    M_OFF(alg)};
static const uint8_t manifest_len[] = {0, 0, 0, 0, 0, 32, 32, 16, 33, FOTA_VERSION_MAX + 1, 17, 16};
static const uint32_t manifest_min[] = {0, 1, 0, 256, 1};
static const uint32_t manifest_max[] = {UINT32_MAX, 256u << 20, (256u << 20) + 16, 65536, 1};

static bool manifest_member(void *user, const char *key, size_t n, const fota_json_t *v)
{
    manifest_walk_t *w = user;
    fota_manifest_t *m = w->m;
    int64_t created;
    bool str = v->type == FOTA_J_STRING;
    int f = name_index(manifest_fields, key, n);
    if (f < 0) return false; /* readers reject unknown fields */
    w->seen |= 1u << f;
    char *dst = (char *)m + manifest_off[f <= M_ALG ? f : 0];
    if (f <= M_FORMAT) return fota_json_uint(v, manifest_min[f], manifest_max[f], (uint32_t *)(void *)dst) && m->chunk_size % 16 == 0;
    if (f <= M_IV) return str && fota_unhex((uint8_t *)dst, manifest_len[f], v->p, v->n);
    if (f <= M_ALG)
        return fota_json_str(v, dst, manifest_len[f]) &&
               (f == M_HARDWARE ? plain_id(dst, 32, true) : f == M_VERSION ? fota_semver_valid(dst) : f != M_KEY || strlen(dst) == 16);
    switch (f) {
    case M_PRODUCT: return str && v->n >= 1 && v->n <= 64;
    case M_CIPHER: return str && v->n == 11 && !memcmp(v->p, "aes-256-cbc", 11);
    case M_CREATED: return str && fota_parse_rfc3339(v->p, v->n, &created);
#if FOTA_DELTA
    case M_KIND: return str && v->n == 5 && !memcmp(v->p, "delta", 5);
    case M_BASE_VERSION: return fota_json_str(v, m->base_version, sizeof m->base_version) && fota_semver_valid(m->base_version);
    case M_BASE_SIZE: return fota_json_uint(v, 1, 256u << 20, &m->base_size);
    case M_BASE_SHA: return str && fota_unhex(m->base_sha256, 32, v->p, v->n);
    case M_COMPRESSION: return str && (m->compression = (uint8_t)(name_index("none\0crle\0heatshrink\0", v->p, v->n) + 1)) != 0;
    case M_PATCH_SIZE: return fota_json_uint(v, 1, 512u << 20, &m->patch_size);
#endif
    default: return str && v->n <= 4096 * 6; /* notes: escapes may be longer than the text */
    }
}

fota_err_t fota_manifest_parse(const char *js, size_t len, fota_manifest_t *m)
{
    memset(m, 0, sizeof *m);
    manifest_walk_t w = {m, 0};
#if FOTA_DELTA
    /* A delta manifest has all six delta fields, and its ciphertext is the patch's. */
    uint32_t delta = 0;
    if (!fota_json_object(js, len, manifest_member, &w) || (w.seen & M_REQUIRED) != M_REQUIRED ||
        ((delta = w.seen >> M_KIND) != 0 && delta != (1u << (M__COUNT - M_KIND)) - 1) ||
        m->ciphertext_size != ((delta ? m->patch_size : m->plaintext_size) / 16 + 1) * 16)
        return FOTA_ERR_MANIFEST;
    m->delta = delta != 0;
#else
    if (!fota_json_object(js, len, manifest_member, &w) || (w.seen & M_REQUIRED) != M_REQUIRED ||
        m->ciphertext_size != (m->plaintext_size / 16 + 1) * 16)
        return FOTA_ERR_MANIFEST;
#endif
    return FOTA_OK;
}

int fota_unpad(const uint8_t block[16])
{
    uint8_t p = block[15], bad = (uint8_t)(p == 0 || p > 16);
    for (int i = 0; i < 16; i++) bad |= (uint8_t)((i >= 16 - p) & (block[i] != p));
    return bad ? -1 : 16 - p;
}

/* ---- The check answer ---- */

/* The members of the check answer the client reads; the numbers last. */
enum { A_UPDATE, A_SESSION, A_VERSION, A_MANIFEST, A_SIGNATURE, A_MESSAGE, A_MACS,
#if FOTA_DELTA
       A_ARTIFACT,
#endif
       A_AFTER, A_UNTIL, A_CHUNK_SIZE, A_CHUNKS, A_CSIZE, A__COUNT };
static const char answer_fields[] = "update\0session_id\0version\0manifest\0signature\0message\0chunk_macs\0"
#if FOTA_DELTA
                                    "artifact\0"
#endif
                                    "install_after\0install_until\0chunk_size\0chunks\0ciphertext_size\0";

typedef struct {
    fota_json_t v[A__COUNT];
    uint32_t num[3]; /* chunk_size, chunks, ciphertext_size; 0 when absent */
} answer_t;

/* Reads the check answer (len bytes at js); false when it is malformed. */
static bool parse_answer(const uint8_t *js, size_t len, answer_t *a)
{
    memset(a->num, 0, sizeof a->num);
    if (!pick(js, len, answer_fields, a->v, A__COUNT)) return false;
    for (int i = A_CHUNK_SIZE; i < A__COUNT; i++)
        if (a->v[i].type && !fota_json_uint(&a->v[i], 0, i == A_CHUNK_SIZE ? 65536 : UINT32_MAX, &a->num[i - A_CHUNK_SIZE]))
            return false;
    return true;
}


/* Judges the offer in a (the check answer in the data area, decoded in
 * place): signature first, then the manifest, then the device's rules.
 * Fills c->offer, and res->version. */
static fota_err_t judge(fota_client_t *c, answer_t *a, fota_result_t *res)
{
    fota_offer_t *o = &c->offer;
    fota_manifest_t m;
    fota_json_t *v = a->v;
    uint8_t *manifest = (uint8_t *)(uintptr_t)v[A_MANIFEST].p, *sig = (uint8_t *)(uintptr_t)v[A_SIGNATURE].p;
    int32_t mlen = 0, slen = 0;
    bool ok = fota_json_str(&v[A_VERSION], o->version, sizeof o->version);
    copy_str(res->version, sizeof res->version, o->version);
    c->progress.version = o->version;
    /* Without a session there is nothing to report on. */
    if (!ok || !fota_json_str(&v[A_SESSION], o->session, sizeof o->session) ||
        !plain_id(o->session, FOTA_SESSION_MAX, false) || v[A_MANIFEST].type != FOTA_J_STRING ||
        v[A_SIGNATURE].type != FOTA_J_STRING) {
        o->session[0] = 0;
    } else {
        mlen = fota_base64_decode(manifest, v[A_MANIFEST].p, v[A_MANIFEST].n);
        slen = fota_base64_decode(sig, v[A_SIGNATURE].p, v[A_SIGNATURE].n);
    }
    if (mlen <= 0 || slen < 0) {
        return fail(c, FOTA_ERR_PROTOCOL, MSG_BAD_OFFER);
    }
    /* The manifest's key_id, read before its signature is checked, only to
     * say "untrusted key" rather than "bad signature" (as the Go agent does). */
    char key_id[17], ours[17];
    fota_json_t k;
    fota_hex(ours, c->key_id, 8);
    pick(manifest, (size_t)mlen, "key_id\0", &k, 1);
    if (fota_json_str(&k, key_id, sizeof key_id) && key_id[0] && strcmp(key_id, ours) != 0) {
        return fail(c, FOTA_ERR_UNTRUSTED_KEY, MSG_KEY_ID, key_id, ours);
    }
    fota_err_t err = fota_verify(&c->pk, &c->sha2, manifest, (size_t)mlen, sig, (size_t)slen);
    if (err) return err;
    if (fota_manifest_parse((const char *)manifest, (size_t)mlen, &m)) return FOTA_ERR_MANIFEST;
    const char *alg = nth("\0rsa-2048\0ecdsa-p256", (unsigned)c->key_alg);
    if (strcmp(m.alg, alg) != 0) {
        return fail(c, strcmp(m.alg, "ed25519") ? FOTA_ERR_MANIFEST : FOTA_ERR_UNSUPPORTED, MSG_ALG, m.alg, alg);
    }
    uint32_t chunks = (m.ciphertext_size + m.chunk_size - 1) / m.chunk_size;
    if (strcmp(m.version, o->version) || a->num[0] != m.chunk_size || a->num[1] != chunks ||
        a->num[2] != m.ciphertext_size) {
        return fail(c, FOTA_ERR_MANIFEST, MSG_DISAGREE, o->version, (unsigned long)a->num[1], m.version,
                    (unsigned long)chunks);
    }
    if (strcmp(m.hardware, c->cfg->hardware) != 0) {
        return fail(c, FOTA_ERR_HARDWARE, MSG_HARDWARE, m.hardware, c->cfg->hardware);
    }
    if (fota_semver_cmp(m.version, c->boot.running_version) <= 0) {
        return fail(c, FOTA_ERR_DOWNGRADE, MSG_RUNNING, c->boot.running_version);
    }
    if (m.security_counter < c->boot.security_counter) {
        return fail(c, FOTA_ERR_COUNTER, MSG_COUNTER, (unsigned long)m.security_counter,
                    (unsigned long)c->boot.security_counter);
    }
    if (m.plaintext_size > c->boot.slot_size || m.chunk_size > DATA_CAP(c) - sizeof(outbox_t)) {
        return fail(c, FOTA_ERR_TOO_LARGE, MSG_TOO_LARGE,
                    (unsigned long)m.plaintext_size, (unsigned long)c->boot.slot_size, (unsigned long)m.chunk_size,
                    (unsigned long)c->work_size);
    }
    rejected_t r;
    if (rejected(c, &r, m.version)) return FOTA_ERR_ROLLED_BACK;
    memcpy(o, &m, offsetof(fota_offer_t, iv) + sizeof o->iv); /* the numbers, the SHA-256 and the IV */
    o->chunks = chunks;
    /* The client checks v2 chunk MACs only: every server since before the
     * C client offers them; one from before v2 lists none. */
    bool v2 = false;
    for (size_t i = 0; v[A_MACS].type == FOTA_J_ARRAY && i + 4 <= v[A_MACS].n; i++)
        if (!memcmp(v[A_MACS].p + i, "\"v2\"", 4)) v2 = true;
    if (!v2) return fail(c, FOTA_ERR_UNSUPPORTED, MSG_NO_V2);
    o->install_after = o->install_until = 0;
    /* Absent is no bound; anything but a time string is malformed, not absent. */
    if ((v[A_AFTER].type && !fota_parse_rfc3339(v[A_AFTER].p, v[A_AFTER].type == FOTA_J_STRING ? v[A_AFTER].n : 0, &o->install_after)) ||
        (v[A_UNTIL].type && !fota_parse_rfc3339(v[A_UNTIL].p, v[A_UNTIL].type == FOTA_J_STRING ? v[A_UNTIL].n : 0, &o->install_until))) {
        return fail(c, FOTA_ERR_PROTOCOL, MSG_WINDOW);
    }
#if FOTA_DELTA
    /* What the offer is, is the signed manifest's word: a full manifest is
     * installed as the image whatever the answer's artifact says (if the
     * session serves something else, its chunks end before the signed
     * ciphertext does: a delta failure), and a delta manifest only where
     * the answer offers a delta. A delta failure is reported as such: the
     * server's next offer is then the full image. */
    fota_json_t *art = &v[A_ARTIFACT];
    bool as_delta = art->type == FOTA_J_STRING && art->n == 5 && !memcmp(art->p, "delta", 5);
    o->patch_size = m.delta ? m.patch_size : 0;
    if (m.delta && !as_delta) return fail(c, FOTA_ERR_DELTA, MSG_ARTIFACT, (int)art->n, art->p, "delta");
    if (m.delta && !c->boot.running_known) return fail(c, FOTA_ERR_MANIFEST, MSG_NOT_ASKED);
    if (m.delta && (m.base_size != c->boot.running_size || !fota_equal(m.base_sha256, c->boot.running_sha256, 32)))
        return fail(c, FOTA_ERR_DELTA, MSG_BASE, m.base_version, (unsigned long)m.base_size, c->boot.running_version,
                    (unsigned long)c->boot.running_size);
#endif
    return FOTA_OK;
}

/* Sends the check-in and reads the answer into the data area, after the
 * request body (which a retry sends again): *answer, *len bytes. */
static fota_err_t check_in(fota_client_t *c, const uint8_t **answer, size_t *len)
{
    char *body = (char *)DATA(c);
    /* "chip":"<chip>", only with a chip: the parts from one text, its NUL
     * in the middle the empty string. */
    static const char parts[] = "\"chip\":\"\0\",";
    const char *chip = c->cfg->chip, *none = parts + 8;
#if FOTA_DELTA
    /* The running image and the compressions fota_delta.c applies, when
     * the port knows the image: the server may then offer a delta. */
    char sha[65] = "";
    bool known = c->boot.running_known;
    if (known) fota_hex(sha, c->boot.running_sha256, 32);
#define CHECK_DELTA "%s%s%s"
#define CHECK_DELTA_ARGS known ? "\"image_sha256\":\"" : none, sha, \
        known ? "\",\"delta\":[\"heatshrink\",\"crle\",\"none\"]," : none,
#else
#define CHECK_DELTA
#define CHECK_DELTA_ARGS
#endif
    int n = snprintf(body, DATA_CAP(c),
                     "{" CHECK_DELTA "\"version\":\"%s\",\"hardware\":\"%s\",\"security_counter\":%lu,\"inventory\":{%s%s%s"
                     "\"slot_size\":%lu,\"agent_version\":\"fota-c/" FOTA_CLIENT_VERSION "\"}}",
                     CHECK_DELTA_ARGS c->boot.running_version, c->cfg->hardware, (unsigned long)c->boot.security_counter,
                     chip ? parts : none, chip ? chip : none, chip ? parts + 9 : none, (unsigned long)c->boot.slot_size);
    if (n < 0 || (size_t)n >= DATA_CAP(c) / 2 || (unsigned)snprintf(URI(c), URI_CAP, "%s/v1/device/check", c->prefix) >= URI_CAP) return FOTA_ERR_BUFFER;
    /* The answer may take the outbox's place too: nothing is queued before
     * the offer is judged, and judging copies out all it keeps. */
    size_t cap = c->work_size - DATA_OFF - (size_t)n;
    fota_err_t err = post(c, (size_t)n, cap, len);
    if (err == FOTA_ERR_BUFFER) fail(c, err, MSG_ANSWER_SIZE, (unsigned long)cap);
    *answer = DATA(c) + n;
    return err;
}

/* ---- Download ---- */

/* Hashes what the slot holds of the image so far (a resumed download's
 * SHA-256 state is not kept: the bytes on flash are). */
static fota_err_t rehash(fota_client_t *c, uint32_t len)
{
    if (fota_sha256_start(&c->sha)) return FOTA_ERR_CRYPTO;
    for (uint32_t off = 0; off < len;) {
        size_t n = len - off < DATA_CAP(c) ? len - off : DATA_CAP(c);
        fota_err_t err = c->port->slot_read(c->port->ctx, off, DATA(c), n);
        if (err) return port_err(err, FOTA_ERR_FLASH);
        if (fota_sha256_update(&c->sha, DATA(c), n)) return FOTA_ERR_CRYPTO;
        off += (uint32_t)n;
    }
    return FOTA_OK;
}

#if FOTA_DELTA
/* The bytes downloaded: the patch's for a delta, else the image's. */
#define ARTIFACT_SIZE(o) ((o)->patch_size ? (o)->patch_size : (o)->plaintext_size)

/* The patcher's I/O: it reads the running slot and writes the new image
 * into the update slot, hashing it in order; a port failure is kept to be
 * returned as it is (a power failure stays one). */
typedef struct {
    fota_client_t *c;
    uint32_t off; /* the image bytes written and hashed */
    fota_err_t err;
} patch_io_t;

static int patch_read(void *ctx, uint32_t off, uint8_t *buf, size_t len)
{
    patch_io_t *io = ctx;
    io->err = port_err(io->c->port->running_read(io->c->port->ctx, off, buf, len), FOTA_ERR_FLASH);
    return io->err != FOTA_OK;
}

static int patch_write(void *ctx, uint32_t off, const uint8_t *buf, size_t len)
{
    patch_io_t *io = ctx;
    fota_client_t *c = io->c;
    if (off != io->off) return 1; /* out of order: the applier's error, a delta failure */
    io->err = port_err(c->port->slot_write(c->port->ctx, off, buf, len), FOTA_ERR_FLASH);
    if (!io->err && fota_sha256_update(&c->sha, buf, len)) io->err = FOTA_ERR_CRYPTO;
    io->off += (uint32_t)len;
    return io->err != FOTA_OK;
}

/* Feeds n decrypted patch bytes (the ones at d->written) to the patcher. */
static fota_err_t patch(fota_client_t *c, download_t *d, const uint8_t *p, uint32_t n)
{
    patch_io_t io = {c, fota_delta_written(&d->patch), FOTA_OK};
    fota_delta_io_t dio = {&io, patch_read, patch_write};
    int r = fota_delta_write(&d->patch, &dio, p, n);
    if (r == FOTA_DELTA_ERR_IO && io.err) return fail(c, io.err, MSG_WRITE, (unsigned long)io.off);
    return r ? fail(c, FOTA_ERR_DELTA, MSG_PATCH, fota_delta_strerror(r), (unsigned long)d->written) : FOTA_OK;
}

/* The end of a delta download: the whole patch arrived and was applied,
 * and made an image of the signed size and SHA-256. */
static fota_err_t finish_patch(fota_client_t *c, download_t *d)
{
    fota_offer_t *o = &c->offer;
    uint8_t digest[32];
    int r = fota_delta_finish(&d->patch);
    uint32_t made = fota_delta_written(&d->patch);
    if (r) return fail(c, FOTA_ERR_DELTA, MSG_PATCH, fota_delta_strerror(r), (unsigned long)d->written);
    if (d->written != o->patch_size || made != o->plaintext_size)
        return fail(c, FOTA_ERR_DELTA, MSG_PATCH_SIZE, (unsigned long)d->written, (unsigned long)o->patch_size,
                    (unsigned long)made, (unsigned long)o->plaintext_size);
    if (fota_sha256_finish(&c->sha, digest)) return FOTA_ERR_CRYPTO;
    return fota_equal(digest, o->plaintext_sha256, 32) ? FOTA_OK : fail(c, FOTA_ERR_DELTA, MSG_PATCH_HASH);
}
#else
#define ARTIFACT_SIZE(o) ((o)->plaintext_size)
#endif

static fota_err_t checkpoint(fota_client_t *c, download_t *d)
{
    fota_err_t err = port_err(c->port->slot_sync(c->port->ctx), FOTA_ERR_FLASH);
    return err ? err : record_save(c, REC_DOWNLOAD, d);
}


/* Fetches chunks d->next_chunk.. in one request and writes them. Returns
 * FOTA_OK when at least one chunk arrived (or the answer was fine). */
/* Whether the download has taken longer than update_timeout_s: 32 bits of
 * the time taken do (68 years), and a clock set back is no timeout. */
static bool expired(fota_client_t *c)
{
    uint32_t limit = c->cfg->update_timeout_s ? c->cfg->update_timeout_s : 3600;
    return (int32_t)(uint32_t)(c->port->now(c->port->ctx) - c->started) >= (int32_t)limit;
}

static fota_err_t fetch(fota_client_t *c, download_t *d, uint8_t session_key[32])
{
    fota_offer_t *o = &c->offer;
    uint16_t every = c->cfg->checkpoint_every ? c->cfg->checkpoint_every : 8;
    uint32_t want = c->cfg->chunks_per_request ? c->cfg->chunks_per_request : 16;
    if (want > o->chunks - d->next_chunk) want = o->chunks - d->next_chunk;
    if ((unsigned)snprintf(URI(c), URI_CAP, "%s/v1/device/sessions/%s/chunks?from=%lu&count=%lu%s", c->prefix,
                           o->session, (unsigned long)d->next_chunk, (unsigned long)want, "&mac=v2") >=
        URI_CAP)
        return FOTA_ERR_BUFFER;
    fota_http_response_t resp;
    fota_err_t err = request(c, 0, &resp);
    if (err) return err;
    /* A frame: a 40-byte head (index, length, HMAC), then the chunk. The
     * length due is known, so head and chunk are read at once. */
    uint8_t *head = DATA(c), *chunk = head + 40, mac[32];
    uint32_t start = d->next_chunk;
    for (;;) {
        size_t got;
        /* Checked at every frame: a server feeding an answer slowly is
         * stopped in it, not after it. */
        if (expired(c)) {
            err = FOTA_ERR_TIMEOUT;
            break;
        }
        bool last = d->next_chunk + 1 == o->chunks;
        uint32_t expect = last ? o->ciphertext_size - d->next_chunk * o->chunk_size : o->chunk_size;
        err = read_full(c, head, 40 + expect, &got);
        if (err || got == 0) break;
        uint32_t index = 0, len = 0; /* big-endian in the frame's head */
        for (int k = 0; k < 4; k++) {
            index = index << 8 | head[k];
            len = len << 8 | head[k + 4];
        }
        bool short_frame = false;
        if (got < 40 || index != d->next_chunk || len != expect) {
#if FOTA_DELTA
            /* The right chunk, shorter than the signed manifest says: if its
             * MAC holds, the session's ciphertext ends here, another
             * artifact's (checked below: the length is not authenticated). */
            short_frame = got >= 40 && index == d->next_chunk && len < expect;
#endif
            if (!short_frame) {
                err = fail(c, FOTA_ERR_PROTOCOL, MSG_FRAME, (unsigned long)index, (unsigned long)len,
                           (unsigned long)d->next_chunk, (unsigned long)expect);
                break;
            }
        }
        if (got < 40 + len) {
            err = FOTA_ERR_NETWORK; /* cut short: what came before is kept */
            break;
        }
        err = FOTA_ERR_CRYPTO;
        if (fota_chunk_mac_v2(&c->sha2, session_key, index, chunk, len, mac))
            break;
        if (!fota_equal(mac, head + 8, 32)) {
            err = FOTA_ERR_CHUNK_MAC; /* download() says which chunk, if it gives up */
            break;
        }
#if FOTA_DELTA
        if (short_frame) {
            err = fail(c, FOTA_ERR_DELTA, MSG_OTHER_ARTIFACT, (unsigned long)index + 1, (unsigned long)o->chunks);
            break;
        }
#endif
        /* Checked: decrypt in place (mbedtls keeps the CBC chaining value in d->cbc). */
        if (mbedtls_aes_crypt_cbc(&c->aes, MBEDTLS_AES_DECRYPT, len, d->cbc, chunk, chunk)) break;
        int tail = last ? fota_unpad(chunk + len - 16) : 16; /* the plaintext bytes of the last block */
        uint32_t plain = len - 16 + (uint32_t)tail;
        if (tail < 0 || d->written + plain > ARTIFACT_SIZE(o)) {
#if FOTA_DELTA
            /* Of a patch, a delta failure like any other: not the release's. */
            err = fail(c, o->patch_size ? FOTA_ERR_DELTA : FOTA_ERR_DECRYPT, tail < 0 ? MSG_PADDING : MSG_OVERSIZE,
                       (unsigned long)ARTIFACT_SIZE(o));
#else
            err = fail(c, FOTA_ERR_DECRYPT, tail < 0 ? MSG_PADDING : MSG_OVERSIZE, (unsigned long)ARTIFACT_SIZE(o));
#endif
            break;
        }
        /* Erased only once a chunk passed its HMAC: an answer altered on the
         * way costs no erase, however often it comes. */
        if (!c->slot_ready &&
            (err = port_err(c->port->slot_begin(c->port->ctx, o->plaintext_size), FOTA_ERR_FLASH))) {
            fail(c, err, MSG_SLOT_BEGIN);
            break;
        }
        c->slot_ready = true;
#if FOTA_DELTA
        /* A patch goes through the patcher, which writes the image. */
        if (o->patch_size) {
            if ((err = patch(c, d, chunk, plain))) break;
        } else
#endif
        {
            if ((err = port_err(c->port->slot_write(c->port->ctx, d->written, chunk, plain), FOTA_ERR_FLASH))) {
                fail(c, err, MSG_WRITE, (unsigned long)d->written);
                break;
            }
            err = FOTA_ERR_CRYPTO;
            if (fota_sha256_update(&c->sha, chunk, plain)) break;
        }
        d->written += plain;
        d->next_chunk++;
        c->progress.chunk = d->next_chunk;
        c->progress.bytes += len;
        progress(c, FOTA_STATE_DOWNLOADING);
        err = FOTA_OK;
        if (d->next_chunk % every == 0 && d->next_chunk < o->chunks && (err = checkpoint(c, d))) {
            fail(c, err, MSG_CHECKPOINT);
            break;
        }
    }
    c->port->http_end(c->port->ctx, err == FOTA_OK);
    if (err == FOTA_OK && d->next_chunk == start) return fail(c, FOTA_ERR_PROTOCOL, MSG_EMPTY, (unsigned long)start);
    /* Chunks arrived before a network failure: go on from there. */
    if (err == FOTA_ERR_NETWORK && d->next_chunk > start) return FOTA_OK;
    return err;
}

/* Downloads the offer into the inactive slot, resuming a saved download. */
static fota_err_t download(fota_client_t *c, download_t *d)
{
    fota_offer_t *o = &c->offer;
    uint8_t session_key[32];
    unsigned mac_failures = 0, allowed = c->cfg->chunk_retries ? c->cfg->chunk_retries : 3;
    uint32_t failed_at = UINT32_MAX;
    fota_err_t err = FOTA_OK;
    if (fota_session_chunk_key(&c->sha2, c->psk, o->session, session_key)) return FOTA_ERR_CRYPTO;
    c->progress.chunks = o->chunks;
    c->progress.total_bytes = o->ciphertext_size;
    c->progress.chunk = d->next_chunk;
    c->progress.bytes = d->next_chunk * o->chunk_size;
    c->started = c->port->now(c->port->ctx);
    for (int attempt = 0; d->next_chunk < o->chunks;) {
        err = expired(c) ? FOTA_ERR_TIMEOUT : fetch(c, d, session_key);
        if (err == FOTA_ERR_TIMEOUT) {
            /* What arrived is checkpointed: the next check resumes from there. */
            if ((err = checkpoint(c, d)) == FOTA_OK)
                err = fail(c, FOTA_ERR_TIMEOUT, MSG_TIMEOUT,
                           (unsigned long)(c->cfg->update_timeout_s ? c->cfg->update_timeout_s : 3600));
            break;
        }
        if (err == FOTA_OK) {
            attempt = 0;
            continue;
        }
        if (err == FOTA_ERR_CHUNK_MAC) {
            if (failed_at != d->next_chunk) mac_failures = 0;
            failed_at = d->next_chunk;
            if (++mac_failures > allowed) {
                fail(c, err, MSG_MAC_TIMES, (unsigned long)failed_at, mac_failures);
                break;
            }
            logf_(c, MSG_REFETCH, (unsigned long)failed_at);
            continue;
        }
        if (!backoff(c, attempt++, err)) break;
    }
    memset(session_key, 0, sizeof session_key);
#if FOTA_DELTA
    /* The server's session ends before the signed ciphertext does: it
     * serves another artifact than the answer said (altered on the way). */
    if (err == FOTA_ERR_REJECTED && d->next_chunk < o->chunks)
        err = fail(c, FOTA_ERR_DELTA, MSG_OTHER_ARTIFACT, (unsigned long)d->next_chunk, (unsigned long)o->chunks);
#endif
    return d->next_chunk == o->chunks ? FOTA_OK : err;
}

/* Queues a report on the offer. */
static fota_err_t queue_offer(fota_client_t *c, int status, const char *reason)
{
    return queue_report(c, status, c->offer.session, c->offer.version, reason);
}

/* Queues the downloaded and verified reports of the offer. */
static fota_err_t queue_verified(fota_client_t *c)
{
    return queue_reports(c, REPORT_DOWNLOADED, REPORT_VERIFIED, c->offer.session, c->offer.version, NULL);
}

/* Marks the verified image to boot, or keeps it for its install window
 * (saved as verified, for this session, unless d says so already). */
static fota_err_t apply(fota_client_t *c, download_t *d, bool saved, fota_result_t *res)
{
    fota_offer_t *o = &c->offer;
    int64_t now = server_now(c);
    bool early = o->install_after && now < o->install_after;
    fota_err_t err;
    int msg = MSG_INSTALLED;
    fota_state_t state = FOTA_STATE_COMPLETED;
    if (early || (o->install_until && now >= o->install_until)) {
        if (!saved) {
            d->verified = 1;
            d->next_chunk = o->chunks;
            if ((err = record_save(c, REC_DOWNLOAD, d))) return err;
        }
        res->deferred = true;
        res->install_after = early ? o->install_after : 0;
        msg = MSG_DEFERRED;
        state = FOTA_STATE_DEFERRED;
    } else {
        progress(c, FOTA_STATE_APPLYING);
        /* The install record first, so the new image can name its session; then the mark. */
        install_t in;
        copy_str(in.version, sizeof in.version, o->version);
        copy_str(in.session, sizeof in.session, o->session);
        if ((err = record_save(c, REC_INSTALL, &in))) return err;
        if ((err = c->port->slot_set_pending(c->port->ctx, o->version, o->security_counter, o->plaintext_size,
                                             o->plaintext_sha256))) {
            log_err(c, MSG_SET_PENDING, err, NULL);
            return port_err(err, FOTA_ERR_FLASH);
        }
        record_delete(c, REC_DOWNLOAD);
        if (queue_offer(c, REPORT_APPLIED, NULL) == FOTA_ERR_POWER) return FOTA_ERR_POWER;
        res->installed = true;
    }
    logf_(c, msg, o->version);
    progress(c, state);
    return FOTA_OK;
}

/* Finishes the image's SHA-256 and compares it with the signed one. */
static fota_err_t check_hash(fota_client_t *c)
{
    uint8_t digest[32];
    if (fota_sha256_finish(&c->sha, digest)) return FOTA_ERR_CRYPTO;
    return fota_equal(digest, c->offer.plaintext_sha256, 32) ? FOTA_OK : FOTA_ERR_HASH;
}

/* Downloads (or resumes), verifies and applies the judged offer. */
static fota_err_t install(fota_client_t *c, fota_result_t *res)
{
    fota_offer_t *o = &c->offer;
    download_t d;
    fota_err_t err = FOTA_OK;
    bool saved = record_load(c, REC_DOWNLOAD, &d) && !strcmp(d.version, o->version) && !strcmp(d.base, c->boot.running_version) &&
                 fota_equal(d.sha256, o->plaintext_sha256, 32) && d.next_chunk <= o->chunks &&
                 d.written <= ARTIFACT_SIZE(o);
#if FOTA_DELTA
    /* A patch resumes where its saved patcher stands, which must be a
     * sound state at the decrypter's place; anything else starts again. */
    saved = saved && d.delta == (o->patch_size != 0) &&
            (!d.delta || d.verified ||
             (fota_delta_check(&d.patch) == FOTA_DELTA_OK && fota_delta_patch_offset(&d.patch) == d.written));
    uint32_t hashed = d.delta ? fota_delta_written(&d.patch) : d.written; /* image bytes in the slot */
#else
#define hashed d.written
#endif
    bool same_session = saved && !strcmp(d.session, o->session);
    bool kept = saved && d.verified && d.next_chunk == o->chunks; /* for its install window */
    /* What the slot holds of the image is hashed again: all of a kept one, to
     * check it; the part written before, to go on from there. */
    if (kept) progress(c, FOTA_STATE_VERIFYING);
    if (saved && d.next_chunk > 0 && (err = rehash(c, kept ? o->plaintext_size : hashed)) == FOTA_ERR_POWER)
        return err;
    if (kept) {
        if (err == FOTA_OK && (err = check_hash(c)) == FOTA_OK) {
            /* The verified reports again only for another session. */
            logf_(c, MSG_VERIFIED_BEFORE, o->version);
            if (same_session) return apply(c, &d, true, res);
            goto verified;
        }
        logf_(c, MSG_KEPT_CHANGED);
        saved = false;
    }
    bool resume = saved && !d.verified && d.next_chunk > 0 && err == FOTA_OK;
    if (!resume) {
        memset(&d, 0, sizeof d);
        copy_str(d.version, sizeof d.version, o->version);
        copy_str(d.base, sizeof d.base, c->boot.running_version);
        memcpy(d.sha256, o->plaintext_sha256, 32);
        memcpy(d.cbc, o->iv, 16);
        if (fota_sha256_start(&c->sha)) return FOTA_ERR_CRYPTO;
#if FOTA_DELTA
        /* The patch makes an image of at most the signed size from the running one. */
        if ((d.delta = o->patch_size != 0) &&
            fota_delta_begin(&d.patch, c->boot.running_size, o->plaintext_size) != FOTA_DELTA_OK)
            return FOTA_ERR_ARGUMENT;
#endif
    }
    c->slot_ready = resume; /* a new download erases the slot at its first good chunk */
    logf_(c, resume ? MSG_RESUMING : MSG_DOWNLOADING, o->version, (unsigned long)d.next_chunk, (unsigned long)o->chunks);
    copy_str(d.session, sizeof d.session, o->session);
    if ((err = download(c, &d))) return err;
    progress(c, FOTA_STATE_VERIFYING);
#if FOTA_DELTA
    if (d.delta) {
        if ((err = finish_patch(c, &d))) return err;
    } else
#endif
    {
        if ((err = check_hash(c))) return err;
        if (d.written != o->plaintext_size) return FOTA_ERR_HASH;
    }
    if ((err = port_err(c->port->slot_sync(c->port->ctx), FOTA_ERR_FLASH))) return err;
verified:
    copy_str(d.session, sizeof d.session, o->session);
    if ((err = queue_verified(c))) return err;
    return apply(c, &d, false, res);
}
#undef hashed

#define BIT(e) (1u << (e))
/* Failures of the offer or the image are the device's word, reported:
 * refused by the device's rules, or failed. The server's refusals and
 * network faults are not (the session may be gone). */
#define REFUSED (BIT(FOTA_ERR_DOWNGRADE) | BIT(FOTA_ERR_ROLLED_BACK) | BIT(FOTA_ERR_COUNTER) | BIT(FOTA_ERR_TOO_LARGE))
/* Failed: only what the device found in the image, as the Go agent. A
 * check answer that does not check out (signature, key, manifest,
 * hardware) is not reported: its session id is as unauthenticated as the
 * rest of it, and the report would end that session on a forger's word. */
#define FAILED (BIT(FOTA_ERR_CHUNK_MAC) | BIT(FOTA_ERR_DECRYPT) | BIT(FOTA_ERR_HASH))
/* The device found the image bad: what was downloaded of it is forgotten. */
#define BAD_IMAGE (BIT(FOTA_ERR_CHUNK_MAC) | BIT(FOTA_ERR_HASH) | BIT(FOTA_ERR_DECRYPT))

#if FOTA_DELTA
static fota_err_t check_once(fota_client_t *c, fota_result_t *res)
#else
fota_err_t fota_check(fota_client_t *c, fota_result_t *res)
#endif
{
    answer_t a;
    const uint8_t *answer;
    size_t len = 0;
    fota_err_t err;
    memset(res, 0, sizeof *res);
    c->why[0] = 0;
    if (c->boot.trial) return FOTA_ERR_ON_TRIAL;
    /* Each check first sends what is queued, so the timer retries reports. */
    if ((err = fota_flush(c)) == FOTA_ERR_POWER) return err;
    c->progress.version = "";
    progress(c, FOTA_STATE_CHECKING);
    if ((err = check_in(c, &answer, &len))) goto out;
    if (!parse_answer(answer, len, &a)) {
        err = FOTA_ERR_PROTOCOL; /* "malformed answer" says it all */
        goto out;
    }
    if (a.v[A_UPDATE].type != FOTA_J_TRUE) {
        fota_json_t *m = &a.v[A_MESSAGE];
        logf_(c, MSG_NO_UPDATE, (int)m->n, m->p);
        progress(c, FOTA_STATE_IDLE);
        return FOTA_OK;
    }
    res->update = true;
    err = judge(c, &a, res);
    if (err == FOTA_OK) err = install(c, res);
    /* The server hears of the download before the reboot, not after it. */
    if (err == FOTA_OK && res->installed) flush_queued(c);
out:
    if (err == FOTA_OK || err == FOTA_ERR_POWER) return err;
    /* The error's text, and what the device found when it said (fail). */
    const char *line = c->why[0] ? c->why : fota_err_str(err);
    logf_(c, MSG_FAILED, line);
    progress_err(c, FOTA_STATE_ERROR, err);
#if FOTA_DELTA
    /* A delta failure is the patch's, not the release's: reported failed,
     * and what was made of it forgotten (FOTA_ERR_DELTA is past BIT's
     * 32 bits, so it is named). */
    bool delta = err == FOTA_ERR_DELTA;
    if (delta || (BIT(err) & BAD_IMAGE)) record_delete(c, REC_DOWNLOAD);
    if ((delta || (BIT(err) & (REFUSED | FAILED))) && c->offer.session[0] && res->update &&
        queue_offer(c, delta ? REPORT_DELTA_FAILED : (BIT(err) & REFUSED) ? REPORT_REFUSED : REPORT_FAILED, line) == FOTA_OK)
        flush_queued(c);
#else
    if (BIT(err) & BAD_IMAGE) record_delete(c, REC_DOWNLOAD);
    if ((BIT(err) & (REFUSED | FAILED)) && c->offer.session[0] && res->update &&
        queue_offer(c, BIT(err) & REFUSED ? REPORT_REFUSED : REPORT_FAILED, line) == FOTA_OK)
        flush_queued(c);
#endif
    return err;
}

#if FOTA_DELTA
fota_err_t fota_check(fota_client_t *c, fota_result_t *res)
{
    fota_err_t err = check_once(c, res);
    if (err != FOTA_ERR_DELTA) return err;
    /* Reported failed: the server offers this device the full image from
     * now on. Take it now rather than at the next check. */
    logf_(c, MSG_FULL_AGAIN);
    return check_once(c, res);
}
#endif

/* ---- Push ---- */

void fota_client_notify(fota_client_t *c, uint32_t spread_ms)
{
    /* One word, so another task's write is whole; 0 is none (hence the +1). */
    c->push = spread_ms + 1;
}

/* fota_push_wait_ms is in fota_push.c: only firmware with push links it. */
