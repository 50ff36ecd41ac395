"""Unit tests of plugins/module_utils/k8s_faults.py and of the session machinery it shares with the VM faults.

There is no Kubernetes API server on this machine, so the faults run against ``StandInCluster``: a stand-in of
the official client's ``CoreV1Api``, ``AppsV1Api``, ``NetworkingV1Api`` and ``kubernetes.stream.stream`` that
answers with the client's real model classes (V1Pod, V1Deployment, ...) and plays the controllers' part (a
deleted pod is replaced, a scale patch adds or removes pods, a restart annotation replaces every pod, a TCP probe
across our NetworkPolicies fails). It records every request, so the tests check the requests the faults build and
the journal/undo logic: a record on disk before the fault, undo on exception, SIGTERM and Ctrl-C, recovery by
the next session after a SIGKILL. The stand-in's state can live in a file, so that a child process and the test
see the same "cluster". Real parts where they exist: the kill script runs against a real BEAM that is PID 1 of
its own PID namespace (the probe script is tested on real sockets in test_faults.py), and KubeApi drives the
real client against a loopback HTTP server. The real-cluster tests are in
tests/kubernetes/test_k8s_faults.py.
"""
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="the stand-in answers with the client's model classes")
from kubernetes import client as k8s  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from ansible_collections.beamops.cluster.plugins.module_utils import k8s_faults  # noqa: E402
from ansible_collections.beamops.cluster.plugins.module_utils.faults import (  # noqa: E402
    FaultError,
    FaultNotEffective,
    Journal,
)
from ansible_collections.beamops.cluster.plugins.module_utils.k8s_faults import (  # noqa: E402
    K8sFaultSession,
    KubeApi,
    partition_policy,
    selector_matches,
)

NS = "beam"
APP_LABELS = {"app": "meshprobe"}
HERE = os.path.dirname(os.path.abspath(__file__))


