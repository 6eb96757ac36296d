/*
 * The POSIX port of the fota C client: for Linux gateways, and for the
 * tests, which run the C client as a process against a real server.
 *
 * It fills a fota_port_t (fota_client.h) with:
 *   - HTTP/1.1 over plain TCP sockets, with keep-alive;
 *   - two app slots, the boot state (otadata), the security counter and a
 *     key-value store, all as files in a state folder, with the semantics
 *     of the Go agent's agent/slotfile (ESP-IDF otadata with rollback);
 *   - a bootloader emulation (fota_posix_boot) to run at every power-on;
 *   - power-cut injection at any persistent operation, as slotfile's
 *     FaultDisk does, for the power-cut sweeps;
 *   - the real clock, nanosleep, the kernel's random source, and stderr
 *     for logs.
 *
 * Everything lives inside fota_posix_t: the port never calls malloc.
 * Not thread-safe, as the library does not need it to be.
 *
 * ---- The state folder ----------------------------------------------------
 *
 *   slot0.bin, slot1.bin   the two app slots (plain image bytes)
 *   otadata.0, otadata.1   the boot state, two copies written alternately
 *   security_counter.0/.1  the anti-rollback counter, two copies
 *   kv/<key>               one file per key-value record
 *   *.tmp                  a record being replaced (a cut may leave one)
 *
 * Files are mode 0600 and folders 0700: the slots hold decrypted firmware
 * and the key-value records the library's state.
 *
 * A record (otadata, counter, kv) is replaced atomically: write a
 * temporary file, fsync it, rename it over the old one, fsync the folder.
 * A cut anywhere leaves the old record or the new one.
 *
 * otadata.N, 432 bytes, little endian. The newest valid copy wins; a save
 * writes seq+1 into copy (seq+1) % 2, the older one, so the newer copy
 * survives whatever happens to the write.
 *
 *   off  len  field
 *     0    4  magic "FOTB"
 *     4    2  format version, 1
 *     6    2  record length, 432
 *     8    4  seq: orders the copies (compared modulo 2^32)
 *    12    4  slot size in bytes (set by fota_posix_format)
 *    16    1  next: the slot the next boot tries first (0 or 1)
 *    17    1  attempts: trial boots of the next slot so far
 *    18    1  1 when a rollback record follows, else 0
 *    19    1  reserved, 0
 *    20  108  slot 0, then at 128 slot 1, each:
 *               +0   1  state (fota_posix_image_state_t)
 *               +1   3  reserved, 0
 *               +4   4  image security counter
 *               +8   4  image size in bytes
 *               +12 32  image SHA-256 (checked at every boot)
 *               +44 64  image version, NUL padded (at most 63 characters)
 *   236   64  rollback: the version rolled back from, NUL padded
 *   300  128  rollback: the reason, NUL padded (at most 120 characters)
 *   428    4  CRC-32 (IEEE 802.3, as zlib's) of bytes 0-427
 *
 * security_counter.N, 16 bytes, little endian: magic "FOTC", format
 * version 1 (2 bytes), reserved (2 bytes), the counter (4 bytes), CRC-32
 * of bytes 0-11. Kept apart from the boot state, as an ESP32 keeps it in
 * eFuses: it only rises, and reformatting never lowers it. A raise writes
 * copy 0 and then copy 1, so copy 0 is never below copy 1; reading takes
 * the highest intact copy; both absent is 0. When no copy is intact the
 * counter is unreadable: the device still boots its image, but boot_info
 * fails with FOTA_ERR_STORAGE, so fota_init fails and the device takes no
 * update (judging offers against a guessed counter could let an old,
 * vulnerable image back in). Fixing that takes a person.
 *
 * kv/<key>: the value, then the CRC-32 of the value (4 bytes, little
 * endian). A value whose CRC does not match reads as absent (logged).
 * Keys are 1-64 characters of A-Z a-z 0-9 _ - . that neither start with
 * a dot nor end in ".tmp" (the library's are "fota.dl", "fota.outbox", ...).
 *
 * ---- Power cuts ------------------------------------------------------------
 *
 * Every persistent operation counts, from 1: each write, truncate (also
 * the truncating open of a temporary file), fsync, rename, folder fsync
 * and unlink. With fota_posix_set_fault(p, N, mode), at operation N the
 * process ends at once with _exit(FOTA_POSIX_EXIT_POWER_CUT):
 *   before: the operation is not done;
 *   after:  it is done, then power goes;
 *   torn:   a write lands half-way (its first half); other operations as
 *           before.
 * The last operation is printed on stderr at the cut, e.g.
 * "power cut at op 57 (torn): write slot1.bin @1024 +1024".
 */
