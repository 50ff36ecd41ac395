"""Bounded fuzz of the term decoder: mutated, truncated and random inputs must decode or raise TermError.

Seeds are random terms encoded by us and the terms real OTP 25/28 nodes make (pids, refs, ports, closures).
The long run is scripts/fuzz_term.py.
"""
import random
import time

import pytest

from otp import runtimes
from termcorpus import TermNode, random_input, seed_corpus
from ansible_collections.beamops.cluster.plugins.module_utils.erl_term import TermError, decode, decode_from, encode

INPUTS = 3000
# Generous: a decode of these small inputs takes well under a millisecond; this catches blow-ups, not slowness.
MAX_SECONDS_PER_INPUT = 1.0


@pytest.fixture(name="seeds", scope="module")
def seeds_fixture():
    nodes = [TermNode(erl) for erl in runtimes().values()]
    try:
        return seed_corpus(random.Random(2026), nodes)
    finally:
        for node in nodes:
            node.close()


def test_decoder_returns_or_raises_term_error(seeds):
    rng = random.Random(7)
    outcomes = {"ok": 0, "TermError": 0}
    slowest = 0.0
    for dummy in range(INPUTS):
        data = random_input(rng, seeds)
        started = time.perf_counter()
        try:
            term = decode(data)
        except TermError:
            outcomes["TermError"] += 1
        except Exception as exc:  # pylint: disable=broad-except
            pytest.fail("decode(%s) raised %r, not TermError" % (data.hex(), exc))
        else:
            outcomes["ok"] += 1
            # Whatever we accept we can write back, and reading that gives the same bytes again.
            again = encode(term)
            assert encode(decode(again)) == again, data.hex()
        slowest = max(slowest, time.perf_counter() - started)
        assert slowest < MAX_SECONDS_PER_INPUT, "decode(%s) took %.2f s" % (data.hex(), slowest)
    # The mutations must reach both outcomes, or the fuzz is not exploring anything.
    assert outcomes["ok"] > INPUTS // 20 and outcomes["TermError"] > INPUTS // 2, outcomes


def test_decode_from_any_offset_returns_or_raises_term_error(seeds):
    rng = random.Random(11)
    for dummy in range(300):
        data = random_input(rng, seeds)
        offset = rng.randint(0, len(data) + 1)
        try:
            dummy, end = decode_from(data, offset)
        except TermError:
            continue
        assert offset < end <= len(data)
