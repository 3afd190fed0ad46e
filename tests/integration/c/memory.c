/* Address-space calls and faults: anonymous mmap, mprotect, munmap, mremap,
 * brk, private and shared file mappings, SIGBUS past the end of a file,
 * copy on write across fork, shared anonymous memory, and faults caught by
 * a SIGSEGV/SIGBUS/SIGILL/SIGFPE/SIGTRAP handler running on sigaltstack.
 * Deterministic output.  With the argument "null" it dereferences NULL with
 * no handler, so it dies of SIGSEGV. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096
#define ALTSZ (64 * 1024)
#define ANY ((void *)-1)  /* the fault address is the instruction's: not compared */

static sigjmp_buf jb;
static volatile int got_sig, got_code, on_alt;
static void *volatile got_addr;
static char *altbuf;

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    int here;
    got_sig = sig;
    got_code = si->si_code;
    got_addr = si->si_addr;
    on_alt = (char *)&here >= altbuf && (char *)&here < altbuf + ALTSZ;
    siglongjmp(jb, 1);
}

typedef void (*action)(void *);

static void probe(const char *what, action fn, void *arg, void *expect_addr)
{
    got_sig = 0;
    if (!sigsetjmp(jb, 1)) {
        fn(arg);
        printf("%s: no fault\n", what);
    } else {
        printf("%s: signal %d code %d addr %s altstack %d\n", what, got_sig, got_code,
               expect_addr == ANY ? "-" : got_addr == expect_addr ? "ok" : "WRONG", on_alt);
    }
}

static void write_byte(void *p) { *(volatile char *)p = 1; }
static void read_byte(void *p) { (void)*(volatile char *)p; }
static void do_ud2(void *p) { (void)p; __asm__ volatile("ud2"); }
static void do_int3(void *p) { (void)p; __asm__ volatile("int3"); }
static void do_div0(void *p) { volatile int z = (int)(intptr_t)p; volatile int x = 7 / z; (void)x; }

