/* Credential changes follow Linux's rules for root and for an unprivileged
   user (the sandbox's ids are the Sentry's; run as root natively). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

static void show(const char *what, int ret) {
    uid_t r, e, s;
    gid_t gr, ge, gs;
    getresuid(&r, &e, &s);
    getresgid(&gr, &ge, &gs);
    printf("%-26s ret=%d errno=%d uid=%d/%d/%d gid=%d/%d/%d\n", what, ret, ret ? errno : 0,
           r, e, s, gr, ge, gs);
    errno = 0;
}

int main(void) {
    show("start", 0);
    show("setresgid(100,100,0)", setresgid(100, 100, 0));
    show("setgid(0)", setgid(0));
    show("setresuid(1000,1000,0)", setresuid(1000, 1000, 0));
    show("setgid(7)", setgid(7));
    show("setuid(0)", setuid(0));
    show("setreuid(-1,0)", setreuid(-1, 0));
    show("setuid(5)", setuid(5));
    show("setuid(1000)", setuid(1000));
    show("setreuid(0,0)", setreuid(0, 0));
    show("setresuid(-1,1000,-1)", setresuid(-1, 1000, -1));
    return 0;
}
