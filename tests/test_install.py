"""pysc install / uninstall against temporary daemon.json files."""
import json
import os
import stat

import pytest

from pysc.core import install as I
from pysc.core.runtime import RuntimeError_

EXE = "/usr/local/bin/pysc"


@pytest.fixture(autouse=True)
def fixed_executable(monkeypatch):
    monkeypatch.setattr(I, "pysc_executable", lambda: EXE)


def run(cmd, path, *args):
    return I.COMMANDS[cmd](None, None, ["--config-file", str(path), *args])


def load(path):
    with open(path) as f:
        return json.load(f)


def test_fresh_file_and_parent_dir(tmp_path, capsys):
    path = tmp_path / "etc" / "docker" / "daemon.json"
    assert run("install", path) == 0
    assert load(path) == {"runtimes": {"pysc": {"path": EXE, "runtimeArgs": []}}}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    out = capsys.readouterr().out
    assert "pysc" in out and str(path) in out
    assert os.listdir(path.parent) == ["daemon.json"]  # no temp file left behind


def test_empty_file_is_an_empty_object(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text("  \n")
    assert run("install", path) == 0
    assert load(path)["runtimes"]["pysc"]["path"] == EXE


def test_other_runtimes_and_keys_kept(tmp_path):
    path = tmp_path / "daemon.json"
    before = {
        "log-driver": "json-file",
        "registry-mirrors": ["https://mirror.example"],
        "runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--debug"]}},
        "default-runtime": "runc",
    }
    path.write_text(json.dumps(before))
    assert run("install", path, "--runtime", "pysc-ptrace") == 0
    after = load(path)
    assert after["runtimes"]["runsc"] == before["runtimes"]["runsc"]
    assert after["runtimes"]["pysc-ptrace"] == {"path": EXE, "runtimeArgs": []}
    for key in ("log-driver", "registry-mirrors", "default-runtime"):
        assert after[key] == before[key]
    assert "experimental" not in after


def test_replace_entry(tmp_path, capsys):
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"runtimes": {"pysc": {"path": "/old/pysc", "runtimeArgs": ["--x"]}}}))
    assert run("install", path, "--", "--network=host") == 0
    assert load(path)["runtimes"] == {"pysc": {"path": EXE, "runtimeArgs": ["--network=host"]}}
    assert "Replaced" in capsys.readouterr().out


def test_runtime_args_after_dashdash(tmp_path):
    path = tmp_path / "daemon.json"
    assert run("install", path, "--runtime=pysc2", "--experimental", "--",
               "--platform=ptrace", "--network=host", "--runtime", "x") == 0
    after = load(path)
    # everything after -- is passed through untouched, even option-like words
    assert after["runtimes"]["pysc2"]["runtimeArgs"] == [
        "--platform=ptrace", "--network=host", "--runtime", "x"]
    assert after["experimental"] is True


def test_invalid_json_untouched(tmp_path):
    path = tmp_path / "daemon.json"
    text = '{"runtimes": {,}\n'
    path.write_text(text)
    os.chmod(path, 0o600)
    for cmd in ("install", "uninstall"):
        with pytest.raises(RuntimeError_) as e:
            run(cmd, path)
        assert str(path) in str(e.value) and "invalid JSON" in str(e.value)
        assert e.value.code != 0
    assert path.read_text() == text
    assert os.listdir(tmp_path) == ["daemon.json"]


@pytest.mark.parametrize("text", ['[1, 2]', '{"runtimes": []}'])
def test_wrong_shape_untouched(tmp_path, text):
    path = tmp_path / "daemon.json"
    path.write_text(text)
    with pytest.raises(RuntimeError_) as e:
        run("install", path)
    assert str(path) in str(e.value)
    assert path.read_text() == text


def test_uninstall(tmp_path, capsys):
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"debug": True, "runtimes": {
        "runsc": {"path": "/usr/bin/runsc"}, "pysc": {"path": EXE, "runtimeArgs": []}}}))
    assert run("uninstall", path) == 0
    assert load(path) == {"debug": True, "runtimes": {"runsc": {"path": "/usr/bin/runsc"}}}
    assert 'Removed runtime "pysc"' in capsys.readouterr().out


def test_install_then_uninstall_restores(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"debug": True}))
    run("install", path, "--", "--strace")
    run("uninstall", path)
    assert load(path) == {"debug": True}


