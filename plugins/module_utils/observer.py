# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The observer: a controller-side hidden node that samples every node's view of the mesh at a fixed rate.

It keeps one session to every node (``erl_driver.Driver``, the client ``mesh_info`` uses) and every
``interval`` seconds (default 0.1: 10 Hz) sends each node ``erlang:nodes()``. A sample is what the nodes
answered within their slot: a node whose answer did not come before the next slot began counts as "no
answer" (None) for that sample. A frozen node keeps its session until the connection closes or nothing came
from it for ``tick_timeout`` seconds, gets no more than ``max_outstanding`` queries meanwhile, and never
holds up the sampling of the others; a node whose connection closed is dialled again at every slot, so one
that comes back (a restart under the same name) is followed again within a slot or two of registering. The
observer is a hidden node: it never shows in any node's ``nodes()``.

Public API
==========
``Observer(nodes, cookie, interval=0.1, out=None, dial=None, tls=None, epmd_port=4369, dist_port=None,
           family=None, local_node=None, tick_timeout=60.0, connect_timeout=2.0, full_every=5.0,
           max_outstanding=1, history=1200)``
    ``start()`` (runs the sampling in a background thread; returns self), ``stop()`` (returns ``stats()``),
    also a context manager.
``latest() -> {node: View(t, utc, peers)}``
    The newest sample of each node: its time and its peers (a frozenset of names) or None (no answer).
``wait_until(predicate, timeout=None) -> float or None``
    Blocks until ``predicate(views)`` holds for a sample (``views``: ``{node: peers or None}``), checking
    every sample from the newest one at the call on; returns that sample's monotonic time, or None when
    ``timeout`` seconds pass first.
``add_nodes(nodes, dial=None)``: follow more nodes from the next slot on (scale-out).
``mark(label, **data) -> (t, utc)``: write an event line (faults, phases) on the same clocks.
``history() -> [Sample]``: the last ``history`` samples kept in memory.
``stats() -> dict``: samples, rate, interval and lateness percentiles, late and skipped slots, answers,
    late answers, the sampling thread's CPU seconds, bytes written.
``replay(path) -> iterator of Sample(t, utc, views)``: a file back into per-sample views.
``read_records(path, kinds=("header", "names", "mark", "link", "resolution", "stop"))``: the other lines.

Command line (the cookie is read from a file, never from the command line)::

    python -m ansible_collections.beamops.cluster.plugins.module_utils.observer \\
        --nodes app@10.0.0.5,app@10.0.0.6 --cookie-file cookie.txt --out run.jsonl [--interval 0.1] \\
        [--duration 60] [--dial app@10.0.0.5=127.0.0.1:30001] [--dist-port N] [--epmd-port N] [--tls-ca-file F ...]

It runs until ``--duration`` passes or SIGINT/SIGTERM, then prints ``stats()`` as JSON.

File format (JSON lines, UTF-8, mode 0600)
==========================================
Every line is an object with ``k`` (its kind), ``t`` (``time.monotonic()`` seconds: CLOCK_MONOTONIC, the same
clock for every process of the machine) and ``u`` (UTC wall clock, ISO 8601 with microseconds and ``Z``).
Nodes are numbered: the header lists the first ones (index = position), ``names`` lines add more.

``header``      ``format`` ("beamops.cluster.observer/1"), ``interval_s`` (the resolution: a change is seen
                at most one interval late, plus the lateness the ``resolution`` lines measure), ``nodes``,
                ``local_nodes`` (our hidden names), ``full_every_s``, ``tick_timeout_s``, ``max_outstanding``.
``names``       ``names`` {index: node name} added to the table; ``members`` the indexes among them that are
                observed (others are peers the observed nodes reported).
``full``        a sample with every observed node in ``v``; written every ``full_every`` seconds.
``sample``      a sample with only the nodes that changed in ``v`` (omitted when none did); ``s`` numbers the
                samples (full ones too), ``t``/``u`` are when its queries went out.
