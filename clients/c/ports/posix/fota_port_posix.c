/*
 * The POSIX port of the fota C client (fota_port_posix.h says what it does
 * and how the state folder is laid out). It mirrors the Go agent's
 * agent/slotfile: the same boot decisions, the same order of writes, the
 * same counting of persistent operations for power cuts.
 */
#define _POSIX_C_SOURCE 200809L

#include "fota_port_posix.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

#if defined(__linux__)
#include <sys/random.h>
#endif

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#define NORETURN __attribute__((noreturn))
#else
#define PRINTF_LIKE(f, a)
#define NORETURN
#endif

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* BSDs: SO_NOSIGPIPE is set on the socket instead */
#endif

/* mbedtls 3 dropped the _ret suffix 2.28 needs (its plain names are deprecated). */
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#define sha_starts(c) mbedtls_sha256_starts((c), 0)
#define sha_update(c, p, n) mbedtls_sha256_update((c), (p), (n))
#define sha_finish(c, o) mbedtls_sha256_finish((c), (o))
#else
#define sha_starts(c) mbedtls_sha256_starts_ret((c), 0)
#define sha_update(c, p, n) mbedtls_sha256_update_ret((c), (p), (n))
#define sha_finish(c, o) mbedtls_sha256_finish_ret((c), (o))
#endif

/* ---- Logging ------------------------------------------------------------- */

static void vlogline(int max_level, fota_log_level_t level, const char *src, const char *fmt, va_list ap)
{
    if ((int)level > max_level) return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    /* One call per line, so lines from the library and the port never mix. */
    fprintf(stderr, "%c %s: %s\n", "EWID"[level & 3], src, line);
}

static void dlog(const fota_posix_disk_t *d, fota_log_level_t level, const char *fmt, ...) PRINTF_LIKE(3, 4);
static void dlog(const fota_posix_disk_t *d, fota_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlogline(d->log_level, level, "posix", fmt, ap);
    va_end(ap);
}

#define plog(p, level, ...) dlog(&(p)->disk, (level), __VA_ARGS__)

/* ---- Small helpers --------------------------------------------------------- */

/* CRC-32 (IEEE 802.3, reflected, as zlib's crc32). Bitwise: it runs over a
 * few hundred bytes per record, where a table would not pay. */
static uint32_t crc32_of(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void put16(uint8_t *b, uint16_t v)
{
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *b) { return (uint16_t)(b[0] | (b[1] << 8)); }

static uint32_t get32(const uint8_t *b)
{
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

/* Copies s into a NUL-padded field of cap bytes (at most cap-1 characters). */
static void put_str(uint8_t *dst, size_t cap, const char *s)
{
    memset(dst, 0, cap);
    memcpy(dst, s, strnlen(s, cap - 1));
}

/* Reads a NUL-padded field; false when it has no NUL or does not fit out. */
static bool get_str(char *out, size_t out_cap, const uint8_t *src, size_t cap)
{
    const uint8_t *nul = memchr(src, 0, cap);
    if (!nul || (size_t)(nul - src) >= out_cap) return false;
    memcpy(out, src, (size_t)(nul - src));
    out[nul - src] = 0;
    return true;
}

/* Copies s into out (cap bytes with the NUL), cut at a character boundary
 * of UTF-8 when too long. */
static void copy_text(char *out, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) n--;
    }
    memcpy(out, s, n);
    out[n] = 0;
}

static int ascii_lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* strcasecmp without the locale: header names are ASCII. */
static bool ascii_eq(const char *a, const char *b)
{
    while (*a && ascii_lower((unsigned char)*a) == ascii_lower((unsigned char)*b)) a++, b++;
    return *a == 0 && *b == 0;
}

const char *fota_posix_state_str(int state)
{
    static const char *const names[] = {"empty", "new", "pending-verify", "valid", "invalid", "aborted"};
    return state >= 0 && state < 6 ? names[state] : "unknown";
}

const char *fota_posix_err_str(fota_err_t err)
{
    if (err == FOTA_POSIX_ERR_NO_BOOTABLE) return "no bootable image";
    return fota_err_str(err);
}

/* ---- Persistent operations, and the power cut ------------------------------- */

enum { OP_RUN, OP_RUN_THEN_CUT, OP_TORN_THEN_CUT };

static const char *cut_mode_str(int mode)
{
    return mode == FOTA_POSIX_CUT_AFTER ? "after" : mode == FOTA_POSIX_CUT_TORN ? "torn" : "before";
}

/* A dead device does nothing more: no cleanup, no flushing, no atexit. */
static NORETURN void power_cut(const fota_posix_disk_t *d)
{
    char line[320];
    int n = snprintf(line, sizeof line, "power cut at op %llu (%s): %s\n", (unsigned long long)d->ops,
                     cut_mode_str(d->cut_mode), d->last_op);
    if (n > 0) {
        ssize_t w = write(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        (void)w;
    }
    _exit(FOTA_POSIX_EXIT_POWER_CUT);
}

/* Counts one persistent operation and says how to do it. A cut "before"
 * (or "torn" on anything but a write) ends the process here. */
static int op_step(fota_posix_disk_t *d, bool is_write, const char *fmt, ...) PRINTF_LIKE(3, 4);
static int op_step(fota_posix_disk_t *d, bool is_write, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->last_op, sizeof d->last_op, fmt, ap);
    va_end(ap);
    d->ops++;
    if (d->trace) fprintf(stderr, "op %llu: %s\n", (unsigned long long)d->ops, d->last_op);
    if (d->cut_at == 0 || d->ops != d->cut_at) return OP_RUN;
    if (d->cut_mode == FOTA_POSIX_CUT_AFTER) return OP_RUN_THEN_CUT;
    if (d->cut_mode == FOTA_POSIX_CUT_TORN && is_write) return OP_TORN_THEN_CUT;
    power_cut(d);
    return OP_RUN; /* not reached */
}

/* dir/name into out; false when it does not fit. */
static bool path_of(const fota_posix_disk_t *d, const char *name, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s", d->dir, name);
    return n > 0 && (size_t)n < cap;
}

#define PATH_CAP (FOTA_POSIX_PATH_MAX + 96)

static int pwrite_all(int fd, const uint8_t *buf, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, buf, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += n, len -= (size_t)n, off += (uint64_t)n;
    }
    return 0;
}

/* One write of a then b at off: one operation, however many system calls.
 * Torn, its first half lands. */
static int d_write(fota_posix_disk_t *d, int fd, const char *name, const uint8_t *a, size_t alen, const uint8_t *b,
                   size_t blen, uint64_t off)
{
    int act = op_step(d, true, "write %s @%llu +%zu", name, (unsigned long long)off, alen + blen);
    if (act == OP_TORN_THEN_CUT) {
        size_t half = (alen + blen) / 2;
        size_t na = half < alen ? half : alen;
        if (pwrite_all(fd, a, na, off) == 0 && half > na) (void)pwrite_all(fd, b, half - na, off + na);
        power_cut(d);
    }
    int rc = pwrite_all(fd, a, alen, off);
    if (rc == 0 && blen > 0) rc = pwrite_all(fd, b, blen, off + alen);
    if (act == OP_RUN_THEN_CUT) power_cut(d);
    return rc;
}

static int d_truncate(fota_posix_disk_t *d, int fd, const char *name, uint64_t size)
{
    int act = op_step(d, false, "truncate %s %llu", name, (unsigned long long)size);
    int rc;
    do rc = ftruncate(fd, (off_t)size);
    while (rc < 0 && errno == EINTR);
    if (act == OP_RUN_THEN_CUT) power_cut(d);
    return rc;
}