class StandInCluster:
    """In-memory (or file-backed) stand-in of the client's API objects for one namespace; see the docstring."""

    def __init__(self, state_path=None, replicas=3, kind="Deployment", beam_pid=1, cuts_established=False):
        self.state_path = state_path
        self.calls = []
        if state_path and os.path.exists(state_path):
            return
        self.state = {"pods": {}, "policies": {}, "kind": kind, "replicas": replicas, "generation": 1,
                      "annotations": {}, "beam_pid": beam_pid, "cuts_established": cuts_established, "seq": 0,
                      "links_cut": False}
        for _pod in range(replicas):
            self._add_pod()
        self._save()

    # ---- state
    def _load(self):
        if self.state_path:
            with open(self.state_path) as handle:
                self.state = json.load(handle)

    def _save(self):
        if self.state_path:
            tmp = self.state_path + ".tmp"
            with open(tmp, "w") as handle:
                json.dump(self.state, handle)
            os.rename(tmp, self.state_path)

    def _add_pod(self, name=None):
        self.state["seq"] += 1
        seq = self.state["seq"]
        if name is None:
            if self.state["kind"] == "StatefulSet":
                name = "meshprobe-%d" % len(self.state["pods"])
            else:
                name = "meshprobe-%s" % uuid.uuid4().hex[:5]
        self.state["pods"][name] = {"uid": str(uuid.uuid4()), "ip": "10.244.0.%d" % (10 + seq),
                                    "labels": dict(APP_LABELS), "restart_count": 0,
                                    "container_id": "containerd://%s" % uuid.uuid4().hex}
        return name

    def call(self, name, *args, **kwargs):
        self._load()
        self.calls.append((name, args, kwargs))
        if self.state_path:
            with open(self.state_path + ".calls", "a") as handle:
                handle.write(json.dumps([name, args, kwargs], default=str) + "\n")

    @staticmethod
    def not_found():
        return ApiException(status=404, reason="Not Found")

    def _pod_model(self, name):
        pod = self.state["pods"][name]
        return k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name=name, namespace=NS, uid=pod["uid"], labels=dict(pod["labels"])),
            spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="meshprobe", image="meshprobe:0.1.0")]),
            status=k8s.V1PodStatus(phase="Running", pod_ip=pod["ip"], pod_ips=[k8s.V1PodIP(ip=pod["ip"])],
                                   conditions=[k8s.V1PodCondition(type="Ready", status="True")],
                                   container_statuses=[k8s.V1ContainerStatus(
                                       name="meshprobe", image="meshprobe:0.1.0", image_id="sha256:1", ready=True,
                                       restart_count=pod["restart_count"], container_id=pod["container_id"])]))

    # ---- CoreV1Api
    def read_namespace(self, name):
        self.call("read_namespace", name)
        if name != NS:
            raise self.not_found()
        return k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name))

    def list_namespaced_pod(self, namespace, label_selector=None):
        self.call("list_namespaced_pod", namespace, label_selector=label_selector)
        wanted = dict(part.split("=", 1) for part in (label_selector or "").split(",") if part)
        items = [self._pod_model(n) for n, p in sorted(self.state["pods"].items())
                 if all(p["labels"].get(k) == v for k, v in wanted.items())]
        return k8s.V1PodList(items=items)

    def read_namespaced_pod(self, name, namespace):
        self.call("read_namespaced_pod", name, namespace)
        if name not in self.state["pods"]:
            raise self.not_found()
        return self._pod_model(name)

    def delete_namespaced_pod(self, name, namespace, grace_period_seconds=None):
        self.call("delete_namespaced_pod", name, namespace, grace_period_seconds=grace_period_seconds)
        if name not in self.state["pods"]:
            raise self.not_found()
        del self.state["pods"][name]
        self._add_pod(name if self.state["kind"] == "StatefulSet" else None)  # the controller replaces it
        self._save()

    def patch_namespaced_pod(self, name, namespace, body):
        self.call("patch_namespaced_pod", name, namespace, body)
        if name not in self.state["pods"]:
            raise self.not_found()
        labels = self.state["pods"][name]["labels"]
        for key, value in body["metadata"]["labels"].items():
            if value is None:
                labels.pop(key, None)
            else:
                labels[key] = value
        self._save()

    def connect_get_namespaced_pod_exec(self, *args, **kwargs):
        raise AssertionError("exec goes through stream(), never straight to the API method")

    # ---- AppsV1Api (the same for Deployment and StatefulSet)
    def _workload_model(self, name):
        state = self.state
        meta = k8s.V1ObjectMeta(name=name, namespace=NS, generation=state["generation"])
        template = k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=dict(APP_LABELS),
                                                                   annotations=dict(state["annotations"])))
        selector = k8s.V1LabelSelector(match_labels=dict(APP_LABELS))
        count = len(state["pods"])
        if state["kind"] == "StatefulSet":
            return k8s.V1StatefulSet(metadata=meta, spec=k8s.V1StatefulSetSpec(
                replicas=state["replicas"], selector=selector, template=template, service_name="meshprobe"),
                status=k8s.V1StatefulSetStatus(replicas=count, ready_replicas=count, updated_replicas=count,
                                               observed_generation=state["generation"], current_revision="r1",
                                               update_revision="r1"))
        return k8s.V1Deployment(metadata=meta, spec=k8s.V1DeploymentSpec(
            replicas=state["replicas"], selector=selector, template=template),
            status=k8s.V1DeploymentStatus(replicas=count, ready_replicas=count, updated_replicas=count,
                                          observed_generation=state["generation"]))

    def _check_workload(self, name):
        if name != "meshprobe":
            raise self.not_found()

    def read_namespaced_deployment(self, name, namespace):
        self.call("read_namespaced_deployment", name, namespace)
        self._check_workload(name)
        return self._workload_model(name)

    read_namespaced_stateful_set = read_namespaced_deployment

    def patch_namespaced_deployment(self, name, namespace, body):
        self.call("patch_namespaced_workload", name, namespace, body)
        self._check_workload(name)
        annotations = body["spec"]["template"]["metadata"]["annotations"]
        self.state["annotations"].update(annotations)
        self.state["generation"] += 1
        for pod in sorted(self.state["pods"]):  # a rollout replaces every pod
            del self.state["pods"][pod]
            self._add_pod(pod if self.state["kind"] == "StatefulSet" else None)
        self._save()

    patch_namespaced_stateful_set = patch_namespaced_deployment

    def read_namespaced_deployment_scale(self, name, namespace):
        self.call("read_namespaced_scale", name, namespace)
        self._check_workload(name)
        return k8s.V1Scale(metadata=k8s.V1ObjectMeta(name=name), spec=k8s.V1ScaleSpec(replicas=self.state["replicas"]),
                           status=k8s.V1ScaleStatus(replicas=len(self.state["pods"])))

    read_namespaced_stateful_set_scale = read_namespaced_deployment_scale

    def patch_namespaced_deployment_scale(self, name, namespace, body):
        self.call("patch_namespaced_scale", name, namespace, body)
        self._check_workload(name)
        self.state["replicas"] = body["spec"]["replicas"]
        while len(self.state["pods"]) < self.state["replicas"]:
            self._add_pod()
        while len(self.state["pods"]) > self.state["replicas"]:
            del self.state["pods"][sorted(self.state["pods"])[-1]]
        self._save()

    patch_namespaced_stateful_set_scale = patch_namespaced_deployment_scale

    # ---- NetworkingV1Api
    def list_namespaced_network_policy(self, namespace):
        self.call("list_namespaced_network_policy", namespace)
        items = []
        for name, body in sorted(self.state["policies"].items()):
            selector = body["spec"]["podSelector"]
            items.append(k8s.V1NetworkPolicy(
                metadata=k8s.V1ObjectMeta(name=name),
                spec=k8s.V1NetworkPolicySpec(policy_types=body["spec"].get("policyTypes"), pod_selector=k8s.V1LabelSelector(
                    match_labels=selector.get("matchLabels"),
                    match_expressions=[k8s.V1LabelSelectorRequirement(**e)
                                       for e in selector.get("matchExpressions", [])] or None))))
        return k8s.V1NetworkPolicyList(items=items)

    def create_namespaced_network_policy(self, namespace, body):
        self.call("create_namespaced_network_policy", namespace, body)
        if body["metadata"]["name"] in self.state["policies"]:
            raise ApiException(status=409, reason="AlreadyExists")
        self.state["policies"][body["metadata"]["name"]] = body
        if self.state["cuts_established"]:
            self.state["links_cut"] = True
        self._save()

    def delete_namespaced_network_policy(self, name, namespace):
        self.call("delete_namespaced_network_policy", name, namespace)
        if name not in self.state["policies"]:
            raise self.not_found()
        del self.state["policies"][name]
        if not self.state["policies"]:
            self.state["links_cut"] = False
        self._save()

    # ---- NetworkPolicy semantics for what partition_policy writes
    def _peer_allows(self, peer, other):
        if "podSelector" in peer:
            sel = peer["podSelector"]
            return selector_matches(sel.get("matchLabels"), sel.get("matchExpressions"), other["labels"])
        if "namespaceSelector" in peer:
            sel = peer["namespaceSelector"]
            return selector_matches(sel.get("matchLabels"), sel.get("matchExpressions"),
                                    {"kubernetes.io/metadata.name": NS})
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other["ip"])
        if address not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(address in ipaddress.ip_network(e) for e in block.get("except", []))

    def _allowed(self, source, target):
        """NetworkPolicy semantics: a pod selected by any policy of a direction is isolated in it, and then
        allowed only what some rule of those policies allows (allows add up; ports are not modelled)."""
        for direction, key, pod, other in (("Egress", "to", source, target), ("Ingress", "from", target, source)):
            selecting = [b["spec"] for b in self.state["policies"].values()
                         if direction in b["spec"].get("policyTypes", ["Ingress"])
                         and selector_matches(b["spec"]["podSelector"].get("matchLabels"),
                                              b["spec"]["podSelector"].get("matchExpressions"), pod["labels"])]
            rules = [rule for spec in selecting for rule in spec.get(direction.lower(), [])]
            if selecting and not any(key not in rule or any(self._peer_allows(p, other) for p in rule[key])
                                     for rule in rules):
                return False
        return True

    def linked(self, a, b):
        """What an observer would see: pods keep their established link unless this cluster's CNI cuts it."""
        self._load()
        pods = self.state["pods"]
        if a not in pods or b not in pods:
            return False
        return not (self.state["links_cut"] and not self._allowed(pods[a], pods[b]))

    # ---- kubernetes.stream.stream
    def stream(self, method, name, namespace, **kwargs):
        self.call("exec", name, namespace, command=kwargs["command"], container=kwargs.get("container"))
        assert kwargs["stdin"] is False and kwargs["tty"] is False and kwargs["_preload_content"] is False
        command = kwargs["command"]
        pod = self.state["pods"].get(name)
        if pod is None:
            raise self.not_found()
        if command[:2] == ["sh", "-c"] and command[2] == k8s_faults.KILL_BEAM_SCRIPT:
            pod["restart_count"] += 1
            pod["container_id"] = "containerd://%s" % uuid.uuid4().hex
            self._save()
            line = "QUIT 1" if self.state["beam_pid"] == 1 else "KILL %d" % self.state["beam_pid"]
            return StandInStream(line + "\n", "", None)  # the container died under the exec: no status
        if command[:2] == ["sh", "-c"] and command[3] == "probe":
            targets = command[5:]
            by_ip = dict((p["ip"], p) for p in self.state["pods"].values())
            lines = []
            for i in range(0, len(targets), 2):
                target = by_ip.get(targets[i])
                ok = target is not None and self._allowed(pod, target)
                lines.append("%s %s %s" % (targets[i], targets[i + 1], "connected" if ok else "timeout"))
            return StandInStream("\n".join(lines) + "\n", "", 0)
        raise AssertionError("unexpected exec %r" % (command,))

    def api(self):
        return KubeApi(self, self, self, stream=self.stream)

    def names(self, kind):
        return [c for c in self.calls if c[0] == kind]


