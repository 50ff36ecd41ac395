"""Unit tests of plugins/module_utils/faults.py that need no lab: the inventory reader, host checks, the nftables
rules (loaded into a real kernel, in a network namespace of the test's own, where they must cut and heal real TCP
connections as DROP and REJECT promise), the remote helper run on this machine against real processes, the
journal on disk, and the signal hold. The SSH sessions and the faults on real hosts are tested on a lab in
tests/integration/test_faults.py; the session machinery (journal before apply, undo on every exit path, recovery
after SIGKILL) also in tests/unit/test_faults_k8s.py.
"""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from ansible_collections.beamops.cluster.plugins.module_utils import faults
from ansible_collections.beamops.cluster.plugins.module_utils.faults import (
    FaultError,
    FaultInterrupted,
    HoldSignals,
    Journal,
    partition_ruleset,
    read_inventory,
    validate_hosts,
)

LAB_INVENTORY = """\
# Ansible managed
lab:
  hosts:
    t-1:
      ansible_host: 198.18.42.11
      ansible_user: root
      ansible_ssh_private_key_file: {key}
      ansible_ssh_common_args: "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes"
      ansible_python_interpreter: /usr/bin/python3
      lab_address: 198.18.42.11
    t-2:
      ansible_host: 198.18.42.12
      ansible_user: root
      ansible_ssh_private_key_file: {key}
      ansible_ssh_common_args: "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes"
      ansible_python_interpreter: /usr/bin/python3
  vars:
    lab_name: t
"""


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "id_ed25519"
    path.write_text("not really a key; the reader only checks that it is readable\n")
    return str(path)


def test_read_inventory_of_the_lab_format(tmp_path, key_file):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(LAB_INVENTORY.format(key=key_file))
    hosts = read_inventory(str(inventory), group="lab")
    assert hosts == {
        "t-1": {"address": "198.18.42.11", "port": 22, "user": "root", "key_file": key_file,
                "host_key_checking": False, "python": "/usr/bin/python3"},
        "t-2": {"address": "198.18.42.12", "port": 22, "user": "root", "key_file": key_file,
                "host_key_checking": False, "python": "/usr/bin/python3"},
    }


def test_read_inventory_children_group_vars_and_group_filter(tmp_path, key_file):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(textwrap.dedent("""\
        all:
          vars:
            ansible_user: deploy
          children:
            app:
              vars:
                ansible_port: 2222
              hosts:
                a1: {ansible_host: 10.0.0.1}
                a2: {ansible_host: 10.0.0.2, ansible_port: 22, ansible_private_key_file: %s}
            db:
              hosts:
                d1:
        """ % key_file))
    everything = read_inventory(str(inventory))
    assert sorted(everything) == ["a1", "a2", "d1"]
    assert everything["a1"] == {"address": "10.0.0.1", "port": 2222, "user": "deploy", "key_file": None,
                                "host_key_checking": True, "python": "python3"}
    assert everything["a2"]["port"] == 22 and everything["a2"]["key_file"] == key_file
    assert everything["d1"]["address"] == "d1" and everything["d1"]["port"] == 22
    assert sorted(read_inventory(str(inventory), group="app")) == ["a1", "a2"]


@pytest.mark.parametrize("text,group,message", [
    ("lab:\n  hosts:\n    h: {ansible_host: '{{ x }}'}\n", None, "ansible_host of h is templated"),
    ("lab:\n  hosts:\n    h:\n", "web", "has no hosts in group web"),
    ("- a\n- b\n", None, "must be a YAML mapping of groups"),
    ("lab: [\n", None, "is not valid YAML"),
    ("lab:\n  hosts:\n    h: {ansible_port: 70000}\n", None, "hosts.h.port must be a TCP port"),
])
def test_read_inventory_bad_input_names_the_problem(tmp_path, text, group, message):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(text)
    with pytest.raises(ValueError) as err:
        read_inventory(str(inventory), group=group)
    assert message in str(err.value)


def test_read_inventory_missing_file():
    with pytest.raises(ValueError, match="inventory /nonexistent/inv.yml cannot be read"):
        read_inventory("/nonexistent/inv.yml")


