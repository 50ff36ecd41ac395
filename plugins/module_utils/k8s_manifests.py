# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Kubernetes objects of a BEAM cluster, from one dict of inputs (the ``kubernetes`` role's variables without
their ``kubernetes_`` prefix), and the checks that must pass before any of them is applied.

- ``check(inputs)`` -> ``{"errors": [...], "warnings": [...]}``, each ``{"field": input key, "message": ...}``: every
  combination libcluster 3.5.0 cannot do, and bad input, named by the input key with the fix.
- ``build(inputs)`` -> ``{"objects": [...], "errors", "warnings", "topology", "names"}``: the objects in apply order
  (Namespace, RBAC, Secret, ConfigMap, Services, NetworkPolicy, PodDisruptionBudget, workload); no objects when
  there are errors. The cookie must be given (the role generates it once, or reads it back).
- The names as the cluster would make them, computed from the built objects only (for the invariant tests and for
  verification): ``cluster_pods`` (the pods the workload controller would create), ``kubelet_env`` (a container's
  environment as the kubelet resolves it, ``$(VAR)`` expansion included), ``pod_node_name`` (the node a pod runs as),
  ``coredns_records`` (what CoreDNS serves for the Services and pods) and ``dialled_names`` (whom libcluster dials
  from a pod, per strategy, mode and lookup, as in libcluster 3.5.0's source).

Pure Python (standard library and the topology renderer): no Ansible, no Kubernetes client.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import copy
import hashlib
import json
import math
import re

from ansible_collections.beamops.cluster.plugins.module_utils.topology import (
    KUBERNETES_STRATEGIES,
    VM_STRATEGIES,
    render as render_topology,
)

CONFIG_DIR = "/etc/beamops"
TMP_DIR = "/tmp"
FIELD_MANAGER = "beamops"
COOKIE_KEY = "cookie"
CONFIG_HASH_ANNOTATION = "beamops.cluster/config-sha256"
WORKLOADS = ("statefulset", "deployment")
FLAVORS = ("mix", "rebar3")
IP_FAMILIES = ("IPv4", "IPv6")
PULL_POLICIES = ("IfNotPresent", "Always", "Never")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
# Names the role sets in the container's environment; kubernetes_env may not override them.
RESERVED_ENV = frozenset([
    "POD_NAME", "POD_NAMESPACE", "POD_IP", "CLUSTER_DOMAIN", "RELEASE_DISTRIBUTION", "RELEASE_NODE", "RELEASE_COOKIE",
    "RELEASE_TMP", "RELEASE_VM_ARGS", "RELX_COOKIE", "VMARGS_PATH", "RELX_REPLACE_OS_VARS", "RELX_OUT_FILE_PATH",
    "RUNNER_LOG_DIR", "ERL_ZFLAGS", "ERL_EPMD_PORT", "ERL_CRASH_DUMP", "HOME",
])
# Strategy options the role derives from the objects it renders; a user value must agree or be left out.
DERIVED_OPTIONS = ("service", "namespace", "application_name", "kubernetes_node_basename", "kubernetes_selector",
                   "kubernetes_service_name", "kubernetes_cluster_name")
USER_OPTIONS = {
    "kubernetes_dns": ("polling_interval",),
    "kubernetes_dnssrv": ("polling_interval",),
    "kubernetes_api": ("polling_interval", "mode", "kubernetes_ip_lookup_mode", "kubernetes_use_cached_resources",
                       "kubernetes_master"),
}

DEFAULTS = {
    "release_name": "",
    "release_flavor": "mix",
    "app": "",
    "namespace": "",
    "create_namespace": False,
    "image": "",
    "image_pull_policy": "IfNotPresent",
    "image_pull_secrets": [],
    "release_root": "/app",
    "workload": "statefulset",
    "replicas": 3,
    "strategy": "kubernetes_dnssrv",
    "discovery": {},
    "cluster_domain": "cluster.local",
    "ip_family": "IPv4",
    "cookie": "",
    "epmd_port": 4369,
    "dist_port": 9100,
    "client_ports": [{"name": "http", "port": 4000}],
    "client_service": False,
    "client_service_type": "ClusterIP",
    "client_from": [],
    "net_ticktime": 60,
    "emulator_flags": [],
    "env": {},
    "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
    "run_as_user": 10001,
    "run_as_group": 10001,
    "probe_port": "http",
    "health_path": "/health",
    "ready_path": "/health",
    "startup_timeout": 300,
    "termination_grace_period": 60,
    "prestop_delay": 5,
}

_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RELEASE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_QUANTITY_RE = re.compile(r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
# A StatefulSet's pods get the label controller-revision-hash=<name>-<10 chars>, which must fit in 63 characters.
MAX_APP_LENGTH = 52
MAX_COOKIE_LENGTH = 255


def _error(out, field, message):
    out.append({"field": field, "message": message})


def normalise(inputs):
    """Inputs with every missing key set to its default, ``app`` and ``namespace`` derived when empty."""
    values = copy.deepcopy(DEFAULTS)
    values.update(copy.deepcopy(dict(inputs or {})))
    if not values.get("app") and isinstance(values.get("release_name"), str):
        values["app"] = values["release_name"].replace("_", "-")
    if not values.get("namespace"):
        values["namespace"] = values["app"]
    return values


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _dns_label(errors, field, value, limit=63, what="name"):
    if not isinstance(value, str) or not _LABEL_RE.match(value) or len(value) > limit:
        _error(errors, field, "must be a Kubernetes %s: at most %d lowercase letters, digits and '-', starting and ending with a "
               "letter or digit (got %r)" % (what, limit, value))
        return False
    return True


def _port(errors, field, value):
    if not _is_int(value) or not 0 < value < 65536:
        _error(errors, field, "must be a TCP port between 1 and 65535 (got %r)" % (value,))
        return False
    return True


def _cookie_problem(cookie):
    """Why a cookie cannot be used, or None."""
    if not isinstance(cookie, str) or not cookie:
        return "is empty"
    if cookie != cookie.strip() or any(ch.isspace() for ch in cookie):
        return "has whitespace or a newline; Erlang would not see the same cookie in a file and in an environment variable"
    if not all(33 <= ord(ch) < 127 for ch in cookie):
        return "has characters that are not printable ASCII"
    if len(cookie) > MAX_COOKIE_LENGTH:
        return "is longer than %d characters (an Erlang cookie is an atom)" % MAX_COOKIE_LENGTH
    return None


def _strategy_options(values):
    """The strategy options the role renders: the user's, plus those derived from the objects."""
    strategy = values["strategy"]
    given = values.get("discovery") or {}
    options = dict((k, v) for k, v in given.items() if k not in DERIVED_OPTIONS)
    headless = headless_service_name(values)
    if strategy == "kubernetes_dns":
        options["service"] = "%s.%s.svc.%s" % (headless, values["namespace"], values["cluster_domain"].rstrip("."))
    elif strategy == "kubernetes_dnssrv":
        options["service"] = headless
        options["namespace"] = values["namespace"]
    elif strategy == "kubernetes_api":
        options.setdefault("mode", "ip")
        # The role's default is pods: v1 Endpoints are deprecated since Kubernetes 1.33 (libcluster's default is endpoints).
        options.setdefault("kubernetes_ip_lookup_mode", "pods")
        options["kubernetes_selector"] = selector_string(api_selector(values, options["kubernetes_ip_lookup_mode"]))
        if options.get("mode") == "hostname":
            options["kubernetes_service_name"] = headless
    return options


def _derived_value(values, key):
    """What the role puts in a derived strategy option, for comparing with a user's value."""
    if key == "kubernetes_cluster_name":
        domain = values["cluster_domain"].rstrip(".")
        return domain[:-len(".local")] if domain.endswith(".local") else None
    return _strategy_options(values).get(key)


def check(inputs):
    """Every problem of the inputs, before anything is rendered or applied: ``{"errors": [...], "warnings": [...]}``."""
    values = normalise(inputs)
    errors = []
    warnings = []

    release_name = values["release_name"]
    if not isinstance(release_name, str) or not _RELEASE_NAME_RE.match(release_name):
        _error(errors, "release_name", "must be the release's name as in bin/NAME: lowercase letters, digits and '_', starting "
               "with a letter (got %r)" % (release_name,))
        return {"errors": errors, "warnings": warnings}
    app_ok = _dns_label(errors, "app", values["app"], MAX_APP_LENGTH, "object name (it also names the pods)")
    _dns_label(errors, "namespace", values["namespace"], 63, "namespace")
    if values["namespace"] == "default":
        _warn(warnings, "namespace", "is 'default'; give the cluster a namespace of its own (NetworkPolicy and RBAC are scoped by it)")
    for key, choices in (("release_flavor", FLAVORS), ("workload", WORKLOADS), ("ip_family", IP_FAMILIES),
                         ("image_pull_policy", PULL_POLICIES), ("client_service_type", SERVICE_TYPES)):
        if values[key] not in choices:
            _error(errors, key, "must be one of %s (got %r)" % (", ".join(choices), values[key]))
    for key in ("create_namespace", "client_service"):
        if not isinstance(values[key], bool):
            _error(errors, key, "must be true or false (got %r)" % (values[key],))

    image = values["image"]
    if not isinstance(image, str) or not image.strip():
        _error(errors, "image", "is empty: set it to the release's container image, for example registry.example.com/shop:1.4.2 "
               "(see docs/examples/ for Dockerfiles)")
    elif any(ch.isspace() for ch in image):
        _error(errors, "image", "has whitespace (got %r)" % (image,))
    elif "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
        _warn(warnings, "image", "%r has no fixed tag: pods restarted later may run another build; use a version tag or a digest" % image)
    secrets = values["image_pull_secrets"]
    if not isinstance(secrets, list) or not all(isinstance(s, str) and _LABEL_RE.match(s.replace(".", "-")) for s in secrets):
        _error(errors, "image_pull_secrets", "must be a list of Secret names (got %r)" % (secrets,))
    root = values["release_root"]
    if not isinstance(root, str) or not root.startswith("/") or any(ch.isspace() for ch in root) or root.rstrip("/") in ("", CONFIG_DIR, TMP_DIR):
        _error(errors, "release_root", "must be the absolute path where the image has the release (bin/%s), not / or %s or %s (got %r)"
               % (release_name, CONFIG_DIR, TMP_DIR, root))

    replicas = values["replicas"]
    if not _is_int(replicas) or replicas < 1:
        _error(errors, "replicas", "must be a whole number of at least 1 (got %r)" % (replicas,))

    cookie_problem = _cookie_problem(values["cookie"]) if values["cookie"] != "" else None
    if cookie_problem:
        _error(errors, "cookie", "%s. Use printable ASCII without spaces, for example the output of: openssl rand -hex 32" % cookie_problem)

    _check_ports(values, errors)
    _check_pod_settings(values, errors)

    strategy = values["strategy"]
    if strategy not in KUBERNETES_STRATEGIES:
        why = " (%s is a VM strategy: use the release role for VMs)" % strategy if strategy in VM_STRATEGIES else ""
        _error(errors, "strategy", "must be one of %s%s (got %r)" % (", ".join(KUBERNETES_STRATEGIES), why, strategy))
        return {"errors": errors, "warnings": warnings}
    discovery = values["discovery"]
    if not isinstance(discovery, dict):
        _error(errors, "discovery", "must be a dict of strategy options (got %s)" % type(discovery).__name__)
        return {"errors": errors, "warnings": warnings}
    if not app_ok or any(e["field"] in ("namespace", "cluster_domain") for e in errors):
        return {"errors": errors, "warnings": warnings}
    for key in discovery:
        if key in DERIVED_OPTIONS:
            wanted = _derived_value(values, key)
            if discovery[key] != wanted:
                _error(errors, "discovery.%s" % key, "is %r, but the role derives it from the objects it renders (%r); leave it unset"
                       % (discovery[key], wanted))
        elif key not in USER_OPTIONS[strategy]:
            _error(errors, "discovery.%s" % key, "is not an option of %s the role lets you set; known: %s"
                   % (strategy, ", ".join(USER_OPTIONS[strategy])))
    if errors:
        return {"errors": errors, "warnings": warnings}

    options = _strategy_options(values)
    topology = render_topology(strategy, options, basename=release_name, cluster_domain=values["cluster_domain"], target="kubernetes")
    for error in topology["errors"]:
        field = error["field"].replace("options.", "discovery.", 1)
        _error(errors, field, error["message"])

    statefulset = values["workload"] == "statefulset"
    mode = options.get("mode")
    lookup = options.get("kubernetes_ip_lookup_mode")
    if strategy == "kubernetes_dnssrv" and not statefulset:
        _error(errors, "workload", "is deployment, but kubernetes_dnssrv dials the SRV targets of the headless Service, which are "
               "stable pod names only for a StatefulSet's pods (a Deployment's would be <dashed-ip>.<service>...); use workload "
               "statefulset, or the kubernetes_dns strategy")
    if strategy == "kubernetes_api" and mode == "hostname" and not statefulset:
        _error(errors, "workload", "is deployment, but kubernetes_api mode hostname names pods <hostname>.<service>..., and only a "
               "StatefulSet's pods have a hostname under the headless Service; use workload statefulset, or mode ip or dns")
    if values["ip_family"] == "IPv6":
        if strategy == "kubernetes_dns":
            _error(errors, "ip_family", "is IPv6, but libcluster's Kubernetes.DNS asks for A records only (IPv4); use "
                   "kubernetes_dnssrv, or kubernetes_api with mode ip or hostname")
        if strategy == "kubernetes_api" and mode == "dns":
            _error(errors, "ip_family", "is IPv6, but kubernetes_api mode dns turns only IPv4 addresses into <a-b-c-d>.<ns>.pod names; "
                   "use mode ip or hostname")
    if strategy == "kubernetes_api" and lookup == "endpoints":
        _warn(warnings, "discovery.kubernetes_ip_lookup_mode", "is endpoints: libcluster 3.5.0 then reads the v1 Endpoints API, "
              "deprecated since Kubernetes 1.33 (a future conformant cluster may not fill it); use pods")
    if not statefulset:
        _warn(warnings, "workload", "is deployment: node names change whenever a pod is replaced, so nothing may keep per-node "
              "state (Mnesia on disk, quorum membership)")
    return {"errors": errors, "warnings": warnings}


def _warn(warnings, field, message):
    warnings.append({"field": field, "message": message})


def _check_ports(values, errors):
    ports = {}
    for key in ("epmd_port", "dist_port"):
        if _port(errors, key, values[key]):
            if values[key] in ports:
                _error(errors, key, "is %d, the same as %s; EPMD and the distribution listener need ports of their own" % (values[key], ports[values[key]]))
            ports[values[key]] = key
    names = {"epmd": "epmd_port", "dist": "dist_port"}
    client_ports = values["client_ports"]
    if not isinstance(client_ports, list):
        _error(errors, "client_ports", "must be a list of {name, port} (got %s)" % type(client_ports).__name__)
        return
    for index, item in enumerate(client_ports):
        field = "client_ports[%d]" % index
        if not isinstance(item, dict) or set(item) - {"name", "port"} or "name" not in item or "port" not in item:
            _error(errors, field, "must be a dict with exactly name and port, for example {name: http, port: 4000} (got %r)" % (item,))
            continue
        name = item["name"]
        if not isinstance(name, str) or not _PORT_NAME_RE.match(name) or len(name) > 15 or "--" in name or not re.search("[a-z]", name):
            _error(errors, field + ".name", "must be a port name: at most 15 lowercase letters, digits and '-', with a letter (got %r)" % (name,))
        elif name in names:
            _error(errors, field + ".name", "is %r, already used by %s" % (name, names[name]))
        else:
            names[name] = field
        if _port(errors, field + ".port", item["port"]):
            if item["port"] in ports:
                _error(errors, field + ".port", "is %d, already used by %s" % (item["port"], ports[item["port"]]))
            ports[item["port"]] = field
    peers = values["client_from"]
    if not isinstance(peers, list) or not all(isinstance(p, dict) and p and set(p) <= {"podSelector", "namespaceSelector", "ipBlock"}
                                              for p in peers):
        _error(errors, "client_from", "must be a list of NetworkPolicy peers (podSelector, namespaceSelector, ipBlock); [] admits "
               "the client ports from anywhere (got %r)" % (peers,))
    probe_port = values["probe_port"]
    if probe_port != "" and probe_port not in [p.get("name") for p in client_ports if isinstance(p, dict)]:
        _error(errors, "probe_port", "is %r, not the name of one of client_ports; name the HTTP port that serves health_path, or set "
               "it to '' to probe the distribution port over TCP" % (probe_port,))


def _check_pod_settings(values, errors):
    for key, low in (("net_ticktime", 1), ("startup_timeout", 1), ("termination_grace_period", 1), ("prestop_delay", 0),
                     ("run_as_user", 1), ("run_as_group", 1)):
        value = values[key]
        if not _is_int(value) or value < low:
            what = "a non-root id (1 or more; 10000 or more keeps clear of the image's system users)" if key.startswith("run_as") else \
                "a whole number of seconds of at least %d" % low
            _error(errors, key, "must be %s (got %r)" % (what, value))
    if _is_int(values["prestop_delay"]) and _is_int(values["termination_grace_period"]) and \
            values["prestop_delay"] >= values["termination_grace_period"] > 0:
        _error(errors, "prestop_delay", "(%s s) must be shorter than termination_grace_period (%s s), or the node is killed before "
               "it stops cleanly" % (values["prestop_delay"], values["termination_grace_period"]))
    for key in ("health_path", "ready_path"):
        path = values[key]
        if not isinstance(path, str) or not path.startswith("/") or any(ch.isspace() for ch in path):
            _error(errors, key, "must be an HTTP path starting with / (got %r)" % (path,))
    flags = values["emulator_flags"]
    if not isinstance(flags, list) or not all(isinstance(f, str) and f.strip() and "\n" not in f for f in flags):
        _error(errors, "emulator_flags", "must be a list of single-line emulator flags such as '+P 2000000' (got %r)" % (flags,))
    elif any("inet_dist_listen" in f or f.split()[0] in ("-name", "-sname", "-setcookie") for f in flags):
        _error(errors, "emulator_flags", "sets the node name, cookie or distribution port, which the role sets (dist_port, cookie); "
               "remove those flags")
    env = values["env"]
    if not isinstance(env, dict):
        _error(errors, "env", "must be a dict of NAME: value (got %s)" % type(env).__name__)
    else:
        for name, value in env.items():
            if not isinstance(name, str) or not _ENV_NAME_RE.match(name):
                _error(errors, "env.%s" % name, "is not an environment variable name (letters, digits, '_')")
            elif name in RESERVED_ENV:
                _error(errors, "env.%s" % name, "is set by the role; use the role's own variable instead")
            elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
                _error(errors, "env.%s" % name, "must be a string or a number (got %r); quote it" % (value,))
    resources = values["resources"]
    if not isinstance(resources, dict) or set(resources) - {"requests", "limits"} or not all(
            isinstance(v, dict) and set(v) <= {"cpu", "memory", "ephemeral-storage"} and
            all(isinstance(q, (str, int)) and not isinstance(q, bool) and _QUANTITY_RE.match(str(q)) for q in v.values())
            for v in resources.values()):
        _error(errors, "resources", "must be {requests: {cpu, memory}, limits: {cpu, memory}} with quantities such as 250m or 512Mi "
               "(got %r)" % (resources,))
    domain = values["cluster_domain"]
    if not isinstance(domain, str) or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\.?$", domain):
        _error(errors, "cluster_domain", "must be the cluster's DNS domain such as cluster.local (got %r)" % (domain,))


# ---------------------------------------------------------------------------------------------------------------
# Names and labels


def headless_service_name(values):
    return "%s-headless" % values["app"]


def selector_labels(values):
    return {"app.kubernetes.io/name": values["release_name"], "app.kubernetes.io/instance": values["app"]}


def _labels(values, component):
    labels = selector_labels(values)
    labels["app.kubernetes.io/component"] = component
    labels["app.kubernetes.io/managed-by"] = "beamops.cluster"
    return labels


def api_selector(values, lookup):
    """The label selector libcluster's API strategy sends: the headless Service's labels (Endpoints copy them) or the pods'."""
    if lookup == "endpoints":
        return {"app.kubernetes.io/instance": values["app"], "app.kubernetes.io/component": "discovery"}
    return selector_labels(values)


def selector_string(labels):
    return ",".join("%s=%s" % (k, labels[k]) for k in sorted(labels))


def parse_selector(text):
    """``k=v,k2=v2`` -> dict (equality selectors only, which is all the role renders)."""
    return dict(part.split("=", 1) for part in text.split(",") if part)


def _matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def _meta(values, name, component, namespaced=True):
    meta = {"name": name, "labels": _labels(values, component)}
    if namespaced:
        meta["namespace"] = values["namespace"]
    return meta


# ---------------------------------------------------------------------------------------------------------------
# Objects


def build(inputs):
    """The objects in apply order, or none with the errors; see the module documentation."""
    values = normalise(inputs)
    result = check(values)
    result.update({"objects": [], "topology": {}, "names": {}, "absent": []})
    if not result["errors"] and values["cookie"] == "":
        _error(result["errors"], "cookie", "is empty: the role generates it once (or reads back the existing Secret) before rendering")
    if result["errors"]:
        return result
    options = _strategy_options(values)
    topology = render_topology(values["strategy"], options, basename=values["release_name"],
                               cluster_domain=values["cluster_domain"], target="kubernetes")
    app = values["app"]
    names = {
        "workload": app, "headless_service": headless_service_name(values), "client_service": app,
        "secret": "%s-cookie" % app, "config_map": "%s-config" % app, "service_account": "%s-discovery" % app,
        "role": "%s-discovery" % app, "role_binding": "%s-discovery" % app, "pdb": app, "network_policy": app,
        "namespace": values["namespace"], "kind": "StatefulSet" if values["workload"] == "statefulset" else "Deployment",
    }
    api = values["strategy"] == "kubernetes_api"
    objects = []
    if values["create_namespace"]:
        objects.append(_namespace(values))
    if api:
        objects.extend(_rbac(values, names, options["kubernetes_ip_lookup_mode"]))
    config_map = _config_map(values, names, topology)
    objects.append(_secret(values, names))
    objects.append(config_map)
    objects.append(_headless_service(values, names))
    if values["client_service"] and values["client_ports"]:
        objects.append(_client_service(values, names))
    objects.append(_network_policy(values, names))
    objects.append(_pdb(values, names))
    objects.append(_workload(values, names, topology, config_map, api))
    rendered = set((o["kind"], o["metadata"]["name"]) for o in objects)
    # Objects the role makes in other configurations (the other workload kind, RBAC, the client Service): delete on apply.
    candidates = [("apps/v1", "StatefulSet", app), ("apps/v1", "Deployment", app), ("v1", "Service", names["client_service"]),
                  ("rbac.authorization.k8s.io/v1", "RoleBinding", names["role_binding"]),
                  ("rbac.authorization.k8s.io/v1", "Role", names["role"]), ("v1", "ServiceAccount", names["service_account"])]
    absent = [{"api_version": a, "kind": k, "name": n} for a, k, n in candidates if (k, n) not in rendered]
    result.update({"objects": objects, "topology": topology, "names": names, "absent": absent})
    return result


def _namespace(values):
    meta = {"name": values["namespace"], "labels": _labels(values, "namespace")}
    # The pods meet the restricted Pod Security Standard, so the namespace can enforce it.
    meta["labels"]["pod-security.kubernetes.io/enforce"] = "restricted"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def _rbac(values, names, lookup):
    resource = "endpoints" if lookup == "endpoints" else "pods"
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(values, names["service_account"], "discovery"),
               "automountServiceAccountToken": True}
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(values, names["role"], "discovery"),
            "rules": [{"apiGroups": [""], "resources": [resource], "verbs": ["get", "list"]}]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": _meta(values, names["role_binding"], "discovery"),
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": names["role"]},
               "subjects": [{"kind": "ServiceAccount", "name": names["service_account"], "namespace": values["namespace"]}]}
    return [account, role, binding]


