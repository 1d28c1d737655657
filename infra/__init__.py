"""Deployment entry points and specs (AWS Lambda; Cloud Run and Kubernetes specs follow)."""
