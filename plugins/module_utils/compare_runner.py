# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The comparison runner: the same fault scenarios on each target, K times, watched by the hidden-node observer,
written as the results of ``results-schema.md`` (schema 1) that ``compare_report.write_report`` reads.

No Ansible import: the action plugin ``beamops.cluster.compare_run``, the tests and scripts share this API.

Public API
==========
``VmTarget(name, inventory, hosts, release_name, cookie, tarballs=(), strategy="epmd", discovery=None, spare=None,
           release_vars=None, deploy=True, platform=None)``
    A cluster of VMs (or lab hosts) in an Ansible inventory: ``hosts`` are its members, ``spare`` an optional host
    outside them for the scale-out scenario. With ``deploy`` the runner first deploys ``tarballs[0]`` with
    ``beamops.cluster.deploy_vms`` (every host at once, ``release_serial=100%``, the cookie only in a 0600 vars
    file) with ``strategy``, ``discovery`` and ``release_vars`` (any other ``release_*`` role variable, e.g.
    ``release_net_ticktime``, ``release_epmdless``, ``release_tls``). A second tarball makes ``rolling_deploy`` a
    real rolling deploy between the two versions; with one it is a rolling restart (one host at a time, each
    gated on the full mesh). Without ``deploy`` the cluster is measured as it runs.
``KubernetesTarget(name, namespace, workload, release_name, cookie, strategy, kubeconfig=None, context=None,
                   selector=None, service=None, cluster_domain="cluster.local", node_basename=None,
                   epmd_port=4369, dist_port=9100, deploy_vars=None)``
    A release in a Kubernetes namespace (``workload`` ``StatefulSet/NAME`` or ``Deployment/NAME``). It needs a
    kubeconfig (``kubeconfig`` or ``$K8S_AUTH_KUBECONFIG``): without one it is refused before anything runs. With
    ``deploy_vars`` (the ``kubernetes_*`` variables) it is deployed first with ``beamops.cluster.deploy_k8s``.
