# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Erlang distribution client: a hidden node in pure Python (handshake v6, framing, RPC).

Public API
==========
``connect(node, cookie, timeout=5.0, deadline=None, epmd_port=4369, dist_port=None,
          tls=None, family=None, local_node=None) -> DistConnection``
    Dial ``node`` ("alive@host"): ask the host's EPMD for the port (or use ``dist_port`` for
    EPMD-less nodes), open TCP (or TLS when ``tls`` is a ``TlsOptions``), run the version 6
    handshake and check the peer's digest. The whole of it is bounded by ``deadline``
    (an ``erl_epmd.Deadline``) or, when none is given, by ``timeout`` seconds.
``DistConnection.rpc(module, function, args, timeout=5.0)``
    ``rpc:call`` through the node's ``rex`` server; ``{badrpc, R}`` raises ``RpcError``.
``DistConnection.rpc_many(calls, timeout=5.0)``
    Several ``(module, function, args)`` calls sent at once; results in order.
``DistConnection.ping(timeout=5.0)``
    ``net_kernel`` ``is_auth`` (what ``net_adm:ping`` asks once connected); True when the node answers ``yes``.
``DistConnection.close()``
``TlsOptions(ca_file=None, cert_file=None, key_file=None, verify=True, server_name=None)``
``split_node(name) -> (alive, host)``; raises ``ValueError`` naming what is wrong.
``format_term(term)``
    Erlang-like text of a decoded term, for messages.

Sans-IO core
============
The protocol itself is pure code without sockets, shared by the blocking ``connect`` above and by the
single-threaded poll driver (``erl_driver``): ``build_send_name``, ``parse_status``, ``parse_challenge``,
``build_challenge_reply``, ``check_ack``, ``split_frame``; ``Handshake`` (a state machine fed with received
bytes that returns the bytes to send) and ``Session`` (frames after the handshake: ticks, UNLINK_ID, rpc
requests and their replies by reference). ``tls_failure`` turns an ``ssl`` error into the diagnosis both
transports report.

Terms follow ``erl_term``: pass ``Atom("x")`` for atoms; a Python ``str`` is sent as a binary.

The client never sets the PUBLISHED flag: it is a hidden node, so it shows only in the
peer's ``nodes(hidden)`` and never makes cluster nodes connect to one another. It accepts no
connections and registers nothing in EPMD.

Every failure raises an ``erl_epmd.DistError`` whose ``reason`` is one of the diagnosis codes:
``epmd_unreachable``, ``not_registered``, ``dist_port_unreachable``, ``cookie_rejected``,
``not_allowed``, ``name_mismatch`` (its message says when the name types differ too),
``tls_required``, ``tls_failed``, ``timeout``, ``protocol_error``, ``connection_closed``, ``rpc_error``.
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import _socket  # not socket.py, which imports enum: see erl_epmd
import struct
# The blocking connection serialises calls with a lock; _thread spares importing threading.
from _thread import allocate_lock

try:
    # CPython's built-in MD5: importing hashlib loads OpenSSL's libcrypto, which costs a fresh
    # process several milliseconds for one 16-byte digest per handshake.
    from _md5 import md5
except ImportError:  # builds without the built-in module (e.g. some FIPS distributions)
    from hashlib import md5

from ansible_collections.beamops.cluster.plugins.module_utils import erl_term
from ansible_collections.beamops.cluster.plugins.module_utils.erl_epmd import (
    EPMD_DEFAULT_PORT,
    ConnectionClosed,
    Deadline,
    DistError,
    DistTimeout,
    NotRegistered,
    open_tcp,
    port_please,
    recv_some,
    send_all,
)

# Capability flags (dist.hrl).
DFLAG_PUBLISHED = 0x1
DFLAG_EXTENDED_REFERENCES = 0x4
DFLAG_DIST_MONITOR = 0x8
DFLAG_FUN_TAGS = 0x10
DFLAG_NEW_FUN_TAGS = 0x80
DFLAG_EXTENDED_PIDS_PORTS = 0x100
DFLAG_EXPORT_PTR_TAG = 0x200
DFLAG_BIT_BINARIES = 0x400
DFLAG_NEW_FLOATS = 0x800
DFLAG_UNICODE_IO = 0x1000
DFLAG_SMALL_ATOM_TAGS = 0x4000
DFLAG_UTF8_ATOMS = 0x10000
DFLAG_MAP_TAG = 0x20000
DFLAG_BIG_CREATION = 0x40000
DFLAG_SEND_SENDER = 0x80000
DFLAG_BIG_SEQTRACE_LABELS = 0x100000
DFLAG_EXIT_PAYLOAD = 0x400000
DFLAG_HANDSHAKE_23 = 0x1000000
DFLAG_UNLINK_ID = 0x2000000
DFLAG_MANDATORY_25_DIGEST = 0x4000000
DFLAG_V4_NC = 1 << 34

