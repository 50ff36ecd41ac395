# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mesh analysis: ask every node, in parallel, what it is connected to, and explain what is wrong.

Public API
==========
``mesh_report(nodes, cookie, timeout=5.0, expected=None, epmd_port=4369, dist_port=None, tls=None,
              family=None, local_node=None, dial=None) -> dict``
    Connects to every node as a hidden node (all at once, under one overall ``timeout``), asks it
    ``erlang:nodes()`` and ``erlang:nodes(hidden)`` (its name is the one its handshake proved) and returns::

        per_node       {node: {reachable, name, connected, hidden, reason, message}}
        members        reachable listed nodes, sorted
        full_mesh      every listed node reachable and linked to every other (and, with
                       ``expected``, each one sees expected - 1 peers)
        missing_links  [[a, b], ...] pairs of reachable listed nodes not linked both ways
        partitions     connected components of the reachable nodes, each sorted, largest first
        unreachable    listed nodes that could not be asked, sorted
        unlisted       nodes the listed ones are connected to that are not in ``nodes``
        elapsed_ms

    ``dial`` maps node names to the ``(host, port)`` of their distribution listener (a port-forward, a NAT
    address): those nodes are dialled there, EPMD is not asked for them, and their handshake must still
    prove the name they are listed under.

    ``reason`` is ``ok`` for a node in a healthy mesh and otherwise a diagnosis code:
    for nodes that cannot be asked ``epmd_unreachable``, ``not_registered``,
    ``dist_port_unreachable``, ``cookie_rejected``, ``not_allowed``, ``name_mismatch``,
    ``name_type_mismatch``, ``tls_required``, ``tls_failed``, ``timeout`` (or ``protocol_error``,
    ``connection_closed``, ``rpc_error``); for reachable nodes that stand apart
    ``name_type_mismatch``, ``isolated``, ``partitioned``, ``missing_links``, ``too_few_peers``.
    ``message`` is one plain sentence. A broken mesh is a result: only bad arguments raise
    (``ValueError``).
``wait_for_mesh(nodes, cookie, timeout=30.0, poll_ms=100, expected=None, attempt_timeout=5.0, **connection)``
    Reports until ``full_mesh`` or the timeout; returns ``(converged, report, ms, attempts)`` where ``ms`` is
    when it converged (None if it did not). The sessions stay open from one attempt to the next (a node that
    closed its connection is dialled again), so each attempt after the first costs two calls per node.
``diagnosis(report)``
    One line ``node: reason: message`` per node whose reason is not ``ok`` (a list of str).

Every node, plain or TLS, is asked from one thread by ``erl_driver.Driver``: a ``poll()`` loop over
non-blocking sockets runs every host's EPMD lookup, every handshake and every query at once (a thread per
node would double the CPU time of a report, which on a small host is its wall time too).

Verification is read-only: the client is hidden and only calls ``erlang:nodes/0,1``.
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time

from ansible_collections.beamops.cluster.plugins.module_utils import erl_dist, erl_driver
from ansible_collections.beamops.cluster.plugins.module_utils.erl_epmd import EPMD_DEFAULT_PORT, Deadline
from ansible_collections.beamops.cluster.plugins.module_utils.erl_term import Atom

# What each node is asked. Its name needs no erlang:node/0 call: the handshake has the node state it and refuses
# any other name than the one dialled (NameMismatch), and each call spares the node a process spawned by rex.
QUERIES = [("erlang", "nodes", []), ("erlang", "nodes", [Atom("hidden")])]

# Sockets a report keeps open at once: a long node list waits its turn instead of running out of file
# descriptors (often 1024 a process). Each session closes once its node has answered.
MAX_SOCKETS = erl_driver.MAX_SOCKETS


def validate_nodes(nodes):
    """The list of node names, checked: raises ValueError naming the ``nodes`` option."""
    if not isinstance(nodes, (list, tuple)) or not nodes:
        raise ValueError("nodes must be a non-empty list of node names such as app@10.0.0.5")
    result = []
    for name in nodes:
        try:
            erl_dist.split_node(name)
        except ValueError as exc:
            raise ValueError("nodes: %s" % exc)
        if name not in result:
            result.append(name)
    return result


def _entry(reachable, reason, message, name=None, connected=None, hidden=None):
    return {"reachable": reachable, "name": name, "connected": connected or [], "hidden": hidden or [],
            "reason": reason, "message": message}


