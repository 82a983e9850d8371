/* robust_idt (robust_idt.h): random gates, none present. */
#define IDT_CASE IDT_NOT_PRESENT
#include "tests/robust/robust_idt.h"
