"""The book's plumbing: paths and the results contract, record/glue helpers, site build, reproducibility."""
