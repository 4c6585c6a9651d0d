// Copyright goro authors.
//
// goro::select: Go's select statement over goro::Chan.
//
//   std::size_t i = goro::select(
//       goro::recv_case(jobs, [&](std::optional<Job> j) { if (j) run(*j); }),
//       goro::send_case(results, r, [&] { ++sent; }),
//       goro::recv_case(goro::after(std::chrono::seconds(1)),
//                       [&](auto) { timed_out = true; }),
//       goro::default_case([&] { idle(); }));   // optional, at most one
//
// select waits until at least one case can proceed, performs exactly one of
// them, runs that case's callback and returns the case's index (its position
// among select's arguments). A recv case's callback gets the received value,
// or an empty optional if the channel is closed and drained (it may also take
// no argument); a send case's callback takes none. With a default case,
// select does not park: if no case is ready it runs the default's callback.
//
// Evaluation order. The variadic form above stays, and is the usual one:
// its cases are function arguments, so C++ leaves the order in which the
// cases -- and each case's channel and value operands -- are evaluated
// unspecified (GCC evaluates them right to left). Go evaluates every
// channel and value operand once, in source order, before it looks at any
// channel. When the operands have side effects whose order matters, use the
// ordered form: the cases in a braced goro::Cases{...} list, which C++
// evaluates left to right, each case completely before the next:
//
//   goro::select(goro::Cases{
//       goro::RecvCase{next_input(), [&](std::optional<int> v) { ... }},
//       goro::SendCase{next_output(), compute(), [&] { ++sent; }},
//       goro::DefaultCase{[&] { idle(); }}});
//
// The braced case types RecvCase{ch, fn}, SendCase{ch, value, fn} and
// DefaultCase{fn} (callbacks optional) evaluate the channel before the value,
// as Go's `case ch <- value:`; recv_case/send_case/default_case also work
// inside Cases{}, each then evaluated before the next, but a send_case's own
// channel and value arguments stay unordered. Either form evaluates all
// operands before select starts, and the callbacks are not operands: only
// the chosen one runs. Indices are positions in the argument or braced list.
//
// For a list of cases built at run time (fan-in over N channels), use
// goro::Selector:
//
//   goro::Selector sel;
//   for (std::size_t k = 0; k < chans.size(); ++k)
//     sel.add(goro::recv_case(chans[k], [&, k](std::optional<int> v) { ... }));
//   for (;;) sel.select();   // reusable; no allocation per select
//
// Guarantees (as Go):
//   * Exactly one case is performed per call; its callback runs after the
//     operation completed and after select released every channel lock.
//   * Fairness: among the cases ready when select looks, each is chosen with
//     equal probability (a random poll order per call).
//   * No deadlock between selects: channels are locked in address order; a
//     channel named by several cases is locked once.
//   * A parked select is woken by exactly one case (the waker claims it with
//     a compare-and-swap), and is unlinked from every other channel before
//     select returns.
//   * Cases on a nil Chan are never chosen; a select with only nil cases and
//     no default parks forever (Go's `select {}`).
//   * Memory ordering: as for the channel operation the chosen case performed
//     (see chan.h).
//
// Errors: goro::ChanClosed if the chosen case is a send on a closed channel
// (a send case on a closed channel counts as ready, as in Go). Exceptions
// from the callback propagate (the channel operation has completed).
//
// Cost: locks every channel once (twice more if select parks), no
// allocation; the case objects live on the caller's stack. Each select
// instantiates only the code that fills in its cases; the engine is out of
// line (about half the compile time of the earlier templates;
// bench/select_compile_time.sh).
// When every case is a buffered channel, a ready case is usually taken without
// any lock (the channels' lock-free fast path, tried in the random poll order).
// The case objects hold a plain pointer to the channel: pass them straight to
// select (any temporary channel lives until select returns).

#ifndef GORO_SYNC_SELECT_H_
#define GORO_SYNC_SELECT_H_

