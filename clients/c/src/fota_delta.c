/*
 * fota delta: a streaming, checkpointable applier of detools sequential
 * patches (include/fota_delta.h; the format is docs/FORMAT.md, "Delta
 * patches"; delta/apply.go is the reference applier, whose refusals this
 * one follows).
 *
 * Patch bytes are pushed through three layers, one byte at a time:
 *   patch_byte   the header byte and the to size, not compressed
 *   crle_byte / hs_byte   the decompressor named by the header
 *   stream_byte  sizes and data of the chunks (diff, extra, adjustment)
 * All state between bytes is in fota_delta_t. Target bytes are assembled
 * in a FOTA_DELTA_CHUNK buffer on fota_delta_write's stack (for diff data
 * the from bytes are read into it first and the diff added in place) and
 * written before fota_delta_write returns, so a saved struct never owes
 * the target anything.
 */
#include "fota_delta.h"

#include <string.h>

#define FOTA_DELTA_MAGIC 0x31444446u /* "FDD1": bump when the struct changes */

/* Largest size a patch can hold (4-byte size fields: 27 bits). */
#define MAX_SIZE ((1u << 27) - 1)
/* Consecutive chunks that write nothing before the patch is refused: no
 * writer emits them, and a crle run of zeros would otherwise spin here
 * through billions of empty chunks. */
#define MAX_IDLE_CHUNKS 32

/* The struct is its own checkpoint: it must have no padding bytes. */
typedef char fota_delta_no_padding[sizeof(fota_delta_t) == 68 + 256 ? 1 : -1];

enum { /* d->phase: what the next patch byte (or stream byte) is */
    P_HEADER = 1,
    P_TO_SIZE,
    P_EMPTY, /* to size 0: the patch must end here */
    P_DF_SIZE, /* first byte of the compressed stream: data format size */
    P_DIFF_SIZE,
    P_DIFF,
    P_EXTRA_SIZE,
    P_EXTRA,
    P_ADJ,
    P_DONE
};

enum { C_KIND, C_SIZE, C_VALUE, C_DATA };         /* d->c_phase */
enum { H_HEADER, H_TAG, H_LIT, H_DIST, H_LEN };   /* d->h_phase */
enum { COMP_NONE = 0, COMP_CRLE = 2, COMP_HEATSHRINK = 4 };

/* One fota_delta_write call: the I/O and the target bytes not yet written,
 * which go to d->to_pos (and, for diff, came from d->from_pos). */
typedef struct {
    fota_delta_t *d;
    const fota_delta_io_t *io;
    size_t n;   /* bytes in buf */
    size_t cap; /* diff: from bytes read into buf */
    uint8_t diff;
    uint8_t buf[FOTA_DELTA_CHUNK];
} run_t;

