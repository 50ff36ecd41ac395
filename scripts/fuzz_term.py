"""Long fuzz run of the External Term Format decoder (plugins/module_utils/erl_term.py).

    python3 scripts/fuzz_term.py [INPUTS] [--seed N]

Seeds: random terms we encode plus what the installed OTP 25/28 runtimes (tests/otp.py) make: pids, refs, ports,
closures. Each input is a mutation of a seed (bit flips, smashed lengths and tags, truncation, splices) or random
bytes. decode() must return or raise TermError; anything it accepts must re-encode and decode to the same bytes.
Prints inputs/s, the outcome counts and the slowest input; exits 1 if any other exception or mismatch appears.
"""
import argparse
import os
import random
import shutil
import sys
import tempfile
import time

RANDOM_SEEDS = 300
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_path():
    """Make the repository importable as ansible_collections.beamops.cluster, as tests/conftest.py does.

    Returns the temporary folder that holds the link."""
    root = tempfile.mkdtemp(prefix="fuzz_term_")
    os.makedirs(os.path.join(root, "ansible_collections", "beamops"))
    os.symlink(REPO_ROOT, os.path.join(root, "ansible_collections", "beamops", "cluster"))
    sys.path[:0] = [root, os.path.join(REPO_ROOT, "tests")]
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", type=int, nargs="?", default=100000, help="number of inputs (default 100000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = parser.parse_args()
    link_root = _import_path()
    try:
        return fuzz(args.inputs, args.seed)
    finally:
        shutil.rmtree(link_root)


def fuzz(inputs, seed):
    """Run the fuzz; returns the exit status."""
    # pylint: disable=import-outside-toplevel,import-error
    from otp import runtimes
    from termcorpus import TermNode, random_input, seed_corpus
    from ansible_collections.beamops.cluster.plugins.module_utils.erl_term import TermError, decode, decode_from, encode

    rng = random.Random(seed)
    nodes = [TermNode(erl) for erl in runtimes().values()]
    try:
        seeds = seed_corpus(rng, nodes, count=RANDOM_SEEDS)
    finally:
        for node in nodes:
            node.close()
    print("seed corpus: %d encodings (%d from real nodes: OTP %s)"
          % (len(seeds), len(seeds) - 2 * RANDOM_SEEDS, ", ".join(sorted(runtimes())) or "none"))

    counts = {"ok": 0, "TermError": 0, "other": 0}
    slowest, slowest_input = 0.0, b""
    failures = []
    started = time.perf_counter()
    for dummy in range(inputs):
        data = random_input(rng, seeds)
        begin = time.perf_counter()
        try:
            term = decode(data)
            again = encode(term)
            if encode(decode(again)) != again:
                raise AssertionError("re-encoding the decoded term is not stable")
            counts["ok"] += 1
        except TermError:
            counts["TermError"] += 1
        except Exception as exc:  # pylint: disable=broad-except
            counts["other"] += 1
            failures.append((data, exc))
        spent = time.perf_counter() - begin
        if spent > slowest:
            slowest, slowest_input = spent, data
    elapsed = time.perf_counter() - started

    print("inputs: %d in %.1f s = %.0f inputs/s" % (inputs, elapsed, inputs / elapsed))
    print("outcomes: ok %(ok)d, TermError %(TermError)d, other %(other)d" % counts)
    print("max time per input: %.2f ms (input of %d bytes: %s...)" % (slowest * 1000, len(slowest_input), slowest_input[:24].hex()))
    for data, exc in failures[:10]:
        print("FAILED %r on %s" % (exc, data.hex()[:400]))
    _benchmark_reply(decode_from, encode)
    return 1 if failures else 0


def _benchmark_reply(decode_from, encode):
    """Decode rate of what a mesh check reads per node: a SEND_SENDER control message and an rpc reply
    {Ref, [50 node names]}."""
    # pylint: disable=import-outside-toplevel,import-error
    from ansible_collections.beamops.cluster.plugins.module_utils.erl_term import Atom, Pid, Reference
    me = Pid(Atom("beamops_check_1a2b3c@127.0.0.1"), 1, 0, 1712345678)
    peer = Pid(Atom("app@10.0.0.1"), 77, 0, 1712345000)
    ref = Reference(Atom("beamops_check_1a2b3c@127.0.0.1"), 1712345678, (1, 2, 3))
    frame = encode((22, peer, me)) + encode((ref, [Atom("app@10.0.0.%d" % i) for i in range(50)]))
    rounds, started = 0, time.perf_counter()
    while time.perf_counter() - started < 1.0:
        for dummy in range(100):
            dummy, offset = decode_from(frame, 0)
            decode_from(frame, offset)
        rounds += 100
    elapsed = time.perf_counter() - started
    print("benchmark: control message + 50-node reply (%d bytes): %.0f decodes/s, %.1f us each"
          % (len(frame), rounds / elapsed, elapsed / rounds * 1e6))


if __name__ == "__main__":
    sys.exit(main())
