/* journal: what powerfs keeps between syncs, and the power off that drops
 * it (a test tool: tools/powerfs/powerfs.c, docs/chaos.md "powerloss").
 *
 * Writes go through to the backing directory at once; the journal keeps,
 * per file, the pre-image of every change (overwritten bytes, size before)
 * since that file's last fsync/fdatasync, and per directory every entry
 * change (create, mkdir, unlink, rmdir, rename) since that directory's last
 * fsync; an unlinked or overwritten entry waits in a hidden trash directory
 * until then. Invariants: undoing a file's records newest first gives the
 * file back as it was at its last sync; a record is dropped only by a sync
 * that covers it, and never when the journal lies (syncs are then no-ops:
 * the broken mode that proves the chaos checker catches lost fsyncs). */
#ifndef QRAFT_POWERFS_JOURNAL_H
#define QRAFT_POWERFS_JOURNAL_H

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* Hidden in the backing root: where unlinked and overwritten entries wait
 * for their directory's fsync. */
#define PF_TRASH_DIR ".powerfs-trash"

struct pf_file;
struct pf_dirop;

struct pf_journal {
    int root_fd;  /* the backing directory (borrowed) */
    uint64_t rng; /* power off's choices; 0: drop every unsynced change */
    bool lie;     /* syncs keep nothing (broken mode) */
    FILE *log;    /* one line per sync and per undone record (borrowed) */
    struct pf_file *files; /* files with unsynced changes, a list */
    struct pf_dirop *dirops, *dirops_tail; /* oldest first */
    uint64_t n_trash;                      /* names handed out in the trash */
    uint64_t n_syncs, n_dropped;
};

/* Starts an empty journal over root_fd (borrowed) and empties the trash.
 * seed 0: power off drops every unsynced change; otherwise each file keeps
 * a seeded prefix of its changes, the first dropped one possibly torn at a
 * page boundary. Returns 0 or -errno. */
int pf_journal_init(struct pf_journal *j,
                    int root_fd,
                    uint64_t seed,
                    bool lie,
                    FILE *log);
/* Frees every record (changes stay as they are on disk). */
void pf_journal_free(struct pf_journal *j);

/* Each before_* is called just before the change is made on fd, a backing
 * descriptor open for reading and writing (borrowed; dup'ed when the file
 * gets its first record). Returns 0 or -errno (then do not make the
 * change). */
int pf_journal_before_write(struct pf_journal *j,
                            int fd,
                            off_t off,
                            size_t len);
int pf_journal_before_truncate(struct pf_journal *j, int fd, off_t size);
int pf_journal_before_allocate(struct pf_journal *j,
                               int fd,
                               off_t off,
                               off_t len);
/* fsync/fdatasync of fd, or a write through an O_SYNC/O_DSYNC handle:
 * the file's records are kept for good. */
int pf_journal_sync_file(struct pf_journal *j, int fd);

/* Directory entries; paths relative to the backing root ("" for it).
 * created: path was just created (a file, or a directory when dir).
 * The others make the change themselves and return 0 or -errno. */
int pf_journal_created(struct pf_journal *j, const char *path, bool dir);
int pf_journal_unlink(struct pf_journal *j, const char *path);
int pf_journal_rmdir(struct pf_journal *j, const char *path);
int pf_journal_rename(struct pf_journal *j,
                      const char *from,
                      const char *to,
                      bool noreplace);
/* fsync of the directory path: its entry changes are kept for good. */
int pf_journal_sync_dir(struct pf_journal *j, const char *path);

/* Opens path (relative to root_fd, "" for it) for readdir: 0 and *out
 * (close it with closedir), or -errno. */
int pf_open_dir(int root_fd, const char *path, DIR **out);

/* Power off: undoes what no sync covered (per the seed), newest first, and
 * returns how many records it dropped or tore. Call it once no request is
 * being served; the journal is empty after it. */
uint64_t pf_journal_power_off(struct pf_journal *j);

#endif
