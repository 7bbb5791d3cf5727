"""The output's Parquet schemas: ``detections/`` (one row per processed frame) and ``tracks/``
(one row per object track, with ``--track``). They are the contract readers rely on."""

from __future__ import annotations

import pyarrow as pa

BOX_TYPE = pa.struct(
    [
        ("class_id", pa.int32()),
        ("class_name", pa.string()),
        ("confidence", pa.float32()),
        ("x1", pa.float32()),
        ("y1", pa.float32()),
        ("x2", pa.float32()),
        ("y2", pa.float32()),
    ]
)

# With --track: the same box plus its track id (null for a box no track has confirmed yet).
TRACKED_BOX_TYPE = pa.struct([*BOX_TYPE, ("track_id", pa.int32())])


def detections_schema(tracked: bool = False) -> pa.Schema:
    return pa.schema(
        [
            ("video_id", pa.string()),
            ("frame_index", pa.int64()),
            ("timestamp_s", pa.float64()),
            ("num_detections", pa.int32()),
            ("detections", pa.list_(TRACKED_BOX_TYPE if tracked else BOX_TYPE)),
        ]
    )


DETECTIONS_SCHEMA = detections_schema(tracked=False)

TRACKS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("track_id", pa.int32()),
        ("class_id", pa.int32()),
        ("class_name", pa.string()),
        ("first_frame", pa.int64()),
        ("last_frame", pa.int64()),
        ("num_frames", pa.int64()),
        ("first_timestamp_s", pa.float64()),
        ("last_timestamp_s", pa.float64()),
        ("mean_confidence", pa.float32()),
    ]
)
