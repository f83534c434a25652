"""Request encoding: the framed body equals canonical JSON byte for byte, and cache keys never change
between versions (paid answers stay cached)."""

from __future__ import annotations

import pytest

from llmlabel.config import Judge
from llmlabel.llm.cache import ResponseCache
from llmlabel.llm.encoding import RequestEncoder, cache_key, canonical, message_json, sample_namespace
from llmlabel.llm.judge import Budget, JudgeClient
from llmlabel.llm.ledger import JudgeLedger

URL = "http://llm.test/v1"
MSGS = [
    {"role": "system", "content": 'Labels: pos, neg. "Quoted" ✓'},
    {"role": "user", "content": '<text>\nünï 🙂 " \\ \x01\n</text>'},
]

# Keys computed by llmlabel before the encoding moved into encoding.py (commit 9377ad0): they must not change.
# The candidates keys are those of the candidate schema that lists `label` before `candidates` (a different
# request, so a different key: small models wrote their sets in the labels' order when `candidates` came first).
GOLDEN = [
    (
        {},
        "933e76c5d5948bd89c20adc4ec7416732c4c5a3d098b5513a68df27e5818ea1d",
        "9ea405bb08b949ea230e1fe7f670ccbd9d7dbfc658eb45c2456481da6c94c1a3",
    ),
    (
        {"logprobs": True},
        "d832e00bd05bfb89510793082645014a801e4256bb67778ee0d3bc2415d04771",
        "d832e00bd05bfb89510793082645014a801e4256bb67778ee0d3bc2415d04771",
    ),
    (
        {"logprobs": True, "response_format": "json_object_schema", "seed": 7},
        "e3ad8ad37fa1b4687da68dbb0da0c1f34efd02493fdab4461d0487fcc0c49a83",
        "f5d004eaaf0bb8818d163b24a00c3cae7eee5de9a6051ef50f71007a30cca749",
    ),
    (
        {"cache_as": "llmlabel-local/x", "max_tokens": 9},
        "da05fc841415dfd6757f017b66188300f50358bac5387763bb39a37743fc9812",
        "887314398febe202ff0ae390ee6fb70442a01632d4c2451583deec3a9dd6324f",
    ),
]


@pytest.mark.parametrize("options, label_key, candidates_key", GOLDEN)
def test_cache_keys_are_those_of_earlier_versions(tmp_path, options, label_key, candidates_key):
    j = Judge(name="a", model="m", base_url="http://llm.test/v1", **options)
    cache = ResponseCache(str(tmp_path / "c"))
    c = JudgeClient(j, cache, JudgeLedger("a", "m"), Budget(), ["pos", "neg"], api_key="k")
    for _ in range(2):  # the second pass reuses the frames
        assert c.key_for(MSGS, "label") == label_key and c.encode(MSGS, "label")[2] == label_key
        assert c.key_for(MSGS, "candidates") == candidates_key
    cache.close()


@pytest.mark.parametrize("fmt", ["auto", "json_object_schema", "json_schema"])  # auto + logprobs: codes, text
@pytest.mark.parametrize("kind", ["label", "candidates", "verify"])
def test_request_body_is_byte_identical_to_canonical_json(tmp_path, kind, fmt):
    """The body is built from a cached frame plus the last message; it must equal canonical(request) exactly,
    or cache keys would change between versions and paid answers would be asked again."""
    j = Judge(name="a", model="m", base_url=URL, seed=7, logprobs=True, response_format=fmt)
    cache = ResponseCache(str(tmp_path / "c"))
    client = JudgeClient(j, cache, JudgeLedger("a", "m"), Budget(), ["pos", "neg"], api_key="k")
    texts = ["hi", "", 'quotes " and \\ backslash', "ünïcödé ✓ 🙂", "\x00\x1f control", "</text> {{ x }}", "a" * 5000]
    system = [{"role": "system", "content": 'Labels: pos, neg. "Quoted" ✓'}]
    for t in texts * 2:  # the second pass hits the cached frames
        for head in (system, system + [{"role": "user", "content": "ex"}, {"role": "assistant", "content": "{}"}]):
            msgs = head + [{"role": "user", "content": t}]
            req, data, key = client.encode(msgs, kind)
            assert req == client.request(msgs, kind) and data == canonical(req)
            assert key == cache_key(URL, canonical(req))
    cache.close()


