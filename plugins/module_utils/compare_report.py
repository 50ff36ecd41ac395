# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The comparison report: ``report.md`` and a self-contained ``report.html`` from a ``results.json`` (schema 1).

Public API
==========
``write_report(results, out_dir) -> {"markdown": path, "html": path}``
    Checks ``results`` (a dict in the format of ``/work/notes/results-schema.md``; bad input raises
    ``ResultsError`` naming the field and the fix, before anything is written), renders both files in memory
    and then moves them into ``out_dir`` (made if missing), so a failed run leaves no half-written report.
``build_document(results) -> list``
    The report as a list of blocks (headings, paragraphs, tables, figures), the one content both files render.
``render_markdown(blocks) -> str`` / ``render_html(blocks, results) -> str``
    The two renderings. The HTML page loads nothing: charts are inline SVG (matplotlib, drawn without pyplot
    on an Agg canvas, text kept as text, no date, a fixed hash salt so the same results give the same bytes),
    the stylesheet is inline, a Content-Security-Policy forbids every fetch, and ``results.json`` rides along
    in a ``<script type="application/json">`` block (data, never executed).
``main(argv=None)``
    ``python -m ansible_collections.beamops.cluster.plugins.module_utils.compare_report results.json OUT_DIR``
    prints the two paths as JSON; exit code 2 with one line on stderr for bad input.

matplotlib is imported only when a chart is drawn, so importing this module (or anything else in the
collection) does not pay for it.

The page answers "native distribution or Kubernetes?" from measured numbers only: a Kubernetes column is filled
from a target of kind ``kubernetes`` that was measured, and a target that was not measured says why. The lab's
figures come from systemd-nspawn hosts on one machine; the page says so wherever they appear.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import html
import io
import json
import math
import os
import re
import sys
import tempfile

from ansible_collections.beamops.cluster.plugins.module_utils.compare_stats import (
    compare, format_bound, format_coverage, format_value, median_interval, range_coverage, summarize)

SCHEMA = 1
KINDS = ("vm", "kubernetes")
SVG_HASHSALT = "beamops.cluster compare_report"
# One colour per target, in target order (matplotlib's tab10, which stays apart for colour-blind readers too).
TARGET_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
CENSORED_COLOUR = "#c0392b"
FAULT_COLOUR = "#d62728"

# The seeds' "Native BEAM Distribution vs Kubernetes" table: each adjective is set beside the measured numbers
# that check it. A row's metrics are (scenario, metric, label).
DECISION_ROWS = (
    {"aspect": "Best for",
     "native": "Fixed node count, real-time state sharing",
     "kubernetes": "Variable scale, multi-region, mixed workloads",
     "metrics": (("scale_out", "join_ms", "new node joined"), ("cold_start", "full_mesh_ms", "cold start to full mesh")),
     "check": "Scaling is measured as the time a new node needs to join every peer, and a cold start as the time "
              "from the first node started to the full mesh."},
    {"aspect": "Latency",
     "native": "Lower, direct node-to-node",
     "kubernetes": "Higher, routed through load balancer",
     "metrics": (("latency", "rtt_p50_ms", "round trip p50"), ("latency", "rtt_p99_ms", "round trip p99"),
                 ("throughput", "throughput_mib_s", "throughput")),
     "check": "Erlang distribution connects node to node on both: the Kubernetes strategies dial pod addresses "
              "found through a headless Service, not a load-balanced address, so any difference comes from the "
              "pod network (CNI), not from a load balancer."},
    {"aspect": "Complexity",
     "native": "Lower operational overhead",
     "kubernetes": "Higher, requires specialist configuration",
     "metrics": (("rolling_deploy", "not_full_ms", "mesh not full during a rolling deploy"),
                 ("rolling_deploy", "fewest_members", "fewest members seen")),
     "check": "Operational effort is not a timing; what it costs the cluster is: how long a rolling deploy "
              "leaves the mesh incomplete, and how far it shrinks."},
    {"aspect": "Debugging",
     "native": "Simpler, fewer moving parts",
     "kubernetes": "More tooling required",
     "metrics": (("crash", "detection_ms", "kill -9 noticed"), ("freeze", "detection_ms", "freeze noticed"),
                 ("partition_full_drop", "detection_ms", "silent partition noticed")),
     "check": "A fault has to be seen before it can be debugged: a killed node is noticed through its closed "
              "connection, a frozen node or a silent (DROP) partition only through ticks."},
    {"aspect": "Tooling",
     "native": "libcluster + DNS or gossip",
     "kubernetes": "libcluster + headless Service + StatefulSet",
     "metrics": (("partition_full_drop", "heal_ms", "heal after a silent partition"),
                 ("partition_full_reject", "heal_ms", "heal after a rejecting partition")),
     "check": None},  # computed: which strategies heal a partition by themselves
)

ENVIRONMENT_LABELS = (
    ("platform", "platform"),
    ("strategy", "discovery strategy"),
    ("strategy_interval_ms", "strategy interval"),
    ("otp", "OTP"),
    ("elixir", "Elixir"),
    ("release", "release"),
    ("net_ticktime_s", "net_ticktime"),
    ("net_tickintensity", "net_tickintensity"),
    ("tick_window", "tick detection window (expected)"),
    ("nodes", "nodes"),
    ("hosts", "hosts"),
    ("epmdless", "EPMD-less"),
    ("tls", "TLS distribution"),
    ("kubernetes_version", "Kubernetes version"),
    ("cni", "CNI"),
    ("dns", "cluster DNS"),
)

SCENARIO_TITLES = {
    "cold_start": "cold start: first node started to full mesh",
    "crash": "kill -9 of one node's BEAM",
    "freeze": "freeze of one node (SIGSTOP, then SIGCONT)",
    "partition_full_drop": "full partition, packets dropped (silent)",
    "partition_full_reject": "full partition, connections rejected",
    "partition_partial_drop": "partial partition (one link), dropped",
    "partition_partial_reject": "partial partition (one link), rejected",
    "rolling_deploy": "rolling deploy",
    "scale_out": "scale out: a node added",
    "latency": "inter-node round trip",
    "throughput": "inter-node throughput",
}


class ResultsError(ValueError):
    """results.json that the report cannot show; the message names the field and the fix."""


# ---------------------------------------------------------------------------------------------------- input


def _need(condition, field, message):
    if not condition:
        raise ResultsError("%s: %s" % (field, message))


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _find_secret(value, path):
    if isinstance(value, dict):
        for key, item in value.items():
            here = "%s.%s" % (path, key)
            if "cookie" in str(key).lower() and item not in (None, "", False):
                return here
            found = _find_secret(item, here)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_secret(item, "%s[%d]" % (path, index))
            if found:
                return found
    return None