/* Opens name empty (created 0600): the "truncate" of a temporary file. */
static int d_create(fota_posix_disk_t *d, const char *name)
{
    char path[PATH_CAP];
    if (!path_of(d, name, path, sizeof path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int act = op_step(d, false, "truncate %s 0", name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (act == OP_RUN_THEN_CUT) power_cut(d);
    return fd;
}

static int d_fsync(fota_posix_disk_t *d, int fd, const char *name)
{
    int act = op_step(d, false, "sync %s", name);
    int rc = fsync(fd);
    if (act == OP_RUN_THEN_CUT) power_cut(d);
    return rc;
}

static int d_rename(fota_posix_disk_t *d, const char *from, const char *to)
{
    char pf[PATH_CAP], pt[PATH_CAP];
    if (!path_of(d, from, pf, sizeof pf) || !path_of(d, to, pt, sizeof pt)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int act = op_step(d, false, "rename %s %s", from, to);
    int rc = rename(pf, pt);
    if (act == OP_RUN_THEN_CUT) power_cut(d);
    return rc;
}

/* fsyncs the state folder (sub NULL) or a folder in it: what makes a
 * rename or an unlink durable. */
static int d_syncdir(fota_posix_disk_t *d, const char *sub)
{
    char path[PATH_CAP];
    if (!path_of(d, sub ? sub : ".", path, sizeof path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int act = op_step(d, false, sub ? "syncdir %s" : "syncdir%s", sub ? sub : "");
    int rc = -1;
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        rc = fsync(fd);
        close(fd);
    }
    if (act == OP_RUN_THEN_CUT) power_cut(d);
    return rc;
}

/* Removes name; an absent one is no error. */
static int d_unlink(fota_posix_disk_t *d, const char *name)
{
    char path[PATH_CAP];
    if (!path_of(d, name, path, sizeof path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int act = op_step(d, false, "remove %s", name);
    int rc = unlink(path);
    if (rc < 0 && errno == ENOENT) rc = 0;
    if (act == OP_RUN_THEN_CUT) power_cut(d);
    return rc;
}

/* Replaces the record name with a then b atomically: temporary file,
 * write, fsync, rename over the old one, fsync the folder (5 operations).
 * A cut anywhere leaves the old record or the new one: a torn write only
 * ever hits the temporary file. */
static int replace_file(fota_posix_disk_t *d, const char *name, const char *sub, const uint8_t *a, size_t alen,
                        const uint8_t *b, size_t blen)
{
    char tmp[FOTA_POSIX_KEY_MAX + 32];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", name) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = d_create(d, tmp);
    if (fd < 0) return -1;
    if (d_write(d, fd, tmp, a, alen, b, blen, 0) < 0 || d_fsync(d, fd, tmp) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    close(fd);
    if (d_rename(d, tmp, name) < 0) return -1;
    return d_syncdir(d, sub);
}

enum { READ_OK = 0, READ_ABSENT = 1, READ_ERROR = -1, READ_TOO_BIG = -2 };

/* Reads a whole small file. */
static int read_small(const fota_posix_disk_t *d, const char *name, uint8_t *buf, size_t cap, size_t *len)
{
    char path[PATH_CAP];
    if (!path_of(d, name, path, sizeof path)) return READ_ERROR;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? READ_ABSENT : READ_ERROR;
    size_t n = 0;
    for (;;) {
        uint8_t extra;
        uint8_t *dst = n < cap ? buf + n : &extra;
        ssize_t r = read(fd, dst, n < cap ? cap - n : 1);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            close(fd);
            return READ_ERROR;
        }
        if (r == 0) break;
        if (n >= cap) {
            close(fd);
            return READ_TOO_BIG;
        }
        n += (size_t)r;
    }
    close(fd);
    *len = n;
    return READ_OK;
}

static int pread_full(int fd, uint8_t *buf, size_t len, uint64_t off, size_t *got)
{
    size_t n = 0;
    while (n < len) {
        ssize_t r = pread(fd, buf + n, len - n, (off_t)(off + n));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) break;
        n += (size_t)r;
    }
    *got = n;
    return 0;
}

/* ---- The boot state (otadata) ----------------------------------------------- */

static const char *const otadata_name[2] = {"otadata.0", "otadata.1"};
static const char *const counter_name[2] = {"security_counter.0", "security_counter.1"};

#define BS_SIZE 432
#define BS_SLOT_OFF 20
#define BS_SLOT_SIZE 108
#define BS_RB_VERSION_OFF 236
#define BS_RB_REASON_OFF 300
#define BS_CRC_OFF 428

static void bs_encode(const fota_posix_bootstate_t *bs, uint8_t out[BS_SIZE])
{
    memset(out, 0, BS_SIZE);
    memcpy(out, "FOTB", 4);
    put16(out + 4, 1);
    put16(out + 6, BS_SIZE);
    put32(out + 8, bs->seq);
    put32(out + 12, bs->slot_size);
    out[16] = bs->next;
    out[17] = bs->attempts;
    out[18] = bs->has_rollback ? 1 : 0;
    for (int i = 0; i < 2; i++) {
        uint8_t *s = out + BS_SLOT_OFF + BS_SLOT_SIZE * i;
        const fota_posix_image_t *img = &bs->slots[i];
        s[0] = img->state;
        put32(s + 4, img->security_counter);
        put32(s + 8, img->size);
        memcpy(s + 12, img->sha256, 32);
        put_str(s + 44, 64, img->version);
    }
    if (bs->has_rollback) {
        put_str(out + BS_RB_VERSION_OFF, 64, bs->rollback_version);
        put_str(out + BS_RB_REASON_OFF, 128, bs->rollback_reason);
    }
    put32(out + BS_CRC_OFF, crc32_of(0, out, BS_CRC_OFF));
}

static bool bs_decode(const uint8_t *in, size_t len, fota_posix_bootstate_t *bs)
{
    if (len != BS_SIZE || memcmp(in, "FOTB", 4) != 0 || get16(in + 4) != 1 || get16(in + 6) != BS_SIZE) return false;
    if (get32(in + BS_CRC_OFF) != crc32_of(0, in, BS_CRC_OFF)) return false;
    memset(bs, 0, sizeof *bs);
    bs->seq = get32(in + 8);
    bs->slot_size = get32(in + 12);
    bs->next = in[16];
    bs->attempts = in[17];
    if (bs->next > 1 || in[18] > 1 || bs->slot_size == 0) return false;
    bs->has_rollback = in[18] == 1;
    for (int i = 0; i < 2; i++) {
        const uint8_t *s = in + BS_SLOT_OFF + BS_SLOT_SIZE * i;
        fota_posix_image_t *img = &bs->slots[i];
        if (s[0] > FOTA_POSIX_IMG_ABORTED) return false;
        img->state = s[0];
        img->security_counter = get32(s + 4);
        img->size = get32(s + 8);
        memcpy(img->sha256, s + 12, 32);
        if (!get_str(img->version, sizeof img->version, s + 44, 64)) return false;
    }
    return get_str(bs->rollback_version, sizeof bs->rollback_version, in + BS_RB_VERSION_OFF, 64) &&
           get_str(bs->rollback_reason, sizeof bs->rollback_reason, in + BS_RB_REASON_OFF, 128);
}

/* The valid copy with the newest seq. FOTA_ERR_STORAGE when there is no
 * copy at all (not formatted) or one cannot be read; NO_BOOTABLE when
 * every copy is damaged. */
static fota_err_t bs_load(const fota_posix_disk_t *d, fota_posix_bootstate_t *out)
{
    bool found = false;
    int damaged = 0;
    for (int i = 0; i < 2; i++) {
        const char *name = otadata_name[i];
        uint8_t buf[BS_SIZE];
        size_t len = 0;
        fota_posix_bootstate_t bs;
        int rc = read_small(d, name, buf, sizeof buf, &len);
        if (rc == READ_ABSENT) continue;
        if (rc == READ_ERROR) {
            dlog(d, FOTA_LOG_ERROR, "read %s/%s: %s", d->dir, name, strerror(errno));
            return FOTA_ERR_STORAGE;
        }
        if (rc == READ_TOO_BIG || !bs_decode(buf, len, &bs)) {
            dlog(d, FOTA_LOG_WARN, "boot state copy %s is damaged; using the other", name);
            damaged++;
            continue;
        }
        /* Modulo 2^32, so a wrapped seq still orders the two copies. */
        if (!found || (int32_t)(bs.seq - out->seq) > 0) *out = bs;
        found = true;
    }
    if (found) return FOTA_OK;
    if (damaged) {
        dlog(d, FOTA_LOG_ERROR, "boot state unreadable: both copies in %s are damaged", d->dir);
        return FOTA_POSIX_ERR_NO_BOOTABLE;
    }
    dlog(d, FOTA_LOG_ERROR, "%s is not formatted (no otadata.0 or otadata.1)", d->dir);
    return FOTA_ERR_STORAGE;
}

/* Writes bs into the copy its seq selects. */
static int bs_write(fota_posix_disk_t *d, const fota_posix_bootstate_t *bs)
{
    uint8_t buf[BS_SIZE];
    bs_encode(bs, buf);
    return replace_file(d, otadata_name[bs->seq % 2], NULL, buf, sizeof buf, NULL, 0);
}

/* Persists a changed boot state as seq+1, into the older copy; p->bs
 * follows only once it is on disk. */
static bool bs_save(fota_posix_t *p, const fota_posix_bootstate_t *next)
{
    fota_posix_bootstate_t bs = *next;
    bs.seq = p->bs.seq + 1;
    if (bs_write(&p->disk, &bs) < 0) {
        plog(p, FOTA_LOG_ERROR, "save boot state: %s", strerror(errno));
        return false;
    }
    p->bs = bs;
    return true;
}

/* ---- The security counter ----------------------------------------------------- */

#define CTR_SIZE 16

typedef struct {
    uint32_t value;
    bool readable;
    bool healthy;
} counter_state_t;

/* Mirrors slotfile's readCounter: the highest intact copy; both absent is
 * 0; present but none intact is unreadable. */
static counter_state_t counter_read(const fota_posix_disk_t *d)
{
    counter_state_t st = {0, true, true};
    uint32_t values[2] = {0, 0};
    bool intact[2] = {false, false};
    int present = 0;
    for (int i = 0; i < 2; i++) {
        const char *name = counter_name[i];
        uint8_t buf[CTR_SIZE];
        size_t len = 0;
        int rc = read_small(d, name, buf, sizeof buf, &len);
        if (rc == READ_ABSENT) continue;
        present++;
        if (rc == READ_ERROR) {
            dlog(d, FOTA_LOG_ERROR, "read %s: %s", name, strerror(errno));
            st.readable = st.healthy = false;
            return st;
        }
        if (rc == READ_TOO_BIG || len != CTR_SIZE || memcmp(buf, "FOTC", 4) != 0 || get16(buf + 4) != 1 ||
            get32(buf + 12) != crc32_of(0, buf, 12)) {
            dlog(d, FOTA_LOG_WARN, "security counter copy %s is damaged", name);
            continue;
        }
        values[i] = get32(buf + 8);
        intact[i] = true;
    }
    if (present == 0) return st;
    if (!intact[0] && !intact[1]) {
        dlog(d, FOTA_LOG_ERROR, "security counter unreadable: no intact copy; updates are refused");
        st.readable = st.healthy = false;
        return st;
    }
    st.value = values[0] > values[1] ? values[0] : values[1];
    st.healthy = intact[0] && intact[1] && values[0] == values[1];
    return st;
}

/* Stores v in both copies, copy 0 first, so copy 0 is never below copy 1. */
static int counter_write(fota_posix_disk_t *d, uint32_t v)
{
    uint8_t buf[CTR_SIZE];
    memset(buf, 0, sizeof buf);
    memcpy(buf, "FOTC", 4);
    put16(buf + 4, 1);
    put32(buf + 8, v);
    put32(buf + 12, crc32_of(0, buf, 12));
    for (int i = 0; i < 2; i++) {
        const char *name = counter_name[i];
        if (replace_file(d, name, NULL, buf, sizeof buf, NULL, 0) < 0) {
            dlog(d, FOTA_LOG_ERROR, "store security counter %u in %s: %s", (unsigned)v, name, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* Makes the stored counter at least v; never lowers it, never writes over
 * a counter it cannot read. A readable but unhealthy record (a cut between
 * the copies, a damaged copy) is rewritten whole. */
static int counter_raise(fota_posix_disk_t *d, counter_state_t *st, uint32_t v)
{
    if (!st->readable) return 0; /* the device still boots; fota_init refuses updates */
    if (v <= st->value && st->healthy) return 0;
    uint32_t next = v > st->value ? v : st->value;
    if (counter_write(d, next) < 0) return -1;
    st->value = next;
    st->healthy = true;
    return 0;
}

static int p_raise(fota_posix_t *p, uint32_t v)
{
    counter_state_t st = {p->counter, p->counter_readable, p->counter_healthy};
    int rc = counter_raise(&p->disk, &st, v);
    p->counter = st.value;
    p->counter_readable = st.readable;
    p->counter_healthy = st.healthy;
    return rc;
}

/* ---- Setting up ------------------------------------------------------------------ */

static void disk_init(fota_posix_disk_t *d)
{
    memset(d, 0, sizeof *d);
    d->log_level = FOTA_LOG_INFO;
}

fota_err_t fota_posix_init(fota_posix_t *p, const char *state_dir)
{
    if (!p || !state_dir || !*state_dir) return FOTA_ERR_ARGUMENT;
    memset(p, 0, sizeof *p);
    disk_init(&p->disk);
    if (strlen(state_dir) >= sizeof p->disk.dir) {
        plog(p, FOTA_LOG_ERROR, "state folder path too long");
        return FOTA_ERR_ARGUMENT;
    }
    strcpy(p->disk.dir, state_dir);
    p->http.fd = -1;
    p->http.timeout_ms = FOTA_POSIX_DEFAULT_TIMEOUT_MS;
    p->slot_fd[0] = p->slot_fd[1] = -1;
    p->running = -1;
    p->max_boots = FOTA_POSIX_DEFAULT_MAX_BOOTS;
    /* Two processes on one device's files would interleave their writes:
     * the second is refused. The lock goes with the process, however it
     * ends. A folder that does not exist yet is left to the boot step to
     * report. */
    char path[sizeof p->disk.dir + 8];
    snprintf(path, sizeof path, "%s/lock", state_dir);
    p->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (p->lock_fd >= 0) {
        struct flock fl;
        memset(&fl, 0, sizeof fl);
        fl.l_type = F_WRLCK;
        fl.l_whence = SEEK_SET;
        if (fcntl(p->lock_fd, F_SETLK, &fl) < 0) {
            plog(p, FOTA_LOG_ERROR, "%s is in use by another process (%s); one process per device", state_dir,
                 strerror(errno));
            close(p->lock_fd);
            p->lock_fd = -1;
            return FOTA_ERR_STORAGE;
        }
    }
    return FOTA_OK;
}

static void http_close(fota_posix_http_t *h);

static void close_slots(fota_posix_t *p)
{
    for (int i = 0; i < 2; i++) {
        if (p->slot_fd[i] >= 0) close(p->slot_fd[i]);
        p->slot_fd[i] = -1;
    }
}

void fota_posix_close(fota_posix_t *p)
{
    if (!p) return;
    if (p->lock_fd >= 0) close(p->lock_fd);
    p->lock_fd = -1;
    http_close(&p->http);
    p->http.in_exchange = false;
    close_slots(p);
    p->running = -1;
}

void fota_posix_set_timeout(fota_posix_t *p, int timeout_ms)
{
    p->http.timeout_ms = timeout_ms > 0 ? timeout_ms : FOTA_POSIX_DEFAULT_TIMEOUT_MS;
}

void fota_posix_set_fault(fota_posix_t *p, uint64_t cut_at, fota_posix_cut_mode_t mode)
{
    p->disk.cut_at = cut_at;
    p->disk.cut_mode = mode;
}

void fota_posix_set_trace(fota_posix_t *p, bool trace) { p->disk.trace = trace; }
void fota_posix_set_clock_skew(fota_posix_t *p, int64_t seconds) { p->clock_skew = seconds; }
void fota_posix_set_log_level(fota_posix_t *p, fota_log_level_t level) { p->disk.log_level = (int)level; }
uint64_t fota_posix_ops(const fota_posix_t *p) { return p->disk.ops; }
int fota_posix_running_slot(const fota_posix_t *p) { return p->running; }

const fota_posix_image_t *fota_posix_running_image(const fota_posix_t *p)
{
    return p->running < 0 ? NULL : &p->bs.slots[p->running];
}

bool fota_posix_counter(const fota_posix_t *p, uint32_t *out)
{
    if (!p->counter_readable) return false;
    *out = p->counter;
    return true;
}

bool fota_posix_trial(const fota_posix_t *p)
{
    return p->running >= 0 && p->bs.slots[p->running].state == FOTA_POSIX_IMG_PENDING;
}

static const char *slot_name(int slot) { return slot ? "slot1.bin" : "slot0.bin"; }

static int open_slot(const fota_posix_disk_t *d, int slot)
{
    char path[PATH_CAP];
    if (!path_of(d, slot_name(slot), path, sizeof path)) return -1;
    return open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
}

static bool version_ok(const char *v)
{
    size_t n = v ? strnlen(v, FOTA_VERSION_MAX + 1) : 0;
    return n > 0 && n <= FOTA_VERSION_MAX;
}

/* mkdir that accepts an existing folder. */
static bool ensure_dir(const char *path)
{
    return mkdir(path, 0700) == 0 || errno == EEXIST;
}

fota_err_t fota_posix_format(const char *state_dir, uint32_t slot_size, const uint8_t *image, size_t len,
                             const char *version, uint32_t security_counter)
{
    fota_posix_disk_t d;
    disk_init(&d);
    if (!state_dir || !*state_dir || strlen(state_dir) >= sizeof d.dir || !image || len == 0 || slot_size == 0 ||
        !version_ok(version)) {
        dlog(&d, FOTA_LOG_ERROR, "format: bad arguments (state folder, image, slot size, version of 1-%d characters)",
             FOTA_VERSION_MAX);
        return FOTA_ERR_ARGUMENT;
    }
    strcpy(d.dir, state_dir);
    if (len > slot_size) {
        dlog(&d, FOTA_LOG_ERROR, "format: the factory image (%zu bytes) does not fit the slot (%u bytes)", len,
             (unsigned)slot_size);
        return FOTA_ERR_TOO_LARGE;
    }
    char kv[PATH_CAP];
    if (!ensure_dir(state_dir) || !path_of(&d, "kv", kv, sizeof kv) || !ensure_dir(kv)) {
        dlog(&d, FOTA_LOG_ERROR, "format: create %s: %s", state_dir, strerror(errno));
        return FOTA_ERR_STORAGE;
    }
    fota_posix_bootstate_t bs;
    int saved_level = d.log_level;
    d.log_level = -1; /* "not formatted" is what we hope to hear */
    fota_err_t err = bs_load(&d, &bs);
    d.log_level = saved_level;
    if (err == FOTA_OK) {
        dlog(&d, FOTA_LOG_ERROR, "format: %s is formatted already", state_dir);
        return FOTA_ERR_ARGUMENT;
    }

    memset(&bs, 0, sizeof bs);
    mbedtls_sha256_context sha;
    mbedtls_sha256_init(&sha);
    int rc = sha_starts(&sha);
    if (rc == 0) rc = sha_update(&sha, image, len);
    if (rc == 0) rc = sha_finish(&sha, bs.slots[0].sha256);
    mbedtls_sha256_free(&sha);
    if (rc != 0) return FOTA_ERR_CRYPTO;

    int fd[2] = {open_slot(&d, 0), open_slot(&d, 1)};
    bool ok = fd[0] >= 0 && fd[1] >= 0 && d_truncate(&d, fd[0], slot_name(0), 0) == 0 &&
              d_truncate(&d, fd[1], slot_name(1), 0) == 0 &&
              d_write(&d, fd[0], slot_name(0), image, len, NULL, 0, 0) == 0 && d_fsync(&d, fd[0], slot_name(0)) == 0;
    int e = errno;
    for (int i = 0; i < 2; i++)
        if (fd[i] >= 0) close(fd[i]);
    if (!ok) {
        dlog(&d, FOTA_LOG_ERROR, "format: write the factory image: %s", strerror(e));
        return FOTA_ERR_FLASH;
    }
    /* Before the boot state: once that is written the device counts as
     * formatted, and its counter must already cover the factory image. An
     * unreadable counter stays unreadable: restarting it from the factory
     * image could lower it. */
    counter_state_t cur = counter_read(&d);
    if (cur.readable && counter_raise(&d, &cur, security_counter) < 0) return FOTA_ERR_STORAGE;

    bs.slot_size = slot_size;
    bs.next = 0;
    bs.slots[0].state = FOTA_POSIX_IMG_VALID;
    bs.slots[0].security_counter = security_counter;
    bs.slots[0].size = (uint32_t)len;
    strcpy(bs.slots[0].version, version);
    bs.slots[1].state = FOTA_POSIX_IMG_EMPTY;
    /* Both copies from the start: damage to either is survivable before the
     * first update writes the second. */
    for (uint32_t seq = 0; seq < 2; seq++) {
        bs.seq = seq;
        if (bs_write(&d, &bs) < 0) {
            dlog(&d, FOTA_LOG_ERROR, "format: write the boot state: %s", strerror(errno));
            return FOTA_ERR_STORAGE;
        }
    }
    return FOTA_OK;
}

/* ---- The boot step ------------------------------------------------------------------ */

/* Whether a slot holds img: its size fits and its SHA-256 matches. Uses
 * the socket read buffer as scratch (no exchange runs at boot). */
static bool verify_slot(fota_posix_t *p, int slot, const fota_posix_image_t *img)
{
    if (img->size == 0 || img->size > p->bs.slot_size || p->slot_fd[slot] < 0) return false;
    mbedtls_sha256_context sha;
    mbedtls_sha256_init(&sha);
    bool ok = sha_starts(&sha) == 0;
    uint64_t off = 0;
    while (ok && off < img->size) {
        size_t want = sizeof p->http.rbuf;
        if (img->size - off < want) want = (size_t)(img->size - off);
        size_t got = 0;
        ok = pread_full(p->slot_fd[slot], p->http.rbuf, want, off, &got) == 0 && got == want &&
             sha_update(&sha, p->http.rbuf, got) == 0;
        off += want;
    }
    uint8_t sum[32];
    ok = ok && sha_finish(&sha, sum) == 0 && memcmp(sum, img->sha256, 32) == 0;
    mbedtls_sha256_free(&sha);
    p->http.rpos = p->http.rlen = 0;
    return ok;
}

static void set_rollback(fota_posix_bootstate_t *bs, const char *version, const char *reason)
{
    bs->has_rollback = true;
    copy_text(bs->rollback_version, sizeof bs->rollback_version, version);
    copy_text(bs->rollback_reason, sizeof bs->rollback_reason, reason);
}

fota_err_t fota_posix_boot(fota_posix_t *p, int max_boots)
{
    /* A reboot drops the connection and rereads everything from disk. */
    http_close(&p->http);
    p->http.in_exchange = false;
    close_slots(p);
    p->running = -1;
    p->max_boots = max_boots > 0 ? max_boots : FOTA_POSIX_DEFAULT_MAX_BOOTS;

    fota_err_t err = bs_load(&p->disk, &p->bs);
    if (err != FOTA_OK) return err;
    counter_state_t ctr = counter_read(&p->disk);
    p->counter = ctr.value;
    p->counter_readable = ctr.readable;
    p->counter_healthy = ctr.healthy;
    for (int i = 0; i < 2; i++) {
        p->slot_fd[i] = open_slot(&p->disk, i);
        if (p->slot_fd[i] < 0) {
            plog(p, FOTA_LOG_ERROR, "open %s: %s", slot_name(i), strerror(errno));
            close_slots(p);
            return FOTA_ERR_STORAGE;
        }
    }

    fota_posix_bootstate_t bs = p->bs;
    const int order[2] = {bs.next, 1 - bs.next};
    for (int i = 0; i < 2; i++) {
        int slot = order[i];
        fota_posix_image_t *st = &bs.slots[slot];
        switch (st->state) {
        case FOTA_POSIX_IMG_VALID:
            if (!verify_slot(p, slot, st)) {
                plog(p, FOTA_LOG_ERROR, "boot: valid image %s in %s is damaged", st->version, slot_name(slot));
                st->state = FOTA_POSIX_IMG_ABORTED;
                set_rollback(&bs, st->version, "valid image found damaged at boot");
                continue;
            }
            bs.next = (uint8_t)slot;
            bs.attempts = 0;
            if (!bs_save(p, &bs)) return FOTA_ERR_STORAGE;
            /* As ESP-IDF's bootloader burns the secure_version of a valid
             * app it boots: this finishes a confirm cut between marking the
             * image valid and raising the counter, and repairs a damaged
             * copy. */
            if (p_raise(p, st->security_counter) < 0) return FOTA_ERR_STORAGE;
            p->running = slot;
            plog(p, FOTA_LOG_INFO, "boot: %s from %s", st->version, slot_name(slot));
            return FOTA_OK;
        case FOTA_POSIX_IMG_NEW:
        case FOTA_POSIX_IMG_PENDING:
            if (i > 0) continue; /* only the slot chosen to boot next is ever on trial */
            if (st->state == FOTA_POSIX_IMG_NEW) bs.attempts = 0;
            bs.attempts++;
            if (bs.attempts > p->max_boots) {
                char reason[64];
                snprintf(reason, sizeof reason, "not confirmed within %d boots", p->max_boots);
                plog(p, FOTA_LOG_WARN, "boot: %s %s: rolling back", st->version, reason);
                st->state = FOTA_POSIX_IMG_INVALID;
                set_rollback(&bs, st->version, reason);
                bs.attempts = 0;
                continue;
            }
            if (!verify_slot(p, slot, st)) {
                plog(p, FOTA_LOG_ERROR, "boot: new image %s in %s is damaged", st->version, slot_name(slot));
                st->state = FOTA_POSIX_IMG_ABORTED;
                set_rollback(&bs, st->version, "new image found damaged at boot");
                bs.attempts = 0;
                continue;
            }
            st->state = FOTA_POSIX_IMG_PENDING;
            bs.next = (uint8_t)slot;
            if (!bs_save(p, &bs)) return FOTA_ERR_STORAGE;
            p->running = slot;
            plog(p, FOTA_LOG_INFO, "boot: %s from %s on trial (boot %u of %d)", st->version, slot_name(slot),
                 (unsigned)bs.attempts, p->max_boots);
            return FOTA_OK;
        default:
            break;
        }
    }
    plog(p, FOTA_LOG_ERROR, "boot: no bootable image: slot 0 is %s, slot 1 is %s",
         fota_posix_state_str(bs.slots[0].state), fota_posix_state_str(bs.slots[1].state));
    return FOTA_POSIX_ERR_NO_BOOTABLE;
}

fota_err_t fota_posix_read_running(fota_posix_t *p, uint32_t off, uint8_t *buf, size_t len)
{
    if (p->running < 0) return FOTA_ERR_ARGUMENT;
    size_t got = 0;
    if (pread_full(p->slot_fd[p->running], buf, len, off, &got) < 0) return FOTA_ERR_FLASH;
    memset(buf + got, 0xFF, len - got); /* erased flash */
    return FOTA_OK;
}

/* ---- The port: boot state and slots --------------------------------------------------- */

static fota_err_t port_boot_info(void *ctx, fota_boot_info_t *out)
{
    fota_posix_t *p = ctx;
    if (p->running < 0) {
        plog(p, FOTA_LOG_ERROR, "boot_info before fota_posix_boot");
        return FOTA_ERR_ARGUMENT;
    }
    if (!p->counter_readable) {
        plog(p, FOTA_LOG_ERROR, "the security counter is unreadable: no update can be judged against it");
        return FOTA_ERR_STORAGE;
    }
    const fota_posix_image_t *img = &p->bs.slots[p->running];
    memset(out, 0, sizeof *out);
    copy_text(out->running_version, sizeof out->running_version, img->version);
    out->security_counter = p->counter;
    out->slot_size = p->bs.slot_size;
    out->trial = img->state == FOTA_POSIX_IMG_PENDING;
    if (p->bs.has_rollback) {
        copy_text(out->rolled_back_version, sizeof out->rolled_back_version, p->bs.rollback_version);
        copy_text(out->rollback_reason, sizeof out->rollback_reason, p->bs.rollback_reason);
    }
#if FOTA_DELTA
    /* The boot state records every image's size and SHA-256, and the boot
     * step checked the running one against them before it ran. */
    out->running_known = img->size > 0;
    out->running_size = img->size;
    memcpy(out->running_sha256, img->sha256, sizeof out->running_sha256);
#endif
    return FOTA_OK;
}

#if FOTA_DELTA
static fota_err_t port_running_read(void *ctx, uint32_t off, uint8_t *data, size_t len)
{
    fota_posix_t *p = ctx;
    const fota_posix_image_t *img = fota_posix_running_image(p);
    /* Only the running image: the library asks for nothing past it. */
    if (!img || off > img->size || len > img->size - off) return FOTA_ERR_ARGUMENT;
    return fota_posix_read_running(p, off, data, len);
}
#endif

static fota_err_t port_boot_ack_rollback(void *ctx)
{
    fota_posix_t *p = ctx;
    if (p->running < 0) return FOTA_ERR_ARGUMENT;
    if (!p->bs.has_rollback) return FOTA_OK;
    fota_posix_bootstate_t bs = p->bs;
    bs.has_rollback = false;
    bs.rollback_version[0] = bs.rollback_reason[0] = 0;
    return bs_save(p, &bs) ? FOTA_OK : FOTA_ERR_STORAGE;
}

/* The slot an update goes to, or -1 (logged) before the boot step. */
static int inactive_slot(fota_posix_t *p)
{
    if (p->running < 0) {
        plog(p, FOTA_LOG_ERROR, "slot used before fota_posix_boot");
        return -1;
    }
    return 1 - p->running;
}

/* Empties the inactive slot. The boot state says "empty" before the
 * content is touched, so a cut mid-erase never leaves a bootable half
 * image. */
static fota_err_t port_slot_begin(void *ctx, uint32_t size)
{
    fota_posix_t *p = ctx;
    int s = inactive_slot(p);
    if (s < 0) return FOTA_ERR_ARGUMENT;
    /* As ESP-IDF's esp_ota_begin refuses to while the running app is
     * pending verify: the other slot is the trial's only way back. */
    if (fota_posix_trial(p)) {
        plog(p, FOTA_LOG_ERROR, "slot_begin while the running image is on trial");
        return FOTA_ERR_ON_TRIAL;
    }
    if (size > p->bs.slot_size) {
        plog(p, FOTA_LOG_ERROR, "an image of %u bytes does not fit the slot (%u bytes)", (unsigned)size,
             (unsigned)p->bs.slot_size);
        return FOTA_ERR_TOO_LARGE;
    }
    if (p->bs.slots[s].state != FOTA_POSIX_IMG_EMPTY || p->bs.next == s) {
        fota_posix_bootstate_t bs = p->bs;
        memset(&bs.slots[s], 0, sizeof bs.slots[s]);
        bs.next = (uint8_t)p->running;
        if (!bs_save(p, &bs)) return FOTA_ERR_FLASH;
    }
    if (d_truncate(&p->disk, p->slot_fd[s], slot_name(s), 0) < 0) {
        plog(p, FOTA_LOG_ERROR, "erase %s: %s", slot_name(s), strerror(errno));
        return FOTA_ERR_FLASH;
    }
    return FOTA_OK;
}

static fota_err_t port_slot_write(void *ctx, uint32_t off, const uint8_t *data, size_t len)
{
    fota_posix_t *p = ctx;
    int s = inactive_slot(p);
    if (s < 0) return FOTA_ERR_ARGUMENT;
    if (p->bs.slots[s].state != FOTA_POSIX_IMG_EMPTY) {
        plog(p, FOTA_LOG_ERROR, "%s holds a %s image; slot_begin first", slot_name(s),
             fota_posix_state_str(p->bs.slots[s].state));
        return FOTA_ERR_FLASH;
    }
    if ((uint64_t)off + len > p->bs.slot_size) {
        plog(p, FOTA_LOG_ERROR, "write at %u+%zu: past the slot's %u bytes", (unsigned)off, len,
             (unsigned)p->bs.slot_size);
        return FOTA_ERR_TOO_LARGE;
    }
    if (d_write(&p->disk, p->slot_fd[s], slot_name(s), data, len, NULL, 0, off) < 0) {
        plog(p, FOTA_LOG_ERROR, "write %s: %s", slot_name(s), strerror(errno));
        return FOTA_ERR_FLASH;
    }
    return FOTA_OK;
}

static fota_err_t port_slot_read(void *ctx, uint32_t off, uint8_t *data, size_t len)
{
    fota_posix_t *p = ctx;
    int s = inactive_slot(p);
    if (s < 0) return FOTA_ERR_ARGUMENT;
    if ((uint64_t)off + len > p->bs.slot_size) return FOTA_ERR_FLASH;
    size_t got = 0;
    if (pread_full(p->slot_fd[s], data, len, off, &got) < 0) {
        plog(p, FOTA_LOG_ERROR, "read %s: %s", slot_name(s), strerror(errno));
        return FOTA_ERR_FLASH;
    }
    memset(data + got, 0xFF, len - got); /* never written: reads as erased flash */
    return FOTA_OK;
}

static fota_err_t port_slot_sync(void *ctx)
{
    fota_posix_t *p = ctx;
    int s = inactive_slot(p);
    if (s < 0) return FOTA_ERR_ARGUMENT;
    if (d_fsync(&p->disk, p->slot_fd[s], slot_name(s)) < 0) {
        plog(p, FOTA_LOG_ERROR, "sync %s: %s", slot_name(s), strerror(errno));
        return FOTA_ERR_FLASH;
    }
    return FOTA_OK;
}

static fota_err_t port_slot_set_pending(void *ctx, const char *version, uint32_t security_counter, uint32_t size,
                                        const uint8_t sha256[32])
{
    fota_posix_t *p = ctx;
    int s = inactive_slot(p);
    if (s < 0) return FOTA_ERR_ARGUMENT;
    if (!version_ok(version)) return FOTA_ERR_ARGUMENT;
    if (p->bs.slots[s].state != FOTA_POSIX_IMG_EMPTY) {
        plog(p, FOTA_LOG_ERROR, "%s holds a %s image, not a fresh write", slot_name(s),
             fota_posix_state_str(p->bs.slots[s].state));
        return FOTA_ERR_FLASH;
    }
    if (size == 0 || size > p->bs.slot_size) return FOTA_ERR_TOO_LARGE;
    fota_posix_bootstate_t bs = p->bs;
    fota_posix_image_t *img = &bs.slots[s];
    img->state = FOTA_POSIX_IMG_NEW;
    img->security_counter = security_counter;
    img->size = size;
    memcpy(img->sha256, sha256, 32);
    strcpy(img->version, version);
    bs.next = (uint8_t)s;
    bs.attempts = 0;
    return bs_save(p, &bs) ? FOTA_OK : FOTA_ERR_FLASH;
}

static fota_err_t port_boot_confirm(void *ctx)
{
    fota_posix_t *p = ctx;
    if (!fota_posix_trial(p)) return FOTA_ERR_NOT_ON_TRIAL;
    fota_posix_bootstate_t bs = p->bs;
    fota_posix_image_t *img = &bs.slots[p->running];
    img->state = FOTA_POSIX_IMG_VALID;
    bs.attempts = 0;
    /* Valid first, counter second: a cut in between leaves a valid image
     * whose counter the next boot raises, never a counter raised for an
     * image that may still roll back. */
    if (!bs_save(p, &bs)) return FOTA_ERR_FLASH;
    if (p_raise(p, img->security_counter) < 0) {
        plog(p, FOTA_LOG_ERROR, "image confirmed, but its security counter is not stored yet (the next boot stores it)");
        return FOTA_ERR_STORAGE;
    }
    return FOTA_OK;
}

static fota_err_t port_boot_reject(void *ctx, const char *reason)
{
    fota_posix_t *p = ctx;
    if (!fota_posix_trial(p)) return FOTA_ERR_NOT_ON_TRIAL;
    fota_posix_bootstate_t bs = p->bs;
    fota_posix_image_t *img = &bs.slots[p->running];
    img->state = FOTA_POSIX_IMG_INVALID;
    set_rollback(&bs, img->version, reason && *reason ? reason : "rejected");
    bs.next = (uint8_t)(1 - p->running);
    bs.attempts = 0;
    return bs_save(p, &bs) ? FOTA_OK : FOTA_ERR_FLASH;
}

/* ---- The port: key-value records ------------------------------------------------------- */

/* Keys become file names: only characters that are safe in one, no
 * leading dot ("." and ".."), and no ".tmp" ending, which would be another
 * record's temporary file. */
static bool kv_name(fota_posix_t *p, const char *key, char *out, size_t cap)
{
    size_t n = key ? strnlen(key, FOTA_POSIX_KEY_MAX + 1) : 0;
    bool ok = n > 0 && n <= FOTA_POSIX_KEY_MAX && key[0] != '.' && !(n >= 4 && memcmp(key + n - 4, ".tmp", 4) == 0);
    for (size_t i = 0; ok && i < n; i++) {
        char c = key[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
             c == '.';
    }
    if (!ok) {
        plog(p, FOTA_LOG_ERROR, "key-value key %.*s: use 1-%d of A-Z a-z 0-9 _ - . (no leading dot, no .tmp end)",
             (int)n, key ? key : "", FOTA_POSIX_KEY_MAX);
        return false;
    }
    snprintf(out, cap, "kv/%s", key);
    return true;
}

static fota_err_t port_kv_get(void *ctx, const char *key, uint8_t *buf, size_t cap, size_t *len)
{
    fota_posix_t *p = ctx;
    char name[FOTA_POSIX_KEY_MAX + 8], path[PATH_CAP];
    if (!kv_name(p, key, name, sizeof name)) return FOTA_ERR_ARGUMENT;
    if (!path_of(&p->disk, name, path, sizeof path)) return FOTA_ERR_STORAGE;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return FOTA_ERR_NOT_FOUND;
        plog(p, FOTA_LOG_ERROR, "read %s: %s", name, strerror(errno));
        return FOTA_ERR_STORAGE;
    }
    struct stat st;
    fota_err_t err = FOTA_OK;
    if (fstat(fd, &st) < 0) {
        err = FOTA_ERR_STORAGE;
    } else if (st.st_size < 4) {
        err = FOTA_ERR_NOT_FOUND;
    } else {
        size_t vlen = (size_t)st.st_size - 4, got = 0, got_crc = 0;
        uint8_t crc[4];
        if (vlen > cap) {
            if (len) *len = vlen;
            close(fd);
            return FOTA_ERR_BUFFER;
        }
        if (pread_full(fd, buf, vlen, 0, &got) < 0 || pread_full(fd, crc, 4, vlen, &got_crc) < 0)
            err = FOTA_ERR_STORAGE;
        else if (got != vlen || got_crc != 4 || get32(crc) != crc32_of(0, buf, vlen))
            err = FOTA_ERR_NOT_FOUND;
        else if (len)
            *len = vlen;
    }
    close(fd);
    if (err == FOTA_ERR_NOT_FOUND) plog(p, FOTA_LOG_WARN, "record %s is damaged: read as absent", name);
    if (err == FOTA_ERR_STORAGE) plog(p, FOTA_LOG_ERROR, "read %s: %s", name, strerror(errno));
    return err;
}

static fota_err_t port_kv_set(void *ctx, const char *key, const uint8_t *val, size_t len)
{
    fota_posix_t *p = ctx;
    char name[FOTA_POSIX_KEY_MAX + 8];
    if (!kv_name(p, key, name, sizeof name)) return FOTA_ERR_ARGUMENT;
    uint8_t crc[4];
    put32(crc, crc32_of(0, val, len));
    if (replace_file(&p->disk, name, "kv", val, len, crc, 4) < 0) {
        plog(p, FOTA_LOG_ERROR, "store %s: %s", name, strerror(errno));
        return FOTA_ERR_STORAGE;
    }
    return FOTA_OK;
}

static fota_err_t port_kv_delete(void *ctx, const char *key)
{
    fota_posix_t *p = ctx;
    char name[FOTA_POSIX_KEY_MAX + 8];
    if (!kv_name(p, key, name, sizeof name)) return FOTA_ERR_ARGUMENT;
    if (d_unlink(&p->disk, name) < 0 || d_syncdir(&p->disk, "kv") < 0) {
        plog(p, FOTA_LOG_ERROR, "remove %s: %s", name, strerror(errno));
        return FOTA_ERR_STORAGE;
    }
    return FOTA_OK;
}

/* ---- HTTP/1.1 ------------------------------------------------------------------------------- */

/* Plain HTTP only. TLS is future work (mbedtls's ssl module would do); the
 * protocol does not depend on it: manifests are signed, payloads
 * encrypted, chunks and requests MACed. */

enum { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_CLOSE };
enum { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER, CH_DONE };

static void http_close(fota_posix_http_t *h)
{
    if (h->fd >= 0) close(h->fd);
    h->fd = -1;
    h->reused = false;
    h->rpos = h->rlen = 0;
}

/* Whether s starts with the lowercase prefix, in any case (URL schemes). */
static bool prefix_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++)
        if (ascii_lower((unsigned char)*s) != *prefix) return false;
    return true;
}

fota_err_t fota_posix_set_server(fota_posix_t *p, const char *url)
{
    fota_posix_http_t *h = &p->http;
    if (!url) return FOTA_ERR_ARGUMENT;
    if (prefix_ci(url, "https://")) {
        plog(p, FOTA_LOG_ERROR,
             "server %s: the POSIX port speaks plain HTTP only; use http:// (manifests are signed and payloads "
             "encrypted and MACed either way) or put a TLS proxy in front",
             url);
        return FOTA_ERR_ARGUMENT;
    }
    if (!prefix_ci(url, "http://")) {
        plog(p, FOTA_LOG_ERROR, "server URL %s: want http://host[:port][/prefix]", url);
        return FOTA_ERR_ARGUMENT;
    }
    const char *a = url + 7;
    size_t alen = strcspn(a, "/?#");
    if (alen == 0 || alen >= sizeof h->authority || memchr(a, '@', alen)) {
        plog(p, FOTA_LOG_ERROR, "server URL %s: bad host", url);
        return FOTA_ERR_ARGUMENT;
    }
    const char *host = a, *port = NULL;
    size_t hlen;
    bool ok = true;
    if (a[0] == '[') { /* an IPv6 literal */
        const char *close_br = memchr(a, ']', alen);
        host = a + 1;
        hlen = close_br ? (size_t)(close_br - host) : 0;
        if (close_br && close_br + 1 < a + alen) {
            ok = close_br[1] == ':';
            port = close_br + 2;
        }
    } else {
        const char *colon = memchr(a, ':', alen);
        hlen = colon ? (size_t)(colon - a) : alen;
        if (colon) port = colon + 1;
    }
    size_t plen = port ? (size_t)(a + alen - port) : 0;
    unsigned long pn = 0;
    for (size_t i = 0; ok && i < plen; i++) {
        ok = port[i] >= '0' && port[i] <= '9';
        pn = pn * 10 + (unsigned long)(port[i] - '0');
        ok = ok && pn <= 65535;
    }
    if (!ok || hlen == 0 || hlen >= sizeof h->host || (port && (plen == 0 || pn == 0))) {
        plog(p, FOTA_LOG_ERROR, "server URL %s: bad host or port", url);
        return FOTA_ERR_ARGUMENT;
    }
    http_close(h);
    memcpy(h->host, host, hlen);
    h->host[hlen] = 0;
    snprintf(h->port, sizeof h->port, "%u", (unsigned)(uint16_t)(port ? pn : 80ul));
    memcpy(h->authority, a, alen);
    h->authority[alen] = 0;
    return FOTA_OK;
}

static bool http_connect(fota_posix_t *p)
{
    fota_posix_http_t *h = &p->http;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(h->host, h->port, &hints, &res);
    if (rc != 0) {
        plog(p, FOTA_LOG_WARN, "resolve %s: %s", h->host, gai_strerror(rc));
        return false;
    }
    int err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
        struct timeval tv;
        tv.tv_sec = h->timeout_ms / 1000;
        tv.tv_usec = (h->timeout_ms % 1000) * 1000;
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* Linux: bounds connect too */
        /* Requests go out as one write, and a frame header must not wait
         * for Nagle. */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef SO_NOSIGPIPE
        (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            freeaddrinfo(res);
            h->fd = fd;
            h->reused = false;
            h->rpos = h->rlen = 0;
            return true;
        }
        err = errno;
        close(fd);
    }
    freeaddrinfo(res);
    plog(p, FOTA_LOG_WARN, "connect %s: %s", h->authority, strerror(err));
    return false;
}

static bool send_all(int fd, struct iovec *iov, int cnt)
{
    while (cnt > 0) {
        if (iov->iov_len == 0) {
            iov++, cnt--;
            continue;
        }
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = iov;
        m.msg_iovlen = (size_t)cnt;
        ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        while (n > 0 && cnt > 0) {
            size_t step = (size_t)n < iov->iov_len ? (size_t)n : iov->iov_len;
            iov->iov_base = (uint8_t *)iov->iov_base + step;
            iov->iov_len -= step;
            n -= (ssize_t)step;
            if (iov->iov_len == 0) iov++, cnt--;
        }
    }
    return true;
}

/* Reads more bytes into the buffer: >0 read, 0 end of stream, -1 error. */
static ssize_t fill(fota_posix_http_t *h)
{
    if (h->rpos == h->rlen) h->rpos = h->rlen = 0;
    if (h->rlen == sizeof h->rbuf) {
        memmove(h->rbuf, h->rbuf + h->rpos, h->rlen - h->rpos);
        h->rlen -= h->rpos;
        h->rpos = 0;
    }
    for (;;) {
        ssize_t n = recv(h->fd, h->rbuf + h->rlen, sizeof h->rbuf - h->rlen, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n > 0) h->rlen += (size_t)n;
        return n;
    }
}

enum { HEAD_OK, HEAD_EMPTY_EOF, HEAD_NETWORK, HEAD_TOO_BIG };

/* Reads up to the end of an answer's head; *end is its length. An answer
 * starts at rpos (bytes the last exchange left are moved to the front). */
static int read_head(fota_posix_http_t *h, size_t *end)
{
    memmove(h->rbuf, h->rbuf + h->rpos, h->rlen - h->rpos);
    h->rlen -= h->rpos;
    h->rpos = 0;
    size_t scan = 0;
    for (;;) {
        for (size_t i = scan; i + 4 <= h->rlen; i++) {
            if (memcmp(h->rbuf + i, "\r\n\r\n", 4) == 0) {
                *end = i + 4;
                return *end <= FOTA_POSIX_HEAD_MAX ? HEAD_OK : HEAD_TOO_BIG;
            }
        }
        if (h->rlen >= FOTA_POSIX_HEAD_MAX) return HEAD_TOO_BIG;
        scan = h->rlen > 3 ? h->rlen - 3 : 0;
        size_t before = h->rlen;
        ssize_t n = fill(h);
        if (n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE)))
            return before == 0 ? HEAD_EMPTY_EOF : HEAD_NETWORK;
        if (n < 0) return HEAD_NETWORK;
    }
}

static void trim(char **s, char **e)
{
    while (*s < *e && (**s == ' ' || **s == '\t')) (*s)++;
    while (*e > *s && ((*e)[-1] == ' ' || (*e)[-1] == '\t' || (*e)[-1] == '\r')) (*e)--;
}

/* Whether the comma-separated list v holds token tok (any case). */
static bool has_token(const char *v, const char *tok)
{
    size_t tl = strlen(tok);
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',') v++;
        size_t n = strcspn(v, ",");
        size_t m = n;
        while (m > 0 && (v[m - 1] == ' ' || v[m - 1] == '\t')) m--;
        if (m == tl) {
            size_t i = 0;
            while (i < m && ascii_lower((unsigned char)v[i]) == ascii_lower((unsigned char)tok[i])) i++;
            if (i == m) return true;
        }
        v += n;
    }
    return false;
}

static bool parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s) return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return false;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > max) return false;
    }
    *out = v;
    return true;
}

