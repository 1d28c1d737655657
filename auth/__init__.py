"""Identity: passwords, API keys, JWT, middleware and quotas (issue 3)."""
