/*
 * fota C client: the ESP-IDF port (ESP-IDF 5.x). See fota_port_esp.h and
 * README.md. Compiled against declarations of the ESP-IDF API
 * (test/check.sh); not yet run on hardware.
 */
#include <limits.h>
#include <string.h>
#include <time.h>

#include "sdkconfig.h"

#include "esp_app_desc.h"
#include "esp_err.h"
#include "esp_http_client.h"
#include "esp_log.h"
#include "esp_ota_ops.h"
#include "esp_partition.h"
#include "esp_random.h"
#include "esp_timer.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "nvs.h"
#ifdef CONFIG_MBEDTLS_CERTIFICATE_BUNDLE
#include "esp_crt_bundle.h"
#endif
#ifdef CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK
#include "esp_efuse.h"
#endif

#include "fota_port_esp.h"
#if FOTA_DELTA
#include "esp_image_format.h"
#include "fota_internal.h" /* fota_sha256_*: mbedtls 2.28 and 3.x alike */
#endif

static const char *TAG = "fota";

/* NVS keys are at most NVS_KEY_NAME_MAX_SIZE - 1 characters. */
#define KEY_MAX 15

/* ---- small helpers ------------------------------------------------------ */

static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

/* ASCII case-insensitive equality: header names (strcasecmp is not C99). */
static bool eq_nocase(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        if (lower(*a) != lower(*b)) {
            return false;
        }
    }
    return *a == *b;
}

static bool has_prefix_nocase(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++) {
        if (*s == '\0' || lower(*s) != lower(*prefix)) {
            return false;
        }
    }
    return true;
}

/* Whether a comma-separated header value holds token (Connection: close). */
static bool has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *s = value;
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == ',') {
            s++;
        }
        const char *e = s;
        while (*e && *e != ',' && *e != ' ' && *e != '\t') {
            e++;
        }
        if ((size_t)(e - s) == tl) {
            size_t i = 0;
            while (i < tl && lower(s[i]) == lower(token[i])) {
                i++;
            }
            if (i == tl) {
                return true;
            }
        }
        s = e;
    }
    return false;
}

/* Copies at most src_cap bytes of src (app descriptor fields need not end
 * in a NUL when full) into dst, always terminated. */