class StandInStream:
    """What kubernetes.stream.stream(..., _preload_content=False) returns, after the command ended."""

    def __init__(self, out, err, rc):
        self.out, self.err, self.rc = out, err, rc
        self.closed = False

    def run_forever(self, timeout=None):
        pass

    def read_stdout(self):
        return self.out

    def read_stderr(self):
        return self.err

    @property
    def returncode(self):
        if self.rc is None:
            raise TypeError("'NoneType' object is not subscriptable")  # what the client raises without a status
        return self.rc

    def close(self):
        self.closed = True


@pytest.fixture
def cluster():
    return StandInCluster()


def session_for(cluster, journal, **kwargs):
    kwargs.setdefault("verify_timeout", 5.0)
    kwargs.setdefault("ready_timeout", 5.0)
    return K8sFaultSession(NS, journal, "Deployment/meshprobe", api=cluster.api(), **kwargs)


# ----------------------------------------------------------------------------------------- request bodies
def test_partition_policy_reaches_all_but_the_other_group():
    body = partition_policy("beamops-fault-1-a", NS, "beamops.io/fault-1", "a", "b", ["10.0.0.2", "fd00::2"])
    assert body["metadata"]["name"] == "beamops-fault-1-a" and body["metadata"]["namespace"] == NS
    spec = body["spec"]
    assert spec["podSelector"] == {"matchLabels": {"beamops.io/fault-1": "a"}}
    assert spec["policyTypes"] == ["Egress"] and "ingress" not in spec
    peers = [{"podSelector": {"matchExpressions": [{"key": "beamops.io/fault-1", "operator": "NotIn", "values": ["b"]}]}},
             {"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                                          "values": [NS]}]}},
             {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.2/32"]}},
             {"ipBlock": {"cidr": "::/0", "except": ["fd00::2/128"]}}]
    assert spec["egress"] == [{"to": peers}]
    # The client turns it into its model without losing a field (camelCase names are the API's).
    model = k8s.ApiClient()._ApiClient__deserialize(body, "V1NetworkPolicy")  # pylint: disable=protected-access
    assert k8s.ApiClient().sanitize_for_serialization(model) == body


@pytest.mark.parametrize("labels,expected", [
    ({"app": "x", "tier": "web"}, True),
    ({"app": "x", "tier": "db"}, False),
    ({"app": "y", "tier": "web"}, False),
    ({"tier": "web"}, False),
])
def test_selector_matches(labels, expected):
    expressions = [{"key": "tier", "operator": "In", "values": ["web", "api"]},
                   {"key": "legacy", "operator": "DoesNotExist"}]
    assert selector_matches({"app": "x"}, expressions, labels) is expected
    assert selector_matches({}, [{"key": "k", "operator": "NotIn", "values": ["b"]}], labels) is True


def test_restart_patch_is_what_kubectl_rollout_restart_sends():
    assert k8s_faults.restart_patch("2026-12-01T10:00:00Z") == {
        "spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-01T10:00:00Z"}}}}}