def _check_repetition(rep, field):
    _need(isinstance(rep, dict), field, "must be an object with index, metrics, fault_windows, timeline")
    _need(isinstance(rep.get("metrics", {}), dict), field + ".metrics", "must be an object: metric name -> value")
    for name, value in rep.get("metrics", {}).items():
        ok = value is None or isinstance(value, (bool, int, float, dict, list, str))
        _need(ok and not (isinstance(value, float) and not math.isfinite(value)),
              "%s.metrics.%s" % (field, name), "must be a finite number, true/false, null, or a per-node object")
    for index, window in enumerate(rep.get("fault_windows") or []):
        where = "%s.fault_windows[%d]" % (field, index)
        _need(isinstance(window, dict) and _is_number(window.get("start")), where,
              "needs start (seconds since the repetition started) and end (null while the fault was on)")
        _need(window.get("end") is None or _is_number(window["end"]), where + ".end", "must be a number or null")
    timeline = rep.get("timeline")
    if timeline is not None:
        _need(isinstance(timeline, dict) and isinstance(timeline.get("t"), list)
              and isinstance(timeline.get("members"), list), field + ".timeline",
              "must be null or {\"t\": [...], \"members\": [...]} (lists of the same length)")
        _need(len(timeline["t"]) == len(timeline["members"]), field + ".timeline",
              "t has %d values but members has %d: they must pair up" % (
                  len(timeline["t"]), len(timeline["members"])))
        _need(all(_is_number(v) for v in timeline["t"]) and
              all(v is None or _is_number(v) for v in timeline["members"]), field + ".timeline",
              "t must be numbers (seconds) and members numbers or null (observer had no answer)")


def check_results(results):
    """Raise ResultsError for input the report cannot show honestly."""
    _need(isinstance(results, dict), "results", "must be a JSON object (results.json from the comparison run)")
    _need(results.get("schema") == SCHEMA, "schema",
          "is %r; this report reads schema %d (see results-schema.md)" % (results.get("schema"), SCHEMA))
    secret = _find_secret(results, "results")
    _need(secret is None, secret or "results", "holds a cookie: remove it, the report is not a secret store")
    targets = results.get("targets")
    _need(isinstance(targets, list) and targets, "targets", "must be a non-empty list of targets")
    names = set()
    for t_index, target in enumerate(targets):
        field = "targets[%d]" % t_index
        _need(isinstance(target, dict), field, "must be an object")
        name = target.get("name")
        _need(isinstance(name, str) and name.strip(), field + ".name", "must be a non-empty string")
        _need(name not in names, field + ".name", "%r appears twice: target names must be unique" % name)
        names.add(name)
        _need(target.get("kind") in KINDS, field + ".kind",
              "is %r; use one of %s" % (target.get("kind"), ", ".join(KINDS)))
        _need(isinstance(target.get("measured"), bool), field + ".measured", "must be true or false")
        environment = target.get("environment") or {}
        _need(isinstance(environment, dict), field + ".environment", "must be an object (key -> value)")
        platform = str(environment.get("platform") or "").lower()
        # A lab figure must never be shown as a Kubernetes figure.
        _need(not (target["kind"] == "kubernetes" and ("nspawn" in platform or platform.startswith("lab"))),
              field + ".kind", "is kubernetes but the platform is the lab (%r): the lab's figures are VM figures"
              % environment.get("platform"))
        if not target["measured"]:
            continue
        scenarios = target.get("scenarios")
        _need(isinstance(scenarios, list), field + ".scenarios", "must be a list (measured is true)")
        seen = set()
        for s_index, scenario in enumerate(scenarios):
            s_field = "%s.scenarios[%d]" % (field, s_index)
            _need(isinstance(scenario, dict) and isinstance(scenario.get("name"), str) and scenario["name"],
                  s_field + ".name", "must be the scenario's name")
            _need(scenario["name"] not in seen, s_field + ".name", "%r appears twice in %s" % (scenario["name"], name))
            seen.add(scenario["name"])
            reps = scenario.get("repetitions")
            _need(isinstance(reps, list), s_field + ".repetitions", "must be a list (one entry per repetition)")
            for r_index, rep in enumerate(reps):
                _check_repetition(rep, "%s.repetitions[%d]" % (s_field, r_index))
    meta = results.get("metrics_meta", {})
    _need(isinstance(meta, dict), "metrics_meta", "must be an object: metric name -> {title, unit, ...}")


# ---------------------------------------------------------------------------------------------------- model


def _unit_of(name, meta):
    unit = meta.get("unit")
    if unit:
        return unit
    if name.endswith("_ms"):
        return "ms"
    if name.endswith("_s"):
        return "s"
    return ""


def _metric_kind(name, values, meta):
    """``scalar`` (statistics and a panel), ``bool`` (counted) or ``detail`` (shown as it is)."""
    present = [v for v in values if v is not None]
    if meta.get("unit") == "bool" or (present and all(isinstance(v, bool) for v in present)):
        return "bool"
    if any(isinstance(v, (dict, list, str)) for v in present) or meta.get("panel") is False:
        return "detail"
    if not meta and not (name.endswith("_ms") or name.endswith("_s")):
        return "detail"  # counters such as samples or rate_hz: shown, but no panel of their own
    return "scalar"


def _censor_at(name, rep, meta, unit, settings):
    """The timeout a null value did not finish within, in the metric's unit; None: not applicable."""
    censor_ms = meta.get("censor_at_ms")
    if censor_ms is None and rep.get("healed") is False and name.startswith("heal"):
        timeout_s = settings.get("scenario_timeout_s")
        censor_ms = timeout_s * 1000.0 if _is_number(timeout_s) else None
    if censor_ms is None:
        return None
    return censor_ms / 1000.0 if unit == "s" else float(censor_ms)


def _tick_window(environment):
    ticktime = environment.get("net_ticktime_s")
    intensity = environment.get("net_tickintensity") or 4
    if not _is_number(ticktime) or not _is_number(intensity) or intensity <= 0:
        return None
    return (ticktime - ticktime / float(intensity)) * 1000.0, (ticktime + ticktime / float(intensity)) * 1000.0


