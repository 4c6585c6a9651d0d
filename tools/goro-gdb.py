# goro-gdb.py: goro's fibers in gdb, on a live process and on a core file.
#
#   (gdb) source tools/goro-gdb.py
#   (gdb) info fibers
#     Id  Name        State         Function
#   *  1  "main"      running       run_mode (tools/diag_example.cc:115)
#      2  "consumer"  chan receive  (anonymous namespace)::consume (...)
#   (gdb) fiber 2 bt          # any gdb command, in fiber 2's context
#   (gdb) fiber 2 info locals
#   (gdb) fiber all bt        # every fiber's
#   (gdb) goro-gcore FILE     # a core file that keeps the fiber stacks
#
# `info fibers` prints one line per live fiber: `*` when it is on a thread
# now, its id, its name if it has one, its state (the wait reason of a
# parked fiber, as in goro::dump_fibers: "chan receive", "mutex lock",
# "sleep", ...; "runnable", "preempted", "running", "blocking call"), and
# the innermost frame outside goro and the standard library (where the
# program waits).
#
# `fiber ID CMD...` runs CMD as if fiber ID were the selected frame's
# stack. For a fiber on a thread, it switches to that thread. For a
# switched-out fiber, a gdb.unwinder (FiberUnwinder below) makes the
# selected thread's innermost frame "return" into the fiber: it supplies
# the registers the context switch saved in the fiber's SwitchFrame (at
# Fiber::sp; runtime/internal/context_x86_64.h), so frame #1 and everything
# above it are the fiber's, unwound by gdb's own DWARF CFI from there
# (through the preemption trampoline goro_async_preempt, which has CFI, for
# a preempted fiber). Frame #0 is still the host thread's: `bt` hides it
# (a frame filter) and the command starts with frame #1 selected. Only
# memory and registers are read, so it works on a core file too.
#
# Fibers are found through the scheduler's own list: the running runtime
# (goro::runtime_internal::g_sched), its Sched::all_fibers chain
# (Fiber::all_next), and its Ms' current fibers (M::curg, M::tid). The
# program needs goro's debug info (the default build keeps -g).
#
# Loading: `source /path/to/goro/tools/goro-gdb.py`, or put that line in
# ~/.gdbinit; or auto-load it by copying it next to the program as
# PROGRAM-gdb.py and allowing the directory with add-auto-load-safe-path
# (see docs/diagnostics.md). gdb 12 or later (PendingFrame.level); tested
# with Debian 12's gdb 13.1.

import re
import struct

import gdb
import gdb.unwinder

_NS = "goro::runtime_internal::"

# runtime/internal/context_x86_64.h, SwitchFrame: mxcsr (u32), x87_cw (u16),
# pad (u16), then r15 r14 r13 r12 rbx rbp and the return address.
_SWITCH_FRAME = struct.Struct("<IHH7Q")
_SWITCH_FRAME_SIZE = 64
assert _SWITCH_FRAME.size == _SWITCH_FRAME_SIZE

# runtime/internal/park.h WaitReason -> the text of wait_reason_name().
_WAIT_REASONS = {
    "kNone": "waiting",
    "kChanSend": "chan send",
    "kChanReceive": "chan receive",
    "kSelect": "select",
    "kSelectNoCases": "select (no cases)",
    "kSleep": "sleep",
    "kMutexLock": "mutex lock",
    "kRWMutexRLock": "rwmutex rlock",
    "kRWMutexLock": "rwmutex lock",
    "kCondWait": "cond wait",
    "kSemacquire": "semaphore acquire",
    "kWaitGroupWait": "wait group wait",
    "kIOWait": "IO wait",
}

# Functions that are goro's or the standard library's, skipped (with the
# frames of goro's source files and of /usr/) when `info fibers` looks for
# the frame where the program waits.
_RUNTIME_PREFIXES = ("goro::", "goro_", "std::", "__", "operator new")


# --- Reading the runtime's data ---------------------------------------------


