"""What a session is made of on OpenStack, as pure functions of the typed session
(``Execution``) and the platform's options: the flavor (a private one, or the smallest existing
one that fits), the security group's rules, the cloud-init user data that runs the executable
inside the server, the server's create request, the Blazar lease, and the connectors. Nothing
here talks to a cloud, so every builder is shown by a snapshot test.

What runs on the server comes from the executable's kind:

- ``docker-container``: cloud-init starts the container with the image's container runtime
  (podman, else docker), publishing the requested ports; when it exits, its exit code is
  written to the console (``EXIT_MARK``) and the server powers off, which ends the session;
- ``virtual-machine``: the user's SSH key for the image's default user, and the user's own
  cloud-config after ours (a multipart document);
- ``jupyter-notebook``: the notebook (fetched by the node, within its staging rules) is written
  into the server, and the notebook server started on ``notebooks.PORT`` with the session's
  token in its environment, from a root-only file.
"""

from __future__ import annotations

import base64
import gzip
import math
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from email.charset import Charset
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import yaml

from broker_core.kinds.base import Component
from broker_core.kinds.builtin import DockerContainer, JupyterNotebook, Port
from broker_core.staging.rules import StagingRules

from .. import notebooks
from ..contract import Execution, PlatformError, executable_ports, uuid_of
from ..remote_staging import Fetch, fetch_args, fetch_function
from .kinds import VirtualMachine
from .options import OpenStackOptions

SESSION_KEY = "ebroker.session"
PLATFORM_KEY = "ebroker.platform"
EXIT_MARK = "ebroker-exit-code="
CONTAINER = "ebroker-main"
NOTEBOOK_TOKEN_FILE = "/etc/ebroker/notebook.env"
USER_DATA_LIMIT = 65535  # Nova's limit on the base64 user data
MIME_BOUNDARY = "==ebroker-user-data=="
PLAIN_UTF8 = Charset("utf-8")
PLAIN_UTF8.body_encoding = None  # the parts stay readable (8bit), as cloud-init takes them
HTTP_CONNECTOR = "http-connector"  # as the local platform names them
PORT_CONNECTOR = "port-connector"
SSH_CONNECTOR = "ssh-connector"
Body = dict[str, Any]


def metadata(platform: str, session: str) -> dict[str, str]:
    """What finds a session's server again: its uuid and the platform that made it."""
    return {SESSION_KEY: session, PLATFORM_KEY: platform}


def kind_name(executable: Component | None) -> str:
    if isinstance(executable, DockerContainer):
        return "docker-container"
    if isinstance(executable, JupyterNotebook):
        return "jupyter-notebook"
    if isinstance(executable, VirtualMachine):
        return "virtual-machine"
    raise PlatformError(f"an OpenStack server cannot run a {getattr(executable, 'kind', None)}")


# --- flavors -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlavorSpec:
    """A flavor's size: vCPUs, RAM in MiB, root disk in GiB."""

    vcpus: int
    ram: int
    disk: int

    def fits(self, flavor: FlavorSpec) -> bool:
        """Whether ``flavor`` gives at least this much of everything."""
        return flavor.vcpus >= self.vcpus and flavor.ram >= self.ram and flavor.disk >= self.disk


@dataclass(frozen=True)
class Flavor:
    """An existing flavor as the platform chooses among them."""

    id: str
    name: str
    spec: FlavorSpec
    public: bool = True


def flavor_spec(execution: Execution, options: OpenStackOptions) -> FlavorSpec:
    """The granted amounts as a flavor: cores, GiB of memory as MiB, and a root disk of the
    site's ``root_disk`` plus the session's granted storage (its storage resources, unless
    they are Cinder volumes)."""
    cores = max(int(execution.granted.get("cores") or 1), 1)
    memory = max(int(execution.granted.get("memory") or 1), 1)
    on_root = execution.storage and not options.volumes.enabled
    storage = int(execution.granted.get("storage") or 0) if on_root else 0
    return FlavorSpec(vcpus=cores, ram=memory * 1024, disk=options.root_disk + storage)