def _error_entry(node, exc):
    """The entry of a node that could not be asked, from the ``DistError`` that stopped us."""
    if isinstance(exc, erl_dist.NameMismatch):
        return _entry(False, exc.reason, str(exc).rstrip(".") + ".", name=exc.actual)
    if isinstance(exc, erl_driver.EpmdLookupError):
        return _entry(False, exc.reason, str(exc))
    if exc.reason == "dist_port_unreachable":
        message = ("nothing accepts connections on the distribution port of %s (%s): the node is stopping, "
                   "hung, or a firewall blocks the port." % (node, exc))
    else:
        message = str(exc).rstrip(".") + "."
        if node not in message:
            message = "%s: %s" % (node, message)
    return _entry(False, exc.reason, message)


def _answer_entry(node, visible, hidden):
    """The entry of a node that answered erlang:nodes/0,1 (checked: a peer may send anything)."""
    if not (_is_name_list(visible) and _is_name_list(hidden)):
        return _entry(False, "protocol_error", "%s answered erlang:nodes/0,1 with something that is not node "
                      "names." % node)
    return _entry(True, "ok", "", name=node, connected=sorted(str(n) for n in visible),
                  hidden=sorted(str(n) for n in hidden))


def _is_name_list(value):
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _components(members, linked):
    seen = set()
    parts = []
    for start in members:
        if start in seen:
            continue
        stack, part = [start], []
        seen.add(start)
        while stack:
            current = stack.pop()
            part.append(current)
            for other in members:
                if other not in seen and linked(current, other):
                    seen.add(other)
                    stack.append(other)
        parts.append(sorted(part))
    return sorted(parts, key=lambda p: (-len(p), p))


def _name_type(name):
    return "long" if erl_dist.is_long_name(name) else "short"


def analyse(nodes, per_node, expected=None):
    """The whole-mesh part of a report from the per-node answers; fills in reasons of reachable nodes."""
    members = sorted(n for n in nodes if per_node[n]["reachable"])
    unreachable = sorted(n for n in nodes if not per_node[n]["reachable"])
    sees = dict((n, set(per_node[n]["connected"])) for n in members)

    def linked(a, b):
        return b in sees[a] or a in sees[b]

    missing = []
    for i, a in enumerate(members):
        for b in members[i + 1:]:
            if not (b in sees[a] and a in sees[b]):
                missing.append([a, b])
    partitions = _components(members, linked)
    listed = set(nodes)
    unlisted = sorted(set().union(*sees.values()) - listed) if sees else []

    types = [_name_type(n) for n in nodes]
    majority = max(set(types), key=lambda t: (types.count(t), t == "long"))
    # A unique largest partition is the cluster; the nodes outside it are the ones that stand apart.
    main = partitions[0] if len(partitions) == 1 or (partitions and len(partitions[0]) > len(partitions[1])) else None
    for node in members:
        entry = per_node[node]
        others = [m for m in members if m != node]
        part = next(p for p in partitions if node in p)
        peers = [m for m in part if m != node] if part is main else others
        lacking = sorted(m for m in peers if not (m in sees[node] and node in sees[m]))
        if _name_type(node) != majority and lacking:
            entry["reason"] = "name_type_mismatch"
            entry["message"] = ("%s uses %s names while the other nodes use %s names; short-name and long-name "
                                "nodes never connect to each other." % (node, _name_type(node), majority))
        elif others and not any(linked(node, m) for m in others):
            entry["reason"] = "isolated"
            entry["message"] = ("%s is up but connected to none of the other %d nodes: check its discovery "
                                "settings, cookie and name." % (node, len(others)))
        elif part is not main:
            entry["reason"] = "partitioned"
            entry["message"] = ("%s is in a partition of %d nodes (%s) that does not reach %s."
                                % (node, len(part), ", ".join(part), ", ".join(m for m in members if m not in part)))
        elif lacking:
            entry["reason"] = "missing_links"
            entry["message"] = ("%s reaches the others only through peers: it is not directly connected to %s."
                                % (node, ", ".join(lacking)))
        elif expected and len(sees[node]) + 1 < expected:
            entry["reason"] = "too_few_peers"
            entry["message"] = ("%s sees %d other nodes where a cluster of %d needs %d."
                                % (node, len(sees[node]), expected, expected - 1))
        else:
            entry["reason"] = "ok"
            entry["message"] = "%s is connected to all %d other reachable listed nodes." % (node, len(peers))
            if len(peers) < len(others):
                entry["message"] = ("%s is connected to all %d other nodes of the main partition; the others stand "
                                    "apart." % (node, len(peers)))
    full = not unreachable and not missing and all(per_node[n]["reason"] == "ok" for n in members)
    return {"members": members, "full_mesh": full, "missing_links": missing, "partitions": partitions,
            "unreachable": unreachable, "unlisted": unlisted}


