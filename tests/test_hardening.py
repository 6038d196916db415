"""Least privilege, checked from inside real containers (an escape battery).

Each check runs a probe in a container through the public API and asserts the
denial; where a knob exists, a variant (``seccomp="unconfined"``, ``cap_add``)
proves that the probe itself can succeed, so a denial is really the hardening
and not a broken probe. Probes are ``python3 -c`` one-liners (the embedded
default root shows the host's python3) calling raw x86_64 syscalls through
ctypes, and print ``name=ERRNO`` (or ``name=OK``) lines.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import supervisor
from supervisor import Phase, Spec
from supervisor._capabilities import ALL_CAPS, CAP_NUMBERS, DEFAULT_CAPS, mask, resolve
from supervisor._parent import seccomp as parent_seccomp
from supervisor._parent import seccomp_oci
from supervisor._parent.config import MASKED_PATHS, READONLY_PATHS
from supervisor._sys import linux

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(platform.machine() != "x86_64", reason="probes use x86_64 syscall numbers"),
]

#: x86_64 syscall numbers (<asm/unistd_64.h>).
NR = {
    "ioctl": 16,
    "getitimer": 36,
    "alarm": 37,
    "flock": 73,
    "chmod": 90,
    "fchmod": 91,
    "getrusage": 98,
    "times": 100,
    "getpgid": 121,
    "getsid": 124,
    "mknod": 133,
    "getpriority": 140,
    "setpriority": 141,
    "vhangup": 153,
    "acct": 163,
    "settimeofday": 164,
    "mount": 165,
    "umount2": 166,
    "reboot": 169,
    "init_module": 175,
    "clock_settime": 227,
    "keyctl": 250,
    "fchmodat": 268,
    "unshare": 272,
    "syncfs": 306,
    "getcpu": 309,
    "finit_module": 313,
    "clone3": 435,
    "fchmodat2": 452,
    "open": 2,
    "creat": 85,
    "mknodat": 259,
    "socket": 41,
    "kill": 62,
    "openat": 257,
    "openat2": 437,
}

#: Shared by every probe: ``sc(name, *args)`` returns 0 or the errno;
#: ``report(name, err)`` prints ``name=OK`` or ``name=EPERM``.
PRELUDE = f"""
import ctypes, errno, os, resource, signal, stat, sys
NR = {NR!r}
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(name, *args):
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(NR[name]), *conv)
    return 0 if r >= 0 else ctypes.get_errno()
def report(name, err):
    print(name + "=" + (errno.errorcode.get(err, str(err)) if err else "OK"), flush=True)
"""


def probe(code: str) -> list[str]:
    """``python3 -c`` argv for a probe body; ``sys.argv[1]`` is the test's host PID."""
    return ["python3", "-c", PRELUDE + textwrap.dedent(code), str(os.getpid())]


async def run(spec: Spec, **kwargs: Any) -> supervisor.Result:
    """The result whatever the payload's outcome (``check=False``)."""
    async with supervisor.Supervisor() as sup:
        return await sup.run(spec, check=False, **kwargs)


async def results(spec: Spec) -> dict[str, str]:
    """Run a probe container; its ``name=VALUE`` lines as a dict."""
    res = await run(spec)
    assert res.exit_code == 0, (res, res.stderr.decode())
    out: dict[str, str] = {}
    for line in res.stdout.decode().splitlines():
        name, sep, value = line.partition("=")
        if sep:
            out[name] = value
    return out


# -- the battery: one container per profile ------------------------------------

