"""Bad input, round 3: data files users bring that were read wrongly or failed with a traceback (a file that is not
parquet, a CSV quote that never closes, a duplicated header, files without rows, validation rows that are all
dropped, a mapping to a column the file lacks, a tab-separated .txt, rows under split keys, a folder of mixed
formats): exit 2, one line naming the file / line / field, nothing written. Also what is said instead of silently
reading less: another split's file in a data folder, documents cut to data.cutoff_len."""

from __future__ import annotations

import re

import pytest
from test_bad_input_round2 import RUN, SWEEP, assert_one_line_exit_2, project  # noqa: F401 -- the fixture, shared

AUTO = [*RUN, "data=custom_json"]
ROWS = "".join(f'{{"instruction": "q{i}", "input": "", "output": "a{i}"}}\n' for i in range(12))

CASES = [
    ("data_not_parquet", [*AUTO, "data.path=rows.parquet"], ["rows.parquet: not a parquet file, or a truncated one"]),
    ("data_not_parquet_alpaca", [*RUN, "data.path=rows.parquet", "data.format=alpaca"], ["rows.parquet: not a parquet"]),
    ("data_csv_quote_never_closes", [*RUN, "data.path=quote.csv"],
     ["quote.csv line 4", "a quoted value opens on this line and never closes"]),
    ("data_csv_header_twice", [*RUN, "data.path=twice.csv"], ["twice.csv line 1", "'output' more than once"]),
    ("data_json_without_rows", [*AUTO, "data.path=none.json"], ["none.json: the file has no rows"]),
    ("data_csv_header_only", [*RUN, "data.path=header.csv"], ["header.csv: the file has no rows"]),
    ("data_validation_without_rows", [*RUN, "data.path=rows.jsonl", "data.validation_path=none.json"],
     ["none.json: the file has no rows"]),
    ("data_val_size_with_validation_file", [*RUN, "data.path=rows.jsonl", "data.validation_path=rows.jsonl",
                                            "data.val_size=0.2"],
     ["data.val_size: not used with data.validation_path=rows.jsonl", "give one of them"]),
    ("data_validation_all_dropped", [*RUN, "data.path=rows.jsonl", "data.validation_path=long.jsonl",
                                     "data.cutoff_len=64", "data.overlong=drop"],
     ["long.jsonl: no validation rows left: all 1 were dropped", "data.overlong=drop"]),
    ("data_mapped_column_missing", [*RUN, "data.path=qa.jsonl", "data.columns.instruction=questoin",
                                    "data.columns.output=answer"],
     ["qa.jsonl line 1", "column 'questoin'", "missing"]),
    ("data_txt_of_tab_columns", [*AUTO, "data.path=tabs.txt"], ["tabs.txt line 1", "data.loader=tsv"]),
    ("data_rows_under_split_keys", [*AUTO, "data.path=splits.json"],
     ["splits.json", "the rows may be under 'train' (or 'test'): +data.extra.field=train"]),
    ("tilde_path_unquoted", [*RUN, "data.path=~/rows.jsonl"],
     ["data.path: cannot parse '~/rows.jsonl'", "quote it, \"data.path='~/rows.jsonl'\""]),
    ("data_gzip_under_a_plain_name", [*RUN, "data.path=packed.jsonl"],
     ["packed.jsonl: the file is gzip-compressed but its name does not say so: name it packed.jsonl.gz"]),
    ("sweep_into_a_single_runs_folder", [*SWEEP, "hydra.sweep.dir=single"],
     ["hydra.sweep.dir:", "single holds a single run (its metrics and adapter); give the sweep a folder of its own"]),
    ("data_folder_of_two_formats", [*AUTO, "data.path=mixed"], ["mixed: the folder holds data files of several formats",
                                                               "csv: b.csv; json: a.jsonl"]),
]

FILES = {
    "rows.parquet": '{"instruction": "q", "output": "a"}\n',
    "quote.csv": "instruction,input,output\nq0,,a0\nq1,,a1\nq2,,\"a2 never closed\nq3,,a3\nq4,,a4\n",
    "twice.csv": "instruction,input,output,output\nq0,,first,second\n",
    "none.json": "[]",
    "header.csv": "instruction,input,output\n",
    "rows.jsonl": ROWS,
    "long.jsonl": '{"instruction": "' + "word " * 200 + '", "input": "", "output": "a"}\n',
    "qa.jsonl": "".join(f'{{"instruction": "Solve.", "question": "{i}+1?", "answer": "{i + 1}"}}\n' for i in range(12)),
    "tabs.txt": "instruction\tinput\toutput\n" + "".join(f"q{i}\t\ta{i}\n" for i in range(12)),
    "splits.json": '{"train": [' + ", ".join(['{"instruction": "q", "output": "a"}'] * 4) + '], "test": [' +
                   ", ".join(['{"instruction": "q", "output": "a"}'] * 4) + "]}",
    "mixed/a.jsonl": ROWS,
    "packed.jsonl": None,
    "single/metrics.json": '{"status": "complete"}',
    "single/adapter/adapter_config.json": "{}",  # gzip bytes (written by the fixture)
    "mixed/b.csv": "instruction,input,output\nq,,a\n",
}


