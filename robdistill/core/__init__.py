"""The foundation every layer uses: errors, the registry, model-mode and RNG helpers, random
streams, statistics, resumable state files, progress lines, torchrun helpers, the Tracker protocol."""
