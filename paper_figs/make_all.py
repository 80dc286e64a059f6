"""Rebuild every figure: run each ``paper_figs/fig_*.py`` script (each reads saved results and never trains)."""
from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    sys.path.insert(0, str(HERE))
    scripts = sorted(HERE.glob("fig_*.py"))
    failed = []
    for script in scripts:
        start = time.perf_counter()
        try:
            runpy.run_path(str(script), run_name="__main__")
        except FileNotFoundError as missing:
            failed.append(script.name)
            print(f"{script.name}: skipped, saved results missing ({missing.filename}); run `make reproduce` first",
                  file=sys.stderr)
            continue
        print(f"{script.name}: {time.perf_counter() - start:.1f}s")
    print(f"{len(scripts) - len(failed)} of {len(scripts)} figures rebuilt")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
