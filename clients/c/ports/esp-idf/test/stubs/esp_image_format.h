/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port uses from ESP-IDF's esp_image_format.h (component
 * bootloader_support), with the signatures and field names of ESP-IDF
 * v5.2's header. esp_image_metadata_t has more fields there (the image
 * header, its segments, the appended digest); the port reads image_len.
 * esp_partition_pos_t really comes from esp_flash_partitions.h, which
 * esp_image_format.h includes. Compile-only: nothing here is implemented.
 */
#ifndef FOTA_STUB_ESP_IMAGE_FORMAT_H
#define FOTA_STUB_ESP_IMAGE_FORMAT_H

#include <stdint.h>

#include "esp_err.h"

typedef struct {
    uint32_t offset;
    uint32_t size;
} esp_partition_pos_t;

typedef struct {
    uint32_t start_addr;
    uint32_t image_len;
} esp_image_metadata_t;

esp_err_t esp_image_get_metadata(const esp_partition_pos_t *part, esp_image_metadata_t *metadata);

#endif
