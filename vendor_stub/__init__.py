"""sglang 0.5.6 NSA backend metadata path, reproduced (see nsa_backend.py and UPSTREAM_PIN.toml)."""
