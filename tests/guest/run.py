"""Run part of the test suite on a pure cgroup v2 kernel, in a qemu guest.

This machine is a hybrid cgroup host, production hosts are mostly cgroup v2:
this boots Debian's kernel (fetched through the package manager by
``tests/install-system-deps.sh``) with ``cgroup_no_v1=all`` and a tiny
initramfs (the static busybox and the 9p/virtio/overlay/veth/bridge modules),
shares the host's root read-only over 9p, and runs the checkout's own tests in
the guest with this same Python and virtual environment. The guest has no
network device. Its console is this process's output; its exit status and
JUnit XML come back through a second, writable 9p share.

A watchdog in the guest reports what every process is doing and interrupts
pytest shortly before the run's bound (so that its summary comes out); a
guest whose kernel stopped, and so never reported, is booted once more.

Usage: ``python tests/guest/run.py [pytest arguments]`` (default: the v2 tier
below, without the soak tests). It exits with pytest's status in the guest,
and skips (status 0, the reason printed) only when qemu or the kernel cannot
be had here.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(os.path.dirname(HERE))
#: Where tests/install-system-deps.sh unpacks the guest's kernel.
KERNEL_DIR = os.environ.get("SV_GUEST_KERNEL_DIR", "/usr/local/share/supervisor-tests/guest-kernel")
#: Modules the guest loads, with what they depend on first.
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay", "veth", "bridge", "virtio_rng")
#: The v2 tier: the cgroup and resource suites, rootless mode (with a delegated
#: subtree), the OCI runtime's cgroup tests, and a smoke subset of the others.
DEFAULT_TESTS = (
    "tests/test_cgroups.py",
    "tests/test_resources.py",
    "tests/test_timens.py",
    "tests/test_init.py",
    "tests/test_isolation.py",
    "tests/test_supervision.py",
    "tests/test_reliability.py",
    "tests/test_rootless.py",
    # The OCI runtime's cgroup work on a pure v2 host (the rest of its suite
    # checks the runtime, not the cgroup version).
    "tests/test_oci.py::test_lifecycle_create_start_kill_delete",
    "tests/test_oci.py::test_resources_become_the_cgroup_limits",
    "tests/test_oci.py::test_exec_enters_the_running_container",
)
#: Soak and load tests: they check the supervisor, not the cgroup version,
#: and take minutes when emulated.
SOAK_TESTS = (
    "tests/test_supervision.py::test_a_lagging_watcher_costs_a_bounded_buffer",
    "tests/test_reliability.py::test_supervisor_memory_stays_flat",
    "tests/test_reliability.py::test_a_thousand_containers_sixty_four_at_a_time",
    "tests/test_supervision.py::test_sigkilled_mid_run_under_load_leaves_nothing",
    "tests/test_reliability.py::test_cancellation_at_random_moments",
    "tests/test_reliability.py::test_concurrent_cancellation_at_random_moments",
    "tests/test_reliability.py::test_whole_supervisor_cancelled_at_random_moments",
    "tests/test_reliability.py::test_faults_at_every_phase_and_parent_step_under_load",
)
#: The whole run's bound: boot plus tests.
TIMEOUT_S = float(os.environ.get("SV_GUEST_TIMEOUT_S", "900"))
#: How long before TIMEOUT_S the guest's watchdog reports and interrupts pytest.
WATCHDOG_MARGIN_S = 120
#: Fresh boots after a run whose guest kernel stopped (no watchdog report).
STALL_RETRIES = 1
#: A test that runs this long gets every thread's Python traceback printed
#: (faulthandler works even when the main thread is stuck in a system call),
#: before pytest-timeout's bound fails it.
GUEST_PYTEST_OPTIONS = ("-o", "faulthandler_timeout=240")


def skip(reason: str) -> None:
    """Say why the tier cannot run here and end with status 0."""
    print(f"v2-guest: SKIPPED: {reason}", flush=True)
    sys.exit(0)


def find_kernel() -> tuple[str, str]:
    """The guest's kernel image and its modules folder."""
    images = sorted(glob.glob(os.path.join(KERNEL_DIR, "vmlinuz-*")))
    if not images:
        skip(f"no guest kernel in {KERNEL_DIR} (tests/install-system-deps.sh fetches it as root)")
    image = images[-1]
    version = os.path.basename(image)[len("vmlinuz-") :]
    modules = os.path.join(KERNEL_DIR, "lib", "modules", version)
    if not os.path.isdir(modules):
        skip(f"the guest kernel's modules are missing ({modules})")
    return image, modules


