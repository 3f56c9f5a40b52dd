"""What a model learns about its own inputs after fitting: calibration, out-of-distribution
scores, typical explanations; and the verdicts they give each prediction."""
