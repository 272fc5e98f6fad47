"""CPU cost of the DPG-Bench VQA backends at their real sizes, random weights; writes JSON.

    OMP_NUM_THREADS=1 python benchmarks/dpg_vqa_cost.py --backend modelscope --questions 3 \
        --out results/bench/dpg_vqa_cost_modelscope.json

Builds a random-init model of the real architecture in a temporary folder (mPLUG-large: CLIP ViT-L/14 at
504², `evaluators.dpg.mplug_random.MPLUG_LARGE`; BLIP: `BlipConfig()` defaults = blip-vqa-base, 384²),
loads it through the backend exactly as a run does, and answers N DPG-style questions about one 512²
tile in one call, as the evaluator asks them. Reports CPU seconds (process time, all threads) per
question and per 512² grid image (4 tiles) at the given questions per tile. Random weights change no
shapes; the mPLUG decoder is biased to answer one word then stop, as the trained model does (see
mplug_random.py), so beam search runs 2 steps. The modelscope backend runs in its own environment
(evaluators/dpg/README.md, "Installing the modelscope backend").
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from pixeldit.infra.files import write_json_atomic  # noqa: E402

QUESTIONS = ["Is there a red bicycle?", "Is the bicycle leaning against a brick wall?",
             "Are there two cats on the windowsill?", "Is the sky cloudy?", "Is the text on the sign legible?"]


def build_modelscope(folder: Path):
    from evaluators.dpg.mplug_random import MPLUG_LARGE, ONE_WORD_ANSWERS, write_random_mplug
    from evaluators.dpg.vqa import ModelscopeMplugVQA

    write_random_mplug(folder, MPLUG_LARGE, answer_bias=ONE_WORD_ANSWERS)
    return ModelscopeMplugVQA(str(folder), device="cpu")


def build_transformers(folder: Path):
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    from evaluators.dpg.vqa import TransformersBlipVQA

    words = sorted({w.strip("?").lower() for q in QUESTIONS for w in q.split()} | {"yes", "no"})
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + words) + "\n")
    tokenizer = BertTokenizer(vocab=str(folder / "vocab.txt"), bos_token="[DEC]")
    BlipProcessor(image_processor=BlipImageProcessor(), tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(0)
    BlipForQuestionAnswering(BlipConfig()).save_pretrained(folder)
    return TransformersBlipVQA(str(folder), device="cpu", batch_size=32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["modelscope", "transformers"], required=True)
    parser.add_argument("--questions", type=int, default=3, help="questions asked about the tile (<= 5)")
    parser.add_argument("--per-tile", type=int, default=16, help="questions per tile for the per-image figure")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tile = Image.fromarray(np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8))
    questions = QUESTIONS[:args.questions]
    with tempfile.TemporaryDirectory(prefix="dpg_vqa_cost_") as tmp:
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        backend = (build_modelscope if args.backend == "modelscope" else build_transformers)(Path(tmp))
        build = {"cpu_s": time.process_time() - start_cpu, "wall_s": time.perf_counter() - start_wall}
        backend.answer([tile], [questions[0]])                     # warm-up, not timed
        # One call per tile with all its questions, as the evaluator asks them.
        cpu, wall = time.process_time(), time.perf_counter()
        answers = backend.answer([tile] * len(questions), questions)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    per_question = cpu / len(questions)
    record = {"backend": args.backend, "torch_threads": torch.get_num_threads(), "build": build,
              "questions": dict(zip(questions, answers.text)),
              "cpu_s": cpu, "wall_s": wall, "cpu_s_per_question": per_question,
              "questions_per_tile": args.per_tile, "cpu_s_per_image": per_question * args.per_tile * 4,
              "load_average_after": os.getloadavg(), "cpu": platform.processor() or platform.machine(),
              "torch": torch.__version__}
    print(f"{args.backend}: {per_question:.1f} CPU s per question, "
          f"{record['cpu_s_per_image']:.0f} CPU s per 512² grid at {args.per_tile} questions per tile; "
          f"load average {record['load_average_after'][0]:.1f}")
    if args.out:
        write_json_atomic(args.out, record)


if __name__ == "__main__":
    main()