class _Model:
    """results.json read once: targets, scenarios in run order, one summary per (target, scenario, metric)."""

    def __init__(self, results):
        self.results = results
        self.settings = results.get("settings") or {}
        self.meta = results.get("metrics_meta") or {}
        self.targets = results["targets"]
        self.colour = dict((t["name"], TARGET_COLOURS[i % len(TARGET_COLOURS)]) for i, t in enumerate(self.targets))
        self.measured = [t for t in self.targets if t["measured"]]
        order = list(self.settings.get("scenarios") or [])
        for target in self.measured:
            for scenario in target["scenarios"]:
                if scenario["name"] not in order:
                    order.append(scenario["name"])
        self.scenario_names = [n for n in order if any(self.scenario(t, n) for t in self.measured)]
        self.not_run = [n for n in order if n not in self.scenario_names]
        self.summaries = {}
        for target in self.measured:
            for scenario in target["scenarios"]:
                self._summarize(target, scenario)

    def scenario(self, target, name):
        for scenario in target.get("scenarios") or []:
            if scenario["name"] == name:
                return scenario
        return None

    def metric_meta(self, name):
        meta = self.meta.get(name)
        return meta if isinstance(meta, dict) else {}

    def metric_names(self, scenario_name):
        names = []
        for target in self.measured:
            scenario = self.scenario(target, scenario_name)
            for rep in (scenario or {}).get("repetitions", []):
                for name in rep.get("metrics", {}):
                    if name not in names:
                        names.append(name)
        return names

    def metric_kind(self, scenario_name, name):
        values = []
        for target in self.measured:
            for rep in (self.scenario(target, scenario_name) or {}).get("repetitions", []):
                values.append(rep.get("metrics", {}).get(name))
        return _metric_kind(name, values, self.metric_meta(name))

    def _summarize(self, target, scenario):
        for name in self.metric_names(scenario["name"]):
            if self.metric_kind(scenario["name"], name) != "scalar":
                continue
            meta = self.metric_meta(name)
            unit = _unit_of(name, meta)
            values, missing = [], 0
            censor_at = _censor_at(name, {}, meta, unit, self.settings)
            for rep in scenario["repetitions"]:
                metrics = rep.get("metrics", {})
                if name not in metrics:
                    continue
                value = metrics[name]
                if value is None:
                    limit = _censor_at(name, rep, meta, unit, self.settings)
                    if limit is None:
                        missing += 1
                        continue
                    censor_at = limit if censor_at is None else max(censor_at, limit)
                values.append(value)
            field = "targets[%s].scenarios[%s].metrics.%s" % (target["name"], scenario["name"], name)
            try:
                summary = summarize(values, censor_at)
            except ValueError as exc:
                raise ResultsError("%s: %s" % (field, exc))
            summary["missing"] = missing
            summary["unit"] = unit
            self.summaries[(target["name"], scenario["name"], name)] = summary

    def summary(self, target_name, scenario_name, metric):
        return self.summaries.get((target_name, scenario_name, metric))

    def title(self, metric):
        title = self.metric_meta(metric).get("title")
        if title:
            return title
        for suffix in ("_ms", "_s"):
            if metric.endswith(suffix):
                return "%s (%s)" % (metric[:-len(suffix)].replace("_", " "), suffix[1:])
        return metric.replace("_", " ")

    def scenario_title(self, name):
        for target in self.measured:
            scenario = self.scenario(target, name)
            if scenario and scenario.get("title"):
                return scenario["title"]
        return SCENARIO_TITLES.get(name, name.replace("_", " "))

    def not_healed(self):
        """(target, scenario, runs that did not heal by themselves, K) for every such scenario."""
        rows = []
        for target in self.measured:
            for scenario in target["scenarios"]:
                reps = scenario["repetitions"]
                failed = [r for r in reps if r.get("metrics", {}).get("heals_by_itself") is False
                          or ("heals_by_itself" not in r.get("metrics", {}) and r.get("healed") is False)]
                if failed:
                    rows.append((target, scenario, failed, len(reps)))
        return rows

    def platform_note(self, target):
        platform = (target.get("environment") or {}).get("platform")
        if platform:
            return platform
        return "lab: systemd-nspawn hosts on one machine" if target["kind"] == "vm" else "Kubernetes cluster"


# ---------------------------------------------------------------------------------------------------- blocks
# A block is a tuple: ("h1"|"h2"|"h3", text, anchor), ("p", text, css class), ("ul", [text]), ("table", headers,
# rows, css class) with cells that are text or a list of lines, ("figures", [figure]) where a figure is a dict
# (svg, caption, attrs), ("timeline", figure).


def _cell_summary(summary, unit):
    if summary is None or not summary["k"]:
        return "n/a"
    median = format_bound(summary["median"], unit)
    if summary["min"] == summary["max"]:
        text = "%s in every run (K=%d)" % (median, summary["k"])
    else:
        spread = u"%s\u2013%s" % (format_bound(summary["min"], unit), format_bound(summary["max"], unit))
        text = "%s (%s, K=%d)" % (median, spread, summary["k"])
    if summary["censored"]:
        text += ", %d of %d did not finish" % (summary["censored"], summary["k"])
    return text


def _metric_line(model, target, scenario_name, metric, label):
    summary = model.summary(target["name"], scenario_name, metric)
    if summary is None:
        return None
    return "%s: %s %s" % (target["name"], label, _cell_summary(summary, summary["unit"]))


def _measured_cell(model, kind, row):
    targets = [t for t in model.measured if t["kind"] == kind]
    if not targets:
        reasons = sorted(set(t.get("reason") or "not measured" for t in model.targets if t["kind"] == kind))
        return [r if r.startswith("not measured") else "not measured: %s" % r for r in reasons] or [
            "not measured: no %s target in this run" % ("Kubernetes" if kind == "kubernetes" else "VM")]
    lines = []
    for target in targets:
        found = [_metric_line(model, target, s, m, label) for s, m, label in row["metrics"]]
        found = [line for line in found if line]
        if found:
            lines.extend(found)
        else:
            lines.append("%s: not measured: %s not run" % (
                target["name"], " / ".join(sorted(set(s for s, _m, _l in row["metrics"])))))
    return lines


def _heal_check(model):
    partitions = [n for n in model.scenario_names if n.startswith("partition")]
    if not partitions:
        return ["No partition scenario ran: whether each strategy heals by itself was not tested."]
    lines = []
    failed = {}
    for target, scenario, reps, k in model.not_healed():
        if scenario["name"].startswith("partition"):
            failed.setdefault(target["name"], []).append("%s %d of %d" % (scenario["name"], len(reps), k))
    for target in model.measured:
        strategy = (target.get("environment") or {}).get("strategy") or target["name"]
        ran = [n for n in partitions if model.scenario(target, n)]
        if not ran:
            continue
        if target["name"] in failed:
            lines.append("%s (%s) did NOT heal by itself: %s" % (target["name"], strategy,
                                                                 ", ".join(failed[target["name"]])))
        else:
            lines.append("%s (%s) healed by itself after every partition run" % (target["name"], strategy))
    return lines