#include <algorithm>
#include <array>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "sync/chan.h"
#include "sync/internal/select_core.h"

namespace goro {

// NoOp: the callback of a case given none.
struct NoOp {
  template <typename... A>
  void operator()(A&&...) const noexcept {}
};

// RecvCase: receive from a channel; its callback gets the value
// (std::optional<T>: empty if the channel is closed and drained) or nothing.
// Build it with recv_case(ch, fn), or braced, RecvCase{ch, fn} / RecvCase{ch},
// where the channel is evaluated before the callback.
template <typename T, typename F = NoOp>
struct RecvCase {
  static_assert(std::is_invocable_v<F&, std::optional<T>> ||
                    std::is_invocable_v<F&>,
                "goro::recv_case: the callback must take std::optional<T> or "
                "nothing");

  RecvCase(const Chan<T>& ch, F f)
      : chan(ch.core_for_select()), fn(std::move(f)) {}
  explicit RecvCase(const Chan<T>& ch) : chan(ch.core_for_select()), fn() {}

  sync_internal::ChanCore* chan;
  F fn;
  sync_internal::Slot<T> slot;

  void prepare(sync_internal::SelectCase* c) {
    c->chan = chan;
    c->elem = &slot.value;
    c->is_send = false;
  }
  void fire(bool received) {
    std::optional<T> v;
    if (received) v = slot.take();
    if constexpr (std::is_invocable_v<F&, std::optional<T>>) {
      fn(std::move(v));
    } else {
      fn();
    }
  }
  static void fire_erased(void* self, bool received) {
    static_cast<RecvCase*>(self)->fire(received);
  }
};

// SendCase: send a value on a channel; its callback takes no argument. Build
// it with send_case(ch, value, fn), or braced, SendCase{ch, value, fn} /
// SendCase{ch, value}, where the channel is evaluated before the value (as
// in Go's `case ch <- value:`).
template <typename T, typename F = NoOp>
struct SendCase {
  static_assert(std::is_invocable_v<F&>,
                "goro::send_case: the callback must take no arguments");

  template <typename U>
  SendCase(const Chan<T>& ch, U&& v, F f)
      : chan(ch.core_for_select()),
        value(std::forward<U>(v)),
        fn(std::move(f)) {}
  template <typename U>
  SendCase(const Chan<T>& ch, U&& v)
      : chan(ch.core_for_select()), value(std::forward<U>(v)), fn() {}

  sync_internal::ChanCore* chan;
  T value;
  F fn;

