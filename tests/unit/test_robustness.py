"""Robustness of the distribution client against broken and hostile peers.

The peers here are FAKES (tests/fakepeer.py): no real BEAM node sends a 4 GiB frame header or a zlib bomb,
so only a fake can. `test_fake_node_is_faithful` first proves against a real OTP node that the fake speaks
the protocol correctly, so every failure below comes from the behaviour under test, not from a broken fake.

For every behaviour the client (connect + rpc under one deadline) and `mesh_report` must end with a
documented `DistError` reason (or a result) within the timeout plus a small margin: never a hang, never
another exception, never a huge allocation.
"""
import os
import random
import resource
import subprocess
import time

import pytest

from ansible_collections.beamops.cluster.plugins.module_utils import erl_dist, erl_epmd, erl_term
from ansible_collections.beamops.cluster.plugins.module_utils.erl_epmd import Deadline, DistError

import fakepeer
from fakepeer import DIST_BEHAVIOURS, EPMD_BEHAVIOURS, FakeEpmd, FakeNode

TIMEOUT = 1.0
MARGIN = 0.6
COOKIE = "robust-cookie"
NAME = "fake_%06d@127.0.0.1" % random.Random().randrange(10 ** 6)
PEER_SEES = ["x@127.0.0.1", "y@127.0.0.1"]
HIDDEN_SEEN = ["h@127.0.0.1"]
DOCUMENTED_REASONS = {"epmd_unreachable", "not_registered", "dist_port_unreachable", "cookie_rejected", "not_allowed",
                      "name_mismatch", "name_type_mismatch", "tls_required", "tls_failed", "timeout", "protocol_error",
                      "connection_closed", "rpc_error"}

# What the client must end with, per behaviour: "ok" (the call returns) or the diagnosis reasons accepted.
# Where more than one reason is accepted the peer's intent is ambiguous (a close before the status may be a
# TLS listener; a 64 MiB bomb within the decoder's limit is a legal but unrelated message).
DIST_EXPECTED = {
    "ok": {"ok"},
    "ok_ticks_first": {"ok"},
    "ok_unlink_id": {"ok"},
    "close_on_accept": {"tls_required", "connection_closed"},
    "garbage_on_accept": {"protocol_error"},
    "never_answer": {"timeout"},
    "close_after_name": {"tls_required", "connection_closed"},
    "status_slow_drip": {"timeout"},
    "status_endless": {"protocol_error"},
    "status_nok": {"connection_closed", "protocol_error"},
    "status_not_allowed": {"not_allowed"},
    "status_alive": {"timeout"},
    "status_bogus": {"protocol_error"},
    "status_empty": {"protocol_error"},
    "status_wrong_tag": {"protocol_error"},
    "status_truncated_close": {"protocol_error", "connection_closed", "tls_required"},
    "status_truncated_hold": {"timeout"},
    "close_after_status": {"connection_closed"},
    "challenge_truncated": {"protocol_error"},
    "challenge_v5": {"protocol_error"},
    "challenge_name_overflow": {"protocol_error", "timeout"},
    "close_after_reply": {"cookie_rejected"},
    "bad_digest": {"cookie_rejected"},
    "ack_truncated": {"protocol_error"},
    "ack_wrong_tag": {"protocol_error"},
    "ticks_only": {"timeout"},
    "flood_frames": {"timeout"},
    "reply_wrong_ref": {"timeout"},
    "reply_slow_drip": {"timeout"},
    "frame_oversized": {"protocol_error"},
    "frame_oversized_endless": {"protocol_error"},
    "frame_truncated_close": {"connection_closed"},
    "frame_not_pass_through": {"protocol_error"},
    "frame_garbage": {"protocol_error"},
    "term_garbage": {"protocol_error"},
    "term_compressed_bomb": {"protocol_error", "timeout"},
    "term_compressed_lie": {"protocol_error"},
    "term_compressed_4gib": {"protocol_error"},
    "term_deep_lists": {"protocol_error"},
    "term_deep_tuples": {"protocol_error"},
    "term_huge_list_len": {"protocol_error"},
    "term_huge_binary_len": {"protocol_error"},
    "term_huge_tuple_arity": {"protocol_error"},
    "term_huge_atom_len": {"protocol_error"},
    "term_bad_version": {"protocol_error"},
    "term_unknown_tag": {"protocol_error"},
    "reply_wrong_shape": {"ok"},  # the client returns 42 as is; judging the shape is the mesh layer's job
    "reply_badrpc": {"rpc_error"},
}

