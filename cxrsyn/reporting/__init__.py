"""A study's report from its run folders (``python -m cxrsyn.report``), one module per job: ``runs`` (run
folders, arms, results tables), ``compare`` (paired comparisons between arms, curves over a numeric arm),
``analysis`` (all of it computed once), ``paper`` (the published numbers, read from
``experiments/crop_ablation/paper.yaml``), ``provenance``, ``figures``, ``markdown`` (``results.md``) and
``write`` (``write_report``: analyse, then write every file)."""
