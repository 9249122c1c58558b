"""qraft-powerfs's own tests: what survives its power off and what not.

Each test mounts a fresh backing dir, makes changes through the mount the
way raft and LMDB do (write + fsync/fdatasync, O_DSYNC, RWF_DSYNC, shared
writable mmap + msync, rename + directory fsync), powers it off and checks
the backing dir. Needs root and /dev/fuse: exits 77 (skipped) otherwise.

    QRAFT_BIN=build/bin python3 tests/powerfs/test_powerfs.py
"""

import ctypes
import fcntl
import mmap
import os
import struct
import sys
import tempfile
import unittest
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from powerfs import PowerFS, is_mounted, main  # noqa: E402

PAGE = 4096
BIN = Path(os.environ.get("QRAFT_BIN", "build/bin")) / "qraft-powerfs"


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path, data, sync=True, flags=0):
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | flags, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def aio_write_dsync(fd, buf, off):
    """One Linux AIO write with RWF_DSYNC, as raft 0.22.1 writes its
    segments (io_setup/io_submit/io_getevents, x86-64 syscall numbers).
    Returns the write's result (bytes or -errno)."""
    libc = ctypes.CDLL(None, use_errno=True)
    io_setup, io_destroy, io_getevents, io_submit = 206, 207, 208, 209
    rwf_dsync, iocb_cmd_pwrite = 2, 1
    ctx = ctypes.c_ulong(0)
    if libc.syscall(io_setup, 1, ctypes.byref(ctx)) != 0:
        raise OSError(ctypes.get_errno(), "io_setup")
    try:
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        iocb = ctypes.create_string_buffer(struct.pack(
            "<QIiHhIQQqQII", 0, 0, rwf_dsync, iocb_cmd_pwrite, 0, fd, addr,
            len(buf), off, 0, 0, 0))
        ptrs = (ctypes.c_void_p * 1)(ctypes.addressof(iocb))
        if libc.syscall(io_submit, ctx, 1, ptrs) != 1:
            raise OSError(ctypes.get_errno(), "io_submit")
        event = ctypes.create_string_buffer(32)
        if libc.syscall(io_getevents, ctx, 1, 1, event, None) != 1:
            raise OSError(ctypes.get_errno(), "io_getevents")
        return struct.unpack("<QQqq", event.raw)[2]
    finally:
        libc.syscall(io_destroy, ctx)


class PowerFSCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="powerfs-")
        root = Path(self.tmp.name)
        self.backing = root / "backing"
        self.log = root / "powerfs.log"
        self.fs = PowerFS(BIN, self.backing, root / "mnt", log=self.log)
        self.fs.mount()
        self.m = self.fs.mount_point

    def tearDown(self):
        if self.fs.running:
            self.fs.unmount()
        self.tmp.cleanup()

    def remount(self, seed=0, lie=False):
        self.fs.lie = lie
        if self.fs.running:
            self.fs.unmount()
        self.fs.mount(seed=seed)

    def backing_file(self, name):
        p = self.backing / name
        return p.read_bytes() if p.exists() else None

    def test_a_synced_file_survives(self):
        write_file(self.m / "f", b"durable")
        fsync_dir(self.m)
        self.fs.power_off()
        self.assertEqual(self.backing_file("f"), b"durable")

    def test_an_unsynced_write_is_lost(self):
        write_file(self.m / "f", b"A" * PAGE)
        fsync_dir(self.m)
        fd = os.open(self.m / "f", os.O_WRONLY)
        os.pwrite(fd, b"B" * 100, 10)         # overwrite
        os.pwrite(fd, b"C" * PAGE, PAGE)      # append
        os.close(fd)
        self.assertEqual(len((self.m / "f").read_bytes()), 2 * PAGE)
        self.fs.power_off()
        self.assertEqual(self.backing_file("f"), b"A" * PAGE)
        self.assertIn("dropped 2", self.log.read_text())

    def test_an_unsynced_write_may_be_torn_at_a_page(self):
        """With a seed, a file keeps a prefix of its unsynced writes, the
        next one maybe torn at a page boundary: never anything else."""
        old, new = b"a" * (4 * PAGE), b"b" * (4 * PAGE)
        seen = set()
        for seed in range(1, 25):
            self.remount(seed=seed)
            write_file(self.m / "f", old)
            fsync_dir(self.m)
            write_file(self.m / "f", new, sync=False)
            self.fs.power_off()
            got = self.backing_file("f")
            self.assertEqual(len(got), 4 * PAGE)
            kept = len(got) - len(got.lstrip(b"b"))
            self.assertEqual(kept % PAGE, 0, f"seed {seed}: torn mid-page")
            self.assertEqual(got[kept:], old[kept:], f"seed {seed}")
            seen.add(kept // PAGE)
        self.assertIn(0, seen)          # lost
        self.assertIn(4, seen)          # reached the disk
        self.assertTrue(seen & {1, 2, 3}, f"never torn: {seen}")

    def test_o_dsync_and_rwf_dsync_writes_survive(self):
        write_file(self.m / "d", b"dsync", sync=False, flags=os.O_DSYNC)
        fd = os.open(self.m / "r", os.O_CREAT | os.O_WRONLY, 0o644)
        os.pwritev(fd, [b"rwf"], 0, os.RWF_DSYNC)
        os.close(fd)
        fsync_dir(self.m)
        self.fs.power_off()
        self.assertEqual(self.backing_file("d"), b"dsync")
        self.assertEqual(self.backing_file("r"), b"rwf")

    def test_o_direct_writes_with_fdatasync_survive(self):
        buf = mmap.mmap(-1, PAGE)  # page-aligned, as O_DIRECT wants
        buf.write(b"x" * PAGE)
        fd = os.open(self.m / "o", os.O_CREAT | os.O_WRONLY | os.O_DIRECT,
                     0o644)
        os.write(fd, buf)
        os.fdatasync(fd)
        os.write(fd, buf)  # not synced
        os.close(fd)
        fsync_dir(self.m)
        self.fs.power_off()
        self.assertEqual(self.backing_file("o"), b"x" * PAGE)

    def test_aio_o_direct_rwf_dsync_writes_survive(self):
        """raft's segment writes: O_DIRECT set by fcntl after the open,
        then io_submit with RWF_DSYNC and no fsync."""
        buf = mmap.mmap(-1, PAGE)
        buf.write(b"r" * PAGE)
        fd = os.open(self.m / "seg", os.O_CREAT | os.O_WRONLY, 0o644)
        os.posix_fallocate(fd, 0, 4 * PAGE)
        os.fsync(fd)
        fsync_dir(self.m)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
        self.assertEqual(aio_write_dsync(fd, buf, PAGE), PAGE)
        os.pwrite(fd, bytes(buf), 2 * PAGE)  # no RWF_DSYNC: not synced
        os.close(fd)
        self.fs.power_off()
        got = self.backing_file("seg")
        self.assertEqual(got[PAGE:2 * PAGE], b"r" * PAGE)
        self.assertEqual(got[2 * PAGE:3 * PAGE], b"\0" * PAGE)

    def test_shared_mmap_writes_need_msync(self):
        write_file(self.m / "map", b"\0" * (2 * PAGE))
        fsync_dir(self.m)
        fd = os.open(self.m / "map", os.O_RDWR)
        mm = mmap.mmap(fd, 2 * PAGE, mmap.MAP_SHARED)
        mm[0:5] = b"synced"[:5]
        mm.flush(0, PAGE)                  # msync(MS_SYNC)
        mm[PAGE:PAGE + 5] = b"lost!"
        mm.close()
        os.close(fd)
        self.fs.power_off()
        got = self.backing_file("map")
        self.assertEqual(got[:5], b"synce")
        self.assertEqual(got[PAGE:PAGE + 5], b"\0" * 5)

    def test_a_rename_needs_a_directory_fsync(self):
        write_file(self.m / "old", b"1")
        fsync_dir(self.m)
        write_file(self.m / "tmp", b"2")   # file synced, directory not
        os.rename(self.m / "tmp", self.m / "old")
        self.fs.power_off()
        self.assertEqual(self.backing_file("old"), b"1")
        self.assertIsNone(self.backing_file("tmp"))  # its create is undone

        self.remount()
        write_file(self.m / "tmp", b"3")
        os.rename(self.m / "tmp", self.m / "old")
        fsync_dir(self.m)
        self.fs.power_off()
        self.assertEqual(self.backing_file("old"), b"3")
        self.assertIsNone(self.backing_file("tmp"))

    def test_unsynced_creates_and_unlinks_are_undone(self):
        os.mkdir(self.m / "sub")
        fsync_dir(self.m)
        write_file(self.m / "sub" / "keep", b"k")
        fsync_dir(self.m / "sub")
        write_file(self.m / "sub" / "new", b"n")
        os.unlink(self.m / "sub" / "keep")
        self.assertEqual(sorted(os.listdir(self.m / "sub")), ["new"])
        self.assertEqual(os.listdir(self.m), ["sub"])  # the trash is hidden
        self.fs.power_off()
        self.assertEqual(sorted(os.listdir(self.backing / "sub")), ["keep"])
        self.assertEqual(self.backing_file("sub/keep"), b"k")

    def test_a_truncate_is_undone(self):
        write_file(self.m / "t", b"0123456789")
        fsync_dir(self.m)
        os.truncate(self.m / "t", 3)
        fd = os.open(self.m / "t", os.O_WRONLY)
        os.posix_fallocate(fd, 0, 3 * PAGE)
        os.close(fd)
        self.fs.power_off()
        self.assertEqual(self.backing_file("t"), b"0123456789")

    def test_a_lying_fsync_keeps_nothing(self):
        self.remount(lie=True)
        write_file(self.m / "f", b"acked")
        fsync_dir(self.m)
        self.fs.power_off()
        self.assertIsNone(self.backing_file("f"))

    def test_after_power_off_io_fails(self):
        fd = os.open(self.m / "f", os.O_CREAT | os.O_WRONLY, 0o644)
        self.fs.power_off()
        with self.assertRaises(OSError):
            os.write(fd, b"too late")
        try:
            os.close(fd)
        except OSError:
            pass  # ENOTCONN: the connection is gone
        self.assertFalse(is_mounted(self.m))


if __name__ == "__main__":
    main(BIN)