def _atomic(v):
    """The value inside a std::atomic<T> (libstdc++ layout)."""
    for _ in range(4):
        t = v.type.strip_typedefs()
        if t.code != gdb.TYPE_CODE_STRUCT:
            return v
        names = [f.name for f in t.fields()]
        if "_M_i" in names:
            return v["_M_i"]
        if "_M_p" in names:
            return v["_M_p"]
        if "_M_b" in names:
            v = v["_M_b"]
        elif "_M_base" in names:
            v = v["_M_base"]
        elif t.fields() and t.fields()[0].is_base_class:
            v = v.cast(t.fields()[0].type)
        else:
            break
    raise gdb.GdbError("goro: cannot read std::atomic of type %s" % v.type)


def _enum_name(v):
    """An enumerator's name (kWaiting) for an enum value."""
    t = v.type.strip_typedefs()
    n = int(v)
    for f in t.fields():
        if f.enumval == n:
            return f.name.split("::")[-1]
    return str(n)


def _std_string(v):
    """A std::string's text, read without libstdc++'s pretty printers."""
    try:
        n = int(v["_M_string_length"])
        if n == 0:
            return ""
        p = v["_M_dataplus"]["_M_p"]
        return gdb.selected_inferior().read_memory(int(p), min(n, 256)).tobytes(
        ).decode("utf-8", "replace")
    except gdb.error:
        return ""


def _vector_of_unique_ptrs(v, elem_type):
    """The raw pointers of a std::vector<std::unique_ptr<T>>: a unique_ptr
    with the default deleter is one pointer, so the buffer is a T* array."""
    start = v["_M_impl"]["_M_start"]
    finish = v["_M_impl"]["_M_finish"]
    pp = elem_type.pointer().pointer()
    first = start.cast(pp)
    n = (int(finish) - int(start)) // pp.target().sizeof
    return [first[i] for i in range(n)]


def _sched():
    try:
        g = gdb.parse_and_eval("'%sg_sched'" % _NS)
    except gdb.error as e:
        raise gdb.GdbError(
            "goro: no goro runtime in this program (%s); it needs goro's "
            "debug info" % e)
    s = _atomic(g)
    if int(s) == 0:
        return None
    return s.dereference()


class Fiber(object):
    """One live fiber, as read from the inferior's memory."""

    def __init__(self, ptr):
        f = ptr.dereference()
        self.addr = int(ptr)
        self.id = int(f["id"])
        self.name = _std_string(f["name"])
        self.state = _enum_name(_atomic(f["state"]))
        self.reason = _enum_name(_atomic(f["wait_reason"]))
        self.sp = int(f["sp"])
        self.created_function = None
        try:
            cf = f["created_function"]
            if int(cf) != 0:
                self.created_function = cf.string("utf-8", "replace")
        except gdb.error:
            pass
        self.thread = None  # the gdb thread running it, if on one
        self.blocking = False  # on a thread inside goro::blocking()
        self.preempted = False  # switched out by asynchronous preemption

    def state_text(self):
        if self.blocking:
            return "blocking call"
        if self.state == "kWaiting":
            return _WAIT_REASONS.get(self.reason, self.reason)
        if self.state == "kRunnable":
            return "preempted" if self.preempted else "runnable"
        if self.state == "kRunning":
            return "running"
        return self.state

    def on_thread(self):
        return self.state == "kRunning" or self.thread is not None


def _threads_by_lwp():
    out = {}
    for t in gdb.selected_inferior().threads():
        out[t.ptid[1]] = t
    return out


def read_fibers():
    """Every live fiber of the running runtime, by id."""
    s = _sched()
    if s is None:
        return []
    fiber_t = gdb.lookup_type(_NS + "Fiber")
    m_t = gdb.lookup_type(_NS + "M")
    fibers = []
    p = s["all_fibers"]
    seen = 0
    while int(p) != 0 and seen < 10_000_000:
        seen += 1
        fib = Fiber(p.cast(fiber_t.pointer()))
        if fib.state not in ("kFree", "kDead"):
            fibers.append(fib)
        p = p.dereference()["all_next"]
    by_addr = {f.addr: f for f in fibers}
    threads = _threads_by_lwp()
    for m in _vector_of_unique_ptrs(s["ms"], m_t):
        md = m.dereference()
        cur = int(_atomic(md["curg_"]))
        if cur == 0 or cur not in by_addr:
            continue
        fib = by_addr[cur]
        fib.thread = threads.get(int(_atomic(md["tid"])))
        fib.blocking = int(md["blocking_p"]) != 0
    fibers.sort(key=lambda f: f.id)
    return fibers


