#!/usr/bin/env bash
# B2's baseline: the bare git work of one orchard task, done by hand, one task after another.
#
#   baseline_git.sh REPO WORKTREES FIRST COUNT SOURCE
#
# For tasks FIRST .. FIRST+COUNT-1: a worktree at the integration tip, the "agent" (copy SOURCE into out/, the same
# command orchard's agent runs), commit, merge into the integration branch without any checkout (merge-tree +
# commit-tree + update-ref), remove the worktree. The integration branch is refs/heads/bench/integration; it
# starts at HEAD and a second call continues where the first one stopped.
set -euo pipefail

repo=$1 worktrees=$2 first=$3 count=$4 source=$5
ref=refs/heads/bench/integration
if ! tip=$(git -C "$repo" rev-parse --verify --quiet "$ref"); then
  tip=$(git -C "$repo" rev-parse HEAD)
  git -C "$repo" update-ref "$ref" "$tip"
fi
mkdir -p "$worktrees"

for ((i = first; i < first + count; i++)); do
  wt=$worktrees/t$i
  git -C "$repo" worktree add --quiet --detach "$wt" "$tip"
  cp "$source" "$wt/out/t$i.txt"
  git -C "$wt" add -A
  git -C "$wt" commit --quiet --no-verify -m "task t$i"
  head=$(git -C "$wt" rev-parse HEAD)
  tree=$(git -C "$repo" merge-tree --write-tree "$tip" "$head")
  new=$(git -C "$repo" commit-tree "$tree" -p "$tip" -p "$head" -m "merge task t$i")
  git -C "$repo" update-ref "$ref" "$new" "$tip"
  tip=$new
  git -C "$repo" worktree remove --force "$wt"
done
