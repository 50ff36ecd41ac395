"""Unit tests of the topology renderer: strategies, naming checks, and the config text read by a real `erl`."""
import os
import subprocess
import tempfile

import pytest
from hypothesis import given, settings, strategies as st

from otp import runtimes
from ansible_collections.beamops.cluster.plugins.module_utils.topology import (
    DEFAULT_RETRY_MS, KUBERNETES_STRATEGIES, STRATEGIES, VM_STRATEGIES, Atom, Binary, erlang_term, heals, render,
    rolling_switch, running_topology)

MEMBERS = [
    {"host": "vm-1", "address": "198.18.4.11", "fqdn": "vm-1.lab.test"},
    {"host": "vm-2", "address": "198.18.4.12", "fqdn": "vm-2.lab.test"},
    {"host": "vm-3", "address": "198.18.4.13", "fqdn": "vm-3.lab.test"},
]


def consult(erl, text):
    """Load Erlang term text with file:consult in a real VM and print it back with ~p."""
    with tempfile.NamedTemporaryFile("w", suffix=".config", delete=False) as handle:
        handle.write(text)
        path = handle.name
    try:
        out = subprocess.run(
            [erl, "-noshell", "-eval",
             'case file:consult("%s") of {ok, T} -> io:format("~w", [T]), halt(0); E -> io:format("~p", [E]), halt(1) end.' % path],
            capture_output=True, text=True, timeout=60, check=False)
    finally:
        os.unlink(path)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def fields(result):
    return [e["field"] for e in result["errors"]]


def test_epmd_lists_every_member_as_started():
    result = render("epmd", {}, MEMBERS, "shop", "address")
    assert result["errors"] == []
    assert result["nodes"] == {"vm-1": "shop@198.18.4.11", "vm-2": "shop@198.18.4.12", "vm-3": "shop@198.18.4.13"}
    assert result["dialled"] == sorted(result["nodes"].values())
    assert result["config"] == (
        "%% beamops.cluster topology: strategy=epmd redials=true\n"
        "[{libcluster, [{topologies, [{shop, [{strategy, 'Elixir.Cluster.Strategy.Epmd'}, {config, [{timeout, 5000}, {hosts, "
        "['shop@198.18.4.11', 'shop@198.18.4.12', 'shop@198.18.4.13']}]}]}]}]}].\n")


@pytest.mark.parametrize("strategy", ["epmd", "erlang_hosts"])
def test_connect_once_strategies_retry_by_default_so_a_partition_heals(strategy):
    result = render(strategy, {}, MEMBERS, "shop", "fqdn")
    assert "{timeout, %d}" % DEFAULT_RETRY_MS in result["config"]
    assert heals(strategy, {})[0] and "re-dials" in heals(strategy, {})[1]
    once = render(strategy, {"timeout": "infinity"}, MEMBERS, "shop", "fqdn")
    assert "{timeout, infinity}" in once["config"] and "redials=false" in once["config"]
    assert heals(strategy, {"timeout": "infinity"}) == (False, heals(strategy, {"timeout": "infinity"})[1])
    assert "stay apart" in heals(strategy, {"timeout": "infinity"})[1]


def test_which_strategies_heal_by_themselves():
    assert [s for s in VM_STRATEGIES if heals(s, {})[0]] == ["epmd", "gossip", "dnspoll", "erlang_hosts"]
    assert heals("native", {"peers_env": "shop.peers"})[0]
    assert all(heals(s, {})[0] for s in KUBERNETES_STRATEGIES)


def test_the_config_header_tells_a_later_deploy_what_runs():
    for strategy, options in [("epmd", {}), ("gossip", {}), ("native", {}), ("epmd", {"timeout": "infinity"})]:
        config = render(strategy, options, MEMBERS, "shop")["config"]
        assert running_topology(config) == {"strategy": strategy, "redials": heals(strategy, options)[0]}
    # Files written before the header existed: the libcluster module tells the strategy; connect-once assumed.
    old = "[{libcluster, [{topologies, [{shop, [{strategy, 'Elixir.Cluster.Strategy.Epmd'}, {config, [{hosts, []}]}]}]}]}].\n"
    assert running_topology(old) == {"strategy": "epmd", "redials": False}
    assert running_topology("[{kernel, [{sync_nodes_optional, []}]}].\n") == {"strategy": "native", "redials": False}
    assert running_topology("") == {"strategy": None, "redials": False}


