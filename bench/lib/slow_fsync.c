/* An LD_PRELOAD shim for bench/slow-fsync.sh: every fdatasync and fsync of the process
 * takes SLOW_FSYNC_US microseconds more than the disk's own (a disk whose cache flush is
 * slower than this machine's virtual one). Measurement only: never loaded by the server
 * or the tests. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static long extra_us(void) {
    static long us = -1;
    if (us < 0) {
        const char *v = getenv("SLOW_FSYNC_US");
        us = v ? atol(v) : 0;
    }
    return us;
}

static void pause_extra(void) {
    long us = extra_us();
    if (us > 0) {
        struct timespec t = {us / 1000000, (us % 1000000) * 1000};
        while (nanosleep(&t, &t) != 0) {
        }
    }
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int rc = real(fd);
    pause_extra();
    return rc;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int rc = real(fd);
    pause_extra();
    return rc;
}
