# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fault injection on Kubernetes targets through the API, journaled and undone like the VM faults (faults.py).

Public API
==========
``K8sFaultSession(namespace, journal, workload, selector=None, api=None, kubeconfig=None, context=None,
                  container=None, signals=True, verify_timeout=60.0, ready_timeout=300.0)``
    A context manager like ``faults.VmFaultSession`` (same journal, same undo on every exit path, same recovery
    of a killed run, same records). ``workload`` is ``"Deployment/NAME"`` or ``"StatefulSet/NAME"`` (or
    ``{"kind", "name"}``): the release's pods are those of its selector (or ``selector``, a label selector).
    ``api`` is a ``KubeApi``; without it one is made from ``kubeconfig`` (or ``$K8S_AUTH_KUBECONFIG``) with the
    official client ``kubernetes``, imported only then. Opening checks that the namespace and the workload can
    be read: a missing kubeconfig, namespace or workload fails there, before any fault.

    ``pods()``                          the workload's pods: ``[{name, uid, ip, ips, phase, ready, labels, ...}]``
    ``delete_pod(pod, grace_period=0)`` delete a pod; verified: that pod (by uid) is gone. Undo: the workload is
                                        whole again (its controller replaces the pod).
    ``kill_container(pod, container=None)``
                                        kill the BEAM inside its container by an exec'd shell: SIGKILL when the
                                        BEAM is not the container's PID 1, SIGQUIT (the BEAM halts at once, no
                                        init:stop) when it is, because PID 1 of a PID namespace ignores SIGKILL
                                        sent from inside it. Verified: the container restarted (restartCount or
                                        containerID changed) or the pod is gone. Undo: the workload is whole.
    ``partition(pods_a, pods_b, probe_ports=(4369,), observer=None, established_window=80.0,
                allow_widening=False)``
                                        label both groups (``beamops.io/fault-<id>: a|b``) and create one
                                        egress NetworkPolicy per group that lets it reach everything except the
                                        other group (pod selector, namespace selector and an ipBlock with the
                                        other group's addresses excepted); ingress policies (the release's own)
                                        are left as they are. Verified like the VM partition: before, a TCP connect
                                        from each pod to each peer's ``probe_ports`` (exec'd in the pod) must
                                        succeed; after, it must fail; after the undo (both policies deleted,
                                        labels removed) it must succeed. A policy may leave established
                                        connections alone: with ``observer`` (a callable ``observer(pods_a,
                                        pods_b) -> [[pod_a, pod_b], ...]``, the cross-group distribution links
                                        the caller's observer still sees) the record says whether and when they
                                        dropped; without it ``verification.established`` says how to check.
                                        Refused when an egress policy already selects these pods (ours would widen
                                        what they may reach) unless ``allow_widening``.
    ``rollout_restart(workload=None)``  the ``kubectl rollout restart`` annotation
                                        (``spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]``).
                                        Verified: the controller saw the new generation. Undo: wait until the
                                        rollout is complete (a restart cannot be taken back).
    ``scale(replicas=None, add=1)``     scale out (patch of the scale subresource); verified: that many pods exist.
                                        Undo: scale back to the recorded count and wait until only that many are left.
    ``wait_ready(timeout=None)``        seconds until the workload is whole (every replica updated and ready).
    ``undo``, ``undo_all``, ``records``, ``active``, ``recovered``: as in ``faults.FaultSession``.

``KubeApi(core, apps, networking, stream=None)``
    The only code that talks to the client: ``core`` a ``CoreV1Api``, ``apps`` an ``AppsV1Api``, ``networking``
    a ``NetworkingV1Api``, ``stream`` the client's ``kubernetes.stream.stream`` (for exec).
    ``KubeApi.from_kubeconfig(kubeconfig=None, context=None)`` makes one. Answers are plain dicts.
``partition_policy(name, namespace, label_key, own, other, other_ips) -> dict``
    The NetworkPolicy body of one side (pure; the unit tests check it).

Times are the controller's (``faults.stamp``), not the API's (whose timestamps have a 1 s resolution).
The unit tests run this against a stand-in of the client's API objects (there is no API server here); the
real-cluster test is tests/kubernetes/test_k8s_faults.py.
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import ipaddress
import json
import os
import re
import time

from ansible_collections.beamops.cluster.plugins.module_utils.faults import (
    DETECT_CLOSED,
    DETECT_TICKS,
    FaultError,
    FaultNotEffective,
    FaultSession,
    mark_time,
    new_fault_id,
    probe_ok,
    run_parallel,
    stamp,
    verify_probes,
    wait_until,
)

WORKLOAD_KINDS = {"deployment": ("Deployment", "deployment"), "statefulset": ("StatefulSet", "stateful_set")}
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
FAULT_LABEL_PREFIX = "beamops.io/fault-"
POLICY_PREFIX = "beamops-fault-"

