/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's esp_ota_ops.h
 * (component app_update), with the signatures, field names and values of
 * ESP-IDF v5.2's header (checked against v5.0 and v5.5).
 * esp_ota_img_states_t really comes from bootloader_support's
 * esp_flash_partitions.h, which esp_ota_ops.h includes. Compile-only:
 * nothing here is implemented.
 */
#ifndef FOTA_STUB_ESP_OTA_OPS_H
#define FOTA_STUB_ESP_OTA_OPS_H

#include "esp_app_desc.h"
#include "esp_err.h"
#include "esp_partition.h"

#define ESP_ERR_OTA_BASE 0x1500
#define ESP_ERR_OTA_VALIDATE_FAILED (ESP_ERR_OTA_BASE + 0x03)
#define ESP_ERR_OTA_SMALL_SEC_VER (ESP_ERR_OTA_BASE + 0x04)

/* The states the port tests for (ESP-IDF's enum also has NEW, VALID and
 * INVALID). 0xFFFFFFFF is past ISO C's int range for an enumerator, a GCC
 * extension ESP-IDF relies on; __extension__ keeps -Wpedantic quiet. */
__extension__ typedef enum {
    ESP_OTA_IMG_PENDING_VERIFY = 0x1U,
    ESP_OTA_IMG_ABORTED = 0x4U,
    ESP_OTA_IMG_UNDEFINED = 0xFFFFFFFFU
} esp_ota_img_states_t;

esp_err_t esp_ota_set_boot_partition(const esp_partition_t *partition);
const esp_partition_t *esp_ota_get_running_partition(void);
const esp_partition_t *esp_ota_get_next_update_partition(const esp_partition_t *start_from);
esp_err_t esp_ota_get_partition_description(const esp_partition_t *partition, esp_app_desc_t *app_desc);
esp_err_t esp_ota_mark_app_valid_cancel_rollback(void);
esp_err_t esp_ota_mark_app_invalid_rollback_and_reboot(void);
const esp_partition_t *esp_ota_get_last_invalid_partition(void);
esp_err_t esp_ota_get_state_partition(const esp_partition_t *partition, esp_ota_img_states_t *ota_state);

#endif