``mark``        ``label`` and ``data`` from ``mark()``.
``link``        a session came up (``up`` true) or a session or dial attempt failed (``up`` false, ``reason``,
                ``message``): ``node`` is an index.
``resolution``  measured timing since the previous one: ``samples``, ``interval_ms`` and ``lateness_ms``
                (start behind schedule) percentiles ``p50``/``p99``/``max``, ``late`` (slots started more than
                half an interval late), ``skipped`` (slots not sampled at all), ``cpu_s``; ``final`` true in the
                last one, which covers the whole run.
``stop``        the end of the run.

In ``v`` a node's value is ``null`` (no answer), a list of indexes (its peers), ``{"but": [...]}`` (every
observed node but itself and those), or ``{"+": [...], "-": [...]}`` / ``{}`` (added to / removed from / the
same as its last known peers, when it answered before).
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import collections
import json
import os
import threading
import time
from datetime import datetime, timezone

from ansible_collections.beamops.cluster.plugins.module_utils import erl_dist, erl_driver
from ansible_collections.beamops.cluster.plugins.module_utils.erl_epmd import EPMD_DEFAULT_PORT

FORMAT = "beamops.cluster.observer/1"
QUERY = [("erlang", "nodes", [])]

# Every session stays open, so the driver's cap must not make late nodes wait for a socket that never frees
# up; running out of file descriptors is reported per node instead.
OBSERVER_MAX_SOCKETS = 1 << 20

Sample = collections.namedtuple("Sample", "t utc views")
View = collections.namedtuple("View", "t utc peers")


