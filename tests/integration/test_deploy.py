"""Deploys of the release role on a real lab (systemd-nspawn hosts over SSH), measured with our own Erlang
distribution client:

- a rolling upgrade of 3 hosts never leaves fewer than N-1 nodes in the mesh (figure printed);
- `kill -9` of a node's BEAM: systemd restarts it and the mesh is whole again (time printed);
- bad input fails in the preflight, naming the variable, and changes nothing on any host;
- TLS distribution: switched on and off for the whole cluster at once (mix), and a rebar3 release with TLS.

Needs root, systemd-nspawn and the lab role (as the lab's own tests do). The lab is this module's own
(lab_name itdeploy on 198.18.7.0/24) and is removed at the end.
"""
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.beamops.cluster.plugins.module_utils.erl_dist import TlsOptions
from ansible_collections.beamops.cluster.plugins.module_utils.erl_mesh import mesh_report, wait_for_mesh

import beamnodes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB = "itdeploy"
NETWORK = "198.18.7.0/24"
INVENTORY = "/var/lib/beamops/lab/%s/inventory.yml" % LAB
HOSTS = ["%s-%d" % (LAB, i) for i in (1, 2, 3)]
ADDRESSES = {"%s-%d" % (LAB, i): "198.18.7.%d" % (10 + i) for i in (1, 2, 3)}
NODES = ["meshprobe@%s" % ADDRESSES[h] for h in HOSTS]
COOKIE = "itdeploy-cookie-7f3a"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="the lab needs systemd-nspawn"),
]


