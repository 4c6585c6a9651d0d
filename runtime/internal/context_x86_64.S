// x86-64 System V context switch. Frame layout: context_x86_64.h (SwitchFrame).

  .section goro_text,"ax",@progbits
  .globl goro_context_switch
  .type goro_context_switch,@function
  .p2align 4
// void goro_context_switch(void** save_sp /* rdi */, void* load_sp /* rsi */)
goro_context_switch:
  .cfi_startproc
  pushq %rbp
  .cfi_adjust_cfa_offset 8
  pushq %rbx
  .cfi_adjust_cfa_offset 8
  pushq %r12
  .cfi_adjust_cfa_offset 8
  pushq %r13
  .cfi_adjust_cfa_offset 8
  pushq %r14
  .cfi_adjust_cfa_offset 8
  pushq %r15
  .cfi_adjust_cfa_offset 8
  pushq $0                          // the slot for MXCSR, x87 CW and pad
  .cfi_adjust_cfa_offset 8
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  // Our MXCSR and x87 CW, read back with loads of the same size and address
  // as the stores above, so the CPU forwards them from its store buffer (one
  // 8-byte load over the two stores would stall until they retire).
  movl (%rsp), %eax
  movzwl 4(%rsp), %ecx
  // From here on we run on the other context's stack.
  movq %rsi, %rsp
  // Loading MXCSR and the x87 CW costs cycles; skip each when the resumed
  // context saved the value already in force (the common case).
  cmpl (%rsp), %eax
  je 1f
  ldmxcsr (%rsp)
1:
  cmpw 4(%rsp), %cx
  je 2f
  fldcw 4(%rsp)
2:
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .cfi_endproc
  .size goro_context_switch,.-goro_context_switch

  .globl goro_context_trampoline
  .type goro_context_trampoline,@function
  .p2align 4
// First code a fiber runs: rbx = entry function, r12 = its argument. The
// stack is 16-byte aligned here (the first frame is laid out that way), so the
// call below gives the entry function the ABI's alignment.
goro_context_trampoline:
  .cfi_startproc
  .cfi_undefined rip
  xorl %ebp, %ebp
  movq %r12, %rdi
  callq *%rbx
  ud2
  .cfi_endproc
  .size goro_context_trampoline,.-goro_context_trampoline

  .section .note.GNU-stack,"",@progbits
