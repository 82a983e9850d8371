/* robust_idt (robust_idt.h): an IDT limit of 0. */
#define IDT_CASE IDT_LIMIT_0
#include "tests/robust/robust_idt.h"
