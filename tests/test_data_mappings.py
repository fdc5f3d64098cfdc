"""Data where it lands (issue 19, part 5): a site maps ``ivo://`` identifiers and Rucio scopes
to its own files or URLs (``staging.mappings``), so that ivoa, rucio and skao data resources
are staged from there, with their staging time in the offer; one the node maps nothing of is a
NO that names it and says what the node does map.

Here: the mapping's resolution (prefixes, Rucio's lfn2pfn, escapes refused), the config's
checks, and the API (the offer's staging time, the NO). Real node and aggregator processes:
tests/test_data_mappings_e2e.py.
"""

from __future__ import annotations

import copy
import hashlib
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker_core.broker import Broker
from broker_core.config import ConfigError, parse_config
from broker_core.kinds.builtin import (
    IvoaDataResource,
    RucioDataResource,
    SimpleDataResource,
    SkaoDataResource,
)
from broker_core.schedule import parse_duration
from broker_core.staging.mappings import (
    DataMappings,
    Unmappable,
    map_ivoid,
    map_rucio,
    parse_bandwidth,
    rucio_path,
)
from broker_core.staging.placement import place, source_of
from broker_core.staging.rules import StagingRefused, rules_for
from platforms.contract import Execution, PlatformError
from platforms.simulated import SimulatedPlatform
from tests.conftest import POOL_CONFIG, request_doc

KINDS = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/data/"
IVOA = KINDS + "ivoa-data-resource.yaml"
RUCIO = KINDS + "rucio-data-resource.yaml"
SKAO = KINDS + "skao-data-resource.yaml"


def mappings(**section: Any) -> DataMappings:
    return DataMappings.model_validate(section)


SITE = mappings(
    bandwidth="10 MB/s",
    ivoa=[
        {"prefix": "ivo://Example.org/survey/", "target": "file:///data/survey/{rest}"},
        {"prefix": "ivo://example.org/survey/deep", "target": "https://Data.example.org/deep/{rest}.fits",
         "bandwidth": "1 Gbit/s"},
        {"prefix": "ivo://example.org/data?", "target": "file:///data/pub/{rest}"},
    ],
    rucio=[
        {"scope": "user.jdoe", "target": "https://storageserver.organization.org/VO/data"},
        {"scope": "*", "target": "file:///data/rucio/", "lfn2pfn": "identity"},
    ],
)  # fmt: skip


# --- resolution ---------------------------------------------------------------------------------


def test_the_longest_matching_prefix_wins_and_gets_the_rest() -> None:
    survey = map_ivoid("ivo://example.org/survey/field-1/a.fits", SITE)
    assert survey is not None and survey.location == "file:///data/survey/field-1/a.fits"
    assert survey.via == "ivo://example.org/survey/" and survey.bandwidth == 10**7
    deep = map_ivoid("ivo://example.org/survey/deep/x1", SITE)
    assert deep is not None and deep.location == "https://data.example.org/deep/x1.fits"
    assert deep.bandwidth == 125 * 10**6
    # a prefix ending in a name matches at a separator only: deepx is the survey's
    other = map_ivoid("ivo://example.org/survey/deepx", SITE)
    assert other is not None and other.location == "file:///data/survey/deepx"
    # the publisher-DID form: the part after '?' is the rest
    field = map_ivoid("ivo://example.org/data?field-12", SITE)
    assert field is not None and field.location == "file:///data/pub/field-12"


def test_the_authority_is_matched_in_any_case_and_others_are_not_mapped() -> None:
    found = map_ivoid("IVO://EXAMPLE.ORG/survey/a.fits", SITE)
    assert found is not None and found.location == "file:///data/survey/a.fits"
    assert found.identifier == "IVO://EXAMPLE.ORG/survey/a.fits"  # shown as given
    assert map_ivoid("ivo://example.org/Survey/a.fits", SITE) is None  # the path is not
    assert map_ivoid("ivo://other.org/survey/a.fits", SITE) is None
    assert map_ivoid("ivo://example.org/survey/", SITE) is None  # the prefix alone names nothing
    assert map_ivoid("http://example.org/survey/a.fits", SITE) is None


