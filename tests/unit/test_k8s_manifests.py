"""The Kubernetes manifests of plugins/module_utils/k8s_manifests.py, checked offline (there is no API server here):

- every strategy x workload x mode x flavor that the preflight allows renders, and every object validates with
  kubernetes-validate in strict mode against Kubernetes 1.29 and the newest version it ships (a missing schema fails);
- the invariants of issue 9 for every combination: the node name each pod runs as (its env resolved as the kubelet
  resolves it) equals the names the strategy dials (CoreDNS's records / the Endpoints and pods the API lists, as
  libcluster 3.5.0 reads them), $(VAR) order, the cookie only in the Secret, RBAC only for the API strategy and
  least-privilege, serviceName -> a headless Service, selectors, ports, and identical output on a second render;
- every refusal the issue lists, naming the input;
- the start script of kubernetes_api mode dns, run by /bin/sh, gives the name the builder predicts.

The cluster's side (controllers, kubelet, CoreDNS, libcluster) is modelled in k8s_manifests from their documented
behaviour and source: that model is what the lab contract test (tests/integration/test_k8s_contract.py) and the
real-cluster suite (tests/kubernetes/) check against real BEAM nodes and a real cluster.
"""
import base64
import copy
import itertools
import json
import os
import re
import subprocess

import kubernetes_validate
import pytest
import yaml

from otp import runtimes

from ansible_collections.beamops.cluster.plugins.filter.k8s_manifests import (
    k8s_check,
    k8s_manifest_files,
    k8s_pod_nodes,
)
from ansible_collections.beamops.cluster.plugins.module_utils import k8s_manifests as m

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COOKIE = "k8sUnitCookie0123456789abcdefXYZ"
OLDEST, NEWEST = "1.29", kubernetes_validate.latest_version()
BASE = {"release_name": "meshprobe", "image": "registry.example.com/meshprobe:0.1.0", "cookie": COOKIE, "namespace": "shop"}
API_MODES = [{"mode": mode, "kubernetes_ip_lookup_mode": lookup} for mode in ("ip", "dns", "hostname") for lookup in ("pods", "endpoints")]
STRATEGIES = [("kubernetes_dns", {}), ("kubernetes_dnssrv", {})] + [("kubernetes_api", d) for d in API_MODES]


def candidates():
    for flavor, workload, (strategy, discovery) in itertools.product(("mix", "rebar3"), m.WORKLOADS, STRATEGIES):
        yield dict(BASE, release_flavor=flavor, workload=workload, strategy=strategy, discovery=discovery)


def combo_id(inputs):
    discovery = "-".join(str(v) for _k, v in sorted(inputs.get("discovery", {}).items()))
    extra = "-".join("%s=%s" % (k, inputs[k]) for k in ("ip_family", "cluster_domain", "client_service", "create_namespace") if k in inputs)
    return "-".join(p for p in (inputs["release_flavor"], inputs["workload"], inputs["strategy"], discovery, extra) if p)


ALLOWED = [c for c in candidates() if not m.check(c)["errors"]]
# Variants: IPv6, another .local domain, a domain outside .local, client Service and Namespace.
VARIANTS = [
    dict(BASE, release_flavor="mix", workload="statefulset", strategy="kubernetes_dnssrv", ip_family="IPv6"),
    dict(BASE, release_flavor="mix", workload="statefulset", strategy="kubernetes_api", ip_family="IPv6",
         discovery={"mode": "hostname", "kubernetes_ip_lookup_mode": "pods"}),
    dict(BASE, release_flavor="mix", workload="deployment", strategy="kubernetes_api", ip_family="IPv6", discovery={"mode": "ip"}),
    dict(BASE, release_flavor="mix", workload="statefulset", strategy="kubernetes_api", cluster_domain="corp.local",
         discovery={"mode": "hostname", "kubernetes_ip_lookup_mode": "endpoints"}),
    dict(BASE, release_flavor="rebar3", workload="deployment", strategy="kubernetes_api", cluster_domain="corp.local",
         discovery={"mode": "dns"}),
    dict(BASE, release_flavor="mix", workload="statefulset", strategy="kubernetes_dnssrv", cluster_domain="k8s.example.com"),
    dict(BASE, release_flavor="mix", workload="deployment", strategy="kubernetes_dns", cluster_domain="k8s.example.com"),
    dict(BASE, release_flavor="mix", workload="statefulset", strategy="kubernetes_api", cluster_domain="k8s.example.com",
         discovery={"mode": "ip", "kubernetes_ip_lookup_mode": "endpoints"}, client_service=True, create_namespace=True),
]
COMBOS = ALLOWED + VARIANTS


