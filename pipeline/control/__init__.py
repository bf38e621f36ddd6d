"""Control-plane services shared by the CLI and the rules API: rule administration and support captures."""
