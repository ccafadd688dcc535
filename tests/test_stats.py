"""dpg.stats: the one implementation of mean ± SE, paired t, sign test and Holm every report uses. Reference values are
Student's t critical points from printed tables and exact binomial sums, not another library's output."""

import math

import pytest

from dpg.stats import betainc, holm, mean_se, paired, sign_test_p, t_test_p


def test_mean_se():
    m, se = mean_se([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and se == pytest.approx(math.sqrt(5 / 3 / 4), rel=1e-15)
    assert mean_se([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1 / math.sqrt(3)))  # sample std 1, over sqrt(3)
    assert math.isnan(mean_se([3.0])[1])  # one value has no spread: nan, never a zero that looks certain
    with pytest.raises(ValueError, match="no values"):
        mean_se([])


@pytest.mark.parametrize("t, df", [(12.706, 1), (4.303, 2), (3.182, 3), (2.365, 7), (2.306, 8), (2.262, 9),
                                   (2.228, 10), (1.984, 100)])
def test_t_critical_points_give_five_percent(t, df):
    assert t_test_p(t, df) == pytest.approx(0.05, abs=3e-5)  # tables print t to 3 decimals
    assert t_test_p(-t, df) == t_test_p(t, df)


def test_t_one_df_is_cauchy():  # df = 1: p = 1 − 2·atan(t)/π exactly
    for t in (0.3, 1.0, 7.5):
        assert t_test_p(t, 1) == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-12)


def test_betainc_symmetry_and_uniform():
    assert betainc(1, 1, 0.37) == pytest.approx(0.37, rel=1e-14)  # I_x(1, 1) = x
    assert betainc(2.5, 0.5, 0.3) == pytest.approx(1 - betainc(0.5, 2.5, 0.7), rel=1e-12)


def test_paired():
    a, b = [3.0, 5.0, 4.0, 6.0], [1.0, 2.0, 4.0, 3.0]
    r = paired(a, b)
    assert (r.n, r.wins, r.losses, r.ties) == (4, 3, 0, 1)
    assert r.mean == 2.0 and r.t == pytest.approx(2.0 / mean_se([2.0, 3.0, 0.0, 3.0])[1])
    assert r.p == pytest.approx(t_test_p(r.t, 3))
    assert paired([1.0, 2.0], [1.0, 2.0]).p == 1.0
    with pytest.raises(ValueError, match="pairs must match"):
        paired([1.0], [1.0, 2.0])


def test_sign_test_exact():
    assert sign_test_p(8, 0) == pytest.approx(2 / 256)
    assert sign_test_p(7, 1) == pytest.approx(2 * 9 / 256)
    assert sign_test_p(0, 0) == 1.0 and sign_test_p(4, 4) == 1.0


def test_holm():
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
