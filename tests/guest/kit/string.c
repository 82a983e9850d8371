/*
 * Freestanding string functions. Plain byte loops: gcc is told
 * -fno-tree-loop-distribute-patterns (no loop -> memset call recursion) and
 * -mstringop-strategy=loop (no rep-string instructions).
 */
#include "tests/guest/kit/kit.h"

void* memset(void* s, int c, size_t n) {
  u8* p = s;
  for (size_t i = 0; i < n; i++) p[i] = (u8)c;
  return s;
}

void* memcpy(void* dst, const void* src, size_t n) {
  u8* d = dst;
  const u8* s = src;
  for (size_t i = 0; i < n; i++) d[i] = s[i];
  return dst;
}

void* memmove(void* dst, const void* src, size_t n) {
  u8* d = dst;
  const u8* s = src;
  if (d < s) {
    for (size_t i = 0; i < n; i++) d[i] = s[i];
  } else {
    for (size_t i = n; i > 0; i--) d[i - 1] = s[i - 1];
  }
  return dst;
}

int memcmp(const void* a, const void* b, size_t n) {
  const u8* x = a;
  const u8* y = b;
  for (size_t i = 0; i < n; i++) {
    if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
  }
  return 0;
}

size_t strlen(const char* s) {
  size_t n = 0;
  while (s[n]) n++;
  return n;
}

int strcmp(const char* a, const char* b) {
  while (*a && *a == *b) {
    a++;
    b++;
  }
  return (u8)*a - (u8)*b;
}