# What OTP 26-28 refuse to talk without (OTP 25's set is a subset of it).
MANDATORY_FLAGS = (DFLAG_EXTENDED_REFERENCES | DFLAG_FUN_TAGS | DFLAG_NEW_FUN_TAGS | DFLAG_EXTENDED_PIDS_PORTS
                   | DFLAG_EXPORT_PTR_TAG | DFLAG_BIT_BINARIES | DFLAG_NEW_FLOATS | DFLAG_UTF8_ATOMS
                   | DFLAG_MAP_TAG | DFLAG_BIG_CREATION | DFLAG_HANDSHAKE_23 | DFLAG_UNLINK_ID
                   | DFLAG_MANDATORY_25_DIGEST | DFLAG_V4_NC)
# PUBLISHED stays clear (hidden node); DIST_HDR_ATOM_CACHE and FRAGMENTS stay clear so that every
# message arrives as one pass-through frame.
CLIENT_FLAGS = (MANDATORY_FLAGS | DFLAG_DIST_MONITOR | DFLAG_UNICODE_IO | DFLAG_SMALL_ATOM_TAGS
                | DFLAG_SEND_SENDER | DFLAG_BIG_SEQTRACE_LABELS | DFLAG_EXIT_PAYLOAD)

# Control message tags.
CTRL_SEND = 2
CTRL_REG_SEND = 6
CTRL_SEND_SENDER = 22
CTRL_UNLINK_ID = 35
CTRL_UNLINK_ID_ACK = 36
PASS_THROUGH = 112

# Replies such as nodes() are tiny; this only stops a broken peer from making us buffer without end.
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
HANDSHAKE_MAX_FRAME = 65535

# Characters of node names (checked with sets: the re module is a few ms of import for a fresh process).
_ALIVE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_HOST_CHARS = _ALIVE_CHARS | frozenset(".:[]%")

# A message {Ref, Reply} starts with version 131 and a 2-tuple; Replies up to this size are kept for reuse.
REPLY_PREFIX = bytes([131, 104, 2])
MAX_REUSED_REPLY = 256 * 1024
MAX_REUSED_REPLIES = 8
_UNKNOWN = object()

# Random bytes a connection needs, drawn with one os.urandom call: creation (4), our challenge (4),
# the reference seed (8) and the suffix of the generated local node name (6).
ENTROPY_SIZE = 22


class CookieRejected(DistError):
    reason = "cookie_rejected"


class NotAllowed(DistError):
    reason = "not_allowed"


class NameMismatch(DistError):
    """The node answered under another name than the one dialled (``actual``)."""

    reason = "name_mismatch"

    def __init__(self, message, dialled, actual):
        super(NameMismatch, self).__init__(message)
        self.dialled = dialled
        self.actual = actual


class ClosedBeforeStatus(ConnectionClosed):
    """The peer hung up on our name frame, as a TLS listener does with a plain TCP client."""


class ProtocolError(DistError):
    reason = "protocol_error"


class RpcError(DistError):
    """The node answered ``{badrpc, Reason}``; ``detail`` is the decoded reason."""

    reason = "rpc_error"

    def __init__(self, message, detail=None):
        super(RpcError, self).__init__(message)
        self.detail = detail


class TlsOptions:
    """TLS distribution settings of the client side (``-proto_dist inet_tls`` nodes)."""

    def __init__(self, ca_file=None, cert_file=None, key_file=None, verify=True, server_name=None):
        self.ca_file = ca_file
        self.cert_file = cert_file
        self.key_file = key_file
        self.verify = verify
        self.server_name = server_name

    def context(self):
        """An ``ssl.SSLContext``; missing or unreadable files raise ``ValueError`` naming the option."""
        import ssl  # only TLS users pay for loading ssl (and OpenSSL)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self.verify:
            ctx.check_hostname = True
            ctx.verify_mode = ssl.CERT_REQUIRED
            try:
                if self.ca_file:
                    ctx.load_verify_locations(cafile=self.ca_file)
                else:
                    ctx.load_default_certs()
            except (OSError, ssl.SSLError) as exc:
                raise ValueError("tls_ca_file %s cannot be used: %s" % (self.ca_file, exc))
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file:
            try:
                ctx.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError("tls_cert_file/tls_key_file %s cannot be used: %s" % (self.cert_file, exc))
        return ctx


