"""epmd_info, mesh_info and mesh_wait run by a real ansible-playbook on localhost against real nodes.

One playbook run (with -vvv) exercises every case; its registered results are written to a JSON file that
the tests below read. The cookie must never show in the output.
"""
import json
import os
import subprocess
import sys
import uuid

import pytest

import beamnodes
import otp

RELEASES = sorted(otp.runtimes())

PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    cookie: "{cookie}"
    mesh: {mesh}
    broken: {broken}
    tls_nodes: {tls_nodes}
  tasks:
    - name: Mesh of nodes of every OTP release
      beamops.cluster.mesh_info:
        nodes: "{{{{ mesh }}}}"
        cookie: "{{{{ cookie }}}}"
      register: info_ok

    - name: Same in check mode
      beamops.cluster.mesh_info:
        nodes: "{{{{ mesh }}}}"
        cookie: "{{{{ cookie }}}}"
      check_mode: true
      register: info_check

    - name: A broken mesh is a result
      beamops.cluster.mesh_info:
        nodes: "{{{{ broken }}}}"
        cookie: "{{{{ cookie }}}}"
        timeout: 3
      register: info_broken

    - name: Wait for the good mesh
      beamops.cluster.mesh_wait:
        nodes: "{{{{ mesh }}}}"
        cookie: "{{{{ cookie }}}}"
        timeout: 10
        poll_ms: 50
      register: wait_ok

    - name: Wait for the broken one times out
      beamops.cluster.mesh_wait:
        nodes: "{{{{ broken }}}}"
        cookie: "{{{{ cookie }}}}"
        timeout: 0.5
        poll_ms: 50
      register: wait_broken
      ignore_errors: true

    - name: Wait with the cluster size given, listing one seed
      beamops.cluster.mesh_wait:
        nodes: "{{{{ mesh[:1] }}}}"
        expected: "{{{{ mesh | length }}}}"
        cookie: "{{{{ cookie }}}}"
        timeout: 10
      register: wait_expected

    - name: Expected smaller than the list
      beamops.cluster.mesh_wait:
        nodes: "{{{{ mesh }}}}"
        expected: 1
        cookie: "{{{{ cookie }}}}"
      register: bad_expected
      ignore_errors: true

    - name: EPMD of this host
      beamops.cluster.epmd_info:
        name: "{{{{ mesh[0].split('@')[0] }}}}"
      register: epmd

    - name: EPMD that is not there
      beamops.cluster.epmd_info:
        epmd_port: {closed_port}
        timeout: 1
      register: epmd_closed

    - name: Empty node list
      beamops.cluster.mesh_info:
        nodes: []
        cookie: "{{{{ cookie }}}}"
      register: bad_empty
      ignore_errors: true

    - name: Malformed node name
      beamops.cluster.mesh_info:
        nodes: ["not-a-node-name"]
        cookie: "{{{{ cookie }}}}"
      register: bad_name
      ignore_errors: true

    - name: Cookie that is not a string
      beamops.cluster.mesh_info:
        nodes: "{{{{ mesh }}}}"
        cookie: 12345
      register: bad_cookie
      ignore_errors: true

    - name: Missing TLS CA
      beamops.cluster.mesh_wait:
        nodes: "{{{{ mesh }}}}"
        cookie: "{{{{ cookie }}}}"
        tls: true
      register: bad_tls
      ignore_errors: true

    - name: EPMD-less node at its port
      beamops.cluster.mesh_info:
        nodes: ["{epmdless}"]
        cookie: "{{{{ cookie }}}}"
        dist_port: {dist_port}
      register: info_epmdless

    - name: TLS node that demands a client certificate
      beamops.cluster.mesh_info:
        nodes: "{{{{ tls_nodes }}}}"
        cookie: "{{{{ cookie }}}}"
        tls_ca_file: "{ca}"
        tls_cert_file: "{client_cert}"
        tls_key_file: "{client_key}"
      register: info_tls
      when: tls_nodes | length > 0

    - name: Same without the client certificate
      beamops.cluster.mesh_info:
        nodes: "{{{{ tls_nodes }}}}"
        cookie: "{{{{ cookie }}}}"
        tls: true
        tls_ca_file: "{ca}"
      register: info_tls_no_cert
      when: tls_nodes | length > 0

    - name: A node reached at its dial address (its name resolves nowhere, as a pod's name outside its cluster)
      beamops.cluster.mesh_info:
        nodes: ["{pod}"]
        cookie: "{{{{ cookie }}}}"
        dial: {{"{pod}": "127.0.0.1:{pod_port}"}}
      register: info_dial

    - name: The same node without it
      beamops.cluster.mesh_info:
        nodes: ["{pod}"]
        cookie: "{{{{ cookie }}}}"
        timeout: 2
      register: info_no_dial

    - name: A dial address that is not one
      beamops.cluster.mesh_info:
        nodes: ["{pod}"]
        cookie: "{{{{ cookie }}}}"
        dial: {{"{pod}": "nowhere"}}
      register: bad_dial
      ignore_errors: true

    - name: A port-forward without a port (and no dist_port)
      beamops.cluster.mesh_wait:
        nodes: ["{pod}"]
        cookie: "{{{{ cookie }}}}"
        port_forward: {{namespace: shop, pods: {{"{pod}": modpod-0}}, kubeconfig: "{kubeconfig}"}}
      register: bad_pf_port
      ignore_errors: true

    - name: A port-forward with a kubeconfig that is not there
      beamops.cluster.mesh_info:
        nodes: ["{pod}"]
        cookie: "{{{{ cookie }}}}"
        port_forward: {{namespace: shop, pods: {{"{pod}": modpod-0}}, port: 9100, kubeconfig: /nonexistent/kube}}
      register: bad_pf_kubeconfig
      ignore_errors: true

    - name: A port-forward through an API server that does not answer
      beamops.cluster.mesh_info:
        nodes: ["{pod}"]
        cookie: "{{{{ cookie }}}}"
        timeout: 5
        port_forward: {{namespace: shop, pods: {{"{pod}": modpod-0}}, port: 9100, kubeconfig: "{kubeconfig}"}}
      register: pf_down

    - name: Keep every result for the tests
      ansible.builtin.copy:
        dest: "{results}"
        mode: "0600"
        content: >-
          {{{{ {{'info_ok': info_ok, 'info_check': info_check, 'info_broken': info_broken, 'wait_ok': wait_ok,
          'wait_broken': wait_broken, 'epmd': epmd, 'epmd_closed': epmd_closed, 'bad_empty': bad_empty,
          'bad_name': bad_name, 'bad_cookie': bad_cookie, 'bad_tls': bad_tls, 'info_epmdless': info_epmdless,
          'info_tls': info_tls, 'info_tls_no_cert': info_tls_no_cert, 'wait_expected': wait_expected,
          'bad_expected': bad_expected, 'info_dial': info_dial, 'info_no_dial': info_no_dial, 'bad_dial': bad_dial,
          'bad_pf_port': bad_pf_port, 'bad_pf_kubeconfig': bad_pf_kubeconfig, 'pf_down': pf_down}} | to_json }}}}
"""


# An API server address where nothing listens: the port-forward fails the way an unreachable cluster does.
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: gone, cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}}]
users: [{name: verifier, user: {token: not-a-real-token}}]
contexts: [{name: gone, context: {cluster: gone, user: verifier}}]
current-context: gone
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, collections_root):
    workdir = tmp_path_factory.mktemp("modules")
    pki = beamnodes.make_test_pki(str(workdir))
    cookie = "ck-" + uuid.uuid4().hex
    specs = [beamnodes.NodeSpec("mod%s" % rel, release=rel, cookie=cookie) for rel in RELEASES]
    specs.append(beamnodes.NodeSpec("modlone", release=RELEASES[0], cookie=cookie))
    epmdless = beamnodes.NodeSpec("modnomd", release=RELEASES[-1], cookie=cookie, dist_port=beamnodes.free_port())
    specs.append(epmdless)
    pod = beamnodes.NodeSpec("modpod", release=RELEASES[0], cookie=cookie, host="modpod-0.beamops.invalid",
                             dist_port=beamnodes.free_port())
    specs.append(pod)
    tls_specs = []
    if "25" in RELEASES:  # the OTP 28 runtime here has no ssl application
        tls = dict(certfile=pki["server_cert"], keyfile=pki["server_key"], cacertfile=pki["ca"], verify_client=True)
        tls_specs = [beamnodes.NodeSpec("modtls", release="25", cookie=cookie, tls=tls)]
    nodes = beamnodes.start_nodes(specs + tls_specs, str(workdir))
    try:
        mesh = nodes[:len(RELEASES)]
        beamnodes.connect_mesh(mesh)
        gone = "gone_%s@127.0.0.1" % uuid.uuid4().hex[:8]
        results = workdir / "results.json"
        playbook = workdir / "play.yml"
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG % beamnodes.free_port())
        playbook.write_text(PLAYBOOK.format(
            cookie=cookie, mesh=json.dumps([n.name for n in mesh]),
            broken=json.dumps([n.name for n in nodes[:len(RELEASES) + 1]] + [gone]), results=results,
            closed_port=beamnodes.free_port(), epmdless=epmdless.node, dist_port=epmdless.dist_port,
            tls_nodes=json.dumps([s.node for s in tls_specs]), ca=pki["ca"], client_cert=pki["client_cert"],
            client_key=pki["client_key"], pod=pod.node, pod_port=pod.dist_port, kubeconfig=kubeconfig))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root, ANSIBLE_NOCOLOR="1",
                   ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING="0",
                   ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
        playbook_bin = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
        proc = subprocess.run([playbook_bin, "-vvv", "-i", "localhost,", str(playbook)], env=env,
                              capture_output=True, text=True, timeout=240, check=False)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        yield {"cookie": cookie, "nodes": nodes, "mesh": mesh, "lone": nodes[len(RELEASES)], "gone": gone,
               "tls": tls_specs, "pod": pod, "output": proc.stdout + proc.stderr, "results": json.loads(results.read_text())}
    finally:
        beamnodes.stop_nodes(nodes)


def test_cookie_never_in_output(run):
    assert run["cookie"] not in run["output"]
    assert run["cookie"] not in json.dumps(run["results"])
    # -vvv did show the module arguments, with the cookie masked.
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in run["output"] or "********" in run["output"]


def test_mesh_info_on_a_mixed_release_mesh(run):
    info = run["results"]["info_ok"]
    mesh = sorted(n.name for n in run["mesh"])
    assert info["changed"] is False and not info.get("failed")
    assert info["full_mesh"] is True
    assert info["members"] == mesh and info["partitions"] == [mesh]
    assert info["missing_links"] == [] and info["unreachable_nodes"] == [] and info["diagnosis"] == []
    for name in mesh:
        entry = info["per_node"][name]
        assert set(entry) == {"reachable", "name", "connected", "hidden", "reason", "message"}
        assert entry["connected"] == [n for n in mesh if n != name]
        assert entry["reason"] == "ok"
    assert isinstance(info["elapsed_ms"], int)
    check = run["results"]["info_check"]
    assert check["full_mesh"] is True and check["changed"] is False


def test_mesh_info_reports_a_broken_mesh_without_failing(run):
    info = run["results"]["info_broken"]
    lone = run["lone"].name
    assert not info.get("failed")
    assert info["full_mesh"] is False
    assert info["unreachable_nodes"] == [run["gone"]]
    assert info["per_node"][run["gone"]]["reason"] == "not_registered"
    assert info["per_node"][lone]["reason"] == "isolated"
    assert len(info["partitions"]) == 2 and [lone] in info["partitions"]
    assert len(info["diagnosis"]) == 2


def test_mesh_wait(run):
    ok = run["results"]["wait_ok"]
    assert not ok.get("failed") and ok["full_mesh"] is True
    assert isinstance(ok["converged_after_ms"], int) and ok["attempts"] >= 1
    broken = run["results"]["wait_broken"]
    assert broken["failed"] is True
    assert "did not form a full mesh" in broken["msg"] and "not_registered" in broken["msg"]
    assert broken["full_mesh"] is False and broken["per_node"][run["gone"]]["reason"] == "not_registered"
    assert broken["diagnosis"] and "converged_after_ms" not in broken
    expected = run["results"]["wait_expected"]
    assert not expected.get("failed") and expected["full_mesh"] is True
    assert expected["per_node"][run["mesh"][0].name]["connected"] == sorted(n.name for n in run["mesh"][1:])


def test_epmd_info(run):
    epmd = run["results"]["epmd"]
    alive = run["nodes"][0].name.split("@")[0]
    assert epmd["reachable"] is True and epmd["registered"] is True
    assert epmd["names"][alive] == epmd["node"]["port"]
    assert epmd["node"]["highest_version"] == 6
    closed = run["results"]["epmd_closed"]
    assert not closed.get("failed")
    assert closed["reachable"] is False and closed["reason"] == "epmd_unreachable"


@pytest.mark.parametrize("case, words", [("bad_empty", "nodes"), ("bad_name", "nodes"), ("bad_cookie", "cookie"),
                                         ("bad_tls", "tls_ca_file"), ("bad_expected", "expected"),
                                         ("bad_dial", "dial: "), ("bad_pf_port", "port_forward.port is required"),
                                         ("bad_pf_kubeconfig", "port_forward.kubeconfig")])
def test_bad_options_fail_naming_the_option(run, case, words):
    result = run["results"][case]
    assert result["failed"] is True
    assert result["msg"].startswith(words), result["msg"]


def test_epmd_less_node_through_the_module(run):
    info = run["results"]["info_epmdless"]
    assert info["full_mesh"] is True and info["diagnosis"] == []


@pytest.mark.skipif("25" not in RELEASES, reason="TLS distribution needs the ssl application, which only OTP 25 has here")
def test_tls_options_through_the_module(run):
    name = run["tls"][0].node
    assert run["results"]["info_tls"]["per_node"][name]["reason"] == "ok"
    no_cert = run["results"]["info_tls_no_cert"]
    assert not no_cert.get("failed")
    assert no_cert["per_node"][name]["reason"] == "tls_failed"
    assert "client certificate" in no_cert["per_node"][name]["message"]


def test_dial_reaches_a_node_at_another_address_than_its_name(run):
    name = run["pod"].node
    entry = run["results"]["info_dial"]["per_node"][name]
    assert entry["reason"] == "ok" and entry["name"] == name, entry
    # Without the address the name's host is all there is, and it resolves nowhere.
    assert run["results"]["info_no_dial"]["per_node"][name]["reason"] == "epmd_unreachable"


def test_port_forward_through_an_api_server_that_does_not_answer(run):
    result = run["results"]["pf_down"]
    assert not result.get("failed"), result
    entry = result["per_node"][run["pod"].node]
    assert entry["reason"] == "dist_port_unreachable", entry
    assert "port-forward" in entry["message"] and "modpod-0" in entry["message"], entry
