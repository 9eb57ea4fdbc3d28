"""Data stage: built-in generators, loaders for real data sets, the artifact schema, and the base-model filter."""
