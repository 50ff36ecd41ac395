"""The distribution client against real OTP 25 and OTP 28 nodes on loopback."""
import socket
import struct
import time

import pytest

import beamnodes
import fakepeer
import otp
from ansible_collections.beamops.cluster.plugins.module_utils import erl_dist, erl_epmd, erl_mesh, erl_term
from ansible_collections.beamops.cluster.plugins.module_utils.erl_term import Atom, Pid

RUNTIMES = otp.runtimes()
RELEASES = sorted(RUNTIMES)
TLS_RELEASES = [pytest.param(rel, marks=pytest.mark.skipif(
    rel != "25", reason="the OTP %s runtime on this machine has no ssl application, so it cannot run TLS "
                        "distribution" % rel)) for rel in RELEASES]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return beamnodes.make_test_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, pki):
    """Per release: plain, tick (net_ticktime 4), guarded (net_kernel:allow), epmdless, short; TLS nodes on 25."""
    workdir = str(tmp_path_factory.mktemp("dist"))
    specs = {}
    for rel in RELEASES:
        specs[(rel, "plain")] = beamnodes.NodeSpec("plain%s" % rel, release=rel)
        specs[(rel, "tick")] = beamnodes.NodeSpec("tick%s" % rel, release=rel, args=["-kernel", "net_ticktime", "4"])
        specs[(rel, "guarded")] = beamnodes.NodeSpec("guarded%s" % rel, release=rel)
        specs[(rel, "epmdless")] = beamnodes.NodeSpec("nomd%s" % rel, release=rel, dist_port=beamnodes.free_port())
        specs[(rel, "short")] = beamnodes.NodeSpec("short%s" % rel, release=rel, short=True)
    if "25" in RELEASES:
        tls = dict(certfile=pki["server_cert"], keyfile=pki["server_key"], cacertfile=pki["ca"])
        specs[("25", "tls")] = beamnodes.NodeSpec("tls25", release="25", tls=dict(tls, verify_client=False))
        specs[("25", "tls_strict")] = beamnodes.NodeSpec("tlsstrict25", release="25", tls=dict(tls, verify_client=True))
    keys = list(specs)
    started = beamnodes.start_nodes([specs[k] for k in keys], workdir)
    by_key = dict(zip(keys, started))
    for rel in RELEASES:
        by_key[(rel, "guarded")].eval("net_kernel:allow(['only_this_one@127.0.0.1'])")
    yield by_key
    beamnodes.stop_nodes(started)


@pytest.mark.parametrize("release", RELEASES)
def test_rpc_round_trip_as_a_hidden_node(nodes, release):
    node = nodes[(release, "plain")]
    with erl_dist.connect(node.name, node.cookie, timeout=5) as conn:
        assert conn.peer_node == node.name
        assert conn.rpc("erlang", "node", []) == node.name
        assert conn.rpc("erlang", "system_info", [Atom("otp_release")]) == [ord(c) for c in release]
        assert conn.rpc("lists", "seq", [1, 1000]) == list(range(1, 1001))
        assert conn.rpc("erlang", "list_to_binary", [[104, 105]]) == b"hi"
        assert conn.ping() is True
        # We show only among the node's hidden connections, under the name we gave.
        assert conn.local_node in conn.rpc("erlang", "nodes", [Atom("hidden")])
        assert conn.local_node not in conn.rpc("erlang", "nodes", [])
        assert node.visible() == []
        assert conn.local_node in node.hidden()
        # Pids the node makes carry its name; several calls sent at once come back in order.
        pid, own, hidden = conn.rpc_many([("erlang", "self", []), ("erlang", "node", []),
                                          ("erlang", "nodes", [Atom("hidden")])])
        assert isinstance(pid, Pid) and pid.node == node.name
        assert own == node.name and hidden == [conn.local_node]
    beamnodes.wait_until(lambda: node.hidden() == [])


@pytest.mark.parametrize("release", RELEASES)
def test_badrpc_raises_rpc_error(nodes, release):
    node = nodes[(release, "plain")]
    with erl_dist.connect(node.name, node.cookie, timeout=5) as conn:
        with pytest.raises(erl_dist.RpcError) as err:
            conn.rpc("erlang", "no_such_function", [])
        assert err.value.reason == "rpc_error"
        assert "undef" in repr(err.value.detail)
        # The connection stays usable after a failed call.
        assert conn.rpc("erlang", "node", []) == node.name


