#!/usr/bin/env bash
# The main job, end to end on this machine, on the embedded SQLite queue: install pushgate
# (building it) on a new bare repository and start a runner; push the example Magento Cloud
# project (validated, topology printed, built, deployed, all streamed into the push); push a
# database upgrade; push a downgrade (refused: it would destroy data) and accept it with
# -o pushgate.allow-data-loss; push a typo (refused, with file:line:col and a hint); list the
# jobs and environments; roll back. Everything lives under target/demo (or $PUSHGATE_DEMO_DIR);
# nothing is installed system-wide.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
demo="${PUSHGATE_DEMO_DIR:-$root/target/demo}"
rm -rf "$demo"
mkdir -p "$demo"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "install pushgate on $demo/shop.git"
"$root/install.sh" --prefix "$demo/prefix" --data "$demo/data" "$demo/shop.git"

step "start a runner: $demo/prefix/bin/pushgate-runner serve --data $demo/data"
"$demo/prefix/bin/pushgate-runner" serve --data "$demo/data" > "$demo/runner.out" 2>&1 &
runner_pid=$!
trap 'kill -TERM $runner_pid 2>/dev/null; wait $runner_pid 2>/dev/null' EXIT
for _ in $(seq 1 100); do [ -p "$demo/data/wakeup" ] && break; sleep 0.05; done

git init -q -b main "$demo/work"
cd "$demo/work"
git config user.name "Demo Developer"
git config user.email "dev@example.com"
cp -R "$root/examples/magento/." .
git add -A
git commit -q -m "Magento Cloud project"

step "git push of a valid configuration"
git push "$demo/shop.git" HEAD:refs/heads/main

refused() {
  if git push "$@"; then
    echo "demo: that push should have been refused" >&2
    exit 1
  fi
}

step "git push of a database upgrade (MariaDB 11.4 -> 11.8)"
sed -i 's/mysql:11.4/mysql:11.8/' .magento/services.yaml
git commit -q -am "Upgrade MariaDB"
git push "$demo/shop.git" HEAD:refs/heads/main

step "git push of a downgrade back to 11.4: refused, it would destroy data"
sed -i 's/mysql:11.8/mysql:11.4/' .magento/services.yaml
git commit -q -am "Back to MariaDB 11.4"
refused "$demo/shop.git" HEAD:refs/heads/main

step "the same push, accepting the loss"
git push -o pushgate.allow-data-loss "$demo/shop.git" HEAD:refs/heads/main

step "git push of a typo (mysqll) and an upstream to a missing app: refused"
sed -i 's/mysql:11.4/mysqll:11.4/' .magento/services.yaml
sed -i 's/mymagento:http/magento:http/' .magento/routes.yaml
git commit -q -am "typos"
refused "$demo/shop.git" HEAD:refs/heads/main
echo "main still points at $(git --git-dir="$demo/shop.git" rev-parse --short main)"

step "the build queue (SQLite in $demo/data): pushgate-runner jobs"
"$demo/prefix/bin/pushgate-runner" jobs --data "$demo/data"

step "the environments: pushgate-runner envs"
"$demo/prefix/bin/pushgate-runner" envs --data "$demo/data"
echo "current release serves: $(cat "$demo"/data/environments/*/main/current/mymagento/pub/index.php)"

step "roll back to the previous release, at once: pushgate-runner rollback main"
"$demo/prefix/bin/pushgate-runner" rollback main --data "$demo/data"