def _secret(values, names):
    data = base64.b64encode(values["cookie"].encode("ascii")).decode("ascii")
    # Immutable: a cookie that changes under running pods splits the cluster (pitfall 8).
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(values, names["secret"], "cookie"), "type": "Opaque",
            "immutable": True, "data": {COOKIE_KEY: data}}


def vm_args_text(values):
    """The vm.args the node boots with: the pinned distribution port and kernel settings (rebar3: also the node name)."""
    lines = ["## beamops.cluster: distribution settings of %s (%s)" % (
        values["app"], "RELEASE_VM_ARGS" if values["release_flavor"] == "mix" else "VMARGS_PATH, with RELX_REPLACE_OS_VARS")]
    if values["release_flavor"] == "rebar3":
        lines.append("-name ${RELEASE_NODE}")
    lines.append("-kernel inet_dist_listen_min %d inet_dist_listen_max %d" % (values["dist_port"], values["dist_port"]))
    lines.append("-kernel net_ticktime %d" % values["net_ticktime"])
    if values["ip_family"] == "IPv6":
        lines.append("-proto_dist inet6_tcp")
    lines.extend(values["emulator_flags"])
    return "\n".join(lines) + "\n"


def wrap_terms(text, width=100):
    """Erlang term text with line breaks after ``, `` (outside quotes) so that no line passes ``width`` where avoidable.

    Whitespace between tokens means nothing to ``file:consult``, so the terms are the renderer's exactly; the
    ConfigMap then reads (and lints) as short lines. Comment lines stay as they are.
    """
    lines = []
    for line in text.split("\n"):
        if line.startswith("%") or len(line) <= width:
            lines.append(line)
            continue
        quote, start, current, pieces = None, 0, "", []
        for index, ch in enumerate(line):
            if quote:
                if ch == "\\":
                    continue
                if ch == quote and line[index - 1] != "\\":
                    quote = None
            elif ch in "'\"":
                quote = ch
            elif ch == "," and line[index + 1:index + 2] == " ":
                pieces.append(line[start:index + 1])
                start = index + 2
        pieces.append(line[start:])
        for piece in pieces:
            if current and len(current) + 1 + len(piece) > width:
                lines.append(current)
                current = "  " + piece
            else:
                current = "%s %s" % (current, piece) if current else piece
        lines.append(current)
    return "\n".join(lines)