def test_uninstall_missing_runtime(tmp_path):
    path = tmp_path / "daemon.json"
    text = json.dumps({"runtimes": {"runsc": {"path": "/usr/bin/runsc"}}})
    path.write_text(text)
    with pytest.raises(RuntimeError_) as e:
        run("uninstall", path, "--runtime", "pysc-kvm")
    assert '"pysc-kvm"' in str(e.value) and str(path) in str(e.value)
    assert path.read_text() == text


def test_uninstall_missing_file(tmp_path):
    path = tmp_path / "daemon.json"
    with pytest.raises(RuntimeError_) as e:
        run("uninstall", path)
    assert '"pysc"' in str(e.value)
    assert not path.exists()


def test_permissions_kept(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_text("{}")
    os.chmod(path, 0o600)
    run("install", path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    os.chmod(path, 0o640)
    run("uninstall", path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_symlinked_config_stays_a_symlink(tmp_path):
    real = tmp_path / "real.json"
    real.write_text("{}")
    link = tmp_path / "daemon.json"
    link.symlink_to(real)
    run("install", link)
    assert link.is_symlink()
    assert load(real)["runtimes"]["pysc"]["path"] == EXE


def test_bad_option_is_usage_error(tmp_path):
    with pytest.raises(RuntimeError_) as e:
        run("install", tmp_path / "daemon.json", "--bogus")
    assert e.value.code == 2
    assert not (tmp_path / "daemon.json").exists()


def test_executable_is_absolute(monkeypatch, tmp_path):
    monkeypatch.undo()  # the real lookup
    exe = tmp_path / "pysc"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setattr(I.sys, "argv", [str(exe)])
    assert I.pysc_executable() == str(exe.resolve())
    monkeypatch.setattr(I.sys, "argv", ["/usr/bin/python3"])
    monkeypatch.setenv("PATH", str(tmp_path))
    assert I.pysc_executable() == str(exe.resolve())


# --- docs/kubernetes.md: its snippets are checked against the real schemas ---
DOCS = os.path.join(os.path.dirname(__file__), os.pardir, "docs")


def _blocks(name, lang):
    import re
    with open(os.path.join(DOCS, name)) as f:
        text = f.read()
    return re.findall(r"```" + lang + r"\n(.*?)```", text, re.S)


def test_kubernetes_doc_yaml():
    yaml = pytest.importorskip("yaml")
    docs = [yaml.safe_load(b) for b in _blocks("kubernetes.md", "yaml")]
    rc = next(d for d in docs if d["kind"] == "RuntimeClass")
    assert rc["apiVersion"] == "node.k8s.io/v1"
    assert rc["metadata"]["name"] == "pysc" and rc["handler"] == "pysc"
    pod = next(d for d in docs if d["kind"] == "Pod")
    assert pod["apiVersion"] == "v1" and pod["spec"]["runtimeClassName"] == "pysc"


def test_kubernetes_doc_containerd_v2_config(tmp_path):
    """The version 2 snippet, appended to containerd's defaults, parses and
    shows the pysc runtime in `containerd config dump` (which drops unknown keys)."""
    import shutil
    import subprocess
    exe = shutil.which("containerd")
    if not exe:
        pytest.skip("no containerd binary (apt-get install containerd)")
    snippet = next(b for b in _blocks("kubernetes.md", "toml")
                   if b.startswith("version = 2") and "runtimes.pysc]" in b)
    default = subprocess.run([exe, "config", "default"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    assert default.lstrip().startswith("version = 2") or "\nversion = 2\n" in default
    cfg = tmp_path / "config.toml"
    cfg.write_text(default + "\n" + snippet.split("\n", 1)[1])
    out = subprocess.run([exe, "--config", str(cfg), "config", "dump"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    tables, name = {}, None  # header -> body lines
    for line in out.stdout.splitlines():
        line = line.strip()
        if line.startswith("["):
            name = line.strip("[]")
            tables[name] = []
        elif line and name:
            tables[name].append(line)
    prefix = 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.'
    assert 'runtime_type = "io.containerd.runc.v2"' in tables[prefix + "pysc"]
    assert 'BinaryName = "/usr/local/bin/pysc"' in tables[prefix + "pysc.options"]
    assert "SystemdCgroup = false" in tables[prefix + "pysc.options"]
    assert prefix + "runc" in tables
