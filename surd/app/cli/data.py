"""Read-only commands: `status`, `sql` and `config show`. None of them creates a data root."""

from __future__ import annotations

import base64
import csv
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import typer
from rich.table import Table

from storage.catalog import NotARead, connect, read_statements
from surd.app.cli.common import CONFIG, err, fail, open_data, out, settings
from surd.config import describe_settings
from surd.status import status as compute
from surd.summary import counts


class SqlFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    jsonl = "jsonl"
    parquet = "parquet"


def status(config: Path | None = CONFIG, as_json: bool = typer.Option(False, "--json")) -> None:
    """Items in, out, dropped by reason and pending, per stage; how each source's last crawl ended."""

    s = settings(config)
    st = compute(s, open_data(s, create=False))
    if as_json:
        print(json.dumps(st, indent=1))
        return
    print_status(st)


def print_status(st: dict[str, Any]) -> None:
    table = Table("stage", "in", "out", "dropped (by reason)", "pending", title=f"SURD at {st['data_root']}")
    rows = [(k, v) for k, v in st["stages"].items() if isinstance(v, dict) and "in" in v]
    rows += [(f"embeddings/{k}", v) for k, v in st["stages"]["embeddings"].items()]
    for name, v in rows:
        dropped = counts(v["dropped"]) if v["dropped"] else "-"
        table.add_row(name, str(v["in"]), str(v["out"]), dropped, str(v["pending"]))
    out.print(table)
    for source, c in st.get("crawls", {}).items():
        failure = c.get("last_failure")
        if c["done"]:
            how = f"done ({c['stop_reason']})"
        elif failure:
            how = f"unfinished: failed with {failure['reason']} at {failure['url']} ({failure['at']})"
        else:
            how = "unfinished (in progress, or killed)"
        flags = [
            *(["region-blocked (HTTP 451)"] if c.get("region_blocked") else []),
            *(["answered safe-for-work only"] if c.get("sfw_only") else []),
            *([f"down since {c['down_since']}"] if c.get("down_since") else []),
        ]
        out.print(
            f"crawl {source}: {c['crawl_id']} {how}, robots {c['robots']}, "
            f"{'incremental' if c['incremental'] else 'full'} pass, {c['items']} items"
            + (f"; {', '.join(flags)}" if flags else ""),
            highlight=False,
        )
    if st.get("source_removed"):
        out.print(f"released items found deleted at their source: {st['source_removed']}", highlight=False)
    out.print(
        f"failed crawl pages: {st['crawl_pages_failed']}; latest release: "
        f"{st['stages']['release']['latest'] or 'none'}; adapter runs: {len(st['stages']['adapter_runs'])}",
        highlight=False,
    )


def sql(
    query: str = typer.Argument(
        ..., metavar="QUERY", help="SQL over the catalog: a view per table and release"
    ),
    fmt: SqlFormat = typer.Option(SqlFormat.table, "--format", help="how to print the rows"),
    to: Path | None = typer.Option(None, "--out", help="write the rows to this file (parquet needs it)"),
    config: Path | None = CONFIG,
) -> None:
    """Run read-only SQL over the DuckDB catalog (a view per table and release: raw_items, images,
    captions, …). DuckDB itself can write no file, load no extension and change no setting in this
    session; only SELECT and EXPLAIN [ANALYZE] of a SELECT run. Files outside the catalog are out
    of reach."""

    import duckdb

    try:
        statements = read_statements(query)
    except NotARead as exc:
        raise fail(f"surd sql runs reads only (SELECT, EXPLAIN of a SELECT); refused: {exc.kind}") from None
    except duckdb.Error as exc:
        raise fail(f"bad SQL: {str(exc).splitlines()[0]}") from None
    con = connect(open_data(settings(config), create=False))
    try:
        for st in statements[:-1]:
            con.execute(st)
        _answer(con, statements[-1], fmt, to)
    except duckdb.PermissionException as exc:  # the session's own guard: no file, extension or setting
        raise fail(f"surd sql runs reads only; refused by DuckDB: {str(exc).splitlines()[0]}") from None


def _answer(con: Any, query: str, fmt: SqlFormat, to: Path | None) -> None:
    """The last statement's rows, printed or written to `to` (by this process: DuckDB writes no file)."""
    if fmt is SqlFormat.parquet or (to is not None and fmt is not SqlFormat.table):
        if to is None:
            raise fail("--format parquet writes a file: give --out FILE")
        if fmt is SqlFormat.parquet:
            reader = con.sql(query).to_arrow_reader(65536)
            with pq.ParquetWriter(str(to), reader.schema) as w:
                for batch in reader:
                    w.write_batch(batch)
        else:
            with to.open("w", newline="") as fh:
                cur = con.execute(query)
                if fmt is SqlFormat.csv:
                    _csv_rows(cur, fh)
                else:
                    _json_rows(cur, fh, fmt is SqlFormat.jsonl)
        err.print(f"{to}: written", highlight=False)
        return
    cur = con.execute(query)
    if cur.description is None:  # a statement without rows
        return
    if fmt is SqlFormat.table:
        table = Table(*_columns(cur))
        for row in cur.fetchall():
            table.add_row(*("NULL" if v is None else str(v) for v in row))
        out.print(table)
    elif fmt is SqlFormat.csv:
        _csv_rows(cur, sys.stdout)
    else:
        _json_rows(cur, sys.stdout, fmt is SqlFormat.jsonl)


def _csv_rows(cur: Any, fh: Any) -> None:
    w = csv.writer(fh)
    w.writerow(_columns(cur))
    while batch := cur.fetchmany(1024):
        w.writerows(batch)


def _columns(cur: Any) -> list[str]:
    return [d[0] for d in cur.description]


def _json_rows(cur: Any, fh: Any, lines: bool) -> None:
    """Rows as JSON objects: one per line (jsonl), or one array (json); bytes in base64."""
    cols = _columns(cur) if cur.description else []
    first = True
    if not lines:
        fh.write("[")
    while cols and (batch := cur.fetchmany(1024)):
        for row in batch:
            obj = json.dumps(dict(zip(cols, row, strict=True)), default=_jsonable)
            if lines:
                fh.write(obj + "\n")
            else:
                fh.write(("\n" if first else ",\n") + obj)
                first = False
    if not lines:
        fh.write("\n]\n")


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes | bytearray):
        return base64.b64encode(v).decode()
    return str(v)


def config_show(
    config: Path | None = CONFIG,
    all_keys: bool = typer.Option(False, "--all", help="every setting: variable, type, default, description"),
) -> None:
    """Print the effective settings, secrets masked (or, with --all, every setting there is)."""
    if all_keys:  # one greppable line per setting: variable, default, description
        for d in describe_settings():
            default = json.dumps(d["default"], default=str)
            print(f"{d['env']:<44} {default:<24} {d['description']}".rstrip())
        return
    print(json.dumps(settings(config).provenance(), indent=1))


def register(app: typer.Typer) -> None:
    app.command()(status)
    app.command()(sql)
    config_app = typer.Typer(help="Settings.", no_args_is_help=True)
    config_app.command("show")(config_show)
    app.add_typer(config_app, name="config")
