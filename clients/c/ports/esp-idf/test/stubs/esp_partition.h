/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's esp_partition.h
 * (component esp_partition), with the signatures, field names and values of
 * ESP-IDF v5.2's header (checked against v5.0 and v5.5). Compile-only:
 * nothing here is implemented.
 */
#ifndef FOTA_STUB_ESP_PARTITION_H
#define FOTA_STUB_ESP_PARTITION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esp_err.h"

typedef struct esp_flash_t esp_flash_t;

/* The types of two esp_partition_t fields the port does not read;
 * ESP-IDF's enums list every partition type and subtype. */
typedef enum {
    ESP_PARTITION_TYPE_APP = 0x00
} esp_partition_type_t;

typedef enum {
    ESP_PARTITION_SUBTYPE_APP_FACTORY = 0x00
} esp_partition_subtype_t;

typedef struct {
    esp_flash_t *flash_chip;
    esp_partition_type_t type;
    esp_partition_subtype_t subtype;
    uint32_t address;
    uint32_t size;
    uint32_t erase_size;
    char label[17];
    bool encrypted;
} esp_partition_t;

esp_err_t esp_partition_read(const esp_partition_t *partition, size_t src_offset, void *dst, size_t size);
esp_err_t esp_partition_write(const esp_partition_t *partition, size_t dst_offset, const void *src, size_t size);
esp_err_t esp_partition_erase_range(const esp_partition_t *partition, size_t offset, size_t size);

#endif
