"""Prompt following on the embedded digits: does an image made for "a handwritten digit seven" show a seven?"""
from evaluators.digits.evaluate import evaluate_prompt_following, plan_prompt_following, to_8x8

__all__ = ["evaluate_prompt_following", "plan_prompt_following", "to_8x8"]
