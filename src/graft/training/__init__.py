"""Fitting, by role: the head on cached features (:mod:`.head`), fine-tuning the backbone
(:mod:`.finetune`), and the fit pipeline that chains them (:mod:`.fit`: stage one, stage two,
the budget ladder, the scratch baseline). Import from the modules; this package imports nothing,
so reading one option's defaults never loads the trainer.
"""