def _comparisons(model, scenario_name, metric, left, right):
    lines = []
    for a in left:
        for b in right:
            if a is b:
                continue
            sa = model.summary(a["name"], scenario_name, metric)
            sb = model.summary(b["name"], scenario_name, metric)
            if sa is None or sb is None:
                continue
            lines.append(compare(a["name"], sa, b["name"], sb, sa["unit"]))
    return lines


def _pairs(items):
    return [(items[i], items[j]) for i in range(len(items)) for j in range(i + 1, len(items))]


def _detection_check(model):
    """The tick window each target's settings predict for a silent fault, once per distinct setting."""
    by_text = {}
    for target in model.measured:
        window = _tick_window(target.get("environment") or {})
        if window:
            text = "ticks notice a silent fault after %s\u2013%s (net_ticktime %s s, intensity %s)" % (
                format_value(window[0]), format_value(window[1]), target["environment"]["net_ticktime_s"],
                target["environment"].get("net_tickintensity") or 4)
            by_text.setdefault(text, []).append(target["name"])
    if len(by_text) == 1 and len(list(by_text.values())[0]) == len(model.measured) > 1:
        return ["every target: %s" % list(by_text)[0]]
    return ["%s: %s" % (", ".join(names), text) for text, names in sorted(by_text.items())]


def _decision_table(model):
    native = [t for t in model.measured if t["kind"] == "vm"]
    kube = [t for t in model.measured if t["kind"] == "kubernetes"]
    rows = []
    for row in DECISION_ROWS:
        check = [row["check"]] if row["check"] else _heal_check(model)
        if row["aspect"] == "Debugging":
            check += _detection_check(model)
        for scenario_name, metric, label in row["metrics"]:
            for result in _comparisons(model, scenario_name, metric, native, kube):
                check.append("%s: %s" % (label, result["text"]))
        rows.append([row["aspect"], row["native"], row["kubernetes"], _measured_cell(model, "vm", row),
                     _measured_cell(model, "kubernetes", row), check])
    return ("table", ["", "seed: native", "seed: Kubernetes", "measured: native (VM targets)",
                      "measured: Kubernetes", "checked"], rows, "decision")


def _answer(model):
    native = [t for t in model.measured if t["kind"] == "vm"]
    kube = [t for t in model.measured if t["kind"] == "kubernetes"]
    blocks = []
    if not kube:
        reasons = sorted(set(t.get("reason") or "not measured" for t in model.targets
                             if t["kind"] == "kubernetes" and not t["measured"]))
        reason = "; ".join(reasons) or "not measured: no Kubernetes target in this run"
        blocks.append(("p", "Kubernetes: %s. This run cannot answer the question by itself: every figure below "
                            "is from native distribution, and none is a Kubernetes figure." % reason, "answer"))
    if native:
        platforms = sorted(set(model.platform_note(t) for t in native))
        blocks.append(("p", "Native distribution: %d target%s measured (%s). Where: %s." % (
            len(native), "" if len(native) == 1 else "s",
            ", ".join("%s with strategy %s" % (t["name"], (t.get("environment") or {}).get("strategy") or "?")
                      for t in native),
            "; ".join(platforms)), "answer"))
        if any("nspawn" in p or p.startswith("lab") for p in platforms):
            blocks.append(("p", "The lab's hosts are systemd-nspawn containers on one machine, joined by a local "
                                "bridge: they share one kernel and its CPUs, so network times are those of a "
                                "local bridge and every time carries the machine's load. The figures compare "
                                "strategies and settings with each other; they are not those of separate VMs.",
                           "caveat"))
    if native and kube:
        counts = {"native": 0, "kubernetes": 0, "not_distinguishable": 0}
        ks = set()
        for row in DECISION_ROWS:
            for scenario_name, metric, _label in row["metrics"]:
                lower_is_better = model.metric_meta(metric).get("lower_is_better", True)
                for result in _comparisons(model, scenario_name, metric, native, kube):
                    if result["verdict"] == "lower":
                        lower_kind = next(t["kind"] for t in model.measured if t["name"] == result["lower"])
                        native_better = (lower_kind == "vm") == bool(lower_is_better)
                        counts["native" if native_better else "kubernetes"] += 1
                    elif result["verdict"] == "not_distinguishable":
                        counts["not_distinguishable"] += 1
                for target in native + kube:
                    summary = model.summary(target["name"], scenario_name, metric)
                    if summary:
                        ks.add(summary["k"])
        total = sum(counts.values())
        blocks.append(("p", "Of %d native-vs-Kubernetes comparisons in the table below, native distribution was "
                            "better in %d and Kubernetes in %d (shorter times, more members, more throughput); %d "
                            "were not distinguishable at K=%s." % (
                                total, counts["native"], counts["kubernetes"], counts["not_distinguishable"],
                                "/".join(str(k) for k in sorted(ks)) or "?"), "answer"))
    heal = [line for line in _heal_check(model) if "did NOT heal" in line]
    if heal:
        blocks.append(("ul", heal))
    return blocks


def _environment_table(model):
    """Settings of every target that has any; a target without them is named below the table instead."""
    targets = [t for t in model.targets if t["measured"] or t.get("environment")]
    keys = []
    for target in targets:
        for key in (target.get("environment") or {}):
            if key not in keys:
                keys.append(key)
    known = [k for k, _label in ENVIRONMENT_LABELS]
    ordered = [k for k in known if k in keys or k == "tick_window"] + sorted(k for k in keys if k not in known)
    labels = dict(ENVIRONMENT_LABELS)
    rows = []
    for key in ordered:
        cells = [labels.get(key, key.replace("_", " "))]
        for target in targets:
            environment = target.get("environment") or {}
            if key == "tick_window":
                window = _tick_window(environment)
                value = u"%s\u2013%s" % (format_value(window[0]), format_value(window[1])) if window else None
            else:
                value = environment.get(key)
            cells.append(_format_env(key, value))
        if any(c != "\u2014" for c in cells[1:]):
            rows.append(cells)
    observer = ["observer (interval / resolution / jitter p99)"]
    for target in targets:
        obs = target.get("observer") or {}
        if obs:
            observer.append("%s / %s / %s" % (_format_env("x_ms", obs.get("interval_ms")),
                                              _format_env("x_ms", obs.get("resolution_ms")),
                                              _format_env("x_ms", obs.get("jitter_p99_ms"))))
        else:
            observer.append("\u2014")
    rows.append(observer)
    blocks = [("table", ["setting"] + [t["name"] for t in targets], rows, "environment")]
    for target in model.targets:
        if target not in targets:
            blocks.append(("p", "%s (a %s target): %s" % (
                target["name"], "Kubernetes" if target["kind"] == "kubernetes" else "VM",
                target.get("reason") or "not measured"), "muted"))
    return blocks