def _config_map(values, names, topology):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(values, names["config_map"], "config"),
            "data": {"topology.config": wrap_terms(topology["config"]), "vm.args": vm_args_text(values)}}


def _service_ports(values):
    return [{"name": "epmd", "port": values["epmd_port"], "targetPort": "epmd", "protocol": "TCP"},
            {"name": "dist", "port": values["dist_port"], "targetPort": "dist", "protocol": "TCP"}]


def _headless_service(values, names):
    spec = {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": selector_labels(values), "ports": _service_ports(values)}
    if values["ip_family"] == "IPv6":
        spec["ipFamilies"] = ["IPv6"]
        spec["ipFamilyPolicy"] = "SingleStack"
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(values, names["headless_service"], "discovery"), "spec": spec}


def _client_service(values, names):
    ports = [{"name": p["name"], "port": p["port"], "targetPort": p["name"], "protocol": "TCP"} for p in values["client_ports"]]
    spec = {"type": values["client_service_type"], "selector": selector_labels(values), "ports": ports}
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(values, names["client_service"], "client"), "spec": spec}


def _network_policy(values, names):
    selector = {"matchLabels": selector_labels(values)}
    rules = [{"from": [{"podSelector": copy.deepcopy(selector)}],
              "ports": [{"protocol": "TCP", "port": values["epmd_port"]}, {"protocol": "TCP", "port": values["dist_port"]}]}]
    if values["client_ports"]:
        rule = {"ports": [{"protocol": "TCP", "port": p["port"]} for p in values["client_ports"]]}
        if values["client_from"]:
            rule["from"] = copy.deepcopy(values["client_from"])
        rules.append(rule)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta(values, names["network_policy"], "network"),
            "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": rules}}


