// Copyright goro authors.
//
// The code map (see code_map.h).
//
// Invariants:
//   CM1  g_map points to one of two static Maps and is replaced only by
//        code_map_refresh, which runs when no preemption walk can run (a
//        runtime starting; its sysmon before its first round, when it has
//        sent no signal). Readers (the SIGURG handler, the trampoline's
//        walk, an overflow report racing with sysmon's refresh) therefore
//        never see a half-built map, and need no lock: the map being built
//        is never the published one, and the one replaced is left intact
//        until the refresh after next, a runtime later.
//   CM2  A segment with `registered` set has its dyn_info on libunwind's
//        dynamic list while that segment is in g_map. Entries of a replaced
//        map are cancelled, never freed (static storage), so a libunwind
//        reader that raced with the cancel still follows valid `next`
//        pointers.
//   CM3  A map built before libunwind was loaded registers nothing
//        (unwinder.h: it is loaded on sysmon's thread, after the map of the
//        runtime's start). The refresh sysmon makes once it has loaded it
//        rebuilds the map -- which then also holds libunwind's and
//        liblzma's own segments -- and registers it, before its first round;
//        the next refresh is cheap again. Readers only ever see a map whose
//        `registered` flags are final.

#include "preempt/internal/code_map.h"

#include <link.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>

#include "preempt/internal/unwinder.h"
#include "runtime/internal/scheduler.h"

// The statically linked C++ and unwinder runtimes' code, gathered by
// denied_text.lds (which every goro link uses). Weak: without the script
// both are null.
extern "C" const char __start_goro_denied_text[]
    __attribute__((weak, visibility("hidden")));
extern "C" const char __stop_goro_denied_text[]
    __attribute__((weak, visibility("hidden")));

