"""One window of the serving benchmark's relay phase (a), for A/B comparisons and profiles.

Starts one mode's services and ``salon serve`` as benchmarks/serving.py does,
then runs (a) for ``--runs`` windows and prints deltas/s and CPU per window.
With ``--tokens 1`` each reply is one delta, so the figure is replies per
second: the per-reply cost. ``--py-spy FILE`` records the server (raw format,
``--gil``) during the first window.

    .venv/bin/python benchmarks/profile_relay.py production --tokens 200 --runs 3

Compare code only in alternating runs (old, new, old, new): on a shared
machine the same code spreads by 10-20 % between windows minutes apart.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import Helper, Mode, Plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["embedded", "production"])
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply (default 200)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--window", type=float, default=6.0, help="seconds measured per run")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--py-spy", type=Path, default=None, help="record the server to FILE")
    args = parser.parse_args()
    spy_bin = Path(sys.prefix, "bin", "py-spy")
    if args.py_spy is not None and not spy_bin.exists():
        parser.error(
            f"--py-spy needs py-spy in this environment: {sys.prefix}/bin/pip install py-spy"
        )
    plan = Plan(
        warmup=1.0, window=args.window, memory=False, analysis=False, moderation=False, tries=1
    )
    with ExitStack() as stack:
        llm = Helper("fakellm.py")
        stack.callback(llm.stop)
        mode = Mode(args.mode, plan, Path(tempfile.mkdtemp(prefix="salon-prof-")), llm, stack)
        mode.start_services()
        server = mode.start_server("main")
        persona = server.create_persona("P")
        mode.streams_warm(server, persona)
        for run in range(args.runs):
            if args.py_spy is not None and run == 0:
                spy = [str(spy_bin), "record", "-p", str(server.pid), "--gil"]
                spy += ["-d", str(int(args.window)), "-r", "400", "-f", "raw"]
                spy += ["-o", str(args.py_spy), "--nonblocking"]
                subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            result = mode.streams(server, persona, args.clients, args.tokens, 0, processes=1)
            cpu = {k: round(v) for k, v in result["cpu_pct"].items()}
            print(f"{args.mode} run {run + 1}: {result['events_per_s']:.0f} deltas/s, CPU % {cpu}")


if __name__ == "__main__":
    main()