@pytest.mark.parametrize("workload,message", [
    ("meshprobe", "must be 'Deployment/NAME'"),
    ("DaemonSet/meshprobe", "kind must be Deployment or StatefulSet"),
    ("Deployment/Mesh_Probe", "is not a Kubernetes object name"),
])
def test_bad_workload_is_refused(tmp_path, workload, message):
    with pytest.raises(ValueError, match=message):
        K8sFaultSession(NS, str(tmp_path / "j.json"), workload, api=object())


def test_no_kubeconfig_fails_before_any_fault(tmp_path, monkeypatch):
    monkeypatch.delenv("K8S_AUTH_KUBECONFIG", raising=False)
    session = K8sFaultSession(NS, str(tmp_path / "j.json"), "Deployment/meshprobe")
    with pytest.raises(FaultError, match="no kubeconfig: set K8S_AUTH_KUBECONFIG or pass kubeconfig=PATH"):
        session.open()
    assert not os.path.exists(str(tmp_path / "j.json"))


def test_missing_namespace_or_workload_fails_at_open(tmp_path, cluster):
    with pytest.raises(FaultError, match="namespace other does not exist"):
        K8sFaultSession("other", str(tmp_path / "j.json"), "Deployment/meshprobe", api=cluster.api()).open()
    with pytest.raises(FaultError, match="Deployment/nope does not exist in namespace beam"):
        K8sFaultSession(NS, str(tmp_path / "j.json"), "Deployment/nope", api=cluster.api()).open()
    assert cluster.names("delete_namespaced_pod") == [] and cluster.names("patch_namespaced_scale") == []


# ------------------------------------------------------------------------------------------------ faults
def test_delete_pod_is_journaled_before_the_delete_and_undone_by_the_replacement(tmp_path, cluster):
    journal = str(tmp_path / "journal.json")
    seen_on_disk = []
    original = cluster.delete_namespaced_pod

    def delete(name, namespace, grace_period_seconds=None):
        seen_on_disk.append(Journal(journal).load()["faults"][-1])  # what a SIGKILL right now would leave
        return original(name, namespace, grace_period_seconds=grace_period_seconds)

    cluster.delete_namespaced_pod = delete
    with session_for(cluster, journal) as session:
        victim = session.pods()[0]
        record = session.delete_pod(victim["name"])
        assert seen_on_disk[0]["state"] == "applying" and seen_on_disk[0]["params"]["pod"] == victim["name"]
        assert seen_on_disk[0]["undo_data"]["uid"] == victim["uid"]
        assert record["state"] == "applied" and record["verification"] == {"pod_gone": True, "uid": victim["uid"]}
        assert record["detection"] == "connection_closed"
        assert cluster.names("delete_namespaced_pod")[0][2] == {"grace_period_seconds": 0}
        times = record["times"]
        assert times["issued"]["monotonic"] <= times["returned"]["monotonic"] <= times["verified"]["monotonic"]
        assert times["issued"]["utc"].endswith("Z")
        undone = session.undo(record)
        assert undone["state"] == "undone" and "workload_ready_after_s" in undone["undo_verification"]
        assert victim["name"] not in [p["name"] for p in session.pods()] and len(session.pods()) == 3
    assert not os.path.exists(journal)