# EPMD behaviours, seen through connect() (PORT_PLEASE2) and names() (NAMES).
EPMD_EXPECTED_CONNECT = {
    "ok": {"ok"},
    "close_immediately": {"epmd_unreachable"},
    "never_answer": {"timeout"},
    "slow_drip": {"timeout"},
    "endless": {"epmd_unreachable", "dist_port_unreachable", "protocol_error", "timeout"},
    "names_malformed": {"ok"},  # only NAMES is broken; PORT_PLEASE2 is served correctly
    "names_truncated": {"ok"},
    "port_not_found": {"not_registered"},
    "port_truncated": {"epmd_unreachable"},
    "port_wrong_code": {"epmd_unreachable"},
    "port_name_overflow": {"ok", "epmd_unreachable", "timeout"},  # the port field itself is intact
    "port_zero": {"epmd_unreachable", "dist_port_unreachable"},
}
EPMD_EXPECTED_NAMES = {
    "ok": {"ok"},
    "close_immediately": {"epmd_unreachable"},
    "never_answer": {"timeout"},
    "slow_drip": {"timeout"},
    "endless": {"epmd_unreachable"},
    "names_malformed": {"ok", "epmd_unreachable"},
    "names_truncated": {"epmd_unreachable"},
    "port_not_found": {"ok"}, "port_truncated": {"ok"}, "port_wrong_code": {"ok"}, "port_name_overflow": {"ok"},
    "port_zero": {"ok"},
}


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def outcome_of(call):
    """Run `call`; returns (outcome, value, seconds) where outcome is "ok" or the DistError reason.
    Any other exception propagates and fails the test: that is the point."""
    start = time.monotonic()
    try:
        value = call()
        outcome = "ok"
    except DistError as exc:
        value = exc
        outcome = exc.reason
        assert str(exc), "a DistError must carry a message"
    return outcome, value, time.monotonic() - start


def connect_and_ask(node_name, **options):
    deadline = Deadline(TIMEOUT)
    conn = erl_dist.connect(node_name, COOKIE, deadline=deadline, **options)
    with conn:
        return conn.rpc("erlang", "nodes", [], deadline=deadline)


def test_catalogues_are_covered():
    assert set(DIST_EXPECTED) == set(DIST_BEHAVIOURS)
    assert set(EPMD_EXPECTED_CONNECT) == set(EPMD_BEHAVIOURS) == set(EPMD_EXPECTED_NAMES)
    for expected in list(DIST_EXPECTED.values()) + list(EPMD_EXPECTED_CONNECT.values()):
        assert expected <= DOCUMENTED_REASONS | {"ok"}


@pytest.mark.parametrize("release", ["25", "28"])
def test_fake_node_is_faithful(tmp_path, release):
    """A real OTP node completes the handshake with the fake and gets the fake's answers through rex."""
    import otp
    if release not in otp.runtimes():
        pytest.skip("OTP %s is not installed (scripts/install-otp28.sh installs 28)" % release)
    # A real node, registered in the fake EPMD, dials the fake node and calls its rex server.
    with FakeNode(NAME, COOKIE, visible=PEER_SEES, hidden=HIDDEN_SEEN) as fake, \
            FakeEpmd({NAME.split("@")[0]: fake.port}) as epmd:
        env = dict(os.environ, ERL_EPMD_PORT=str(epmd.port), HOME=str(tmp_path))
        expr = ("io:format(\"~p~n~p~n\", [gen_server:call({rex, '%s'}, {call, erlang, nodes, [], user}, 5000), "
                "gen_server:call({rex, '%s'}, {call, erlang, nodes, [[visible, hidden]], user}, 5000)]), halt()."
                % (NAME, NAME))
        run = subprocess.run([otp.runtimes()[release], "-noshell", "-name", "faith_%d@127.0.0.1" % os.getpid(),
                              "-setcookie", COOKIE, "-eval", expr], env=env, capture_output=True, text=True,
                             timeout=60, check=False)
        lines = run.stdout.split()
        assert lines == ["['x@127.0.0.1','y@127.0.0.1']", "['x@127.0.0.1','y@127.0.0.1','h@127.0.0.1']"], \
            run.stdout + run.stderr
        assert fake.sessions[0]["client_digest_ok"] is True


