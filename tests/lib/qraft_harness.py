"""Helpers for integration tests: real qraftd processes on loopback.

Python 3 standard library only. Binaries come from $QRAFT_BIN (default
<repo>/build/bin). Every node gets its own temporary directory (data dir and
one stdout/stderr log per start) and its own ports. Nothing is left running:
nodes are killed by their cleanup (register it with unittest's addCleanup, or
use start_dev_node), by an atexit hook, and by the kernel if this process
dies (PR_SET_PDEATHSIG), so a killed test run leaves no qraftd behind.

Waiting is always on a condition with a deadline (wait_until); nothing
sleeps and hopes.

    node = start_dev_node(self)            # started; stopped at cleanup
    rc, out, err = node.cli("publish", "http://127.0.0.1:9/x", "--delay", "1h")
    node.kill9(); node.start()             # same data, same ports

    status, _, body = http_call(node.http_addr, "GET", "/v2/queues",
                                token=node.token)    # raw REST, JSON parsed

    node = start_dev_node(self, tls=("node.pem", "node.key", "ca.pem"))
    http_call(node.http_addr, "GET", "/healthz", cafile=node.tls_ca)  # https

    cluster = start_cluster(self)          # 3 nodes; a leader elected
    leader = cluster.leader()              # the Node every live node names
    cluster.cli("publish", url)            # qraft with every endpoint
    leader.kill9(); cluster.leader(); cluster.restart(leader)
"""

import atexit
import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Deadlines, in seconds.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 60.0

ENV_KEYS = (
    "QSTASH_URL",
    "QSTASH_TOKEN",
    "QSTASH_CURRENT_SIGNING_KEY",
    "QSTASH_NEXT_SIGNING_KEY",
    "QRAFT_ENDPOINTS",
)


class HarnessError(AssertionError):
    """A node or tool did not behave; unittest reports it as a failure."""


# ---------------------------------------------------------------------------
# Binaries, ports, waiting.


def bin_dir():
    return Path(os.environ.get("QRAFT_BIN", REPO / "build" / "bin"))


def binary(name):
    """Path of build/bin/<name>; fails clearly when it was not built."""
    path = bin_dir() / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise HarnessError(
            f"{path} is missing or not executable: build qraft first, or set "
            f"QRAFT_BIN to the directory holding {name}"
        )
    return path


# The feature level of this build's qraftd (QR_FEATURE_LEVEL in
# node/repl/command.h).
FEATURE_LEVEL = 6

_handed_out_ports = set()


def open_fds(node):
    """How many descriptors node's process holds (a leak check)."""
    return len(os.listdir(f"/proc/{node.proc.pid}/fd"))


def closed_by_server(sock, timeout):
    """True when the server closes sock (EOF or reset) within timeout;
    whatever it sends first (a TLS alert) is read and dropped."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False
    return False


def connect_tcp(addr, timeout=5):
    """A plain TCP connection to "host:port"."""
    host, _, port = addr.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def free_port(host="127.0.0.1"):
    """A loopback TCP port nobody listens on now and that this process has
    not handed out before."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _handed_out_ports:
            _handed_out_ports.add(port)
            return port
    raise HarnessError("no free port found")


