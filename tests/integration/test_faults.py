"""Faults of plugins/module_utils/faults.py on a real lab: the shared VM lab (vmlab.py: 3 systemd-nspawn members over
SSH, meshprobe deployed with deploy_vms and net_ticktime 10, tick window 7.5-12.5 s), watched from the controller with our own distribution
client (mesh_report) and checked on the hosts over a separate ssh:

- kill -9: peers see the node go at once; systemd restarts it and the mesh is whole again after the undo;
- graceful restart: peers see it go while the restart runs; a new BEAM;
- freeze: the node stops answering, peers drop it only after the tick window; SIGCONT and the mesh heals;
- full partition, DROP: each side sees the split only after the tick window; REJECT: at once; partial partition
  (one link): that link goes (what OTP's global then does to the others is printed, not asserted); the controller
  reaches every node all the time; the undo restores the full mesh;
- a run SIGKILLed in the middle of two faults leaves them in force, and the next session undoes them first;
  SIGTERM and Ctrl-C of a run undo everything before it exits.

Figures (detection and verification times) are printed. Needs root and systemd-nspawn. The lab is the session's
shared one (the `vm_lab` fixture); every test leaves it as it found it (no fault, full mesh).
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.beamops.cluster.plugins.module_utils import faults
from ansible_collections.beamops.cluster.plugins.module_utils.erl_mesh import mesh_report, wait_for_mesh

import vmlab
from vmlab import ADDRESSES, COOKIE, HOSTS, INVENTORY, NODES, ssh

REPO = vmlab.REPO
KEY = "%s/ssh/id_ed25519" % vmlab.STATE
NODE = dict((h, "meshprobe@%s" % ADDRESSES[h]) for h in HOSTS)
TICKTIME = 10  # what the shared lab deploys with
TICK_LOW, TICK_HIGH = faults.tick_window(TICKTIME)  # 7.5, 12.5
# "At once" must come in well under the tick window; "after the tick window" not before its low end. The margins
# allow for this shared 2-core machine (a report takes up to ~0.5 s under load).
AT_ONCE = 3.0
SLOW_MARGIN = 6.0


def fault_tables(host):
    return host_state(host)[0]


def beam_state(host):
    """(MainPID, process state letter) of meshprobe's BEAM on host."""
    return host_state(host)[1:]


def host_state(host):
    """(fault tables, MainPID, BEAM state letter) of a host, in one ssh."""
    out = ssh(host, "nft list tables; pid=$(systemctl show -p MainPID --value meshprobe); echo pid=$pid; "
                    "cat /proc/$pid/stat 2>/dev/null || true").splitlines()
    tables = [line.split()[-1] for line in out if "beamops_fault" in line]
    pid = int([line for line in out if line.startswith("pid=")][0][4:])
    stat = [line for line in out if line.startswith("%d (" % pid)] if pid else []
    return tables, pid, (stat[0].rsplit(")", 1)[1].split()[0] if stat else None)