BATTERY = """
import time
print("fds=" + ",".join(sorted(os.listdir("/proc/self/fd"))))
os.makedirs("/tmp/m", exist_ok=True)
report("mount", sc("mount", b"none", b"/tmp/m", b"tmpfs", 0, None))
report("umount", sc("umount2", b"/tmp/m", 2))
def in_child(fn):
    # Run fn() in a forked child, which exits with its errno: whatever it
    # changes (a new user namespace) does not affect the later probes.
    pid = os.fork()
    if pid == 0:
        os._exit(fn())
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
report("unshare_user", in_child(lambda: sc("unshare", 0x10000000)))
pid = libc.syscall(ctypes.c_long(56), ctypes.c_ulong(0x10000000 | signal.SIGCHLD), 0, 0, 0, 0)
if pid == 0:
    os._exit(0)
report("clone_user", 0 if pid > 0 else ctypes.get_errno())
if pid > 0:
    os.waitpid(pid, 0)
report("clone3", sc("clone3", None, 0))
report("keyctl", sc("keyctl", 0, -3, 0))
report("add_key", libc.syscall(248, b"user", b"k", b"v", 1, -3) and ctypes.get_errno())
report("request_key", libc.syscall(249, b"user", b"k", None, 0) and ctypes.get_errno())
for name in ("userfaultfd", "perf_event_open", "set_mempolicy", "mbind", "migrate_pages", "move_pages"):
    nr = {"userfaultfd": 323, "perf_event_open": 298, "set_mempolicy": 238, "mbind": 237,
          "migrate_pages": 256, "move_pages": 279}[name]
    ctypes.set_errno(0)
    # userfaultfd(UFFD_USER_MODE_ONLY) is allowed to anyone by the kernel.
    r = libc.syscall(ctypes.c_long(nr), 1 if name == "userfaultfd" else 0, 0, 0, 0, 0, 0)
    report(name, 0 if r >= 0 else ctypes.get_errno())
# io_uring_setup(1, &params): a valid call, so EPERM can only come from the filter.
params = ctypes.create_string_buffer(120)
ctypes.set_errno(0)
r = libc.syscall(ctypes.c_long(425), 1, params)
report("io_uring_setup", 0 if r >= 0 else ctypes.get_errno())
ctypes.set_errno(0)
r = libc.socket(40, 1, 0)  # AF_VSOCK, SOCK_STREAM
report("vsock", 0 if r >= 0 else ctypes.get_errno())
# The family is an int to the kernel: high bits set must not get past the rule.
report("vsock_high_bits", sc("socket", 0x100000028, 1, 0))
open("/tmp/f", "w").close()
fd = os.open("/tmp/f", os.O_RDONLY)
report("chmod_plain", sc("chmod", b"/tmp/f", 0o755))
report("chmod_suid", sc("chmod", b"/tmp/f", 0o4755))
report("chmod_sgid", sc("chmod", b"/tmp/f", 0o2755))
report("fchmod_suid", sc("fchmod", fd, 0o4755))
report("fchmod_sgid", sc("fchmod", fd, 0o2755))
report("fchmodat_suid", sc("fchmodat", -100, b"/tmp/f", 0o6755, 0))
report("fchmodat_sgid", sc("fchmodat", -100, b"/tmp/f", 0o2755, 0))
report("fchmodat2_suid", sc("fchmodat2", -100, b"/tmp/f", 0o4755, 0))
report("open_creat_suid", sc("open", b"/tmp/s1", os.O_CREAT | os.O_WRONLY, 0o4755))
report("openat_creat_suid", sc("openat", -100, b"/tmp/s2", os.O_CREAT | os.O_WRONLY, 0o4755))
report("openat_tmpfile_suid", sc("openat", -100, b"/tmp", os.O_TMPFILE | os.O_WRONLY, 0o4755))
report("creat_suid", sc("creat", b"/tmp/s3", 0o4755))
report("mknod_suid", sc("mknod", b"/tmp/s4", stat.S_IFREG | 0o4755, 0))
report("mknodat_suid", sc("mknodat", -100, b"/tmp/s5", stat.S_IFREG | 0o4755, 0))
how = ctypes.create_string_buffer(24)  # struct open_how: flags, mode, resolve
report("openat2", sc("openat2", -100, b"/tmp/s6", how, 24))
report("openat_creat_plain", sc("openat", -100, b"/tmp/s7", os.O_CREAT | os.O_WRONLY, 0o755))
report("openat_creat_sgid", sc("openat", -100, b"/tmp/s8", os.O_CREAT | os.O_WRONLY, 0o2755))
os.mkdir("/tmp/shared")
report("chmod_sgid_dir", sc("chmod", b"/tmp/shared", 0o2775))
print("sgid_dir_mode=" + oct(os.stat("/tmp/shared").st_mode & 0o7777))
report("fchmodat2_plain", sc("fchmodat2", -100, b"/tmp/f", 0o700, 0))
buf = ctypes.create_string_buffer(64)
report("tiocsti", sc("ioctl", 0, 0x5412, buf))
report("tiocsti_high_bits", sc("ioctl", 0, 0x100005412, buf))
report("tioclinux", sc("ioctl", 0, 0x541C, buf))
report("tiocgwinsz", sc("ioctl", 0, 0x5413, buf))
# A pty of the container's own can become the payload's controlling terminal
# (tmux and screen do so); the payload leads a session of its own.
master, slave = os.openpty()
report("tiocsctty_own_pty", sc("ioctl", slave, 0x540E, 0))
r, w = os.pipe()
os.write(w, b"abc")
n = ctypes.c_int(0)
report("fionread", sc("ioctl", r, 0x541B, ctypes.byref(n)))
print("fionread_bytes=" + str(n.value))
def readable(path):
    try:
        with open(path, "rb") as f:
            return "DATA" if f.read(1) else "EMPTY"
    except OSError as exc:
        return errno.errorcode[exc.errno]
print("kcore=" + readable("/proc/kcore"))
def write(path):
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        return errno.errorcode[exc.errno]
    os.close(fd)
    return "OK"
# A sysctl of the container's own network namespace: writable with
# CAP_NET_ADMIN in its user namespace, but for the read-only mount.
print("proc_sys=" + write("/proc/sys/net/ipv4/ip_forward"))
print("sysrq=" + write("/proc/sysrq-trigger"))
print("pids=" + ",".join(sorted(p for p in os.listdir("/proc") if p.isdigit())))
print("links=" + ",".join(sorted(os.listdir("/sys/class/net"))))
# The host's PID of the test process means nothing here: no such process.
libc.ptrace.restype = ctypes.c_long
report("ptrace_host_pid", libc.ptrace(0x4206, int(sys.argv[1]), None, None) and ctypes.get_errno())
# PID 1 is the payload itself, so /proc/1/root is the container's root.
print("proc1_root=" + ("same" if os.stat("/proc/1/root/").st_ino == os.stat("/").st_ino else "other"))
def mkdir(path):
    try:
        os.mkdir(path)
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return "OK"
print("cgroupfs=" + mkdir("/sys/fs/cgroup/escape"))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
class RL(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_ulong), ("max", ctypes.c_ulong)]
report("rlimit_raise_hard", libc.setrlimit(7, ctypes.byref(RL(hard + 1, hard + 1))) and ctypes.get_errno())
report("rlimit_soft_to_hard", libc.setrlimit(7, ctypes.byref(RL(hard, hard))) and ctypes.get_errno())
report("mknod_block", sc("mknod", b"/tmp/blk", stat.S_IFBLK | 0o600, os.makedev(8, 0)))
report("mknod_fifo", sc("mknod", b"/tmp/fifo", stat.S_IFIFO | 0o600, 0))
report("init_module", sc("init_module", None, 0, b""))
nfd = os.open("/dev/null", os.O_RDONLY)
report("finit_module", sc("finit_module", nfd, b"", 0))
class TS(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]
now = time.time()
tv = TS(int(now), 0)
report("settimeofday", sc("settimeofday", ctypes.byref(tv), None))
report("clock_settime", sc("clock_settime", 0, ctypes.byref(TS(int(now), 0))))
# reboot with valid magic numbers and a command that does not exist: EPERM
# without CAP_SYS_BOOT, EINVAL with it (never reboots anything).
report("reboot", sc("reboot", 0xfee1dead, 672274793, 0x7E57))
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
    print(key + "=" + status[key].strip())
print("uid=" + str(os.getuid()))
"""