@pytest.mark.parametrize("spec,message", [
    ({"address": ""}, "hosts.h.address must be"),
    ({"address": "10.0.0.1", "port": 0}, "hosts.h.port must be a TCP port"),
    ({"address": "10.0.0.1", "port": True}, "hosts.h.port must be a TCP port"),
    ({"address": "10.0.0.1", "user": ""}, "hosts.h.user must be a user name"),
    ({"address": "10.0.0.1", "key_file": "/nonexistent/key"}, "hosts.h.key_file '/nonexistent/key' is not a readable"),
    ({"address": "10.0.0.1", "password": "x"}, "hosts.h has unknown field(s) password"),
    ({"address": "10.0.0.1", "host_key_checking": "no"}, "hosts.h.host_key_checking must be true or false"),
    ({"address": "10.0.0.1", "python": "python3; rm -rf /"}, "hosts.h.python must be"),
])
def test_validate_hosts_names_the_field(spec, message):
    with pytest.raises(ValueError) as err:
        validate_hosts({"h": spec})
    assert message in str(err.value)


def test_validate_hosts_defaults():
    assert validate_hosts({"h": {"address": "10.0.0.1"}}) == {
        "h": {"address": "10.0.0.1", "port": 22, "user": "root", "key_file": None, "host_key_checking": True,
              "python": "python3"}}
    with pytest.raises(ValueError, match="non-empty dict"):
        validate_hosts({})


def test_partition_ruleset_drop_matches_only_the_peers_both_ways():
    rules = partition_ruleset("beamops_fault_abc", ["198.18.42.13", "198.18.42.12"], "drop")
    lines = [line.strip() for line in rules.splitlines()]
    # Loading it replaces the table as a whole (declare, delete, define).
    assert lines[:3] == ["table inet beamops_fault_abc", "delete table inet beamops_fault_abc",
                         "table inet beamops_fault_abc {"]
    assert "elements = { 198.18.42.12, 198.18.42.13 }" in lines
    assert "type filter hook input priority -300; policy accept;" in lines
    assert "type filter hook output priority -300; policy accept;" in lines
    assert "ip saddr @peers_v4 drop" in lines and "ip daddr @peers_v4 drop" in lines
    assert not any("reject" in line or "ip6" in line for line in lines)


def test_partition_ruleset_reject_lets_its_own_resets_through_and_handles_ipv6():
    rules = partition_ruleset("beamops_fault_abc", ["10.0.0.2", "fd00::2"], "reject")
    lines = [line.strip() for line in rules.splitlines()]
    for field in ("saddr", "daddr"):
        v4 = [line for line in lines if line.startswith("ip %s @peers_v4" % field)]
        assert v4 == ["ip %s @peers_v4 tcp flags & rst == rst accept" % field,
                      "ip %s @peers_v4 icmp type destination-unreachable accept" % field,
                      "ip %s @peers_v4 meta l4proto tcp reject with tcp reset" % field,
                      "ip %s @peers_v4 reject with icmpx type admin-prohibited" % field]
        assert "ip6 %s @peers_v6 icmpv6 type destination-unreachable accept" % field in lines
    assert "elements = { fd00::2 }" in lines


@pytest.mark.parametrize("table,peers,action,message", [
    ("beamops_fault_x", ["10.0.0.1"], "block", "action must be one of drop, reject"),
    ("beamops fault", ["10.0.0.1"], "drop", "must be letters, digits and _"),
    ("beamops_fault_x", ["host.example"], "drop", "is not an IP address"),
    ("beamops_fault_x", [], "drop", "at least one peer"),
])
def test_partition_ruleset_refuses_bad_input(table, peers, action, message):
    with pytest.raises(ValueError, match=message):
        partition_ruleset(table, peers, action)


def test_tick_window():
    assert faults.tick_window() == (45.0, 75.0)
    assert faults.tick_window(6) == (4.5, 7.5)
    assert faults.tick_window(12, 24) == (11.5, 12.5)
    with pytest.raises(ValueError):
        faults.tick_window(6, 2)


