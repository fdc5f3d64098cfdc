"""Identified data (ivoa, rucio, skao) on the platforms whose session machine fetches its own
data (kubernetes: the pod's init containers; openstack: the server's cloud-init script): a
mapping that yields a URL is fetched there, pinned and bounded as any download, its host
reached because the site mapped it (no other internal address is); a Rucio dataset is every
file, one after the other; a mapping to the node's own files is refused, at request time (a NO
saying why and what would work) and when staged.

Kubernetes runs against the HTTP-level fake API server (``tests/kube_fake.py``), whose kubelet
runs the init containers' shell and curl; the Rucio server and the site's file server are
``tests/rucio_fake.py``. OpenStack's staging script is run as the server would run it, with
``sh`` and the real ``curl``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker_core.config import PlatformConfig
from broker_core.kinds.base import kind_uri
from broker_core.kinds.builtin import IvoaDataResource, RucioDataResource, SkaoDataResource
from broker_core.staging.mappings import DataMappings
from broker_core.staging.placement import place
from broker_core.staging.rules import StagingRules
from platforms import remote_staging
from platforms.contract import Execution, PlatformError, WorkState
from platforms.kubernetes import KubernetesPlatform, manifests
from platforms.openstack import builders
from platforms.openstack.kinds import VirtualMachine
from tests.rucio_fake import RucioFake
from tests.test_data_mappings import IVOA, RUCIO, data_doc, seconds
from tests.test_platform_kubernetes import NAMESPACE, fake, make_platform, wait_for  # noqa: F401
from tests.test_platform_kubernetes_manifests import (
    DATA_UUID,
    _session,
    check_snapshot,
    options,
    validate,
)
from tests.test_platform_openstack import platform as openstack_platform
from tests.test_platform_openstack_builders import START, WORKDIR, ssh_key

SURVEY = b"survey-field-bytes\n"
AOD = {"AOD.1": b"aod-one\n", "AOD.2": b"aod-two\n"}
STORAGE = "5d1e2f3a-0000-4000-8000-0000000000f1"


@pytest.fixture
def rucio(tmp_path: Path) -> Iterator[RucioFake]:
    """The site's Rucio server (data18:ds, two files) and file server (its /files)."""
    server = RucioFake().start()
    for name, content in AOD.items():
        server.add_file("data18", name, content)
        server.served[f"data18/{name}"] = content
    server.add_collection("DATASET", "data18", "ds", *(("data18", n) for n in AOD))
    server.served["survey/field.fits"] = SURVEY
    (tmp_path / "token").write_text("rucio-token-1\n")
    yield server
    server.stop()


def url_mappings(rucio: RucioFake, tmp_path: Path) -> dict[str, Any]:
    """ivo://example.org/survey/ and the scope data18 on the site's (loopback) server, and
    ivo://example.org/disk/ on the node's own files."""
    disk = tmp_path / "disk"
    disk.mkdir(exist_ok=True)
    (disk / "local.fits").write_bytes(b"on-the-node\n")
    return {
        "bandwidth": "1 MB/s",
        "ivoa": [
            {"prefix": "ivo://example.org/survey/", "target": f"{rucio.url}/files/survey/{{rest}}"},
            {"prefix": "ivo://example.org/disk/", "target": f"{disk.as_uri()}/{{rest}}"},
        ],
        "rucio": [{"scope": "data18", "target": f"{rucio.url}/files", "lfn2pfn": "identity",
                   "list_files": rucio.url, "token_file": str(tmp_path / "token")}],
    }  # fmt: skip


def site_rules(rucio: RucioFake, tmp_path: Path) -> StagingRules:
    """No allow_networks: the loopback is reached only because the mappings name its host."""
    return StagingRules(mappings=DataMappings.model_validate(url_mappings(rucio, tmp_path)))


IVOA_DATA = {"kind": IVOA, "ivoid": "ivo://example.org/survey/field.fits"}
DATASET = {"kind": RUCIO, "scope": "data18", "objectname": "ds", "objecttype": "DATASET"}


def pod_session(tmp_path: Path, script: str, data: list[dict[str, Any]], rules: StagingRules):
    """A busybox session with the data resources mounted at /in0, /in1, ..."""
    now = int(time.time())
    workdir = tmp_path / "w"
    workdir.mkdir(exist_ok=True)
    return Execution(
        session="0b6f1a52-3c1e-4c55-9a0e-7d2c4f1e8a0d",
        executable={"kind": kind_uri("executable", "docker-container"),
                    "image": {"locations": ["docker.io/library/busybox:1.36"]},
                    "command": ["sh", "-c", script]},
        compute={"kind": kind_uri("compute", "simple-compute-resource"), "volumes": [
            {"kind": kind_uri("volume", "simple-volume-mount"), "path": f"/in{i}",
             "resource": f"d{i}"} for i in range(len(data))]},
        storage=[{"kind": kind_uri("storage", "simple-storage-resource"),
                  "meta": {"uuid": STORAGE, "name": "scratch"}}],
        data=[{**d, "meta": {"uuid": f"5d1e2f3a-0000-4000-8000-00000000000{i}", "name": f"d{i}"},
               "storage": STORAGE} for i, d in enumerate(data)],
        granted={"cores": 1, "memory": 1, "storage": 1},
        prepare_at=now, start_at=now, end_at=now + 120, workdir=workdir, pools=["main"],
        staging=rules,
    )  # fmt: skip


