/*
 * mbedtls settings for building the fota C client for a microcontroller
 * with a host's mbedtls headers (scripts/size.sh): mbedtls reads this file
 * after its own configuration (MBEDTLS_USER_CONFIG_FILE) and drops what
 * needs an operating system. The client uses none of it.
 */
#undef MBEDTLS_THREADING_C
#undef MBEDTLS_THREADING_PTHREAD
#undef MBEDTLS_NET_C
#undef MBEDTLS_TIMING_C
#undef MBEDTLS_FS_IO
#undef MBEDTLS_PSA_ITS_FILE_C
#undef MBEDTLS_PSA_CRYPTO_STORAGE_C
#undef MBEDTLS_HAVE_TIME_DATE
#undef MBEDTLS_AESNI_C
#undef MBEDTLS_PADLOCK_C
#undef MBEDTLS_HAVE_ASM
#undef MBEDTLS_HAVEGE_C
