# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja tests on the topology renderer (plugins/module_utils/topology.py); docs in the YAML files beside this one."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.beamops.cluster.plugins.module_utils.topology import rolling_switch


def topology_switches_rolling(running, strategy):
    """True when nodes running ``running`` (release_info's topology) can move to ``strategy`` host by host."""
    return rolling_switch(running or {}, strategy)[0]


class TestModule(object):
    """beamops.cluster topology tests."""

    def tests(self):
        return {"topology_switches_rolling": topology_switches_rolling}