@pytest.mark.parametrize(
    "ivoid",
    [
        "ivo://example.org/survey/../../etc/passwd",
        "ivo://example.org/survey/a/../../../etc/passwd",
        "ivo://example.org/survey/./a",
        "ivo://example.org/survey/a//b",
        "ivo://example.org/survey//etc/passwd",
        "ivo://example.org/survey/%2e%2e/etc",
        "ivo://example.org/survey/a?b",
        "ivo://example.org/survey/a#b",
        "ivo://example.org/survey/a b",
        "ivo://example.org/survey/a\\..\\b",
        "ivo://example.org/survey/" + "a" * 256,
        "ivo://example.org/survey/" + "a/" * 600 + "a",
    ],
)
def test_an_identifier_that_would_leave_its_root_is_refused(ivoid: str) -> None:
    with pytest.raises(Unmappable) as info:
        map_ivoid(ivoid, SITE)
    assert "is not a path it serves" in str(info.value)


def test_rucio_hash_gives_the_path_of_rucios_documented_example() -> None:
    """Rucio's documentation (replica workflow): ``user.jdoe:test.file.1`` has the md5
    077c8119053bebb168d125034bff64ac, so its path is ``user/jdoe/07/7c/test.file.1`` and its
    URL ``https://storageserver.organization.org/VO/data/user/jdoe/07/7c/test.file.1``."""
    digest = hashlib.md5(b"user.jdoe:test.file.1").hexdigest()
    assert digest == "077c8119053bebb168d125034bff64ac"
    assert rucio_path("user.jdoe", "test.file.1", "hash") == "user/jdoe/07/7c/test.file.1"
    found = map_rucio("user.jdoe", "test.file.1", SITE)
    assert found is not None
    assert found.location == (
        "https://storageserver.organization.org/VO/data/user/jdoe/07/7c/test.file.1"
    )


def test_rucio_identity_and_the_any_scope() -> None:
    assert rucio_path("data18_13TeV", "AOD.01.root", "identity") == "data18_13TeV/AOD.01.root"
    assert rucio_path("group.phys", "x", "identity") == "group/phys/x"  # as Rucio splits them
    digest = hashlib.md5(b"mc16:evnt.1").hexdigest()
    assert rucio_path("mc16", "evnt.1", "hash") == f"mc16/{digest[:2]}/{digest[2:4]}/evnt.1"
    found = map_rucio("data18", "AOD.01.root", SITE)  # not user.jdoe: the * root
    assert found is not None and found.location == "file:///data/rucio/data18/AOD.01.root"
    assert found.via == "*"
    only_mc16 = mappings(rucio=[{"scope": "mc16", "target": "file:///r"}])
    assert map_rucio("data18", "x", only_mc16) is None


@pytest.mark.parametrize(("scope", "name"), [
    ("data18", "../../etc/passwd"), ("data18", "a/b"), ("..", "x"), ("data18", ".hidden"),
    ("data18", "a" * 251), ("a" * 26, "x"), ("data18", "x\0y"), ("data18", ""),
])  # fmt: skip
def test_rucio_names_outside_rucios_rules_are_refused(scope: str, name: str) -> None:
    with pytest.raises(Unmappable):
        map_rucio(scope, name, SITE)


