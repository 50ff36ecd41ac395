"""Every role documents exactly the variables it defaults (meta/argument_specs.yml main options == defaults/main.yml keys)."""
import os

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLES = sorted(name for name in os.listdir(os.path.join(REPO, "roles")) if os.path.isdir(os.path.join(REPO, "roles", name)))


def load(role, *path):
    with open(os.path.join(REPO, "roles", role, *path)) as handle:
        return yaml.safe_load(handle)


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_match_defaults(role):
    defaults = load(role, "defaults", "main.yml") or {}
    options = load(role, "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    assert sorted(set(defaults) - set(options)) == [], "defaults without a spec"
    # Inventory-only variables (set per host, never defaulted) say so at the start of their description.
    without_default = [name for name, spec in options.items() if not spec.get("required") and name not in defaults
                       and not str(spec.get("description")).startswith("Per-host variable")]
    assert without_default == [], "optional spec entries without a default in defaults/main.yml"
    for name, spec in options.items():
        assert spec.get("description"), "%s has no description" % name
        if name in defaults and "default" in spec:
            assert spec["default"] == defaults[name], "%s: spec default %r, defaults/main.yml %r" % (name, spec["default"], defaults[name])
