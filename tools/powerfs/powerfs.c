/* qraft-powerfs: a FUSE passthrough that can lose power (a test tool for
 * jepsen/run --nemesis powerloss and tests/powerfs; never installed).
 *
 *   qraft-powerfs [--seed N] [--lie] [--trace] [--log FILE] BACKING MOUNT
 *
 * Serves BACKING at MOUNT, in the foreground, one request at a time.
 * Writes reach BACKING at once; journal.c keeps what no fsync covered yet.
 * SIGUSR1 is the power switch: the loop stops, every unsynced change is
 * undone (journal.h: seeded prefix per file, the next write maybe torn at a
 * page boundary), the connection is aborted (every later access fails with
 * ENOTCONN) and the mount detached; the process exits 0. SIGTERM, SIGINT
 * and SIGHUP unmount cleanly, keeping everything. --lie acknowledges
 * fsyncs without keeping anything (power off then drops every change since
 * the mount, whatever the seed): the broken disk the chaos checker must
 * catch.
 *
 * What counts as a sync: fsync/fdatasync (also the kernel's own, after a
 * buffered RWF_DSYNC write or msync), fsync of a directory (its entry
 * changes), a write through a handle opened O_SYNC/O_DSYNC, and a write
 * the kernel flags O_DSYNC/O_SYNC (RWF_DSYNC, also through Linux AIO on an
 * O_DIRECT file as raft 0.22.1 writes its segments: no fsync follows it).
 * Invariant: a request is answered only after the journal holds the pre-image
 * of what it changed, so a power off at any point can undo it. */
#define FUSE_USE_VERSION 31

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <unistd.h>

#include "journal.h"

/* An open file (fd) or directory (fd -1): every live one is in the list
 * `handles`, so what the kernel never released before a power off is freed
 * at exit. */
struct handle {
    int fd;
    char *path;       /* journal form ("a/b", "" for the root) */
    bool sync_writes; /* opened O_SYNC/O_DSYNC: each write is durable */
    struct handle *prev, *next;
};

static struct handle *handles;

static struct pf_journal journal;
static int root_fd = -1;
static bool trace;
static FILE *log_file;
static struct fuse_session *session;
static volatile sig_atomic_t power_off_requested;

static void trace_op(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void trace_op(const char *fmt, ...)
{
    if (!trace) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(log_file, fmt, ap);
    va_end(ap);
    fputc('\n', log_file);
}

/* "/a/b" -> "a/b"; "/" -> "" (journal paths); rel() for the *at calls. */
static const char *jpath(const char *path)
{
    return path[0] == '/' ? path + 1 : path;
}

static const char *rel(const char *path)
{
    const char *p = jpath(path);
    return p[0] == '\0' ? "." : p;
}

static struct handle *handle_of(struct fuse_file_info *fi)
{
    return (struct handle *)(uintptr_t)fi->fh;
}

static struct handle *handle_new(const char *path)
{
    struct handle *h = calloc(1, sizeof *h);
    if (h == NULL || (h->path = strdup(jpath(path))) == NULL) {
        free(h);
        return NULL;
    }
    h->fd = -1;
    h->next = handles;
    if (handles != NULL) {
        handles->prev = h;
    }
    handles = h;
    return h;
}

static void handle_free(struct handle *h)
{
    if (h->prev != NULL) {
        h->prev->next = h->next;
    } else {
        handles = h->next;
    }
    if (h->next != NULL) {
        h->next->prev = h->prev;
    }
    if (h->fd >= 0) {
        close(h->fd);
    }
    free(h->path);
    free(h);
}

static void *pf_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)conn;
    cfg->hard_remove = 1; /* no .fuse_hidden files: unlink is ours */
    cfg->nullpath_ok = 1;
    cfg->use_ino = 1;
    return NULL;
}

static int pf_getattr(const char *path,
                      struct stat *st,
                      struct fuse_file_info *fi)
{
    int rc = fi != NULL ? fstat(handle_of(fi)->fd, st)
                        : fstatat(root_fd, rel(path), st, AT_SYMLINK_NOFOLLOW);
    return rc == 0 ? 0 : -errno;
}

