"""Explicit Parquet schemas of the extraction pipeline's output tables (never inferred from a first row).

Layout of one run's output (Hive-style, so DuckDB / BigQuery / Spark read ``run_id`` as a partition column)::

    <output>/<table>/run_id=<run_id>/version=<launch>/part-*.parquet    table in TABLES, one folder per launch
    <output>/_published/run_id=<run_id>.json                            the version readers see, flipped last

Only the version a run's pointer names is published (``transforms.write``); other ``version=`` folders are
unfinished or superseded launches, deleted by the next launch of the run id. Readers that glob the files
themselves must filter on the pointer's version (the README's DuckDB views do).

Keys: ``doc_key`` is unique per input (manifest row or matched file) even when two inputs share a URI or a
``doc_id``; every per-page table carries ``page_no`` (0-based page index in the document). Boxes are pixels of
the decoded page, ``(x0, y0, x1, y1)``; polygons are 4 ``[x, y]`` points, clockwise from top-left.

``run_id`` is a partition key only: it lives in the folder name, never as a file column (BigQuery external tables
with Hive partitioning reject a key that is also a column, and pyarrow datasets fail on the string/dictionary
clash). Every reader takes it from the folder:

- pyarrow: ``pq.read_table("<output>/documents", partitioning=PARTITIONING)`` (or ``pyarrow.dataset.dataset``);
  the default ``partitioning="hive"`` also works but infers the type (only numeric run ids: an integer).
- DuckDB: ``pipelines.table_docs.duckdb_views_sql`` (``read_parquet('<output>/documents/*/*/*.parquet',
  hive_partitioning=true, ...)`` joined with the pointers).
- BigQuery: an external table with ``hive_partition_uri_prefix='gs://.../documents'`` (``run_id`` STRING).

``PARTITION_FIELD`` / :func:`with_partition` give the schema a reader sees (``run_id`` first, then the file columns).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as ds

__all__ = [
    "SCHEMA_VERSION",
    "DOCUMENTS_SCHEMA",
    "PAGES_SCHEMA",
    "LINES_SCHEMA",
    "ENTITIES_SCHEMA",
    "PAIRS_SCHEMA",
    "ERRORS_SCHEMA",
    "TABLES",
    "STAGES",
    "PARTITION_FIELD",
    "PARTITIONING",
    "with_partition",
]

SCHEMA_VERSION = "2.1"  # 2.0: run_id is a partition key only (no longer a file column); 2.1: documents.*_runtime

# Where a document or page can fail, in pipeline order (the ``stage`` / ``error_stage`` columns).
STAGES = ("read", "probe", "decode", "ocr", "kie")

_BOX = [("x0", pa.int32()), ("y0", pa.int32()), ("x1", pa.int32()), ("y1", pa.int32())]


def _box(prefix: str) -> list[pa.Field]:
    return [pa.field(f"{prefix}{name}", typ) for name, typ in _BOX]


# The Hive partition key of every table (folder ``run_id=<value>``); not a file column.
PARTITION_FIELD = pa.field("run_id", pa.string(), nullable=False)

_DOC_KEYS = [
    pa.field("doc_key", pa.string(), nullable=False),
    pa.field("doc_id", pa.string(), nullable=False),
]

DOCUMENTS_SCHEMA = pa.schema(_DOC_KEYS + [
    pa.field("uri", pa.string(), nullable=False),
    pa.field("sha256", pa.string()),
    pa.field("size_bytes", pa.int64()),
    pa.field("format", pa.string()),
    pa.field("pages_found", pa.int32()),
    pa.field("pages_processed", pa.int32()),
    pa.field("pages_failed", pa.int32()),
    pa.field("pages_skipped", pa.int32()),  # past --max_pages: counted, not decoded
    pa.field("page_width", pa.int32()),
    pa.field("page_height", pa.int32()),
    pa.field("status", pa.string(), nullable=False),  # "ok" | "failed"
    pa.field("error_stage", pa.string()),
    pa.field("error_type", pa.string()),
    pa.field("lines", pa.int32()),
    pa.field("entities", pa.int32()),
    pa.field("pairs", pa.int32()),
    pa.field("read_ms", pa.float64()),
    pa.field("decode_ms", pa.float64()),
    pa.field("det_ms", pa.float64()),
    pa.field("rec_ms", pa.float64()),
    pa.field("ser_ms", pa.float64()),
    pa.field("re_ms", pa.float64()),
    pa.field("ocr_model", pa.string()),
    pa.field("kie_model", pa.string()),
    pa.field("ocr_runtime", pa.string()),  # e.g. "det=openvino/cpu/fp32;rec=openvino/cpu/fp32"
    pa.field("kie_runtime", pa.string()),  # e.g. "ser=paddle/cpu/bf16;re=paddle/cpu/bf16"
    pa.field("kie_enabled", pa.bool_(), nullable=False),
    pa.field("windows", pa.int32()),
    pa.field("schema_version", pa.string(), nullable=False),
])

PAGES_SCHEMA = pa.schema(_DOC_KEYS + [
    pa.field("page_no", pa.int32(), nullable=False),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error_stage", pa.string()),
    pa.field("error_type", pa.string()),
    pa.field("lines", pa.int32()),
    pa.field("entities", pa.int32()),
    pa.field("pairs", pa.int32()),
    pa.field("windows", pa.int32()),
    pa.field("decode_ms", pa.float64()),
    pa.field("det_ms", pa.float64()),
    pa.field("rec_ms", pa.float64()),
    pa.field("ser_ms", pa.float64()),
    pa.field("re_ms", pa.float64()),
])

LINES_SCHEMA = pa.schema(_DOC_KEYS + [
    pa.field("page_no", pa.int32(), nullable=False),
    pa.field("line_id", pa.int32(), nullable=False),  # reading-order index on the page
    pa.field("text", pa.string()),
    pa.field("score", pa.float32()),
    pa.field("det_score", pa.float32()),
    pa.field("polygon", pa.list_(pa.list_(pa.float32(), 2), 4)),
    *_box(""),
    pa.field("ser_label", pa.string()),  # null when KIE is off
    pa.field("ser_score", pa.float32()),
])

ENTITIES_SCHEMA = pa.schema(_DOC_KEYS + [
    pa.field("page_no", pa.int32(), nullable=False),
    pa.field("entity_id", pa.int32(), nullable=False),
    pa.field("label", pa.string()),
    pa.field("text", pa.string()),
    *_box(""),
    pa.field("score", pa.float32()),
    pa.field("line_ids", pa.list_(pa.int32())),
])

PAIRS_SCHEMA = pa.schema(_DOC_KEYS + [
    pa.field("page_no", pa.int32(), nullable=False),
    pa.field("question_id", pa.int32(), nullable=False),
    pa.field("answer_id", pa.int32(), nullable=False),
    pa.field("question_text", pa.string()),
    pa.field("answer_text", pa.string()),
    *_box("question_"),
    *_box("answer_"),
    pa.field("score", pa.float32()),
])

ERRORS_SCHEMA = pa.schema(_DOC_KEYS + [
    pa.field("uri", pa.string(), nullable=False),
    pa.field("page_no", pa.int32()),  # null when the whole document failed before pages existed
    pa.field("stage", pa.string(), nullable=False),
    pa.field("error_type", pa.string(), nullable=False),
    pa.field("message", pa.string()),
])

# Table name -> schema, in the order the pipeline writes them.
TABLES: dict[str, pa.Schema] = {
    "documents": DOCUMENTS_SCHEMA,
    "pages": PAGES_SCHEMA,
    "lines": LINES_SCHEMA,
    "entities": ENTITIES_SCHEMA,
    "pairs": PAIRS_SCHEMA,
    "errors": ERRORS_SCHEMA,
}

# pyarrow's Hive partitioning of every table, ``run_id`` kept a string (no type inference); pass it as
# ``partitioning=`` to ``pq.read_table`` / ``pyarrow.dataset.dataset``.
PARTITIONING = ds.partitioning(pa.schema([PARTITION_FIELD]), flavor="hive")


def with_partition(schema: pa.Schema) -> pa.Schema:
    """The schema a Hive-aware reader sees: ``run_id`` (from the folder) followed by the file columns.

    Args:
        schema: a file schema from :data:`TABLES`.

    Returns:
        ``schema`` with :data:`PARTITION_FIELD` prepended.
    """
    return pa.schema([PARTITION_FIELD, *schema])
