# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validate the lab's inputs and compute every name and address it will use.

Nothing here touches the machine except reading: the plan is computed before anything is
made, so bad input fails before a single link, mount or process exists.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import os
import re

# RFC 2544 benchmarking range: the only addresses the lab may use.
LAB_RANGE = ipaddress.ip_network(u"198.18.0.0/15")
# Hosts get .11, .12, ...: the low addresses stay free for the bridge and later helpers.
FIRST_HOST_OFFSET = 10
# Interface names are limited to 15 characters; "<name>-<index>" with a 3-digit index must fit.
NAME_PATTERN = re.compile(r"^[a-z](?:[a-z0-9-]{0,8}[a-z0-9])?$")
DOMAIN_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
STATE_ROOT = "/var/lib/beamops/lab"
REQUIRED_TOOLS = (
    ("systemd-nspawn", "apt-get install systemd-container"),
    ("debootstrap", "apt-get install debootstrap"),
    ("dnsmasq", "apt-get install dnsmasq-base"),
    ("ip", "apt-get install iproute2"),
    ("nsenter", "apt-get install util-linux"),
    ("mount", "apt-get install mount"),
    ("ssh-keygen", "apt-get install openssh-client"),
)


class LabInputError(ValueError):
    """Input the lab refuses; the message names the variable and the fix."""


def bridge_name(name):
    return u"%s0" % name


def state_dir(name, state_root=STATE_ROOT):
    return os.path.join(state_root, name)


def max_hosts(network):
    """How many hosts fit: from .11 up to the address below the broadcast address."""
    return max(0, network.num_addresses - FIRST_HOST_OFFSET - 2)


def parse_network(value):
    try:
        network = ipaddress.ip_network(u"%s" % value, strict=True)
    except ValueError as exc:
        raise LabInputError(
            u"lab_network=%r is not a network in CIDR form (%s); use for example 198.18.8.0/24" % (value, exc))
    if network.version != 4 or not network.subnet_of(LAB_RANGE):
        raise LabInputError(
            u"lab_network=%s lies outside %s, the benchmarking range the lab is allowed to use; "
            u"pick a network inside it, for example 198.18.8.0/24" % (network, LAB_RANGE))
    return network


def validate_name(name):
    if not NAME_PATTERN.match(name or u""):
        raise LabInputError(
            u"lab_name=%r is not usable: use 1-10 characters, lowercase letters, digits and '-', starting with a "
            u"letter (it prefixes interface names, which are limited to 15 characters)" % (name,))


def validate_domain(domain):
    labels = (domain or u"").split(u".")
    if len(domain or u"") > 200 or not all(DOMAIN_LABEL.match(label) for label in labels):
        raise LabInputError(
            u"lab_domain=%r is not a DNS domain: use lowercase labels separated by dots, for example lab.test" % (domain,))


def build_plan(name, hosts, network, domain, state_root=STATE_ROOT):
    """Return the lab's names and addresses as plain data, or raise LabInputError."""
    validate_name(name)
    validate_domain(domain)
    net = parse_network(network)
    limit = max_hosts(net)
    if not isinstance(hosts, int) or hosts < 1:
        raise LabInputError(u"lab_hosts=%r must be a whole number of at least 1" % (hosts,))
    if hosts > limit:
        raise LabInputError(
            u"lab_hosts=%d does not fit in lab_network=%s: hosts start at .%d, so at most %d fit; "
            u"lower lab_hosts or use a larger lab_network" % (hosts, net, FIRST_HOST_OFFSET + 1, limit))
    bridge_address = net.network_address + 1
    planned = []
    for index in range(1, hosts + 1):
        host = u"%s-%d" % (name, index)
        planned.append({
            u"index": index,
            u"name": host,
            u"address": u"%s" % (net.network_address + FIRST_HOST_OFFSET + index),
            u"fqdn": u"%s.%s" % (host, domain),
            u"netns": host,
            u"link": host,
        })
    return {
        u"name": name,
        u"network": u"%s" % net,
        u"prefix": net.prefixlen,
        u"domain": domain,
        u"dns_name": u"%s.%s" % (name, domain),
        u"bridge": bridge_name(name),
        u"bridge_address": u"%s" % bridge_address,
        u"state_dir": state_dir(name, state_root),
        u"max_hosts": limit,
        u"hosts": planned,
    }


def removal_plan(name, state_root=STATE_ROOT):
    """The part of the plan that removal needs: it only trusts what the state directory recorded."""
    validate_name(name)
    return {u"name": name, u"bridge": bridge_name(name), u"state_dir": state_dir(name, state_root)}


def missing_tools(which, tools=REQUIRED_TOOLS):
    """Return messages for the required tools that `which` cannot find."""
    return [u"%s is not installed (fix: %s)" % (tool, fix) for tool, fix in tools if not which(tool)]


def conflicting_addresses(network, interfaces, own_bridge):
    """Interfaces other than the lab's own bridge that already hold an address inside `network`.

    `interfaces` is the parsed output of `ip -j addr show`.
    """
    net = ipaddress.ip_network(u"%s" % network)
    conflicts = []
    for interface in interfaces:
        if interface.get(u"ifname") == own_bridge:
            continue
        for info in interface.get(u"addr_info", []):
            if info.get(u"family") != u"inet":
                continue
            if ipaddress.ip_address(u"%s" % info[u"local"]) in net:
                conflicts.append(u"%s has %s/%s" % (interface.get(u"ifname"), info[u"local"], info.get(u"prefixlen")))
    return conflicts


def preflight_errors(euid, missing, conflicts, network, plan_name):
    """Collect every reason the lab cannot be made, so the user sees them all at once."""
    errors = []
    if euid != 0:
        errors.append(u"the lab must run as root (it makes network namespaces, mounts and containers); "
                      u"run ansible-playbook as root")
    errors.extend(missing)
    if conflicts:
        errors.append(u"lab_network=%s is already in use outside lab %r (%s); pick another lab_network"
                      % (network, plan_name, u", ".join(conflicts)))
    return errors
