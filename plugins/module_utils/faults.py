# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fault injection on VM targets, each fault verified to take effect and guaranteed to be undone.

Public API
==========
``VmFaultSession(hosts, journal, app=None, signals=True, sweep=True, connect_timeout=10.0)``
    A context manager (or ``open()`` / ``close()``) holding one persistent SSH session (paramiko) per host for a
    whole run. ``hosts`` is ``{name: {address, port=22, user="root", key_file=None, host_key_checking=True,
    python="python3"}}`` (``read_inventory`` makes it from an Ansible inventory); ``app`` is the release whose
    ``<app>.service`` the process faults act on. Opening it connects to every host, checks that each has
    python3, nft and systemctl (and the app's unit), undoes whatever a run killed before left in the journal
    (``recovered``) and deletes any leftover ``beamops_fault_*`` table on the hosts (``swept``); all of that
    happens before any new fault is applied, and any problem raises ``FaultError`` naming the host.
    Every fault method returns the fault's record (a JSON-ready dict, see below) once the fault is verified:

    ``kill(host, app=None)``           SIGKILL of the BEAM (the MainPID of ``<app>.service``, by PID); systemd
                                       restarts it. Verified: the old PID is gone. Undo: the service is active
                                       again (systemd's own restart is waited for, then it is started).
    ``restart(host, app=None)``        ``systemctl restart``: a graceful stop (init:stop) and start. Verified: a
                                       new MainPID, active.
    ``freeze(host, app=None)``         SIGSTOP of the BEAM. Verified: state ``T`` in /proc/PID/stat. Undo:
                                       SIGCONT, verified: no longer ``T`` (a process that is gone is fine).
    ``partition(group_a, group_b, action="drop", probe_ports=(4369,), probe_timeout=1.5)``
                                       nftables rules in a table of its own (``beamops_fault_<id>``) on every host
                                       of both groups, cutting only the other group's addresses (so SSH and the
                                       observer on the controller are never cut; a partition that would cut the
                                       controller's address is refused). ``action`` ``drop`` (silent) or
                                       ``reject`` (TCP reset / ICMP admin-prohibited). Two single hosts among
                                       more are a partial partition (one link). Verified: before applying, a TCP
                                       connect from each cut host to each peer's ``probe_ports`` must succeed;
                                       after applying it must time out (drop) or be refused (reject); after the
                                       undo it must succeed again.
    ``undo(record)``                   undo one fault and verify the undo; returns the updated record.
    ``undo_all()``                     undo every fault not yet undone, newest first; returns their records.
    ``records``, ``active()``          copies of every record of the run / of those not yet undone.
    ``recovered``, ``swept``           records undone at open (left by a killed run); tables deleted at open.

``read_inventory(path, group=None) -> hosts``
    Host specs from an Ansible-style YAML inventory (``ansible_host``, ``ansible_port``, ``ansible_user``,
    ``ansible_ssh_private_key_file``, ``ansible_python_interpreter``; ``StrictHostKeyChecking=no`` in
    ``ansible_ssh_common_args`` turns host key checking off, as the lab's inventory does).
``validate_hosts(hosts) -> hosts``
    The checked, completed specs; ``ValueError`` naming the field and the fix.
``tick_window(net_ticktime=60, intensity=4) -> (low, high)``
    Seconds within which the tick path detects a silent peer (45-75 s with the defaults).
``stamp() -> {"monotonic", "utc"}``
    The controller's clock pair every record uses (CLOCK_MONOTONIC is shared by all processes of the machine,
    so an observer in another process can line its samples up with these).

The record of a fault
=====================
``id``, ``kind`` (kill, restart, freeze, partition), ``label`` (one line for a report), ``mechanism``,
``detection`` (``connection_closed`` or ``ticks``) and ``detection_text`` (``connection closed: immediate`` or
``ticks: net_ticktime window``), ``target`` (``vm``), ``hosts``, ``params``, ``undo_data`` (what the undo needs),
``state`` (``applying``, ``applied``, ``undoing``, ``undone``, ``failed``), ``times`` (``issued``, ``returned``,
``effective``, ``verified``, ``undo_issued``, ``undo_returned``, ``undo_effective``, ``undo_verified``, each a
``stamp()``; ``effective`` is when the fault was first observed in force, e.g. the start of the probe round that
found every connection cut), ``verification`` and ``undo_verification`` (what was observed), ``error``,
``recovered`` (undone by a later run).

The journal
===========
``journal`` is a path; the file is JSON, rewritten atomically (temporary file, fsync, rename, fsync of the
folder) and mode 0600. A record is written BEFORE its fault is applied and marked ``undone`` after its undo is
verified, so a run killed at any point (even SIGKILL) leaves enough for the next run to undo. A lock file next to
it (flock) keeps two runs off one journal. Every undo is idempotent: deleting a table that is gone, SIGCONT of a
process that is gone and starting a service that runs are all fine. A clean close deletes the journal; a close
that could not undo everything keeps it and raises ``UndoFailed``.

Exit paths: the session undoes everything at a normal end, on an exception, on Ctrl-C (SIGINT) and on SIGTERM
or SIGHUP (it installs handlers while it is open, in the main thread, and restores the previous ones after).
While a fault is being applied or undone those signals are held back and acted on right after, so that no
command is left half-sent; SIGTERM and SIGHUP then raise ``FaultInterrupted`` (``signum`` tells which).

Commands run on the hosts over SSH with a timeout each. None carries a secret: they are nft rules, PIDs and unit
names, and a small Python helper read from standard input (``python3 -``); the hosts need python3, nft and
systemd. No Ansible import: this file is used by the scenario runner, the compare playbook and the tests.
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import copy
import datetime
import errno
import fcntl
import ipaddress
import json
import os
import re
import select
import shlex
import signal
import socket
import threading
import time
import uuid

# Detection paths (comparison.md 1.1): a closed connection is seen at once; a silent peer only through ticks.
DETECT_CLOSED = "connection_closed"
DETECT_TICKS = "ticks"
DETECTION_TEXT = {DETECT_CLOSED: "connection closed: immediate", DETECT_TICKS: "ticks: net_ticktime window"}

# Tables of partition rules are named FAULT_TABLE_PREFIX + the fault id; a leftover one is found by the prefix.
FAULT_TABLE_PREFIX = "beamops_fault_"
# Ahead of conntrack (-200), of the release firewall's chain (-10) and of the filter tables (0), so that no
# accept of established traffic is reached first. (A drop in any base chain is final anyway; the priority also
# keeps the packets out of conntrack.)
FAULT_PRIORITY = -300

ACTIONS = ("drop", "reject")
# What a probe of a cut connection may end as: a DROP is silent (the connect times out); a REJECT answers.
REJECTED_OUTCOMES = ("refused", "reset", "unreachable", "denied")

STATES_DONE = ("undone",)
APP_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}$")
HOST_FIELDS = ("address", "port", "user", "key_file", "host_key_checking", "python")
JOURNAL_FORMAT = "beamops.cluster fault journal"
JOURNAL_VERSION = 1
HANDLED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


class FaultError(Exception):
    """A fault could not be prepared, applied or verified; ``record`` is its record when there is one."""

    def __init__(self, message, record=None):
        super(FaultError, self).__init__(message)
        self.record = record


class FaultNotEffective(FaultError):
    """The fault was applied but the check that it took effect failed (it has been undone)."""


class UndoFailed(FaultError):
    """Undoing one or more faults failed; the journal keeps them for the next run. ``records`` lists them."""

    def __init__(self, message, records=None):
        super(UndoFailed, self).__init__(message)
        self.records = records or []


class FaultInterrupted(BaseException):
    """SIGTERM or SIGHUP arrived while a session was open; everything has been (or is being) undone."""

    def __init__(self, signum):
        super(FaultInterrupted, self).__init__("interrupted by signal %d" % signum)
        self.signum = signum


# ------------------------------------------------------------------------------------------------- clock
def stamp():
    """The controller's clock at this instant: monotonic seconds and UTC wall-clock time (ISO 8601)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return {"monotonic": time.monotonic(), "utc": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


def tick_window(net_ticktime=60, intensity=4):
    """(low, high) seconds in which the tick path declares a silent peer down (kernel_app: net_ticktime)."""
    if net_ticktime <= 0 or intensity < 4:
        raise ValueError("net_ticktime must be > 0 and intensity >= 4")
    interval = float(net_ticktime) / intensity
    return net_ticktime - interval, net_ticktime + interval


def wait_until(predicate, timeout, interval=0.05):
    """Call predicate until it returns something true or timeout passes; returns its last value."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= end:
            return value
        time.sleep(interval)


def new_fault_id():
    return uuid.uuid4().hex[:8]


# --------------------------------------------------------------------------------------------- inventory
def validate_hosts(hosts):
    """Check and complete host specs; raises ValueError naming the field and the fix."""
    if not isinstance(hosts, dict) or not hosts:
        raise ValueError("hosts must be a non-empty dict {name: {address, port, user, key_file}}")
    result = {}
    for name in sorted(hosts):
        spec = hosts[name]
        where = "hosts.%s" % name
        if not isinstance(name, str) or not name:
            raise ValueError("hosts: every host name must be a non-empty string, not %r" % (name,))
        if not isinstance(spec, dict):
            raise ValueError("%s must be a dict with address, port, user and key_file" % where)
        unknown = sorted(set(spec) - set(HOST_FIELDS))
        if unknown:
            raise ValueError("%s has unknown field(s) %s; known: %s" % (where, ", ".join(unknown), ", ".join(HOST_FIELDS)))
        address = spec.get("address", name)
        if not isinstance(address, str) or not address.strip():
            raise ValueError("%s.address must be the host name or address SSH dials" % where)
        port = spec.get("port", 22)
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError("%s.port must be a TCP port (1-65535), not %r" % (where, port))
        user = spec.get("user", "root")
        if not isinstance(user, str) or not user:
            raise ValueError("%s.user must be a user name" % where)
        key_file = spec.get("key_file")
        if key_file is not None:
            if not isinstance(key_file, str) or not os.path.isfile(key_file) or not os.access(key_file, os.R_OK):
                raise ValueError("%s.key_file %r is not a readable file: give the private key SSH uses for this host"
                                 % (where, key_file))
        checking = spec.get("host_key_checking", True)
        if not isinstance(checking, bool):
            raise ValueError("%s.host_key_checking must be true or false" % where)
        python = spec.get("python", "python3")
        if not isinstance(python, str) or not re.match(r"^[A-Za-z0-9_./-]+$", python):
            raise ValueError("%s.python must be the path or name of python3 on the host" % where)
        result[name] = {"address": address.strip(), "port": port, "user": user, "key_file": key_file,
                        "host_key_checking": checking, "python": python}
    return result


def _inventory_hosts(group, name, inherited, found, want, inside):
    """Walk one inventory group: collect {host: vars} of the group (and its children) into found."""
    if group is None:
        group = {}
    if not isinstance(group, dict):
        raise ValueError("inventory group %s must be a mapping with hosts, vars or children" % name)
    group_vars = dict(inherited)
    group_vars.update(group.get("vars") or {})
    inside = inside or want is None or name == want
    for host, host_vars in (group.get("hosts") or {}).items():
        if inside:
            merged = dict(found.get(host, {}))
            merged.update(group_vars)
            merged.update(host_vars or {})
            found[host] = merged
    for child, body in (group.get("children") or {}).items():
        _inventory_hosts(body, child, group_vars, found, want, inside)


def read_inventory(path, group=None):
    """Host specs from an Ansible-style YAML inventory, e.g. the lab's /var/lib/beamops/lab/<lab>/inventory.yml."""
    try:
        import yaml  # PyYAML ships with ansible-core
    except ImportError:
        raise FaultError("reading an inventory needs the Python package PyYAML (pip install pyyaml)")
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except (IOError, OSError) as exc:
        raise ValueError("inventory %s cannot be read: %s" % (path, exc))
    except yaml.YAMLError as exc:
        raise ValueError("inventory %s is not valid YAML: %s" % (path, exc))
    if not isinstance(data, dict):
        raise ValueError("inventory %s must be a YAML mapping of groups" % path)
    found = {}
    for name, body in data.items():
        _inventory_hosts(body, name, {}, found, group, False)
    if not found:
        raise ValueError("inventory %s has no hosts%s" % (path, " in group %s" % group if group else ""))
    hosts = {}
    for name, hostvars in found.items():
        for key, value in hostvars.items():
            if isinstance(value, str) and "{{" in value:
                raise ValueError("inventory %s: %s of %s is templated (%s); give a plain value"
                                 % (path, key, name, value))
        ssh_args = " ".join(str(hostvars.get(k, "")) for k in ("ansible_ssh_common_args", "ansible_ssh_extra_args"))
        checking = not re.search(r"StrictHostKeyChecking=no", ssh_args)
        if hostvars.get("ansible_host_key_checking") is False:
            checking = False
        spec = {"address": str(hostvars.get("ansible_host", name)),
                "port": hostvars.get("ansible_port", hostvars.get("ansible_ssh_port", 22)),
                "user": str(hostvars.get("ansible_user", hostvars.get("ansible_ssh_user", "root"))),
                "key_file": hostvars.get("ansible_ssh_private_key_file", hostvars.get("ansible_private_key_file")),
                "host_key_checking": checking,
                "python": str(hostvars.get("ansible_python_interpreter", "python3"))}
        hosts[name] = spec
    return validate_hosts(hosts)


# --------------------------------------------------------------------------------------------------- SSH
class CommandResult:
    """What a remote command did: exit status, output and how long it took (seconds)."""

    def __init__(self, rc, stdout, stderr, elapsed):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.elapsed = elapsed

    def __repr__(self):
        return "CommandResult(rc=%r, stdout=%r, stderr=%r)" % (self.rc, self.stdout[-200:], self.stderr[-200:])


def _paramiko():
    try:
        import paramiko
    except ImportError:
        raise FaultError("VM faults need the Python package paramiko (pip install paramiko; it is in "
                         "requirements.txt)")
    return paramiko


class SshSession:
    """One persistent SSH connection to a host; ``run`` executes a command on it with a timeout."""

    def __init__(self, name, spec, connect_timeout=10.0):
        self.name = name
        self.spec = spec
        self.client = None
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()

    def connect(self):
        paramiko = _paramiko()

        class AcceptHostKey(paramiko.MissingHostKeyPolicy):
            """host_key_checking false (the lab's hosts are remade often): accept, store nothing."""

            def missing_host_key(self, client, hostname, key):
                return None

        client = paramiko.SSHClient()
        if self.spec["host_key_checking"]:
            client.load_system_host_keys()
            known = os.path.expanduser("~/.ssh/known_hosts")
            if os.path.exists(known):
                client.load_host_keys(known)
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            client.set_missing_host_key_policy(AcceptHostKey())
        key = self.spec.get("key_file")
        try:
            client.connect(self.spec["address"], port=self.spec["port"], username=self.spec["user"],
                           key_filename=key, look_for_keys=key is None, allow_agent=key is None,
                           timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout)
        except Exception as exc:  # paramiko raises many types (SSHException, socket errors, auth errors)
            client.close()
            raise FaultError("cannot open an SSH session to %s (%s@%s port %d): %s: %s"
                             % (self.name, self.spec["user"], self.spec["address"], self.spec["port"],
                                type(exc).__name__, exc))
        client.get_transport().set_keepalive(5)
        self.client = client
        return self

    def alive(self):
        transport = self.client.get_transport() if self.client is not None else None
        return transport is not None and transport.is_active()

    @property
    def local_address(self):
        """The controller's address on this connection, which is what the host sees as the SSH client."""
        return self.client.get_transport().sock.getsockname()[0]

    def run(self, command, timeout=30.0, stdin=None, check=True):
        """Run a shell command; returns a CommandResult, raises FaultError on timeout (or a non-zero exit with
        check)."""
        if not self.alive():
            with self._lock:
                if not self.alive():  # the host went away and came back (or the session timed out): reconnect
                    self.close()
                    self.connect()
        started = time.monotonic()
        deadline = started + timeout
        try:
            chan = self.client.get_transport().open_session(timeout=min(timeout, self.connect_timeout))
        except Exception as exc:  # the transport died under us: say which host
            raise FaultError("%s: cannot open an SSH channel: %s: %s" % (self.name, type(exc).__name__, exc))
        try:
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin.encode("utf-8") if isinstance(stdin, str) else stdin)
            chan.shutdown_write()
            out, err = [], []
            while True:
                while chan.recv_ready():
                    out.append(chan.recv(65536))
                while chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(65536))
                if chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FaultError("%s: command timed out after %.1f s: %s" % (self.name, timeout, _short(command)))
                select.select([chan], [], [], min(remaining, 0.2))
            if not chan.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise FaultError("%s: command timed out after %.1f s: %s" % (self.name, timeout, _short(command)))
            result = CommandResult(chan.recv_exit_status(), b"".join(out).decode("utf-8", "replace"),
                                   b"".join(err).decode("utf-8", "replace"), time.monotonic() - started)
        finally:
            chan.close()
        if check and result.rc != 0:
            output = (result.stderr or result.stdout).strip()[-500:]
            raise FaultError("%s: command failed (exit %d): %s: %s" % (self.name, result.rc, _short(command), output))
        return result

    def close(self):
        if self.client is not None:
            self.client.close()
            self.client = None


