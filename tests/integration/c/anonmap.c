/* Anonymous mmap and munmap as programs use them (malloc's large blocks):
 * placement, contents, faults, /proc/self/maps, fork, threads, signals
 * arriving during a loop of calls.  On kvm most of these calls are answered
 * in the guest (platforms/kvm/guestmmap.py); everything printed must match
 * what Linux does.  "anonmap N" only runs N mmap+munmap pairs (for the exit
 * count test). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define KB 1024UL
static sigjmp_buf jump;
static volatile sig_atomic_t alarms;

static void on_segv(int sig) { siglongjmp(jump, sig); }
static void on_alarm(int sig) { (void)sig; alarms++; }

static char *map(size_t len, int prot) {
    char *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    return p;
}

/* 'r', 'w' or '-' for what an access to p does: ok or SIGSEGV. */
static const char *probe(volatile char *p) {
    static char out[3];
    out[0] = out[1] = '-';
    out[2] = 0;
    if (!sigsetjmp(jump, 1)) { (void)p[0]; out[0] = 'r'; }
    if (!sigsetjmp(jump, 1)) { p[0] = p[0]; out[1] = 'w'; }
    return out;
}

/* The permissions /proc/self/maps shows for the mapping holding p, or "none". */
static const char *maps_perms(void *p) {
    static char perms[5];
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    strcpy(perms, "none");
    while (f && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char pr[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, pr) == 3 && lo <= (uintptr_t)p && (uintptr_t)p < hi) {
            strcpy(perms, pr);
            break;
        }
    }
    if (f) fclose(f);
    return perms;
}

static int all_zero(const char *p, size_t len) {
    for (size_t i = 0; i < len; i += 512)
        if (p[i]) return 0;
    return 1;
}

static void *thread_maps(void *arg) {
    char **out = arg;
    for (int i = 0; i < 200; i++) {
        char *p = map(64 * KB, PROT_READ | PROT_WRITE);
        p[0] = 1;
        if (munmap(p, 64 * KB)) return "munmap";
    }
    *out = map(16 * KB, PROT_READ | PROT_WRITE);
    strcpy(*out, "from the thread");
    return NULL;
}

