# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that expose the topology renderer (plugins/module_utils/topology.py) to templates and tasks."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: topology
short_description: Render cluster discovery (libcluster topology or native) settings and node names
version_added: 0.1.0
description:
  - Renders, from a strategy name, its options and the cluster members, the Erlang term config file text that
    sets the application env C(:libcluster, :topologies) (or the kernel's C(sync_nodes_optional) for C(native)),
    the node name each member is started as, and the node names its peers dial.
  - Input problems are returned in C(errors), not raised, so a preflight can report all of them at once.
options:
  _input:
    description: Strategy name.
    type: str
    required: true
    choices: [epmd, erlang_hosts, gossip, dnspoll, native, kubernetes_dns, kubernetes_dnssrv, kubernetes]
  options:
    description: The strategy's settings, with libcluster's key names (for example C(query), C(polling_interval), C(port), C(secret)).
    type: dict
    default: {}
  members:
    description:
      - Cluster members for static (VM) strategies, each a dict with C(host) (an id), C(address) (IP address) and C(fqdn).
      - Build it with the P(beamops.cluster.topology_members#filter) filter from the inventory.
    type: list
    elements: dict
    default: []
  basename:
    description: The node name part before C(@).
    type: str
    required: true
  node_host:
    description: What follows C(@) in node names of VM members.
    type: str
    default: address
    choices: [address, fqdn]
"""

EXAMPLES = r"""
- name: Render an Epmd topology for three VMs
  ansible.builtin.set_fact:
    topo: >-
      {{ 'epmd' | beamops.cluster.topology(basename='shop', members=groups['shop']
         | beamops.cluster.topology_members(hostvars)) }}

- name: Fail on input that cannot form a cluster
  ansible.builtin.assert:
    that: topo.errors | length == 0
    fail_msg: "{{ topo.errors | map(attribute='message') | join('; ') }}"

- name: Write the config file passed to the VM with -config
  ansible.builtin.copy:
    content: "{{ topo.config }}"
    dest: /etc/shop/topology.config
    mode: "0640"
"""

RETURN = r"""
_value:
  description: The rendered topology.
  type: dict
  contains:
    strategy:
      description: The strategy name given.
      type: str
    config:
      description: Erlang term file text, C([{libcluster,[{topologies,[...]}]}].), empty when there are errors.
      type: str
    nodes:
      description: Member id to the node name it is started as (static strategies).
      type: dict
    dialled:
      description: Node names peers dial (static strategies).
      type: list
      elements: str
    hosts_erlang:
      description: Text of C(.hosts.erlang) for C(erlang_hosts), else empty.
      type: str
    started_as:
      description: For Kubernetes strategies, the node name a pod is started as, with C($(VAR)) references to its env.
      type: str
    errors:
      description: Input problems, each with C(field) (C(strategy), C(options.KEY), C(basename), C(node_host), C(members...)) and C(message).
      type: list
      elements: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.beamops.cluster.plugins.module_utils.topology import render


def topology(strategy, options=None, members=None, basename=None, node_host="address"):
    """Render the topology for ``strategy``."""
    if basename is None:
        raise AnsibleFilterError("topology: the basename argument (node name part before '@') is required")
    if options is not None and not isinstance(options, dict):
        raise AnsibleFilterError("topology: options must be a dict, got %s" % type(options).__name__)
    return render(strategy, options=options, members=members, basename=basename, node_host=node_host)


def topology_members(hosts, hostvars, address_var="release_node_address", fqdn_var="release_node_fqdn"):
    """Members list for ``topology`` from inventory host names.

    Address: the host's ``address_var`` if set, else ``ansible_host``, else its name.
    FQDN: the host's ``fqdn_var`` if set, else its inventory name.
    """
    members = []
    for host in hosts:
        hv = hostvars[host]
        address = hv.get(address_var) or hv.get("ansible_host") or host
        fqdn = hv.get(fqdn_var) or host
        members.append({"host": host, "address": str(address), "fqdn": str(fqdn)})
    return members


class FilterModule(object):
    """beamops.cluster topology filters."""

    def filters(self):
        return {"topology": topology, "topology_members": topology_members}
