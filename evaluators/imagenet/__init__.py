"""ImageNet metric suite with the ADM evaluator's semantics: FID, sFID, IS, precision/recall, KID.

    evaluate_imagenet(samples, reference, *, backend="adm", metrics=None, ...) -> result record
    build_reference(images, out, res=None, ...)                               -> {"path", "sha256", "checksum", "card"}
    plan_imagenet(samples, reference, ...)                                    -> validated Plan (no features)

Importing this package registers the evaluator "imagenet" and the weight file "inception".
"""
from evaluators.imagenet.errors import ImageNetEvalError, InputError, ReferenceMismatchError
from evaluators.imagenet.evaluate import BACKENDS, METRICS, VERSION, evaluate_imagenet, plan_imagenet
from evaluators.imagenet.inception import INCEPTION, resolve_weights
from evaluators.imagenet.reference import build_reference, open_reference
from evaluators.registry import EVALUATORS, register_evaluator

if EVALUATORS.get("imagenet") is not evaluate_imagenet:
    register_evaluator("imagenet", evaluate_imagenet)

__all__ = ["evaluate_imagenet", "build_reference", "plan_imagenet", "open_reference", "resolve_weights",
           "ImageNetEvalError", "InputError", "ReferenceMismatchError", "BACKENDS", "METRICS", "VERSION", "INCEPTION"]
