"""The system's python3 inside the sandbox: threads, subprocesses, fork-based
multiprocessing, select/poll/epoll, AF_UNIX, TCP and UDP sockets, file locks,
mmap, signals.  Each test is one script whose every output line names what it
checked; it runs inside and natively and both must print the same and exit 0.
(What legitimately differs -- fd numbers, pids, ports -- is never printed.)"""
from __future__ import annotations

import textwrap

import pytest

from .conftest import PYTHON, assert_same, need, run_native, run_pysc, show


def py(platform, source: str, timeout: int = 30, extra_flags=(), expect_lines=None):
    need(PYTHON)
    # A watchdog: a script that hangs prints where (on stderr) and exits
    # before the harness has to kill it.
    source = (f"import faulthandler; faulthandler.dump_traceback_later({timeout - 8}, exit=True)\n"
              + textwrap.dedent(source))
    native = run_native(PYTHON, "-c", source, timeout=timeout)
    assert native.returncode == 0, f"the script itself is wrong (native run)\n{show(native)}"
    if expect_lines is not None:
        assert len(native.stdout.splitlines()) == expect_lines, show(native)
    inside = run_pysc(platform, PYTHON, "-c", source, timeout=timeout, extra_flags=extra_flags)
    assert_same(inside, native)
    return inside


def test_exec_from_a_thread(platform):
    """A thread other than the leader calls execve: the other threads end and
    the new image runs with the process's pid, as on Linux."""
    py(platform, """
        import os, sys, threading, time
        pid = os.getpid()
        code = "import os, threading; print('pid kept', os.getpid() == %d, 'threads', threading.active_count())"
        threading.Thread(target=lambda: os.execv(sys.executable, [sys.executable, "-c", code % pid])).start()
        time.sleep(15)
        print("not reached")
    """)


def test_threads(platform):
    py(platform, """
        import threading, queue
        lock = threading.Lock()
        n = [0]
        def work():
            for _ in range(5000):
                with lock:
                    n[0] += 1
        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts: t.start()
        for t in ts: t.join()
        print("4 threads with a lock:", n[0])

        q = queue.Queue(maxsize=5)
        def producer():
            for i in range(200):
                q.put(i)
            q.put(None)
        threading.Thread(target=producer).start()
        total = 0
        while (x := q.get()) is not None:
            total += x
        print("bounded queue between threads:", total)

        cond = threading.Condition()
        state = {"ready": False}
        def waiter(out):
            with cond:
                cond.wait_for(lambda: state["ready"], timeout=20)
                out.append(state["ready"])
        out = []
        ws = [threading.Thread(target=waiter, args=(out,)) for _ in range(3)]
        for w in ws: w.start()
        with cond:
            state["ready"] = True
            cond.notify_all()
        for w in ws: w.join()
        print("condition notify_all:", out)

        ev = threading.Event()
        print("event wait timeout:", ev.wait(0.05))
        threading.Timer(0.05, ev.set).start()
        print("event set by timer:", ev.wait(20))
        local = threading.local()
        def tl(i, res):
            local.v = i
            res[i] = local.v
        res = {}
        ts = [threading.Thread(target=tl, args=(i, res)) for i in range(3)]
        for t in ts: t.start()
        for t in ts: t.join()
        print("thread-local:", sorted(res.items()))
    """)


def test_subprocess(platform):
    py(platform, """
        import subprocess, os, sys
        r = subprocess.run(["echo", "hi"], capture_output=True)
        print("echo hi:", r.returncode, r.stdout)
        r = subprocess.run(["sh", "-c", "echo err >&2; exit 3"], capture_output=True, text=True)
        print("stderr and status:", r.returncode, repr(r.stderr))
        r = subprocess.run("echo piped | tr a-z A-Z", shell=True, capture_output=True, text=True)
        print("shell pipeline:", repr(r.stdout))
        r = subprocess.run(["cat"], input=b"x" * 100000, capture_output=True)
        print("100k through cat:", len(r.stdout))
        p = subprocess.Popen(["sleep", "30"])
        p.terminate()
        print("terminated child:", p.wait(timeout=20))
        try:
            subprocess.run(["/nonexistent-pysc"])
        except FileNotFoundError as e:
            print("missing program:", type(e).__name__, e.errno)
        try:
            subprocess.run(["sleep", "5"], timeout=0.2)
        except subprocess.TimeoutExpired:
            print("timeout expired")
        out = subprocess.check_output([sys.executable, "-c", "import os; print(os.getppid() > 0)"])
        print("python child:", out)
        pid = os.fork()
        if pid == 0:
            os._exit(42)
        _, st = os.waitpid(pid, 0)
        print("fork/waitpid:", os.WEXITSTATUS(st))
    """)


