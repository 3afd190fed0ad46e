/* System V semaphores: values, all-or-nothing operations, blocking and
 * waking across processes, timeouts, SEM_UNDO at exit, removal under a
 * waiter, and the errors of each call.  Deterministic output. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

union semun { int val; struct semid_ds *buf; unsigned short *array; };

static const char *err(long r)
{
    return r < 0 ? strerrorname_np(errno) : "ok";
}

static int op(int id, unsigned short num, short delta, short flags)
{
    struct sembuf b = {num, delta, flags};
    return semop(id, &b, 1);
}

/* wait (up to 10 s) until COUNT tasks block on semaphore NUM of ID */
static int waiters(int id, int num, int cmd, int count)
{
    for (int i = 0; i < 1000; i++) {
        if (semctl(id, num, cmd) == count)
            return 1;
        usleep(10000);
    }
    return 0;
}

static int child_exit(pid_t pid)
{
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(void)
{
    int id = semget(IPC_PRIVATE, 3, IPC_CREAT | 0600);
    printf("semget: %s\n", err(id));
    struct semid_ds ds;
    union semun arg = {.buf = &ds};
    semctl(id, 0, IPC_STAT, arg);
    printf("nsems %lu mode %o\n", (unsigned long)ds.sem_nsems, (unsigned)ds.sem_perm.mode & 0777);

    arg.val = 5;
    const char *r = err(semctl(id, 1, SETVAL, arg));
    printf("SETVAL: %s, GETVAL %d\n", r, semctl(id, 1, GETVAL));
    unsigned short all[3] = {1, 2, 3}, got[3];
    arg.array = all;
    semctl(id, 0, SETALL, arg);
    arg.array = got;
    semctl(id, 0, GETALL, arg);
    printf("SETALL/GETALL: %d %d %d\n", got[0], got[1], got[2]);
    printf("GETPID is me: %d\n", semctl(id, 0, GETPID) == getpid());

    /* all or nothing: the second op cannot go, so the first does not either */
    struct sembuf two[2] = {{0, -1, IPC_NOWAIT}, {1, -5, IPC_NOWAIT}};
    r = err(semop(id, two, 2));
    printf("all or nothing: %s, values %d %d\n", r, semctl(id, 0, GETVAL), semctl(id, 1, GETVAL));
    two[1].sem_op = -2;
    r = err(semop(id, two, 2));
    printf("both: %s, values %d %d\n", r, semctl(id, 0, GETVAL), semctl(id, 1, GETVAL));
    printf("IPC_NOWAIT on zero: %s\n", err(op(id, 0, -1, IPC_NOWAIT)));
    struct timespec ts = {0, 50 * 1000 * 1000};
    struct sembuf dec = {0, -1, 0};
    printf("semtimedop times out: %s\n", err(semtimedop(id, &dec, 1, &ts)));

    /* a child blocks until the parent raises the value */
    fflush(stdout);
    pid_t child = fork();
    if (child == 0)
        _exit(op(id, 0, -1, 0) == 0 ? 0 : 1);
    printf("a blocked decrement is counted: %d\n", waiters(id, 0, GETNCNT, 1));
    op(id, 0, 1, 0);
    int status = child_exit(child);
    printf("the child went on: %d, value %d\n", status, semctl(id, 0, GETVAL));

    /* wait for zero */
    arg.val = 1;
    semctl(id, 2, SETVAL, arg);
    fflush(stdout);
    child = fork();
    if (child == 0)
        _exit(op(id, 2, 0, 0) == 0 ? 0 : 1);
    printf("a wait for zero is counted: %d\n", waiters(id, 2, GETZCNT, 1));
    op(id, 2, -1, 0);
    printf("it went on at zero: %d\n", child_exit(child));

    /* SEM_UNDO: undone when the process exits */
    fflush(stdout);
    child = fork();
    if (child == 0) {
        op(id, 1, 4, SEM_UNDO);
        _exit(semctl(id, 1, GETVAL));
    }
    status = child_exit(child);
    printf("with SEM_UNDO in the child: %d, after its exit: %d\n", status, semctl(id, 1, GETVAL));

    /* errors */
    printf("semop of no semaphore: %s\n", err(op(id, 3, 1, 0)));
    arg.val = 40000;
    printf("SETVAL too big: %s\n", err(semctl(id, 0, SETVAL, arg)));
    printf("semop of a bad id: %s\n", err(op(-1, 0, 1, 0)));
    printf("zero ops: %s\n", err(semop(id, two, 0)));
    key_t key = 0x50595353;
    int kid = semget(key, 2, IPC_CREAT | IPC_EXCL | 0600);
    r = err(kid);
    printf("semget key: %s, again %d\n", r, semget(key, 1, 0) == kid);
    printf("IPC_EXCL again: %s\n", err(semget(key, 2, IPC_CREAT | IPC_EXCL | 0600)));
    printf("more semaphores than the set: %s\n", err(semget(key, 3, 0)));
    printf("missing key: %s\n", err(semget(0x50595354, 1, 0)));
    printf("no semaphores: %s\n", err(semget(IPC_PRIVATE, 0, IPC_CREAT | 0600)));

    /* removal under a waiter */
    fflush(stdout);
    child = fork();
    if (child == 0)
        _exit(op(kid, 0, -1, 0) < 0 && errno == EIDRM ? 0 : 1);
    waiters(kid, 0, GETNCNT, 1);
    printf("IPC_RMID: %s\n", err(semctl(kid, 0, IPC_RMID)));
    printf("the waiter got EIDRM: %d\n", child_exit(child) == 0);
    printf("gone: %s\n", err(semctl(kid, 0, GETVAL)));
    semctl(id, 0, IPC_RMID);
    return 0;
}
