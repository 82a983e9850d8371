/* robust_idt (robust_idt.h): random gates as they are. */
#define IDT_CASE IDT_RANDOM
#include "tests/robust/robust_idt.h"
