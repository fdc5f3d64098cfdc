"""Tests for broker_core.http.bodies: safe decoding of untrusted request bodies."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from itertools import pairwise

import pytest
import yaml

from broker_core.http import bodies
from broker_core.http.bodies import (
    BodyError,
    BodyLimits,
    dump_yaml,
    is_json,
    is_yaml,
    media_type,
    parse_body,
)

JSON = "application/json"
YAML = "application/yaml"

LOADERS = [yaml.SafeLoader]
if hasattr(yaml, "CSafeLoader"):
    LOADERS.append(yaml.CSafeLoader)


@pytest.fixture(params=LOADERS, ids=lambda loader: loader.__name__)
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[type]:
    """Run YAML tests against both the libyaml and the pure-Python loader."""
    monkeypatch.setattr(bodies, "_SafeLoader", request.param)
    yield request.param


def refused(raw: bytes, content_type: str | None, status: int = 400, **kw: object) -> BodyError:
    with pytest.raises(BodyError) as info:
        parse_body(raw, content_type, **kw)  # type: ignore[arg-type]
    assert info.value.status == status, info.value.detail
    return info.value


# what "refused quickly" means: far from the minutes a quadratic parse of 1 MB takes, and far
# enough above the ~0.1 s these take that a busy 2-core machine does not fail it
QUICK_SECONDS = 5.0


def quick(raw: bytes, content_type: str | None) -> BodyError:
    start = time.process_time()  # CPU, not the wall clock that other tests' load stretches
    err = refused(raw, content_type)
    assert time.process_time() - start < QUICK_SECONDS
    return err


# ------------------------------------------------------------------ media types


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("application/json; charset=utf-8", "application/json"),
        ("Application/YAML ;charset=UTF-8", "application/yaml"),
        ("  text/json  ", "text/json"),
        ("", ""),
        (None, ""),
    ],
)
def test_media_type(header: str | None, expected: str) -> None:
    assert media_type(header) == expected


def test_is_json_and_is_yaml() -> None:
    for mt in (
        "application/json",
        "application/problem+json",
        "text/json",
        "application/vnd.ivoa.offer+json",
    ):
        assert is_json(mt) and not is_yaml(mt)
    for mt in ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"):
        assert is_yaml(mt) and not is_json(mt)
    for mt in ("application/xml", "text/plain", "", "+json"):
        assert not is_json(mt) and not is_yaml(mt)


# ------------------------------------------------------------------ JSON


def test_valid_json() -> None:
    raw = '{"a": [1, 2.5, true, null], "b": "é"}'.encode()
    assert parse_body(raw, "application/json; charset=utf-8") == {
        "a": [1, 2.5, True, None],
        "b": "é",
    }
    assert parse_body(b"[1]", "application/vnd.example+json") == [1]
    assert parse_body(b'"bare"', JSON) == "bare"


def test_json_utf8_bom_is_ignored() -> None:
    assert parse_body(b'\xef\xbb\xbf{"a": 1}', JSON) == {"a": 1}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'  {"a": 1}', {"a": 1}),
        (b"\n[1, 2]", [1, 2]),
        (b"a: 1\nb: [x]\n", {"a": 1, "b": ["x"]}),
        (b"- 1\n- 2\n", [1, 2]),
    ],
)
def test_sniffing_without_content_type(raw: bytes, expected: object) -> None:
    assert parse_body(raw, None) == expected
    assert parse_body(raw, "") == expected


def test_sniffed_json_is_parsed_as_json() -> None:
    # YAML would accept a trailing comma in a flow mapping; JSON must not.
    refused(b'{"a": 1,}', None)


def test_too_large() -> None:
    err = refused(b"[" + b"1," * 600_000 + b"1]", JSON, status=413)
    assert err.title == "Payload Too Large"
    assert "1048576" in err.detail
    refused(b'{"a": 1}', JSON, status=413, limits=BodyLimits(max_bytes=4))


@pytest.mark.parametrize("raw", [b"", b"   ", b"\r\n\t \n"])
@pytest.mark.parametrize("content_type", [JSON, YAML, None])
def test_empty(raw: bytes, content_type: str | None) -> None:
    err = refused(raw, content_type)
    assert err.title == "Bad Request"
    assert err.detail == "request body is empty"


def test_yaml_with_only_comments_is_empty() -> None:
    assert refused(b"# nothing here\n", YAML).detail == "request body is empty"


@pytest.mark.parametrize("content_type", [JSON, YAML, None])
def test_bad_utf8(content_type: str | None) -> None:
    err = refused(b'{"a": "\xff\xfe"}', content_type)
    assert "UTF-8" in err.detail


def test_json_syntax_error_has_position() -> None:
    err = refused(b'{\n  "a": 1,\n  "b": }', JSON)
    assert "line 3" in err.detail and "column" in err.detail


@pytest.mark.parametrize("raw", [b"[NaN]", b'{"a": Infinity}', b"-Infinity", b"[1e999]"])
def test_non_finite_numbers_refused(raw: bytes) -> None:
    refused(raw, JSON)


def test_huge_json_integer_refused() -> None:
    refused(b"[" + b"9" * 5000 + b"]", JSON)


@pytest.mark.parametrize("opener, closer", [("[", "]"), ('{"a":', "}")])
def test_json_100k_deep_refused_quickly(opener: str, closer: str) -> None:
    raw = (opener * 100_000 + "1" + closer * 100_000).encode()
    err = quick(raw, JSON)
    assert err.detail == "nesting deeper than 64 levels"


def test_json_depth_limit_boundary() -> None:
    assert parse_body(b"[" * 64 + b"]" * 64, JSON) is not None
    refused(b"[" * 65 + b"]" * 65, JSON)
    assert parse_body(b"[[[]]]", JSON, BodyLimits(max_depth=3)) == [[[]]]
    refused(b"[[[[]]]]", JSON, limits=BodyLimits(max_depth=3))


@pytest.mark.parametrize(
    "text",
    [
        '{"s": "' + "[" * 1000 + '"}',
        '{"s": "' + "{" * 1000 + "]" * 5 + '"}',
        '["\\"' + "[" * 1000 + '"]',  # escaped quote does not end the string
        '["\\\\\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]',
    ],
)
def test_brackets_inside_strings_do_not_count(text: str) -> None:
    assert parse_body(text.encode(), JSON) == json.loads(text)


def test_escaped_backslash_then_real_nesting_counts() -> None:
    # "\\" is a complete string; the brackets after it are structure.
    deep = "[" * 63 + "]" * 63
    assert parse_body(f'["\\\\", {deep}]'.encode(), JSON)[0] == "\\"
    refused(f'["\\\\", [{deep}]]'.encode(), JSON)


def test_unterminated_string_is_a_bad_request() -> None:
    refused(b'["abc', JSON)
    refused(b'["abc\\', JSON)


# ------------------------------------------------------------------ YAML


def test_valid_yaml(loader: type) -> None:
    raw = "name: test\nitems:\n  - 1\n  - 2.5\n  - true\n  - null\nunicode: é\n".encode()
    assert parse_body(raw, "application/x-yaml; charset=utf-8") == {
        "name": "test",
        "items": [1, 2.5, True, None],
        "unicode": "é",
    }


def test_yaml_bare_scalar_is_returned(loader: type) -> None:
    assert parse_body(b"hello", YAML) == "hello"
    assert parse_body(b"42", "text/yaml") == 42


def test_yaml_small_aliases_are_fine(loader: type) -> None:
    raw = b"base: &b {cpu: 2, mem: 4}\nx: *b\ny: {<<: *b, cpu: 8}\n"
    assert parse_body(raw, YAML) == {
        "base": {"cpu": 2, "mem": 4},
        "x": {"cpu": 2, "mem": 4},
        "y": {"cpu": 8, "mem": 4},
    }


def test_yaml_100k_deep_flow_sequence_refused_quickly(loader: type) -> None:
    err = quick(b"[" * 100_000 + b"]" * 100_000, YAML)
    assert "nesting deeper than 64 levels" in err.detail


def test_yaml_100k_deep_flow_mapping_refused_quickly(loader: type) -> None:
    err = quick(b"{a: " * 100_000 + b"1" + b"}" * 100_000, None)
    assert "nesting deeper than 64 levels" in err.detail


class _EarlyQuittingLoader(yaml.SafeLoader):
    """A parser with a nesting limit below the node's, which it reports in its own words
    before handing over the events that would show the depth (as libyaml's look-ahead does)."""

    def check_event(self, *choices: object) -> bool:
        if self.get_mark().index > 30:
            raise yaml.scanner.ScannerError(
                "while scanning", None, "some parser's own wording", self.get_mark()
            )
        return super().check_event(*choices)


def test_deep_yaml_gets_the_nodes_own_message_whichever_parser_trips_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bodies, "_SafeLoader", _EarlyQuittingLoader)
    err = refused(b"[" * 200 + b"]" * 200, YAML)
    assert err.detail.startswith("nesting deeper than 64 levels")
    err = refused(b"{a: " * 200 + b"1" + b"}" * 200, YAML)
    assert err.detail.startswith("nesting deeper than 64 levels")
    # a parser error in a shallow document is reported as invalid YAML, not as depth
    err = refused(b"a: '" + b"[" * 200 + b"'\nb: [1, 2\n" + b"c" * 200, YAML)
    assert err.detail.startswith("invalid YAML")


