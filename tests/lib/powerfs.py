"""Drives qraft-powerfs (tools/powerfs): mount a backing dir, power it off,
unmount it. Used by tests/powerfs and jepsen/run --nemesis powerloss.

A PowerFS is one mount at a time: mount() starts the daemon and waits until
the mount point is served; power_off() makes it drop what no fsync covered
and waits until it is gone (the mount point is then a plain empty dir
again); unmount() stops it keeping everything. Every wait has a deadline.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time
import unittest
from pathlib import Path

WAIT_S = 10.0


class PowerFSError(Exception):
    pass


def is_mounted(path):
    """True when path is a mount point (also a dead FUSE one)."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split()[4] == path:
                return True
    return False


def mounts_under(path):
    """The mount points at or below path, deepest first."""
    root = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = line.split()[4]
            if mnt == root or mnt.startswith(root + "/"):
                found.append(mnt)
    return sorted(found, key=len, reverse=True)


def _term_with_parent():
    # PR_SET_PDEATHSIG: a harness killed before its cleanup still gets its
    # mounts unmounted (SIGTERM is the clean unmount).
    ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)


def usable():
    """None when powerfs can run here, else why not (skip reason)."""
    if os.geteuid() != 0:
        return "needs root (FUSE mounts)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return None


class PowerFS:
    def __init__(self, binary, backing, mount, log=None, seed=0, lie=False):
        self.binary = str(binary)
        self.backing = Path(backing)
        self.mount_point = Path(mount)
        self.log = log
        self.seed = seed
        self.lie = lie
        self.proc = None
        self.mounts = 0

    def _wait(self, cond, what):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if cond():
                return
            if self.proc is not None and self.proc.poll() is not None \
                    and what == "mounted":
                break
            time.sleep(0.02)
        raise PowerFSError(f"powerfs {self.mount_point}: not {what} within "
                           f"{WAIT_S:g}s (see {self.log or 'its stderr'})")

    def mount(self, seed=None):
        """Starts serving backing at the mount point (seed: power off's
        choices for this mount; default the one given at construction)."""
        if seed is not None:
            self.seed = seed
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mount_point.mkdir(parents=True, exist_ok=True)
        argv = [self.binary, "--seed", str(self.seed)]
        if self.lie:
            argv.append("--lie")
        if self.log is not None:
            argv += ["--log", str(self.log)]
        argv += [str(self.backing), str(self.mount_point)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     start_new_session=True,
                                     preexec_fn=_term_with_parent)
        self.mounts += 1
        self._wait(lambda: is_mounted(self.mount_point), "mounted")

    def _stop(self, sig):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(WAIT_S)
        self.proc = None
        if is_mounted(self.mount_point):  # the daemon died: a dead mount
            subprocess.run(["umount", "-l", str(self.mount_point)],
                           capture_output=True, timeout=WAIT_S)
        self._wait(lambda: not is_mounted(self.mount_point), "unmounted")

    def power_off(self):
        """Drops every unsynced change (per the seed) and unmounts. Stop
        the programs using the mount first: what they write meanwhile
        fails (ENOTCONN)."""
        self._stop(signal.SIGUSR1)

    def unmount(self):
        """Unmounts keeping everything (a clean shutdown)."""
        self._stop(signal.SIGTERM)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None


def main(binary):
    """unittest.main for a test file that needs powerfs at binary: exits 77
    (skipped, for ctest's SKIP_RETURN_CODE) when it cannot run here, else
    0 or 1."""
    why = usable()
    if why is None and not Path(binary).is_file():
        why = f"no {binary} (set QRAFT_BIN)"
    if why is not None:
        print(f"skipped: {why}")
        sys.exit(77)
    prog = unittest.main(exit=False)
    sys.exit(0 if prog.result.wasSuccessful() else 1)
