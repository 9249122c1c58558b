/* What server.c and its two rooms share, and no one else includes:
 *   server.c       the data dir (lock, token, tombstone), tokens and TLS
 *                  (and their reload on SIGHUP), the HTTP face's hooks,
 *                  the server's handles, qr_server_init's unwind ladder
 *   server_tick.c  the tick's housekeeping: signing keys, the --dev
 *                  announcement, Prune (and retention under space pressure)
 *   server_stop.c  the stop sequence: drain, shard release, hand-off, then
 *                  the modules closed in reverse order of their opening
 * Everything runs on the server's loop thread. */
#ifndef QR_SERVER_INT_H
#define QR_SERVER_INT_H

#include <uv.h>

#include "server.h"

/* How often the tick runs (server_on_tick). */
#define TICK_MS 100

/* The tick (s->tick's callback, every TICK_MS until the stop starts). */
void server_on_tick(uv_timer_t *t);

/* The cluster's "this node became leader" hook (data: the server). */
void server_on_leader(void *data);

/* The close callback of the server's own handles: nothing to free. */
void server_on_handle_closed(uv_handle_t *h);

#endif /* QR_SERVER_INT_H */