def find_fiber(fid):
    for f in read_fibers():
        if f.id == fid:
            return f
    raise gdb.GdbError("goro: no live fiber %d (see `info fibers`)" % fid)


# --- The unwinder -----------------------------------------------------------


class _FrameId(object):
    # gdb 13 wants gdb.Value attributes (gdb 14 has gdb.unwinder.FrameId).
    def __init__(self, sp, pc):
        self.sp = gdb.Value(sp)
        self.pc = pc


class FiberUnwinder(gdb.unwinder.Unwinder):
    """While a switched-out fiber is active, the innermost frame of the host
    thread unwinds to the registers in the fiber's SwitchFrame."""

    def __init__(self):
        super(FiberUnwinder, self).__init__("goro-fiber")
        self.host = None  # (inferior num, ptid) of the host thread
        self.sp = 0  # Fiber::sp: the SwitchFrame's address
        self.regs = None  # register name -> value

    def activate(self, thread, sp):
        mem = gdb.selected_inferior().read_memory(sp, _SWITCH_FRAME_SIZE)
        (_mxcsr, _cw, _pad, r15, r14, r13, r12, rbx, rbp,
         ret) = _SWITCH_FRAME.unpack(mem.tobytes())
        self.regs = {
            "rip": ret,
            # goro_context_switch's `ret` pops the return address: the
            # caller's rsp is just above the frame.
            "rsp": sp + _SWITCH_FRAME_SIZE,
            "rbp": rbp,
            "rbx": rbx,
            "r12": r12,
            "r13": r13,
            "r14": r14,
            "r15": r15,
        }
        self.sp = sp
        self.host = (thread.inferior.num, thread.ptid)
        gdb.invalidate_cached_frames()

    def deactivate(self):
        self.host = None
        self.regs = None
        gdb.invalidate_cached_frames()

    def active(self):
        if self.host is None:
            return False
        t = gdb.selected_thread()
        return t is not None and (t.inferior.num, t.ptid) == self.host

    def __call__(self, pending_frame):
        if self.regs is None or pending_frame.level() != 0 or not self.active():
            return None
        pc = pending_frame.read_register("rip")
        # The host frame's id: its real pc, and the SwitchFrame's address as
        # its stack address, so that gdb sees the fiber's frames as outer to
        # it (they are above the SwitchFrame) wherever the fiber's stack is.
        info = pending_frame.create_unwind_info(_FrameId(self.sp, pc))
        for name, value in self.regs.items():
            t = pending_frame.read_register(name).type
            info.add_saved_register(name, gdb.Value(value).cast(t))
        return info


_unwinder = FiberUnwinder()
gdb.unwinder.register_unwinder(None, _unwinder, replace=True)


class HideHostFrame(object):
    """Frame filter: while a switched-out fiber is active, `bt` leaves out
    frame #0 (the host thread's own frame) and starts at the fiber's."""

    def __init__(self):
        self.name = "goro-hide-host-frame"
        self.priority = 100
        self.enabled = True
        gdb.frame_filters[self.name] = self

    def filter(self, frame_iter):
        if not _unwinder.active():
            return frame_iter
        return (d for d in frame_iter if d.inferior_frame().level() != 0)


HideHostFrame()


