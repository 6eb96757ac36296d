# The POSIX port (fota_port_posix.c) and its device program, fota-device-c
# (fota_device.c). Included by clients/c/Makefile and run from clients/c,
# whose Makefile defines what this uses:
#   CC, BUILD                the compiler and the output folder
#   ALL_CFLAGS               -std=c99 -Wall -Wextra -Werror, $(CFLAGS) (-O2),
#                            -Iinclude -Isrc, $(MBEDTLS_CFLAGS)
#   LIB_HDRS                 the library's headers
#   $(BUILD)/%.o             the rule that compiles a .c into $(BUILD)
#   $(BUILD)/libfota.a       the library
#   MBEDTLS_LIBS             -lmbedcrypto (the port hashes slots with it too)
# and builds $(BUILD)/fota-device-c in `all`. The sources define
# _POSIX_C_SOURCE themselves, so -std=c99 stays strict.

POSIX_DIR = ports/posix
POSIX_HDRS = $(POSIX_DIR)/fota_port_posix.h
POSIX_SRCS = $(POSIX_DIR)/fota_port_posix.c
POSIX_DEVICE_SRCS = $(POSIX_DIR)/fota_device.c
POSIX_OBJS = $(POSIX_SRCS:%.c=$(BUILD)/%.o) $(POSIX_DEVICE_SRCS:%.c=$(BUILD)/%.o)

# The port's header as one more prerequisite; $(BUILD)/%.o compiles them.
$(POSIX_OBJS): $(POSIX_HDRS)

$(BUILD)/fota-device-c: $(POSIX_OBJS) $(BUILD)/libfota.a
	$(CC) $(ALL_CFLAGS) $(POSIX_OBJS) $(BUILD)/libfota.a $(MBEDTLS_LIBS) -o $@

.PHONY: fota-device-c
fota-device-c: $(BUILD)/fota-device-c
