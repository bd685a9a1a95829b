//! Small statistics for the transcript tests (what each party sees must not depend on the
//! other party's secrets): the chi-square distribution's tail and a two-sample test of
//! homogeneity. Kept in the library so that the protocol's and the harness's tests share
//! one implementation; nothing here communicates.

/// ln Gamma(x), x > 0 (Lanczos, g = 7, n = 9; about 15 digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularized upper incomplete gamma Q(a, x) (Numerical Recipes gammq).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let gln = ln_gamma(a);
    if x < a + 1.0 {
        // series for P(a, x)
        let (mut ap, mut sum) = (a, 1.0 / a);
        let mut del = sum;
        for _ in 0..10_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        1.0 - sum * (-x + a * x.ln() - gln).exp()
    } else {
        // continued fraction for Q(a, x) (modified Lentz)
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-15 {
                break;
            }
        }
        (-x + a * x.ln() - gln).exp() * h
    }
}

/// Survival function of the chi-square distribution with `df` degrees of freedom.
pub fn chi2_sf(x: f64, df: f64) -> f64 {
    gamma_q(df / 2.0, x / 2.0)
}

/// Two-sample chi-square test of homogeneity on two histograms over the same bins
/// (Numerical Recipes chstwo). Returns (statistic, degrees of freedom, p-value).
///
/// # Panics
/// If the histograms differ in length or either is empty (a caller's mistake).
pub fn chi2_two_sample(a: &[u64], b: &[u64]) -> (f64, f64, f64) {
    assert_eq!(a.len(), b.len());
    let (na, nb) = (a.iter().sum::<u64>() as f64, b.iter().sum::<u64>() as f64);
    assert!(na > 0.0 && nb > 0.0);
    let (ka, kb) = ((nb / na).sqrt(), (na / nb).sqrt());
    let mut stat = 0.0;
    let mut bins = 0usize;
    for (&x, &y) in a.iter().zip(b) {
        if x + y == 0 {
            continue;
        }
        bins += 1;
        let t = ka * x as f64 - kb * y as f64;
        stat += t * t / (x + y) as f64;
    }
    let df = if na == nb {
        bins as f64 - 1.0
    } else {
        bins as f64
    };
    (stat, df, chi2_sf(stat, df.max(1.0)))
}

/// The chi-square value whose upper tail with `df` degrees of freedom is `alpha`
/// (bisection on [`chi2_sf`], relative precision about 1e-12). Precomputing it once per df
/// lets a test compare millions of statistics without evaluating a p-value for each.
pub fn chi2_critical(alpha: f64, df: f64) -> f64 {
    assert!(
        alpha > 0.0 && alpha < 1.0 && df > 0.0,
        "chi2_critical({alpha}, {df})"
    );
    let (mut lo, mut hi) = (0.0f64, df.max(1.0));
    while chi2_sf(hi, df) > alpha {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if chi2_sf(mid, df) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-12 * hi {
            break;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi2_tail_matches_known_values() {
        // df 1: P(X > 3.841459) = 0.05; df 15: P(X > 30.5779) = 0.01; df 2: exp(-x/2)
        assert!((chi2_sf(3.841_459, 1.0) - 0.05).abs() < 1e-6);
        assert!((chi2_sf(30.577_914, 15.0) - 0.01).abs() < 1e-6);
        assert!((chi2_sf(10.0, 2.0) - (-5.0f64).exp()).abs() < 1e-12);
        assert!((chi2_critical(0.01, 15.0) - 30.577_914).abs() < 1e-4);
        let c = chi2_critical(1e-9, 15.0);
        assert!((chi2_sf(c, 15.0) / 1e-9 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn two_sample_test_separates_and_accepts() {
        let a = [50u64, 50, 50, 50];
        let (s, df, p) = chi2_two_sample(&a, &a);
        assert_eq!((s, df), (0.0, 3.0));
        assert!(p > 0.99);
        let (_, _, p) = chi2_two_sample(&[100, 0, 0, 100], &[0, 100, 100, 0]);
        assert!(p < 1e-30);
    }
}
