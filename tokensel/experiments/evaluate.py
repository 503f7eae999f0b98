"""``tokensel eval CONFIG [key=value ...]``: evaluate one model + selector + budget on a dataset.

The same from an installed package: ``python -m tokensel.experiments.evaluate CONFIG ...`` and,
data-parallel, ``torchrun --nproc_per_node=N -m tokensel.experiments.evaluate CONFIG ...``.
"""

from __future__ import annotations

import argparse
import sys

USAGE_EPILOG = """\
overrides are key=value pairs over the config, e.g.
  selector.name=mmtok budget.k=32 selector.params.alpha=0.3 dataset.limit=100 logging.wandb_mode=offline
selector.name=none (or budget.k=null) evaluates the unpruned model.
"""


def main(argv: list[str] | None = None) -> int:
    """``tokensel eval``; errors become one line on stderr and a non-zero exit code."""
    from tokensel.experiments.guard import guarded

    return guarded("eval", _main, list(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="tokensel eval",
        description="Evaluate a VLM with a vision-token selector on a dataset.",
        epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("config", help="a YAML config file, or the name of a shipped one (tokensel configs lists them)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    ap.add_argument(
        "--resume", action="store_true",
        help="continue the interrupted run of this configuration (or report it when finished) "
        "instead of starting a new run folder",
    )
    args = ap.parse_args(argv)

    from tokensel.experiments.runner import find_run, load_finished, prepare, run_eval

    prepared = prepare(args.config, args.overrides)
    if args.print_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(prepared.cfg))
        return 0
    if args.resume:
        status, path = find_run(prepared)
        if status == "finished":
            load_finished(prepared.cfg, path)
            print(f"tokensel eval: this configuration already finished in {path} (nothing to resume)")
            return 0
    run_eval(prepared, mode="reuse" if args.resume else "new")
    return 0


if __name__ == "__main__":
    sys.exit(main())
