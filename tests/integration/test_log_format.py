"""qraftd --log-format json (issue 16, point 6): every line a node writes
to stderr is one JSON object with time, level, module, node and msg; a
delivery that fails carries the message's id as message_id."""

import json
import re
import unittest

import qraft_harness as qh

WAIT = 30
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class JsonLogTest(unittest.TestCase):
    def test_lines_are_json_and_name_the_message(self):
        node = qh.start_dev_node(self, extra_args=["--log-format", "json"])
        dead = f"http://127.0.0.1:{qh.free_port()}/gone"  # nothing listens
        status, _, body = qh.http_call(
            node.http_addr, "POST", f"/v2/publish/{dead}", body=b"x",
            token=node.token, headers={"Upstash-Retries": "0"})
        self.assertEqual(status, 200, body)
        mid = body["messageId"]

        def lines():
            text = node.stderr_path.read_text(errors="strict")
            return [line for line in text.split("\n") if line]

        def failure_line():
            for line in lines():
                obj = json.loads(line)
                if obj.get("message_id") == mid:
                    return obj
            return None

        got = qh.wait_until(failure_line, WAIT,
                            f"a log line with message_id {mid}")
        self.assertEqual(got["module"], "worker")
        self.assertIn("dead-lettered", got["msg"])
        node.terminate()
        for line in lines():
            obj = json.loads(line)
            self.assertIsInstance(obj, dict, line)
            self.assertRegex(obj["time"], RFC3339_MS)
            self.assertIn(obj["level"], ("debug", "info", "warn", "error"))
            self.assertIsInstance(obj["module"], str)
            self.assertIsInstance(obj["msg"], str)
            self.assertEqual(obj["node"], 1, line)


if __name__ == "__main__":
    unittest.main()