def format_term(term):
    """Erlang-like text of a decoded term, for messages (``{'EXIT', {undef, [...]}}``)."""
    if isinstance(term, erl_term.Atom):
        return str(term)
    if isinstance(term, bool):
        return "true" if term else "false"
    if isinstance(term, tuple) and not hasattr(term, "_fields"):
        return "{%s}" % ", ".join(format_term(item) for item in term)
    if isinstance(term, list):
        return "[%s]" % ", ".join(format_term(item) for item in term)
    if isinstance(term, bytes):
        return "<<%s>>" % repr(term)[1:]
    return repr(term)


def split_node(name):
    """Split "alive@host"; raises ``ValueError`` that says what a node name must look like."""
    if not isinstance(name, str) or name.count("@") != 1:
        raise ValueError("%r is not a node name: it must be alive@host, e.g. app@10.0.0.5" % (name,))
    alive, host = name.split("@")
    if not alive or not _ALIVE_CHARS.issuperset(alive):
        raise ValueError("%r is not a node name: the part before @ may hold only letters, digits, _ and -" % (name,))
    if not host or not _HOST_CHARS.issuperset(host):
        raise ValueError("%r is not a node name: the host after @ is empty or holds characters a host name cannot" % (name,))
    return alive, host


def is_long_name(name):
    """Long names carry a fully qualified host or an address (a dot or a colon in the host)."""
    host = name.split("@", 1)[-1]
    return "." in host or ":" in host


def digest(challenge, cookie):
    return md5(cookie.encode("utf-8") + str(challenge & 0xFFFFFFFF).encode("ascii")).digest()


def local_name_for(node, entropy):
    """A unique hidden-node name of the same name type as the dialled node (short and long names do not mix)."""
    suffix = entropy.data[16:22].hex()
    host = node.split("@", 1)[1]
    if is_long_name(node):
        local_host = "127.0.0.1" if ":" not in host else "::1"
    else:
        local_host = _socket.gethostname().split(".")[0] or "localhost"
    return "beamops_%s@%s" % (suffix, local_host)


class Entropy:
    """The random values of one connection, cut from ``ENTROPY_SIZE`` bytes of one ``os.urandom`` call."""

    def __init__(self, data=None):
        data = data if data is not None else os.urandom(ENTROPY_SIZE)
        creation, self.challenge, ref_a, ref_b = struct.unpack(">IIII", data[:16])
        self.creation = creation or 1
        self.ref_seed = (ref_a, ref_b)
        self.data = data


# ---------------------------------------------------------------------------------------------- sans-IO core
def split_frame(buffer, start, header, max_size):
    """The frame that begins at ``start`` of ``buffer``: ``(body_start, body_end)``, or None while incomplete.

    ``header`` is the length prefix size (2 or 4). A length above ``max_size`` raises ``ProtocolError`` as soon
    as the prefix is in, before any of the body is buffered.
    """
    if len(buffer) - start < header:
        return None
    if header == 2:
        size = (buffer[start] << 8) | buffer[start + 1]
    else:
        size = struct.unpack_from(">I", buffer, start)[0]
    if size > max_size:
        raise ProtocolError("the node sent a %d-byte frame, more than the %d allowed" % (size, max_size))
    if len(buffer) - start - header < size:
        return None
    return start + header, start + header + size


def frame(body, header):
    """``body`` with its length prefix of ``header`` bytes."""
    return struct.pack(">H" if header == 2 else ">I", len(body)) + body


def build_send_name(local_node, creation):
    name = local_node.encode("utf-8")
    return b"N" + struct.pack(">QIH", CLIENT_FLAGS, creation, len(name)) + name


