/* kit_start(): from the 64-bit entry (kit/boot.S) to main(). */
#include "tests/guest/kit/desc.h"
#include "tests/guest/kit/kit.h"

/* A kernel overrides this with KIT_MINIMAL_RUNTIME (kit/kit.h). */
__attribute__((weak)) const int kit_minimal_runtime = 0;

const struct btvm_boot_info* kit_boot_info;

NORETURN void kit_start(const struct btvm_boot_info* info);

void kit_start(const struct btvm_boot_info* info) {
  if (info && info->magic == BTVM_BOOT_INFO_MAGIC) kit_boot_info = info;
  serial_init();
  if (!kit_minimal_runtime) setup_descriptors();
  exit(main());
}
