"""Every claim of the study as a paired test on the same messages, corrected for multiple comparisons."""

import pandas as pd

from gendiag.evaluate.claims import Group, claim_specs, evaluate_claims
from gendiag.evaluate.metrics import prediction_files
from gendiag.io import setup_logging
from gendiag.report.tables import write_table

smk = snakemake  # noqa: F821
log = setup_logging(smk.log[0])
settings, comparison = dict(smk.params.significance), dict(smk.params.comparison)

frames = [
    pd.read_parquet(path, columns=["uid", "label", "p_malicious"]).assign(
        arch=arch, recipe=recipe, paradigm=paradigm, seed=seed, testset=testset)
    for arch, recipe, paradigm, seed, testset, path in prediction_files(smk.params.runs, smk.params.testsets,
                                                                         smk.input.predictions)
]
predictions = pd.concat(frames, ignore_index=True)

groups = sorted({Group(arch, recipe, paradigm) for arch, recipe, paradigm, _ in smk.params.runs}, key=str)
specs = claim_specs(groups, list(smk.params.testsets), dict(smk.params.in_domain), comparison["specialist"],
                    comparison["generalist"])
log.info("%d claims over %d models", len(specs), len(groups))
claims = evaluate_claims(predictions, specs, metric=settings["metric"], n_resamples=int(settings["resamples"]),
                         seed=int(settings["seed"]), confidence=float(settings["confidence"]),
                         threshold=float(smk.params.threshold), alpha=float(settings["alpha"]),
                         correction=settings["correction"])
write_table(claims, smk.output.table[0].removesuffix(".csv"),
            caption=f"Claims of the study: effect ({settings['metric']}, A - B) with paired-bootstrap CI, "
                    f"{settings['correction']}-adjusted p-value and verdict.", label="tab:claims")
log.info("\n%s", claims[["claim", "arch", "effect", "ci_low", "ci_high", "p_adjusted", "verdict"]].to_string())
