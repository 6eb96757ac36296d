/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's esp_random.h
 * (component esp_hw_support), with the signatures, field names and values of
 * ESP-IDF v5.2's header (checked against v5.0 and v5.5). Compile-only:
 * nothing here is implemented.
 */
#ifndef FOTA_STUB_ESP_RANDOM_H
#define FOTA_STUB_ESP_RANDOM_H

#include <stddef.h>

void esp_fill_random(void *buf, size_t len);

#endif
