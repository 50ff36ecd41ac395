"""The lab, for real: runs playbooks/lab_up.yml and lab_down.yml as root and checks the hosts they make.

Every lab here has its own lab_name and lab_network (never the demo lab beamlab on 198.18.0.0/24), and
the tests only ever remove labs they made. The base image is built on first use and then cached in
/var/cache/beamops/lab, so the first run takes about a minute longer.
"""
import glob
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOKS = os.path.join(REPO_ROOT, "playbooks")
STATE_ROOT = "/var/lib/beamops/lab"
LAB = "bltest"
NETWORK = "198.19.8.0/24"
BRIDGE_ADDRESS = "198.19.8.1"
DOMAIN = "lab.test"
INTERRUPTED_LAB = "blint"
INTERRUPTED_NETWORK = "198.19.10.0/24"
REQUIRED = ("systemd-nspawn", "debootstrap", "dnsmasq", "ip", "nsenter", "ssh", "ssh-keygen")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, mounts, systemd-nspawn)"),
    pytest.mark.skipif(any(shutil.which(tool) is None for tool in REQUIRED),
                       reason="the lab needs: " + ", ".join(REQUIRED)),
]


def ansible_bin(name):
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.access(candidate, os.X_OK) else shutil.which(name)


def run_playbook(playbook, env=None, **variables):
    argv = [ansible_bin("ansible-playbook"), os.path.join(PLAYBOOKS, playbook)]
    for key, value in variables.items():
        argv += ["-e", "%s=%s" % (key, value)]
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          env=env, timeout=900, check=False)


def recap(output):
    """The PLAY RECAP counters for localhost."""
    match = re.search(r"localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output)
    assert match, output[-3000:]
    return dict(zip(("ok", "changed", "unreachable", "failed"), (int(g) for g in match.groups())))


def state_dir(lab):
    return os.path.join(STATE_ROOT, lab)


def load_inventory(lab):
    import yaml  # ansible-core depends on PyYAML

    with open(os.path.join(state_dir(lab), "inventory.yml")) as handle:
        return yaml.safe_load(handle)


def ssh(host_vars, command):
    argv = ["ssh", "-i", host_vars["ansible_ssh_private_key_file"], "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "%s@%s" % (host_vars["ansible_user"], host_vars["ansible_host"]), command]
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=60,
                          check=False)


def recorded_pids(lab):
    """PID records of every process the lab started (hosts' systemd-nspawn and dnsmasq)."""
    records = {}
    for path in glob.glob(os.path.join(state_dir(lab), "dnsmasq.json")) + \
            glob.glob(os.path.join(state_dir(lab), "hosts", "*", "nspawn.json")):
        with open(path) as handle:
            record = json.load(handle)
        records[path] = (record["pid"], record["start_time"])
    return records


def process_alive(pid, start_time):
    try:
        with open("/proc/%d/stat" % pid) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X") and fields[19] == start_time


def leftovers(lab, pids):
    """Everything of the lab still present: a non-empty answer means lab_down missed something."""
    found = []
    found += ["netns %s" % n for n in os.listdir("/run/netns")
              if n == lab or n.startswith(lab + "-")] if os.path.isdir("/run/netns") else []
    found += ["link %s" % n for n in os.listdir("/sys/class/net") if n == lab + "0" or n.startswith(lab + "-")]
    with open("/proc/self/mountinfo") as mountinfo:
        found += ["mount %s" % line.split()[4] for line in mountinfo
                  if line.split()[4].startswith(state_dir(lab) + "/")]
    found += ["process %d" % pid for pid, start in pids.values() if process_alive(pid, start)]
    if os.path.exists(state_dir(lab)):
        found.append("state dir %s" % state_dir(lab))
    return found


def dns_query(server, name, timeout=3.0):
    """A records and their TTLs for name, asked over UDP from this machine: [(address, ttl)]."""
    query_id = random.randint(0, 0xFFFF)
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, 53))
        reply = sock.recv(4096)
    answer_id, flags, dummy, answers = struct.unpack(">HHHH", reply[:8])
    assert answer_id == query_id and flags & 0x000F == 0, "DNS error for %s: flags %#x" % (name, flags)
    offset = 12 + len(qname) + 4
    records = []
    for dummy in range(answers):
        if reply[offset] & 0xC0 == 0xC0:
            offset += 2
        else:
            while reply[offset]:
                offset += reply[offset] + 1
            offset += 1
        rtype, _rclass, ttl, length = struct.unpack(">HHIH", reply[offset:offset + 10])
        offset += 10
        if rtype == 1:
            records.append((socket.inet_ntoa(reply[offset:offset + length]), ttl))
        offset += length
    return records


