"""Benchmark: verify a real N-node BEAM full mesh four ways and compare wall times.

    python benchmarks/bench_mesh.py                      # N = 10 and 50, 3 runs of each method
    python benchmarks/bench_mesh.py --sizes 10 --repeat 5 --skip-rpc

Methods, per mesh size N (all N nodes asked what they are connected to):
  in-process     erl_mesh.mesh_report(nodes, cookie) called in this Python process
  fresh-process  a new `python -c` that imports mesh_report and runs it (bytecode cached in __pycache__)
  fresh-zip      the same, importing the code from a zip of .py files (compiled on every run, as the
                 AnsiballZ payload of an Ansible module is): informational, not part of the targets
  erl_call-loop  `erl_call -name NODE -c COOKIE -a 'erlang nodes'` for each node in turn
  rpc-loop       `elixir --hidden --name rpc-X --cookie C --rpc-eval NODE "..."` for each node in turn
                 (what `bin/APP rpc "Node.list()"` does)
Every method's answers are checked (each node must see the N-1 others) before its time counts.
Targets (issue 3): N=50 in-process < 100 ms; fresh-process >= 2x faster than the erl_call loop and
>= 50x faster than the rpc loop. With --profile, or when a target is missed, it also prints a cProfile of
one in-process run (worker threads included) and where a fresh process spends its time (interpreter start,
imports, the report; heaviest imports from -X importtime).

All nodes run on loopback with small VM flags and are killed by PID at the end, on error or Ctrl-C.
"""
import argparse
import cProfile
import io
import os
import pstats
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))

import beamnodes  # noqa: E402  (tests/ helper that starts and kills real nodes)
import otp  # noqa: E402
from collection_path import link_collection  # noqa: E402

# One scheduler, one async thread, no busy-waiting: 50 VMs must share 2 cores and stay idle when not asked.
SMALL_VM_FLAGS = ["+S", "1:1", "+SDcpu", "1:1", "+SDio", "1", "+A", "1", "+sbwt", "none", "+sbwtdcpu", "none",
                  "+sbwtdio", "none", "+P", "4096", "+Q", "1024", "-kernel", "net_ticktime", "60"]

# The child prints what the check needs as plain words: json (which imports re and enum) would add 3-6 ms of
# output formatting to every timed run, while erl_call's output is checked by this script's own process.
FRESH_PROCESS_CODE = (
    "import os, sys\n"
    "from ansible_collections.beamops.cluster.plugins.module_utils.erl_mesh import mesh_report\n"
    "r = mesh_report(sys.argv[1:], os.environ['BENCH_COOKIE'], timeout=float(os.environ['BENCH_TIMEOUT']))\n"
    "print(r['full_mesh'], *[len(v['connected']) for v in r['per_node'].values()])\n"
)


def elixir_ebin():
    """The Elixir standard library's ebin, which the nodes need so that `elixir --rpc-eval` can run on them."""
    elixir = shutil.which("elixir")
    if not elixir:
        return None
    ebin = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(elixir))), "lib", "elixir", "ebin")
    return ebin if os.path.isdir(ebin) else None


def start_mesh(size, cookie, workdir, ebin):
    args = list(SMALL_VM_FLAGS) + (["-pa", ebin] if ebin else [])
    specs = [beamnodes.NodeSpec("bench%d" % i, release="25", cookie=cookie, args=args) for i in range(size)]
    started = time.monotonic()
    nodes = beamnodes.start_nodes(specs, workdir, timeout=180)
    booted = time.monotonic() - started
    try:
        names = [n.name for n in nodes]
        # One node dials every other; connect_all (the default) then makes the mesh full.
        nodes[0].eval("[net_kernel:connect_node(N) || N <- [%s]]" % ",".join("'%s'" % n for n in names[1:]),
                      timeout=120)
        deadline = time.monotonic() + 120
        while True:
            counts = [int(n.eval("length(erlang:nodes())")) for n in nodes]
            if all(c == size - 1 for c in counts):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the %d nodes did not form a full mesh: peer counts %s" % (size, counts))
            time.sleep(0.2)
    except BaseException:
        beamnodes.stop_nodes(nodes)
        raise
    return nodes, booted, time.monotonic() - started - booted


