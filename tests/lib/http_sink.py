"""A scriptable HTTP sink: the destination that delivery tests point
messages at. Python 3 standard library only.

It records every request (method, path, headers, body, arrival time) and
answers each path from a script: a list of Replies used in order, the last
one repeating. A path without a script gets DEFAULT (200, empty body).

In a test:

    with HttpSink() as sink:
        sink.script("/flaky", Reply(500), Reply(429, {"Retry-After": "1"}),
                    Reply(200))
        sink.script("/dead", Reply(489, {"Upstash-NonRetryable-Error": "true"}))
        sink.script("/hang", Reply(hang=True))      # never answers
        sink.script("/slow", Reply(delay_s=5))      # answers after 5 s
        ... publish to sink.url("/flaky") ...
        reqs = sink.wait_for(3, path="/flaky", timeout=30)

From a shell (one JSON line per request on stdout):

    python3 tests/lib/http_sink.py --port 9000 \
        --reply '/flaky=500' --reply '/flaky=200' --reply '/dead=489'
"""

import argparse
import base64
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """How to answer one request. hang: never answer (the connection is held
    until the sink stops); delay_s: wait this long first."""

    status: int = 200
    headers: dict = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0
    hang: bool = False


DEFAULT = Reply()


@dataclass
class Request:
    method: str
    path: str  # with the query string, as sent
    headers: list  # [(name, value)] in order; see header()
    body: bytes
    time: float  # time.time() at arrival (headers and body read)

    def header(self, name, default=None):
        """First value of a header, case-insensitively."""
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return default

    def to_json(self):
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body_b64": base64.b64encode(self.body).decode(),
            "time": self.time,
        }


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) drops the SYNs of a node opening its
    # 32 delivery connections at once; each retry then waits 1 s, 3 s, 7 s.
    request_queue_size = 256


class HttpSink:
    """Threaded HTTP/1.1 server on host:port (port 0: any free port)."""

    def __init__(self, host="127.0.0.1", port=0, on_request=None):
        self._lock = threading.Condition()
        self._scripts = {}  # path -> [Reply]; served in order, last repeats
        self._served = {}  # path -> how many requests got a reply
        self._requests = []
        self._stopping = threading.Event()
        self._on_request = on_request
        self._server = _Server((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = None

    # Lifecycle.
    def start(self):
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="http-sink", daemon=True
        )
        self._thread.start()
        return self

    def stop(self):
        """Stops serving and releases hanging requests. Safe to call twice."""
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def port(self):
        return self._server.server_address[1]

    def url(self, path="/"):
        host = self._server.server_address[0]
        return f"http://{host}:{self.port}{path}"

    # Script and records.
    def script(self, path, *replies):
        """Answers requests to path (query string excluded) with replies,
        in order; the last one repeats."""
        if not replies:
            raise ValueError("script needs at least one Reply")
        with self._lock:
            self._scripts[path] = list(replies)
            self._served[path] = 0

    def requests(self, path=None):
        """Requests received so far (to path only, if given), oldest first."""
        with self._lock:
            return [r for r in self._requests if path is None or _bare(r.path) == path]

    def wait_for(self, count, path=None, timeout=30.0):
        """Waits until at least count requests (to path) arrived; returns
        them. Raises AssertionError at the deadline."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                got = [r for r in self._requests if path is None or _bare(r.path) == path]
                if len(got) >= count:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"sink: {len(got)} of {count} requests to "
                        f"{path or 'any path'} after {timeout:g}s"
                    )
                self._lock.wait(left)

    def clear(self):
        with self._lock:
            self._requests.clear()

    # Called by the handler threads.
    def _record(self, req):
        with self._lock:
            self._requests.append(req)
            path = _bare(req.path)
            replies = self._scripts.get(path)
            if replies is None:
                reply = DEFAULT
            else:
                reply = replies[min(self._served[path], len(replies) - 1)]
                self._served[path] += 1
            self._lock.notify_all()
        if self._on_request is not None:
            self._on_request(req)
        return reply



def quiet_disconnects(sink):
    """A killed node drops the connections its deliveries were using; the
    sink's answers to them then fail to send. That is expected in tests
    that kill nodes: keep those tracebacks out of the log (other errors
    still print). Returns sink."""
    server = sink._server
    default = server.handle_error

    def handle_error(request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            default(request, client_address)
    server.handle_error = handle_error
    return sink

def start_sink(testcase=None, **kwargs):
    """Starts an HttpSink (kwargs as for HttpSink); with a unittest.TestCase,
    registers its stop as a cleanup."""
    sink = HttpSink(**kwargs).start()
    if testcase is not None:
        testcase.addCleanup(sink.stop)
    return sink


def _bare(path):
    return path.split("?", 1)[0]


def _make_handler(sink):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as delivery clients use

        def _handle(self):
            body = self._read_body()
            req = Request(
                method=self.command,
                path=self.path,
                headers=list(self.headers.items()),
                body=body,
                time=time.time(),
            )
            reply = sink._record(req)
            if reply.hang:
                sink._stopping.wait()
                self.close_connection = True
                return
            if reply.delay_s and sink._stopping.wait(reply.delay_s):
                self.close_connection = True
                return
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, str(value))
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)

        def _read_body(self):
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle
        do_OPTIONS = _handle

        def log_message(self, fmt, *args):
            pass  # quiet: tests read the records instead

    return Handler


def _parse_reply(spec):
    """'PATH=STATUS[,Header:Value...][,delay=S][,hang]' -> (path, Reply)."""
    path, _, rest = spec.partition("=")
    parts = rest.split(",")
    reply = Reply(status=int(parts[0]))
    for part in parts[1:]:
        if part == "hang":
            reply.hang = True
        elif part.startswith("delay="):
            reply.delay_s = float(part[len("delay="):])
        else:
            name, _, value = part.partition(":")
            reply.headers[name.strip()] = value.strip()
    return path, reply


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Scriptable HTTP sink: records requests as JSON lines."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--reply",
        action="append",
        default=[],
        metavar="PATH=STATUS[,Header:Value][,delay=S][,hang]",
        help="append a reply to PATH's script (repeatable, used in order)",
    )
    args = parser.parse_args(argv)

    def show(req):
        print(json.dumps(req.to_json()), flush=True)

    sink = HttpSink(args.host, args.port, on_request=show)
    scripts = {}
    for spec in args.reply:
        path, reply = _parse_reply(spec)
        scripts.setdefault(path, []).append(reply)
    for path, replies in scripts.items():
        sink.script(path, *replies)
    print(f"http-sink listening on {sink.url()}", file=sys.stderr, flush=True)
    sink.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