def _pdb(values, names):
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(values, names["pdb"], "node"),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(values)}}}


def needs_start_script(topology):
    """Whether the node name needs a value the kubelet cannot make (the dashed pod IP): then a shell computes it."""
    return "$(POD_IP_DASHED)" in topology["started_as"]


def start_script(values, topology):
    """The ``sh -c`` script of a pod whose node name needs the dashed pod IP (kubernetes_api mode dns, IPv4 only).

    It uses ``${VAR}`` only, never ``$(`` or ``$$``, which the kubelet would expand or unescape in args.
    """
    name = topology["started_as"].replace("$(POD_IP_DASHED)", "$1-$2-$3-$4")
    name = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", r"${\1}", name)
    return "\n".join([
        "set -eu",
        "# The node name needs the pod IP with '-' for '.', which the downward API cannot give.",
        "IFS=.",
        "set -- ${POD_IP}",
        "unset IFS",
        'RELEASE_NODE="%s"' % name,
        "export RELEASE_NODE",
        'exec %s %s' % (_release_bin(values), _start_command(values)),
    ]) + "\n"


def _release_bin(values):
    return "%s/bin/%s" % (values["release_root"].rstrip("/"), values["release_name"])


def _start_command(values):
    return "start" if values["release_flavor"] == "mix" else "foreground"


