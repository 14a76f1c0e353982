"""What the semi-supervised method parts (``semisam_plus``, ``distill``) teach from the generalist.

* :mod:`~semisam.training.methods.semi.embedding_store`: the generalist's slice embeddings, cached on disk
  in the store (``STORE/cache/embeddings/``) and shared by both parts;
* :mod:`~semisam.training.methods.semi.prompting`: the specialist's prediction -> the prompts a user would
  give (boxes and points on its main 3D components);
* :mod:`~semisam.training.methods.semi.pseudo_labels`: the generalist's answers to those prompts, gated
  and weighted by confidence, cached per unlabeled case (``STORE/cache/pseudo_labels/``);
* :mod:`~semisam.training.methods.semi.presence`: a linear probe on the embeddings that says on which
  slices a class is absent (``semisam_plus``'s option ``presence``).

Nothing is imported here: each part imports the modules it uses.
"""