# Kill the BEAM of a container with shell builtins only (images often have no procps). PID 1 of a PID
# namespace gets only the signals it handles from inside the namespace, so SIGKILL to a BEAM that is PID 1 is
# ignored; the BEAM handles SIGQUIT by halting at once (no init:stop: its sockets close as in a crash).
# The line is printed first: when the BEAM is PID 1 the container, and this shell, end with it.
KILL_BEAM_SCRIPT = r'''
beam=""
for d in /proc/[0-9]*; do
  c=""
  { read -r c < "$d/comm"; } 2>/dev/null
  if [ "$c" = beam.smp ]; then beam="${d#/proc/}"; break; fi
done
if [ -z "$beam" ]; then echo "no-beam"; exit 3; fi
if [ "$beam" = 1 ]; then echo "QUIT 1"; kill -QUIT 1; else echo "KILL $beam"; kill -KILL "$beam"; fi
'''

# TCP connect probes from inside a pod: python3 if the image has it, else bash's /dev/tcp under timeout, else
# nc -z. One line per target: "ADDRESS PORT OUTCOME" (connected, timeout, refused, failed).
PROBE_PY = (
    "import socket, sys\n"
    "t = float(sys.argv[1])\n"
    "a = sys.argv[2:]\n"
    "for i in range(0, len(a) - 1, 2):\n"
    "    s = socket.socket(socket.AF_INET6 if \":\" in a[i] else socket.AF_INET)\n"
    "    s.settimeout(t)\n"
    "    try:\n"
    "        s.connect((a[i], int(a[i + 1])))\n"
    "        r = \"connected\"\n"
    "    except socket.timeout:\n"
    "        r = \"timeout\"\n"
    "    except OSError as e:\n"
    "        r = \"refused\" if e.errno == 111 else \"failed\"\n"
    "    s.close()\n"
    "    print(a[i], a[i + 1], r)\n"
)
PROBE_SCRIPT = r'''
t="$1"; shift
if command -v python3 >/dev/null 2>&1; then exec python3 -c "$PROBE_PY" "$t" "$@"; fi
ti="${t%%.*}"; [ "$ti" -ge 1 ] 2>/dev/null || ti=1
while [ "$#" -ge 2 ]; do
  a="$1"; p="$2"; shift 2
  if command -v bash >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then
    timeout "$ti" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$a" "$p" 2>/dev/null
    case $? in 0) r=connected;; 124) r=timeout;; *) r=refused;; esac
  elif command -v nc >/dev/null 2>&1; then
    if nc -z -w "$ti" "$a" "$p" 2>/dev/null; then r=connected; else r=failed; fi
  else
    echo "no-probe-tool"; exit 3
  fi
  echo "$a $p $r"
done
'''


def _import_client():
    try:
        import kubernetes  # noqa: F401  pylint: disable=unused-import
        from kubernetes import client, config
        from kubernetes.stream import stream
    except ImportError:
        raise FaultError("Kubernetes faults need the official Python client: pip install kubernetes")
    return client, config, stream


def _status(exc):
    return getattr(exc, "status", None)


def _attr(obj, *names):
    """obj.a.b.c, None as soon as a link is missing (the client's models leave unset fields None)."""
    for name in names:
        if obj is None:
            return None
        obj = getattr(obj, name, None)
    return obj


def parse_workload(workload):
    """("Deployment"|"StatefulSet", name) from "Deployment/NAME" or {"kind", "name"}; ValueError otherwise."""
    if isinstance(workload, dict):
        kind, name = workload.get("kind"), workload.get("name")
    elif isinstance(workload, str) and "/" in workload:
        kind, name = workload.split("/", 1)
    else:
        raise ValueError("workload must be 'Deployment/NAME' or 'StatefulSet/NAME', not %r" % (workload,))
    key = str(kind or "").lower()
    if key not in WORKLOAD_KINDS:
        raise ValueError("workload kind must be Deployment or StatefulSet, not %r" % (kind,))
    if not isinstance(name, str) or not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", name):
        raise ValueError("workload name %r is not a Kubernetes object name" % (name,))
    return WORKLOAD_KINDS[key][0], name


