// Copyright goro authors.
//
// The x86-64 System V context switch: the frame layout shared by the assembly
// in context_x86_64.S and the C++ that builds a fiber's first frame.
//
// A cooperative switch is an ordinary call, so only what the ABI says a callee
// must preserve is saved: rbx, rbp, r12-r15, the MXCSR control/status register
// (control bits) and the x87 control word. Not saved here: the other general
// registers, flags, vector registers and the x87 stack (all caller-saved), and
// the signal mask (fibers share their thread's mask). Asynchronous preemption
// (preempt/) saves the full register file itself before it reaches this switch.

#ifndef GORO_RUNTIME_INTERNAL_CONTEXT_X86_64_H_
#define GORO_RUNTIME_INTERNAL_CONTEXT_X86_64_H_

#include <cstddef>
#include <cstdint>

namespace goro::runtime_internal {

// The saved frame, lowest address first: what `sp` points at while a context
// is switched out. The assembly hard-codes these offsets (see static_asserts).
struct SwitchFrame {
  std::uint32_t mxcsr;
  std::uint16_t x87_cw;
  std::uint16_t pad;
  std::uint64_t r15;
  std::uint64_t r14;
  std::uint64_t r13;
  std::uint64_t r12;
  std::uint64_t rbx;
  std::uint64_t rbp;
  std::uint64_t ret;  // where `ret` continues: the caller, or the trampoline
};
static_assert(offsetof(SwitchFrame, mxcsr) == 0);
static_assert(offsetof(SwitchFrame, x87_cw) == 4);
static_assert(offsetof(SwitchFrame, r15) == 8);
static_assert(offsetof(SwitchFrame, r12) == 32);
static_assert(offsetof(SwitchFrame, rbx) == 40);
static_assert(offsetof(SwitchFrame, rbp) == 48);
static_assert(offsetof(SwitchFrame, ret) == 56);
static_assert(sizeof(SwitchFrame) == 64);

// Power-on defaults (all exceptions masked, round to nearest, 64-bit x87
// precision), the state a new fiber starts with.
inline constexpr std::uint32_t kDefaultMxcsr = 0x1F80;
inline constexpr std::uint16_t kDefaultX87Cw = 0x037F;

}  // namespace goro::runtime_internal

extern "C" {
// goro_context_switch saves the current context on the current stack, stores
// the stack pointer in *save_sp, and resumes the context whose stack pointer is
// load_sp. It returns when some other switch resumes *save_sp.
void goro_context_switch(void** save_sp, void* load_sp);

// goro_context_trampoline is the return address of a new fiber's first frame:
// it calls rbx(r12) and never returns. Its CFI marks the bottom of the stack
// (return address undefined), so libunwind and gdb stop there cleanly.
void goro_context_trampoline();
}

#endif  // GORO_RUNTIME_INTERNAL_CONTEXT_X86_64_H_
