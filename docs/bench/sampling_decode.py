"""What sampling costs to decode: ``--fps``, ``--keyframes`` and ``--stride`` against decoding every
packet, per codec, on 1080p clips made from people.mp4.

    python docs/bench/sampling_decode.py --people ../shared/data/people.mp4 [--repeats 3] [--concat 6]

Each clip is people.mp4 (302 frames, 30 fps, 1920x1080) re-encoded, then repeated ``--concat``
times by the bench (remuxed: a minute of video, so that opening a file weighs little):

- ``h264-bframes-gop2s``: x264's defaults (3 B-frames, B-pyramid) with a keyframe every 2 s;
- ``h264-bframes``: x264's defaults (a keyframe every 250 frames: one in this clip);
- ``h264-no-bframes``: the source itself (H.264 Main, no B-frames);
- ``hevc-gop2s``, ``mpeg4-gop2s``: other codecs, a keyframe every 2 s.

For each clip and sampling, ``python -m pipeline bench --contenders decode,decode-every-packet``
(the decode ceiling: decode, convert and letterbox the kept frames, as a decoder task does; the
second decodes every packet whatever the sampling, as before the decoder skipped work). Then the
decoding alone, without the kept frames' conversion and letterbox (the same in both): the packets
a ``DecodePlan`` names against every packet (median of ``--repeats``). Prints one JSON document:
per clip and sampling, the kept frames, milliseconds per second of video and per kept frame for
both ways, and their ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av

from pipeline.media.samples import concat_copies

CLIPS = {
    "h264-bframes-gop2s": ("libx264", {"g": "60", "keyint_min": "60", "sc_threshold": "0"}),
    "h264-bframes": ("libx264", {}),
    "hevc-gop2s": (
        "libx265",
        {"preset": "fast", "x265-params": "keyint=60:min-keyint=60:scenecut=0:log-level=0"},
    ),
    "mpeg4-gop2s": ("mpeg4", {"g": "60", "qscale": "3", "bf": "2"}),
}
SAMPLINGS = {"fps 1": ["--fps", "1"], "keyframes": ["--keyframes"], "stride 5": ["--stride", "5"]}


def encode(source: str, dest: Path, codec: str, options: dict) -> None:
    with av.open(source) as src, av.open(str(dest), "w") as out:
        stream = out.add_stream(codec, rate=30, options=options)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        for n, frame in enumerate(src.decode(video=0)):
            frame = frame.reformat(format="yuv420p")
            frame.pict_type = 0  # let the encoder choose each frame's type (B-frames)
            frame.pts, frame.time_base = n, Fraction(1, 30)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def bench(video: Path, sampling: list[str], repeats: int, concat: int, work: Path) -> dict:
    result = work / "bench.json"
    subprocess.run(
        [sys.executable, "-m", "pipeline", "bench", "--video", str(video), "--model", "unused.pt"]
        + ["--contenders", "decode,decode-every-packet", "--repeats", str(repeats)]
        + ["--concat", str(concat)]
        + ["--json", str(result), *sampling],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return json.loads(result.read_text())["summary"]


def decode_alone(video: Path, sampling: list[str], repeats: int) -> dict:
    """Decoding only (no conversion): the plan's packets against every packet, in seconds."""
    import statistics
    import time

    from pipeline.media.sampling import DecodePlan, Sampling
    from pipeline.media.segments import probe_frame_times

    fps = float(sampling[1]) if sampling[0] == "--fps" else None
    stride = int(sampling[1]) if sampling[0] == "--stride" else 1
    chosen = Sampling(stride=stride, fps=fps, keyframes=sampling[0] == "--keyframes")

    def decode(plan_it: bool) -> tuple[float, int]:
        started = time.perf_counter()
        wanted = None
        if plan_it:  # the probe is part of the cost
            plan = DecodePlan.of(probe_frame_times(str(video), references=True), chosen)
            wanted = plan.decode_pts
        decoded = 0
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if plan_it and chosen.keyframes:
                stream.codec_context.skip_frame = "NONKEY"
            for packet in container.demux(stream):
                if wanted is not None and packet.size and packet.pts not in wanted:
                    continue
                decoded += len(packet.decode())
        return time.perf_counter() - started, decoded

    runs = [(decode(True), decode(False)) for _ in range(repeats)]
    return {
        "sampled_s": statistics.median(r[0][0] for r in runs),
        "every_packet_s": statistics.median(r[1][0] for r in runs),
        "frames_decoded": runs[0][0][1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concat", type=int, default=6)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sampling-bench-"))
    clips = {"h264-no-bframes": Path(args.people)}
    for name, (codec, options) in CLIPS.items():
        clips[name] = work / f"{name}.mp4"
        encode(args.people, clips[name], codec, options)
    seconds_of_video = args.concat * 302 / 30
    report: dict = {}
    for name, clip in clips.items():
        with av.open(str(clip)) as container:
            packets = [p for p in container.demux(video=0) if p.size]
            keyframes = sum(p.is_keyframe for p in packets)
        report[name] = {"frames": args.concat * len(packets), "keyframes": args.concat * keyframes}
        for label, sampling in SAMPLINGS.items():
            summary = bench(clip, sampling, args.repeats, args.concat, work)
            skip, full = summary["decode"], summary["decode-every-packet"]
            kept = skip["frames"]
            skip_s, full_s = kept / skip["median_fps"], kept / full["median_fps"]
            report[name][label] = {
                "kept_frames": kept,
                "ms_per_video_second": round(1000 * skip_s / seconds_of_video, 2),
                "ms_per_video_second_every_packet": round(1000 * full_s / seconds_of_video, 2),
                "ms_per_kept_frame": round(1000 * skip_s / kept, 2),
                "ms_per_kept_frame_every_packet": round(1000 * full_s / kept, 2),
                "ratio": round(skip_s / full_s, 3),
            }
            concat = work / f"{name}-x{args.concat}.mp4"
            if not concat.exists():
                concat_copies(clip, concat, args.concat)
            alone = decode_alone(concat, sampling, args.repeats)
            report[name][label]["decode_alone"] = {
                "frames_decoded": alone["frames_decoded"],
                "ms_per_kept_frame": round(1000 * alone["sampled_s"] / kept, 2),
                "ms_per_kept_frame_every_packet": round(1000 * alone["every_packet_s"] / kept, 2),
                "ratio": round(alone["sampled_s"] / alone["every_packet_s"], 3),
            }
            print(name, label, report[name][label], file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
