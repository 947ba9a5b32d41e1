#!/usr/bin/env bash
# Installs pushgate on a git server: the binaries, and the hooks on each bare repository.
#
#   ./install.sh [--prefix DIR] [--data DIR] [--user USER] [--bin-dir DIR] REPO...
#   ./install.sh --uninstall REPO...
#
# --prefix    where the binaries go (PREFIX/bin); default /usr/local as root, else ~/.local
# --data      the host's data directory (queue, logs, slugs, environments); default
#             /var/lib/pushgate as root, else ${XDG_DATA_HOME:-~/.local/share}/pushgate
# --user      who owns the repositories and the data directory: the user `git push` runs the
#             hooks as (and the runner runs as); default the owner of an existing REPO, else
#             the invoking user. As root, everything in a repository and the data directory is
#             made as that user: no root-owned file is left there.
# --bin-dir   install already built binaries from DIR instead of building them here
#             (without it, they are built in ${CARGO_TARGET_DIR:-./target}/release)
# --uninstall remove pushgate's hooks from each REPO, put chained hooks back; the data
#             directory is left alone
# REPO        a bare repository; created with `git init --bare` when the path does not exist
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
user=""
uninstall=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#--prefix=}"; shift ;;
    --data) [ $# -ge 2 ] || die "--data needs a directory"; data="$2"; shift 2 ;;
    --data=*) data="${1#--data=}"; shift ;;
    --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a directory"; bin_dir="$2"; shift 2 ;;
    --user) [ $# -ge 2 ] || die "--user needs a user name"; user="$2"; shift 2 ;;
    --user=*) user="${1#--user=}"; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; repos+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) repos+=("$1"); shift ;;
  esac
done

