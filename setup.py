"""Build of the C extension that runs PID 1's setup (everything else is in pyproject.toml).

``sv_protocol.h`` is rendered from ``supervisor/_protocol.py`` (phases, record
layouts, limits) into the build folder, so the C side can never drift from
the Python declaration.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
CHILD = HERE / "supervisor" / "_child"
#: Strict C11; SV_CFLAGS adds to it (the sanitizer build of the tests).
#: Hidden visibility: calls between our files are direct, never through the
#: PLT (the container's init runs with only this extension mapped, init.c);
#: only PyInit__spawn is exported.
CFLAGS = [
    "-std=c11",
    "-D_GNU_SOURCE",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-O2",
    "-fno-strict-aliasing",
    "-fvisibility=hidden",
]


def _load_protocol() -> types.ModuleType:
    """``supervisor/_protocol.py`` and the modules it imports, without the package
    (whose ``__init__`` needs the extension this build makes): as a stand-in
    package over the same folder."""
    name = "_supervisor_build"
    package = types.ModuleType(name)
    package.__path__ = [str(HERE / "supervisor")]
    sys.modules[name] = package
    spec = importlib.util.spec_from_file_location(f"{name}._protocol", HERE / "supervisor" / "_protocol.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class BuildExt(build_ext):
    """build_ext that renders ``sv_protocol.h`` first."""

    def run(self) -> None:
        out = Path(self.build_temp) / "sv_include"
        out.mkdir(parents=True, exist_ok=True)
        header = _load_protocol().c_header()
        target = out / "sv_protocol.h"
        if not target.exists() or target.read_text() != header:
            target.write_text(header)
        for ext in self.extensions:
            ext.include_dirs.append(str(out))
            ext.depends.append(str(target))
        super().run()


setup(
    ext_modules=[
        Extension(
            "supervisor._child._spawn",
            sources=sorted(str(p.relative_to(HERE)) for p in CHILD.glob("*.c")),
            depends=sorted(str(p.relative_to(HERE)) for p in CHILD.glob("*.h")),
            extra_compile_args=CFLAGS + os.environ.get("SV_CFLAGS", "").split(),
            # Every symbol bound at load time: a lazy binding in the child (which
            # shares our memory) would run the dynamic linker there.
            extra_link_args=["-Wl,-z,now", *os.environ.get("SV_LDFLAGS", "").split()],
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
