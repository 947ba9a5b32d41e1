#!/usr/bin/env bash
# Installs pushgate on a git server: the binaries, and the hooks on each bare repository.
#
#   ./install.sh [--prefix DIR] [--data DIR] [--user USER] [--bin-dir DIR] [--layout L] REPO...
#   ./install.sh --uninstall [--layout L] REPO...
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
# --layout    how the git server runs hooks:
#               git       (default) REPO/hooks/pre-receive and post-receive, links to the binary;
#                         a hook already there is kept and chained
#               d         REPO/HOOKS-DIR/pre-receive.d/pushgate and post-receive.d/pushgate, for
#                         servers that run every program there: Gitea, Forgejo, GitLab
#                         (--hooks-dir custom_hooks); the server runs its other hooks itself
#               gitolite  gitolite's common hooks (~USER/.gitolite/hooks/common), which gitolite
#                         links into every repository it has or creates; the data directory is
#                         the git user's global `git config pushgate.data`. REPO is not needed
# --hooks-dir with --layout d: the directory under REPO that holds the .d directories (hooks)
# --queue     a PostgreSQL URL (postgres://USER@HOST/DB): the queue runners on several machines
#             share, recorded for the hooks as `git config pushgate.queue` (run every
#             pushgate-runner with --queue URL too); default: the data directory's SQLite
# --git-shell-commands
#             also install ~USER/git-shell-commands/pushgate, for a git user whose login shell
#             is git-shell: developers then run `ssh USER@server pushgate activities`,
#             `pushgate envs`, `pushgate logs ID --follow` (for the projects they can push to)
# --uninstall remove pushgate's hooks from each REPO (or gitolite's common hooks), put chained
#             hooks back; the data directory is left alone
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
layout=git
hooks_subdir=hooks
shell_commands=""
queue=""
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
    --layout) [ $# -ge 2 ] || die "--layout needs git, d or gitolite"; layout="$2"; shift 2 ;;
    --layout=*) layout="${1#--layout=}"; shift ;;
    --hooks-dir) [ $# -ge 2 ] || die "--hooks-dir needs a directory"; hooks_subdir="$2"; shift 2 ;;
    --git-shell-commands) shell_commands=1; shift ;;
    --queue) [ $# -ge 2 ] || die "--queue needs a postgres:// URL"; queue="$2"; shift 2 ;;
    --queue=*) queue="${1#--queue=}"; shift ;;
    -h|--help) sed -n '2,39p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; repos+=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) repos+=("$1"); shift ;;
  esac
done

