"""Scriptable fake EPMD and fake Erlang distribution peer, on 127.0.0.1 only.

A real BEAM node never sends a 4 GiB frame header, drips its handshake one byte at a time or answers an RPC with a
zlib bomb, so the client's defences against such peers can only be exercised by a fake one: this is that fake, and
the tests that use it say so. It speaks just enough of the protocol (EPMD NAMES and PORT_PLEASE2, the version-6
handshake from the accepting side, pass-through frames, `rex` calls) to walk the client to the exact point where a
behaviour starts misbehaving. Its tiny term reader and writer are written independently of the project's codec on
purpose, so a codec bug cannot hide in both.

    with FakeEpmd({"a": 4370}, behaviour="ok") as epmd:          # epmd.port is the listening port
    with FakeNode("a@127.0.0.1", "cookie", behaviour="bad_digest") as node:   # node.port, node.sessions

`DIST_BEHAVIOURS` and `EPMD_BEHAVIOURS` list every behaviour with one sentence on what it does.
"""
import hashlib
import random
import socket
import struct
import threading
import time
import zlib

# Flags a real OTP 25 node offers (every capability but the atom cache, fragments and NAME_ME).
PEER_FLAGS = 0x1 | 0x4 | 0x8 | 0x10 | 0x20 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800 | 0x1000 | 0x4000 | 0x10000 \
    | 0x20000 | 0x40000 | 0x80000 | 0x100000 | 0x400000 | 0x1000000 | 0x2000000 | 0x4000000 | (1 << 32) | (1 << 34) \
    | (1 << 35)
PEER_CREATION = 0x5EED0001


class PeerClosed(Exception):
    """The client went away; the fake just ends that session."""


# ---------------------------------------------------------------- minimal external term format reader / writer
class Atom(str):
    """An atom, as opposed to a string, in terms the fake reads or writes."""


class Raw(bytes):
    """Already-encoded term bytes (without the 131 version byte), e.g. a pid or ref copied from the client."""


def encode(term):
    """Encode a small subset of terms (atoms, ints, tuples, lists, binaries, Raw) without the version byte."""
    if isinstance(term, Raw):
        return bytes(term)
    if isinstance(term, Atom):
        data = term.encode("utf-8")
        if len(data) < 256:
            return bytes([119, len(data)]) + data
        return bytes([118]) + struct.pack(">H", len(data)) + data
    if isinstance(term, bool):
        return encode(Atom("true" if term else "false"))
    if isinstance(term, int):
        if 0 <= term < 256:
            return bytes([97, term])
        return bytes([98]) + struct.pack(">i", term)
    if isinstance(term, tuple):
        head = bytes([104, len(term)]) if len(term) < 256 else bytes([105]) + struct.pack(">I", len(term))
        return head + b"".join(encode(item) for item in term)
    if isinstance(term, list):
        if not term:
            return bytes([106])
        return bytes([108]) + struct.pack(">I", len(term)) + b"".join(encode(item) for item in term) + bytes([106])
    if isinstance(term, (bytes, bytearray)):
        return bytes([109]) + struct.pack(">I", len(term)) + bytes(term)
    raise TypeError("fakepeer cannot encode %r" % (term,))


def _skip_atom(data, pos):
    tag = data[pos]
    if tag in (119, 115):
        return pos + 2 + data[pos + 1]
    if tag in (118, 100):
        return pos + 3 + struct.unpack_from(">H", data, pos + 1)[0]
    raise ValueError("expected an atom at %d, found tag %d" % (pos, tag))


def decode(data, pos=0):
    """Read one term at `pos`; returns (term, next_pos). Pids, refs and ports come back as Raw slices."""
    tag = data[pos]
    if tag in (119, 115, 118, 100):
        end = _skip_atom(data, pos)
        start = pos + (2 if tag in (119, 115) else 3)
        return Atom(data[start:end].decode("utf-8" if tag in (119, 118) else "latin-1")), end
    if tag == 97:
        return data[pos + 1], pos + 2
    if tag == 98:
        return struct.unpack_from(">i", data, pos + 1)[0], pos + 5
    if tag in (110, 111):
        count, sign_at = (data[pos + 1], pos + 2) if tag == 110 else (struct.unpack_from(">I", data, pos + 1)[0], pos + 5)
        value = int.from_bytes(data[sign_at + 1:sign_at + 1 + count], "little")
        return (-value if data[sign_at] else value), sign_at + 1 + count
    if tag in (104, 105):
        arity, at = (data[pos + 1], pos + 2) if tag == 104 else (struct.unpack_from(">I", data, pos + 1)[0], pos + 5)
        items = []
        for _unused in range(arity):
            item, at = decode(data, at)
            items.append(item)
        return tuple(items), at
    if tag == 106:
        return [], pos + 1
    if tag == 107:
        length = struct.unpack_from(">H", data, pos + 1)[0]
        return list(data[pos + 3:pos + 3 + length]), pos + 3 + length
    if tag == 108:
        count = struct.unpack_from(">I", data, pos + 1)[0]
        at, items = pos + 5, []
        for _unused in range(count):
            item, at = decode(data, at)
            items.append(item)
        tail, at = decode(data, at)
        return (items if tail == [] else (items, tail)), at
    if tag == 109:
        length = struct.unpack_from(">I", data, pos + 1)[0]
        return bytes(data[pos + 5:pos + 5 + length]), pos + 5 + length
    if tag == 116:
        arity, at, result = struct.unpack_from(">I", data, pos + 1)[0], pos + 5, {}
        for _unused in range(arity):
            key, at = decode(data, at)
            value, at = decode(data, at)
            result[key if not isinstance(key, list) else tuple(key)] = value
        return result, at
    if tag == 88:  # NEW_PID: node, id:4, serial:4, creation:4
        end = _skip_atom(data, pos + 1) + 12
        return Raw(data[pos:end]), end
    if tag == 90:  # NEWER_REFERENCE: len:2, node, creation:4, len ids
        words = struct.unpack_from(">H", data, pos + 1)[0]
        end = _skip_atom(data, pos + 3) + 4 + 4 * words
        return Raw(data[pos:end]), end
    if tag == 89:  # NEW_PORT
        end = _skip_atom(data, pos + 1) + 8
        return Raw(data[pos:end]), end
    if tag == 120:  # V4_PORT
        end = _skip_atom(data, pos + 1) + 12
        return Raw(data[pos:end]), end
    raise ValueError("fakepeer cannot decode tag %d at %d" % (tag, pos))


