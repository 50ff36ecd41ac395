"""Benchmark: the observer following N real BEAM nodes (default 200, OTP 25, loopback) at 10 Hz.

    python benchmarks/bench_observer.py                          # 200 nodes, one full mesh, 60 s idle + 60 s busy
    python benchmarks/bench_observer.py --nodes 50 --duration 20 --profile
    python benchmarks/bench_observer.py --groups 4               # four full meshes of 50 instead of one of 200

It starts the nodes (small VM flags, as bench_mesh.py), connects them into one full mesh (or ``--groups``
meshes of equal size, when the machine cannot hold one), starts an ``Observer`` at ``--interval`` and waits
until it sees the whole mesh, then measures two phases of ``--duration`` seconds each:

  idle   the calling thread sleeps
  busy   the calling thread runs Python work without pause (hashing and string building, standing in for
         the SSH sessions of a comparison run, which share the interpreter with the observer's thread)

and, with ``--kill``, SIGKILLs one node at the end and reports when every peer's loss of it was first seen.
Per phase it prints the achieved sampling rate, the interval between sample starts (p50/p99/max), the
samples that fell behind (started more than half an interval late) and the slots skipped, the observer
thread's CPU (seconds per second), and the file's bytes per second. With ``--profile`` it also prints a
cProfile of the observer's thread (idle phase). Nodes are killed by PID at the end, on error or Ctrl-C.
"""
import argparse
import cProfile
import hashlib
import io
import os
import pstats
import secrets
import shutil
import signal
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
sys.path.insert(0, BENCH_DIR)

import beamnodes  # noqa: E402  (tests/ helper that starts and kills real nodes)
import otp  # noqa: E402
from bench_mesh import SMALL_VM_FLAGS  # noqa: E402
from collection_path import link_collection  # noqa: E402


BOOT_BATCH = 20


def start_groups(count, groups, cookie, workdir):
    """``count`` nodes in ``groups`` full meshes; returns (nodes, boot seconds, mesh seconds)."""
    specs = [beamnodes.NodeSpec("obs%d" % i, release="25", cookie=cookie, args=SMALL_VM_FLAGS) for i in range(count)]
    started = time.monotonic()
    nodes = []
    try:
        # In batches: 200 VMs booting at once on 2 cores thrash for many minutes.
        for first in range(0, count, BOOT_BATCH):
            nodes += beamnodes.start_nodes(specs[first:first + BOOT_BATCH], workdir, timeout=300)
    except BaseException:
        beamnodes.stop_nodes(nodes)
        raise
    booted = time.monotonic() - started
    try:
        size = count // groups
        for index in range(groups):
            members = nodes[index * size:(index + 1) * size if index < groups - 1 else count]
            head = members[0]
            # One node dials every other of its group; connect_all (the default) then makes the mesh full.
            head.eval("[net_kernel:connect_node(N) || N <- [%s]]" % ",".join("'%s'" % n.name for n in members[1:]),
                      timeout=600)
        deadline = time.monotonic() + 600
        while True:
            counts = [int(n.eval("length(erlang:nodes())", timeout=60)) for n in nodes]
            wanted = [len(group_of(i, count, groups)) - 1 for i in range(count)]
            if counts == wanted:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the nodes did not form their meshes: peer counts %s" % counts)
            # On a loaded machine some connections fail (setup time-outs, global's overlap prevention) and
            # nothing dials them again: the nodes that lack peers dial their whole group themselves.
            for index, node in enumerate(nodes):
                if counts[index] < wanted[index]:
                    group = [nodes[j].name for j in group_of(index, count, groups) if j != index]
                    node.eval("[net_kernel:connect_node(N) || N <- [%s]], ok" % ",".join("'%s'" % n for n in group),
                              timeout=600)
            time.sleep(1.0)
    except BaseException:
        beamnodes.stop_nodes(nodes)
        raise
    return nodes, booted, time.monotonic() - started - booted


