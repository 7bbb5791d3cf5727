"""What a merge's Parquet footers cost: the peak RSS of one merge of 8 parts of 65,536 records,
the parts (and the merged part) written in row groups of ``--row-group`` rows. At 256 rows a
group, 2,048 row groups go in and 2,048 come out, as in the merge of 8 parts of 8.4 million
records into one of 67 million (32,768 rows a group) that a run of 100 million makes; at 32,768,
16 and 16.

    python docs/bench/merge_footers.py --row-group 32768
    python docs/bench/merge_footers.py --row-group 256
"""

from __future__ import annotations

import os

os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")  # as the coordinator's process has

import argparse
import gc
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
from bookkeeping import record_of

from pipeline.output.bookkeeping import return_freed_memory, trim_heap
from pipeline.output.manifest import Manifest
from pipeline.output.unfolded import as_table
from pipeline.output.videos_table import VideosTable

PARTS = 8


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--row-group", type=int, default=VideosTable.ROW_GROUP)
    parser.add_argument("--records", type=int, default=65_536, help="per part")
    args = parser.parse_args()
    per = args.records
    return_freed_memory()  # as the coordinator's process does
    VideosTable.ROW_GROUP = args.row_group
    with tempfile.TemporaryDirectory(prefix="merge-footers-") as folder:
        manifest = Manifest(Path(folder))
        manifest.class_names = {0: "person"}
        schema, table = manifest.schema(), manifest.table
        for p in range(PARTS):
            records = [record_of(p * per + i) for i in range(per)]
            seqs = list(range(p * per + 1, (p + 1) * per + 1))
            table.write_part(as_table(records, seqs, schema), seqs[0], seqs[-1], schema)
            del records
        gc.collect()
        trim_heap()
        parts = table.parts()
        groups_in = sum(pq.ParquetFile(p.path).metadata.num_row_groups for p in parts)
        before = peak = rss_mib()
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_mib())
                time.sleep(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        merged = table.merge(parts, schema)
        done.set()
        sampler.join()
        groups_out = pq.ParquetFile(merged.path).metadata.num_row_groups
    print(
        f"row groups of {args.row_group}: {groups_in} in, {groups_out} out; RSS before the merge "
        f"{before:.1f} MiB, peak during it {peak:.1f} MiB (+{peak - before:.1f})"
    )


if __name__ == "__main__":
    main()