def module_order(modules: str, wanted: tuple[str, ...]) -> list[tuple[str, str]]:
    """Each wanted module after its dependencies (read from its ``.modinfo``).

    Returns:
        ``(name, path)`` pairs in load order.
    """
    files: dict[str, str] = {}
    for folder, _, names in os.walk(modules):
        for name in names:
            if name.endswith(".ko"):
                files[name[:-3].replace("-", "_")] = os.path.join(folder, name)
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name not in files:
            raise SystemExit(f"v2-guest: module {name} is not in {modules}")
        with open(files[name], "rb") as f:
            found = re.search(rb"depends=([^\0]*)\0", f.read())
        for dep in found.group(1).decode().split(",") if found else ():
            if dep:
                visit(dep.replace("-", "_"))
        order.append(name)

    for name in wanted:
        visit(name)
    return [(name, files[name]) for name in order]


class Cpio:
    """A cpio archive in the kernel's initramfs format ("newc")."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ino = 1

    def add(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        """Append one entry (``mode`` includes the file type bits)."""
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.ino += 1
        self.data += b"070701" + b"".join(b"%08x" % value for value in fields) + encoded
        self.data += b"\0" * (-len(self.data) % 4) + body
        self.data += b"\0" * (-len(self.data) % 4)

    def finish(self) -> bytes:
        """The archive with its trailer."""
        self.add("TRAILER!!!", 0)
        return bytes(self.data)


def initramfs(busybox: str, modules: list[tuple[str, str]], env: dict[str, str]) -> bytes:
    """The guest's initramfs: busybox, ``/init``, the modules, ``/guest.env``."""
    archive = Cpio()
    for folder in ("bin", "dev", "modules", "proc", "sys", "newroot"):
        archive.add(folder, 0o40755)
    archive.add("dev/console", 0o20600, rdev=(5, 1))
    with open(busybox, "rb") as f:
        archive.add("bin/busybox", 0o100755, f.read())
    with open(os.path.join(HERE, "init.sh"), "rb") as f:
        archive.add("init", 0o100755, f.read())
    for name, path in modules:
        with open(path, "rb") as f:
            archive.add(f"modules/{name}.ko", 0o100644, f.read())
    text = "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
    archive.add("guest.env", 0o100644, text.encode())
    return archive.finish()