@pytest.fixture(scope="module")
async def default_battery() -> dict[str, str]:
    """The battery in a container with every default (uid 0)."""
    return await results(Spec(probe(BATTERY)))


@pytest.fixture(scope="module")
async def unconfined_battery() -> dict[str, str]:
    """The battery without a seccomp filter, still with the default capabilities."""
    return await results(Spec(probe(BATTERY), seccomp="unconfined"))


@pytest.fixture(scope="module")
async def sys_admin_battery() -> dict[str, str]:
    """The battery with SYS_ADMIN, SYS_BOOT and NET_ADMIN added."""
    return await results(Spec(probe(BATTERY), cap_add=["sys_admin", "CAP_SYS_BOOT", "Net_Admin"]))


async def test_mount_and_umount_denied(default_battery: dict[str, str], sys_admin_battery: dict[str, str]) -> None:
    assert default_battery["mount"] == "EPERM"
    assert default_battery["umount"] == "EPERM"
    # The probes work: with CAP_SYS_ADMIN (in the container's user namespace)
    # a tmpfs mounts and unmounts.
    assert sys_admin_battery["mount"] == "OK"
    assert sys_admin_battery["umount"] == "OK"


async def test_nested_user_namespace_denied(
    default_battery: dict[str, str], unconfined_battery: dict[str, str]
) -> None:
    assert default_battery["unshare_user"] == "EPERM"
    assert default_battery["clone_user"] == "EPERM"
    assert unconfined_battery["unshare_user"] == "OK"
    assert unconfined_battery["clone_user"] == "OK"


async def test_clone3_is_enosys(default_battery: dict[str, str], unconfined_battery: dict[str, str]) -> None:
    assert default_battery["clone3"] == "ENOSYS"
    # Without the filter the kernel looks at the (bad) arguments instead.
    assert unconfined_battery["clone3"] == "EINVAL"


@pytest.mark.parametrize(
    "name",
    ["keyctl", "add_key", "request_key", "userfaultfd", "perf_event_open", "set_mempolicy", "mbind", "migrate_pages"],
)
async def test_unnamespaced_kernel_objects_denied(
    name: str, default_battery: dict[str, str], unconfined_battery: dict[str, str]
) -> None:
    assert default_battery[name] == "EPERM"
    assert unconfined_battery[name] != "EPERM" or name in ("perf_event_open",)


async def test_io_uring_and_vsock_denied(default_battery: dict[str, str], unconfined_battery: dict[str, str]) -> None:
    """Kernel channels that bypass namespaces and socket filters."""
    assert default_battery["io_uring_setup"] == "EPERM"
    assert default_battery["vsock"] == "EPERM"
    assert default_battery["vsock_high_bits"] == "EPERM"
    # Without the filter the kernel answers for itself (a ring or a socket, or
    # ENOSYS/EAFNOSUPPORT where disabled or not built), never with EPERM.
    assert unconfined_battery["io_uring_setup"] != "EPERM"
    assert unconfined_battery["vsock"] != "EPERM"


async def test_keyctl_works_unconfined(unconfined_battery: dict[str, str]) -> None:
    assert unconfined_battery["keyctl"] == "OK"


async def test_setuid_chmod_denied(default_battery: dict[str, str], unconfined_battery: dict[str, str]) -> None:
    # fchmodat2 came with Linux 6.6: before, the kernel itself says ENOSYS
    # (the filter still refuses its setuid form first).
    fchmodat2 = "OK" if linux.kernel_at_least(6, 6) else "ENOSYS"
    for name in ("chmod_suid", "fchmod_suid", "fchmodat_suid", "fchmodat2_suid"):
        assert default_battery[name] == "EPERM", name
        assert unconfined_battery[name] == (fchmodat2 if name == "fchmodat2_suid" else "OK"), name
    assert default_battery["chmod_plain"] == "OK"
    assert default_battery["fchmodat2_plain"] == fchmodat2


async def test_setuid_files_cannot_be_created(
    default_battery: dict[str, str], unconfined_battery: dict[str, str]
) -> None:
    """A mode with S_ISUID is refused at creation too, not only by chmod."""
    names = ("open_creat_suid", "openat_creat_suid", "openat_tmpfile_suid", "creat_suid", "mknod_suid", "mknodat_suid")
    for name in names:
        assert default_battery[name] == "EPERM", name
        assert unconfined_battery[name] == "OK", name
    # openat2 keeps its mode where seccomp cannot read it: ENOSYS, so that
    # callers fall back to openat.
    assert default_battery["openat2"] == "ENOSYS"
    assert unconfined_battery["openat2"] != "ENOSYS"
    assert default_battery["openat_creat_plain"] == "OK"
    assert default_battery["openat_creat_sgid"] == "OK"


async def test_setgid_chmod_allowed(default_battery: dict[str, str]) -> None:
    """Docker's default allows S_ISGID: shared group folders (``chmod 2775 dir``) work."""
    for name in ("chmod_sgid", "fchmod_sgid", "fchmodat_sgid", "chmod_sgid_dir"):
        assert default_battery[name] == "OK", name
    assert default_battery["sgid_dir_mode"] == "0o2775"


async def test_terminal_injection_denied_exactly(
    default_battery: dict[str, str], unconfined_battery: dict[str, str]
) -> None:
    assert default_battery["tiocsti"] == "EPERM"
    # The kernel's request is 32 bits: upper bits must not bypass the rule.
    assert default_battery["tiocsti_high_bits"] == "EPERM"
    assert default_battery["tioclinux"] == "EPERM"
    assert default_battery["tiocsctty_own_pty"] == "OK"  # see docs/security.rst: tmux needs it
    # crabcan's mask also refused these; stdin is /dev/null, hence ENOTTY.
    assert default_battery["tiocgwinsz"] == "ENOTTY"
    assert default_battery["fionread"] == "OK"
    assert default_battery["fionread_bytes"] == "3"
    assert unconfined_battery["tiocsti"] == "ENOTTY"


