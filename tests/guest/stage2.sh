#!/bin/sh
# Runs as PID 1 of the v2 guest, on the host's root (9p, read-only): makes the
# few writable places a test run needs, mounts cgroup2 as the only cgroup
# hierarchy, delegates its controllers to the root's children (what systemd's
# Delegate= does on a host), runs the tests and powers off. The exit status
# and JUnit XML go to the results share that run.py reads.
set -u
off() { sync; busybox poweroff -f 2>/dev/null; echo o > /proc/sysrq-trigger; sleep 5; }
trap off EXIT
# The host's paths that the run needs below /tmp or /var/tmp (a checkout
# there, its virtual environment) stay visible through the fresh tmpfs.
mount -t tmpfs -o mode=755 tmpfs /run
eval "set -- $SV_GUEST_KEEP"
i=0
for path in "$@"; do
    i=$((i + 1)); mkdir -p "/run/sv-keep/$i" && mount --bind "$path" "/run/sv-keep/$i"
done
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
i=0
for path in "$@"; do
    i=$((i + 1)); mkdir -p "$path" && mount --move "/run/sv-keep/$i" "$path"
done
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t devpts -o ptmxmode=0666,gid=5,mode=620 devpts /dev/pts
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
ctrls=$(sed 's/\([a-z_]*\)/+\1/g' /sys/fs/cgroup/cgroup.controllers)
echo "$ctrls" > /sys/fs/cgroup/cgroup.subtree_control
mkdir -p /run/sv-guest-results
mount -t 9p -o trans=virtio,version=9p2000.L results /run/sv-guest-results
busybox ip link set lo up 2>/dev/null || ip link set lo up
echo "v2-guest: up $(cut -d" " -f1 /proc/uptime) s, kernel $(uname -r), cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp
export PYTHONDONTWRITEBYTECODE=1 HYPOTHESIS_STORAGE_DIRECTORY=/tmp/hypothesis
cd "$SV_GUEST_CHECKOUT"
eval "set -- $SV_GUEST_ARGS"
# Shortly before run.py's bound, a watchdog says what every process is doing
# (its state, kernel wait channel and kernel stack; kernel threads only when
# blocked, and the kernel's log) and interrupts pytest, which still prints the
# interrupted test's traceback, its summary and the JUnit XML; a pytest stuck
# in the kernel is killed 30 s later. No watchdog output before run.py's own
# message means that the guest's kernel itself stopped.
watchdog() {
    sleep "$SV_GUEST_WATCHDOG_S" || return
    : > /run/sv-guest-results/watchdog
    echo
    echo "v2-guest: watchdog: pytest still runs after $SV_GUEST_WATCHDOG_S s; load $(cat /proc/loadavg); processes:"
    for d in /proc/[0-9]*; do
        state=$(sed -n 's/^State:[[:space:]]*//p' "$d/status" 2>/dev/null)
        cmd=$( (tr '\0' ' ' < "$d/cmdline") 2>/dev/null | cut -c1-160)
        [ -n "$cmd" ] || case $state in D*) cmd="[$(cat "$d/comm")]" ;; *) continue ;; esac
        echo "-- ${d#/proc/} [$state] wchan=$(cat "$d/wchan" 2>/dev/null) $cmd"
        sed 's/^/     /' "$d/stack" 2>/dev/null
    done
    echo "v2-guest: watchdog: the kernel's log, last lines:"
    dmesg | tail -n 40
    kill -INT "$(cat /run/sv-guest-pytest.pid)"
    sleep 30
    kill -KILL "$(cat /run/sv-guest-pytest.pid)" 2>/dev/null && echo "v2-guest: watchdog: pytest did not end on SIGINT; killed"
}
watchdog &
dog=$!
# pytest in the foreground: a background job of a script starts with SIGINT
# ignored, and would not take the watchdog's interrupt.
sh -c 'echo $$ > /run/sv-guest-pytest.pid && exec "$@"' sh \
    "$SV_GUEST_PYTEST" -p no:cacheprovider --junitxml=/run/sv-guest-results/junit.xml "$@"
echo $? > /run/sv-guest-results/rc
kill "$dog" 2>/dev/null
umount /run/sv-guest-results
