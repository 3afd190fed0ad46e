#!/usr/bin/env python3
"""Benchmark pysc against native execution and gVisor's runsc.

Every command workload is run three ways in one go:

* natively,
* under ``pysc --platform=P do ...`` for each platform P in ``--platforms``,
* under ``runsc --network=none --platform=ptrace do ...`` (gVisor, needs root).

The container workloads (``container_true``, ``container_memory``) instead run
one busybox OCI bundle through ``pysc run``, ``runc run`` and ``runsc run``
(see bench/containers.py) and are shown in a second table with a runc column.

Two kinds of command workload:

* ``per-op``: a small static C program (compiled once into the temp dir with
  ``gcc -static -O2``) loops K times over an operation and prints its own
  per-operation time, measured with clock_gettime around the loop, so the
  sandbox's start-up cost does not count.
* ``wall``: the wall-clock time of the whole command, start-up included.

Each cell is the median over ``--repeat`` runs.  The runs are interleaved:
run i of every column comes before run i+1 of any, so that the machine's
drift (large on a shared VM) falls on every column alike instead of on
whichever ran during a slow minute.  A cell that cannot be
measured (pysc missing, a crash, wrong output, a timeout) shows ``error`` and
the first line of its stderr is listed under the table; the run goes on.

Usage:  python3 bench/run.py [--quick] [--platforms ptrace,seccomp,kvm]
                             [--workloads getppid,true] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containers  # noqa: E402  (bench/containers.py)

# --------------------------------------------------------------------------
# The C micro-benchmark: one static binary, the operation chosen by argv[1].
# It prints "ns_per_op=<float>" on stdout.

C_SOURCE = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what) { perror(what); exit(2); }

static void op_getppid(const char *arg) {
    (void)arg;
    if (syscall(SYS_getppid) < 0) die("getppid");
}

static void op_clock_gettime(const char *arg) {
    struct timespec ts;
    (void)arg;
    /* The raw syscall, not the vDSO: this measures a call the sandbox
       delegates to the host kernel. */
    if (syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts) != 0) die("clock_gettime");
}

static void op_clock_libc(const char *arg) {
    struct timespec ts;
    (void)arg;
    /* Through libc: the vDSO where the platform offers one. */
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) die("clock_gettime");
}

static void op_open_fstat_close(const char *path) {
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open");
    if (fstat(fd, &st) != 0) die("fstat");
    if (close(fd) != 0) die("close");
}

static char readbuf[64 * 1024];

static void op_seqread(const char *path) {
    /* One op = one sequential pass over the whole file in 64 KiB reads. */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("open");
    for (;;) {
        ssize_t n = read(fd, readbuf, sizeof readbuf);
        if (n < 0) die("read");
        if (n == 0) break;
    }
    close(fd);
}

static void op_fork_exec(const char *path) {
    int status;
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        char *argv[] = {(char *)path, NULL};
        char *envp[] = {NULL};
        execve(path, argv, envp);
        _exit(127);
    }
    if (waitpid(pid, &status, 0) != pid) die("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "child failed: status %d\n", status);
        exit(2);
    }
}

static void op_mmap_munmap(const char *arg) {
    /* 64 KiB of anonymous memory mapped and unmapped, never touched. */
    (void)arg;
    void *p = mmap(NULL, 64 * 1024, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    if (munmap(p, 64 * 1024) != 0) die("munmap");
}

static void op_page_touch(const char *arg) {
    /* 4 MiB of fresh anonymous memory, one write per page, then unmapped. */
    (void)arg;
    size_t len = 4 << 20;
    volatile char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    for (size_t i = 0; i < len; i += 4096) p[i] = 1;
    if (munmap((void *)p, len) != 0) die("munmap");
}

/* A CPU-bound compression loop: greedy LZ77 with a hash of 4-byte prefixes
   over 1 MiB of generated text; no syscalls inside. */
#define CIN (1 << 20)
static unsigned char cin[CIN], cout[CIN + CIN / 8 + 16];
static unsigned int chash[1 << 16];
static volatile size_t csink;

static void op_compress(const char *arg) {
    (void)arg;
    static int ready;
    if (!ready) {
        unsigned int x = 12345;
        static const char *words[] = {"sandbox ", "kernel ", "syscall ", "page ", "fault ", "vcpu ",
                                      "memory ", "signal ", "thread ", "futex "};
        size_t n = 0;
        while (n < CIN) {
            x = x * 1103515245u + 12345u;
            const char *w = words[(x >> 16) % 10];
            while (*w && n < CIN) cin[n++] = (unsigned char)*w++;
        }
        ready = 1;
    }
    memset(chash, 0, sizeof chash);
    size_t i = 0, o = 0;
    while (i + 4 <= CIN) {
        unsigned int v = cin[i] | cin[i + 1] << 8 | cin[i + 2] << 16 | (unsigned int)cin[i + 3] << 24;
        unsigned int h = (v * 2654435761u) >> 16;
        size_t cand = chash[h];
        chash[h] = (unsigned int)i;
        size_t len = 0;
        if (cand < i && i - cand < 65536)
            while (i + len < CIN && len < 255 && cin[cand + len] == cin[i + len]) len++;
        if (len >= 4) {
            cout[o++] = 0xff; cout[o++] = (unsigned char)len;
            cout[o++] = (unsigned char)(i - cand); cout[o++] = (unsigned char)((i - cand) >> 8);
            i += len;
        } else {
            cout[o++] = cin[i++];
        }
    }
    csink = o;
}

struct op { const char *name; void (*fn)(const char *); };
static const struct op ops[] = {
    {"getppid", op_getppid},
    {"clock_gettime", op_clock_gettime},
    {"clock_libc", op_clock_libc},
    {"open_fstat_close", op_open_fstat_close},
    {"seqread", op_seqread},
    {"fork_exec", op_fork_exec},
    {"mmap_munmap", op_mmap_munmap},
    {"page_touch", op_page_touch},
    {"compress", op_compress},
};

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s OP ITERATIONS [ARG]\n", argv[0]);
        return 2;
    }
    const char *arg = argc > 3 ? argv[3] : "";
    long k = atol(argv[2]);
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (strcmp(ops[i].name, argv[1]) != 0) continue;
        long warm = k / 10 < 1 ? 1 : (k / 10 > 100 ? 100 : k / 10);
        for (long j = 0; j < warm; j++) ops[i].fn(arg);
        double t0 = now_ns();
        for (long j = 0; j < k; j++) ops[i].fn(arg);
        double t1 = now_ns();
        printf("ns_per_op=%.1f\n", k > 0 ? (t1 - t0) / (double)k : 0.0);
        return 0;
    }
    fprintf(stderr, "unknown op %s\n", argv[1]);
    return 2;
}
"""

