/*
 * fota delta: applies a detools "sequential" patch (docs/FORMAT.md, "Delta
 * patches"), as `fota delta create` makes them, on a microcontroller.
 *
 * Optional: firmware that takes delta updates links src/fota_delta.c; the
 * core client does not need it. Portable C99, no malloc, no static data.
 *
 * Streaming: the patch arrives in pieces of any size (as it is downloaded
 * and decrypted); fota_delta_write consumes each piece whole, reads the
 * "from" image (the running slot) and writes the "to" image (the update
 * slot) through callbacks, and has written every target byte it made
 * before it returns. Compressions none, crle and heatshrink (window up to
 * 8 bits: detools' default 8/7); lzma, bz2, zstd and lz4 are refused as
 * unsupported, as are in-place and hdiffpatch patches.
 *
 * Checkpoints: fota_delta_t holds no pointers, so its bytes are the whole
 * state. Save them with the download progress after a fota_delta_write
 * returns; after a reboot restore them, call fota_delta_check, and feed the
 * patch again from fota_delta_patch_offset. Target bytes written after the
 * saved state are simply written again (writes are positional).
 *
 * Trust: a patch is not authenticated here. Verify it (its signature, or
 * the chunk MACs it arrived under) and verify the to image's SHA-256 after
 * fota_delta_finish: a patch for another from image, or a damaged from
 * slot, makes a wrong image that only that hash catches. Every patch byte
 * is still treated as hostile: reads stay inside [0, from_size), writes
 * inside [0, to_size) with to_size <= max_to_size, memory is this struct
 * plus a bounded stack, and a damaged struct cannot make it read or write
 * outside those ranges or its own arrays.
 */
#ifndef FOTA_DELTA_H
#define FOTA_DELTA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Errors: negative, distinct; fota_delta_strerror names them. An error is
 * kept in the struct: every later call returns it. What was written to the
 * target before an error must be discarded. */
#define FOTA_DELTA_OK 0
#define FOTA_DELTA_ERR_CORRUPT -1     /* malformed patch (header, size field, stream, data after the end) */
#define FOTA_DELTA_ERR_FROM_RANGE -2  /* the patch reads outside the from image: a patch for another base? */
#define FOTA_DELTA_ERR_TOO_BIG -3     /* the to size in the header exceeds max_to_size (nothing written) */
#define FOTA_DELTA_ERR_PAST_END -4    /* a chunk would write past the header's to size */
#define FOTA_DELTA_ERR_TRUNCATED -5   /* fota_delta_finish: the patch ended early */
#define FOTA_DELTA_ERR_UNSUPPORTED -6 /* patch type or compression this applier does not implement */
#define FOTA_DELTA_ERR_IO -7          /* read_from or write_to failed */
#define FOTA_DELTA_ERR_STATE -8       /* the struct is not a valid state (not begun, or damaged) */

/* Bytes of target fota_delta_write assembles on its stack per write_to call. */
#ifndef FOTA_DELTA_CHUNK
#define FOTA_DELTA_CHUNK 128
#endif

/* The applier's state, and its checkpoint. Plain data: no pointers, no
 * padding (every byte is covered by crc). The fields are private. */
typedef struct fota_delta {
    uint32_t magic;       /* FOTA_DELTA_MAGIC: format and version of this struct */
    uint32_t crc;         /* CRC-32 of the bytes after this field */
    uint32_t from_size;   /* bytes of the from image */
    uint32_t max_to_size; /* largest to image the caller accepts */
    uint32_t to_size;     /* from the header; 0 until it is read */
    uint32_t patch_pos;   /* patch bytes consumed */
    uint32_t to_pos;      /* target bytes written */
    uint32_t from_pos;    /* where the next diff byte's from byte is */
    uint32_t left;        /* bytes still to come in the current diff or extra */
    uint32_t size;        /* the size field being read: its magnitude so far */
    uint32_t c_left;      /* crle: bytes left in the segment (or its size being read) */
    int32_t err;          /* the first error, kept */
    uint8_t phase;        /* which field of the patch comes next */
    uint8_t size_n;       /* bytes of the size field read */
    uint8_t size_neg;     /* its sign */
    uint8_t comp;         /* compression id from the header */
    uint8_t c_phase;      /* crle: kind, size, value or data */
    uint8_t c_kind;       /* crle: 0 scattered, 1 repeated */
    uint8_t c_value;      /* crle: repeated value */
    uint8_t c_n;          /* crle: bytes of the size read */
    uint8_t h_phase;      /* heatshrink: header, tag, literal, distance or length */
    uint8_t h_wbits;      /* heatshrink: window bits (4..8) */
    uint8_t h_lbits;      /* heatshrink: lookahead bits */
    uint8_t h_need;       /* heatshrink: bits still needed by the current field */
    uint16_t h_acc;       /* heatshrink: the current field's bits so far */
    uint8_t h_head;       /* heatshrink: next write position in window */
    uint8_t h_flags;      /* heatshrink: whether the current operation can still be end padding */
    uint8_t h_dist;       /* heatshrink: distance - 1 of the copy being read */
    uint8_t idle;         /* consecutive chunks that wrote nothing */
    uint8_t pad[2];       /* zero: keeps the size a multiple of 4 with no hidden padding */
    uint8_t window[256];  /* heatshrink: the last 2^window bytes of the stream */
} fota_delta_t;

/* The caller's I/O. Both return 0 on success, anything else on failure
 * (the applier returns FOTA_DELTA_ERR_IO). read_from reads the from image
 * (the running firmware); write_to writes the to image (the update slot,
 * erased beforehand). Offsets and lengths are always inside the images. */
typedef struct fota_delta_io {
    void *ctx;
    int (*read_from)(void *ctx, uint32_t off, uint8_t *buf, size_t len);
    int (*write_to)(void *ctx, uint32_t off, const uint8_t *buf, size_t len);
} fota_delta_io_t;

/* Starts applying a patch to a from image of from_size bytes; a patch for
 * an image larger than max_to_size (the slot) is refused. */
int fota_delta_begin(fota_delta_t *d, uint32_t from_size, uint32_t max_to_size);

/* Consumes len bytes of the patch, the ones at fota_delta_patch_offset. */
int fota_delta_write(fota_delta_t *d, const fota_delta_io_t *io, const uint8_t *patch, size_t len);

/* FOTA_DELTA_OK when the whole patch has been consumed and the to image
 * fully written; FOTA_DELTA_ERR_TRUNCATED when more patch was expected. */
int fota_delta_finish(fota_delta_t *d);

/* Checks a state restored from storage (magic, CRC, ranges) before use. */
int fota_delta_check(const fota_delta_t *d);

uint32_t fota_delta_to_size(const fota_delta_t *d);      /* 0 until the header is read */
uint32_t fota_delta_written(const fota_delta_t *d);      /* target bytes written */
uint32_t fota_delta_patch_offset(const fota_delta_t *d); /* patch bytes consumed: where to resume */

const char *fota_delta_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif
