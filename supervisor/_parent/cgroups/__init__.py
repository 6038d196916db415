"""Per-container cgroups on cgroup v1, v2 and hybrid hosts: limits, accounting, kill, removal.

Every container gets one cgroup of its own, created **below the supervisor's
own cgroup** in each hierarchy it needs (read from ``/proc/self/cgroup`` and
mapped to mount points through ``/proc/self/mountinfo``; no path is
hard-coded). Nothing here ever moves the supervisor, writes a file of a cgroup
it did not create, or reuses an existing directory of the same name.

Where each option goes (``cpus`` quota uses ``cpu_period_us``, 100 000 µs by default; v2 wins for a
controller that is enabled for our children on the unified hierarchy, v1 is
used for the rest):

=========================  ==================================================  =========================================
option / operation         cgroup v1 (hierarchy: file)                         cgroup v2 (container's directory)
=========================  ==================================================  =========================================
``memory_bytes``           memory: ``memory.limit_in_bytes``                   ``memory.max``
``memory_swap_bytes``      memory: ``memory.memsw.limit_in_bytes`` (total)     ``memory.swap.max`` = total - memory
whole-container OOM        (none: :meth:`~ContainerCgroup.wait_oom`, kill)     ``memory.oom.group`` = 1 (always)
``memory_reservation...``  memory: ``memory.soft_limit_in_bytes``             ``memory.low``
``memory_swappiness``      memory: ``memory.swappiness``                       (none: refused)
``memory_kernel_tcp...``   memory: ``memory.kmem.tcp.limit_in_bytes``          (none: refused)
``oom_kill_disable``       memory: ``memory.oom_control`` = 1                  (none: refused)
``cpus``                   cpu: ``cpu.cfs_period_us``, ``cpu.cfs_quota_us``    ``cpu.max`` = ``"<quota> <period>"``
``cpu_weight``             cpu: ``cpu.shares`` = weight * 1024 / 100           ``cpu.weight``
``cpuset_cpus/mems``       cpuset: ``cpuset.cpus``, ``cpuset.mems`` (both,     ``cpuset.cpus``, ``cpuset.mems``
                           the parent's where not given)
``device_rules``           devices: ``devices.deny`` ``a``, then each rule     (none: refused)
                           to ``devices.allow`` or ``devices.deny``
``pids``                   pids: ``pids.max``                                  ``pids.max``
attach                     every hierarchy: ``cgroup.procs``                   ``cgroup.procs``
kill                       freezer: ``freezer.state`` FROZEN, SIGKILL each     ``cgroup.kill`` (5.14+; else
                           pid of ``cgroup.procs``, THAWED                     ``cgroup.freeze`` + SIGKILL + thaw)
empty?                     ``cgroup.procs`` of the subtree is empty            ``cgroup.events``: ``populated 0``
``cpu_user_s/system_s``    cpuacct: ``cpuacct.usage`` (ns, exact) split in     ``cpu.stat``: ``user_usec``,
                           the ratio of ``cpuacct.stat`` user/system ticks     ``system_usec`` (no controller needed)
``peak_memory_bytes``      memory: ``memory.max_usage_in_bytes``               ``memory.peak`` (5.19+)
``oom_killed``             memory: ``memory.oom_control``: ``oom_kill``        ``memory.events``: ``oom_kill``,
                                                                               ``oom_group_kill``
wait for an OOM kill       memory: eventfd on ``memory.oom_control`` through   ``memory.events`` (polled; the kernel
                           ``cgroup.event_control``; then ``kill()``           already killed the whole group)
=========================  ==================================================  =========================================

Layout and the v2 delegation rules (the choice, and why):

* v1: ``<mount>/<own cgroup>/<name>`` in each hierarchy that is needed
  (memory always when it is on v1, for accounting; pids and cpu when limited;
  cpuacct and freezer only when there is no v2 directory to account and kill
  with). Co-mounted controllers (``cpu,cpuacct``) share one directory.
* v2: ``<mount>/<own cgroup>/<name>``, always when a cgroup2 hierarchy is
  mounted, even with no controller (``cgroup.kill``, ``cgroup.events`` and the
  core ``cpu.stat`` work without one). A v2 cgroup can only use the
  controllers its parent lists in ``cgroup.subtree_control``, and we never
  write that file of a cgroup we did not create. **No intermediate
  "supervisor-<pid>" parent is created**: its ``cgroup.controllers`` would be
  exactly our own cgroup's ``cgroup.subtree_control``, so it cannot gain a
  controller that a direct child lacks. The one thing that would (moving the
  supervisor into a leaf so that its old cgroup has no processes and may enable
  domain controllers, the no-internal-process rule) is never done here. So a v2
  controller is used exactly when our own cgroup already delegates it (the root
  cgroup, or a cgroup arranged by the deployment); otherwise the v1 hierarchy
  of that controller is used (hybrid); otherwise a limit that needs it raises
  :class:`OSError` (``EOPNOTSUPP``) naming the controller and the file, before
  anything is created. The container's cgroup itself always stays a leaf
  holding processes and never enables controllers for children.

On a pure v2 host, a cgroup other than the root may hand domain controllers
to its children only while it holds no process (the no-internal-process
rule), and ours holds the supervisor: so v2 limits there need the supervisor
in the root cgroup with the controllers enabled for its children, or
``Spec.cgroup_parent`` (:func:`with_parent`): a cgroup without processes
below which the containers' v2 cgroups are made. Without either they are
refused (``EOPNOTSUPP``) while accounting, ``cgroup.kill`` and the freezer
still work.

Crash recovery: record :attr:`ContainerCgroup.planned_paths` in the run
directory's ledger (kind ``"cgroup"``, key ``paths``) before
:meth:`ContainerCgroup.setup`; the sweeper that :mod:`.sweep` registers
hands them to :func:`sweep_paths`.

The synchronous calls (:meth:`~ContainerCgroup.setup`,
:meth:`~ContainerCgroup.entry_fds`, :meth:`~ContainerCgroup.stats`) are a few
file writes or reads, well under a millisecond each; only killing (waiting for
a freeze, for emptiness) and removal (EBUSY retries) are async.

The package, one concern per module:

* :mod:`.host`: the layout, parsed from ``/proc/self/cgroup`` and
  ``/proc/self/mountinfo`` (the one mountinfo parser), and ``cgroup_parent``;
* :mod:`.files`: reading and writing cgroup files, process lists, removal,
  and the one kill pass (``cgroup.kill``, else freeze, kill, thaw);
* :mod:`.container`: one container's cgroup, from plan to removal;
* :mod:`.limits`: the limits as v2's or v1's files;
* :mod:`.accounting`: CPU time, peak memory, OOM kills;
* :mod:`.sweep`: crash recovery from the ledger.
"""

from .accounting import CgroupStats
from .container import ContainerCgroup
from .host import CgroupHost, CgroupVersion, Hierarchy, delegated_parent, detect, parse_host, with_parent
from .sweep import sweep_paths

__all__ = [
    "CgroupHost",
    "CgroupStats",
    "CgroupVersion",
    "ContainerCgroup",
    "Hierarchy",
    "delegated_parent",
    "detect",
    "parse_host",
    "sweep_paths",
    "with_parent",
]