@pytest.mark.parametrize("release", RELEASES)
def test_wrong_cookie_is_cookie_rejected(nodes, release):
    node = nodes[(release, "plain")]
    with pytest.raises(erl_dist.CookieRejected) as err:
        erl_dist.connect(node.name, "not-" + node.cookie, timeout=5)
    assert err.value.reason == "cookie_rejected"


def test_wrong_digest_from_the_peer_is_cookie_rejected():
    # A real node whose cookie differs never gets as far as sending an ack (it rejects ours first), so checking
    # the peer's digest takes a fake peer that accepts our reply and answers with a wrong digest.
    with fakepeer.FakeNode("fake@127.0.0.1", "cookie", behaviour="bad_digest") as peer:
        with pytest.raises(erl_dist.CookieRejected) as err:
            erl_dist.connect("fake@127.0.0.1", "cookie", timeout=3, dist_port=peer.port)
    assert "wrong digest" in str(err.value)


@pytest.mark.parametrize("release", RELEASES)
def test_ticks_are_answered_while_waiting(nodes, release):
    node = nodes[(release, "tick")]
    with erl_dist.connect(node.name, node.cookie, timeout=10) as conn:
        # net_ticktime 4: the node ticks every second and drops a peer silent for 4 s; the call takes 5 s.
        assert conn.rpc("timer", "sleep", [5000], timeout=10) == "ok"
        assert conn.ticks_answered >= 2
        assert conn.local_node in node.hidden()


@pytest.mark.parametrize("release", RELEASES)
def test_unlink_id_is_acknowledged(nodes, release):
    node = nodes[(release, "plain")]
    with erl_dist.connect(node.name, node.cookie, timeout=5) as conn:
        ours = conn.pid
        ok, tokens, _end = conn.rpc("erl_scan", "string", [[ord(c) for c in "link(P), unlink(P), done."]])
        assert ok == "ok"
        ok, exprs = conn.rpc("erl_parse", "parse_exprs", [tokens])
        assert ok == "ok"
        value = conn.rpc("erl_eval", "exprs", [exprs, [(Atom("P"), ours)]])
        assert value[0] == "value" and value[1] == "done"
        assert conn.unlinks_acked == 1
        assert conn.rpc("erlang", "node", []) == node.name


@pytest.mark.parametrize("release", RELEASES)
def test_net_kernel_allow_list_gives_not_allowed(nodes, release):
    node = nodes[(release, "guarded")]
    with pytest.raises(erl_dist.NotAllowed) as err:
        erl_dist.connect(node.name, node.cookie, timeout=5)
    assert err.value.reason == "not_allowed"
    with erl_dist.connect(node.name, node.cookie, timeout=5, local_node="only_this_one@127.0.0.1") as conn:
        assert conn.rpc("erlang", "node", []) == node.name


@pytest.mark.parametrize("release", RELEASES)
def test_name_mismatch_when_dialled_by_another_name(nodes, release):
    node = nodes[(release, "plain")]
    alive = node.name.split("@")[0]
    # 127.0.0.2 is this host's loopback too: EPMD there knows the node, which calls itself ...@127.0.0.1.
    with pytest.raises(erl_dist.NameMismatch) as err:
        erl_dist.connect(alive + "@127.0.0.2", node.cookie, timeout=5)
    assert err.value.reason == "name_mismatch"
    assert err.value.actual == node.name
    assert node.name in str(err.value) and alive + "@127.0.0.2" in str(err.value)


@pytest.mark.parametrize("release", RELEASES)
def test_long_name_node_dialled_as_localhost(nodes, release):
    node = nodes[(release, "plain")]
    dialled = node.name.split("@")[0] + "@localhost"
    with pytest.raises(erl_dist.NameMismatch) as err:
        erl_dist.connect(dialled, node.cookie, timeout=5)
    assert err.value.reason == "name_mismatch" and err.value.actual == node.name
    assert "uses long names" in str(err.value)


@pytest.mark.parametrize("release", RELEASES)
def test_short_name_node(nodes, release):
    node = nodes[(release, "short")]
    alive = node.name.split("@")[0]
    with erl_dist.connect(node.name, node.cookie, timeout=5) as conn:
        assert conn.rpc("erlang", "node", []) == node.name
        assert "." not in conn.local_node.split("@")[1]  # a short name for a short-name node
    with pytest.raises(erl_dist.NameMismatch) as err:
        erl_dist.connect(alive + "@127.0.0.1", node.cookie, timeout=5)
    assert err.value.reason == "name_mismatch" and err.value.actual == node.name
    assert "uses short names" in str(err.value)