def build(inputs):
    result = m.build(inputs)
    assert result["errors"] == [], result["errors"]
    return result


def fields(result):
    return [e["field"] for e in result["errors"]]


def test_the_preflight_allows_exactly_the_combinations_libcluster_can_do():
    allowed = sorted(set((c["workload"], c["strategy"], json.dumps(c["discovery"], sort_keys=True)) for c in ALLOWED))
    refused = sorted(set((c["workload"], c["strategy"], json.dumps(c["discovery"], sort_keys=True)) for c in candidates()) - set(allowed))
    # 13 per flavor: DNS on both workloads, DNSSRV on a StatefulSet, the API's 6 mode x lookup pairs on both minus hostname on a Deployment.
    assert len(ALLOWED) == 26 and len(allowed) == 13
    assert refused == sorted([("deployment", "kubernetes_dnssrv", "{}")] + [
        ("deployment", "kubernetes_api", json.dumps({"kubernetes_ip_lookup_mode": lookup, "mode": "hostname"}, sort_keys=True))
        for lookup in ("endpoints", "pods")])


@pytest.mark.parametrize("inputs", COMBOS, ids=combo_id)
def test_every_object_validates_strictly_against_the_oldest_and_newest_kubernetes(inputs):
    objects = build(inputs)["objects"]
    for version in (OLDEST, NEWEST):
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                pytest.fail("no schema for %s %s in Kubernetes %s (a removed or unknown API)" % (obj["apiVersion"], obj["kind"], version))
            except kubernetes_validate.ValidationError as exc:
                pytest.fail("%s %s is invalid for Kubernetes %s: %s" % (obj["kind"], obj["metadata"]["name"], version, exc.message))


