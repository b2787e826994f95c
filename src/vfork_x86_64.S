/*
 * vfork_x86_64.S - a vfork() wrapper that keeps no stack frame.
 *
 * A vfork child shares our memory until it execs or exits, so it must not
 * update the shim's tables (CPython's subprocess closes fds in a vfork child;
 * our close wrapper would clear the parent's entries).  The wrapper counts
 * vforks in flight (ef_vfork_depth) so that wrappers compare getpid() with the
 * cached pid while one is in flight and pass through in the child.
 *
 * vfork returns twice on the same stack, so a C wrapper's frame would be
 * clobbered by the child before the parent returns through it.  Like the
 * sanitizers' vfork interceptor, we pop the program's return address into a
 * thread-local spill slot, call the real vfork with no frame of our own, and
 * jump back.  The parent (rax != 0) decrements the count when it resumes, after
 * the child has exec'd or exited.
 */
#if defined(__x86_64__) && defined(__linux__)
        .text
        .globl  vfork
        .type   vfork, @function
vfork:
        .cfi_startproc
        endbr64
        popq    %rcx
        .cfi_adjust_cfa_offset -8
        .cfi_register %rip, %rcx
        movq    ef_vfork_ret@GOTTPOFF(%rip), %rdx
        movq    %rcx, %fs:(%rdx)
        lock incl ef_vfork_depth(%rip)
        call    *ef_vfork_fn(%rip)
        movq    ef_vfork_ret@GOTTPOFF(%rip), %rdx
        movq    %fs:(%rdx), %rcx
        testl   %eax, %eax
        jz      1f
        lock decl ef_vfork_depth(%rip)
1:      jmp     *%rcx
        .cfi_endproc
        .size   vfork, .-vfork
#endif
        .section .note.GNU-stack,"",@progbits
