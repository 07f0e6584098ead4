"""The review queue (SQL) and its web app."""
