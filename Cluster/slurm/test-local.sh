#!/usr/bin/env bash
# A real Slurm on this one machine, to check the batch scripts as a cluster user
# meets them: installs Debian's Slurm and munge (root), writes a one-node
# configuration in a private folder, starts munged, slurmctld and slurmd,
# then
#   1. sbatch train.sbatch (2 ranks) on a tiny synthetic set: one MPI job of 2 ranks, finished;
#   2. sbatch evaluate.sbatch (2 ranks) on its checkpoint;
#   3. a long training, preempted with `scancel --signal=USR1 --batch`: the ranks checkpoint
#      the exact step and exit 3; resubmitted, it resumes from that checkpoint and finishes;
# and stops every daemon it started (also on errors). Several minutes: not part of Cluster/test.sh.
#   Cluster/slurm/test-local.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "test-local: needs root (installs and runs Slurm's daemons)" >&2; exit 1; }
for p in slurm-wlm munge; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    echo "test-local: installing $p"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$p" >/dev/null; }
done
[ -x .build/release/reid-dist ] || Cluster/setup.sh
work=$(mktemp -d /tmp/reid-slurm.XXXX)
chmod 755 "$work"
pids=()
cleanup() {
  set +e
  scancel --quiet -u root 2>/dev/null
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  sleep 1
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  [ -f "$work/slurm.conf.saved" ] && mv "$work/slurm.conf.saved" /etc/slurm/slurm.conf || rm -f /etc/slurm/slurm.conf
  rm -rf "$work"
}
trap cleanup EXIT
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
[ -f /etc/slurm/slurm.conf ] && cp /etc/slurm/slurm.conf "$work/slurm.conf.saved"
# cgroup process tracking when this machine offers cgroup v2 with the controllers Slurm needs;
# otherwise (containers, gVisor) linuxproc, which tracks a job's processes by parentage.
track=proctrack/linuxproc
if [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -q cpuset /sys/fs/cgroup/cgroup.controllers && [ -w /sys/fs/cgroup ]; then
  track=proctrack/cgroup
  printf 'CgroupPlugin=cgroup/v2\nConstrainCores=yes\n' > /etc/slurm/cgroup.conf
fi
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=reidtest
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=$track
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
KillWait=30
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
mkdir -p "$work/state" "$work/spool" /run/munge
chown munge:munge /run/munge
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged; pids+=("$(pgrep -x munged | head -1)")
fi
slurmctld -i; sleep 1; pids+=("$(cat "$work/slurmctld.pid")")
slurmd; sleep 2; pids+=("$(cat "$work/slurmd.pid")")
for _ in $(seq 1 30); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 1; done
sinfo -h -o "%P %D %T %c" | sed 's/^/test-local: sinfo: /'
echo "test-local: Slurm up on $host ($cpus CPUs, $track)"

wait_job() {  # JOBID TIMEOUT -> prints the state at the end
  local id=$1 limit=$2 t=0 st
  while [ $t -lt "$limit" ]; do
    st=$(scontrol show job "$id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
    case "$st" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|PREEMPTED|OUT_OF_MEMORY) echo "$st"; return;; esac
    sleep 1; t=$((t + 1))
  done
  echo "STILL-$st"
}
fail() { echo "test-local: FAILED: $*" >&2; exit 1; }

data="$work/data"; run="$work/run"
.build/release/reid-dist synth --out "$data" --train-ids 12 --test-ids 8 >/dev/null
cfg="$work/tiny.yaml"
cat > "$cfg" <<YAML
data: {root: "$data", height: 64, width: 32}
model: {depth: 18, width: 8, groups: 2, branches: 2}
sampler: {ids_per_batch: 4, instances: 2}
optim: {name: sgd, lr: 0.05}
schedule: {epochs: 2, warmup_epochs: 0, milestones: [10]}
train: {run_dir: "$run", checkpoint_every: 1, eval_every: 0, log_every: 2}
eval: {batch_size: 16}
YAML
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd "$work"; repo=$(cd - >/dev/null; pwd); cd "$repo"

# 1. Training: one MPI job of 2 ranks.
id=$(sbatch --parsable --ntasks=2 --chdir="$repo" --output="$work/train-%j.out" Cluster/slurm/train.sbatch "$cfg")
st=$(wait_job "$id" 300); out="$work/train-$id.out"
echo "test-local: train.sbatch job $id: $st"; sed 's/^/  | /' "$out" | grep -E "model:|eval:|trained|saved" || true
[ "$st" = COMPLETED ] || { cat "$out"; fail "training job $id ended $st"; }
grep -q "2 MPI ranks" "$out" || fail "the job did not form 2 MPI ranks"
# 2. Evaluation with 2 ranks.
id=$(sbatch --parsable --ntasks=2 --chdir="$repo" --output="$work/eval-%j.out" Cluster/slurm/evaluate.sbatch "$cfg" "$run" --json "$work/eval.json")
st=$(wait_job "$id" 300); out="$work/eval-$id.out"
echo "test-local: evaluate.sbatch job $id: $st"; grep -E "rank-1|%" "$out" | sed 's/^/  | /' || true
[ "$st" = COMPLETED ] && [ -s "$work/eval.json" ] || { cat "$out"; fail "evaluation job $id ended $st"; }
# 3. Preemption: a long run, USR1 to the batch step, a checkpoint of the exact step, exit 3; then resume.
run="$work/run2"
id=$(sbatch --parsable --ntasks=2 --chdir="$repo" --output="$work/long-%j.out" Cluster/slurm/train.sbatch "$cfg" \
     --set train.run_dir="$run" --set schedule.epochs=400 --set train.checkpoint_every=1000)
for _ in $(seq 1 120); do grep -q '"global_step":8,' "$run/metrics.jsonl" 2>/dev/null && break; sleep 1; done
scancel --signal=USR1 --batch "$id" || { cat "$work/long-$id.out"; fail "job $id was not running when signalled"; }
st=$(wait_job "$id" 120); out="$work/long-$id.out"
echo "test-local: long job $id after scancel --signal=USR1 --batch: $st"; grep -E "stopped on|saved" "$out" | sed 's/^/  | /' || true
grep -q "stopped on SIGUSR1" "$out" || { cat "$out"; fail "the ranks did not stop on the signal"; }
grep -q "ExitCode=3:0" <(scontrol show job "$id") || echo "test-local: note: exit code $(scontrol show job "$id" | grep -o 'ExitCode=[0-9:]*')"
latest=$(cat "$run/checkpoints/latest")
[[ "$latest" == *-step-* ]] || fail "no mid-epoch checkpoint (latest: $latest)"
epoch=$(grep -o '"epoch" *: *[0-9]*' "$run/checkpoints/$latest/state.json" | grep -o '[0-9]*$')
id=$(sbatch --parsable --ntasks=2 --chdir="$repo" --output="$work/resume-%j.out" Cluster/slurm/train.sbatch "$cfg" \
     --set train.run_dir="$run" --set schedule.epochs=$((epoch + 1)) --set train.checkpoint_every=1000)
st=$(wait_job "$id" 300); out="$work/resume-$id.out"
echo "test-local: resubmitted job $id: $st"; grep -E "resumed from|already trained" "$out" | sed 's/^/  | /' || true
grep -q "resumed from $run/checkpoints/$latest" "$out" || { cat "$out"; fail "the resubmission did not resume from $latest"; }
echo "test-local: all checks passed"
