#!/usr/bin/env bash
# benchmarks/list_pyslurm.sh: `datalad finish --list-open-jobs` with N held jobs (default 10,000) through
# the pyslurm backend, on Slurm 26.05 in the pyslurm tier's chroot (contrib/slurm-chroot; built if needed).
# Runs benchmarks/finish_scale.py --parts list inside it (cluster on ports 7957-7960) with
# DATALAD_SLURM_BACKEND=pyslurm. Results (markdown) go to stdout and, with --out FILE, to FILE.
# Usage (as root): benchmarks/list_pyslurm.sh [--n N] [--out FILE]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
n=10000
out=
while [[ $# -gt 0 ]]; do
    case $1 in
        --n) n=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "list_pyslurm.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "list_pyslurm.sh: --n takes a positive number" >&2; exit 2; }
# inside: copy the clone (mounted read-only at /src), install it into the chroot's venv, measure
inner='set -euo pipefail
work=/tmp/dls-bench-src; rm -rf "$work"; mkdir -p "$work"
tar -C /src --exclude=./.git --exclude=./.venv --exclude="*.egg-info" -cf - . | tar -C "$work" -xf -
pip install --quiet --no-deps --no-build-isolation -e "$work" >&2
python "$work/benchmarks/finish_scale.py" --parts list --n "$1" --out /tmp/list-pyslurm.md >&2
cat /tmp/list-pyslurm.md'
result=$("$repo/contrib/slurm-chroot/run" --src "$repo" \
    --env DATALAD_SLURM_BACKEND=pyslurm --env DATALAD_SLURM_BENCH_PORT_BASE=7957 \
    --env DATALAD_SLURM_BENCH_STATE_DIR=/tmp/dls-bench-list \
    -- bash -c "$inner" inner "$n")
printf '%s\n' "$result"
[[ -z $out ]] || printf '%s\n' "$result" >"$out"
