#!/usr/bin/env bash
# benchmarks/list_chroot.sh: `datalad finish --list-open-jobs` with N held jobs (default 10,000) on the
# Slurm of a test chroot (contrib/slurm-chroot; built if needed): trixie = Slurm 24.11, forky = 26.05.
# Runs benchmarks/finish_scale.py --parts list inside it (cluster on ports 7957-7960) with the backend
# given. The part checks itself (all N listed as PENDING, all closed after) and exits non-zero if not.
# Results (markdown, naming the commit measured) go to stdout and, with --out FILE, to FILE.
# Usage (as root): benchmarks/list_chroot.sh [--release trixie|forky] [--backend jsoncli|pyslurm]
#                                             [--n N] [--out FILE]
#   defaults: --release trixie --backend jsoncli (pyslurm exists only in the forky chroot)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
n=10000
out=
release=trixie
backend=jsoncli
while [[ $# -gt 0 ]]; do
    case $1 in
        --n) n=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --release) release=$2; shift 2 ;;
        --backend) backend=$2; shift 2 ;;
        *) echo "list_chroot.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "list_chroot.sh: --n takes a positive number" >&2; exit 2; }
case $release/$backend in
    trixie/jsoncli|forky/jsoncli|forky/pyslurm) ;;
    *) echo "list_chroot.sh: no $backend backend in the $release chroot" >&2; exit 2 ;;
esac
commit=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
# inside: copy the clone (mounted read-only at /src), install it into the chroot's venv, measure
inner='set -euo pipefail
work=/tmp/dls-bench-src; rm -rf "$work"; mkdir -p "$work"
tar -C /src --exclude=./.git --exclude=./.venv --exclude="*.egg-info" -cf - . | tar -C "$work" -xf -
pip install --quiet --no-deps --no-build-isolation -e "$work" >&2
rc=0
python "$work/benchmarks/finish_scale.py" --parts list --n "$1" --out /tmp/list.md >&2 || rc=$?
cat /tmp/list.md
exit $rc'
rc=0
result=$("$repo/contrib/slurm-chroot/run" --release "$release" --src "$repo" \
    --env DATALAD_SLURM_BACKEND="$backend" --env DATALAD_SLURM_BENCH_PORT_BASE=7957 \
    --env DATALAD_SLURM_BENCH_STATE_DIR=/tmp/dls-bench-list --env DATALAD_SLURM_BENCH_COMMIT="$commit" \
    -- bash -c "$inner" inner "$n") || rc=$?
printf '%s\n' "$result"
[[ -z $out ]] || printf '%s\n' "$result" >"$out"
exit $rc