def timed(fn):
    start = time.perf_counter()
    ok, detail = fn()
    return time.perf_counter() - start, ok, detail


def method_in_process(names, cookie, timeout):
    from ansible_collections.beamops.cluster.plugins.module_utils.erl_mesh import mesh_report

    def run():
        report = mesh_report(names, cookie, timeout=timeout)
        seen = [len(v["connected"]) for v in report["per_node"].values()]
        return report["full_mesh"] and all(s == len(names) - 1 for s in seen), report
    return run


def method_fresh_process(names, cookie, timeout, pythonpath):
    env = dict(os.environ, PYTHONPATH=pythonpath, BENCH_COOKIE=cookie, BENCH_TIMEOUT=str(timeout))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a normal Python run keeps and reuses bytecode

    def run():
        proc = subprocess.run([sys.executable, "-c", FRESH_PROCESS_CODE] + names, env=env, capture_output=True,
                              text=True, timeout=timeout + 30, check=False)
        if proc.returncode != 0:
            return False, proc.stderr[-500:]
        words = proc.stdout.split()
        seen = [int(w) for w in words[1:]]
        return words[:1] == ["True"] and len(seen) == len(names) and all(s == len(names) - 1 for s in seen), words
    return run


def zipped_module_utils(workdir):
    """A zip holding ansible_collections/beamops/cluster/plugins/module_utils/*.py, like an AnsiballZ payload."""
    import zipfile
    path = os.path.join(workdir, "module_utils.zip")
    prefix = "ansible_collections/beamops/cluster/plugins/module_utils"
    with zipfile.ZipFile(path, "w") as archive:
        parts = prefix.split("/")
        for depth in range(1, len(parts) + 1):
            archive.writestr("/".join(parts[:depth]) + "/__init__.py", "")
        source = os.path.join(REPO_ROOT, "plugins", "module_utils")
        for name in sorted(os.listdir(source)):
            if name.endswith(".py") and name != "__init__.py":
                archive.write(os.path.join(source, name), "%s/%s" % (prefix, name))
    return path


def method_erl_call_loop(names, cookie, erl_call):
    def run():
        for name in names:
            proc = subprocess.run([erl_call, "-name", name, "-c", cookie, "-a", "erlang nodes"], capture_output=True,
                                  text=True, timeout=30, check=False)
            if proc.returncode != 0 or proc.stdout.count("@") != len(names) - 1:
                return False, "%s: %s %s" % (name, proc.stdout[-200:], proc.stderr[-200:])
        return True, None
    return run


def method_rpc_loop(names, cookie):
    def run():
        for name in names:
            me = "rpc-%s@127.0.0.1" % secrets.token_hex(4)
            proc = subprocess.run(["elixir", "--hidden", "--name", me, "--cookie", cookie, "--rpc-eval", name,
                                   "IO.puts(length(Node.list()))"], capture_output=True, text=True, timeout=60,
                                  check=False)
            if proc.returncode != 0 or proc.stdout.strip() != str(len(names) - 1):
                return False, "%s: %s %s" % (name, proc.stdout[-200:], proc.stderr[-300:])
        return True, None
    return run


