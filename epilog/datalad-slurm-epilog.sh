#!/bin/sh
# datalad-slurm's Slurm hook entry point: EpilogSlurmctld (or slurmd Epilog).
#
# Installed by epilog/install, which fills in the @...@ values. It must return at once:
# Slurm 22.05 starts the next jobs only after EpilogSlurmctld has ended, and an
# EpilogSlurmctld that outlives the node's epilog leaves them waiting for the next periodic
# scheduling pass (measured: 20 ms of hook time turned 10 one-second jobs into 80 s).
# So this script only checks, with shell builtins and a stat or two, whether the job was
# registered by `datalad schedule`. If so, it leaves a small pending file in the hook's queue
# (<spool>/.hook/<cluster>/pending/, owned by the hook's account, mode 0700) and makes sure
# that one Python worker serves that queue: it starts one, in a new session, only when none
# is alive. Without a usable queue (not installed yet, or running as another account, e.g. as
# root in slurmd's Epilog) it starts a worker for this one job, as before. It always exits 0.
CONFIG=${DATALAD_SLURM_CONFIG:-'@CONFIG@'}
PYTHON='@PYTHON@'
WORKER='@PREFIX@/datalad_slurm_epilog.py'
# the spool as the config said when epilog/install wrote this script
spool='@SPOOL@'

[ -r "$CONFIG" ] || exit 0
# Read `spool = PATH` from the config file shared with `datalad finish` (builtins only) only if
# it may say something else: another config, or one changed since epilog/install. dash's `read`
# takes a system call per byte: 0.35 ms for the default config, a third of this script's time.
# (-nt is not POSIX, but dash, bash, ksh and busybox have it; without it the config is read.)
# shellcheck disable=SC3013
if [ -n "$DATALAD_SLURM_CONFIG" ] || [ -z "$spool" ] \
    || ! [ '@PREFIX@/datalad-slurm-epilog' -nt "$CONFIG" ]; then
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
fi

uid=$SLURM_JOB_UID
job=$SLURM_JOB_ID
case $SLURM_ARRAY_JOB_ID in ''|0) ;; *) job=$SLURM_ARRAY_JOB_ID ;; esac
case $uid in ''|*[!0-9]*) exit 0 ;; esac
case $job in ''|*[!0-9]*) exit 0 ;; esac
case $SLURM_JOB_ID in ''|*[!0-9]*) exit 0 ;; esac
dir=$spool/$uid
if [ -e "$dir/jobs/${SLURM_CLUSTER_NAME:-_}.$job" ] || [ -e "$dir/jobs/_.$job" ]; then
    :
