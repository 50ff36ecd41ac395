#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: compare_run
short_description: Run the same fault scenarios on BEAM cluster targets and write a measured report
version_added: "0.1.0"
description:
  - Runs on the controller (an action plugin; the task's host does not matter, use C(localhost)). For each target in
    turn it deploys the release (VM targets - C(beamops.cluster.deploy_vms) with every host at once; Kubernetes
    targets with C(deploy_vars) - C(beamops.cluster.deploy_k8s)), checks that every node answers and the mesh
    is full (else it fails before any fault), starts a hidden-node observer that samples every node's view of the mesh
    (10 Hz by default), runs every scenario K times and writes C(results.json), C(report.md) and a self-contained
    C(report.html) into O(out_dir).
  - Before each repetition the baseline (full mesh, every node up, no fault, no extra node) is restored and its time
    recorded; victims rotate over the members. A run that does not heal, join or form the mesh within O(timeout) is
    kept as censored ("> timeout"), never dropped.
  - Every fault is journaled on disk before it is applied and undone on every exit path (failure, Ctrl-C, SIGTERM); a
    later run undoes what a run killed outright left (O(journal_dir)). After a run no nftables rule, stopped or frozen
    node or extra node is left, and the spare host is left as it was found.
  - Prints one progress line per deploy, scenario and repetition with an estimate of the time left.
  - Without a target of kind C(kubernetes) the results carry one that is not measured, C(not measured - no cluster
    configured); a lab figure is never shown as a Kubernetes figure.
  - See docs/compare.md for each scenario, its metrics and the statistics.
attributes:
  check_mode:
    support: full
    description: Validates every option and says what would run; deploys nothing, injects nothing.
  diff_mode:
    support: none
    description: Nothing to show as a diff.
options:
  targets:
    description:
      - The targets, each a dict with C(kind) C(vm) or C(kubernetes).
      - "C(vm) - C(name) (the column header, default C(vm-STRATEGY)), C(inventory) (path of the Ansible inventory), C(hosts)
        (the members, 2 or more inventory hosts), C(spare) (a host outside them, needed by C(scale_out)), C(strategy)
        (C(epmd), C(gossip), C(dnspoll), C(erlang_hosts), C(native)), C(discovery) (the strategy's options, the role's
        C(release_discovery)), C(release_vars) (more C(release_*) role variables, for example C(release_net_ticktime),
        C(release_epmdless), C(release_tls)), C(tarballs) (one path, or two for a rolling deploy between versions;
        default O(release.src) and O(release.upgrade_src)), C(deploy) (default true; false measures the cluster as it
        runs), C(platform) (text for the report)."
      - "C(kubernetes) - C(name), C(namespace), C(workload) (C(StatefulSet/NAME) or C(Deployment/NAME)), C(strategy)
        (C(kubernetes_dns), C(kubernetes_dnssrv), C(kubernetes_api)), C(kubeconfig) (default C($K8S_AUTH_KUBECONFIG);
        a Kubernetes target without one is refused before anything runs), C(context), C(selector), C(service) (the
        headless Service, for C(kubernetes_dnssrv) names), C(cluster_domain), C(node_basename), C(epmd_port),
        C(dist_port), C(deploy_vars) (C(kubernetes_*) variables of C(beamops.cluster.deploy_k8s); deploys first)."
      - Never put the cookie in a target; it goes in O(release.cookie).
    type: list
    elements: dict
    required: true
  release:
    description: The release every target runs (a target may override C(release_name)).
    type: dict
    default: {}
    suboptions:
      name:
        description: Release name (C(bin/NAME), unit C(NAME.service)).
        type: str
      cookie:
        description: The cluster's Erlang cookie. Never logged and never written to the results; deploys get it in a
          0600 vars file, never on a command line.
        type: str
      src:
        description: Path on the controller of the release tarball the VM targets are deployed with.
        type: path
      upgrade_src:
        description: A second tarball (another version); C(rolling_deploy) then deploys between the two versions
          host by host. Without it C(rolling_deploy) is a rolling restart.
        type: path
      vars:
        description: C(release_*) role variables for every VM target (a target's own C(release_vars) win).
        type: dict
        default: {}
  scenarios:
    description:
      - The scenarios to run, in this order whatever the order given. Default every one, or with O(short)
        C(crash), C(partition_full_reject), C(rolling_deploy), C(latency).
    type: list
    elements: str
    choices: [cold_start, crash, freeze, partition_full_drop, partition_full_reject, partition_partial_drop,
              partition_partial_reject, rolling_deploy, scale_out, latency, throughput]
  repetitions:
    description: K, how often each scenario runs per target (default 5, 3 with O(short)).
    type: int
  short:
    description: The short run for CI and the demo - fewer scenarios, K=3, shorter latency and throughput runs.
    type: bool
    default: false
  timeout:
    description: Seconds a heal, a join or a full mesh is waited for; a run that takes longer is censored.
    type: float
    default: 60.0
  observer_interval:
    description: Seconds between the observer's samples (the resolution of every timeline figure).
    type: float
    default: 0.1
  out_dir:
    description: Folder for C(results.json), C(report.md), C(report.html), the observer's files and the deploy logs.
    type: path
    required: true
  journal_dir:
    description: Folder of the fault journals (one per set of hosts, kept across runs). Default
      C(/var/lib/beamops/faults) as root, else C(~/.local/state/beamops/faults).
    type: path
  latency_rate_hz:
    description: Calls per second of the open-loop latency run.
    type: float
    default: 200.0
  latency_seconds:
    description: Seconds of each latency run (default 10, 3 with O(short)).
    type: float
  throughput_seconds:
    description: Seconds of each throughput run (default 5, 2 with O(short)).
    type: float
  message_bytes:
    description: Size of each binary the throughput run sends.
    type: int
    default: 1048576
notes:
  - The lab's figures come from systemd-nspawn hosts on one machine; they compare strategies and settings with each
    other, not with separate machines.
author:
  - beamops.cluster contributors (@beamops)
"""

EXAMPLES = r"""
- name: Compare two discovery strategies on three hosts
  beamops.cluster.compare_run:
    release:
      name: shop
      cookie: "{{ vault_erlang_cookie }}"
      src: build/shop-1.4.0.tar.gz
      upgrade_src: build/shop-1.4.1.tar.gz
      vars:
        release_net_ticktime: 10
    targets:
      - {kind: vm, inventory: inventory.yml, hosts: [app1, app2, app3], spare: app4, strategy: epmd}
      - {kind: vm, inventory: inventory.yml, hosts: [app1, app2, app3], spare: app4, strategy: gossip}
    out_dir: "{{ playbook_dir }}/compare"
  register: comparison

- name: A short run of two scenarios
  beamops.cluster.compare_run:
    release: {name: shop, cookie: "{{ vault_erlang_cookie }}", src: build/shop-1.4.0.tar.gz}
    targets:
      - {kind: vm, inventory: inventory.yml, hosts: [app1, app2, app3], deploy: false}
    scenarios: [crash, partition_full_reject]
    repetitions: 3
    out_dir: /tmp/compare
"""

RETURN = r"""
results_json:
  description: Path of C(results.json) (schema 1, every raw value, no cookie).
  returned: success
  type: str
  sample: /srv/compare/results.json
report_md:
  description: Path of C(report.md).
  returned: success
  type: str
report_html:
  description: Path of the self-contained C(report.html) (inline SVG charts, no script, no network request).
  returned: success
  type: str
summary:
  description: One line per target and scenario - the median and range of its main metric, and runs that did not heal by themselves.
  returned: success
  type: list
  elements: str
  sample: ["vm-epmd crash: heal_ms median 2.61 s (range 2.50 s-2.80 s, K=5)"]
duration_s:
  description: How long the whole comparison took.
  returned: success
  type: float
measured:
  description: Names of the targets that were measured.
  returned: success
  type: list
  elements: str
not_measured:
  description: Targets that were not measured, with the reason.
  returned: success
  type: dict
  sample: {kubernetes: "not measured: no cluster configured"}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.beamops.cluster.plugins.module_utils.compare_options import ARGUMENT_SPEC


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.fail_json(msg="beamops.cluster.compare_run runs on the controller as an action plugin; it cannot run as a "
                         "module on a host")


if __name__ == "__main__":
    main()
