/*
 * fota-device-c: a device running the fota C client on the POSIX port. A
 * simulated EcoWatt device for the tests (its flash is a state folder, a
 * process exit is a power cut), and a Linux gateway's updater.
 *
 *   fota-device-c format --state DIR --slot-size N --factory IMG --version V [--counter C]
 *   fota-device-c run --state DIR --server URL --device-id ID --psk-file F --public-key PEM
 *                     --firmware-key F --hardware esp32 [options]
 *
 * `run` is one power-on (with --once) or a device's life: the boot step,
 * fota_init, fota_startup (whose self-test runs the simulated image's
 * behaviour), then fota_check, and with --once it exits (without --once,
 * SIGUSR1 is a push notification, as fota_client_notify gets from MQTT):
 *
 *   0   nothing to install, idle, or an install deferred to its window
 *   1   an error (stdout: "error code=FOTA_ERR_...", stderr: "error: <text>")
 *   2   usage
 *   3   bricked: no bootable image
 *   10  reboot needed: an image was installed, the self-test rejected the
 *       running image, or the image "crashed" before confirming itself
 *   99  power cut (--cut-at)
 *
 * stdout carries machine-readable lines:
 *   boot slot=S version=V trial=0|1 counter=C
 *   rejected version=V            (the self-test failed: rolling back)
 *   crashed version=V             (a "crash" image reset before confirming)
 *   confirmed version=V           (the self-test passed: the image is valid)
 *   result update=0|1 installed=0|1 deferred=0|1 version=V
 *   error code=FOTA_ERR_NAME
 *   bricked
 *   push wait_ms=N                (a notification, SIGUSR1, taken: the check comes in N ms)
 * and stderr ends with "ops N", the persistent operations done, on every
 * exit but a power cut.
 */
#define _POSIX_C_SOURCE 200809L

#include "fota_port_posix.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <time.h>

#include "fota_client.h"
#include "fota_internal.h" /* fota_semver_valid, to check format's --version */

enum { EXIT_IDLE = 0, EXIT_ERROR = 1, EXIT_USAGE = 2, EXIT_BRICKED = 3, EXIT_REBOOT = 10 };

#define WORK_MAX (1u << 20)
#define PEM_MAX 16384
#define CRED_MAX 4096

static const char usage_text[] =
    "Usage:\n"
    "  fota-device-c format --state DIR --slot-size N --factory IMG --version V [--counter C]\n"
    "  fota-device-c run --state DIR --server URL --device-id ID --psk-file F --public-key PEM\n"
    "                    --firmware-key F --hardware esp32 [--chip esp32]\n"
    "                    [--once] [--check-interval SECONDS] [--max-boots 3] [--chunks-per-request N]\n"
    "                    [--checkpoint-every N] [--cut-at N --cut-mode before|after|torn]\n"
    "                    [--work-size BYTES] [--clock-skew SECONDS] [--timeout SECONDS] [--trace-ops] [-v]\n"
    "                    [--update-timeout SECONDS] [--retry-attempts N] [--retry-base-ms MS] [--chunk-retries N]\n"
    "                    [--push-min-interval SECONDS]\n"
    "\n"
    "format writes the factory image to slot 0 of an empty state folder.\n"
    "run is one power-on with --once, else the device's life: boot, self-test,\n"
    "check every --check-interval (default 21600), reboot in-process after an install.\n"
    "SIGUSR1 is a push notification (as an MQTT message on the device's topic would\n"
    "be): the device checks at once, at most once per --push-min-interval (default 60).\n"
    "--psk-file holds the device key as 64 hex digits, or is the credentials JSON of\n"
    "'fota device add --credentials' (device_id, psk, server, hardware). --firmware-key\n"
    "holds 32 raw bytes or 64 hex digits. --slot-size takes K and M suffixes (KiB, MiB).\n"
    "Exit: 0 idle, 1 error, 2 usage, 3 bricked, 10 reboot needed, 99 power cut.\n";

/* The enum's names, for the machine-readable error line (fota_err_str's
 * texts have spaces). */
