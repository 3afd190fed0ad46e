"""Shell scripts run by the static busybox, inside the sandbox and natively:
same stdout, same exit status.  Each test is one script (one sandbox start)
that groups related checks; every line it prints names what it checks, so a
diff points at the broken feature."""
from __future__ import annotations

from .conftest import BUSYBOX, assert_same, need, run_native, run_pysc, show

# Every script runs in a fresh directory of its own below /tmp (inside the
# sandbox, that directory lives in the overlay's memory layer).
PROLOGUE = """
umask 022
D=$(mktemp -d /tmp/pysc-bb.XXXXXX) || exit 99
cd "$D" || exit 98
"""
EPILOGUE = """
cd /
rm -rf "$D"
"""


def sh(platform, body: str, status: int = 0, timeout: int = 60, epilogue: bool = True):
    need(BUSYBOX)
    script = PROLOGUE + body + (EPILOGUE if epilogue else "")
    native = run_native(BUSYBOX, "sh", "-c", script, timeout=timeout)
    assert native.returncode == status, f"the script itself is wrong (native run)\n{show(native)}"
    inside = run_pysc(platform, BUSYBOX, "sh", "-c", script, timeout=timeout)
    assert_same(inside, native)
    return inside


def test_arithmetic_hello(platform):
    cp = run_pysc(platform, BUSYBOX, "sh", "-c", "echo $((1+2))")
    assert (cp.returncode, cp.stdout) == (0, "3\n"), show(cp)


def test_pipes_redirections_substitution(platform):
    sh(platform, r"""
echo "arith $((6*7))"
printf 'b\na\nc\n' | sort | tr a-z A-Z | sed 's/^/pipe3 /'
echo one > f; echo two >> f; echo "append: $(cat f | tr '\n' ' ')"
echo "wc from <: $(wc -l < f)"
ls /nonexistent-pysc-dir 2>&1 | sed 's/.*nonexistent-pysc-dir.*/stderr-to-pipe ok/'
{ echo to-out; echo to-err >&2; } > both 2>&1; echo "2>&1 into file: $(sort both | tr '\n' ' ')"
{ echo gone; } 2>/dev/null >/dev/null; echo "devnull ok"
x=$(echo hello | sed s/h/j/); echo "subst $x"
echo "nested $(echo $(echo deep) `echo backtick`)"
cat <<EOF
heredoc expands $x $((2+2))
EOF
cat <<'EOF'
heredoc literal $x
EOF
printf '1 2\n3 4\n' | while read a b; do echo "read-loop $((a+b))"; done
echo abc | { read v; echo "read from pipe: $v"; }
seq 1 100 | awk '{s+=$1} END {print "awk sum", s}'
echo "a:b:c" | awk -F: '{print "awk field", $2}'
printf 'x\ny\nz\n' | sed -n '2p' | sed 's/^/sed line /'
printf '3\n1\n2\n10\n' | sort -n | tr '\n' ' '; echo
printf 'b a\na b\n' | sort -k2 | head -1
false || echo "|| works"
true && echo "&& works"
(exit 7); echo "subshell status $?"
exec 3> fd3; echo via-fd3 >&3; exec 3>&-; cat fd3
""")


def test_jobs_signals_and_status(platform):
    sh(platform, r"""
sleep 0.2 & p1=$!
(echo bg-out > bg) & p2=$!
wait $p1; echo "wait sleep: $?"
wait $p2; echo "wait subshell: $? $(cat bg)"
for i in 1 2 3; do (echo "job $i" > j$i) & done; wait; cat j1 j2 j3
sleep 30 & p=$!
kill $p; wait $p; echo "kill of background sleep: $?"
sleep 30 & p=$!
kill -9 $p; wait $p; echo "kill -9 of background sleep: $?"
trap 'echo got USR1' USR1
kill -USR1 $$
echo "after trap"
trap - USR1
sh -c 'kill -9 $$'; echo "sh killed by SIGKILL: $?"
sh -c 'kill -TERM $$'; echo "sh killed by SIGTERM: $?"
sh -c 'exit 3'; echo "sh exit 3: $?"
kill -0 $$ && echo "kill -0 self ok"
echo done | (read l; echo "$l in subshell")
""", timeout=90)