@pytest.mark.parametrize("behaviour", sorted(DIST_BEHAVIOURS))
def test_client_against_fake_node(behaviour):
    before = peak_rss_mib()
    with FakeNode(NAME, COOKIE, behaviour=behaviour, visible=PEER_SEES, hidden=HIDDEN_SEEN) as fake:
        outcome, value, seconds = outcome_of(lambda: connect_and_ask(NAME, dist_port=fake.port))
    assert seconds <= TIMEOUT + MARGIN, "%s took %.2f s (%s)" % (behaviour, seconds, outcome)
    assert outcome in DIST_EXPECTED[behaviour], "%s ended with %s: %s" % (behaviour, outcome, value)
    if behaviour.startswith("ok"):
        assert value == PEER_SEES
        session = fake.sessions[0]
        assert session["client_digest_ok"] is True
        assert session["client_flags"] & 0x1 == 0, "the client must stay hidden (PUBLISHED clear)"
    if behaviour == "reply_wrong_shape":
        assert value == 42
    # 4 GiB headers and lying compressed sizes must be refused before any allocation of that size.
    assert peak_rss_mib() - before < 256, "%s made the client allocate %.0f MiB" % (behaviour, peak_rss_mib() - before)


@pytest.mark.parametrize("behaviour", sorted(EPMD_BEHAVIOURS))
def test_client_against_fake_epmd(behaviour):
    alive = NAME.split("@")[0]
    with FakeNode(NAME, COOKIE, visible=PEER_SEES) as node, FakeEpmd({alive: 0}, behaviour=behaviour) as epmd:
        epmd.names[alive] = node.port
        outcome, value, seconds = outcome_of(lambda: connect_and_ask(NAME, epmd_port=epmd.port))
        assert seconds <= TIMEOUT + MARGIN, "connect via %s took %.2f s" % (behaviour, seconds)
        assert outcome in EPMD_EXPECTED_CONNECT[behaviour], "%s ended with %s: %s" % (behaviour, outcome, value)
        if outcome == "ok":
            assert value == PEER_SEES
        outcome, value, seconds = outcome_of(
            lambda: erl_epmd.names("127.0.0.1", Deadline(TIMEOUT), port=epmd.port))
        assert seconds <= TIMEOUT + MARGIN, "names via %s took %.2f s" % (behaviour, seconds)
        assert outcome in EPMD_EXPECTED_NAMES[behaviour], "names via %s ended with %s: %s" % (behaviour, outcome, value)
        if outcome == "ok":
            assert isinstance(value, dict)
            assert all(isinstance(port, int) and 0 < port < 65536 for port in value.values()), value
        if behaviour == "ok":
            assert value == {alive: node.port}
        if behaviour == "names_malformed" and outcome == "ok":
            assert value.get(alive) == node.port, "the valid line among the broken ones must still be read"


# ---------------------------------------------------------------- bounded fuzz of the handshake and frame parsers
FUZZ_SEED = 20261122
FUZZ_INPUTS = 2000
FUZZ_BUDGET = 2.0  # per input; every input ends at end-of-stream long before that


