"""Training: the loop, teacher objectives and teacher training, logit perturbations, augmentation,
and distillation (clean-input students and the ARD / RSLAD baselines)."""
