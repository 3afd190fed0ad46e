"""The control protocol and its server thread (core/control.py), without a sandbox."""
from __future__ import annotations

import threading
import types

import pytest

from pysc.core import control


class FakePlatform:
    def __init__(self):
        self.signals = []

    def signal_processes(self, sig, all_, pid):
        self.signals.append((sig, all_, pid))

    def usage(self):
        return 7, 4096


def fake_sandbox():
    kernel = types.SimpleNamespace(thread_groups={})
    return types.SimpleNamespace(kernel=kernel, platform=FakePlatform(), release=lambda: None)


def test_messages_round_trip_and_garbage_is_refused():
    msg = control.Kill(15, True, 3)
    assert control.decode(control.encode(msg)) == msg
    for bad in (b"", b"\xc1", control.encode(control.Ok())[:-1] + b"\x00"):
        with pytest.raises(control.ControlError):
            control.decode(bad)


def test_requests_before_attach_wait_and_are_answered(tmp_path):
    address = f"ipc://{tmp_path}/c.sock"
    states = []
    server = control.ControlServer(address, states.append)
    server.start()
    server.wait_bound()
    replies = []
    client = threading.Thread(target=lambda: replies.append(control.request(address, control.Start())))
    client.start()
    client.join(0.2)
    assert not replies  # queued until the sandbox is attached
    sb = fake_sandbox()
    server.attach(sb)
    client.join(10)
    assert replies == [control.Ok()] and states == ["running"]
    assert control.request(address, control.Kill(9, True)) == control.Ok()
    assert sb.platform.signals == [(9, True, 0)]
    stats = control.request(address, control.Stats()).stats
    assert stats["cpu"]["usage"]["total"] == 7 and stats["pids"]["current"] == 0
    server.close()
    assert not server.thread.is_alive()
    with pytest.raises(control.ControlError, match="does not answer"):
        control.request(address, control.Ps(), timeout=0.3)


def test_a_socket_that_cannot_be_bound_is_reported(tmp_path):
    server = control.ControlServer(f"ipc://{tmp_path}/missing/dir/c.sock", lambda s: None)
    server.start()
    with pytest.raises(control.ControlError, match="control socket"):
        server.wait_bound()
    server.close()
    server.thread.join(10)
    assert not server.thread.is_alive()


def test_close_at_once_ends_the_thread(tmp_path):
    """close() may come while the thread still imports zmq: it must end, not hang."""
    server = control.ControlServer(f"ipc://{tmp_path}/c.sock", lambda s: None)
    server.start()
    server.close()
    server.thread.join(10)
    assert not server.thread.is_alive()