def _env(values, names, topology):
    def field(name, path):
        return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}
    env = [field("POD_NAME", "metadata.name"), field("POD_NAMESPACE", "metadata.namespace"), field("POD_IP", "status.podIP"),
           {"name": "CLUSTER_DOMAIN", "value": values["cluster_domain"].rstrip(".")}]
    cookie_var = "RELEASE_COOKIE" if values["release_flavor"] == "mix" else "RELX_COOKIE"
    if values["release_flavor"] == "mix":
        env.append({"name": "RELEASE_DISTRIBUTION", "value": "name"})
    # After POD_NAME, POD_NAMESPACE, POD_IP and CLUSTER_DOMAIN: the kubelet expands $(VAR) only from entries above.
    if not needs_start_script(topology):
        env.append({"name": "RELEASE_NODE", "value": topology["started_as"]})
    env.append({"name": cookie_var, "valueFrom": {"secretKeyRef": {"name": names["secret"], "key": COOKIE_KEY}}})
    if values["release_flavor"] == "mix":
        env.extend([{"name": "RELEASE_TMP", "value": TMP_DIR},
                    {"name": "RELEASE_VM_ARGS", "value": "%s/vm.args" % CONFIG_DIR}])
    else:
        env.extend([{"name": "VMARGS_PATH", "value": "%s/vm.args" % CONFIG_DIR},
                    {"name": "RELX_REPLACE_OS_VARS", "value": "true"},
                    {"name": "RELX_OUT_FILE_PATH", "value": TMP_DIR},
                    {"name": "RUNNER_LOG_DIR", "value": "%s/log" % TMP_DIR}])
    env.extend([{"name": "ERL_ZFLAGS", "value": "-config %s/topology.config" % CONFIG_DIR},
                {"name": "ERL_EPMD_PORT", "value": str(values["epmd_port"])},
                {"name": "ERL_CRASH_DUMP", "value": "%s/erl_crash.dump" % TMP_DIR}])
    for name in sorted(values["env"]):
        env.append({"name": name, "value": str(values["env"][name])})
    return env


def _probe(values, path, period, timeout, failures):
    if values["probe_port"]:
        action = {"httpGet": {"path": path, "port": values["probe_port"]}}
    else:
        action = {"tcpSocket": {"port": "dist"}}
    action.update({"periodSeconds": period, "timeoutSeconds": timeout, "failureThreshold": failures})
    return action


def _container(values, names, topology):
    ports = [{"name": "epmd", "containerPort": values["epmd_port"], "protocol": "TCP"},
             {"name": "dist", "containerPort": values["dist_port"], "protocol": "TCP"}]
    ports += [{"name": p["name"], "containerPort": p["port"], "protocol": "TCP"} for p in values["client_ports"]]
    if needs_start_script(topology):
        command, args = ["/bin/sh", "-c"], [start_script(values, topology)]
    else:
        command, args = [_release_bin(values)], [_start_command(values)]
    container = {
        "name": values["app"],
        "image": values["image"],
        "imagePullPolicy": values["image_pull_policy"],
        "command": command,
        "args": args,
        "env": _env(values, names, topology),
        "ports": ports,
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}, {"name": "tmp", "mountPath": TMP_DIR}],
        # Boot may take a while; readiness is asked often; liveness only restarts a node silent for 3 minutes.
        "startupProbe": _probe(values, values["health_path"], 5, 3, int(math.ceil(values["startup_timeout"] / 5.0))),
        "readinessProbe": _probe(values, values["ready_path"], 10, 5, 3),
        "livenessProbe": _probe(values, values["health_path"], 30, 10, 6),
        "resources": copy.deepcopy(values["resources"]),
        "securityContext": {"runAsNonRoot": True, "runAsUser": values["run_as_user"], "runAsGroup": values["run_as_group"],
                            "allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if values["prestop_delay"] > 0:
        # Peers and Services drop the pod while it still answers; SIGTERM (a clean init:stop) comes after the delay.
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(values["prestop_delay"])]}}}
    return container


