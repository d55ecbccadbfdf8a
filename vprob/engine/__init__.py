"""The parts of the training engine, one concern each: the on-device loader and view maker
(:mod:`~vprob.engine.loader`), the run folder (:mod:`~vprob.engine.run_folder`) and the optimizer step
(:mod:`~vprob.engine.step`). :class:`vprob.train.Trainer` puts them together in a short loop."""
