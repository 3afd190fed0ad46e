"""A container's record under --root: ROOT/ID/state.json, and its lifecycle."""
from __future__ import annotations

import json
import os
import re
import shutil
import time

from pysc.core.record import Factory, Record

OCI_VERSION = "1.0.2"
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


class StateError(Exception):
    """A clear message for the user; nothing was changed."""


class ContainerState(Record):
    id: str
    bundle: str
    pid: int = 0
    status: str = "creating"  # creating, created, running, paused, stopped
    created: str = ""
    annotations: dict = Factory(dict)
    exit_status: int | None = None
    rootless: bool = False
    sandbox: str = ""  # a container that joined a pod sandbox: that sandbox's id
    vpid: int = 0  # ... and its init's pid inside the sandbox, once started
    error: str = ""  # ... and why it could not start

    def oci(self) -> dict:
        """The OCI state as `pysc state` prints it."""
        out = {"ociVersion": OCI_VERSION, "id": self.id, "pid": self.pid if self.status != "stopped" else 0,
               "status": self.status, "bundle": self.bundle, "rootfs": "", "created": self.created,
               "owner": ""}
        if self.annotations:
            out["annotations"] = self.annotations
        return out


def container_dir(root: str, cid: str) -> str:
    return os.path.join(root, cid)


def socket_dir(root: str, cid: str) -> str:
    """Where a container's unix sockets live: a short name under --root, since
    a socket path may not exceed 107 bytes and ids can be 64 characters."""
    return os.path.join(root, ".s", f"{fnv1a_64(cid.encode()):016x}")


def fnv1a_64(data: bytes) -> int:
    """The 64-bit FNV-1a hash: hashlib would load OpenSSL, about 1 MiB in
    every sandbox process, for one short name."""
    h = 0xcbf29ce484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def control_socket(root: str, cid: str) -> str:
    return os.path.join(socket_dir(root, cid), "control.sock")


def exec_socket(root: str, cid: str) -> str:
    return os.path.join(socket_dir(root, cid), "exec.sock")


def start_fifo(root: str, cid: str) -> str:
    """Where `pysc start` tells a pod's container to start."""
    return os.path.join(socket_dir(root, cid), "start")


def check_id(cid: str) -> None:
    if not ID_RE.match(cid):
        raise StateError(f"invalid container id {cid!r}: use letters, digits and _.+- (up to 128)")


def reserve(root: str, cid: str, bundle: str, annotations: dict) -> ContainerState:
    """Claim ``cid`` (mkdir is atomic): a second create of the same id fails."""
    check_id(cid)
    os.makedirs(root, mode=0o711, exist_ok=True)
    try:
        os.mkdir(container_dir(root, cid), 0o711)
    except FileExistsError:
        raise StateError(f"container {cid!r} already exists") from None
    shutil.rmtree(socket_dir(root, cid), ignore_errors=True)
    os.makedirs(socket_dir(root, cid), mode=0o700)
    st = ContainerState(cid, bundle, created=time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
                        annotations=dict(annotations))
    save(root, st)
    return st


def save(root: str, st: ContainerState) -> None:
    path = os.path.join(container_dir(root, st.id), "state.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(st.asdict(), f)
    os.replace(tmp, path)


def load(root: str, cid: str) -> ContainerState:
    """The container's state, with 'stopped' when its sandbox process is gone."""
    check_id(cid)
    try:
        with open(os.path.join(container_dir(root, cid), "state.json")) as f:
            st = ContainerState(**json.load(f))
    except FileNotFoundError:
        raise StateError(f"container {cid!r} does not exist") from None
    except (ValueError, TypeError) as e:
        raise StateError(f"container {cid!r}: unreadable state ({e})") from None
    if st.status not in ("stopped", "creating") and not pid_alive(st.pid):
        st.status = "stopped"
    return st


def remove(root: str, cid: str) -> None:
    shutil.rmtree(socket_dir(root, cid), ignore_errors=True)
    shutil.rmtree(container_dir(root, cid), ignore_errors=True)


def list_ids(root: str) -> list[str]:
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [n for n in names if ID_RE.match(n) and os.path.exists(os.path.join(root, n, "state.json"))]


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False