def test_multiprocessing_fork(platform):
    py(platform, """
        import multiprocessing as mp

        def sq(x):
            return x * x

        def child(q, conn):
            q.put("from queue")
            conn.send(["from", "pipe"])
            conn.close()

        if __name__ == "__main__":
            ctx = mp.get_context("fork")
            with ctx.Pool(2) as pool:
                print("pool.map:", pool.map(sq, range(10)))
                print("apply_async:", pool.apply_async(sq, (12,)).get(timeout=30))
            q = ctx.Queue()
            a, b = ctx.Pipe()
            p = ctx.Process(target=child, args=(q, b))
            p.start()
            print("queue:", q.get(timeout=30))
            print("pipe:", a.recv())
            p.join(30)
            print("process exitcode:", p.exitcode)
            v = ctx.Value("i", 0)
            def inc(v):
                with v.get_lock():
                    v.value += 1
            ps = [ctx.Process(target=inc, args=(v,)) for _ in range(3)]
            for p in ps: p.start()
            for p in ps: p.join(30)
            print("shared value:", v.value)
    """, timeout=45)


def test_select_poll_epoll(platform):
    py(platform, """
        import os, select, socket

        def names(mask, prefix="EPOLL"):
            out = [n for n in dir(select) if n.startswith(prefix) and n not in
                   ("EPOLL_CLOEXEC", "EPOLLEXCLUSIVE", "EPOLLRDNORM", "EPOLLWRNORM", "EPOLLMSG",
                    "EPOLLRDBAND", "EPOLLWRBAND", "EPOLLONESHOT", "EPOLLET")
                   and getattr(select, n) & mask]
            return "|".join(sorted(out)) or "0"

        r, w = os.pipe()
        print("select pipe, empty:", select.select([r], [], [], 0) == ([], [], []))
        print("select pipe, writable:", select.select([], [w], [], 0)[1] == [w])
        os.write(w, b"x")
        print("select pipe, readable:", select.select([r], [], [], 0)[0] == [r])
        p = select.poll()
        p.register(r, select.POLLIN)
        print("poll pipe:", [(fd == r, ev) for fd, ev in p.poll(0)])
        os.read(r, 1)
        print("poll pipe drained:", p.poll(0))
        print("poll timeout 50ms:", p.poll(50))

        ep = select.epoll()
        ep.register(r, select.EPOLLIN)
        print("epoll empty:", ep.poll(0))
        os.write(w, b"yz")
        print("epoll readable:", [(fd == r, names(ev)) for fd, ev in ep.poll(1)])
        print("epoll level-triggered again:", [(fd == r, names(ev)) for fd, ev in ep.poll(0)])
        os.read(r, 2)
        print("epoll drained:", ep.poll(0))
        ep.modify(r, select.EPOLLIN | select.EPOLLET)
        os.write(w, b"a")
        print("epoll ET first:", len(ep.poll(0)))
        print("epoll ET second:", len(ep.poll(0)))
        os.write(w, b"b")
        print("epoll ET new data:", len(ep.poll(0)))
        os.close(w)
        print("pipe writer closed:", [(fd == r, names(ev)) for fd, ev in ep.poll(0)])
        ep.unregister(r)
        print("epoll unregistered:", ep.poll(0))
        os.close(r)

        a, b = socket.socketpair()
        print("select socketpair empty:", select.select([a], [], [], 0)[0] == [])
        b.send(b"ping")
        print("select socketpair readable:", select.select([a], [], [], 0)[0] == [a])
        ep2 = select.epoll()
        ep2.register(a.fileno(), select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP)
        print("epoll socketpair:", [names(ev) for fd, ev in ep2.poll(0)])
        a.recv(10)
        print("epoll socketpair drained:", [names(ev) for fd, ev in ep2.poll(0)])
        b.shutdown(socket.SHUT_WR)
        print("epoll peer shutdown(WR):", [names(ev) for fd, ev in ep2.poll(0)])
        b.close()
        print("epoll peer closed:", [names(ev) for fd, ev in ep2.poll(0)])
        ep2.close()
        a.close()

        d1, d2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        d1.send(b"one"); d1.send(b"two")
        print("dgram pair:", d2.recv(10), d2.recv(10))
        s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s1.send(b"rec1"); s1.send(b"rec2")
        print("seqpacket pair:", s2.recv(2), s2.recv(10))

        # A blocking epoll_wait/select woken by another thread.
        import threading, time
        r, w = os.pipe()
        ep3 = select.epoll()
        ep3.register(r, select.EPOLLIN)
        threading.Timer(0.1, os.write, (w, b"!")).start()
        print("epoll_wait woken by thread:", [(fd == r, names(ev)) for fd, ev in ep3.poll(20)])
        r2, w2 = os.pipe()
        threading.Timer(0.1, os.write, (w2, b"!")).start()
        print("select woken by thread:", select.select([r2], [], [], 20)[0] == [r2])
        t0 = time.monotonic()
        select.select([], [], [], 0.2)
        print("select timeout waited:", 0.15 < time.monotonic() - t0 < 10)
    """)


