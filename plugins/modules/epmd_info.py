#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: epmd_info
short_description: List the Erlang nodes registered in a host's EPMD and their distribution ports
version_added: "0.1.0"
description:
  - Asks the Erlang Port Mapper Daemon (EPMD) of O(host) for the names registered in it (the NAMES request) and,
    when O(name) is given, for that node's port and protocol versions (PORT_PLEASE2).
  - Read-only; speaks the EPMD protocol itself (pure Python), so no Erlang is needed where the module runs.
  - An EPMD that cannot be reached is a result (RV(reachable=false) with a reason), not a failure.
  - A member of the action group C(beamops.cluster.mesh) like M(beamops.cluster.mesh_info) and
    M(beamops.cluster.mesh_wait) - it accepts every connection option of the group, so that one
    C(module_defaults) entry for C(group/beamops.cluster.mesh) serves all three. EPMD needs no cookie, so
    O(cookie), O(dist_port), O(dial), O(port_forward), O(local_node) and the O(tls) options are accepted and not
    used here; O(timeout), O(epmd_port) and O(address_family) are used.
extends_documentation_fragment:
  - beamops.cluster.connection
  - beamops.cluster.connection.network
options:
  cookie:
    description:
      - Accepted so that the group's C(module_defaults) apply; not used (EPMD needs no cookie). Never logged.
    type: raw
    required: false
  host:
    description:
      - Host (name or address) whose EPMD is asked.
    type: str
    default: 127.0.0.1
  name:
    description:
      - Alive name of one node (the part before C(@)) to look up in detail.
    type: str
attributes:
  check_mode:
    support: full
    description: Nothing is changed; the module runs the same in check mode.
  action_group:
    description: Use C(group/beamops.cluster.mesh) in C(module_defaults) to set the connection options once.
    support: full
    membership:
      - beamops.cluster.mesh
notes:
  - EPMD does not tell whether a node is hidden or uses TLS distribution; use M(beamops.cluster.mesh_info) for that.
seealso:
  - module: beamops.cluster.mesh_info
author:
  - beamops.cluster contributors (@beamops)
"""

EXAMPLES = r"""
- name: Which nodes run on this host?
  beamops.cluster.epmd_info:
  register: epmd

- name: Look up one node on another host, over IPv6
  beamops.cluster.epmd_info:
    host: app1.example.net
    name: demo
    address_family: inet6
    timeout: 2
  register: demo_port

- name: Fail when the node is not registered
  ansible.builtin.assert:
    that: demo_port.registered

- name: One set of connection options for every module of the group
  module_defaults:
    group/beamops.cluster.mesh:
      cookie: "{{ erlang_cookie }}"
      timeout: 10
  block:
    - name: EPMD answers (the cookie is accepted and not needed)
      beamops.cluster.epmd_info:
        host: app1.example.net

    - name: The mesh
      beamops.cluster.mesh_info:
        nodes: [demo@app1.example.net, demo@app2.example.net]
"""

RETURN = r"""
reachable:
  description: Whether EPMD answered.
  returned: always
  type: bool
  sample: true
names:
  description: Registered alive names and their distribution ports.
  returned: always
  type: dict
  sample: {"demo": 41235, "rabbit": 25672}
registered:
  description: Whether O(name) is registered.
  returned: when O(name) is given
  type: bool
  sample: true
node:
  description: EPMD's record of O(name).
  returned: when O(name) is given and registered
  type: dict
  contains:
    port:
      description: Distribution port.
      type: int
      sample: 41235
    node_type:
      description: C(77) (normal) or C(72) (hidden); every OTP node registers as 77.
      type: int
      sample: 77
    highest_version:
      description: Highest distribution protocol version the node speaks.
      type: int
      sample: 6
    lowest_version:
      description: Lowest distribution protocol version the node speaks.
      type: int
      sample: 6
reason:
  description: Why EPMD could not be asked (V(epmd_unreachable) or V(timeout)); V(ok) when it answered.
  returned: always
  type: str
  sample: ok
message:
  description: One plain sentence about the outcome.
  returned: always
  type: str
  sample: EPMD on 127.0.0.1 port 4369 lists 2 nodes.
elapsed_ms:
  description: Time the lookup took, in milliseconds.
  returned: always
  type: int
  sample: 2
"""

import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.beamops.cluster.plugins.module_utils import erl_epmd
from ansible_collections.beamops.cluster.plugins.module_utils.erl_options import NETWORK_SPEC, dist_spec, validate_network


def main():
    argument_spec = dict(NETWORK_SPEC)
    argument_spec.update(dist_spec(cookie_required=False))
    argument_spec.update(host={"type": "str", "default": "127.0.0.1"}, name={"type": "str"})
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    try:
        network = validate_network(params)
        if not params["host"]:
            raise ValueError("host must not be empty")
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    started = time.monotonic()
    deadline = erl_epmd.Deadline(network["timeout"])
    host, port, family = params["host"], network["epmd_port"], network["family"]
    result = {"changed": False, "reachable": True, "names": {}, "reason": "ok"}
    try:
        result["names"] = erl_epmd.names(host, deadline, port, family)
        result["message"] = "EPMD on %s port %d lists %d nodes." % (host, port, len(result["names"]))
        if params["name"]:
            try:
                info = erl_epmd.port_please(host, params["name"], deadline, port, family)
                result["registered"] = True
                result["node"] = {"port": info.port, "node_type": info.node_type,
                                  "highest_version": info.highest, "lowest_version": info.lowest}
            except erl_epmd.NotRegistered:
                result["registered"] = False
    except erl_epmd.DistError as exc:
        result.update(reachable=False, reason="timeout" if exc.reason == "timeout" else "epmd_unreachable",
                      message="EPMD on %s port %d cannot be asked: %s." % (host, port, exc))
        if params["name"]:
            result["registered"] = False
    result["elapsed_ms"] = int(round((time.monotonic() - started) * 1000))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
