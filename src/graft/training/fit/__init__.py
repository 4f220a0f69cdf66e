"""The fit pipeline: stage one, stage two, the budget ladder and its plan, the from-scratch baseline."""
