import os
import sys

# Arrow's allocations from the system's allocator in this process and in a Ray it starts (which
# inherits the environment): mimalloc, Arrow's default, keeps the pages a long run's bookkeeping
# frees (the coordinator's peak, docs/BENCHMARKS.md). Read once, when pyarrow is first imported.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

from pipeline.cli.main import main  # noqa: E402

sys.exit(main())