static void copy_str(char *dst, size_t dst_cap, const char *src, size_t src_cap)
{
    size_t n = 0;
    while (n < src_cap && n + 1 < dst_cap && src[n] != '\0') {
        n++;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- the port's own records (CONFIG_FOTA_NVS_PORT_NAMESPACE) ------------
 *
 * An image is known by the partition it is in and its ELF SHA-256 from the
 * app descriptor: a partition address alone would match whatever was
 * written there later. */

#define RECORD_FORMAT 1u

typedef struct {
    uint32_t address;
    uint8_t elf_sha256[32];
} image_id_t;

/* "slot": the image slot_set_pending marked, with the release's version and
 * counter, so that boot_info reports the signed version even when the
 * app descriptor's (PROJECT_VER) differs. */
typedef struct {
    uint32_t format;
    image_id_t image;
    uint32_t security_counter;
    char version[FOTA_VERSION_MAX + 1];
} slot_record_t;

/* "rb_reason": why boot_reject rolled an image back. */
typedef struct {
    uint32_t format;
    image_id_t image;
    char reason[FOTA_REASON_MAX + 1];
} reason_record_t;

/* "rb_ack": the rolled-back image boot_ack_rollback acknowledged, so that
 * esp_ota_get_last_invalid_partition, which keeps naming it, is reported
 * once. */
typedef struct {
    uint32_t format;
    image_id_t image;
} ack_record_t;

static bool own_get(fota_port_esp_t *p, const char *key, void *buf, size_t size)
{
    size_t n = size;
    if (!p->own_open || nvs_get_blob(p->own, key, buf, &n) != ESP_OK || n != size) {
        return false;
    }
    uint32_t format;
    memcpy(&format, buf, sizeof format);
    return format == RECORD_FORMAT;
}

static fota_err_t own_set(fota_port_esp_t *p, const char *key, const void *buf, size_t size)
{
    if (!p->own_open) {
        return FOTA_ERR_STORAGE;
    }
    esp_err_t e = nvs_set_blob(p->own, key, buf, size);
    if (e == ESP_OK) {
        e = nvs_commit(p->own);
    }
    if (e != ESP_OK) {
        ESP_LOGE(TAG, "nvs: cannot keep %s: %s", key, esp_err_to_name(e));
        return FOTA_ERR_STORAGE;
    }
    return FOTA_OK;
}

static bool same_image(const image_id_t *a, const image_id_t *b)
{
    return a->address == b->address && memcmp(a->elf_sha256, b->elf_sha256, sizeof a->elf_sha256) == 0;
}

static void running_image(const esp_partition_t *running, const esp_app_desc_t *desc, image_id_t *id)
{
    id->address = running->address;
    memcpy(id->elf_sha256, desc->app_elf_sha256, sizeof id->elf_sha256);
}

#if FOTA_DELTA
/* "image": an image's size and the SHA-256 of its bytes in its slot (the
 * release's image, the base of a delta patch). slot_set_pending writes it
 * for the image it marks, from the library's verified figures; an image
 * put there by other means (the factory image) is hashed once at boot. */
typedef struct {
    uint32_t format;
    image_id_t image;
    uint32_t size;
    uint8_t sha256[32];
} image_record_t;

/* Hashes the running image: its length from its own header and segments
 * (esp_image_get_metadata: the .bin as esptool wrote it, checksum and
 * appended digest included), then its bytes. Once per image: the result is
 * kept. */
static bool hash_running(const esp_partition_t *running, image_record_t *rec)
{
    esp_partition_pos_t pos = {.offset = running->address, .size = running->size};
    esp_image_metadata_t meta;
    if (esp_image_get_metadata(&pos, &meta) != ESP_OK || meta.image_len == 0 || meta.image_len > running->size) {
        return false;
    }
    mbedtls_sha256_context s;
    uint8_t buf[256];
    mbedtls_sha256_init(&s);
    bool ok = fota_sha256_start(&s) == 0;
    for (uint32_t off = 0; ok && off < meta.image_len;) {
        size_t n = meta.image_len - off < sizeof buf ? meta.image_len - off : sizeof buf;
        ok = esp_partition_read(running, off, buf, n) == ESP_OK && fota_sha256_update(&s, buf, n) == 0;
        off += (uint32_t)n;
    }
    ok = ok && fota_sha256_finish(&s, rec->sha256) == 0;
    mbedtls_sha256_free(&s);
    rec->size = meta.image_len;
    return ok;
}

/* Fills the running image's size and SHA-256 into out, when known. */
static void running_digest(fota_port_esp_t *p, const esp_partition_t *running, const image_id_t *id,
                           fota_boot_info_t *out)
{
    image_record_t rec;
    if (!(own_get(p, "image", &rec, sizeof rec) && same_image(&rec.image, id))) {
        memset(&rec, 0, sizeof rec);
        rec.format = RECORD_FORMAT;
        rec.image = *id;
        if (!hash_running(running, &rec)) {
            ESP_LOGW(TAG, "boot: the running image's size is unknown: full images only");
            return;
        }
        (void)own_set(p, "image", &rec, sizeof rec); /* else hashed again next boot */
    }
    out->running_known = true;
    out->running_size = rec.size;
    memcpy(out->running_sha256, rec.sha256, sizeof out->running_sha256);
}

static fota_err_t port_running_read(void *ctx, uint32_t off, uint8_t *data, size_t len)
{
    (void)ctx;
    const esp_partition_t *running = esp_ota_get_running_partition();
    if (running == NULL || off > running->size || len > running->size - off) {
        return FOTA_ERR_ARGUMENT;
    }
    return esp_partition_read(running, off, data, len) == ESP_OK ? FOTA_OK : FOTA_ERR_FLASH;
}
#endif

#ifndef CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK
/* The release's security counter of the running image: the one
 * slot_set_pending recorded for it, else its app descriptor's
 * secure_version. */
static uint32_t running_counter(fota_port_esp_t *p, const esp_partition_t *running, const esp_app_desc_t *desc)
{
    slot_record_t rec;
    image_id_t id;
    running_image(running, desc, &id);
    if (own_get(p, "slot", &rec, sizeof rec) && same_image(&rec.image, &id)) {
        return rec.security_counter;
    }
    return desc->secure_version;
}

static uint32_t stored_counter(fota_port_esp_t *p)
{
    uint32_t v = 0;
    if (!p->own_open || nvs_get_u32(p->own, "counter", &v) != ESP_OK) {
        v = 0;
    }
    return v;
}
#endif

/* ---- HTTP ---------------------------------------------------------------- */

/* Keeps the headers the library reads. esp_http_client calls this from
 * esp_http_client_fetch_headers, one call per header. */
static esp_err_t on_http_event(esp_http_client_event_t *evt)
{
    fota_port_esp_t *p = (fota_port_esp_t *)evt->user_data;
    if (p == NULL || evt->event_id != HTTP_EVENT_ON_HEADER || evt->header_key == NULL || evt->header_value == NULL) {
        return ESP_OK;
    }
    const char *v = evt->header_value;
    if (eq_nocase(evt->header_key, "Date")) {
        copy_str(p->http_date, sizeof p->http_date, v, sizeof p->http_date);
    } else if (eq_nocase(evt->header_key, "Retry-After")) {
        copy_str(p->http_retry_after, sizeof p->http_retry_after, v, sizeof p->http_retry_after);
    } else if (eq_nocase(evt->header_key, "Connection")) {
        p->http_close = has_token(v, "close");
    }
    return ESP_OK;
}

static bool method_of(const char *name, esp_http_client_method_t *m)
{
    static const struct {
        const char *name;
        esp_http_client_method_t method;
    } methods[] = {
        {"GET", HTTP_METHOD_GET},       {"POST", HTTP_METHOD_POST},     {"PUT", HTTP_METHOD_PUT},
        {"DELETE", HTTP_METHOD_DELETE}, {"HEAD", HTTP_METHOD_HEAD},     {"PATCH", HTTP_METHOD_PATCH},
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        if (strcmp(name, methods[i].name) == 0) {
            *m = methods[i].method;
            return true;
        }
    }
    return false;
}

/* Retry-After is delay-seconds or an HTTP-date (RFC 9110 10.2.3); a date
 * counts from the answer's Date, the server's clock, when there is one. */
static uint32_t parse_retry_after(const char *s, int64_t date)
{
    if (s[0] == '\0') {
        return 0;
    }
    if (s[0] >= '0' && s[0] <= '9') {
        uint64_t v = 0;
        for (; *s >= '0' && *s <= '9'; s++) {
            v = v * 10 + (uint64_t)(*s - '0');
            if (v > UINT32_MAX) {
                return UINT32_MAX;
            }
        }
        return (uint32_t)v;
    }
    int64_t at = fota_parse_http_date(s);
    if (at == 0) {
        return 0;
    }
    int64_t from = date != 0 ? date : (int64_t)time(NULL);
    int64_t d = at - from;
    if (d <= 0) {
        return 0;
    }
    return d > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)d;
}

/* Removes the request's extra headers from the kept handle, so the next
 * request does not send them again. */
static void forget_headers(fota_port_esp_t *p)
{
    size_t i = 0;
    while (i < p->header_names_len) {
        const char *name = p->header_names + i;
        esp_http_client_delete_header(p->http, name);
        i += strlen(name) + 1;
    }
    p->header_names_len = 0;
}

/* Sets each "Name: value\r\n" line of headers on the handle. */
static fota_err_t set_headers(fota_port_esp_t *p, const char *headers)
{
    const char *h = headers != NULL ? headers : "";
    char line[256];
    while (*h != '\0') {
        const char *eol = strstr(h, "\r\n");
        size_t len = eol != NULL ? (size_t)(eol - h) : strlen(h);
        const char *colon = memchr(h, ':', len);
        if (colon == NULL || colon == h) {
            ESP_LOGE(TAG, "http: malformed header line");
            return FOTA_ERR_ARGUMENT;
        }
        size_t nlen = (size_t)(colon - h);
        const char *v = colon + 1;
        const char *vend = h + len;
        while (v < vend && (*v == ' ' || *v == '\t')) {
            v++;
        }
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t')) {
            vend--;
        }
        size_t vlen = (size_t)(vend - v);
        if (nlen + 1 + vlen + 1 > sizeof line) {
            ESP_LOGE(TAG, "http: header line too long");
            return FOTA_ERR_ARGUMENT;
        }
        memcpy(line, h, nlen);
        line[nlen] = '\0';
        memcpy(line + nlen + 1, v, vlen);
        line[nlen + 1 + vlen] = '\0';
        h = eol != NULL ? eol + 2 : h + len;

        /* esp_http_client writes Host and Content-Length itself, and
         * HTTP/1.1 keeps the connection unless one side says close. */
        if (eq_nocase(line, "Host") || eq_nocase(line, "Content-Length") || eq_nocase(line, "Connection")) {
            continue;
        }
        /* Remember the name first, so a failure below still removes it. */
        if (p->header_names_len + nlen + 1 > sizeof p->header_names) {
            ESP_LOGE(TAG, "http: too many headers");
            return FOTA_ERR_ARGUMENT;
        }
        memcpy(p->header_names + p->header_names_len, line, nlen + 1);
        p->header_names_len += nlen + 1;
        if (esp_http_client_set_header(p->http, line, line + nlen + 1) != ESP_OK) {
            ESP_LOGE(TAG, "http: cannot set header %s (out of memory?)", line);
            return FOTA_ERR_NETWORK;
        }
    }
    return FOTA_OK;
}

