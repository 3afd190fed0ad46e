"""A busybox OCI image, built locally and deterministically (no network).

``build_image(path)`` writes an OCI image layout as one uncompressed tar
archive, the format ``ctr images import`` reads:

    oci-layout                     {"imageLayoutVersion": "1.0.0"}
    index.json                     one manifest, named IMAGE_NAME
    blobs/sha256/<layer>           bin/busybox, bin/<applet> -> busybox,
                                   etc/passwd, etc/group, tmp/ (1777),
                                   proc/ sys/ dev/ root/ (mount points)
    blobs/sha256/<config>          Cmd ["sh"], Env [PATH=...], amd64/linux
    blobs/sha256/<manifest>

Every tar member has mtime 0, uid/gid 0 and no user/group names, and the
members are sorted, so the same busybox binary always gives the same bytes
(hence the same digests).  Run as a script to write the tarball:
``python3 tests/e2e/image.py OUT.tar``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile

BUSYBOX = "/bin/busybox"

#: the name containerd gives the image (annotation io.containerd.image.name)
IMAGE_NAME = "docker.io/library/pysc-busybox:e2e"
REF_NAME = "e2e"

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: applets linked even when `busybox --list` is unavailable
BASE_APPLETS = ("sh", "echo", "cat", "ls", "sleep", "uname", "id", "hostname", "true", "false",
                "wc", "ps", "env", "pwd", "mkdir", "touch", "kill", "readlink", "stat", "test",
                "grep", "tr", "head", "tail", "sed", "rm", "printf", "tty", "stty")

PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\n"

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"

_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def applets(busybox: str = BUSYBOX) -> list[str]:
    """The applets busybox offers (sorted), at least BASE_APPLETS."""
    names = set(BASE_APPLETS)
    try:
        out = subprocess.run([busybox, "--list"], capture_output=True, text=True, timeout=10).stdout
        names.update(n.strip() for n in out.split() if n.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    names.discard("busybox")
    return sorted(n for n in names if n and "/" not in n)


def _info(name: str, type_: bytes, mode: int, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mode = mode
    ti.size = size
    ti.linkname = linkname
    ti.mtime = 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for ti, data in sorted(members, key=lambda m: m[0].name):
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def layer_tar(busybox: str = BUSYBOX) -> bytes:
    with open(busybox, "rb") as f:
        bb = f.read()
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for d, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("proc", 0o555),
                    ("sys", 0o555), ("dev", 0o755), ("root", 0o700)):
        members.append((_info(d + "/", tarfile.DIRTYPE, mode), None))
    members.append((_info("bin/busybox", tarfile.REGTYPE, 0o755, len(bb)), bb))
    for a in applets(busybox):
        members.append((_info("bin/" + a, tarfile.SYMTYPE, 0o777, linkname="busybox"), None))
    members.append((_info("etc/passwd", tarfile.REGTYPE, 0o644, len(PASSWD)), PASSWD))
    members.append((_info("etc/group", tarfile.REGTYPE, 0o644, len(GROUP)), GROUP))
    return _tar(members)


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def image_archive(busybox: str = BUSYBOX) -> bytes:
    """The whole OCI image layout as tar bytes."""
    arch = _ARCH.get(platform.machine(), platform.machine())
    layer_digest, layer = _blob(layer_tar(busybox))
    config = {
        "architecture": arch,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"], "Env": [PATH_ENV], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "pysc tests/e2e/image.py"}],
    }
    config_digest, config_bytes = _blob(_json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": MT_LAYER, "digest": layer_digest, "size": len(layer)}],
    }
    manifest_digest, manifest_bytes = _blob(_json(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": MT_INDEX,
        "manifests": [{
            "mediaType": MT_MANIFEST, "digest": manifest_digest, "size": len(manifest_bytes),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": IMAGE_NAME,
                            "org.opencontainers.image.ref.name": REF_NAME},
        }],
    }
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_info("blobs/", tarfile.DIRTYPE, 0o755), None),
        (_info("blobs/sha256/", tarfile.DIRTYPE, 0o755), None),
    ]
    for name, data in (("oci-layout", _json({"imageLayoutVersion": "1.0.0"})),
                       ("index.json", _json(index)),
                       ("blobs/sha256/" + layer_digest[7:], layer),
                       ("blobs/sha256/" + config_digest[7:], config_bytes),
                       ("blobs/sha256/" + manifest_digest[7:], manifest_bytes)):
        members.append((_info(name, tarfile.REGTYPE, 0o644, len(data)), data))
    return _tar(members)


def build_image(path: str, busybox: str = BUSYBOX) -> str:
    """Write the image tarball to PATH (atomically); returns IMAGE_NAME."""
    data = image_archive(busybox)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return IMAGE_NAME


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT.tar")
    print(build_image(sys.argv[1]))