  void prepare(sync_internal::SelectCase* c) {
    c->chan = chan;
    c->elem = &value;
    c->is_send = true;
  }
  void fire(bool) { fn(); }
  static void fire_erased(void* self, bool) {
    static_cast<SendCase*>(self)->fn();
  }
};

// DefaultCase: makes select non-blocking; its callback runs if no case is
// ready. default_case(fn), or braced, DefaultCase{fn} / DefaultCase{}.
template <typename F = NoOp>
struct DefaultCase {
  static_assert(std::is_invocable_v<F&>,
                "goro::default_case: the callback must take no arguments");
  DefaultCase() = default;
  explicit DefaultCase(F f) : fn(std::move(f)) {}
  F fn;
  static void fire_erased(void* self, bool) {
    static_cast<DefaultCase*>(self)->fn();
  }
};

// The deduction guides that make the braced forms work (the channel names T,
// the callback F; a callable stored by value).
template <typename T, typename F>
RecvCase(const Chan<T>&, F) -> RecvCase<T, F>;
template <typename T>
RecvCase(const Chan<T>&) -> RecvCase<T>;
template <typename T, typename U, typename F>
SendCase(const Chan<T>&, U&&, F) -> SendCase<T, F>;
template <typename T, typename U>
SendCase(const Chan<T>&, U&&) -> SendCase<T>;
template <typename F>
DefaultCase(F) -> DefaultCase<F>;

// recv_case: receive from `ch`; fn(std::optional<T>) (or fn()) runs if taken.
template <typename T, typename F>
RecvCase<T, std::decay_t<F>> recv_case(const Chan<T>& ch, F&& fn) {
  return RecvCase<T, std::decay_t<F>>(ch, std::forward<F>(fn));
}
template <typename T>
RecvCase<T> recv_case(const Chan<T>& ch) {
  return RecvCase<T>(ch);
}

// send_case: send `value` on `ch`; fn() runs if taken. If another case is
// taken, `value` is not sent (and is destroyed with the case).
template <typename T, typename U, typename F>
SendCase<T, std::decay_t<F>> send_case(const Chan<T>& ch, U&& value, F&& fn) {
  return SendCase<T, std::decay_t<F>>(ch, std::forward<U>(value),
                                      std::forward<F>(fn));
}
template <typename T, typename U>
SendCase<T> send_case(const Chan<T>& ch, U&& value) {
  return SendCase<T>(ch, std::forward<U>(value));
}

// default_case: makes select non-blocking; fn() runs if nothing is ready.
template <typename F>
DefaultCase<std::decay_t<F>> default_case(F&& fn) {
  return DefaultCase<std::decay_t<F>>(std::forward<F>(fn));
}
inline DefaultCase<> default_case() { return DefaultCase<>(); }

// Cases: the cases of one select, in a braced list, for the ordered form
//   goro::select(goro::Cases{case0, case1, ...});
// A braced list is evaluated left to right, so each case -- channel and
// value operands included -- is built before the next one starts, and all
// of them before select looks at any channel: Go's evaluation order. Holds
// references to the cases: build it inside the select call (as with the
// cases themselves, anything temporary lives until select returns).
template <typename... Cs>
class Cases {
 public:
  // NOLINTNEXTLINE(google-explicit-constructor): used braced, by CTAD.
  Cases(Cs&&... cs) : refs_(cs...) {}
  Cases(const Cases&) = delete;
  Cases& operator=(const Cases&) = delete;

