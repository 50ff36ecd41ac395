"""Long mutation fuzz of the distribution client's parsers, seeded with bytes captured from a real node.

    python scripts/fuzz_dist.py                       # 100,000 inputs, seed 1
    python scripts/fuzz_dist.py --inputs 1000000 --seed 7 --save-capture /tmp/capture.json

1. Capture (once, at the start): a real OTP 25 node is started on loopback; the client connects to it through
   a recording TCP proxy and makes a set of read-only RPCs whose answers cover many term types (atoms, pids,
   refs, ports, big integers, floats, strings, binaries, bit strings, maps, funs, tuples, improper lists),
   and the node's EPMD answers to NAMES and PORT_PLEASE2 are read. The node is then stopped (by PID).
   `--capture-file` reuses a saved capture instead (no node needed).
2. Fuzz: every input is a mutation (tests/fakepeer.py: bit flips, planted tags and length edges, inserted,
   deleted, duplicated and spliced ranges, lying frame prefixes, cut streams) of captured material, fed to
   the real client code through a socket pair that ends in end-of-stream:
     handshake  erl_dist.handshake on the node's status, challenge and ack frames
     frames     erl_dist.DistConnection.receive on the node's reply frames (and a compressed term)
     epmd       erl_epmd.parse_names / parse_port2 on the EPMD answers
Prints inputs/s, outcome counts per kind and the slowest input. Exits 1 if any input raised something other
than the client's documented DistError or took longer than its budget (a watchdog interrupts a hang).
"""
import argparse
import binascii
import collections
import json
import os
import random
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))

import fakepeer  # noqa: E402
from collection_path import link_collection  # noqa: E402


def import_client():
    """Make the repository importable as ansible_collections.beamops.cluster and import the client."""
    sys.path.insert(0, link_collection())
    from ansible_collections.beamops.cluster.plugins.module_utils import erl_dist, erl_epmd, erl_term
    return erl_dist, erl_epmd, erl_term


class RecordingProxy:
    """127.0.0.1 TCP proxy to one upstream port that records each direction's bytes."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.from_node = bytearray()
        self.from_client = bytearray()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _pump(self, src, dst, record):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                record.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _serve(self):
        client, _addr = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        pumps = [threading.Thread(target=self._pump, args=(client, upstream, self.from_client), daemon=True),
                 threading.Thread(target=self._pump, args=(upstream, client, self.from_node), daemon=True)]
        for pump in pumps:
            pump.start()
        for pump in pumps:
            pump.join(30)
        client.close()
        upstream.close()
        self.listener.close()


def split_node_stream(data):
    """The node's side of a session: handshake payloads (2-byte frames up to the ack), then 4-byte frames."""
    handshake, frames, pos = [], [], 0
    while pos + 2 <= len(data):
        size = struct.unpack_from(">H", data, pos)[0]
        payload = bytes(data[pos + 2:pos + 2 + size])
        pos += 2 + size
        handshake.append(payload)
        if payload[:1] == b"a":
            break
    while pos + 4 <= len(data):
        size = struct.unpack_from(">I", data, pos)[0]
        if size:
            frames.append(bytes(data[pos + 4:pos + 4 + size]))
        pos += 4 + size
    return handshake, frames


