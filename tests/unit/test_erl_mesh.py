"""Mesh reports and diagnosis against real OTP 25 and OTP 28 nodes on loopback."""
import socket
import threading
import time

import pytest

import beamnodes
import otp
from ansible_collections.beamops.cluster.plugins.module_utils import erl_dist, erl_driver, erl_mesh

RELEASES = sorted(otp.runtimes())
TLS_RELEASES = [pytest.param(rel, marks=pytest.mark.skipif(
    rel != "25", reason="the OTP %s runtime on this machine has no ssl application, so it cannot run TLS "
                        "distribution" % rel)) for rel in RELEASES]

GROUPS = {
    "mesh": 3,      # one full mesh
    "split": 4,     # two pairs that never met
    "chain": 3,     # connect_all false: a-b, b-c only
    "lone": 1,      # up, connected to nobody
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return beamnodes.make_test_pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pki):
    """{(release, group): [BeamNode, ...]} started all at once, wired into their shapes."""
    workdir = str(tmp_path_factory.mktemp("mesh"))
    layout = []
    for rel in RELEASES:
        for group, count in GROUPS.items():
            args = ["-connect_all", "false"] if group == "chain" else []
            for index in range(count):
                layout.append(((rel, group), beamnodes.NodeSpec("%s%d_%s" % (group, index, rel), release=rel, args=args)))
        layout.append(((rel, "short"), beamnodes.NodeSpec("short_%s" % rel, release=rel, short=True)))
    if "25" in RELEASES:
        tls = dict(certfile=pki["server_cert"], keyfile=pki["server_key"], cacertfile=pki["ca"], verify_client=True)
        for index in range(2):
            layout.append((("25", "tls"), beamnodes.NodeSpec("tls%d" % index, release="25", tls=tls)))
    started = beamnodes.start_nodes([spec for _key, spec in layout], workdir)
    groups = {}
    for (key, _spec), node in zip(layout, started):
        groups.setdefault(key, []).append(node)
    try:
        for rel in RELEASES:
            beamnodes.connect_mesh(groups[(rel, "mesh")])
            split = groups[(rel, "split")]
            beamnodes.connect_mesh(split[:2])
            beamnodes.connect_mesh(split[2:])
            chain = groups[(rel, "chain")]
            chain[0].connect(chain[1])
            chain[1].connect(chain[2])
        if "25" in RELEASES:
            beamnodes.connect_mesh(groups[("25", "tls")])
    except BaseException:
        beamnodes.stop_nodes(started)
        raise
    yield groups
    beamnodes.stop_nodes(started)


def names(nodes):
    return [n.name for n in nodes]


def report(nodes, cookie=None, **kwargs):
    kwargs.setdefault("timeout", 5)
    return erl_mesh.mesh_report(names(nodes), cookie or nodes[0].cookie, **kwargs)


@pytest.mark.parametrize("release", RELEASES)
def test_full_mesh(cluster, release):
    nodes = cluster[(release, "mesh")]
    result = report(nodes)
    everyone = sorted(names(nodes))
    assert result["full_mesh"] is True
    assert result["members"] == everyone
    assert result["partitions"] == [everyone]
    assert result["missing_links"] == [] and result["unreachable"] == [] and result["unlisted"] == []
    assert list(result["per_node"]) == names(nodes)  # in the order given
    for node in nodes:
        entry = result["per_node"][node.name]
        assert entry["reachable"] is True and entry["reason"] == "ok"
        assert entry["name"] == node.name
        assert entry["connected"] == sorted(set(everyone) - {node.name})
        assert entry["hidden"] == []  # our own connection is left out
    assert erl_mesh.diagnosis(result) == []
    assert 0 <= result["elapsed_ms"] < 5000


@pytest.mark.parametrize("release", RELEASES)
def test_nodes_beyond_the_socket_cap_wait_their_turn(cluster, release, monkeypatch):
    # A long node list keeps at most MAX_SOCKETS sockets open; with the cap at 2 every node is still asked.
    monkeypatch.setattr(erl_mesh, "MAX_SOCKETS", 2)
    nodes = cluster[(release, "mesh")]
    result = report(nodes)
    assert result["full_mesh"] is True
    assert all(entry["reason"] == "ok" for entry in result["per_node"].values())


