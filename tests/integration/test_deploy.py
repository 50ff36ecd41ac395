"""Deploys of the release role on the shared VM lab (vmlab.py: systemd-nspawn hosts over SSH), measured with our own
Erlang distribution client:

- a rolling upgrade of 3 hosts never leaves fewer than N-1 nodes in the mesh (figure printed);
- a run that changes nothing skips the rolling phase and restarts nothing; a change on one host restarts that host only;
- `--check` (and `--check --diff`) of every playbook against the deployed cluster and against a fresh host goes
  through, says what would change and changes nothing;
- a failed deploy that changed every kind of file rolls back: the previous release, the previous files with their
  owner, group and mode, a full mesh (mix with TLS, and rebar3's vm.args);
- `kill -9` of a node's BEAM: systemd restarts it and the mesh is whole again (time printed);
- bad input fails in the preflight, naming the variable, and changes nothing on any host; so does a strategy switch
  that cannot be rolling;
- EPMD-less distribution, ErlangHosts, TLS switched on and off for the whole cluster, a rebar3 release with TLS.
"""
import os
import threading
import time

import pytest

from ansible_collections.beamops.cluster.plugins.module_utils.erl_dist import TlsOptions
from ansible_collections.beamops.cluster.plugins.module_utils.erl_mesh import mesh_report, wait_for_mesh

import beamnodes
from vmlab import (ADDRESSES, COOKIE, HOSTS, MEMBERS, NODES, SPARE, base_vars, file_states, playbook, recap, service_state, ssh,
                   vars_file)


def mesh_size(report):
    """Nodes in the largest group that answered and reach each other."""
    return max((len(p) for p in report["partitions"]), default=0)


class MeshSampler(threading.Thread):
    """Polls the mesh with our distribution client until stopped; keeps (time, size) samples."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            report = mesh_report(NODES, COOKIE, timeout=2.0)
            self.samples.append((time.monotonic(), mesh_size(report)))
            time.sleep(0.1)

    def stop(self):
        self.stopping.set()
        self.join(10)
        return self.samples


@pytest.fixture(scope="module")
def lab(vm_lab):
    return vm_lab.BUILDS


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA with one certificate per lab host (its address as DNS and IP name), a client certificate, another CA."""
    return beamnodes.make_test_pki(str(tmp_path_factory.mktemp("pki")), servers=dict((h, [ADDRESSES[h]]) for h in HOSTS))


def tls_vars(pki, cert="{{ inventory_hostname }}"):
    """Extra vars that turn TLS distribution on with the test PKI; cert names the certificate each host gets."""
    directory = os.path.dirname(pki["ca"])
    return ['{"release_tls": true}', "release_tls_ca_src=" + pki["ca"],
            "release_tls_cert_src=%s/%s_cert.pem" % (directory, cert), "release_tls_key_src=%s/%s_key.pem" % (directory, cert),
            "release_tls_verifier_cert=" + pki["client_cert"], "release_tls_verifier_key=" + pki["client_key"]]


def assert_nothing_changed(run):
    counts = recap(run.out)
    assert counts and all(c["changed"] == 0 for c in counts.values()), run.out[run.out.rindex("PLAY RECAP"):]
    assert "changed: [" not in run.out


CONFIG = ["/etc/meshprobe/%s" % f for f in ("topology.config", "env", "cookie", "ssl_dist.conf", "tls", "tls/ca.pem", "tls/node.pem",
                                            "tls/node.key", "vm.args")] + ["/etc/systemd/system/meshprobe.service"]


def test_rolling_upgrade_never_drops_below_n_minus_1(lab):
    before = {h: service_state(h) for h in HOSTS}
    sampler = MeshSampler()
    sampler.start()
    time.sleep(1.0)
    started = time.monotonic()
    run = playbook("deploy_vms", *base_vars("0.2.0"))
    took = time.monotonic() - started
    samples = sampler.stop()
    after = {h: service_state(h) for h in HOSTS}
    sizes = [size for _t, size in samples]
    print("\nrolling upgrade 0.1.0 -> 0.2.0 of %d hosts (serial 1): %.1f s, %d mesh samples, min mesh %d, final %d, "
          "samples below %d: %d" % (len(HOSTS), took, len(sizes), min(sizes), sizes[-1], len(HOSTS), sum(1 for s in sizes if s < len(HOSTS))))
    assert all(after[h]["current"] == "0.2.0" for h in HOSTS), after
    assert all(after[h]["MainPID"] != before[h]["MainPID"] for h in HOSTS), (before, after)
    assert "full mesh: True; 3 of 3 nodes answered" in run.out
    assert min(sizes) >= len(HOSTS) - 1
    assert sizes[-1] == len(HOSTS)