static int pairs(long n) {
    for (long i = 0; i < n; i++) {
        char *p = map(64 * KB, PROT_READ | PROT_WRITE);
        if (munmap(p, 64 * KB)) return 1;
    }
    printf("%ld pairs\n", n);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1) return pairs(atol(argv[1]));
    struct sigaction sa = {0};
    sa.sa_handler = on_segv;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);

    /* Placement: top down, each below the last (once the blocks are larger
     * than the holes left higher up), a freed block reused. */
    char *a = map(64 * KB, PROT_READ | PROT_WRITE);
    char *b = map(64 * KB, PROT_READ | PROT_WRITE);
    char *c = map(100, PROT_READ | PROT_WRITE);
    printf("below the last: %d", b + 64 * KB == a);
    printf(" %d\n", c + 4 * KB == b);
    printf("fresh memory is zero: %d %d %d\n", all_zero(a, 64 * KB), all_zero(b, 64 * KB), all_zero(c, 4 * KB));
    strcpy(c, "c");
    printf("maps: %s", maps_perms(a));
    printf(" %s, access: %s\n", maps_perms(c), probe(c));
    printf("munmap c: %d", munmap(c, 100));
    printf(", then access: %s", probe(c));
    printf(", maps: %s\n", maps_perms(c));
    char *c2 = map(4 * KB, PROT_READ | PROT_WRITE);
    printf("reused: %d, zero again: %d\n", c2 == c, all_zero(c2, 4 * KB));
    munmap(c2, 4 * KB);

    /* Another prot: its own mapping, still right below. */
    char *r = map(8 * KB, PROT_READ);
    char *n = map(8 * KB, PROT_NONE);
    char *x = map(4 * KB, PROT_READ | PROT_WRITE | PROT_EXEC);
    printf("below: %d %d %d\n", r + 8 * KB == b, n + 8 * KB == r, x + 4 * KB == n);
    printf("read-only %s", probe(r));
    printf(" %s, none %s", maps_perms(r), probe(n));
    printf(" %s, rwx %s", maps_perms(n), probe(x));
    printf(" %s\n", maps_perms(x));

    /* munmap of the newest mapping's low half, of an older one, of a middle page. */
    printf("munmap low half: %d", munmap(x, 2 * KB));
    printf(", access %s", probe(x));
    printf(" / %s\n", probe(n));
    printf("munmap older: %d", munmap(r, 8 * KB));
    printf(", access %s", probe(r));
    printf(", below still %s\n", probe(b));
    char *m = map(12 * KB, PROT_READ | PROT_WRITE);
    m[0] = m[8 * KB] = 'm';
    printf("munmap middle page: %d", munmap(m + 4 * KB, 4 * KB));
    printf(", access %s", probe(m));
    printf(" %s", probe(m + 4 * KB));
    printf(" %s\n", probe(m + 8 * KB));
    munmap(m, 12 * KB);
    munmap(n, 8 * KB);

    /* Changes of fresh mappings. */
    char *p = map(16 * KB, PROT_READ | PROT_WRITE);
    printf("mprotect: %d", mprotect(p, 16 * KB, PROT_READ));
    printf(", access %s\n", probe(p));
    munmap(p, 16 * KB);
    p = map(16 * KB, PROT_READ | PROT_WRITE);
    memset(p, 7, 16 * KB);
    char *q = mremap(p, 16 * KB, 64 * KB, MREMAP_MAYMOVE);
    printf("mremap: %d, kept %d, grown part zero %d\n", q != MAP_FAILED, q[16 * KB - 1] == 7,
           all_zero(q + 16 * KB, 48 * KB));
    printf("madvise: %d", madvise(q, 64 * KB, MADV_DONTNEED));
    printf(", zero %d\n", all_zero(q, 64 * KB));
    munmap(q, 64 * KB);

    /* The largest size below 2 MiB, 2 MiB itself, and bad calls. */
    char *big = map(2048 * KB - 4 * KB, PROT_READ | PROT_WRITE);
    big[0] = big[2040 * KB] = 1;
    char *huge = map(2048 * KB, PROT_READ | PROT_WRITE);
    huge[0] = 1;
    printf("big: %s", maps_perms(big + 2040 * KB));
    printf(" %s\n", maps_perms(huge));
    printf("munmap big: %d", munmap(big, 2048 * KB - 4 * KB));
    printf(" %d\n", munmap(huge, 2048 * KB));
    errno = 0;
    void *bad = mmap(NULL, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("length 0: %s\n", bad == MAP_FAILED ? strerror(errno) : "mapped");
    bad = mmap(NULL, 4096, PROT_READ, MAP_ANONYMOUS, -1, 0);
    printf("no type: %s\n", bad == MAP_FAILED ? strerror(errno) : "mapped");
    bad = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 4096 + 1);
    printf("odd offset: %s\n", bad == MAP_FAILED ? strerror(errno) : "mapped");
    bad = mmap(NULL, (size_t)1 << 62, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("too long: %s\n", bad == MAP_FAILED ? strerror(errno) : "mapped");
    printf("munmap unaligned: %d", munmap(a + 1, 4096) ? errno : 0);
    printf(", length 0: %d", munmap(a, 0) ? errno : 0);
    printf(", twice: %d", munmap(b, 64 * KB));
    printf(" %d\n", munmap(b, 64 * KB));

    /* Fresh mappings as syscall buffers, untouched before. */
    int fds[2];
    if (pipe(fds)) { perror("pipe"); return 1; }
    char *src = map(8 * KB, PROT_READ | PROT_WRITE);
    char *dst = map(8 * KB, PROT_READ | PROT_WRITE);
    if (write(fds[1], "abc", 3) != 3) return 1;
    printf("write from fresh: %zd", write(fds[1], src, 8));
    printf(", read into fresh: %zd", read(fds[0], dst + 100, 11));
    printf(", got %s %d\n", dst + 100, all_zero(dst + 103, 8));
    munmap(dst, 8 * KB);
    munmap(src, 8 * KB);
    close(fds[0]);
    close(fds[1]);

    /* fork: the child has a copy of a fresh mapping, made just before. */
    char *f = map(8 * KB, PROT_READ | PROT_WRITE);
    strcpy(f, "parent");
    pid_t pid = fork();
    if (pid == 0) {
        int ok = strcmp(f, "parent") == 0;
        strcpy(f, "child");
        char *g = map(8 * KB, PROT_READ | PROT_WRITE);
        _exit(ok && g + 8 * KB == f && munmap(g, 8 * KB) == 0 ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    printf("fork: child %d, parent still %s\n", WEXITSTATUS(st), f);

    /* Threads: calls from two threads, a mapping handed over. */
    pthread_t t;
    char *from = NULL;
    pthread_create(&t, NULL, thread_maps, &from);
    void *res;
    pthread_join(t, &res);
    printf("thread: %s, %s\n", res ? (char *)res : "ok", from);
    munmap(from, 16 * KB);

    /* A loop of calls while a timer interrupts it: every mmap gets the same
     * address, every munmap works. */
    struct sigaction al = {0};
    al.sa_handler = on_alarm;
    al.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &al, NULL);
    struct itimerval it = {{0, 500}, {0, 500}};
    setitimer(ITIMER_REAL, &it, NULL);
    char *first = map(64 * KB, PROT_READ | PROT_WRITE);
    munmap(first, 64 * KB);
    long i, moved = 0, failed = 0;
    for (i = 0; i < 200000 && alarms < 100; i++) {
        char *s = map(64 * KB, PROT_READ | PROT_WRITE);
        if (s != first) moved++;
        if (i % 1000 == 0) {
            if (!all_zero(s, 64 * KB)) failed++;
            s[0] = 1;
        }
        if (munmap(s, 64 * KB)) failed++;
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("interrupted loop: timer ran %d, moved %ld, failed %ld\n", alarms > 0, moved, failed);
    return 0;
}
