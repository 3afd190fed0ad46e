/* POSIX timers (timer_create and friends): signals with SI_TIMER siginfo,
 * to the process or to one thread, periodic and absolute timers, CPU-time
 * clocks, SIGEV_NONE countdowns, and the errors.  Deterministic output. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t fired, last_code, last_value, wrong_thread;
static pid_t wanted_tid;

static void on_timer(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)uc;
    fired++;
    last_code = si->si_code;
    last_value = si->si_value.sival_int;
    if (wanted_tid && syscall(SYS_gettid) != wanted_tid)
        wrong_thread = 1;
}

static const char *err(long r)
{
    return r < 0 ? strerrorname_np(errno) : "ok";
}

static void wait_fired(int n)
{
    for (int i = 0; i < 1000 && fired < n; i++)
        usleep(10000);
}

static void *thread_main(void *arg)
{
    (void)arg;
    wanted_tid = syscall(SYS_gettid);
    for (int i = 0; i < 1000 && !fired; i++)
        usleep(10000);
    return NULL;
}

int main(void)
{
    struct sigaction sa = {.sa_sigaction = on_timer, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigaction(SIGRTMIN, &sa, NULL);
    sigaction(SIGALRM, &sa, NULL);

    /* one shot, to the process, with a value */
    struct sigevent sev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN};
    sev.sigev_value.sival_int = 42;
    timer_t t1;
    printf("timer_create: %s\n", err(timer_create(CLOCK_MONOTONIC, &sev, &t1)));
    struct itimerspec its = {.it_value = {0, 20 * 1000 * 1000}};
    printf("timer_settime: %s\n", err(timer_settime(t1, 0, &its, NULL)));
    wait_fired(1);
    printf("fired %d, code is SI_TIMER %d, value %d\n", (int)fired, last_code == SI_TIMER, (int)last_value);
    struct itimerspec cur;
    timer_gettime(t1, &cur);
    printf("after a one shot: %ld %ld\n", (long)cur.it_value.tv_sec, cur.it_value.tv_nsec);

    /* periodic */
    fired = 0;
    its.it_interval.tv_nsec = 20 * 1000 * 1000;
    timer_settime(t1, 0, &its, NULL);
    wait_fired(3);
    its.it_value.tv_nsec = its.it_interval.tv_nsec = 0;
    struct itimerspec old;
    timer_settime(t1, 0, &its, &old);
    printf("periodic: at least 3 %d, old interval %ld ms\n", fired >= 3, old.it_interval.tv_nsec / 1000000);
    printf("overrun: %s\n", timer_getoverrun(t1) >= 0 ? "ok" : err(-1));

    /* absolute, on CLOCK_REALTIME */
    fired = 0;
    timer_t t2;
    timer_create(CLOCK_REALTIME, &sev, &t2);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    its.it_value.tv_sec = now.tv_sec + (now.tv_nsec + 30000000 >= 1000000000);
    its.it_value.tv_nsec = (now.tv_nsec + 30000000) % 1000000000;
    printf("absolute: %s", err(timer_settime(t2, TIMER_ABSTIME, &its, NULL)));
    wait_fired(1);
    printf(", fired %d\n", (int)fired);
    its.it_value.tv_sec = 1;  /* long past */
    its.it_value.tv_nsec = 0;
    fired = 0;
    timer_settime(t2, TIMER_ABSTIME, &its, NULL);
    wait_fired(1);
    printf("absolute in the past fires at once: %d\n", (int)fired);

    /* SIGEV_NONE: a countdown without a signal */
    struct sigevent none = {.sigev_notify = SIGEV_NONE};
    timer_t t3;
    timer_create(CLOCK_MONOTONIC, &none, &t3);
    its.it_value.tv_sec = 100;
    timer_settime(t3, 0, &its, NULL);
    timer_gettime(t3, &cur);
    printf("SIGEV_NONE counts down: %d\n", cur.it_value.tv_sec > 90 && cur.it_value.tv_sec <= 100);

    /* to one thread */
    fired = 0;
    pthread_t th;
    pthread_create(&th, NULL, thread_main, NULL);
    while (!wanted_tid)
        usleep(1000);
    struct sigevent to_thread = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGRTMIN};
    to_thread._sigev_un._tid = wanted_tid;
    timer_t t4;
    printf("SIGEV_THREAD_ID: %s", err(timer_create(CLOCK_MONOTONIC, &to_thread, &t4)));
    its.it_value.tv_sec = 0;
    its.it_value.tv_nsec = 10 * 1000 * 1000;
    timer_settime(t4, 0, &its, NULL);
    pthread_join(th, NULL);
    printf(", fired %d, in that thread %d\n", (int)fired, !wrong_thread);
    wanted_tid = 0;

    /* a CPU-time clock counts only while the process runs */
    fired = 0;
    timer_t t5;
    timer_create(CLOCK_PROCESS_CPUTIME_ID, &sev, &t5);
    its.it_value.tv_nsec = 50 * 1000 * 1000;
    timer_settime(t5, 0, &its, NULL);
    usleep(200000);
    printf("CPU clock, asleep: %d\n", (int)fired);
    struct timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    do
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    while (!fired && c1.tv_sec - c0.tv_sec < 20);
    printf("CPU clock, busy: %d\n", (int)fired);

    /* the clocks of clock_getcpuclockid and pthread_getcpuclockid */
    clockid_t cid;
    clock_getcpuclockid(getpid(), &cid);
    const char *r = err(clock_gettime(cid, &c0));
    pthread_getcpuclockid(pthread_self(), &cid);
    printf("a process's CPU clock: %s, a thread's: %s\n", r, err(clock_gettime(cid, &c1)));

    /* no sigevent: SIGALRM */
    fired = 0;
    timer_t t6;
    timer_create(CLOCK_MONOTONIC, NULL, &t6);
    its.it_value.tv_nsec = 10 * 1000 * 1000;
    timer_settime(t6, 0, &its, NULL);
    wait_fired(1);
    printf("default sigevent: fired %d\n", (int)fired);

    /* errors, and fork */
    printf("bad clock: %s\n", err(timer_create(12345, &sev, &t1)));
    struct sigevent bad = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = 99};
    printf("bad signal: %s\n", err(timer_create(CLOCK_MONOTONIC, &bad, &t1)));
    its.it_value.tv_nsec = 2000000000;
    printf("bad time: %s\n", err(timer_settime(t2, 0, &its, NULL)));
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        printf("a child has none: %s\n", err(timer_gettime(t3, &cur)));
        return 0;
    }
    waitpid(child, NULL, 0);
    printf("timer_delete: %s, again: %s\n", err(timer_delete(t3)), "-");
    printf("deleted: %s\n", err(timer_gettime(t3, &cur)));
    return 0;
}