def parse_status(body, node, local_node):
    """The status text of a ``recv_status`` frame; refusals raise the matching ``DistError``."""
    if body[:1] != b"s":
        raise ProtocolError("%s answered our name with an unexpected frame (type %r)" % (node, body[:1]))
    text = body[1:].decode("utf-8", "replace")
    if text == "not_allowed":
        raise NotAllowed("%s refused us (not_allowed): its net_kernel:allow list excludes %s or it lacks a "
                         "capability we need" % (node, local_node))
    if text == "nok":
        raise DistError("%s refused the connection (nok): it is connecting to us at the same time" % node,
                        "connection_closed")
    if text not in ("ok", "ok_simultaneous", "alive"):
        raise ProtocolError("%s answered our name with an unknown status %r" % (node, text))
    return text


def parse_challenge(body, node):
    """``(peer_flags, challenge, peer_name)`` of a ``recv_challenge`` frame dialled as ``node``."""
    if body[:1] != b"N" or len(body) < 19:
        raise ProtocolError("%s sent a malformed challenge" % node)
    peer_flags, challenge, dummy, nlen = struct.unpack(">QIIH", body[1:19])
    if len(body) < 19 + nlen:
        raise ProtocolError("%s sent a challenge whose %d-byte name runs past the end of its %d-byte frame"
                            % (node, nlen, len(body)))
    peer_name = body[19:19 + nlen].decode("utf-8", "replace")
    if peer_name != node:
        detail = ""
        if is_long_name(node) != is_long_name(peer_name):
            detail = " (and it uses %s names, while %s is a %s name)" % (
                "long" if is_long_name(peer_name) else "short", node, "long" if is_long_name(node) else "short")
        raise NameMismatch("the node dialled as %s calls itself %s%s; Erlang peers that dial %s are refused"
                           % (node, peer_name, detail, node), node, peer_name)
    return peer_flags, challenge, peer_name


def build_challenge_reply(peer_challenge, own_challenge, cookie):
    return b"r" + struct.pack(">I", own_challenge) + digest(peer_challenge, cookie)


def check_ack(body, own_challenge, cookie, node):
    """Raise unless ``body`` is the ``recv_challenge_ack`` that proves the node knows the cookie."""
    if body[:1] != b"a" or len(body) < 17:
        raise ProtocolError("%s sent a malformed challenge acknowledgement" % node)
    if body[1:17] != digest(own_challenge, cookie):
        raise CookieRejected("%s answered our challenge with a wrong digest: its cookie differs" % node)


def _looks_like_tls(data):
    """A TLS record header (alert, handshake, ...) rather than a distribution frame."""
    return len(data) >= 2 and 20 <= data[0] <= 23 and data[1] == 3


class Handshake:
    """The connecting side of the version 6 handshake, without I/O.

    ``start()`` gives the bytes to send first; ``feed(data)`` takes what arrived and gives what to send
    back (maybe nothing); once ``done``, ``peer_name``, ``peer_flags`` and ``rest`` (bytes that followed the
    ack) are set. ``closed()`` is the error to raise when the peer hangs up at the current step.
    Framing: 2-byte lengths over TCP, 4-byte lengths over TLS.
    """

    def __init__(self, node, cookie, local_node, creation, own_challenge, tls_used=False):
        self.node = node
        self.cookie = cookie
        self.local_node = local_node
        self.creation = creation
        self.own_challenge = own_challenge
        self.tls = tls_used
        self.header = 4 if tls_used else 2
        self.step = "status"
        self.buffer = b""
        self.peer_name = None
        self.peer_flags = None
        self.rest = b""

    @property
    def done(self):
        return self.step == "done"

    @property
    def replied(self):
        """Our challenge reply is out (what follows it is read by the node only if it accepts the reply)."""
        return self.step in ("ack", "done")

    def start(self):
        return frame(build_send_name(self.local_node, self.creation), self.header)

    def feed(self, data):
        self.buffer += data
        out = []
        while self.step != "done":
            span = split_frame(self.buffer, 0, self.header, HANDSHAKE_MAX_FRAME)
            if span is None:
                break
            body = self.buffer[span[0]:span[1]]
            self.buffer = self.buffer[span[1]:]
            if not body:
                raise ProtocolError("%s sent an empty handshake frame" % self.node)
            out.append(self._handle(body))
        if self.step == "done":
            self.rest, self.buffer = self.buffer, b""
        return b"".join(out)

    def _handle(self, body):
        if self.step == "status":
            if parse_status(body, self.node, self.local_node) == "alive":
                # Only an earlier connection of ours can hold our name; let the node replace it.
                self.step = "challenge"
                return frame(b"strue", self.header)
            self.step = "challenge"
            return b""
        if self.step == "challenge":
            self.peer_flags, challenge, self.peer_name = parse_challenge(body, self.node)
            self.step = "ack"
            return frame(build_challenge_reply(challenge, self.own_challenge, self.cookie), self.header)
        check_ack(body, self.own_challenge, self.cookie, self.node)
        self.step = "done"
        return b""

    def closed(self):
        """The ``DistError`` for a peer that hung up (or reset) before the handshake was done."""
        node = self.node
        if self.step == "status":
            if self.tls:
                return DistError("%s closed the TLS connection before answering our name: it may demand a client "
                                 "certificate from its CA (set tls_cert_file and tls_key_file)" % node, "tls_failed")
            if self.buffer and not _looks_like_tls(self.buffer):
                return ConnectionClosed("%s closed the connection in the middle of its status frame (%d bytes of "
                                        "it arrived)" % (node, len(self.buffer)), self.buffer)
            # A TLS listener reads our name frame as a broken ClientHello and hangs up without a status.
            return ClosedBeforeStatus("%s closed the connection before answering our name" % node, self.buffer)
        if self.step == "challenge":
            return ConnectionClosed("%s closed the connection before sending its challenge" % node, self.buffer)
        return CookieRejected("%s rejected the cookie: it hung up after our challenge reply, so its cookie differs "
                              "from the one given" % node)


