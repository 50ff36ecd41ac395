# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The single-threaded driver of the distribution client: one hidden node, a session per node, one poll() loop.

Layers (each uses only those above it)::

    erl_term     the External Term Format codec
    erl_epmd     deadlines, blocking TCP, EPMD requests and the parsing of their answers
    erl_dist     the handshake and the session as sans-IO state machines (and a blocking client)
    erl_driver   this module: non-blocking sockets for every node at once; sessions kept open, ticks
                 answered and sent, dead connections detected, nodes dialled again when asked
    erl_mesh     the mesh report and its diagnosis        observer   the sampling hidden node
    modules      epmd_info, mesh_info, mesh_wait

Public API
==========
``Driver(cookie, local_node=None, epmd_port=4369, dist_port=None, family=None, tls=None, dial=None,
         connect_timeout=5.0, tick_timeout=60.0, retry_interval=0.0, max_sockets=256, resolve_ttl=30.0,
         on_link=None)``
    One hidden node: one creation, one name per name type (or ``local_node``), so that the same calls are the
    same bytes to every node and are encoded once. A node is reached at ``dial[node]`` (a ``(host, port)``;
    EPMD is not asked), else at ``dist_port`` of its host, else at the port its host's EPMD gives (one NAMES
    request per host, shared by the nodes waiting for it). The handshake always checks the node's name.
    ``tls`` (an ``erl_dist.TlsOptions``) runs TLS distribution in the same loop (``ssl`` memory BIOs).
    Nothing happens outside ``run()``; one thread owns a driver.
``parse_address("host:port" or "[v6]:port") -> (host, port)``, ``validate_dial(dial, nodes=None)``
    The checked form of a ``dial`` mapping (text or pairs); ValueError names the option.
``Driver.call(node, calls, keep_open=True) -> Call``
``Driver.call_all(nodes, calls, keep_open=True) -> Batch``
    Send ``(module, function, args)`` calls to ``rex`` on each node. A node without a session is dialled
    first (unless its last attempt is less than ``retry_interval`` ago: then the call fails at once with that
    attempt's error) and its calls ride with the challenge reply. With ``keep_open=False`` the session is
    closed once its calls are answered (one-shot use with many nodes and few sockets).
``Driver.run(until=None, deadline=None) -> bool``
    Drive every socket until ``until()`` holds or ``time.monotonic()`` reaches ``deadline``; returns
    ``until()`` (False when there is none). Sessions answer ticks, send one when idle for
    ``tick_timeout / 4`` and are closed as dead after ``tick_timeout`` seconds without a byte from the node;
    a connection attempt (EPMD included) gives up after ``connect_timeout``.
``Driver.abandon(calls)``
    Give up unanswered calls (an iterable of ``Call``): each ends with the error that says where its node
    stands (``timeout`` or what is known so far); a reply that comes later is dropped.
``Driver.disconnect(node)``, ``Driver.close()``
``Driver.links[node]`` -> ``Link``: ``state`` (``down``, ``connecting``, ``up``), ``phase`` while connecting
    (``lookup``, ``connect``, ``probe``), ``peer_name``, ``error`` (what ended the last attempt or session),
    ``sessions`` (how many were made), ``up_since``, ``last_received``.
``Driver.local_names``: the names this hidden node used.
``on_link(link, up, error)``: called from ``run()`` when a session comes up, and when a session or an attempt
    fails (``error`` set).
``Call``: ``node``, ``done``, ``ok``, ``results`` (the replies, in order), ``error`` (a ``DistError``),
    ``sent_at``, ``finished_at`` (monotonic). ``Batch`` is a dict node -> Call with ``left`` (unfinished) and
    ``done``.
``EpmdLookupError``: a node's host EPMD could not tell its port (reason ``epmd_unreachable``,
    ``not_registered`` or ``timeout``; ``names`` holds what it has registered when known).

A frozen node (SIGSTOP) keeps its session until ``tick_timeout``; a killed one closes it at once, and the
next call dials it again.
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import _socket  # not socket.py, which imports enum: see erl_epmd
import collections
import errno
import os
import select
import time

from ansible_collections.beamops.cluster.plugins.module_utils import erl_dist, erl_term
from ansible_collections.beamops.cluster.plugins.module_utils.erl_epmd import (
    EPMD_DEFAULT_PORT,
    MAX_EPMD_REPLY,
    NAMES_REQ,
    ConnectionClosed,
    Deadline,
    DistError,
    DistTimeout,
    EpmdUnreachable,
    parse_names,
    request as epmd_request,
    resolve,
)

