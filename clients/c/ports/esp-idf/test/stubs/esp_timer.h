/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's esp_timer.h
 * (component esp_timer), with the signatures, field names and values of ESP-
 * IDF v5.2's header (checked against v5.0 and v5.5). Compile-only: nothing
 * here is implemented.
 */
#ifndef FOTA_STUB_ESP_TIMER_H
#define FOTA_STUB_ESP_TIMER_H

#include <stdint.h>

int64_t esp_timer_get_time(void);

#endif