@pytest.mark.parametrize("release", RELEASES)
def test_epmd_less_node_at_a_given_port(nodes, release):
    node = nodes[(release, "epmdless")]
    alive = node.name.split("@")[0]
    assert alive not in erl_epmd.names("127.0.0.1", erl_epmd.Deadline(3))
    with pytest.raises(erl_epmd.NotRegistered):
        erl_dist.connect(node.name, node.cookie, timeout=3)
    with erl_dist.connect(node.name, node.cookie, timeout=5, dist_port=node.spec.dist_port,
                          epmd_port=beamnodes.free_port()) as conn:
        assert conn.rpc("erlang", "node", []) == node.name


@pytest.mark.parametrize("release", RELEASES)
def test_ipv6_node(tmp_path, release):
    spec = beamnodes.NodeSpec("v6n%s" % release, release=release, host="::1", args=["-proto_dist", "inet6_tcp"])
    started = beamnodes.start_nodes([spec], str(tmp_path))
    try:
        with erl_dist.connect(spec.node, spec.cookie, timeout=5, family="inet6") as conn:
            assert conn.sock.family == socket.AF_INET6
            assert conn.rpc("erlang", "node", []) == spec.node
            assert conn.local_node.endswith("@::1")
        # The report's non-blocking driver dials the same IPv6 node (EPMD and distribution port over ::1).
        entry = erl_mesh.mesh_report([spec.node], spec.cookie, timeout=5, family="inet6")["per_node"][spec.node]
        assert entry["reachable"] is True and entry["name"] == spec.node, entry
    finally:
        beamnodes.stop_nodes(started)


@pytest.mark.parametrize("release", TLS_RELEASES)
def test_tls_distribution(nodes, pki, release):
    node = nodes[(release, "tls")]
    with pytest.raises(erl_epmd.DistError) as err:
        erl_dist.connect(node.name, node.cookie, timeout=5)
    assert err.value.reason == "tls_required"
    with erl_dist.connect(node.name, node.cookie, timeout=5, tls=erl_dist.TlsOptions(ca_file=pki["ca"])) as conn:
        assert conn.tls
        assert conn.rpc("erlang", "node", []) == node.name
        assert conn.local_node in node.hidden() and node.visible() == []
    with pytest.raises(erl_epmd.DistError) as err:
        erl_dist.connect(node.name, node.cookie, timeout=5, tls=erl_dist.TlsOptions(ca_file=pki["other_ca"]))
    assert err.value.reason == "tls_failed" and "CERTIFICATE_VERIFY_FAILED" in str(err.value)
    # The certificate must name the host dialled, or the name given instead.
    with erl_dist.connect(node.name, node.cookie, timeout=5,
                          tls=erl_dist.TlsOptions(ca_file=pki["ca"], server_name="localhost")) as conn:
        assert conn.rpc("erlang", "node", []) == node.name
    with pytest.raises(erl_epmd.DistError) as err:
        erl_dist.connect(node.name, node.cookie, timeout=5,
                         tls=erl_dist.TlsOptions(ca_file=pki["ca"], server_name="elsewhere.example"))
    assert err.value.reason == "tls_failed"
    # Without verification it still encrypts (for diagnosis only).
    with erl_dist.connect(node.name, node.cookie, timeout=5, tls=erl_dist.TlsOptions(verify=False)) as conn:
        assert conn.rpc("erlang", "node", []) == node.name
    # The cookie is still checked under TLS.
    with pytest.raises(erl_dist.CookieRejected):
        erl_dist.connect(node.name, "wrong", timeout=5, tls=erl_dist.TlsOptions(ca_file=pki["ca"]))


@pytest.mark.parametrize("release", TLS_RELEASES)
def test_tls_distribution_with_client_certificate(nodes, pki, release):
    node = nodes[(release, "tls_strict")]
    with pytest.raises(erl_epmd.DistError) as err:
        erl_dist.connect(node.name, node.cookie, timeout=5, tls=erl_dist.TlsOptions(ca_file=pki["ca"]))
    assert err.value.reason == "tls_failed"
    assert "client certificate" in str(err.value)
    tls = erl_dist.TlsOptions(ca_file=pki["ca"], cert_file=pki["client_cert"], key_file=pki["client_key"])
    with erl_dist.connect(node.name, node.cookie, timeout=5, tls=tls) as conn:
        assert conn.rpc("erlang", "node", []) == node.name