HIDDEN_NODEUPS = ("list_to_binary(lists:join(\" \", [atom_to_list(N) || N <- "
                  "(fun F(Acc) -> receive {nodeup, N, _} -> F([N | Acc]) after 0 -> Acc end end)([])]))")


@pytest.mark.parametrize("release", RELEASES)
def test_one_report_is_one_hidden_node(cluster, release):
    # Every connection of a report uses the same name (and so the same query frames, encoded once): each node
    # sees that one hidden node come up, and the report leaves it out of the hidden lists.
    nodes = cluster[(release, "mesh")]
    for node in nodes:
        node.eval("net_kernel:monitor_nodes(true, [{node_type, hidden}])")
        node.eval(HIDDEN_NODEUPS)  # drop what earlier tests left
    try:
        result = report(nodes)
        assert result["full_mesh"] is True
        seen = {}
        for node in nodes:
            beamnodes.wait_until(lambda node=node: seen.setdefault(node.name, []).extend(node.eval(HIDDEN_NODEUPS).split())
                                 or seen[node.name])
        names_used = set(name for found in seen.values() for name in found)
        assert len(names_used) == 1, seen
        assert all(len(found) == 1 for found in seen.values()), seen
        assert names_used.pop().startswith("beamops_")
        assert all(entry["hidden"] == [] for entry in result["per_node"].values())
    finally:
        for node in nodes:
            node.eval("net_kernel:monitor_nodes(false, [{node_type, hidden}])")


def test_a_refused_address_gives_way_to_the_next(cluster, monkeypatch):
    # A host name with several addresses (IPv6 first, as getaddrinfo often orders them) where the node listens on
    # one only. This machine has no such name and its /etc/hosts is not the tests' to change, so resolve() is
    # wrapped to put ::1, where nothing listens on the node's port, before the real 127.0.0.1 answer.
    real_resolve = erl_driver.resolve

    def resolve_with_ipv6_first(host, port, deadline, family=None, reason="epmd_unreachable"):
        found = real_resolve(host, port, deadline, family, reason)
        if reason == "dist_port_unreachable":
            found = [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("::1", port, 0, 0))] + found
        return found

    monkeypatch.setattr(erl_driver, "resolve", resolve_with_ipv6_first)
    nodes = cluster[(RELEASES[0], "mesh")]
    result = report(nodes)
    assert result["full_mesh"] is True
    assert [entry["reason"] for entry in result["per_node"].values()] == ["ok"] * len(nodes)


@pytest.mark.parametrize("release", RELEASES)
def test_verification_leaves_every_node_as_it_was(cluster, release):
    everyone = [n for key, group in cluster.items() if key[0] == release for n in group]
    before = dict((n.name, (n.visible(), n.hidden())) for n in everyone)
    result = erl_mesh.mesh_report(names(everyone), everyone[0].cookie, timeout=5)
    assert len(result["members"]) == len(everyone) - (2 if release == "25" and ("25", "tls") in cluster else 0)
    for node in everyone:
        assert node.visible() == before[node.name][0], "verification changed nodes() of %s" % node.name
    # Our hidden connections go away with the report; nothing else appears.
    for node in everyone:
        beamnodes.wait_until(lambda node=node: node.hidden() == before[node.name][1])


@pytest.mark.parametrize("release", RELEASES)
def test_split_in_two(cluster, release):
    nodes = cluster[(release, "split")]
    a, b, c, d = names(nodes)
    result = report(nodes)
    assert result["full_mesh"] is False
    assert result["partitions"] == sorted([sorted([a, b]), sorted([c, d])])
    assert result["missing_links"] == sorted(sorted(pair) for pair in ((a, c), (a, d), (b, c), (b, d)))
    for node in (a, b, c, d):
        entry = result["per_node"][node]
        assert entry["reason"] == "partitioned"
        assert "partition of 2 nodes" in entry["message"]


@pytest.mark.parametrize("release", RELEASES)
def test_missing_links_without_connect_all(cluster, release):
    a, b, c = names(cluster[(release, "chain")])
    result = report(cluster[(release, "chain")])
    assert result["partitions"] == [sorted([a, b, c])]
    assert result["missing_links"] == [sorted([a, c])]
    assert result["per_node"][b]["reason"] == "ok"
    assert result["per_node"][a]["reason"] == "missing_links" and c in result["per_node"][a]["message"]
    assert result["per_node"][c]["reason"] == "missing_links"
    assert result["full_mesh"] is False


