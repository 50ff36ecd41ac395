#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: lab_bridge
short_description: Make or remove the Linux bridge of the local lab
version_added: "0.1.0"
description:
  - Makes a Linux bridge with one IPv4 address and brings it up, or deletes it.
  - Used by the C(beamops.cluster.lab) role. It adds no route and no NAT, so the lab never gets a way out.
options:
  name:
    description: Bridge interface name (at most 15 characters).
    type: str
    required: true
  address:
    description: Address with prefix length, for example C(198.18.0.1/24). Required when I(state=present).
    type: str
  state:
    description: Whether the bridge should exist.
    type: str
    choices: [present, absent]
    default: present
author:
  - beamops.cluster contributors (@beamops)
"""

EXAMPLES = r"""
- name: Make the lab bridge
  beamops.cluster.lab_bridge:
    name: beamlab0
    address: 198.18.0.1/24

- name: Remove the lab bridge
  beamops.cluster.lab_bridge:
    name: beamlab0
    state: absent
"""

RETURN = r"""
name:
  description: Bridge interface name.
  returned: always
  type: str
  sample: beamlab0
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.beamops.cluster.plugins.module_utils import lab_host


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            address=dict(type="str"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        required_if=[("state", "present", ["address"])],
    )
    name = module.params["name"]
    if len(name) > 15:
        module.fail_json(msg="name=%s is longer than the 15 characters an interface name may have" % name)
    try:
        if module.params["state"] == "present":
            changed = lab_host.ensure_bridge(name, module.params["address"])
        else:
            changed = lab_host.remove_link(name)
    except lab_host.LabCommandError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=changed, name=name)


if __name__ == "__main__":
    main()