def private_flavor(execution: Execution, options: OpenStackOptions, platform: str) -> Body:
    """The create request of a session's private flavor (``flavor_policy: private-per-session``),
    deleted at release."""
    spec = flavor_spec(execution, options)
    return {
        "name": execution.name,
        "vcpus": spec.vcpus,
        "ram": spec.ram,
        "disk": spec.disk,
        "is_public": False,
        "description": f"ebroker session {execution.session} of platform {platform}",
    }


def smallest_fitting(flavors: list[Flavor], need: FlavorSpec) -> Flavor | None:
    """The smallest public flavor giving at least ``need`` (fewest vCPUs, then RAM, then disk,
    then name); ebroker's own private flavors are never chosen."""
    fitting = [
        f for f in flavors if f.public and need.fits(f.spec) and not f.name.startswith("ebroker-")
    ]
    fitting.sort(key=lambda f: (f.spec.vcpus, f.spec.ram, f.spec.disk, f.name))
    return fitting[0] if fitting else None


# --- security group ----------------------------------------------------------------------------


def ports(execution: Execution) -> list[Port]:
    """The ports the session publishes: the executable's, the notebook server's, and SSH for
    VM sessions (where the site opens it)."""
    executable = execution.executable
    if isinstance(executable, JupyterNotebook):
        return [notebooks.port(execution.state.get(notebooks.ENTRY_STATE))]
    return [p for p in executable_ports(executable) if p.access]


def security_group(execution: Execution, platform: str) -> Body:
    return {
        "name": execution.name,
        "description": f"ebroker session {execution.session} of platform {platform}",
    }


def _protocol(port: Port) -> str:
    return "udp" if port.protocol.upper() == "UDP" else "tcp"


def server_port(port: Port) -> int:
    """The port on the server a published port is reached at: the external port asked for,
    else the container's own."""
    return port.external_port or port.internal_port


def security_rules(execution: Execution, options: OpenStackOptions, group_id: str) -> list[Body]:
    """Ingress rules opening only the session's ports (and SSH for VMs) from the site's
    ``ingress_cidrs``; egress stays Neutron's default."""
    wanted: list[tuple[str, int]] = []
    for port in ports(execution):
        wanted.append((_protocol(port), server_port(port)))
    if isinstance(execution.executable, VirtualMachine) and options.security.open_ssh_for_vms:
        wanted.append(("tcp", options.security.ssh_port))
    rules = []
    for protocol, number in sorted(set(wanted), key=lambda w: (w[1], w[0])):
        for cidr in options.security.ingress_cidrs:
            rules.append(
                {
                    "security_group_id": group_id,
                    "direction": "ingress",
                    "ethertype": "IPv6" if ":" in cidr else "IPv4",
                    "protocol": protocol,
                    "port_range_min": number,
                    "port_range_max": number,
                    "remote_ip_prefix": cidr,
                }
            )
    return rules


# --- user data ---------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (scripts, files) as literal blocks, as one would write them."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not value.startswith(" ") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def _cloud_config(document: Body) -> str:
    text = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1000)
    return "#cloud-config\n" + text