def _short(command):
    command = " ".join(command.split())
    return command if len(command) <= 120 else command[:117] + "..."


# The helper each host runs with "python3 - SUBCOMMAND ARGS" (the script comes on standard input): process
# state by PID, signals guarded by the process start time (a recycled PID is never signalled), the unit's
# state, and TCP connect probes. It prints one JSON document.
REMOTE_HELPER = r'''
import errno, json, os, signal, socket, subprocess, sys, threading, time

def stat(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (IOError, OSError, IndexError):
        return None
    return {"state": fields[0], "start_time": fields[19]}

def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None

def service(unit):
    out = subprocess.check_output(["systemctl", "show", "-p", "LoadState", "-p", "ActiveState", "-p", "SubState",
                                   "-p", "MainPID", "-p", "NRestarts", "--", unit]).decode()
    info = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    pid = int(info.get("MainPID") or 0)
    info["MainPID"] = pid
    info["NRestarts"] = int(info.get("NRestarts") or 0)
    info["stat"] = stat(pid) if pid else None
    info["comm"] = comm(pid) if pid else None
    return info

def send(pid, start, name):
    st = stat(pid)
    if st is None or st["start_time"] != start:
        return {"sent": False, "reason": "gone"}
    os.kill(pid, getattr(signal, "SIG" + name))
    return {"sent": True, "state": (stat(pid) or {}).get("state")}

OUTCOMES = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset", errno.EHOSTUNREACH: "unreachable",
            errno.ENETUNREACH: "unreachable", errno.EPERM: "denied", errno.EACCES: "denied"}

def probe_one(address, port, timeout, results, index):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    started = time.monotonic()
    code = None
    try:
        sock.connect((address, port))
        outcome = "connected"
    except socket.timeout:
        outcome = "timeout"
    except OSError as exc:
        code = exc.errno
        outcome = OUTCOMES.get(exc.errno, "error")
    finally:
        sock.close()
    results[index] = {"address": address, "port": port, "outcome": outcome, "errno": code,
                      "ms": int(round((time.monotonic() - started) * 1000))}

def probe(timeout, targets):
    results = [None] * len(targets)
    threads = [threading.Thread(target=probe_one, args=(a, p, timeout, results, i)) for i, (a, p) in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results

def main(argv):
    command = argv[1]
    if command == "check":
        tools = dict((tool, any(os.access(os.path.join(d, tool), os.X_OK) for d in
                                os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").split(":") + ["/usr/sbin", "/sbin"]))
                     for tool in ("nft", "systemctl"))
        return {"tools": tools, "uid": os.getuid(), "units": dict((u, service(u)) for u in argv[2:])}
    if command == "stat":
        return stat(int(argv[2]))
    if command == "signal":
        return send(int(argv[2]), argv[3], argv[4])
    if command == "service":
        return service(argv[2])
    if command == "probe":
        return probe(float(argv[2]), json.loads(argv[3]))
    raise SystemExit("unknown helper command %s" % command)

print(json.dumps(main(sys.argv)))
'''