/* Parses the head (len bytes at rbuf, ending in an empty line) into resp
 * and the body framing. NULs are written into the head in place. */
static fota_err_t parse_head(fota_posix_t *p, size_t len, bool no_body_method, fota_http_response_t *resp)
{
    fota_posix_http_t *h = &p->http;
    char *s = (char *)h->rbuf, *end = s + len - 2; /* the empty line's CRLF dropped */
    char *eol = memchr(s, '\n', (size_t)(end - s));
    if (!eol || eol - s < 12 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') || s[8] != ' ' ||
        s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9' ||
        (s[12] != ' ' && s[12] != '\r')) {
        plog(p, FOTA_LOG_WARN, "http: malformed status line");
        return FOTA_ERR_PROTOCOL;
    }
    memset(resp, 0, sizeof *resp);
    resp->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    bool http10 = s[7] == '0', keep_alive = false, chunked = false, have_length = false;
    uint64_t length = 0;
    const char *retry_date = NULL;
    h->close_after = false;
    for (s = eol + 1; s < end; s = eol + 1) {
        eol = memchr(s, '\n', (size_t)(end - s));
        if (!eol) eol = end;
        char *colon = memchr(s, ':', (size_t)(eol - s));
        if (!colon || colon == s || *s == ' ' || *s == '\t') {
            plog(p, FOTA_LOG_WARN, "http: malformed header line");
            return FOTA_ERR_PROTOCOL;
        }
        char *ns = s, *ne = colon, *vs = colon + 1, *ve = eol;
        trim(&vs, &ve);
        *ne = 0;
        *ve = 0;
        if (ascii_eq(ns, "content-length")) {
            uint64_t v;
            if (!parse_uint(vs, (uint64_t)1 << 62, &v) || (have_length && v != length)) {
                plog(p, FOTA_LOG_WARN, "http: bad Content-Length");
                return FOTA_ERR_PROTOCOL;
            }
            length = v;
            have_length = true;
        } else if (ascii_eq(ns, "transfer-encoding")) {
            if (!ascii_eq(vs, "chunked")) { /* gzip and friends were never asked for */
                plog(p, FOTA_LOG_WARN, "http: unsupported Transfer-Encoding %s", vs);
                return FOTA_ERR_PROTOCOL;
            }
            chunked = true;
        } else if (ascii_eq(ns, "connection")) {
            if (has_token(vs, "close")) h->close_after = true;
            if (has_token(vs, "keep-alive")) keep_alive = true;
        } else if (ascii_eq(ns, "date")) {
            resp->date = fota_parse_http_date(vs);
        } else if (ascii_eq(ns, "retry-after")) {
            uint64_t v;
            if (parse_uint(vs, UINT32_MAX, &v))
                resp->retry_after = (uint32_t)v;
            else
                retry_date = vs; /* an HTTP-date: needs Date, which may come later */
        }
    }
    if (retry_date && resp->date > 0) {
        int64_t at = fota_parse_http_date(retry_date);
        if (at > resp->date) resp->retry_after = (uint32_t)(at - resp->date);
    }
    if (http10 && !keep_alive) h->close_after = true;

    h->body_done = false;
    h->body_left = 0;
    h->chunk_state = CH_SIZE;
    if (no_body_method || resp->status == 204 || resp->status == 304 || resp->status < 200) {
        h->body_mode = BODY_NONE;
        h->body_done = true;
        resp->content_length = 0;
    } else if (chunked) {
        h->body_mode = BODY_CHUNKED;
        resp->content_length = -1;
    } else if (have_length) {
        h->body_mode = BODY_LENGTH;
        h->body_left = length;
        h->body_done = length == 0;
        resp->content_length = (int64_t)length;
    } else {
        h->body_mode = BODY_CLOSE; /* the body ends with the connection */
        h->close_after = true;
        resp->content_length = -1;
    }
    return FOTA_OK;
}

