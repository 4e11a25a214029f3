"""Time the last lines of a large access log against GNU tail, and measure memory.

Generates an nginx-style access log (2 GiB by default) in a temporary
directory, then, on the same file in the same run:

- times ``tail_lines(path, N)`` in this process against ``tail -n N`` run
  as a subprocess, best of several runs each, and prints the ratio;
- measures the peak memory the tail and a bounded search allocate
  (tracemalloc), at the full size and at a smaller size, to show that it
  does not grow with the file.

The files are deleted at the end. Run ``python bench/logs.py --help``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dna_core.logtail import search_file, tail_lines

MIB = 1024 * 1024


def parse_size(text: str) -> int:
    """Parse a size such as ``2G``, ``300M`` or ``4096`` into bytes."""
    units = {"K": 1024, "M": MIB, "G": 1024 * MIB}
    suffix = text[-1:].upper()
    if suffix in units:
        return int(float(text[:-1]) * units[suffix])
    return int(text)


def write_access_log(path: Path, size: int, seed: int = 1) -> int:
    """Write about ``size`` bytes of access-log lines to ``path``; return the line count.

    A 4 MiB block of varied lines is written repeatedly with a block number
    in every line, so no two lines of the file are equal.
    """
    generator = random.Random(seed)
    paths = ["/", "/login", "/api/items", "/static/app.js", "/search?q=docker", "/health"]
    agents = ["curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64)", "python-requests/2.31", "Go-http-client/1.1"]
    template = []
    for i in range(40_000):
        address = f"10.{generator.randrange(256)}.{generator.randrange(256)}.{generator.randrange(1, 255)}"
        status = generator.choice([200, 200, 200, 301, 404, 500])
        template.append(
            f'{address} - - [04/Dec/2026:{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d} +0000] '
            f'"GET {generator.choice(paths)}?block={{block:08d}}&n={i} HTTP/1.1" {status} '
            f'{generator.randrange(100, 90000)} "-" "{generator.choice(agents)}"\n'
        )
    block_text = "".join(template)
    lines = 0
    written = 0
    with path.open("w", encoding="ascii") as handle:
        block = 0
        while written < size:
            text = block_text.format(block=block)
            handle.write(text)
            written += len(text)
            lines += len(template)
            block += 1
    return lines


def best_of(runs: int, action: object) -> float:
    """Return the shortest wall time of ``runs`` calls of ``action``, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def peak_memory(action: object) -> int:
    """Return the peak bytes Python allocated while running ``action``."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    action()  # type: ignore[operator]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def measure(path: Path, lines: int, runs: int) -> dict[str, float]:
    """Return timings and peak memory of tail and search on ``path``."""
    ours = tail_lines(path, lines)
    gnu = subprocess.run(["tail", "-n", str(lines), str(path)], capture_output=True, check=True).stdout
    if ours != gnu.decode("ascii").splitlines():
        raise SystemExit(f"tail_lines and GNU tail disagree on {path}")

    ours_seconds = best_of(runs, lambda: tail_lines(path, lines))
    gnu_seconds = best_of(
        runs, lambda: subprocess.run(["tail", "-n", str(lines), str(path)], stdout=subprocess.DEVNULL, check=True)
    )

    def search() -> None:
        search_file(path, "no such text", max_matches=lines, max_bytes=64 * MIB, timeout=60)

    search_seconds = best_of(max(1, runs // 2), search)
    return {
        "ours": ours_seconds,
        "gnu": gnu_seconds,
        "tail_peak": peak_memory(lambda: tail_lines(path, lines)),
        "search": search_seconds,
        "search_peak": peak_memory(search),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G", help="size of the large log, such as 2G or 300M (default 2G)")
    parser.add_argument("--small", default="64M", help="size of the small log for the memory comparison (default 64M)")
    parser.add_argument("--lines", type=int, default=1000, help="lines to read from the end (default 1000)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each reader; the best counts (default 7)")
    parser.add_argument("--dir", default=None, help="directory for the temporary logs (default: the system temp dir)")
    options = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="dna-bench-logs-", dir=options.dir))
    try:
        results = {}
        for label, size in (("large", parse_size(options.size)), ("small", parse_size(options.small))):
            path = root / f"{label}.access.log"
            started = time.perf_counter()
            count = write_access_log(path, size)
            print(f"{label}: wrote {path.stat().st_size / MIB:,.0f} MiB, {count:,} lines"
                  f" in {time.perf_counter() - started:.1f} s")
            results[label] = measure(path, options.lines, options.runs)
            path.unlink()

        print()
        print(f"last {options.lines} lines, best of {options.runs} runs, file in the page cache:")
        for label in ("large", "small"):
            r = results[label]
            print(
                f"  {label:5}: tail_lines {r['ours'] * 1000:7.2f} ms   GNU tail -n {r['gnu'] * 1000:7.2f} ms"
                f"   ratio {r['ours'] / r['gnu']:.2f}x   tail peak {r['tail_peak'] / 1024:,.0f} KiB"
                f"   search (64 MiB cap) {r['search'] * 1000:6.0f} ms, peak {r['search_peak'] / 1024:,.0f} KiB"
            )
        print(f"tail peak memory large/small: {results['large']['tail_peak'] / results['small']['tail_peak']:.2f}")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