class _FiberContext(object):
    """`with _FiberContext(fiber):` the selected thread and frame are the
    fiber's; restored on exit."""

    def __init__(self, fiber):
        self.fiber = fiber

    def __enter__(self):
        self.thread = gdb.selected_thread()
        try:
            self.frame_level = gdb.selected_frame().level()
        except gdb.error:
            self.frame_level = None
        f = self.fiber
        if f.thread is not None:
            f.thread.switch()
            return self
        if f.on_thread():
            raise gdb.GdbError(
                "goro: fiber %d is running but its thread was not found" % f.id)
        if f.sp == 0:
            raise gdb.GdbError("goro: fiber %d has not started yet: no stack"
                               % f.id)
        if self.thread is None:
            raise gdb.GdbError("goro: no thread to inspect the fiber from")
        _unwinder.activate(self.thread, f.sp)
        fiber_frame = gdb.newest_frame().older()
        if fiber_frame is None:
            _unwinder.deactivate()
            raise gdb.GdbError("goro: cannot unwind fiber %d" % f.id)
        fiber_frame.select()
        return self

    def __exit__(self, *exc):
        if _unwinder.host is not None:
            _unwinder.deactivate()
        if self.thread is not None and self.thread.is_valid():
            self.thread.switch()
            if self.frame_level is not None:
                frame = gdb.newest_frame()
                while frame is not None and frame.level() < self.frame_level:
                    frame = frame.older()
                if frame is not None:
                    frame.select()
        return False


_source_dirs = None


def _goro_source_dirs():
    """goro's own source directories as the debug info names them
    ("runtime/", or "/abs/goro/runtime/" in a CMake build), found from where
    a known runtime function is defined."""
    global _source_dirs
    if _source_dirs is None:
        root = None
        try:
            sym = gdb.lookup_symbol(_NS + "park")[0]
            path = sym.symtab.filename if sym and sym.symtab else ""
            suffix = "runtime/internal/park.cc"
            if path.endswith(suffix):
                root = path[:-len(suffix)]
        except gdb.error:
            pass
        dirs = ("runtime/", "preempt/", "sync/", "net/", "diag/")
        _source_dirs = tuple(root + d for d in dirs) if root is not None else ()
    return _source_dirs


def _normalize(path):
    return path[2:] if path.startswith("./") else path


def _source(frame):
    """(file of the frame's function, "file:line" of its pc or None): the
    first says whose code it is; the pc's line may be in an inlined header
    (an interrupted pc can sit at the first instruction of an inlined call,
    which gdb does not count as entered)."""
    func_file = None
    try:
        sym = frame.function()
        if sym is not None and sym.symtab is not None:
            func_file = _normalize(sym.symtab.filename)
    except gdb.error:
        pass
    sal = frame.find_sal()
    pos = None
    if sal is not None and sal.symtab is not None:
        pc_file = _normalize(sal.symtab.filename)
        if func_file is None:
            func_file = pc_file
        if pc_file == func_file:
            pos = "%s:%d" % (pc_file, sal.line)
    if pos is None and func_file is not None:
        pos = func_file
    return func_file, pos


def _is_runtime_frame(name, path):
    """goro's own frames and the standard library's, which `info fibers`
    looks past for the frame where the program waits."""
    if name is None or name.startswith(_RUNTIME_PREFIXES):
        return True
    if path is None:
        return False
    return path.startswith("/usr/") or path.startswith(_goro_source_dirs())


def _is_preempt_trampoline(frame):
    # The trampoline's CFI makes it a signal frame; gdb names such frames
    # "<signal handler called>", so ask for the symbol at its pc.
    if frame.type() != gdb.SIGTRAMP_FRAME:
        return False
    try:
        where = gdb.execute("info symbol %d" % frame.pc(), to_string=True)
    except gdb.error:
        return False
    return where.startswith("goro_async_preempt ")


def _describe(fiber, limit=64):
    """Walks the fiber's frames from the selected one: sets fiber.preempted
    and returns the innermost frame outside goro and the standard library,
    as "function (file:line)"."""
    frame = gdb.selected_frame()
    first = None
    chosen = None
    for _ in range(limit):
        if frame is None:
            break
        name = frame.name()
        if _is_preempt_trampoline(frame):
            fiber.preempted = True
        path, pos = _source(frame)
        text = None
        if name is not None:
            text = name if pos is None else "%s (%s)" % (name, pos)
        if first is None and text is not None:
            first = text
        if chosen is None and not _is_runtime_frame(name, path):
            chosen = text
        try:
            frame = frame.older()
        except gdb.error:
            break
    return chosen or first or "?"


# --- Commands ---------------------------------------------------------------


