"""Zero-shot evaluation of pretrained decoders on multiple-choice and cloze tasks.

A task is a list of examples, each a ``context``, its candidate ``choices`` (the
continuations) and the index of the ``gold`` one, read from JSONL in the spirit of
lm-evaluation-harness (:mod:`scalelab.evals.tasks`) or built from the pretraining corpus's
held-out text (:mod:`scalelab.evals.builtin`). Each choice is scored by the
log-likelihood of its tokens after the context (:mod:`scalelab.evals.score`); a task
reports accuracy, length-normalised accuracy and the gold answer's bits per byte, each
with a standard error (:mod:`scalelab.evals.metrics`). :func:`scalelab.evals.evaluate.
evaluate_model` ties them together for ``scalelab eval``; ``scalelab study eval`` runs it
over every rung of a study (:mod:`scalelab.study.zeroshot`).

Modules load torch only when they score (the config and the task readers do not).
"""