def fresh_breakdown(names, cookie, timeout, pythonpath, repeat):
    """Where a fresh process spends its time: interpreter start, imports, the report itself (medians)."""
    env = dict(os.environ, PYTHONPATH=pythonpath, BENCH_COOKIE=cookie, BENCH_TIMEOUT=str(timeout))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    steps = [("python -c pass", ["-c", "pass"]),
             ("+ import erl_mesh", ["-c", FRESH_PROCESS_CODE.split("\n")[1]]),
             ("+ mesh_report (whole run)", ["-c", FRESH_PROCESS_CODE] + names)]
    lines = ["fresh-process breakdown over %d nodes (median of %d):" % (len(names), max(repeat, 5))]
    for label, argv in steps:
        times = []
        for _unused in range(max(repeat, 5)):
            start = time.perf_counter()
            subprocess.run([sys.executable] + argv, env=env, capture_output=True, timeout=timeout + 30, check=True)
            times.append(time.perf_counter() - start)
        lines.append("  %-28s %7.1f ms" % (label, statistics.median(times) * 1000))
    imports = subprocess.run([sys.executable, "-X", "importtime", "-c", FRESH_PROCESS_CODE.split("\n")[1]], env=env,
                             capture_output=True, text=True, timeout=60, check=False).stderr.splitlines()
    heavy = []
    for line in imports:
        parts = line.split("|")
        if len(parts) == 3 and parts[0].split(":")[-1].strip().isdigit():
            heavy.append((int(parts[1]), int(parts[0].split(":")[-1]), parts[2].rstrip()))
    lines.append("  heaviest imports (cumulative us, self us, module):")
    for cumulative, own, module in sorted(heavy, reverse=True)[:12]:
        lines.append("    %8d %8d %s" % (cumulative, own, module))
    return "\n".join(lines)


def profile_in_process(names, cookie, timeout, top=25):
    """cProfile of one mesh_report call, the worker threads' profiles merged into the main one."""
    from ansible_collections.beamops.cluster.plugins.module_utils.erl_mesh import mesh_report
    thread_profiles = []
    original_run = threading.Thread.run

    def profiled_run(thread):
        prof = cProfile.Profile()
        thread_profiles.append(prof)
        prof.enable()
        try:
            original_run(thread)
        finally:
            prof.disable()

    threading.Thread.run = profiled_run
    main = cProfile.Profile()
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    try:
        main.enable()
        mesh_report(names, cookie, timeout=timeout)
        main.disable()
    finally:
        threading.Thread.run = original_run
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    out = io.StringIO()
    stats = pstats.Stats(main, stream=out)
    for prof in thread_profiles:
        stats.add(prof)
    stats.sort_stats("tottime").print_stats(top)
    return "profiled mesh_report of %d nodes: %.1f ms wall, %.1f ms CPU of this process (all threads)\n%s" % (
        len(names), wall * 1000, cpu * 1000, out.getvalue())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,50", help="comma-separated mesh sizes (default 10,50)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each method; the median is reported (3)")
    parser.add_argument("--timeout", type=float, default=10.0, help="mesh_report timeout in seconds (10)")
    parser.add_argument("--skip-rpc", action="store_true", help="leave out the slow elixir --rpc-eval loop")
    parser.add_argument("--skip-erl-call", action="store_true", help="leave out the erl_call loop")
    parser.add_argument("--profile", action="store_true", help="always print a cProfile of one in-process run")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if "25" not in otp.runtimes():
        sys.exit("OTP 25 (erl) is not installed")
    erl_call = otp.erl_call("25")
    ebin = elixir_ebin()
    pythonpath = link_collection()
    sys.path.insert(0, pythonpath)
    skip_rpc = args.skip_rpc or ebin is None
    cookie = secrets.token_hex(16)

    def on_term(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)

    load_before = os.getloadavg()[0]
    rows = []
    profiles = []
    nodes = []
    workdir = tempfile.mkdtemp(prefix="bench_mesh_")
    try:
        for size in sizes:
            print("starting %d nodes ..." % size, flush=True)
            nodes, booted, meshed = start_mesh(size, cookie, workdir, ebin)
            print("  %d nodes booted in %.1f s, full mesh after %.1f s more" % (size, booted, meshed), flush=True)
            names = [n.name for n in nodes]
            methods = [("in-process", method_in_process(names, cookie, args.timeout)),
                       ("fresh-process", method_fresh_process(names, cookie, args.timeout, pythonpath)),
                       ("fresh-zip", method_fresh_process(names, cookie, args.timeout, zipped_module_utils(workdir)))]
            if not args.skip_erl_call and erl_call:
                methods.append(("erl_call-loop", method_erl_call_loop(names, cookie, erl_call)))
            if not skip_rpc:
                methods.append(("rpc-loop", method_rpc_loop(names, cookie)))
            # Warm-up: imports, first connections, and the bytecode cache of the fresh process.
            method_in_process(names, cookie, args.timeout)()
            methods[1][1]()
            for label, run in methods:
                times = []
                for _unused in range(args.repeat):
                    seconds, ok, detail = timed(run)
                    if not ok:
                        raise RuntimeError("%s on %d nodes did not see the full mesh: %s" % (label, size, detail))
                    times.append(seconds)
                rows.append({"size": size, "method": label, "median": statistics.median(times), "min": min(times),
                             "max": max(times), "runs": len(times)})
                print("  %-14s median %8.1f ms" % (label, rows[-1]["median"] * 1000), flush=True)
            by = dict((r["method"], r["median"]) for r in rows if r["size"] == size)
            if args.profile or (size >= 50 and by["in-process"] >= 0.1):
                profiles.append(profile_in_process(names, cookie, args.timeout))
            if args.profile or by.get("erl_call-loop", 1e9) < 2 * by["fresh-process"] \
                    or by.get("rpc-loop", 1e9) < 50 * by["fresh-process"]:
                profiles.append(fresh_breakdown(names, cookie, args.timeout, pythonpath, args.repeat))
            beamnodes.stop_nodes(nodes)
            nodes = []
    except KeyboardInterrupt:
        print("interrupted: stopping the nodes", file=sys.stderr)
        raise SystemExit(130)
    finally:
        beamnodes.stop_nodes(nodes)
        shutil.rmtree(workdir, ignore_errors=True)

    report(rows, profiles, load_before)


