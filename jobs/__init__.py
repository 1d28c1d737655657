"""Durable jobs on uploaded media: submission, queues, the worker that runs them, webhooks."""
