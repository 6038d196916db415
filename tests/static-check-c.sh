#!/bin/bash
# The static check of PID 1's C code (tox -e lint): gcc's -fanalyzer on every
# file, with the build's own flags and its rendered sv_protocol.h.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT
python3 - "$root" "$gen" <<'PY'
import importlib.util, sys, types
# supervisor/_protocol.py and what it imports, as setup.py loads them (a
# stand-in package over the same folder, without the package's __init__).
package = types.ModuleType("_supervisor_build")
package.__path__ = [f"{sys.argv[1]}/supervisor"]
sys.modules["_supervisor_build"] = package
spec = importlib.util.spec_from_file_location("_supervisor_build._protocol", f"{sys.argv[1]}/supervisor/_protocol.py")
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
header = module.c_header()
open(f"{sys.argv[2]}/sv_protocol.h", "w").write(header)
PY
include="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
status=0
for src in "$root"/supervisor/_child/*.c; do
    gcc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O2 -fanalyzer \
        -I"$gen" -I"$include" -c "$src" -o /dev/null || status=1
done
[ "$status" = 0 ] && echo "static-check-c: $(ls "$root"/supervisor/_child/*.c | wc -l) files clean (gcc -fanalyzer)"
exit "$status"