/* Ends an exchange: the connection stays open only when keep is true. */
static void http_finish(fota_port_esp_t *p, bool keep)
{
    if (p->http == NULL) {
        return;
    }
    forget_headers(p);
    if (keep) {
        p->http_idle_since_us = esp_timer_get_time();
    } else {
        /* Also after a failed open, which may have left a socket. */
        esp_http_client_close(p->http);
        p->http_connected = false;
    }
}

static fota_err_t http_client_for(fota_port_esp_t *p, esp_http_client_method_t method)
{
    if (p->http != NULL) {
        /* A connection idle for long has likely been closed by the server
         * or a NAT box: open a new one rather than fail the request on it
         * (a signed request cannot be resent as it is: its nonce is spent
         * if the server got it). */
        int64_t idle_us = esp_timer_get_time() - p->http_idle_since_us;
        if (p->http_connected && idle_us > (int64_t)CONFIG_FOTA_HTTP_KEEPALIVE_IDLE_S * 1000000) {
            esp_http_client_close(p->http);
            p->http_connected = false;
        }
        /* A new host or port would close the connection; the port always
         * talks to one server. */
        if (esp_http_client_set_url(p->http, p->url) != ESP_OK ||
            esp_http_client_set_method(p->http, method) != ESP_OK) {
            ESP_LOGE(TAG, "http: cannot set the URL %s", p->url);
            return FOTA_ERR_ARGUMENT;
        }
        return FOTA_OK;
    }

    esp_http_client_config_t hc;
    memset(&hc, 0, sizeof hc);
    hc.url = p->url;
    hc.method = method;
    hc.timeout_ms = p->cfg.timeout_ms;
    hc.event_handler = on_http_event;
    hc.user_data = p;
    /* The library decides what a 3xx or 401 means; the open/read calls
     * used here never follow them, this only makes it explicit. */
    hc.disable_auto_redirect = true;
    /* Larger than the 512-byte default: the request line and the signed
     * headers go out in pieces of the transmit buffer, and fewer reads of
     * the answer's headers make a split header value (see README) rarer. */
    hc.buffer_size = 1024;
    hc.buffer_size_tx = 1024;
    if (p->cfg.server_cert_pem != NULL) {
        hc.cert_pem = p->cfg.server_cert_pem;
    }
#ifdef CONFIG_MBEDTLS_CERTIFICATE_BUNDLE
    else {
        hc.crt_bundle_attach = esp_crt_bundle_attach;
    }
#endif
    p->http = esp_http_client_init(&hc);
    if (p->http == NULL) {
        ESP_LOGE(TAG, "http: esp_http_client_init failed (out of memory?)");
        return FOTA_ERR_NETWORK;
    }
    p->http_connected = false;
    return FOTA_OK;
}

static fota_err_t port_http_begin(void *ctx, const char *method, const char *uri, const char *headers,
                                  const uint8_t *body, size_t body_len, fota_http_response_t *resp)
{
    fota_port_esp_t *p = (fota_port_esp_t *)ctx;
    memset(resp, 0, sizeof *resp);
    resp->content_length = -1;

    esp_http_client_method_t m;
    if (!method_of(method, &m) || uri == NULL || uri[0] != '/' || body_len > (size_t)INT_MAX) {
        return FOTA_ERR_ARGUMENT;
    }
    /* uri is the request-target the library signed, the server URL's path
     * prefix included, so it follows scheme://host:port directly. */
    size_t ulen = strlen(uri);
    if (ulen > FOTA_PORT_ESP_URL_MAX - p->origin_len) {
        ESP_LOGE(TAG, "http: URL too long");
        return FOTA_ERR_ARGUMENT;
    }
    memcpy(p->url + p->origin_len, uri, ulen + 1);

    fota_err_t err = http_client_for(p, m);
    if (err != FOTA_OK) {
        return err;
    }
    p->http_date[0] = '\0';
    p->http_retry_after[0] = '\0';
    p->http_close = false;

    err = set_headers(p, headers);
    if (err != FOTA_OK) {
        http_finish(p, false);
        return err;
    }
    /* open connects when there is no connection yet and sends the request
     * line and headers, Content-Length: body_len among them. */
    esp_err_t e = esp_http_client_open(p->http, (int)body_len);
    if (e != ESP_OK) {
        ESP_LOGW(TAG, "http: %s %s: %s", method, uri, esp_err_to_name(e));
        http_finish(p, false);
        return FOTA_ERR_NETWORK;
    }
    p->http_connected = true;
    if (body_len > 0 && esp_http_client_write(p->http, (const char *)body, (int)body_len) != (int)body_len) {
        ESP_LOGW(TAG, "http: %s %s: sending the body failed", method, uri);
        http_finish(p, false);
        return FOTA_ERR_NETWORK;
    }
    /* Negative: a failure, or -ESP_ERR_HTTP_EAGAIN when the timeout passed. */
    if (esp_http_client_fetch_headers(p->http) < 0) {
        ESP_LOGW(TAG, "http: %s %s: no answer", method, uri);
        http_finish(p, false);
        return FOTA_ERR_NETWORK;
    }
    resp->status = esp_http_client_get_status_code(p->http);
    /* -1 for a chunked answer, as fota_http_response_t wants. */
    int64_t len = esp_http_client_get_content_length(p->http);
    resp->content_length = len < 0 ? -1 : len;
    resp->date = p->http_date[0] != '\0' ? fota_parse_http_date(p->http_date) : 0;
    resp->retry_after = parse_retry_after(p->http_retry_after, resp->date);
    return FOTA_OK;
}

