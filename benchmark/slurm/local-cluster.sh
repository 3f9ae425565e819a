#!/usr/bin/env bash
# A real single-node Slurm 22.05 cluster on localhost (munge, MariaDB, slurmdbd, slurmctld, slurmd), for tests.
#
#   local-cluster.sh start    install missing Debian packages, write configs, start every daemon, wait until a
#                             job step runs and reaches accounting; a no-op when the cluster is already up
#   local-cluster.sh stop     cancel all jobs, then stop exactly the daemons this script recorded; idempotent
#   local-cluster.sh status   daemons, sinfo and squeue; exit 0 only when the cluster is up
#   local-cluster.sh env      print `export SLURM_CONF=...` (clients, submitit and jobs find the cluster by it)
#
# Everything lives in one state directory: $PATCHBENCH_SLURM_STATE, default /tmp/patchbench-slurm. It is wiped on
# every start, so job ids restart at 1: give submitit a fresh folder per cluster start. Needs root (the daemons
# run as root; apt-get installs). Ports 6817-6819 and MariaDB on $PATCHBENCH_SLURM_MYSQL_PORT (default 3307), so
# one cluster per machine. Daemons run in the foreground under setsid; their PIDs (with the kernel start time,
# so a reused PID is never killed) are in $STATE/run/<daemon>.bgpid.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${PATCHBENCH_SLURM_STATE:-/tmp/patchbench-slurm}"
MYSQL_PORT="${PATCHBENCH_SLURM_MYSQL_PORT:-3307}"
NODE="$(hostname -s)"
MUNGE_SOCK="$STATE/munge-run/munge.socket.2"
MYSQL_SOCK="$STATE/mysql-run/mysqld.sock"
MARKER="$STATE/.patchbench-slurm"
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
STOP_ORDER=(slurmd slurmctld slurmdbd mariadbd munged)
export SLURM_CONF="$STATE/etc/slurm.conf"

die() { echo "local-cluster: $*" >&2; exit 1; }
say() { echo "local-cluster: $*"; }

# --- recorded daemons -------------------------------------------------------------------------------------

# Kernel start time of PID (field 22 of /proc/PID/stat), empty if it is gone or a zombie.
start_time_of() {
    local stat fields
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 0
    read -r -a fields <<< "${stat##*) }"
    [[ "${fields[0]}" == Z ]] || echo "${fields[19]}"
}

# True when the daemon NAME recorded in $STATE/run is alive and is still the process that was recorded.
daemon_alive() {
    local record="$STATE/run/$1.bgpid" pid started
    [[ -f "$record" ]] || return 1
    read -r pid started < "$record"
    [[ -n "$pid" && -n "$started" && "$(start_time_of "$pid")" == "$started" ]]
}

# Start NAME in the foreground of its own session, output appended to log/NAME.out, and record its PID.
launch() {
    local name="$1"; shift
    setsid "$@" < /dev/null >> "$STATE/log/$name.out" 2>&1 &
    local pid=$!
    echo "$pid $(start_time_of "$pid")" > "$STATE/run/$name.bgpid"
}

stop_daemon() {
    local name="$1" record="$STATE/run/$1.bgpid" pid started
    [[ -f "$record" ]] || return 0
    if daemon_alive "$name"; then
        read -r pid started < "$record"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 75); do daemon_alive "$name" || break; sleep 0.2; done
        if daemon_alive "$name"; then
            say "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for _ in $(seq 25); do daemon_alive "$name" || break; sleep 0.2; done
        fi
        say "stopped $name (pid $pid)"
    fi
    rm -f "$record"
}

all_daemons_alive() {
    local name
    for name in "${STOP_ORDER[@]}"; do daemon_alive "$name" || return 1; done
}

stop_all_daemons() {
    local name
    for name in "${STOP_ORDER[@]}"; do stop_daemon "$name"; done
}

# --- start ------------------------------------------------------------------------------------------------

# wait_until SECONDS DAEMON WHAT LOG COMMAND...: poll COMMAND every 0.2 s while DAEMON lives; when DAEMON dies or
# time runs out, show LOG's tail and fail.
wait_until() {
    local seconds="$1" daemon="$2" what="$3" log="$4"; shift 4
    local deadline=$((SECONDS + seconds)) problem=""
    until "$@" > /dev/null 2>&1; do
        daemon_alive "$daemon" || problem="$daemon exited"
        ((SECONDS < deadline)) || problem="timed out after ${seconds}s"
        if [[ -n "$problem" ]]; then
            echo "local-cluster: $problem while waiting for $what; last lines of $log:" >&2
            tail -n 25 "$log" >&2 2>/dev/null || echo "(no log at $log)" >&2
            return 1
        fi
        sleep 0.2
    done
}

install_missing_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    say "installing ${missing[*]}"
    local log
    log="$(mktemp)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}"; } > "$log" 2>&1; then
        tail -n 25 "$log" >&2
        die "installing ${missing[*]} failed (apt output above)"
    fi
    rm -f "$log"
}

fresh_state_dir() {
    if [[ -e "$STATE" && ! -e "$MARKER" ]] && [[ -n "$(ls -A "$STATE")" ]]; then
        die "$STATE exists, is not empty and was not made by this script; set PATCHBENCH_SLURM_STATE to another path"
    fi
    rm -rf "$STATE"
    mkdir -p "$STATE"/{etc,run,log,state,spool,munge,munge-run,mysql,mysql-run}
    touch "$MARKER"
    chmod 700 "$STATE/munge"      # the key
    chmod 755 "$STATE/munge-run"  # munged insists that everyone can traverse its socket directory
}

