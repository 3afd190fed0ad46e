/* Error paths of common system calls: each line names the call and prints
 * its result and errno name.  Run natively and inside the sandbox; the two
 * outputs must be identical. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void report(const char *what, long ret)
{
    int e = errno;
    if (ret < 0)
        printf("%-44s ret=%ld errno=%s\n", what, ret, strerrorname_np(e) ? strerrorname_np(e) : "?");
    else
        printf("%-44s ret=ok\n", what);
    fflush(stdout);
    errno = 0;
}

#define CHECK(what, expr) do { errno = 0; long _r = (long)(expr); report(what, _r); } while (0)

int main(void)
{
    char buf[64];
    char path[] = "/tmp/pysc-errors-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) { perror("mkstemp"); return 2; }
    if (write(fd, "0123456789", 10) != 10) { perror("write"); return 2; }
    lseek(fd, 0, SEEK_SET);
    int rdonly = open("/etc/passwd", O_RDONLY);

    /* EFAULT */
    CHECK("read(fd, (void*)1, 10)", syscall(SYS_read, fd, (void *)1, 10));
    CHECK("write(fd, (void*)1, 10)", syscall(SYS_write, fd, (void *)1, 10));
    CHECK("pread64(fd, (void*)8, 10, 0)", syscall(SYS_pread64, fd, (void *)8, 10, 0));
    CHECK("fstat(fd, NULL)", syscall(SYS_fstat, fd, NULL));
    CHECK("stat(NULL, &st)", syscall(SYS_stat, NULL, buf));
    CHECK("open((char*)1, O_RDONLY)", syscall(SYS_open, (char *)1, O_RDONLY));
    CHECK("newfstatat(AT_FDCWD, \"/etc\", (void*)16, 0)", syscall(SYS_newfstatat, AT_FDCWD, "/etc", (void *)16, 0));
    CHECK("pipe2((int*)1, 0)", syscall(SYS_pipe2, (int *)1, 0));
    CHECK("getcwd((char*)1, 100)", syscall(SYS_getcwd, (char *)1, 100));
    CHECK("uname(NULL)", syscall(SYS_uname, NULL));

    /* EBADF */
    CHECK("close(12345)", close(12345));
    CHECK("read(999, buf, 10)", read(999, buf, 10));
    CHECK("write(-1, buf, 1)", write(-1, buf, 1));
    CHECK("fstat(999, &st)", syscall(SYS_fstat, 999, buf));
    CHECK("dup(999)", dup(999));
    CHECK("dup2(fd, -1)", dup2(fd, -1));
    CHECK("write(O_RDONLY fd, ...)", write(rdonly, "x", 1));
    CHECK("lseek(999, 0, SEEK_SET)", lseek(999, 0, SEEK_SET));
    CHECK("fchdir(999)", fchdir(999));
    CHECK("openat(999, \"rel\", O_RDONLY)", openat(999, "rel", O_RDONLY));

    /* EINVAL */
    CHECK("lseek(fd, 0, 99)", lseek(fd, 0, 99));
    CHECK("lseek(fd, -1, SEEK_SET)", lseek(fd, -1, SEEK_SET));
    CHECK("fcntl(fd, 9999)", fcntl(fd, 9999));
    CHECK("pipe2(fds, 0xffff)", syscall(SYS_pipe2, buf, 0xffff));
    CHECK("dup3(fd, fd, 0)", dup3(fd, fd, 0));
    CHECK("dup3(fd, 100, 0xff)", dup3(fd, 100, 0xff));
    CHECK("readlink(\"/etc/passwd\")", readlink("/etc/passwd", buf, sizeof buf));
    CHECK("kill(getpid(), 999)", kill(getpid(), 999));
    CHECK("mmap(NULL, 0, ...)", (long)mmap(NULL, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == -1 ? -1 : 0);
    CHECK("clock_gettime(999, &ts)", syscall(SYS_clock_gettime, 999, buf));
    CHECK("open(\"/tmp\", O_TMPFILE|O_RDONLY)", open("/tmp", O_TMPFILE | O_RDONLY, 0600));
    {
        struct open_how how = { .flags = 1ULL << 40 };
        CHECK("openat2(unknown flag)", syscall(SYS_openat2, AT_FDCWD, "/etc/passwd", &how, sizeof how));
        struct open_how how2 = { .flags = O_RDONLY, .resolve = 1ULL << 30 };
        CHECK("openat2(unknown resolve)", syscall(SYS_openat2, AT_FDCWD, "/etc/passwd", &how2, sizeof how2));
        struct open_how how3 = { .flags = O_RDONLY, .mode = 0644 };
        CHECK("openat2(mode without O_CREAT)", syscall(SYS_openat2, AT_FDCWD, "/etc/passwd", &how3, sizeof how3));
        CHECK("openat2(size 8)", syscall(SYS_openat2, AT_FDCWD, "/etc/passwd", &how3, 8));
        struct open_how how4 = { .flags = O_RDONLY, .resolve = RESOLVE_BENEATH };
        CHECK("openat2(RESOLVE_BENEATH, absolute)", syscall(SYS_openat2, AT_FDCWD, "/etc/passwd", &how4, sizeof how4));
    }
    /* open(2) ignores unknown flag bits (Linux answers with an fd) */
    CHECK("open(0xdeadbeef minus O_CREAT/TMPFILE/DIR/ACCMODE)",
          open("/etc/passwd", 0xdeadbeef & ~O_CREAT & ~O_TMPFILE & ~O_DIRECTORY & ~O_ACCMODE));
    CHECK("open(O_CREAT|O_DIRECTORY, new name)", open("/tmp/pysc-errors-nonexistent", O_RDWR | O_CREAT | O_DIRECTORY, 0600));
    CHECK("socket(12345, SOCK_STREAM, 0)", socket(12345, SOCK_STREAM, 0));
    CHECK("socket(AF_UNIX, 999, 0)", socket(AF_UNIX, 999, 0));
    CHECK("utimensat(bad nsec)", ({ struct timespec ts[2] = {{0, 2000000000L}, {0, 0}};
                                    utimensat(AT_FDCWD, path, ts, 0); }));

    /* path errors */
    CHECK("open(\"/etc/passwd/x\")", open("/etc/passwd/x", O_RDONLY));
    CHECK("open(\"/nonexistent-pysc\")", open("/nonexistent-pysc", O_RDONLY));
    CHECK("open(\"/etc\", O_WRONLY)", open("/etc", O_WRONLY));
    CHECK("open(\"/etc/passwd\", O_DIRECTORY)", open("/etc/passwd", O_RDONLY | O_DIRECTORY));
    CHECK("open(existing, O_CREAT|O_EXCL)", open(path, O_RDWR | O_CREAT | O_EXCL, 0600));
    CHECK("mkdir(\"/tmp\")", mkdir("/tmp", 0755));
    CHECK("rmdir(\"/etc/passwd\")", rmdir("/etc/passwd"));
    CHECK("unlink(\"/tmp\")", unlink("/tmp"));
    CHECK("rmdir(\"/\")", rmdir("/"));
    CHECK("chdir(\"/etc/passwd\")", chdir("/etc/passwd"));
    CHECK("symlink(x, existing)", symlink("x", path));
    CHECK("link(dir, new)", link("/tmp", "/tmp/pysc-errors-dirlink"));
    CHECK("rename(dir, own subdir)", rename("/tmp", "/tmp/sub"));
    {
        char longname[300];
        memset(longname, 'a', sizeof longname - 1);
        longname[0] = '/';
        longname[sizeof longname - 1] = 0;
        CHECK("open(name of 298 chars)", open(longname, O_RDONLY));
    }
    {
        int dfd = open("/etc", O_RDONLY | O_DIRECTORY);
        CHECK("read(directory fd)", read(dfd, buf, sizeof buf));
        CHECK("getdents64(regular file)", syscall(SYS_getdents64, fd, buf, sizeof buf));
        CHECK("ftruncate(directory fd)", ftruncate(dfd, 0));
        close(dfd);
    }

    /* others */
    CHECK("ioctl(file, TIOCGWINSZ)", ioctl(fd, TIOCGWINSZ, buf));
    CHECK("wait4(-1) with no child", wait4(-1, NULL, WNOHANG, NULL));
    CHECK("kill(INT_MAX, 0)", kill(2147483647, 0));
    {
        int p[2];
        if (pipe(p) == 0) {
            close(p[0]);
            signal(SIGPIPE, SIG_IGN);
            CHECK("write(pipe without reader)", write(p[1], "x", 1));
            CHECK("lseek(pipe)", lseek(p[1], 0, SEEK_SET));
            close(p[1]);
        }
    }
    CHECK("read(fd, buf, 0) on file", read(fd, buf, 0));
    CHECK("O_NONBLOCK read on empty pipe", ({ int q[2]; pipe2(q, O_NONBLOCK); long r = read(q[0], buf, 1);
                                              int e = errno; close(q[0]); close(q[1]); errno = e; r; }));
    CHECK("access(\"/etc/shadow-nonexistent\", F_OK)", access("/etc/shadow-nonexistent", F_OK));
    CHECK("syscall(1000)", syscall(1000));

    close(fd);
    unlink(path);
    unlink("/tmp/pysc-errors-nonexistent");  /* created by kernels before 6.4 */
    return 0;
}