def test_a_run_that_changes_nothing_skips_the_rolling_phase(lab):
    before = {h: service_state(h) for h in HOSTS}
    started = time.monotonic()
    run = playbook("deploy_vms", *base_vars("0.2.0"))
    print("\nno-change re-run: %.1f s" % (time.monotonic() - started))
    assert_nothing_changed(run)
    # The rolling play matched no host: nothing was restarted or gated one by one; one mesh report ends the run.
    assert "PLAY [Rolling switch, restart and gate of the hosts that change]" in run.out
    assert "skipping: no hosts matched" in run.out
    assert "Wait until every running member sees every other one" not in run.out
    assert run.out.count("full mesh: True; 3 of 3 nodes answered") == 1
    assert {h: service_state(h) for h in HOSTS} == before


def test_a_change_on_one_host_restarts_that_host_only(lab):
    """Drift on one host (its env file edited by hand): the next run restores it and restarts that host alone."""
    before = {h: service_state(h) for h in HOSTS}
    ssh(HOSTS[1], "echo 'EXTRA=drift' >> /etc/meshprobe/env")
    run = playbook("deploy_vms", *base_vars("0.2.0"))
    after = {h: service_state(h) for h in HOSTS}
    counts = recap(run.out)
    assert counts[HOSTS[1]]["changed"] > 0 and counts[HOSTS[0]]["changed"] == 0 and counts[HOSTS[2]]["changed"] == 0, counts
    assert after[HOSTS[1]]["MainPID"] != before[HOSTS[1]]["MainPID"]
    assert [after[h]["MainPID"] for h in (HOSTS[0], HOSTS[2])] == [before[h]["MainPID"] for h in (HOSTS[0], HOSTS[2])]
    assert "EXTRA=drift" not in ssh(HOSTS[1], "cat /etc/meshprobe/env")
    assert "full mesh: True" in run.out


def test_check_mode_of_every_playbook_against_the_deployed_cluster_changes_nothing(lab):
    if service_state(HOSTS[0])["current"] != "0.2.0":  # the rollback needs a previous release
        playbook("deploy_vms", *base_vars("0.2.0"))
    hosts_before = {h: (service_state(h), file_states(h, CONFIG)) for h in HOSTS}
    # An upgrade with a changed setting: check mode says what would change and restart, with the diff.
    run = playbook("deploy_vms", *(base_vars("0.1.0") + ["release_force=true", "release_net_ticktime=20"]), extra_args=["--check", "--diff"])
    for host in HOSTS:
        assert "check mode: %s would restart meshprobe 0.1.0" % host in run.out
    assert "-kernel net_ticktime 10" in run.out and "+ERL_ZFLAGS" in run.out and "net_ticktime 20" in run.out
    assert COOKIE not in run.out
    assert "full mesh: True; 3 of 3 nodes answered" in run.out
    assert "full mesh: True" in playbook("verify", *base_vars("0.2.0"), extra_args=["--check", "--diff"]).out
    run = playbook("rollback", *base_vars("0.2.0"), extra_args=["--check", "--diff"])
    assert "/opt/meshprobe/releases/0.1.0" in run.out  # the link it would switch current to (the diff)
    assert COOKIE not in run.out
    assert {h: (service_state(h), file_states(h, CONFIG)) for h in HOSTS} == hosts_before


def test_check_mode_against_a_fresh_host_goes_through_and_creates_nothing(lab):
    run = playbook("deploy_vms", *(base_vars("0.2.0") + ["release_target=" + SPARE, '{"release_cluster_hosts": ["%s"]}' % SPARE]),
                   extra_args=["--check", "--diff"])
    assert "check mode: %s would start meshprobe 0.2.0" % SPARE in run.out
    assert "full mesh: False" in run.out  # reported, not required, in check mode
    assert ssh(SPARE, "ls -d /opt/meshprobe /etc/meshprobe /var/lib/meshprobe /etc/systemd/system/meshprobe.service "
                      "/usr/local/lib/beamops 2>/dev/null; id meshprobe 2>/dev/null; nft list tables", check=False) == ""


