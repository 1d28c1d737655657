"""Identity: passwords, API keys, JWT, middleware and quotas (SPEC §5; issue 3)."""
