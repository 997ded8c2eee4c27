"""orchard's benchmark suite: `python -m benchmarks [--quick] [--only B1,B3] [--out FILE]`.

Every figure is a ratio measured in the same run against a baseline, so machine noise cancels. The benchmarks drive
the same code as real runs (the production scheduler, the real engine, real git); nothing is special-cased for them.
See docs/performance.md for the figures and how to read them.
"""