async def test_proc_masked_and_read_only(default_battery: dict[str, str], sys_admin_battery: dict[str, str]) -> None:
    # /proc/kcore is masked with /dev/null (or absent from this kernel).
    expected_kcore = "EMPTY" if os.path.exists("/proc/kcore") else "ENOENT"
    assert default_battery["kcore"] == expected_kcore
    assert default_battery["proc_sys"] == "EACCES"  # no CAP_NET_ADMIN
    # With it, the sysctl would be writable: the read-only mount refuses
    # (Linux 6.1 checks the file's permission first, EACCES, for both.)
    refused = ("EROFS",) if linux.kernel_at_least(6, 6) else ("EROFS", "EACCES")
    assert sys_admin_battery["proc_sys"] in refused
    expected_sysrq = refused if os.path.exists("/proc/sysrq-trigger") else ("ENOENT",)
    assert default_battery["sysrq"] in expected_sysrq


async def test_no_host_processes_links_or_fds(default_battery: dict[str, str]) -> None:
    # PID 1 is the probe itself; nothing of the host's PID namespace shows.
    assert default_battery["pids"] == "1"
    assert default_battery["links"] == "lo"
    # stdio, plus the descriptor listdir itself holds.
    assert default_battery["fds"] == "0,1,2,3"
    assert default_battery["ptrace_host_pid"] == "ESRCH"
    assert default_battery["proc1_root"] == "same"
    # /sys is a read-only sysfs of the container's own; no cgroupfs to write.
    assert default_battery["cgroupfs"] in ("EROFS", "ENOENT", "EACCES")


FDS_PROBE = """
import os, sys
fds = sorted(int(n) for n in os.listdir("/proc/self/fd"))
print(",".join(map(str, fds)))
print(os.read(3, 100).decode())
os.write(4, b"from the container")
print(os.get_inheritable(3), os.get_inheritable(4))
"""


async def test_only_passed_fds_reach_the_payload(host_dir: Path) -> None:
    """``pass_fds`` become the payload's 3, 4, ...; nothing else of ours does,
    not even an inheritable descriptor."""
    (host_dir / "in").write_text("from the host")
    reader = os.open(host_dir / "in", os.O_RDONLY | os.O_CLOEXEC)
    r, w = os.pipe()
    stray = os.open("/", os.O_RDONLY)  # inheritable, and not passed
    try:
        os.set_inheritable(stray, True)
        result = await supervisor.run(Spec(["python3", "-c", FDS_PROBE]), pass_fds=[reader, w])
        os.close(w)
        w = -1
        assert result.exit_code == 0, result.stderr
        listed, text, inheritable = result.stdout.decode().splitlines()
        # stdio, the two passed, and the one listdir held while listing
        assert listed == "0,1,2,3,4,5"
        assert text == "from the host"
        assert inheritable == "True True"
        assert os.read(r, 100) == b"from the container"
        with pytest.raises(ValueError, match="pass_fds"):
            await supervisor.run(Spec(["true"]), pass_fds=[10_000])
        with pytest.raises(ValueError, match="pass_fds"):
            await supervisor.run(Spec(["true"]), pass_fds=[reader, reader])
    finally:
        for fd in (reader, r, w, stray):
            if fd >= 0:
                os.close(fd)


LEAKED_DIR_FD = """
import os
try:
    print(os.read(os.open("secret", os.O_RDONLY, dir_fd=3), 100).decode())
except OSError as exc:
    print(os.strerror(exc.errno))
"""


