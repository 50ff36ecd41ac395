"""The action groups of meta/runtime.yml work for every member.

The guard (as kubernetes.core has for its k8s group) computes each group's shared options instead of listing
them: every option that a member takes from one of this collection's doc fragments. Every member must document
and accept (argument_spec) all of them, declare check mode and its membership. Then a real ansible-playbook run
on localhost sets the connection options once with module_defaults for group/beamops.cluster.mesh and runs
every member, also in check mode, against real OTP 25 and OTP 28 nodes on loopback.
"""
import importlib
import json
import os
import subprocess
import sys
import uuid

import pytest
import yaml

import beamnodes
import otp
from collection_path import REPO_ROOT

RELEASES = sorted(otp.runtimes())
NAMESPACE = "beamops.cluster."


def action_groups():
    with open(os.path.join(REPO_ROOT, "meta", "runtime.yml")) as handle:
        return yaml.safe_load(handle).get("action_groups") or {}


def short_name(member):
    return member[len(NAMESPACE):] if member.startswith(NAMESPACE) else member


def module_source(name):
    return importlib.import_module("ansible_collections.beamops.cluster.plugins.modules.%s" % name)


def fragment_options(fragment):
    """Options of a doc fragment of this collection: beamops.cluster.connection.network -> connection.NETWORK."""
    parts = fragment[len(NAMESPACE):].split(".")
    source = importlib.import_module("ansible_collections.beamops.cluster.plugins.doc_fragments.%s" % parts[0])
    text = getattr(source.ModuleDocFragment, parts[1].upper() if len(parts) > 1 else "DOCUMENTATION")
    return set(yaml.safe_load(text).get("options") or {})


class _Stop(Exception):
    pass


def module_arguments(name):
    """What a module's main() hands to AnsibleModule (argument_spec, supports_check_mode, ...)."""
    source = module_source(name)
    seen = {}

    def capture(**kwargs):
        seen.update(kwargs)
        raise _Stop()
    original = source.AnsibleModule
    source.AnsibleModule = capture
    try:
        source.main()
    except _Stop:
        pass
    finally:
        source.AnsibleModule = original
    return seen


def shared_options(members):
    """Every option a member of the group takes from this collection's doc fragments."""
    shared = set()
    for member in members:
        doc = yaml.safe_load(module_source(short_name(member)).DOCUMENTATION)
        for fragment in doc.get("extends_documentation_fragment") or []:
            if fragment.startswith(NAMESPACE):
                shared |= fragment_options(fragment)
    return shared


@pytest.fixture(scope="module")
def rendered_docs(collections_root):
    names = sorted(set(NAMESPACE + short_name(m) for members in action_groups().values() for m in members))
    run = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-doc"), "--json"] + names,
                         env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root), capture_output=True,
                         text=True, timeout=120, check=True)
    return dict((name, entry["doc"]) for name, entry in json.loads(run.stdout).items())


GROUP_MEMBERS = [(group, member) for group, members in sorted(action_groups().items()) for member in members]


def test_the_collection_has_action_groups():
    assert GROUP_MEMBERS and all(shared_options(members) for members in action_groups().values())


@pytest.mark.parametrize("group, member", GROUP_MEMBERS)
def test_every_member_accepts_the_shared_options_of_its_group(group, member, rendered_docs):
    shared = shared_options(action_groups()[group])
    arguments = module_arguments(short_name(member))
    accepted = set(arguments["argument_spec"])
    assert shared <= accepted, "%s does not accept %s, which group/%s%s shares" % (
        member, sorted(shared - accepted), NAMESPACE, group)
    doc = rendered_docs[NAMESPACE + short_name(member)]
    assert shared <= set(doc["options"]), "%s does not document %s" % (member, sorted(shared - set(doc["options"])))
    # The argument spec and the documentation agree on which shared options the member requires.
    for option in shared:
        assert bool(arguments["argument_spec"][option].get("required")) == bool(doc["options"][option].get("required"))
    assert arguments.get("supports_check_mode") is True
    assert doc["attributes"]["check_mode"]["support"] == "full"
    assert NAMESPACE + group in doc["attributes"]["action_group"]["membership"]


