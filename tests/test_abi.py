"""The x86-64 layouts in core/abi checked against an independent source."""
from __future__ import annotations

import ctypes

import pytest

from pysc.core.abi.structs import user_regs_struct


def test_user_regs_struct_matches_python_ptrace():
    func = pytest.importorskip("ptrace.binding.func")
    theirs = func.ptrace_registers_t
    assert ctypes.sizeof(user_regs_struct) == ctypes.sizeof(theirs) == 27 * 8
    ours = [(name, getattr(user_regs_struct, name).offset) for name, _ in user_regs_struct._fields_]
    assert ours == [(name, getattr(theirs, name).offset) for name, _ in theirs._fields_]