 private:
  template <typename... Ds>
  friend std::size_t select(Cases<Ds...>&& cases);
  std::tuple<std::remove_reference_t<Cs>&...> refs_;
};
template <typename... Cs>
Cases(Cs&&...) -> Cases<Cs...>;

namespace sync_internal {

template <typename C>
struct IsDefault : std::false_type {};
template <typename F>
struct IsDefault<DefaultCase<F>> : std::true_type {};

template <typename... Cs>
constexpr int default_position() {
  constexpr bool is_def[] = {IsDefault<std::remove_cv_t<Cs>>::value..., false};
  for (std::size_t i = 0; i < sizeof...(Cs); ++i) {
    if (is_def[i]) return static_cast<int>(i);
  }
  return -1;
}

// bind_case fills in the next case slot (or the default).
template <typename T, typename F>
void bind_case(RecvCase<T, F>& c, SelectCase*& sc, CaseRef*& ref, CaseRef&) {
  c.prepare(sc++);
  *ref++ = {&c, &RecvCase<T, F>::fire_erased};
}
template <typename T, typename F>
void bind_case(SendCase<T, F>& c, SelectCase*& sc, CaseRef*& ref, CaseRef&) {
  c.prepare(sc++);
  *ref++ = {&c, &SendCase<T, F>::fire_erased};
}
template <typename F>
void bind_case(DefaultCase<F>& c, SelectCase*&, CaseRef*&, CaseRef& def) {
  def = {&c, &DefaultCase<F>::fire_erased};
}

template <typename... Cs>
std::size_t select_cases(Cs&... cases) {
  constexpr int kDefaults =
      (0 + ... + (IsDefault<std::remove_cv_t<Cs>>::value ? 1 : 0));
  static_assert(kDefaults <= 1, "goro::select: at most one default_case");
  if constexpr (sizeof...(Cs) == 0) {
    // Go's `select {}`: parks forever.
    return select_dispatch(nullptr, nullptr, nullptr, nullptr, 0, -1, {});
  } else {
    constexpr int kN = static_cast<int>(sizeof...(Cs)) - kDefaults;
    SelectFrame<kN == 0 ? 1 : kN> f;
    SelectCase* sc = f.sc;
    CaseRef* ref = f.refs;
    CaseRef def;
    (bind_case(cases, sc, ref, def), ...);
    return select_dispatch(f.sc, f.order, f.waiters, f.refs, kN,
                           default_position<Cs...>(), def);
  }
}

}  // namespace sync_internal

// select: see the top of this file. Returns the index of the case taken.
// The cases are function arguments: C++ leaves the order in which they (and
// their channel and value operands) are evaluated unspecified, and GCC
// evaluates them right to left. Use the Cases form below when the operands
// have side effects whose order matters.
template <typename... Cs>
std::size_t select(Cs&&... cases) {
  return sync_internal::select_cases(cases...);
}

// select(Cases{...}): the ordered form. The same select, with the cases
// built left to right (see Cases); indices are positions in the braced list.
template <typename... Cs>
std::size_t select(Cases<Cs...>&& cases) {
  return std::apply(
      [](auto&... cs) { return sync_internal::select_cases(cs...); },
      cases.refs_);
}

// Selector: a select over a case list built at run time. Reusable: each
// select() performs one select over the cases added so far (indices in the
// order of add()). A send case sends a copy of its value each time (so T must
// be copy constructible for send cases). Not thread-safe: one fiber uses a
// Selector at a time. The Selector holds references to its channels.
//
// Size and cost: any number of cases up to INT_MAX (memory runs out first:
// about 200 bytes per case); add() throws std::length_error beyond that.
// add() is amortised O(1) (one allocation for the case, vectors that grow
// geometrically); select() is O(n log n) in the number of cases (it visits
// each, and sorts them into the lock order) and allocates only when cases
// were added since the previous select() (the per-case waiters, whose array
// also grows geometrically).
class Selector {
 public:
  Selector() = default;
  Selector(const Selector&) = delete;
  Selector& operator=(const Selector&) = delete;

  template <typename T, typename F>
  std::size_t add(RecvCase<T, F> c) {
    auto p = std::make_unique<Recv<T, F>>(std::move(c));
    return push(std::move(p));
  }
  template <typename T, typename F>
  std::size_t add(SendCase<T, F> c) {
    static_assert(std::is_copy_constructible_v<T>,
                  "goro::Selector: send cases need a copyable T");
    auto p = std::make_unique<Send<T, F>>(std::move(c));
    return push(std::move(p));
  }
  template <typename F>
  std::size_t add(DefaultCase<F> c) {
    if (default_fn_) {
      throw std::logic_error("goro::Selector: more than one default_case");
    }
    default_fn_ = std::move(c.fn);
    default_index_ = total_++;
    return default_index_;
  }

  // select performs one select; returns the index of the case taken.
  std::size_t select() {
    const int n = static_cast<int>(cases_.size());
    if (waiters_size_ < cases_.size()) {
      // Waiters hold atomics (no move): reallocate, doubling, between
      // selects, when no waiter is in use.
      waiters_size_ = std::max(cases_.size(), 2 * waiters_size_);
      waiters_ = std::make_unique<sync_internal::Waiter[]>(waiters_size_);
    }
    for (int i = 0; i < n; ++i) {
      cases_[i]->prepare(&sc_[i]);
      if (!cases_[i]->enabled) sc_[i].chan = nullptr;
    }
    const sync_internal::SelectResult r = sync_internal::SelectCore::run(
        sc_.data(), order_.data(), waiters_.get(), n, !default_fn_);
    if (r.index < 0) {
      default_fn_();
      return default_index_;
    }
    cases_[r.index]->fire(r.received);
    return index_[r.index];
  }

