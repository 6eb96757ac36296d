/*
 * Stub for CI (test/check.sh), not ESP-IDF's file. ESP-IDF generates
 * sdkconfig.h from Kconfig at build time; this one defines only the options
 * the fota ESP-IDF port and its example read (names as in ESP-IDF 5.x's
 * Kconfig files, checked in v5.0 and v5.5), the component's and the
 * example's at their Kconfig defaults. check.sh's -DFOTA_CHECK_* flags
 * switch the optional ESP-IDF ones.
 */
#ifndef FOTA_STUB_SDKCONFIG_H
#define FOTA_STUB_SDKCONFIG_H

/* ESP-IDF options the port and the example read. */
#define CONFIG_IDF_TARGET "esp32"
#define CONFIG_FREERTOS_HZ 100
#ifndef FOTA_CHECK_NO_ROLLBACK
#define CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE 1
#endif
#ifdef FOTA_CHECK_ANTI_ROLLBACK
#define CONFIG_BOOTLOADER_APP_ANTI_ROLLBACK 1
#endif
#ifndef FOTA_CHECK_NO_BUNDLE
#define CONFIG_MBEDTLS_CERTIFICATE_BUNDLE 1
#endif

/* The component's Kconfig, at its defaults. */
#define CONFIG_FOTA_CHUNKS_PER_REQUEST 16
#define CONFIG_FOTA_CHECKPOINT_EVERY 8
#define CONFIG_FOTA_WORK_BUFFER_SIZE 4096
#define CONFIG_FOTA_HTTP_TIMEOUT_MS 15000
#define CONFIG_FOTA_HTTP_KEEPALIVE_IDLE_S 10
#define CONFIG_FOTA_CHECK_INTERVAL_S 21600
#define CONFIG_FOTA_HARDWARE "esp32"
#define CONFIG_FOTA_NVS_NAMESPACE "fota"
#define CONFIG_FOTA_NVS_PORT_NAMESPACE "fota_port"
#define CONFIG_FOTA_LOG_LEVEL_INFO 1
#define CONFIG_FOTA_LOG_LEVEL 2

/* The example's Kconfig.projbuild, at its defaults. */
#define CONFIG_EXAMPLE_WIFI_SSID "myssid"
#define CONFIG_EXAMPLE_WIFI_PASSWORD "mypassword"
#define CONFIG_EXAMPLE_SELF_TEST_WIFI_S 120
#define CONFIG_EXAMPLE_RETRY_S 900
#define CONFIG_EXAMPLE_FOTA_TASK_STACK 8192
#define CONFIG_EXAMPLE_MQTT_BROKER_URL ""

#endif
