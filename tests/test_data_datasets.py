"""A Rucio DATASET or CONTAINER as many files: a Rucio mapping's ``list_files`` names where
their files are listed (a Rucio server's ``GET /dids/{scope}/{name}/files``, here the HTTP
fake ``tests/rucio_fake.py``, or a directory of saved listings); the request is offered with
the staging time of every file, each mapped by its own scope, and staging brings them all into
the data resource's directory. Without a listing, or when it fails, the NO says exactly what is
missing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker_core.config import ConfigError, parse_config
from broker_core.kinds.builtin import RucioDataResource
from broker_core.staging.datasets import listing_location, parse_listing
from broker_core.staging.mappings import RucioMapping, Unmappable, rucio_path
from broker_core.staging.placement import place, source_of
from broker_core.staging.rules import StagingRefused, rules_for
from platforms.contract import Execution, PlatformError
from platforms.simulated import SimulatedPlatform
from tests.conftest import POOL_CONFIG
from tests.rucio_fake import RucioFake
from tests.test_data_mappings import RUCIO, data_doc, seconds, sim_platform

LOCAL = {"a.1": b"A" * 1_500_000, "b.1": b"B" * 500_000}  # user.jdoe, on the node's disk
REMOTE = {"AOD.1": b"aod-bytes\n"}  # data18, on the fake's /files (identity paths)


@pytest.fixture
def rucio() -> Iterator[RucioFake]:
    fake = RucioFake().start()
    for name, content in LOCAL.items():
        fake.add_file("user.jdoe", name, content)
    for name, content in REMOTE.items():
        fake.add_file("data18", name, content)
        fake.served[f"data18/{name}"] = content
    fake.add_collection("DATASET", "user.jdoe", "ds1", ("user.jdoe", "a.1"), ("user.jdoe", "b.1"))
    fake.add_collection("DATASET", "data18", "ds2", ("data18", "AOD.1"))
    fake.add_collection("CONTAINER", "user.jdoe", "cont", ("user.jdoe", "ds1"), ("data18", "ds2"))
    fake.add_file("other", "x.1", b"x")
    fake.add_collection("DATASET", "user.jdoe", "mixed", ("user.jdoe", "a.1"), ("other", "x.1"))
    yield fake
    fake.stop()


@pytest.fixture
def site(tmp_path: Path, rucio: RucioFake) -> dict[str, Any]:
    """user.jdoe's files at their hash paths on the node; its token in a file."""
    root = tmp_path / "rucio"
    for name, content in LOCAL.items():
        path = root / rucio_path("user.jdoe", name, "hash")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    token = tmp_path / "rucio-token"
    token.write_text("rucio-token-1\n")
    return {"root": root, "token": token, "tmp": tmp_path, "rucio": rucio}


def staging(site: dict[str, Any], **jdoe: Any) -> dict[str, Any]:
    """user.jdoe on the node's disk at 1 MB/s, listed by the fake; data18 on the fake's URLs."""
    user = {
        "scope": "user.jdoe",
        "target": site["root"].as_uri(),
        "list_files": site["rucio"].url,
        "token_file": str(site["token"]),
        **jdoe,
    }
    data18 = {"scope": "data18", "target": f"{site['rucio'].url}/files", "lfn2pfn": "identity",
              "bandwidth": "10 B/s"}  # fmt: skip
    return {"mappings": {"bandwidth": "1 MB/s", "rucio": [user, data18]}}


def rules_of(site: dict[str, Any], max_bytes: int | None = None, **jdoe: Any):
    section = staging(site, **jdoe)
    if max_bytes is not None:
        section["max_bytes"] = max_bytes
    return rules_for(parse_config({**POOL_CONFIG, "staging": section}))


def dataset(name: str, kind: str = "DATASET", uuid: str = "d1") -> RucioDataResource:
    return RucioDataResource.model_validate(
        {"scope": "user.jdoe", "objectname": name, "objecttype": kind, "meta": {"uuid": uuid}}
    )