def decode_versioned(data, pos=0):
    """Read one `131 <term>`; returns (term, next_pos)."""
    if data[pos] != 131:
        raise ValueError("expected version byte 131 at %d, found %d" % (pos, data[pos]))
    return decode(data, pos + 1)


def skip(data, pos):
    """Position just after the term at `pos` (handles improper lists, which decode() folds into a pair)."""
    if data[pos] == 108:
        count, at = struct.unpack_from(">I", data, pos + 1)[0], pos + 5
        for _unused in range(count + 1):
            at = skip(data, at)
        return at
    return decode(data, pos)[1]


def versioned(term):
    return b"\x83" + encode(term)


# ---------------------------------------------------------------- hostile terms
def nested_lists(depth):
    """`[[[...[]...]]]` `depth` levels deep, as a versioned term (stack-overflow bait for recursive decoders)."""
    return b"\x83" + (b"\x6c\x00\x00\x00\x01" * depth) + b"\x6a" + b"\x6a" * depth


def nested_tuples(depth):
    """`{{{...{}...}}}` `depth` levels deep, as a versioned term."""
    return b"\x83" + b"\x68\x01" * depth + b"\x68\x00"


def compressed_bomb(inflated_size, declared_size=None):
    """A compressed term (tag 80) of a binary that inflates to `inflated_size` bytes; it may claim another size.
    Deflated in 1 MiB steps, so building it never holds the inflated bytes (the tests watch peak memory)."""
    payload = max(0, inflated_size - 5)
    deflater = zlib.compressobj(9)
    parts = [deflater.compress(b"\x6d" + struct.pack(">I", payload))]
    chunk = b"\x00" * (1 << 20)
    left = payload
    while left > 0:
        parts.append(deflater.compress(chunk[:min(left, len(chunk))]))
        left -= min(left, len(chunk))
    parts.append(deflater.flush())
    declared = inflated_size if declared_size is None else declared_size
    return b"\x83\x50" + struct.pack(">I", declared & 0xFFFFFFFF) + b"".join(parts)