def summary(junit: str) -> str:
    """One line from the guest's JUnit XML."""
    try:
        suites = ET.parse(junit).getroot()
    except (OSError, ET.ParseError) as exc:
        return f"no JUnit XML from the guest ({exc})"
    suite = suites if suites.tag == "testsuite" else suites[0]
    total = int(suite.get("tests", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    return f"{total - failed - skipped} passed, {failed} failed, {skipped} skipped"


def kept_paths() -> list[str]:
    """The host's paths the guest needs that lie below /tmp or /var/tmp, which
    the guest covers with fresh tmpfs: the checkout, the virtual environment,
    the Python it was made from (nested ones left out)."""
    wanted = sorted({os.path.realpath(p) for p in (CHECKOUT, sys.prefix, sys.base_prefix)})
    below = [p for p in wanted if p.startswith(("/tmp/", "/var/tmp/"))]
    return [p for p in below if not any(p.startswith(q + "/") for q in below if q != p)]


def main(argv: list[str]) -> int:
    """Boot the guest, run the tests in it, report.

    Returns:
        pytest's exit status in the guest (1 when the guest gave none).
    """
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        skip("qemu-system-x86_64 is not installed (Debian's qemu-system-x86)")
    busybox = next((p for p in ("/bin/busybox", "/usr/bin/busybox") if os.path.exists(p)), None)
    if busybox is None:
        skip("no static busybox for the initramfs (Debian's busybox-static)")
    image, modules = find_kernel()
    pytest_bin = os.path.join(os.path.dirname(sys.executable), "pytest")
    load_order = module_order(modules, MODULES)
    args = argv or [*DEFAULT_TESTS, *(f"--deselect={test}" for test in SOAK_TESTS)]
    env = {
        "SV_GUEST_MODULES": " ".join(name for name, _ in load_order),
        "SV_GUEST_CHECKOUT": CHECKOUT,
        "SV_GUEST_PYTEST": pytest_bin,
        "SV_GUEST_KEEP": shlex.join(kept_paths()),
        "SV_GUEST_ARGS": shlex.join(["-q", "-rfEs", "--color=no", "--durations=25", *GUEST_PYTEST_OPTIONS, *args]),
        # The guest's watchdog reports and interrupts a run that would reach
        # TIMEOUT_S (boot and the end of pytest's output left room).
        "SV_GUEST_WATCHDOG_S": str(max(int(TIMEOUT_S) - WATCHDOG_MARGIN_S, 30)),
    }
    shown = " ".join(arg for arg in args if not arg.startswith("--deselect="))
    for attempt in range(1 + STALL_RETRIES):
        print(f"v2-guest: booting {os.path.basename(image)}, tests: {shown}", flush=True)
        rc = boot(qemu, image, initramfs(busybox, load_order, env))
        if rc is not None:
            return rc
        if attempt < STALL_RETRIES:
            print("v2-guest: the guest's kernel stopped (no watchdog report): booting it once more", flush=True)
    return 1


def boot(qemu: str, image: str, initrd_data: bytes) -> int | None:
    """Run the guest once.

    Returns:
        pytest's status in the guest, 1 when the guest gave none, or ``None``
        when the guest's kernel stopped: the run reached TIMEOUT_S without the
        guest's watchdog having reported (a stall of the emulated machine, not
        a test's result).
    """
    # Software emulation: KVM inside this VM hangs the guest at boot.
    accel = os.environ.get("SV_GUEST_ACCEL", "tcg")
    work = tempfile.mkdtemp(prefix="sv-guest-")
    try:
        results = os.path.join(work, "results")
        os.mkdir(results)
        initrd = os.path.join(work, "initrd")
        with open(initrd, "wb") as f:
            f.write(initrd_data)
        cmd = [
            qemu,
            "-accel", accel,
            "-cpu", "max",
            "-smp", "2",
            "-m", "2048",
            "-kernel", image,
            "-initrd", initrd,
            "-append", "console=ttyS0 cgroup_no_v1=all panic=-1 quiet loglevel=1",
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={results},mount_tag=results,security_model=none",
            "-device", "virtio-rng-pci",
            "-nic", "none",
            "-display", "none",
            "-serial", "stdio",
            "-monitor", "none",
            "-no-reboot",
        ]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        try:
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            if os.path.exists(os.path.join(results, "watchdog")):
                print(f"v2-guest: FAILED: no end after {TIMEOUT_S:.0f} s; the guest was killed", flush=True)
                return 1
            print(f"v2-guest: no end after {TIMEOUT_S:.0f} s ({accel}); the guest was killed", flush=True)
            return None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        elapsed = time.monotonic() - started
        try:
            with open(os.path.join(results, "rc")) as f:
                rc = int(f.read().strip())
        except (OSError, ValueError):
            status = proc.returncode
            print(f"v2-guest: FAILED: the guest ended (qemu status {status}) without a test status", flush=True)
            return 1
        line = summary(os.path.join(results, "junit.xml"))
        print(f"v2-guest: {line}; pytest status {rc}; {elapsed:.0f} s with the boot", flush=True)
        return rc
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
