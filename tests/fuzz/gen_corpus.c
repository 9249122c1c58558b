/* Writes the seed corpora of the fuzz targets into <dir>/<target>/: real
 * RPC frames, real command sequences, a real snapshot, and the expressions,
 * cron lines, filters and REST bodies the docs and tests use. Run by hand
 * (tests/fuzz/run.sh --regen); the output is committed under
 * tests/fuzz/corpus/.
 *
 * With a second argument, also writes there the minimal inputs of the
 * findings of issue 10 that fuzz_apply reproduces on a fresh store
 * (tests/fuzz/crashes-found/fuzz_apply-known-*), each with a .txt saying
 * what it shows. */
#include <errno.h>
#include <raft.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "frame.h"
#include "lib/err.h"
#include "qraft.pb-c.h"
#include "repl/command.h"
#include "repl/fsm.h"
#include "store/store.h"

#define NOW_MS 1767225600000ull

static const char *out_dir;
static struct qr_limits limits;

static void die(const char *what)
{
    fprintf(stderr, "gen_corpus: %s\n", what);
    exit(1);
}

static void write_file(const char *target,
                       const char *name,
                       const void *data,
                       size_t len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", out_dir, target);
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        die(path);
    }
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
        die(path);
    }
}

static void write_text(const char *target, const char *name, const char *s)
{
    write_file(target, name, s, strlen(s));
}

/* fuzz_json_bodies: a mode byte, then the text. */
static void write_rest(const char *name, uint8_t mode, const char *s)
{
    size_t len = strlen(s);
    char *b = malloc(len + 1);
    if (b == NULL) {
        die("out of memory");
    }
    b[0] = (char)mode;
    memcpy(b + 1, s, len);
    write_file("fuzz_json_bodies", name, b, len + 1);
    free(b);
}