def test_a_container_is_listed_by_the_rucio_server_and_placed_with_every_file(site) -> None:
    """Its two datasets' three files: two on the node (stat'ed, 2 MB at 1 MB/s), one on the
    server's URL as listed (10 bytes at 10 B/s): 3 s; the server was asked once, with the
    token, by Rucio's REST path."""
    (placed,) = place([dataset("cont", "CONTAINER")], rules_of(site))
    assert placed is not None and not placed.problems, placed.problems
    assert placed.source is not None and placed.source.dataset is not None
    files = [s.location for s, _ in placed.source.dataset.files]
    assert files[0].endswith("/" + rucio_path("user.jdoe", "a.1", "hash"))
    assert files[2] == f"{site['rucio'].url}/files/data18/AOD.1"
    assert (placed.bytes, placed.seconds) == (2_000_010, 3)
    assert site["rucio"].requests == [("GET", "/dids/user.jdoe/cont/files", "rucio-token-1")]
    note = placed.note()
    assert note is not None and note.message == (
        "/data/0: the CONTAINER user.jdoe:cont is staged from this node's data (user.jdoe): "
        "3 files, 2000010 bytes in about 3 s, before the start"
    )


def test_a_staged_container_brings_every_file_into_the_data_resources_directory(
    site, tmp_path
) -> None:
    rules = rules_of(site)
    data = dataset("cont", "CONTAINER")
    execution = Execution("s1", None, None, [], [data], {}, 0, 0, 1, tmp_path / "w", staging=rules)
    config = parse_config({**POOL_CONFIG, "platforms": sim_platform()})
    SimulatedPlatform(config.platforms[0]).stage_data(execution, data)
    staged = tmp_path / "w" / "data" / "d1"
    assert {p.name: p.read_bytes() for p in staged.iterdir()} == {**LOCAL, **REMOTE}
    assert "staged the CONTAINER user.jdoe:cont (3 files)" in " ".join(execution.notes)
    assert not list(staged.parent.glob(".*"))  # no parts left behind


def test_staging_a_dataset_that_grew_past_max_bytes_leaves_nothing(site, tmp_path) -> None:
    """Offered under the limit, then a file grew: the total is checked when staged too."""
    rules = rules_of(site, max_bytes=2_100_000)
    data = dataset("ds1")
    (placed,) = place([data], rules)
    assert placed is not None and not placed.problems
    (site["root"] / rucio_path("user.jdoe", "b.1", "hash")).write_bytes(b"B" * 700_000)
    execution = Execution("s1", None, None, [], [data], {}, 0, 0, 1, tmp_path / "w", staging=rules)
    config = parse_config({**POOL_CONFIG, "platforms": sim_platform()})
    with pytest.raises(PlatformError, match=r"more than the node's staging\.max_bytes"):
        SimulatedPlatform(config.platforms[0]).stage_data(execution, data)
    assert not (tmp_path / "w" / "data").exists() or not any((tmp_path / "w" / "data").iterdir())


def test_a_saved_listing_lists_a_dataset_without_a_server(site, tmp_path) -> None:
    lists = tmp_path / "lists" / "user.jdoe"
    lists.mkdir(parents=True)
    (lists / "ds1").write_text("".join(
        json.dumps({"scope": "user.jdoe", "name": n, "bytes": len(c)}) + "\n"
        for n, c in LOCAL.items()))  # fmt: skip
    rules = rules_of(site, list_files=(tmp_path / "lists").as_uri(), token_file=None)
    (placed,) = place([dataset("ds1")], rules)
    assert placed is not None and not placed.problems, placed.problems
    assert (placed.bytes, placed.seconds) == (2_000_000, 2)
    assert site["rucio"].requests == []  # nothing asked of a server
    (missing,) = place([dataset("ds9")], rules)
    assert missing is not None
    assert "this node has no listing of that DATASET" in missing.problems[0].message().message