def wait_until(pred, timeout, what, interval=0.05):
    """Calls pred until it returns something truthy, and returns that. At the
    deadline, raises HarnessError naming `what` (a string, or a function
    returning one, called then) and pred's last exception, if it raised one.
    A HarnessError raised by pred is not retried: it propagates at once."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = pred()
            if value:
                return value
            last_exc = None
        except HarnessError:
            raise
        except Exception as exc:  # noqa: BLE001 (reported at the deadline)
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            what = what() if callable(what) else what
            raise HarnessError(
                f"timed out after {timeout:g}s waiting for {what}{detail}"
            )
        time.sleep(interval)


def tls_client_context(cafile):
    """An SSL context that verifies the server against cafile (PEM) and
    checks its name, as any https client does."""
    return ssl.create_default_context(cafile=str(cafile))


def http_status(url, timeout=2.0, cafile=None):
    """Status code of GET url, or None when nothing answers. An https url
    is verified against cafile."""
    context = tls_client_context(cafile) if cafile is not None else None
    try:
        with urllib.request.urlopen(url, timeout=timeout,
                                    context=context) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def http_call(addr, method, target, body=None, headers=None, token=None,
              timeout=10, parse="auto", cafile=None):
    """One raw HTTP/1.1 request, for tests of the REST API itself.

    addr is "host:port"; target goes out byte for byte (no quoting), so a
    test can send any path and query. token, unless None, is sent as
    "Authorization: Bearer <token>"; headers (a dict) come after it and win.
    body: bytes or str as is, a dict or list as JSON (no Content-Type is
    added: pass one in headers). The connection is closed before returning.

    Returns (status, headers, body). parse says what body is: "auto" the
    response parsed as JSON, or its raw bytes when it is not JSON; "json"
    parsed, and a body that is not JSON raises ValueError; None the raw
    bytes. An empty body is None when parsed.

    cafile, unless None, makes it https, the server verified against that
    CA bundle (PEM)."""
    hdrs = {} if token is None else {"Authorization": f"Bearer {token}"}
    hdrs.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    if cafile is None:
        conn = http.client.HTTPConnection(addr, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection(
            addr, timeout=timeout, context=tls_client_context(cafile))
    try:
        conn.request(method, target, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if parse is None:
        return resp.status, resp.headers, data
    if not data:
        return resp.status, resp.headers, None
    try:
        return resp.status, resp.headers, json.loads(data)
    except ValueError:
        if parse == "json":
            raise
        return resp.status, resp.headers, data


def metric(node, name, default=None):
    """The value of one sample of node's /metrics: name is the sample as
    written there, labels included (`qraft_messages{state="created"}`).
    A sample that is not there is default, or an AssertionError when
    default is None."""
    status, _, body = http_call(node.http_addr, "GET", "/metrics",
                                parse=None, cafile=node.tls_ca)
    if status != 200:
        raise AssertionError(f"/metrics of node {node.id} answered {status}")
    for line in body.decode().splitlines():
        sample, _, value = line.rpartition(" ")
        if sample == name:
            return float(value) if "." in value or "e" in value else int(value)
    if default is None:
        raise AssertionError(f"{name} not in /metrics of node {node.id}")
    return default


def message_ids(text):
    """Message ids in the --json output of `qraft ls` / `qraft dlq ls`:
    accepts an array of messages, an object with a "messages" array, or one
    JSON object per line."""
    text = text.strip()
    if not text:
        return []
    try:
        docs = [json.loads(text)]
    except json.JSONDecodeError:
        docs = [json.loads(line) for line in text.splitlines() if line.strip()]
    ids = []
    for doc in docs:
        items = doc
        if isinstance(doc, dict):
            items = doc.get("messages", [doc] if "id" in doc else [])
        for item in items:
            ids.append(item.get("id") or item.get("message_id"))
    return ids


def list_all_ids(node, *args):
    """Every message id that `qraft ARGS --json` lists (ARGS is `ls ...` or
    `dlq ls`), following the cursor from page to page."""
    ids = []
    cursor = ""
    while True:
        extra = ["--cursor", cursor] if cursor else []
        _, out, _ = node.cli(*args, "--limit", "1000", "--json", *extra)
        doc = json.loads(out)
        ids.extend(m["id"] for m in doc["messages"])
        cursor = doc.get("cursor", "")
        if not cursor:
            return ids


# ---------------------------------------------------------------------------
# Process bookkeeping: no node outlives the test run.

_live_nodes = set()
_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:  # not Linux/glibc: rely on cleanups and atexit only
    _libc = None


def _die_with_parent():
    # Runs in the child between fork and exec: the kernel sends SIGKILL when
    # the thread that started it exits (start nodes from the main thread).
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@atexit.register
def _kill_all_nodes():
    for node in list(_live_nodes):
        node.cleanup()


# ---------------------------------------------------------------------------
# Nodes.


class Node:
    """One qraftd process with fixed ports and a data dir that survive
    restarts. Subclasses say which command line to run (command()); a
    cluster is a list of Nodes with distinct ids."""

    def __init__(self, node_id=1, token=None, extra_args=(), name=None,
                 tls=None):
        self.id = node_id
        # tls: (cert, key, ca) paths; the node serves its HTTP API over TLS
        # with cert and key, and the harness verifies it against ca.
        self.tls = tuple(str(p) for p in tls) if tls is not None else None
        self.name = name or f"node{node_id}"
        self.token = token or f"test-token-{os.getpid()}-{node_id}"
        self.extra_args = list(extra_args)
        self.rpc_port = free_port()
        self.http_port = free_port()
        self.raft_port = free_port()
        keep = os.environ.get("QRAFT_KEEP_TMP") == "1"
        self.dir = Path(tempfile.mkdtemp(prefix=f"qraft-{self.name}-"))
        self._keep_dir = keep
        self.data_dir = self.dir / "data"
        self.proc = None
        self.starts = 0
        self.stdout_path = None
        self.stderr_path = None
        self.env = {}
        # Environment the process gets on top of the test's own (e.g. a
        # preloaded library); QRAFT_* names too, unlike the caller's.
        self.extra_env = {}
        # The CA file clients verify this node with (TLS on its RPC port),
        # None: plaintext.
        self.cacert = None
        _live_nodes.add(self)

    # Addresses.
    @property
    def rpc_addr(self):
        return f"127.0.0.1:{self.rpc_port}"

    @property
    def http_addr(self):
        return f"127.0.0.1:{self.http_port}"

    @property
    def tls_ca(self):
        """The CA bundle that verifies the node's HTTP API, or None when it
        serves plaintext."""
        return self.tls[2] if self.tls is not None else None

    @property
    def http_url(self):
        """http://HOST:PORT, or https:// when the node serves TLS."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.http_addr}"

    def tls_args(self):
        """--tls-cert/--tls-key for command(), or nothing."""
        if self.tls is None:
            return []
        return ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]

    @property
    def raft_addr(self):
        return f"127.0.0.1:{self.raft_port}"

    @property
    def endpoints(self):
        """What clients are given: the printed QRAFT_ENDPOINTS once seen."""
        return self.env.get("QRAFT_ENDPOINTS", self.rpc_addr)

    def command(self):
        raise NotImplementedError

    # Lifecycle.
    def start(self, wait=True, timeout=START_TIMEOUT):
        """Starts the process (same data dir and ports as before); with wait,
        returns once it serves (see wait_serving)."""
        if self.running():
            raise HarnessError(f"{self.name} is already running")
        self.starts += 1
        self.stdout_path = self.dir / f"stdout.{self.starts}.log"
        self.stderr_path = self.dir / f"stderr.{self.starts}.log"
        self.env = {}
        with open(self.stdout_path, "wb") as out, open(
            self.stderr_path, "wb"
        ) as err:
            self.proc = subprocess.Popen(
                [str(a) for a in self.command()],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.dir,
                env={**_clean_env(), **self.extra_env},
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        if wait:
            self.wait_serving(timeout)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_serving(self, timeout=START_TIMEOUT):
        """Waits until GET /healthz answers 200 and stdout has the
        QRAFT_ENDPOINTS line; fails at once if the process exits."""

        def serving():
            self._check_alive("while starting")
            if "QRAFT_ENDPOINTS" not in self.read_env():
                return False
            return self.healthz() == 200

        wait_until(
            serving, timeout, lambda: f"{self.name} to serve{self._log_hint()}"
        )

    def read_env(self):
        """Parses the KEY=VALUE lines printed on stdout by this start."""
        env = {}
        if self.stdout_path and self.stdout_path.exists():
            for line in self.stdout_path.read_text(errors="replace").splitlines():
                key, sep, value = line.partition("=")
                if sep and key in ENV_KEYS:
                    env[key] = value
        self.env = env
        return env

    def stdout_lines(self):
        return self.stdout_path.read_text(errors="replace").splitlines()

    def healthz(self):
        return http_status(f"{self.http_url}/healthz", cafile=self.tls_ca)

    def kill9(self):
        """SIGKILL and reap."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)

    def terminate(self, timeout=STOP_TIMEOUT, check=True):
        """SIGTERM, wait for the exit and return its code; with check, fail
        unless it is 0."""
        if not self.running():
            raise HarnessError(f"{self.name} is not running{self._log_hint()}")
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise HarnessError(
                f"{self.name} did not exit within {timeout:g}s of SIGTERM"
                f"{self._log_hint()}"
            ) from None
        if check and rc != 0:
            raise HarnessError(
                f"{self.name} exited {rc} after SIGTERM{self._log_hint()}"
            )
        return rc

    def restart(self, kill=False, wait=True):
        """Stops (SIGTERM, or SIGKILL with kill) and starts again on the same
        data dir and ports."""
        if kill:
            self.kill9()
        else:
            self.terminate()
        return self.start(wait=wait)

    def cleanup(self):
        """Kills the process; removes the directory unless QRAFT_KEEP_TMP=1.
        Safe to call more than once."""
        self.kill9()
        if not self._keep_dir and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        _live_nodes.discard(self)

    # Clients.
    def cli(self, *args, check=True, token=None, endpoints=None, stdin=None,
            timeout=CLI_TIMEOUT):
        """Runs `qraft --endpoints E --token T args...`; returns (rc, stdout,
        stderr) as text. With check, fails unless rc is 0."""
        argv = [
            binary("qraft"),
            "--endpoints",
            endpoints or self.endpoints,
            "--token",
            self.token if token is None else token,
            *(["--cacert", self.cacert] if self.cacert else []),
            *args,
        ]
        return run(argv, check=check, stdin=stdin, timeout=timeout)

    def tool(self, name, *args, check=True, timeout=CLI_TIMEOUT):
        """Runs build/bin/<name> args... (qraft-bench, a test program)."""
        return run([binary(name), *args], check=check, timeout=timeout)

    # Diagnostics.
    def stderr_tail(self, n=40):
        if not self.stderr_path or not self.stderr_path.exists():
            return ""
        lines = self.stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def _log_hint(self):
        tail = self.stderr_tail()
        where = f"\n  logs in {self.dir}" if self._keep_dir else ""
        return f"{where}\n--- {self.name} stderr (tail) ---\n{tail}" if tail else where

    def _check_alive(self, doing):
        if self.proc is not None and self.proc.poll() is not None:
            raise HarnessError(
                f"{self.name} exited with {self.proc.returncode} {doing}"
                f"{self._log_hint()}"
            )

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} rpc={self.rpc_addr}>"


class DevNode(Node):
    """`qraftd --dev`: a one-node cluster."""

    def command(self):
        return [
            binary("qraftd"),
            "--dev",
            "--data",
            self.data_dir,
            "--rpc",
            self.rpc_addr,
            "--http",
            self.http_addr,
            "--raft",
            self.raft_addr,
            "--token",
            self.token,
            *self.tls_args(),
            *self.extra_args,
        ]


def start_dev_node(testcase=None, **kwargs):
    """Starts a DevNode; with a unittest.TestCase, registers its cleanup."""
    node = DevNode(**kwargs)
    if testcase is not None:
        testcase.addCleanup(node.cleanup)
    try:
        node.start()
    except BaseException:
        if testcase is None:
            node.cleanup()
        raise
    return node


# ---------------------------------------------------------------------------
# Clusters: N qraftd processes started with the same --peers.


class ClusterNode(Node):
    """One member of a Cluster: `qraftd --id N --peers ...`. It prints
    nothing on stdout (only --dev does); it serves once /healthz answers
    200, which needs a known leader, so start every member before waiting
    on any (Cluster.start does)."""

    def __init__(self, node_id, cluster, token, extra_args=()):
        super().__init__(node_id=node_id, token=token, extra_args=extra_args)
        self.cluster = cluster
        self.stopped_on_purpose = False
        if cluster.certs is not None:
            self.cacert = str(cluster.certs.ca)
            # Its HTTP API serves https with its own certificate.
            cert, key = cluster.certs.node(node_id)
            self.tls = (str(cert), str(key), str(cluster.certs.ca))

    def start(self, wait=True, timeout=START_TIMEOUT):
        self.stopped_on_purpose = False
        return super().start(wait=wait, timeout=timeout)

    def kill9(self):
        self.stopped_on_purpose = True
        super().kill9()

    def terminate(self, timeout=STOP_TIMEOUT, check=True):
        self.stopped_on_purpose = True
        return super().terminate(timeout=timeout, check=check)

    def check_not_crashed(self):
        """Fails, with the log tail, if the process exited although the
        harness did not stop it."""
        if not self.stopped_on_purpose:
            self._check_alive("on its own")

    def command(self):
        return [
            binary("qraftd"),
            "--id",
            self.id,
            "--peers",
            self.cluster.peers,
            "--data",
            self.data_dir,
            "--raft",
            self.raft_addr,
            "--rpc",
            self.rpc_addr,
            "--http",
            self.http_addr,
            "--token",
            self.token,
            *self.cluster.tls_args(self.id),
            *self.extra_args,
        ]

    def wait_serving(self, timeout=START_TIMEOUT):
        """Waits until GET /healthz answers 200; fails at once if the
        process exits."""

        def serving():
            self._check_alive("while starting")
            return self.healthz() == 200

        wait_until(
            serving, timeout, lambda: f"{self.name} to serve{self._log_hint()}"
        )

    def readyz(self):
        return http_status(f"{self.http_url}/readyz", cafile=self.tls_ca)

    def status(self, timeout=10.0):
        """This node's own `qraft status --json` (asked of it alone), as a
        dict; raises if it does not answer."""
        _, out, _ = self.cli("status", "--local", "--json", timeout=timeout)
        return json.loads(out)

    def try_status(self):
        """status(), or None when the node is down or does not answer."""
        if not self.running():
            return None
        try:
            return self.status()
        except (HarnessError, ValueError):
            return None


class JoiningNode(ClusterNode):
    """A node started with --join (not --peers): empty, outside the cluster
    until the leader adds it (`qraft cluster add`)."""

    def command(self):
        argv = super().command()
        i = argv.index("--peers")
        return argv[:i] + ["--join"] + argv[i + 2:]


class Cluster:
    """N ClusterNodes (ids 1..N) on loopback sharing one token. Nodes that
    are stopped (kill9, terminate) keep their data dir and ports, so any of
    them can be started again.

        cluster = start_cluster(self)        # 3 nodes, a leader elected
        leader = cluster.leader()
        cluster.cli("publish", url)          # every endpoint, any order
        cluster.kill9(leader); cluster.leader(); cluster.restart(leader)
    """

    _count = 0

    def __init__(self, n=3, token=None, extra_args=(), tls=False):
        """With tls, the nodes serve TLS on their RPC ports and https on
        their HTTP APIs, and speak mutual TLS to each other (raft and peer
        RPC), each with its own certificate (make_certs, Certs.node); cli() passes
        --cacert, and the node's http_url and tls_ca say https."""
        if not 1 <= n <= 9:
            raise HarnessError(f"a cluster of {n} nodes: 1..9 please")
        Cluster._count += 1
        self.token = token or f"test-token-{os.getpid()}-c{Cluster._count}"
        self.certs = None
        if tls:
            self.certs = make_certs(
                Path(tempfile.mkdtemp(prefix="qraft-certs-"))
            )
        self.nodes = [
            ClusterNode(i, self, self.token, extra_args)
            for i in range(1, n + 1)
        ]

    # Addresses.
    @property
    def peers(self):
        """The --peers value every node gets: ID@RAFT_ADDR,..."""
        return ",".join(f"{n.id}@{n.raft_addr}" for n in self.nodes)

    @property
    def endpoints(self):
        """Every node's RPC address, comma-separated, in id order."""
        return ",".join(n.rpc_addr for n in self.nodes)

    def node(self, node_id):
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise HarnessError(f"no node {node_id} in this cluster")

    def live_nodes(self):
        return [n for n in self.nodes if n.running()]

    def check_not_crashed(self):
        """Fails at once if a node exited that the harness did not stop."""
        for n in self.nodes:
            n.check_not_crashed()

    # Lifecycle.
    def start(self, nodes=None, timeout=START_TIMEOUT):
        """Starts nodes (default: every node not running) all at once, then
        waits until each serves. Elections need a majority up, so nothing
        waits between the starts."""
        nodes = [n for n in (nodes or self.nodes) if not n.running()]
        for n in nodes:
            n.start(wait=False)
        deadline = time.monotonic() + timeout
        for n in nodes:
            n.wait_serving(max(0.1, deadline - time.monotonic()))
        return self

    def join(self, node_id, extra_args=()):
        """Starts a JoiningNode with node_id, adds it (`qraft cluster add`),
        and returns it once it serves; it is a member of self.nodes from
        then on (and cleaned up with them)."""
        joiner = JoiningNode(node_id, self, self.token, extra_args)
        self.nodes.append(joiner)
        joiner.start(wait=False)
        self.cli("cluster", "add", str(node_id), joiner.raft_addr,
                 "--rpc", joiner.rpc_addr)
        joiner.wait_serving()
        return joiner

    def kill9(self, node):
        node.kill9()
        return node

    def kill9_all(self):
        for n in self.nodes:
            n.kill9()

    def kill_leader(self, timeout=START_TIMEOUT):
        """kill -9 of the current leader; returns that Node."""
        return self.kill9(self.leader(timeout))

    def restart(self, node, kill=False, timeout=START_TIMEOUT):
        """Stops node if it runs (SIGTERM, or SIGKILL with kill), starts it
        again on its data dir and ports, and waits until it serves."""
        if node.running():
            if kill:
                node.kill9()
            else:
                node.terminate()
        node.start(wait=False)
        node.wait_serving(timeout)
        return node

    def tls_args(self, node_id):
        """The TLS flags node node_id gets ([] without TLS): its own
        certificate (bound to its id) and the cluster CA, so mutual TLS on
        the raft and peer RPC ports too."""
        if self.certs is None:
            return []
        cert, key = self.certs.node(node_id)
        return ["--tls-cert", cert, "--tls-key", key, "--tls-ca",
                self.certs.ca]

    def cleanup(self):
        """Kills every node and removes their directories (see
        Node.cleanup). Safe to call more than once."""
        for n in self.nodes:
            n.cleanup()
        if self.certs is not None and os.environ.get("QRAFT_KEEP_TMP") != "1":
            shutil.rmtree(self.certs.dir, ignore_errors=True)

    # Clients.
    def cli(self, *args, endpoints=None, **kwargs):
        """`qraft` with every node's endpoint (see Node.cli)."""
        return self.nodes[0].cli(
            *args, endpoints=endpoints or self.endpoints, **kwargs
        )

    def statuses(self):
        """{node id: status dict or None} of every live node, each asked
        directly."""
        return {n.id: n.try_status() for n in self.live_nodes()}

    # Waiting.
    def leader(self, timeout=START_TIMEOUT):
        """Waits until every live node names the same leader, which is live
        and says it leads; returns that Node."""
        last = {}

        def agreed():
            self.check_not_crashed()
            last.clear()
            last.update(self.statuses())
            if not last or any(s is None for s in last.values()):
                return None
            ids = {s["leader_id"] for s in last.values()}
            if len(ids) != 1:
                return None
            leader_id = ids.pop()
            if leader_id not in last or last[leader_id]["state"] != "leader":
                return None
            return self.node(leader_id)

        def what():
            seen = {
                i: (s and (s["state"], s["leader_id"], s["term"]))
                for i, s in last.items()
            }
            return (
                "the live nodes to agree on a leader; last seen "
                f"{{id: (state, leader_id, term)}} = {seen}{self._log_hint()}"
            )

        return wait_until(agreed, timeout, what, interval=0.1)

    def followers(self, timeout=START_TIMEOUT):
        """The live nodes other than the leader (once one is agreed)."""
        leader = self.leader(timeout)
        return [n for n in self.live_nodes() if n is not leader]

    def wait_ready(self, timeout=START_TIMEOUT):
        """Waits until every live node answers GET /readyz with 200: it
        knows a leader and has applied what it knows committed."""

        def ready():
            self.check_not_crashed()
            return all(n.readyz() == 200 for n in self.live_nodes())

        wait_until(
            ready, timeout, lambda: f"every live node ready{self._log_hint()}"
        )

    def shard_counts(self):
        """{node id: shards it owns} from the leader's `qraft status`."""
        _, out, _ = self.cli("status", "--json")
        return {n["id"]: n["shards"] for n in json.loads(out)["nodes"]}

    def wait_shards_spread(self, ids, what, timeout=60):
        """Waits until each node in ids owns shards and all 256 are owned
        (none being handed over)."""

        def spread():
            self.check_not_crashed()
            counts = self.shard_counts()
            return (all(counts.get(i, 0) > 0 for i in ids) and
                    sum(counts.values()) == 256)

        wait_until(spread, timeout, what)

    def wait_caught_up(self, node, timeout=START_TIMEOUT):
        """Waits until node has applied everything the leader had committed
        when this was called; returns node's last status."""
        target = self.leader(timeout).status()["commit_index"]
        seen = {}

        def caught_up():
            self.check_not_crashed()
            s = node.status()
            seen["applied"] = s["applied_index"]
            return s if s["applied_index"] >= target else None

        return wait_until(
            caught_up,
            timeout,
            lambda: f"{node.name} to apply index {target} (at "
            f"{seen.get('applied')}){node._log_hint()}",
        )

    # Diagnostics.
    def _log_hint(self):
        return "".join(n._log_hint() for n in self.nodes)

    def __repr__(self):
        return f"<Cluster {self.nodes}>"


class Certs:
    """Paths of the PEM files make_certs wrote into dir; node(i) makes node
    i's own certificate on first use."""

    def __init__(self, d, ip="127.0.0.1"):
        self.dir = d
        self.ip = ip
        self.ca = d / "ca.pem"
        self.ca_key = d / "ca.key"
        self.node_cert = d / "node.pem"  # no node id: a lone (dev) node's
        self.node_key = d / "node.key"
        self.other_ca = d / "other-ca.pem"  # a CA that signed nothing here
        self.other_ca_key = d / "other-ca.key"

    def node(self, node_id):
        """(cert, key) of node node_id, bound to its id by the
        subjectAltName URI qraft:node:<id> (docs/operations.md, "Mutual
        TLS"), signed by the cluster CA; made on first use."""
        cert = self.dir / f"node-{node_id}.pem"
        key = self.dir / f"node-{node_id}.key"
        if not cert.exists():
            _openssl_key(key)
            self.sign(key, cert, node_id=node_id)
        return cert, key

    def sign(self, key, out, node_id=None, ca=None, ca_key=None, days=2,
             extra_names=()):
        """Signs a certificate for key into out with ca (default: the
        cluster CA): an IP subjectAltName for self.ip, with node_id the URI
        qraft:node:<id>, and a DNS name for each of extra_names."""
        ca = ca or self.ca
        ca_key = ca_key or self.ca_key
        csr = out.with_suffix(".csr")
        ext = out.with_suffix(".ext")
        san = f"IP:{self.ip}"
        if node_id is not None:
            san += f",URI:qraft:node:{node_id}"
        san += "".join(f",DNS:{name}" for name in extra_names)
        ext.write_text(f"subjectAltName={san}\n"
                       "basicConstraints=critical,CA:FALSE\n"
                       "extendedKeyUsage=serverAuth,clientAuth\n")
        cn = f"qraft node {node_id}" if node_id is not None else "qraft node"
        _openssl("req", "-new", "-key", key, "-subj", f"/CN={cn}",
                 "-out", csr)
        _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
                 "-CAcreateserial", "-days", str(days), "-extfile", ext,
                 "-out", out)
        return out


