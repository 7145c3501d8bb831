/* An LD_PRELOAD shim for tests/power_loss.rs: it records what a power cut would leave of
 * a data dir, at every moment a process makes something durable.
 *
 * A file's bytes are durable as they are when an fsync or fdatasync of it returns; a
 * name in a directory (a created, renamed or removed file or subdirectory) is durable
 * once that directory is fsynced. Nothing else is: a power cut drops every write and
 * every directory change that was not synced (RocksDB's FaultInjectionTestEnv's model,
 * and the strict reading of POSIX). Each sync is one numbered point:
 *
 *   POWERLOSS_ROOT  the data dir (an absolute, canonical path); syncs elsewhere pass by
 *   POWERLOSS_OUT   where the record goes (outside the root):
 *     journal       one line per event, tab-separated:
 *                     R <dir key>                      the root (first line)
 *                     F <point> <file key>             the file's bytes at <point> are v/<point>
 *                     D <point> <dir key> <n>          the directory's names at <point>, then
 *                     E <name> <f|d> <key>             n lines, one per name
 *                     L <point> <dir key> <n>          after each point, every directory's
 *                                                      names as they are, synced or not
 *                                                      (then n E lines)
 *     v/<point>     a copy of a file as it was synced
 *     points        the last point whose lines are all written (8 bytes, little endian)
 *
 * A key is "<inode>.<birth seconds>.<birth nanoseconds>" (statx): a file keeps it across
 * renames, and a new file on a reused inode gets another. At start the shim records the
 * whole tree under the root as point 0 (what exists before the process is durable).
 * Everything runs under one lock, so a point's lines are whole before the next begins and
 * before the sync that made it returns to its caller. */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char root[4096], out[4096];
static size_t root_len;
static int journal = -1, points_fd = -1, ready = 0;
static uint64_t point = 0;

static void die(const char *what) {
    char msg[512];
    int n = snprintf(msg, sizeof msg, "powerloss: %s: %s\n", what, strerror(errno));
    if (write(2, msg, n) < 0) { /* nothing more to say */ }
    abort();
}

static void put(const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(journal, s, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            die("journal write");
        }
        s += w;
        n -= (size_t)w;
    }
}

static void putf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void putf(const char *fmt, ...) {
    char line[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line) {
        errno = ENAMETOOLONG;
        die("journal line");
    }
    put(line, (size_t)n);
}

/* The key of what `dirfd`/`name` names (AT_EMPTY_PATH with name ""); 0 if it is gone. */
static int key_of(int dirfd, const char *name, char *key, size_t len, int *is_dir) {
    struct statx st;
    int flags = AT_SYMLINK_NOFOLLOW | (name[0] ? 0 : AT_EMPTY_PATH);
    if (statx(dirfd, name, flags, STATX_INO | STATX_BTIME | STATX_TYPE, &st) != 0) return 0;
    if (!(st.stx_mask & STATX_BTIME)) {
        errno = ENOTSUP;
        die("statx gives no birth time on this file system");
    }
    snprintf(key, len, "%llu.%lld.%u", (unsigned long long)st.stx_ino,
             (long long)st.stx_btime.tv_sec, st.stx_btime.tv_nsec);
    if (is_dir) *is_dir = S_ISDIR(st.stx_mode) ? 1 : S_ISREG(st.stx_mode) ? 0 : -1;
    return 1;
}

/* Copies what `fd` reads to v/<point>. */
static void copy_file(int fd) {
    char path[4200];
    snprintf(path, sizeof path, "%s/v/%llu", out, (unsigned long long)point);
    int to = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (to < 0) die("open copy");
    char buf[1 << 16];
    off_t at = 0;
    for (;;) {
        ssize_t n = pread(fd, buf, sizeof buf, at);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("read to copy");
        }
        if (n == 0) break;
        ssize_t done = 0;
        while (done < n) {
            ssize_t w = write(to, buf + done, (size_t)(n - done));
            if (w < 0) die("write copy");
            done += w;
        }
        at += n;
    }
    close(to);
}

static void file_point(int fd) {
    char key[96];
    if (!key_of(fd, "", key, sizeof key, NULL)) die("statx of a synced file");
    /* Read through a descriptor of our own: the caller's may be write-only. */
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int rd = open(link, O_RDONLY | O_CLOEXEC);
    if (rd < 0) die("reopen a synced file");
    copy_file(rd);
    close(rd);
    putf("F\t%llu\t%s\n", (unsigned long long)point, key);
}

