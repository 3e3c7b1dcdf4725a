"""`bevctl watch`, `bevctl runs` and `start --wait`: follow a run's logs (ours, mmcv's or mmengine's) and show
charts, verification rows, validation and alerts. Nothing here imports torch.

Layers, lower first (none imports one above it):

- `records` (what a record is, which keys are metrics), `textlog` (mmcv/mmengine text logs, one step-line
  reader) and `sources` (structured logs, which files of a run to follow), `follow` (tailing files);
- `series` (one metric, its smoothing and x positions), `alerts`, `checks` (verification rows), `progress`
  (where a run is, its ETA), `liveness` (asks `bevctl.runs.run_status`), folded together by `state` and
  followed per run by `session`;
- `chart` (Braille), `dashboard` (Rich), `plot` (matplotlib PNG), `cli` (what the options do), `wait`
  (`start --wait`), `runs_table` (`bevctl runs`).
"""