static uint32_t crc32(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

static uint32_t state_crc(const fota_delta_t *d)
{
    const uint8_t *p = (const uint8_t *)d + offsetof(fota_delta_t, crc) + sizeof d->crc;
    return crc32(p, sizeof *d - offsetof(fota_delta_t, crc) - sizeof d->crc);
}

static int seal(fota_delta_t *d, int err)
{
    if (err && !d->err) d->err = err;
    d->crc = state_crc(d);
    return d->err;
}

/* Ranges every function relies on: a damaged struct that passes these can
 * make a wrong image but cannot read or write outside from, to or its own
 * arrays. */
static int state_ok(const fota_delta_t *d)
{
    if (d->magic != FOTA_DELTA_MAGIC || d->err > 0 || d->err < FOTA_DELTA_ERR_STATE) return 0;
    if (d->phase < P_HEADER || d->phase > P_DONE || d->size_n > 3 || d->size_neg > 1 || d->idle > MAX_IDLE_CHUNKS + 1)
        return 0;
    if (d->from_pos > d->from_size || d->to_size > d->max_to_size || d->to_size > MAX_SIZE ||
        d->to_pos > d->to_size)
        return 0;
    if (d->phase < P_DF_SIZE) return d->to_pos == 0;
    if (d->phase == P_DIFF && (d->left == 0 || d->left > d->from_size - d->from_pos)) return 0;
    if ((d->phase == P_DIFF || d->phase == P_EXTRA) && (d->left == 0 || d->left > d->to_size - d->to_pos))
        return 0;
    if (d->phase == P_DONE && d->to_pos != d->to_size) return 0;
    switch (d->comp) {
    case COMP_NONE:
        return 1;
    case COMP_CRLE:
        return d->c_phase <= C_DATA && d->c_kind <= 1 && d->c_n <= 4;
    case COMP_HEATSHRINK:
        if (d->h_phase == H_HEADER) return 1;
        return d->h_phase <= H_LEN && d->h_wbits >= 4 && d->h_wbits <= 8 && d->h_lbits >= 3 &&
               d->h_lbits < d->h_wbits && d->h_need >= 1 && d->h_need <= 8;
    }
    return 0;
}

int fota_delta_begin(fota_delta_t *d, uint32_t from_size, uint32_t max_to_size)
{
    memset(d, 0, sizeof *d);
    d->magic = FOTA_DELTA_MAGIC;
    d->from_size = from_size;
    d->max_to_size = max_to_size;
    d->phase = P_HEADER;
    return seal(d, FOTA_DELTA_OK);
}

int fota_delta_check(const fota_delta_t *d)
{
    if (!d || !state_ok(d) || d->crc != state_crc(d)) return FOTA_DELTA_ERR_STATE;
    return d->err;
}

uint32_t fota_delta_to_size(const fota_delta_t *d) { return d->to_size; }
uint32_t fota_delta_written(const fota_delta_t *d) { return d->to_pos; }
uint32_t fota_delta_patch_offset(const fota_delta_t *d) { return d->patch_pos; }

/* Reads one byte of a size field into d->size and d->size_neg: 1 when the
 * field is complete, 0 when more bytes follow. */
static int size_byte(fota_delta_t *d, uint8_t b)
{
    if (d->size_n == 0) {
        d->size_neg = (b >> 6) & 1;
        d->size = b & 0x3f;
    } else {
        d->size |= (uint32_t)(b & 0x7f) << (7 * d->size_n - 1);
    }
    if (!(b & 0x80)) {
        d->size_n = 0;
        return 1;
    }
    /* detools' C applier takes 4 bytes at most (27 bits). */
    return ++d->size_n == 4 ? FOTA_DELTA_ERR_CORRUPT : 0;
}

static int flush(run_t *r)
{
    fota_delta_t *d = r->d;
    if (r->n == 0) return FOTA_DELTA_OK;
    if (r->io->write_to(r->io->ctx, d->to_pos, r->buf, r->n)) return FOTA_DELTA_ERR_IO;
    d->to_pos += (uint32_t)r->n;
    if (r->diff) d->from_pos += (uint32_t)r->n;
    r->n = 0;
    return FOTA_DELTA_OK;
}

/* One byte of the decompressed stream. */
static int stream_byte(run_t *r, uint8_t b)
{
    fota_delta_t *d = r->d;
    int k;
    switch (d->phase) {
    case P_DIFF:
        if (r->n == 0) {
            r->cap = d->left < sizeof r->buf ? d->left : sizeof r->buf;
            r->diff = 1;
            if (r->io->read_from(r->io->ctx, d->from_pos, r->buf, r->cap)) return FOTA_DELTA_ERR_IO;
        }
        r->buf[r->n++] += b;
        if (--d->left == 0) d->phase = P_EXTRA_SIZE;
        return r->n == r->cap ? flush(r) : FOTA_DELTA_OK;
    case P_EXTRA:
        r->diff = 0;
        r->buf[r->n++] = b;
        if (--d->left == 0) d->phase = P_ADJ;
        return r->n == sizeof r->buf || d->left == 0 ? flush(r) : FOTA_DELTA_OK;
    case P_DONE:
        return FOTA_DELTA_ERR_CORRUPT; /* data after the last chunk */
    case P_DF_SIZE:
    case P_DIFF_SIZE:
    case P_EXTRA_SIZE:
    case P_ADJ:
        break;
    default:
        return FOTA_DELTA_ERR_STATE;
    }
    if ((k = size_byte(d, b)) <= 0) return k;
    if (d->phase == P_ADJ) {
        if (d->size_neg ? d->size > d->from_pos : d->size > d->from_size - d->from_pos)
            return FOTA_DELTA_ERR_FROM_RANGE;
        d->from_pos = d->size_neg ? d->from_pos - d->size : d->from_pos + d->size;
        d->phase = d->to_pos == d->to_size ? P_DONE : P_DIFF_SIZE;
        return FOTA_DELTA_OK;
    }
    if (d->size_neg && d->size) return FOTA_DELTA_ERR_CORRUPT; /* negative data size */
    if (d->phase == P_DF_SIZE) {
        /* detools --data-format: its C applier refuses it too; as delta.Apply,
         * a patch with one is corrupt for us. */
        if (d->size) return FOTA_DELTA_ERR_CORRUPT;
        d->phase = P_DIFF_SIZE;
        return FOTA_DELTA_OK;
    }
    if (d->size > d->to_size - d->to_pos) return FOTA_DELTA_ERR_PAST_END;
    d->left = d->size;
    if (d->phase == P_DIFF_SIZE) {
        if (d->size > d->from_size - d->from_pos) return FOTA_DELTA_ERR_FROM_RANGE;
        d->phase = d->size ? P_DIFF : P_EXTRA_SIZE;
        d->idle = d->size ? 0 : (uint8_t)(d->idle + 1); /* counts chunks that write nothing */
        return FOTA_DELTA_OK;
    }
    if (d->size)
        d->idle = 0;
    else if (d->idle > MAX_IDLE_CHUNKS)
        return FOTA_DELTA_ERR_CORRUPT;
    d->phase = d->size ? P_EXTRA : P_ADJ;
    return FOTA_DELTA_OK;
}

/* crle: segments of a kind byte (0 scattered, 1 repeated), a LEB128 size
 * (at most 32 bits here: no valid stream has a longer segment), then the
 * bytes, or the one repeated byte. */
static int crle_byte(run_t *r, uint8_t b)
{
    fota_delta_t *d = r->d;
    int err;
    switch (d->c_phase) {
    case C_KIND:
        if (b > 1) return FOTA_DELTA_ERR_CORRUPT;
        d->c_kind = b;
        d->c_left = 0;
        d->c_n = 0;
        d->c_phase = C_SIZE;
        return FOTA_DELTA_OK;
    case C_SIZE:
        if (d->c_n == 4 && b > 0x0f) return FOTA_DELTA_ERR_CORRUPT;
        d->c_left |= (uint32_t)(b & 0x7f) << (7 * d->c_n++);
        if (b & 0x80) return FOTA_DELTA_OK;
        d->c_phase = d->c_kind ? C_VALUE : d->c_left ? C_DATA : C_KIND;
        return FOTA_DELTA_OK;
    case C_VALUE:
        d->c_value = b;
        for (; d->c_left; d->c_left--)
            if ((err = stream_byte(r, b)) != 0) return err;
        d->c_phase = C_KIND;
        return FOTA_DELTA_OK;
    case C_DATA:
        if (--d->c_left == 0) d->c_phase = C_KIND;
        return stream_byte(r, b);
    }
    return FOTA_DELTA_ERR_STATE;
}

/* heatshrink: after detools' header byte, MSB-first bits: 1 + 8-bit
 * literal, or 0 + (distance - 1) in window bits + (length - 1) in lookahead
 * bits. The window starts as zeros. The stream may end after an operation
 * with at most 7 zero bits of padding: h_flags says whether the bits since
 * the last operation (none of them from a later byte) are all zero. */
static int hs_emit(run_t *r, uint8_t c)
{
    fota_delta_t *d = r->d;
    uint8_t mask = (uint8_t)((1u << d->h_wbits) - 1);
    d->window[d->h_head & mask] = c;
    d->h_head = (uint8_t)((d->h_head + 1) & mask);
    return stream_byte(r, c);
}

static int hs_byte(run_t *r, uint8_t b)
{
    fota_delta_t *d = r->d;
    int err;
    if (d->h_phase == H_HEADER) {
        d->h_wbits = (uint8_t)((b >> 4) + 4);
        d->h_lbits = (uint8_t)((b & 0x0f) + 3);
        if (d->h_wbits > 15 || d->h_lbits >= d->h_wbits) return FOTA_DELTA_ERR_CORRUPT;
        /* The window lives in the struct: 2^8 bytes at most (detools: 8). */
        if (d->h_wbits > 8) return FOTA_DELTA_ERR_UNSUPPORTED;
        d->h_phase = H_TAG;
        d->h_need = 1;
        d->h_acc = 0;
        d->h_flags = 1;
        return FOTA_DELTA_OK;
    }
    d->h_flags = 0;
    for (int i = 7; i >= 0; i--) {
        d->h_acc = (uint16_t)((d->h_acc << 1) | ((b >> i) & 1));
        if (--d->h_need) continue;
        switch (d->h_phase) {
        case H_TAG:
            d->h_phase = d->h_acc ? H_LIT : H_DIST;
            d->h_need = d->h_acc ? 8 : d->h_wbits;
            d->h_acc = 0;
            continue;
        case H_DIST:
            d->h_dist = (uint8_t)d->h_acc;
            d->h_phase = H_LEN;
            d->h_need = d->h_lbits;
            d->h_acc = 0;
            continue;
        case H_LIT:
            if ((err = hs_emit(r, (uint8_t)d->h_acc)) != 0) return err;
            break;
        default: /* H_LEN */
            for (unsigned n = (d->h_acc & 0xffu) + 1u; n; n--) {
                uint8_t mask = (uint8_t)((1u << d->h_wbits) - 1);
                if ((err = hs_emit(r, d->window[(uint8_t)(d->h_head - d->h_dist - 1) & mask])) != 0) return err;
            }
            break;
        }
        /* The operation is done: the next one starts at bit i - 1. */
        d->h_phase = H_TAG;
        d->h_need = 1;
        d->h_acc = 0;
        d->h_flags = (b & ((1u << i) - 1)) == 0;
    }
    return FOTA_DELTA_OK;
}

/* One byte of the patch as it arrives. */
static int patch_byte(run_t *r, uint8_t b)
{
    fota_delta_t *d = r->d;
    int k;
    switch (d->phase) {
    case P_HEADER: {
        unsigned type = b >> 4, comp = b & 0x0f;
        if (b & 0x80 || type > 2 || comp > 6) return FOTA_DELTA_ERR_CORRUPT;
        if (type != 0) return FOTA_DELTA_ERR_UNSUPPORTED; /* in-place, hdiffpatch */
        d->comp = (uint8_t)comp;
        d->phase = P_TO_SIZE;
        return FOTA_DELTA_OK;
    }
    case P_TO_SIZE:
        if ((k = size_byte(d, b)) <= 0) return k;
        if (d->size_neg && d->size) return FOTA_DELTA_ERR_CORRUPT;
        if (d->size > d->max_to_size) return FOTA_DELTA_ERR_TOO_BIG;
        d->to_size = d->size;
        if (d->to_size == 0) {
            d->phase = P_EMPTY; /* detools writes no stream at all */
            return FOTA_DELTA_OK;
        }
        if (d->comp != COMP_NONE && d->comp != COMP_CRLE && d->comp != COMP_HEATSHRINK)
            return FOTA_DELTA_ERR_UNSUPPORTED; /* lzma, bz2, zstd, lz4 */
        d->phase = P_DF_SIZE;
        return FOTA_DELTA_OK;
    case P_EMPTY:
        return FOTA_DELTA_ERR_CORRUPT;
    }
    switch (d->comp) {
    case COMP_NONE:
        return stream_byte(r, b);
    case COMP_CRLE:
        return crle_byte(r, b);
    case COMP_HEATSHRINK:
        return hs_byte(r, b);
    }
    return FOTA_DELTA_ERR_STATE;
}

int fota_delta_write(fota_delta_t *d, const fota_delta_io_t *io, const uint8_t *patch, size_t len)
{
    run_t r;
    int err = FOTA_DELTA_OK;
    if (!d || !state_ok(d) || !io || !io->read_from || !io->write_to || (!patch && len))
        return FOTA_DELTA_ERR_STATE;
    if (d->err) return d->err;
    r.d = d;
    r.io = io;
    r.n = r.cap = 0;
    r.diff = 0;
    for (size_t i = 0; i < len; i++) {
        if ((err = patch_byte(&r, patch[i])) != 0) break;
        d->patch_pos++;
    }
    if (!err) err = flush(&r);
    return seal(d, err);
}

int fota_delta_finish(fota_delta_t *d)
{
    int err = FOTA_DELTA_OK;
    if (!d || !state_ok(d)) return FOTA_DELTA_ERR_STATE;
    if (d->err) return d->err;
    if (d->phase != P_EMPTY) {
        if (d->phase != P_DONE)
            err = FOTA_DELTA_ERR_TRUNCATED;
        else if (d->comp == COMP_CRLE && d->c_phase != C_KIND)
            err = FOTA_DELTA_ERR_TRUNCATED; /* a segment cut short after the last chunk */
        else if (d->comp == COMP_HEATSHRINK && !d->h_flags)
            err = FOTA_DELTA_ERR_TRUNCATED; /* bits after the last chunk that are not padding */
    }
    return seal(d, err);
}

const char *fota_delta_strerror(int err)
{
    switch (err) {
    case FOTA_DELTA_OK:
        return "ok";
    case FOTA_DELTA_ERR_CORRUPT:
        return "corrupt delta patch";
    case FOTA_DELTA_ERR_FROM_RANGE:
        return "delta patch reads outside the running image: it was made for another base";
    case FOTA_DELTA_ERR_TOO_BIG:
        return "delta patch makes an image larger than the slot";
    case FOTA_DELTA_ERR_PAST_END:
        return "delta patch writes past the image size in its header";
    case FOTA_DELTA_ERR_TRUNCATED:
        return "delta patch truncated";
    case FOTA_DELTA_ERR_UNSUPPORTED:
        return "delta patch type or compression not supported (make it sequential, with none, crle or heatshrink)";
    case FOTA_DELTA_ERR_IO:
        return "delta patch: reading the running image or writing the slot failed";
    case FOTA_DELTA_ERR_STATE:
        return "delta state invalid: not begun, or damaged in storage (start the update again)";
    }
    return "unknown delta error";
}