def _format_env(key, value):
    if value is None or value == "":
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _is_number(value) and key.endswith("_ms"):
        return format_value(value, "ms")
    if _is_number(value) and key.endswith("_s"):
        return "%s s" % value
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "%s" % value


def _raw_text(value, unit, censor_at):
    if value is None:
        return format_value(censor_at, unit, above=True) if censor_at is not None else "n/a"
    return format_value(value, unit)


def _stats_rows(model, scenario_name):
    rows = []
    for metric in model.metric_names(scenario_name):
        if model.metric_kind(scenario_name, metric) != "scalar":
            continue
        for target in model.measured:
            summary = model.summary(target["name"], scenario_name, metric)
            if summary is None:
                continue
            unit = summary["unit"]
            raw = [_raw_text(v, unit, summary["censor_at"]) for v in summary["values"]]
            if summary["missing"]:
                raw.append("(%d n/a)" % summary["missing"])
            k = summary["k"]
            if k:
                spread = u"%s\u2013%s (covers the median %s)" % (
                    format_bound(summary["min"], unit), format_bound(summary["max"], unit),
                    format_coverage(summary["range_coverage"]))
                ci = summary["ci95"]
                ci_text = (u"x(%d)\u2013x(%d): %s\u2013%s (%s)" % (
                    ci["low_rank"], ci["high_rank"], format_bound(ci["low"], unit), format_bound(ci["high"], unit),
                    format_coverage(ci["coverage"])) if ci else "none at K=%d" % k)
                p95 = format_bound(summary["p95"], unit) if summary["p95"] else "n/a (K < 20)"
            else:
                spread, ci_text, p95 = "n/a", "n/a", "n/a"
            censored = ("%d of %d (> %s)" % (summary["censored"], k, format_value(summary["censor_at"], unit))
                        if summary["censored"] else "0")
            rows.append([model.title(metric), target["name"], str(k), ", ".join(raw),
                         format_bound(summary["median"], unit), spread, ci_text, p95, censored])
    return rows


def _format_detail(name, value):
    unit = _unit_of(name, {})
    if isinstance(value, dict):
        return ", ".join("%s %s" % (k, _format_detail(name, v)) for k, v in sorted(value.items()))
    if isinstance(value, list):
        return "[%s]" % ", ".join(_format_detail(name, v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _is_number(value) and unit:
        return format_value(value, unit)
    if value is None:
        return "n/a"
    return "%s" % value


def _detail_rows(model, scenario_name):
    rows = []
    for target in model.measured:
        scenario = model.scenario(target, scenario_name)
        if not scenario:
            continue
        reps = scenario["repetitions"]
        if any(r.get("baseline_ms") for r in reps):
            rows.append([target["name"], "baseline restored before each run in",
                         ", ".join(_format_detail("baseline_ms", r.get("baseline_ms")) for r in reps)])
        for metric in model.metric_names(scenario_name):
            kind = model.metric_kind(scenario_name, metric)
            if kind == "scalar":
                continue
            runs = [(r.get("index", i + 1), r["metrics"][metric]) for i, r in enumerate(reps)
                    if metric in r.get("metrics", {})]
            texts = [_format_detail(metric, value) for _index, value in runs]
            if kind == "bool":
                yes = sum(1 for _index, value in runs if value is True)
                cell = "%d of %d yes (%s)" % (yes, len(runs), ", ".join(texts))
            elif len(set(texts)) == 1:
                cell = "%s in every run" % texts[0]
            else:
                cell = ["run %s: %s" % (index, text) for (index, _value), text in zip(runs, texts)]
            rows.append([target["name"], model.title(metric), cell])
    return rows


def _scenario_blocks(model, scenario_name, charts):
    anchor = "scenario-%s" % _slug(scenario_name)
    blocks = [("h2", "%s (%s)" % (model.scenario_title(scenario_name), scenario_name), anchor)]
    fault = None
    for target in model.measured:
        scenario = model.scenario(target, scenario_name)
        if scenario and scenario.get("fault"):
            fault = scenario["fault"]
            break
    if fault:
        bits = [fault.get("mechanism") or fault.get("kind") or ""]
        if fault.get("expected_detection"):
            bits.append("expected detection: %s" % fault["expected_detection"])
        blocks.append(("p", "Fault: %s." % "; ".join(b for b in bits if b), "fault"))
    missing = [t["name"] for t in model.measured if not model.scenario(t, scenario_name)]
    if missing:
        blocks.append(("p", "Not run on %s." % ", ".join(missing), "muted"))
    if charts:
        timeline = _timeline_figure(model, scenario_name)
        if timeline:
            blocks.append(("timeline", timeline))
        panels = [_panel_figure(model, scenario_name, metric) for metric in model.metric_names(scenario_name)
                  if model.metric_kind(scenario_name, metric) == "scalar"]
        panels = [p for p in panels if p]
        if panels:
            blocks.append(("figures", panels))
    rows = _stats_rows(model, scenario_name)
    if rows:
        blocks.append(("table", ["metric", "target", "K", "raw values (run 1, 2, ...)", "median", "min\u2013max",
                                 "95 % interval", "p95", "did not finish"], rows, "stats"))
    lines = []
    for metric in model.metric_names(scenario_name):
        if model.metric_kind(scenario_name, metric) != "scalar":
            continue
        for a, b in _pairs(model.measured):
            for result in _comparisons(model, scenario_name, metric, [a], [b]):
                better = "" if model.metric_meta(metric).get("lower_is_better", True) else " (higher is better here)"
                lines.append("%s: %s%s" % (model.title(metric), result["text"], better))
    if lines:
        blocks.append(("h3", "Comparisons", None))
        blocks.append(("ul", lines))
    details = _detail_rows(model, scenario_name)
    if details:
        blocks.append(("h3", "Details", None))
        blocks.append(("table", ["target", "what", "value"], details, "details"))
    return blocks


def _method_blocks(model):
    ks = sorted(set(s["k"] for s in model.summaries.values() if s["k"]))
    rows = []
    for k in ks:
        interval = median_interval(k)
        rows.append(["K=%d" % k, format_coverage(range_coverage(k)),
                     (u"x(%d)\u2013x(%d), %s" % (interval[0], interval[1], format_coverage(interval[2]))
                      if interval else "none exists")])
    blocks = [("h2", "How to read the numbers", "method"),
              ("p", "Each scenario ran K times from a full mesh with every node up (the time to restore it is in "
                    "each scenario's details). With so few runs the report gives every raw value, the median and "
                    "the range [min, max], and how often such a range contains the true median: "
                    "1 - 2/2^K, whatever the distribution. A 95 % interval of order statistics exists only from "
                    "K=6 on, and p95 only from K=20 on (below that it is the max). Runs that did not finish "
                    "within the timeout are drawn and counted as \"> timeout\", never dropped; a median is "
                    "\"> timeout\" when more than half did not finish. Two targets are called different only when "
                    "their intervals do not overlap; otherwise the report says \"not distinguishable\". Latency "
                    "percentiles are taken within each run, then their median across runs (never an average of "
                    "percentiles).", None)]
    if rows:
        blocks.append(("table", ["K in this report", "[min, max] covers the median", "narrowest 95 % interval"],
                       rows, "method"))
    return blocks


def build_document(results, charts=True):
    check_results(results)
    model = _Model(results)
    tool = results.get("tool") or {}
    settings = model.settings
    sub = ["%s %s" % (tool.get("name") or "beamops.cluster", tool.get("version") or "")]
    if results.get("started_utc"):
        sub.append("run started %s" % results["started_utc"])
    if _is_number(results.get("duration_s")):
        sub.append("took %s" % format_value(results["duration_s"], "s"))
    if settings.get("repetitions"):
        sub.append("K=%s repetitions per scenario" % settings["repetitions"])
    if settings.get("short"):
        sub.append("short run")
    blocks = [("h1", "Native distribution or Kubernetes?", "top"),
              ("p", " \u00b7 ".join(s.strip() for s in sub), "sub"),
              ("nav", [("summary", "Answer"), ("healing", "Healing"), ("environment", "Environment")] +
               [("scenario-%s" % _slug(n), n) for n in model.scenario_names] + [("method", "Method")]),
              ("h2", "The answer, in numbers", "summary")]
    blocks.extend(_answer(model))
    blocks.append(_decision_table(model))
    blocks.append(("h2", "Which strategies did not heal by themselves", "healing"))
    not_healed = model.not_healed()
    if not_healed:
        rows = []
        for target, scenario, failed, k in not_healed:
            strategy = (target.get("environment") or {}).get("strategy") or "?"
            runs = ", ".join(str(r.get("index", "?")) for r in failed)
            rows.append([target["name"], strategy, scenario["name"], "%d of %d (run%s %s)" % (
                len(failed), k, "" if len(failed) == 1 else "s", runs)])
        blocks.append(("table", ["target", "strategy", "scenario", "did not heal by itself"], rows, "healing"))
    else:
        blocks.append(("p", "Every measured strategy healed by itself in every run." if model.measured
                       else "Nothing was measured.", None))
    blocks.extend(("p", line, None) for line in _heal_check(model) if "No partition" in line)
    blocks.append(("h2", "Environment", "environment"))
    blocks.extend(_environment_table(model))
    if model.not_run:
        blocks.append(("p", "Scenarios asked for but not run on any target: %s." % ", ".join(model.not_run), "muted"))
    for name in model.scenario_names:
        blocks.extend(_scenario_blocks(model, name, charts))
    blocks.extend(_method_blocks(model))
    return blocks


# ---------------------------------------------------------------------------------------------------- charts


def _slug(text):
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def _matplotlib():
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ResultsError("charts: matplotlib is not installed (%s): pip install -r requirements.txt" % exc)
    return matplotlib, Figure, FigureCanvasAgg


RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": SVG_HASHSALT,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial"],
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#8a939e",
    "axes.labelcolor": "#333a44",
    "xtick.color": "#333a44",
    "ytick.color": "#333a44",
    "grid.color": "#e3e7ec",
    "path.simplify": False,
}