def test_kill_container_execs_the_kill_script_and_waits_for_the_restart(tmp_path, cluster):
    with session_for(cluster, str(tmp_path / "journal.json")) as session:
        pod = session.pods()[1]
        record = session.kill_container(pod["name"])
        exec_call = cluster.names("exec")[0]
        assert exec_call[1] == (pod["name"], NS)
        assert exec_call[2] == {"command": ["sh", "-c", k8s_faults.KILL_BEAM_SCRIPT], "container": "meshprobe"}
        assert record["verification"]["restarted"] == "restartCount 0 -> 1"
        assert record["verification"]["exec"]["rc"] is None  # the stream broke as the container died
        assert record["mechanism"].endswith("sent: QUIT 1")


def test_kill_container_that_does_not_restart_is_not_effective(tmp_path, cluster):
    cluster_api = KubeApi(cluster, cluster, cluster, stream=lambda *a, **k: StandInStream("KILL 7\n", "", 0))
    with K8sFaultSession(NS, str(tmp_path / "journal.json"), "Deployment/meshprobe", api=cluster_api,
                         verify_timeout=0.5, ready_timeout=2.0) as session:
        with pytest.raises(FaultNotEffective, match="did not restart within"):
            session.kill_container(session.pods()[0]["name"])
        assert session.records[0]["state"] == "undone"  # undone at once (the workload is whole)


def test_partition_labels_pods_creates_policies_verifies_and_undo_removes_all(tmp_path, cluster):
    with session_for(cluster, str(tmp_path / "journal.json")) as session:
        a, b, c = [p["name"] for p in session.pods()]
        record = session.partition([a], [b], probe_ports=[4369, 9100])
        key = record["undo_data"]["label_key"]
        assert key == "beamops.io/fault-" + record["id"]
        assert sorted(cluster.state["policies"]) == ["beamops-fault-%s-a" % record["id"], "beamops-fault-%s-b" % record["id"]]
        assert cluster.state["pods"][a]["labels"][key] == "a" and cluster.state["pods"][b]["labels"][key] == "b"
        assert key not in cluster.state["pods"][c]["labels"]
        # Verified from inside the pods: before, every probe connected; after, every one across the cut fails.
        baseline = record["verification"]["baseline"]
        assert {i["outcome"] for p in baseline for i in baseline[p]} == {"connected"}
        probes = record["verification"]["probes"]
        assert sorted(probes) == [a, b] and all(len(probes[p]) == 2 for p in probes)
        assert {i["outcome"] for p in probes for i in probes[p]} == {"timeout"}
        # Only that link: the third pod still reaches both sides.
        pods = cluster.state["pods"]
        assert cluster._allowed(pods[c], pods[a]) and cluster._allowed(pods[a], pods[c])
        assert cluster._allowed(pods[c], pods[b]) and not cluster._allowed(pods[b], pods[a])
        assert record["verification"]["established"]["checked"] is False
        assert "may not cut established connections" in record["verification"]["established"]["how"]
        undone = session.undo(record)
        assert cluster.state["policies"] == {}
        assert all(key not in p["labels"] for p in cluster.state["pods"].values())
        assert {i["outcome"] for p in undone["undo_verification"]["probes"]
                for i in undone["undo_verification"]["probes"][p]} == {"connected"}
        assert undone["undo_verification"]["policies_gone"] is True


@pytest.mark.parametrize("cuts", [False, True])
def test_partition_records_whether_established_links_dropped(tmp_path, cuts):
    cluster = StandInCluster(cuts_established=cuts)

    def observer(pods_a, pods_b):
        return [[x["name"], y["name"]] for x in pods_a for y in pods_b if cluster.linked(x["name"], y["name"])]

    with session_for(cluster, str(tmp_path / "journal.json")) as session:
        a, b, _c = [p["name"] for p in session.pods()]
        record = session.partition([a], [b], observer=observer, established_window=0.6)
        established = record["verification"]["established"]
        assert established["checked"] is True and established["dropped"] is cuts
        assert established["links_at_end"] == ([] if cuts else [[a, b]])


def test_partition_refuses_to_widen_an_existing_egress_policy(tmp_path, cluster):
    cluster.state["policies"]["egress-dns-only"] = {
        "metadata": {"name": "egress-dns-only"},
        "spec": {"podSelector": {"matchLabels": {"app": "meshprobe"}}, "policyTypes": ["Egress"], "egress": []}}
    with session_for(cluster, str(tmp_path / "journal.json")) as session:
        a, b, _c = [p["name"] for p in session.pods()]
        with pytest.raises(FaultError, match="the egress NetworkPolicy egress-dns-only already selects these pods"):
            session.partition([a], [b])
        assert session.records == []
    assert cluster.names("create_namespaced_network_policy") == []


def test_partition_works_beside_the_releases_own_ingress_policy(tmp_path, cluster):
    """The kubernetes role's policy admits the members on EPMD and the distribution port (ingress only): the
    partition's egress policies cut the two groups all the same, and leave that policy alone."""
    cluster.state["policies"]["meshprobe"] = {
        "metadata": {"name": "meshprobe"},
        "spec": {"podSelector": {"matchLabels": {"app": "meshprobe"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "meshprobe"}}}]}]}}
    with session_for(cluster, str(tmp_path / "journal.json")) as session:
        a, b, c = [p["name"] for p in session.pods()]
        record = session.partition([a], [b])
        assert {i["outcome"] for p in record["verification"]["probes"].values() for i in p} == {"timeout"}
        pods = cluster.state["pods"]
        assert cluster._allowed(pods[a], pods[c]) and cluster._allowed(pods[c], pods[b])  # pylint: disable=protected-access
    assert sorted(cluster.state["policies"]) == ["meshprobe"]


