#!/usr/bin/env bash
# benchmarks/finish_vs_028.sh: the per-job cost of `finish` for this datalad-slurm next to datalad-slurm 0.2.8
# (PyPI), on one private Slurm 22.05 with accounting, with the same workload for both (issue 5; measured by hand,
# no timed assertions). One run per tool.
#
# Workload per tool: a fresh dataset (`datalad create`) holding code/job.sh; N jobs, each scheduled with one CLI
# call `<schedule> -o out/<n> sbatch -J <name> -o out/<n>/slurm-%j.out code/job.sh out/<n>` (the job writes
# out/<n>/result.txt); wait until Slurm (squeue) and accounting (sacct) show all N COMPLETED; time
# `--list-open-jobs` with the N jobs open, then ONE finish that commits all N; check N new commits, N committed
# result.txt and a clean `git status`. Before that, N bare `sbatch` calls of the same script give the floor.
#   ours:  <repo>/.venv/bin/datalad schedule / finish
#   0.2.8: <venv028>/bin/datalad slurm-schedule / slurm-finish (its own venv; never the other venv's datalad)
#
# Usage (as root, ~10 minutes for N=200): benchmarks/finish_vs_028.sh [--n N] [--out FILE] [--only ours|028]
#          [--venv028 DIR] [--finish-timeout S] [--keep] [--purge]
#   --n N               jobs per tool (default 200)
#   --out FILE          markdown results (default benchmarks/results/finish-vs-028-<date>.md); also on stdout,
#                       progress on stderr
#   --only ours|028     measure one tool only (the other column stays empty)
#   --venv028 DIR       venv for 0.2.8 (default /tmp/dls-bench-venv028); created if it has no bin/datalad:
#                       `pip install datalad-slurm==0.2.8`, then the datalad version ours uses (0.2.8 declares none)
#   --finish-timeout S  give up on one finish / list call after S seconds (default 1800); what it committed counts
#   --keep              keep the datasets in /tmp/dls-bench-finish-work (default: removed after a clean run)
#   --purge             stop the cluster with --purge (default: plain stop, state dir kept for the next start)
#
# Cluster: contrib/slurm-local/start --accounting --state-dir /tmp/dls-bench-finish --port-base 6937 (ports
# 6937-6940); other Slurm clusters on this machine use 6817-6929. Stopped at the end (also on failure).
# No datalad-slurm hook is installed and no spool configured: both tools ask Slurm for the jobs' states.
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME and printf must use '.' as the decimal point

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
slurm_local=$repo/contrib/slurm-local
ours_venv=$repo/.venv
state_dir=/tmp/dls-bench-finish
port_base=6937
work=/tmp/dls-bench-finish-work

cmdline="benchmarks/finish_vs_028.sh${*:+ $*}"
out=$here/results/finish-vs-028-$(date +%F).md
njobs=200
only=
venv028=/tmp/dls-bench-venv028
finish_timeout=1800
keep=0
purge=0
die() { printf '%s finish_vs_028.sh: ERROR: %s\n' "$(date +%T)" "$*" >&2; exit 1; }
log() { printf '%s finish_vs_028.sh: %s\n' "$(date +%T)" "$*" >&2; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --n) njobs=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        --venv028) venv028=$2; shift 2 ;;
        --finish-timeout) finish_timeout=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        --purge) purge=1; shift ;;
        -h|--help) sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ $(id -u) -eq 0 ]] || die "run as root (starts Slurm daemons)"