static fota_err_t port_http_begin(void *ctx, const char *method, const char *uri, const char *headers,
                                  const uint8_t *body, size_t body_len, fota_http_response_t *resp)
{
    fota_posix_t *p = ctx;
    fota_posix_http_t *h = &p->http;
    if (h->in_exchange) { /* the last one was never ended: its body is unread */
        http_close(h);
        h->in_exchange = false;
    }
    if (!method || !uri || !resp || (body_len > 0 && !body) || !h->host[0] || uri[0] != '/' ||
        strpbrk(uri, " \r\n") || strpbrk(method, " \r\n/")) {
        plog(p, FOTA_LOG_ERROR, "http_begin: bad request (or no server set)");
        return FOTA_ERR_ARGUMENT;
    }
    char length[48] = "";
    bool has_body_method = strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0;
    if (body_len > 0 || has_body_method) snprintf(length, sizeof length, "Content-Length: %zu\r\n", body_len);
    int n = snprintf(h->head, sizeof h->head, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: fota-c/%s posix\r\n%s",
                     method, uri, h->authority, FOTA_CLIENT_VERSION, length);
    if (n < 0 || (size_t)n >= sizeof h->head) {
        plog(p, FOTA_LOG_ERROR, "http_begin: request URI too long");
        return FOTA_ERR_ARGUMENT;
    }
    const char *extra = headers ? headers : "";
    static const char tail[] = "Connection: keep-alive\r\n\r\n";

    for (int attempt = 0;; attempt++) {
        bool fresh = h->fd < 0;
        if (fresh && !http_connect(p)) return FOTA_ERR_NETWORK;
        /* A kept connection the server closed in the meantime fails at
         * the send or reads EOF before the first status byte: reconnect
         * once and send again. */
        bool may_retry = !fresh && h->reused && attempt == 0;
        struct iovec iov[4];
        iov[0].iov_base = h->head;
        iov[0].iov_len = (size_t)n;
        iov[1].iov_base = (void *)extra;
        iov[1].iov_len = strlen(extra);
        iov[2].iov_base = (void *)tail;
        iov[2].iov_len = sizeof tail - 1;
        iov[3].iov_base = (void *)body;
        iov[3].iov_len = body_len;
        if (!send_all(h->fd, iov, 4)) {
            int e = errno;
            http_close(h);
            if (may_retry) continue;
            plog(p, FOTA_LOG_WARN, "http: send %s %s: %s", method, uri, strerror(e));
            return FOTA_ERR_NETWORK;
        }
        size_t head_len = 0;
        int rc = read_head(h, &head_len);
        if (rc == HEAD_EMPTY_EOF && may_retry) {
            http_close(h);
            continue;
        }
        if (rc != HEAD_OK) {
            int e = errno;
            http_close(h);
            if (rc == HEAD_TOO_BIG) {
                plog(p, FOTA_LOG_WARN, "http: %s %s: answer head over %d bytes", method, uri, FOTA_POSIX_HEAD_MAX);
                return FOTA_ERR_PROTOCOL;
            }
            plog(p, FOTA_LOG_WARN, "http: %s %s: no answer (%s)", method, uri,
                 rc == HEAD_EMPTY_EOF ? "connection closed" : strerror(e));
            return FOTA_ERR_NETWORK;
        }
        fota_err_t err = parse_head(p, head_len, strcmp(method, "HEAD") == 0, resp);
        if (err != FOTA_OK) {
            http_close(h);
            return err;
        }
        h->rpos = head_len;
        if (resp->status >= 100 && resp->status < 200) {
            if (resp->status == 101) { /* nobody asked to switch protocols */
                http_close(h);
                return FOTA_ERR_PROTOCOL;
            }
            for (;;) { /* an interim answer: the real one follows on this connection */
                rc = read_head(h, &head_len);
                if (rc != HEAD_OK) {
                    http_close(h);
                    return rc == HEAD_TOO_BIG ? FOTA_ERR_PROTOCOL : FOTA_ERR_NETWORK;
                }
                if ((err = parse_head(p, head_len, strcmp(method, "HEAD") == 0, resp)) != FOTA_OK) {
                    http_close(h);
                    return err;
                }
                h->rpos = head_len;
                if (resp->status >= 200) break;
            }
        }
        break;
    }
    h->in_exchange = true;
    plog(p, FOTA_LOG_DEBUG, "http: %s %s -> %d (length %lld)", method, uri, resp->status,
         (long long)resp->content_length);
    return FOTA_OK;
}