static const char *const err_names[] = {
    "FOTA_OK",
    "FOTA_ERR_ARGUMENT",
    "FOTA_ERR_BUFFER",
    "FOTA_ERR_NETWORK",
    "FOTA_ERR_SERVER_BUSY",
    "FOTA_ERR_UNAUTHORIZED",
    "FOTA_ERR_FORBIDDEN",
    "FOTA_ERR_CONFLICT",
    "FOTA_ERR_REJECTED",
    "FOTA_ERR_SESSION_CLOSED",
    "FOTA_ERR_PROTOCOL",
    "FOTA_ERR_SIGNATURE",
    "FOTA_ERR_UNTRUSTED_KEY",
    "FOTA_ERR_UNSUPPORTED",
    "FOTA_ERR_MANIFEST",
    "FOTA_ERR_HARDWARE",
    "FOTA_ERR_DOWNGRADE",
    "FOTA_ERR_ROLLED_BACK",
    "FOTA_ERR_COUNTER",
    "FOTA_ERR_TOO_LARGE",
    "FOTA_ERR_CHUNK_MAC",
    "FOTA_ERR_DECRYPT",
    "FOTA_ERR_HASH",
    "FOTA_ERR_FLASH",
    "FOTA_ERR_STORAGE",
    "FOTA_ERR_NOT_FOUND",
    "FOTA_ERR_CRYPTO",
    "FOTA_ERR_ON_TRIAL",
    "FOTA_ERR_NOT_ON_TRIAL",
    "FOTA_ERR_SELF_TEST",
    "FOTA_ERR_POWER",
    "FOTA_ERR_TIMEOUT",
#if FOTA_DELTA
    "FOTA_ERR_DELTA",
#endif
};
/* C99 has no static_assert: a negative array size breaks the build when
 * fota_err_t grows and this table does not. */
typedef char err_names_complete[sizeof err_names / sizeof err_names[0] == FOTA_ERR__COUNT ? 1 : -1];

static const char *err_name(fota_err_t err)
{
    if (err == FOTA_POSIX_ERR_NO_BOOTABLE) return "FOTA_POSIX_ERR_NO_BOOTABLE";
    return (unsigned)err < FOTA_ERR__COUNT ? err_names[err] : "FOTA_ERR_UNKNOWN";
}

/* ---- Options ------------------------------------------------------------ */

typedef struct {
    const char *state, *server, *device_id, *psk_file, *public_key, *firmware_key, *hardware, *chip;
    const char *slot_size, *factory, *version, *counter;
    const char *check_interval, *max_boots, *chunks_per_request, *checkpoint_every, *cut_at, *cut_mode;
    const char *work_size, *clock_skew, *timeout;
    const char *update_timeout, *retry_attempts, *retry_base_ms, *chunk_retries, *push_min_interval;
    bool once, verbose, trace_ops;
} opts_t;

/* A usage error: the whole usage when the command line cannot be read at
 * all (no command, an unknown one or an unknown option), else just what is
 * wrong and where the options are. */
static int usage(const char *why, const char *arg)
{
    bool whole = !why || strncmp(why, "unknown", 7) == 0;
    if (why) fprintf(stderr, "fota-device-c: %s%s%s\n", why, arg ? " " : "", arg ? arg : "");
    if (whole) fputs(why ? "\n" : "", stderr), fputs(usage_text, stderr);
    else fputs("(fota-device-c --help lists the options)\n", stderr);
    return EXIT_USAGE;
}

/* Says which of the required options are missing; 0 when none is. */
static int need(const char *cmd, const char *const *names, const char *const *values, int n)
{
    char missing[160] = "";
    for (int i = 0; i < n; i++)
        if (!values[i]) snprintf(missing + strlen(missing), sizeof missing - strlen(missing), " --%s", names[i]);
    if (!missing[0]) return 0;
    fprintf(stderr, "fota-device-c %s: missing%s\n", cmd, missing);
    return usage("see the usage of", cmd);
}