def capture(erl_dist, erl_epmd, erl_term):
    """Start a real OTP 25 node, record what it sends, stop it; returns the capture as a dict of payload lists."""
    import beamnodes
    import otp
    if "25" not in otp.runtimes():
        sys.exit("OTP 25 (erl) is needed for the capture (or pass --capture-file)")
    A = erl_term.Atom
    workdir = tempfile.mkdtemp(prefix="fuzz_capture_")
    node = beamnodes.start_nodes([beamnodes.NodeSpec("fuzzcap", cookie="fuzz-capture-cookie")], workdir)[0]
    try:
        alive, host = node.name.split("@")
        deadline = erl_epmd.Deadline(10)
        dist_port = erl_epmd.port_please(host, alive, deadline).port
        epmd_answers = []
        for request in (b"n", b"z" + alive.encode()):
            sock = socket.create_connection(("127.0.0.1", 4369), timeout=5)
            sock.sendall(struct.pack(">H", len(request)) + request)
            answer = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            sock.close()
            epmd_answers.append(answer)
        proxy = RecordingProxy(dist_port)
        calls = [
            ("erlang", "nodes", []), ("erlang", "nodes", [[A("visible"), A("hidden")]]), ("erlang", "node", []),
            ("erlang", "system_info", [A("otp_release")]), ("os", "timestamp", []), ("erlang", "make_ref", []),
            ("erlang", "self", []), ("erlang", "processes", []), ("erlang", "ports", []), ("erlang", "memory", []),
            ("application", "which_applications", []), ("lists", "seq", [1, 300]), ("math", "pi", []),
            ("erlang", "make_fun", [A("erlang"), A("nodes"), 0]),
            ("erlang", "hd", [[2 ** 100, -(2 ** 64)]]), ("erlang", "hd", [[erl_term.BitBinary(b"\xa0", 3)]]),
            ("erlang", "hd", [[{A("k"): [1.5, b"bin", "text"], 1: (A("a"), [])}]]),
            ("erlang", "hd", [[erl_term.ImproperList((1, 2), A("t"))]]),
            ("erlang", "list_to_atom", [[0x1F600, 0xE9]]), ("erlang", "list_to_tuple", [[1, 2.0, A("x")]]),
            ("erlang", "term_to_binary", [list(range(500)), [A("compressed")]]),
            ("erlang", "term_to_binary", [(A("a"), "x" * 300, 2 ** 70), [A("compressed")]]),
        ]
        conn = erl_dist.connect(node.name, node.cookie, timeout=10, dist_port=proxy.port)
        results = conn.rpc_many(calls, timeout=10)
        conn.close()
        proxy.thread.join(10)
        handshake, frames = split_node_stream(proxy.from_node)
    finally:
        beamnodes.stop_nodes([node])
    # The binaries term_to_binary(..., [compressed]) returned are real compressed terms: make them the message
    # of a SEND frame, as a node would send if it compressed a message.
    compressed = [r for r in results if isinstance(r, bytes) and r[:2] == b"\x83\x50"]
    control = erl_term.encode((2, A(""), erl_term.Pid(A(fakepeer.FUZZ_LOCAL_NODE), 1, 0, 7)))
    frames += [b"p" + control + term for term in compressed]
    return {"node": node.name, "handshake": handshake, "frames": frames, "epmd_names": [epmd_answers[0]],
            "epmd_port2": [epmd_answers[1]], "alive": alive}


def to_json(cap):
    return dict((k, [binascii.hexlify(x).decode() for x in v] if isinstance(v, list) else v) for k, v in cap.items())


def from_json(doc):
    return dict((k, [binascii.unhexlify(x) for x in v] if isinstance(v, list) else v) for k, v in doc.items())