/* Takes up to n body bytes from the buffer, reading when it is empty:
 * >0 taken, 0 end of stream, -1 error. */
static ssize_t take(fota_posix_http_t *h, uint8_t *buf, size_t n)
{
    if (h->rpos == h->rlen) {
        if (n >= sizeof h->rbuf) { /* a large read needs no copy */
            ssize_t r;
            do r = recv(h->fd, buf, n, 0);
            while (r < 0 && errno == EINTR);
            return r;
        }
        ssize_t r = fill(h);
        if (r <= 0) return r;
    }
    size_t avail = h->rlen - h->rpos;
    if (n > avail) n = avail;
    memcpy(buf, h->rbuf + h->rpos, n);
    h->rpos += n;
    return (ssize_t)n;
}

/* Reads a line (CRLF or LF) of at most cap-1 characters into out. */
static int read_line(fota_posix_http_t *h, char *out, size_t cap)
{
    size_t n = 0;
    for (;;) {
        if (h->rpos == h->rlen && fill(h) <= 0) return -1;
        char c = (char)h->rbuf[h->rpos++];
        if (c == '\n') {
            if (n > 0 && out[n - 1] == '\r') n--;
            out[n] = 0;
            return (int)n;
        }
        if (n + 1 >= cap) return -1;
        out[n++] = c;
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = (char)ascii_lower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int32_t http_fail(fota_posix_t *p, const char *why)
{
    plog(p, FOTA_LOG_WARN, "http: body: %s", why);
    http_close(&p->http);
    return -1;
}

static int32_t port_http_read(void *ctx, uint8_t *buf, size_t len)
{
    fota_posix_t *p = ctx;
    fota_posix_http_t *h = &p->http;
    if (!h->in_exchange) return -1;
    if (h->body_done) return 0;
    if (h->fd < 0) return -1;
    if (len > INT32_MAX) len = INT32_MAX;
    if (len == 0) return 0;
    ssize_t n;
    switch (h->body_mode) {
    case BODY_LENGTH:
        if (len > h->body_left) len = (size_t)h->body_left;
        n = take(h, buf, len);
        if (n <= 0) return http_fail(p, n == 0 ? "connection closed before the end" : strerror(errno));
        h->body_left -= (uint64_t)n;
        h->body_done = h->body_left == 0;
        return (int32_t)n;
    case BODY_CLOSE:
        n = take(h, buf, len);
        if (n < 0) return http_fail(p, strerror(errno));
        if (n == 0) h->body_done = true;
        return (int32_t)n;
    case BODY_CHUNKED:
        for (;;) {
            char line[256];
            switch (h->chunk_state) {
            case CH_SIZE: {
                if (read_line(h, line, sizeof line) < 0) return http_fail(p, "bad chunk size line");
                uint64_t size = 0;
                const char *c = line;
                for (; *c && *c != ';' && *c != ' ' && *c != '\t'; c++) {
                    int v = hexval(*c);
                    if (v < 0 || size > ((uint64_t)1 << 56)) return http_fail(p, "bad chunk size");
                    size = size * 16 + (uint64_t)v;
                }
                if (c == line) return http_fail(p, "bad chunk size");
                h->body_left = size;
                h->chunk_state = size ? CH_DATA : CH_TRAILER;
                break;
            }
            case CH_DATA:
                if (len > h->body_left) len = (size_t)h->body_left;
                n = take(h, buf, len);
                if (n <= 0) return http_fail(p, n == 0 ? "connection closed inside a chunk" : strerror(errno));
                h->body_left -= (uint64_t)n;
                if (h->body_left == 0) h->chunk_state = CH_DATA_END;
                return (int32_t)n;
            case CH_DATA_END:
                if (read_line(h, line, sizeof line) != 0) return http_fail(p, "no CRLF after a chunk");
                h->chunk_state = CH_SIZE;
                break;
            case CH_TRAILER:
                if (read_line(h, line, sizeof line) < 0) return http_fail(p, "bad trailer");
                if (line[0] == 0) {
                    h->chunk_state = CH_DONE;
                    h->body_done = true;
                    return 0;
                }
                break; /* trailer fields are not used */
            default:
                return 0;
            }
        }
    default:
        return 0;
    }
}

static void port_http_end(void *ctx, bool complete)
{
    fota_posix_t *p = ctx;
    fota_posix_http_t *h = &p->http;
    if (!h->in_exchange) return;
    /* The library stops reading a chunked body after its last byte: the
     * terminating empty chunk usually sits in the buffer already. */
    if (complete && !h->body_done && h->fd >= 0 && h->body_mode == BODY_CHUNKED &&
        (h->chunk_state == CH_DATA_END || h->chunk_state == CH_SIZE || h->chunk_state == CH_TRAILER)) {
        uint8_t extra;
        if (port_http_read(p, &extra, 1) != 0) complete = false;
    }
    h->in_exchange = false;
    if (complete && h->body_done && !h->close_after && h->fd >= 0) {
        h->reused = true; /* kept for the next exchange */
        return;
    }
    http_close(h);
}

/* ---- Time, randomness, logs ------------------------------------------------------------------ */

static int64_t port_now(void *ctx)
{
    fota_posix_t *p = ctx;
    return (int64_t)time(NULL) + p->clock_skew;
}

static void port_sleep_ms(void *ctx, uint32_t ms)
{
    (void)ctx;
    struct timespec ts, rem;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &rem) < 0 && errno == EINTR) ts = rem;
}