def helper(session, args, timeout=30.0):
    """Run the remote helper with args (a list of str) on an SshSession; returns its parsed JSON answer."""
    command = "%s -I - %s" % (shlex.quote(session.spec["python"]), " ".join(shlex.quote(str(a)) for a in args))
    result = session.run(command, timeout=timeout, stdin=REMOTE_HELPER)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise FaultError("%s: the helper (%s) answered something that is not JSON: %r %r"
                         % (session.name, args[0], result.stdout[-300:], result.stderr[-300:]))


# ------------------------------------------------------------------------------------------------ nftables
def peer_addresses(addresses):
    """Split IP address strings into (ipv4, ipv6) sorted lists; ValueError for anything that is not an IP."""
    v4, v6 = set(), set()
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise ValueError("%r is not an IP address (partition rules match addresses)" % (text,))
        (v4 if address.version == 4 else v6).add(str(address))
    return sorted(v4, key=ipaddress.ip_address), sorted(v6, key=ipaddress.ip_address)


def partition_ruleset(table, peers, action, priority=FAULT_PRIORITY):
    """The nft script that cuts this host off from ``peers`` (IP addresses), in and out, as DROP or REJECT.

    The script first declares and deletes the table, so loading it again replaces it as a whole. REJECT answers a
    TCP packet with a reset and anything else with ICMP admin-prohibited; the resets and ICMP errors themselves
    must pass (the kernel hands those it makes for a local socket to the input hook), else a REJECT would be
    as silent as a DROP.
    """
    if action not in ACTIONS:
        raise ValueError("action must be one of %s, not %r" % (", ".join(ACTIONS), action))
    if not re.match(r"^[A-Za-z0-9_]+$", table):
        raise ValueError("table name %r must be letters, digits and _" % table)
    v4, v6 = peer_addresses(peers)
    if not v4 and not v6:
        raise ValueError("a partition needs at least one peer address")
    lines = ["table inet %s" % table, "delete table inet %s" % table, "table inet %s {" % table]
    families = []
    if v4:
        lines += ["  set peers_v4 {", "    type ipv4_addr", "    elements = { %s }" % ", ".join(v4), "  }"]
        families.append(("ip", "peers_v4", "icmp"))
    if v6:
        lines += ["  set peers_v6 {", "    type ipv6_addr", "    elements = { %s }" % ", ".join(v6), "  }"]
        families.append(("ip6", "peers_v6", "icmpv6"))
    for hook, field in (("input", "saddr"), ("output", "daddr")):
        lines += ["  chain %s {" % hook, "    type filter hook %s priority %d; policy accept;" % (hook, priority)]
        for family, peer_set, icmp in families:
            match = "%s %s @%s" % (family, field, peer_set)
            if action == "drop":
                lines.append("    %s drop" % match)
            else:
                lines += ["    %s tcp flags & rst == rst accept" % match,
                          "    %s %s type destination-unreachable accept" % (match, icmp),
                          "    %s meta l4proto tcp reject with tcp reset" % match,
                          "    %s reject with icmpx type admin-prohibited" % match]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def delete_table_script(table):
    """The nft script that deletes a table whether or not it exists (declaring it first makes the delete safe)."""
    return "table inet %s\ndelete table inet %s\n" % (table, table)


