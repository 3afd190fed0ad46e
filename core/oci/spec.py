"""A bundle's ``config.json`` (OCI runtime-spec 1.0/1.1), as pysc uses it.

``load_spec(bundle)`` reads ``BUNDLE/config.json``, checks every field pysc
uses (types, ranges, known names) and returns a ``Spec`` record.  Any problem
raises ``SpecError`` whose message names the offending field, e.g.::

    config.json: process.args: must be a non-empty list of strings
    config.json: mounts[2].destination: must be an absolute path

Fields pysc does not use (at the top level or inside an object) are accepted
and ignored, as runc does; they stay available in ``Spec.raw``.

``default_spec()`` / ``write_default_spec()`` give the starter config that
``pysc spec`` writes, modelled on ``runc spec``.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Iterable

from pysc.core.abi import consts as C
from pysc.core.record import Factory, Record

CONFIG_NAME = "config.json"

UINT32_MAX = (1 << 32) - 1
UINT64_MAX = (1 << 64) - 1


class SpecError(ValueError):
    """An invalid bundle or config.json.  ``field`` is the dotted field path
    (``"process.args"``, ``"mounts[2].destination"``) or ``""``."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


# --- names --------------------------------------------------------------------------

RLIMITS: dict[str, int] = {
    name: getattr(C, name) for name in (
        "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE",
        "RLIMIT_RSS", "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS",
        "RLIMIT_LOCKS", "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE",
        "RLIMIT_RTPRIO", "RLIMIT_RTTIME")
}

_CAP_ORDER = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
    "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
#: "CAP_CHOWN" -> 0 ... "CAP_CHECKPOINT_RESTORE" -> 40
CAPABILITIES: dict[str, int] = {"CAP_" + n: i for i, n in enumerate(_CAP_ORDER)}
CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")