def test_unix_sockets(platform):
    py(platform, """
        import os, socket, threading, tempfile, array

        def serve(srv, n=1):
            for _ in range(n):
                c, _ = srv.accept()
                with c:
                    data = c.recv(100)
                    c.sendall(b"echo:" + data)

        d = tempfile.mkdtemp(dir="/tmp")
        path = os.path.join(d, "sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(5)
        print("path socket exists:", os.path.exists(path), oct(os.stat(path).st_mode >> 12))
        t = threading.Thread(target=serve, args=(srv,), daemon=True); t.start()
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(20)
        c.connect(path)
        c.sendall(b"hello")
        print("path socket:", c.recv(100))
        print("peer name:", c.getpeername() == path)
        c.close(); t.join(); srv.close()
        try:
            socket.socket(socket.AF_UNIX).connect(path + "-missing")
        except OSError as e:
            print("connect to missing path:", type(e).__name__)
        srv2 = socket.socket(socket.AF_UNIX)
        try:
            srv2.bind(path)
        except OSError as e:
            print("bind to existing path:", type(e).__name__)
        srv2.close()
        os.unlink(path)

        name = "\\0pysc-test-abstract-%d" % os.getpid()
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(name)
        srv.listen(5)
        t = threading.Thread(target=serve, args=(srv, 2), daemon=True); t.start()
        for msg in (b"abs1", b"abs2"):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.settimeout(20)
            c.connect(name)
            c.sendall(msg)
            print("abstract socket:", c.recv(100))
            c.close()
        t.join(); srv.close()

        # datagram socket on a path
        dpath = os.path.join(d, "dgram")
        ds = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ds.bind(dpath)
        dc = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        dc.sendto(b"datagram", dpath)
        print("dgram on path:", ds.recv(100))
        ds.close(); dc.close(); os.unlink(dpath)

        # SCM_RIGHTS: pass an fd to a forked child
        a, b = socket.socketpair()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            a.close()
            msg, fds, flags, addr = socket.recv_fds(b, 100, 1)
            os.write(fds[0], b"through passed fd")
            os._exit(0)
        b.close()
        socket.send_fds(a, [b"fd"], [w])
        os.close(w)
        os.waitpid(pid, 0)
        print("SCM_RIGHTS:", os.read(r, 100))
        cred = a.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        import struct
        print("SO_PEERCRED uid:", struct.unpack("3i", cred)[1] == os.getuid())
        os.rmdir(d)
    """)


