"""The client command line against a real node process (``ebroker serve``, the simulated
platform, callers with tokens of the tests' real OIDC issuer): request by flags and by file,
accept, watch to COMPLETED, logs, the lists, withdraw, extend, cancel; the exit codes (NO and
refusals 1, bad flags and documents 2, no broker 3); ``--dry-run`` sending nothing; JSON that
parses; a device-code login followed by a call with its token; and no token ever printed.

Most commands run in this process (typer's CliRunner); the watch, the login and a few more run
as ``python -m client`` processes, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from client.app import app
from client.documents import COMPUTE, EXECUTABLES
from tests.nodes import ROOT, Node, free_port, oidc_node
from tests.oidc_issuer import OidcIssuer

pytestmark = pytest.mark.slow  # real processes: `-m 'not slow'` leaves it out

IMAGE = "localhost/busybox"



@pytest.fixture(scope="module")
def node(issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("client-flow")
    offers = {"granularity": "PT1S", "max_offers": 2}
    started = oidc_node(issuer, tmp, "cli", offers=offers)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def tokens(issuer: OidcIssuer) -> dict[str, str]:
    return {
        "alice": issuer.token(sub="alice", expires_in=3600),
        "bob": issuer.token(sub="bob", expires_in=3600),
        "root": issuer.token(sub="root", groups=["admins"], expires_in=3600),
    }


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment with no profile file of the user's, and a wide terminal."""
    return {"XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path), "COLUMNS": "200",
            "EBROKER_TOKEN": "", "EBROKER_URL": "", "EBROKER_PROFILE": ""}  # fmt: skip


def eb(
    node: Node, home: dict[str, str], token: str | None, *args: str, stdin: str | None = None
) -> Result:
    env = {**home, **({"EBROKER_TOKEN": token} if token else {})}
    return CliRunner().invoke(app, ["--url", node.url, *args], env=env, input=stdin)


