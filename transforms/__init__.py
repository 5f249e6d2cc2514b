"""Pure, batched, device-agnostic tensor functions of the UGainS method.

- ``transforms.scores``: per-pixel anomaly scores from Mask2Former outputs (step 2).
- ``transforms.sampling``: candidate points, FPS / k-means / random / oracle / grid prompts
  (steps 3-5).
- ``transforms.mask_scores``: the mean anomaly score inside each mask (step 7).
- ``transforms.nms``: mask non-maximum suppression (step 8).
- ``transforms.ignore``: the ignore-region filter (step 9).
- ``transforms.fusion``: the RbA-ensemble fusion of mask and pixel scores (step 10).
- ``transforms.masks``: boxes, COCO RLE, context crops.
- ``transforms.metrics``: evaluation metrics.
"""
