# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that expose the Kubernetes manifest builder (plugins/module_utils/k8s_manifests.py) to the kubernetes role.

Their documentation is in k8s_check.yml, k8s_manifests.yml, k8s_manifest_files.yml and k8s_pod_nodes.yml beside this file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections.abc import Mapping

import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.beamops.cluster.plugins.module_utils import k8s_manifests as manifests


def _plain(value, name):
    """Plain Python data: Ansible hands over its own (tagged) str, dict and list subclasses."""
    if isinstance(value, Mapping):
        return dict((str(k), _plain(v, name)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_plain(v, name) for v in value]
    if value is None or isinstance(value, bool):
        return value
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    raise AnsibleFilterError("%s: cannot use a value of type %s" % (name, type(value).__name__))


def _inputs(value, name):
    if not isinstance(value, Mapping):
        raise AnsibleFilterError("%s: the input must be a dict of the role's inputs, got %s" % (name, type(value).__name__))
    return _plain(value, name)


def _worded(result, prefix):
    """Each error and warning gets ``text``: the message after the caller's variable name (``prefix`` + field)."""
    for entry in result["errors"] + result["warnings"]:
        entry["text"] = "%s%s %s." % (prefix, entry["field"], entry["message"])
    return result


def k8s_check(inputs, prefix="kubernetes_"):
    """Problems of the inputs (no cookie needed): ``{errors, warnings}``."""
    return _worded(manifests.check(_inputs(inputs, "k8s_check")), prefix)


def k8s_manifests(inputs, prefix="kubernetes_"):
    """The objects in apply order with names, topology, errors and warnings."""
    return _worded(manifests.build(_inputs(inputs, "k8s_manifests")), prefix)


class _IndentedDumper(yaml.SafeDumper):
    """Block sequences indented under their key, as yamllint's default indentation rule wants."""

    def increase_indent(self, flow=False, indentless=False):
        return super(_IndentedDumper, self).increase_indent(flow, False)


def _str_representer(dumper, value):
    if "\n" in value and all(len(line) < 120 and line == line.rstrip() for line in value.split("\n")):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_IndentedDumper.add_representer(str, _str_representer)


def to_manifest_yaml(obj):
    """One object as a YAML document (``---`` first, keys in the builder's order, lines under 160 characters)."""
    return yaml.dump(obj, Dumper=_IndentedDumper, default_flow_style=False, sort_keys=False, explicit_start=True, width=100)


def k8s_manifest_files(result):
    """``[{name, content, secret}]``: one YAML file per object, named ``NN-kind-name.yaml`` in apply order."""
    if not isinstance(result, dict) or "objects" not in result:
        raise AnsibleFilterError("k8s_manifest_files: the input must be the result of the k8s_manifests filter")
    if result.get("errors"):
        raise AnsibleFilterError("k8s_manifest_files: the manifests have errors: %s" % "; ".join(e["message"] for e in result["errors"]))
    objects = _plain(result["objects"], "k8s_manifest_files")
    return [{"name": manifests.file_name(index, obj), "content": to_manifest_yaml(obj), "secret": obj["kind"] == "Secret"}
            for index, obj in enumerate(objects, 1)]


def k8s_pod_nodes(pods, result):
    """Node name -> pod name for pods read from the cluster (kubernetes.core.k8s_info resources), named as they run."""
    if not isinstance(result, dict) or "objects" not in result:
        raise AnsibleFilterError("k8s_pod_nodes: the second argument must be the result of the k8s_manifests filter")
    objects = _plain(result["objects"], "k8s_pod_nodes")
    workload = manifests.workload_of(objects)
    nodes = {}
    for resource in _plain(list(pods or []), "k8s_pod_nodes"):
        meta, spec, status = resource.get("metadata", {}), resource.get("spec", {}), resource.get("status", {})
        if not status.get("podIP") or meta.get("deletionTimestamp"):
            continue
        pod = {"name": meta["name"], "namespace": meta["namespace"], "ip": status["podIP"], "hostname": spec.get("hostname"),
               "subdomain": spec.get("subdomain"), "labels": meta.get("labels", {}), "ready": True,
               "service_account": spec.get("serviceAccountName", "default"),
               # The pod's own spec is what it runs; the template stands in for pods read without one.
               "spec": spec if spec.get("containers") else workload["spec"]["template"]["spec"]}
        try:
            nodes[manifests.pod_node_name(objects, pod)] = meta["name"]
        except (KeyError, ValueError) as exc:
            raise AnsibleFilterError("k8s_pod_nodes: cannot name pod %s: %s" % (meta.get("name"), exc))
    return nodes


class FilterModule(object):
    """beamops.cluster Kubernetes manifest filters."""

    def filters(self):
        return {"k8s_check": k8s_check, "k8s_manifests": k8s_manifests, "k8s_manifest_files": k8s_manifest_files,
                "k8s_pod_nodes": k8s_pod_nodes}