def _svg(figure, prefix, label):
    """The figure as SVG text ready to inline: no XML prolog, no metadata, ids made unique on the page."""
    matplotlib, _figure, _canvas = _matplotlib()
    buffer = io.StringIO()
    with matplotlib.rc_context(RC):
        figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    ids = re.findall(r'\bid="([^"]+)"', text)
    for ident in sorted(set(ids), key=len, reverse=True):
        text = text.replace('id="%s"' % ident, 'id="%s-%s"' % (prefix, ident))
        text = text.replace('#%s"' % ident, '#%s-%s"' % (prefix, ident))
        text = text.replace('#%s)' % ident, '#%s-%s)' % (prefix, ident))
    return text.replace("<svg ", '<svg role="img" aria-label="%s" ' % html.escape(label, quote=True), 1).strip()


def _new_figure(width, height):
    matplotlib, Figure, FigureCanvasAgg = _matplotlib()
    with matplotlib.rc_context(RC):
        figure = Figure(figsize=(width, height))
        FigureCanvasAgg(figure)
    return matplotlib, figure


def _timeline_figure(model, scenario_name):
    rows = []
    for target in model.measured:
        scenario = model.scenario(target, scenario_name)
        reps = [r for r in (scenario or {}).get("repetitions", []) if r.get("timeline")]
        if reps:
            rows.append((target, reps))
    if not rows:
        return None
    matplotlib, figure = _new_figure(10.5, 0.9 + 1.55 * len(rows))
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator
    windows_count = 0
    with matplotlib.rc_context(RC):
        axes = figure.subplots(len(rows), 1, sharex=True, squeeze=False)[:, 0]
        for ax, (target, reps) in zip(axes, rows):
            slug = _slug(target["name"])
            colour = model.colour[target["name"]]
            expected = (target.get("environment") or {}).get("nodes")
            top = expected if _is_number(expected) else 0
            for rep in reps:
                timeline = rep["timeline"]
                t = timeline["t"]
                members = [float("nan") if m is None else m for m in timeline["members"]]
                top = max([top] + [m for m in members if not math.isnan(m)])
                ax.step(t, members, where="post", color=colour, alpha=0.8, linewidth=1.3,
                        gid="timeline-%s-run%s" % (slug, rep.get("index", "")))
                end_t = t[-1] if t else 0
                for w_index, window in enumerate(rep.get("fault_windows") or []):
                    end = window.get("end")
                    ax.axvspan(window["start"], end if end is not None else end_t, color=FAULT_COLOUR, alpha=0.10,
                               linewidth=0, gid="fault-%s-run%s-%d" % (slug, rep.get("index", ""), w_index))
                    windows_count += 1
            if _is_number(expected):
                ax.axhline(expected, color="#6b7480", linestyle=":", linewidth=1)
            ax.set_ylim(-0.3, top + 0.7)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("members")
            ax.grid(True, axis="y", linewidth=0.6)
            ax.set_title("%s \u2014 %d run%s" % (target["name"], len(reps), "" if len(reps) == 1 else "s"),
                         loc="left", fontsize=9.5, color="#333a44")
        axes[-1].set_xlabel("seconds since the run started")
        handles = [Line2D([0], [0], color="#555", linewidth=1.3, label="largest group of connected nodes"),
                   Patch(color=FAULT_COLOUR, alpha=0.25, label="fault window (one band per run)"),
                   Line2D([0], [0], color="#6b7480", linestyle=":", label="all nodes")]
        axes[0].legend(handles=handles, loc="lower right", fontsize=8, frameon=False, ncol=3,
                       bbox_to_anchor=(1.0, 1.02))
        figure.tight_layout()
    prefix = "tl-%s" % _slug(scenario_name)
    label = "members over time for %s" % scenario_name
    return {"svg": _svg(figure, prefix, label),
            "caption": "Members seen by the observer in every run of %s; shaded: the fault windows." % scenario_name,
            "attrs": {"class": "timeline", "data-scenario": scenario_name, "data-targets": len(rows),
                      "data-fault-windows": windows_count}}


