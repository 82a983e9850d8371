/*
 * robust_random_user_if: robust_random_user with interrupts on in user
 * mode (RFLAGS.IF = 1, IOPL 0, the kit's Linux selectors): the state in
 * which btvm's direct engine runs user code natively in its child process,
 * so the random bytes run there (robust.direct.* in CMakeLists.txt). No
 * interrupt comes: robust_init() masks the PIC.
 */
#define USER_RFLAGS 0x202
#include "tests/robust/robust_random_user.c"
