/* journal: see journal.h. */
#include "journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE_BYTES 4096

enum change_kind { CHANGE_WRITE, CHANGE_TRUNCATE, CHANGE_ALLOCATE };

/* One change to a file since its last sync: undone by truncating back to
 * size_before and writing pre (the bytes [off, off + pre_bytes) held). */
struct pf_change {
    enum change_kind kind;
    off_t off, len;
    off_t size_before;
    char *pre;
    size_t pre_bytes;
};

struct pf_file {
    dev_t dev;
    ino_t ino;
    int fd; /* ours (a dup): still valid when the name is gone */
    struct pf_change *changes;
    size_t n_changes, cap_changes;
    struct pf_file *next;
};

enum dirop_kind {
    DIROP_CREATE,
    DIROP_MKDIR,
    DIROP_UNLINK,
    DIROP_RMDIR,
    DIROP_RENAME
};

struct pf_dirop {
    enum dirop_kind kind;
    char *path;  /* the entry (rename: its old name) */
    char *to;    /* rename: the new name */
    char *trash; /* unlink: where the file waits; rename: the overwritten
                    target, or NULL */
    ino_t ino;   /* create: the file it made */
    mode_t mode; /* rmdir: the directory's mode */
    struct pf_dirop *next;
};

/* xorshift64*: the seeded choices of power off. */
static uint64_t next_random(struct pf_journal *j)
{
    j->rng ^= j->rng >> 12;
    j->rng ^= j->rng << 25;
    j->rng ^= j->rng >> 27;
    return j->rng * 0x2545F4914F6CDD1DULL;
}

static const char *rel(const char *path)
{
    return path[0] == '\0' ? "." : path;
}

static void parent_of(const char *path, char *out, size_t out_bytes)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash == NULL ? 0 : (size_t)(slash - path);
    if (n >= out_bytes) {
        n = out_bytes - 1;
    }
    memcpy(out, path, n);
    out[n] = '\0';
}

static void fd_name(int fd, char *out, size_t out_bytes)
{
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, out, out_bytes - 1);
    if (n < 0) {
        snprintf(out, out_bytes, "(fd %d)", fd);
        return;
    }
    out[n] = '\0';
}

int pf_open_dir(int root_fd, const char *path, DIR **out)
{
    int dfd = openat(root_fd, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        return -errno;
    }
    *out = fdopendir(dfd);
    if (*out == NULL) {
        int err = errno;
        close(dfd);
        return -err;
    }
    return 0;
}

static int empty_trash(struct pf_journal *j)
{
    if (mkdirat(j->root_fd, PF_TRASH_DIR, 0700) != 0 && errno != EEXIST) {
        return -errno;
    }
    DIR *d;
    int rc = pf_open_dir(j->root_fd, PF_TRASH_DIR, &d);
    if (rc != 0) {
        return rc;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            unlinkat(dirfd(d), e->d_name, 0);
        }
    }
    closedir(d);
    return 0;
}

int pf_journal_init(struct pf_journal *j,
                    int root_fd,
                    uint64_t seed,
                    bool lie,
                    FILE *log)
{
    memset(j, 0, sizeof *j);
    j->root_fd = root_fd;
    j->rng = seed;
    j->lie = lie;
    j->log = log;
    return empty_trash(j);
}

static void free_file(struct pf_file *f)
{
    for (size_t i = 0; i < f->n_changes; i++) {
        free(f->changes[i].pre);
    }
    free(f->changes);
    close(f->fd);
    free(f);
}

static void free_dirop(struct pf_dirop *op)
{
    free(op->path);
    free(op->to);
    free(op->trash);
    free(op);
}

void pf_journal_free(struct pf_journal *j)
{
    while (j->files != NULL) {
        struct pf_file *f = j->files;
        j->files = f->next;
        free_file(f);
    }
    while (j->dirops != NULL) {
        struct pf_dirop *op = j->dirops;
        j->dirops = op->next;
        free_dirop(op);
    }
    j->dirops_tail = NULL;
}

/* The file's record, made on its first change (*st filled either way). */
static int file_of(struct pf_journal *j,
                   int fd,
                   struct stat *st,
                   struct pf_file **out)
{
    if (fstat(fd, st) != 0) {
        return -errno;
    }
    for (struct pf_file *f = j->files; f != NULL; f = f->next) {
        if (f->dev == st->st_dev && f->ino == st->st_ino) {
            *out = f;
            return 0;
        }
    }
    struct pf_file *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return -ENOMEM;
    }
    f->fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (f->fd < 0) {
        int err = errno;
        free(f);
        return -err;
    }
    f->dev = st->st_dev;
    f->ino = st->st_ino;
    f->next = j->files;
    j->files = f;
    *out = f;
    return 0;
}