class Hang(Exception):
    pass


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=100000, help="number of inputs (100000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument("--budget", type=float, default=2.0, help="client deadline per input, seconds (2.0)")
    parser.add_argument("--capture-file", help="reuse a saved capture instead of starting a real node")
    parser.add_argument("--save-capture", help="write the capture to this file (hex JSON)")
    parser.add_argument("--report-every", type=int, default=20000, help="progress line every N inputs")
    args = parser.parse_args()
    erl_dist, erl_epmd, erl_term = import_client()
    DistError = erl_epmd.DistError

    if args.capture_file:
        with open(args.capture_file) as handle:
            cap = from_json(json.load(handle))
    else:
        started = time.monotonic()
        cap = capture(erl_dist, erl_epmd, erl_term)
        print("captured from real OTP 25 node %s in %.1f s: %d handshake frames, %d reply frames (%d bytes), "
              "EPMD NAMES %d bytes, PORT2 %d bytes" % (
                  cap["node"], time.monotonic() - started, len(cap["handshake"]), len(cap["frames"]),
                  sum(len(f) for f in cap["frames"]), len(cap["epmd_names"][0]), len(cap["epmd_port2"][0])))
    if args.save_capture:
        with open(args.save_capture, "w") as handle:
            json.dump(to_json(cap), handle)
    if not (len(cap["handshake"]) == 3 and cap["frames"]):
        sys.exit("the capture is incomplete: %d handshake frames, %d reply frames"
                 % (len(cap["handshake"]), len(cap["frames"])))

    node = cap["node"]
    pool = cap["handshake"] + cap["frames"]
    rng = random.Random(args.seed)

    def on_alarm(_signum, _frame):
        raise Hang("the input ran %.1f s past its %.1f s budget" % (args.budget, args.budget))
    signal.signal(signal.SIGALRM, on_alarm)

    kinds = ("handshake", "frames", "epmd")
    counts = dict((k, collections.Counter()) for k in kinds)
    slowest = dict((k, 0.0) for k in kinds)
    failures = []
    messages = 0
    started = time.monotonic()
    for index in range(args.inputs):
        kind = kinds[index % 5 % 3] if index % 5 < 3 else ("frames" if index % 5 == 3 else "handshake")
        if kind == "handshake":
            data = fakepeer.mutate_frames(cap["handshake"], 2, rng, pool)
        elif kind == "frames":
            data = fakepeer.mutate_frames([rng.choice(cap["frames"]) for _unused in range(rng.randint(1, 3))], 4, rng, pool)
        else:
            names_answer = rng.random() < 0.5
            seed = cap["epmd_names"][0] if names_answer else cap["epmd_port2"][0]
            data = seed
            for _unused in range(1 + min(int(rng.expovariate(0.7)), 6)):
                data = fakepeer.mutate_bytes(data, rng, pool)
        t0 = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, args.budget * 2)
        try:
            if kind == "handshake":
                outcome = fakepeer.drive_handshake(data, node, args.budget)
            elif kind == "frames":
                outcome, received = fakepeer.drive_frames(data, node, args.budget)
                messages += received
            else:
                try:
                    if names_answer:
                        erl_epmd.parse_names(data)
                    else:
                        erl_epmd.parse_port2(data, cap["alive"])
                    outcome = "ok"
                except DistError as exc:
                    outcome = exc.reason
        # Any exception other than DistError is what the fuzzer hunts for: record it, go on.
        except Exception as exc:  # pylint: disable=broad-except
            outcome = "UNCAUGHT " + exc.__class__.__name__
            failures.append({"index": index, "kind": kind, "error": repr(exc)[:300], "input": data.hex()[:4000],
                             "traceback": traceback.format_exc(limit=6)})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        took = time.monotonic() - t0
        if took > args.budget:
            failures.append({"index": index, "kind": kind, "error": "took %.2f s" % took, "input": data.hex()[:4000]})
        slowest[kind] = max(slowest[kind], took)
        counts[kind][outcome] += 1
        if args.report_every and (index + 1) % args.report_every == 0:
            elapsed = time.monotonic() - started
            print("  %d inputs, %.0f inputs/s, %d failures" % (index + 1, (index + 1) / elapsed, len(failures)),
                  flush=True)
    elapsed = time.monotonic() - started

    print()
    print("fuzz_dist: %d inputs in %.1f s = %.0f inputs/s (seed %d, budget %.1f s per input)"
          % (args.inputs, elapsed, args.inputs / elapsed, args.seed, args.budget))
    print("messages decoded from mutated frames: %d" % messages)
    for kind in kinds:
        total = sum(counts[kind].values())
        print("%-10s %7d inputs, slowest %.1f ms: %s" % (
            kind, total, slowest[kind] * 1000,
            ", ".join("%s %d" % (k, v) for k, v in counts[kind].most_common())))
    if failures:
        print()
        print("%d FAILURES (first 5):" % len(failures))
        for failure in failures[:5]:
            print(json.dumps(failure, indent=1)[:3000])
        sys.exit(1)
    print("no uncaught exception, no input over its budget")


if __name__ == "__main__":
    main()
