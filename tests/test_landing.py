"""The front door: GET / on a node and on an aggregator, HTML for a browser, JSON otherwise."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.testclient import TestClient

from aggregator.config import AggregatorConfig
from aggregator.http.app import create_aggregator_app
from broker_core.http.app import create_app
from broker_core.http.landing import package_version, prefers_html
from tests.conftest import make_config

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
LINKS = {"ui", "node", "openapi", "openapi_yaml", "ready", "live"}
NODE_LINKS = {"calendar", "feed"}  # a node's calendar of bookings and session feed
SITE = "Tom & Jerry's <b>broker</b>"


def node_client(tmp_path: Path, **overrides: Any) -> TestClient:
    from broker_core.node import build_broker

    broker = build_broker(make_config(f"sqlite:///{tmp_path / 'node.db'}", **overrides))
    return TestClient(create_app(broker, reaper=False, lifecycle=False),
                      raise_server_exceptions=False)  # fmt: skip


def aggregator_client(tmp_path: Path, **overrides: Any) -> TestClient:
    config = AggregatorConfig.model_validate({
        "server": {"validate_responses": True},
        "database": {"url": f"sqlite:///{tmp_path / 'agg.db'}"},
        # never asked: the landing page is the aggregator's own
        "upstreams": [{"name": "node", "url": "http://127.0.0.1:9"}],
        **overrides,
    })  # fmt: skip
    return TestClient(create_aggregator_app(config), raise_server_exceptions=False)


SERVICES: dict[str, Callable[..., TestClient]] = {"node": node_client,
                                                  "aggregator": aggregator_client}  # fmt: skip


@pytest.fixture(params=sorted(SERVICES))
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, TestClient]]:
    kind = request.param
    server = {"validate_responses": True, "public_url": "https://broker.example.org/"}
    with SERVICES[kind](tmp_path, site={"name": SITE}, server=server) as client:
        yield kind, client


@pytest.mark.parametrize("accept", [None, "application/json", "*/*", "application/*"])
def test_a_program_gets_the_json_document(service, accept):
    kind, client = service
    r = client.get("/", headers={"accept": accept} if accept else {})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    document = r.json()
    assert document["name"] == SITE
    assert document["service"] == kind
    assert document["version"] == package_version() != ""
    assert document["links"].keys() == LINKS | (NODE_LINKS if kind == "node" else set())
    assert document["links"]["ui"] == "https://broker.example.org/ui/"
    assert document["links"]["ready"] == "https://broker.example.org/health/ready"


def test_a_browser_gets_a_page_with_the_links(service):
    kind, client = service
    r = client.get("/", headers={"accept": BROWSER})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "accept" in r.headers["vary"].lower()
    page = r.text
    assert page.startswith("<!doctype html>") and '<meta charset="utf-8">' in page
    assert f"<strong>{kind}</strong>" in page
    assert package_version() in page
    for href in ("ui/", "node", "openapi.json", "health/ready"):
        assert f'href="{href}"' in page
    assert ('href="calendar"' in page) == (kind == "node")
    # the site's name is text, never markup
    assert "<b>broker</b>" not in page
    assert "Tom &amp; Jerry&#x27;s &lt;b&gt;broker&lt;/b&gt;" in page


def test_the_links_lead_somewhere(service):
    kind, client = service
    for path in ("/ui/", "/openapi.json", "/openapi.yaml", "/health/live"):
        assert client.get(path).status_code == 200, path
    # the calendar is a node's (an aggregator has no pools of its own)
    assert client.get("/calendar").status_code == (200 if kind == "node" else 404)


def test_yaml_is_given_when_preferred(service):
    kind, client = service
    r = client.get("/", headers={"accept": "application/yaml"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(r.text)["service"] == kind


def test_without_a_public_url_the_links_are_the_listening_address(tmp_path):
    with node_client(tmp_path, server={"port": 8123}) as client:
        links = client.get("/").json()["links"]
    assert links["node"] == "http://127.0.0.1:8123/node"


def test_the_landing_page_needs_no_token(tmp_path):
    """Public like /node and /health, on a node that refuses anonymous calls."""
    issuer = {"name": "idp", "issuer": "https://idp.invalid", "audience": ["ebroker"],
              "jwks_uri": "http://127.0.0.1:9/jwks"}  # fmt: skip
    with node_client(tmp_path, auth={"anonymous": False, "issuers": [issuer]}) as client:
        assert client.get("/node").status_code == 200
        assert client.post("/requests", json={}).status_code == 401
        assert client.get("/").status_code == 200
        assert client.get("/", headers={"accept": BROWSER}).status_code == 200


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        ("", False),
        ("text/html", True),
        (BROWSER, True),
        ("application/json, text/html;q=0.5", False),
        ("text/html;q=0.5, application/json", False),
        ("text/html, application/json", False),
        ("application/yaml, text/html;q=0.9", False),
        ("text/html;q=0", False),
        ("*/*", False),
    ],
)
def test_html_only_when_ranked_above_json(accept, html):
    assert prefers_html(accept) is html
