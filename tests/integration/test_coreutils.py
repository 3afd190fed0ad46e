"""The system's dynamically linked coreutils, findutils, tar, sed and mawk,
inside the sandbox and natively: same stdout, same exit status.  Host files
are seen through the sandbox's root, so their metadata must match; what a
sandbox legitimately shows differently (device numbers, atime, the size of a
directory in the memory overlay) is left out."""
from __future__ import annotations

import re

from .conftest import compare, need, run_native, run_pysc, show

SH = "/bin/sh"


def test_ls_la_etc(platform):
    need("ls")
    # Not the "total" line: it counts the blocks of "..", the sandbox's root,
    # which is the overlay's own directory.
    compare(platform, SH, "-c", "ls -la /etc | tail -n +2")
    compare(platform, "ls", "-la", "/usr/share/common-licenses")


def test_ls_variants(platform):
    need("ls")
    compare(platform, SH, "-c",
            "ls -1 /usr/bin | head -50; ls -ld / /usr /etc/passwd; ls -i /etc/passwd; "
            "ls -L -l /bin/sh | awk '{print $1, $5}'; ls /nonexistent-pysc 2>&1; echo status $?")


def test_stat_statx(platform):
    need("stat")
    # Full `stat` uses statx; the device and atime may differ legitimately.
    fmt = "%n|%s|%b|%F|%a|%A|%u|%U|%g|%G|%h|%i|%Y|%y|%Z"
    compare(platform, "stat", "-c", fmt, "/etc/passwd", "/etc", "/bin", "/usr/bin/ls")
    compare(platform, "stat", "-L", "-c", fmt, "/bin/sh")
    compare(platform, "stat", "-f", "-c", "%n", "/")
    cp = run_pysc(platform, "stat", "/etc/passwd")
    assert cp.returncode == 0 and "File: /etc/passwd" in cp.stdout and "Size:" in cp.stdout, show(cp)
    cp = run_pysc(platform, "stat", "/nonexistent-pysc")
    assert cp.returncode == 1 and "No such file or directory" in cp.stderr, show(cp)


def test_text_tools(platform):
    need("cat", "sort", "wc", "sed", "awk", "head", "tr", "cut", "uniq", "md5sum")
    compare(platform, SH, "-c", r"""
cat /etc/os-release
echo "== sort"; sort /etc/passwd
echo "== sort -t: -k3n"; sort -t: -k3,3n /etc/passwd | cut -d: -f1,3
echo "== wc"; wc /etc/passwd /etc/os-release /etc/services
echo "== wc -l stdin"; wc -l < /etc/services
echo "== sed"; sed -n 's/^\([^:]*\):.*:\([^:]*\)$/\1 -> \2/p' /etc/passwd
sed -e '1d' -e 's/=/ = /' /etc/os-release | head -3
echo "== awk (mawk)"; awk -F: '$3 < 10 {n++; s = s $1 " "} END {print n, s}' /etc/passwd
awk 'BEGIN {for (i = 1; i <= 5; i++) printf "%d^2=%d ", i, i*i; print ""}'
echo "== pipeline"; cat /etc/services | tr -s ' \t' ' ' | cut -d' ' -f1 | sort | uniq | head -20
echo "== md5sum"; md5sum /etc/passwd /etc/os-release
echo "== cat -n of several"; cat -n /etc/hostname /etc/os-release | tail -3
echo "== head -c"; head -c 100 /etc/services | od -c | head -3
echo "== missing"; cat /nonexistent-pysc; echo "cat status $?"
""")


def test_find_du_on_host_files(platform):
    need("find", "du", "sort", "head")
    compare(platform, SH, "-c", "find /usr/share/doc -maxdepth 1 | sort | head -20")
    compare(platform, SH, "-c",
            "find /usr/share/common-licenses -type f -name 'GPL*' | sort; "
            "find /etc -maxdepth 1 -name 'pass*' -type f | sort; "
            "find /usr/share/doc -maxdepth 2 -type f -name copyright | wc -l; "
            "du -s /usr/share/common-licenses; du -sb /usr/share/common-licenses; "
            "du -a /usr/share/common-licenses | sort -k2 | head -5")


def test_tree_in_tmp_cp_tar(platform):
    need("cp", "tar", "find", "du", "touch", "md5sum")
    compare(platform, SH, "-c", r"""
umask 022
D=$(mktemp -d /tmp/pysc-cu.XXXXXX) || exit 99
cd "$D" || exit 98
mkdir -p tree/a/b tree/c
printf 'hello\n' > tree/a/b/f1
seq 1 1000 > tree/c/f2
ln -s a/b/f1 tree/link
ln tree/c/f2 tree/c/f2-hard
chmod 640 tree/c/f2
touch -h -d @1000000000 tree/a/b/f1 tree/c/f2 tree/link tree/a/b tree/a tree/c tree
echo "== cp -a"; cp -a tree copy
find copy -printf '%p %y %m %n %s %T@\n' | grep -v '^copy[^ ]* d ' | sort
find copy -type d -printf '%p %m %T@\n' | sort
readlink copy/link; cat copy/link
stat -c '%h %i' copy/c/f2 copy/c/f2-hard | awk '{print $1}' | uniq -c | awk '{print $1, $2}'
echo "== du"; du -b copy/c/f2 copy/a/b/f1; du -sk copy > /dev/null && echo "du -s ok"
echo "== tar"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf t.tar tree
tar tvf t.tar | awk '{print $1, $3, $NF}'
md5sum < t.tar
mkdir x; tar -C x -xf t.tar; cmp x/tree/c/f2 tree/c/f2 && echo "tar round trip ok"
tar czf t.tgz tree && tar tzf t.tgz | sort
echo "== rm -r"; rm -r copy x; ls
echo "== mv"; mv tree/c tree/moved; ls tree; cat tree/moved/f2-hard | wc -l
cd /; rm -rf "$D"
""")


def test_uname_and_dmesg(platform):
    need("uname", "dmesg")
    cp = run_pysc(platform, "uname", "-r")
    assert (cp.returncode, cp.stdout) == (0, "4.4.0\n"), show(cp)
    cp = run_pysc(platform, "uname", "-s", "-m")
    assert (cp.returncode, cp.stdout) == (0, "Linux x86_64\n"), show(cp)
    cp = run_pysc(platform, "dmesg")
    lines = cp.stdout.strip().splitlines()
    assert cp.returncode == 0 and lines and "Ready!" in lines[-1], show(cp)
    assert all(re.match(r"^\[\s*\d+\.\d+\] ", line) for line in lines), show(cp)


def test_exit_status_passthrough(platform):
    need("true", "false", "test")
    assert run_pysc(platform, "true").returncode == 0
    cp = run_pysc(platform, "false")
    assert cp.returncode == 1, show(cp)
    native = run_native("ls", "/nonexistent-pysc")
    cp = run_pysc(platform, "ls", "/nonexistent-pysc")
    assert cp.returncode == native.returncode == 2, show(cp)