def decode_frame(data):
    """``(control, message)`` of a pass-through frame body (``message`` None when absent)."""
    if data[0] != PASS_THROUGH:
        raise ProtocolError("the node sent a frame of type %d; only pass-through (112) was negotiated" % data[0])
    try:
        control, offset = erl_term.decode_from(data, 1)
        message = None
        if offset < len(data):
            message, offset = erl_term.decode_from(data, offset)
    except erl_term.TermError as exc:
        raise ProtocolError("the node sent a term that cannot be decoded: %s" % exc)
    if not isinstance(control, tuple) or not control or not isinstance(control[0], int):
        raise ProtocolError("the node sent a malformed control message")
    return control, message


def rpc_request(module, function, args):
    """The ``rex`` request of ``rpc:call(Node, module, function, args)``."""
    return (erl_term.Atom("call"), erl_term.Atom(module), erl_term.Atom(function), list(args), erl_term.Atom("user"))


def check_rpc_results(calls, results, peer_node):
    """Raise ``RpcError`` for the first ``{badrpc, Reason}`` among the results of ``calls``."""
    for (module, function, args), result in zip(calls, results):
        if isinstance(result, tuple) and len(result) == 2 and result[0] == "badrpc":
            text = format_term(result[1])
            raise RpcError("%s:%s/%d failed on %s: %s" % (module, function, len(args), peer_node, text), result[1])
    return results