``targets_from_specs(specs, release=None) -> [target]``
    Targets from plain dicts (the action plugin's ``targets`` option): ``kind`` ``vm`` or ``kubernetes`` and the
    arguments above; ``release`` (``name``, ``cookie``, ``src``, ``upgrade_src``, ``vars``) fills in what VM
    targets leave out. Bad input raises ``CompareError`` naming the field (``targets[1].strategy``) and the fix.
``Settings(scenarios=None, repetitions=None, short=False, timeout=60, observer_interval=0.1, work_dir=None,
           journal_dir=None, ...)``
    What to run: ``SCENARIOS`` by default, ``SHORT_SCENARIOS`` with ``short`` (K=3, shorter holds and latency
    runs); K ``repetitions`` (default 5); ``timeout`` seconds for a heal, a join or a full mesh (a run that does not
    make it is censored "> timeout", never dropped); the observer's interval; ``work_dir`` for the observer's
    files and deploy logs; ``journal_dir`` for the fault journals (one per host set, kept across runs so that a
    run killed outright is undone by the next one). Bad input raises ``CompareError``.
``check_targets(targets, settings)``
    Every check that needs no host (files, names, kubeconfig, scenario names): run before anything is deployed.
``run_comparison(targets, settings, progress=None) -> results``
    Every target in turn: deploy, check that every node answers and the mesh is full (else ``CompareError`` before
    any fault), start the observer (exempt from every fault: the partitions cut peer addresses only), then every
    scenario K times, restoring and timing the baseline (full mesh, every node up, no fault, no extra node) before
    each repetition and rotating the victim. Without a Kubernetes target the results carry one that is not
    measured ("not measured: no cluster configured"). ``progress(line)`` gets one line per deploy, scenario and
    repetition with what runs and an estimate of the time left.
``run_scenario(target, name, repetitions=None, settings=None, progress=None) -> target result``
    One scenario for one target: the target's entry of ``results["targets"]`` with that one scenario.
``CompareError``: bad input or a target that cannot be measured (nothing was left in force).

Every fault goes through ``compare_faults.CompareFaultSession`` (``faults.VmFaultSession`` plus node stops and the
spare), journaled before it is applied and undone on every exit path (normal end, error, Ctrl-C, SIGTERM); a run
killed outright is undone by the next run on the same hosts. After a run no rule, stopped or frozen node and no
extra node is left; the spare host is left as it was found.
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import json
import os
import platform as platform_mod
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

from ansible_collections.beamops.cluster.plugins.module_utils import compare_metrics as cm
from ansible_collections.beamops.cluster.plugins.module_utils import compare_probes, compare_stats, erl_dist, erl_mesh
from ansible_collections.beamops.cluster.plugins.module_utils import faults, topology
from ansible_collections.beamops.cluster.plugins.module_utils.compare_faults import CompareFaultSession
from ansible_collections.beamops.cluster.plugins.module_utils.erl_epmd import DistError
from ansible_collections.beamops.cluster.plugins.module_utils.erl_term import Atom
from ansible_collections.beamops.cluster.plugins.module_utils.observer import Observer, replay

TOOL = {"name": "beamops.cluster", "version": "0.1.0"}
SCHEMA = 1
SCENARIOS = ("cold_start", "crash", "freeze", "partition_full_drop", "partition_full_reject", "partition_partial_drop",
             "partition_partial_reject", "rolling_deploy", "scale_out", "latency", "throughput")
SHORT_SCENARIOS = ("crash", "partition_full_reject", "rolling_deploy", "latency")
# What the Kubernetes API offers: no SIGSTOP, and a NetworkPolicy cannot reject; cold start and scale-out change
# pod names and addresses, which the observer follows only for names that stay (see KubernetesTarget).
KUBERNETES_SCENARIOS = ("crash", "partition_full_drop", "partition_partial_drop", "rolling_deploy", "latency",
                        "throughput")
KUBERNETES_NOT_CONFIGURED = "not measured: no cluster configured"
LAB_PLATFORM = "lab: systemd-nspawn hosts on one machine (not Kubernetes), sharing one kernel and its CPUs"
DEFAULT_REPETITIONS = 5
SHORT_REPETITIONS = 3
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
APP_PATTERN = faults.APP_PATTERN
# Role variables the runner sets itself (or takes as the target's own arguments).
RUNNER_VARS = ("release_name", "release_cookie", "release_src", "release_url", "release_target", "release_serial",
               "release_strategy", "release_discovery", "release_cluster_hosts")

SCENARIO_FAULTS = {
    "cold_start": ("stop_all", "systemctl stop of every node, then systemctl start of all of them at once",
                   "every node down, then each joins"),
    "crash": ("kill9", None, faults.DETECTION_TEXT[faults.DETECT_CLOSED]),
    "freeze": ("freeze", None, faults.DETECTION_TEXT[faults.DETECT_TICKS]),
    "partition_full_drop": ("partition", None, faults.DETECTION_TEXT[faults.DETECT_TICKS]),
    "partition_full_reject": ("partition", None, "connection reset at the first packet (at the latest the next tick)"),
    "partition_partial_drop": ("partition", None, faults.DETECTION_TEXT[faults.DETECT_TICKS]),
    "partition_partial_reject": ("partition", None, "connection reset at the first packet (at the latest the next "
                                                    "tick)"),
    "rolling_deploy": ("rolling", None, "each restarted node closes its connections"),
    "scale_out": ("scale_out", "systemctl start of the node on a spare host outside the members", "a new node joins"),
}

METRICS_META = {
    "detection_ms": {"title": "time until every peer noticed", "unit": "ms", "lower_is_better": True},
    "detection_per_peer_ms": {"title": "time until each peer noticed", "unit": "ms"},
    "detection_per_side_ms": {"title": "time until each side noticed", "unit": "ms"},
    "heal_ms": {"title": "time until the mesh was whole again", "unit": "ms", "lower_is_better": True},
    "heals_by_itself": {"title": "healed without help", "unit": "bool"},
    "full_mesh_ms": {"title": "first node started to full mesh", "unit": "ms", "lower_is_better": True},
    "join_per_node_ms": {"title": "time until each node was linked to all others", "unit": "ms"},
    "join_ms": {"title": "time for the new node to join every member", "unit": "ms", "lower_is_better": True},
    "not_full_ms": {"title": "total time the mesh was not full", "unit": "ms", "lower_is_better": True},
    "fewest_members": {"title": "fewest nodes in the largest group", "unit": "count", "lower_is_better": False},
    "rollout_ms": {"title": "duration of the rollout", "unit": "ms", "lower_is_better": True},
    "held_ms": {"title": "how long the fault was held", "unit": "ms", "panel": False},
    "rtt_p50_ms": {"title": "round trip p50", "unit": "ms", "lower_is_better": True},
    "rtt_p95_ms": {"title": "round trip p95", "unit": "ms", "lower_is_better": True},
    "rtt_p99_ms": {"title": "round trip p99", "unit": "ms", "lower_is_better": True},
    "rtt_max_ms": {"title": "round trip max", "unit": "ms", "lower_is_better": True},
    "throughput_mib_s": {"title": "throughput, one link", "unit": "MiB/s", "lower_is_better": False},
}


class CompareError(Exception):
    """Bad input, or a target that cannot be measured; the message names the field or the node and the fix."""


def _utc():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ------------------------------------------------------------------------------------------------- settings
class Settings:
    """What to run and how; see the module docstring."""

    def __init__(self, scenarios=None, repetitions=None, short=False, timeout=60, observer_interval=0.1,
                 work_dir=None, journal_dir=None, latency_rate_hz=200, latency_seconds=None, throughput_seconds=None,
                 message_bytes=1048576, throughput_workers=2, call_timeout_ms=1000, deploy_timeout=1800):
        if not isinstance(short, bool):
            raise CompareError("short must be true or false, not %r" % (short,))
        self.short = short
        if scenarios is None:
            scenarios = list(SHORT_SCENARIOS if short else SCENARIOS)
        if isinstance(scenarios, str) or not isinstance(scenarios, (list, tuple)) or not scenarios:
            raise CompareError("scenarios must be a non-empty list of scenario names; known: %s" % ", ".join(SCENARIOS))
        unknown = [s for s in scenarios if s not in SCENARIOS]
        if unknown:
            raise CompareError("scenarios: unknown scenario %s; known: %s" % (
                ", ".join(repr(s) for s in unknown), ", ".join(SCENARIOS)))
        # Run in the documented order whatever order they were given in; each once.
        self.scenarios = [s for s in SCENARIOS if s in scenarios]
        if repetitions is None:
            repetitions = SHORT_REPETITIONS if short else DEFAULT_REPETITIONS
        if not _is_int(repetitions) or not 1 <= repetitions <= 1000:
            raise CompareError("repetitions must be a whole number from 1 to 1000 (K runs of each scenario), not %r"
                               % (repetitions,))
        self.repetitions = repetitions
        for field, value, low, high in (("timeout", timeout, 5, 3600), ("observer_interval", observer_interval, 0.01, 5),
                                        ("latency_rate_hz", latency_rate_hz, 1, 5000),
                                        ("call_timeout_ms", call_timeout_ms, 10, 60000),
                                        ("deploy_timeout", deploy_timeout, 60, 86400)):
            if not _is_number(value) or not low <= value <= high:
                raise CompareError("%s must be a number from %s to %s, not %r" % (field, low, high, value))
        self.timeout = float(timeout)
        self.observer_interval = float(observer_interval)
        self.latency_rate_hz = float(latency_rate_hz)
        self.latency_seconds = float(latency_seconds if latency_seconds is not None else (3 if short else 10))
        self.throughput_seconds = float(throughput_seconds if throughput_seconds is not None else (2 if short else 5))
        for field, value in (("latency_seconds", self.latency_seconds), ("throughput_seconds", self.throughput_seconds)):
            if not 0.5 <= value <= 600:
                raise CompareError("%s must be from 0.5 to 600 s, not %r" % (field, value))
        if not _is_int(message_bytes) or not 1 <= message_bytes <= 64 * 1048576:
            raise CompareError("message_bytes must be a whole number of bytes from 1 to 64 MiB, not %r" % (message_bytes,))
        if not _is_int(throughput_workers) or not 1 <= throughput_workers <= 64:
            raise CompareError("throughput_workers must be a whole number from 1 to 64, not %r" % (throughput_workers,))
        self.message_bytes = message_bytes
        self.throughput_workers = throughput_workers
        self.call_timeout_ms = float(call_timeout_ms)
        self.deploy_timeout = float(deploy_timeout)
        self.work_dir = work_dir
        if journal_dir is None:
            journal_dir = "/var/lib/beamops/faults" if os.geteuid() == 0 else os.path.expanduser(
                "~/.local/state/beamops/faults")
        self.journal_dir = journal_dir

    def as_results(self):
        return {"repetitions": self.repetitions, "short": self.short, "observer_interval_ms": self.observer_interval * 1000,
                "scenario_timeout_s": self.timeout, "scenarios": list(self.scenarios),
                "latency": {"rate_hz": self.latency_rate_hz, "seconds": self.latency_seconds,
                            "call_timeout_ms": self.call_timeout_ms},
                "throughput": {"seconds": self.throughput_seconds, "message_bytes": self.message_bytes,
                               "workers": self.throughput_workers}}


# -------------------------------------------------------------------------------------------------- targets
def _check_name(name, field):
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise CompareError("%s must be 1-63 letters, digits, '.', '_' or '-' (a column header), not %r" % (field, name))
    return name


def _check_app(name, field):
    if not isinstance(name, str) or not APP_PATTERN.match(name):
        raise CompareError("%s must be the release name (bin/NAME, unit NAME.service), not %r" % (field, name))
    return name


def _check_cookie(cookie, field):
    if not isinstance(cookie, str) or not cookie.strip():
        raise CompareError("%s is empty: give the cluster's Erlang cookie (keep it in Ansible Vault)" % field)
    return cookie


class VmTarget:
    """See the module docstring."""

    kind = "vm"

    def __init__(self, name, inventory, hosts, release_name, cookie, tarballs=(), strategy="epmd", discovery=None,
                 spare=None, release_vars=None, deploy=True, platform=None, field="target"):
        self.field = field
        self.name = _check_name(name, field + ".name")
        self.release_name = _check_app(release_name, field + ".release_name")
        self.cookie = _check_cookie(cookie, field + ".cookie")
        if not isinstance(deploy, bool):
            raise CompareError("%s.deploy must be true or false" % field)
        self.deploy = deploy
        if strategy not in topology.VM_STRATEGIES:
            raise CompareError("%s.strategy is %r; a VM target uses one of %s"
                               % (field, strategy, ", ".join(topology.VM_STRATEGIES)))
        self.strategy = strategy
        if discovery is None:
            discovery = {}
        if not isinstance(discovery, dict):
            raise CompareError("%s.discovery must be a dict of the strategy's options (release_discovery)" % field)
        if strategy == "dnspoll" and not discovery.get("query"):
            raise CompareError("%s.discovery.query: dnspoll needs the DNS name whose A records list the members "
                               "(for the lab: its lab_dns_name, e.g. beamlab.lab.test)" % field)
        self.discovery = dict(discovery)
        if release_vars is None:
            release_vars = {}
        if not isinstance(release_vars, dict):
            raise CompareError("%s.release_vars must be a dict of release_* role variables" % field)
        for key in release_vars:
            if not isinstance(key, str) or not key.startswith("release_"):
                raise CompareError("%s.release_vars.%s: only release_* role variables belong here" % (field, key))
            if key in RUNNER_VARS:
                raise CompareError("%s.release_vars.%s is set by the runner: give it as the target's %s instead"
                                   % (field, key, {"release_name": "release_name", "release_cookie": "cookie",
                                                   "release_src": "tarballs", "release_strategy": "strategy",
                                                   "release_discovery": "discovery"}.get(key, "hosts or spare")))
        self.release_vars = dict(release_vars)
        if isinstance(tarballs, str):
            tarballs = [tarballs]
        tarballs = [t for t in (tarballs or []) if t]
        if len(tarballs) > 2:
            raise CompareError("%s.tarballs: give one tarball, or two for a rolling deploy between versions" % field)
        for index, path in enumerate(tarballs):
            if not isinstance(path, str) or not os.path.isfile(path):
                raise CompareError("%s.tarballs[%d]: %r is not a file on the controller" % (field, index, path))
        if deploy and not tarballs:
            raise CompareError("%s.tarballs: deploy is on, so the release tarball is needed (release src)" % field)
        self.tarballs = [os.path.abspath(t) for t in tarballs]
        if not isinstance(inventory, str) or not os.path.isfile(inventory):
            raise CompareError("%s.inventory: %r is not a readable inventory file" % (field, inventory))
        self.inventory = os.path.abspath(inventory)
        try:
            known = faults.read_inventory(self.inventory)
        except (ValueError, faults.FaultError) as exc:
            raise CompareError("%s.inventory: %s" % (field, exc))
        if isinstance(hosts, str):
            hosts = [hosts]
        if not isinstance(hosts, (list, tuple)) or len(hosts) < 2:
            raise CompareError("%s.hosts must list at least 2 inventory hosts (the cluster's members)" % field)
        missing = [h for h in list(hosts) + ([spare] if spare else []) if h not in known]
        if missing:
            raise CompareError("%s: %s not in the inventory %s (hosts there: %s)" % (
                field, ", ".join(missing), self.inventory, ", ".join(sorted(known))))
        if len(set(hosts)) != len(hosts):
            raise CompareError("%s.hosts lists a host twice" % field)
        if spare and spare in hosts:
            raise CompareError("%s.spare %s is also a member: the spare must be a host outside the cluster" % (field, spare))
        self.hosts = list(hosts)
        self.spare = spare or None
        self.specs = dict((h, known[h]) for h in self.hosts)
        self.spare_specs = {self.spare: known[self.spare]} if self.spare else {}
        self.platform = platform
        self.basename = self.release_vars.get("release_node_basename") or self.release_name
        self.node_host = self.release_vars.get("release_node_host", "address")
        self.epmdless = bool(self.release_vars.get("release_epmdless", False))
        self.dist_port = int(self.release_vars.get("release_dist_port_min", 9100))
        self.epmd_port = int(self.release_vars.get("release_epmd_port", 4369))
        self.tls = None
        if self.release_vars.get("release_tls"):
            ca = self.release_vars.get("release_tls_ca_src")
            cert = self.release_vars.get("release_tls_verifier_cert") or self.release_vars.get("release_tls_cert_src")
            key = self.release_vars.get("release_tls_verifier_key") or self.release_vars.get("release_tls_key_src")
            for what, path in (("release_tls_ca_src", ca), ("release_tls_verifier_cert", cert),
                               ("release_tls_verifier_key", key)):
                if not path or not os.path.isfile(path) or "{{" in path:
                    raise CompareError("%s.release_vars.%s: with release_tls the runner connects over TLS and needs "
                                       "this file on the controller (a plain path, not a template)" % (field, what))
            self.tls = erl_dist.TlsOptions(ca_file=ca, cert_file=cert, key_file=key)

    def node_of(self, host):
        spec = self.specs.get(host) or self.spare_specs[host]
        return "%s@%s" % (self.basename, host if self.node_host == "fqdn" else spec["address"])

    @property
    def nodes(self):
        return [self.node_of(h) for h in self.hosts]

    def address(self, host):
        return (self.specs.get(host) or self.spare_specs[host])["address"]

    def is_lab(self):
        return "/beamops/lab/" in self.inventory

    def journal_name(self):
        key = "|".join(sorted(self.address(h) for h in self.hosts + ([self.spare] if self.spare else [])))
        return "compare-%s-%s.json" % (self.release_name, hashlib.sha256(key.encode()).hexdigest()[:12])


class KubernetesTarget:
    """See the module docstring."""

    kind = "kubernetes"
    # What the shared scenario loop asks of every target: no tarballs (a rollout restart instead), plain TCP.
    tarballs = ()
    epmdless = False
    tls = None

    def __init__(self, name, namespace, workload, release_name, cookie, strategy, kubeconfig=None, context=None,
                 selector=None, service=None, cluster_domain="cluster.local", node_basename=None, epmd_port=4369,
                 dist_port=9100, deploy_vars=None, field="target"):
        self.field = field
        self.name = _check_name(name, field + ".name")
        kubeconfig = kubeconfig or os.environ.get("K8S_AUTH_KUBECONFIG")
        if not kubeconfig:
            raise CompareError("%s: a Kubernetes target needs a kubeconfig: set %s.kubeconfig or K8S_AUTH_KUBECONFIG "
                               "to the file that names the cluster (without one there is no cluster to measure, and "
                               "the report says \"%s\")" % (field, field, KUBERNETES_NOT_CONFIGURED))
        kubeconfig = os.path.expanduser(kubeconfig)
        if not os.path.isfile(kubeconfig):
            raise CompareError("%s.kubeconfig: %r is not a file on the controller" % (field, kubeconfig))
        self.kubeconfig = kubeconfig
        self.context = context or None
        if not isinstance(namespace, str) or not namespace:
            raise CompareError("%s.namespace must name the namespace the release runs in" % field)
        self.namespace = namespace
        if not isinstance(workload, str) or "/" not in workload or workload.split("/")[0].lower() not in (
                "statefulset", "deployment"):
            raise CompareError("%s.workload must be StatefulSet/NAME or Deployment/NAME, not %r" % (field, workload))
        self.workload = workload
        self.release_name = _check_app(release_name, field + ".release_name")
        self.cookie = _check_cookie(cookie, field + ".cookie")
        if strategy not in topology.KUBERNETES_STRATEGIES:
            raise CompareError("%s.strategy is %r; a Kubernetes target uses one of %s" % (
                field, strategy, ", ".join(topology.KUBERNETES_STRATEGIES)))
        if strategy == "kubernetes_dnssrv" and not service:
            raise CompareError("%s.service: kubernetes_dnssrv names nodes after the headless Service (pod.SERVICE."
                               "NAMESPACE.svc.DOMAIN); give its name" % field)
        self.strategy = strategy
        self.selector = selector
        self.service = service
        self.cluster_domain = cluster_domain
        self.basename = node_basename or release_name
        self.epmd_port = int(epmd_port)
        self.dist_port = int(dist_port)
        if deploy_vars is not None and not isinstance(deploy_vars, dict):
            raise CompareError("%s.deploy_vars must be a dict of kubernetes_* role variables" % field)
        self.deploy_vars = deploy_vars
        self.deploy = bool(deploy_vars)

    def node_of(self, pod):
        """The node name a pod runs as under this strategy (topology.py's naming rules)."""
        if self.strategy == "kubernetes_dnssrv":
            return "%s@%s.%s.%s.svc.%s" % (
                self.basename, pod["name"], self.service, self.namespace, self.cluster_domain)
        return "%s@%s" % (self.basename, pod["ip"])

    def journal_name(self):
        key = "%s|%s|%s|%s" % (self.kubeconfig, self.context, self.namespace, self.workload)
        return "compare-k8s-%s.json" % hashlib.sha256(key.encode()).hexdigest()[:12]


VM_SPEC_KEYS = ("kind", "name", "inventory", "hosts", "spare", "strategy", "discovery", "release_vars", "tarballs",
                "deploy", "platform", "release_name", "cookie")
K8S_SPEC_KEYS = ("kind", "name", "namespace", "workload", "strategy", "kubeconfig", "context", "selector", "service",
                 "cluster_domain", "node_basename", "epmd_port", "dist_port", "deploy_vars", "release_name", "cookie")


def targets_from_specs(specs, release=None):
    """Targets from the action plugin's ``targets`` list; see the module docstring."""
    release = release or {}
    if not isinstance(specs, list) or not specs:
        raise CompareError("targets must be a non-empty list of targets, each with kind vm or kubernetes")
    result, names = [], set()
    for index, spec in enumerate(specs):
        field = "targets[%d]" % index
        if not isinstance(spec, dict):
            raise CompareError("%s must be a dict with kind (vm or kubernetes) and its settings" % field)
        kind = spec.get("kind")
        if kind not in ("vm", "kubernetes"):
            raise CompareError("%s.kind is %r; use vm (hosts of an inventory) or kubernetes (a cluster a kubeconfig "
                               "names)" % (field, kind))
        allowed = VM_SPEC_KEYS if kind == "vm" else K8S_SPEC_KEYS
        unknown = sorted(set(spec) - set(allowed))
        if unknown:
            raise CompareError("%s has unknown key(s) %s; a %s target takes %s" % (
                field, ", ".join(unknown), kind, ", ".join(allowed)))
        release_name = spec.get("release_name") or release.get("name")
        cookie = spec.get("cookie") or release.get("cookie")
        if kind == "vm":
            tarballs = spec.get("tarballs")
            if tarballs is None:
                tarballs = [t for t in (release.get("src"), release.get("upgrade_src")) if t]
            release_vars = dict(release.get("vars") or {})
            release_vars.update(spec.get("release_vars") or {})
            target = VmTarget(spec.get("name") or "vm-%s" % spec.get("strategy", "epmd"), spec.get("inventory"),
                              spec.get("hosts"), release_name, cookie, tarballs=tarballs,
                              strategy=spec.get("strategy", "epmd"), discovery=spec.get("discovery"),
                              spare=spec.get("spare"), release_vars=release_vars, deploy=spec.get("deploy", True),
                              platform=spec.get("platform"), field=field)
        else:
            target = KubernetesTarget(spec.get("name") or "kubernetes", spec.get("namespace"), spec.get("workload"),
                                      release_name, cookie, spec.get("strategy"), kubeconfig=spec.get("kubeconfig"),
                                      context=spec.get("context"), selector=spec.get("selector"),
                                      service=spec.get("service"),
                                      cluster_domain=spec.get("cluster_domain") or "cluster.local",
                                      node_basename=spec.get("node_basename"), epmd_port=spec.get("epmd_port") or 4369,
                                      dist_port=spec.get("dist_port") or 9100, deploy_vars=spec.get("deploy_vars"),
                                      field=field)
        if target.name in names:
            raise CompareError("%s.name %r is used twice: target names must be unique" % (field, target.name))
        names.add(target.name)
        result.append(target)
    return result


def check_targets(targets, settings):
    """Checks that need no host, before anything is deployed; raises CompareError."""
    if not targets:
        raise CompareError("targets: give at least one target")
    for target in targets:
        if not isinstance(target, (VmTarget, KubernetesTarget)):
            raise CompareError("targets: %r is neither a VmTarget nor a KubernetesTarget" % (target,))
        if target.kind == "vm" and "scale_out" in settings.scenarios and not target.spare:
            raise CompareError("%s.spare: the scale_out scenario needs a spare host outside the members (for the lab: "
                               "its last host), or leave scale_out out of scenarios" % target.field)
        if target.kind == "vm" and "scale_out" in settings.scenarios and not target.deploy:
            raise CompareError("%s.deploy: scale_out deploys the release to the spare with the target's settings, "
                               "so it needs deploy true (and the tarball)" % target.field)
    if not os.path.isdir(settings.journal_dir):
        try:
            os.makedirs(settings.journal_dir, 0o700)
        except OSError as exc:
            raise CompareError("journal_dir %s cannot be made: %s" % (settings.journal_dir, exc))


# ----------------------------------------------------------------------------------------- subprocess deploys
def _collections_root():
    """The folder holding ``ansible_collections`` this file was loaded from, for a child ansible-playbook."""
    here = os.path.abspath(__file__)
    marker = os.sep + "ansible_collections" + os.sep
    if marker in here:
        return here[:here.index(marker)]
    return None


def _ansible_playbook():
    beside = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    found = beside if os.access(beside, os.X_OK) else shutil.which("ansible-playbook")
    if not found:
        raise CompareError("ansible-playbook is not on PATH: the runner deploys with it")
    return found


def run_playbook(playbook, variables, log_path, timeout, inventory=None):
    """``ansible-playbook beamops.cluster.PLAYBOOK`` with ``variables`` in a 0600 vars file (so a cookie never
    shows on a command line); output to ``log_path`` (0600). Returns the output's last 4000 characters; raises
    CompareError when it fails. A signal or error meanwhile stops the child (SIGTERM, then SIGKILL)."""
    folder = tempfile.mkdtemp(prefix="beamops-compare-")
    try:
        vars_path = os.path.join(folder, "vars.json")
        fd = os.open(vars_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(variables, handle)
        cmd = [_ansible_playbook()] + (["-i", inventory] if inventory else []) + [
            "beamops.cluster." + playbook, "-e", "@" + vars_path]
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
        root = _collections_root()
        if root:
            paths = [p for p in env.get("ANSIBLE_COLLECTIONS_PATH", env.get("ANSIBLE_COLLECTIONS_PATHS", "")).split(":") if p]
            env["ANSIBLE_COLLECTIONS_PATH"] = ":".join([root] + [p for p in paths if p != root])
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(log_fd, "ab") as log:
            log.write(("\n$ %s\n" % " ".join(cmd)).encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                rc = proc.wait(timeout)
            except BaseException:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                raise
        with open(log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 4000))
            tail = handle.read().decode("utf-8", "replace")
        if rc != 0:
            raise CompareError("%s failed (exit %d); the end of its output (all of it in %s):\n%s" % (
                playbook, rc, log_path, tail))
        return tail
    except subprocess.TimeoutExpired:
        raise CompareError("%s did not finish within %.0f s (log: %s)" % (playbook, timeout, log_path))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- progress
class _Progress:
    """Lines for the progress callback, with an estimate of what is left (priors until something was timed)."""

    def __init__(self, callback, settings, targets):
        self.callback = callback
        self.settings = settings
        self.started = time.monotonic()
        self.timed = {}  # scenario (or "deploy") -> [seconds]
        self.todo = []
        for target in targets:
            if getattr(target, "deploy", False):
                self.todo.append((target.name, "deploy"))
            for name in settings.scenarios:
                if target.kind == "kubernetes" and name not in KUBERNETES_SCENARIOS:
                    continue
                self.todo.extend([(target.name, name)] * settings.repetitions)
        self.ticktime = max([int(getattr(t, "release_vars", {}).get("release_net_ticktime", 60)) for t in targets] + [0])

    def prior(self, name):
        tick_high = self.ticktime * 1.25
        return {"deploy": 90.0, "cold_start": 25.0, "crash": 12.0, "freeze": tick_high + 10,
                "partition_full_drop": tick_high + 12, "partition_partial_drop": tick_high + 12,
                "partition_full_reject": 12.0, "partition_partial_reject": 12.0, "rolling_deploy": 50.0,
                "scale_out": 20.0, "latency": self.settings.latency_seconds + 4,
                "throughput": self.settings.throughput_seconds + 4}.get(name, 20.0)

    def estimate(self, name):
        times = self.timed.get(name)
        return sum(times) / len(times) if times else self.prior(name)

    def left(self):
        return sum(self.estimate(name) for _target, name in self.todo)

    def begin(self, target, name, text):
        if self.callback:
            left = self.left()
            self.callback("[%s] %s; about %s left (%s elapsed)" % (target, text, _duration(left),
                                                                   _duration(time.monotonic() - self.started)))
        return time.monotonic()

    def done(self, target, name, started):
        self.timed.setdefault(name, []).append(time.monotonic() - started)
        if (target, name) in self.todo:
            self.todo.remove((target, name))

    def say(self, target, text):
        if self.callback:
            self.callback("[%s] %s" % (target, text))


def _duration(seconds):
    seconds = int(round(seconds))
    if seconds < 60:
        return "%d s" % seconds
    if seconds < 3600:
        return "%d min %02d s" % (seconds // 60, seconds % 60)
    return "%d h %02d min" % (seconds // 3600, seconds % 3600 // 60)


# ---------------------------------------------------------------------------------------------- the VM run
class _Repetition:
    """What one repetition did, on the controller's monotonic clock; metrics come from the samples after."""

    def __init__(self, index, baseline_ms):
        self.index = index
        self.baseline_ms = baseline_ms
        self.t0 = time.monotonic()
        self.t_end = None
        self.events = []
        self.windows = []
        self.spec = {}
        self.metrics = {}
        self.samples = None

    def event(self, what, at=None):
        self.events.append((time.monotonic() if at is None else at, what))

    def fault_events(self, record, prefix=""):
        times = record.get("times", {})
        for key, text in (("issued", "fault issued"), ("returned", "fault command returned"),
                          ("effective", "fault effective"), ("verified", "fault verified"),
                          ("undo_issued", "undo issued"), ("undo_returned", "undo command returned"),
                          ("undo_verified", "undo verified")):
            if key in times:
                self.event("%s%s: %s" % (prefix, text, record["label"]), times[key]["monotonic"])

    def as_result(self):
        def rel(value):
            return None if value is None else round(value - self.t0, 3)
        result = {"index": self.index, "baseline_ms": self.baseline_ms,
                  "healed": self.spec.get("healed", True),
                  "metrics": self.metrics,
                  "fault_windows": [{"start": rel(s), "end": rel(e), "label": label} for s, e, label in self.windows],
                  "timeline": self.spec.get("timeline"),
                  "events": [{"t": rel(t), "what": what} for t, what in sorted(self.events, key=lambda e: e[0])]}
        if self.samples is not None:
            result["samples"] = self.samples
        return result


def _fault_time(record, key):
    stamp = record.get("times", {}).get(key)
    return stamp["monotonic"] if stamp else None


class _VmRun:
    """One VM target: deploy, observe, every scenario, results; everything undone on the way out."""

    def __init__(self, target, settings, progress, work_dir):
        self.target = target
        self.settings = settings
        self.progress = progress
        self.work_dir = work_dir
        # Members are hosts here, pods on Kubernetes (compare_k8s): the scenarios only name them and their nodes.
        self.members = list(target.hosts)
        self.member_node = target.node_of
        self.nodes = target.nodes
        self.node_host = dict((target.node_of(h), h) for h in target.hosts)
        self.spare_node = target.node_of(target.spare) if target.spare else None
        self.session = None
        self.observer = None
        self.client = None
        self.version_index = 0
        self.spare_ready = False
        self.ticktime = None
        self.intensity = 4
        self.log_path = os.path.join(work_dir, "deploy-%s.log" % target.name)
        self.observer_path = os.path.join(work_dir, "observer-%s.jsonl" % target.name)

    # ---- deploy
    def deploy_vars(self, tarball, hosts, cluster_hosts=None, serial="100%"):
        target = self.target
        variables = dict(target.release_vars)
        variables.update({"release_name": target.release_name, "release_cookie": target.cookie, "release_src": tarball,
                          "release_strategy": target.strategy, "release_discovery": target.discovery,
                          "release_target": ":".join(hosts), "release_serial": serial,
                          "release_cluster_hosts": list(cluster_hosts or target.hosts)})
        if target.spare and "scale_out" in self.settings.scenarios:
            allow = list(variables.get("release_firewall_allow") or [])
            if target.address(target.spare) not in allow:
                allow.append(target.address(target.spare))
            variables["release_firewall_allow"] = allow
        return variables

    def deploy(self, tarball, serial="100%", force=False):
        variables = self.deploy_vars(tarball, self.target.hosts, serial=serial)
        if force:
            variables["release_force"] = True
        run_playbook("deploy_vms", variables, self.log_path, self.settings.deploy_timeout, inventory=self.target.inventory)

    # ---- the run
    def run(self):
        target = self.target
        if target.deploy:
            started = self.progress.begin(target.name, "deploy", "deploy of %s (%s) with strategy %s to %d hosts, "
                                          "every host at once (release_serial=100%%)" % (
                                              target.release_name, os.path.basename(target.tarballs[0]),
                                              target.strategy, len(target.hosts)))
            self.deploy(target.tarballs[0])
            self.progress.done(target.name, "deploy", started)
        self.client = compare_probes.RpcClient(target.cookie, epmd_port=target.epmd_port,
                                               dist_port=target.dist_port if target.epmdless else None, tls=target.tls)
        try:
            self.check_reachable()
            environment = self.environment()
            journal = os.path.join(self.settings.journal_dir, target.journal_name())
            scenarios = []
            with CompareFaultSession(target.specs, journal, app=target.release_name,
                                     extra_hosts=target.spare_specs) as session:
                self.session = session
                if session.recovered or session.swept:
                    self.progress.say(target.name, "undid what an earlier run left: %s" % "; ".join(
                        [r["label"] for r in session.recovered] + ["table %(table)s on %(host)s" % s for s in session.swept]))
                self.observer = Observer(self.nodes, target.cookie, interval=self.settings.observer_interval,
                                         out=self.observer_path, epmd_port=target.epmd_port,
                                         dist_port=target.dist_port if target.epmdless else None, tls=target.tls,
                                         tick_timeout=max(10.0, float(self.ticktime or 60)))
                self.observer.start()
                try:
                    done = []
                    for name in self.settings.scenarios:
                        reps = self.scenario(name)
                        done.append((name, reps))
                finally:
                    stats = self.observer.stop()
                    self.session = None
            samples = list(replay(self.observer_path))
            for name, reps in done:
                scenarios.append(self.finish_scenario(name, reps, samples))
            lateness = stats.get("lateness_ms") or {}
            interval = stats.get("interval_ms") or {}
            return {"name": target.name, "kind": "vm", "measured": True, "reason": "",
                    "environment": environment,
                    "observer": {"interval_ms": self.settings.observer_interval * 1000,
                                 "resolution_ms": interval.get("p99") or self.settings.observer_interval * 1000,
                                 "jitter_p99_ms": lateness.get("p99"), "samples": stats.get("samples"),
                                 "file": os.path.basename(self.observer_path)},
                    "scenarios": scenarios}
        finally:
            self.client.close()

    def check_reachable(self):
        target = self.target
        report = erl_mesh.mesh_report(self.nodes, target.cookie, timeout=10.0, epmd_port=target.epmd_port,
                                      dist_port=target.dist_port if target.epmdless else None, tls=target.tls)
        if report["unreachable"]:
            raise CompareError("target %s: %d of %d nodes cannot be reached at the start, so no fault was injected:\n%s"
                               % (target.name, len(report["unreachable"]), len(self.nodes),
                                  "\n".join(erl_mesh.diagnosis(report))))
        if not report["full_mesh"]:
            converged, report, _ms, _n = erl_mesh.wait_for_mesh(
                self.nodes, target.cookie, timeout=self.settings.timeout, epmd_port=target.epmd_port,
                dist_port=target.dist_port if target.epmdless else None, tls=target.tls)
            if not converged:
                raise CompareError("target %s: the nodes answer but form no full mesh within %.0f s, so no fault was "
                                   "injected:\n%s" % (target.name, self.settings.timeout,
                                                      "\n".join(erl_mesh.diagnosis(report))))
        if self.spare_node and any(self.spare_node in (v.get("connected") or []) for v in report["per_node"].values()):
            raise CompareError("target %s: the spare's node %s is already in the cluster; stop it first"
                               % (target.name, self.spare_node))

    def environment(self):
        target = self.target
        try:
            found = compare_probes.environment(self.client, self.nodes[0])
        except (DistError, ValueError) as exc:
            raise CompareError("target %s: cannot read the runtime of %s: %s" % (target.name, self.nodes[0], exc))
        self.ticktime = found["net_ticktime_s"]
        self.intensity = found["net_tickintensity"]
        options = dict(topology.STRATEGIES[target.strategy].get("defaults", {}), **target.discovery)
        interval = None
        if target.strategy in ("epmd", "erlang_hosts"):
            interval = options.get("timeout")
        elif target.strategy == "dnspoll":
            interval = options.get("polling_interval", 5000)
        elif target.strategy == "gossip":
            interval = 5000
        heals, why = topology.heals(target.strategy, target.discovery)
        environment = {
            "platform": target.platform or (LAB_PLATFORM if target.is_lab() else "VMs: hosts of %s" % target.inventory),
            "strategy": target.strategy,
            "strategy_interval_ms": interval if _is_number(interval) else None,
            "strategy_heals": "%s (%s)" % ("expected to heal by itself" if heals else "not expected to heal by itself",
                                           why),
            "otp": found["otp"], "release": found["release"],
            "net_ticktime_s": found["net_ticktime_s"], "net_tickintensity": found["net_tickintensity"],
            "nodes": len(self.nodes), "hosts": len(target.hosts), "epmdless": target.epmdless,
            "tls": bool(target.tls), "kubernetes_version": None, "cni": None, "dns": None,
            "controller_cpus": os.cpu_count()}
        if target.strategy == "gossip":
            environment["strategy_interval_note"] = "a heartbeat every 1-5000 ms (random)"
        if len(target.tarballs) > 1:
            environment["rolling_deploy"] = "deploy_vms between %s" % " and ".join(
                os.path.basename(t) for t in target.tarballs)
        elif "rolling_deploy" in self.settings.scenarios:
            environment["rolling_deploy"] = "rolling restart (one tarball): systemctl restart host by host, each " \
                                            "gated on the full mesh"
        return environment

    # ---- timing helpers
    @property
    def tick_high(self):
        return float(self.ticktime or 60) * (1 + 1.0 / float(self.intensity or 4))

    @property
    def detect_limit(self):
        """How long a detection is waited for (and where it is censored): the tick window's end plus a margin."""
        return self.tick_high + 10.0

    def baseline(self, views):
        if not cm.full_mesh(views, self.nodes):
            return False
        if self.spare_node:
            return all(self.spare_node not in views[n] for n in self.nodes)
        return True

    def restore_baseline(self):
        started = time.monotonic()
        # Faults of a repetition are undone by it; anything left (it failed half way) goes now. The spare's
        # preparation stays for the whole target.
        for record in reversed(self.session.active()):
            if record["kind"] != "prepare_spare":
                self.session.undo(record)
        seen = self.observer.wait_until(self.baseline, timeout=self.settings.timeout)
        if seen is None:
            self.help_links()
            seen = self.observer.wait_until(self.baseline, timeout=30.0)
        if seen is None:
            raise CompareError("target %s: the baseline (full mesh, every node up, no extra node) did not come back "
                               "within %.0f s:\n%s" % (self.target.name, self.settings.timeout + 30,
                                                       "\n".join(erl_mesh.diagnosis(self.mesh_report())) or
                                                       "(no diagnosis)"))
        return round((time.monotonic() - started) * 1000.0, 1)

    def mesh_report(self):
        target = self.target
        return erl_mesh.mesh_report(self.nodes, target.cookie, timeout=10.0, epmd_port=target.epmd_port,
                                    dist_port=target.dist_port if target.epmdless else None, tls=target.tls)

    def help_links(self):
        """net_kernel:connect_node/1 across every missing link: the help a strategy that does not heal needs."""
        views = dict((n, v.peers) for n, v in self.observer.latest().items())
        helped = []
        for index, a in enumerate(self.nodes):
            for b in self.nodes[index + 1:]:
                if views.get(a) is not None and not cm.linked(views, a, b):
                    try:
                        compare_probes.connect_nodes(self.client, a, [b])
                        helped.append("%s->%s" % (a, b))
                    except (DistError, ValueError):
                        pass
        if self.spare_node:
            for node in self.nodes:
                if views.get(node) and self.spare_node in views[node]:
                    try:
                        self.client.call(node, "erlang", "disconnect_node", [Atom(self.spare_node)])
                    except DistError:
                        pass
        return helped

    def wait_mesh(self, until_s, nodes=None):
        nodes = nodes or self.nodes
        left = until_s - time.monotonic()
        if left <= 0:
            return None
        return self.observer.wait_until(lambda v: cm.full_mesh(v, nodes), timeout=left)

    # ---- scenarios
    def scenario(self, name):
        reps = []
        for index in range(1, self.settings.repetitions + 1):
            describe = self.describe(name, index)
            started = self.progress.begin(self.target.name, name, "%s %d/%d: %s" % (
                name, index, self.settings.repetitions, describe))
            baseline_ms = self.restore_baseline()
            rep = _Repetition(index, baseline_ms)
            self.observer.mark("repetition", scenario=name, index=index, target=self.target.name)
            getattr(self, "run_" + name)(rep, index - 1)
            rep.t_end = time.monotonic()
            self.progress.done(self.target.name, name, started)
            reps.append(rep)
        if name == "rolling_deploy" and len(self.target.tarballs) > 1 and self.version_index != 0:
            self.progress.say(self.target.name, "rolling_deploy: back to %s (not measured)"
                              % os.path.basename(self.target.tarballs[0]))
            self.deploy(self.target.tarballs[0], serial=1, force=True)
            self.version_index = 0
        return reps

    def victim(self, index):
        return self.members[index % len(self.members)]

    def describe(self, name, index):
        host = self.victim(index - 1)
        other = self.members[index % len(self.members)]
        return {"cold_start": "stop every node, then start them all",
                "crash": "kill -9 of %s on %s" % (self.target.release_name, host),
                "freeze": "SIGSTOP of %s on %s, held until its peers notice (up to %.0f s)" % (
                    self.target.release_name, host, self.detect_limit),
                "partition_full_drop": "%s cut off from the others, DROP" % host,
                "partition_full_reject": "%s cut off from the others, REJECT" % host,
                "partition_partial_drop": "the link %s <-> %s cut, DROP" % (host, other),
                "partition_partial_reject": "the link %s <-> %s cut, REJECT" % (host, other),
                "rolling_deploy": (("rolling deploy_vms to %s" % os.path.basename(
                    self.target.tarballs[1 - self.version_index])) if len(self.target.tarballs) > 1
                    else "rolling restart, one host at a time"),
                "scale_out": "start the node on the spare %s" % self.target.spare,
                "latency": "open-loop round trips %s -> %s at %.0f Hz for %.0f s" % (
                    host, other, self.settings.latency_rate_hz, self.settings.latency_seconds),
                "throughput": "%s sends %d KiB binaries to %s for %.0f s" % (
                    host, self.settings.message_bytes // 1024, other, self.settings.throughput_seconds)}[name]

    def kill(self, member):
        return self.session.kill(member)

    def cut(self, side_a, side_b, action):
        ports = [self.target.dist_port] if self.target.epmdless else [self.target.epmd_port]
        return self.session.partition(side_a, side_b, action=action, probe_ports=ports)

    def run_crash(self, rep, index):
        host = self.victim(index)
        victim = self.member_node(host)
        peers = [n for n in self.nodes if n != victim]
        record = self.kill(host)
        t_fault = _fault_time(record, "issued")
        self.observer.wait_until(lambda v: all(v.get(p) is not None and victim not in v[p] for p in peers),
                                 timeout=self.detect_limit)
        record = self.session.undo(record)
        rep.fault_events(record)
        rep.windows.append((t_fault, _fault_time(record, "undo_verified"), record["label"]))
        self.wait_mesh(t_fault + self.settings.timeout)
        rep.spec = {"kind": "crash", "victim": victim, "peers": peers, "t_fault": t_fault, "record": record}

    def run_freeze(self, rep, index):
        host = self.victim(index)
        victim = self.member_node(host)
        peers = [n for n in self.nodes if n != victim]
        record = self.session.freeze(host)
        t_fault = _fault_time(record, "issued")
        self.observer.wait_until(lambda v: all(v.get(p) is not None and victim not in v[p] for p in peers),
                                 timeout=max(0.0, t_fault + self.detect_limit - time.monotonic()))
        record = self.session.undo(record)
        t_lift = _fault_time(record, "undo_returned")
        rep.fault_events(record)
        rep.windows.append((t_fault, t_lift, record["label"]))
        self.wait_mesh(t_lift + self.settings.timeout)
        rep.spec = {"kind": "freeze", "victim": victim, "peers": peers, "t_fault": t_fault, "t_lift": t_lift,
                    "record": record}

    def _partition(self, rep, index, scope, action):
        host = self.victim(index)
        if scope == "full":
            side_a, side_b = [host], [h for h in self.members if h != host]
        else:
            side_a, side_b = [host], [self.members[(index + 1) % len(self.members)]]
        nodes_a = [self.member_node(h) for h in side_a]
        nodes_b = [self.member_node(h) for h in side_b]
        record = self.cut(side_a, side_b, action)
        t_fault = _fault_time(record, "issued")

        def split(views):
            return all(views.get(a) is not None and not (set(nodes_b) & views[a]) for a in nodes_a) and \
                all(views.get(b) is not None and not (set(nodes_a) & views[b]) for b in nodes_b)

        seen = self.observer.wait_until(split, timeout=max(0.0, t_fault + self.detect_limit - time.monotonic()))
        if seen is not None:
            time.sleep(1.0)  # let the other nodes react (global's prevent_overlapping_partitions) before the lift
        record = self.session.undo(record)
        t_lift = _fault_time(record, "undo_returned")
        rep.fault_events(record)
        rep.windows.append((t_fault, t_lift, record["label"]))
        healed = self.wait_mesh(t_lift + self.settings.timeout)
        helped = None
        if healed is None:
            helped = self.help_links()
            rep.event("no full mesh %.0f s after the lift: helped with net_kernel:connect_node %s" % (
                self.settings.timeout, ", ".join(helped) or "(nothing to connect)"))
        rep.spec = {"kind": "partition", "side_a": nodes_a, "side_b": nodes_b, "t_fault": t_fault, "t_lift": t_lift,
                    "record": record, "helped": helped}

    def run_partition_full_drop(self, rep, index):
        self._partition(rep, index, "full", "drop")

    def run_partition_full_reject(self, rep, index):
        self._partition(rep, index, "full", "reject")

    def run_partition_partial_drop(self, rep, index):
        self._partition(rep, index, "partial", "drop")

    def run_partition_partial_reject(self, rep, index):
        self._partition(rep, index, "partial", "reject")

    def run_cold_start(self, rep, index):
        records = []
        for host in self.target.hosts:
            records.append(self.session.stop(host))
        t_down = _fault_time(records[0], "issued")
        self.observer.wait_until(lambda v: all(v.get(n) is None for n in self.nodes), timeout=10.0)
        starts = {}

        def start(host):
            starts[host] = time.monotonic()
            self.session.ssh(host).run("systemctl start -- %s.service" % self.target.release_name, timeout=120.0)

        faults.run_parallel(start, self.target.hosts)
        for record in records:
            self.session.undo(record)
            rep.fault_events(record)
        t_first = min(starts.values())
        for host, at in sorted(starts.items(), key=lambda item: item[1]):
            rep.event("systemctl start of %s on %s" % (self.target.release_name, host), at)
        rep.windows.append((t_down, t_first, "every node stopped"))
        self.wait_mesh(t_first + self.settings.timeout)
        rep.spec = {"kind": "cold_start", "t_first": t_first}

    def run_rolling_deploy(self, rep, index):
        target = self.target
        t_start = time.monotonic()
        if len(target.tarballs) > 1:
            self.version_index = 1 - self.version_index
            tarball = target.tarballs[self.version_index]
            rep.event("deploy_vms (rolling, release_serial 1) to %s started" % os.path.basename(tarball), t_start)
            # Back to the first version may be a downgrade: release_force.
            self.deploy(tarball, serial=1, force=self.version_index == 0)
            rep.event("deploy_vms finished")
            label = "rolling deploy to %s" % os.path.basename(tarball)
        else:
            for host in target.hosts:
                record = self.session.restart(host)
                rep.fault_events(record)
                self.wait_mesh(time.monotonic() + self.settings.timeout)
                self.session.undo(record)
            label = "rolling restart of %d hosts" % len(target.hosts)
        t_end = time.monotonic()
        self.wait_mesh(t_end + self.settings.timeout)
        rep.windows.append((t_start, t_end, label))
        rep.spec = {"kind": "rolling", "t_start": t_start, "t_end": t_end}

    def prepare_spare(self):
        target = self.target
        self.progress.say(target.name, "scale_out: deploying the release to the spare %s (its node is stopped again "
                                       "after each repetition; the host is left as it was found)" % target.spare)
        variables = self.deploy_vars(target.tarballs[self.version_index], [target.spare],
                                     cluster_hosts=target.hosts + [target.spare])
        self.session.prepare_spare(target.spare, lambda: run_playbook(
            "deploy_vms", variables, self.log_path, self.settings.deploy_timeout, inventory=target.inventory),
            release_vars=target.release_vars)
        self.observer.add_nodes([self.spare_node])
        self.spare_ready = True
        # The deploy's own join of the spare is over; the members must let it go before the first repetition.
        self.observer.wait_until(self.baseline, timeout=self.settings.timeout)

    def run_scale_out(self, rep, index):
        if not self.spare_ready:
            self.prepare_spare()
            rep.baseline_ms = round(rep.baseline_ms + self.restore_baseline(), 1)
            rep.t0 = time.monotonic()
        record = self.session.start_spare(self.target.spare)
        t_start = _fault_time(record, "issued")
        members = self.nodes + [self.spare_node]
        self.wait_mesh(t_start + self.settings.timeout, members)
        record = self.session.undo(record)
        rep.fault_events(record)
        rep.windows.append((t_start, _fault_time(record, "undo_returned"), record["label"]))
        rep.spec = {"kind": "scale_out", "t_start": t_start}

    def pair(self, index):
        members = self.members
        return self.member_node(members[index % len(members)]), self.member_node(members[(index + 1) % len(members)])

    def run_latency(self, rep, index):
        node_a, node_b = self.pair(index)
        settings = self.settings
        samples = compare_probes.latency(self.client, node_a, node_b, settings.latency_rate_hz, settings.latency_seconds,
                                         settings.call_timeout_ms)
        rep.samples = samples
        percentiles = compare_stats.run_percentiles(samples, timeout=settings.call_timeout_ms)
        for key in compare_stats.PERCENTILE_KEYS:
            bound = percentiles[key]
            rep.metrics["rtt_%s_ms" % key] = None if bound["above"] else bound["value"]
        rep.metrics.update({"samples": percentiles["n"], "timed_out": percentiles["timed_out"],
                            "rate_hz": settings.latency_rate_hz, "open_loop": True,
                            "pair": "%s -> %s" % (node_a, node_b)})
        rep.event("open-loop run of %d calls %s -> %s" % (percentiles["n"], node_a, node_b), rep.t0)
        rep.spec = {"kind": "measure"}

    def run_throughput(self, rep, index):
        node_a, node_b = self.pair(index)
        settings = self.settings
        found = compare_probes.throughput(self.client, node_a, node_b, settings.throughput_seconds,
                                          settings.message_bytes, settings.throughput_workers, settings.call_timeout_ms * 5)
        rep.metrics.update({"throughput_mib_s": found["mib_s"], "bytes": found["bytes"], "calls": found["calls"],
                            "seconds": found["seconds"], "message_bytes": settings.message_bytes,
                            "workers": settings.throughput_workers, "pair": "%s -> %s" % (node_a, node_b)})
        rep.spec = {"kind": "measure"}

    # ---- metrics from the samples
    def finish_scenario(self, name, reps, samples):
        results = []
        fault = None
        for rep in reps:
            spec = rep.spec
            kind = spec.get("kind")
            if kind != "measure":
                window = [s for s in samples if rep.t0 - 0.5 <= s.t <= (rep.t_end or s.t) + 0.5]
                nodes = self.nodes + ([self.spare_node] if kind == "scale_out" else [])
                getattr(self, "metrics_" + kind)(rep, window)
                spec["timeline"] = cm.timeline(window, nodes, rep.t0, rep.t_end)
            if fault is None:
                fault = self.fault_of(name, spec.get("record"))
            results.append(rep.as_result())
        return {"name": name, "title": None, "fault": fault, "repetitions": results}

    def fault_of(self, name, record):
        if name in ("latency", "throughput"):
            return None
        kind, mechanism, expected = SCENARIO_FAULTS[name]
        if record is not None:
            mechanism = record["mechanism"]
        if name == "rolling_deploy":
            mechanism = ("beamops.cluster.deploy_vms, release_serial 1, between %s" % " and ".join(
                os.path.basename(t) for t in self.target.tarballs)) if len(self.target.tarballs) > 1 else \
                "rolling restart: systemctl restart of one host at a time, each gated on the full mesh"
        if "ticks" in expected:
            low, high = faults.tick_window(self.ticktime or 60, max(4, self.intensity or 4))
            expected = "%s: %.1f-%.1f s with net_ticktime %s and intensity %s" % (
                expected, low, high, self.ticktime, self.intensity)
        return {"kind": kind, "mechanism": mechanism, "expected_detection": expected}

    def metrics_crash(self, rep, samples):
        spec = rep.spec
        slowest, per_peer = cm.detection(samples, spec["victim"], spec["peers"], spec["t_fault"], self.detect_limit)
        broken = cm.first_broken(samples, self.nodes, spec["t_fault"])
        heal_ms = cm.heal(samples, self.nodes, spec["t_fault"], self.settings.timeout, after=broken)
        rep.metrics.update({"detection_ms": slowest, "detection_per_peer_ms": per_peer, "heal_ms": heal_ms})
        spec["healed"] = heal_ms is not None

    def metrics_freeze(self, rep, samples):
        spec = rep.spec
        slowest, per_peer = cm.detection(samples, spec["victim"], spec["peers"], spec["t_fault"], self.detect_limit)
        heal_ms = cm.heal(samples, self.nodes, spec["t_lift"], self.settings.timeout)
        rep.metrics.update({"detection_ms": slowest, "detection_per_peer_ms": per_peer, "heal_ms": heal_ms,
                            "held_ms": round((spec["t_lift"] - spec["t_fault"]) * 1000.0, 1)})
        spec["healed"] = heal_ms is not None

    def metrics_partition(self, rep, samples):
        spec = rep.spec
        sides = cm.side_detection(samples, spec["side_a"], spec["side_b"], spec["t_fault"], self.detect_limit)
        values = list(sides.values())
        heal_ms = cm.heal(samples, self.nodes, spec["t_lift"], self.settings.timeout)
        names = dict((n, self.node_host.get(n, n)) for n in self.nodes)
        rep.metrics.update({
            "detection_ms": None if None in values else max(values),
            "detection_per_side_ms": {"A (%s)" % ", ".join(names[n] for n in spec["side_a"]): sides["A"],
                                      "B (%s)" % ", ".join(names[n] for n in spec["side_b"]): sides["B"]},
            "split_seen": cm.splits_seen(samples, self.nodes, spec["t_fault"], spec["t_lift"], names),
            "heal_ms": heal_ms, "heals_by_itself": heal_ms is not None,
            "held_ms": round((spec["t_lift"] - spec["t_fault"]) * 1000.0, 1)})
        spec["healed"] = heal_ms is not None

    def metrics_cold_start(self, rep, samples):
        spec = rep.spec
        full, joins = cm.cold_start(samples, self.nodes, spec["t_first"], self.settings.timeout)
        rep.metrics.update({"full_mesh_ms": full, "join_per_node_ms": joins})
        spec["healed"] = full is not None

    def metrics_rolling(self, rep, samples):
        spec = rep.spec
        found = cm.membership(samples, self.nodes, spec["t_start"], spec["t_end"])
        rep.metrics.update({"fewest_members": found["fewest_members"], "not_full_ms": found["not_full_ms"],
                            "rollout_ms": round((spec["t_end"] - spec["t_start"]) * 1000.0, 1)})

    def metrics_scale_out(self, rep, samples):
        spec = rep.spec
        join_ms = cm.join(samples, self.spare_node, self.nodes, spec["t_start"], self.settings.timeout)
        rep.metrics.update({"join_ms": join_ms})
        spec["healed"] = join_ms is not None


# -------------------------------------------------------------------------------------------- the whole run
def _controller():
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {"hostname": socket.gethostname(), "cpus": os.cpu_count(), "python": platform_mod.python_version(),
            "load_at_start": load}


def _metrics_meta(settings, targets_run):
    meta = json.loads(json.dumps(METRICS_META))
    limits = [r.detect_limit for r in targets_run if r is not None] or [85.0]
    meta["detection_ms"]["censor_at_ms"] = round(max(limits) * 1000.0, 1)
    for name in ("full_mesh_ms", "join_ms"):
        meta[name]["censor_at_ms"] = settings.timeout * 1000.0
    for name in ("rtt_p50_ms", "rtt_p95_ms", "rtt_p99_ms", "rtt_max_ms"):
        meta[name]["censor_at_ms"] = settings.call_timeout_ms
    return meta


def _work_dir(settings):
    if settings.work_dir:
        if not os.path.isdir(settings.work_dir):
            os.makedirs(settings.work_dir, 0o755)
        return settings.work_dir
    return tempfile.mkdtemp(prefix="beamops-compare-")


def _run_target(target, settings, progress, work_dir, runs):
    if target.kind == "kubernetes":
        from ansible_collections.beamops.cluster.plugins.module_utils import compare_k8s
        return compare_k8s.run_target(target, settings, progress, work_dir)
    run = _VmRun(target, settings, progress, work_dir)
    runs.append(run)
    return run.run()


def run_comparison(targets, settings, progress=None):
    """See the module docstring."""
    check_targets(targets, settings)
    work_dir = _work_dir(settings)
    started, started_utc = time.monotonic(), _utc()
    plan = _Progress(progress, settings, targets)
    controller = _controller()
    results, runs = [], []
    for target in targets:
        results.append(_run_target(target, settings, plan, work_dir, runs))
    if not any(t.kind == "kubernetes" for t in targets):
        results.append({"name": "kubernetes", "kind": "kubernetes", "measured": False,
                        "reason": KUBERNETES_NOT_CONFIGURED, "environment": {}, "scenarios": []})
    if progress:
        progress("comparison done in %s" % _duration(time.monotonic() - started))
    return {"schema": SCHEMA, "tool": dict(TOOL), "started_utc": started_utc, "finished_utc": _utc(),
            "duration_s": round(time.monotonic() - started, 1), "settings": settings.as_results(),
            "controller": controller, "targets": results, "metrics_meta": _metrics_meta(settings, runs),
            "work_dir": work_dir}


def run_scenario(target, name, repetitions=None, settings=None, progress=None):
    """One scenario for one target; returns the target's result with that one scenario."""
    if name not in SCENARIOS:
        raise CompareError("scenario: unknown scenario %r; known: %s" % (name, ", ".join(SCENARIOS)))
    if settings is None:
        settings = Settings(scenarios=[name], repetitions=repetitions)
    else:
        settings.scenarios = [name]
        if repetitions is not None:
            settings.repetitions = repetitions
    check_targets([target], settings)
    work_dir = _work_dir(settings)
    return _run_target(target, settings, _Progress(progress, settings, [target]), work_dir, [])
