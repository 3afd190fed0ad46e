"""The control protocol and its server thread (core/control.py), without a sandbox."""
from __future__ import annotations

import socket
import types

import pytest

from pysc.core import control


class FakePlatform:
    def __init__(self):
        self.signals = []
        self.released = False

    def signal_processes(self, sig, all_, pid):
        self.signals.append((sig, all_, pid))

    def pause(self):
        self.signals.append("pause")

    def usage(self):
        return 7, 4096


def fake_sandbox():
    platform = FakePlatform()
    kernel = types.SimpleNamespace(thread_groups={})

    def release():
        platform.released = True
    return types.SimpleNamespace(kernel=kernel, platform=platform, release=release)


@pytest.fixture
def served(tmp_path):
    path = str(tmp_path / "control.sock")
    states = []
    sb = fake_sandbox()
    server = control.ControlServer(path, sb, states.append)
    server.start()
    yield path, sb, states
    server.close()
    assert not server.thread.is_alive()


def test_messages_round_trip_and_garbage_is_refused():
    msg = control.Kill(15, True, 3)
    assert control.decode(control.encode(msg)) == msg
    for bad in (b"", b"\xc1", control.encode(control.Ok())[:-1] + b"\x00"):
        with pytest.raises(control.ControlError):
            control.decode(bad)


def test_requests_are_answered(served):
    path, sb, states = served
    assert control.request(path, control.Start()) == control.Ok()
    assert sb.platform.released and states == ["running"]
    assert control.request(path, control.Kill(9, True)) == control.Ok()
    assert sb.platform.signals == [(9, True, 0)]
    stats = control.request(path, control.Stats()).stats
    assert stats["cpu"]["usage"]["total"] == 7 and stats["memory"]["usage"]["usage"] == 4096
    assert control.request(path, control.Ps()).processes == []


def test_garbage_gets_an_error_and_the_server_goes_on(served):
    path, sb, _ = served
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(b"\x93garbage")
        s.shutdown(socket.SHUT_WR)
        reply = control.decode(s.recv(65536))
    assert isinstance(reply, control.Error) and "bad control message" in reply.message
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)  # and leaves without a word
    assert control.request(path, control.Pause()) == control.Ok()
    assert sb.platform.signals == ["pause"]


def test_a_request_to_no_sandbox_is_a_clear_error(tmp_path):
    with pytest.raises(control.ControlError, match="does not answer"):
        control.request(str(tmp_path / "none.sock"), control.Ps(), timeout=1)


def test_a_socket_that_cannot_be_bound_is_reported(tmp_path):
    with pytest.raises(control.ControlError, match="control socket"):
        control.ControlServer(str(tmp_path / "missing" / "c.sock"), fake_sandbox(), lambda s: None)
