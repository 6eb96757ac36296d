/*
 * fota example: an ESP32 application that updates itself with the fota C
 * client, the way the EcoWatt firmware does. It joins Wi-Fi, lets a new
 * image prove itself (self-test, then confirm or roll back), then checks
 * for an update every CONFIG_FOTA_CHECK_INTERVAL_S (6 hours), pausing the
 * application's data collection while an update downloads, and restarts
 * into an installed update. With CONFIG_EXAMPLE_MQTT_BROKER_URL set it also
 * listens on its MQTT topic, where the server says when to check now (a
 * rollout wave opened, a pin); the timer stays the fallback.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "sdkconfig.h"

#include "esp_event.h"
#include "esp_log.h"
#include "esp_netif.h"
#include "esp_system.h"
#include "esp_wifi.h"
#include "freertos/FreeRTOS.h"
#include "freertos/event_groups.h"
#include "freertos/task.h"
#include "mqtt_client.h"
#include "nvs_flash.h"
#ifdef CONFIG_MBEDTLS_CERTIFICATE_BUNDLE
#include "esp_crt_bundle.h"
#endif
#include "esp_timer.h"

#include "fota_client.h"
#include "fota_port_esp.h"

/* DEVICE_ID, HMAC_PSK, OTA_SERVER_URL, SIGNING_KEY_ID, SERVER_PUBLIC_KEY and
 * AES_FIRMWARE_KEY, as written by
 *   fota device add --id ID --hardware esp32 --version 1.0.0 \
 *       --credentials dev.json --keys-h main/keys.h --keys keys
 * It holds the device key and the fleet's firmware key: keep it out of
 * version control (main/.gitignore does). */
#include "keys.h"
#ifndef FOTA_DEVICE_KEYS_H
#error "keys.h is not a device's header: write this device's with fota device add --id ID ... --keys-h main/keys.h --keys KEYDIR (the fleet's keys/keys.h has no DEVICE_ID or HMAC_PSK)"
#endif

static const char *TAG = "ota-example";

/* ---- the application: replace with the firmware's own -------------------- */

/* The firmware's sampling loop checks this between samples. Pausing it
 * while an update downloads keeps the CPU, the radio and the flash free
 * for the download, and no sample is taken half-way through a restart. */
static volatile bool collection_paused;

static void app_pause_data_collection(void)
{
    if (!collection_paused) {
        collection_paused = true;
        ESP_LOGI(TAG, "data collection paused for an update");
    }
}

static void app_resume_data_collection(void)
{
    if (collection_paused) {
        collection_paused = false;
        ESP_LOGI(TAG, "data collection resumed");
    }
}

/* ---- Wi-Fi (station, credentials from menuconfig) ------------------------ */

#define WIFI_CONNECTED ((EventBits_t)1)

static EventGroupHandle_t wifi_events;

static void on_wifi_event(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    (void)arg;
    (void)data;
    if (base == WIFI_EVENT && id == WIFI_EVENT_STA_START) {
        esp_wifi_connect();
    } else if (base == WIFI_EVENT && id == WIFI_EVENT_STA_DISCONNECTED) {
        xEventGroupClearBits(wifi_events, WIFI_CONNECTED);
        /* The device lives on this network: keep trying. */
        esp_wifi_connect();
    } else if (base == IP_EVENT && id == IP_EVENT_STA_GOT_IP) {
        xEventGroupSetBits(wifi_events, WIFI_CONNECTED);
    }
}

/* ssid and password need no NUL when they fill their arrays (the
 * zeroed config supplies it otherwise). */
static void copy_field(uint8_t *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    memcpy(dst, src, n < cap ? n : cap);
}