#ifndef FOTA_PORT_POSIX_H
#define FOTA_PORT_POSIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fota_client.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The exit status of a process whose power was cut. */
#define FOTA_POSIX_EXIT_POWER_CUT 99

/* fota_posix_boot's answer when no slot holds a bootable image: the device
 * is a brick. Outside fota_err_t's values, so no library error can be
 * mistaken for it; fota_posix_err_str names it. */
#define FOTA_POSIX_ERR_NO_BOOTABLE ((fota_err_t)100)

#define FOTA_POSIX_DEFAULT_MAX_BOOTS 3
#define FOTA_POSIX_DEFAULT_TIMEOUT_MS 30000
#define FOTA_POSIX_PATH_MAX 512
/* The socket read buffer: a chunks answer is read as 40-byte frame headers
 * and 1 KiB chunks, which this turns into few system calls. */
#define FOTA_POSIX_READ_BUF 16384
/* An answer's status line and headers larger than this are refused. */
#define FOTA_POSIX_HEAD_MAX 8192
#define FOTA_POSIX_KEY_MAX 64

/* An app slot's state, as ESP-IDF's otadata keeps it (agent.ImageState). */
typedef enum {
    FOTA_POSIX_IMG_EMPTY = 0,      /* erased, or being written */
    FOTA_POSIX_IMG_NEW = 1,        /* written and verified; boots next, not booted yet */
    FOTA_POSIX_IMG_PENDING = 2,    /* booted, not yet confirmed (pending-verify) */
    FOTA_POSIX_IMG_VALID = 3,      /* confirmed */
    FOTA_POSIX_IMG_INVALID = 4,    /* failed its self-test, or not confirmed in time */
    FOTA_POSIX_IMG_ABORTED = 5     /* found damaged at boot */
} fota_posix_image_state_t;

typedef enum {
    FOTA_POSIX_CUT_BEFORE = 0,
    FOTA_POSIX_CUT_AFTER = 1,
    FOTA_POSIX_CUT_TORN = 2
} fota_posix_cut_mode_t;

/* ---- Internals (in the header only so the caller can allocate them) ---- */

typedef struct {
    uint8_t state; /* fota_posix_image_state_t */
    uint32_t security_counter;
    uint32_t size;
    uint8_t sha256[32];
    char version[FOTA_VERSION_MAX + 1];
} fota_posix_image_t;

/* The boot state, decoded (otadata). */
typedef struct {
    uint32_t seq;
    uint32_t slot_size;
    uint8_t next;
    uint8_t attempts;
    bool has_rollback;
    fota_posix_image_t slots[2];
    char rollback_version[FOTA_VERSION_MAX + 1];
    char rollback_reason[FOTA_REASON_MAX + 1];
} fota_posix_bootstate_t;

/* The state folder, with the operation count and the cut. */
typedef struct {
    char dir[FOTA_POSIX_PATH_MAX];
    uint64_t ops;       /* persistent operations so far */
    uint64_t cut_at;    /* 0: never */
    int cut_mode;       /* fota_posix_cut_mode_t */
    bool trace;         /* print every operation on stderr */
    int log_level;      /* fota_log_level_t: lines above it are dropped */
    char last_op[192];
} fota_posix_disk_t;

typedef struct {
    /* The server. */
    char host[256];      /* for getaddrinfo: no brackets */
    char port[8];
    char authority[272]; /* the Host header: host[:port] as in the URL */
    int timeout_ms;

    int fd;              /* -1: no connection */
    bool reused;         /* the connection served an exchange before */
    bool in_exchange;
    uint8_t rbuf[FOTA_POSIX_READ_BUF];
    size_t rpos, rlen;
    char head[1024];     /* the request line and the port's own headers */

    /* The answer's body. */
    int body_mode;       /* none, length, chunked, until close */
    int chunk_state;
    uint64_t body_left;  /* length mode: bytes left; chunked: of this chunk */
    bool body_done;
    bool close_after;
} fota_posix_http_t;

typedef struct {
    fota_posix_disk_t disk;
    fota_posix_http_t http;

    fota_posix_bootstate_t bs; /* as on disk */
    int max_boots;
    int running;          /* the running slot; -1 before fota_posix_boot */
    int slot_fd[2];
    int lock_fd; /* holds a lock on <state>/lock: one process per device */

    /* The security counter as read at boot. */
    uint32_t counter;
    bool counter_readable;
    bool counter_healthy; /* both copies intact and equal (or both absent) */

    int64_t clock_skew;   /* seconds added to the clock (tests) */
} fota_posix_t;

/* ---- Setting up ------------------------------------------------------------ */

/* Prepares p for the state folder state_dir; touches no file. Then set the
 * server, the fault and the rest, and call fota_posix_boot. */