def rich_reply_payloads():
    """Pass-through frames carrying the kinds of terms a node may send, encoded by the project codec."""
    me = erl_term.Atom("beamops_fuzz@127.0.0.1")
    peer = erl_term.Atom("fuzz@127.0.0.1")
    pid = erl_term.Pid(me, 1, 0, 7)
    ref = erl_term.Reference(me, 7, (1, 2, 3))
    terms = [
        [erl_term.Atom("a@127.0.0.1"), erl_term.Atom("b@127.0.0.1")],
        {erl_term.Atom("k"): [1, 2.5, -(2 ** 70)], b"bin": (erl_term.Atom("ok"), "text")},
        (erl_term.Pid(peer, 99, 0, 3), erl_term.Reference(peer, 3, (5, 6, 7)), erl_term.Port(peer, 4, 3)),
        erl_term.ImproperList((1, 2), erl_term.Atom("tail")),
        erl_term.BitBinary(b"\xff\x80", 3),
        erl_term.Export(erl_term.Atom("erlang"), erl_term.Atom("nodes"), 0),
        list(range(300)),
    ]
    frames = []
    for term in terms:
        control = erl_term.encode((2, erl_term.Atom(""), pid))
        frames.append(b"p" + control + erl_term.encode((ref, term)))
    frames.append(b"p" + erl_term.encode((2, erl_term.Atom(""), pid)) + erl_term.encode(list(range(2000)), compressed=True))
    frames.append(b"p" + erl_term.encode((35, 9, erl_term.Pid(peer, 1, 0, 3), pid)))
    return frames


def test_bounded_fuzz_of_handshake_and_frames():
    rng = random.Random(FUZZ_SEED)
    handshake_seed = fakepeer.handshake_payloads("fuzz@127.0.0.1")
    reply_seeds = rich_reply_payloads()
    pool = handshake_seed + reply_seeds
    outcomes = {}
    messages_decoded = 0
    slowest = 0.0
    started = time.monotonic()
    for index in range(FUZZ_INPUTS):
        t0 = time.monotonic()
        if index % 2 == 0:
            data = fakepeer.mutate_frames(handshake_seed, 2, rng, pool)
            outcome = "handshake:" + fakepeer.drive_handshake(data, "fuzz@127.0.0.1", FUZZ_BUDGET)
        else:
            seeds = [rng.choice(reply_seeds) for _unused in range(rng.randint(1, 3))]
            data = fakepeer.mutate_frames(seeds, 4, rng, pool)
            reason, received = fakepeer.drive_frames(data, "fuzz@127.0.0.1", FUZZ_BUDGET)
            outcome = "frames:" + reason
            messages_decoded += received
        slowest = max(slowest, time.monotonic() - t0)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    elapsed = time.monotonic() - started
    print("fuzz: %d inputs in %.1f s, slowest %.1f ms, %d messages decoded, outcomes %s"
          % (FUZZ_INPUTS, elapsed, slowest * 1000, messages_decoded, sorted(outcomes.items())))
    assert slowest < FUZZ_BUDGET, "an input ran into the per-input budget: something waited instead of failing"
    for outcome in outcomes:
        assert outcome.split(":")[1] in DOCUMENTED_REASONS | {"ok"}, outcome
    # The mutations must reach past the framing: valid messages decoded, and the handshake sometimes passes
    # its parsing all the way to the digest check (cookie_rejected: the fuzz cannot forge the random challenge).
    assert messages_decoded > FUZZ_INPUTS // 4
    assert outcomes.get("handshake:cookie_rejected", 0) > 0
    assert outcomes.get("frames:protocol_error", 0) > 0


# ---------------------------------------------------------------- the mesh layer over the same misbehaving peers
def test_mesh_report_with_every_misbehaving_peer_at_once():
    """One report over a node per behaviour (all in parallel): bounded by one timeout, a reason for each."""
    from ansible_collections.beamops.cluster.plugins.module_utils.erl_mesh import mesh_report

    suffix = "%06d" % random.Random().randrange(10 ** 6)
    names = dict((b, "%s_%s@127.0.0.1" % (b, suffix)) for b in sorted(DIST_BEHAVIOURS))
    healthy = [names[b] for b in names if b.startswith("ok")]
    fakes = []
    try:
        for behaviour, name in names.items():
            # The healthy ones see each other, so they form a small mesh of their own among the broken rest.
            fakes.append(FakeNode(name, COOKIE, behaviour=behaviour, visible=[n for n in healthy if n != name]).start())
        with FakeEpmd(dict((f.name.split("@")[0], f.port) for f in fakes)) as epmd:
            start = time.monotonic()
            report = mesh_report(list(names.values()), COOKIE, timeout=TIMEOUT, epmd_port=epmd.port)
            seconds = time.monotonic() - start
    finally:
        for fake in fakes:
            fake.stop()
    assert seconds <= TIMEOUT + MARGIN, "mesh_report took %.2f s" % seconds
    assert report["full_mesh"] is False
    for behaviour, name in names.items():
        entry = report["per_node"][name]
        assert entry["message"], name
        if behaviour.startswith("ok"):
            assert entry["reachable"] is True, entry
            assert entry["connected"] == sorted(n for n in healthy if n != name)
        elif behaviour == "reply_wrong_shape":
            # erlang:nodes() answered 42: the node must be reported (not silently dropped or timed out).
            assert entry["reason"] in {"protocol_error", "rpc_error"}, entry
        else:
            assert entry["reachable"] is False, (behaviour, entry)
            assert entry["reason"] in DIST_EXPECTED[behaviour], (behaviour, entry)
    assert sorted(report["members"]) == sorted(healthy)
    assert report["partitions"] == [sorted(healthy)]


