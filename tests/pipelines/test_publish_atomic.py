"""Publishing is all-or-nothing for readers: a launch killed between any two file-system steps of the publish.

Each launch writes the six tables of run ``r1`` with real Beam (FnApiRunner) and real Parquet, under its own
``version=`` folder; the publish is killed before its k-th step (k = 0, 1, ...), which leaves the folder exactly as a
killed process would (publishing has no clean-up handlers). After every kill the project reader, ``kiebeam check``
and the README's DuckDB views must all show one complete launch, the previous one or the new one, never a mix;
the next launch must clean up what the killed ones left.
"""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import duckdb
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.accounting import check_output
from pipelines.output_reader import list_runs, read_table, unpublished_folders
from pipelines.table_docs import README_QUERIES, duckdb_views_sql
from schemas.parquet import SCHEMA_VERSION, TABLES
from transforms import write as write_mod
from transforms.write import WriteRunTables

RUN = "r1"


class _Killed(Exception):
    """Stands for the process dying: nothing after it runs."""


def _rows(tag: str) -> dict[str, list[dict]]:
    """One ok document and one failed one per launch; ``tag`` is in every doc_id, so launches cannot mix unseen."""
    ok, bad = {"doc_key": f"{tag}-k0", "doc_id": f"{tag}-ok"}, {"doc_key": f"{tag}-k1", "doc_id": f"{tag}-bad"}
    doc = {"sha256": "0" * 64, "size_bytes": 10, "format": "png", "kie_enabled": True,
           "schema_version": SCHEMA_VERSION}
    return {
        "documents": [{**ok, **doc, "uri": "/x/a.png", "status": "ok", "pages_found": 1, "pages_processed": 1,
                       "pages_failed": 0, "pages_skipped": 0, "lines": 1, "entities": 1, "pairs": 0},
                      {**bad, **doc, "uri": "/x/b.png", "status": "failed", "error_stage": "decode",
                       "error_type": "truncated", "pages_found": 0}],
        "pages": [{**ok, "page_no": 0, "status": "ok", "lines": 1, "entities": 1, "pairs": 0}],
        "lines": [{**ok, "page_no": 0, "line_id": 0, "text": "Name", "x0": 1, "y0": 1, "x1": 9, "y1": 9,
                   "polygon": [[1.0, 1.0], [9.0, 1.0], [9.0, 9.0], [1.0, 9.0]]}],
        "entities": [{**ok, "page_no": 0, "entity_id": 0, "label": "QUESTION", "text": "Name", "line_ids": [0]}],
        "pairs": [],
        "errors": [{**bad, "uri": "/x/b.png", "stage": "decode", "error_type": "truncated"}],
    }


def _launch(out: Path, tag: str) -> None:
    rows = _rows(tag)
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        pcolls = {t: p | f"Create{t.capitalize()}" >> beam.Create(rows[t], reshuffle=False) for t in TABLES}
        _ = pcolls | WriteRunTables(str(out), RUN, launch_id=tag)


def _seen(out: Path) -> dict[str, set[str]]:
    """The launch tags every reader sees, per reader; all must name the same single launch."""
    con = duckdb.connect()
    con.execute(duckdb_views_sql(str(out)))
    assert all(con.execute(sql).fetchall() is not None for sql in README_QUERIES.values())
    views = {t: {r[0].split("-")[0] for r in con.execute(f"SELECT doc_key FROM {t}").fetchall()} for t in TABLES}
    ours = {t: {k.split("-")[0] for k in read_table(str(out), t).column("doc_key").to_pylist()} for t in TABLES}
    return {"views": set().union(*views.values()), "reader": set().union(*ours.values()),
            "per_table": {t: frozenset(v) for t, v in (views | ours).items() if t != "pairs"}}


def test_a_kill_between_any_two_publish_steps_shows_one_whole_launch(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _launch(out, "v00")
    published, outcomes = "v00", []
    real_step = write_mod._step
    for k in range(12):
        tag, calls = f"v{k + 1:02d}", []

        def step(label, action, calls=calls, k=k):
            calls.append(label)
            if len(calls) > k:
                raise _Killed(f"killed before: {label}")
            return real_step(label, action)

        monkeypatch.setattr(write_mod, "_step", step)
        try:
            _launch(out, tag)
            killed_at = None
        except Exception as e:  # Beam wraps the DoFn's exception
            assert "killed before" in str(e), e
            killed_at = calls[-1]
        monkeypatch.setattr(write_mod, "_step", real_step)
        flipped = killed_at is None or calls[:-1].count("flip the pointer") > 0  # killed after the flip ran
        if flipped:
            published = tag
        outcomes.append((k, killed_at, published))
        seen = _seen(out)
        assert seen["views"] == seen["reader"] == {published}, (k, killed_at, seen)
        assert set(seen["per_table"].values()) == {frozenset({published})}, (k, killed_at)  # no table from another
        assert list_runs(str(out)) == [RUN]
        assert check_output(str(out), expected_documents=2) == [], (k, killed_at)
        if killed_at is None:
            break
    kills = [o[1] for o in outcomes]
    assert kills[0] == "write the pointer under a temporary name" and "flip the pointer" in kills
    assert any(k and k.startswith("delete") for k in kills) and kills[-1] is None  # after the flip too; then whole
    # the launch that went through removed every leftover: one version folder per table, one pointer, no temp files
    assert unpublished_folders(str(out)) == []
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted([f"_published/run_id={RUN}.json"] + [
        f"{t}/run_id={RUN}/version={published}/{n}"
        for t, names in json.loads((out / "_published" / f"run_id={RUN}.json").read_text())["files"].items()
        for n in names])
    assert not (out / "_staging").exists()


def test_a_rerun_removes_the_older_unversioned_layout(tmp_path):
    out = tmp_path / "out"
    _launch(out, "v1")
    old = out / "documents" / f"run_id={RUN}"
    (old / "part-00000-of-00001.parquet").write_bytes(b"PAR1 old layout")  # schema 2.0 files, never versioned
    (old / "_SUCCESS").write_text("")
    (out / "_staging" / f"run_id={RUN}" / "abc" / "lines").mkdir(parents=True)  # a killed launch of the old code
    (out / "_staging" / f"run_id={RUN}" / "abc" / "lines" / "part-0.parquet").write_bytes(b"x")
    _launch(out, "v2")
    assert sorted(p.name for p in old.iterdir()) == ["version=v2"]
    assert not (out / "_staging").exists()
    assert read_table(str(out), "documents").num_rows == 2


@pytest.mark.parametrize("missing", ["documents", "errors"])
def test_check_flags_a_published_version_that_lost_or_gained_files(tmp_path, missing):
    out = tmp_path / "out"
    _launch(out, "v1")
    folder = out / missing / f"run_id={RUN}" / "version=v1"
    victim = next(folder.glob("*.parquet"))
    extra = folder / "part-extra.parquet"
    extra.write_bytes(victim.read_bytes())
    victim.unlink()
    text = "\n".join(check_output(str(out)))
    assert f"{missing}: files of run {RUN}'s published version v1 that are missing: 1 ({victim.name})" in text
    assert f"{missing}: files in run {RUN}'s published version v1 that its pointer does not list: 1 " in text
