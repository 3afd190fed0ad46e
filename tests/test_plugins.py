"""A third-party plugin, installed with its own entry point, adds a flag and
replaces a syscall; both take effect in `pysc flags` and in a sandbox."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

PLUGIN = textwrap.dedent('''
    import sys
    from pysc.core.dispatch import syscall
    from pysc.core.hookspecs import hookimpl

    @hookimpl
    def pysc_add_flags(flags):
        flags.add("fake-release", str, "", "report this kernel release from uname(2)")

    @syscall()
    def uname(t, buf, *_):
        from pysc.core.abi.structs import pack_utsname
        k = t.kernel
        release = k.config.get("fake-release") or k.release
        t.mem.write(buf, pack_utsname("Linux", k.hostname, release, k.version, "x86_64", "(none)"))
        return 0

    @hookimpl
    def pysc_syscalls(table, platform):
        table.register_module(sys.modules[__name__])
''')


@pytest.fixture
def plugin_env(tmp_path):
    """A plugin package plus its dist-info, importable through PYTHONPATH."""
    (tmp_path / "pysc_fake_release.py").write_text(PLUGIN)
    dist = tmp_path / "pysc_fake_release-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pysc-fake-release\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pysc]\nfake_release = pysc_fake_release\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def pysc(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pysc.core.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_plugin_flag_listed(plugin_env):
    out = pysc("flags", env=plugin_env)
    assert out.returncode == 0, out.stderr
    assert "--fake-release" in out.stdout
    assert "pysc_fake_release" in out.stdout


def test_plugin_replaces_syscall(plugin_env):
    report = pysc("help", "syscalls", env=plugin_env)
    line = next(l for l in report.stdout.splitlines() if " uname " in f" {l} ")
    assert "pysc_fake_release" in line and "replaces" in line


@pytest.mark.skipif(not shutil.which("busybox"), reason="busybox-static is not installed")
def test_plugin_takes_effect_in_sandbox(plugin_env):
    out = pysc("--fake-release=9.9.9", "do", "/bin/busybox", "uname", "-r", env=plugin_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "9.9.9"
    plain = pysc("do", "/bin/busybox", "uname", "-r", env=plugin_env)
    assert plain.stdout.strip() == "4.4.0"


def test_entry_points_found_as_importlib_metadata_finds_them(tmp_path):
    import importlib.metadata
    from pysc.core.plugins import find_entry_points
    for group in ("pysc", "console_scripts"):
        want = sorted((ep.name, ep.value) for ep in importlib.metadata.entry_points(group=group))
        assert sorted(find_entry_points(group)) == want
    first, second = tmp_path / "a", tmp_path / "b"
    for where, value in ((first, "mod_a"), (second, "mod_b")):
        dist = where / "Some.Plugin-2.0.dist-info"
        dist.mkdir(parents=True)
        (dist / "entry_points.txt").write_text(
            f"# comment\n[other]\nx = nope\n\n[pysc]\nplug = {value}:hooks [extra]\n")
    # the first distribution of a name on the path wins, as with importlib.metadata
    assert find_entry_points("pysc", [str(first), str(second), str(tmp_path / "missing")]) == \
        [("plug", "mod_a:hooks [extra]")]


def test_load_entry_point():
    from pysc.core.plugins import load_entry_point
    import os.path
    assert load_entry_point("os.path") is os.path
    assert load_entry_point("os:path.join [x]") is os.path.join


def test_platforms_are_imported_only_when_used():
    code = ("import sys; from pysc.core.plugins import make_plugin_manager, platforms, platform_class; "
            "pm = make_plugin_manager(); offered = platforms(pm); "
            "print(sorted(offered), sorted(m for m in sys.modules if m.startswith('pysc.platforms.') "
            "and m.endswith('.platform'))); "
            "cls = platform_class(offered['ptrace']); print(cls.__name__, cls.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first == "['kvm', 'ptrace', 'seccomp'] []"
    assert second == "PtracePlatform pysc.platforms.ptrace.platform"


def test_a_platform_may_be_given_as_a_class():
    from pysc.core.plugins import platform_class
    from pysc.platforms.seccomp.platform import SeccompPlatform
    assert platform_class(SeccompPlatform) is SeccompPlatform
    assert platform_class("pysc.platforms.seccomp.platform:SeccompPlatform") is SeccompPlatform


def test_main_restores_the_collector(capsys):
    """`pysc` turns the cyclic collector off for start-up; in-process callers get it back."""
    import gc
    from pysc.core.cli import main
    assert gc.isenabled()
    assert main(["--version"]) == 0
    assert gc.isenabled()
    gc.disable()
    try:
        assert main(["--version"]) == 0
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert "pysc version" in capsys.readouterr().out
