"""The comparison runner without a lab: metrics extracted from synthetic observer sample streams (each stream is
written out as an observer file and read back with observer.replay, the path the runner's samples take), the checks
of settings and targets that run before anything is deployed, and the results a run builds from samples, checked
against the report's own reader (compare_report.check_results) and rendered by it.

Everything on a host (deploys, faults, the observer's sessions) is covered by tests/integration/test_compare.py on
the lab; nothing here stands in for it.
"""
import json
import os

import pytest

from ansible_collections.beamops.cluster.plugins.module_utils import compare_metrics as cm
from ansible_collections.beamops.cluster.plugins.module_utils import compare_options, compare_report, compare_runner
from ansible_collections.beamops.cluster.plugins.module_utils.compare_faults import parse_snapshot, removal_script
from ansible_collections.beamops.cluster.plugins.module_utils.observer import Sample, replay

A, B, C, D = "app@10.0.0.1", "app@10.0.0.2", "app@10.0.0.3", "app@10.0.0.4"
NODES = [A, B, C]
FULL = {A: {B, C}, B: {A, C}, C: {A, B}}


def views(**changes):
    """FULL with some nodes' views replaced (keys a, b, c; None = no answer)."""
    result = dict((n, frozenset(p)) for n, p in FULL.items())
    for key, value in changes.items():
        node = {"a": A, "b": B, "c": C, "d": D}[key]
        result[node] = None if value is None else frozenset(value)
    return result


def stream(*parts, start=100.0, step=0.1):
    """Samples at 10 Hz: parts are (count, views) in order."""
    samples, t = [], start
    for count, view in parts:
        for _index in range(count):
            samples.append(Sample(round(t, 3), "u", view))
            t += step
    return samples


def through_file(samples, tmp_path, nodes):
    """Write the samples as an observer file (header, full lines) and replay it: what the runner reads."""
    path = tmp_path / "observer.jsonl"
    index = dict((n, i) for i, n in enumerate(nodes))
    lines = [{"k": "header", "t": samples[0].t, "u": "u", "format": "beamops.cluster.observer/1", "nodes": nodes}]
    for number, sample in enumerate(samples, 1):
        v = dict((str(index[n]), None if p is None else sorted(index[x] for x in p)) for n, p in sample.views.items())
        lines.append({"k": "full", "s": number, "t": sample.t, "u": sample.utc, "v": v})
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return list(replay(str(path)))


def test_mesh_terms():
    assert cm.full_mesh(views(), NODES)
    assert not cm.full_mesh(views(a=None), NODES)
    assert not cm.full_mesh(views(a={B}), NODES)  # A no longer lists C: that link is not whole
    assert cm.largest_group(views(a=set(), b={C}, c={B}), NODES) == 2
    assert cm.groups(views(a=set(), b={C}, c={B}), NODES) == [[B, C], [A]]
    assert cm.largest_group(dict((n, None) for n in NODES), NODES) is None
    # A node that is slow to answer (or dead, not yet noticed) still counts for the peers that list it.
    assert cm.largest_group(views(a=None), NODES) == 3
    assert cm.groups(views(a=None, b={C}, c={B}), NODES) == [[B, C]]
    assert cm.link_count(views(a={B}, c={B}), NODES) == 2  # A-B and B-C; A-C is cut


def test_crash_detection_per_peer_and_heal_after_the_break(tmp_path):
    # kill at t=100.0 (issued); B drops A at 100.3, C at 100.5; A answers again at 102.0, full mesh at 102.4.
    samples = through_file(stream((3, views()), (2, views(a=None, b={C})), (15, views(a=None, b={C}, c={B})),
                                  (4, views(a=set(), b={C}, c={B})), (5, views())), tmp_path, NODES)
    slowest, per_peer = cm.detection(samples, A, [B, C], 100.0, 10.0)
    assert per_peer == {B: 300.0, C: 500.0} and slowest == 500.0
    broken = cm.first_broken(samples, NODES, 100.0)
    assert broken == pytest.approx(100.3)
    # The mesh is full before the fault took hold; heal counts only once it broke.
    assert cm.heal(samples, NODES, 100.0, 60.0) == 0.0
    assert cm.heal(samples, NODES, 100.0, 60.0, after=broken) == 2400.0