static int32_t port_http_read(void *ctx, uint8_t *buf, size_t len)
{
    fota_port_esp_t *p = (fota_port_esp_t *)ctx;
    if (p->http == NULL || !p->http_connected) {
        return -1;
    }
    if (len == 0) {
        return 0;
    }
    int want = len > (size_t)INT_MAX ? INT_MAX : (int)len;
    /* esp_http_client_read de-chunks; it returns 0 both at the end of the
     * body and when the connection ended early, which
     * esp_http_client_is_complete_data_received tells apart. */
    int n = esp_http_client_read(p->http, (char *)buf, want);
    if (n > 0) {
        return (int32_t)n;
    }
    if (n == 0 && esp_http_client_is_complete_data_received(p->http)) {
        return 0;
    }
    return -1;
}

static void port_http_end(void *ctx, bool complete)
{
    fota_port_esp_t *p = (fota_port_esp_t *)ctx;
    if (p->http == NULL) {
        return;
    }
    /* Reuse the connection only after a whole answer that did not ask to
     * close it: the next answer must not start inside this one's body. */
    bool keep = complete && p->http_connected && !p->http_close && CONFIG_FOTA_HTTP_KEEPALIVE_IDLE_S > 0 &&
                esp_http_client_is_complete_data_received(p->http);
    http_finish(p, keep);
}

/* ---- the boot step's decision -------------------------------------------- */

/* The image the bootloader rolled back from, if esp_ota_get_last_invalid_partition
 * still names one whose app descriptor can be read. */
static bool rolled_back_image(const esp_partition_t **part, esp_app_desc_t *desc, image_id_t *id)
{
    const esp_partition_t *bad = esp_ota_get_last_invalid_partition();
    if (bad == NULL || esp_ota_get_partition_description(bad, desc) != ESP_OK) {
        return false;
    }
    *part = bad;
    id->address = bad->address;
    memcpy(id->elf_sha256, desc->app_elf_sha256, sizeof id->elf_sha256);
    return true;
}

static fota_err_t port_boot_info(void *ctx, fota_boot_info_t *out)
{
    fota_port_esp_t *p = (fota_port_esp_t *)ctx;
    memset(out, 0, sizeof *out);

    const esp_partition_t *running = esp_ota_get_running_partition();
    const esp_app_desc_t *desc = esp_app_get_description();
    if (running == NULL || desc == NULL) {
        ESP_LOGE(TAG, "boot: no running partition");
        return FOTA_ERR_FLASH;
    }
    image_id_t run_id;
    running_image(running, desc, &run_id);

    slot_record_t rec;
    bool have_rec = own_get(p, "slot", &rec, sizeof rec);
    if (have_rec && same_image(&rec.image, &run_id)) {
        copy_str(out->running_version, sizeof out->running_version, rec.version, sizeof rec.version);
    } else {
        copy_str(out->running_version, sizeof out->running_version, desc->version, sizeof desc->version);
    }

    esp_ota_img_states_t state;
    out->trial = esp_ota_get_state_partition(running, &state) == ESP_OK && state == ESP_OTA_IMG_PENDING_VERIFY;
#if FOTA_DELTA
    running_digest(p, running, &run_id, out);
#endif

#ifdef CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK
    /* The bootloader refuses images below the eFuse secure version. */
    out->security_counter = esp_efuse_read_secure_version();
#else
    out->security_counter = stored_counter(p);
    /* A confirmed image put there by other means than this port still
     * counts as the device's level. */
    if (!out->trial) {
        uint32_t own = running_counter(p, running, desc);
        if (own > out->security_counter) {
            out->security_counter = own;
        }
    }
#endif

    const esp_partition_t *next = esp_ota_get_next_update_partition(NULL);
    out->slot_size = next != NULL ? next->size : 0;

    const esp_partition_t *bad;
    esp_app_desc_t bad_desc;
    image_id_t bad_id;
    if (rolled_back_image(&bad, &bad_desc, &bad_id)) {
        ack_record_t ack;
        if (!(own_get(p, "rb_ack", &ack, sizeof ack) && same_image(&ack.image, &bad_id))) {
            if (have_rec && same_image(&rec.image, &bad_id)) {
                copy_str(out->rolled_back_version, sizeof out->rolled_back_version, rec.version, sizeof rec.version);
            } else {
                copy_str(out->rolled_back_version, sizeof out->rolled_back_version, bad_desc.version,
                         sizeof bad_desc.version);
            }
            reason_record_t why;
            esp_ota_img_states_t bad_state = ESP_OTA_IMG_UNDEFINED;
            (void)esp_ota_get_state_partition(bad, &bad_state);
            const char *reason;
            if (own_get(p, "rb_reason", &why, sizeof why) && same_image(&why.image, &bad_id)) {
                reason = why.reason;
            } else if (bad_state == ESP_OTA_IMG_ABORTED) {
                /* The bootloader found it still pending verification: it
                 * reset before it could confirm or reject itself. */
                reason = "the new image reset during its trial boot (crash, watchdog or power loss)";
            } else {
                reason = "the new image was marked invalid during its trial boot";
            }
            copy_str(out->rollback_reason, sizeof out->rollback_reason, reason, FOTA_REASON_MAX + 1);
        }
    }
    return FOTA_OK;
}

static fota_err_t port_boot_ack_rollback(void *ctx)
{
    fota_port_esp_t *p = (fota_port_esp_t *)ctx;
    const esp_partition_t *bad;
    esp_app_desc_t desc;
    ack_record_t ack;
    memset(&ack, 0, sizeof ack);
    ack.format = RECORD_FORMAT;
    if (!rolled_back_image(&bad, &desc, &ack.image)) {
        return FOTA_OK;
    }
    fota_err_t err = own_set(p, "rb_ack", &ack, sizeof ack);
    if (err == FOTA_OK && nvs_erase_key(p->own, "rb_reason") == ESP_OK) {
        (void)nvs_commit(p->own);
    }
    return err;
}

