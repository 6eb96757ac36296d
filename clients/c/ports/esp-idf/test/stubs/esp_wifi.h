/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's esp_wifi.h (component
 * esp_wifi), with the signatures, field names and values of ESP-IDF v5.2's
 * header (checked against v5.0 and v5.5). Compile-only: nothing here is
 * implemented.
 */
#ifndef FOTA_STUB_ESP_WIFI_H
#define FOTA_STUB_ESP_WIFI_H

#include <stdint.h>

#include "esp_err.h"
#include "esp_event.h"
#include "esp_netif.h"

/* From esp_wifi_types.h, which esp_wifi.h includes. The values are
 * ESP-IDF's; its enums, structs and union have more members. */
typedef enum {
    WIFI_MODE_STA = 1
} wifi_mode_t;

typedef enum {
    WIFI_IF_STA = 0
} wifi_interface_t;

typedef enum {
    WIFI_AUTH_OPEN = 0,
    WIFI_AUTH_WPA2_PSK = 3
} wifi_auth_mode_t;

typedef struct {
    wifi_auth_mode_t authmode;
} wifi_scan_threshold_t;

typedef struct {
    uint8_t ssid[32];
    uint8_t password[64];
    wifi_scan_threshold_t threshold;
} wifi_sta_config_t;

typedef union {
    wifi_sta_config_t sta;
} wifi_config_t;

typedef enum {
    WIFI_EVENT_STA_START = 2,
    WIFI_EVENT_STA_DISCONNECTED = 5
} wifi_event_t;
ESP_EVENT_DECLARE_BASE(WIFI_EVENT);

/* ESP-IDF's struct holds the driver's buffer counts and options, which
 * WIFI_INIT_CONFIG_DEFAULT fills from sdkconfig; it ends with magic. */
typedef struct {
    int magic;
} wifi_init_config_t;
#define WIFI_INIT_CONFIG_MAGIC 0x1F2F3F4F
#define WIFI_INIT_CONFIG_DEFAULT() {.magic = WIFI_INIT_CONFIG_MAGIC}

esp_err_t esp_wifi_init(const wifi_init_config_t *config);
esp_err_t esp_wifi_set_mode(wifi_mode_t mode);
esp_err_t esp_wifi_set_config(wifi_interface_t interface, wifi_config_t *conf);
esp_err_t esp_wifi_start(void);
esp_err_t esp_wifi_connect(void);

/* From esp_wifi_default.h, which esp_wifi.h includes. */
esp_netif_t *esp_netif_create_default_wifi_sta(void);

#endif
