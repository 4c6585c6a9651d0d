// The asynchronous preemption trampoline (Go's asyncPreempt).
//
// The SIGURG handler made the interrupted fiber "call" this: it moved rsp
// below the 128-byte red zone, pushed the interrupted rip, and pointed rip
// here. Every other register still holds the interrupted code's value.
// Stack on entry:  [rsp] = interrupted rip, [rsp+8 .. rsp+136) = red zone
// gap, rsp+136 = the interrupted rsp.
//
// Save flags and all 16 general registers, then the full extended state
// (x87, SSE, AVX, AVX-512 ... as enabled in XCR0) with XSAVE into a 64-byte
// aligned area, yield like a cooperative switch, and undo it all. `ret $128`
// pops the return address and skips the red-zone gap, so rsp is exactly the
// interrupted rsp again.

  .section goro_text,"ax",@progbits
  .globl goro_async_preempt
  .type goro_async_preempt,@function
  .p2align 4
goro_async_preempt:
  pushfq
  pushq %rax
  pushq %rbx
  pushq %rcx
  pushq %rdx
  pushq %rsi
  pushq %rdi
  pushq %rbp
  pushq %r8
  pushq %r9
  pushq %r10
  pushq %r11
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, %rbx                   // callee-saved: survives the call below
  subq goro_xsave_size(%rip), %rsp
  andq $-64, %rsp
  // XRSTOR faults on non-zero reserved header bytes; XSAVE writes only
  // XSTATE_BV. Clear the 64-byte header at offset 512 first.
  xorl %eax, %eax
  movq %rax, 512(%rsp)
  movq %rax, 520(%rsp)
  movq %rax, 528(%rsp)
  movq %rax, 536(%rsp)
  movq %rax, 544(%rsp)
  movq %rax, 552(%rsp)
  movq %rax, 560(%rsp)
  movq %rax, 568(%rsp)
  movl goro_xsave_mask_lo(%rip), %eax
  movl goro_xsave_mask_hi(%rip), %edx
  xsave64 (%rsp)
  cld                               // the ABI's direction flag for C code
  call goro_async_preempt_yield
  movl goro_xsave_mask_lo(%rip), %eax
  movl goro_xsave_mask_hi(%rip), %edx
  xrstor64 (%rsp)
  movq %rbx, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %r11
  popq %r10
  popq %r9
  popq %r8
  popq %rbp
  popq %rdi
  popq %rsi
  popq %rdx
  popq %rcx
  popq %rbx
  popq %rax
  popfq
  ret $128
  .size goro_async_preempt,.-goro_async_preempt

  .section .note.GNU-stack,"",@progbits
