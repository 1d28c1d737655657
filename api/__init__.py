"""The public HTTP API: routes, request parsing, error shape, detection pipelines."""
