# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Erlang distribution options (used by mesh_info and mesh_wait; accepted by every member of the action group
    # beamops.cluster.mesh). Validated in module_utils/erl_options.py.
    DOCUMENTATION = r"""
options:
  cookie:
    description:
      - The Erlang distribution cookie shared by the nodes. Never logged.
      - Must be a string; quote it in YAML when it looks like a number.
    type: raw
    required: true
  dist_port:
    description:
      - Distribution port of EPMD-less nodes (started with C(-start_epmd false -erl_epmd_port PORT), or a release
        with C(ERL_DIST_PORT)). Every node listens on this port of its own host and EPMD is not asked.
      - Omit it for nodes that register in EPMD.
    type: int
  tls:
    description:
      - Connect with TLS distribution, as nodes started with C(-proto_dist inet_tls) require.
      - Giving any of O(tls_ca_file), O(tls_cert_file) or O(tls_key_file) turns it on too.
    type: bool
    default: false
  tls_ca_file:
    description:
      - PEM file of the CA that signed the nodes' certificates. Required when TLS is on and O(tls_verify=true).
    type: path
  tls_cert_file:
    description:
      - PEM client certificate, for nodes that demand one (C(verify_peer) with C(fail_if_no_peer_cert)).
    type: path
  tls_key_file:
    description:
      - PEM private key of O(tls_cert_file) (may be in the certificate file itself).
    type: path
  tls_verify:
    description:
      - Check the node's certificate against O(tls_ca_file) and its name against O(tls_server_name).
      - Turning it off still encrypts but no longer proves who answers; use it only to diagnose.
    type: bool
    default: true
  tls_server_name:
    description:
      - Name expected in the nodes' certificates. Defaults to the host part of each node name.
    type: str
  local_node:
    description:
      - Node name the verifier uses for itself, for nodes that restrict peers with C(net_kernel:allow/1).
      - Defaults to a random C(beamops_<hex>@host) name of the same name type (short or long) as each node.
      - The verifier is always a hidden node; it never appears in the nodes' C(erlang:nodes/0).
    type: str
  dial:
    description:
      - Where to reach some nodes instead of at their name's host - a mapping of node name to C(host:port)
        (an IPv6 address as C([address]:port)), for a NAT or load-balancer address or a port-forward made
        outside the module.
      - The node's distribution listener must answer there. EPMD is not asked for that node, and the handshake
        still checks that it has the name it is listed under.
      - Entries for nodes the task does not list are ignored, so that one mapping in C(module_defaults) can serve
        several tasks.
    type: dict
  port_forward:
    description:
      - Reach nodes that run in Kubernetes pods through the API server, as C(kubectl port-forward) does - for
        each pod the module opens, in its own process, a listener on 127.0.0.1 tunnelled to the pod's
        distribution port, and dials the node there as with O(dial).
      - Needs the C(kubernetes) Python package (24.2.0 or later) where the module runs (usually the controller,
        with C(delegate_to) C(localhost)), and RBAC C(get) and C(create) on C(pods/portforward) in
        O(port_forward.namespace) for the kubeconfig's user.
      - A tunnel that the API server or the pod refuses makes that node V(dist_port_unreachable), with what was
        answered in its message.
    type: dict
    suboptions:
      namespace:
        description:
          - Namespace of the pods.
        type: str
        required: true
      pods:
        description:
          - Node name to pod name, for every node to reach this way (not also in O(dial)). Pods of nodes the
            task does not list are left alone.
        type: dict
        required: true
      port:
        description:
          - Distribution port the nodes listen on inside their pods (EPMD-less nodes, C(ERL_DIST_PORT)).
          - Defaults to O(dist_port); one of the two is required.
        type: int
      kubeconfig:
        description:
          - Path of the kubeconfig file. Defaults to the E(K8S_AUTH_KUBECONFIG) environment variable, then
            C(~/.kube/config).
        type: path
      context:
        description:
          - Context of the kubeconfig to use. Defaults to its current context.
        type: str
"""

    # Network options shared by every module that talks to EPMD or to nodes.
    NETWORK = r"""
options:
  timeout:
    description:
      - Overall time budget in seconds for the whole operation (every lookup, connection and query in it).
    type: float
    default: 5.0
  epmd_port:
    description:
      - Port of EPMD on the hosts (C(ERL_EPMD_PORT) of the nodes).
    type: int
    default: 4369
  address_family:
    description:
      - Which addresses to use when a host name resolves to several; V(auto) tries every address in turn.
    type: str
    choices: [auto, inet, inet6]
    default: auto
"""