def _ask(driver, nodes, deadline, keep_open):
    """{node: entry} of one round of QUERIES over ``driver``, within ``deadline``."""
    batch = driver.call_all(nodes, QUERIES, keep_open=keep_open)
    try:
        driver.run(until=lambda: batch.left == 0, deadline=deadline.end)
    finally:
        driver.abandon(batch.values())
    per_node = {}
    for node in nodes:
        call = batch[node]
        if call.ok:
            per_node[node] = _answer_entry(driver.links[node].peer_name, *call.results)
        else:
            per_node[node] = _error_entry(node, call.error)
    return per_node


def _report(driver, nodes, timeout, expected, keep_open):
    started = time.monotonic()
    per_node = _ask(driver, nodes, Deadline(timeout), keep_open)
    for entry in per_node.values():
        # Our own hidden connections are not part of the cluster.
        entry["hidden"] = [h for h in entry["hidden"] if h not in driver.local_names]
    report = {"per_node": per_node}
    report.update(analyse(nodes, per_node, expected))
    report["elapsed_ms"] = int(round((time.monotonic() - started) * 1000))
    return report


def _driver(nodes, cookie, timeout, epmd_port, dist_port, tls, family, local_node, dial):
    if not isinstance(cookie, str):
        raise ValueError("cookie must be a string")
    return erl_driver.Driver(cookie, local_node=local_node, epmd_port=epmd_port, dist_port=dist_port, family=family,
                             tls=tls, dial=erl_driver.validate_dial(dial, nodes), connect_timeout=timeout,
                             max_sockets=MAX_SOCKETS)


def mesh_report(nodes, cookie, timeout=5.0, expected=None, epmd_port=EPMD_DEFAULT_PORT, dist_port=None, tls=None,
                family=None, local_node=None, dial=None):
    """Ask every node what it is connected to; see the module docstring for the result."""
    started = time.monotonic()
    nodes = validate_nodes(nodes)
    driver = _driver(nodes, cookie, timeout, epmd_port, dist_port, tls, family, local_node, dial)
    try:
        report = _report(driver, nodes, timeout, expected, keep_open=False)
    finally:
        driver.close()
    report["elapsed_ms"] = int(round((time.monotonic() - started) * 1000))
    return report


def diagnosis(report):
    """One line per node that is not ``ok``: ``node: reason: message``."""
    lines = []
    for node in sorted(report["per_node"]):
        entry = report["per_node"][node]
        if entry["reason"] != "ok":
            lines.append("%s: %s: %s" % (node, entry["reason"], entry["message"]))
    return lines


def wait_for_mesh(nodes, cookie, timeout=30.0, poll_ms=100, expected=None, attempt_timeout=5.0, epmd_port=EPMD_DEFAULT_PORT,
                  dist_port=None, tls=None, family=None, local_node=None, dial=None):
    """Report until the nodes form a full mesh: (converged, last report, converged_after_ms or None, attempts)."""
    started = time.monotonic()
    nodes = validate_nodes(nodes)
    end = started + timeout
    attempts = 0
    # One driver for every attempt: sessions stay open in between, and a hung node is bounded per attempt.
    driver = _driver(nodes, cookie, attempt_timeout, epmd_port, dist_port, tls, family, local_node, dial)
    try:
        while True:
            # A hung node must not use up the whole wait in one attempt.
            budget = max(0.05, min(attempt_timeout, end - time.monotonic()))
            report = _report(driver, nodes, budget, expected, keep_open=True)
            attempts += 1
            now = time.monotonic()
            if report["full_mesh"]:
                return True, report, int(round((now - started) * 1000)), attempts
            if now + poll_ms / 1000.0 >= end:
                return False, report, None, attempts
            # Between attempts the driver keeps answering ticks.
            driver.run(deadline=now + poll_ms / 1000.0)
    finally:
        driver.close()
