"""A cluster heals after a network partition without help, with every VM strategy, by default (issue 8, point 2).

On the shared lab (vmlab.py; release_net_ticktime 10), for each strategy: deploy meshprobe with that strategy and the
role's defaults (every host at once), cut one host off with nft DROP rules in both directions (the controller
exempt), wait until the peers have seen the nodedown (the tick path), lift the rules, and require the full mesh back
within the strategy's interval plus a margin. It runs the comparison runner's own `partition_full_drop` scenario
(plugins/module_utils/compare_runner.py), so these are the same measurements the comparison report shows. Two
controls show what the defaults buy: Epmd with libcluster's own `timeout: infinity`, and `native` without an
application connect loop (meshprobe has none), stay apart. The heal times are printed (docs/deploy.md has them).
"""
import pytest

from ansible_collections.beamops.cluster.plugins.module_utils import compare_runner

from vmlab import BUILDS, COOKIE, HOSTS, INVENTORY, LAB, base_vars, playbook, service_state

# Seconds the full mesh may take after the lift beyond the strategy's own interval: connecting under this shared
# machine's load (the interval itself is in the cases below).
MARGIN = 15.0
# A control is watched this long after the lift (well past every interval).
CONTROL_WATCH = 20

CASES = [
    # strategy, discovery options, interval (s) within which it re-dials, heals by itself
    ("epmd", {}, 5.0, True),
    ("erlang_hosts", {}, 5.0, True),
    ("gossip", {}, 5.0, True),
    ("dnspoll", {"query": "%s.lab.test" % LAB}, 5.0, True),
    ("epmd", {"timeout": "infinity"}, None, False),
    ("native", {}, None, False),
]


@pytest.fixture(scope="module")
def lab_version(vm_lab):
    # The version the shared lab runs now (earlier tests may have upgraded it): the cases deploy that one, so that
    # no case is a downgrade.
    version = service_state(HOSTS[0])["current"]
    yield version
    # Leave the lab as the other tests expect it: that version, epmd with the defaults, every host at once.
    playbook("deploy_vms", *(base_vars(version) + ["release_serial=100%", "release_force=true"]))


@pytest.mark.parametrize("strategy,discovery,interval,heals", CASES,
                         ids=["epmd", "erlang_hosts", "gossip", "dnspoll", "epmd-connect-once", "native"])
def test_a_partition_heals_by_itself_with_the_default_settings(lab_version, tmp_path, strategy, discovery, interval, heals):
    target = compare_runner.VmTarget(
        name="vm-%s" % strategy, inventory=INVENTORY, hosts=HOSTS, release_name="meshprobe", cookie=COOKIE,
        tarballs=["%s/meshprobe-%s.tar.gz" % (BUILDS, lab_version)], strategy=strategy, discovery=discovery,
        release_vars={"release_net_ticktime": 10})
    settings = compare_runner.Settings(scenarios=["partition_full_drop"], repetitions=1,
                                       timeout=interval + MARGIN if heals else CONTROL_WATCH,
                                       work_dir=str(tmp_path / "work"), journal_dir=str(tmp_path / "journal"))
    result = compare_runner.run_scenario(target, "partition_full_drop", repetitions=1, settings=settings)
    assert result["measured"], result.get("reason")
    repetition = result["scenarios"][0]["repetitions"][0]
    metrics = repetition["metrics"]
    print("\n%s %s: split seen after %s ms (net_ticktime 10), full mesh %s ms after the DROP rules were lifted (healed: %s)"
          % (strategy, discovery or "(defaults)", metrics.get("detection_ms"), metrics.get("heal_ms"), repetition["healed"]))
    # The fault took effect: the peers saw the nodedown through ticks before the rules were lifted.
    assert metrics.get("detection_ms") is not None
    if heals:
        assert repetition["healed"] and metrics["heals_by_itself"], repetition
        assert metrics["heal_ms"] <= (interval + MARGIN) * 1000, metrics
    else:
        assert not repetition["healed"] and metrics["heals_by_itself"] is False, repetition
