"""Baselines compared against IDGenRec in the same splits and metrics: popularity, SASRec, and fixed ID schemes
(P5-SID sequential numbers, title IDs) that the one T5 trainer uses instead of generated IDs."""