@pytest.mark.parametrize("release", RELEASES)
def test_isolated_node_and_unlisted_peers(cluster, release):
    mesh = cluster[(release, "mesh")]
    lone = cluster[(release, "lone")][0]
    result = report(mesh[:2] + [lone])
    assert result["per_node"][lone.name]["reason"] == "isolated"
    # The two that form the main partition do not stand apart: the lone node does.
    assert [result["per_node"][n]["reason"] for n in names(mesh[:2])] == ["ok", "ok"]
    assert result["partitions"] == [sorted(names(mesh[:2])), [lone.name]]
    assert result["unlisted"] == [mesh[2].name]


@pytest.mark.parametrize("release", RELEASES)
def test_expected_size(cluster, release):
    mesh = cluster[(release, "mesh")]
    assert report(mesh[:1], expected=3)["full_mesh"] is True
    result = report(mesh[:1], expected=4)
    assert result["full_mesh"] is False
    assert result["per_node"][mesh[0].name]["reason"] == "too_few_peers"


@pytest.mark.parametrize("release", RELEASES)
def test_node_that_is_down(cluster, release, tmp_path):
    mesh = cluster[(release, "mesh")]
    gone = beamnodes.start_nodes([beamnodes.NodeSpec("gone", release=release)], str(tmp_path))[0]
    gone.stop()
    result = report(mesh + [gone])
    entry = result["per_node"][gone.name]
    assert entry["reachable"] is False and entry["reason"] == "not_registered"
    # The message lists what EPMD has, so a typo or a renamed node shows at once.
    assert mesh[0].name.split("@")[0] in entry["message"]
    assert result["unreachable"] == [gone.name]
    assert result["members"] == sorted(names(mesh))
    assert result["full_mesh"] is False
    assert all(result["per_node"][n.name]["reason"] == "ok" for n in mesh)
    assert any(line.startswith(gone.name + ": not_registered") for line in erl_mesh.diagnosis(result))


@pytest.mark.parametrize("release", RELEASES)
def test_wrong_cookie(cluster, release):
    nodes = cluster[(release, "mesh")]
    result = report(nodes, cookie="definitely-not-it")
    assert result["members"] == [] and result["partitions"] == []
    assert result["unreachable"] == sorted(names(nodes))
    assert set(e["reason"] for e in result["per_node"].values()) == {"cookie_rejected"}
    assert "cookie" in result["per_node"][nodes[0].name]["message"]


@pytest.mark.parametrize("release", RELEASES)
def test_name_mismatch(cluster, release):
    nodes = cluster[(release, "mesh")]
    alive = nodes[0].name.split("@")[0]
    for dialled in (alive + "@localhost", alive + "@127.0.0.2"):  # names of this same host
        result = erl_mesh.mesh_report([dialled] + names(nodes[1:]), nodes[0].cookie, timeout=5)
        entry = result["per_node"][dialled]
        assert entry["reason"] == "name_mismatch"
        assert entry["name"] == nodes[0].name
        assert nodes[0].name in entry["message"] and dialled in entry["message"]
        # Its peers still see it under its real name, which is not in the list.
        assert result["unlisted"] == [nodes[0].name]


@pytest.mark.parametrize("release", RELEASES)
def test_short_and_long_names(cluster, release):
    mesh = cluster[(release, "mesh")]
    short = cluster[(release, "short")][0]
    result = report(mesh + [short])
    entry = result["per_node"][short.name]
    assert entry["reachable"] is True and entry["reason"] == "name_type_mismatch"
    assert "short names" in entry["message"] and "long names" in entry["message"]
    # Dialled by a long name, the short-name node is a name mismatch whose message tells the name types apart.
    dialled = short.name.split("@")[0] + "@127.0.0.1"
    result = erl_mesh.mesh_report([dialled], short.cookie, timeout=5)
    assert result["per_node"][dialled]["reason"] == "name_mismatch"
    assert result["per_node"][dialled]["name"] == short.name
    assert "short names" in result["per_node"][dialled]["message"]


