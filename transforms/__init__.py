"""Pure, batched, device-agnostic tensor functions of the UGainS method.

- ``transforms.scores``: per-pixel anomaly scores from Mask2Former outputs (step 2).
- ``transforms.sampling``: candidate points, FPS / k-means / random / oracle / grid prompts
  (steps 3-5).
- ``transforms.nms``: mask NMS and the ignore-region filter (steps 8-9).
- ``transforms.fusion``: mask scores and the RbA-ensemble fusion (steps 7 and 10).
- ``transforms.masks``: boxes, COCO RLE, context crops.
- ``transforms.metrics``: evaluation metrics.
"""
