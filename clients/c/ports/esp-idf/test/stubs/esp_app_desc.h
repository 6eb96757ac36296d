/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's esp_app_desc.h
 * (component esp_app_format), with the signatures, field names and values of
 * ESP-IDF v5.2's header (checked against v5.0 and v5.5). Compile-only:
 * nothing here is implemented.
 */
#ifndef FOTA_STUB_ESP_APP_DESC_H
#define FOTA_STUB_ESP_APP_DESC_H

#include <stdint.h>

/* v5.2's layout; v5.5 splits reserv2 into a few new fields. */
typedef struct {
    uint32_t magic_word;
    uint32_t secure_version;
    uint32_t reserv1[2];
    char version[32];
    char project_name[32];
    char time[16];
    char date[16];
    char idf_ver[32];
    uint8_t app_elf_sha256[32];
    uint32_t reserv2[20];
} esp_app_desc_t;

const esp_app_desc_t *esp_app_get_description(void);

#endif