# ---------------------------------------------------------------- server plumbing
class _FakeServer:
    """A TCP listener on 127.0.0.1 that runs `self.serve(sock)` in a thread per connection."""

    def __init__(self, behaviour, catalogue):
        if behaviour not in catalogue:
            raise ValueError("unknown behaviour %r; known: %s" % (behaviour, ", ".join(sorted(catalogue))))
        self.behaviour = behaviour
        self.stopping = threading.Event()
        self.sessions = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._threads = []
        self._conns = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept_loop, name="fake-accept-%d" % self.port, daemon=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self._acceptor.start()
        return self

    def stop(self):
        self.stopping.set()
        self._acceptor.join(2)
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in send/recv on it
            except OSError:
                pass
            try:
                conn.close()
            except OSError:
                pass
        for thread in list(self._threads):
            thread.join(2)

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                conn, _addr = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.append(conn)
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, conn):
        session = {"behaviour": self.behaviour, "events": []}
        self.sessions.append(session)
        try:
            self.serve(conn, session)
        except (PeerClosed, OSError, ValueError, struct.error, IndexError) as exc:
            session["events"].append("ended: %s" % (exc.__class__.__name__,))
        finally:
            try:
                conn.close()
            except OSError:
                pass

    # helpers shared by both fakes
    def recv_exact(self, conn, count):
        buf = b""
        while len(buf) < count:
            if self.stopping.is_set():
                raise PeerClosed("stopping")
            conn.settimeout(0.2)
            try:
                chunk = conn.recv(count - len(buf))
            except socket.timeout:
                continue
            if not chunk:
                raise PeerClosed("client closed")
            buf += chunk
        return buf

    def hold(self, conn, seconds=60.0):
        """Keep the connection open, read and discard what comes, until stop or `seconds`."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set() and time.monotonic() < deadline:
            conn.settimeout(0.1)
            try:
                if not conn.recv(65536):
                    return
            except socket.timeout:
                continue

    def drip(self, conn, data, interval):
        """Send `data` one byte per `interval` seconds (an endless generator is fine too)."""
        for byte in data:
            if self.stopping.is_set():
                return
            conn.sendall(bytes([byte]))
            if self.stopping.wait(interval):
                return

    def flood(self, conn, chunk):
        """Send `chunk` again and again until the client leaves or the fake stops."""
        conn.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                conn.sendall(chunk)
            except socket.timeout:
                continue


# ---------------------------------------------------------------- fake EPMD
EPMD_BEHAVIOURS = {
    "ok": "answers NAMES and PORT_PLEASE2 correctly",
    "close_immediately": "accepts and closes at once without reading",
    "never_answer": "reads the request and keeps the connection open without a byte",
    "slow_drip": "answers correctly, one byte every drip_interval seconds",
    "endless": "answers NAMES with an endless stream of name lines and PORT_PLEASE2 with endless bytes",
    "names_malformed": "NAMES answer listing the real names among lines with invalid UTF-8, no port, ports out of range",
    "names_truncated": "NAMES answer of two bytes (the 4-byte EPMD port cut short)",
    "port_not_found": "PORT2_RESP with result 1 (name not registered)",
    "port_truncated": "PORT2_RESP cut after three bytes, then close",
    "port_wrong_code": "PORT2_RESP with response code 0x78 instead of 119",
    "port_name_overflow": "PORT2_RESP whose Nlen claims 60000 bytes of name but sends four",
    "port_zero": "PORT2_RESP that says the node listens on port 0",
}


class FakeEpmd(_FakeServer):
    """A fake EPMD: `names` maps alive names to the port to announce for them."""

    def __init__(self, names=None, behaviour="ok", drip_interval=0.25, highest=6, lowest=6):
        super().__init__(behaviour, EPMD_BEHAVIOURS)
        self.names = dict(names or {})
        self.drip_interval = drip_interval
        self.highest, self.lowest = highest, lowest

    def names_answer(self):
        lines = "".join("name %s at port %d\n" % (name, port) for name, port in sorted(self.names.items()))
        return struct.pack(">I", 4369) + lines.encode("utf-8")

    def port_answer(self, alive):
        port = self.names.get(alive)
        if port is None:
            return bytes([119, 1])
        name = alive.encode("utf-8")
        return bytes([119, 0]) + struct.pack(">HBBHHH", port, 77, 0, self.highest, self.lowest, len(name)) + name \
            + struct.pack(">H", 0)

    def serve(self, conn, session):
        behaviour = self.behaviour
        if behaviour == "close_immediately":
            return
        length = struct.unpack(">H", self.recv_exact(conn, 2))[0]
        request = self.recv_exact(conn, length)
        code = request[0]
        alive = request[1:].decode("utf-8", "replace")
        session["events"].append(("request", code, alive))
        if code == 120:  # ALIVE2_REQ from a real node being registered (self-checks of the fake): accept, keep open
            conn.sendall(bytes([118, 0]) + struct.pack(">I", 1))
            self.hold(conn, 3600)
            return
        is_names = code == 110
        # NAMES-only misbehaviours serve PORT_PLEASE2 correctly, and PORT_PLEASE2-only ones serve NAMES.
        if behaviour == "ok" or behaviour.startswith("port_" if is_names else "names_"):
            conn.sendall(self.names_answer() if is_names else self.port_answer(alive))
        elif behaviour == "never_answer":
            self.hold(conn)
        elif behaviour == "slow_drip":
            self.drip(conn, self.names_answer() if is_names else self.port_answer(alive), self.drip_interval)
        elif behaviour == "endless":
            if is_names:
                conn.sendall(struct.pack(">I", 4369))
                self.flood(conn, b"".join(b"name n%06d at port %d\n" % (i, 20000 + i) for i in range(500)))
            else:
                self.flood(conn, bytes([119, 0]) + b"\xff" * 4096)
        elif behaviour == "names_malformed":
            # The registered names are listed correctly between the broken lines.
            conn.sendall(self.names_answer() + b"name \xff\xfe at port 1\nname onlyname\nname x at port abc\n"
                         b"garbage line\nname big at port 99999999\nname neg at port -5\nname zero at port 0\n"
                         b"name \x00\x01 at port 7\n")
        elif behaviour == "names_truncated":
            conn.sendall(b"\x00\x00")
        elif behaviour == "port_not_found":
            conn.sendall(bytes([119, 1]))
        elif behaviour == "port_truncated":
            conn.sendall(self.port_answer(alive)[:3] if self.names.get(alive) else bytes([119, 0, 0x12]))
        elif behaviour == "port_wrong_code":
            conn.sendall(bytes([0x78]) + (self.port_answer(alive)[1:] if self.names.get(alive) else b"\x00"))
        elif behaviour == "port_name_overflow":
            conn.sendall(bytes([119, 0]) + struct.pack(">HBBHHH", self.names.get(alive, 4370), 77, 0, 6, 6, 60000)
                         + b"abcd")
        elif behaviour == "port_zero":
            conn.sendall(bytes([119, 0]) + struct.pack(">HBBHHH", 0, 77, 0, 6, 6, 1) + b"x\x00\x00")


# ---------------------------------------------------------------- fake distribution peer
DIST_BEHAVIOURS = {
    # healthy references: prove the fake speaks the protocol, so every failure below is the behaviour's doing
    "ok": "full handshake, then answers rex calls (erlang:nodes/0,1) with the configured node lists",
    "ok_ticks_first": "like ok, but sends ticks and an unrelated message before each reply",
    "ok_unlink_id": "like ok, but sends an UNLINK_ID control message before each reply",
    # connection and handshake
    "close_on_accept": "accepts the TCP connection and closes it before reading anything",
    "garbage_on_accept": "streams random bytes (seeded) from the moment it accepts, without reading",
    "never_answer": "reads send_name and then stays silent with the connection open",
    "close_after_name": "reads send_name and closes",
    "status_slow_drip": "sends 'sok' and the challenge one byte every drip_interval seconds",
    "status_endless": "announces a 65535-byte status frame and streams bytes without end",
    "status_nok": "answers status 'nok'",
    "status_not_allowed": "answers status 'not_allowed'",
    "status_alive": "answers status 'alive' (a node of that name is already connected)",
    "status_bogus": "answers an unknown status string",
    "status_empty": "answers a zero-length status frame",
    "status_wrong_tag": "answers a status frame that does not start with 's'",
    "status_truncated_close": "announces a 10-byte status frame, sends 3 bytes, closes",
    "status_truncated_hold": "announces a 10-byte status frame, sends 3 bytes, keeps the connection open",
    "close_after_status": "sends 'sok' and closes before the challenge",
    "challenge_truncated": "sends a challenge frame of 7 bytes",
    "challenge_v5": "sends an old version-5 ('n') challenge",
    "challenge_name_overflow": "sends a challenge whose Nlen claims 1000 bytes but the frame ends first",
    "close_after_reply": "reads the challenge reply and closes (what a node does on a wrong cookie)",
    "bad_digest": "answers the challenge reply with an ack carrying a wrong digest",
    "ack_truncated": "answers the challenge reply with an ack of 5 bytes",
    "ack_wrong_tag": "answers the challenge reply with a frame that does not start with 'a'",
    # after a valid handshake
    "ticks_only": "completes the handshake, then sends only ticks, never a reply",
    "flood_frames": "completes the handshake, then floods unrelated messages to another pid, never a reply",
    "reply_wrong_ref": "answers every call with a reply tagged with a ref the client never made",
    "reply_slow_drip": "answers with a valid reply, one byte every drip_interval seconds",
    "frame_oversized": "announces a frame of 0xFFFFFFFF bytes (4 GiB) and stays open",
    "frame_oversized_endless": "announces a frame of 0x7FFFFFFF bytes and streams zeros without end",
    "frame_truncated_close": "announces a 100-byte frame, sends 10 bytes, closes",
    "frame_not_pass_through": "sends a frame whose first byte is not 112 ('p')",
    "frame_garbage": "sends frames of random bytes (seeded) after the handshake",
    "term_garbage": "sends a pass-through frame with a valid control tuple and random bytes as the message",
    "term_compressed_bomb": "answers with a compressed term that inflates to 32 MiB and says so",
    "term_compressed_lie": "answers with a compressed term that claims 16 bytes and inflates to 64 MiB",
    "term_compressed_4gib": "answers with a compressed term that claims 4 GiB and holds 1 KiB",
    "term_deep_lists": "answers with a list nested 200,000 levels deep",
    "term_deep_tuples": "answers with a tuple nested 200,000 levels deep",
    "term_huge_list_len": "answers with a list header claiming 0xFFFFFFFF elements and no elements",
    "term_huge_binary_len": "answers with a binary header claiming 0xFFFFFFF0 bytes and 3 bytes",
    "term_huge_tuple_arity": "answers with a large tuple claiming 0xFFFFFFFF elements",
    "term_huge_atom_len": "answers with an atom claiming 65535 bytes and holding 5",
    "term_bad_version": "answers with a message whose version byte is 130",
    "term_unknown_tag": "answers with a message using an undefined tag (254)",
    "reply_wrong_shape": "answers erlang:nodes() with the integer 42 instead of a list",
    "reply_badrpc": "answers with {badrpc, {'EXIT', undef}}",
}


# The Reply part of the answer for the term_* behaviours (versioned; a compressed one is the whole message).
HOSTILE_TERMS = {
    "term_compressed_bomb": lambda: compressed_bomb(32 << 20),
    "term_compressed_lie": lambda: compressed_bomb(64 << 20, declared_size=16),
    "term_compressed_4gib": lambda: b"\x83\x50\xff\xff\xff\xff" + zlib.compress(b"\x6a" * 1024),
    "term_deep_lists": lambda: nested_lists(200000),
    "term_deep_tuples": lambda: nested_tuples(200000),
    "term_huge_list_len": lambda: b"\x83\x6c\xff\xff\xff\xff",
    "term_huge_binary_len": lambda: b"\x83\x6d\xff\xff\xff\xf0abc",
    "term_huge_tuple_arity": lambda: b"\x83\x69\xff\xff\xff\xff\x6a",
    "term_huge_atom_len": lambda: b"\x83\x76\xff\xffhello",
    "term_bad_version": lambda: b"\x82\x6a",
    "term_unknown_tag": lambda: b"\x83\xfe\x00\x00",
}


class FakeNode(_FakeServer):
    """A fake distribution peer. `visible`/`hidden` are the node names it reports for erlang:nodes/0,1."""

    def __init__(self, name, cookie, behaviour="ok", visible=(), hidden=(), drip_interval=0.25, seed=1,
                 flags=PEER_FLAGS, frame_hook=None):
        super().__init__(behaviour, DIST_BEHAVIOURS)
        self.name = name
        self.cookie = cookie
        self.visible = [Atom(n) for n in visible]
        self.hidden = [Atom(n) for n in hidden]
        self.drip_interval = drip_interval
        self.flags = flags
        self.random = random.Random(seed)
        # frame_hook(session, request_payload) -> list of raw reply payloads; replaces the rex answer (fuzzing)
        self.frame_hook = frame_hook
        # Built before any client connects: deflating a bomb takes a while, and that is not the client's time.
        self.hostile_term = HOSTILE_TERMS[behaviour]() if behaviour in HOSTILE_TERMS else None

    # -- handshake pieces (accepting side)
    def frame2(self, payload):
        return struct.pack(">H", len(payload)) + payload

    def recv_frame2(self, conn):
        length = struct.unpack(">H", self.recv_exact(conn, 2))[0]
        return self.recv_exact(conn, length)

    def challenge_frame(self, challenge):
        name = self.name.encode("utf-8")
        return self.frame2(b"N" + struct.pack(">QIIH", self.flags, challenge, PEER_CREATION, len(name)) + name)

    def digest(self, challenge):
        return hashlib.md5(self.cookie.encode("utf-8") + str(challenge).encode("ascii")).digest()

    def recv_name(self, conn, session):
        payload = self.recv_frame2(conn)
        if payload[:1] == b"N":
            flags, creation, nlen = struct.unpack_from(">QIH", payload, 1)
            session["client_flags"] = flags
            session["client_name"] = payload[15:15 + nlen].decode("utf-8", "replace")
        else:
            session["client_name_frame"] = payload
        session["events"].append("name")

    def recv_challenge_reply(self, conn, session):
        payload = self.recv_frame2(conn)
        if payload[:1] != b"r" or len(payload) != 21:
            raise ValueError("bad challenge reply %r" % payload[:4])
        client_challenge = struct.unpack_from(">I", payload, 1)[0]
        session["client_digest_ok"] = payload[5:21] == self.digest(session["challenge"])
        session["events"].append("reply")
        return client_challenge

    def handshake(self, conn, session, ack=None):
        """Run a valid handshake; returns False if the client's digest was wrong (then the fake closes)."""
        self.recv_name(conn, session)
        session["challenge"] = self.random.getrandbits(32)
        conn.sendall(self.frame2(b"sok") + self.challenge_frame(session["challenge"]))
        client_challenge = self.recv_challenge_reply(conn, session)
        if not session["client_digest_ok"]:
            return False
        conn.sendall(self.frame2(b"a" + self.digest(client_challenge)) if ack is None else ack)
        session["events"].append("handshake_done")
        return True

    # -- after the handshake
    def frame4(self, payload):
        return struct.pack(">I", len(payload)) + payload

    def recv_request(self, conn, session):
        """Wait for the next non-tick frame; returns its payload (ticks are answered with ticks)."""
        while True:
            length = struct.unpack(">I", self.recv_exact(conn, 4))[0]
            if length == 0:
                conn.sendall(b"\x00\x00\x00\x00")
                continue
            if length > 1 << 24:
                raise ValueError("client frame too large")
            payload = self.recv_exact(conn, length)
            session["events"].append("frame")
            return payload

    def parse_call(self, payload):
        """Split a REG_SEND to rex into (reply_to_pid, reply_tag_or_None, M, F, A); None for other frames."""
        if payload[:1] != b"p":
            return None
        control, pos = decode_versioned(payload, 1)
        if not (isinstance(control, tuple) and control and control[0] == 6):
            if isinstance(control, tuple) and control and control[0] == 35:  # UNLINK_ID: acknowledge
                return ("unlink_id", control)
            return None
        # Walk the message by hand so the reply tag is copied byte for byte (it may be a ref or an improper
        # list like [alias | Ref], which the tiny reader would not round-trip).
        if payload[pos:pos + 3] != b"\x83\x68\x03":
            if payload[pos:pos + 3] == b"\x83\x68\x02" and payload[pos + 3] == 88:  # {Pid, {call, ...}}
                pid, at = decode(payload, pos + 3)
                request, _end = decode(payload, at)
                return pid, None, request
            return None
        first, at = decode(payload, pos + 3)
        if first != "$gen_call" or payload[at:at + 2] != b"\x68\x02":
            return None
        pid, tag_start = decode(payload, at + 2)
        tag_end = skip(payload, tag_start)
        request, _end = decode(payload, tag_end)
        return pid, Raw(payload[tag_start:tag_end]), request

    def answer_for(self, request):
        """What rex would answer for a {call, M, F, A, GL} request."""
        if not (isinstance(request, tuple) and len(request) >= 4 and request[0] == "call"):
            return (Atom("badrpc"), Atom("unsupported"))
        module, function, args = request[1], request[2], request[3]
        if (module, function) == ("erlang", "nodes"):
            if not args:
                return list(self.visible)
            kinds = args[0] if isinstance(args[0], list) else [args[0]]
            result = []
            for kind in kinds:
                result += self.visible if kind in ("visible", "connected") else []
                result += self.hidden if kind in ("hidden", "connected") else []
            return result
        if (module, function) == ("erlang", "node"):
            return Atom(self.name)
        return (Atom("badrpc"), (Atom("EXIT"), Atom("undef")))

    def reply_frame(self, pid, ref, reply_term=None, message_bytes=None):
        """A SEND to `pid` carrying {Ref, Reply} (gen_call form) or {rex, Reply} (erl_call form)."""
        control = versioned((2, Atom(""), pid))
        if message_bytes is None:
            message_bytes = versioned((ref if ref is not None else Atom("rex"), reply_term))
        return self.frame4(b"p" + control + message_bytes)

    def reply_with_raw(self, pid, ref, raw_reply):
        """A reply whose Reply part is the already-versioned `raw_reply` spliced into the {Ref, Reply} tuple."""
        tag = encode(ref if ref is not None else Atom("rex"))
        if raw_reply[:1] != b"\x83":
            return self.reply_frame(pid, ref, message_bytes=raw_reply)
        if raw_reply[1:2] == b"\x50":  # compressed: the whole message must be the compressed term
            return self.reply_frame(pid, ref, message_bytes=raw_reply)
        return self.reply_frame(pid, ref, message_bytes=b"\x83\x68\x02" + tag + raw_reply[1:])

    def serve(self, conn, session):
        b = self.behaviour
        if b == "close_on_accept":
            return
        if b == "garbage_on_accept":
            self.flood(conn, bytes(self.random.getrandbits(8) for _unused in range(4096)))
            return
        if b in ("never_answer", "close_after_name"):
            self.recv_name(conn, session)
            if b == "never_answer":
                self.hold(conn)
            return
        if b.startswith("status_") or b == "close_after_status":
            self.recv_name(conn, session)
            if b == "status_slow_drip":
                session["challenge"] = self.random.getrandbits(32)
                self.drip(conn, self.frame2(b"sok") + self.challenge_frame(session["challenge"]), self.drip_interval)
                return
            if b == "status_endless":
                conn.sendall(b"\xff\xffs")
                self.flood(conn, b"k" * 4096)
                return
            frames = {
                "status_nok": self.frame2(b"snok"), "status_not_allowed": self.frame2(b"snot_allowed"),
                "status_alive": self.frame2(b"salive"), "status_bogus": self.frame2(b"sperhaps_later\xff"),
                "status_empty": self.frame2(b""), "status_wrong_tag": self.frame2(b"xok"),
                "status_truncated_close": b"\x00\x0asok", "status_truncated_hold": b"\x00\x0asok",
                "close_after_status": self.frame2(b"sok"),
            }
            conn.sendall(frames[b])
            if b in ("status_alive", "status_truncated_hold"):
                self.hold(conn)
            return
        if b.startswith("challenge_"):
            self.recv_name(conn, session)
            name = self.name.encode()
            frames = {
                "challenge_truncated": self.frame2(b"N\x00\x00\x00\x00\x01\x07"),
                "challenge_v5": self.frame2(b"n\x00\x05" + struct.pack(">II", 0x7FFFD, 12345) + name),
                "challenge_name_overflow": self.frame2(b"N" + struct.pack(">QIIH", self.flags, 1, 1, 1000) + name),
            }
            conn.sendall(self.frame2(b"sok") + frames[b])
            self.hold(conn, 5)
            return
        if b == "close_after_reply":
            self.recv_name(conn, session)
            session["challenge"] = self.random.getrandbits(32)
            conn.sendall(self.frame2(b"sok") + self.challenge_frame(session["challenge"]))
            self.recv_challenge_reply(conn, session)
            return
        acks = {
            "bad_digest": self.frame2(b"a" + b"\x00" * 16),
            "ack_truncated": self.frame2(b"a\x01\x02\x03\x04"),
            "ack_wrong_tag": self.frame2(b"z" + b"\x00" * 16),
        }
        if not self.handshake(conn, session, ack=acks.get(b)):
            return
        if b in acks:
            self.hold(conn, 5)
            return
        self.after_handshake(conn, session)

    def after_handshake(self, conn, session):
        b = self.behaviour
        if b == "ticks_only":
            while not self.stopping.wait(0.1):
                conn.sendall(b"\x00\x00\x00\x00")
            return
        if b == "frame_oversized":
            conn.sendall(b"\xff\xff\xff\xff")
            self.hold(conn)
            return
        if b == "frame_oversized_endless":
            conn.sendall(b"\x7f\xff\xff\xff")
            self.flood(conn, b"\x00" * 65536)
            return
        if b == "frame_truncated_close":
            conn.sendall(b"\x00\x00\x00\x64" + b"p" + b"\x83" * 9)
            return
        while True:
            payload = self.recv_request(conn, session)
            call = self.parse_call(payload)
            if call is None:
                continue
            if call[0] == "unlink_id":
                control = call[1]
                conn.sendall(self.frame4(b"p" + versioned((36, control[1], control[3], control[2]))))
                continue
            pid, ref, request = call
            session["events"].append(("call", request[1] if isinstance(request, tuple) and len(request) > 1 else None))
            if self.frame_hook is not None:
                for raw in self.frame_hook(session, pid, ref, payload):
                    conn.sendall(raw)
                continue
            self.answer(conn, session, pid, ref, request)

    def answer(self, conn, session, pid, ref, request):
        b = self.behaviour
        good = self.reply_frame(pid, ref, self.answer_for(request))
        other_pid = Raw(b"\x58\x77\x0bother@place" + struct.pack(">III", 1, 0, 1))
        if b == "ok":
            conn.sendall(good)
        elif b == "ok_ticks_first":
            conn.sendall(b"\x00\x00\x00\x00" * 3 + self.reply_frame(other_pid, None, Atom("noise")) + good)
        elif b == "ok_unlink_id":
            unlink = self.frame4(b"p" + versioned((35, 7, other_pid, pid)))
            conn.sendall(unlink + good)
        elif b == "flood_frames":
            self.flood(conn, self.reply_frame(other_pid, None, Atom("noise")) * 50)
        elif b == "reply_wrong_ref":
            wrong_ref = Raw(b"\x5a\x00\x03\x77\x0bother@place" + struct.pack(">IIII", 1, 1, 2, 3))
            conn.sendall(self.reply_frame(pid, wrong_ref, self.answer_for(request)))
            while not self.stopping.wait(0.1):
                conn.sendall(b"\x00\x00\x00\x00")
        elif b == "reply_slow_drip":
            self.drip(conn, good, self.drip_interval)
        elif b == "frame_not_pass_through":
            conn.sendall(self.frame4(b"q" + good[5:]))
        elif b == "frame_garbage":
            for _unused in range(20):
                size = self.random.randint(1, 300)
                conn.sendall(self.frame4(bytes(self.random.getrandbits(8) for _unused in range(size))))
            self.hold(conn, 5)
        elif b == "term_garbage":
            junk = bytes(self.random.getrandbits(8) for _unused in range(200))
            conn.sendall(self.reply_frame(pid, ref, message_bytes=b"\x83" + junk))
            self.hold(conn, 5)
        elif b.startswith("term_"):
            conn.sendall(self.reply_with_raw(pid, ref, self.hostile_term))
            self.hold(conn, 5)
        elif b == "reply_wrong_shape":
            conn.sendall(self.reply_frame(pid, ref, 42))
        elif b == "reply_badrpc":
            conn.sendall(self.reply_frame(pid, ref, (Atom("badrpc"), (Atom("EXIT"), Atom("undef")))))
        else:
            raise ValueError("behaviour %s has no answer" % b)