class KubeApi:
    """The calls the Kubernetes faults make, over the official client's API objects; answers are plain dicts."""

    def __init__(self, core, apps, networking, stream=None):
        self.core = core
        self.apps = apps
        self.networking = networking
        self.stream = stream

    @classmethod
    def from_kubeconfig(cls, kubeconfig=None, context=None):
        kubeconfig = kubeconfig or os.environ.get("K8S_AUTH_KUBECONFIG")
        if not kubeconfig:
            raise FaultError("no kubeconfig: set K8S_AUTH_KUBECONFIG or pass kubeconfig=PATH for the Kubernetes target")
        if not os.path.isfile(kubeconfig):
            raise FaultError("kubeconfig %s does not exist" % kubeconfig)
        client, config, stream = _import_client()
        try:
            api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
        except Exception as exc:  # the client raises ConfigException and friends
            where = " (context %s)" % context if context else ""
            raise FaultError("kubeconfig %s cannot be used%s: %s" % (kubeconfig, where, exc))
        return cls(client.CoreV1Api(api_client), client.AppsV1Api(api_client), client.NetworkingV1Api(api_client),
                   stream)

    # ---- namespaces and pods
    def namespace_exists(self, namespace):
        try:
            self.core.read_namespace(namespace)
        except Exception as exc:  # ApiException
            if _status(exc) == 404:
                return False
            raise
        return True

    @staticmethod
    def pod_dict(pod):
        statuses = {}
        for status in _attr(pod, "status", "container_statuses") or []:
            statuses[status.name] = {"restart_count": status.restart_count or 0, "container_id": status.container_id,
                                     "ready": bool(status.ready)}
        # pod_ips in the client's pydantic models (v35+), pod_i_ps in the older generated ones
        listed = _attr(pod, "status", "pod_ips") or _attr(pod, "status", "pod_i_ps") or []
        ips = [item.ip for item in listed if getattr(item, "ip", None)]
        ip = _attr(pod, "status", "pod_ip")
        if ip and ip not in ips:
            ips.insert(0, ip)
        conditions = _attr(pod, "status", "conditions") or []
        ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        return {"name": pod.metadata.name, "uid": pod.metadata.uid, "ip": ip, "ips": ips,
                "phase": _attr(pod, "status", "phase"), "ready": ready, "labels": dict(pod.metadata.labels or {}),
                "deleting": pod.metadata.deletion_timestamp is not None,
                "containers": [c.name for c in (_attr(pod, "spec", "containers") or [])], "statuses": statuses}

    def list_pods(self, namespace, selector):
        answer = self.core.list_namespaced_pod(namespace, label_selector=selector)
        return sorted((self.pod_dict(p) for p in answer.items), key=lambda p: p["name"])

    def read_pod(self, namespace, name):
        try:
            return self.pod_dict(self.core.read_namespaced_pod(name, namespace))
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise

    def delete_pod(self, namespace, name, grace_period):
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace_period)
        except Exception as exc:
            if _status(exc) == 404:
                return False
            raise
        return True

    def patch_pod_labels(self, namespace, name, labels):
        """Merge labels into a pod (a value None removes the label); False when the pod is gone."""
        try:
            self.core.patch_namespaced_pod(name, namespace, {"metadata": {"labels": labels}})
        except Exception as exc:
            if _status(exc) == 404:
                return False
            raise
        return True

    def exec_in_pod(self, namespace, name, container, argv, timeout):
        """Run argv in the container; (rc or None when the stream ended without a status, stdout, stderr)."""
        if self.stream is None:
            raise FaultError("this KubeApi has no stream function: exec needs kubernetes.stream.stream")
        kwargs = {"command": list(argv), "stderr": True, "stdin": False, "stdout": True, "tty": False,
                  "_preload_content": False}
        if container:
            kwargs["container"] = container
        response = self.stream(self.core.connect_get_namespaced_pod_exec, name, namespace, **kwargs)
        try:
            response.run_forever(timeout=timeout)
            out, err = response.read_stdout() or "", response.read_stderr() or ""
            try:
                rc = response.returncode
            except (TypeError, KeyError, ValueError, IndexError):
                rc = None  # the connection ended without a status (the container died under the exec)
        finally:
            response.close()
        return rc, out, err

    # ---- workloads
    def _apps_call(self, verb, kind, suffix=""):
        return getattr(self.apps, "%s_namespaced_%s%s" % (verb, WORKLOAD_KINDS[kind.lower()][1], suffix))

    def read_workload(self, namespace, kind, name):
        obj = self._apps_call("read", kind)(name, namespace)
        match = _attr(obj, "spec", "selector", "match_labels") or {}
        return {"kind": kind, "name": name, "generation": obj.metadata.generation or 0,
                "observed_generation": _attr(obj, "status", "observed_generation") or 0,
                "replicas": obj.spec.replicas if obj.spec.replicas is not None else 1,
                "status_replicas": _attr(obj, "status", "replicas") or 0,
                "ready": _attr(obj, "status", "ready_replicas") or 0,
                "updated": _attr(obj, "status", "updated_replicas") or 0,
                "current_revision": _attr(obj, "status", "current_revision"),
                "update_revision": _attr(obj, "status", "update_revision"),
                "annotations": dict(_attr(obj, "spec", "template", "metadata", "annotations") or {}),
                "selector": ",".join("%s=%s" % (k, match[k]) for k in sorted(match))}

    def patch_workload(self, namespace, kind, name, body):
        self._apps_call("patch", kind)(name, namespace, body)

    def read_scale(self, namespace, kind, name):
        obj = self._apps_call("read", kind, "_scale")(name, namespace)
        return {"replicas": _attr(obj, "spec", "replicas") or 0, "status_replicas": _attr(obj, "status", "replicas") or 0}

    def patch_scale(self, namespace, kind, name, replicas):
        self._apps_call("patch", kind, "_scale")(name, namespace, {"spec": {"replicas": replicas}})

    # ---- network policies
    def list_network_policies(self, namespace):
        answer = self.networking.list_namespaced_network_policy(namespace)
        result = []
        for item in answer.items:
            selector = _attr(item, "spec", "pod_selector")
            expressions = [{"key": e.key, "operator": e.operator, "values": list(e.values or [])}
                           for e in (_attr(selector, "match_expressions") or [])]
            # policyTypes defaults to Ingress, plus Egress when the policy has egress rules
            types = list(_attr(item, "spec", "policy_types") or
                         (["Ingress"] + (["Egress"] if _attr(item, "spec", "egress") else [])))
            result.append({"name": item.metadata.name, "match_labels": dict(_attr(selector, "match_labels") or {}),
                           "match_expressions": expressions, "policy_types": types})
        return result

    def create_network_policy(self, namespace, body):
        self.networking.create_namespaced_network_policy(namespace, body)

    def delete_network_policy(self, namespace, name):
        try:
            self.networking.delete_namespaced_network_policy(name, namespace)
        except Exception as exc:
            if _status(exc) == 404:
                return False
            raise
        return True


