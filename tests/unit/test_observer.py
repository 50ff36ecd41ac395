"""The observer against real OTP 25 and OTP 28 nodes on loopback: rate, faults (SIGKILL, SIGSTOP, restart),
hiddenness, scale-out, TLS, dial addresses, the file and its reader, and the command line.

Timing assertions have wide margins (the machine is shared); the benchmark measures the real figures.
"""
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

import beamnodes
import otp
from ansible_collections.beamops.cluster.plugins.module_utils import erl_dist, observer as obs

RELEASES = sorted(otp.runtimes())


def start_mesh(tmp_path, release, count=3, prefix="obs", **spec):
    nodes = beamnodes.start_nodes([beamnodes.NodeSpec("%s%d" % (prefix, i), release=release, **spec)
                                   for i in range(count)], str(tmp_path))
    try:
        beamnodes.connect_mesh(nodes)
    except BaseException:
        beamnodes.stop_nodes(nodes)
        raise
    return nodes


def names(nodes):
    return [n.name for n in nodes]


def full_mesh(nodes):
    everyone = set(names(nodes))
    return lambda views: all(views.get(n) == everyone - {n} for n in everyone)


@pytest.fixture
def mesh(tmp_path, request):
    nodes = start_mesh(tmp_path, request.param)
    yield nodes
    beamnodes.stop_nodes(nodes)