def test_dist_port_with_nothing_listening():
    with pytest.raises(erl_epmd.DistError) as err:
        erl_dist.connect("x@127.0.0.1", "c", timeout=3, dist_port=beamnodes.free_port())
    assert err.value.reason == "dist_port_unreachable"


def test_silent_peer_is_bounded_by_the_timeout():
    with beamnodes.SilentListener() as silent:
        started = time.monotonic()
        with pytest.raises(erl_epmd.DistTimeout):
            erl_dist.connect("x@127.0.0.1", "c", timeout=0.4, dist_port=silent.port)
        assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("bad", ["", "nohost", "a@", "@h", "a@b@c", "a b@h", 42, None])
def test_malformed_node_names_are_refused(bad):
    with pytest.raises(ValueError) as err:
        erl_dist.connect(bad, "c", timeout=1)
    assert "node name" in str(err.value)


def test_cookie_must_be_a_string():
    with pytest.raises(ValueError) as err:
        erl_dist.connect("a@127.0.0.1", 1234, timeout=1)
    assert "cookie" in str(err.value)


def test_digest_matches_the_documented_formula():
    import hashlib
    assert erl_dist.digest(0xDEADBEEF, "abc") == hashlib.md5(b"abc3735928559").digest()


def test_hidden_flags():
    assert not erl_dist.CLIENT_FLAGS & erl_dist.DFLAG_PUBLISHED
    assert erl_dist.CLIENT_FLAGS & 0x403070F94 == 0x403070F94
    assert not erl_dist.CLIENT_FLAGS & 0x2000  # DIST_HDR_ATOM_CACHE
    assert not erl_dist.CLIENT_FLAGS & 0x800000  # FRAGMENTS


@pytest.mark.parametrize("release", RELEASES)
def test_fixed_local_name_replaces_its_stale_connection(nodes, release):
    # The node answers 'alive' to a second connection under a name it already has; the client lets it
    # drop the old one, which is what a re-run with a fixed local_node needs.
    node = nodes[(release, "plain")]
    local = "fixed_verifier_%s@127.0.0.1" % release
    with erl_dist.connect(node.name, node.cookie, timeout=5, local_node=local) as first:
        assert first.rpc("erlang", "node", []) == node.name
        with erl_dist.connect(node.name, node.cookie, timeout=5, local_node=local) as second:
            assert second.rpc("erlang", "node", []) == node.name
            assert node.hidden() == [local]
            with pytest.raises(erl_epmd.ConnectionClosed):
                first.rpc("erlang", "node", [], timeout=2)


# ---------------------------------------------------------------- the sans-IO core, fed with bytes built here
# from the documented wire formats (no sockets: the state machines take bytes and return bytes).
PEER = "peer@127.0.0.1"
LOCAL = "verifier_x@127.0.0.1"


def handshake_frame(body):
    return struct.pack(">H", len(body)) + body


def challenge_body(name=PEER, challenge=0xDEADBEEF, nlen=None):
    raw = name.encode()
    return b"N" + struct.pack(">QIIH", erl_dist.CLIENT_FLAGS, challenge, 5, len(raw) if nlen is None else nlen) + raw


def dist_frame(control, message=None):
    body = bytes([112]) + erl_term.encode(control) + (b"" if message is None else erl_term.encode(message))
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_handshake_state_machine_whatever_the_chunking(chunk):
    state = erl_dist.Handshake(PEER, "cookie", LOCAL, 7, 0x01020304)
    sent = state.start()
    assert sent[2:3] == b"N" and sent.endswith(LOCAL.encode())
    assert struct.unpack(">QIH", sent[3:17]) == (erl_dist.CLIENT_FLAGS, 7, len(LOCAL))
    tick = b"\x00\x00\x00\x00"
    ack = handshake_frame(b"a" + erl_dist.digest(0x01020304, "cookie"))
    stream = handshake_frame(b"sok") + handshake_frame(challenge_body()) + ack + tick
    replies, fed = b"", 0
    while not state.done:
        assert fed < len(stream)
        replies += state.feed(stream[fed:fed + chunk])
        fed += chunk
    assert state.peer_name == PEER and state.peer_flags == erl_dist.CLIENT_FLAGS
    # Our reply carries our challenge and the digest of theirs; what followed the ack is kept for the session.
    assert replies == handshake_frame(b"r" + struct.pack(">I", 0x01020304) + erl_dist.digest(0xDEADBEEF, "cookie"))
    assert state.rest + stream[fed:] == tick


