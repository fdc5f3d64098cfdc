"""Who holds a lease: a node process's name on the rows it works on, and whether that process
still runs.

Session leases (the lifecycle engine) and notification leases (the delivery worker) are held
under the same name, ``host:pid:start``. A process that dies lets go of its leases only when
they run out; on its own host another process can tell at once that it is gone (its pid does
not run, or is a zombie) and take them over without waiting out the lease.
"""

from __future__ import annotations

import os
import socket
import time


def process_owner() -> str:
    """This process's name on leases: host, pid and start time."""
    return f"{socket.gethostname()}:{os.getpid()}:{int(time.time())}"


def dead_on_this_host(owner: str | None) -> bool:
    """A lease held by a process of this host that no longer runs (or is a zombie); a lease of
    another host, or of this process, is never judged dead here."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True
