"""Analyses of trained models: logit statistics (Seguin et al.), AALP's consistency sets and
feature contributions, Seguin et al.'s claims, and the other traits of robust models."""