def selector_matches(match_labels, match_expressions, labels):
    """Does a label selector (matchLabels + matchExpressions) select a pod with these labels?"""
    for key, value in (match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for expression in match_expressions or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def partition_policy(name, namespace, label_key, own, other, other_ips):
    """The NetworkPolicy of one side: its pods reach (egress) everything but the other side.

    Egress only: with the same policy on the other side, neither side can send to the other, which cuts every
    connection between them, while what the pods admit (ingress, e.g. the release's own policy, the observer's
    port-forward) is left as it was. NetworkPolicies only allow, so "all but the other side" is three peers that
    each leave it out: pods of this namespace without the other side's label value, every other namespace, and any
    address except the other side's (CNIs differ on whether ipBlock applies to pod addresses; excepting them covers
    both readings).
    """
    v4 = sorted(ip for ip in other_ips if ipaddress.ip_address(ip).version == 4)
    v6 = sorted(ip for ip in other_ips if ipaddress.ip_address(ip).version == 6)
    peers = [
        {"podSelector": {"matchExpressions": [{"key": label_key, "operator": "NotIn", "values": [other]}]}},
        {"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                                     "values": [namespace]}]}},
    ]
    block_v4 = {"cidr": "0.0.0.0/0"}
    if v4:
        block_v4["except"] = ["%s/32" % ip for ip in v4]
    block_v6 = {"cidr": "::/0"}
    if v6:
        block_v6["except"] = ["%s/128" % ip for ip in v6]
    peers += [{"ipBlock": block_v4}, {"ipBlock": block_v6}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "beamops.cluster"},
                         "annotations": {"beamops.io/fault": "partition: pods labelled %s=%s cannot reach %s=%s"
                                         % (label_key, own, label_key, other)}},
            "spec": {"podSelector": {"matchLabels": {label_key: own}}, "policyTypes": ["Egress"],
                     "egress": [{"to": peers}]}}


def restart_patch(when):
    """The patch ``kubectl rollout restart`` makes."""
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: when}}}}}


# ------------------------------------------------------------------------------------------------ faults
class _WaitWhole:
    """Undo of faults the workload's controller repairs by itself: wait until it is whole again."""

    def undo(self, session, record):
        mark_time(record, "undo_issued")
        mark_time(record, "undo_returned")
        waited = session.wait_ready(workload=record["params"]["workload"], namespace=record["params"]["namespace"])
        mark_time(record, "undo_effective")
        mark_time(record, "undo_verified")
        record["undo_verification"] = {"workload_ready_after_s": waited}


class _DeletePod(_WaitWhole):
    def apply(self, session, record):
        params = record["params"]
        mark_time(record, "issued")
        session.api.delete_pod(params["namespace"], params["pod"], params["grace_period"])
        mark_time(record, "returned")

    def verify(self, session, record):
        params, uid = record["params"], record["undo_data"]["uid"]

        def gone():
            pod = session.api.read_pod(params["namespace"], params["pod"])
            return pod is None or pod["uid"] != uid

        if not wait_until(gone, session.verify_timeout, 0.1):
            raise FaultNotEffective("pod %s (uid %s) still exists %.0f s after its delete"
                                    % (params["pod"], uid, session.verify_timeout), record)
        mark_time(record, "effective")
        mark_time(record, "verified")
        record["verification"] = {"pod_gone": True, "uid": uid}


class _KillContainer(_WaitWhole):
    def apply(self, session, record):
        params = record["params"]
        mark_time(record, "issued")
        try:
            rc, out, err = session.api.exec_in_pod(params["namespace"], params["pod"], params["container"],
                                                   ["sh", "-c", KILL_BEAM_SCRIPT], 30.0)
        except Exception as exc:  # pylint: disable=broad-except
            # The stream may break when the container dies under it; the check below tells whether it did.
            rc, out, err = None, "", "%s: %s" % (type(exc).__name__, exc)
        mark_time(record, "returned")
        record["verification"]["exec"] = {"rc": rc, "stdout": out.strip()[-200:], "stderr": err.strip()[-200:]}
        if "no-beam" in out:
            raise FaultError("pod %s: no beam.smp process in container %s" % (params["pod"], params["container"]),
                             record)
        if "not found" in err and rc not in (None, 0):
            raise FaultError("pod %s: container %s has no /bin/sh, which kill_container needs; use delete_pod"
                             % (params["pod"], params["container"]), record)
        signal_line = [line for line in out.splitlines() if line.startswith(("KILL ", "QUIT "))]
        record["mechanism"] += "; sent: %s" % (signal_line[0] if signal_line else "unknown (no output)")

    def verify(self, session, record):
        params, data = record["params"], record["undo_data"]

        def restarted():
            pod = session.api.read_pod(params["namespace"], params["pod"])
            if pod is None or pod["uid"] != data["uid"]:
                return "pod gone"
            status = pod["statuses"].get(params["container"]) or {}
            if status.get("restart_count", 0) > data["restart_count"]:
                return "restartCount %d -> %d" % (data["restart_count"], status["restart_count"])
            if status.get("container_id") and status.get("container_id") != data["container_id"]:
                return "containerID changed"
            return None

        seen = wait_until(restarted, session.verify_timeout, 0.2)
        if not seen:
            raise FaultNotEffective("pod %s: container %s did not restart within %.0f s of the kill"
                                    % (params["pod"], params["container"], session.verify_timeout), record)
        mark_time(record, "effective")
        mark_time(record, "verified")
        record["verification"]["restarted"] = seen