# poll() events: an error or a hang-up is read (recv tells which), like a socket that is readable.
POLL_READ = select.POLLIN | select.POLLERR | select.POLLHUP
POLL_WRITE = select.POLLOUT

# Sockets open at once: a long node list waits its turn instead of running out of file descriptors.
MAX_SOCKETS = 256

TICK = b"\x00\x00\x00\x00"

# How often run() looks at connect deadlines, tick timeouts and idle sessions.
TIMER_PERIOD = 0.05

# A TLS probe (does a port that hung up on our name speak TLS?) gets at most this long.
TLS_PROBE_SECONDS = 0.5

DOWN, CONNECTING, UP = "down", "connecting", "up"


class EpmdLookupError(DistError):
    """EPMD of ``host`` could not give the node's port: it is unreachable, silent, or lacks the name."""

    def __init__(self, message, reason, host, names=None):
        super(EpmdLookupError, self).__init__(message, reason)
        self.host = host
        self.names = names


def lookup_error(node, host, alive, epmd_port, registry):
    """The ``EpmdLookupError`` of ``node`` from what its host's NAMES request gave (a dict, a DistError, None)."""
    if registry is None or isinstance(registry, DistTimeout):
        return EpmdLookupError("EPMD on %s did not answer within the time budget." % host, "timeout", host)
    if isinstance(registry, DistError):
        return EpmdLookupError("EPMD on %s port %d cannot be reached (%s): the host is down, EPMD is not running or "
                               "a firewall blocks it." % (host, epmd_port, registry), "epmd_unreachable", host)
    listed = ", ".join(sorted(registry)) or "none"
    return EpmdLookupError("EPMD on %s has no node named %s (it has: %s): %s is down or was started under another "
                           "name." % (host, alive, listed, node), "not_registered", host, sorted(registry))


def parse_address(text, field="dial"):
    """``(host, port)`` from ``host:port`` or ``[ipv6]:port``; raises ValueError naming ``field``."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError("%s: %r is not an address: write host:port, or [address]:port for IPv6" % (field, text))
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError("%s: %r is not an address: write an IPv6 address as [address]:port" % (field, text))
    else:
        host, port = text.rsplit(":", 1)
        if ":" in host:
            raise ValueError("%s: %r is not an address: write an IPv6 address as [address]:port" % (field, text))
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("%s: %r is not an address: it needs a host and a port from 1 to 65535" % (field, text))
    return host, int(port)


def validate_dial(dial, nodes=None):
    """``dial`` as {node: (host, port)}, checked (``host:port`` text is parsed): raises ValueError naming ``dial``.

    With ``nodes``, entries for other nodes are checked and left out: one mapping may serve many tasks.
    """
    if not dial:
        return {}
    if not isinstance(dial, dict):
        raise ValueError("dial must map node names to addresses (host:port)")
    result = {}
    for node, address in dial.items():
        try:
            erl_dist.split_node(node)
        except ValueError as exc:
            raise ValueError("dial: %s" % exc)
        if isinstance(address, str):
            address = parse_address(address, "dial: %s" % node)
        if not (isinstance(address, (tuple, list)) and len(address) == 2 and isinstance(address[0], str)
                and address[0] and isinstance(address[1], int) and not isinstance(address[1], bool)
                and 0 < address[1] < 65536):
            raise ValueError("dial: the address of %s must be host:port with a port from 1 to 65535, not %r"
                             % (node, address))
        if nodes is None or node in nodes:
            result[node] = (address[0], address[1])
    return result


class Call:
    """Calls sent to one node's ``rex``; ``results`` once ``done`` and ``ok``."""

    __slots__ = ("node", "calls", "serial", "keep_open", "batch", "refs", "replies", "left", "results", "error",
                 "done", "sent_at", "finished_at")

    def __init__(self, node, calls, serial, keep_open, batch=None):
        self.node = node
        self.calls = calls
        self.serial = serial
        self.keep_open = keep_open
        self.batch = batch
        self.refs = ()
        self.replies = None
        self.left = 0
        self.results = None
        self.error = None
        self.done = False
        self.sent_at = None
        self.finished_at = None

    @property
    def ok(self):
        return self.done and self.error is None