/* Parses "--name value", "--name=value" and the flags into o. */
static int parse_opts(int argc, char **argv, opts_t *o)
{
    static const struct {
        const char *name;
        size_t off;
    } valued[] = {
#define OPT(n, f) {n, offsetof(opts_t, f)}
        OPT("state", state),
        OPT("server", server),
        OPT("device-id", device_id),
        OPT("psk-file", psk_file),
        OPT("public-key", public_key),
        OPT("firmware-key", firmware_key),
        OPT("hardware", hardware),
        OPT("chip", chip),
        OPT("slot-size", slot_size),
        OPT("factory", factory),
        OPT("version", version),
        OPT("counter", counter),
        OPT("check-interval", check_interval),
        OPT("max-boots", max_boots),
        OPT("chunks-per-request", chunks_per_request),
        OPT("checkpoint-every", checkpoint_every),
        OPT("cut-at", cut_at),
        OPT("cut-mode", cut_mode),
        OPT("work-size", work_size),
        OPT("clock-skew", clock_skew),
        OPT("timeout", timeout),
        OPT("update-timeout", update_timeout),
        OPT("retry-attempts", retry_attempts),
        OPT("retry-base-ms", retry_base_ms),
        OPT("chunk-retries", chunk_retries),
        OPT("push-min-interval", push_min_interval),
#undef OPT
    };
    memset(o, 0, sizeof *o);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            o->verbose = true;
            continue;
        }
        if (strcmp(a, "--once") == 0) {
            o->once = true;
            continue;
        }
        if (strcmp(a, "--trace-ops") == 0) {
            o->trace_ops = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) return usage("unexpected argument", a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        size_t k = 0;
        while (k < sizeof valued / sizeof valued[0] &&
               !(strlen(valued[k].name) == nlen && strncmp(valued[k].name, name, nlen) == 0))
            k++;
        if (k == sizeof valued / sizeof valued[0]) return usage("unknown option", a);
        const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!value) return usage("option needs a value:", a);
        *(const char **)((char *)o + valued[k].off) = value;
    }
    return 0;
}

/* A decimal number in [min, max]; K and M suffixes multiply by 1024 when
 * sizes is set. */
static bool parse_num(const char *s, long long min, long long max, bool sizes, long long *out)
{
    if (!s || !*s) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s) return false;
    if (sizes && (*end == 'K' || *end == 'k')) {
        v *= 1024, end++;
    } else if (sizes && (*end == 'M' || *end == 'm')) {
        v *= 1024 * 1024, end++;
    }
    if (sizes && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0)) end += strlen(end);
    if (*end || v < min || v > max) return false;
    *out = v;
    return true;
}

/* ---- Files ------------------------------------------------------------------ */

/* Reads a whole file of at most cap bytes into buf. */
static bool read_file(const char *path, uint8_t *buf, size_t cap, size_t *len, const char *what)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "error: %s %s: %s\n", what, path, strerror(errno));
        return false;
    }
    size_t n = fread(buf, 1, cap, f);
    bool too_big = n == cap && fgetc(f) != EOF;
    bool failed = ferror(f);
    fclose(f);
    if (failed || too_big) {
        fprintf(stderr, "error: %s %s: %s\n", what, path, too_big ? "too large" : "read failed");
        return false;
    }
    *len = n;
    return true;
}

/* A key file others can read is worth a warning, never a refusal: the
 * gateway's owner decides. */
static void check_private(const char *path, const char *what)
{
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        fprintf(stderr, "W device: %s %s is readable by others; chmod 600 it\n", what, path);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The text between leading and trailing white space of buf. */
static char *trim_text(char *buf, size_t len)
{
    while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == '\t'))
        len--;
    buf[len] = 0;
    while (*buf == ' ' || *buf == '\n' || *buf == '\r' || *buf == '\t') buf++;
    return buf;
}

static bool is_hex(const char *s, size_t n)
{
    if (strlen(s) != n) return false;
    for (size_t i = 0; i < n; i++)
        if (hexval((unsigned char)s[i]) < 0) return false;
    return true;
}

/* ---- The credentials JSON ---------------------------------------------------- */

/* The members this program takes from a credentials file. */
typedef struct {
    char device_id[72], psk[72], server[256], hardware[40];
} creds_t;

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* Reads a JSON string at p (at its quote) into out (cap bytes with the
 * NUL; escapes other than \uXXXX of ASCII refused); returns the position
 * after it, or NULL. out may be NULL to skip the string. */
