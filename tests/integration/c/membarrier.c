/* membarrier: the commands a program checks for and uses, with threads
 * running meanwhile; the private commands need their registration first.
 * Deterministic output. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static atomic_int stop;
static volatile long spins;

static const char *err(long r)
{
    return r < 0 ? strerrorname_np(errno) : "ok";
}

static long membarrier(int cmd, unsigned flags)
{
    return syscall(SYS_membarrier, cmd, flags, 0);
}

static void *spin(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&stop, memory_order_relaxed))
        spins++;
    return NULL;
}

int main(void)
{
    long q = membarrier(MEMBARRIER_CMD_QUERY, 0);
    int want = MEMBARRIER_CMD_GLOBAL | MEMBARRIER_CMD_PRIVATE_EXPEDITED |
               MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED | MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE;
    printf("query: %s, has the usual commands %d\n", err(q), q >= 0 && (q & want) == want);

    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, spin, NULL);
    printf("private before registering: %s\n", err(membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0)));
    printf("register private: %s\n", err(membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0)));
    int ok = 1;
    for (int i = 0; i < 100; i++)
        ok &= membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) == 0;
    printf("private, 100 times while threads spin: %d\n", ok);
    printf("global: %s\n", err(membarrier(MEMBARRIER_CMD_GLOBAL, 0)));
    printf("sync-core before registering: %s\n",
           err(membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0)));
    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0);
    printf("sync-core: %s\n", err(membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0)));
    printf("flags: %s\n", err(membarrier(MEMBARRIER_CMD_GLOBAL, 1)));
    printf("unknown command: %s\n", err(membarrier(1 << 20, 0)));
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    printf("threads went on: %d\n", spins > 0);
    return 0;
}
