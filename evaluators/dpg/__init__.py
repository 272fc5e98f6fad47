"""DPG-Bench: yes/no VQA over the DSG question graph of 1,065 prompts, 2x2 grids of 4 samples.

Importing this package registers the evaluator "dpg" and the external files it needs
(`dpg-questions`, the BLIP VQA files) in `pixeldit.infra.weights`.
"""
from evaluators.dpg.evaluate import CoverageError, evaluate_dpg
from evaluators.dpg.layout import check_layout, crop_tiles, make_grid, write_grid
from evaluators.dpg.questions import QuestionCSVError, QuestionGraph, load_questions
from evaluators.dpg.scoring import ModeScores, score_answers
from evaluators.dpg.vqa import VQAAnswers, VQABackend, VQABackendUnavailable, make_backend
from evaluators.registry import register_evaluator

register_evaluator("dpg", evaluate_dpg)

__all__ = ["CoverageError", "ModeScores", "QuestionCSVError", "QuestionGraph", "VQAAnswers", "VQABackend",
           "VQABackendUnavailable", "check_layout", "crop_tiles", "evaluate_dpg", "load_questions",
           "make_backend", "make_grid", "score_answers", "write_grid"]
