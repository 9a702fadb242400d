"""A study's report from its run folders (``python -m cxrsyn.report``), one module per job: ``runs`` (run
folders, arms, results tables), ``compare`` (paired comparisons between arms, curves over a numeric arm),
``paper`` (the paper's numbers, read from ``experiments/crop_ablation/paper.yaml``), ``provenance``,
``figures``, ``markdown`` and ``write`` (which calls the others and writes the files)."""
