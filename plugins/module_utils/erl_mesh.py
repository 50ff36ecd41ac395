# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mesh analysis: ask every node, in parallel, what it is connected to, and explain what is wrong.

Public API
==========
``mesh_report(nodes, cookie, timeout=5.0, expected=None, epmd_port=4369, dist_port=None, tls=None,
              family=None, local_node=None) -> dict``
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

    ``reason`` is ``ok`` for a node in a healthy mesh and otherwise a diagnosis code:
    for nodes that cannot be asked ``epmd_unreachable``, ``not_registered``,
    ``dist_port_unreachable``, ``cookie_rejected``, ``not_allowed``, ``name_mismatch``,
    ``name_type_mismatch``, ``tls_required``, ``tls_failed``, ``timeout`` (or ``protocol_error``,
    ``connection_closed``, ``rpc_error``); for reachable nodes that stand apart
    ``name_type_mismatch``, ``isolated``, ``partitioned``, ``missing_links``, ``too_few_peers``.
    ``message`` is one plain sentence. A broken mesh is a result: only bad arguments raise
    (``ValueError``).
``wait_for_mesh(nodes, cookie, timeout=30.0, poll_ms=100, expected=None, **connection)``
    Polls ``mesh_report`` until ``full_mesh`` or the timeout; returns ``(converged, report, ms, attempts)``
    where ``ms`` is when it converged (None if it did not).
``diagnosis(report)``
    One line ``node: reason: message`` per node whose reason is not ``ok`` (a list of str).

Plain TCP nodes are asked from one thread: a ``poll()`` loop over non-blocking sockets runs every
host's EPMD lookup, every handshake and every query at once with the sans-IO core of ``erl_dist`` (a
thread per node would double the CPU time of a report, which on a small host is its wall time too). TLS
nodes are asked with the blocking client, a thread each.

Verification is read-only: the client is hidden and only calls ``erlang:nodes/0,1``.
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import _socket  # not socket.py, which imports enum: see erl_epmd
import collections
import errno
import os
import select
import time

from ansible_collections.beamops.cluster.plugins.module_utils import erl_dist
from ansible_collections.beamops.cluster.plugins.module_utils.erl_epmd import (
    EPMD_DEFAULT_PORT,
    MAX_EPMD_REPLY,
    NAMES_REQ,
    ConnectionClosed,
    Deadline,
    DistError,
    DistTimeout,
    EpmdUnreachable,
    names as epmd_names,
    parse_names,
    request as epmd_request,
    resolve,
)
from ansible_collections.beamops.cluster.plugins.module_utils.erl_term import Atom

# What each node is asked. Its name needs no erlang:node/0 call: the handshake has the node state it and refuses
# any other name than the one dialled (NameMismatch), and each call spares the node a process spawned by rex.
QUERIES = [("erlang", "nodes", []), ("erlang", "nodes", [Atom("hidden")])]

# A thread that overruns the deadline (it cannot: every socket call takes its timeout from it) is
# still given this long to report before it is counted as timed out.
JOIN_GRACE = 0.25

# poll() events: an error or a hang-up is read (recv tells which), like a socket that is readable.
POLL_READ = select.POLLIN | select.POLLERR | select.POLLHUP
POLL_WRITE = select.POLLOUT

# Sockets the report keeps open at once: a long node list waits its turn instead of running out of file
# descriptors (often 1024 a process).
MAX_SOCKETS = 256


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


def _registries(hosts, deadline, epmd_port, family):
    """NAMES of every host's EPMD, in parallel: {host: dict of names or DistError}."""
    import threading  # the TLS path only: plain nodes are asked from one thread
    registries = {}

    def ask(host):
        try:
            registries[host] = epmd_names(host, deadline, epmd_port, family)
        except DistError as exc:
            registries[host] = exc

    threads = [threading.Thread(target=ask, args=(host,), daemon=True) for host in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline.end - time.monotonic()) + JOIN_GRACE)
    return registries