@pytest.mark.parametrize("old,old_redials,new,rolling", [
    ("epmd", False, "gossip", False),  # the case seen on the lab: gossip waits for heartbeats epmd never sends
    ("epmd", True, "gossip", True),    # epmd nodes with a retry timeout re-dial the restarted node
    ("native", False, "gossip", False),
    ("erlang_hosts", False, "gossip", False),
    ("dnspoll", True, "gossip", True),
    ("gossip", True, "epmd", True),
    ("gossip", True, "dnspoll", True),
    ("epmd", False, "erlang_hosts", True),
    ("native", False, "epmd", True),
    ("epmd", True, "epmd", True),
])
def test_which_strategy_switches_can_be_rolling(old, old_redials, new, rolling):
    ok, why = rolling_switch({"strategy": old, "redials": old_redials}, new)
    assert ok == rolling
    assert (why == "") == rolling
    if not rolling:
        assert new in why and old in why


def test_a_target_accepts_only_its_own_strategies():
    vm = render("kubernetes_dns", {"service": "shop"}, MEMBERS, "shop", target="vm")
    assert fields(vm) == ["strategy"] and "kubernetes_dns is a Kubernetes strategy" in vm["errors"][0]["message"]
    assert "epmd, gossip, dnspoll, erlang_hosts, native" in vm["errors"][0]["message"]
    k8s = render("epmd", {}, MEMBERS, "shop", target="kubernetes")
    assert fields(k8s) == ["strategy"] and "kubernetes_dns, kubernetes_dnssrv, kubernetes_api" in k8s["errors"][0]["message"]
    assert render("epmd", {}, MEMBERS, "shop", target="vm")["errors"] == []


def test_epmd_fqdn_names_and_timeout():
    result = render("epmd", {"timeout": 5000}, MEMBERS, "shop", "fqdn")
    assert result["nodes"]["vm-2"] == "shop@vm-2.lab.test"
    assert "{timeout, 5000}" in result["config"]
    assert "{timeout, infinity}" in render("epmd", {"timeout": "infinity"}, MEMBERS, "shop")["config"]


def test_epmd_explicit_hosts_must_match_started_names():
    wrong = render("epmd", {"hosts": ["shop@198.18.4.11", "other@198.18.4.12"]}, MEMBERS, "shop")
    assert fields(wrong) == ["options.hosts"]
    assert wrong["config"] == ""
    right = render("epmd", {"hosts": ["shop@198.18.4.13", "shop@198.18.4.11", "shop@198.18.4.12"]}, MEMBERS, "shop")
    assert right["errors"] == []


def test_dnspoll_dials_basename_at_address_and_requires_address_mode():
    result = render("dnspoll", {"query": "shop.lab.test", "polling_interval": 1000}, MEMBERS, "shop")
    assert result["errors"] == []
    assert result["dialled"] == sorted(result["nodes"].values())
    assert '{query, <<"shop.lab.test">>}' in result["config"]
    assert '{node_basename, <<"shop">>}' in result["config"]
    assert "{polling_interval, 1000}" in result["config"]
    assert "node_host" in fields(render("dnspoll", {"query": "shop.lab.test"}, MEMBERS, "shop", "fqdn"))
    assert fields(render("dnspoll", {"query": "q", "node_basename": "other"}, MEMBERS, "shop")) == ["options.node_basename"]
    assert fields(render("dnspoll", {}, MEMBERS, "shop")) == ["options.query"]


def test_gossip_converts_addresses_and_secret():
    result = render("gossip", {"port": 45892, "multicast_addr": "233.252.1.32", "secret": "s3cr\"et", "broadcast_only": False},
                    MEMBERS, "shop")
    assert result["errors"] == []
    assert "{multicast_addr, {233, 252, 1, 32}}" in result["config"]
    assert '{secret, <<"s3cr\\"et">>}' in result["config"]
    assert fields(render("gossip", {"port": 70000, "multicast_addr": "nope"}, MEMBERS, "shop")) == ["options.port", "options.multicast_addr"]


def test_erlang_hosts_renders_hosts_file():
    result = render("erlang_hosts", {}, MEMBERS, "shop", "fqdn")
    assert result["hosts_erlang"] == "'vm-1.lab.test'.\n'vm-2.lab.test'.\n'vm-3.lab.test'.\n"
    assert result["dialled"] == sorted(result["nodes"].values())


def test_native_sets_kernel_sync_nodes():
    result = render("native", {"sync_nodes_timeout": 10000}, MEMBERS, "shop")
    assert result["config"] == ("%% beamops.cluster topology: strategy=native redials=false\n"
                                "[{kernel, [{sync_nodes_optional, ['shop@198.18.4.11', 'shop@198.18.4.12', 'shop@198.18.4.13']}, "
                                "{sync_nodes_timeout, 10000}]}].\n")


