/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota example uses from esp-mqtt's mqtt_client.h (ESP-IDF component mqtt),
 * with the signatures, field names and values of its header in ESP-IDF 5.1
 * and later (esp_mqtt_client_subscribe_single is 5.1's; 5.0 has it as
 * esp_mqtt_client_subscribe). Compile-only: nothing here is implemented.
 */
#ifndef FOTA_STUB_MQTT_CLIENT_H
#define FOTA_STUB_MQTT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "esp_err.h"
#include "esp_event.h"

typedef struct esp_mqtt_client *esp_mqtt_client_handle_t;

/* The events, in esp-mqtt's order; it lists more after these. */
typedef enum esp_mqtt_event_id_t {
    MQTT_EVENT_ANY = -1,
    MQTT_EVENT_ERROR = 0,
    MQTT_EVENT_CONNECTED,
    MQTT_EVENT_DISCONNECTED,
    MQTT_EVENT_SUBSCRIBED,
    MQTT_EVENT_UNSUBSCRIBED,
    MQTT_EVENT_PUBLISHED,
    MQTT_EVENT_DATA
} esp_mqtt_event_id_t;

/* The fields the example reads, first in esp-mqtt's order; it has more. */
typedef struct esp_mqtt_event_t {
    esp_mqtt_event_id_t event_id;
    esp_mqtt_client_handle_t client;
    char *data;
    int data_len;
    int total_data_len;
    int current_data_offset;
    char *topic;
    int topic_len;
} esp_mqtt_event_t;

typedef esp_mqtt_event_t *esp_mqtt_event_handle_t;

/* The fields the example sets, under esp-mqtt's nested struct names; its
 * structs have many more, so set them by name. */
typedef struct esp_mqtt_client_config_t {
    struct broker_t {
        struct address_t {
            const char *uri;
        } address;
        struct verification_t {
            esp_err_t (*crt_bundle_attach)(void *conf);
        } verification;
    } broker;
    struct credentials_t {
        const char *username;
        const char *client_id;
        struct authentication_t {
            const char *password;
        } authentication;
    } credentials;
} esp_mqtt_client_config_t;

esp_mqtt_client_handle_t esp_mqtt_client_init(const esp_mqtt_client_config_t *config);
esp_err_t esp_mqtt_client_start(esp_mqtt_client_handle_t client);
int esp_mqtt_client_subscribe_single(esp_mqtt_client_handle_t client, const char *topic, int qos);
esp_err_t esp_mqtt_client_register_event(esp_mqtt_client_handle_t client, esp_mqtt_event_id_t event,
                                         esp_event_handler_t event_handler, void *event_handler_arg);

#endif