static void wifi_start(void)
{
    wifi_events = xEventGroupCreate();
    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    esp_netif_create_default_wifi_sta();
    wifi_init_config_t init = WIFI_INIT_CONFIG_DEFAULT();
    ESP_ERROR_CHECK(esp_wifi_init(&init));
    ESP_ERROR_CHECK(esp_event_handler_instance_register(WIFI_EVENT, ESP_EVENT_ANY_ID, on_wifi_event, NULL, NULL));
    ESP_ERROR_CHECK(esp_event_handler_instance_register(IP_EVENT, IP_EVENT_STA_GOT_IP, on_wifi_event, NULL, NULL));

    wifi_config_t wc;
    memset(&wc, 0, sizeof wc);
    copy_field(wc.sta.ssid, sizeof wc.sta.ssid, CONFIG_EXAMPLE_WIFI_SSID);
    copy_field(wc.sta.password, sizeof wc.sta.password, CONFIG_EXAMPLE_WIFI_PASSWORD);
    wc.sta.threshold.authmode = CONFIG_EXAMPLE_WIFI_PASSWORD[0] != '\0' ? WIFI_AUTH_WPA2_PSK : WIFI_AUTH_OPEN;
    ESP_ERROR_CHECK(esp_wifi_set_mode(WIFI_MODE_STA));
    ESP_ERROR_CHECK(esp_wifi_set_config(WIFI_IF_STA, &wc));
    ESP_ERROR_CHECK(esp_wifi_start());
}

/* Whether Wi-Fi has an address, waiting up to ticks for one. */
static bool wifi_wait(TickType_t ticks)
{
    EventBits_t bits = xEventGroupWaitBits(wifi_events, WIFI_CONNECTED, pdFALSE, pdTRUE, ticks);
    return (bits & WIFI_CONNECTED) != 0;
}

/* ---- the update client's hooks ------------------------------------------ */

/* Runs on the first boot of a new image (fota_startup). FOTA_OK confirms
 * the image; anything else rolls it back. A new image must at least reach
 * the network, or no later update could replace it; add the firmware's
 * own checks (sensors, the inverter link) here. */
static fota_err_t self_test(void *user)
{
    (void)user;
    if (!wifi_wait(pdMS_TO_TICKS(CONFIG_EXAMPLE_SELF_TEST_WIFI_S * 1000u))) {
        ESP_LOGE(TAG, "self-test: no Wi-Fi within %d s", CONFIG_EXAMPLE_SELF_TEST_WIFI_S);
        return FOTA_ERR_NETWORK;
    }
    return FOTA_OK;
}

static bool update_busy(fota_state_t s)
{
    return s == FOTA_STATE_DOWNLOADING || s == FOTA_STATE_VERIFYING || s == FOTA_STATE_APPLYING;
}

/* Pauses data collection while an update is being downloaded, verified or
 * installed, and logs progress every 10 %. */
static void on_progress(void *user, const fota_progress_t *pr)
{
    static fota_state_t last = FOTA_STATE_IDLE;
    static uint32_t last_tenth;
    (void)user;
    if (pr->state != last) {
        ESP_LOGI(TAG, "update %s: %s", pr->version, fota_state_str(pr->state));
        if (update_busy(pr->state)) {
            app_pause_data_collection();
        } else if (pr->state != FOTA_STATE_COMPLETED) {
            /* COMPLETED: the device restarts next, still paused. */
            app_resume_data_collection();
        }
        last = pr->state;
        last_tenth = 0;
    }
    if (pr->state == FOTA_STATE_DOWNLOADING && pr->chunks > 0) {
        uint32_t tenth = (uint32_t)((uint64_t)pr->chunk * 10u / pr->chunks);
        if (tenth > last_tenth) {
            ESP_LOGI(TAG, "update %s: %u/%u chunks", pr->version, (unsigned)pr->chunk, (unsigned)pr->chunks);
            last_tenth = tenth;
        }
    }
}

/* ---- the client ---------------------------------------------------------- */

static fota_port_esp_t port_esp;
static fota_port_t port;
static fota_client_t client;
static uint8_t work[CONFIG_FOTA_WORK_BUFFER_SIZE] __attribute__((aligned(8)));

static const fota_config_t fota_cfg = {
    .server_url = OTA_SERVER_URL,
    .device_id = DEVICE_ID,
    .psk_hex = HMAC_PSK,
    .hardware = CONFIG_FOTA_HARDWARE,
    .chip = CONFIG_IDF_TARGET,
    .public_key_pem = SERVER_PUBLIC_KEY,
    .firmware_key = AES_FIRMWARE_KEY,
    .chunks_per_request = CONFIG_FOTA_CHUNKS_PER_REQUEST,
    .checkpoint_every = CONFIG_FOTA_CHECKPOINT_EVERY,
    .self_test = self_test,
    .on_progress = on_progress,
    .user = NULL,
};