class _Partition:
    @staticmethod
    def probe_round(session, record, expect, only_existing=False):
        params, plan = record["params"], record["undo_data"]["probes"]
        timeout = params["probe_timeout"]
        names = sorted(plan)
        if only_existing:
            # After the fault, pods of the partition may have been replaced (a rollout, a scale-back): probe only
            # between those that still exist with the address they had.
            alive = set()
            for pod in [p for group in record["undo_data"]["groups_detail"] for p in group]:
                now = session.api.read_pod(params["namespace"], pod["name"])
                if now is not None and now["uid"] == pod["uid"]:
                    alive.add(pod["name"])
            ips = set(p["ip"] for group in record["undo_data"]["groups_detail"] for p in group if p["name"] in alive)
            plan = dict((n, [t for t in plan[n] if t[0] in ips]) for n in names if n in alive)
            names = sorted(n for n in plan if plan[n])

        def run(pod):
            rc, out, err = session.api.exec_in_pod(params["namespace"], pod, params["container"],
                                                   probe_argv(timeout, plan[pod]), timeout * len(plan[pod]) + 30.0)
            if "no-probe-tool" in out:
                raise FaultError("pod %s has none of python3, bash with timeout, or nc: the partition cannot be "
                                 "verified from inside it" % pod)
            results = []
            for line in out.splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[1].isdigit():
                    results.append({"address": parts[0], "port": int(parts[1]), "outcome": parts[2]})
            if len(results) != len(plan[pod]):
                raise FaultError("pod %s: the TCP probe answered %r (rc %r, stderr %r)"
                                 % (pod, out[-300:], rc, err[-300:]))
            return results

        results = run_parallel(run, names)
        ok = all(probe_ok(item["outcome"], expect) for pod in results for item in results[pod])
        return ok, results

    def probe_until(self, session, record, expect, prefix, only_existing=False):
        return verify_probes(lambda: self.probe_round(session, record, expect, only_existing), record, expect,
                             session.verify_timeout, prefix, "NetworkPolicy partition %s" % record["id"], 0.5)

    def apply(self, session, record):
        params, data = record["params"], record["undo_data"]
        mark_time(record, "issued")
        for pod, value in sorted(data["labels"].items()):
            session.api.patch_pod_labels(params["namespace"], pod, {data["label_key"]: value})
        for body in data["policies"]:
            session.api.create_network_policy(params["namespace"], body)
        mark_time(record, "returned")

    def verify(self, session, record):
        record["verification"].update(self.probe_until(session, record, "blocked", ""))
        record["verification"]["established"] = self.established(session, record)

    @staticmethod
    def established(session, record):
        observer = session.observers.get(record["id"])
        if observer is None:
            return {"checked": False,
                    "how": "a NetworkPolicy may not cut established connections: compare, in the observer's samples "
                           "after 'effective', each pod's connected nodes with the other group (mesh_report "
                           "per_node[...]['connected']); links still there after net_ticktime + net_ticktime/4 were "
                           "not cut"}
        pods_a, pods_b = record["undo_data"]["groups_detail"]
        start = time.monotonic()
        first = [list(link) for link in observer(pods_a, pods_b)]
        end = start + record["params"]["established_window"]
        links = first
        while links and time.monotonic() < end:
            time.sleep(0.2)
            links = [list(link) for link in observer(pods_a, pods_b)]
        return {"checked": True, "links_at_start": first, "links_at_end": links, "dropped": not links,
                "after_s": round(time.monotonic() - start, 3) if not links else None,
                "window_s": record["params"]["established_window"]}

    def undo(self, session, record):
        params, data = record["params"], record["undo_data"]
        mark_time(record, "undo_issued")
        for body in data["policies"]:
            session.api.delete_network_policy(params["namespace"], body["metadata"]["name"])
        for pod in sorted(data["labels"]):
            session.api.patch_pod_labels(params["namespace"], pod, {data["label_key"]: None})
        mark_time(record, "undo_returned")
        names = set(b["metadata"]["name"] for b in data["policies"])
        left = [p["name"] for p in session.api.list_network_policies(params["namespace"]) if p["name"] in names]
        if left:
            raise FaultError("NetworkPolicies %s still exist after their delete" % ", ".join(sorted(left)))
        record["undo_verification"] = self.probe_until(session, record, "connected", "undo_", only_existing=True)
        record["undo_verification"]["policies_gone"] = True


