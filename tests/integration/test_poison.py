"""No request can stop a replica (issue: poison entries).

Before, one authenticated request naming a 600-byte message id (DELETE
/v2/dlq/<id>, POST /v2/dlq/retry/<id>, the bulk forms, DELETE
/v2/messages?messageIds=...) was proposed by the leader, and every replica
stopped at that entry, again on every restart. So did one peer `results`
frame with an empty message id. What a user checks here:

- each such request is answered 400 with a reason, and the whole cluster
  keeps serving: every node is up and a publish after them is readable on
  every node;
- a data dir whose log already holds such an entry (made by the binary of
  e528cea, tests/data/poisoned-dlq-delete-e528cea.tar.gz) starts: the
  poisoned command is refused in apply, the message stored before it is
  still there, and the node takes new publishes.
"""

import tarfile
import unittest
from pathlib import Path

import qraft_harness as qh

PUBLISH = 10  # Request.publish
RESULTS = 31  # Request.results
PEER_TOKEN = "peer-secret-for-poison-tests"
LONG_ID = "m" * 600
DATA = Path(__file__).resolve().parent.parent / "data"


def poison_requests():
    """(method, target) of every REST request that stopped replicas."""
    return [
        ("DELETE", f"/v2/dlq/{LONG_ID}"),
        ("POST", f"/v2/dlq/retry/{LONG_ID}"),
        ("DELETE", f"/v2/dlq?dlqIds={LONG_ID}"),
        ("POST", f"/v2/dlq/retry?dlqIds={LONG_ID}"),
        ("DELETE", f"/v2/messages?messageIds={LONG_ID}"),
        ("DELETE", f"/v2/messages/{LONG_ID}"),
        ("DELETE", "/v2/dlq?dlqIds=msg_ok,%20"),
    ]


class PoisonRequestTest(unittest.TestCase):
    def test_poison_rest_requests_are_refused_and_the_cluster_serves(self):
        cluster = qh.start_cluster(self, extra_args=["--peer-token", PEER_TOKEN])
        leader = cluster.leader()
        follower = next(n for n in cluster.live_nodes() if n is not leader)
        for node in (leader, follower):
            for method, target in poison_requests():
                status, _, body = qh.http_call(node.http_addr, method, target,
                                               token=cluster.token)
                self.assertEqual(status, 400, (method, target[:40], body))
                self.assertIn("message id", body["error"],
                              (method, target[:40]))
        cluster.check_not_crashed()
        self.assert_cluster_takes_a_publish(cluster)

    def test_peer_results_with_an_empty_message_id_are_refused(self):
        cluster = qh.start_cluster(self, extra_args=["--peer-token", PEER_TOKEN])
        leader = cluster.leader()
        bad_results = [
            # DeliveryResult{message_id: "", attempt: 0, outcome: DELIVERED}
            qh.pb_bytes(1, qh.pb_uint(3, 1)),
            # DeliveryResult{message_id: 600 x "m", outcome: DELIVERED}
            qh.pb_bytes(1, qh.pb_bytes(1, LONG_ID.encode()) + qh.pb_uint(3, 1)),
            # DeliveryResult{message_id: "msg_x", outcome: 99 (unknown)}
            qh.pb_bytes(1, qh.pb_bytes(1, b"msg_x") + qh.pb_uint(3, 99)),
        ]
        with qh.RawRpc(leader.rpc_addr) as rpc:
            for req_id, body in enumerate(bad_results, start=1):
                resp = rpc.call(qh.request(req_id, PEER_TOKEN, RESULTS, body))
                self.assertEqual(resp["status_name"], "BAD_REQUEST", resp)
                self.assertIn("result 0", resp["error"])
        cluster.check_not_crashed()
        self.assert_cluster_takes_a_publish(cluster)

    def assert_cluster_takes_a_publish(self, cluster):
        leader = cluster.leader()
        status, _, body = qh.http_call(
            leader.http_addr, "POST", "/v2/publish/http://127.0.0.1:9/after",
            body=b"after", headers={"Upstash-Delay": "1d"},
            token=cluster.token)
        self.assertEqual(status, 200, body)
        msg_id = body["messageId"]
        for node in cluster.live_nodes():
            qh.wait_until(
                lambda n=node: qh.http_call(n.http_addr, "GET",
                                            f"/v2/messages/{msg_id}",
                                            token=cluster.token)[0] == 200,
                20, f"{node.name} to serve {msg_id}")
        cluster.check_not_crashed()


class UnknownFieldTest(unittest.TestCase):
    """protobuf-c 1.4 reads field 0 written as a two-byte tag (85 00) as an
    unknown field, packs it back as 05 and refuses its own output: a
    publish carrying it made an entry no replica could decode, and every
    node stopped at it, again on every restart (docs/fuzzing.md, F1)."""

    def test_a_field_0_tag_in_a_publish_stops_nothing(self):
        node = qh.start_dev_node(self)
        field0 = b"\x85\x00\x01\x02\x03\x04"  # field 0, fixed32
        publish = (qh.publish_request(b"http://127.0.0.1:9/f0") + field0
                   + qh.pb_uint(5, 3600 * 1000))  # delay_ms: an hour
        with qh.RawRpc(node.rpc_addr) as rpc:
            resp = rpc.call(qh.request(1, node.token, PUBLISH, publish))
        self.assertEqual(resp["status_name"], "OK", resp)
        # Whatever came back, the node applied the entry and goes on,
        # now and after a restart that replays its log.
        for restart in (False, True):
            if restart:
                node.restart(kill=True)
            status, _, body = qh.http_call(
                node.http_addr, "POST", "/v2/publish/http://127.0.0.1:9/next",
                body=b"x", headers={"Upstash-Delay": "1d"}, token=node.token)
            self.assertEqual(status, 200, body)
        self.assertNotIn("cannot be decoded", node.stderr_tail(200))


class PoisonedDataDirTest(unittest.TestCase):
    """A data dir made by e528cea: a dev node took one publish ("before",
    delayed 1 d, id BEFORE), then DELETE /v2/dlq/<600 x m>, which stopped it
    at log entry 6 and on every restart after."""

    BEFORE = "msg_01a24b0626d90001d5efd84a"

    def test_a_node_gets_past_a_poisoned_entry_in_its_log(self):
        node = qh.DevNode()
        self.addCleanup(node.cleanup)
        node.data_dir.mkdir(parents=True)
        with tarfile.open(DATA / "poisoned-dlq-delete-e528cea.tar.gz") as tar:
            tar.extractall(node.data_dir)
        node.start()

        status, _, body = qh.http_call(node.http_addr, "GET",
                                       f"/v2/messages/{self.BEFORE}",
                                       token=node.token)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["url"], "http://127.0.0.1:9/before")
        self.assertIn("refused", node.stderr_tail(200))

        status, _, body = qh.http_call(
            node.http_addr, "POST", "/v2/publish/http://127.0.0.1:9/after",
            body=b"after", headers={"Upstash-Delay": "1d"}, token=node.token)
        self.assertEqual(status, 200, body)
        # And again after a restart: the refused entry is behind it now.
        node.restart(kill=True)
        status, _, _ = qh.http_call(node.http_addr, "GET",
                                    f"/v2/messages/{body['messageId']}",
                                    token=node.token)
        self.assertEqual(status, 200)


if __name__ == "__main__":
    unittest.main()