def test_a_url_mapping_stays_on_its_host() -> None:
    site = mappings(ivoa=[{"prefix": "ivo://x.org/a/", "target": "https://data.x.org:8443/a/{rest}"}])
    for rest in ("b", "b/c.fits", "@evil.org/x", "b,c@evil.org"):
        found = map_ivoid(f"ivo://x.org/a/{rest}", site)
        assert found is not None
        assert found.location.startswith("https://data.x.org:8443/a/"), found.location


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ({"ivoa": [{"prefix": "ivo://x/", "target": "file:///data/"}]}, "{rest} once"),
        ({"ivoa": [{"prefix": "ivo://x/", "target": "file:///d/{rest}/{rest}"}]}, "{rest} once"),
        ({"ivoa": [{"prefix": "ivo://x/", "target": "file:///d/{n}/{rest}"}]}, "only placeholder"),
        ({"ivoa": [{"prefix": "ivo://x/", "target": "ftp://h/{rest}"}]}, "file://, http://"),
        ({"ivoa": [{"prefix": "ivo://x/", "target": "file://data/{rest}"}]}, "absolute"),
        ({"ivoa": [{"prefix": "ivo://x/", "target": "file:///d/../{rest}"}]}, "'..'"),
        ({"ivoa": [{"prefix": "ivo://x/", "target": "file:///d/{rest}/x"}]}, "suffix"),
        ({"ivoa": [{"prefix": "http://x/", "target": "file:///d/{rest}"}]}, "ivo://"),
        ({"ivoa": [{"prefix": "ivo://x/", "target": "file:///a/{rest}"},
                   {"prefix": "ivo://X/", "target": "file:///b/{rest}"}]}, "repeated: ivo://x/"),
        ({"rucio": [{"scope": "a b", "target": "file:///r"}]}, "Rucio scope"),
        ({"rucio": [{"scope": "s", "target": "file:///r/{rest}"}]}, "takes no {rest}"),
        ({"rucio": [{"scope": "s", "target": "file:///r", "lfn2pfn": "md5"}]}, "lfn2pfn"),
        ({"bandwidth": "fast"}, "not a bandwidth"),
        ({"bandwidth": "10 MB/h"}, "not a bandwidth"),
        ({"bandwidth": "10 parsecs/s"}, "unknown unit"),
    ],
)  # fmt: skip
def test_the_mappings_section_validates_with_clear_errors(section: dict, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**POOL_CONFIG, "staging": {"mappings": section}})
    assert "staging.mappings" in str(info.value) and error in str(info.value), str(info.value)


def test_bandwidths_read_in_bytes_and_bits() -> None:
    assert parse_bandwidth("100 MB/s") == 10**8
    assert parse_bandwidth("1 Gbit/s") == 125 * 10**6
    assert parse_bandwidth("1.5 GiB/s") == int(1.5 * 2**30)
    assert parse_bandwidth(4096) == 4096
    assert mappings().bandwidth == 10**8  # the default


# --- placement, on the node's files -------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """A survey root with a file, a directory and links out of it; a secret beside it."""
    root = tmp_path / "survey"
    (root / "field-1").mkdir(parents=True)
    (root / "a.fits").write_bytes(b"S" * 2_500_000)
    (root / "field-1" / "b.fits").write_bytes(b"b" * 1000)
    (root / "field-1" / "c.fits").write_bytes(b"c" * 500)
    secret = tmp_path / "private" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("top-secret\n")
    (root / "escape").symlink_to(secret)
    (root / "escape-dir").symlink_to(secret.parent, target_is_directory=True)
    rucio = tmp_path / "rucio"
    path = rucio / rucio_path("user.jdoe", "test.file.1", "hash")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"rucio-bytes\n")
    return {"root": root, "secret": secret, "rucio": rucio, "tmp": tmp_path}


def staging_section(site: dict[str, Path], **more: Any) -> dict[str, Any]:
    return {"mappings": {
        "bandwidth": "1 MB/s",
        "ivoa": [{"prefix": "ivo://example.org/survey/",
                  "target": f"{site['root'].as_uri()}/{{rest}}"}],
        "rucio": [{"scope": "user.jdoe", "target": site["rucio"].as_uri()}],
        **more,
    }}  # fmt: skip


def site_rules(site: dict[str, Path], **more: Any):
    config = parse_config({**POOL_CONFIG, "staging": staging_section(site, **more)})
    return rules_for(config)


def ivoa(ivoid: str, **more: Any) -> IvoaDataResource:
    return IvoaDataResource.model_validate({"ivoid": ivoid, **more})


def test_a_mapped_file_is_placed_with_its_size_and_time(site) -> None:
    rules = site_rules(site)
    simple = SimpleDataResource.model_validate({"location": "https://example.org/a.fits"})
    placed, directory, unplaced = place(
        [ivoa("ivo://example.org/survey/a.fits"), ivoa("ivo://example.org/survey/field-1"), simple],
        rules,
    )
    assert placed is not None and not placed.problems
    assert (placed.bytes, placed.seconds) == (2_500_000, 3)  # 2.5 MB at 1 MB/s
    assert directory is not None and directory.bytes == 1500  # its files, links not followed
    assert unplaced is None  # judged by its location, as before