else
    # A submission in flight (the job may end before it is registered), or the user's folder
    # is <uid>.<32 hex digits> because somebody else made <uid> first: only the spool's owner
    # (the hook's account) can list the spool to find it; where it cannot, the patterns stay
    # as they are and match nothing. A squatted <uid> may hold anything: the worker checks
    # every folder's owner before it writes.
    set -- "$dir"/inflight/*
    found=$1
    if ! [ -e "$found" ]; then
        for routed in "$spool/$uid".*; do
            [ -e "$routed" ] || break  # none: the pattern itself
            set -- "$routed"/inflight/*
            found=$1
            [ -e "$routed/jobs/${SLURM_CLUSTER_NAME:-_}.$job" ] && found=$routed
            [ -e "$routed/jobs/_.$job" ] && found=$routed
            [ -e "$found" ] && break
        done
    fi
    [ -e "$found" ] || exit 0
fi

# The queue of this cluster. Usable only if .hook is a real directory of this account: users
# may create entries in the spool (mode 1733), but not inside .hook (mode 0700), and nobody
# but its owner may rename it away.
cluster=${SLURM_CLUSTER_NAME:-_}
case $cluster in .*|*[!A-Za-z0-9._-]*) cluster=_ ;; esac
queue=$spool/.hook/$cluster
mode=--direct
hook_dir_ok=
if [ -d "$spool/.hook" ] && ! [ -h "$spool/.hook" ] && [ -O "$spool/.hook" ]; then
    hook_dir_ok=1
    # the first registered job of this cluster makes its queue (once; the folders must be 0700,
    # and only this account may create anything in .hook). Not with umask 077 for the whole
    # script: the worker's events must stay readable for the job's user.
    [ -d "$queue/pending" ] \
        || ( umask 077; exec /bin/mkdir -p "$queue/pending" "$queue/claimed" ) 2>/dev/null || :
fi
if [ -n "$hook_dir_ok" ] && [ -d "$queue/pending" ]; then
    # The pending file first, then the liveness check: a worker that is about to leave removes
    # its pid file and looks at the queue once more, so it either sees this file or this script
    # sees no worker. The worker reads a file only once it ends with the line ".".
    set -C  # never write through an existing name
    if printf 'SLURM_JOB_ID=%s\nSLURM_JOB_UID=%s\nSLURM_CLUSTER_NAME=%s\nSLURM_ARRAY_JOB_ID=%s\nSLURM_ARRAY_TASK_ID=%s\nSLURM_JOB_USER=%s\nSLURM_JOB_EXIT_CODE2=%s\nSLURM_JOB_WORK_DIR=%s\n.\n' \
        "$SLURM_JOB_ID" "$uid" "$SLURM_CLUSTER_NAME" "$SLURM_ARRAY_JOB_ID" \
        "$SLURM_ARRAY_TASK_ID" "$SLURM_JOB_USER" "$SLURM_JOB_EXIT_CODE2" "$SLURM_JOB_WORK_DIR" \
        > "$queue/pending/$SLURM_JOB_ID.$$" 2>/dev/null; then
        set +C
        mode=--serve
        # alive: the pid file names a live process whose working directory is this queue, as
        # every worker's is from its fork on (a reused pid belongs to a process elsewhere; a
        # zombie has no cwd). Two stat calls: reading /proc/PID/stat with `read` took 0.3 ms.
        if read -r wpid _ 2>/dev/null < "$queue/worker.pid"; then
            # -ef is not POSIX, but dash, bash, ksh and busybox have it; a shell without it
            # fails the test, and every job starts a worker (correct, only slower)
            # shellcheck disable=SC3013
            case $wpid in
                ''|*[!0-9]*) ;;
                *) [ "/proc/$wpid/cwd" -ef "$queue" ] && exit 0 ;;
            esac
        fi
        cd "$queue" 2>/dev/null || :  # the new worker's working directory, see above
    fi
    set +C
fi

# Start a worker: for the queue (--serve) or for this job alone (--direct). fds 1 and 2 are the
# pipe slurmscriptd reads: a worker that kept them would keep the job COMPLETING for as long as
# it lives. fd 3 is another pipe of slurmscriptd's, of no use to the worker.
if [ -x /usr/bin/setsid ]; then
    /usr/bin/setsid "$PYTHON" -IS "$WORKER" $mode "$cluster" </dev/null >/dev/null 2>&1 3>&- &
else
    "$PYTHON" -IS "$WORKER" $mode "$cluster" </dev/null >/dev/null 2>&1 3>&- &
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
    read -r stat 2>/dev/null < /proc/$child/stat || break   # gone already
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    [ "$3" != "$group" ] && break
    tries=$((tries + 1))
done
# Name the new worker in the pid file at once (setsid execs in place: same pid, and its start
# time, for the worker's own bookkeeping), so that the hooks of the next jobs do not start more
# workers while it starts up.
# Only if there is none: the worker writes the same line itself, and before it leaves it
# checks that no entry point named it again.
if [ "$mode" = --serve ] && [ -n "$stat" ]; then
    set -C
    printf '%s %s\n' "$child" "${20}" 2>/dev/null > "$queue/worker.pid"
fi
exit 0
