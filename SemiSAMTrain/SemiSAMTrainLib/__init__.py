"""SemiSAMTrain's Logic parts (the training job, the store's cases and versions), kept out of the module file."""