static const char *json_string(const char *p, char *out, size_t cap)
{
    if (*p++ != '"') return NULL;
    size_t n = 0;
    for (;;) {
        char c = *p++;
        if (c == 0 || (unsigned char)c < 0x20) return NULL;
        if (c == '"') break;
        if (c == '\\') {
            char e = *p++;
            switch (e) {
            case '"': case '\\': case '/': c = e; break;
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': {
                int v = 0;
                for (int i = 0; i < 4; i++) {
                    int h = hexval((unsigned char)*p++);
                    if (h < 0) return NULL;
                    v = v * 16 + h;
                }
                if (v == 0 || v >= 0x80) return NULL; /* nothing this program reads needs more */
                c = (char)v;
                break;
            }
            default:
                return NULL;
            }
        }
        if (out) {
            if (n + 1 >= cap) return NULL;
            out[n++] = c;
        }
    }
    if (out) out[n] = 0;
    return p;
}

/* Skips any JSON value at p; returns the position after it, or NULL. */
static const char *json_skip(const char *p)
{
    p = skip_ws(p);
    if (*p == '"') return json_string(p, NULL, 0);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        do {
            if (*p == '"') {
                if (!(p = json_string(p, NULL, 0))) return NULL;
                continue;
            }
            if (*p == 0) return NULL;
            if (*p == '{' || *p == '[') depth++;
            if (*p == '}' || *p == ']') depth--;
            p++;
        } while (depth > 0);
        return p;
    }
    const char *start = p;
    while (*p && strchr(",}] \t\r\n", *p) == NULL) p++;
    return p > start ? p : NULL;
}

/* Parses the flat credentials object: device_id, psk, server, hardware. */
static bool parse_creds(const char *js, creds_t *c)
{
    memset(c, 0, sizeof *c);
    const char *p = skip_ws(js);
    if (*p++ != '{') return false;
    p = skip_ws(p);
    if (*p == '}') return true;
    for (;;) {
        char key[32];
        p = json_string(skip_ws(p), key, sizeof key);
        if (!p) return false;
        p = skip_ws(p);
        if (*p++ != ':') return false;
        p = skip_ws(p);
        char *dst = NULL;
        size_t cap = 0;
        if (strcmp(key, "device_id") == 0) dst = c->device_id, cap = sizeof c->device_id;
        if (strcmp(key, "psk") == 0) dst = c->psk, cap = sizeof c->psk;
        if (strcmp(key, "server") == 0) dst = c->server, cap = sizeof c->server;
        if (strcmp(key, "hardware") == 0) dst = c->hardware, cap = sizeof c->hardware;
        p = dst && *p == '"' ? json_string(p, dst, cap) : json_skip(p);
        if (!p) return false;
        p = skip_ws(p);
        if (*p == '}') return *skip_ws(p + 1) == 0;
        if (*p++ != ',') return false;
    }
}

/* ---- The device --------------------------------------------------------------- */

static fota_posix_t posix;
static fota_port_t port;
static fota_client_t client;
static fota_config_t config;
/* uint64_t: the library wants its work buffer 8-byte aligned. */
static uint64_t work_store[WORK_MAX / sizeof(uint64_t)];
static char pem[PEM_MAX + 1];
static uint8_t firmware_key[32];
static char psk_hex[65];
static creds_t creds;
static int log_level = FOTA_LOG_INFO;

static int finish(int code)
{
    fflush(stdout);
    fprintf(stderr, "ops %llu\n", (unsigned long long)fota_posix_ops(&posix));
    return code;
}

static void print_error(fota_err_t err, const char *what)
{
    printf("error code=%s\n", err_name(err));
    fprintf(stderr, "error: %s (%s)\n", fota_posix_err_str(err), what);
}

/* The simulator's marker, which firmware.Sample puts at the start of the
 * app's payload, says how the image behaves on its first boot. */
static const char marker[] = "ECOWATT-SIM/1 behaviour=";