static int pf_readdir(const char *path,
                      void *buf,
                      fuse_fill_dir_t fill,
                      off_t off,
                      struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags)
{
    (void)path;
    (void)off;
    (void)flags;
    const char *dir = handle_of(fi)->path;
    DIR *d;
    int rc = pf_open_dir(root_fd, dir, &d);
    if (rc != 0) {
        return rc;
    }
    bool at_root = dir[0] == '\0';
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (at_root && strcmp(e->d_name, PF_TRASH_DIR) == 0) {
            continue;
        }
        struct stat st = {.st_ino = e->d_ino, .st_mode = DTTOIF(e->d_type)};
        if (fill(buf, e->d_name, &st, 0, 0) != 0) {
            break;
        }
    }
    closedir(d);
    return 0;
}

/* Opens path in the backing dir for fi->flags (plus create_mode when
 * creating): writable handles are opened read-write (the journal reads
 * pre-images), without O_DIRECT (FUSE hands us unaligned buffers),
 * O_SYNC/O_DSYNC (remembered instead) or O_TRUNC (journaled). */
static int open_backing(const char *path,
                        struct fuse_file_info *fi,
                        bool creating,
                        mode_t create_mode)
{
    int flags = fi->flags;
    bool writable = (flags & O_ACCMODE) != O_RDONLY;
    bool truncating = writable && (flags & O_TRUNC);
    struct stat st;
    bool existed =
        creating && fstatat(root_fd, rel(path), &st, AT_SYMLINK_NOFOLLOW) == 0;
    int bflags =
        flags & ~(O_ACCMODE | O_DIRECT | O_SYNC | O_DSYNC | O_TRUNC | O_APPEND);
    bflags |= (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC;
    if (!creating) {
        bflags &= ~(O_CREAT | O_EXCL);
    }
    struct handle *h = handle_new(path);
    if (h == NULL) {
        return -ENOMEM;
    }
    h->sync_writes = (flags & (O_SYNC | O_DSYNC)) != 0;
    h->fd = openat(root_fd, rel(path), bflags, create_mode);
    int rc = h->fd < 0 ? -errno : 0;
    if (rc == 0 && creating && !existed) {
        rc = pf_journal_created(&journal, jpath(path), false);
    }
    if (rc == 0 && truncating) {
        rc = pf_journal_before_truncate(&journal, h->fd, 0);
        if (rc == 0 && ftruncate(h->fd, 0) != 0) {
            rc = -errno;
        }
    }
    trace_op("open %s flags 0%o%s -> %d", path, (unsigned)flags,
             h->sync_writes ? " (sync writes)" : "", rc);
    if (rc != 0) {
        handle_free(h);
        return rc;
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    return 0;
}

static int pf_open(const char *path, struct fuse_file_info *fi)
{
    return open_backing(path, fi, false, 0);
}

static int pf_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    return open_backing(path, fi, true, mode);
}

static int pf_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    handle_free(handle_of(fi));
    return 0;
}

static int pf_read(const char *path,
                   char *buf,
                   size_t size,
                   off_t off,
                   struct fuse_file_info *fi)
{
    (void)path;
    ssize_t n = pread(handle_of(fi)->fd, buf, size, off);
    return n < 0 ? -errno : (int)n;
}

static int pf_write(const char *path,
                    const char *buf,
                    size_t size,
                    off_t off,
                    struct fuse_file_info *fi)
{
    struct handle *h = handle_of(fi);
    int rc = pf_journal_before_write(&journal, h->fd, off, size);
    if (rc != 0) {
        return rc;
    }
    ssize_t n = pwrite(h->fd, buf, size, off);
    if (n < 0) {
        return -errno;
    }
    /* The kernel marks a write O_DSYNC/O_SYNC in fi->flags when the handle
     * or the request (RWF_DSYNC, as raft's io_submit) wants it durable: on
     * an O_DIRECT asynchronous write it sends no fsync after it. */
    bool sync = h->sync_writes || (fi->flags & (O_DSYNC | O_SYNC)) != 0;
    if (sync) {
        rc = pf_journal_sync_file(&journal, h->fd);
    }
    (void)path;
    trace_op("write %s off %jd len %zu flags 0%o%s", h->path, (intmax_t)off,
             size, (unsigned)fi->flags, sync ? " synced" : "");
    return rc != 0 ? rc : (int)n;
}

