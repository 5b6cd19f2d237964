#!/usr/bin/env bash
# A cluster of N "nodes" on this machine: one Linux network namespace per node,
# joined by veth pairs through a bridge, each link shaped with tc (rate, delay,
# loss), and the job started by Open MPI's own launcher, which reaches every
# node through an rsh agent that runs the node's daemon inside its namespace.
# TCP only, restricted to these links: nothing is shared between nodes but the
# shaped network (and the file system). Needs root and iproute2.
#
#   Cluster/sim-cluster.sh N [--rate 10gbit] [--delay 0] [--loss 0] [--ranks-per-node 1]
#                            [--timeout 600] [--link-down NODE@SECONDS] [--grace 20] -- reid-dist ARGS...
#   e.g. Cluster/sim-cluster.sh 2 --rate 1gbit -- bench allreduce
#        Cluster/sim-cluster.sh 4 --rate 10gbit -- train --config Configs/debug.yaml
#
# Addresses are a private /24 used only on links this script creates; every
# namespace, link, bridge and /etc/hosts line it adds is removed on exit, also
# on errors and Ctrl-C. The job is bounded by --timeout, and ends at most --grace seconds after
# the first rank's error: with a node unreachable, Open MPI's abort waits on that node's daemon
# until the launcher's own limit (and then crashed in PMIx_Finalize), so this script stops
# mpirun itself and repeats the first error as its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { sed -n '9,13p' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
n=$1; shift
[[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 32 ] || { echo "sim-cluster: N must be 1-32, got '$n'" >&2; exit 2; }
rate=10gbit delay=0 loss=0 per=1 limit=600 down="" grace=20
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    --rate) rate=$2; shift 2 ;; --delay) delay=$2; shift 2 ;; --loss) loss=$2; shift 2 ;;
    --ranks-per-node) per=$2; shift 2 ;; --timeout) limit=$2; shift 2 ;; --link-down) down=$2; shift 2 ;;
    --grace) grace=$2; shift 2 ;;
    *) echo "sim-cluster: unknown option $1" >&2; usage ;;
  esac
done
[ "${1:-}" = "--" ] || usage
shift
[ "$(id -u)" -eq 0 ] || { echo "sim-cluster: needs root (network namespaces, veth links and tc)" >&2; exit 1; }
if ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
  echo "sim-cluster: installing iproute2" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null
fi
bin=$(pwd)/.build/release/reid-dist
[ -x "$bin" ] || Cluster/setup.sh