@pytest.mark.parametrize("behaviour", sorted(EPMD_BEHAVIOURS))
def test_mesh_report_against_fake_epmd(behaviour):
    from ansible_collections.beamops.cluster.plugins.module_utils.erl_mesh import mesh_report

    alive = NAME.split("@")[0]
    with FakeNode(NAME, COOKIE) as node, FakeEpmd({alive: node.port}, behaviour=behaviour) as epmd:
        start = time.monotonic()
        report = mesh_report([NAME], COOKIE, timeout=TIMEOUT, epmd_port=epmd.port)
        seconds = time.monotonic() - start
    assert seconds <= TIMEOUT + MARGIN, "%s: mesh_report took %.2f s" % (behaviour, seconds)
    entry = report["per_node"][NAME]
    assert entry["message"]
    if entry["reachable"]:
        assert EPMD_EXPECTED_NAMES[behaviour] & {"ok"}, (behaviour, entry)
        assert report["full_mesh"] is True
    else:
        assert entry["reason"] in (EPMD_EXPECTED_NAMES[behaviour] | EPMD_EXPECTED_CONNECT[behaviour]) - {"ok"}, \
            (behaviour, entry)


def test_wait_for_mesh_gives_up_on_a_silent_peer():
    from ansible_collections.beamops.cluster.plugins.module_utils.erl_mesh import wait_for_mesh

    with FakeNode(NAME, COOKIE, behaviour="never_answer") as node:
        start = time.monotonic()
        result = wait_for_mesh([NAME], COOKIE, timeout=1.5, poll_ms=100, dist_port=node.port)
        converged, report, after_ms = result[:3]
        seconds = time.monotonic() - start
    assert seconds <= 1.5 + MARGIN, "wait_for_mesh took %.2f s" % seconds
    assert (converged, after_ms) == (False, None)
    assert report["per_node"][NAME]["reason"] == "timeout"


# ---------------------------------------------------------------- the real modules, run by ansible-playbook
PLAYBOOK = """
- name: Verify misbehaving fake nodes
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Mesh info over the fakes
      beamops.cluster.mesh_info:
        nodes: {nodes}
        cookie: "{{{{ fake_cookie }}}}"
        timeout: {timeout}
        epmd_port: {epmd_port}
      register: info

    - name: Wait for a mesh that never forms
      beamops.cluster.mesh_wait:
        nodes: {nodes}
        cookie: "{{{{ fake_cookie }}}}"
        timeout: {wait_timeout}
        epmd_port: {epmd_port}
      register: waited
      ignore_errors: true

    - name: EPMD info from an EPMD that streams names without end
      beamops.cluster.epmd_info:
        epmd_port: {endless_epmd_port}
        timeout: {timeout}
      register: epmd_endless

    - name: EPMD info from an EPMD that drips its answer
      beamops.cluster.epmd_info:
        epmd_port: {drip_epmd_port}
        timeout: {timeout}
      register: epmd_drip

    - name: Keep the results for the test
      ansible.builtin.copy:
        content: "{{{{ {{'info': info, 'waited': waited, 'epmd_endless': epmd_endless, 'epmd_drip': epmd_drip}} | to_json }}}}"
        dest: {out}
        mode: "0600"
"""


def ansible_playbook():
    import shutil
    import sys
    beside = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    return beside if os.access(beside, os.X_OK) else shutil.which("ansible-playbook")


