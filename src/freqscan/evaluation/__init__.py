"""Evaluation jobs fed by the frequency table (``freqscan eval ...``, ``freqscan report``).

| module | one job |
| --- | --- |
| `binning` | the paper's binned log-linear rho; a robust Theil-Sen fit and Spearman |
| `sources` | counts (freqscan output, paper files, JSON/CSV) and per-class performance; the join |
| `loglinear` | metric vs frequency for many models, prompts and count types |
| `zeroshot` | per-class zero-shot accuracy of an open_clip model (ImageFolder or webdataset) |
| `longtail` | the long tail and a "Let it Wag!" selection of rare concepts |
| `correlate` | correlation of two outputs' frequencies |
| `plots` | the figures (matplotlib, Agg canvas) |
| `report` | one self-contained HTML page about an output |
| `cli` | `eval_app` (loglinear, zeroshot, longtail, correlate) and `report` |
"""
