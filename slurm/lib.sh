# shellcheck shell=bash
# Helpers shared by the idgenrec sbatch scripts (sourced, never executed).
#
# Why one file: every script needs the same view of the allocation (nodes, master address and port, processes per
# node, CPU or GPU), the same launch command and the same DRY_RUN behaviour, so a fix lands once.
#
# Launchers (LAUNCHER=...):
#   torchrun   (default) one `srun` task per node runs `python -m torch.distributed.run` with a c10d rendezvous on
#              MASTER_ADDR:MASTER_PORT. No ssh, and TORCH_ELASTIC_SHUTDOWN_TIMEOUT gives the ranks time to write
#              their checkpoint after SIGTERM.
#   deepspeed  one `srun` task per node runs the DeepSpeed launcher with a hostfile built from
#              `scontrol show hostnames` (`HOST slots=N`) in --no_ssh mode (node rank from SLURM_NODEID). Its
#              local launcher kills ranks 30 s after SIGTERM, so a slow checkpoint can be cut short.

set -euo pipefail

PYTHON=${PYTHON:-python3}
DRY_RUN=${DRY_RUN:-0}
LAUNCHER=${LAUNCHER:-torchrun}

die() {
  printf 'idgenrec-slurm: error: %s\n' "$*" >&2
  exit 2
}

log() {
  printf 'idgenrec-slurm: %s\n' "$*" >&2
}

# Print a command exactly as it would run (shell-quoted, one line, prefixed by "+").
show() {
  local out="+"
  local arg
  for arg in "$@"; do
    out+=" $(printf '%q' "$arg")"
  done
  printf '%s\n' "$out"
}

# Run a command, or only print it when DRY_RUN=1.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    show "$@"
  else
    "$@"
  fi
}

# Export a variable for every later command; DRY_RUN=1 prints it as an `export` line.
setenv() {
  export "$1=$2"
  if [[ $DRY_RUN == 1 ]]; then
    printf '+ export %s=%q\n' "$1" "$2"
  fi
}

# GPUs of this node: SLURM_GPUS_ON_NODE when SLURM set it, else what nvidia-smi lists, else 0.
gpus_on_node() {
  if [[ -n ${SLURM_GPUS_ON_NODE:-} ]]; then
    printf '%s\n' "$SLURM_GPUS_ON_NODE"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    nvidia-smi -L | grep -c '^GPU'
  else
    printf '0\n'
  fi
}

