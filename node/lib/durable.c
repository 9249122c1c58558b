/* Directory fsyncs (durable.h). */
#include "lib/durable.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int qr_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rv = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rv;
}

int qr_fsync_parent(const char *path)
{
    char parent[PATH_MAX];
    int n = snprintf(parent, sizeof parent, "%s", path);
    if (n < 0 || (size_t)n >= sizeof parent) {
        return -ENAMETOOLONG;
    }
    /* Trailing slashes name the same entry: drop them, then the name. */
    while (n > 1 && parent[n - 1] == '/') {
        parent[--n] = '\0';
    }
    char *slash = strrchr(parent, '/');
    if (slash == NULL) {
        return qr_fsync_dir(".");
    }
    if (slash == parent) {
        return qr_fsync_dir("/");
    }
    *slash = '\0';
    return qr_fsync_dir(parent);
}