def utc_now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _percentiles(values):
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(fraction):
        return round(ordered[min(len(ordered) - 1, int(fraction * (len(ordered) - 1) + 0.5))] * 1000, 3)
    return {"p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1] * 1000, 3)}


class Observer:
    """See the module docstring."""

    def __init__(self, nodes, cookie, interval=0.1, out=None, dial=None, tls=None, epmd_port=EPMD_DEFAULT_PORT,
                 dist_port=None, family=None, local_node=None, tick_timeout=60.0, connect_timeout=2.0,
                 full_every=5.0, max_outstanding=1, history=1200):
        if not isinstance(cookie, str) or not cookie:
            raise ValueError("cookie must be a non-empty string")
        if not interval or interval <= 0:
            raise ValueError("interval must be a number of seconds greater than 0, not %r" % (interval,))
        self.interval = float(interval)
        self.out = out
        self.full_every = full_every
        self.max_outstanding = max(1, int(max_outstanding))
        self._driver = erl_driver.Driver(
            cookie, local_node=local_node, epmd_port=epmd_port, dist_port=dist_port, family=family, tls=tls,
            dial=erl_driver.validate_dial(dial), connect_timeout=connect_timeout, tick_timeout=tick_timeout,
            max_sockets=OBSERVER_MAX_SOCKETS, on_link=self._on_link)
        self.tick_timeout = tick_timeout
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._write_lock = threading.Lock()
        self._file = None
        self._bytes = 0
        self._thread = None
        self._stopping = threading.Event()
        self._failure = None
        self._commands = []
        self._names = []
        self._index = {}
        self._members = []
        self._history = collections.deque(maxlen=history)
        self._seq = 0
        self._latest = {}
        self._known = {}  # member -> last peers it answered (frozenset of names)
        self._written = {}  # member -> what the file says now (frozenset or None)
        self._peer_cache = {}  # member -> (list object the session reused, frozenset of it)
        self._forms = {}  # (member, peers) -> (members then, the peer set as written)
        self._inflight = {}  # member -> [Call, ...] not answered yet
        self._unanswered = []  # calls whose slot closed before they were answered
        self._timing = self._new_timing()
        self._window = self._new_timing()
        self._counts = {"answers": 0, "no_answers": 0, "late_answers": 0}
        self._cpu = 0.0
        self._started = None
        self._stopped = None
        for node in self._validated(nodes):
            self._add_member(node)

    @staticmethod
    def _new_timing():
        return {"samples": 0, "intervals": [], "lateness": [], "late": 0, "skipped": 0}

    @staticmethod
    def _validated(nodes):
        if not isinstance(nodes, (list, tuple)):
            raise ValueError("nodes must be a list of node names such as app@10.0.0.5")
        for node in nodes:
            try:
                erl_dist.split_node(node)
            except ValueError as exc:
                raise ValueError("nodes: %s" % exc)
        return list(nodes)

    # ------------------------------------------------------------------------------------------- the file
    def _write(self, record):
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        with self._write_lock:
            if self._file is not None:
                self._file.write(line)
                self._file.flush()
                self._bytes += len(line)

    def _name_index(self, name, new_names):
        index = self._index.get(name)
        if index is None:
            index = self._index[name] = len(self._names)
            self._names.append(name)
            new_names[str(index)] = name
        return index

    def _add_member(self, node, address=None):
        """Observe ``node``: (its index, names new to the table), or None when it is observed already."""
        if node in self._written:
            return None
        self._driver.add(node, address)
        self._members.append(node)
        self._written[node] = None
        self._inflight[node] = []
        self._latest[node] = View(None, None, None)
        new_names = {}
        return self._name_index(node, new_names), new_names

    # ------------------------------------------------------------------------------------------ public API
    def start(self):
        """Open the file, write the header and start sampling in a background thread."""
        if self._thread is not None:
            raise RuntimeError("the observer is already started")
        if self.out:
            fd = os.open(self.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            self._file = os.fdopen(fd, "w", encoding="utf-8")
        self._started = time.monotonic()
        self._write({"k": "header", "t": self._started, "u": utc_now(), "format": FORMAT,
                     "interval_s": self.interval, "clock": "CLOCK_MONOTONIC seconds (time.monotonic)",
                     "nodes": list(self._members),
                     "local_nodes": sorted(set(self._driver.identity.name_for(n) for n in self._members)),
                     "full_every_s": self.full_every, "tick_timeout_s": self.tick_timeout,
                     "max_outstanding": self.max_outstanding,
                     "resolution": "a change shows at most one interval later, plus the lateness measured in the "
                                   "resolution lines"})
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="beamops-observer", daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self, timeout=5.0):
        """Stop sampling, write the final resolution line and close the file; returns ``stats()``."""
        if self._thread is None:
            return self.stats()
        self._stopping.set()
        self._thread.join(timeout)
        self._stopped = time.monotonic()
        stats = self.stats()
        final = dict(self._resolution(self._timing), final=True, samples=self._seq)
        self._write(dict({"k": "resolution", "t": self._stopped, "u": utc_now()}, **final))
        self._write({"k": "stop", "t": self._stopped, "u": utc_now(), "samples": self._seq})
        with self._write_lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        self._thread = None
        if self._failure is not None:
            raise RuntimeError("the observer's sampling thread failed: %s" % self._failure)
        return stats

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def latest(self):
        with self._lock:
            return dict(self._latest)

    def history(self):
        with self._lock:
            return [sample for seq, sample in self._history]

    def wait_until(self, predicate, timeout=None):
        """The monotonic time of the first sample (the newest one at the call or a later one) for which
        ``predicate(views)`` holds, or None when ``timeout`` seconds pass first."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            next_seq = self._history[-1][0] if self._history else 1
        while True:
            with self._lock:
                fresh = [(seq, sample) for seq, sample in self._history if seq >= next_seq]
                if not fresh:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        return None
                    if self._thread is None or not self._thread.is_alive():
                        return None
                    self._changed.wait(left if left is None else min(left, 1.0))
                    continue
            for seq, sample in fresh:
                if predicate(sample.views):
                    return sample.t
                next_seq = seq + 1

    def add_nodes(self, nodes, dial=None):
        """Follow ``nodes`` too (from the next slot); ``dial`` gives their addresses like the constructor's."""
        nodes = self._validated(nodes)
        addresses = erl_driver.validate_dial(dial)
        with self._lock:
            self._commands.append((nodes, addresses))

    def mark(self, label, **data):
        """Write an event line; returns its ``(t, utc)``."""
        now, utc = time.monotonic(), utc_now()
        self._write({"k": "mark", "t": now, "u": utc, "label": str(label), "data": data})
        return now, utc

    def stats(self):
        with self._lock:
            timing = dict(self._timing, intervals=list(self._timing["intervals"]),
                          lateness=list(self._timing["lateness"]))
            counts = dict(self._counts)
            seq = self._seq
        end = self._stopped or time.monotonic()
        duration = (end - self._started) if self._started else 0.0
        result = self._resolution(timing)
        result["samples"] = seq
        result.update(counts)
        result.update({"rate_hz": round(seq / duration, 3) if duration else None,
                       "duration_s": round(duration, 3), "bytes": self._bytes,
                       "bytes_per_s": round(self._bytes / duration, 1) if duration else None,
                       "nodes": len(self._members)})
        return result

    def _resolution(self, timing):
        return {"interval_s": self.interval, "samples": timing["samples"],
                "interval_ms": _percentiles(timing["intervals"]), "lateness_ms": _percentiles(timing["lateness"]),
                "late": timing["late"], "skipped": timing["skipped"], "cpu_s": round(self._cpu, 3)}

    # ---------------------------------------------------------------------------------------- the sampling
    def _on_link(self, link, up, error):
        index = self._index.get(link.node)
        if index is None:
            return
        record = {"k": "link", "t": time.monotonic(), "u": utc_now(), "node": index, "up": up}
        if error is not None:
            record.update(reason=error.reason, message=str(error))
        self._write(record)

    def _run(self, ready):
        cpu_start = time.thread_time()
        try:
            ready.set()
            self._loop(cpu_start)
        except Exception as exc:  # pylint: disable=broad-except
            # Whatever broke is reported by stop(); the caller's own work must not die with the sampling.
            self._failure = "%s: %s" % (type(exc).__name__, exc)
        finally:
            self._driver.close()
            self._cpu = time.thread_time() - cpu_start
            with self._lock:
                self._changed.notify_all()

    def _loop(self, cpu_start):
        driver = self._driver
        interval = self.interval
        next_at = time.monotonic()
        last_start = None
        current = None
        next_full = next_at
        while not self._stopping.is_set():
            driver.run(deadline=next_at)
            now = time.monotonic()
            behind = now - next_at
            skipped = 0
            if behind >= interval:
                skipped = int(behind / interval)
                next_at += skipped * interval
            if current is not None:
                full = now >= next_full
                if full:
                    next_full = now + self.full_every
                self._close_sample(current, full)
            self._apply_commands()
            start, utc = time.monotonic(), utc_now()
            for timing in (self._timing, self._window):
                timing["samples"] += 1
                timing["lateness"].append(max(0.0, start - next_at))
                timing["skipped"] += skipped
                if start - next_at > interval / 2.0:
                    timing["late"] += 1
                if last_start is not None:
                    timing["intervals"].append(start - last_start)
            last_start = start
            ask = []
            for node in self._members:
                calls = self._inflight[node] = [c for c in self._inflight[node] if not c.done]
                if len(calls) < self.max_outstanding:
                    ask.append(node)
            batch = driver.call_all(ask, QUERY)
            for node, call in batch.items():
                self._inflight[node].append(call)
            current = (start, utc, batch)
            next_at += interval
            self._cpu = time.thread_time() - cpu_start
            if self._window["samples"] * interval >= self.full_every:
                self._write(dict({"k": "resolution", "t": start, "u": utc}, **self._resolution(self._window)))
                self._window = self._new_timing()

    def _apply_commands(self):
        with self._lock:
            commands, self._commands = self._commands, []
        for nodes, addresses in commands:
            new_names, members = {}, []
            for node in nodes:
                added = self._add_member(node, addresses.get(node))
                if added is not None:
                    members.append(added[0])
                    new_names.update(added[1])
            if members:
                self._write({"k": "names", "t": time.monotonic(), "u": utc_now(), "names": new_names,
                             "members": members})

    def _peers_of(self, node, call):
        """The peers a finished call reported (one frozenset per distinct answer), or None."""
        if not call.ok:
            return None
        answer = call.results[0]
        cached = self._peer_cache.get(node)
        if cached is not None and cached[0] is answer:
            return cached[1]
        if not (isinstance(answer, list) and all(isinstance(name, str) for name in answer)):
            return None
        peers = frozenset(str(name) for name in answer)
        self._peer_cache[node] = (answer, peers)
        return peers

    def _close_sample(self, current, full):
        start, utc, batch = current
        views = {}
        changes = {}
        new_names = {}
        answers = misses = 0
        for node in self._members:
            call = batch.get(node)
            peers = self._peers_of(node, call) if call is not None and call.done else None
            if peers is None:
                misses += 1
            else:
                answers += 1
            views[node] = peers
            if full or peers is not self._written[node] and peers != self._written[node]:
                changes[str(self._index[node])] = self._encode(node, peers, full, new_names)
                self._written[node] = peers
            if peers is not None:
                self._known[node] = peers
        # A query answered after its slot closed is counted, not used.
        late = [call for call in self._unanswered if call.done]
        self._unanswered = [call for call in self._unanswered if not call.done]
        self._unanswered.extend(call for call in batch.values() if not call.done)
        self._seq += 1
        if new_names:
            self._write({"k": "names", "t": start, "u": utc, "names": new_names, "members": []})
        record = {"k": "full" if full else "sample", "s": self._seq, "t": start, "u": utc}
        if changes:
            record["v"] = changes
        self._write(record)
        sample = Sample(start, utc, views)
        with self._lock:
            self._counts["answers"] += answers
            self._counts["no_answers"] += misses
            self._counts["late_answers"] += sum(1 for call in late if call.ok)
            for node, peers in views.items():
                self._latest[node] = View(start, utc, peers)
            self._history.append((self._seq, sample))
            self._changed.notify_all()

    def _encode(self, node, peers, full, new_names):
        if peers is None:
            return None
        known = self._known.get(node)
        if not full and known is not None:
            if peers is known or peers == known:
                return {}  # answering again, with the peers it had
            added, removed = peers - known, known - peers
            if len(added) + len(removed) <= len(peers):
                delta = {}
                if added:
                    delta["+"] = sorted(self._name_index(name, new_names) for name in added)
                if removed:
                    delta["-"] = sorted(self._index[name] for name in removed)
                return delta
        return self._full_form(node, peers, new_names)

    def _full_form(self, node, peers, new_names):
        """A peer set as indexes, or as {"but": [...]} when that is shorter; cached per distinct set."""
        key = (node, peers)
        found = self._forms.get(key)
        if found is not None and found[0] == len(self._members):
            return found[1]
        indexes = [self._name_index(name, new_names) for name in peers]
        form = sorted(indexes)
        member_indexes = set(self._index[m] for m in self._members)
        if member_indexes.issuperset(indexes):
            but = sorted(member_indexes - set(indexes) - {self._index[node]})
            if len(but) < len(indexes):
                form = {"but": but}
        if len(self._forms) > 4 * len(self._members) + 64:
            self._forms.clear()
        self._forms[key] = (len(self._members), form)
        return form


# ---------------------------------------------------------------------------------------------- the reader
def _records(path):
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except ValueError:
                # The last line of a run that was killed may be cut short: the lines before it still count.
                continue


def replay(path):
    """Every sample of an observer file as ``Sample(t, utc, views)``, views ``{node: frozenset or None}``."""
    names = []
    members = []
    state = {}
    known = {}
    for record in _records(path):
        kind = record.get("k")
        if kind == "header":
            names = list(record["nodes"])
            members = list(range(len(names)))
            state = dict((i, None) for i in members)
        elif kind == "names":
            for key, name in record.get("names", {}).items():
                index = int(key)
                while len(names) <= index:
                    names.append(None)
                names[index] = name
            for index in record.get("members", []):
                if index not in state:
                    members.append(index)
                    state[index] = None
        elif kind in ("sample", "full"):
            member_set = set(members)
            for key, value in record.get("v", {}).items():
                index = int(key)
                if value is None:
                    state[index] = None
                    continue
                if isinstance(value, list):
                    peers = set(value)
                elif "but" in value:
                    peers = member_set - set(value["but"]) - {index}
                else:
                    peers = (set(known.get(index, ())) | set(value.get("+", ()))) - set(value.get("-", ()))
                known[index] = peers
                state[index] = peers
            views = {}
            for index in members:
                peers = state.get(index)
                views[names[index]] = None if peers is None else frozenset(names[i] for i in peers)
            yield Sample(record["t"], record["u"], views)


def read_records(path, kinds=("header", "names", "mark", "link", "resolution", "stop")):
    """The lines of the given kinds, as dicts, in file order."""
    return [record for record in _records(path) if record.get("k") in kinds]


# ------------------------------------------------------------------------------------------ command line
def main(argv=None):
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(prog="python -m ansible_collections.beamops.cluster.plugins.module_utils.observer",
                                     description="Follow BEAM nodes' views of the mesh as a hidden node and write "
                                                 "them as JSON lines.")
    parser.add_argument("--nodes", required=True, help="comma-separated node names")
    parser.add_argument("--cookie-file", required=True, help="file holding the cookie (never give it on the command "
                                                             "line)")
    parser.add_argument("--out", required=True, help="the JSON-lines file to write (mode 0600)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between samples (0.1 = 10 Hz)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: at SIGINT/SIGTERM)")
    parser.add_argument("--dial", action="append", default=[], metavar="NODE=HOST:PORT",
                        help="reach NODE at HOST:PORT without EPMD (repeatable)")
    parser.add_argument("--epmd-port", type=int, default=EPMD_DEFAULT_PORT)
    parser.add_argument("--dist-port", type=int)
    parser.add_argument("--tick-timeout", type=float, default=60.0)
    parser.add_argument("--tls-ca-file")
    parser.add_argument("--tls-cert-file")
    parser.add_argument("--tls-key-file")
    parser.add_argument("--tls-server-name")
    parser.add_argument("--tls-no-verify", action="store_true")
    args = parser.parse_args(argv)
    try:
        with open(args.cookie_file, encoding="utf-8") as handle:
            cookie = handle.read().strip()
        dial = {}
        for item in args.dial:
            node, sep, address = item.partition("=")
            if not sep:
                raise ValueError("--dial %s: write NODE=HOST:PORT" % item)
            dial[node] = erl_driver.parse_address(address, "--dial %s" % node)
        tls = None
        if args.tls_ca_file or args.tls_cert_file or args.tls_no_verify:
            tls = erl_dist.TlsOptions(ca_file=args.tls_ca_file, cert_file=args.tls_cert_file,
                                      key_file=args.tls_key_file, verify=not args.tls_no_verify,
                                      server_name=args.tls_server_name)
        observer = Observer([n for n in args.nodes.split(",") if n], cookie, interval=args.interval, out=args.out,
                            dial=dial, tls=tls, epmd_port=args.epmd_port, dist_port=args.dist_port,
                            tick_timeout=args.tick_timeout)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_args: done.set())
    observer.start()
    done.wait(args.duration)
    sys.stdout.write(json.dumps(observer.stop(), sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