/* The running image's self-test, as the simulated image would run it. */
static fota_err_t self_test(void *user)
{
    (void)user;
    const fota_posix_image_t *img = fota_posix_running_image(&posix);
    static uint8_t head[4096 + 1];
    if (!img) return FOTA_ERR_ARGUMENT;
    size_t n = img->size < sizeof head - 1 ? img->size : sizeof head - 1;
    if (fota_posix_read_running(&posix, 0, head, n) != FOTA_OK) return FOTA_ERR_FLASH;
    head[n] = 0;
    const uint8_t *m = NULL;
    for (size_t i = 0; i + sizeof marker - 1 <= n && !m; i++)
        if (memcmp(head + i, marker, sizeof marker - 1) == 0) m = head + i + sizeof marker - 1;
    if (!m) {
        /* Real firmware without the marker: it passes if it looks like an
         * ESP32 app image (magic byte 0xE9), as the Go simulator decides. */
        bool app = n > 0 && head[0] == 0xE9;
        fprintf(stderr, "I device: %s has no simulator marker: self-test %s\n", img->version,
                app ? "passes (an ESP32 app image)" : "fails (not an ESP32 app image)");
        return app ? FOTA_OK : FOTA_ERR_SELF_TEST;
    }
    size_t len = strcspn((const char *)m, "\n");
    if (len == 7 && memcmp(m, "healthy", 7) == 0) return FOTA_OK;
    if (len == 5 && memcmp(m, "crash", 5) == 0) {
        /* The image resets before it can confirm itself: the process ends
         * as a reset would, and the boot step counts the attempt. */
        printf("crashed version=%s\n", img->version);
        exit(finish(EXIT_REBOOT));
    }
    fprintf(stderr, "I device: %s self-test: %.*s\n", img->version, (int)(len < 32 ? len : 32), (const char *)m);
    return FOTA_ERR_SELF_TEST;
}

static void on_progress(void *user, const fota_progress_t *pr)
{
    (void)user;
    if (log_level < FOTA_LOG_DEBUG) return;
    if (pr->state == FOTA_STATE_DOWNLOADING)
        fprintf(stderr, "D device: downloading %s chunk %u/%u\n", pr->version, (unsigned)pr->chunk,
                (unsigned)pr->chunks);
    else
        fprintf(stderr, "D device: %s %s\n", fota_state_str(pr->state), pr->version);
}

/* Loads the device key, the release key and the firmware key. */
static int load_keys(opts_t *o)
{
    static uint8_t buf[CRED_MAX + 1];
    size_t len = 0;
    check_private(o->psk_file, "device key");
    if (!read_file(o->psk_file, buf, CRED_MAX, &len, "device key")) return EXIT_USAGE;
    char *text = trim_text((char *)buf, len);
    const char *psk = text;
    if (*text == '{') {
        if (!parse_creds(text, &creds)) {
            fprintf(stderr, "error: credentials %s: not the JSON of 'fota device add --credentials'\n", o->psk_file);
            return EXIT_USAGE;
        }
        psk = creds.psk;
        if (!o->device_id && creds.device_id[0]) o->device_id = creds.device_id;
        if (!o->server && creds.server[0]) o->server = creds.server;
        if (!o->hardware && creds.hardware[0]) o->hardware = creds.hardware;
    }
    if (!is_hex(psk, 64)) {
        fprintf(stderr, "error: device key %s: want 64 hex digits\n", o->psk_file);
        return EXIT_USAGE;
    }
    memcpy(psk_hex, psk, 65);
    memset(buf, 0, sizeof buf);

    if (!read_file(o->public_key, (uint8_t *)pem, PEM_MAX, &len, "release public key")) return EXIT_USAGE;
    pem[len] = 0;
    if (!strstr(pem, "-----BEGIN ")) {
        fprintf(stderr, "error: release public key %s: not a PEM file\n", o->public_key);
        return EXIT_USAGE;
    }

    check_private(o->firmware_key, "firmware key");
    if (!read_file(o->firmware_key, buf, 128, &len, "firmware key")) return EXIT_USAGE;
    if (len == 32) {
        memcpy(firmware_key, buf, 32);
    } else {
        text = trim_text((char *)buf, len);
        if (!is_hex(text, 64)) {
            fprintf(stderr, "error: firmware key %s: want 32 raw bytes or 64 hex digits\n", o->firmware_key);
            return EXIT_USAGE;
        }
        for (int i = 0; i < 32; i++) firmware_key[i] = (uint8_t)(hexval(text[2 * i]) << 4 | hexval(text[2 * i + 1]));
    }
    memset(buf, 0, sizeof buf);
    return 0;
}

/* Whether a state folder holds a boot state (either copy). */
static bool formatted(const char *dir)
{
    char path[4096];
    struct stat st;
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/otadata.%d", dir, i);
        if (stat(path, &st) == 0) return true;
    }
    return false;
}

