# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The comparison runner's Kubernetes target: the same scenario loop, observer, baseline and metrics as the VM
target (``compare_runner``), with the faults of ``k8s_faults.K8sFaultSession`` and the nodes reached through
port-forwards of the API server (``k8s_portforward``), so the controller needs no route to the pod network.

Public API
==========
``run_target(target, settings, progress, work_dir) -> target result``
    Called by ``compare_runner`` for a ``KubernetesTarget``. Deploys with ``beamops.cluster.deploy_k8s`` when the
    target has ``deploy_vars``, opens the fault session (which fails, before any fault, when the kubeconfig, the
    namespace or the workload cannot be used), names each pod's node by the strategy's rule, checks that every node
    answers and the mesh is full, then runs the scenarios the API offers (``compare_runner.KUBERNETES_SCENARIOS``):
    ``crash`` (the BEAM killed in its container; the kubelet restarts it in the same pod, same address, same
    name), ``partition_full_drop`` / ``partition_partial_drop`` (two NetworkPolicies; a policy cannot reject),
    ``rolling_deploy`` (``kubectl rollout restart``; only where node names survive a pod's replacement: a
    StatefulSet with ``kubernetes_dnssrv`` names), ``latency`` and ``throughput``. The others are listed in the
    target's environment as not measured, with the reason.

There is no Kubernetes API server on the development machine: this path is exercised by the unit tests against a
stand-in of the client's API objects as far as it goes without nodes, and on a real cluster only by whoever runs
the comparison against one.
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import time

from ansible_collections.beamops.cluster.plugins.module_utils import compare_probes, erl_mesh, k8s_portforward
from ansible_collections.beamops.cluster.plugins.module_utils import compare_runner as cr
from ansible_collections.beamops.cluster.plugins.module_utils.erl_epmd import DistError
from ansible_collections.beamops.cluster.plugins.module_utils.k8s_faults import K8sFaultSession
from ansible_collections.beamops.cluster.plugins.module_utils.observer import Observer, replay

NOT_ON_KUBERNETES = {
    "cold_start": "not measured on Kubernetes: scaling to zero and back replaces every pod (new names or addresses)",
    "freeze": "not measured on Kubernetes: the API offers no SIGSTOP of a container",
    "partition_full_reject": "not measured on Kubernetes: a NetworkPolicy can only deny (the CNI drops), not reject",
    "partition_partial_reject": "not measured on Kubernetes: a NetworkPolicy can only deny (the CNI drops), not "
                                "reject",
    "scale_out": "not measured on Kubernetes by this runner yet: a new pod needs its own port-forward",
}


def stable_names(target):
    """Node names survive a pod's replacement only for a StatefulSet named through its headless Service."""
    return target.workload.split("/")[0].lower() == "statefulset" and target.strategy == "kubernetes_dnssrv"


