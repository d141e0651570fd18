"""Models: the registered architectures (and any timm model) and robdistill checkpoints."""
