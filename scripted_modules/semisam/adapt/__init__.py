"""The generalist learns the task: fine-tune its mask decoder on the store's labeled cases.

Every correction goes through the generalist (Propagate, pseudo-labels, the simulated annotator). As
shipped it has never seen the user's structure; :func:`semisam.adapt.job.adapt` fine-tunes only its mask
decoder and IoU head on cached, frozen embeddings of the store's training cases (so every cached
embedding stays valid and an adapted version shares them with the frozen model), validates it against
the frozen generalist on the store's validation cases and registers it as a *generalist version*
(:mod:`semisam.adapt.versions`), promoted only when it answers better there.

Modules: :mod:`.samples` (what it is taught: boxes from the labels as a user draws them, through the same
views as the product, and empty targets next to the structure), :mod:`.decoder` (the differentiable
decoder pass and the loss terms), :mod:`.evaluate` (box-per-slice Dice, false-positive area on empty
neighbours, confidence-vs-Dice rank correlation), :mod:`.versions` (files, registry, applying a version)
and :mod:`.job` (the named steps of one adaptation run).
"""
