"""Our methods: popularity, user/item kNN, strong baselines, the two-tower model and its trainer."""
