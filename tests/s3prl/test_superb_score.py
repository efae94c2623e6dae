"""SUPERB Overall score: the papers' rows recompute, tables and S3PRL logs are read right."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

from recycle_distill.cli import main as cli_main
from recycle_distill.s3prl.superb.launcher import HEADER
from recycle_distill.s3prl.superb.logs import parse_log, read_results, read_s3prl_results
from recycle_distill.s3prl.superb.score import (
    TASK_KEYS,
    canonical_task,
    format_table,
    load_paper_results,
    overall,
    read_table,
    task_score,
)

PAPER = {row.name: row for row in load_paper_results()}


def test_paper_file_holds_every_row_with_all_eleven_numbers():
    assert {"HuBERT Base", "DistilHuBERT", "FitHuBERT", "MaskHuBERT", "ARMHuBERT", "ARMHuBERT-S", "ARMwavLM-S",
            "STaRHuBERT", "STaRHuBERT-L", "DPHuBERT"} <= set(PAPER)
    for row in PAPER.values():
        assert set(row.values) == set(TASK_KEYS) and row.printed_overall is not None


@pytest.mark.parametrize("name", sorted(PAPER))
def test_every_paper_row_recomputes_to_its_printed_overall(name):
    row = PAPER[name]
    assert row.score.complete
    assert abs(row.score.value - row.printed_overall) <= 0.05, (name, row.score.value, row.printed_overall)  # README: within 0.05


def test_named_overalls():
    assert round(PAPER["HuBERT Base"].score.value, 1) == 80.8
    assert round(PAPER["ARMHuBERT"].score.value, 1) == 78.1
    assert round(PAPER["STaRHuBERT"].score.value, 1) == 79.5


def test_task_transform():
    assert task_score("PR", 5.41) == pytest.approx(94.59)
    assert task_score("QbE", 0.0736) == pytest.approx(7.36)
    assert task_score("SID", 81.42) == 81.42
    assert task_score("SF_CER", 25.2) == pytest.approx(74.8)
    assert task_score("SF_F1", 88.53) == 88.53


def test_missing_tasks_give_a_labelled_partial_mean():
    score = overall({"SID": 60.0, "ASR": 10.0, "KS": None})
    assert not score.complete and score.value == pytest.approx(75.0)
    assert score.present == ("SID", "ASR") and "KS" in score.missing and len(score.missing) == 9
    assert score.label() == "partial 75.00 (2/11)"
    assert overall({}).label() == "-"


def test_task_names_are_normalised_and_unknown_ones_refused():
    assert canonical_task("sf-f1") == "SF_F1" and canonical_task("SF CER") == "SF_CER"
    assert canonical_task("qbe") == "QbE" and canonical_task("EER") == "ASV" and canonical_task("model") is None
    with pytest.raises(ValueError, match="unknown SUPERB task 'XYZ'"):
        canonical_task("XYZ")


def test_yaml_multi_model_flat_and_csv(tmp_path):
    multi = tmp_path / "multi.yaml"
    multi.write_text(yaml.safe_dump({"mine": dict(PAPER["ARMHuBERT"].values), "other": {"SID": 50, "PR": None}}))
    rows = {row.name: row for row in read_table(multi)}
    assert rows["mine"].score.value == pytest.approx(PAPER["ARMHuBERT"].score.value)
    assert rows["other"].values == {"SID": 50.0}
    flat = tmp_path / "flat.yaml"
    flat.write_text("model: tiny\nSID: 12.5\nsf-cer: 30\n")
    (row,) = read_table(flat)
    assert row.name == "tiny" and row.values == {"SID": 12.5, "SF_CER": 30.0}
    table = tmp_path / "ours.csv"
    table.write_text("# comment\nmodel,PR,KS,SID,Overall\nA,7.0,96.0,,99\nB,8,95,60,\n")
    a, b = read_table(table)
    assert a.values == {"PR": 7.0, "KS": 96.0} and a.printed_overall == 99.0
    assert b.values == {"PR": 8.0, "KS": 95.0, "SID": 60.0}


def test_bad_values_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mine:\n  SID: lots\n")
    with pytest.raises(ValueError, match=r"mine\.SID: expected a number"):
        read_table(bad)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("model,SIDD\nA,1\n")
    with pytest.raises(ValueError, match="SIDD"):
        read_table(unknown)


# ------------------------------------------------------------------------------------------
# S3PRL logs. The lines are what S3PRL 0.4.18 writes (copied from the e2e runs; the ctc, ASV
# and SD lines follow the print statements of their experts).
# ------------------------------------------------------------------------------------------

SID_LOG_LOG = """\
train at step 2: 0.25
train at step 4: 0.5
dev at step 4: 0.5
New best on dev at step 4: 0.5
test at step 4: 0.625
dev at step 8: 0.25
test at step 8: 0.75
"""

ASR_TRAIN_STDOUT = f"""\
{HEADER} run: mode=train split=test
[Runner] - Start a new experiment
train loss: 8.404335975646973
train uer: 88.63636363636364
train wer: 150.0
dev-clean loss: 10.378209114074707
dev-clean uer: 96.92307692307692
dev-clean wer: 100.0
test-clean loss: 9.972146987915039
test-clean uer: 95.65217391304348
test-clean wer: 109.0909090909091
[Runner] - Save the checkpoint to:
1. /tmp/exp/states-4.ckpt
"""

ASR_EVALUATE_STDOUT = f"""\
{HEADER} run: mode=evaluate split=test-clean
[Runner] - Resume from /tmp/exp/states-4.ckpt
test-clean loss: 3.1
test-clean uer: 4.2
test-clean wer: 9.96
"""


def _experiment(folder: Path, downstream: str, logs: dict, upstream: str = "armhubert",
                ckpt: str = "/ckpts/ARMHuBERT-960h.ckpt", config: str = "x.yaml", stamp: float | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "args_2026-01-01-00-00-00.yaml").write_text(yaml.safe_dump(
        {"downstream": downstream, "upstream": upstream, "upstream_ckpt": ckpt, "config": config, "mode": "train"}))
    for name, text in logs.items():
        (folder / name).write_text(text)
    if stamp is not None:
        for path in folder.iterdir():
            os.utime(path, (stamp, stamp))
    return folder


def test_log_log_prefers_the_test_value_at_the_dev_best_step(tmp_path):
    _experiment(tmp_path / "sid", "voxceleb1", {"log.log": SID_LOG_LOG})
    (row,) = read_s3prl_results([tmp_path])
    assert row.name == "armhubert:ARMHuBERT-960h"
    assert row.values == {"SID": pytest.approx(62.5)}
    assert "dev-best step 4" in row.sources["SID"]


def test_evaluate_runs_win_over_training_evaluations(tmp_path):
    # -m evaluate writes "test at step 0" to log.log; our launcher heads superb.log segments.
    _experiment(tmp_path / "sid", "voxceleb1", {"log.log": SID_LOG_LOG + "test at step 0: 0.875\n"})
    _experiment(tmp_path / "asr", "asr", {"superb.log": ASR_TRAIN_STDOUT + ASR_EVALUATE_STDOUT})
    (row,) = read_s3prl_results([tmp_path])
    assert row.values["SID"] == pytest.approx(87.5) and "-m evaluate" in row.sources["SID"]
    assert row.values["ASR"] == pytest.approx(9.96) and "-m evaluate -t test-clean" in row.sources["ASR"]


def test_training_time_test_evaluation_is_used_and_labelled_when_nothing_better(tmp_path):
    _experiment(tmp_path / "asr", "asr", {"stdout.log": ASR_TRAIN_STDOUT.split("\n", 1)[1]})
    (row,) = read_s3prl_results([tmp_path])
    assert row.values["ASR"] == pytest.approx(109.0909090909091)  # S3PRL prints ASR WER in percent already
    assert row.sources["ASR"].startswith("last test-clean evaluation during training")


def test_every_log_derived_task(tmp_path):
    _experiment(tmp_path / "ks", "speech_commands", {"log.log": "test at step 0: 0.9688\n"})
    _experiment(tmp_path / "ic", "fluent_commands", {"log.log": "test at step 0: 0.9707\n"})
    _experiment(tmp_path / "pr", "ctc", {"test.log": "test loss: 1.2\ntest per: 0.0772\n"}, config="downstream/ctc/libriphone.yaml")
    _experiment(tmp_path / "sf", "ctc", {"test.log": "test loss: 1.0\ntest slot_type_f1: 0.8759\ntest slot_value_cer: 0.2606\n"},
                config="downstream/ctc/snips.yaml")
    _experiment(tmp_path / "asv", "sv_voxceleb1", {"test.log": "sv-voxceleb1/test-EER: 0.0568\n"})
    _experiment(tmp_path / "sd", "diarization", {"test.log": "mode test acc 0.93 der 0.071\n"})
    _experiment(tmp_path / "qbe", "quesst14_dtw", {"test.log": "nothing to read\n"})
    for fold, acc in enumerate((0.60, 0.62, 0.64, 0.66, 0.62), 1):
        _experiment(tmp_path / f"er{fold}", "emotion", {"log.log": f"test at step 0: {acc}\n"})
    (row,) = read_s3prl_results([tmp_path])
    expected = {"KS": 96.88, "IC": 97.07, "PR": 7.72, "SF_F1": 87.59, "SF_CER": 26.06, "ASV": 5.68, "SD": 7.1, "ER": 62.8}
    assert row.values == {key: pytest.approx(value) for key, value in expected.items()}
    assert row.sources["ER"] == "mean of 5 runs (ER folds)"
    assert any("QbE" in note and "MTWV" in note for note in row.notes)
    score = row.score
    assert not score.complete and set(score.missing) == {"SID", "ASR", "QbE"}


def test_model_names_and_newest_run(tmp_path):
    _experiment(tmp_path / "a_old", "voxceleb1", {"log.log": "test at step 0: 0.1\n"}, stamp=1_000_000)
    _experiment(tmp_path / "a_new", "voxceleb1", {"log.log": "test at step 0: 0.3\n"}, stamp=2_000_000)
    _experiment(tmp_path / "mask", "voxceleb1", {"log.log": "test at step 0: 0.2\n"}, upstream="maskhubert_960h", ckpt=None)
    rows = {row.name: row for row in read_s3prl_results([tmp_path])}
    assert rows["armhubert:ARMHuBERT-960h"].values["SID"] == pytest.approx(30.0)
    assert any("2 runs" in note for note in rows["armhubert:ARMHuBERT-960h"].notes)
    assert rows["maskhubert_960h"].values["SID"] == pytest.approx(20.0)
    (named,) = read_s3prl_results([tmp_path / "mask"], name="mine")
    assert named.name == "mine"


def test_dev_only_results_are_reported_missing_with_a_hint(tmp_path):
    _experiment(tmp_path / "asr", "asr", {"superb.log": f"{HEADER} run: mode=train split=test\ndev-clean wer: 20.0\n"})
    (row,) = read_s3prl_results([tmp_path])
    assert "ASR" not in row.values
    assert any("only dev-clean results" in note for note in row.notes)


def test_tqdm_carriage_returns_do_not_hide_metric_lines(tmp_path):
    log = tmp_path / "stdout.log"
    log.write_text("test:  50%|#####     | 1/2\rtest acc: 0.5\n")
    (obs,) = parse_log(log)
    assert (obs.split, obs.metric, obs.value) == ("test", "acc", 0.5)


def test_tables_and_logs_merge_into_one_model(tmp_path):
    _experiment(tmp_path / "sid", "voxceleb1", {"log.log": "test at step 0: 0.65\n"})
    extra = tmp_path / "extra.yaml"
    values = dict(PAPER["ARMHuBERT"].values)
    values.pop("SID")
    extra.write_text(yaml.safe_dump({"armhubert:ARMHuBERT-960h": values}))
    (row,) = read_results([extra, tmp_path / "sid"])
    assert row.score.complete and row.values["SID"] == pytest.approx(65.0)
    assert abs(row.score.value - 78.1) < 0.05


def test_table_output_has_paper_rows_and_partial_label(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("mine:\n  SID: 70\n  ASR: 9\n")
    ours = read_table(path)
    markdown = format_table(ours, load_paper_results())
    assert "| HuBERT Base" in markdown and "80.80 [80.8]" in markdown
    assert "partial" in markdown and "(2/11)" in markdown
    csv_text = format_table(ours, [], fmt="csv")
    assert csv_text.splitlines()[0].startswith("model,source,PR PER,")


def test_cli(tmp_path, capsys):
    results = tmp_path / "mine.yaml"
    results.write_text(yaml.safe_dump({"my-arm": dict(PAPER["ARMHuBERT"].values)}))
    assert cli_main(["superb-score", str(results)]) == 0
    out = capsys.readouterr().out
    assert "my-arm" in out and "78.11" in out and "ARMHuBERT-S" in out
    assert cli_main(["superb-score", str(results), "--no-paper", "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "HuBERT Base" not in out and out.startswith("model,source")
    assert cli_main(["superb-score", str(tmp_path / "absent.yaml")]) == 1
    assert "no such results file" in capsys.readouterr().err  # errors go to stderr (issue 11)


def test_readme_example_shape(tmp_path):
    # The layout documented in the README: a results.yaml with QbE as MTWV.
    text = textwrap.dedent("""\
        my-armhubert:
          PR: 7.72
          KS: 96.88
          IC: 97.07
          SID: 65.03
          ER: 62.86
          ASR: 9.96
          QbE: 0.0635
          SF_F1: 87.59
          SF_CER: 26.06
          ASV: 5.68
          SD: 7.10
        """)
    path = tmp_path / "results.yaml"
    path.write_text(text)
    (row,) = read_table(path)
    assert row.score.label() == "78.11"


@pytest.mark.parametrize("task, value, message", [
    ("SID", 500, "mine.yaml: m.SID: SID acc is a percentage in [0, 100], got 500"),
    ("KS", -1, "mine.yaml: m.KS: KS acc is a percentage in [0, 100], got -1"),
    ("QbE", 63.5, "mine.yaml: m.QbE: QbE MTWV is a fraction in [0, 1], got 63.5; if that is a percentage, write 0.635"),
    ("QbE", 250, "mine.yaml: m.QbE: QbE MTWV is a fraction in [0, 1], got 250"),
    ("ASR", -3, "mine.yaml: m.ASR: ASR WER is an error rate in percent (>= 0), got -3"),
])
def test_impossible_values_are_refused(tmp_path, task, value, message):
    """Issue 11: accuracy 500 or an MTWV given in percent used to be scored."""
    results = tmp_path / "mine.yaml"
    results.write_text(yaml.safe_dump({"m": {task: value}}))
    with pytest.raises(ValueError) as caught:
        read_table(results)
    assert str(caught.value) == message


def test_possible_edge_values_are_accepted(tmp_path):
    results = tmp_path / "mine.yaml"
    results.write_text(yaml.safe_dump({"m": {"ASR": 104.2, "QbE": 0.0, "SID": 100}}))
    assert read_table(results)[0].values == {"ASR": 104.2, "QbE": 0.0, "SID": 100.0}