# Read the allocation into HOSTS, NNODES, JOB_ID, MASTER_ADDR, MASTER_PORT, GPUS_PER_NODE, NPROC_PER_NODE; export
# MASTER_ADDR/PORT, and DS_ACCELERATOR=cpu when the nodes have no GPU (NCCL_* settings pass through from the caller).
slurm_allocation() {
  [[ -n ${SLURM_JOB_NODELIST:-} ]] || die "SLURM_JOB_NODELIST is not set: submit this script with sbatch"
  local hosts
  hosts=$(scontrol show hostnames "$SLURM_JOB_NODELIST") || die "scontrol show hostnames '$SLURM_JOB_NODELIST' failed"
  mapfile -t HOSTS <<<"$hosts"
  [[ -n ${HOSTS[0]} ]] || die "scontrol show hostnames '$SLURM_JOB_NODELIST' returned no hosts"
  NNODES=${SLURM_NNODES:-${#HOSTS[@]}}
  ((NNODES == ${#HOSTS[@]})) || die "SLURM_NNODES=$NNODES but the node list has ${#HOSTS[@]} hosts"
  JOB_ID=${SLURM_JOB_ID:-0}
  MASTER_ADDR=${MASTER_ADDR:-${HOSTS[0]}}
  MASTER_PORT=${MASTER_PORT:-$((20000 + JOB_ID % 10000))}
  GPUS_PER_NODE=${GPUS_PER_NODE:-$(gpus_on_node)}
  if ((GPUS_PER_NODE > 0)); then
    NPROC_PER_NODE=${NPROC_PER_NODE:-$GPUS_PER_NODE}
  else
    NPROC_PER_NODE=${NPROC_PER_NODE:-1}
    setenv DS_ACCELERATOR cpu
  fi
  setenv MASTER_ADDR "$MASTER_ADDR"
  setenv MASTER_PORT "$MASTER_PORT"
  log "nodes=$NNODES (${HOSTS[*]}) procs/node=$NPROC_PER_NODE gpus/node=$GPUS_PER_NODE master=$MASTER_ADDR:$MASTER_PORT"
}

# srun options for one task per node over the whole allocation (CPUs passed explicitly: srun no longer inherits
# --cpus-per-task from sbatch).
srun_per_node() {
  SRUN=(srun --nodes="$NNODES" --ntasks="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1)
  if [[ -n ${SLURM_CPUS_PER_TASK:-} ]]; then
    SRUN+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
  fi
}

# Write the DeepSpeed hostfile (`HOST slots=N`, one line per node, allocation order) to $1.
write_hostfile() {
  local file=$1 host
  mkdir -p "$(dirname "$file")"
  : >"$file"
  for host in "${HOSTS[@]}"; do
    printf '%s slots=%s\n' "$host" "$NPROC_PER_NODE" >>"$file"
  done
  if [[ $DRY_RUN == 1 ]]; then
    printf '+ # hostfile %s:\n' "$file"
    sed 's/^/+ #   /' "$file"
  fi
}

# Set LAUNCH to the command prefix that starts NNODES x NPROC_PER_NODE ranks of `python -m idgenrec.cli`; the caller
# appends the subcommand and its arguments. $1: the hostfile path (used by LAUNCHER=deepspeed).
launch_prefix() {
  local hostfile=$1
  srun_per_node
  case $LAUNCHER in
  torchrun)
    setenv TORCH_ELASTIC_SHUTDOWN_TIMEOUT "${SHUTDOWN_TIMEOUT:-240}"
    LAUNCH=("${SRUN[@]}" "$PYTHON" -m torch.distributed.run
      --nnodes="$NNODES" --nproc-per-node="$NPROC_PER_NODE"
      --rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv-id="idgenrec-$JOB_ID"
      --max-restarts=0 -m idgenrec.cli)
    ;;
  deepspeed)
    write_hostfile "$hostfile"
    # SLURM_NODEID differs per node, so it is read by the shell inside each srun task.
    # shellcheck disable=SC2016
    LAUNCH=("${SRUN[@]}" bash -c 'exec "$0" -m deepspeed.launcher.runner --node_rank="$SLURM_NODEID" "$@"'
      "$PYTHON" --no_ssh --hostfile="$hostfile" --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT"
      --no_local_rank --module idgenrec.cli)
    ;;
  *)
    die "LAUNCHER=$LAUNCHER: use torchrun or deepspeed"
    ;;
  esac
}

# Run a training command (LAUNCH + args) for run folder $1 and decide what happens when it stops:
#  - finished ($DONE_FILE exists)                          -> exit 0
#  - stopped at the time-limit signal (TERM@300, sent to the ranks only), $LATEST_CHECKPOINT written by this job,
#    fewer than MAX_REQUEUES restarts                      -> `scontrol requeue`, so the job resumes from `latest`
#  - otherwise (crash, or the batch shell itself got SIGTERM: scancel, or preemption that SLURM requeues itself)
#                                                          -> the launch's exit status
train_with_requeue() {
  local out=$1
  shift
  local done_file=${DONE_FILE:-$out/summary.json}
  local max_requeues=${MAX_REQUEUES:-20}
  local latest=${LATEST_CHECKPOINT:-$out/checkpoints/latest}
  if [[ $DRY_RUN == 1 ]]; then
    run "${LAUNCH[@]}" "$@"
    printf '+ # afterwards, unless %s exists or this shell got SIGTERM, when %s advanced:\n' \
      "$done_file" "$latest"
    show scontrol requeue "$JOB_ID"
    return 0
  fi
  GOT_TERM=0
  trap 'GOT_TERM=1; log "batch shell got SIGTERM; waiting for the ranks to checkpoint"' TERM
  mkdir -p "$out"
  local stamp="$out/.launch-$JOB_ID"
  # Back-dated by a second: file times are coarse (a few ms), so a checkpoint written right after the launch could
  # otherwise carry the stamp's own time and not count as newer; no earlier job's checkpoint is that recent.
  touch -d '1 second ago' "$stamp"
  local rc=0
  "${LAUNCH[@]}" "$@" || rc=$?
  trap - TERM
  if [[ -e $done_file ]]; then
    rm -f "$stamp"
    log "finished: $done_file"
    return 0
  fi
  local advanced
  advanced=$(find "$latest" -newer "$stamp" -print -quit 2>/dev/null || true)
  rm -f "$stamp"
  if ((GOT_TERM == 0)) && [[ -n $advanced ]] && ((${SLURM_RESTART_COUNT:-0} < max_requeues)); then
    log "stopped before the end (exit $rc) with a fresh checkpoint: requeueing job $JOB_ID"
    scontrol requeue "$JOB_ID" || die "scontrol requeue $JOB_ID failed: resubmit with OUT=$out to resume"
    return 0
  fi
  log "stopped before the end (exit $rc); not requeued"
  return $((rc == 0 ? 1 : rc))
}
