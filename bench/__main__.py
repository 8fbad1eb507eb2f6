"""`make bench`: every benchmark, each reported as a ratio against its in-run baseline.

`python -m bench [module ...]` runs only the named ones (e.g. `bench.api_bench`).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BENCHMARKS = ["bench.policy_bench", "bench.crypto_bench", "bench.audit_bench", "bench.api_bench"]


def main() -> None:
    results = {}
    for name in sys.argv[1:] or BENCHMARKS:
        print(f"== {name}", flush=True)
        results[name] = importlib.import_module(name).main()
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
