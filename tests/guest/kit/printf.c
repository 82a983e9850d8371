/* A small printf: enough conversions for test reports, integer code only. */
#include "tests/guest/kit/kit.h"

struct out {
  bool to_serial;
  char* buf;
  size_t size;
  size_t len; /* characters produced so far (also past size) */
};

static void out_char(struct out* o, char c) {
  if (o->to_serial) {
    serial_putc(c);
  } else if (o->len + 1 < o->size) {
    o->buf[o->len] = c;
  }
  o->len++;
}

static void out_pad(struct out* o, char c, int n) {
  for (; n > 0; n--) out_char(o, c);
}

enum { FLAG_LEFT = 1, FLAG_ZERO = 2, FLAG_PLUS = 4, FLAG_SPACE = 8, FLAG_ALT = 16 };

static void out_number(struct out* o, u64 v, bool negative, unsigned base, bool upper, int flags,
                       int width) {
  const char* digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = digits[v % base];
    v /= base;
  } while (v);

  char prefix[3];
  int np = 0;
  if (negative) {
    prefix[np++] = '-';
  } else if (flags & FLAG_PLUS) {
    prefix[np++] = '+';
  } else if (flags & FLAG_SPACE) {
    prefix[np++] = ' ';
  }
  if ((flags & FLAG_ALT) && base == 16) {
    prefix[np++] = '0';
    prefix[np++] = upper ? 'X' : 'x';
  }

  int pad = width - n - np;
  if (!(flags & FLAG_LEFT) && !(flags & FLAG_ZERO)) out_pad(o, ' ', pad);
  for (int i = 0; i < np; i++) out_char(o, prefix[i]);
  if (!(flags & FLAG_LEFT) && (flags & FLAG_ZERO)) out_pad(o, '0', pad);
  while (n > 0) out_char(o, tmp[--n]);
  if (flags & FLAG_LEFT) out_pad(o, ' ', pad);
}

static void format(struct out* o, const char* fmt, va_list ap) {
  for (; *fmt; fmt++) {
    if (*fmt != '%') {
      out_char(o, *fmt);
      continue;
    }
    fmt++;
    int flags = 0;
    for (;; fmt++) {
      if (*fmt == '-') {
        flags |= FLAG_LEFT;
      } else if (*fmt == '0') {
        flags |= FLAG_ZERO;
      } else if (*fmt == '+') {
        flags |= FLAG_PLUS;
      } else if (*fmt == ' ') {
        flags |= FLAG_SPACE;
      } else if (*fmt == '#') {
        flags |= FLAG_ALT;
      } else {
        break;
      }
    }
    int width = 0;
    if (*fmt == '*') {
      width = va_arg(ap, int);
      if (width < 0) {
        flags |= FLAG_LEFT;
        width = -width;
      }
      fmt++;
    } else {
      while (*fmt >= '0' && *fmt <= '9') width = width * 10 + (*fmt++ - '0');
    }
    int precision = -1;
    if (*fmt == '.') {
      fmt++;
      precision = 0;
      if (*fmt == '*') {
        precision = va_arg(ap, int);
        fmt++;
      } else {
        while (*fmt >= '0' && *fmt <= '9') precision = precision * 10 + (*fmt++ - '0');
      }
    }
    int longs = 0; /* 0: int, 1: long, 2: long long (both 64-bit here) */
    if (*fmt == 'z') {
      longs = 1;
      fmt++;
    } else {
      while (*fmt == 'l') {
        longs++;
        fmt++;
      }
    }

    switch (*fmt) {
      case 'd':
      case 'i': {
        s64 v = longs ? va_arg(ap, s64) : va_arg(ap, int);
        u64 mag = v < 0 ? -(u64)v : (u64)v;
        out_number(o, mag, v < 0, 10, false, flags, width);
        break;
      }
      case 'u':
      case 'x':
      case 'X':
      case 'o': {
        u64 v = longs ? va_arg(ap, u64) : va_arg(ap, unsigned);
        unsigned base = *fmt == 'u' ? 10 : *fmt == 'o' ? 8 : 16;
        out_number(o, v, false, base, *fmt == 'X', flags, width);
        break;
      }
      case 'p': {
        u64 v = (u64)(uintptr_t)va_arg(ap, void*);
        out_number(o, v, false, 16, false, flags | FLAG_ALT, width);
        break;
      }
      case 'c': {
        char c = (char)va_arg(ap, int);
        if (!(flags & FLAG_LEFT)) out_pad(o, ' ', width - 1);
        out_char(o, c);
        if (flags & FLAG_LEFT) out_pad(o, ' ', width - 1);
        break;
      }
      case 's': {
        const char* s = va_arg(ap, const char*);
        if (!s) s = "(null)";
        int n = 0;
        while (s[n] && (precision < 0 || n < precision)) n++;
        if (!(flags & FLAG_LEFT)) out_pad(o, ' ', width - n);
        for (int i = 0; i < n; i++) out_char(o, s[i]);
        if (flags & FLAG_LEFT) out_pad(o, ' ', width - n);
        break;
      }
      case '%':
        out_char(o, '%');
        break;
      case '\0':
        return;
      default: /* unknown conversion: print it as it is */
        out_char(o, '%');
        out_char(o, *fmt);
        break;
    }
  }
}

int vprintf(const char* fmt, va_list ap) {
  struct out o = {true, NULL, 0, 0};
  format(&o, fmt, ap);
  return (int)o.len;
}

int printf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vprintf(fmt, ap);
  va_end(ap);
  return n;
}

int vsnprintf(char* buf, size_t size, const char* fmt, va_list ap) {
  struct out o = {false, buf, size, 0};
  format(&o, fmt, ap);
  if (size) buf[o.len < size ? o.len : size - 1] = '\0';
  return (int)o.len;
}

int snprintf(char* buf, size_t size, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, size, fmt, ap);
  va_end(ap);
  return n;
}

int putchar(int c) {
  serial_putc((char)c);
  return (u8)c;
}

int puts(const char* s) {
  while (*s) serial_putc(*s++);
  serial_putc('\n');
  return 0;
}
