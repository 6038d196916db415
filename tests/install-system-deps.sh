#!/bin/bash
# Debian packages the tests need (a static busybox to build tiny rootfs, and the
# peers that the benchmark test drives). Installs only what is missing.
set -euo pipefail
need=()
command -v busybox >/dev/null 2>&1 || [ -x /bin/busybox ] || need+=(busybox-static)
# The peers of benchmarks/startup.py (tests/test_benchmark.py skips those missing).
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v crun >/dev/null 2>&1 || need+=(crun)
command -v runc >/dev/null 2>&1 || need+=(runc)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-system-deps: not root; missing: ${need[*]} (tests needing them will skip)" >&2
        exit 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