static fota_err_t port_boot_confirm(void *ctx)
{
    /* With CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK this also burns the image's
     * secure_version into eFuse. */
    esp_err_t e = esp_ota_mark_app_valid_cancel_rollback();
    if (e != ESP_OK) {
        ESP_LOGE(TAG, "boot: cannot mark the image valid: %s", esp_err_to_name(e));
        return FOTA_ERR_FLASH;
    }
#ifdef CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK
    (void)ctx;
#else
    fota_port_esp_t *p = (fota_port_esp_t *)ctx;
    const esp_partition_t *running = esp_ota_get_running_partition();
    const esp_app_desc_t *desc = esp_app_get_description();
    if (running == NULL || desc == NULL) {
        return FOTA_ERR_FLASH;
    }
    uint32_t own = running_counter(p, running, desc);
    if (own > stored_counter(p)) {
        e = nvs_set_u32(p->own, "counter", own);
        if (e == ESP_OK) {
            e = nvs_commit(p->own);
        }
        if (e != ESP_OK) {
            ESP_LOGE(TAG, "boot: cannot raise the security counter: %s", esp_err_to_name(e));
            return FOTA_ERR_STORAGE;
        }
    }
#endif
    return FOTA_OK;
}

/* Reboots: esp_ota_mark_app_invalid_rollback_and_reboot restarts into the
 * previous image when it succeeds, so this returns only on failure. */
static fota_err_t port_boot_reject(void *ctx, const char *reason)
{
    fota_port_esp_t *p = (fota_port_esp_t *)ctx;
    const esp_partition_t *running = esp_ota_get_running_partition();
    const esp_app_desc_t *desc = esp_app_get_description();
    if (running != NULL && desc != NULL) {
        reason_record_t why;
        memset(&why, 0, sizeof why);
        why.format = RECORD_FORMAT;
        running_image(running, desc, &why.image);
        const char *r = reason != NULL ? reason : "";
        copy_str(why.reason, sizeof why.reason, r, strlen(r) + 1);
        /* Losing the reason must not keep a failed image running. */
        (void)own_set(p, "rb_reason", &why, sizeof why);
    }
    ESP_LOGW(TAG, "boot: rejecting this image (%s); rebooting into the previous one", reason != NULL ? reason : "");
    esp_err_t e = esp_ota_mark_app_invalid_rollback_and_reboot();
    ESP_LOGE(TAG, "boot: cannot roll back: %s", esp_err_to_name(e));
    return FOTA_ERR_FLASH;
}

/* ---- the inactive slot ---------------------------------------------------
 *
 * NOR flash: a write can only clear bits of an erased sector. After a power
 * cut the library writes again from its last checkpoint, the same bytes to
 * the same offsets, which leaves the flash as it was; with flash encryption
 * too, as the same plaintext at the same address encrypts to the same
 * bytes. */

static const esp_partition_t *inactive_slot(void)
{
    const esp_partition_t *s = esp_ota_get_next_update_partition(NULL);
    if (s == NULL) {
        ESP_LOGE(TAG, "slot: no OTA app partition to update (partition table?)");
    }
    return s;
}

/* The inactive slot, looked up at every call (after a reboot the library
 * resumes without a slot_begin), for len bytes at off: *s is NULL when
 * there is nothing to do (an error, or len 0). */
static fota_err_t slot_range(uint32_t off, size_t len, const esp_partition_t **s)
{
    *s = inactive_slot();
    if (*s == NULL) {
        return FOTA_ERR_FLASH;
    }
    if (off > (*s)->size || len > (size_t)((*s)->size - off)) {
        ESP_LOGE(TAG, "slot: %u bytes at %u are past the slot's end", (unsigned)len, (unsigned)off);
        *s = NULL;
        return FOTA_ERR_TOO_LARGE;
    }
    if (len == 0) {
        *s = NULL;
    }
    return FOTA_OK;
}

static fota_err_t flash_write(const esp_partition_t *s, uint32_t off, const void *data, size_t len)
{
    esp_err_t e = esp_partition_write(s, off, data, len);
    if (e != ESP_OK) {
        ESP_LOGE(TAG, "slot: write at %u: %s", (unsigned)off, esp_err_to_name(e));
        return FOTA_ERR_FLASH;
    }
    return FOTA_OK;
}

#if FOTA_DELTA
/* "tail": the bytes of an encrypted slot's partial block at a checkpoint.
 * A patch's checkpoints fall anywhere in the image, not on block
 * boundaries, and a block once written takes no more bytes: so slot_sync
 * keeps them here rather than in flash, and init restores them (slot_read
 * overlays them) for a resumed download to continue the block. */
typedef struct {
    uint32_t format;
    uint32_t address; /* the slot's */
    uint32_t off;
    uint32_t len;
    uint8_t bytes[16];
} tail_record_t;

static fota_err_t save_tail(fota_port_esp_t *p, const esp_partition_t *s)
{
    tail_record_t rec;
    memset(&rec, 0, sizeof rec);
    rec.format = RECORD_FORMAT;
    rec.address = s->address;
    rec.off = p->tail_off;
    rec.len = p->tail_len;
    memcpy(rec.bytes, p->tail, p->tail_len);
    return own_set(p, "tail", &rec, sizeof rec);
}

static void restore_tail(fota_port_esp_t *p)
{
    tail_record_t rec;
    const esp_partition_t *s = inactive_slot();
    if (s != NULL && own_get(p, "tail", &rec, sizeof rec) && rec.address == s->address && rec.len < 16 &&
        rec.off % 16 == 0) {
        memcpy(p->tail, rec.bytes, rec.len);
        p->tail_off = rec.off;
        p->tail_len = (uint8_t)rec.len;
    }
}

static void forget_tail(fota_port_esp_t *p)
{
    if (p->own_open && nvs_erase_key(p->own, "tail") == ESP_OK) {
        (void)nvs_commit(p->own);
    }
}
#endif

static fota_err_t port_slot_begin(void *ctx, uint32_t size)
{
    fota_port_esp_t *p = (fota_port_esp_t *)ctx;
    const esp_partition_t *s = inactive_slot();
    if (s == NULL) {
        return FOTA_ERR_FLASH;
    }
    if (size > s->size) {
        return FOTA_ERR_TOO_LARGE;
    }
    /* On trial the other slot holds the image a rollback returns to. */
    const esp_partition_t *running = esp_ota_get_running_partition();
    esp_ota_img_states_t state;
    if (running != NULL && esp_ota_get_state_partition(running, &state) == ESP_OK &&
        state == ESP_OTA_IMG_PENDING_VERIFY) {
        return FOTA_ERR_ON_TRIAL;
    }
    /* esp_partition_erase_range takes whole erase blocks (4 KiB sectors). */
    uint32_t sector = s->erase_size != 0 ? s->erase_size : 4096;
    uint32_t len = size == 0 ? sector : size + (sector - size % sector) % sector;
    if (len > s->size) {
        len = s->size;
    }
    p->tail_len = 0;
#if FOTA_DELTA
    forget_tail(p);
#endif
    esp_err_t e = esp_partition_erase_range(s, 0, len);
    if (e != ESP_OK) {
        ESP_LOGE(TAG, "slot: erase of %u bytes: %s", (unsigned)len, esp_err_to_name(e));
        return FOTA_ERR_FLASH;
    }
    return FOTA_OK;
}

