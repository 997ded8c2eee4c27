"""orchard.cluster: attempts on the machines of a Ray cluster (`--executor ray`): a host actor per node running
`runtime.workspace`, and the executor that places attempts and moves commits as bundles."""