case "$layout" in git|d|gitolite) ;; *) die "unknown --layout $layout (git, d or gitolite)" ;; esac
case "$queue" in ""|postgres://*|postgresql://*) ;; *) die "--queue $queue is not a postgres:// URL" ;; esac
[ ${#repos[@]} -gt 0 ] || [ "$layout" = gitolite ] || die "name at least one bare repository (see --help)"
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
home_of() { getent passwd "$1" | cut -d: -f6; }
gitolite_common() { echo "$(home_of "$user")/.gitolite/hooks/common"; }
# gitolite's own configuration repository is not a project: pushgate leaves it alone.
gitolite_admin() { echo "$(home_of "$user")/repositories/gitolite-admin.git"; }
# The git user's global git configuration, where gitolite's repositories find pushgate's.
git_global() { as_user env HOME="$(home_of "$user")" git config --global "$@"; }
gitolite_setup() {
  command -v gitolite >/dev/null || die "gitolite is not installed (Debian: apt-get install gitolite3)"
  as_user env HOME="$(home_of "$user")" gitolite setup --hooks-only >/dev/null
}

# The hook links to the binary, through any chain of links (gitolite's common hooks are such
# links): then it is ours.
is_ours() {
  local hook="$1" resolved
  [ -L "$hook" ] || { grep -qs 'pushgate-managed' "$hook"; return; }   # written by an older install.sh
  resolved="$(readlink -f "$hook" 2>/dev/null || true)"
  [ "$(basename "$resolved")" = pushgate-hook ]
}

if [ -n "$uninstall" ] && [ "$layout" = gitolite ]; then
  common="$(gitolite_common)"
  for name in pre-receive post-receive; do
    if [ -L "$common/$name" ] && is_ours "$common/$name"; then
      as_user rm -f "$common/$name"
      say "removed $common/$name"
    fi
    [ -e "$common/$name.chained" ] && as_user mv "$common/$name.chained" "$common/$name"
    # gitolite linked the common hook into each repository: those links now lead nowhere.
    for link in "$(home_of "$user")"/repositories/*.git/hooks/"$name"; do
      if [ -L "$link" ] && [ ! -e "$link" ]; then as_user rm -f "$link"; fi
    done
  done
  gitolite_setup
  left="$(git_global --get pushgate.data || true)"
  git_global --remove-section pushgate 2>/dev/null || true
  git_as_user --git-dir="$(gitolite_admin)" config --remove-section pushgate 2>/dev/null || true
  say "gitolite: pushgate removed; its data directory ${left:-?} is left in place: remove it once nothing uses it"
  exit 0
fi
if [ -n "$uninstall" ]; then
  for repo in "${repos[@]}"; do
    [ -d "$repo" ] || die "$repo does not exist"
    repo="$(cd "$repo" && pwd -P)"
    hooks="$(git_as_user --git-dir="$repo" config --get core.hooksPath || echo "$repo/hooks")"
    [ "$layout" = d ] && hooks="$repo/$hooks_subdir"
    for name in pre-receive post-receive; do
      if [ "$layout" = d ]; then
        if [ -L "$hooks/$name.d/pushgate" ]; then
          as_user rm -f "$hooks/$name.d/pushgate"
          say "removed $hooks/$name.d/pushgate"
        fi
        continue
      fi
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
    say "building the release binaries into $bin_dir (the first build takes a few minutes; cargo shows its progress)"
    (cd "$src" && cargo build --release)
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

if [ -n "$shell_commands" ]; then
  # git-shell runs what is in ~/git-shell-commands, with the arguments given over ssh.
  commands="$(home_of "$user")/git-shell-commands"
  [ -d "$commands" ] || as_user mkdir -p "$commands"
  script="#!/bin/sh
# pushgate-managed: what developers run over ssh through git-shell.
exec '$prefix/bin/pushgate-runner' --data '$data' shell \"\$@\""
  if [ "$(cat "$commands/pushgate" 2>/dev/null || true)" != "$script" ]; then
    printf '%s\n' "$script" | as_user tee "$commands/pushgate.new" >/dev/null
    as_user chmod 0755 "$commands/pushgate.new"
    as_user mv -f "$commands/pushgate.new" "$commands/pushgate"
    say "installed $commands/pushgate (ssh $user@this-host pushgate activities|envs|logs ID)"
  fi
fi

if [ "$layout" = gitolite ]; then
  # gitolite makes the repositories and links its common hooks into each, now and when it
  # creates one later; their configuration is the git user's global one.
  common="$(gitolite_common)"
  [ -d "$(dirname "$common")" ] || die "$(dirname "$common") does not exist: run \`gitolite setup\` as $user first"
  [ -d "$common" ] || as_user mkdir -p "$common"
  install_hook "$common" pre-receive
  install_hook "$common" post-receive
  global() {
    local key="$1" value="$2"
    if [ "$(git_global --get "$key" || true)" != "$value" ]; then
      git_global "$key" "$value"
      say "$user: git config --global $key $value"
    fi
  }
  global pushgate.data "$data"
  [ -z "$queue" ] || global pushgate.queue "$queue"
  global receive.advertisePushOptions true
  [ -n "$(git_global --get receive.fsckObjects || true)" ] || global receive.fsckObjects true
  if [ -d "$(gitolite_admin)" ]; then
    set_config "$(gitolite_admin)" pushgate.enabled false
  fi
  gitolite_setup
  say "done: gitolite's repositories run pushgate; binaries in $prefix/bin, data in $data, owned by $user (run pushgate-runner as $user)"
  exit 0
fi

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
  # A project's name (its directory's, without .git) is unique on the server: tokens, URLs and
  # the console name projects by it. DATA/projects.list records whose each name is.
  name="$(basename "$repo" .git)"
  registry="$data/projects.list"
  taken=""
  [ ! -f "$registry" ] || taken="$(awk -F '\t' -v n="$name" '$1 == n { print $2; exit }' "$registry")"
  if [ -n "$taken" ] && [ "$taken" != "$repo" ] && [ -d "$taken" ] \
    && [ "$(git_as_user --git-dir="$taken" config --get pushgate.data 2>/dev/null || true)" = "$data" ]; then
    die "$repo: the project name $name is already $taken's on this server (tokens, URLs and the console name projects by it): rename the repository's directory"
  fi
  if [ "$taken" != "$repo" ]; then
    { [ ! -f "$registry" ] || awk -F '\t' -v n="$name" '$1 != n' "$registry"; printf '%s\t%s\n' "$name" "$repo"; } >"$registry.new"
    mv -f "$registry.new" "$registry"
    chown "$user:$group" "$registry" 2>/dev/null || true
  fi
  if [ "$layout" = d ]; then
    for name in pre-receive post-receive; do
      dir="$repo/$hooks_subdir/$name.d"
      [ -d "$dir" ] || as_user mkdir -p "$dir"
      if [ "$(readlink "$dir/pushgate" 2>/dev/null || true)" != "$prefix/bin/pushgate-hook" ]; then
        as_user ln -sfn "$prefix/bin/pushgate-hook" "$dir/pushgate"
        say "installed $dir/pushgate -> $prefix/bin/pushgate-hook"
      fi
    done
  else
    hooks="$(git_as_user --git-dir="$repo" config --get core.hooksPath || echo "$repo/hooks")"
    [ -d "$hooks" ] || as_user mkdir -p "$hooks"
    install_hook "$hooks" pre-receive
    install_hook "$hooks" post-receive
  fi
  set_config "$repo" pushgate.data "$data"
  [ -z "$queue" ] || set_config "$repo" pushgate.queue "$queue"
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
