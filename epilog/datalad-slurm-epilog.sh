#!/bin/sh
# datalad-slurm's Slurm hook entry point: EpilogSlurmctld (or slurmd Epilog).
#
# Installed by epilog/install, which fills in the @...@ values. It must return at once:
# Slurm 22.05 starts the next jobs only after EpilogSlurmctld has ended, and an
# EpilogSlurmctld that outlives the node's epilog leaves them waiting for the next periodic
# scheduling pass (measured: 20 ms of hook time turned 10 one-second jobs into 80 s).
# So this script only checks, with shell builtins and a stat or two, whether the job was
# registered by `datalad schedule`, and if so hands the work to the Python worker in a new
# session, detached from Slurm, and exits 0. It always exits 0.
CONFIG=${DATALAD_SLURM_CONFIG:-'@CONFIG@'}
PYTHON='@PYTHON@'
WORKER='@PREFIX@/datalad_slurm_epilog.py'

# read `spool = PATH` from the config file shared with `datalad finish` (builtins only)
[ -r "$CONFIG" ] || exit 0
spool=
while IFS= read -r line || [ -n "$line" ]; do
    case $line in
        spool=*|spool[[:space:]]*=*|[[:space:]]*spool=*|[[:space:]]*spool[[:space:]]*=*)
            spool=${line#*=} ;;
    esac
done < "$CONFIG"
spool=${spool%%#*}
spool=${spool#"${spool%%[![:space:]]*}"}
spool=${spool%"${spool##*[![:space:]]}"}
[ -n "$spool" ] || exit 0

uid=$SLURM_JOB_UID
job=$SLURM_JOB_ID
case $SLURM_ARRAY_JOB_ID in ''|0) ;; *) job=$SLURM_ARRAY_JOB_ID ;; esac
case $uid in ''|*[!0-9]*) exit 0 ;; esac
case $job in ''|*[!0-9]*) exit 0 ;; esac
dir=$spool/$uid
[ -d "$dir" ] || exit 0
if [ -e "$dir/jobs/${SLURM_CLUSTER_NAME:-_}.$job" ] || [ -e "$dir/jobs/_.$job" ]; then
    :
else
    # a submission in flight: the job may end before it is registered
    set -- "$dir"/inflight/*
    [ -e "$1" ] || exit 0
fi
if [ -x /usr/bin/setsid ]; then
    /usr/bin/setsid "$PYTHON" -IS "$WORKER" </dev/null >/dev/null 2>&1 &
else
    "$PYTHON" -IS "$WORKER" </dev/null >/dev/null 2>&1 &
fi
child=$!
# When this script exits, Slurm kills its whole process group. Wait (builtins only, a few ms
# at most) until the worker has its own session; without this about 1 job in 1000 lost its
# event under load (measured by benchmarks/epilog.sh).
set -f  # the fields are split on purpose; no globbing
read -r own < /proc/$$/stat || exit 0
own=${own##*) }
# shellcheck disable=SC2086
set -- $own
group=$3
tries=0
while [ $tries -lt 5000 ]; do
    read -r stat < /proc/$child/stat 2>/dev/null || break   # gone already
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    [ "$3" != "$group" ] && break
    tries=$((tries + 1))
done
exit 0
