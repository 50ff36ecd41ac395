"""The comparison report: markdown content, a self-contained page, and that page opened in headless Chromium.

The results dict is built here, not measured: it stands in for the comparison runner's results.json (two lab VM
targets, K=3 and K=5, one run that never healed, a Kubernetes target that was not measured). Everything after that
is real: matplotlib draws the charts and Debian's Chromium renders the page, driven through the DevTools protocol.
"""
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from ansible_collections.beamops.cluster.plugins.module_utils.compare_report import (
    ResultsError, build_document, write_report)
from ansible_collections.beamops.cluster.plugins.module_utils.compare_stats import run_percentiles

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUTPUT = os.path.join(REPO, "tests", "output")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT_S = 60
LAB = "lab: systemd-nspawn hosts on one machine (not Kubernetes)"


def _timeline(fault_at, fault_end, back_at, low, nodes=3, length=None):
    """10 Hz samples: every node, then `low` members from fault_at until back_at."""
    length = length or back_at + 1.5
    t, members = [], []
    for i in range(int(length * 10) + 1):
        now = round(i / 10.0, 1)
        t.append(now)
        members.append(low if fault_at <= now < back_at else nodes)
    return {"t": t, "members": members, "links": [3 if m == nodes else 1 for m in members]}


def _rep(index, metrics, healed=True, windows=(), timeline=None, baseline_ms=800):
    return {"index": index, "baseline_ms": baseline_ms, "healed": healed, "metrics": metrics,
            "fault_windows": [{"start": s, "end": e, "label": label} for s, e, label in windows],
            "timeline": timeline, "events": [{"t": w[0], "what": "fault applied"} for w in windows]}


def _crash(detections, heals):
    reps = []
    for index, (detection, heal) in enumerate(zip(detections, heals), 1):
        reps.append(_rep(index, {"detection_ms": detection,
                                 "detection_per_peer_ms": {"meshprobe@198.18.0.12": detection * 0.9,
                                                           "meshprobe@198.18.0.13": detection},
                                 "heal_ms": heal},
                         windows=[(1.0, 1.05, "kill -9 meshprobe@198.18.0.11")],
                         timeline=_timeline(1.0, 1.05, 1.0 + heal / 1000.0, 2)))
    return {"name": "crash", "title": "kill -9 of one node's BEAM",
            "fault": {"kind": "kill9", "mechanism": "SIGKILL of the BEAM (systemd restarts it)",
                      "expected_detection": "connection closed: immediate"},
            "repetitions": reps}


def _partition(detections, heals, timeout_s=60):
    reps = []
    for index, (detection, heal) in enumerate(zip(detections, heals), 1):
        lifted = 1.0 + detection / 1000.0 + 2.0
        healed = heal is not None
        back = lifted + (heal / 1000.0 if healed else timeout_s)
        reps.append(_rep(index, {"detection_ms": detection, "heal_ms": heal, "heals_by_itself": healed,
                                 "split": [["meshprobe@198.18.0.11", "meshprobe@198.18.0.12"],
                                           ["meshprobe@198.18.0.13"]]},
                         healed=healed, windows=[(1.0, lifted, "DROP between {.11,.12} and {.13}")],
                         timeline=_timeline(1.0 + detection / 1000.0, lifted, back, 2,
                                            length=min(back, lifted + timeout_s) + 1.0)))
    return {"name": "partition_full_drop", "title": "full partition, packets dropped",
            "fault": {"kind": "partition", "mechanism": "nftables DROP between the halves, ahead of established",
                      "expected_detection": "ticks: net_ticktime 10 s, 7.5-12.5 s"},
            "repetitions": reps}


def _rolling(not_full, fewest):
    reps = []
    for index, (not_full_ms, low) in enumerate(zip(not_full, fewest), 1):
        duration_s = not_full_ms * 3.1 / 1000.0
        reps.append(_rep(index, {"not_full_ms": not_full_ms, "fewest_members": low, "duration_ms": duration_s * 1000},
                         windows=[(1.0, 1.0 + duration_s, "rolling restart, one host at a time")],
                         timeline=_timeline(2.0, 1.0 + duration_s, 2.0 + not_full_ms / 1000.0, low,
                                            length=duration_s + 2.5)))
    return {"name": "rolling_deploy", "title": "rolling deploy", "fault": None, "repetitions": reps}


