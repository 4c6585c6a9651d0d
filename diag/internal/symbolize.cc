// Copyright goro authors.
//
// The symbolizer: libdw (elfutils) through dlopen. Debian 12 ships libdw1
// (0.188) but goro does not need its headers: the few declarations used are
// below, with the layouts of libdw's public structs (Dwarf_Die,
// Dwarf_Attribute, Dwfl_Callbacks), which are part of its stable ABI.

#include "diag/internal/symbolize.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace goro::diag_internal {
namespace {

struct Dwfl;
struct Dwfl_Module;
struct Dwfl_Line;
struct Dwarf_Files;
using Dwarf_Addr = std::uint64_t;
using Dwarf_Word = std::uint64_t;
struct Dwarf_Die {
  void* addr;
  void* cu;
  void* abbrev;
  long padding;
};
struct Dwarf_Attribute {
  unsigned int code;
  unsigned int form;
  unsigned char* valp;
  void* cu;
};
struct Dwfl_Callbacks {
  void* find_elf;
  void* find_debuginfo;
  void* section_address;
  char** debuginfo_path;
};

constexpr int kTagSubprogram = 0x2e;
constexpr int kTagInlinedSubroutine = 0x1d;
constexpr int kTagLexicalBlock = 0x0b;
constexpr int kTagNamespace = 0x39;
constexpr int kTagClass = 0x02;
constexpr int kTagStructure = 0x13;
constexpr int kTagUnion = 0x17;
constexpr unsigned kAtLinkageName = 0x6e;
constexpr unsigned kAtMipsLinkageName = 0x2007;
constexpr unsigned kAtCallFile = 0x58;
constexpr unsigned kAtCallLine = 0x59;

struct LibDw {
  bool ok = false;
  Dwfl* (*begin)(const Dwfl_Callbacks*);
  int (*linux_proc_report)(Dwfl*, pid_t);
  int (*report_end)(Dwfl*, void*, void*);
  void (*report_begin)(Dwfl*);
  void (*end)(Dwfl*);
  Dwfl_Module* (*addrmodule)(Dwfl*, Dwarf_Addr);
  const char* (*module_addrinfo)(Dwfl_Module*, Dwarf_Addr, std::uint64_t*,
                                 Elf64_Sym*, std::uint32_t*, void**,
                                 Dwarf_Addr*);
  Dwarf_Die* (*module_addrdie)(Dwfl_Module*, Dwarf_Addr, Dwarf_Addr*);
  Dwfl_Line* (*module_getsrc)(Dwfl_Module*, Dwarf_Addr);
  const char* (*lineinfo)(Dwfl_Line*, Dwarf_Addr*, int*, int*, Dwarf_Word*,
                          Dwarf_Word*);
  int (*getscopes)(Dwarf_Die*, Dwarf_Addr, Dwarf_Die**);
  int (*getscopes_die)(Dwarf_Die*, Dwarf_Die**);
  int (*child)(Dwarf_Die*, Dwarf_Die*);
  int (*siblingof)(Dwarf_Die*, Dwarf_Die*);
  int (*haspc)(Dwarf_Die*, Dwarf_Addr);
  int (*tag)(Dwarf_Die*);
  Dwarf_Attribute* (*attr_integrate)(Dwarf_Die*, unsigned, Dwarf_Attribute*);
  const char* (*formstring)(Dwarf_Attribute*);
  int (*formudata)(Dwarf_Attribute*, Dwarf_Word*);
  const char* (*diename)(Dwarf_Die*);
  int (*getsrcfiles)(Dwarf_Die*, Dwarf_Files**, std::size_t*);
  const char* (*filesrc)(Dwarf_Files*, std::size_t, Dwarf_Word*, Dwarf_Word*);
  void* find_elf;
  void* find_debuginfo;
};

// Loaded once, on the first dump; never unloaded.
const LibDw& libdw() {
  static LibDw lib;
  static std::once_flag once;
  std::call_once(once, [] {
    void* h = dlopen("libdw.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) return;
    bool all = true;
    auto get = [&](auto* fn, const char* name) {
      void* sym = dlsym(h, name);
      if (sym == nullptr) all = false;
      std::memcpy(fn, &sym, sizeof(sym));
    };
    get(&lib.begin, "dwfl_begin");
    get(&lib.linux_proc_report, "dwfl_linux_proc_report");
    get(&lib.report_end, "dwfl_report_end");
    get(&lib.report_begin, "dwfl_report_begin");
    get(&lib.end, "dwfl_end");
    get(&lib.addrmodule, "dwfl_addrmodule");
    get(&lib.module_addrinfo, "dwfl_module_addrinfo");
    get(&lib.module_addrdie, "dwfl_module_addrdie");
    get(&lib.module_getsrc, "dwfl_module_getsrc");
    get(&lib.lineinfo, "dwfl_lineinfo");
    get(&lib.getscopes, "dwarf_getscopes");
    get(&lib.getscopes_die, "dwarf_getscopes_die");
    get(&lib.child, "dwarf_child");
    get(&lib.siblingof, "dwarf_siblingof");
    get(&lib.haspc, "dwarf_haspc");
    get(&lib.tag, "dwarf_tag");
    get(&lib.attr_integrate, "dwarf_attr_integrate");
    get(&lib.formstring, "dwarf_formstring");
    get(&lib.formudata, "dwarf_formudata");
    get(&lib.diename, "dwarf_diename");
    get(&lib.getsrcfiles, "dwarf_getsrcfiles");
    get(&lib.filesrc, "dwarf_filesrc");
    lib.find_elf = dlsym(h, "dwfl_linux_proc_find_elf");
    lib.find_debuginfo = dlsym(h, "dwfl_standard_find_debuginfo");
    lib.ok = all && lib.find_elf != nullptr && lib.find_debuginfo != nullptr;
  });
  return lib;
}

// Bazel records sources relative to its execution root, sometimes behind
// /proc/self/cwd/; print the workspace-relative path either way.
std::string clean_path(const char* f) {
  if (f == nullptr) return "";
  std::string s = f;
  for (const char* prefix : {"/proc/self/cwd/", "./"}) {
    const std::size_t n = std::strlen(prefix);
    if (s.compare(0, n, prefix) == 0) s.erase(0, n);
  }
  return s;
}

std::string die_function_name(const LibDw& dw, Dwarf_Die* die) {
  Dwarf_Attribute attr;
  for (unsigned at : {kAtLinkageName, kAtMipsLinkageName}) {
    if (dw.attr_integrate(die, at, &attr) != nullptr) {
      if (const char* s = dw.formstring(&attr)) {
        return strip_parameters(demangle(s));
      }
    }
  }
  const char* n = dw.diename(die);
  return n != nullptr ? n : "?";
}

// The chain of scopes (subprogram, inlined subroutines, lexical blocks)
// under `parent` whose ranges hold pc, outermost first, searching through
// namespaces, classes and abstract (pc-less) subprograms: a concrete
// function can be nested in those (a lambda's _FUN inside an inlined
// template), where dwarf_getscopes does not look (libdw 0.188).
bool find_chain(const LibDw& dw, Dwarf_Die* parent, Dwarf_Addr pc,
                std::vector<Dwarf_Die>* chain, int depth = 0) {
  if (depth > 64) return false;
  Dwarf_Die child;
  if (dw.child(parent, &child) != 0) return false;
  for (;;) {
    const int tag = dw.tag(&child);
    const bool scope = tag == kTagSubprogram || tag == kTagInlinedSubroutine ||
                       tag == kTagLexicalBlock;
    const int has = scope ? dw.haspc(&child, pc) : 0;
    if (has == 1) {
      chain->push_back(child);
      find_chain(dw, &child, pc, chain, depth + 1);
      return true;
    }
    if (tag == kTagNamespace || tag == kTagClass || tag == kTagStructure ||
        tag == kTagUnion || (tag == kTagSubprogram && has == 0)) {
      if (find_chain(dw, &child, pc, chain, depth + 1)) return true;
    }
    Dwarf_Die next;
    if (dw.siblingof(&child, &next) != 0) return false;
    child = next;
  }
}

}  // namespace

std::string demangle(const char* mangled) {
  if (mangled == nullptr) return "?";
  int status = 0;
  char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  if (d == nullptr || status != 0) return mangled;
  std::string out = d;
  std::free(d);
  return out;
}

namespace {

// Drops a leading return type ("void ns::f<int>" -> "ns::f<int>"), which
// the demangler prints for function templates: the name starts after the
// last space outside <>, () and {} (but "operator new" keeps its space).
std::string strip_return_type(const std::string& name) {
  int depth = 0;
  std::size_t start = 0;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    if (c == '<' || c == '(' || c == '{' || c == '[') ++depth;
    if (c == '>' || c == ')' || c == '}' || c == ']') --depth;
    if (c == ' ' && depth == 0 &&
        !(i >= 8 && name.compare(i - 8, 8, "operator") == 0)) {
      start = i + 1;
    }
  }
  return name.substr(start);
}

std::string strip_parameter_list(const std::string& name) {
  // Scan from the end: skip qualifiers after the last ')', then drop the
  // balanced "(...)" that ends the name. Names without one (C symbols,
  // "{lambda()#1}" endings) are returned as they are.
  std::size_t end = name.size();
  while (end > 0 && name[end - 1] != ')') {
    const char c = name[end - 1];
    if (c == '}' || c == '>' || c == ']') return name;
    --end;
  }
  if (end == 0) return name;
  int depth = 0;
  for (std::size_t i = end; i-- > 0;) {
    if (name[i] == ')') ++depth;
    if (name[i] == '(') {
      if (--depth == 0) {
        // "operator()" itself: the '(' just before is part of the name.
        return i == 0 ? name : name.substr(0, i);
      }
    }
  }
  return name;
}

}  // namespace

