import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from storage import schemas
from storage.catalog import connect
from storage.layout import SchemaVersionError
from surd import chain

SAMPLE = {
    pa.string(): "x",
    pa.int8(): 2,
    pa.int32(): 7,
    pa.int64(): 9,
    pa.float32(): 0.5,
    pa.bool_(): True,
    pa.binary(): b"\x00\x01",
    pa.timestamp("us", tz="UTC"): datetime(2026, 1, 2, tzinfo=UTC),
    schemas.IMAGE: {"bytes": b"\xff\xd8", "path": None},
    pa.list_(pa.float16()): [0.5, -0.25],  # an image embedding (exact in float16)
}


def _row(schema: pa.Schema, i: int) -> dict:
    row = {f.name: SAMPLE[f.type] for f in schema}
    row[schema.names[0]] = f"id{i}"
    return row


@pytest.mark.parametrize("name", [*chain.PIPELINE.tables, "crawl_pages"])
def test_write_then_read_back(tmp_path: Path, name: str) -> None:
    data = chain.PIPELINE.data_dir(tmp_path).open()
    table = data.table(name)
    rows = [_row(table.schema, i) for i in range(3)]
    table.write(rows, provenance={"k": 1})
    back = table.read().to_pylist()
    assert back == rows
    assert table.provenance() == [{"k": 1}]