def _latency(seed, base_ms):
    rng = random.Random(seed)
    reps = []
    for index in range(1, 6):
        samples = [base_ms * (1 + rng.expovariate(4.0)) for _sample in range(2000)]
        samples[rng.randrange(2000)] = base_ms * 40  # one stall per run: open loop keeps it
        per_run = run_percentiles(samples)
        reps.append(_rep(index, {"rtt_p50_ms": per_run["p50"]["value"], "rtt_p95_ms": per_run["p95"]["value"],
                                 "rtt_p99_ms": per_run["p99"]["value"], "rtt_max_ms": per_run["max"]["value"],
                                 "samples": per_run["n"], "rate_hz": 200, "open_loop": True}, baseline_ms=0))
    return {"name": "latency", "title": "inter-node round trip", "fault": None, "repetitions": reps}


def _environment(strategy, interval_ms):
    return {"strategy": strategy, "strategy_interval_ms": interval_ms, "otp": "25.2.3", "release": "meshprobe 0.1.0",
            "net_ticktime_s": 10, "net_tickintensity": 4, "nodes": 3, "hosts": 3, "epmdless": False, "tls": False,
            "platform": LAB, "kubernetes_version": None, "cni": None, "dns": None}


CRASH_EPMD_DETECTION = [4.2, 3.9, 5.0, 4.4, 4.1]  # median 4.2 ms
CRASH_EPMD_HEAL = [2610.0, 2580.0, 2700.0, 2650.0, 2590.0]  # median 2.61 s
CRASH_GOSSIP_HEAL = [2600.0, 2800.0, 2500.0, 2750.0, 2640.0]  # overlaps epmd's range
PARTITION_GOSSIP_HEAL = [5400.0, None, 5100.0]  # run 2 never healed: "> 60 s"


def realistic_results():
    epmd = {"name": "vm-epmd", "kind": "vm", "measured": True, "reason": "",
            "environment": _environment("epmd", 5000),
            "observer": {"interval_ms": 100, "resolution_ms": 100, "jitter_p99_ms": 3.1},
            "scenarios": [_crash(CRASH_EPMD_DETECTION, CRASH_EPMD_HEAL),
                          _partition([9800.0, 10400.0, 11200.0], [1200.0, 900.0, 1500.0]),
                          _rolling([3100.0, 2900.0, 3400.0], [2, 2, 2]),
                          _latency(1, 0.21)]}
    gossip = {"name": "vm-gossip", "kind": "vm", "measured": True, "reason": "",
              "environment": _environment("gossip", 5000),
              "observer": {"interval_ms": 100, "resolution_ms": 100, "jitter_p99_ms": 2.8},
              "scenarios": [_crash([4.0, 4.6, 3.8, 4.9, 4.3], CRASH_GOSSIP_HEAL),
                            _partition([10100.0, 9900.0, 10700.0], PARTITION_GOSSIP_HEAL),
                            _rolling([5200.0, 4800.0, 6100.0], [1, 2, 1]),
                            _latency(2, 0.23)]}
    kube = {"name": "kubernetes", "kind": "kubernetes", "measured": False,
            "reason": "not measured: no cluster configured", "environment": {}, "scenarios": []}
    return {
        "schema": 1, "tool": {"name": "beamops.cluster", "version": "0.1.0"},
        "started_utc": "2026-12-02T10:00:00.000Z", "finished_utc": "2026-12-02T10:13:32.400Z", "duration_s": 812.4,
        "settings": {"repetitions": 5, "short": False, "observer_interval_ms": 100, "scenario_timeout_s": 60,
                     "scenarios": ["crash", "partition_full_drop", "rolling_deploy", "scale_out", "latency"]},
        "controller": {"hostname": "controller", "cpus": 2, "python": "3.11.7", "load_at_start": [0.5, 0.4, 0.3]},
        "targets": [epmd, gossip, kube],
        "metrics_meta": {
            "detection_ms": {"title": "time until every peer noticed", "unit": "ms", "censor_at_ms": None,
                             "lower_is_better": True},
            "heal_ms": {"title": "time until the mesh was whole again", "unit": "ms", "censor_at_ms": 60000,
                        "lower_is_better": True},
            "heals_by_itself": {"title": "healed without help", "unit": "bool"},
            "not_full_ms": {"title": "time the mesh was not full", "unit": "ms"},
            "fewest_members": {"title": "fewest members seen", "unit": "count", "lower_is_better": False},
            "duration_ms": {"title": "rolling deploy duration", "unit": "ms"},
            "rtt_p50_ms": {"title": "round trip p50", "unit": "ms"},
            "rtt_p95_ms": {"title": "round trip p95", "unit": "ms"},
            "rtt_p99_ms": {"title": "round trip p99", "unit": "ms"},
            "rtt_max_ms": {"title": "round trip max", "unit": "ms"},
        },
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("report"))
    results = realistic_results()
    paths = write_report(results, out)
    with open(paths["markdown"], encoding="utf-8") as stream:
        markdown = stream.read()
    with open(paths["html"], encoding="utf-8") as stream:
        page = stream.read()
    return {"paths": paths, "markdown": markdown, "html": page, "results": results, "out": out}