static int add_change(struct pf_journal *j,
                      int fd,
                      enum change_kind kind,
                      off_t off,
                      off_t len)
{
    struct stat st;
    struct pf_file *f = NULL;
    int rc = file_of(j, fd, &st, &f);
    if (rc != 0) {
        return rc;
    }
    if (f->n_changes == f->cap_changes) {
        size_t cap = f->cap_changes ? 2 * f->cap_changes : 16;
        struct pf_change *c = realloc(f->changes, cap * sizeof *c);
        if (c == NULL) {
            return -ENOMEM;
        }
        f->changes = c;
        f->cap_changes = cap;
    }
    struct pf_change c = {
        .kind = kind, .off = off, .len = len, .size_before = st.st_size};
    /* The bytes this change may overwrite or cut off, inside the old size
     * (an allocation never changes bytes that exist). */
    if (kind != CHANGE_ALLOCATE && off < st.st_size) {
        off_t end = kind == CHANGE_TRUNCATE ? st.st_size : off + len;
        if (end > st.st_size) {
            end = st.st_size;
        }
        c.pre_bytes = (size_t)(end - off);
    }
    if (c.pre_bytes > 0) {
        c.pre = malloc(c.pre_bytes);
        if (c.pre == NULL) {
            return -ENOMEM;
        }
        ssize_t n = pread(f->fd, c.pre, c.pre_bytes, off);
        if (n < 0 || (size_t)n != c.pre_bytes) {
            int err = n < 0 ? errno : EIO;
            free(c.pre);
            return -err;
        }
    }
    f->changes[f->n_changes++] = c;
    return 0;
}

int pf_journal_before_write(struct pf_journal *j, int fd, off_t off, size_t len)
{
    return add_change(j, fd, CHANGE_WRITE, off, (off_t)len);
}

int pf_journal_before_truncate(struct pf_journal *j, int fd, off_t size)
{
    return add_change(j, fd, CHANGE_TRUNCATE, size, 0);
}

int pf_journal_before_allocate(struct pf_journal *j,
                               int fd,
                               off_t off,
                               off_t len)
{
    return add_change(j, fd, CHANGE_ALLOCATE, off, len);
}

int pf_journal_sync_file(struct pf_journal *j, int fd)
{
    j->n_syncs++;
    if (j->lie) {
        return 0;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return -errno;
    }
    for (struct pf_file **p = &j->files; *p != NULL; p = &(*p)->next) {
        struct pf_file *f = *p;
        if (f->dev == st.st_dev && f->ino == st.st_ino) {
            *p = f->next;
            free_file(f);
            return 0;
        }
    }
    return 0;
}

static int add_dirop(struct pf_journal *j,
                     enum dirop_kind kind,
                     const char *path,
                     const char *to,
                     char *trash,
                     ino_t ino,
                     mode_t mode)
{
    struct pf_dirop *op = calloc(1, sizeof *op);
    if (op == NULL) {
        free(trash);
        return -ENOMEM;
    }
    op->kind = kind;
    op->path = strdup(path);
    op->to = to != NULL ? strdup(to) : NULL;
    op->trash = trash;
    op->ino = ino;
    op->mode = mode;
    if (op->path == NULL || (to != NULL && op->to == NULL)) {
        free_dirop(op);
        return -ENOMEM;
    }
    if (j->dirops_tail != NULL) {
        j->dirops_tail->next = op;
    } else {
        j->dirops = op;
    }
    j->dirops_tail = op;
    return 0;
}

