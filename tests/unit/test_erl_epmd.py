"""EPMD layer against the real EPMD of this machine (and a private one), with real OTP 25 and 28 nodes."""
import os
import shutil
import socket
import subprocess
import time

import pytest

import beamnodes
import otp
from ansible_collections.beamops.cluster.plugins.module_utils import erl_epmd

RELEASES = sorted(otp.runtimes())


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("epmd"))
    started = beamnodes.start_nodes([beamnodes.NodeSpec("epmd%s" % rel, release=rel) for rel in RELEASES], workdir)
    yield dict(zip(RELEASES, started))
    beamnodes.stop_nodes(started)


@pytest.mark.parametrize("release", RELEASES)
def test_names_and_port_please_agree_for_a_real_node(nodes, release):
    node = nodes[release]
    alive = node.name.split("@")[0]
    registered = erl_epmd.names("127.0.0.1", erl_epmd.Deadline(3))
    assert alive in registered
    info = erl_epmd.port_please("127.0.0.1", alive, erl_epmd.Deadline(3))
    assert info.port == registered[alive]
    assert info.name == alive
    assert info.node_type == 77  # every OTP node registers as normal; hidden-ness is not EPMD's business
    assert info.highest == 6
    # The port EPMD gives is the one the node itself says it listens on.
    assert node.eval("element(2, erl_epmd:port_please(\"%s\", \"127.0.0.1\"))" % alive) == str(info.port)


def test_ipv6_loopback_reaches_the_same_epmd(nodes):
    names4 = erl_epmd.names("127.0.0.1", erl_epmd.Deadline(3))
    names6 = erl_epmd.names("::1", erl_epmd.Deadline(3), family="inet6")
    for node in nodes.values():
        alive = node.name.split("@")[0]
        assert names6[alive] == names4[alive]


def test_unknown_name_is_not_registered():
    with pytest.raises(erl_epmd.NotRegistered) as err:
        erl_epmd.port_please("127.0.0.1", "no_such_node_%d" % os.getpid(), erl_epmd.Deadline(3))
    assert err.value.reason == "not_registered"


def test_closed_port_is_epmd_unreachable():
    with pytest.raises(erl_epmd.DistError) as err:
        erl_epmd.names("127.0.0.1", erl_epmd.Deadline(3), port=beamnodes.free_port())
    assert err.value.reason == "epmd_unreachable"
    assert "refused" in str(err.value)


def test_unresolvable_host_is_epmd_unreachable():
    with pytest.raises(erl_epmd.DistError) as err:
        erl_epmd.names("no-such-host.invalid", erl_epmd.Deadline(3))
    assert err.value.reason == "epmd_unreachable"


def test_silent_epmd_is_bounded_by_the_deadline():
    # A real listening socket that never answers stands for a hung EPMD.
    with beamnodes.SilentListener() as silent:
        started = time.monotonic()
        with pytest.raises(erl_epmd.DistTimeout) as err:
            erl_epmd.port_please("127.0.0.1", "x", erl_epmd.Deadline(0.3), port=silent.port)
        elapsed = time.monotonic() - started
    assert err.value.reason == "timeout"
    assert 0.25 < elapsed < 1.5


def test_private_epmd_on_another_port(tmp_path):
    port = beamnodes.free_port()
    proc = subprocess.Popen([shutil.which("epmd") or "/usr/bin/epmd", "-port", str(port), "-address", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        beamnodes.wait_until(lambda: _listening(port), timeout=5)
        assert erl_epmd.names("127.0.0.1", erl_epmd.Deadline(3), port=port) == {}
        spec = beamnodes.NodeSpec("privepmd", release=RELEASES[0], env={"ERL_EPMD_PORT": str(port)})
        started = beamnodes.start_nodes([spec], str(tmp_path))
        try:
            registered = erl_epmd.names("127.0.0.1", erl_epmd.Deadline(3), port=port)
            assert list(registered) == [spec.alive]
            assert spec.alive not in erl_epmd.names("127.0.0.1", erl_epmd.Deadline(3))
        finally:
            beamnodes.stop_nodes(started)
    finally:
        proc.kill()
        proc.wait(5)


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def test_parse_names_skips_junk_lines():
    data = b"\x00\x00\x11\x11name a at port 4000\ngarbage line\nname b at port x\nname c at port 5000\n"
    assert erl_epmd.parse_names(data) == {"a": 4000, "c": 5000}


def test_parse_port2_error_and_success():
    with pytest.raises(erl_epmd.NotRegistered):
        erl_epmd.parse_port2(bytes([119, 1]), "a")
    reply = bytes([119, 0]) + bytes.fromhex("1f90") + bytes([77, 0]) + bytes.fromhex("00060006") + b"\x00\x01a\x00\x00"
    assert erl_epmd.parse_port2(reply, "a") == erl_epmd.NodePort(8080, 77, 0, 6, 6, "a", b"")
    with pytest.raises(erl_epmd.EpmdUnreachable):
        erl_epmd.parse_port2(bytes([120, 0]), "a")