SEQREAD_BYTES = 64 * 1024 * 1024
FIND_FILES = 10_000
FIND_DIRS = 100


# --------------------------------------------------------------------------
# Workloads


@dataclasses.dataclass
class Env:
    """What the workloads' argv builders may refer to."""

    tmpdir: str
    microbench: str  # path of the compiled C program
    busybox: str
    quick: bool
    bundles: Optional[containers.Bundles] = None  # for the container workloads


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # 'per-op', 'wall' or 'container'
    description: str
    argv: Callable[[Env], list[str]]
    unit: str = "ms"  # unit shown in the table: 'us', 'ms' or 'MiB'
    expect: Optional[str] = None  # a wall workload's stdout must contain this


def _per_op(name: str, op: str, k: int, k_quick: int, unit: str, description: str,
            arg: Callable[[Env], str] = lambda env: "") -> Workload:
    def argv(env: Env) -> list[str]:
        iterations = k_quick if env.quick else k
        cmd = [env.microbench, op, str(iterations)]
        a = arg(env)
        return cmd + [a] if a else cmd

    return Workload(name, "per-op", description, argv, unit)


WORKLOADS: list[Workload] = [
    _per_op("getppid", "getppid", 20_000, 2_000, "us",
            "syscall round trip: syscall(SYS_getppid) loop"),
    _per_op("clock_gettime", "clock_gettime", 20_000, 2_000, "us",
            "delegated call: raw syscall(SYS_clock_gettime) loop"),
    _per_op("clock_gettime_libc", "clock_libc", 200_000, 20_000, "us",
            "clock_gettime through libc (the vDSO where there is one)"),
    _per_op("open_fstat_close", "open_fstat_close", 5_000, 500, "us",
            "open+fstat+close of a file in the temp dir",
            arg=lambda env: os.path.join(env.tmpdir, "small.txt")),
    _per_op("seqread_64MiB", "seqread", 3, 1, "ms",
            "sequential read of a 64 MiB file in 64 KiB reads, per pass",
            arg=lambda env: os.path.join(env.tmpdir, "big.bin")),
    _per_op("fork_exec_wait", "fork_exec", 100, 10, "us",
            "fork + execve(/bin/true) + waitpid loop",
            arg=lambda env: "/bin/true"),
    _per_op("mmap_munmap", "mmap_munmap", 5_000, 500, "us",
            "anonymous mmap + munmap of 64 KiB, untouched"),
    _per_op("page_touch_4MiB", "page_touch", 50, 5, "ms",
            "mmap 4 MiB, write one byte per page, munmap"),
    _per_op("compress_1MiB", "compress", 20, 3, "ms",
            "CPU-bound: greedy LZ77 over 1 MiB of text, no syscalls"),
    Workload("true", "wall", "whole-command start-up of /bin/true",
             lambda env: ["/bin/true"]),
    Workload("sh_pipe_loop", "wall",
             "busybox sh loop: 200 x `echo $i | busybox cat`",
             lambda env: [env.busybox, "sh", "-c",
                          "for i in $(busybox seq 200); do echo $i | busybox cat >/dev/null; done;"
                          " echo done"],
             expect="done"),
    Workload("find_10k", "wall", "busybox find over 10k files | wc -l",
             lambda env: [env.busybox, "sh", "-c",
                          f"busybox find {shlex.quote(os.path.join(env.tmpdir, 'tree'))}"
                          " -type f | busybox wc -l"],
             expect=str(FIND_FILES)),
    Workload("python3_start", "wall", "/usr/bin/python3 -c pass",
             lambda env: ["/usr/bin/python3", "-c", "pass"]),
    Workload("container_true", "container",
             "`X run -b BUNDLE ID` of a busybox bundle running `true`, start to exit",
             lambda env: [], unit="ms"),
    Workload("container_memory", "container",
             "PSS of all host processes of a detached `sleep 1000` container",
             lambda env: [], unit="MiB"),
]


