"""The MLflow-tracked experiments the CLI runs: the stages (teacher cache, model registry, resumable
state), `run` / `evaluate` end to end, the sweep and its report, the regression gate."""