/* An encrypted partition takes writes of whole 16-byte blocks at 16-byte
 * offsets (esp_partition_write, esp_flash_write_encrypted), and a block
 * once written cannot take more bytes. Bytes that do not fill a block wait
 * in p->tail for the next write; slot_sync and slot_set_pending write them
 * padded. That is right because the decrypted image comes in whole AES
 * blocks except at its end, so the library's writes and checkpoints fall on
 * 16-byte boundaries and only the image's last block is ever partial. A
 * delta patch's output does not (its writes and checkpoints fall
 * anywhere): with FOTA_DELTA slot_sync keeps the partial block in NVS
 * rather than writing it, so a resumed download continues it. */
static fota_err_t write_encrypted(fota_port_esp_t *p, const esp_partition_t *s, uint32_t off, const uint8_t *data,
                                  size_t len)
{
    /* A write that does not continue the waiting bytes restarts from a
     * checkpoint: they will come again. */
    if (p->tail_len != 0 && off != p->tail_off + p->tail_len) {
        p->tail_len = 0;
    }
    if (p->tail_len != 0) {
        size_t n = 16u - p->tail_len;
        if (n > len) {
            n = len;
        }
        memcpy(p->tail + p->tail_len, data, n);
        p->tail_len = (uint8_t)(p->tail_len + n);
        data += n;
        len -= n;
        off += (uint32_t)n;
        if (p->tail_len < 16) {
            return FOTA_OK;
        }
        fota_err_t err = flash_write(s, p->tail_off, p->tail, 16);
        p->tail_len = 0;
        if (err != FOTA_OK) {
            return err;
        }
    }
    if (len == 0) {
        return FOTA_OK;
    }
    if (off % 16 != 0) {
        /* Only after a partial block was written: a checkpoint inside
         * the image that did not fall on a block boundary. */
        ESP_LOGE(TAG, "slot: flash encryption needs writes at 16-byte offsets, not %u", (unsigned)off);
        return FOTA_ERR_FLASH;
    }
    size_t whole = len - len % 16;
    if (whole > 0) {
        fota_err_t err = flash_write(s, off, data, whole);
        if (err != FOTA_OK) {
            return err;
        }
    }
    if (whole < len) {
        p->tail_off = off + (uint32_t)whole;
        p->tail_len = (uint8_t)(len - whole);
        memcpy(p->tail, data + whole, p->tail_len);
    }
    return FOTA_OK;
}


static fota_err_t flush_tail(fota_port_esp_t *p, const esp_partition_t *s)
{
    if (p->tail_len == 0) {
        return FOTA_OK;
    }
    /* The image ends inside this block; what follows it is never read. */
    memset(p->tail + p->tail_len, 0xff, 16u - p->tail_len);
    fota_err_t err = flash_write(s, p->tail_off, p->tail, 16);
    p->tail_len = 0;
    return err;
}

static fota_err_t port_slot_write(void *ctx, uint32_t off, const uint8_t *data, size_t len)
{
    fota_port_esp_t *p = (fota_port_esp_t *)ctx;
    const esp_partition_t *s;
    fota_err_t err = slot_range(off, len, &s);
    if (s == NULL) {
        return err;
    }
    if (s->encrypted) {
        return write_encrypted(p, s, off, data, len);
    }
    return flash_write(s, off, data, len);
}

static fota_err_t port_slot_read(void *ctx, uint32_t off, uint8_t *data, size_t len)
{
    fota_port_esp_t *p = (fota_port_esp_t *)ctx;
    const esp_partition_t *s;
    fota_err_t err = slot_range(off, len, &s);
    if (s == NULL) {
        return err;
    }
    /* Decrypts transparently on an encrypted partition. */
    esp_err_t e = esp_partition_read(s, off, data, len);
    if (e != ESP_OK) {
        ESP_LOGE(TAG, "slot: read at %u: %s", (unsigned)off, esp_err_to_name(e));
        return FOTA_ERR_FLASH;
    }
    /* Bytes still waiting for their block are not in flash yet. */
    if (p->tail_len != 0) {
        uint32_t a = off > p->tail_off ? off : p->tail_off;
        uint32_t b_read = off + (uint32_t)len;
        uint32_t b_tail = p->tail_off + p->tail_len;
        uint32_t b = b_read < b_tail ? b_read : b_tail;
        if (a < b) {
            memcpy(data + (a - off), p->tail + (a - p->tail_off), b - a);
        }
    }
    return FOTA_OK;
}

/* esp_partition_write returns once the flash holds the bytes: there is no
 * write cache to flush. On an encrypted slot the image's last, partial
 * block is written now (see write_encrypted), so that a verified image
 * kept for its install window survives a reboot whole; with delta updates
 * a partial block is kept in NVS instead ("tail"), since a patch's
 * checkpoint may fall inside the image and the block must take more bytes
 * (slot_set_pending writes it). */
static fota_err_t port_slot_sync(void *ctx)
{
    fota_port_esp_t *p = (fota_port_esp_t *)ctx;
    if (p->tail_len == 0) {
        return FOTA_OK;
    }
    const esp_partition_t *s = inactive_slot();
    if (s == NULL) {
        return FOTA_ERR_FLASH;
    }
#if FOTA_DELTA
    return save_tail(p, s);
#else
    return flush_tail(p, s);
#endif
}

