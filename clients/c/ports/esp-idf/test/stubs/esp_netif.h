/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's esp_netif.h
 * (component esp_netif), with the signatures, field names and values of ESP-
 * IDF v5.2's header (checked against v5.0 and v5.5). Compile-only: nothing
 * here is implemented.
 */
#ifndef FOTA_STUB_ESP_NETIF_H
#define FOTA_STUB_ESP_NETIF_H

#include "esp_err.h"
#include "esp_event.h"

typedef struct esp_netif_obj esp_netif_t;

/* From esp_netif_types.h, which esp_netif.h includes. */
typedef enum {
    IP_EVENT_STA_GOT_IP
} ip_event_t;
ESP_EVENT_DECLARE_BASE(IP_EVENT);

esp_err_t esp_netif_init(void);

#endif
