#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: release_info
short_description: Read, in one call, what an OTP release deployed by beamops.cluster runs on a host now
version_added: "0.1.0"
description:
  - Reads the service's state, the C(current) and C(previous) release links, whether TLS distribution is on, the
    discovery strategy the node was started with (from the header of its topology config), whether a tarball is
    already unpacked, the address the controller connects from, the mount options of C(/proc) and whether nftables
    can be used. The C(beamops.cluster.release) role's preflight needs all of it; one call is one round trip.
  - Read-only.
options:
  name:
    description: Release name (the service is C(NAME.service)).
    type: str
    required: true
  base_dir:
    description: Where the releases and the C(current)/C(previous) links are.
    type: path
    required: true
  config_dir:
    description: The release's configuration directory.
    type: path
    required: true
  release_dir:
    description: Directory the release being deployed unpacks to (for RV(unpacked) and RV(erts_version)).
    type: path
  checksum:
    description: SHA-256 of the tarball being deployed.
    type: str
  units:
    description: More systemd units to report on (RV(units)), for example the EPMD and firewall units.
    type: list
    elements: str
    default: []
  paths:
    description: Paths to report the existence of (RV(exists)) and, for links, their targets (RV(links)).
    type: list
    elements: path
    default: []
  account:
    description: The service account to check (RV(account)) - C(user), C(group), C(home), C(shell).
    type: dict
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
author:
  - beamops.cluster contributors (@beamops)
"""

EXAMPLES = r"""
- name: Read what runs here
  beamops.cluster.release_info:
    name: demo
    base_dir: /opt/demo
    config_dir: /etc/demo
  register: demo_now
"""

RETURN = r"""
running:
  description: The service is active.
  returned: always
  type: bool
enabled:
  description: The service is enabled.
  returned: always
  type: bool
main_pid:
  description: Main PID of the service (0 when it does not run).
  returned: always
  type: int
current:
  description: Where the C(current) link points (empty when missing).
  returned: always
  type: str
current_version:
  description: The version C(current) points at.
  returned: always
  type: str
previous:
  description: Where the C(previous) link points (empty when missing).
  returned: always
  type: str
tls:
  description: The node runs TLS distribution (its options file is there).
  returned: always
  type: bool
topology:
  description: The strategy the node runs (C(strategy), none when unknown) and whether it re-dials lost peers (C(redials)).
  returned: always
  type: dict
unpacked:
  description: O(release_dir) holds a complete unpack of the tarball with O(checksum).
  returned: always
  type: bool
erts_version:
  description: ERTS version of the release in O(release_dir) (empty when not unpacked).
  returned: always
  type: str
controller_address:
  description: The address the controller's SSH session comes from.
  returned: always
  type: str
proc_options:
  description: Mount options of C(/proc).
  returned: always
  type: list
  elements: str
nft:
  description: Empty when nftables can be used on the host, else why not.
  returned: always
  type: str
units:
  description: For each of O(units), whether it is active and enabled.
  returned: always
  type: dict
  sample: {beamops-epmd: {active: true, enabled: true}}
exists:
  description: For each of O(paths), whether it exists.
  returned: always
  type: dict
links:
  description: For each of O(paths), where it points (empty when it is not a link).
  returned: always
  type: dict
account:
  description: With O(account), whether the group exists (C(group)) and the user exists as given (C(user)).
  returned: always
  type: dict
fstab_proc:
  description: The C(/proc) line of C(/etc/fstab) (empty when there is none).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.beamops.cluster.plugins.module_utils import release_host


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            base_dir=dict(type="path", required=True),
            config_dir=dict(type="path", required=True),
            release_dir=dict(type="path"),
            checksum=dict(type="str"),
            units=dict(type="list", elements="str", default=[]),
            paths=dict(type="list", elements="path", default=[]),
            account=dict(type="dict"),
        ),
        supports_check_mode=True,
    )
    params = module.params

    def run(argv):
        try:
            return module.run_command(argv, handle_exceptions=False)
        except OSError as exc:  # the program is not installed (nft on a minimal host)
            return 127, "", str(exc)

    info = release_host.read(params["name"], params["base_dir"], params["config_dir"], params["release_dir"],
                             params["checksum"], units=params["units"], paths=params["paths"],
                             account=params["account"], run=run)
    module.exit_json(changed=False, **info)


if __name__ == "__main__":
    main()
