"""Self-contained HTML pages of the study's explanations: inline CSS, no scripts, no network.

`shap_heatmap_html` shows every explained message as text, each token's background coloured by its
SHAP value (red: toward malicious, blue: toward legitimate, scaled per message by its largest
|SHAP|), with the value in the token's tooltip and planted cue spans underlined; a message of a
corpus without planted cues says that it has no ground truth.
"""

from __future__ import annotations

import html
import math

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import to_hex

from gendiag.attribution.faithfulness import core_span
from gendiag.report.figures import (
    NO_GROUND_TRUTH,
    SHAP_CMAP,
    SHAP_MODEL_KEYS,
    _require,
    _with_features,
    has_planted_cues,
    shap_norm,
    shap_scale,
)

GROUP_KEYS = (*SHAP_MODEL_KEYS, "seed")
CATEGORY_ORDER = {"tp": 0, "fp": 1, "fn": 2, "tn": 3}
_OPTIONAL_METRICS = (
    ("comprehensiveness", "comprehensiveness", "{:.2f}"),
    ("sufficiency", "sufficiency", "{:.2f}"),
    ("cue_precision", "cue precision@k", "{:.2f}"),
    ("cue_recall", "cue recall@k", "{:.2f}"),
)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 72em;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
.legend { margin: 0.6em 0 1.2em; font-size: 0.9em; color: #444; }
.bar { display: inline-block; width: 16em; height: 0.9em; vertical-align: middle; border-radius: 2px;
       margin: 0 0.4em; }
details { margin: 0.4em 0; }
details.model > summary { font-size: 1.15em; font-weight: 600; cursor: pointer; }
details.testset { margin-left: 1.2em; }
details.testset > summary { font-weight: 600; cursor: pointer; }
.count { font-weight: normal; color: #666; font-size: 0.9em; }
.msg { border: 1px solid #ddd; border-radius: 4px; margin: 0.6em 0 0.6em 1.2em; padding: 0.5em 0.7em; }
.head { font-size: 0.85em; color: #333; margin-bottom: 0.4em; }
.uid { font-family: ui-monospace, monospace; font-weight: 600; }
.cat { display: inline-block; padding: 0 0.4em; border-radius: 3px; color: #fff; font-weight: 600; }
.cat-tp { background: #b2182b; } .cat-tn { background: #2166ac; }
.cat-fp { background: #e08214; } .cat-fn { background: #8073ac; }
.text { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.85em; white-space: pre-wrap;
        word-break: break-word; line-height: 1.7; }
.t { border-radius: 2px; }
.t.c { border-bottom: 2px solid #000; }
.cue-demo { border-bottom: 2px solid #000; }
.nogt { font-style: italic; color: #555; }
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _number(value, fmt: str = "{:+.2f}") -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if math.isnan(number) else fmt.format(number)


def _colours(values: np.ndarray, scale: float) -> list[tuple[str, str]]:
    """(background, ink) hex colours of SHAP values divided by `scale`."""
    cmap = mpl.colormaps[SHAP_CMAP]
    norm = shap_norm()
    out = []
    for value in np.asarray(values, dtype=np.float64) / scale:
        r, g, b, _ = cmap(norm(value))
        ink = "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "#ffffff"
        out.append((to_hex((r, g, b)), ink))
    return out


def _gradient() -> str:
    cmap = mpl.colormaps[SHAP_CMAP]
    stops = ", ".join(to_hex(cmap(x)) for x in np.linspace(0, 1, 9))  # even in the colour scale's units
    return f"linear-gradient(to right, {stops})"


def _message_text(text: str, own: pd.DataFrame) -> str:
    """The message as escaped HTML: each feature token's text (without its surrounding whitespace)
    in a coloured span, everything else as it is."""
    features = own[own["feature"]]
    scale = shap_scale(features["shap"].to_numpy())
    colours = _colours(features["shap"].to_numpy(), scale)
    pieces = []
    for row, (background, ink) in zip(features.itertuples(index=False), colours, strict=True):
        start, end = core_span(str(row.token), int(row.start), int(row.end))
        start, end = max(start, 0), min(end, len(text))
        if end > start:
            pieces.append((start, end, float(row.shap), bool(row.in_cue), background, ink))
    pieces.sort(key=lambda p: p[0])
    out, cursor = [], 0
    for start, end, value, in_cue, background, ink in pieces:
        if start < cursor:  # overlapping offsets: keep the first token's text
            continue
        out.append(_esc(text[cursor:start]))
        tip = f"SHAP {value:+.4f}" + (" · inside a planted cue" if in_cue else "")
        out.append(f'<span class="t{" c" if in_cue else ""}" style="background:{background};color:{ink}"'
                   f' title="{_esc(tip)}">{_esc(text[start:end])}</span>')
        cursor = end
    out.append(_esc(text[cursor:]))
    return "".join(out)


def _message_block(message: pd.Series, own: pd.DataFrame) -> str:
    category = str(message["category"])
    features = own[own["feature"]]
    special = own.loc[own["special"].astype(bool), "shap"] if "special" in own.columns else pd.Series(dtype=float)
    facts = []
    if "label" in message and "pred" in message:
        facts.append(f"label {_esc(message['label'])}, predicted {_esc(message['pred'])}")
    facts += [
        f"f(x) {_number(message['f_x'])}",
        f"base value {_number(message['base_value'])}",
        f"max |SHAP| {_number(shap_scale(features['shap'].to_numpy()), '{:.2f}')}",
    ]
    if len(special) and float(special.abs().sum()) > 0:
        facts.append(f"special tokens Σ {_number(special.sum())}")
    facts += [f"{name} {_number(message[col], fmt)}" for col, name, fmt in _OPTIONAL_METRICS
              if col in message and pd.notna(message[col])]
    if not has_planted_cues(own):
        facts.append(f'<span class="nogt">{_esc(NO_GROUND_TRUTH)}</span>')
    head = (f'<span class="cat cat-{_esc(category)}">{_esc(category)}</span> '
            f'<span class="uid">{_esc(message["uid"])}</span> · ' + " · ".join(facts))
    body = _message_text(str(message["text"]), own)
    return f'<div class="msg">\n<div class="head">{head}</div>\n<div class="text">{body}</div>\n</div>'


def _counts(frame: pd.DataFrame) -> str:
    counts = frame["category"].value_counts()
    parts = [f"{counts[c]} {c}" for c in CATEGORY_ORDER if c in counts]
    return f"{len(frame)} message{'s' if len(frame) != 1 else ''}" + (f": {', '.join(parts)}" if parts else "")


def shap_heatmap_html(messages: pd.DataFrame, tokens: pd.DataFrame, title: str) -> str:
    """A self-contained HTML page of every explained message, grouped by model and test set.

    `messages` has one row per explained message (uid, category, f_x, base_value, text, and
    optionally label, pred, the faithfulness and cue scores); `tokens` one row per token (uid,
    token, start, end, shap, special, optionally position, feature and in_cue). Rows are matched
    on uid and whichever of arch, recipe, paradigm, seed and testset both frames carry.
    """
    _require(messages, ["uid", "category", "f_x", "base_value", "text"], "SHAP message table")
    _require(tokens, ["uid", "token", "start", "end", "shap", "special"], "SHAP token table")
    match = [k for k in (*GROUP_KEYS, "testset") if k in messages.columns and k in tokens.columns]
    ordered = tokens.sort_values([*match, "uid", "position"] if "position" in tokens.columns else [*match, "uid"],
                                 kind="stable")
    by_message = {key if isinstance(key, tuple) else (key,): group
                  for key, group in ordered.groupby([*match, "uid"], sort=False)}
    empty = _with_features(tokens.iloc[:0])

    group_keys = [k for k in GROUP_KEYS if k in messages.columns]
    frame = messages.assign(_cat=messages["category"].map(CATEGORY_ORDER).fillna(len(CATEGORY_ORDER)),
                            _fx=-messages["f_x"].astype(float))
    sections = []
    without_cues = 0
    models = frame.groupby(group_keys, sort=False) if group_keys else [((), frame)]
    for model, model_frame in models:
        model = model if isinstance(model, tuple) else (model,)
        name = " · ".join(f"seed {v}" if k == "seed" else str(v) for k, v in zip(group_keys, model, strict=True))
        testsets = (model_frame.groupby("testset", sort=False) if "testset" in model_frame.columns
                    else [("all messages", model_frame)])
        parts = []
        for testset, test_frame in testsets:
            blocks = []
            for _, message in test_frame.sort_values(["_cat", "_fx", "uid"], kind="stable").iterrows():
                key = tuple(message[k] for k in match) + (message["uid"],)
                own = _with_features(by_message[key]) if key in by_message else empty
                without_cues += not has_planted_cues(own)
                blocks.append(_message_block(message, own))
            parts.append(f'<details class="testset">\n<summary>{_esc(testset)} '
                         f'<span class="count">({_esc(_counts(test_frame))})</span></summary>\n'
                         + "\n".join(blocks) + "\n</details>")
        sections.append(f'<details class="model" open>\n<summary>{_esc(name or "model")} '
                        f'<span class="count">({_esc(_counts(model_frame))})</span></summary>\n'
                        + "\n".join(parts) + "\n</details>")

    legend = (f'<div class="legend">toward legitimate<span class="bar" style="background:{_gradient()}"></span>'
              "toward malicious · colours scaled per message by its largest |SHAP| (square root) · "
              '<span class="cue-demo">underlined</span>: inside a planted cue span · '
              + (f'<span class="nogt">{_esc(NO_GROUND_TRUTH)}</span>: {without_cues} message'
                 f'{"s" if without_cues != 1 else ""} of corpora without planted cues, nothing to underline · '
                 if without_cues else "")
              + "hover a token for its SHAP value (log-odds of malicious) · f(x) = base value + Σ SHAP</div>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{_esc(title)}</h1>\n{legend}\n" + "\n".join(sections) + "\n</body>\n</html>\n")