def _section(markdown, heading):
    start = markdown.index(heading)
    end = markdown.find("\n## ", start + len(heading))
    return markdown[start:end if end >= 0 else len(markdown)]


def _rows(section, prefix):
    return [line for line in section.splitlines() if line.startswith(prefix)]


def test_write_report_returns_both_paths(report):
    assert report["paths"] == {"markdown": os.path.join(report["out"], "report.md"),
                               "html": os.path.join(report["out"], "report.html")}
    assert sorted(os.listdir(report["out"])) == ["report.html", "report.md"]


def test_summary_answers_with_numbers_and_never_a_lab_figure_for_kubernetes(report):
    summary = _section(report["markdown"], "## The answer, in numbers")
    assert "Kubernetes: not measured: no cluster configured." in summary
    assert "none is a Kubernetes figure" in summary
    assert "systemd-nspawn" in summary and "one machine" in summary
    table = [line for line in summary.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split(" | ")]
    assert header[4] == "measured: Kubernetes"
    rows = dict((cells[0], cells) for cells in ([c.strip() for c in line.strip("|").split(" | ")]
                                                for line in table[1:]))
    assert set(rows) == {"Best for", "Latency", "Complexity", "Debugging", "Tooling"}
    for aspect, cells in rows.items():
        assert cells[4] == "not measured: no cluster configured", (aspect, cells[4])
    # The seed's adjectives stand beside measured numbers.
    assert rows["Latency"][1] == "Lower, direct node-to-node"
    assert "vm-epmd: round trip p50 " in rows["Latency"][3]
    assert "vm-epmd: kill -9 noticed 4.2 ms (3.9 ms\u20135.0 ms, K=5)" in rows["Debugging"][3]
    assert "vm-gossip: heal after a silent partition 5.40 s (5.10 s\u2013> 60.0 s, K=3), 1 of 3 did not finish" \
        in rows["Tooling"][3]
    assert "vm-gossip (gossip) did NOT heal by itself: partition_full_drop 1 of 3" in rows["Tooling"][5]
    assert "vm-epmd (epmd) healed by itself after every partition run" in rows["Tooling"][5]
    assert "not measured: cold_start / scale_out not run" in rows["Best for"][3]
    assert ("every target: ticks notice a silent fault after 7.50 s\u201312.5 s (net_ticktime 10 s, intensity 4)"
            in rows["Debugging"][5])


