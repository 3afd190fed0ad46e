/* System V shared memory: create by key and privately, attach, share with
 * a forked child, attach counts, read-only attaches, detach, remove, and the
 * errors of each call.  Deterministic output. */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *err(long r)
{
    return r < 0 ? strerrorname_np(errno) : "ok";
}

static long nattch(int id)
{
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) < 0)
        return -1;
    return (long)ds.shm_nattch;
}

static sigjmp_buf jump;

static void on_segv(int sig)
{
    (void)sig;
    siglongjmp(jump, 1);
}

int main(void)
{
    int id = shmget(IPC_PRIVATE, 10000, IPC_CREAT | 0600);
    printf("shmget private: %s\n", err(id));
    struct shmid_ds ds;
    shmctl(id, IPC_STAT, &ds);
    printf("segsz %zu mode %o nattch %lu cpid is me %d\n", (size_t)ds.shm_segsz,
           (unsigned)ds.shm_perm.mode & 0777, (unsigned long)ds.shm_nattch, ds.shm_cpid == getpid());

    char *p = shmat(id, NULL, 0);
    printf("shmat: %s, page aligned %d, zeroed %d, nattch %ld\n", p == (void *)-1 ? err(-1) : "ok",
           ((unsigned long)p & 4095) == 0, p[0] == 0 && p[9999] == 0, nattch(id));
    strcpy(p, "from the parent");

    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        printf("child sees: %s, nattch %ld\n", p, nattch(id));
        strcpy(p + 100, "from the child");
        char *q = shmat(id, NULL, 0);  /* a second attach of the same segment */
        printf("child second attach shares it: %d\n", q != (void *)-1 && strcmp(q, p) == 0);
        fflush(stdout);
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    printf("parent sees: %s, nattch after the child %ld\n", p + 100, nattch(id));

    /* a key: create, find again, and the errors of shmget */
    key_t key = 0x5059534b;
    int kid = shmget(key, 8192, IPC_CREAT | IPC_EXCL | 0640);
    const char *r = err(kid);
    printf("shmget key: %s, same id again %d\n", r, shmget(key, 100, 0) == kid);
    printf("IPC_EXCL again: %s\n", err(shmget(key, 8192, IPC_CREAT | IPC_EXCL | 0640)));
    printf("bigger than the segment: %s\n", err(shmget(key, 8193, 0)));
    printf("missing key: %s\n", err(shmget(0x5059534c, 4096, 0)));
    printf("size 0: %s\n", err(shmget(IPC_PRIVATE, 0, IPC_CREAT | 0600)));

    /* read-only attach: reads work, a write faults */
    char *ro = shmat(kid, NULL, SHM_RDONLY);
    struct sigaction sa = {.sa_handler = on_segv};
    sigaction(SIGSEGV, &sa, NULL);
    int faulted = 0;
    if (sigsetjmp(jump, 1) == 0)
        ro[0] = 1;
    else
        faulted = 1;
    printf("read-only attach: reads %d, a write faults %d\n", ro[0] == 0, faulted);

    /* attach at a given address, misaligned, and over a mapping */
    char *at = shmat(kid, ro + 65536 * 16, 0);
    printf("at an address: %s\n", at == ro + 65536 * 16 ? "ok" : err(-1));
    printf("misaligned: %s\n", shmat(kid, at + 1, 0) == (void *)-1 ? err(-1) : "ok");
    printf("misaligned with SHM_RND: %d\n", shmat(kid, at + 1, SHM_RND | SHM_REMAP) == at);
    printf("over a mapping: %s\n", shmat(kid, at, 0) == (void *)-1 ? err(-1) : "ok");
    printf("over a mapping with SHM_REMAP: %d\n", shmat(kid, at, SHM_REMAP) == at);

    /* detach and remove */
    printf("shmdt: %s\n", err(shmdt(ro)));
    printf("shmdt again: %s\n", err(shmdt(ro)));
    printf("shmdt of no segment: %s\n", err(shmdt(&ds)));
    r = err(shmctl(kid, IPC_RMID, NULL));
    printf("IPC_RMID while attached: %s, still there %d\n", r, nattch(kid) == 1);
    printf("key gone: %s\n", err(shmget(key, 100, 0)));
    shmdt(at);
    printf("after the last detach: %s\n", err(nattch(kid)));
    printf("shmat of a bad id: %s\n", shmat(-1, NULL, 0) == (void *)-1 ? err(-1) : "ok");
    printf("shmctl bad command: %s\n", err(shmctl(id, 99, &ds)));

    shmdt(p);
    shmctl(id, IPC_RMID, NULL);
    printf("private one removed: %s\n", err(nattch(id)));
    return 0;
}