def test_failed_deploy_of_a_changed_configuration_restores_every_file(lab, pki):
    """TLS on for the whole cluster, then a deploy of a broken release that also changes the env, the topology, the
    unit, the certificates, the key and the TLS options: the first host fails its health check and gets back the
    previous release and every previous file (content, owner, group, mode); the mesh is full again."""
    version = service_state(HOSTS[0])["current"]
    try:
        playbook("deploy_vms", *(base_vars(version) + tls_vars(pki) + ["release_serial=100%"]))
        before = file_states(HOSTS[0], CONFIG)
        assert before["/etc/meshprobe/tls/node.key"].startswith("meshprobe:meshprobe 400")
        reissued = os.path.join(os.path.dirname(pki["ca"]), "reissued")
        os.makedirs(reissued, exist_ok=True)
        other = beamnodes.make_test_pki(reissued, servers=dict((h, [ADDRESSES[h]]) for h in HOSTS))
        changed = (base_vars("0.3.0-broken") + tls_vars(other) + [
            "release_health_timeout=10", "release_stop_timeout=20", '{"release_env": {"EXTRA": "1"}}',
            '{"release_discovery": {"timeout": 3000}}', '{"release_tls_verify_client": false}'])
        run = playbook("deploy_vms", *changed, check=False)
        assert run.returncode != 0
        assert "failed on %s: task 'Wait until the node answers its health check' failed" % HOSTS[0] in run.out, run.out[-4000:]
        assert "The host was rolled back to %s" % version in run.out and "it answers its health check" in run.out
        for path in ("/etc/meshprobe/env", "/etc/meshprobe/topology.config", "/etc/meshprobe/tls/node.key",
                     "/etc/meshprobe/ssl_dist.conf", "/etc/systemd/system/meshprobe.service"):
            assert path in run.out  # named as restored
        assert file_states(HOSTS[0], CONFIG) == before
        assert service_state(HOSTS[0])["current"] == version and service_state(HOSTS[0])["ActiveState"] == "active"
        assert ssh(HOSTS[0], "ls -A /opt/meshprobe") == "archives\ncurrent\nprevious\nreleases"  # no snapshot left
        assert [service_state(h)["current"] for h in HOSTS[1:]] == [version, version]  # never touched
        converged, report, _ms, _n = wait_for_mesh(NODES, COOKIE, timeout=60.0, tls=TlsOptions(
            ca_file=pki["ca"], cert_file=pki["client_cert"], key_file=pki["client_key"]))
        assert converged, report
    finally:
        playbook("deploy_vms", *(base_vars(version) + ["release_serial=100%"]))
    assert mesh_report(NODES, COOKIE, timeout=5.0)["full_mesh"]


def test_kill_9_is_restarted_by_systemd_and_mesh_heals(lab):
    victim = HOSTS[1]
    before = service_state(victim)
    assert mesh_report(NODES, COOKIE, timeout=5.0)["full_mesh"]
    ssh(victim, "kill -9 %s" % before["MainPID"])
    killed = time.monotonic()
    saw_broken = False
    healed = None
    while time.monotonic() - killed < 90:
        report = mesh_report(NODES, COOKIE, timeout=2.0)
        if not report["full_mesh"]:
            saw_broken = True
        elif saw_broken:
            healed = time.monotonic() - killed
            break
        time.sleep(0.1)
    after = service_state(victim)
    print("\ncrash recovery: kill -9 of the BEAM on %s -> full mesh of %d again after %.2f s (RestartSec=2 + the node's boot "
          "+ the strategy's first connect)" % (victim, len(HOSTS), healed if healed is not None else float("nan")))
    assert saw_broken, "the mesh never lost the killed node"
    assert healed is not None, "the mesh did not heal within 90 s"
    assert after["MainPID"] != before["MainPID"] and int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert after["ActiveState"] == "active"