def test_partition_bad_groups(tmp_path, cluster):
    with session_for(cluster, str(tmp_path / "journal.json")) as session:
        a, b, _c = [p["name"] for p in session.pods()]
        with pytest.raises(ValueError, match="in both groups"):
            session.partition([a, b], [b])
        with pytest.raises(ValueError, match="pod 'ghost' does not exist"):
            session.partition([a], ["ghost"])


def test_scale_out_and_back(tmp_path, cluster):
    with session_for(cluster, str(tmp_path / "journal.json")) as session:
        record = session.scale(add=2)
        assert cluster.names("patch_namespaced_scale")[0][1][2] == {"spec": {"replicas": 5}}
        assert record["undo_data"] == {"replicas": 3} and len(record["verification"]["pods"]) == 5
        with pytest.raises(ValueError, match="must be more than the current 5"):
            session.scale(replicas=4)
    assert cluster.names("patch_namespaced_scale")[-1][1][2] == {"spec": {"replicas": 3}}
    assert len(cluster.state["pods"]) == 3 and cluster.state["replicas"] == 3


def test_rollout_restart_patches_the_annotation_and_undo_waits_for_the_rollout(tmp_path):
    cluster = StandInCluster(kind="StatefulSet")
    with K8sFaultSession(NS, str(tmp_path / "journal.json"), "StatefulSet/meshprobe", api=cluster.api(),
                         verify_timeout=5.0, ready_timeout=5.0) as session:
        before = [p["uid"] for p in session.pods()]
        record = session.rollout_restart()
        patch = cluster.names("patch_namespaced_workload")[0][1][2]
        assert patch == k8s_faults.restart_patch(record["undo_data"]["restarted_at"])
        assert record["verification"] == {"generation": 2}
        assert not set(before) & set(p["uid"] for p in session.pods())
        assert [p["name"] for p in session.pods()] == ["meshprobe-0", "meshprobe-1", "meshprobe-2"]


# ------------------------------------------------------------------------------------------- exit paths
def test_an_exception_inside_the_session_undoes_every_fault(tmp_path, cluster):
    journal = str(tmp_path / "journal.json")
    with pytest.raises(RuntimeError, match="scenario failed"):
        with session_for(cluster, journal) as session:
            a, b, _c = [p["name"] for p in session.pods()]
            session.partition([a], [b])
            session.scale(add=1)
            assert len(Journal(journal).load()["faults"]) == 2
            raise RuntimeError("scenario failed")
    assert cluster.state["policies"] == {} and cluster.state["replicas"] == 3 and len(cluster.state["pods"]) == 3
    undo_order = [c[0] for c in cluster.calls if c[0] in ("patch_namespaced_scale", "delete_namespaced_network_policy")]
    assert undo_order[:2] == ["patch_namespaced_scale", "patch_namespaced_scale"]  # newest first: scale back first
    assert undo_order[2:] == ["delete_namespaced_network_policy"] * 2
    assert not os.path.exists(journal)


def test_a_failed_undo_keeps_the_journal_and_the_next_session_finishes_it(tmp_path, cluster):
    journal = str(tmp_path / "journal.json")
    broken = {"on": True}
    original = cluster.delete_namespaced_network_policy

    def delete(name, namespace):
        if broken["on"]:
            raise ApiException(status=500, reason="etcd is unhappy")
        return original(name, namespace)

    cluster.delete_namespaced_network_policy = delete
    session = session_for(cluster, journal)
    session.open()
    a, b, _c = [p["name"] for p in session.pods()]
    session.partition([a], [b])
    with pytest.raises(Exception) as err:
        session.close()
    assert "could not undo 1 fault(s)" in str(err.value) and "etcd is unhappy" in str(err.value)
    left = Journal(journal).load()["faults"]
    assert [r["state"] for r in left] == ["failed"]
    broken["on"] = False
    with session_for(cluster, journal) as again:
        assert [r["kind"] for r in again.recovered] == ["partition"] and again.recovered[0]["recovered"] is True
    assert cluster.state["policies"] == {}
    assert not os.path.exists(journal)


def test_a_vm_journal_is_not_undone_by_a_kubernetes_session(tmp_path, cluster):
    journal = tmp_path / "journal.json"
    journal.write_text(json.dumps({"format": "beamops.cluster fault journal", "version": 1, "target": "vm",
                                   "faults": [{"id": "1", "kind": "freeze", "state": "applied", "label": "x"}]}))
    with pytest.raises(FaultError, match="holds vm faults \\(freeze\\) that a k8s session cannot undo"):
        session_for(cluster, str(journal)).open()
    assert json.loads(journal.read_text())["faults"][0]["state"] == "applied"  # left as it was