# ---------------------------------------------------------------- mutation fuzzing of what a peer sends
# Byte values worth planting: term tags, frame types, and the edges of every length field.
INTERESTING_BYTES = (0, 1, 0x7F, 0x80, 0xFF, 131, 80, 88, 90, 97, 98, 104, 105, 106, 107, 108, 109, 110, 111, 112,
                     113, 116, 118, 119, 120, 121, 70, 77, 100, 115)
INTERESTING_INTS = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
                    0xFFFFFFFF, 0xFFFFFFFE)
MAX_FUZZ_INPUT = 96 * 1024  # fits in a socketpair buffer, so a driver can write it all before the client reads


def mutate_bytes(data, rng, pool=()):
    """One random structural or byte-level mutation of `data` (bytes); `pool` offers material to splice in."""
    data = bytearray(data)
    op = rng.randrange(10)
    if not data:
        op = 4
    if op == 0:
        pos = rng.randrange(len(data))
        data[pos] ^= 1 << rng.randrange(8)
    elif op == 1:
        data[rng.randrange(len(data))] = rng.choice(INTERESTING_BYTES)
    elif op in (2, 3):
        width = 2 if op == 2 else 4
        if len(data) >= width:
            pos = rng.randrange(len(data) - width + 1)
            value = rng.choice(INTERESTING_INTS)
            if rng.random() < 0.3:  # nudge the existing field instead: off-by-one lengths
                value = int.from_bytes(data[pos:pos + width], "big") + rng.choice((-1, 1, 2, -2))
            data[pos:pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "big")
    elif op == 4:
        pos = rng.randrange(len(data) + 1)
        data[pos:pos] = bytes(rng.getrandbits(8) for _unused in range(rng.randint(1, 16)))
    elif op == 5:
        start = rng.randrange(len(data))
        del data[start:start + rng.randint(1, 32)]
    elif op == 6:
        start = rng.randrange(len(data))
        chunk = data[start:start + rng.randint(1, 64)]
        pos = rng.randrange(len(data) + 1)
        data[pos:pos] = chunk * rng.randint(1, 8)
    elif op == 7 and pool:
        other = rng.choice(pool)
        if other:
            start = rng.randrange(len(other))
            chunk = other[start:start + rng.randint(1, 128)]
            pos = rng.randrange(len(data) + 1)
            data[pos:pos + rng.randint(0, len(chunk))] = chunk
    elif op == 8:
        del data[rng.randrange(len(data)):]
    else:
        pos = rng.randrange(len(data))
        data[pos] = rng.getrandbits(8)
    return bytes(data[:MAX_FUZZ_INPUT])


