/* futex_waitv: one wait on several futexes; the index of the one woken,
 * EAGAIN on a changed value, ETIMEDOUT, and bad arguments.
 * Deterministic output. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static atomic_uint words[3];

static const char *err(long r)
{
    return r < 0 ? strerrorname_np(errno) : "ok";
}

static long waitv(struct futex_waitv *w, int n, long timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += timeout_ms * 1000000;
    ts.tv_sec += ts.tv_nsec / 1000000000;
    ts.tv_nsec %= 1000000000;
    return syscall(SYS_futex_waitv, w, n, 0, timeout_ms ? &ts : NULL, CLOCK_MONOTONIC);
}

static void *waker(void *arg)
{
    usleep(50000);
    atomic_store(&words[(intptr_t)arg], 1);
    syscall(SYS_futex, &words[(intptr_t)arg], FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    return NULL;
}

int main(void)
{
    struct futex_waitv w[3];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 3; i++) {
        w[i].uaddr = (uintptr_t)&words[i];
        w[i].val = 0;
        w[i].flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
    }
    pthread_t th;
    pthread_create(&th, NULL, waker, (void *)(intptr_t)1);
    long r = waitv(w, 3, 0);
    printf("woken: %s, index %ld\n", err(r), r);
    pthread_join(th, NULL);
    printf("a changed value: %s\n", err(waitv(w, 3, 0)));
    atomic_store(&words[1], 0);
    printf("timeout: %s\n", err(waitv(w, 3, 30)));
    w[0].flags = 0;
    printf("no size flag: %s\n", err(waitv(w, 3, 0)));
    w[0].flags = FUTEX_32;
    printf("none: %s\n", err(waitv(w, 0, 0)));
    printf("flags: %s\n", err(syscall(SYS_futex_waitv, w, 3, 1, NULL, CLOCK_MONOTONIC)));
    return 0;
}
