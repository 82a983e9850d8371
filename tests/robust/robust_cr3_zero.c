/* robust_cr3 (robust_cr3.h): CR3 at a zeroed page. */
#define CR3_CASE CR3_ZERO_PAGE
#include "tests/robust/robust_cr3.h"
