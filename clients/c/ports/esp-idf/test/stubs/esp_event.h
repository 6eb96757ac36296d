/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's esp_event.h
 * (component esp_event), with the signatures, field names and values of ESP-
 * IDF v5.2's header (checked against v5.0 and v5.5). Compile-only: nothing
 * here is implemented.
 */
#ifndef FOTA_STUB_ESP_EVENT_H
#define FOTA_STUB_ESP_EVENT_H

#include <stdint.h>

#include "esp_err.h"

/* From esp_event_base.h, which esp_event.h includes. */
typedef const char *esp_event_base_t;
typedef void (*esp_event_handler_t)(void *event_handler_arg, esp_event_base_t event_base, int32_t event_id,
                                    void *event_data);
typedef void *esp_event_handler_instance_t;
#define ESP_EVENT_DECLARE_BASE(id) extern esp_event_base_t const id
#define ESP_EVENT_ANY_ID -1

esp_err_t esp_event_loop_create_default(void);
esp_err_t esp_event_handler_instance_register(esp_event_base_t event_base, int32_t event_id,
                                              esp_event_handler_t event_handler, void *event_handler_arg,
                                              esp_event_handler_instance_t *instance);

#endif
