"""The openstack platform's booking side without a cloud: what it accepts and refuses (and
why), what it books in front of a session, the pools a site lists, and a cloud that cannot be
read at start-up stopping the node with a message rather than a trace. The connection is made at
the first call that needs the cloud, so none of this talks to one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from broker_core.config import ConfigError, PlatformConfig
from broker_core.kinds.base import kind_uri
from broker_core.kinds.registry import load_registry
from broker_core.kinds.request import ExecutionRequest, parse_request
from platforms import notebooks
from platforms.contract import PlatformError
from platforms.openstack.kinds import VIRTUAL_MACHINE
from platforms.openstack.platform import CloudUnreadable, OpenStackPlatform
from platforms.registry import build_platforms

DOCKER = kind_uri("executable", "docker-container")
COMPUTE = kind_uri("compute", "simple-compute-resource")
DATA = kind_uri("data", "simple-data-resource")
IMAGES = {"docker_container": "podman-image", "vm_images": {"debian-12": "d12"}}


def platform(pools: list[dict[str, Any]] | None = None, **options: Any) -> OpenStackPlatform:
    chosen = {"cloud": "site", "images": IMAGES, "network": "n", **options}
    config: dict[str, Any] = {"name": "cloud", "type": "openstack", "options": chosen}
    if pools is not None:
        config["pools"] = pools
    (built,) = build_platforms([PlatformConfig.model_validate(config)])
    assert isinstance(built, OpenStackPlatform)
    return built


def request(executable: dict[str, Any], **parts: Any) -> ExecutionRequest:
    document = {"executable": executable, "compute": {"kind": COMPUTE}, **parts}
    parsed = parse_request(document, load_registry()).request
    assert parsed is not None
    return parsed


def texts(messages: list[Any]) -> str:
    return " | ".join(m.message for m in messages)


def test_the_kinds_accepted_are_those_the_site_has_an_image_for() -> None:
    kinds = platform().accepted_kinds()
    assert {DOCKER, VIRTUAL_MACHINE, COMPUTE} <= kinds
    assert notebooks.NOTEBOOK not in kinds  # no notebook_image
    assert notebooks.NOTEBOOK in platform(notebook_image="jupyter").accepted_kinds()
    assert DOCKER not in platform(images={"vm_images": {"a": "b"}}).accepted_kinds()


def test_a_vm_naming_no_image_of_the_site_is_refused_saying_which_there_are() -> None:
    said = texts(platform().validate(request({"kind": VIRTUAL_MACHINE, "image": "windows"})))
    assert "has no VM image windows; it has debian-12" in said
    said = texts(platform().validate(request({"kind": VIRTUAL_MACHINE})))
    assert "needs the VM's image, one of debian-12" in said
    assert platform().validate(request({"kind": VIRTUAL_MACHINE, "image": "debian-12"})) == []


def test_ports_need_a_network_and_each_once_and_data_is_fetched_over_http_only() -> None:
    twice = [{"internal": {"port": 80}}, {"internal": {"port": 80}}]
    web = {"kind": DOCKER, "image": {"locations": ["x"]}, "network": {"ports": twice}}
    assert "port 80 is published twice" in texts(platform().validate(request(web)))
    assert "without a network" in texts(platform(network=None).validate(request(web)))
    plain = {"kind": DOCKER, "image": {"locations": ["x"]}}
    data = [{"kind": DATA, "location": "https://example.org/x"}]
    assert "fetches data" not in texts(platform().validate(request(plain, data=data)))
    data = [{"kind": DATA, "location": "file:///srv/data/x"}]
    assert "fetches data itself, from http(s)" in texts(
        platform().validate(request(plain, data=data))
    )


def test_blazar_books_its_activation_in_front_of_the_session() -> None:
    plain = request({"kind": DOCKER, "image": {"locations": ["x"]}})
    without = platform().preparation_estimate(plain)
    with_blazar = platform(blazar={"enabled": True, "activation": "PT45S"})
    assert with_blazar.preparation_estimate(plain) == without + timedelta(seconds=45)


def test_listed_pools_must_be_the_options_pools() -> None:
    inventories = {"cores": {"total": 8}}
    listed = platform(pools=[{"name": "default", "inventories": inventories}]).pools()
    assert [p.name for p in listed] == ["default"]
    with pytest.raises(PlatformError, match="pool 'gpu' is not one of the options' pools"):
        platform(pools=[{"name": "gpu", "inventories": inventories}]).pools()


def test_a_cloud_that_cannot_be_read_at_start_up_is_a_config_error(tmp_path) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  nowhere:\n    auth:\n      auth_url: http://127.0.0.1:9/v3\n"
        "      username: u\n      password: p\n      project_name: x\n"
        "      user_domain_name: Default\n      project_domain_name: Default\n"
    )
    unreachable = platform(cloud="nowhere", clouds_file=str(clouds))
    with pytest.raises(CloudUnreadable, match="platform cloud: cannot read the cloud") as caught:
        unreachable.pools()
    assert isinstance(caught.value, ConfigError)