def test_native_can_give_the_peer_list_to_an_application_env():
    result = render("native", {"peers_env": "shop.peers"}, MEMBERS[:2], "shop")
    assert result["config"] == ("%% beamops.cluster topology: strategy=native redials=true\n"
                                "[{kernel, [{sync_nodes_optional, ['shop@198.18.4.11', 'shop@198.18.4.12']}, {sync_nodes_timeout, 30000}]}, "
                                "{shop, [{peers, ['shop@198.18.4.11', 'shop@198.18.4.12']}]}].\n")
    assert fields(render("native", {"peers_env": "shop"}, MEMBERS, "shop")) == ["options.peers_env"]


def test_kubernetes_strategies_give_pod_node_names():
    dns = render("kubernetes_dns", {"service": "shop-headless"}, [], "shop")
    assert dns["errors"] == [] and dns["started_as"] == "shop@$(POD_IP)"
    assert '{application_name, <<"shop">>}' in dns["config"]
    srv = render("kubernetes_dnssrv", {"service": "shop-headless", "namespace": "prod"}, [], "shop")
    assert srv["started_as"] == "shop@$(POD_NAME).shop-headless.prod.svc.$(CLUSTER_DOMAIN)"
    api = render("kubernetes_api", {"kubernetes_selector": "app=shop", "mode": "ip"}, [], "shop")
    assert "{mode, ip}" in api["config"] and "'Elixir.Cluster.Strategy.Kubernetes'" in api["config"]


@pytest.mark.parametrize("strategy,options,node_host,members,field", [
    ("consul", {}, "address", MEMBERS, "strategy"),
    ("epmd", {"query": "x"}, "address", MEMBERS, "options.query"),
    ("epmd", {}, "address", [], "members"),
    ("epmd", {}, "address", [dict(MEMBERS[0]), dict(MEMBERS[0], host="vm-9")], "members.vm-9.address"),
    ("epmd", {}, "address", [dict(MEMBERS[0], address="vm-1.lab.test")], "members.vm-1.address"),
    ("epmd", {}, "fqdn", [dict(MEMBERS[0], fqdn="vm-1")], "members.vm-1.fqdn"),
    ("epmd", {}, "hostname", MEMBERS, "node_host"),
    ("epmd", {"timeout": "soon"}, "address", MEMBERS, "options.timeout"),
    ("gossip", {"hosts": ["shop@198.18.4.11"]}, "address", MEMBERS, "options.hosts"),
])
def test_bad_input_names_the_field(strategy, options, node_host, members, field):
    result = render(strategy, options, members, "shop", node_host)
    assert field in fields(result)
    assert result["config"] == ""


def test_filter_words_errors_with_the_callers_variable_names():
    from ansible_collections.beamops.cluster.plugins.filter.topology import topology
    variables = {"strategy": "release_strategy", "options": "release_discovery", "node_host": "release_node_host",
                 "member": "release_node_%s"}
    result = topology("dnspoll", {"query": ""}, [dict(MEMBERS[0], fqdn="vm-1")], "shop", "fqdn", variables=variables)
    texts = [e["text"] for e in result["errors"]]
    assert texts[0].startswith("release_node_host dnspoll dials <basename>@<IP address from DNS>")
    assert "release_discovery.query is required by the dnspoll strategy." in texts
    assert any(t.startswith("host vm-1: release_node_fqdn 'vm-1' has no dot") for t in texts)
    assert "text" not in topology("consul", basename="shop")["errors"][0]


def test_bad_basename():
    assert "basename" in fields(render("epmd", {}, MEMBERS, "sh@p"))


def test_every_strategy_is_known_to_the_renderer():
    assert set(STRATEGIES) == {"epmd", "erlang_hosts", "gossip", "dnspoll", "native", "kubernetes_dns", "kubernetes_dnssrv", "kubernetes_api"}


