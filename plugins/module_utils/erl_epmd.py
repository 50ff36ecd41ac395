# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bottom layer of the Erlang distribution client: deadline-bounded TCP and EPMD.

Public API
==========
``Deadline(seconds)``
    One overall time budget. ``remaining()`` gives the seconds left and raises
    ``DistTimeout`` once it is spent; every socket operation of the client takes
    its timeout from the one deadline of the operation it belongs to.
``open_tcp(host, port, deadline, family=None, reason=...)``
    Resolve and connect (every address in turn); returns a socket.
``recv_some(sock, deadline, size=65536)``
    One read of at most ``size`` bytes; raises ``ConnectionClosed`` at end of stream, ``DistTimeout``.
``names(host, deadline, port=4369, family=None)``
    EPMD NAMES: ``{"alive": port, ...}``.
``port_please(host, alive, deadline, port=4369, family=None)``
    EPMD PORT_PLEASE2: a ``NodePort`` (port, node_type, protocol, highest, lowest, name, extra);
    raises ``NotRegistered`` when EPMD answers but does not know the name.
``request(body)``, ``parse_names(data)``, ``parse_port2(data, alive)``, ``port2_complete(data)``
    The sans-IO part (a framed request; parsing the answers), also used by ``erl_mesh``'s driver.

Errors all derive from ``DistError`` and carry a diagnosis ``reason`` code
(``epmd_unreachable``, ``not_registered``, ``timeout``, ...) that the mesh layer reports.
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import collections
# The C module under socket.py: socket.py wraps its constants in enums, and importing enum costs a fresh
# process several milliseconds; the client needs nothing that the wrapper adds.
import _socket
import struct
import time

EPMD_DEFAULT_PORT = 4369

NAMES_REQ = 110
PORT_PLEASE2_REQ = 122
PORT2_RESP = 119

# EPMD answers NAMES with one short line per node; a reply far larger than any real
# registry is a broken or hostile peer.
MAX_EPMD_REPLY = 1024 * 1024

NodePort = collections.namedtuple("NodePort", "port node_type protocol highest lowest name extra")


class DistError(Exception):
    """Any failure of the distribution client; ``reason`` is a diagnosis code."""

    reason = "dist_error"

    def __init__(self, message, reason=None):
        super(DistError, self).__init__(message)
        if reason is not None:
            self.reason = reason


class DistTimeout(DistError):
    reason = "timeout"


class ConnectionClosed(DistError):
    """The peer closed the connection (``received`` bytes of an incomplete read had arrived)."""

    reason = "connection_closed"

    def __init__(self, message, received=b"", reason=None):
        super(ConnectionClosed, self).__init__(message, reason)
        self.received = received


class EpmdUnreachable(DistError):
    reason = "epmd_unreachable"


class NotRegistered(DistError):
    """EPMD answered but has no such name; ``names`` lists the names it has (None if unknown)."""

    reason = "not_registered"

    def __init__(self, message, names=None):
        super(NotRegistered, self).__init__(message)
        self.names = names


class Deadline:
    """An absolute point in time derived from a budget in seconds."""

    def __init__(self, seconds):
        self.seconds = float(seconds)
        self.end = time.monotonic() + self.seconds

    def remaining(self):
        left = self.end - time.monotonic()
        if left <= 0:
            raise DistTimeout("the %.3g s time budget ran out" % self.seconds)
        return left

    def expired(self):
        return time.monotonic() >= self.end


def _families(family):
    if family in (None, "auto", "any"):
        return _socket.AF_UNSPEC
    if family in ("inet", "ipv4", _socket.AF_INET):
        return _socket.AF_INET
    if family in ("inet6", "ipv6", _socket.AF_INET6):
        return _socket.AF_INET6
    raise ValueError("address family must be one of auto, inet, inet6, not %r" % (family,))


def resolve(host, port, deadline, family=None, reason="epmd_unreachable"):
    """getaddrinfo for TCP; a name that does not resolve is reported under ``reason``."""
    deadline.remaining()
    # Bracketed IPv6 literals are how people write them in URLs and node names.
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    # An ASCII name goes as bytes: a str is run through the idna codec, whose import (stringprep,
    # unicodedata, re) costs a fresh process about 2 ms.
    name = host.encode("ascii") if host.isascii() else host
    try:
        return _socket.getaddrinfo(name, port, _families(family), _socket.SOCK_STREAM, _socket.IPPROTO_TCP)
    except _socket.gaierror as exc:
        raise DistError("cannot resolve host %s: %s" % (host, exc), reason)


def open_tcp(host, port, deadline, family=None, reason="epmd_unreachable"):
    """Connect to host:port trying every address; failures are reported under ``reason``."""
    last = None
    for fam, kind, proto, _canon, addr in resolve(host, port, deadline, family, reason):
        sock = _socket.socket(fam, kind, proto)
        try:
            sock.settimeout(deadline.remaining())
            sock.connect(addr)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            return sock
        except _socket.timeout:
            sock.close()
            raise DistTimeout("connecting to %s port %d timed out" % (host, port))
        except DistTimeout:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last = exc
    raise DistError("cannot connect to %s port %d: %s" % (host, port, getattr(last, "strerror", None) or last), reason)


