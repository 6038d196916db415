"""OCI runtime-spec and Docker seccomp JSON profiles, compiled with libseccomp.

What a profile may say is in :mod:`.seccomp`'s overview (the ``a path``
entry); :func:`compile_oci` turns the parsed JSON into a
:class:`~.seccomp.CompiledFilter`, evaluating Docker's conditions against the
container's kept capabilities and this host. Imported only when a container
names a JSON profile.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

from .._capabilities import CAP_NUMBERS
from .._sys import linux
from .seccomp import _MACHINE, CompiledFilter, _export, _lib, new_filter

#: libseccomp's native architecture name, per ``_MACHINE``.
_SCMP_NATIVE = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64", "arm64": "SCMP_ARCH_AARCH64"}

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (3 ms for a command line)
if TYPE_CHECKING:
    from typing import Any

#: Profile action names -> the binding's constant of the same meaning.
_ACTIONS_SIMPLE = {
    "SCMP_ACT_KILL": "KILL",
    "SCMP_ACT_KILL_THREAD": "KILL_THREAD",
    "SCMP_ACT_KILL_PROCESS": "KILL_PROCESS",
    "SCMP_ACT_TRAP": "TRAP",
    "SCMP_ACT_ALLOW": "ALLOW",
    "SCMP_ACT_LOG": "LOG",
}

#: Arguments the kernel reads narrower than the 64 bits seccomp compares:
#: syscall -> {argument index: bits}, from the x86-64 syscall signatures
#: (``int``, ``unsigned int``, ``pid_t``, ``uid_t``, ``gid_t``, ``clockid_t``
#: 32 bits; ``umode_t`` 16; ``clone``'s flags are cut to 32 by the kernel).
#: A profile's ``EQ`` and ``MASKED_EQ`` on such an argument compare only
#: those bits, so that set high bits cannot slip past a rule.
_NARROW_ARGS: dict[str, dict[int, int]] = {
    **{key: {0: 32, 1: 32, 2: 32} for key in ("socket", "socketpair")},
    **{key: {0: 32, 1: 32, 2: 32} for key in ("setsockopt", "getsockopt")},
    **{key: {0: 32, 2: 32} for key in ("bind", "connect")},
    **{key: {0: 32} for key in ("getsockname", "getpeername")},
    "shutdown": {0: 32, 1: 32},
    "listen": {0: 32, 1: 32},
    "accept4": {0: 32, 3: 32},
    **{key: {0: 32, 3: 32} for key in ("sendto", "recvfrom")},
    **{key: {0: 32, 2: 32} for key in ("sendmsg", "recvmsg")},
    "personality": {0: 32},
    "ioctl": {0: 32, 1: 32},
    "fcntl": {0: 32, 1: 32},
    "flock": {0: 32, 1: 32},
    "prctl": {0: 32},
    "clone": {0: 32},
    "setns": {0: 32, 1: 32},
    "seccomp": {0: 32, 1: 32},
    "bpf": {0: 32},
    "keyctl": {0: 32},
    "syslog": {0: 32},
    "reboot": {0: 32, 1: 32, 2: 32},
    "kill": {0: 32, 1: 32},
    "tkill": {0: 32, 1: 32},
    "tgkill": {0: 32, 1: 32, 2: 32},
    "kcmp": {0: 32, 1: 32, 2: 32},
    "sched_setscheduler": {0: 32, 1: 32},
    **{key: {0: 32} for key in ("clock_settime", "clock_adjtime", "clock_gettime", "clock_nanosleep")},
    "madvise": {2: 32},
    "memfd_create": {1: 32},
    "pipe2": {1: 32},
    "dup2": {0: 32, 1: 32},
    "dup3": {0: 32, 1: 32, 2: 32},
    "close": {0: 32},
    "umask": {0: 32},
    "open": {1: 32, 2: 16},
    "openat": {0: 32, 2: 32, 3: 16},
    "creat": {1: 16},
    "chmod": {1: 16},
    "fchmod": {0: 32, 1: 16},
    "fchmodat": {0: 32, 2: 16},
    "fchmodat2": {0: 32, 2: 16, 3: 32},
    "mkdir": {1: 16},
    "mkdirat": {0: 32, 2: 16},
    "mknod": {1: 16, 2: 32},
    "mknodat": {0: 32, 2: 16, 3: 32},
    **{key: {0: 32} for key in ("setuid", "setgid", "setfsuid", "setfsgid")},
    **{key: {0: 32, 1: 32} for key in ("setreuid", "setregid")},
    **{key: {0: 32, 1: 32, 2: 32} for key in ("setresuid", "setresgid")},
    **{key: {1: 32, 2: 32} for key in ("chown", "lchown")},
    "fchown": {0: 32, 1: 32, 2: 32},
    "fchownat": {0: 32, 2: 32, 3: 32, 4: 32},
}


def _narrowed(name: str, arg: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """An ``EQ`` or ``MASKED_EQ`` comparison cut to the bits the kernel reads
    of that argument (see :data:`_NARROW_ARGS`); any other comparison as given."""
    index, op, a, b = arg
    bits = _NARROW_ARGS.get(name, {}).get(index)
    if bits is None:
        return arg
    width = (1 << bits) - 1
    lib = _lib()
    if op == lib.EQ:
        return index, lib.MASKED_EQ, width, a & width
    if op == lib.MASKED_EQ:
        return index, op, a & width, b & width
    return arg


#: Profile comparison names -> the binding's operator constant.
_OPS = {
    "SCMP_CMP_NE": "NE",
    "SCMP_CMP_LT": "LT",
    "SCMP_CMP_LE": "LE",
    "SCMP_CMP_EQ": "EQ",
    "SCMP_CMP_GE": "GE",
    "SCMP_CMP_GT": "GT",
    "SCMP_CMP_MASKED_EQ": "MASKED_EQ",
}

#: SECCOMP_FILTER_FLAG_* names accepted in a profile's ``flags`` (<linux/seccomp.h>).
_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": 0,  # PID 1 is single-threaded: nothing to sync
    "SECCOMP_FILTER_FLAG_LOG": 2,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
}

#: Docker's architecture names for conditions, per ``_MACHINE``.
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
#: libseccomp's native architecture name, per ``_MACHINE``.


def compile_oci(profile: dict[str, Any], caps: Iterable[int]) -> CompiledFilter:
    """Compile an OCI/Docker seccomp profile (already parsed from JSON).

    Args:
        profile: the JSON object.
        caps: the kept capability numbers, for Docker's ``caps`` conditions.

    Returns:
        The compiled filter.

    Raises:
        ValueError: an unsupported or malformed field (naming it).
        OSError: libseccomp refused a rule.
    """
    seccomp = _lib()
    if not isinstance(profile, dict):
        raise ValueError("the profile must be a JSON object")
    if profile.get("listenerPath"):
        raise ValueError("listenerPath (SCMP_ACT_NOTIFY) is not supported")
    kept = {"CAP_" + name for name, num in CAP_NUMBERS.items() if num in set(caps)}
    default_action = _action(profile.get("defaultAction"), profile.get("defaultErrnoRet"), "defaultAction")
    flt = new_filter(default_action)
    for arch in _arches(profile):
        if not flt.exist_arch(arch):
            flt.add_arch(arch)
    flags = 0
    for name in profile.get("flags") or ():
        if name not in _FLAGS:
            raise ValueError(f"flags: unsupported {name!r}")
        flags |= _FLAGS[name]
    syscalls = profile.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise ValueError("syscalls must be a list")
    for i, rule in enumerate(syscalls):
        where = f"syscalls[{i}]"
        if not isinstance(rule, dict):
            raise ValueError(f"{where} must be an object")
        if not _condition_holds(rule.get("includes"), rule.get("excludes"), kept, where):
            continue
        action = _action(rule.get("action"), rule.get("errnoRet"), f"{where}.action")
        if action == default_action:
            continue  # libseccomp refuses a rule that does nothing (as runc skips it)
        names = rule.get("names")
        if names is None and "name" in rule:
            names = [rule["name"]]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{where}.names must be a list of syscall names")
        args = [_arg(a, f"{where}.args[{j}]") for j, a in enumerate(rule.get("args") or [])]
        indexes = [a[0] for a in args]
        for name in names:
            number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
            if number < 0:
                continue  # unknown to libseccomp (a newer syscall): skipped, as Docker does
            narrowed = [_narrowed(name, a) for a in args]
            if len(set(indexes)) == len(indexes):
                _add_rule(flt, action, number, [seccomp.Arg(*a) for a in narrowed])
            else:
                # Two comparisons on one argument: libseccomp cannot AND them in
                # one rule; like runc, add one rule per comparison.
                for a in narrowed:
                    _add_rule(flt, action, number, [seccomp.Arg(*a)])
    return CompiledFilter(_export(flt), flags)


def _add_rule(flt: Any, action: int, number: int, args: list[Any]) -> None:
    """Add one rule; one that conflicts with an earlier rule for the same
    syscall and arguments (libseccomp's EEXIST: podman's generated profiles
    list setns both allowed and refused) leaves the earlier one in force."""
    try:
        flt.add_rule(action, number, *args)
    except FileExistsError:
        pass


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{where}: expected a non-negative integer, got {value!r}")
    return value


def _action(name: Any, errno_ret: Any, where: str) -> int:
    """libseccomp's action value; ``errnoRet`` (or ``defaultErrnoRet``) defaults to EPERM, as in runc."""
    seccomp = _lib()
    if name in _ACTIONS_SIMPLE:
        return int(getattr(seccomp, _ACTIONS_SIMPLE[name]))
    code = errno.EPERM if errno_ret is None else _int(errno_ret, where + " errnoRet")
    if name == "SCMP_ACT_ERRNO":
        return int(seccomp.ERRNO(code))
    if name == "SCMP_ACT_TRACE":
        return int(seccomp.TRACE(code))
    if name == "SCMP_ACT_NOTIFY":
        raise ValueError(f"{where}: SCMP_ACT_NOTIFY is not supported")
    raise ValueError(f"{where}: unknown action {name!r}")


