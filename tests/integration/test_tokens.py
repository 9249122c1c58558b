"""Scoped API tokens (docs/api.md, "Authentication and scopes";
docs/operations.md, "API tokens").

The scope table test takes the routes and kinds from `qraftd
--print-scopes`, which walks the REST route table and the protocol's
Request.body itself and looks each up in the one scope table (a route or
kind without a row prints "missing" and fails the test). For every REST
route and method and every RPC kind it checks that a token with the scope
is not refused for auth reasons and a token without it is refused (403 /
PERMISSION_DENIED naming the scope); a 403 also names the route's pattern,
which proves the request reached the row it was meant for. docs/api.md
must list the same table."""

import os
import re
import signal
import subprocess
import unittest
from pathlib import Path

import http_sink
import qraft_harness as qh

SECRETS = {
    "pub": ("publish", "pub-secret-0123456789"),
    "rd": ("read", "read-secret-0123456789"),
    "adm": ("admin", "admin-secret-0123456789"),
}
PERMISSION_DENIED = "PERMISSION_DENIED"


def token_file_text(tokens):
    lines = ["# test tokens: NAME SCOPES SECRET"]
    for name, (scopes, secret) in tokens.items():
        lines.append(f"{name} {scopes} {secret}")
    return "\n".join(lines) + "\n"