@pytest.mark.parametrize("depth", [1_000, 1_001, 5_000])
def test_yaml_deep_flow_at_any_parser_limit_gets_our_message(loader: type, depth: int) -> None:
    for raw in (b"[" * depth + b"]" * depth, b"a:\n  b: " + b"[x, " * depth + b"]" * depth):
        assert quick(raw, YAML).detail.startswith("nesting deeper than 64 levels")


def test_yaml_depth_counts_alias_expansion(loader: type) -> None:
    deep = "[" * 40 + "]" * 40
    assert parse_body(f"a: &a {deep}\nb: *a\n".encode(), YAML)
    refused(f"a: &a {deep}\nb: {'[' * 30}*a{']' * 30}\n".encode(), YAML)


def billion_laughs() -> bytes:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghi"
    for prev, name in pairwise(names):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return ("\n".join(lines) + "\n").encode()


def test_billion_laughs_refused_quickly(loader: type) -> None:
    err = quick(billion_laughs(), YAML)
    assert "more than 100000 nodes" in err.detail
    assert "alias bomb" in err.detail


def test_node_limit_is_configurable(loader: type) -> None:
    raw = b"a: &a [1, 2, 3]\nb: [*a, *a]\n"  # 1 + (1+4) + (1+1+4+4) = 16 nodes
    assert parse_body(raw, YAML, BodyLimits(max_nodes=16))
    refused(raw, YAML, limits=BodyLimits(max_nodes=15))