/* A growable byte buffer. */
struct buf {
    uint8_t *data;
    size_t len;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
    b->data = realloc(b->data, b->len + n + 1);
    if (b->data == NULL) {
        die("out of memory");
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

/* ---- fuzz_frame: framed Requests. */

static void add_frame(struct buf *b, const Qraft__Request *req)
{
    size_t len = qraft__request__get_packed_size(req);
    uint8_t *p = malloc(len + QR_FRAME_HEADER_BYTES);
    qr_frame_put_header(p, (uint32_t)len);
    qraft__request__pack(req, p + QR_FRAME_HEADER_BYTES);
    buf_add(b, p, len + QR_FRAME_HEADER_BYTES);
    free(p);
}

static void frame_seed(const char *name, const Qraft__Request *req)
{
    struct buf b = {0};
    add_frame(&b, req);
    write_file("fuzz_frame", name, b.data, b.len);
    free(b.data);
}

static void gen_frames(void)
{
    Qraft__Header h1 = QRAFT__HEADER__INIT;
    h1.name = "Content-Type";
    h1.value = "application/json";
    Qraft__Header *hs[] = {&h1};
    Qraft__PublishRequest pub = QRAFT__PUBLISH_REQUEST__INIT;
    pub.url = "https://example.com/hook";
    pub.method = "POST";
    pub.headers = hs;
    pub.n_headers = 1;
    pub.body.data = (uint8_t *)"{\"hello\":\"world\"}";
    pub.body.len = 17;
    pub.retries = 3;
    pub.retries_set = true;
    pub.retry_delay = "10000 * pow(2, retried)";
    pub.dedup_id = "order-42";
    pub.callback = "https://example.com/cb";
    char *labels[] = {"billing", "eu"};
    pub.labels = labels;
    pub.n_labels = 2;
    pub.flow_control_key = "tenant-1";
    pub.flow_parallelism = 2;
    pub.delay_ms = 5000;
    Qraft__Request req = QRAFT__REQUEST__INIT;
    req.id = 1;
    req.token = "secret";
    req.body_case = QRAFT__REQUEST__BODY_PUBLISH;
    req.publish = &pub;
    frame_seed("publish", &req);

    Qraft__PublishRequest plain = QRAFT__PUBLISH_REQUEST__INIT;
    plain.url = "http://127.0.0.1:9/x";
    plain.queue = "emails";
    req.publish = &plain;
    frame_seed("publish_queue", &req);

    Qraft__CancelRequest cancel = QRAFT__CANCEL_REQUEST__INIT;
    cancel.message_id = "msg_019b7a8f1c0000010000002a";
    Qraft__Request rc = QRAFT__REQUEST__INIT;
    rc.id = 2;
    rc.body_case = QRAFT__REQUEST__BODY_CANCEL;
    rc.cancel = &cancel;
    frame_seed("cancel", &rc);

    char *ids[] = {"msg_019b7a8f1c0000010000002a", "msg_x"};
    Qraft__DlqDeleteRequest dd = QRAFT__DLQ_DELETE_REQUEST__INIT;
    dd.message_ids = ids;
    dd.n_message_ids = 2;
    Qraft__Request rd = QRAFT__REQUEST__INIT;
    rd.id = 3;
    rd.body_case = QRAFT__REQUEST__BODY_DLQ_DELETE;
    rd.dlq_delete = &dd;
    frame_seed("dlq_delete", &rd);

    Qraft__MessageFilter filter = QRAFT__MESSAGE_FILTER__INIT;
    char *urls[] = {"https://example.com/hook"};
    filter.urls = urls;
    filter.n_urls = 1;
    filter.from_ms = NOW_MS - 3600000;
    Qraft__DlqReplayRequest dr = QRAFT__DLQ_REPLAY_REQUEST__INIT;
    dr.filter = &filter;
    dr.limit = 10;
    Qraft__Request rr = QRAFT__REQUEST__INIT;
    rr.id = 4;
    rr.body_case = QRAFT__REQUEST__BODY_DLQ_REPLAY;
    rr.dlq_replay = &dr;
    frame_seed("dlq_replay_filter", &rr);

    Qraft__EventsRequest ev = QRAFT__EVENTS_REQUEST__INIT;
    ev.filter = &filter;
    ev.limit = 100;
    Qraft__Request re = QRAFT__REQUEST__INIT;
    re.id = 5;
    re.body_case = QRAFT__REQUEST__BODY_EVENTS;
    re.events = &ev;
    frame_seed("events", &re);

    Qraft__QueueUpsertRequest qu = QRAFT__QUEUE_UPSERT_REQUEST__INIT;
    qu.name = "emails";
    qu.parallelism = 4;
    Qraft__Request rq = QRAFT__REQUEST__INIT;
    rq.id = 6;
    rq.body_case = QRAFT__REQUEST__BODY_QUEUE_UPSERT;
    rq.queue_upsert = &qu;
    frame_seed("queue_upsert", &rq);

    Qraft__ScheduleUpsertRequest su = QRAFT__SCHEDULE_UPSERT_REQUEST__INIT;
    su.schedule_id = "nightly";
    su.cron = "CRON_TZ=Europe/Berlin 0 9 * * 1-5";
    su.request = &plain;
    Qraft__Request rs = QRAFT__REQUEST__INIT;
    rs.id = 7;
    rs.body_case = QRAFT__REQUEST__BODY_SCHEDULE_UPSERT;
    rs.schedule_upsert = &su;
    frame_seed("schedule_upsert", &rs);

    Qraft__UrlGroupEndpoint e1 = QRAFT__URL_GROUP_ENDPOINT__INIT;
    e1.name = "a";
    e1.url = "https://a.example.com/";
    Qraft__UrlGroupEndpoint e2 = QRAFT__URL_GROUP_ENDPOINT__INIT;
    e2.url = "https://b.example.com/";
    Qraft__UrlGroupEndpoint *eps[] = {&e1, &e2};
    Qraft__GroupChangeRequest gc = QRAFT__GROUP_CHANGE_REQUEST__INIT;
    gc.kind = QRAFT__GROUP_CHANGE_KIND__GROUP_ADD_ENDPOINTS;
    gc.name = "team";
    gc.endpoints = eps;
    gc.n_endpoints = 2;
    Qraft__Request rg = QRAFT__REQUEST__INIT;
    rg.id = 8;
    rg.body_case = QRAFT__REQUEST__BODY_GROUP_CHANGE;
    rg.group_change = &gc;
    frame_seed("group_add", &rg);

    /* Finding 2 of issue 10: a results request with an empty message id. */
    Qraft__DeliveryResult res = QRAFT__DELIVERY_RESULT__INIT;
    res.message_id = "";
    res.attempt = 0;
    res.outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED;
    Qraft__DeliveryResult *rs_[] = {&res};
    Qraft__ResultsRequest results = QRAFT__RESULTS_REQUEST__INIT;
    results.results = rs_;
    results.n_results = 1;
    Qraft__Request rres = QRAFT__REQUEST__INIT;
    rres.id = 9;
    rres.body_case = QRAFT__REQUEST__BODY_RESULTS;
    rres.results = &results;
    frame_seed("results_empty_id", &rres);

    /* Several pipelined frames in one read. */
    struct buf b = {0};
    add_frame(&b, &req);
    add_frame(&b, &rc);
    add_frame(&b, &rd);
    write_file("fuzz_frame", "pipelined", b.data, b.len);
    free(b.data);
}

/* ---- fuzz_apply: records of packed commands. */

static void add_record(struct buf *b, const Qraft__Command *cmd)
{
    struct qr_packed p;
    if (qr_command_pack(cmd, &p) != 0) {
        die("pack");
    }
    uint8_t len[2] = {(uint8_t)(p.len >> 8), (uint8_t)p.len};
    buf_add(b, len, 2);
    buf_add(b, p.data, p.len);
    free(p.data);
}

static void add_publish_record(struct buf *b,
                               const Qraft__PublishRequest *pr,
                               const char *id)
{
    struct qr_packed p;
    if (qr_command_pack_publish(pr, id, &limits, &p) != 0) {
        die("pack publish");
    }
    uint8_t len[2] = {(uint8_t)(p.len >> 8), (uint8_t)p.len};
    buf_add(b, len, 2);
    buf_add(b, p.data, p.len);
    free(p.data);
}

/* Ends the entry; the clock moves on by step * 10 s. */
static void end_entry(struct buf *b, uint8_t step)
{
    uint8_t rec[3] = {0, 0, step};
    buf_add(b, rec, 3);
}

static void gen_apply(void)
{
    char id1[QR_ID_BYTES];
    char id2[QR_ID_BYTES];
    qr_command_message_id(id1, NOW_MS, 1, 1);
    qr_command_message_id(id2, NOW_MS, 1, 2);

    Qraft__SetFeatureLevel fl = QRAFT__SET_FEATURE_LEVEL__INIT;
    fl.level = QR_FEATURE_LEVEL;
    Qraft__Command c_fl = QRAFT__COMMAND__INIT;
    c_fl.body_case = QRAFT__COMMAND__BODY_SET_FEATURE_LEVEL;
    c_fl.set_feature_level = &fl;

    Qraft__PublishRequest pr = QRAFT__PUBLISH_REQUEST__INIT;
    pr.url = "https://example.com/hook";
    pr.body.data = (uint8_t *)"hi";
    pr.body.len = 2;
    pr.retry_delay = "10000 * pow(2, retried)";
    pr.dedup_id = "d1";
    pr.callback = "https://example.com/cb";
    pr.failure_callback = "https://example.com/fail";

    Qraft__Cancel cancel = QRAFT__CANCEL__INIT;
    cancel.message_id = id1;
    Qraft__Command c_cancel = QRAFT__COMMAND__INIT;
    c_cancel.body_case = QRAFT__COMMAND__BODY_CANCEL;
    c_cancel.cancel = &cancel;

    struct buf b = {0};
    add_record(&b, &c_fl);
    end_entry(&b, 1);
    add_publish_record(&b, &pr, id1);
    end_entry(&b, 1);
    add_record(&b, &c_cancel);
    write_file("fuzz_apply", "publish_cancel", b.data, b.len);
    free(b.data);

    /* Publish, a retry, then dead: DLQ replay, then DLQ delete. */
    Qraft__LastError le = QRAFT__LAST_ERROR__INIT;
    le.category = "server_error";
    le.status = 503;
    le.message = "HTTP 503";
    Qraft__DeliveryResult retry = QRAFT__DELIVERY_RESULT__INIT;
    retry.message_id = id1;
    retry.attempt = 0;
    retry.outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_RETRY;
    retry.retry_delay_ms = 10000;
    retry.error = &le;
    retry.node_id = 1;
    Qraft__DeliveryResult dead = retry;
    dead.attempt = 1;
    dead.outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DEAD;
    dead.hint = "the destination failed: fix it, then replay";
    /* After a replay: attempts start again at 0 in generation 1. */
    Qraft__DeliveryResult dead2 = dead;
    dead2.attempt = 0;
    dead2.generation = 1;
    Qraft__DeliveryResult *one[] = {&retry};
    Qraft__DeliveryResult *two[] = {&dead};
    Qraft__DeliveryResult *three[] = {&dead2};
    Qraft__DeliveryResults drs1 = QRAFT__DELIVERY_RESULTS__INIT;
    drs1.results = one;
    drs1.n_results = 1;
    drs1.default_retries = 3;
    Qraft__DeliveryResults drs2 = drs1;
    drs2.results = two;
    Qraft__Command c_r1 = QRAFT__COMMAND__INIT;
    c_r1.body_case = QRAFT__COMMAND__BODY_DELIVERY_RESULTS;
    c_r1.delivery_results = &drs1;
    Qraft__Command c_r2 = c_r1;
    c_r2.delivery_results = &drs2;
    Qraft__DeliveryResults drs4 = drs1;
    drs4.results = three;
    Qraft__Command c_r3 = c_r1;
    c_r3.delivery_results = &drs4;
    Qraft__DlqReplay replay = QRAFT__DLQ_REPLAY__INIT;
    replay.message_id = id1;
    Qraft__Command c_replay = QRAFT__COMMAND__INIT;
    c_replay.body_case = QRAFT__COMMAND__BODY_DLQ_REPLAY;
    c_replay.dlq_replay = &replay;
    Qraft__DlqDelete ddel = QRAFT__DLQ_DELETE__INIT;
    ddel.message_id = id1;
    Qraft__Command c_ddel = QRAFT__COMMAND__INIT;
    c_ddel.body_case = QRAFT__COMMAND__BODY_DLQ_DELETE;
    c_ddel.dlq_delete = &ddel;

    memset(&b, 0, sizeof b);
    add_publish_record(&b, &pr, id1);
    end_entry(&b, 1);
    add_record(&b, &c_r1);
    end_entry(&b, 2);
    add_record(&b, &c_r2);
    end_entry(&b, 1);
    add_record(&b, &c_replay);
    end_entry(&b, 1);
    add_record(&b, &c_r3);
    end_entry(&b, 1);
    add_record(&b, &c_ddel);
    write_file("fuzz_apply", "results_dlq", b.data, b.len);
    free(b.data);

    /* Delivered, then pruned. */
    Qraft__DeliveryResult ok = QRAFT__DELIVERY_RESULT__INIT;
    ok.message_id = id2;
    ok.outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED;
    ok.node_id = 1;
    Qraft__DeliveryResult *oks[] = {&ok};
    Qraft__DeliveryResults drs3 = QRAFT__DELIVERY_RESULTS__INIT;
    drs3.results = oks;
    drs3.n_results = 1;
    Qraft__Command c_ok = QRAFT__COMMAND__INIT;
    c_ok.body_case = QRAFT__COMMAND__BODY_DELIVERY_RESULTS;
    c_ok.delivery_results = &drs3;
    Qraft__Prune prune = QRAFT__PRUNE__INIT;
    prune.dlq_retention_ms = 1000;
    prune.events_retention_ms = 1000;
    prune.done_retention_ms = 1000;
    prune.max_items = 100;
    Qraft__Command c_prune = QRAFT__COMMAND__INIT;
    c_prune.body_case = QRAFT__COMMAND__BODY_PRUNE;
    c_prune.prune = &prune;
    Qraft__PublishRequest pr2 = QRAFT__PUBLISH_REQUEST__INIT;
    pr2.url = "http://127.0.0.1:9/x";
    memset(&b, 0, sizeof b);
    add_publish_record(&b, &pr2, id2);
    end_entry(&b, 1);
    add_record(&b, &c_ok);
    end_entry(&b, 255);
    add_record(&b, &c_prune);
    write_file("fuzz_apply", "delivered_prune", b.data, b.len);
    free(b.data);

    /* Queues. */
    Qraft__QueueUpsert qu = QRAFT__QUEUE_UPSERT__INIT;
    qu.name = "emails";
    qu.parallelism = 1;
    qu.max_queues = 100;
    qu.max_parallelism = 100;
    Qraft__Command c_qu = QRAFT__COMMAND__INIT;
    c_qu.body_case = QRAFT__COMMAND__BODY_QUEUE_UPSERT;
    c_qu.queue_upsert = &qu;
    Qraft__QueuePause qp = QRAFT__QUEUE_PAUSE__INIT;
    qp.name = "emails";
    qp.paused = true;
    Qraft__Command c_qp = QRAFT__COMMAND__INIT;
    c_qp.body_case = QRAFT__COMMAND__BODY_QUEUE_PAUSE;
    c_qp.queue_pause = &qp;
    Qraft__QueueDelete qd = QRAFT__QUEUE_DELETE__INIT;
    qd.name = "emails";
    Qraft__Command c_qd = QRAFT__COMMAND__INIT;
    c_qd.body_case = QRAFT__COMMAND__BODY_QUEUE_DELETE;
    c_qd.queue_delete = &qd;
    Qraft__PublishRequest pq = QRAFT__PUBLISH_REQUEST__INIT;
    pq.url = "http://127.0.0.1:9/q";
    pq.queue = "emails";
    memset(&b, 0, sizeof b);
    add_record(&b, &c_fl);
    add_record(&b, &c_qu);
    end_entry(&b, 1);
    add_publish_record(&b, &pq, id1);
    add_publish_record(&b, &pq, id2);
    end_entry(&b, 1);
    add_record(&b, &c_qp);
    end_entry(&b, 1);
    add_record(&b, &c_qd);
    write_file("fuzz_apply", "queues", b.data, b.len);
    free(b.data);

    /* A workflow run: trigger, a repeated trigger, a step, its end (a
     * cancel), then a step into the ended run. */
    Qraft__WorkflowPublish wf = QRAFT__WORKFLOW_PUBLISH__INIT;
    wf.run_id = "wfr_seed";
    wf.init = true;
    wf.url = "http://127.0.0.1:9/wf";
    Qraft__PublishRequest pw = QRAFT__PUBLISH_REQUEST__INIT;
    pw.url = "http://127.0.0.1:9/wf";
    pw.body.data = (uint8_t *)"initial";
    pw.body.len = 7;
    pw.workflow = &wf;
    Qraft__WorkflowEnd we = QRAFT__WORKFLOW_END__INIT;
    we.run_id = "wfr_seed";
    we.cancel = true;
    Qraft__Command c_we = QRAFT__COMMAND__INIT;
    c_we.body_case = QRAFT__COMMAND__BODY_WORKFLOW_END;
    c_we.workflow_end = &we;
    char id3[QR_ID_BYTES];
    qr_command_message_id(id3, NOW_MS, 1, 3);
    memset(&b, 0, sizeof b);
    add_record(&b, &c_fl);
    end_entry(&b, 1);
    add_publish_record(&b, &pw, id1);
    add_publish_record(&b, &pw, id2);
    end_entry(&b, 1);
    wf.init = false;
    add_publish_record(&b, &pw, id3);
    end_entry(&b, 1);
    add_record(&b, &c_we);
    end_entry(&b, 1);
    add_publish_record(&b, &pw, id2);
    write_file("fuzz_apply", "workflow", b.data, b.len);
    free(b.data);

    /* A run waits for two events: one notified, one timed out. */
    Qraft__Waiter wa = QRAFT__WAITER__INIT;
    wa.event_id = "ev1";
    wa.run_id = "wfr_seed";
    wa.url = "http://127.0.0.1:9/wf";
    wa.timeout_url = "http://127.0.0.1:9/wf";
    wa.step.data = (uint8_t *)"{\"stepId\":1,\"stepType\":\"Wait\"}";
    wa.step.len = strlen((const char *)wa.step.data);
    Qraft__WaitCreate wc = QRAFT__WAIT_CREATE__INIT;
    wc.waiter = &wa;
    wc.timeout_ms = 5000;
    Qraft__Command c_wc = QRAFT__COMMAND__INIT;
    c_wc.body_case = QRAFT__COMMAND__BODY_WAIT_CREATE;
    c_wc.wait_create = &wc;
    Qraft__NotifyTarget nt = QRAFT__NOTIFY_TARGET__INIT;
    nt.run_id = "wfr_seed";
    nt.message_id = id2;
    Qraft__NotifyTarget *ntp[1] = {&nt};
    Qraft__Notify no = QRAFT__NOTIFY__INIT;
    no.event_id = "ev1";
    no.n_targets = 1;
    no.targets = ntp;
    no.data.data = (uint8_t *)"data";
    no.data.len = 4;
    Qraft__Command c_no = QRAFT__COMMAND__INIT;
    c_no.body_case = QRAFT__COMMAND__BODY_NOTIFY;
    c_no.notify = &no;
    Qraft__WaitTimeout wt = QRAFT__WAIT_TIMEOUT__INIT;
    wt.event_id = "ev2";
    wt.run_id = "wfr_seed";
    wt.deadline_ms = NOW_MS + 10000 + 5000;
    wt.message_id = id3;
    Qraft__Command c_wt = QRAFT__COMMAND__INIT;
    c_wt.body_case = QRAFT__COMMAND__BODY_WAIT_TIMEOUT;
    c_wt.wait_timeout = &wt;
    wf.init = true;
    memset(&b, 0, sizeof b);
    add_record(&b, &c_fl);
    end_entry(&b, 1);
    add_publish_record(&b, &pw, id1);
    end_entry(&b, 1);
    add_record(&b, &c_wc);
    wa.event_id = "ev2";
    add_record(&b, &c_wc);
    end_entry(&b, 1);
    add_record(&b, &c_no);
    end_entry(&b, 1);
    add_record(&b, &c_wt);
    write_file("fuzz_apply", "workflow_waits", b.data, b.len);
    free(b.data);

    /* Schedules. */
    Qraft__Schedule sc = QRAFT__SCHEDULE__INIT;
    sc.id = "nightly";
    sc.cron = "0 9 * * 1-5";
    sc.request = &pr2;
    sc.created_ms = NOW_MS;
    sc.next_slot_ms = NOW_MS + 60000;
    Qraft__ScheduleUpsert su = QRAFT__SCHEDULE_UPSERT__INIT;
    su.schedule = &sc;
    Qraft__Command c_su = QRAFT__COMMAND__INIT;
    c_su.body_case = QRAFT__COMMAND__BODY_SCHEDULE_UPSERT;
    c_su.schedule_upsert = &su;
    Qraft__ScheduleFire sf = QRAFT__SCHEDULE_FIRE__INIT;
    sf.schedule_id = "nightly";
    sf.slot_ms = NOW_MS + 60000;
    sf.next_slot_ms = NOW_MS + 120000;
    sf.default_retries = 3;
    Qraft__Command c_sf = QRAFT__COMMAND__INIT;
    c_sf.body_case = QRAFT__COMMAND__BODY_SCHEDULE_FIRE;
    c_sf.schedule_fire = &sf;
    Qraft__SchedulePause sp = QRAFT__SCHEDULE_PAUSE__INIT;
    sp.schedule_id = "nightly";
    sp.paused = true;
    Qraft__Command c_sp = QRAFT__COMMAND__INIT;
    c_sp.body_case = QRAFT__COMMAND__BODY_SCHEDULE_PAUSE;
    c_sp.schedule_pause = &sp;
    Qraft__ScheduleDelete sd = QRAFT__SCHEDULE_DELETE__INIT;
    sd.schedule_id = "nightly";
    Qraft__Command c_sd = QRAFT__COMMAND__INIT;
    c_sd.body_case = QRAFT__COMMAND__BODY_SCHEDULE_DELETE;
    c_sd.schedule_delete = &sd;
    memset(&b, 0, sizeof b);
    add_record(&b, &c_fl);
    add_record(&b, &c_su);
    end_entry(&b, 6);
    add_record(&b, &c_sf);
    end_entry(&b, 1);
    add_record(&b, &c_sp);
    end_entry(&b, 1);
    add_record(&b, &c_sd);
    write_file("fuzz_apply", "schedules", b.data, b.len);
    free(b.data);

    /* URL groups, keys, node info, shards. */
    Qraft__UrlGroupEndpoint e1 = QRAFT__URL_GROUP_ENDPOINT__INIT;
    e1.name = "a";
    e1.url = "https://a.example.com/";
    Qraft__UrlGroupEndpoint *eps[] = {&e1};
    Qraft__GroupAddEndpoints ga = QRAFT__GROUP_ADD_ENDPOINTS__INIT;
    ga.group = "team";
    ga.endpoints = eps;
    ga.n_endpoints = 1;
    ga.max_endpoints = 100;
    Qraft__Command c_ga = QRAFT__COMMAND__INIT;
    c_ga.body_case = QRAFT__COMMAND__BODY_GROUP_ADD_ENDPOINTS;
    c_ga.group_add_endpoints = &ga;
    Qraft__GroupRemoveEndpoints gr = QRAFT__GROUP_REMOVE_ENDPOINTS__INIT;
    gr.group = "team";
    gr.endpoints = eps;
    gr.n_endpoints = 1;
    Qraft__Command c_gr = QRAFT__COMMAND__INIT;
    c_gr.body_case = QRAFT__COMMAND__BODY_GROUP_REMOVE_ENDPOINTS;
    c_gr.group_remove_endpoints = &gr;
    Qraft__GroupDelete gd = QRAFT__GROUP_DELETE__INIT;
    gd.group = "team";
    Qraft__Command c_gd = QRAFT__COMMAND__INIT;
    c_gd.body_case = QRAFT__COMMAND__BODY_GROUP_DELETE;
    c_gd.group_delete = &gd;
    Qraft__SigningKeys keys = QRAFT__SIGNING_KEYS__INIT;
    keys.current = "sig_current";
    keys.next = "sig_next";
    Qraft__SetSigningKeys sk = QRAFT__SET_SIGNING_KEYS__INIT;
    sk.keys = &keys;
    Qraft__Command c_sk = QRAFT__COMMAND__INIT;
    c_sk.body_case = QRAFT__COMMAND__BODY_SET_SIGNING_KEYS;
    c_sk.set_signing_keys = &sk;
    Qraft__NodeInfo ni = QRAFT__NODE_INFO__INIT;
    ni.id = 1;
    ni.rpc = "127.0.0.1:7001";
    ni.http = "127.0.0.1:8080";
    ni.version = "0.1.0";
    ni.feature_level = 2;
    Qraft__SetNodeInfo sni = QRAFT__SET_NODE_INFO__INIT;
    sni.info = &ni;
    Qraft__Command c_ni = QRAFT__COMMAND__INIT;
    c_ni.body_case = QRAFT__COMMAND__BODY_SET_NODE_INFO;
    c_ni.set_node_info = &sni;
    uint64_t owners[QR_FSM_N_SHARDS];
    for (size_t i = 0; i < QR_FSM_N_SHARDS; i++) {
        owners[i] = 1 + i % 3;
    }
    Qraft__AssignShards as = QRAFT__ASSIGN_SHARDS__INIT;
    as.epoch = 1;
    as.owners = owners;
    as.n_owners = QR_FSM_N_SHARDS;
    Qraft__Command c_as = QRAFT__COMMAND__INIT;
    c_as.body_case = QRAFT__COMMAND__BODY_ASSIGN_SHARDS;
    c_as.assign_shards = &as;
    memset(&b, 0, sizeof b);
    add_record(&b, &c_sk);
    add_record(&b, &c_ni);
    add_record(&b, &c_as);
    add_record(&b, &c_fl);
    end_entry(&b, 1);
    add_record(&b, &c_ga);
    end_entry(&b, 1);
    add_record(&b, &c_gr);
    end_entry(&b, 1);
    add_record(&b, &c_ga);
    add_record(&b, &c_gd);
    write_file("fuzz_apply", "groups_keys_shards", b.data, b.len);
    free(b.data);

    /* Flow control: a flow-controlled publish, pause, pin, a result,
     * unpin, reset. */
    Qraft__PublishRequest fpr = QRAFT__PUBLISH_REQUEST__INIT;
    fpr.url = "https://example.com/ai";
    fpr.flow_control_key = "openai";
    fpr.flow_parallelism = 2;
    fpr.flow_rate = 5;
    fpr.flow_period_s = 60;
    Qraft__FlowControlUpdate fu = QRAFT__FLOW_CONTROL_UPDATE__INIT;
    fu.key = "openai";
    Qraft__Command c_fu = QRAFT__COMMAND__INIT;
    c_fu.body_case = QRAFT__COMMAND__BODY_FLOW_CONTROL_UPDATE;
    c_fu.flow_control_update = &fu;
    memset(&b, 0, sizeof b);
    add_record(&b, &c_fl);
    add_publish_record(&b, &fpr, id1);
    end_entry(&b, 1);
    fu.action = QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_PAUSE;
    add_record(&b, &c_fu);
    end_entry(&b, 1);
    fu.action = QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_PIN;
    fu.parallelism = 1;
    fu.rate = 10;
    fu.period_s = 120;
    add_record(&b, &c_fu);
    add_publish_record(&b, &fpr, id2);
    end_entry(&b, 1);
    fu.action = QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_UNPIN;
    fu.unpin_parallelism = true;
    add_record(&b, &c_fu);
    fu.action = QRAFT__FLOW_CONTROL_ACTION__FLOW_CONTROL_RESET_RATE;
    add_record(&b, &c_fu);
    write_file("fuzz_apply", "flow_control", b.data, b.len);
    free(b.data);
}

/* ---- fuzz_snapshot_restore: a real snapshot. */

static void gen_snapshot(void)
{
    char dir[] = "/tmp/qraft-gen-corpus-XXXXXX";
    char errmsg[QR_ERRMSG_BYTES];
    struct qr_store *s;
    struct qr_fsm f;
    struct raft r;
    if (mkdtemp(dir) == NULL) {
        die("mkdtemp");
    }
    if (qr_store_open(dir, 64ull << 20, &s, errmsg) != 0) {
        die(errmsg);
    }
    void *snap;
    size_t len;
    if (qr_store_snapshot(s, &snap, &len) != 0) {
        die("snapshot");
    }
    write_file("fuzz_snapshot_restore", "empty", snap, len);
    free(snap);
    if (qr_fsm_init(&f, s) != 0) {
        die("fsm");
    }
    memset(&r, 0, sizeof r);
    f.raft = &r;
    for (uint32_t i = 0; i < 3; i++) {
        char id[QR_ID_BYTES];
        qr_command_message_id(id, NOW_MS, 1, i + 1);
        Qraft__PublishRequest pr = QRAFT__PUBLISH_REQUEST__INIT;
        pr.url = "https://example.com/hook";
        pr.body.data = (uint8_t *)"hi";
        pr.body.len = 2;
        struct qr_packed p;
        if (qr_command_pack_publish(&pr, id, &limits, &p) != 0) {
            die("pack");
        }
        size_t size = qr_command_entry_size(NOW_MS + i, &p, 1);
        struct raft_buffer buf = {.base = raft_malloc(size), .len = size};
        qr_command_entry_write(NOW_MS + i, &p, 1, buf.base, size);
        free(p.data);
        void *result;
        r.last_applied = f.applied_index;
        if (f.raft_fsm.apply(&f.raft_fsm, &buf, &result) != 0) {
            die("apply");
        }
        raft_free(buf.base);
    }
    if (qr_store_snapshot(s, &snap, &len) != 0) {
        die("snapshot");
    }
    write_file("fuzz_snapshot_restore", "three_messages", snap, len);
    free(snap);
    qr_fsm_close(&f);
    qr_store_close(s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) {
        die(cmd);
    }
}

/* ---- Text surfaces. */

static void gen_text(void)
{
    static const char *const exprs[] = {
        "10000 * pow(2, retried)",
        "1000",
        "min(86400000, 1000 * exp(retried))",
        "max(1000, floor(retried * 1500.5))",
        "sqrt(retried) * 2e3 + abs(-5)",
        "round(ceil(1.5) / (retried + 1))",
        "-(-retried) * .5e+1",
        "((((retried))))",
    };
    static const char *const crons[] = {
        "CRON_TZ=Europe/Berlin 0 9 * * 1-5",
        "*/5 * * * *",
        "0 0 1 JAN,jul ?",
        "30 2 * * SUN",
        "CRON_TZ=America/New_York 30 1 * * *",
        "0 0 30 2 *",
        "0-59/7 1,2,3 1-31/2 */3 0-7",
        "  15 10 ? * MON-FRI  ",
    };
    char name[32];
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
        snprintf(name, sizeof name, "expr%zu", i);
        write_text("fuzz_retry_expr", name, exprs[i]);
    }
    write_text("fuzz_retry_expr", "retry_after_date",
               "Sun, 06 Nov 1994 08:49:37 GMT");
    write_text("fuzz_retry_expr", "retry_after_go", "6m5s");
    write_text("fuzz_retry_expr", "header_line", "Retry-After: 120\r\n");
    for (size_t i = 0; i < sizeof crons / sizeof crons[0]; i++) {
        snprintf(name, sizeof name, "cron%zu", i);
        write_text("fuzz_cron", name, crons[i]);
    }

    /* fuzz_filter: [2-byte filter length][filter][message or event]. */
    Qraft__MessageFilter filter = QRAFT__MESSAGE_FILTER__INIT;
    char *urls[] = {"https://example.com/hook"};
    char *labels[] = {"billing"};
    int32_t statuses[] = {500};
    filter.urls = urls;
    filter.n_urls = 1;
    filter.labels = labels;
    filter.n_labels = 1;
    filter.response_statuses = statuses;
    filter.n_response_statuses = 1;
    filter.from_ms = NOW_MS - 1000;
    Qraft__Message m = QRAFT__MESSAGE__INIT;
    m.id = "msg_1";
    m.url = "https://example.com/hook";
    m.labels = labels;
    m.n_labels = 1;
    m.created_ms = NOW_MS;
    m.dead_lettered_ms = NOW_MS + 5000;
    m.state = QRAFT__MESSAGE_STATE__DEAD_LETTERED;
    struct buf b = {0};
    size_t flen = qraft__message_filter__get_packed_size(&filter);
    uint8_t hdr[2] = {(uint8_t)(flen >> 8), (uint8_t)flen};
    buf_add(&b, hdr, 2);
    uint8_t *tmp = malloc(flen + qraft__message__get_packed_size(&m) + 1);
    qraft__message_filter__pack(&filter, tmp);
    buf_add(&b, tmp, flen);
    size_t mlen = qraft__message__pack(&m, tmp);
    buf_add(&b, tmp, mlen);
    write_file("fuzz_filter", "filter_message", b.data, b.len);
    free(b.data);
    free(tmp);
    write_text("fuzz_filter", "state_in_progress", "IN_PROGRESS");

    /* fuzz_json_bodies: first byte picks the surface. */
    write_rest("batch", 0,
               "[{\"destination\":\"https://example.com/a\",\"headers\":{"
               "\"Upstash-Retries\":\"2\",\"Upstash-Delay\":\"10s\","
               "\"Upstash-Forward-X-Id\":[\"1\",\"2\"],\"Content-Type\":"
               "\"application/json\"},\"body\":\"{}\",\"queue\":\"emails\"},"
               "{\"destination\":\"team\"}]");
    write_rest("message_ids", 1, "{\"messageIds\":[\"msg_1\",\"msg_2\"]}");
    write_rest("endpoints", 2,
               "{\"endpoints\":[{\"name\":\"a\",\"url\":\"https://a.example"
               ".com/\"},{\"url\":\"https://b.example.com/\"}]}");
    write_rest("filter_query", 3,
               "url=https%3A%2F%2Fexample.com%2Fhook&fromDate="
               "1767225600000&responseStatus=500&label=billing&count=10");
    write_rest("publish", 4,
               "https://example.com/hook?upstash-retries=1&a=b\n"
               "Content-Type: application/json\n"
               "Upstash-Retry-Delay: 10000 * pow(2, retried)\n"
               "Upstash-Deduplication-Id: order-42\n"
               "Upstash-Flow-Control-Key: tenant\n"
               "Upstash-Flow-Control-Value: parallelism=2, rate=10, period=1m\n"
               "Upstash-Label: billing, eu\n"
               "Upstash-Not-Before: 1767225600\n"
               "Upstash-Callback: https://example.com/cb\n");
}

/* ---- Known findings: fuzz_apply inputs, one command kind each. */

static const char *known_dir;

static void known(const char *name, const struct buf *b, const char *why)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/fuzz_apply-known-%s", known_dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(b->data, 1, b->len, f) != b->len ||
        fclose(f) != 0) {
        die(path);
    }
    snprintf(path, sizeof path, "%s/fuzz_apply-known-%s.txt", known_dir, name);
    f = fopen(path, "w");
    if (f == NULL || fprintf(f, "%s\n", why) < 0 || fclose(f) != 0) {
        die(path);
    }
}

