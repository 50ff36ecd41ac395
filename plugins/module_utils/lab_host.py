# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make and remove the lab's bridge and its VM-like hosts.

A host is an overlay mount on the cached base, a network namespace joined to the bridge by a
veth pair, and a systemd-nspawn process booting systemd inside. Each host directory gets a
`host.json` record BEFORE anything is made, so removal works after a half-finished run too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import socket
import subprocess
import time
import uuid

from ansible_collections.beamops.cluster.plugins.module_utils import lab_process

HOST_RECORD = u"host.json"
PROCESS_RECORD = u"nspawn.json"
# Multicast (libcluster Gossip) needs a route even on a lab without any route out.
MULTICAST_ROUTE = u"224.0.0.0/4"


class LabCommandError(Exception):
    """A command the lab ran failed; the message carries its output."""


def run(argv, check=True, timeout=60):
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          universal_newlines=True, check=False)
    if check and proc.returncode != 0:
        raise LabCommandError(u"%s failed (exit %d): %s" % (u" ".join(argv), proc.returncode,
                                                            (proc.stderr or proc.stdout).strip()))
    return proc


def ip_json(argv):
    out = run([u"ip", u"-j"] + argv).stdout.strip()
    return json.loads(out) if out else []


def link_exists(name):
    return os.path.exists(u"/sys/class/net/%s" % name)


def netns_exists(name):
    return os.path.exists(u"/run/netns/%s" % name)


def _has_address(addr_json, address_cidr):
    address, prefix = address_cidr.split(u"/")
    for interface in addr_json:
        for info in interface.get(u"addr_info", []):
            if info.get(u"local") == address and int(info.get(u"prefixlen", -1)) == int(prefix):
                return True
    return False


def _is_up(link_json):
    return bool(link_json) and u"UP" in link_json[0].get(u"flags", [])


def ensure_bridge(name, address_cidr):
    changed = False
    if not link_exists(name):
        run([u"ip", u"link", u"add", u"name", name, u"type", u"bridge"])
        changed = True
    if not _has_address(ip_json([u"addr", u"show", u"dev", name]), address_cidr):
        run([u"ip", u"addr", u"add", address_cidr, u"dev", name])
        changed = True
    if not _is_up(ip_json([u"link", u"show", u"dev", name])):
        run([u"ip", u"link", u"set", name, u"up"])
        changed = True
    return changed


def remove_link(name):
    if not link_exists(name):
        return False
    run([u"ip", u"link", u"del", name])
    return True


def ensure_host_network(netns, link, bridge, address_cidr):
    """Namespace `netns` with eth0 (address_cidr) whose veth peer `link` is on `bridge`."""
    changed = False
    if not netns_exists(netns):
        run([u"ip", u"netns", u"add", netns])
        changed = True
    inside = [u"ip", u"-n", netns]
    if not link_exists(link):
        run([u"ip", u"link", u"add", link, u"type", u"veth", u"peer", u"name", u"eth0", u"netns", netns])
        changed = True
    host_side = ip_json([u"link", u"show", u"dev", link])
    if host_side[0].get(u"master") != bridge:
        run([u"ip", u"link", u"set", link, u"master", bridge])
        changed = True
    if not _is_up(host_side):
        run([u"ip", u"link", u"set", link, u"up"])
        changed = True
    for dev in (u"lo", u"eth0"):
        if not _is_up(ip_json([u"-n", netns, u"link", u"show", u"dev", dev])):
            run(inside + [u"link", u"set", dev, u"up"])
            changed = True
    if not _has_address(ip_json([u"-n", netns, u"addr", u"show", u"dev", u"eth0"]), address_cidr):
        run(inside + [u"addr", u"add", address_cidr, u"dev", u"eth0"])
        changed = True
    routes = ip_json([u"-n", netns, u"route", u"show", MULTICAST_ROUTE])
    if not routes:
        run(inside + [u"route", u"add", MULTICAST_ROUTE, u"dev", u"eth0"])
        changed = True
    return changed


