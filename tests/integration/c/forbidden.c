/* System calls a sandboxed program must never get to succeed: each runs in
 * a child of its own, and the parent prints one line per call:
 *     NAME: ret=R errno=E      (the call returned)
 *     NAME: killed by signal N (the child died in the call)
 * Only meant to run inside the sandbox. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long do_int80_getpid(void)
{
    long ret;
    /* the i386 ABI: eax = 20 (getpid) */
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
    if (ret < 0 && ret > -4096) {
        errno = (int)-ret;
        return -1;
    }
    return ret;
}

static long do_x32_getpid(void)
{
    return syscall(0x40000000L | SYS_getpid);
}

static long call(const char *name)
{
    if (!strcmp(name, "mount"))
        return syscall(SYS_mount, "/dev/vda", "/mnt", "ext4", MS_RDONLY, NULL);
    if (!strcmp(name, "mount-bind-root"))
        return syscall(SYS_mount, "/", "/tmp", NULL, MS_BIND | MS_REC, NULL);
    if (!strcmp(name, "umount2-root"))
        return syscall(SYS_umount2, "/", MNT_DETACH);
    if (!strcmp(name, "ptrace-traceme"))
        return syscall(SYS_ptrace, PTRACE_TRACEME, 0, NULL, NULL);
    if (!strcmp(name, "ptrace-attach-parent"))
        return syscall(SYS_ptrace, PTRACE_ATTACH, getppid(), NULL, NULL);
    if (!strcmp(name, "bpf-prog-load")) {
        struct bpf_insn insns[2] = {
            { .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0 },
            { .code = BPF_JMP | BPF_EXIT },
        };
        union bpf_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
        attr.insns = (uintptr_t)insns;
        attr.insn_cnt = 2;
        attr.license = (uintptr_t)"GPL";
        return syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr);
    }
    if (!strcmp(name, "bpf-map-create")) {
        union bpf_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.map_type = BPF_MAP_TYPE_ARRAY;
        attr.key_size = 4;
        attr.value_size = 4;
        attr.max_entries = 1;
        return syscall(SYS_bpf, BPF_MAP_CREATE, &attr, sizeof attr);
    }
    if (!strcmp(name, "kexec_load"))
        return syscall(SYS_kexec_load, 0UL, 0UL, NULL, 0UL);
    if (!strcmp(name, "kexec_file_load"))
        return syscall(SYS_kexec_file_load, -1, -1, 0UL, "", 0UL);
    if (!strcmp(name, "open_by_handle_at")) {
        /* a struct file_handle for ext4 (type 1): 8 bytes of handle */
        struct { unsigned int bytes; int type; unsigned char h[8]; } fh = { 8, 1, { 2, 0, 0, 0, 0, 0, 0, 0 } };
        int dfd = open("/", O_RDONLY | O_DIRECTORY);
        return syscall(SYS_open_by_handle_at, dfd, &fh, O_RDONLY);
    }
    if (!strcmp(name, "init_module"))
        return syscall(SYS_init_module, "\x7f" "ELF", 4UL, "");
    if (!strcmp(name, "finit_module")) {
        int fd = open("/etc/passwd", O_RDONLY);
        return syscall(SYS_finit_module, fd, "", 0);
    }
    if (!strcmp(name, "delete_module"))
        return syscall(SYS_delete_module, "loop", O_NONBLOCK);
    if (!strcmp(name, "iopl"))
        return syscall(SYS_iopl, 3);
    if (!strcmp(name, "ioperm"))
        return syscall(SYS_ioperm, 0x80UL, 1UL, 1);
    if (!strcmp(name, "swapon"))
        return syscall(SYS_swapon, "/etc/passwd", 0);
    if (!strcmp(name, "clock_settime")) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return syscall(SYS_clock_settime, CLOCK_REALTIME, &ts);
    }
    if (!strcmp(name, "settimeofday"))
    {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        struct { long s, us; } tv = { ts.tv_sec, ts.tv_nsec / 1000 };
        return syscall(SYS_settimeofday, &tv, NULL);
    }
    if (!strcmp(name, "perf_event_open")) {
        unsigned char attr[128];
        memset(attr, 0, sizeof attr);
        ((unsigned int *)attr)[1] = sizeof attr;  /* size; type 0 = HARDWARE, config 0 = CPU cycles */
        return syscall(SYS_perf_event_open, attr, 0, -1, -1, 0UL);
    }
    if (!strcmp(name, "process_vm_writev-parent")) {
        char buf[1] = { 0 };
        struct { void *base; size_t len; } l = { buf, 1 }, r = { (void *)0x10000, 1 };
        return syscall(SYS_process_vm_writev, getppid(), &l, 1UL, &r, 1UL, 0UL);
    }
    if (!strcmp(name, "int80-getpid"))
        return do_int80_getpid();
    if (!strcmp(name, "x32-getpid"))
        return do_x32_getpid();
    if (!strcmp(name, "unknown-nr-1000"))
        return syscall(1000);
    if (!strcmp(name, "nr-minus-1"))
        return syscall(-1L);
    errno = 0;
    fprintf(stderr, "unknown call %s\n", name);
    exit(3);
}

int main(int argc, char **argv)
{
    static const char *names[] = {
        "mount", "mount-bind-root", "umount2-root", "ptrace-traceme", "ptrace-attach-parent",
        "bpf-prog-load", "bpf-map-create", "kexec_load", "kexec_file_load", "open_by_handle_at",
        "init_module", "finit_module", "delete_module", "iopl", "ioperm", "swapon",
        "clock_settime", "settimeofday", "perf_event_open", "process_vm_writev-parent",
        "int80-getpid", "x32-getpid", "unknown-nr-1000", "nr-minus-1", NULL,
    };
    const char **list = argc > 1 ? (const char **)argv + 1 : names;
    for (; *list; list++) {
        int p[2];
        if (pipe(p) < 0) { perror("pipe"); return 2; }
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) { perror("fork"); return 2; }
        if (pid == 0) {
            close(p[0]);
            errno = 0;
            long r = call(*list);
            int e = errno;
            char line[128];
            int n = snprintf(line, sizeof line, "ret=%ld errno=%s", r,
                             r < 0 ? (strerrorname_np(e) ? strerrorname_np(e) : "?") : "none");
            if (write(p[1], line, n) != n)
                _exit(4);
            _exit(0);
        }
        close(p[1]);
        char line[128] = "";
        ssize_t n = read(p[0], line, sizeof line - 1);
        close(p[0]);
        int st;
        if (waitpid(pid, &st, 0) < 0) { perror("waitpid"); return 2; }
        if (WIFSIGNALED(st))
            printf("%s: killed by signal %d\n", *list, WTERMSIG(st));
        else if (n > 0)
            printf("%s: %.*s\n", *list, (int)n, line);
        else
            printf("%s: no answer, exit status %d\n", *list, WEXITSTATUS(st));
    }
    return 0;
}