def test_a_link_out_of_the_root_is_refused_at_request_time_and_when_staged(site, tmp_path) -> None:
    rules = site_rules(site)
    for rest in ("escape", "escape-dir/secret.txt"):
        (placed,) = place([ivoa(f"ivo://example.org/survey/{rest}")], rules)
        assert placed is not None
        assert [p.pointer for p in placed.problems] == ["/data/0/ivoid"]
        assert "leads outside this node's data" in placed.problems[0].template
    # a file that was fine when offered and became a link by the time it is staged
    later = site["root"] / "later.fits"
    later.write_text("harmless\n")
    data = ivoa("ivo://example.org/survey/later.fits", meta={"uuid": "d1"})
    (placed,) = place([data], rules)
    assert placed is not None and not placed.problems
    later.unlink()
    later.symlink_to(site["secret"])
    execution = Execution("s1", None, None, [], [data], {}, 0, 0, 1, tmp_path / "w", staging=rules)
    config = parse_config({**POOL_CONFIG, "platforms": sim_platform()})
    with pytest.raises(PlatformError) as info:
        SimulatedPlatform(config.platforms[0]).stage_data(execution, data)
    assert "staging rule file-roots" in str(info.value)
    assert not (tmp_path / "w" / "data" / "d1").exists()


def test_the_mapped_root_is_the_only_directory_staging_reads(site) -> None:
    """A mapped file's rules are its root alone: the site's file_roots do not widen them."""
    rules = site_rules(site)
    source = source_of(ivoa("ivo://example.org/survey/a.fits"), rules)
    assert source.rules.file_roots == (str(site["root"]),)
    assert rules.file_roots == ()  # the node's own rules are unchanged
    assert source.rules.file_refusal(str(site["secret"])) is not None


def test_an_unmapped_identifier_is_refused_when_staged_too(site) -> None:
    with pytest.raises(StagingRefused) as info:
        source_of(ivoa("ivo://elsewhere.org/x"), site_rules(site))
    assert info.value.rule == "mappings"
    assert "ivo://elsewhere.org/x" in info.value.text
    assert "this node maps none of it" in info.value.text


def test_rucio_and_skao_resources_are_placed_by_scope(site) -> None:
    rules = site_rules(site)
    rucio = RucioDataResource.model_validate({"scope": "user.jdoe", "objectname": "test.file.1"})
    skao = SkaoDataResource.model_validate({"namespace": "user.jdoe", "objectname": "test.file.1"})
    for placed in place([rucio, skao], rules):
        assert placed is not None and not placed.problems, placed
        assert placed.bytes == len(b"rucio-bytes\n")
        assert placed.source is not None
        assert placed.source.location.endswith("/user/jdoe/07/7c/test.file.1")


# --- the API -------------------------------------------------------------------------------------


def sim_platform(stage_data: bool = True, data_staging: str = "PT1M") -> list[dict[str, Any]]:
    platforms = copy.deepcopy(POOL_CONFIG["platforms"])
    platforms[0]["options"].update(stage_data=stage_data, data_staging=data_staging)
    return platforms


@pytest.fixture
def mapped_client(site, broker_factory: Callable[..., Broker], client_factory, database_url):
    """A node on SQLite and on PostgreSQL whose simulated platform stages the site's data."""
    broker = broker_factory(database_url, platforms=sim_platform(), staging=staging_section(site))
    return client_factory(broker)


def data_doc(*data: dict[str, Any]) -> dict[str, Any]:
    doc = request_doc(duration="PT10M")
    doc["data"] = [{"meta": {"name": f"d{i}"}, **d} for i, d in enumerate(data)]
    return doc


def seconds(text: str) -> int:
    return int(parse_duration(text).total_seconds())