namespace goro::preempt_internal {

struct CodeSegment {
  std::uintptr_t lo = 0, hi = 0;  // [lo, hi): an executable PT_LOAD segment
  CodeKind kind = CodeKind::kUnknown;
  bool has_table = false;   // dyn_info describes a usable binary-search table
  bool registered = false;  // dyn_info is on libunwind's list (CM2)
  unw_dyn_info_t dyn_info{};
  // The object's load bias (dl_iterate_phdr's dlpi_addr) and file, copied
  // (a fault report reads them after the object may have been unloaded):
  // pc - base is the address in the file that addr2line takes.
  std::uintptr_t base = 0;
  char object[kCodeObjectNameMax] = {};
};

namespace {

constexpr int kMaxSegments = 512;

struct Map {
  int n = 0;
  int registered = 0;
  bool with_unwinder = false;             // built with libunwind loaded (CM3)
  unsigned long long adds = 0, subs = 0;  // dl_iterate_phdr's counters
  CodeSegment seg[kMaxSegments];          // sorted by lo
};

Map g_maps[2];
std::atomic<Map*> g_map{nullptr};  // CM1

// Objects whose code never runs a fiber switch: the C library (and the rest
// of glibc), the C++ runtime, the unwinders, the dynamic loader, the vDSO and
// the sanitizer runtimes. Matched on the file name's start.
constexpr const char* kDenied[] = {
    "libc.so",      "libm.so",     "libmvec.so",   "libpthread.so",
    "libdl.so",     "librt.so",    "libutil.so",   "libanl.so",
    "libresolv.so", "libnss_",     "libnsl.so",    "libcrypt.so",
    "ld-linux",     "ld64.so",     "linux-vdso",   "linux-gate",
    "libstdc++.so", "libgcc_s.so", "libatomic.so", "libunwind",
    "libasan.so",   "libtsan.so",  "libubsan.so",  "liblsan.so",
    "libhwasan.so", "libmsan.so",
};

bool denied_name(const char* path) {
  if (path == nullptr || path[0] == '\0') return false;  // the program
  const char* base = strrchr(path, '/');
  base = base != nullptr ? base + 1 : path;
  for (const char* d : kDenied) {
    if (strncmp(base, d, strlen(d)) == 0) return true;
  }
  return false;
}

std::size_t encoded_size(unsigned char enc) {
  switch (enc & 0x0f) {
    case 0x00:  // absptr
    case 0x04:  // udata8
    case 0x0c:  // sdata8
      return 8;
    case 0x03:  // udata4
    case 0x0b:  // sdata4
      return 4;
    case 0x02:  // udata2
    case 0x0a:  // sdata2
      return 2;
    default:
      return 0;
  }
}

// Fills dyn_info from the object's .eh_frame_hdr if it has the
// binary-search table libunwind can search (datarel|sdata4, the only
// encoding GNU ld and gold write).
bool describe_table(const unsigned char* hdr, CodeSegment* s) {
  if (hdr == nullptr || hdr[0] != 1) return false;  // version
  const unsigned char ptr_enc = hdr[1], count_enc = hdr[2], table_enc = hdr[3];
  if (table_enc != 0x3b || ptr_enc == 0xff || count_enc == 0xff) return false;
  const std::size_t ptr_size = encoded_size(ptr_enc);
  const std::size_t count_size = encoded_size(count_enc);
  if (ptr_size == 0 || count_size != 4 || (count_enc & 0x70) != 0) {
    return false;
  }
  std::uint32_t count;
  memcpy(&count, hdr + 4 + ptr_size, 4);
  unw_dyn_info_t& di = s->dyn_info;
  memset(&di, 0, sizeof(di));
  di.start_ip = s->lo;
  di.end_ip = s->hi;
  di.format = UNW_INFO_FORMAT_REMOTE_TABLE;
  di.u.rti.segbase = reinterpret_cast<unw_word_t>(hdr);
  di.u.rti.table_data =
      reinterpret_cast<unw_word_t>(hdr + 4 + ptr_size + count_size);
  // In unw_word_t units; each entry is two int32s.
  di.u.rti.table_len = count * 8 / sizeof(unw_word_t);
  return count > 0;
}

// True if the shared object calls __cxa_guard_acquire through a dynamic
// relocation (PLT or GOT). Its function-local statics then take a C++
// runtime's guard directly -- libstdc++.so's, or a copy of libstdc++ linked
// into the object -- and os_locks.cc cannot count them: the program's
// counting wrappers exist under --wrap's name only, inside the program
// (and with libstdc++ static, the program exports no libstdc++ at all). A
// fiber preempted inside such an initialiser would hold a futex that
// another fiber of its thread then waits on in the kernel, while the holder
// is pinned to that thread. So such an object is denied: its fibers are
// switched at the return into allowed code, as in libc. An object that
// calls its own copy without a relocation (a hidden, statically linked
// libstdc++) is not seen (docs/preemption.md, "Held OS state", Limits).
bool calls_cxa_guard(const dl_phdr_info* info) {
  const ElfW(Dyn)* dyn = nullptr;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    if (info->dlpi_phdr[i].p_type == PT_DYNAMIC) {
      dyn = reinterpret_cast<const ElfW(Dyn)*>(info->dlpi_addr +
                                               info->dlpi_phdr[i].p_vaddr);
    }
  }
  if (dyn == nullptr) return false;
  // glibc relocates these d_ptr values in place (x86-64); an address below
  // the load bias is still a file address.
  auto ptr = [&](ElfW(Addr) p) {
    return p < info->dlpi_addr ? p + info->dlpi_addr : p;
  };
  const ElfW(Sym)* symtab = nullptr;
  const char* strtab = nullptr;
  std::uintptr_t rel[2] = {0, 0};
  std::size_t rel_size[2] = {0, 0};
  for (; dyn->d_tag != DT_NULL; ++dyn) {
    switch (dyn->d_tag) {
      case DT_SYMTAB:
        symtab = reinterpret_cast<const ElfW(Sym)*>(ptr(dyn->d_un.d_ptr));
        break;
      case DT_STRTAB:
        strtab = reinterpret_cast<const char*>(ptr(dyn->d_un.d_ptr));
        break;
      case DT_JMPREL:
        rel[0] = ptr(dyn->d_un.d_ptr);
        break;
      case DT_PLTRELSZ:
        rel_size[0] = dyn->d_un.d_val;
        break;
      case DT_RELA:
        rel[1] = ptr(dyn->d_un.d_ptr);
        break;
      case DT_RELASZ:
        rel_size[1] = dyn->d_un.d_val;
        break;
      default:
        break;
    }
  }
  if (symtab == nullptr || strtab == nullptr) return false;
  for (int t = 0; t < 2; ++t) {
    const auto* r = reinterpret_cast<const ElfW(Rela)*>(rel[t]);
    const std::size_t n = rel[t] != 0 ? rel_size[t] / sizeof(ElfW(Rela)) : 0;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t sym = ELF64_R_SYM(r[i].r_info);
      if (sym != 0 &&
          strcmp(strtab + symtab[sym].st_name, "__cxa_guard_acquire") == 0) {
        return true;
      }
    }
  }
  return false;
}