static int pf_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)path;
    trace_op("fsync %s datasync %d", handle_of(fi)->path, datasync);
    return pf_journal_sync_file(&journal, handle_of(fi)->fd);
}

/* A directory handle remembers its path: fsyncdir gets none (nullpath_ok). */
static int pf_opendir(const char *path, struct fuse_file_info *fi)
{
    struct handle *h = handle_new(path);
    if (h == NULL) {
        return -ENOMEM;
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    return 0;
}

static int pf_releasedir(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    handle_free(handle_of(fi));
    return 0;
}

static int pf_fsyncdir(const char *path,
                       int datasync,
                       struct fuse_file_info *fi)
{
    const char *dir = handle_of(fi)->path;
    (void)path;
    trace_op("fsyncdir /%s datasync %d", dir, datasync);
    return pf_journal_sync_dir(&journal, dir);
}

static int pf_flush(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    (void)fi;
    return 0;
}

static int pf_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    int fd = fi != NULL ? handle_of(fi)->fd
                        : openat(root_fd, rel(path), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = pf_journal_before_truncate(&journal, fd, size);
    if (rc == 0 && ftruncate(fd, size) != 0) {
        rc = -errno;
    }
    if (fi == NULL) {
        close(fd);
    }
    trace_op("truncate %s to %jd -> %d",
             fi != NULL ? handle_of(fi)->path : path, (intmax_t)size, rc);
    return rc;
}

static int pf_fallocate(const char *path,
                        int mode,
                        off_t off,
                        off_t len,
                        struct fuse_file_info *fi)
{
    if (mode != 0) {
        return -EOPNOTSUPP; /* only plain allocation is journaled */
    }
    int fd = handle_of(fi)->fd;
    int rc = pf_journal_before_allocate(&journal, fd, off, len);
    if (rc == 0) {
        rc = -posix_fallocate(fd, off, len);
    }
    (void)path;
    trace_op("fallocate %s off %jd len %jd -> %d", handle_of(fi)->path,
             (intmax_t)off, (intmax_t)len, rc);
    return rc;
}

static int pf_mkdir(const char *path, mode_t mode)
{
    if (mkdirat(root_fd, rel(path), mode) != 0) {
        return -errno;
    }
    return pf_journal_created(&journal, jpath(path), true);
}

static int pf_unlink(const char *path)
{
    trace_op("unlink %s", path);
    return pf_journal_unlink(&journal, jpath(path));
}

static int pf_rmdir(const char *path)
{
    return pf_journal_rmdir(&journal, jpath(path));
}

static int pf_rename(const char *from, const char *to, unsigned int flags)
{
    trace_op("rename %s %s flags %u", from, to, flags);
    if (flags & ~RENAME_NOREPLACE) {
        return -EINVAL; /* RENAME_EXCHANGE, RENAME_WHITEOUT: not modelled */
    }
    return pf_journal_rename(&journal, jpath(from), jpath(to),
                             flags & RENAME_NOREPLACE);
}

static int pf_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int rc = fi != NULL ? fchmod(handle_of(fi)->fd, mode)
                        : fchmodat(root_fd, rel(path), mode, 0);
    return rc == 0 ? 0 : -errno;
}

static int pf_chown(const char *path,
                    uid_t uid,
                    gid_t gid,
                    struct fuse_file_info *fi)
{
    int rc = fi != NULL
                 ? fchown(handle_of(fi)->fd, uid, gid)
                 : fchownat(root_fd, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW);
    return rc == 0 ? 0 : -errno;
}

static int pf_utimens(const char *path,
                      const struct timespec tv[2],
                      struct fuse_file_info *fi)
{
    int rc = fi != NULL
                 ? futimens(handle_of(fi)->fd, tv)
                 : utimensat(root_fd, rel(path), tv, AT_SYMLINK_NOFOLLOW);
    return rc == 0 ? 0 : -errno;
}

static int pf_statfs(const char *path, struct statvfs *st)
{
    (void)path;
    return fstatvfs(root_fd, st) == 0 ? 0 : -errno;
}