def _epmd_failure(node, host, alive, registry, epmd_port):
    if isinstance(registry, DistTimeout):
        return _entry(False, "timeout", "EPMD on %s did not answer within the time budget." % host)
    if isinstance(registry, DistError):
        return _entry(False, "epmd_unreachable",
                      "EPMD on %s port %d cannot be reached (%s): the host is down, EPMD is not running or a "
                      "firewall blocks it." % (host, epmd_port, registry))
    if registry is None:
        return _entry(False, "timeout", "EPMD on %s did not answer within the time budget." % host)
    if alive not in registry:
        listed = ", ".join(sorted(registry)) or "none"
        return _entry(False, "not_registered",
                      "EPMD on %s has no node named %s (it has: %s): %s is down or was started under another "
                      "name." % (host, alive, listed, node))
    return None


def _ask(node, cookie, deadline, dist_port, conn_args, local_names):
    """Connect to one node with the blocking client and ask its view; returns a per-node entry."""
    try:
        with erl_dist.connect(node, cookie, deadline=deadline, dist_port=dist_port, **conn_args) as conn:
            visible, hidden = conn.rpc_many(QUERIES, deadline=deadline)
            local_names.add(conn.local_node)
    except DistError as exc:
        return _error_entry(node, exc)
    return _answer_entry(conn.peer_node, visible, hidden)


def _error_entry(node, exc):
    """The entry of a node that could not be asked, from the ``DistError`` that stopped us."""
    if isinstance(exc, erl_dist.NameMismatch):
        return _entry(False, exc.reason, str(exc).rstrip(".") + ".", name=exc.actual)
    if isinstance(exc, DistTimeout):
        return _entry(False, "timeout", "%s did not complete the connection and query within the time budget." % node)
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


# ------------------------------------------------------------------------------ single-threaded driver
class _Channel:
    """One non-blocking socket of the driver: connects (trying each address in turn), then sends and reads.

    Subclasses say what to send once connected (``on_connected``), what to answer to received bytes
    (``on_data``) and what a hang-up means (``on_eof``); they set ``finished`` when their work is done.
    """

    reason = "epmd_unreachable"

    def __init__(self, host, port, addresses):
        self.host = host
        self.port = port
        self.addresses = list(addresses)
        self.sock = None
        self.connecting = False
        self.outgoing = b""
        self.finished = False
        self.retry = False  # the connect failed: the driver moves on to the next address
        self.polled = 0  # the events poll() watches for on the socket
        self.last_error = None

    def connect_next(self):
        """Start connecting to the next address; raises ``DistError`` when none is left."""
        self.retry = False
        self.close()
        while self.addresses:
            fam, kind, proto, addr = self.addresses.pop(0)
            try:
                # Out of file descriptors (a very large node list) is that node's error, not the report's.
                sock = _socket.socket(fam, kind, proto)
            except OSError as exc:
                self.last_error = exc.strerror or str(exc)
                continue
            sock.setblocking(False)
            try:
                err = sock.connect_ex(addr)
            except OSError as exc:
                err = exc.errno or errno.EINVAL
            if err in (0, errno.EINPROGRESS):
                self.sock = sock
                self.connecting = True
                return
            sock.close()
            self.last_error = os.strerror(err)
        raise DistError("cannot connect to %s port %d: %s" % (self.host, self.port, self.last_error), self.reason)

    def events(self):
        """The poll() events to wait for."""
        if self.connecting:
            return POLL_WRITE
        return select.POLLIN | (POLL_WRITE if self.outgoing else 0)

    def handle(self, mask):
        if self.connecting:
            err = self.sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
            if err:
                self.last_error = os.strerror(err)
                self.retry = True
                return
            self.connecting = False
            self.sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            self.outgoing += self.on_connected()
        elif mask & POLL_READ:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.on_eof(exc)
                return
            if not data:
                self.on_eof(None)
                return
            self.outgoing += self.on_data(data)
        if self.outgoing and not self.finished:
            try:
                sent = self.sock.send(self.outgoing)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self.on_eof(exc)
                return
            self.outgoing = self.outgoing[sent:]

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def on_connected(self):
        raise NotImplementedError

    def on_data(self, data):
        raise NotImplementedError

    def on_eof(self, error):
        raise NotImplementedError


