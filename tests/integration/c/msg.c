/* System V message queues: send and receive by type, blocking and waking
 * across processes, a full queue, truncation, removal under a waiter, and
 * the errors of each call.  Deterministic output. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/wait.h>
#include <unistd.h>

struct message { long mtype; char text[64]; };

static const char *err(long r)
{
    return r < 0 ? strerrorname_np(errno) : "ok";
}

static int send(int id, long type, const char *text, int flags)
{
    struct message m = {type, ""};
    strcpy(m.text, text);
    return msgsnd(id, &m, strlen(text) + 1, flags);
}

static const char *receive(int id, long type, int flags)
{
    static struct message m;
    ssize_t n = msgrcv(id, &m, sizeof m.text, type, flags);
    if (n < 0)
        return strerrorname_np(errno);
    return m.text;
}

/* wait (up to 10 s) until process PID sleeps: blocked in its call */
static void wait_asleep(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(path, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = 0;
            char *p = strrchr(buf, ')');
            if (p && p[1] == ' ' && p[2] == 'S')
                return;
        }
        usleep(10000);
    }
}

static int child_exit(pid_t pid)
{
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(void)
{
    int id = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
    printf("msgget: %s\n", err(id));
    send(id, 2, "two", 0);
    send(id, 1, "one", 0);
    send(id, 3, "three", 0);
    send(id, 1, "one again", 0);
    struct msqid_ds ds;
    msgctl(id, IPC_STAT, &ds);
    printf("qnum %lu cbytes %lu qbytes %lu lspid is me %d\n", (unsigned long)ds.msg_qnum,
           (unsigned long)ds.__msg_cbytes, (unsigned long)ds.msg_qbytes, ds.msg_lspid == getpid());
    printf("type 1: %s\n", receive(id, 1, 0));
    printf("any: %s\n", receive(id, 0, 0));
    printf("lowest up to 3: %s\n", receive(id, -3, 0));
    printf("not 1: %s\n", receive(id, 1, MSG_EXCEPT));
    printf("empty, IPC_NOWAIT: %s\n", receive(id, 0, IPC_NOWAIT));

    /* too long for the buffer: E2BIG, unless MSG_NOERROR truncates */
    send(id, 5, "a long message", 0);
    struct { long mtype; char text[4]; } small;
    ssize_t n = msgrcv(id, &small, 4, 0, IPC_NOWAIT);
    printf("too long: %s\n", err(n));
    n = msgrcv(id, &small, 4, 0, MSG_NOERROR);
    printf("MSG_NOERROR: %zd %.4s\n", n, small.text);

    /* a receiver blocks until a message comes */
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        const char *got = receive(id, 7, 0);
        _exit(strcmp(got, "for the child") == 0 ? 0 : 1);
    }
    usleep(100000);
    send(id, 7, "for the child", 0);
    printf("the blocked receiver got it: %d\n", child_exit(child) == 0);

    /* a full queue: IPC_NOWAIT fails, a blocked sender goes on once read */
    struct msqid_ds small_q;
    msgctl(id, IPC_STAT, &small_q);
    small_q.msg_qbytes = 20;
    printf("IPC_SET qbytes: %s\n", err(msgctl(id, IPC_SET, &small_q)));
    send(id, 1, "0123456789abcdef", 0);
    printf("full, IPC_NOWAIT: %s\n", err(send(id, 1, "more", IPC_NOWAIT)));
    fflush(stdout);
    child = fork();
    if (child == 0)
        _exit(send(id, 1, "more", 0) == 0 ? 0 : 1);
    usleep(100000);
    printf("first out: %s\n", receive(id, 0, 0));
    printf("the blocked sender went on: %d, then: %s\n", child_exit(child) == 0, receive(id, 0, 0));

    /* errors */
    printf("type 0: %s\n", err(send(id, 0, "x", 0)));
    printf("bad id: %s\n", err(send(-1, 1, "x", 0)));
    key_t key = 0x5059534d;
    int kid = msgget(key, IPC_CREAT | IPC_EXCL | 0600);
    const char *r = err(kid);
    printf("msgget key: %s, again %d\n", r, msgget(key, 0) == kid);
    printf("IPC_EXCL again: %s\n", err(msgget(key, IPC_CREAT | IPC_EXCL | 0600)));
    printf("missing key: %s\n", err(msgget(0x5059534e, 0)));

    /* removal under a waiter */
    fflush(stdout);
    child = fork();
    if (child == 0)
        _exit(msgrcv(kid, &small, 4, 0, 0) < 0 && errno == EIDRM ? 0 : 1);
    wait_asleep(child);
    printf("IPC_RMID: %s\n", err(msgctl(kid, IPC_RMID, NULL)));
    printf("the waiter got EIDRM: %d\n", child_exit(child) == 0);
    printf("gone: %s\n", err(msgctl(kid, IPC_STAT, &ds)));
    msgctl(id, IPC_RMID, NULL);
    return 0;
}
