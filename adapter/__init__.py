"""The SUR-adapter: model, training and evaluation. Reads released shards and embeddings only."""