class Batch(dict):
    """node -> Call for one ``call_all``; ``left`` counts the calls not done yet."""

    def __init__(self):
        super(Batch, self).__init__()
        self.left = 0

    @property
    def done(self):
        return self.left == 0


class Link:
    """What the driver knows of one node, across its connections."""

    def __init__(self, node, alive, host, address, local_node):
        self.node = node
        self.alive = alive
        self.host = host
        self.address = address
        self.local_node = local_node
        self.state = DOWN
        self.phase = None
        self.channel = None
        self.probe = None
        self.provisional = None  # what ends the attempt if a running TLS probe finds no TLS
        self.error = None
        self.reported = None  # the last error on_link was told of
        self.queued = []  # calls waiting for the session
        self.pending = {}  # reference -> call
        self.peer_name = None
        self.sessions = 0
        self.attempts = 0
        self.last_attempt = None
        self.attempt_deadline = None
        self.up_since = None
        self.last_received = None
        self.last_sent = None


# ------------------------------------------------------------------------------------------------- channels
class _Channel:
    """One non-blocking socket: connects (trying each address in turn), optionally runs TLS, sends and reads.

    Subclasses say what to send once connected (``on_connected``), what to answer to received bytes
    (``on_data``) and what a hang-up means (``on_eof``); they set ``finished`` when their work is done.
    """

    reason = "epmd_unreachable"

    def __init__(self, host, port, addresses, tls_context=None, server_name=None):
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
        self.tls_context = tls_context
        self.server_name = server_name
        self.tls = None  # ssl.SSLObject over memory BIOs, once connected
        self.tls_done = False

    def connect_next(self):
        """Start connecting to the next address; raises ``DistError`` when none is left."""
        self.retry = False
        self.close()
        while self.addresses:
            fam, kind, proto, addr = self.addresses.pop(0)
            try:
                # Out of file descriptors (a very large node list) is that node's error, not the driver's.
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

    def send(self, data):
        """Queue ``data`` (plain text of the protocol; encrypted first over TLS)."""
        if data:
            if self.tls is not None:
                self.tls.write(data)
                self.outgoing += self._tls_out.read()
            else:
                self.outgoing += data

    def flush(self):
        """Send what the socket takes now."""
        if self.outgoing and not self.connecting and self.sock is not None and not self.finished:
            try:
                sent = self.sock.send(self.outgoing)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self.on_eof(exc)
                return
            self.outgoing = self.outgoing[sent:]

    def handle(self, mask):
        if self.connecting:
            err = self.sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
            if err:
                self.last_error = os.strerror(err)
                self.retry = True
                return
            self.connecting = False
            self.sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            if self.tls_context is not None:
                self._start_tls()
            else:
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
            if self.tls is not None:
                self._tls_received(data)
            else:
                self.outgoing += self.on_data(data)
        self.flush()

    # TLS over memory BIOs: the same non-blocking socket, the ssl module only transforms bytes.
    def _start_tls(self):
        import ssl  # only TLS users pay for loading ssl (and OpenSSL)
        self._tls_in = ssl.MemoryBIO()
        self._tls_out = ssl.MemoryBIO()
        self.tls = self.tls_context.wrap_bio(self._tls_in, self._tls_out, server_hostname=self.server_name)
        self._tls_handshake()

    def _tls_handshake(self):
        import ssl
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self.outgoing += self._tls_out.read()
            return
        except ssl.SSLError as exc:
            self.outgoing += self._tls_out.read()
            raise self.tls_error(exc)
        self.outgoing += self._tls_out.read()
        self.tls_done = True
        self.send(self.on_connected())

    def _tls_received(self, data):
        import ssl
        self._tls_in.write(data)
        if not self.tls_done:
            self._tls_handshake()
            if not self.tls_done:
                return
        chunks = []
        ended = False
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                ended = True
                break
            except ssl.SSLError as exc:
                raise self.tls_error(exc)
            if not chunk:
                ended = True
                break
            chunks.append(chunk)
        self.outgoing += self._tls_out.read()
        if chunks:
            self.send(self.on_data(b"".join(chunks)))
        if ended:
            self.on_eof(None)

    def tls_error(self, exc):
        return DistError("TLS with %s port %d failed: %s" % (self.host, self.port, exc), "tls_failed")

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
    """EPMD NAMES of one host for the links in ``waiting``: ``registry`` is the ``{alive: port}`` answer."""

    def __init__(self, host, port, deadline):
        super(_NamesLookup, self).__init__(host, port, [])
        self.deadline = deadline
        self.waiting = []
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


