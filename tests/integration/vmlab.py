"""The VM lab the deploy, partition and comparison tests share: 4 systemd-nspawn hosts (lab itdeploy on
198.18.7.0/24); the first 3 run meshprobe (deployed once per test session by the `vm_lab` fixture in conftest.py),
the 4th stays fresh (check mode on a host that never had a deploy, scale-out).

Helpers: `playbook` runs a collection playbook by FQCN against the lab, `ssh` runs a command on a host,
`service_state` reads the node's unit and release, `recap` parses the PLAY RECAP.
"""
import os
import re
import subprocess
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB = "itdeploy"
NETWORK = "198.18.7.0/24"
CONTROLLER = "198.18.7.1"
STATE = "/var/lib/beamops/lab/%s" % LAB
INVENTORY = "%s/inventory.yml" % STATE
ALL_HOSTS = ["%s-%d" % (LAB, i) for i in (1, 2, 3, 4)]
HOSTS = ALL_HOSTS[:3]
SPARE = ALL_HOSTS[3]
ADDRESSES = dict(("%s-%d" % (LAB, i), "198.18.7.%d" % (10 + i)) for i in (1, 2, 3, 4))
NODES = ["meshprobe@%s" % ADDRESSES[h] for h in HOSTS]
COOKIE = "itdeploy-cookie-7f3a"
MEMBERS = ":".join(HOSTS)
BUILDS = os.path.join(REPO, "build", "testapps")


def playbook(name, *extra, check=True, extra_args=()):
    """Run a collection playbook by FQCN against the lab; the CompletedProcess gets .out (stdout + stderr)."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", INVENTORY, "beamops.cluster." + name]
    cmd += list(extra_args)
    for item in extra:
        cmd += ["-e", item]
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_PIPELINING="true")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200, check=False)
    proc.out = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, proc.out[-6000:]
    return proc


def base_vars(version="0.1.0", app="meshprobe"):
    """Extra vars of a meshprobe deploy to the 3 members (the cookie in a vars file, never on the command line)."""
    return ["@" + vars_file({"release_name": app, "release_cookie": COOKIE}), "release_target=" + MEMBERS,
            "release_mesh_timeout=60", "release_net_ticktime=10", "release_src=%s/%s-%s.tar.gz" % (BUILDS, app, version)]


def vars_file(variables, name="vars"):
    """A root-only YAML file of extra vars in the lab's state folder; its path."""
    path = os.path.join(STATE, "test-%s-%d.yml" % (name, abs(hash(repr(sorted(variables.items()))))))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(variables, handle)
    return path


def ssh(host, command, check=True, timeout=60):
    key = "%s/ssh/id_ed25519" % STATE
    proc = subprocess.run(
        ["ssh", "-i", key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
         "-o", "BatchMode=yes", "root@" + ADDRESSES[host], command],
        capture_output=True, text=True, timeout=timeout, check=check)
    return proc.stdout.strip()


def service_state(host, app="meshprobe"):
    out = ssh(host, "systemctl show -p MainPID -p NRestarts -p ActiveState %s; readlink /opt/%s/current || true" % (app, app))
    lines = out.splitlines()
    state = dict(line.split("=", 1) for line in lines if "=" in line)
    state["current"] = os.path.basename(lines[-1]) if lines and "=" not in lines[-1] else ""
    return state


def recap(out):
    """{host: {ok, changed, failed, ...}} from the PLAY RECAP."""
    counts = {}
    for host, fields in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", out[out.rindex("PLAY RECAP"):], re.M):
        counts[host] = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", fields))
    return counts


def file_states(host, paths):
    """{path: "owner:group mode sha256"} of files on a host ("missing" for absent ones)."""
    script = "; ".join("if [ -e '{0}' ]; then echo \"{0} $(stat -c '%U:%G %a' '{0}') $(sha256sum < '{0}' | cut -c1-16)\"; "
                       "else echo '{0} missing'; fi".format(p) for p in paths)
    return dict(line.split(" ", 1) for line in ssh(host, script).splitlines())
