#!/usr/bin/env bash
# The main job, end to end on this machine, on the embedded SQLite queue: install pushgate
# (building it) on a new bare repository and start a runner; push the example Magento Cloud
# project (validated, topology printed, built, deployed, all streamed into the push); push a
# database upgrade; push a downgrade (refused: it would destroy data) and accept it with
# -o pushgate.allow-data-loss; push a typo (refused, with file:line:col and a hint); list the
# jobs and environments; roll back; fetch the deployed site through pushgate's router (nginx
# and PHP-FPM, Debian's packages, installed if missing); and the web console's API. Everything
# lives under target/demo (or $PUSHGATE_DEMO_DIR); the router listens on
# 127.0.0.1:${PUSHGATE_DEMO_PORT:-8080}, the console on 127.0.0.1:${PUSHGATE_DEMO_HTTP_PORT:-7080},
# and both stop when the demo ends (PUSHGATE_DEMO_KEEP=1 keeps them until Ctrl-C, to open the
# console in a browser).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
demo="${PUSHGATE_DEMO_DIR:-$root/target/demo}"
# What a run left (killed before it could stop its router and apps): stopped, so that its ports
# are free again.
stop_processes() {
  for pid_file in "$demo"/data/router/run/*.pid "$demo"/data/router/pools/*/php.pid; do
    [ -f "$pid_file" ] || continue
    pid="$(cat "$pid_file")"
    # Only a process of this demo (its command line names the demo's directory): a pid file
    # left by an earlier run may name a process that has nothing to do with it now.
    if [ -n "$pid" ] && grep -qaF "$demo" "/proc/$pid/cmdline" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  # Each environment's network namespace is bound in /run/pushgate/netns (named in its spec).
  for spec in "$demo"/data/router/net/*.json; do
    [ -f "$spec" ] || continue
    ns="$(sed -n 's/^ *"ns": *"\(.*\)",*$/\1/p' "$spec" 2>/dev/null || true)"
    [ -n "$ns" ] && umount -l "$ns" 2>/dev/null && rm -f "$ns"
  done
  # The apps' disks (images mounted below the demo's directory), deepest first: a mounted one
  # would keep the next run from removing the directory.
  awk '{print $5}' /proc/self/mountinfo | grep -F "$demo/" | sort -r | while read -r point; do
    umount -l "$point" 2>/dev/null || true
  done
  true
}
stop_processes
rm -rf "$demo"
mkdir -p "$demo"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "install pushgate on $demo/shop.git"
"$root/install.sh" --prefix "$demo/prefix" --data "$demo/data" "$demo/shop.git"

port="${PUSHGATE_DEMO_PORT:-8080}"
http_port="${PUSHGATE_DEMO_HTTP_PORT:-7080}"
if ! command -v nginx >/dev/null || ! ls /usr/sbin/php-fpm* >/dev/null 2>&1 || ! command -v curl >/dev/null \
  || ! command -v bwrap >/dev/null; then
  step "install the router's parts and the hooks' sandbox: nginx, php-fpm, curl, bubblewrap (Debian's packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx php-fpm curl \
    bubblewrap
fi
# The example app says `type: php:8.4`; a host without PHP 8.4 serves it with the PHP-FPM it
# has, which the admin declares (a host with php-fpm8.4 needs nothing).
if ! [ -x /usr/sbin/php-fpm8.4 ]; then
  fpm="$(ls /usr/sbin/php-fpm* | sort -V | tail -n 1)"
  mkdir -p "$demo/data"
  echo "{\"php:8.4\": {\"php_fpm\": \"$fpm\"}}" > "$demo/data/runtimes.json"
  echo "this host has no PHP 8.4: $demo/data/runtimes.json declares $fpm for php:8.4 apps"
fi

step "start a runner with its router and the web console: pushgate-runner serve --router 127.0.0.1:$port --http 127.0.0.1:$http_port"
"$demo/prefix/bin/pushgate-runner" serve --router "127.0.0.1:$port" --http "127.0.0.1:$http_port" --data "$demo/data" \
  > "$demo/runner.out" 2>&1 &
runner_pid=$!
stop_all() {
  # Whatever is already gone (a Ctrl-C reaches the runner too), the rest is stopped.
  set +e
  kill -TERM $runner_pid 2>/dev/null; wait $runner_pid 2>/dev/null
  # The router and the apps outlive runners by design; the demo stops them.
  stop_processes
}
trap stop_all EXIT
# Ctrl-C (and a kill) end the script through its EXIT trap: the router and the apps stop too.
trap 'exit 130' INT TERM
for _ in $(seq 1 200); do [ -p "$demo/data/wakeup" ] && [ -f "$demo/data/router/run/nginx.pid" ] && break; sleep 0.05; done
[ -f "$demo/data/router/run/nginx.pid" ] || { echo "demo: the router did not start:"; cat "$demo/runner.out"; exit 1; } >&2

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

step "an admin token for the console and API: pushgate-runner token create demo --role admin"
token="$("$demo/prefix/bin/pushgate-runner" token create demo --role admin --data "$demo/data" | tail -n 1)"
api() { curl -sS -H "Authorization: Bearer $token" "$@"; }
console="http://127.0.0.1:$http_port"

step "roll back to the previous release through the API: POST $console/api/projects/shop/environments/main/rollback"
activity="$(api -X POST "$console/api/projects/shop/environments/main/rollback")"
echo "$activity"
id="$(echo "$activity" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
for _ in $(seq 1 100); do
  state="$(api "$console/api/activities/$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')"
  [ "$state" = complete ] && break
  sleep 0.1
done
api "$console/api/activities/$id/log"

url="$("$demo/prefix/bin/pushgate-runner" envs --json --data "$demo/data" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["primary_url"])')"
step "the deployed site, through pushgate's router: curl $url"
curl -sS -i "$url"
echo
step "a page that is not a file goes to the app (passthru to /index.php): curl ${url}catalog/product/42"
curl -sS "${url}catalog/product/42"
echo

step "the console's API: the activities of project shop, newest first"
api "$console/api/projects/shop/activities" | python3 -c '
import json, sys
for a in json.load(sys.stdin):
    print("#%-3s %-9s %-11s %-8s %-6s %s by %s" % (a["id"], a["type"], a["state"], a["result"] or "-",
                                               a["environment"], a["commit"][:10], a["pusher"]))'
step "the console: $console (log in with the token above: $token)"
curl -sS "$console/" | grep -o '<title>[^<]*</title>'
if [ "${PUSHGATE_DEMO_KEEP:-}" = 1 ]; then
  echo "the site is at $url and the console at $console; Ctrl-C stops them"
  wait $runner_pid
else
  echo "the demo ends: the site and the console stop now (PUSHGATE_DEMO_KEEP=1 bash scripts/demo.sh keeps them"
  echo "running until Ctrl-C, to open them in a browser)"
fi
