#!/usr/bin/env bash
# contrib/demo.sh: the seed README's workflow on a real local Slurm, from a fresh Debian 12 machine.
# Installs what is missing (contrib/bootstrap), starts a single-node Slurm 22.05 with accounting
# (contrib/slurm-local/start), builds a demo dataset with five job scripts (three succeed, one
# fails, one array has a failing task), then: schedule -> --list-open-jobs -> finish ->
# --close-failed-jobs -> git log. The cluster keeps running afterwards; stop it with
# contrib/slurm-local/stop.  Usage: contrib/demo.sh [DATASET-DIR]  (default /tmp/datalad-slurm-demo)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
demo=${1:-/tmp/datalad-slurm-demo}

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

venv=$("$repo/contrib/bootstrap")
export PATH="$venv/bin:$PATH"
git config --global user.name >/dev/null 2>&1 || export GIT_AUTHOR_NAME="datalad-slurm demo" \
    GIT_COMMITTER_NAME="datalad-slurm demo"
git config --global user.email >/dev/null 2>&1 || export GIT_AUTHOR_EMAIL="demo@localhost" \
    GIT_COMMITTER_EMAIL="demo@localhost"

echo "== starting the local Slurm (contrib/slurm-local/start --accounting)" >&2
eval "$("$repo/contrib/slurm-local/start" --accounting)"

if [[ -e $demo ]]; then
    [[ -f $demo/.datalad-slurm-demo ]] || { echo "$demo exists and is not a demo dataset; give another path" >&2; exit 1; }
    chmod -R u+w "$demo" && rm -rf "$demo"
fi
datalad create "$demo" >/dev/null
cd "$demo"
touch .datalad-slurm-demo
mkdir -p code
for model in gold silver copper bronze; do
    exit_code=0; [[ $model == bronze ]] && exit_code=1
    cat > "code/submit_$model.slurm" <<SCRIPT
#!/bin/bash
#SBATCH --job-name=$model
#SBATCH --output=models/abrupt/$model/slurm-%j.out
echo "training the $model model on \$(hostname)"
sleep 2
mkdir -p models/abrupt/$model/05_02
echo "weights of $model" > models/abrupt/$model/05_02/model_0.model
exit $exit_code
SCRIPT
done
cat > code/submit_array_platinum.slurm <<'SCRIPT'
#!/bin/bash
#SBATCH --job-name=platinum
#SBATCH --array=0-2
#SBATCH --output=models/abrupt/platinum/slurm-%A_%a.out
mkdir -p models/abrupt/platinum/05_02
sleep 1
echo "weights $SLURM_ARRAY_TASK_ID" > models/abrupt/platinum/05_02/model_$SLURM_ARRAY_TASK_ID.model
[ "$SLURM_ARRAY_TASK_ID" != 2 ]   # task 2 fails
SCRIPT
mkdir -p models/abrupt/{gold,silver,copper,bronze,platinum}
datalad save -m "Job scripts" code .datalad-slurm-demo >/dev/null

run datalad schedule -o models/abrupt/gold/ sbatch code/submit_gold.slurm
run datalad schedule -o models/abrupt/silver/ sbatch code/submit_silver.slurm
run datalad schedule -o models/abrupt/copper/ sbatch code/submit_copper.slurm
run datalad schedule -o models/abrupt/bronze/ sbatch code/submit_bronze.slurm
run datalad schedule -o models/abrupt/platinum/ sbatch code/submit_array_platinum.slurm
say "datalad schedule -o models/abrupt/gold/model.txt sbatch code/submit_gold.slurm   # refused: gold is taken"
datalad schedule -o models/abrupt/gold/model.txt sbatch code/submit_gold.slurm || true

run datalad finish --list-open-jobs

# wait until Slurm has run every job (at most two minutes)
for _ in $(seq 600); do
    [[ -z $(squeue -h -t pending,running,completing,configuring -o %i) ]] && break
    sleep 0.2
done

run datalad finish --list-open-jobs
run datalad finish || true
run datalad finish --close-failed-jobs
run git log --oneline
run git show --stat HEAD
echo
echo "The demo dataset is $demo. The local Slurm keeps running; stop it with:"
echo "  $repo/contrib/slurm-local/stop"
