"""The reveal log: each time a steward unblurred a flagged image (`reveal`) or blurred it again
(`hide`), who, when and which item; append-only, exported with `what=reveals`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa

from surd.review.db import reader
from surd.review.schema import reveals


def log(engine: sa.Engine, steward: str, sample_id: str, action: Literal["reveal", "hide"]) -> None:
    with engine.begin() as conn:
        conn.execute(
            reveals.insert().values(
                sample_id=sample_id, steward=steward, action=action, created_at=datetime.now(UTC)
            )
        )


def rows(engine: sa.Engine, chunk: int = 5000) -> Iterator[dict[str, Any]]:
    """Every logged reveal and hide, oldest first."""
    with reader(engine) as conn:
        result = conn.execution_options(yield_per=chunk).execute(sa.select(reveals).order_by(reveals.c.id))
        for r in result.mappings():
            d = dict(r)
            at = d["created_at"]
            d["created_at"] = (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat()
            yield d
