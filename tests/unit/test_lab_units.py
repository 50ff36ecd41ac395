"""The lab's logic without root: input validation and the plan, PID records, file writing."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.beamops.cluster.plugins.module_utils import lab_host, lab_plan, lab_process


def test_plan_names_and_addresses():
    plan = lab_plan.build_plan("beamlab", 3, "198.18.0.0/24", "lab.test")
    assert plan["bridge"] == "beamlab0"
    assert plan["bridge_address"] == "198.18.0.1"
    assert plan["dns_name"] == "beamlab.lab.test"
    assert plan["state_dir"] == "/var/lib/beamops/lab/beamlab"
    assert [(h["name"], h["address"], h["fqdn"]) for h in plan["hosts"]] == [
        ("beamlab-1", "198.18.0.11", "beamlab-1.lab.test"),
        ("beamlab-2", "198.18.0.12", "beamlab-2.lab.test"),
        ("beamlab-3", "198.18.0.13", "beamlab-3.lab.test"),
    ]


def test_largest_lab_fits_interface_names_and_the_network():
    plan = lab_plan.build_plan("abcdefghij", 244, "198.19.255.0/24", "lab.test")
    assert plan["hosts"][-1]["address"] == "198.19.255.254"
    assert max(len(h["link"]) for h in plan["hosts"]) <= 15
    with pytest.raises(lab_plan.LabInputError, match=r"lab_hosts=245 does not fit .* at most 244 fit"):
        lab_plan.build_plan("abcdefghij", 245, "198.19.255.0/24", "lab.test")


@pytest.mark.parametrize("kwargs, message", [
    ({"network": "192.168.1.0/24"}, "lab_network=192.168.1.0/24 lies outside 198.18.0.0/15"),
    ({"network": "198.20.0.0/24"}, "lies outside 198.18.0.0/15"),
    ({"network": "198.16.0.0/14"}, "lies outside 198.18.0.0/15"),
    ({"network": "198.18.0.5/24"}, "is not a network in CIDR form"),
    ({"network": "banana"}, "is not a network in CIDR form"),
    ({"hosts": 0}, "lab_hosts=0 must be a whole number of at least 1"),
    ({"hosts": 5, "network": "198.18.0.0/28"}, "lab_hosts=5 does not fit in lab_network=198.18.0.0/28"),
    ({"name": "averylongname"}, "lab_name='averylongname' is not usable"),
    ({"name": "Lab"}, "lab_name='Lab' is not usable"),
    ({"name": "lab-"}, "lab_name='lab-' is not usable"),
    ({"name": "../etc"}, "is not usable"),
    ({"domain": "Bad_Domain"}, "lab_domain='Bad_Domain' is not a DNS domain"),
])
def test_bad_input_names_the_variable_and_the_fix(kwargs, message):
    args = {"name": "beamlab", "hosts": 3, "network": "198.18.0.0/24", "domain": "lab.test"}
    args.update(kwargs)
    with pytest.raises(lab_plan.LabInputError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        lab_plan.build_plan(**args)


def test_preflight_lists_every_problem():
    missing = lab_plan.missing_tools(lambda tool: None if tool in ("systemd-nspawn", "debootstrap") else "/usr/bin/x")
    assert missing == ["systemd-nspawn is not installed (fix: apt-get install systemd-container)",
                       "debootstrap is not installed (fix: apt-get install debootstrap)"]
    interfaces = [
        {"ifname": "beamlab0", "addr_info": [{"family": "inet", "local": "198.18.0.1", "prefixlen": 24}]},
        {"ifname": "eth9", "addr_info": [{"family": "inet", "local": "198.18.0.7", "prefixlen": 24},
                                         {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]},
        {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "10.0.0.2", "prefixlen": 8}]},
    ]
    conflicts = lab_plan.conflicting_addresses("198.18.0.0/24", interfaces, "beamlab0")
    assert conflicts == ["eth9 has 198.18.0.7/24"]
    errors = lab_plan.preflight_errors(1000, missing, conflicts, "198.18.0.0/24", "beamlab")
    assert len(errors) == 4
    assert errors[0].startswith("the lab must run as root")
    assert "pick another lab_network" in errors[3]
    assert lab_plan.preflight_errors(0, [], [], "198.18.0.0/24", "beamlab") == []


def test_removal_plan_only_validates_the_name():
    assert lab_plan.removal_plan("bl") == {"name": "bl", "bridge": "bl0", "state_dir": "/var/lib/beamops/lab/bl"}
    with pytest.raises(lab_plan.LabInputError):
        lab_plan.removal_plan("../../etc")


def test_process_record_start_stop(tmp_path):
    record = str(tmp_path / "sleep.json")
    log = str(tmp_path / "sleep.log")
    argv = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(300)"]
    changed, first = lab_process.ensure_running(argv, record, log)
    try:
        assert changed and lab_process.is_alive(first)
        assert json.load(open(record))["pid"] == first["pid"]
        changed, again = lab_process.ensure_running(argv, record, log)
        assert not changed and again["pid"] == first["pid"]
        deadline = time.time() + 10
        while "up" not in open(log).read() and time.time() < deadline:
            time.sleep(0.05)
        assert "up" in open(log).read()
    finally:
        assert lab_process.stop(record, timeout=5)
    assert not lab_process.is_alive(first) and not os.path.exists(record)
    assert not lab_process.stop(record)  # nothing left to stop


def test_a_recycled_pid_is_not_ours(tmp_path):
    # A record naming a live process with another start time (PID reuse) must not be signalled.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        record = str(tmp_path / "stale.json")
        lab_process.write_record(record, {"pid": other.pid, "start_time": "1", "argv": ["x"], "log": "/dev/null"})
        assert not lab_process.is_alive(lab_process.read_record(record))
        assert not lab_process.stop(record)
        assert other.poll() is None
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()


def test_stop_escalates_to_sigkill(tmp_path):
    record = str(tmp_path / "stubborn.json")
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(300)"
    log = str(tmp_path / "stubborn.log")
    started = lab_process.start([sys.executable, "-c", code], record, log)
    deadline = time.time() + 10
    while "ready" not in open(log).read() and time.time() < deadline:
        time.sleep(0.05)
    assert lab_process.stop(record, timeout=1)
    assert not lab_process.is_alive(started)


def test_write_files_only_when_different(tmp_path):
    root = str(tmp_path)
    files = [{"path": "/root/.ssh/authorized_keys", "content": "ssh-ed25519 AAAA lab\n", "mode": "0600"},
             {"path": "/etc/hostname", "content": "h-1\n", "mode": "0644"}]
    assert lab_host.write_files(root, files)
    assert open(os.path.join(root, "root/.ssh/authorized_keys")).read() == "ssh-ed25519 AAAA lab\n"
    assert os.stat(os.path.join(root, "root/.ssh")).st_mode & 0o777 == 0o700
    assert os.stat(os.path.join(root, "root/.ssh/authorized_keys")).st_mode & 0o777 == 0o600
    assert not lab_host.write_files(root, files)
    os.chmod(os.path.join(root, "etc/hostname"), 0o600)
    assert lab_host.write_files(root, files)
    assert not lab_host.write_files(root, files)


def test_has_address_matches_address_and_prefix():
    addr = [{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "198.18.0.11", "prefixlen": 24}]}]
    assert lab_host._has_address(addr, "198.18.0.11/24")
    assert not lab_host._has_address(addr, "198.18.0.11/25")
    assert not lab_host._has_address(addr, "198.18.0.12/24")