[[ $njobs =~ ^[1-9][0-9]*$ ]] || die "--n must be a positive integer"
[[ $finish_timeout =~ ^[1-9][0-9]*$ ]] || die "--finish-timeout must be a positive integer"
[[ -z $only || $only == ours || $only == 028 ]] || die "--only takes ours or 028"
[[ -x $ours_venv/bin/datalad ]] || die "no datalad in $ours_venv (run contrib/demo.sh or tests/run first)"
[[ $venv028 == /* ]] || die "--venv028 must be an absolute path"
# the run changes into its work folder: a relative --out names a file from where it was started
mkdir -p -- "$(dirname -- "$out")"
out=$(cd "$(dirname -- "$out")" && pwd)/$(basename -- "$out")

# Neither tool may see a spool config of another setup; both resolve states through Slurm.
unset DATALAD_SLURM_CONFIG DATALAD_SLURM_BACKEND
export DATALAD_UI_PROGRESSBAR=none
: "${GIT_AUTHOR_NAME:=dls-bench}" "${GIT_AUTHOR_EMAIL:=dls-bench@example.invalid}"
: "${GIT_COMMITTER_NAME:=$GIT_AUTHOR_NAME}" "${GIT_COMMITTER_EMAIL:=$GIT_AUTHOR_EMAIL}"
export GIT_AUTHOR_NAME GIT_AUTHOR_EMAIL GIT_COMMITTER_NAME GIT_COMMITTER_EMAIL

# ---------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------
now_us() { now=${EPOCHREALTIME/./}; } # no fork inside the timed sections
secs() { printf '%d.%03d' $(($1 / 1000000)) $(($1 % 1000000 / 1000)); }
div() { awk -v a="$1" -v b="$2" -v f="${3:-%.3f}" 'BEGIN { if (b == 0) print "-"; else printf f, a / b }'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
load1() { cut -d' ' -f1 /proc/loadavg; }
sl() { timeout 60 "$@"; } # Slurm client commands (SLURM_CONF is exported), bounded
# median and p95 (seconds) of microsecond values on stdin
stats_us() { sort -n | awk '{ v[NR] = $1 } END { i = int(0.95 * NR); if (i < 0.95 * NR) i++;
    printf "%.3f %.3f\n", v[int((NR + 1) / 2)] / 1e6, v[i] / 1e6 }'; }

# timed CMD... : runs CMD (stdout+stderr to $tlog) under GNU time with a timeout; sets t_real t_cpu t_rc
timed() {
    local tf=$work/time.$$ start end
    now_us; start=$now
    set +e
    /usr/bin/time -f '%U %S' -o "$tf" timeout "$finish_timeout" "$@" >"$tlog" 2>&1
    t_rc=$?
    set -e
    now_us; end=$now
    t_real=$(secs $((end - start)))
    t_cpu=$(awk '/^[0-9.]+ [0-9.]+$/ { printf "%.2f", $1 + $2 }' "$tf" 2>/dev/null || true)
    t_cpu=${t_cpu:--}
    rm -f -- "$tf"
}

# wait until no job named NAME is active in slurmctld (squeue), then until sacct has COUNT of them COMPLETED
# (0.2.8 reads sacct only; accounting may lag slurmctld by seconds). Sets w_states to sacct's state summary.
wait_jobs() { # NAME COUNT
    local name=$1 count=$2 deadline=$((SECONDS + 1800)) active done_n
    while :; do
        if active=$(sl squeue -h -n "$name" -t PD,CF,R,CG,S,RQ -o %i) && [[ -z $active ]]; then break; fi
        ((SECONDS < deadline)) || die "jobs named $name still active after 1800 s"
        sleep 1
    done
    deadline=$((SECONDS + 120))
    while :; do
        done_n=$(sl sacct -n -X -P --name="$name" -S now-1days -o State | grep -c '^COMPLETED$' || true)
        ((done_n >= count)) && break
        if ((SECONDS >= deadline)); then
            log "WARNING: sacct shows $done_n of $count jobs named $name COMPLETED after 120 s"
            break
        fi
        sleep 1
    done
    w_states=$(sl sacct -n -X -P --name="$name" -S now-1days -o State | sort | uniq -c |
        awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }')
}

job_script() { # DIR: the tiny job, as a file
    mkdir -p "$1"
    cat >"$1/job.sh" <<'EOF'
#!/bin/bash
# datalad-slurm finish benchmark: one small file into the output directory given as $1
echo "job ${SLURM_JOB_ID} on $(hostname)" >"$1/result.txt"
EOF
    chmod +x "$1/job.sh"
}

# ---------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------
cleanup() {
    local rc=$?
    set +e
    local args=(--state-dir "$state_dir")
    ((purge)) && args+=(--purge)
    if [[ -n ${cluster_started:-} ]]; then
        log "stopping the cluster: contrib/slurm-local/stop ${args[*]}"
        "$slurm_local/stop" "${args[@]}" >/dev/null 2>>"$work/stop.log" || log "WARNING: stop failed (see $work/stop.log)"
    fi
    if ((rc == 0 && !keep)); then
        rm -rf -- "$work"
    elif ((rc)); then
        log "failed; datasets and logs kept in $work"
    fi
}

install_028() { # sets v028_ok / v028_err
    v028_ok=0 v028_err=
    if [[ ! -x $venv028/bin/datalad ]]; then
        log "creating $venv028: pip install datalad-slurm==0.2.8 (+ datalad $ours_datalad_version)"
        {
            rm -rf -- "$venv028" && python3 -m venv "$venv028" &&
                "$venv028/bin/pip" install -q "datalad-slurm==0.2.8" &&
                { "$venv028/bin/python" -c 'import datalad' 2>/dev/null ||
                    "$venv028/bin/pip" install -q "datalad==$ours_datalad_version"; }
        } >"$work/install-028.log" 2>&1 || true
    fi
    if ! "$venv028/bin/datalad" slurm-finish --help >/dev/null 2>>"$work/install-028.log"; then
        v028_err=$(grep -v 'is ignored: it is neither' "$work/install-028.log" | tail -n 15)
        log "0.2.8 is not usable: $v028_err"
        return
    fi
    v028_ok=1
}

start_cluster() {
    log "starting Slurm: contrib/slurm-local/start --accounting --state-dir $state_dir --port-base $port_base"
    cluster_started=1
    local env_lines
    env_lines=$("$slurm_local/start" --accounting --state-dir "$state_dir" --port-base "$port_base" \
        2>"$work/start.log") || { tail -n 30 "$work/start.log" >&2; die "contrib/slurm-local/start failed"; }
    eval "$env_lines"
    export SLURM_CONF
    [[ $SLURM_CONF == "$state_dir"/* ]] || die "start printed SLURM_CONF=$SLURM_CONF"
    # one warm-up job: the first job after a start waits for a scheduling pass
    job_script "$work/warm"
    local id
    id=$(sl sbatch --parsable -J "dls-bench-finish-warm-$tag" -D "$work/warm" -o /dev/null "$work/warm/job.sh" "$work/warm")
    wait_jobs "dls-bench-finish-warm-$tag" 1
    log "warm-up job $id: $w_states"
}

# ---------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------
bare_sbatch() { # N bare sbatch calls of the same script, outside any dataset: the floor for schedule
    local d=$work/bare name=dls-bench-finish-bare-$tag n t0 times=()
    job_script "$d/code"
    log "bare sbatch: $njobs calls"
    cd "$d"
    for ((n = 1; n <= njobs; n++)); do
        mkdir -p "out/$n"
        now_us; t0=$now
        sl sbatch -J "$name" -o "out/$n/slurm-%j.out" code/job.sh "out/$n" >/dev/null
        now_us; times+=($((now - t0)))
    done
    cd "$work"
    local total=0 t
    for t in "${times[@]}"; do total=$((total + t)); done
    bare_mean=$(div "$total" $((njobs * 1000000)) %.4f)
    read -r bare_median bare_p95 < <(printf '%s\n' "${times[@]}" | stats_us)
    wait_jobs "$name" "$njobs"
    log "  bare sbatch: mean $bare_mean s/job; $w_states"
}

run_tool() { # TOOL(ours|028): the whole workload with one tool; results into r_<field>[TOOL]
    local tool=$1 venv schedule finish name=dls-bench-finish-$1-$tag ds=$work/ds-$1 n t0 rc fails=0
    if [[ $tool == ours ]]; then venv=$ours_venv schedule=schedule finish=finish
    else venv=$venv028 schedule=slurm-schedule finish=slurm-finish; fi
    local dl=$venv/bin/datalad
    log "[$tool] datalad create $ds ($dl)"
    "$dl" create "$ds" >"$work/$tool-create.log" 2>&1 || { cat "$work/$tool-create.log" >&2; die "[$tool] create failed"; }
    cd "$ds"
    job_script "$ds/code"
    "$dl" save -m "job script" code >>"$work/$tool-create.log" 2>&1 || die "[$tool] save of code/job.sh failed"
    local commits0
    commits0=$(git rev-list --count HEAD)

    log "[$tool] $schedule: $njobs CLI calls"
    local times=() load_s0 load_s1
    load_s0=$(load1)
    : >"$work/$tool-schedule.log"
    for ((n = 1; n <= njobs; n++)); do
        mkdir -p "out/$n" # for Slurm's log file; empty directories are invisible to git
        now_us; t0=$now
        set +e
        "$dl" "$schedule" -o "out/$n" sbatch -J "$name" -o "out/$n/slurm-%j.out" code/job.sh "out/$n" \
            >>"$work/$tool-schedule.log" 2>&1
        rc=$?
        set -e
        now_us; times+=($((now - t0)))
        if ((rc)); then
            fails=$((fails + 1))
            ((fails <= 3)) && log "[$tool] schedule $n exited $rc: $(tail -n 3 "$work/$tool-schedule.log" | tr '\n' ' ')"
        fi
        ((n % 50 == 0)) && log "[$tool]   $n scheduled"
    done
    load_s1=$(load1)
    local total=0 t
    for t in "${times[@]}"; do total=$((total + t)); done
    r_sched_total[$tool]=$(secs "$total")
    r_sched_mean[$tool]=$(div "$total" $((njobs * 1000000)))
    read -r "r_sched_median[$tool]" "r_sched_p95[$tool]" < <(printf '%s\n' "${times[@]}" | stats_us)
    r_sched_fail[$tool]=$fails
    r_sched_load[$tool]="$load_s0 -> $load_s1"
    log "[$tool]   schedule total ${r_sched_total[$tool]} s, mean ${r_sched_mean[$tool]} s/job, $fails failed"

    log "[$tool] waiting for the jobs to end in Slurm (squeue) and in accounting (sacct)"
    wait_jobs "$name" $((njobs - fails))
    r_states[$tool]=$w_states
    log "[$tool]   sacct: $w_states"

    log "[$tool] $finish --list-open-jobs"
    local l0
    l0=$(load1)
    tlog=$work/$tool-list.log
    timed "$dl" "$finish" --list-open-jobs
    r_list[$tool]=$t_real r_list_cpu[$tool]=$t_cpu r_list_rc[$tool]=$t_rc
    r_list_load[$tool]="$l0 -> $(load1)"
    r_listed[$tool]=$(grep -cE '^[0-9]+ +COMPLETED' "$tlog" || true)
    log "[$tool]   list-open-jobs $t_real s (cpu $t_cpu s, rc $t_rc)"
    local commits_l
    commits_l=$(git rev-list --count HEAD)
    ((commits_l == commits0)) || log "[$tool] WARNING: --list-open-jobs changed the history ($commits0 -> $commits_l)"

    log "[$tool] $finish (one call for all $njobs jobs)"
    l0=$(load1)
    tlog=$work/$tool-finish.log
    timed "$dl" "$finish"
    r_finish[$tool]=$t_real r_finish_cpu[$tool]=$t_cpu r_finish_rc[$tool]=$t_rc
    r_finish_load[$tool]="$l0 -> $(load1)"
    ((t_rc == 124)) && log "[$tool] WARNING: finish stopped after $finish_timeout s (--finish-timeout)"
    log "[$tool]   finish $t_real s (cpu $t_cpu s, rc $t_rc)"

    # verification
    local commits1 run_commits results status_lines
    commits1=$(git rev-list --count HEAD)
    run_commits=$(git log --format=%s "HEAD~$((commits1 - commits0))..HEAD" 2>/dev/null |
        grep -c '^\[DATALAD SLURM RUN\]' || true)
    results=$(git ls-files -- out | grep -c '/result\.txt$' || true)
    status_lines=$(git status --porcelain --untracked-files=all | wc -l)
    r_commits[$tool]=$((commits1 - commits0))
    r_run_commits[$tool]=$run_commits
    r_results[$tool]=$results
    r_status[$tool]=$status_lines
    r_files[$tool]=$(git ls-files -- out | wc -l)
    # per job: over the jobs it actually committed (all N when it worked)
    r_finish_per[$tool]=$(div "${r_finish[$tool]}" "${r_commits[$tool]}")
    r_finish_cpu_per[$tool]=-
    if [[ ${r_finish_cpu[$tool]} != - ]]; then r_finish_cpu_per[$tool]=$(div "${r_finish_cpu[$tool]}" "${r_commits[$tool]}"); fi
    if ((status_lines)); then
        git status --porcelain --untracked-files=all | head -n 10 >"$work/$tool-status.txt"
        log "[$tool] WARNING: git status not clean ($status_lines lines), see $work/$tool-status.txt"
    fi
    log "[$tool]   $commits0 -> $commits1 commits ($run_commits [DATALAD SLURM RUN]), $results result.txt tracked," \
        "git status: $status_lines lines"
    cd "$work"
}

# ---------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------
cell() { # ARRAY TOOL
    local -n arr=$1
    echo "${arr[$2]:--}"
}
ratio_cell() { # ARRAY: 0.2.8 / ours
    local -n arr=$1
    local a=${arr[ours]:--} b=${arr[028]:--}
    if [[ $a == - || $b == - ]]; then echo -; else div "$b" "$a" %.1f; fi
}

report() {
    local tools=() t label
    for t in ours 028; do [[ -n ${r_finish[$t]:-} ]] && tools+=("$t"); done
    echo "# finish: this datalad-slurm vs datalad-slurm 0.2.8, $(date '+%F %H:%M')"
    echo
    echo "Command: \`$cmdline\` (as root, from $repo). N = $njobs jobs per tool, one run."
    echo
    echo "- Host: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GB", $2 / 1048576 }' /proc/meminfo) RAM," \
        "$(uname -sr), Python $("$ours_venv/bin/python" -c 'import platform; print(platform.python_version())')," \
        "$(sl sinfo -V 2>/dev/null || echo 'slurm ?'), git-annex $(git annex version --raw 2>/dev/null || echo '?')."
    echo "- Load average (1/5/15 min) at start: $load_start; at end: $load_end. Other Slurm daemons on this machine" \
        "at start: $other_ctld other slurmctld process(es); other test suites/benchmarks may have run at the same time" \
        "(1-min load around each phase is in the detail table). Wall times are sensitive to that; CPU times less so."
    echo "- Cluster: \`contrib/slurm-local/start --accounting --state-dir $state_dir --port-base $port_base\`" \
        "(slurmdbd + MariaDB, MinJobAge 300 s, 1 node, 2 CPUs), one warm-up job first. No datalad-slurm hook and" \
        "no spool: both tools ask Slurm (ours: one \`squeue --json\`," \
        "plus one \`sacct --json\` for jobs slurmctld no longer holds; 0.2.8: one \`sacct\` per job)."
    echo "- ours: $ours_label, datalad $ours_datalad_version ($ours_venv)."
    if ((v028_ok)); then
        echo "- 0.2.8: datalad-slurm $v028_version from PyPI, datalad $v028_datalad ($venv028; 0.2.8 declares no datalad" \
            "dependency, so the venv gets the datalad version ours uses)."
    else
        echo "- 0.2.8: **not measured**, it could not be installed or run:"
        echo
        echo '```'
        echo "$v028_err"
        echo '```'
    fi
    echo "- Workload per tool: fresh \`datalad create\` dataset with \`code/job.sh\`; N times (one CLI call each)" \
        "\`<schedule> -o out/<n> sbatch -J <name> -o out/<n>/slurm-%j.out code/job.sh out/<n>\`; the job writes" \
        "\`out/<n>/result.txt\`. Then wait until squeue shows none active and sacct shows them COMPLETED; then" \
        "\`--list-open-jobs\` (N open jobs), then ONE \`finish\` / \`slurm-finish\` for all N."
    echo "- Bare \`sbatch\` of the same script, N calls: mean $bare_mean s/job (median $bare_median, p95 $bare_p95)."
    echo
    echo "| tool | schedule s/job (mean) | list-open-jobs s | finish total s | finish s/job | commits / N | git status |"
    echo "|---|---:|---:|---:|---:|---|---|"
    for t in ours 028; do
        if [[ $t == ours ]]; then label=ours; else label=0.2.8; fi
        if [[ -z ${r_finish[$t]:-} ]]; then
            echo "| $label | - | - | - | - | not measured | - |"
            continue
        fi
        local clean=clean
        ((r_status[$t] == 0)) || clean="**${r_status[$t]} lines**"
        echo "| $label | ${r_sched_mean[$t]} | ${r_list[$t]} | ${r_finish[$t]} | ${r_finish_per[$t]} |" \
            "${r_run_commits[$t]} / $njobs | $clean |"
    done
    echo "| **ratio 0.2.8 / ours** | $(ratio_cell r_sched_mean) | $(ratio_cell r_list) | $(ratio_cell r_finish) |" \
        "$(ratio_cell r_finish_per) | | |"
    echo
    echo "Details:"
    echo
    echo "| | ours | 0.2.8 |"
    echo "|---|---|---|"
    echo "| schedule total s (N calls) | $(cell r_sched_total ours) | $(cell r_sched_total 028) |"
    echo "| schedule s/job median / p95 | $(cell r_sched_median ours) / $(cell r_sched_p95 ours) |" \
        "$(cell r_sched_median 028) / $(cell r_sched_p95 028) |"
    echo "| schedule calls failed | $(cell r_sched_fail ours) | $(cell r_sched_fail 028) |"
    echo "| jobs in sacct before finish | $(cell r_states ours) | $(cell r_states 028) |"
    echo "| list-open-jobs CPU s (user+sys), exit | $(cell r_list_cpu ours), $(cell r_list_rc ours) |" \
        "$(cell r_list_cpu 028), $(cell r_list_rc 028) |"
    echo "| finish CPU s (user+sys), exit | $(cell r_finish_cpu ours), $(cell r_finish_rc ours) |" \
        "$(cell r_finish_cpu 028), $(cell r_finish_rc 028) |"
    echo "| finish CPU s/job | $(cell r_finish_cpu_per ours) | $(cell r_finish_cpu_per 028) |"
    echo "| new commits / of them [DATALAD SLURM RUN] | $(cell r_commits ours) / $(cell r_run_commits ours) |" \
        "$(cell r_commits 028) / $(cell r_run_commits 028) |"
    echo "| out/*/result.txt tracked after finish | $(cell r_results ours) | $(cell r_results 028) |"
    echo "| files tracked under out/ after finish | $(cell r_files ours) | $(cell r_files 028) |"
    echo "| jobs shown by list-open-jobs (all COMPLETED) | $(cell r_listed ours) | $(cell r_listed 028) |"
    echo "| 1-min load: schedule phase | $(cell r_sched_load ours) | $(cell r_sched_load 028) |"
    echo "| 1-min load: list-open-jobs | $(cell r_list_load ours) | $(cell r_list_load 028) |"
    echo "| 1-min load: finish | $(cell r_finish_load ours) | $(cell r_finish_load 028) |"
    echo
    echo "finish s/job = finish wall time / commits it made. Ratios are 0.2.8 / ours (above 1: ours is faster)."
    echo "Earlier figures for 0.2.8 on this kind of machine (SLURM-FACTS.md section 6): schedule 224-244 ms/job," \
        "finish 223 ms/job (N=200), --list-open-jobs 18.6 s for 200 open jobs."
}

# ---------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------
# shellcheck disable=SC2034 # read through namerefs in cell/ratio_cell
declare -A r_sched_total=() r_sched_mean=() r_sched_median=() r_sched_p95=() r_sched_fail=() r_sched_load=() \
    r_states=() r_list=() r_list_cpu=() r_list_rc=() r_list_load=() r_finish=() r_finish_cpu=() \
    r_finish_rc=() r_finish_load=() r_finish_per=() r_finish_cpu_per=() r_commits=() r_run_commits=() \
    r_results=() r_status=() r_files=() r_listed=()
tag=$(date +%H%M%S)-$$ # job names unique per run (sacct keeps older runs' jobs)
load_start=$(loadavg)

# leftovers of an interrupted run: our own cluster (by its pid files, via stop) and work dir
if [[ -d $state_dir ]]; then "$slurm_local/stop" --state-dir "$state_dir" >/dev/null 2>&1 || true; fi
other_ctld=$(pgrep -c -x slurmctld || true)
rm -rf -- "$work"
mkdir -p "$work" "$(dirname "$out")"
trap cleanup EXIT
cd "$work"

ours_datalad_version=$("$ours_venv/bin/python" -c 'import datalad; print(datalad.__version__)')
ours_label="datalad-slurm $("$ours_venv/bin/python" -c 'import datalad_slurm; print(datalad_slurm.__version__)' 2>/dev/null || echo '?')"
ours_label+=" (editable, commit $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes'))"
v028_ok=0 v028_err="skipped (--only ours)"
if [[ $only != ours ]]; then
    install_028
    if ((v028_ok)); then
        v028_version=$("$venv028/bin/python" -c 'from importlib.metadata import version; print(version("datalad-slurm"))')
        v028_datalad=$("$venv028/bin/python" -c 'import datalad; print(datalad.__version__)')
        [[ $v028_version == 0.2.8 ]] || die "$venv028 holds datalad-slurm $v028_version, not 0.2.8"
    fi
fi

start_cluster
bare_sbatch
if [[ $only != 028 ]]; then run_tool ours; fi
if [[ $only != ours ]] && ((v028_ok)); then run_tool 028; fi
load_end=$(loadavg)

report >"$out.tmp"
mv -- "$out.tmp" "$out"
cat -- "$out"
log "results written to $out"
