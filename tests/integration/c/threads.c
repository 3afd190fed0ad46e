/* pthreads over futexes: create/join, a mutex-protected counter, a
 * condition variable hand-off, a barrier, a read-write lock, thread-local
 * storage, raw futex calls, tgkill to a thread, and a robust mutex whose
 * owner dies holding it.  Deterministic output. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NTHREADS 4
#define ITERS 20000

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long counter;
static int turn;  /* condition-variable ping-pong */
static pthread_barrier_t barrier;
static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
static __thread int tls_value;
static atomic_int futex_word;
static atomic_int woken;
static volatile sig_atomic_t usr1_tid_ok;
static pid_t target_tid;

static void *adder(void *arg)
{
    tls_value = (int)(long)arg;
    for (int i = 0; i < ITERS; i++) {
        pthread_mutex_lock(&mu);
        counter++;
        pthread_mutex_unlock(&mu);
    }
    pthread_barrier_wait(&barrier);
    pthread_rwlock_rdlock(&rw);
    long c = counter;
    pthread_rwlock_unlock(&rw);
    return (void *)(long)(tls_value * 1000 + (c == NTHREADS * ITERS));
}

static void *pingpong(void *arg)
{
    int me = (int)(long)arg;
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&mu);
        while (turn != me)
            pthread_cond_wait(&cv, &mu);
        turn = 1 - me;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static long futex(atomic_int *uaddr, int op, int val, const struct timespec *ts)
{
    return syscall(SYS_futex, uaddr, op, val, ts, NULL, 0);
}

static void *futex_waiter(void *arg)
{
    (void)arg;
    while (atomic_load(&futex_word) == 0)
        futex(&futex_word, FUTEX_WAIT_PRIVATE, 0, NULL);
    atomic_fetch_add(&woken, 1);
    return NULL;
}

static void on_usr1(int sig)
{
    (void)sig;
    if (syscall(SYS_gettid) == target_tid)
        usr1_tid_ok = 1;
}

static pthread_mutex_t robust;

static void *dies_holding(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&robust);
    return NULL;  /* ends with the lock held: the kernel marks it owner-died */
}

static void *sleeper(void *arg)
{
    (void)arg;
    target_tid = syscall(SYS_gettid);
    while (!usr1_tid_ok)
        usleep(1000);
    return NULL;
}

int main(void)
{
    pthread_t t[NTHREADS];
    pthread_barrier_init(&barrier, NULL, NTHREADS);
    for (long i = 0; i < NTHREADS; i++)
        if (pthread_create(&t[i], NULL, adder, (void *)(i + 1)) != 0) { puts("pthread_create failed"); return 1; }
    for (int i = 0; i < NTHREADS; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        printf("thread %d returned %ld\n", i, (long)ret);
    }
    printf("mutex counter: %ld\n", counter);

    pthread_t a, b;
    pthread_create(&a, NULL, pingpong, (void *)0L);
    pthread_create(&b, NULL, pingpong, (void *)1L);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    printf("condvar ping-pong done, turn=%d\n", turn);

    /* raw futex: a wait that times out, a wait on a changed value, a wake */
    struct timespec ts = { 0, 50 * 1000 * 1000 };
    long r = futex(&futex_word, FUTEX_WAIT_PRIVATE, 0, &ts);
    printf("futex wait timeout: %ld %s\n", r, r < 0 ? strerrorname_np(errno) : "");
    r = futex(&futex_word, FUTEX_WAIT_PRIVATE, 1, &ts);
    printf("futex wait wrong value: %ld %s\n", r, r < 0 ? strerrorname_np(errno) : "");
    pthread_t w[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&w[i], NULL, futex_waiter, NULL);
    usleep(100 * 1000);
    atomic_store(&futex_word, 1);
    for (int tries = 0; tries < 100 && atomic_load(&woken) < 3; tries++) {
        futex(&futex_word, FUTEX_WAKE_PRIVATE, 3, NULL);
        usleep(10 * 1000);
    }
    for (int i = 0; i < 3; i++)
        pthread_join(w[i], NULL);
    printf("futex waiters woken: %d\n", atomic_load(&woken));

    /* a signal to one thread */
    signal(SIGUSR1, on_usr1);
    pthread_t s;
    target_tid = 0;
    pthread_create(&s, NULL, sleeper, NULL);
    while (!target_tid)
        usleep(1000);
    pthread_kill(s, SIGUSR1);
    pthread_join(s, NULL);
    printf("pthread_kill reached the thread: %d\n", (int)usr1_tid_ok);

    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&robust, &ma);
    pthread_t holder;
    pthread_create(&holder, NULL, dies_holding, NULL);
    pthread_join(holder, NULL);
    int rc = pthread_mutex_lock(&robust);
    printf("robust mutex after its owner died: %s\n", rc == EOWNERDEAD ? "EOWNERDEAD" : strerror(rc));
    if (rc == EOWNERDEAD)
        pthread_mutex_consistent(&robust);
    pthread_mutex_unlock(&robust);
    printf("robust mutex usable again: %d\n", pthread_mutex_lock(&robust) == 0);
    pthread_mutex_unlock(&robust);

    /* a detached thread and pthread_exit of main is not tested: exit cleanly */
    printf("tid of main == pid: %d\n", (long)syscall(SYS_gettid) == (long)getpid());
    return 0;
}