class K8sRun(cr._VmRun):  # pylint: disable=protected-access
    """One Kubernetes target; shares the scenario loop and the metrics of the VM run."""

    def __init__(self, target, settings, progress, work_dir):  # pylint: disable=super-init-not-called
        self.target = target
        self.settings = settings
        self.progress = progress
        self.work_dir = work_dir
        self.members = []
        self.pods = {}
        self.nodes = []
        self.node_host = {}
        self.spare_node = None
        self.session = None
        self.observer = None
        self.client = None
        self.forwards = None
        self.version_index = 0
        self.ticktime = None
        self.intensity = 4
        self.log_path = os.path.join(work_dir, "deploy-%s.log" % target.name)
        self.observer_path = os.path.join(work_dir, "observer-%s.jsonl" % target.name)
        self.skipped = {}

    def member_node(self, pod):
        return self.target.node_of(self.pods[pod])

    def kill(self, member):
        return self.session.kill_container(member)

    def cut(self, side_a, side_b, action):
        return self.session.partition(side_a, side_b, probe_ports=[self.target.epmd_port, self.target.dist_port])

    def run_rolling_deploy(self, rep, index):
        record = self.session.rollout_restart()
        t_start = cr._fault_time(record, "issued")  # pylint: disable=protected-access
        record = self.session.undo(record)  # waits until the rollout is complete
        t_end = time.monotonic()
        rep.fault_events(record)
        self.wait_mesh(t_end + self.settings.timeout)
        rep.windows.append((t_start, t_end, record["label"]))
        rep.spec = {"kind": "rolling", "t_start": t_start, "t_end": t_end}

    def describe(self, name, index):
        member = self.victim(index - 1)
        other = self.members[index % len(self.members)]
        return {"crash": "kill of the BEAM in pod %s" % member,
                "partition_full_drop": "pod %s cut off from the others (NetworkPolicy)" % member,
                "partition_partial_drop": "the link %s <-> %s cut (NetworkPolicy)" % (member, other),
                "rolling_deploy": "rollout restart of %s" % self.target.workload,
                "latency": "open-loop round trips %s -> %s" % (member, other),
                "throughput": "%s sends binaries to %s" % (member, other)}[name]

    def fault_of(self, name, record):
        found = super(K8sRun, self).fault_of(name, record)
        if found and name == "rolling_deploy" and record is not None:
            found["mechanism"] = record["mechanism"]
        return found

    def mesh_report(self):
        report = erl_mesh.mesh_report(self.nodes, self.target.cookie, timeout=15.0, dial=self.forwards.dial)
        k8s_portforward.explain(report, self.forwards)
        return report

    def run(self):
        target = self.target
        if target.deploy:
            started = self.progress.begin(target.name, "deploy", "deploy_k8s of %s to namespace %s" % (
                target.release_name, target.namespace))
            variables = dict(target.deploy_vars)
            variables.update({"kubernetes_release_name": target.release_name, "kubernetes_cookie": target.cookie,
                              "kubernetes_namespace": target.namespace, "kubernetes_strategy": target.strategy,
                              "kubernetes_kubeconfig": target.kubeconfig,
                              "kubernetes_context": target.context or ""})
            cr.run_playbook("deploy_k8s", variables, self.log_path, self.settings.deploy_timeout)
            self.progress.done(target.name, "deploy", started)
        journal = os.path.join(self.settings.journal_dir, target.journal_name())
        try:
            session = K8sFaultSession(target.namespace, journal, target.workload, selector=target.selector,
                                      kubeconfig=target.kubeconfig, context=target.context)
        except ValueError as exc:
            raise cr.CompareError("%s: %s" % (target.field, exc))
        with session:
            self.session = session
            pods = [p for p in session.pods() if p.get("ip") and p.get("ready", True)]
            if len(pods) < 2:
                raise cr.CompareError("target %s: %s has %d ready pods with an address; the comparison needs 2 or more"
                                      % (target.name, target.workload, len(pods)))
            self.pods = dict((p["name"], p) for p in pods)
            self.members = sorted(self.pods)
            self.nodes = [self.member_node(m) for m in self.members]
            self.node_host = dict((self.member_node(m), m) for m in self.members)
            self.forwards = k8s_portforward.open_forwards(target.namespace, dict(
                (self.member_node(m), m) for m in self.members), target.dist_port, kubeconfig=target.kubeconfig,
                context=target.context)
            try:
                return self._measure()
            finally:
                self.forwards.close()
                self.session = None

    def _measure(self):
        target = self.target
        dial = self.forwards.dial
        report = self.mesh_report()
        if report["unreachable"] or not report["full_mesh"]:
            raise cr.CompareError("target %s: not every node answers or the mesh is not full at the start, so no "
                                  "fault was injected:\n%s" % (target.name, "\n".join(erl_mesh.diagnosis(report))))
        self.client = compare_probes.RpcClient(target.cookie, dial=dial)
        try:
            environment = self.environment()
            names = [n for n in self.settings.scenarios if n in cr.KUBERNETES_SCENARIOS]
            for name in self.settings.scenarios:
                if name in NOT_ON_KUBERNETES:
                    self.skipped[name] = NOT_ON_KUBERNETES[name]
            if "rolling_deploy" in names and not stable_names(target):
                names.remove("rolling_deploy")
                self.skipped["rolling_deploy"] = ("not measured: pods replaced by a rollout get new node names with "
                                                  "%s on a %s, which the observer cannot follow"
                                                  % (target.strategy, target.workload.split("/")[0]))
            environment["not_measured"] = "; ".join("%s: %s" % item for item in sorted(self.skipped.items())) or None
            self.observer = Observer(self.nodes, target.cookie, interval=self.settings.observer_interval,
                                     out=self.observer_path, dial=dial, tick_timeout=max(10.0, float(self.ticktime)))
            self.observer.start()
            done = []
            try:
                for name in names:
                    done.append((name, self.scenario(name)))
            finally:
                stats = self.observer.stop()
            samples = list(replay(self.observer_path))
            scenarios = [self.finish_scenario(name, reps, samples) for name, reps in done]
            lateness = stats.get("lateness_ms") or {}
            return {"name": target.name, "kind": "kubernetes", "measured": True, "reason": "",
                    "environment": environment,
                    "observer": {"interval_ms": self.settings.observer_interval * 1000,
                                 "resolution_ms": (stats.get("interval_ms") or {}).get("p99"),
                                 "jitter_p99_ms": lateness.get("p99"), "samples": stats.get("samples"),
                                 "file": os.path.basename(self.observer_path)},
                    "scenarios": scenarios}
        finally:
            self.client.close()

    def environment(self):
        target = self.target
        try:
            found = compare_probes.environment(self.client, self.nodes[0])
        except (DistError, ValueError) as exc:
            raise cr.CompareError("target %s: cannot read the runtime of %s: %s" % (target.name, self.nodes[0], exc))
        self.ticktime = found["net_ticktime_s"]
        self.intensity = found["net_tickintensity"]
        version = None
        try:
            from kubernetes import client  # pylint: disable=import-outside-toplevel
            version = client.VersionApi(self.session.api.core.api_client).get_code().git_version
        except Exception:  # pylint: disable=broad-except
            version = None  # the report then shows it as unknown
        context = ", context %s" % target.context if target.context else ""
        return {"platform": "Kubernetes: namespace %s%s" % (target.namespace, context),
                "strategy": target.strategy, "strategy_interval_ms": 5000, "otp": found["otp"],
                "release": found["release"], "net_ticktime_s": found["net_ticktime_s"],
                "net_tickintensity": found["net_tickintensity"], "nodes": len(self.nodes), "hosts": None,
                "epmdless": False, "tls": False, "kubernetes_version": version, "cni": None,
                "dns": "cluster domain %s" % target.cluster_domain, "workload": target.workload}


def run_target(target, settings, progress, work_dir):
    return K8sRun(target, settings, progress, work_dir).run()