static const struct fuse_operations ops = {
    .init = pf_init,
    .getattr = pf_getattr,
    .opendir = pf_opendir,
    .releasedir = pf_releasedir,
    .readdir = pf_readdir,
    .open = pf_open,
    .create = pf_create,
    .release = pf_release,
    .read = pf_read,
    .write = pf_write,
    .fsync = pf_fsync,
    .fsyncdir = pf_fsyncdir,
    .flush = pf_flush,
    .truncate = pf_truncate,
    .fallocate = pf_fallocate,
    .mkdir = pf_mkdir,
    .unlink = pf_unlink,
    .rmdir = pf_rmdir,
    .rename = pf_rename,
    .chmod = pf_chmod,
    .chown = pf_chown,
    .utimens = pf_utimens,
    .statfs = pf_statfs,
};

static void on_power_switch(int sig)
{
    (void)sig;
    power_off_requested = 1;
    if (session != NULL) {
        fuse_session_exit(session);
    }
}

static int usage(void)
{
    fprintf(stderr,
            "usage: qraft-powerfs [--seed N] [--lie] [--trace] "
            "[--log FILE] BACKING MOUNT\n");
    return 2;
}

int main(int argc, char **argv)
{
    uint64_t seed = 0;
    bool lie = false;
    const char *log_path = NULL;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--lie") == 0) {
            lie = true;
        } else if (strcmp(argv[i], "--trace") == 0) {
            trace = true;
        } else if (strcmp(argv[i], "--log") == 0 && i + 1 < argc) {
            log_path = argv[++i];
        } else {
            return usage();
        }
    }
    if (argc - i != 2) {
        return usage();
    }
    const char *backing = argv[i], *mount = argv[i + 1];
    log_file = stderr;
    if (log_path != NULL && (log_file = fopen(log_path, "a")) == NULL) {
        fprintf(stderr, "powerfs: open log %s: %s\n", log_path,
                strerror(errno));
        return 1;
    }
    setvbuf(log_file, NULL, _IOLBF, 0);
    root_fd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0) {
        fprintf(log_file, "powerfs: open backing dir %s: %s\n", backing,
                strerror(errno));
        return 1;
    }
    /* A lying disk rolls back to its state at the mount, whole: consistent
     * but old, so the node starts again and has forgotten what it acked. */
    int rc = pf_journal_init(&journal, root_fd, lie ? 0 : seed, lie, log_file);
    if (rc != 0) {
        fprintf(log_file, "powerfs: trash in %s: %s\n", backing, strerror(-rc));
        return 1;
    }

    char *fargv[] = {argv[0], "-o", "fsname=qraft-powerfs,subtype=powerfs",
                     NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
    struct fuse *fuse = fuse_new(&args, &ops, sizeof ops, NULL);
    if (fuse == NULL) {
        fprintf(log_file, "powerfs: fuse_new failed\n");
        return 1;
    }
    if (fuse_mount(fuse, mount) != 0) {
        fprintf(log_file, "powerfs: mount %s failed\n", mount);
        fuse_destroy(fuse);
        return 1;
    }
    session = fuse_get_session(fuse);
    if (fuse_set_signal_handlers(session) != 0) {
        fprintf(log_file, "powerfs: signal handlers failed\n");
        fuse_unmount(fuse);
        fuse_destroy(fuse);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_power_switch};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL); /* no SA_RESTART: the read stops */
    fprintf(log_file,
            "powerfs: serving %s at %s (seed %" PRIu64 "%s), pid %d\n", backing,
            mount, seed, lie ? ", lying about fsync" : "", (int)getpid());

    rc = fuse_loop(fuse);
    if (power_off_requested) {
        uint64_t dropped = pf_journal_power_off(&journal);
        fprintf(log_file,
                "powerfs: powered off after %" PRIu64 " syncs: %" PRIu64
                " unsynced changes dropped or torn\n",
                journal.n_syncs, dropped);
        rc = 0;
    } else {
        fprintf(log_file, "powerfs: unmounting, everything kept\n");
    }
    fuse_remove_signal_handlers(session);
    fuse_unmount(fuse); /* aborts the connection, then a lazy umount */
    fuse_destroy(fuse);
    fuse_opt_free_args(&args);
    while (handles != NULL) {
        handle_free(handles); /* never released: the power went */
    }
    pf_journal_free(&journal);
    close(root_fd);
    return rc < 0 ? 1 : 0;
}
