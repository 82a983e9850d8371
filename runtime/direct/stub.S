// The stub of a direct-execution child (DESIGN.md, Direct execution): the
// only code the child keeps besides the guest's. It is position
// independent and copied to the first page of the child's stub area; the
// rest of the area is shared with the monitor: the control page
// (runtime/direct/user_child.h, StubControl) and the stack the stub runs
// on, which is also the stack signals are delivered on.
//
// Two transports use it (user_child.h):
// - ptrace: the monitor starts an entry by setting RIP and RSP; each ends
//   with int3, which stops the traced child for the monitor.
// - seccomp: the child is not traced. Every signal the guest's code raises
//   (its faults, the SIGSYS of its syscalls, the monitor's interrupt
//   request) enters btvm_stub_handler on the stub's stack. The handler
//   tells the monitor where the signal frame is, wakes it and sleeps on a
//   futex in the control page; the monitor reads and rewrites the frame
//   (the guest's registers), and wakes the handler, which applies queued
//   mapping changes and returns, so that rt_sigreturn loads the frame and
//   the guest runs on.

        .intel_syntax noprefix
        .section .rodata.btvm_stub, "a"
        .balign 4096
        .globl btvm_stub_start, btvm_stub_end, btvm_stub_init, btvm_stub_apply
        .globl btvm_stub_handler, btvm_stub_restorer

// StubControl's fields (user_child.h checks these offsets).
        .set CTL, 4096                  // the control page, from the start
        .set COUNT, 0
        .set ERROR, 8
        .set ERROR_INDEX, 16
        .set RAM_FD, 24
        .set STATE, 40                  // futex word: 1 the child stopped, 2 go on
        .set COMMAND, 44                // 1 run the guest, 2 apply the mappings only
        .set FLAGS, 48                  // bit 0: rdfsbase and friends work
        .set SIGNAL, 56
        .set INFO, 64
        .set UCONTEXT, 72
        .set FS_BASE, 80
        .set GS_BASE, 88
        .set SEL_DS, 96
        .set SEL_ES, 98
        .set SEL_FS, 100
        .set SEL_GS, 102
        .set MONITOR_SLEEPS, 104        // 1 while the monitor sleeps on STATE
        .set CHILD_SLEEPS, 108          // 1 while the handler sleeps on STATE
        .set SPIN_PAUSES, 112           // how long the handler spins before it sleeps (> 0)
        .set SPIN_STOP, 120             // nonzero: sleep at once (the monitor runs another child)
        .set OPS, 256
        .set STUB_BYTES, 0x10000        // UserChild::kStubBytes

btvm_stub_start:

// Unmaps everything below the stub area and above it up to the top of the
// user range, the vDSO and vvar included ([vsyscall] lies above). With the
// seccomp transport the int3 enters the handler, which reports the child
// ready.
btvm_stub_init:
        lea r12, [rip + btvm_stub_start]
        xor edi, edi
        mov rsi, r12
        mov eax, 11                     // munmap(0, stub)
        syscall
        lea rdi, [r12 + STUB_BYTES]
        movabs rsi, 0x7ffffffff000
        sub rsi, rdi
        mov eax, 11                     // munmap(stub area end, top - that)
        syscall
        int3

// The ptrace transport's entry for a batch of mapping changes.
btvm_stub_apply:
        call apply
        int3

// Applies the control page's operations in order; stops at the first
// that fails, with its result (-errno) and index in the control page.
// Leaves count as it is: the monitor clears it.
apply:
        lea rbx, [rip + btvm_stub_start + CTL]
        mov qword ptr [rbx + ERROR], 0
        xor r12d, r12d                  // index
1:      cmp r12, [rbx + COUNT]
        jae 9f
        mov r13, r12
        shl r13, 5
        lea r13, [rbx + OPS + r13]      // the operation
        mov rdi, [r13 + 8]              // address
        mov rsi, [r13 + 16]             // length
        mov edx, [r13 + 4]              // protection
        mov eax, [r13]                  // kind
        cmp eax, 1
        jne 2f
        mov r10d, 0x11                  // MAP_SHARED | MAP_FIXED
        mov r8, [rbx + RAM_FD]
        mov r9, [r13 + 24]              // offset in it
        mov eax, 9                      // mmap
        syscall
        cmp rax, -4095
        jae 8f
        jmp 4f
2:      cmp eax, 2
        jne 3f
        mov eax, 11                     // munmap
        syscall
        test rax, rax
        jnz 8f
        jmp 4f
