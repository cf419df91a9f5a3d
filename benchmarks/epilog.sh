#!/usr/bin/env bash
# benchmarks/epilog.sh: what datalad-slurm's Slurm hook costs (EpilogSlurmctld = the /bin/sh entry point
# epilog/datalad-slurm-epilog.sh, which detaches the Python worker epilog/datalad_slurm_epilog.py for registered
# jobs; one worker serves the queue of a whole burst). (1) Per call, run directly as user slurm with the
# environment slurmctld gives it: the entry point for an unregistered and a registered job, the queue worker's
# CPU per job, and a worker for one job (scontrol + event write, the fallback without a queue), next to bare
# `python3 -IS` and `sh` start-up. Target: under 50 ms per job. (2) Throughput of a private 2-CPU Slurm for
# 500 tiny jobs (500 sbatch calls, and one 500-task array): A = no-op `Epilog=/bin/true` only, A' = A + a no-op
# `EpilogSlurmctld=/bin/true`, B = A + the hook with every job registered, C = A + the hook with no job
# registered (what it costs other users' jobs). Target: B at least 90% of the no-op's jobs/s (reported against
# A and A'). Two runs per variant (order A A' B C, C B A' A), each on a restarted cluster.
#
# Usage (as root, ~6 minutes): benchmarks/epilog.sh [--out FILE] [--jobs N] [--calls N] [--runs N] [--keep]
#   --out FILE   write the results as markdown here (default benchmarks/results/epilog-<date>.md); they also
#                go to stdout, progress goes to stderr
#   --jobs N     jobs per throughput batch (default 500)     --calls N  hook calls per measurement (default 200)
#   --runs N     runs per variant (default 2)                --keep     keep state dirs and spool at the end
#   --variants "A N B C"  only these throughput variants (N is A'), e.g. "N B" to compare the hook with its
#                no-op quickly (the ratios that need a missing variant show "-")
#   --no-cost    leave out part 1 (the cost per call)
#   --node-epilog-sleep S  slurmd's Epilog sleeps S seconds in every variant instead of `/bin/true` (a site
#                epilog that does some work; the hooks then race a slower node epilog)
#   --trace      also record the kernel's process events during each batch (tracefs, benchmarks/hook_race.py):
#                how long the hooks ran and how many were reported after the node's epilog ("late")
# Environment (benchmarks/epilog_pyslurm.sh sets them to run this inside the pyslurm tier's chroot):
#   DATALAD_SLURM_BENCH_HOOK_PYTHON  the hook's Python (default /usr/bin/python3; with pyslurm: asks through it)
#   DATALAD_SLURM_BENCH_VENV_PYTHON  a Python with datalad_slurm (default .venv/bin/python of this clone)
#   DATALAD_SLURM_BENCH_EPILOG_PORTS "PART1 PART2" port bases (default "6917 6907")
#
# Uses contrib/slurm-local clusters on port base 6917 (part 1) and 6907 (part 2), state in /tmp/dls-bench-6917
# and /tmp/dls-bench-6907, hook + config + spool in /tmp/dls-bench-work; stops and removes them at the end.
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME and printf must use '.' as the decimal point

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
slurm_local=$repo/contrib/slurm-local
# has datalad_slurm: registers jobs the way `datalad schedule` does
venv_python=${DATALAD_SLURM_BENCH_VENV_PYTHON:-$repo/.venv/bin/python}
sys_python=${DATALAD_SLURM_BENCH_HOOK_PYTHON:-/usr/bin/python3} # what the installed hook runs under
via=scontrol # how the installed hook asks slurmctld (set again once it is installed)
read -r hc_port tp_port <<<"${DATALAD_SLURM_BENCH_EPILOG_PORTS:-6917 6907}"

cmdline="benchmarks/epilog.sh $*"
out=$here/results/epilog-$(date +%F).md
njobs=500
ncalls=200
nruns=2
keep=0
variants="A N B C"
cost=1
trace=0
node_epilog_sleep=
die() { printf '%s epilog.sh: ERROR: %s\n' "$(date +%T)" "$*" >&2; exit 1; }
log() { printf '%s epilog.sh: %s\n' "$(date +%T)" "$*" >&2; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --out) out=$2; shift 2 ;;
        --jobs) njobs=$2; shift 2 ;;
        --calls) ncalls=$2; shift 2 ;;
        --runs) nruns=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        --variants) variants=$2; shift 2 ;;
        --no-cost) cost=0; shift ;;
        --trace) trace=1; shift ;;
        --node-epilog-sleep) node_epilog_sleep=$2; shift 2 ;;
        -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ $(id -u) -eq 0 ]] || die "run as root (starts Slurm daemons, runs the hook as user slurm)"
