"""Everything decided before Ray starts: the inputs, the model and its classes, the output, and
which videos still need work.

Every user mistake is found here, in a second or two, and reported as one line: nothing has been
started and nothing is left in the output. A rerun whose videos are all complete ends here too,
without starting Ray or loading a model, and keeps the record of the run that did the work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.errors import UsageError
from pipeline.inference.engines import resolve as resolve_engine
from pipeline.inference.model_ref import (
    ModelLoadError,
    check_model_available,
    model_fingerprint,
    read_class_names,
    resolve_classes,
)
from pipeline.locations import redact
from pipeline.output.manifest import Manifest, VideoRecord, compact
from pipeline.output.run_record import RunRecord
from pipeline.output.store import OutputStore
from pipeline.output.videos_table import VideosTable
from pipeline.plan.inputs import InputError, InputWalk
from pipeline.plan.lease import Lease
from pipeline.plan.resume import ToProcess, needing_work

# Videos needing work that planning walks before deciding anything: enough to know whether a
# small backlog needs Ray at all, and to see the first videos' shape; the rest is walked as the
# run goes (a list of a million names is never held whole).
HEAD_VIDEOS = 1000


@dataclass
class RunPlan:
    output: str  # as the user gave it (a path or a URI)
    store: OutputStore  # files are written in store.layout.root (a URI's staging folder), published
    # the model as an absolute path with its fingerprint, classes as ids when known
    config: RunConfig
    walk: InputWalk  # every input video, in order (walked lazily; ``walk.count`` so far)
    # the first videos to process (unreadable ones included: they get a 'failed' record), each
    # with its latest record from before this run
    todo: list[ToProcess]
    # the videos to process after ``todo``, walked lazily; None: none
    more: Iterator[ToProcess] | None
    skipped: int  # complete with the same content and settings (so far, while ``more`` is walked)
    class_names: dict[int, str] | None  # None when only loading the model can tell
    warnings: list[str] = field(default_factory=list)
    # folders this run created (removed if it stops on a mistake)
    created: list[Path] = field(default_factory=list)
    lease: Lease | None = None  # held from planning to release(): one run per output folder
    started: float = field(default_factory=time.time)

    @property
    def local_output(self) -> Path:
        """Where the run's files are written: the output itself, or a URI's staging folder."""
        return self.store.layout.root

    @property
    def needs_workers(self) -> bool:
        """Whether any video needs decoding and inference (else Ray is not started at all). A
        backlog longer than planning's look-ahead is assumed to."""
        return self.more is not None or any(t.source.error is None for t in self.todo)

    def videos_to_process(self) -> Iterator[ToProcess]:
        """``todo``, then the rest of the walk (which is walked once)."""
        more, self.more = self.more, None
        return chain(self.todo, more or ())

    def release(self) -> None:
        """The run is over: other runs may use the output folder."""
        if self.lease is not None:
            self.lease.release()

    def remove_created_output(self) -> None:
        """After a usage error found once Ray started: release the folder and leave no empty
        folders behind."""
        self.release()
        _remove_if_empty(self.created)


def _created_folders(path: Path) -> list[Path]:
    """``path`` and its missing parents, outermost first: what ``mkdir(parents=True)`` will create."""
    missing = []
    while not path.exists() and path.parent != path:
        missing.append(path)
        path = path.parent
    return missing[::-1]


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()  # only if still empty: nothing written is ever removed
        except OSError:
            pass


def prepare_output(output: str) -> tuple[OutputStore, list[Path], Lease]:
    """The output's store (a local folder, or object storage staged through one), the folders
    this call created, and the lease that keeps other runs out of the folder.

    Nothing in the folder is touched before the lease is held: a second run on an output in use
    stops here (``OutputInUse``) and leaves the first one's files alone."""
    try:
        store = OutputStore.for_output(output)
    except (OSError, ValueError) as exc:  # object storage that refused the write test
        raise UsageError(f"output {redact(output)} is not writable: {redact(str(exc))}") from exc
    # Folders of a local output that this run creates (its staging folder is the run's own).
    created = [] if store.is_remote else _created_folders(store.layout.detections_folder)
    try:
        store.layout.detections_folder.mkdir(parents=True, exist_ok=True)
        # creating the lease file also proves the folder writable
        lease = Lease(store.layout.root).acquire()
    except OSError as exc:
        _remove_if_empty(created)
        raise UsageError(
            f"output directory {redact(output)} is not writable: {exc.strerror or exc} "
            "(choose another --output)"
        ) from exc
    try:
        store.pull_videos()  # an output on object storage resumes from what it has
    except BaseException:
        lease.release()
        raise
    return store, created, lease


def prepare_model(config: RunConfig) -> tuple[RunConfig, dict[int, str] | None]:
    """The model as an absolute path with its fingerprint, and ``--classes`` as ids checked
    against the model's classes when they can be read without loading it."""
    try:
        check_model_available(config.model)
        names = read_class_names(config.model)
    except ModelLoadError as exc:
        raise UsageError(str(exc)) from None
    model = str(Path(config.model).absolute()) if Path(config.model).exists() else config.model
    config = config.replace(model=model, model_fingerprint=model_fingerprint(model))
    if names is not None:
        config = config.replace(classes=resolve_classes(config.classes, names))
    return config, names


