"""qraftd --config FILE (issue 16, point 2): a node starts from a YAML file
whose keys are its flags; a flag given too wins over the file; a bad file
is refused before anything starts, naming the file, the line and the key;
--print-config prints the merged settings as a file that --config reads
back to the same settings, the secret masked."""

import os
import subprocess
import tempfile
import unittest
from pathlib import Path

import qraft_harness as qh


class FileNode(qh.Node):
    """`qraftd --config FILE [flags]`: a --dev node whose settings are in
    its file."""

    def __init__(self, settings, **kwargs):
        super().__init__(**kwargs)
        self.config_path = self.dir / "qraft.yaml"
        self.config_path.write_text(settings.format(node=self))

    def command(self):
        return [qh.binary("qraftd"), "--config", self.config_path,
                *self.extra_args]


def qraftd(*args, env=None):
    """Runs qraftd to completion with only the QRAFT_* variables of env;
    returns (rc, stdout, stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QRAFT_")}
    proc = subprocess.run([str(qh.binary("qraftd")), *map(str, args)],
                          capture_output=True, text=True, timeout=30,
                          env={**clean, **(env or {})}, check=False)
    return proc.returncode, proc.stdout, proc.stderr


SETTINGS = """\
# A development node, every address and the token from this file.
dev: true
data: "{node.data_dir}"
raft: {node.raft_addr}
rpc: {node.rpc_addr}
http: {node.http_addr}
token: {node.token}
max-queues: 3
log-level: info
"""


class ConfigFileTest(unittest.TestCase):
    def start(self, settings=SETTINGS, extra_args=()):
        node = FileNode(settings, extra_args=extra_args)
        self.addCleanup(node.cleanup)
        node.start()
        return node

    def test_node_starts_from_file(self):
        node = self.start()
        status, _, body = qh.http_call(node.http_addr, "GET", "/v2/queues",
                                       token=node.token)
        self.assertEqual(status, 200, body)
        # max-queues: 3 from the file is the node's limit.
        for i in range(3):
            status, _, body = qh.http_call(
                node.http_addr, "POST", "/v2/queues",
                body={"queueName": f"q{i}"}, token=node.token,
                headers={"Content-Type": "application/json"})
            self.assertEqual(status, 200, body)
        status, _, body = qh.http_call(
            node.http_addr, "POST", "/v2/queues", body={"queueName": "q3"},
            token=node.token, headers={"Content-Type": "application/json"})
        self.assertEqual(status, 412, body)
        self.assertIn("the limit is 3", body["error"])

    def test_flag_overrides_file(self):
        unused = f"127.0.0.1:{qh.free_port()}"
        node = FileNode(SETTINGS.replace("http: {node.http_addr}",
                                         f"http: {unused}"))
        node.extra_args = ["--http", node.http_addr]
        self.addCleanup(node.cleanup)
        node.start()  # waits for /healthz on the flag's address
        self.assertIsNone(qh.http_status(f"http://{unused}/healthz"))

    def test_bad_file_refused_with_its_line(self):
        work = Path(self.enterContext(tempfile.TemporaryDirectory()))
        cases = [
            ("dev: true\n\nmax-queues: many\n",
             ":3: max-queues: 'many' is not in"),
            ("dev: true\nhttp-listen: 127.0.0.1:1\n",
             ":2: http-listen: not a setting"),
            ("dev: true\ndev: false\n", ":2: dev: given twice"),
            ("dev: true\nhttp: {host: x}\n", ":2: http: a mapping"),
            ("- dev\n", ":1: the file must be a mapping"),
        ]
        for i, (text, needle) in enumerate(cases):
            path = work / f"bad{i}.yaml"
            path.write_text(text)
            rc, out, err = qraftd("--config", path, "--data", work / "data")
            self.assertEqual(rc, 2, (text, out, err))
            self.assertIn(f"{path}{needle}", err)
            self.assertFalse((work / "data").exists(), "a refused node "
                             "made its data dir")

    def test_print_config_round_trip(self):
        work = Path(self.enterContext(tempfile.TemporaryDirectory()))
        first = work / "first.yaml"
        first.write_text("id: 2\n"
                         "peers: [1@127.0.0.1:7201, 2@127.0.0.1:7202]\n"
                         "token: file-secret-token\n"
                         "dedup-window: 1h\n"
                         "log-format: json\n")
        rc, printed, err = qraftd("--config", first, "--max-queues", "12",
                                  "--print-config")
        self.assertEqual(rc, 0, err)
        self.assertNotIn("file-secret-token", printed)
        self.assertIn('token: "***"\n', printed)
        self.assertIn("max-queues: 12\n", printed)
        self.assertIn('dedup-window: "1h"\n', printed)
        self.assertIn('  - "2@127.0.0.1:7202"\n', printed)
        second = work / "second.yaml"
        second.write_text(printed)
        # "***" sets nothing: the token comes from the environment now.
        rc, again, err = qraftd("--config", second, "--print-config",
                                env={"QRAFT_TOKEN": "env-token"})
        self.assertEqual(rc, 0, err)
        self.assertEqual(again, printed)
        # Without one, the printed file says why it would not start.
        rc, alone, err = qraftd("--config", second, "--print-config")
        self.assertEqual(rc, 0, err)
        self.assertIn("would not start with these alone: --token", alone)


if __name__ == "__main__":
    unittest.main()
