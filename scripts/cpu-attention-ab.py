#!/usr/bin/env python3
"""Interleaved A/B of `vtensor bench cpu-attention` between binaries.

usage: cpu-attention-ab.py ROUNDS REPEAT CASES BINARY...

Each round runs every binary once (the order flips every round, so neither always runs on the
warmer machine) with `--repeat REPEAT --cases CASES`; a binary's figure for a case is the median
of its runs' medians, shown with the lowest and highest run median (ms per layer).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    rounds, repeat, cases, binaries = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
    medians = {binary: {} for binary in binaries}
    with tempfile.TemporaryDirectory() as directory:
        report = os.path.join(directory, "report.json")
        for n in range(rounds):
            for binary in binaries if n % 2 == 0 else reversed(binaries):
                subprocess.run([binary, "bench", "cpu-attention", "--cases", cases, "--repeat", repeat,
                                "--json-out", report], check=True, stdout=subprocess.DEVNULL)
                with open(report) as f:
                    for case in json.load(f)["cases"]:
                        medians[binary].setdefault(case["name"], []).append(case["medianMs"])
    print("| case | " + " | ".join(binaries) + " |")
    print("| --- |" + " --- |" * len(binaries))
    for case in medians[binaries[0]]:
        cells = []
        for binary in binaries:
            values = medians[binary][case]
            cells.append(f"{statistics.median(values):.4g} ({min(values):.4g}-{max(values):.4g})")
        print(f"| {case} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