class Session:
    """An authenticated connection after the handshake, without I/O.

    ``feed(data)`` buffers what arrived; ``next_message()`` returns the next ``(control, message)`` addressed to
    us or None until more data is needed, and queues the answers to ticks and UNLINK_ID on the way;
    ``take_outgoing()`` hands over the bytes to send. ``gen_calls(...)`` builds request frames,
    ``collect(message)`` files replies under their reference.

    With ``reuse_replies`` a ``{Ref, Reply}`` message whose Reply is byte for byte the same as one decoded
    before on this session gives back that decoded value instead of decoding it again: a poller asking
    ``erlang:nodes()`` ten times a second mostly gets the same answer. The values are then shared between
    messages, so callers must not modify them.
    """

    def __init__(self, local_node, peer_node, creation, ref_seed, max_frame=DEFAULT_MAX_FRAME, reuse_replies=False):
        self.local_node = local_node
        self.peer_node = peer_node
        self.creation = creation
        self.max_frame = max_frame
        self.pid = erl_term.Pid(erl_term.Atom(local_node), 1, 0, creation)
        self.ticks_answered = 0
        self.unlinks_acked = 0
        self.replies = {}
        self._ref_seed = ref_seed
        self._serial = 0
        self._buffer = bytearray()
        self._start = 0
        self._outgoing = []
        self._reuse = {} if reuse_replies else None

    def feed(self, data):
        if self._start and self._start == len(self._buffer):
            del self._buffer[:]
            self._start = 0
        self._buffer += data

    def wanted(self):
        """How many bytes the frame being buffered still lacks (at least 64 KiB, at most 1 MiB a read)."""
        missing = 0
        if len(self._buffer) - self._start >= 4:
            size = struct.unpack_from(">I", self._buffer, self._start)[0]
            missing = size + 4 - (len(self._buffer) - self._start)
        return max(65536, min(missing, 1 << 20))

    def take_outgoing(self):
        out = b"".join(self._outgoing)
        self._outgoing = []
        return out

    def next_message(self):
        while True:
            span = split_frame(self._buffer, self._start, 4, self.max_frame)
            if span is None:
                if self._start > 65536:  # keep the buffer from holding consumed frames
                    del self._buffer[:self._start]
                    self._start = 0
                return None
            body = bytes(self._buffer[span[0]:span[1]])
            self._start = span[1]
            if not body:
                self._outgoing.append(b"\x00\x00\x00\x00")
                self.ticks_answered += 1
                continue
            control, message = decode_frame(body) if self._reuse is None else self._decode_reusing(body)
            tag = control[0]
            if tag == CTRL_UNLINK_ID and len(control) == 4:
                # {35, Id, From, To} must be acknowledged as {36, Id, To, From}.
                ack = bytes([PASS_THROUGH]) + erl_term.encode((CTRL_UNLINK_ID_ACK, control[1], control[3], control[2]))
                self._outgoing.append(frame(ack, 4))
                self.unlinks_acked += 1
                continue
            if tag in (CTRL_SEND, CTRL_SEND_SENDER, CTRL_REG_SEND):
                return control, message
            # Links, monitors and exits aimed at our pid need no answer from a client that makes none.

    def _decode_reusing(self, data):
        """``decode_frame`` for a session with ``reuse_replies``: a known Reply of ``{Ref, Reply}`` is not decoded."""
        if data[0] != PASS_THROUGH:
            return decode_frame(data)
        try:
            control, offset = erl_term.decode_from(data, 1)
            if data[offset:offset + 3] != REPLY_PREFIX:
                message = erl_term.decode_from(data, offset)[0] if offset < len(data) else None
                return self._checked(control), message
            if len(data) - offset > MAX_REUSED_REPLY:  # large answers are rare: decode them as they come
                return self._checked(control), erl_term.decode_from(data, offset)[0]
            tag, start = erl_term.decode_untagged(data, offset + 3)
            reply_bytes = data[start:]
            reply = self._reuse.get(reply_bytes, _UNKNOWN)
            if reply is _UNKNOWN:
                reply = erl_term.decode_untagged(data, start)[0]
                if len(self._reuse) >= MAX_REUSED_REPLIES:
                    self._reuse.clear()
                self._reuse[reply_bytes] = reply
        except erl_term.TermError as exc:
            raise ProtocolError("the node sent a term that cannot be decoded: %s" % exc)
        return self._checked(control), (tag, reply)

    @staticmethod
    def _checked(control):
        if not isinstance(control, tuple) or not control or not isinstance(control[0], int):
            raise ProtocolError("the node sent a malformed control message")
        return control

    def make_ref(self, serial=None):
        """A new reference; with ``serial`` the one of that number (the same on every session of one name)."""
        if serial is None:
            self._serial += 1
            serial = self._serial
        # The first word holds 18 bits (as in Erlang's own references); higher serials vary the second.
        return erl_term.Reference(erl_term.Atom(self.local_node), self.creation,
                                  (serial & 0x3FFFF, (self._ref_seed[0] ^ (serial >> 18)) & 0xFFFFFFFF,
                                   self._ref_seed[1]))

    def reg_send(self, name, message):
        """The frame that sends ``message`` to the process registered as ``name`` on the peer."""
        control = (CTRL_REG_SEND, self.pid, erl_term.Atom(""), erl_term.Atom(name))
        return frame(bytes([PASS_THROUGH]) + erl_term.encode(control) + erl_term.encode(message), 4)

    def gen_calls(self, name, requests, serial=None):
        """Frames of gen_server calls to registered ``name``: ``(bytes, [reference, ...])``.

        With ``serial`` the references are numbered from it, so that every session of one local name sends the
        same bytes for the same calls (encoded once, sent to many nodes).
        """
        frames, refs = [], []
        for index, request in enumerate(requests):
            ref = self.make_ref(None if serial is None else serial + index)
            frames.append(self.reg_send(name, (erl_term.Atom("$gen_call"), (self.pid, ref), request)))
            refs.append(ref)
        return b"".join(frames), refs

    def collect(self, message):
        """File a ``{Ref, Reply}`` message under its reference; anything else is ignored."""
        if isinstance(message, tuple) and len(message) == 2 and isinstance(message[0], erl_term.Reference):
            self.replies[message[0]] = message[1]

    def has_replies(self, refs):
        return all(ref in self.replies for ref in refs)

    def pop_replies(self, refs):
        return [self.replies.pop(ref) for ref in refs]