def _display_scale(unit, values):
    """Times above 2 s are drawn in seconds; everything else in its own unit."""
    if unit == "ms" and values and max(values) >= 2000:
        return 1000.0, "s"
    return 1.0, unit


def _panel_figure(model, scenario_name, metric):
    entries = []
    for target in model.measured:
        summary = model.summary(target["name"], scenario_name, metric)
        if summary and summary["k"]:
            entries.append((target, summary))
    if not entries:
        return None
    unit = entries[0][1]["unit"]
    every = [v for _t, s in entries for v in s["values"] if v is not None]
    every += [s["censor_at"] for _t, s in entries if s["censored"]]
    scale, shown_unit = _display_scale(unit, every)
    matplotlib, figure = _new_figure(max(2.9, 1.1 + 1.0 * len(entries)), 2.55)
    from matplotlib.ticker import MaxNLocator
    with matplotlib.rc_context(RC):
        ax = figure.add_subplot(1, 1, 1)
        points = 0
        top = 0.0
        for i, (target, summary) in enumerate(entries):
            slug = _slug(target["name"])
            colour = model.colour[target["name"]]
            k = summary["k"]
            width = min(0.09, 0.4 / max(k, 1))
            xs = [i + (j - (k - 1) / 2.0) * width for j in range(k)]
            known = [(x, v / scale) for x, v in zip(xs, summary["values"]) if v is not None]
            cut = [x for x, v in zip(xs, summary["values"]) if v is None]
            low, high = summary["min"]["value"] / scale, summary["max"]["value"] / scale
            ax.plot([i, i], [low, high], color="#9aa3ad", linewidth=1.2, zorder=1, gid="range-%s" % slug)
            if known:
                ax.plot([p[0] for p in known], [p[1] for p in known], linestyle="none", marker="o", markersize=5,
                        color=colour, alpha=0.9, zorder=3, gid="dots-%s" % slug)
                top = max(top, max(p[1] for p in known))
            if cut:
                limit = summary["censor_at"] / scale
                ax.plot(cut, [limit] * len(cut), linestyle="none", marker="^", markersize=7, color=CENSORED_COLOUR,
                        zorder=4, gid="censored-%s" % slug)
                ax.annotate("> %s" % format_value(summary["censor_at"], unit), (i, limit), xytext=(0, 7),
                            textcoords="offset points", ha="center", fontsize=8, color=CENSORED_COLOUR)
                ax.axhline(limit, color=CENSORED_COLOUR, linestyle="--", linewidth=0.7, alpha=0.6, zorder=0)
                top = max(top, limit * 1.12)
            median = summary["median"]
            ax.plot([i - 0.26, i + 0.26], [median["value"] / scale] * 2, color="#1d2430", linewidth=2.2, zorder=5,
                    linestyle="--" if median["above"] else "-", gid="median-%s" % slug)
            points += k
        ax.set_xticks(range(len(entries)))
        ax.set_xticklabels([t["name"] for t, _s in entries], rotation=15 if len(entries) > 2 else 0)
        ax.set_xlim(-0.6, len(entries) - 0.4)
        ax.set_ylim(0, (top or 1.0) * 1.15)
        ax.set_ylabel(shown_unit or "value")
        if unit == "count":
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, axis="y", linewidth=0.6)
        ax.set_title(_wrap(model.title(metric), 38), loc="left")
        figure.tight_layout()
    prefix = "p-%s-%s" % (_slug(scenario_name), _slug(metric))
    return {"svg": _svg(figure, prefix, "%s, %s: every run as a dot" % (scenario_name, metric)),
            "caption": "%s: dots are runs, the bar is the median, the line is min\u2013max%s." % (
                metric, "; \u25b2 did not finish" if any(s["censored"] for _t, s in entries) else ""),
            "attrs": {"class": "panel", "data-scenario": scenario_name, "data-metric": metric,
                      "data-points": points, "data-targets": ",".join(t["name"] for t, _s in entries),
                      "data-censored": sum(s["censored"] for _t, s in entries)}}


def _wrap(text, width):
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = (line + " " + word).strip()
    lines.append(line)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- render