def report(rows, profiles, load_before):
    print()
    print("machine: %d CPUs, load average %.1f before and %.1f after (other work on the machine skews the figures)"
          % (os.cpu_count(), load_before, os.getloadavg()[0]))
    header = ("N", "method", "median ms", "min ms", "max ms", "runs", "median / fresh-process")
    print("%5s  %-14s %10s %10s %10s %5s  %s" % header)
    for row in rows:
        fresh = next(r for r in rows if r["size"] == row["size"] and r["method"] == "fresh-process")
        print("%5d  %-14s %10.1f %10.1f %10.1f %5d  %8.2fx" % (
            row["size"], row["method"], row["median"] * 1000, row["min"] * 1000, row["max"] * 1000, row["runs"],
            row["median"] / fresh["median"]))
    print()
    for size in sorted(set(r["size"] for r in rows)):
        by = dict((r["method"], r["median"]) for r in rows if r["size"] == size)
        checks = [("in-process < 100 ms", by["in-process"] * 1000, "%.1f ms" % (by["in-process"] * 1000),
                   by["in-process"] < 0.1)]
        if "erl_call-loop" in by:
            ratio = by["erl_call-loop"] / by["fresh-process"]
            checks.append(("fresh-process >= 2x faster than erl_call loop", ratio, "%.1fx" % ratio, ratio >= 2))
        if "rpc-loop" in by:
            ratio = by["rpc-loop"] / by["fresh-process"]
            checks.append(("fresh-process >= 50x faster than rpc loop", ratio, "%.1fx" % ratio, ratio >= 50))
        for label, _value, shown, met in checks:
            # The issue sets its targets for 50 nodes; at other sizes the same comparisons are for reference
            # (at N=10 the interpreter's start alone is about half the erl_call loop).
            status = ("met" if met else "MISSED") if size == 50 else "(reference: targets are for N=50)"
            print("N=%-3d %-48s %10s  %s" % (size, label, shown, status))
    for text in profiles:
        print()
        print(text)


if __name__ == "__main__":
    main()
