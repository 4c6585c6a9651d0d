// Copyright goro authors.
//
// sysmon's decisions about one P, apart from the reading of the P and the
// acting on it (sysmon.cc), so that they can be tested with a fake clock
// (tests/runtime/retake_test.cc). Go keeps the same logic in retake().
//
// Each round sysmon fills a PView per P and calls PWatch::observe, which
// returns what to do:
//   * A fiber overran its slice: the P's sched_seq (counting fresh slices;
//     fibers run from runnext inherit theirs, so a chain of hand-offs is one
//     fiber) has not changed for longer than the time slice since the round
//     that first saw it. Request preemption (the fiber's flag), then -- at
//     most once per resignal interval -- ask the thread's state: on a CPU
//     ('R'), signal it (when the P is not a spare; fibers on a spare are
//     preempted only cooperatively); asleep in the kernel ('S', 'D') at two
//     checks in a row, lend the P's spare so its other fibers keep running
//     (signalling would only break the call with EINTR). Neither happens
//     while nothing else waits for a CPU (PView::others_wait). A fiber once
//     seen asleep in the kernel is signalled only after it has been seen on
//     a CPU at two checks in a row: between two raw blocking calls it is 'R'
//     only briefly, and a signal sent then lands in the next call as EINTR.
//   * A lent spare goes back once its P's stuck M runs again.
//   * Work stranded on a busy P (ready() does not wake an M for a fiber it
//     puts in runnext: it usually runs at once) while another P idles and
//     nobody looks for work: after one period, wake an M. A runnext alone
//     counts only if the P has not switched since: a P that keeps switching
//     runs its runnext fibers itself (a channel ping-pong has one there half
//     the time), and an M woken to steal them would only contend for the P's
//     cache lines.
//   * A timer overdue by a period while a P idles and nobody looks for work
//     (wake_for_overdue_timer, below; not per P: the earliest timer of all
//     Ps): wake an M, which runs it.
//
// The thread's state costs a /proc read (~2.5 us), so it is asked for only
// when a decision depends on it.

#ifndef GORO_RUNTIME_INTERNAL_RETAKE_H_
#define GORO_RUNTIME_INTERNAL_RETAKE_H_

#include <algorithm>
#include <cstdint>

#include "absl/functional/function_ref.h"

namespace goro::runtime_internal {

// What sysmon read of one P this round.
struct PView {
  bool running = false;        // PStatus::kRunning
  std::uint64_t seq = 0;       // P::sched_seq
  std::uint64_t switches = 0;  // P::context_switches
  bool ring_work = false;      // the local ring is not empty
  bool runnext_work = false;   // runnext holds a fiber
  bool others_idle = false;    // npidle > 0 && nmspinning == 0
  bool has_m = false;          // an M holds it
  bool has_fiber = false;      // its M runs a fiber (not its scheduler)
  bool is_spare = false;       // a spare P (never signalled, never lent)
  bool spare_lent = false;     // (regular P) its spare is SpareState::kOn
  bool async_preempt = true;   // Options::async_preempt
  // Something besides the running fiber waits for a CPU: the P's ring or
  // runnext, the global queue, fibers pinned to its M, a timer due within a
  // slice, or fibers waiting on the network. Without it a switch would only
  // resume the same fiber.
  bool others_wait = true;
};

// What to do about it.
struct RetakeActions {
  bool retire_spare = false;     // the lent spare goes back
  bool wake_m = false;           // stranded work: wakep()
  bool request_preempt = false;  // set the running fiber's preempt flag
  bool lend_spare = false;       // the M is stuck in the kernel
  bool signal = false;           // interrupt the M (Hooks::preempt_m), then
                                 // PWatch::signal_sent
};

// Timing of the decisions, in nanoseconds.
struct RetakePolicy {
  std::int64_t slice = 10'000'000;  // Options::time_slice
  std::int64_t period = 1'000'000;  // sysmon's period while busy
  // The least time between two signals (or stuck checks) for one P.
  std::int64_t resignal() const {
    return std::max<std::int64_t>(period, kMinResignal);
  }
  static constexpr std::int64_t kMinResignal = 100'000;
};

// sysmon's memory of one P between rounds.
class PWatch {
 public:
  // observe decides for one round at `now`; `prev` is the previous round's
  // time (0 if none). thread_state() returns the P's M's scheduling state
  // ('R' on a CPU or runnable, 'S'/'D' asleep in the kernel, '?' unknown).
  RetakeActions observe(std::int64_t now, std::int64_t prev,
                        const RetakePolicy& pol, const PView& v,
                        absl::FunctionRef<char()> thread_state) {
    RetakeActions a;
    calm_ =
        !v.running || (v.has_fiber && !v.others_wait && !v.spare_lent &&
                       !v.is_spare && v.seq == seq_ && v.switches == switches_);
    switches_ = v.switches;
    if (!v.running || v.seq != seq_) {
      seq_ = v.running ? v.seq : kNone;
      // The switch happened since the previous round: assume the middle of
      // that interval (unbiased), unless that round is long past.
      since_ = prev != 0 && now - prev <= 2 * pol.period
                   ? prev + (now - prev) / 2
                   : now;
      last_signal_ = 0;
      seen_asleep_ = false;
      asleep_once_ = false;
      running_once_ = false;
    }
    const bool overran = v.running && now - since_ >= pol.slice;
    if (v.spare_lent && (!overran || !v.has_m || thread_state() == 'R')) {
      a.retire_spare = true;
    }
    if (v.running && (v.ring_work || v.runnext_work) && v.others_idle) {
      if (waiting_since_ == 0 ||
          (!v.ring_work && waiting_switches_ != v.switches)) {
        waiting_since_ = now;
        waiting_switches_ = v.switches;
      } else if (now - waiting_since_ >= pol.period) {
        a.wake_m = true;
        waiting_since_ = 0;
      }
    } else {
      waiting_since_ = 0;
    }
    if (!overran || !v.has_fiber) return a;
    a.request_preempt = true;
    // Nothing else waits: neither a signal nor a spare would run anything
    // else (the flag costs nothing; a cooperative yield returns at once).
    // Work that arrives later is seen at the next round, and signalled then
    // without waiting for a re-signal interval.
    if (!v.others_wait) return a;
    if (now - last_signal_ < pol.resignal()) return a;
    const char st = thread_state();
    if (st != 'R') {
      // Asleep in the kernel. Stuck only if still asleep at the next check,
      // a re-signal interval later: a thread that waits briefly (a page
      // fault, a contended lock, a sanitizer's own locks) is not, and a
      // spare lent for it would only reorder its P's fibers.
      // Stopped ('t' by a debugger's ptrace, 'T' by SIGSTOP) is not
      // asleep in a call: gdb stops a thread briefly at every SIGURG it
      // passes on, and a spare lent then only lets the P's other fibers
      // run beside it. Asked again a re-signal interval later.
      const bool known = st != '?' && st != 't' && st != 'T';
      a.lend_spare = !v.is_spare && known && asleep_once_;
      asleep_once_ = known;
      seen_asleep_ = seen_asleep_ || known;
      running_once_ = false;
      last_signal_ = now;
      return a;
    }
    asleep_once_ = false;
    // A fiber whose thread was seen asleep in the kernel during this run
    // makes raw blocking calls: a signal would most likely land in the next
    // one and fail it with EINTR (SA_RESTART restarts neither poll nor
    // nanosleep). Its P's other fibers run on the lent spare meanwhile, so
    // signal it only once it has been seen running at two checks in a row,
    // a re-signal interval apart: then it is computing, not between calls.
    if (seen_asleep_ && !running_once_) {
      running_once_ = true;
      last_signal_ = now;
      return a;
    }
    a.signal = v.async_preempt && !v.is_spare;
    return a;
  }

