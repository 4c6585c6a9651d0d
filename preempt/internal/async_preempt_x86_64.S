// The asynchronous preemption trampoline (Go's asyncPreempt) and the
// return-address hijack stub.
//
// goro_async_preempt: the SIGURG handler made the interrupted fiber "call"
// this: it moved rsp below the 128-byte red zone, pushed the interrupted
// rip, and pointed rip here. Every other register still holds the
// interrupted code's value.
//
// goro_hijack_stub: the walk (preempt_walk.cc) wrote this address over the
// return address of a frame in denied code (libc, ...) whose caller may be
// preempted; the real return address is in the hijack table (see
// preempt_walk.h), at an index computed from the slot's address. It enters
// here when that frame returns, with rsp just above the slot. It reserves
// the same layout as the signal path, with the return slot filled in by C.
//
// Frame layout, shared (rbx holds the address of the saved r15):
//   rbx+0 .. rbx+112   r15 r14 r13 r12 r11 r10 r9 r8 rbp rdi rsi rdx rcx
//                      rbx rax
//   rbx+120            rflags
//   rbx+128            the return address (interrupted or real rip)
//   rbx+136 .. +264    the red-zone gap
//   rbx+264            the interrupted rsp (the CFA)
// Below rbx: the XSAVE area (64-byte aligned). `ret $128` at the end pops
// the return address and skips the gap, so rsp, rip and every register are
// exactly as they were.
//
// Both have CFI, so unwinders (gdb, libunwind stack dumps of a parked fiber,
// C++ exceptions through a hijacked return) see through them. It gives a
// rule for every general register saved (rflags and the extended state
// excepted), so a debugger shows the interrupted frame's registers; the
// caller-saved ones matter to no unwinder beyond that (an exception's
// landing pad gets rax and rdx from the personality routine).

#define GORO_HIJACK_TABLE_ADDR 0x3c6f72000000
#define GORO_HIJACK_MUL 0x9e3779b97f4a7c15

// Saves flags, the 15 general registers and the extended state; rbx = frame.
.macro GORO_SAVE_ALL
  pushfq
  .cfi_adjust_cfa_offset 8
  pushq %rax
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %rax, 0
  pushq %rbx
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %rbx, 0
  pushq %rcx
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %rcx, 0
  pushq %rdx
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %rdx, 0
  pushq %rsi
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %rsi, 0
  pushq %rdi
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %rdi, 0
  pushq %rbp
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %rbp, 0
  pushq %r8
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r8, 0
  pushq %r9
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r9, 0
  pushq %r10
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r10, 0
  pushq %r11
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r11, 0
  pushq %r12
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r12, 0
  pushq %r13
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r13, 0
  pushq %r14
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r14, 0
  pushq %r15
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %r15, 0
  movq %rsp, %rbx                   // callee-saved: survives the call below
  .cfi_def_cfa_register %rbx
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
  // Until the restore the registers belong to other code: the C code
  // called below and, when the fiber yields, the fiber that runs next on
  // this thread, which starts fresh or returns from a call and so assumes
  // the ABI's state at a call. Give it that: an empty x87 stack (with the
  // interrupted fiber's values left in place, the next fiber's long double
  // code overflowed the 8-deep stack into NaNs; preempt_test X87Stack...)
  // and clean upper vector halves (dirty ones make SSE code pay transition
  // penalties). The restore brings the fiber's own state back, control
  // words included.
  fninit
  testb $4, goro_xsave_mask_lo(%rip)  // AVX state enabled (XCR0 bit 2)
  jz 3f
  vzeroupper
3:
.endm

// Undoes GORO_SAVE_ALL and returns to the address in the return slot.
.macro GORO_RESTORE_ALL_AND_RETURN
  movl goro_xsave_mask_lo(%rip), %eax
  movl goro_xsave_mask_hi(%rip), %edx
  xrstor64 (%rsp)
  movq %rbx, %rsp
  .cfi_def_cfa_register %rsp
  popq %r15
  .cfi_adjust_cfa_offset -8
  .cfi_restore %r15
  popq %r14
  .cfi_adjust_cfa_offset -8
  .cfi_restore %r14
  popq %r13
  .cfi_adjust_cfa_offset -8
  .cfi_restore %r13
  popq %r12
  .cfi_adjust_cfa_offset -8
  .cfi_restore %r12
  popq %r11
  .cfi_adjust_cfa_offset -8
  .cfi_restore %r11
  popq %r10
  .cfi_adjust_cfa_offset -8
  .cfi_restore %r10
  popq %r9
  .cfi_adjust_cfa_offset -8
  .cfi_restore %r9
  popq %r8
  .cfi_adjust_cfa_offset -8
  .cfi_restore %r8
  popq %rbp
  .cfi_adjust_cfa_offset -8
  .cfi_restore %rbp
  popq %rdi
  .cfi_adjust_cfa_offset -8
  .cfi_restore %rdi
  popq %rsi
  .cfi_adjust_cfa_offset -8
  .cfi_restore %rsi
  popq %rdx
  .cfi_adjust_cfa_offset -8
  .cfi_restore %rdx
  popq %rcx
  .cfi_adjust_cfa_offset -8
  .cfi_restore %rcx
  popq %rbx
  .cfi_adjust_cfa_offset -8
  .cfi_restore %rbx
  popq %rax
  .cfi_adjust_cfa_offset -8
  .cfi_restore %rax
  popfq
  .cfi_adjust_cfa_offset -8
  ret $128