@pytest.fixture(scope="module")
def lab():
    """A two-host lab of this module's own; removed at the end whatever happened."""
    up = run_playbook("lab_up.yml", lab_name=LAB, lab_network=NETWORK, lab_hosts=2)
    try:
        assert up.returncode == 0, up.stdout[-5000:]
        yield up
    finally:
        run_playbook("lab_down.yml", lab_name=LAB)


@pytest.mark.parametrize("variables, expected", [
    ({"lab_network": "10.20.0.0/24"}, "lab_network=10.20.0.0/24 lies outside 198.18.0.0/15"),
    ({"lab_network": "198.19.11.0/28", "lab_hosts": 5}, "lab_hosts=5 does not fit in lab_network=198.19.11.0/28"),
    ({"lab_network": "198.19.11.7/24"}, "lab_network='198.19.11.7/24' is not a network"),
    ({"lab_name": "Bad_Name"}, "lab_name='Bad_Name' is not usable"),
    ({"lab_boot_timeout": 0}, "lab_boot_timeout=0 must be at least 1"),
])
def test_preflight_refuses_bad_input_before_making_anything(variables, expected):
    name = variables.get("lab_name", "blbad")
    params = {"lab_name": "blbad", "lab_network": "198.19.11.0/24", "lab_hosts": 2}
    params.update(variables)
    result = run_playbook("lab_up.yml", **params)
    assert result.returncode != 0
    assert expected in result.stdout, result.stdout[-3000:]
    assert leftovers(name, {}) == []


def test_preflight_names_a_missing_tool(tmp_path):
    # A PATH with everything the run needs except systemd-nspawn.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "echo", "sleep", "mkdir", "chmod", "rm", "debootstrap", "dnsmasq", "ip", "nsenter", "mount",
                 "ssh-keygen"):
        os.symlink(shutil.which(tool), str(bin_dir / tool))
    env = dict(os.environ, PATH=str(bin_dir))
    result = run_playbook("lab_up.yml", env=env, lab_name="blbad", lab_network="198.19.11.0/24", lab_hosts=1)
    assert result.returncode != 0
    assert "systemd-nspawn is not installed (fix: apt-get install systemd-container)" in result.stdout, \
        result.stdout[-3000:]
    assert leftovers("blbad", {}) == []


def test_every_host_boots_systemd_with_sshd_and_python(lab):
    inventory = load_inventory(LAB)
    hosts = inventory["lab"]["hosts"]
    assert sorted(hosts) == ["%s-1" % LAB, "%s-2" % LAB]
    for name, host_vars in hosts.items():
        result = ssh(host_vars, "hostname; cat /proc/1/comm; systemctl is-system-running; "
                                "/usr/bin/python3 -c 'import sys; print(sys.version_info[0])'")
        assert result.returncode in (0, 1), result.stderr  # is-system-running exits 1 when degraded
        hostname, pid1, state, python = result.stdout.split()
        assert (hostname, pid1, python) == (name, "systemd", "3")
        assert state in ("running", "degraded")