def _fault_tables(session):
    out = session.run("nft list tables", timeout=15.0).stdout
    return sorted(line.split()[-1] for line in out.splitlines()
                  if line.startswith("table inet ") and line.split()[-1].startswith(FAULT_TABLE_PREFIX))


def _delete_table(session, table):
    session.run("nft -f -", timeout=15.0, stdin=delete_table_script(table))


def probe_ok(outcome, expect):
    if expect == "connected":
        return outcome == "connected"
    if expect == "drop":
        return outcome == "timeout"
    if expect == "reject":
        return outcome in REJECTED_OUTCOMES
    return outcome != "connected"  # "blocked": any failure


PROBE_WORDS = {"connected": "succeed", "drop": "time out", "reject": "get refused", "blocked": "fail"}


def verify_probes(probe_round, record, expect, timeout, prefix, what, interval):
    """Repeat probe_round() -> (ok, {source: [results]}) until ok or timeout. Stamps ``<prefix>effective`` (the
    start of the round that passed) and ``<prefix>verified``; returns what was observed; FaultNotEffective after
    timeout."""
    deadline = time.monotonic() + timeout
    rounds = 0
    while True:
        started = stamp()
        ok, results = probe_round()
        rounds += 1
        if ok:
            record["times"][prefix + "effective"] = started
            mark_time(record, prefix + "verified")
            return {"expected": expect, "rounds": rounds, "probes": results}
        if time.monotonic() >= deadline:
            raise FaultNotEffective("%s: connections did not %s within %.0f s: %s" % (
                what, PROBE_WORDS[expect], timeout, probe_summary(results)), record)
        time.sleep(interval)


