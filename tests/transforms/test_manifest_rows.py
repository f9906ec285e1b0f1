"""Manifests account for every non-blank row: no comment syntax, paths as written, a broken CSV row stays alone."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from transforms.inputs import ReadManifestFn, read_manifest_rows


def _rows(path):
    return [(r.line, r.uri, r.doc_id, r.problem) for r in read_manifest_rows(str(path))]


def test_text_manifest_keeps_hash_names_and_spaces_as_written(tmp_path):
    for name in ("#a.jpg", " lead.jpg", "trail.jpg ", "plain.jpg"):
        (tmp_path / name).write_bytes(b"x")
    path = tmp_path / "m.txt"
    path.write_text("#a.jpg\n lead.jpg\r\n\n   \ntrail.jpg \nplain.jpg\nname\u2028with separator.jpg\n")
    assert _rows(path) == [(1, "#a.jpg", None, None), (2, " lead.jpg", None, None), (5, "trail.jpg ", None, None),
                           (6, "plain.jpg", None, None), (7, "name\u2028with separator.jpg", None, None)]
    # through a real pipeline: every row is a ref, and the paths resolve to the files that exist
    names = ("#a.jpg", " lead.jpg", "trail.jpg ", "plain.jpg", "name\u2028with separator.jpg")
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        refs = p | beam.Create([str(path)]) | beam.ParDo(ReadManifestFn()) | beam.Map(lambda r: (r.uri, r.error))
        assert_that(refs, equal_to([(str(tmp_path / n), None) for n in names]))
    assert all((tmp_path / n).is_file() for n in ("#a.jpg", " lead.jpg", "trail.jpg "))


def test_csv_unclosed_quote_reports_itself_and_keeps_its_neighbours(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('uri,doc_id\n'
                    'a.png,A\n'
                    '"b, unclosed.png,B\n'     # 3: unclosed quote: used to swallow every row below
                    'c.png,C\n'
                    'd"e.png,D\n'              # 5: a quote inside an unquoted value
                    '"f ""quoted"".png",F\n'   # 6: a doubled quote inside a quoted value is fine
                    ',\n'                      # 7: no uri, but not blank: accounted for
                    ' g.png ,G\n'              # 8: the path as written
                    '\n'
                    '"h.png",H\n')
    rows = _rows(path)
    assert [r[:3] for r in rows] == [(2, "a.png", "A"), (3, None, None), (4, "c.png", "C"), (5, None, None),
                                     (6, 'f "quoted".png', "F"), (7, None, None), (8, " g.png ", "G"),
                                     (10, "h.png", "H")]
    problems = {line: problem for line, _, _, problem in rows if problem}
    assert problems == {3: "unclosed quote (a quoted value must end on its own line)",
                        5: 'a quote inside an unquoted value (quote the whole value and double the quote: "a""b")',
                        7: "empty uri"}
    # each malformed row becomes a failed ref naming the manifest line; the others are plain refs
    refs = list(ReadManifestFn().process(str(path)))
    assert len(refs) == 8 and len({r.doc_key for r in refs}) == 8
    failed = [r.error.message for r in refs if r.error is not None]
    assert failed == [f"manifest {path} line {n}: {problems[n]}" for n in (3, 5, 7)]
    assert all(r.error.error_type == "malformed_manifest_row" for r in refs if r.error is not None)


def test_csv_header_must_be_readable(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text('"uri,doc_id\na.png,A\n')
    with pytest.raises(ValueError, match="no readable CSV header \\(unclosed quote"):
        _rows(path)
