"""Mix the train/val splits of a recipe's corpora into its training and validation sets."""

import pandas as pd

from gendiag.data.splits import compose_recipe
from gendiag.io import setup_logging, write_json, write_parquet

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
recipe = dict(smk.params.recipe)

frames = [pd.read_parquet(path) for path in smk.input.splits]
splits = {frame["corpus"].iloc[0]: frame for frame in frames}
train, val, report = compose_recipe(splits, recipe.get("train_size"), recipe.get("val_size"), int(recipe["seed"]))
log.info("%s: %s", smk.wildcards.recipe, report)
write_parquet(train, smk.output.train)
write_parquet(val, smk.output.val)
write_json({"recipe": smk.wildcards.recipe, **recipe, **report}, smk.output.report)