/* ---- push: the server's MQTT notifications ------------------------------ */

#define PUSH_NOTIFIED ((EventBits_t)1)

/* Set by the MQTT task, waited on by the update task. */
static EventGroupHandle_t push_events;
static char push_topic[96];

/* Runs in esp-mqtt's task. It only subscribes and hands the notification
 * to the client (fota_client_notify is safe from another task); the check
 * itself runs in the update task, over the signed API. */
static void on_mqtt_event(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    esp_mqtt_event_handle_t ev = (esp_mqtt_event_handle_t)data;
    (void)arg;
    (void)base;
    if (id == MQTT_EVENT_CONNECTED) {
        /* On every connection: the broker need not keep the subscription. */
        if (esp_mqtt_client_subscribe_single(ev->client, push_topic, 1) < 0) {
            ESP_LOGW(TAG, "push: cannot subscribe to %s", push_topic);
        }
    } else if (id == MQTT_EVENT_DATA && ev->current_data_offset == 0 && ev->topic_len == (int)strlen(push_topic) &&
               memcmp(ev->topic, push_topic, (size_t)ev->topic_len) == 0) {
        /* Only a message's first piece names its topic. Any message there
         * means "check"; the spread comes from a whole payload only. */
        uint32_t spread = ev->data_len == ev->total_data_len ? fota_notify_spread_ms(ev->data, (size_t)ev->data_len) : 0;
        fota_client_notify(&client, spread);
        xEventGroupSetBits(push_events, PUSH_NOTIFIED);
    }
}

/* Connects to CONFIG_EXAMPLE_MQTT_BROKER_URL as the device: user name and
 * client id its id, password derived from its key (the broker only lets it
 * subscribe to its own topic). Empty URL: no push. */
static void push_start(void)
{
    static char password[65];
    if (CONFIG_EXAMPLE_MQTT_BROKER_URL[0] == '\0') {
        return;
    }
    if (fota_mqtt_password(HMAC_PSK, DEVICE_ID, password) != FOTA_OK) {
        ESP_LOGE(TAG, "push: bad device key");
        return;
    }
    snprintf(push_topic, sizeof push_topic, "fota/v1/devices/%s/notify", DEVICE_ID);
    esp_mqtt_client_config_t mc;
    memset(&mc, 0, sizeof mc);
    mc.broker.address.uri = CONFIG_EXAMPLE_MQTT_BROKER_URL;
#ifdef CONFIG_MBEDTLS_CERTIFICATE_BUNDLE
    mc.broker.verification.crt_bundle_attach = esp_crt_bundle_attach; /* mqtts:// */
#endif
    mc.credentials.username = DEVICE_ID;
    mc.credentials.client_id = DEVICE_ID;
    mc.credentials.authentication.password = password;
    esp_mqtt_client_handle_t mqtt = esp_mqtt_client_init(&mc);
    if (mqtt == NULL || esp_mqtt_client_register_event(mqtt, MQTT_EVENT_ANY, on_mqtt_event, NULL) != ESP_OK ||
        esp_mqtt_client_start(mqtt) != ESP_OK) {
        /* The timer still checks. */
        ESP_LOGE(TAG, "push: cannot start the MQTT client");
        return;
    }
    ESP_LOGI(TAG, "push: %s on %s", push_topic, CONFIG_EXAMPLE_MQTT_BROKER_URL);
}

/* Waits wait_s for the next timed check, or less when a notification asks
 * for one: then as fota_push_wait_ms says (at least a minute after the last
 * request, plus the notification's spread). The earliest moment wins; a
 * later notification is answered by that check. A minute at a time:
 * pdMS_TO_TICKS of six hours overflows. */
static void wait_for_check(fota_client_t *c, uint32_t wait_s)
{
    int64_t deadline = esp_timer_get_time() / 1000 + (int64_t)wait_s * 1000;
    for (;;) {
        uint32_t push = fota_push_wait_ms(c);
        int64_t now = esp_timer_get_time() / 1000;
        if (push != FOTA_PUSH_NONE) {
            ESP_LOGI(TAG, "push: checking in %u ms", (unsigned)push);
            if (now + push < deadline) {
                deadline = now + push;
            }
        }
        if (now >= deadline) {
            return;
        }
        int64_t left = deadline - now;
        uint32_t step = left > 60000 ? 60000u : (uint32_t)left;
        xEventGroupWaitBits(push_events, PUSH_NOTIFIED, pdTRUE, pdFALSE, pdMS_TO_TICKS(step) + 1);
    }
}