[[ $variants =~ ^[ANBC]( [ANBC])*$ ]] || die "--variants takes letters from A N B C, e.g. \"N B\""
[[ -z $node_epilog_sleep || $node_epilog_sleep =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--node-epilog-sleep takes seconds, e.g. 0.05"
for n in "$njobs" "$ncalls" "$nruns"; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "counts must be positive integers"; done
[[ -x $venv_python ]] || die "no virtual environment at $venv_python"

# Everything lives under /tmp/dls-bench-*; other Slurm test clusters on this machine use ports 6817-6899.
work=/tmp/dls-bench-work
hc_dir=/tmp/dls-bench-$hc_port hc_cluster=local$hc_port # part 1: hook cost
tp_dir=/tmp/dls-bench-$tp_port tp_cluster=local$tp_port # part 2: throughput
prefix=$work/libexec
hook=$prefix/datalad-slurm-epilog      # the entry point slurmctld runs
worker=$prefix/datalad_slurm_epilog.py # what it starts, detached, for a registered job
config=$work/datalad-slurm.conf       # embedded in the installed hook; points scontrol at the 6907 cluster
hc_config=$work/datalad-slurm-6917.conf # the same for part 1, passed by DATALAD_SLURM_CONFIG
spool=$work/spool
hook_log=$work/log/hook.log
helper=$work/spool_helper.py
cur_conf= # slurm.conf of the cluster the Slurm commands below talk to

# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------

# Slurm client against the current cluster, bounded so that a dead daemon cannot hang the benchmark.
sl() { SLURM_CONF=$cur_conf timeout 30 "$@"; }

# Microsecond timestamps from bash itself: no fork inside the timed sections.
now_us() { now=${EPOCHREALTIME/./}; }
secs() { printf '%d.%02d' $(($1 / 1000000)) $(($1 % 1000000 / 10000)); }
# No hooks (variant A) or no trace: hook_race.py says nan.
nan() { if [[ $1 == nan ]]; then echo -; else echo "$1"; fi; }
# A variant left out by --variants has no numbers: "-" in, "-" out.
rate() { awk -v n="$1" -v us="$2" 'BEGIN { if (us == "") print "-"; else printf "%.1f", n / (us / 1e6) }'; }
mean() { printf '%s\n' "$@" | awk '$1 != "-" && $1 != "" { s += $1; n++ } END { if (n) printf "%.1f", s / n; else print "-" }'; }
ratio() {
    awk -v b="$1" -v a="$2" 'BEGIN { if (b == "-" || a == "-" || b == "" || a == "") print "-"; else printf "%.2f", b / a }'
}

# The user's side of the spool through the package's own UserSpool, as `datalad schedule` does it (uid 0).
spool_py() { "$venv_python" "$helper" "$spool" "$@"; }

start_cluster() { # DIR PORT_BASE [EXTRA_CONF]: start (or restart with a changed config) and point sl at it
    local args=(--state-dir "$1" --port-base "$2")
    if [[ -n ${3:-} ]]; then args+=(--extra-conf "$3"); fi
    if ! "$slurm_local/start" "${args[@]}" >/dev/null 2>"$work/start.log"; then
        tail -n 30 "$work/start.log" >&2
        die "contrib/slurm-local/start ${args[*]} failed"
    fi
    cur_conf=$1/etc/slurm.conf
}

stop_cluster() { # DIR [--purge]
    "$slurm_local/stop" --state-dir "$@" 2>>"$work/stop.log" || log "WARNING: stop --state-dir $1 failed"
}

job_state() { sl scontrol show job -o "$1" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2 || true; }

submit_and_wait() { # NAME: submit one tiny job, wait until it COMPLETED, print its id
    local id deadline=$((SECONDS + 60))
    id=$(sl sbatch --parsable -J "$1" -D "$work" -o /dev/null --wrap true)
    until [[ $(job_state "$id") == COMPLETED ]]; do
        ((SECONDS < deadline)) || die "job $id ($1) did not complete within 60 s"
        sleep 0.2
    done
    echo "$id"
}

wait_drained() { # NAME: poll every 0.2 s until no job of that name is pending, running or completing
    # Completing counts as busy: slurmctld keeps a job COMPLETING while its EpilogSlurmctld runs.
    local deadline=$((SECONDS + 900)) active worker
    while :; do
        # the hook's queue workers, as far as its pid file shows them (a lower bound)
        if read -r worker 2>/dev/null <"$spool/.hook/$tp_cluster/worker.pid"; then seen_workers[$worker]=1; fi
        if active=$(sl squeue -h -n "$1" -t PD,CF,R,CG -o %i) && [[ -z $active ]]; then return 0; fi
        ((SECONDS < deadline)) || die "jobs named $1 still active after 900 s"
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------------------------------------
# Setup: the hook installed the way an admin does it (epilog/install), into our own prefix and spool.
# ---------------------------------------------------------------------------------------------------------
cleanup() {
    local rc=$?
    set +e
    if ((keep)); then
        stop_cluster "$hc_dir"; stop_cluster "$tp_dir"
        log "kept $hc_dir, $tp_dir and $work (--keep)"
    elif ((rc)); then
        # keep the clusters' logs for a look; the spool and the hook go
        stop_cluster "$hc_dir"; stop_cluster "$tp_dir"
        log "failed; Slurm logs are kept in $hc_dir/slurm and $tp_dir/slurm (remove with stop --purge)"
        rm -rf -- "$work"
    else
        stop_cluster "$hc_dir" --purge; stop_cluster "$tp_dir" --purge
        rm -rf -- "$work"
    fi
}

setup() {
    rm -rf -- "$work"
    # 0755 all the way down: the hook runs as slurm and must reach its prefix, config and spool
    install -d -m 0755 "$work"
    # leftovers of an interrupted run: stop our own clusters (by their pid files) and start afresh
    stop_cluster "$hc_dir" --purge; stop_cluster "$tp_dir" --purge
    install -d -m 0755 -o slurm -g slurm "$work/log"
    "$repo/epilog/install" --prefix "$prefix" --config "$config" --spool "$spool" --log "$hook_log" \
        --slurm-conf "$tp_dir/etc/slurm.conf" --python "$sys_python" --force 2>>"$work/install.log" \
        || { cat "$work/install.log" >&2; die "epilog/install failed"; }
    # how the installed hook asks slurmctld: pyslurm where epilog/install found it for $sys_python
    if grep -qx 'pyslurm_path =' "$prefix/datalad_slurm_hook/install.conf"; then via=scontrol; else via=pyslurm; fi
    export DATALAD_SLURM_BENCH_VIA=$via
    sed "s|^slurm_conf = .*|slurm_conf = $hc_dir/etc/slurm.conf|" "$config" >"$hc_config"
    chmod 0644 "$hc_config"
    node_epilog=/bin/true
    if [[ -n $node_epilog_sleep ]]; then
        node_epilog=$work/node-epilog
        printf '#!/bin/sh\nexec /bin/sleep %s\n' "$node_epilog_sleep" >"$node_epilog"
        chmod 0755 "$node_epilog"
    fi
    printf 'Epilog=%s\n' "$node_epilog" >"$work/extra-A.conf"
    printf 'Epilog=%s\nEpilogSlurmctld=/bin/true\n' "$node_epilog" >"$work/extra-N.conf" # A'
    printf 'Epilog=%s\nEpilogSlurmctld=%s\n' "$node_epilog" "$hook" >"$work/extra-B.conf"
    cp "$work/extra-B.conf" "$work/extra-C.conf"

    cat >"$helper" <<'EOF'
"""Spool operations for benchmarks/epilog.sh through datalad_slurm's own UserSpool (run as root: uid 0)."""
import os
import pwd
import sys

from datalad_slurm.spool import UserSpool

spool, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
via = os.environ.get("DATALAD_SLURM_BENCH_VIA", "scontrol")  # how the installed hook asks Slurm
user = UserSpool(spool)
if command == "register":  # CLUSTER FIRST COUNT: register job ids FIRST .. FIRST+COUNT-1
    cluster, first, count = args[0], int(args[1]), int(args[2])
    for job_id in range(first, first + count):
        user.register(cluster, job_id)
elif command == "begin":  # TOKEN: a submission in flight: the hook reports every job of uid 0 meanwhile
    user.begin_submission(args[0])
elif command == "end":  # TOKEN
    user.end_submission(args[0])
elif command == "events":  # OWNER_ID...: "<events of these jobs> <of them COMPLETED via scontrol> <rejected>
    # <owner ids without an event, comma-separated, or ->"
    owners = {int(arg) for arg in args}
    events, rejected = user.read_events({0, pwd.getpwnam("slurm").pw_uid})
    mine = [event for event in events if event.owner_job_id in owners]
    good = sum(event.state == "COMPLETED" and event.resolved_by == via for event in mine)
    missing = sorted(owners - {event.owner_job_id for event in mine})
    odd = sorted({f"{e.state}/{e.resolved_by}" for e in mine} - {f"COMPLETED/{via}"})
    print(len(mine), good, len(rejected), ",".join(map(str, missing[:10])) or "-", ",".join(odd) or "-")
elif command == "clear":  # forget all registrations and events (between batches)
    for folder in ("jobs", "events"):
        path = os.path.join(user.path, folder)
        for name in os.listdir(path) if os.path.isdir(path) else []:
            os.unlink(os.path.join(path, name))
else:
    sys.exit(f"unknown command {command}")
EOF
}

# ---------------------------------------------------------------------------------------------------------
# Part 1: the hook's cost per call
# ---------------------------------------------------------------------------------------------------------

# Runs as user slurm with an empty environment (like `env -i`); starts CMD NCALLS times (after 3 untimed
# warm-up calls) with exactly the given ENV, GAP seconds apart, and prints "median p95" of the wall time
# in ms. Timing inside one process leaves runuser's PAM session and env's exec out: slurmctld's
# slurmscriptd just forks and execs.
driver=$(
    cat <<'EOF'
import math, statistics, subprocess, sys, time
n, gap = int(sys.argv[1]), float(sys.argv[2])
sep = sys.argv.index("--")
env = dict(item.split("=", 1) for item in sys.argv[3:sep])
cmd = sys.argv[sep + 1:]
def once():
    time.sleep(gap)
    start = time.perf_counter()
    rc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL).returncode
    if rc:
        sys.exit(f"{cmd[0]} exited {rc}")
    return (time.perf_counter() - start) * 1000
for _ in range(3):
    once()
times = sorted(once() for _ in range(n))
print(f"{statistics.median(times):.1f} {times[math.ceil(0.95 * n) - 1]:.1f}")
EOF
)
measure() { # GAP ENV... -- CMD...
    runuser -u slurm -- env -i PATH=/usr/bin:/bin "$sys_python" -IS -c "$driver" "$ncalls" "$@"
}

wait_events() { # OWNER_ID WANT: wait (bounded) until the detached workers wrote WANT events; print the count
    local count deadline=$((SECONDS + 60))
    while :; do
        read -r count _ _ _ < <(spool_py events "$1")
        if ((count >= $2 || SECONDS >= deadline)); then break; fi
        sleep 0.5
    done
    echo "$count"
}

bench_hook_cost() {
    log "part 1: hook cost per call, $ncalls calls each (cluster $hc_cluster, port base $hc_port)"
    start_cluster "$hc_dir" "$hc_port"
    # a real finished job, so that scontrol answers for it (MinJobAge 300 keeps it in slurmctld)
    local jid
    jid=$(submit_and_wait dls-bench-finished)
    spool_py clear
    # what slurmctld passes to an EpilogSlurmctld for a finished job of root (see NOTES.md of slurm-local)
    local env=(SLURM_JOB_ID="$jid" SLURM_JOB_UID=0 SLURM_JOB_GID=0 SLURM_JOB_USER=root
        SLURM_JOB_NAME=dls-bench-finished SLURM_JOB_PARTITION=debug SLURM_JOB_NODELIST=localhost
        SLURM_CLUSTER_NAME="$hc_cluster" SLURM_JOB_EXIT_CODE=0 SLURM_JOB_EXIT_CODE2=0:0
        SLURM_JOB_DERIVED_EC=0 SLURM_JOB_WORK_DIR="$work" SLURM_SCRIPT_CONTEXT=epilog_slurmctld
        DATALAD_SLURM_CONFIG="$hc_config")

    local want=$((ncalls + 3)) count
    t_python=$(measure 0 -- "$sys_python" -IS -c pass)
    t_sh=$(measure 0 -- /bin/sh -c :)
    t_unreg=$(measure 0 "${env[@]}" -- "$hook")
    read -r count _ _ < <(spool_py events "$jid")
    ((count == 0)) || die "the entry point wrote $count events for an unregistered job"

    # registered as `datalad schedule` would; from now on every call makes a worker ask scontrol and write
    # an event. The entry point returns before its worker is done: 0.1 s between calls (untimed) keeps the
    # workers (~40 ms) from piling up on the two CPUs and slowing the calls that are being timed.
    spool_py register "$hc_cluster" "$jid" 1
    # the first registered job of a cluster creates the cluster's queue (.hook/CLUSTER, through a worker
    # for that one job); the calls measured below find it, as every later job on a real controller does
    runuser -u slurm -- env -i "${env[@]}" "$hook"
    count=$(wait_events "$jid" 1)
    ((count == 1)) || die "the first registered call wrote $count events, not 1"
    [[ -d $spool/.hook/$hc_cluster/pending ]] || die "the first registered call created no queue"
    spool_py clear
    spool_py register "$hc_cluster" "$jid" 1
    read -r reg_began _ </proc/uptime
    t_reg=$(measure 0.1 "${env[@]}" -- "$hook")
    count=$(wait_events "$jid" "$want")
    ((count == want)) || die "registered job: the detached workers wrote $count events, not $want"
    worker_cpu # the queue worker is still lingering: its CPU time so far, and how many served the calls
    local odd
    read -r reg_events reg_good _ _ odd < <(spool_py events "$jid")
    ((reg_good == reg_events)) || die "only $reg_good of $reg_events events say COMPLETED via $via (also: $odd)"
    spool_py clear
    spool_py register "$hc_cluster" "$jid" 1
    # the worker's whole job, run synchronously: what each registered job costs the controller in total
    t_worker=$(measure 0 "${env[@]}" -- "$worker")
    # (a worker for one job asks through scontrol even where the queue worker uses pyslurm)
    read -r count good _ < <(DATALAD_SLURM_BENCH_VIA=scontrol spool_py events "$jid")
    ((count == want)) || die "the worker wrote $count events, not $want"
    ((good == count)) || die "only $good of $count events of the worker for one job say COMPLETED via scontrol"
    reg_events=$((reg_events + count)) reg_good=$((reg_good + good))
    t_scontrol=$(measure 0 PATH=/usr/bin:/bin SLURM_CONF="$cur_conf" -- /usr/bin/scontrol show job -o "$jid")
    spool_py clear
    stop_cluster "$hc_dir" # not to compete with part 2 for the CPUs
}

# The queue worker(s) that served part 1's registered calls: CPU ms per job (its own and its scontrol
# children's, from /proc/PID/stat) while it lingers, and when it started (it served every call if it
# started with the first one).
worker_cpu() {
    local queue=$spool/.hook/$hc_cluster pid start stat ticks hz
    local -a f
    read -r pid start <"$queue/worker.pid" || die "no queue worker alive after the registered calls"
    stat=$(<"/proc/$pid/stat")
    read -r -a f <<<"${stat##*) }"
    [[ ${f[19]} == "$start" ]] || die "the pid file names no live worker"
    ticks=$((f[11] + f[12] + f[13] + f[14])) # utime stime cutime cstime
    hz=$(getconf CLK_TCK)
    worker_cpu_ms=$(awk -v t="$ticks" -v hz="$hz" -v n=$((ncalls + 3)) 'BEGIN { printf "%.1f", t * 1000 / hz / n }')
    worker_started_after=$(awk -v s="$start" -v hz="$hz" -v b="$reg_began" 'BEGIN { printf "%.2f", s / hz - b }')
}

# ---------------------------------------------------------------------------------------------------------
# Part 2: cluster throughput. A: Epilog=/bin/true only. B: A + the hook, every job registered (full work).
# C: A + the hook, no job registered: what the hook costs everybody else's jobs on a shared cluster.
# ---------------------------------------------------------------------------------------------------------
declare -A res=() # "VARIANT RUN KIND" -> "submit_us wall_us events good drain_events registered reg_us missing workers"
declare -A seen_workers=()
next_id=0         # the id the next sbatch will get: nobody else submits to this cluster

run_batch() { # VARIANT RUN KIND(jobs|array)
    local variant=$1 run=$2 kind=$3 name=dls-bench-$1$2-$3 first=$next_id
    local t0 t1 t2 r0 r1 id i registered=0 events good rejected missing drain_events deadline want=0
    local ctld_log=$tp_dir/slurm/slurmctld.log log_offset stalls stall_s turn_median turn_p95
    local hook_med=- hook_p90=- late=- late_pct=- margin=-
    local -a ids=()
    # Register the ids before the jobs exist, and create an in-flight marker as `schedule` does: the ids
    # are predictable here, so every job is registered before it can end; the marker covers a misprediction.
    # A does the same (its Slurm has no hook); C registers nothing. The time is reported, not counted.
    now_us; r0=$now
    if [[ $variant != C ]]; then
        spool_py register "$tp_cluster" "$first" "$([[ $kind == jobs ]] && echo "$njobs" || echo 1)"
        spool_py begin "$name"
    fi
    now_us; r1=$now

    seen_workers=()
    log_offset=$(stat -c %s "$ctld_log")
    if ((trace)); then "$sys_python" "$here/hook_race.py" start || die "cannot trace (tracefs, as root)"; fi
    now_us; t0=$now
    if [[ $kind == jobs ]]; then
        for ((i = 0; i < njobs; i++)); do
            id=$(sl sbatch --parsable -J "$name" -D "$work" -o /dev/null --wrap true)
            ids+=("$id")
        done
    else
        id=$(sl sbatch --parsable --array="0-$((njobs - 1))" -J "$name" -D "$work" -o /dev/null --wrap true)
        ids+=("$id")
    fi
    now_us; t1=$now
    wait_drained "$name"
    now_us; t2=$now
    if ((trace)); then
        "$sys_python" "$here/hook_race.py" stop "$work/trace.txt"
        read -r _ hook_med hook_p90 late late_pct margin < <("$sys_python" "$here/hook_race.py" report "$work/trace.txt")
        rm -f "$work/trace.txt"
    fi
    if [[ $variant != C ]]; then spool_py end "$name"; fi
    # freed CPUs left idle while jobs waited (an EpilogSlurmctld that ended after the node's epilog)
    read -r _ stalls stall_s turn_median turn_p95 < <("$sys_python" "$here/sched_gaps.py" "$ctld_log" --offset "$log_offset")

    if [[ $kind == array ]]; then
        # the tasks report the array's id, which was registered; they took the next njobs-1 ids as they started
        if ((ids[0] == first)); then registered=$njobs; fi
        next_id=$((ids[0] + njobs))
    else
        for id in "${ids[@]}"; do
            if ((id >= first && id < first + njobs)); then registered=$((registered + 1)); fi
        done
        next_id=$((ids[-1] + 1))
    fi
    if [[ $variant == B ]]; then want=$njobs; fi
    read -r drain_events _ _ _ < <(spool_py events "${ids[@]}")
    events=$drain_events
    deadline=$((SECONDS + 30)) # the detached workers may still be busy: give them a bounded moment
    while ((events < want && SECONDS < deadline)); do
        sleep 0.5
        read -r events _ _ _ < <(spool_py events "${ids[@]}")
    done
    read -r events good rejected missing _ < <(spool_py events "${ids[@]}")
    ((rejected == 0)) || die "$rejected rejected files in the events folder"
    spool_py clear
    if [[ $variant != B ]]; then missing=-; fi
    res["$variant $run $kind"]="$((t1 - t0)) $((t2 - t0)) $events $good $drain_events $registered $((r1 - r0)) $missing ${#seen_workers[@]} $stalls $stall_s $turn_median $turn_p95 $hook_med $hook_p90 $late $late_pct $margin"
    log "  $variant run $run, $njobs $kind: submit $(secs $((t1 - t0))) s, wall $(secs $((t2 - t0))) s," \
        "$(rate "$njobs" $((t2 - t0))) jobs/s, events $events, stalls $stalls ($stall_s s)"
}

throughput_run() { # VARIANT RUN: a freshly (re)started cluster per run, so every run starts alike
    log "part 2: variant $1, run $2 (cluster $tp_cluster, port base $tp_port)"
    stop_cluster "$tp_dir"
    start_cluster "$tp_dir" "$tp_port" "$work/extra-$1.conf"
    if [[ $1 == A ]]; then
        ! grep -q '^EpilogSlurmctld' "$cur_conf" || die "variant A has an EpilogSlurmctld in $cur_conf"
    elif [[ $1 == N ]]; then
        grep -qx "EpilogSlurmctld=/bin/true" "$cur_conf" || die "variant A' without EpilogSlurmctld=/bin/true"
    else
        grep -qx "EpilogSlurmctld=$hook" "$cur_conf" || die "variant $1 without EpilogSlurmctld in $cur_conf"
    fi
    local warm
    warm=$(submit_and_wait dls-bench-warmup) # the first job after a start waits for a scheduling pass
    next_id=$((warm + 1))
    run_batch "$1" "$2" jobs
    run_batch "$1" "$2" array
}

# ---------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------
verdict() { awk -v ms="$1" 'BEGIN { print (ms < 50 ? "**met**" : "**not met**") }'; }
met() { awk -v x="$1" 'BEGIN { if (x == "-") print "-"; else print (x >= 0.9 ? "met" : "**not met**") }'; }
batch_label() { if [[ $1 == jobs ]]; then echo "$njobs jobs"; else echo "$njobs-task array"; fi; }
declare -A variant_label=([A]="A: no-op" [N]="A': no-op EpilogSlurmctld" [B]="B: hook, registered"
    [C]="C: hook, unregistered")

report_hook_cost() {
    local a b entry_median entry_p95 worker_median worker_p95
    echo "## 1. Hook cost per call"
    echo
    echo "Run directly (not via Slurm) as user slurm with slurmctld's environment, $ncalls calls each after 3"
    echo "warm-up calls; wall time from fork to exit. Registered: the job's id is in the spool, so the entry point"
    echo "queues it and starts a worker only if none is alive (0.1 s between calls: one worker serves them all);"
    echo "the worker asks slurmctld ($via) about a real finished job on a running cluster and writes"
    echo "an event ($reg_events events, all COMPLETED; via $via from the queue worker, via scontrol from the"
    echo "worker for one job, which prefers it: pyslurm's start-up costs more than its one question)."
    echo "The worker for one job is the fallback"
    echo "without a usable queue (and what every job cost before the queue)."
    echo
    echo "| what | median ms | p95 ms |"
    echo "|---|---:|---:|"
    read -r a b <<<"$t_python"; echo "| \`python3 -IS -c pass\` (interpreter start-up) | $a | $b |"
    read -r a b <<<"$t_sh"; echo "| \`/bin/sh -c :\` (shell start-up) | $a | $b |"
    read -r a b <<<"$t_unreg"; echo "| entry point, unregistered job (a stat or two, exit) | $a | $b |"
    read -r a b <<<"$t_reg"; echo "| entry point, registered job (queues it, checks the worker, exit) | $a | $b |"
    entry_median=$a entry_p95=$b
    echo "| queue worker, CPU per registered job (its own + scontrol's; it started" \
        "$worker_started_after s after the first call) | $worker_cpu_ms | |"
    read -r a b <<<"$t_worker"; echo "| worker for one job, run synchronously (start-up + scontrol + event write) | $a | $b |"
    worker_median=$a worker_p95=$b
    read -r a b <<<"$t_scontrol"; echo "| \`scontrol show job -o\` alone (part of the worker's time) | $a | $b |"
    echo
    # slurmctld waits for the entry point only; the worker's time is spent anyway, on the controller's CPUs
    echo "Target under 50 ms per job: what slurmctld waits for (the entry point, registered job, p95" \
        "$entry_p95 ms): $(verdict "$entry_p95"); the whole work per registered job with the queue (entry point" \
        "median + queue worker CPU): $(awk -v e="$entry_median" -v w="$worker_cpu_ms" 'BEGIN { printf "%.1f", e + w }') ms" \
        "$(verdict "$(awk -v e="$entry_median" -v w="$worker_cpu_ms" 'BEGIN { print e + w }')"); without a queue" \
        "(entry point + worker for one job): median" \
        "$(awk -v e="$entry_median" -v w="$worker_median" 'BEGIN { printf "%.1f", e + w }') ms" \
        "$(verdict "$(awk -v e="$entry_median" -v w="$worker_median" 'BEGIN { print e + w }')"), p95" \
        "$(awk -v e="$entry_p95" -v w="$worker_p95" 'BEGIN { printf "%.1f", e + w }') ms" \
        "$(verdict "$(awk -v e="$entry_p95" -v w="$worker_p95" 'BEGIN { print e + w }')")."
}

report_throughput() {
    local v r kind batch overall reg_sum=0 reg_n=0 notes=
    local -a f ra rn rb rc per pern
    local -A rates=()
    echo "## 2. Cluster throughput ($njobs tiny jobs, 1 node with 2 CPUs)"
    echo
    echo "A: \`Epilog=/bin/true\` only (no-op baseline). A': A + a no-op \`EpilogSlurmctld=/bin/true\` (the no-op"
    echo "baseline for a hook installed as EpilogSlurmctld). B: A + \`EpilogSlurmctld=<hook>\`, every job registered in"
    echo "the spool before it was submitted, plus an in-flight marker, so the hook does the full work for each job."
    echo "C: as B, but no job registered: the entry point runs and exits, as for other users' jobs."
    if [[ -n $node_epilog_sleep ]]; then
        echo "**slurmd's \`Epilog\` in every variant: \`sleep $node_epilog_sleep\`** (--node-epilog-sleep), not \`/bin/true\`."
    fi
    echo "Queue workers seen: distinct pid-file lines read while the batch ran (every 0.2 s; a lower bound)."
    echo "All on contrib/slurm-local's config ($(grep -m1 '^SchedulerParameters=' "$tp_dir/etc/slurm.conf" 2>/dev/null || echo '?'))."
    echo "Wall: first sbatch until \`squeue -t PD,CF,R,CG\` shows none of the batch (polled every 0.2 s)."
    echo "Each run on a freshly restarted cluster after one warm-up job; the order reverses every run (A A' B C,"
    echo "C B A' A). Events: written by the detached workers, counted once all came or 30 s after the batch drained."
    echo
    echo "Stalls: a job's end after which the CPUs stayed idle > 0.2 s although a job was waiting (from slurmctld's"
    echo "log, \`benchmarks/sched_gaps.py\`: Slurm 22.05 schedules nothing when an EpilogSlurmctld ends after the"
    echo "node's epilog); turnaround: from a job's end to the next job's start, median and p95, over the ends"
    echo "that had a job waiting."
    if ((trace)); then
        echo "Hook run / late (--trace, \`benchmarks/hook_race.py\`): the EpilogSlurmctld processes' exec-to-exit time"
        echo "(median, p90), and how many of them slurmscriptd reported after slurmd reported the node's epilog"
        echo "(both report 10 ms after their script exits); margin: the median lead of the hook's report."
    fi
    echo
    echo "| variant | run | batch | submit s | wall s | jobs/s | events (COMPLETED via $via) | queue workers seen |" \
        "stalls (s idle) | turnaround ms median, p95 | hook run ms median, p90 | late (%) | margin ms |"
    echo "|---|---:|---|---:|---:|---:|---|---:|---:|---|---|---:|---:|"
    for kind in jobs array; do
        batch=$(batch_label "$kind")
        for v in A N B C; do
            [[ " $variants " == *" $v "* ]] || continue
            for ((r = 1; r <= nruns; r++)); do
                read -r -a f <<<"${res["$v $r $kind"]}"
                rates["$v $r $kind"]=$(rate "$njobs" "${f[1]}")
                echo "| ${variant_label[$v]} | $r | $batch | $(secs "${f[0]}") | $(secs "${f[1]}") |" \
                    "${rates["$v $r $kind"]} | ${f[2]} (${f[3]}) | ${f[8]} | ${f[9]} (${f[10]}) | ${f[11]}, ${f[12]} |" \
                    "$(nan "${f[13]}"), $(nan "${f[14]}") | ${f[15]} ($(nan "${f[16]}")) | $(nan "${f[17]}") |"
                if [[ $v == B ]]; then
                    if [[ $kind == jobs ]]; then reg_sum=$((reg_sum + f[6])); reg_n=$((reg_n + 1)); fi
                    if ((f[5] != njobs)); then notes+=" B run $r, $batch: only ${f[5]} of $njobs ids predicted."; fi
                    if ((f[4] != f[2])); then notes+=" B run $r, $batch: ${f[4]} events when the batch drained, ${f[2]} later."; fi
                    if ((f[2] < njobs)); then
                        notes+=" B run $r, $batch: $((njobs - f[2])) of $njobs jobs left no event"
                        if [[ ${f[7]} != - ]]; then notes+=" (job ${f[7]//,/, })"; fi
                        notes+="."
                    fi
                fi
            done
        done
    done
    echo
    echo "| batch | A jobs/s | A' jobs/s | B jobs/s | C jobs/s | B/A per run | B/A' per run | B/A | B/A' | C/A | C/A' |" \
        "target B >= 0.90 x no-op: vs A / vs A' |"
    echo "|---|---|---|---|---|---|---|---:|---:|---:|---:|---|"
    for kind in jobs array; do
        ra=() rn=() rb=() rc=() per=() pern=()
        for ((r = 1; r <= nruns; r++)); do
            ra+=("${rates["A $r $kind"]:-}"); rn+=("${rates["N $r $kind"]:-}")
            rb+=("${rates["B $r $kind"]:-}"); rc+=("${rates["C $r $kind"]:-}")
            per+=("$(ratio "${rates["B $r $kind"]:-}" "${rates["A $r $kind"]:-}")")
            pern+=("$(ratio "${rates["B $r $kind"]:-}" "${rates["N $r $kind"]:-}")")
        done
        overall=$(ratio "$(mean "${rb[@]}")" "$(mean "${ra[@]}")")
        overall_n=$(ratio "$(mean "${rb[@]}")" "$(mean "${rn[@]}")")
        echo "| $(batch_label "$kind") | ${ra[*]} | ${rn[*]} | ${rb[*]} | ${rc[*]} | ${per[*]} | ${pern[*]} |" \
            "$overall | $overall_n | $(ratio "$(mean "${rc[@]}")" "$(mean "${ra[@]}")") |" \
            "$(ratio "$(mean "${rc[@]}")" "$(mean "${rn[@]}")") | $(met "$overall") / $(met "$overall_n") |"
    done
    echo
    echo "Ratios are of the means over the runs."
    echo
    echo "Registering $njobs ids and creating the in-flight marker before a B batch of separate jobs took" \
        "$(secs $((reg_sum / reg_n))) s on average (not in the times above)."
    local log_lines=0
    if [[ -f $hook_log ]]; then log_lines=$(wc -l <"$hook_log"); fi
    echo "Hook log: $log_lines lines (the worker logs its trouble and any run over 1 s there)."
    if [[ -n $notes ]]; then echo "Notes:$notes"; fi
}

report() {
    echo "# Epilog hook benchmark, $(date '+%F %H:%M')"
    echo
    echo "Host: $(nproc) cores, $(uname -sr), $(sl sinfo -V 2>/dev/null || echo slurm), Python" \
        "$("$sys_python" -V 2>&1 | cut -d' ' -f2); load average before: $load_before, after: $load_after" \
        "(other Slurm test clusters share this machine)."
    echo "Command: \`$cmdline\`"
    echo
    echo "\`uptime\` before: \`$uptime_before\`; after: \`$uptime_after\`"
    echo
    if ((cost)); then report_hook_cost; else echo "## 1. Hook cost per call: left out (--no-cost)"; fi
    echo
    report_throughput
}

# ---------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------
trap cleanup EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
uptime_before=$(uptime)
setup
if ((cost)); then bench_hook_cost; fi
for ((run = 1; run <= nruns; run++)); do
    # ABC CBA ...: a slow drift of the machine (or slurmctld's growing job table) favours no variant
    order=()
    for variant in A N B C; do [[ " $variants " == *" $variant "* ]] && order+=("$variant"); done
    if ! ((run % 2)); then mapfile -t order < <(printf '%s\n' "${order[@]}" | tac); fi
    for variant in "${order[@]}"; do throughput_run "$variant" "$run"; done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
uptime_after=$(uptime)
mkdir -p "$(dirname "$out")"
report >"$out.tmp"
mv -f "$out.tmp" "$out"
cat "$out"
log "results written to $out"
