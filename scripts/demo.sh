#!/usr/bin/env bash
# The main job on the local lab, as root on Debian bookworm: installs what it needs, builds the test
# releases, brings up a lab of 3 VM-like hosts (systemd-nspawn, 198.18.0.0/24), deploys the Elixir test
# release meshprobe to them with beamops.cluster.deploy_vms (libcluster Epmd strategy, rolling, health-
# and mesh-gated) and prints the mesh as our own distribution client sees it (beamops.cluster.verify).
# Safe to run again: every step keeps what is already there (a second deploy changes nothing).
#   bash scripts/demo.sh            up (or refresh) the lab and show it
#   bash scripts/demo.sh down       remove the lab
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
say() { printf '\n==> %s\n' "$*"; }

bash scripts/bootstrap.sh
export PATH="$REPO/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$REPO/tests/output/collections"
mkdir -p "$ANSIBLE_COLLECTIONS_PATH/ansible_collections/beamops"
ln -sfn "$REPO" "$ANSIBLE_COLLECTIONS_PATH/ansible_collections/beamops/cluster"

LAB_NAME=${LAB_NAME:-beamlab}
LAB_HOSTS=${LAB_HOSTS:-3}
INVENTORY=/var/lib/beamops/lab/$LAB_NAME/inventory.yml

if [ "${1:-up}" = down ]; then
  say "Removing the lab $LAB_NAME"
  ansible-playbook beamops.cluster.lab_down -e lab_name="$LAB_NAME"
  exit 0
fi

say "Building the test releases (offline, cached)"
bash scripts/build-testapps.sh

say "Bringing up the lab: $LAB_HOSTS hosts named $LAB_NAME-1.."
ansible-playbook beamops.cluster.lab_up -e lab_name="$LAB_NAME" -e lab_hosts="$LAB_HOSTS"

say "The lab's hosts, reached over SSH with the inventory $INVENTORY"
# shellcheck disable=SC2016  # expanded on each host, not here
ansible -i "$INVENTORY" lab -o -m ansible.builtin.command \
  -a 'sh -c "echo $(hostname) $(hostname -I) systemd=$(systemctl is-system-running) $(python3 --version)"'

# The demo's cookie: made once, readable by root only, passed in a vars file of the same mode (never on
# the command line, where other users could read it).
STATE=/var/lib/beamops/lab/$LAB_NAME
VARS=$STATE/demo-release.yml
umask 077
[ -s "$STATE/demo-cookie" ] || python3 -c 'import secrets; print(secrets.token_hex(20))' > "$STATE/demo-cookie"
cat > "$VARS" <<VARS
release_name: meshprobe
release_src: $REPO/build/testapps/meshprobe-0.1.0.tar.gz
release_cookie: $(cat "$STATE/demo-cookie")
release_strategy: epmd
VARS
umask 022

say "Deploying meshprobe 0.1.0 to the lab (beamops.cluster.deploy_vms, one host at a time)"
ansible-playbook -i "$INVENTORY" beamops.cluster.deploy_vms -e @"$VARS" -e release_target=lab

say "The mesh, as beamops.cluster.mesh_info sees it (beamops.cluster.verify)"
ansible-playbook -i "$INVENTORY" beamops.cluster.verify -e @"$VARS" -e release_target=lab

# The short comparison: gossip, then epmd (last, so the lab ends as deployed above and a re-run changes nothing);
# kill -9, a rejecting partition, a rolling restart and open-loop latency, K=3 each; a few minutes.
say "A short comparison on the lab (beamops.cluster.compare): gossip and epmd, crash, partition, rolling deploy, K=3"
ansible-playbook -i "$INVENTORY" beamops.cluster.compare -e @"$VARS" \
  -e '{"compare_strategies": ["gossip", "epmd"], "compare_short": true}' -e compare_out_dir="$STATE/compare"
say "The comparison's report: $STATE/compare/report.html (text: report.md, every raw value: results.json)"

say "Done. Inventory: $INVENTORY; release variables: $VARS. Remove the lab with: bash scripts/demo.sh down"