[ ${#repos[@]} -gt 0 ] || die "name at least one bare repository (see --help)"
src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
me="$(id -un)"

# Who owns the repositories and the data directory.
if [ -z "$user" ]; then
  for repo in "${repos[@]}"; do
    if [ -d "$repo" ]; then user="$(stat -c %U "$repo")"; break; fi
  done
  user="${user:-$me}"
fi
id "$user" >/dev/null 2>&1 || die "no user $user on this host"
if [ "$user" != "$me" ] && [ "$(id -u)" != 0 ]; then
  die "only root can install for another user ($user); run it as $user or as root"
fi
group="$(id -gn "$user")"
# Runs a command as the owner, so that what it creates belongs to them (and git, which refuses
# repositories owned by someone else, works on them).
as_user() {
  if [ "$user" = "$me" ]; then "$@"; else runuser -u "$user" -- "$@"; fi
}
git_as_user() { as_user git "$@"; }

# The hook links to the binary, through any chain of links (gitolite's common hooks are such
# links): then it is ours.
is_ours() {
  local hook="$1" resolved
  [ -L "$hook" ] || { grep -qs 'pushgate-managed' "$hook"; return; }   # written by an older install.sh
  resolved="$(readlink -f "$hook" 2>/dev/null || true)"
  [ "$(basename "$resolved")" = pushgate-hook ]
}

if [ -n "$uninstall" ]; then
  for repo in "${repos[@]}"; do
    [ -d "$repo" ] || die "$repo does not exist"
    repo="$(cd "$repo" && pwd -P)"
    hooks="$(git_as_user --git-dir="$repo" config --get core.hooksPath || echo "$repo/hooks")"
    for name in pre-receive post-receive; do
      if [ -e "$hooks/$name" ] || [ -L "$hooks/$name" ]; then
        if is_ours "$hooks/$name"; then
          as_user rm -f "$hooks/$name"
          say "removed $hooks/$name"
        else
          say "kept $hooks/$name: it is not pushgate's"
          continue
        fi
      fi
      if [ -e "$hooks/$name.chained" ]; then
        as_user mv "$hooks/$name.chained" "$hooks/$name"
        say "put back the $name hook that ran after pushgate"
      fi
    done
    left="$(git_as_user --git-dir="$repo" config --get pushgate.data || true)"
    git_as_user --git-dir="$repo" config --remove-section pushgate 2>/dev/null || true
    if [ -n "$left" ]; then
      say "$repo: pushgate removed; its data directory $left (queue, logs, releases) is left in place: remove it once no other repository uses it"
    else
      say "$repo: pushgate removed"
    fi
  done
  exit 0
fi

abspath() { (mkdir -p "$1" && cd "$1" && pwd -P); }
prefix="$(abspath "$prefix")"
if [ ! -d "$data" ]; then
  mkdir -p "$data"
  chown "$user:$group" "$data"
  say "created the data directory $data, owned by $user"
fi
data="$(cd "$data" && pwd -P)"
[ "$(stat -c %U "$data")" = "$user" ] \
  || die "the data directory $data is owned by $(stat -c %U "$data"), not $user: the hooks run as $user and write to it (chown it, or choose --user)"
bins=(pushgate-hook pushgate-runner)

# Build the release binaries unless they are built and newer than every source file.
if [ -z "$bin_dir" ]; then
  bin_dir="${CARGO_TARGET_DIR:-$src/target}/release"
  built="$bin_dir/pushgate-hook"
  if [ ! -x "$built" ] || [ -n "$(find "$src/src" "$src/schemas" "$src/data" "$src/Cargo.toml" -newer "$built" -print -quit 2>/dev/null)" ]; then
    command -v cargo >/dev/null || die "cargo is needed to build pushgate (install Rust from your distribution or rustup)"
    say "building the release binaries into $bin_dir (the first build takes a few minutes)"
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

install_hook() {
  local hooks="$1" name="$2"
  local hook="$hooks/$name" chained="$hooks/$name.chained" target="$prefix/bin/pushgate-hook"
  # Our hooks are symlinks to the binary, which runs the hook named by the link (no shell).
  if [ -L "$hook" ] && [ "$(readlink "$hook")" = "$target" ]; then return; fi
  if [ -e "$hook" ] || [ -L "$hook" ]; then
    if ! is_ours "$hook"; then
      [ -e "$chained" ] && die "$hook is not pushgate's and $chained already exists: move one of them away first"
      as_user mv "$hook" "$chained"
      say "kept the existing $name hook: it now runs after pushgate as $chained"
    fi
  fi
  as_user ln -sfn "$target" "$hook"
  say "installed $hook -> $target"
}

set_config() {
  local repo="$1" key="$2" value="$3"
  if [ "$(git_as_user --git-dir="$repo" config --get "$key" 2>/dev/null || true)" != "$value" ]; then
    git_as_user --git-dir="$repo" config "$key" "$value"
    say "$repo: git config $key $value"
  fi
}

for repo in "${repos[@]}"; do
  if [ ! -e "$repo" ]; then
    mkdir -p "$repo"
    chown "$user:$group" "$repo"
    git_as_user init --quiet --bare "$repo"
    say "created bare repository $repo, owned by $user"
  fi
  repo="$(cd "$repo" && pwd -P)"
  owner="$(stat -c %U "$repo")"
  [ "$owner" = "$user" ] \
    || die "$repo is owned by $owner, not $user: pushes run its hooks as $owner, who must own the data directory too (run install.sh --user $owner, or chown the repository)"
  [ "$(git_as_user --git-dir="$repo" rev-parse --is-bare-repository 2>/dev/null)" = true ] \
    || die "$repo is not a bare git repository (pushgate deploys from the server's bare repositories)"
  hooks="$(git_as_user --git-dir="$repo" config --get core.hooksPath || echo "$repo/hooks")"
  [ -d "$hooks" ] || as_user mkdir -p "$hooks"
  install_hook "$hooks" pre-receive
  install_hook "$hooks" post-receive
  set_config "$repo" pushgate.data "$data"
  # `git push -o pushgate.allow-data-loss` must reach the hook.
  set_config "$repo" receive.advertisePushOptions true
  # git checks every pushed object before any hook runs: a tree entry named `..`, `x/../y` or
  # `.git` never enters the repository (pushgate refuses such trees too). An admin who set it
  # either way keeps their choice.
  if [ -z "$(git_as_user --git-dir="$repo" config --get receive.fsckObjects 2>/dev/null || true)" ]; then
    set_config "$repo" receive.fsckObjects true
  fi
done
say "done: ${#repos[@]} repositor$([ ${#repos[@]} = 1 ] && echo y || echo ies), binaries in $prefix/bin, data in $data, owned by $user (run pushgate-runner as $user)"