# --- kubernetes ---------------------------------------------------------------------------------


def test_a_pod_fetches_mapped_urls_and_every_file_of_a_rucio_dataset(
    make_platform: Callable[..., KubernetesPlatform],  # noqa: F811
    rucio: RucioFake,
    tmp_path: Path,
) -> None:
    platform = make_platform()
    run = pod_session(tmp_path, "cat /in0/field.fits /in1/AOD.1 /in1/AOD.2",
                      [IVOA_DATA, DATASET], site_rules(rucio, tmp_path))  # fmt: skip
    for storage in run.storage:
        platform.prepare_storage(run, storage)
    for data in run.data:
        platform.stage_data(run, data)
    assert ("GET", "/dids/data18/ds/files", "rucio-token-1") in rucio.requests
    assert "and 1 more files from there" in " ".join(run.notes)
    platform.prepare_executable(run)
    platform.start(run)
    status = wait_for(platform, run, WorkState.SUCCEEDED, WorkState.FAILED)
    assert (status.state, status.exit_code) == (WorkState.SUCCEEDED, 0), status
    assert platform.logs(run) == (SURVEY + b"".join(AOD.values())).decode()
    fetched = [p for m, p, _ in rucio.requests if m == "GET" and p.startswith("/files/")]
    assert sorted(fetched) == ["/files/data18/AOD.1", "/files/data18/AOD.2",
                               "/files/survey/field.fits"]  # fmt: skip
    platform.stop(run, "done")
    platform.release(run)


def test_what_the_pod_cannot_reach_fails_preparation_saying_why(
    make_platform: Callable[..., KubernetesPlatform],  # noqa: F811
    rucio: RucioFake,
    tmp_path: Path,
) -> None:
    platform = make_platform()
    rules = site_rules(rucio, tmp_path)
    on_disk = {"kind": IVOA, "ivoid": "ivo://example.org/disk/local.fits"}
    # an identifier the site does not map, carrying its own URL on the same loopback server:
    # only the mapping opens that host, so the ordinary rules refuse the internal address
    own_url = {"kind": IVOA, "ivoid": "ivo://elsewhere.org/x",
               "datalink": {"access_url": f"{rucio.url}/files/survey/field.fits"}}  # fmt: skip
    run = pod_session(tmp_path, "true", [on_disk, own_url], rules)
    with pytest.raises(PlatformError) as disk:
        platform.stage_data(run, run.data[0])
    assert "a file of this node, which the session's machine cannot read" in str(disk.value)
    assert "map ivo://example.org/disk/ to an http(s):// URL" in str(disk.value)
    with pytest.raises(PlatformError, match="staging rule address"):
        platform.stage_data(run, run.data[1])


@pytest.fixture
def kube_node(fake, tmp_path, rucio, broker_factory, client_factory, sqlite_url):  # noqa: F811
    config = {"name": "k8s", "type": "kubernetes", "options": {
        "kubeconfig": str(fake.kubeconfig(tmp_path / "kubeconfig")), "namespace": NAMESPACE,
        "node_groups": [{"name": "main", "selector": {"pool": "main"}}],
        "data_staging": "PT1M"}}  # fmt: skip
    PlatformConfig.model_validate(config)
    broker = broker_factory(sqlite_url, platforms=[config],
                            staging={"mappings": url_mappings(rucio, tmp_path)})  # fmt: skip
    return client_factory(broker)


def test_a_kubernetes_node_offers_mapped_urls_and_refuses_mapped_files_saying_why(
    kube_node,
) -> None:
    answer = kube_node.post("/requests", json=data_doc(IVOA_DATA, DATASET)).json()
    assert answer["result"] == "YES", answer
    durations = [
        seconds(d["schedule"]["preparing"]["duration"]) for d in answer["offers"][0]["data"]
    ]
    assert durations == [1, 1]  # sized by a HEAD and by the listing: not the flat minute
    answer = kube_node.post("/requests", json=data_doc(
        {"kind": IVOA, "ivoid": "ivo://example.org/disk/local.fits"})).json()  # fmt: skip
    assert answer["result"] == "NO"
    said = " | ".join(m["message"] for m in answer["meta"]["messages"])
    assert ("platform k8s: ivo://example.org/disk/local.fits is mapped to file://") in said
    assert ("which the session's machine cannot read (it fetches data itself, over http(s) "
            "only); a platform that stages on this node (local, slurm) can take it, or the "
            "site can map ivo://example.org/disk/ to an http(s):// URL that serves it"
            ) in said  # fmt: skip