def remove_netns(name):
    if not netns_exists(name):
        return False
    run([u"ip", u"netns", u"del", name])
    return True


def _unescape_mount(path):
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    for code, char in ((u"\\040", u" "), (u"\\011", u"\t"), (u"\\012", u"\n"), (u"\\134", u"\\")):
        path = path.replace(code, char)
    return path


def mount_points():
    with open(u"/proc/self/mountinfo") as mountinfo:
        return [_unescape_mount(line.split()[4]) for line in mountinfo if line.strip()]


def is_mounted(path):
    return os.path.realpath(path) in mount_points()


def ensure_overlay(lower, host_dir):
    merged = os.path.join(host_dir, u"merged")
    if is_mounted(merged):
        return False
    for sub in (u"upper", u"work", u"merged"):
        path = os.path.join(host_dir, sub)
        if not os.path.isdir(path):
            os.makedirs(path, 0o755)
    upper, work = os.path.join(host_dir, u"upper"), os.path.join(host_dir, u"work")
    options = u"lowerdir=%s,upperdir=%s,workdir=%s" % (lower, upper, work)
    run([u"mount", u"-t", u"overlay", u"overlay", u"-o", options, merged])
    return True


def write_files(root, files):
    """Write files ({path, content, mode}) into the host's root; return True if any changed.

    Missing parent directories are made private (0700): the base already has the public ones.
    """
    changed = False
    for spec in files:
        target = os.path.join(root, spec[u"path"].lstrip(u"/"))
        mode = int(spec.get(u"mode") or u"0644", 8)
        data = spec[u"content"].encode(u"utf-8")
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o700)
        try:
            with open(target, u"rb") as handle:
                same = handle.read() == data
        except (IOError, OSError):
            same = False
        if not same:
            tmp = target + u".beamops-tmp"
            with open(tmp, u"wb") as handle:
                handle.write(data)
            os.chmod(tmp, mode)
            os.rename(tmp, target)
            changed = True
        elif os.stat(target).st_mode & 0o7777 != mode:
            os.chmod(target, mode)
            changed = True
    return changed


def ensure_host_key(root):
    """Give the host its own ed25519 SSH host key (the base has none)."""
    key = os.path.join(root, u"etc", u"ssh", u"ssh_host_ed25519_key")
    if os.path.exists(key):
        return False
    run([u"ssh-keygen", u"-q", u"-t", u"ed25519", u"-N", u"", u"-C", u"", u"-f", key])
    return True


def remove_mounts_under(path):
    """Unmount everything mounted at or below path (deepest first); return True if any."""
    root = os.path.realpath(path)
    found = [m for m in mount_points() if m == root or m.startswith(root + u"/")]
    for mount_point in sorted(set(found), key=len, reverse=True):
        run([u"umount", mount_point])
    return bool(found)


def nspawn_argv(name, merged, netns):
    return [
        u"systemd-nspawn", u"--quiet", u"--boot",
        u"--directory=%s" % merged,
        u"--machine=%s" % name,
        # The base has an empty /etc/machine-id; a stable per-host UUID gives each host its own.
        u"--uuid=%s" % uuid.uuid5(uuid.NAMESPACE_DNS, u"%s.%s" % (name, merged)),
        # The machine running the lab has no systemd as PID 1 and no system D-Bus.
        u"--register=no", u"--keep-unit",
        u"--network-namespace-path=/run/netns/%s" % netns,
        # Like a VM's root, a host may change its own namespace's network (nft rules for partitions);
        # nspawn does not grant this with a namespace path. It reaches nothing outside the namespace.
        u"--capability=CAP_NET_ADMIN",
        # resolv.conf, hostname and timezone come from the host's overlay, not from this machine.
        u"--resolv-conf=off", u"--timezone=off", u"--link-journal=no",
        u"--console=read-only",
    ]


