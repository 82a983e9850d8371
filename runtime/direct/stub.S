// The stub of a direct-execution child (DESIGN.md, Direct execution): the
// only code the child keeps besides the guest's. It is position
// independent and copied to the first page of the child's stub area; the
// second page is the control page it shares with the monitor
// (runtime/direct/user_child.h, StubControl). The monitor starts each
// entry by setting RIP (ptrace); each ends with int3, which stops the
// traced child for the monitor. The stub uses no stack: there is none.

        .intel_syntax noprefix
        .section .rodata.btvm_stub, "a"
        .balign 4096
        .globl btvm_stub_start, btvm_stub_end, btvm_stub_init, btvm_stub_apply

btvm_stub_start:

// Unmaps everything below the stub area and above it up to the top of the
// user range, the vDSO and vvar included ([vsyscall] lies above).
btvm_stub_init:
        lea r12, [rip + btvm_stub_start]
        xor edi, edi
        mov rsi, r12
        mov eax, 11                     // munmap(0, stub)
        syscall
        lea rdi, [r12 + 2 * 4096]
        movabs rsi, 0x7ffffffff000
        sub rsi, rdi
        mov eax, 11                     // munmap(stub + 2 pages, top - that)
        syscall
        int3

// Applies the control page's operations in order; stops at the first
// that fails, with its result (-errno) and index in the control page.
btvm_stub_apply:
        lea rbx, [rip + btvm_stub_start + 4096]
        mov qword ptr [rbx + 8], 0      // error
        xor r12d, r12d                  // index
1:      cmp r12, [rbx]                  // count
        jae 9f
        mov r13, r12
        shl r13, 5
        lea r13, [rbx + 64 + r13]       // the operation
        mov rdi, [r13 + 8]              // address
        mov rsi, [r13 + 16]             // length
        mov edx, [r13 + 4]              // protection
        mov eax, [r13]                  // kind
        cmp eax, 1
        jne 2f
        mov r10d, 0x11                  // MAP_SHARED | MAP_FIXED
        mov r8, [rbx + 24]              // the RAM file descriptor
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
8:      mov [rbx + 8], rax
        mov [rbx + 16], r12
9:      int3

btvm_stub_end:
        .section .note.GNU-stack, "", @progbits
