"""Mining: drive logs in, ranked anomaly crops out (``ugains mine``).

One module per stage, in the order data flows: :mod:`sources` (plan the frames),
:mod:`decode`, :mod:`inference` (the ModelHandler), :mod:`rows`, :mod:`schema` and
:mod:`sinks` (Parquet tables); :mod:`ledger` (frames already mined), :mod:`runs` (run
directories: staging, commit, listing) and :mod:`run` (the command and the short chain of
named transforms). The elements passed between stages are in :mod:`pipelines.elements`.
"""