std::string strip_parameters(const std::string& name) {
  // Trailing " [clone .isra.0]" (GCC's specialised copies) and " [with F =
  // ...]" (GCC's __PRETTY_FUNCTION__ for templates) first.
  std::string n = name;
  while (!n.empty() && n.back() == ']') {
    int depth = 0;
    std::size_t i = n.size();
    while (i-- > 0) {
      if (n[i] == ']') ++depth;
      if (n[i] == '[' && --depth == 0) break;
    }
    if (i == std::string::npos || i == 0 || n[i - 1] != ' ') break;
    n.erase(i - 1);
  }
  return strip_return_type(strip_parameter_list(n));
}

Symbolizer::Symbolizer() {
  const LibDw& dw = libdw();
  if (!dw.ok) return;
  static char* debuginfo_path = nullptr;
  static Dwfl_Callbacks callbacks{dw.find_elf, dw.find_debuginfo, nullptr,
                                  &debuginfo_path};
  Dwfl* d = dw.begin(&callbacks);
  if (d == nullptr) return;
  if (dw.linux_proc_report(d, getpid()) != 0 ||
      dw.report_end(d, nullptr, nullptr) != 0) {
    dw.end(d);
    return;
  }
  dwfl_ = d;
}

void Symbolizer::refresh() {
  if (dwfl_ == nullptr) return;
  const LibDw& dw = libdw();
  Dwfl* d = static_cast<Dwfl*>(dwfl_);
  dw.report_begin(d);  // modules reported again are kept, with their DWARF
  dw.linux_proc_report(d, getpid());
  dw.report_end(d, nullptr, nullptr);
}