def test_probe_expectations():
    assert faults.probe_ok("timeout", "drop") and not faults.probe_ok("refused", "drop")
    assert all(faults.probe_ok(o, "reject") for o in ("refused", "reset", "unreachable", "denied"))
    assert not faults.probe_ok("timeout", "reject") and not faults.probe_ok("connected", "reject")
    assert faults.probe_ok("connected", "connected") and not faults.probe_ok("timeout", "connected")
    assert faults.probe_ok("failed", "blocked") and not faults.probe_ok("connected", "blocked")


# ---------------------------------------------------------------------------------- real kernel, own netns
NETNS_SCRIPT = r'''
import json, socket, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from ansible_collections.beamops.cluster.plugins.module_utils import faults

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
PEER = "127.0.0.7"
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((PEER, 0))
server.listen(16)
port = server.getsockname()[1]
helper = {}
exec(compile(faults.REMOTE_HELPER.replace("print(json.dumps(main(sys.argv)))", ""), "helper", "exec"), helper)

def probe():
    return helper["probe"](1.0, [[PEER, port]])[0]["outcome"]

def nft(script):
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)

def established_after_cut(action):
    """Open a connection, cut, send: what does the sender see within 2 s?"""
    client = socket.create_connection((PEER, port), timeout=2)
    accepted, _ = server.accept()
    nft(faults.partition_ruleset("beamops_fault_t", [PEER], action))
    client.settimeout(2.0)
    try:
        client.send(b"tick")
        client.recv(1)
        seen = "answered"
    except socket.timeout:
        seen = "silent"
    except OSError as exc:
        seen = "closed: %s" % exc.strerror
    client.close()
    accepted.close()
    nft(faults.delete_table_script("beamops_fault_t"))
    return seen

out = {"before": probe()}
for action in ("drop", "reject"):
    nft(faults.partition_ruleset("beamops_fault_t", [PEER], action))
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    out[action] = probe()
    out[action + "_table"] = "beamops_fault_t" in tables
    nft(faults.delete_table_script("beamops_fault_t"))
    out[action + "_healed"] = probe()
    out[action + "_established"] = established_after_cut(action)
nft(faults.delete_table_script("beamops_fault_t"))  # deleting a table that is gone is fine
out["left"] = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout.strip()
print(json.dumps(out))
'''


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"),
                    reason="needs root, nft and unshare (a network namespace of the test's own)")
