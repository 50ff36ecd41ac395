#!/usr/bin/env bash
# The main job on the local lab, as root on Debian bookworm: installs what it needs, builds the test
# releases, brings up a lab of 3 VM-like hosts (systemd-nspawn, 198.18.0.0/24) and shows them.
# Safe to run again: every step keeps what is already there.
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

say "Done. Use the lab with: ansible-playbook -i $INVENTORY <playbook>; remove it with: bash scripts/demo.sh down"
