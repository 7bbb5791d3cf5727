"""The README's demo: make a short sample video, detect and track objects in it, show what came
out, draw the boxes on the video and write the HTML report.

The sample is a pan over the two images that ship with ultralytics (bus.jpg, zidane.jpg), so
nothing is downloaded. The model: $DEMO_MODEL if set, else the checkpoint in ../shared/models
when this checkout has one beside it, else yolo11n.pt (downloaded by ultralytics).
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.cli.main import main  # noqa: E402
from pipeline.media.samples import make_demo_video  # noqa: E402


def pick_model() -> str:
    if os.environ.get("DEMO_MODEL"):
        return os.environ["DEMO_MODEL"]
    shared = ROOT.parent / "shared" / "models" / "yolo11n-coco-int8dq.pt"
    return str(shared) if shared.exists() else "yolo11n.pt"


def demo(workdir: Path) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    sample = workdir / "sample.mp4"
    if not sample.exists():
        frames = make_demo_video(sample)
        print(f"made {sample} ({frames} frames, 640x480)")
    output = workdir / "output"
    code = main(
        [
            "run",
            str(sample),
            "--output",
            str(output),
            "--model",
            pick_model(),
            "--batch-size",
            "8",
            "--track",
        ]
    )
    if code == 0:
        import pipeline

        boxes = pipeline.read_detections(output)
        print("\nFirst detections (one row per box):")
        print(boxes.head(8).to_string(index=False))
        print("\nBoxes per class:")
        print(boxes["class_name"].value_counts().to_string())
        print("\nTracks (one row per object followed across frames):")
        print(pipeline.read_tracks(output).head(8).to_string(index=False))
        print()
        main(
            [
                "render",
                str(sample),
                "--results",
                str(output),
                "--output",
                str(workdir / "sample-boxes.mp4"),
                "--no-progress",
            ]
        )
        main(["report", str(output)])
    return code


if __name__ == "__main__":
    sys.exit(demo(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "demo-out"))
