"""The rules of orchard: the plan model, the dependency graph, the pure scheduler and its simulation. Stdlib only."""