def test_a_measured_kubernetes_target_fills_only_its_own_column():
    """No Kubernetes API server runs here: the second target's figures are relabelled as a cluster's to check
    that the Kubernetes column and the native-vs-Kubernetes counts come from that target alone."""
    results = realistic_results()
    kube = results["targets"][1]
    kube.update(name="k8s-dns", kind="kubernetes")
    kube["environment"].update(platform="Kubernetes 1.33 (3 nodes)", strategy="kubernetes_dns",
                               kubernetes_version="1.33.2", cni="cilium 1.17", dns="CoreDNS 1.12, ttl 5")
    del results["targets"][2]
    for rep in [sc for sc in kube["scenarios"] if sc["name"] == "rolling_deploy"][0]["repetitions"]:
        rep["metrics"]["fewest_members"] = 1  # fewer members is worse: Kubernetes is lower, native is better
    markdown = __import__("ansible_collections.beamops.cluster.plugins.module_utils.compare_report",
                          fromlist=["render_markdown"]).render_markdown(build_document(results, charts=False))
    summary = _section(markdown, "## The answer, in numbers")
    assert "not measured" not in summary.split("| Best for")[0]
    rows = [line for line in summary.splitlines() if line.startswith("| Debugging")]
    cells = [c.strip() for c in rows[0].strip("|").split(" | ")]
    assert cells[3].startswith("vm-epmd: kill -9 noticed") and "k8s-dns" not in cells[3]
    assert cells[4].startswith("k8s-dns: kill -9 noticed 4.3 ms") and "vm-epmd" not in cells[4]
    assert "kill -9 noticed: not distinguishable at K=5" in cells[5]
    # Crash and partition detection overlap; rolling not_full, p50, p99 and partition heal are lower on the
    # native side, and it kept more members (higher is better there).
    assert ("Of 7 native-vs-Kubernetes comparisons in the table below, native distribution was better in 5 and "
            "Kubernetes in 0 (shorter times, more members, more throughput); 2 were not distinguishable at "
            "K=3/5.") in summary
    environment = _section(markdown, "## Environment")
    assert "| Kubernetes version | \u2014 | 1.33.2 |" in environment
    assert "| CNI | \u2014 | cilium 1.17 |" in environment


def test_nothing_measured_still_says_so(tmp_path):
    results = realistic_results()
    results["targets"] = [results["targets"][2]]
    paths = write_report(results, str(tmp_path))
    with open(paths["markdown"], encoding="utf-8") as stream:
        markdown = stream.read()
    assert "Kubernetes: not measured: no cluster configured." in markdown
    assert "| Latency | Lower, direct node-to-node | Higher, routed through load balancer | not measured: no VM " \
           "target in this run | not measured: no cluster configured |" in markdown
    assert "No partition scenario ran" in markdown


def test_statistics_tables_keep_every_raw_value_and_the_censored_run(report):
    crash = _section(report["markdown"], "## kill -9 of one node's BEAM (crash)")
    heal = "| time until the mesh was whole again "
    assert _rows(crash, heal + "| vm-epmd |") == [
        heal + "| vm-epmd | 5 | 2.61 s, 2.58 s, 2.70 s, 2.65 s, 2.59 s | 2.61 s | 2.58 s\u20132.70 s (covers the "
        "median 93.8 %) | none at K=5 | n/a (K < 20) | 0 |"]
    assert ("time until the mesh was whole again: not distinguishable at K=5: vm-epmd 2.61 s "
            "(2.58 s\u20132.70 s) and vm-gossip 2.64 s (2.50 s\u20132.80 s) overlap") in crash
    partition = _section(report["markdown"], "## full partition, packets dropped (partition_full_drop)")
    assert _rows(partition, heal + "| vm-gossip |") == [
        heal + "| vm-gossip | 3 | 5.40 s, > 60.0 s, 5.10 s | 5.40 s | 5.10 s\u2013> 60.0 s (covers the median "
        "75.0 %) | none at K=3 | n/a (K < 20) | 1 of 3 (> 60.0 s) |"]
    assert "| vm-gossip | healed without help | 2 of 3 yes (yes, no, yes) |" in partition
    # One run of three censored leaves the median known; the ranges do not overlap.
    assert ("time until the mesh was whole again: vm-epmd is lower: median 1.20 s vs 5.40 s for vm-gossip: "
            "4.20 s less, 4.5x lower; their intervals do not overlap (K=3: each interval covers its median with "
            "75.0 %)") in partition
    healing = _section(report["markdown"], "## Which strategies did not heal by themselves")
    assert "| vm-gossip | gossip | partition_full_drop | 1 of 3 (run 2) |" in healing
    assert "vm-epmd |" not in healing


