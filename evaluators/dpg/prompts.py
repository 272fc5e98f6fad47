"""The 1,065 vendored DPG-Bench prompts (ELLA `dpg_bench/prompts`, Apache-2.0, see data/NOTICE.txt)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from evaluators.registry import load_task

PROMPTS_PATH = Path(__file__).parent / "data" / "prompts.jsonl"
PROMPTS_SHA1 = "bb09ecb40c90c3b14dc6a4e62a00253ad9d2f35f"
PROMPT_COUNT = load_task("dpg")["prompt_count"]


def load_prompts(path: Path = PROMPTS_PATH) -> dict[str, str]:
    """item_id -> prompt, in file order; the vendored file is refused if its sha1 changed."""
    data = path.read_bytes()
    if path == PROMPTS_PATH and hashlib.sha1(data).hexdigest() != PROMPTS_SHA1:
        raise ValueError(f"{path} no longer matches its sha1 {PROMPTS_SHA1}: restore it with "
                         f"`git checkout -- {path}` instead of editing it")
    prompts: dict[str, str] = {}
    for line_number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        record = json.loads(line)
        item_id = record["item_id"]
        if item_id in prompts:
            raise ValueError(f"{path}:{line_number}: item_id {item_id!r} appears twice")
        prompts[item_id] = record["prompt"]
    return prompts
