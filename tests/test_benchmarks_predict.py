"""benchmarks.predict_speed's predict measurement at its smallest size: it runs, the trust fields are
really computed, and it yields a positive ratio. No timing asserts: speed is what the benchmark prints."""

from __future__ import annotations

import pytest

from benchmarks.predict_speed import build_setup, parse_args, predict_speed


@pytest.mark.slow  # 25-55 s on a busy 2-core machine: one phantom_demo epoch, trust fit and logged model included
def test_predict_measurement_has_a_ratio_and_trust_fields() -> None:
    args = parse_args(["--only", "predict", "--per-class", "12", "--phantom-size", "64", "--images", "16",
                       "--repeats", "1", "--warmup", "0"])
    with build_setup(args) as setup:
        assert setup.model.trust_state is not None  # the trust model fitted at the end of training
        (result,) = predict_speed(setup)  # asserts rows[0]["trust"] == "ok" and every trust field set
    assert result.name == "predict" and result.ours > 0 and result.reference > 0 and result.ratio > 0
