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

import hashlib
import os
import re
import socket
import ssl
import struct
import threading

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
    recv_exact,
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

_ALIVE_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_\-.:\[\]%]+$")


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
    if not _ALIVE_RE.match(alive):
        raise ValueError("%r is not a node name: the part before @ may hold only letters, digits, _ and -" % (name,))
    if not host or not _HOST_RE.match(host):
        raise ValueError("%r is not a node name: the host after @ is empty or holds characters a host name cannot" % (name,))
    return alive, host


def is_long_name(name):
    """Long names carry a fully qualified host or an address (a dot or a colon in the host)."""
    host = name.split("@", 1)[-1]
    return "." in host or ":" in host


def digest(challenge, cookie):
    return hashlib.md5(cookie.encode("utf-8") + str(challenge & 0xFFFFFFFF).encode("ascii")).digest()


def _local_name_for(node):
    """A unique hidden-node name of the same name type as the dialled node (short and long names do not mix)."""
    suffix = os.urandom(6).hex()
    host = node.split("@", 1)[1]
    if is_long_name(node):
        local_host = "127.0.0.1" if ":" not in host else "::1"
    else:
        local_host = socket.gethostname().split(".")[0] or "localhost"
    return "beamops_%s@%s" % (suffix, local_host)


class DistConnection:
    """An established, authenticated connection to one node.

    ``pid`` is the client's own process id (what the node sees as the caller). Calls are serialised by a
    lock. After any ``DistError`` the connection is in an unknown state: close it.
    """

    def __init__(self, sock, local_node, peer_node, peer_flags, creation, tls_used, max_frame=DEFAULT_MAX_FRAME):
        self.sock = sock
        self.local_node = local_node
        self.peer_node = peer_node
        self.peer_flags = peer_flags
        self.creation = creation
        self.tls = tls_used
        self.max_frame = max_frame
        self.ticks_answered = 0
        self.unlinks_acked = 0
        self._serial = 0
        self.pid = erl_term.Pid(erl_term.Atom(local_node), 1, 0, creation)
        self._ref_base = struct.unpack(">II", os.urandom(8))
        self._lock = threading.Lock()

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _make_ref(self):
        self._serial += 1
        return erl_term.Reference(erl_term.Atom(self.local_node), self.creation,
                                  (self._serial & 0x3FFFF, self._ref_base[0], self._ref_base[1]))

    def _send_frame(self, control, message, deadline):
        payload = bytes([PASS_THROUGH]) + erl_term.encode(control) + erl_term.encode(message)
        send_all(self.sock, struct.pack(">I", len(payload)) + payload, deadline)

    def reg_send(self, name, message, deadline):
        """Send ``message`` to the process registered as ``name`` on the peer."""
        control = (CTRL_REG_SEND, self.pid, erl_term.Atom(""), erl_term.Atom(name))
        self._send_frame(control, message, deadline)

    def receive(self, deadline):
        """Next message addressed to us as ``(control, message)``; ticks are answered on the way."""
        while True:
            size = struct.unpack(">I", recv_exact(self.sock, 4, deadline))[0]
            if size == 0:
                send_all(self.sock, b"\x00\x00\x00\x00", deadline)
                self.ticks_answered += 1
                continue
            if size > self.max_frame:
                raise ProtocolError("the node sent a %d-byte frame, more than the %d allowed" % (size, self.max_frame))
            data = recv_exact(self.sock, size, deadline)
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
            tag = control[0]
            if tag == CTRL_UNLINK_ID and len(control) == 4:
                # {35, Id, From, To} must be acknowledged as {36, Id, To, From}.
                ack = (CTRL_UNLINK_ID_ACK, control[1], control[3], control[2])
                payload = bytes([PASS_THROUGH]) + erl_term.encode(ack)
                send_all(self.sock, struct.pack(">I", len(payload)) + payload, deadline)
                self.unlinks_acked += 1
                continue
            if tag in (CTRL_SEND, CTRL_SEND_SENDER, CTRL_REG_SEND):
                return control, message
            # Links, monitors and exits aimed at our pid need no answer from a client that makes none.

    def _gen_call(self, name, request, deadline):
        """Send a gen_server call to registered ``name``; returns the reference to await."""
        ref = self._make_ref()
        self.reg_send(name, (erl_term.Atom("$gen_call"), (self.pid, ref), request), deadline)
        return ref

    def _await(self, refs, deadline):
        pending = dict((ref, None) for ref in refs)
        replies = {}
        while len(replies) < len(pending):
            _control, message = self.receive(deadline)
            if (isinstance(message, tuple) and len(message) == 2 and isinstance(message[0], erl_term.Reference)
                    and message[0] in pending):
                replies[message[0]] = message[1]
        return [replies[ref] for ref in refs]

    def rpc_many(self, calls, timeout=5.0, deadline=None):
        """Run ``(module, function, args)`` calls through ``rex``, all sent before the first reply is read."""
        deadline = deadline or Deadline(timeout)
        with self._lock:
            refs = []
            for module, function, args in calls:
                request = (erl_term.Atom("call"), erl_term.Atom(module), erl_term.Atom(function), list(args),
                           erl_term.Atom("user"))
                refs.append(self._gen_call("rex", request, deadline))
            results = self._await(refs, deadline)
        for (module, function, args), result in zip(calls, results):
            if isinstance(result, tuple) and len(result) == 2 and result[0] == "badrpc":
                text = format_term(result[1])
                raise RpcError("%s:%s/%d failed on %s: %s" % (module, function, len(args), self.peer_node, text),
                               result[1])
        return results

    def rpc(self, module, function, args, timeout=5.0, deadline=None):
        """``rpc:call(Node, module, function, args)`` as seen from a hidden node."""
        return self.rpc_many([(module, function, args)], timeout, deadline)[0]

    def ping(self, timeout=5.0, deadline=None):
        deadline = deadline or Deadline(timeout)
        with self._lock:
            ref = self._gen_call("net_kernel", (erl_term.Atom("is_auth"), erl_term.Atom(self.local_node)), deadline)
            return self._await([ref], deadline)[0] == "yes"


