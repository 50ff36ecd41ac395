#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mesh_info
short_description: Report which Erlang nodes are connected to which, and why the others are not
version_added: "0.1.0"
description:
  - Connects to every node of O(nodes) in parallel as a hidden Erlang node (the distribution protocol is spoken by
    the module itself, in pure Python) and asks each one C(erlang:nodes/0) and C(erlang:nodes/1) with C(hidden);
    each node's own name comes from the distribution handshake.
  - Reports each node's view, whether the nodes form a full mesh, the missing links, the partitions, and for every
    node that cannot be asked or stands apart a reason code and one plain sentence (wrong cookie, name mismatch,
    short versus long names, TLS needed, node not registered, ...).
  - A broken mesh is a result, not a failure. Only bad options make the module fail.
  - Read-only and hidden - the verifier never appears in any node's C(erlang:nodes/0) and never makes nodes connect to
    each other.
extends_documentation_fragment:
  - beamops.cluster.connection
  - beamops.cluster.connection.network
options:
  nodes:
    description:
      - Full names (C(alive@host)) of the nodes that should form the mesh.
    type: list
    elements: raw
    required: true
attributes:
  check_mode:
    support: full
    description: Nothing is changed; the module runs the same in check mode.
  action_group:
    description: Use C(group/beamops.cluster.mesh) in C(module_defaults) to set the connection options once.
    support: full
    membership:
      - beamops.cluster.mesh
seealso:
  - module: beamops.cluster.mesh_wait
  - module: beamops.cluster.epmd_info
author:
  - beamops.cluster contributors (@beamops)
"""

EXAMPLES = r"""
- name: What does the cluster look like?
  beamops.cluster.mesh_info:
    nodes: "{{ groups['app'] | map('regex_replace', '^(.*)$', 'demo@\\1') | list }}"
    cookie: "{{ erlang_cookie }}"
  register: mesh

- name: Show why the mesh is incomplete
  ansible.builtin.debug:
    var: mesh.diagnosis
  when: not mesh.full_mesh

- name: Nodes using TLS distribution that demand a client certificate
  beamops.cluster.mesh_info:
    nodes: [demo@app1.example.net, demo@app2.example.net]
    cookie: "{{ erlang_cookie }}"
    tls_ca_file: /etc/demo/ca.pem
    tls_cert_file: /etc/demo/verifier.pem
    tls_key_file: /etc/demo/verifier.key

- name: EPMD-less nodes listening on port 9100
  beamops.cluster.mesh_info:
    nodes: [demo@10.0.0.5, demo@10.0.0.6]
    cookie: "{{ erlang_cookie }}"
    dist_port: 9100

- name: A node behind NAT, reached at its public address (its name is still checked)
  beamops.cluster.mesh_info:
    nodes: [demo@10.0.0.5, demo@10.0.0.6]
    cookie: "{{ erlang_cookie }}"
    dist_port: 9100
    dial:
      demo@10.0.0.6: "203.0.113.7:19100"

- name: Nodes in Kubernetes pods, through the API server
  beamops.cluster.mesh_info:
    nodes: [demo@demo-0.demo.prod.svc.cluster.local, demo@demo-1.demo.prod.svc.cluster.local]
    cookie: "{{ erlang_cookie }}"
    port_forward:
      namespace: prod
      port: 9100
      pods:
        demo@demo-0.demo.prod.svc.cluster.local: demo-0
        demo@demo-1.demo.prod.svc.cluster.local: demo-1
  delegate_to: localhost
"""

RETURN = r"""
per_node:
  description: What each listed node answered, keyed by the node name as given in O(nodes).
  returned: always
  type: dict
  sample:
    demo@10.0.0.5:
      reachable: true
      name: demo@10.0.0.5
      connected: [demo@10.0.0.6]
      hidden: []
      reason: ok
      message: demo@10.0.0.5 is connected to all 1 other reachable listed nodes.
    demo@10.0.0.7:
      reachable: false
      name: null
      connected: []
      hidden: []
      reason: cookie_rejected
      message: demo@10.0.0.7 rejected the cookie; its cookie differs from the one given.
  contains:
    reachable:
      description: Whether the verifier could connect to the node and ask it.
      type: bool
    name:
      description: What the node calls itself (its name in the distribution handshake), also when it differs from the name dialled.
      type: str
    connected:
      description: The visible nodes it is connected to (C(erlang:nodes/0)), sorted.
      type: list
      elements: str
    hidden:
      description: The hidden nodes it is connected to (C(erlang:nodes/1) with C(hidden)) other than this verifier, sorted.
      type: list
      elements: str
    reason:
      description:
        - V(ok), or why the node cannot be asked or stands apart.
        - Cannot be asked - V(epmd_unreachable), V(not_registered), V(dist_port_unreachable), V(cookie_rejected),
          V(not_allowed), V(name_mismatch), V(name_type_mismatch), V(tls_required), V(tls_failed), V(timeout),
          V(connection_closed), V(protocol_error), V(rpc_error).
        - Stands apart - V(name_type_mismatch), V(isolated), V(partitioned), V(missing_links), V(too_few_peers).
      type: str
    message:
      description: One plain sentence explaining the reason.
      type: str
members:
  description: Listed nodes that answered, sorted.
  returned: always
  type: list
  elements: str
  sample: [demo@10.0.0.5, demo@10.0.0.6]
full_mesh:
  description: Whether every listed node answered and is connected to every other listed node.
  returned: always
  type: bool
  sample: false
missing_links:
  description: Pairs of answering listed nodes that are not connected to each other (in both directions).
  returned: always
  type: list
  elements: list
  sample: [[demo@10.0.0.5, demo@10.0.0.8]]
partitions:
  description: Groups of answering nodes that reach each other (connected components), each sorted, largest first.
  returned: always
  type: list
  elements: list
  sample: [[demo@10.0.0.5, demo@10.0.0.6], [demo@10.0.0.8]]
unreachable_nodes:
  description:
    - Listed nodes that could not be asked, sorted.
    - Named so because Ansible reads a true C(unreachable) key in a result as "the managed host is unreachable".
  returned: always
  type: list
  elements: str
  sample: [demo@10.0.0.7]
unlisted:
  description: Visible nodes that answering nodes are connected to but that O(nodes) does not list.
  returned: always
  type: list
  elements: str
  sample: []
diagnosis:
  description: One line per node whose reason is not V(ok) - the node, its reason and its message, joined by colons.
  returned: always
  type: list
  elements: str
  sample: ["demo@10.0.0.7: cookie_rejected: demo@10.0.0.7 rejected the cookie; its cookie differs from the one given."]
elapsed_ms:
  description: Time the last verification took, in milliseconds.
  returned: always
  type: int
  sample: 14
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.beamops.cluster.plugins.module_utils import erl_mesh, erl_options, k8s_portforward


def main():
    argument_spec = {}
    for spec in (erl_options.NODES_SPEC, erl_options.DIST_SPEC, erl_options.NETWORK_SPEC):
        argument_spec.update(spec)
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    try:
        kwargs = erl_options.connection_kwargs(module.params)
        forwards = k8s_portforward.open_forwards(**erl_options.port_forward_kwargs(module.params, kwargs["nodes"],
                                                                                   kwargs["dial"]))
    except (ValueError, k8s_portforward.MissingClient) as exc:
        module.fail_json(msg=str(exc))
    with forwards:
        kwargs["dial"].update(forwards.dial)
        report = k8s_portforward.explain(erl_mesh.mesh_report(**kwargs), forwards)
    report["diagnosis"] = erl_mesh.diagnosis(report)
    report["unreachable_nodes"] = report.pop("unreachable")
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