def test_an_offer_books_the_mapped_datas_staging_time(mapped_client) -> None:
    """2.5 MB at 1 MB/s: 3 s, in place of the platform's flat minute per data resource; the
    data resource's own schedule shows it, and a message says where it comes from."""
    answer = mapped_client.post("/requests", json=data_doc(
        {"kind": IVOA, "ivoid": "ivo://example.org/survey/a.fits"},
        {"kind": RUCIO, "scope": "user.jdoe", "objectname": "test.file.1"},
    )).json()  # fmt: skip
    assert answer["result"] == "YES", answer
    offer = answer["offers"][0]
    assert seconds(offer["schedule"]["preparing"]["duration"]) == 3 + 1
    first, second = (d["schedule"]["preparing"] for d in offer["data"])
    assert (seconds(first["duration"]), seconds(second["duration"])) == (3, 1)
    assert first["start"] == offer["schedule"]["preparing"]["start"]
    assert second["start"] > first["start"]  # staged one after the other
    notes = [m["message"] for m in answer["meta"]["messages"]]
    assert any(n.startswith("/data/0: ivo://example.org/survey/a.fits is staged from this "
                            "node's data (ivo://example.org/survey/): 2500000 bytes in about 3 s")
               for n in notes), notes  # fmt: skip
    # what is offered reads the same afterwards
    again = mapped_client.get(f"/sessions/{offer['meta']['uuid']}").json()
    assert again["data"][0]["schedule"]["preparing"] == first


def test_an_unmapped_identifier_is_a_no_naming_it_and_what_is_mapped(mapped_client) -> None:
    answer = mapped_client.post("/requests", json=data_doc(
        {"kind": IVOA, "ivoid": "ivo://elsewhere.org/x"},
        {"kind": RUCIO, "scope": "data18", "objectname": "AOD.root"},
        {"kind": SKAO, "namespace": "testing", "objectname": "zi"},
        {"kind": IVOA, "ivoid": "ivo://example.org/survey/missing.fits"},
        {"kind": IVOA, "ivoid": "ivo://example.org/survey/../../etc/passwd"},
        {"kind": RUCIO, "scope": "user.jdoe", "objectname": "ds", "objecttype": "DATASET"},
    )).json()  # fmt: skip
    assert answer["result"] == "NO" and answer["offers"] == []
    errors = {m["values"]["pointer"]: m["message"] for m in answer["meta"]["messages"]
              if m["level"] == "ERROR"}  # fmt: skip
    assert sorted(errors) == ["/data/0/ivoid", "/data/1/scope", "/data/2/namespace",
                              "/data/3/ivoid", "/data/4/ivoid", "/data/5/objecttype"]  # fmt: skip
    maps = ("this node maps none of it (it maps ivo:// identifiers under: "
            "ivo://example.org/survey/; Rucio scopes: user.jdoe)")  # fmt: skip
    assert errors["/data/0/ivoid"].startswith("/data/0/ivoid: ivo://elsewhere.org/x is not data")
    assert maps in errors["/data/0/ivoid"]
    assert "datalink row's access_url" in errors["/data/0/ivoid"]
    assert "data18:AOD.root" in errors["/data/1/scope"] and maps in errors["/data/1/scope"]
    assert "testing:zi" in errors["/data/2/namespace"]
    assert "replica's dataurl" in errors["/data/2/namespace"]
    assert "has no such data" in errors["/data/3/ivoid"]
    assert "is not a path it serves" in errors["/data/4/ivoid"]
    assert ("is a DATASET, which is many files, and this node cannot list them: its mapping "
            "of scope user.jdoe has no list_files") in errors["/data/5/objecttype"]


