/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's
 * freertos/event_groups.h (component freertos), with the signatures, field
 * names and values of ESP-IDF v5.2's header (checked against v5.0 and v5.5).
 * Compile-only: nothing here is implemented.
 */
#ifndef FOTA_STUB_FREERTOS_EVENT_GROUPS_H
#define FOTA_STUB_FREERTOS_EVENT_GROUPS_H

#include "freertos/FreeRTOS.h"

typedef struct EventGroupDef_t *EventGroupHandle_t;
typedef TickType_t EventBits_t;

EventGroupHandle_t xEventGroupCreate(void);
EventBits_t xEventGroupWaitBits(EventGroupHandle_t xEventGroup, const EventBits_t uxBitsToWaitFor,
                                const BaseType_t xClearOnExit, const BaseType_t xWaitForAllBits,
                                TickType_t xTicksToWait);
EventBits_t xEventGroupClearBits(EventGroupHandle_t xEventGroup, const EventBits_t uxBitsToClear);
EventBits_t xEventGroupSetBits(EventGroupHandle_t xEventGroup, const EventBits_t uxBitsToSet);

#endif