def _md_escape(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_cell(cell):
    if isinstance(cell, list):
        return "<br>".join(_md_escape(c) for c in cell)
    return _md_escape(cell)


def render_markdown(blocks):
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("%s %s" % ("#" * int(kind[1]), block[1]))
        elif kind == "p":
            text = block[1]
            out.append("> %s" % text if block[2] in ("answer", "caveat") else text)
        elif kind == "ul":
            out.append("\n".join("- %s" % item for item in block[1]))
        elif kind == "nav":
            out.append("Charts (timelines, one panel per metric) are in report.html beside this file.")
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines = ["| %s |" % " | ".join(_md_escape(h) for h in headers),
                     "|%s|" % "|".join("---" for _h in headers)]
            lines.extend("| %s |" % " | ".join(_md_cell(c) for c in row) for row in rows)
            out.append("\n".join(lines))
        # timelines and panels exist only in the HTML page
    return "\n\n".join(out) + "\n"


CSS = """
:root{--fg:#1d2430;--muted:#5b6573;--line:#dde2e8;--panel:#f5f7f9;--accent:#1f5fa8;--bad:#b3261e}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);background:#fff;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:28px 32px 72px}
h1{font-size:30px;line-height:1.2;margin:0 0 4px}
h2{font-size:21px;margin:40px 0 10px;padding-top:12px;border-top:1px solid var(--line)}
h3{font-size:16px;margin:22px 0 6px}
p.sub{color:var(--muted);margin:0 0 14px}
p.answer{background:var(--panel);border-left:4px solid var(--accent);padding:10px 14px;margin:8px 0;border-radius:4px}
p.caveat{border-left:4px solid #c98a1b;background:#fdf8ee;padding:10px 14px;margin:8px 0;border-radius:4px}
p.fault{margin:4px 0 10px}
p.muted,figcaption{color:var(--muted)}
nav{display:flex;flex-wrap:wrap;gap:6px;margin:0 0 8px}
nav a{font-size:13px;color:var(--accent);text-decoration:none;border:1px solid var(--line);border-radius:12px;
padding:1px 10px}
nav a:hover{background:var(--panel)}
.scroll{overflow-x:auto;margin:8px 0 14px}
table{border-collapse:collapse;width:100%;font-size:13.5px}
th,td{border-bottom:1px solid var(--line);padding:6px 8px;text-align:left;vertical-align:top}
th{background:var(--panel);font-weight:600;white-space:nowrap}
table.decision td:first-child{font-weight:600;white-space:nowrap}
table.decision td:nth-child(2),table.decision td:nth-child(3){color:var(--muted);font-style:italic}
table.stats td{font-variant-numeric:tabular-nums}
table.stats td:nth-child(2),table.stats td:nth-child(3),table.stats td:nth-child(5),
table.stats td:nth-child(8),table.stats td:nth-child(9),table.details td:first-child,table.healing td{white-space:nowrap}
td .line{display:block}
td .line+.line{margin-top:3px}
.notmeasured{color:var(--muted);font-style:italic}
.bad{color:var(--bad);font-weight:600}
ul{margin:6px 0 12px;padding-left:22px}
li{margin:2px 0}
figure{margin:0;border:1px solid var(--line);border-radius:6px;padding:8px 8px 4px;background:#fff}
figure svg{display:block;width:100%;height:auto}
figcaption{font-size:12.5px;margin-top:2px}
figure.timeline{margin:10px 0 12px}
.panels{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:12px;margin:10px 0 12px}
"""


def _html_text(text):
    escaped = html.escape(str(text))
    return escaped.replace("did NOT heal", '<span class="bad">did NOT heal</span>')


def _html_line(text):
    escaped = _html_text(text)
    if escaped.startswith("not measured") or ": not measured" in escaped:
        return '<span class="notmeasured">%s</span>' % escaped
    return escaped


def _html_cell(cell):
    if isinstance(cell, list):
        return "".join('<span class="line">%s</span>' % _html_line(c) for c in cell)
    return _html_line(cell)


def _html_figure(figure):
    attrs = " ".join('%s="%s"' % (k, html.escape(str(v), quote=True)) for k, v in sorted(figure["attrs"].items()))
    return "<figure %s>%s<figcaption>%s</figcaption></figure>" % (attrs, figure["svg"],
                                                                  html.escape(figure["caption"]))


def _json_for_script(results):
    # "</" would end the script element early; "<!--" would start an HTML comment in it.
    text = json.dumps(results, sort_keys=True, indent=1, ensure_ascii=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def render_html(blocks, results):
    title = "beamops.cluster comparison"
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            anchor = ' id="%s"' % block[2] if block[2] else ""
            body.append("<%s%s>%s</%s>" % (kind, anchor, html.escape(block[1]), kind))
        elif kind == "p":
            css = ' class="%s"' % block[2] if block[2] else ""
            body.append("<p%s>%s</p>" % (css, _html_text(block[1])))
        elif kind == "ul":
            body.append("<ul>%s</ul>" % "".join("<li>%s</li>" % _html_text(i) for i in block[1]))
        elif kind == "nav":
            links = ['<a href="#%s">%s</a>' % (html.escape(a, quote=True), html.escape(t)) for a, t in block[1]]
            body.append("<nav>%s</nav>" % "".join(links))
        elif kind == "table":
            headers, rows, css = block[1], block[2], block[3]
            head = "".join("<th>%s</th>" % html.escape(h) for h in headers)
            lines = "".join("<tr>%s</tr>" % "".join("<td>%s</td>" % _html_cell(c) for c in row) for row in rows)
            body.append('<div class="scroll"><table class="%s"><thead><tr>%s</tr></thead><tbody>%s</tbody>'
                        '</table></div>' % (css, head, lines))
        elif kind == "timeline":
            body.append(_html_figure(block[1]))
        elif kind == "figures":
            body.append('<div class="panels">%s</div>' % "".join(_html_figure(f) for f in block[1]))
    # The policy makes the browser itself refuse any fetch the page might try (there should be none).
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>%s</title>" % html.escape(title),
        "<style>%s</style>" % CSS.strip(),
        "</head>",
        "<body>",
        "<main>",
        "\n".join(body),
        "</main>",
        '<script type="application/json" id="results-json">%s</script>' % _json_for_script(results),
        "</body>",
        "</html>",
        ""])


def write_report(results, out_dir):
    blocks = build_document(results)
    markdown = render_markdown(blocks)
    page = render_html(blocks, results)
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)
    paths = {"markdown": os.path.join(out_dir, "report.md"), "html": os.path.join(out_dir, "report.html")}
    staged = []
    try:
        for key, text in (("markdown", markdown), ("html", page)):
            handle, tmp = tempfile.mkstemp(prefix=".report-", dir=out_dir)
            staged.append((tmp, paths[key]))
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.chmod(tmp, 0o644)
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _final in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return paths


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="compare_report",
                                     description="Write report.md and report.html from a comparison's results.json")
    parser.add_argument("results", help="results.json written by the comparison run")
    parser.add_argument("out_dir", help="folder for report.md and report.html (made if missing)")
    args = parser.parse_args(argv)
    try:
        with open(args.results, encoding="utf-8") as stream:
            results = json.load(stream)
    except (OSError, ValueError) as exc:
        sys.stderr.write("compare_report: cannot read %s: %s\n" % (args.results, exc))
        return 2
    try:
        paths = write_report(results, args.out_dir)
    except ResultsError as exc:
        sys.stderr.write("compare_report: %s: %s\n" % (args.results, exc))
        return 2
    sys.stdout.write(json.dumps(paths, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
