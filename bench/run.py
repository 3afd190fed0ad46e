#!/usr/bin/env python3
"""Benchmark pysc against native execution and gVisor's runsc.

Every workload is run three ways in one go:

* natively,
* under ``pysc --platform=P do ...`` for each platform P in ``--platforms``,
* under ``runsc --network=none --platform=ptrace do ...`` (gVisor, needs root).

Two kinds of workload:

* ``per-op``: a small static C program (compiled once into the temp dir with
  ``gcc -static -O2``) loops K times over an operation and prints its own
  per-operation time, measured with clock_gettime around the loop, so the
  sandbox's start-up cost does not count.
* ``wall``: the wall-clock time of the whole command, start-up included.

Each cell is the median over ``--repeat`` runs.  A cell that cannot be
measured (pysc missing, a crash, wrong output, a timeout) shows ``error`` and
the first line of its stderr is listed under the table; the run goes on.

Usage:  python3 bench/run.py [--quick] [--platforms ptrace,seccomp]
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

# --------------------------------------------------------------------------
# The C micro-benchmark: one static binary, the operation chosen by argv[1].
# It prints "ns_per_op=<float>" on stdout.

C_SOURCE = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

struct op { const char *name; void (*fn)(const char *); };
static const struct op ops[] = {
    {"getppid", op_getppid},
    {"clock_gettime", op_clock_gettime},
    {"open_fstat_close", op_open_fstat_close},
    {"seqread", op_seqread},
    {"fork_exec", op_fork_exec},
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


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # 'per-op' or 'wall'
    description: str
    argv: Callable[[Env], list[str]]
    unit: str = "ms"  # unit shown in the table: 'us' or 'ms'
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
    _per_op("open_fstat_close", "open_fstat_close", 5_000, 500, "us",
            "open+fstat+close of a file in the temp dir",
            arg=lambda env: os.path.join(env.tmpdir, "small.txt")),
    _per_op("seqread_64MiB", "seqread", 3, 1, "ms",
            "sequential read of a 64 MiB file in 64 KiB reads, per pass",
            arg=lambda env: os.path.join(env.tmpdir, "big.bin")),
    _per_op("fork_exec_wait", "fork_exec", 100, 10, "us",
            "fork + execve(/bin/true) + waitpid loop",
            arg=lambda env: "/bin/true"),
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
]


# --------------------------------------------------------------------------
# Runners: how to wrap a workload's argv for each column.


@dataclasses.dataclass(frozen=True)
class Runner:
    column: str
    prefix: Optional[list[str]]  # None: unavailable, see `unavailable`
    unavailable: str = ""

    def wrap(self, argv: list[str]) -> list[str]:
        assert self.prefix is not None
        return self.prefix + argv


def make_runners(args: argparse.Namespace) -> tuple[Runner, list[Runner], Optional[Runner]]:
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
                pysc_runners.append(Runner(col, pysc_cmd + [f"--platform={p}", "do"]))

    runsc = None
    if not args.no_runsc:
        exe = shutil.which(args.runsc)
        if not exe:
            runsc = Runner("runsc", None, f"{args.runsc} not found")
        elif os.geteuid() != 0:
            runsc = Runner("runsc", None, "runsc do needs root")
        else:
            runsc = Runner("runsc", [exe, "--network=none",
                                     f"--platform={args.runsc_platform}", "do"])
    return native, pysc_runners, runsc


# --------------------------------------------------------------------------
# Measuring


@dataclasses.dataclass
class Cell:
    samples: list[float] = dataclasses.field(default_factory=list)  # in the workload's unit
    error: Optional[str] = None

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


def measure(w: Workload, runner: Runner, env: Env, repeat: int, timeout: float) -> Cell:
    cell = Cell()
    if runner.prefix is None:
        cell.error = runner.unavailable
        return cell
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


# --------------------------------------------------------------------------
# Set-up of the temp dir


def prepare(tmpdir: str, quick: bool) -> Env:
    busybox = shutil.which("busybox") or "/bin/busybox"
    src = os.path.join(tmpdir, "microbench.c")
    exe = os.path.join(tmpdir, "microbench")
    with open(src, "w") as f:
        f.write(C_SOURCE)
    proc = subprocess.run(["gcc", "-static", "-O2", "-o", exe, src],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"gcc failed:\n{proc.stderr}")

    with open(os.path.join(tmpdir, "small.txt"), "w") as f:
        f.write("pysc-bench\n")

    chunk = os.urandom(1 << 20)
    with open(os.path.join(tmpdir, "big.bin"), "wb") as f:
        for _ in range(SEQREAD_BYTES // len(chunk)):
            f.write(chunk)

    tree = os.path.join(tmpdir, "tree")
    per_dir = FIND_FILES // FIND_DIRS
    for d in range(FIND_DIRS):
        dpath = os.path.join(tree, f"d{d:03d}")
        os.makedirs(dpath)
        for i in range(per_dir):
            open(os.path.join(dpath, f"f{i:03d}"), "w").close()

    return Env(tmpdir=tmpdir, microbench=exe, busybox=busybox, quick=quick)


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


def print_table(workloads: list[Workload], results: dict[str, dict[str, Cell]],
                native: Runner, pysc: list[Runner], runsc: Optional[Runner],
                out=sys.stdout) -> dict[str, Optional[float]]:
    """Print the results table; return the geometric mean of pysc/runsc per platform."""
    headers = ["workload", "unit", native.column] + [r.column for r in pysc]
    if runsc:
        headers.append(runsc.column)
    for r in pysc:
        p = r.column.split(":", 1)[1]
        if runsc:
            headers.append(f"{p}/runsc")
        headers.append(f"{p}/native")

    rows = []
    pysc_vs_runsc: dict[str, list[float]] = {r.column: [] for r in pysc}
    for w in workloads:
        cells = results[w.name]
        unit = "µs/op" if w.kind == "per-op" and w.unit == "us" else (
            "ms/op" if w.kind == "per-op" else "ms")
        row = [w.name, unit, cell_text(cells[native.column])]
        row += [cell_text(cells[r.column]) for r in pysc]
        if runsc:
            row.append(cell_text(cells[runsc.column]))
        for r in pysc:
            m = cells[r.column].median
            if runsc:
                rr = ratio(m, cells[runsc.column].median)
                if rr is not None:
                    pysc_vs_runsc[r.column].append(rr)
                row.append(fmt(rr))
            row.append(fmt(ratio(m, cells[native.column].median)))
        rows.append(row)

    gm = {col: geomean(v) for col, v in pysc_vs_runsc.items()}
    if runsc and pysc:
        footer = ["geomean pysc/runsc", "", ""] + [""] * len(pysc) + [""]
        for r in pysc:
            footer.append(fmt(gm[r.column]))
            footer.append("")
        rows.append(footer)

    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cols: list[str]) -> str:
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                         for i, c in enumerate(cols)).rstrip()

    print(line(headers), file=out)
    print(line(["-" * wd for wd in widths]), file=out)
    for row in rows[:len(workloads)]:
        print(line(row), file=out)
    if len(rows) > len(workloads):
        print(line(["-" * wd for wd in widths]), file=out)
        print(line(rows[-1]), file=out)

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
                                     f"  {w.name:<18} {w.kind:<7} {w.description}"
                                     for w in WORKLOADS))
    ap.add_argument("--platforms", default="ptrace",
                    help="comma-separated pysc platforms; '' for native and runsc only "
                         "(default: ptrace)")
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
                    help="gVisor platform (default: ptrace)")
    ap.add_argument("--no-runsc", action="store_true", help="skip the runsc column")
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
    native, pysc, runsc = make_runners(args)
    runners = [native] + pysc + ([runsc] if runsc else [])
    if args.cpus:
        # Inherited by every command started from here on.
        os.sched_setaffinity(0, args.cpus)

    # Under /tmp so that `pysc do` and `runsc do` (root = host /) see it.
    tmpdir = tempfile.mkdtemp(prefix="pysc-bench-", dir="/tmp")
    try:
        print(f"preparing {tmpdir} ...", file=sys.stderr)
        env = prepare(tmpdir, args.quick)
        results: dict[str, dict[str, Cell]] = {}
        for w in workloads:
            results[w.name] = {}
            for r in runners:
                print(f"  {w.name:<18} {r.column:<14}", end="", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                cell = measure(w, r, env, args.repeat, args.timeout)
                results[w.name][r.column] = cell
                status = "error" if cell.error else f"{fmt(cell.median)} {w.unit}"
                print(f" {status}  ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
        print(file=sys.stderr)
        pinned = f"; pinned to CPUs {sorted(args.cpus)}" if args.cpus else ""
        print(f"medians of {args.repeat} run(s){pinned}; per-op: time per operation "
              "measured inside the program; wall: whole command")
        gm = print_table(workloads, results, native, pysc, runsc)

        if args.json:
            doc = {
                "repeat": args.repeat,
                "quick": args.quick,
                "cpus": sorted(args.cpus),
                "runners": {r.column: (r.prefix if r.prefix is not None else None)
                            for r in runners},
                "workloads": [
                    {
                        "name": w.name,
                        "kind": w.kind,
                        "unit": w.unit,
                        "description": w.description,
                        "results": {
                            col: {"median": c.median, "samples": c.samples, "error": c.error}
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
        if args.keep:
            print(f"kept {tmpdir}", file=sys.stderr)
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
