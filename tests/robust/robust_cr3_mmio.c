/* robust_cr3 (robust_cr3.h): CR3 at the local APIC's MMIO page. */
#define CR3_CASE CR3_MMIO
#include "tests/robust/robust_cr3.h"
