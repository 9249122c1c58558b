"""The container and Kubernetes files (deploy/container, deploy/k8s) checked
as far as this machine can without a container engine or a cluster: every
YAML file parses; every flag they give qraftd is one `qraftd --help` lists;
the StatefulSet's shell command, run with a stand-in qraftd, derives the
node id from the pod ordinal and names the raft Service of its own pod; the
Services, ConfigMap, Secret and PDB it relies on exist and select its pods;
compose's nodes agree on --peers and each dials its own fixed address; the
Containerfile copies only files that exist and installs the package of
every library the built binaries link. Needs python3-yaml, readelf, dpkg
and QRAFT_BIN (the built binaries)."""

import json
import os
import re
import shlex
import subprocess
import tempfile
import unittest
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def qraftd():
    return str(Path(os.environ.get("QRAFT_BIN", ROOT / "build" / "bin"))
               / "qraftd")


def help_flags():
    out = subprocess.run([qraftd(), "--help"], capture_output=True,
                         text=True, timeout=30)
    flags = set(FLAG.findall(out.stdout + out.stderr))
    if "--peers" not in flags:
        raise AssertionError(f"qraftd --help lists no flags:\n{out.stdout}")
    return flags


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_objects():
    objs = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for d in docs(path):
            objs[(d["kind"], d["metadata"]["name"]
                  if "metadata" in d else path.name)] = d
    return objs


def argv_value(argv, flag):
    return argv[argv.index(flag) + 1]


class DeployFilesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.flags = help_flags()

    def assert_flags_known(self, argv, where):
        unknown = sorted({a for a in argv if a.startswith("--")}
                         - self.flags)
        self.assertEqual(unknown, [], f"{where}: flags qraftd does not take")

    def test_every_yaml_file_parses(self):
        files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
        self.assertGreaterEqual(len(files), 8)
        for path in files:
            self.assertTrue(docs(path), path)
        for (kind, name), d in k8s_objects().items():
            if kind != "Kustomization":
                self.assertIn("apiVersion", d, name)
                self.assertIn("name", d["metadata"], name)
        kust = docs(DEPLOY / "k8s" / "kustomization.yaml")[0]
        for res in kust["resources"]:
            self.assertTrue((DEPLOY / "k8s" / res).is_file(), res)

    def statefulset_argv(self, objs, pod_name):
        """The argv the StatefulSet's command gives qraftd in pod_name, run
        through sh with a qraftd that prints its arguments."""
        sts = objs[("StatefulSet", "qraft")]
        c = sts["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(c["command"][:2], ["/bin/sh", "-c"])
        env = {"PATH": "", "POD_NAME": pod_name, "POD_IP": "10.1.2.3"}
        cm = objs[("ConfigMap", c["envFrom"][0]["configMapRef"]["name"])]
        env.update(cm["data"])
        with tempfile.TemporaryDirectory() as d:
            stub = Path(d) / "qraftd"
            stub.write_text('#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n')
            stub.chmod(0o755)
            env["PATH"] = f"{d}:/usr/bin:/bin"
            out = subprocess.run(["/bin/sh", "-c", c["args"][0]], env=env,
                                 capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout.splitlines()

    def test_statefulset(self):
        objs = k8s_objects()
        sts = objs[("StatefulSet", "qraft")]
        spec = sts["spec"]
        pod = spec["template"]
        labels = pod["metadata"]["labels"]
        self.assertEqual(spec["selector"]["matchLabels"], labels)
        self.assertEqual(spec["podManagementPolicy"], "Parallel")
        headless = objs[("Service", spec["serviceName"])]
        self.assertEqual(headless["spec"]["clusterIP"], "None")
        c = pod["spec"]["containers"][0]
        self.assertEqual(c["readinessProbe"]["httpGet"]["path"], "/readyz")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        for ref in c["env"]:
            secret = ref.get("valueFrom", {}).get("secretKeyRef")
            if secret:
                self.assertIn(secret["key"],
                              objs[("Secret", secret["name"])]["stringData"])
        mounts = {m["name"] for m in c["volumeMounts"]}
        self.assertEqual(
            mounts, {v["metadata"]["name"]
                     for v in spec["volumeClaimTemplates"]})

        peers = None
        for ordinal in range(spec["replicas"]):
            pod_name = f"qraft-{ordinal}"
            argv = self.statefulset_argv(objs, pod_name)
            self.assert_flags_known(argv, f"StatefulSet ({pod_name})")
            self.assertEqual(argv_value(argv, "--id"), str(ordinal + 1))
            self.assertEqual(argv_value(argv, "--rpc"),
                             f"10.1.2.3:{ports['rpc']}")
            raft_host, raft_port = argv_value(argv, "--raft").split(":")
            self.assertEqual(int(raft_port), ports["raft"])
            self.assertEqual(argv_value(argv, "--raft-bind"),
                             f"0.0.0.0:{raft_port}")
            svc = objs[("Service", raft_host)]
            self.assertEqual(
                svc["spec"]["selector"],
                {"statefulset.kubernetes.io/pod-name": pod_name})
            self.assertTrue(svc["spec"]["publishNotReadyAddresses"])
            peers = argv_value(argv, "--peers")
            self.assertIn(f"{ordinal + 1}@{raft_host}:{raft_port}",
                          peers.split(","))
        self.assertEqual(len(peers.split(",")), spec["replicas"])
        self.assertNotIn("--join", argv)
        # A pod added later (scaled up) waits to be added.
        argv = self.statefulset_argv(objs, f"qraft-{spec['replicas']}")
        self.assertIn("--join", argv)
        self.assertEqual(argv_value(argv, "--id"), str(spec["replicas"] + 1))

        pdb = objs[("PodDisruptionBudget", "qraft")]
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"], labels)
        self.assertEqual(pdb["spec"]["maxUnavailable"], 1)
        client = objs[("Service", "qraft")]
        self.assertEqual(client["spec"]["selector"], labels)

    def test_compose(self):
        compose = docs(DEPLOY / "container" / "compose.yaml")[0]
        self.assertTrue((DEPLOY / "container" / compose["x-qraft"]["build"]
                         ["dockerfile"].split("/")[-1]).is_file())
        peers = set()
        ids = set()
        for name, svc in compose["services"].items():
            argv = [str(a) for a in svc["command"]]
            self.assert_flags_known(argv, f"compose {name}")
            ip = svc["networks"]["qraft"]["ipv4_address"]
            self.assertEqual(argv_value(argv, "--raft").split(":")[0], ip)
            self.assertEqual(argv_value(argv, "--rpc").split(":")[0], ip)
            self.assertIn(ip, svc["environment"]["QRAFT_HEALTH_URL"])
            peers.add(argv_value(argv, "--peers"))
            ids.add(argv_value(argv, "--id"))
            self.assertIn(f"{argv_value(argv, '--id')}@"
                          f"{argv_value(argv, '--raft')}",
                          argv_value(argv, "--peers").split(","))
        self.assertEqual(len(peers), 1)
        self.assertEqual(len(ids), len(compose["services"]))

    def test_containerfile(self):
        text = (DEPLOY / "container" / "Containerfile").read_text()
        logical = re.sub(r"\\\n", " ", text)
        lines = [ln.strip() for ln in logical.splitlines()
                 if ln.strip() and not ln.strip().startswith("#")]
        copies = 0
        for ln in lines:
            if ln.startswith("COPY ") and "--from=" not in ln:
                for src in shlex.split(ln)[1:-1]:
                    self.assertTrue((ROOT / src).exists(), ln)
                    copies += 1
        self.assertGreater(copies, 3)
        # The build stage copies every directory the top-level CMakeLists
        # adds outside the tests (a new one, like tools/ or console/, must
        # reach the image too).
        top = (ROOT / "CMakeLists.txt").read_text()
        top = top.split("if(BUILD_TESTING)", 1)[0]
        copied = {Path(src).parts[0] for ln in lines
                  if ln.startswith("COPY ") and "--from=" not in ln
                  for src in shlex.split(ln)[1:-1]}
        for sub in re.findall(r"^add_subdirectory\((\w+)\)", top, re.M):
            self.assertIn(sub, copied, f"{sub}/ is built but not copied")
        for sub in re.findall(r"\$\{CMAKE_SOURCE_DIR\}/(\w+)",
                              (ROOT / "node" / "CMakeLists.txt").read_text()):
            self.assertIn(sub, copied, f"node/ builds from {sub}/: copy it")
        self.assertIn("USER qraft", lines)
        self.assertTrue(any(ln.startswith("HEALTHCHECK") for ln in lines))
        self.assertTrue(any(re.match(r"ENV QRAFT_HEALTH_URL=\S+/healthz$", ln)
                            for ln in lines))
        self.assertTrue(any(ln.startswith("VOLUME /var/lib/qraft")
                            for ln in lines))
        cmd = next(ln for ln in lines if ln.startswith("CMD "))
        self.assert_flags_known(json.loads(cmd[4:]), "Containerfile CMD")
        # The runtime stage installs the Debian package of every library
        # the built binaries link directly (libc6 is in the base image).
        runtime = logical.split("FROM ${DEBIAN_IMAGE}\n", 1)[-1]
        needed = {}  # soname -> the binary that links it
        for binary in ("qraftd", "qraft"):
            path = Path(qraftd()).parent / binary
            elf = subprocess.run(["readelf", "-d", str(path)],
                                 capture_output=True, text=True, timeout=30)
            self.assertEqual(elf.returncode, 0, elf.stderr)
            for soname in re.findall(r"\(NEEDED\).*\[(\S+)\]", elf.stdout):
                needed.setdefault(soname, binary)
        # One dpkg -S for all (each call reads the whole database).
        owners = subprocess.run(
            ["dpkg", "-S"] + [f"*-linux-gnu/{so}" for so in needed],
            capture_output=True, text=True, timeout=120).stdout
        for soname, binary in needed.items():
            # This machine's architecture's copy (libc6, not libc6-i386).
            pkgs = {pkg.strip().split(":")[0]
                    for ln in owners.splitlines()
                    if ln.endswith(f"/{soname}") and "-linux-gnu/" in ln
                    and "i386" not in ln.split(":")[0]
                    for pkg in ln.rsplit(": ", 1)[0].split(",")}
            self.assertEqual(len(pkgs), 1, f"{soname}: owners {pkgs}")
            pkg = pkgs.pop()
            if pkg == "libc6":
                continue
            self.assertRegex(runtime,
                             rf"(?<![\w.-]){re.escape(pkg)}(?![\w.-])",
                             f"{binary} links {soname} ({pkg}): not "
                             f"installed by the Containerfile's runtime stage")

if __name__ == "__main__":
    unittest.main()