def _build(messages, kind, sample=0):
    return {"model": "m", "messages": messages, "kind": kind, "opts": {"z": 1, "a": ["ü", None, 1.5]}}


@pytest.mark.parametrize(
    "last",
    [
        {"role": "user", "content": "plain"},
        {"role": "user", "content": "\x00\x1f\u2028 🙂 </text>"},
        {"role": "user", "content": "x", "name": "extra keys"},  # not the fast path: general encoder
        {"content": "keys in another order", "role": "assistant"},
    ],
)
def test_framed_body_is_canonical_json(last):
    enc = RequestEncoder("http://x/v1", _build)
    for head in ([], [{"role": "system", "content": "s"}], [{"role": "system", "content": "t"}]):
        for variant in ("json_schema", "text"):
            msgs = [*head, last]
            req, data, key = enc.encode(msgs, "label", variant)
            assert req == _build(msgs, "label") and data == canonical(req)
            assert key == cache_key("http://x/v1", data) == enc.key_for(msgs, "label", variant)


def test_keys_for_a_batch_equal_each_requests_key():
    """keys_for (a warm rerun's chunk, heads shared or changing, tails given or not) gives key_for's keys."""
    enc = RequestEncoder("http://x/v1", _build)
    sys_s, sys_t = [{"role": "system", "content": "s"}], [{"role": "system", "content": "t"}]
    lasts = [{"role": "user", "content": c} for c in ("a", "b ✓", "c")] + [{"role": "user", "content": "x", "n": 1}]
    batch = [[*head, last] for head in (sys_s, sys_s, sys_t, [], sys_s) for last in lasts]
    want = [cache_key("http://x/v1", enc.encode(m, "label", "v")[1]) for m in batch]
    assert enc.keys_for(batch, "label", "v") == want
    assert enc.keys_for(batch, "label", "v", [message_json(m[-1]) for m in batch]) == want
    frameless = RequestEncoder("ns", lambda messages, kind, sample=0: {"m": messages, "copy": messages})
    assert frameless.keys_for(batch, "label", "v") == [frameless.key_for(m, "label", "v") for m in batch]


def test_message_json_is_canonical():
    for m in ({"role": "user", "content": 'a"b\\c\n\t✓'}, {"role": "u", "content": "c", "x": 1}):
        assert message_json(m) == canonical(m)


def test_a_request_the_marker_cannot_split_is_encoded_whole():
    enc = RequestEncoder("ns", lambda messages, kind, sample=0: {"m": messages, "copy": messages})  # the marker twice
    msgs = [{"role": "user", "content": "hi"}]
    req, data, key = enc.encode(msgs, "label", "v")
    assert data == canonical(req) and key == cache_key("ns", data) == enc.key_for(msgs, "label", "v")


@pytest.mark.parametrize("options, label_key, candidates_key", GOLDEN)
def test_each_sample_has_its_own_key_and_sample_0_keeps_the_old_one(tmp_path, options, label_key, candidates_key):
    """Self-consistency: sample i > 0 is cached apart; sample 0's key is today's (existing caches serve it)."""
    j = Judge(name="a", model="m", base_url=URL, **options)
    cache = ResponseCache(str(tmp_path / "c"))
    c = JudgeClient(j, cache, JudgeLedger("a", "m"), Budget(), ["pos", "neg"], api_key="k")
    keys = [c.key_for(MSGS, "label", s) for s in range(4)]
    assert keys[0] == label_key and len(set(keys)) == 4
    for s in range(4):  # the framed key equals the whole request's, hashed under the sample's namespace
        req, data, key = c.encode(MSGS, "label", s)
        assert key == keys[s] == c.keys_for([MSGS, MSGS], "label", sample=s)[1]
        assert key == cache_key(sample_namespace(j.cache_as or URL, s), data)
        assert req.get("seed") == (None if j.seed is None else j.seed + s)  # seeded servers vary too
    cache.close()
