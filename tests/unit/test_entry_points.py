"""Every role entry point the playbooks use validates its inputs before any host is touched.

The playbooks enter the roles through `tasks_from`; Ansible validates an entry point only against the spec of
that entry point in meta/argument_specs.yml. Here: each entry point used anywhere carries the role's full spec,
and a real `ansible-playbook` run of each one, with a wrong type and an unknown choice, fails with Ansible's
argument-spec error naming both variables. The only host is an address nothing answers on, so any task that
tried to reach it would end as UNREACHABLE instead.
"""
import glob
import os
import re
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")

# Per role: variables a run needs, a wrong type and an unknown choice (variable -> value); the mesh role has no
# option with choices, so it gets a second wrong type.
ROLES = {
    "release": {
        "needed": {"release_name": "demo", "release_cookie": "entry-point-cookie"},
        "wrong_type": ("release_keep", "lots"),
        "bad_choice": ("release_strategy", "kubernetes_dns"),
    },
    "mesh": {
        "needed": {"mesh_nodes": ["demo@198.18.63.250"], "mesh_cookie": "entry-point-cookie"},
        "wrong_type": ("mesh_timeout", "soon"),
        "bad_choice": None,
        "wrong_type_2": ("mesh_tls", "sometimes"),
    },
}


def specs(role):
    with open(os.path.join(REPO, "roles", role, "meta", "argument_specs.yml")) as handle:
        return yaml.safe_load(handle)["argument_specs"]


def used_entry_points():
    """(role, entry point) for every include_role/import_role with tasks_from in playbooks, roles and molecule."""
    found = set()
    pattern = re.compile(r"name:\s*beamops\.cluster\.(\w+)\s*\n\s*tasks_from:\s*\"?([\w{} ]+)\"?")
    for path in glob.glob(os.path.join(REPO, "playbooks", "*.yml")) + glob.glob(os.path.join(REPO, "roles", "*", "tasks", "*.yml")) \
            + glob.glob(os.path.join(REPO, "molecule", "*", "*.yml")):
        with open(path) as handle:
            for role, entry in pattern.findall(handle.read()):
                if "{{" in entry:  # the release role's mesh.yml picks gate or report
                    found.update((role, e) for e in ("gate", "report"))
                else:
                    found.add((role, entry))
    return sorted(found)


def test_the_playbooks_use_entry_points():
    used = used_entry_points()
    assert ("release", "preflight") in used and ("mesh", "gate") in used and ("mesh", "report") in used, used


def role_text(role, name, seen=None):
    """The text of a task file and of every task file it includes (include_tasks / import_tasks), transitively."""
    seen = set() if seen is None else seen
    if name in seen:
        return ""
    seen.add(name)
    with open(os.path.join(REPO, "roles", role, "tasks", name + ".yml")) as handle:
        text = handle.read()
    for included in re.findall(r"(?:include|import)_tasks:\s*(?:\n\s*file:\s*)?([\w]+)\.yml", text):
        text += role_text(role, included, seen)
    return text


def referenced_options(role, entry):
    """The role's documented options a task file uses, directly or through the role's derived variables."""
    options = set(specs(role)["main"]["options"])
    derived = {}
    vars_path = os.path.join(REPO, "roles", role, "vars", "main.yml")
    if os.path.exists(vars_path):
        with open(vars_path) as handle:
            derived = dict((k, yaml.safe_dump(v)) for k, v in (yaml.safe_load(handle) or {}).items())
    pattern = re.compile(r"\b_?%s_[a-z0-9_]+\b" % role)
    pending, used = pattern.findall(role_text(role, entry)), set()
    while pending:
        name = pending.pop()
        if name in used:
            continue
        used.add(name)
        pending.extend(pattern.findall(derived.get(name, "")))
    return sorted(used & options)


@pytest.mark.parametrize("role,entry", used_entry_points())
def test_each_used_entry_point_validates_every_option_it_uses(role, entry):
    role_specs = specs(role)
    assert entry in role_specs, "roles/%s has no entry point %s in meta/argument_specs.yml" % (role, entry)
    options = role_specs[entry].get("options") or {}
    missing = [name for name in referenced_options(role, entry) if name not in options]
    assert missing == [], "entry point %s of %s uses but does not validate %s" % (entry, role, ", ".join(missing))


def test_the_release_entry_points_carry_the_full_spec():
    role_specs = specs("release")
    for entry, spec in role_specs.items():
        assert set(role_specs["main"]["options"]) <= set(spec["options"]), entry


@pytest.fixture(scope="module")
def entry_point_runs(tmp_path_factory, collections_root):
    """Per role, one real ansible-playbook run that enters every entry point with the bad input (each entry's failure
    is ignored so that the next one runs); returns {(role, entry): the output of that entry's validation task}."""
    tmp_path = tmp_path_factory.mktemp("entry")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"ghost": {
        "ansible_host": "198.18.63.250", "ansible_ssh_common_args": "-o ConnectTimeout=2 -o BatchMode=yes"}}}}))
    outputs = {}
    for role, case in ROLES.items():
        entries = sorted(specs(role))
        playbook = tmp_path / ("%s.yml" % role)
        playbook.write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": False, "tasks": [
            {"name": "Try %s" % entry,
             "block": [{"name": "Enter %s" % entry,
                        "ansible.builtin.include_role": {"name": "beamops.cluster." + role, "tasks_from": entry}}],
             # The refusal ends the block (nothing after it in the role runs); the next entry point is tried.
             "rescue": [{"name": "Refused %s" % entry, "ansible.builtin.debug": {"msg": "refused"}}]}
            for entry in entries]}]))
        variables = dict(case["needed"])
        variables.update(dict(c for c in (case["wrong_type"], case["bad_choice"], case.get("wrong_type_2")) if c))
        extra = tmp_path / ("%s-vars.yml" % role)
        extra.write_text(yaml.safe_dump(variables))
        proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(inventory), str(playbook), "-e", "@%s" % extra],
                              capture_output=True, text=True, timeout=600, check=False,
                              env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_root, ANSIBLE_NOCOLOR="1"))
        out = proc.stdout + proc.stderr
        assert "UNREACHABLE" not in out and "unreachable=0" in out, out[-3000:]
        assert "entry-point-cookie" not in out
        sections = re.split(r"\nTASK \[Enter ", out)
        for entry in entries:
            outputs[(role, entry)] = next((part for part in sections if part.startswith(entry + "]")), "")
    return outputs


ENTRY_POINTS = [(role, entry) for role in ROLES for entry in sorted(specs(role))]


@pytest.mark.parametrize("role,entry", ENTRY_POINTS)
def test_bad_input_fails_at_the_entry_point_before_any_host_is_touched(role, entry, entry_point_runs):
    out = entry_point_runs[(role, entry)]
    case = ROLES[role]
    assert "Validating arguments against arg spec '%s'" % entry in out, out[-3000:]
    assert "Validation of arguments failed" in out and "TASK [Refused %s]" % entry in out, out[-3000:]
    for wrong in (case["wrong_type"], case.get("wrong_type_2")):
        if wrong:
            assert "argument '%s' is of type" % wrong[0] in out, out[-3000:]
    if case["bad_choice"]:
        choice, value = case["bad_choice"]
        assert "value of %s must be one of" % choice in out and "got: %s" % value in out, out[-3000:]