class _NamesLookup(_Channel):
    """EPMD NAMES of one host: ``registry`` is the ``{alive: port}`` answer once ``finished``."""

    def __init__(self, host, port, addresses):
        super(_NamesLookup, self).__init__(host, port, addresses)
        self.answer = b""
        self.registry = None

    def on_connected(self):
        return epmd_request(bytes([NAMES_REQ]))

    def on_data(self, data):
        self.answer += data
        if len(self.answer) > MAX_EPMD_REPLY:
            raise EpmdUnreachable("EPMD on %s port %d sent an oversized answer" % (self.host, self.port))
        return b""

    def on_eof(self, error):
        if error is not None:
            raise EpmdUnreachable("EPMD on %s port %d reset the connection: %s" % (self.host, self.port, error))
        self.registry = parse_names(self.answer)
        self.finished = True


class _HiddenNode:
    """The hidden node one report connects as: one name per name type, one creation and one reference seed for
    all its connections, so that the query frames are the same bytes for every node and are encoded once."""

    def __init__(self, local_node=None):
        self.entropy = erl_dist.Entropy()
        self.local_node = local_node
        self._queries = {}  # local node name -> (frames, refs)

    def name_for(self, node):
        return self.local_node or erl_dist.local_name_for(node, self.entropy)

    def session(self, local_node, node):
        return erl_dist.Session(local_node, node, self.entropy.creation, self.entropy.ref_seed)

    def queries(self, session):
        """The ``QUERIES`` frames of ``session`` and their references: the same for every connection under one
        name, since a reply can only come back on the connection that asked."""
        if session.local_node not in self._queries:
            self._queries[session.local_node] = session.gen_calls("rex", [erl_dist.rpc_request(*q) for q in QUERIES])
        return self._queries[session.local_node]


class _NodeQuery(_Channel):
    """Handshake with one node, then the ``QUERIES`` through ``rex``: ``answers`` once ``finished``."""

    reason = "dist_port_unreachable"

    def __init__(self, node, host, port, addresses, cookie, caller):
        super(_NodeQuery, self).__init__(host, port, addresses)
        self.node = node
        self.caller = caller
        self.local_node = caller.name_for(node)
        # Our challenge is the one value each connection draws afresh: it is what makes the node prove its cookie.
        self.handshake = erl_dist.Handshake(node, cookie, self.local_node, caller.entropy.creation,
                                            erl_dist.Entropy().challenge)
        self.session = None
        self.refs = None
        self.answers = None

    def on_connected(self):
        return self.handshake.start()

    def on_data(self, data):
        reply = b""
        if not self.handshake.done:
            reply = self.handshake.feed(data)
            if self.session is None and self.handshake.replied:
                # The queries ride with our challenge reply instead of waiting for the ack: one round trip less
                # through a busy node (about 7 % of a 50-node report here). The node reads them only after it
                # has accepted the reply; one that rejects it closes the connection with them unread.
                self.session = self.caller.session(self.local_node, self.node)
                requests, self.refs = self.caller.queries(self.session)
                reply += requests
            if not self.handshake.done:
                return reply
            data = self.handshake.rest
        session = self.session
        session.feed(data)
        while True:
            received = session.next_message()
            if received is None:
                break
            session.collect(received[1])
        reply += session.take_outgoing()
        if session.has_replies(self.refs):
            self.answers = erl_dist.check_rpc_results(QUERIES, session.pop_replies(self.refs), self.node)
            self.finished = True
        return reply

    def on_eof(self, error):
        if not self.handshake.done:
            raise self.handshake.closed()
        raise ConnectionClosed("%s closed the connection before answering our queries" % self.node)


class _TlsProbe:
    """After a plain-TCP hang-up on our name: does the port speak TLS? Run in a thread, it can take 0.5 s."""

    def __init__(self, node, host, port, family, deadline, closed):
        import threading  # only this rare diagnosis needs a thread
        self.node = node
        self.closed = closed
        self.speaks_tls = False
        self.thread = threading.Thread(target=self._run, args=(host, port, family, deadline), daemon=True)
        self.thread.start()

    def _run(self, host, port, family, deadline):
        try:
            self.speaks_tls = erl_dist.speaks_tls(host, port, deadline, family)
        except DistError:
            self.speaks_tls = False

    def entry(self):
        return _error_entry(self.node, erl_dist.tls_required(self.node) if self.speaks_tls else self.closed)


