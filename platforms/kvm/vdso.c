/* The vDSO of pysc's kvm platform: clock_gettime, gettimeofday, time and
 * clock_getres without leaving the guest.
 *
 * A guest syscall costs a VM exit (tens of microseconds on PVM), and programs
 * read the clock often.  Here the clock is computed from the TSC, which the
 * guest shares with the host, and a line the Sentry publishes in the vvar page
 * just below this image:  ns = base_ns + ((tsc - tsc_base) * mult) >> shift
 * (in two segments, see struct vvar_clock).
 * The Sentry serves its own time syscalls from the same line, so both ways of
 * reading a clock agree (platforms/kvm/vdso.py has the writer's side).
 *
 * Freestanding: no libc, no relocations, no writable data; every access to
 * the vvar is RIP-relative.  Rebuild with `python3 -m pysc.platforms.kvm.vdso`.
 */
#include <stdint.h>

#define EXPORT __attribute__((visibility("default")))

#define NCLOCKS 12
#define NSEC_PER_SEC 1000000000LL
#define SYS_gettimeofday 96
#define SYS_time 201
#define SYS_clock_gettime 228
#define SYS_clock_getres 229
#define CLOCK_REALTIME 0
#define CLOCK_REALTIME_COARSE 5
#define CLOCK_MONOTONIC_COARSE 6
#define COARSE_RESOLUTION_NS 4000000

/* Two segments: `mult` for the first `meet` cycles after tsc_base (a line
 * that was ahead of the host runs slower until it meets it), `mult_after`
 * from then on. */
struct vvar_clock {
    int64_t base_ns;      /* the clock at tsc_base */
    uint64_t mult;        /* ns per TSC cycle << shift; 0: only the syscall serves this clock */
    uint64_t meet;
    uint64_t mult_after;
};

struct vvar {
    uint32_t seq;     /* odd while the Sentry rewrites the page */
    uint32_t shift;
    uint64_t tsc_base;
    struct vvar_clock clock[NCLOCKS];
};

struct kernel_timespec { int64_t tv_sec; int64_t tv_nsec; };
struct kernel_timeval { int64_t tv_sec; int64_t tv_usec; };
struct kernel_timezone { int tz_minuteswest; int tz_dsttime; };

/* Placed by the linker script one page below the image. */
extern const volatile struct vvar pysc_vvar __attribute__((visibility("hidden")));

static inline uint64_t rdtsc_ordered(void)
{
    uint32_t lo, hi;
    __asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
    return ((uint64_t)hi << 32) | lo;
}

static inline int64_t scale(uint64_t cycles, uint64_t mult, uint32_t shift)
{
    return (int64_t)(((unsigned __int128)cycles * mult) >> shift);
}

static inline long syscall2(long nr, long a, long b)
{
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b) : "rcx", "r11", "memory");
    return ret;
}

/* The clock `clk` in ns; 0 when only the syscall can answer (a clock without
 * a line, or the Sentry in the middle of an update: falling back beats
 * spinning on a writer that may be descheduled). */
static int read_ns(int clk, int64_t *ns)
{
    const volatile struct vvar *v = &pysc_vvar;
    if ((unsigned)clk >= NCLOCKS)
        return 0;
    uint32_t seq = v->seq;
    if (seq & 1)
        return 0;
    __asm__ volatile("" : : : "memory");
    int64_t base = v->clock[clk].base_ns;
    uint64_t mult = v->clock[clk].mult;
    uint64_t meet = v->clock[clk].meet;
    uint64_t mult_after = v->clock[clk].mult_after;
    uint64_t tsc_base = v->tsc_base;
    uint32_t shift = v->shift;
    uint64_t tsc = rdtsc_ordered();
    __asm__ volatile("" : : : "memory");
    if (v->seq != seq || mult == 0)
        return 0;
    uint64_t delta = (int64_t)(tsc - tsc_base) > 0 ? tsc - tsc_base : 0;
    if (delta < meet)
        *ns = base + scale(delta, mult, shift);
    else
        *ns = base + scale(meet, mult, shift) + scale(delta - meet, mult_after, shift);
    return 1;
}

EXPORT int __vdso_clock_gettime(int clk, struct kernel_timespec *ts)
{
    int64_t ns;
    if (!read_ns(clk, &ns))
        return (int)syscall2(SYS_clock_gettime, clk, (long)ts);
    ts->tv_sec = ns / NSEC_PER_SEC;
    ts->tv_nsec = ns % NSEC_PER_SEC;
    return 0;
}

EXPORT int __vdso_gettimeofday(struct kernel_timeval *tv, struct kernel_timezone *tz)
{
    int64_t ns;
    if (tv != 0) {
        if (!read_ns(CLOCK_REALTIME, &ns))
            return (int)syscall2(SYS_gettimeofday, (long)tv, (long)tz);
        tv->tv_sec = ns / NSEC_PER_SEC;
        tv->tv_usec = ns % NSEC_PER_SEC / 1000;
    }
    if (tz != 0) {
        tz->tz_minuteswest = 0;
        tz->tz_dsttime = 0;
    }
    return 0;
}

EXPORT int64_t __vdso_time(int64_t *t)
{
    int64_t ns;
    if (!read_ns(CLOCK_REALTIME, &ns))
        return syscall2(SYS_time, (long)t, 0);
    int64_t sec = ns / NSEC_PER_SEC;
    if (t != 0)
        *t = sec;
    return sec;
}

EXPORT int __vdso_clock_getres(int clk, struct kernel_timespec *res)
{
    const volatile struct vvar *v = &pysc_vvar;
    if ((unsigned)clk >= NCLOCKS || v->clock[clk].mult == 0)
        return (int)syscall2(SYS_clock_getres, clk, (long)res);
    if (res != 0) {
        res->tv_sec = 0;
        res->tv_nsec = clk == CLOCK_REALTIME_COARSE || clk == CLOCK_MONOTONIC_COARSE ? COARSE_RESOLUTION_NS : 1;
    }
    return 0;
}

EXPORT int clock_gettime(int, struct kernel_timespec *) __attribute__((weak, alias("__vdso_clock_gettime")));
EXPORT int gettimeofday(struct kernel_timeval *, struct kernel_timezone *)
    __attribute__((weak, alias("__vdso_gettimeofday")));
EXPORT int64_t time(int64_t *) __attribute__((weak, alias("__vdso_time")));
EXPORT int clock_getres(int, struct kernel_timespec *) __attribute__((weak, alias("__vdso_clock_getres")));