int collect(dl_phdr_info* info, std::size_t size, void* arg) {
  Map* m = static_cast<Map*>(arg);
  const unsigned char* hdr = nullptr;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    if (info->dlpi_phdr[i].p_type == PT_GNU_EH_FRAME) {
      hdr = reinterpret_cast<const unsigned char*>(info->dlpi_addr +
                                                   info->dlpi_phdr[i].p_vaddr);
    }
  }
  const bool program = info->dlpi_name == nullptr || info->dlpi_name[0] == 0;
  const CodeKind kind =
      denied_name(info->dlpi_name) || (!program && calls_cxa_guard(info))
          ? CodeKind::kDenied
          : CodeKind::kAllowed;
  // The program itself has no name here (left empty: code_segment_object
  // reads /proc/self/exe's when a report asks, not at every start).
  const char* object = info->dlpi_name != nullptr ? info->dlpi_name : "";
  // The first object (the counters are the same in each).
  if (m->adds == ~0ULL &&
      size >= offsetof(dl_phdr_info, dlpi_subs) + sizeof(info->dlpi_subs)) {
    m->adds = info->dlpi_adds;
    m->subs = info->dlpi_subs;
  }
  for (int i = 0; i < info->dlpi_phnum && m->n < kMaxSegments; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD || (ph.p_flags & PF_X) == 0) continue;
    CodeSegment& s = m->seg[m->n++];
    s.lo = info->dlpi_addr + ph.p_vaddr;
    s.hi = s.lo + ph.p_memsz;
    s.kind = kind;
    s.has_table = describe_table(hdr, &s);
    s.base = info->dlpi_addr;
    strncpy(s.object, object, sizeof(s.object) - 1);
    s.object[sizeof(s.object) - 1] = '\0';
  }
  return 0;
}

// Marks [lo, hi) of the segments of `m` kind `kind`, splitting the segment
// that holds it (the range is inside one executable PT_LOAD segment: one
// output section). Keeps m->seg sorted. False if there is no such segment or
// no room.
bool mark_range(Map* m, std::uintptr_t lo, std::uintptr_t hi, CodeKind kind) {
  for (int i = 0; i < m->n; ++i) {
    CodeSegment& s = m->seg[i];
    if (lo < s.lo || hi > s.hi) continue;
    const int pieces = 1 + (s.lo < lo) + (hi < s.hi);
    if (m->n + pieces - 1 > kMaxSegments) return false;
    const CodeSegment whole = s;
    std::copy_backward(m->seg + i + 1, m->seg + m->n,
                       m->seg + m->n + pieces - 1);
    m->n += pieces - 1;
    CodeSegment* out = &m->seg[i];
    auto piece = [&](std::uintptr_t a, std::uintptr_t b, CodeKind k) {
      *out = whole;
      out->lo = a;
      out->hi = b;
      out->kind = k;
      // The same .eh_frame_hdr table, for this piece's range.
      if (whole.has_table) {
        out->dyn_info.start_ip = a;
        out->dyn_info.end_ip = b;
      }
      ++out;
    };
    if (whole.lo < lo) piece(whole.lo, lo, whole.kind);
    piece(lo, hi, kind);
    if (hi < whole.hi) piece(hi, whole.hi, whole.kind);
    return true;
  }
  return false;
}

// Denies every segment of the object holding `pc` (goro's own object).
void deny_object_of(Map* m, std::uintptr_t pc) {
  std::uintptr_t base = 0;
  bool found = false;
  for (int i = 0; i < m->n; ++i) {
    if (m->seg[i].lo <= pc && pc < m->seg[i].hi) {
      base = m->seg[i].base;
      found = true;
    }
  }
  for (int i = 0; found && i < m->n; ++i) {
    if (m->seg[i].base == base) m->seg[i].kind = CodeKind::kDenied;
  }
}

// The statically linked runtimes' code (denied_text.lds) is denied. Where the
// program was linked without the script, their code -- libstdc++'s with
// -static-libstdc++, libunwind's, libgcc's -- sits unmarked among the
// program's: then the whole object holding goro is denied (no asynchronous
// preemption in it; cooperative switches are unaffected), with one warning.
void deny_static_runtimes(Map* m) {
  const auto lo = reinterpret_cast<std::uintptr_t>(__start_goro_denied_text);
  const auto hi = reinterpret_cast<std::uintptr_t>(__stop_goro_denied_text);
  if (lo != 0 && hi > lo && mark_range(m, lo, hi, CodeKind::kDenied)) return;
  if (lo != 0 && hi == lo) return;  // nothing gathered (nothing to deny)
  deny_object_of(m, reinterpret_cast<std::uintptr_t>(&deny_static_runtimes));
  static bool warned = false;
  if (!warned) {
    warned = true;
    static const char kMsg[] =
        "goro: linked without goro's linker flags (-Wl,-T,denied_text.lds):"
        " asynchronous preemption is off in this program"
        " (docs/preemption.md, \"The code map\")\n";
    (void)!write(2, kMsg, sizeof(kMsg) - 1);
  }
}