class InfoFibers(gdb.Command):
    """List goro's fibers: info fibers

One line per live fiber: `*` if it is on a thread now, its id, its name,
its state (the wait reason of a parked fiber, or runnable, preempted,
running, blocking call) and the innermost frame outside goro and the
standard library. Use `fiber ID CMD` to look into one."""

    def __init__(self):
        super(InfoFibers, self).__init__("info fibers", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        fibers = read_fibers()
        if not fibers and _sched() is None:
            print("goro: no runtime is running")
            return
        rows = []
        for f in fibers:
            if f.on_thread() and f.thread is None:
                where = "?"
            elif f.sp == 0 and not f.on_thread():
                where = "(not started)"
                if f.created_function:
                    where += " created by " + f.created_function
            else:
                try:
                    with _FiberContext(f):
                        where = _describe(f)
                except gdb.error as e:
                    where = "? (%s)" % e
            rows.append(("*" if f.on_thread() else " ", str(f.id),
                         '"%s"' % f.name if f.name else "", f.state_text(),
                         where))
        wid = max([len(r[1]) for r in rows] + [2])
        wname = max([len(r[2]) for r in rows] + [4])
        wstate = max([len(r[3]) for r in rows] + [5])
        print("  %*s  %-*s  %-*s  %s" % (wid, "Id", wname, "Name", wstate,
                                         "State", "Function"))
        for star, fid, name, state, where in rows:
            print("%s %*s  %-*s  %-*s  %s" % (star, wid, fid, wname, name,
                                              wstate, state, where))


class FiberCommand(gdb.Command):
    """Run a gdb command in a fiber's context: fiber ID COMMAND...

For example `fiber 7 bt`, `fiber 7 info locals`, `fiber 7 frame 3`;
`fiber all bt` runs the command for every fiber. A fiber on a thread: the command runs on that thread. A switched-out fiber
(parked, runnable or preempted): its saved registers are unwound into from
the current thread's innermost frame, which `bt` leaves out; the command
starts with the fiber's innermost frame (#1) selected."""

    def __init__(self):
        super(FiberCommand, self).__init__("fiber", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        m = re.match(r"\s*all\s+(\S.*)$", arg)
        if m:
            _fiber_all(m.group(1), from_tty)
            return
        m = re.match(r"\s*(\d+)\s+(\S.*)$", arg)
        if not m:
            raise gdb.GdbError("usage: fiber ID COMMAND...  (e.g. fiber 7 bt)")
        fiber = find_fiber(int(m.group(1)))
        with _FiberContext(fiber):
            gdb.execute(m.group(2), from_tty)


def _fiber_all(cmd, from_tty):
    """`fiber all CMD`: CMD in every fiber's context, each after a header
    in the dump's format (`fiber 7 "name" [chan receive]:`)."""
    for f in read_fibers():
        header = "fiber %d%s" % (f.id, ' "%s"' % f.name if f.name else "")
        try:
            with _FiberContext(f):
                _describe(f)  # sets f.preempted for the header
                print("%s [%s]:" % (header, f.state_text()))
                gdb.execute(cmd, from_tty)
        except gdb.error as e:
            print("%s [%s]:\n  %s" % (header, f.state_text(), e))
        print("")


# --- Core files -------------------------------------------------------------

_PT_LOAD = 1
_CHUNK = 1 << 20
_PAGE = 4096


def _load_segments(core):
    """(vaddr, filesz, offset) of each PT_LOAD segment of an ELF64 core."""
    core.seek(0)
    ehdr = core.read(64)
    if ehdr[:4] != b"\x7fELF" or ehdr[4] != 2:
        raise gdb.GdbError("goro-gcore: %s is not an ELF64 core" % core.name)
    phoff, = struct.unpack_from("<Q", ehdr, 32)
    phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
    segs = []
    for i in range(phnum):
        core.seek(phoff + i * phentsize)
        (p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, _memsz,
         _align) = struct.unpack("<IIQQQQQQ", core.read(56))
        if p_type == _PT_LOAD and p_filesz > 0:
            segs.append((p_vaddr, p_filesz, p_offset))
    return segs


def _copy_range(core, segs, lo, hi):
    """Copies the inferior's readable memory in [lo, hi) into the core file
    where a segment holds it. Returns the bytes copied."""
    inf = gdb.selected_inferior()
    copied = 0
    for vaddr, filesz, offset in segs:
        a, b = max(lo, vaddr), min(hi, vaddr + filesz)
        while a < b:
            n = min(_CHUNK, b - a)
            try:
                data = inf.read_memory(a, n).tobytes()
            except gdb.MemoryError:
                # A guard page somewhere in the chunk: page by page.
                n = min(_PAGE - a % _PAGE, b - a)
                try:
                    data = inf.read_memory(a, n).tobytes()
                except gdb.MemoryError:
                    a += n
                    continue
            core.seek(offset + (a - vaddr))
            core.write(data)
            copied += len(data)
            a += n
    return copied


# goro-gcore refuses (without -f) when the readable mappings add up to more
# than this: gdb writes every byte of them, untouched or not (a kernel core
# dump leaves holes), so a sanitizer's shadow memory (terabytes under
# AddressSanitizer) or a million fibers' stack reservations would fill the
# disk.
_GCORE_LIMIT = 64 << 30


def _readable_mapped_bytes():
    total = 0
    out = gdb.execute("info proc mappings", to_string=True)
    for line in out.splitlines():
        f = line.split()
        # Start End Size Offset Perms [objfile]
        if len(f) >= 5 and f[0].startswith("0x") and f[4].startswith("r"):
            total += int(f[2], 16)
    return total


class GoroGcore(gdb.Command):
    """Write a core file that keeps every fiber's stack: goro-gcore [-f] [FILE]

gdb's own gcore (generate-core-file) stops copying a memory mapping at its
first unreadable page, and goro's fiber stacks share mappings with their
guard pages: in its core, the fiber stacks after the first guard read as
zeros. goro-gcore runs generate-core-file, then copies each live fiber's
stack from the process into the core file. FILE defaults to core.PID.

gdb writes every readable byte, so goro-gcore refuses when the process maps
more than 64 GiB readable (an AddressSanitizer build's shadow memory, or a
very large number of fiber stacks): -f writes it anyway. A kernel core dump
(ulimit -c unlimited, then SIGABRT) skips untouched pages and keeps the
fiber stacks too."""

    def __init__(self):
        super(GoroGcore, self).__init__("goro-gcore", gdb.COMMAND_FILES,
                                        gdb.COMPLETE_FILENAME)

    def invoke(self, arg, from_tty):
        inf = gdb.selected_inferior()
        if inf.pid == 0:
            raise gdb.GdbError("goro-gcore: no live process")
        args = arg.split()
        force = "-f" in args
        args = [a for a in args if a != "-f"]
        path = args[0] if args else "core.%d" % inf.pid
        mapped = _readable_mapped_bytes()
        if mapped > _GCORE_LIMIT and not force:
            raise gdb.GdbError(
                "goro-gcore: the process maps %d GiB readable, and gdb would "
                "write all of it (an AddressSanitizer build's shadow memory?); "
                "use a kernel core dump, or goro-gcore -f to write it anyway"
                % (mapped >> 30))
        gdb.execute("generate-core-file %s" % path, from_tty)
        s = _sched()
        if s is None:
            return
        fiber_t = gdb.lookup_type(_NS + "Fiber")
        ranges = []
        p = s["all_fibers"]
        while int(p) != 0:
            f = p.cast(fiber_t.pointer()).dereference()
            state = _enum_name(_atomic(f["state"]))
            lo = int(f["stack"]["lo"])
            if state not in ("kFree", "kDead") and lo != 0:
                ranges.append((lo, lo + int(f["stack"]["size"])))
            p = f["all_next"]
        copied = 0
        with open(path, "r+b") as core:
            segs = _load_segments(core)
            for lo, hi in ranges:
                copied += _copy_range(core, segs, lo, hi)
        print("goro-gcore: copied the stacks of %d fibers (%d KiB) into %s"
              % (len(ranges), copied // 1024, path))


InfoFibers()
FiberCommand()
GoroGcore()
