# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The connection options shared by epmd_info, mesh_info and mesh_wait: spec and validation.

The three modules form the action group ``beamops.cluster.mesh``, and every member takes every option of the
two fragments below, so that ``module_defaults`` for the group apply to all of them (``epmd_info`` accepts the
distribution options and does not use them: EPMD needs no cookie).

``NETWORK_SPEC``   timeout, epmd_port, address_family (doc fragment ``beamops.cluster.connection.network``)
``DIST_SPEC``      cookie, dist_port, tls*, local_node, dial, port_forward (doc fragment ``beamops.cluster.connection``)
``dist_spec(cookie_required=True)``  DIST_SPEC, with the cookie optional for epmd_info
``NODES_SPEC``     nodes
``connection_kwargs(params)`` -> keyword arguments of ``erl_mesh.mesh_report`` (minus nodes/cookie/timeout
checks done there); raises ``ValueError`` whose text names the offending option.
``port_forward_kwargs(params, nodes, dial)`` -> keyword arguments of ``k8s_portforward.open_forwards``.
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.beamops.cluster.plugins.module_utils import erl_dist, erl_driver, k8s_portforward
from ansible_collections.beamops.cluster.plugins.module_utils.erl_mesh import validate_nodes

NETWORK_SPEC = {
    "timeout": {"type": "float", "default": 5.0},
    "epmd_port": {"type": "int", "default": 4369},
    "address_family": {"type": "str", "default": "auto", "choices": ["auto", "inet", "inet6"]},
}

DIST_SPEC = {
    # raw, so that a number or a mapping given as cookie is refused instead of silently turned into text.
    "cookie": {"type": "raw", "required": True, "no_log": True},
    "dist_port": {"type": "int"},
    "tls": {"type": "bool", "default": False},
    "tls_ca_file": {"type": "path"},
    "tls_cert_file": {"type": "path"},
    "tls_key_file": {"type": "path", "no_log": False},
    "tls_verify": {"type": "bool", "default": True},
    "tls_server_name": {"type": "str"},
    "local_node": {"type": "str"},
    "dial": {"type": "dict"},
    "port_forward": {"type": "dict", "options": {
        "namespace": {"type": "str", "required": True},
        "pods": {"type": "dict", "required": True},
        "port": {"type": "int"},
        "kubeconfig": {"type": "path"},
        "context": {"type": "str"},
    }},
}


def dist_spec(cookie_required=True):
    """DIST_SPEC; epmd_info takes it with the cookie optional (it accepts the group's options, uses none)."""
    spec = dict(DIST_SPEC)
    spec["cookie"] = dict(spec["cookie"], required=cookie_required)
    return spec


NODES_SPEC = {
    "nodes": {"type": "list", "elements": "raw", "required": True},
}


def _port(params, key):
    value = params.get(key)
    if value is not None and not 0 < value < 65536:
        raise ValueError("%s must be a TCP port between 1 and 65535, not %s" % (key, value))
    return value


def validate_network(params):
    """timeout, epmd_port and address_family as keyword arguments."""
    timeout = params.get("timeout")
    if timeout is None or timeout <= 0:
        raise ValueError("timeout must be a number of seconds greater than 0, not %s" % (timeout,))
    return {"timeout": timeout, "epmd_port": _port(params, "epmd_port"), "family": params.get("address_family")}


def tls_options(params):
    """A TlsOptions when tls is on (or any tls_* file is given), else None."""
    files = ("tls_ca_file", "tls_cert_file", "tls_key_file")
    if not params.get("tls") and not any(params.get(key) for key in files):
        return None
    for key in files:
        path = params.get(key)
        if path and not os.access(path, os.R_OK):
            raise ValueError("%s %s does not exist or is not readable by the user running the module" % (key, path))
    if params.get("tls_key_file") and not params.get("tls_cert_file"):
        raise ValueError("tls_key_file needs tls_cert_file: give the client certificate that goes with the key")
    if params.get("tls_verify", True) and not params.get("tls_ca_file"):
        raise ValueError("tls_ca_file is required when tls_verify is true: give the CA that signed the nodes' "
                         "certificates, or set tls_verify to false")
    return erl_dist.TlsOptions(ca_file=params.get("tls_ca_file"), cert_file=params.get("tls_cert_file"),
                               key_file=params.get("tls_key_file"), verify=params.get("tls_verify", True),
                               server_name=params.get("tls_server_name"))


def connection_kwargs(params):
    """Validated keyword arguments for ``erl_mesh.mesh_report`` / ``wait_for_mesh`` from module params."""
    cookie = params.get("cookie")
    if not isinstance(cookie, str) or not cookie:
        raise ValueError("cookie must be a non-empty string (quote it in YAML if it looks like a number)")
    nodes = validate_nodes(params.get("nodes"))
    local_node = params.get("local_node")
    if local_node:
        try:
            erl_dist.split_node(local_node)
        except ValueError as exc:
            raise ValueError("local_node: %s" % exc)
    kwargs = validate_network(params)
    kwargs.update({"nodes": nodes, "cookie": cookie, "dist_port": _port(params, "dist_port"),
                   "tls": tls_options(params), "local_node": local_node,
                   "dial": erl_driver.validate_dial(params.get("dial"), nodes)})
    return kwargs


def port_forward_kwargs(params, nodes, dial):
    """Keyword arguments of ``k8s_portforward.open_forwards`` from the port_forward option (all None without it)."""
    options = params.get("port_forward")
    if not options:
        return {"namespace": None, "pods": None, "port": None}
    port = options.get("port") if options.get("port") is not None else params.get("dist_port")
    k8s_portforward.validate(options.get("namespace"), options.get("pods"), port)
    # Pods of nodes this task does not list are left alone: one mapping may serve many tasks (module_defaults).
    pods = dict((node, pod) for node, pod in options["pods"].items() if node in nodes)
    for node in pods:
        if node in dial:
            raise ValueError("port_forward.pods: %s is given an address in dial too; keep it in one of them" % node)
    if not pods:
        return {"namespace": None, "pods": None, "port": None}
    return {"namespace": options["namespace"], "pods": pods, "port": port,
            "kubeconfig": options.get("kubeconfig"), "context": options.get("context")}