int pf_journal_created(struct pf_journal *j, const char *path, bool dir)
{
    struct stat st;
    if (fstatat(j->root_fd, rel(path), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return -errno;
    }
    return add_dirop(j, dir ? DIROP_MKDIR : DIROP_CREATE, path, NULL, NULL,
                     st.st_ino, st.st_mode & 07777);
}

/* Moves path into the trash: *trash gets its new name (free it). */
static int to_trash(struct pf_journal *j, const char *path, char **trash)
{
    char name[64];
    snprintf(name, sizeof name, PF_TRASH_DIR "/t%" PRIu64, ++j->n_trash);
    if (renameat(j->root_fd, rel(path), j->root_fd, name) != 0) {
        return -errno;
    }
    *trash = strdup(name);
    if (*trash == NULL) {
        renameat(j->root_fd, name, j->root_fd, rel(path));
        return -ENOMEM;
    }
    return 0;
}

int pf_journal_unlink(struct pf_journal *j, const char *path)
{
    struct stat st;
    if (fstatat(j->root_fd, rel(path), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return -errno;
    }
    if (S_ISDIR(st.st_mode)) {
        return -EISDIR;
    }
    char *trash;
    int rc = to_trash(j, path, &trash);
    if (rc != 0) {
        return rc;
    }
    return add_dirop(j, DIROP_UNLINK, path, NULL, trash, st.st_ino, 0);
}

int pf_journal_rmdir(struct pf_journal *j, const char *path)
{
    struct stat st;
    if (fstatat(j->root_fd, rel(path), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return -errno;
    }
    if (unlinkat(j->root_fd, rel(path), AT_REMOVEDIR) != 0) {
        return -errno;
    }
    return add_dirop(j, DIROP_RMDIR, path, NULL, NULL, st.st_ino,
                     st.st_mode & 07777);
}

int pf_journal_rename(struct pf_journal *j,
                      const char *from,
                      const char *to,
                      bool noreplace)
{
    struct stat st;
    char *trash = NULL;
    if (fstatat(j->root_fd, rel(to), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (noreplace) {
            return -EEXIST;
        }
        /* An overwritten file waits in the trash; an (empty) directory
         * replaced is not brought back. */
        if (!S_ISDIR(st.st_mode)) {
            int rc = to_trash(j, to, &trash);
            if (rc != 0) {
                return rc;
            }
        }
    }
    if (renameat(j->root_fd, rel(from), j->root_fd, rel(to)) != 0) {
        int err = errno;
        if (trash != NULL) {
            renameat(j->root_fd, trash, j->root_fd, rel(to));
            free(trash);
        }
        return -err;
    }
    return add_dirop(j, DIROP_RENAME, from, to, trash, 0, 0);
}

static bool dirop_in(const struct pf_dirop *op, const char *dir)
{
    char parent[PATH_MAX];
    parent_of(op->path, parent, sizeof parent);
    if (strcmp(parent, dir) == 0) {
        return true;
    }
    if (op->to == NULL) {
        return false;
    }
    parent_of(op->to, parent, sizeof parent);
    return strcmp(parent, dir) == 0;
}

int pf_journal_sync_dir(struct pf_journal *j, const char *path)
{
    j->n_syncs++;
    if (j->lie) {
        return 0;
    }
    struct pf_dirop **p = &j->dirops;
    j->dirops_tail = NULL;
    while (*p != NULL) {
        struct pf_dirop *op = *p;
        if (!dirop_in(op, path)) {
            j->dirops_tail = op;
            p = &op->next;
            continue;
        }
        if (op->trash != NULL) {
            unlinkat(j->root_fd, op->trash, 0);
        }
        *p = op->next;
        free_dirop(op);
    }
    return 0;
}

static void log_undo(struct pf_journal *j, const char *what, int rc)
{
    if (j->log == NULL) {
        return;
    }
    fprintf(j->log, "powerfs: power off: %s%s%s\n", what, rc != 0 ? ": " : "",
            rc != 0 ? strerror(-rc) : "");
}

/* Undoes c, keeping its first keep bytes (0: all of it undone). */
static int undo_change(struct pf_file *f, const struct pf_change *c, off_t keep)
{
    off_t from = c->off + keep; /* bytes from here on go back */
    off_t size = c->size_before;
    if (keep > 0 && c->off + c->len > c->size_before && from > size) {
        size = from;
    }
    if (ftruncate(f->fd, size) != 0) {
        return -errno;
    }
    off_t pre_end = c->off + (off_t)c->pre_bytes;
    if (from < pre_end) {
        size_t n = (size_t)(pre_end - from);
        ssize_t w = pwrite(f->fd, c->pre + (from - c->off), n, from);
        if (w < 0 || (size_t)w != n) {
            return w < 0 ? -errno : -EIO;
        }
    }
    return 0;
}

/* Where a write may tear: a page boundary strictly inside it (0: none). */
static off_t tear_point(struct pf_journal *j, const struct pf_change *c)
{
    if (c->kind != CHANGE_WRITE || c->len <= 0) {
        return 0;
    }
    off_t first = (c->off / PAGE_BYTES + 1) * PAGE_BYTES;
    off_t last = ((c->off + c->len - 1) / PAGE_BYTES) * PAGE_BYTES;
    if (first > last) {
        return 0;
    }
    uint64_t n_points = (uint64_t)((last - first) / PAGE_BYTES) + 1;
    return first + PAGE_BYTES * (off_t)(next_random(j) % n_points);
}

static uint64_t power_off_file(struct pf_journal *j, struct pf_file *f)
{
    size_t cut = 0; /* changes [0, cut) reached the disk */
    off_t tear = 0;
    if (j->rng != 0) {
        cut = (size_t)(next_random(j) % (f->n_changes + 1));
        if (cut < f->n_changes && next_random(j) % 2 == 0) {
            tear = tear_point(j, &f->changes[cut]);
        }
    }
    uint64_t dropped = 0;
    int rc = 0;
    for (size_t i = f->n_changes; i > cut && rc == 0; i--) {
        const struct pf_change *c = &f->changes[i - 1];
        rc = undo_change(f, c, i - 1 == cut && tear ? tear - c->off : 0);
        dropped++;
    }
    char name[PATH_MAX], what[PATH_MAX + 128];
    fd_name(f->fd, name, sizeof name);
    int len = snprintf(what, sizeof what,
                       "%s: kept %zu of %zu unsynced changes, dropped %" PRIu64,
                       name, cut, f->n_changes, dropped);
    if (tear && len > 0 && (size_t)len < sizeof what) {
        snprintf(what + len, sizeof what - (size_t)len,
                 " (the first dropped one torn: bytes before %jd kept)",
                 (intmax_t)tear);
    }
    log_undo(j, what, rc);
    return dropped;
}

static int undo_dirop(struct pf_journal *j, const struct pf_dirop *op)
{
    int root = j->root_fd;
    struct stat st;
    switch (op->kind) {
        case DIROP_CREATE:
            if (fstatat(root, rel(op->path), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
                st.st_ino != op->ino) {
                return 0; /* renamed away since: that rename was undone */
            }
            return unlinkat(root, rel(op->path), 0) == 0 ? 0 : -errno;
        case DIROP_MKDIR:
            return unlinkat(root, rel(op->path), AT_REMOVEDIR) == 0 ? 0
                                                                    : -errno;
        case DIROP_UNLINK:
            return renameat(root, op->trash, root, rel(op->path)) == 0 ? 0
                                                                       : -errno;
        case DIROP_RMDIR:
            return mkdirat(root, rel(op->path), op->mode) == 0 ? 0 : -errno;
        case DIROP_RENAME:
            if (renameat(root, rel(op->to), root, rel(op->path)) != 0) {
                return -errno;
            }
            if (op->trash != NULL &&
                renameat(root, op->trash, root, rel(op->to)) != 0) {
                return -errno;
            }
            return 0;
    }
    return -EINVAL;
}

static const char *dirop_name(enum dirop_kind kind)
{
    static const char *names[] = {"create", "mkdir", "unlink", "rmdir",
                                  "rename"};
    return names[kind];
}

static uint64_t power_off_dirs(struct pf_journal *j)
{
    size_t n = 0;
    for (struct pf_dirop *op = j->dirops; op != NULL; op = op->next) {
        n++;
    }
    if (n == 0) {
        return 0;
    }
    struct pf_dirop **ops = calloc(n, sizeof *ops);
    if (ops == NULL) {
        log_undo(j, "directory changes not undone", -ENOMEM);
        return 0;
    }
    size_t i = 0;
    for (struct pf_dirop *op = j->dirops; op != NULL; op = op->next) {
        ops[i++] = op;
    }
    size_t cut = j->rng != 0 ? (size_t)(next_random(j) % (n + 1)) : 0;
    for (i = n; i > cut; i--) {
        const struct pf_dirop *op = ops[i - 1];
        char what[2 * PATH_MAX + 64];
        snprintf(what, sizeof what, "undo %s %s%s%s", dirop_name(op->kind),
                 op->path, op->to ? " -> " : "", op->to ? op->to : "");
        log_undo(j, what, undo_dirop(j, op));
    }
    /* Kept changes: what they put in the trash is gone for good. */
    for (i = 0; i < cut; i++) {
        if (ops[i]->trash != NULL) {
            unlinkat(j->root_fd, ops[i]->trash, 0);
        }
    }
    free(ops);
    return n - cut;
}

uint64_t pf_journal_power_off(struct pf_journal *j)
{
    uint64_t dropped = 0;
    for (struct pf_file *f = j->files; f != NULL; f = f->next) {
        dropped += power_off_file(j, f);
    }
    dropped += power_off_dirs(j);
    j->n_dropped += dropped;
    pf_journal_free(j);
    return dropped;
}
