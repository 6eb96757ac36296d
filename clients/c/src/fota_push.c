/*
 * Push (MQTT), the optional part: what only firmware that listens for the
 * server's notifications links. The measured library (scripts/size.sh's
 * 16 KiB) keeps the part every client carries: fota_client_notify's flag
 * and the time of the last signed request.
 * This file is counted apart by size.sh; a linker that drops unused
 * functions (ESP-IDF's) drops it from firmware without push.
 */
#include <string.h>

#include "fota_internal.h"

/* docs: protocol/notify.go MaxNotifySpread and MaxNotificationSize. */
#define SPREAD_MAX_MS 60000u
#define PAYLOAD_MAX 256

uint32_t fota_push_wait_ms(fota_client_t *c)
{
    const fota_port_t *p = c->port;
    uint32_t min = c->cfg->push_min_interval_s ? c->cfg->push_min_interval_s : 60;
    uint32_t push = c->push, spread = push - 1, r = 0;
    if (!push) return FOTA_PUSH_NONE;
    /* Taken: a notification after this is answered by the check this wait
     * leads to, or by one more check no sooner than min after it. */
    c->push = 0;
    /* push_last is the last signed request's time, which is the device's
     * clock corrected by the server's. Unsigned: a clock set back makes
     * since huge, which allows one check, no more (the request resets it). */
    uint32_t since = (uint32_t)(p->now(p->ctx) + c->clock_offset) - c->push_last;
    if (min > 86400) min = 86400; /* (min - since) * 1000 must not wrap */
    if (spread > SPREAD_MAX_MS) spread = SPREAD_MAX_MS;
    p->random(p->ctx, (uint8_t *)&r, sizeof r); /* on failure r stays 0: no spread */
    return (since < min ? (min - since) * 1000 : 0) + r % (spread + 1);
}

static bool spread_member(void *user, const char *key, size_t n, const fota_json_t *v)
{
    /* Any value that is not a plain number in range is no spread: a
     * notification only ever asks for a check. */
    if (n == 9 && !memcmp(key, "spread_ms", 9)) fota_json_uint(v, 0, UINT32_MAX, user);
    return true;
}

uint32_t fota_notify_spread_ms(const void *payload, size_t len)
{
    uint32_t spread = 0;
    if (!payload || len > PAYLOAD_MAX || !fota_json_object(payload, len, spread_member, &spread)) return 0;
    return spread < SPREAD_MAX_MS ? spread : SPREAD_MAX_MS;
}

fota_err_t fota_mqtt_password(const char *psk_hex, const char *device_id, char out[65])
{
    static const char domain[] = "fota-mqtt-v1\n"; /* separates it from every other use of the key */
    uint8_t psk[32], mac[32];
    mbedtls_sha256_context s;
    int rc = 1;
    out[0] = 0;
    if (!psk_hex || !device_id || !fota_unhex(psk, 32, psk_hex, strlen(psk_hex))) return FOTA_ERR_ARGUMENT;
    mbedtls_sha256_init(&s);
    if (!fota_hmac_start(&s, psk) && !fota_sha256_update(&s, domain, sizeof domain - 1) &&
        !fota_sha256_update(&s, device_id, strlen(device_id)))
        rc = fota_hmac_finish(&s, psk, mac);
    mbedtls_sha256_free(&s);
    memset(psk, 0, sizeof psk);
    if (rc) return FOTA_ERR_CRYPTO;
    fota_hex(out, mac, 32);
    return FOTA_OK;
}
