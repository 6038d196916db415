"""Spec and Mount: validated before anything starts, errors naming the field."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import supervisor
from supervisor import Limits, Mount, Spec
from supervisor._limits import MAX_CPUS, MAX_MEMORY_BYTES, MAX_PIDS, MIN_MEMORY_BYTES
from supervisor._spec import MAX_GRACE_PERIOD_S


def test_minimal_spec_defaults() -> None:
    spec = Spec(["true"])
    assert spec.command == ("true",)
    assert spec.rootfs is None
    assert spec.hostname is None
    assert spec.uid == 0
    assert spec.gid == 0
    assert spec.mounts == ()
    assert dict(spec.env) == {}
    assert spec.cwd == "/"
    assert spec.read_only is False
    assert spec.grace_period > 0


@pytest.mark.parametrize(
    ("kwargs", "exc", "field"),
    [
        # command: a list of str, never a string to split
        ({"command": "ls -l"}, TypeError, "command"),
        ({"command": b"ls"}, TypeError, "command"),
        ({"command": None}, TypeError, "command"),
        ({"command": iter(["ls"])}, TypeError, "command"),
        ({"command": []}, ValueError, "command"),
        ({"command": ["ls", 1]}, TypeError, "command"),
        ({"command": ["ls", b"-l"]}, TypeError, "command"),
        ({"command": ["ls", "a\x00b"]}, ValueError, "command"),
        ({"command": [""]}, ValueError, "command"),
        # rootfs
        ({"rootfs": 3}, TypeError, "rootfs"),
        ({"rootfs": ""}, ValueError, "rootfs"),
        ({"rootfs": b"/srv/root"}, TypeError, "rootfs"),
        # hostname
        ({"hostname": 5}, TypeError, "hostname"),
        ({"hostname": ""}, ValueError, "hostname"),
        ({"hostname": "-leading-dash"}, ValueError, "hostname"),
        ({"hostname": "trailing-"}, ValueError, "hostname"),
        ({"hostname": "has space"}, ValueError, "hostname"),
        ({"hostname": "under_score"}, ValueError, "hostname"),
        ({"hostname": "x" * 65}, ValueError, "hostname"),
        ({"hostname": "a\x00b"}, ValueError, "hostname"),
        # ids
        ({"uid": -1}, ValueError, "uid"),
        ({"uid": 65536}, ValueError, "uid"),
        ({"uid": "0"}, TypeError, "uid"),
        ({"uid": True}, TypeError, "uid"),
        ({"uid": 1.0}, TypeError, "uid"),
        ({"gid": -5}, ValueError, "gid"),
        ({"gid": 70000}, ValueError, "gid"),
        ({"gid": "0"}, TypeError, "gid"),
        ({"uid": 10, "map_size": 10}, ValueError, "uid"),
        ({"map_base": 0}, ValueError, "map_base"),
        ({"map_base": "100000"}, TypeError, "map_base"),
        ({"map_size": 0}, ValueError, "map_size"),
        ({"map_size": 2**32}, ValueError, "map_size"),
        ({"map_size": False}, TypeError, "map_size"),
        # mounts
        ({"mounts": "/a:/b"}, TypeError, "mounts"),
        ({"mounts": Mount("/a", "/b")}, TypeError, "mounts"),
        ({"mounts": [("/a", "/b")]}, TypeError, "mounts"),
        ({"mounts": ["/a:/b"]}, TypeError, "mounts"),
        # env
        ({"env": ["A=1"]}, TypeError, "env"),
        ({"env": {"A": 1}}, TypeError, "env"),
        ({"env": {1: "a"}}, TypeError, "env"),
        ({"env": {"A=B": "1"}}, ValueError, "env"),
        ({"env": {"": "1"}}, ValueError, "env"),
        ({"env": {"A": "x\x00y"}}, ValueError, "env"),
        # cwd
        ({"cwd": "tmp"}, ValueError, "cwd"),
        ({"cwd": ""}, ValueError, "cwd"),
        ({"cwd": "/a\x00b"}, ValueError, "cwd"),
        ({"cwd": pathlib.PurePosixPath("/tmp")}, TypeError, "cwd"),
        # flags and numbers
        ({"read_only": 1}, TypeError, "read_only"),
        ({"read_only": "yes"}, TypeError, "read_only"),
        ({"grace_period": -1}, ValueError, "grace_period"),
        ({"grace_period": "5"}, TypeError, "grace_period"),
        ({"grace_period": True}, TypeError, "grace_period"),
    ],
)
def test_bad_values_name_the_field(kwargs: dict[str, Any], exc: type[Exception], field: str) -> None:
    kwargs = {"command": ["true"], **kwargs}
    with pytest.raises(exc, match=rf"\bSpec\.{field}\b"):
        Spec(**kwargs)


def test_command_is_copied_to_a_tuple() -> None:
    argv = ["echo", "a b", "  c  "]
    spec = Spec(argv)
    argv.append("later")
    # Never split on whitespace, never affected by the caller's list.
    assert spec.command == ("echo", "a b", "  c  ")


def test_env_is_frozen_and_copied() -> None:
    env = {"A": "1"}
    spec = Spec(["true"], env=env)
    env["B"] = "2"
    assert dict(spec.env) == {"A": "1"}
    with pytest.raises(TypeError):
        spec.env["C"] = "3"  # type: ignore[index]


def test_spec_is_frozen() -> None:
    spec = Spec(["true"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.uid = 5  # type: ignore[misc]


def test_gid_defaults_to_uid() -> None:
    assert Spec(["true"], uid=1000).gid == 1000
    assert Spec(["true"], uid=1000, gid=50).gid == 50
    assert Spec(["true"], uid=0, gid=0).gid == 0


def test_valid_edge_values() -> None:
    assert Spec(["true"], hostname="a.b-c.d9").hostname == "a.b-c.d9"
    assert Spec(["true"], hostname="x" * 63).hostname == "x" * 63
    assert Spec(["true"], uid=65535).uid == 65535
    assert Spec(["true"], uid=9, map_size=10).uid == 9
    assert Spec(["true"], grace_period=0).grace_period == 0
    assert Spec(["true"], env={"EMPTY": ""}).env["EMPTY"] == ""


def test_rootfs_is_made_absolute_and_accepts_pathlike() -> None:
    spec = Spec(["true"], rootfs="relative/root")
    assert spec.rootfs == os.path.join(os.getcwd(), "relative/root")
    assert Spec(["true"], rootfs=pathlib.Path("/srv/root")).rootfs == "/srv/root"  # type: ignore[arg-type]


def test_check_host_names_missing_paths(host_dir: pathlib.Path) -> None:
    missing = str(host_dir / "missing")
    Spec(["true"], rootfs=str(host_dir)).check_host()
    with pytest.raises(ValueError, match=r"Spec\.rootfs"):
        Spec(["true"], rootfs=missing).check_host()
    # A file is not a root folder.
    (host_dir / "file").write_text("x")
    with pytest.raises(ValueError, match=r"Spec\.rootfs"):
        Spec(["true"], rootfs=str(host_dir / "file")).check_host()
    with pytest.raises(ValueError, match=r"Spec\.mounts.*missing"):
        Spec(["true"], mounts=[Mount(missing, "/mnt")]).check_host()
    Spec(["true"], mounts=[Mount(str(host_dir / "file"), "/mnt/file")]).check_host()


def test_to_json_is_json() -> None:
    spec = Spec(
        ["sh", "-c", "echo hi"],
        hostname="box",
        uid=7,
        env={"A": "1"},
        cwd="/tmp",
        mounts=[Mount("/src", "/dst", read_only=True)],
    )
    data = json.loads(json.dumps(spec.to_json()))
    # Every field, by its name: derived from the field list, none can be missed.
    assert list(data) == [f.name for f in dataclasses.fields(Spec)]
    assert data["command"] == ["sh", "-c", "echo hi"]
    assert data["hostname"] == "box"
    assert data["uid"] == 7
    assert data["gid"] == 7
    assert data["env"] == {"A": "1"}
    assert data["cwd"] == "/tmp"
    assert data["mounts"] == [{"source": "/src", "target": "/dst", "read_only": True, "idmap": None}]


# -- Mount -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "exc", "field"),
    [
        (("relative", "/dst"), None, None),
        (("/src", "dst"), ValueError, "target"),
        (("/src", "/"), ValueError, "target"),
        (("", "/dst"), ValueError, "source"),
        (("/src", ""), ValueError, "target"),
        ((5, "/dst"), TypeError, "source"),
        (("/src", None), TypeError, "target"),
        (("/s\x00rc", "/dst"), ValueError, "source"),
        (("/src", "/dst", "yes"), TypeError, "read_only"),
        (("/src", "/dst", 1), TypeError, "read_only"),
    ],
)
def test_mount_validation(args: tuple[Any, ...], exc: type[Exception] | None, field: str | None) -> None:
    if exc is None:
        assert Mount(*args).source == args[0]
        return
    with pytest.raises(exc, match=rf"\bMount\.{field}\b"):
        Mount(*args)


def test_mount_accepts_pathlike() -> None:
    m = Mount(pathlib.Path("/srv/data"), pathlib.PurePosixPath("/data"))  # type: ignore[arg-type]
    assert (m.source, m.target, m.read_only) == ("/srv/data", "/data", False)
    assert isinstance(m.source, str)
    assert isinstance(m.target, str)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/src:/dst", Mount("/src", "/dst", False)),
        ("/src:/dst:ro", Mount("/src", "/dst", True)),
        ("/src:/dst:rw", Mount("/src", "/dst", False)),
        ("/src:/dst:idmap", Mount("/src", "/dst", False, idmap=True)),
        ("/src:/dst:ro,noidmap", Mount("/src", "/dst", True, idmap=False)),
        ("/a b:/c d", Mount("/a b", "/c d", False)),
        ("rel/dir:/dst", Mount(os.path.join(os.getcwd(), "rel/dir"), "/dst", False)),
    ],
)
def test_mount_parse(text: str, expected: Mount) -> None:
    assert Mount.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "exc", "match"),
    [
        ("/src", ValueError, "SRC:DST"),
        ("/src:/dst:ro:extra", ValueError, "SRC:DST"),
        ("/src:/dst:rx", ValueError, "unknown option 'rx'"),
        ("/src:/dst:", ValueError, "unknown option ''"),
        ("/src:/dst:ro,U", ValueError, "unknown option 'U'"),
        ("/src:dst", ValueError, r"Mount\.target"),
        (":/dst", ValueError, r"Mount\.source"),
        ("/src:", ValueError, r"Mount\.target"),
    ],
)
def test_mount_parse_rejects(text: str, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        Mount.parse(text)


def test_tmpfs_options_are_checked() -> None:
    spec = Spec(["true"], tmpfs={"/run": "size=64m,mode=1777,noexec", "/w": ""})
    assert dict(spec.tmpfs) == {"/run": "size=64m,mode=1777,noexec", "/w": ""}
    for tmpfs, match in (
        ({"run": ""}, "absolute"),
        ({"/": ""}, "absolute"),
        ({"/run": "size=big"}, "bad value"),
        ({"/run": "mode=999"}, "bad value"),
        ({"/run": "suid"}, "unknown option 'suid'"),
        ({"/run": "dev"}, "unknown option 'dev'"),
        ({f"/t{i}": "" for i in range(9)}, "at most 8"),
    ):
        with pytest.raises(ValueError, match=match):
            Spec(["true"], tmpfs=tmpfs)
    with pytest.raises(TypeError):
        Spec(["true"], tmpfs=["/run"])  # type: ignore[arg-type]


def test_records_are_dataclasses_to_their_users() -> None:
    """supervisor's records are made without the dataclasses module, and stay dataclasses."""
    spec = Spec(["true"], hostname="a", env={"K": "v"})
    assert dataclasses.is_dataclass(spec)
    assert [f.name for f in dataclasses.fields(Spec)][:3] == ["command", "rootfs", "hostname"]
    other = dataclasses.replace(spec, hostname="b")
    assert (other.hostname, other.command, dict(other.env)) == ("b", ("true",), {"K": "v"})
    assert other != spec
    assert dataclasses.replace(other, hostname="a") == spec
    assert hash(Mount("/a", "/b")) == hash(Mount("/a", "/b"))
    assert len({Mount("/a", "/b"), Mount("/a", "/b"), Mount("/a", "/c")}) == 2
    assert repr(Mount("/a", "/b")) == "Mount(source='/a', target='/b', read_only=False, idmap=None)"
    assert dataclasses.asdict(Mount("/a", "/b", True)) == {
        "source": "/a",
        "target": "/b",
        "read_only": True,
        "idmap": None,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.hostname = "c"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Mount("/a")  # type: ignore[call-arg]
    # A default factory gives each instance its own value; a mutable record takes assignments.
    first, second = supervisor.SweepReport(), supervisor.SweepReport()
    first.owners.append("x")
    assert (first.owners, second.owners) == (["x"], [])
    first.errors = ["e"]
    assert first == supervisor.SweepReport(owners=["x"], errors=["e"])
    with pytest.raises(TypeError, match="unhashable"):
        hash(first)


# -- bad input: the classes of mistake, with generated values ------------------


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(min_value=-(2**70), max_value=2**70))
def test_grace_period_is_a_finite_bounded_duration(value: float) -> None:
    """Every wait in cleanup has a finite bound: nan, inf and huge values are refused by name."""
    if 0 <= value <= MAX_GRACE_PERIOD_S:
        assert Spec(["true"], grace_period=value).grace_period == value
    else:
        with pytest.raises(ValueError, match=r"Spec\.grace_period"):
            Spec(["true"], grace_period=value)


