"""Everything that talks about or to Slurm: job ids, the state model, backends."""
