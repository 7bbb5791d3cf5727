#!/usr/bin/env bash
# The same output from two checkouts (git worktrees: before and after a change), on people.mp4 and on
# 300 generated short clips (packed): detections byte for byte, videos.parquet less its timings.
#   bash docs/bench/same_output.sh BEFORE AFTER   (from the repository root; two worktrees)
set -euo pipefail
PY=${PYTHON:-$(pwd)/.venv/bin/python}
M=$(realpath ../shared/models/yolo11n-coco-int8dq.pt)
V=$(realpath ../shared/data/people.mp4)
W=$(mktemp -d -t same-output-XXXX); export W

BEFORE=${1:?usage: same_output.sh BEFORE_CHECKOUT AFTER_CHECKOUT}; AFTER=${2:?}
# 300 short clips, 3 to 42 frames, 160x96
$PY - <<'PY'
import sys; sys.path.insert(0, "tests")
from pathlib import Path
from conftest import tiny_videos
import os
clips = Path(os.environ["W"]) / "clips"
clips.mkdir()
tiny_videos(clips, [3 + (7 * i) % 40 for i in range(300)])
PY
# ROUNDS=N: before and after alternately N times (the outputs compared are the first round's);
# each command's wall time and run.json's frames/s are printed, as "timing" lines
ROUNDS=${ROUNDS:-1}
timed() {  # timed LABEL OUT command...: the command, then its wall time and frames/s
  local label=$1 out=$2; shift 2
  local t0; t0=$(date +%s.%N)
  "$@"
  $PY -c "import json, sys; r = json.load(open('$out/run.json')); print(json.dumps({'timing': '$label', 'wall_s': round($(date +%s.%N) - $t0, 2), 'frames_per_s': round(r['throughput']['frames_per_s'], 2)}))"
}
for round in $(seq 1 "$ROUNDS"); do
  for side in before after; do
    root=$BEFORE; [ $side = after ] && root=$AFTER
    suffix=""; [ "$round" -gt 1 ] && suffix="-$round"
    ( cd $root && timed "$side people round $round" $W/$side-people$suffix env PYTHONPATH=$root YOLO_OFFLINE=1 $PY -m pipeline run $V --output $W/$side-people$suffix --model $M --no-progress )
    ( cd $root && timed "$side clips round $round" $W/$side-clips$suffix env PYTHONPATH=$root YOLO_OFFLINE=1 $PY -m pipeline run $W/clips --output $W/$side-clips$suffix --model $M --imgsz 160 --no-progress )
  done
done
$PY - <<'PY'
import hashlib, os, pyarrow.parquet as pq, pandas as pd, glob, json
from pathlib import Path
W = Path(os.environ["W"])
def digest(p): return hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16]
b = sorted(glob.glob(f"{W}/before-people/detections/*.parquet")); a = sorted(glob.glob(f"{W}/after-people/detections/*.parquet"))
print("people detections files:", [Path(x).name for x in b], [Path(x).name for x in a])
print("byte-identical:", [digest(x) for x in b] == [digest(x) for x in a])
timing = {"processing_s", "decode_attempts", "seq"}  # seq: the order records were written
# a part file's name holds its worker's pid and a random suffix
names = {"detections_file"}
def vids(p):
    t = pq.read_table(p).to_pandas()
    return t[[c for c in t.columns if c not in timing | names]].sort_values("video_id").reset_index(drop=True)
vb, va = vids(W/"before-people/videos.parquet"), vids(W/"after-people/videos.parquet")
print("people videos.parquet rows equal less timings and part names:", vb.equals(va), list(vb.columns) == list(va.columns))
def rows(out):
    from pipeline.output.readers import read_detections
    d = read_detections(out, flat=False)
    d["boxes"] = [tuple(tuple(x.values()) for x in ds) for ds in d["detections"]]
    return d[["video_id", "frame_index", "timestamp_s", "num_detections", "boxes"]].sort_values(["video_id", "frame_index"]).reset_index(drop=True)
rb, ra = rows(W/"before-clips"), rows(W/"after-clips")
print("clips rows:", len(rb), len(ra), "equal:", rb.equals(ra))
cb, ca = vids(W/"before-clips/videos.parquet"), vids(W/"after-clips/videos.parquet")
drop = ["row_groups"]  # which part (and row group) holds a clip depends on timing
print("clips videos.parquet rows equal less timings and part names:", cb.drop(columns=drop).equals(ca.drop(columns=drop)))
print("clip part files before/after:", len(glob.glob(f"{W}/before-clips/detections/part-*")), len(glob.glob(f"{W}/after-clips/detections/part-*")))
PY
