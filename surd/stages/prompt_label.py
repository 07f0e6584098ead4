"""A label per prompt: how likely a complex prompt is profane or offensive language.

From `alt-profanity-check`, the maintained fork of `profanity-check`: a linear SVM over TF-IDF
word features, trained on about 200k human-labelled texts, whose model ships inside its wheel
(no download) and is retrained for every scikit-learn release it pins. It reads words, not
meaning: a cue beside the image labels, not a verdict (a prompt of art terms scores low whatever
it depicts; an insult scores high in any context). The scorer is named with its version in the
release manifest (`model_ids.prompt_profanity`).
"""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
import pyarrow as pa

PACKAGE = "alt-profanity-check"
BATCH = 8192


def scorer() -> str:
    """The method and its version, e.g. `alt-profanity-check==1.9.1`."""
    return f"{PACKAGE}=={version(PACKAGE)}"


def scores(prompts: pa.ChunkedArray | pa.Array) -> pa.Array:
    """float32 probability of profane or offensive language per prompt; null for a null prompt."""
    texts = prompts.to_pylist()
    out = np.full(len(texts), np.nan, dtype=np.float32)
    have = [i for i, t in enumerate(texts) if t is not None]
    if have:
        from profanity_check import predict_prob  # deferred: scikit-learn loads its model (~1 s)

        for a in range(0, len(have), BATCH):
            rows = have[a : a + BATCH]
            out[rows] = predict_prob([texts[i] for i in rows])
    return pa.array(out, pa.float32(), mask=np.isnan(out))
