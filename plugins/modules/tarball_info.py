#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: tarball_info
short_description: Read what an OTP release tarball holds (version, ERTS, start script, applications, checksum)
version_added: "0.1.0"
description:
  - Reads a release tarball made by C(mix release) (with the C(:tar) step) or C(rebar3 tar) in one pass - its SHA-256,
    the release and ERTS versions from C(releases/start_erl.data), whether it has C(bin/NAME), and which applications
    C(lib/) holds.
  - The C(beamops.cluster.release) role's preflight runs it on the controller; nothing is unpacked or changed.
options:
  path:
    description: Path of the tarball.
    type: path
    required: true
  name:
    description: Release name (the start script is C(bin/NAME)).
    type: str
    required: true
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
author:
  - beamops.cluster contributors (@beamops)
"""

EXAMPLES = r"""
- name: Read the tarball on the controller
  beamops.cluster.tarball_info:
    path: build/demo-1.2.0.tar.gz
    name: demo
  delegate_to: localhost
  register: tarball
"""

RETURN = r"""
exists:
  description: The path exists.
  returned: always
  type: bool
readable:
  description: The path is a regular file the module can read.
  returned: always
  type: bool
sha256:
  description: SHA-256 of the file (hex).
  returned: always
  type: str
version:
  description: Release version (empty when C(releases/start_erl.data) is missing).
  returned: always
  type: str
erts_version:
  description: ERTS version the release was built with.
  returned: always
  type: str
start_script:
  description: The tarball has C(bin/NAME).
  returned: always
  type: bool
applications:
  description: Applications in C(lib/) (names without versions).
  returned: always
  type: list
  elements: str
error:
  description: Why the file could not be read (empty when it could).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.beamops.cluster.plugins.module_utils import release_tarball


def main():
    module = AnsibleModule(
        argument_spec=dict(path=dict(type="path", required=True), name=dict(type="str", required=True)),
        supports_check_mode=True,
    )
    module.exit_json(changed=False, **release_tarball.inspect(module.params["path"], module.params["name"]))


if __name__ == "__main__":
    main()