def _arch_value(name: Any, where: str) -> int:
    seccomp = _lib()
    if not isinstance(name, str) or not name.startswith("SCMP_ARCH_"):
        raise ValueError(f"{where}: unknown architecture {name!r}")
    value = getattr(seccomp.Arch, name[len("SCMP_ARCH_") :], None)
    if not isinstance(value, int) or value == 0:
        raise ValueError(f"{where}: unknown architecture {name!r}")
    return value


def _arches(profile: dict[str, Any]) -> list[int]:
    """The architectures to add: OCI ``architectures``, or Docker's ``archMap`` entry for this host."""
    out: list[int] = []
    for name in profile.get("architectures") or ():
        out.append(_arch_value(name, "architectures"))
    native = _SCMP_NATIVE.get(_MACHINE)
    for entry in profile.get("archMap") or ():
        if not isinstance(entry, dict):
            raise ValueError("archMap entries must be objects")
        if entry.get("architecture") != native:
            continue
        out.append(_arch_value(entry["architecture"], "archMap"))
        for sub in entry.get("subArchitectures") or ():
            out.append(_arch_value(sub, "archMap.subArchitectures"))
    return out


def _kernel_at_least(version: str, where: str) -> bool:
    try:
        major, minor = (int(p) for p in (*version.split(".")[:2], "0")[:2])
    except ValueError:
        raise ValueError(f"{where}.minKernel: not a version: {version!r}") from None
    return linux.kernel_at_least(major, minor)