def print_scopes():
    """[(face, ...)] from qraftd --print-scopes: ("rest", method, pattern,
    scope) and ("rpc", kind, scope, field)."""
    out = subprocess.run(
        [str(qh.binary("qraftd")), "--print-scopes"],
        capture_output=True, text=True, timeout=qh.CLI_TIMEOUT, check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if parts[0] == "rest":
            rows.append(("rest", parts[1], parts[2], parts[3]))
        else:
            rows.append(("rpc", parts[1], parts[2], int(parts[3])))
    return rows


class TokenNode:
    """A --dev node with a token file next to it."""

    def __init__(self, testcase, tokens, extra_args=()):
        self.dir = Path(qh.tempfile.mkdtemp(prefix="qraft-tokens-"))
        testcase.addCleanup(qh.shutil.rmtree, self.dir, True)
        self.path = self.dir / "tokens"
        self.write(tokens)
        self.node = qh.DevNode(
            extra_args=["--token-file", self.path, *extra_args])
        testcase.addCleanup(self.node.cleanup)

    def write(self, tokens):
        """Replaces the file at once, as the runbook says (rename)."""
        text = tokens if isinstance(tokens, str) else token_file_text(tokens)
        tmp = self.dir / "tokens.new"
        tmp.write_text(text)
        os.replace(tmp, self.path)


def concrete_path(pattern, sink):
    """A path the route with this pattern (and no earlier one) matches."""
    if pattern.endswith("{*}"):
        if pattern in ("/v2/publish/{*}", "/v2/enqueue/{*}"):
            rest = sink.url("/tok")
        elif pattern == "/v2/schedules/{*}":
            rest = "not-a/url"  # no URL, more than one segment
        else:
            rest = "tok-x"
        return pattern[:-3] + rest
    return (pattern.replace("{id}", "tok-x").replace("{queue}", "tokq")
            .replace("{url}", sink.url("/tok")))


class ScopeTableTest(unittest.TestCase):
    def test_every_route_and_kind_has_a_scope(self):
        rows = print_scopes()
        self.assertTrue(any(r[0] == "rest" for r in rows))
        self.assertTrue(any(r[0] == "rpc" for r in rows))
        missing = [r for r in rows if "missing" in r]
        self.assertEqual(missing, [], "routes or kinds without a scope row")

    def test_docs_list_the_table(self):
        """docs/api.md shows the table the node enforces, row for row."""
        doc = (qh.REPO / "docs" / "api.md").read_text()
        missing = []
        for row in print_scopes():
            if row[0] == "rest":
                want = f"| `{row[1]}` | `{row[2]}` | {row[3]} |"
            else:
                want = f"| `{row[1]}` ({row[3]}) | {row[2]} |"
            if want not in doc:
                missing.append(want)
        self.assertEqual(missing, [], "rows docs/api.md lacks")

    def test_scopes_enforced_on_every_route_and_kind(self):
        sink = http_sink.start_sink(self)
        tn = TokenNode(self, SECRETS)
        tn.node.start()
        node = tn.node
        rows = print_scopes()

        for face, *row in rows:
            if face != "rest":
                continue
            method, pattern, scope = row
            path = concrete_path(pattern, sink)
            if scope == "none":
                for m in ("POST", "GET"):
                    status, _, body = qh.http_call(node.http_addr, m, path)
                    self.assertNotIn(status, (401, 403), (m, path, body))
                continue
            for name, (has, secret) in SECRETS.items():
                with self.subTest(method=method, pattern=pattern, token=name):
                    status, _, body = qh.http_call(
                        node.http_addr, method, path, body=b"{}",
                        headers={"Content-Type": "application/json"},
                        token=secret)
                    if has == scope:
                        self.assertNotIn(status, (401, 403), body)
                    else:
                        self.assertEqual(status, 403, body)
                        self.assertIn(f"'{scope}' scope", body["error"])
                        self.assertIn(f"{method} {pattern} ", body["error"])
                        self.assertIn(f"token '{name}'", body["error"])
            # The --token token has every scope.
            status, _, body = qh.http_call(
                node.http_addr, method, path, body=b"{}",
                headers={"Content-Type": "application/json"},
                token=node.token)
            self.assertNotIn(status, (401, 403), (method, path, body))
            # An unknown token is 401, not 403.
            status, _, _ = qh.http_call(node.http_addr, method, path,
                                        token="not-a-token-at-all")
            self.assertEqual(status, 401, (method, path))

        with qh.RawRpc(node.rpc_addr) as rpc:
            req_id = 0
            for face, *row in rows:
                if face != "rpc":
                    continue
                kind, scope, field = row
                for name, (has, secret) in SECRETS.items():
                    req_id += 1
                    with self.subTest(kind=kind, token=name):
                        resp = rpc.call(qh.request(req_id, secret, field))
                        if scope == "peer":
                            # Only the peer token: no API token gets there.
                            self.assertEqual(resp["status_name"],
                                             "UNAUTHORIZED", resp)
                        elif has == scope:
                            self.assertNotIn(
                                resp["status_name"],
                                ("UNAUTHORIZED", PERMISSION_DENIED), resp)
                        else:
                            self.assertEqual(resp["status_name"],
                                             PERMISSION_DENIED, resp)
                            self.assertIn(f"a {kind} request", resp["error"])
                            self.assertIn(f"'{scope}' scope", resp["error"])
                req_id += 1
                resp = rpc.call(qh.request(req_id, "not-a-token-at-all",
                                           field))
                self.assertEqual(resp["status_name"], "UNAUTHORIZED", resp)

    def test_cli_reports_a_missing_scope(self):
        tn = TokenNode(self, SECRETS)
        tn.node.start()
        rc, out, err = tn.node.cli("dlq", "ls", token=SECRETS["pub"][1],
                                   check=False)
        self.assertEqual(rc, 5, (out, err))
        self.assertIn("'read' scope", err)
        rc, out, err = tn.node.cli("dlq", "ls", token=SECRETS["rd"][1],
                                   check=False)
        self.assertEqual(rc, 0, (out, err))


class ReloadTest(unittest.TestCase):
    def wait_log(self, node, needle, after=0):
        def seen():
            text = node.stderr_path.read_text(errors="replace")
            return text.count(needle) > after

        qh.wait_until(seen, 10, f"'{needle}' in the log")

    def status(self, node, secret):
        status, _, _ = qh.http_call(node.http_addr, "GET", "/v2/dlq",
                                    token=secret)
        return status

    def test_sighup_rotates_tokens(self):
        tn = TokenNode(self, {"old": ("read", "old-secret-0123456789")})
        tn.node.start()
        node = tn.node
        self.assertEqual(self.status(node, "old-secret-0123456789"), 200)
        self.assertEqual(self.status(node, "new-secret-0123456789"), 401)

        # The new token works and the removed one is refused, no restart.
        tn.write({"new": ("read", "new-secret-0123456789"),
                  "pub": ("publish", "pub-secret-0123456789")})
        node.proc.send_signal(signal.SIGHUP)
        self.wait_log(node, "SIGHUP: 3 API tokens loaded")
        self.assertEqual(self.status(node, "new-secret-0123456789"), 200)
        self.assertEqual(self.status(node, "old-secret-0123456789"), 401)
        self.assertEqual(self.status(node, "pub-secret-0123456789"), 403)
        self.assertEqual(self.status(node, node.token), 200)  # --token stays

        # A bad file keeps the tokens as they were and says which line.
        tn.write("new read new-secret-0123456789\n"
                 "broken publish,reed broken-secret-0123456789\n")
        node.proc.send_signal(signal.SIGHUP)
        self.wait_log(node, "token file not reloaded")
        log = node.stderr_path.read_text(errors="replace")
        line = [ln for ln in log.splitlines()
                if "token file not reloaded" in ln][-1]
        self.assertIn("ERROR", line)
        self.assertIn(f"{tn.path}:2: the scopes must be", line)
        self.assertNotIn("broken-secret", log)
        self.assertEqual(self.status(node, "new-secret-0123456789"), 200)
        self.assertEqual(self.status(node, "pub-secret-0123456789"), 403)
        self.assertTrue(node.running())

        # So does a file that is gone.
        tn.path.unlink()
        node.proc.send_signal(signal.SIGHUP)
        self.wait_log(node, "token file not reloaded", after=1)
        self.assertEqual(self.status(node, "new-secret-0123456789"), 200)
        # A clean stop after reloads (a sanitizer build would report a
        # leaked table here).
        self.assertEqual(node.terminate(), 0)
        self.assertNotIn("Sanitizer", node.stderr_path.read_text(
            errors="replace"))


class BadTokenFileTest(unittest.TestCase):
    def start_refused(self, text, *extra):
        tn = TokenNode(self, text, extra_args=extra)
        tn.node.start(wait=False)
        rc = tn.node.proc.wait(timeout=qh.START_TIMEOUT)
        err = tn.node.stderr_path.read_text(errors="replace")
        self.assertEqual(rc, 1, err)
        self.assertNotIn("Sanitizer", err)
        return tn, err

    def test_bad_line_refuses_to_start(self):
        cases = [
            ("ok read ok-secret-0123456789\nlonely\n", 2, "expected 3 fields"),
            ("# c\n\nx adminn x-secret-0123456789\n", 3, "the scopes must be"),
            ("x read short\n", 1, "the secret is 5 characters long"),
            ("a read a-secret-0123456789\na admin b-secret-0123456789\n", 2,
             "the name 'a' is used twice"),
            ("a read a-secret-0123456789\nb admin a-secret-0123456789\n", 2,
             "the same secret as token 'a'"),
            ("bad/name read c-secret-0123456789\n", 1, "the name must be"),
        ]
        for text, line, why in cases:
            with self.subTest(why=why):
                tn, err = self.start_refused(text)
                self.assertIn(f"{tn.path}:{line}: {why}", err)
                for secret in re.findall(r"\S+-secret-\S+|short", text):
                    self.assertNotIn(secret, err)

    def test_empty_file_refuses_to_start(self):
        tn, err = self.start_refused("# nothing yet\n")
        self.assertIn(f"{tn.path}: no tokens", err)

    def test_peer_token_secret_in_the_file_is_refused(self):
        tn, err = self.start_refused(
            "n publish same-as-peer-0123456789\n",
            "--peer-token", "same-as-peer-0123456789")
        self.assertIn("token 'n' has the peer token's secret", err)


if __name__ == "__main__":
    unittest.main()