CHILD = r'''
import os, sys, time
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
from test_faults_k8s import StandInCluster, NS
from ansible_collections.beamops.cluster.plugins.module_utils.k8s_faults import K8sFaultSession
cluster = StandInCluster(sys.argv[3])
with K8sFaultSession(NS, sys.argv[4], "Deployment/meshprobe", api=cluster.api(), verify_timeout=5.0,
                     ready_timeout=5.0) as session:
    a, b, c = [p["name"] for p in session.pods()]
    session.partition([a], [b])
    session.scale(add=2)
    print("ready", flush=True)
    time.sleep(60)
print("not reached", flush=True)
'''


def start_child(tmp_path, collections_root):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    state, journal = str(tmp_path / "cluster.json"), str(tmp_path / "journal.json")
    StandInCluster(state)
    proc = subprocess.Popen([sys.executable, str(script), collections_root, HERE, state, journal],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read()
    with open(state) as handle:
        during = json.load(handle)
    assert len(during["policies"]) == 2 and during["replicas"] == 5
    return proc, state, journal


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_of_a_run_undo_everything(tmp_path, collections_root, signum):
    proc, state, journal = start_child(tmp_path, collections_root)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "not reached" not in out
    assert ("FaultInterrupted" if signum == signal.SIGTERM else "KeyboardInterrupt") in err
    with open(state) as handle:
        after = json.load(handle)
    assert after["policies"] == {} and after["replicas"] == 3 and len(after["pods"]) == 3
    assert all(not k.startswith("beamops.io/fault-") for p in after["pods"].values() for k in p["labels"])
    assert not os.path.exists(journal)


def test_a_sigkilled_run_is_undone_by_the_next_session_before_anything_else(tmp_path, collections_root):
    proc, state, journal = start_child(tmp_path, collections_root)
    proc.kill()
    proc.wait(10)
    left = Journal(journal).load()
    assert [(r["kind"], r["state"]) for r in left["faults"]] == [("partition", "applied"), ("scale", "applied")]
    assert left["run"]["pid"] == proc.pid
    cluster = StandInCluster(state)
    with session_for(cluster, journal) as session:
        assert [r["kind"] for r in session.recovered] == ["partition", "scale"]
        assert all(r["state"] == "undone" and r["recovered"] for r in session.recovered)
        with open(state) as handle:
            after = json.load(handle)
        assert after["policies"] == {} and after["replicas"] == 3
        # Recovery came first: the scale-back and the policy deletes are the first writes of this session.
        writes = [c[0] for c in cluster.calls if c[0].startswith(("patch", "create", "delete"))]
        assert writes[0] == "patch_namespaced_scale"
        assert session.journal.load()["previous_runs"][-1]["pid"] == proc.pid
    assert not os.path.exists(journal)


# ------------------------------------------------------------------------------------ real parts
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("erl"),
                    reason="needs root, unshare and erl (a real BEAM in a PID namespace of the test's own)")
@pytest.mark.parametrize("as_pid_1", [True, False])
def test_kill_script_kills_a_real_beam_in_its_own_pid_namespace(as_pid_1):
    """The BEAM as PID 1 of its PID namespace (as in most release images) ignores SIGKILL from inside it; the
    script then sends SIGQUIT, which the BEAM answers by halting. Under a shell as PID 1 it gets SIGKILL."""
    beam = "exec erl -noshell -eval 'timer:sleep(infinity)'" if as_pid_1 else \
        "erl -noshell -eval 'timer:sleep(infinity)' & wait"
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", beam])
    try:
        def inner_pid():
            for child in os.listdir("/proc"):
                if child.isdigit():
                    try:
                        with open("/proc/%s/status" % child) as handle:
                            status = handle.read()
                    except OSError:
                        continue
                    if "\nPPid:\t%d\n" % proc.pid in status:
                        return int(child)
            return None
        deadline = time.monotonic() + 30
        init = None
        while time.monotonic() < deadline and init is None:
            init = inner_pid()
            time.sleep(0.1)
        assert init, "the namespace's PID 1 did not start"
        beam_up = False
        while time.monotonic() < deadline and not beam_up:
            ps = subprocess.run(["nsenter", "-t", str(init), "-p", "-m", "sh", "-c",
                                 "for d in /proc/[0-9]*; do read -r c < $d/comm; echo ${d#/proc/} $c; done"],
                                capture_output=True, text=True, check=False).stdout
            beam_up = " beam.smp" in ps
            time.sleep(0.2)
        assert beam_up, ps
        if as_pid_1:  # the fact the script works around
            subprocess.run(["nsenter", "-t", str(init), "-p", "-m", "sh", "-c", "kill -KILL 1"], check=True)
            time.sleep(1.0)
            assert proc.poll() is None, "SIGKILL from inside the namespace reached PID 1"
        out = subprocess.run(["nsenter", "-t", str(init), "-p", "-m", "sh", "-c", k8s_faults.KILL_BEAM_SCRIPT],
                             capture_output=True, text=True, timeout=30, check=False).stdout
        assert out.split() == (["QUIT", "1"] if as_pid_1 else ["KILL", out.split()[1]])
        if not as_pid_1:
            assert out.split()[1] != "1"
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ the real client, on the wire (loopback)
POD_JSON = {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "meshprobe-0", "namespace": NS, "uid": "u-1", "labels": {"app": "meshprobe"}},
            "spec": {"containers": [{"name": "meshprobe", "image": "meshprobe:0.1.0"}]},
            "status": {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}, {"ip": "fd00::5"}],
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "meshprobe", "image": "meshprobe:0.1.0", "imageID": "sha256:1",
                                              "ready": True, "restartCount": 2, "containerID": "containerd://c1"}]}}
