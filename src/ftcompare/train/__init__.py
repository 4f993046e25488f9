"""Training: one run's recipe and optimizer step (steps), the loop with its crash-safe
checkpoints (loop, checkpoint), what a running job shows (progress), and the finetune
and tune rules' job (job).
"""

from ftcompare._lazy import lazy_api

# Each module's public names; a name is imported from its module when first used.
_API = {
    "job": "finetune_job job_reporter with_base_model",
    "loop": "Preempted seed_everything train_run",
    "progress": "JobFiles Reporter job_files progress_path tensorboard_dir",
    "steps": "TrainSetup TrainStep applied_learning_rate build_optimizer current_lr setup_training",
}
__getattr__, __dir__, __all__ = lazy_api(__name__, {n: m for m, names in _API.items() for n in names.split()})
