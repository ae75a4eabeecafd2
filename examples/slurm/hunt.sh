#!/usr/bin/env bash
# One `mmsim hunt` across a Slurm cluster (see docs/HUNT.md).
#
#   sbatch examples/slurm/hunt.sh        # from the repository, mmsim on PATH
#
# Array task K of COUNT runs `mmsim hunt --shard K/COUNT` into its own
# folder; a job that depends on the whole array merges them. The array's
# size is COUNT (here 4: --array=0-3).
#SBATCH --job-name=mmsim-hunt
#SBATCH --array=0-3
#SBATCH --cpus-per-task=1
#SBATCH --mem=512M
#SBATCH --time=24:00:00
#SBATCH --output=hunt-out/slurm-%A_%a.log
set -euo pipefail
mkdir -p hunt-out

INDEX=$SLURM_ARRAY_TASK_ID
COUNT=$SLURM_ARRAY_TASK_COUNT

# Task 0 queues the merge, after the whole array succeeded.
if [ "$INDEX" -eq 0 ]; then
  sbatch --dependency=afterok:"$SLURM_ARRAY_JOB_ID" --job-name=mmsim-hunt-merge \
    --output=hunt-out/merge.log \
    --wrap "mmsim merge hunt-out/shard-* --out hunt-out/merged"
fi

mmsim hunt --scenarios 2000 --seed 1 --shard "$INDEX/$COUNT" --out "hunt-out/shard-$INDEX" --json