def assert_clean():
    """Nothing left by a fault: no table, no stopped BEAM, every service active, the full mesh back."""
    states = {}
    threads = [threading.Thread(target=lambda h=h: states.__setitem__(h, host_state(h))) for h in HOSTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    for host in HOSTS:
        tables, pid, state = states[host]
        assert tables == [] and pid and state not in (None, "T"), (host, states[host])
    converged, report, _ms, _attempts = wait_for_mesh(NODES, COOKIE, timeout=60.0, attempt_timeout=2.0)
    assert converged, report


class Sampler(threading.Thread):
    """Polls mesh_report on some nodes until stopped; keeps (monotonic time, report)."""

    def __init__(self, nodes):
        super().__init__(daemon=True)
        self.nodes = nodes
        self.samples = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            self.samples.append((time.monotonic(), mesh_report(self.nodes, COOKIE, timeout=1.0)))
            time.sleep(0.05)

    def stop(self):
        self.stopping.set()
        self.join(10)
        return self.samples

    def __enter__(self):
        self.start()
        time.sleep(0.3)  # a few samples of the state before the fault
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def connected(report, viewer, peer):
    """Does ``viewer`` list ``peer`` among its connected nodes in this report?"""
    return NODE[peer] in report["per_node"][NODE[viewer]]["connected"]


def first_time(samples, since, predicate):
    """Seconds after ``since`` of the first sample taken after it for which predicate(report) holds, or None."""
    for when, report in samples:
        if when >= since and predicate(report):
            return when - since
    return None


def wait_for(samples, since, predicate, timeout):
    """Like first_time, while the sampler is still running: waits up to timeout seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = first_time(list(samples), since, predicate)
        if found is not None:
            return found
        time.sleep(0.1)
    return None


@pytest.fixture(scope="module")
def lab(vm_lab):
    """The fault sessions' hosts: the shared lab's members (the spare runs no meshprobe)."""
    hosts = faults.read_inventory(INVENTORY, group="lab")
    return dict((h, hosts[h]) for h in HOSTS)


@pytest.fixture
def session(lab, tmp_path):
    """A fault session on the lab whose journal lives in the test's folder; checks after it that all is clean."""
    assert wait_for_mesh(NODES, COOKIE, timeout=60.0, attempt_timeout=2.0)[0], "no full mesh before the test"
    with faults.VmFaultSession(lab, str(tmp_path / "journal.json"), app="meshprobe") as opened:
        assert opened.recovered == [] and opened.swept == []
        yield opened
    assert not os.path.exists(str(tmp_path / "journal.json"))
    assert_clean()


def test_inventory_of_the_lab(lab):
    assert sorted(lab) == HOSTS
    assert lab[HOSTS[1]] == {"address": ADDRESSES[HOSTS[1]], "port": 22, "user": "root", "key_file": KEY,
                             "host_key_checking": False, "python": "/usr/bin/python3"}


def test_kill_is_seen_at_once_and_systemd_restarts_the_node(session):
    victim, peers = HOSTS[1], [HOSTS[0], HOSTS[2]]
    with Sampler([NODE[h] for h in peers]) as sampler:
        record = session.kill(victim)
        gone = wait_for(sampler.samples, record["times"]["issued"]["monotonic"],
                        lambda r: not any(connected(r, p, victim) for p in peers), 15)
    assert record["kind"] == "kill" and record["detection"] == "connection_closed"
    assert record["verification"]["observed"] == "gone"
    old_pid = record["undo_data"]["pid"]
    assert ssh(victim, "test -d /proc/%d && echo alive || echo gone" % old_pid) == "gone"
    undone = session.undo(record)
    times = record["times"]
    print("\nkill -9 on %s: signal sent within %.2f s, PID gone after %.2f s, peers saw it go %.2f s after the "
          "command was issued; systemd restarted it (undo waited %.2f s)" % (
              victim, times["returned"]["monotonic"] - times["issued"]["monotonic"],
              times["effective"]["monotonic"] - times["issued"]["monotonic"], gone if gone is not None else -1,
              undone["times"]["undo_verified"]["monotonic"] - undone["times"]["undo_issued"]["monotonic"]))
    assert gone is not None and gone < AT_ONCE, gone
    assert undone["undo_verification"]["pid_changed"] and undone["undo_verification"]["started_by"] == "systemd"
    assert beam_state(victim)[0] == undone["undo_verification"]["main_pid"]


def test_graceful_restart_is_seen_while_it_runs(session):
    victim, peers = HOSTS[2], [HOSTS[0], HOSTS[1]]
    with Sampler([NODE[h] for h in peers]) as sampler:
        record = session.restart(victim)
        time.sleep(1.0)
    samples = sampler.samples
    times = record["times"]
    gone = first_time(samples, times["issued"]["monotonic"], lambda r: not any(connected(r, p, victim) for p in peers))
    print("\ngraceful restart of %s: systemctl restart took %.2f s, peers saw it go %.2f s after it was issued, new "
          "PID %d" % (victim, times["returned"]["monotonic"] - times["issued"]["monotonic"], gone if gone is not None
                      else -1, record["verification"]["new_pid"]))
    assert record["verification"]["new_pid"] != record["verification"]["old_pid"]
    assert gone is not None and gone < (times["returned"]["monotonic"] - times["issued"]["monotonic"]) + AT_ONCE


def test_freeze_is_seen_only_after_the_tick_window(session):
    victim, peers = HOSTS[1], [HOSTS[0], HOSTS[2]]
    with Sampler([NODE[h] for h in peers]) as sampler:
        record = session.freeze(victim)
        assert beam_state(victim)[1] == "T"
        frozen_view = mesh_report([NODE[victim]], COOKIE, timeout=1.0)["per_node"][NODE[victim]]
        dropped = wait_for(sampler.samples, record["times"]["effective"]["monotonic"],
                           lambda r: not any(connected(r, p, victim) for p in peers), TICK_HIGH + SLOW_MARGIN + 5)
    undone = session.undo(record)
    healed = wait_for_mesh(NODES, COOKIE, timeout=60.0, attempt_timeout=2.0)
    print("\nfreeze of %s: state T after %.2f s; peers dropped it %s s after (tick window %.1f-%.1f s); SIGCONT "
          "verified in %.2f s; full mesh %s ms after" % (
              victim, record["times"]["effective"]["monotonic"] - record["times"]["issued"]["monotonic"],
              "%.2f" % dropped if dropped is not None else "never", TICK_LOW, TICK_HIGH,
              undone["times"]["undo_verified"]["monotonic"] - undone["times"]["undo_issued"]["monotonic"], healed[2]))
    assert record["detection"] == "ticks"
    assert frozen_view["reachable"] is False and frozen_view["reason"] == "timeout"
    assert dropped is not None and TICK_LOW - 1.5 <= dropped <= TICK_HIGH + SLOW_MARGIN, dropped
    assert undone["undo_verification"]["state"] in ("S", "R") and beam_state(victim)[1] != "T"
    assert healed[0], healed[1]


def split_between(report, group_a, group_b):
    return all(not connected(report, a, b) and not connected(report, b, a) for a in group_a for b in group_b)


@pytest.mark.parametrize("action", ["drop", "reject"])
def test_full_partition_splits_the_mesh_drop_after_ticks_reject_at_once(session, action):
    side_a, side_b = [HOSTS[0]], [HOSTS[1], HOSTS[2]]
    with Sampler(NODES) as sampler:
        record = session.partition(side_a, side_b, action=action, probe_ports=[4369, 9100])
        since = record["times"]["effective"]["monotonic"]
        split = wait_for(sampler.samples, since, lambda r: split_between(r, side_a, side_b), TICK_HIGH + SLOW_MARGIN + 5)
        time.sleep(1.0)
        undone = session.undo(record)
        healed_since = undone["times"]["undo_verified"]["monotonic"]
        healed = wait_for(sampler.samples, healed_since, lambda r: r["full_mesh"], 45)
    samples = sampler.samples
    during = [r for t, r in samples if since <= t <= healed_since]
    side_a_saw = first_time(samples, since, lambda r: all(not connected(r, HOSTS[0], b) for b in side_b))
    side_b_saw = first_time(samples, since, lambda r: all(not connected(r, b, HOSTS[0]) for b in side_b))
    probes = record["verification"]["probes"]
    print("\n%s: rules loaded in %.2f s, verified %.2f s later (%d probes: %s); side A saw the split after %s s, side "
          "B after %s s (tick window %.1f-%.1f s); heal verified in %.2f s, full mesh %s s after" % (
              record["label"], record["times"]["returned"]["monotonic"] - record["times"]["issued"]["monotonic"],
              record["times"]["verified"]["monotonic"] - record["times"]["returned"]["monotonic"],
              sum(len(v) for v in probes.values()), sorted(set(i["outcome"] for v in probes.values() for i in v)),
              side_a_saw, side_b_saw, TICK_LOW, TICK_HIGH,
              undone["times"]["undo_verified"]["monotonic"] - undone["times"]["undo_issued"]["monotonic"], healed))
    assert record["undo_data"]["table"].startswith("beamops_fault_") and sorted(record["hosts"]) == HOSTS
    expected = {"drop": {"timeout"}, "reject": {"refused"}}[action]
    assert set(i["outcome"] for v in probes.values() for i in v) == expected
    assert set(i["outcome"] for v in undone["undo_verification"]["probes"].values() for i in v) == {"connected"}
    assert split is not None and side_a_saw is not None and side_b_saw is not None
    if action == "drop":
        assert record["detection"] == "ticks"
        assert min(side_a_saw, side_b_saw) >= TICK_LOW - 1.5 and max(side_a_saw, side_b_saw) <= TICK_HIGH + SLOW_MARGIN
    else:
        assert record["detection"] == "connection_closed"
        assert max(side_a_saw, side_b_saw) < AT_ONCE
    # The controller (observer, SSH) is never cut: every node answered every report during the fault.
    assert during and all(r["unreachable"] == [] for r in during)
    assert any(r["partitions"] == [[NODE[HOSTS[1]], NODE[HOSTS[2]]], [NODE[HOSTS[0]]]] for r in during)
    assert healed is not None, "the mesh did not heal within 45 s of the undo"


@pytest.mark.parametrize("action", ["drop", "reject"])
def test_partial_partition_cuts_that_link(session, action):
    with Sampler(NODES) as sampler:
        record = session.partition(HOSTS[0], HOSTS[1], action=action, probe_ports=[4369, 9100])
        since = record["times"]["effective"]["monotonic"]
        cut = wait_for(sampler.samples, since, lambda r: not connected(r, HOSTS[0], HOSTS[1])
                       and not connected(r, HOSTS[1], HOSTS[0]), TICK_HIGH + SLOW_MARGIN + 5)
        time.sleep(2.0)  # watch what global makes of it
        undone = session.undo(record)
        healed_since = undone["times"]["undo_verified"]["monotonic"]
        healed = wait_for(sampler.samples, healed_since, lambda r: r["full_mesh"], 45)
    samples = sampler.samples
    during = [r for t, r in samples if since <= t <= healed_since]
    others_cut = sum(1 for r in during if not connected(r, HOSTS[2], HOSTS[0]) or not connected(r, HOSTS[2], HOSTS[1]))
    shapes = sorted(set(json.dumps([[n.split("@")[1] for n in p] for p in r["partitions"]]) for r in during))
    print("\n%s: the cut link went after %s s; %d of %d reports during the fault also missed a link of the third host "
          "(global's prevent_overlapping_partitions); partitions seen: %s; full mesh %s s after the verified undo"
          % (record["label"], cut, others_cut, len(during), ", ".join(shapes), healed))
    assert record["params"]["scope"] == "partial" and record["label"].startswith("partial partition (one link)")
    assert sorted(record["hosts"]) == [HOSTS[0], HOSTS[1]]
    assert fault_tables(HOSTS[2]) == []  # the third host has no rules
    assert cut is not None
    if action == "reject":
        assert cut < AT_ONCE
    else:
        assert cut >= TICK_LOW - 1.5
    assert during and all(r["unreachable"] == [] for r in during)
    assert healed is not None


CHILD = r'''
import sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.beamops.cluster.plugins.module_utils import faults
members = sys.argv[4:7]
hosts = dict((h, spec) for h, spec in faults.read_inventory(sys.argv[2], group="lab").items() if h in members)
with faults.VmFaultSession(hosts, sys.argv[3], app="meshprobe") as session:
    session.freeze(members[2])
    session.partition(members[0], members[1], action="drop")
    print("ready", flush=True)
    time.sleep(120)
print("not reached", flush=True)
'''


def start_child(tmp_path, collections_root):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    journal = str(tmp_path / "journal.json")
    proc = subprocess.Popen([sys.executable, str(script), collections_root, INVENTORY, journal] + HOSTS,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read()
    # Both faults are in force now, as the hosts themselves show.
    assert beam_state(HOSTS[2])[1] == "T"
    assert len(fault_tables(HOSTS[0])) == 1 and fault_tables(HOSTS[0]) == fault_tables(HOSTS[1])
    return proc, journal


def test_sigkilled_run_is_undone_by_the_next_session_first(lab, tmp_path, collections_root):
    assert wait_for_mesh(NODES, COOKIE, timeout=60.0, attempt_timeout=2.0)[0]
    proc, journal = start_child(tmp_path, collections_root)
    table = fault_tables(HOSTS[0])[0]
    proc.kill()
    proc.wait(10)
    time.sleep(1.0)
    # The killed run left both faults behind, and its journal says so.
    assert beam_state(HOSTS[2])[1] == "T" and fault_tables(HOSTS[0]) == [table]
    left = faults.Journal(journal).load()
    assert [(r["kind"], r["state"]) for r in left["faults"]] == [("freeze", "applied"), ("partition", "applied")]
    started = time.monotonic()
    with faults.VmFaultSession(lab, journal, app="meshprobe") as again:
        took = time.monotonic() - started
        assert [r["kind"] for r in again.recovered] == ["freeze", "partition"]
        assert all(r["state"] == "undone" and r["recovered"] for r in again.recovered)
        assert again.swept == []
        for host in HOSTS:
            assert fault_tables(host) == []
        assert beam_state(HOSTS[2])[1] != "T"
    print("\nrecovery of a SIGKILLed run (freeze + DROP partition left in force): undone and verified in %.2f s "
          "when the next session opened" % took)
    assert not os.path.exists(journal)
    assert_clean()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_of_a_run_undo_everything(lab, tmp_path, collections_root, signum):
    assert wait_for_mesh(NODES, COOKIE, timeout=60.0, attempt_timeout=2.0)[0]
    proc, journal = start_child(tmp_path, collections_root)
    sent = time.monotonic()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    took = time.monotonic() - sent
    print("\n%s to a run with a freeze and a DROP partition in force: everything undone and the run ended after "
          "%.2f s" % (signal.Signals(signum).name, took))
    assert proc.returncode != 0 and "not reached" not in out
    assert ("FaultInterrupted" if signum == signal.SIGTERM else "KeyboardInterrupt") in err
    assert not os.path.exists(journal)
    assert_clean()


def test_leftover_table_without_a_journal_is_swept(lab, tmp_path):
    """A table no journal knows (say, the journal was deleted by hand) is removed when a session opens."""
    ssh(HOSTS[2], "nft -f - <<'EOF'\n%sEOF" % faults.partition_ruleset("beamops_fault_stray", [ADDRESSES[HOSTS[0]]], "drop"))
    assert fault_tables(HOSTS[2]) == ["beamops_fault_stray"]
    with faults.VmFaultSession(lab, str(tmp_path / "journal.json"), app="meshprobe") as opened:
        assert opened.swept == [{"host": HOSTS[2], "table": "beamops_fault_stray"}]
    assert fault_tables(HOSTS[2]) == []
    assert_clean()


def test_bad_input_fails_before_any_fault(lab, tmp_path):
    journal = str(tmp_path / "journal.json")
    with pytest.raises(faults.FaultError, match="%s: meshprobe-nope.service is not installed" % HOSTS[1]):
        with faults.VmFaultSession(lab, journal, app="meshprobe-nope"):
            pass
    with faults.VmFaultSession(lab, journal, app="meshprobe") as opened:
        with pytest.raises(ValueError, match="%s in both groups" % HOSTS[0]):
            opened.partition([HOSTS[0]], [HOSTS[0], HOSTS[1]])
        with pytest.raises(ValueError, match="host 'itdeploy-9' is not one of this session's hosts"):
            opened.kill("itdeploy-9")
        with pytest.raises(faults.FaultError, match="before the fault, these connections already fail"):
            opened.partition(HOSTS[0], HOSTS[1], probe_ports=[4368])
        assert opened.records == []
    assert_clean()