def _condition_holds(includes: Any, excludes: Any, kept: set[str], where: str) -> bool:
    """Docker's rule conditions: every included cap/arch present, no excluded one."""
    arch = _GO_ARCH.get(_MACHINE, _MACHINE)
    if includes:
        if not isinstance(includes, dict):
            raise ValueError(f"{where}.includes must be an object")
        if any(cap.upper() not in kept for cap in includes.get("caps") or ()):
            return False
        arches = includes.get("arches") or ()
        if arches and arch not in arches:
            return False
        if includes.get("minKernel") and not _kernel_at_least(str(includes["minKernel"]), where + ".includes"):
            return False
    if excludes:
        if not isinstance(excludes, dict):
            raise ValueError(f"{where}.excludes must be an object")
        if any(cap.upper() in kept for cap in excludes.get("caps") or ()):
            return False
        if arch in (excludes.get("arches") or ()):
            return False
        if excludes.get("minKernel") and _kernel_at_least(str(excludes["minKernel"]), where + ".excludes"):
            return False
    return True


def _arg(arg: Any, where: str) -> tuple[int, int, int, int]:
    """``(index, op, datum_a, datum_b)`` for :class:`seccomp.Arg`.

    For ``SCMP_CMP_MASKED_EQ``, OCI's ``value`` is the mask and ``valueTwo`` the
    value compared, the same order as libseccomp's.
    """
    if not isinstance(arg, dict):
        raise ValueError(f"{where} must be an object")
    index = _int(arg.get("index"), where + ".index")
    if index > 5:
        raise ValueError(f"{where}.index: syscalls have 6 arguments, got {index}")
    op = arg.get("op")
    if op not in _OPS:
        raise ValueError(f"{where}.op: unknown operator {op!r}")
    value = _int(arg.get("value", 0), where + ".value")
    value_two = _int(arg.get("valueTwo", 0), where + ".valueTwo")
    return index, getattr(_lib(), _OPS[op]), value, value_two
