/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's esp_system.h
 * (component esp_system), with the signatures, field names and values of
 * ESP-IDF v5.2's header (checked against v5.0 and v5.5). Compile-only:
 * nothing here is implemented.
 */
#ifndef FOTA_STUB_ESP_SYSTEM_H
#define FOTA_STUB_ESP_SYSTEM_H

#include "esp_err.h"

void esp_restart(void) __attribute__((__noreturn__));

#endif