def test_files_find_tar_cp(platform):
    sh(platform, r"""
mkdir -p tree/a/b tree/c
echo hello > tree/a/b/file1
echo world > tree/c/file2
ln -s a/b/file1 tree/link
chmod 600 tree/c/file2
echo "== find"; find tree | sort
echo "== find -type f"; find tree -type f | sort
echo "== find -name"; find tree -name 'file*' | sort
echo "== find -type l"; find tree -type l
echo "== tar c | tar t"; tar cf - tree | tar tf - | sort
mkdir unpack; tar cf - tree | (cd unpack && tar xf -)
echo "== tar x: $(cat unpack/tree/link) $(readlink unpack/tree/link)"
echo "== cp -a"; cp -a tree copy
echo "readlink: $(readlink copy/link) cat: $(cat copy/link)"
stat -c "%n %A %s %F" copy/c/file2 copy/link copy/a/b/file1; stat -c "%n %A %F" copy/a
echo "== ls -la"; ls -la tree | awk 'NR > 1 {print $1, $NF}'
echo "== ls -l copy"; ls -l copy/c | awk 'NR > 1 {print $1, $5, $NF}'
echo "== du"; du -s tree | awk '{print ($1 > 0 ? "nonzero" : "zero"), $2}'
echo "== du host dir"; du -s /usr/share/common-licenses
echo "== mv, rm"; mv tree/c/file2 tree/moved; rm tree/a/b/file1; find tree | sort
echo "dangling: $(cat tree/link 2>/dev/null || echo no-target)"
echo "== sort/uniq"; printf 'b\na\nb\nc\na\n' | sort | uniq -c | awk '{print $1, $2}'
echo "== wc"; printf 'one two\nthree\n' > w; wc -l w | awk '{print $1}'; wc -w < w
echo "== head/tail"; seq 1 10 > s; head -3 s | tr '\n' ' '; tail -2 s | tr '\n' ' '; echo
echo "== cmp"; cp s s2; cmp s s2 && echo same; echo x >> s2; cmp -s s s2 || echo differ
echo "== md5sum"; echo pysc | md5sum
echo "== touch/test"; touch empty; test -f empty && test ! -s empty && echo "empty file ok"
test -d tree && test -L tree/link && echo "dir and link ok"
echo "== hard link"; echo data > h1; ln h1 h2; stat -c '%h' h1; cat h2
""")


def test_script_file_and_exit_status(platform):
    sh(platform, r"""
cat > script.sh <<'EOF'
#!/bin/busybox sh
echo "script args: $# $1 $2"
read line
echo "script stdin: $line"
exit 5
EOF
chmod +x script.sh
echo input-line | ./script.sh a b; echo "script status: $?"
cat > /tmp/pysc-bb-noexec.sh <<'EOF'
echo never
EOF
/tmp/pysc-bb-noexec.sh 2>/dev/null; echo "non-executable script: $?"
rm -f /tmp/pysc-bb-noexec.sh
./no-such-file 2>/dev/null; echo "missing command: $?"
cd /
rm -rf "$D"
exit 7
""", status=7, epilogue=False)


def test_exit_status_of_signalled_command(platform):
    # The first process is the init of the sandbox's pid namespace, which (as
    # on Linux, and in a container) cannot be killed by a signal sent from
    # inside; so the signalled shell is its child and init passes its status on.
    need(BUSYBOX)
    cp = run_pysc(platform, BUSYBOX, "sh", "-c", "sh -c 'kill -9 $$'; exit $?")
    assert cp.returncode == 137, show(cp)
    cp = run_pysc(platform, BUSYBOX, "sh", "-c", "sh -c 'kill -SEGV $$'; exit $?")
    assert cp.returncode == 128 + 11, show(cp)
    cp = run_pysc(platform, BUSYBOX, "sh", "-c", "exit 7")
    assert cp.returncode == 7, show(cp)


def test_stdin_passthrough(platform):
    need(BUSYBOX)
    data = "".join(f"line {i}\n" for i in range(2000))
    script = "sort -r | head -2 | tr a-z A-Z"
    cp = run_pysc(platform, BUSYBOX, "sh", "-c", script, input=data)
    native = run_native(BUSYBOX, "sh", "-c", script, input=data)
    assert_same(cp, native)
