// btvm_native_enter: load all guest registers from btvm_native_block and jump
// to the snippet. Runs only in a child forked by btvm_native_server (see
// native_entry.h).
//
// Invariants: btvm_native_block is 64-byte aligned (FXRSTOR needs 16); its
// MXCSR image has no reserved bit set (checked by RunNative, else FXRSTOR
// raises #GP); RFLAGS has TF and AC clear. No instruction after POPFQ writes
// the flags, and after the last MOV no register is needed: the jump reads its
// target through RIP-relative memory, so every GPR, RSP included, is the
// guest's when the snippet's first instruction runs.

#include "tests/native/native_entry.h"

  .text
  .globl btvm_native_enter
  .hidden btvm_native_enter
  .type btvm_native_enter, @function
btvm_native_enter:
  cmpq $0, btvm_native_block+BTVM_NATIVE_HAS_AVX(%rip)
  je 1f
  vzeroupper  // YMM upper halves start at zero, not at the host's leftovers
1:
  fxrstor64 btvm_native_block+BTVM_NATIVE_FXSAVE(%rip)
  // A throw-away stack of one slot inside the block, just for POPFQ.
  leaq btvm_native_block+BTVM_NATIVE_RFLAGS(%rip), %rsp
  popfq
  movq btvm_native_block+BTVM_NATIVE_GPR+0*8(%rip), %rax
  movq btvm_native_block+BTVM_NATIVE_GPR+1*8(%rip), %rcx
  movq btvm_native_block+BTVM_NATIVE_GPR+2*8(%rip), %rdx
  movq btvm_native_block+BTVM_NATIVE_GPR+3*8(%rip), %rbx
  movq btvm_native_block+BTVM_NATIVE_GPR+4*8(%rip), %rsp
  movq btvm_native_block+BTVM_NATIVE_GPR+5*8(%rip), %rbp
  movq btvm_native_block+BTVM_NATIVE_GPR+6*8(%rip), %rsi
  movq btvm_native_block+BTVM_NATIVE_GPR+7*8(%rip), %rdi
  movq btvm_native_block+BTVM_NATIVE_GPR+8*8(%rip), %r8
  movq btvm_native_block+BTVM_NATIVE_GPR+9*8(%rip), %r9
  movq btvm_native_block+BTVM_NATIVE_GPR+10*8(%rip), %r10
  movq btvm_native_block+BTVM_NATIVE_GPR+11*8(%rip), %r11
  movq btvm_native_block+BTVM_NATIVE_GPR+12*8(%rip), %r12
  movq btvm_native_block+BTVM_NATIVE_GPR+13*8(%rip), %r13
  movq btvm_native_block+BTVM_NATIVE_GPR+14*8(%rip), %r14
  movq btvm_native_block+BTVM_NATIVE_GPR+15*8(%rip), %r15
  // Raw jump into the snippet: its pages were mapped R+X at the target by the
  // child, and end in int3, whose SIGTRAP is the way back.
  jmpq *btvm_native_block+BTVM_NATIVE_TARGET(%rip)
  .size btvm_native_enter, .-btvm_native_enter

  .section .note.GNU-stack,"",@progbits
