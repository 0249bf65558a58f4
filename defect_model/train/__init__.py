"""Training: the network, the data loader, the loop, checkpoints, the unfamiliar score's statistics. Imports
`runs` (the loop writes its run folder), `photos` and `common`; never serving or a workflow."""
