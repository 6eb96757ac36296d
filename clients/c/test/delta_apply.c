/*
 * fota-delta-test: drives src/fota_delta.c for clients/c/delta_test.go.
 * Every read and write the applier asks for is checked against the images'
 * bounds (and writes against order): a violation aborts the program.
 *
 *   fota-delta-test apply FROM PATCH OUT STATE MAX_TO SEED CUT
 *       Applies PATCH to FROM into OUT, feeding it in random pieces. When
 *       STATE holds a saved struct it resumes from it (after
 *       fota_delta_check) into the existing OUT; after a random third of
 *       the writes it saves the struct to STATE, as firmware saves it with
 *       its download progress. CUT > 0 cuts the power at the CUT-th
 *       write_to call: a random part of that write reaches OUT, then the
 *       program exits 99. Prints "ok WRITES" or "error CODE NAME at OFFSET
 *       WRITES"; exits 0, 1 (applier error), 3 (state refused).
 *   fota-delta-test flips FROM PATCH MAX_TO SEED N
 *       N applications of PATCH with 1-4 random bytes changed: whatever
 *       happens, nothing is read or written out of bounds. Prints counts.
 *   fota-delta-test truncs FROM PATCH MAX_TO
 *       Proper prefixes of PATCH (200 spread over it, and the last 64) must end in
 *       FOTA_DELTA_ERR_TRUNCATED from fota_delta_finish.
 *   fota-delta-test damage FROM PATCH MAX_TO SEED N
 *       N times: apply a random prefix, flip 1-3 bits of a copy of the
 *       struct; fota_delta_check must refuse it; then apply the rest with
 *       the damaged copy anyway (its from_size and max_to_size put back):
 *       it must stay in bounds. Prints counts.
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fota_delta.h"

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(uint32_t n) /* 0..n-1 */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return n ? (uint32_t)(rng % n) : 0;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* The images. to is a file (apply) or memory (the other modes). */
typedef struct {
    const uint8_t *from;
    size_t from_len;
    const fota_delta_t *d; /* for its to size */
    uint32_t max_to;
    int fd;           /* apply: OUT */
    uint8_t *to;      /* otherwise */
    uint32_t next;    /* where the next write must start */
    long writes, cut; /* apply: write_to calls, and the one the power dies in */
} img_t;

static int read_from(void *ctx, uint32_t off, uint8_t *buf, size_t len)
{
    img_t *m = ctx;
    if (len == 0 || off > m->from_len || len > m->from_len - off) {
        fprintf(stderr, "READ OUT OF RANGE: %u+%zu of %zu\n", off, len, m->from_len);
        abort();
    }
    memcpy(buf, m->from + off, len);
    return 0;
}

static int write_to(void *ctx, uint32_t off, const uint8_t *buf, size_t len)
{
    img_t *m = ctx;
    uint32_t to_size = fota_delta_to_size(m->d);
    if (len == 0 || to_size > m->max_to || off > to_size || len > to_size - off || off != m->next) {
        fprintf(stderr, "WRITE OUT OF RANGE OR ORDER: %u+%zu, to size %u, expected offset %u\n", off, len, to_size,
                m->next);
        abort();
    }
    m->next = off + (uint32_t)len;
    m->writes++;
    if (m->fd < 0) {
        memcpy(m->to + off, buf, len);
        return 0;
    }
    if (m->writes == m->cut) len = rnd((uint32_t)len + 1); /* the power dies during this write */
    if (pwrite(m->fd, buf, len, off) != (ssize_t)len) {
        perror("pwrite");
        return -1;
    }
    if (m->writes == m->cut) _exit(99);
    return 0;
}

static size_t piece(void)
{
    return rnd(4) == 0 ? 1 + rnd(4096) : 1 + rnd(48);
}

static void save_state(const char *path, const fota_delta_t *d)
{
    char tmp[4096];
    FILE *f;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "wb");
    if (!f || fwrite(d, sizeof *d, 1, f) != 1 || fclose(f) != 0 || rename(tmp, path) != 0) {
        perror("saving the state");
        exit(2);
    }
}