def test_a_missing_schema_counts_as_a_failure():
    # What the validation above relies on: a removed API (policy/v1beta1 PDB) raises instead of passing.
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate({"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "x"}},
                                     NEWEST, strict=True)


def check_invariants(objects, zone):
    """Every invariant of issue 9 that holds for one rendered combination; returns the pods' node names."""
    workload = m.workload_of(objects)
    template = workload["spec"]["template"]
    pod_spec = template["spec"]
    container = pod_spec["containers"][0]
    api = m.find(objects, "Role") is not None
    secret = m.find(objects, "Secret")
    cookie = base64.b64decode(secret["data"][m.COOKIE_KEY]).decode()

    # The node each pod runs as is a name its peers dial, for every pod, as libcluster sees the cluster from that pod.
    pods = m.cluster_pods(objects)
    runs_as = sorted(m.pod_node_name(objects, pod) for pod in pods)
    assert len(set(runs_as)) == workload["spec"]["replicas"]
    for pod in pods:
        assert m.dialled_names(objects, pods, pod, zone) == runs_as, pod["name"]

    # $(VAR) references only entries declared above them (the kubelet expands nothing else).
    declared = set()
    for entry in container["env"]:
        for name in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", entry.get("value", "")):
            assert name in declared, "%s uses $(%s) before it is declared" % (entry["name"], name)
        declared.add(entry["name"])
    for part in container["command"] + container["args"]:
        assert "$(" not in part and "$$" not in part

    # The cookie only in the Secret: not in any other object (also not base64-encoded), not in args or annotations.
    encoded = base64.b64encode(cookie.encode()).decode()
    for obj in objects:
        if obj is not secret:
            text = json.dumps(obj)
            assert cookie not in text and encoded not in text, obj["kind"]
    assert secret["immutable"] is True and list(secret["data"]) == [m.COOKIE_KEY]
    cookie_env = [e for e in container["env"] if e["name"] in ("RELEASE_COOKIE", "RELX_COOKIE")]
    assert cookie_env == [{"name": cookie_env[0]["name"], "valueFrom": {"secretKeyRef": {"name": secret["metadata"]["name"], "key": m.COOKIE_KEY}}}]

    # RBAC only for the API strategy, least privilege: get/list on exactly the resource its lookup mode reads, in its namespace.
    rbac = [o for o in objects if o["kind"] in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]
    if api:
        _module, config = m.libcluster_topology(objects, pods[0])
        resource = "endpoints" if config["kubernetes_ip_lookup_mode"] == "endpoints" else "pods"
        role = m.find(objects, "Role")
        assert role["rules"] == [{"apiGroups": [""], "resources": [resource], "verbs": ["get", "list"]}]
        assert sorted(o["kind"] for o in rbac) == ["Role", "RoleBinding", "ServiceAccount"]
        assert pod_spec["serviceAccountName"] == m.find(objects, "ServiceAccount")["metadata"]["name"]
        assert pod_spec["automountServiceAccountToken"] is True
        if resource == "endpoints":
            # Endpoints copy their Service's labels: the selector picks the headless Service's only.
            selector = m.parse_selector(config["kubernetes_selector"])
            services = [s for s in objects if s["kind"] == "Service" and m._matches(selector, s["metadata"]["labels"])]
            assert [s["spec"].get("clusterIP") for s in services] == ["None"]
        else:
            assert m._matches(m.parse_selector(config["kubernetes_selector"]), template["metadata"]["labels"])
    else:
        assert rbac == [] and pod_spec["automountServiceAccountToken"] is False and "serviceAccountName" not in pod_spec

    # serviceName names a rendered headless Service in the same namespace whose selector the pods match.
    headless = [s for s in objects if s["kind"] == "Service" and s["spec"].get("clusterIP") == "None"]
    assert len(headless) == 1 and headless[0]["spec"]["publishNotReadyAddresses"] is True
    if workload["kind"] == "StatefulSet":
        assert workload["spec"]["serviceName"] == headless[0]["metadata"]["name"]
        assert workload["spec"]["podManagementPolicy"] == "Parallel" and workload["spec"]["updateStrategy"]["type"] == "RollingUpdate"
        assert objects.index(headless[0]) < objects.index(workload)
    for obj in objects:
        assert obj["metadata"].get("namespace") in (None, workload["metadata"]["namespace"])

    # Every selector matches the pods.
    labels = template["metadata"]["labels"]
    selectors = [workload["spec"]["selector"]["matchLabels"], m.find(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
                 m.find(objects, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]]
    selectors += [s["spec"]["selector"] for s in objects if s["kind"] == "Service"]
    selectors += [c["labelSelector"]["matchLabels"] for c in pod_spec["topologySpreadConstraints"]]
    for selector in selectors:
        assert selector and m._matches(selector, labels)

    # One EPMD port and one pinned distribution port everywhere.
    ports = dict((p["name"], p["containerPort"]) for p in container["ports"])
    service_ports = dict((p["name"], p["port"]) for p in headless[0]["spec"]["ports"])
    assert service_ports == {"epmd": ports["epmd"], "dist": ports["dist"]}
    peer_rule = m.find(objects, "NetworkPolicy")["spec"]["ingress"][0]
    assert peer_rule["from"] == [{"podSelector": {"matchLabels": workload["spec"]["selector"]["matchLabels"]}}]
    assert sorted(p["port"] for p in peer_rule["ports"]) == sorted([ports["epmd"], ports["dist"]])
    env = m.kubelet_env(objects, pods[0])
    vm_args = m.mounted_files(objects, pods[0])[m.CONFIG_DIR + "/vm.args"][0]
    assert "-kernel inet_dist_listen_min %d inet_dist_listen_max %d" % (ports["dist"], ports["dist"]) in vm_args
    assert env["ERL_EPMD_PORT"] == str(ports["epmd"])
    assert len(set(ports.values())) == len(ports)

    # Security context and the writable RELEASE_TMP of a read-only root filesystem (pitfall 13).
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"] and security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsUser"] > 0 and pod_spec["securityContext"]["runAsNonRoot"] and not pod_spec.get("hostNetwork")
    tmp = env.get("RELEASE_TMP", env.get("RELX_OUT_FILE_PATH"))
    assert m.mounted_files(objects, pods[0])[tmp] == (None, 0o1777)
    return runs_as


@pytest.mark.parametrize("inputs", COMBOS, ids=combo_id)
def test_invariants_hold_for_every_combination(inputs):
    objects = build(inputs)["objects"]
    runs_as = check_invariants(objects, inputs.get("cluster_domain", "cluster.local"))
    if inputs["strategy"] == "kubernetes_dnssrv" or inputs.get("discovery", {}).get("mode") == "hostname":
        assert runs_as[0].startswith("meshprobe@meshprobe-0.meshprobe-headless.shop.svc.")


@pytest.mark.parametrize("inputs", COMBOS, ids=combo_id)
def test_rendering_twice_gives_identical_manifests_and_files(inputs):
    first, second = build(copy.deepcopy(inputs)), build(copy.deepcopy(inputs))
    assert json.dumps(first["objects"], sort_keys=True) == json.dumps(second["objects"], sort_keys=True)
    assert k8s_manifest_files(first) == k8s_manifest_files(second)


def broken(inputs, change):
    objects = build(inputs)["objects"]
    change(objects)
    return objects


@pytest.mark.parametrize("inputs,change", [
    # serviceName not the headless Service: DNSSRV's SRV targets become dashed IPs, not the pod names.
    (dict(BASE, strategy="kubernetes_dnssrv"), lambda o: m.workload_of(o)["spec"].update(serviceName="other")),
    # RELEASE_NODE before POD_NAME: the kubelet leaves $(POD_NAME) unexpanded.
    (dict(BASE, strategy="kubernetes_dnssrv"), lambda o: m.workload_of(o)["spec"]["template"]["spec"]["containers"][0]["env"].insert(
        0, m.workload_of(o)["spec"]["template"]["spec"]["containers"][0]["env"].pop(5))),
    # The Role lists the wrong resource: libcluster gets 403 and finds nobody.
    (dict(BASE, strategy="kubernetes_api"), lambda o: m.find(o, "Role")["rules"][0].update(resources=["endpoints"])),
    # endpoints lookup while the selector labels only the pods: no Endpoints object matches.
    (dict(BASE, strategy="kubernetes_api", discovery={"kubernetes_ip_lookup_mode": "endpoints"}),
     lambda o: m.find(o, "Service")["metadata"]["labels"].update({"app.kubernetes.io/component": "other"})),
    # Kubernetes.DNS asked for the wrong name.
    (dict(BASE, strategy="kubernetes_dns", workload="deployment"),
     lambda o: m.find(o, "ConfigMap")["data"].update({"topology.config": m.find(o, "ConfigMap")["data"]["topology.config"].replace(
         "meshprobe-headless.shop", "meshprobe-headless.other")})),
])
def test_the_invariants_catch_broken_manifests(inputs, change):
    objects = broken(inputs, change)
    with pytest.raises(AssertionError):
        check_invariants(objects, "cluster.local")


@pytest.mark.parametrize("change,field", [
    ({"strategy": "kubernetes_dnssrv", "workload": "deployment"}, "workload"),
    ({"strategy": "kubernetes_api", "workload": "deployment", "discovery": {"mode": "hostname"}}, "workload"),
    ({"strategy": "kubernetes_api", "discovery": {"mode": "dns"}, "cluster_domain": "k8s.example.com"}, "cluster_domain"),
    ({"strategy": "kubernetes_api", "discovery": {"mode": "hostname"}, "cluster_domain": "k8s.example.com"}, "cluster_domain"),
    ({"strategy": "kubernetes_dns", "ip_family": "IPv6"}, "ip_family"),
    ({"strategy": "kubernetes_api", "discovery": {"mode": "dns"}, "ip_family": "IPv6"}, "ip_family"),
    ({"strategy": "consul"}, "strategy"),
    ({"strategy": "epmd"}, "strategy"),
    ({"image": ""}, "image"),
    ({"replicas": 0}, "replicas"),
    ({"replicas": "3"}, "replicas"),
    ({"dist_port": 4369}, "dist_port"),
    ({"dist_port": 70000}, "dist_port"),
    ({"client_ports": [{"name": "http", "port": 9100}]}, "client_ports[0].port"),
    ({"client_ports": [{"name": "dist", "port": 4000}]}, "client_ports[0].name"),
    ({"client_ports": [{"name": "http", "port": 4000}, {"name": "http", "port": 4001}]}, "client_ports[1].name"),
    ({"cookie": "two words"}, "cookie"),
    ({"cookie": "trailing\n"}, "cookie"),
    ({"app": "My_App"}, "app"),
    ({"app": "a" * 53}, "app"),
    ({"namespace": "Prod"}, "namespace"),
    ({"release_name": "meshprobe-1"}, "release_name"),
    ({"discovery": {"service": "other"}}, "discovery.service"),
    ({"discovery": {"query": "x"}}, "discovery.query"),
    ({"strategy": "kubernetes_api", "discovery": {"mode": "fqdn"}}, "discovery.mode"),
    ({"strategy": "kubernetes_api", "discovery": {"kubernetes_ip_lookup_mode": "slices"}}, "discovery.kubernetes_ip_lookup_mode"),
    ({"probe_port": "metrics"}, "probe_port"),
    ({"prestop_delay": 60, "termination_grace_period": 30}, "prestop_delay"),
    ({"run_as_user": 0}, "run_as_user"),
    ({"env": {"RELEASE_COOKIE": "x"}}, "env.RELEASE_COOKIE"),
    ({"emulator_flags": ["-setcookie x"]}, "emulator_flags"),
    ({"resources": {"limits": {"memory": "lots"}}}, "resources"),
    ({"workload": "daemonset"}, "workload"),
])
def test_the_preflight_refuses_naming_the_input(change, field):
    result = m.check(dict(BASE, **change))
    assert field in fields(result), result["errors"]
    assert m.build(dict(BASE, **change))["objects"] == []
    worded = k8s_check(dict(BASE, **change))
    assert any(e["text"].startswith("kubernetes_" + field + " ") for e in worded["errors"])


def test_the_preflight_warns_about_the_deprecated_endpoints_api_and_offers_pods():
    result = m.check(dict(BASE, strategy="kubernetes_api", discovery={"kubernetes_ip_lookup_mode": "endpoints"}))
    assert result["errors"] == []
    assert [w for w in result["warnings"] if w["field"] == "discovery.kubernetes_ip_lookup_mode" and "1.33" in w["message"]
            and "use pods" in w["message"]]
    assert not [w for w in m.check(dict(BASE, strategy="kubernetes_api"))["warnings"] if "Endpoints" in w["message"]]


def test_a_cookie_is_needed_to_build_but_not_to_check():
    assert m.check(dict(BASE, cookie=""))["errors"] == []
    assert fields(m.build(dict(BASE, cookie=""))) == ["cookie"]


def test_the_api_strategy_defaults_to_the_pods_lookup_and_ip_mode():
    result = build(dict(BASE, strategy="kubernetes_api"))
    assert "{kubernetes_ip_lookup_mode, pods}" in result["topology"]["config"] and "{mode, ip}" in result["topology"]["config"]


def test_the_dns_mode_start_script_run_by_sh_gives_the_predicted_name(tmp_path):
    """kubernetes_api mode dns needs the dashed pod IP, which only a shell can make: run the rendered script for real."""
    root = tmp_path / "app"
    (root / "bin").mkdir(parents=True)
    release = root / "bin" / "meshprobe"
    release.write_text('#!/bin/sh\nprintf "%s %s\\n" "$RELEASE_NODE" "$1"\n')
    release.chmod(0o755)
    result = build(dict(BASE, strategy="kubernetes_api", workload="deployment", discovery={"mode": "dns"}, release_root=str(root)))
    objects = result["objects"]
    pod = m.cluster_pods(objects, addresses=["10.1.2.3", "10.1.2.4", "10.1.2.5"])[1]
    argv = m.container_argv(objects, pod)
    env = dict((k, v) for k, v in m.kubelet_env(objects, pod).items())
    out = subprocess.run(argv, env=dict(env, PATH="/usr/bin:/bin"), capture_output=True, text=True, check=True).stdout.split()
    assert out == [m.pod_node_name(objects, pod), "start"] == ["meshprobe@10-1-2-4.shop.pod.cluster.local", "start"]


def test_kubelet_expansion_rules():
    assert m.expand("a@$(X).$(Y)", {"X": "x"}) == "a@x.$(Y)"
    assert m.expand("$$(X) $$ $ $(", {"X": "x"}) == "$(X) $ $ $("


def test_manifest_files_are_valid_yaml_in_apply_order_and_the_secret_is_marked(tmp_path):
    result = build(dict(BASE, strategy="kubernetes_api", create_namespace=True, client_service=True))
    files = k8s_manifest_files(result)
    assert [f["name"][:3] for f in files] == ["%02d-" % i for i in range(1, len(files) + 1)]
    assert [yaml.safe_load(f["content"]) for f in files] == result["objects"]
    assert [f["name"] for f in files if f["secret"]] == ["05-secret-meshprobe-cookie.yaml"]
    assert [f["name"] for f in files][0] == "01-namespace-shop.yaml"


def test_yamllint_passes_on_every_rendered_file(tmp_path):
    for index, inputs in enumerate(COMBOS):
        folder = tmp_path / ("%02d" % index)
        folder.mkdir()
        for item in k8s_manifest_files(build(inputs)):
            (folder / item["name"]).write_text(item["content"])
    proc = subprocess.run([os.path.join(REPO, ".venv", "bin", "yamllint"), "-c", os.path.join(REPO, ".yamllint"), "-f", "parsable",
                           str(tmp_path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_pod_nodes_from_cluster_pods_as_k8s_info_returns_them():
    result = build(dict(BASE, strategy="kubernetes_dnssrv"))
    pods = [{"metadata": {"name": "meshprobe-%d" % i, "namespace": "shop", "labels": {}}, "spec": {"hostname": "meshprobe-%d" % i},
             "status": {"podIP": "10.0.0.%d" % i}} for i in range(3)]
    pods.append({"metadata": {"name": "meshprobe-3", "namespace": "shop"}, "spec": {}, "status": {}})  # not scheduled yet
    assert k8s_pod_nodes(pods, result) == dict(("meshprobe@meshprobe-%d.meshprobe-headless.shop.svc.cluster.local" % i, "meshprobe-%d" % i)
                                               for i in range(3))


def test_the_role_passes_every_input_and_its_defaults_are_the_builders():
    role = os.path.join(REPO, "roles", "kubernetes")
    with open(os.path.join(role, "vars", "main.yml")) as handle:
        inputs = yaml.safe_load(handle)["_kubernetes_inputs"]
    with open(os.path.join(role, "defaults", "main.yml")) as handle:
        defaults = yaml.safe_load(handle)
    assert sorted(inputs) == sorted(set(m.DEFAULTS) - {"cookie"})
    for key in inputs:
        assert re.match(r"^\{\{ kubernetes_%s( \| (int|bool))? \}\}$" % key, inputs[key]), inputs[key]
        if "{{" not in str(defaults["kubernetes_" + key]):
            assert defaults["kubernetes_" + key] == m.DEFAULTS[key], key
    assert defaults["kubernetes_cookie"] == ""


def test_the_configmap_topology_is_the_renderers_term_for_term_as_a_real_erl_reads_it(tmp_path):
    """The ConfigMap's topology text is wrapped into short lines; file:consult must read the same terms as from the renderer."""
    erl = runtimes()["25"]
    pairs = []
    for index, inputs in enumerate(COMBOS):
        result = build(inputs)
        wrapped = m.find(result["objects"], "ConfigMap")["data"]["topology.config"]
        assert wrapped.replace("\n  ", " ").replace("\n", " ") == result["topology"]["config"].replace("\n", " ")
        for name, text in (("a%d" % index, result["topology"]["config"]), ("b%d" % index, wrapped)):
            (tmp_path / (name + ".config")).write_text(text)
        pairs.append(index)
    script = ("lists:foreach(fun(I) -> {ok, A} = file:consult(\"%s/a\" ++ integer_to_list(I) ++ \".config\"), "
              "{ok, A} = file:consult(\"%s/b\" ++ integer_to_list(I) ++ \".config\") end, %s), io:format(\"same~n\"), halt(0)."
              % (tmp_path, tmp_path, json.dumps(pairs)))
    out = subprocess.run([erl, "-noshell", "-eval", script], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "same", out.stdout + out.stderr
