"""The training scaffold shared by pre-training (``scalelab.train``) and the RLHF stages.

- ``config``: ``TrainConfig`` (pydantic) and the repeated-data check; imports no torch or
  Lightning;
- ``schedule``: the names every run shares (``TrainingDiverged``, the learning-rate schedule
  ``lr_factor``); no pydantic either, so ``benchmarks/gpu_check.py`` runs the scaffold without
  it (``LanguageModel`` takes any object with ``TrainConfig``'s fields);
- ``optim``: the AdamW parameter groups (decay on matrices only), the AdamW + schedule pair,
  and the fused kernel where the device has it;
- ``module``: ``ScheduledModule``, the LightningModule base that owns the optimiser;
- ``language_model``: ``LanguageModel``, the pre-training LightningModule;
- ``trainer``: the one ``Trainer`` factory and the precision rule;
- ``checkpoint``: the one checkpoint format, which chains pre-training and every stage;
- ``run``: ``TrackedRun``, an MLflow run's set-up, final metrics and failure marking.

Importing this package imports none of them: the CLI reads configs to print ``--help``.
"""