def test_a_datasets_files_are_fetched_by_one_init_container_in_the_job() -> None:
    """The job's manifest, as snapshot: the dataset's two files fetched one after the other
    into the data resource's directory by one init container, each pinned and bounded."""
    execution = _session()
    simple = execution.data[0].model_dump(mode="json", exclude_none=True)
    execution.data[0] = RucioDataResource.model_validate(
        {"meta": simple["meta"], "storage": simple["storage"], "scope": "data18",
         "objectname": "ds", "objecttype": "DATASET"})  # fmt: skip
    host = "data.example.org"
    fetches = [remote_staging.Fetch(DATA_UUID, "data input", f"https://{host}/{n}", n, host, 443,
                                    "192.0.2.80") for n in AOD]  # fmt: skip
    execution.state[remote_staging.STATE_KEY] = {DATA_UUID: [f.__dict__ for f in fetches]}
    opts = options()
    job = manifests.job_manifest(execution, opts, "k8s", "python:3.12", opts.node_groups[0], START)
    validate(job)
    check_snapshot("dataset-job", job)
    (stager,) = [c for c in job["spec"]["template"]["spec"]["initContainers"]
                 if c["name"] == "stage-0"]  # fmt: skip
    script = stager["command"][2]
    assert stager["command"][3:] == ["fetch", f"{manifests.STAGE_MOUNT}/{DATA_UUID}"]
    assert script.count('fetch "$into" AOD.') == 2 and script.count("|| exit $?") == 2
    assert "--resolve data.example.org:443:192.0.2.80 https://data.example.org/AOD.2" in script


# --- openstack ----------------------------------------------------------------------------------


def test_openstack_takes_identified_data_and_refuses_mapped_files(rucio, tmp_path) -> None:
    built = openstack_platform()
    assert {IVOA, RUCIO, kind_uri("data", "skao-data-resource")} <= built.accepted_kinds()
    rules = site_rules(rucio, tmp_path)
    data = [IVOA_DATA, {"kind": IVOA, "ivoid": "ivo://example.org/disk/local.fits"}]
    placements = place([IvoaDataResource.model_validate(d) for d in data], rules)
    (refused,) = built.data_refusals(placements)
    assert refused.message.startswith("platform cloud: ivo://example.org/disk/local.fits is "
                                      "mapped to file://")  # fmt: skip
    assert built.data_refusals(placements[:1]) == []
    # an unmapped SKAO resource's own replica on a file:// path: the request's location
    skao = SkaoDataResource.model_validate(
        {"namespace": "testing", "objectname": "zi", "replicas": [{"dataurl": "file:///d/zi"}],
         "meta": {"uuid": "d9"}}
    )  # fmt: skip
    (own,) = built.data_refusals(place([skao], rules.model_copy(update={"file_roots": ("/d",)})))
    assert own.message == (
        "platform cloud: the session's machine fetches data itself, from http(s):// URLs "
        "only; file:///d/zi (/data/0/replicas/0/dataurl) cannot be fetched"
    )
    execution = Execution("s", None, None, [], [skao], {}, 0, 0, 1, tmp_path, staging=rules)
    with pytest.raises(PlatformError, match="staging rule scheme"):
        remote_staging.prepare(execution, execution.data[0])


def test_a_servers_staging_script_fetches_every_file_of_a_dataset(rucio, tmp_path) -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the staging script (it is on every cloud image)")
    rules = site_rules(rucio, tmp_path)
    execution = Execution(
        session="7c3e2a10-5b4d-4e6f-8a9b-0c1d2e3f4a5b",
        executable=VirtualMachine.model_validate({"image": "debian-12",
                                                  "ssh_public_key": ssh_key()}),
        compute={"kind": kind_uri("compute", "simple-compute-resource"), "meta": {"uuid": "c0"}},
        storage=[],
        data=[{**IVOA_DATA, "meta": {"uuid": "d0"}}, {**DATASET, "meta": {"uuid": "d1"}}],
        granted={"cores": 1, "memory": 1}, prepare_at=START - 60, start_at=START,
        end_at=START + 600, workdir=WORKDIR, staging=rules,
    )  # fmt: skip
    for data in execution.data:
        remote_staging.prepare(execution, data)
    fetches = remote_staging.fetches(execution)
    assert [f.address for f in fetches] == ["127.0.0.1"] * 3  # pinned to the judged address
    script = tmp_path / "ebroker-stage"
    script.write_text(builders.staging_script(execution, fetches, rules))
    root, console = tmp_path / "data", tmp_path / "console"
    console.touch()
    env = {"PATH": "/usr/bin:/bin", "EBROKER_DATA_ROOT": str(root),
           "EBROKER_CONSOLE": str(console), "EBROKER_POWEROFF": "true"}  # fmt: skip
    done = subprocess.run(["sh", str(script)], env=env, timeout=60, capture_output=True)
    assert done.returncode == 0, console.read_text()
    assert (root / "d0" / "field.fits").read_bytes() == SURVEY
    assert {p.name: p.read_bytes() for p in (root / "d1").iterdir()} == AOD