async def test_host_files_only_through_a_passed_fd(host_dir: Path) -> None:
    """The leaked-fd check can fail: a host directory fd handed over on
    purpose reaches the host file; without it, fd 3 is nothing."""
    (host_dir / "secret").write_text("host secret")
    os.chmod(host_dir / "secret", 0o644)
    dirfd = os.open(host_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        alone = await run(Spec(["python3", "-c", LEAKED_DIR_FD]))
        passed = await run(Spec(["python3", "-c", LEAKED_DIR_FD]), pass_fds=[dirfd])
    finally:
        os.close(dirfd)
    assert alone.stdout == b"Bad file descriptor\n"
    assert passed.stdout == b"host secret\n"


async def test_rlimit_cannot_be_raised(default_battery: dict[str, str]) -> None:
    assert default_battery["rlimit_raise_hard"] == "EPERM"
    assert default_battery["rlimit_soft_to_hard"] == "OK"


async def test_block_device_mknod_denied(default_battery: dict[str, str], sys_admin_battery: dict[str, str]) -> None:
    assert default_battery["mknod_block"] == "EPERM"
    assert sys_admin_battery["mknod_block"] == "EPERM"  # needs CAP_MKNOD in the host
    assert default_battery["mknod_fifo"] == "OK"


async def test_kernel_modules_time_and_reboot_denied(
    default_battery: dict[str, str], sys_admin_battery: dict[str, str]
) -> None:
    # A kernel without module support says ENOSYS: refused either way.
    modules = "EPERM" if os.path.exists("/proc/modules") else "ENOSYS"
    assert default_battery["init_module"] == modules
    assert default_battery["finit_module"] == modules
    for name in ("settimeofday", "clock_settime", "reboot"):
        assert default_battery[name] == "EPERM", name
    # With CAP_SYS_BOOT in its user namespace the call passes the check and
    # would only stop the container's own PID namespace; the bogus command
    # then gives EINVAL.
    assert sys_admin_battery["reboot"] == "EINVAL"
    # Modules and the clock need the capability in the host: still refused.
    assert sys_admin_battery["init_module"] == modules
    assert sys_admin_battery["finit_module"] == modules
    for name in ("settimeofday", "clock_settime"):
        assert sys_admin_battery[name] == "EPERM", name


def _status_mask(value: str) -> int:
    return int(value, 16)


async def test_capability_sets_match_default(default_battery: dict[str, str]) -> None:
    want = mask(DEFAULT_CAPS)
    assert _status_mask(default_battery["CapEff"]) == want
    assert _status_mask(default_battery["CapPrm"]) == want
    assert _status_mask(default_battery["CapBnd"]) == want
    assert _status_mask(default_battery["CapInh"]) == 0
    assert _status_mask(default_battery["CapAmb"]) == 0
    assert default_battery["NoNewPrivs"] == "1"
    assert default_battery["Seccomp"] == "2"


async def test_capability_sets_with_cap_add(
    sys_admin_battery: dict[str, str], unconfined_battery: dict[str, str]
) -> None:
    want = mask(DEFAULT_CAPS | {CAP_NUMBERS[n] for n in ("SYS_ADMIN", "SYS_BOOT", "NET_ADMIN")})
    assert _status_mask(sys_admin_battery["CapEff"]) == want
    assert _status_mask(sys_admin_battery["CapBnd"]) == want
    assert unconfined_battery["Seccomp"] == "0"
    assert unconfined_battery["NoNewPrivs"] == "1"


STATUS = """
status = dict(line.split(":\\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\\t" in line)
for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"):
    print(key + "=" + status[key].strip())
"""


@pytest.mark.parametrize(
    ("uid", "cap_add", "cap_drop", "effective", "bounding"),
    [
        # A non-root payload gets nothing (as with Docker); the bounding set
        # still holds the kept set.
        (1000, (), (), frozenset(), DEFAULT_CAPS),
        (0, (), ("all",), frozenset(), frozenset()),
        (0, ("ALL",), ("CAP_NET_RAW",), ALL_CAPS - {CAP_NUMBERS["NET_RAW"]}, ALL_CAPS - {CAP_NUMBERS["NET_RAW"]}),
        (0, ("net_admin",), ("chown", "setuid", "setgid"), None, None),
    ],
)
async def test_capability_sets(
    uid: int, cap_add: tuple[str, ...], cap_drop: tuple[str, ...], effective: Any, bounding: Any
) -> None:
    kept = resolve(cap_add, cap_drop)
    if effective is None:
        effective = bounding = kept
    last_cap = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    known = (1 << (last_cap + 1)) - 1
    status = await results(Spec(probe(STATUS), uid=uid, cap_add=cap_add, cap_drop=cap_drop))
    assert _status_mask(status["CapEff"]) == mask(effective) & known
    assert _status_mask(status["CapPrm"]) == mask(effective) & known
    assert _status_mask(status["CapBnd"]) == mask(bounding) & known
    assert _status_mask(status["CapInh"]) == 0
    assert _status_mask(status["CapAmb"]) == 0
    assert status["NoNewPrivs"] == "1"


@pytest.mark.parametrize("uid", [0, 1000])
async def test_parent_death_signal_survives_the_uid_switch(uid: int) -> None:
    code = """
    v = ctypes.c_int(-1)
    libc.prctl(2, ctypes.byref(v), 0, 0, 0)  # PR_GET_PDEATHSIG
    print("pdeathsig=%d" % v.value)
    """
    out = await results(Spec(probe(code), uid=uid))
    assert out["pdeathsig"] == str(int(signal.SIGKILL))


async def test_threads_and_processes_still_work() -> None:
    # glibc tries clone3 first and falls back to clone on ENOSYS.
    code = """
    import subprocess, threading
    t = threading.Thread(target=print, args=("thread=OK",), kwargs={"flush": True})
    t.start()
    t.join()
    print("child=%d" % subprocess.run(["true"]).returncode)
    """
    out = await results(Spec(probe(code)))
    assert out == {"thread": "OK", "child": "0"}


# -- rlimits ---------------------------------------------------------------------


async def test_rlimits_applied_to_the_container_only() -> None:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    code = "print('nofile=%d:%d' % resource.getrlimit(resource.RLIMIT_NOFILE))"
    out = await results(Spec(probe(code), rlimits={"nofile": (64, 128)}))
    assert out["nofile"] == "64:128"
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before


async def test_rlimits_never_above_the_callers_hard_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spec = Spec(["true"], rlimits={"RLIMIT_NOFILE": (hard, hard + 1)})
    with pytest.raises(ValueError, match=r"Spec\.rlimits"):
        await run(spec)


def test_rlimits_validation() -> None:
    with pytest.raises(ValueError, match=r"Spec\.rlimits: unknown resource"):
        Spec(["true"], rlimits={"NOPE": (1, 1)})
    with pytest.raises(ValueError, match=r"Spec\.rlimits: .*soft limit"):
        Spec(["true"], rlimits={"NOFILE": (10, 5)})
    with pytest.raises(TypeError, match=r"Spec\.rlimits"):
        Spec(["true"], rlimits={"NOFILE": 5})  # type: ignore[dict-item]
    spec = Spec(["true"], rlimits={"rlimit_core": (0, resource.RLIM_INFINITY)})
    assert dict(spec.rlimits) == {"CORE": (0, resource.RLIM_INFINITY)}


# -- capabilities and seccomp: Spec validation --------------------------------------


def test_default_capability_set() -> None:
    names = {name for name, num in CAP_NUMBERS.items() if num in DEFAULT_CAPS}
    assert names == {
        "CHOWN",
        "FOWNER",
        "KILL",
        "NET_BIND_SERVICE",
        "NET_RAW",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "SYS_CHROOT",
    }
    assert Spec(["true"]).capabilities == DEFAULT_CAPS


def test_cap_names_validated() -> None:
    assert Spec(["true"], cap_add=["cap_sys_admin"]).cap_add == ("SYS_ADMIN",)
    with pytest.raises(ValueError, match=r"Spec\.cap_drop: unknown capability"):
        Spec(["true"], cap_drop=["CAP_NOPE"])
    with pytest.raises(ValueError, match=r"Spec\.cap_add: .*both added and dropped"):
        Spec(["true"], cap_add=["kill"], cap_drop=["KILL"])
    with pytest.raises(TypeError, match=r"Spec\.cap_add"):
        Spec(["true"], cap_add="SYS_ADMIN")
    assert Spec(["true"], cap_drop=["ALL"], cap_add=["kill"]).capabilities == {CAP_NUMBERS["KILL"]}


def test_seccomp_field_validated(host_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"Spec\.seccomp"):
        Spec(["true"], seccomp="")
    spec = Spec(["true"], seccomp=str(host_dir / "missing.json"))
    with pytest.raises(ValueError, match=r"Spec\.seccomp: profile .* is not an existing file"):
        spec.check_host()
    bad = host_dir / "bad.json"
    bad.write_text(json.dumps({"defaultAction": "SCMP_ACT_NOTIFY"}))
    with pytest.raises(ValueError, match=r"Spec\.seccomp: .*SCMP_ACT_NOTIFY"):
        parent_seccomp.compile_profile(str(bad), DEFAULT_CAPS)


async def test_bad_profile_refused_before_anything_starts(host_dir: Path) -> None:
    bad = host_dir / "bad.json"
    bad.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "NOPE"}]}))
    with pytest.raises(ValueError, match=r"Spec\.seccomp: profile .*unknown action 'NOPE'"):
        await run(Spec(["true"], seccomp=str(bad)))


