/*
 * Stub for CI (test/check.sh), not ESP-IDF's file: it declares only what the
 * fota ESP-IDF port and its example use from ESP-IDF's freertos/FreeRTOS.h
 * (component freertos), with the signatures, field names and values of ESP-
 * IDF v5.2's header (checked against v5.0 and v5.5). Compile-only: nothing
 * here is implemented.
 */
#ifndef FOTA_STUB_FREERTOS_H
#define FOTA_STUB_FREERTOS_H

#include <stdint.h>

#include "sdkconfig.h"

/* From portmacro.h (Xtensa and RISC-V ports, 32-bit ticks) and
 * projdefs.h, which FreeRTOS.h includes. */
typedef int BaseType_t;
typedef unsigned int UBaseType_t;
typedef uint32_t TickType_t;
#define portMAX_DELAY (TickType_t)0xffffffffUL
#define configTICK_RATE_HZ CONFIG_FREERTOS_HZ
#define pdMS_TO_TICKS(xTimeInMs) ((TickType_t)(((TickType_t)(xTimeInMs) * (TickType_t)configTICK_RATE_HZ) / (TickType_t)1000U))
#define pdFALSE ((BaseType_t)0)
#define pdTRUE ((BaseType_t)1)
#define pdPASS (pdTRUE)

#endif
