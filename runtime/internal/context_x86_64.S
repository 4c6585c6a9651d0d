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
  pushq $0                          // zeroed slot: pad bytes compare equal
  .cfi_adjust_cfa_offset 8
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq (%rsp), %rax                 // our MXCSR and x87 CW, as saved
  // From here on we run on the other context's stack.
  movq %rsi, %rsp
  // Loading MXCSR and the x87 CW costs cycles; skip both when the resumed
  // context saved the same values (the common case).
  cmpq (%rsp), %rax
  je 1f
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
1:
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