def group_of(index, count, groups):
    size = count // groups
    group = min(index // size, groups - 1)
    return range(group * size, (group + 1) * size if group < groups - 1 else count)


def busy_work(seconds):
    """Python work without pause, the kind an SSH client does between its syscalls."""
    end = time.monotonic() + seconds
    blob = os.urandom(4096)
    rounds = 0
    while time.monotonic() < end:
        digest = hashlib.sha256(blob).hexdigest()
        text = ",".join(digest[i:i + 8] for i in range(0, 64, 8))
        blob = (text * 60).encode()[:4096]
        rounds += 1
    return rounds


def phase_figures(samples, interval, started, ended, cpu, size):
    inside = [s for s in samples if started <= s.t < ended]
    gaps = sorted(b.t - a.t for a, b in zip(inside, inside[1:]))
    seconds = ended - started

    def pct(fraction):
        return gaps[min(len(gaps) - 1, int(fraction * (len(gaps) - 1) + 0.5))] * 1000 if gaps else float("nan")
    answered = sum(1 for s in inside for peers in s.views.values() if peers is not None)
    return {"samples": len(inside), "rate": len(inside) / seconds, "p50": pct(0.5), "p99": pct(0.99),
            "max": gaps[-1] * 1000 if gaps else float("nan"),
            "behind": sum(1 for g in gaps if g > 1.5 * interval),
            "answered": answered / float(max(1, len(inside) * len(inside[0].views))) if inside else 0.0,
            "cpu": cpu / seconds, "bytes": size / seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=200, help="how many nodes (200)")
    parser.add_argument("--groups", type=int, default=1, help="full meshes to split them into (1: one full mesh)")
    parser.add_argument("--interval", type=float, default=0.1, help="sampling interval in seconds (0.1 = 10 Hz)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of each phase (60)")
    parser.add_argument("--no-busy", action="store_true", help="leave out the phase with a busy calling thread")
    parser.add_argument("--kill", action="store_true", help="SIGKILL one node at the end and time its detection")
    parser.add_argument("--profile", action="store_true", help="cProfile the observer thread in the idle phase")
    args = parser.parse_args()
    if "25" not in otp.runtimes():
        sys.exit("OTP 25 (erl) is not installed")
    sys.path.insert(0, link_collection())
    from ansible_collections.beamops.cluster.plugins.module_utils import observer as obs

    def on_term(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)
    cookie = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix="bench_observer_")
    nodes = []
    load_before = os.getloadavg()[0]
    try:
        print("starting %d nodes in %d full mesh(es) ..." % (args.nodes, args.groups), flush=True)
        nodes, booted, meshed = start_groups(args.nodes, args.groups, cookie, workdir)
        print("  booted in %.1f s, meshes formed %.1f s later" % (booted, meshed), flush=True)
        names = [n.name for n in nodes]
        expected = dict((names[i], frozenset(names[j] for j in group_of(i, len(names), args.groups) if j != i))
                        for i in range(len(names)))
        out = os.path.join(workdir, "observer.jsonl")
        observer = obs.Observer(names, cookie, interval=args.interval, out=out)
        profile = cProfile.Profile() if args.profile else None
        if profile is not None:
            loop = observer._loop

            def profiled(*loop_args):
                profile.enable()
                try:
                    loop(*loop_args)
                finally:
                    profile.disable()
            observer._loop = profiled
        started = time.monotonic()
        observer.start()
        seen = observer.wait_until(lambda views: views == expected, 120)
        if seen is None:
            raise RuntimeError("the observer did not see the meshes within 120 s")
        print("  observer saw every node's full view %.2f s after it started" % (seen - started), flush=True)
        phases = [("idle", time.sleep)]
        if not args.no_busy:
            phases.append(("busy", busy_work))
        marks = []
        for label, work in phases:
            if label == "busy" and profile is not None:
                profile.disable()
            cpu0, size0, t0 = observer._cpu, os.path.getsize(out), time.monotonic()
            observer.mark("phase", name=label)
            work(args.duration)
            marks.append((label, t0, time.monotonic(), observer._cpu - cpu0, os.path.getsize(out) - size0))
            print("  phase %s done" % label, flush=True)
        detection = None
        if args.kill:
            victim = nodes[-1]
            killed = time.monotonic()
            os.kill(victim.proc.pid, signal.SIGKILL)
            peers = list(expected[victim.name])

            def victim_gone(views):
                # Only answers count: a peer that did not answer in a sample says nothing about the victim.
                return views[victim.name] is None and all(views[p] is not None and victim.name not in views[p]
                                                          for p in peers)
            at = observer.wait_until(victim_gone, 60)
            # The sample that shows it may have started just before the kill: it closed one interval later.
            detection = None if at is None else at + args.interval - killed
        stats = observer.stop()
        samples = list(obs.replay(out))
    except KeyboardInterrupt:
        print("interrupted: stopping the nodes", file=sys.stderr)
        raise SystemExit(130)
    finally:
        for node in nodes:  # all at once first: one by one, 200 VMs take minutes to go on a busy machine
            if node.proc and node.proc.poll() is None:
                node.proc.kill()
        beamnodes.stop_nodes(nodes)
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    sizes = "/".join(str(len(group_of(i * (args.nodes // args.groups), args.nodes, args.groups)))
                     for i in range(args.groups))
    print("machine: %d CPUs, load average %.1f before and %.1f after; %d nodes in %d full mesh(es) of %s; "
          "interval %.0f ms" % (os.cpu_count(), load_before, os.getloadavg()[0], args.nodes, args.groups, sizes,
                                args.interval * 1000))
    columns = ("phase", "samples", "rate Hz", "p50 ms", "p99 ms", "max ms", "behind", "answered", "CPU s/s", "bytes/s")
    print("%-6s %8s %9s %9s %9s %9s %7s %9s %10s %10s" % columns)
    for label, t0, t1, cpu, size in marks:
        f = phase_figures(samples, args.interval, t0, t1, cpu, size)
        print("%-6s %8d %9.2f %9.1f %9.1f %9.1f %7d %8.1f%% %10.3f %10.0f" % (
            label, f["samples"], f["rate"], f["p50"], f["p99"], f["max"], f["behind"], 100 * f["answered"],
            f["cpu"], f["bytes"]))
    lateness = stats["lateness_ms"]
    print("whole run: %d samples, %.2f Hz, lateness p50 %.2f / p99 %.2f / max %.2f ms, %d late, %d skipped, "
          "%d late answers, %.0f bytes/s" % (stats["samples"], stats["rate_hz"], lateness["p50"], lateness["p99"],
                                             lateness["max"], stats["late"], stats["skipped"], stats["late_answers"],
                                             stats["bytes_per_s"]))
    if args.kill:
        print("SIGKILL of one node: every peer's loss of it seen at most %s after the kill"
              % ("%.0f ms" % (detection * 1000) if detection is not None else "not within 60 s"))
    behind = sum(phase_figures(samples, args.interval, t0, t1, cpu, size)["behind"] for _l, t0, t1, cpu, size in marks)
    verdict = "met" if behind == 0 and stats["skipped"] == 0 else \
        "MISSED (%d samples behind, %d skipped)" % (behind, stats["skipped"])
    print("10 Hz without falling behind: %s" % verdict)
    if profile is not None:
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(25)
        print()
        print("observer thread, idle phase (cProfile, tottime):")
        print(text.getvalue())


if __name__ == "__main__":
    main()