@pytest.mark.parametrize("otp", sorted(runtimes()))
@pytest.mark.parametrize("strategy,options,node_host", [
    ("epmd", {"timeout": "infinity"}, "address"),
    ("epmd", {}, "fqdn"),
    ("gossip", {"port": 45892, "if_addr": "0.0.0.0", "multicast_addr": "233.252.1.32", "multicast_ttl": 1,
                "secret": "caf\u00e9 'x'", "broadcast_only": True}, "address"),
    ("dnspoll", {"query": "shop.lab.test", "polling_interval": 1000}, "address"),
    ("erlang_hosts", {"timeout": 3000}, "fqdn"),
    ("native", {"peers_env": "shop.peers"}, "address"),
    ("kubernetes_api", {"kubernetes_selector": "app=shop", "mode": "hostname", "kubernetes_service_name": "shop"}, "address"),
])
def test_real_erl_loads_the_config(otp, strategy, options, node_host):
    result = render(strategy, options, MEMBERS, "shop", node_host)
    assert result["errors"] == []
    loaded = consult(runtimes()[otp], result["config"])
    if strategy == "native":
        assert loaded.startswith("[[{kernel,[{sync_nodes_optional,['shop@198.18.4.11',")
        return
    assert loaded.startswith("[[{libcluster,[{topologies,[{shop,[{strategy,'Elixir.Cluster.Strategy.")
    if strategy == "gossip":
        # the secret arrives as the UTF-8 bytes of the string, an Elixir string
        assert "{secret,<<" + ",".join(str(b) for b in "caf\u00e9 'x'".encode("utf-8")) + ">>}" in loaded
        assert "{multicast_addr,{233,252,1,32}}" in loaded and "{broadcast_only,true}" in loaded
    if strategy == "erlang_hosts":
        hosts = consult(runtimes()[otp], result["hosts_erlang"])
        assert hosts == "['vm-1.lab.test','vm-2.lab.test','vm-3.lab.test']"


atom_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1, max_size=20)


@settings(max_examples=40, deadline=None)
@given(names=st.lists(atom_text, min_size=1, max_size=5), text=st.text(max_size=30))
def test_erlang_term_round_trips_through_erl(names, text):
    otp = runtimes().get("25") or next(iter(runtimes().values()))
    term = [(Atom(n), Binary(text), text) for n in names]
    loaded = subprocess.run(
        [otp, "-noshell", "-eval",
         "{ok, Ts, _} = erl_scan:string(os:getenv(\"T\")), {ok, T} = erl_parse:parse_term(Ts),"
         " io:format(\"~w\", [[{atom_to_binary(A, utf8), B, unicode:characters_to_binary(L)} || {A, B, L} <- T]]), halt()."],
        env=dict(os.environ, T=erlang_term(term) + "."), capture_output=True, timeout=60, check=True).stdout
    text_bytes = ",".join(str(b) for b in text.encode())
    expected = "[" + ",".join("{<<%s>>,<<%s>>,<<%s>>}" % (",".join(str(b) for b in n.encode()), text_bytes, text_bytes) for n in names) + "]"
    assert loaded.decode() == expected


@pytest.mark.parametrize("options,cluster_domain,field", [
    ({"kubernetes_selector": "app=shop", "mode": "hostname"}, "cluster.local", "options.kubernetes_service_name"),
    ({"kubernetes_selector": "app=shop", "mode": "dns"}, "k8s.example.com", "cluster_domain"),
    ({"kubernetes_selector": "app=shop", "mode": "hostname", "kubernetes_service_name": "shop"}, "k8s.example.com", "cluster_domain"),
    ({"kubernetes_selector": "app=shop", "mode": "dns", "kubernetes_cluster_name": "other"}, "cluster.local", "options.kubernetes_cluster_name"),
    ({"kubernetes_selector": "app=shop", "mode": "fqdn"}, "cluster.local", "options.mode"),
    ({"kubernetes_selector": "app=shop", "kubernetes_ip_lookup_mode": "slices"}, "cluster.local", "options.kubernetes_ip_lookup_mode"),
    ({"kubernetes_selector": "app=shop"}, "Not A Domain", "cluster_domain"),
])
def test_kubernetes_api_refuses_what_libcluster_cannot_name(options, cluster_domain, field):
    result = render("kubernetes_api", options, [], "shop", cluster_domain=cluster_domain, target="kubernetes")
    assert field in fields(result) and result["config"] == ""


def test_kubernetes_api_names_pods_under_the_cluster_domain_libcluster_builds():
    result = render("kubernetes_api", {"kubernetes_selector": "app=shop", "mode": "hostname", "kubernetes_service_name": "shop-headless"},
                    [], "shop", cluster_domain="corp.local")
    assert result["errors"] == [] and "{kubernetes_cluster_name, <<\"corp\">>}" in result["config"]
    assert result["started_as"] == "shop@$(POD_NAME).shop-headless.$(POD_NAMESPACE).svc.corp.local"
    dns = render("kubernetes_api", {"kubernetes_selector": "app=shop", "mode": "dns"}, [], "shop")
    assert dns["started_as"] == "shop@$(POD_IP_DASHED).$(POD_NAMESPACE).pod.cluster.local"
    # mode ip and the DNS strategies work with any cluster domain.
    assert render("kubernetes_api", {"kubernetes_selector": "app=shop"}, [], "shop", cluster_domain="k8s.example.com")["errors"] == []
    assert render("kubernetes_dnssrv", {"service": "s", "namespace": "n"}, [], "shop", cluster_domain="k8s.example.com")["errors"] == []