3:      mov eax, 10                     // mprotect
        syscall
        test rax, rax
        jnz 8f
4:      inc r12
        jmp 1b
8:      mov [rbx + ERROR], rax
        mov [rbx + ERROR_INDEX], r12
9:      ret

// The seccomp transport's signal handler: rdi the signal, rsi its
// siginfo, rdx the ucontext (the guest's registers), all on the stub's
// stack. Every signal is blocked while it runs.
btvm_stub_handler:
        lea rbx, [rip + btvm_stub_start + CTL]
        mov [rbx + SIGNAL], rdi
        mov [rbx + INFO], rsi
        mov [rbx + UCONTEXT], rdx
        // What the frame does not hold: the data segment selectors and
        // the FS and GS bases, which signal delivery leaves as they were.
        mov eax, ds
        mov [rbx + SEL_DS], ax
        mov eax, es
        mov [rbx + SEL_ES], ax
        mov eax, fs
        mov [rbx + SEL_FS], ax
        mov eax, gs
        mov [rbx + SEL_GS], ax
        test byte ptr [rbx + FLAGS], 1
        jz 1f
        rdfsbase rax
        mov [rbx + FS_BASE], rax
        rdgsbase rax
        mov [rbx + GS_BASE], rax
        jmp 2f
1:      mov edi, 0x1003                 // arch_prctl(ARCH_GET_FS, &fs_base)
        lea rsi, [rbx + FS_BASE]
        mov eax, 158
        syscall
        mov edi, 0x1004                 // arch_prctl(ARCH_GET_GS, &gs_base)
        lea rsi, [rbx + GS_BASE]
        mov eax, 158
        syscall
        // Stopped: wake the monitor if it sleeps (it may still be
        // spinning), then wait until it says go on: spinning for
        // SPIN_PAUSES pause instructions first (a wake-up from sleep
        // costs far more on these hosts), then sleeping on the futex.
2:      mov eax, 1
        xchg dword ptr [rbx + STATE], eax   // (xchg: a full barrier)
        cmp dword ptr [rbx + MONITOR_SLEEPS], 0
        je 5f
        lea rdi, [rbx + STATE]
        mov esi, 1                      // FUTEX_WAKE (shared: two processes)
        mov edx, 1
        mov eax, 202                    // futex
        syscall
5:      mov r14, [rbx + SPIN_PAUSES]    // (no rdtsc here: it faults in the child)
6:      cmp dword ptr [rbx + STATE], 1
        jne 4f
        cmp dword ptr [rbx + SPIN_STOP], 0
        jne 3f
        pause
        dec r14
        jnz 6b
3:      mov eax, 1
        xchg dword ptr [rbx + CHILD_SLEEPS], eax
        cmp dword ptr [rbx + STATE], 1
        jne 7f
        lea rdi, [rbx + STATE]
        xor esi, esi                    // FUTEX_WAIT while it is 1
        mov edx, 1
        xor r10d, r10d                  // no timeout
        mov eax, 202
        syscall
        jmp 3b
7:      mov dword ptr [rbx + CHILD_SLEEPS], 0
4:      call apply
        cmp qword ptr [rbx + ERROR], 0
        jne 2b                          // a mapping failed: the monitor's to say
        cmp dword ptr [rbx + COMMAND], 1
        jne 2b                          // mappings only: done
        // Run: the selectors and bases the guest runs with (FS and GS
        // null first: loading a selector can change the base).
        movzx eax, word ptr [rbx + SEL_DS]
        mov ds, eax
        movzx eax, word ptr [rbx + SEL_ES]
        mov es, eax
        xor eax, eax
        mov fs, eax
        mov gs, eax
        test byte ptr [rbx + FLAGS], 1
        jz 5f
        mov rax, [rbx + FS_BASE]
        wrfsbase rax
        mov rax, [rbx + GS_BASE]
        wrgsbase rax
        ret
5:      mov edi, 0x1002                 // arch_prctl(ARCH_SET_FS, fs_base)
        mov rsi, [rbx + FS_BASE]
        mov eax, 158
        syscall
        mov edi, 0x1001                 // arch_prctl(ARCH_SET_GS, gs_base)
        mov rsi, [rbx + GS_BASE]
        mov eax, 158
        syscall
        ret                             // to btvm_stub_restorer

btvm_stub_restorer:
        mov eax, 15                     // rt_sigreturn: the frame, as the monitor left it
        syscall

btvm_stub_end:
        .section .note.GNU-stack, "", @progbits