def test_modules_report_a_diagnosis_and_do_not_hang(tmp_path):
    """mesh_info and mesh_wait run for real (ansible-playbook on localhost) against a silent, a digest-forging
    and a 4-GiB-frame fake node: each gets its reason, within the timeout, and the cookie never shows.
    epmd_info meets an endless and a dripping fake EPMD."""
    import json
    import sys
    playbook_cmd = ansible_playbook()
    if not playbook_cmd:
        pytest.skip("ansible-playbook is not installed")
    suffix = "%06d" % random.Random().randrange(10 ** 6)
    behaviours = {"never_answer": "timeout", "bad_digest": "cookie_rejected", "frame_oversized": "protocol_error"}
    fakes = [FakeNode("%s_%s@127.0.0.1" % (b, suffix), COOKIE, behaviour=b).start() for b in behaviours]
    try:
        with FakeEpmd(dict((f.name.split("@")[0], f.port) for f in fakes)) as epmd, \
                FakeEpmd(behaviour="endless") as endless_epmd, FakeEpmd({"x": 1}, behaviour="slow_drip") as drip_epmd:
            out = tmp_path / "result.json"
            (tmp_path / "play.yml").write_text(PLAYBOOK.format(
                nodes=json.dumps([f.name for f in fakes]), timeout=TIMEOUT, wait_timeout=1.5, epmd_port=epmd.port,
                endless_epmd_port=endless_epmd.port, drip_epmd_port=drip_epmd.port, out=out))
            (tmp_path / "vars.json").write_text(json.dumps({"fake_cookie": COOKIE}))
            run = subprocess.run(
                [playbook_cmd, "-i", "localhost,", "-c", "local", "-e", "@%s" % (tmp_path / "vars.json"),
                 "-e", "ansible_python_interpreter=%s" % sys.executable, "-v", str(tmp_path / "play.yml")],
                capture_output=True, text=True, timeout=120, cwd=str(tmp_path), check=False)
    finally:
        for fake in fakes:
            fake.stop()
    assert run.returncode == 0, run.stdout + run.stderr
    assert COOKIE not in run.stdout + run.stderr
    result = json.loads(out.read_text())
    info, waited = result["info"], result["waited"]
    assert info["full_mesh"] is False and not info.get("failed")
    assert info["elapsed_ms"] <= (TIMEOUT + MARGIN) * 1000
    assert waited["failed"] is True
    assert waited["elapsed_ms"] <= (TIMEOUT + MARGIN) * 1000
    for fake in fakes:
        expected = behaviours[fake.behaviour]
        for result_of in (info, waited):
            entry = result_of["per_node"][fake.name]
            assert entry["reason"] == expected, (fake.behaviour, entry)
            assert entry["message"]
        assert fake.name in waited["msg"]
    for key, reason in (("epmd_endless", "epmd_unreachable"), ("epmd_drip", "timeout")):
        epmd_result = result[key]
        assert not epmd_result.get("failed"), epmd_result
        assert (epmd_result["reachable"], epmd_result["reason"]) == (False, reason), epmd_result
        assert epmd_result["message"]
        assert epmd_result["elapsed_ms"] <= (TIMEOUT + MARGIN) * 1000


@pytest.mark.parametrize("behaviour, expected", [
    ("close_on_accept", {"tls_failed", "connection_closed"}),
    ("never_answer", {"timeout"}),          # reads the ClientHello as a name frame and waits
    ("garbage_on_accept", {"tls_failed"}),
])
def test_tls_client_against_plain_misbehaving_peers(behaviour, expected):
    """With TLS on, a peer that hangs up, stays silent or streams non-TLS bytes ends the TLS handshake cleanly."""
    tls = erl_dist.TlsOptions(verify=False)
    with FakeNode(NAME, COOKIE, behaviour=behaviour) as fake:
        outcome, value, seconds = outcome_of(lambda: connect_and_ask(NAME, dist_port=fake.port, tls=tls))
    assert seconds <= TIMEOUT + MARGIN, "%s took %.2f s (%s)" % (behaviour, seconds, outcome)
    assert outcome in expected, "%s ended with %s: %s" % (behaviour, outcome, value)