@pytest.mark.parametrize(
    ("name", "jdoe", "pointer", "said"),
    [
        ("ds1", {"list_files": None, "token_file": None}, "/data/0/objecttype",
         "user.jdoe:ds1 is a DATASET, which is many files, and this node cannot list them: its "
         "mapping of scope user.jdoe has no list_files (a Rucio server, or a directory of saved "
         "listings); give each FILE as a data resource, or ask the site to add list_files to "
         "that mapping"),
        ("ds9", {}, "/data/0/objectname",
         "user.jdoe:ds9 is under scope user.jdoe, which this node maps, but its Rucio server "
         "{url} has no such DATASET (404); check the identifier"),
        ("mixed", {}, "/data/0/objectname",
         "the DATASET user.jdoe:mixed holds other:x.1, of a scope this node maps nothing of (it "
         "maps Rucio scopes: user.jdoe, data18); ask a node that holds it all"),
        ("ds1", {"token_file": "WRONG"}, "/data/0/objectname",
         "this node cannot list the DATASET user.jdoe:ds1: its Rucio server {url} answered 401 "
         "(the node's Rucio token is missing or expired)"),
    ],
)  # fmt: skip
def test_a_dataset_that_cannot_be_listed_or_mapped_is_refused_saying_what_is_missing(
    site, name, jdoe, pointer, said
) -> None:
    if jdoe.get("token_file") == "WRONG":
        wrong = site["tmp"] / "old-token"
        wrong.write_text("expired\n")
        jdoe = {"token_file": str(wrong)}
    (placed,) = place([dataset(name)], rules_of(site, **jdoe))
    assert placed is not None
    (problem,) = placed.problems
    assert problem.pointer == pointer
    assert problem.message().message == f"{pointer}: " + said.format(url=site["rucio"].url)
    with pytest.raises(StagingRefused, match="mappings"):  # and when staged, the same
        source_of(dataset(name), rules_of(site, **jdoe))


def test_a_dataset_over_the_nodes_limits_is_refused(site) -> None:
    (placed,) = place([dataset("ds1")], rules_of(site, max_bytes=1_999_999))
    assert placed is not None and "larger than this node stages" in placed.problems[0].template
    rules = rules_of(site).model_copy(update={"max_files": 1})
    (placed,) = place([dataset("ds1")], rules)
    assert placed is not None
    assert "has more than 1 files" in placed.problems[0].message().message
    (site["root"] / rucio_path("user.jdoe", "b.1", "hash")).unlink()
    (placed,) = place([dataset("ds1")], rules_of(site))
    assert placed is not None
    assert "user.jdoe:b.1 is under user.jdoe" in placed.problems[0].message().message


def test_the_listing_is_rucios_and_is_read_strictly() -> None:
    values = {"identifier": "s:d", "kind": "DATASET", "via": "s"}
    text = (b'{"scope": "s", "name": "f.1", "bytes": 3, "adler32": "x"}\n\n'
            b'{"scope": "s", "name": "f.2", "bytes": null}\n')  # fmt: skip
    files = parse_listing(text, 10, values)
    assert [(f.name, f.bytes) for f in files] == [("f.1", 3), ("f.2", None)]
    for text, said in [
        (b"not json\n", "is not Rucio's (line 1"),
        (b'{"scope": "s", "name": "../x"}\n', "is not Rucio's (line 1"),
        (b'{"scope": "s", "name": "f"}\n{"scope": "t", "name": "f"}\n', "two files named f"),
        (b"", "has no files to stage"),
    ]:
        with pytest.raises(Unmappable, match=said.replace("(", r"\(")):
            parse_listing(text, 10, values)
    mapping = RucioMapping(scope="s", target="file:///r", list_files="https://rucio.example.org/")
    assert listing_location(mapping, "user.x", "a-b.2") == (
        "https://rucio.example.org/dids/user.x/a-b.2/files"
    )


def test_a_token_file_needs_a_server() -> None:
    with pytest.raises(ConfigError, match="token_file is the list_files server's"):
        parse_config({**POOL_CONFIG, "staging": {"mappings": {"rucio": [
            {"scope": "s", "target": "file:///r", "token_file": "/t"}]}}})  # fmt: skip


def test_an_offer_for_a_dataset_books_every_files_staging_time(
    site, broker_factory: Callable[..., Any], client_factory, sqlite_url
) -> None:
    broker = broker_factory(sqlite_url, platforms=sim_platform(), staging=staging(site))
    client = client_factory(broker)
    answer = client.post("/requests", json=data_doc(
        {"kind": RUCIO, "scope": "user.jdoe", "objectname": "cont", "objecttype": "CONTAINER"},
    )).json()  # fmt: skip
    assert answer["result"] == "YES", answer
    offer = answer["offers"][0]
    assert seconds(offer["data"][0]["schedule"]["preparing"]["duration"]) == 3
    notes = [m["message"] for m in answer["meta"]["messages"]]
    assert any("the CONTAINER user.jdoe:cont is staged from this node's data" in n
               for n in notes), notes  # fmt: skip