@pytest.mark.parametrize("override,expected", [
    (["release_strategy=consul"], "value of release_strategy must be one of: epmd, gossip, dnspoll, erlang_hosts, native, got: consul"),
    (["release_strategy=kubernetes_dns"], "value of release_strategy must be one of"),
    (["release_keep=many"], "argument 'release_keep' is of type"),
    (["release_cookie="], "release_cookie is empty"),
    (["release_src=/nonexistent/meshprobe.tar.gz"], "release_src '/nonexistent/meshprobe.tar.gz' does not exist"),
    (["release_checksum=sha256:" + "0" * 64], "Checksum mismatch"),
    (["release_name=otherapp"], "has no bin/otherapp"),
    (['{"release_strategy": "dnspoll", "release_discovery": {"query": "itdeploy.lab.test"}, "release_node_host": "fqdn"}'],
     "release_node_host dnspoll dials"),
    (['{"release_discovery": {"hosts": ["meshprobe@198.18.7.11"]}}'], "release_discovery.hosts lists"),
    (["release_discovery=query"], "argument 'release_discovery' is of type"),
    (["release_src=OLD"], "is a downgrade. Set release_force=true"),
    (['{"release_tls": true}'], "release_tls is on, so itdeploy-1 needs release_tls_ca_src"),
    (["TLS", "release_tls_key_src=/nonexistent/node.key"],
     "release_tls_key_src is not a readable file on the controller (release_tls_key_src='/nonexistent/node.key')"),
    (["TLS", "release_tls_cert_src=PKI/itdeploy-1_cert.pem"], "its subjectAltName does not name '198.18.7.12'"),
    (["TLS", "release_tls_ca_src=PKI/other_ca.pem"], "it is not signed by release_tls_ca_src"),
    (["TLS", "release_tls_key_src=PKI/itdeploy-1_key.pem"], "of itdeploy-2 is not the private key of release_tls_cert_src"),
    (["TLS"], "run without TLS distribution now. TLS and plain nodes cannot connect to each other"),
    (["TLS", "release_strategy=native"], "release_strategy native with release_tls needs release_discovery.peers_env"),
])
def test_bad_input_fails_in_preflight_and_changes_nothing(lab, pki, override, expected):
    if "release_src=OLD" in override and service_state(HOSTS[0])["current"] == "0.1.0":
        playbook("deploy_vms", *base_vars("0.2.0"))
    before = {h: service_state(h) for h in HOSTS}
    extra = base_vars(before[HOSTS[0]]["current"])
    if override[:1] == ["TLS"]:
        override = tls_vars(pki) + override[1:]
    override = [o.replace("OLD", "%s/meshprobe-0.1.0.tar.gz" % lab).replace("PKI", os.path.dirname(pki["ca"])) for o in override]
    run = playbook("deploy_vms", *(extra + override), check=False)
    assert run.returncode != 0
    assert expected in run.out, run.out[-3000:]
    assert_nothing_changed(run)
    after = {h: service_state(h) for h in HOSTS}
    assert after == before


def test_a_strategy_switch_that_cannot_be_rolling_is_refused(lab):
    """Nodes on epmd that connect once (timeout infinity) never re-dial a node restarted with gossip, which waits for
    heartbeats they never send: a rolling switch is refused with the reason; all hosts at once is allowed."""
    version = service_state(HOSTS[0])["current"]
    try:
        run = playbook("deploy_vms", *(base_vars(version) + ['{"release_discovery": {"timeout": "infinity"}}', "release_serial=100%"]))
        assert "WARNING: release_strategy epmd does not heal a network partition by itself" in run.out
        before = {h: service_state(h) for h in HOSTS}
        run = playbook("deploy_vms", *(base_vars(version) + ["release_strategy=gossip"]), check=False)
        assert run.returncode != 0
        assert "run epmd now, and switching host by host cannot work: a node restarted with gossip waits for heartbeats" in run.out, \
            run.out[-3000:]
        assert "-e release_serial=100%" in run.out
        assert_nothing_changed(run)
        assert {h: service_state(h) for h in HOSTS} == before
        run = playbook("deploy_vms", *(base_vars(version) + ["release_strategy=gossip", "release_serial=100%"]))
        assert "full mesh: True; 3 of 3 nodes answered" in run.out
        # From gossip back to epmd host by host works: a node restarted with epmd dials its peers itself.
        run = playbook("deploy_vms", *base_vars(version))
        assert "full mesh: True; 3 of 3 nodes answered" in run.out
    finally:
        playbook("deploy_vms", *(base_vars(version) + ["release_serial=100%"]))