/* One record of raw command bytes (not packed by us). */
static void add_raw_record(struct buf *b, const uint8_t *p, size_t n)
{
    uint8_t len[2] = {(uint8_t)(n >> 8), (uint8_t)n};
    buf_add(b, len, 2);
    buf_add(b, p, n);
}

static void gen_known(void)
{
    char id1[QR_ID_BYTES];
    qr_command_message_id(id1, NOW_MS, 1, 1);
    Qraft__SetFeatureLevel fl = QRAFT__SET_FEATURE_LEVEL__INIT;
    fl.level = QR_FEATURE_LEVEL;
    Qraft__Command c_fl = QRAFT__COMMAND__INIT;
    c_fl.body_case = QRAFT__COMMAND__BODY_SET_FEATURE_LEVEL;
    c_fl.set_feature_level = &fl;
    struct buf b = {0};

    char long_id[601];
    memset(long_id, 'm', 600);
    long_id[600] = '\0';
    Qraft__DlqDelete dd = QRAFT__DLQ_DELETE__INIT;
    dd.message_id = long_id;
    Qraft__Command c = QRAFT__COMMAND__INIT;
    c.body_case = QRAFT__COMMAND__BODY_DLQ_DELETE;
    c.dlq_delete = &dd;
    add_record(&b, &c);
    known("dlq-delete-600-byte-id", &b,
          "issue 10 finding 1: DlqDelete of a 600-byte id");
    free(b.data);

    Qraft__DeliveryResult r = QRAFT__DELIVERY_RESULT__INIT;
    r.message_id = "";
    r.outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED;
    Qraft__DeliveryResult *rs[] = {&r};
    Qraft__DeliveryResults drs = QRAFT__DELIVERY_RESULTS__INIT;
    drs.results = rs;
    drs.n_results = 1;
    Qraft__Command c_r = QRAFT__COMMAND__INIT;
    c_r.body_case = QRAFT__COMMAND__BODY_DELIVERY_RESULTS;
    c_r.delivery_results = &drs;
    memset(&b, 0, sizeof b);
    add_record(&b, &c_r);
    known("result-empty-id", &b,
          "issue 10 finding 2: a DeliveryResult with an empty message_id");
    free(b.data);

    struct {
        const char *name;
        Qraft__Command__BodyCase kind;
    } empties[] = {
        {"cancel-empty-id", QRAFT__COMMAND__BODY_CANCEL},
        {"dlq-replay-empty-id", QRAFT__COMMAND__BODY_DLQ_REPLAY},
    };
    for (size_t i = 0; i < sizeof empties / sizeof empties[0]; i++) {
        Qraft__QueueUpsert qu = QRAFT__QUEUE_UPSERT__INIT;
        Qraft__QueuePause qp = QRAFT__QUEUE_PAUSE__INIT;
        Qraft__QueueDelete qd = QRAFT__QUEUE_DELETE__INIT;
        Qraft__ScheduleDelete sd = QRAFT__SCHEDULE_DELETE__INIT;
        Qraft__SchedulePause sp = QRAFT__SCHEDULE_PAUSE__INIT;
        Qraft__ScheduleFire sf = QRAFT__SCHEDULE_FIRE__INIT;
        Qraft__Cancel ca = QRAFT__CANCEL__INIT;
        Qraft__DlqReplay dr = QRAFT__DLQ_REPLAY__INIT;
        Qraft__Command ce = QRAFT__COMMAND__INIT;
        ce.body_case = empties[i].kind;
        sf.slot_ms = NOW_MS;
        sf.next_slot_ms = NOW_MS + 60000;
        ce.queue_upsert = &qu; /* a oneof: set the one member below */
        switch (empties[i].kind) {
            case QRAFT__COMMAND__BODY_QUEUE_UPSERT:
                ce.queue_upsert = &qu;
                break;
            case QRAFT__COMMAND__BODY_QUEUE_PAUSE:
                ce.queue_pause = &qp;
                break;
            case QRAFT__COMMAND__BODY_QUEUE_DELETE:
                ce.queue_delete = &qd;
                break;
            case QRAFT__COMMAND__BODY_SCHEDULE_DELETE:
                ce.schedule_delete = &sd;
                break;
            case QRAFT__COMMAND__BODY_SCHEDULE_PAUSE:
                ce.schedule_pause = &sp;
                break;
            case QRAFT__COMMAND__BODY_SCHEDULE_FIRE:
                ce.schedule_fire = &sf;
                break;
            case QRAFT__COMMAND__BODY_CANCEL:
                ce.cancel = &ca;
                break;
            default:
                ce.dlq_replay = &dr;
                break;
        }
        memset(&b, 0, sizeof b);
        add_record(&b, &c_fl);
        end_entry(&b, 1);
        add_record(&b, &ce);
        known(empties[i].name, &b, "a command with an empty message id");
        free(b.data);
    }

    /* A publish whose dedup key is empty. */
    Qraft__PublishRequest pr = QRAFT__PUBLISH_REQUEST__INIT;
    pr.url = "http://127.0.0.1:9/x";
    Qraft__Publish pub = QRAFT__PUBLISH__INIT;
    pub.message_id = id1;
    pub.request = &pr;
    char *keys[] = {""};
    pub.dedup_keys = keys;
    pub.n_dedup_keys = 1;
    pub.dedup_window_ms = 60000;
    Qraft__Command c_pub = QRAFT__COMMAND__INIT;
    c_pub.body_case = QRAFT__COMMAND__BODY_PUBLISH;
    c_pub.publish = &pub;
    memset(&b, 0, sizeof b);
    add_record(&b, &c_pub);
    known("publish-empty-dedup-key", &b, "a Publish with an empty dedup key");
    free(b.data);

    /* Callbacks built with jansson: a byte that is not UTF-8 in what the
     * callback body carries (the URL, or a header the destination sent)
     * makes json_string fail, which apply reports as out of memory. */
    Qraft__PublishRequest bad_url = QRAFT__PUBLISH_REQUEST__INIT;
    bad_url.url = "http://127.0.0.1:9/\xff";
    bad_url.callback = "http://127.0.0.1:9/cb";
    Qraft__DeliveryResult ok = QRAFT__DELIVERY_RESULT__INIT;
    ok.message_id = id1;
    ok.outcome = QRAFT__ATTEMPT_OUTCOME__OUTCOME_DELIVERED;
    ok.node_id = 1;
    Qraft__DeliveryResult *oks[] = {&ok};
    Qraft__DeliveryResults drs_ok = QRAFT__DELIVERY_RESULTS__INIT;
    drs_ok.results = oks;
    drs_ok.n_results = 1;
    Qraft__Command c_ok = QRAFT__COMMAND__INIT;
    c_ok.body_case = QRAFT__COMMAND__BODY_DELIVERY_RESULTS;
    c_ok.delivery_results = &drs_ok;
    memset(&b, 0, sizeof b);
    add_publish_record(&b, &bad_url, id1);
    end_entry(&b, 1);
    add_record(&b, &c_ok);
    known("callback-url-not-utf8", &b,
          "a delivered message with a callback and a URL that is not UTF-8 "
          "(REST refuses such URLs only once the UTF-8 checks land; RPC "
          "takes them today)");
    free(b.data);

    Qraft__PublishRequest good = QRAFT__PUBLISH_REQUEST__INIT;
    good.url = "http://127.0.0.1:9/x";
    good.callback = "http://127.0.0.1:9/cb";
    Qraft__Header h = QRAFT__HEADER__INIT;
    h.name = "X-Bad";
    h.value = "\xff\xfe";
    Qraft__Header *hs[] = {&h};
    Qraft__AttemptResponse resp = QRAFT__ATTEMPT_RESPONSE__INIT;
    resp.status = 200;
    resp.headers = hs;
    resp.n_headers = 1;
    ok.response = &resp;
    memset(&b, 0, sizeof b);
    add_publish_record(&b, &good, id1);
    end_entry(&b, 1);
    add_record(&b, &c_ok);
    known("callback-response-header-not-utf8", &b,
          "a destination answered a header value that is not UTF-8 to a "
          "message with a callback: every replica stops (reproduced on a "
          "real qraftd --dev: one curl publish + a sink answering "
          "'X-Bad: \\xff\\xfe')");
    free(b.data);

    /* F1: a PublishRequest carrying field 0 as a two-byte tag (85 00):
     * protobuf-c decodes it as an unknown field and packs it back as 05,
     * which it then refuses, so the repacked entry does not decode. */
    static const char url[] = "http://127.0.0.1:9/x";
    uint8_t req[64];
    size_t n = 0;
    req[n++] = 0x0a; /* url */
    req[n++] = (uint8_t)(sizeof url - 1);
    memcpy(req + n, url, sizeof url - 1);
    n += sizeof url - 1;
    static const uint8_t field0[] = {0x85, 0x00, 1, 2, 3, 4};
    memcpy(req + n, field0, sizeof field0);
    n += sizeof field0;
    uint8_t publish[128];
    size_t m = 0;
    publish[m++] = 0x0a; /* message_id */
    publish[m++] = (uint8_t)strlen(id1);
    memcpy(publish + m, id1, strlen(id1));
    m += strlen(id1);
    publish[m++] = 0x12; /* request */
    publish[m++] = (uint8_t)n;
    memcpy(publish + m, req, n);
    m += n;
    uint8_t cmd[160];
    size_t k = 0;
    cmd[k++] = 0x0a; /* Command.publish */
    cmd[k++] = (uint8_t)m;
    memcpy(cmd + k, publish, m);
    k += m;
    memset(&b, 0, sizeof b);
    add_raw_record(&b, cmd, k);
    known("F1-field0-tag", &b,
          "F1: a client PublishRequest with field 0 written as 85 00 is "
          "accepted, and the entry packed from it cannot be decoded");
    free(b.data);
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s <corpus dir> [<known findings dir>]\n",
                argv[0]);
        return 2;
    }
    out_dir = argv[1];
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        die(out_dir);
    }
    struct qr_config cfg;
    qr_config_defaults(&cfg);
    limits = cfg.limits;
    gen_frames();
    gen_apply();
    gen_snapshot();
    gen_text();
    if (argc == 3) {
        known_dir = argv[2];
        gen_known();
    }
    return 0;
}