# ------------------------------------------------------------------------------------------------ journal
def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The on-disk journal of one run: ``{format, version, run, previous_runs, hosts, faults: [record...]}``."""

    def __init__(self, path):
        if not isinstance(path, str) or not path:
            raise ValueError("journal must be the path of the fault journal file, e.g. /var/lib/beamops/faults/lab.json")
        self.path = os.path.abspath(path)
        self.lock_path = self.path + ".lock"
        self._lock_fd = None
        self.data = None

    def acquire(self):
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            os.makedirs(folder, 0o700)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError) as exc:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise FaultError("fault journal %s is in use by another run (pid %s): wait for it to end or stop it"
                                 % (self.path, holder))
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._lock_fd = fd

    def load(self):
        """The journal a previous run left, or None."""
        try:
            with open(self.path) as handle:
                data = json.load(handle)
        except (IOError, OSError) as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise FaultError("fault journal %s cannot be read: %s" % (self.path, exc))
        except ValueError as exc:
            raise FaultError("fault journal %s is not valid JSON (%s): check the hosts by hand for beamops_fault_* "
                             "tables and stopped processes, then move the file away" % (self.path, exc))
        if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT or not isinstance(data.get("faults"), list):
            raise FaultError("%s is not a beamops.cluster fault journal" % self.path)
        return data

    def save(self):
        tmp = "%s.tmp.%d" % (self.path, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(self.data, indent=1, sort_keys=True).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.path)
        _fsync_dir(os.path.dirname(self.path))

    def release(self, remove):
        if remove and os.path.exists(self.path):
            os.remove(self.path)
            _fsync_dir(os.path.dirname(self.path))
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock; the lock file itself stays (harmless, empty of state)
            self._lock_fd = None


# ---------------------------------------------------------------------------------------------- signals
class _Signals:
    """Process-wide signal state: handlers raise at once, except inside ``hold()``, which delays them."""

    depth = 0
    pending = []

    @classmethod
    def handler(cls, signum, frame):
        if cls.depth:
            cls.pending.append(signum)
            return
        cls.raise_for(signum)

    @staticmethod
    def raise_for(signum):
        if signum == signal.SIGINT:
            raise KeyboardInterrupt()
        raise FaultInterrupted(signum)


class HoldSignals:
    """Hold the handled signals back for a block; act on the first one held right after it."""

    def __enter__(self):
        _Signals.depth += 1
        return self

    def __exit__(self, exc_type, exc, tb):
        _Signals.depth -= 1
        if not _Signals.depth and _Signals.pending and exc_type is None:
            signum = _Signals.pending[0]
            del _Signals.pending[:]
            _Signals.raise_for(signum)
        return False


def run_parallel(func, items):
    """func(item) for every item, in threads (inline for one); returns {item: result}; raises the first error
    after every call has ended (so no command is still running when the caller moves on)."""
    items = list(items)
    results, errors = {}, {}

    def call(item):
        try:
            results[item] = func(item)
        except Exception as exc:  # pylint: disable=broad-except
            errors[item] = exc

    if len(items) == 1:
        call(items[0])
    else:
        threads = [threading.Thread(target=call, args=(item,), daemon=True) for item in items]
        for thread in threads:
            thread.start()
        with HoldSignals():
            for thread in threads:
                thread.join()
    if errors:
        first = sorted(errors, key=str)[0]
        if len(errors) == 1:
            raise errors[first]
        raise FaultError("; ".join("%s" % errors[k] for k in sorted(errors, key=str)))
    return results


# ---------------------------------------------------------------------------------------------- sessions
class FaultSession:
    """What every fault session shares: the journal, the undo on every exit path, recovery of a killed run.

    Subclasses set ``target`` and ``KINDS`` ({kind: handler}); a handler has ``apply(session, record)`` (the
    commands that change something), ``verify(session, record)`` (checks; may be interrupted) and
    ``undo(session, record)`` (idempotent, verifies itself).
    """

    target = None
    KINDS = {}

    def __init__(self, journal, signals=True):
        self.journal = Journal(journal)
        self.signals = signals
        self.recovered = []
        self._records = []
        self._previous_handlers = None
        self._open = False

    # ---- lifecycle
    def __enter__(self):
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(_propagating=exc_type is not None)
        return False

    def open(self):
        """Lock the journal, connect, undo what a killed run left behind; raises before any fault is applied."""
        self.journal.acquire()
        try:
            self._install_signals()
            previous = self.journal.load()
            left = self._leftovers(previous)
            self._connect(previous)
            self._records = left
            self._start_journal(previous)  # still holds what the killed run left, until each is undone
            self._open = True
            self._recover(left)
            self._after_recovery()
        except BaseException:
            self._open = False
            self._disconnect()
            self._restore_signals()
            self.journal.release(remove=False)
            raise

    def close(self, _propagating=False):
        """Undo every fault still in force (verifying each undo), disconnect, drop the journal if all is undone.
        A signal that came while undoing is acted on after (unless an exception is already on its way)."""
        if not self._open:
            return
        failed = []
        _Signals.depth += 1
        try:
            failed = self._undo_pending()
        finally:
            _Signals.depth -= 1
            self._open = False
            self._disconnect()
            clean = not failed and all(r["state"] in STATES_DONE for r in self._records)
            self.journal.release(remove=clean)
            self._restore_signals()
        held = list(_Signals.pending)
        if not _Signals.depth:
            del _Signals.pending[:]
        if failed:
            what = "; ".join("%s: %s" % (r["label"], r.get("error")) for r in failed)
            raise UndoFailed("could not undo %d fault(s); the journal %s keeps them for the next run: %s"
                             % (len(failed), self.journal.path, what), [copy.deepcopy(r) for r in failed])
        if held and not _propagating and not _Signals.depth:
            _Signals.raise_for(held[0])

    def _install_signals(self):
        if not self.signals or threading.current_thread() is not threading.main_thread():
            return
        self._previous_handlers = {}
        for name in HANDLED_SIGNALS:
            number = getattr(signal, name)
            self._previous_handlers[number] = signal.signal(number, _Signals.handler)

    def _restore_signals(self):
        if self._previous_handlers is None:
            return
        for number, previous in self._previous_handlers.items():
            signal.signal(number, previous if previous is not None else signal.SIG_DFL)
        self._previous_handlers = None

    # ---- journal
    def _start_journal(self, previous):
        runs = []
        if previous:
            runs = list(previous.get("previous_runs", [])) + [previous.get("run")]
        self.journal.data = {"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION, "target": self.target,
                             "run": {"pid": os.getpid(), "host": socket.gethostname(), "started": stamp()},
                             "previous_runs": runs[-5:], "hosts": self._journal_hosts(previous),
                             "faults": self._records}
        self.journal.save()

    def _journal_hosts(self, previous):
        return {}

    def _save(self):
        self.journal.data["faults"] = self._records
        self.journal.save()

    # ---- faults
    def _new_record(self, kind, label, mechanism, detection, hosts, params, undo_data):
        return {"id": new_fault_id(), "kind": kind, "target": self.target, "label": label, "mechanism": mechanism,
                "detection": detection, "detection_text": DETECTION_TEXT.get(detection, detection),
                "hosts": list(hosts), "params": params, "undo_data": undo_data, "state": "applying",
                "times": {}, "verification": {}, "undo_verification": {}, "error": None, "recovered": False}

    def inject(self, record):
        """Journal the prepared record, apply its fault, verify it; undo at once if applying or verifying fails."""
        if not self._open:
            raise FaultError("the fault session is not open: use it as a context manager or call open() first")
        handler = self.KINDS[record["kind"]]
        try:
            with HoldSignals():
                self._records.append(record)
                self._save()  # BEFORE the fault: a run killed from here on leaves what the next run needs
                handler.apply(self, record)
            handler.verify(self, record)
            record["state"] = "applied"
            with HoldSignals():
                self._save()
        except BaseException as exc:
            record["error"] = "%s: %s" % (type(exc).__name__, exc)
            with HoldSignals():
                self._undo_one(record)
            if isinstance(exc, FaultError) and exc.record is None:
                exc.record = copy.deepcopy(record)
            raise
        return copy.deepcopy(record)

    def _find(self, record):
        wanted = record["id"] if isinstance(record, dict) else record
        for mine in self._records:
            if mine["id"] == wanted:
                return mine
        raise FaultError("no fault with id %s in this session" % wanted)

    def undo(self, record):
        """Undo one fault (a record or its id) and verify the undo; returns its updated record."""
        mine = self._find(record)
        with HoldSignals():
            if not self._undo_one(mine):
                raise UndoFailed("undo of %s failed: %s" % (mine["label"], mine["error"]), [copy.deepcopy(mine)])
        return copy.deepcopy(mine)

    def undo_all(self):
        """Undo every fault not yet undone, newest first; returns their records. Raises UndoFailed after trying all."""
        with HoldSignals():
            pending = [r for r in reversed(self._records) if r["state"] not in STATES_DONE]
            failed = self._undo_pending()
        if failed:
            raise UndoFailed("could not undo %d fault(s): %s" % (len(failed), "; ".join(
                "%s: %s" % (r["label"], r["error"]) for r in failed)), [copy.deepcopy(r) for r in failed])
        return [copy.deepcopy(r) for r in pending]

    def _undo_pending(self):
        failed = []
        for record in reversed(self._records):
            if record["state"] not in STATES_DONE and not self._undo_one(record):
                failed.append(record)
        return failed

    def _undo_one(self, record):
        """Undo and verify; True when undone (the record says what happened). Never raises for the fault's own
        failure: the error is kept in the record and the journal."""
        if record["state"] in STATES_DONE:
            return True
        handler = self.KINDS.get(record["kind"])
        record["state"] = "undoing"
        self._save()
        try:
            if handler is None:
                raise FaultError("this %s session cannot undo faults of kind %s" % (self.target, record["kind"]))
            handler.undo(self, record)
        except Exception as exc:  # pylint: disable=broad-except
            record["state"] = "failed"
            record["error"] = "undo: %s: %s" % (type(exc).__name__, exc)
            self._save()
            return False
        record["state"] = "undone"
        self._save()
        return True

    def _leftovers(self, previous):
        """The records a previous run did not undo; FaultError when this session cannot undo them."""
        if not previous:
            return []
        left = [r for r in previous["faults"] if r.get("state") not in STATES_DONE]
        unknown = sorted(set(r.get("kind") for r in left) - set(self.KINDS))
        if unknown or (left and previous.get("target") not in (None, self.target)):
            raise FaultError("fault journal %s holds %s faults (%s) that a %s session cannot undo: open it with the "
                             "session of that target" % (self.journal.path, previous.get("target"),
                                                         ", ".join(unknown) or "all", self.target))
        for record in left:
            record["recovered"] = True
        return left

    def _recover(self, left):
        failed = []
        with HoldSignals():
            for record in reversed(left):
                if not self._undo_one(record):
                    failed.append(record)
        self.recovered = [copy.deepcopy(r) for r in left]
        if failed:
            raise UndoFailed("faults left by a previous run could not be undone; nothing new was applied: %s"
                             % "; ".join("%s: %s" % (r["label"], r["error"]) for r in failed),
                             [copy.deepcopy(r) for r in failed])

    def _after_recovery(self):
        """Subclasses: the clean slate after recovery (e.g. leftover tables no journal knows)."""

    def _connect(self, previous):
        raise NotImplementedError

    def _disconnect(self):
        raise NotImplementedError

    @property
    def records(self):
        return [copy.deepcopy(r) for r in self._records]

    def active(self):
        """Records of the faults still in force (not yet undone)."""
        return [copy.deepcopy(r) for r in self._records if r["state"] not in STATES_DONE]


def mark_time(record, name):
    """Stamp ``record['times'][name]`` now; returns the stamp."""
    record["times"][name] = stamp()
    return record["times"][name]


# ------------------------------------------------------------------------------------------- VM faults
class _ProcessFault:
    """Shared by kill, restart and freeze: the unit's state and the BEAM's PID."""

    @staticmethod
    def service(session, host, app):
        return helper(session.ssh(host), ["service", app + ".service"])

    @staticmethod
    def beam_of(session, host, app):
        """The unit's MainPID with its start time, checked to be a running BEAM; FaultError otherwise."""
        info = _ProcessFault.service(session, host, app)
        if info.get("LoadState") != "loaded":
            raise FaultError("%s: %s.service is not installed (LoadState=%s): deploy the release first or give the "
                             "right app" % (host, app, info.get("LoadState")))
        if info.get("ActiveState") != "active" or not info["MainPID"] or not info.get("stat"):
            raise FaultError("%s: %s.service is not running (ActiveState=%s SubState=%s): the baseline needs every "
                             "node up" % (host, app, info.get("ActiveState"), info.get("SubState")))
        if info.get("comm") != "beam.smp":
            raise FaultError("%s: the MainPID %d of %s.service is %r, not the BEAM (beam.smp): a wrapper process "
                             "would turn the fault into something else" % (host, info["MainPID"], app, info.get("comm")))
        return info

    @staticmethod
    def ensure_active(session, record, wait_for_systemd):
        """Undo for kill and restart: the unit active with a running BEAM; give systemd's own restart
        ``wait_for_systemd`` seconds before starting the unit ourselves (a stopped or failed unit is started)."""
        host, app = record["hosts"][0], record["params"]["app"]
        ssh = session.ssh(host)
        mark_time(record, "undo_issued")

        def running():
            info = _ProcessFault.service(session, host, app)
            # beam.smp: the unit's start script has exec'd the emulator, so the next fault can target it.
            ok = info.get("ActiveState") == "active" and info["MainPID"] and info.get("stat") \
                and info["stat"]["state"] != "T" and info.get("comm") == "beam.smp"
            return info if ok else None

        info = wait_until(running, wait_for_systemd, 0.2)
        started_by = "systemd"
        if not info:
            started_by = "undo"
            ssh.run("systemctl reset-failed -- %s.service >/dev/null 2>&1; systemctl start -- %s.service"
                    % (app, app), timeout=120.0)
            info = wait_until(running, 30.0, 0.2)
        mark_time(record, "undo_returned")
        if not info:
            raise FaultError("%s: %s.service is not running after the undo" % (host, app))
        mark_time(record, "undo_effective")
        mark_time(record, "undo_verified")
        record["undo_verification"] = {"active": True, "main_pid": info["MainPID"], "started_by": started_by,
                                       "pid_changed": info["MainPID"] != record["undo_data"].get("pid"),
                                       "n_restarts": info["NRestarts"]}