def local_device() -> str:
    """What ``--device auto`` becomes on a Ray started on this machine: cuda when NVML sees a GPU
    that ``CUDA_VISIBLE_DEVICES`` leaves visible. (The driver confirms it from Ray's resources;
    the coordinator records what the actors really used.)"""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return "cpu"
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return "cuda" if pynvml.nvmlDeviceGetCount() > 0 else "cpu"
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library: no GPU
        return "cpu"


def sampling_warnings(config: RunConfig) -> list[str]:
    """What a user should know before a tracked run at a low frame rate: ByteTrack matches boxes
    between consecutive kept frames, and objects move far in half a second."""
    if not config.track:
        return []
    if config.fps is not None and config.fps < 2:
        return [
            f"tracking at {config.fps:g} frames a second: objects move far between kept frames, "
            "so tracks break and ids change more often than at full rate (2 or more is advised)"
        ]
    if config.keyframes:
        return [
            "tracking keyframes only: they are usually seconds apart, so tracks break and ids "
            "change more often than at full rate"
        ]
    return []


def plan_run(
    inputs: list[str], output: str, config: RunConfig, *, local_cluster: bool = True
) -> RunPlan:
    """Check the inputs, the model and the output, in that order, and decide what needs work.

    Raises ``UsageError`` (or ``InputError``, ``ConfigError``) with one line; the output folder
    is created only once everything else is known to be right. The returned plan holds the
    output's lease: call ``plan.release()`` when the run is over.
    """
    walk = InputWalk(inputs)  # a named file that does not exist: InputError now
    videos = iter(walk)
    first = next(videos, None)
    if first is None:
        raise InputError("no video files found in the inputs: " + " ".join(walk.inputs))
    config, names = prepare_model(config)
    device = config.resolved_device or (config.device if config.device != "auto" else None)
    if device is None and local_cluster:
        device = local_device()
    if device:  # the settings hash, and so which videos are complete, depends on both
        config = resolve_engine(config, device)
    store, created, lease = prepare_output(output)
    warnings = [*walk.warnings, *sampling_warnings(config)]
    plan = RunPlan(output, store, config, walk, [], None, 0, names, warnings, created, lease)
    try:
        # what a killed run left: its records, and no files without one
        fold_manifest_log(store)
        # Without class ids the settings hash is unknown (only the loaded model can tell): the
        # coordinator decides then, from each video's previous record.
        settings_hash = config.settings_hash() if config.classes_resolved else None

        def skipped() -> None:
            plan.skipped += 1

        table = VideosTable(store.layout.manifest)
        repeats = None
        if table.parts():  # a sorted walk: repeats side by side, no set of every id needed
            walk.repeats_dropped_later()
            repeats = walk.repeat_dropped
        needing = needing_work(chain([first], videos), table, settings_hash, skipped, None, repeats)
        plan.todo = list(islice(needing, HEAD_VIDEOS))
        plan.more = needing if len(plan.todo) == HEAD_VIDEOS else None
    except BaseException:
        plan.release()
        raise
    return plan


def first_letterbox_shapes(
    todo: list, config: RunConfig, *, tries: int = 3
) -> tuple[tuple[int, int], ...]:
    """The model input shape of the first readable video of ``todo``, for engines exported per
    shape: the actors build (or find) it while they start, so the first batch does not wait for
    an export. Empty when the engine takes any shape, or no video opens within ``tries``."""
    from pipeline.config import engine_for_model, engine_traits

    if (
        engine_traits(config.effective_engine).export_format is None
        or engine_for_model(config.model) != "torch"
    ):
        return ()
    from pipeline.media.decode import DecodeError, VideoDecoder
    from pipeline.media.letterbox import LetterboxGeometry

    for source in [s for s in todo if not s.error][:tries]:
        try:
            decoder = VideoDecoder(source.path)
        except DecodeError:
            continue
        decoder.close()
        geometry = LetterboxGeometry.for_source(
            decoder.info.height, decoder.info.width, config.imgsz, stride=32
        )
        return (geometry.out_shape,)
    return ()


def fold_manifest_log(store: OutputStore) -> bool:
    """Fold the log a run left into videos.parquet (publishing it), first removing the rows of
    any video whose commit that run began but never recorded (its files, or its rows in a part).
    True when there was a log."""
    if not compact(store.layout.root, store.remove_rows):
        return False
    store.publish_videos()
    return True


def finish_without_workers(plan: RunPlan) -> dict:
    """A run with nothing to decode: every video is complete, or unreadable. The unreadable ones
    are recorded as failed; Ray is not started and ``run.json`` keeps the last run that worked."""
    store = plan.store
    manifest = Manifest(store.layout.root)
    manifest.class_names = plan.class_names or manifest.class_names
    settings_hash = plan.config.settings_hash()
    for todo in plan.todo:
        source = todo.source
        manifest.update(VideoRecord.failed(source, source.error or "unreadable", settings_hash))
    if plan.todo:
        manifest.save()
        store.publish_videos()
    for todo in plan.todo:  # rows of an earlier, readable version must not outlive its record
        part = todo.previous.detections_part if todo.previous else None
        store.remove_rows(todo.source.video_id, {None, part})
    totals = {
        "videos": plan.walk.count,
        "videos_ok": 0,
        "videos_partial": 0,
        "videos_failed": len(plan.todo),
        "videos_skipped": plan.skipped,
        "frames": 0,
        "detections": 0,
    }
    record = RunRecord(plan.started, plan.config.to_dict(), settings_hash, totals, did_work=False)
    return record.save(store)[0]
