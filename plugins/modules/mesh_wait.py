#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mesh_wait
short_description: Wait until Erlang nodes form a full mesh
version_added: "0.1.0"
description:
  - Verifies the nodes as M(beamops.cluster.mesh_info) does, every O(poll_ms) milliseconds, until every node of
    O(nodes) answers and is connected to every other one (and, with O(expected), each sees O(expected) - 1 peers).
  - Returns how long convergence took and the mesh report. When O(timeout) runs out it fails with the last report
    and its diagnosis.
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
  timeout:
    description:
      - How long to wait for the mesh, in seconds. One verification never takes longer than 5 seconds, so a hung
        node cannot use up the whole wait in one attempt.
    type: float
    default: 30.0
  expected:
    description:
      - Size of the whole cluster, when O(nodes) lists only some of its nodes; each listed node must then see
        O(expected) - 1 other visible nodes.
    type: int
  poll_ms:
    description:
      - Pause between two verifications, in milliseconds.
    type: int
    default: 100
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
  - module: beamops.cluster.mesh_info
author:
  - beamops.cluster contributors (@beamops)
"""

EXAMPLES = r"""
- name: Wait for the three nodes to cluster
  beamops.cluster.mesh_wait:
    nodes: [demo@10.0.0.5, demo@10.0.0.6, demo@10.0.0.7]
    cookie: "{{ erlang_cookie }}"
    timeout: 60
  register: mesh

- name: Report how long it took
  ansible.builtin.debug:
    msg: "converged after {{ mesh.converged_after_ms }} ms"

- name: Wait until a seed node sees the whole cluster of 5
  beamops.cluster.mesh_wait:
    nodes: [demo@10.0.0.5]
    expected: 5
    cookie: "{{ erlang_cookie }}"

- name: Wait for pods to cluster, through the API server (the tunnels stay open for the whole wait)
  beamops.cluster.mesh_wait:
    nodes: "{{ range(3) | map('regex_replace', '^(.*)$', 'demo@demo-\\1.demo.prod.svc.cluster.local') | list }}"
    cookie: "{{ erlang_cookie }}"
    timeout: 120
    port_forward:
      namespace: prod
      port: 9100
      pods: "{{ dict(range(3) | map('regex_replace', '^(.*)$', 'demo@demo-\\1.demo.prod.svc.cluster.local')
                | zip(range(3) | map('regex_replace', '^(.*)$', 'demo-\\1'))) }}"
  delegate_to: localhost
"""

RETURN = r"""
converged_after_ms:
  description: Milliseconds from the start of the wait until the nodes formed a full mesh.
  returned: success
  type: int
  sample: 840
attempts:
  description: Number of verifications made.
  returned: always
  type: int
  sample: 9
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
    argument_spec.update(
        timeout={"type": "float", "default": 30.0},
        expected={"type": "int"},
        poll_ms={"type": "int", "default": 100},
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    try:
        kwargs = erl_options.connection_kwargs(params)
        if params["expected"] is not None and params["expected"] < len(kwargs["nodes"]):
            raise ValueError("expected (%d) cannot be smaller than the number of nodes listed (%d)"
                             % (params["expected"], len(kwargs["nodes"])))
        if params["poll_ms"] < 0:
            raise ValueError("poll_ms must be 0 or more milliseconds, not %d" % params["poll_ms"])
        forwards = k8s_portforward.open_forwards(**erl_options.port_forward_kwargs(params, kwargs["nodes"],
                                                                                   kwargs["dial"]))
    except (ValueError, k8s_portforward.MissingClient) as exc:
        module.fail_json(msg=str(exc))
    with forwards:
        kwargs["dial"].update(forwards.dial)
        converged, report, after_ms, attempts = erl_mesh.wait_for_mesh(
            poll_ms=params["poll_ms"], expected=params["expected"], **kwargs)
        k8s_portforward.explain(report, forwards)
    report["diagnosis"] = erl_mesh.diagnosis(report)
    report["unreachable_nodes"] = report.pop("unreachable")
    report["attempts"] = attempts
    if not converged:
        module.fail_json(msg="the nodes did not form a full mesh within %s s: %s"
                         % (params["timeout"], "; ".join(report["diagnosis"]) or "no node reported a problem"),
                         **report)
    module.exit_json(changed=False, converged_after_ms=after_ms, **report)


if __name__ == "__main__":
    main()
