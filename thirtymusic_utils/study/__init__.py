"""The study exactly as its code ran: each function names the notebook cell it reproduces and lists
where the code departs from the study's own text. Nothing outside this package imports from it, except
the defect-by-defect comparison.

* ``cf``: the user-kNN as it ran (split, neighbours with padding, as-run / as-written / weighted top 10,
  tie spread); ``ttest``: the t-test as it ran (misaligned kNN subsamples, embedding subsamples);
* ``embedding_ran``: the embedding sample, 1% slice, split, towers and training as they ran;
  ``validate``: the study's metric, its chance level and a correct top k;
* ``ledger``: the defect ledger (kNN, embedding and t-test rows);
* ``sample`` and ``embedding``: the sample rule as the text describes it and the book's earlier
  reading of the seed configuration (used by chapter 05).
"""