def _openssl(*args):
    run(["openssl", *args], timeout=60)


def _openssl_key(path):
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-out", path)


def make_certs(d, ip="127.0.0.1"):
    """Makes, with the openssl CLI, a cluster CA, a node certificate for ip
    (an IP subjectAltName: the nodes' RPC addresses are IP:port) bound to
    no node id, and an unrelated CA; per-node certificates come from
    Certs.node(i). Returns a Certs."""
    c = Certs(Path(d), ip)
    for key in (c.ca_key, c.node_key, c.other_ca_key):
        _openssl_key(key)
    _openssl("req", "-x509", "-new", "-key", c.ca_key, "-subj",
             "/CN=qraft test CA", "-days", "2", "-out", c.ca)
    _openssl("req", "-x509", "-new", "-key", c.other_ca_key, "-subj",
             "/CN=another CA", "-days", "2", "-out", c.other_ca)
    c.sign(c.node_key, c.node_cert)
    return c


def start_cluster(testcase=None, n=3, extra_args=(), **kwargs):
    """Starts a Cluster of n nodes and waits until it has a leader and
    every node is ready; with a unittest.TestCase, registers its cleanup."""
    cluster = Cluster(n=n, extra_args=extra_args, **kwargs)
    if testcase is not None:
        testcase.addCleanup(cluster.cleanup)
    try:
        cluster.start()
        cluster.leader()
        cluster.wait_ready()
    except BaseException:
        if testcase is None:
            cluster.cleanup()
        raise
    return cluster