static int cmd_format(opts_t *o)
{
    long long slot_size, counter = 0;
    static const char *const names[] = {"state", "slot-size", "factory", "version"};
    const char *values[] = {o->state, o->slot_size, o->factory, o->version};
    int rc = need("format", names, values, 4);
    if (rc) return rc;
    if (!parse_num(o->slot_size, 1, UINT32_MAX, true, &slot_size))
        return usage("--slot-size: want a size in bytes (K and M suffixes allowed), got", o->slot_size);
    if (o->counter && !parse_num(o->counter, 0, UINT32_MAX, false, &counter))
        return usage("--counter: want a number from 0 to 4294967295, got", o->counter);
    if (!fota_semver_valid(o->version))
        return usage("--version: want a Semantic Version of at most 63 characters (1.0.3), got", o->version);
    struct stat st;
    if (stat(o->factory, &st) != 0) {
        fprintf(stderr, "error: factory image %s: %s\n", o->factory, strerror(errno));
        return EXIT_ERROR;
    }
    if (st.st_size > slot_size) {
        print_error(FOTA_ERR_TOO_LARGE, "the factory image does not fit the slot");
        return EXIT_ERROR;
    }
    /* A tool's one-off read: the image may be megabytes, so from the heap. */
    size_t len = 0, cap = (size_t)st.st_size + 1;
    uint8_t *img = malloc(cap);
    if (!img) {
        fprintf(stderr, "error: out of memory for a %lld-byte image\n", (long long)st.st_size);
        return EXIT_ERROR;
    }
    if (!read_file(o->factory, img, cap, &len, "factory image")) {
        free(img);
        return EXIT_ERROR;
    }
    fota_err_t err = fota_posix_format(o->state, (uint32_t)slot_size, img, len, o->version, (uint32_t)counter);
    free(img);
    if (err != FOTA_OK) {
        print_error(err, "format");
        return EXIT_ERROR;
    }
    printf("formatted %s slot-size=%lld version=%s counter=%lld\n", o->state, slot_size, o->version, counter);
    return EXIT_IDLE;
}

/* Waits seconds, in steps the port's sleep can take. */
static void wait_s(int64_t seconds)
{
    while (seconds > 0) {
        int64_t step = seconds > 3600 ? 3600 : seconds;
        port.sleep_ms(port.ctx, (uint32_t)(step * 1000));
        seconds -= step;
    }
}

/* ---- Push: SIGUSR1 stands for a message on the device's MQTT topic ------- */

/* SIGUSR1 stays blocked but while the device waits for its next check, so
 * a notification never interrupts a check (it waits, pending, for the
 * wait) and none is lost between looking and sleeping (pselect unblocks
 * and sleeps at once). */
static sigset_t push_unblocked;

/* A signal handler, as an MQTT client's task would be: it may only call
 * fota_client_notify, whose one word write is safe there. */
static void on_push_signal(int sig)
{
    (void)sig;
    fota_client_notify(&client, 0);
}

static void push_signal_setup(void)
{
    struct sigaction sa;
    sigset_t block;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_push_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &push_unblocked);
    sigdelset(&push_unblocked, SIGUSR1);
}

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits seconds for the next timed check, or less when a notification asks
 * for one: then as long as fota_push_wait_ms says (the earliest moment
 * wins; later notifications are answered by that check). Prints
 * "push wait_ms=N" for each notification taken. */
static void wait_for_check(int64_t seconds)
{
    int64_t deadline = monotonic_ms() + seconds * 1000;
    for (;;) {
        uint32_t w = fota_push_wait_ms(&client);
        int64_t now = monotonic_ms();
        if (w != FOTA_PUSH_NONE) {
            printf("push wait_ms=%lu\n", (unsigned long)w);
            if (now + w < deadline) deadline = now + w;
        }
        if (now >= deadline) return;
        int64_t left = deadline - now;
        struct timespec ts;
        ts.tv_sec = (time_t)(left / 1000);
        ts.tv_nsec = (long)(left % 1000) * 1000000L;
        pselect(0, NULL, NULL, NULL, &ts, &push_unblocked); /* EINTR: a notification came */
    }
}