@pytest.mark.parametrize("raw", [b"&a [*a]", b"&a {x: [1, {y: *a}]}"])
def test_recursive_alias_refused(loader: type, raw: bytes) -> None:
    assert "recursive" in refused(raw, YAML).detail


def test_undefined_and_duplicate_anchors_refused(loader: type) -> None:
    refused(b"[*nope]", YAML)
    refused(b"[&a 1, &a 2]", YAML)


def test_multiple_documents_refused(loader: type) -> None:
    err = refused(b"a: 1\n---\nb: 2\n", YAML)
    assert "multiple YAML documents" in err.detail


def test_yaml_dates_become_iso_strings(loader: type) -> None:
    raw = (
        b"day: 2024-05-01\n"
        b"utc: 2024-05-01T10:00:00Z\n"
        b"offset: 2024-05-01 10:00:00 +02:00\n"
        b"naive: 2024-05-01 10:00:00\n"
        b"2024-06-01: keyed by date\n"
    )
    assert parse_body(raw, YAML) == {
        "day": "2024-05-01",
        "utc": "2024-05-01T10:00:00+00:00",
        "offset": "2024-05-01T10:00:00+02:00",
        "naive": "2024-05-01T10:00:00",
        "2024-06-01": "keyed by date",
    }


def test_yaml_non_string_keys_become_strings(loader: type) -> None:
    raw = b"1: x\ntrue: y\nnull: z\n2.5: w\n"
    assert parse_body(raw, YAML) == {"1": "x", "true": "y", "null": "z", "2.5": "w"}
    assert parse_body(b"{1: {false: [0]}}", YAML) == {"1": {"false": [0]}}


def test_yaml_unrepresentable_keys_refused(loader: type) -> None:
    refused(b"? [1, 2]\n: x\n", YAML)
    refused(b"? !!binary aGVsbG8=\n: x\n", YAML)


@pytest.mark.parametrize("raw", [b"[.nan]", b"a: .inf", b"a: -.Inf", b"x: 1.0e+999"])
def test_yaml_non_finite_floats_refused(loader: type, raw: bytes) -> None:
    refused(raw, YAML)


def test_yaml_values_json_cannot_hold_are_refused_with_pointer(loader: type) -> None:
    err = refused(b"a:\n  - ok\n  - !!binary aGVsbG8=\n", YAML)
    assert err.pointer == "/a/1"
    refused(b"!!set {x, y}", YAML)


def test_yaml_unsafe_tags_refused(loader: type) -> None:
    refused(b"!!python/object/apply:os.system ['true']", YAML)
    refused(b"!custom 1", YAML)


def test_yaml_syntax_error_has_position(loader: type) -> None:
    err = refused(b"a: 1\nb: [1, 2\nc: 3\n", YAML)
    assert "line" in err.detail and "column" in err.detail


