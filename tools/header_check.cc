// Copyright goro authors.
//
// Every public template of goro.h, instantiated once, so that
// tools/header_warnings_check.sh can compile the public headers with
// -Wall -Wextra -Wpedantic -Werror under GCC and Clang (issue 12: a user's
// warning flags must not trip over goro's headers). Compiled, never run:
// the functions below only have to exist. When a public template is added,
// instantiate it here.

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "goro.h"

// Every member of Chan<T>, for a copyable and a non-trivial T.
template class goro::Chan<int>;
template class goro::Chan<std::string>;
template struct goro::RecvAttempt<std::string>;

namespace header_check {

using namespace std::chrono_literals;

struct Moveonly {
  std::unique_ptr<int> p;
};

int all_of_it() {
  // run: both overloads, void and int main.
  goro::run([] {});
  return goro::run(goro::Options{}, [] {
    // go, both overloads; blocking with a value and void.
    goro::go([] {});
    goro::SpawnOptions so;
    goro::go(so, [] {});
    const int b = goro::blocking([] { return 1; });
    goro::blocking([] {});
    goro::sleep_for(1ms);
    goro::sleep_until(std::chrono::steady_clock::now());
    goro::yield();
    const goro::Stats st = goro::stats();
    { goro::NoPreempt np; }

    // Chan of a move-only type: the operations that do not copy.
    const goro::Chan<Moveonly> m(1);
    m.send(Moveonly{});
    m.try_send(Moveonly{});
    std::optional<Moveonly> mv = m.recv();
    mv = m.try_recv();
    goro::RecvAttempt<Moveonly> ma = m.try_recv_status();
    for (Moveonly& x : m) static_cast<void>(x);

    // select: every case kind, both forms, with and without callbacks,
    // default first, middle and last, only a default.
    goro::Chan<int> a(1);
    goro::Chan<std::string> s(1);
    int sink = 0;
    goro::select(goro::default_case());
    goro::select(goro::default_case([&] { ++sink; }));
    goro::select(goro::recv_case(a), goro::default_case());
    goro::select(goro::default_case(),
                 goro::recv_case(
                     a, [&](std::optional<int> v) { sink += v.value_or(0); }),
                 goro::send_case(s, "x"),
                 goro::send_case(a, 1, [&] { ++sink; }),
                 goro::recv_case(s, [&] { ++sink; }));
    goro::select(goro::recv_case(a, [&](std::optional<int>) { ++sink; }),
                 goro::recv_case(m, [](std::optional<Moveonly>) {}),
                 goro::send_case(m, Moveonly{}));
    goro::select(goro::Cases{goro::RecvCase{a}, goro::SendCase{s, "y"},
                             goro::DefaultCase{}});
    goro::select(goro::Cases{
        goro::RecvCase{a, [&](std::optional<int> v) { sink += v.value_or(0); }},
        goro::DefaultCase{[&] { ++sink; }},
        goro::SendCase{a, 2, [&] { ++sink; }}, goro::recv_case(s),
        goro::send_case(m, Moveonly{})});
    goro::Selector sel;
    sel.add(goro::recv_case(a, [&](std::optional<int>) { ++sink; }));
    sel.add(goro::send_case(s, "z", [&] { ++sink; }));
    sel.add(goro::default_case([&] { ++sink; }));
    sel.set_send_value(1, std::string("w"));
    sel.enable(0, false);
    goro::select(sel);
    if (sink < 0) goro::select();  // Go's `select {}`: never reached

    // Timers, contexts, the other primitives' templates.
    goro::select(goro::recv_case(goro::after(1ms)));
    goro::Timer t(1ms);
    t.reset(2ms);
    goro::Ticker tk(1ms);
    tk.reset(std::chrono::microseconds(500));
    auto [ctx, cancel] = goro::with_timeout(goro::Context::background(), 1s);
    cancel();
    goro::Once once;
    once.call([&] { ++sink; });
    goro::Mutex mu;
    goro::Cond cv;
    {
      std::unique_lock<goro::Mutex> l(mu);
      cv.wait(l, [] { return true; });
    }
    return b + sink + static_cast<int>(st.procs) +
           static_cast<int>(ma.received()) + (ctx.err().ok() ? 0 : 1);
  });
}

}  // namespace header_check
