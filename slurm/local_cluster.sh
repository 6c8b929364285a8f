#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the SLURM/DDP integration tests.
#
#   bash slurm/local_cluster.sh start    # install slurm-wlm + munge if missing, start, wait idle
#   bash slurm/local_cluster.sh status   # sinfo / daemon pids
#   bash slurm/local_cluster.sh stop     # stop the daemons started by `start`
#   bash slurm/local_cluster.sh env      # print `export SLURM_CONF=...` (eval "$(... env)")
#
# Everything (slurm.conf, munge key + socket, spool/state dirs, logs, pid files) lives under
# ${DEPTH2IMG_SLURM_DIR:-/tmp/depth2img-slurm}. The client commands (sbatch, srun, squeue,
# scontrol, sinfo) find the config through SLURM_CONF; because tests and Makefile targets run in
# fresh shells, `start` also links /etc/slurm/slurm.conf (Debian's default location) to our file
# when that path is free or already ours, so plain `sbatch` works without SLURM_CONF. A machine
# with its own /etc/slurm/slurm.conf is never touched: export SLURM_CONF yourself there
# (tests/integration/test_slurm.py does so from DEPTH2IMG_SLURM_DIR).
#
# Needs root (daemons, apt). Environment:
#   DEPTH2IMG_SLURM_DIR       state dir (default /tmp/depth2img-slurm)
#   DEPTH2IMG_SLURM_OPTIONAL  =1: if the cluster cannot start, print a loud warning and exit 0
#                             (the slurm tests then skip themselves); default: exit 1
#   DEPTH2IMG_SLURM_PORT      slurmctld port (default 6817; slurmd uses port+1)
#   DEPTH2IMG_SLURM_NO_INSTALL=1: never call apt-get, fail if the packages are missing
set -euo pipefail

DIR="${DEPTH2IMG_SLURM_DIR:-/tmp/depth2img-slurm}"
CONF="$DIR/slurm.conf"
CTLD_PORT="${DEPTH2IMG_SLURM_PORT:-6817}"
SLURMD_PORT=$((CTLD_PORT + 1))
MUNGE_SOCKET="$DIR/munge/munge.socket"
ETC_CONF=/etc/slurm/slurm.conf
MARKER="# depth2img local test cluster"
START_TIMEOUT_S=60

log() { echo "[local_cluster] $*" >&2; }

fail() {
    # A failed start must not take the rest of `make test` down when the cluster is optional.
    echo "[local_cluster] ERROR: $*" >&2
    if [[ "${DEPTH2IMG_SLURM_OPTIONAL:-0}" == 1 ]]; then
        echo "################################################################" >&2
        echo "# WARNING: local SLURM cluster NOT running; the slurm tests will #" >&2
        echo "# be SKIPPED (DEPTH2IMG_SLURM_OPTIONAL=1).                       #" >&2
        echo "################################################################" >&2
        exit 0
    fi
    echo "[local_cluster] (set DEPTH2IMG_SLURM_OPTIONAL=1 to continue without the cluster)" >&2
    exit 1
}

export SLURM_CONF="$CONF"

cluster_answers() {
    # True when slurmctld answers and our node is usable (idle/mixed/allocated).
    [[ -f "$CONF" ]] || return 1
    local state
    state="$(timeout 5 sinfo -h -N -o '%t' 2>/dev/null | head -n1)" || return 1
    [[ "$state" =~ ^(idle|mix|alloc|comp)$ ]]
}

pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    ((${#missing[@]} == 0)) && return 0
    [[ "${DEPTH2IMG_SLURM_NO_INSTALL:-0}" == 1 ]] &&
        fail "missing ${missing[*]} and DEPTH2IMG_SLURM_NO_INSTALL=1; install slurm-wlm and munge"
    command -v apt-get >/dev/null ||
        fail "missing ${missing[*]} and no apt-get; install slurm-wlm and munge yourself"
    log "installing slurm-wlm + munge with apt-get (once) ..."
    # Update the package lists only when they are absent (fresh Debian image), or on failure.
    if ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
        apt-get update -qq || fail "apt-get update failed (no network or not root?)"
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge >"$DIR/apt.log" 2>&1; then
        apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            slurm-wlm munge >"$DIR/apt.log" 2>&1 ||
            fail "apt-get install slurm-wlm munge failed, see $DIR/apt.log"
    fi
}

write_config() {
    local host cpus mem
    host="$(hostname -s)"
    cpus="$(nproc)"
    # slurmd refuses a node whose configured memory exceeds the real one; keep some headroom.
    mem=$(($(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) * 9 / 10))
    mkdir -p "$DIR"/{spool,state,log,run,munge}
    chmod 700 "$DIR/munge"
    cat >"$CONF" <<EOF
$MARKER (slurm/local_cluster.sh). Regenerated on every start.
ClusterName=depth2img-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd-%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups on test machines/containers: plain process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Preemption tests: requeue must be allowed, and a requeued job must start again quickly.
JobRequeue=1
# Run dirs are keyed on the job id: a fresh state dir must not hand out ids used before.
FirstJobId=$(($(date +%s) % 60000000 + 1000))
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MinJobAge=300
KillWait=5
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    # Debian's binaries read /etc/slurm/slurm.conf when SLURM_CONF is unset: point it at ours
    # unless the machine has a real config of its own.
    mkdir -p /etc/slurm
    if [[ -L "$ETC_CONF" || ! -e "$ETC_CONF" ]] || grep -q "^$MARKER" "$ETC_CONF"; then
        ln -sfn "$CONF" "$ETC_CONF"
    else
        log "note: $ETC_CONF belongs to another cluster; export SLURM_CONF=$CONF"
    fi
}

start_munge() {
    if pid_alive "$DIR/run/munged.pid" && [[ -S "$MUNGE_SOCKET" ]]; then
        return 0
    fi
    if [[ ! -s "$DIR/munge/munge.key" ]]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$DIR/munge/munge.key"
    fi
    # --force: munged warns about running as root; the key and socket are private to $DIR.
    munged --force --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed" ||
        fail "munged did not start, see $DIR/log/munged.log"
    for _ in $(seq 50); do
        [[ -S "$MUNGE_SOCKET" ]] && return 0
        sleep 0.1
    done
    fail "munged socket $MUNGE_SOCKET did not appear, see $DIR/log/munged.log"
}

start_slurm() {
    if ! pid_alive "$DIR/run/slurmctld.pid"; then
        slurmctld -f "$CONF" || fail "slurmctld did not start, see $DIR/log/slurmctld.log"
    fi
    if ! pid_alive "$DIR/run/slurmd.pid"; then
        slurmd -f "$CONF" || fail "slurmd did not start, see $DIR/log/slurmd.log"
    fi
    local deadline=$((SECONDS + START_TIMEOUT_S)) state=""
    while ((SECONDS < deadline)); do
        state="$(timeout 5 sinfo -h -N -o '%t' 2>/dev/null | head -n1 || true)"
        case "$state" in
        idle | mix | alloc) return 0 ;;
        drain* | down* | fail*)
            # A node left down/drained by an earlier run: make it usable again.
            scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
            ;;
        esac
        sleep 0.5
    done
    fail "node not idle after ${START_TIMEOUT_S}s (state '${state:-no answer}'), see $DIR/log/"
}

cmd_status() {
    if cluster_answers; then
        echo "local SLURM cluster: UP (SLURM_CONF=$CONF)"
        sinfo -N -l 2>/dev/null || true
        squeue 2>/dev/null || true
        return 0
    fi
    echo "local SLURM cluster: DOWN (state dir $DIR)"
    return 1
}

cmd_start() {
    if cluster_answers; then
        log "already running"
        cmd_status
        return 0
    fi
    [[ "$(id -u)" == 0 ]] || fail "must run as root (starts munged/slurmctld/slurmd); try sudo"
    mkdir -p "$DIR"
    install_packages
    write_config
    start_munge
    start_slurm
    cmd_status
}

stop_pidfile() {
    local f="$DIR/run/$1.pid" pid
    pid_alive "$f" || return 0
    pid="$(cat "$f")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

cmd_stop() {
    # Stop only what `start` started, by pid file; jobs still running are killed by slurmd.
    if [[ -f "$CONF" ]] && cluster_answers; then
        scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    fi
    stop_pidfile slurmd
    stop_pidfile slurmctld
    stop_pidfile munged
    log "stopped (state kept in $DIR; remove it for a fresh start)"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) echo "export SLURM_CONF=$CONF" ;;
-h | --help | help | "")
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    [[ -n "${1:-}" ]] || exit 2
    ;;
*)
    echo "unknown command '$1'; use start|stop|status|env (see --help)" >&2
    exit 2
    ;;
esac