def leader_pid(nspawn_pid):
    """PID (on this machine) of the container's PID 1: the nspawn child in another PID namespace."""
    own = os.readlink(u"/proc/%d/ns/pid" % nspawn_pid)
    try:
        with open(u"/proc/%d/task/%d/children" % (nspawn_pid, nspawn_pid)) as children:
            pids = [int(p) for p in children.read().split()]
    except (IOError, OSError):
        return None
    for pid in pids:
        try:
            if os.readlink(u"/proc/%d/ns/pid" % pid) != own:
                return pid
        except OSError:
            continue
    return None


def _port_open(address, port):
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except (socket.error, socket.timeout):
        return False


def wait_booted(record, address, timeout):
    """Wait until sshd answers and systemd finished booting; return systemd's state."""
    deadline = time.time() + timeout
    while True:
        if not lab_process.is_alive(record):
            raise LabCommandError(u"systemd-nspawn exited during boot; see %s" % record[u"log"])
        leader = leader_pid(int(record[u"pid"]))
        if leader and _port_open(address, 22):
            break
        if time.time() >= deadline:
            raise LabCommandError(u"host at %s did not answer on port 22 within %ss; see %s"
                                  % (address, timeout, record[u"log"]))
        time.sleep(0.2)
    remaining = max(1, int(deadline - time.time()))
    try:
        proc = run([u"nsenter", u"--target", u"%d" % leader, u"--all", u"systemctl", u"is-system-running", u"--wait"],
                   check=False, timeout=remaining)
    except subprocess.TimeoutExpired:
        raise LabCommandError(u"systemd at %s did not finish booting within %ss; see %s"
                              % (address, timeout, record[u"log"]))
    state = proc.stdout.strip()
    if state not in (u"running", u"degraded"):
        raise LabCommandError(u"systemd at %s reports %r after boot; see %s" % (address, state, record[u"log"]))
    return state


def host_record(host_dir):
    return lab_process.read_record(os.path.join(host_dir, HOST_RECORD))


def ensure_host(name, host_dir, base, netns, link, bridge, address_cidr, boot_timeout, files=()):
    """Make the host (idempotently), write its own files and boot it. Returns a result dict with `changed`."""
    if not os.path.isdir(host_dir):
        os.makedirs(host_dir, 0o755)
    record = {u"name": name, u"netns": netns, u"link": link, u"bridge": bridge,
              u"address": address_cidr, u"base": base}
    # Write-ahead: removal reads this even if the steps below fail half way.
    if host_record(host_dir) != record:
        lab_process.write_record(os.path.join(host_dir, HOST_RECORD), record)
    changed = ensure_overlay(base, host_dir)
    merged = os.path.join(host_dir, u"merged")
    # Written through the mounted overlay, so they land in the host's own upper layer.
    changed = write_files(merged, files) or changed
    changed = ensure_host_key(merged) or changed
    changed = ensure_host_network(netns, link, bridge, address_cidr) or changed
    argv = nspawn_argv(name, merged, netns)
    started, process = lab_process.ensure_running(argv, os.path.join(host_dir, PROCESS_RECORD),
                                                  os.path.join(host_dir, u"console.log"))
    address = address_cidr.split(u"/")[0]
    state = wait_booted(process, address, boot_timeout)
    return {u"changed": changed or started, u"pid": process[u"pid"], u"system_state": state,
            u"address": address, u"name": name}


def remove_host(host_dir, stop_timeout=30):
    """Remove whatever the host record says was made: process, mounts, link, namespace, files."""
    if not os.path.isdir(host_dir):
        return False
    record = host_record(host_dir) or {}
    changed = lab_process.stop(os.path.join(host_dir, PROCESS_RECORD), stop_timeout)
    changed = remove_mounts_under(host_dir) or changed
    if record.get(u"link"):
        changed = remove_link(record[u"link"]) or changed
    if record.get(u"netns"):
        changed = remove_netns(record[u"netns"]) or changed
    shutil.rmtree(host_dir)
    return True