def test_inventory_works_as_is_with_ansible_playbook(lab, tmp_path):
    playbook = tmp_path / "probe.yml"
    playbook.write_text("- hosts: lab\n  gather_facts: false\n  tasks:\n"
                        "    - ansible.builtin.command: cat /etc/hostname\n      register: probe\n"
                        "      changed_when: false\n"
                        "    - ansible.builtin.assert:\n        that: probe.stdout == inventory_hostname\n")
    inventory = os.path.join(state_dir(LAB), "inventory.yml")
    result = subprocess.run([ansible_bin("ansible-playbook"), "-i", inventory, str(playbook)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    for index in (1, 2):
        assert re.search(r"%s-%d\s*:\s*ok=2\s+changed=0\s+unreachable=0\s+failed=0" % (LAB, index), result.stdout)
    group_vars = load_inventory(LAB)["lab"]["vars"]
    assert group_vars["lab_bridge_address"] == BRIDGE_ADDRESS
    assert group_vars["lab_dns_name"] == "%s.%s" % (LAB, DOMAIN)
    assert group_vars["ansible_pipelining"] is True  # the playbook above ran with it


def test_dns_answers_inside_hosts_and_with_a_short_ttl(lab):
    hosts = load_inventory(LAB)["lab"]["hosts"]
    first = hosts["%s-1" % LAB]
    second = ssh(first, "getent ahostsv4 %s-2.%s" % (LAB, DOMAIN))
    assert second.returncode == 0, second.stderr
    assert {line.split()[0] for line in second.stdout.splitlines()} == {"198.19.8.12"}
    everyone = ssh(first, "getent ahostsv4 %s.%s" % (LAB, DOMAIN))
    assert {line.split()[0] for line in everyone.stdout.splitlines()} == {"198.19.8.11", "198.19.8.12"}
    short = ssh(first, "getent ahostsv4 %s-2" % LAB)  # the search domain
    assert {line.split()[0] for line in short.stdout.splitlines()} == {"198.19.8.12"}
    answers = dns_query(BRIDGE_ADDRESS, "%s.%s" % (LAB, DOMAIN))
    assert sorted(a for a, _ttl in answers) == ["198.19.8.11", "198.19.8.12"]
    assert all(ttl <= 1 for _a, ttl in answers)


def test_hosts_reach_each_other_but_have_no_route_out(lab):
    first = load_inventory(LAB)["lab"]["hosts"]["%s-1" % LAB]
    ping = ssh(first, "ping -c 1 -W 2 198.19.8.12 && ping -c 1 -W 2 %s" % BRIDGE_ADDRESS)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # Asks the routing table only; nothing is sent.
    route = ssh(first, "ip route get 192.0.2.1")
    assert route.returncode != 0 and "unreachable" in route.stderr.lower()


def test_a_host_can_cut_itself_off_with_nft(lab):
    first = load_inventory(LAB)["lab"]["hosts"]["%s-1" % LAB]
    cut = ssh(first, "nft add table inet partition && "
                     "nft 'add chain inet partition out { type filter hook output priority 0; }' && "
                     "nft add rule inet partition out ip daddr 198.19.8.12 drop && "
                     "! ping -c 1 -W 1 198.19.8.12; status=$?; nft delete table inet partition; exit $status")
    assert cut.returncode == 0, cut.stdout + cut.stderr
    healed = ssh(first, "ping -c 1 -W 2 198.19.8.12")
    assert healed.returncode == 0, healed.stdout + healed.stderr


def test_rerun_changes_nothing(lab):
    again = run_playbook("lab_up.yml", lab_name=LAB, lab_network=NETWORK, lab_hosts=2)
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap(again.stdout)["changed"] == 0, again.stdout[-5000:]


def test_larger_lab_hosts_adds_a_host_and_keeps_the_others(lab):
    before = recorded_pids(LAB)
    grown = run_playbook("lab_up.yml", lab_name=LAB, lab_network=NETWORK, lab_hosts=3)
    assert grown.returncode == 0, grown.stdout[-5000:]
    assert recap(grown.stdout)["changed"] > 0
    after = recorded_pids(LAB)
    for path, pid in before.items():
        if "/hosts/" in path:
            assert after[path] == pid, "%s was restarted" % path
    hosts = load_inventory(LAB)["lab"]["hosts"]
    assert sorted(hosts) == ["%s-%d" % (LAB, i) for i in (1, 2, 3)]
    third = ssh(hosts["%s-3" % LAB], "systemctl is-system-running")
    assert third.stdout.strip() in ("running", "degraded")
    answers = dns_query(BRIDGE_ADDRESS, "%s.%s" % (LAB, DOMAIN))
    assert sorted(a for a, _ttl in answers) == ["198.19.8.11", "198.19.8.12", "198.19.8.13"]


def test_a_running_lab_is_not_moved_to_another_network(lab):
    moved = run_playbook("lab_up.yml", lab_name=LAB, lab_network="198.19.9.0/24", lab_hosts=3)
    assert moved.returncode != 0
    assert "lab %s already runs on %s, not lab_network=198.19.9.0/24" % (LAB, NETWORK) in moved.stdout, \
        moved.stdout[-3000:]
    assert load_inventory(LAB)["lab"]["vars"]["lab_network"] == NETWORK
    still = ssh(load_inventory(LAB)["lab"]["hosts"]["%s-1" % LAB], "hostname")
    assert still.stdout.strip() == "%s-1" % LAB


def test_smaller_lab_hosts_removes_the_extra_host(lab):
    third = {path: pid for path, pid in recorded_pids(LAB).items() if "/%s-3/" % LAB in path}
    assert third
    shrunk = run_playbook("lab_up.yml", lab_name=LAB, lab_network=NETWORK, lab_hosts=2)
    assert shrunk.returncode == 0, shrunk.stdout[-5000:]
    assert not os.path.exists("/run/netns/%s-3" % LAB) and not os.path.exists("/sys/class/net/%s-3" % LAB)
    assert not any(process_alive(pid, start) for pid, start in third.values())
    assert sorted(load_inventory(LAB)["lab"]["hosts"]) == ["%s-1" % LAB, "%s-2" % LAB]
    answers = dns_query(BRIDGE_ADDRESS, "%s.%s" % (LAB, DOMAIN))
    assert sorted(a for a, _ttl in answers) == ["198.19.8.11", "198.19.8.12"]
    grown = run_playbook("lab_up.yml", lab_name=LAB, lab_network=NETWORK, lab_hosts=3)
    assert grown.returncode == 0, grown.stdout[-5000:]


def test_down_removes_everything_the_lab_made(lab):
    pids = recorded_pids(LAB)
    assert len(pids) == 4  # three hosts and dnsmasq
    assert leftovers(LAB, pids)  # the lab is there before
    down = run_playbook("lab_down.yml", lab_name=LAB)
    assert down.returncode == 0, down.stdout[-3000:]
    assert leftovers(LAB, pids) == []
    assert not os.path.exists(os.path.join(state_dir(LAB), "inventory.yml"))
    again = run_playbook("lab_down.yml", lab_name=LAB)
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0


def test_down_cleans_up_after_an_interrupted_up(tmp_path):
    argv = [ansible_bin("ansible-playbook"), os.path.join(PLAYBOOKS, "lab_up.yml"), "-e", "lab_name=" + INTERRUPTED_LAB,
            "-e", "lab_network=" + INTERRUPTED_NETWORK, "-e", "lab_hosts=2"]
    booting = os.path.join(state_dir(INTERRUPTED_LAB), "hosts", INTERRUPTED_LAB + "-1", "nspawn.json")
    output = tmp_path / "lab_up.log"
    with open(str(output), "w") as log:
        up = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pids = {}
    try:
        deadline = time.time() + 600
        while not os.path.exists(booting) and up.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert up.poll() is None, "lab_up ended before a host booted:\n" + output.read_text()[-3000:]
        # Kill ansible-playbook and its module while the first host boots.
        os.killpg(up.pid, signal.SIGKILL)
        up.wait()
        pids = recorded_pids(INTERRUPTED_LAB)
        assert pids, "lab_up was not interrupted while booting a host"
        assert leftovers(INTERRUPTED_LAB, pids)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        down = run_playbook("lab_down.yml", lab_name=INTERRUPTED_LAB)
    assert down.returncode == 0, down.stdout[-3000:]
    assert leftovers(INTERRUPTED_LAB, pids) == []
