"""A trained model put to use: probabilities, heatmaps, the ONNX graphs, the unfamiliar score and the verdict rule.
Needs only a checkpoint: imports `train` (the model and checkpoint code), `photos` and `common`; never `runs`."""
