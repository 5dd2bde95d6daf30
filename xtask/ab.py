"""A/B timing of two `quant-bench` builds on this shared machine.

Usage: python3 xtask/ab.py OLD_BIN NEW_BIN CASE,SHAPE,THREADS [...] [--rounds N]

Starts both binaries as servers (`quant-bench --serve`) and times each request on both,
back to back, alternating which goes first, for N rounds (default 7). Prints each side's
median rate and the median (min..max) of the per-round ratios new/old. Run it with the same
binary twice to see the noise floor (an A/A run here spreads by about +-5 %).

To get OLD_BIN: build, copy target/release/quant-bench away, `git stash`, build again.
"""
import json
import statistics
import subprocess
import sys


def main():
    args = sys.argv[1:]
    rounds = 7
    if "--rounds" in args:
        i = args.index("--rounds")
        rounds = int(args[i + 1])
        del args[i:i + 2]
    if len(args) < 3:
        sys.exit(__doc__)
    old, new, requests = args[0], args[1], args[2:]
    procs = {name: subprocess.Popen([path, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for name, path in (("old", old), ("new", new))}
    rates = {}
    for r in range(rounds):
        for req in requests:
            for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                p = procs[name]
                p.stdin.write(req.replace(",", " ") + "\n")
                p.stdin.flush()
                reply = json.loads(p.stdout.readline())
                if "error" in reply:
                    sys.exit(f"{name}: {reply['error']}")
                rates.setdefault((req, name), []).append(reply["work"] / reply["seconds"] / 1e9)
    for req in requests:
        o, n = rates[(req, "old")], rates[(req, "new")]
        ratios = [b / a for a, b in zip(o, n)]
        print(f"{req:<36} old {statistics.median(o):8.2f} new {statistics.median(n):8.2f} "
              f"new/old {statistics.median(ratios):.3f} ({min(ratios):.2f}..{max(ratios):.2f})")


if __name__ == "__main__":
    main()