# --------------------------------------------------------------------------
# Runners: how to wrap a workload's argv for each column.


@dataclasses.dataclass(frozen=True)
class Runner:
    column: str
    prefix: Optional[list[str]]  # None: unavailable, see `unavailable`
    unavailable: str = ""
    # For the container workloads: the runtime driven with runc's command
    # shape (None: this column has no container runs, e.g. native).
    runtime: Optional[containers.Runtime] = None

    def wrap(self, argv: list[str]) -> list[str]:
        assert self.prefix is not None
        return self.prefix + argv


def make_runners(args: argparse.Namespace
                 ) -> tuple[Runner, list[Runner], Optional[Runner], Optional[Runner]]:
    """native, the pysc columns, runsc, runc (runc: only for the container workloads)."""
    native = Runner("native", [])

    pysc_runners = []
    platforms = [p.strip() for p in args.platforms.split(",") if p.strip()]
    if platforms:
        if args.pysc:
            pysc_cmd = shlex.split(args.pysc)
            found = shutil.which(pysc_cmd[0]) if pysc_cmd else None
        else:
            found = shutil.which("pysc")
            pysc_cmd = [found] if found else []
        for p in platforms:
            col = f"pysc:{p}"
            if not found:
                pysc_runners.append(Runner(col, None, "pysc not found on PATH"))
            else:
                pysc_runners.append(Runner(col, pysc_cmd + [f"--platform={p}", "do"],
                                           runtime=containers.pysc_runtime(col, pysc_cmd, p)))

    runsc = None
    if not args.no_runsc:
        exe = shutil.which(args.runsc)
        if not exe:
            runsc = Runner("runsc", None, f"{args.runsc} not found")
        elif os.geteuid() != 0:
            runsc = Runner("runsc", None, "runsc do needs root")
        else:
            runsc = Runner("runsc", [exe, "--network=none",
                                     f"--platform={args.runsc_platform}", "do"],
                           runtime=containers.runsc_runtime(exe, args.runsc_platform))

    runc = None
    if not args.no_runc:
        # runc is in /usr/sbin on Debian, which a non-login PATH may lack.
        exe = shutil.which(args.runc) or shutil.which(args.runc,
                                                      path="/usr/local/sbin:/usr/sbin:/sbin")
        if not exe:
            runc = Runner("runc", None, f"{args.runc} not found (bash .ci/bench-deps)")
        elif os.geteuid() != 0:
            runc = Runner("runc", None, "runc run needs root")
        else:
            runc = Runner("runc", [exe], runtime=containers.runc_runtime(exe))
    return native, pysc_runners, runsc, runc


