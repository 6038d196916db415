"""The public surface: what ``supervisor`` exports, and how it presents itself."""

from __future__ import annotations

import inspect
import os
import pathlib
import re
import subprocess
import sys
import types

import pytest
from _util import IN_SANDBOX

import supervisor
import supervisor.testing


def public_names(module: types.ModuleType) -> set[str]:
    return {
        name for name, obj in vars(module).items() if not name.startswith("_") and not isinstance(obj, types.ModuleType)
    }


def test_all_is_sorted_and_unique() -> None:
    assert supervisor.__all__ == sorted(supervisor.__all__)
    assert len(set(supervisor.__all__)) == len(supervisor.__all__)


def test_all_is_exactly_the_public_names() -> None:
    for name in supervisor.__all__:  # the async half is imported on first use
        getattr(supervisor, name)
    assert set(supervisor.__all__) == public_names(supervisor)
    assert set(supervisor.__all__) <= set(dir(supervisor))


def test_exports_belong_to_the_package() -> None:
    for name in supervisor.__all__:
        obj = getattr(supervisor, name)
        if inspect.isclass(obj) or inspect.isroutine(obj):
            assert obj.__module__ == "supervisor", name
            assert inspect.getdoc(obj), f"{name} has no docstring"


def test_required_names_are_exported() -> None:
    required = {"Spec", "Mount", "Result", "Phase", "PhaseTiming", "Supervisor", "Container", "run"}
    required |= {"SupervisorError", "SetupError", "ContainerFailed", "ProtocolError", "CleanupError"}
    assert required <= set(supervisor.__all__)
    assert inspect.iscoroutinefunction(supervisor.run)
    assert inspect.iscoroutinefunction(supervisor.Supervisor.run)
    assert isinstance(supervisor.__version__, str)


def test_error_hierarchy() -> None:
    for cls in (
        supervisor.SetupError,
        supervisor.ContainerFailed,
        supervisor.ProtocolError,
        supervisor.CleanupError,
    ):
        assert issubclass(cls, supervisor.SupervisorError)
    assert issubclass(supervisor.SupervisorError, Exception)


def test_phases_are_ordered() -> None:
    phases = list(supervisor.Phase)
    assert phases == sorted(phases)
    assert phases[0].label == "spawned"
    assert phases[-1].label == "exec"
    assert all(p.label == p.name.lower() for p in phases)
    assert len({p.label for p in phases}) == len(phases)


def test_testing_module() -> None:
    assert supervisor.testing.__all__ == sorted(supervisor.testing.__all__)
    defined_here = {
        name
        for name in public_names(supervisor.testing)
        if getattr(getattr(supervisor.testing, name), "__module__", None) == "supervisor.testing"
    }
    assert set(supervisor.testing.__all__) == defined_here
    for name in supervisor.testing.__all__:
        obj = getattr(supervisor.testing, name)
        assert obj.__module__ == "supervisor.testing"
        assert inspect.getdoc(obj)
    assert "fail_at" in supervisor.testing.__all__


def test_importing_supervisor_does_not_load_test_helpers() -> None:
    code = "import sys, supervisor; print('supervisor.testing' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.skipif(IN_SANDBOX, reason="starts a container (not from a sandbox of pytest --sandbox)")
def test_readme_example_prints_what_it_says(tmp_path: pathlib.Path) -> None:
    """The README's Python example runs, and prints the lines its comments show."""
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(supervisor.__file__).parent.parent)}
    argv = [sys.executable, "-c", code]
    out = subprocess.run(argv, check=False, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    first, second, third = out.stdout.splitlines()
    assert re.fullmatch(r"0 \['[a-z]+-[a-z]+-\d+', '0'\]", first), first
    assert second == "exited 1"
    assert re.fullmatch(r"[a-z]+-[a-z]+-\d+ \d+", third), third