static fota_err_t port_slot_set_pending(void *ctx, const char *version, uint32_t security_counter, uint32_t size,
                                        const uint8_t sha256[32])
{
    fota_port_esp_t *p = (fota_port_esp_t *)ctx;
    /* The library checked the image's SHA-256 (sha256, size bytes) before
     * calling; esp_ota_set_boot_partition checks the image's own format
     * and hash again, and its signature under secure boot. */
    (void)size;
    (void)sha256;
    const esp_partition_t *s = inactive_slot();
    if (s == NULL) {
        return FOTA_ERR_FLASH;
    }
    fota_err_t err = flush_tail(p, s);
    if (err != FOTA_OK) {
        return err;
    }
    esp_app_desc_t desc;
    esp_err_t e = esp_ota_get_partition_description(s, &desc);
    if (e != ESP_OK) {
        ESP_LOGE(TAG, "slot: the image has no ESP-IDF app descriptor: %s", esp_err_to_name(e));
        return FOTA_ERR_FLASH;
    }
    char app_version[sizeof desc.version + 1];
    copy_str(app_version, sizeof app_version, desc.version, sizeof desc.version);
    if (strcmp(app_version, version) != 0) {
        /* The port reports the signed version; a differing PROJECT_VER only
         * confuses whoever reads esp_app_get_description. */
        ESP_LOGW(TAG, "slot: the image calls itself %s, the release %s", app_version, version);
    }
#ifdef CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK
    if (desc.secure_version != security_counter) {
        ESP_LOGW(TAG, "slot: the image's secure_version %u is not the release's counter %u",
                 (unsigned)desc.secure_version, (unsigned)security_counter);
    }
#endif

    slot_record_t rec;
    memset(&rec, 0, sizeof rec);
    rec.format = RECORD_FORMAT;
    rec.image.address = s->address;
    memcpy(rec.image.elf_sha256, desc.app_elf_sha256, sizeof rec.image.elf_sha256);
    rec.security_counter = security_counter;
    copy_str(rec.version, sizeof rec.version, version, strlen(version) + 1);
    err = own_set(p, "slot", &rec, sizeof rec);
    if (err != FOTA_OK) {
        return err;
    }
#if FOTA_DELTA
    /* The new image's figures, verified by the library: the base of the
     * next delta, without hashing it at its boot. */
    image_record_t img;
    memset(&img, 0, sizeof img);
    img.format = RECORD_FORMAT;
    img.image = rec.image;
    img.size = size;
    memcpy(img.sha256, sha256, sizeof img.sha256);
    err = own_set(p, "image", &img, sizeof img);
    if (err != FOTA_OK) {
        return err;
    }
#endif

    /* With CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE the slot boots next as
     * ESP_OTA_IMG_NEW, which the bootloader turns into PENDING_VERIFY. */
    e = esp_ota_set_boot_partition(s);
    switch (e) {
    case ESP_OK:
        return FOTA_OK;
    case ESP_ERR_OTA_VALIDATE_FAILED:
        ESP_LOGE(TAG, "slot: ESP-IDF refused the image (not a valid app, or its secure boot signature)");
        return FOTA_ERR_FLASH;
    case ESP_ERR_OTA_SMALL_SEC_VER:
        /* ESP-IDF has erased the slot. */
        ESP_LOGE(TAG, "slot: the image's secure_version is below the eFuse's");
        return FOTA_ERR_COUNTER;
    default:
        ESP_LOGE(TAG, "slot: esp_ota_set_boot_partition: %s", esp_err_to_name(e));
        return FOTA_ERR_FLASH;
    }
}

/* ---- records ------------------------------------------------------------ */

static fota_err_t check_key(const char *key)
{
    size_t n = key != NULL ? strlen(key) : 0;
    if (n == 0 || n > KEY_MAX) {
        ESP_LOGE(TAG, "nvs: key '%s' is not 1 to %d characters", key != NULL ? key : "", KEY_MAX);
        return FOTA_ERR_ARGUMENT;
    }
    return FOTA_OK;
}

static fota_err_t port_kv_get(void *ctx, const char *key, uint8_t *buf, size_t cap, size_t *len)
{
    fota_port_esp_t *p = (fota_port_esp_t *)ctx;
    fota_err_t err = check_key(key);
    if (err != FOTA_OK) {
        return err;
    }
    if (!p->kv_open) {
        return FOTA_ERR_STORAGE;
    }
    /* With no room, ask only for the length (a NULL buffer does that). */
    size_t n = cap;
    esp_err_t e = nvs_get_blob(p->kv, key, cap > 0 ? buf : NULL, &n);
    if (e == ESP_ERR_NVS_NOT_FOUND) {
        return FOTA_ERR_NOT_FOUND;
    }
    if (e == ESP_ERR_NVS_INVALID_LENGTH) {
        size_t need = 0;
        if (nvs_get_blob(p->kv, key, NULL, &need) == ESP_OK) {
            *len = need;
        }
        return FOTA_ERR_BUFFER;
    }
    if (e != ESP_OK) {
        ESP_LOGE(TAG, "nvs: read %s: %s", key, esp_err_to_name(e));
        return FOTA_ERR_STORAGE;
    }
    *len = n;
    return n > cap ? FOTA_ERR_BUFFER : FOTA_OK;
}

/* NVS writes the new entry before it erases the old one, so a power cut
 * leaves one or the other, as kv_set must. */
static fota_err_t port_kv_set(void *ctx, const char *key, const uint8_t *val, size_t len)
{
    fota_port_esp_t *p = (fota_port_esp_t *)ctx;
    fota_err_t err = check_key(key);
    if (err != FOTA_OK) {
        return err;
    }
    if (!p->kv_open) {
        return FOTA_ERR_STORAGE;
    }
    esp_err_t e = nvs_set_blob(p->kv, key, val, len);
    if (e == ESP_OK) {
        e = nvs_commit(p->kv);
    }
    if (e != ESP_OK) {
        ESP_LOGE(TAG, "nvs: write %s (%u bytes): %s", key, (unsigned)len, esp_err_to_name(e));
        return FOTA_ERR_STORAGE;
    }
    return FOTA_OK;
}

/* Deleting an absent key succeeds: the record is gone either way. */
static fota_err_t port_kv_delete(void *ctx, const char *key)
{
    fota_port_esp_t *p = (fota_port_esp_t *)ctx;
    fota_err_t err = check_key(key);
    if (err != FOTA_OK) {
        return err;
    }
    if (!p->kv_open) {
        return FOTA_ERR_STORAGE;
    }
    esp_err_t e = nvs_erase_key(p->kv, key);
    if (e == ESP_ERR_NVS_NOT_FOUND) {
        return FOTA_OK;
    }
    if (e == ESP_OK) {
        e = nvs_commit(p->kv);
    }
    if (e != ESP_OK) {
        ESP_LOGE(TAG, "nvs: delete %s: %s", key, esp_err_to_name(e));
        return FOTA_ERR_STORAGE;
    }
    return FOTA_OK;
}

