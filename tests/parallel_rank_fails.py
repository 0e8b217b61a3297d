"""`hyvideo` under torchrun with rank 1 failing on purpose before the DiT is shared (test_parallel_cli.py):
the other rank must not hang, and the run must end with rank 1's message."""
import os
import sys

from hyvideo_core import cli

if os.environ.get("RANK") == "1":
    import hyvideo_core.run.generate as generate

    def fail(*args, **kwargs):
        raise RuntimeError("rank 1 failed on purpose")
    generate._sample = fail

sys.exit(cli.main(sys.argv[1:]))