def test_environment_and_method_sections(report):
    environment = _section(report["markdown"], "## Environment")
    assert "| setting | vm-epmd | vm-gossip |\n" in environment
    assert "| discovery strategy | epmd | gossip |" in environment
    assert "| net_ticktime | 10 s | 10 s |" in environment
    assert "kubernetes (a Kubernetes target): not measured: no cluster configured" in environment
    assert "Kubernetes version" not in environment, "no empty Kubernetes rows for VM targets"
    assert "| strategy interval | 5.00 s | 5.00 s |" in environment
    assert "| OTP | 25.2.3 | 25.2.3 |" in environment
    assert "Scenarios asked for but not run on any target: scale_out." in environment
    method = _section(report["markdown"], "## How to read the numbers")
    assert "| K=3 | 75.0 % | none exists |" in method
    assert "| K=5 | 93.8 % | none exists |" in method


def test_latency_is_the_median_of_per_run_percentiles(report):
    latency = _section(report["markdown"], "## inter-node round trip (latency)")
    p99 = _rows(latency, "| round trip p99 | vm-epmd |")
    reps = [s for s in report["results"]["targets"][0]["scenarios"] if s["name"] == "latency"][0]["repetitions"]
    values = sorted(r["metrics"]["rtt_p99_ms"] for r in reps)
    assert len(p99) == 1 and "| %.2f ms |" % values[2] in p99[0]
    # Counters are details, not panels.
    assert "| vm-epmd | samples | 2000 in every run |" in latency
    assert re.search(r"data-metric=\"samples\"", report["html"]) is None


def test_page_is_self_contained(report):
    page = report["html"]
    assert not re.search(r"<script(?![^>]*type=\"application/json\")", page), "only the JSON data block"
    assert not re.search(r"\bsrc\s*=", page)
    hrefs = re.findall(r"\bhref\s*=\s*\"([^\"]*)\"", page)
    assert hrefs and all(h.startswith("#") for h in hrefs), [h for h in hrefs if not h.startswith("#")]
    assert "xlink:href" not in page.replace('xlink:href="#', "")
    assert "@import" not in page and "<link" not in page
    assert all(ref.startswith("#") for ref in re.findall(r"url\(([^)]*)\)", page))
    assert "default-src 'none'" in page
    data = re.search(r'<script type="application/json" id="results-json">(.*?)</script>', page, re.S).group(1)
    assert json.loads(data.replace("<\\/", "</")) == report["results"]
    # matplotlib's SVG carries no date; ids are unique on the page.
    assert "<dc:date>" not in page and "<metadata>" not in page
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    figures = re.findall(r"<figure [^>]*>", page)
    assert len([f for f in figures if 'class="timeline"' in f]) == 3  # crash, partition, rolling deploy
    assert '<figure class="panel" data-censored="1" data-metric="heal_ms" data-points="6" ' \
           'data-scenario="partition_full_drop" data-targets="vm-epmd,vm-gossip">' in page


def test_same_results_give_the_same_bytes(report, tmp_path):
    again = write_report(realistic_results(), str(tmp_path))
    with open(again["html"], encoding="utf-8") as stream:
        assert stream.read() == report["html"]


def test_bad_input_names_the_field_and_writes_nothing(tmp_path):
    results = realistic_results()
    results["targets"][1]["kind"] = "vms"
    with pytest.raises(ResultsError, match=r"targets\[1\]\.kind: is 'vms'; use one of vm, kubernetes"):
        write_report(results, str(tmp_path))
    results = realistic_results()
    results["targets"][2].update(measured=True, scenarios=[], environment={"platform": LAB})
    with pytest.raises(ResultsError, match=r"targets\[2\]\.kind: is kubernetes but the platform is the lab"):
        write_report(results, str(tmp_path))
    results = realistic_results()
    results["targets"][0]["scenarios"][0]["repetitions"][1]["metrics"]["heal_ms"] = 61000.0
    with pytest.raises(ResultsError, match=r"heal_ms: values has values above censor_at=60000"):
        write_report(results, str(tmp_path))
    results = realistic_results()
    results["targets"][0]["environment"]["erlang_cookie"] = "secret"
    with pytest.raises(ResultsError, match=r"results\.targets\.0|environment\.erlang_cookie: holds a cookie"):
        write_report(results, str(tmp_path))
    with pytest.raises(ResultsError, match=r"schema: is 2; this report reads schema 1"):
        build_document(dict(realistic_results(), schema=2))
    assert os.listdir(str(tmp_path)) == []