static int cmd_apply(char **a)
{
    size_t from_len = 0, patch_len = 0, state_len = 0;
    uint8_t *from = slurp(a[0], &from_len), *patch = slurp(a[1], &patch_len), *state = slurp(a[3], &state_len);
    fota_delta_t d;
    img_t m = {0};
    fota_delta_io_t io = {&m, read_from, write_to};
    int err, code = 2;
    rng += strtoull(a[5], NULL, 10) * 2654435761u;
    m.fd = -1;
    if (!from || !patch) {
        fprintf(stderr, "cannot read %s or %s\n", a[0], a[1]);
        goto out;
    }
    m.from = from;
    m.from_len = from_len;
    m.d = &d;
    m.max_to = (uint32_t)strtoul(a[4], NULL, 10);
    m.cut = strtol(a[6], NULL, 10);
    if (state && state_len > 0) {
        code = 3;
        if (state_len != sizeof d) {
            printf("state refused: %zu bytes, want %zu\n", state_len, sizeof d);
            goto out;
        }
        memcpy(&d, state, sizeof d);
        if ((err = fota_delta_check(&d)) != 0) {
            printf("state refused: %d %s\n", err, fota_delta_strerror(err));
            goto out;
        }
        fprintf(stderr, "resuming at patch offset %u, %u bytes written\n", fota_delta_patch_offset(&d),
                fota_delta_written(&d));
        m.fd = open(a[2], O_RDWR | O_CREAT, 0600);
    } else {
        fota_delta_begin(&d, (uint32_t)from_len, m.max_to);
        m.fd = open(a[2], O_RDWR | O_CREAT | O_TRUNC, 0600);
    }
    code = 2;
    if (m.fd < 0) {
        perror(a[2]);
        goto out;
    }
    m.next = fota_delta_written(&d);
    code = 1;
    for (size_t off = fota_delta_patch_offset(&d); off < patch_len;) {
        size_t n = piece();
        if (n > patch_len - off) n = patch_len - off;
        if ((err = fota_delta_write(&d, &io, patch + off, n)) != 0) goto failed;
        if (fota_delta_patch_offset(&d) != off + n) {
            fprintf(stderr, "consumed %u, want %zu\n", fota_delta_patch_offset(&d), off + n);
            abort();
        }
        off += n;
        if (rnd(3) == 0) save_state(a[3], &d);
    }
    if ((err = fota_delta_finish(&d)) != 0) goto failed;
    printf("ok writes=%ld written=%u\n", m.writes, fota_delta_written(&d));
    code = 0;
    goto out;
failed:
    printf("error %d %s at %u writes=%ld\n", err, fota_delta_strerror(err), fota_delta_patch_offset(&d), m.writes);
out:
    if (m.fd >= 0) close(m.fd);
    free(from);
    free(patch);
    free(state);
    return code;
}

/* Applies patch[0:len) in random pieces with d (begun or restored) into
 * m->to; returns the error. finish: call fota_delta_finish at the end. */
static int feed(fota_delta_t *d, img_t *m, const uint8_t *patch, size_t start, size_t len, int finish)
{
    fota_delta_io_t io = {m, read_from, write_to};
    int err;
    m->d = d;
    m->next = fota_delta_written(d);
    for (size_t off = start; off < len;) {
        size_t n = piece();
        if (n > len - off) n = len - off;
        if ((err = fota_delta_write(d, &io, patch + off, n)) != 0) return err;
        off += n;
    }
    return finish ? fota_delta_finish(d) : 0;
}

static int cmd_flips(char **a)
{
    size_t from_len, patch_len;
    uint8_t *from = slurp(a[0], &from_len), *patch = slurp(a[1], &patch_len);
    uint32_t max_to = (uint32_t)strtoul(a[2], NULL, 10);
    long n = strtol(a[4], NULL, 10), counts[9] = {0};
    img_t m = {0};
    uint8_t *bad = malloc(patch_len + 1), *to = malloc(max_to + 1);
    rng += strtoull(a[3], NULL, 10) * 2654435761u;
    if (!from || !patch || !bad || !to || patch_len == 0) return 2;
    m.from = from;
    m.from_len = from_len;
    m.max_to = max_to;
    m.fd = -1;
    m.to = to;
    for (long i = 0; i < n; i++) {
        fota_delta_t d;
        memcpy(bad, patch, patch_len);
        for (int k = 1 + (int)rnd(4); k > 0; k--) bad[rnd((uint32_t)patch_len)] ^= (uint8_t)(1 + rnd(255));
        fota_delta_begin(&d, (uint32_t)from_len, max_to);
        counts[-feed(&d, &m, bad, 0, patch_len, 1)]++;
    }
    printf("flips=%ld", n);
    for (int e = 0; e <= 8; e++) printf(" %d=%ld", -e, counts[e]);
    printf("\n");
    free(from);
    free(patch);
    free(bad);
    free(to);
    return 0;
}