/* ---- time, randomness, log --------------------------------------------- */

/* Setting the clock (SNTP) is the application's business; the library
 * corrects a wrong clock by the server's Date. */
static int64_t port_now(void *ctx)
{
    (void)ctx;
    time_t t = time(NULL);
    return t == (time_t)-1 ? 0 : (int64_t)t;
}

static void port_sleep_ms(void *ctx, uint32_t ms)
{
    (void)ctx;
    /* In steps, so pdMS_TO_TICKS's 32-bit product cannot overflow, and at
     * least one tick, which a short wait at a low tick rate would round to. */
    while (ms > 0) {
        uint32_t step = ms > 60000u ? 60000u : ms;
        TickType_t ticks = pdMS_TO_TICKS(step);
        vTaskDelay(ticks > 0 ? ticks : 1);
        ms -= step;
    }
}

/* The hardware RNG is a true random source while Wi-Fi or Bluetooth runs,
 * as it does whenever the library talks to the server. */
static fota_err_t port_random(void *ctx, uint8_t *buf, size_t len)
{
    (void)ctx;
    esp_fill_random(buf, len);
    return FOTA_OK;
}

static void port_log(void *ctx, fota_log_level_t level, const char *line)
{
    (void)ctx;
    if ((int)level > CONFIG_FOTA_LOG_LEVEL) {
        return;
    }
    switch (level) {
    case FOTA_LOG_ERROR:
        ESP_LOGE(TAG, "%s", line);
        break;
    case FOTA_LOG_WARN:
        ESP_LOGW(TAG, "%s", line);
        break;
    case FOTA_LOG_INFO:
        ESP_LOGI(TAG, "%s", line);
        break;
    default:
        ESP_LOGD(TAG, "%s", line);
        break;
    }
}

/* ---- set-up -------------------------------------------------------------- */

esp_err_t fota_port_esp_init(fota_port_esp_t *p, const fota_port_esp_config_t *cfg, fota_port_t *port)
{
    if (p == NULL || cfg == NULL || port == NULL || cfg->server_url == NULL) {
        return ESP_ERR_INVALID_ARG;
    }
    memset(p, 0, sizeof *p);
    p->cfg = *cfg;
    if (p->cfg.timeout_ms <= 0) {
        p->cfg.timeout_ms = CONFIG_FOTA_HTTP_TIMEOUT_MS;
    }

    /* Keep scheme://host[:port]: uri carries the path. */
    const char *url = cfg->server_url;
    bool https = has_prefix_nocase(url, "https://");
    if (!https && !has_prefix_nocase(url, "http://")) {
        ESP_LOGE(TAG, "server URL %s: not http(s)://host[:port][/prefix]", url);
        return ESP_ERR_INVALID_ARG;
    }
    const char *host = strstr(url, "://") + 3;
    const char *end = strchr(host, '/');
    size_t origin_len = end != NULL ? (size_t)(end - url) : strlen(url);
    if (origin_len == (size_t)(host - url) || origin_len >= FOTA_PORT_ESP_URL_MAX) {
        ESP_LOGE(TAG, "server URL %s: no host, or too long", url);
        return ESP_ERR_INVALID_ARG;
    }
    memcpy(p->url, url, origin_len);
    p->url[origin_len] = '\0';
    p->origin_len = origin_len;

    if (https && cfg->server_cert_pem == NULL) {
#ifndef CONFIG_MBEDTLS_CERTIFICATE_BUNDLE
        ESP_LOGE(TAG, "https needs server_cert_pem or CONFIG_MBEDTLS_CERTIFICATE_BUNDLE");
        return ESP_ERR_INVALID_ARG;
#endif
    }
    if (!https) {
        /* docs/PROTOCOL.md: without TLS the Date the clock is corrected by
         * is not authenticated. */
        ESP_LOGW(TAG, "server URL is not https: requests are signed but not private");
    }
#ifndef CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE
    ESP_LOGW(TAG, "CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE is off: a new image is never on trial, "
                  "so nothing rolls it back if it fails");
#endif

    esp_err_t e = nvs_open(CONFIG_FOTA_NVS_NAMESPACE, NVS_READWRITE, &p->kv);
    if (e != ESP_OK) {
        ESP_LOGE(TAG, "nvs_open %s: %s (nvs_flash_init first)", CONFIG_FOTA_NVS_NAMESPACE, esp_err_to_name(e));
        return e;
    }
    p->kv_open = true;
    e = nvs_open(CONFIG_FOTA_NVS_PORT_NAMESPACE, NVS_READWRITE, &p->own);
    if (e != ESP_OK) {
        ESP_LOGE(TAG, "nvs_open %s: %s", CONFIG_FOTA_NVS_PORT_NAMESPACE, esp_err_to_name(e));
        nvs_close(p->kv);
        p->kv_open = false;
        return e;
    }
    p->own_open = true;
#if FOTA_DELTA
    restore_tail(p);
#endif

    memset(port, 0, sizeof *port);
    port->ctx = p;
    port->http_begin = port_http_begin;
    port->http_read = port_http_read;
    port->http_end = port_http_end;
    port->boot_info = port_boot_info;
    port->boot_ack_rollback = port_boot_ack_rollback;
    port->slot_begin = port_slot_begin;
    port->slot_write = port_slot_write;
    port->slot_read = port_slot_read;
    port->slot_sync = port_slot_sync;
    port->slot_set_pending = port_slot_set_pending;
#if FOTA_DELTA
    port->running_read = port_running_read;
#endif
    port->boot_confirm = port_boot_confirm;
    port->boot_reject = port_boot_reject;
    port->kv_get = port_kv_get;
    port->kv_set = port_kv_set;
    port->kv_delete = port_kv_delete;
    port->now = port_now;
    port->sleep_ms = port_sleep_ms;
    port->random = port_random;
    port->log = port_log;
    return ESP_OK;
}

void fota_port_esp_deinit(fota_port_esp_t *p)
{
    if (p == NULL) {
        return;
    }
    if (p->http != NULL) {
        esp_http_client_cleanup(p->http);
        p->http = NULL;
        p->http_connected = false;
    }
    if (p->own_open) {
        nvs_close(p->own);
        p->own_open = false;
    }
    if (p->kv_open) {
        nvs_close(p->kv);
        p->kv_open = false;
    }
}