def _replace_port(addresses, port):
    return [(fam, kind, proto, addr[:1] + (port,) + addr[2:]) for fam, kind, proto, dummy, addr in addresses]


def _ask_all_nonblocking(nodes, split, cookie, deadline, epmd_port, dist_port, family, local_node):
    """Every node's entry, from one thread: EPMD lookups, handshakes and queries interleaved on one poll()."""
    per_node = {}
    local_names = set()
    caller = _HiddenNode(local_node)
    poller = select.poll()
    watched = {}  # file descriptor -> channel
    resolved = {}
    probes = []
    waiting = {}  # host -> nodes waiting for that host's EPMD answer
    queued = collections.deque()  # (node, port) waiting for a socket of their own

    def addresses(host, port, reason):
        if host not in resolved:
            try:
                resolved[host] = resolve(host, 0, deadline, family, reason)
            except DistError as exc:
                resolved[host] = exc
        found = resolved[host]
        if isinstance(found, DistError):
            raise DistError(str(found), reason)
        return _replace_port(found, port)

    def watch(channel):
        channel.connect_next()
        channel.polled = channel.events()
        watched[channel.sock.fileno()] = channel
        poller.register(channel.sock, channel.polled)

    def drop(channel):
        if channel.sock is not None and watched.get(channel.sock.fileno()) is channel:
            del watched[channel.sock.fileno()]
            poller.unregister(channel.sock)
        channel.close()

    def start_query(node, port):
        queued.append((node, port))
        start_queued()

    def start_queued():
        while queued and len(watched) < MAX_SOCKETS:
            node, port = queued.popleft()
            try:
                host = split[node][1]
                watch(_NodeQuery(node, host, port, addresses(host, port, "dist_port_unreachable"), cookie, caller))
            except DistError as exc:
                per_node[node] = _error_entry(node, exc)

    def finish(channel, error=None):
        """Record what a channel ended with, and start the queries a finished EPMD lookup allows."""
        if isinstance(channel, _NamesLookup):
            registry = channel.registry if error is None else error
            for node in waiting.pop(channel.host):
                alive = split[node][0]
                failure = _epmd_failure(node, channel.host, alive, registry, epmd_port)
                if failure:
                    per_node[node] = failure
                else:
                    start_query(node, registry[alive])
        elif error is None:
            local_names.add(channel.local_node)
            visible, hidden = channel.answers
            per_node[channel.node] = _answer_entry(channel.handshake.peer_name, visible, hidden)
        elif isinstance(error, erl_dist.ClosedBeforeStatus):
            probes.append(_TlsProbe(channel.node, channel.host, channel.port, family, deadline, error))
        else:
            per_node[channel.node] = _error_entry(channel.node, error)

    try:
        if dist_port is None:
            for node in nodes:
                waiting.setdefault(split[node][1], []).append(node)
            for host in sorted(waiting):
                lookup = _NamesLookup(host, epmd_port, [])
                try:
                    lookup.addresses = addresses(host, epmd_port, "epmd_unreachable")
                    watch(lookup)
                except DistError as exc:
                    finish(lookup, exc)
        else:
            for node in nodes:
                start_query(node, dist_port)
        while watched or probes:
            left = deadline.end - time.monotonic()
            if left <= 0:
                break
            # A probe thread cannot wake poll(): look at it every 20 ms while one runs. Channels are looked up
            # before any is handled, since handling one may close a socket and reuse its descriptor.
            ready = [(watched[fd], mask) for fd, mask in poller.poll(1000 * (min(left, 0.02) if probes else left))]
            for channel, mask in ready:
                if channel.sock is None:  # dropped earlier in this round
                    continue
                try:
                    channel.handle(mask)
                    if channel.retry:
                        drop(channel)
                        watch(channel)
                except DistError as exc:
                    drop(channel)
                    finish(channel, exc)
                    continue
                except Exception as exc:  # pylint: disable=broad-except
                    # A peer must never be able to crash the report: whatever it did is that node's result.
                    drop(channel)
                    finish(channel, DistError("talking to %s failed unexpectedly: %s: %s" % (
                        getattr(channel, "node", None) or "EPMD on %s" % channel.host, type(exc).__name__, exc),
                        "protocol_error"))
                    continue
                if channel.finished:
                    drop(channel)
                    finish(channel)
                elif channel.events() != channel.polled:
                    channel.polled = channel.events()
                    poller.modify(channel.sock, channel.polled)
            start_queued()
            for probe in [p for p in probes if not p.thread.is_alive()]:
                probes.remove(probe)
                per_node[probe.node] = probe.entry()
    finally:
        for channel in watched.values():
            channel.close()
    for probe in probes:  # out of time: what is known is that the node hung up on our name
        per_node[probe.node] = _error_entry(probe.node, probe.closed)
    for host, stranded in waiting.items():
        for node in stranded:
            per_node[node] = _epmd_failure(node, host, split[node][0], None, epmd_port)
    return per_node, local_names


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


