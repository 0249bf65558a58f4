"""Training: the settings, the network, the data loader, the loop, checkpoints and what a model summary must say."""