# ------------------------------------------------------------------------------------- blocking connection
class DistConnection:
    """An established, authenticated connection to one node (blocking sockets over a ``Session``).

    ``pid`` is the client's own process id (what the node sees as the caller). Calls are serialised by a
    lock. After any ``DistError`` the connection is in an unknown state: close it.
    """

    def __init__(self, sock, local_node, peer_node, peer_flags, creation, tls_used, max_frame=DEFAULT_MAX_FRAME,
                 ref_seed=None, received=b""):
        self.sock = sock
        self.local_node = local_node
        self.peer_node = peer_node
        self.peer_flags = peer_flags
        self.creation = creation
        self.tls = tls_used
        self.max_frame = max_frame
        self.session = Session(local_node, peer_node, creation, ref_seed or Entropy().ref_seed, max_frame)
        self.session.feed(received)
        self.pid = self.session.pid
        self._lock = allocate_lock()

    @property
    def ticks_answered(self):
        return self.session.ticks_answered

    @property
    def unlinks_acked(self):
        return self.session.unlinks_acked

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def reg_send(self, name, message, deadline):
        """Send ``message`` to the process registered as ``name`` on the peer."""
        send_all(self.sock, self.session.reg_send(name, message), deadline)

    def receive(self, deadline):
        """Next message addressed to us as ``(control, message)``; ticks are answered on the way."""
        session = self.session
        while True:
            received = session.next_message()
            outgoing = session.take_outgoing()
            if outgoing:
                send_all(self.sock, outgoing, deadline)
            if received is not None:
                return received
            session.feed(recv_some(self.sock, deadline, session.wanted()))

    def _call(self, name, requests, deadline):
        data, refs = self.session.gen_calls(name, requests)
        send_all(self.sock, data, deadline)
        while not self.session.has_replies(refs):
            self.session.collect(self.receive(deadline)[1])
        return self.session.pop_replies(refs)

    def rpc_many(self, calls, timeout=5.0, deadline=None):
        """Run ``(module, function, args)`` calls through ``rex``, all sent before the first reply is read."""
        deadline = deadline or Deadline(timeout)
        with self._lock:
            results = self._call("rex", [rpc_request(*call) for call in calls], deadline)
        return check_rpc_results(calls, results, self.peer_node)

    def rpc(self, module, function, args, timeout=5.0, deadline=None):
        """``rpc:call(Node, module, function, args)`` as seen from a hidden node."""
        return self.rpc_many([(module, function, args)], timeout, deadline)[0]

    def ping(self, timeout=5.0, deadline=None):
        deadline = deadline or Deadline(timeout)
        with self._lock:
            request = (erl_term.Atom("is_auth"), erl_term.Atom(self.local_node))
            return self._call("net_kernel", [request], deadline)[0] == "yes"


def run_handshake(sock, node, cookie, deadline, local_node, creation, tls_used, own_challenge):
    """Drive a ``Handshake`` over a blocking socket; returns it, done."""
    state = Handshake(node, cookie, local_node, creation, own_challenge, tls_used)
    send_all(sock, state.start(), deadline)
    while not state.done:
        try:
            data = recv_some(sock, deadline)
        except ConnectionClosed:
            raise state.closed()
        reply = state.feed(data)
        if reply:
            send_all(sock, reply, deadline)
    return state


def handshake(sock, node, cookie, deadline, local_node, creation, tls_used, own_challenge=None):
    """Run the version 6 handshake as the connecting side; returns ``(peer_name, peer_flags)``."""
    if own_challenge is None:
        own_challenge = Entropy().challenge
    state = run_handshake(sock, node, cookie, deadline, local_node, creation, tls_used, own_challenge)
    return state.peer_name, state.peer_flags