def _clean_env():
    # The developer's QRAFT_* settings must not leak into tests.
    return {k: v for k, v in os.environ.items() if not k.startswith("QRAFT_")}


def run(argv, check=True, stdin=None, timeout=CLI_TIMEOUT):
    """Runs a program to completion; returns (rc, stdout, stderr)."""
    argv = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_clean_env(),
        )
    except subprocess.TimeoutExpired:
        raise HarnessError(
            f"{' '.join(argv[:6])} ... did not finish within {timeout:g}s"
        ) from None
    if check and proc.returncode != 0:
        raise HarnessError(
            f"{' '.join(argv[:8])}{' ...' if len(argv) > 8 else ''} exited "
            f"{proc.returncode}\nstdout: {proc.stdout.strip()}\n"
            f"stderr: {proc.stderr.strip()}"
        )
    return proc.returncode, proc.stdout, proc.stderr


# ---------------------------------------------------------------------------
# Raw RPC: hand-encoded protobuf, enough to send chosen Requests (including
# ones a client library would refuse to build) and read a Response's id,
# status and error. Field numbers follow proto/qraft.proto.

STATUS = {
    0: "OK",
    1: "BAD_REQUEST",
    2: "UNAUTHORIZED",
    3: "NOT_FOUND",
    4: "NOT_LEADER",
    5: "UNAVAILABLE",
    6: "TOO_LARGE",
    7: "INTERNAL",
    8: "CONFLICT",
    9: "UNKNOWN_OUTCOME",
    10: "INSUFFICIENT_STORAGE",
    11: "PERMISSION_DENIED",
}


