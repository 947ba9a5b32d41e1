#!/usr/bin/env bash
# Installs pushgate on a git server: the binaries, and the hooks on each bare repository.
#
#   ./install.sh [--prefix DIR] [--data DIR] REPO...
#
# --prefix  where the binaries go (PREFIX/bin); default /usr/local as root, else ~/.local
# --data    the host's data directory (queue, logs, slugs, environments); default
#           /var/lib/pushgate as root, else ${XDG_DATA_HOME:-~/.local/share}/pushgate
# --bin-dir install already built binaries from DIR instead of building them here
# REPO      a bare repository; created with `git init --bare` when the path does not exist
#
# It installs the pre-receive (validation, topology, reservation) and post-receive (queueing)
# hooks. Running it again changes nothing. A hook already present that is not ours is kept: it
# is moved to HOOK.chained and still runs with the same input (after pushgate accepts).
set -euo pipefail

die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }

if [ "$(id -u)" = 0 ]; then
  prefix=/usr/local
  data=/var/lib/pushgate
else
  prefix="$HOME/.local"
  data="${XDG_DATA_HOME:-$HOME/.local/share}/pushgate"
fi
repos=()
bin_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#--prefix=}"; shift ;;
    --data) [ $# -ge 2 ] || die "--data needs a directory"; data="$2"; shift 2 ;;
    --data=*) data="${1#--data=}"; shift ;;
    --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a directory"; bin_dir="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; repos+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) repos+=("$1"); shift ;;
  esac
done

abspath() { (mkdir -p "$1" && cd "$1" && pwd -P); }
src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
prefix="$(abspath "$prefix")"
data="$(abspath "$data")"
bins=(pushgate-hook pushgate-runner)

# Build the release binaries unless they are built and newer than every source file.
if [ -z "$bin_dir" ]; then
  bin_dir="$src/target/release"
  built="$bin_dir/pushgate-hook"
  if [ ! -x "$built" ] || [ -n "$(find "$src/src" "$src/schemas" "$src/data" "$src/Cargo.toml" -newer "$built" -print -quit 2>/dev/null)" ]; then
    command -v cargo >/dev/null || die "cargo is needed to build pushgate (install Rust from your distribution or rustup)"
    say "building release binaries"
    (cd "$src" && cargo build --release --quiet)
  fi
fi

mkdir -p "$prefix/bin"
for b in "${bins[@]}"; do
  [ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing"
  if ! cmp -s "$bin_dir/$b" "$prefix/bin/$b"; then
    install -m 0755 "$bin_dir/$b" "$prefix/bin/$b.new"
    mv -f "$prefix/bin/$b.new" "$prefix/bin/$b"   # atomic: a running push keeps its binary
    say "installed $prefix/bin/$b"
  fi
done
mkdir -p "$data"

install_hook() {
  local hooks="$1" name="$2"
  local hook="$hooks/$name" chained="$hooks/$name.chained" target="$prefix/bin/pushgate-hook"
  # Our hooks are symlinks to the binary, which runs the hook named by the link (no shell).
  if [ -L "$hook" ] && [ "$(readlink "$hook")" = "$target" ]; then return; fi
  if [ -e "$hook" ] || [ -L "$hook" ]; then
    local ours=""
    [ -L "$hook" ] && [ "$(basename "$(readlink "$hook")")" = pushgate-hook ] && ours=1
    grep -qs 'pushgate-managed' "$hook" && ours=1   # written by an older install.sh
    if [ -z "$ours" ]; then
      [ -e "$chained" ] && die "$hook is not pushgate's and $chained already exists: move one of them away first"
      mv "$hook" "$chained"
      say "kept the existing $name hook: it now runs after pushgate as $chained"
    fi
  fi
  ln -sfn "$target" "$hook"
  say "installed $hook -> $target"
}

set_config() {
  local repo="$1" key="$2" value="$3"
  if [ "$(git --git-dir="$repo" config --get "$key" 2>/dev/null || true)" != "$value" ]; then
    git --git-dir="$repo" config "$key" "$value"
    say "$repo: git config $key $value"
  fi
}

for repo in "${repos[@]}"; do
  if [ ! -e "$repo" ]; then
    git init --quiet --bare "$repo"
    say "created bare repository $repo"
  fi
  repo="$(cd "$repo" && pwd -P)"
  [ "$(git --git-dir="$repo" rev-parse --is-bare-repository 2>/dev/null)" = true ] \
    || die "$repo is not a bare git repository (pushgate deploys from the server's bare repositories)"
  hooks="$(git --git-dir="$repo" config --get core.hooksPath || echo "$repo/hooks")"
  mkdir -p "$hooks"
  install_hook "$hooks" pre-receive
  install_hook "$hooks" post-receive
  set_config "$repo" pushgate.data "$data"
  # `git push -o pushgate.allow-data-loss` must reach the hook.
  set_config "$repo" receive.advertisePushOptions true
  # git checks every pushed object before any hook runs: a tree entry named `..`, `x/../y` or
  # `.git` never enters the repository (pushgate refuses such trees too). An admin who set it
  # either way keeps their choice.
  if [ -z "$(git --git-dir="$repo" config --get receive.fsckObjects 2>/dev/null || true)" ]; then
    set_config "$repo" receive.fsckObjects true
  fi
done
say "done: ${#repos[@]} repositor$([ ${#repos[@]} = 1 ] && echo y || echo ies), binaries in $prefix/bin, data in $data"
