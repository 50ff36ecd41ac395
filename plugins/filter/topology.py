# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that expose the topology renderer (plugins/module_utils/topology.py) to templates and tasks.

Their documentation is in topology.yml and topology_members.yml beside this file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.beamops.cluster.plugins.module_utils.topology import heals, render, rolling_switch


def topology(strategy, options=None, members=None, basename=None, node_host="address", variables=None, cluster_domain="cluster.local",
             target=None):
    """Render the topology for ``strategy``; with ``variables``, each error also gets a ``text`` naming the caller's variable."""
    if basename is None:
        raise AnsibleFilterError("topology: the basename argument (node name part before '@') is required")
    if options is not None and not isinstance(options, dict):
        raise AnsibleFilterError("topology: options must be a dict, got %s" % type(options).__name__)
    result = render(strategy, options=options, members=members, basename=basename, node_host=node_host, cluster_domain=cluster_domain,
                    target=target)
    if variables:
        for error in result["errors"]:
            error["text"] = "%s %s." % (_variable_of(error["field"], variables), error["message"])
    return result


def _variable_of(field, variables):
    """Caller's name for an input field: ``options.query`` -> ``<options var>.query``, ``members.H.address`` -> ``host H: <member var>``."""
    head, _sep, rest = field.partition(".")
    if head == "members" and rest:
        host, key = rest.rsplit(".", 1)
        return "host %s: %s" % (host, variables.get("member", "%s") % key)
    name = variables.get(head, head)
    return "%s.%s" % (name, rest) if rest else name


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


def topology_heals(strategy, options=None):
    """``{"heals": bool, "why": text}``: whether nodes of this topology reconnect by themselves after a partition."""
    ok, why = heals(strategy, options or {})
    return {"heals": ok, "why": why}


def topology_rolling_switch(running, strategy):
    """``{"ok": bool, "why": text}``: whether nodes running ``running`` (release_info's topology) can move to
    ``strategy`` host by host."""
    if not isinstance(running, dict):
        raise AnsibleFilterError("topology_rolling_switch: the input must be a dict with strategy and redials, got %s"
                                 % type(running).__name__)
    ok, why = rolling_switch(running, strategy)
    return {"ok": ok, "why": why}


class FilterModule(object):
    """beamops.cluster topology filters."""

    def filters(self):
        return {"topology": topology, "topology_members": topology_members, "topology_heals": topology_heals,
                "topology_rolling_switch": topology_rolling_switch}