def playbook(name, *extra, check=True):
    """Run a collection playbook by FQCN against the lab; return the CompletedProcess (stdout+stderr in .out)."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", INVENTORY, "beamops.cluster." + name]
    for item in extra:
        cmd += ["-e", item]
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_PIPELINING="true")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200, check=False)
    proc.out = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, proc.out[-6000:]
    return proc


def ssh(host, command):
    key = "/var/lib/beamops/lab/%s/ssh/id_ed25519" % LAB
    return subprocess.run(
        ["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
         "-o", "BatchMode=yes", "root@" + ADDRESSES[host], command],
        capture_output=True, text=True, timeout=60, check=True).stdout.strip()


def service_state(host):
    out = ssh(host, "systemctl show -p MainPID -p NRestarts -p ActiveState meshprobe; readlink /opt/meshprobe/current")
    lines = out.splitlines()
    state = dict(line.split("=", 1) for line in lines if "=" in line)
    state["current"] = os.path.basename(lines[-1])
    return state


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
def builds(tmp_path_factory):
    out = tmp_path_factory.mktemp("testapps")
    subprocess.run([os.path.join(REPO, "scripts", "build-testapps.sh"), str(out)], check=True, capture_output=True, timeout=900)
    return str(out)


def base_vars(builds, version="0.1.0"):
    return ["release_name=meshprobe", "release_cookie=" + COOKIE, "release_target=lab", "release_mesh_timeout=60",
            "release_src=%s/meshprobe-%s.tar.gz" % (builds, version)]


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


@pytest.fixture(scope="module")
def lab(builds):
    playbook("lab_down", "lab_name=" + LAB, check=False)
    playbook("lab_up", "lab_name=" + LAB, "lab_network=" + NETWORK, "lab_hosts=3")
    try:
        playbook("deploy_vms", *base_vars(builds))
        yield builds
    finally:
        playbook("lab_down", "lab_name=" + LAB, check=False)


def test_rolling_upgrade_never_drops_below_n_minus_1(lab):
    before = {h: service_state(h) for h in HOSTS}
    sampler = MeshSampler()
    sampler.start()
    time.sleep(1.0)
    started = time.monotonic()
    run = playbook("deploy_vms", *base_vars(lab, "0.2.0"))
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


def test_second_identical_deploy_changes_nothing(lab):
    run = playbook("deploy_vms", *base_vars(lab, "0.2.0"))
    for host in HOSTS:
        assert "%s " % host in run.out
    recap = run.out[run.out.index("PLAY RECAP"):]
    assert "changed=0" in recap and " changed=1" not in recap.replace("changed=0", "")
    for line in recap.splitlines()[1:4]:
        assert "changed=0" in line and "failed=0" in line, recap


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
    print("\ncrash recovery: kill -9 of the BEAM on %s -> full mesh of %d again after %.2f s (RestartSec=2, net_ticktime=60)"
          % (victim, len(HOSTS), healed if healed is not None else float("nan")))
    assert saw_broken, "the mesh never lost the killed node"
    assert healed is not None, "the mesh did not heal within 90 s"
    assert after["MainPID"] != before["MainPID"] and int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert after["ActiveState"] == "active"


@pytest.mark.parametrize("override,expected", [
    (["release_strategy=consul"], "release_strategy"),
    (["release_cookie="], "release_cookie is empty"),
    (["release_src=/nonexistent/meshprobe.tar.gz"], "release_src '/nonexistent/meshprobe.tar.gz' does not exist"),
    (["release_checksum=sha256:" + "0" * 64], "Checksum mismatch"),
    (["release_name=otherapp"], "has no bin/otherapp"),
    (['{"release_strategy": "dnspoll", "release_discovery": {"query": "itdeploy.lab.test"}, "release_node_host": "fqdn"}'],
     "release_node_host dnspoll dials"),
    (['{"release_discovery": {"hosts": ["meshprobe@198.18.7.11"]}}'], "release_discovery.hosts lists"),
    (["release_discovery=query"], "release_discovery must be a dict"),
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
        playbook("deploy_vms", *base_vars(lab, "0.2.0"))
    before = {h: service_state(h) for h in HOSTS}
    extra = base_vars(lab, before[HOSTS[0]]["current"])
    if override[:1] == ["TLS"]:
        override = tls_vars(pki) + override[1:]
    override = [o.replace("OLD", "%s/meshprobe-0.1.0.tar.gz" % lab).replace("PKI", os.path.dirname(pki["ca"])) for o in override]
    run = playbook("deploy_vms", *(extra + override), check=False)
    assert run.returncode != 0
    assert expected in run.out, run.out[-3000:]
    recap = run.out[run.out.index("PLAY RECAP"):]
    assert "changed=" in recap and all(("changed=0" in line) for line in recap.splitlines()[1:] if "changed=" in line), recap
    assert "changed: [" not in run.out
    after = {h: service_state(h) for h in HOSTS}
    assert after == before


def test_epmdless_single_port_distribution(lab):
    """Redeploy with release_epmdless: nodes listen on one fixed port, dial peers there, and need no EPMD."""
    try:
        run = playbook("deploy_vms", *(base_vars(lab, service_state(HOSTS[0])["current"]) + ["release_epmdless=true"]))
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
        playbook("deploy_vms", *base_vars(lab, service_state(HOSTS[0])["current"]))
    assert mesh_report(NODES, COOKIE, timeout=5.0)["full_mesh"]


def test_erlang_hosts_strategy_forms_and_heals_the_mesh(lab):
    """Switch the running cluster to ErlangHosts (.hosts.erlang in the service's working directory) by a rolling deploy."""
    version = service_state(HOSTS[0])["current"]
    try:
        run = playbook("deploy_vms", *(base_vars(lab, version) + ["release_strategy=erlang_hosts"]))
        assert "full mesh: True; 3 of 3 nodes answered" in run.out
        hosts_file = ssh(HOSTS[0], "cat /var/lib/meshprobe/.hosts.erlang")
        assert hosts_file.splitlines() == ["'%s'." % ADDRESSES[h] for h in HOSTS]
        ssh(HOSTS[2], "systemctl restart meshprobe")
        converged, report, after_ms, _attempts = wait_for_mesh(NODES, COOKIE, timeout=60.0)
        print("\nerlang_hosts: %s restarted, full mesh again after %s ms" % (HOSTS[2], after_ms))
        assert converged, report
    finally:
        playbook("deploy_vms", *base_vars(lab, version))


def tls_report(pki, nodes, cert=True, timeout=5.0):
    """Mesh report over TLS with the test CA, with or without the client certificate."""
    tls = TlsOptions(ca_file=pki["ca"], cert_file=pki["client_cert"] if cert else None, key_file=pki["client_key"] if cert else None)
    return mesh_report(nodes, COOKIE, timeout=timeout, tls=tls)


def test_tls_distribution_switched_on_and_off_for_the_whole_cluster(lab, pki):
    """Turn TLS on for the running cluster (every host at once), check who gets through, then turn it off again."""
    version = service_state(HOSTS[0])["current"]
    try:
        run = playbook("deploy_vms", *(base_vars(lab, version) + tls_vars(pki) + ["release_serial=100%"]))
        assert "full mesh: True; 3 of 3 nodes answered" in run.out
        assert tls_report(pki, NODES)["full_mesh"]
        assert {v["reason"] for v in mesh_report(NODES, COOKIE, timeout=5.0)["per_node"].values()} == {"tls_required"}
        assert {v["reason"] for v in tls_report(pki, NODES, cert=False)["per_node"].values()} == {"tls_failed"}
        for host in HOSTS:
            args = ssh(host, "tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value meshprobe)/cmdline")
            assert "-proto_dist inet_tls -ssl_dist_optfile /etc/meshprobe/ssl_dist.conf" in args
            assert ssh(host, "stat -c '%U %a' /etc/meshprobe/tls/node.key") == "meshprobe 400"
        # Same inputs again: nothing changes, nothing restarts.
        again = playbook("deploy_vms", *(base_vars(lab, version) + tls_vars(pki) + ["release_serial=100%"]))
        recap = again.out[again.out.index("PLAY RECAP"):]
        assert all("changed=0" in line for line in recap.splitlines()[1:] if "changed=" in line), recap
    finally:
        playbook("deploy_vms", *(base_vars(lab, version) + ["release_serial=100%"]))
    assert mesh_report(NODES, COOKIE, timeout=5.0)["full_mesh"]
    for host in HOSTS:
        left = ssh(host, "ls /etc/meshprobe").split()
        assert "tls" not in left and "ssl_dist.conf" not in left, left


def test_rebar3_release_with_tls_distribution(lab, pki):
    """erlprobe (relx, vm.args) next to meshprobe on the same hosts, with TLS distribution and native discovery."""
    nodes = ["erlprobe@%s" % ADDRESSES[h] for h in HOSTS]
    run = playbook("deploy_vms", "release_name=erlprobe", "release_flavor=rebar3", "release_strategy=native", "release_cookie=" + COOKIE,
                   '{"release_discovery": {"peers_env": "erlprobe.peers"}}',
                   "release_target=lab", "release_mesh_timeout=60", "release_health_url=http://127.0.0.1:4100/health",
                   "release_src=%s/erlprobe-0.1.0.tar.gz" % lab, *tls_vars(pki))
    assert "full mesh: True; 3 of 3 nodes answered" in run.out
    assert tls_report(pki, nodes)["full_mesh"]
    assert {v["reason"] for v in mesh_report(nodes, COOKIE, timeout=5.0)["per_node"].values()} == {"tls_required"}
    vm_args = ssh(HOSTS[0], "cat /etc/erlprobe/vm.args").splitlines()
    assert "-proto_dist inet_tls" in vm_args and "-ssl_dist_optfile /etc/erlprobe/ssl_dist.conf" in vm_args
    # meshprobe, plain, is not disturbed by its TLS neighbour.
    assert mesh_report(NODES, COOKIE, timeout=5.0)["full_mesh"]