# --------------------------------------------------------------------------
# Measuring


@dataclasses.dataclass
class Cell:
    samples: list[float] = dataclasses.field(default_factory=list)  # in the workload's unit
    error: Optional[str] = None
    notes: str = ""  # e.g. how many host processes a container had

    @property
    def median(self) -> Optional[float]:
        if self.error or not self.samples:
            return None
        return statistics.median(self.samples)


def first_line(text: str) -> str:
    """The first non-empty line of text; for a Python traceback, its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].startswith("Traceback"):
        return lines[-1][:200]
    return lines[0][:200]


def time_command(argv: list[str], cwd: str, timeout: float) -> tuple[float, int, str, str]:
    """Run argv once; return (wall seconds, exit code, stdout, stderr)."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, errors="replace", timeout=timeout)
    wall = time.perf_counter() - t0
    return wall, proc.returncode, proc.stdout, proc.stderr


def parse_ns_per_op(stdout: str) -> Optional[float]:
    for line in stdout.splitlines():
        if line.startswith("ns_per_op="):
            try:
                return float(line.split("=", 1)[1])
            except ValueError:
                return None
    return None


UNIT_SCALE = {"us": 1e-3, "ms": 1e-6}  # ns -> unit


def measure_columns(w: Workload, columns: list[Runner], env: Env, repeat: int,
                    timeout: float) -> dict[str, Cell]:
    """The cells of one workload, one run of each column per round."""
    cells = {r.column: Cell() for r in columns}
    for i in range(repeat):
        for r in columns:
            cell = cells[r.column]
            if cell.error:
                continue
            one = measure(w, r, env, 1, timeout, warmup=i == 0)
            cell.samples += one.samples
            cell.error = one.error
            cell.notes = one.notes or cell.notes
    return cells


def measure(w: Workload, runner: Runner, env: Env, repeat: int, timeout: float,
            warmup: bool = True) -> Cell:
    cell = Cell()
    if runner.prefix is None:
        cell.error = runner.unavailable
        return cell
    if w.kind == "container":
        return measure_container(w, runner, env, repeat, timeout, warmup)
    argv = runner.wrap(w.argv(env))
    for _ in range(repeat):
        try:
            wall, rc, out, err = time_command(argv, env.tmpdir, timeout)
        except subprocess.TimeoutExpired:
            cell.error = f"timeout after {timeout:g}s"
            return cell
        except OSError as e:
            cell.error = f"cannot run {argv[0]}: {e}"
            return cell
        if rc != 0:
            cell.error = f"exit {rc}: {first_line(err) or first_line(out)}"
            return cell
        if w.kind == "per-op":
            ns = parse_ns_per_op(out)
            if ns is None:
                cell.error = f"no ns_per_op in output: {first_line(out) or first_line(err)}"
                return cell
            cell.samples.append(ns * UNIT_SCALE[w.unit])
        else:
            if w.expect is not None and w.expect not in out:
                cell.error = (f"unexpected output {first_line(out)!r} (want {w.expect!r})"
                              f"{': ' + first_line(err) if err.strip() else ''}")
                return cell
            cell.samples.append(wall * 1e9 * UNIT_SCALE[w.unit])
    return cell


def measure_container(w: Workload, runner: Runner, env: Env, repeat: int,
                      timeout: float, warmup: bool = True) -> Cell:
    cell = Cell()
    rt = runner.runtime
    if rt is None:
        cell.error = "no container runs in this column"
        return cell
    if env.bundles is None or env.bundles.error:
        cell.error = env.bundles.error if env.bundles else "no bundle"
        return cell
    if not rt.root:
        containers.prepare_runtime(rt, env.bundles.state_dir)
    try:
        if w.name == "container_true":
            samples, error, notes = containers.measure_true(rt, env.bundles, repeat, timeout, warmup)
        else:
            samples, error, notes = containers.measure_memory(
                rt, env.bundles, repeat, timeout, settle=0.3 if env.quick else 1.0)
    except Exception as e:  # never let one column stop the run
        samples, error, notes = [], f"{type(e).__name__}: {e}", ""
    cell.samples, cell.error, cell.notes = samples, error, notes
    return cell


