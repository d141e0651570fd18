"""Configuration: recipe types with their fields and ranges, the settings every command shares, and
the bundled TOML recipes and suites (package data). Depends on nothing above ``robdistill.core``."""
