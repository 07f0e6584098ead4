"""The stages of the data path, one module each (the crawl, the batch stages, review, release,
embeddings) and what they share (base: the one stage interface and its runner).

The batch stages' order is not written here: the pipeline's one declaration is surd.chain.
"""