class _Framing:
    """Handshake frames: 2-byte lengths over TCP, 4-byte lengths over TLS."""

    def __init__(self, sock, header, deadline):
        self.sock = sock
        self.header = header
        self.deadline = deadline

    def send(self, data):
        fmt = ">H" if self.header == 2 else ">I"
        send_all(self.sock, struct.pack(fmt, len(data)) + data, self.deadline)

    def recv(self):
        raw = recv_exact(self.sock, self.header, self.deadline)
        size = struct.unpack(">H" if self.header == 2 else ">I", raw)[0]
        if size == 0 or size > HANDSHAKE_MAX_FRAME:
            raise ProtocolError("bad handshake frame length %d" % size, "protocol_error")
        return recv_exact(self.sock, size, self.deadline)


def handshake(sock, node, cookie, deadline, local_node, creation, tls_used):
    """Run the version 6 handshake as the connecting side; returns ``(peer_name, peer_flags)``."""
    framing = _Framing(sock, 4 if tls_used else 2, deadline)
    name = local_node.encode("utf-8")
    framing.send(b"N" + struct.pack(">QIH", CLIENT_FLAGS, creation, len(name)) + name)
    try:
        status = framing.recv()
    except ConnectionClosed as exc:
        if tls_used:
            raise DistError("%s closed the TLS connection before answering our name: it may demand a client "
                            "certificate from its CA (set tls_cert_file and tls_key_file)" % node, "tls_failed")
        # A TLS listener reads our name frame as a broken ClientHello and hangs up without a status.
        raise ClosedBeforeStatus("%s closed the connection before answering our name" % node, exc.received)
    if status[:1] != b"s":
        raise ProtocolError("%s answered our name with an unexpected frame (type %r)" % (node, status[:1]))
    text = status[1:].decode("utf-8", "replace")
    if text == "alive":
        # Only an earlier connection of ours can hold our name; let the node replace it.
        framing.send(b"strue")
    elif text == "not_allowed":
        raise NotAllowed("%s refused us (not_allowed): its net_kernel:allow list excludes %s or it lacks a "
                         "capability we need" % (node, local_node))
    elif text == "nok":
        raise DistError("%s refused the connection (nok): it is connecting to us at the same time" % node,
                        "connection_closed")
    elif text not in ("ok", "ok_simultaneous"):
        raise ProtocolError("%s answered our name with an unknown status %r" % (node, text))
    challenge_frame = framing.recv()
    if challenge_frame[:1] != b"N" or len(challenge_frame) < 19:
        raise ProtocolError("%s sent a malformed challenge" % node)
    peer_flags, challenge, _peer_creation, nlen = struct.unpack(">QIIH", challenge_frame[1:19])
    peer_name = challenge_frame[19:19 + nlen].decode("utf-8", "replace")
    if peer_name != node:
        detail = ""
        if is_long_name(node) != is_long_name(peer_name):
            detail = " (and it uses %s names, while %s is a %s name)" % (
                "long" if is_long_name(peer_name) else "short", node, "long" if is_long_name(node) else "short")
        raise NameMismatch("the node dialled as %s calls itself %s%s; Erlang peers that dial %s are refused"
                           % (node, peer_name, detail, node), node, peer_name)
    own_challenge = struct.unpack(">I", os.urandom(4))[0]
    framing.send(b"r" + struct.pack(">I", own_challenge) + digest(challenge, cookie))
    try:
        ack = framing.recv()
    except ConnectionClosed:
        raise CookieRejected("%s rejected the cookie: it hung up after our challenge reply, so its cookie differs "
                             "from the one given" % node)
    if ack[:1] != b"a" or len(ack) < 17:
        raise ProtocolError("%s sent a malformed challenge acknowledgement" % node)
    if ack[1:17] != digest(own_challenge, cookie):
        raise CookieRejected("%s answered our challenge with a wrong digest: its cookie differs" % node)
    return peer_name, peer_flags


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
    local_node = local_node or _local_name_for(node)
    creation = struct.unpack(">I", os.urandom(4))[0] or 1
    sock = open_tcp(host, dist_port, deadline, family, "dist_port_unreachable")
    try:
        if tls is not None:
            sock = _wrap_tls(sock, host, node, tls, deadline)
        peer_name, peer_flags = handshake(sock, node, cookie, deadline, local_node, creation, tls is not None)
    except ClosedBeforeStatus as exc:
        sock.close()
        if tls is None and _speaks_tls(host, dist_port, deadline, family):
            raise DistError("%s uses TLS distribution (-proto_dist inet_tls): set tls_ca_file (and a client "
                            "certificate if the node demands one)" % node, "tls_required")
        raise exc
    except BaseException:
        sock.close()
        raise
    return DistConnection(sock, local_node, peer_name, peer_flags, creation, tls is not None, max_frame)