  std::size_t size() const { return total_; }

  // enable turns the case added as `index` on or off; an off case is never
  // chosen (like a case on a nil channel). Cases start on.
  void enable(std::size_t index, bool on) {
    const int k = core_index(index);
    cases_[k]->enabled = on;
  }

  // set_send_value replaces the value the send case `index` sends from the
  // next select() on. Throws std::logic_error if `index` is not a send case
  // of a Chan<T>.
  template <typename T>
  void set_send_value(std::size_t index, T v) {
    auto* c = dynamic_cast<SendBase<T>*>(cases_[core_index(index)].get());
    if (c == nullptr) {
      throw std::logic_error("goro::Selector: not a send case of this type");
    }
    c->value = std::move(v);
  }

 private:
  struct Case {
    virtual ~Case() = default;
    virtual void prepare(sync_internal::SelectCase* c) = 0;
    virtual void fire(bool received) = 0;
    bool enabled = true;
  };
  template <typename T>
  struct SendBase : Case {
    explicit SendBase(T v) : value(std::move(v)) {}
    T value;
  };
  template <typename T, typename F>
  struct Recv final : Case {
    explicit Recv(RecvCase<T, F> c) : ch(c.chan), rc(std::move(c)) {
      if (ch != nullptr) ch->ref();
    }
    ~Recv() override {
      if (ch != nullptr) ch->unref();
    }
    void prepare(sync_internal::SelectCase* c) override { rc.prepare(c); }
    void fire(bool received) override { rc.fire(received); }
    sync_internal::ChanCore* ch;
    RecvCase<T, F> rc;
  };
  template <typename T, typename F>
  struct Send final : SendBase<T> {
    explicit Send(SendCase<T, F> c)
        : SendBase<T>(std::move(c.value)), ch(c.chan), fn(std::move(c.fn)) {
      if (ch != nullptr) ch->ref();
    }
    ~Send() override {
      if (ch != nullptr) ch->unref();
      if (armed) tmp.value.~T();
    }
    void prepare(sync_internal::SelectCase* c) override {
      if (armed) tmp.value.~T();
      ::new (&tmp.value) T(this->value);
      armed = true;
      c->chan = ch;
      c->elem = &tmp.value;
      c->is_send = true;
    }
    void fire(bool) override { std::invoke(fn); }
    sync_internal::ChanCore* ch;
    F fn;
    sync_internal::Slot<T> tmp;
    bool armed = false;
  };

  int core_index(std::size_t index) const {
    auto it = std::lower_bound(index_.begin(), index_.end(), index);
    if (it != index_.end() && *it == index) {
      return static_cast<int>(it - index_.begin());
    }
    throw std::out_of_range("goro::Selector: no such case");
  }

  // Amortised O(1): every vector grows geometrically; the waiters are
  // (re)allocated by select().
  std::size_t push(std::unique_ptr<Case> c) {
    if (cases_.size() >= static_cast<std::size_t>(INT_MAX)) {
      throw std::length_error("goro::Selector: more than INT_MAX cases");
    }
    cases_.push_back(std::move(c));
    index_.push_back(total_++);
    sc_.resize(cases_.size());
    order_.resize(2 * cases_.size());
    return index_.back();
  }

  std::vector<std::unique_ptr<Case>> cases_;
  std::vector<std::size_t> index_;  // core index -> add() index
  std::vector<sync_internal::SelectCase> sc_;
  std::vector<sync_internal::CaseIndex> order_;
  std::unique_ptr<sync_internal::Waiter[]> waiters_;  // waiters_size_ of them
  std::size_t waiters_size_ = 0;
  std::function<void()> default_fn_;
  std::size_t default_index_ = 0;
  std::size_t total_ = 0;
};

inline std::size_t select(Selector& s) { return s.select(); }

}  // namespace goro

#endif  // GORO_SYNC_SELECT_H_