fota_err_t fota_posix_init(fota_posix_t *p, const char *state_dir);
/* Closes the connection and the slot files. */
void fota_posix_close(fota_posix_t *p);

/* The server: "http://host[:port][/prefix]". https:// is refused with
 * FOTA_ERR_ARGUMENT: this port speaks plain HTTP only. The port connects to
 * host:port and sends each uri as the library gives it (the library puts
 * the prefix in). */
fota_err_t fota_posix_set_server(fota_posix_t *p, const char *url);
/* Socket send and receive timeout (also bounds connect on Linux). */
void fota_posix_set_timeout(fota_posix_t *p, int timeout_ms);
/* Cuts power at persistent operation cut_at (0: never), counting from the
 * start of the process's use of p. */
void fota_posix_set_fault(fota_posix_t *p, uint64_t cut_at, fota_posix_cut_mode_t mode);
/* Prints every persistent operation as "op N: description" on stderr. */
void fota_posix_set_trace(fota_posix_t *p, bool trace);
/* Seconds added to the device clock (a device with a wrong clock). */
void fota_posix_set_clock_skew(fota_posix_t *p, int64_t seconds);
/* Log lines above level are dropped (default FOTA_LOG_INFO). */
void fota_posix_set_log_level(fota_posix_t *p, fota_log_level_t level);

/* Fills out with p's functions; out->ctx is p. Beyond fota_client.h's
 * contract: slot_begin refuses with FOTA_ERR_ON_TRIAL while the running
 * image is on trial (as ESP-IDF's esp_ota_begin does: the other slot is
 * the trial's way back); slot_write, slot_set_pending and slot_begin's
 * size check answer FOTA_ERR_TOO_LARGE past the slot size; slot_read
 * past what was written reads erased flash (0xFF); the port never
 * returns FOTA_ERR_POWER, since a cut ends the process. */
void fota_posix_port(fota_posix_t *p, fota_port_t *out);

/* ---- The device's storage --------------------------------------------------- */

/* Formats an empty state folder (created if missing): slot 0 holds the
 * factory image (len bytes), valid, with this version and security counter;
 * slot 1 is empty. Refuses a folder that holds a valid boot state
 * (FOTA_ERR_ARGUMENT). A security counter already in the folder is kept,
 * raised to security_counter if lower, never lowered. */
fota_err_t fota_posix_format(const char *state_dir, uint32_t slot_size, const uint8_t *image, size_t len,
                             const char *version, uint32_t security_counter);

/* The bootloader: call once per power-on, before fota_init (again for an
 * in-process reboot: it closes the connection and rereads the folder).
 * Picks the slot to run as ESP-IDF's bootloader with rollback does: the
 * next slot first, if it is new or on trial it boots on trial (attempts
 * counted; after max_boots boots without a confirm it is marked invalid and
 * the other slot runs, with a rollback record), and every image is checked
 * against its recorded SHA-256 before it runs (a mismatch marks it aborted
 * and the other slot is tried). The decision is persisted before this
 * returns. max_boots <= 0: FOTA_POSIX_DEFAULT_MAX_BOOTS.
 * FOTA_POSIX_ERR_NO_BOOTABLE: no slot holds a bootable image, or the boot
 * state is unreadable. FOTA_ERR_STORAGE: the folder is not formatted or
 * cannot be read or written. */
fota_err_t fota_posix_boot(fota_posix_t *p, int max_boots);

/* The running slot (0 or 1), or -1 before fota_posix_boot. */
int fota_posix_running_slot(const fota_posix_t *p);
/* The running image's boot-state entry (version, size, SHA-256), or NULL
 * before fota_posix_boot. */
const fota_posix_image_t *fota_posix_running_image(const fota_posix_t *p);
/* Reads len bytes of the running image from off; past the end of what was
 * written the slot reads as erased flash (0xFF). */
fota_err_t fota_posix_read_running(fota_posix_t *p, uint32_t off, uint8_t *buf, size_t len);
/* The security counter; false when it is unreadable. */
bool fota_posix_counter(const fota_posix_t *p, uint32_t *out);
/* Whether the running image is on trial. */
bool fota_posix_trial(const fota_posix_t *p);

/* Persistent operations done (or begun) so far. */
uint64_t fota_posix_ops(const fota_posix_t *p);

/* fota_err_str, which also knows FOTA_POSIX_ERR_NO_BOOTABLE. */
const char *fota_posix_err_str(fota_err_t err);
/* An image state's name: "empty", "new", "pending-verify", ... */
const char *fota_posix_state_str(int state);

#ifdef __cplusplus
}
#endif

#endif /* FOTA_PORT_POSIX_H */
