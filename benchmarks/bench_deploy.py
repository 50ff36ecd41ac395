"""Benchmark: what a deploy with beamops.cluster.deploy_vms costs when little or nothing changes.

    python benchmarks/bench_deploy.py                  # a lab of 3 hosts, each phase once
    python benchmarks/bench_deploy.py --repeat 3       # every phase 3 times (fresh lab each time), medians

Phases, side by side in one run, on a lab of its own (lab benchdep on 198.18.32.0/24, removed at the end):
  first        the first deploy of meshprobe 0.1.0 to 3 fresh hosts
  no-change    the same inputs again (changed=0 expected, no host restarted)
  one-host     a configuration change on one host only (a host_vars release_env for the second host)
  rolling      a rolling upgrade of all 3 hosts to meshprobe 0.2.0 (serial 1)
For each: wall time, PLAY RECAP task executions (ok + failed summed over the hosts), task headers shown, hosts
restarted (MainPID changed), and the ratio no-change / first. Targets (issue 11): no-change at most 30 % of the
first deploy; the one-host change restarts exactly one host. SSH pipelining is on (ANSIBLE_PIPELINING=true), as in
the tests; `--no-pipelining` measures without it.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))

from collection_path import link_collection  # noqa: E402

LAB = "benchdep"
NETWORK = "198.18.32.0/24"
STATE = "/var/lib/beamops/lab/" + LAB
INVENTORY = STATE + "/inventory.yml"
HOSTS = ["%s-%d" % (LAB, i) for i in (1, 2, 3)]
BUILDS = os.path.join(REPO_ROOT, "build", "testapps")


def playbook(name, extra, pipelining=True):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=link_collection(), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PIPELINING="true" if pipelining else "false")
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "beamops.cluster." + name]
    if name not in ("lab_up", "lab_down"):
        argv[1:1] = ["-i", INVENTORY]
    for item in extra:
        argv += ["-e", item]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800, check=False)
    took = time.monotonic() - started
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit("%s failed:\n%s" % (name, out[-4000:]))
    recap = out[out.rindex("PLAY RECAP"):]
    executed = sum(int(ok) + int(failed) for ok, failed in re.findall(r"ok=(\d+)\s+changed=\d+\s+unreachable=\d+\s+failed=(\d+)", recap))
    changed = sum(int(c) for c in re.findall(r"changed=(\d+)", recap))
    return {"seconds": took, "executed": executed, "headers": out.count("\nTASK ["), "changed": changed}


def main_pids():
    key = STATE + "/ssh/id_ed25519"
    pids = {}
    for i, host in enumerate(HOSTS):
        out = subprocess.run(["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                              "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "root@198.18.32.%d" % (11 + i),
                              "systemctl show -p MainPID --value meshprobe"], capture_output=True, text=True, timeout=60, check=True)
        pids[host] = out.stdout.strip()
    return pids


def one_round(pipelining):
    cookie_file = STATE + "/bench-vars.yml"
    playbook("lab_down", ["lab_name=" + LAB])
    playbook("lab_up", ["lab_name=" + LAB, "lab_network=" + NETWORK, "lab_hosts=3"])
    fd = os.open(cookie_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("release_name: meshprobe\nrelease_cookie: bench-deploy-cookie\n")
    common = ["@" + cookie_file, "release_target=lab", "release_mesh_timeout=60"]
    first = common + ["release_src=%s/meshprobe-0.1.0.tar.gz" % BUILDS]
    results = {}
    results["first"] = playbook("deploy_vms", first, pipelining)
    before = main_pids()
    results["no-change"] = playbook("deploy_vms", first, pipelining)
    results["no-change"]["restarted"] = sum(1 for h, p in main_pids().items() if p != before[h])
    os.makedirs(STATE + "/host_vars", exist_ok=True)
    with open(STATE + "/host_vars/%s.yml" % HOSTS[1], "w") as handle:
        handle.write("release_env:\n  BENCH_CHANGE: '1'\n")
    before = main_pids()
    results["one-host"] = playbook("deploy_vms", first, pipelining)
    results["one-host"]["restarted"] = sum(1 for h, p in main_pids().items() if p != before[h])
    before = main_pids()
    results["rolling"] = playbook("deploy_vms", common + ["release_src=%s/meshprobe-0.2.0.tar.gz" % BUILDS], pipelining)
    results["rolling"]["restarted"] = sum(1 for h, p in main_pids().items() if p != before[h])
    results["first"]["restarted"] = len(HOSTS)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--repeat", type=int, default=1, help="rounds, each on a fresh lab (default 1)")
    parser.add_argument("--no-pipelining", action="store_true", help="run the playbooks without SSH pipelining")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the lab needs root")
    subprocess.run([os.path.join(REPO_ROOT, "scripts", "build-testapps.sh")], check=True, capture_output=True, timeout=1800)
    rounds = []
    try:
        for _round in range(args.repeat):
            rounds.append(one_round(not args.no_pipelining))
    finally:
        playbook("lab_down", ["lab_name=" + LAB])
    print("deploy_vms on 3 lab hosts (meshprobe), SSH pipelining %s, %d round(s), load at end %s, %d CPUs"
          % ("off" if args.no_pipelining else "on", len(rounds), " ".join("%.1f" % x for x in os.getloadavg()), os.cpu_count()))
    print("%-10s %10s %10s %10s %9s %9s" % ("phase", "wall s", "executed", "headers", "changed", "restarted"))
    medians = {}
    for phase in ("first", "no-change", "one-host", "rolling"):
        values = [r[phase] for r in rounds]
        medians[phase] = statistics.median(v["seconds"] for v in values)
        print("%-10s %10.1f %10d %10d %9d %9d   (wall min-max %.1f-%.1f)" % (
            phase, medians[phase], statistics.median(v["executed"] for v in values), statistics.median(v["headers"] for v in values),
            statistics.median(v["changed"] for v in values), statistics.median(v["restarted"] for v in values),
            min(v["seconds"] for v in values), max(v["seconds"] for v in values)))
    ratio = medians["no-change"] / medians["first"]
    one_host = [r["one-host"]["restarted"] for r in rounds]
    print("no-change / first: %.0f %% (target <= 30 %%: %s)" % (100 * ratio, "met" if ratio <= 0.30 else "MISSED"))
    print("one-host change restarted %s host(s) (target 1: %s)" % (one_host, "met" if set(one_host) == {1} else "MISSED"))


if __name__ == "__main__":
    main()
