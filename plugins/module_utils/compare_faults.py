# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The comparison's VM fault session: ``faults.VmFaultSession`` plus the state changes a scenario makes that are
not faults of the cluster but must be undone just the same (journaled first, undone on every exit path, recovered
by the next run):

``stop(host)``              ``systemctl stop`` of the node (cold start: every node stopped, then started).
                            Verified: the unit is no longer active. Undo: the unit started and running a BEAM.
``start_spare(host)``       ``systemctl start`` of the spare host's node (scale out). Verified: active with a BEAM.
                            Undo: ``systemctl stop``, verified inactive, so no extra node is left.
``prepare_spare(host, install)``
                            ``install()`` (the runner's deploy of the release to the spare host), then the spare's
                            node stopped. The record keeps what the host had before (a snapshot of the paths, units,
                            user, group, ``/proc`` mount options and ``/etc/fstab`` line a deploy touches); the
                            undo stops the node and, on a host that had no such release before, removes what the
                            deploy made, so the host is left as it was found.

Hosts given as ``extra_hosts`` (the spare) are reachable over SSH but not checked for the release's unit when the
session opens (a fresh spare has none yet). A journal holding these kinds can only be recovered by this session
class (``faults.VmFaultSession`` refuses it with a message that says so).
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import shlex

from ansible_collections.beamops.cluster.plugins.module_utils import faults
from ansible_collections.beamops.cluster.plugins.module_utils.faults import (
    DETECT_CLOSED, FaultError, FaultNotEffective, mark_time, wait_until)

# Files, folders and units a deploy of the release role makes on a host (release name and the role's defaults
# filled in by ``deploy_paths``); the firewall's table is ``inet beamops_<app>``.
SNAPSHOT_SCRIPT = r'''
app=$1; base=$2; conf=$3; state=$4; epmd=$5
for p in "$base" "$conf" "$state" /etc/systemd/system/$app.service /etc/systemd/system/$epmd.service \
         /usr/local/lib/beamops /etc/beamops /etc/beamops/firewall-$app.nft \
         /etc/systemd/system/beamops-firewall-$app.service; do
  [ -e "$p" ] && echo "path $p"
done
id -u "$app" >/dev/null 2>&1 && echo "user $app"
getent group "$app" >/dev/null 2>&1 && echo "group $app"
nft list tables 2>/dev/null | grep -q " beamops_$app\$" && echo "table beamops_$app"
line=$(grep -E '^[^#[:space:]]+[[:space:]]+/proc[[:space:]]' /etc/fstab 2>/dev/null | head -1)
echo "fstab $line"
echo "procopts $(awk '$2 == "/proc" {print $4; exit}' /proc/mounts)"
'''


def deploy_paths(app, release_vars=None):
    """(base_dir, config_dir, state_dir, epmd_unit) of a release deployed with these role variables."""
    release_vars = release_vars or {}
    return (release_vars.get("release_base_dir") or "/opt/%s" % app,
            release_vars.get("release_config_dir") or "/etc/%s" % app,
            release_vars.get("release_state_dir") or "/var/lib/%s" % app,
            release_vars.get("release_epmd_unit") or "beamops-epmd")


def parse_snapshot(text):
    snapshot = {"paths": [], "user": False, "group": False, "table": False, "fstab": "", "proc_options": ""}
    for line in text.splitlines():
        kind, _sep, value = line.partition(" ")
        if kind == "path":
            snapshot["paths"].append(value)
        elif kind in ("user", "group", "table"):
            snapshot[kind] = True
        elif kind == "fstab":
            snapshot["fstab"] = value.strip()
        elif kind == "procopts":
            snapshot["proc_options"] = value.strip()
    return snapshot


def removal_script(app, paths, snapshot):
    """Shell lines that undo a deploy of ``app`` on a host whose state before it was ``snapshot``."""
    base, conf, state, epmd = paths
    had = set(snapshot["paths"])
    q = shlex.quote
    lines = ["set -u", "systemctl stop -- %s.service 2>/dev/null; systemctl disable -- %s.service 2>/dev/null || true"
             % (q(app), q(app))]
    firewall_unit = "/etc/systemd/system/beamops-firewall-%s.service" % app
    if firewall_unit not in had:
        lines.append("systemctl stop -- beamops-firewall-%s.service 2>/dev/null; systemctl disable -- "
                     "beamops-firewall-%s.service 2>/dev/null || true" % (q(app), q(app)))
    if not snapshot["table"]:
        lines.append("nft delete table inet %s 2>/dev/null || true" % q("beamops_" + app))
    epmd_unit = "/etc/systemd/system/%s.service" % epmd
    if epmd_unit not in had:
        lines.append("systemctl stop -- %s.service 2>/dev/null; systemctl disable -- %s.service 2>/dev/null || true"
                     % (q(epmd), q(epmd)))
    # Deepest first, only what was not there before.
    for path in (firewall_unit, "/etc/beamops/firewall-%s.nft" % app, "/etc/beamops", epmd_unit,
                 "/usr/local/lib/beamops", "/etc/systemd/system/%s.service" % app, state, conf, base):
        if path not in had:
            lines.append("rm -rf -- %s" % q(path))
    if not snapshot["user"]:
        lines.append("userdel -- %s 2>/dev/null || true" % q(app))
    if not snapshot["group"]:
        lines.append("groupdel -- %s 2>/dev/null || true" % q(app))
    lines.append("systemctl daemon-reload; systemctl reset-failed 2>/dev/null || true")
    # /proc as it was: the role mounts it with hidepid=invisible and writes an fstab line.
    if snapshot["fstab"]:
        lines.append("sed -i -E 's#^[^#[:space:]]+[[:space:]]+/proc[[:space:]].*$#%s#' /etc/fstab"
                     % snapshot["fstab"].replace("#", r"\#").replace("'", ""))
    else:
        lines.append(r"sed -i -E '/^[^#[:space:]]+[[:space:]]+\/proc[[:space:]]/d' /etc/fstab")
    if "hidepid" not in snapshot["proc_options"]:
        lines.append("grep -q ' /proc proc .*hidepid' /proc/mounts && mount -o remount,hidepid=0 /proc || true")
    lines.append("echo done")
    return "\n".join(lines) + "\n"


def _unit_state(session, host, app):
    return faults.helper(session.ssh(host), ["service", app + ".service"])


def _running(info):
    return (info.get("ActiveState") == "active" and info["MainPID"] and info.get("stat")
            and info["stat"]["state"] != "T" and info.get("comm") == "beam.smp")


def _wait_stopped(session, host, app, timeout):
    def stopped():
        info = _unit_state(session, host, app)
        return info if info.get("ActiveState") in ("inactive", "failed") and not info["MainPID"] else None
    return wait_until(stopped, timeout, 0.2)


def _systemctl(session, host, verb, app, timeout=120.0, check=True):
    session.ssh(host).run("systemctl %s -- %s.service" % (verb, shlex.quote(app)), timeout=timeout, check=check)


class _Stop(faults._ProcessFault):  # pylint: disable=protected-access
    def apply(self, session, record):
        mark_time(record, "issued")
        _systemctl(session, record["hosts"][0], "stop", record["params"]["app"])
        mark_time(record, "returned")

    def verify(self, session, record):
        host, app = record["hosts"][0], record["params"]["app"]
        if not _wait_stopped(session, host, app, 30.0):
            raise FaultNotEffective("%s: %s.service is still active after systemctl stop" % (host, app), record)
        mark_time(record, "effective")
        mark_time(record, "verified")
        record["verification"] = {"stopped": True}

    def undo(self, session, record):
        self.ensure_active(session, record, 0.0)


class _StartSpare:
    def apply(self, session, record):
        mark_time(record, "issued")
        _systemctl(session, record["hosts"][0], "start", record["params"]["app"])
        mark_time(record, "returned")

    def verify(self, session, record):
        host, app = record["hosts"][0], record["params"]["app"]
        info = wait_until(lambda: _running(_unit_state(session, host, app)), 30.0, 0.2)
        if not info:
            raise FaultNotEffective("%s: %s.service did not start" % (host, app), record)
        mark_time(record, "effective")
        mark_time(record, "verified")
        record["verification"] = {"active": True}

    def undo(self, session, record):
        host, app = record["hosts"][0], record["params"]["app"]
        mark_time(record, "undo_issued")
        # Idempotent: a unit that is gone (the spare already cleaned up) is as stopped as it gets.
        _systemctl(session, host, "stop", app, check=False)
        mark_time(record, "undo_returned")
        if not _wait_stopped(session, host, app, 60.0):
            raise FaultError("%s: %s.service is still active after systemctl stop" % (host, app))
        mark_time(record, "undo_effective")
        mark_time(record, "undo_verified")
        record["undo_verification"] = {"stopped": True}


class _PrepareSpare:
    """Journaled before the deploy starts (the deploy itself runs outside, so a signal can stop it): the record
    only needs to say what the host had before, so that the undo can take away whatever the deploy made."""

    def apply(self, session, record):
        mark_time(record, "issued")
        mark_time(record, "returned")

    def verify(self, session, record):
        mark_time(record, "effective")
        mark_time(record, "verified")

    def undo(self, session, record):
        host, app = record["hosts"][0], record["params"]["app"]
        snapshot = record["undo_data"]["snapshot"]
        mark_time(record, "undo_issued")
        if record["undo_data"]["fresh"]:
            script = removal_script(app, record["undo_data"]["paths"], snapshot)
            session.ssh(host).run("sh -s", timeout=180.0, stdin=script)
        else:
            session.ssh(host).run("systemctl stop -- %s.service 2>/dev/null || true" % shlex.quote(app), timeout=120.0)
        mark_time(record, "undo_returned")
        after = parse_snapshot(_snapshot(session, host, app, record["undo_data"]["paths"]))
        if record["undo_data"]["fresh"]:
            left = sorted(set(after["paths"]) - set(snapshot["paths"]))
            if left or (after["user"] and not snapshot["user"]) or (after["table"] and not snapshot["table"]):
                raise FaultError("%s: the spare still has %s after the removal" % (host, ", ".join(left) or "the user"))
        elif not _wait_stopped(session, host, app, 60.0):
            raise FaultError("%s: %s.service is still active" % (host, app))
        mark_time(record, "undo_effective")
        mark_time(record, "undo_verified")
        record["undo_verification"] = {"removed": record["undo_data"]["fresh"], "after": after}


def _snapshot(session, host, app, paths):
    base, conf, state, epmd = paths
    command = "sh -s %s" % " ".join(shlex.quote(p) for p in (app, base, conf, state, epmd))
    return session.ssh(host).run(command, timeout=60.0, stdin=SNAPSHOT_SCRIPT).stdout


class CompareFaultSession(faults.VmFaultSession):
    """``VmFaultSession`` with the comparison's own journaled state changes (see the module docstring)."""

    KINDS = dict(faults.VmFaultSession.KINDS, stop=_Stop(), start_spare=_StartSpare(), prepare_spare=_PrepareSpare())

    def __init__(self, hosts, journal, app=None, extra_hosts=None, **kwargs):
        super(CompareFaultSession, self).__init__(hosts, journal, app=app, **kwargs)
        self.extra_hosts = faults.validate_hosts(extra_hosts) if extra_hosts else {}
        self._specs.update(self.extra_hosts)

    def _journal_hosts(self, previous):
        return dict(self._specs)

    def stop(self, host, app=None):
        """``systemctl stop`` of the node on host; undone by starting it."""
        return self.inject(self._process_record(
            "stop", host, app, "stop of %(app)s on %(host)s (PID %(pid)d)",
            "systemctl stop %(app)s.service: SIGTERM to the BEAM (init:stop closes its connections)", DETECT_CLOSED))

    def _spare(self, host):
        if host not in self.extra_hosts:
            raise ValueError("host %r is not a spare host of this session (%s)" % (host, ", ".join(sorted(self.extra_hosts))))
        return host

    def start_spare(self, host, app=None):
        """``systemctl start`` of the spare's node; undone by stopping it."""
        host, app = self._spare(host), self._app(app)
        record = self._new_record("start_spare", "start of %s on the spare %s" % (app, host),
                                  "systemctl start %s.service on a host outside the cluster's members" % app,
                                  "join", [host], {"app": app}, {})
        return self.inject(record)

    def prepare_spare(self, host, install, release_vars=None, app=None):
        """Journal the spare's state, run ``install()`` (a deploy to the spare) and stop its node; undone by stopping
        it and, on a host that had no such release before, removing what the deploy made. Returns the record."""
        host, app = self._spare(host), self._app(app)
        paths = deploy_paths(app, release_vars)
        snapshot = parse_snapshot(_snapshot(self, host, app, paths))
        fresh = "/etc/systemd/system/%s.service" % app not in snapshot["paths"]
        record = self.inject(self._new_record(
            "prepare_spare", "deploy of %s to the spare %s (node stopped after)" % (app, host),
            "beamops.cluster.deploy_vms to the spare host, then systemctl stop of its node", "none", [host],
            {"app": app}, {"snapshot": snapshot, "fresh": fresh, "paths": list(paths)}))
        install()
        _systemctl(self, host, "stop", app)
        info = _wait_stopped(self, host, app, 60.0)
        if not info or info.get("LoadState") != "loaded":
            raise FaultError("%s: after the deploy %s.service is not installed and stopped" % (host, app))
        return record
