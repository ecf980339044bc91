"""Reading and charting advsweep results: ``load`` a results folder into polars, find the
robustness frontier (``frontier``), draw it (``charts``), and write an offline HTML report
(``python -m analysis.report RESULTS``). See docs/analysis.md."""