def _config_hash(config_map):
    return hashlib.sha256(json.dumps(config_map["data"], sort_keys=True).encode("utf-8")).hexdigest()


def _workload(values, names, topology, config_map, api):
    labels = _labels(values, "node")
    pod_spec = {
        "automountServiceAccountToken": api,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": values["termination_grace_period"],
        "securityContext": {"runAsNonRoot": True, "runAsUser": values["run_as_user"], "runAsGroup": values["run_as_group"],
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": selector_labels(values)}}
            for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")],
        "containers": [_container(values, names, topology)],
        "volumes": [{"name": "config", "configMap": {"name": names["config_map"], "defaultMode": 0o444}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
    }
    if api:
        pod_spec["serviceAccountName"] = names["service_account"]
    if values["image_pull_secrets"]:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in values["image_pull_secrets"]]
    template = {"metadata": {"labels": labels, "annotations": {CONFIG_HASH_ANNOTATION: _config_hash(config_map)}}, "spec": pod_spec}
    spec = {"replicas": values["replicas"], "selector": {"matchLabels": selector_labels(values)}, "template": template}
    if values["workload"] == "statefulset":
        spec.update({"serviceName": names["headless_service"], "podManagementPolicy": "Parallel",
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}})
        kind = "StatefulSet"
    else:
        # A new pod is up before an old one goes, so the mesh never has fewer than replicas nodes during a rollout.
        spec["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
        kind = "Deployment"
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": _meta(values, names["workload"], "node"), "spec": spec}


def file_name(index, obj):
    """File name of an object in render-only mode: ``NN-kind-name.yaml`` (NN keeps the apply order for kubectl apply -f)."""
    return "%02d-%s-%s.yaml" % (index, obj["kind"].lower(), obj["metadata"]["name"])


# ---------------------------------------------------------------------------------------------------------------
# The cluster's view: what the controllers, the kubelet, CoreDNS and libcluster make of the objects


def find(objects, kind, name=None, namespace=None):
    for obj in objects:
        meta = obj.get("metadata", {})
        if obj.get("kind") == kind and (name is None or meta.get("name") == name) and \
                (namespace is None or meta.get("namespace") in (None, namespace)):
            return obj
    return None


def workload_of(objects):
    return find(objects, "StatefulSet") or find(objects, "Deployment")


def cluster_pods(objects, addresses=None):
    """The pods the workload's controller would create, each ``{name, namespace, ip, hostname, subdomain, labels, ready,
    service_account, spec}``; ``addresses`` (one per replica) stands for the pod IPs the network gives them."""
    workload = workload_of(objects)
    spec = workload["spec"]
    template = spec["template"]
    namespace = workload["metadata"]["namespace"]
    replicas = spec["replicas"]
    family6 = any(s.get("spec", {}).get("ipFamilies") == ["IPv6"] for s in objects if s.get("kind") == "Service")
    if addresses is None:
        addresses = [("fd00:10:244::%x" % (16 + i)) if family6 else "10.244.%d.%d" % (i // 200, 10 + i % 200) for i in range(replicas)]
    pods = []
    template_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode("utf-8")).hexdigest()
    for index in range(replicas):
        labels = dict(template["metadata"]["labels"])
        if workload["kind"] == "StatefulSet":
            # The StatefulSet controller names pods <name>-<ordinal> and sets hostname and subdomain (= serviceName).
            name = "%s-%d" % (workload["metadata"]["name"], index)
            hostname, subdomain = name, spec.get("serviceName")
            labels["statefulset.kubernetes.io/pod-name"] = name
        else:
            # A ReplicaSet's pods: <deployment>-<template hash>-<5 random>; hostname/subdomain only if the template sets them.
            name = "%s-%s-%s" % (workload["metadata"]["name"], template_hash[:10], hashlib.sha256(str(index).encode()).hexdigest()[:5])
            hostname, subdomain = template["spec"].get("hostname"), template["spec"].get("subdomain")
        pods.append({"name": name, "namespace": namespace, "ip": addresses[index], "hostname": hostname, "subdomain": subdomain,
                     "labels": labels, "ready": True, "service_account": template["spec"].get("serviceAccountName", "default"),
                     "spec": template["spec"]})
    return pods


def expand(text, variables):
    """Kubernetes ``$(VAR)`` expansion: defined names are replaced, ``$$`` becomes ``$``, anything else stays as it is."""
    out = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    out.append(variables[name] if name in variables else text[i:end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def _pod_field(pod, path):
    simple = {"metadata.name": pod["name"], "metadata.namespace": pod["namespace"], "status.podIP": pod["ip"],
              "spec.serviceAccountName": pod["service_account"]}
    if path in simple:
        return simple[path]
    match = re.match(r"^metadata\.labels\['(.+)'\]$", path)
    if match:
        return pod["labels"].get(match.group(1), "")
    raise ValueError("fieldRef %s is not simulated" % path)


def kubelet_env(objects, pod, container=None):
    """The container's environment as the kubelet resolves it: entries in order, ``$(VAR)`` from earlier entries only,
    ``fieldRef`` from the pod, ``secretKeyRef`` / ``configMapKeyRef`` from the objects. Raises ValueError where the
    kubelet would refuse to start the container (a missing Secret or key)."""
    container = container or pod["spec"]["containers"][0]
    env = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = expand(entry["value"], env)
            continue
        source = entry["valueFrom"]
        if "fieldRef" in source:
            env[entry["name"]] = _pod_field(pod, source["fieldRef"]["fieldPath"])
        elif "secretKeyRef" in source or "configMapKeyRef" in source:
            kind, ref = ("Secret", source["secretKeyRef"]) if "secretKeyRef" in source else ("ConfigMap", source["configMapKeyRef"])
            obj = find(objects, kind, ref["name"], pod["namespace"])
            if obj is None:
                raise ValueError("%s %s/%s does not exist (CreateContainerConfigError)" % (kind, pod["namespace"], ref["name"]))
            if kind == "Secret":
                data = dict((k, base64.b64decode(v).decode("utf-8")) for k, v in obj.get("data", {}).items())
                data.update(obj.get("stringData", {}))
            else:
                data = obj.get("data", {})
            if ref["key"] not in data:
                raise ValueError("%s %s has no key %s (CreateContainerConfigError)" % (kind, ref["name"], ref["key"]))
            env[entry["name"]] = data[ref["key"]]
        else:
            raise ValueError("env %s: valueFrom %s is not simulated" % (entry["name"], sorted(source)))
    return env


def container_argv(objects, pod, container=None):
    """command + args after the kubelet's ``$(VAR)`` expansion."""
    container = container or pod["spec"]["containers"][0]
    env = kubelet_env(objects, pod, container)
    return [expand(part, env) for part in container.get("command", []) + container.get("args", [])]


def mounted_files(objects, pod, container=None):
    """Path -> (text, mode) of every ConfigMap and Secret file the container sees, and the emptyDir mount points (text None)."""
    container = container or pod["spec"]["containers"][0]
    volumes = dict((v["name"], v) for v in pod["spec"].get("volumes", []))
    files = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" in volume or "secret" in volume:
            kind, ref = ("ConfigMap", volume["configMap"]) if "configMap" in volume else ("Secret", volume["secret"])
            name = ref.get("name") or ref.get("secretName")
            obj = find(objects, kind, name, pod["namespace"])
            if obj is None:
                raise ValueError("%s %s mounted at %s does not exist" % (kind, name, mount["mountPath"]))
            data = obj.get("data", {})
            if kind == "Secret":
                data = dict((k, base64.b64decode(v).decode("utf-8")) for k, v in data.items())
            for key, text in data.items():
                files["%s/%s" % (mount["mountPath"].rstrip("/"), key)] = (text, ref.get("defaultMode", 0o644))
        elif "emptyDir" in volume:
            files[mount["mountPath"]] = (None, 0o1777)
    return files


def pod_node_name(objects, pod):
    """The node name the pod's BEAM runs as, from its resolved env, its start script and (rebar3) its vm.args."""
    env = kubelet_env(objects, pod)
    argv = container_argv(objects, pod)
    node = env.get("RELEASE_NODE")
    if argv[:2] == ["/bin/sh", "-c"]:
        match = re.search(r'^RELEASE_NODE="(.*)"$', argv[2], re.M)
        if match:
            # The script splits POD_IP on '.' into $1..$4 and expands ${VAR} from its environment.
            parts = env["POD_IP"].split(".")
            node = re.sub(r"\$([1-4])", lambda m: parts[int(m.group(1)) - 1], match.group(1))
            node = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), node)
    vm_args_path = env.get("VMARGS_PATH")
    if vm_args_path:
        text = mounted_files(objects, pod)[vm_args_path][0]
        line = [ln for ln in text.splitlines() if ln.startswith("-name ")][0]
        # relx with RELX_REPLACE_OS_VARS replaces ${VAR} from the environment.
        node = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: (dict(env, RELEASE_NODE=node or "")).get(m.group(1), ""),
                      line.split(None, 1)[1].strip())
    return node


def _dashed(ip):
    return ip.replace(".", "-").replace(":", "-")


def endpoints_objects(objects, pods):
    """The Endpoints the endpoints controller keeps for each Service: Service labels copied, addresses of selected pods
    (not-ready ones only with publishNotReadyAddresses), hostname only where the pod's subdomain is that Service."""
    result = []
    for svc in objects:
        if svc.get("kind") != "Service" or "selector" not in svc["spec"]:
            continue
        meta = svc["metadata"]
        addresses = []
        for pod in pods:
            if pod["namespace"] != meta["namespace"] or not _matches(svc["spec"]["selector"], pod["labels"]):
                continue
            if not (pod["ready"] or svc["spec"].get("publishNotReadyAddresses")):
                continue
            address = {"ip": pod["ip"], "targetRef": {"kind": "Pod", "name": pod["name"], "namespace": pod["namespace"]}}
            if pod["hostname"] and pod["subdomain"] == meta["name"]:
                address["hostname"] = pod["hostname"]
            addresses.append(address)
        labels = dict(meta.get("labels", {}))
        if svc["spec"].get("clusterIP") == "None":
            labels["service.kubernetes.io/headless"] = ""
        result.append({"kind": "Endpoints", "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": labels},
                       "subsets": [{"addresses": addresses, "ports": svc["spec"]["ports"]}] if addresses else []})
    return result


def coredns_records(objects, pods, zone):
    """What CoreDNS's kubernetes plugin (``pods insecure``) serves for the objects: ``{"A": {name: [ip]}, "SRV": {name:
    [(priority, weight, port, target)]}}`` (AAAA answers are listed under A for IPv6 pods)."""
    zone = zone.rstrip(".")
    a_records, srv = {}, {}
    for index, svc in enumerate(o for o in objects if o.get("kind") == "Service"):
        meta, spec = svc["metadata"], svc["spec"]
        base = "%s.%s.svc.%s" % (meta["name"], meta["namespace"], zone)
        if spec.get("clusterIP") != "None":
            cluster_ip = "10.96.0.%d" % (10 + index)
            a_records[base] = [cluster_ip]
            for port in spec["ports"]:
                srv.setdefault("_%s._tcp.%s" % (port["name"], base), []).append((0, 100, port["port"], base))
            continue
        endpoints = endpoints_objects([svc], pods)
        addresses = endpoints[0]["subsets"][0]["addresses"] if endpoints and endpoints[0]["subsets"] else []
        if addresses:
            a_records[base] = [a["ip"] for a in addresses]
        weight = 100 // len(addresses) if addresses else 0
        for address in addresses:
            target = "%s.%s" % (address.get("hostname") or _dashed(address["ip"]), base)
            a_records.setdefault(target, []).append(address["ip"])
            for port in spec["ports"]:
                record = (0, weight, port["port"], target)
                srv.setdefault("_%s._tcp.%s" % (port["name"], base), []).append(record)
                srv.setdefault(base, []).append(record)
    for pod in pods:
        a_records.setdefault("%s.%s.pod.%s" % (_dashed(pod["ip"]), pod["namespace"], zone), []).append(pod["ip"])
    return {"A": a_records, "SRV": srv}


def parse_erlang_terms(text):
    """The terms of an Erlang ``file:consult`` text, for the subset the topology renderer writes: lists, tuples, atoms
    (plain and quoted), binaries ``<<"...">>`` and integers. Atoms become ``("atom", name)``, binaries ``str``."""
    tokens = re.findall(r'%[^\n]*|<<"(?:[^"\\]|\\.)*">>|<<[0-9,]*>>|\'(?:[^\'\\]|\\.)*\'|"(?:[^"\\]|\\.)*"|[\[\]{},.]|-?[0-9]+|[a-z][A-Za-z0-9_@]*',
                        text)
    tokens = [t for t in tokens if not t.startswith("%")]
    position = [0]

    def unescape(body):
        return re.sub(r"\\(.)", r"\1", body)

    def term():
        token = tokens[position[0]]
        position[0] += 1
        if token in ("[", "{"):
            close = "]" if token == "[" else "}"
            items = []
            while tokens[position[0]] != close:
                items.append(term())
                if tokens[position[0]] == ",":
                    position[0] += 1
            position[0] += 1
            return items if token == "[" else tuple(items)
        if token.startswith('<<"'):
            return unescape(token[3:-3])
        if token.startswith("<<"):
            return bytes(int(b) for b in token[2:-2].split(",") if b).decode("utf-8")
        if token.startswith("'"):
            return ("atom", unescape(token[1:-1]))
        if token.startswith('"'):
            return unescape(token[1:-1])
        if re.match(r"^-?[0-9]+$", token):
            return int(token)
        return ("atom", token)

    terms = []
    while position[0] < len(tokens):
        terms.append(term())
        if position[0] < len(tokens) and tokens[position[0]] == ".":
            position[0] += 1
    return terms


def _proplist(items):
    return dict((k[1] if isinstance(k, tuple) else k, v) for k, v in items)


def libcluster_topology(objects, pod):
    """(strategy module, config dict) of the pod's topology file, as the node reads it through ``-config``."""
    env = kubelet_env(objects, pod)
    path = re.search(r"-config (\S+)", env["ERL_ZFLAGS"]).group(1)
    text = mounted_files(objects, pod)[path][0]
    apps = _proplist(parse_erlang_terms(text)[0])
    topologies = _proplist(apps["libcluster"])["topologies"]
    strategy = _proplist(topologies[0][1])
    config = dict((k, v[1] if isinstance(v, tuple) and len(v) == 2 and v[0] == "atom" else v) for k, v in _proplist(strategy["config"]).items())
    return strategy["strategy"][1], config


def _resolve(records, kind, name, search):
    """A resolver's answer with the pod's search list (Erlang's inet_res tries a dotted name as it is first)."""
    table = records[kind]
    candidates = [name.rstrip(".")] if name.endswith(".") or "." in name else []
    candidates += ["%s.%s" % (name, s) for s in search]
    for candidate in candidates:
        if candidate in table:
            return table[candidate]
    return []


def _role_grants(objects, namespace, account, resource):
    """Whether a Role bound to the service account lets it get and list ``resource`` (the API strategy's 403 otherwise)."""
    for binding in objects:
        if binding.get("kind") != "RoleBinding" or binding["metadata"]["namespace"] != namespace:
            continue
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == account and s.get("namespace") == namespace
                   for s in binding.get("subjects", [])):
            continue
        role = find(objects, "Role", binding["roleRef"]["name"], namespace)
        for rule in (role or {}).get("rules", []):
            if "" in rule["apiGroups"] and resource in rule["resources"] and {"get", "list"} <= set(rule["verbs"]):
                return True
    return False