def _shell(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


STORAGE_ROOT = "/srv/ebroker/storage"  # storage resources on the server's root disk
DATA_ROOT = "/srv/ebroker/data"  # data resources, as the server fetched them
STAGE_SCRIPT = "/usr/local/sbin/ebroker-stage"
STAGING_MARK = "ebroker-staging-failed="


def storage_mounts(execution: Execution) -> list[tuple[str, str, str]]:
    """The compute resource's volume mounts of storage and data resources: (directory on the
    server, path in the container, ro|rw)."""
    found = []
    for volume in execution.volumes:
        mode = "rw" if (volume.mode or "READONLY").upper() == "READWRITE" else "ro"
        for storage in execution.storage:
            if volume.resource in (uuid_of(storage), storage.name):
                found.append((f"{STORAGE_ROOT}/{uuid_of(storage)}", volume.path or "", mode))
        for data in execution.data:
            if volume.resource in (uuid_of(data), data.name):
                found.append((f"{DATA_ROOT}/{uuid_of(data)}", volume.path or "", mode))
    return found


def staging_script(execution: Execution, fetches: list[Fetch], rules: StagingRules) -> str:
    """Fetch the session's data into ``DATA_ROOT/<uuid>`` before the work starts, each
    download pinned and bounded as the node judged it (``remote_staging``). A failure writes
    ``STAGING_MARK<uuid> curl-exit=<code>`` to the console and powers the server off. Outside
    a container, volume paths of data become links to it. (``EBROKER_DATA_ROOT``,
    ``EBROKER_CONSOLE`` and ``EBROKER_POWEROFF`` let a test run the script as it is.)"""
    lines = [
        "#!/bin/sh",
        "# ebroker: fetch the session's data resources, as the node's staging rules allow",
        f'root="${{EBROKER_DATA_ROOT:-{DATA_ROOT}}}"',
        'console="${EBROKER_CONSOLE:-/dev/console}"',
        "failed() {",
        f'  echo "{STAGING_MARK}$1 curl-exit=$2" >"$console"',
        "  ${EBROKER_POWEROFF:-poweroff}",
        "  exit 1",
        "}",
        fetch_function(rules),
        'mkdir -p "$root" && cd "$root" || failed root $?',
    ]
    for fetch in fetches:
        args = _shell(fetch_args(fetch, rules, fetch.uuid))
        lines.append(f'fetch {args} 2>>"$console" || failed {shlex.quote(fetch.uuid)} $?')
    if not isinstance(execution.executable, DockerContainer):
        for source, target, _ in storage_mounts(execution):
            if source.startswith(DATA_ROOT + "/") and target.startswith("/"):
                parent = target.rstrip("/").rpartition("/")[0] or "/"
                link = f'"$root"/{shlex.quote(source.removeprefix(DATA_ROOT + "/"))}'
                lines.append(
                    f"mkdir -p {shlex.quote(parent)} && ln -sfn {link} {shlex.quote(target)}"
                )
    return "\n".join([*lines, ""])


def staging_failure(console: str, execution: Execution) -> str | None:
    """What the console says about a failed download or volume (None: none failed)."""
    labels = {uuid_of(d): f"data {d.name or uuid_of(d)}" for d in execution.data}
    for line in reversed(console.splitlines()):
        _, mark, rest = line.partition(STAGING_MARK)
        if not mark:
            continue
        uuid, _, why = rest.strip().partition(" ")
        if why == "volume":
            storage = next((s for s in execution.storage if uuid_of(s) == uuid), None)
            name = (storage.name if storage else None) or uuid
            return f"the server could not format or mount the volume of storage {name}"
        code = why.removeprefix("curl-exit=") or "?"
        what = "the data directory" if uuid == "root" else labels.get(uuid, f"data {uuid}")
        return f"the server could not fetch {what} (curl exit code {code})"
    return None


def _with_preparation(document: Body, scripts: list[tuple[str, str]]) -> Body:
    """``document`` with the preparation ``scripts`` (path, content) written, and run in order
    before its commands, which run only when every script succeeded."""
    if not scripts:
        return document
    written = [
        *({"path": path, "permissions": "0700", "content": text} for path, text in scripts),
        *document.get("write_files", []),
    ]
    commands = [*(path for path, _ in scripts), *(_shell(c) for c in document.get("runcmd", []))]
    return {**document, "write_files": written, "runcmd": [["sh", "-c", " && ".join(commands)]]}


# --- volumes ------------------------------------------------------------------------------------

VOLUME_SCRIPT = "/usr/local/sbin/ebroker-volumes"
VOLUME_KEY = "ebroker.storage"  # a volume's metadata: the storage resource it is


@dataclass(frozen=True)
class Volume:
    """A session's Cinder volume: the storage resource it is, and its id."""

    storage: str  # the storage resource's uuid
    id: str


def volume_size(execution: Execution, storage: Component) -> int:
    """The GiB granted to one storage resource (its size, resolved when offered); 0: none
    booked (a data resource's own storage), which stays on the root disk."""
    size = getattr(storage, "size", None)
    if size is not None and size.min:
        return int(size.min)
    return 0


def volume_request(
    execution: Execution, storage: Component, options: OpenStackOptions, platform: str
) -> Body:
    """The create-volume request of one storage resource (``block_storage.create_volume``)."""
    body: Body = {
        "name": f"{execution.name}-{uuid_of(storage)}",
        "size": volume_size(execution, storage),
        "description": f"ebroker session {execution.session} of platform {platform}",
        "metadata": {**metadata(platform, execution.session), VOLUME_KEY: uuid_of(storage)},
    }
    if options.volumes.volume_type:
        body["volume_type"] = options.volumes.volume_type
    if options.volumes.availability_zone:
        body["availability_zone"] = options.volumes.availability_zone
    return body


def block_devices(image_id: str, volumes: list[Volume]) -> list[Body]:
    """The server's block device mapping: the image as its root disk (Nova wants that entry
    beside any volume), then each volume, kept when the server is deleted (release deletes
    it after), tagged with its storage resource."""
    found: list[Body] = [
        {
            "boot_index": 0,
            "uuid": image_id,
            "source_type": "image",
            "destination_type": "local",
            "delete_on_termination": True,
        }
    ]
    for volume in volumes:
        found.append(
            {
                "boot_index": -1,
                "uuid": volume.id,
                "source_type": "volume",
                "destination_type": "volume",
                "delete_on_termination": False,
                "tag": volume.storage,
            }
        )
    return found


def volume_script(volumes: list[Volume]) -> str:
    """Find each volume's disk by its serial (the volume id: virtio's first 20 characters,
    SCSI's whole), make a file system on it when it has none (a new volume), and mount it at
    ``STORAGE_ROOT/<storage uuid>``. A failure writes ``STAGING_MARK<uuid> volume`` to the
    console and powers the server off."""
    lines = [
        "#!/bin/sh",
        "# ebroker: mount the session's volumes (formatted when new) where its storage goes",
        'console="${EBROKER_CONSOLE:-/dev/console}"',
        "failed() {",
        f'  echo "{STAGING_MARK}$1 volume" >"$console"',
        "  ${EBROKER_POWEROFF:-poweroff}",
        "  exit 1",
        "}",
        "attach() {  # volume-id directory",
        '  short=$(printf %s "$1" | cut -c1-20)',
        "  dev=",
        "  for _ in $(seq 120); do",
        '    for link in "/dev/disk/by-id/virtio-$short" '
        '"/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_$1" "/dev/disk/by-id/nvme-$1"; do',
        '      if [ -e "$link" ]; then dev=$(readlink -f "$link"); break 2; fi',
        "    done",
        "    sleep 1",
        "  done",
        '  [ -n "$dev" ] || return 1',
        '  blkid "$dev" >/dev/null 2>&1 || mkfs.ext4 -q -L ebroker "$dev" || return 1',
        '  mkdir -p "$2" && mount "$dev" "$2"',
        "}",
    ]
    for volume in volumes:
        where = shlex.quote(f"{STORAGE_ROOT}/{volume.storage}")
        lines.append(
            f'attach {shlex.quote(volume.id)} {where} >>"$console" 2>&1'
            f" || failed {shlex.quote(volume.storage)}"
        )
    return "\n".join([*lines, ""])


def container_command(execution: Execution, executable: DockerContainer, image: str) -> list[str]:
    """The container's run command after ``<runtime> run``: name, ports, environment file,
    storage mounts, entrypoint, image, command."""
    argv = ["--name", CONTAINER, "--env-file", "/etc/ebroker/container.env"]
    if executable.privileged:
        argv.append("--privileged")
    for source, target, mode in storage_mounts(execution):
        argv += ["-v", f"{source}:{target}:{mode}"]
    for port in executable_ports(executable):
        if port.access:
            argv += ["-p", f"{server_port(port)}:{port.internal_port}/{_protocol(port)}"]
    entrypoint = executable.entrypoint
    if isinstance(entrypoint, list) and entrypoint:
        argv += ["--entrypoint", entrypoint[0]]
        command = [*entrypoint[1:], *(executable.command or [])]
    else:
        if isinstance(entrypoint, str) and entrypoint:
            argv += ["--entrypoint", entrypoint]
        command = list(executable.command or [])
    return [*argv, image, *command]


def _image_ref(executable: DockerContainer) -> str:
    image = executable.image
    locations = [loc.strip() for loc in (image.locations if image else []) if loc.strip()]
    if not locations:
        raise PlatformError("the docker-container executable names no image location")
    ref = locations[0]
    if image and image.digest and "@" not in ref:
        ref = f"{ref}@{image.digest}"  # pinned: a runtime takes name:tag@digest
    return ref


def _env_file(environment: dict[str, str] | None) -> str:
    lines = []
    for key, value in sorted((environment or {}).items()):
        if "\n" in value or "\n" in key or "=" in key:
            raise PlatformError(f"environment variable {key[:64]!r}: no newlines or = in names")
        lines.append(f"{key}={value}")
    return "\n".join(lines) + ("\n" if lines else "")


def exit_code(console: str) -> int | None:
    """The work's exit code, from the last ``EXIT_MARK`` line of the console (None: none)."""
    for line in reversed(console.splitlines()):
        _, mark, rest = line.partition(EXIT_MARK)
        if mark and rest.strip().isdigit():
            return int(rest.strip())
    return None


def docker_config(execution: Execution) -> Body:
    """Run the container once with the image's runtime, log its output to the console, then
    write its exit code there and power off."""
    executable = execution.executable
    assert isinstance(executable, DockerContainer)
    argv = container_command(execution, executable, _image_ref(executable))
    folders = [source for source, _, _ in storage_mounts(execution)]
    script = "\n".join(
        [
            "#!/bin/sh",
            "# ebroker: run the session's container once, then power off",
            *([f"mkdir -p {_shell(folders)}"] if folders else []),
            "rt=$(command -v podman || command -v docker) || { echo 'ebroker: no container runtime'"
            f" >/dev/console; echo '{EXIT_MARK}127' >/dev/console; poweroff; exit 127; }}",
            f'"$rt" run {_shell(argv)} >/dev/console 2>&1',
            "code=$?",
            f'echo "{EXIT_MARK}$code" >/dev/console',
            "poweroff",
            "",
        ]
    )
    return {
        "write_files": [
            {
                "path": "/etc/ebroker/container.env",
                "permissions": "0600",
                "content": _env_file(executable.environment),
            },
            {"path": "/usr/local/sbin/ebroker-run", "permissions": "0700", "content": script},
        ],
        "runcmd": [["/usr/local/sbin/ebroker-run"]],
    }


def vm_config(execution: Execution) -> Body:
    """The user's SSH key for the image's default user (the user's own cloud-config, when it
    has one, runs after ours: ``user_data`` makes a multipart document cloud-init merges)."""
    executable = execution.executable
    assert isinstance(executable, VirtualMachine)
    ours: Body = {}
    if executable.ssh_public_key:
        ours["ssh_authorized_keys"] = [executable.ssh_public_key.strip()]
    ours["write_files"] = [
        {"path": "/etc/ebroker/session", "permissions": "0644", "content": f"{execution.session}\n"}
    ]
    return ours


def _multipart(texts: list[str]) -> str:
    multipart = MIMEMultipart(boundary=MIME_BOUNDARY)
    for index, text in enumerate(texts):
        part = MIMEText(text, "cloud-config", PLAIN_UTF8)
        part.add_header("Content-Disposition", "attachment", filename=f"part-{index}.cfg")
        multipart.attach(part)
    return multipart.as_string()


def notebook_config(
    execution: Execution, options: OpenStackOptions, files: dict[str, bytes]
) -> Body:
    """The fetched notebook's ``files`` written under ``notebooks.ROOT``, the token in a
    root-only environment file, and the server started from it (its command line has no
    token)."""
    token = notebooks.token_of(execution)
    env = "".join(f"{k}={v}\n" for k, v in notebooks.environment(token).items())
    written: list[Body] = [
        {"path": NOTEBOOK_TOKEN_FILE, "permissions": "0600", "content": env},
    ]
    for name, content in sorted(files.items()):
        written.append(
            {
                "path": f"{notebooks.ROOT}/{name}",
                "permissions": "0644",
                "encoding": "gz+b64",
                "content": base64.b64encode(gzip.compress(content, mtime=0)).decode(),
            }
        )
    command = notebooks.server_command(execution, options)
    unit = "\n".join(
        [
            "[Unit]",
            "Description=ebroker notebook server",
            "[Service]",
            f"EnvironmentFile={NOTEBOOK_TOKEN_FILE}",
            f"WorkingDirectory={notebooks.ROOT}",
            f"ExecStart={_shell(command)}",
            "ExecStopPost=/bin/sh -c 'echo " + EXIT_MARK + "$EXIT_STATUS >/dev/console'",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )
    written.append(
        {
            "path": "/etc/systemd/system/ebroker-notebook.service",
            "permissions": "0644",
            "content": unit,
        }
    )
    return {
        "write_files": written,
        "runcmd": [
            ["systemctl", "daemon-reload"],
            ["systemctl", "start", "ebroker-notebook.service"],
        ],
    }


def user_data(
    execution: Execution,
    options: OpenStackOptions,
    files: dict[str, bytes] | None = None,
    fetches: list[Fetch] | None = None,
    rules: StagingRules | None = None,
    volumes: list[Volume] | None = None,
) -> str:
    """The server's cloud-init user data for the session's executable kind; first its
    ``volumes`` are mounted and its data ``fetches`` (as ``remote_staging`` judged them under
    ``rules``) downloaded."""
    executable = execution.executable
    kind = kind_name(executable)
    if kind == "docker-container":
        document = docker_config(execution)
    elif kind == "virtual-machine":
        document = vm_config(execution)
    else:
        document = notebook_config(execution, options, files or {})
    scripts = []
    if volumes:
        scripts.append((VOLUME_SCRIPT, volume_script(volumes)))
    if fetches:
        scripts.append((STAGE_SCRIPT, staging_script(execution, fetches, rules or StagingRules())))
    document = _with_preparation(document, scripts)
    text = _cloud_config(document)
    if isinstance(executable, VirtualMachine) and executable.user_data:
        text = _multipart([text, executable.user_data])
    encoded = base64.b64encode(text.encode()).decode()
    if len(encoded) > USER_DATA_LIMIT:
        raise PlatformError(
            f"the server's user data is {len(encoded)} bytes in base64, more than Nova's "
            f"{USER_DATA_LIMIT} (a smaller notebook, or less user data)"
        )
    return text


# --- the server --------------------------------------------------------------------------------


def server_request(
    execution: Execution,
    options: OpenStackOptions,
    platform: str,
    *,
    flavor_id: str,
    image_id: str,
    network_id: str | None,
    security_group: str | None,
    user_data_text: str,
    availability_zone: str | None = None,
    reservation: str | None = None,
    volumes: list[Volume] | None = None,
) -> Body:
    """The create-server request (openstacksdk's ``compute.create_server`` arguments)."""
    body: Body = {
        "name": execution.name,
        "flavor_id": flavor_id,
        "image_id": image_id,
        "metadata": metadata(platform, execution.session),
        "user_data": base64.b64encode(user_data_text.encode()).decode(),
        "networks": [{"uuid": network_id}] if network_id else "none",
        "config_drive": True,
    }
    if network_id and security_group:
        body["security_groups"] = [{"name": security_group}]
    if options.key_name:
        body["key_name"] = options.key_name
    if availability_zone:
        body["availability_zone"] = availability_zone
    if reservation:
        body["scheduler_hints"] = {"reservation": reservation}
    if volumes:
        body["block_device_mapping"] = block_devices(image_id, volumes)
    return body


# --- Blazar ------------------------------------------------------------------------------------


def blazar_time(epoch: int) -> str:
    """Blazar's date format (UTC, to the minute)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")


def lease_window(execution: Execution, now: int) -> tuple[int, int]:
    """The lease's start and end: from the preparation start (which leaves Blazar its
    ``activation`` before the booked start), or now when that has passed, to the window's end,
    rounded up to Blazar's minutes."""
    start = max(execution.prepare_at, now)
    end = max(execution.end_at, start + 60)
    return start, int(math.ceil(end / 60) * 60)


def lease_request(
    execution: Execution, options: OpenStackOptions, now: int, hosts: list[str] | None = None
) -> Body:
    """The lease for the session's window: a host reservation of one of the pool's hosts, or
    an instance reservation of the flavor's size. ``start_date: now`` when the window starts
    within the minute (Blazar refuses a start in the past)."""
    start, end = lease_window(execution, now)
    if options.blazar.reservation == "physical:host":
        properties = ""
        if hosts:
            names = ", ".join(f'"{h}"' for h in sorted(hosts))
            properties = (
                f'["in", "$hypervisor_hostname", {names}]'
                if len(hosts) > 1
                else (f'["=", "$hypervisor_hostname", "{hosts[0]}"]')
            )
        reservation: Body = {
            "resource_type": "physical:host",
            "min": 1,
            "max": 1,
            "hypervisor_properties": properties,
            "resource_properties": "",
        }
    else:
        spec = flavor_spec(execution, options)
        reservation = {
            "resource_type": "virtual:instance",
            "amount": 1,
            "vcpus": spec.vcpus,
            "memory_mb": spec.ram,
            "disk_gb": spec.disk,
            "affinity": False,
            "resource_properties": "",
        }
    return {
        "name": execution.name,
        "start_date": "now" if start - now < 60 else blazar_time(start),
        "end_date": blazar_time(end),
        "reservations": [reservation],
        "events": [],
    }


# --- connectors --------------------------------------------------------------------------------


def addresses(server_addresses: dict[str, list[Body]] | None) -> tuple[str | None, str | None]:
    """The server's fixed and floating IPv4 addresses (None where it has none)."""
    fixed = floating = None
    for entries in (server_addresses or {}).values():
        for entry in entries:
            if entry.get("version", 4) != 4:
                continue
            if entry.get("OS-EXT-IPS:type") == "floating":
                floating = floating or entry.get("addr")
            else:
                fixed = fixed or entry.get("addr")
    return fixed, floating


def connectors(
    execution: Execution,
    options: OpenStackOptions,
    server_addresses: dict[str, list[Body]] | None,
    floating_ip: str | None = None,
) -> list[Body]:
    """How to reach the session: the server's address (the floating IP bound to it where it
    has one, which Nova's view of the addresses may not show yet) with each published port,
    the notebook's URL with its token, SSH for VM sessions."""
    fixed, floating = addresses(server_addresses)
    host = floating_ip or floating or fixed
    if host is None:
        return []
    found: list[Body] = []
    notebook = isinstance(execution.executable, JupyterNotebook)
    for port in ports(execution):
        number = server_port(port)
        protocol = port.protocol.upper()
        web = protocol in ("HTTP", "HTTPS")
        entry: Body = {
            "kind": HTTP_CONNECTOR if web else PORT_CONNECTOR,
            "protocol": protocol,
            "host": host,
            "port": number,
            "internal": port.internal_port,
        }
        if web:
            path = port.path or "/"
            path = path if path.startswith("/") else f"/{path}"
            url = f"{protocol.lower()}://{host}:{number}{path}"
            if notebook:
                url = notebooks.connector_url(url, notebooks.token_of(execution))
            entry["url"] = url
        found.append(entry)
    if isinstance(execution.executable, VirtualMachine) and options.security.open_ssh_for_vms:
        number = options.security.ssh_port
        found.append(
            {
                "kind": SSH_CONNECTOR,
                "protocol": "SSH",
                "host": host,
                "port": number,
                "url": f"ssh://{host}:{number}" if number != 22 else f"ssh://{host}",
            }
        )
    return found
