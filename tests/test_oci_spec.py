"""config.json loading and validation (pysc.core.oci.spec)."""
from __future__ import annotations

import copy
import json
import os

import pytest

from pysc.core.oci import spec as S


@pytest.fixture
def bundle(tmp_path):
    os.mkdir(tmp_path / "rootfs")
    return tmp_path


def write(bundle, data) -> None:
    text = data if isinstance(data, str) else json.dumps(data, indent=2)
    (bundle / "config.json").write_text(text)


def load(bundle, data):
    write(bundle, data)
    return S.load_spec(str(bundle))


def error(bundle, data) -> str:
    write(bundle, data)
    with pytest.raises(S.SpecError) as info:
        S.load_spec(str(bundle))
    return str(info.value)


def base() -> dict:
    return copy.deepcopy(S.default_spec())


# --- the default spec ---------------------------------------------------------------

def test_default_spec_round_trips(bundle):
    sp = load(bundle, S.default_spec())
    assert sp.oci_version == "1.0.2"
    assert sp.root.path == str(bundle / "rootfs") and sp.root.readonly
    assert sp.hostname == "pysc"
    p = sp.process
    assert p.args == ["sh"] and p.terminal and p.cwd == "/" and p.no_new_privileges
    assert p.user.uid == 0 and p.user.gid == 0 and p.user.umask is None
    assert p.env_dict()["TERM"] == "xterm"
    assert p.rlimits == [S.Rlimit("RLIMIT_NOFILE", 1024, 1024)]
    assert p.rlimits[0].number == 7
    caps = p.capabilities
    assert caps.bounding == ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    assert caps.inheritable == []
    assert caps.effective_mask == (1 << 29) | (1 << 5) | (1 << 10)
    assert [m.destination for m in sp.mounts] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    dev = sp.mounts[1]
    assert dev.type == "tmpfs" and not dev.readonly and "mode=755" in dev.extra
    assert sp.mounts[5].readonly and "ro" not in sp.mounts[5].extra
    assert [n.type for n in sp.linux.namespaces] == [
        "pid", "network", "ipc", "uts", "mount", "cgroup"]
    assert S.has_network_namespace(sp) and S.network_namespace_path(sp) is None
    assert "/proc/kcore" in sp.linux.masked_paths
    assert "/proc/sys" in sp.linux.readonly_paths
    assert sp.linux.resources == {"devices": [{"allow": False, "access": "rwm"}]}
    assert sp.bundle == str(bundle)


def test_default_spec_args():
    assert S.default_spec(args=("/bin/true", "x"))["process"]["args"] == ["/bin/true", "x"]


def test_rootless_default_spec(bundle):
    sp = load(bundle, S.default_spec(rootless=True))
    types = [n.type for n in sp.linux.namespaces]
    assert "user" in types and "network" not in types
    assert not S.has_network_namespace(sp)
    assert sp.linux.uid_mappings == [S.IDMapping(0, os.geteuid(), 1)]
    assert sp.linux.gid_mappings == [S.IDMapping(0, os.getegid(), 1)]
    sys_mount = next(m for m in sp.mounts if m.destination == "/sys")
    assert sys_mount.type == "bind" and sys_mount.recursive and sys_mount.readonly
    assert sys_mount.source == "/sys"
    for m in sp.mounts:
        assert not any(o.startswith(("uid=", "gid=")) for o in m.options)
    assert sp.linux.resources is None


def test_write_default_spec_refuses_overwrite(bundle):
    path = S.write_default_spec(str(bundle))
    assert path == str(bundle / "config.json")
    sp = S.load_spec(str(bundle))
    assert sp.process.args == ["sh"]
    with pytest.raises(S.SpecError, match="config.json already exists"):
        S.write_default_spec(str(bundle))


# --- paths --------------------------------------------------------------------------

def test_relative_root_path_resolved(tmp_path):
    os.makedirs(tmp_path / "b" / "x" / "rootfs")
    d = base()
    d["root"] = {"path": "./x/../x/rootfs/"}
    sp = load(tmp_path / "b", d)
    assert sp.root.path == str(tmp_path / "b" / "x" / "rootfs")
    assert not sp.root.readonly


