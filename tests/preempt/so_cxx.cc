// User code in a shared object that has a C++ runtime of its own (for
// code_map_test): its function-local static makes it call
// __cxa_guard_acquire, which its link takes from libstdc++ (libstdc++.a
// linked into it in goro's default link mode, libstdc++.so under the
// sanitizer configs), not from the program.

#include <cstddef>
#include <string>

extern "C" int so_cxx_static_init(int x) {
  static const std::string s(static_cast<std::size_t>(x), 'x');
  return static_cast<int>(s.size());
}
