/* robust_cr3 (robust_cr3.h): CR3 at a page of random bytes. */
#define CR3_CASE CR3_RANDOM_PAGE
#include "tests/robust/robust_cr3.h"