def test_a_peer_that_gives_no_answer_is_not_counted_as_having_noticed():
    samples = stream((5, views(b=None)), (5, views(b={C})))
    slowest, per_peer = cm.detection(samples, A, [B], 100.0, 10.0)
    assert per_peer == {B: 500.0} and slowest == 500.0


def test_detection_that_never_comes_is_none_within_the_limit():
    samples = stream((50, views(a=None)), (50, views(a=None, b={C}, c={B})))
    assert cm.detection(samples, A, [B, C], 100.0, 4.0) == (None, {B: None, C: None})
    assert cm.detection(samples, A, [B, C], 100.0, 6.0)[0] == 5000.0


def test_partition_sides_splits_and_a_heal_that_never_comes(tmp_path):
    # A cut off: side B drops A after 0.8 s, side A drops B and C after 1.2 s; never healed.
    samples = through_file(stream((8, views()), (4, views(b={C}, c={B})), (30, views(a=set(), b={C}, c={B}))),
                           tmp_path, NODES)
    sides = cm.side_detection(samples, [A], [B, C], 100.0, 20.0)
    assert sides == {"A": 1200.0, "B": 800.0}
    names = {A: "h1", B: "h2", C: "h3"}
    # While A still lists B and C they are one group with both of A's links cut (half open), then apart.
    assert cm.splits_seen(samples, NODES, 100.0, 104.2, names) == [
        "{h1, h2, h3}", "{h1, h2, h3} (links cut: h1-h2, h1-h3)", "{h2, h3} | {h1}"]
    assert cm.heal(samples, NODES, 102.0, 2.0) is None


def test_a_partial_partition_names_the_cut_link():
    samples = stream((2, views()), (3, views(a={C}, b={C})))
    names = {A: "h1", B: "h2", C: "h3"}
    assert cm.splits_seen(samples, NODES, 100.0, 101.0, names) == ["{h1, h2, h3}", "{h1, h2, h3} (link cut: h1-h2)"]


def test_splits_list_silent_nodes():
    samples = stream((1, views(a=None, b={C}, c={B})))
    assert cm.splits_seen(samples, NODES, 100.0, 101.0) == ["{%s, %s} (no answer: %s)" % (B, C, A)]


def test_cold_start_full_mesh_and_per_node_joins():
    # All down; A and B link at +1.0 s, C joins at +2.0 s.
    down = dict((n, None) for n in NODES)
    samples = stream((10, down), (10, {A: frozenset({B}), B: frozenset({A}), C: frozenset()}), (5, views()))
    full, joins = cm.cold_start(samples, NODES, 100.0, 30.0)
    assert full == 2000.0
    assert joins == {A: 2000.0, B: 2000.0, C: 2000.0}
    partial = stream((10, down), (10, {A: frozenset({B, C}), B: frozenset({A}), C: frozenset({A})}), (5, views()))
    assert cm.cold_start(partial, NODES, 100.0, 30.0)[1] == {A: 1000.0, B: 2000.0, C: 2000.0}
    assert cm.cold_start(stream((10, down)), NODES, 100.0, 30.0) == (None, {A: None, B: None, C: None})


def test_join_of_a_new_node():
    members = NODES
    four = dict((n, frozenset(set(NODES + [D]) - {n})) for n in NODES + [D])
    samples = stream((5, views(d=None)), (5, dict(four, **{D: frozenset({A})})), (3, four))
    assert cm.join(samples, D, members, 100.0, 10.0) == 1000.0
    assert cm.join(samples, D, members, 100.0, 0.5) is None


def test_rolling_membership_fewest_members_and_time_not_full():
    samples = stream((10, views()), (7, views(a=None, b={C}, c={B})), (10, views()), (3, views(c=None, a={B}, b={A})),
                     (10, views()))
    found = cm.membership(samples, NODES, 100.0, 104.0)
    assert found["fewest_members"] == 2
    assert found["not_full_ms"] == pytest.approx(1000.0)
    assert cm.membership(samples, NODES, 200.0, 210.0) == {"fewest_members": None, "not_full_ms": None}
    # A slot in which no node answered is a gap of the observer, not an empty cluster.
    gap = stream((10, views()), (1, dict((n, None) for n in NODES)), (10, views()))
    assert cm.membership(gap, NODES, 100.0, 102.0) == {"fewest_members": 3, "not_full_ms": 0.0}


