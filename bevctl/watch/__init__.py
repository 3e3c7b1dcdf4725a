"""`bevctl watch`: follow a run's logs (ours, mmcv's or mmengine's) and show charts and verification panels.

Layers, each importable on its own: `sources` turns log lines into records shaped like our `train`/`val`/...
events, `follow` tails files (new lines, truncation, rotation, new files), `state` folds records into metrics,
alerts and verification rows, `dashboard` renders them with Rich and `plot` writes a matplotlib PNG.
Nothing here imports torch.
"""