def test_handshake_answers_alive_and_checks_the_ack():
    state = erl_dist.Handshake(PEER, "cookie", LOCAL, 7, 42)
    assert state.feed(handshake_frame(b"salive")) == handshake_frame(b"strue")
    assert state.feed(handshake_frame(challenge_body()))[2:3] == b"r"
    with pytest.raises(erl_dist.CookieRejected):
        state.feed(handshake_frame(b"a" + erl_dist.digest(43, "cookie")))


def test_challenge_name_running_past_its_frame_is_a_protocol_error():
    with pytest.raises(erl_dist.ProtocolError) as err:
        erl_dist.parse_challenge(challenge_body(nlen=200), PEER)
    assert "runs past the end" in str(err.value)
    state = erl_dist.Handshake(PEER, "cookie", LOCAL, 7, 42)
    state.feed(handshake_frame(b"sok"))
    with pytest.raises(erl_dist.ProtocolError):
        state.feed(handshake_frame(challenge_body(nlen=200)))


def test_challenge_from_another_name_is_a_name_mismatch():
    with pytest.raises(erl_dist.NameMismatch) as err:
        erl_dist.parse_challenge(challenge_body(name="peer@otherhost"), PEER)
    assert err.value.actual == "peer@otherhost" and "short names" in str(err.value)


@pytest.mark.parametrize("received, maybe_tls", [
    (b"", True),  # what a TLS listener does with our name frame
    (b"\x15\x03\x03\x00\x02", True),  # a TLS alert record
    (b"\x00\x0asok", False),  # a status frame cut short: not TLS, so no TLS probe
])
def test_hang_up_before_the_status_is_told_apart(received, maybe_tls):
    state = erl_dist.Handshake(PEER, "cookie", LOCAL, 7, 42)
    state.feed(received)
    error = state.closed()
    # connect() probes for TLS only after a ClosedBeforeStatus.
    assert isinstance(error, erl_dist.ClosedBeforeStatus) is maybe_tls and error.reason == "connection_closed"
    if received.startswith(b"\x00"):
        assert "middle of its status frame" in str(error)


def test_hang_up_after_the_status_and_after_the_reply():
    state = erl_dist.Handshake(PEER, "cookie", LOCAL, 7, 42)
    state.feed(handshake_frame(b"sok"))
    assert state.closed().reason == "connection_closed"
    state.feed(handshake_frame(challenge_body()))
    assert state.closed().reason == "cookie_rejected"


def test_session_splits_frames_answers_ticks_and_unlink_id():
    session = erl_dist.Session(LOCAL, PEER, 7, (1, 2))
    data, refs = session.gen_calls("rex", [erl_dist.rpc_request("erlang", "nodes", [])])
    assert len(refs) == 1 and data[4] == 112
    peer_pid = Pid(Atom(PEER), 9, 0, 5)
    unlink = (35, 77, peer_pid, session.pid)
    reply = dist_frame((2, Atom(""), session.pid), (refs[0], [Atom("a@h")]))
    stream = b"\x00\x00\x00\x00" + dist_frame(unlink) + reply
    # Everything but the last byte: no message yet, but the tick and UNLINK_ID are answered already.
    session.feed(stream[:-1])
    assert session.next_message() is None
    assert session.take_outgoing() == b"\x00\x00\x00\x00" + dist_frame((36, 77, session.pid, peer_pid))
    assert session.ticks_answered == 1 and session.unlinks_acked == 1
    session.feed(stream[-1:])
    control, message = session.next_message()
    session.collect(message)
    assert session.has_replies(refs) and session.pop_replies(refs) == [[Atom("a@h")]]
    assert session.next_message() is None and session.take_outgoing() == b""


def test_session_refuses_an_oversized_frame_from_its_length_alone():
    session = erl_dist.Session(LOCAL, PEER, 7, (1, 2), max_frame=1024)
    session.feed(struct.pack(">I", 1025))
    with pytest.raises(erl_dist.ProtocolError) as err:
        session.next_message()
    assert "1025-byte frame" in str(err.value)


def test_badrpc_among_results_raises_rpc_error():
    calls = [("erlang", "node", []), ("erlang", "nodes", [])]
    assert erl_dist.check_rpc_results(calls, [Atom("a@h"), []], PEER) == [Atom("a@h"), []]
    with pytest.raises(erl_dist.RpcError) as err:
        erl_dist.check_rpc_results(calls, [Atom("a@h"), (Atom("badrpc"), Atom("nodedown"))], PEER)
    assert "erlang:nodes/0 failed on %s: nodedown" % PEER in str(err.value)