@given(
    field=st.sampled_from(["memory_bytes", "pids", "cpus", "cpu_weight"]),
    value=st.integers(min_value=-(2**66), max_value=2**66) | st.floats(allow_nan=True, allow_infinity=True),
)
def test_limits_are_checked_against_what_the_kernel_takes(field: str, value: float) -> None:
    """A limit is in range or refused naming the field, never passed on to fail in a later phase."""
    bounds = {
        "memory_bytes": (MIN_MEMORY_BYTES, MAX_MEMORY_BYTES),
        "pids": (1, MAX_PIDS),
        "cpus": (0.01, MAX_CPUS),
        "cpu_weight": (1, 10_000),
    }
    low, high = bounds[field]
    wrong_type = field != "cpus" and not isinstance(value, int)
    if wrong_type or not low <= value <= high:
        with pytest.raises((TypeError, ValueError), match=rf"Limits\.{field}"):
            Limits(**{field: value})
    else:
        assert getattr(Limits(**{field: value}), field) == value


@given(st.lists(st.sampled_from(["/a", "/a/", "//a", "/a/.", "/b", "/b/../a", "/c/d", "/c/d/"]), max_size=4))
def test_mount_targets_are_distinct_after_normalising(targets: list[str]) -> None:
    mounts = [Mount("/src", t) for t in targets]
    normal = [os.path.normpath("/" + t.lstrip("/")) for t in targets]
    if len(set(normal)) == len(normal):
        assert len(Spec(["true"], mounts=mounts).mounts) == len(targets)
    else:
        with pytest.raises(ValueError, match="two mounts at"):
            Spec(["true"], mounts=mounts)


@pytest.mark.parametrize("target", ["/proc", "/proc/", "/proc/sys", "/sys", "//sys/fs/cgroup", "/proc/../proc/1"])
def test_no_bind_covers_the_containers_proc_or_sys(target: str) -> None:
    with pytest.raises(ValueError, match="no bind may cover it"):
        Spec(["true"], mounts=[Mount("/proc", target)])
    assert Spec(["true"], mounts=[Mount("/proc", "/procfs")]).mounts  # only the path itself and below


def test_a_rootfs_that_resolves_to_the_host_root_is_refused(tmp_path: pathlib.Path) -> None:
    (tmp_path / "root").symlink_to("/")
    with pytest.raises(ValueError, match="is the host's root"):
        Spec(["true"], rootfs=str(tmp_path / "root")).check_host()
    with pytest.raises(ValueError, match="is the host's root"):
        Spec(["true"], rootfs="/").check_host()