async def test_death_at_execve_is_a_setup_failure_not_the_payloads(host_dir: Path, busybox: str) -> None:
    """A profile that kills ``execve`` kills PID 1 just before it becomes the
    payload: that is a setup failure in ``exec``, never a payload "killed by
    SIGSYS". The same kill after ``execve`` is the payload's own death."""
    kills_execve = host_dir / "kills-execve.json"
    rule = {"names": ["execve"], "action": "SCMP_ACT_KILL_PROCESS"}
    kills_execve.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}))
    with pytest.raises(supervisor.SetupError) as info:
        await run(Spec(["true"], rootfs=busybox, seccomp=str(kills_execve)))
    assert info.value.phase is Phase.EXEC
    assert "died before execve" in info.value.message
    assert "SIGSYS" in info.value.message or "31" in info.value.message
    assert info.value.result is not None
    assert (info.value.result.reason, info.value.result.signal) == ("setup_failed", None)
    kills_uname = host_dir / "kills-uname.json"
    rule = {"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"}
    kills_uname.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}))
    result = await run(Spec(["uname"], rootfs=busybox, seccomp=str(kills_uname)))
    assert (result.reason, result.signal) == ("signaled", signal.SIGSYS)


def test_default_profile_compiled_once() -> None:
    first = parent_seccomp.compile_profile("default", DEFAULT_CAPS)
    assert first is not None
    assert first is parent_seccomp.compile_profile("default", frozenset())
    assert len(first.bpf) % 8 == 0
    assert parent_seccomp.compile_profile("unconfined", DEFAULT_CAPS) is None


