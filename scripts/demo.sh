#!/usr/bin/env bash
# The main job, end to end on this machine: install pushgate (building it) on a new bare
# repository, push the example Magento Cloud project (accepted), then the same project with a
# typo in services.yaml (refused, with file:line:col and a hint). Everything lives under
# target/demo (or $PUSHGATE_DEMO_DIR); nothing is installed system-wide.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
demo="${PUSHGATE_DEMO_DIR:-$root/target/demo}"
rm -rf "$demo"
mkdir -p "$demo"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "install pushgate on $demo/shop.git"
"$root/install.sh" --prefix "$demo/prefix" --data "$demo/data" "$demo/shop.git"

git init -q -b main "$demo/work"
cd "$demo/work"
git config user.name "Demo Developer"
git config user.email "dev@example.com"
cp -R "$root/examples/magento/." .
git add -A
git commit -q -m "Magento Cloud project"

step "git push of a valid configuration"
git push "$demo/shop.git" HEAD:refs/heads/main

step "git push of a configuration with a typo (mysqll) and an upstream to a missing app"
sed -i 's/mysql:11.4/mysqll:11.4/' .magento/services.yaml
sed -i 's/mymagento:http/magento:http/' .magento/routes.yaml
git commit -q -am "typos"
if git push "$demo/shop.git" HEAD:refs/heads/main; then
  echo "demo: the broken push was accepted; that is a bug" >&2
  exit 1
fi
step "the broken push was refused; main still points at $(git --git-dir="$demo/shop.git" rev-parse --short main)"