def probe_argv(timeout, targets):
    """The argv that runs PROBE_SCRIPT (with PROBE_PY) in a pod: TCP connects to [[address, port], ...]."""
    quoted = "'" + PROBE_PY.replace("'", "'\"'\"'") + "'"
    argv = ["sh", "-c", "PROBE_PY=%s\nexport PROBE_PY\n%s" % (quoted, PROBE_SCRIPT), "probe", str(timeout)]
    for address, port in targets:
        argv += [address, str(port)]
    return argv


class _RolloutRestart:
    def apply(self, session, record):
        params = record["params"]
        mark_time(record, "issued")
        session.api.patch_workload(params["namespace"], params["workload"]["kind"], params["workload"]["name"],
                                   restart_patch(record["undo_data"]["restarted_at"]))
        mark_time(record, "returned")

    def verify(self, session, record):
        params, before = record["params"], record["undo_data"]["generation"]

        def seen():
            info = session.api.read_workload(params["namespace"], params["workload"]["kind"], params["workload"]["name"])
            return info if info["generation"] > before and info["observed_generation"] >= info["generation"] else None

        info = wait_until(seen, session.verify_timeout, 0.2)
        if not info:
            raise FaultNotEffective("%s/%s: the controller did not pick up the restart within %.0f s"
                                    % (params["workload"]["kind"], params["workload"]["name"], session.verify_timeout),
                                    record)
        mark_time(record, "effective")
        mark_time(record, "verified")
        record["verification"] = {"generation": info["generation"]}

    def undo(self, session, record):
        _WaitWhole().undo(session, record)


class _Scale:
    def apply(self, session, record):
        params = record["params"]
        mark_time(record, "issued")
        session.api.patch_scale(params["namespace"], params["workload"]["kind"], params["workload"]["name"],
                                params["replicas"])
        mark_time(record, "returned")

    @staticmethod
    def _reached(session, record, replicas):
        params = record["params"]
        workload = params["workload"]

        def reached():
            scale = session.api.read_scale(params["namespace"], workload["kind"], workload["name"])
            pods = [p for p in session.pods(workload=workload, namespace=params["namespace"]) if not p["deleting"]]
            if scale["replicas"] == replicas and scale["status_replicas"] == replicas and len(pods) == replicas:
                return {"replicas": replicas, "pods": [p["name"] for p in pods]}
            return None
        return reached

    def verify(self, session, record):
        seen = wait_until(self._reached(session, record, record["params"]["replicas"]), session.verify_timeout, 0.2)
        if not seen:
            raise FaultNotEffective("%s/%s did not reach %d pods within %.0f s" % (
                record["params"]["workload"]["kind"], record["params"]["workload"]["name"],
                record["params"]["replicas"], session.verify_timeout), record)
        mark_time(record, "effective")
        mark_time(record, "verified")
        record["verification"] = seen

    def undo(self, session, record):
        params, original = record["params"], record["undo_data"]["replicas"]
        mark_time(record, "undo_issued")
        session.api.patch_scale(params["namespace"], params["workload"]["kind"], params["workload"]["name"], original)
        mark_time(record, "undo_returned")
        seen = wait_until(self._reached(session, record, original), session.ready_timeout, 0.5)
        if not seen:
            raise FaultError("%s/%s did not shrink back to %d pods within %.0f s" % (
                params["workload"]["kind"], params["workload"]["name"], original, session.ready_timeout))
        mark_time(record, "undo_effective")
        mark_time(record, "undo_verified")
        record["undo_verification"] = seen