static void dir_names(int fd, char tag) {
    char key[96];
    if (!key_of(fd, "", key, sizeof key, NULL)) die("statx of a synced directory");
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int rd = open(link, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rd < 0) die("reopen a synced directory");
    DIR *d = fdopendir(rd);
    if (!d) die("fdopendir");
    /* Names first (a buffer), then the header with their count. */
    size_t cap = 1 << 16, len = 0, n = 0;
    char *lines = malloc(cap);
    if (!lines) die("malloc");
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char k[96];
        int is_dir;
        if (!key_of(dirfd(d), e->d_name, k, sizeof k, &is_dir) || is_dir < 0) continue;
        size_t need = strlen(e->d_name) + strlen(k) + 8;
        if (len + need > cap) {
            cap = 2 * cap + need;
            lines = realloc(lines, cap);
            if (!lines) die("realloc");
        }
        len += (size_t)sprintf(lines + len, "E\t%s\t%c\t%s\n", e->d_name, is_dir ? 'd' : 'f', k);
        n++;
    }
    closedir(d);
    putf("%c\t%llu\t%s\t%zu\n", tag, (unsigned long long)point, key, n);
    put(lines, len);
    free(lines);
}

static void published(void) {
    uint64_t p = point;
    if (pwrite(points_fd, &p, sizeof p, 0) != sizeof p) die("points write");
}

static int under_root(int fd) {
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    return strncmp(path, root, root_len) == 0 && (path[root_len] == '/' || path[root_len] == 0);
}

/* Every directory under `fd` as it is now: for the baseline (`files`) as synced, D lines,
 * with every file's bytes (each file its own copy, all of them point 0 to the test);
 * after each point the names alone, synced or not, as L lines. */
static void walk(int fd, int files) {
    dir_names(fd, files ? 'D' : 'L');
    int rd = dup(fd);
    if (rd < 0) die("dup");
    DIR *d = fdopendir(rd);
    if (!d) die("fdopendir");
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        int child = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (child < 0) continue; /* gone */
        struct stat st;
        if (fstat(child, &st) == 0) {
            if (S_ISDIR(st.st_mode)) {
                walk(child, files);
            } else if (files && S_ISREG(st.st_mode)) {
                file_point(child);
                point++;
            }
        }
        close(child);
    }
    closedir(d);
}

__attribute__((constructor)) static void start(void) {
    const char *r = getenv("POWERLOSS_ROOT"), *o = getenv("POWERLOSS_OUT");
    if (!r || !o) return;
    snprintf(root, sizeof root, "%s", r);
    snprintf(out, sizeof out, "%s", o);
    root_len = strlen(root);
    char path[4200];
    snprintf(path, sizeof path, "%s/v", out);
    if (mkdir(path, 0700) != 0 && errno != EEXIST) die("mkdir v");
    snprintf(path, sizeof path, "%s/journal", out);
    journal = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (journal < 0) die("open journal");
    snprintf(path, sizeof path, "%s/points", out);
    points_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (points_fd < 0) die("open points");
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) die("open root");
    char key[96];
    if (!key_of(fd, "", key, sizeof key, NULL)) die("statx of the root");
    putf("R\t%s\n", key);
    /* The baseline's copies are numbered from 1 so that no two share a file; the test
     * takes every line before the first point after them as point 0. */
    point = 1;
    walk(fd, 1);
    close(fd);
    putf("B\t%llu\n", (unsigned long long)point);
    published();
    ready = 1;
}

static void after_sync(int fd) {
    if (!ready || !under_root(fd)) return;
    struct stat st;
    if (fstat(fd, &st) != 0) return;
    pthread_mutex_lock(&lock);
    point++;
    if (S_ISDIR(st.st_mode)) {
        dir_names(fd, 'D');
    } else if (S_ISREG(st.st_mode)) {
        file_point(fd);
    }
    int r = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (r < 0) die("open root");
    walk(r, 0);
    close(r);
    published();
    pthread_mutex_unlock(&lock);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int rc = real(fd);
    if (rc == 0) after_sync(fd);
    return rc;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int rc = real(fd);
    if (rc == 0) after_sync(fd);
    return rc;
}

/* A whole-system or whole-file-system sync would make everything durable at once: this
 * model does not follow it, so a process that calls one fails the test loudly. */
void sync(void) {
    errno = ENOTSUP;
    die("sync() is not modelled");
}

int syncfs(int fd) {
    (void)fd;
    errno = ENOTSUP;
    die("syncfs() is not modelled");
    return -1;
}