int read_counters(dl_phdr_info* info, std::size_t size, void* arg) {
  auto* out = static_cast<unsigned long long*>(arg);
  if (size >= offsetof(dl_phdr_info, dlpi_subs) + sizeof(info->dlpi_subs)) {
    out[0] = info->dlpi_adds;
    out[1] = info->dlpi_subs;
  }
  return 1;  // the counters are the same in every entry: stop
}

}  // namespace

void code_map_refresh() {
  unsigned long long counters[2] = {~0ULL, ~0ULL};
  Map* old = g_map.load(std::memory_order_acquire);
  const Unwinder* u = unwinder();
  // At the first start there is nothing to compare: collect reads them.
  if (old != nullptr) dl_iterate_phdr(read_counters, counters);
  if (old != nullptr && counters[0] != ~0ULL && old->adds == counters[0] &&
      old->subs == counters[1] && old->with_unwinder == (u != nullptr)) {
    return;  // no object loaded or unloaded since, nothing to register (CM3)
  }
  Map* m = old == &g_maps[0] ? &g_maps[1] : &g_maps[0];
  m->n = 0;
  m->registered = 0;
  m->with_unwinder = u != nullptr;
  m->adds = counters[0];  // ~0: collect reads them
  m->subs = counters[1];
  dl_iterate_phdr(collect, m);
  std::sort(
      m->seg, m->seg + m->n,
      [](const CodeSegment& a, const CodeSegment& b) { return a.lo < b.lo; });
  deny_static_runtimes(m);
  for (int i = 0; i < m->n; ++i) {
    CodeSegment& s = m->seg[i];
    s.registered = u != nullptr && s.has_table;
    if (s.registered) {
      u->dyn_register(&s.dyn_info);
      ++m->registered;
    }
  }
  g_map.store(m, std::memory_order_release);
  if (old != nullptr && old->with_unwinder) {  // CM2
    for (int i = 0; i < old->n; ++i) {
      if (old->seg[i].registered) u->dyn_cancel(&old->seg[i].dyn_info);
    }
  }
}

const CodeSegment* code_segment(std::uintptr_t pc) {
  const Map* m = g_map.load(std::memory_order_acquire);
  if (m == nullptr) return nullptr;
  // The last segment starting at or below pc.
  int lo = 0, hi = m->n;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (m->seg[mid].lo <= pc) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (lo == 0) return nullptr;
  const CodeSegment& s = m->seg[lo - 1];
  return pc < s.hi ? &s : nullptr;
}

CodeKind code_kind(std::uintptr_t pc, const CodeSegment** seg) {
  if (seg != nullptr) *seg = nullptr;
  if (runtime_internal::pc_in_goro_text(pc)) return CodeKind::kGoro;
  const CodeSegment* s = code_segment(pc);
  if (s == nullptr) return CodeKind::kUnknown;
  if (seg != nullptr) *seg = s;
  return s->kind;
}

const char* code_segment_object(const CodeSegment* seg) {
  if (seg->object[0] != '\0') return seg->object;
  // The program: its file, read once (readlink is async-signal-safe; two
  // first readers write the same bytes).
  static char exe[kCodeObjectNameMax];
  static std::atomic<bool> have{false};  // release: exe is written
  if (!have.load(std::memory_order_acquire)) {
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    exe[n > 0 ? n : 0] = '\0';
    have.store(true, std::memory_order_release);
  }
  return exe;
}

std::uintptr_t code_segment_base(const CodeSegment* seg) { return seg->base; }

bool code_has_unwind_info(const CodeSegment* seg, std::uintptr_t ip) {
  // Registered implies loaded (CM3): the table pointer is non-null then.
  if (seg == nullptr || !seg->registered) return false;
  const Unwinder* u = unwinder();
  unw_proc_info_t pi;
  memset(&pi, 0, sizeof(pi));
  // need_unwind_info = 0: locates the FDE and checks its range without
  // allocating the parsed CIE (which would take libunwind's pool lock).
  return u->dwarf_search_unwind_table(
             u->local_addr_space, ip,
             const_cast<unw_dyn_info_t*>(&seg->dyn_info), &pi, 0, nullptr) == 0;
}

int code_map_segments() {
  const Map* m = g_map.load(std::memory_order_acquire);
  return m != nullptr ? m->n : 0;
}

int code_map_registered() {
  const Map* m = g_map.load(std::memory_order_acquire);
  return m != nullptr ? m->registered : 0;
}

}  // namespace goro::preempt_internal
