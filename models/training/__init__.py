"""Training of the project's own models: Mask2Former (semantic + RbA outlier exposure) and SAM.

Pure PyTorch: the loops take batches of tensors and know nothing of files, Beam or the world
generator; ``pipelines.training`` reads datasets from disk and calls them.
"""