SCALE_JSON = {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "meshprobe"},
              "spec": {"replicas": 3}, "status": {"replicas": 3}}
DEPLOYMENT_JSON = {"kind": "Deployment", "apiVersion": "apps/v1",
                   "metadata": {"name": "meshprobe", "namespace": NS, "generation": 4},
                   "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "meshprobe", "tier": "beam"}},
                            "template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "x"}},
                                         "spec": {"containers": [{"name": "meshprobe"}]}}},
                   "status": {"observedGeneration": 4, "replicas": 3, "readyReplicas": 2, "updatedReplicas": 3}}
STATUS_JSON = {"kind": "Status", "apiVersion": "v1", "status": "Success"}


def test_kube_api_requests_through_the_real_client_on_loopback():
    """KubeApi drives the official client; a loopback HTTP server answers like an API server and records each
    request (method, path, content type, body): patches go as strategic merge patches, a 404 means gone."""
    import http.server
    import threading
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            seen.append((self.command, self.path, self.headers.get("Content-Type"), body))
            path = self.path.split("?")[0]
            if path.endswith("/pods/gone"):
                code, reply = 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}
            elif path.endswith("/scale"):
                code, reply = 200, SCALE_JSON
            elif "/deployments/" in path:
                code, reply = 200, DEPLOYMENT_JSON
            elif path.endswith("/networkpolicies"):
                code, reply = 201, body
            elif "/networkpolicies/" in path:
                code, reply = 200, STATUS_JSON
            elif path.endswith("/pods"):
                code, reply = 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [POD_JSON]}
            else:
                code, reply = 200, POD_JSON
            data = json.dumps(reply).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_POST = do_DELETE = answer

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        configuration = k8s.Configuration()
        configuration.host = "http://127.0.0.1:%d" % server.server_port
        api_client = k8s.ApiClient(configuration)
        api = KubeApi(k8s.CoreV1Api(api_client), k8s.AppsV1Api(api_client), k8s.NetworkingV1Api(api_client))
        pods = api.list_pods(NS, "app=meshprobe")
        assert pods[0]["ips"] == ["10.244.0.5", "fd00::5"] and pods[0]["ready"] is True
        assert pods[0]["statuses"] == {"meshprobe": {"restart_count": 2, "container_id": "containerd://c1", "ready": True}}
        assert api.read_pod(NS, "gone") is None
        assert api.delete_pod(NS, "gone", 0) is False
        assert api.delete_pod(NS, "meshprobe-0", 0) is True
        assert api.patch_pod_labels(NS, "meshprobe-0", {"beamops.io/fault-1": None}) is True
        api.patch_scale(NS, "Deployment", "meshprobe", 5)
        api.patch_workload(NS, "Deployment", "meshprobe", k8s_faults.restart_patch("2026-12-01T10:00:00Z"))
        workload = api.read_workload(NS, "Deployment", "meshprobe")
        assert workload["selector"] == "app=meshprobe,tier=beam" and workload["ready"] == 2
        policy = partition_policy("beamops-fault-1-a", NS, "beamops.io/fault-1", "a", "b", ["10.244.0.6"])
        api.create_network_policy(NS, policy)
        assert api.delete_network_policy(NS, "beamops-fault-1-a") is True
    finally:
        server.shutdown()
    requests = [(m, p.split("?")[0], t, b) for m, p, t, b in seen]
    base = "/api/v1/namespaces/%s" % NS
    assert requests[0][:2] == ("GET", base + "/pods")
    assert seen[0][1].endswith("labelSelector=app%3Dmeshprobe")
    assert ("DELETE", base + "/pods/meshprobe-0") in [(m, p) for m, p, _t, _b in requests]
    assert any(p.endswith("gracePeriodSeconds=0") for m, p, _t, _b in seen if m == "DELETE" and "/pods/" in p)
    patches = [(p, t, b) for m, p, t, b in requests if m == "PATCH"]
    assert patches == [
        (base + "/pods/meshprobe-0", "application/strategic-merge-patch+json",
         {"metadata": {"labels": {"beamops.io/fault-1": None}}}),
        ("/apis/apps/v1/namespaces/%s/deployments/meshprobe/scale" % NS, "application/strategic-merge-patch+json",
         {"spec": {"replicas": 5}}),
        ("/apis/apps/v1/namespaces/%s/deployments/meshprobe" % NS, "application/strategic-merge-patch+json",
         k8s_faults.restart_patch("2026-12-01T10:00:00Z")),
    ]
    created = [b for m, p, t, b in requests if m == "POST"]
    assert created == [policy]
    assert ("DELETE", "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies/beamops-fault-1-a" % NS) in \
        [(m, p) for m, p, _t, _b in requests]
