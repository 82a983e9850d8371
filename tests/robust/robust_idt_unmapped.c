/* robust_idt (robust_idt.h): the IDT on an unmapped page. */
#define IDT_CASE IDT_UNMAPPED
#include "tests/robust/robust_idt.h"
