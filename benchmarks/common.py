"""What every benchmark of `benchmarks/run.py` shares: the study's config, the environment, a record's fields.

Settings come from `config/config.yaml` (or the file in $GENDIAG_BENCH_CONFIG, set by `run.py --config`)
through the library's own validator (`gendiag.config`), so a benchmark runs the prompt, LoRA,
training, evaluation and circuit settings of the study whose results it reads.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config" / "config.yaml"
CONFIG_ENV = "GENDIAG_BENCH_CONFIG"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
THREADS = 2


def study_config(path: str | Path | None = None) -> dict:
    """The workflow config with the schema's defaults filled in, validated as the Snakefile does."""
    from gendiag.config import validate_config

    path = path or os.environ.get(CONFIG_ENV) or CONFIG
    return validate_config(yaml.safe_load(Path(path).read_text()), SCHEMA)


def training_settings(config: dict, arch: str) -> dict:
    """The global training block with the model's overrides (what the finetune rule passes as params)."""
    merged = {**config["training"], **config["models"][arch].get("training", {})}
    return {k: v for k, v in merged.items() if k not in ("seeds", "paradigms")}


def prompt_format(config: dict):
    from gendiag.prompts import PromptFormat

    return PromptFormat.from_config(config["prompt"])


def setup_torch(threads: int = THREADS) -> None:
    """The same torch threading for ours and every baseline."""
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def maxrss_mb() -> float:
    """This process's resident-set high-water mark (getrusage ru_maxrss; KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def rss_mb() -> float:
    """This process's current resident set (from /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def versions() -> dict:
    import bitsandbytes
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "bitsandbytes": bitsandbytes.__version__, "python": platform.python_version()}


class Contention:
    """How busy other processes kept the CPUs while a benchmark ran.

    Busy CPU time of the whole machine (/proc/stat: user, nice, system, irq, softirq, steal) minus
    this process's and its children's CPU time (os.times), as a share of the machine's capacity
    over the same wall time. 0 = the benchmark had the machine to itself; 0.5 on 2 cores = one
    core's worth of other work on average. Read with `with Contention() as c: ...; c.share`.
    """

    @staticmethod
    def _machine_busy() -> float:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def __enter__(self):
        self.wall, self.busy, self.own = time.perf_counter(), self._machine_busy(), self._own()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.wall
        others = (self._machine_busy() - self.busy) - (self._own() - self.own)
        self.share = round(max(0.0, others) / (wall * (os.cpu_count() or 1)), 3)
        return False


class Timer:
    """`with Timer() as t: ...` then `t.seconds`."""

    def __enter__(self):
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        return False