# --------------------------------------------------------------------------
# Set-up of the temp dir


def prepare(tmpdir: str, quick: bool, workloads: Optional[list[Workload]] = None,
            pysc_cmd: Optional[list[str]] = None) -> Env:
    """Create what the selected workloads (default: all) need in tmpdir."""
    names = {w.name for w in (WORKLOADS if workloads is None else workloads)}
    kinds = {w.kind for w in (WORKLOADS if workloads is None else workloads)}
    busybox = shutil.which("busybox") or "/bin/busybox"
    src = os.path.join(tmpdir, "microbench.c")
    exe = os.path.join(tmpdir, "microbench")
    if "per-op" in kinds:
        with open(src, "w") as f:
            f.write(C_SOURCE)
        proc = subprocess.run(["gcc", "-static", "-O2", "-o", exe, src],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"gcc failed:\n{proc.stderr}")

    with open(os.path.join(tmpdir, "small.txt"), "w") as f:
        f.write("pysc-bench\n")

    if "seqread_64MiB" in names:
        chunk = os.urandom(1 << 20)
        with open(os.path.join(tmpdir, "big.bin"), "wb") as f:
            for _ in range(SEQREAD_BYTES // len(chunk)):
                f.write(chunk)

    if "find_10k" in names:
        tree = os.path.join(tmpdir, "tree")
        per_dir = FIND_FILES // FIND_DIRS
        for d in range(FIND_DIRS):
            dpath = os.path.join(tree, f"d{d:03d}")
            os.makedirs(dpath)
            for i in range(per_dir):
                open(os.path.join(dpath, f"f{i:03d}"), "w").close()

    bundles = None
    if "container" in kinds:
        # The sandboxes' unprivileged processes (runsc's sandbox runs as
        # nobody) must be able to traverse down to the bundles.
        os.chmod(tmpdir, 0o711)
        bundles = containers.build_bundles(os.path.join(tmpdir, "containers"), busybox,
                                           pysc_cmd)

    return Env(tmpdir=tmpdir, microbench=exe, busybox=busybox, quick=quick, bundles=bundles)


# --------------------------------------------------------------------------
# Reporting


def fmt(v: Optional[float]) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def geomean(values: list[float]) -> Optional[float]:
    values = [v for v in values if v is not None and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def cell_text(cell: Cell) -> str:
    return "error" if cell.error else fmt(cell.median)


def unit_text(w: Workload) -> str:
    if w.kind == "per-op":
        return "µs/op" if w.unit == "us" else "ms/op"
    return w.unit


def _print_rows(headers: list[str], rows: list[list[str]], footer: Optional[list[str]],
                out) -> None:
    every = rows + ([footer] if footer else [])
    widths = [max(len(h), *(len(row[i]) for row in every)) for i, h in enumerate(headers)]

    def line(cols: list[str]) -> str:
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                         for i, c in enumerate(cols)).rstrip()

    print(line(headers), file=out)
    print(line(["-" * wd for wd in widths]), file=out)
    for row in rows:
        print(line(row), file=out)
    if footer:
        print(line(["-" * wd for wd in widths]), file=out)
        print(line(footer), file=out)


def print_table(workloads: list[Workload], results: dict[str, dict[str, Cell]],
                native: Runner, pysc: list[Runner], runsc: Optional[Runner],
                runc: Optional[Runner] = None, out=sys.stdout) -> dict[str, Optional[float]]:
    """Print the results: one table for the command workloads, a second one
    (with a runc column instead of native) for the container workloads.
    Return the geometric mean of pysc/runsc per platform, over the rows of
    both tables."""
    commands = [w for w in workloads if w.kind != "container"]
    ctrs = [w for w in workloads if w.kind == "container"]
    pysc_vs_runsc: dict[str, list[float]] = {r.column: [] for r in pysc}

    def vs_runsc(r: Runner, cells: dict[str, Cell]) -> str:
        rr = ratio(cells[r.column].median, cells[runsc.column].median)
        if rr is not None:
            pysc_vs_runsc[r.column].append(rr)
        return fmt(rr)

    # Table 1: native, pysc:P..., runsc, P/runsc, P/native.
    headers1 = ["workload", "unit", native.column] + [r.column for r in pysc]
    if runsc:
        headers1.append(runsc.column)
    for r in pysc:
        p = r.column.split(":", 1)[1]
        if runsc:
            headers1.append(f"{p}/runsc")
        headers1.append(f"{p}/native")
    rows1 = []
    for w in commands:
        cells = results[w.name]
        row = [w.name, unit_text(w), cell_text(cells[native.column])]
        row += [cell_text(cells[r.column]) for r in pysc]
        if runsc:
            row.append(cell_text(cells[runsc.column]))
        for r in pysc:
            if runsc:
                row.append(vs_runsc(r, cells))
            row.append(fmt(ratio(cells[r.column].median, cells[native.column].median)))
        rows1.append(row)

    # Table 2 (containers): runc, pysc:P..., runsc, P/runsc, P/runc.
    headers2 = ["workload", "unit"] + ([runc.column] if runc else [])
    headers2 += [r.column for r in pysc] + ([runsc.column] if runsc else [])
    for r in pysc:
        p = r.column.split(":", 1)[1]
        if runsc:
            headers2.append(f"{p}/runsc")
        if runc:
            headers2.append(f"{p}/runc")
    rows2 = []
    for w in ctrs:
        cells = results[w.name]
        row = [w.name, unit_text(w)] + ([cell_text(cells[runc.column])] if runc else [])
        row += [cell_text(cells[r.column]) for r in pysc]
        if runsc:
            row.append(cell_text(cells[runsc.column]))
        for r in pysc:
            if runsc:
                row.append(vs_runsc(r, cells))
            if runc:
                row.append(fmt(ratio(cells[r.column].median, cells[runc.column].median)))
        rows2.append(row)

    gm = {col: geomean(v) for col, v in pysc_vs_runsc.items()}

    def footer(headers: list[str], label: str) -> Optional[list[str]]:
        if not (runsc and pysc):
            return None
        row = [label] + [""] * (len(headers) - 1)
        for r in pysc:
            p = r.column.split(":", 1)[1]
            row[headers.index(f"{p}/runsc")] = fmt(gm[r.column])
        return row

    if commands:
        _print_rows(headers1, rows1, None if ctrs else footer(headers1, "geomean pysc/runsc"),
                    out)
    if ctrs:
        if commands:
            print(file=out)
        print("containers (one busybox bundle; container_true: `run` start to exit; "
              "container_memory: PSS of the container's host processes; lower is better):",
              file=out)
        _print_rows(headers2, rows2,
                    footer(headers2, "geomean pysc/runsc, all rows" if commands
                           else "geomean pysc/runsc"), out)
        notes = [(col, c.notes) for w in ctrs for col, c in results[w.name].items()
                 if c.notes and w.name == "container_memory"]
        if notes:
            print("host processes counted: " + ", ".join(f"{col} {n}" for col, n in notes),
                  file=out)

    errors = [(w.name, col, c.error) for w in workloads
              for col, c in results[w.name].items() if c.error]
    if errors:
        print("\nerrors:", file=out)
        for name, col, err in errors:
            print(f"  {name} [{col}]: {err}", file=out)
    return gm


# --------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="workloads:\n" + "\n".join(
                                     f"  {w.name:<18} {w.kind:<9} {w.description}"
                                     for w in WORKLOADS))
    ap.add_argument("--platforms", default="ptrace,seccomp,kvm",
                    help="comma-separated pysc platforms; '' for native and runsc only "
                         "(default: ptrace,seccomp,kvm)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per cell (default 5)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: repeat 1 and fewer iterations")
    ap.add_argument("--workloads", default="",
                    help="comma-separated workload names (default: all)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--pysc", default="",
                    help="pysc command (default: `pysc` on PATH), e.g. 'python3 -m pysc'")
    ap.add_argument("--runsc", default="runsc", help="runsc executable (default: runsc)")
    ap.add_argument("--runsc-platform", default="ptrace",
                    help="gVisor platform (default: ptrace,seccomp)")
    ap.add_argument("--no-runsc", action="store_true", help="skip the runsc column")
    ap.add_argument("--runc", default="runc",
                    help="runc executable, for the container workloads (default: runc)")
    ap.add_argument("--no-runc", action="store_true",
                    help="skip the runc column of the container workloads")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds allowed per command (default 300)")
    ap.add_argument("--cpus", default="",
                    help="pin the runner and everything it starts to these CPUs, "
                         "e.g. '0' or '0,1' (default: no pinning)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeat = 1
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    try:
        args.cpus = {int(c) for c in args.cpus.split(",") if c.strip()}
    except ValueError:
        ap.error("--cpus takes a comma-separated list of CPU numbers")
    return args


def select_workloads(spec: str) -> list[Workload]:
    if not spec.strip():
        return list(WORKLOADS)
    by_name = {w.name: w for w in WORKLOADS}
    chosen = []
    for name in (n.strip() for n in spec.split(",")):
        if not name:
            continue
        if name not in by_name:
            raise SystemExit(f"unknown workload {name!r}; known: {', '.join(by_name)}")
        chosen.append(by_name[name])
    return chosen


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    workloads = select_workloads(args.workloads)
    native, pysc, runsc, runc = make_runners(args)
    runners = [native] + pysc + ([runsc] if runsc else [])
    ctr_runners = ([runc] if runc else []) + pysc + ([runsc] if runsc else [])
    pysc_cmd = next((r.runtime.base for r in pysc if r.prefix is not None and r.runtime),
                    None)
    if args.cpus:
        # Inherited by every command started from here on.
        os.sched_setaffinity(0, args.cpus)

    # Under /tmp so that `pysc do` and `runsc do` (root = host /) see it.
    tmpdir = tempfile.mkdtemp(prefix="pysc-bench-", dir="/tmp")
    env: Optional[Env] = None
    try:
        print(f"preparing {tmpdir} ...", file=sys.stderr)
        env = prepare(tmpdir, args.quick, workloads, pysc_cmd)
        results: dict[str, dict[str, Cell]] = {}
        for w in workloads:
            t0 = time.perf_counter()
            columns = ctr_runners if w.kind == "container" else runners
            results[w.name] = measure_columns(w, columns, env, args.repeat, args.timeout)
            print(f"  {w.name:<18} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
            for r in columns:
                cell = results[w.name][r.column]
                status = "error" if cell.error else f"{fmt(cell.median)} {w.unit}"
                if cell.notes:
                    status += f" [{cell.notes}]"
                print(f"    {r.column:<14} {status}", file=sys.stderr)
        print(file=sys.stderr)
        pinned = f"; pinned to CPUs {sorted(args.cpus)}" if args.cpus else ""
        print(f"medians of {args.repeat} run(s){pinned}; per-op: time per operation "
              "measured inside the program; wall: whole command")
        gm = print_table(workloads, results, native, pysc, runsc, runc)

        if args.json:
            doc = {
                "repeat": args.repeat,
                "quick": args.quick,
                "cpus": sorted(args.cpus),
                "runners": {r.column: (r.prefix if r.prefix is not None else None)
                            for r in runners},
                "container_runtimes": {
                    r.column: (r.runtime.base + ["--root", r.runtime.root or "ROOT"]
                               if r.prefix is not None and r.runtime else None)
                    for r in ctr_runners},
                "workloads": [
                    {
                        "name": w.name,
                        "kind": w.kind,
                        "unit": w.unit,
                        "description": w.description,
                        "results": {
                            col: {"median": c.median, "samples": c.samples, "error": c.error,
                                  **({"notes": c.notes} if c.notes else {})}
                            for col, c in results[w.name].items()
                        },
                    }
                    for w in workloads
                ],
                "geomean_pysc_over_runsc": gm,
            }
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
    finally:
        # Containers left over by an interrupted run: kill and delete them.
        for r in ctr_runners:
            if r.runtime and r.runtime.root:
                containers.sweep(r.runtime, tmpdir)
        if env is not None:
            containers.remove_state_dir(env.bundles)
        if args.keep:
            print(f"kept {tmpdir}", file=sys.stderr)
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