def test_timeline_keeps_changes_and_the_ends():
    samples = stream((10, views()), (5, views(a=None, b={C}, c={B})), (10, views()))
    line = cm.timeline(samples, NODES, 100.0, 102.5)
    assert line["t"] == [0.0, 1.0, 1.5, 2.4]
    assert line["members"] == [3, 2, 3, 3]
    assert line["links"] == [3, 1, 3, 3]


# ------------------------------------------------------------------------------------------ input checks
def test_settings_refuse_bad_input_naming_the_field():
    with pytest.raises(compare_runner.CompareError, match="scenarios: unknown scenario 'crashh'; known: cold_start"):
        compare_runner.Settings(scenarios=["crash", "crashh"])
    with pytest.raises(compare_runner.CompareError, match="repetitions must be a whole number from 1 to 1000"):
        compare_runner.Settings(repetitions=0)
    with pytest.raises(compare_runner.CompareError, match="observer_interval must be a number from 0.01 to 5"):
        compare_runner.Settings(observer_interval=0)
    short = compare_runner.Settings(short=True)
    assert short.repetitions == 3 and short.scenarios == list(compare_runner.SHORT_SCENARIOS)
    assert compare_runner.Settings(scenarios=["latency", "crash"]).scenarios == ["crash", "latency"]


@pytest.fixture
def inventory(tmp_path):
    path = tmp_path / "inventory.yml"
    path.write_text("lab:\n  hosts:\n" + "".join(
        "    h%d:\n      ansible_host: 10.0.0.%d\n      ansible_ssh_common_args: -o StrictHostKeyChecking=no\n" % (i, i)
        for i in (1, 2, 3, 4)))
    tarball = tmp_path / "app-0.1.0.tar.gz"
    tarball.write_bytes(b"x")
    return str(path), str(tarball)


def vm_spec(inventory, **extra):
    spec = {"kind": "vm", "inventory": inventory[0], "hosts": ["h1", "h2", "h3"], "spare": "h4"}
    spec.update(extra)
    return spec


RELEASE = {"name": "app", "cookie": "secret-cookie-1"}


@pytest.mark.parametrize("spec,expected", [
    ({"kind": "docker"}, "targets[0].kind is 'docker'; use vm (hosts of an inventory) or kubernetes"),
    ({"kind": "vm", "hostz": []}, "targets[0] has unknown key(s) hostz"),
    ({"strategy": "consul"}, "targets[0].strategy is 'consul'; a VM target uses one of epmd, gossip"),
    ({"strategy": "dnspoll"}, "targets[0].discovery.query: dnspoll needs the DNS name"),
    ({"hosts": ["h1", "h9"]}, "targets[0]: h9 not in the inventory"),
    ({"hosts": ["h1", "h2"], "spare": "h2"}, "targets[0].spare h2 is also a member"),
    ({"tarballs": ["/nonexistent.tar.gz"]}, "targets[0].tarballs[0]: '/nonexistent.tar.gz' is not a file"),
    ({"release_vars": {"release_cookie": "x"}},
     "release_vars.release_cookie is set by the runner: give it as the target's cookie"),
    ({"release_vars": {"net_ticktime": 5}}, "release_vars.net_ticktime: only release_* role variables"),
    ({"name": "bad name"}, "targets[0].name must be 1-63 letters"),
])
def test_vm_targets_refuse_bad_input_naming_the_field(inventory, spec, expected):
    full = vm_spec(inventory, tarballs=[inventory[1]])
    full.update(spec)
    with pytest.raises(compare_runner.CompareError) as raised:
        compare_runner.targets_from_specs([full], RELEASE)
    assert expected in str(raised.value)


def test_a_kubernetes_target_without_a_kubeconfig_is_refused(monkeypatch):
    monkeypatch.delenv("K8S_AUTH_KUBECONFIG", raising=False)
    with pytest.raises(compare_runner.CompareError, match="a Kubernetes target needs a kubeconfig: set "
                                                          "targets\\[0\\].kubeconfig or K8S_AUTH_KUBECONFIG"):
        compare_runner.targets_from_specs([{"kind": "kubernetes", "namespace": "shop", "workload": "StatefulSet/shop",
                                            "strategy": "kubernetes_dns"}], RELEASE)