write_configs() {
    local cpus mem_mb
    cpus="$(nproc)"
    mem_mb="$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)"  # below the real amount
    fill() {
        sed -e "s|@NODE@|$NODE|g" -e "s|@STATE@|$STATE|g" -e "s|@MUNGE_SOCK@|$MUNGE_SOCK|g" \
            -e "s|@CPUS@|$cpus|g" -e "s|@MEM_MB@|$mem_mb|g" -e "s|@MYSQL_PORT@|$MYSQL_PORT|g" "$1" > "$2"
    }
    fill "$HERE/slurm.conf.in" "$STATE/etc/slurm.conf"
    fill "$HERE/slurmdbd.conf.in" "$STATE/etc/slurmdbd.conf"
    chmod 600 "$STATE/etc/slurmdbd.conf"
    echo "export SLURM_CONF=$SLURM_CONF" > "$STATE/env.sh"
}

start_munge() {
    mungekey -c -k "$STATE/munge/munge.key"
    launch munged munged -F -S "$MUNGE_SOCK" --key-file="$STATE/munge/munge.key" \
        --pid-file="$STATE/munge-run/munged.pid" \
        --seed-file="$STATE/munge/munged.seed"
    wait_until 10 munged munged "$STATE/log/munged.out" munge -S "$MUNGE_SOCK" -n
}

start_mariadb() {
    mariadb-install-db --no-defaults --user=root --datadir="$STATE/mysql" --skip-test-db \
        > "$STATE/log/mariadb-install.out" 2>&1 || { tail -n 25 "$STATE/log/mariadb-install.out" >&2; return 1; }
    launch mariadbd mariadbd --no-defaults --user=root --datadir="$STATE/mysql" --socket="$MYSQL_SOCK" \
        --pid-file="$STATE/mysql-run/mysqld.pid" --bind-address=127.0.0.1 --port="$MYSQL_PORT" \
        --skip-name-resolve --log-error="$STATE/log/mariadb.err"
    wait_until 30 mariadbd mariadbd "$STATE/log/mariadb.err" mariadb-admin --no-defaults -S "$MYSQL_SOCK" -uroot ping
    mariadb --no-defaults -S "$MYSQL_SOCK" -uroot -e \
        "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

node_idle() { scontrol -o show node "$NODE" | grep -q "State=IDLE "; }

# A job step that runs end to end and then shows up in sacct: the only proof that the cluster is up
# (after a restart sinfo can report idle before slurmd registers; submitit reads states only from sacct).
job_step_runs_and_is_accounted() {
    local job_id
    job_id="$(timeout 20 srun -p debug -t 1 -Q bash -c 'echo $SLURM_JOB_ID')" || return 1
    for _ in $(seq 25); do
        [[ -n "$(sacct -n -X -P -o JobID -j "$job_id" 2>/dev/null)" ]] && return 0
        sleep 0.2
    done
    return 1
}

start_failed() {
    echo "local-cluster: start failed; stopping what was started (all logs in $STATE/log)" >&2
    stop_all_daemons
}

start_cluster() {
    if all_daemons_alive; then
        say "already running (state $STATE)"
        return 0
    fi
    [[ "$(id -u)" == 0 ]] || die "needs root (the daemons run as root, packages come from apt-get)"
    stop_cluster  # the survivors of a half-started or crashed cluster
    install_missing_packages
    fresh_state_dir
    write_configs
    trap start_failed EXIT  # set -e ends the script at the first failing step
    start_munge
    start_mariadb
    launch slurmdbd slurmdbd -D
    wait_until 30 slurmdbd slurmdbd "$STATE/log/slurmdbd.log" sacctmgr -n list cluster
    launch slurmctld slurmctld -D -f "$SLURM_CONF"
    launch slurmd slurmd -D -N "$NODE" -f "$SLURM_CONF"
    wait_until 60 slurmd "node $NODE to be idle" "$STATE/log/slurmd.log" node_idle
    wait_until 60 slurmctld "a job step to run and reach accounting" "$STATE/log/slurmctld.log" job_step_runs_and_is_accounted
    trap - EXIT
    say "up: node $NODE, $(nproc) CPUs; partitions debug (default, preemptible) and urgent; state $STATE"
    say "clients and submitit need: source $STATE/env.sh"
}

# --- stop / status ----------------------------------------------------------------------------------------

stop_cluster() {
    if daemon_alive slurmctld; then
        # Without this, slurmstepd and the job processes outlive slurmd.
        squeue -h -o %A | xargs -r scancel || true
        for _ in $(seq 150); do [[ -z "$(squeue -h -o %A 2>/dev/null)" ]] && break; sleep 0.2; done
    fi
    stop_all_daemons
}

status_cluster() {
    local up=0 name
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        if daemon_alive "$name"; then
            echo "$name: running (pid $(cut -d' ' -f1 "$STATE/run/$name.bgpid"))"
        else
            echo "$name: not running"; up=1
        fi
    done
    if daemon_alive slurmctld; then
        sinfo || up=1
        squeue || true
    fi
    if ((up == 0)); then echo "cluster up (state $STATE; source $STATE/env.sh)"; else echo "cluster not up"; fi
    return "$up"
}

case "${1:-}" in
    start) start_cluster ;;
    stop) stop_cluster ;;
    status) status_cluster ;;
    env) echo "export SLURM_CONF=$SLURM_CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
