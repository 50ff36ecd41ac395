#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: lab_plan
short_description: Check the lab's inputs and this machine, and compute the lab's names and addresses
version_added: "0.1.0"
description:
  - Validates the inputs of the local lab of VM-like hosts (see the C(beamops.cluster.lab) role) and checks that
    this machine can run it (root, required tools, the network not already in use elsewhere).
  - Makes nothing; returns the plan (bridge, addresses, host names) that the lab's other steps use.
  - Every error names the variable or tool at fault and the fix.
options:
  name:
    description: Lab name; prefixes the bridge (C(<name>0)), namespaces and hosts (C(<name>-<i>)).
    type: str
    required: true
  purpose:
    description:
      - C(up) checks everything needed to make the lab and returns the full plan.
      - C(down) checks only I(name) and returns the parts of the plan that removal needs (C(name), C(bridge),
        C(state_dir)).
    type: str
    choices: [up, down]
    default: up
  hosts:
    description: Number of hosts. Required when I(purpose=up).
    type: int
  network:
    description:
      - IPv4 network in CIDR form inside 198.18.0.0/15. The bridge gets .1, hosts .11, .12, ...
      - Required when I(purpose=up).
    type: str
  domain:
    description: DNS domain of the hosts. Required when I(purpose=up).
    type: str
author:
  - beamops.cluster contributors (@beamops)
"""

EXAMPLES = r"""
- name: Plan a lab of three hosts
  beamops.cluster.lab_plan:
    name: beamlab
    hosts: 3
    network: 198.18.0.0/24
    domain: lab.test
  register: lab_plan_result
"""

RETURN = r"""
plan:
  description: Names and addresses of the lab.
  returned: success
  type: dict
  contains:
    name: {description: Lab name., type: str, returned: success}
    network: {description: Lab network., type: str, returned: success}
    prefix: {description: Prefix length of the network., type: int, returned: success}
    domain: {description: DNS domain., type: str, returned: success}
    dns_name: {description: Name that resolves to every host's address., type: str, returned: success, sample: beamlab.lab.test}
    bridge: {description: Bridge interface name., type: str, returned: success, sample: beamlab0}
    bridge_address: {description: Address of the bridge and the DNS server., type: str, returned: success}
    state_dir: {description: Directory that records what the lab made., type: str, returned: success}
    max_hosts: {description: Most hosts that fit in the network., type: int, returned: success}
    hosts:
      description: One entry per host with C(index), C(name), C(address), C(fqdn), C(netns) and C(link).
      type: list
      elements: dict
      returned: success
"""

import json
import os
import shutil

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.beamops.cluster.plugins.module_utils import lab_plan


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            purpose=dict(type="str", choices=["up", "down"], default="up"),
            hosts=dict(type="int"),
            network=dict(type="str"),
            domain=dict(type="str"),
        ),
        required_if=[("purpose", "up", ["hosts", "network", "domain"])],
        supports_check_mode=True,
    )
    params = module.params
    try:
        if params["purpose"] == "down":
            module.exit_json(changed=False, plan=lab_plan.removal_plan(params["name"]))
        plan = lab_plan.build_plan(params["name"], params["hosts"], params["network"], params["domain"])
    except lab_plan.LabInputError as exc:
        module.fail_json(msg=str(exc))
    missing = lab_plan.missing_tools(shutil.which)
    conflicts = []
    if shutil.which("ip"):
        rc, out, err = module.run_command(["ip", "-j", "addr", "show"])
        if rc != 0:
            module.fail_json(msg="ip -j addr show failed: %s" % err)
        conflicts = lab_plan.conflicting_addresses(plan["network"], json.loads(out or "[]"), plan["bridge"])
    errors = lab_plan.preflight_errors(os.geteuid(), missing, conflicts, plan["network"], plan["name"])
    if errors:
        module.fail_json(msg="The lab cannot be made: " + "; ".join(errors), errors=errors)
    module.exit_json(changed=False, plan=plan)


if __name__ == "__main__":
    main()
