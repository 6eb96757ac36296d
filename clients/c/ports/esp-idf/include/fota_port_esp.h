/*
 * fota C client: the ESP-IDF port (ESP-IDF 5.x).
 *
 * Implements fota_port_t with esp_http_client (HTTP and HTTPS), the OTA
 * app partitions (esp_ota_ops, esp_partition) and NVS. The caller owns the
 * fota_port_esp_t, usually a static, so nothing here allocates except what
 * esp_http_client and NVS allocate themselves.
 *
 *     static fota_port_esp_t esp;
 *     static fota_port_t port;
 *     fota_port_esp_config_t pc = { .server_url = OTA_SERVER_URL };
 *     ESP_ERROR_CHECK(fota_port_esp_init(&esp, &pc, &port));
 *     fota_init(&client, &cfg, &port, work, sizeof(work));
 *
 * NVS must be initialised (nvs_flash_init) before fota_port_esp_init.
 * boot_reject reboots the device (esp_ota_mark_app_invalid_rollback_and_reboot
 * does): see README.md.
 */
#ifndef FOTA_PORT_ESP_H
#define FOTA_PORT_ESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esp_err.h"
#include "esp_http_client.h"
#include "esp_partition.h"
#include "nvs.h"

#include "fota_client.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The longest URL the port builds: the server's scheme://host:port plus the
 * request's path and query (a chunks request with a 64-character session id
 * is about 130 characters). */
#define FOTA_PORT_ESP_URL_MAX 384

/* Room for the names of one request's extra headers, which the port removes
 * from the reused esp_http_client handle after the exchange. */
#define FOTA_PORT_ESP_HEADER_NAMES_MAX 192

typedef struct {
    /* OTA_SERVER_URL of keys.h: "http://host:port[/prefix]" or https. Only
     * its scheme, host and port are used: the library passes the whole
     * request-target, prefix included, as it signed it. Must outlive the
     * port. */
    const char *server_url;
    /* https only: the CA certificate (PEM, NUL-terminated) that verifies the
     * server. NULL: ESP-IDF's certificate bundle, when
     * CONFIG_MBEDTLS_CERTIFICATE_BUNDLE is set. Must outlive the port. */
    const char *server_cert_pem;
    /* Network timeout of one connect, write or read; 0:
     * CONFIG_FOTA_HTTP_TIMEOUT_MS. */
    int timeout_ms;
} fota_port_esp_config_t;

/* The port's state. Its fields are the port's own: read none of them. */
typedef struct {
    fota_port_esp_config_t cfg;
    size_t origin_len;                  /* scheme://host[:port] in url */
    char url[FOTA_PORT_ESP_URL_MAX + 1];

    esp_http_client_handle_t http;      /* kept between requests for keep-alive */
    bool http_connected;                /* a connection may be open on http */
    int64_t http_idle_since_us;         /* esp_timer time the last exchange ended */
    bool http_close;                    /* the answer said Connection: close */
    char http_date[40];                 /* the answer's Date header, raw */
    char http_retry_after[40];          /* its Retry-After header, raw */
    char header_names[FOTA_PORT_ESP_HEADER_NAMES_MAX]; /* NUL-separated */
    size_t header_names_len;

    /* Flash encryption writes whole 16-byte blocks: an image's bytes that do
     * not yet fill one wait here (see slot_write). */
    uint8_t tail[16];
    uint32_t tail_off;                  /* the block's offset in the slot */
    uint8_t tail_len;

    nvs_handle_t kv;                    /* the library's records */
    nvs_handle_t own;                   /* the port's records */
    bool kv_open, own_open;
} fota_port_esp_t;

/* Fills *port with the port's functions (port->ctx = p) and opens the NVS
 * namespaces CONFIG_FOTA_NVS_NAMESPACE and CONFIG_FOTA_NVS_PORT_NAMESPACE.
 * ESP_ERR_INVALID_ARG: no or a malformed server_url, or https without a CA
 * and without the certificate bundle. */
esp_err_t fota_port_esp_init(fota_port_esp_t *p, const fota_port_esp_config_t *cfg, fota_port_t *port);

/* Closes the HTTP connection and the NVS handles. */
void fota_port_esp_deinit(fota_port_esp_t *p);

#ifdef __cplusplus
}
#endif

#endif /* FOTA_PORT_ESP_H */
