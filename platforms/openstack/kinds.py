"""The ``virtual-machine`` executable kind: the user gets a virtual machine itself for the
booked slot (the standard's notes: "one pre-configured VM ... without access to the OpenStack
API"). It names one of the site's VM images, may bring cloud-init user data of its own, and an
SSH public key that the VM's default user accepts. Registered under the ``ebroker.kinds`` entry
points (``KINDS``), so a node knows it whichever platforms it runs."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal

from pydantic import Field, field_validator

from broker_core.kinds.base import Component, Problem, Strict, kind_uri
from broker_core.kinds.builtin import Network

EXEC = "executable"
NAME = "virtual-machine"
VIRTUAL_MACHINE = kind_uri(EXEC, NAME)
USER_DATA_LIMIT = 16 * 1024  # Nova takes 64 KiB base64; ours and the user's must fit together
SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")


def ssh_key_problem(key: str) -> str | None:
    """Why ``key`` is not one OpenSSH public key line (None: it is)."""
    parts = key.strip().split()
    if len(parts) < 2 or "\n" in key.strip():
        return "give one OpenSSH public key line, e.g. ssh-ed25519 AAAA... user@host"
    if parts[0] not in SSH_KEY_TYPES:
        return f"key type {parts[0][:40]!r} is not one of {', '.join(SSH_KEY_TYPES)}"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return "the key's second field is not base64"
    length = int.from_bytes(blob[:4], "big") if len(blob) >= 4 else -1
    if blob[4 : 4 + length].decode(errors="replace") != parts[0]:
        return "the key's data does not match its type"
    return None


class VmImage(Strict):
    """One of the site's VM images, by the name the site gives it (not a Glance id)."""

    name: str = Field(max_length=128)


class VirtualMachine(Component):
    CATEGORY = EXEC
    NAME = NAME
    kind: Literal[kind_uri(EXEC, NAME)] = Field(default=kind_uri(EXEC, NAME))  # type: ignore[valid-type]
    image: VmImage | None = Field(default=None, description="one of the site's VM images")
    user_data: str | None = Field(
        default=None, max_length=USER_DATA_LIMIT, description="cloud-init user data (#cloud-config)"
    )
    ssh_public_key: str | None = Field(default=None, max_length=16384)
    network: Network | None = None

    @field_validator("image", mode="before")
    @classmethod
    def _image_name(cls, value: Any) -> Any:
        """``image: debian-12`` is ``image: {name: debian-12}``; so is the one-location object
        the node's legacy reading makes of any executable's string image."""
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and set(value) == {"locations"}:
            locations = value["locations"]
            if isinstance(locations, list) and len(locations) == 1:
                return {"name": locations[0]}
        return value

    @property
    def image_name(self) -> str | None:
        return self.image.name if self.image else None

    def problems(self, at: str) -> list[Problem]:
        found = []
        if self.image is not None and not IMAGE_NAME.match(self.image.name):
            found.append(
                Problem(
                    f"{at}/image/name",
                    "image '{value}' is not an image name; give one of the site's VM "
                    "images, e.g. debian-12",
                    {"value": self.image.name[:128]},
                )
            )
        if self.ssh_public_key is not None:
            why = ssh_key_problem(self.ssh_public_key)
            if why:
                found.append(Problem(f"{at}/ssh_public_key", "{why}", {"why": why}))
        if self.user_data is not None and not self.user_data.startswith("#cloud-config"):
            found.append(
                Problem(
                    f"{at}/user_data",
                    "user_data must be a cloud-config document, starting with #cloud-config",
                )
            )
        return found + (self.network.problems(f"{at}/network") if self.network else [])


KINDS: list[type[Component]] = [VirtualMachine]
