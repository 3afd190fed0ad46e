/* Scheduling policies, nice values and I/O priorities a process sets for
 * itself, read back through every call that reports them.  Only what an
 * unprivileged process may do: real-time policies, lowering the nice value,
 * leaving SCHED_IDLE and dropping reset-on-fork are not tried.
 * Deterministic output. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IOPRIO_VALUE(class, data) (((class) << 13) | (data))

struct sched_attr {  /* linux/sched/types.h, which clashes with <sched.h> */
    unsigned int size, sched_policy;
    unsigned long long sched_flags;
    int sched_nice;
    unsigned int sched_priority;
    unsigned long long sched_runtime, sched_deadline, sched_period;
    unsigned int sched_util_min, sched_util_max;
};

static const char *err(long r)
{
    return r < 0 ? strerrorname_np(errno) : "ok";
}

static long ioprio_get(int which, int who)
{
    return syscall(SYS_ioprio_get, which, who);
}

static long ioprio_set(int which, int who, int prio)
{
    return syscall(SYS_ioprio_set, which, who, prio);
}

int main(void)
{
    struct sched_param sp = {0};
    printf("policy at start: %d\n", sched_getscheduler(0));
    const char *r = err(sched_setscheduler(0, SCHED_BATCH, &sp));
    printf("SCHED_BATCH: %s, now %d\n", r, sched_getscheduler(0));
    sp.sched_priority = 5;
    printf("a priority for SCHED_OTHER: %s\n", err(sched_setscheduler(0, SCHED_OTHER, &sp)));
    printf("an unknown policy: %s\n", err(sched_setscheduler(0, 42, &sp)));

    struct sched_attr attr;
    memset(&attr, 0, sizeof attr);
    r = err(syscall(SYS_sched_getattr, 0, &attr, sizeof attr, 0));
    printf("sched_getattr: %s, size %u policy %u flags %llu nice %d\n", r, attr.size, attr.sched_policy,
           (unsigned long long)attr.sched_flags, attr.sched_nice);
    printf("sched_getattr, small buffer: %s\n", err(syscall(SYS_sched_getattr, 0, &attr, 40, 0)));
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.sched_policy = SCHED_OTHER;
    attr.sched_nice = 7;
    r = err(syscall(SYS_sched_setattr, 0, &attr, 0));
    printf("sched_setattr nice 7: %s, getpriority %d, policy %d\n", r, getpriority(PRIO_PROCESS, 0),
           sched_getscheduler(0));
    attr.sched_flags = 0x80;
    printf("sched_setattr, an unknown flag: %s\n", err(syscall(SYS_sched_setattr, 0, &attr, 0)));
    struct timespec ts = {9, 9};
    r = err(sched_rr_get_interval(0, &ts));
    printf("sched_rr_get_interval: %s %ld.%09ld\n", r, (long)ts.tv_sec, ts.tv_nsec);

    printf("ioprio at start: %ld\n", ioprio_get(1, 0));
    r = err(ioprio_set(1, 0, IOPRIO_VALUE(2, 3)));
    printf("best effort 3: %s, now %#lx\n", r, ioprio_get(1, 0));
    r = err(ioprio_set(1, 0, IOPRIO_VALUE(3, 0)));
    printf("idle: %s, now %#lx\n", r, ioprio_get(1, 0));
    printf("class 7: %s\n", err(ioprio_set(1, 0, IOPRIO_VALUE(7, 0))));
    printf("bad which: %s\n", err(ioprio_get(9, 0)));
    printf("no such process: %s\n", err(ioprio_get(1, 99999)));
    setpgid(0, 0);  /* a group of its own (it may lead one already) */
    printf("own process group: %#lx\n", ioprio_get(2, 0));

    sp.sched_priority = 0;
    for (int reset = 0; reset < 2; reset++) {
        r = err(sched_setscheduler(0, SCHED_BATCH | (reset ? SCHED_RESET_ON_FORK : 0), &sp));
        printf("SCHED_BATCH, reset on fork %d: %s, now %#x\n", reset, r, sched_getscheduler(0));
        fflush(stdout);
        pid_t child = fork();
        if (child == 0) {
            printf("a child's policy (reset on fork: %d): %d, nice %d, ioprio %#lx\n", reset,
                   sched_getscheduler(0), getpriority(PRIO_PROCESS, 0), ioprio_get(1, 0));
            return 0;
        }
        waitpid(child, NULL, 0);
    }
    /* last: an unprivileged process may neither leave SCHED_IDLE nor drop reset-on-fork */
    r = err(sched_setscheduler(0, SCHED_IDLE | SCHED_RESET_ON_FORK, &sp));
    printf("SCHED_IDLE: %s, now %#x\n", r, sched_getscheduler(0));
    return 0;
}
