# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one renderer of cluster discovery (topology) settings.

Input is plain data, so the VM path (inventory members) and the Kubernetes path (pod environment)
share it:

- ``strategy``: one of ``STRATEGIES``: the VM strategies ``VM_STRATEGIES`` (``epmd``, ``gossip``, ``dnspoll``,
  ``erlang_hosts``, ``native``) and the Kubernetes ones ``KUBERNETES_STRATEGIES`` (``kubernetes_dns``,
  ``kubernetes_dnssrv``, ``kubernetes_api``). ``target`` (``vm`` or ``kubernetes``) limits it to one list.
- ``options``: that strategy's settings (libcluster's config keys, see ``STRATEGIES``).
- ``members``: for static (VM) strategies, a list of ``{"host": id, "address": ip, "fqdn": name}``;
  empty for strategies whose members are only known at run time (Kubernetes).
- ``basename``: the part of the node name before ``@``.
- ``node_host``: what follows ``@`` on VMs: ``address`` or ``fqdn``.
- ``cluster_domain``: the Kubernetes cluster domain (``cluster.local``), the one input every Kubernetes name is
  built from.

Output (``render``): a dict with the Erlang term config text (``config``: the application env
``libcluster.topologies``, or the kernel's ``sync_nodes_optional`` for ``native``), the node each member is
started as and the names its peers dial, the ``.hosts.erlang`` text where relevant, and ``errors``: a list
of ``{"field": ..., "message": ...}`` for input that cannot work (field names are the data keys above, so a
caller can map them to its own variable names).

The config text starts with a comment line, ``%% beamops.cluster topology: strategy=S redials=true|false``, so a
later deploy can tell from the file on a host what runs there (``running_topology``) and whether switching from it
host by host can work (``rolling_switch``).

Healing: libcluster's Epmd and ErlangHosts strategies connect once at start unless ``timeout`` is set, and the
kernel never reconnects after a nodedown by itself, so a partition between such nodes never heals. The renderer
therefore gives both a retry ``timeout`` of ``DEFAULT_RETRY_MS`` unless the caller sets one (``infinity`` keeps
libcluster's connect-once behaviour); ``heals`` says whether a topology reconnects by itself.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re

# Retry interval (ms) given to Epmd and ErlangHosts when the caller sets no ``timeout``: they then re-dial every
# listed node that is not connected, which is what heals a partition.
DEFAULT_RETRY_MS = 5000

# Per strategy: libcluster module, keys it accepts with their Erlang type, keys that must be set, defaults
# that differ from libcluster's, and how a peer's node name is formed (which constrains how nodes must be started).
STRATEGIES = {
    "epmd": {
        "module": "Elixir.Cluster.Strategy.Epmd",
        "keys": {"hosts": "atoms", "timeout": "timeout"},
        "required": (),
        "defaults": {"timeout": DEFAULT_RETRY_MS},
        "dials": "listed",
    },
    "erlang_hosts": {
        "module": "Elixir.Cluster.Strategy.ErlangHosts",
        "keys": {"timeout": "timeout"},
        "required": (),
        "defaults": {"timeout": DEFAULT_RETRY_MS},
        "dials": "hosts_file",
    },
    "gossip": {
        "module": "Elixir.Cluster.Strategy.Gossip",
        "keys": {
            "port": "port",
            "if_addr": "ipv4",
            "multicast_addr": "ipv4",
            "multicast_ttl": "int",
            "multicast_if": "ipv4",
            "secret": "binary",
            "broadcast_only": "bool",
        },
        "required": (),
        "dials": "announced",
    },
    "dnspoll": {
        "module": "Elixir.Cluster.Strategy.DNSPoll",
        "keys": {"query": "binary", "node_basename": "binary", "polling_interval": "int"},
        "required": ("query",),
        "dials": "basename_at_address",
    },
    "native": {
        "module": None,
        "keys": {"sync_nodes_timeout": "int", "peers_env": "app_key"},
        "required": (),
        "dials": "listed",
    },
    "kubernetes_dns": {
        "module": "Elixir.Cluster.Strategy.Kubernetes.DNS",
        "keys": {"service": "binary", "application_name": "binary", "polling_interval": "int"},
        "required": ("service",),
        "dials": "basename_at_pod_ip",
    },
    "kubernetes_dnssrv": {
        "module": "Elixir.Cluster.Strategy.Kubernetes.DNSSRV",
        "keys": {"service": "binary", "application_name": "binary", "namespace": "binary", "polling_interval": "int"},
        "required": ("service", "namespace"),
        "dials": "basename_at_pod_fqdn",
    },
    "kubernetes_api": {
        "module": "Elixir.Cluster.Strategy.Kubernetes",
        "keys": {
            "kubernetes_node_basename": "binary",
            "kubernetes_selector": "binary",
            "kubernetes_namespace": "binary",
            "kubernetes_ip_lookup_mode": "atom",
            "mode": "atom",
            "kubernetes_service_name": "binary",
            "kubernetes_cluster_name": "binary",
            "kubernetes_master": "binary",
            "kubernetes_use_cached_resources": "bool",
            "polling_interval": "int",
        },
        "required": ("kubernetes_selector",),
        "dials": "basename_at_pod_ip",
    },
}

VM_STRATEGIES = ("epmd", "gossip", "dnspoll", "erlang_hosts", "native")
KUBERNETES_STRATEGIES = ("kubernetes_dns", "kubernetes_dnssrv", "kubernetes_api")
TARGETS = {"vm": VM_STRATEGIES, "kubernetes": KUBERNETES_STRATEGIES}

# Strategy option that carries the node basename peers dial; filled from ``basename`` when unset.
BASENAME_KEYS = {
    "dnspoll": "node_basename",
    "kubernetes_dns": "application_name",
    "kubernetes_dnssrv": "application_name",
    "kubernetes_api": "kubernetes_node_basename",
}

# Strategies that dial known node names by themselves when a node starts (so a node started with one of them
# joins peers that run any strategy).
DIALS_AT_START = frozenset(["epmd", "erlang_hosts", "dnspoll", "native", "kubernetes_dns", "kubernetes_dnssrv",
                            "kubernetes_api"])
HEADER_PREFIX = "%% beamops.cluster topology:"

NODE_HOST_MODES = ("address", "fqdn")
# Kubernetes API strategy: how libcluster names the pods it finds, and which API it lists them from.
API_MODES = ("ip", "dns", "hostname")
API_LOOKUP_MODES = ("endpoints", "pods")
_DNS_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_BASENAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_UNQUOTED_ATOM_RE = re.compile(r"^[a-z][A-Za-z0-9_@]*$")
_RESERVED_WORDS = frozenset(
    "after and andalso band begin bnot bor bsl bsr bxor case catch cond div end fun if let maybe not of or "
    "orelse receive rem try when xor else".split()
)


class Atom(str):
    """A string to be written as an Erlang atom."""


class Binary(str):
    """A string to be written as an Erlang binary (an Elixir string)."""


class Raw(str):
    """Erlang term text written as it is (for example ``infinity``)."""


def erlang_term(value):
    """Erlang source text for a Python value (lists, tuples, dicts as proplists, int, bool, Atom, Binary, Raw)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Atom):
        return _atom(value)
    if isinstance(value, Binary):
        return _binary(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "[" + ", ".join("{%s, %s}" % (_atom(k), erlang_term(v)) for k, v in value.items()) + "]"
    if isinstance(value, tuple):
        return "{" + ", ".join(erlang_term(v) for v in value) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(erlang_term(v) for v in value) + "]"
    if isinstance(value, str):
        return _charlist(value)
    raise TypeError("cannot write %r as an Erlang term" % (value,))


def _atom(name):
    name = str(name)
    if _UNQUOTED_ATOM_RE.match(name) and name not in _RESERVED_WORDS:
        return name
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _printable_ascii(text):
    return all(32 <= ord(ch) < 127 for ch in text)


def _binary(text):
    if _printable_ascii(text):
        return '<<"' + text.replace("\\", "\\\\").replace('"', '\\"') + '">>'
    return "<<" + ",".join(str(b) for b in text.encode("utf-8")) + ">>"


def _charlist(text):
    if _printable_ascii(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ",".join(str(ord(ch)) for ch in text) + "]"


def _error(errors, field, message):
    errors.append({"field": field, "message": message})


def _convert(kind, field, value, errors):
    """Turn one strategy option into its Erlang form; record an error when it has the wrong shape."""
    if kind in ("int", "port"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (kind == "port" and not 0 < value < 65536):
            _error(errors, field, "must be a %s, got %r" % ("TCP/UDP port (1-65535)" if kind == "port" else "non-negative integer", value))
            return None
        return value
    if kind == "timeout":
        if value == "infinity":
            return Raw("infinity")
        return _convert("int", field, value, errors)
    if kind == "bool":
        if not isinstance(value, bool):
            _error(errors, field, "must be true or false, got %r" % (value,))
            return None
        return value
    if kind == "ipv4":
        try:
            return tuple(int(part) for part in ipaddress.IPv4Address(str(value)).exploded.split("."))
        except ValueError:
            _error(errors, field, "must be an IPv4 address such as 233.252.1.32, got %r" % (value,))
            return None
    if kind == "binary":
        if not isinstance(value, str) or not value:
            _error(errors, field, "must be a non-empty string, got %r" % (value,))
            return None
        return Binary(value)
    if kind == "atom":
        if not isinstance(value, str) or not value:
            _error(errors, field, "must be a name such as 'ip', got %r" % (value,))
            return None
        return Atom(value)
    if kind == "app_key":
        if not isinstance(value, str) or not re.match(r"^[a-z][A-Za-z0-9_]*\.[a-z][A-Za-z0-9_]*$", value):
            _error(errors, field, "must be APP.KEY, the application env key that also gets the peer list (e.g. 'myapp.peers'), got %r" % (value,))
            return None
        return value
    if kind == "atoms":
        if not isinstance(value, list) or not all(isinstance(v, str) and "@" in v for v in value):
            _error(errors, field, "must be a list of node names such as ['app@10.0.0.1'], got %r" % (value,))
            return None
        return [Atom(v) for v in value]
    raise ValueError("unknown option kind %s" % kind)


def node_name(basename, member, node_host):
    """The node name a member is started as: ``basename@address`` or ``basename@fqdn``."""
    return "%s@%s" % (basename, member.get(node_host) or "")


def _check_members(members, basename, node_host, errors):
    if not isinstance(basename, str) or not _BASENAME_RE.match(basename):
        _error(errors, "basename", "must be letters, digits, '_' or '-' (the part before '@'), got %r" % (basename,))
    if node_host not in NODE_HOST_MODES:
        _error(errors, "node_host", "must be one of %s, got %r" % (", ".join(NODE_HOST_MODES), node_host))
        return
    seen = {}
    for member in members:
        host = member.get("host")
        value = member.get(node_host)
        if not value:
            _error(errors, "members.%s.%s" % (host, node_host), "is empty; the node name needs it after '@'")
            continue
        if node_host == "fqdn" and "." not in value:
            _error(errors, "members.%s.fqdn" % host, "%r has no dot; long node names need a fully qualified host name" % (value,))
        if node_host == "address":
            try:
                ipaddress.ip_address(value)
            except ValueError:
                _error(errors, "members.%s.address" % host, "%r is not an IP address" % (value,))
        name = node_name(basename, member, node_host)
        if name in seen:
            _error(errors, "members.%s.%s" % (host, node_host), "gives node %s, the same as host %s" % (name, seen[name]))
        seen[name] = host


def render(strategy, options=None, members=None, basename="", node_host="address", cluster_domain="cluster.local",
           target=None):
    """Render a topology; see the module documentation for input and output."""
    options = dict(options or {})
    members = list(members or [])
    errors = []
    result = {
        "strategy": strategy,
        "config": "",
        "nodes": {},
        "dialled": [],
        "hosts_erlang": "",
        "started_as": "",
        "errors": errors,
    }
    allowed = TARGETS.get(target, tuple(STRATEGIES))
    spec = STRATEGIES.get(strategy)
    if spec is None or strategy not in allowed:
        where = " on %s" % ("VMs" if target == "vm" else "Kubernetes") if target else ""
        known = "" if spec is None else " (%s is a %s strategy)" % (strategy, "VM" if strategy in VM_STRATEGIES else "Kubernetes")
        _error(errors, "strategy", "%s strategy %r%s; use one of %s" % (
            "unknown" if spec is None else "not a strategy%s:" % where, strategy, known, ", ".join(allowed)))
        return result
    for key, value in spec.get("defaults", {}).items():
        options.setdefault(key, value)
    static = not spec["dials"].startswith("basename_at_pod")
    basename_key = BASENAME_KEYS.get(strategy)
    if basename_key:
        if options.get(basename_key, basename) != basename:
            _error(errors, "options.%s" % basename_key,
                   "is %r but nodes are started as %r@...; peers would dial names that do not exist. "
                   "Leave it unset (it defaults to the node basename) or make both equal" % (options[basename_key], basename))
        options[basename_key] = basename
    if strategy == "dnspoll" and node_host != "address":
        _error(errors, "node_host", "dnspoll dials <basename>@<IP address from DNS>, so nodes must be started with node_host 'address', not %r"
               % (node_host,))
    for key in spec["required"]:
        if options.get(key) in (None, ""):
            _error(errors, "options.%s" % key, "is required by the %s strategy" % strategy)
    for key in options:
        if key not in spec["keys"] and key != "hosts":
            _error(errors, "options.%s" % key, "is not a setting of the %s strategy; known: %s" % (strategy, ", ".join(sorted(spec["keys"])) or "none"))

    if static:
        if not members:
            _error(errors, "members", "is empty; a %s cluster needs at least one member host" % strategy)
        _check_members(members, basename, node_host, errors)
        result["nodes"] = dict((m.get("host"), node_name(basename, m, node_host)) for m in members)
    else:
        if not isinstance(basename, str) or not _BASENAME_RE.match(basename):
            _error(errors, "basename", "must be letters, digits, '_' or '-' (the part before '@'), got %r" % (basename,))
        _check_kubernetes(strategy, options, cluster_domain, errors)
        result["started_as"] = _pod_node_name(strategy, basename, options, cluster_domain)
    started = list(result["nodes"].values())

    if "hosts" in options and strategy not in ("epmd", "native"):
        _error(errors, "options.hosts", "is not a setting of the %s strategy" % strategy)
    if strategy in ("epmd", "native"):
        listed = options.pop("hosts", None)
        if listed is not None and sorted(listed) != sorted(started):
            _error(errors, "options.hosts", "lists %s but the members are started as %s; leave it unset to derive it from the members"
                   % (", ".join(sorted(listed)) or "nothing", ", ".join(sorted(started))))
        result["dialled"] = sorted(started)
    elif strategy == "erlang_hosts":
        hostnames = sorted(set(name.split("@", 1)[1] for name in started))
        result["hosts_erlang"] = "".join("%s.\n" % erlang_term(Atom(h)) for h in hostnames)
        result["dialled"] = sorted("%s@%s" % (basename, h) for h in hostnames)
    elif strategy == "gossip":
        result["dialled"] = sorted(started)
    elif strategy == "dnspoll":
        result["dialled"] = sorted("%s@%s" % (basename, m.get("address")) for m in members)

    converted = {}
    for key, value in options.items():
        kind = spec["keys"].get(key)
        if kind is None:
            continue
        erl_value = _convert(kind, "options.%s" % key, value, errors)
        if erl_value is not None:
            converted[key] = erl_value
    if errors:
        return result

    if strategy == "native":
        kernel = {"sync_nodes_optional": [Atom(n) for n in result["dialled"]]}
        kernel["sync_nodes_timeout"] = converted.get("sync_nodes_timeout", 30000)
        config = [(Atom("kernel"), kernel)]
        if "peers_env" in converted:
            app, key = converted["peers_env"].split(".")
            config.append((Atom(app), [(Atom(key), [Atom(n) for n in result["dialled"]])]))
        result["config"] = _header(strategy, options) + erlang_term(config) + ".\n"
        return result
    if strategy == "epmd":
        converted["hosts"] = [Atom(n) for n in result["dialled"]]
    topology = [(Atom("strategy"), Atom(spec["module"])), (Atom("config"), converted)]
    config = [(Atom("libcluster"), [(Atom("topologies"), [(Atom(basename), topology)])])]
    result["config"] = _header(strategy, options) + erlang_term(config) + ".\n"
    return result


def heals(strategy, options=None):
    """Whether nodes of this topology reconnect by themselves after a partition: ``(True|False, why)``.

    ``options`` as given to ``render`` (the renderer's defaults apply, so Epmd and ErlangHosts retry unless
    ``timeout`` is ``infinity``).
    """
    options = dict(STRATEGIES.get(strategy, {}).get("defaults", {}), **(options or {}))
    if strategy in ("epmd", "erlang_hosts"):
        if options.get("timeout") == "infinity":
            return False, ("%s with timeout infinity connects once at start; after a partition or a nodedown the kernel does "
                           "not reconnect by itself, so the halves stay apart until a node restarts" % strategy)
        return True, "%s re-dials every node that is not connected every %s ms" % (strategy, options.get("timeout"))
    if strategy == "native":
        if options.get("peers_env"):
            return True, ("native gives the peer list to %s; heals only if the application keeps re-connecting to it"
                          % options["peers_env"])
        return False, ("native connects through sync_nodes_optional while the node boots only; after a partition the kernel "
                       "does not reconnect by itself")
    if strategy == "gossip":
        return True, "gossip connects to every node whose heartbeat it receives (every 1-5 s)"
    if strategy in STRATEGIES:
        return True, "%s connects every node of each answer every %s ms" % (strategy, options.get("polling_interval", 5000))
    return False, "unknown strategy %r" % (strategy,)


def _header(strategy, options):
    return "%s strategy=%s redials=%s\n" % (HEADER_PREFIX, strategy, "true" if heals(strategy, options)[0] else "false")


def running_topology(config_text):
    """What a rendered config says runs on a host: ``{"strategy": S or None, "redials": bool}``.

    Reads the header line; a config written before it existed is recognised by its libcluster module, and then
    counts as not re-dialling (the connect-once default of those versions).
    """
    text = config_text or ""
    first = text.split("\n", 1)[0]
    if first.startswith(HEADER_PREFIX):
        fields = dict(part.split("=", 1) for part in first[len(HEADER_PREFIX):].split() if "=" in part)
        return {"strategy": fields.get("strategy"), "redials": fields.get("redials") == "true"}
    if "sync_nodes_optional" in text and "libcluster" not in text:
        return {"strategy": "native", "redials": False}
    for name, spec in STRATEGIES.items():
        module = spec["module"]
        if module and ("'%s'" % module) in text:
            return {"strategy": name, "redials": name not in ("epmd", "erlang_hosts", "native")}
    return {"strategy": None, "redials": False}


def rolling_switch(running, strategy):
    """Can nodes be moved host by host from the ``running`` topology (``running_topology``) to ``strategy``?

    ``(True, "")``, or ``(False, why)``. A node restarted with the new strategy must find its peers: either it
    dials them itself at start, or the nodes still on the old strategy keep re-dialling the restarted node (a
    node that only answers heartbeats, gossip, waits for heartbeats that non-gossip nodes never send).
    """
    old = running.get("strategy")
    if old is None or old == strategy:
        return True, ""
    if strategy in DIALS_AT_START or running.get("redials"):
        return True, ""
    return False, ("a node restarted with %s waits for heartbeats, which %s nodes never send, and the %s nodes do not "
                   "re-dial it, so the first restarted node stays alone" % (strategy, old, old))


def _pod_node_name(strategy, basename, options, cluster_domain):
    """Node name a pod must be started as, with Kubernetes ``$(VAR)`` references to its downward-API env.

    ``$(POD_NAME)``, ``$(POD_IP)``, ``$(POD_NAMESPACE)`` and ``$(CLUSTER_DOMAIN)`` are env entries of the pod;
    ``$(POD_IP_DASHED)`` (the pod IP with ``-`` for ``.``) is not something the kubelet can make, so a pod that
    needs it computes it in its start command (see k8s_manifests).
    """
    if strategy == "kubernetes_dnssrv":
        # The SRV targets CoreDNS gives a StatefulSet's pods: <pod>.<service>.<namespace>.svc.<cluster domain>.
        return "%s@$(POD_NAME).%s.%s.svc.$(CLUSTER_DOMAIN)" % (basename, options.get("service", ""), options.get("namespace", ""))
    if strategy == "kubernetes_api":
        # libcluster builds these names with "<kubernetes_cluster_name>.local", never with CLUSTER_DOMAIN.
        domain = "%s.local" % options.get("kubernetes_cluster_name", _cluster_name(cluster_domain))
        namespace = options.get("kubernetes_namespace", "$(POD_NAMESPACE)")
        if options.get("mode") == "dns":
            return "%s@$(POD_IP_DASHED).%s.pod.%s" % (basename, namespace, domain)
        if options.get("mode") == "hostname":
            return "%s@$(POD_NAME).%s.%s.svc.%s" % (basename, options.get("kubernetes_service_name", ""), namespace, domain)
    return "%s@$(POD_IP)" % basename


def _cluster_name(cluster_domain):
    """libcluster's ``kubernetes_cluster_name`` for a cluster domain: the part before ``.local`` (``cluster``)."""
    domain = (cluster_domain or "").rstrip(".")
    return domain[:-len(".local")] if domain.endswith(".local") else domain


def _check_kubernetes(strategy, options, cluster_domain, errors):
    """Kubernetes-only rules of libcluster 3.5.0 that no single option type expresses; fills the cluster name."""
    domain = cluster_domain.rstrip(".") if isinstance(cluster_domain, str) else cluster_domain
    if not isinstance(domain, str) or not _DNS_NAME_RE.match(domain) or len(domain) > 253:
        _error(errors, "cluster_domain", "must be a DNS name such as cluster.local (the kubelet's --cluster-domain), got %r"
               % (cluster_domain,))
        return
    if strategy != "kubernetes_api":
        return
    mode = options.setdefault("mode", "ip")
    lookup = options.get("kubernetes_ip_lookup_mode", "endpoints")
    if mode not in API_MODES:
        _error(errors, "options.mode", "must be one of %s (how libcluster names the pods it finds), got %r" % (", ".join(API_MODES), mode))
        return
    if lookup not in API_LOOKUP_MODES:
        _error(errors, "options.kubernetes_ip_lookup_mode", "must be %s, got %r" % (" or ".join(API_LOOKUP_MODES), lookup))
    if mode == "hostname" and not options.get("kubernetes_service_name"):
        _error(errors, "options.kubernetes_service_name", "is required with mode hostname: libcluster names each pod "
               "<hostname>.<kubernetes_service_name>.<namespace>.svc...; set it to the headless Service of the StatefulSet")
    if mode in ("dns", "hostname"):
        if not domain.endswith(".local") or domain == "local":
            _error(errors, "cluster_domain", "is %r, but libcluster 3.5.0 builds mode %s node names as <kubernetes_cluster_name>.local, "
                   "so a cluster domain that does not end in .local cannot be expressed; use mode ip, or the kubernetes_dnssrv strategy"
                   % (domain, mode))
            return
        wanted = _cluster_name(domain)
        given = options.setdefault("kubernetes_cluster_name", wanted)
        if given != wanted:
            _error(errors, "options.kubernetes_cluster_name", "is %r but the cluster domain %r makes it %r (libcluster appends .local); "
                   "leave it unset" % (given, domain, wanted))