def test_the_preflight_warns_when_a_strategy_cannot_heal(lab):
    version = service_state(HOSTS[0])["current"]
    run = playbook("deploy_vms", *(base_vars(version) + ['{"release_discovery": {"timeout": "infinity"}}']), extra_args=["--check"])
    assert "WARNING: release_strategy epmd does not heal a network partition by itself" in run.out
    assert "Set a retry release_discovery.timeout" in run.out
    assert "WARNING" not in playbook("deploy_vms", *base_vars(version), extra_args=["--check"]).out.split("PLAY [Rolling")[0]


def test_epmdless_single_port_distribution(lab):
    """Redeploy with release_epmdless: nodes listen on one fixed port, dial peers there, and need no EPMD."""
    version = service_state(HOSTS[0])["current"]
    try:
        run = playbook("deploy_vms", *(base_vars(version) + ["release_epmdless=true"]))
        assert "full mesh: True; 3 of 3 nodes answered" in run.out
        report = mesh_report(NODES, COOKIE, timeout=5.0, dist_port=9100)
        assert report["full_mesh"], report
        for host in HOSTS:
            args = ssh(host, "tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value meshprobe)/cmdline")
            assert "-erl_epmd_port 9100" in args and "inet_dist_listen_max 9100" in args
        # Without any EPMD, a restarted node boots, dials its peers on the fixed port, and the mesh is whole again.
        for host in HOSTS:
            ssh(host, "systemctl stop beamops-epmd")
        ssh(HOSTS[1], "systemctl restart meshprobe")
        converged, report, after_ms, _attempts = wait_for_mesh(NODES, COOKIE, timeout=60.0, dist_port=9100)
        print("\nEPMD-less: EPMD stopped on every host, %s restarted: full mesh after %s ms" % (HOSTS[1], after_ms))
        assert converged, report
        assert mesh_report(NODES, COOKIE, timeout=3.0)["unreachable"] == sorted(NODES)
    finally:
        for host in HOSTS:
            print(ssh(host, "systemctl reset-failed beamops-epmd; systemctl start beamops-epmd || systemctl status --no-pager beamops-epmd; true"))
        for host in HOSTS:
            ssh(host, "systemctl restart meshprobe")
        playbook("deploy_vms", *base_vars(version))
    assert mesh_report(NODES, COOKIE, timeout=5.0)["full_mesh"]


def test_erlang_hosts_strategy_forms_and_heals_the_mesh(lab):
    """Switch the running cluster to ErlangHosts (.hosts.erlang in the service's working directory) by a rolling deploy."""
    version = service_state(HOSTS[0])["current"]
    try:
        run = playbook("deploy_vms", *(base_vars(version) + ["release_strategy=erlang_hosts"]))
        assert "full mesh: True; 3 of 3 nodes answered" in run.out
        hosts_file = ssh(HOSTS[0], "cat /var/lib/meshprobe/.hosts.erlang")
        assert hosts_file.splitlines() == ["'%s'." % ADDRESSES[h] for h in HOSTS]
        ssh(HOSTS[2], "systemctl restart meshprobe")
        converged, report, after_ms, _attempts = wait_for_mesh(NODES, COOKIE, timeout=60.0)
        print("\nerlang_hosts: %s restarted, full mesh again after %s ms" % (HOSTS[2], after_ms))
        assert converged, report
    finally:
        playbook("deploy_vms", *base_vars(version))
    assert ssh(HOSTS[0], "ls /var/lib/meshprobe/.hosts.erlang 2>/dev/null", check=False) == ""


def tls_report(pki, nodes, cert=True, timeout=5.0):
    """Mesh report over TLS with the test CA, with or without the client certificate."""
    tls = TlsOptions(ca_file=pki["ca"], cert_file=pki["client_cert"] if cert else None, key_file=pki["client_key"] if cert else None)
    return mesh_report(nodes, COOKIE, timeout=timeout, tls=tls)


