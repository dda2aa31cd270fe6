"""Score new mail with a fine-tuned adapter: `python -m gendiag.apply --model RUN --input FILE --out scores.csv`.

Reads a CSV, JSON lines or mbox file, normalises each message as the model's training corpora were
normalised, and writes p(malicious) per message (`gendiag.evaluate.apply`). Settings (model family,
prompt, quantization, threshold, normalisation) come from the study's config (--configfile).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CONFIG = "config/config.yaml"
SCHEMA = Path(__file__).resolve().parents[2] / "workflow/schemas/config.schema.yaml"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gendiag.apply", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True,
                   help="a fine-tuning run, results/finetune/<arch>/<recipe>/<paradigm>/seed<seed>, or its adapter")
    p.add_argument("--input", required=True, help="the mail: a .csv, .jsonl/.json or .mbox file (optionally .gz)")
    p.add_argument("--out", required=True, help="the scores, a CSV file (written atomically)")
    p.add_argument("--base", help="the base model directory (default: results/models/<arch>/base beside the run)")
    p.add_argument("--configfile", default=DEFAULT_CONFIG, help="the config the model was trained with")
    p.add_argument("--format", choices=["csv", "jsonl", "mbox"], help="the input format (default: from its suffix)")
    p.add_argument("--column", action="append", default=[], metavar="NAME=COLUMN",
                   help="a table column's name for text/body, subject, sender, date, uid or label (repeatable)")
    p.add_argument("--encoding", help="the CSV text encoding (default utf-8)")
    p.add_argument("--corpus", help="whose normalisation to apply (default: that of the run's recipe's corpora)")
    p.add_argument("--arch", help="the model's name in the config (default: from --model's path)")
    p.add_argument("--recipe", help="the run's recipe (default: from --model's path)")
    p.add_argument("--paradigm", help="the run's paradigm (default: from --model's path)")
    p.add_argument("--threshold", type=float, help="p(malicious) at which `pred` is 1 (default: evaluation.threshold)")
    p.add_argument("--device", help="cpu, cuda or auto (default: compute.device)")
    p.add_argument("--keep-text", action="store_true", help="also write the normalised text the model saw")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import yaml

    from gendiag.config import ConfigError, validate_config
    from gendiag.data.corpus import IngestError
    from gendiag.data.normalise import NormaliseError
    from gendiag.evaluate.apply import ApplyError, apply_model, read_mail, run_keys
    from gendiag.io import setup_logging, write_csv

    setup_logging(None)
    try:
        columns = dict(_pair(item) for item in args.column)
        config_path = Path(args.configfile)
        if not config_path.is_file():
            raise ApplyError(f"--configfile {config_path} does not exist; give the config the model was trained with")
        config = validate_config(yaml.safe_load(config_path.read_text()) or {}, SCHEMA)
        if args.threshold is not None:
            config["evaluation"]["threshold"] = args.threshold
        if args.device:
            config["compute"]["device"] = args.device
        run = run_keys(args.model, args.base, args.arch, args.recipe, args.paradigm)
        raw = read_mail(args.input, args.format, columns, args.encoding)
        scores = apply_model(raw, run, config, corpus=args.corpus, progress=True)
    except (ApplyError, ConfigError, IngestError, NormaliseError) as err:
        print(f"gendiag.apply: error: {err}", file=sys.stderr)
        return 2
    if not args.keep_text:
        scores = scores.drop(columns="text")
    write_csv(scores, args.out)
    print(f"gendiag.apply: {len(scores)} messages -> {args.out}", file=sys.stderr)
    return 0


def _pair(item: str) -> tuple[str, str]:
    from gendiag.evaluate.apply import ApplyError

    name, sep, column = item.partition("=")
    allowed = ("text", "body", "subject", "sender", "date", "uid", "label")
    if not sep or name not in allowed or not column:
        raise ApplyError(f"--column {item!r}: give NAME=COLUMN with NAME one of {list(allowed)}")
    return name, column


if __name__ == "__main__":
    sys.exit(main())
