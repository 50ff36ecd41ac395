#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: config_files
short_description: Write a node's configuration files in one pass, keeping a snapshot that a failed deploy restores
version_added: "0.1.0"
description:
  - With O(state=present), makes each file in O(files) have exactly the given content, owner, group and mode (or be
    absent), in one call. Each file is written atomically, with its owner and mode set before its content lands.
  - With O(snapshot_dir), every file about to change is first kept there as it is, with its owner, group and mode
    (or noted as missing); several calls add to one snapshot. O(state=restored) puts every kept file back exactly as
    it was (removing those that did not exist) and removes the snapshot; O(state=discarded) removes it.
  - Used by the C(beamops.cluster.release) role, which needs one round trip for a node's whole configuration and a
    rollback that gives every file back the owner, group and mode it had.
options:
  files:
    description: The files. Required with O(state=present).
    type: list
    elements: dict
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      state:
        description: C(present) (a file with this content), C(directory), C(link) (a symbolic link to O(files[].src)), or C(absent).
        type: str
        choices: [present, directory, link, absent]
        default: present
      content:
        description: The file's text (required when present).
        type: str
      src:
        description: Where the link points (required for a link).
        type: str
      owner:
        description: Owner (required unless absent).
        type: str
      group:
        description: Group (required unless absent).
        type: str
      mode:
        description: Mode as octal text, for example C("0640") (required unless absent).
        type: str
      secret:
        description: The content is a secret; it never appears in a diff.
        type: bool
        default: false
      validate:
        description:
          - Command (argv) that checks the new content before it is put in place; C(%s) stands for the new file's path.
          - A non-zero exit refuses the file (the module fails, the old file stays).
        type: list
        elements: str
  snapshot_dir:
    description: Directory (created 0700) that keeps the files as they were before this deploy changed them.
    type: path
  state:
    description: Write the files, put a snapshot back, or drop a snapshot.
    type: str
    choices: [present, restored, discarded]
    default: present
attributes:
  check_mode:
    support: full
    description: With O(state=present) reports which files would change (and their diff) without writing anything.
  diff_mode:
    support: full
    description: Shows the text changes of files that are not O(files[].secret).
author:
  - beamops.cluster contributors (@beamops)
"""

EXAMPLES = r"""
- name: Write the node's configuration, keeping what it replaces
  beamops.cluster.config_files:
    files:
      - {path: /etc/demo/env, content: "{{ lookup('template', 'env.j2') }}", owner: root, group: demo, mode: "0640"}
      - {path: /etc/demo/ssl_dist.conf, state: absent}
    snapshot_dir: /opt/demo/.config-before-deploy

- name: Put the configuration back after a failed deploy
  beamops.cluster.config_files:
    snapshot_dir: /opt/demo/.config-before-deploy
    state: restored
"""

RETURN = r"""
files:
  description: Per file, whether it changed (or would change in check mode).
  returned: when O(state=present)
  type: list
  elements: dict
  sample: [{path: /etc/demo/env, changed: true}]
changed_paths:
  description: Paths that changed (or would change).
  returned: when O(state=present)
  type: list
  elements: str
restored:
  description: Paths put back from the snapshot.
  returned: when O(state=restored)
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.beamops.cluster.plugins.module_utils import config_files

FILE_SPEC = dict(
    path=dict(type="path", required=True),
    state=dict(type="str", choices=["present", "directory", "link", "absent"], default="present"),
    content=dict(type="str"),
    src=dict(type="str"),
    owner=dict(type="str"),
    group=dict(type="str"),
    mode=dict(type="str"),
    secret=dict(type="bool", default=False),
    validate=dict(type="list", elements="str"),
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            files=dict(type="list", elements="dict", options=FILE_SPEC),
            snapshot_dir=dict(type="path"),
            state=dict(type="str", choices=["present", "restored", "discarded"], default="present"),
        ),
        required_if=[("state", "present", ["files"]), ("state", "restored", ["snapshot_dir"]),
                     ("state", "discarded", ["snapshot_dir"])],
        supports_check_mode=True,
    )
    params = module.params
    try:
        if params["state"] == "restored":
            restored = [] if module.check_mode else config_files.restore(params["snapshot_dir"])
            module.exit_json(changed=bool(restored), restored=restored)
        if params["state"] == "discarded":
            module.exit_json(changed=False if module.check_mode else config_files.discard(params["snapshot_dir"]))
        specs = params["files"]
        entries = config_files.plan(specs) if module.check_mode else config_files.apply(specs, params["snapshot_dir"])
    except config_files.ConfigFileError as exc:
        module.fail_json(msg=str(exc))
    changed = [e["path"] for e in entries if e["changed"]]
    result = dict(changed=bool(changed), changed_paths=changed,
                  files=[{"path": e["path"], "changed": e["changed"]} for e in entries])
    if module._diff:
        result["diff"] = [{"before_header": e["path"], "after_header": e["path"], "before": e["before"] or "",
                           "after": e["after"] or ""} for e in entries if e["changed"] and e["after"] is not None
                          or e["changed"] and e["before"] is not None]
    module.exit_json(**result)


if __name__ == "__main__":
    main()