@pytest.mark.parametrize("network", ["host", "none"])
def test_tcp_udp_loopback(platform, network):
    py(platform, """
        import socket, threading
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(5)
        port = srv.getsockname()[1]
        def serve():
            for _ in range(2):
                c, addr = srv.accept()
                with c:
                    buf = b""
                    while not buf.endswith(b"END"):
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                    c.sendall(b"echo:%d" % len(buf))
        t = threading.Thread(target=serve, daemon=True); t.start()
        for size in (10, 300000):
            c = socket.create_connection(("127.0.0.1", port), timeout=20)
            print("tcp peer is the server:", c.getpeername() == ("127.0.0.1", port))
            c.sendall(b"x" * size + b"END")
            c.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := c.recv(100):
                data += chunk
            print("tcp echo:", data)
            c.close()
        t.join(); srv.close()
        probe = socket.socket(); probe.bind(("127.0.0.1", 0)); free = probe.getsockname()[1]; probe.close()
        try:
            socket.create_connection(("127.0.0.1", free), timeout=20)
        except ConnectionRefusedError:
            print("connect to closed port: refused")

        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        uc = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        uc.settimeout(20); u.settimeout(20)
        uc.sendto(b"udp-ping", u.getsockname())
        data, addr = u.recvfrom(100)
        print("udp recv:", data, addr == uc.getsockname())
        u.sendto(b"udp-pong", addr)
        print("udp reply:", uc.recvfrom(100)[0])
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        print("TCP_NODELAY:", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0)
        print("SO_TYPE:", s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM)
    """, extra_flags=(f"--network={network}",))


def test_file_locks(platform):
    py(platform, """
        import os, fcntl, tempfile, time, select, signal
        fd, path = tempfile.mkstemp(dir="/tmp")
        os.write(fd, b"0123456789")
        r1, w1 = os.pipe()   # child -> parent
        r2, w2 = os.pipe()   # parent -> child

        def child():
            f = os.open(path, os.O_RDWR)
            res = []
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                res.append("flock: got it (wrong)")
            except BlockingIOError:
                res.append("flock: busy")
            try:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 0)
                res.append("lockf: got it (wrong)")
            except OSError as e:
                res.append("lockf: busy " + type(e).__name__)
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 5)
            res.append("lockf other range: ok")
            os.write(w1, ("|".join(res)).encode() + b"\\n")
            os.read(r2, 1)              # parent released its locks
            fcntl.flock(f, fcntl.LOCK_EX)
            fcntl.lockf(f, fcntl.LOCK_EX, 5, 0)
            os.write(w1, b"child: blocking locks acquired\\n")
            os._exit(0)                 # exits holding both locks

        fcntl.flock(fd, fcntl.LOCK_EX)
        fcntl.lockf(fd, fcntl.LOCK_EX, 5, 0)
        pid = os.fork()
        if pid == 0:
            child()
        print(os.read(r1, 200).decode().strip())
        fcntl.flock(fd, fcntl.LOCK_UN)
        fcntl.lockf(fd, fcntl.LOCK_UN, 5, 0)
        os.write(w2, b"x")
        print(os.read(r1, 200).decode().strip())
        _, st = os.waitpid(pid, 0)
        print("child status:", st)
        # The child's exit released its locks.
        for name, op in (("flock", lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)),
                         ("lockf", lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 5, 0))):
            try:
                op()
                print(f"{name} free after the holder exited")
            except OSError:
                print(f"{name} STILL HELD after the holder exited")
        fcntl.flock(fd, fcntl.LOCK_UN)
        fcntl.lockf(fd, fcntl.LOCK_UN, 0, 0)

        # A blocking lockf in the parent is granted when the holder exits.
        pid = os.fork()
        if pid == 0:
            f = os.open(path, os.O_RDWR)
            fcntl.lockf(f, fcntl.LOCK_EX)
            os.write(w1, b"L")
            time.sleep(0.3)
            os._exit(0)
        if not select.select([r1], [], [], 5)[0]:
            print("child could not take a free lock within 5 s")
            os.kill(pid, signal.SIGKILL)
        else:
            os.read(r1, 1)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                print("parent: got lock early (wrong)")
            except OSError:
                print("parent: busy while the child holds it")
            def too_long(s, f):
                raise TimeoutError
            signal.signal(signal.SIGALRM, too_long)
            signal.alarm(5)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX)
                print("parent: blocking lockf granted when the child exited")
            except TimeoutError:
                print("parent: blocking lockf NOT granted 5 s after the child's exit")
            signal.alarm(0)
        os.waitpid(pid, 0)
        os.unlink(path)
    """)