static long sum(const unsigned char *p, size_t n)
{
    long s = 0;
    for (size_t i = 0; i < n; i++)
        s += p[i];
    return s;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "null")) {
        fflush(stdout);
        return *(volatile int *)0;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    altbuf = malloc(ALTSZ);
    stack_t ss = {.ss_sp = altbuf, .ss_size = ALTSZ, .ss_flags = 0};
    if (sigaltstack(&ss, NULL))
        perror("sigaltstack");
    struct sigaction sa = {0};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    for (int s = 1; s < 32; s++)
        if (s != SIGKILL && s != SIGSTOP && s != SIGCHLD)
            sigaction(s, &sa, NULL);

    /* anonymous memory */
    size_t len = 1 << 20;
    unsigned char *a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mmap anon: %s, zero sum %ld\n", a == MAP_FAILED ? "failed" : "ok", sum(a, len));
    for (size_t i = 0; i < len; i++)
        a[i] = (unsigned char)i;
    printf("pattern sum %ld\n", sum(a, len));

    /* mprotect */
    mprotect(a + PAGE, PAGE, PROT_READ);
    probe("write to PROT_READ page", write_byte, a + PAGE + 5, a + PAGE + 5);
    probe("read of PROT_READ page", read_byte, a + PAGE + 5, NULL);
    mprotect(a + PAGE, PAGE, PROT_NONE);
    probe("read of PROT_NONE page", read_byte, a + PAGE, a + PAGE);
    mprotect(a + PAGE, PAGE, PROT_READ | PROT_WRITE);
    probe("write after mprotect back", write_byte, a + PAGE, NULL);
    int r = mprotect(a + 1, PAGE, PROT_READ);
    printf("mprotect unaligned: %d errno %d\n", r, errno);

    /* munmap a hole */
    munmap(a + 2 * PAGE, PAGE);
    probe("read of unmapped hole", read_byte, a + 2 * PAGE + 8, a + 2 * PAGE + 8);
    printf("neighbours intact: %d %d\n", a[3 * PAGE + 1] == (unsigned char)(3 * PAGE + 1),
           a[PAGE + 2] == (unsigned char)(PAGE + 2));
    r = munmap(a + 1, PAGE);
    printf("munmap unaligned: %d errno %d\n", r, errno);

    /* mremap */
    unsigned char *b = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(b, 0x5a, 4 * PAGE);
    unsigned char *c = mremap(b, 4 * PAGE, 64 * PAGE, MREMAP_MAYMOVE);
    printf("mremap grow: %s, kept %d, new zero %d\n", c == MAP_FAILED ? "failed" : "ok",
           c[4 * PAGE - 1] == 0x5a && c[0] == 0x5a, c[63 * PAGE] == 0);
    unsigned char *d = mremap(c, 64 * PAGE, 2 * PAGE, 0);
    printf("mremap shrink in place: %d\n", d == c);
    probe("read past shrunk mapping", read_byte, c + 3 * PAGE, c + 3 * PAGE);

    /* brk */
    char *brk0 = sbrk(0);
    char *p = sbrk(256 * 1024);
    memset(p, 7, 256 * 1024);
    printf("brk grows: %d, contents %ld\n", p == brk0, sum((unsigned char *)p, 256 * 1024));
    sbrk(-256 * 1024);
    printf("brk shrinks: %d\n", sbrk(0) == brk0);

    /* file mappings */
    char path[] = "/tmp/pysc-memXXXXXX";
    int fd = mkstemp(path);
    char buf[3 * PAGE];
    for (int i = 0; i < (int)sizeof buf; i++)
        buf[i] = 'a' + i % 26;
    write(fd, buf, sizeof buf);
    char *pm = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    printf("private file map reads file: %d\n", !memcmp(pm, buf, sizeof buf));
    pm[0] = 'Z';
    char first;
    pread(fd, &first, 1, 0);
    printf("private write stays private: %c %c\n", pm[0], first);
    char *sm = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    sm[PAGE] = 'Q';
    msync(sm, 3 * PAGE, MS_SYNC);
    char mid;
    pread(fd, &mid, 1, PAGE);
    printf("shared write reaches the file: %c\n", mid);
    pwrite(fd, "W", 1, 2 * PAGE);
    printf("file write reaches the shared map: %c\n", sm[2 * PAGE]);
    char *om = mmap(NULL, 3 * PAGE, PROT_READ, MAP_PRIVATE, fd, PAGE);
    printf("offset map: %c\n", om[0]);
    ftruncate(fd, 100);
    char *bm = mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, fd, 0);
    probe("read within last page", read_byte, bm + 200, NULL);
    probe("read past end of file", read_byte, bm + PAGE + 3, bm + PAGE + 3);
    close(fd);
    unlink(path);

    /* fork: copy on write and shared anonymous memory */
    int *shared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int *priv = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    *shared = 1;
    *priv = 1;
    pid_t pid = fork();
    if (pid == 0) {
        int saw = *priv;
        *priv = 2;
        *shared = 2;
        _exit(saw == 1 ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    printf("fork: child saw parent data %d, private still %d, shared now %d\n",
           WIFEXITED(st) && WEXITSTATUS(st) == 0, *priv, *shared);
    pid = fork();
    if (pid == 0)
        _exit(*priv == 1 ? 0 : 1);
    *priv = 3;
    waitpid(pid, &st, 0);
    printf("fork: parent write after fork unseen by child %d\n", WIFEXITED(st) && WEXITSTATUS(st) == 0);

    /* faults other than page faults */
    probe("NULL read", read_byte, NULL, NULL);
    probe("ud2", do_ud2, NULL, ANY);
    probe("int3", do_int3, NULL, NULL);
    probe("divide by zero", do_div0, (void *)0, ANY);
    printf("a child dies of its NULL dereference: ");
    pid = fork();
    if (pid == 0) {
        signal(SIGSEGV, SIG_DFL);
        return *(volatile int *)0;
    }
    waitpid(pid, &st, 0);
    printf("signaled %d signal %d\n", WIFSIGNALED(st), WIFSIGNALED(st) ? WTERMSIG(st) : 0);

    /* the memory map */
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    int stack = 0, heap = 0;
    while (maps && fgets(line, sizeof line, maps)) {
        stack |= strstr(line, "[stack]") != NULL;
        heap |= strstr(line, "[heap]") != NULL;
    }
    printf("/proc/self/maps: stack %d heap %d\n", stack, heap);
    return 0;
}