tag="rd$$"                       # interface names must stay under 16 characters
net="10.$((200 + $$ % 50)).$(( ($$ / 50) % 250 + 1 ))"
bridge="${tag}br"
work=$(mktemp -d)
job=""
cleanup() {
  set +e
  [ -n "$job" ] && kill -TERM "$job" 2>/dev/null && sleep 1 && kill -KILL "$job" 2>/dev/null
  for i in $(seq 1 "$n"); do ip netns pids "${tag}n$i" 2>/dev/null | xargs -r kill -KILL 2>/dev/null; ip netns del "${tag}n$i" 2>/dev/null; ip link del "${tag}v$i" 2>/dev/null; done
  ip link del "$bridge" 2>/dev/null
  sed -i "/# reid-dist sim-cluster $tag\$/d" /etc/hosts
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Rate with a token bucket (tbf: bursts of 10 ms of traffic, at most 100 ms queued); delay and
# loss with netem, which some kernels (and gVisor) do not have: then they are refused up front.
bits() { awk -v r="$1" 'BEGIN { m = 1; if (r ~ /[gG]bit$/) m = 1e9; else if (r ~ /[mM]bit$/) m = 1e6; else if (r ~ /[kK]bit$/) m = 1e3;
                                 v = r; sub(/[a-zA-Z]+$/, "", v); print v * m }'; }
burst=$(awk -v b="$(bits "$rate")" 'BEGIN { x = b / 8 / 100; if (x < 32768) x = 32768; printf "%d", x }')
netem=""
if [ "$delay" != "0" ] || [ "$loss" != "0" ]; then
  if ! tc qdisc add dev lo root netem delay 0 2>/dev/null; then
    echo "sim-cluster: --delay and --loss need tc's netem, which this kernel does not provide (rate shaping works)" >&2; exit 1
  fi
  tc qdisc del dev lo root 2>/dev/null
  netem="netem delay $delay loss $loss"
fi
shape() {  # NAMESPACE (empty: this one) DEVICE
  local run=(); [ -n "$1" ] && run=(ip netns exec "$1")
  if [ -n "$netem" ]; then
    "${run[@]}" tc qdisc add dev "$2" root handle 1: $netem
    "${run[@]}" tc qdisc add dev "$2" parent 1: handle 2: tbf rate "$rate" burst "$burst" latency 100ms
  else
    "${run[@]}" tc qdisc add dev "$2" root tbf rate "$rate" burst "$burst" latency 100ms
  fi
}
ip link add "$bridge" type bridge
ip addr add "$net.1/24" dev "$bridge"
ip link set "$bridge" up
: > "$work/hostfile"
for i in $(seq 1 "$n"); do
  ns="${tag}n$i"
  ip netns add "$ns"
  ip link add "${tag}v$i" type veth peer name eth0 netns "$ns"
  ip link set "${tag}v$i" master "$bridge" up
  ip netns exec "$ns" ip addr add "$net.$((10 + i))/24" dev eth0
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip link set lo up
  # Both directions of the node's link: its egress inside, its ingress at the bridge port.
  shape "$ns" eth0
  shape "" "${tag}v$i"
  echo "$net.$((10 + i)) $ns # reid-dist sim-cluster $tag" >> /etc/hosts
  echo "$ns slots=$per" >> "$work/hostfile"
done
cat > "$work/agent" <<AGENT
#!/usr/bin/env bash
# Open MPI's rsh agent: HOST COMMAND... -> COMMAND run inside HOST's namespace.
host=\$1; shift
exec ip netns exec "\$host" bash -c "\$*"
AGENT
chmod +x "$work/agent"
if [ -n "$down" ]; then
  node=${down%@*} after=${down#*@}
  ( sleep "$after"; echo "sim-cluster: link of node $node down" >&2
    ip link set "${tag}v$node" down ) &
fi
echo "sim-cluster: $n node(s) x $per rank(s), links $rate, delay $delay, loss $loss (subnet $net.0/24)" >&2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# rtc ^hwloc: the daemons do not bind processes here, and hwloc's shared-memory topology
# (mapped at a fixed address) made about one daemon start in five crash on this machine.
set +e
: > "$work/stderr"
timeout --kill-after=10 "$limit" mpirun --allow-run-as-root --hostfile "$work/hostfile" -np $((n * per)) \
  --mca plm_rsh_agent "$work/agent" --mca btl self,tcp --mca rtc ^hwloc \
  --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24" \
  -x OPENBLAS_NUM_THREADS=1 -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM \
  "$bin" "$@" 2> >(tee -a "$work/stderr" >&2) &
job=$!
# After the first rank's error, mpirun gets --grace seconds to end the job by itself.
first="" stopped=0 since=0
while kill -0 "$job" 2>/dev/null; do
  sleep 1
  if [ -z "$first" ]; then
    first=$(grep -m1 -aE '^rank [0-9]+: error: ' "$work/stderr" || true)
  elif [ $((since += 1)) -ge "$grace" ]; then
    stopped=1
    # SIGKILL: asked to terminate, mpirun runs its own shutdown against the unreachable node and
    # crashes in PMIx_Finalize with a backtrace; the ranks have already said what went wrong.
    pkill -KILL -P "$job" 2>/dev/null; kill -KILL "$job" 2>/dev/null
    for i in $(seq 1 "$n"); do ip netns pids "${tag}n$i" 2>/dev/null | xargs -r kill -KILL 2>/dev/null; done
    break
  fi
done
wait "$job" 2>/dev/null
status=$?
job=""
[ -z "$first" ] && first=$(grep -m1 -aE '^rank [0-9]+: error: ' "$work/stderr" || true)
if [ $stopped -eq 1 ]; then
  echo "sim-cluster: mpirun had not ended $grace s after the first error (a node it cannot reach keeps Open MPI's abort waiting): stopped it" >&2
  status=1
fi
[ $status -eq 124 ] && echo "sim-cluster: the job ran past --timeout $limit s and was stopped" >&2
[ $status -ne 0 ] && [ -n "$first" ] && echo "sim-cluster: job failed (exit $status); first error: $first" >&2
exit $status
