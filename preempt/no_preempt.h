// Copyright goro authors.
//
// goro::NoPreempt: a scope in which the current fiber is not preempted
// asynchronously.
//
//   {
//     goro::NoPreempt np;
//     update_shared_state_that_signals_must_not_interrupt();
//   }  // a preemption requested meanwhile happens here
//
// Inside the scope sysmon's SIGURG never switches the fiber away; requests
// made meanwhile are remembered and honoured when the outermost guard of the
// fiber ends (the destructor yields). Cooperative switches -- the fiber's own
// calls that park or yield -- still happen; the scope belongs to the fiber,
// not to its thread, and nests.
//
// Use it around code that must not be interleaved with other fibers of the
// same thread but cannot take a lock, or around calls into code that goro
// cannot recognise as unsafe (see docs/preemption.md). Keep it short: a long
// scope starves the other fibers of its P.
//
// Cost: two non-inlined calls, no atomic read-modify-write. Outside a fiber
// it does nothing.

#ifndef GORO_PREEMPT_NO_PREEMPT_H_
#define GORO_PREEMPT_NO_PREEMPT_H_

namespace goro {
namespace runtime_internal {
struct Fiber;
}  // namespace runtime_internal

namespace preempt_internal {
runtime_internal::Fiber* no_preempt_enter();
void no_preempt_exit(runtime_internal::Fiber* f);
}  // namespace preempt_internal

class NoPreempt {
 public:
  NoPreempt() : fiber_(preempt_internal::no_preempt_enter()) {}
  ~NoPreempt() { preempt_internal::no_preempt_exit(fiber_); }
  NoPreempt(const NoPreempt&) = delete;
  NoPreempt& operator=(const NoPreempt&) = delete;

 private:
  runtime_internal::Fiber* fiber_;
};

}  // namespace goro

#endif  // GORO_PREEMPT_NO_PREEMPT_H_
