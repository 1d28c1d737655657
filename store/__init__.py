"""Accounts, keys, usage counters and history: one interface, SQLite or DynamoDB."""
