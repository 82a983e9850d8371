/* robust_cr3 (robust_cr3.h): CR3 past the end of RAM. */
#define CR3_CASE CR3_BEYOND_RAM
#include "tests/robust/robust_cr3.h"
