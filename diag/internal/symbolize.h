// Copyright goro authors.
//
// Program counters to frames: demangled function names with file:line,
// inlined calls expanded, from the binary's DWARF debug info (the default
// build keeps -g). elfutils' libdw is loaded with dlopen the first time a
// dump is symbolized, so programs that never dump never load it; without it
// (or without debug info) frames fall back to the ELF symbol, then to the
// raw address.

#ifndef GORO_DIAG_INTERNAL_SYMBOLIZE_H_
#define GORO_DIAG_INTERNAL_SYMBOLIZE_H_

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace goro::diag_internal {

struct Frame {
  std::string function;  // demangled, without its parameter list
  std::string file;      // as recorded in the debug info; empty if unknown
  int line = 0;
  std::uint64_t offset = 0;  // pc - the enclosing symbol's start
  std::uint64_t pc = 0;
};

// One per process (dump.cc keeps it): the debug info is read once.
// Symbolizes pcs (return addresses, except where is_call_site is false:
// the interrupted pc of a preempted frame, and a thread's current pc) into
// frames, outermost last; an inlined call adds frames. Not thread-safe:
// callers serialise (dump.cc holds its lock). Allocates; not for signal
// handlers.
class Symbolizer {
 public:
  Symbolizer();
  ~Symbolizer();
  Symbolizer(const Symbolizer&) = delete;
  Symbolizer& operator=(const Symbolizer&) = delete;

  std::vector<Frame> symbolize(std::uint64_t pc, bool is_return_address);

  // Picks up shared objects loaded since (cheap: rereads /proc/self/maps;
  // the debug info already read is kept, and so are cached frames).
  void refresh();

 private:
  std::vector<Frame> lookup(std::uint64_t pc, bool is_return_address);

  void* dwfl_ = nullptr;
  // pc * 2 + is_return_address -> frames: fibers parked at the same place
  // share their lookups.
  std::unordered_map<std::uint64_t, std::vector<Frame>> cache_;
};

// Strips the parameter list (and trailing cv/ref qualifiers) and a leading
// return type from a demangled name: "void ns::f<int>(int, char) const" ->
// "ns::f<int>".
std::string strip_parameters(const std::string& demangled);

// Demangles a C++ symbol; returns it unchanged if it is not one.
std::string demangle(const char* mangled);

}  // namespace goro::diag_internal

#endif  // GORO_DIAG_INTERNAL_SYMBOLIZE_H_