@pytest.mark.parametrize("release", TLS_RELEASES)
def test_tls_mesh(cluster, pki, release):
    nodes = cluster[(release, "tls")]
    plain = report(nodes)
    assert set(e["reason"] for e in plain["per_node"].values()) == {"tls_required"}
    no_cert = report(nodes, tls=erl_dist.TlsOptions(ca_file=pki["ca"]))
    assert set(e["reason"] for e in no_cert["per_node"].values()) == {"tls_failed"}
    tls = erl_dist.TlsOptions(ca_file=pki["ca"], cert_file=pki["client_cert"], key_file=pki["client_key"])
    result = report(nodes, tls=tls)
    assert result["full_mesh"] is True
    assert result["partitions"] == [sorted(names(nodes))]


def test_unreachable_epmd_and_dist_port(cluster):
    node = cluster[(RELEASES[0], "mesh")][0]
    result = erl_mesh.mesh_report([node.name], node.cookie, timeout=3, epmd_port=beamnodes.free_port())
    assert result["per_node"][node.name]["reason"] == "epmd_unreachable"
    result = erl_mesh.mesh_report([node.name], node.cookie, timeout=3, dist_port=beamnodes.free_port())
    assert result["per_node"][node.name]["reason"] == "dist_port_unreachable"


@pytest.mark.parametrize("release", RELEASES)
def test_epmd_less_node(release, tmp_path):
    spec = beamnodes.NodeSpec("nomd", release=release, dist_port=beamnodes.free_port())
    started = beamnodes.start_nodes([spec], str(tmp_path))
    try:
        result = erl_mesh.mesh_report([spec.node], spec.cookie, timeout=5, dist_port=spec.dist_port)
        assert result["per_node"][spec.node]["reason"] == "ok"
        assert result["full_mesh"] is True
        result = erl_mesh.mesh_report([spec.node], spec.cookie, timeout=5)
        assert result["per_node"][spec.node]["reason"] == "not_registered"
    finally:
        beamnodes.stop_nodes(started)


def test_hung_node_is_bounded_by_the_deadline(cluster):
    node = cluster[(RELEASES[0], "mesh")][0]
    with beamnodes.SilentListener() as silent:
        started = time.monotonic()
        result = erl_mesh.mesh_report(["hung@127.0.0.1"], node.cookie, timeout=0.5, dist_port=silent.port)
        elapsed = time.monotonic() - started
    assert result["per_node"]["hung@127.0.0.1"]["reason"] == "timeout"
    assert elapsed < 1.5


@pytest.mark.parametrize("release", RELEASES)
def test_wait_for_mesh_converges_when_the_nodes_connect(release, tmp_path):
    pair = beamnodes.start_nodes([beamnodes.NodeSpec("w%d" % i, release=release) for i in range(2)], str(tmp_path))
    try:
        # A link that drops: met, then disconnected.
        beamnodes.connect_mesh(pair)
        assert erl_mesh.mesh_report(names(pair), pair[0].cookie, timeout=5)["full_mesh"] is True
        pair[0].disconnect(pair[1])
        beamnodes.wait_until(lambda: pair[1].visible() == [])
        split = erl_mesh.mesh_report(names(pair), pair[0].cookie, timeout=5)
        assert [split["per_node"][n]["reason"] for n in names(pair)] == ["isolated", "isolated"]
        converged, result, after_ms, attempts = erl_mesh.wait_for_mesh(names(pair), pair[0].cookie, timeout=0.6,
                                                                       poll_ms=50)
        assert (converged, after_ms) == (False, None) and attempts >= 1, (converged, after_ms, attempts, result)
        assert result["partitions"] == [[pair[0].name], [pair[1].name]]
        timer = threading.Timer(0.5, pair[0].connect, args=(pair[1],))
        timer.start()
        converged, result, after_ms, attempts = erl_mesh.wait_for_mesh(names(pair), pair[0].cookie, timeout=15,
                                                                       poll_ms=50)
        timer.join()
        assert converged is True and result["full_mesh"] is True, (attempts, result)
        # The nodes met 0.5 s after the wait began; it noticed within a few polls.
        assert 400 <= after_ms < 10000 and attempts >= 2, (after_ms, attempts)
    finally:
        beamnodes.stop_nodes(pair)


@pytest.mark.parametrize("bad, field", [([], "nodes"), (["a@h", "nohost"], "nodes"), ("a@h", "nodes"),
                                        ([42], "nodes")])
def test_bad_node_lists(bad, field):
    with pytest.raises(ValueError) as err:
        erl_mesh.mesh_report(bad, "cookie")
    assert str(err.value).startswith(field)