def test_release_and_embedding_schemas_round_trip(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    release = chain.PIPELINE.release_schema()
    rows = [_row(release, 0)]
    pq.write_table(pa.Table.from_pylist(rows, release), tmp_path / "r.parquet")
    assert pq.read_table(tmp_path / "r.parquet").to_pylist() == rows
    emb = schemas.embedding_schema(4)
    t = pa.Table.from_pylist([{"sample_id": "a", "prompt_sha1": "s", "vector": [1.0, 2.0, 0.5, -1.0]}], emb)
    pq.write_table(t, tmp_path / "e.parquet")
    back = pq.read_table(tmp_path / "e.parquet")
    assert back.schema.field("vector").type == pa.list_(pa.float16(), 4)
    assert back.column("vector").to_pylist()[0] == [1.0, 2.0, 0.5, -1.0]


def test_duplicate_keys_are_skipped_on_write(tmp_path: Path) -> None:
    table = chain.PIPELINE.data_dir(tmp_path).open().table("captions")
    row = {"sample_id": "a", "status": "ok", "reason": None, "simple_prompt": "p", "model_id": "m"}
    assert table.write([row, row]) is not None
    assert table.write([row]) is None
    assert table.count() == 1


def test_temp_files_are_invisible(tmp_path: Path) -> None:
    table = chain.PIPELINE.data_dir(tmp_path).open().table("captions")
    table.dir.mkdir(parents=True)
    (table.dir / ".tmp-123-part-1.parquet").write_bytes(b"half a file")
    assert table.parts() == [] and table.count() == 0


def test_incompatible_schema_version_refused(tmp_path: Path) -> None:
    chain.PIPELINE.data_dir(tmp_path).open()
    (tmp_path / "SCHEMA_VERSION").write_text(json.dumps({"schema_version": 999}))
    with pytest.raises(SchemaVersionError, match="schema version 999"):
        chain.PIPELINE.data_dir(tmp_path).open()


def test_foreign_directory_refused(tmp_path: Path) -> None:
    (tmp_path / "something.txt").write_text("not ours")
    with pytest.raises(SchemaVersionError, match="no SCHEMA_VERSION"):
        chain.PIPELINE.data_dir(tmp_path).open()


def test_duckdb_catalog_has_a_view_per_table(tmp_path: Path) -> None:
    data = chain.PIPELINE.data_dir(tmp_path).open()
    data.table("captions").write(
        [{"sample_id": "a", "status": "ok", "reason": None, "simple_prompt": "a cat", "model_id": "m"}]
    )
    con = connect(data)
    assert con.sql("select simple_prompt from captions").fetchall() == [("a cat",)]


def test_lookup_reads_only_the_parts_that_hold_the_keys(tmp_path: Path, monkeypatch) -> None:
    import pyarrow.parquet as pq

    from storage import tables

    table = chain.PIPELINE.data_dir(tmp_path).open().table("captions")
    paths = [table.write([_row(table.schema, 10 * p + i) for i in range(10)]) for p in range(5)]
    assert table.ids() == {f"id{i}" for i in range(50)}  # keys of every part read once, and kept
    reads: list[tuple[str, tuple[str, ...]]] = []

    class Recording(pq.ParquetFile):  # observes which files are read; reads them for real
        def __init__(self, source, **kw):
            super().__init__(source, **kw)
            self.source = str(source)

        def iter_batches(self, *args, columns=None, **kw):
            reads.append((self.source, tuple(columns or ())))
            return super().iter_batches(*args, columns=columns, **kw)

    monkeypatch.setattr(tables.pq, "ParquetFile", Recording)
    got = table.lookup({"id13", "id17", "id42", "nope"}, ["simple_prompt"])
    assert set(got) == {"id13", "id17", "id42"}
    assert got["id42"]["simple_prompt"] == "x"
    assert reads == [
        (str(paths[1]), ("sample_id", "simple_prompt")),
        (str(paths[4]), ("sample_id", "simple_prompt")),
    ]
    # a fresh handle on the same table (as each web request makes) needs no key scan either
    reads.clear()
    other = chain.PIPELINE.data_dir(tmp_path).table("captions")
    assert [r["sample_id"] for r in other.iter_lookup({"id2"}, [])] == ["id2"]
    assert reads == [(str(paths[0]), ("sample_id",))]


def test_select_gives_the_asked_rows_and_columns_as_arrow_in_storage_order(tmp_path: Path) -> None:
    table = chain.PIPELINE.data_dir(tmp_path).open().table("captions")
    assert list(table.select(pa.array(["id1"]), ["simple_prompt"])) == []  # no part yet
    for p in range(4):
        table.write(
            [{**_row(table.schema, 10 * p + i), "simple_prompt": f"p{10 * p + i}"} for i in range(10)]
        )
    want = pa.chunked_array([["id39", "nope", "id3"], ["id27", "id4", "id3"]])  # any order, repeats
    got = list(table.select(want, ["simple_prompt"]))
    assert [len(t) for t in got] == [2, 1, 1]  # a table per part that holds a wanted key
    assert all(t.column_names == ["sample_id", "simple_prompt"] for t in got)
    rows = pa.concat_tables(got).to_pylist()
    assert rows == [{"sample_id": f"id{i}", "simple_prompt": f"p{i}"} for i in (3, 4, 27, 39)]


def test_a_part_written_before_a_column_was_added_reads_it_as_nulls(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    table = chain.PIPELINE.data_dir(tmp_path).open().table("clip_scores")
    path = table.write([_row(table.schema, i) for i in range(3)])
    old = pq.read_table(path).drop_columns(["sim_complex"])  # as an older version wrote it
    pq.write_table(old, path)
    got = pa.concat_tables(table.select(pa.array(["id1", "id2"]), ["sim_complex", "p_simple"]))
    assert got.column_names == ["sample_id", "sim_complex", "p_simple"]
    assert (
        got.column("sim_complex").to_pylist() == [None, None]
        and got.column("p_simple").to_pylist() == [0.5] * 2
    )


def test_a_lookup_of_many_keys_caches_no_key_set(tmp_path: Path, monkeypatch) -> None:
    from storage import tables

    table = chain.PIPELINE.data_dir(tmp_path).open().table("captions")
    for p in range(4):
        table.write([_row(table.schema, 10 * p + i) for i in range(10)])
    want = {f"id{i}" for i in (3, 4, 15, 27, 28, 29, 39)} | {"nope"}
    few = list(table.iter_lookup(want, ["simple_prompt"]))
    tables._PART_IDS.clear()
    monkeypatch.setattr(tables, "BULK", 3)  # so these 8 keys are "many"
    many = list(table.iter_lookup(want, ["simple_prompt"]))
    assert many == few and [r["sample_id"] for r in many] == [
        "id3",
        "id4",
        "id15",
        "id27",
        "id28",
        "id29",
        "id39",
    ]
    assert tables._PART_IDS == {}  # no part's keys kept as a Python set
