"""Analyses of trained models: logit statistics (Seguin et al.), AALP's consistency sets and
feature contributions, Seguin et al.'s claims, the study's verdict rules (``verdicts``: Holm, the
equivalence test, seeds needed), and the other traits of robust models."""