class _SignalFault(_ProcessFault):
    """A signal to the BEAM by PID (guarded by its start time), verified by the process state it leads to."""

    signal_name = None
    expected = None  # what verify waits for, in words

    @staticmethod
    def reached(st, data):
        raise NotImplementedError

    def apply(self, session, record):
        host, data = record["hosts"][0], record["undo_data"]
        mark_time(record, "issued")
        answer = helper(session.ssh(host), ["signal", data["pid"], data["start_time"], self.signal_name])
        mark_time(record, "returned")
        if not answer.get("sent"):
            raise FaultError("%s: the BEAM (PID %d) was gone before SIG%s" % (host, data["pid"], self.signal_name),
                             record)

    def verify(self, session, record):
        host, data = record["hosts"][0], record["undo_data"]
        if not wait_until(lambda: self.reached(helper(session.ssh(host), ["stat", data["pid"]]), data), 10.0, 0.02):
            raise FaultNotEffective("%s: PID %d is not %s 10 s after SIG%s"
                                    % (host, data["pid"], self.expected, self.signal_name), record)
        mark_time(record, "effective")
        mark_time(record, "verified")
        record["verification"] = {"pid": data["pid"], "observed": self.expected}


class _Kill(_SignalFault):
    signal_name = "KILL"
    expected = "gone"

    @staticmethod
    def reached(st, data):
        return st is None or st["start_time"] != data["start_time"] or st["state"] in ("Z", "X")

    def undo(self, session, record):
        self.ensure_active(session, record, session.restart_wait)


