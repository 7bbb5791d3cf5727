#!/usr/bin/env bash
# The service's load test (docs/BENCHMARKS.md, "Service"): a local Ray head, the service with
# dynamic batches of up to 16 and then of 1, the bounded load generator against each.
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${PIPELINE_SHARED:-../shared}
W=${WORK:-/tmp/service-load}
export RAY_AUTH_MODE=token YOLO_OFFLINE=1
PY=.venv/bin/python
rm -rf "$W" && mkdir -p "$W/videos" "$W/out"
cp "$SHARED/data/people.mp4" "$W/videos/"
$PY -c "import cv2, sys; ok, f = cv2.VideoCapture(sys.argv[1]).read(); cv2.imwrite(sys.argv[2], f)" \
    "$W/videos/people.mp4" "$W/frame.jpg"   # a 1920x1080 JPEG
.venv/bin/ray stop --force >/dev/null 2>&1 || true
.venv/bin/ray start --head --metrics-export-port 8080 --disable-usage-stats >/dev/null 2>&1
$PY -c 'import secrets; print(secrets.token_urlsafe(32))' > "$W/token"
lscpu | grep "Model name"
for MB in 16 1; do
  setsid $PY -m pipeline serve --token-file "$W/token" --input-root "$W/videos" --output-root "$W/out" \
      --model "$SHARED/models/yolo11n-coco-int8dq.pt" --max-batch $MB > "$W/serve-$MB.log" 2>&1 &
  SERVE=$!
  for i in $(seq 120); do curl -sf localhost:8000/health >/dev/null && break; sleep 1; done
  if [ $MB = 16 ]; then
    $PY -m pipeline.bench.loadtest --token-file "$W/token" --image "$W/frame.jpg" --concurrency 1,8,32 \
        --duration 60 --warmup 10 --job-input "$W/videos" --job-output "$W/out/job" --json "$W/batch16.json" || true
  else
    $PY -m pipeline.bench.loadtest --token-file "$W/token" --image "$W/frame.jpg" --concurrency 32 --warmup 10 \
        --duration 60 --json "$W/batch1.json" || true
  fi
  kill -INT $SERVE; wait $SERVE || true
  sleep 3
done
.venv/bin/ray stop >/dev/null 2>&1