def test_filesystem_apis(platform):
    py(platform, """
        import os, tempfile, mmap, shutil, pathlib, stat
        with tempfile.TemporaryDirectory() as d:
            print("tempdir under /tmp:", d.startswith("/tmp/"))
            for n in ("b", "a", "c"):
                with open(os.path.join(d, n), "w") as f:
                    f.write(n * 3)
            os.mkdir(os.path.join(d, "sub"))
            os.symlink("a", os.path.join(d, "link"))
            with os.scandir(d) as it:
                ents = sorted((e.name, e.is_dir(), e.is_file(), e.is_symlink(),
                               e.is_file(follow_symlinks=False)) for e in it)
            print("scandir:", ents)
            print("listdir:", sorted(os.listdir(d)))
            print("walk:", sorted((os.path.relpath(p, d), sorted(ds), sorted(fs)) for p, ds, fs in os.walk(d)))

            path = os.path.join(d, "mapped")
            with open(path, "wb") as f:
                f.write(b"\\0" * 8192)
            with open(path, "r+b") as f:
                m = mmap.mmap(f.fileno(), 0)
                m[0:5] = b"hello"
                m[4096:4101] = b"world"
                m.flush()
                m.close()
            with open(path, "rb") as f:
                data = f.read()
            print("mmap write, read back:", data[:5], data[4096:4101], len(data))
            m = mmap.mmap(-1, 4096)
            m.write(b"anon")
            m.seek(0)
            print("anonymous mmap:", m.read(4))
            fd = os.open(path, os.O_RDWR)
            os.pwrite(fd, b"PW", 100)
            print("pread:", os.pread(fd, 2, 100))
            os.ftruncate(fd, 10)
            print("ftruncate:", os.fstat(fd).st_size)
            os.lseek(fd, 0, os.SEEK_END)
            os.write(fd, b"!")
            print("append at end:", os.pread(fd, 20, 0))
            os.close(fd)

            src = os.path.join(d, "sub")
            with open(os.path.join(src, "f"), "w") as f:
                f.write("deep")
            shutil.copytree(src, os.path.join(d, "copy"))
            print("copytree:", open(os.path.join(d, "copy", "f")).read())
            os.rename(os.path.join(d, "copy"), os.path.join(d, "moved"))
            os.replace(os.path.join(d, "a"), os.path.join(d, "b"))
            print("after rename/replace:", sorted(os.listdir(d)), open(os.path.join(d, "b")).read())
            os.utime(os.path.join(d, "b"), (1000000000, 1000000000))
            print("utime:", os.stat(os.path.join(d, "b")).st_mtime)
            os.chmod(os.path.join(d, "b"), 0o640)
            print("chmod:", oct(stat.S_IMODE(os.stat(os.path.join(d, "b")).st_mode)))
            print("readlink dangling:", os.readlink(os.path.join(d, "link")),
                  os.path.exists(os.path.join(d, "link")))
            p = pathlib.Path(d, "new.txt")
            p.write_text("pathlib")
            print("pathlib:", p.read_text(), p.stat().st_size)
            try:
                os.rmdir(os.path.join(d, "moved"))
            except OSError as e:
                print("rmdir non-empty:", type(e).__name__, e.errno)
            try:
                open(os.path.join(d, "nope", "x"))
            except FileNotFoundError as e:
                print("open missing:", e.errno)
            fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            print("openat via dir_fd:", os.stat("b", dir_fd=fd).st_size)
            os.close(fd)
            print("O_TMPFILE-free mkstemp:", os.path.dirname(tempfile.mkstemp(dir=d)[1]) == d)
        print("tempdir removed:", not os.path.exists(d))
    """)


