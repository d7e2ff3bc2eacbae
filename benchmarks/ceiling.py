"""What 2 processes can get out of this machine's cores: the ceiling for the engine's "2 workers over 1".

    .venv/bin/python benchmarks/ceiling.py [--repeats 3]

No engine code: the bare PyTorch loop of ``benchmarks/engine.py`` (section 1: the squentropy paper's
cross_entropy run, conv4 + linear classifier, batch 128, SGD, 8 epochs x 31 batches, 1 torch thread) run in one
process alone (the reference), then in two processes at once (spawned, each on 1 thread, the same work). The
row's ratio is the two processes' images/s added up over the one's: 2.0 if the two cores compute as one does
twice, less where they share what limits them (a hyper-threaded physical core, memory bandwidth, the host's
frequency under load). The engine's 2-worker speed-up can reach this ratio at best. Interleaved, ``--repeats``
times; the fastest (the least disturbed) and the median are printed. About 1 minute with ``--repeats 3``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # engine.py, beside this file
import engine  # noqa: E402


def _bare(_: int) -> float:
    torch.set_num_threads(1)
    run = engine.cpu_run(engine.FULL, engine.FULL.trainer_epochs, engine.FULL.trainer_batches, augment="none")
    train, _test = engine.runner.load_run_data(run, engine.PREPARED)
    return engine.bare_images_per_s(run, train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    one, two = [], []
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_bare, [0, 1])  # start-up and data loading, untimed
        for _ in range(args.repeats):
            one.append(pool.apply(_bare, (0,)))
            two.append(sum(pool.map(_bare, [0, 1], chunksize=1)))
    print(
        f"# {engine.platform.platform()}, {engine.os.cpu_count()} CPUs, torch {torch.__version__}; "
        f"bare loop, 1 thread a process; best and median of {args.repeats} (interleaved)"
    )
    print(f"{'row':34s} {'best img/s':>10s} {'median':>9s} {'best/one':>9s} {'med/one':>8s}")
    reference = (max(one), statistics.median(one))
    for name, rates in (("1 process (reference)", one), ("2 processes at once, summed", two)):
        best, median = max(rates), statistics.median(rates)
        print(
            f"{name:34s} {best:10.1f} {median:9.1f} {best / reference[0]:9.2f} {median / reference[1]:8.2f}"
        )


if __name__ == "__main__":
    main()
