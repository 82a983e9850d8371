/*
 * default: the built-in default guest of `btvm run`. Fills a 64 KiB buffer
 * with an xorshift32 pattern, prints its CRC-32 and ends through the i8042
 * reset line (status 0). Integer code and port I/O only.
 */
#include "tests/guest/kit/kit.h"

KIT_MINIMAL_RUNTIME;

#define BUFFER_SIZE (64 * 1024)

static u8 buffer[BUFFER_SIZE];

static u32 xorshift32(u32* state) {
  u32 x = *state;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  *state = x;
  return x;
}

/* CRC-32 (IEEE 802.3, reflected, polynomial 0xedb88320), bit by bit. */
static u32 crc32(const u8* p, size_t n) {
  u32 crc = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int b = 0; b < 8; b++) crc = (crc >> 1) ^ (0xedb88320u & -(crc & 1));
  }
  return ~crc;
}

int main(void) {
  printf("btvm default guest: xorshift32 fill of %d KiB, CRC-32\n", BUFFER_SIZE / 1024);
  u32 state = 0x2545f491u;
  for (size_t i = 0; i < BUFFER_SIZE; i += 4) {
    u32 v = xorshift32(&state);
    buffer[i] = (u8)v;
    buffer[i + 1] = (u8)(v >> 8);
    buffer[i + 2] = (u8)(v >> 16);
    buffer[i + 3] = (u8)(v >> 24);
  }
  printf("checksum: 0x%08x\n", crc32(buffer, BUFFER_SIZE));
  printf("btvm default guest: done, resetting\n");
  reboot();
}
