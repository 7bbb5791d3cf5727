"""What a run needs to know of the stored records to decide, in about 16 bytes a video (Ray-free).

The resume decision (``Manifest.is_complete``), whether a video was ever recorded
(``has_record``), and where a packed video's rows are (``part_of``), without holding the records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipeline.output.parts import is_part
from pipeline.output.video_record import VideoRecord, complete_key
from pipeline.output.videos_table import VideosTable


@dataclass
class StoredIndex:
    """What a run needs to know of the stored records, in about 16 bytes a video: each video's id
    hashed (sorted), the key of its record when ``ok`` (``is_complete``; 0 otherwise), and where
    its rows are when packed (one of the few distinct part pairs; -1: its own files)."""

    ids: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # sorted
    keys: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    at: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    places: dict[tuple[str | None, str | None], int] = field(default_factory=dict)
    _places_list: list[tuple[str | None, str | None]] = field(default_factory=list)

    COLUMNS = [
        "status",
        "settings_hash",
        "size_bytes",
        "mtime_ns",
        "detections_file",
        "tracks_file",
    ]

    @classmethod
    def of(cls, table: VideosTable) -> StoredIndex:
        index = cls()
        pieces = []
        for chunk in table.latest(cls.COLUMNS, chunk_rows=65_536):
            rows = {name: _column(chunk, name) for name in ["video_id", *cls.COLUMNS]}
            pieces.append(index._entries(*rows.values()))
        if pieces:
            ids, keys, at = (np.concatenate(column) for column in zip(*pieces))
            order = np.argsort(ids, kind="stable")
            index.ids, index.keys, index.at = ids[order], keys[order], at[order]
        return index

    def _entries(self, ids, statuses, hashes, sizes, mtimes, detections, tracks):
        keys, at = [], []
        for video_id, status, settings, size, mtime, det, trk in zip(
            ids, statuses, hashes, sizes, mtimes, detections, tracks
        ):
            ok = status == "ok"
            keys.append(complete_key(video_id, settings, size, mtime) if ok else 0)
            if status != "failed" and is_part(det):
                place = (det, trk if is_part(trk) else None)
                at.append(self.places.setdefault(place, len(self.places)))
            else:
                at.append(-1)
        return (
            np.fromiter(map(hash, ids), np.int64, count=len(ids)),
            np.array(keys, np.int64),
            np.array(at, np.int32),
        )

    def _find(self, video_id: str) -> int:
        key = hash(video_id)
        i = int(np.searchsorted(self.ids, key))
        return i if i < len(self.ids) and int(self.ids[i]) == key else -1

    def holds(self, video_id: str) -> bool:
        return self._find(video_id) >= 0

    def complete_key(self, video_id: str) -> int:
        i = self._find(video_id)
        return int(self.keys[i]) if i >= 0 else 0

    def part_of(self, video_id: str) -> tuple[str | None, str | None]:
        i = self._find(video_id)
        if i < 0 or int(self.at[i]) < 0:
            return None, None
        return self._place_list()[int(self.at[i])]

    def _place_list(self) -> list[tuple[str | None, str | None]]:
        if len(self._places_list) != len(self.places):
            self._places_list = list(self.places)  # few: one per part file written
        return self._places_list

    def with_records(self, records: list[VideoRecord]) -> StoredIndex:
        """A new index, where these records (just stored) replace their videos' entries: built
        beside this one (a fold's thread builds it while the loop reads this one)."""
        new = StoredIndex(self.ids, self.keys, self.at, dict(self.places))
        if not records:
            return new
        ids, keys, at = new._entries(
            [r.video_id for r in records],
            [r.status for r in records],
            [r.settings_hash for r in records],
            [r.size_bytes for r in records],
            [r.mtime_ns for r in records],
            [r.detections_file for r in records],
            [r.tracks_file for r in records],
        )
        # O(N) copies and O(n log N) searches (no sort of the N stored ids): the n new entries,
        # sorted, replace their videos' old ones and are inserted where they belong
        order = np.argsort(ids, kind="stable")
        ids, keys, at = ids[order], keys[order], at[order]
        last = np.ones(len(ids), bool)  # (a video twice among them: its last record wins)
        last[:-1] = ids[1:] != ids[:-1]
        ids, keys, at = ids[last], keys[last], at[last]
        found = np.searchsorted(self.ids, ids)
        inside = found < len(self.ids)
        replaced = found[inside][self.ids[found[inside]] == ids[inside]]
        kept_ids = np.delete(self.ids, replaced)
        where = np.searchsorted(kept_ids, ids)
        new.ids = np.insert(kept_ids, where, ids)
        new.keys = np.insert(np.delete(self.keys, replaced), where, keys)
        new.at = np.insert(np.delete(self.at, replaced), where, at)
        return new


def _column(table: pa.Table, name: str) -> list:
    if name not in table.column_names:
        return [None] * table.num_rows
    return table.column(name).to_pylist()
