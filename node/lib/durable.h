/* Making changes to a directory durable: a new file's or directory's entry
 * survives a power loss only once its directory is fsynced (the file's own
 * fsync covers its contents, not its name). */
#ifndef QR_DURABLE_H
#define QR_DURABLE_H

/* fsyncs the directory at path. Returns 0 or -errno. */
int qr_fsync_dir(const char *path);

/* fsyncs the directory holding path (its last component's parent: "." for
 * a bare name). Returns 0 or -errno. */
int qr_fsync_parent(const char *path);

#endif /* QR_DURABLE_H */
