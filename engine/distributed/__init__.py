"""One run over several processes with PyTorch DDP (spec ``distributed: {nproc: N}``).

- reducer.py: the training loop's one hook (a no-op ``Reducer`` in one process); neutral, torch only
- group.py: ``GroupReducer``, the process group and the DDP-wrapped learner, and why a DDP step equals the
  one-process step on the same global batch
- checks.py: what a DDP run needs of the machine and the spec (distributed.nproc, refused plugins)
- rank.py: ``train_rank``, one rank of a run (torchrun's entry, or a Ray TorchTrainer's worker function)
- launch.py: ``run_distributed`` (what the worker and the CLI call), torchrun's entry, ``samples_per_second``

Kept free of imports: engine/train.py imports the reducer, and this package's other modules import the runner.
"""