@pytest.mark.parametrize("mesh", RELEASES, indirect=True)
def test_samples_at_the_configured_rate_and_the_file_replays(mesh, tmp_path):
    out = str(tmp_path / "run.jsonl")
    with obs.Observer(names(mesh), mesh[0].cookie, interval=0.1, out=out, full_every=0.5) as observer:
        assert observer.wait_until(full_mesh(mesh), 10) is not None
        observer.mark("phase", name="steady", hosts=3)
        time.sleep(2.0)
        stats = observer.stats()
        latest = observer.latest()
    history = observer.history()
    assert os.stat(out).st_mode & 0o777 == 0o600
    samples = list(obs.replay(out))
    # The reader gives back exactly what the observer saw, sample by sample.
    assert [(s.t, s.utc, s.views) for s in samples] == [(s.t, s.utc, s.views) for s in history]
    assert samples[-1].views == dict((n, p.peers) for n, p in latest.items())
    gaps = sorted(b.t - a.t for a, b in zip(samples, samples[1:]))
    assert len(samples) >= 15, len(samples)
    assert 0.08 <= gaps[len(gaps) // 2] <= 0.12, gaps
    assert stats["rate_hz"] > 7 and stats["interval_ms"]["p50"] == pytest.approx(100, abs=20)
    records = obs.read_records(out)
    header = records[0]
    assert header["k"] == "header" and header["interval_s"] == 0.1 and header["nodes"] == names(mesh)
    marks = [r for r in records if r["k"] == "mark"]
    assert marks == [dict(marks[0], label="phase", data={"name": "steady", "hosts": 3})]
    resolution = [r for r in records if r["k"] == "resolution"]
    assert resolution and resolution[-1]["final"] is True and resolution[-1]["interval_ms"]["p50"] is not None
    kinds = [json.loads(line)["k"] for line in open(out)]
    assert kinds.count("full") >= 3  # every 0.5 s
    # Changes only between full views: a steady mesh writes bare sample lines.
    steady = [json.loads(line) for line in open(out) if '"k":"sample"' in line]
    assert sum(1 for r in steady if "v" not in r) >= len(steady) - 3


@pytest.mark.parametrize("mesh", RELEASES, indirect=True)
def test_a_node_killed_with_sigkill_is_seen_within_a_few_samples(mesh):
    victim, others = mesh[2], mesh[:2]
    with obs.Observer(names(mesh), mesh[0].cookie, interval=0.1) as observer:
        assert observer.wait_until(full_mesh(mesh), 10) is not None
        killed_at = time.monotonic()
        os.kill(victim.proc.pid, signal.SIGKILL)
        seen = observer.wait_until(lambda v: v[victim.name] is None
                                   and all(victim.name not in (v[n.name] or ()) for n in others), 10)
        assert seen is not None
        # The session closes at once (kill -9), so the next sample or two show it; 1 s is a wide margin.
        assert seen - killed_at < 1.0, seen - killed_at
        later = observer.latest()
    assert later[others[0].name].peers == {others[1].name}


@pytest.mark.parametrize("mesh", RELEASES, indirect=True)
def test_a_frozen_node_does_not_stall_the_sampling_of_the_others(mesh):
    frozen, others = mesh[0], mesh[1:]
    with obs.Observer(names(mesh), mesh[0].cookie, interval=0.1) as observer:
        assert observer.wait_until(full_mesh(mesh), 10) is not None
        os.kill(frozen.proc.pid, signal.SIGSTOP)
        try:
            stopped_at = time.monotonic()
            time.sleep(2.0)
            during = [s for s in observer.history() if s.t > stopped_at + 0.15]
        finally:
            os.kill(frozen.proc.pid, signal.SIGCONT)
        assert len(during) >= 12, len(during)  # about 18 at 10 Hz
        assert all(s.views[frozen.name] is None for s in during)
        for node in others:
            answered = sum(1 for s in during if s.views[node.name] is not None)
            assert answered >= len(during) - 2, (node.name, answered, len(during))
        # Thawed, it answers again on the session it kept.
        assert observer.wait_until(full_mesh(mesh), 10) is not None
        assert observer._driver.links[frozen.name].sessions == 1


@pytest.mark.parametrize("release", RELEASES)
def test_reconnects_to_a_node_restarted_under_the_same_name(tmp_path, release):
    nodes = start_mesh(tmp_path, release, count=2, prefix="re")
    out = str(tmp_path / "restart.jsonl")
    try:
        with obs.Observer(names(nodes), nodes[0].cookie, interval=0.1, out=out) as observer:
            assert observer.wait_until(full_mesh(nodes), 10) is not None
            nodes[1].stop()
            assert observer.wait_until(lambda v: v[nodes[1].name] is None, 10) is not None
            spec = nodes[1].spec
            again = beamnodes.start_nodes([beamnodes.NodeSpec(spec.alive, release=release, exact=True)], str(tmp_path))
            nodes[1] = again[0]
            nodes[0].connect(nodes[1])
            assert observer.wait_until(full_mesh(nodes), 15) is not None
            assert observer._driver.links[nodes[1].name].sessions == 2
        links = [r for r in obs.read_records(out) if r["k"] == "link" and r["node"] == 1]
        assert [r["up"] for r in links][:2] == [True, False] and links[-1]["up"] is True
        assert links[1]["reason"] == "connection_closed"
    finally:
        beamnodes.stop_nodes(nodes)


@pytest.mark.parametrize("mesh", RELEASES, indirect=True)
def test_the_observer_is_hidden(mesh):
    with obs.Observer(names(mesh), mesh[0].cookie, interval=0.1) as observer:
        assert observer.wait_until(full_mesh(mesh), 10) is not None
        ours = observer._driver.local_names
        for _round in range(3):
            for node in mesh:
                assert not set(node.visible()) & ours
                assert set(node.hidden()) == ours
            time.sleep(0.2)
        # What the observer reports never includes itself either.
        assert all(not (view.peers & ours) for view in observer.latest().values())
    for node in mesh:
        beamnodes.wait_until(lambda node=node: node.hidden() == [])


def test_scale_out_and_nodes_of_both_releases(tmp_path):
    nodes = start_mesh(tmp_path, RELEASES[0], count=2, prefix="so")
    out = str(tmp_path / "scale.jsonl")
    try:
        with obs.Observer(names(nodes), nodes[0].cookie, interval=0.1, out=out) as observer:
            assert observer.wait_until(full_mesh(nodes), 10) is not None
            extra = beamnodes.start_nodes([beamnodes.NodeSpec("so_new", release=RELEASES[-1])], str(tmp_path))[0]
            nodes.append(extra)
            extra.connect(nodes[0])
            # Before it is added, the others already report it as an unlisted peer.
            assert observer.wait_until(lambda v: all(extra.name in (v[n.name] or ()) for n in nodes[:2]), 10)
            observer.add_nodes([extra.name])
            assert observer.wait_until(full_mesh(nodes), 10) is not None
        views = [s.views for s in obs.replay(out)]
        assert extra.name not in views[0] and views[-1][extra.name] == {nodes[0].name, nodes[1].name}
        header = obs.read_records(out, kinds=("header",))[0]
        table = dict((str(i), n) for i, n in enumerate(header["nodes"]))
        for record in obs.read_records(out, kinds=("names",)):
            table.update(record["names"])
        added = [r["members"] for r in obs.read_records(out, kinds=("names",)) if r["members"]]
        assert [[table[str(i)] for i in members] for members in added] == [[extra.name]]
    finally:
        beamnodes.stop_nodes(nodes)


@pytest.mark.skipif("25" not in RELEASES, reason="TLS distribution needs the ssl application, which only OTP 25 has here")
def test_tls_nodes_through_the_same_driver(tmp_path):
    pki = beamnodes.make_test_pki(str(tmp_path))
    tls = dict(certfile=pki["server_cert"], keyfile=pki["server_key"], cacertfile=pki["ca"], verify_client=True)
    nodes = start_mesh(tmp_path, "25", count=2, prefix="otls", tls=tls)
    try:
        options = erl_dist.TlsOptions(ca_file=pki["ca"], cert_file=pki["client_cert"], key_file=pki["client_key"])
        with obs.Observer(names(nodes), nodes[0].cookie, interval=0.1, tls=options) as observer:
            assert observer.wait_until(full_mesh(nodes), 10) is not None
    finally:
        beamnodes.stop_nodes(nodes)


@pytest.mark.parametrize("release", RELEASES)
def test_dial_reaches_a_node_whose_host_does_not_resolve(tmp_path, release):
    # Named as a pod would be; reachable only at the address given, as through a port-forward.
    spec = beamnodes.NodeSpec("pod", release=release, host="pod-0.beamops.invalid", dist_port=beamnodes.free_port())
    node = beamnodes.start_nodes([spec], str(tmp_path))[0]
    try:
        with obs.Observer([node.name], node.cookie, interval=0.1,
                          dial={node.name: "127.0.0.1:%d" % spec.dist_port}) as observer:
            assert observer.wait_until(lambda v: v[node.name] == frozenset(), 10) is not None
    finally:
        node.stop()


def test_command_line_reads_the_cookie_from_a_file(tmp_path, collections_root):
    nodes = start_mesh(tmp_path, RELEASES[0], count=2, prefix="cli")
    try:
        cookie_file = tmp_path / "cookie"
        cookie_file.write_text(nodes[0].cookie)
        os.chmod(str(cookie_file), stat.S_IRUSR | stat.S_IWUSR)
        out = tmp_path / "cli.jsonl"
        argv = [sys.executable, "-m", "ansible_collections.beamops.cluster.plugins.module_utils.observer",
                "--nodes", ",".join(names(nodes)), "--cookie-file", str(cookie_file), "--out", str(out),
                "--interval", "0.1", "--duration", "2"]
        run = subprocess.run(argv, env=dict(os.environ, PYTHONPATH=collections_root), capture_output=True,
                             text=True, timeout=60, check=False)
        assert run.returncode == 0, run.stderr
        stats = json.loads(run.stdout)
        assert stats["samples"] >= 5 and stats["answers"] >= 8, stats
        assert nodes[0].cookie not in " ".join(argv) + out.read_text()
        assert {nodes[0].name: {nodes[1].name}, nodes[1].name: {nodes[0].name}} in [
            s.views for s in obs.replay(str(out))]
        bad = subprocess.run(argv[:3] + ["--nodes", "nohost", "--cookie-file", str(cookie_file), "--out", str(out)],
                             env=dict(os.environ, PYTHONPATH=collections_root), capture_output=True, text=True,
                             timeout=60, check=False)
        assert bad.returncode == 2 and "nodes: 'nohost' is not a node name" in bad.stderr
    finally:
        beamnodes.stop_nodes(nodes)


@pytest.mark.parametrize("bad, words", [(dict(nodes=["nohost"]), "nodes:"), (dict(cookie=""), "cookie"),
                                        (dict(interval=0), "interval"),
                                        (dict(dial={"a@h": "h"}), "dial: a@h: 'h' is not an address")])
def test_bad_arguments_are_refused(bad, words):
    options = dict((key, value) for key, value in bad.items() if key not in ("nodes", "cookie"))
    with pytest.raises(ValueError) as err:
        obs.Observer(bad.get("nodes", ["a@h"]), bad.get("cookie", "c"), **options)
    assert words in str(err.value)
