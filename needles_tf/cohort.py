"""Many images or slides at once: directories and list files, shards, one CSV of results.

`--shard=i/n` (i from 0) keeps every n-th input after sorting, so n processes, hosts
or jobs of a cluster scheduler (`xargs -P`, a Slurm array) split a cohort with no
coordinator. Each writes `predictions-shard-i-of-n.csv` to the shared --out_dir; the
one that finds all n written merges them into `predictions.csv`.
"""

from __future__ import annotations

import csv
import io
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

from needles_tf.atomic import atomic_write_text

INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".svs", ".ndpi", ".scn", ".bif")
LIST_SUFFIXES = (".txt", ".list")
CSV_NAME = "predictions.csv"


def expand(arguments: Sequence[str]) -> list[pathlib.Path]:
    """Files as given; a directory's images and slides (sorted); a .txt list's lines
    (paths relative to the list's folder, blank lines and # comments skipped)."""
    paths: list[pathlib.Path] = []
    for argument in arguments:
        path = pathlib.Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in INPUT_SUFFIXES)
            if not found:
                raise FileNotFoundError(
                    f"{path}: a directory with no images or slides ({', '.join(INPUT_SUFFIXES)})."
                )
            paths += found
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            lines = (line.strip() for line in path.read_text().splitlines())
            paths += [path.parent / line for line in lines if line and not line.startswith("#")]
        else:
            paths.append(path)
    return paths


def parse_shard(shard: str) -> tuple[int, int]:
    """'i/n' -> (i, n), 0 <= i < n; '' -> (0, 1)."""
    if not shard:
        return 0, 1
    match = re.fullmatch(r"(\d+)/(\d+)", shard)
    if not match or not int(match.group(1)) < int(match.group(2)):
        raise ValueError(f"--shard={shard}: expected i/n with 0 <= i < n, e.g. 0/4.")
    return int(match.group(1)), int(match.group(2))


def take_shard(paths: list[pathlib.Path], shard: str) -> list[pathlib.Path]:
    """Every n-th path of the sorted list from the i-th; all of them, in order, for ''."""
    index, count = parse_shard(shard)
    return paths if count == 1 else sorted(paths)[index::count]


def rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per record: the image, its size, tiles, p(class) and the peak."""
    flat = []
    for record in records:
        peak = record.get("max_saliency", {})
        row = {
            "image": record["image"],
            "height": record["height"],
            "width": record["width"],
            "tiles": record["tiles"],
            **{f"p({name})": f"{p:.6f}" for name, p in record["probability"].items()},
            "peak_x": f"{peak.get('x', float('nan')):.1f}",
            "peak_y": f"{peak.get('y', float('nan')):.1f}",
        }
        flat.append(row)
    return flat


def _csv_text(table: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if table:
        writer = csv.DictWriter(buffer, fieldnames=list(table[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
    return buffer.getvalue()


def write_results(out_dir: str | os.PathLike, records: list[dict], shard: str) -> pathlib.Path:
    """This shard's CSV; and predictions.csv once every shard's is there. Returns the
    merged CSV's path if it was written, else the shard's."""
    out_dir = pathlib.Path(out_dir)
    index, count = parse_shard(shard)
    if count == 1:
        path = out_dir / CSV_NAME
        atomic_write_text(path, _csv_text(rows(records)))
        return path
    part = out_dir / f"predictions-shard-{index}-of-{count}.csv"
    atomic_write_text(part, _csv_text(rows(records)))
    parts = [out_dir / f"predictions-shard-{i}-of-{count}.csv" for i in range(count)]
    if not all(p.exists() for p in parts):
        return part
    merged: list[dict[str, str]] = []
    for p in parts:
        with p.open(newline="") as handle:
            merged += list(csv.DictReader(handle))
    merged.sort(key=lambda row: row["image"])
    atomic_write_text(out_dir / CSV_NAME, _csv_text(merged))
    return out_dir / CSV_NAME