class _Restart(_ProcessFault):
    def apply(self, session, record):
        host, app = record["hosts"][0], record["params"]["app"]
        mark_time(record, "issued")
        session.ssh(host).run("systemctl restart -- %s.service" % app, timeout=180.0)
        mark_time(record, "returned")

    def verify(self, session, record):
        host, app, old = record["hosts"][0], record["params"]["app"], record["undo_data"]["pid"]

        def restarted():
            info = self.service(session, host, app)
            return info if info.get("ActiveState") == "active" and info["MainPID"] not in (0, old) else None

        info = wait_until(restarted, 30.0, 0.1)
        if not info:
            raise FaultNotEffective("%s: %s.service has no new MainPID after systemctl restart" % (host, app), record)
        mark_time(record, "effective")
        mark_time(record, "verified")
        record["verification"] = {"old_pid": old, "new_pid": info["MainPID"]}

    def undo(self, session, record):
        self.ensure_active(session, record, 0.0)


class _Freeze(_SignalFault):
    signal_name = "STOP"
    expected = "stopped (state T)"

    @staticmethod
    def reached(st, data):
        return st is not None and st["start_time"] == data["start_time"] and st["state"] == "T"

    def undo(self, session, record):
        host, data = record["hosts"][0], record["undo_data"]
        ssh = session.ssh(host)
        mark_time(record, "undo_issued")
        answer = helper(ssh, ["signal", data["pid"], data["start_time"], "CONT"])
        mark_time(record, "undo_returned")

        def running():
            st = helper(ssh, ["stat", data["pid"]])
            return "gone" if st is None or st["start_time"] != data["start_time"] else (st["state"] != "T" and st["state"])

        state = wait_until(running, 10.0, 0.02)
        if not state:
            raise FaultError("%s: PID %d is still stopped after SIGCONT" % (host, data["pid"]))
        mark_time(record, "undo_effective")
        mark_time(record, "undo_verified")
        record["undo_verification"] = {"sent": answer.get("sent"), "state": state}


class _Partition:
    """nftables rules on every host of both groups; verified by TCP connects from each cut host."""

    @staticmethod
    def probe_round(session, record, expect):
        """One round of probes from every cut host to every peer port; (all_ok, results by host)."""
        plan = record["undo_data"]["probes"]
        timeout = record["params"]["probe_timeout"]

        def run(host):
            return helper(session.ssh(host), ["probe", timeout, json.dumps(plan[host])], timeout=timeout + 30.0)

        results = run_parallel(run, sorted(plan))
        ok = all(probe_ok(item["outcome"], expect) for host in results for item in results[host])
        return ok, results

    def probe_until(self, session, record, expect, timeout, prefix):
        return verify_probes(lambda: self.probe_round(session, record, expect), record, expect, timeout, prefix,
                             "partition %s" % record["id"], 0.1)

    def apply(self, session, record):
        data = record["undo_data"]
        mark_time(record, "issued")
        run_parallel(lambda host: session.ssh(host).run("nft -f -", timeout=20.0, stdin=data["rulesets"][host]),
                     sorted(data["rulesets"]))
        mark_time(record, "returned")

    def verify(self, session, record):
        record["verification"].update(self.probe_until(session, record, record["params"]["action"],
                                                       session.verify_timeout, ""))

    def undo(self, session, record):
        data = record["undo_data"]
        hosts = sorted(data["rulesets"])
        mark_time(record, "undo_issued")
        run_parallel(lambda host: _delete_table(session.ssh(host), data["table"]), hosts)
        mark_time(record, "undo_returned")
        left = [h for h, tables in run_parallel(lambda host: _fault_tables(session.ssh(host)), hosts).items()
                if data["table"] in tables]
        if left:
            raise FaultError("table %s is still on %s after its delete" % (data["table"], ", ".join(sorted(left))))
        record["undo_verification"] = self.probe_until(session, record, "connected", session.verify_timeout, "undo_")
        record["undo_verification"]["table_gone"] = True


def probe_summary(results):
    """One line of probe results: ``source->address:port outcome, ...``."""
    parts = []
    for host in sorted(results):
        for item in results[host]:
            parts.append("%s->%s:%d %s" % (host, item["address"], item["port"], item["outcome"]))
    return ", ".join(parts)


