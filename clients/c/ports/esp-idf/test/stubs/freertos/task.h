/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's freertos/task.h
 * (component freertos), with the signatures, field names and values of ESP-
 * IDF v5.2's header (checked against v5.0 and v5.5). Compile-only: nothing
 * here is implemented.
 */
#ifndef FOTA_STUB_FREERTOS_TASK_H
#define FOTA_STUB_FREERTOS_TASK_H

#include <stdint.h>

#include "freertos/FreeRTOS.h"

typedef struct tskTaskControlBlock *TaskHandle_t;
typedef void (*TaskFunction_t)(void *);

/* ESP-IDF's is a static inline function over xTaskCreatePinnedToCore;
 * usStackDepth is configSTACK_DEPTH_TYPE, uint32_t, in bytes. */
BaseType_t xTaskCreate(TaskFunction_t pxTaskCode, const char *const pcName, const uint32_t usStackDepth,
                       void *const pvParameters, UBaseType_t uxPriority, TaskHandle_t *const pxCreatedTask);
void vTaskDelay(const TickType_t xTicksToDelay);

#endif