def eb_process(node: Node, home: dict[str, str], token: str | None, *args: str,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
    env = {**os.environ, **home, "EBROKER_URL": node.url, "EBROKER_TOKEN": token or ""}
    return subprocess.run([sys.executable, "-m", "client", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def parsed(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def no_secret(token: str, *texts: str) -> None:
    for text in texts:
        assert token not in text
        assert token[-24:] not in text  # not even its signature's end


# --- the whole flow --------------------------------------------------------------------------


def test_request_accept_watch_logs_to_the_end(node, home, tokens) -> None:
    alice = tokens["alice"]
    result = eb(node, home, alice, "request", "--image", IMAGE, "--cores", "1..2",
                "--memory", "1", "--duration", "4s", "--window", "now..+2m", "--name", "flow",
                "-o", "json")  # fmt: skip
    offers = parsed(result)
    assert offers["result"] == "YES" and offers["offers"]
    first = offers["offers"][0]
    assert (
        first["compute"]["cores"]["max"] == 2
        and first["schedule"]["available"]["duration"] == "PT4S"
    )

    uuid = first["meta"]["uuid"]
    result = eb(node, home, alice, "accept", uuid)
    assert result.exit_code == 0, result.output
    assert "ACCEPTED" in result.stdout and uuid in result.stdout
    assert f"watch {uuid}" in result.stderr

    # the watch and the log follower, as a user runs them, while the work writes its output
    # (the simulated platform writes none: the test writes it where the node reads it)
    env = {**os.environ, **home, "EBROKER_URL": node.url, "EBROKER_TOKEN": alice}
    started = [subprocess.Popen([sys.executable, "-m", "client", *args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for args in (["watch", uuid, "--interval", "0.3"],
                            ["logs", "--follow", uuid, "--interval", "0.3"])]  # fmt: skip
    output = node.log.parent / "sessions" / uuid / "logs" / "output.log"
    output.parent.mkdir(parents=True, exist_ok=True)
    written = ""
    for i in range(3):
        line = f"output line {i}\n"
        with output.open("a") as out:
            out.write(line)
        written += line
        time.sleep(0.7)
    (watched, watch_err), (followed, follow_err) = (p.communicate(timeout=60) for p in started)
    assert started[0].returncode == 0, watched + watch_err
    lines = [line.split()[-1] for line in watched.splitlines() if line.strip()]
    assert lines[-1] == "COMPLETED" and len(lines) == len(set(lines)) >= 2
    assert started[1].returncode == 0, follow_err
    assert followed == written  # each line once, as it came
    no_secret(alice, watched, watch_err, followed, follow_err)

    shown = parsed(eb(node, home, alice, "show", first["meta"]["uuid"], "-o", "json"))
    assert shown["phase"] == "COMPLETED" and shown["meta"]["name"] == "flow"
    table = eb(node, home, alice, "show", first["meta"]["uuid"])
    assert "COMPLETED" in table.stdout and "history" in table.stdout
    logs = eb(node, home, alice, "logs", uuid)
    assert logs.exit_code == 0 and logs.stdout == written
    # its sibling was rejected by the accept
    listed = parsed(
        eb(node, home, alice, "sessions", "--phase", "completed,rejected", "-o", "json")
    )
    expected = {o["meta"]["uuid"]: "REJECTED" for o in offers["offers"]}
    expected[first["meta"]["uuid"]] = "COMPLETED"
    assert {i["uuid"]: i["phase"] for i in listed} == expected


def test_a_request_file_amended_by_flags_then_withdrawn(node, home, tokens, tmp_path) -> None:
    bob = tokens["bob"]
    request = tmp_path / "request.yaml"
    request.write_text((ROOT / "examples/requests/01-minimal.yaml").read_text())
    result = eb(node, home, bob, "request", str(request), "--cores", "3", "--window", "+2h..+3h")
    assert result.exit_code == 0, result.output
    assert "YES" in result.stdout and "accept one with" in result.stderr
    offer_sets = parsed(eb(node, home, bob, "offersets", "--state", "open", "-o", "json"))
    assert len(offer_sets) == 1 and offer_sets[0]["state"] == "open"
    uuid = offer_sets[0]["uuid"]
    sessions = parsed(eb(node, home, bob, "sessions", "--phase", "OFFERED", "-o", "json"))
    assert sessions and all(s["offerset"] == uuid for s in sessions)
    assert all(s["uuid"] in result.stdout for s in sessions)  # the table shows every offer
    # the same document from standard input, as YAML output
    again = eb(node, home, bob, "-o", "yaml", "request", "-", "--cores", "3", "--window",
               "+4h..+5h", stdin=request.read_text())  # fmt: skip
    assert yaml.safe_load(again.stdout)["result"] == "YES"

    withdrawn = eb(node, home, bob, "withdraw", uuid)
    assert withdrawn.exit_code == 0, withdrawn.output
    assert withdrawn.stdout.count("REJECTED") == len(sessions)
    closed = parsed(eb(node, home, bob, "offersets", "--state", "closed", "-o", "json"))
    assert [s["uuid"] for s in closed] == [uuid]


def test_extend_and_cancel(node, home, tokens) -> None:
    alice = tokens["alice"]
    offers = parsed(eb(node, home, alice, "request", "--image", IMAGE, "--duration", "10m",
                       "--window", "+3h..+4h", "-o", "json"))  # fmt: skip
    uuid = offers["offers"][0]["meta"]["uuid"]
    assert parsed(eb(node, home, alice, "accept", uuid, "-o", "json"))["phase"] == "ACCEPTED"
    longer = parsed(eb(node, home, alice, "extend", uuid, "30m", "-o", "json"))
    assert longer["schedule"]["available"]["duration"] == "PT40M"
    result = eb(node, home, alice, "cancel", uuid)
    assert result.exit_code == 0 and "CANCELLED" in result.stdout
    # accepting it now is refused by the node: exit 1, the problem made a sentence
    refused = eb(node, home, alice, "accept", uuid)
    assert refused.exit_code == 1
    assert "409" in refused.stderr and "CANCELLED" in refused.stderr
    # another caller's session is not found
    assert eb(node, home, tokens["bob"], "show", uuid).exit_code == 1


def test_ctrl_c_stops_the_watch_not_the_session(node, home, tokens) -> None:
    alice = tokens["alice"]
    offers = parsed(eb(node, home, alice, "request", "--image", IMAGE, "--duration", "5m",
                       "--window", "+8h..+9h", "-o", "json"))  # fmt: skip
    uuid = offers["offers"][0]["meta"]["uuid"]
    assert eb(node, home, alice, "accept", uuid).exit_code == 0
    env = {**os.environ, **home, "EBROKER_URL": node.url, "EBROKER_TOKEN": alice}
    watch = subprocess.Popen([sys.executable, "-m", "client", "watch", uuid], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert watch.stdout is not None
    first = watch.stdout.readline()  # it is watching
    assert first.split()[-1] in ("ACCEPTED", "WAITING"), first
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=30)
    assert watch.returncode == 130, out + err
    assert f"stopped watching {uuid}; the session goes on" in err and "Traceback" not in err
    assert parsed(eb(node, home, alice, "show", uuid, "-o", "json"))["phase"] in (
        "ACCEPTED",
        "WAITING",
    )
    assert eb(node, home, alice, "cancel", uuid).exit_code == 0


def test_the_lists_page_through_the_cursor(node, home, tokens, issuer) -> None:
    token = issuer.token(sub="carol-" + os.urandom(3).hex(), expires_in=3600)
    for hours in (5, 6, 7):
        parsed(eb(node, home, token, "request", "--image", IMAGE, "--window",
                  f"+{hours}h..+{hours}h30m", "--duration", "5m", "-o", "json"))  # fmt: skip
    whole = parsed(eb(node, home, token, "sessions", "-o", "json"))
    one_by_one = parsed(eb(node, home, token, "sessions", "--page-size", "1", "-o", "json"))
    assert len(whole) == 6 and one_by_one == whole
    assert [s["start"] for s in whole] == sorted(s["start"] for s in whole)
    sets = parsed(eb(node, home, token, "offersets", "--page-size", "2", "-o", "json"))
    assert len(sets) == 3
    # an admin names the owner; anyone else naming another is refused (403: exit 1)
    owner = whole[0]["owner"]
    assert (
        parsed(eb(node, home, tokens["root"], "sessions", "--owner", owner, "-o", "json")) == whole
    )
    refused = eb(node, home, tokens["bob"], "sessions", "--owner", owner)
    assert refused.exit_code == 1 and "403" in refused.stderr
    # a window filter: only the first offer set's two offers overlap the sixth hour
    window = parsed(
        eb(node, home, token, "sessions", "--from", "+5h", "--to", "+5h45m", "-o", "json")
    )
    assert 1 <= len(window) <= 2 and all(s in whole for s in window)
    table = eb(node, home, token, "sessions")
    assert all(s["uuid"] in table.stdout for s in whole)


# --- exit codes ------------------------------------------------------------------------------


def test_no_is_exit_1_with_the_reasons(node, home, tokens) -> None:
    result = eb(node, home, tokens["alice"], "request", "--image", IMAGE, "--cores", "1000")
    assert result.exit_code == 1
    assert "no offers" in result.stderr and "cores" in result.stderr
    as_json = eb(node, home, tokens["alice"], "request", "--image", IMAGE, "--cores", "1000",
                 "-o", "json")  # fmt: skip
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["result"] == "NO"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["request", "--image", IMAGE, "--cores", "4..2"], "above the max"),
        (["request", "--image", IMAGE, "--duration", "2x"], "is not a duration"),
        (["request", "--image", IMAGE, "--window", "tomorrow"], "FROM..TO"),
        (["request", "--cores", "2"], "nothing to execute"),
        (["request", "no-such-file.yaml"], "cannot read"),
        (["request", "--image", IMAGE, "--env", "NOVALUE"], "NAME=VALUE"),
        (["extend", "00000000-0000-0000-0000-000000000000", "soon"], "is not a duration"),
        (["sessions", "--phase", "nope"], "unknown phase"),
        (["sessions", "--from", "someday"], "--from"),
        (["offersets", "--state", "ajar"], "open or closed"),
        (["-o", "xml", "sessions"], "xml"),
        (["request", "--bogus"], "No such option"),
        (["accept"], "Missing argument"),
        (["sessions", "--page-size", "0"], "page-size"),
    ],
)
def test_bad_flags_are_usage_errors(node, home, tokens, args: list[str], says: str) -> None:
    result = eb(node, home, tokens["alice"], *args)
    assert result.exit_code == 2, result.output
    assert says in result.output


def test_a_document_the_node_cannot_read_is_a_usage_error(node, home, tokens, tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"excutable": {"kind": EXECUTABLES["docker"]}}))
    result = eb(node, home, tokens["alice"], "request", str(bad))
    assert result.exit_code == 2
    assert (
        "400" in result.stderr and "/excutable" in result.stderr and "did you mean" in result.stderr
    )


def test_no_broker_is_exit_3(home, tokens) -> None:
    env = {**home, "EBROKER_TOKEN": tokens["alice"]}
    result = CliRunner().invoke(
        app, ["--url", f"http://127.0.0.1:{free_port()}", "sessions"], env=env
    )
    assert result.exit_code == 3 and "cannot reach http://127.0.0.1:" in result.stderr
    no_secret(tokens["alice"], result.output)


def test_without_a_good_token_the_node_refuses(node, home, issuer) -> None:
    result = eb(node, home, None, "sessions")
    assert result.exit_code == 1 and "401" in result.stderr
    forged = issuer.token(sub="mallory", aud="someone-else")
    result = eb(node, home, forged, "sessions")
    assert result.exit_code == 1 and "401" in result.stderr
    no_secret(forged, result.output)


def test_dry_run_sends_nothing(node, home, issuer) -> None:
    dave = issuer.token(sub="dave-" + os.urandom(3).hex(), expires_in=3600)
    args = ["request", "--image", IMAGE, "--cores", "2..4", "--memory", "4..8",
            "--duration", "2h", "--window", "2026-12-24T09:00Z..2026-12-24T12:00Z",
            "--command", "sh -c 'echo hi'"]  # fmt: skip
    result = eb(node, home, dave, *args, "--dry-run")
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == {
        "executable": {"kind": EXECUTABLES["docker"], "image": {"locations": [IMAGE]},
                       "command": ["sh", "-c", "echo hi"]},
        "compute": {"kind": COMPUTE, "cores": {"min": 2, "max": 4}, "memory": {"min": 4, "max": 8}},
        "schedule": {"requested": {"duration": "PT2H",
                                   "start": ["2026-12-24T09:00:00Z/2026-12-24T12:00:00Z"]}},
    }  # fmt: skip
    assert f"would POST {node.url}/requests" in result.stderr
    as_json = eb(node, home, dave, *args, "--dry-run", "-o", "json")
    assert json.loads(as_json.stdout) == yaml.safe_load(result.stdout)
    listed = httpx.get(f"{node.url}/offersets", headers={"Authorization": f"Bearer {dave}"})
    assert listed.status_code == 200 and listed.json()["items"] == []


# --- login, and the token never shown ----------------------------------------------------------


def test_device_code_login_then_an_authenticated_call(node, home, issuer, tmp_path) -> None:
    config = tmp_path / "ebroker"
    config.mkdir(exist_ok=True)
    (config / "client.yaml").write_text(yaml.safe_dump({
        "default": "here",
        "profiles": {"here": {"url": node.url, "issuer": issuer.url, "client_id": "eb-cli"}},
    }))  # fmt: skip
    env = {**os.environ, **home}
    env.pop("EBROKER_URL")  # the profile's url
    env.pop("EBROKER_TOKEN")
    user = threading.Thread(
        target=lambda: issuer.approve(issuer.wait_for_user_code(timeout=30), sub="erin")
    )
    user.start()
    login = subprocess.run([sys.executable, "-m", "client", "login"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    user.join()
    assert login.returncode == 0, login.stderr
    assert "enter the code" in login.stderr and "logged in" in login.stderr
    stored = json.loads((config / "tokens" / "here.json").read_text())
    # the stored token is the caller's: a request and the list with it, no token flag
    request = subprocess.run(
        [sys.executable, "-m", "client", "request", "--image", IMAGE, "-o", "json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert request.returncode == 0, request.stderr
    listed = subprocess.run([sys.executable, "-m", "client", "sessions", "-o", "json"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    owners = {s["owner"] for s in json.loads(listed.stdout)}
    assert owners == {"test:erin"}
    for text in (login.stdout, login.stderr, request.stderr, listed.stdout, listed.stderr):
        no_secret(stored["access_token"], text)
        assert stored["refresh_token"] not in text


def test_help_lists_the_exit_codes_and_completion(home) -> None:
    result = CliRunner().invoke(app, ["--help"], env=home)
    assert result.exit_code == 0
    for text in ("Exit codes", "3: the broker or the issuer cannot be reached", "watch",
                 "--install-completion", "--show-completion", "logs", "login"):  # fmt: skip
        assert text in result.output
    shown = CliRunner().invoke(
        app, ["--show-completion", "bash"], env={**home, "SHELL": "/bin/bash"}
    )
    assert shown.exit_code == 0 and "complete" in shown.output