static int cmd_truncs(char **a)
{
    size_t from_len, patch_len, step, tail, cases = 0;
    uint8_t *from = slurp(a[0], &from_len), *patch = slurp(a[1], &patch_len);
    uint32_t max_to = (uint32_t)strtoul(a[2], NULL, 10);
    img_t m = {0};
    uint8_t *to = malloc(max_to + 1);
    if (!from || !patch || !to) return 2;
    m.from = from;
    m.from_len = from_len;
    m.max_to = max_to;
    m.fd = -1;
    m.to = to;
    /* 200 prefixes spread over the patch, and the last 64 one by one. */
    step = patch_len / 200 + 1;
    tail = patch_len > 64 ? patch_len - 64 : 0;
    for (size_t cut = 0; cut < patch_len; cut = cut + step < tail ? cut + step : cut < tail ? tail : cut + 1) {
        fota_delta_t d;
        int err;
        fota_delta_begin(&d, (uint32_t)from_len, max_to);
        if ((err = feed(&d, &m, patch, 0, cut, 1)) != FOTA_DELTA_ERR_TRUNCATED) {
            printf("prefix of %zu bytes: got %d (%s), want truncated\n", cut, err, fota_delta_strerror(err));
            return 1;
        }
        cases++;
    }
    printf("truncs=%zu\n", cases);
    free(from);
    free(patch);
    free(to);
    return 0;
}

static int cmd_damage(char **a)
{
    size_t from_len, patch_len;
    uint8_t *from = slurp(a[0], &from_len), *patch = slurp(a[1], &patch_len);
    uint32_t max_to = (uint32_t)strtoul(a[2], NULL, 10);
    long n = strtol(a[4], NULL, 10), damaged = 0, refused = 0, counts[9] = {0};
    img_t m = {0};
    uint8_t *to = malloc(max_to + 1);
    rng += strtoull(a[3], NULL, 10) * 2654435761u;
    if (!from || !patch || !to || patch_len == 0) return 2;
    m.from = from;
    m.from_len = from_len;
    m.max_to = max_to;
    m.fd = -1;
    m.to = to;
    for (long i = 0; i < n; i++) {
        fota_delta_t d, bad;
        size_t at = rnd((uint32_t)patch_len);
        int err;
        fota_delta_begin(&d, (uint32_t)from_len, max_to);
        if ((err = feed(&d, &m, patch, 0, at, 0)) != 0) {
            printf("prefix of %zu bytes: error %d\n", at, err);
            return 1;
        }
        bad = d;
        for (int k = 1 + (int)rnd(3); k > 0; k--) ((uint8_t *)&bad)[rnd(sizeof bad)] ^= (uint8_t)(1u << rnd(8));
        if (memcmp(&bad, &d, sizeof d) == 0) continue; /* two flips undid each other */
        damaged++;
        if (fota_delta_check(&bad) == FOTA_DELTA_ERR_STATE) refused++;
        /* Firmware that skipped the check: damage to the applier's own
         * fields makes a wrong image at worst, never a read or write outside
         * the images the caller gave it (from_size and max_to_size are the
         * caller's: only its own check, or the CRC, can vouch for them). */
        bad.from_size = d.from_size;
        bad.max_to_size = d.max_to_size;
        err = feed(&bad, &m, patch, fota_delta_patch_offset(&bad) < patch_len ? fota_delta_patch_offset(&bad) : patch_len,
                   patch_len, 1);
        counts[-err]++;
    }
    printf("damage=%ld damaged=%ld refused=%ld", n, damaged, refused);
    for (int e = 0; e <= 8; e++) printf(" %d=%ld", -e, counts[e]);
    printf("\n");
    free(from);
    free(patch);
    free(to);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0); /* whatever the sanitizers do at exit */
    if (argc == 9 && !strcmp(argv[1], "apply")) return cmd_apply(argv + 2);
    if (argc == 7 && !strcmp(argv[1], "flips")) return cmd_flips(argv + 2);
    if (argc == 5 && !strcmp(argv[1], "truncs")) return cmd_truncs(argv + 2);
    if (argc == 7 && !strcmp(argv[1], "damage")) return cmd_damage(argv + 2);
    fprintf(stderr, "usage: see the comment at the top of test/delta_apply.c\n");
    return 2;
}
