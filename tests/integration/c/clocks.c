/* Clocks read through libc (the vDSO where there is one) agree with the
 * clock syscalls: for every clock a libc read lies between two syscall reads,
 * libc reads never go back, for longer than a second (the kvm platform
 * republishes its clock lines once a second), in two threads at once and in
 * a forked child.  gettimeofday, time and clock_getres likewise; sleeps last
 * as long as the clock says; CPU-time clocks and bad clock ids.  With an
 * argument N, it instead reads CLOCK_MONOTONIC N times through libc and
 * prints CLOCK_REALTIME once (a test counts its syscalls and compares the
 * time with the host's).  Deterministic output otherwise. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const struct { clockid_t id; const char *name; } clocks[] = {
    {CLOCK_REALTIME, "REALTIME"}, {CLOCK_MONOTONIC, "MONOTONIC"}, {CLOCK_MONOTONIC_RAW, "MONOTONIC_RAW"},
    {CLOCK_REALTIME_COARSE, "REALTIME_COARSE"}, {CLOCK_MONOTONIC_COARSE, "MONOTONIC_COARSE"},
    {CLOCK_BOOTTIME, "BOOTTIME"}, {CLOCK_TAI, "TAI"},
};
#define NCLOCKS (sizeof clocks / sizeof clocks[0])

static long long ns_of(const struct timespec *ts)
{
    return ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

static long long sys_ns(clockid_t clk)
{
    struct timespec ts;
    if (syscall(SYS_clock_gettime, clk, &ts) != 0)
        return -1;
    return ns_of(&ts);
}

static long long libc_ns(clockid_t clk)
{
    struct timespec ts;
    if (clock_gettime(clk, &ts) != 0)
        return -1;
    return ns_of(&ts);
}

static double elapsed(long long since)
{
    return (sys_ns(CLOCK_MONOTONIC) - since) / 1e9;
}

/* Between syscall reads, and never backwards, for `seconds`; the number of
 * failures. */
static int check_clock(clockid_t clk, double seconds)
{
    int bad = 0;
    long long last = 0, start = sys_ns(CLOCK_MONOTONIC);
    do {
        for (int i = 0; i < 50; i++) {
            long long a = sys_ns(clk), b = libc_ns(clk), c = sys_ns(clk);
            long long d = libc_ns(clk);
            if (a < 0 || b < 0 || c < 0 || !(a <= b && b <= c) || d < b || b < last)
                bad++;
            last = d;
        }
    } while (elapsed(start) < seconds);
    return bad;
}

static void *reader(void *arg)
{
    (void)arg;
    return (void *)(long)check_clock(CLOCK_MONOTONIC, 1.2);
}

static void count_only(long n)
{
    struct timespec ts;
    for (long i = 0; i < n; i++)
        clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("read %ld times, realtime %lld\n", n, libc_ns(CLOCK_REALTIME));
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        count_only(atol(argv[1]));
        return 0;
    }
    printf("AT_SYSINFO_EHDR: %s\n", getauxval(AT_SYSINFO_EHDR) ? "set" : "none");

    for (size_t i = 0; i < NCLOCKS; i++) {
        int bad = check_clock(clocks[i].id, i == 1 ? 1.5 : 0.05);
        printf("%s: %s\n", clocks[i].name, bad ? "out of order" : "ordered");
    }

    pthread_t th;
    pthread_create(&th, NULL, reader, NULL);
    int bad = check_clock(CLOCK_REALTIME, 1.2);
    void *other;
    pthread_join(th, &other);
    printf("two threads: %s\n", bad || other ? "out of order" : "ordered");

    pid_t pid = fork();
    if (pid == 0)
        _exit(check_clock(CLOCK_MONOTONIC, 0.1) ? 1 : 0);
    int status;
    waitpid(pid, &status, 0);
    printf("forked child: %s\n", WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "ordered" : "out of order");

    int tv_bad = 0, time_bad = 0;
    for (int i = 0; i < 200; i++) {
        struct timeval a, b, c;
        syscall(SYS_gettimeofday, &a, NULL);
        gettimeofday(&b, NULL);
        syscall(SYS_gettimeofday, &c, NULL);
        long long x = a.tv_sec * 1000000LL + a.tv_usec, y = b.tv_sec * 1000000LL + b.tv_usec;
        long long z = c.tv_sec * 1000000LL + c.tv_usec;
        if (!(x <= y && y <= z) || b.tv_usec < 0 || b.tv_usec >= 1000000)
            tv_bad++;
        time_t t0 = syscall(SYS_time, NULL), t1, t2 = 0;
        t1 = time(&t2);
        time_t t3 = syscall(SYS_time, NULL);
        if (!(t0 <= t1 && t1 <= t3) || t1 != t2)
            time_bad++;
    }
    struct timezone tz = {.tz_minuteswest = 99, .tz_dsttime = 99};
    struct timeval tv;
    int r = gettimeofday(&tv, &tz);
    printf("gettimeofday: %s, tz %d %d\n", tv_bad ? "out of order" : "ordered", tz.tz_minuteswest,
           tz.tz_dsttime);
    printf("gettimeofday(NULL, NULL) = %d\n", gettimeofday(NULL, NULL));
    printf("time: %s, r=%d\n", time_bad ? "out of order" : "ordered", r);

    for (size_t i = 0; i < NCLOCKS; i++) {
        struct timespec a = {-1, -1}, b = {-2, -2};
        int ra = clock_getres(clocks[i].id, &a);
        int rb = (int)syscall(SYS_clock_getres, clocks[i].id, &b);
        printf("clock_getres(%s): %d %s\n", clocks[i].name, ra,
               ra == rb && a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec ? "as the syscall" : "differs");
    }
    printf("clock_getres(MONOTONIC, NULL) = %d\n", clock_getres(CLOCK_MONOTONIC, NULL));

    long long t0 = libc_ns(CLOCK_MONOTONIC);
    struct timespec nap = {0, 100000000};
    clock_nanosleep(CLOCK_MONOTONIC, 0, &nap, NULL);
    long long t1 = libc_ns(CLOCK_MONOTONIC);
    struct timespec until = {.tv_sec = (t1 + 50000000) / 1000000000, .tv_nsec = (t1 + 50000000) % 1000000000};
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL);
    long long t2 = libc_ns(CLOCK_MONOTONIC);
    printf("sleeps: %s\n", t1 - t0 >= 100000000 && t2 >= ns_of(&until) ? "long enough" : "short");

    long long cpu0 = libc_ns(CLOCK_PROCESS_CPUTIME_ID), th0 = libc_ns(CLOCK_THREAD_CPUTIME_ID);
    volatile unsigned long spin = 0;
    for (unsigned long i = 0; i < 50000000UL; i++)
        spin += i;
    long long cpu1 = libc_ns(CLOCK_PROCESS_CPUTIME_ID), th1 = libc_ns(CLOCK_THREAD_CPUTIME_ID);
    printf("cpu clocks: %s\n", cpu0 >= 0 && th0 >= 0 && cpu1 > cpu0 && th1 > th0 ? "advance" : "stuck");

    static const clockid_t bad_ids[] = {10, 12, 15, 100, 0x7fffffff};  /* 16-23: Linux 6.17+ aux clocks */
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        struct timespec ts;
        errno = 0;
        int rg = clock_gettime(bad_ids[i], &ts);
        int eg = errno;
        errno = 0;
        int rr = clock_getres(bad_ids[i], &ts);
        printf("clock %d: gettime %d %s, getres %d %s\n", bad_ids[i], rg, strerrorname_np(eg), rr,
               strerrorname_np(errno));
    }
    return 0;
}