def test_tls_distribution_switched_on_and_off_for_the_whole_cluster(lab, pki):
    """Turn TLS on for the running cluster (every host at once), check who gets through, then turn it off again."""
    version = service_state(HOSTS[0])["current"]
    try:
        run = playbook("deploy_vms", *(base_vars(version) + tls_vars(pki) + ["release_serial=100%"]))
        assert "full mesh: True; 3 of 3 nodes answered" in run.out
        assert tls_report(pki, NODES)["full_mesh"]
        assert {v["reason"] for v in mesh_report(NODES, COOKIE, timeout=5.0)["per_node"].values()} == {"tls_required"}
        assert {v["reason"] for v in tls_report(pki, NODES, cert=False)["per_node"].values()} == {"tls_failed"}
        for host in HOSTS:
            args = ssh(host, "tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value meshprobe)/cmdline")
            assert "-proto_dist inet_tls -ssl_dist_optfile /etc/meshprobe/ssl_dist.conf" in args
            assert ssh(host, "stat -c '%U %a' /etc/meshprobe/tls/node.key") == "meshprobe 400"
        # Same inputs again: nothing changes, nothing restarts.
        assert_nothing_changed(playbook("deploy_vms", *(base_vars(version) + tls_vars(pki) + ["release_serial=100%"])))
    finally:
        playbook("deploy_vms", *(base_vars(version) + ["release_serial=100%"]))
    assert mesh_report(NODES, COOKIE, timeout=5.0)["full_mesh"]
    for host in HOSTS:
        left = ssh(host, "ls /etc/meshprobe").split()
        assert "tls" not in left and "ssl_dist.conf" not in left, left


def test_rebar3_release_with_tls_distribution_and_a_failed_deploy_restoring_vm_args(lab, pki):
    """erlprobe (relx, vm.args) next to meshprobe on the same hosts, with TLS distribution and native discovery; then
    a broken erlprobe with other emulator flags fails and its host gets back the previous vm.args."""
    nodes = ["erlprobe@%s" % ADDRESSES[h] for h in HOSTS]
    erlprobe = ["release_name=erlprobe", "release_flavor=rebar3", "release_strategy=native",
                "@" + vars_file({"release_cookie": COOKIE}, "erlprobe"), '{"release_discovery": {"peers_env": "erlprobe.peers"}}',
                "release_target=" + MEMBERS, "release_mesh_timeout=60", "release_health_url=http://127.0.0.1:4100/health"]
    run = playbook("deploy_vms", *(erlprobe + ["release_src=%s/erlprobe-0.1.0.tar.gz" % lab] + tls_vars(pki)))
    assert "full mesh: True; 3 of 3 nodes answered" in run.out
    assert tls_report(pki, nodes)["full_mesh"]
    assert {v["reason"] for v in mesh_report(nodes, COOKIE, timeout=5.0)["per_node"].values()} == {"tls_required"}
    vm_args = ssh(HOSTS[0], "cat /etc/erlprobe/vm.args").splitlines()
    assert "-proto_dist inet_tls" in vm_args and "-ssl_dist_optfile /etc/erlprobe/ssl_dist.conf" in vm_args
    # meshprobe, plain, is not disturbed by its TLS neighbour.
    assert mesh_report(NODES, COOKIE, timeout=5.0)["full_mesh"]
    paths = ["/etc/erlprobe/vm.args", "/etc/erlprobe/env", "/var/lib/erlprobe/.erlang.cookie"]
    before = file_states(HOSTS[0], paths)
    broken = ["release_src=%s/erlprobe-0.3.0-broken.tar.gz" % lab, "release_health_timeout=10", '{"release_emulator_flags": ["+P 300000"]}']
    run = playbook("deploy_vms", *(erlprobe + broken + tls_vars(pki)), check=False)
    assert run.returncode != 0 and "/etc/erlprobe/vm.args" in run.out and "The host was rolled back to 0.1.0" in run.out, run.out[-3000:]
    assert file_states(HOSTS[0], paths) == before
    assert "+P 300000" not in ssh(HOSTS[0], "cat /etc/erlprobe/vm.args")
    converged, report, _ms, _n = wait_for_mesh(nodes, COOKIE, timeout=60.0, tls=TlsOptions(
        ca_file=pki["ca"], cert_file=pki["client_cert"], key_file=pki["client_key"]))
    assert converged, report
