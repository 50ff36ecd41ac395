# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of ``beamops.cluster.compare_run`` (one argument spec for the action plugin and the module's
documentation stub), what they become for the runner, and the files and summary a run returns. No Ansible import.

``ARGUMENT_SPEC``                       the Ansible argument spec.
``build(args) -> (targets, settings)``  ``compare_runner`` targets and settings from the validated options;
                                        ``CompareError`` naming the option and the fix.
``write_outputs(results, out_dir) -> {"results_json", "report_md", "report_html"}``
                                        results.json (0644, no cookie: refused by the report otherwise), report.md
                                        and report.html (``compare_report.write_report``).
``summary(results) -> [str]``           one line per target and scenario: the median of its main metric.
"""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os
import tempfile

from ansible_collections.beamops.cluster.plugins.module_utils import compare_report, compare_runner, compare_stats

ARGUMENT_SPEC = {
    "targets": {"type": "list", "elements": "dict", "required": True},
    "release": {"type": "dict", "default": {}, "options": {
        "name": {"type": "str"},
        "cookie": {"type": "str", "no_log": True},
        "src": {"type": "path"},
        "upgrade_src": {"type": "path"},
        "vars": {"type": "dict", "default": {}},
    }},
    "scenarios": {"type": "list", "elements": "str", "choices": list(compare_runner.SCENARIOS)},
    "repetitions": {"type": "int"},
    "short": {"type": "bool", "default": False},
    "timeout": {"type": "float", "default": 60.0},
    "observer_interval": {"type": "float", "default": 0.1},
    "out_dir": {"type": "path", "required": True},
    "journal_dir": {"type": "path"},
    "latency_rate_hz": {"type": "float", "default": 200.0},
    "latency_seconds": {"type": "float"},
    "throughput_seconds": {"type": "float"},
    "message_bytes": {"type": "int", "default": 1048576},
}

# The metric a summary line gives per scenario.
MAIN_METRIC = {"cold_start": "full_mesh_ms", "crash": "heal_ms", "freeze": "detection_ms",
               "partition_full_drop": "heal_ms", "partition_full_reject": "heal_ms", "partition_partial_drop": "heal_ms",
               "partition_partial_reject": "heal_ms", "rolling_deploy": "not_full_ms", "scale_out": "join_ms",
               "latency": "rtt_p50_ms", "throughput": "throughput_mib_s"}


def build(args):
    """(targets, settings) for the runner; every check that needs no host runs here."""
    out_dir = args["out_dir"]
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise compare_runner.CompareError("out_dir %s exists and is not a folder" % out_dir)
    release = dict(args.get("release") or {})
    for field in ("src", "upgrade_src"):
        if release.get(field) and not os.path.isfile(release[field]):
            raise compare_runner.CompareError("release.%s: %s is not a file on the controller" % (field, release[field]))
    for index, spec in enumerate(args["targets"]):
        if isinstance(spec, dict) and spec.get("cookie"):
            raise compare_runner.CompareError("targets[%d].cookie: give the cookie in release.cookie (no_log), not in a "
                                              "target, where it would show in the task's arguments" % index)
    settings = compare_runner.Settings(
        scenarios=args.get("scenarios"), repetitions=args.get("repetitions"), short=args.get("short", False),
        timeout=args.get("timeout", 60.0), observer_interval=args.get("observer_interval", 0.1),
        work_dir=out_dir, journal_dir=args.get("journal_dir"), latency_rate_hz=args.get("latency_rate_hz", 200.0),
        latency_seconds=args.get("latency_seconds"), throughput_seconds=args.get("throughput_seconds"),
        message_bytes=args.get("message_bytes", 1048576))
    targets = compare_runner.targets_from_specs(args["targets"], release)
    compare_runner.check_targets(targets, settings)
    return targets, settings


def write_outputs(results, out_dir):
    """results.json, report.md, report.html in out_dir; their paths."""
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir, 0o755)
    text = json.dumps(results, indent=1, sort_keys=True)
    compare_report.check_results(json.loads(text))  # refuses a cookie, before anything is written
    fd, tmp = tempfile.mkstemp(prefix=".results-", dir=out_dir)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    os.chmod(tmp, 0o644)
    path = os.path.join(out_dir, "results.json")
    os.rename(tmp, path)
    report = compare_report.write_report(results, out_dir)
    return {"results_json": path, "report_md": report["markdown"], "report_html": report["html"]}


def _metric_text(scenario, name, unit, censor_ms):
    values = [r["metrics"][name] for r in scenario["repetitions"] if name in r.get("metrics", {})]
    if censor_ms is None:
        values = [v for v in values if v is not None]  # n/a values: counted in the report, not here
    if not values:
        return None
    summary = compare_stats.summarize(values, censor_ms)
    median, low, high = (compare_stats.format_bound(summary[key], unit) for key in ("median", "min", "max"))
    return "median %s (range %s-%s, K=%d)" % (median, low, high, summary["k"])


def summary(results):
    """One line per target and scenario with the median of its main metric (and who did not heal by itself)."""
    lines = []
    meta = results.get("metrics_meta", {})
    timeout_ms = results.get("settings", {}).get("scenario_timeout_s", 60) * 1000.0
    for target in results["targets"]:
        if not target["measured"]:
            lines.append("%s: %s" % (target["name"], target["reason"]))
            continue
        for scenario in target["scenarios"]:
            name = MAIN_METRIC.get(scenario["name"])
            if not name:
                continue
            unit = meta.get(name, {}).get("unit", "ms")
            censor = meta.get(name, {}).get("censor_at_ms")
            if name.startswith("heal"):
                censor = timeout_ms
            text = _metric_text(scenario, name, unit, censor)
            line = "%s %s: %s %s" % (target["name"], scenario["name"], name, text or "n/a")
            selfless = [r["index"] for r in scenario["repetitions"] if r.get("metrics", {}).get("heals_by_itself") is False]
            if selfless:
                line += "; did not heal by itself in %d of %d runs" % (len(selfless), len(scenario["repetitions"]))
            lines.append(line)
    return lines
