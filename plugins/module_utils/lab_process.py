# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Long-running lab processes (systemd-nspawn, dnsmasq) started detached and tracked by PID.

A record file holds the PID, the process start time (so a recycled PID is never mistaken for
ours) and the command line. Stopping signals exactly that PID: never a process found by name.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import signal
import subprocess
import time


def process_stat(pid):
    """Return (state, start_time) of a PID from /proc, or None if there is no such process."""
    try:
        with open(u"/proc/%d/stat" % pid) as stat:
            fields = stat.read().rsplit(u")", 1)[1].split()
    except (IOError, OSError, IndexError):
        return None
    # After the command name: state is field 3 of the full line, starttime field 22.
    return fields[0], fields[19]


def read_record(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


def write_record(path, record):
    tmp = path + u".tmp"
    with open(tmp, u"w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
    os.rename(tmp, path)


def is_alive(record):
    """True if the recorded process still runs (same PID and start time, not a zombie)."""
    if not record:
        return False
    stat = process_stat(int(record[u"pid"]))
    return stat is not None and stat[0] not in (u"Z", u"X") and stat[1] == record[u"start_time"]


def start(argv, record_path, log_path):
    """Start argv detached from Ansible (own session, output to log_path) and record its PID."""
    with open(log_path, u"ab") as log, open(os.devnull, u"rb") as devnull:
        proc = subprocess.Popen(argv, stdin=devnull, stdout=log, stderr=subprocess.STDOUT,
                                close_fds=True, start_new_session=True)
    stat = process_stat(proc.pid)
    if stat is None:
        raise OSError(u"%s exited immediately; see %s" % (argv[0], log_path))
    record = {u"pid": proc.pid, u"start_time": stat[1], u"argv": list(argv), u"log": log_path}
    write_record(record_path, record)
    return record


def _wait_gone(record, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not is_alive(record):
            return True
        time.sleep(0.1)
    return not is_alive(record)


def stop(record_path, timeout=30):
    """Stop the recorded process (TERM, then KILL after timeout) and drop the record.

    Returns True if a live process was signalled.
    """
    record = read_record(record_path)
    signalled = False
    if is_alive(record):
        signalled = True
        os.kill(int(record[u"pid"]), signal.SIGTERM)
        if not _wait_gone(record, timeout):
            os.kill(int(record[u"pid"]), signal.SIGKILL)
            if not _wait_gone(record, 10):
                raise OSError(u"process %s (%s) survived SIGKILL" % (record[u"pid"], record[u"argv"][0]))
    if os.path.exists(record_path):
        os.remove(record_path)
    return signalled


def ensure_running(argv, record_path, log_path, timeout=30):
    """Start argv unless the recorded process with the same command line is alive.

    Returns (changed, record). A live process with a different command line is replaced.
    """
    record = read_record(record_path)
    if is_alive(record) and record.get(u"argv") == list(argv):
        return False, record
    stop(record_path, timeout)
    return True, start(argv, record_path, log_path)


def signal_recorded(record_path, signum):
    """Send signum to the recorded process if it is alive; return True if sent."""
    record = read_record(record_path)
    if not is_alive(record):
        return False
    os.kill(int(record[u"pid"]), signum)
    return True
