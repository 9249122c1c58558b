"""Node-to-node requests (heartbeats, delivery results) need the peer
token: an API client that knows only the API token cannot pose as a node,
for example to report a message delivered that never was."""

import unittest

import qraft_harness as qh

HEARTBEAT = 30  # Request.heartbeat
RESULTS = 31  # Request.results
PEER_TOKEN = "peer-secret-for-tests"


class PeerAuthTest(unittest.TestCase):
    def test_peer_requests_need_the_peer_token(self):
        cluster = qh.start_cluster(self, extra_args=["--peer-token", PEER_TOKEN])
        leader = cluster.leader()

        # The nodes' own heartbeats carry the peer token: every node gets
        # its share of the shards.
        def every_node_owns_shards():
            nodes = leader.status()["nodes"]
            return len(nodes) == 3 and all(n["shards"] > 0 for n in nodes)

        qh.wait_until(every_node_owns_shards, 20,
                      "every node to hold a lease and own shards")

        # A heartbeat for node 2 (HeartbeatRequest.info.id = 2) and an empty
        # results batch.
        heartbeat = qh.pb_bytes(1, qh.pb_uint(1, 2))
        with qh.RawRpc(leader.rpc_addr) as rpc:
            for req_id, field, body in ((1, HEARTBEAT, heartbeat),
                                        (2, RESULTS, b"")):
                resp = rpc.call(qh.request(req_id, cluster.token, field, body))
                self.assertEqual(resp["status_name"], "UNAUTHORIZED", resp)
                self.assertIn("peer token", resp["error"])
            # The peer token gets past authentication (to the handler, which
            # refuses an empty batch)...
            resp = rpc.call(qh.request(3, PEER_TOKEN, RESULTS, b""))
            self.assertEqual(resp["status_name"], "BAD_REQUEST", resp)
            self.assertEqual(resp["error"], "no results")
            # ...and for client requests too (followers forward clients'
            # writes with it); the API token still works for those.
            for req_id, token in ((4, PEER_TOKEN), (5, cluster.token)):
                resp = rpc.call(qh.request(req_id, token, 17))
                self.assertEqual(resp["status_name"], "OK", resp)
            resp = rpc.call(qh.request(6, "wrong", 17))
            self.assertEqual(resp["status_name"], "UNAUTHORIZED", resp)


if __name__ == "__main__":
    unittest.main()