def frame_stream(payloads, header):
    """Frames with correct `header`-byte (2 or 4) big-endian length prefixes."""
    fmt = ">H" if header == 2 else ">I"
    return b"".join(struct.pack(fmt, len(p) & (0xFFFF if header == 2 else 0xFFFFFFFF)) + p for p in payloads)


def mutate_frames(payloads, header, rng, pool=()):
    """Mutate a sequence of frame payloads and frame them: mostly with honest length prefixes, so the mutations
    reach the parsers behind the framing, sometimes with lying prefixes or a cut stream, to hit the framing."""
    payloads = list(payloads)
    for _unused in range(1 + min(int(rng.expovariate(0.7)), 8)):
        choice = rng.random()
        if choice < 0.75 and payloads:
            index = rng.randrange(len(payloads))
            payloads[index] = mutate_bytes(payloads[index], rng, pool)
        elif choice < 0.82 and payloads:
            del payloads[rng.randrange(len(payloads))]
        elif choice < 0.89 and payloads:
            index = rng.randrange(len(payloads))
            payloads.insert(index, payloads[index])
        elif choice < 0.94 and header == 4:
            payloads.insert(rng.randrange(len(payloads) + 1), b"")  # a tick
        elif pool:
            payloads.insert(rng.randrange(len(payloads) + 1), rng.choice(pool))
    stream = frame_stream(payloads, header)
    if rng.random() < 0.12 and stream:
        stream = mutate_bytes(stream, rng, pool)  # lying length prefixes, cut frames
    return stream[:MAX_FUZZ_INPUT]


