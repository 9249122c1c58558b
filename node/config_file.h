/* A qraftd config file (--config): one YAML mapping of setting names to
 * values, read with libyaml (the only module that includes <yaml.h>). It
 * knows YAML, not settings: it hands each key in file order to a callback
 * (config.c gives them their meaning) and refuses, naming the file and the
 * line, anything that is not a mapping of distinct scalar keys to scalars
 * or sequences of scalars. An empty file holds no settings. */
#ifndef QR_CONFIG_FILE_H
#define QR_CONFIG_FILE_H

#include <stdbool.h>

/* One key of the file. Strings are borrowed for the callback. */
struct qr_config_file_entry {
    const char *key;
    /* A scalar's text, or a sequence's items joined with commas. */
    const char *value;
    bool sequence; /* the value was a YAML sequence */
    bool plain;    /* a scalar written without quotes */
    unsigned line; /* where the key is, from 1 */
};

/* Returns 0, or an error with `reason` (QR_ERRMSG_BYTES) saying why the
 * value cannot be taken: it reaches the user as FILE:LINE: KEY: reason. */
typedef int (*qr_config_file_cb)(void *arg,
                                 const struct qr_config_file_entry *entry,
                                 char *reason);

/* Reads path (borrowed) and calls cb for each key, in file order, until
 * one fails. Returns 0, -errno when the file cannot be read, or QR_EBADREQ;
 * on error errmsg (QR_ERRMSG_BYTES) names the file, the line and the key. */
int qr_config_file_read(const char *path,
                        qr_config_file_cb cb,
                        void *arg,
                        char *errmsg);

#endif /* QR_CONFIG_FILE_H */
