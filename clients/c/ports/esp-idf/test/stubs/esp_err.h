/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's esp_err.h (component
 * esp_common), with the signatures, field names and values of ESP-IDF v5.2's
 * header (checked against v5.0 and v5.5). ESP_ERROR_CHECK is the variant
 * built without NDEBUG. Compile-only: nothing here is implemented.
 */
#ifndef FOTA_STUB_ESP_ERR_H
#define FOTA_STUB_ESP_ERR_H

typedef int esp_err_t;

#define ESP_OK 0
#define ESP_ERR_INVALID_ARG 0x102

const char *esp_err_to_name(esp_err_t code);

void _esp_error_check_failed(esp_err_t rc, const char *file, int line, const char *function, const char *expression)
    __attribute__((__noreturn__));
#define ESP_ERROR_CHECK(x)                                                                                           \
    do {                                                                                                             \
        esp_err_t err_rc_ = (x);                                                                                     \
        if (err_rc_ != ESP_OK) {                                                                                     \
            _esp_error_check_failed(err_rc_, __FILE__, __LINE__, __func__, #x);                                     \
        }                                                                                                            \
    } while (0)

#endif
