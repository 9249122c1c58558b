/* qraftd: parses the command line and runs the node until a signal stops
 * it. Everything else lives in server.c. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "api/rest.h"
#include "api/scopes.h"
#include "config.h"
#include "deliver/delivery.h"
#include "lib/err.h"
#include "lib/logger.h"
#include "server.h"

/* A failure to start, once the log format is known: a JSON line where
 * every line must be one, the plain "qraftd: ..." otherwise. */
static void start_failed(const struct qr_config *config, const char *why)
{
    if (config->log_format == QR_LOG_JSON) {
        QR_ERROR("server", "%s", why);
    } else {
        fprintf(stderr, "qraftd: %s\n", why);
    }
}

int main(int argc, char **argv)
{
    static struct qr_config config;
    static struct qr_server server;
    enum qr_config_action action;
    char errmsg[QR_ERRMSG_BYTES];

    qr_config_defaults(&config);
    if (qr_config_parse(&config, argc, argv, stdout, &action, errmsg) != 0) {
        fprintf(stderr, "qraftd: %s\n", errmsg);
        return 2;
    }
    if (action == QR_CONFIG_EXIT_OK) {
        return 0;
    }
    if (action == QR_CONFIG_PRINT_SCOPES) {
        /* Non-zero when a route or kind has no row: a build to fix. */
        int missing =
            qr_rest_print_scopes(stdout) + qr_scopes_print_rpc(stdout);
        return missing == 0 ? 0 : 1;
    }
    qr_log_set_level(config.log_level);
    qr_log_set_format(config.log_format);
    qr_log_set_node(config.id);
    /* A peer that resets a connection while we write to it must cost that
     * connection, not the node: neither libuv nor h2o ignores SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    if (qr_delivery_global_init() != 0) {
        start_failed(&config, "libcurl failed to initialize");
        return 1;
    }

    if (qr_server_init(&server, &config, stdout) != 0) {
        start_failed(&config, server.errmsg);
        return 1;
    }
    int code = qr_server_run(&server);
    qr_server_close(&server);
    qr_delivery_global_cleanup();
    QR_INFO("server", "stopped");
    return code;
}
