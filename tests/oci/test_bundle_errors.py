"""A bad bundle (issue 4): each mistake gives a non-zero exit status, a
message on stderr that names the problem and the field, no Python traceback,
and no container left behind (``state`` fails, ``list`` is empty, nothing
under --root names the id, no process of it on the host).

Both ``create`` and ``run`` are tried, since ``run`` does its own create.
"""
from __future__ import annotations

import shutil

import pytest

from .conftest import assert_clear_error, entries_naming, read_config, show, write_config

pytestmark = pytest.mark.integration


def _invalid_json(b):
    (b / "config.json").write_text('{"ociVersion": "1.0.2", "process": {"args": ["true"]')
    return b, ("config.json",), ("json", "parse", "invalid", "syntax", "expecting", "decode")


def _no_config(b):
    (b / "config.json").unlink()
    return b, ("config.json",), ("not exist", "no such", "missing", "not found", "cannot open", "can't open",
                                 "no config.json")


def _missing_args(b):
    cfg = read_config(b)
    del cfg["process"]["args"]
    write_config(b, cfg)
    return b, ("args",), ()


def _empty_args(b):
    cfg = read_config(b)
    cfg["process"]["args"] = []
    write_config(b, cfg)
    return b, ("args",), ()


def _args_is_a_string(b):
    cfg = read_config(b)
    cfg["process"]["args"] = "echo hi"
    write_config(b, cfg)
    return b, ("args",), ("list", "array", "type", "string")


def _missing_rootfs(b):
    shutil.rmtree(b / "rootfs")
    return b, ("rootfs",), ("not exist", "no such", "missing", "not found", "not a directory")


def _missing_bundle(b):
    gone = b.parent / "no-such-bundle-dir"
    return gone, ("no-such-bundle-dir",), ("not exist", "no such", "missing", "not found", "not a directory")


def _unknown_namespace(b):
    cfg = read_config(b)
    cfg.setdefault("linux", {}).setdefault("namespaces", []).append({"type": "bogusns"})
    write_config(b, cfg)
    return b, ("namespace", "bogusns"), ()


def _relative_cwd(b):
    cfg = read_config(b)
    cfg["process"]["cwd"] = "tmp"
    write_config(b, cfg)
    return b, ("cwd",), ("absolute", "relative")


def _relative_mount_destination(b):
    cfg = read_config(b)
    cfg["mounts"].append({"destination": "data", "type": "tmpfs", "source": "tmpfs"})
    write_config(b, cfg)
    return b, ("destination",), ("absolute", "relative")


def _missing_bind_source(b):
    cfg = read_config(b)
    cfg["mounts"].append({"destination": "/data", "type": "bind", "source": str(b / "no-such-source"),
                          "options": ["rbind"]})
    write_config(b, cfg)
    return b, ("no-such-source",), ("not exist", "no such", "missing", "not found")


CASES = {
    "invalid-json": _invalid_json,
    "no-config-json": _no_config,
    "missing-process-args": _missing_args,
    "empty-process-args": _empty_args,
    "process-args-a-string": _args_is_a_string,
    "missing-rootfs": _missing_rootfs,
    "missing-bundle": _missing_bundle,
    "unknown-namespace-type": _unknown_namespace,
    "relative-cwd": _relative_cwd,
    "relative-mount-destination": _relative_mount_destination,
    "missing-bind-source": _missing_bind_source,
}


@pytest.mark.parametrize("command", ["create", "run"])
@pytest.mark.parametrize("case", list(CASES))
def test_bad_bundle_is_a_clear_error(runtime, bundle, tmp_path, case, command):
    b = bundle(["echo", "should-not-run"])
    target, must, any_of = CASES[case](b)
    cid = runtime.new_id()
    pid_file = tmp_path / "never.pid"
    cp = runtime.run(command, "--bundle", target, "--pid-file", pid_file, cid, timeout=60)
    assert_clear_error(cp, *must, any_of=any_of, what=f"{command} with a bundle with {case}")
    assert "should-not-run" not in cp.stdout, f"the container's process ran\n{show(cp)}"
    # nothing left behind
    st = runtime.run("state", cid)
    assert st.returncode != 0, f"a failed {command} left a container\n{show(st)}"
    listed = runtime.list_json()
    assert listed == [], f"a failed {command} left a container in `list`: {listed}"
    assert entries_naming(runtime.root, cid) == [], \
        f"a failed {command} left state under --root: {entries_naming(runtime.root, cid)}"
    assert not pid_file.exists() or not pid_file.read_text().strip(), \
        f"a failed {command} wrote --pid-file: {pid_file.read_text()!r}"


def test_the_message_names_the_field_path(runtime, bundle):
    """A nested field is named by its path, e.g. ``process.user.uid``."""
    b = bundle(["true"])
    cfg = read_config(b)
    cfg["process"]["user"]["uid"] = "root"
    write_config(b, cfg)
    cid = runtime.new_id()
    cp = runtime.run("create", "--bundle", b, cid)
    assert_clear_error(cp, "uid", what="create with process.user.uid a string")
    assert runtime.run("state", cid).returncode != 0