def test_yaml_long_sexagesimal_int_refused_quickly(loader: type) -> None:
    # base-60 ints are constructed in quadratic time; 1 MB of them would take minutes
    quick(b"x: 1" + b":1" * 500_000, YAML)


def test_yaml_control_characters_refused(loader: type) -> None:
    refused(b"a: \x00", YAML)


@pytest.mark.parametrize("raw", [b"!!int", b"!!int abc", b"!!timestamp", b"!!float x", b"!!float"])
def test_yaml_values_not_matching_their_tag_refused(loader: type, raw: bytes) -> None:
    refused(raw, YAML)


FUZZ_ATOMS = [
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b":",
    b" ",
    b"\n",
    b"- ",
    b"? ",
    b"&a",
    b"&b",
    b"*a",
    b"*b",
    b"!!binary",
    b"!!set",
    b"!!omap",
    b"!!int",
    b"!!float",
    b"!!timestamp",
    b"<<",
    b"---",
    b'"',
    b"'",
    b"\\",
    b"1",
    b"1.5",
    b"1:2",
    b".inf",
    b"true",
    b"null",
    b"2024-01-01",
    b"x",
    b"#",
    b"|",
    b"\xff",
    b"\x00",
    b"\\ud800",
    b"NaN",
    b"!x",
    b"%TAG ! tag:x,2000:",
]


def test_fuzz_only_body_error_and_json_compatible_results() -> None:
    rng = random.Random(20240501)
    limits = BodyLimits(max_depth=5, max_nodes=50)
    for _ in range(3000):
        raw = b"".join(rng.choice(FUZZ_ATOMS) for _ in range(rng.randint(1, 25)))
        content_type = rng.choice([None, JSON, YAML])
        try:
            result = parse_body(raw, content_type, limits)
        except BodyError as err:
            assert err.status == 400, (raw, err.detail)
        else:
            json.dumps(result, allow_nan=False)


# ------------------------------------------------------------------ other


@pytest.mark.parametrize("content_type", ["text/csv", "text/plain; charset=utf-8"])
def test_unsupported_media_type(content_type: str) -> None:
    err = refused(b"<a>1</a>", content_type, status=415)
    assert err.title == "Unsupported Media Type"
    for accepted in ("application/json", "application/yaml", "application/xml"):
        assert accepted in err.detail


@pytest.mark.parametrize("content_type", ["application/yml", "text/yml", "text/yml; charset=utf-8"])
def test_yml_is_yaml(content_type: str) -> None:
    assert is_yaml(media_type(content_type))
    assert parse_body(b"a: 1\nb: [x]\n", content_type) == {"a": 1, "b": ["x"]}


def test_sniffed_xml_without_content_type() -> None:
    assert parse_body(b"  <doc><a>1</a></doc>", None) == {"a": "1"}


def test_problem_details() -> None:
    err = BodyError(400, "Bad Request", "broken", pointer="/a")
    assert (err.status, err.title, err.detail, err.pointer) == (400, "Bad Request", "broken", "/a")
    assert err.problem() == {
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": "broken",
        "pointer": "/a",
    }
    assert str(err) == "broken"


def test_dump_yaml_round_trip() -> None:
    doc = {"z": 1, "a": ["é", {"b": None}]}
    out = dump_yaml(doc)
    assert isinstance(out, bytes)
    assert out.index(b"z:") < out.index(b"a:")  # key order kept
    assert "é".encode() in out
    assert parse_body(out, YAML) == doc


def test_the_collector_is_paused_while_bodies_parse_and_on_again_after() -> None:
    """Paused for the parse (a wide body's surviving objects made it walk the heap again and
    again), on again after every way a parse ends, and held off while any thread still parses."""
    import gc
    import threading

    seen: list[bool] = []
    real = bodies._parse_json

    def spy(text: str, limits: bodies.BodyLimits) -> object:
        seen.append(gc.isenabled())
        return real(text, limits)

    assert gc.isenabled()
    bodies._parse_json = spy  # type: ignore[assignment]
    try:
        assert parse_body(b'{"a": 1}', "application/json") == {"a": 1}
        refused(b'{"a": ', "application/json")
        assert seen == [False, False] and gc.isenabled()
        inside, leave = threading.Event(), threading.Event()

        def long_parse() -> None:
            with bodies.collector_paused():
                inside.set()
                leave.wait(10)

        other = threading.Thread(target=long_parse)
        other.start()
        assert inside.wait(10)
        parse_body(b'{"b": 2}', "application/json")
        assert not gc.isenabled()  # the other thread still parses
        leave.set()
        other.join(10)
        assert gc.isenabled()
    finally:
        bodies._parse_json = real  # type: ignore[assignment]
        gc.enable()