  // signal_sent records that sysmon acted on `signal` at `now` (it does not
  // when a signal was already in flight: it asks again next round).
  void signal_sent(std::int64_t now) { last_signal_ = now; }

  // calm: after observe, whether sysmon has nothing to do about this P until
  // its fiber's slice ends (slice_end) unless new work arrives: the P is
  // idle, or the fiber it runs has not switched since the previous round
  // and nothing waits for the P (so no stranded work is being timed either)
  // and no spare is involved. New work wakes a sysmon that sleeps on calm
  // Ps (sysmon_wake): it need not look again before then.
  bool calm() const { return calm_; }

  // When the fiber seen running will have run a whole slice (INT64_MAX if
  // none is running or it already has): sysmon's next wake-up.
  std::int64_t slice_end(const RetakePolicy& pol, const PView& v,
                         std::int64_t now) const {
    return v.running && since_ + pol.slice > now ? since_ + pol.slice
                                                 : INT64_MAX;
  }

 private:
  static constexpr std::uint64_t kNone = ~0ULL;
  std::uint64_t seq_ = kNone;
  std::int64_t since_ = 0;              // when seq_ was first seen
  std::int64_t last_signal_ = 0;        // when we last signalled its M
  bool seen_asleep_ = false;            // its thread was seen in the kernel
  bool asleep_once_ = false;            // ... at the last check
  bool running_once_ = false;           // then seen running at one check
  std::int64_t waiting_since_ = 0;      // runnable work seen stranded since
  std::uint64_t waiting_switches_ = 0;  // P::context_switches then
  std::uint64_t switches_ = 0;          // P::context_switches last round
  bool calm_ = false;                   // see calm()
};

// Whether sysmon should wake an M (wakep) for `earliest`, the earliest
// timer of all Ps (0: none), at `now`; `others_idle` as in PView. Go's
// sysmon: "There are timers that should have already run, perhaps because
// there is an unpreemptible P. Try to start an M to run them."
//
// Any M that comes through find_runnable runs every P's due timers, and an
// M that gives up its P sleeps until the earliest timer of all Ps. But a
// timer armed on a P whose M then runs a fiber that never reaches a
// cooperative point -- a call-free loop, with asynchronous preemption off
// (ThreadSanitizer, Options::async_preempt = false) or refused -- waits for
// that P, while the other Ms may sleep with no deadline: they went idle
// before it was armed, and arming a timer on a P wakes no idle M (the P's
// own M is expected to run it). Without this, such a timer never fired.
//
// The grace is one period, as for stranded runnable work: an M sleeping
// until the timer runs it within its wake-up latency, and another woken for
// it meanwhile would only race that one. While a P runs a fiber and a timer
// is due within a slice, sysmon is not calm (the timer counts in
// PView::others_wait) and rounds every period, so an overdue timer is seen
// at most about two periods after its deadline. With every P busy there is
// nothing to wake: the timer waits for a switch, which preemption forces at
// the end of the running fiber's slice (where it can).
inline bool wake_for_overdue_timer(std::int64_t now, std::int64_t earliest,
                                   const RetakePolicy& pol, bool others_idle) {
  return earliest != 0 && others_idle && now - earliest >= pol.period;
}

}  // namespace goro::runtime_internal

#endif  // GORO_RUNTIME_INTERNAL_RETAKE_H_