def dialled_names(objects, pods, pod, zone):
    """The node names libcluster 3.5.0 dials from ``pod`` (self included), given the cluster's pods and DNS ``zone``."""
    module, config = libcluster_topology(objects, pod)
    env = kubelet_env(objects, pod)
    namespace = pod["namespace"]
    search = ["%s.svc.%s" % (namespace, zone), "svc.%s" % zone, zone]
    records = coredns_records(objects, pods, zone)
    if module == "Elixir.Cluster.Strategy.Kubernetes.DNS":
        addresses = _resolve(records, "A", config["service"], search)
        return sorted("%s@%s" % (config["application_name"], ip) for ip in addresses if ":" not in ip)
    if module == "Elixir.Cluster.Strategy.Kubernetes.DNSSRV":
        domain = env.get("CLUSTER_DOMAIN", "cluster.local.")
        query = "%s.%s.svc.%s" % (config["service"], config["namespace"], domain)
        return sorted(set("%s@%s" % (config["application_name"], r[3]) for r in _resolve(records, "SRV", query, search)))
    if module == "Elixir.Cluster.Strategy.Kubernetes":
        spec = pod["spec"]
        account = spec.get("serviceAccountName", "default")
        lookup = config.get("kubernetes_ip_lookup_mode", "endpoints")
        if spec.get("automountServiceAccountToken") is False:
            return []  # no token: the API answers 401/403 and libcluster finds nobody
        if not _role_grants(objects, namespace, account, "endpoints" if lookup == "endpoints" else "pods"):
            return []
        ns = config.get("kubernetes_namespace", namespace)
        selector = parse_selector(config["kubernetes_selector"])
        base, mode = config["kubernetes_node_basename"], config.get("mode", "ip")
        domain = "%s.local" % config.get("kubernetes_cluster_name", "cluster")
        found = []
        if lookup == "endpoints":
            for endpoints in endpoints_objects(objects, pods):
                if endpoints["metadata"]["namespace"] != ns or not _matches(selector, endpoints["metadata"]["labels"]):
                    continue
                for subset in endpoints["subsets"]:
                    for address in subset["addresses"]:
                        found.append((address["ip"], address.get("hostname"), address["targetRef"]["namespace"]))
        else:
            for other in pods:
                if other["namespace"] == ns and _matches(selector, other["labels"]) and other["ip"]:
                    found.append((other["ip"], other["hostname"], other["namespace"]))
        names = set()
        for ip, hostname, other_ns in found:
            if mode == "ip":
                names.add("%s@%s" % (base, ip))
            elif mode == "dns":
                names.add("%s@%s.%s.pod.%s" % (base, ip.replace(".", "-"), other_ns, domain))
            else:
                names.add("%s@%s.%s.%s.svc.%s" % (base, hostname or "", config.get("kubernetes_service_name", ""), other_ns, domain))
        return sorted(names)
    raise ValueError("strategy %s is not a Kubernetes strategy" % module)


def kubelet_hosts_file(pod, zone):
    """The /etc/hosts the kubelet writes into a pod: its FQDN under its subdomain when it has one, else its hostname."""
    hostname = pod["hostname"] or pod["name"]
    lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if pod["subdomain"]:
        lines.append("%s\t%s.%s.%s.svc.%s\t%s" % (pod["ip"], hostname, pod["subdomain"], pod["namespace"], zone.rstrip("."), hostname))
    else:
        lines.append("%s\t%s" % (pod["ip"], hostname))
    return "\n".join(lines) + "\n"


def kubelet_resolv_conf(pod, nameserver, zone):
    """The /etc/resolv.conf of a pod with dnsPolicy ClusterFirst: the cluster DNS, the namespace's search list, ndots 5."""
    zone = zone.rstrip(".")
    return "nameserver %s\nsearch %s.svc.%s svc.%s %s\noptions ndots:5\n" % (nameserver, pod["namespace"], zone, zone, zone)