.endm

  .section goro_text,"ax",@progbits

  .globl goro_async_preempt
  .type goro_async_preempt,@function
  .p2align 4
goro_async_preempt:
  .cfi_startproc
  // Like the kernel's signal frame: the caller's rip is the interrupted
  // instruction itself, not a return address (unwinders must not subtract 1).
  .cfi_signal_frame
  .cfi_def_cfa %rsp, 136
  .cfi_offset %rip, -136
  GORO_SAVE_ALL
  movq %rbx, %rdi
  call goro_async_preempt_yield     // (frame): walk, then yield or hijack
  GORO_RESTORE_ALL_AND_RETURN
  .cfi_endproc
  .size goro_async_preempt,.-goro_async_preempt

// The stub's frame. Its CFA is the slot + 16, not the slot + 8 (the rsp it
// returns with): a frame with the same CFA as its callee makes libgcc's
// second phase take it for the handler's frame (uw_identify_context) and
// abort. So the caller's rsp is stated explicitly, as CFA - 8, and
// the return address is in the hijack table at
//   TABLE + 32 * (((S >> 3) * MUL) >> 52) + 8,  S = CFA - 16 (the slot).
// Each expression starts with the CFA on the DWARF stack (DWARF 5, 6.4.2.3).
//   DW_CFA_val_expression (0x16) rsp (7), 2 bytes:
//     DW_OP_lit8 DW_OP_minus
//   DW_CFA_expression (0x10) rip (16), 29 bytes:
//     DW_OP_lit16 DW_OP_minus           S
//     DW_OP_lit3 DW_OP_shr              S >> 3
//     DW_OP_const8u MUL DW_OP_mul
//     DW_OP_const1u 52 DW_OP_shr        the index
//     DW_OP_lit5 DW_OP_shl              * 32
//     DW_OP_const8u TABLE+8 DW_OP_plus  &entry.ret
// A constant address keeps .eh_frame free of relocations (the table is
// mapped at that fixed address, see preempt_walk.cc).
.macro GORO_HIJACK_RULES
  .cfi_escape 0x16, 0x07, 0x02, 0x38, 0x1c
  .cfi_escape 0x10, 0x10, 0x1d, 0x40, 0x1c, 0x33, 0x25, 0x0e, 0x15, 0x7c, 0x4a, 0x7f, 0xb9, 0x79, 0x37, 0x9e, 0x1e, 0x08, 0x34, 0x25, 0x35, 0x24, 0x0e, 0x08, 0x00, 0x00, 0x72, 0x6f, 0x3c, 0x00, 0x00, 0x22
.endm

  .globl goro_hijack_stub
  .type goro_hijack_stub,@function
  .p2align 4
  .cfi_startproc
  .cfi_def_cfa %rsp, 8
  GORO_HIJACK_RULES
  // Unwinders look up a return address minus one: this nop is that byte,
  // inside the FDE.
  nop
goro_hijack_stub:
  leaq -136(%rsp), %rsp             // the gap and the return slot; no flags
  .cfi_def_cfa_offset 144
  GORO_SAVE_ALL
  movq %rbx, %rdi
  call goro_hijack_return           // (frame): fill the slot, maybe yield
  GORO_RESTORE_ALL_AND_RETURN
  .cfi_endproc
  .size goro_hijack_stub,.-goro_hijack_stub

// void goro_call_on_stack(void (*fn)(void*) /* rdi */, void* arg /* rsi */,
//                         void* stack_top /* rdx */)
// Calls fn(arg) on another stack and comes back. The walk runs this way on
// the M's scheduler stack (see preempt_walk.cc). The CFI (CFA from rbp)
// lets debuggers and unwinders continue from there to the fiber's stack.
  .globl goro_call_on_stack
  .type goro_call_on_stack,@function
  .p2align 4
goro_call_on_stack:
  .cfi_startproc
  pushq %rbp
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %rbp, 0
  movq %rsp, %rbp
  .cfi_def_cfa_register %rbp
  andq $-16, %rdx
  movq %rdx, %rsp
  movq %rdi, %rax
  movq %rsi, %rdi
  call *%rax
  movq %rbp, %rsp
  .cfi_def_cfa_register %rsp
  popq %rbp
  .cfi_adjust_cfa_offset -8
  .cfi_restore %rbp
  ret
  .cfi_endproc
  .size goro_call_on_stack,.-goro_call_on_stack

  .section .note.GNU-stack,"",@progbits
