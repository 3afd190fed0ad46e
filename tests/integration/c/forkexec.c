/* fork, exec, wait and pipes: the usual life of a shell, in C.
 * Deterministic output (no pids printed). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void status(const char *what, int st)
{
    if (WIFEXITED(st))
        printf("%s: exited %d\n", what, WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        printf("%s: killed by signal %d\n", what, WTERMSIG(st));
    else
        printf("%s: status %#x\n", what, st);
    fflush(stdout);
}

int main(void)
{
    int st;
    pid_t me = getpid();
    fflush(stdout);

    /* fork + _exit */
    pid_t pid = fork();
    if (pid == 0)
        _exit(getppid() == me ? 7 : 99);
    waitpid(pid, &st, 0);
    status("fork/_exit (getppid is parent)", st);

    /* fork + exec with a pipe for stdout */
    int p[2];
    if (pipe(p) < 0)
        return 2;
    pid = fork();
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execl("/bin/echo", "echo", "hello", "from", "exec", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char buf[256];
    ssize_t n, total = 0;
    while ((n = read(p[0], buf + total, sizeof buf - 1 - total)) > 0)
        total += n;
    buf[total] = 0;
    close(p[0]);
    waitpid(pid, &st, 0);
    printf("exec output: %s", buf);
    status("exec /bin/echo", st);

    /* exec of a missing program */
    pid = fork();
    if (pid == 0) {
        execl("/nonexistent-pysc", "x", (char *)NULL);
        _exit(errno == ENOENT ? 42 : 43);
    }
    waitpid(pid, &st, 0);
    status("exec missing (ENOENT)", st);

    /* exec of a non-executable file */
    pid = fork();
    if (pid == 0) {
        execl("/etc/passwd", "x", (char *)NULL);
        _exit(errno == EACCES ? 44 : 45);
    }
    waitpid(pid, &st, 0);
    status("exec non-executable (EACCES)", st);

    /* a script with #! and its status */
    char script[] = "/tmp/pysc-forkexec-XXXXXX";
    int fd = mkstemp(script);
    const char *text = "#!/bin/sh\necho \"script got $# args: $1\"\nexit 5\n";
    if (write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        puts("write failed");
    fchmod(fd, 0755);
    close(fd);
    pid = fork();
    if (pid == 0) {
        execl(script, script, "arg1", (char *)NULL);
        _exit(127);
    }
    waitpid(pid, &st, 0);
    status("exec #! script", st);
    unlink(script);

    /* vfork + exec */
    pid = vfork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", "exit 9", (char *)NULL);
        _exit(127);
    }
    waitpid(pid, &st, 0);
    status("vfork + exec sh -c 'exit 9'", st);

    /* posix_spawn */
    char *args[] = { "sh", "-c", "echo spawned; exit 3", NULL };
    fflush(stdout);
    if (posix_spawn(&pid, "/bin/sh", NULL, NULL, args, environ) == 0) {
        waitpid(pid, &st, 0);
        status("posix_spawn", st);
    } else {
        puts("posix_spawn failed");
    }

    /* a child killed by a signal */
    pid = fork();
    if (pid == 0) {
        pause();
        _exit(0);
    }
    kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
    status("child killed by SIGTERM", st);
    pid = fork();
    if (pid == 0) {
        raise(SIGSEGV);
        _exit(0);
    }
    waitpid(pid, &st, 0);
    status("child raising SIGSEGV", st);

    /* a stopped and continued child */
    pid = fork();
    if (pid == 0) {
        raise(SIGSTOP);
        _exit(11);
    }
    waitpid(pid, &st, WUNTRACED);
    printf("stopped child: WIFSTOPPED=%d sig=%d\n", WIFSTOPPED(st), WSTOPSIG(st));
    kill(pid, SIGCONT);
    waitpid(pid, &st, 0);
    status("continued child", st);

    /* several children reaped with wait(-1) */
    int sum = 0;
    for (int i = 1; i <= 5; i++)
        if (fork() == 0)
            _exit(i);
    for (int i = 0; i < 5; i++) {
        if (wait(&st) > 0 && WIFEXITED(st))
            sum += WEXITSTATUS(st);
    }
    printf("wait() x5, sum of statuses: %d\n", sum);
    pid = wait(&st);
    printf("wait() with no children: %d %s\n", (int)pid, strerrorname_np(errno));

    /* a grandchild orphaned: reparented, parent doesn't see it */
    if (pipe(p) < 0)
        return 2;
    pid = fork();
    if (pid == 0) {
        if (fork() == 0) {
            close(p[0]);
            usleep(100000);
            if (write(p[1], "orphan done\n", 12) != 12)
                _exit(1);
            _exit(0);
        }
        _exit(0);
    }
    close(p[1]);
    waitpid(pid, &st, 0);
    total = 0;
    while ((n = read(p[0], buf + total, sizeof buf - 1 - total)) > 0)
        total += n;
    buf[total] = 0;
    printf("grandchild: %s", buf);

    /* close-on-exec */
    fd = open("/etc/passwd", O_RDONLY | O_CLOEXEC);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "test -e /proc/self/fd/%d && echo leaked || echo cloexec ok", fd);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    waitpid(pid, &st, 0);
    fflush(stdout);
    return 0;
}