static int cmd_run(opts_t *o)
{
    long long interval = 21600, max_boots = FOTA_POSIX_DEFAULT_MAX_BOOTS, per_request = 0, checkpoint = 0;
    long long cut_at = 0, work_size = FOTA_WORK_MIN, skew = 0, timeout = FOTA_POSIX_DEFAULT_TIMEOUT_MS / 1000;
    long long update_timeout = 0, retry_attempts = 0, retry_base = 0, chunk_retries = 0, push_min = 0;
    fota_posix_cut_mode_t mode = FOTA_POSIX_CUT_BEFORE;
    static const char *const names[] = {"state", "psk-file", "public-key", "firmware-key"};
    const char *values[] = {o->state, o->psk_file, o->public_key, o->firmware_key};
    int rc = need("run", names, values, 4);
    if (rc) return rc;
    const struct {
        const char *name, *value;
        long long min, max, *out;
        bool sizes;
    } nums[] = {
        {"check-interval", o->check_interval, 1, 365LL * 86400, &interval, false},
        {"max-boots", o->max_boots, 1, 255, &max_boots, false},
        {"chunks-per-request", o->chunks_per_request, 1, 65535, &per_request, false},
        {"checkpoint-every", o->checkpoint_every, 1, 65535, &checkpoint, false},
        {"cut-at", o->cut_at, 0, (long long)1 << 62, &cut_at, false},
        {"work-size", o->work_size, FOTA_WORK_MIN, WORK_MAX, &work_size, true},
        {"clock-skew", o->clock_skew, -(1LL << 40), 1LL << 40, &skew, false},
        {"timeout", o->timeout, 1, 3600, &timeout, false},
        {"update-timeout", o->update_timeout, 1, 7 * 86400, &update_timeout, false},
        {"retry-attempts", o->retry_attempts, 1, 255, &retry_attempts, false},
        {"retry-base-ms", o->retry_base_ms, 1, 3600000, &retry_base, false},
        {"chunk-retries", o->chunk_retries, 1, 255, &chunk_retries, false},
        {"push-min-interval", o->push_min_interval, 1, 86400, &push_min, false},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if (nums[i].value && !parse_num(nums[i].value, nums[i].min, nums[i].max, nums[i].sizes, nums[i].out)) {
            fprintf(stderr, "fota-device-c: --%s: want a number from %lld to %lld%s, got %s\n", nums[i].name,
                    nums[i].min, nums[i].max, nums[i].sizes ? " (K and M suffixes allowed)" : "", nums[i].value);
            return EXIT_USAGE;
        }
    }
    if (o->cut_mode) {
        if (strcmp(o->cut_mode, "before") == 0) mode = FOTA_POSIX_CUT_BEFORE;
        else if (strcmp(o->cut_mode, "after") == 0) mode = FOTA_POSIX_CUT_AFTER;
        else if (strcmp(o->cut_mode, "torn") == 0) mode = FOTA_POSIX_CUT_TORN;
        else return usage("bad --cut-mode", o->cut_mode);
    }
    rc = load_keys(o);
    if (rc) return rc;
    if (!o->server || !o->device_id || !o->hardware)
        return usage("run needs --server, --device-id and --hardware (or a credentials file with them)", NULL);

    log_level = o->verbose ? FOTA_LOG_DEBUG : FOTA_LOG_INFO;
    if (fota_posix_init(&posix, o->state) != FOTA_OK) {
        fprintf(stderr, "error: cannot use the state folder %s (see above)\n", o->state);
        return EXIT_ERROR;
    }
    fota_posix_set_log_level(&posix, (fota_log_level_t)log_level);
    if (fota_posix_set_server(&posix, o->server) != FOTA_OK) return usage("bad --server", o->server);
    fota_posix_set_timeout(&posix, (int)timeout * 1000);
    fota_posix_set_fault(&posix, (uint64_t)cut_at, mode);
    fota_posix_set_trace(&posix, o->trace_ops);
    fota_posix_set_clock_skew(&posix, skew);
    fota_posix_port(&posix, &port);

    config.server_url = o->server;
    config.device_id = o->device_id;
    config.psk_hex = psk_hex;
    config.hardware = o->hardware;
    config.chip = o->chip;
    config.public_key_pem = pem;
    config.firmware_key = firmware_key;
    config.chunks_per_request = (uint16_t)per_request;
    config.checkpoint_every = (uint16_t)checkpoint;
    config.update_timeout_s = (uint32_t)update_timeout;
    config.retry_attempts = (uint8_t)retry_attempts;
    config.retry_base_ms = (uint32_t)retry_base;
    config.chunk_retries = (uint8_t)chunk_retries;
    config.push_min_interval_s = (uint32_t)push_min;
    push_signal_setup();
    config.self_test = self_test;
    config.on_progress = on_progress;

    for (;;) { /* one iteration per boot */
        fota_err_t err = fota_posix_boot(&posix, (int)max_boots);
        if (err == FOTA_POSIX_ERR_NO_BOOTABLE) {
            printf("bricked\n");
            fprintf(stderr, "error: %s\n", fota_posix_err_str(err));
            return EXIT_BRICKED;
        }
        if (err != FOTA_OK) {
            print_error(err, "boot");
            if (!formatted(o->state))
                fprintf(stderr, "hint: give the device its storage first: fota-device-c format --state %s --slot-size 4M "
                                "--factory IMAGE --version VERSION\n", o->state);
            return EXIT_ERROR;
        }
        const fota_posix_image_t *img = fota_posix_running_image(&posix);
        uint32_t counter = 0;
        if (fota_posix_counter(&posix, &counter))
            printf("boot slot=%d version=%s trial=%d counter=%u\n", fota_posix_running_slot(&posix), img->version,
                   fota_posix_trial(&posix) ? 1 : 0, (unsigned)counter);
        else
            printf("boot slot=%d version=%s trial=%d counter=unreadable\n", fota_posix_running_slot(&posix),
                   img->version, fota_posix_trial(&posix) ? 1 : 0);

        err = fota_init(&client, &config, &port, (uint8_t *)work_store, (size_t)work_size);
        if (err != FOTA_OK) {
            print_error(err, "fota_init");
            fota_deinit(&client);
            return EXIT_ERROR;
        }
        bool was_trial = fota_on_trial(&client);
        err = fota_startup(&client);
        if (err == FOTA_ERR_SELF_TEST) {
            printf("rejected version=%s\n", img->version);
            fota_deinit(&client);
            if (o->once) return EXIT_REBOOT;
            continue;
        }
        if (err != FOTA_OK || fota_on_trial(&client)) {
            print_error(err != FOTA_OK ? err : FOTA_ERR_ON_TRIAL, "startup");
            fota_deinit(&client);
            if (o->once) return EXIT_ERROR;
            wait_s(interval); /* then boot again: a trial that cannot confirm runs out of boots */
            continue;
        }
        if (was_trial) printf("confirmed version=%s\n", img->version);

        for (;;) { /* one iteration per check */
            fota_result_t res;
            memset(&res, 0, sizeof res);
            err = fota_check(&client, &res);
            if (err != FOTA_OK) {
                print_error(err, "check");
            } else {
                printf("result update=%d installed=%d deferred=%d version=%s\n", res.update ? 1 : 0,
                       res.installed ? 1 : 0, res.deferred ? 1 : 0, res.version);
            }
            if (o->once) {
                fota_deinit(&client);
                return err != FOTA_OK ? EXIT_ERROR : res.installed ? EXIT_REBOOT : EXIT_IDLE;
            }
            if (err == FOTA_OK && res.installed) break; /* reboot into it */
            int64_t wait = interval;
            if (err == FOTA_OK && res.deferred && res.install_after > 0) {
                /* install_after is server time: the device clock corrected by the server's Date */
                int64_t until = res.install_after - (port.now(port.ctx) + client.clock_offset);
                /* At least a minute: install_after is not authenticated, and a
                 * window always "a second away" must not make the device check
                 * (and hash its kept image) every second. */
                if (until < wait) wait = until < 60 ? 60 : until;
                if (wait > interval) wait = interval;
            }
            wait_for_check(wait);
        }
        fota_deinit(&client);
    }
}

int main(int argc, char **argv)
{
    /* Line by line, so what was printed survives a power cut's _exit. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) return usage(NULL, NULL);
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return EXIT_IDLE;
    }
    opts_t o;
    int rc = parse_opts(argc - 2, argv + 2, &o);
    if (rc) return rc;
    if (strcmp(cmd, "format") == 0) return cmd_format(&o);
    if (strcmp(cmd, "run") == 0) return finish(cmd_run(&o));
    return usage("unknown command", cmd);
}