PLAYBOOK = """
- name: Every member of the mesh group with the options set once
  hosts: localhost
  connection: local
  gather_facts: false
  module_defaults:
    group/beamops.cluster.mesh:
      cookie: "{{{{ cookie }}}}"
      timeout: 5
      epmd_port: 4369
      address_family: inet
      dial: {dial}
  vars:
    cookie: "{cookie}"
    mesh: {mesh}
    pod: "{pod}"
  tasks:
    - name: EPMD of this host
      beamops.cluster.epmd_info:
        name: "{{{{ mesh[0].split('@')[0] }}}}"
      register: epmd

    - name: EPMD in check mode
      beamops.cluster.epmd_info:
        name: "{{{{ mesh[0].split('@')[0] }}}}"
      check_mode: true
      register: epmd_check

    - name: The mesh
      beamops.cluster.mesh_info:
        nodes: "{{{{ mesh }}}}"
      register: info

    - name: The mesh in check mode
      beamops.cluster.mesh_info:
        nodes: "{{{{ mesh }}}}"
      check_mode: true
      register: info_check

    - name: The node reached only through the dial address of the group
      beamops.cluster.mesh_info:
        nodes: ["{{{{ pod }}}}"]
      register: info_pod

    - name: Wait for the mesh
      beamops.cluster.mesh_wait:
        nodes: "{{{{ mesh }}}}"
        timeout: 10
      register: waited

    - name: Wait in check mode
      beamops.cluster.mesh_wait:
        nodes: "{{{{ mesh }}}}"
        timeout: 10
      check_mode: true
      register: waited_check

    - name: Keep every result for the test
      ansible.builtin.copy:
        dest: "{results}"
        mode: "0600"
        content: >-
          {{{{ {{'epmd': epmd, 'epmd_check': epmd_check, 'info': info, 'info_check': info_check,
          'info_pod': info_pod, 'waited': waited, 'waited_check': waited_check}} | to_json }}}}
"""


@pytest.fixture(scope="module")
def group_run(tmp_path_factory, collections_root):
    workdir = tmp_path_factory.mktemp("group")
    cookie = "grp-" + uuid.uuid4().hex
    specs = [beamnodes.NodeSpec("grp%s" % rel, release=rel, cookie=cookie) for rel in RELEASES]
    pod = beamnodes.NodeSpec("grppod", release=RELEASES[-1], cookie=cookie, host="grp-0.beamops.invalid",
                             dist_port=beamnodes.free_port())
    nodes = beamnodes.start_nodes(specs + [pod], str(workdir))
    try:
        mesh = nodes[:len(specs)]
        beamnodes.connect_mesh(mesh)
        results = workdir / "results.json"
        playbook = workdir / "play.yml"
        playbook.write_text(PLAYBOOK.format(cookie=cookie, mesh=json.dumps([n.name for n in mesh]), pod=pod.node,
                                            dial=json.dumps({pod.node: "127.0.0.1:%d" % pod.dist_port}),
                                            results=results))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root, ANSIBLE_NOCOLOR="1",
                   ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING="0",
                   ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
        run = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                              str(playbook)], env=env, capture_output=True, text=True, timeout=240, check=False)
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
        yield {"cookie": cookie, "mesh": mesh, "pod": pod, "output": run.stdout + run.stderr,
               "results": json.loads(results.read_text())}
    finally:
        beamnodes.stop_nodes(nodes)


def test_module_defaults_of_the_group_reach_every_member(group_run):
    results = group_run["results"]
    mesh = sorted(n.name for n in group_run["mesh"])
    alive = group_run["mesh"][0].name.split("@")[0]
    for key in ("epmd", "epmd_check"):
        assert results[key]["reachable"] is True and results[key]["registered"] is True, results[key]
        assert results[key]["names"][alive] == results[key]["node"]["port"]
    for key in ("info", "info_check", "waited", "waited_check"):
        result = results[key]
        assert not result.get("failed") and result["changed"] is False, result
        assert result["full_mesh"] is True and result["members"] == mesh, result
    assert isinstance(results["waited"]["converged_after_ms"], int)
    # The group's cookie and dial address got there: the pod-named node answered under its own name.
    pod = results["info_pod"]["per_node"][group_run["pod"].node]
    assert pod["reason"] == "ok" and pod["name"] == group_run["pod"].node, pod
    assert group_run["cookie"] not in group_run["output"] + json.dumps(results)
