/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's esp_http_client.h
 * (component esp_http_client), with the signatures, field names and values
 * of ESP-IDF v5.2's header (checked against v5.0 and v5.5). Compile-only:
 * nothing here is implemented.
 */
#ifndef FOTA_STUB_ESP_HTTP_CLIENT_H
#define FOTA_STUB_ESP_HTTP_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "esp_err.h"

typedef struct esp_http_client *esp_http_client_handle_t;

/* ESP-IDF's enum lists every event; the port handles one. */
typedef enum {
    HTTP_EVENT_ON_HEADER = 3
} esp_http_client_event_id_t;

typedef struct esp_http_client_event {
    esp_http_client_event_id_t event_id;
    esp_http_client_handle_t client;
    void *data;
    int data_len;
    void *user_data;
    char *header_key;
    char *header_value;
} esp_http_client_event_t;

typedef esp_err_t (*http_event_handle_cb)(esp_http_client_event_t *evt);

/* The first methods, in ESP-IDF's order; it lists more. */
typedef enum {
    HTTP_METHOD_GET = 0,
    HTTP_METHOD_POST,
    HTTP_METHOD_PUT,
    HTTP_METHOD_PATCH,
    HTTP_METHOD_DELETE,
    HTTP_METHOD_HEAD
} esp_http_client_method_t;

/* The fields the port sets; ESP-IDF's struct has many more, in another
 * order, so set them by name. */
typedef struct {
    const char *url;
    const char *cert_pem;
    esp_http_client_method_t method;
    int timeout_ms;
    bool disable_auto_redirect;
    http_event_handle_cb event_handler;
    int buffer_size;
    int buffer_size_tx;
    void *user_data;
    esp_err_t (*crt_bundle_attach)(void *conf);
} esp_http_client_config_t;

esp_http_client_handle_t esp_http_client_init(const esp_http_client_config_t *config);
esp_err_t esp_http_client_set_url(esp_http_client_handle_t client, const char *url);
esp_err_t esp_http_client_set_method(esp_http_client_handle_t client, esp_http_client_method_t method);
esp_err_t esp_http_client_set_header(esp_http_client_handle_t client, const char *key, const char *value);
esp_err_t esp_http_client_delete_header(esp_http_client_handle_t client, const char *key);
esp_err_t esp_http_client_open(esp_http_client_handle_t client, int write_len);
int esp_http_client_write(esp_http_client_handle_t client, const char *buffer, int len);
int64_t esp_http_client_fetch_headers(esp_http_client_handle_t client);
int esp_http_client_read(esp_http_client_handle_t client, char *buffer, int len);
int esp_http_client_get_status_code(esp_http_client_handle_t client);
int64_t esp_http_client_get_content_length(esp_http_client_handle_t client);
bool esp_http_client_is_complete_data_received(esp_http_client_handle_t client);
esp_err_t esp_http_client_close(esp_http_client_handle_t client);
esp_err_t esp_http_client_cleanup(esp_http_client_handle_t client);

#endif