def test_relative_bundle_dir(bundle, monkeypatch):
    write(bundle, base())
    monkeypatch.chdir(bundle.parent)
    sp = S.load_spec(bundle.name)
    assert sp.root.path == str(bundle / "rootfs")


def test_absolute_root_path(bundle, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    d = base()
    d["root"]["path"] = str(other)
    assert load(bundle, d).root.path == str(other)


def test_missing_rootfs(bundle):
    d = base()
    d["root"]["path"] = "nope"
    assert error(bundle, d) == f"config.json: root.path: {bundle}/nope does not exist"
    (bundle / "file").write_text("")
    d["root"]["path"] = "file"
    assert "root.path" in error(bundle, d) and "not a directory" in error(bundle, d)
    # check_paths=False skips the existence check
    d["root"]["path"] = "nope"
    write(bundle, d)
    assert S.load_spec(str(bundle), check_paths=False).root.path == str(bundle / "nope")


def test_missing_bundle_and_config(tmp_path):
    with pytest.raises(S.SpecError, match=r"bundle .*/nothere: no such directory"):
        S.load_spec(str(tmp_path / "nothere"))
    with pytest.raises(S.SpecError) as info:
        S.load_spec(str(tmp_path))
    assert str(info.value) == f"bundle {tmp_path}: config.json not found"


# --- errors -------------------------------------------------------------------------

def test_invalid_json(bundle):
    msg = error(bundle, '{\n  "ociVersion": "1.0.2",\n    oops\n}')
    assert msg.startswith("config.json: invalid JSON at line 3 column 5: ")
    assert error(bundle, "[1, 2]") == "config.json: must contain a JSON object"
    (bundle / "config.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(S.SpecError, match="not valid UTF-8"):
        S.load_spec(str(bundle))


def mutate(fn):
    d = base()
    fn(d)
    return d


@pytest.mark.parametrize("change, expected", [
    (lambda d: d.pop("ociVersion"), "config.json: ociVersion: missing"),
    (lambda d: d.update(ociVersion=1), "config.json: ociVersion: must be a string"),
    (lambda d: d.update(ociVersion="2.0.0"), 'config.json: ociVersion: unsupported version "2.0.0"'),
    (lambda d: d.pop("process"), "config.json: process: missing"),
    (lambda d: d.update(process=[]), "config.json: process: must be an object"),
    (lambda d: d["process"].update(args=[]),
     "config.json: process.args: must be a non-empty list of strings"),
    (lambda d: d["process"].update(args="sh"),
     "config.json: process.args: must be a non-empty list of strings"),
    (lambda d: d["process"].update(args=["sh", 1]),
     "config.json: process.args: must be a non-empty list of strings"),
    (lambda d: d["process"].pop("args"),
     "config.json: process.args: must be a non-empty list of strings"),
    (lambda d: d["process"].update(cwd="tmp"), "config.json: process.cwd: must be an absolute path"),
    (lambda d: d["process"].pop("cwd"), "config.json: process.cwd: missing"),
    (lambda d: d["process"].update(env=["A=1", "NOEQUALS"]),
     "config.json: process.env[1]: must look like NAME=VALUE"),
    (lambda d: d["process"].update(env=["=x"]), "config.json: process.env[0]: must look like"),
    (lambda d: d["process"].update(env="A=1"), "config.json: process.env: must be a list"),
    (lambda d: d["process"].update(terminal="yes"),
     "config.json: process.terminal: must be true or false"),
    (lambda d: d["process"].update(noNewPrivileges=1),
     "config.json: process.noNewPrivileges: must be true or false"),
    (lambda d: d["process"]["user"].update(uid=-1), "config.json: process.user.uid: -1 out of range"),
    (lambda d: d["process"]["user"].update(gid=1 << 32), "config.json: process.user.gid: "),
    (lambda d: d["process"]["user"].update(uid="0"), "config.json: process.user.uid: must be an integer"),
    (lambda d: d["process"]["user"].update(uid=True), "config.json: process.user.uid: must be an integer"),
    (lambda d: d["process"]["user"].update(uid=1.0), "config.json: process.user.uid: must be an integer"),
    (lambda d: d["process"]["user"].update(umask=0o1000), "config.json: process.user.umask: "),
    (lambda d: d["process"]["user"].update(additionalGids=[1, "x"]),
     "config.json: process.user.additionalGids[1]: "),
    (lambda d: d["process"]["rlimits"].append({"type": "RLIMIT_FOO", "soft": 1, "hard": 1}),
     'config.json: process.rlimits[1].type: unknown rlimit "RLIMIT_FOO"'),
    (lambda d: d["process"]["rlimits"].append({"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}),
     'config.json: process.rlimits[1].type: duplicate rlimit "RLIMIT_NOFILE"'),
    (lambda d: d["process"]["rlimits"][0].update(soft=2048),
     "config.json: process.rlimits[0]: soft limit 2048 exceeds hard limit 1024"),
    (lambda d: d["process"]["rlimits"][0].pop("hard"),
     "config.json: process.rlimits[0].hard: missing"),
    (lambda d: d["process"]["rlimits"][0].update(hard=1 << 64),
     "config.json: process.rlimits[0].hard: "),
    (lambda d: d["process"]["capabilities"]["bounding"].insert(1, "CAP_FOO"),
     'config.json: process.capabilities.bounding[1]: unknown capability "CAP_FOO"'),
    (lambda d: d["process"]["capabilities"].update(ambient="CAP_KILL"),
     "config.json: process.capabilities.ambient: must be a list"),
    (lambda d: d["process"]["capabilities"].update(effective=[5]),
     "config.json: process.capabilities.effective[0]: must be a string"),
    (lambda d: d["process"].update(oomScoreAdj=1001), "config.json: process.oomScoreAdj: "),
    (lambda d: d["process"].update(apparmorProfile=3),
     "config.json: process.apparmorProfile: must be a string"),
    (lambda d: d.pop("root"), "config.json: root: missing"),
    (lambda d: d["root"].pop("path"), "config.json: root.path: missing"),
    (lambda d: d["root"].update(readonly="true"), "config.json: root.readonly: must be true or false"),
    (lambda d: d.update(hostname=5), "config.json: hostname: must be a string"),
    (lambda d: d.update(hostname="h" * 65), "config.json: hostname: longer than 64 bytes"),
    (lambda d: d.update(domainname=[]), "config.json: domainname: must be a string"),
    (lambda d: d.update(mounts={}), "config.json: mounts: must be a list"),
    (lambda d: d["mounts"][2].update(destination="dev/pts"),
     "config.json: mounts[2].destination: must be an absolute path"),
    (lambda d: d["mounts"][0].pop("destination"), "config.json: mounts[0].destination: missing"),
    (lambda d: d["mounts"][0].update(type="ext4"),
     'config.json: mounts[0].type: unsupported mount type "ext4"'),
    (lambda d: d["mounts"][0].pop("type"), "config.json: mounts[0].type: missing"),
    (lambda d: d["mounts"][1].update(options=["ro", 3]),
     "config.json: mounts[1].options[1]: must be a string"),
    (lambda d: d["mounts"].append({"destination": "/m", "type": "bind"}),
     "config.json: mounts[7].source: a bind mount needs a source"),
    (lambda d: d["mounts"].append({"destination": "/m", "type": "bind", "source": "/no/such/dir"}),
     "config.json: mounts[7].source: /no/such/dir does not exist"),
    (lambda d: d.update(annotations={"a": 1}), 'config.json: annotations["a"]: must be a string'),
    (lambda d: d.update(annotations=["a"]), "config.json: annotations: must be an object"),
    (lambda d: d.update(linux=[]), "config.json: linux: must be an object"),
    (lambda d: d["linux"]["namespaces"].insert(0, {"type": "foo"}),
     'config.json: linux.namespaces[0].type: unknown namespace "foo"'),
    (lambda d: d["linux"]["namespaces"].append({"type": "pid"}),
     'config.json: linux.namespaces[6].type: duplicate namespace "pid"'),
    (lambda d: d["linux"]["namespaces"][1].update(path="netns"),
     "config.json: linux.namespaces[1].path: must be an absolute path"),
    (lambda d: d["linux"].update(uidMappings=[{"containerID": 0, "hostID": 1000}]),
     "config.json: linux.uidMappings[0].size: missing"),
    (lambda d: d["linux"].update(gidMappings=[{"containerID": 0, "hostID": 1000, "size": 0}]),
     "config.json: linux.gidMappings[0].size: 0 out of range"),
    (lambda d: d["linux"].update(resources=[]), "config.json: linux.resources: must be an object"),
    (lambda d: d["linux"].update(seccomp="x"), "config.json: linux.seccomp: must be an object"),
    (lambda d: d["linux"].update(sysctl={"net.ipv4.ip_forward": 1}),
     'config.json: linux.sysctl["net.ipv4.ip_forward"]: must be a string'),
    (lambda d: d["linux"]["maskedPaths"].append("proc/x"),
     "config.json: linux.maskedPaths[10]: must be an absolute path"),
    (lambda d: d["linux"].update(readonlyPaths=[1]),
     "config.json: linux.readonlyPaths[0]: must be a string"),
    (lambda d: d["linux"].update(cgroupsPath=1), "config.json: linux.cgroupsPath: must be a string"),
    (lambda d: d["linux"].update(devices=[{"path": "/dev/x", "type": "z"}]),
     'config.json: linux.devices[0].type: unknown device type "z"'),
    (lambda d: d["linux"].update(devices=[{"path": "/dev/x", "type": "c", "major": 1}]),
     "config.json: linux.devices[0].minor: missing"),
])
def test_errors_name_the_field(bundle, change, expected):
    msg = error(bundle, mutate(change))
    assert msg.startswith(expected), msg


def test_error_field_attribute(bundle):
    write(bundle, mutate(lambda d: d["process"].update(cwd="rel")))
    with pytest.raises(S.SpecError) as info:
        S.load_spec(str(bundle))
    assert info.value.field == "process.cwd"
    assert isinstance(info.value, ValueError)


# --- accepted inputs ----------------------------------------------------------------

def test_unknown_fields_ignored(bundle):
    d = base()
    d["vm"] = {"kernel": {"path": "/k"}}
    d["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_IDLE"}
    d["linux"]["mountLabel"] = "x"
    sp = load(bundle, d)
    assert sp.raw["vm"] == {"kernel": {"path": "/k"}}


@pytest.mark.parametrize("version", ["1.0.0", "1.0.2-dev", "1.1.0", "1.1.0-rc.1", "1.2.0"])
def test_versions_accepted(bundle, version):
    d = base()
    d["ociVersion"] = version
    assert load(bundle, d).oci_version == version


def test_minimal_spec(bundle):
    sp = load(bundle, {"ociVersion": "1.1.0", "process": {"args": ["true"], "cwd": "/"},
                       "root": {"path": "rootfs"}})
    assert sp.process.capabilities is None
    assert sp.process.env == [] and sp.process.rlimits == [] and not sp.process.terminal
    assert sp.mounts == [] and sp.annotations == {} and sp.linux == S.Linux()
    assert sp.hostname == "" and sp.linux.namespaces == []
    assert not S.has_network_namespace(sp) and S.network_namespace_path(sp) is None


def test_annotations_kept(bundle):
    d = base()
    d["annotations"] = {"dev.pysc.flag.strace": "true", "io.kubernetes.cri.container-type": "sandbox"}
    sp = load(bundle, d)
    assert sp.annotations == d["annotations"]


def test_user_fields(bundle):
    d = base()
    d["process"]["user"] = {"uid": 1000, "gid": 100, "umask": 0o27, "additionalGids": [5, 6]}
    d["process"]["oomScoreAdj"] = -500
    d["process"]["apparmorProfile"] = "docker-default"
    assert load(bundle, d).process.user == S.User(1000, 100, 0o27, [5, 6])


def test_network_namespace_path(bundle):
    d = base()
    d["linux"]["namespaces"][1] = {"type": "network", "path": "/var/run/netns//cni-1234"}
    sp = load(bundle, d)
    assert S.has_network_namespace(sp)
    assert S.network_namespace_path(sp) == "/var/run/netns/cni-1234"
    assert sp.linux.namespace("network").path == "/var/run/netns/cni-1234"


def test_mount_parsing(bundle, tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    (bundle / "data").mkdir()
    d = base()
    d["mounts"] = [
        # Docker/containerd style bind
        {"destination": "/etc/hosts/", "type": "bind", "source": str(src),
         "options": ["rbind", "rprivate", "ro"]},
        # any type with a bind option is a bind; relative source -> bundle
        {"destination": "/data", "type": "none", "source": "data", "options": ["bind", "rw"]},
        # type omitted with bind option
        {"destination": "/d2", "source": "data", "options": ["ro", "rw", "bind"]},
        {"destination": "/dev/shm", "type": "shm", "source": "shm", "options": ["ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup2", "source": "cgroup2"},
    ]
    sp = load(bundle, d)
    m0, m1, m2, m3, m4 = sp.mounts
    assert (m0.destination, m0.type, m0.source) == ("/etc/hosts", "bind", str(src))
    assert m0.bind and m0.recursive and m0.readonly and m0.extra == ["rprivate"]
    assert m0.options == ["rbind", "rprivate", "ro"]
    assert m1.type == "bind" and m1.source == str(bundle / "data") and not m1.readonly
    assert not m1.recursive
    assert m2.type == "bind" and not m2.readonly          # later rw wins
    assert m3.type == "shm" and m3.readonly and not m3.bind
    assert m4.type == "cgroup2" and m4.options == []


def test_process_json_for_exec():
    p = S.parse_process({"args": ["ls"], "cwd": "/tmp", "env": ["A=b=c"]})
    assert p.env_dict() == {"A": "b=c"}
    with pytest.raises(S.SpecError, match=r"^config.json: process.args: "):
        S.parse_process({"cwd": "/"})


def test_linux_records(bundle):
    d = base()
    d["linux"].update(
        cgroupsPath="/pysc/abc", sysctl={"net.ipv4.ip_forward": "1"},
        seccomp={"defaultAction": "SCMP_ACT_ERRNO"},
        devices=[{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                  "fileMode": 0o666, "uid": 0, "gid": 0},
                 {"path": "/dev/fifo", "type": "p"}])
    lx = load(bundle, d).linux
    assert lx.cgroups_path == "/pysc/abc" and lx.sysctl == {"net.ipv4.ip_forward": "1"}
    assert lx.seccomp == {"defaultAction": "SCMP_ACT_ERRNO"}
    assert lx.devices[0] == S.Device("/dev/fuse", "c", 10, 229, 0o666, 0, 0)
    assert lx.devices[1] == S.Device("/dev/fifo", "p")


# --- helpers ------------------------------------------------------------------------

def test_rlimit_number():
    assert S.rlimit_number("RLIMIT_CPU") == 0
    assert S.rlimit_number("RLIMIT_NOFILE") == 7
    assert S.rlimit_number("RLIMIT_AS") == 9
    assert S.rlimit_number("RLIMIT_RTTIME") == 15
    assert len(S.RLIMITS) == 16
    with pytest.raises(S.SpecError, match='unknown rlimit "RLIMIT_FOO"'):
        S.rlimit_number("RLIMIT_FOO")


def test_capability_mask():
    assert S.capability_mask([]) == 0
    assert S.capability_mask(["CAP_CHOWN"]) == 1
    assert S.capability_mask(["CAP_KILL", "CAP_KILL"]) == 1 << 5
    assert S.capability_mask(["CAP_SYS_ADMIN"]) == 1 << 21
    assert S.capability_mask(["CAP_AUDIT_WRITE"]) == 1 << 29
    assert S.capability_mask(["CAP_CHECKPOINT_RESTORE"]) == 1 << 40
    assert S.capability_mask(S.CAPABILITIES) == (1 << 41) - 1
    with pytest.raises(S.SpecError, match='unknown capability "CAP_FOO"'):
        S.capability_mask(["CAP_CHOWN", "CAP_FOO"])


def test_socket_dir_names_are_short_and_distinct(tmp_path):
    from pysc.core.oci import state
    # published FNV-1a 64 test vectors
    assert state.fnv1a_64(b"") == 0xcbf29ce484222325
    assert state.fnv1a_64(b"a") == 0xaf63dc4c8601ec8c
    assert state.fnv1a_64(b"foobar") == 0x85944171f73967e8
    ids = ["a" * 128, "a" * 127 + "b", "c1", "c2", "1c"]
    dirs = {state.socket_dir(str(tmp_path), i) for i in ids}
    assert len(dirs) == len(ids)
    assert all(len(d) == len(str(tmp_path)) + 20 for d in dirs)
