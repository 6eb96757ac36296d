/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's nvs_flash.h
 * (component nvs_flash), with the signatures, field names and values of ESP-
 * IDF v5.2's header (checked against v5.0 and v5.5). Compile-only: nothing
 * here is implemented.
 */
#ifndef FOTA_STUB_NVS_FLASH_H
#define FOTA_STUB_NVS_FLASH_H

#include "esp_err.h"
#include "nvs.h"

esp_err_t nvs_flash_init(void);
esp_err_t nvs_flash_erase(void);

#endif