def test_compiled_filters_are_cached_on_disk(host_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new process finds the filter an earlier one compiled, without the
    binding; a cache file anyone else could have written, or a damaged one,
    is not used."""
    monkeypatch.setenv("SUPERVISOR_RUN_DIR", str(host_dir))
    expected = parent_seccomp._compile_default()
    profile = host_dir / "p.json"
    rule = {"names": ["uname"], "action": "SCMP_ACT_ERRNO"}
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}))

    def fresh(path: str) -> parent_seccomp.CompiledFilter | None:
        parent_seccomp._default_filter.cache_clear()
        parent_seccomp._json_filter.cache_clear()
        return parent_seccomp.compile_profile(path, DEFAULT_CAPS)

    try:
        first, first_json = fresh("default"), fresh(str(profile))
        cache = host_dir / "seccomp"
        files = sorted(cache.iterdir())
        assert [f.name.split("-")[0] for f in files] == ["default", "json"]
        assert {f.stat().st_mode & 0o777 for f in files} == {0o600}
        assert first == expected
        with monkeypatch.context() as m:  # as in a process that never imported the binding
            m.setattr(parent_seccomp, "_lib", lambda: pytest.fail("compiled again"))
            assert fresh("default") == first
            assert fresh(str(profile)) == first_json
        default_file = next(f for f in files if f.name.startswith("default-"))
        default_file.chmod(0o620)  # writable by its group: not trusted
        compiled: list[bool] = []
        real = parent_seccomp._compile_default
        monkeypatch.setattr(parent_seccomp, "_compile_default", lambda: compiled.append(True) or real())
        assert fresh("default") == expected
        assert compiled == [True]
        assert default_file.stat().st_mode & 0o777 == 0o600  # rewritten
        default_file.write_bytes(default_file.read_bytes()[:-3])  # not whole BPF records
        assert fresh("default") == expected
        assert compiled == [True, True]
    finally:
        parent_seccomp._default_filter.cache_clear()
        parent_seccomp._json_filter.cache_clear()


# -- an OCI/Docker profile exercising every supported feature --------------------------

#: Syscalls the profile below gives a rule of their own (never in the allowlist).
TARGETS = (
    "getpriority", "setpriority", "syncfs", "flock", "getpgid", "getsid", "getitimer", "alarm",
    "getcpu", "vhangup", "acct", "getrusage", "times",
)  # fmt: skip


def _every_syscall_name() -> list[str]:
    import pyseccomp

    names = []
    for nr in range(0, 500):
        try:
            names.append(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, nr).decode())
        except ValueError:
            continue
    return names


def _full_profile() -> dict[str, Any]:
    allow = [n for n in _every_syscall_name() if n not in TARGETS]
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.EACCES,
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [
            {"names": [*allow, "no_such_syscall_at_all"], "action": "SCMP_ACT_ALLOW", "comment": "allowlist"},
            {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOMSG},
            {"names": ["syncfs"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV,
             "args": [{"index": 0, "value": 999, "op": "SCMP_CMP_EQ"}]},
            {"names": ["flock"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EPROTO,
             "args": [{"index": 1, "value": 4, "valueTwo": 4, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EDOM,
             "args": [{"index": 0, "value": 1000, "op": "SCMP_CMP_GT"},
                      {"index": 0, "value": 5, "op": "SCMP_CMP_EQ"}]},
            {"names": ["getsid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ERANGE,
             "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["getsid"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["getitimer"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"], "minKernel": "4.0"}},
            {"names": ["getitimer"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EILSEQ,
             "excludes": {"arches": ["amd64"]}},
            {"names": ["alarm"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
            {"name": "getcpu", "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOLINK},
            {"names": ["vhangup"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["acct"], "action": "SCMP_ACT_TRAP"},
            {"names": ["getrusage"], "action": "SCMP_ACT_LOG"},
            {"names": ["times"], "action": "SCMP_ACT_TRACE"},
        ],
    }  # fmt: skip


OCI_PROBE = """
report("rule_errno", sc("getpriority", 0, 0))
report("default_errno", sc("setpriority", 0, 0, 0))
report("args_eq_match", sc("syncfs", 999))
report("args_eq_other", sc("syncfs", 0))
report("masked_eq_match", sc("flock", 0, 2 | 4))
report("masked_eq_other", sc("flock", 0, 2))
report("same_index_gt", sc("getpgid", 2000))
report("same_index_eq", sc("getpgid", 5))
report("same_index_other", sc("getpgid", 0))
report("caps_condition", sc("getsid", 0))
buf = ctypes.create_string_buffer(512)
report("arch_condition", sc("getitimer", 0, buf))
report("min_kernel", sc("alarm", 0))
report("old_name_field", sc("getcpu", None, None, None))
report("log_action", sc("getrusage", 0, buf))
report("trace_action", sc("times", None))
for name in ("vhangup", "acct"):
    pid = os.fork()
    if pid == 0:
        sc(name, None)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print(name + "_signal=" + str(os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0))
print("Seccomp=" + [l for l in open("/proc/self/status") if l.startswith("Seccomp:")][0].split()[1])
"""


async def test_oci_profile_every_feature(host_dir: Path) -> None:
    path = host_dir / "profile.json"
    path.write_text(json.dumps(_full_profile()))
    out = await results(Spec(probe(OCI_PROBE), seccomp=str(path)))
    assert out["Seccomp"] == "2"
    assert out["rule_errno"] == "ENOMSG"
    assert out["default_errno"] == "EACCES"
    assert out["args_eq_match"] == "EXDEV"
    assert out["args_eq_other"] == "EACCES"
    assert out["masked_eq_match"] == "EPROTO"
    assert out["masked_eq_other"] == "EACCES"
    assert out["same_index_gt"] == "EDOM"
    assert out["same_index_eq"] == "EDOM"
    assert out["same_index_other"] == "EACCES"
    assert out["caps_condition"] == "OK"  # excluded-caps rule applies: allowed
    assert out["arch_condition"] == "OK"
    assert out["min_kernel"] == "EACCES"  # rule skipped: default action
    assert out["old_name_field"] == "ENOLINK"
    assert out["log_action"] == "OK"
    assert out["trace_action"] == "ENOSYS"  # SCMP_ACT_TRACE without a tracer
    assert out["vhangup_signal"] == str(int(signal.SIGSYS))
    assert out["acct_signal"] == str(int(signal.SIGSYS))
    # The capability condition follows the container's kept set.
    out = await results(Spec(probe(OCI_PROBE), seccomp=str(path), cap_add=["SYS_ADMIN"]))
    assert out["caps_condition"] == "ERANGE"


NARROW_PROBE = """
open("/tmp/f", "w").close()
report("socket_vsock", sc("socket", 40, 1, 0))
report("socket_vsock_high", sc("socket", 0x100000028, 1, 0))
report("socket_unix", sc("socket", 1, 1, 0))
report("chmod_suid_high", sc("chmod", b"/tmp/f", 0x10000 | 0o4755))
report("chmod_plain", sc("chmod", b"/tmp/f", 0o755))
report("kill_probe_high", sc("kill", os.getpid(), 1 << 32))
report("kill_probe_masked_high", sc("kill", os.getpid(), (1 << 40) | 0))
"""


async def test_oci_profile_compares_int_arguments_as_the_kernel_reads_them(host_dir: Path) -> None:
    """EQ and MASKED_EQ on an int or umode_t argument compare the bits the kernel
    reads: high bits set by the payload do not slip past the rule."""
    rules = [
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXFULL,
         "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]},
        {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EBADSLT,
         "args": [{"index": 1, "value": 0o4755, "op": "SCMP_CMP_EQ"}]},
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EBADE,
         "args": [{"index": 1, "value": 0xFFFFFFFFFFFFFFFF, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
    ]  # fmt: skip
    path = host_dir / "narrow.json"
    path.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}))
    out = await results(Spec(probe(NARROW_PROBE), seccomp=str(path)))
    assert out["socket_vsock"] == out["socket_vsock_high"] == "EXFULL"
    assert out["socket_unix"] == "OK"
    assert out["chmod_suid_high"] == "EBADSLT"
    assert out["chmod_plain"] == "OK"
    assert out["kill_probe_high"] == out["kill_probe_masked_high"] == "EBADE"


def test_only_eq_and_masked_eq_on_narrow_arguments_are_narrowed() -> None:
    lib = parent_seccomp._lib()
    narrowed = seccomp_oci._narrowed
    assert narrowed("socket", (0, lib.EQ, 0x100000028, 0)) == (0, lib.MASKED_EQ, 0xFFFFFFFF, 40)
    assert narrowed("chmod", (1, lib.MASKED_EQ, 0xFFFFF, 0x14000)) == (1, lib.MASKED_EQ, 0xFFFF, 0x4000)
    assert narrowed("socket", (0, lib.NE, 40, 0)) == (0, lib.NE, 40, 0)
    assert narrowed("mmap", (2, lib.EQ, 1 << 33, 0)) == (2, lib.EQ, 1 << 33, 0)  # an unsigned long
    assert narrowed("chmod", (0, lib.EQ, 5, 0)) == (0, lib.EQ, 5, 0)  # a pointer


DOCKER_PROFILE_CANDIDATES = (
    # Docker's own default profile, extracted by tests/install-system-deps.sh
    # from Debian's docker source package.
    "/usr/local/share/supervisor-tests/docker-default-seccomp.json",
    "/usr/share/containers/seccomp.json",
    "/etc/docker/seccomp.json",
    "/etc/containers/seccomp.json",
)


async def test_docker_default_profile() -> None:
    """Docker's own default profile (or containers-common's) loads and works."""
    path = next((p for p in DOCKER_PROFILE_CANDIDATES if os.path.isfile(p)), None)
    if path is None:
        pytest.skip("Docker's default seccomp profile not found (tests/install-system-deps.sh fetches it)")
    out = await results(Spec(probe(BATTERY), seccomp=path))
    assert out["Seccomp"] == "2"
    assert out["keyctl"] == "EPERM"
    assert out["unshare_user"] == "EPERM"
    assert out["clone3"] == "ENOSYS"
    assert out["fionread"] == "OK"


# -- no_new_privs and the non-dumpable setup process ------------------------------------


def _pid1_in_setup() -> int:
    """Our child that is a PID 1 still in its setup (named so until execve)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = data[data.index("(") + 1 : data.rindex(")")]
        if int(data[data.rindex(")") + 2 :].split()[1]) == os.getpid() and name == "sv-pid1-setup":
            return int(entry)
    raise LookupError("no PID 1 in setup among our children")