static void fota_task(void *arg)
{
    fota_client_t *c = (fota_client_t *)arg;
    for (;;) {
        uint32_t wait_s = CONFIG_FOTA_CHECK_INTERVAL_S;
        wifi_wait(portMAX_DELAY);

        fota_result_t res;
        memset(&res, 0, sizeof res);
        fota_err_t err = fota_check(c, &res);
        if (err == FOTA_OK && res.installed) {
            ESP_LOGI(TAG, "update %s installed: restarting into it", res.version);
            esp_restart();
        }
        app_resume_data_collection();

        if (err == FOTA_ERR_NETWORK || err == FOTA_ERR_SERVER_BUSY) {
            /* The client already retried with backoff: come back sooner
             * than the next timed check. */
            ESP_LOGW(TAG, "update check: %s", fota_err_str(err));
            if (wait_s > CONFIG_EXAMPLE_RETRY_S) {
                wait_s = CONFIG_EXAMPLE_RETRY_S;
            }
        } else if (err != FOTA_OK) {
            ESP_LOGW(TAG, "update check: %s", fota_err_str(err));
        } else if (res.deferred && res.install_after > 0) {
            /* Kept for its install window: check again when it opens.
             * install_after is the server's time; clock_offset is the
             * client's estimate of server minus device time. */
            int64_t server_now = (int64_t)time(NULL) + c->clock_offset;
            int64_t until = res.install_after - server_now;
            if (until < 1) {
                until = 1;
            }
            if (until < (int64_t)wait_s) {
                wait_s = (uint32_t)until;
            }
            ESP_LOGI(TAG, "update %s waits for its install window", res.version);
        }
        wait_for_check(c, wait_s);
    }
}

void app_main(void)
{
    /* NVS holds the client's records (checkpoint, report outbox). */
    esp_err_t e = nvs_flash_init();
    if (e == ESP_ERR_NVS_NO_FREE_PAGES || e == ESP_ERR_NVS_NEW_VERSION_FOUND) {
        /* ESP-IDF's documented recovery. It forgets the update records too:
         * an interrupted download starts over, queued reports are lost. */
        ESP_ERROR_CHECK(nvs_flash_erase());
        e = nvs_flash_init();
    }
    ESP_ERROR_CHECK(e);

    wifi_start();
    ESP_LOGI(TAG, "device %s, server %s, release signing key %s", DEVICE_ID, OTA_SERVER_URL, SIGNING_KEY_ID);

    fota_port_esp_config_t pc;
    memset(&pc, 0, sizeof pc);
    pc.server_url = OTA_SERVER_URL;
    /* https: NULL uses ESP-IDF's certificate bundle; give the CA's PEM to
     * trust only your own. */
    pc.server_cert_pem = NULL;
    ESP_ERROR_CHECK(fota_port_esp_init(&port_esp, &pc, &port));

    /* Without a client nothing confirms a new image either, so its next
     * reboot rolls it back: the right outcome for an image whose update
     * client cannot start. */
    fota_err_t err = fota_init(&client, &fota_cfg, &port, work, sizeof work);
    if (err != FOTA_OK) {
        ESP_LOGE(TAG, "fota_init: %s", fota_err_str(err));
        return;
    }
    err = fota_startup(&client);
    if (err == FOTA_ERR_SELF_TEST) {
        /* The port's reject already restarts into the previous image. */
        esp_restart();
    }
    if (err != FOTA_OK) {
        ESP_LOGW(TAG, "fota_startup: %s", fota_err_str(err));
    }

    push_events = xEventGroupCreate();
    push_start();

    /* Runs TLS and RSA/ECDSA verification: 8 KiB of stack by default. */
    if (xTaskCreate(fota_task, "fota", CONFIG_EXAMPLE_FOTA_TASK_STACK, &client, 5, NULL) != pdPASS) {
        ESP_LOGE(TAG, "cannot start the update task");
    }

    /* The application's own tasks (data collection) start here. */
}