def recv_some(sock, deadline, size=65536):
    """One read of up to ``size`` bytes before the deadline; never returns empty."""
    sock.settimeout(deadline.remaining())
    try:
        chunk = sock.recv(size)
    except _socket.timeout:
        raise DistTimeout("no answer from the peer within the time budget")
    except OSError as exc:
        raise ConnectionClosed("the peer reset the connection: %s" % exc)
    if not chunk:
        raise ConnectionClosed("the peer closed the connection")
    return chunk


def send_all(sock, data, deadline):
    sock.settimeout(deadline.remaining())
    try:
        sock.sendall(data)
    except _socket.timeout:
        raise DistTimeout("sending to the peer timed out")
    except OSError as exc:
        raise ConnectionClosed("the peer closed the connection while we were sending: %s" % exc)


def request(body):
    """An EPMD request with its 2-byte length."""
    return struct.pack(">H", len(body)) + body


def _epmd_request(host, body, deadline, port, family):
    """Send one EPMD request and read the whole answer (EPMD closes after answering)."""
    sock = open_tcp(host, port, deadline, family, "epmd_unreachable")
    try:
        send_all(sock, request(body), deadline)
        chunks = []
        total = 0
        while True:
            sock.settimeout(deadline.remaining())
            try:
                chunk = sock.recv(65536)
            except _socket.timeout:
                raise DistTimeout("EPMD on %s port %d did not answer in time" % (host, port))
            except OSError as exc:
                raise EpmdUnreachable("EPMD on %s port %d reset the connection: %s" % (host, port, exc))
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_EPMD_REPLY:
                raise EpmdUnreachable("EPMD on %s port %d sent an oversized answer" % (host, port))
            chunks.append(chunk)
            # PORT2_RESP has a known length: stop as soon as it is complete.
            if body[0] == PORT_PLEASE2_REQ and port2_complete(b"".join(chunks)):
                break
        return b"".join(chunks)
    finally:
        sock.close()


def port2_complete(data):
    """Whether ``data`` holds a whole PORT2_RESP (EPMD may keep the connection open after it)."""
    if len(data) >= 2 and data[1] != 0:
        return True
    if len(data) < 14:
        return False
    nlen = struct.unpack(">H", data[10:12])[0]
    if len(data) < 14 + nlen:
        return False
    elen = struct.unpack(">H", data[12 + nlen:14 + nlen])[0]
    return len(data) >= 14 + nlen + elen


def parse_names(data):
    """Parse a NAMES answer into ``{alive: port}``."""
    if len(data) < 4:
        raise EpmdUnreachable("EPMD sent a truncated NAMES answer")
    registered = {}
    for line in data[4:].decode("utf-8", "replace").splitlines():
        parts = line.split()
        # "name <alive> at port <port>"
        if len(parts) == 5 and parts[0] == "name" and parts[2] == "at" and parts[3] == "port" and parts[4].isdigit():
            port = int(parts[4])
            if 0 < port < 65536:  # anything else is not a port a node can listen on
                registered[parts[1]] = port
    return registered


def parse_port2(data, alive):
    """Parse a PORT2_RESP; raises ``NotRegistered`` for a non-zero result."""
    if len(data) < 2 or data[0] != PORT2_RESP:
        raise EpmdUnreachable("EPMD sent an unexpected answer to PORT_PLEASE2 for %s" % alive)
    if data[1] != 0:
        raise NotRegistered("EPMD has no node named %s" % alive)
    if len(data) < 14:
        raise EpmdUnreachable("EPMD sent a truncated PORT_PLEASE2 answer for %s" % alive)
    port, node_type, protocol, highest, lowest, nlen = struct.unpack(">HBBHHH", data[2:12])
    if port == 0:
        raise EpmdUnreachable("EPMD gave port 0 for %s, which no node listens on" % alive)
    name = data[12:12 + nlen]
    extra = b""
    if len(data) >= 14 + nlen:
        elen = struct.unpack(">H", data[12 + nlen:14 + nlen])[0]
        extra = data[14 + nlen:14 + nlen + elen]
    return NodePort(port, node_type, protocol, highest, lowest, name.decode("utf-8", "replace"), extra)


def names(host, deadline, port=EPMD_DEFAULT_PORT, family=None):
    """Names registered in the EPMD of ``host`` with their distribution ports."""
    return parse_names(_epmd_request(host, bytes([NAMES_REQ]), deadline, port, family))


def port_please(host, alive, deadline, port=EPMD_DEFAULT_PORT, family=None):
    """Distribution port of node ``alive`` from the EPMD of ``host``."""
    reply = _epmd_request(host, bytes([PORT_PLEASE2_REQ]) + alive.encode("utf-8"), deadline, port, family)
    return parse_port2(reply, alive)