def test_a_location_the_request_carries_is_used_when_the_identifier_is_unmapped(
    site, broker_factory, client_factory, sqlite_url, web
) -> None:
    url, _ = web
    staging = {**staging_section(site), "allow_networks": ["127.0.0.1/32"]}
    client = client_factory(broker_factory(sqlite_url, platforms=sim_platform(), staging=staging))
    answer = client.post("/requests", json=data_doc(
        {"kind": SKAO, "namespace": "testing", "objectname": "zi", "datasize": 3_000_000,
         "replicas": [{"rsename": "SITE_A"}, {"dataurl": f"{url}/survey/zi.fits"}]},
    )).json()  # fmt: skip
    assert answer["result"] == "YES", answer
    assert seconds(answer["offers"][0]["data"][0]["schedule"]["preparing"]["duration"]) == 3
    # a location the staging rules refuse: NO, saying both why
    answer = client.post("/requests", json=data_doc(
        {"kind": IVOA, "ivoid": "ivo://elsewhere.org/x",
         "datalink": {"access_url": "http://169.254.169.254/latest/", "semantics": "#this"}},
    )).json()  # fmt: skip
    assert answer["result"] == "NO"
    errors = {m["values"]["pointer"]: m["message"] for m in answer["meta"]["messages"]
              if m["level"] == "ERROR"}  # fmt: skip
    assert sorted(errors) == ["/data/0/datalink/access_url", "/data/0/ivoid"], errors
    assert "link-local" in errors["/data/0/datalink/access_url"]


def test_a_mapped_url_is_sized_by_a_head_on_its_server(
    site, broker_factory, client_factory, sqlite_url, web
) -> None:
    """The mapping's host is the site's own: reached although it is loopback here."""
    url, hits = web
    staging = {"mappings": {"bandwidth": "1 MB/s", "ivoa": [
        {"prefix": "ivo://example.org/remote/", "target": f"{url}/survey/{{rest}}"}]}}  # fmt: skip
    client = client_factory(broker_factory(sqlite_url, platforms=sim_platform(), staging=staging))
    answer = client.post("/requests", json=data_doc(
        {"kind": IVOA, "ivoid": "ivo://example.org/remote/big.fits"})).json()  # fmt: skip
    assert answer["result"] == "YES", answer
    assert seconds(answer["offers"][0]["data"][0]["schedule"]["preparing"]["duration"]) == 5
    assert hits == ["HEAD /survey/big.fits"]
    answer = client.post("/requests", json=data_doc(
        {"kind": IVOA, "ivoid": "ivo://example.org/remote/gone.fits"})).json()  # fmt: skip
    assert answer["result"] == "NO"
    assert "its server has no such data (404)" in answer["meta"]["messages"][0]["message"]


def test_a_node_that_stages_nothing_still_offers_identified_data(
    broker_factory, client_factory, sqlite_url
) -> None:
    """The simulated platform by default stages nothing: an identifier it maps nothing of is
    offered as before, with the platform's flat staging time."""
    client = client_factory(broker_factory(sqlite_url, platforms=sim_platform(stage_data=False)))
    answer = client.post("/requests", json=data_doc({"kind": IVOA, "ivoid": "ivo://x/y"})).json()
    assert answer["result"] == "YES", answer
    assert seconds(answer["offers"][0]["schedule"]["preparing"]["duration"]) == 60


def test_data_larger_than_the_node_stages_is_a_no(site, broker_factory, client_factory, sqlite_url):
    staging = {**staging_section(site), "max_bytes": 1_000_000}
    client = client_factory(broker_factory(sqlite_url, platforms=sim_platform(), staging=staging))
    answer = client.post("/requests", json=data_doc(
        {"kind": IVOA, "ivoid": "ivo://example.org/survey/a.fits"})).json()  # fmt: skip
    assert answer["result"] == "NO"
    assert "larger than this node stages" in answer["meta"]["messages"][0]["message"]


# --- a file server that answers HEAD ------------------------------------------------------------


class Files(http.server.BaseHTTPRequestHandler):
    """``/survey/<name>``: 5,000,000 bytes for big.fits, 17 for zi.fits; 404 otherwise."""

    hits: list[str]
    SIZES = {"/survey/big.fits": 5_000_000, "/survey/zi.fits": 17}

    def do_HEAD(self) -> None:
        self.hits.append(f"HEAD {self.path}")
        self._answer(body=False)

    def do_GET(self) -> None:
        self.hits.append(f"GET {self.path}")
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        size = self.SIZES.get(self.path)
        self.send_response(200 if size is not None else 404)
        self.send_header("Content-Length", str(size or 0))
        self.end_headers()
        if body and size:
            self.wfile.write(b"z" * size)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def web() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), type("Recording", (Files,), {"hits": hits})
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()
