"""The ``slurm`` platform: sessions run as batch jobs inside Slurm advance reservations.

Booking side:

- ``pools()`` reads the cluster (``scontrol show partition``/``node``): one pool per partition
  (or only ``partition`` when that option is set), named after the partition (lower-cased, other
  characters replaced by ``-``), with ``cores`` = floor(CPUs * ``share``) and ``memory`` =
  floor(MiB / 1024 * ``share``) GiB; ``max_unit`` is the largest node's share, because a session
  is one task on one node. A ``storage`` inventory is the free disk at ``storage_path`` (session
  workdirs live on the broker's host, which must share them with the compute nodes). Pools
  listed in the config are used as given, but each must name a partition.
- ``external_claims()`` turns the cluster's reservations that are not named ``ebroker-*`` into
  claims on their partition's pool: their ``CoreCnt`` and memory in proportion; a ``MAINT``
  reservation takes the whole pool.
- The kinds accepted are those with a launcher (``launchers``: kind name → command template
  run inside the batch script) whose program is installed, plus simple compute, storage and
  data resources. Privileged containers and published ports are refused: a batch job offers
  neither.

Execution side, per session (everything is named ``ebroker-<session uuid>``):

- ``reserve`` creates the reservation ``scontrol create reservation ReservationName=<name>
  StartTime=<max(prepare_at, now)> EndTime=<end_at> CoreCnt=<cores> NodeCnt=1
  Users=<reservation_user> PartitionName=<partition>`` (no flags unless
  ``reservation_flags``; Slurm 22.05 reserves CPUs, not memory).
- ``prepare_executable`` checks, for podman launchers, that an image location exists for
  podman (pulling it when it does not).
- ``start`` writes ``workdir/job.sh`` and submits it with ``sbatch --reservation <name>``; the
  output goes to ``workdir/logs/output.log``. The job id is kept in ``Execution.state``.
- ``poll`` reads ``squeue`` (cached for ``poll_cache_seconds``) and, for finished jobs,
  ``scontrol show job`` (accounting is not required).
- ``stop`` cancels the job; ``release`` cancels it and deletes the reservation.
- ``list_work``/``remove_work`` find and remove ``ebroker-*`` jobs and reservations.

The package's modules: ``options`` (``SlurmOptions``, the launchers), ``runner`` (Slurm's
commands through :mod:`platforms.commands`, and the cache of what they said), ``cluster``
(what the cluster says, read: records, host lists, partitions as pools, reservations as claims,
job states, times), ``builders`` (the batch script and every argument list, pure functions of
the session) and ``platform`` (``SlurmPlatform``, the steps). Every Slurm command goes through
the runner; a failing command is a ``PlatformError`` with the command's own message.
"""

from .cluster import Partition, expand_hostlist, parse_records, pool_name
from .options import DEFAULT_LAUNCHERS, PLACEHOLDERS, SlurmConfigError, SlurmOptions
from .platform import SlurmPlatform

__all__ = [
    "DEFAULT_LAUNCHERS",
    "PLACEHOLDERS",
    "Partition",
    "SlurmConfigError",
    "SlurmOptions",
    "SlurmPlatform",
    "expand_hostlist",
    "parse_records",
    "pool_name",
]
