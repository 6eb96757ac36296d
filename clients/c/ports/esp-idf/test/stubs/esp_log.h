/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's esp_log.h (component
 * log), with the signatures, field names and values of ESP-IDF v5.2's header
 * (checked against v5.0 and v5.5). Compile-only: nothing here is
 * implemented.
 */
#ifndef FOTA_STUB_ESP_LOG_H
#define FOTA_STUB_ESP_LOG_H

/* ESP-IDF's also has ESP_LOG_NONE (0) and ESP_LOG_VERBOSE (5). */
typedef enum {
    ESP_LOG_ERROR = 1,
    ESP_LOG_WARN,
    ESP_LOG_INFO,
    ESP_LOG_DEBUG
} esp_log_level_t;

void esp_log_write(esp_log_level_t level, const char *tag, const char *format, ...) __attribute__((format(printf, 3, 4)));

/* ESP-IDF's macros take (tag, format, ...) and add a level letter, a
 * timestamp and colour; these keep the call form and the printf format
 * check, with the format inside the variadic part so that ISO C accepts a
 * call without arguments. */
#define ESP_LOGE(tag, ...) esp_log_write(ESP_LOG_ERROR, tag, __VA_ARGS__)
#define ESP_LOGW(tag, ...) esp_log_write(ESP_LOG_WARN, tag, __VA_ARGS__)
#define ESP_LOGI(tag, ...) esp_log_write(ESP_LOG_INFO, tag, __VA_ARGS__)
#define ESP_LOGD(tag, ...) esp_log_write(ESP_LOG_DEBUG, tag, __VA_ARGS__)

#endif
