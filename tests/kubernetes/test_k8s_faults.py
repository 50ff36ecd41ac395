"""Kubernetes faults of plugins/module_utils/k8s_faults.py against a real cluster.

Runs only when a cluster is configured: K8S_AUTH_KUBECONFIG (a kubeconfig) and BEAMOPS_K8S_NAMESPACE (a namespace
where a BEAM release is deployed, e.g. by the kubernetes role; BEAMOPS_K8S_WORKLOAD names it, default
StatefulSet/meshprobe, and BEAMOPS_K8S_PROBE_PORTS the ports that listen in every pod, default 4369,9100).
Otherwise every test skips with that reason. Each test checks the fault's effect and that nothing is left after
it (no beamops-fault-* policy, no fault label, the original replica count, the workload whole).
The same logic runs against a stand-in API in tests/unit/test_faults_k8s.py on every run.
"""
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.beamops.cluster.plugins.module_utils.faults import Journal
from ansible_collections.beamops.cluster.plugins.module_utils.k8s_faults import (
    FAULT_LABEL_PREFIX,
    POLICY_PREFIX,
    K8sFaultSession,
    KubeApi,
)

KUBECONFIG = os.environ.get("K8S_AUTH_KUBECONFIG")
NAMESPACE = os.environ.get("BEAMOPS_K8S_NAMESPACE")
WORKLOAD = os.environ.get("BEAMOPS_K8S_WORKLOAD", "StatefulSet/meshprobe")
PROBE_PORTS = [int(p) for p in os.environ.get("BEAMOPS_K8S_PROBE_PORTS", "4369,9100").split(",") if p]

pytestmark = pytest.mark.skipif(
    not (KUBECONFIG and NAMESPACE),
    reason="not measured: no cluster configured (set K8S_AUTH_KUBECONFIG and BEAMOPS_K8S_NAMESPACE, a namespace "
           "with a deployed release)")


@pytest.fixture
def api():
    return KubeApi.from_kubeconfig(KUBECONFIG)


@pytest.fixture
def session(api, tmp_path):
    with K8sFaultSession(NAMESPACE, str(tmp_path / "journal.json"), WORKLOAD, api=api, verify_timeout=120.0,
                         ready_timeout=600.0) as opened:
        opened.wait_ready()
        before = api.read_scale(NAMESPACE, opened.workload["kind"], opened.workload["name"])["replicas"]
        yield opened
    assert not os.path.exists(str(tmp_path / "journal.json"))
    assert_clean(api, opened, before)


def assert_clean(api, session, replicas):
    assert [p["name"] for p in api.list_network_policies(NAMESPACE) if p["name"].startswith(POLICY_PREFIX)] == []
    pods = session.pods()
    assert all(not k.startswith(FAULT_LABEL_PREFIX) for p in pods for k in p["labels"])
    assert api.read_scale(NAMESPACE, session.workload["kind"], session.workload["name"])["replicas"] == replicas
    session.wait_ready()


def test_delete_pod_is_replaced(session):
    victim = session.pods()[0]
    record = session.delete_pod(victim["name"])
    assert record["verification"]["pod_gone"] and record["detection"] == "connection_closed"
    undone = session.undo(record)
    print("\ndelete of %s: gone %.2f s after the call; workload whole again %.1f s after the undo began" % (
        victim["name"], record["times"]["effective"]["monotonic"] - record["times"]["issued"]["monotonic"],
        undone["undo_verification"]["workload_ready_after_s"]))
    assert victim["uid"] not in [p["uid"] for p in session.pods()]


def test_kill_container_restarts_it(session):
    victim = session.pods()[-1]
    record = session.kill_container(victim["name"])
    print("\nkill of the BEAM in %s: %s; %s after %.2f s" % (
        victim["name"], record["mechanism"].rsplit("; ", 1)[-1], record["verification"]["restarted"],
        record["times"]["effective"]["monotonic"] - record["times"]["issued"]["monotonic"]))
    assert record["verification"]["restarted"]
    session.undo(record)


def test_partition_cuts_new_connections_and_heals(session):
    pods = [p["name"] for p in session.pods()]
    assert len(pods) >= 2, "the partition needs two pods"
    record = session.partition(pods[:1], pods[1:], probe_ports=PROBE_PORTS, allow_widening=True)
    outcomes = set(i["outcome"] for v in record["verification"]["probes"].values() for i in v)
    print("\nNetworkPolicy partition %s | %s: effective %.2f s after the policies were created (probes: %s); "
          "established connections: %s" % (
              pods[0], ",".join(pods[1:]), record["times"]["effective"]["monotonic"] -
              record["times"]["returned"]["monotonic"], sorted(outcomes), record["verification"]["established"]))
    assert "connected" not in outcomes
    undone = session.undo(record)
    assert set(i["outcome"] for v in undone["undo_verification"]["probes"].values() for i in v) == {"connected"}


def test_rollout_restart_replaces_every_pod(session):
    before = set(p["uid"] for p in session.pods())
    record = session.rollout_restart()
    undone = session.undo(record)
    print("\nrolling restart: picked up after %.2f s, complete %.1f s after the undo began" % (
        record["times"]["effective"]["monotonic"] - record["times"]["issued"]["monotonic"],
        undone["undo_verification"]["workload_ready_after_s"]))
    assert not before & set(p["uid"] for p in session.pods())


def test_scale_out_and_back(session):
    count = len(session.pods())
    record = session.scale(add=1)
    assert len(record["verification"]["pods"]) == count + 1
    session.wait_ready()
    undone = session.undo(record)
    assert len(undone["undo_verification"]["pods"]) == count


CHILD = r'''
import sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.beamops.cluster.plugins.module_utils.k8s_faults import K8sFaultSession
with K8sFaultSession(sys.argv[2], sys.argv[3], sys.argv[4], kubeconfig=sys.argv[5], verify_timeout=120.0) as s:
    s.scale(add=1)
    print("ready", flush=True)
    time.sleep(600)
'''


def test_sigkilled_run_is_undone_by_the_next_session(api, tmp_path, collections_root):
    journal = str(tmp_path / "journal.json")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen([sys.executable, str(script), collections_root, NAMESPACE, journal, WORKLOAD, KUBECONFIG],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    proc.kill()
    proc.wait(10)
    left = Journal(journal).load()
    assert [(r["kind"], r["state"]) for r in left["faults"]] == [("scale", "applied")]
    original = left["faults"][0]["undo_data"]["replicas"]
    started = time.monotonic()
    with K8sFaultSession(NAMESPACE, journal, WORKLOAD, api=api, ready_timeout=600.0) as again:
        assert [r["kind"] for r in again.recovered] == ["scale"]
        print("\nrecovery of a SIGKILLed scale-out: scaled back to %d in %.1f s"
              % (original, time.monotonic() - started))
        assert_clean(api, again, original)
    assert not os.path.exists(journal)