class K8sFaultSession(FaultSession):
    """Faults on a Kubernetes workload through the API; see the module docstring."""

    target = "k8s"
    KINDS = {"delete_pod": _DeletePod(), "kill_container": _KillContainer(), "partition": _Partition(),
             "rollout_restart": _RolloutRestart(), "scale": _Scale()}

    def __init__(self, namespace, journal, workload, selector=None, api=None, kubeconfig=None, context=None,
                 container=None, signals=True, verify_timeout=60.0, ready_timeout=300.0):
        super(K8sFaultSession, self).__init__(journal, signals)
        if not isinstance(namespace, str) or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", namespace):
            raise ValueError("namespace must be a Kubernetes namespace name, not %r" % (namespace,))
        self.namespace = namespace
        kind, name = parse_workload(workload)
        self.workload = {"kind": kind, "name": name}
        self.selector = selector
        self.container = container
        self.api = api
        self.kubeconfig = kubeconfig
        self.context = context
        self.verify_timeout = verify_timeout
        self.ready_timeout = ready_timeout
        self.observers = {}

    # ---- connection
    def _connect(self, previous):
        if self.api is None:
            self.api = KubeApi.from_kubeconfig(self.kubeconfig, self.context)
        try:
            if not self.api.namespace_exists(self.namespace):
                raise FaultError("namespace %s does not exist on the cluster" % self.namespace)
            info = self.api.read_workload(self.namespace, self.workload["kind"], self.workload["name"])
        except FaultError:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            if _status(exc) == 404:
                raise FaultError("%s/%s does not exist in namespace %s"
                                 % (self.workload["kind"], self.workload["name"], self.namespace))
            raise FaultError("the Kubernetes API cannot be used (%s: %s); nothing was applied"
                             % (type(exc).__name__, exc))
        if self.selector is None:
            if not info["selector"]:
                raise FaultError("%s/%s has no matchLabels selector: pass selector="
                                 % (self.workload["kind"], self.workload["name"]))
            self.selector = info["selector"]

    def _disconnect(self):
        pass

    def _journal_hosts(self, previous):
        return {"namespace": self.namespace, "workload": self.workload, "selector": self.selector,
                "context": self.context}

    # ---- reads
    def pods(self, workload=None, namespace=None):
        """The workload's pods (plain dicts), by name."""
        namespace = namespace or self.namespace
        selector = self.selector
        if workload and workload != self.workload:
            selector = self.api.read_workload(namespace, workload["kind"], workload["name"])["selector"]
        return self.api.list_pods(namespace, selector)

    def whole(self, workload=None, namespace=None):
        """The workload's state if every replica is updated and ready, else None."""
        workload = workload or self.workload
        info = self.api.read_workload(namespace or self.namespace, workload["kind"], workload["name"])
        done = (info["observed_generation"] >= info["generation"] and info["ready"] == info["replicas"]
                and info["updated"] == info["replicas"] and info["status_replicas"] == info["replicas"])
        if workload["kind"] == "StatefulSet" and info["update_revision"]:
            done = done and info["current_revision"] == info["update_revision"]
        return info if done else None

    def wait_ready(self, timeout=None, workload=None, namespace=None):
        """Seconds until the workload is whole; FaultError after timeout (default ready_timeout)."""
        timeout = self.ready_timeout if timeout is None else timeout
        started = time.monotonic()
        if not wait_until(lambda: self.whole(workload, namespace), timeout, 0.5):
            workload = workload or self.workload
            raise FaultError("%s/%s is not whole (all replicas updated and ready) after %.0f s"
                             % (workload["kind"], workload["name"], timeout))
        return round(time.monotonic() - started, 3)

    def _pod(self, name):
        pod = self.api.read_pod(self.namespace, name) if isinstance(name, str) else None
        if pod is None:
            raise ValueError("pod %r does not exist in namespace %s" % (name, self.namespace))
        return pod

    def _container(self, pod, container):
        container = container or self.container or (pod["containers"][0] if pod["containers"] else None)
        if container not in pod["containers"]:
            raise ValueError("container %r is not in pod %s (it has %s)"
                             % (container, pod["name"], ", ".join(pod["containers"])))
        return container

    def _base_params(self):
        return {"namespace": self.namespace, "workload": dict(self.workload)}

    # ---- faults
    def delete_pod(self, pod, grace_period=0):
        """Delete a pod (grace_period seconds, 0 = at once); returns the record once that pod is gone."""
        info = self._pod(pod)
        if not isinstance(grace_period, int) or grace_period < 0:
            raise ValueError("grace_period must be a whole number of seconds >= 0")
        params = self._base_params()
        params.update({"pod": info["name"], "grace_period": grace_period})
        record = self._new_record(
            "delete_pod", "delete of pod %s (grace %d s)" % (info["name"], grace_period),
            "API delete of the pod with gracePeriodSeconds=%d: the kubelet stops its containers (SIGTERM, then "
            "SIGKILL after the grace period); its controller makes a replacement" % grace_period,
            DETECT_CLOSED, [info["name"]], params, {"uid": info["uid"]})
        return self.inject(record)

    def kill_container(self, pod, container=None):
        """Kill the BEAM in a pod's container (exec); returns the record once the container restarted."""
        info = self._pod(pod)
        container = self._container(info, container)
        status = info["statuses"].get(container) or {}
        params = self._base_params()
        params.update({"pod": info["name"], "container": container})
        record = self._new_record(
            "kill_container", "kill of the BEAM in %s/%s" % (info["name"], container),
            "exec'd shell: SIGKILL to the BEAM, or SIGQUIT when the BEAM is the container's PID 1 (which ignores "
            "SIGKILL from inside its PID namespace; the BEAM halts at once on SIGQUIT); the kubelet restarts the "
            "container", DETECT_CLOSED, [info["name"]], params,
            {"uid": info["uid"], "restart_count": status.get("restart_count", 0),
             "container_id": status.get("container_id")})
        return self.inject(record)

    def partition(self, pods_a, pods_b, probe_ports=(4369,), probe_timeout=2.0, observer=None,
                  established_window=80.0, allow_widening=False, container=None):
        """Cut pods_a off from pods_b with two NetworkPolicies; returns the record once TCP connects across fail."""
        group_a = [self._pod(p) for p in ([pods_a] if isinstance(pods_a, str) else pods_a)]
        group_b = [self._pod(p) for p in ([pods_b] if isinstance(pods_b, str) else pods_b)]
        names_a, names_b = set(p["name"] for p in group_a), set(p["name"] for p in group_b)
        if not names_a or not names_b:
            raise ValueError("partition: both groups need at least one pod")
        if names_a & names_b:
            raise ValueError("partition: %s in both groups" % ", ".join(sorted(names_a & names_b)))
        for pod in group_a + group_b:
            if not pod["ip"]:
                raise ValueError("partition: pod %s has no IP yet" % pod["name"])
        ports = [int(p) for p in probe_ports]
        if not ports or not all(0 < p < 65536 for p in ports):
            raise ValueError("partition: probe_ports must be TCP ports that listen in every pod")
        if observer is not None and not callable(observer):
            raise ValueError("partition: observer must be a callable observer(pods_a, pods_b) -> links still up")
        # Ingress policies (such as the release's own) are left alone; an egress policy that already selects these
        # pods would be widened by ours (allows add up), and might itself let the other group through.
        existing = [p for p in self.api.list_network_policies(self.namespace) if "Egress" in p["policy_types"]
                    and any(selector_matches(p["match_labels"], p["match_expressions"], pod["labels"])
                            for pod in group_a + group_b)]
        if existing and not allow_widening:
            raise FaultError("partition: the egress NetworkPolicy %s already selects these pods; the partition's "
                             "policies let them reach everything but the other group, which would widen what they may "
                             "reach. Pass allow_widening=True to accept that" % ", ".join(sorted(p["name"] for p in existing)))
        fault_id = new_fault_id()
        key = FAULT_LABEL_PREFIX + fault_id
        ips_a = sorted(set(ip for p in group_a for ip in p["ips"]))
        ips_b = sorted(set(ip for p in group_b for ip in p["ips"]))
        policies = [partition_policy(POLICY_PREFIX + fault_id + "-a", self.namespace, key, "a", "b", ips_b),
                    partition_policy(POLICY_PREFIX + fault_id + "-b", self.namespace, key, "b", "a", ips_a)]
        labels = dict((p["name"], "a") for p in group_a)
        labels.update((p["name"], "b") for p in group_b)
        probes = dict((p["name"], [[o["ip"], port] for o in group_b for port in ports]) for p in group_a)
        probes.update((p["name"], [[o["ip"], port] for o in group_a for port in ports]) for p in group_b)
        params = self._base_params()
        params.update({"groups": [sorted(names_a), sorted(names_b)], "probe_ports": ports,
                       "probe_timeout": float(probe_timeout), "established_window": float(established_window),
                       "container": container or self.container, "widening_policies": [p["name"] for p in existing]})
        detail = [[{"name": p["name"], "ip": p["ip"], "uid": p["uid"]} for p in group]
                  for group in (group_a, group_b)]
        record = self._new_record(
            "partition", "NetworkPolicy partition %s | %s" % (",".join(sorted(names_a)), ",".join(sorted(names_b))),
            "two egress NetworkPolicies (%s-a, %s-b) letting each group reach everything but the other, on pods "
            "labelled %s; the CNI usually drops what a policy denies (silent), and may leave established connections "
            "alone"
            % (POLICY_PREFIX + fault_id, POLICY_PREFIX + fault_id, key),
            DETECT_TICKS, sorted(names_a | names_b), params,
            {"label_key": key, "labels": labels, "policies": policies, "probes": probes, "groups_detail": detail})
        record["id"] = fault_id
        handler = self.KINDS["partition"]
        ok, results = handler.probe_round(self, record, "connected")
        if not ok:
            raise FaultError("partition: before the fault these connections already fail, so the fault could not be "
                             "verified (probe_ports must listen in every pod): %s" % json.dumps(results))
        record["verification"]["baseline"] = results
        if observer is not None:
            self.observers[fault_id] = observer
        return self.inject(record)

    def rollout_restart(self, workload=None):
        """The `kubectl rollout restart` annotation; returns the record once the controller picked it up."""
        workload = dict(zip(("kind", "name"), parse_workload(workload))) if workload else dict(self.workload)
        info = self.api.read_workload(self.namespace, workload["kind"], workload["name"])
        params = {"namespace": self.namespace, "workload": workload}
        record = self._new_record(
            "rollout_restart", "rolling restart of %s/%s" % (workload["kind"], workload["name"]),
            "patch of spec.template.metadata.annotations[%s] (what kubectl rollout restart does): the controller "
            "replaces the pods one batch at a time (maxUnavailable/maxSurge, or the StatefulSet's ordinal order)"
            % RESTARTED_AT, DETECT_CLOSED, [workload["name"]], params,
            {"generation": info["generation"], "previous_annotation": info["annotations"].get(RESTARTED_AT),
             "restarted_at": stamp()["utc"]})
        return self.inject(record)

    def scale(self, replicas=None, add=1):
        """Scale the workload out to replicas (or by add); returns the record once that many pods exist."""
        current = self.api.read_scale(self.namespace, self.workload["kind"], self.workload["name"])["replicas"]
        target = replicas if replicas is not None else current + add
        if not isinstance(target, int) or target <= current:
            raise ValueError("scale: replicas must be more than the current %d (a scale-out); got %r" % (current, target))
        params = self._base_params()
        params.update({"replicas": target})
        record = self._new_record(
            "scale", "scale-out of %s/%s from %d to %d" % (self.workload["kind"], self.workload["name"], current,
                                                           target),
            "patch of the scale subresource (spec.replicas %d -> %d); undo scales back to %d"
            % (current, target, current),
            DETECT_CLOSED, [self.workload["name"]], params, {"replicas": current})
        return self.inject(record)