def test_signals(platform):
    py(platform, """
        import os, signal, time, threading

        # Blocked before any thread exists, so that every thread blocks it: a
        # process-directed SIGUSR2 could otherwise go to a helper thread still
        # on its way out, and kill the process (as on Linux).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
        got = []
        signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
        os.kill(os.getpid(), signal.SIGUSR1)
        print("SIGUSR1 handled:", got == [signal.SIGUSR1])

        class Alarm(Exception):
            pass
        def on_alarm(s, f):
            raise Alarm()
        signal.signal(signal.SIGALRM, on_alarm)
        r, w = os.pipe()
        signal.alarm(1)
        t0 = time.monotonic()
        try:
            os.read(r, 1)
            print("read returned (wrong)")
        except Alarm:
            print("alarm interrupted a blocking read:", 0.5 < time.monotonic() - t0 < 10)

        # A handler that returns: the read is retried (PEP 475) and gets the data.
        calls = []
        signal.signal(signal.SIGALRM, lambda s, f: calls.append(s))
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        threading.Timer(0.6, os.write, (w, b"z")).start()
        print("read resumed after handler:", os.read(r, 1), len(calls))

        # The same with the system call restarted (SA_RESTART) at C level.
        signal.siginterrupt(signal.SIGALRM, False)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        threading.Timer(0.6, os.write, (w, b"y")).start()
        print("read restarted:", os.read(r, 1), len(calls))

        os.kill(os.getpid(), signal.SIGUSR2)
        print("pending while blocked:", signal.SIGUSR2 in signal.sigpending())
        print("sigwait:", signal.sigwait({signal.SIGUSR2}) == signal.SIGUSR2)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})

        chld = []
        signal.signal(signal.SIGCHLD, lambda s, f: chld.append(s))
        pid = os.fork()
        if pid == 0:
            os._exit(3)
        _, st = os.waitpid(pid, 0)
        time.sleep(0.05)
        print("SIGCHLD on child exit:", bool(chld), os.WEXITSTATUS(st))

        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            time.sleep(30)
            os._exit(0)
        time.sleep(0.1)
        os.kill(pid, signal.SIGTERM)
        _, st = os.waitpid(pid, 0)
        print("child killed by SIGTERM:", os.WIFSIGNALED(st), os.WTERMSIG(st))

        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        os.kill(os.getpid(), signal.SIGUSR1)
        print("ignored signal: still alive")
        t0 = time.monotonic()
        signal.signal(signal.SIGALRM, lambda s, f: None)
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        time.sleep(0.4)
        print("sleep resumes after a handler:", time.monotonic() - t0 >= 0.35)

        # CPU-time timers: they count only while the process runs
        for which, sig in ((signal.ITIMER_VIRTUAL, signal.SIGVTALRM), (signal.ITIMER_PROF, signal.SIGPROF)):
            fired = []
            signal.signal(sig, lambda s, f: fired.append(s))
            signal.setitimer(which, 0.05, 0.05)
            time.sleep(0.2)  # asleep: no CPU time counts
            print(sig.name, "not during a sleep:", fired == [])
            value, interval = signal.getitimer(which)
            print(sig.name, "set:", 0 < value <= 0.06, interval == 0.05)  # Linux rounds up to a tick
            c0 = time.process_time()
            while len(fired) < 2 and time.process_time() - c0 < 20:
                pass
            signal.setitimer(which, 0)
            print(sig.name, "fires as CPU time passes, then again:", fired == [sig, sig],
                  time.process_time() - c0 >= 0.09)
            print(sig.name, "cancelled:", signal.getitimer(which) == (0.0, 0.0))
    """)
