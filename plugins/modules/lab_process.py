#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: lab_process
short_description: Run a long-lived lab process detached, tracked by its recorded PID
version_added: "0.1.0"
description:
  - I(state=present) starts I(argv) in its own session with output appended to I(log), and records its PID, start
    time and command line in I(record). If the recorded process is alive with the same command line, nothing changes.
  - I(state=reloaded) sends SIGHUP to the recorded process.
  - I(state=absent) sends SIGTERM (then SIGKILL after I(stop_timeout)) to the recorded PID and removes the record.
    The start time in the record guards against a recycled PID; processes are never looked up by name.
options:
  argv:
    description: Command line, first element the program. Required when I(state=present).
    type: list
    elements: str
  record:
    description: Path of the JSON record of the process.
    type: path
    required: true
  log:
    description: File that receives the process's output. Required when I(state=present).
    type: path
  stop_timeout:
    description: Seconds to wait after SIGTERM before SIGKILL.
    type: int
    default: 30
  state:
    description: Whether the process should run, be told to reload, or be stopped.
    type: str
    choices: [present, reloaded, absent]
    default: present
author:
  - beamops.cluster contributors (@beamops)
"""

EXAMPLES = r"""
- name: Run the lab's dnsmasq
  beamops.cluster.lab_process:
    argv: [dnsmasq, --keep-in-foreground, --conf-file=/dev/null, --listen-address=198.18.0.1, --bind-interfaces]
    record: /var/lib/beamops/lab/beamlab/dnsmasq.json
    log: /var/lib/beamops/lab/beamlab/dnsmasq.log

- name: Stop it
  beamops.cluster.lab_process:
    record: /var/lib/beamops/lab/beamlab/dnsmasq.json
    state: absent
"""

RETURN = r"""
pid:
  description: PID of the process.
  returned: when I(state=present)
  type: int
"""

import signal

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.beamops.cluster.plugins.module_utils import lab_process


def main():
    module = AnsibleModule(
        argument_spec=dict(
            argv=dict(type="list", elements="str"),
            record=dict(type="path", required=True),
            log=dict(type="path"),
            stop_timeout=dict(type="int", default=30),
            state=dict(type="str", choices=["present", "reloaded", "absent"], default="present"),
        ),
        required_if=[("state", "present", ["argv", "log"])],
    )
    params = module.params
    try:
        if params["state"] == "absent":
            module.exit_json(changed=lab_process.stop(params["record"], params["stop_timeout"]))
        if params["state"] == "reloaded":
            if not lab_process.signal_recorded(params["record"], signal.SIGHUP):
                module.fail_json(msg="no live process recorded in %s to reload" % params["record"])
            module.exit_json(changed=True)
        changed, record = lab_process.ensure_running(params["argv"], params["record"], params["log"],
                                                     params["stop_timeout"])
    except OSError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=changed, pid=record["pid"])


if __name__ == "__main__":
    main()