MOUNT_TYPES = ("bind", "tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "shm")

DEVICE_TYPES = ("c", "b", "u", "p")

_ENV_RE = re.compile(r"^[^=\x00]+=[^\x00]*$")
_VERSION_RE = re.compile(r"^1\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]*)?$")


def rlimit_number(name: str) -> int:
    """``"RLIMIT_NOFILE"`` -> 7 (x86-64 resource numbers)."""
    try:
        return RLIMITS[name]
    except (KeyError, TypeError):
        raise SpecError(f'unknown rlimit "{name}"') from None


def capability_mask(names: Iterable[str]) -> int:
    """``["CAP_CHOWN", "CAP_KILL"]`` -> ``(1 << 0) | (1 << 5)``."""
    mask = 0
    for name in names:
        bit = CAPABILITIES.get(name) if isinstance(name, str) else None
        if bit is None:
            raise SpecError(f'unknown capability "{name}"')
        mask |= 1 << bit
    return mask


# --- records ------------------------------------------------------------------------

class User(Record):
    uid: int = 0
    gid: int = 0
    umask: int | None = None          # None: not given (leave the default 0022)
    additional_gids: list[int] = Factory(list)


class Rlimit(Record):
    type: str                          # "RLIMIT_NOFILE"
    soft: int
    hard: int

    @property
    def number(self) -> int:
        return RLIMITS[self.type]


class Capabilities(Record):
    """Lists of ``CAP_*`` names; ``*_mask`` give the bit masks."""
    bounding: list[str] = Factory(list)
    effective: list[str] = Factory(list)
    inheritable: list[str] = Factory(list)
    permitted: list[str] = Factory(list)
    ambient: list[str] = Factory(list)

    @property
    def bounding_mask(self) -> int:
        return capability_mask(self.bounding)

    @property
    def effective_mask(self) -> int:
        return capability_mask(self.effective)

    @property
    def inheritable_mask(self) -> int:
        return capability_mask(self.inheritable)

    @property
    def permitted_mask(self) -> int:
        return capability_mask(self.permitted)

    @property
    def ambient_mask(self) -> int:
        return capability_mask(self.ambient)


class Process(Record):
    args: list[str]
    cwd: str = "/"
    env: list[str] = Factory(list)
    terminal: bool = False
    user: User = Factory(User)
    rlimits: list[Rlimit] = Factory(list)
    no_new_privileges: bool = False
    # None: config.json has no "capabilities" (runc then leaves the process
    # with the full set root has); otherwise exactly the listed sets.
    capabilities: Capabilities | None = None
    apparmor_profile: str = ""
    selinux_label: str = ""
    oom_score_adj: int | None = None

    def env_dict(self) -> dict[str, str]:
        """The environment as a dict (a later duplicate wins)."""
        out: dict[str, str] = {}
        for entry in self.env:
            name, _, value = entry.partition("=")
            out[name] = value
        return out


class Root(Record):
    path: str                          # absolute, normalised
    readonly: bool = False


class Mount(Record):
    """A mount.  ``type`` is normalised to ``"bind"`` when the options hold
    ``bind``/``rbind`` (whatever type the file gave, e.g. ``"none"``);
    a relative bind ``source`` is resolved against the bundle directory.
    ``options`` is the list as given; ``readonly``/``bind``/``recursive`` are
    parsed from it and ``extra`` holds every other option in order."""
    destination: str                   # absolute, normalised
    type: str
    source: str = ""
    options: list[str] = Factory(list)
    readonly: bool = False
    bind: bool = False
    recursive: bool = False            # rbind
    extra: list[str] = Factory(list)


class Namespace(Record):
    type: str                          # one of NAMESPACE_TYPES
    path: str | None = None            # join this namespace instead of creating one


class IDMapping(Record):
    container_id: int
    host_id: int
    size: int


class Device(Record):
    path: str
    type: str                          # c, b, u or p
    major: int = 0
    minor: int = 0
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


class Linux(Record):
    namespaces: list[Namespace] = Factory(list)
    uid_mappings: list[IDMapping] = Factory(list)
    gid_mappings: list[IDMapping] = Factory(list)
    resources: dict[str, Any] | None = None     # raw
    cgroups_path: str = ""
    sysctl: dict[str, str] = Factory(dict)
    masked_paths: list[str] = Factory(list)
    readonly_paths: list[str] = Factory(list)
    seccomp: dict[str, Any] | None = None       # raw
    devices: list[Device] = Factory(list)

    def namespace(self, ns_type: str) -> Namespace | None:
        for ns in self.namespaces:
            if ns.type == ns_type:
                return ns
        return None


class Spec(Record):
    oci_version: str
    process: Process
    root: Root
    hostname: str = ""
    domainname: str = ""
    mounts: list[Mount] = Factory(list)
    annotations: dict[str, str] = Factory(dict)
    linux: Linux = Factory(Linux)
    bundle: str = ""                                   # absolute bundle directory
    raw: dict[str, Any] = Factory(dict)   # the parsed JSON


def has_network_namespace(spec: Spec) -> bool:
    """Whether the spec lists a network namespace (new, or joined by path)."""
    return spec.linux.namespace("network") is not None


def network_namespace_path(spec: Spec) -> str | None:
    """The ``path`` of the network namespace entry, None when there is no
    such entry or it has no path (a new namespace); see has_network_namespace."""
    ns = spec.linux.namespace("network")
    return ns.path if ns is not None else None


# --- validation ---------------------------------------------------------------------

def _fail(field: str, msg: str) -> SpecError:
    prefix = f"{CONFIG_NAME}: {field}: " if field else f"{CONFIG_NAME}: "
    return SpecError(prefix + msg, field)


def _q(value: Any) -> str:
    """A value quoted for a message: strings in double quotes."""
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _obj(d: dict, key: str, field: str, required: bool = False) -> dict | None:
    v = d.get(key)
    if v is None:
        if required:
            raise _fail(field, "missing")
        return None
    if not isinstance(v, dict):
        raise _fail(field, "must be an object")
    return v


def _str(d: dict, key: str, field: str, required: bool = False, default: str = "") -> str:
    if key not in d or d[key] is None:
        if required:
            raise _fail(field, "missing")
        return default
    v = d[key]
    if not isinstance(v, str):
        raise _fail(field, "must be a string")
    if "\x00" in v:
        raise _fail(field, "must not contain a NUL byte")
    return v


def _bool(d: dict, key: str, field: str, default: bool = False) -> bool:
    if key not in d or d[key] is None:
        return default
    v = d[key]
    if not isinstance(v, bool):
        raise _fail(field, "must be true or false")
    return v


def _int(d: dict, key: str, field: str, lo: int, hi: int, required: bool = False,
         default: int | None = None) -> int | None:
    if key not in d or d[key] is None:
        if required:
            raise _fail(field, "missing")
        return default
    v = d[key]
    if not _is_int(v):
        raise _fail(field, "must be an integer")
    if not lo <= v <= hi:
        raise _fail(field, f"{v} out of range [{lo}, {hi}]")
    return v


def _list(d: dict, key: str, field: str, required: bool = False) -> list:
    if key not in d or d[key] is None:
        if required:
            raise _fail(field, "missing")
        return []
    v = d[key]
    if not isinstance(v, list):
        raise _fail(field, "must be a list")
    return v


def _str_list(d: dict, key: str, field: str) -> list[str]:
    items = _list(d, key, field)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise _fail(f"{field}[{i}]", "must be a string")
        if "\x00" in item:
            raise _fail(f"{field}[{i}]", "must not contain a NUL byte")
    return list(items)


def _abs_path(value: str, field: str) -> str:
    if not value.startswith("/"):
        raise _fail(field, f"must be an absolute path (got {_q(value)})")
    return os.path.normpath(value)


def _str_dict(d: dict, key: str, field: str) -> dict[str, str]:
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _fail(field, "must be an object of strings")
    for k, val in v.items():
        if not isinstance(val, str):
            raise _fail(f"{field}[{json.dumps(k)}]", "must be a string")
    return dict(v)


def _parse_user(d: dict | None, field: str) -> User:
    if d is None:
        return User()
    uid = _int(d, "uid", f"{field}.uid", 0, UINT32_MAX, default=0)
    gid = _int(d, "gid", f"{field}.gid", 0, UINT32_MAX, default=0)
    umask = _int(d, "umask", f"{field}.umask", 0, 0o777)
    gids = _list(d, "additionalGids", f"{field}.additionalGids")
    for i, g in enumerate(gids):
        if not _is_int(g) or not 0 <= g <= UINT32_MAX:
            raise _fail(f"{field}.additionalGids[{i}]", "must be an integer in [0, 4294967295]")
    return User(uid=uid, gid=gid, umask=umask, additional_gids=list(gids))


def _parse_rlimits(d: dict, field: str) -> list[Rlimit]:
    out: list[Rlimit] = []
    seen: set[str] = set()
    for i, item in enumerate(_list(d, "rlimits", field)):
        f = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise _fail(f, "must be an object")
        name = _str(item, "type", f"{f}.type", required=True)
        if name not in RLIMITS:
            raise _fail(f"{f}.type", f"unknown rlimit {_q(name)}")
        if name in seen:
            raise _fail(f"{f}.type", f"duplicate rlimit {_q(name)}")
        seen.add(name)
        soft = _int(item, "soft", f"{f}.soft", 0, UINT64_MAX, required=True)
        hard = _int(item, "hard", f"{f}.hard", 0, UINT64_MAX, required=True)
        if soft > hard:
            raise _fail(f, f"soft limit {soft} exceeds hard limit {hard}")
        out.append(Rlimit(name, soft, hard))
    return out


def _parse_capabilities(d: dict | None, field: str) -> Capabilities | None:
    if d is None:
        return None
    sets: dict[str, list[str]] = {}
    for name in CAP_SETS:
        caps = _str_list(d, name, f"{field}.{name}")
        for i, cap in enumerate(caps):
            if cap not in CAPABILITIES:
                raise _fail(f"{field}.{name}[{i}]", f"unknown capability {_q(cap)}")
        sets[name] = caps
    return Capabilities(**sets)


def parse_process(d: Any, field: str = "process") -> Process:
    """Validate a ``process`` object (also the file of ``exec --process``)."""
    if not isinstance(d, dict):
        raise _fail(field, "must be an object")
    args = d.get("args")
    if (not isinstance(args, list) or not args
            or not all(isinstance(a, str) and "\x00" not in a for a in args)):
        raise _fail(f"{field}.args", "must be a non-empty list of strings")
    if args[0] == "":
        raise _fail(f"{field}.args[0]", "must not be empty")
    env = _str_list(d, "env", f"{field}.env")
    for i, entry in enumerate(env):
        if not _ENV_RE.match(entry):
            raise _fail(f"{field}.env[{i}]", f"must look like NAME=VALUE (got {_q(entry)})")
    cwd = _str(d, "cwd", f"{field}.cwd", required=True)
    cwd = _abs_path(cwd, f"{field}.cwd")
    return Process(
        args=list(args),
        cwd=cwd,
        env=env,
        terminal=_bool(d, "terminal", f"{field}.terminal"),
        user=_parse_user(_obj(d, "user", f"{field}.user"), f"{field}.user"),
        rlimits=_parse_rlimits(d, f"{field}.rlimits"),
        no_new_privileges=_bool(d, "noNewPrivileges", f"{field}.noNewPrivileges"),
        capabilities=_parse_capabilities(_obj(d, "capabilities", f"{field}.capabilities"),
                                         f"{field}.capabilities"),
        apparmor_profile=_str(d, "apparmorProfile", f"{field}.apparmorProfile"),
        selinux_label=_str(d, "selinuxLabel", f"{field}.selinuxLabel"),
        oom_score_adj=_int(d, "oomScoreAdj", f"{field}.oomScoreAdj", -1000, 1000),
    )


def _parse_root(d: dict, bundle: str, check_paths: bool) -> Root:
    root = _obj(d, "root", "root", required=True)
    assert root is not None
    path = _str(root, "path", "root.path", required=True)
    if not path:
        raise _fail("root.path", "must not be empty")
    full = os.path.normpath(os.path.join(bundle, path))
    if check_paths:
        if not os.path.exists(full):
            raise _fail("root.path", f"{full} does not exist")
        if not os.path.isdir(full):
            raise _fail("root.path", f"{full} is not a directory")
    return Root(path=full, readonly=_bool(root, "readonly", "root.readonly"))


def _parse_mount(item: Any, f: str, bundle: str, check_paths: bool) -> Mount:
    if not isinstance(item, dict):
        raise _fail(f, "must be an object")
    dest = _abs_path(_str(item, "destination", f"{f}.destination", required=True),
                     f"{f}.destination")
    mtype = _str(item, "type", f"{f}.type")
    source = _str(item, "source", f"{f}.source")
    options = _str_list(item, "options", f"{f}.options")
    readonly = bind = recursive = False
    extra: list[str] = []
    for opt in options:
        if opt == "ro":
            readonly = True
        elif opt == "rw":
            readonly = False
        elif opt in ("bind", "rbind"):
            bind = True
            recursive = recursive or opt == "rbind"
        else:
            extra.append(opt)
    if mtype == "bind":
        bind = True
    if bind:
        mtype = "bind"
        if not source:
            raise _fail(f"{f}.source", "a bind mount needs a source")
        source = os.path.normpath(os.path.join(bundle, source))
        if check_paths and not os.path.exists(source):
            raise _fail(f"{f}.source", f"{source} does not exist")
    elif not mtype:
        raise _fail(f"{f}.type", "missing (and the options have no bind/rbind)")
    elif mtype not in MOUNT_TYPES:
        raise _fail(f"{f}.type", f"unsupported mount type {_q(mtype)} "
                                 f"(supported: {', '.join(MOUNT_TYPES)})")
    return Mount(destination=dest, type=mtype, source=source, options=options,
                 readonly=readonly, bind=bind, recursive=recursive, extra=extra)


def _parse_id_mappings(d: dict, key: str, field: str) -> list[IDMapping]:
    out = []
    for i, item in enumerate(_list(d, key, field)):
        f = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise _fail(f, "must be an object")
        cid = _int(item, "containerID", f"{f}.containerID", 0, UINT32_MAX, required=True)
        hid = _int(item, "hostID", f"{f}.hostID", 0, UINT32_MAX, required=True)
        size = _int(item, "size", f"{f}.size", 1, UINT32_MAX, required=True)
        out.append(IDMapping(cid, hid, size))
    return out


def _parse_devices(d: dict, field: str) -> list[Device]:
    out = []
    for i, item in enumerate(_list(d, "devices", field)):
        f = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise _fail(f, "must be an object")
        path = _abs_path(_str(item, "path", f"{f}.path", required=True), f"{f}.path")
        dtype = _str(item, "type", f"{f}.type", required=True)
        if dtype not in DEVICE_TYPES:
            raise _fail(f"{f}.type", f"unknown device type {_q(dtype)} (c, b, u or p)")
        need = dtype != "p"
        major = _int(item, "major", f"{f}.major", 0, (1 << 32) - 1, required=need, default=0)
        minor = _int(item, "minor", f"{f}.minor", 0, (1 << 32) - 1, required=need, default=0)
        out.append(Device(
            path=path, type=dtype, major=major, minor=minor,
            file_mode=_int(item, "fileMode", f"{f}.fileMode", 0, 0o7777),
            uid=_int(item, "uid", f"{f}.uid", 0, UINT32_MAX),
            gid=_int(item, "gid", f"{f}.gid", 0, UINT32_MAX)))
    return out


def _parse_linux(d: dict | None) -> Linux:
    if d is None:
        return Linux()
    namespaces: list[Namespace] = []
    seen: set[str] = set()
    for i, item in enumerate(_list(d, "namespaces", "linux.namespaces")):
        f = f"linux.namespaces[{i}]"
        if not isinstance(item, dict):
            raise _fail(f, "must be an object")
        ns_type = _str(item, "type", f"{f}.type", required=True)
        if ns_type not in NAMESPACE_TYPES:
            raise _fail(f"{f}.type", f"unknown namespace {_q(ns_type)}")
        if ns_type in seen:
            raise _fail(f"{f}.type", f"duplicate namespace {_q(ns_type)}")
        seen.add(ns_type)
        path = _str(item, "path", f"{f}.path")
        namespaces.append(Namespace(ns_type, _abs_path(path, f"{f}.path") if path else None))
    resources = _obj(d, "resources", "linux.resources")
    seccomp = _obj(d, "seccomp", "linux.seccomp")
    masked = [_abs_path(p, f"linux.maskedPaths[{i}]")
              for i, p in enumerate(_str_list(d, "maskedPaths", "linux.maskedPaths"))]
    ro = [_abs_path(p, f"linux.readonlyPaths[{i}]")
          for i, p in enumerate(_str_list(d, "readonlyPaths", "linux.readonlyPaths"))]
    return Linux(
        namespaces=namespaces,
        uid_mappings=_parse_id_mappings(d, "uidMappings", "linux.uidMappings"),
        gid_mappings=_parse_id_mappings(d, "gidMappings", "linux.gidMappings"),
        resources=dict(resources) if resources is not None else None,
        cgroups_path=_str(d, "cgroupsPath", "linux.cgroupsPath"),
        sysctl=_str_dict(d, "sysctl", "linux.sysctl"),
        masked_paths=masked,
        readonly_paths=ro,
        seccomp=dict(seccomp) if seccomp is not None else None,
        devices=_parse_devices(d, "linux.devices"),
    )


def _host_or_domain(d: dict, key: str) -> str:
    value = _str(d, key, key)
    if len(value.encode()) > 64:
        raise _fail(key, "longer than 64 bytes")
    return value


def parse_spec(data: Any, bundle_dir: str, check_paths: bool = True) -> Spec:
    """Validate an already-decoded config.json object.  With ``check_paths``
    (the default), ``root.path`` and bind-mount sources must exist."""
    if not isinstance(data, dict):
        raise _fail("", "must contain a JSON object")
    bundle = os.path.normpath(os.path.abspath(bundle_dir))
    version = _str(data, "ociVersion", "ociVersion", required=True)
    if not _VERSION_RE.match(version):
        raise _fail("ociVersion", f"unsupported version {_q(version)} (1.x.y expected)")
    process = _obj(data, "process", "process", required=True)
    mounts = [_parse_mount(item, f"mounts[{i}]", bundle, check_paths)
              for i, item in enumerate(_list(data, "mounts", "mounts"))]
    return Spec(
        oci_version=version,
        process=parse_process(process),
        root=_parse_root(data, bundle, check_paths),
        hostname=_host_or_domain(data, "hostname"),
        domainname=_host_or_domain(data, "domainname"),
        mounts=mounts,
        annotations=_str_dict(data, "annotations", "annotations"),
        linux=_parse_linux(_obj(data, "linux", "linux")),
        bundle=bundle,
        raw=data,
    )


def read_config(bundle_dir: str) -> Any:
    """The decoded JSON of ``BUNDLE/config.json`` (no validation)."""
    if not os.path.isdir(bundle_dir):
        if os.path.exists(bundle_dir):
            raise SpecError(f"bundle {bundle_dir}: not a directory")
        raise SpecError(f"bundle {bundle_dir}: no such directory")
    path = os.path.join(bundle_dir, CONFIG_NAME)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise SpecError(f"bundle {bundle_dir}: {CONFIG_NAME} not found") from None
    except OSError as exc:
        raise SpecError(f"bundle {bundle_dir}: cannot read {CONFIG_NAME}: "
                        f"{exc.strerror or exc}") from None
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail("", f"not valid UTF-8 (byte offset {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail("", f"invalid JSON at line {exc.lineno} column {exc.colno}: "
                        f"{exc.msg}") from None


def load_spec(bundle_dir: str, check_paths: bool = True) -> Spec:
    """Read and validate ``BUNDLE/config.json``; ``root.path`` comes back
    absolute and normalised.  Raises SpecError naming the field at fault."""
    return parse_spec(read_config(bundle_dir), bundle_dir, check_paths)


# --- the starter config -------------------------------------------------------------

_DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

_MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
    "/proc/scsi",
]
_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def default_spec(rootless: bool = False, args: Iterable[str] = ("sh",)) -> dict[str, Any]:
    """The config.json ``pysc spec`` writes (the shape of ``runc spec``).
    ``rootless`` gives the ``runc spec --rootless`` variant: a user namespace
    mapping root to the caller's uid/gid, no network namespace, /sys as a
    read-only rbind of the host's, no uid=/gid= mount options, no resources."""
    nofile = 1024
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]
    namespaces = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")]
    linux: dict[str, Any] = {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": namespaces,
        "maskedPaths": list(_MASKED_PATHS),
        "readonlyPaths": list(_READONLY_PATHS),
    }
    if rootless:
        linux["namespaces"] = [ns for ns in namespaces if ns["type"] not in ("network", "user")]
        linux["namespaces"].append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
        del linux["resources"]
        fixed = []
        for m in mounts:
            if m["destination"] == "/sys":
                fixed.append({"destination": "/sys", "type": "none", "source": "/sys",
                              "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
                continue
            if "options" in m:
                m = dict(m, options=[o for o in m["options"]
                                     if not o.startswith(("uid=", "gid="))])
            fixed.append(m)
        mounts = fixed
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {s: list(_DEFAULT_CAPS)
                             for s in ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "pysc",
        "mounts": mounts,
        "linux": linux,
    }


def write_default_spec(bundle_dir: str, rootless: bool = False,
                       args: Iterable[str] = ("sh",)) -> str:
    """Write ``BUNDLE/config.json`` from default_spec(); refuses to replace an
    existing one.  Returns the path written."""
    path = os.path.join(bundle_dir, CONFIG_NAME)
    if os.path.lexists(path):
        raise SpecError(f"{CONFIG_NAME} already exists")
    text = json.dumps(default_spec(rootless, args), indent="\t") + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise SpecError(f"{CONFIG_NAME} already exists") from None
    except OSError as exc:
        raise SpecError(f"cannot write {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path