def _speaks_tls(host, port, deadline, family):
    """Whether host:port completes a TLS handshake (certificates unchecked: this only tells the protocol)."""
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


def _wrap_tls(sock, host, node, tls, deadline):
    try:
        ctx = tls.context()
    except ValueError as exc:
        raise DistError(str(exc), "tls_failed")
    server_name = tls.server_name or host.strip("[]")
    try:
        sock.settimeout(deadline.remaining())
        return ctx.wrap_socket(sock, server_hostname=server_name if tls.verify else None)
    except socket.timeout:
        raise DistTimeout("the TLS handshake with %s timed out" % node)
    except ssl.SSLError as exc:
        detail = getattr(exc, "reason", None) or str(exc)
        hint = ""
        if "HANDSHAKE_FAILURE" in detail and not tls.cert_file:
            hint = " (the node may demand a client certificate: set tls_cert_file and tls_key_file)"
        elif "CERTIFICATE_VERIFY_FAILED" in detail:
            hint = " (the node's certificate is not signed by tls_ca_file or does not name %s)" % server_name
        raise DistError("TLS handshake with %s failed: %s%s" % (node, detail, hint), "tls_failed")
    except OSError as exc:
        raise DistError("TLS handshake with %s failed: the node closed the connection (%s); it may not use TLS "
                        "distribution or wants a client certificate" % (node, exc), "tls_failed")