def test_rules_cut_and_heal_real_connections_in_a_private_network_namespace(tmp_path, collections_root):
    script = tmp_path / "netns.py"
    script.write_text(NETNS_SCRIPT)
    proc = subprocess.run(["unshare", "--net", sys.executable, str(script), collections_root],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before"] == "connected"
    # DROP: a connect times out; REJECT: it is refused at once; both are gone after the delete.
    assert out["drop"] == "timeout" and out["drop_table"] and out["drop_healed"] == "connected"
    assert out["reject"] == "refused" and out["reject_table"] and out["reject_healed"] == "connected"
    # On an established connection DROP stays silent and REJECT resets it at the first packet sent.
    assert out["drop_established"] == "silent"
    assert out["reject_established"].startswith("closed"), out
    assert out["left"] == ""


# ------------------------------------------------------------------------- the remote helper, run here
def run_helper(*args):
    proc = subprocess.run([sys.executable, "-I", "-"] + [str(a) for a in args], input=faults.REMOTE_HELPER,
                          capture_output=True, text=True, timeout=30, check=True)
    return json.loads(proc.stdout)


def test_remote_helper_signals_only_the_process_it_was_told_about():
    child = subprocess.Popen(["sleep", "60"])
    try:
        start = run_helper("stat", child.pid)["start_time"]
        assert run_helper("signal", child.pid, str(int(start) + 1), "STOP") == {"sent": False, "reason": "gone"}
        assert run_helper("stat", child.pid)["state"] in ("S", "R")
        assert run_helper("signal", child.pid, start, "STOP")["sent"] is True
        assert faults.wait_until(lambda: run_helper("stat", child.pid)["state"] == "T", 5.0)
        run_helper("signal", child.pid, start, "CONT")
        assert faults.wait_until(lambda: run_helper("stat", child.pid)["state"] != "T", 5.0)
        run_helper("signal", child.pid, start, "KILL")
        child.wait(5)
        assert run_helper("stat", child.pid) is None
        assert run_helper("signal", child.pid, start, "CONT") == {"sent": False, "reason": "gone"}
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def probe_with_k8s_script(path, targets):
    """The TCP probe a Kubernetes fault execs in a pod, run here with PATH limited to ``path`` (None: as is)."""
    from ansible_collections.beamops.cluster.plugins.module_utils import k8s_faults
    argv = k8s_faults.probe_argv(1.5, targets)
    env = None if path is None else {"PATH": path}
    out = subprocess.run(["/bin/sh"] + argv[1:], capture_output=True, text=True, timeout=30, check=True,
                         env=env).stdout
    return [line.split()[2] for line in out.splitlines()]


@pytest.mark.parametrize("probe", ["vm helper", "k8s script (python3)", "k8s script (bash and timeout only)"])
def test_probes_tell_connected_from_refused_on_real_sockets(tmp_path, probe):
    import socket
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: refused
    targets = [["127.0.0.1", server.getsockname()[1]], ["127.0.0.1", closed.getsockname()[1]]]
    try:
        if probe == "vm helper":
            answer = run_helper("probe", 1.0, json.dumps(targets))
            assert answer[1]["errno"] == 111
            outcomes = [a["outcome"] for a in answer]
        elif probe == "k8s script (python3)":
            outcomes = probe_with_k8s_script(None, targets)
        else:
            for tool in ("bash", "timeout"):
                os.symlink(shutil.which(tool), str(tmp_path / tool))
            outcomes = probe_with_k8s_script(str(tmp_path), targets)
    finally:
        server.close()
        closed.close()
    assert outcomes == ["connected", "refused"]


# ------------------------------------------------------------------------------------------------ journal
def test_journal_is_written_atomically_private_and_locked(tmp_path):
    path = str(tmp_path / "faults" / "journal.json")
    journal = Journal(path)
    journal.acquire()
    assert journal.load() is None
    journal.data = {"format": faults.JOURNAL_FORMAT, "version": 1, "faults": [{"id": "x", "state": "applying"}]}
    journal.save()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert [n for n in os.listdir(os.path.dirname(path)) if ".tmp." in n] == []
    assert Journal(path).load()["faults"] == [{"id": "x", "state": "applying"}]
    other = Journal(path)
    with pytest.raises(FaultError, match="is in use by another run \\(pid %d\\)" % os.getpid()):
        other.acquire()
    journal.release(remove=False)
    other.acquire()  # free again once released
    other.release(remove=True)
    assert not os.path.exists(path)


def test_journal_that_is_not_json_is_refused_with_advice(tmp_path):
    path = tmp_path / "journal.json"
    path.write_text('{"format": "beamops.cluster fault journal", "faults": [')
    with pytest.raises(FaultError, match="is not valid JSON .*beamops_fault_\\* tables"):
        Journal(str(path)).load()
    path.write_text('{"something": "else"}')
    with pytest.raises(FaultError, match="is not a beamops.cluster fault journal"):
        Journal(str(path)).load()


def test_a_session_on_a_locked_journal_fails_before_connecting(tmp_path):
    path = str(tmp_path / "journal.json")
    holder = Journal(path)
    holder.acquire()
    try:
        session = faults.VmFaultSession({"h": {"address": "198.18.42.250"}}, path)
        with pytest.raises(FaultError, match="in use by another run"):
            session.open()
    finally:
        holder.release(remove=True)


def test_vm_session_refuses_a_bad_app_name(tmp_path):
    with pytest.raises(ValueError, match="app must be the release name"):
        faults.VmFaultSession({"h": {"address": "198.18.42.250"}}, str(tmp_path / "j.json"), app="x; reboot")


# ------------------------------------------------------------------------------------------------ signals
def test_hold_delays_sigterm_until_the_block_ends():
    previous = signal.signal(signal.SIGTERM, faults._Signals.handler)  # pylint: disable=protected-access
    try:
        reached_end_of_block = False
        with pytest.raises(FaultInterrupted) as err:
            with HoldSignals():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)  # the handler runs here and only records the signal
                reached_end_of_block = True
        assert reached_end_of_block and err.value.signum == signal.SIGTERM
        with pytest.raises(FaultInterrupted):  # outside a hold it raises at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGTERM, previous)