def _ask_all_threaded(nodes, split, cookie, deadline, epmd_port, dist_port, conn_args):
    """Every node's entry from the blocking client, a thread each (the TLS path)."""
    import threading  # the TLS path only: plain nodes are asked from one thread
    registries = {}
    if dist_port is None:
        registries = _registries(sorted(set(h for dummy, h in split.values())), deadline, epmd_port,
                                 conn_args["family"])
    local_names = set()
    per_node = {}

    def run(node):
        try:
            alive, host = split[node]
            port = dist_port
            if dist_port is None:
                registry = registries.get(host)
                failure = _epmd_failure(node, host, alive, registry, epmd_port)
                if failure:
                    per_node[node] = failure
                    return
                port = registry[alive]
            per_node[node] = _ask(node, cookie, deadline, port, conn_args, local_names)
        except Exception as exc:  # pylint: disable=broad-except
            # A peer must never be able to crash the report: whatever it did is that node's result.
            per_node[node] = _entry(False, "protocol_error", "talking to %s failed unexpectedly: %s: %s."
                                    % (node, type(exc).__name__, exc))

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline.end - time.monotonic()) + JOIN_GRACE)
    return dict(per_node), local_names


def mesh_report(nodes, cookie, timeout=5.0, expected=None, epmd_port=EPMD_DEFAULT_PORT, dist_port=None, tls=None,
                family=None, local_node=None):
    """Ask every node what it is connected to; see the module docstring for the result."""
    started = time.monotonic()
    nodes = validate_nodes(nodes)
    if not isinstance(cookie, str):
        raise ValueError("cookie must be a string")
    deadline = Deadline(timeout)
    split = dict((n, erl_dist.split_node(n)) for n in nodes)
    if tls is None:
        per_node, local_names = _ask_all_nonblocking(nodes, split, cookie, deadline, epmd_port, dist_port, family,
                                                     local_node)
    else:
        per_node, local_names = _ask_all_threaded(nodes, split, cookie, deadline, epmd_port, dist_port,
                                                  {"tls": tls, "family": family, "local_node": local_node})
    answers = {}
    for node in nodes:  # in the order given; a straggler thread may still write into per_node
        if node in per_node:
            answers[node] = per_node[node]
    for node in nodes:
        if node not in answers:
            answers[node] = _entry(False, "timeout", "%s did not answer within the time budget." % node)
        else:
            # Our own hidden connections are not part of the cluster.
            answers[node]["hidden"] = [h for h in answers[node]["hidden"] if h not in local_names]
    per_node = answers
    report = {"per_node": per_node}
    report.update(analyse(nodes, per_node, expected))
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


def wait_for_mesh(nodes, cookie, timeout=30.0, poll_ms=100, expected=None, attempt_timeout=5.0, **connection):
    """Poll until the nodes form a full mesh: (converged, last report, converged_after_ms or None, attempts)."""
    started = time.monotonic()
    nodes = validate_nodes(nodes)
    end = started + timeout
    attempts = 0
    while True:
        # A hung node must not use up the whole wait in one attempt.
        budget = max(0.05, min(attempt_timeout, end - time.monotonic()))
        report = mesh_report(nodes, cookie, timeout=budget, expected=expected, **connection)
        attempts += 1
        now = time.monotonic()
        if report["full_mesh"]:
            return True, report, int(round((now - started) * 1000)), attempts
        if now + poll_ms / 1000.0 >= end:
            return False, report, None, attempts
        time.sleep(poll_ms / 1000.0)