def test_scale_out_needs_a_spare_and_a_cookie_never_goes_in_a_target(inventory, tmp_path):
    target = compare_runner.targets_from_specs([vm_spec(inventory, spare=None, tarballs=[inventory[1]])], RELEASE)[0]
    settings = compare_runner.Settings(scenarios=["scale_out"], journal_dir=str(tmp_path / "j"))
    with pytest.raises(compare_runner.CompareError, match="targets\\[0\\].spare: the scale_out scenario needs a spare"):
        compare_runner.check_targets([target], settings)
    args = {"targets": [vm_spec(inventory, cookie="oops")], "out_dir": str(tmp_path / "out"), "release": RELEASE}
    with pytest.raises(compare_runner.CompareError, match="targets\\[0\\].cookie: give the cookie in release.cookie"):
        compare_options.build(args)


def test_node_names_follow_the_role(inventory):
    target = compare_runner.targets_from_specs([vm_spec(inventory, tarballs=[inventory[1]], release_vars={
        "release_node_basename": "shop"})], RELEASE)[0]
    assert target.nodes == ["shop@10.0.0.1", "shop@10.0.0.2", "shop@10.0.0.3"]
    assert target.node_of("h4") == "shop@10.0.0.4"
    fqdn = compare_runner.targets_from_specs([vm_spec(inventory, tarballs=[inventory[1]], release_vars={
        "release_node_host": "fqdn"})], RELEASE)[0]
    assert fqdn.nodes == ["app@h1", "app@h2", "app@h3"]


# -------------------------------------------------------------------------------- results from samples
def test_results_built_from_samples_are_what_the_report_reads(inventory, tmp_path):
    """A crash and a partition that never healed, turned into results by the runner's own code, pass the report's
    checks, keep every raw value, censor the heal and carry no cookie."""
    target = compare_runner.targets_from_specs([vm_spec(inventory, tarballs=[inventory[1]])], RELEASE)[0]
    settings = compare_runner.Settings(scenarios=["crash", "partition_full_drop"], repetitions=1,
                                       work_dir=str(tmp_path), journal_dir=str(tmp_path / "j"))
    run = compare_runner._VmRun(target, settings, compare_runner._Progress(None, settings, [target]), str(tmp_path))
    run.ticktime, run.intensity = 10, 4
    a, b, c = target.nodes
    full = {a: frozenset({b, c}), b: frozenset({a, c}), c: frozenset({a, b})}
    cut = {a: frozenset(), b: frozenset({c}), c: frozenset({b})}
    crash = stream((3, full), (20, dict(full, **{a: None, b: frozenset({c}), c: frozenset({b})})), (5, full), start=10.0)
    part = stream((5, full), (100, cut), start=20.0)
    samples = crash + part
    rep1 = compare_runner._Repetition(1, 120.0)
    rep1.t0, rep1.t_end = 10.0, 12.8
    rep1.spec = {"kind": "crash", "victim": a, "peers": [b, c], "t_fault": 10.2}
    rep1.windows.append((10.2, 12.0, "kill -9"))
    rep2 = compare_runner._Repetition(1, 50.0)
    rep2.t0, rep2.t_end = 20.0, 30.5
    rep2.spec = {"kind": "partition", "side_a": [a], "side_b": [b, c], "t_fault": 20.3, "t_lift": 24.0}
    rep2.windows.append((20.3, 24.0, "full partition, DROP"))
    scenarios = [run.finish_scenario("crash", [rep1], samples), run.finish_scenario("partition_full_drop", [rep2], samples)]
    crash_rep = scenarios[0]["repetitions"][0]
    assert crash_rep["metrics"]["detection_ms"] == pytest.approx(100.0, abs=1)
    assert crash_rep["metrics"]["heal_ms"] == pytest.approx(2100.0, abs=1) and crash_rep["healed"] is True
    part_rep = scenarios[1]["repetitions"][0]
    assert part_rep["healed"] is False and part_rep["metrics"]["heal_ms"] is None
    assert part_rep["metrics"]["heals_by_itself"] is False
    assert part_rep["fault_windows"] == [{"start": 0.3, "end": 4.0, "label": "full partition, DROP"}]
    assert part_rep["timeline"]["members"][:2] == [3, 2]  # the largest group: B and C
    assert "ticks: net_ticktime window: 7.5-12.5 s" in scenarios[1]["fault"]["expected_detection"]
    results = {"schema": 1, "tool": compare_runner.TOOL, "settings": settings.as_results(),
               "targets": [{"name": target.name, "kind": "vm", "measured": True, "reason": "",
                            "environment": {"platform": compare_runner.LAB_PLATFORM, "net_ticktime_s": 10},
                            "scenarios": scenarios},
                           {"name": "kubernetes", "kind": "kubernetes", "measured": False,
                            "reason": compare_runner.KUBERNETES_NOT_CONFIGURED, "environment": {}, "scenarios": []}],
               "metrics_meta": compare_runner._metrics_meta(settings, [run])}
    paths = compare_options.write_outputs(results, str(tmp_path / "out"))
    text = open(paths["results_json"]).read()
    assert "secret-cookie-1" not in text
    assert oct(os.stat(paths["results_json"]).st_mode & 0o777) == "0o644"
    markdown = open(paths["report_md"]).read()
    assert "partition_full_drop" in markdown and "> 60.0 s" in markdown
    lines = compare_options.summary(results)
    assert any("did not heal by itself in 1 of 1 runs" in line for line in lines)
    assert "kubernetes: not measured: no cluster configured" in lines
    # A cookie anywhere in the results is refused before anything is written.
    results["targets"][0]["environment"]["cookie"] = "x"
    with pytest.raises(compare_report.ResultsError):
        compare_options.write_outputs(results, str(tmp_path / "out2"))
    assert not os.path.exists(str(tmp_path / "out2" / "results.json"))


