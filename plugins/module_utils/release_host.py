# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a VM runs now, read in one pass on the host (the preflight's one round trip per host).

``read(name, base_dir, config_dir, release_dir=None, checksum=None, units=(), paths=(), account=None, environ=None,
run=None) -> dict``::

    running, enabled      the <name>.service unit is active / enabled
    main_pid              its main PID (0 when it does not run)
    current, previous     where the ``current`` / ``previous`` links point (absolute paths, "" when missing)
    current_version       the basename of ``current`` ("" when missing)
    tls                   the TLS distribution options file is there (the node runs TLS distribution)
    topology              the header of the topology config it runs: {"strategy": S or None, "redials": bool}
    unpacked              ``release_dir`` holds a complete unpack of the tarball with ``checksum``
    erts_version          the ERTS version in ``release_dir``'s releases/start_erl.data ("" when not unpacked)
    controller_address    the address the controller's SSH session comes from ("" when unknown)
    proc_options          the mount options of /proc (a list)
    nft                   "" when nft can be used here, else why not
    units                 {unit: {"active": bool, "enabled": bool}} for each of ``units`` (helper units: EPMD, firewall)
    exists                {path: bool} for each of ``paths``
    links                 {path: where it points, "" when it is not a link} for each of ``paths``
    account               with ``account`` ({"user", "group", "home", "shell"}): {"group": the group exists,
                          "user": the user exists with that primary group, home and shell}
    fstab_proc            the /proc line of /etc/fstab ("" when there is none)

``run`` runs an argv and returns (rc, stdout, stderr); the module passes its ``run_command``.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import os
import pwd
import re
import subprocess

from ansible_collections.beamops.cluster.plugins.module_utils.topology import running_topology


def _run(argv):
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        return 127, "", str(exc)
    out, err = proc.communicate()
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def _link(path):
    try:
        target = os.readlink(path)
    except OSError:
        return ""
    return os.path.normpath(os.path.join(os.path.dirname(path), target))


def _first_line(path, limit=4096):
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except (IOError, OSError):
        return ""


def proc_mount_options(mountinfo="/proc/self/mountinfo"):
    """Mount options of /proc: per-mount (field 6) plus the superblock options after ' - ' (where hidepid is)."""
    for line in _first_line(mountinfo, 1 << 20).splitlines():
        fields = line.split(" - ", 1)
        head = fields[0].split()
        if len(head) >= 6 and head[4] == "/proc":
            options = head[5].split(",")
            if len(fields) > 1 and len(fields[1].split()) >= 3:
                options += [o for o in fields[1].split()[2].split(",") if o not in options]
            return options
    return []


def _unit_states(run, units):
    """``systemctl show`` of several units in one call: {unit: {property: value}} (blocks are separated by blank lines)."""
    rc, out, _err = run(["systemctl", "show", "--property=Id,ActiveState,UnitFileState,MainPID"] + list(units))
    states = {}
    if rc != 0:
        return states
    for unit, block in zip(units, out.strip().split("\n\n")):
        states[unit] = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
    return states


def _account(wanted):
    try:
        gid = grp.getgrnam(wanted["group"]).gr_gid
    except KeyError:
        return {"group": False, "user": False}
    try:
        entry = pwd.getpwnam(wanted["user"])
    except KeyError:
        return {"group": True, "user": False}
    return {"group": True, "user": (entry.pw_gid, entry.pw_dir, entry.pw_shell) == (gid, wanted["home"], wanted["shell"])}


def _fstab_proc(path="/etc/fstab"):
    for line in _first_line(path, 1 << 16).splitlines():
        if re.match(r"^\S+\s+/proc\s+proc\s", line):
            return line
    return ""


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return ""


def read(name, base_dir, config_dir, release_dir=None, checksum=None, units=(), paths=(), account=None, environ=None,
         run=None):
    run = run or _run
    environ = os.environ if environ is None else environ
    service = "%s.service" % name
    states = _unit_states(run, [service] + [u if "." in u else u + ".service" for u in units])
    unit = states.get(service, {})
    current = _link(os.path.join(base_dir, "current"))
    info = {
        "running": unit.get("ActiveState") in ("active", "activating", "reloading"),
        "enabled": unit.get("UnitFileState") == "enabled",
        "main_pid": int(unit.get("MainPID") or 0),
        "current": current,
        "current_version": os.path.basename(current) if current else "",
        "previous": _link(os.path.join(base_dir, "previous")),
        "tls": os.path.exists(os.path.join(config_dir, "ssl_dist.conf")),
        "topology": running_topology(_first_line(os.path.join(config_dir, "topology.config"))),
        "unpacked": False,
        "erts_version": "",
        "controller_address": (environ.get("SSH_CLIENT") or environ.get("SSH_CONNECTION") or "").split(" ")[0],
        "proc_options": proc_mount_options(),
        "units": {},
        "exists": dict((path, os.path.exists(path)) for path in paths),
        "links": dict((path, _readlink(path)) for path in paths),
        "account": _account(account) if account else {},
        "fstab_proc": _fstab_proc(),
    }
    for helper in units:
        state = states.get(helper if "." in helper else helper + ".service", {})
        info["units"][helper] = {"active": state.get("ActiveState") == "active", "enabled": state.get("UnitFileState") == "enabled"}
    if release_dir:
        info["unpacked"] = bool(checksum) and os.path.exists(os.path.join(release_dir, ".beamops-sha256-%s" % checksum))
        start_erl = _first_line(os.path.join(release_dir, "releases", "start_erl.data")).split()
        info["erts_version"] = start_erl[0] if len(start_erl) == 2 else ""
    rc, _out, err = run(["nft", "list", "tables"])
    info["nft"] = "" if rc == 0 else (err.strip() or "nft exited with %d" % rc)
    return info