def test_cli_writes_the_report_and_refuses_bad_input(tmp_path, collections_root):
    source = tmp_path / "results.json"
    source.write_text(json.dumps(realistic_results()))
    env = dict(os.environ, PYTHONPATH=collections_root)
    module = "ansible_collections.beamops.cluster.plugins.module_utils.compare_report"
    done = subprocess.run([sys.executable, "-m", module, str(source), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"markdown": str(tmp_path / "out" / "report.md"),
                                       "html": str(tmp_path / "out" / "report.html")}
    source.write_text(json.dumps({"schema": 1, "targets": []}))
    done = subprocess.run([sys.executable, "-m", module, str(source), str(tmp_path / "bad")], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 2
    assert "targets: must be a non-empty list of targets" in done.stderr
    assert not (tmp_path / "bad").exists()


def test_importing_the_report_does_not_import_matplotlib(collections_root):
    code = ("import sys; import ansible_collections.beamops.cluster.plugins.module_utils.compare_report; "
            "print('matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=collections_root),
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=True)
    assert done.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------- headless Chromium


class DevTools:
    """A Chromium started for one test, driven over its DevTools WebSocket (loopback only)."""

    def __init__(self):
        import websocket  # websocket-client: requirements-test.txt
        self.profile = tempfile.mkdtemp(prefix="beamops-chromium-")
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
             "--user-data-dir=%s" % self.profile, "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = self._endpoint()
        self.socket = websocket.create_connection(url, timeout=TIMEOUT_S, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def _endpoint(self):
        deadline = time.monotonic() + TIMEOUT_S
        seen = []
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            seen.append(line)
            found = re.search(r"DevTools listening on (ws://\S+)", line)
            if found:
                return found.group(1)
        self.close()
        raise AssertionError("chromium printed no DevTools address: %s" % "".join(seen[-20:]))

    def call(self, method, session=None, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == self.next_id:
                assert "error" not in reply, (method, reply["error"])
                return reply.get("result", {})
            self.events.append(reply)
        raise AssertionError("no answer to %s" % method)

    def wait_for(self, method, session):
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            event = json.loads(self.socket.recv())
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        raise AssertionError("no %s event" % method)

    def evaluate(self, session, expression):
        result = self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def close(self):
        try:
            if getattr(self, "socket", None):
                self.socket.close()
        finally:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
            self.process.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)


DOM_FACTS = """(() => {
  const svgs = [...document.querySelectorAll('figure svg')];
  const panels = [...document.querySelectorAll('figure.panel')].map(f => ({
    scenario: f.dataset.scenario, metric: f.dataset.metric, points: Number(f.dataset.points),
    censored: Number(f.dataset.censored),
    dots: f.querySelectorAll('g[id*="-dots-"] use').length,
    cut: f.querySelectorAll('g[id*="-censored-"] use').length,
    medians: f.querySelectorAll('g[id*="-median-"] path').length,
    box: f.querySelector('svg').getBoundingClientRect().width}));
  const timelines = [...document.querySelectorAll('figure.timeline')].map(f => ({
    scenario: f.dataset.scenario, lines: f.querySelectorAll('g[id*="-timeline-"] path').length,
    bands: f.querySelectorAll('g[id*="-fault-"] path').length, windows: Number(f.dataset.faultWindows),
    height: f.querySelector('svg').getBoundingClientRect().height}));
  return {title: document.title, h1: document.querySelector('h1').textContent, svgs: svgs.length,
          rendered: svgs.filter(s => s.getBoundingClientRect().width > 100).length,
          panels: panels, timelines: timelines,
          tables: document.querySelectorAll('table').length,
          data: JSON.parse(document.getElementById('results-json').textContent).schema,
          width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight};
})()"""


def test_page_in_headless_chromium(report):
    """Opens report.html from file:// and checks it renders, draws every chart, logs no error and fetches nothing."""
    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: bash scripts/bootstrap.sh installs it"
    browser = DevTools()
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            browser.call("%s.enable" % domain, session)
        browser.call("Emulation.setDeviceMetricsOverride", session, width=1280, height=900, deviceScaleFactor=1,
                     mobile=False)
        url = "file://" + report["paths"]["html"]
        browser.call("Page.navigate", session, url=url)
        browser.wait_for("Page.loadEventFired", session)
        facts = browser.evaluate(session, DOM_FACTS)
        shot = browser.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
                            clip={"x": 0, "y": 0, "width": 1280, "height": facts["height"], "scale": 1})
        top = browser.call("Page.captureScreenshot", session, format="png")
        browser.call("Runtime.evaluate", session, expression="1")  # drains events queued behind the screenshots
    finally:
        browser.close()

    import base64
    os.makedirs(OUTPUT, exist_ok=True)
    full_path = os.path.join(OUTPUT, "report-screenshot.png")
    top_path = os.path.join(OUTPUT, "report-screenshot-top.png")
    with open(full_path, "wb") as stream:
        stream.write(base64.b64decode(shot["data"]))
    with open(top_path, "wb") as stream:
        stream.write(base64.b64decode(top["data"]))
    print("\nscreenshots: %s (whole page), %s (first screen)" % (full_path, top_path))

    session_events = [e for e in browser.events if e.get("sessionId") == session]
    requests = [e["params"]["request"]["url"] for e in session_events if e["method"] == "Network.requestWillBeSent"]
    assert url in requests
    assert [u for u in requests if not u.startswith("file://")] == []
    assert [u for u in requests if u != url] == [], "the page fetched something besides itself"
    errors = [e["params"] for e in session_events
              if e["method"] == "Runtime.exceptionThrown"
              or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "warning", "assert"))
              or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] in ("error", "warning"))]
    assert errors == []

    assert facts["title"] == "beamops.cluster comparison"
    assert facts["h1"] == "Native distribution or Kubernetes?"
    assert facts["data"] == 1
    assert facts["svgs"] == facts["rendered"] == len(facts["panels"]) + len(facts["timelines"])
    assert facts["width"] <= 1280, "nothing wider than the window"
    panels = dict(((p["scenario"], p["metric"]), p) for p in facts["panels"])
    assert set(panels) == {("crash", "detection_ms"), ("crash", "heal_ms"), ("partition_full_drop", "detection_ms"),
                           ("partition_full_drop", "heal_ms"), ("rolling_deploy", "not_full_ms"),
                           ("rolling_deploy", "fewest_members"), ("rolling_deploy", "duration_ms"),
                           ("latency", "rtt_p50_ms"), ("latency", "rtt_p95_ms"), ("latency", "rtt_p99_ms"),
                           ("latency", "rtt_max_ms")}
    for key, panel in panels.items():
        # Every run is a drawn marker: a dot, or a triangle for a run that did not finish.
        assert panel["dots"] + panel["cut"] == panel["points"], key
        assert panel["cut"] == panel["censored"], key
        assert panel["medians"] == 2, key  # one median tick per target
        assert panel["box"] > 200, key
    assert panels[("partition_full_drop", "heal_ms")]["cut"] == 1
    assert panels[("crash", "heal_ms")]["points"] == 10
    timelines = dict((t["scenario"], t) for t in facts["timelines"])
    assert set(timelines) == {"crash", "partition_full_drop", "rolling_deploy"}
    assert timelines["crash"]["lines"] == 10 and timelines["crash"]["bands"] == timelines["crash"]["windows"] == 10
    assert timelines["partition_full_drop"]["lines"] == 6
    assert os.path.getsize(full_path) > 50000
