/* Large anonymous mappings, which the kvm platform backs with 2 MiB pages:
 * touching, the kernel reading and writing them, fork, and every change that
 * needs 4 KiB pages again (partial munmap and mprotect, mremap, DONTNEED),
 * some of them while other threads keep writing.  Deterministic output. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1024L * 1024)
#define PG 4096L

static sigjmp_buf back;
static volatile int faults;

static void on_segv(int sig, siginfo_t *si, void *ctx)
{
    (void)sig, (void)si, (void)ctx;
    faults++;
    siglongjmp(back, 1);
}

/* 1 when writing (or reading) *p raises SIGSEGV. */
static int faults_on(volatile char *p, int write)
{
    int before = faults;
    if (!sigsetjmp(back, 1)) {
        if (write)
            *p = 1;
        else
            (void)*p;
    }
    return faults != before;
}

static char *map(long len)
{
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return p;
}

static void fill(char *p, long len, unsigned seed)
{
    for (long off = 0; off < len; off += PG)
        *(unsigned *)(p + off) = seed + (unsigned)(off / PG);
}

/* How many pages of [p, p+len) do not hold what fill() wrote. */
static long mismatches(const char *p, long len, unsigned seed)
{
    long bad = 0;
    for (long off = 0; off < len; off += PG)
        bad += *(const unsigned *)(p + off) != seed + (unsigned)(off / PG);
    return bad;
}

static long nonzero(const char *p, long len)
{
    long n = 0;
    for (long off = 0; off < len; off += PG)
        n += p[off] != 0;
    return n;
}

struct writer {
    volatile unsigned *slot;
    int stop;
    unsigned last;
};

static void *keep_writing(void *arg)
{
    /* Counts in memory: an increment lost while the page is copied shows as a shortfall. */
    struct writer *w = arg;
    unsigned n = 0;
    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        *w->slot = *w->slot + 1;
        n++;
    }
    w->last = n;
    return NULL;
}

int main(void)
{
    struct sigaction sa = {0};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);

    /* touch every page of 8 MiB, then read it all back */
    long len = 8 * MiB;
    char *a = map(len);
    fill(a, len, 1000);
    printf("touched: %ld pages wrong\n", mismatches(a, len, 1000));

    /* the kernel writes into it (read from a pipe) and reads from it (write to a pipe) */
    int fds[2];
    if (pipe(fds)) return 1;
    const char msg[] = "through the kernel";
    char *spot = a + 2 * MiB - 5; /* across two huge pages */
    if (write(fds[1], msg, sizeof msg) != sizeof msg || read(fds[0], spot, sizeof msg) != sizeof msg)
        return 1;
    printf("read into it: %s\n", spot);
    char out[sizeof msg];
    if (write(fds[1], spot, sizeof msg) != sizeof msg || read(fds[0], out, sizeof msg) != sizeof msg)
        return 1;
    printf("written from it: %s\n", out);
    fill(a, len, 1000);

    /* fork: each side sees its own copy */
    pid_t pid = fork();
    if (pid == 0) {
        long bad = mismatches(a, len, 1000);
        fill(a, len, 5000);
        _exit(bad == 0 && mismatches(a, len, 5000) == 0 ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    printf("fork: child %s, parent %ld pages changed\n",
           WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "saw the parent's data" : "FAILED",
           mismatches(a, len, 1000));

    /* a hole in the middle: the rest stays */
    munmap(a + 3 * MiB, PG);
    printf("hole: faults %d, neighbours %s\n", faults_on(a + 3 * MiB, 0),
           *(unsigned *)(a + 3 * MiB + PG) == 1000 + 3 * 256 + 1 ? "kept" : "LOST");

    /* read-only in part */
    mprotect(a + 5 * MiB, 2 * PG, PROT_READ);
    int ro_write = faults_on(a + 5 * MiB + PG, 1);
    int ro_read = faults_on(a + 5 * MiB + PG, 0);
    int rw_after = faults_on(a + 5 * MiB + 2 * PG, 1);
    printf("read-only part: write faults %d, read faults %d, next page writable %d\n", ro_write, ro_read,
           !rw_after);
    *(unsigned *)(a + 5 * MiB + 2 * PG) = 1000 + 5 * 256 + 2;
    long bad = 0;
    for (long off = 0; off < len; off += PG)
        if (off != 3 * MiB)
            bad += *(unsigned *)(a + off) != 1000 + (unsigned)(off / PG);
    printf("after hole and mprotect: %ld pages wrong\n", bad);

    /* whole 2 MiB given back: zeros next time */
    madvise(a + 6 * MiB, 2 * MiB, MADV_DONTNEED);
    printf("dontneed: %ld nonzero pages\n", nonzero(a + 6 * MiB, 2 * MiB));
    munmap(a, len);

    /* splitting while other threads write into the same 2 MiB */
    char *b = map(4 * MiB);
    memset(b, 0, 4 * MiB);
    struct writer w[2] = {{(volatile unsigned *)(b + 100 * PG), 0, 0},
                          {(volatile unsigned *)(b + 300 * PG), 0, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, keep_writing, &w[i]);
    usleep(20000);
    mprotect(b + 200 * PG, PG, PROT_READ);
    munmap(b + 400 * PG, PG);
    usleep(20000);
    for (int i = 0; i < 2; i++) {
        __atomic_store_n(&w[i].stop, 1, __ATOMIC_RELEASE);
        pthread_join(t[i], NULL);
    }
    printf("writers during split: %s\n",
           *w[0].slot == w[0].last && *w[1].slot == w[1].last && w[0].last && w[1].last ? "no write lost"
                                                                                        : "WRITE LOST");
    munmap(b, 4 * MiB);

    /* grow and move: contents follow */
    char *c = map(4 * MiB);
    fill(c, 4 * MiB, 7000);
    char *d = mremap(c, 4 * MiB, 8 * MiB, MREMAP_MAYMOVE);
    printf("mremap: %ld pages wrong, new part %ld nonzero\n", mismatches(d, 4 * MiB, 7000),
           nonzero(d + 4 * MiB, 4 * MiB));
    munmap(d, 8 * MiB);

    /* mapped again where it was: zeros */
    char *e = map(4 * MiB);
    fill(e, 4 * MiB, 9);
    munmap(e, 4 * MiB);
    char *f = map(4 * MiB);
    printf("mapped again: %ld nonzero pages\n", nonzero(f, 4 * MiB));
    fill(f, 4 * MiB, 11);
    printf("and filled: %ld pages wrong\n", mismatches(f, 4 * MiB, 11));
    printf("segv handler ran %d times\n", faults);
    return 0;
}
