"""Cohorts: directories and list files as inputs, shards that partition them, one CSV."""

from __future__ import annotations

import csv
import pathlib

import pytest

from needles_tf import cohort


def record(name: str, p: float) -> dict:
    return {"image": name, "height": 64, "width": 64, "tiles": 1,
            "probability": {"present": p}, "max_saliency": {"x": 4.5, "y": 8.5}}  # fmt: skip


def test_directories_and_lists_expand_to_their_files(tmp_path):
    folder = tmp_path / "cohort"
    folder.mkdir()
    for name in ("b.svs", "a.png", "notes.md"):
        (folder / name).write_bytes(b"")
    (tmp_path / "list.txt").write_text("# slides\ncohort/b.svs\n\n/abs/c.tif\n")
    assert cohort.expand([str(folder), str(tmp_path / "list.txt"), "d.jpg"]) == [
        folder / "a.png", folder / "b.svs", folder / "b.svs", pathlib.Path("/abs/c.tif"),
        pathlib.Path("d.jpg"),
    ]  # fmt: skip
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: a directory with no images or slides"):
        cohort.expand([str(tmp_path / "empty")])


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_partition_the_inputs(count):
    paths = [pathlib.Path(f"s{i:02d}.svs") for i in range(10)]
    shards = [cohort.take_shard(paths[::-1], f"{i}/{count}") for i in range(count)]
    assert sorted(p for shard in shards for p in shard) == paths
    assert sum(len(shard) for shard in shards) == len(paths)


@pytest.mark.parametrize("shard", ["1/1", "2", "a/b", "-1/2", "3/2"])
def test_bad_shards_are_named(shard):
    with pytest.raises(ValueError, match=rf"--shard={shard}: expected i/n with 0 <= i < n"):
        cohort.parse_shard(shard)


def test_the_last_shard_to_finish_merges_the_csv(tmp_path):
    first = cohort.write_results(tmp_path, [record("b.svs", 0.9)], "1/2")
    assert first.name == "predictions-shard-1-of-2.csv"
    assert not (tmp_path / "predictions.csv").exists()
    merged = cohort.write_results(tmp_path, [record("a.png", 0.1), record("c.png", 0.2)], "0/2")
    assert merged == tmp_path / "predictions.csv"
    with merged.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["image"] for row in rows] == ["a.png", "b.svs", "c.png"]
    assert rows[1]["p(present)"] == "0.900000" and rows[1]["peak_x"] == "4.5"
