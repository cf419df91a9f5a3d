#!/usr/bin/env bash
# benchmarks/epilog_pyslurm.sh: benchmarks/epilog.sh on Slurm 26.05 in the pyslurm tier's chroot
# (contrib/slurm-chroot; built if needed), with the hook installed for the chroot venv's Python, which has
# pyslurm: the hook's worker asks slurmctld through pyslurm.Job.load() instead of scontrol. Clusters on port
# bases 7917 and 7907 (the host's benchmarks use 69xx, the pyslurm test tier 78xx). Results (markdown) go to
# stdout and, with --out FILE, to FILE; other arguments go to epilog.sh (--runs N, --jobs N, --calls N).
# --hook-python /usr/bin/python3: the chroot's system Python instead, without pyslurm: the hook asks through
# scontrol, for a comparison on the same Slurm.
# Usage (as root): benchmarks/epilog_pyslurm.sh [--out FILE] [--hook-python PATH] [EPILOG.SH ARGS...]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=
hook_python=/opt/venv/bin/python
args=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --out) out=$2; shift 2 ;;
        --hook-python) hook_python=$2; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
# inside: copy the clone (mounted read-only at /src), install it into the chroot's venv, measure
inner='set -euo pipefail
work=/tmp/dls-bench-src; rm -rf "$work"; mkdir -p "$work"
tar -C /src --exclude=./.git --exclude=./.venv --exclude="*.egg-info" -cf - . | tar -C "$work" -xf -
pip install --quiet --no-deps --no-build-isolation -e "$work" >&2
bash "$work/benchmarks/epilog.sh" --out /tmp/epilog-pyslurm.md "$@" >/dev/null
cat /tmp/epilog-pyslurm.md'
result=$("$repo/contrib/slurm-chroot/run" --src "$repo" \
    --env "DATALAD_SLURM_BENCH_HOOK_PYTHON=$hook_python" \
    --env DATALAD_SLURM_BENCH_VENV_PYTHON=/opt/venv/bin/python \
    --env "DATALAD_SLURM_BENCH_EPILOG_PORTS=7917 7907" \
    -- bash -c "$inner" inner "${args[@]}")
printf '%s\n' "$result"
[[ -z $out ]] || printf '%s\n' "$result" >"$out"