class _TlsProbe(_Channel):
    """Does host:port complete a TLS handshake? (certificates unchecked: this only tells the protocol)."""

    reason = "dist_port_unreachable"

    def __init__(self, link, host, port, addresses, context, deadline):
        super(_TlsProbe, self).__init__(host, port, addresses, context, None)
        self.link = link
        self.deadline = deadline
        self.speaks_tls = False

    def on_connected(self):
        self.speaks_tls = True
        self.finished = True
        return b""

    def on_data(self, data):
        return b""

    def on_eof(self, error):
        self.finished = True

    def tls_error(self, exc):
        # An alert about our (missing) certificate still proves the peer speaks TLS.
        self.speaks_tls = "ALERT" in str(exc).upper()
        self.finished = True
        return DistError(str(exc), "tls_failed")


class _DistChannel(_Channel):
    """One connection to a node: the handshake, then the session for as long as it lasts."""

    reason = "dist_port_unreachable"

    def __init__(self, driver, link, host, port, addresses):
        tls = driver.tls
        context = server_name = None
        if tls is not None:
            context = driver.tls_context()
            server_name = erl_dist.tls_server_name(tls, link.host) if tls.verify else None
        super(_DistChannel, self).__init__(host, port, addresses, context, server_name)
        self.driver = driver
        self.link = link
        identity = driver.identity
        # Our challenge is the one value each connection draws afresh: it is what makes the node prove its cookie.
        self.handshake = erl_dist.Handshake(link.node, driver.cookie, link.local_node, identity.entropy.creation,
                                            erl_dist.Entropy().challenge, tls is not None)
        self.session = None

    def on_connected(self):
        return self.handshake.start()

    def on_data(self, data):
        link = self.link
        link.last_received = time.monotonic()
        reply = b""
        handshake = self.handshake
        if not handshake.done:
            reply = handshake.feed(data)
            if self.session is None and handshake.replied:
                # Queued calls ride with our challenge reply instead of waiting for the ack: one round trip less
                # through a busy node. The node reads them only after it has accepted the reply; one that
                # rejects it closes the connection with them unread.
                self.session = self.driver.identity.session(link.local_node, link.node)
                reply += self.driver._session_ready(link)
            if not handshake.done:
                return reply
            data = handshake.rest
            self.driver._link_up(link)
        session = self.session
        session.feed(data)
        deliver = self.driver._deliver
        while True:
            received = session.next_message()
            if received is None:
                break
            deliver(link, received[1])
        return reply + session.take_outgoing()

    def on_eof(self, error):
        if self.tls is not None and not self.tls_done:
            raise erl_dist.tls_failure(error or OSError("end of stream"), self.link.node, self.driver.tls,
                                       self.server_name or self.link.host)
        if not self.handshake.done:
            raise self.handshake.closed()
        if error is not None:
            raise ConnectionClosed("%s reset the connection: %s" % (self.link.node, error))
        raise ConnectionClosed("%s closed the connection" % self.link.node)

    def tls_error(self, exc):
        return erl_dist.tls_failure(exc, self.link.node, self.driver.tls, self.server_name or self.link.host)


# ---------------------------------------------------------------------------------------------- the identity
class Identity:
    """The hidden node a driver is: one creation and one reference seed for all its connections, one name per
    name type (short and long names do not mix) unless ``local_node`` is given."""

    def __init__(self, local_node=None):
        self.entropy = erl_dist.Entropy()
        self.local_node = local_node
        self._templates = {}  # local name -> Session used to encode call frames

    def name_for(self, node):
        return self.local_node or erl_dist.local_name_for(node, self.entropy)

    def session(self, local_node, node):
        return erl_dist.Session(local_node, node, self.entropy.creation, self.entropy.ref_seed, reuse_replies=True)

    def frames(self, local_node, calls, serial):
        """The rex frames of ``calls`` under ``local_node`` numbered from ``serial``, and their references."""
        template = self._templates.get(local_node)
        if template is None:
            template = self._templates[local_node] = self.session(local_node, None)
        return template.gen_calls("rex", [erl_dist.rpc_request(*call) for call in calls], serial)