def pb_varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_uint(field, n):
    return pb_varint(field << 3) + pb_varint(n)


def pb_bytes(field, data):
    if isinstance(data, str):
        data = data.encode()
    return pb_varint(field << 3 | 2) + pb_varint(len(data)) + data


def pb_fields(data):
    """Yields (field, value) of a protobuf message: ints for varints, bytes
    for length-delimited fields; other wire types are skipped."""
    i = 0

    def varint():
        nonlocal i
        shift = value = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            yield field, varint()
        elif wire == 2:
            n = varint()
            yield field, data[i : i + n]
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire}")


def publish_request(url, body=b"", headers=(), retries=None, method=None):
    """Encoded PublishRequest."""
    msg = pb_bytes(1, url)
    if method:
        msg += pb_bytes(2, method)
    for name, value in headers:
        msg += pb_bytes(3, pb_bytes(1, name) + pb_bytes(2, value))
    if body:
        msg += pb_bytes(4, body)
    if retries is not None:
        msg += pb_uint(7, retries) + pb_uint(16, 1)  # retries, retries_set
    return msg


def request(req_id, token, body_field=None, body=b""):
    """Encoded Request; body_field is the oneof's field number (10 publish,
    17 status, ...), None for none."""
    msg = pb_uint(1, req_id) + pb_bytes(2, token)
    if body_field is not None:
        msg += pb_bytes(body_field, body)
    return msg


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


class RawRpc:
    """One TCP connection to a node's RPC port."""

    def __init__(self, addr, timeout=10.0):
        host, _, port = addr.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        """n bytes, or None if the server closed first."""
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def read_response(self):
        """The next Response as a dict {id, status, status_name, error}, or
        None if the server closed the connection."""
        header = self.recv_exact(4)
        if header is None:
            return None
        payload = self.recv_exact(struct.unpack(">I", header)[0])
        if payload is None:
            return None
        resp = {"id": 0, "status": 0, "error": ""}
        for field, value in pb_fields(payload):
            if field == 1:
                resp["id"] = value
            elif field == 2:
                resp["status"] = value
            elif field == 3:
                resp["error"] = value.decode(errors="replace")
        resp["status_name"] = STATUS.get(resp["status"], str(resp["status"]))
        return resp

    def call(self, payload):
        self.send(frame(payload))
        return self.read_response()

    def closed_by_peer(self, timeout):
        """True if the server closes the connection within timeout (any
        frames it sends first are read and dropped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.sock.recv(65536):
                    return True
            except socket.timeout:
                return False
            except ConnectionError:
                return True
        return False
