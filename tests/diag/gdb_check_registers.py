# gdb_check_registers.py: for tests/diag/gdb_test.cc. After
# tools/goro-gdb.py is sourced, `check-fiber-registers VAR` reads the fiber
# whose id is in the program's global VAR, decodes its SwitchFrame with this
# file's own copy of the layout (runtime/internal/context_x86_64.h), and
# checks that in `fiber N`'s context frame #1 has exactly those registers:
# pc = the saved return address, sp = just above the frame, and the six
# callee-saved registers. Prints "registers: ok" or what differs.

import struct

import gdb

# mxcsr+x87 cw+pad, r15, r14, r13, r12, rbx, rbp, return address.
_LAYOUT = ("csr", "r15", "r14", "r13", "r12", "rbx", "rbp", "pc")


class CheckFiberRegisters(gdb.Command):
    def __init__(self):
        super(CheckFiberRegisters, self).__init__("check-fiber-registers",
                                                  gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        fid = int(gdb.parse_and_eval(arg.strip()))
        fiber = find_fiber(fid)  # noqa: F821 (defined by goro-gdb.py)
        words = struct.unpack(
            "<8Q",
            gdb.selected_inferior().read_memory(fiber.sp, 64).tobytes())
        want = dict(zip(_LAYOUT, words))
        del want["csr"]
        want["sp"] = fiber.sp + 64
        got = {}
        with _FiberContext(fiber):  # noqa: F821
            frame = gdb.selected_frame()
            for reg in want:
                got[reg] = int(frame.read_register(reg)) & (2**64 - 1)
            level = frame.level()
        wrong = {r: (hex(got[r]), hex(want[r])) for r in want
                 if got[r] != want[r]}
        if level != 1:
            wrong["level"] = (level, 1)
        print("registers: " + ("ok" if not wrong else "wrong (got, want) %r"
                               % wrong))


CheckFiberRegisters()
