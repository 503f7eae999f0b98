"""``tokensel eval CONFIG [key=value ...]``: evaluate one model + selector + budget on a dataset.

Also ``python -m experiments.evaluate`` and, data-parallel,
``torchrun --nproc_per_node=N -m experiments.evaluate CONFIG [key=value ...]``.
"""

from __future__ import annotations

import argparse
import sys

from tokensel.experiments.config import ConfigError

USAGE_EPILOG = """\
overrides are key=value pairs over the config, e.g.
  selector.name=mmtok budget.k=32 selector.params.alpha=0.3 dataset.limit=100 logging.wandb_mode=offline
selector.name=none (or budget.k=null) evaluates the unpruned model.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="tokensel eval",
        description="Evaluate a VLM with a vision-token selector on a dataset.",
        epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("config", help="YAML config (see experiments/configs/)")
    ap.add_argument("overrides", nargs="*", help="key=value overrides")
    ap.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)

    from tokensel.experiments.runner import prepare, run_eval

    try:
        prepared = prepare(args.config, args.overrides)
    except ConfigError as exc:
        print(f"tokensel eval: config error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(prepared.cfg))
        return 0
    run_eval(prepared)
    return 0


if __name__ == "__main__":
    sys.exit(main())
