# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Metrics of the comparison scenarios, computed from the observer's samples (pure functions, no I/O).

A *sample* is what ``observer.replay`` (or ``Observer.history``) gives: ``(t, utc, views)`` with ``t`` the
controller's monotonic clock in seconds and ``views`` ``{node: frozenset of peers, or None}`` (None: that node gave
no answer in that slot: it is down, frozen or slow). Every function takes the samples in time order and the node
names it is about; times it returns are milliseconds from a reference instant (a fault's stamp), None when the
event was not seen in the window it was looked for in.

Mesh terms
==========
``linked(views, a, b)``         both answered and each lists the other.
``full_mesh(views, nodes)``     every node answered and every pair is linked.
``largest_group(views, nodes)`` the most nodes in one connected group (an edge when either side lists the
                                other, as ``erl_mesh`` counts partitions); None when none of them answered.
``groups(views, nodes)``        the connected groups of the nodes that answered, largest first.
``link_count(views, nodes)``    how many pairs are linked.

Metric extraction (one function per kind of scenario)
=====================================================
``detection(samples, victim, peers, t_fault, limit_s)`` -> ``(slowest_ms, {peer: ms})``
``side_detection(samples, side_a, side_b, t_fault, limit_s)`` -> ``{"A": ms, "B": ms}``
``heal(samples, nodes, t_ref, limit_s, after=None)`` -> ms from ``t_ref`` to the first full mesh (seen after
    ``after`` when given, e.g. once the fault had broken the mesh), or None
``first_broken(samples, nodes, since, until)`` -> t of the first sample without a full mesh, or None
``splits_seen(samples, nodes, since, until)`` -> the distinct group layouts seen (text, in order)
``cold_start(samples, nodes, t_first_start, limit_s)`` -> ``(full_mesh_ms, {node: join ms})``
``join(samples, node, members, t_start, limit_s)`` -> ms until ``node`` is linked to every member
``membership(samples, nodes, since, until)`` -> ``{"fewest_members", "not_full_ms"}`` over a window
``timeline(samples, nodes, t0, t_end)`` -> ``{"t", "members", "links"}`` relative to ``t0``, changes only (a step
    function: each value holds until the next point), with the first and the last sample kept
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.beamops.cluster.plugins.module_utils import erl_mesh


def _ms(seconds):
    return round(seconds * 1000.0, 1)


def linked(views, a, b):
    va, vb = views.get(a), views.get(b)
    return va is not None and vb is not None and b in va and a in vb


def full_mesh(views, nodes):
    if any(views.get(n) is None for n in nodes):
        return False
    return all(linked(views, a, b) for i, a in enumerate(nodes) for b in nodes[i + 1:])


def link_count(views, nodes):
    return sum(1 for i, a in enumerate(nodes) for b in nodes[i + 1:] if linked(views, a, b))


def groups(views, nodes):
    """Connected groups of the nodes that answered and of those they list (an edge when either lists the other),
    largest first. A node that gave no answer in this sample but is listed by one that did belongs to its group:
    its peers still count it as a member (it may be slow to answer, or dead and not yet noticed)."""
    answered = [n for n in nodes if views.get(n) is not None]
    listed = set()
    for node in answered:
        listed.update(views[node])
    present = [n for n in nodes if n in listed or views.get(n) is not None]

    def edge(a, b):
        return (views.get(a) is not None and b in views[a]) or (views.get(b) is not None and a in views[b])

    return erl_mesh._components(present, edge)  # pylint: disable=protected-access


def largest_group(views, nodes):
    found = groups(views, nodes)
    return len(found[0]) if found else None


def _window(samples, since, until):
    for sample in samples:
        if sample[0] < since:
            continue
        if until is not None and sample[0] > until:
            break
        yield sample


def first_time(samples, since, until, predicate):
    """t of the first sample in [since, until] whose views satisfy predicate, or None."""
    for sample in _window(samples, since, until):
        if predicate(sample[2]):
            return sample[0]
    return None


def detection(samples, victim, peers, t_fault, limit_s):
    """When each peer stopped listing the victim (ms after t_fault; a peer that gave no answer in a sample is
    not counted for it); the slowest peer's time, None if some peer did not within limit_s."""
    per_peer = {}
    for peer in peers:
        seen = first_time(samples, t_fault, t_fault + limit_s,
                          lambda views, p=peer: views.get(p) is not None and victim not in views[p])
        per_peer[peer] = None if seen is None else _ms(seen - t_fault)
    values = list(per_peer.values())
    slowest = None if not values or any(v is None for v in values) else max(values)
    return slowest, per_peer


def side_detection(samples, side_a, side_b, t_fault, limit_s):
    """When every node of each side had dropped every node of the other side (ms after t_fault, or None)."""
    def dropped(views, own, other):
        return all(views.get(n) is not None and not (set(other) & views[n]) for n in own)

    result = {}
    for label, own, other in (("A", side_a, side_b), ("B", side_b, side_a)):
        seen = first_time(samples, t_fault, t_fault + limit_s, lambda views, o=own, x=other: dropped(views, o, x))
        result[label] = None if seen is None else _ms(seen - t_fault)
    return result


def first_broken(samples, nodes, since, until=None):
    return first_time(samples, since, until, lambda views: not full_mesh(views, nodes))


def heal(samples, nodes, t_ref, limit_s, after=None):
    """ms from t_ref to the first full mesh at or after max(t_ref, after), within t_ref + limit_s; None if none."""
    start = t_ref if after is None else max(t_ref, after)
    seen = first_time(samples, start, t_ref + limit_s, lambda views: full_mesh(views, nodes))
    return None if seen is None else _ms(seen - t_ref)


def splits_seen(samples, nodes, since, until, names=None):
    """The distinct layouts of groups seen in the window, in the order they first showed, e.g.
    ``"{a} | {b, c}"`` or ``"{a, b, c} (link cut: a-b)"`` (a group held together by the other nodes); nodes that
    gave no answer are listed as ``(no answer: x)``. ``names`` maps node names to shorter labels."""
    label = (names or {}).get
    layouts = []
    for sample in _window(samples, since, until):
        views = sample[2]
        node_groups = groups(views, nodes)
        parts = ["{%s}" % ", ".join(label(n, n) for n in g) for g in node_groups]
        silent = [label(n, n) for n in nodes if views.get(n) is None]
        text = " | ".join(parts)
        # A partial partition leaves the group connected through the other nodes: name the links that are cut.
        answered = [n for n in nodes if views.get(n) is not None]
        missing = ["%s-%s" % (label(a, a), label(b, b)) for i, a in enumerate(answered) for b in answered[i + 1:]
                   if not linked(views, a, b) and any(a in g and b in g for g in node_groups)]
        if missing:
            text += " (link%s cut: %s)" % ("s" if len(missing) > 1 else "", ", ".join(missing))
        if silent:
            text += "%s(no answer: %s)" % (" " if text else "", ", ".join(silent))
        if text not in layouts:
            layouts.append(text)
    return layouts


def cold_start(samples, nodes, t_first_start, limit_s):
    """Full mesh after the first start, and per node the first time it was linked to every other node."""
    full = heal(samples, nodes, t_first_start, limit_s)
    joins = {}
    for node in nodes:
        others = [n for n in nodes if n != node]
        seen = first_time(samples, t_first_start, t_first_start + limit_s,
                          lambda views, me=node, o=others: all(linked(views, me, x) for x in o))
        joins[node] = None if seen is None else _ms(seen - t_first_start)
    return full, joins


def join(samples, node, members, t_start, limit_s):
    seen = first_time(samples, t_start, t_start + limit_s,
                      lambda views: all(linked(views, node, m) for m in members))
    return None if seen is None else _ms(seen - t_start)


def membership(samples, nodes, since, until):
    """Over [since, until]: the fewest nodes in the largest group (0 when none answered) and how long the mesh was
    not full (each sample counts until the next one, the last until ``until``)."""
    # A sample in which no node answered at all is a gap of the observer (its slot closed before any answer came,
    # e.g. the controller was busy), not a cluster with no members: it keeps the state of the sample before it.
    window = [s for s in _window(samples, since, until) if any(v is not None for v in s[2].values())]
    if not window:
        return {"fewest_members": None, "not_full_ms": None}
    fewest = min(largest_group(s[2], nodes) or 0 for s in window)
    not_full = 0.0
    for index, sample in enumerate(window):
        end = window[index + 1][0] if index + 1 < len(window) else until
        if not full_mesh(sample[2], nodes):
            not_full += max(0.0, end - sample[0])
    return {"fewest_members": fewest, "not_full_ms": _ms(not_full)}


def timeline(samples, nodes, t0, t_end):
    """The largest group and the linked pairs over [t0, t_end], changes only, times relative to t0 (s)."""
    ts, members, links = [], [], []
    window = list(_window(samples, t0, t_end))
    for index, sample in enumerate(window):
        views = sample[2]
        size = largest_group(views, nodes)
        count = link_count(views, nodes) if size is not None else None
        last = index == len(window) - 1
        if not ts or last or size != members[-1] or count != links[-1]:
            ts.append(round(sample[0] - t0, 3))
            members.append(size)
            links.append(count)
    return {"t": ts, "members": members, "links": links}