class VmFaultSession(FaultSession):
    """Faults on VM-like hosts over persistent SSH sessions; see the module docstring."""

    target = "vm"
    KINDS = {"kill": _Kill(), "restart": _Restart(), "freeze": _Freeze(), "partition": _Partition()}

    def __init__(self, hosts, journal, app=None, signals=True, sweep=True, connect_timeout=10.0, restart_wait=20.0,
                 verify_timeout=10.0):
        super(VmFaultSession, self).__init__(journal, signals)
        self.hosts = validate_hosts(hosts)
        if app is not None:
            self._check_app(app)
        self.app = app
        self.sweep = sweep
        self.connect_timeout = connect_timeout
        self.restart_wait = restart_wait
        self.verify_timeout = verify_timeout
        self.swept = []
        self._ssh = {}
        self._specs = dict(self.hosts)

    @staticmethod
    def _check_app(app):
        if not isinstance(app, str) or not APP_PATTERN.match(app):
            raise ValueError("app must be the release name (its unit is <app>.service), not %r" % (app,))
        return app

    # ---- connections
    def ssh(self, host):
        """The SshSession of a host (connecting on first use); hosts of a previous run come from its journal."""
        if host not in self._ssh:
            if host not in self._specs:
                raise FaultError("unknown host %s (hosts: %s)" % (host, ", ".join(sorted(self._specs))))
            self._ssh[host] = SshSession(host, self._specs[host], self.connect_timeout).connect()
        return self._ssh[host]

    def _journal_hosts(self, previous):
        return dict(self._specs)

    def _connect(self, previous):
        if previous and isinstance(previous.get("hosts"), dict):
            for name, spec in previous["hosts"].items():
                self._specs.setdefault(name, spec)
        errors = []

        def check(host):
            units = [self.app + ".service"] if self.app else []
            return helper(self.ssh(host), ["check"] + units)

        try:
            answers = run_parallel(check, sorted(self.hosts))
        except FaultError as exc:
            raise FaultError("not every host can take faults, nothing was applied: %s" % exc)
        for host in sorted(answers):
            answer = answers[host]
            missing = sorted(tool for tool, there in answer["tools"].items() if not there)
            if missing:
                errors.append("%s lacks %s" % (host, ", ".join(missing)))
            if answer["uid"] != 0:
                errors.append("%s: the SSH user is not root (uid %d): nft and signals to the service need root"
                              % (host, answer["uid"]))
            for unit, info in answer["units"].items():
                if info.get("LoadState") != "loaded":
                    errors.append("%s: %s is not installed" % (host, unit))
        if errors:
            raise FaultError("not every host can take faults, nothing was applied: %s" % "; ".join(errors))

    def _disconnect(self):
        for ssh in self._ssh.values():
            ssh.close()
        self._ssh = {}

    def _after_recovery(self):
        if not self.sweep:
            return
        tables = run_parallel(lambda host: _fault_tables(self.ssh(host)), sorted(self.hosts))
        for host in sorted(tables):
            for table in tables[host]:
                with HoldSignals():
                    _delete_table(self.ssh(host), table)
                self.swept.append({"host": host, "table": table})

    def _host(self, host):
        if host not in self.hosts:
            raise ValueError("host %r is not one of this session's hosts (%s)" % (host, ", ".join(sorted(self.hosts))))
        return host

    def _app(self, app):
        app = app or self.app
        if app is None:
            raise ValueError("app: name the release (its unit is <app>.service), here or in VmFaultSession(app=...)")
        return self._check_app(app)

    # ---- process faults
    def _process_record(self, kind, host, app, label, mechanism, detection):
        host, app = self._host(host), self._app(app)
        info = _ProcessFault.beam_of(self, host, app)
        pid = info["MainPID"]
        return self._new_record(kind, label % {"app": app, "host": host, "pid": pid}, mechanism % {"app": app},
                                detection, [host], {"app": app},
                                {"pid": pid, "start_time": info["stat"]["start_time"], "n_restarts": info["NRestarts"]})

    def kill(self, host, app=None):
        """SIGKILL of the BEAM (MainPID of <app>.service) on host; returns the record once the PID is gone."""
        return self.inject(self._process_record(
            "kill", host, app, "kill -9 of %(app)s on %(host)s (PID %(pid)d)",
            "SIGKILL to the BEAM (MainPID of %(app)s.service, by PID); the kernel closes its sockets and systemd "
            "restarts the unit (Restart=on-failure)", DETECT_CLOSED))

    def restart(self, host, app=None):
        """systemctl restart of <app>.service on host (graceful: init:stop); returns the record once restarted."""
        return self.inject(self._process_record(
            "restart", host, app, "graceful restart of %(app)s on %(host)s (was PID %(pid)d)",
            "systemctl restart %(app)s.service: SIGTERM to the BEAM (init:stop closes its connections), then a "
            "fresh start", DETECT_CLOSED))

    def freeze(self, host, app=None):
        """SIGSTOP of the BEAM on host; returns the record once the process is in state T (undo: SIGCONT)."""
        return self.inject(self._process_record(
            "freeze", host, app, "freeze of %(app)s on %(host)s (SIGSTOP of PID %(pid)d)",
            "SIGSTOP to the BEAM (MainPID of %(app)s.service): its sockets stay open but it sends nothing, not even "
            "ticks; SIGCONT resumes it", DETECT_TICKS))

    # ---- partitions
    def _address(self, host):
        address = self.hosts[host]["address"]
        try:
            return str(ipaddress.ip_address(address))
        except ValueError:
            try:
                return socket.getaddrinfo(address, None, 0, socket.SOCK_STREAM)[0][4][0]
            except socket.gaierror as exc:
                raise FaultError("%s: address %s does not resolve: %s" % (host, address, exc))

    def partition(self, group_a, group_b, action="drop", probe_ports=(4369,), probe_timeout=1.5):
        """Cut every host of group_a off from every host of group_b (both ways) with nftables rules on all of
        them; ``action`` drop or reject. Returns the record once a TCP connect across the cut fails as it should."""
        if isinstance(group_a, str):
            group_a = [group_a]
        if isinstance(group_b, str):
            group_b = [group_b]
        group_a = sorted(set(self._host(h) for h in group_a))
        group_b = sorted(set(self._host(h) for h in group_b))
        if not group_a or not group_b:
            raise ValueError("partition: both groups need at least one host")
        if set(group_a) & set(group_b):
            raise ValueError("partition: %s in both groups" % ", ".join(sorted(set(group_a) & set(group_b))))
        if action not in ACTIONS:
            raise ValueError("partition: action must be drop or reject, not %r" % (action,))
        ports = [int(p) for p in probe_ports]
        if not ports or not all(0 < p < 65536 for p in ports):
            raise ValueError("partition: probe_ports must be TCP ports that listen on every host (EPMD 4369, or the "
                             "distribution port)")
        if not 0.2 <= float(probe_timeout) <= 30:
            raise ValueError("partition: probe_timeout must be between 0.2 and 30 s")
        addresses = dict((h, self._address(h)) for h in group_a + group_b)
        controller = set(self.ssh(h).local_address for h in group_a + group_b)
        cut_controller = sorted(controller & set(addresses.values()))
        if cut_controller:
            raise ValueError("partition: %s is the controller's own address; the rules would cut the observer and SSH"
                             % ", ".join(cut_controller))
        peers = dict((h, group_b) for h in group_a)
        peers.update((h, group_a) for h in group_b)
        fault_id = new_fault_id()
        table = FAULT_TABLE_PREFIX + fault_id
        rulesets = dict((h, partition_ruleset(table, [addresses[p] for p in peers[h]], action)) for h in peers)
        probes = dict((h, [[addresses[p], port] for p in peers[h] for port in ports]) for h in peers)
        scope = "full" if set(group_a + group_b) == set(self.hosts) else "partial"
        if scope == "partial" and len(group_a) == len(group_b) == 1:
            what = "partial partition (one link) %s <-> %s" % (group_a[0], group_b[0])
        else:
            what = "%s partition %s | %s" % (scope, ",".join(group_a), ",".join(group_b))
        if action == "drop":
            mechanism = ("nftables DROP of every packet to and from the other side's addresses (table %s, hooks input "
                         "and output, priority %d) on each host of both sides: silent" % (table, FAULT_PRIORITY))
            detection = DETECT_TICKS
        else:
            mechanism = ("nftables REJECT (TCP reset, ICMP admin-prohibited) of every packet to and from the other "
                         "side's addresses (table %s, hooks input and output, priority %d) on each host of both sides: "
                         "the first packet either side sends on a distribution connection (at the latest its next "
                         "tick) resets it" % (table, FAULT_PRIORITY))
            detection = DETECT_CLOSED
        record = self._new_record("partition", "%s, %s" % (what, action.upper()), mechanism, detection,
                                  sorted(peers), {"groups": [group_a, group_b], "action": action, "scope": scope,
                                                  "probe_ports": ports, "probe_timeout": float(probe_timeout),
                                                  "addresses": addresses},
                                  {"table": table, "rulesets": rulesets, "probes": probes})
        record["id"] = fault_id
        # Before anything changes: the connections the check relies on must work now, else it proves nothing.
        handler = self.KINDS["partition"]
        ok, results = handler.probe_round(self, record, "connected")
        if not ok:
            raise FaultError("partition: before the fault, these connections already fail, so the fault could not be "
                             "verified (probe_ports must listen on every host): %s" % probe_summary(results))
        record["verification"]["baseline"] = results
        return self.inject(record)
