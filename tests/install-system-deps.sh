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
# The OCI runtime's real clients (tests/test_oci.py skips without them):
# podman with its conmon, and catatonit for podman run --init.
command -v podman >/dev/null 2>&1 || need+=(podman)
[ -x /usr/libexec/podman/catatonit ] || command -v catatonit >/dev/null 2>&1 || need+=(catatonit)
# containerd and ctr, for a run through its runc shim.
command -v ctr >/dev/null 2>&1 || need+=(containerd)
# The rootless tests' subordinate ids (tests/test_rootless.py skips those without).
command -v newuidmap >/dev/null 2>&1 || need+=(uidmap)
# benchmarks/floor.c (the C floor of our isolation) is built with cc and the
# kernel's headers.
command -v cc >/dev/null 2>&1 || need+=(gcc)
[ -f /usr/include/linux/seccomp.h ] || need+=(linux-libc-dev)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install-system-deps: not root; missing: ${need[*]} (tests needing them will skip)" >&2
        exit 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# Docker's own default seccomp profile (tests/test_hardening.py loads it):
# extracted from Debian's docker source package, without installing that
# package (its dependencies are heavy). Nothing of Docker is kept in our tree.
DOCKER_PROFILE=/usr/local/share/supervisor-tests/docker-default-seccomp.json
if [ ! -s "$DOCKER_PROFILE" ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$(dirname "$DOCKER_PROFILE")"
    tmp=$(mktemp -d)
    if (cd "$tmp" && apt-get download -qq golang-github-docker-docker-dev >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get download -qq golang-github-docker-docker-dev; }); then
        dpkg-deb --fsys-tarfile "$tmp"/golang-github-docker-docker-dev_*.deb \
            | tar -x -O ./usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json \
            > "$DOCKER_PROFILE.new" && mv "$DOCKER_PROFILE.new" "$DOCKER_PROFILE"
    else
        echo "install-system-deps: could not fetch Docker's default seccomp profile (that test will skip)" >&2
    fi
    rm -rf "$tmp"
fi

# The v2 guest tier (tests/guest/run.py): qemu, and a Debian kernel that boots
# with cgroup v1 off. The kernel package is downloaded, not installed (this
# machine keeps its own kernel); its image and the module folders the guest's
# initramfs takes from are unpacked into GUEST_KERNEL.
GUEST_KERNEL=/usr/local/share/supervisor-tests/guest-kernel
if [ "$(id -u)" = 0 ]; then
    if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends qemu-system-x86 \
            || { apt-get update -qq && apt-get install -y -qq --no-install-recommends qemu-system-x86; } \
            || echo "install-system-deps: could not install qemu-system-x86 (the v2 guest tier will skip)" >&2
    fi
    if ! ls "$GUEST_KERNEL"/vmlinuz-* >/dev/null 2>&1; then
        tmp=$(mktemp -d)
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
        if [ -n "$pkg" ] && (cd "$tmp" && { apt-get download -qq "$pkg" 2>/dev/null \
                || { apt-get update -qq && apt-get download -qq "$pkg"; }; }); then
            mkdir -p "$tmp/root" "$GUEST_KERNEL.new"
            dpkg-deb -x "$tmp"/linux-image-*.deb "$tmp/root"
            version=$(basename "$tmp"/root/lib/modules/*)
            for part in drivers/virtio drivers/net drivers/char/hw_random net fs; do
                mkdir -p "$GUEST_KERNEL.new/lib/modules/$version/kernel/$(dirname $part)"
                cp -a "$tmp/root/lib/modules/$version/kernel/$part" \
                    "$GUEST_KERNEL.new/lib/modules/$version/kernel/$part"
            done
            cp "$tmp/root/boot/vmlinuz-$version" "$GUEST_KERNEL.new/"
            rm -rf "$GUEST_KERNEL" && mv "$GUEST_KERNEL.new" "$GUEST_KERNEL"
        else
            echo "install-system-deps: could not download Debian's kernel package (the v2 guest tier will skip)" >&2
        fi
        rm -rf "$tmp"
    fi
fi
