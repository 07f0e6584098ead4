"""Source connectors: fetching (surd.http) kept apart from parsing (pure functions here)."""
