#!/usr/bin/env bash
# The fresh machine check: the README's two commands, exactly as written, in a clean clone
# on a new Debian 12 amd64 machine (a copy of build/fresh/make_root.sh's pristine root).
#
#   build/fresh/run.sh [--repo DIR] [--ref REF] [--verbose]   # what `make test-fresh` runs
#   build/fresh/run.sh --shell [-- COMMAND...]               # a shell (or COMMAND, run in
#                                                            # the clone) in the last root
#
#   1. the pristine base (made once, cached) is copied to a work root (the last one deleted)
#   2. `git clone` of DIR (default: this repo) at REF (default: HEAD, i.e. committed work
#      only) into a private 0700 folder /root/edge-min-XXXXXX of the root, as `mktemp -d` makes
#   3. in the root: `make test` (must pass), then `make run` in the background until
#      GET http://127.0.0.1:8000/health answers 200, then GET /sync/status must report
#      "status": "success" within FRESH_SYNC_TIMEOUT (90 s); then SIGTERM to `make run`'s
#      process group, which must be gone within FRESH_STOP_TIMEOUT (30 s).
#
# The root is a machine of its own, in private namespaces (unshare --net --mount --pid
# --cgroup --fork --kill-child):
#   - network: its own loopback, so its 127.0.0.1 ports (8000, 8765, PostgreSQL, sshd, the
#     tests' servers) never meet the host's or another run's; the outside (the package
#     registries) through slirp4netns (user-mode NAT, DNS at 10.0.2.3), which cannot reach
#     the host's own loopback;
#   - mounts: fresh /proc, /sys (read-only), /run, /dev/shm, and the host's /dev; all vanish
#     with it;
#   - PIDs: every process started in it (PostgreSQL, sshd, the runtime, ...) is killed when
#     the check ends, whatever happens;
#   - cgroups: it lives in a child cgroup of ours in every hierarchy and sees that as its
#     root, so the runtime's per-worker cgroups (/sys/fs/cgroup/cpu/edge_min/w-<pid>-...)
#     are its own: a runtime on the host, whose pids mean other processes, never sweeps them
#     away (and ours never sweeps the host's). This host has cgroup v1 controllers (cpu is
#     not in the unified v2 tree), so the runtime uses its cgroup1 mode here, where a stock
#     Debian 12 with systemd would use cgroup2.
#
# What makes the root differ from a new machine, on purpose:
#   - the CA certificates this host's administrator added (/usr/local/share/ca-certificates,
#     here the TLS egress proxy's) are added to the root's system store, as a machine on this
#     network would have them; no PIP_*/NODE_* variables or pip/npm config files go in;
#   - /usr/sbin/policy-rc.d forbids package scripts to start services (postgresql's main
#     cluster, sshd): there is no init here; the project starts the servers it needs itself;
#   - /var/cache/apt/archives is .cache/fresh-root/apt-archives, kept between runs, so .debs
#     are downloaded once (apt still runs in full: lists, resolution, unpack, configure).
# Nothing else of the host goes in: the environment is `env -i` plus HOME, USER, LOGNAME,
# SHELL, PATH, LANG=C.UTF-8, DEBIAN_FRONTEND=noninteractive, TERM=dumb and CI (if set).
#
# Host tools: debootstrap (make_root.sh) and slirp4netns, installed with apt-get if missing.
# Logs: .cache/fresh-root/logs/<timestamp>/ (make-test.log, make-run.log, summary.txt).
# Exit status 0 only when everything passed; otherwise one line says what failed first.
# Env: FRESH_HEALTH_TIMEOUT (600 s: `make run` may have to create the venv itself),
# FRESH_SYNC_TIMEOUT (90 s), FRESH_STOP_TIMEOUT (30 s), FRESH_BASE, FRESH_WORK.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
own_repo=$(cd "$here/../.." && pwd)
cache=$own_repo/.cache/fresh-root
base=${FRESH_BASE:-$cache/base}
work=${FRESH_WORK:-$cache/work}
archives=$cache/apt-archives
chroot_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { echo "fresh: $*" >&2; }
die() { echo "fresh: FAILED: $*" >&2; exit 1; }

# The environment every command in the root gets, and nothing more.
root_env() {
  local -a env=(HOME=/root USER=root LOGNAME=root SHELL=/bin/bash PATH="$chroot_path"
                LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive TERM=dumb)
  if [[ -n ${CI:-} ]]; then env+=(CI="$CI"); fi
  printf '%s\0' "${env[@]}"
}

