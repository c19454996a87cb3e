"""Numbers a person reads (janus.display): 4 significant digits for metrics, 3 for rates, epochs to
2 decimals, FLOPs with an SI prefix."""

import pytest

from janus import display


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.6546666666666666, "0.6547"), (2.30114, "2.301"), (0.0851, "0.08510"), (9.99996, "10.00"),
     (1234.5678, "1235"), (1.2e-05, "1.200e-05"), (0.0, "0")],
)  # fmt: skip
def test_metrics_print_with_four_significant_digits(value, text):
    assert display.metric(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(448.7650, "449"), (12345.6, "12300"), (0.2371, "0.237"), (3.0, "3.00")],
)
def test_rates_print_with_three_significant_figures(value, text):
    assert display.rate(value) == text


def test_flops_read_with_an_si_prefix():
    assert display.flops(6152614400.0) == "6.15 GFLOP"
    assert display.flops(4.1e12) == "4.10 TFLOP"
    assert display.flops(None) == "n/a FLOP"


def test_a_progress_line_reads_each_scalar_by_its_kind():
    got = {
        k: display.scalar(k, v)
        for k, v in {
            "loss": 2.301234,
            "images_per_s_per_device": 448.765,
            "epoch": 4.0,
            "eta_s": 192.0,
            "step_time_s": 0.23456,
            "mfu": None,
            "grad_accum": 2,
        }.items()
    }
    assert got == {
        "loss": "2.301",
        "images_per_s_per_device": "449",
        "epoch": "4.00",
        "eta_s": "3m12s",
        "step_time_s": "0.235",
        "mfu": "n/a",
        "grad_accum": "2",
    }
