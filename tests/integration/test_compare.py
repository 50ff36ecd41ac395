"""The comparison playbook beamops.cluster.compare on the shared VM lab (vmlab.py: 3 members with meshprobe and
net_ticktime 10, a spare), run as a user runs it (ansible-playbook by FQCN, the cookie in a 0600 vars file):

- the short run (epmd and gossip, crash, a rejecting partition, a rolling restart and latency, K=3) deploys each
  strategy, prints a progress line per repetition with the time left, and writes results.json (every scenario, K
  repetitions, raw values, no cookie, a Kubernetes column that says it was not measured), report.md and a
  self-contained report.html; afterwards no fault is left on any host;
- bad input (an unknown scenario, an unknown target kind, a Kubernetes target without a kubeconfig, a node that
  does not answer at the start) fails with a message naming it, before any fault, changing nothing;
- SIGTERM to the playbook while a DROP partition is in force: its rules are removed and the nodes heal, and the next
  run works.

The lab is left as it was found: meshprobe on the 3 members with epmd, full mesh, no fault, the spare untouched.
(Chromium rendering of the page is tests/unit/test_compare_report.py's job.)
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.beamops.cluster.plugins.module_utils.erl_mesh import mesh_report, wait_for_mesh

from vmlab import (BUILDS, COOKIE, HOSTS, INVENTORY, NODES, SPARE, base_vars, playbook, service_state, ssh, vars_file)

STRATEGIES = ["epmd", "gossip"]


def fault_state(host):
    """(fault tables, MainPID, BEAM state letter, ActiveState) of meshprobe on a host, in one ssh."""
    out = ssh(host, "nft list tables; systemctl show -p MainPID -p ActiveState meshprobe; "
                    "cat /proc/$(systemctl show -p MainPID --value meshprobe)/stat 2>/dev/null || true").splitlines()
    tables = [line.split()[-1] for line in out if "beamops_fault" in line]
    info = dict(line.split("=", 1) for line in out if line.startswith(("MainPID=", "ActiveState=")))
    stat = [line for line in out if line.startswith("%s (" % info.get("MainPID"))]
    return tables, int(info.get("MainPID", 0)), stat[0].rsplit(")", 1)[1].split()[0] if stat else None, \
        info.get("ActiveState")


def assert_no_fault_left():
    for host in HOSTS:
        tables, pid, state, active = fault_state(host)
        assert tables == [] and pid and state not in (None, "T") and active == "active", (host, tables, state, active)
    converged, report, _ms, _n = wait_for_mesh(NODES, COOKIE, timeout=90.0, attempt_timeout=3.0)
    assert converged, report


def spare_is_fresh():
    return ssh(SPARE, "ls -d /opt/meshprobe /etc/meshprobe /var/lib/meshprobe /etc/systemd/system/meshprobe.service "
                      "/usr/local/lib/beamops 2>/dev/null; id meshprobe 2>/dev/null; nft list tables", check=False) == ""


@pytest.fixture(scope="module")
def lab(vm_lab):
    version = service_state(HOSTS[0])["current"]
    assert spare_is_fresh()
    yield vm_lab
    # As found: the version it ran, epmd, no firewall exception, full mesh.
    playbook("deploy_vms", *(base_vars(version) + ["release_serial=100%", "release_force=true"]))
    assert mesh_report(NODES, COOKIE, timeout=10.0)["full_mesh"]
    assert spare_is_fresh()
    assert [service_state(h)["current"] for h in HOSTS] == [version] * 3


@pytest.fixture(scope="module")
def release_vars(lab):
    return "@" + vars_file({"release_name": "meshprobe", "release_cookie": COOKIE, "release_net_ticktime": 10,
                            "release_src": "%s/meshprobe-0.1.0.tar.gz" % BUILDS,
                            "compare_release_vars": {"release_mesh_timeout": 60}}, "compare")


def compare(release_vars, out_dir, journal_dir, extra, check=False):
    settings = dict({"compare_hosts": HOSTS, "compare_out_dir": str(out_dir), "compare_journal_dir": str(journal_dir)},
                    **extra)
    return playbook("compare", release_vars, json.dumps(settings), check=check)


def test_short_comparison_of_two_strategies_writes_results_and_report(release_vars, tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    run = compare(release_vars, out, tmp_path / "journal", {"compare_strategies": STRATEGIES, "compare_short": True})
    took = time.monotonic() - started
    assert run.returncode == 0, run.out[-6000:]
    print("\nshort comparison (%s; crash, partition_full_reject, rolling_deploy, latency; K=3): %.0f s"
          % (", ".join(STRATEGIES), took))
    # Progress: one line per scenario and repetition, with what is left.
    for strategy in STRATEGIES:
        for index in (1, 2, 3):
            assert "[vm-%s] crash %d/3: kill -9 of meshprobe on" % (strategy, index) in run.out
    assert "about " in run.out and " left (" in run.out
    assert "report: %s/report.html" % out in run.out

    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == 1 and results["settings"]["repetitions"] == 3 and results["settings"]["short"] is True
    names = [t["name"] for t in results["targets"]]
    assert names == ["vm-epmd", "vm-gossip", "kubernetes"]
    k8s = results["targets"][2]
    assert k8s["measured"] is False and k8s["reason"] == "not measured: no cluster configured"
    for target in results["targets"][:2]:
        env = target["environment"]
        assert env["platform"].startswith("lab:") and "systemd-nspawn" in env["platform"]
        assert env["net_ticktime_s"] == 10 and env["otp"].startswith("25") and env["release"] == "meshprobe 0.1.0"
        assert env["hosts"] == 3 and env["strategy"] == target["name"][3:]
        assert [s["name"] for s in target["scenarios"]] == ["crash", "partition_full_reject", "rolling_deploy", "latency"]
        for scenario in target["scenarios"]:
            reps = scenario["repetitions"]
            assert [r["index"] for r in reps] == [1, 2, 3]
            assert all(isinstance(r["baseline_ms"], float) for r in reps)
        crash, partition, rolling, latency = target["scenarios"]
        for rep in crash["repetitions"]:
            m = rep["metrics"]
            # kill -9 closes the connections: noticed far inside the tick window (7.5 s), healed by systemd's restart.
            assert 0 <= m["detection_ms"] < 5000 and len(m["detection_per_peer_ms"]) == 2, m
            assert rep["healed"] and m["heal_ms"] > m["detection_ms"], m
            assert rep["fault_windows"] and rep["timeline"]["members"] and min(rep["timeline"]["members"]) == 2
        for rep in partition["repetitions"]:
            m = rep["metrics"]
            assert m["heals_by_itself"] is True and m["heal_ms"] is not None, m
            assert any(" | " in layout for layout in m["split_seen"]), m
        assert partition["fault"]["kind"] == "partition" and "REJECT" in partition["fault"]["mechanism"]
        for rep in rolling["repetitions"]:
            assert rep["metrics"]["fewest_members"] in (1, 2) and rep["metrics"]["not_full_ms"] > 0, rep["metrics"]
        for rep in latency["repetitions"]:
            m = rep["metrics"]
            assert m["samples"] == 600 and len(rep["samples"]) == 600 and m["open_loop"] is True
            assert 0 < m["rtt_p50_ms"] <= m["rtt_p99_ms"] <= m["rtt_max_ms"], m
    assert results["metrics_meta"]["heals_by_itself"]["unit"] == "bool"

    for name in ("results.json", "report.md", "report.html"):
        text = (out / name).read_text()
        assert COOKIE not in text, name
    markdown = (out / "report.md").read_text()
    assert "vm-epmd" in markdown and "vm-gossip" in markdown and "not measured: no cluster configured" in markdown
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 4 and not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert oct(os.stat(str(out / "results.json")).st_mode & 0o777) == "0o644"
    # Observer files and deploy logs stay with the results, readable by root only.
    assert oct(os.stat(str(out / "observer-vm-epmd.jsonl")).st_mode & 0o777) == "0o600"
    assert not os.listdir(str(tmp_path / "journal")) or all(f.endswith(".lock") for f in os.listdir(str(tmp_path / "journal")))
    assert_no_fault_left()
    assert spare_is_fresh()


@pytest.mark.parametrize("extra,expected", [
    ({"compare_scenarios": ["crash", "crash_everything"]},
     "value of compare_scenarios must be one or more of: cold_start, crash"),
    ({"compare_strategies": [], "compare_extra_targets": [{"kind": "docker", "name": "vm-docker"}]},
     "compare_run: targets[0].kind is 'docker'; use vm (hosts of an inventory) or kubernetes"),
    ({"compare_strategies": [], "compare_kubernetes": {"namespace": "meshprobe"}},
     "a Kubernetes target needs a kubeconfig: set targets[0].kubeconfig or K8S_AUTH_KUBECONFIG"),
    ({"compare_strategies": [], "compare_extra_targets": [{"name": "vm-with-spare", "deploy": False,
                                                           "hosts": HOSTS[:2] + [SPARE]}]},
     "target vm-with-spare: 1 of 3 nodes cannot be reached at the start, so no fault was injected"),
])
def test_bad_input_fails_before_any_fault(release_vars, tmp_path, monkeypatch, extra, expected):
    monkeypatch.delenv("K8S_AUTH_KUBECONFIG", raising=False)
    before = dict((h, service_state(h)) for h in HOSTS)
    run = compare(release_vars, tmp_path / "out", tmp_path / "journal", extra)
    assert run.returncode != 0
    assert expected in run.out, run.out[-4000:]
    assert COOKIE not in run.out
    assert dict((h, service_state(h)) for h in HOSTS) == before  # nothing deployed, restarted or killed
    for host in HOSTS:
        assert fault_state(host)[0] == []
    assert not os.path.exists(str(tmp_path / "out" / "results.json"))
    if "unreachable" in expected or "reached" in expected:
        assert "meshprobe@198.18.7.14: epmd_unreachable" in run.out


def test_sigterm_during_a_partition_undoes_it_and_the_next_run_works(release_vars, tmp_path):
    journal = tmp_path / "journal"
    settings = {"compare_hosts": HOSTS, "compare_out_dir": str(tmp_path / "out"), "compare_journal_dir": str(journal),
                "compare_strategies": [], "compare_scenarios": ["partition_full_drop"], "compare_repetitions": 1,
                "compare_extra_targets": [{"name": "vm-sigterm", "deploy": False}]}
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", INVENTORY, "beamops.cluster.compare",
           "-e", release_vars, "-e", json.dumps(settings)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    try:
        deadline = time.monotonic() + 240
        cut = None
        while time.monotonic() < deadline and cut is None:
            for host in HOSTS:
                if fault_state(host)[0]:
                    cut = host
                    break
            time.sleep(0.3)
        assert cut, "the partition never came into force"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, out[-3000:]
    # The worker undoes what is in force, then drops its journal (a lock file may stay: it holds no state).
    while time.monotonic() - sent < 120 and [f for f in os.listdir(str(journal)) if f.endswith(".json")]:
        time.sleep(0.5)
    took = time.monotonic() - sent
    print("\nSIGTERM to the compare playbook with a DROP partition in force: undone, journal gone %.1f s later" % took)
    assert not [f for f in os.listdir(str(journal)) if f.endswith(".json")], os.listdir(str(journal))
    assert_no_fault_left()
    assert not (tmp_path / "out" / "results.json").exists()
    # The next run on the same journal works.
    settings["compare_scenarios"] = ["crash"]
    run = playbook("compare", release_vars, json.dumps(settings), check=False)
    assert run.returncode == 0, run.out[-4000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["targets"][0]["scenarios"][0]["repetitions"][0]["healed"] is True
    assert_no_fault_left()