static fota_err_t port_random(void *ctx, uint8_t *buf, size_t len)
{
    fota_posix_t *p = ctx;
    size_t n = 0;
#if defined(__linux__)
    /* getrandom waits for the pool to be seeded, which matters at early
     * boot on a gateway; /dev/urandom below does not. */
    while (n < len) {
        ssize_t r = getrandom(buf + n, len - n, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) break;
        n += (size_t)r;
    }
    if (n == len) return FOTA_OK;
#endif
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        plog(p, FOTA_LOG_ERROR, "random: %s", strerror(errno));
        return FOTA_ERR_CRYPTO;
    }
    while (n < len) {
        ssize_t r = read(fd, buf + n, len - n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        n += (size_t)r;
    }
    close(fd);
    return n == len ? FOTA_OK : FOTA_ERR_CRYPTO;
}

static void port_log(void *ctx, fota_log_level_t level, const char *line)
{
    fota_posix_t *p = ctx;
    if ((int)level > p->disk.log_level) return;
    fprintf(stderr, "%c fota: %s\n", "EWID"[level & 3], line);
}

void fota_posix_port(fota_posix_t *p, fota_port_t *out)
{
    memset(out, 0, sizeof *out);
    out->ctx = p;
    out->http_begin = port_http_begin;
    out->http_read = port_http_read;
    out->http_end = port_http_end;
    out->boot_info = port_boot_info;
    out->boot_ack_rollback = port_boot_ack_rollback;
    out->slot_begin = port_slot_begin;
    out->slot_write = port_slot_write;
    out->slot_read = port_slot_read;
    out->slot_sync = port_slot_sync;
    out->slot_set_pending = port_slot_set_pending;
#if FOTA_DELTA
    out->running_read = port_running_read;
#endif
    out->boot_confirm = port_boot_confirm;
    out->boot_reject = port_boot_reject;
    out->kv_get = port_kv_get;
    out->kv_set = port_kv_set;
    out->kv_delete = port_kv_delete;
    out->now = port_now;
    out->sleep_ms = port_sleep_ms;
    out->random = port_random;
    out->log = port_log;
}