def connect(node, cookie, timeout=5.0, deadline=None, epmd_port=EPMD_DEFAULT_PORT, dist_port=None, tls=None,
            family=None, local_node=None, max_frame=DEFAULT_MAX_FRAME):
    """Connect to ``node`` as a hidden node; see the module docstring."""
    alive, host = split_node(node)
    if not isinstance(cookie, str):
        raise ValueError("cookie must be a string")
    deadline = deadline or Deadline(timeout)
    if dist_port is None:
        try:
            dist_port = port_please(host, alive, deadline, epmd_port, family).port
        except NotRegistered as exc:
            raise NotRegistered("EPMD on %s has no node named %s: %s is not running or registered another name"
                                % (host, alive, node), exc.names)
    entropy = Entropy()
    local_node = local_node or local_name_for(node, entropy)
    sock = open_tcp(host, dist_port, deadline, family, "dist_port_unreachable")
    try:
        if tls is not None:
            sock = _wrap_tls(sock, host, node, tls, deadline)
        state = run_handshake(sock, node, cookie, deadline, local_node, entropy.creation, tls is not None,
                              entropy.challenge)
    except ClosedBeforeStatus as exc:
        sock.close()
        if tls is None and speaks_tls(host, dist_port, deadline, family):
            raise tls_required(node)
        raise exc
    except BaseException:
        sock.close()
        raise
    return DistConnection(sock, local_node, state.peer_name, state.peer_flags, entropy.creation, tls is not None,
                          max_frame, entropy.ref_seed, state.rest)


def tls_required(node):
    return DistError("%s uses TLS distribution (-proto_dist inet_tls): set tls_ca_file (and a client "
                     "certificate if the node demands one)" % node, "tls_required")


def speaks_tls(host, port, deadline, family):
    """Whether host:port completes a TLS handshake (certificates unchecked: this only tells the protocol)."""
    import ssl  # a probe after a hang-up on our name: rare, so ssl stays out of the common path
    probe = TlsOptions(verify=False)
    # A real TLS listener answers a ClientHello at once; do not let a silent peer eat the whole budget.
    deadline = Deadline(min(deadline.remaining(), 0.5))
    try:
        sock = open_tcp(host, port, deadline, family, "dist_port_unreachable")
    except DistError:
        return False
    try:
        sock = probe.context().wrap_socket(sock)
        return True
    except ssl.SSLError as exc:
        # An alert about our (missing) certificate still proves the peer speaks TLS.
        return "ALERT" in str(exc).upper()
    except (OSError, DistError):
        return False
    finally:
        sock.close()


def tls_server_name(tls, host):
    """The name the node's certificate must carry: ``tls.server_name`` or the host part of its node name."""
    return tls.server_name or host.strip("[]")


def tls_failure(exc, node, tls, server_name):
    """The ``tls_failed`` DistError for an ``ssl.SSLError`` (or ``OSError``) met while talking TLS to ``node``."""
    import ssl  # only TLS users pay for loading ssl (and OpenSSL)
    if not isinstance(exc, ssl.SSLError):
        return DistError("TLS handshake with %s failed: the node closed the connection (%s); it may not use TLS "
                         "distribution or wants a client certificate" % (node, exc), "tls_failed")
    detail = getattr(exc, "reason", None) or str(exc)
    hint = ""
    if ("HANDSHAKE_FAILURE" in detail or "CERTIFICATE_REQUIRED" in detail) and not tls.cert_file:
        hint = " (the node may demand a client certificate: set tls_cert_file and tls_key_file)"
    elif "CERTIFICATE_VERIFY_FAILED" in detail:
        hint = " (the node's certificate is not signed by tls_ca_file or does not name %s)" % server_name
    return DistError("TLS handshake with %s failed: %s%s" % (node, detail, hint), "tls_failed")


def _wrap_tls(sock, host, node, tls, deadline):
    import ssl  # only TLS users pay for loading ssl (and OpenSSL)
    try:
        ctx = tls.context()
    except ValueError as exc:
        raise DistError(str(exc), "tls_failed")
    server_name = tls_server_name(tls, host)
    try:
        sock.settimeout(deadline.remaining())
        return ctx.wrap_socket(sock, server_hostname=server_name if tls.verify else None)
    except _socket.timeout:
        raise DistTimeout("the TLS handshake with %s timed out" % node)
    except (ssl.SSLError, OSError) as exc:
        raise tls_failure(exc, node, tls, server_name)