def feed(data):
    """A connected socket pair whose far end has already sent `data` and then shut down its sending side,
    so a client reading it sees exactly `data` followed by end of stream; returns (client_end, far_end)."""
    client_end, far_end = socket.socketpair()
    for sock in (client_end, far_end):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    far_end.sendall(data)
    far_end.shutdown(socket.SHUT_WR)
    return client_end, far_end


def handshake_payloads(name, flags=PEER_FLAGS, challenge=0x1234ABCD, creation=PEER_CREATION, status=b"ok"):
    """The accepting side's handshake frames (status, challenge, ack) as payloads without length prefixes."""
    raw = name.encode("utf-8")
    return [b"s" + status, b"N" + struct.pack(">QIIH", flags, challenge, creation, len(raw)) + raw,
            b"a" + hashlib.md5(b"cookie" + str(challenge).encode()).digest()]


# ---------------------------------------------------------------- drivers: one fuzz input through the real client
FUZZ_LOCAL_NODE = "beamops_fuzz@127.0.0.1"


def drive_handshake(data, node, budget):
    """Feed `data` as everything the peer says during the handshake; returns "ok" or the DistError reason.
    Any other exception propagates: for a fuzzer that is the finding."""
    from ansible_collections.beamops.cluster.plugins.module_utils import erl_dist
    from ansible_collections.beamops.cluster.plugins.module_utils.erl_epmd import Deadline, DistError
    client_end, far_end = feed(data)
    try:
        erl_dist.handshake(client_end, node, "cookie", Deadline(budget), FUZZ_LOCAL_NODE, 7, False)
        return "ok"
    except DistError as exc:
        return exc.reason
    finally:
        client_end.close()
        far_end.close()


def drive_frames(data, node, budget):
    """Feed `data` as what the peer sends after the handshake and read messages until the client gives up;
    returns (the DistError reason that ended it, number of messages decoded)."""
    from ansible_collections.beamops.cluster.plugins.module_utils import erl_dist
    from ansible_collections.beamops.cluster.plugins.module_utils.erl_epmd import Deadline, DistError
    client_end, far_end = feed(data)
    conn = erl_dist.DistConnection(client_end, FUZZ_LOCAL_NODE, node, PEER_FLAGS, 7, False)
    deadline = Deadline(budget)
    received = 0
    try:
        while True:
            conn.receive(deadline)
            received += 1
    except DistError as exc:
        return exc.reason, received
    finally:
        conn.close()
        far_end.close()
