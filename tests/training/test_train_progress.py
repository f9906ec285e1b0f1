"""Console progress of training runs, VisualDL scalars, repeatable shard flags and the manifest summary."""

from __future__ import annotations

import json

import pytest

from schemas.annotations import KieDocument, KieLine
from training import cli
from training.progress import TrainProgress, format_summary
from training.shards import load_manifest, write_shard

LABELS = ["OTHER", "QUESTION", "ANSWER", "HEADER"]


class _Clock:
    """Seconds that the test advances by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_step_lines_come_every_interval_with_all_fields():
    clock, lines = _Clock(), []
    p = TrainProgress(100, 10, 10, every_s=30.0, write=lines.append, clock=clock)
    for step in range(1, 101):
        clock.now += 2.0  # 0.5 steps/s
        p.step(step, loss=1.0 / step, lr=1e-4, parts={"loss_student": 0.5, "loss_dml": 0.01})
    # the first step, then one line every 30 s (15 steps), and the last step
    steps = [int(x.split("step ")[1].split("/")[0]) for x in lines]
    assert steps == [1, 16, 31, 46, 61, 76, 91, 100]
    assert lines[1] == ("kiebeam train: step 16/100 (16.0%), epoch 2/10, loss 0.0625 (student 0.5000, dml 0.0100), "
                        "lr 1.00e-04, 0.50 steps/s, ETA 2m48s")
    assert lines[-1].endswith("ETA 0s")


def test_every_steps_and_disabled():
    clock, lines = _Clock(), []
    p = TrainProgress(20, 5, 4, every_s=1e9, every_steps=5, write=lines.append, clock=clock)
    for step in range(1, 21):
        clock.now += 1.0
        p.step(step, 0.1, 1e-3)
    assert [int(x.split("step ")[1].split("/")[0]) for x in lines] == [1, 5, 10, 15, 20]
    quiet = []
    q = TrainProgress(20, 5, 4, enabled=False, write=quiet.append, clock=clock)
    q.step(1, 0.1, 1e-3)
    q.evaluation(1, {"hmean": 0.5, "precision": 0.5, "recall": 0.5}, -1.0, -1, 0.1)
    q.summary(1, 0.5, 1, "runs/x")
    assert quiet == []


def test_evaluation_lines_say_new_best_and_summary_marks_it():
    clock, lines = _Clock(), []
    p = TrainProgress(30, 10, 3, start_step=0, write=lines.append, clock=clock)
    p.evaluation(10, {"hmean": 0.5, "precision": 0.4, "recall": 0.667}, -1.0, -1, 1.25)
    p.evaluation(20, {"hmean": 0.7, "precision": 0.7, "recall": 0.7}, 0.5, 10, 1.0)
    p.evaluation(30, {"hmean": 0.6, "precision": 0.6, "recall": 0.6}, 0.7, 20, 1.0)
    assert lines == ["kiebeam eval: step 10, hmean 0.5000 (P 0.4000, R 0.6670), new best, 1.2 s",
                     "kiebeam eval: step 20, hmean 0.7000 (P 0.7000, R 0.7000), new best (was 0.5000 at step 10), "
                     "1.0 s",
                     "kiebeam eval: step 30, hmean 0.6000 (P 0.6000, R 0.6000), best stays 0.7000 at step 20, 1.0 s"]
    clock.now += 60
    p.last_loss = 0.25
    p.summary(30, 0.7, 20, "runs/ser")
    table = lines[-1].splitlines()
    assert table[0] == "kiebeam train: finished"
    assert table[3].split() == ["20", "0.7000", "0.7000", "0.7000", "<-", "best"]
    assert "steps      30 in 1m00s, 0.50 steps/s" in table and "best hmean 0.7000 at step 20" in table
    # long runs: the best and the latest rows stay, the rest is counted
    evals = [{"step": s, "hmean": s / 100, "precision": 0.0, "recall": 0.0} for s in range(1, 41)]
    evals[4]["hmean"] = 0.99
    text = format_summary(evals, steps=40, seconds=10, best_hmean=0.99, best_step=5, out_dir="o", last_loss=None,
                          max_rows=4)
    assert [r.split()[0] for r in text.splitlines()[1:5]] == ["5", "38", "39", "40"]
    assert "(36 of 40 evaluations not shown; all are in metrics.jsonl)" in text


def _docs(n):
    out = []
    for d in range(n):
        lines = tuple(KieLine(t, lab, ((10.0, y), (90.0, y), (90.0, y + 20.0), (10.0, y + 20.0)), (10, y, 90, y + 20),
                              i)
                      for i, (t, lab, y) in enumerate([("Name", "QUESTION", 10), (f"Ada {d}", "ANSWER", 40),
                                                       ("FORM", "HEADER", 70)]))
        out.append(KieDocument(f"d{d}.jpg", lines, 100, 100))
    return out


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("prog")
    shards = []
    for name, docs in (("a", _docs(3)), ("b", _docs(2))):
        path = str(root / f"{name}.txt")
        write_shard(docs, path, sizes_uri=f"{path}.sizes.json")
        shards.append(path)
    return root, shards


def test_repeated_train_flags_keep_every_shard_and_the_summary_lists_them(tiny_manifest, capsys):
    root, (a, b) = tiny_manifest
    out1, out2 = root / "m1.json", root / "m2.json"
    assert cli.main(["shards", "build", "--train", a, "--train", b, "--val", a, "--out", str(out1)]) == 0
    printed = capsys.readouterr().out
    assert cli.main(["shards", "build", "--train", a, b, "--val", a, "--out", str(out2)]) == 0
    m1, m2 = load_manifest(str(out1)), load_manifest(str(out2))
    assert [(s.uri.rsplit("/", 1)[-1], s.split, s.documents) for s in m1.shards] == [
        ("a.txt", "train", 3), ("b.txt", "train", 2), ("a.txt", "val", 3)]
    assert m1.to_dict() == m2.to_dict()
    assert "3 shards, 8 documents" in printed and "total: train 5 documents in 2 shards, val 3 documents in 1 shards" \
        in printed
    assert [ln.split()[:2] for ln in printed.splitlines() if ln.endswith(("a.txt", "b.txt"))] == [
        ["train", "3"], ["train", "2"], ["val", "3"]]
    with pytest.raises(ValueError, match="listed more than once"):
        cli.main(["shards", "build", "--train", a, "--train", a, "--out", str(root / "m3.json")])


def test_train_cli_prints_progress_unless_quiet_and_logs_visualdl(tiny_manifest, tmp_path, capsys):
    root, (a, b) = tiny_manifest
    manifest = root / "m.json"
    cli.main(["shards", "build", "--train", a, b, "--val", b, "--out", str(manifest)])
    capsys.readouterr()
    args = ["train", "--preset", "tiny_ser", "--manifest", str(manifest), "--max_steps", "4", "--batch_size", "2",
            "--eval_every", "2", "--set", 'model={"num_hidden_layers": 1}', "--set", "max_len=64",
            "--set", "vocab_size=60"]
    assert cli.main([*args, "--out_dir", str(tmp_path / "loud"), "--progress_every_s", "0",
                     "--visualdl_dir", str(tmp_path / "vdl")]) == 0
    loud = capsys.readouterr().out.splitlines()
    step_lines = [x for x in loud if x.startswith("kiebeam train: step ")]
    assert len(step_lines) == 4 and all(f in step_lines[1] for f in ("step 2/4 (50.0%)", "epoch 1/", ", loss ",
                                                                     ", lr ", " steps/s, ETA "))
    assert [x.split(",")[0] for x in loud if x.startswith("kiebeam eval:")] == ["kiebeam eval: step 2",
                                                                                 "kiebeam eval: step 4"]
    assert "kiebeam train: finished" in loud and any(x.startswith("best hmean ") for x in loud)
    assert json.loads(loud[-1])["steps"] == 4

    assert cli.main([*args, "--out_dir", str(tmp_path / "quiet"), "--quiet"]) == 0
    quiet = capsys.readouterr().out.splitlines()
    assert len(quiet) == 1 and json.loads(quiet[0])["steps"] == 4
    # metrics.jsonl is the same either way
    rows = [json.loads(x) for x in (tmp_path / "quiet" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]

    from visualdl import LogReader

    (record,) = (tmp_path / "vdl").glob("vdlrecords.*")
    reader = LogReader(file_path=str(record))
    assert {"train/loss", "train/lr", "eval/hmean"} <= set(reader.get_tags()["scalar"])
    assert [x.id for x in reader.get_data("scalar", "train/loss")] == [1, 2, 3, 4]