def test_the_spare_is_restored_from_its_snapshot():
    fresh = parse_snapshot("fstab \nprocopts rw,nosuid,nodev,noexec,relatime\n")
    script = removal_script("app", ("/opt/app", "/etc/app", "/var/lib/app", "beamops-epmd"), fresh)
    for line in ("rm -rf -- /opt/app", "rm -rf -- /etc/systemd/system/beamops-epmd.service", "userdel -- app",
                 "nft delete table inet beamops_app", "mount -o remount,hidepid=0 /proc"):
        assert line in script
    assert "/proc[[:space:]]/d' /etc/fstab" in script
    used = parse_snapshot("path /usr/local/lib/beamops\npath /etc/systemd/system/beamops-epmd.service\nuser app\n"
                          "fstab proc /proc proc defaults,hidepid=invisible 0 0\nprocopts rw,hidepid=invisible\n")
    script = removal_script("app", ("/opt/app", "/etc/app", "/var/lib/app", "beamops-epmd"), used)
    # What the host had before stays: another release's EPMD, the user, /proc hidden.
    assert "beamops-epmd.service" not in script and "userdel" not in script and "hidepid=0" not in script
    assert "rm -rf -- /usr/local/lib/beamops" not in script


def test_kubernetes_targets_name_pods_as_the_strategy_dials_them(tmp_path, monkeypatch):
    from ansible_collections.beamops.cluster.plugins.module_utils import compare_k8s
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("K8S_AUTH_KUBECONFIG", str(kubeconfig))
    pod = {"name": "shop-1", "ip": "10.1.2.3"}
    srv, dns = compare_runner.targets_from_specs([
        {"kind": "kubernetes", "name": "k8s-srv", "namespace": "prod", "workload": "StatefulSet/shop",
         "strategy": "kubernetes_dnssrv", "service": "shop-headless"},
        {"kind": "kubernetes", "name": "k8s-dns", "namespace": "prod", "workload": "Deployment/shop",
         "strategy": "kubernetes_dns"}], {"name": "shop", "cookie": "c"})
    assert srv.kubeconfig == str(kubeconfig) and not srv.deploy
    assert srv.node_of(pod) == "shop@shop-1.shop-headless.prod.svc.cluster.local"
    assert dns.node_of(pod) == "shop@10.1.2.3"
    # Only names that survive a pod's replacement let the observer follow a rollout.
    assert compare_k8s.stable_names(srv) and not compare_k8s.stable_names(dns)
    with pytest.raises(compare_runner.CompareError, match="targets\\[0\\].service: kubernetes_dnssrv names nodes"):
        compare_runner.targets_from_specs([{"kind": "kubernetes", "namespace": "prod", "workload": "StatefulSet/shop",
                                            "strategy": "kubernetes_dnssrv"}], {"name": "shop", "cookie": "c"})
    with pytest.raises(compare_runner.CompareError, match="targets\\[0\\].strategy is 'dnspoll'; a Kubernetes target"):
        compare_runner.targets_from_specs([{"kind": "kubernetes", "namespace": "prod", "workload": "StatefulSet/shop",
                                            "strategy": "dnspoll"}], {"name": "shop", "cookie": "c"})
