"""Parent-side user namespace step: writing ``uid_map`` and ``gid_map``."""

from __future__ import annotations

import os
import select


def write_id_maps(pid: int, pidfd: int, base: int, size: int) -> None:
    """Map container ids ``0..size-1`` to host ids ``base..base+size-1``.

    The process is addressed by PID only after opening ``/proc/<pid>``, and the
    pidfd proves it is still the same, live process (a PID is reusable; an
    unreaped pidfd target is not), so the maps can never land in another
    process's namespace.

    Raises:
        ProcessLookupError: the container died before its maps were written.
        OSError: the kernel refused a write (naming the file).
    """
    dirfd = os.open(f"/proc/{pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if poller.poll(0):
            raise ProcessLookupError(f"container PID {pid} exited before its id maps were written")
        line = f"0 {base} {size}\n".encode()
        for name in ("uid_map", "gid_map"):
            fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=dirfd)
            try:
                os.write(fd, line)
            except OSError as exc:
                raise OSError(exc.errno, f"write /proc/{pid}/{name} {line.decode().strip()!r}: {exc.strerror}") from exc
            finally:
                os.close(fd)
    finally:
        os.close(dirfd)