#: Drops CAP_SYS_PTRACE (staying uid 0), then tries PTRACE_SEIZE on another
#: process (which does not stop it; exiting detaches): allowed for a dumpable
#: process of the same uid, refused for a non-dumpable one.
PTRACE_READ = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
class H(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class D(ctypes.Structure):
    _fields_ = [("eff", ctypes.c_uint32), ("prm", ctypes.c_uint32), ("inh", ctypes.c_uint32)]
h = H(0x20080522, 0)
d = (D * 2)()
assert libc.capget(ctypes.byref(h), ctypes.byref(d)) == 0
d[0].eff &= ~(1 << 19)
assert libc.capset(ctypes.byref(h), ctypes.byref(d)) == 0
libc.ptrace.restype = ctypes.c_long
if libc.ptrace(0x4206, int(sys.argv[1]), None, None) == 0:
    print("attachable")
else:
    print("denied" if ctypes.get_errno() == 1 else "error %d" % ctypes.get_errno())
"""


def _ptrace_seize(pid: int) -> str:
    res = subprocess.run(
        [sys.executable, "-c", PTRACE_READ, str(pid)], capture_output=True, text=True, timeout=10, check=True
    )
    return res.stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs to be root on the host to compare dumpability")
async def test_setup_process_is_not_dumpable() -> None:
    # Control: a dumpable process of ours can be traced without CAP_SYS_PTRACE.
    with subprocess.Popen(["sleep", "30"]) as control:
        try:
            assert _ptrace_seize(control.pid) == "attachable"
        finally:
            control.kill()
    seen: dict[str, str] = {}
    async with supervisor.Supervisor() as sup:

        def on_phase(phase: Phase, _t: float) -> None:
            # PID 1 waits for our answer to its NETWORK request: it is
            # mid-setup. As root of its user namespace, which host root owns,
            # only its non-dumpable memory (ours: CLONE_VM) keeps a tracer
            # without CAP_SYS_PTRACE out. (Its uid switch at USERNS cleared
            # dumpability too; before it, PR_SET_DUMPABLE at SPAWNED did.)
            if phase == Phase.NETWORK:
                seen["during_setup"] = _ptrace_seize(_pid1_in_setup())

        res = await sup.run(Spec(["true"], network="bridge"), on_phase=on_phase)
    assert res.exit_code == 0
    assert seen == {"during_setup": "denied"}


# -- fd hygiene ------------------------------------------------------------------------


async def test_no_descriptor_beyond_stdio_survives_exec() -> None:
    code = """
    import os
    out = []
    for fd in range(3, 1024):
        try:
            os.fstat(fd)
            out.append(str(fd))
        except OSError:
            pass
    print("open=" + ",".join(out))
    """
    out = await results(Spec(probe(code)))
    assert out["open"] == ""


# -- masked paths ----------------------------------------------------------------------


async def test_masked_and_read_only_paths_as_on_host() -> None:
    code = """
    import json
    out = {}
    for path in sys.argv[1].split(","):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            out[path] = "missing"
            continue
        if stat.S_ISDIR(st.st_mode):
            out[path] = "empty-dir" if not os.listdir(path) else "dir"
        elif stat.S_ISCHR(st.st_mode):
            out[path] = "chr:%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        else:
            out[path] = "other"
    for path in sys.argv[2].split(","):
        st = os.statvfs(path) if os.path.exists(path) else None
        out[path] = "missing" if st is None else ("ro" if st.f_flag & os.ST_RDONLY else "rw")
    print("result=" + json.dumps(out))
    """
    argv = [*probe(code)[:3], ",".join(MASKED_PATHS), ",".join(READONLY_PATHS)]
    out = json.loads((await results(Spec(argv)))["result"])
    for path in MASKED_PATHS:
        if not os.path.exists(path):
            assert out[path] == "missing", path
        elif os.path.isdir(path):
            assert out[path] == "empty-dir", path
        else:
            assert out[path] == "chr:1:3", path
    for path in READONLY_PATHS:
        assert out[path] == ("ro" if os.path.exists(path) else "missing"), path


def test_probe_numbers_match_libseccomp() -> None:
    import pyseccomp

    for name, nr in NR.items():
        assert pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name) == nr, name
    assert ctypes.sizeof(ctypes.c_long) == 8