@pytest.fixture
def files(project):  # noqa: F811 -- the shared fixture, extended
    import gzip

    for name, text in FILES.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            (project / name).write_bytes(gzip.compress(ROWS.encode()))
        else:
            (project / name).write_text(text, encoding="utf-8")
    return project


@pytest.mark.parametrize(("argv", "texts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_data_is_one_line_exit_2_nothing_written(files, capsys, argv, texts):
    assert_one_line_exit_2(files, capsys, argv, texts, said=("ftsweep: data",))


def test_a_multi_line_csv_row_is_named_by_the_line_it_starts_on(compose, tmp_path):
    from ftsweep.data import DataError, build_datasets
    from ftsweep.model import load_tokenizer

    path = tmp_path / "m.csv"
    path.write_text('instruction,input,output\nq0,,"two\nlines"\nq1,,"x ""quoted"" y"\nq2,,a2,extra\n')
    cfg = compose(f"data.path={path}", "data.val_size=0", "objective.metric=train_loss")
    with pytest.raises(DataError, match=r"m\.csv line 5: 4 cells for 3 columns"):
        build_datasets(cfg, load_tokenizer(cfg))


def test_a_data_folder_names_the_split_files_it_does_not_train_on(compose, tmp_path, capfd):
    from ftsweep.data import build_datasets
    from ftsweep.model import load_tokenizer

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.jsonl").write_text(ROWS)
    (tmp_path / "d" / "validation.jsonl").write_text("".join(ROWS.splitlines(keepends=True)[:3]))
    cfg = compose(f"data.path={tmp_path / 'd'}", "data.val_size=0", "objective.metric=train_loss",
                  "data.format=alpaca")
    bundle = build_datasets(cfg, load_tokenizer(cfg))
    assert bundle.stats["n_train"] == 12
    assert (f"data: {tmp_path / 'd'}: validation.jsonl is another split than data.split=train, not trained on; to "
            f"validate on it: data.validation_path={tmp_path / 'd' / 'validation.jsonl'}") in capfd.readouterr().err


def test_a_data_folder_reads_its_files_as_data_path_does_and_names_a_bad_row_by_file_and_line(compose, tmp_path):
    from ftsweep.data import DataError, build_datasets
    from ftsweep.data.sources import Source, read_records
    from ftsweep.model import load_tokenizer

    shards = tmp_path / "d" / "data"
    shards.mkdir(parents=True)
    lines = ROWS.splitlines(keepends=True)
    (shards / "train-00000-of-00002.jsonl").write_text("".join(lines[:6]))
    (shards / "train-00001-of-00002.jsonl").write_text("".join(lines[6:]))
    (shards / "test-00000-of-00001.jsonl").write_text(lines[0])
    cfg = compose(f"data.path={tmp_path / 'd'}", "data.val_size=0", "objective.metric=train_loss", "data.format=alpaca")
    rows = [r.row["instruction"] for r in read_records(Source(str(tmp_path / "d"), "hub", None), cfg.data)]
    assert rows == [f"q{i}" for i in range(12)]  # datasets' split and file order: the train shards, not the test one
    (shards / "train-00001-of-00002.jsonl").write_text("".join(lines[6:9]) + '{"instruction": "q9", \n')
    with pytest.raises(DataError, match=r"train-00001-of-00002\.jsonl line 4: "):  # was: "<folder> row 10"
        build_datasets(cfg, load_tokenizer(cfg))


def test_documents_cut_to_the_cutoff_say_how_much_is_not_trained(compose, tmp_path, capfd):
    from ftsweep.data import build_datasets
    from ftsweep.model import load_tokenizer

    path = tmp_path / "docs.jsonl"
    path.write_text("".join('{"text": "' + " ".join(f"w{i}" for i in range(300)) + '"}\n' for _ in range(4)))
    cfg = compose(f"data.path={path}", "data.format=text", "data.cutoff_len=64", "data.val_size=0",
                  "objective.metric=train_loss")
    stats = build_datasets(cfg, load_tokenizer(cfg)).stats
    err = capfd.readouterr().err
    share = stats["n_answer_tokens_cut"] / (stats["n_answer_tokens_cut"] + stats["n_trained_tokens"])
    assert share > 0.8
    assert (f"data: warning: truncation to data.cutoff_len=64 cut {stats['n_answer_tokens_cut']:,} of the answer "
            f"tokens ({share:.0%}) from 4 rows: they are not trained; data.packing=true cuts the documents") in err
    packed = compose(f"data.path={path}", "data.format=text", "data.cutoff_len=64", "data.val_size=0",
                     "objective.metric=train_loss", "data.packing=true")
    capfd.readouterr()
    assert build_datasets(packed, load_tokenizer(packed)).stats["n_answer_tokens_cut"] == 0
    assert "truncation" not in capfd.readouterr().err


@pytest.mark.parametrize("other", ["LICENSE", "notes.md", "sizes.yaml"])
def test_a_data_folder_reads_its_shards_beside_files_that_are_not_data(compose, tmp_path, other):
    # before: a shard folder with a LICENSE or notes.md beside the shards (datasets reads only the shards) was refused:
    # "<folder>/LICENSE: cannot tell the format from the extension ''; set data.loader"
    from ftsweep.data import build_datasets
    from ftsweep.model import load_tokenizer

    lines = ROWS.splitlines(keepends=True)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "part-00.jsonl").write_text("".join(lines[:6]))
    (tmp_path / "d" / "part-01.jsonl").write_text("".join(lines[6:]))
    (tmp_path / "d" / other).write_text("not rows\n")
    cfg = compose(f"data.path={tmp_path / 'd'}", "data.val_size=0", "objective.metric=train_loss",
                  "data.format=alpaca", "data.shuffle=false")
    assert build_datasets(cfg, load_tokenizer(cfg)).stats["n_train"] == 12


def test_an_empty_shard_in_a_data_folder_has_no_rows_and_an_all_empty_folder_is_one_line(compose, tmp_path):
    # before: one empty shard (a sharding script's last part) refused the whole folder: "<folder>/part-02.jsonl: the
    # file is empty (no rows)", although datasets reads the folder's rows
    from ftsweep.data import DataError, build_datasets
    from ftsweep.model import load_tokenizer

    lines = ROWS.splitlines(keepends=True)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "part-00.jsonl").write_text("".join(lines[:6]))
    (tmp_path / "d" / "part-01.jsonl").write_text("".join(lines[6:]))
    (tmp_path / "d" / "part-02.jsonl").write_text("\n")
    cfg = compose(f"data.path={tmp_path / 'd'}", "data.val_size=0", "objective.metric=train_loss",
                  "data.format=alpaca", "data.shuffle=false")
    assert build_datasets(cfg, load_tokenizer(cfg)).stats["n_train"] == 12
    for name in ("part-00.jsonl", "part-01.jsonl"):
        (tmp_path / "d" / name).write_text("")
    with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path / 'd'))}: every data file of the folder is empty \(no rows\): "
                                        r"part-00\.jsonl, part-01\.jsonl, part-02\.jsonl$"):
        build_datasets(cfg, load_tokenizer(cfg))


@pytest.mark.parametrize("files", [[], ["notes.md"], ["LICENSE", "sizes.yaml"]])
def test_a_data_folder_without_data_files_is_one_line_that_says_what_it_holds(compose, tmp_path, files):
    # before: datasets' own error, "cannot load the local folder as a dataset (DataFilesNotFoundError: No task.toml or
    # instruction.md files found)" for a folder of notes.md
    from ftsweep.data import DataError, build_datasets
    from ftsweep.model import load_tokenizer

    (tmp_path / "d").mkdir()
    for name in files:
        (tmp_path / "d" / name).write_text("x\n")
    cfg = compose(f"data.path={tmp_path / 'd'}", "data.val_size=0", "objective.metric=train_loss", "data.format=alpaca")
    holds = f"it holds {', '.join(files)}" if files else "it is empty"
    with pytest.raises(DataError, match=r": the folder holds no data file \(\.json, \.jsonl, \.csv, \.tsv, \.parquet, "
                                        rf"\.arrow or \.txt, or one written by save_to_disk; {holds}\)$"):
        build_datasets(cfg, load_tokenizer(cfg))
