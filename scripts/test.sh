#!/usr/bin/env bash
# Runs every test of beamops.cluster, as root on Debian bookworm: installs what it needs first
# (scripts/bootstrap.sh), then runs each step, keeps going when one fails, and prints a summary.
#   bash scripts/test.sh            all steps
#   bash scripts/test.sh unit lint  only the named steps (unit sanity lint galaxy integration kubernetes molecule)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
REPO=$(pwd)
WORK=${BEAMOPS_TEST_WORK:-/tmp/beamops-test}
ALL_STEPS=(unit sanity lint galaxy integration kubernetes molecule)
STEPS=("$@"); [ ${#STEPS[@]} -gt 0 ] || STEPS=("${ALL_STEPS[@]}")

bash scripts/bootstrap.sh || { echo "bootstrap failed"; exit 1; }
export PATH="$REPO/.venv/bin:$PATH" ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1
export ANSIBLE_COLLECTIONS_PATH="$REPO/tests/output/collections"
mkdir -p "$WORK" "$ANSIBLE_COLLECTIONS_PATH/ansible_collections/beamops"
ln -sfn "$REPO" "$ANSIBLE_COLLECTIONS_PATH/ansible_collections/beamops/cluster"

# The testapps are built once here (offline, cached by a hash of their sources) for every later step.
if [ -x scripts/build-testapps.sh ]; then bash scripts/build-testapps.sh || { echo "building the test releases failed"; exit 1; }; fi

step_unit() {
  python -m pytest -q -p no:cacheprovider tests/unit
}

step_integration() {
  # Needs root: makes labs of systemd-nspawn hosts in their own namespaces (198.18.0.0/15 only).
  if [ -d tests/integration ] && ls tests/integration/test_*.py >/dev/null 2>&1; then
    python -m pytest -q -p no:cacheprovider tests/integration
  else
    echo "no integration tests"
  fi
}

step_kubernetes() {
  # The real-cluster suite: runs when K8S_AUTH_KUBECONFIG (and BEAMOPS_K8S_IMAGE) name a cluster and an image,
  # and skips with that reason otherwise (there is no Kubernetes API server on a lab machine).
  python -m pytest -q -p no:cacheprovider -rs tests/kubernetes
}

collection_copy() {
  # ansible-test needs the real path .../ansible_collections/beamops/cluster (a symlink is resolved away).
  local dest="$WORK/sanity/ansible_collections/beamops/cluster"
  rm -rf "$WORK/sanity" && mkdir -p "$dest"
  git ls-files -co --exclude-standard -z | rsync -a --from0 --files-from=- ./ "$dest/"
  echo "$dest"
}

step_sanity() {
  local dest; dest=$(collection_copy)
  # ansible-test downloads a pip bootstrap script from a host that is not reachable here: give it ours.
  local pip_version
  pip_version=$(python -c 'from ansible_test._internal.python_requirements import get_venv_packages; from ansible_test._internal.host_configs import NativePythonConfig; print(get_venv_packages(NativePythonConfig(version="3.11"))["pip"])' 2>/dev/null || echo 24.2)
  mkdir -p ~/.ansible/test/cache
  cp scripts/ansible-test-get-pip.py ~/.ansible/test/cache/"get_pip_${pip_version//./_}.py"
  (cd "$dest" && ansible-test sanity --python 3.11 --requirements --color no \
      2>&1)
}

step_lint() {
  ansible-lint --profile production --offline --nocolor
}

step_galaxy() {
  local out="$WORK/galaxy" inv="$WORK/galaxy/inventory.yml" installed f m
  rm -rf "$out" && mkdir -p "$out/collections"
  ansible-galaxy collection build --force --output-path "$out" . || return 1
  # Offline, the dependency kubernetes.core (galaxy.yml) is satisfied by the copy the ansible package bundles in the
  # venv's site-packages (Galaxy is not reachable here); the install fails if no installed version fits.
  ansible-galaxy collection install --force --offline -p "$out/collections" "$out"/beamops-cluster-*.tar.gz 2>&1 | tee "$out/install.log" || return 1
  grep -q "beamops.cluster:.* was installed successfully" "$out/install.log" || return 1
  grep -Eq "'kubernetes.core:6\.[0-9.]+' is already installed" "$out/install.log" \
    || { echo "the kubernetes.core dependency was not resolved offline"; return 1; }
  installed="$out/collections/ansible_collections/beamops/cluster"
  [ -f "$installed/MANIFEST.json" ] || { echo "the tarball did not install into $out/collections"; return 1; }
  # From here on, only the installed tarball is on the collections path.
  # (if-tested functions ignore set -e, hence the explicit returns)
  ANSIBLE_COLLECTIONS_PATH="$out/collections" galaxy_checks "$installed" "$inv"
  local rc=$?
  ANSIBLE_COLLECTIONS_PATH="$out/collections" ansible-playbook beamops.cluster.lab_down -e lab_name=galaxylab >/dev/null 2>&1
  return $rc
}

galaxy_checks() {
  local installed=$1 inv=$2 count=0
  for f in "$installed"/plugins/modules/*.py; do
    m=$(basename "$f" .py)
    ansible-doc "beamops.cluster.$m" > "$WORK/ansible-doc.out" 2>&1 || { cat "$WORK/ansible-doc.out"; return 1; }
    grep -q "^> MODULE beamops.cluster.$m" "$WORK/ansible-doc.out" || { echo "ansible-doc did not render beamops.cluster.$m"; cat "$WORK/ansible-doc.out"; return 1; }
    echo "ansible-doc renders beamops.cluster.$m"
    count=$((count + 1))
  done
  [ "$count" -gt 0 ] || { echo "no modules in the installed collection"; return 1; }
  ansible-playbook beamops.cluster.lab_up -e lab_name=galaxylab -e lab_network=198.19.9.0/24 -e lab_hosts=1 \
    -e lab_inventory="$inv" || return 1
  ansible -i "$inv" lab -m ansible.builtin.ping || return 1
  # The Kubernetes playbook by FQCN, render-only (no cluster here), from the installed tarball.
  ansible-playbook beamops.cluster.deploy_k8s -e kubernetes_release_name=meshprobe -e kubernetes_image=meshprobe:0.1.0 \
    -e kubernetes_render_only=true -e kubernetes_render_dir="$WORK/galaxy/manifests" || return 1
  [ -f "$WORK/galaxy/manifests/06-statefulset-meshprobe.yaml" ] || { echo "deploy_k8s rendered no StatefulSet"; return 1; }
}

# Scenarios, longest first, run MOLECULE_LANES at a time (default 2): each has its own lab and network and its own
# ephemeral directory, so they do not meet; most of a scenario's time is SSH round trips and node boots, which
# overlap well on 2 cores. Each scenario's output is printed whole when it ends.
MOLECULE_ORDER=(upgrade_rollback rebar3 tls dnspoll epmd gossip default kubernetes)

molecule_one() {
  local s=$1 log="$WORK/molecule/$1.log" start rc
  start=$(date +%s)
  molecule test -s "$s" >"$log" 2>&1
  rc=$?
  echo "$rc $(( $(date +%s) - start ))" >"$WORK/molecule/$s.rc"
}

step_molecule() {
  local failed=0 s d scenarios=() lanes=${MOLECULE_LANES:-2} rc secs recap=()
  for s in "${MOLECULE_ORDER[@]}"; do [ -d "molecule/$s" ] && scenarios+=("$s"); done
  for d in molecule/*/; do
    s=$(basename "$d")
    [[ " ${scenarios[*]} " == *" $s "* ]] || scenarios+=("$s")
  done
  rm -rf "$WORK/molecule" && mkdir -p "$WORK/molecule"
  export -f molecule_one
  export WORK
  # shellcheck disable=SC2016  # $1 is the child shell's argument
  printf '%s\n' "${scenarios[@]}" | xargs -P "$lanes" -I{} bash -c 'molecule_one "$1"' _ {}
  for s in "${scenarios[@]}"; do
    echo "--- molecule scenario $s"
    cat "$WORK/molecule/$s.log"
    read -r rc secs <"$WORK/molecule/$s.rc" 2>/dev/null || { rc=1; secs=unknown; }
    recap+=("molecule scenario $s: $([ "$rc" = 0 ] && echo passed || echo "FAILED (exit $rc)") in ${secs}s")
    echo "--- ${recap[-1]}"
    [ "$rc" = 0 ] || failed=1
  done
  printf '%s\n' "${recap[@]}"
  return $failed
}

passed=0; failed=0; summary=()
for s in "${STEPS[@]}"; do
  printf '\n==================== %s ====================\n' "$s"
  start=$(date +%s)
  if "step_$s"; then r=passed; passed=$((passed + 1)); else r=FAILED; failed=$((failed + 1)); fi
  summary+=("$(printf '%-12s %-7s %5ss' "$s" "$r" "$(( $(date +%s) - start ))")")
done
printf '\n==================== summary ====================\n'
printf '%s\n' "${summary[@]}"
echo "steps: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