in_root() {  # in_root CMD...: run CMD in the root (inside the namespaces) with root_env
  local -a env
  mapfile -d '' env < <(root_env)
  chroot "$work" /usr/bin/env -i "${env[@]}" "$@"
}

# ---------------------------------------------------------------------------------------
# Inside the namespaces (PID 1 of the new PID namespace, still on the host's filesystem).

mount_cgroups() {  # the host's cgroup hierarchies, mounted afresh: rooted at our own cgroup
  mount -t tmpfs -o mode=755,nosuid,nodev,noexec tmpfs "$work/sys/fs/cgroup"
  local _src mnt fs opts _rest sub o
  while read -r _src mnt fs opts _rest; do
    [[ $mnt = /sys/fs/cgroup/* && ($fs = cgroup || $fs = cgroup2) ]] || continue
    sub=${mnt#/sys/fs/cgroup/}
    mkdir -p "$work/sys/fs/cgroup/$sub"
    if [[ $fs = cgroup2 ]]; then
      mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$work/sys/fs/cgroup/$sub"
    else
      o=$(tr , '\n' <<<"$opts" | grep -vxE 'rw|ro|relatime|noatime|nosuid|nodev|noexec' | paste -sd, -)
      [[ $o = name=* ]] && o=none,$o
      mount -t cgroup -o "nosuid,nodev,noexec,$o" cgroup "$work/sys/fs/cgroup/$sub" ||
        die "could not mount the $sub cgroup hierarchy in the root"
    fi
  done </proc/self/mounts
  # The root must not see the host's runtime cgroups (see the header).
  local parent
  for parent in "$work"/sys/fs/cgroup/*/; do
    if [[ -n ${FRESH_CGROUP_ID:-} && -e $parent$FRESH_CGROUP_ID ]]; then
      die "the root sees the host's cgroup tree at ${parent#"$work"} (cgroup namespace not in effect)"
    fi
  done
}

setup_root() {
  local waited=0
  while [[ ! -s $FRESH_NET_READY ]]; do
    (( waited++ < 300 )) || die "the root's network (slirp4netns) did not come up within 30 s"
    sleep 0.1
  done
  mount -t proc proc "$work/proc"
  mount --rbind /dev "$work/dev"
  mount --make-rslave "$work/dev"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$work/dev/shm"
  # A sysfs of this network namespace (its own lo and tap0 in /sys/class/net).
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$work/sys"
  mount_cgroups
  # /run is a tmpfs on a booted machine; /tmp is not (bookworm keeps it on disk).
  mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$work/run"
  mkdir -m 1777 "$work/run/lock"
  mkdir -p "$archives"
  mount --bind "$archives" "$work/var/cache/apt/archives"
  # slirp4netns's DNS forwarder (to the host's resolvers).
  echo "nameserver 10.0.2.3" >"$work/etc/resolv.conf"
  printf '#!/bin/sh\n# fresh machine check: package scripts start no services here\nexit 101\n' \
    >"$work/usr/sbin/policy-rc.d"
  chmod 755 "$work/usr/sbin/policy-rc.d"
  local added=0 crt
  for crt in /usr/local/share/ca-certificates/*.crt; do
    [[ -f $crt ]] || continue
    cp "$crt" "$work/usr/local/share/ca-certificates/"
    added=1
  done
  if [[ $added = 1 ]]; then
    in_root update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in the root"
  fi
  # The root must be a new machine: no pip/npm configuration of the host's.
  local f leaked=()
  for f in etc/pip.conf etc/xdg/pip root/.config/pip root/.pip root/.npmrc usr/etc/npmrc \
           root/.gitconfig opt/wheels opt/pypi; do
    [[ -e $work/$f ]] && leaked+=("/$f")
  done
  [[ ${#leaked[@]} -eq 0 ]] || die "host configuration found in the root: ${leaked[*]}"
  if in_root /usr/bin/env | grep -qE '^(PIP_|NODE_|NPM_|npm_|SSL_CERT|REQUESTS_CA|PYTHON)'; then
    die "host variables leak into the root's environment"
  fi
}

http_get() {  # http_get PATH: body on stdout; fails unless 200 within 5 s
  curl -fsS --max-time 5 "http://127.0.0.1:8000$1" 2>/dev/null
}

http_code() {  # http_code PATH: the HTTP status (000: no answer within 5 s)
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:8000$1" 2>/dev/null || true
}

sync_status() {  # sync_status: the "status" of GET /sync/status, or "" when it doesn't answer
  local body
  body=$(http_get /sync/status) || return 0
  printf '%s' "$body" | python3 -c 'import json, sys; print(json.load(sys.stdin).get("status", ""))' \
    2>/dev/null || true
}

running() {  # running PID: the namespace's process PID exists and is not a zombie
  local stat
  stat=$(cat "$work/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# stamp_lines: prefix each line with the seconds since it started ("[   42s] ..."); with
# --verbose, also to stderr.
stamp_lines() {
  perl -ne 'BEGIN { $| = 1; $t0 = time } printf "[%5ds] %s", time - $t0, $_;
            if ($ENV{FRESH_VERBOSE}) { print STDERR $_ }'
}

# phase_marks LOG: when make test's steps began, from its stamped log (best effort: the
# recipes' own echo lines, as the Makefile prints them).
phase_marks() {
  local label re at
  while IFS='|' read -r label re; do
    at=$(grep -m1 -E "^\[ *[0-9]+s\] ($re)" "$1" | sed -E 's/^\[ *([0-9]+)s\].*/\1/' || true)
    if [[ -n $at ]]; then printf '    %-32s at %s\n' "$label" "$(fmt "$at")"; fi
  done <<'MARKS'
venv created (system packages done)|python3 -m venv
pip install done|touch \.venv/\.installed-stamp
ruff (lint)|\.venv/bin/ruff check
mypy|\.venv/bin/mypy
wasm/setup.sh|bash wasm/setup\.sh
pytest started|EDGE_MIN_TEST_PG=
MARKS
}

fmt() { if [[ $1 = - ]]; then echo "-"; else echo "$(( $1 / 60 ))m$(printf '%02d' $(( $1 % 60 )))s"; fi; }

inside() {
  local logs=$FRESH_LOGS clone=$FRESH_CLONE
  local failure="" t0 rc
  local t_test=- t_health=- t_sync=- run_rc=- sync_last=""
  trap 'echo "fresh: interrupted" >&2; exit 130' INT TERM
  setup_root

  # -- make test ------------------------------------------------------------------------
  say "make test (log: ${logs#"$own_repo/"}/make-test.log)"
  t0=$(date +%s)
  set +e
  # Each line gets the seconds since the start; through a process substitution, so a
  # server that make test leaves running (PostgreSQL) cannot hold the pipeline open.
  in_root /bin/bash -lc "cd $clone && make test" </dev/null > >(stamp_lines >"$logs/make-test.log") 2>&1
  rc=$?
  set -e
  t_test=$(( $(date +%s) - t0 ))
  sleep 0.5  # the last lines through stamp_lines
  if [[ $rc -ne 0 ]]; then
    failure="make test exited $rc"
    say "make test FAILED (exit $rc) after $(fmt $t_test); its last lines:"
    tail -n 40 "$logs/make-test.log" | sed 's/^/    /' >&2
  else
    say "make test passed in $(fmt $t_test)"
  fi

  # -- make run -------------------------------------------------------------------------
  say "make run (log: ${logs#"$own_repo/"}/make-run.log)"
  t0=$(date +%s)
  local -a env
  mapfile -d '' env < <(root_env)
  # Its own process group, so the SIGTERM reaches make and everything it started.
  setsid chroot "$work" /usr/bin/env -i "${env[@]}" \
    /bin/bash -lc "cd $clone && exec make run" >"$logs/make-run.log" 2>&1 </dev/null &
  local pid=$! alive=1 deadline code health_last=none
  deadline=$(( t0 + FRESH_HEALTH_TIMEOUT ))
  while :; do
    code=$(http_code /health)
    if [[ $code = 200 ]]; then t_health=$(( $(date +%s) - t0 )); break; fi
    [[ $code = 000 ]] || health_last=$code
    if ! running "$pid"; then alive=0; break; fi
    if (( $(date +%s) >= deadline )); then break; fi
    sleep 1
  done
  if [[ $t_health != - ]]; then
    say "/health answered $(fmt $t_health) after make run started"
    deadline=$(( $(date +%s) + FRESH_SYNC_TIMEOUT ))
    while :; do
      sync_last=$(sync_status)
      if [[ $sync_last = success ]]; then t_sync=$(( $(date +%s) - t0 )); break; fi
      if ! running "$pid"; then alive=0; break; fi
      if (( $(date +%s) >= deadline )); then break; fi
      sleep 2
    done
    http_get /sync/status >"$logs/sync-status.json" || true
    if [[ $t_sync != - ]]; then
      say "/sync/status reported success $(fmt $t_sync) after make run started"
    else
      failure=${failure:-"/sync/status did not report \"success\" within ${FRESH_SYNC_TIMEOUT}s of /health (last: ${sync_last:-no answer}; see sync-status.json)"}
      say "/sync/status: no \"success\" within ${FRESH_SYNC_TIMEOUT}s (last status: ${sync_last:-no answer}); document in ${logs#"$own_repo/"}/sync-status.json"
    fi
  fi
  if [[ $alive = 0 ]] || ! running "$pid"; then
    wait "$pid" && run_rc=0 || run_rc=$?
    failure=${failure:-"make run exited $run_rc on its own (before the check finished)"}
    say "make run exited $run_rc on its own; its last lines:"
    tail -n 30 "$logs/make-run.log" | sed 's/^/    /' >&2
  else
    if [[ $t_health = - ]]; then
      failure=${failure:-"/health did not answer 200 within ${FRESH_HEALTH_TIMEOUT}s of make run (last HTTP status: $health_last)"}
      say "/health did not answer 200 within ${FRESH_HEALTH_TIMEOUT}s (last HTTP status: $health_last); make run's last lines:"
      tail -n 30 "$logs/make-run.log" | sed 's/^/    /' >&2
    fi
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    deadline=$(( $(date +%s) + FRESH_STOP_TIMEOUT ))
    while running "$pid" && (( $(date +%s) < deadline )); do sleep 0.5; done
    if running "$pid"; then
      # What is stuck where, for the report (py-spy is not in the root; the stacks in
      # /proc/PID/task/*/wchan say at least which threads wait).
      ps -o pid,stat,wchan:24,args --ppid "$pid" -p "$pid" >"$logs/make-run-stuck.txt" 2>&1 || true
      kill -KILL -- "-$pid" 2>/dev/null || true
      failure=${failure:-"make run did not stop within ${FRESH_STOP_TIMEOUT}s of SIGTERM to its process group"}
      say "make run did not stop within ${FRESH_STOP_TIMEOUT}s of SIGTERM to its process group; killed"
    fi
    wait "$pid" 2>/dev/null && run_rc=0 || run_rc=$?
    say "make run ended after SIGTERM (exit $run_rc)"
  fi

  # -- summary --------------------------------------------------------------------------
  {
    echo "fresh machine check of $FRESH_DESC"
    printf '  %-34s %s\n' "base root" "$FRESH_BASE_NOTE" \
      "delete last work root" "$(fmt "$FRESH_T_DELETE")" \
      "root copy" "$(fmt "$FRESH_T_COPY")" \
      "git clone" "$(fmt "$FRESH_T_CLONE")" \
      "make test" "$(fmt "$t_test")$( [[ $rc -eq 0 ]] && echo " (passed)" || echo " (FAILED, exit $rc)")"
    phase_marks "$logs/make-test.log"
    printf '  %-34s %s\n' \
      "make run -> /health 200" "$(fmt "$t_health")" \
      "make run -> /sync/status success" "$(fmt "$t_sync")" \
      "make run exit after SIGTERM" "$run_rc" \
      "total" "$(fmt $(( $(date +%s) - FRESH_T_START )))" \
      "logs" "${logs#"$own_repo/"}/"
    if [[ -n $failure ]]; then echo "RESULT: FAILED: $failure"; else echo "RESULT: passed"; fi
  } | tee "$logs/summary.txt" >&2
  [[ -z $failure ]]
}

if [[ ${1:-} = --inside ]]; then
  inside
  exit $?
fi
if [[ ${1:-} = --inside-shell ]]; then
  shift
  setup_root
  clone_dir=$(cd "$work/root" && ls -d edge-min-* 2>/dev/null | head -n 1 || true)
  if [[ $# -gt 0 ]]; then
    set +e
    in_root /bin/bash -lc "cd /root/${clone_dir:-} && $*"
    exit $?
  fi
  say "shell in $work (exit to leave; every process started here dies with it)"
  in_root /bin/bash -l -c "cd /root/${clone_dir:-} 2>/dev/null; exec bash -l"
  exit $?
fi

# ---------------------------------------------------------------------------------------
# On the host.

need_tool() {  # need_tool COMMAND PACKAGE: install PACKAGE with apt-get if COMMAND is missing
  command -v "$1" >/dev/null && return 0
  say "$1 not found; installing it (apt-get install $2)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2"; } >&2 ||
    die "could not install $2; install it with: apt-get install -y $2"
}

# cgroups: a child of our own cgroup in every hierarchy, for the root to live in and see as
# its root (unshare --cgroup). Echoes the directories made, one a line.
make_cgroups() {
  local id=$1 line hier path mnt dir
  while IFS= read -r line; do
    hier=${line#*:}; path=${hier#*:}; hier=${hier%%:*}
    if [[ -z $hier ]]; then
      mnt=$(awk '$3 == "cgroup2" && $2 ~ "^/sys/fs/cgroup" {print $2; exit}' /proc/self/mounts)
    else
      mnt=$(awk -v h="$hier" '$3 == "cgroup" { n = split($4, o, ","); for (i = 1; i <= n; i++) if (o[i] == h) { print $2; exit } }' /proc/self/mounts)
    fi
    [[ -n $mnt ]] || continue
    dir=${mnt}${path%/}/$id
    mkdir "$dir" 2>/dev/null || continue
    if [[ -f $dir/cpuset.cpus ]]; then
      cat "$(dirname "$dir")/cpuset.cpus" >"$dir/cpuset.cpus" 2>/dev/null || true
      cat "$(dirname "$dir")/cpuset.mems" >"$dir/cpuset.mems" 2>/dev/null || true
    fi
    echo "$dir"
  done </proc/self/cgroup
}

join_cgroups() {  # join_cgroups FILE: move this (sub)shell into the cgroups listed in FILE
  local dir
  while IFS= read -r dir; do
    echo "$BASHPID" >"$dir/cgroup.procs" 2>/dev/null || say "note: could not join $dir"
  done <"$1"
}

remove_cgroups() {  # remove_cgroups FILE: rmdir the listed cgroups and what the root made in them
  local dir _try
  while IFS= read -r dir; do
    for _try in 1 2 3 4 5 6 7 8 9 10; do
      [[ -d $dir ]] || break
      find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [[ -d $dir ]] && sleep 0.5
    done
    [[ ! -d $dir ]] || say "note: could not remove cgroup $dir"
  done <"$1"
}

# launch ARG...: run this script with ARG... in the root's private namespaces (see the header),
# in the foreground; its network is set up by slirp4netns from here. Returns its status.
launch() {
  local state rc helper
  # A handler, not an ignore: children keep the default, and the cleanup below still runs.
  trap 'say "interrupted; cleaning up"' INT TERM
  state=$(mktemp -d /tmp/edge-min-fresh.XXXXXX)
  export FRESH_NET_READY=$state/net-ready FRESH_CGROUP_ID=edge-min-fresh-$$
  make_cgroups "$FRESH_CGROUP_ID" >"$state/cgroups"
  grep -q '/cpu/\|/cpu,' "$state/cgroups" ||
    say "note: no cpu cgroup of its own for the root: its runtime's worker cgroups meet the host's"
  # The network helper: waits for the new network namespace, then gives it slirp4netns.
  (
    pid=""
    for _ in $(seq 1 200); do
      pid=$(cat "$state/pid" 2>/dev/null || true)
      if [[ -n $pid ]] && [[ $(readlink "/proc/$pid/ns/net" 2>/dev/null) != "$(readlink /proc/self/ns/net)" ]]; then
        break
      fi
      pid=""; sleep 0.05
    done
    [[ -n $pid ]] || { say "the namespaces did not appear"; exit 1; }
    exec slirp4netns --configure --mtu=65520 --disable-host-loopback --ready-fd=3 \
      "$pid" tap0 3>"$FRESH_NET_READY" >"$state/slirp4netns.log" 2>&1
  ) &
  helper=$!
  set +e
  (
    join_cgroups "$state/cgroups"
    echo "$BASHPID" >"$state/pid"
    exec unshare --net --mount --propagation private --pid --cgroup --fork --kill-child \
      -- "$0" "$@"
  )
  rc=$?
  set -e
  kill "$helper" 2>/dev/null || true
  wait "$helper" 2>/dev/null || true
  [[ -z ${FRESH_LOGS:-} || ! -d ${FRESH_LOGS:-/nonexistent} ]] || cp "$state/slirp4netns.log" "$FRESH_LOGS/" 2>/dev/null || true
  remove_cgroups "$state/cgroups"
  rm -rf "$state"
  return $rc
}

src_repo=$own_repo
ref=HEAD
verbose=0
shell=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --repo) [[ $# -ge 2 ]] || die "--repo needs a folder"; src_repo=$2; shift 2 ;;
    --ref) [[ $# -ge 2 ]] || die "--ref needs a git ref"; ref=$2; shift 2 ;;
    --verbose | -v) verbose=1; shift ;;
    --shell) shell=1; shift; break ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
done

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, mount, chroot, namespaces)"
for tool in unshare chroot curl git python3; do
  command -v "$tool" >/dev/null || die "$tool not found on the host"
done
need_tool slirp4netns slirp4netns

if [[ $shell = 1 ]]; then
  [[ -d $work/root ]] || die "no work root at $work; run build/fresh/run.sh first"
  [[ ${1:-} != -- ]] || shift
  launch --inside-shell "$@"
  exit $?
fi

FRESH_T_START=$(date +%s)
export FRESH_T_START

# A stale mount under the work root (an old run killed oddly) must never meet rm -rf.
no_mounts_under() {
  ! awk '{print $5}' /proc/self/mountinfo | grep -qE "^$(printf '%s' "$1" | sed 's/[.[\*^$]/\\&/g')(/|$)"
}

src_repo=$(cd "$src_repo" && pwd) || die "no folder $src_repo"
commit=$(git -C "$src_repo" rev-parse --verify --quiet "$ref^{commit}") ||
  die "$ref is not a commit in $src_repo"
desc="$src_repo at $ref = $(git -C "$src_repo" log -1 --format='%h %s' "$commit")"
dirty=$(git -C "$src_repo" status --porcelain --untracked-files=no 2>/dev/null | wc -l)
say "checking $desc"
if [[ $ref = HEAD && $dirty -gt 0 ]]; then
  say "note: $dirty uncommitted change(s) in $src_repo are NOT part of the check (clone of HEAD)"
fi

before=$(date +%s)
"$here/make_root.sh" "$base" || die "could not make the base root (make_root.sh)"
base_secs=$(( $(date +%s) - before ))
base_note=cached
if (( base_secs > 5 )); then base_note="made in $(fmt $base_secs)"; fi
export FRESH_BASE_NOTE=$base_note

stamp=$(date -u +%Y%m%dT%H%M%SZ)
logs=$cache/logs/$stamp
mkdir -p "$logs"

before=$(date +%s)
if [[ -e $work ]]; then
  no_mounts_under "$work" || die "something is still mounted under $work; unmount it first"
  rm -rf "$work"
fi
FRESH_T_DELETE=$(( $(date +%s) - before ))
before=$(date +%s)
cp -a "$base" "$work"
rm -f "$work/.edge-min-base-ready"
FRESH_T_COPY=$(( $(date +%s) - before ))
say "root copied to $work in $(fmt $FRESH_T_COPY) (the last one deleted in $(fmt $FRESH_T_DELETE))"

before=$(date +%s)
# A private folder, as `mktemp -d` makes (0700), in root's home.
clone_host=$(mktemp -d "$work/root/edge-min-XXXXXX")
clone=/root/${clone_host##*/}
# The host's own git configuration stays out of the clone.
GIT_CONFIG_NOSYSTEM=1 HOME=/nonexistent XDG_CONFIG_HOME=/nonexistent \
  git clone --quiet --no-hardlinks --no-checkout "$src_repo" "$clone_host" ||
  die "git clone of $src_repo failed"
GIT_CONFIG_NOSYSTEM=1 HOME=/nonexistent XDG_CONFIG_HOME=/nonexistent \
  git -C "$clone_host" -c advice.detachedHead=false checkout --quiet "$commit" ||
  die "git checkout of $commit failed"
chmod 700 "$clone_host"
FRESH_T_CLONE=$(( $(date +%s) - before ))
say "clone of $(git -C "$clone_host" rev-parse --short HEAD) in $clone (mode $(stat -c %a "$clone_host"))"

export FRESH_LOGS=$logs FRESH_CLONE=$clone FRESH_DESC=$desc
export FRESH_T_DELETE FRESH_T_COPY FRESH_T_CLONE
export FRESH_VERBOSE=$verbose
export FRESH_HEALTH_TIMEOUT=${FRESH_HEALTH_TIMEOUT:-600}
export FRESH_SYNC_TIMEOUT=${FRESH_SYNC_TIMEOUT:-90}
export FRESH_STOP_TIMEOUT=${FRESH_STOP_TIMEOUT:-30}
export FRESH_WORK=$work
{
  echo "commit=$commit"
  echo "desc=$desc"
  echo "clone=$clone"
} >"$logs/run.txt"
launch --inside