# ------------------------------------------------------------------------------------------------ the driver
def _replace_port(addresses, port):
    return [(fam, kind, proto, addr[:1] + (port,) + addr[2:]) for fam, kind, proto, dummy, addr in addresses]


class Driver:
    """See the module docstring."""

    def __init__(self, cookie, local_node=None, epmd_port=EPMD_DEFAULT_PORT, dist_port=None, family=None, tls=None,
                 dial=None, connect_timeout=5.0, tick_timeout=60.0, retry_interval=0.0, max_sockets=MAX_SOCKETS,
                 resolve_ttl=30.0, on_link=None):
        if not isinstance(cookie, str):
            raise ValueError("cookie must be a string")
        self.cookie = cookie
        self.identity = Identity(local_node)
        self.epmd_port = epmd_port
        self.dist_port = dist_port
        self.family = family
        self.tls = tls
        self.dial = dict(dial or {})
        self.connect_timeout = connect_timeout
        self.tick_timeout = tick_timeout
        self.retry_interval = retry_interval
        self.max_sockets = max_sockets
        self.resolve_ttl = resolve_ttl
        self.on_link = on_link
        self.links = {}
        self.local_names = set()
        self._poller = select.poll()
        self._watched = {}  # file descriptor -> channel
        self._queue = collections.deque()  # channels waiting for a socket of their own
        self._lookups = {}  # host -> _NamesLookup in flight
        self._probes = []
        self._connecting = set()
        self._up = set()
        self._resolved = {}  # host -> (expiry, addresses or DistError)
        self._frames = {}  # (local name, serial) -> (bytes, refs)
        self._serial = 0
        self._tls_context = None
        self._probe_context = None
        self._next_timers = 0.0

    # ---------------------------------------------------------------------------------------------- links
    def add(self, node, address=None):
        """The ``Link`` of ``node`` (made on first use); ``address`` (host, port) overrides how it is dialled."""
        link = self.links.get(node)
        if link is None:
            alive, host = erl_dist.split_node(node)
            link = Link(node, alive, host, address or self.dial.get(node), self.identity.name_for(node))
            self.links[node] = link
        elif address is not None:
            link.address = address
        return link

    def tls_context(self):
        """One ``ssl.SSLContext`` for every TLS connection (loading the CA once); bad files raise DistError."""
        if self._tls_context is None:
            try:
                self._tls_context = self.tls.context()
            except ValueError as exc:
                raise DistError(str(exc), "tls_failed")
        return self._tls_context

    def _addresses(self, host, port, reason):
        now = time.monotonic()
        cached = self._resolved.get(host)
        if cached is None or cached[0] < now:
            try:
                found = resolve(host, 0, Deadline(self.connect_timeout), self.family, reason)
            except DistError as exc:
                found = exc
            cached = self._resolved[host] = (now + self.resolve_ttl, found)
        found = cached[1]
        if isinstance(found, DistError):
            raise DistError(str(found), reason)
        return _replace_port(found, port)

    # ---------------------------------------------------------------------------------------------- calls
    def _next_serial(self, count):
        serial = self._serial + 1
        self._serial += max(1, count)
        return serial

    def call(self, node, calls, keep_open=True):
        """Send ``calls`` to ``node`` (dialling it when needed); see the module docstring."""
        call = Call(node, calls, self._next_serial(len(calls)), keep_open)
        self._start_call(self.add(node), call, time.monotonic())
        return call

    def call_all(self, nodes, calls, keep_open=True):
        """``call`` for every node with one numbering, so that every node gets the same bytes."""
        serial = self._next_serial(len(calls))
        batch = Batch()
        now = time.monotonic()
        for node in nodes:
            call = Call(node, calls, serial, keep_open, batch)
            batch[node] = call
            batch.left += 1
            self._start_call(self.add(node), call, now)
        return batch

    def _call_frames(self, link, call):
        key = (link.local_node, call.serial)
        found = self._frames.get(key)
        if found is None:
            if len(self._frames) > 64:
                self._frames.clear()
            found = self._frames[key] = self.identity.frames(link.local_node, call.calls, call.serial)
        return found

    def _register(self, link, call):
        data, refs = self._call_frames(link, call)
        call.refs = refs
        call.replies = {}
        call.left = len(refs)
        for ref in refs:
            link.pending[ref] = call
        return data

    def _start_call(self, link, call, now):
        call.sent_at = now
        if link.state == UP:
            data = self._register(link, call)
            channel = link.channel
            link.last_sent = now
            try:
                channel.send(data)
                channel.flush()
            except DistError as exc:
                self._channel_failed(channel, exc)
                return
            self._sync(channel)
        elif link.state == CONNECTING:
            if link.channel is not None and link.channel.session is not None:
                link.channel.send(self._register(link, call))  # between our reply and the node's ack
                self._sync(link.channel)
            else:
                link.queued.append(call)
        elif link.last_attempt is not None and now - link.last_attempt < self.retry_interval:
            self._end_call(call, link.error or DistError("%s is not connected" % link.node, "connection_closed"))
        else:
            link.queued.append(call)
            self._dial(link, now)

    def _session_ready(self, link):
        """The frames of the calls queued while ``link`` was connecting (sent with our challenge reply)."""
        queued, link.queued = link.queued, []
        return b"".join(self._register(link, call) for call in queued)

    def _deliver(self, link, message):
        if isinstance(message, tuple) and len(message) == 2 and isinstance(message[0], erl_term.Reference):
            call = link.pending.pop(message[0], None)
            if call is not None:
                call.replies[message[0]] = message[1]
                call.left -= 1
                if not call.left:
                    self._answered(link, call)

    def _answered(self, link, call):
        results = [call.replies.pop(ref) for ref in call.refs]
        try:
            erl_dist.check_rpc_results(call.calls, results, link.peer_name or link.node)
        except erl_dist.RpcError as exc:
            self._end_call(call, exc)
        else:
            call.results = results
            self._end_call(call, None)
        if not call.keep_open and not link.pending and not link.queued:
            self.disconnect(link.node)

    def _end_call(self, call, error):
        if call.done:
            return
        call.error = error
        call.done = True
        call.finished_at = time.monotonic()
        if call.batch is not None:
            call.batch.left -= 1

    def abandon(self, calls):
        """Give up the calls not done yet: each ends with the error that tells where its node stands."""
        for call in calls:
            if call.done:
                continue
            link = self.links[call.node]
            for ref in call.refs:
                link.pending.pop(ref, None)
            if call in link.queued:
                link.queued.remove(call)
            self._end_call(call, self._stall_error(link))

    def _stall_error(self, link):
        if link.state == CONNECTING:
            if link.phase == "lookup":
                return lookup_error(link.node, link.host, link.alive, self.epmd_port, None)
            if link.provisional is not None:
                return link.provisional
        elif link.state == DOWN and link.error is not None:
            return link.error
        return DistTimeout("%s did not answer within the time budget" % link.node)

    # --------------------------------------------------------------------------------------------- dialling
    def _dial(self, link, now):
        link.state = CONNECTING
        link.attempts += 1
        link.last_attempt = now
        link.attempt_deadline = now + self.connect_timeout
        link.provisional = None
        link.peer_name = None
        self._connecting.add(link)
        if link.address is not None:
            self._open(link, link.address[0], link.address[1])
        elif self.dist_port is not None:
            self._open(link, link.host, self.dist_port)
        else:
            self._lookup(link, now)

    def _open(self, link, host, port):
        link.phase = "connect"
        try:
            addresses = self._addresses(host, port, "dist_port_unreachable")
            channel = _DistChannel(self, link, host, port, addresses)
        except DistError as exc:
            self._link_failed(link, exc)
            return
        link.channel = channel
        self._queue.append(channel)
        self._start_queued()

    def _lookup(self, link, now):
        link.phase = "lookup"
        lookup = self._lookups.get(link.host)
        if lookup is None:
            lookup = _NamesLookup(link.host, self.epmd_port, now + self.connect_timeout)
            try:
                lookup.addresses = self._addresses(link.host, self.epmd_port, "epmd_unreachable")
            except DistError as exc:
                self._link_failed(link, lookup_error(link.node, link.host, link.alive, self.epmd_port, exc))
                return
            self._lookups[link.host] = lookup
            self._queue.append(lookup)
        lookup.waiting.append(link)
        self._start_queued()

    def _lookup_done(self, lookup, error):
        if self._lookups.get(lookup.host) is lookup:
            del self._lookups[lookup.host]
        registry = lookup.registry if error is None else error
        for link in lookup.waiting:
            if link.state != CONNECTING or link.phase != "lookup":
                continue  # given up meanwhile
            port = registry.get(link.alive) if isinstance(registry, dict) else None
            if port is None:
                self._link_failed(link, lookup_error(link.node, lookup.host, link.alive, self.epmd_port, registry))
            else:
                self._open(link, link.host, port)

    def _start_probe(self, channel, closed):
        """The node hung up on our name: find out (in the loop) whether its port speaks TLS."""
        link = channel.link
        link.phase = "probe"
        link.provisional = closed
        if self._probe_context is None:
            self._probe_context = erl_dist.TlsOptions(verify=False).context()
        try:
            addresses = self._addresses(channel.host, channel.port, "dist_port_unreachable")
        except DistError:
            self._link_failed(link, closed)
            return
        deadline = min(time.monotonic() + TLS_PROBE_SECONDS, link.attempt_deadline)
        link.probe = _TlsProbe(link, channel.host, channel.port, addresses, self._probe_context, deadline)
        self._probes.append(link.probe)
        self._queue.append(link.probe)
        self._start_queued()

    def _probe_done(self, probe):
        if probe in self._probes:
            self._probes.remove(probe)
        self._unwatch(probe)
        link = probe.link
        if link.probe is not probe:
            return
        link.probe = None
        self._link_failed(link, erl_dist.tls_required(link.node) if probe.speaks_tls else link.provisional)

    def _link_up(self, link):
        now = time.monotonic()
        link.state = UP
        link.phase = None
        link.peer_name = link.channel.handshake.peer_name
        link.error = link.reported = None
        link.sessions += 1
        link.up_since = link.last_received = link.last_sent = now
        self._connecting.discard(link)
        self._up.add(link)
        self.local_names.add(link.local_node)
        if self.on_link is not None:
            self.on_link(link, True, None)

    def _link_failed(self, link, error):
        """End the link's attempt or session with ``error``; every call waiting on it ends with it too."""
        channel, link.channel = link.channel, None
        if channel is not None:
            self._unwatch(channel)
            if channel in self._queue:
                self._queue.remove(channel)
        if link.probe is not None:
            probe, link.probe = link.probe, None
            self._unwatch(probe)
            if probe in self._probes:
                self._probes.remove(probe)
        was_up = link.state == UP
        link.state = DOWN
        link.phase = None
        link.error = error
        self._connecting.discard(link)
        self._up.discard(link)
        calls, link.queued = link.queued, []
        for call in link.pending.values():
            if call not in calls:
                calls.append(call)
        link.pending = {}
        for call in calls:
            self._end_call(call, error)
        if self.on_link is not None and error is not None and (was_up or link.reported is None
                                                               or link.reported.reason != error.reason):
            link.reported = error
            self.on_link(link, False, error)

    def disconnect(self, node):
        """Close the session (or attempt) of ``node``; its unanswered calls end as ``connection_closed``."""
        link = self.links.get(node)
        if link is None:
            return
        error = link.error
        calls = link.queued + list(link.pending.values())
        link.queued, link.pending = [], {}
        on_link, self.on_link = self.on_link, None
        try:
            self._link_failed(link, None)
        finally:
            self.on_link = on_link
        link.error = error
        for call in calls:
            self._end_call(call, ConnectionClosed("the session with %s was closed by the caller" % node))

    def close(self):
        """Close every socket; the driver can be used again afterwards."""
        for node in list(self.links):
            if self.links[node].state != DOWN:
                self.disconnect(node)
        for channel in list(self._watched.values()):
            self._unwatch(channel)
        self._queue.clear()
        self._lookups.clear()
        self._probes = []

    # ----------------------------------------------------------------------------------------- the poll loop
    def _watch(self, channel):
        channel.connect_next()
        channel.polled = channel.events()
        self._watched[channel.sock.fileno()] = channel
        self._poller.register(channel.sock, channel.polled)

    def _unwatch(self, channel):
        if channel.sock is not None and self._watched.get(channel.sock.fileno()) is channel:
            del self._watched[channel.sock.fileno()]
            self._poller.unregister(channel.sock)
        channel.close()

    def _sync(self, channel):
        if channel.sock is not None:
            events = channel.events()
            if events != channel.polled:
                channel.polled = events
                self._poller.modify(channel.sock, events)

    def _start_queued(self):
        queue = self._queue
        while queue and len(self._watched) < self.max_sockets:
            channel = queue.popleft()
            try:
                self._watch(channel)
            except DistError as exc:
                self._channel_failed(channel, exc)

    def _channel_failed(self, channel, error):
        self._unwatch(channel)
        if isinstance(channel, _NamesLookup):
            self._lookup_done(channel, error)
        elif isinstance(channel, _TlsProbe):
            self._probe_done(channel)
        elif channel.link.channel is channel:
            if isinstance(error, erl_dist.ClosedBeforeStatus) and self.tls is None:
                channel.link.channel = None
                self._start_probe(channel, error)
            else:
                self._link_failed(channel.link, error)

    def _channel_finished(self, channel):
        self._unwatch(channel)
        if isinstance(channel, _NamesLookup):
            self._lookup_done(channel, None)
        elif isinstance(channel, _TlsProbe):
            self._probe_done(channel)

    def _timers(self, now):
        for link in list(self._connecting):
            if link.state == CONNECTING and now >= link.attempt_deadline and link.phase != "probe":
                if link.phase == "lookup":
                    error = lookup_error(link.node, link.host, link.alive, self.epmd_port, None)
                else:
                    error = DistTimeout("%s did not complete the connection within %.3g s"
                                        % (link.node, self.connect_timeout))
                self._link_failed(link, error)
        for host, lookup in list(self._lookups.items()):
            if now >= lookup.deadline:
                self._unwatch(lookup)
                if lookup in self._queue:
                    self._queue.remove(lookup)
                self._lookup_done(lookup, DistTimeout("EPMD on %s did not answer in time" % host))
        for probe in list(self._probes):
            if now >= probe.deadline:
                probe.speaks_tls = False
                self._probe_done(probe)
        tick_timeout = self.tick_timeout
        if tick_timeout:
            for link in list(self._up):
                if now - link.last_received > tick_timeout:
                    self._link_failed(link, DistTimeout(
                        "%s sent nothing for %.3g s: the connection is taken as dead (tick timeout)"
                        % (link.node, tick_timeout)))
                elif now - link.last_sent > tick_timeout / 4.0:
                    link.last_sent = now
                    try:
                        link.channel.send(TICK)
                        link.channel.flush()
                    except DistError as exc:
                        self._channel_failed(link.channel, exc)
                        continue
                    self._sync(link.channel)

    def _handle(self, channel, mask):
        try:
            channel.handle(mask)
            if channel.retry:
                self._unwatch(channel)
                self._watch(channel)
        except DistError as exc:
            self._channel_failed(channel, exc)
            return
        except Exception as exc:  # pylint: disable=broad-except
            # A peer must never be able to crash the driver: whatever it did is that node's result.
            link = getattr(channel, "link", None)
            self._channel_failed(channel, DistError("talking to %s failed unexpectedly: %s: %s" % (
                link.node if link is not None else "EPMD on %s" % channel.host, type(exc).__name__, exc),
                "protocol_error"))
            return
        if channel.finished:
            self._channel_finished(channel)
        elif channel.sock is not None:
            events = channel.events()
            if events != channel.polled:
                channel.polled = events
                self._poller.modify(channel.sock, events)

    def run(self, until=None, deadline=None):
        """Drive every socket until ``until()`` holds or the monotonic clock reaches ``deadline``."""
        watched = self._watched
        poll = self._poller.poll
        handle = self._handle
        while True:
            if until is not None and until():
                return True
            now = time.monotonic()
            if now >= self._next_timers:
                self._next_timers = now + TIMER_PERIOD
                self._timers(now)
                if until is not None and until():
                    return True
            if deadline is not None and now >= deadline:
                return False
            if not watched and not self._queue and deadline is None:
                return False
            wait = self._next_timers - now if (self._connecting or self._up or self._probes) else None
            if deadline is not None:
                wait = deadline - now if wait is None else min(wait, deadline - now)
            # Channels are looked up before any is handled: handling one may close a socket and reuse its number.
            ready = [(watched[fd], mask) for fd, mask in poll(None if wait is None else max(0.0, wait) * 1000)]
            for channel, mask in ready:
                if channel.sock is not None:
                    handle(channel, mask)
            if self._queue:
                self._start_queued()
