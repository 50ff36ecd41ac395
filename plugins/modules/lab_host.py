#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: lab_host
short_description: Boot or remove one VM-like host of the local lab (systemd-nspawn)
version_added: "0.1.0"
description:
  - I(state=present) mounts an overlay of I(base) at C(<host_dir>/merged) (upper layer C(<host_dir>/upper)),
    writes I(files) and an ed25519 SSH host key of its own into it, makes the network namespace I(netns) with
    C(eth0) at I(address) joined to I(bridge) by the veth I(link), starts
    C(systemd-nspawn --boot) detached, records its PID in C(<host_dir>/nspawn.json) and waits until sshd answers
    and systemd finished booting.
  - Before making anything it writes C(<host_dir>/host.json), so I(state=absent) can remove a host that failed half way.
  - I(state=absent) stops the recorded process by PID (never by name), unmounts, deletes the link and the namespace
    named in C(host.json), and deletes I(host_dir).
  - Running with I(state=present) on a host that is up changes nothing.
options:
  host_dir:
    description: Directory of this host inside the lab's state directory.
    type: path
    required: true
  name:
    description: Host (machine) name. Required when I(state=present).
    type: str
  base:
    description: Root file system used as the overlay's lower layer. Required when I(state=present).
    type: path
  netns:
    description: Network namespace name. Required when I(state=present).
    type: str
  link:
    description: Name of the veth end on the bridge (at most 15 characters). Required when I(state=present).
    type: str
  bridge:
    description: Bridge to join. Required when I(state=present).
    type: str
  address:
    description: Address of the host's C(eth0) with prefix length. Required when I(state=present).
    type: str
  files:
    description:
      - Files of this host, written through the overlay before boot (only when their content or mode differs).
      - Missing parent directories are made with mode 0700.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path inside the host.
        type: str
        required: true
      content:
        description: Content of the file.
        type: str
        required: true
      mode:
        description: Octal mode.
        type: str
        default: "0644"
  boot_timeout:
    description: Seconds to wait for sshd and for systemd to finish booting.
    type: int
    default: 60
  state:
    description: Whether the host should run.
    type: str
    choices: [present, absent]
    default: present
notes:
  - Runs C(systemd-nspawn) with C(--register=no --keep-unit) because the machine running the lab need not run
    systemd or a system D-Bus.
author:
  - beamops.cluster contributors (@beamops)
"""

EXAMPLES = r"""
- name: Boot host 1 of the lab
  beamops.cluster.lab_host:
    host_dir: /var/lib/beamops/lab/beamlab/hosts/beamlab-1
    name: beamlab-1
    base: /var/cache/beamops/lab/bookworm-0123456789ab
    netns: beamlab-1
    link: beamlab-1
    bridge: beamlab0
    address: 198.18.0.11/24
    files:
      - path: /etc/resolv.conf
        content: "nameserver 198.18.0.1\n"

- name: Remove it again
  beamops.cluster.lab_host:
    host_dir: /var/lib/beamops/lab/beamlab/hosts/beamlab-1
    state: absent
"""

RETURN = r"""
pid:
  description: PID of the host's systemd-nspawn process on this machine.
  returned: when I(state=present)
  type: int
address:
  description: The host's address.
  returned: when I(state=present)
  type: str
system_state:
  description: What C(systemctl is-system-running) said inside the host after boot (C(running) or C(degraded)).
  returned: when I(state=present)
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.beamops.cluster.plugins.module_utils import lab_host

PRESENT_OPTIONS = ["name", "base", "netns", "link", "bridge", "address"]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            host_dir=dict(type="path", required=True),
            name=dict(type="str"),
            base=dict(type="path"),
            netns=dict(type="str"),
            link=dict(type="str"),
            bridge=dict(type="str"),
            address=dict(type="str"),
            files=dict(type="list", elements="dict", default=[], options=dict(
                path=dict(type="str", required=True),
                content=dict(type="str", required=True),
                mode=dict(type="str", default="0644"),
            )),
            boot_timeout=dict(type="int", default=60),
            state=dict(type="str", choices=["present", "absent"], default="present"),
        ),
        required_if=[("state", "present", PRESENT_OPTIONS)],
    )
    params = module.params
    for spec in params["files"]:
        if not spec["path"].startswith("/") or "/../" in spec["path"] + "/":
            module.fail_json(msg="files: path=%s must be absolute and must not contain '..'" % spec["path"])
        try:
            int(spec["mode"], 8)
        except ValueError:
            module.fail_json(msg="files: mode=%s of %s is not an octal mode such as '0644'" % (spec["mode"], spec["path"]))
    try:
        if params["state"] == "absent":
            module.exit_json(changed=lab_host.remove_host(params["host_dir"]))
        result = lab_host.ensure_host(params["name"], params["host_dir"], params["base"], params["netns"],
                                      params["link"], params["bridge"], params["address"], params["boot_timeout"],
                                      params["files"])
    except (lab_host.LabCommandError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