Symbolizer::~Symbolizer() {
  if (dwfl_ != nullptr) libdw().end(static_cast<Dwfl*>(dwfl_));
}

std::vector<Frame> Symbolizer::symbolize(std::uint64_t pc,
                                         bool is_return_address) {
  const std::uint64_t key = pc * 2 + (is_return_address ? 1 : 0);
  auto it = cache_.find(key);
  if (it != cache_.end()) return it->second;
  std::vector<Frame> out = lookup(pc, is_return_address);
  cache_.emplace(key, out);
  return out;
}

std::vector<Frame> Symbolizer::lookup(std::uint64_t pc,
                                      bool is_return_address) {
  std::vector<Frame> out;
  // A return address points after the call: look up the call itself.
  const std::uint64_t addr = is_return_address ? pc - 1 : pc;
  Frame outer;
  outer.pc = pc;
  const LibDw& dw = libdw();
  Dwfl_Module* mod = nullptr;
  if (dwfl_ != nullptr) {
    mod = dw.addrmodule(static_cast<Dwfl*>(dwfl_), addr);
  }
  if (mod == nullptr) {
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(addr), &info) != 0 &&
        info.dli_sname != nullptr) {
      outer.function = strip_parameters(demangle(info.dli_sname));
      outer.offset = pc - reinterpret_cast<std::uint64_t>(info.dli_saddr);
    } else {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "0x%llx",
                    static_cast<unsigned long long>(pc));
      outer.function = buf;
    }
    out.push_back(outer);
    return out;
  }
  std::uint64_t off = 0;
  Elf64_Sym sym;
  std::uint32_t shndx = 0;
  void* elf = nullptr;
  Dwarf_Addr symbias = 0;
  const char* symname =
      dw.module_addrinfo(mod, addr, &off, &sym, &shndx, &elf, &symbias);
  outer.function = symname != nullptr ? strip_parameters(demangle(symname))
                                      : std::string("?");
  outer.offset = off + (pc - addr);

  // The innermost position from the line table.
  std::string file;
  int line = 0;
  if (Dwfl_Line* l = dw.module_getsrc(mod, addr)) {
    int col = 0;
    Dwarf_Addr la = 0;
    file = clean_path(dw.lineinfo(l, &la, &line, &col, nullptr, nullptr));
  }
  // Inlined calls: each DW_TAG_inlined_subroutine around pc is a frame whose
  // position is the line table's (innermost) or its callee's call site.
  Dwarf_Addr bias = 0;
  Dwarf_Die* cu = dw.module_addrdie(mod, addr, &bias);
  std::vector<Dwarf_Die> chain;  // outermost first
  if (cu != nullptr) find_chain(dw, cu, addr - bias, &chain);
  Dwarf_Files* files = nullptr;
  std::size_t nfiles = 0;
  if (!chain.empty() && dw.getsrcfiles(cu, &files, &nfiles) != 0) {
    files = nullptr;
  }
  for (std::size_t i = chain.size(); i-- > 0;) {
    Dwarf_Die* sc = &chain[i];
    const int tag = dw.tag(sc);
    if (tag == kTagInlinedSubroutine) {
      Frame f;
      f.function = die_function_name(dw, sc);
      f.file = file;
      f.line = line;
      f.offset = outer.offset;
      f.pc = pc;
      out.push_back(std::move(f));
      Dwarf_Attribute a;
      Dwarf_Word v = 0;
      file.clear();
      line = 0;
      if (dw.attr_integrate(sc, kAtCallFile, &a) != nullptr &&
          dw.formudata(&a, &v) == 0 && files != nullptr && v < nfiles) {
        file = clean_path(dw.filesrc(files, v, nullptr, nullptr));
      }
      if (dw.attr_integrate(sc, kAtCallLine, &a) != nullptr &&
          dw.formudata(&a, &v) == 0) {
        line = static_cast<int>(v);
      }
    } else if (tag == kTagSubprogram) {
      break;
    }
  }
  outer.file = file;
  outer.line = line;
  out.push_back(std::move(outer));
  return out;
}

}  // namespace goro::diag_internal
