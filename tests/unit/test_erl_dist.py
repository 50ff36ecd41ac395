"""The distribution client against real OTP 25 and OTP 28 nodes on loopback."""
import socket
import time

import pytest

import beamnodes
import fakepeer
import otp
from ansible_collections.beamops.cluster.plugins.module_utils import erl_dist, erl_epmd
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
